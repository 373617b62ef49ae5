//! The settings pages and the token page over HTTP: repository settings
//! (visibility, default branch, deletion), collaborators, webhooks with
//! their deliveries, and personal access tokens. Each change is checked by
//! its effect (git clone and push, the API's listings, a webhook receiver),
//! and each refusal by nothing having changed: readers, anonymous
//! visitors, forged or missing CSRF tokens, other origins.

mod support;

use support::browser::{Browser, Page, accept, invite};
use support::receiver::Receiver;
use support::{Git, NimbusServer, OWNER_TOKEN, ServerOptions};

const PASSWORD: &str = "copper-lantern-sails-at-dawn";

fn owner() -> String {
    format!("Bearer {OWNER_TOKEN}")
}

fn api(server: &NimbusServer, method: &str, path: &str) -> support::ApiResponse {
    server.request(method, path, Some(&owner()), None)
}

/// The owner, signed in with a password set through the API.
fn owner_browser(server: &NimbusServer) -> Browser {
    let set = server.request(
        "PUT",
        "/api/v1/user/password",
        Some(&owner()),
        Some(&serde_json::json!({ "new_password": PASSWORD })),
    );
    assert!(set.status < 300, "{}", set.body);
    let name = api(server, "GET", "/api/v1/user").json()["name"]
        .as_str()
        .expect("a name")
        .to_owned();
    let mut browser = Browser::new(server.base_url());
    let form = browser.get("/login");
    let csrf = form.hidden("csrf");
    let signed = browser.post_form(
        "/login",
        &[("csrf", &csrf), ("user", &name), ("password", PASSWORD)],
    );
    assert_eq!(signed.status, 303, "{}", signed.body);
    browser
}

/// A new account `name` (through an invitation, optionally with a grant),
/// signed in.
fn user_browser(server: &NimbusServer, name: &str, grant: Option<(&str, &str)>) -> Browser {
    let mut browser = Browser::new(server.base_url());
    let invitation = invite(server, grant);
    let accepted = accept(&mut browser, &invitation, name, PASSWORD);
    assert_eq!(accepted.status, 303, "{}", accepted.body);
    browser
}

/// The session's CSRF token, from a page with a form.
fn csrf(browser: &mut Browser) -> String {
    browser.get("/account").hidden("csrf")
}

/// The text between `start` and the next `end` in `body`.
fn between<'a>(body: &'a str, start: &str, end: &str) -> &'a str {
    let from = body
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in:\n{body}"))
        + start.len();
    let to = body[from..].find(end).expect("the end marker") + from;
    &body[from..to]
}

/// A clone URL with `user` and `password` (a token).
fn url_with(server: &NimbusServer, user: &str, password: &str, repo: &str) -> String {
    let authority = server
        .base_url()
        .strip_prefix("http://")
        .expect("an http URL");
    format!("http://{user}:{password}@{authority}/{repo}.git")
}

/// Push `main` (one file) and `dev` (another) to `repo` as the owner.
fn push_two_branches(server: &NimbusServer, git: &Git, dir: &std::path::Path, repo: &str) {
    git.init(dir);
    git.commit(dir, "main", &[("main.txt", "on main\n")], 1_700_000_000);
    git.run(
        dir,
        &["push", "-q", &server.push_url(repo), "HEAD:refs/heads/main"],
    );
    git.commit(dir, "dev", &[("dev.txt", "on dev\n")], 1_700_000_100);
    git.run(
        dir,
        &["push", "-q", &server.push_url(repo), "HEAD:refs/heads/dev"],
    );
}

fn assert_refused(page: &Page, status: u16, what: &str) {
    assert_eq!(page.status, status, "{what}: {}", page.body);
}

