//! The live event stream, `GET /api/v1/events` (issue 5): a reader sees the
//! events of repositories it may read and none of others, and resumes after
//! a disconnect with `Last-Event-ID` without gaps.

mod support;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;
use support::{Git, NimbusServer, OWNER_TOKEN, commit_and_push};

#[derive(Debug, Clone)]
struct SseEvent {
    id: String,
    kind: String,
    data: serde_json::Value,
}

/// Open the stream as `token` (from `last_id`, if given); once connected,
/// run `then`; return the first `count` events, closing the connection.
fn read_stream(
    server: &NimbusServer,
    query: &str,
    token: &str,
    last_id: Option<&str>,
    count: usize,
    then: impl FnOnce(),
) -> Vec<SseEvent> {
    let url = format!("{}/api/v1/events{query}", server.base_url());
    let token = token.to_owned();
    let last_id = last_id.map(str::to_owned);
    let (connected, on_connect) = mpsc::channel();
    let (events, received) = mpsc::channel();
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = agent
            .get(&url)
            .header("Authorization", &format!("Bearer {token}"));
        if let Some(id) = &last_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.call().expect("open the stream");
        let _ = connected.send(response.status().as_u16());
        let reader = BufReader::new(response.into_body().into_reader());
        let (mut id, mut kind, mut data) = (String::new(), String::new(), String::new());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(value) = line.strip_prefix("id:") {
                id = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("event:") {
                kind = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.trim());
            } else if line.is_empty() && !data.is_empty() {
                let event = SseEvent {
                    id: std::mem::take(&mut id),
                    kind: std::mem::take(&mut kind),
                    data: serde_json::from_str(&std::mem::take(&mut data)).expect("event JSON"),
                };
                if events.send(event).is_err() {
                    return; // the test has what it wanted: disconnect
                }
            }
        }
    });
    let status = on_connect
        .recv_timeout(Duration::from_secs(30))
        .expect("the stream opens");
    assert_eq!(status, 200, "the stream opens");
    then();
    let mut got = Vec::new();
    while got.len() < count {
        match received.recv_timeout(Duration::from_secs(30)) {
            Ok(event) => got.push(event),
            Err(_) => panic!(
                "only {} of {count} events came: {got:#?}\n{}",
                got.len(),
                server.logs()
            ),
        }
    }
    got
}

#[test]
fn readers_see_only_readable_repositories_and_resume_without_gaps() {
    let server = NimbusServer::start();
    let owner = format!("Bearer {OWNER_TOKEN}");
    server.create_repo("mine", true);
    server.create_repo("theirs", true);
    let created = server.request(
        "POST",
        "/api/v1/users",
        Some(&owner),
        Some(&serde_json::json!({ "name": "bob" })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let granted = server.request(
        "PUT",
        "/api/v1/repos/mine/collaborators/bob",
        Some(&owner),
        Some(&serde_json::json!({ "access": "read" })),
    );
    assert!(granted.status < 300, "{}", granted.body);
    let token = server.request(
        "POST",
        "/api/v1/users/bob/tokens",
        Some(&owner),
        Some(&serde_json::json!({ "scopes": ["repo:read", "api"] })),
    );
    assert_eq!(token.status, 201, "{}", token.body);
    let bob = token.json()["token"].as_str().expect("token").to_owned();

    let git = Git::new(2);
    let mine = tempfile::tempdir().expect("tempdir");
    let theirs = tempfile::tempdir().expect("tempdir");
    git.init(mine.path());
    git.init(theirs.path());

    // Bob's stream: pushes to both repositories, his only from "mine".
    let first = read_stream(&server, "", &bob, None, 3, || {
        commit_and_push(&server, &git, theirs.path(), "theirs", "t1");
        commit_and_push(&server, &git, mine.path(), "mine", "m1");
        commit_and_push(&server, &git, mine.path(), "mine", "m2");
    });
    let kinds: Vec<&str> = first.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["branch.created", "push", "push"], "{first:#?}");
    assert!(
        first.iter().all(|e| e.data["repository"]["name"] == "mine"),
        "{first:#?}"
    );
    assert!(first.iter().all(|e| e.data["type"] == e.kind.as_str()));

    // Disconnected after two; meanwhile two more pushes (one unreadable).
    let resumed = read_stream(&server, "", &bob, Some(&first[1].id), 2, || {
        commit_and_push(&server, &git, theirs.path(), "theirs", "t2");
        commit_and_push(&server, &git, mine.path(), "mine", "m3");
    });
    assert_eq!(
        resumed[0].id, first[2].id,
        "resumes right after the last seen event"
    );
    assert_eq!(resumed[0].data, first[2].data);
    assert_eq!(resumed[1].data["repository"]["name"], "mine");
    assert_eq!(resumed[1].data["type"], "push");

    // The owner, from the beginning, filtered to pushes: every push of both
    // repositories, in order, and the ids only grow.
    let all = read_stream(&server, "?type=push", OWNER_TOKEN, Some("0"), 5, || {});
    let repos: Vec<&str> = all
        .iter()
        .map(|e| e.data["repository"]["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        repos,
        ["theirs", "mine", "mine", "theirs", "mine"],
        "{all:#?}"
    );
    let ids: Vec<i64> = all
        .iter()
        .map(|e| e.id.parse().expect("numeric id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // A repository filter, and bad requests.
    let only = read_stream(
        &server,
        "?repo=theirs&type=branch.",
        OWNER_TOKEN,
        Some("0"),
        1,
        || {},
    );
    assert_eq!(only[0].kind, "branch.created");
    assert_eq!(only[0].data["repository"]["name"], "theirs");
    let bad = server.request("GET", "/api/v1/events?type=Push", Some(&owner), None);
    assert_eq!(bad.status, 422, "{}", bad.body);
    let no_api = server.request(
        "POST",
        "/api/v1/users/bob/tokens",
        Some(&owner),
        Some(&serde_json::json!({ "scopes": ["repo:read"] })),
    );
    let no_api = no_api.json()["token"].as_str().expect("token").to_owned();
    let refused = server.request(
        "GET",
        "/api/v1/events",
        Some(&format!("Bearer {no_api}")),
        None,
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
}
