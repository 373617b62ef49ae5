//! Everyday git over smart HTTP against Nimbus (clone, fetch, pull, push, tags, deletions, forced, atomic and optioned pushes, mirrors, ls-remote, auth), compared with `git http-backend` over protocol v0, v1 and v2.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use support::{
    DAY, EPOCH, Git, OWNER_TOKEN, Scenario, basic_authorization, differential, protocol_tests,
    repo_name, shared_server,
};

protocol_tests!(
    clone_of_empty_repository_is_empty,
    first_push_then_clone_round_trips_history,
    incremental_fetch_receives_new_commits,
    pull_fast_forwards_and_merges,
    push_of_new_branch_is_advertised_and_clonable,
    lightweight_and_annotated_tags_round_trip,
    deleting_branch_and_tag_removes_them,
    non_fast_forward_push_is_rejected_unless_forced,
    atomic_push_with_one_failing_ref_updates_nothing,
    non_atomic_push_applies_the_refs_that_succeed,
    push_options_are_accepted,
    mirror_clone_copies_every_ref,
    ls_remote_filters_heads_tags_and_patterns,
    clone_url_without_git_suffix_works,
    private_repository_needs_credentials_to_clone,
    fetch_requests_sent_gzipped_or_chunked_are_understood,
    negotiation_over_many_rounds_fetches_only_what_is_missing,
    tags_of_blobs_trees_and_tags_round_trip,
    unusual_tree_entries_and_octopus_merge_round_trip,
    unusual_ref_names_round_trip,
    clone_when_head_names_a_missing_branch,
    mirror_push_replaces_every_ref,
    default_branch_from_the_api_is_head_of_clones,
);

/// A fresh working repository `name` in the scenario directory whose `origin` is the authenticated push URL.
fn pusher(scenario: &Scenario<'_>, name: &str) -> PathBuf {
    let dir = scenario.path(name);
    scenario.git.init(&dir);
    scenario
        .git
        .run(&dir, &["remote", "add", "origin", &scenario.push_url]);
    dir
}

/// Clones the anonymous URL into `name` and returns its directory.
fn clone(scenario: &Scenario<'_>, name: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec!["clone", "-q"];
    args.extend_from_slice(extra);
    args.extend([scenario.url.as_str(), name]);
    scenario.git.run(scenario.workdir, &args);
    scenario.path(name)
}

/// The id the server advertises for `reference`, if any.
fn remote_ref(scenario: &Scenario<'_>, reference: &str) -> Option<String> {
    scenario
        .git
        .ls_remote(&scenario.url, &[])
        .iter()
        .find_map(|line| {
            let (id, name) = line.split_once('\t')?;
            (name == reference).then(|| id.to_owned())
        })
}

fn clone_of_empty_repository_is_empty(protocol: u8) {
    differential(
        protocol,
        &repo_name("clone-empty", protocol),
        |scenario, outcome| {
            let output = scenario
                .git
                .output(scenario.workdir, &["clone", &scenario.url, "bob"]);
            assert!(output.status.success(), "clone failed:\n{}", output.stderr);
            assert!(
                output.stderr.contains("cloned an empty repository"),
                "git did not see an empty repository:\n{}",
                output.stderr
            );
            let bob = scenario.path("bob");
            assert_eq!(scenario.git.refs(&bob), ["HEAD -> refs/heads/main"]);
            assert!(scenario.git.ls_remote(&scenario.url, &[]).is_empty());
            outcome.client("bob");
        },
    );
}

fn first_push_then_clone_round_trips_history(protocol: u8) {
    differential(
        protocol,
        &repo_name("first-push", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            let commits = git.linear_history(&alice, "first-push", 5);
            git.run(&alice, &["push", "-q", "origin", "main"]);
            assert_eq!(
                remote_ref(scenario, "refs/heads/main").as_ref(),
                commits.last()
            );

            let bob = clone(scenario, "bob", &[]);
            assert_eq!(git.rev_parse(&bob, "HEAD"), commits[4]);
            assert_eq!(
                git.run(&bob, &["log", "--format=%H %s"]),
                git.run(&alice, &["log", "--format=%H %s"])
            );
            assert_eq!(
                fs::read(bob.join("log.txt")).expect("clone checked out log.txt"),
                fs::read(alice.join("log.txt")).expect("alice has log.txt")
            );
            outcome.client("alice").client("bob");
        },
    );
}

fn incremental_fetch_receives_new_commits(protocol: u8) {
    differential(
        protocol,
        &repo_name("incremental-fetch", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            git.linear_history(&alice, "before", 3);
            git.run(&alice, &["push", "-q", "origin", "main"]);
            let bob = clone(scenario, "bob", &[]);

            let newer = git.linear_history(&alice, "after", 4);
            git.run(&alice, &["push", "-q", "origin", "main"]);
            git.run(&bob, &["fetch", "-q", "origin"]);
            assert_eq!(git.rev_parse(&bob, "origin/main"), newer[3]);
            assert_eq!(git.commit_count(&bob, "origin/main"), 7);
            outcome
                .observe(
                    "commits on origin/main",
                    git.commit_count(&bob, "origin/main"),
                )
                .client("alice")
                .client("bob");
        },
    );
}

