//! Nimbus at scale with the real git CLI: ten thousand refs, a file over 100 MB (a chunked push) and clients racing to push one ref.

mod support;

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;

use sha2::{Digest, Sha256};
use support::{
    DAY, EPOCH, Git, assert_same_lines, protocol_tests, pseudo_random_bytes, repo_name,
    shared_server,
};

protocol_tests!(
    ten_thousand_refs_push_list_mirror_and_fetch,
    file_over_100_megabytes_round_trips,
    deep_delta_chains_round_trip,
);

/// Branches pushed on top of `main` by the many-refs test.
const MANY_BRANCHES: usize = 10_000;

fn ten_thousand_refs_push_list_mirror_and_fetch(protocol: u8) {
    let server = shared_server();
    let _logs = server.log_guard();
    let name = repo_name("many-refs", protocol);
    server.create_repo(&name, false);
    let git = Git::new(protocol);
    let work = tempfile::tempdir().expect("create a work directory");
    let alice = work.path().join("alice");
    git.init(&alice);
    let commits = git.linear_history(&alice, "many-refs", 5);
    git.run(
        &alice,
        &["remote", "add", "origin", &server.push_url(&name)],
    );

    // One push, one receive-pack request with 10,001 ref updates. The refspecs name commit ids rather
    // than 10,000 local branches: git's send-pack matches every refspec against every local ref, which
    // takes the client close to a minute at this size.
    let mut refspecs = vec!["main:main".to_owned()];
    let mut expected = vec![format!("{} refs/heads/main", commits[4])];
    for index in 0..MANY_BRANCHES {
        let commit = &commits[index % commits.len()];
        refspecs.push(format!("{commit}:refs/heads/many/branch-{index:05}"));
        expected.push(format!("{commit} refs/heads/many/branch-{index:05}"));
    }
    expected.sort();
    let mut push = vec!["push", "-q", "origin"];
    push.extend(refspecs.iter().map(String::as_str));
    git.run(&alice, &push);

    let url = server.url(&name);
    let heads = git.ls_remote(&url, &["--heads"]);
    assert_eq!(
        heads.len(),
        MANY_BRANCHES + 1,
        "ls-remote --heads lists the wrong number of refs"
    );
    let listed: Vec<String> = heads.iter().map(|line| line.replace('\t', " ")).collect();
    assert_same_lines(
        "pushed refs (expected) and ls-remote --heads (actual)",
        &expected,
        &listed,
    );

    git.run(
        work.path(),
        &["clone", "-q", "--mirror", &url, "mirror.git"],
    );
    let mirror = work.path().join("mirror.git");
    assert_same_lines(
        "pushed refs and mirrored refs",
        &expected,
        &heads_of(&git, &mirror),
    );
    git.fsck(&mirror);

    // One ref moves among ten thousand; a fetch into the mirror must notice exactly that.
    let moved = git.commit(
        &alice,
        "moved",
        &[("moved.txt", "moved\n")],
        EPOCH + 30 * DAY,
    );
    git.run(
        &alice,
        &[
            "push",
            "-q",
            "origin",
            "main",
            "main:refs/heads/many/branch-04242",
        ],
    );
    for line in &mut expected {
        if line.ends_with(" refs/heads/main") || line.ends_with(" refs/heads/many/branch-04242") {
            let reference = line.split_once(' ').expect("`<id> <ref>`").1.to_owned();
            *line = format!("{moved} {reference}");
        }
    }
    expected.sort();
    git.run(&mirror, &["fetch", "-q"]);
    assert_eq!(
        git.rev_parse(&mirror, "refs/heads/many/branch-04242"),
        moved
    );
    assert_same_lines(
        "pushed refs and fetched refs",
        &expected,
        &heads_of(&git, &mirror),
    );
    git.fsck(&mirror);
}

/// `<id> <ref>` for every branch of `dir`, sorted like `ls-remote` output.
fn heads_of(git: &Git, dir: &Path) -> Vec<String> {
    let mut heads: Vec<String> = git
        .run(
            dir,
            &[
                "for-each-ref",
                "--format=%(objectname) %(refname)",
                "refs/heads/",
            ],
        )
        .lines()
        .map(str::to_owned)
        .collect();
    heads.sort();
    heads
}

