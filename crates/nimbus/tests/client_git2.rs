//! libgit2 (the `git2` crate) as an independent git client: clone, fetch and push against Nimbus over smart HTTP, every client repository checked with `git fsck` and against the server's `ls-remote`.
//!
//! libgit2 1.9 speaks protocol v0 only, so the git CLI that prepares history and inspects results runs
//! with `protocol.version=0` as well.

mod support;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use git2::build::{CheckoutBuilder, RepoBuilder};
use git2::{
    AutotagOption, Cred, CredentialType, ErrorCode, FetchOptions, FetchPrune, Oid, PushOptions,
    RemoteCallbacks, Repository, Signature, Time,
};
use support::{DAY, EPOCH, Git, OWNER_TOKEN, Scenario, ServerKind, repo_name, shared_server};

/// The only protocol version libgit2 speaks.
const PROTOCOL: u8 = 0;

/// How often the credentials callback may be asked before a push gives up, so a server that keeps
/// answering 401 fails the test instead of looping.
const MAX_CREDENTIAL_REQUESTS: usize = 3;

#[test]
fn clone_of_empty_repository_has_an_unborn_head_and_no_refs() {
    on_nimbus("git2-clone-empty", |scenario| {
        let bob = clone_with_git2(scenario, "bob");
        assert!(
            bob.is_empty()
                .expect("libgit2 can tell an empty repository"),
            "libgit2 found commits in a clone of an empty repository"
        );
        let Err(head) = bob.head() else {
            panic!("HEAD of a clone of an empty repository names a commit");
        };
        assert_eq!(head.code(), ErrorCode::UnbornBranch, "{head}");
        let refs = scenario.git.refs(&scenario.path("bob"));
        assert!(
            refs.iter().all(|line| line.starts_with("HEAD -> ")),
            "a clone of an empty repository has refs: {refs:?}"
        );
        assert!(server_refs(scenario).is_empty());
        check_client(scenario, "bob");
    });
}

#[test]
fn first_push_with_credentials_then_clone_round_trips_history() {
    on_nimbus("git2-first-push", |scenario| {
        let bob = clone_with_git2(scenario, "bob");
        // Over protocol v0 an empty repository advertises no HEAD, so libgit2 names the unborn branch after
        // its own `init.defaultBranch`; start `main` explicitly, as `git switch -c main` would.
        bob.set_head("refs/heads/main")
            .expect("point the unborn HEAD at main");
        commit_with_git2(&bob, "first", &[("README.md", "hello\n")], EPOCH);
        let tip = commit_with_git2(
            &bob,
            "second",
            &[("src/lib.rs", "pub fn answer() -> u32 { 42 }\n")],
            EPOCH + DAY,
        );

        let push = push_with_git2(&bob, &["refs/heads/main:refs/heads/main"]);
        push.result.expect("the first push succeeds");
        assert_eq!(push.statuses, [accepted("refs/heads/main")]);
        // Pushing needs the owner token, so Nimbus has to ask for it with a 401 challenge.
        assert!(
            push.credential_requests >= 1,
            "libgit2 was never asked for credentials: Nimbus let an anonymous push through"
        );
        assert_eq!(
            remote_ref(scenario, "refs/heads/main"),
            Some(tip.to_string())
        );
        check_client(scenario, "bob");

        let carol = clone_with_git2(scenario, "carol");
        let head = carol.head().expect("the clone has a HEAD");
        assert_eq!(head.name().ok(), Some("refs/heads/main"));
        assert_eq!(head.target(), Some(tip));
        assert_eq!(
            fs::read_to_string(scenario.path("carol").join("src/lib.rs"))
                .expect("the clone checked out src/lib.rs"),
            "pub fn answer() -> u32 { 42 }\n"
        );
        check_client(scenario, "carol");
    });
}

