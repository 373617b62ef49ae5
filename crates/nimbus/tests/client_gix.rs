//! gitoxide (the `gix` crate) as an independent git client: clones and incremental fetches from Nimbus over protocol v0, v1 and v2, compared with a git CLI clone and with `git http-backend`.
//!
//! gix 0.90 has no push (only `push.default` configuration and the push direction of remotes), so
//! these scenarios push with the git CLI; `client_git2.rs` covers a second client's pushes.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::remote::fetch::Status;
use support::{DAY, EPOCH, Scenario, assert_same_lines, differential, protocol_tests, repo_name};

protocol_tests!(
    bare_clone_matches_a_git_cli_bare_clone,
    clone_then_incremental_fetch_matches_git_cli,
);

/// Clones a repository with several commits, branches and tags with gix (`clone --bare` layout) and
/// compares its refs and objects with `git clone --bare` of the same URL.
fn bare_clone_matches_a_git_cli_bare_clone(protocol: u8) {
    differential(
        protocol,
        &repo_name("gix-bare-clone", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = publish_history(scenario);

            let (clone, fetched) = clone_with_gix(scenario, "gix", gix::create::Kind::Bare);
            assert!(clone.is_bare());
            assert_protocol(&fetched, protocol);
            let Status::Change {
                write_pack_bundle, ..
            } = &fetched.status
            else {
                panic!("the clone received no pack: {:?}", fetched.status);
            };
            let gix_dir = scenario.path("gix");
            assert_eq!(
                write_pack_bundle.index.num_objects as usize,
                git.reachable_objects(&alice).len(),
                "the clone's pack does not hold exactly the repository's objects"
            );

            git.run(
                scenario.workdir,
                &["clone", "-q", "--bare", &scenario.url, "cli"],
            );
            let cli_dir = scenario.path("cli");
            git.fsck(&gix_dir);
            assert_same_lines(
                "refs (git CLI vs gix)",
                &git.refs(&cli_dir),
                &git.refs(&gix_dir),
            );
            assert_same_lines(
                "reachable objects (git CLI vs gix)",
                &git.reachable_objects(&cli_dir),
                &git.reachable_objects(&gix_dir),
            );
            outcome
                .observe(
                    "objects in the clone's pack",
                    write_pack_bundle.index.num_objects,
                )
                .client("gix");
        },
    );
}

/// Clones with gix (remote-tracking layout, no checkout), lets the git CLI push new commits, a new branch
/// and a new annotated tag, fetches them with gix and compares with a git CLI clone that ran `git fetch`.
fn clone_then_incremental_fetch_matches_git_cli(protocol: u8) {
    differential(
        protocol,
        &repo_name("gix-incremental-fetch", protocol),
        |scenario, outcome| {
            let git = scenario.git;
            let alice = publish_history(scenario);
            let (_, cloned) = clone_with_gix(scenario, "gix", gix::create::Kind::WithWorktree);
            assert_protocol(&cloned, protocol);
            git.run(
                scenario.workdir,
                &["clone", "-q", "--no-checkout", &scenario.url, "cli"],
            );
            let (gix_dir, cli_dir) = (scenario.path("gix"), scenario.path("cli"));
            git.fsck(&gix_dir);
            assert_same_lines(
                "refs after the clone (git CLI vs gix)",
                &git.refs(&cli_dir),
                &git.refs(&gix_dir),
            );
            let objects_before = git.reachable_objects(&gix_dir);

            let main_tip = git.commit(&alice, "more", &[("more.txt", "more\n")], EPOCH + 30 * DAY);
            let main_tip = git.extend_branch(&alice, "main", &main_tip, 2, EPOCH + 31 * DAY);
            git.extend_branch(&alice, "topic", &main_tip, 1, EPOCH + 32 * DAY);
            git.annotated_tag(&alice, "v3.0", &main_tip, "release 3.0", EPOCH + 33 * DAY);
            git.run(&alice, &["push", "-q", "origin", "main", "topic", "v3.0"]);
            let new_objects = git
                .reachable_objects(&alice)
                .into_iter()
                .filter(|id| objects_before.binary_search(id).is_err())
                .count();

            let fetched = fetch_with_gix(&gix_dir, protocol);
            assert_protocol(&fetched, protocol);
            let Status::Change {
                write_pack_bundle,
                negotiate,
                ..
            } = &fetched.status
            else {
                panic!("the fetch received no pack: {:?}", fetched.status);
            };
            assert!(
                !negotiate.rounds.is_empty(),
                "gix fetched without negotiating"
            );
            assert_eq!(
                write_pack_bundle.index.num_objects as usize, new_objects,
                "the incremental fetch should receive exactly the {new_objects} new objects"
            );
            git.run(&cli_dir, &["fetch", "-q", "origin"]);
            git.fsck(&gix_dir);
            assert_eq!(
                git.rev_parse(&gix_dir, "refs/remotes/origin/main"),
                main_tip
            );
            assert_eq!(git.rev_parse(&gix_dir, "v3.0^{commit}"), main_tip);
            assert_same_lines(
                "refs after the fetch (git CLI vs gix)",
                &git.refs(&cli_dir),
                &git.refs(&gix_dir),
            );
            assert_same_lines(
                "reachable objects after the fetch (git CLI vs gix)",
                &git.reachable_objects(&cli_dir),
                &git.reachable_objects(&gix_dir),
            );

            // Nothing changed on the server since: no pack this time.
            let again = fetch_with_gix(&gix_dir, protocol);
            assert!(
                matches!(again.status, Status::NoPackReceived { .. }),
                "a fetch with nothing new received a pack: {:?}",
                again.status
            );
            outcome
                .observe(
                    "objects in the incremental pack",
                    write_pack_bundle.index.num_objects,
                )
                .client("gix");
        },
    );
}