/// Larger than 100 MiB and not a round number, so no buffer size lines up with it.
const BIG_FILE_SIZE: usize = 100 * 1024 * 1024 + 12_345;

fn file_over_100_megabytes_round_trips(protocol: u8) {
    let server = shared_server();
    let _logs = server.log_guard();
    let name = repo_name("big-file", protocol);
    server.create_repo(&name, false);
    let git = Git::new(protocol);
    let work = tempfile::tempdir().expect("create a work directory");
    let alice = work.path().join("alice");
    git.init(&alice);
    let content = pseudo_random_bytes(0x6e69_6d62_7573, BIG_FILE_SIZE);
    let expected_digest = Sha256::digest(&content);
    let head = git.commit(&alice, "big file", &[("big.bin", &content)], EPOCH);
    drop(content);
    git.commit(
        &alice,
        "small change",
        &[("small.txt", "after\n")],
        EPOCH + DAY,
    );
    let head_after = git.rev_parse(&alice, "HEAD");
    // Over http.postBuffer (1 MiB), so git sends the pack with chunked transfer encoding.
    git.run(&alice, &["push", "-q", &server.push_url(&name), "main"]);

    git.run(work.path(), &["clone", "-q", &server.url(&name), "bob"]);
    let bob = work.path().join("bob");
    assert_eq!(git.rev_parse(&bob, "HEAD"), head_after);
    assert_eq!(git.rev_parse(&bob, "HEAD~1"), head);
    let cloned = std::fs::read(bob.join("big.bin")).expect("the clone checked out big.bin");
    assert_eq!(cloned.len(), BIG_FILE_SIZE);
    assert!(
        Sha256::digest(&cloned) == expected_digest,
        "big.bin differs after the round trip"
    );
    git.fsck(&bob);
}

/// Commits in the deep-delta history: each appends a line to one file, so each version is a delta
/// of the one before.
const DELTA_HISTORY: usize = 1000;

fn deep_delta_chains_round_trip(protocol: u8) {
    let server = shared_server();
    let _logs = server.log_guard();
    let name = repo_name("deep-deltas", protocol);
    server.create_repo(&name, false);
    let git = Git::new(protocol);
    let work = tempfile::tempdir().expect("create a work directory");
    let alice = work.path().join("alice");
    git.init(&alice);
    let mut content = String::new();
    let mut stream = String::new();
    for index in 0..DELTA_HISTORY {
        content.push_str(&format!("line {index:04}: the quick brown fox jumps\n"));
        stream.push_str(&format!(
            "commit refs/heads/main\ncommitter Nimbus Test <test@nimbus.invalid> {} +0000\ndata 8\nstep {index:03}\nM 100644 inline grown.txt\ndata {}\n{content}\n",
            EPOCH + index as u64 * 60,
            content.len()
        ));
    }
    // pack.depth lets fast-import (and then the push) chain every version on the previous one.
    git.run_with_input(
        &alice,
        &["-c", "pack.depth=4095", "fast-import", "--quiet"],
        stream.into_bytes(),
    );
    git.run(&alice, &["reset", "-q", "--hard", "main"]);
    let longest_chain = longest_delta_chain(&git, &alice);
    assert!(
        longest_chain >= 500,
        "the fixture's longest delta chain is only {longest_chain}"
    );
    git.run(
        &alice,
        &[
            "-c",
            "pack.depth=4095",
            "push",
            "-q",
            &server.push_url(&name),
            "main",
        ],
    );

    git.run(work.path(), &["clone", "-q", &server.url(&name), "bob"]);
    let bob = work.path().join("bob");
    assert_eq!(git.rev_parse(&bob, "HEAD"), git.rev_parse(&alice, "HEAD"));
    assert_eq!(git.commit_count(&bob, "HEAD"), DELTA_HISTORY);
    assert_eq!(
        std::fs::read_to_string(bob.join("grown.txt")).expect("the clone checked out grown.txt"),
        content
    );
    git.fsck(&bob);

    // One more version: the fetch's thin pack can delta against the end of the long chain.
    content.push_str("one more line\n");
    let next = git.commit(
        &alice,
        "one more",
        &[("grown.txt", content.as_str())],
        EPOCH + DAY * 30,
    );
    git.run(&alice, &["push", "-q", &server.push_url(&name), "main"]);
    git.run(&bob, &["pull", "-q", "--ff-only"]);
    assert_eq!(git.rev_parse(&bob, "HEAD"), next);
    git.fsck(&bob);
}