#[test]
fn incremental_fetch_fast_forwards_to_commits_pushed_by_git_cli() {
    on_nimbus("git2-incremental-fetch", |scenario| {
        let git = scenario.git;
        let alice = cli_pusher(scenario, "alice");
        let old_history = git.linear_history(&alice, "history", 4);
        git.run(&alice, &["push", "-q", "origin", "main"]);
        let bob = clone_with_git2(scenario, "bob");
        check_client(scenario, "bob");

        git.commit(&alice, "fifth", &[("new.txt", "five\n")], EPOCH + 10 * DAY);
        let new_tip = git.commit(
            &alice,
            "sixth",
            &[("new.txt", "six\n"), ("other/file.txt", "x\n")],
            EPOCH + 11 * DAY,
        );
        git.run(&alice, &["push", "-q", "origin", "main"]);
        let missing_objects = git
            .run(
                &alice,
                &["rev-list", "--objects", &new_tip, "--not", &old_history[3]],
            )
            .lines()
            .count();

        let received = fetch_with_git2(&bob);
        assert_eq!(
            received, missing_objects,
            "the incremental fetch received {received} objects; {missing_objects} were new"
        );
        fast_forward(&bob, "main");
        assert_eq!(
            bob.head().expect("HEAD").target().map(|id| id.to_string()),
            Some(new_tip)
        );
        assert_eq!(
            fs::read_to_string(scenario.path("bob").join("new.txt"))
                .expect("the fast-forward checked out new.txt"),
            "six\n"
        );
        check_client(scenario, "bob");

        // Nothing new on the server: a second fetch receives no objects.
        assert_eq!(fetch_with_git2(&bob), 0);
    });
}

#[test]
fn pushed_branch_and_lightweight_and_annotated_tags_are_advertised() {
    on_nimbus("git2-branch-and-tags", |scenario| {
        let git = scenario.git;
        let alice = cli_pusher(scenario, "alice");
        let history = git.linear_history(&alice, "history", 2);
        git.run(&alice, &["push", "-q", "origin", "main"]);

        let bob = clone_with_git2(scenario, "bob");
        let main_commit = bob
            .find_commit(oid(&history[1]))
            .expect("the clone has main's tip");
        bob.branch("feature", &main_commit, false)
            .expect("create branch feature");
        bob.set_head("refs/heads/feature")
            .expect("switch to feature");
        let feature_tip = commit_with_git2(
            &bob,
            "feature work",
            &[("feature.txt", "feature\n")],
            EPOCH + 5 * DAY,
        );
        bob.tag_lightweight("v1.0", main_commit.as_object(), false)
            .expect("create the lightweight tag");
        let feature_object = bob.find_object(feature_tip, None).expect("feature tip");
        let annotated = bob
            .tag(
                "v2.0",
                &feature_object,
                &signature(EPOCH + 6 * DAY),
                "release 2.0\n",
                false,
            )
            .expect("create the annotated tag");

        let push = push_with_git2(
            &bob,
            &[
                "refs/heads/feature:refs/heads/feature",
                "refs/tags/v1.0:refs/tags/v1.0",
                "refs/tags/v2.0:refs/tags/v2.0",
            ],
        );
        push.result.expect("pushing a branch and two tags succeeds");
        assert_eq!(
            sorted(push.statuses.clone()),
            [
                accepted("refs/heads/feature"),
                accepted("refs/tags/v1.0"),
                accepted("refs/tags/v2.0"),
            ]
        );
        let advertised = server_refs(scenario);
        for (name, id) in [
            ("refs/heads/main", history[1].clone()),
            ("refs/heads/feature", feature_tip.to_string()),
            ("refs/tags/v1.0", history[1].clone()),
            ("refs/tags/v2.0", annotated.to_string()),
            ("refs/tags/v2.0^{}", feature_tip.to_string()),
        ] {
            assert_eq!(advertised.get(name), Some(&id), "ls-remote: {advertised:?}");
        }
        check_client(scenario, "bob");

        // The real git gets the tag object intact.
        git.run(scenario.workdir, &["clone", "-q", &scenario.url, "carol"]);
        let carol = scenario.path("carol");
        assert_eq!(git.run(&carol, &["cat-file", "-t", "v2.0"]).trim(), "tag");
        assert!(
            git.run(&carol, &["cat-file", "tag", "v2.0"])
                .ends_with("\nrelease 2.0\n"),
            "the annotated tag lost its message"
        );
        assert_eq!(
            git.rev_parse(&carol, "v2.0^{commit}"),
            feature_tip.to_string()
        );
        check_client(scenario, "carol");
    });
}

#[test]
fn push_of_empty_source_deletes_the_branch() {
    on_nimbus("git2-delete-branch", |scenario| {
        let git = scenario.git;
        let alice = cli_pusher(scenario, "alice");
        git.linear_history(&alice, "history", 2);
        git.run(&alice, &["branch", "doomed"]);
        git.run(&alice, &["push", "-q", "origin", "main", "doomed"]);
        let bob = clone_with_git2(scenario, "bob");
        assert!(server_refs(scenario).contains_key("refs/heads/doomed"));
        check_client(scenario, "bob");

        let push = push_with_git2(&bob, &[":refs/heads/doomed"]);
        push.result.expect("deleting a branch succeeds");
        assert_eq!(push.statuses, [accepted("refs/heads/doomed")]);
        assert_eq!(remote_ref(scenario, "refs/heads/doomed"), None);
        assert!(remote_ref(scenario, "refs/heads/main").is_some());

        fetch_with_git2(&bob);
        assert!(
            bob.find_reference("refs/remotes/origin/doomed").is_err(),
            "libgit2 kept refs/remotes/origin/doomed after the push and a pruning fetch"
        );
        check_client(scenario, "bob");
    });
}

