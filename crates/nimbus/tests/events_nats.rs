//! Events through a real NATS JetStream (issue 5): every push of a burst
//! of concurrent pushes yields exactly its events, in order per repository;
//! a NATS outage delays events without losing any; a process killed between
//! the ref commit and the publish delivers the events after a restart; a
//! rejected push emits nothing. Each test runs its own `nats-server`.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;
use support::cloud::{cloud_env, fresh_bucket, fresh_database, unique_name};
use support::nats::{NatsServer, stream_events};
use support::{Git, NimbusServer, ServerOptions};

const ZERO: &str = "0000000000000000000000000000000000000000";
const WAIT: Duration = Duration::from_secs(60);

fn server_with(nats: &NatsServer, mut env: Vec<(String, String)>) -> NimbusServer {
    env.push(("NIMBUS_NATS_URL".into(), nats.url()));
    NimbusServer::start_with(ServerOptions {
        env,
        ..ServerOptions::default()
    })
}

/// Push `count` commits to `branch` of `url` one push at a time; the
/// commit ids, oldest first.
fn push_commits(
    git: &Git,
    dir: &Path,
    url: &str,
    branch: &str,
    label: &str,
    count: usize,
) -> Vec<String> {
    (0..count)
        .map(|i| {
            let id = git.commit(
                dir,
                &format!("{label} {i}"),
                &[(format!("{label}.txt").as_str(), format!("{label} {i}\n"))],
                1_700_000_000 + i as u64,
            );
            git.run(
                dir,
                &["push", "-q", url, &format!("HEAD:refs/heads/{branch}")],
            );
            id
        })
        .collect()
}

/// The `push` events of one repository and ref, in stream order.
fn pushes<'a>(events: &'a [Value], repo: &str, name: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            e["type"] == "push" && e["repository"]["name"] == repo && e["data"]["ref"] == name
        })
        .collect()
}

/// The push events chain: each starts where the one before ended, from
/// nothing, through exactly `commits`, each listing its one new commit.
fn assert_chain(events: &[Value], repo: &str, branch: &str, commits: &[String]) {
    let name = format!("refs/heads/{branch}");
    let chain = pushes(events, repo, &name);
    let afters: Vec<&str> = chain
        .iter()
        .map(|e| e["data"]["after"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        afters,
        commits.iter().map(String::as_str).collect::<Vec<_>>(),
        "{repo} {branch}"
    );
    let mut before = ZERO.to_owned();
    for (event, commit) in chain.iter().zip(commits) {
        assert_eq!(event["data"]["before"], before.as_str(), "{event}");
        assert_eq!(event["data"]["forced"], false, "{event}");
        assert_eq!(event["data"]["commit_count"], 1, "{event}");
        assert_eq!(
            event["data"]["commits"][0]["id"],
            commit.as_str(),
            "{event}"
        );
        assert_eq!(event["actor"]["name"], "owner", "{event}");
        before = commit.clone();
    }
    // The branch was created once, before its first push event.
    let created: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e["type"] == "branch.created"
                && e["repository"]["name"] == repo
                && e["data"]["ref"] == name.as_str()
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(created.len(), 1, "{repo} {branch} created once");
    let first_push = events
        .iter()
        .position(|e| std::ptr::eq(e, chain[0]))
        .expect("first push");
    assert!(created[0] < first_push);
}

fn assert_unique_ids(events: &[Value]) {
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), events.len(), "every event once");
}

#[test]
fn concurrent_pushes_yield_exactly_their_events_in_order() {
    let nats = NatsServer::start();
    let server = server_with(&nats, Vec::new());
    let repos = ["alpha", "beta", "gamma"];
    for repo in repos {
        server.create_repo(repo, false);
    }
    // Three repositories at once, and two branches of one at once.
    let jobs: Vec<(&str, &str)> = vec![
        ("alpha", "main"),
        ("alpha", "side"),
        ("beta", "main"),
        ("gamma", "main"),
    ];
    let pushed: BTreeMap<(String, String), Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|&(repo, branch)| {
                let url = server.push_url(repo);
                scope.spawn(move || {
                    let git = Git::new(2);
                    let dir = tempfile::tempdir().expect("tempdir");
                    git.init(dir.path());
                    let commits = push_commits(
                        &git,
                        dir.path(),
                        &url,
                        branch,
                        &format!("{repo}-{branch}"),
                        4,
                    );
                    ((repo.to_owned(), branch.to_owned()), commits)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("pusher"))
            .collect()
    });
    // 3 repository.created, then 4 branches x (1 branch.created + 4 push).
    let events = stream_events(&nats.url(), 23, WAIT);
    assert_eq!(events.len(), 23, "{events:#?}\n{}", server.logs());
    assert_unique_ids(&events);
    for (i, repo) in repos.iter().enumerate() {
        assert_eq!(events[i]["type"], "repository.created", "{events:#?}");
        assert_eq!(events[i]["repository"]["name"], *repo);
        assert_eq!(events[i]["actor"]["name"], "owner");
    }
    for ((repo, branch), commits) in &pushed {
        assert_chain(&events, repo, branch, commits);
    }
}

