//! `nimbus repo import` and `nimbus repo export`: a repository made with
//! real git moves in from a bundle and from a `git http-backend` URL, a
//! Nimbus server serves it with identical refs and a clean `git fsck`,
//! exports are bundles git accepts, and bad sources are refused with a
//! message naming the problem and leave no repository behind.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{Git, HttpBackend, NimbusServer};

fn nimbus(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("NIMBUS_LOG", "warn")
        .env_remove("NIMBUS_IMPORT_TOKEN")
        .output()
        .expect("run nimbus")
}

fn ok(data_dir: &Path, args: &[&str]) -> String {
    let output = nimbus(data_dir, args);
    assert!(
        output.status.success(),
        "nimbus {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn fails(data_dir: &Path, args: &[&str]) -> String {
    let output = nimbus(data_dir, args);
    assert!(
        !output.status.success(),
        "nimbus {args:?} should fail, printed {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A repository with two branches merged, a third branch, a lightweight
/// and an annotated tag; HEAD on `main`.
fn make_source(git: &Git, dir: &Path) {
    git.init(dir);
    git.commit(dir, "first", &[("a.txt", "one\n")], 1_700_000_000);
    git.commit(dir, "second", &[("dir/b.txt", "two\n")], 1_700_000_100);
    git.run(dir, &["checkout", "-q", "-b", "feature"]);
    git.commit(dir, "feature work", &[("c.txt", "three\n")], 1_700_000_200);
    git.run(dir, &["checkout", "-q", "main"]);
    git.commit(dir, "main work", &[("a.txt", "one more\n")], 1_700_000_300);
    git.run_with_env(
        dir,
        &["merge", "-q", "--no-ff", "-m", "merge feature", "feature"],
        &[
            ("GIT_AUTHOR_DATE", "1700000400 +0000"),
            ("GIT_COMMITTER_DATE", "1700000400 +0000"),
        ],
    );
    git.run(dir, &["branch", "topic/x", "main~1"]);
    git.run(dir, &["tag", "light", "main~1"]);
    git.annotated_tag(dir, "v1.0", "main", "release 1.0", 1_700_000_500);
}

/// Mirror-clone `url` into a fresh directory, check it with `git fsck
/// --full` and return its refs.
fn mirror_refs(git: &Git, url: &str, into: &Path) -> Vec<String> {
    let target = into.to_str().expect("UTF-8 path");
    git.run(git.home(), &["clone", "-q", "--mirror", url, target]);
    git.fsck(into);
    git.refs(into)
}

fn temp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("nimbus-import-")
        .tempdir()
        .expect("tempdir")
}

#[test]
fn a_bundle_of_branches_tags_and_merges_moves_in_and_back_out() {
    let git = Git::new(2);
    let work = temp();
    let source = work.path().join("source");
    make_source(&git, &source);
    let expected = git.refs(&source);
    let bundle = work.path().join("all.bundle");
    git.run(
        &source,
        &[
            "bundle",
            "create",
            "-q",
            bundle.to_str().expect("UTF-8"),
            "--all",
        ],
    );

    let server = NimbusServer::start();
    let data = server.data_dir();
    let printed = ok(
        &data,
        &[
            "repo",
            "import",
            "moved",
            "--from",
            bundle.to_str().expect("UTF-8"),
        ],
    );
    assert!(printed.contains("imported 'moved'"), "{printed}");
    assert!(printed.contains("default branch main"), "{printed}");
    // The running server sees what the command line imported.
    let served = mirror_refs(&git, &server.url("moved"), &work.path().join("served"));
    assert_eq!(served, expected);

    // Export: git accepts the bundle and clones the same refs from it.
    let exported = work.path().join("exported.bundle");
    let exported_text = exported.to_str().expect("UTF-8");
    ok(
        &data,
        &["repo", "export", "moved", "--output", exported_text],
    );
    git.run(&source, &["bundle", "verify", "-q", exported_text]);
    let from_bundle = mirror_refs(&git, exported_text, &work.path().join("from-bundle"));
    assert_eq!(from_bundle, expected);

    // Round trip: importing the export gives the same repository again.
    ok(&data, &["repo", "import", "again", "--from", exported_text]);
    let again = mirror_refs(&git, &server.url("again"), &work.path().join("again"));
    assert_eq!(again, expected);

    // `-` writes the bundle to standard output.
    let output = nimbus(&data, &["repo", "export", "again", "--output", "-"]);
    assert!(output.status.success());
    assert!(output.stdout.starts_with(b"# v2 git bundle\n"));
    let default_name = work.path().join("again.bundle");
    let status = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .arg("--data-dir")
        .arg(&data)
        .args(["repo", "export", "again"])
        .current_dir(work.path())
        .env("NIMBUS_LOG", "warn")
        .status()
        .expect("run nimbus");
    assert!(status.success());
    git.run(
        &source,
        &[
            "bundle",
            "verify",
            "-q",
            default_name.to_str().expect("UTF-8"),
        ],
    );
}

#[test]
fn a_repository_moves_in_from_a_smart_http_url() {
    let git = Git::new(2);
    let work = temp();
    let source = work.path().join("source");
    make_source(&git, &source);
    // HEAD on a branch other than main, to see it carried over.
    git.run(&source, &["checkout", "-q", "feature"]);
    let backend = HttpBackend::start();
    let remote = backend.create_repo("upstream");
    git.run(
        &source,
        &["push", "-q", "--mirror", &backend.url("upstream")],
    );
    git.run(&remote, &["symbolic-ref", "HEAD", "refs/heads/feature"]);
    // A ref outside branches and tags is not mirrored (`expected` and
    // `served` compare every ref).
    git.run(
        &remote,
        &["update-ref", "refs/pull/1/head", "refs/heads/main"],
    );
    let mut expected = git.refs(&source);
    expected.retain(|line| !line.contains("refs/pull/"));

    let server = NimbusServer::start();
    let data = server.data_dir();
    // Credentials in the URL are used, and never printed.
    let url = backend
        .url("upstream")
        .replace("http://", "http://someone:s3cret-token@");
    let output = nimbus(&data, &["repo", "import", "fromhttp", "--from", &url]);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{printed}");
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(printed.contains("default branch feature"), "{printed}");
    let served = mirror_refs(&git, &server.url("fromhttp"), &work.path().join("served"));
    assert_eq!(served, expected);
}

/// Lists repositories, to check a failure left nothing behind.
fn list(data: &Path) -> String {
    ok(data, &["repo", "list"])
}

#[test]
fn bad_sources_are_named_and_leave_nothing_behind() {
    let git = Git::new(2);
    let work = temp();
    let source = work.path().join("source");
    make_source(&git, &source);
    let bundle = work.path().join("all.bundle");
    git.run(
        &source,
        &[
            "bundle",
            "create",
            "-q",
            bundle.to_str().expect("UTF-8"),
            "--all",
        ],
    );
    let bundle_bytes = std::fs::read(&bundle).expect("read the bundle");
    let write = |name: &str, bytes: &[u8]| -> PathBuf {
        let path = work.path().join(name);
        std::fs::write(&path, bytes).expect("write a test file");
        path
    };
    let not_a_bundle = write("notes.txt", b"just some text\n");
    let truncated = write(
        "truncated.bundle",
        &bundle_bytes[..bundle_bytes.len() * 2 / 3],
    );
    let header_only = {
        let end = bundle_bytes
            .windows(2)
            .position(|w| w == b"\n\n")
            .expect("a header end")
            + 2;
        write("header-only.bundle", &bundle_bytes[..end])
    };
    let bad_name = {
        let text = bundle_bytes.clone();
        let position = text
            .windows(b"refs/heads/feature".len())
            .position(|w| w == b"refs/heads/feature")
            .expect("the feature branch is listed");
        let mut bad = text;
        bad[position..position + b"refs/heads/feature".len()]
            .copy_from_slice(b"refs/heads/fe..ure");
        write("bad-name.bundle", &bad)
    };
    let incremental = work.path().join("incremental.bundle");
    git.run(
        &source,
        &[
            "bundle",
            "create",
            "-q",
            incremental.to_str().expect("UTF-8"),
            "main~1..main",
        ],
    );
    let missing = work.path().join("no-such.bundle");
    let nothing_listening = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        format!("http://{address}/repo.git")
    };
    let backend = HttpBackend::start();
    let absent_repo = backend.url("absent");

    let data_dir = temp();
    let data = data_dir.path();
    ok(data, &["repo", "create", "taken"]);
    let before = list(data);
    let path = |p: &Path| p.to_str().expect("UTF-8").to_owned();
    let cases: Vec<(String, String, &str)> = vec![
        ("a".into(), path(&not_a_bundle), "not a git bundle"),
        ("b".into(), path(&truncated), "importing 'b' failed"),
        ("c".into(), path(&header_only), "the pack is missing"),
        ("d".into(), path(&bad_name), "invalid ref name"),
        ("e".into(), path(&incremental), "incremental bundle"),
        ("f".into(), path(&missing), "cannot open the bundle"),
        ("g".into(), nothing_listening, "cannot reach"),
        ("h".into(), absent_repo, "no repository at"),
        ("taken".into(), path(&bundle), "already exists"),
        (
            "Bad Name".into(),
            path(&bundle),
            "repository name contains ' '",
        ),
    ];
    for (name, from, expected) in &cases {
        let message = fails(data, &["repo", "import", name, "--from", from]);
        assert!(
            message.contains(expected),
            "importing {from} as {name}: {message:?} should contain {expected:?}"
        );
        assert_eq!(list(data), before, "after importing {from} as {name}");
    }
    // The existing repository is untouched, and empty: exporting says so.
    let message = fails(data, &["repo", "export", "taken"]);
    assert!(message.contains("is empty"), "{message}");
    let message = fails(data, &["repo", "export", "nope"]);
    assert!(message.contains("not found"), "{message}");
}
