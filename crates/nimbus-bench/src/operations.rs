//! The measured operations: what a client does, the same against both servers.
//!
//! Clones are bare (`--bare`): checking files out is the client's work, the same for both servers, and
//! would only blur the comparison. Each operation checks its result (the tip the client ends with, the
//! ref the server ends with), so a server that answers fast and wrong fails the run instead of winning.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

use crate::generate::{Fixture, RELEASE_TAGS};
use crate::git::{Git, checked};
use crate::servers::{Sample, Server};

/// The repository every read operation uses, on both servers.
pub const REPOSITORY: &str = "bench";
/// The repository of the `ls-remote` row: `main` and `--refs` tags.
pub const MANY_REFS_REPOSITORY: &str = "many-refs";

/// How many clones run at once in the concurrency row.
const CONCURRENT_CLONES: usize = 16;

/// What an operation needs besides the server.
#[derive(Debug)]
pub struct Setup<'a> {
    pub git: &'a Git,
    pub fixture: &'a Fixture,
    /// Scratch space, emptied between operations.
    pub scratch: PathBuf,
    /// Extra checks (`git fsck` of clones): slower, for the smoke test.
    pub verify: bool,
    /// How many tags the `ls-remote` repository has.
    pub refs: usize,
}

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    ColdClone,
    FullClone,
    ShallowClone,
    PartialClone,
    BundleClone,
    Fetch1,
    Fetch100,
    NoopFetch,
    LsRemote,
    Push1,
    Push1000,
    InitialPush,
    ConcurrentClones,
}