#[test]
fn general_settings_change_visibility_default_branch_and_delete() {
    let server = NimbusServer::start();
    server.create_repo("proj", false);
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("tempdir");
    push_two_branches(&server, &git, work.path(), "proj");
    let mut browser = owner_browser(&server);

    // The repository's pages link to its settings for admins.
    let home = browser.get("/proj");
    assert!(
        home.body.contains("href=\"/proj/settings\""),
        "{}",
        home.body
    );
    let settings = browser.get("/proj/settings");
    assert_eq!(settings.status, 200, "{}", settings.body);
    assert!(
        settings
            .body
            .contains("<title>Settings · proj · Nimbus</title>")
    );
    assert!(
        settings.body.contains("<option value=\"dev\""),
        "{}",
        settings.body
    );
    let token = settings.hidden("csrf");

    // Forged, missing and cross-origin forms change nothing.
    for (csrf, origin, what) in [
        ("wrong", server.base_url(), "a wrong CSRF token"),
        ("", server.base_url(), "no CSRF token"),
        (token.as_str(), "http://evil.test", "another origin"),
    ] {
        let refused = browser.post_form_with(
            "/proj/settings",
            &[
                ("csrf", csrf),
                ("visibility", "private"),
                ("default_branch", "dev"),
            ],
            &[("Origin", origin)],
        );
        assert_refused(&refused, 403, what);
    }
    let missing = browser.post_form("/proj/settings", &[("visibility", "private")]);
    assert_refused(&missing, 403, "a form without its token");
    let view = api(&server, "GET", "/api/v1/repos/proj").json();
    assert_eq!(view["visibility"], "public");
    assert_eq!(view["default_branch"], "main");

    // Bad input: the form again with the reason, nothing changed.
    for (fields, reason) in [
        (
            [("visibility", "secret"), ("default_branch", "dev")],
            "Choose public",
        ),
        (
            [("visibility", "private"), ("default_branch", "nope")],
            "no branch named",
        ),
    ] {
        let mut pairs = vec![("csrf", token.as_str())];
        pairs.extend(fields);
        let bad = browser.post_form("/proj/settings", &pairs);
        assert_eq!(bad.status, 422, "{}", bad.body);
        assert!(bad.body.contains(reason), "{}", bad.body);
    }
    assert_eq!(
        api(&server, "GET", "/api/v1/repos/proj").json()["visibility"],
        "public"
    );

    // Private, default branch dev.
    let saved = browser.post_form(
        "/proj/settings",
        &[
            ("csrf", &token),
            ("visibility", "private"),
            ("default_branch", "dev"),
        ],
    );
    assert_eq!(saved.status, 303, "{}", saved.body);
    assert_eq!(saved.location(), "/proj/settings?done=saved");
    let after = browser.get(saved.location());
    assert!(after.body.contains("Settings saved."), "{}", after.body);
    let view = api(&server, "GET", "/api/v1/repos/proj").json();
    assert_eq!(view["visibility"], "private");
    assert_eq!(view["default_branch"], "dev");
    // Anonymous clones fail; the page asks to sign in.
    let clones = tempfile::tempdir().expect("tempdir");
    git.run_expect_failure(
        clones.path(),
        &["clone", "-q", &server.url("proj"), "anonymous"],
    );
    let anonymous = server.request("GET", "/proj", None, None);
    assert!(
        anonymous.body.contains("name=\"password\""),
        "{}",
        anonymous.body
    );
    // A fresh clone checks out dev.
    git.run(
        clones.path(),
        &["clone", "-q", &server.push_url("proj"), "owner"],
    );
    let head = git.run(
        &clones.path().join("owner"),
        &["rev-parse", "--abbrev-ref", "HEAD"],
    );
    assert_eq!(head.trim(), "dev");
    assert!(clones.path().join("owner/dev.txt").exists());

    // Deleting needs the exact name.
    for wrong in ["", "Proj", "proj ", "other"] {
        let refused = browser.post_form(
            "/proj/settings/delete",
            &[("csrf", &token), ("confirm", wrong)],
        );
        assert_eq!(refused.status, 422, "{wrong:?}: {}", refused.body);
        assert!(refused.body.contains("nothing was deleted"));
    }
    assert_eq!(api(&server, "GET", "/api/v1/repos/proj").status, 200);
    let forged = browser.post_form(
        "/proj/settings/delete",
        &[("csrf", "forged"), ("confirm", "proj")],
    );
    assert_refused(&forged, 403, "a forged deletion");
    assert_eq!(api(&server, "GET", "/api/v1/repos/proj").status, 200);
    let deleted = browser.post_form(
        "/proj/settings/delete",
        &[("csrf", &token), ("confirm", "proj")],
    );
    assert_eq!(deleted.status, 303, "{}", deleted.body);
    assert_eq!(api(&server, "GET", "/api/v1/repos/proj").status, 404);
    git.run_expect_failure(
        clones.path(),
        &["clone", "-q", &server.push_url("proj"), "gone"],
    );
    // Both changes are in the audit log, as the API's are.
    let audit = api(&server, "GET", "/api/v1/audit?repo=proj").body;
    assert!(
        audit.contains("repo.updated") && audit.contains("repo.deleted"),
        "{audit}"
    );
}

