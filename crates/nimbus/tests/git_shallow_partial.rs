//! Shallow clones (depth, deepen, unshallow, since a date, excluding a branch) and partial clones (blob:none, tree:0) with lazy fetches, compared with `git http-backend` over protocol v0, v1 and v2.

mod support;

use std::fs;
use std::path::PathBuf;

use support::{DAY, EPOCH, Scenario, differential, protocol_tests, repo_name};

protocol_tests!(
    shallow_clone_deepens_then_unshallows,
    shallow_since_cuts_history_at_a_date,
    shallow_exclude_omits_the_history_of_a_branch,
    partial_clone_without_blobs_fetches_them_lazily,
    partial_clone_without_trees_fetches_them_lazily,
    partial_clone_with_blob_size_limit_fetches_big_blobs_lazily,
    shallow_clone_of_every_branch_has_one_boundary_per_branch,
    push_from_a_shallow_clone_extends_the_branch,
);

/// Eight commits on `main`, one a day from `EPOCH`, and branch `old` at the third; pushed to the server.
/// Returns alice's directory and the commit ids, oldest first.
fn push_fixture(scenario: &Scenario<'_>) -> (PathBuf, Vec<String>) {
    let git = scenario.git;
    let alice = scenario.path("alice");
    git.init(&alice);
    git.run(&alice, &["remote", "add", "origin", &scenario.push_url]);
    let commits = git.linear_history(&alice, "history", 8);
    git.run(&alice, &["branch", "old", &commits[2]]);
    git.run(&alice, &["push", "-q", "origin", "main", "old"]);
    (alice, commits)
}

fn shallow_clone_deepens_then_unshallows(protocol: u8) {
    differential(
        protocol,
        &repo_name("shallow-deepen", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let (_, commits) = push_fixture(scenario);
            git.run(
                scenario.workdir,
                &["clone", "-q", "--depth", "1", &scenario.url, "bob"],
            );
            let bob = scenario.path("bob");
            assert_eq!(git.commit_count(&bob, "HEAD"), 1);
            assert_eq!(git.shallow(&bob), [commits[7].clone()]);
            outcome.observe("shallow after --depth 1", git.shallow(&bob).join(" "));

            git.run(&bob, &["fetch", "-q", "--deepen", "2"]);
            assert_eq!(git.commit_count(&bob, "HEAD"), 3);
            assert_eq!(git.shallow(&bob), [commits[5].clone()]);
            outcome.observe("shallow after --deepen 2", git.shallow(&bob).join(" "));

            git.run(&bob, &["fetch", "-q", "--unshallow"]);
            assert_eq!(git.commit_count(&bob, "HEAD"), 8);
            assert!(
                git.shallow(&bob).is_empty(),
                "still shallow after --unshallow"
            );
            outcome.client("bob");
        },
    );
}

fn shallow_since_cuts_history_at_a_date(protocol: u8) {
    differential(
        protocol,
        &repo_name("shallow-since", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let (_, commits) = push_fixture(scenario);
            let since = format!("--shallow-since={}", EPOCH + 4 * DAY);
            git.run(
                scenario.workdir,
                &["clone", "-q", &since, &scenario.url, "bob"],
            );
            let bob = scenario.path("bob");
            // Commits dated on or after the cut-off: the fifth to the eighth.
            assert_eq!(git.commit_count(&bob, "HEAD"), 4);
            assert_eq!(git.shallow(&bob), [commits[4].clone()]);
            outcome.client("bob");
        },
    );
}

fn shallow_exclude_omits_the_history_of_a_branch(protocol: u8) {
    differential(
        protocol,
        &repo_name("shallow-exclude", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let (_, commits) = push_fixture(scenario);
            git.run(
                scenario.workdir,
                &["clone", "-q", "--shallow-exclude=old", &scenario.url, "bob"],
            );
            let bob = scenario.path("bob");
            // Everything after `old` (the third commit): the fourth to the eighth.
            assert_eq!(git.commit_count(&bob, "HEAD"), 5);
            assert_eq!(git.shallow(&bob), [commits[3].clone()]);
            outcome.client("bob");
        },
    );
}

