//! Bundle URIs (protocol v2 `bundle-uri`) with real git clients: a clone
//! with `transfer.bundleURI` downloads the repository's bundle, then
//! fetches only the commits the bundle lacks. On the local object store
//! the bundle is served by Nimbus under the repository's URL, with the
//! clone's credentials; on S3 (the cloud backend) by a presigned URL.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};
use support::{Git, NimbusServer, OWNER_TOKEN, ServerOptions, basic_authorization};

/// The name (without `.bundle`) of every bundle stored for any repository.
fn stored_bundles(server: &NimbusServer) -> Vec<String> {
    server
        .stored_keys("repos/")
        .iter()
        .filter_map(|key| {
            let (_, file) = key.rsplit_once("/bundles/")?;
            file.strip_suffix(".bundle").map(str::to_owned)
        })
        .collect()
}

/// Waits for the server to write a bundle in the background.
fn wait_for_bundle(server: &NimbusServer) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(name) = stored_bundles(server).pop() {
            return name;
        }
        assert!(
            Instant::now() < deadline,
            "no bundle was written after the push\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A server with `env` on top of the test process's environment.
fn server_with(env: &[(&str, &str)]) -> NimbusServer {
    NimbusServer::start_with(ServerOptions {
        env: env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        ..ServerOptions::default()
    })
}

/// Pushes `source`'s `HEAD` to `repo`'s `main` as the owner; the pushed id.
fn push_main(git: &Git, server: &NimbusServer, source: &Path, repo: &str) -> String {
    git.run(
        source,
        &["push", "-q", &server.push_url(repo), "HEAD:refs/heads/main"],
    );
    git.rev_parse(source, "HEAD")
}

/// A repository `source` in `work` with one commit, pushed to `repo`; its id.
fn push_one_commit(git: &Git, server: &NimbusServer, work: &Path, repo: &str) -> String {
    let source = work.join("source");
    git.init(&source);
    git.commit(&source, "first", &[("a.txt", b"a".to_vec())], 1_700_000_000);
    push_main(git, server, &source, repo)
}

/// Whether the protocol v2 capabilities of `url` offer `bundle-uri`.
fn advertises_bundle_uri(git: &Git, work: &Path, url: &str) -> bool {
    let traced = git.output_with_env(work, &["ls-remote", url], &[("GIT_TRACE_PACKET", "1")]);
    assert!(traced.status.success(), "{}", traced.stderr);
    traced
        .stderr
        .lines()
        .any(|line| line.ends_with("< bundle-uri"))
}

/// `git clone` with bundle URIs enabled and packets traced; the clone's
/// directory and the URIs the server advertised.
fn clone_with_bundles(git: &Git, work: &Path, url: &str, name: &str) -> Vec<String> {
    let output = git.output_with_env(
        work,
        &["-c", "transfer.bundleURI=true", "clone", url, name],
        &[("GIT_TRACE_PACKET", "1")],
    );
    assert!(
        output.status.success(),
        "clone with bundle URIs failed:\n{}",
        output.stderr
    );
    output
        .stderr
        .lines()
        .filter_map(|line| {
            // `clone< bundle.ID.uri=URI` (the prefix names the command).
            let (_, packet) = line.split_once("< ")?;
            let (key, uri) = packet.split_once('=')?;
            (key.starts_with("bundle.") && key.ends_with(".uri")).then(|| uri.to_owned())
        })
        .collect()
}

/// The `refs/bundles/` refs git wrote from the bundles it unbundled.
fn bundle_refs(git: &Git, clone: &Path) -> Vec<String> {
    git.run(
        clone,
        &[
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            "refs/bundles/",
        ],
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// The object count of the last pack the server sent for `repo`.
fn last_sent_objects(server: &NimbusServer, repo: &str) -> u64 {
    let log = server.full_log();
    let line = log
        .lines()
        .rev()
        .find(|line| line.contains("sent pack") && line.contains(&format!("repo={repo} ")))
        .unwrap_or_else(|| panic!("no pack was sent for {repo}\n{}", server.logs()));
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("objects="))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no object count in {line:?}"))
}

#[test]
fn a_clone_downloads_the_bundle_then_fetches_only_what_it_lacks() {
    let server = server_with(&[("NIMBUS_BUNDLE_MIN_MIB", "0")]);
    let git = Git::new(2);
    server.create_repo("bundled", false);
    let work = tempfile::tempdir().expect("tempdir");
    let source = work.path().join("source");
    git.init(&source);
    for i in 0..4u64 {
        let content = support::pseudo_random_bytes(i, 20_000);
        git.commit(
            &source,
            &format!("commit {i}"),
            &[(format!("file{i}.bin").as_str(), content)],
            1_700_000_000 + i,
        );
    }
    let bundled_tip = push_main(&git, &server, &source, "bundled");
    // The push wrote the bundle in the background.
    let bundle = wait_for_bundle(&server);

    // A commit the bundle does not hold: the clone fetches it.
    git.commit(
        &source,
        "after the bundle",
        &[("file0.bin", b"changed".to_vec())],
        1_700_001_000,
    );
    let tip = push_main(&git, &server, &source, "bundled");

    assert!(
        advertises_bundle_uri(&git, work.path(), &server.url("bundled")),
        "protocol v2 capabilities lack bundle-uri"
    );

    let uris = clone_with_bundles(&git, work.path(), &server.url("bundled"), "clone");
    let clone = work.path().join("clone");
    assert_eq!(uris.len(), 1, "one bundle is advertised: {uris:?}");
    if support::cloud::cloud_backend_requested() {
        assert!(
            uris[0].starts_with("http") && uris[0].contains("X-Amz-Signature="),
            "on S3 the bundle is advertised by a presigned URL: {}",
            uris[0]
        );
        assert!(uris[0].contains(&format!("/bundles/{bundle}.bundle")));
    } else {
        assert_eq!(uris[0], format!("bundles/{bundle}.bundle"));
        let log = server.full_log();
        assert!(
            log.contains(&format!(
                "path=/bundled.git/bundles/{bundle}.bundle status=200"
            )),
            "the clone did not download the bundle from Nimbus\n{}",
            server.logs()
        );
    }
    assert_eq!(
        bundle_refs(&git, &clone),
        [format!("refs/bundles/main {bundled_tip}")]
    );
    assert_eq!(git.rev_parse(&clone, "HEAD"), tip);
    git.fsck(&clone);
    // The fetch after the bundle sent the new commit, its tree and its blob.
    assert_eq!(last_sent_objects(&server, "bundled"), 3);

    // Without transfer.bundleURI, nothing changes for the client.
    git.run(
        work.path(),
        &["clone", "-q", &server.url("bundled"), "plain"],
    );
    let plain = work.path().join("plain");
    assert!(bundle_refs(&git, &plain).is_empty());
    assert_eq!(git.rev_parse(&plain, "HEAD"), tip);
}

#[test]
fn bundles_are_written_on_request_and_served_only_to_readers() {
    let server = server_with(&[("NIMBUS_BUNDLE_REFRESH", "0")]);
    let git = Git::new(2);
    server.create_repo("guarded", true);
    server.create_repo("empty", false);
    let work = tempfile::tempdir().expect("tempdir");
    let tip = push_one_commit(&git, &server, work.path(), "guarded");

    // No bundle yet (automatic bundles are off): the list is empty and the
    // clone goes on as usual.
    let uris = clone_with_bundles(&git, work.path(), &server.push_url("guarded"), "before");
    assert!(uris.is_empty(), "no bundle exists yet: {uris:?}");
    let before = work.path().join("before");
    assert!(bundle_refs(&git, &before).is_empty());
    assert_eq!(git.rev_parse(&before, "HEAD"), tip);
    assert!(stored_bundles(&server).is_empty());

    let text = |output: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let written = server.cli(&["repo", "bundle", "guarded"]);
    assert!(written.status.success(), "{}", text(&written));
    assert!(
        text(&written).contains("wrote bundle"),
        "{}",
        text(&written)
    );
    let again = server.cli(&["repo", "bundle", "guarded"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("already holds the current refs"),
        "{}",
        text(&again)
    );
    let empty = server.cli(&["repo", "bundle", "empty"]);
    assert!(!empty.status.success());
    assert!(
        text(&empty).contains("'empty' is empty"),
        "{}",
        text(&empty)
    );
    let bundles = stored_bundles(&server);
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    let bundle = &bundles[0];

    // The clone's credentials reach the bundle (relative URIs keep them).
    clone_with_bundles(&git, work.path(), &server.push_url("guarded"), "after");
    let after = work.path().join("after");
    assert_eq!(
        bundle_refs(&git, &after),
        [format!("refs/bundles/main {tip}")]
    );
    assert_eq!(git.rev_parse(&after, "HEAD"), tip);
    git.fsck(&after);

    // Served by Nimbus to readers only.
    let path = format!("/guarded.git/bundles/{bundle}.bundle");
    let owner = basic_authorization("x", OWNER_TOKEN);
    let served = server.request("GET", &path, Some(&owner), None);
    assert_eq!(served.status, 200, "{}", served.body);
    assert!(
        served.body.starts_with("# v2 git bundle\n"),
        "{:?}",
        &served.body[..served.body.len().min(200)]
    );
    assert_eq!(
        served.header("content-type"),
        Some("application/x-git-bundle")
    );
    let anonymous = server.request("GET", &path, None, None);
    assert!(
        matches!(anonymous.status, 401 | 404),
        "an anonymous download of a private repository's bundle got {}",
        anonymous.status
    );
    assert!(!anonymous.body.contains("git bundle"));
    for missing in [
        "/guarded.git/bundles/1-0123456789abcdef0123456789abcdef.bundle",
        "/guarded.git/bundles/..%2F..%2Fnimbus.db.bundle",
        "/guarded.git/bundles/notabundle.bundle",
    ] {
        let response = server.request("GET", missing, Some(&owner), None);
        assert_eq!(response.status, 404, "{missing}: {}", response.body);
        assert!(response.body.contains("has no bundle"), "{}", response.body);
    }
}

#[test]
fn bundle_uris_can_be_turned_off() {
    let server = server_with(&[
        ("NIMBUS_BUNDLE_URI", "false"),
        ("NIMBUS_BUNDLE_MIN_MIB", "0"),
    ]);
    let git = Git::new(2);
    server.create_repo("plain", false);
    let work = tempfile::tempdir().expect("tempdir");
    push_one_commit(&git, &server, work.path(), "plain");
    assert!(
        !advertises_bundle_uri(&git, work.path(), &server.url("plain")),
        "bundle-uri is advertised although turned off"
    );
    let uris = clone_with_bundles(&git, work.path(), &server.url("plain"), "clone");
    assert!(uris.is_empty());
    assert!(stored_bundles(&server).is_empty());
}