impl Operation {
    pub const ALL: [Operation; 13] = [
        Operation::ColdClone,
        Operation::FullClone,
        Operation::ShallowClone,
        Operation::PartialClone,
        Operation::BundleClone,
        Operation::Fetch1,
        Operation::Fetch100,
        Operation::NoopFetch,
        Operation::LsRemote,
        Operation::Push1,
        Operation::Push1000,
        Operation::InitialPush,
        Operation::ConcurrentClones,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Operation::ColdClone => "full clone, clone pack cache empty",
            Operation::FullClone => "full clone, clone pack cache warm",
            Operation::ShallowClone => "shallow clone (--depth 1)",
            Operation::PartialClone => "partial clone (blob:none)",
            Operation::BundleClone => "full clone with transfer.bundleURI",
            Operation::Fetch1 => "fetch after 1 new commit",
            Operation::Fetch100 => "fetch after 100 new commits",
            Operation::NoopFetch => "no-op fetch",
            Operation::LsRemote => "ls-remote",
            Operation::Push1 => "push 1 commit",
            Operation::Push1000 => "push 1,000 commits",
            Operation::InitialPush => "initial push (whole repository)",
            Operation::ConcurrentClones => "16 concurrent full clones",
        }
    }

    /// A short name for `--only`.
    pub fn key(self) -> &'static str {
        match self {
            Operation::ColdClone => "cold-clone",
            Operation::FullClone => "clone",
            Operation::ShallowClone => "shallow",
            Operation::PartialClone => "partial",
            Operation::BundleClone => "bundle-clone",
            Operation::Fetch1 => "fetch1",
            Operation::Fetch100 => "fetch100",
            Operation::NoopFetch => "noop",
            Operation::LsRemote => "ls-remote",
            Operation::Push1 => "push1",
            Operation::Push1000 => "push1000",
            Operation::InitialPush => "initial-push",
            Operation::ConcurrentClones => "concurrent",
        }
    }

    /// Runs the operation once against `server` (`run` makes the pushed commits of each run distinct).
    pub fn run(self, context: &Setup<'_>, server: &Server, run: usize) -> Result<Sample> {
        let scratch = &context.scratch;
        reset(scratch)?;
        let git = context.git;
        let url = server.url(REPOSITORY);
        let sample = match self {
            Operation::ColdClone
            | Operation::FullClone
            | Operation::ShallowClone
            | Operation::PartialClone => {
                let destination = scratch.join("clone.git");
                let extra: &[&str] = match self {
                    Operation::ShallowClone => &["--depth", "1"],
                    Operation::PartialClone => &["--filter=blob:none"],
                    _ => &[],
                };
                if self == Operation::ColdClone {
                    server.empty_clone_cache()?;
                } else {
                    // Every row but the cold one measures the steady state: the same clone once
                    // before, unmeasured, on both servers alike.
                    clone(git, &url, extra, &destination)?;
                    reset(scratch)?;
                }
                let sample = server.measure(|| clone(git, &url, extra, &destination))?;
                check_clone(
                    context,
                    &destination,
                    matches!(self, Operation::ColdClone | Operation::FullClone),
                )?;
                sample
            }
            Operation::BundleClone => {
                // Nimbus writes the repository's bundle (unmeasured, as its servers do after
                // pushes); the reference, like every forge running git's own upload-pack, offers
                // none, so the same client command is a plain clone there.
                server.write_bundle(REPOSITORY)?;
                let destination = scratch.join("clone.git");
                let bundled = ["-c", "transfer.bundleURI=true"];
                clone_with(git, &bundled, &url, &[], &destination)?;
                reset(scratch)?;
                let sample =
                    server.measure(|| clone_with(git, &bundled, &url, &[], &destination))?;
                check_clone(context, &destination, true)?;
                sample
            }
            Operation::ConcurrentClones => {
                let destinations: Vec<PathBuf> = (0..CONCURRENT_CLONES)
                    .map(|index| scratch.join(format!("clone-{index}.git")))
                    .collect();
                let sample = server.measure(|| {
                    std::thread::scope(|scope| {
                        let clones: Vec<_> = destinations
                            .iter()
                            .map(|destination| scope.spawn(|| clone(git, &url, &[], destination)))
                            .collect();
                        for handle in clones {
                            handle
                                .join()
                                .map_err(|_| anyhow::anyhow!("a clone panicked"))??;
                        }
                        Ok(())
                    })
                })?;
                for destination in &destinations {
                    check_clone(context, destination, false)?;
                }
                sample
            }
            Operation::Fetch1 | Operation::Fetch100 => {
                let (client, base) = if self == Operation::Fetch1 {
                    (scratch.join("behind-1.git"), &context.fixture.behind_1)
                } else {
                    (scratch.join("behind-100.git"), &context.fixture.behind_100)
                };
                copy_tree(base, &client)?;
                let sample = server.measure(|| fetch_main(git, &client, &url))?;
                let fetched = git.rev_parse(&client, "refs/remotes/origin/main")?;
                ensure!(
                    fetched == context.fixture.main,
                    "fetch from {} ended at {fetched}, not {}",
                    server.kind.label(),
                    context.fixture.main
                );
                sample
            }
            Operation::NoopFetch => {
                let client = &context.fixture.full_client;
                let fetch = || {
                    git.run(
                        Some(client),
                        ["fetch", "-q", &url, "+refs/heads/main:refs/heads/main"],
                        [],
                    )
                    .map(drop)
                };
                // One unmeasured fetch first: the first fetch of the row into this client (both
                // servers share it) took 1.5-2.5 s of wall time with 0.01 s of server CPU, every
                // later one 0.25 s. The row is about answering a fetch with nothing new.
                fetch()?;
                let sample = server.measure(fetch)?;
                ensure!(git.rev_parse(client, "refs/heads/main")? == context.fixture.main);
                sample
            }
            Operation::LsRemote => {
                let url = server.url(MANY_REFS_REPOSITORY);
                let mut lines = 0;
                let sample = server.measure(|| {
                    lines = git.run(None, ["ls-remote", &url], [])?.lines().count();
                    Ok(())
                })?;
                // HEAD, main and the tags.
                ensure!(
                    lines == context.refs + 2,
                    "ls-remote against {} listed {lines} refs, not {}",
                    server.kind.label(),
                    context.refs + 2
                );
                sample
            }
            Operation::Push1 | Operation::Push1000 => {
                let commits = if self == Operation::Push1 { 1 } else { 1000 };
                let branch = format!("push-{commits}-{}-{run}", kind_key(server));
                let client = &context.fixture.full_client;
                let tip = new_commits(git, client, &context.fixture.main, &branch, commits)?;
                let refspec = format!("refs/heads/{branch}");
                let sample = server.measure(|| {
                    git.run(Some(client), ["push", "-q", &url, &refspec], [])
                        .map(drop)
                })?;
                let pushed = remote_ref(git, &url, &refspec)?;
                ensure!(
                    pushed == tip,
                    "{} has {refspec} at {pushed:?} after the push, not {tip}",
                    server.kind.label()
                );
                // Leave the server as it was, so later clones fetch the same objects.
                git.run(
                    Some(client),
                    ["push", "-q", &url, &format!(":{refspec}")],
                    [],
                )?;
                git.run(Some(client), ["update-ref", "-d", &refspec], [])?;
                sample
            }
            Operation::InitialPush => {
                let name = format!("initial-{run}");
                server.create_repository(git, &name)?;
                let target = server.url(&name);
                let sample =
                    server.measure(|| push_everything(git, &context.fixture.source, &target))?;
                let pushed = remote_ref(git, &target, "refs/heads/main")?;
                ensure!(
                    pushed == context.fixture.main,
                    "the initial push left main at {pushed:?} on {}",
                    server.kind.label()
                );
                server.delete_repository(&name)?;
                sample
            }
        };
        reset(scratch)?;
        Ok(sample)
    }
}

fn kind_key(server: &Server) -> &'static str {
    match server.kind {
        crate::servers::Kind::Nimbus => "nimbus",
        crate::servers::Kind::Reference => "git",
    }
}

/// Empties (or makes) the scratch directory.
fn reset(scratch: &Path) -> Result<()> {
    if scratch.exists() {
        std::fs::remove_dir_all(scratch)
            .with_context(|| format!("emptying {}", scratch.display()))?;
    }
    std::fs::create_dir_all(scratch)?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let mut command = Command::new("cp");
    command.arg("-a").arg(from).arg(to);
    let output = command.output().context("running cp")?;
    checked(&command, output).map(drop)
}

