//! The audit log: what the API, git pushes, failed token use and the
//! command line record, read back through `GET /api/v1/audit` with its
//! filters and paging, and who may read it (the owner only). No event's
//! detail ever holds a secret.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use support::{Git, NimbusServer, OWNER_TOKEN};

fn owner() -> String {
    format!("Bearer {OWNER_TOKEN}")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `GET /api/v1/audit?{query}` as the owner; the events, newest first.
fn events(server: &NimbusServer, query: &str) -> Vec<Value> {
    let response = server.request(
        "GET",
        &format!("/api/v1/audit?{query}"),
        Some(&owner()),
        None,
    );
    assert_eq!(response.status, 200, "{query}: {}", response.body);
    response.json().as_array().expect("an array").clone()
}

/// The newest event of `action`.
fn newest(server: &NimbusServer, action: &str) -> Value {
    events(server, &format!("action={action}&limit=1"))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {action} event in {:#?}", events(server, "")))
}

fn count(server: &NimbusServer, action: &str) -> usize {
    events(server, &format!("action={action}&limit=1000")).len()
}

fn owner_name(server: &NimbusServer) -> String {
    let me = server.request("GET", "/api/v1/user", Some(&owner()), None);
    assert_eq!(me.status, 200, "{}", me.body);
    me.json()["name"].as_str().expect("a name").to_owned()
}

fn create_user(server: &NimbusServer, name: &str) {
    let created = server.request(
        "POST",
        "/api/v1/users",
        Some(&owner()),
        Some(&json!({ "name": name })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
}

/// A token with every scope for `name`, issued by the owner: `(id, secret)`.
fn token_for(server: &NimbusServer, name: &str) -> (i64, String) {
    let token = server.request(
        "POST",
        &format!("/api/v1/users/{name}/tokens"),
        Some(&owner()),
        Some(&json!({ "scopes": ["repo:read", "repo:write", "admin", "api"] })),
    );
    assert_eq!(token.status, 201, "{}", token.body);
    let body = token.json();
    (
        body["id"].as_i64().expect("an id"),
        body["token"].as_str().expect("a secret").to_owned(),
    )
}

fn set_collaborator(server: &NimbusServer, repo: &str, user: &str, access: &str) {
    let response = server.request(
        "PUT",
        &format!("/api/v1/repos/{repo}/collaborators/{user}"),
        Some(&owner()),
        Some(&json!({ "access": access })),
    );
    assert_eq!(response.status, 200, "{}", response.body);
}

fn nimbus_cli(data_dir: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("NIMBUS_LOG", "warn")
        .output()
        .expect("run nimbus");
    assert!(
        output.status.success(),
        "nimbus {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// No event anywhere in the log mentions any of `secrets`, nor a token.
fn assert_no_secrets(server: &NimbusServer, secrets: &[&str]) {
    let all = server.request("GET", "/api/v1/audit?limit=1000", Some(&owner()), None);
    assert_eq!(all.status, 200, "{}", all.body);
    for secret in secrets {
        assert!(
            !all.body.contains(secret),
            "a secret is in the log: {}",
            all.body
        );
    }
    for event in all.json().as_array().expect("an array") {
        let detail = event["detail"].as_str().expect("a detail");
        assert!(!detail.contains("nimbus_"), "a token in {event}");
    }
}

#[test]
fn api_actions_pushes_and_failures_are_recorded() {
    let server = NimbusServer::start();
    let owner_name = owner_name(&server);

    create_user(&server, "alice");
    let event = newest(&server, "user.created");
    assert_eq!(event["target"], "alice");
    assert_eq!(event["actor"], owner_name.as_str());
    assert_eq!(event["client"], "127.0.0.1");

    server.create_repo("audited", true);
    let event = newest(&server, "repo.created");
    assert_eq!(event["repo"], "audited");
    assert_eq!(event["actor"], owner_name.as_str());
    assert!(
        event["detail"]
            .as_str()
            .expect("present")
            .contains("private"),
        "{event}"
    );

    let patched = server.request(
        "PATCH",
        "/api/v1/repos/audited",
        Some(&owner()),
        Some(&json!({ "visibility": "public" })),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    let event = newest(&server, "repo.updated");
    assert_eq!(event["repo"], "audited");
    assert_eq!(event["detail"], "visibility private -> public");

    set_collaborator(&server, "audited", "alice", "write");
    let event = newest(&server, "collaborator.added");
    assert_eq!(
        (&event["repo"], &event["target"], &event["detail"]),
        (&json!("audited"), &json!("alice"), &json!("write"))
    );
    set_collaborator(&server, "audited", "alice", "admin");
    let event = newest(&server, "collaborator.changed");
    assert_eq!(event["detail"], "write -> admin");
    // Setting the same level again changes nothing and records nothing.
    set_collaborator(&server, "audited", "alice", "admin");
    assert_eq!(count(&server, "collaborator.changed"), 1);
    let removed = server.request(
        "DELETE",
        "/api/v1/repos/audited/collaborators/alice",
        Some(&owner()),
        None,
    );
    assert_eq!(removed.status, 204, "{}", removed.body);
    let event = newest(&server, "collaborator.removed");
    assert_eq!(
        (&event["repo"], &event["target"]),
        (&json!("audited"), &json!("alice"))
    );

    // Tokens: issued by the owner, then one alice makes and revokes herself.
    let (issued_id, alice_token) = token_for(&server, "alice");
    let event = newest(&server, "token.created");
    assert_eq!(event["target"], issued_id.to_string());
    assert_eq!(event["actor"], owner_name.as_str());
    assert!(
        event["detail"].as_str().expect("present").contains("alice"),
        "{event}"
    );
    let own = server.request(
        "POST",
        "/api/v1/user/tokens",
        Some(&bearer(&alice_token)),
        Some(&json!({ "scopes": ["repo:read"], "description": "laptop" })),
    );
    assert_eq!(own.status, 201, "{}", own.body);
    let own_id = own.json()["id"].as_i64().expect("present");
    let own_secret = own.json()["token"].as_str().expect("present").to_owned();
    assert_eq!(newest(&server, "token.created")["actor"], "alice");
    let revoked = server.request(
        "DELETE",
        &format!("/api/v1/user/tokens/{own_id}"),
        Some(&bearer(&alice_token)),
        None,
    );
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    let event = newest(&server, "token.revoked");
    assert_eq!(event["target"], own_id.to_string());
    assert_eq!(event["actor"], "alice");

    // A wrong token is refused and recorded, without an actor.
    let wrong = "nimbus_thisIsNotARealTokenAtAll0123456789ab";
    let refused = server.request("GET", "/api/v1/user", Some(&bearer(wrong)), None);
    assert_eq!(refused.status, 401, "{}", refused.body);
    let event = newest(&server, "token.failed");
    assert!(event["actor"].is_null(), "{event}");
    assert_eq!(event["client"], "127.0.0.1");

    // Pushes name the pusher and what moved.
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("tempdir");
    let seed = work.path().join("seed");
    git.init(&seed);
    let first = git.commit(&seed, "first", &[("a.txt", "a\n")], support::EPOCH);
    git.run(
        &seed,
        &[
            "push",
            "-q",
            &server.push_url("audited"),
            "HEAD:refs/heads/main",
        ],
    );
    let event = newest(&server, "push");
    assert_eq!(event["actor"], owner_name.as_str());
    assert_eq!(event["repo"], "audited");
    assert_eq!(
        event["detail"],
        format!("refs/heads/main new {}", &first[..7])
    );
    let second = git.commit(&seed, "second", &[("b.txt", "b\n")], support::EPOCH + 60);
    let authority = server.base_url().strip_prefix("http://").expect("present");
    let alice_url = format!("http://alice:{alice_token}@{authority}/audited.git");
    set_collaborator(&server, "audited", "alice", "write");
    git.run(&seed, &["push", "-q", &alice_url, "HEAD:refs/heads/main"]);
    let event = newest(&server, "push");
    assert_eq!(event["actor"], "alice");
    assert_eq!(
        event["detail"],
        format!("refs/heads/main {}..{}", &first[..7], &second[..7])
    );
    // A refused push (not a fast-forward) records no push.
    let pushes = count(&server, "push");
    git.run(&seed, &["reset", "-q", "--hard", &first]);
    git.commit(&seed, "diverged", &[("c.txt", "c\n")], support::EPOCH + 120);
    let refused = git.output(&seed, &["push", "-q", &alice_url, "HEAD:refs/heads/main"]);
    assert!(
        !refused.status.success(),
        "a non-fast-forward push succeeded"
    );
    assert_eq!(count(&server, "push"), pushes);

    let deleted = server.request("DELETE", "/api/v1/repos/audited", Some(&owner()), None);
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert_eq!(newest(&server, "repo.deleted")["repo"], "audited");
    let deleted = server.request("DELETE", "/api/v1/users/alice", Some(&owner()), None);
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert_eq!(newest(&server, "user.deleted")["target"], "alice");

    assert_no_secrets(&server, &[OWNER_TOKEN, &alice_token, &own_secret, wrong]);
}

#[test]
fn command_line_actions_are_recorded_as_the_owner() {
    let server = NimbusServer::start();
    let owner_name = owner_name(&server);
    let data = server.data_dir();
    nimbus_cli(&data, &["user", "add", "bob"]);
    nimbus_cli(&data, &["repo", "create", "cli-repo", "--private"]);
    nimbus_cli(
        &data,
        &["collaborator", "add", "cli-repo", "bob", "--access", "read"],
    );
    nimbus_cli(
        &data,
        &[
            "collaborator",
            "add",
            "cli-repo",
            "bob",
            "--access",
            "write",
        ],
    );
    nimbus_cli(&data, &["collaborator", "remove", "cli-repo", "bob"]);
    let secret = nimbus_cli(
        &data,
        &["token", "create", "--user", "bob", "--scopes", "api"],
    );
    let token_id = newest(&server, "token.created")["target"]
        .as_str()
        .expect("present")
        .to_owned();
    nimbus_cli(&data, &["token", "revoke", "--user", "bob", &token_id]);
    nimbus_cli(&data, &["repo", "rename", "cli-repo", "cli-renamed"]);
    nimbus_cli(&data, &["repo", "delete", "cli-renamed"]);
    nimbus_cli(&data, &["user", "remove", "bob"]);

    let expected = [
        ("user.created", None, Some("bob"), "command line"),
        (
            "repo.created",
            Some("cli-repo"),
            None,
            "command line: private repository, default branch main",
        ),
        (
            "collaborator.added",
            Some("cli-repo"),
            Some("bob"),
            "command line: read",
        ),
        (
            "collaborator.changed",
            Some("cli-repo"),
            Some("bob"),
            "command line: read -> write",
        ),
        (
            "collaborator.removed",
            Some("cli-repo"),
            Some("bob"),
            "command line",
        ),
        (
            "token.created",
            None,
            Some(token_id.as_str()),
            "command line: for bob with scopes api",
        ),
        (
            "token.revoked",
            None,
            Some(token_id.as_str()),
            "command line: of bob",
        ),
        (
            "repo.updated",
            Some("cli-renamed"),
            None,
            "command line: name cli-repo -> cli-renamed",
        ),
        ("repo.deleted", Some("cli-renamed"), None, "command line"),
        ("user.deleted", None, Some("bob"), "command line"),
    ];
    let mut listed = events(&server, "limit=1000");
    listed.reverse();
    let actual: Vec<_> = listed
        .iter()
        .map(|e| {
            (
                e["action"].as_str().expect("present").to_owned(),
                e["repo"].as_str().map(str::to_owned),
                e["target"].as_str().map(str::to_owned),
                e["detail"].as_str().expect("present").to_owned(),
            )
        })
        .collect();
    let expected: Vec<_> = expected
        .iter()
        .map(|(a, r, t, d)| {
            (
                (*a).to_owned(),
                r.map(str::to_owned),
                t.map(str::to_owned),
                (*d).to_owned(),
            )
        })
        .collect();
    assert_eq!(actual, expected);
    for event in &listed {
        assert_eq!(event["actor"], owner_name.as_str(), "{event}");
        assert!(event["client"].is_null(), "{event}");
    }
    assert_no_secrets(&server, &[secret.trim()]);

    // `nimbus audit` shows the same log as a table, filtered.
    let table = nimbus_cli(
        &data,
        &["audit", "--action", "collaborator.", "--limit", "2"],
    );
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("id\ttime (UTC)\tactor\taction"),
        "{table}"
    );
    assert!(
        lines[1].contains("\tcollaborator.removed\tcli-repo\tbob\t"),
        "{table}"
    );
    assert!(lines[2].contains("\tcollaborator.changed\t"), "{table}");
    let table = nimbus_cli(&data, &["audit", "--repo", "cli-renamed"]);
    assert_eq!(table.lines().count(), 3, "{table}");
    let bad = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .arg("--data-dir")
        .arg(&data)
        .args(["audit", "--action", "Token*"])
        .output()
        .expect("run nimbus");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("invalid --action"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn filters_and_paging() {
    let server = NimbusServer::start();
    let owner_name = owner_name(&server);
    for name in ["u1", "u2", "u3"] {
        create_user(&server, name);
    }
    let (_, u1_token) = token_for(&server, "u1");
    token_for(&server, "u2");
    server.create_repo("filtered", false);
    set_collaborator(&server, "filtered", "u1", "read");
    let own = server.request(
        "POST",
        "/api/v1/user/tokens",
        Some(&bearer(&u1_token)),
        Some(&json!({ "scopes": ["repo:read"] })),
    );
    assert_eq!(own.status, 201, "{}", own.body);

    let all = events(&server, "");
    assert_eq!(all.len(), 8, "{all:#?}");
    let ids: Vec<i64> = all
        .iter()
        .map(|e| e["id"].as_i64().expect("present"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    let tokens = events(&server, "action=token.");
    assert_eq!(tokens.len(), 3, "{tokens:#?}");
    assert!(tokens.iter().all(|e| e["action"] == "token.created"));
    assert_eq!(events(&server, "action=token.created").len(), 3);
    assert!(
        events(&server, "action=token").is_empty(),
        "exact unless it ends in a dot"
    );

    let by_u1 = events(&server, "actor=u1");
    assert_eq!(by_u1.len(), 1, "{by_u1:#?}");
    assert_eq!(by_u1[0]["action"], "token.created");
    assert_eq!(events(&server, &format!("actor={owner_name}")).len(), 7);

    let repo = events(&server, "repo=filtered");
    let actions: Vec<_> = repo
        .iter()
        .map(|e| e["action"].as_str().expect("present"))
        .collect();
    assert_eq!(actions, ["collaborator.added", "repo.created"]);
    assert_eq!(
        events(&server, "repo=filtered&action=repo.created").len(),
        1
    );

    // Paging backwards with `before`.
    let first = events(&server, "limit=3");
    assert_eq!(first.len(), 3);
    let last = first[2]["id"].as_i64().expect("present");
    let second = events(&server, &format!("limit=3&before={last}"));
    assert_eq!(second.len(), 3);
    assert!(
        second
            .iter()
            .all(|e| e["id"].as_i64().expect("present") < last)
    );
    let third = events(&server, &format!("limit=3&before={}", second[2]["id"]));
    assert_eq!(third.len(), 2);
    let paged: Vec<i64> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .map(|e| e["id"].as_i64().expect("present"))
        .collect();
    assert_eq!(paged, ids);

    assert!(events(&server, "since=99999999999").is_empty());
    assert_eq!(events(&server, "since=0").len(), 8);
}

#[test]
fn only_the_owner_reads_the_audit_log() {
    let server = NimbusServer::start();
    create_user(&server, "carol");
    server.create_repo("shared", false);
    set_collaborator(&server, "shared", "carol", "admin");
    let (_, carol) = token_for(&server, "carol");

    let anonymous = server.request("GET", "/api/v1/audit", None, None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert!(anonymous.json()["error"].is_string());
    let collaborator = server.request("GET", "/api/v1/audit", Some(&bearer(&carol)), None);
    assert_eq!(collaborator.status, 403, "{}", collaborator.body);
    assert!(collaborator.json()["error"].is_string());

    for query in [
        "action=Token",
        "action=token%25",
        "action=a%20b",
        "limit=0",
        "limit=1001",
        "limit=x",
        "colour=red",
    ] {
        let bad = server.request(
            "GET",
            &format!("/api/v1/audit?{query}"),
            Some(&owner()),
            None,
        );
        assert_eq!(bad.status, 422, "{query}: {}", bad.body);
        assert!(bad.json()["error"].is_string(), "{query}");
    }
    let posted = server.request("POST", "/api/v1/audit", Some(&owner()), Some(&json!({})));
    assert_eq!(posted.status, 405, "{}", posted.body);
}
