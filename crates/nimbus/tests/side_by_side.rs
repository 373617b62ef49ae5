//! Several `nimbus serve` processes on one PostgreSQL database and one S3
//! bucket (the production configuration; scripts/test starts both
//! services): a push through one is visible through the others at once; of
//! pushes racing on one ref through different processes exactly one wins;
//! a process killed with SIGKILL in the middle of a push leaves no visible
//! partial state, and the next push works.

mod support;

use std::sync::{Arc, Barrier};
use std::time::Duration;
use support::cloud::{cloud_env, fresh_bucket, fresh_database, unique_name};
use support::{Git, NimbusServer, ServerOptions, noise};

/// The storage settings all processes of one test share.
struct SharedStorage {
    env: Vec<(String, String)>,
}

impl SharedStorage {
    fn fresh(test: &str) -> Self {
        let name = unique_name(&format!("nimbus_e2e_{test}"));
        let database = fresh_database(&name);
        let bucket = fresh_bucket(&name);
        SharedStorage {
            env: cloud_env(&database, &bucket, "shared"),
        }
    }

    /// One more server process on this storage.
    fn server(&self) -> NimbusServer {
        NimbusServer::start_with(ServerOptions {
            env: self.env.clone(),
            ..ServerOptions::default()
        })
    }

    /// Three processes, started one after the other: the first creates the
    /// owner, the others find it.
    fn trio(&self) -> [NimbusServer; 3] {
        [self.server(), self.server(), self.server()]
    }
}

#[test]
fn a_push_through_one_process_is_visible_through_another_at_once() {
    let storage = SharedStorage::fresh("visible");
    let [a, b, c] = storage.trio();
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
        // Each push through another process.
        let (pusher, readers) = match i {
            0 => (&a, [&b, &c]),
            1 => (&b, [&c, &a]),
            _ => (&c, [&a, &b]),
        };
        git.run(
            work.path(),
            &["push", "-q", &pusher.push_url("shared"), "main"],
        );
        for reader in readers {
            // No delay: the other processes must see the ref right away,
            // and serve its objects from the bucket.
            assert_eq!(
                git.ls_remote(&reader.url("shared"), &["refs/heads/main"]),
                vec![format!("{head}\trefs/heads/main")]
            );
            let clone = tempfile::tempdir().expect("tempdir");
            git.run(clone.path(), &["clone", "-q", &reader.url("shared"), "c"]);
            assert_eq!(git.rev_parse(&clone.path().join("c"), "HEAD"), head);
            git.fsck(&clone.path().join("c"));
        }
    }
}

#[test]
fn racing_pushes_through_three_processes_have_exactly_one_winner() {
    let storage = SharedStorage::fresh("race");
    let servers = storage.trio();
    let [a, b, c] = &servers;
    let git = Git::new(2);
    a.create_repo("race", false);
    let seed = tempfile::tempdir().expect("tempdir");
    git.init(seed.path());
    let mut base = git.commit(seed.path(), "base", &[("f", "base\n")], 1_700_000_000);
    git.run(seed.path(), &["push", "-q", &a.push_url("race"), "main"]);
    for round in 0..5u64 {
        // Three clients, each one commit ahead of the same base.
        let clients: Vec<(tempfile::TempDir, String, String)> = [a, b, c]
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
        let barrier = Arc::new(Barrier::new(3));
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
        for loser in results.iter().filter(|r| !r.1) {
            assert!(
                loser.2.contains("rejected") || loser.2.contains("failed"),
                "round {round}: {}",
                loser.2
            );
        }
        let winner = &winners[0].0;
        for server in [a, b, c] {
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

#[test]
fn a_process_killed_during_a_push_leaves_no_partial_state() {
    let storage = SharedStorage::fresh("killed");
    let [a, b] = [storage.server(), storage.server()];
    let git = Git::new(2);
    a.create_repo("killed", false);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    let mut current = git.commit(work.path(), "base", &[("f", "base\n")], 1_700_000_000);
    git.run(work.path(), &["push", "-q", &a.push_url("killed"), "main"]);

    // Kill the receiving process at different points of a large push:
    // while the pack arrives, while it is indexed, while it is uploaded.
    let mut interrupted = 0;
    for (round, delay_ms) in [150u64, 400, 800, 1500, 3000].into_iter().enumerate() {
        let victim = storage.server();
        let head = git.commit(
            work.path(),
            &format!("large {round}"),
            &[(
                format!("large{round}.bin").as_str(),
                noise(round as u64 + 7, 24 << 20),
            )],
            1_700_000_100 + round as u64,
        );
        let url = victim.push_url("killed");
        let pusher = {
            let git = git.clone();
            let dir = work.path().to_owned();
            std::thread::spawn(move || git.output(&dir, &["push", "-q", &url, "main"]))
        };
        std::thread::sleep(Duration::from_millis(delay_ms));
        let pid = victim.pid();
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(killed.success(), "kill -KILL {pid}");
        let pushed = pusher.join().expect("push thread");
        drop(victim);

        // Either the push committed before the kill or nothing of it is
        // visible; every process agrees, and clones are complete.
        let visible = git.ls_remote(&b.url("killed"), &["refs/heads/main"]);
        let expected = if visible == [format!("{head}\trefs/heads/main")] {
            head.clone()
        } else {
            assert_eq!(
                visible,
                [format!("{current}\trefs/heads/main")],
                "round {round}: a partial push is visible"
            );
            interrupted += 1;
            assert!(
                !pushed.status.success(),
                "round {round}: the push reported success but is not visible"
            );
            current.clone()
        };
        assert_eq!(
            git.ls_remote(&a.url("killed"), &["refs/heads/main"]),
            visible
        );
        let clone = tempfile::tempdir().expect("tempdir");
        git.run(clone.path(), &["clone", "-q", &b.url("killed"), "c"]);
        assert_eq!(git.rev_parse(&clone.path().join("c"), "HEAD"), expected);
        git.fsck(&clone.path().join("c"));

        // The next push, through a surviving process, works.
        git.run(
            work.path(),
            &["push", "-q", "--force", &a.push_url("killed"), "main"],
        );
        assert_eq!(
            git.ls_remote(&b.url("killed"), &["refs/heads/main"]),
            [format!("{head}\trefs/heads/main")]
        );
        current = head;
    }
    // The kills must have hit pushes in flight, or this test shows nothing.
    assert!(
        interrupted > 0,
        "every push finished before its process was killed"
    );
}
