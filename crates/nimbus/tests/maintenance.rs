//! Online maintenance through a running server: pushes that leave too many
//! packs are compacted in the background; `nimbus repo gc` removes what a
//! force-push made unreachable, but only after the grace period, never
//! anything reachable, and a clone running meanwhile completes.
//!
//! What is in the object store is read with real git (`git show-index`).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{Git, NimbusServer, ServerOptions, noise};

/// The `.idx` files in the server's object store (every repository).
fn stored_indexes(server: &NimbusServer) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "idx") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&server.data_dir().join("objects"), &mut found);
    found.sort();
    found
}

/// Every object id in the stored indexes, as `git show-index` (run in the
/// repository `repo`: outside one, it crashes) reads them.
fn stored_objects(git: &Git, repo: &Path, server: &NimbusServer) -> BTreeSet<String> {
    let mut objects = BTreeSet::new();
    for index in stored_indexes(server) {
        let bytes = std::fs::read(&index).expect("read a stored index");
        let listing = git.run_with_input(repo, &["show-index"], bytes);
        for line in listing.lines() {
            // `<offset> <id> (<crc>)`
            let id = line
                .split_whitespace()
                .nth(1)
                .expect("show-index prints ids");
            objects.insert(id.to_owned());
        }
    }
    objects
}