/// libgit2 checks fast-forwards itself before it sends anything: a non-forced push of a rewritten branch
/// fails on the client with `NotFastForward` and never reaches the server; `+` skips that check and the
/// server takes the update.
#[test]
fn non_fast_forward_push_is_refused_unless_forced_with_plus() {
    on_nimbus("git2-force-push", |scenario| {
        let git = scenario.git;
        let alice = cli_pusher(scenario, "alice");
        let history = git.linear_history(&alice, "history", 3);
        git.run(&alice, &["push", "-q", "origin", "main"]);

        let bob = clone_with_git2(scenario, "bob");
        let first = bob
            .find_object(oid(&history[0]), None)
            .expect("the clone has the first commit");
        bob.reset(&first, git2::ResetType::Hard, None)
            .expect("reset main to the first commit");
        let rewritten = commit_with_git2(
            &bob,
            "rewritten",
            &[("rewrite.txt", "new\n")],
            EPOCH + 9 * DAY,
        );

        let refused = push_with_git2(&bob, &["refs/heads/main:refs/heads/main"]);
        let error = refused
            .result
            .expect_err("a non-fast-forward push without force fails");
        assert_eq!(error.code(), ErrorCode::NotFastForward, "{error}");
        assert!(
            refused.statuses.is_empty(),
            "libgit2 reported ref statuses for a push it refused: {:?}",
            refused.statuses
        );
        assert_eq!(
            remote_ref(scenario, "refs/heads/main").as_ref(),
            Some(&history[2])
        );
        check_client(scenario, "bob");

        let forced = push_with_git2(&bob, &["+refs/heads/main:refs/heads/main"]);
        forced.result.expect("a forced push succeeds");
        assert_eq!(forced.statuses, [accepted("refs/heads/main")]);
        assert_eq!(
            remote_ref(scenario, "refs/heads/main"),
            Some(rewritten.to_string())
        );
        check_client(scenario, "bob");

        git.run(&alice, &["fetch", "-q", "origin"]);
        assert_eq!(git.rev_parse(&alice, "origin/main"), rewritten.to_string());
        check_client(scenario, "alice");
    });
}

/// An update only the server can refuse (`refs/heads/dir` while `refs/heads/dir/sub` exists) comes back
/// to libgit2 as a per-ref status with the server's reason, while the other ref of the same push lands.
#[test]
fn ref_refused_by_the_server_is_reported_through_push_update_reference() {
    on_nimbus("git2-server-refusal", |scenario| {
        let git = scenario.git;
        let alice = cli_pusher(scenario, "alice");
        let history = git.linear_history(&alice, "history", 2);
        git.run(
            &alice,
            &["push", "-q", "origin", "main", "main:refs/heads/dir/sub"],
        );

        let bob = clone_with_git2(scenario, "bob");
        let tip = commit_with_git2(&bob, "more", &[("more.txt", "more\n")], EPOCH + 7 * DAY);
        let push = push_with_git2(
            &bob,
            &[
                "refs/heads/main:refs/heads/dir",
                "refs/heads/main:refs/heads/ok",
            ],
        );
        let statuses: BTreeMap<String, Option<String>> = push.statuses.iter().cloned().collect();
        assert_eq!(
            statuses.keys().collect::<Vec<_>>(),
            ["refs/heads/dir", "refs/heads/ok"]
        );
        let reason = statuses["refs/heads/dir"].as_deref().unwrap_or_else(|| {
            panic!(
                "the server accepted refs/heads/dir although refs/heads/dir/sub exists; ls-remote: {:?}",
                server_refs(scenario)
            )
        });
        assert!(!reason.trim().is_empty(), "the refusal has an empty reason");
        assert_eq!(statuses["refs/heads/ok"], None, "refs/heads/ok was refused");
        // libgit2 reports refused refs through the callback only; the push itself succeeds.
        push.result.expect("a push with one refused ref succeeds");

        let advertised = server_refs(scenario);
        assert_eq!(advertised.get("refs/heads/dir"), None);
        assert_eq!(advertised.get("refs/heads/dir/sub"), Some(&history[1]));
        assert_eq!(advertised.get("refs/heads/ok"), Some(&tip.to_string()));
        check_client(scenario, "bob");
    });
}