fn pull_fast_forwards_and_merges(protocol: u8) {
    differential(
        protocol,
        &repo_name("pull", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            git.linear_history(&alice, "base", 2);
            git.run(&alice, &["push", "-q", "origin", "main"]);
            let bob = clone(scenario, "bob", &[]);
            git.run(
                &bob,
                &["remote", "set-url", "--push", "origin", &scenario.push_url],
            );

            let alice_third = git.commit(
                &alice,
                "alice 3",
                &[("alice.txt", "three\n")],
                EPOCH + 3 * DAY,
            );
            git.run(&alice, &["push", "-q", "origin", "main"]);
            git.run(&bob, &["pull", "-q", "--ff-only"]);
            assert_eq!(git.rev_parse(&bob, "HEAD"), alice_third);

            git.commit(&bob, "bob 4", &[("bob.txt", "four\n")], EPOCH + 4 * DAY);
            git.commit(
                &alice,
                "alice 4",
                &[("alice.txt", "four\n")],
                EPOCH + 4 * DAY,
            );
            git.run(&alice, &["push", "-q", "origin", "main"]);
            // `--no-commit` and an explicit message: pull's own message names the URL, which differs per server.
            git.run(&bob, &["pull", "-q", "--no-rebase", "--no-commit"]);
            git.run(&bob, &["commit", "-q", "-m", "merge alice 4"]);
            assert_eq!(
                git.run(&bob, &["rev-list", "--count", "--merges", "HEAD"])
                    .trim(),
                "1"
            );
            git.run(&bob, &["push", "-q", "origin", "main"]);

            git.run(&alice, &["pull", "-q", "--ff-only", "origin", "main"]);
            assert_eq!(git.rev_parse(&alice, "HEAD"), git.rev_parse(&bob, "HEAD"));
            assert_eq!(
                fs::read_to_string(alice.join("bob.txt")).expect("the merge brought bob.txt"),
                "four\n"
            );
            outcome.client("alice").client("bob");
        },
    );
}

fn push_of_new_branch_is_advertised_and_clonable(protocol: u8) {
    differential(
        protocol,
        &repo_name("new-branch", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            git.linear_history(&alice, "main", 2);
            git.run(&alice, &["push", "-q", "origin", "main"]);
            git.run(&alice, &["checkout", "-q", "-b", "feature"]);
            let feature = git.commit(
                &alice,
                "feature work",
                &[("feature.txt", "new\n")],
                EPOCH + 5 * DAY,
            );
            git.run(&alice, &["push", "-q", "-u", "origin", "feature"]);
            assert_eq!(
                remote_ref(scenario, "refs/heads/feature"),
                Some(feature.clone())
            );

            let bob = clone(scenario, "bob", &["--branch", "feature"]);
            assert_eq!(git.rev_parse(&bob, "HEAD"), feature);
            assert_eq!(
                git.run(&bob, &["symbolic-ref", "HEAD"]).trim(),
                "refs/heads/feature"
            );
            outcome
                .observe(
                    "ls-remote --heads",
                    git.ls_remote(&scenario.url, &["--heads"]).join("\n"),
                )
                .client("alice")
                .client("bob");
        },
    );
}

fn lightweight_and_annotated_tags_round_trip(protocol: u8) {
    differential(
        protocol,
        &repo_name("tags", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            let commits = git.linear_history(&alice, "tags", 3);
            git.run(&alice, &["tag", "light", &commits[0]]);
            git.annotated_tag(&alice, "v1.0", &commits[1], "release 1.0", EPOCH + 10 * DAY);
            git.run(&alice, &["push", "-q", "origin", "main", "--tags"]);

            let bob = clone(scenario, "bob", &[]);
            assert_eq!(git.run(&bob, &["cat-file", "-t", "v1.0"]).trim(), "tag");
            assert_eq!(git.run(&bob, &["cat-file", "-t", "light"]).trim(), "commit");
            assert_eq!(git.rev_parse(&bob, "light"), commits[0]);
            assert_eq!(git.rev_parse(&bob, "v1.0^{commit}"), commits[1]);
            assert_eq!(git.rev_parse(&bob, "v1.0"), git.rev_parse(&alice, "v1.0"));

            // A tag pushed later reaches an existing clone with `fetch --tags`.
            git.annotated_tag(&alice, "v2.0", &commits[2], "release 2.0", EPOCH + 11 * DAY);
            git.run(&alice, &["push", "-q", "origin", "v2.0"]);
            git.run(&bob, &["fetch", "-q", "--tags", "origin"]);
            assert_eq!(git.rev_parse(&bob, "v2.0"), git.rev_parse(&alice, "v2.0"));

            // A tag on newly fetched history follows a plain fetch (include-tag).
            let fourth = git.commit(&alice, "tags 4", &[("more.txt", "4\n")], EPOCH + 12 * DAY);
            git.annotated_tag(&alice, "v3.0", &fourth, "release 3.0", EPOCH + 12 * DAY);
            git.run(&alice, &["push", "-q", "origin", "main", "v3.0"]);
            git.run(&bob, &["fetch", "-q", "origin"]);
            assert_eq!(git.rev_parse(&bob, "v3.0"), git.rev_parse(&alice, "v3.0"));

            let tags = git.ls_remote(&scenario.url, &["--tags"]);
            assert!(
                tags.iter().any(|line| line.ends_with("refs/tags/v1.0^{}")),
                "ls-remote does not show the peeled annotated tag: {tags:?}"
            );
            outcome
                .observe("ls-remote --tags", tags.join("\n"))
                .client("bob");
        },
    );
}

