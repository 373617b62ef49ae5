//! The permission matrix of issue 4: for anonymous users, a signed-in user
//! without access, read, write and admin collaborators and the owner, against
//! public, private and hidden repositories, every git operation (clone,
//! fetch, push, deleting a branch) and every repository API call is allowed
//! or refused exactly as `nimbus_auth::policy` says, with 401, 403 or 404 and
//! a message, and a refusal changes nothing. Only the owner creates and
//! deletes repositories. Then the token rules: expired,
//! revoked, `repo:read`-only and API-less tokens.

mod support;

use std::path::Path;
use support::{Git, NimbusServer, OWNER_TOKEN, basic_authorization};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    Stranger,
    Reader,
    Writer,
    Admin,
    Owner,
}

const EVERYONE: [Who; 6] = [
    Who::Anonymous,
    Who::Stranger,
    Who::Reader,
    Who::Writer,
    Who::Admin,
    Who::Owner,
];

const VISIBILITIES: [&str; 3] = ["public", "private", "hidden"];

impl Who {
    fn label(self) -> &'static str {
        match self {
            Who::Anonymous => "anonymous",
            Who::Stranger => "stranger",
            Who::Reader => "reader",
            Who::Writer => "writer",
            Who::Admin => "admin",
            Who::Owner => "owner",
        }
    }

    /// The collaborator level this user gets on every matrix repository.
    fn level(self) -> Option<&'static str> {
        match self {
            Who::Reader => Some("read"),
            Who::Writer => Some("write"),
            Who::Admin => Some("admin"),
            _ => None,
        }
    }
}

/// What the rules say: `Ok(())` or the refusal status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Write,
    Admin,
    /// Deleting the repository: the owner only.
    Delete,
}

fn expected(who: Who, visibility: &str, need: Need) -> Result<(), u16> {
    let world_readable = visibility != "private";
    let level = match who {
        Who::Anonymous => {
            return if need == Need::Read && world_readable {
                Ok(())
            } else {
                Err(401)
            };
        }
        Who::Owner => 3,
        Who::Admin => 3,
        Who::Writer => 2,
        Who::Reader => 1,
        Who::Stranger if world_readable => 1,
        Who::Stranger => return Err(404),
    };
    if need == Need::Delete {
        return if who == Who::Owner { Ok(()) } else { Err(403) };
    }
    let needs = match need {
        Need::Read => 1,
        Need::Write => 2,
        Need::Admin | Need::Delete => 3,
    };
    if level >= needs { Ok(()) } else { Err(403) }
}

/// Whether a refusal's body carries the message of its status.
fn refusal_explained(status: u16, body: &str) -> bool {
    match status {
        401 => body.contains("authentication required"),
        403 => body.contains("you do not have") || body.contains("only the instance owner"),
        404 => body.contains("not found"),
        other => panic!("unexpected status {other}"),
    }
}

struct Matrix {
    server: NimbusServer,
    tokens: Vec<(Who, String)>,
}

impl Matrix {
    fn token(&self, who: Who) -> Option<&str> {
        if who == Who::Owner {
            return Some(OWNER_TOKEN);
        }
        self.tokens
            .iter()
            .find(|(w, _)| *w == who)
            .map(|(_, token)| token.as_str())
    }

    fn bearer(&self, who: Who) -> Option<String> {
        self.token(who).map(|token| format!("Bearer {token}"))
    }

    fn git_url(&self, who: Who, repo: &str) -> String {
        match self.token(who) {
            None => self.server.url(repo),
            Some(token) => {
                let authority = self
                    .server
                    .base_url()
                    .strip_prefix("http://")
                    .expect("http");
                format!("http://x:{token}@{authority}/{repo}.git")
            }
        }
    }
}

fn owner_bearer() -> String {
    format!("Bearer {OWNER_TOKEN}")
}

/// Create a user and a token with every scope for them, as the owner.
fn user_with_token(server: &NimbusServer, name: &str, body: serde_json::Value) -> String {
    let created = server.request(
        "POST",
        "/api/v1/users",
        Some(&owner_bearer()),
        Some(&serde_json::json!({ "name": name })),
    );
    assert!(
        created.status == 201 || created.status == 409,
        "{}",
        created.body
    );
    token_for(server, name, body)
}