/// Pushes, with the git CLI, `main` (four commits), `feature` (two more commits on the second one), a
/// lightweight tag `v1.0` and an annotated tag `v2.0`; returns the pushing repository.
fn publish_history(scenario: &Scenario<'_>) -> PathBuf {
    let git = scenario.git;
    let alice = scenario.path("alice");
    git.init(&alice);
    git.run(&alice, &["remote", "add", "origin", &scenario.push_url]);
    let main = git.linear_history(&alice, "history", 4);
    git.extend_branch(&alice, "feature", &main[1], 2, EPOCH + 20 * DAY);
    git.run(&alice, &["tag", "v1.0", &main[0]]);
    git.annotated_tag(&alice, "v2.0", &main[3], "release 2.0", EPOCH + 21 * DAY);
    git.run(
        &alice,
        &["push", "-q", "origin", "main", "feature", "v1.0", "v2.0"],
    );
    alice
}

/// The configuration gix gets on top of none from the user's files: the protocol version to ask for, and
/// a committer for the reflog entries a fetch writes.
fn config_overrides(protocol: u8) -> [String; 3] {
    [
        format!("protocol.version={protocol}"),
        "user.name=Nimbus Test".to_owned(),
        "user.email=test@nimbus.invalid".to_owned(),
    ]
}

/// Clones the anonymous URL with gix into `name` without checking anything out.
fn clone_with_gix(
    scenario: &Scenario<'_>,
    name: &str,
    kind: gix::create::Kind,
) -> (gix::Repository, gix::remote::fetch::Outcome) {
    let protocol = scenario.git.protocol();
    let mut prepare = gix::clone::PrepareFetch::new(
        scenario.url.as_str(),
        scenario.path(name),
        kind,
        gix::create::Options::default(),
        gix::open::Options::isolated(),
    )
    .unwrap_or_else(|error| panic!("gix could not prepare a clone: {error:?}"))
    .with_in_memory_config_overrides(config_overrides(protocol));
    prepare
        .fetch_only(gix::progress::Discard, &AtomicBool::new(false))
        .unwrap_or_else(|error| panic!("gix could not clone {}: {error:?}", scenario.url))
}

/// Fetches from `origin` of the gix clone at `dir` with its configured refspecs.
fn fetch_with_gix(dir: &Path, protocol: u8) -> gix::remote::fetch::Outcome {
    let options = gix::open::Options::isolated().config_overrides(config_overrides(protocol));
    let repo = gix::open_opts(dir, options)
        .unwrap_or_else(|error| panic!("gix could not open {}: {error:?}", dir.display()));
    let remote = repo
        .find_remote("origin")
        .unwrap_or_else(|error| panic!("the gix clone has no origin: {error:?}"));
    remote
        .connect(gix::remote::Direction::Fetch)
        .and_then(|connection| {
            connection.prepare_fetch(
                gix::progress::Discard,
                gix::remote::ref_map::Options::default(),
            )
        })
        .and_then(|prepared| prepared.receive(gix::progress::Discard, &AtomicBool::new(false)))
        .unwrap_or_else(|error| panic!("gix could not fetch: {error:?}"))
}

/// gix spoke the protocol version it was configured for.
#[track_caller]
fn assert_protocol(outcome: &gix::remote::fetch::Outcome, protocol: u8) {
    // A v0 answer has no `version` line and looks like a v1 one, so gix reports both as V1.
    let expected = match protocol {
        0 | 1 => gix::protocol::transport::Protocol::V1,
        _ => gix::protocol::transport::Protocol::V2,
    };
    assert_eq!(outcome.handshake.server_protocol_version, expected);
}