fn deleting_branch_and_tag_removes_them(protocol: u8) {
    differential(
        protocol,
        &repo_name("delete-refs", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            let commits = git.linear_history(&alice, "delete", 2);
            git.run(&alice, &["branch", "feature", &commits[0]]);
            git.run(&alice, &["tag", "light", &commits[0]]);
            git.annotated_tag(&alice, "v1", &commits[1], "v1", EPOCH + 3 * DAY);
            git.run(
                &alice,
                &["push", "-q", "origin", "main", "feature", "--tags"],
            );
            let carol = clone(scenario, "carol", &[]);

            git.run(&alice, &["push", "-q", "origin", "--delete", "feature"]);
            git.run(&alice, &["push", "-q", "origin", ":refs/tags/v1"]);
            let listed = git.ls_remote(&scenario.url, &[]);
            assert!(
                listed
                    .iter()
                    .all(|line| !line.contains("refs/heads/feature")
                        && !line.contains("refs/tags/v1")),
                "deleted refs are still advertised: {listed:?}"
            );
            assert!(listed.iter().any(|line| line.ends_with("refs/tags/light")));

            let bob = clone(scenario, "bob", &[]);
            assert!(
                git.output(&bob, &["rev-parse", "--verify", "-q", "v1"])
                    .stdout
                    .is_empty()
            );
            git.run(
                &carol,
                &["fetch", "-q", "--prune", "--prune-tags", "origin"],
            );
            assert!(
                git.refs(&carol)
                    .iter()
                    .all(|line| !line.ends_with("refs/remotes/origin/feature")
                        && !line.ends_with("refs/tags/v1")),
                "prune did not remove the deleted refs"
            );
            outcome.client("bob").client("carol");
        },
    );
}

fn non_fast_forward_push_is_rejected_unless_forced(protocol: u8) {
    differential(
        protocol,
        &repo_name("force-push", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            let commits = git.linear_history(&alice, "history", 3);
            git.run(&alice, &["push", "-q", "origin", "main"]);
            let bob = clone(scenario, "bob", &[]);

            git.run(&alice, &["reset", "-q", "--hard", &commits[0]]);
            let rewritten = git.commit(
                &alice,
                "rewritten",
                &[("rewrite.txt", "new\n")],
                EPOCH + 9 * DAY,
            );
            let stderr = git.run_expect_failure(&alice, &["push", "origin", "main"]);
            assert!(
                stderr.contains("rejected"),
                "unexpected push error:\n{stderr}"
            );
            assert_eq!(
                remote_ref(scenario, "refs/heads/main").as_ref(),
                Some(&commits[2])
            );

            git.run(&alice, &["push", "-q", "--force", "origin", "main"]);
            assert_eq!(
                remote_ref(scenario, "refs/heads/main"),
                Some(rewritten.clone())
            );

            git.run(&bob, &["fetch", "-q", "origin"]);
            assert_eq!(git.rev_parse(&bob, "origin/main"), rewritten);
            outcome.client("alice").client("bob");
        },
    );
}

fn atomic_push_with_one_failing_ref_updates_nothing(protocol: u8) {
    differential(
        protocol,
        &repo_name("atomic-push", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            let first = git.commit(&alice, "one", &[("a.txt", "1\n")], EPOCH);
            // `refs/heads/dir/sub` on the server makes `refs/heads/dir` impossible: a check only the server can make.
            git.run(
                &alice,
                &["push", "-q", "origin", "main", "main:refs/heads/dir/sub"],
            );
            git.commit(&alice, "two", &[("a.txt", "2\n")], EPOCH + DAY);
            let before = git.ls_remote(&scenario.url, &[]);

            let stderr = git.run_expect_failure(
                &alice,
                &["push", "--atomic", "origin", "main", "main:refs/heads/dir"],
            );
            assert!(
                !stderr.contains("does not support --atomic"),
                "the server does not advertise atomic pushes:\n{stderr}"
            );
            assert!(
                stderr.contains("rejected") || stderr.contains("failed"),
                "unexpected push error:\n{stderr}"
            );
            assert_eq!(
                git.ls_remote(&scenario.url, &[]),
                before,
                "an atomic push changed refs"
            );
            assert_eq!(remote_ref(scenario, "refs/heads/main"), Some(first));
            outcome.observe("ls-remote after the failed atomic push", before.join("\n"));
        },
    );
}

fn non_atomic_push_applies_the_refs_that_succeed(protocol: u8) {
    differential(
        protocol,
        &repo_name("non-atomic-push", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            let first = git.commit(&alice, "one", &[("a.txt", "1\n")], EPOCH);
            git.run(
                &alice,
                &["push", "-q", "origin", "main", "main:refs/heads/dir/sub"],
            );
            let second = git.commit(&alice, "two", &[("a.txt", "2\n")], EPOCH + DAY);

            let stderr =
                git.run_expect_failure(&alice, &["push", "origin", "main", "main:refs/heads/dir"]);
            assert!(
                stderr.contains("rejected") || stderr.contains("failed"),
                "unexpected push error:\n{stderr}"
            );
            assert_eq!(remote_ref(scenario, "refs/heads/main"), Some(second));
            assert_eq!(remote_ref(scenario, "refs/heads/dir/sub"), Some(first));
            assert_eq!(remote_ref(scenario, "refs/heads/dir"), None);
            outcome.client("alice");
        },
    );
}

fn push_options_are_accepted(protocol: u8) {
    differential(
        protocol,
        &repo_name("push-options", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            let head = git.commit(&alice, "one", &[("a.txt", "1\n")], EPOCH);
            git.run(
                &alice,
                &[
                    "push", "-q", "-o", "foo=bar", "-o", "ci.skip", "origin", "main",
                ],
            );
            assert_eq!(remote_ref(scenario, "refs/heads/main"), Some(head));
            outcome.client("alice");
        },
    );
}