#[test]
fn a_nats_outage_delays_events_without_losing_any() {
    let mut nats = NatsServer::start();
    let server = server_with(&nats, Vec::new());
    server.create_repo("outage", false);
    let git = Git::new(2);
    let dir = tempfile::tempdir().expect("tempdir");
    git.init(dir.path());
    let url = server.push_url("outage");
    let mut commits = push_commits(&git, dir.path(), &url, "main", "before", 3);
    assert_eq!(stream_events(&nats.url(), 5, WAIT).len(), 5);

    nats.stop();
    // Pushes go on while NATS is down.
    commits.extend(push_commits(&git, dir.path(), &url, "main", "during", 3));
    nats.restart();
    commits.extend(push_commits(&git, dir.path(), &url, "main", "after", 2));

    let events = stream_events(&nats.url(), 10, WAIT);
    assert_eq!(events.len(), 10, "{events:#?}\n{}", server.logs());
    assert_unique_ids(&events);
    assert_chain(&events, "outage", "main", &commits);
}

#[test]
fn events_committed_before_a_crash_are_published_after_restart() {
    let mut nats = NatsServer::start();
    nats.stop();
    let name = unique_name("nimbus_e2e_events_crash");
    let env = cloud_env(&fresh_database(&name), &fresh_bucket(&name), "crash");
    let first = server_with(&nats, env.clone());
    first.create_repo("crash", false);
    let git = Git::new(2);
    let dir = tempfile::tempdir().expect("tempdir");
    git.init(dir.path());
    // NATS is down: the pushes commit, their events wait in the outbox.
    let commits = push_commits(
        &git,
        dir.path(),
        &first.push_url("crash"),
        "main",
        "crash",
        2,
    );
    let pid = first.pid();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    drop(first);

    nats.restart();
    let second = server_with(&nats, env);
    let events = stream_events(&nats.url(), 4, WAIT);
    assert_eq!(events.len(), 4, "{events:#?}\n{}", second.logs());
    assert_eq!(events[0]["type"], "repository.created");
    assert_chain(&events, "crash", "main", &commits);
}

#[test]
fn a_rejected_push_emits_nothing() {
    let nats = NatsServer::start();
    let server = server_with(&nats, Vec::new());
    server.create_repo("refused", false);
    let git = Git::new(2);
    let dir = tempfile::tempdir().expect("tempdir");
    git.init(dir.path());
    let url = server.push_url("refused");
    let main = push_commits(&git, dir.path(), &url, "main", "main", 1);
    // Atomic: a new branch and deleting the current branch, which the
    // server refuses, so neither happens.
    let refused = git.output(
        dir.path(),
        &[
            "push",
            "--atomic",
            &url,
            "HEAD:refs/heads/extra",
            ":refs/heads/main",
        ],
    );
    assert!(!refused.status.success(), "the push must be refused");
    // A later push: once its events are there, the relay is past anything
    // the refused push could have written.
    let later = push_commits(&git, dir.path(), &url, "later", "later", 1);
    // And a forced push that rewrites it.
    git.run(dir.path(), &["commit", "--amend", "-q", "-m", "rewritten"]);
    git.run(
        dir.path(),
        &["push", "-q", "-f", &url, "HEAD:refs/heads/later"],
    );
    let rewritten = git.rev_parse(dir.path(), "HEAD");
    // Renaming and deleting the repository are events too.
    let owner = format!("Bearer {}", support::OWNER_TOKEN);
    let renamed = server.request(
        "PATCH",
        "/api/v1/repos/refused",
        Some(&owner),
        Some(&serde_json::json!({ "name": "renamed" })),
    );
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    let deleted = server.request("DELETE", "/api/v1/repos/renamed", Some(&owner), None);
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let events = stream_events(&nats.url(), 8, WAIT);
    assert_eq!(events.len(), 8, "{events:#?}");
    assert_eq!(events[6]["type"], "repository.renamed", "{events:#?}");
    assert_eq!(events[6]["data"]["from"], "refused");
    assert_eq!(events[6]["data"]["to"], "renamed");
    assert_eq!(events[7]["type"], "repository.deleted", "{events:#?}");
    assert_eq!(events[7]["repository"]["name"], "renamed");
    assert_chain(&events, "refused", "main", &main);
    assert!(
        events
            .iter()
            .all(|e| e["data"]["ref"] != "refs/heads/extra"),
        "{events:#?}"
    );
    let later_pushes = pushes(&events, "refused", "refs/heads/later");
    assert_eq!(later_pushes.len(), 2, "{events:#?}");
    assert_eq!(later_pushes[0]["data"]["after"], later[0].as_str());
    assert_eq!(later_pushes[0]["data"]["forced"], false);
    let forced = later_pushes[1];
    assert_eq!(forced["data"]["before"], later[0].as_str(), "{forced}");
    assert_eq!(forced["data"]["after"], rewritten.as_str(), "{forced}");
    assert_eq!(forced["data"]["forced"], true, "{forced}");
    assert_eq!(
        forced["data"]["commits"][0]["message"], "rewritten",
        "{forced}"
    );
}