fn partial_clone_without_blobs_fetches_them_lazily(protocol: u8) {
    partial_clone_fetches_lazily(protocol, "partial-blob-none", "blob:none");
}

fn partial_clone_without_trees_fetches_them_lazily(protocol: u8) {
    partial_clone_fetches_lazily(protocol, "partial-tree-0", "tree:0");
}

fn partial_clone_with_blob_size_limit_fetches_big_blobs_lazily(protocol: u8) {
    // The fixture's rotating files are over 300 bytes from the first commit on; early log.txt versions are not.
    partial_clone_fetches_lazily(protocol, "partial-blob-limit", "blob:limit=300");
}

fn shallow_clone_of_every_branch_has_one_boundary_per_branch(protocol: u8) {
    differential(
        protocol,
        &repo_name("shallow-all-branches", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let (_, commits) = push_fixture(scenario);
            git.run(
                scenario.workdir,
                &[
                    "clone",
                    "-q",
                    "--depth",
                    "2",
                    "--no-single-branch",
                    &scenario.url,
                    "bob",
                ],
            );
            let bob = scenario.path("bob");
            let mut expected = vec![commits[1].clone(), commits[6].clone()];
            expected.sort();
            assert_eq!(git.shallow(&bob), expected);
            assert_eq!(git.commit_count(&bob, "origin/old"), 2);
            outcome.client("bob");
        },
    );
}

fn push_from_a_shallow_clone_extends_the_branch(protocol: u8) {
    differential(
        protocol,
        &repo_name("shallow-push", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let (_, commits) = push_fixture(scenario);
            git.run(
                scenario.workdir,
                &["clone", "-q", "--depth", "1", &scenario.url, "bob"],
            );
            let bob = scenario.path("bob");
            git.run(
                &bob,
                &["remote", "set-url", "--push", "origin", &scenario.push_url],
            );
            // The push request of a shallow repository carries `shallow` lines before its commands.
            let pushed = git.commit(
                &bob,
                "from a shallow clone",
                &[("shallow.txt", "hi\n")],
                EPOCH + 20 * DAY,
            );
            git.run(&bob, &["push", "-q", "origin", "main"]);
            git.run(
                &bob,
                &[
                    "push",
                    "-q",
                    "origin",
                    &format!("{}:refs/heads/side", commits[7]),
                ],
            );

            git.run(scenario.workdir, &["clone", "-q", &scenario.url, "carol"]);
            let carol = scenario.path("carol");
            assert_eq!(git.rev_parse(&carol, "HEAD"), pushed);
            assert_eq!(git.commit_count(&carol, "HEAD"), commits.len() + 1);
            outcome.client("bob").client("carol");
        },
    );
}

/// Clones with `--filter`, checks some objects are missing, then checks out an old commit and runs
/// `git log -p` over the whole history, which only works if the lazy fetches of missing objects do.
fn partial_clone_fetches_lazily(protocol: u8, test: &str, filter: &str) {
    differential(protocol, &repo_name(test, protocol), |scenario, outcome| {
        let git = scenario.git;
        let (alice, commits) = push_fixture(scenario);
        let filter_arg = format!("--filter={filter}");
        git.run(
            scenario.workdir,
            &["clone", "-q", &filter_arg, &scenario.url, "bob"],
        );
        let bob = scenario.path("bob");
        assert_eq!(
            git.run(&bob, &["config", "remote.origin.promisor"]).trim(),
            "true",
            "the clone is not a partial clone"
        );
        let missing_after_clone = git
            .reachable_objects(&bob)
            .iter()
            .filter(|object| object.starts_with('?'))
            .count();
        assert!(
            missing_after_clone > 0,
            "a {filter} clone has every object: the server ignored the filter"
        );
        outcome.observe("objects missing after the clone", missing_after_clone);

        git.run(&bob, &["checkout", "-q", &commits[1]]);
        assert_eq!(
            fs::read_to_string(bob.join("log.txt")).expect("checkout wrote log.txt"),
            git.run(&alice, &["show", &format!("{}:log.txt", commits[1])])
        );
        let history = git.run(&bob, &["log", "-p", "main"]);
        assert_eq!(history, git.run(&alice, &["log", "-p", "main"]));
        outcome.client("bob");
    });
}