fn mirror_clone_copies_every_ref(protocol: u8) {
    differential(
        protocol,
        &repo_name("mirror", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            let commits = git.linear_history(&alice, "mirror", 4);
            git.run(&alice, &["branch", "release/1.x", &commits[1]]);
            git.run(&alice, &["branch", "topic", &commits[2]]);
            git.run(&alice, &["tag", "light", &commits[0]]);
            git.annotated_tag(&alice, "v1", &commits[3], "v1", EPOCH + 20 * DAY);
            git.run_with_env(
                &alice,
                &["notes", "add", "-m", "a note", &commits[1]],
                &[("GIT_COMMITTER_DATE", &format!("{} +0000", EPOCH + 21 * DAY))],
            );
            git.run(&alice, &["push", "-q", "origin", "--all"]);
            git.run(&alice, &["push", "-q", "origin", "--tags"]);
            git.run(
                &alice,
                &["push", "-q", "origin", "refs/notes/*:refs/notes/*"],
            );

            let mirror = clone(scenario, "mirror.git", &["--mirror"]);
            let advertised: Vec<String> = git
                .ls_remote(&scenario.url, &[])
                .into_iter()
                .filter(|line| line.contains("\trefs/") && !line.ends_with("^{}"))
                .map(|line| line.replace('\t', " "))
                .collect();
            let mirrored: Vec<String> = git
                .refs(&mirror)
                .into_iter()
                .filter(|line| !line.starts_with("HEAD -> "))
                .collect();
            assert_eq!(mirrored, advertised);
            assert!(
                mirrored
                    .iter()
                    .any(|line| line.ends_with(" refs/notes/commits"))
            );
            git.run(&mirror, &["fetch", "-q"]);
            outcome.client("mirror.git");
        },
    );
}

fn ls_remote_filters_heads_tags_and_patterns(protocol: u8) {
    differential(
        protocol,
        &repo_name("ls-remote", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            let commits = git.linear_history(&alice, "ls", 3);
            for (branch, commit) in [("feature/a", 0), ("feature/b", 1), ("other", 2)] {
                git.run(&alice, &["branch", branch, &commits[commit]]);
            }
            git.run(&alice, &["tag", "light", &commits[0]]);
            git.annotated_tag(&alice, "v1", &commits[1], "v1", EPOCH + 7 * DAY);
            git.run(&alice, &["push", "-q", "origin", "--all"]);
            git.run(&alice, &["push", "-q", "origin", "--tags"]);

            let all = git.ls_remote(&scenario.url, &[]);
            assert!(
                all.contains(&"ref: refs/heads/main\tHEAD".to_owned()),
                "HEAD is not advertised as a symref to main: {all:?}"
            );
            let heads = git.ls_remote(&scenario.url, &["--heads"]);
            assert_eq!(heads.len(), 4, "{heads:?}");
            let tags = git.ls_remote(&scenario.url, &["--tags"]);
            assert_eq!(tags.len(), 3, "{tags:?}");
            let pattern = git.ls_remote(&scenario.url, &["refs/heads/feature/*"]);
            assert_eq!(pattern.len(), 2, "{pattern:?}");
            outcome
                .observe("ls-remote", all.join("\n"))
                .observe("ls-remote --heads", heads.join("\n"))
                .observe("ls-remote --tags", tags.join("\n"))
                .observe("ls-remote refs/heads/feature/*", pattern.join("\n"));
        },
    );
}

fn clone_url_without_git_suffix_works(protocol: u8) {
    let server = shared_server();
    let _logs = server.log_guard();
    let name = repo_name("no-suffix", protocol);
    server.create_repo(&name, false);
    let git = Git::new(protocol);
    let work = tempfile::tempdir().expect("create a work directory");
    let alice = work.path().join("alice");
    git.init(&alice);
    let head = git
        .linear_history(&alice, "suffix", 2)
        .pop()
        .expect("two commits");
    let push_url = server.push_url(&name);
    let push_url = push_url
        .strip_suffix(".git")
        .expect("push URLs end in .git");
    git.run(&alice, &["push", "-q", push_url, "main"]);

    let url = server.url(&name);
    let url = url.strip_suffix(".git").expect("clone URLs end in .git");
    git.run(work.path(), &["clone", "-q", url, "bob"]);
    let bob = work.path().join("bob");
    assert_eq!(git.rev_parse(&bob, "HEAD"), head);
    git.fsck(&bob);
}

fn private_repository_needs_credentials_to_clone(protocol: u8) {
    let server = shared_server();
    let _logs = server.log_guard();
    let name = repo_name("private", protocol);
    let created = server.create_repo(&name, true);
    assert_eq!(
        created["private"],
        serde_json::Value::Bool(true),
        "{created}"
    );
    let git = Git::new(protocol);
    let work = tempfile::tempdir().expect("create a work directory");
    let alice = work.path().join("alice");
    git.init(&alice);
    let head = git.commit(&alice, "secret", &[("secret.txt", "hidden\n")], EPOCH);
    git.run(&alice, &["push", "-q", &server.push_url(&name), "main"]);

    let stderr = git.run_expect_failure(work.path(), &["clone", &server.url(&name), "anonymous"]);
    assert!(
        !work.path().join("anonymous").join("secret.txt").exists(),
        "an anonymous clone got the private content; stderr:\n{stderr}"
    );
    let listed = git.output(work.path(), &["ls-remote", &server.url(&name)]);
    assert!(
        !listed.status.success() && !listed.stdout_text().contains(&head),
        "anonymous ls-remote listed a private repository:\n{}",
        listed.stdout_text()
    );

    git.run(
        work.path(),
        &["clone", "-q", &server.push_url(&name), "owner"],
    );
    assert_eq!(git.rev_parse(&work.path().join("owner"), "HEAD"), head);
    git.fsck(&work.path().join("owner"));
}