/// The longest delta chain in any pack of `dir`, from `git verify-pack -v`.
fn longest_delta_chain(git: &Git, dir: &Path) -> usize {
    let pack_dir = dir.join(".git/objects/pack");
    let mut longest = 0;
    for entry in std::fs::read_dir(&pack_dir).expect("the repository has a pack directory") {
        let path = entry.expect("read the pack directory").path();
        if path.extension().is_some_and(|extension| extension == "idx") {
            let path = path.to_str().expect("temporary paths are UTF-8");
            for line in git.run(dir, &["verify-pack", "-v", path]).lines() {
                if let Some(rest) = line.strip_prefix("chain length = ") {
                    let length: usize = rest
                        .split(':')
                        .next()
                        .and_then(|number| number.trim().parse().ok())
                        .expect("verify-pack prints `chain length = N: M objects`");
                    longest = longest.max(length);
                }
            }
        }
    }
    longest
}

/// Rounds of the push race.
const RACE_ROUNDS: usize = 5;

#[test]
fn concurrent_pushes_to_one_ref_have_exactly_one_winner() {
    let server = shared_server();
    let _logs = server.log_guard();
    let name = "push-race";
    server.create_repo(name, false);
    let git = Git::new(0);
    let work = tempfile::tempdir().expect("create a work directory");
    let seed = work.path().join("seed");
    git.init(&seed);
    git.commit(&seed, "seed", &[("seed.txt", "seed\n")], EPOCH);
    git.run(&seed, &["push", "-q", &server.push_url(name), "main"]);
    let clients: Vec<_> = ["left", "right"]
        .iter()
        .map(|client| {
            git.run(
                work.path(),
                &["clone", "-q", &server.push_url(name), client],
            );
            work.path().join(client)
        })
        .collect();

    for round in 0..RACE_ROUNDS {
        let barrier = Arc::new(Barrier::new(clients.len()));
        let racers: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(index, client)| {
                let (git, client, barrier) = (git.clone(), client.clone(), Arc::clone(&barrier));
                thread::spawn(move || {
                    git.run(&client, &["fetch", "-q", "origin"]);
                    git.run(&client, &["reset", "-q", "--hard", "origin/main"]);
                    let file = format!("client-{index}.txt");
                    let content = format!("round {round}\n");
                    let commit = git.commit(
                        &client,
                        &format!("client {index} round {round}"),
                        &[(file.as_str(), content.as_str())],
                        EPOCH + (round as u64 + 1) * DAY + index as u64,
                    );
                    barrier.wait();
                    let output = git.output(&client, &["push", "origin", "main"]);
                    (commit, output)
                })
            })
            .collect();
        let results: Vec<_> = racers
            .into_iter()
            .map(|racer| racer.join().expect("a racing client panicked"))
            .collect();
        let winners: Vec<_> = results
            .iter()
            .filter(|(_, output)| output.status.success())
            .collect();
        let report: Vec<String> = results
            .iter()
            .map(|(commit, output)| format!("{commit}: {}\n{}", output.status, output.stderr))
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one push must win\n{}",
            report.join("\n")
        );
        for (_, output) in results
            .iter()
            .filter(|(_, output)| !output.status.success())
        {
            assert!(
                output.stderr.contains("rejected") || output.stderr.contains("failed"),
                "round {round}: the losing push failed for another reason:\n{}",
                output.stderr
            );
        }
        let advertised = git.ls_remote(&server.url(name), &["--heads"]);
        assert_eq!(
            advertised,
            [format!("{}\trefs/heads/main", winners[0].0)],
            "round {round}: the server's main is not the winner's commit\n{}",
            report.join("\n")
        );
    }

    git.run(work.path(), &["clone", "-q", &server.url(name), "fresh"]);
    let fresh = work.path().join("fresh");
    git.fsck(&fresh);
    assert_eq!(git.commit_count(&fresh, "HEAD"), 1 + RACE_ROUNDS);
}