fn token_for(server: &NimbusServer, name: &str, body: serde_json::Value) -> String {
    let token = server.request(
        "POST",
        &format!("/api/v1/users/{name}/tokens"),
        Some(&owner_bearer()),
        Some(&body),
    );
    assert_eq!(token.status, 201, "{}", token.body);
    token.json()["token"]
        .as_str()
        .expect("the secret is in the reply")
        .to_owned()
}

fn all_scopes() -> serde_json::Value {
    serde_json::json!({ "scopes": ["repo:read", "repo:write", "admin", "api"] })
}

/// The refs of `repo` as the owner sees them.
fn refs(matrix: &Matrix, git: &Git, repo: &str) -> Vec<String> {
    git.ls_remote(&matrix.git_url(Who::Owner, repo), &[])
}

fn assert_status(response: &support::ApiResponse, expected: Result<u16, u16>, what: &str) -> bool {
    match expected {
        Ok(status) => {
            assert_eq!(response.status, status, "{what}: {}", response.body);
            true
        }
        Err(status) => {
            assert_eq!(response.status, status, "{what}: {}", response.body);
            assert!(
                refusal_explained(status, &response.body),
                "{what}: the {status} says {:?}",
                response.body
            );
            if status == 401 {
                assert!(
                    response.header("www-authenticate").is_some(),
                    "{what}: a 401 without WWW-Authenticate"
                );
            }
            false
        }
    }
}