#[test]
fn receive_pack_demands_basic_auth_with_the_owner_token() {
    let server = shared_server();
    let _logs = server.log_guard();
    let name = "auth-basic";
    server.create_repo(name, false);
    let git = Git::new(0);
    let work = tempfile::tempdir().expect("create a work directory");
    let alice = work.path().join("alice");
    git.init(&alice);
    git.commit(&alice, "one", &[("a.txt", "1\n")], EPOCH);

    let stderr = git.run_expect_failure(&alice, &["push", &server.url(name), "main"]);
    assert!(
        stderr.contains("could not read Username") || stderr.contains("Authentication failed"),
        "a push without credentials failed for another reason:\n{stderr}"
    );
    let wrong_url = server
        .push_url(name)
        .replace(OWNER_TOKEN, "not_the_owner_token_0123456789");
    let stderr = git.run_expect_failure(&alice, &["push", &wrong_url, "main"]);
    assert!(
        stderr.contains("Authentication failed"),
        "a push with a wrong token failed for another reason:\n{stderr}"
    );
    assert!(git.ls_remote(&server.url(name), &[]).is_empty());

    let advertisement = format!("/{name}.git/info/refs?service=git-receive-pack");
    for authorization in [
        None,
        Some("Basic eDp3cm9uZw==".to_owned()), // x:wrong
        Some(format!("Bearer {}", "not_the_owner_token_0123456789")),
    ] {
        let response = server.request("GET", &advertisement, authorization.as_deref(), None);
        assert_eq!(response.status, 401, "{authorization:?}: {}", response.body);
        let challenge = response.header("WWW-Authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Basic"),
            "{authorization:?}: WWW-Authenticate is {challenge:?}"
        );
    }
    let basic = basic_authorization("anyone", OWNER_TOKEN);
    let response = server.request("GET", &advertisement, Some(&basic), None);
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.header("Content-Type"),
        Some("application/x-git-receive-pack-advertisement")
    );
    let response = server.request(
        "GET",
        &format!("/{name}.git/info/refs?service=git-upload-pack"),
        None,
        None,
    );
    assert_eq!(
        response.status, 200,
        "anonymous upload-pack: {}",
        response.body
    );
}

#[test]
fn create_repo_api_validates_names_conflicts_and_token() {
    let server = shared_server();
    let _logs = server.log_guard();
    let created = server.create_repo("api-demo", false);
    assert_eq!(created["name"], "api-demo", "{created}");
    assert_eq!(created["private"], false, "{created}");
    assert_eq!(created["default_branch"], "main", "{created}");
    let clone_url = created["clone_url"]
        .as_str()
        .expect("clone_url is a string");
    assert!(
        clone_url.ends_with("/api-demo.git"),
        "clone_url is {clone_url:?}"
    );

    let git = Git::new(2);
    let work = tempfile::tempdir().expect("create a work directory");
    git.run(work.path(), &["clone", "-q", clone_url, "from-clone-url"]);

    let again = server.try_create_repo(&serde_json::json!({
        "name": "api-demo", "private": false, "default_branch": "main"
    }));
    assert_eq!(again.status, 409, "{}", again.body);

    for name in [
        "",
        "bad name",
        "../escape",
        "a/b",
        "caf\u{e9}",
        "semi;colon",
    ] {
        let response = server.try_create_repo(&serde_json::json!({
            "name": name, "private": false, "default_branch": "main"
        }));
        assert!(
            response.status == 400 || response.status == 422,
            "name {name:?} answered {}: {}",
            response.status,
            response.body
        );
    }

    let body =
        serde_json::json!({ "name": "api-no-token", "private": false, "default_branch": "main" });
    for authorization in [None, Some("Bearer not_the_owner_token_0123456789")] {
        let response = server.request("POST", "/api/v1/repos", authorization, Some(&body));
        assert!(
            response.status == 401 || response.status == 403,
            "{authorization:?} answered {}: {}",
            response.status,
            response.body
        );
    }
    let response = server.try_create_repo(&body);
    assert_eq!(
        response.status, 201,
        "the refused requests must not have created it: {}",
        response.body
    );
}

fn fetch_requests_sent_gzipped_or_chunked_are_understood(protocol: u8) {
    differential(
        protocol,
        &repo_name("request-encodings", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            let base = git.commit(&alice, "base", &[("base.txt", "base\n")], EPOCH);
            git.run(&alice, &["push", "-q", "origin", "main"]);

            // Forty distinct tips: a clone's want list passes 1 KiB, so git sends it gzip-compressed.
            git.fan_out_branches(&alice, &base, "few", 40);
            git.run(
                &alice,
                &["push", "-q", "origin", "refs/heads/few/*:refs/heads/few/*"],
            );
            clone(scenario, "gzipped", &[]);
            scenario.check_reference_requests(|requests| {
                assert!(
                    requests
                        .iter()
                        .any(|request| request.target.ends_with("/git-upload-pack")
                            && request.gzip
                            && !request.chunked),
                    "the scenario sent no gzip-compressed upload-pack request: {requests:#?}"
                );
            });

            // 1,600 more, pushed and cloned with a 64 KiB http.postBuffer: the push (600 KB) and the
            // clone's want list (80 KB) outgrow it, so git streams both request bodies chunked.
            git.fan_out_branches(&alice, &base, "many", 1600);
            git.run(
                &alice,
                &[
                    "-c",
                    "http.postBuffer=65536",
                    "push",
                    "-q",
                    "origin",
                    "refs/heads/many/*:refs/heads/many/*",
                ],
            );
            git.run(
                scenario.workdir,
                &[
                    "-c",
                    "http.postBuffer=65536",
                    "clone",
                    "-q",
                    &scenario.url,
                    "chunked",
                ],
            );
            scenario.check_reference_requests(|requests| {
                for service in ["/git-receive-pack", "/git-upload-pack"] {
                    assert!(
                        requests
                            .iter()
                            .any(|request| request.target.ends_with(service) && request.chunked),
                        "the scenario sent no chunked {service} request: {requests:#?}"
                    );
                }
            });
            outcome.client("gzipped").client("chunked");
        },
    );
}