/// Runs `scenario` against a fresh public repository (default branch `main`) on the shared Nimbus server,
/// with the git CLI at protocol v0 and an empty working directory.
///
/// These scenarios are not compared with the `git http-backend` reference server: it ends its responses by
/// closing the connection (no `Content-Length`, no chunking), and libgit2's HTTP client cannot read such a
/// body ("could not read refs from remote repository"). Each scenario states what it expects instead.
fn on_nimbus(test: &str, scenario: impl FnOnce(&Scenario<'_>)) {
    let server = shared_server();
    let _logs = server.log_guard();
    let name = repo_name(test, PROTOCOL);
    server.create_repo(&name, false);
    let git = Git::new(PROTOCOL);
    let workdir = tempfile::Builder::new()
        .prefix("nimbus-git2-")
        .tempdir()
        .expect("create the scenario directory");
    scenario(&Scenario {
        git: &git,
        server: ServerKind::Nimbus,
        url: server.url(&name),
        push_url: server.push_url(&name),
        workdir: workdir.path(),
        reference_requests: None,
    });
}

/// What libgit2 reported while pushing.
#[derive(Debug)]
struct PushReport {
    result: Result<(), git2::Error>,
    /// One `(ref, status)` per ref the server answered for: `None` when it took the update, else its reason.
    statuses: Vec<(String, Option<String>)>,
    /// How often libgit2 asked the credentials callback.
    credential_requests: usize,
}

fn accepted(reference: &str) -> (String, Option<String>) {
    (reference.to_owned(), None)
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

/// Pushes `refspecs` to `origin`, answering any credentials request with user `x` and the owner token,
/// as `git push` does with the harness's push URL.
fn push_with_git2(repo: &Repository, refspecs: &[&str]) -> PushReport {
    let statuses = RefCell::new(Vec::new());
    let credential_requests = RefCell::new(0usize);
    let result = {
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(|url, _username, allowed| {
            let mut requests = credential_requests.borrow_mut();
            *requests += 1;
            if *requests > MAX_CREDENTIAL_REQUESTS {
                return Err(git2::Error::from_str(
                    "the server rejected the owner token repeatedly",
                ));
            }
            assert!(
                allowed.contains(CredentialType::USER_PASS_PLAINTEXT),
                "{url} asked for {allowed:?}, not a user name and password"
            );
            Cred::userpass_plaintext("x", OWNER_TOKEN)
        });
        callbacks.push_update_reference(|reference, status| {
            statuses
                .borrow_mut()
                .push((reference.to_owned(), status.map(str::to_owned)));
            Ok(())
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(callbacks);
        let mut remote = repo.find_remote("origin").expect("the clone has origin");
        remote.push(refspecs, Some(&mut options))
    };
    PushReport {
        result,
        statuses: statuses.into_inner(),
        credential_requests: credential_requests.into_inner(),
    }
}

/// Fetches every branch of `origin` into `refs/remotes/origin/*` (pruning deleted ones) with the tags that
/// point into them; returns how many objects the server sent.
fn fetch_with_git2(repo: &Repository) -> usize {
    let mut remote = repo.find_remote("origin").expect("the clone has origin");
    let mut options = FetchOptions::new();
    options
        .prune(FetchPrune::On)
        .download_tags(AutotagOption::Auto);
    remote
        .fetch(
            &["+refs/heads/*:refs/remotes/origin/*"],
            Some(&mut options),
            None,
        )
        .unwrap_or_else(|error| panic!("libgit2 could not fetch: {error}"));
    remote.stats().received_objects()
}

/// Moves `refs/heads/<branch>` (checked out) to `refs/remotes/origin/<branch>`, which must be a fast-forward.
fn fast_forward(repo: &Repository, branch: &str) {
    let upstream = repo
        .find_reference(&format!("refs/remotes/origin/{branch}"))
        .expect("the fetch created the remote-tracking branch");
    let upstream = repo
        .reference_to_annotated_commit(&upstream)
        .expect("the remote-tracking branch names a commit");
    let (analysis, _) = repo
        .merge_analysis(&[&upstream])
        .expect("libgit2 analyses the merge");
    assert!(
        analysis.is_fast_forward(),
        "origin/{branch} is not a fast-forward of {branch}: {analysis:?}"
    );
    repo.find_reference(&format!("refs/heads/{branch}"))
        .expect("the local branch exists")
        .set_target(upstream.id(), "fast-forward")
        .expect("move the branch");
    repo.checkout_head(Some(CheckoutBuilder::new().force()))
        .expect("check out the new tip");
}

/// Clones the anonymous URL with libgit2 into `name` inside the scenario directory.
fn clone_with_git2(scenario: &Scenario<'_>, name: &str) -> Repository {
    RepoBuilder::new()
        .clone(&scenario.url, &scenario.path(name))
        .unwrap_or_else(|error| panic!("libgit2 could not clone {}: {error}", scenario.url))
}

/// The fixed author and committer of libgit2-made commits, so both servers see the same ids.
fn signature(unix_time: u64) -> Signature<'static> {
    let seconds = i64::try_from(unix_time).expect("fixture dates fit in i64");
    Signature::new("Nimbus Test", "test@nimbus.invalid", &Time::new(seconds, 0))
        .expect("a valid signature")
}

/// Writes `files` into the work tree, stages them and commits on top of HEAD (or as a root commit on an
/// unborn HEAD) with libgit2; returns the new commit.
fn commit_with_git2(
    repo: &Repository,
    message: &str,
    files: &[(&str, &str)],
    unix_time: u64,
) -> Oid {
    let workdir = repo.workdir().expect("a non-bare repository");
    let mut index = repo.index().expect("the repository has an index");
    for (path, content) in files {
        let full_path = workdir.join(path);
        fs::create_dir_all(full_path.parent().expect("files live in a directory"))
            .expect("create the file's directory");
        fs::write(&full_path, content).expect("write a file");
        index.add_path(Path::new(path)).expect("stage the file");
    }
    index.write().expect("write the index");
    let tree = repo
        .find_tree(index.write_tree().expect("write the tree"))
        .expect("the tree was just written");
    let parent = match repo.head() {
        Ok(head) => Some(head.peel_to_commit().expect("HEAD names a commit")),
        Err(error) if error.code() == ErrorCode::UnbornBranch => None,
        Err(error) => panic!("could not read HEAD: {error}"),
    };
    let parents: Vec<_> = parent.iter().collect();
    let author = signature(unix_time);
    repo.commit(Some("HEAD"), &author, &author, message, &tree, &parents)
        .expect("libgit2 commits")
}

/// A fresh git CLI repository `name` whose `origin` is the authenticated push URL.
fn cli_pusher(scenario: &Scenario<'_>, name: &str) -> std::path::PathBuf {
    let dir = scenario.path(name);
    scenario.git.init(&dir);
    scenario
        .git
        .run(&dir, &["remote", "add", "origin", &scenario.push_url]);
    dir
}

fn oid(hex: &str) -> Oid {
    Oid::from_str(hex).expect("git prints valid object ids")
}

/// What the server advertises (`git ls-remote`): ref name (peeled tags as `<tag>^{}`) to object id,
/// without `HEAD`.
fn server_refs(scenario: &Scenario<'_>) -> BTreeMap<String, String> {
    scenario
        .git
        .ls_remote(&scenario.url, &[])
        .iter()
        .filter_map(|line| {
            let (id, name) = line.split_once('\t')?;
            (!id.starts_with("ref:") && name != "HEAD").then(|| (name.to_owned(), id.to_owned()))
        })
        .collect()
}

fn remote_ref(scenario: &Scenario<'_>, reference: &str) -> Option<String> {
    server_refs(scenario).remove(reference)
}

/// Checks client `name` with `git fsck --full`, and that its remote-tracking branches and tags are exactly
/// the server's branches and tags.
fn check_client(scenario: &Scenario<'_>, name: &str) {
    let dir = scenario.path(name);
    scenario.git.fsck(&dir);
    let expected: BTreeMap<String, String> = server_refs(scenario)
        .into_iter()
        .filter(|(name, _)| !name.ends_with("^{}"))
        .map(|(name, id)| match name.strip_prefix("refs/heads/") {
            Some(branch) => (format!("refs/remotes/origin/{branch}"), id),
            None => (name, id),
        })
        .collect();
    let actual: BTreeMap<String, String> = scenario
        .git
        .refs(&dir)
        .iter()
        .filter_map(|line| {
            let (id, name) = line.split_once(' ')?;
            let tracked = name.starts_with("refs/tags/")
                || name.starts_with("refs/remotes/origin/") && name != "refs/remotes/origin/HEAD";
            tracked.then(|| (name.to_owned(), id.to_owned()))
        })
        .collect();
    assert_eq!(
        actual, expected,
        "client {name:?}: remote-tracking refs and tags differ from what the server advertises"
    );
}
