//! Several `nimbus serve` processes on one PostgreSQL database and one
//! object store: a push through one is visible through the other at once,
//! and of two pushes racing on one ref through different processes exactly
//! one wins. Needs `NIMBUS_TEST_POSTGRES_URL` (scripts/test starts
//! PostgreSQL and sets it).

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use support::{Git, NimbusServer, ServerOptions};

fn postgres_url() -> String {
    std::env::var("NIMBUS_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "NIMBUS_TEST_POSTGRES_URL is not set; scripts/test starts PostgreSQL \
             (or run: export NIMBUS_TEST_POSTGRES_URL=\"$(scripts/postgres)\")"
        )
    })
}

/// A fresh database for one test, on the test server.
fn fresh_database(name: &str) -> String {
    let admin = postgres_url();
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        let output = Command::new("psql")
            .arg(&admin)
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-c", &statement])
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "{statement}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base)
        .expect("a database URL ends in /<database>");
    format!("{base}/{name}")
}

/// Two servers sharing `database` and the object store directory `objects`.
fn pair(database: &str, objects: &Path) -> (NimbusServer, NimbusServer) {
    let options = || ServerOptions {
        env: vec![
            ("NIMBUS_DATABASE_URL".into(), database.into()),
            (
                "NIMBUS_OBJECT_STORE".into(),
                objects.to_str().expect("utf-8 path").into(),
            ),
        ],
        ..ServerOptions::default()
    };
    // One after the other: the first creates the owner, the second finds it.
    let first = NimbusServer::start_with(options());
    let second = NimbusServer::start_with(options());
    (first, second)
}

#[test]
fn a_push_through_one_process_is_visible_through_another_at_once() {
    let database = fresh_database("nimbus_side_by_side_visible");
    let objects = tempfile::tempdir().expect("tempdir");
    let (a, b) = pair(&database, objects.path());
    let git = Git::new(2);
    a.create_repo("shared", false);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    for i in 0..3u64 {
        let head = git.commit(
            work.path(),
            &format!("commit {i}"),
            &[("file.txt", format!("{i}\n"))],
            1_700_000_000 + i,
        );
        git.run(work.path(), &["push", "-q", &a.push_url("shared"), "main"]);
        // No delay: the second process must see the ref right away.
        assert_eq!(
            git.ls_remote(&b.url("shared"), &["refs/heads/main"]),
            vec![format!("{head}\trefs/heads/main")]
        );
        let clone = tempfile::tempdir().expect("tempdir");
        git.run(clone.path(), &["clone", "-q", &b.url("shared"), "c"]);
        assert_eq!(git.rev_parse(&clone.path().join("c"), "HEAD"), head);
        git.fsck(&clone.path().join("c"));
    }
}

#[test]
fn racing_pushes_through_two_processes_have_exactly_one_winner() {
    let database = fresh_database("nimbus_side_by_side_race");
    let objects = tempfile::tempdir().expect("tempdir");
    let (a, b) = pair(&database, objects.path());
    let git = Git::new(2);
    a.create_repo("race", false);
    let seed = tempfile::tempdir().expect("tempdir");
    git.init(seed.path());
    let mut base = git.commit(seed.path(), "base", &[("f", "base\n")], 1_700_000_000);
    git.run(seed.path(), &["push", "-q", &a.push_url("race"), "main"]);
    for round in 0..5u64 {
        // Two clients, each one commit ahead of the same base.
        let clients: Vec<(tempfile::TempDir, String, String)> = [&a, &b]
            .iter()
            .enumerate()
            .map(|(i, server)| {
                let dir = tempfile::tempdir().expect("tempdir");
                git.run(dir.path(), &["clone", "-q", &server.url("race"), "w"]);
                let work = dir.path().join("w");
                let head = git.commit(
                    &work,
                    &format!("round {round} client {i}"),
                    &[("f", format!("{round}-{i}\n"))],
                    1_700_001_000 + round * 10 + i as u64,
                );
                (dir, head, server.push_url("race"))
            })
            .collect();
        let barrier = Arc::new(Barrier::new(2));
        let results: Vec<(String, bool, String)> = std::thread::scope(|scope| {
            let handles: Vec<_> = clients
                .iter()
                .map(|(dir, head, url)| {
                    let barrier = barrier.clone();
                    let git = git.clone();
                    let work = dir.path().join("w");
                    scope.spawn(move || {
                        barrier.wait();
                        let output = git.output(&work, &["push", url, "main"]);
                        (head.clone(), output.status.success(), output.stderr)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("push thread"))
                .collect()
        });
        let winners: Vec<&(String, bool, String)> = results.iter().filter(|r| r.1).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:#?}");
        let loser = results.iter().find(|r| !r.1).expect("one loser");
        assert!(
            loser.2.contains("rejected") || loser.2.contains("failed"),
            "round {round}: {}",
            loser.2
        );
        let winner = &winners[0].0;
        for server in [&a, &b] {
            assert_eq!(
                git.ls_remote(&server.url("race"), &["refs/heads/main"]),
                vec![format!("{winner}\trefs/heads/main")]
            );
        }
        let check = tempfile::tempdir().expect("tempdir");
        git.run(check.path(), &["clone", "-q", &b.url("race"), "c"]);
        git.fsck(&check.path().join("c"));
        assert_ne!(*winner, base);
        base = winner.clone();
    }
}