fn negotiation_over_many_rounds_fetches_only_what_is_missing(protocol: u8) {
    differential(
        protocol,
        &repo_name("negotiation", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            let shared = git.linear_history(&alice, "shared", 5);
            git.run(&alice, &["push", "-q", "origin", "main"]);
            let bob = clone(scenario, "bob", &[]);

            // Six hundred local commits, all newer than anything on the server: bob offers them as
            // haves first, and the server has to answer NAK for several rounds before they meet.
            git.extend_branch(&bob, "local-work", &shared[4], 600, EPOCH + 100 * DAY);
            let new_tip = git.extend_branch(&alice, "main", &shared[4], 3, EPOCH + 50 * DAY);
            git.run(&alice, &["push", "-q", "origin", "main"]);
            let requests_before = count_upload_pack_posts(scenario);
            git.run(&bob, &["fetch", "-q", "origin"]);
            assert_eq!(git.rev_parse(&bob, "origin/main"), new_tip);
            let rounds = count_upload_pack_posts(scenario) - requests_before;
            scenario.check_reference_requests(|_| {
                assert!(
                    rounds >= 3,
                    "the fetch negotiated in {rounds} rounds; the scenario needs several"
                );
            });
            outcome
                .observe(
                    "commits on origin/main",
                    git.commit_count(&bob, "origin/main"),
                )
                .client("bob");
        },
    );
}

fn count_upload_pack_posts(scenario: &Scenario<'_>) -> usize {
    let mut count = 0;
    scenario.check_reference_requests(|requests| {
        count = requests
            .iter()
            .filter(|request| {
                request.method == "POST" && request.target.ends_with("/git-upload-pack")
            })
            .count();
    });
    count
}

fn tags_of_blobs_trees_and_tags_round_trip(protocol: u8) {
    differential(
        protocol,
        &repo_name("odd-tags", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            let commit = git.commit(
                &alice,
                "one",
                &[("a.txt", "a\n"), ("dir/b.txt", "b\n")],
                EPOCH,
            );
            let blob = git.rev_parse(&alice, "HEAD:a.txt");
            let tree = git.rev_parse(&alice, "HEAD^{tree}");
            git.run(&alice, &["tag", "blob-tag", &blob]);
            git.run(&alice, &["tag", "tree-tag", &tree]);
            git.annotated_tag(&alice, "annotated-tree", &tree, "a tree", EPOCH + DAY);
            git.annotated_tag(&alice, "annotated-blob", &blob, "a blob", EPOCH + DAY);
            git.annotated_tag(&alice, "v1", &commit, "v1", EPOCH + DAY);
            git.annotated_tag(
                &alice,
                "tag-of-tag",
                "v1",
                "a tag of a tag",
                EPOCH + 2 * DAY,
            );
            git.run(&alice, &["push", "-q", "origin", "main", "--tags"]);

            let tags = git.ls_remote(&scenario.url, &["--tags"]);
            for expected in [
                format!("{commit}\trefs/tags/tag-of-tag^{{}}"),
                format!("{tree}\trefs/tags/annotated-tree^{{}}"),
                format!("{blob}\trefs/tags/blob-tag"),
            ] {
                assert!(
                    tags.contains(&expected),
                    "ls-remote lacks {expected:?}: {tags:#?}"
                );
            }
            let mirror = clone(scenario, "mirror.git", &["--mirror"]);
            assert_eq!(git.rev_parse(&mirror, "tag-of-tag^{commit}"), commit);
            assert_eq!(
                git.run(&mirror, &["cat-file", "-p", "annotated-blob^{blob}"]),
                "a\n"
            );
            clone(scenario, "bob", &[]);
            outcome
                .observe("ls-remote --tags", tags.join("\n"))
                .client("mirror.git")
                .client("bob");
        },
    );
}