#[test]
fn collaborators_are_added_changed_and_removed() {
    let server = NimbusServer::start();
    server.create_repo("team", false);
    server.create_repo("closed", true);
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("tempdir");
    push_two_branches(&server, &git, work.path(), "team");
    let mut admin = owner_browser(&server);
    let token = csrf(&mut admin);

    // Readers are refused (403), strangers to a private repository do not
    // see it (404), anonymous visitors are sent to sign in.
    let mut reader = user_browser(&server, "rita", Some(("team", "read")));
    let reader_csrf = csrf(&mut reader);
    for path in [
        "/team/settings",
        "/team/settings/collaborators",
        "/team/settings/hooks",
    ] {
        assert_refused(&reader.get(path), 403, path);
        assert_refused(&reader.get(&format!("/closed{}", &path[5..])), 404, path);
        let anonymous = server.request("GET", path, None, None);
        assert!(
            anonymous.body.contains("name=\"password\""),
            "{path}: {}",
            anonymous.body
        );
    }
    let self_grant = reader.post_form(
        "/team/settings/collaborators",
        &[
            ("csrf", &reader_csrf),
            ("user", "rita"),
            ("access", "admin"),
        ],
    );
    assert_refused(&self_grant, 403, "a reader's own promotion");
    let mut anonymous = Browser::new(server.base_url());
    let sent = anonymous.post_form(
        "/team/settings/collaborators",
        &[("user", "rita"), ("access", "admin")],
    );
    assert_eq!(sent.status, 303);
    assert!(sent.location().starts_with("/login"), "{}", sent.location());
    let collaborators = || {
        let mut listed = api(&server, "GET", "/api/v1/repos/team/collaborators")
            .json()
            .as_array()
            .expect("a list")
            .iter()
            .map(|c| {
                format!(
                    "{}:{}",
                    c["user"].as_str().expect("user"),
                    c["access"].as_str().expect("access")
                )
            })
            .collect::<Vec<_>>();
        listed.sort();
        listed
    };
    assert_eq!(collaborators(), ["rita:read"]);

    // A new account makes itself a token on the token page, for pushing.
    let mut wendy = user_browser(&server, "wendy", None);
    let wendy_csrf = csrf(&mut wendy);
    let created = wendy.post_form(
        "/account/tokens",
        &[
            ("csrf", &wendy_csrf),
            ("description", "laptop"),
            ("scopes", "repo:write"),
            ("expiry", "30"),
        ],
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let secret = between(&created.body, "id=\"new-token-secret\">", "<").to_owned();
    let push_url = url_with(&server, "wendy", &secret, "team");
    let push = |label: &str| {
        git.commit(work.path(), label, &[("w.txt", label)], 1_700_000_200);
        git.output(
            work.path(),
            &["push", "-q", &push_url, "HEAD:refs/heads/main"],
        )
    };
    assert!(!push("before").status.success(), "not a collaborator yet");

    // Unknown names and levels: the form again, escaped, nothing changed.
    for (user, access, reason) in [
        ("<script>alert(1)</script>", "write", "not found"),
        ("nobody", "write", "not found"),
        ("wendy", "owner", "nknown access level"),
    ] {
        let bad = admin.post_form(
            "/team/settings/collaborators",
            &[("csrf", &token), ("user", user), ("access", access)],
        );
        assert_eq!(bad.status, 422, "{}", bad.body);
        assert!(bad.body.contains(reason), "{}", bad.body);
        assert!(!bad.body.contains("<script>alert(1)"), "{}", bad.body);
    }
    assert!(
        admin
            .post_form(
                "/team/settings/collaborators",
                &[
                    ("csrf", &token),
                    ("user", "<script>alert(1)</script>"),
                    ("access", "write")
                ]
            )
            .body
            .contains("&lt;script&gt;alert(1)&lt;/script&gt;")
    );
    assert_eq!(collaborators(), ["rita:read"]);

    // Write: wendy can push.
    let added = admin.post_form(
        "/team/settings/collaborators",
        &[("csrf", &token), ("user", "wendy"), ("access", "write")],
    );
    assert_eq!(added.status, 303, "{}", added.body);
    let listed = admin.get(added.location());
    assert!(
        listed.body.contains("Collaborator saved."),
        "{}",
        listed.body
    );
    assert!(listed.body.contains(">wendy<"), "{}", listed.body);
    assert_eq!(collaborators(), ["rita:read", "wendy:write"]);
    let pushed = push("as a writer");
    assert!(pushed.status.success(), "{}", pushed.stderr);

    // Admin: the settings open to her; read: no more pushing.
    let promoted = admin.post_form(
        "/team/settings/collaborators",
        &[("csrf", &token), ("user", "wendy"), ("access", "admin")],
    );
    assert_eq!(promoted.status, 303);
    assert_eq!(wendy.get("/team/settings/collaborators").status, 200);
    // Only the owner deletes repositories.
    let general = wendy.get("/team/settings");
    assert!(
        !general.body.contains("id=\"delete-repo\""),
        "{}",
        general.body
    );
    let not_hers = wendy.post_form(
        "/team/settings/delete",
        &[("csrf", &wendy_csrf), ("confirm", "team")],
    );
    assert_refused(&not_hers, 403, "an admin collaborator's deletion");
    assert_eq!(api(&server, "GET", "/api/v1/repos/team").status, 200);
    assert!(wendy.get("/team").body.contains("href=\"/team/settings\""));
    assert!(!reader.get("/team").body.contains("href=\"/team/settings\""));
    let demoted = admin.post_form(
        "/team/settings/collaborators",
        &[("csrf", &token), ("user", "wendy"), ("access", "read")],
    );
    assert_eq!(demoted.status, 303);
    assert!(!push("as a reader").status.success());

    // Removed: not listed, cannot push.
    let write_again = admin.post_form(
        "/team/settings/collaborators",
        &[("csrf", &token), ("user", "wendy"), ("access", "write")],
    );
    assert_eq!(write_again.status, 303);
    let removed = admin.post_form(
        "/team/settings/collaborators/remove",
        &[("csrf", &token), ("user", "wendy")],
    );
    assert_eq!(removed.status, 303, "{}", removed.body);
    assert_eq!(collaborators(), ["rita:read"]);
    assert!(!push("after removal").status.success());
    let audit = api(&server, "GET", "/api/v1/audit?repo=team").body;
    for action in [
        "collaborator.added",
        "collaborator.changed",
        "collaborator.removed",
    ] {
        assert!(audit.contains(action), "{action}: {audit}");
    }

    // The owner can make an invitation link granting access.
    let invited = admin.post_form(
        "/team/settings/collaborators/invite",
        &[("csrf", &token), ("access", "write")],
    );
    assert_eq!(invited.status, 201, "{}", invited.body);
    let link = between(&invited.body, "id=\"invitation-link\">", "<").to_owned();
    let path = &link[link.find("/invite/").expect("an invitation path")..];
    let mut newcomer = Browser::new(server.base_url());
    assert_eq!(accept(&mut newcomer, path, "nina", PASSWORD).status, 303);
    assert_eq!(collaborators(), ["nina:write", "rita:read"]);

    // A pending one is listed (without its secret) and can be revoked.
    let second = admin.post_form(
        "/team/settings/collaborators/invite",
        &[("csrf", &token), ("access", "admin")],
    );
    assert_eq!(second.status, 201, "{}", second.body);
    let second_link = between(&second.body, "id=\"invitation-link\">", "<").to_owned();
    let second_path = second_link[second_link.find("/invite/").expect("a path")..].to_owned();
    let page = admin.get("/team/settings/collaborators");
    assert!(page.body.contains("id=\"invitations\""), "{}", page.body);
    assert!(!page.body.contains(&second_path), "links are shown once");
    let id = between(&page.body, "/settings/collaborators/invitations/", "/").to_owned();
    let revoke = format!("/team/settings/collaborators/invitations/{id}/revoke");
    assert_refused(
        &reader.post_form(&revoke, &[("csrf", &reader_csrf)]),
        403,
        "a reader revoking",
    );
    let revoked = admin.post_form(&revoke, &[("csrf", &token)]);
    assert_eq!(revoked.status, 303, "{}", revoked.body);
    assert!(
        admin
            .get(revoked.location())
            .body
            .contains("Invitation revoked.")
    );
    assert_eq!(
        Browser::new(server.base_url()).get(&second_path).status,
        410
    );
}

#[test]
fn tokens_are_created_shown_once_and_revoked() {
    let server = NimbusServer::start();
    server.create_repo("vault", true);
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("tempdir");
    push_two_branches(&server, &git, work.path(), "vault");

    let anonymous = server.request("GET", "/account/tokens", None, None);
    assert!(anonymous.body.contains("name=\"password\""));
    let mut browser = owner_browser(&server);
    assert!(
        browser
            .get("/account")
            .body
            .contains("href=\"/account/tokens\"")
    );
    let listing = browser.get("/account/tokens");
    assert_eq!(listing.status, 200, "{}", listing.body);
    assert!(
        listing
            .body
            .contains("<title>Personal access tokens · Nimbus</title>")
    );
    let token = listing.hidden("csrf");
    let before = api(&server, "GET", "/api/v1/user/tokens")
        .json()
        .as_array()
        .expect("a list")
        .len();

    // Refusals and bad input create nothing.
    let forged = browser.post_form(
        "/account/tokens",
        &[("csrf", "nope"), ("scopes", "repo:read"), ("expiry", "7")],
    );
    assert_refused(&forged, 403, "a forged form");
    let cross = browser.post_form_with(
        "/account/tokens",
        &[("csrf", &token), ("scopes", "repo:read"), ("expiry", "7")],
        &[("Origin", "http://evil.test")],
    );
    assert_refused(&cross, 403, "another origin");
    let no_scope = browser.post_form(
        "/account/tokens",
        &[("csrf", &token), ("description", "x"), ("expiry", "7")],
    );
    assert_eq!(no_scope.status, 422, "{}", no_scope.body);
    assert!(no_scope.body.contains("at least one scope"));
    let bad_expiry = browser.post_form(
        "/account/tokens",
        &[
            ("csrf", &token),
            ("scopes", "repo:read"),
            ("expiry", "5000"),
        ],
    );
    assert_eq!(bad_expiry.status, 422, "{}", bad_expiry.body);
    assert_eq!(
        api(&server, "GET", "/api/v1/user/tokens")
            .json()
            .as_array()
            .expect("a list")
            .len(),
        before
    );

    // A token, shown once, that clones the private repository.
    let created = browser.post_form(
        "/account/tokens",
        &[
            ("csrf", &token),
            ("description", "<b>ci</b>"),
            ("scopes", "repo:read"),
            ("expiry", "never"),
        ],
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let secret = between(&created.body, "id=\"new-token-secret\">", "<").to_owned();
    assert!(secret.starts_with("nimbus_"), "{secret}");
    let clones = tempfile::tempdir().expect("tempdir");
    let with_token = url_with(&server, "owner", &secret, "vault");
    git.run(clones.path(), &["clone", "-q", &with_token, "first"]);
    assert!(clones.path().join("first/main.txt").exists());
    // Listed, escaped, without the secret.
    let listing = browser.get("/account/tokens");
    assert!(!listing.body.contains(&secret));
    assert!(
        listing.body.contains("&lt;b&gt;ci&lt;/b&gt;") && !listing.body.contains("<b>ci"),
        "{}",
        listing.body
    );
    assert!(listing.body.contains("repo:read"));
    let id = api(&server, "GET", "/api/v1/user/tokens")
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["description"] == "<b>ci</b>")
        .expect("the new token")["id"]
        .as_i64()
        .expect("an id");
    assert!(
        listing
            .body
            .contains(&format!("action=\"/account/tokens/{id}/revoke\""))
    );

    // Revoking: a forged form does nothing, a real one ends the token.
    let revoke = format!("/account/tokens/{id}/revoke");
    assert_refused(
        &browser.post_form(&revoke, &[("csrf", "forged")]),
        403,
        "a forged revocation",
    );
    git.run(clones.path(), &["clone", "-q", &with_token, "second"]);
    let revoked = browser.post_form(&revoke, &[("csrf", &token)]);
    assert_eq!(revoked.status, 303, "{}", revoked.body);
    assert_eq!(revoked.location(), "/account/tokens?done=token-revoked");
    assert!(
        browser
            .get(revoked.location())
            .body
            .contains("Token revoked.")
    );
    git.run_expect_failure(clones.path(), &["clone", "-q", &with_token, "third"]);
    // Someone else's token is not theirs to revoke.
    let mut other = user_browser(&server, "oscar", None);
    let other_csrf = csrf(&mut other);
    let owner_token = api(&server, "GET", "/api/v1/user/tokens")
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["revoked_at"].is_null())
        .expect("the bootstrap token")["id"]
        .as_i64()
        .expect("an id");
    let stolen = other.post_form(
        &format!("/account/tokens/{owner_token}/revoke"),
        &[("csrf", &other_csrf)],
    );
    assert_eq!(stolen.status, 404, "{}", stolen.body);
    assert_eq!(api(&server, "GET", "/api/v1/user").status, 200);
}