fn nimbus_cli(server: &NimbusServer, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .arg("--data-dir")
        .arg(server.data_dir())
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

/// `(before, after)` of a figure in the `nimbus repo gc` summary line, e.g.
/// `packs 3 -> 1`.
fn figure(summary: &str, label: &str) -> (u64, u64) {
    let start = summary
        .find(&format!("{label} "))
        .unwrap_or_else(|| panic!("no {label:?} in {summary:?}"));
    let mut words = summary[start + label.len()..].split_whitespace();
    let before = words.next().and_then(|w| w.parse().ok());
    let arrow = words.next();
    let after = words
        .next()
        .and_then(|w| w.trim_end_matches([',', ';']).parse().ok());
    match (before, arrow, after) {
        (Some(before), Some("->"), Some(after)) => (before, after),
        _ => panic!("cannot read {label:?} in {summary:?}"),
    }
}

/// `git push -q URL HEAD:refs/heads/main` in `dir`.
fn push_main(git: &Git, dir: &Path, url: &str) {
    git.run(dir, &["push", "-q", url, "HEAD:refs/heads/main"]);
}

fn clone_and_check(git: &Git, url: &str, expected_head: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clone = dir.path().join("clone");
    git.run(
        dir.path(),
        &["clone", "-q", url, clone.to_str().expect("utf-8")],
    );
    git.fsck(&clone);
    assert_eq!(git.rev_parse(&clone, "HEAD"), expected_head);
}

#[test]
fn many_pushes_are_compacted_in_the_background() {
    let server = NimbusServer::start_with(ServerOptions {
        env: vec![
            ("NIMBUS_COMPACT_THRESHOLD".into(), "4".into()),
            ("NIMBUS_GC_GRACE".into(), "0s".into()),
        ],
        ..ServerOptions::default()
    });
    let git = Git::new(2);
    server.create_repo("busy", false);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    let mut head = String::new();
    for i in 0..12u64 {
        head = git.commit(
            work.path(),
            &format!("commit {i}"),
            &[(format!("file{i}.txt").as_str(), format!("content {i}\n"))],
            1_700_000_000 + i,
        );
        push_main(&git, work.path(), &server.push_url("busy"));
    }
    // Each push adds a pack; compaction runs after a push finds more than
    // four, and with no grace period deletes the replaced packs at once, so
    // the stored indexes are the repository's packs.
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored_indexes(&server).len() > 5 {
        assert!(
            Instant::now() < deadline,
            "no background compaction happened: {} packs\n{}",
            stored_indexes(&server).len(),
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        server.logs().contains("maintenance finished"),
        "{}",
        server.logs()
    );
    clone_and_check(&git, &server.url("busy"), &head);
}

#[test]
fn garbage_collection_removes_unreachable_objects_after_the_grace_period() {
    let server = NimbusServer::start();
    let git = Git::new(2);
    server.create_repo("collect", false);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    let kept = git.commit(
        work.path(),
        "kept",
        &[("kept.txt", "kept\n")],
        1_700_000_000,
    );
    push_main(&git, work.path(), &server.push_url("collect"));
    git.run(work.path(), &["tag", "v1"]);
    git.run(
        work.path(),
        &["push", "-q", &server.push_url("collect"), "v1"],
    );
    let dropped = git.commit(
        work.path(),
        "dropped",
        &[("secret.txt", "a secret pushed by mistake\n")],
        1_700_000_100,
    );
    let secret_blob = git.rev_parse(work.path(), "HEAD:secret.txt");
    push_main(&git, work.path(), &server.push_url("collect"));
    let stored = stored_objects(&git, work.path(), &server);
    assert!(stored.contains(&dropped) && stored.contains(&secret_blob));

    // The force-push makes `dropped` and its blob unreachable.
    git.run(work.path(), &["reset", "-q", "--hard", &kept]);
    git.run(
        work.path(),
        &[
            "push",
            "-q",
            "--force",
            &server.push_url("collect"),
            "HEAD:refs/heads/main",
        ],
    );

    // Within the grace period the old packs are retired, not deleted.
    let summary = nimbus_cli(&server, &["repo", "gc", "collect", "--gc-grace", "1h"]);
    let (packs_before, packs_after) = figure(&summary, "packs");
    assert!(packs_before >= 2, "{summary}");
    assert_eq!(packs_after, 1, "{summary}");
    let stored = stored_objects(&git, work.path(), &server);
    assert!(
        stored.contains(&secret_blob),
        "deleted before the grace period"
    );
    clone_and_check(&git, &server.url("collect"), &kept);

    // Once it has passed, they are gone; what the refs reach never goes.
    let summary = nimbus_cli(&server, &["repo", "gc", "collect", "--gc-grace", "0s"]);
    let (stored_before, stored_after) = figure(&summary, "stored bytes");
    assert!(stored_after < stored_before, "{summary}");
    let stored = stored_objects(&git, work.path(), &server);
    assert!(
        !stored.contains(&dropped),
        "the unreachable commit is still stored"
    );
    assert!(
        !stored.contains(&secret_blob),
        "the unreachable blob is still stored"
    );
    assert!(stored.contains(&kept));
    assert_eq!(stored_indexes(&server).len(), 1);
    clone_and_check(&git, &server.url("collect"), &kept);
    let tags = git.ls_remote(&server.url("collect"), &["--tags"]);
    assert!(
        tags.iter().any(|line| line.ends_with("refs/tags/v1")),
        "{tags:?}"
    );

    // A repeated run has nothing to do and keeps everything.
    let summary = nimbus_cli(&server, &["repo", "gc", "collect", "--gc-grace", "0s"]);
    assert_eq!(figure(&summary, "packs"), (1, 1), "{summary}");
    clone_and_check(&git, &server.url("collect"), &kept);
}

#[test]
fn a_clone_running_during_garbage_collection_completes() {
    let server = NimbusServer::start();
    let git = Git::new(2);
    server.create_repo("during", false);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    // Enough data that a clone takes a while: incompressible blobs over
    // several pushes (several packs to collect).
    let mut head = String::new();
    for round in 0..4u64 {
        let blob = noise(round + 1, 4 << 20);
        head = git.commit(
            work.path(),
            &format!("round {round}"),
            &[(format!("data{round}.bin").as_str(), blob)],
            1_700_000_000 + round,
        );
        push_main(&git, work.path(), &server.push_url("during"));
    }

    let url = server.url("during");
    let expected = head.clone();
    let clones = std::thread::spawn(move || {
        let git = Git::new(2);
        for _ in 0..3 {
            clone_and_check(&git, &url, &expected);
        }
    });
    for _ in 0..3 {
        nimbus_cli(&server, &["repo", "gc", "during", "--gc-grace", "0s"]);
    }
    clones.join().expect("the clones during gc succeed");
    clone_and_check(&git, &server.url("during"), &head);
}

#[test]
fn pushes_racing_garbage_collection_all_land_intact() {
    let server = NimbusServer::start();
    let git = Git::new(2);
    server.create_repo("racing", false);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    git.commit(
        work.path(),
        "base",
        &[("base.txt", "base\n")],
        1_700_000_000,
    );
    push_main(&git, work.path(), &server.push_url("racing"));

    let url = server.push_url("racing");
    let dir = work.path().to_owned();
    let pusher = std::thread::spawn(move || {
        let git = Git::new(2);
        let mut head = String::new();
        for i in 0..15u64 {
            head = git.commit(
                &dir,
                &format!("push {i}"),
                &[(format!("f{i}.txt").as_str(), format!("{i}\n"))],
                1_700_000_100 + i,
            );
            // Each push builds on objects garbage collection keeps moving
            // between packs; every one must land.
            push_main(&git, &dir, &url);
        }
        head
    });
    let mut runs = 0;
    while !pusher.is_finished() {
        nimbus_cli(&server, &["repo", "gc", "racing", "--gc-grace", "0s"]);
        runs += 1;
    }
    let head = pusher.join().expect("every push landed");
    assert!(runs > 0);
    clone_and_check(&git, &server.url("racing"), &head);
    nimbus_cli(&server, &["repo", "gc", "racing", "--gc-grace", "0s"]);
    clone_and_check(&git, &server.url("racing"), &head);
}

/// The `sent pack` log lines of the server for `repo`, oldest first.
fn sent_packs(server: &NimbusServer, repo: &str) -> Vec<String> {
    server
        .full_log()
        .lines()
        .filter(|line| line.contains("sent pack") && line.contains(&format!("repo={repo} ")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn clones_after_gc_and_pushes_are_planned_from_the_reachability_index() {
    let server = NimbusServer::start();
    let git = Git::new(2);
    server.create_repo("indexed", false);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    for i in 0..3u64 {
        git.commit(
            work.path(),
            &format!("commit {i}"),
            &[(format!("file{i}.txt").as_str(), format!("content {i}\n"))],
            1_700_000_000 + i,
        );
    }
    push_main(&git, work.path(), &server.push_url("indexed"));
    let index = server.data_dir().join("reach/1.reach");
    assert!(!index.exists(), "no clone or gc has made an index yet");

    // Garbage collection builds the index.
    nimbus_cli(&server, &["repo", "gc", "indexed"]);
    assert!(index.exists(), "gc wrote no reachability index");
    assert!(
        server.data_dir().join("reach/1.graph").exists(),
        "gc wrote no commit graph"
    );
    let after_gc = std::fs::read(&index).expect("read the index");

    // A push after it; the next clone starts from the index, walks only the
    // pushed commit, gets everything, and leaves the index at the new tip.
    let head = git.commit(
        work.path(),
        "after gc",
        &[("file0.txt", "changed\n")],
        1_700_000_100,
    );
    push_main(&git, work.path(), &server.push_url("indexed"));
    assert_eq!(std::fs::read(&index).expect("read the index"), after_gc);
    clone_and_check(&git, &server.url("indexed"), &head);
    let sent = sent_packs(&server, "indexed");
    let last = sent.last().expect("the clone was logged");
    assert!(last.contains("from_index=true"), "{last}");
    // Four commits, their four root trees and four blobs.
    assert!(last.contains("objects=12"), "{last}");
    assert_ne!(
        std::fs::read(&index).expect("read the index"),
        after_gc,
        "the clone did not move the index to the new tip"
    );
}