fn unusual_tree_entries_and_octopus_merge_round_trip(protocol: u8) {
    differential(
        protocol,
        &repo_name("odd-trees", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            git.commit(&alice, "base", &[("target.txt", "target\n")], EPOCH);
            support::write_file(&alice.join("empty.txt"), "");
            support::write_file(&alice.join("run.sh"), "#!/bin/sh\necho hi\n");
            fs::set_permissions(alice.join("run.sh"), fs::Permissions::from_mode(0o755))
                .expect("make run.sh executable");
            std::os::unix::fs::symlink("target.txt", alice.join("link")).expect("create a symlink");
            support::write_file(
                &alice.join("\u{fc}n\u{ef}c\u{f6}d\u{e9}/\u{444}\u{430}\u{439}\u{43b}.txt"),
                "unicode\n",
            );
            support::write_file(&alice.join("with space.txt"), "space\n");
            support::write_file(&alice.join("a/b/c/d/e/f/g/h/i/j/deep.txt"), "deep\n");
            git.run(&alice, &["add", "-A"]);
            // A submodule entry whose commit exists nowhere: servers must not try to walk into it.
            git.run(
                &alice,
                &[
                    "update-index",
                    "--add",
                    "--cacheinfo",
                    "160000,1234567890abcdef1234567890abcdef12345678,vendor/sub",
                ],
            );
            // An empty directory stands for the submodule, as in a clone without `submodule update`,
            // so later `git add -A` keeps the entry.
            fs::create_dir_all(alice.join("vendor/sub")).expect("create the submodule directory");
            git.run(&alice, &["commit", "-q", "-m", "unusual entries"]);
            let base = git.rev_parse(&alice, "HEAD");
            for (index, branch) in ["one", "two", "three"].iter().enumerate() {
                git.run(&alice, &["checkout", "-q", "-b", branch, &base]);
                git.commit(
                    &alice,
                    branch,
                    &[(format!("{branch}.txt").as_str(), *branch)],
                    EPOCH + index as u64 + 1,
                );
            }
            git.run(&alice, &["checkout", "-q", "main"]);
            git.run(
                &alice,
                &["merge", "-q", "-m", "octopus", "one", "two", "three"],
            );
            assert_eq!(
                git.run(&alice, &["rev-list", "--count", "--min-parents=3", "HEAD"])
                    .trim(),
                "1"
            );
            git.run(
                &alice,
                &["push", "-q", "origin", "main", "one", "two", "three"],
            );

            let bob = clone(scenario, "bob", &[]);
            assert_eq!(git.rev_parse(&bob, "HEAD"), git.rev_parse(&alice, "HEAD"));
            assert_eq!(
                fs::read_link(bob.join("link")).expect("link is a symlink"),
                PathBuf::from("target.txt")
            );
            let mode = fs::metadata(bob.join("run.sh"))
                .expect("run.sh exists")
                .permissions()
                .mode();
            assert!(mode & 0o111 != 0, "run.sh lost its executable bit");
            assert_eq!(
                git.run(&bob, &["ls-tree", "HEAD", "vendor/sub"]),
                "160000 commit 1234567890abcdef1234567890abcdef12345678\tvendor/sub\n"
            );
            outcome.client("bob");
        },
    );
}

fn unusual_ref_names_round_trip(protocol: u8) {
    differential(
        protocol,
        &repo_name("odd-refs", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            git.commit(&alice, "one", &[("a.txt", "a\n")], EPOCH);
            let names = [
                "refs/heads/\u{fc}n\u{ef}c\u{f6}d\u{e9}",
                "refs/heads/with.dots_and-dashes",
                "refs/heads/UPPER/lower",
                "refs/heads/a",
                "refs/heads/a-b",
                "refs/heads/a.b/c",
                "refs/tags/v1.0-rc.1+build.5",
                "refs/custom/thing",
            ];
            let mut push = vec![
                "push".to_owned(),
                "-q".to_owned(),
                "origin".to_owned(),
                "main".to_owned(),
            ];
            push.extend(names.iter().map(|name| format!("main:{name}")));
            let push: Vec<&str> = push.iter().map(String::as_str).collect();
            git.run(&alice, &push);

            let listed = git.ls_remote(&scenario.url, &[]);
            for name in names {
                assert!(
                    listed
                        .iter()
                        .any(|line| line.ends_with(&format!("\t{name}"))),
                    "{name} is not advertised: {listed:#?}"
                );
            }
            clone(scenario, "mirror.git", &["--mirror"]);
            outcome
                .observe("ls-remote", listed.join("\n"))
                .client("mirror.git");
        },
    );
}

fn clone_when_head_names_a_missing_branch(protocol: u8) {
    differential(
        protocol,
        &repo_name("missing-head", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            git.commit(&alice, "one", &[("a.txt", "a\n")], EPOCH);
            git.run(&alice, &["push", "-q", "origin", "main:trunk"]);
            let output = git.output(scenario.workdir, &["clone", &scenario.url, "bob"]);
            assert!(output.status.success(), "clone failed:\n{}", output.stderr);
            outcome
                .observe(
                    "clone printed a missing-HEAD warning",
                    output.stderr.contains("nonexistent ref"),
                )
                .client("bob");
        },
    );
}

fn mirror_push_replaces_every_ref(protocol: u8) {
    differential(
        protocol,
        &repo_name("mirror-push", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = pusher(scenario, "alice");
            let commits = git.linear_history(&alice, "alice", 3);
            git.run(&alice, &["branch", "doomed", &commits[0]]);
            git.run(&alice, &["tag", "doomed-tag", &commits[1]]);
            git.run(&alice, &["push", "-q", "origin", "--all"]);
            git.run(&alice, &["push", "-q", "origin", "--tags"]);

            let carol = scenario.path("carol");
            git.init(&carol);
            let rewritten = git.linear_history(&carol, "carol", 2);
            git.run(&carol, &["branch", "fresh", &rewritten[0]]);
            git.annotated_tag(&carol, "fresh-tag", &rewritten[1], "fresh", EPOCH + 9 * DAY);
            git.run(&carol, &["push", "-q", "--mirror", &scenario.push_url]);

            let advertised: Vec<String> = git
                .ls_remote(&scenario.url, &[])
                .into_iter()
                .filter(|line| line.contains("\trefs/") && !line.ends_with("^{}"))
                .map(|line| line.replace('\t', " "))
                .collect();
            let local: Vec<String> = git
                .refs(&carol)
                .into_iter()
                .filter(|line| !line.starts_with("HEAD -> "))
                .collect();
            assert_eq!(
                advertised, local,
                "the server's refs are not the mirror-pushed ones"
            );
            outcome.client("carol");
        },
    );
}