#[test]
fn webhooks_are_managed_and_show_their_deliveries() {
    let receiver = Receiver::start("127.0.0.1");
    let server = NimbusServer::start_with(ServerOptions {
        env: vec![("NIMBUS_WEBHOOK_ALLOW".into(), "127.0.0.1/32".into())],
        ..ServerOptions::default()
    });
    server.create_repo("hooked", false);
    let mut browser = owner_browser(&server);
    let token = csrf(&mut browser);
    let listed = || {
        api(&server, "GET", "/api/v1/repos/hooked/hooks")
            .json()
            .as_array()
            .expect("a list")
            .clone()
    };
    let page = browser.get("/hooked/settings/hooks");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("<title>Webhooks · hooked · Nimbus</title>")
    );

    // Refused: bad URLs (escaped when shown again), unknown events,
    // forged forms.
    for (url, events, reason) in [
        (
            "javascript:<script>alert(1)</script>",
            "push",
            "&lt;script&gt;",
        ),
        ("http://10.0.0.1/", "push", "10.0.0.1"),
        (&receiver.url("/h"), "nothing", "nknown event type"),
    ] {
        let bad = browser.post_form(
            "/hooked/settings/hooks",
            &[
                ("csrf", &token),
                ("url", url),
                ("content_type", "json"),
                ("events", events),
                ("active", "on"),
            ],
        );
        assert_eq!(bad.status, 422, "{url}: {}", bad.body);
        assert!(bad.body.contains(reason), "{url}: {}", bad.body);
        assert!(!bad.body.contains("<script>alert(1)"), "{}", bad.body);
    }
    let forged = browser.post_form(
        "/hooked/settings/hooks",
        &[("csrf", "forged"), ("url", &receiver.url("/h"))],
    );
    assert_refused(&forged, 403, "a forged webhook");
    assert!(listed().is_empty());

    // Added with our secret: in the API's listing, the secret never shown.
    let secret = "a-secret-of-ours-42";
    let created = browser.post_form(
        "/hooked/settings/hooks",
        &[
            ("csrf", &token),
            ("url", &receiver.url("/h")),
            ("secret", secret),
            ("content_type", "json"),
            ("events", "push"),
            ("events", "tag.created"),
            ("active", "on"),
        ],
    );
    assert_eq!(created.status, 303, "{}", created.body);
    let hooks = listed();
    assert_eq!(hooks.len(), 1);
    let id = hooks[0]["id"].as_i64().expect("an id");
    assert_eq!(hooks[0]["config"]["url"], receiver.url("/h"));
    assert_eq!(
        hooks[0]["events"],
        serde_json::json!(["push", "tag.created"])
    );
    let hook_path = format!("/hooked/settings/hooks/{id}");
    assert_eq!(created.location(), format!("{hook_path}?done=hook-created"));
    let hook_page = browser.get(&hook_path);
    assert_eq!(hook_page.status, 200, "{}", hook_page.body);
    assert!(!hook_page.body.contains(secret));
    assert!(hook_page.body.contains("Nothing was delivered yet."));

    // A push is delivered and listed with its request and response.
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("tempdir");
    push_two_branches(&server, &git, work.path(), "hooked");
    // One delivery per push.
    receiver.wait_for(2, || server.logs());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let hook_page = loop {
        let page = browser.get(&hook_path);
        if page.body.contains("succeeded") {
            break page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no delivery listed:\n{}",
            page.body
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(hook_page.body.contains(" ms"), "{}", hook_page.body);
    // The push made two deliveries (one per branch); the newest may still
    // be pending, so take the row of one that succeeded.
    let succeeded = hook_page
        .body
        .split("<tr>")
        .find(|row| row.contains("succeeded"))
        .expect("a row that succeeded");
    let delivery = between(succeeded, "?delivery=", "\"").to_owned();
    let detail = browser.get(&format!("{hook_path}?delivery={delivery}"));
    assert_eq!(detail.status, 200, "{}", detail.body);
    for needle in [
        "id=\"request-body\"",
        "hooked",
        "thanks",
        "X-Hub-Signature-256",
    ] {
        assert!(
            detail.body.to_lowercase().contains(&needle.to_lowercase()),
            "{needle}: {}",
            detail.body
        );
    }
    let before = receiver.received().len();
    let redelivered = browser.post_form(
        &format!("{hook_path}/deliveries/{delivery}/redeliver"),
        &[("csrf", &token)],
    );
    assert_eq!(redelivered.status, 303, "{}", redelivered.body);
    assert!(
        browser
            .get(redelivered.location())
            .body
            .contains("queued again")
    );
    receiver.wait_for(before + 1, || server.logs());

    // Edited: inactive, every event; the secret kept.
    let edited = browser.post_form(
        &hook_path,
        &[
            ("csrf", &token),
            ("url", &receiver.url("/h")),
            ("secret", ""),
            ("content_type", "json"),
            ("events", "*"),
        ],
    );
    assert_eq!(edited.status, 303, "{}", edited.body);
    let hooks = listed();
    assert_eq!(hooks[0]["active"], false);
    assert_eq!(hooks[0]["events"], serde_json::json!(["*"]));

    // Without a secret, one is generated and shown once.
    let generated = browser.post_form(
        "/hooked/settings/hooks",
        &[
            ("csrf", &token),
            ("url", &receiver.url("/other")),
            ("content_type", "json"),
            ("events", "push"),
        ],
    );
    assert_eq!(generated.status, 201, "{}", generated.body);
    assert!(generated.body.contains("id=\"hook-secret\""));
    assert_eq!(listed().len(), 2);

    // Deleted.
    let deleted = browser.post_form(&format!("{hook_path}/delete"), &[("csrf", &token)]);
    assert_eq!(deleted.status, 303, "{}", deleted.body);
    assert_eq!(listed().len(), 1);
    assert_eq!(browser.get(&hook_path).status, 404);
    let audit = api(&server, "GET", "/api/v1/audit?repo=hooked").body;
    for action in [
        "webhook.created",
        "webhook.updated",
        "webhook.redelivered",
        "webhook.deleted",
    ] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
}
