//! Invitations (`/api/v1/invitations`, `nimbus user invite|invitations|
//! uninvite`), changing one's password (`PUT /api/v1/user/password`,
//! `nimbus user password`) and linking external identities
//! (`/api/v1/users/{name}/identities`, `nimbus user link|unlink`): the owner
//! alone manages invitations and identities, an invitation's secret appears
//! once and never in a listing or the audit log, and a wrong current
//! password is a 403 (the request is authenticated; its proof is wrong).

mod support;

use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use support::{NimbusServer, OWNER_TOKEN};

fn owner() -> String {
    format!("Bearer {OWNER_TOKEN}")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("present")
        .as_secs() as i64
}

/// Create `name` and a token with every scope for them.
fn user_with_token(server: &NimbusServer, name: &str) -> String {
    let created = server.request(
        "POST",
        "/api/v1/users",
        Some(&owner()),
        Some(&json!({ "name": name })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let token = server.request(
        "POST",
        &format!("/api/v1/users/{name}/tokens"),
        Some(&owner()),
        Some(&json!({ "scopes": ["repo:read", "repo:write", "admin", "api"] })),
    );
    assert_eq!(token.status, 201, "{}", token.body);
    token.json()["token"].as_str().expect("present").to_owned()
}

fn invite(server: &NimbusServer, body: Value) -> support::ApiResponse {
    server.request("POST", "/api/v1/invitations", Some(&owner()), Some(&body))
}

fn list(server: &NimbusServer) -> (String, Vec<Value>) {
    let listed = server.request("GET", "/api/v1/invitations", Some(&owner()), None);
    assert_eq!(listed.status, 200, "{}", listed.body);
    let items = listed.json().as_array().expect("present").clone();
    (listed.body, items)
}

fn audit_body(server: &NimbusServer) -> String {
    let audit = server.request("GET", "/api/v1/audit?limit=1000", Some(&owner()), None);
    assert_eq!(audit.status, 200, "{}", audit.body);
    audit.body
}

fn nimbus(data_dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("NIMBUS_LOG", "warn")
        .env_remove("NIMBUS_PUBLIC_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nimbus");
    let mut input = child.stdin.take().expect("present");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("present");
    }
    drop(input);
    child.wait_with_output().expect("wait for nimbus")
}

fn ok(data_dir: &Path, args: &[&str], stdin: Option<&str>) -> (String, String) {
    let output = nimbus(data_dir, args, stdin);
    assert!(
        output.status.success(),
        "nimbus {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn fails(data_dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let output = nimbus(data_dir, args, stdin);
    assert!(!output.status.success(), "nimbus {args:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The secret at the end of an invitation URL or path.
fn secret_of(url: &str) -> &str {
    url.rsplit_once("/invite/").expect("an invitation link").1
}

#[test]
fn invitations_are_created_listed_and_revoked_by_the_owner() {
    let server = NimbusServer::start();
    server.create_repo("team", true);

    let plain = invite(&server, json!({}));
    assert_eq!(plain.status, 201, "{}", plain.body);
    let plain = plain.json();
    let url = plain["url"].as_str().expect("present").to_owned();
    assert!(
        url.starts_with(&format!("{}/invite/nimbus_", server.base_url())),
        "{url}"
    );
    let expires_in = plain["expires_at"].as_i64().expect("present") - now();
    assert!(
        (168 * 3600 - 60..=168 * 3600).contains(&expires_in),
        "{expires_in}"
    );
    assert_eq!(plain["state"], "pending");

    let granted = invite(
        &server,
        json!({ "repo": "team", "access": "write", "expires_in_hours": 2, "note": "for dana" }),
    );
    assert_eq!(granted.status, 201, "{}", granted.body);
    let granted = granted.json();
    assert_eq!(
        (&granted["repo"], &granted["access"]),
        (&json!("team"), &json!("write"))
    );
    let granted_url = granted["url"].as_str().expect("present").to_owned();

    for (body, says) in [
        (json!({ "repo": "team" }), "access"),
        (json!({ "access": "read" }), "repo"),
        (
            json!({ "repo": "team", "access": "owner" }),
            "unknown access level",
        ),
        (json!({ "repo": "nowhere", "access": "read" }), "not found"),
        (json!({ "expires_in_hours": 721 }), "expires_in_hours"),
        (json!({ "expires_in_hours": 0 }), "expires_in_hours"),
    ] {
        let refused = invite(&server, body.clone());
        assert_eq!(refused.status, 422, "{body}: {}", refused.body);
        let message = refused.json()["error"]
            .as_str()
            .expect("present")
            .to_owned();
        assert!(message.contains(says), "{body}: {message}");
    }
    let unknown_field = invite(&server, json!({ "secret": "mine" }));
    assert_eq!(unknown_field.status, 400, "{}", unknown_field.body);

    let (body, items) = list(&server);
    assert_eq!(items.len(), 2, "{body}");
    for secret in [secret_of(&url), secret_of(&granted_url)] {
        assert!(!body.contains(secret), "a secret in the listing: {body}");
    }
    assert!(!body.contains("/invite/"), "{body}");
    // Newest first.
    assert_eq!(items[0]["id"], granted["id"]);
    assert_eq!(items[0]["state"], "pending");
    assert_eq!(items[0]["note"], "for dana");
    assert_eq!(items[0]["repo"], "team");
    assert_eq!(items[0]["access"], "write");
    assert_eq!(items[1]["repo"], Value::Null);

    let id = plain["id"].as_i64().expect("present");
    let revoked = server.request(
        "DELETE",
        &format!("/api/v1/invitations/{id}"),
        Some(&owner()),
        None,
    );
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    let (_, items) = list(&server);
    let state = |id: &Value| {
        items
            .iter()
            .find(|i| &i["id"] == id)
            .map(|i| i["state"].clone())
            .expect("present")
    };
    assert_eq!(state(&plain["id"]), "revoked");
    assert_eq!(state(&granted["id"]), "pending");
    for missing in [id.to_string(), "999".to_owned(), "x".to_owned()] {
        let again = server.request(
            "DELETE",
            &format!("/api/v1/invitations/{missing}"),
            Some(&owner()),
            None,
        );
        assert_eq!(again.status, 404, "{missing}: {}", again.body);
    }

    // Only the owner.
    let erin = user_with_token(&server, "erin");
    for (method, path, body) in [
        ("GET", "/api/v1/invitations".to_owned(), None),
        ("POST", "/api/v1/invitations".to_owned(), Some(json!({}))),
        (
            "DELETE",
            format!("/api/v1/invitations/{}", granted["id"]),
            None,
        ),
    ] {
        let refused = server.request(method, &path, Some(&bearer(&erin)), body.as_ref());
        assert_eq!(refused.status, 403, "{method} {path}: {}", refused.body);
        let anonymous = server.request(method, &path, None, body.as_ref());
        assert_eq!(anonymous.status, 401, "{method} {path}: {}", anonymous.body);
    }
    assert_eq!(list(&server).1.len(), 2, "refusals changed nothing");

    // The audit log names the invitations, never their secrets.
    let audit = audit_body(&server);
    assert!(audit.contains("\"invitation.created\""), "{audit}");
    assert!(audit.contains("\"invitation.revoked\""), "{audit}");
    for secret in [secret_of(&url), secret_of(&granted_url)] {
        assert!(
            !audit.contains(secret),
            "a secret in the audit log: {audit}"
        );
    }
}

#[test]
fn invitations_through_the_command_line() {
    let server = NimbusServer::start();
    server.create_repo("cli-team", false);
    let data = server.data_dir();

    let (stdout, stderr) = ok(&data, &["user", "invite", "--note", "for frank"], None);
    let path = stdout.trim().to_owned();
    assert!(path.starts_with("/invite/nimbus_"), "{stdout}");
    assert!(
        stderr.contains("prefix it with the server's URL"),
        "{stderr}"
    );
    let (stdout, _) = ok(
        &data,
        &[
            "user",
            "invite",
            "--repo",
            "cli-team",
            "--access",
            "read",
            "--expires",
            "2h",
            "--public-url",
            "https://git.example.com/",
        ],
        None,
    );
    let url = stdout.trim().to_owned();
    assert!(
        url.starts_with("https://git.example.com/invite/nimbus_"),
        "{stdout}"
    );

    assert!(fails(&data, &["user", "invite", "--repo", "cli-team"], None).contains("--access"));
    assert!(
        fails(
            &data,
            &["user", "invite", "--repo", "nope", "--access", "read"],
            None
        )
        .contains("repository 'nope' not found")
    );
    assert!(fails(&data, &["user", "invite", "--expires", "31d"], None).contains("30d"));

    let (table, _) = ok(&data, &["user", "invitations"], None);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0], "id\tstate\trepo\taccess\texpires\tused_by\tnote",
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[1].contains("\tpending\tcli-team\tread\t"), "{table}");
    assert!(lines[2].ends_with("\tfor frank"), "{table}");
    for secret in [secret_of(&path), secret_of(&url)] {
        assert!(!table.contains(secret), "{table}");
    }

    // The API sees what the command line made, and the other way round.
    let (_, items) = list(&server);
    assert_eq!(items.len(), 2);
    let first = items[1]["id"].as_i64().expect("present").to_string();
    let (stdout, _) = ok(&data, &["user", "uninvite", &first], None);
    assert_eq!(stdout, format!("revoked invitation {first}\n"));
    assert!(fails(&data, &["user", "uninvite", &first], None).contains("no pending invitation"));
    assert_eq!(list(&server).1[1]["state"], "revoked");
    let (table, _) = ok(&data, &["user", "invitations"], None);
    assert!(
        table
            .lines()
            .nth(2)
            .expect("present")
            .contains("\trevoked\t"),
        "{table}"
    );

    let audit = audit_body(&server);
    for secret in [secret_of(&path), secret_of(&url)] {
        assert!(!audit.contains(secret), "{audit}");
    }
    assert!(audit.contains("\"invitation.revoked\""), "{audit}");
}

const STRONG: &str = "violet-canyon-drifts-at-noon";
const STRONGER: &str = "amber-glacier-hums-past-midnight";

fn set_password(server: &NimbusServer, token: &str, body: Value) -> support::ApiResponse {
    server.request(
        "PUT",
        "/api/v1/user/password",
        Some(&bearer(token)),
        Some(&body),
    )
}

#[test]
fn passwords_are_changed_through_the_api_and_the_command_line() {
    let server = NimbusServer::start();
    let grace = user_with_token(&server, "grace");

    let weak = set_password(&server, &grace, json!({ "new_password": "password123" }));
    assert_eq!(weak.status, 422, "{}", weak.body);
    assert!(
        weak.json()["error"]
            .as_str()
            .expect("present")
            .contains("too easy to guess"),
        "{}",
        weak.body
    );
    let short = set_password(&server, &grace, json!({ "new_password": "short" }));
    assert_eq!(short.status, 422, "{}", short.body);
    assert!(
        short.body.contains("at least 10 characters"),
        "{}",
        short.body
    );

    // No password yet: none needed to set the first one.
    let first = set_password(&server, &grace, json!({ "new_password": STRONG }));
    assert_eq!(first.status, 204, "{}", first.body);

    // From now on the current one is required, and must be right.
    let missing = set_password(&server, &grace, json!({ "new_password": STRONGER }));
    assert_eq!(missing.status, 403, "{}", missing.body);
    assert!(
        missing.body.contains("current_password"),
        "{}",
        missing.body
    );
    let wrong = set_password(
        &server,
        &grace,
        json!({ "current_password": "not-the-password-at-all", "new_password": STRONGER }),
    );
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    assert!(
        wrong.body.contains("current password is wrong"),
        "{}",
        wrong.body
    );
    let changed = set_password(
        &server,
        &grace,
        json!({ "current_password": STRONG, "new_password": STRONGER }),
    );
    assert_eq!(changed.status, 204, "{}", changed.body);

    // Anonymous callers and API-less tokens cannot.
    let anonymous = server.request(
        "PUT",
        "/api/v1/user/password",
        None,
        Some(&json!({ "new_password": STRONG })),
    );
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let git_only = server.request(
        "POST",
        "/api/v1/users/grace/tokens",
        Some(&owner()),
        Some(&json!({ "scopes": ["repo:read"] })),
    );
    let git_only = git_only.json()["token"]
        .as_str()
        .expect("present")
        .to_owned();
    let refused = set_password(
        &server,
        &git_only,
        json!({ "current_password": STRONGER, "new_password": STRONG }),
    );
    assert_eq!(refused.status, 403, "{}", refused.body);

    // The command line sets it without the current one (the owner's tool).
    let data = server.data_dir();
    let (stdout, _) = ok(
        &data,
        &["user", "password", "grace"],
        Some(&format!("{STRONG}\n")),
    );
    assert!(
        stdout.starts_with("set the password of 'grace'"),
        "{stdout}"
    );
    assert!(
        fails(&data, &["user", "password", "grace"], Some("password123\n"))
            .contains("too easy to guess")
    );
    assert!(fails(&data, &["user", "password", "grace"], Some("")).contains("no password"));
    assert!(fails(&data, &["user", "password", "nobody"], Some("x\n")).contains("not found"));
    let after_cli = set_password(
        &server,
        &grace,
        json!({ "current_password": STRONG, "new_password": STRONGER }),
    );
    assert_eq!(
        after_cli.status, 204,
        "the command line's password works: {}",
        after_cli.body
    );

    let audit = audit_body(&server);
    assert_eq!(audit.matches("\"password.changed\"").count(), 4, "{audit}");
    assert_eq!(audit.matches("\"password.failed\"").count(), 2, "{audit}");
    for secret in [STRONG, STRONGER, "not-the-password-at-all", &grace] {
        assert!(!audit.contains(secret), "{audit}");
    }
}

#[test]
fn the_owner_links_and_unlinks_identities() {
    let server = NimbusServer::start();
    let heidi = user_with_token(&server, "heidi");
    user_with_token(&server, "ivan");
    let path = |user: &str| format!("/api/v1/users/{user}/identities/corp/auth0%7C42");

    let linked = server.request("PUT", &path("heidi"), Some(&owner()), None);
    assert_eq!(linked.status, 201, "{}", linked.body);
    assert_eq!(
        linked.json(),
        json!({ "provider": "corp", "subject": "auth0|42" })
    );
    let again = server.request("PUT", &path("heidi"), Some(&owner()), None);
    assert_eq!(again.status, 200, "{}", again.body);
    let taken = server.request("PUT", &path("ivan"), Some(&owner()), None);
    assert_eq!(taken.status, 409, "{}", taken.body);
    assert!(taken.body.contains("heidi"), "{}", taken.body);

    let listed = server.request(
        "GET",
        "/api/v1/users/heidi/identities",
        Some(&owner()),
        None,
    );
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(
        listed.json(),
        json!([{ "provider": "corp", "subject": "auth0|42" }])
    );
    let refused = server.request(
        "GET",
        "/api/v1/users/heidi/identities",
        Some(&bearer(&heidi)),
        None,
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    let refused = server.request("PUT", &path("heidi"), Some(&bearer(&heidi)), None);
    assert_eq!(refused.status, 403, "{}", refused.body);

    let unlinked = server.request("DELETE", &path("heidi"), Some(&owner()), None);
    assert_eq!(unlinked.status, 204, "{}", unlinked.body);
    let missing = server.request("DELETE", &path("heidi"), Some(&owner()), None);
    assert_eq!(missing.status, 404, "{}", missing.body);
    let nobody = server.request("PUT", &path("nobody"), Some(&owner()), None);
    assert_eq!(nobody.status, 404, "{}", nobody.body);

    // The command line does the same.
    let data = server.data_dir();
    let (stdout, _) = ok(&data, &["user", "link", "ivan", "corp", "auth0|42"], None);
    assert_eq!(stdout, "linked corp auth0|42 to 'ivan'\n");
    assert!(fails(&data, &["user", "link", "heidi", "corp", "auth0|42"], None).contains("'ivan'"));
    let listed = server.request("GET", "/api/v1/users/ivan/identities", Some(&owner()), None);
    assert_eq!(
        listed.json(),
        json!([{ "provider": "corp", "subject": "auth0|42" }])
    );
    ok(&data, &["user", "unlink", "ivan", "corp", "auth0|42"], None);
    assert!(
        fails(&data, &["user", "unlink", "ivan", "corp", "auth0|42"], None)
            .contains("no linked identity")
    );

    let audit = audit_body(&server);
    assert_eq!(audit.matches("\"identity.linked\"").count(), 2, "{audit}");
    assert_eq!(audit.matches("\"identity.unlinked\"").count(), 2, "{audit}");
}