fn default_branch_from_the_api_is_head_of_clones(protocol: u8) {
    let server = shared_server();
    let _logs = server.log_guard();
    let name = repo_name("default-develop", protocol);
    let response = server.try_create_repo(&serde_json::json!({
        "name": name, "private": false, "default_branch": "develop"
    }));
    assert_eq!(response.status, 201, "{}", response.body);
    assert_eq!(
        response.json()["default_branch"],
        "develop",
        "{}",
        response.body
    );
    let git = Git::new(protocol);
    let work = tempfile::tempdir().expect("create a work directory");
    let alice = work.path().join("alice");
    git.init(&alice);
    git.commit(&alice, "main work", &[("a.txt", "main\n")], EPOCH);
    git.run(&alice, &["branch", "develop"]);
    let develop = git.commit(
        &alice,
        "develop work",
        &[("a.txt", "develop\n")],
        EPOCH + DAY,
    );
    git.run(&alice, &["branch", "-f", "develop"]);
    git.run(
        &alice,
        &[
            "push",
            "-q",
            &server.push_url(&name),
            "main~0:refs/heads/main",
            "develop",
        ],
    );

    let listed = git.ls_remote(&server.url(&name), &[]);
    assert!(
        listed.contains(&"ref: refs/heads/develop\tHEAD".to_owned()),
        "HEAD is not advertised as develop: {listed:#?}"
    );
    git.run(work.path(), &["clone", "-q", &server.url(&name), "bob"]);
    let bob = work.path().join("bob");
    assert_eq!(
        git.run(&bob, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/develop"
    );
    assert_eq!(git.rev_parse(&bob, "HEAD"), develop);
    git.fsck(&bob);
}

#[test]
fn repository_names_with_dots_and_underscores_are_clonable() {
    let server = shared_server();
    let _logs = server.log_guard();
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("create a work directory");
    let alice = work.path().join("alice");
    git.init(&alice);
    let head = git.commit(&alice, "one", &[("a.txt", "a\n")], EPOCH);
    for name in ["my.repo", "under_score", "x-y.z_1", "UPPER.case"] {
        server.create_repo(name, false);
        git.run(&alice, &["push", "-q", &server.push_url(name), "main"]);
        let url = server.url(name);
        for (url, directory) in [
            (url.as_str(), format!("{name}-suffix")),
            (url.trim_end_matches(".git"), format!("{name}-bare")),
        ] {
            git.run(work.path(), &["clone", "-q", url, &directory]);
            assert_eq!(
                git.rev_parse(&work.path().join(&directory), "HEAD"),
                head,
                "clone of {url}"
            );
            git.fsck(&work.path().join(&directory));
        }
    }
}

#[test]
fn missing_repository_is_not_found() {
    let server = shared_server();
    let _logs = server.log_guard();
    // Anonymous users get the 401 a private repository gets, so git asks
    // for credentials and existence is not revealed; signed-in users 404.
    for target in [
        "/no-such-repo.git/info/refs?service=git-upload-pack",
        "/no-such-repo/info/refs?service=git-upload-pack",
    ] {
        let response = server.request("GET", target, None, None);
        assert_eq!(response.status, 401, "GET {target}: {}", response.body);
        let response = server.request(
            "GET",
            target,
            Some(&basic_authorization("x", OWNER_TOKEN)),
            None,
        );
        assert_eq!(response.status, 404, "GET {target}: {}", response.body);
    }
    let response = server.request(
        "GET",
        "/no-such-repo.git/info/refs?service=git-receive-pack",
        Some(&basic_authorization("x", OWNER_TOKEN)),
        None,
    );
    assert_eq!(
        response.status, 404,
        "authenticated receive-pack: {}",
        response.body
    );
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("create a work directory");
    let stderr = git.run_expect_failure(
        work.path(),
        &["clone", &server.push_url("no-such-repo"), "bob"],
    );
    assert!(
        stderr.contains("not found"),
        "clone of a missing repository failed for another reason:\n{stderr}"
    );
}

#[test]
fn git_endpoints_refuse_requests_without_credentials() {
    let server = shared_server();
    let _logs = server.log_guard();
    server.create_repo("guarded-public", false);
    server.create_repo("guarded-private", true);
    let refused = |method: &str, target: &str, content_type: &str| {
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{target}", server.base_url()))
            .header("Content-Type", content_type);
        builder = builder.header("Git-Protocol", "version=2");
        let request = builder
            .body(b"0000".to_vec())
            .expect("a well-formed request");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let response = agent.run(request).expect("the server answers");
        let status = response.status().as_u16();
        assert!(
            status == 401 || status == 404,
            "{method} {target} without credentials answered {status}"
        );
    };
    refused(
        "POST",
        "/guarded-public.git/git-receive-pack",
        "application/x-git-receive-pack-request",
    );
    refused(
        "GET",
        "/guarded-private.git/info/refs?service=git-upload-pack",
        "text/plain",
    );
    refused(
        "POST",
        "/guarded-private.git/git-upload-pack",
        "application/x-git-upload-pack-request",
    );
    refused(
        "POST",
        "/guarded-private.git/git-receive-pack",
        "application/x-git-receive-pack-request",
    );
    refused(
        "GET",
        "/guarded-private.git/info/refs?service=git-receive-pack",
        "text/plain",
    );
}

#[test]
fn crafted_paths_do_not_reach_outside_the_repositories() {
    let server = shared_server();
    let _logs = server.log_guard();
    server.create_repo("traversal", false);
    for target in [
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2f..%2fetc%2fpasswd/info/refs?service=git-upload-pack",
        "/traversal.git/../../../../etc/passwd",
        "/traversal.git/objects/../../../../../etc/passwd",
        "/traversal.git/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/.git/info/refs?service=git-upload-pack",
        "/data.git/info/refs?service=git-upload-pack",
    ] {
        let response = server.request("GET", target, None, None);
        assert!(
            !(200..300).contains(&response.status) && !response.body.contains("root:"),
            "GET {target} answered {}: {}",
            response.status,
            response.body
        );
        assert!(
            response.status < 500,
            "GET {target} answered {}: {}",
            response.status,
            response.body
        );
    }
}