/// Seed a repository for one (who, visibility) case: `main` and a branch
/// to delete, all three collaborators.
fn seed(matrix: &Matrix, git: &Git, repo: &str, visibility: &str, work: &Path) {
    let server = &matrix.server;
    let created = server.request(
        "POST",
        "/api/v1/repos",
        Some(&owner_bearer()),
        Some(&serde_json::json!({ "name": repo, "visibility": visibility })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["visibility"], visibility);
    assert_eq!(created.json()["private"], visibility == "private");
    for who in [Who::Reader, Who::Writer, Who::Admin] {
        let set = server.request(
            "PUT",
            &format!("/api/v1/repos/{repo}/collaborators/{}", who.label()),
            Some(&owner_bearer()),
            Some(&serde_json::json!({ "access": who.level() })),
        );
        assert_eq!(set.status, 200, "{}", set.body);
    }
    let seed = work.join("seed");
    git.init(&seed);
    git.commit(&seed, "first", &[("a.txt", "a\n")], support::EPOCH);
    git.run(&seed, &["branch", "doomed"]);
    git.run(
        &seed,
        &[
            "push",
            "-q",
            &matrix.git_url(Who::Owner, repo),
            "main",
            "doomed",
        ],
    );
}

fn git_stderr_matches(stderr: &str, status: u16) -> bool {
    match status {
        401 => {
            stderr.contains("Authentication failed") || stderr.contains("could not read Username")
        }
        403 => stderr.contains("403"),
        404 => stderr.contains("not found"),
        _ => false,
    }
}

fn run_case(matrix: &Matrix, who: Who, visibility: &str, protocol: u8) {
    let server = &matrix.server;
    let git = Git::new(protocol);
    let repo = format!("m-{}-{visibility}", who.label());
    let work = tempfile::tempdir().expect("work directory");
    seed(matrix, &git, &repo, visibility, work.path());
    let url = matrix.git_url(who, &repo);
    let case = format!("{who:?} on {visibility} (protocol {protocol})");

    // The smart-HTTP endpoints answer with the status of the rules.
    let basic = matrix.token(who).map(|t| basic_authorization("x", t));
    for (service, need) in [
        ("git-upload-pack", Need::Read),
        ("git-receive-pack", Need::Write),
    ] {
        let response = server.request(
            "GET",
            &format!("/{repo}.git/info/refs?service={service}"),
            basic.as_deref(),
            None,
        );
        assert_status(
            &response,
            expected(who, visibility, need).map(|()| 200),
            &format!("{case}: info/refs {service}"),
        );
    }

    // Clone.
    let before = refs(matrix, &git, &repo);
    let clone = work.path().join("clone");
    let output = git.output(work.path(), &["clone", "-q", &url, "clone"]);
    match expected(who, visibility, Need::Read) {
        Ok(()) => assert!(output.status.success(), "{case}: clone: {}", output.stderr),
        Err(status) => {
            assert!(!output.status.success(), "{case}: clone succeeded");
            assert!(
                git_stderr_matches(&output.stderr, status),
                "{case}: clone refused with {status} said: {}",
                output.stderr
            );
            assert!(!clone.join("a.txt").exists(), "{case}: clone got content");
        }
    }

    // Fetch, into the owner's seed repository.
    let seed = work.path().join("seed");
    let output = git.output(&seed, &["fetch", "-q", &url, "main"]);
    assert_eq!(
        output.status.success(),
        expected(who, visibility, Need::Read).is_ok(),
        "{case}: fetch: {}",
        output.stderr
    );
    assert_eq!(
        refs(matrix, &git, &repo),
        before,
        "{case}: fetch moved refs"
    );

    // Push a new commit.
    let new_head = git.commit(&seed, "second", &[("b.txt", "b\n")], support::EPOCH + 60);
    let output = git.output(&seed, &["push", "-q", &url, "main"]);
    let after_push = refs(matrix, &git, &repo);
    match expected(who, visibility, Need::Write) {
        Ok(()) => {
            assert!(output.status.success(), "{case}: push: {}", output.stderr);
            assert!(
                after_push.contains(&format!("{new_head}\trefs/heads/main")),
                "{case}: {after_push:?}"
            );
        }
        Err(status) => {
            assert!(!output.status.success(), "{case}: push succeeded");
            assert!(
                git_stderr_matches(&output.stderr, status),
                "{case}: push refused with {status} said: {}",
                output.stderr
            );
            assert_eq!(after_push, before, "{case}: a refused push moved refs");
        }
    }

    // Delete a branch.
    let output = git.output(&seed, &["push", "-q", &url, "--delete", "doomed"]);
    let after_delete = refs(matrix, &git, &repo);
    match expected(who, visibility, Need::Write) {
        Ok(()) => {
            assert!(output.status.success(), "{case}: delete: {}", output.stderr);
            assert!(
                !after_delete
                    .iter()
                    .any(|line| line.ends_with("refs/heads/doomed")),
                "{case}: {after_delete:?}"
            );
        }
        Err(_) => {
            assert!(!output.status.success(), "{case}: delete succeeded");
            assert_eq!(
                after_delete, after_push,
                "{case}: a refused delete moved refs"
            );
        }
    }

    // The repository API.
    let bearer = matrix.bearer(who);
    let response = server.request(
        "GET",
        &format!("/api/v1/repos/{repo}"),
        bearer.as_deref(),
        None,
    );
    if assert_status(
        &response,
        expected(who, visibility, Need::Read).map(|()| 200),
        &format!("{case}: GET"),
    ) {
        assert_eq!(response.json()["visibility"], visibility);
    }
    let response = server.request(
        "PATCH",
        &format!("/api/v1/repos/{repo}"),
        bearer.as_deref(),
        Some(&serde_json::json!({ "default_branch": "trunk" })),
    );
    let patched = assert_status(
        &response,
        expected(who, visibility, Need::Admin).map(|()| 200),
        &format!("{case}: PATCH"),
    );
    let seen = server.request(
        "GET",
        &format!("/api/v1/repos/{repo}"),
        Some(&owner_bearer()),
        None,
    );
    assert_eq!(
        seen.json()["default_branch"],
        if patched { "trunk" } else { "main" },
        "{case}"
    );
    let response = server.request(
        "PUT",
        &format!("/api/v1/repos/{repo}/collaborators/stranger"),
        bearer.as_deref(),
        Some(&serde_json::json!({ "access": "read" })),
    );
    let added = assert_status(
        &response,
        expected(who, visibility, Need::Admin).map(|()| 200),
        &format!("{case}: add a collaborator"),
    );
    let listed = server.request(
        "GET",
        &format!("/api/v1/repos/{repo}/collaborators"),
        Some(&owner_bearer()),
        None,
    );
    assert_eq!(
        listed.json().as_array().expect("a list").len(),
        if added { 4 } else { 3 },
        "{case}: {}",
        listed.body
    );
    let refs_before_delete = refs(matrix, &git, &repo);
    let response = server.request(
        "DELETE",
        &format!("/api/v1/repos/{repo}"),
        bearer.as_deref(),
        None,
    );
    let deleted = assert_status(
        &response,
        expected(who, visibility, Need::Delete).map(|()| 204),
        &format!("{case}: DELETE"),
    );
    let seen = server.request(
        "GET",
        &format!("/api/v1/repos/{repo}"),
        Some(&owner_bearer()),
        None,
    );
    if deleted {
        assert_eq!(seen.status, 404, "{case}: still there after DELETE");
    } else {
        assert_eq!(seen.status, 200, "{case}: gone after a refused DELETE");
        assert_eq!(refs(matrix, &git, &repo), refs_before_delete, "{case}");
    }
}

fn start_matrix() -> Matrix {
    let server = NimbusServer::start();
    let tokens = [Who::Stranger, Who::Reader, Who::Writer, Who::Admin]
        .into_iter()
        .map(|who| (who, user_with_token(&server, who.label(), all_scopes())))
        .collect();
    Matrix { server, tokens }
}

#[test]
fn every_principal_against_every_visibility() {
    let matrix = start_matrix();
    let _logs = matrix.server.log_guard();
    let cases: Vec<(Who, &str, u8)> = EVERYONE
        .iter()
        .flat_map(|who| VISIBILITIES.iter().map(move |v| (*who, *v)))
        .enumerate()
        .map(|(i, (who, visibility))| (who, visibility, (i % 3) as u8))
        .collect();
    // Six at a time: git subprocesses dominate, and the cases are independent.
    for chunk in cases.chunks(6) {
        std::thread::scope(|scope| {
            for (who, visibility, protocol) in chunk {
                let matrix = &matrix;
                scope.spawn(move || run_case(matrix, *who, visibility, *protocol));
            }
        });
    }

    // Only the owner creates repositories.
    for who in EVERYONE {
        let response = matrix.server.request(
            "POST",
            "/api/v1/repos",
            matrix.bearer(who).as_deref(),
            Some(&serde_json::json!({ "name": format!("new-{}", who.label()) })),
        );
        let expected = match who {
            Who::Owner => Ok(201),
            Who::Anonymous => Err(401),
            _ => Err(403),
        };
        assert_eq!(
            response.status,
            expected.unwrap_or_else(|e| e),
            "{who:?} POST /api/v1/repos: {}",
            response.body
        );
        if who != Who::Owner && who != Who::Anonymous {
            assert!(
                response.body.contains("only the instance owner"),
                "{}",
                response.body
            );
        }
    }
}

#[test]
fn hidden_repositories_are_cloneable_but_not_listed() {
    let matrix = start_matrix();
    let server = &matrix.server;
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("work directory");
    for visibility in VISIBILITIES {
        seed(
            &matrix,
            &git,
            &format!("list-{visibility}"),
            visibility,
            &work.path().join(visibility),
        );
    }
    let names = |who: Who| -> Vec<String> {
        let response = server.request("GET", "/api/v1/repos", matrix.bearer(who).as_deref(), None);
        assert_eq!(response.status, 200, "{}", response.body);
        response
            .json()
            .as_array()
            .expect("a list")
            .iter()
            .map(|repo| repo["name"].as_str().expect("a name").to_owned())
            .collect()
    };
    assert_eq!(names(Who::Anonymous), ["list-public"]);
    assert_eq!(names(Who::Stranger), ["list-public"]);
    assert_eq!(
        names(Who::Reader),
        ["list-hidden", "list-private", "list-public"]
    );
    assert_eq!(
        names(Who::Owner),
        ["list-hidden", "list-private", "list-public"]
    );
    git.run(
        work.path(),
        &["clone", "-q", &server.url("list-hidden"), "anonymous"],
    );
}

#[test]
fn token_scopes_expiry_and_revocation_are_enforced() {
    let matrix = start_matrix();
    let server = &matrix.server;
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("work directory");
    seed(&matrix, &git, "scoped", "private", work.path());
    let seed_dir = work.path().join("seed");
    let before = refs(&matrix, &git, "scoped");
    let authority = server.base_url().strip_prefix("http://").expect("http");
    let url_with = |token: &str| format!("http://x:{token}@{authority}/scoped.git");

    // A repo:read token of a write collaborator reads, and cannot push.
    let read_only = token_for(
        server,
        "writer",
        serde_json::json!({ "scopes": ["repo:read", "api"] }),
    );
    git.run(
        work.path(),
        &["clone", "-q", &url_with(&read_only), "read-only"],
    );
    git.commit(
        &seed_dir,
        "refused",
        &[("c.txt", "c\n")],
        support::EPOCH + 120,
    );
    let stderr = git.run_expect_failure(&seed_dir, &["push", &url_with(&read_only), "main"]);
    assert!(stderr.contains("403"), "{stderr}");
    let response = server.request(
        "GET",
        "/scoped.git/info/refs?service=git-receive-pack",
        Some(&basic_authorization("x", &read_only)),
        None,
    );
    assert_eq!(response.status, 403);
    assert!(
        response.body.contains("lacks the 'repo:write' scope"),
        "{}",
        response.body
    );
    assert_eq!(refs(&matrix, &git, "scoped"), before);

    // A token without `api` works for git, not for the API.
    let git_only = token_for(
        server,
        "writer",
        serde_json::json!({ "scopes": ["repo:read", "repo:write"] }),
    );
    git.run(
        work.path(),
        &["clone", "-q", &url_with(&git_only), "git-only"],
    );
    for path in ["/api/v1/repos/scoped", "/api/v1/repos", "/api/v1/user"] {
        let response = server.request("GET", path, Some(&format!("Bearer {git_only}")), None);
        assert_eq!(response.status, 403, "{path}: {}", response.body);
        assert!(
            response.body.contains("lacks the 'api' scope"),
            "{}",
            response.body
        );
    }

    // Expired tokens are refused by name.
    let expired = token_for(
        server,
        "writer",
        serde_json::json!({ "scopes": ["repo:read", "api"], "expires_in_days": 0 }),
    );
    let response = server.request(
        "GET",
        "/api/v1/user",
        Some(&format!("Bearer {expired}")),
        None,
    );
    assert_eq!(response.status, 401);
    assert!(response.body.contains("token expired"), "{}", response.body);
    git.run_expect_failure(work.path(), &["clone", &url_with(&expired), "expired"]);

    // A user creates, lists and revokes their own token; it stops working.
    let writer = matrix.token(Who::Writer).expect("a token").to_owned();
    let created = server.request(
        "POST",
        "/api/v1/user/tokens",
        Some(&format!("Bearer {writer}")),
        Some(&serde_json::json!({ "description": "laptop", "scopes": ["repo:read", "api"] })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let own = created.json()["token"].as_str().expect("secret").to_owned();
    let id = created.json()["id"].as_i64().expect("id");
    let who = server.request("GET", "/api/v1/user", Some(&format!("Bearer {own}")), None);
    assert_eq!(who.status, 200, "{}", who.body);
    assert_eq!(who.json()["name"], "writer");
    let listed = server.request(
        "GET",
        "/api/v1/user/tokens",
        Some(&format!("Bearer {writer}")),
        None,
    );
    let listed = listed.json();
    let entry = listed
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["id"] == id)
        .expect("the new token is listed")
        .clone();
    assert_eq!(entry["description"], "laptop");
    assert!(entry["last_used_at"].is_i64(), "{entry}");
    assert!(
        !listed.to_string().contains(&own),
        "a listing shows a secret"
    );
    // A narrow token cannot mint a wider one.
    let wider = server.request(
        "POST",
        "/api/v1/user/tokens",
        Some(&format!("Bearer {own}")),
        Some(&serde_json::json!({ "scopes": ["repo:write", "api"] })),
    );
    assert_eq!(wider.status, 403, "{}", wider.body);
    // Someone else cannot revoke it.
    let reader = matrix.token(Who::Reader).expect("a token");
    let response = server.request(
        "DELETE",
        &format!("/api/v1/user/tokens/{id}"),
        Some(&format!("Bearer {reader}")),
        None,
    );
    assert_eq!(response.status, 404, "{}", response.body);
    let response = server.request(
        "DELETE",
        &format!("/api/v1/user/tokens/{id}"),
        Some(&format!("Bearer {writer}")),
        None,
    );
    assert_eq!(response.status, 204, "{}", response.body);
    let response = server.request("GET", "/api/v1/user", Some(&format!("Bearer {own}")), None);
    assert_eq!(response.status, 401);
    assert!(response.body.contains("token revoked"), "{}", response.body);
    git.run_expect_failure(work.path(), &["clone", &url_with(&own), "revoked"]);

    // Removing a user ends their access.
    let response = server.request(
        "DELETE",
        "/api/v1/users/reader",
        Some(&owner_bearer()),
        None,
    );
    assert_eq!(response.status, 204, "{}", response.body);
    let response = server.request(
        "GET",
        "/api/v1/user",
        Some(&format!("Bearer {reader}")),
        None,
    );
    assert_eq!(response.status, 401, "{}", response.body);
    // Collaborators cannot manage users.
    let response = server.request(
        "POST",
        "/api/v1/users",
        Some(&format!("Bearer {writer}")),
        Some(&serde_json::json!({ "name": "mallory" })),
    );
    assert_eq!(response.status, 403, "{}", response.body);
    assert_eq!(refs(&matrix, &git, "scoped"), before);
}