fn clone(git: &Git, url: &str, extra: &[&str], destination: &Path) -> Result<()> {
    clone_with(git, &[], url, extra, destination)
}

/// `git CONFIG clone -q --bare EXTRA URL DESTINATION`.
fn clone_with(
    git: &Git,
    config: &[&str],
    url: &str,
    extra: &[&str],
    destination: &Path,
) -> Result<()> {
    let mut args = config.to_vec();
    args.extend_from_slice(&["clone", "-q", "--bare"]);
    args.extend_from_slice(extra);
    args.push(url);
    git.run(None, args, [destination.as_os_str()]).map(drop)
}

fn check_clone(context: &Setup<'_>, clone: &Path, full: bool) -> Result<()> {
    let tip = context.git.rev_parse(clone, "refs/heads/main")?;
    ensure!(
        tip == context.fixture.main,
        "a clone ended with main at {tip}, not {}",
        context.fixture.main
    );
    if context.verify {
        context.git.run(
            Some(clone),
            ["fsck", "--connectivity-only", "--no-progress"],
            [],
        )?;
        if full {
            let tags = context.git.run(Some(clone), ["tag", "--list"], [])?;
            ensure!(
                tags.lines().count() == RELEASE_TAGS,
                "a full clone lacks tags"
            );
        }
    }
    Ok(())
}

/// `git fetch` of the server's `main` into `refs/remotes/origin/main`.
pub fn fetch_main(git: &Git, client: &Path, url: &str) -> Result<()> {
    git.run(
        Some(client),
        [
            "fetch",
            "-q",
            "--no-tags",
            url,
            "+refs/heads/main:refs/remotes/origin/main",
        ],
        [],
    )
    .map(drop)
}

/// Pushes `main` and the release tags of `source` to `url`.
pub fn push_everything(git: &Git, source: &Path, url: &str) -> Result<()> {
    git.run(
        Some(source),
        [
            "push",
            "-q",
            url,
            "refs/heads/main:refs/heads/main",
            "refs/tags/bench/*:refs/tags/bench/*",
        ],
        [],
    )
    .map(drop)
}

/// Pushes `main` and the first `count` (a multiple of 1,000) of the many tags of `source` to `url`, a
/// thousand per push: git's client spends time quadratic in the refs of one push over HTTP (about 35 s of
/// client CPU for 10,000), whichever server it talks to.
pub fn push_many_refs(git: &Git, source: &Path, url: &str, count: usize) -> Result<()> {
    git.run(
        Some(source),
        ["push", "-q", url, "refs/heads/main:refs/heads/main"],
        [],
    )?;
    for thousand in 0..count / 1000 {
        let refspec = format!("refs/tags/many/{thousand}/*:refs/tags/many/{thousand}/*");
        git.run(Some(source), ["push", "-q", url, &refspec], [])?;
    }
    Ok(())
}

/// What `url` has at `reference` (empty when it has nothing there).
fn remote_ref(git: &Git, url: &str, reference: &str) -> Result<String> {
    let listing = git.run(None, ["ls-remote", url, reference], [])?;
    Ok(listing
        .lines()
        .find_map(|line| {
            let (id, name) = line.split_once('\t')?;
            (name == reference).then(|| id.to_owned())
        })
        .unwrap_or_default())
}

/// Makes `count` new commits on `branch` of `client`, starting at `base`; returns the new tip.
fn new_commits(git: &Git, client: &Path, base: &str, branch: &str, count: usize) -> Result<String> {
    let mut importer = git
        .command(Some(client), ["fast-import", "--quiet"], [])
        .stdin(Stdio::piped())
        .spawn()
        .context("starting git fast-import")?;
    let mut stdin = importer.stdin.take().context("fast-import's input")?;
    let mut stream = Vec::new();
    for number in 0..count {
        let message = format!("{branch}: commit {number}\n");
        let content = format!("{branch}\nline written by commit {number}\n");
        let when = 1_800_000_000 + number;
        stream.extend_from_slice(
            format!(
                "commit refs/heads/{branch}\n\
                 author Bench <bench@example.com> {when} +0000\n\
                 committer Bench <bench@example.com> {when} +0000\n\
                 data {}\n{message}",
                message.len()
            )
            .as_bytes(),
        );
        if number == 0 {
            stream.extend_from_slice(format!("from {base}\n").as_bytes());
        }
        stream.extend_from_slice(
            format!(
                "M 100644 inline pushed/{branch}/file{}.txt\ndata {}\n{content}\n",
                number % 50,
                content.len()
            )
            .as_bytes(),
        );
    }
    stdin.write_all(&stream)?;
    drop(stdin);
    let status = importer.wait()?;
    if !status.success() {
        bail!("git fast-import failed making {branch}: {status}");
    }
    git.rev_parse(client, &format!("refs/heads/{branch}"))
}
