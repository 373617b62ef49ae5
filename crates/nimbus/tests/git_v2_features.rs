//! Protocol v2 features the default git client does not use on its own:
//! `sideband-all` (every response section multiplexed on side-band 1) and
//! `wait-for-done` (negotiation without `ready`, used by `push.negotiate`).

mod support;

use support::{Git, shared_server};

/// Runs git with packet tracing into `trace` and returns the trace.
fn traced(git: &Git, dir: &std::path::Path, args: &[&str], extra: &[(&str, &str)]) -> String {
    let trace = dir.join("packet.trace");
    let trace_path = trace.to_str().expect("utf-8 temp path").to_owned();
    let mut env = vec![("GIT_TRACE_PACKET", trace_path.as_str())];
    env.extend_from_slice(extra);
    git.run_with_env(dir, args, &env);
    let text = std::fs::read_to_string(&trace).expect("read the packet trace");
    std::fs::remove_file(&trace).expect("remove the packet trace");
    text
}

#[test]
fn clone_with_sideband_all_multiplexes_every_section() {
    let server = shared_server();
    let git = Git::new(2);
    let name = "v2-sideband-all";
    server.create_repo(name, false);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    git.commit(work.path(), "one", &[("a.txt", "one\n")], 1_700_000_000);
    let head = git.commit(work.path(), "two", &[("b.txt", "two\n")], 1_700_000_100);
    git.run(work.path(), &["push", "-q", &server.push_url(name), "main"]);

    let root = tempfile::tempdir().expect("tempdir");
    let trace = traced(
        &git,
        root.path(),
        &["clone", "-q", &server.url(name), "clone"],
        &[("GIT_TEST_SIDEBAND_ALL", "1")],
    );
    assert!(
        trace.contains("clone> sideband-all"),
        "git did not ask for sideband-all:\n{trace}"
    );
    // The section header itself arrives on band 1.
    assert!(
        trace.contains("clone< \\1packfile"),
        "packfile header not multiplexed:\n{trace}"
    );
    let clone = root.path().join("clone");
    assert_eq!(git.rev_parse(&clone, "HEAD"), head);
    git.fsck(&clone);
}

#[test]
fn push_negotiate_uses_wait_for_done_and_pushes() {
    let server = shared_server();
    let git = Git::new(2);
    let name = "v2-wait-for-done";
    server.create_repo(name, false);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    git.commit(work.path(), "one", &[("a.txt", "one\n")], 1_700_000_000);
    git.run(work.path(), &["push", "-q", &server.push_url(name), "main"]);
    let new = git.commit(work.path(), "two", &[("a.txt", "two\n")], 1_700_000_100);
    let url = server.push_url(name);
    let trace = traced(
        &git,
        work.path(),
        &[
            "-c",
            "push.negotiate=true",
            "push",
            "-q",
            &url,
            "main:refs/heads/negotiated",
        ],
        &[],
    );
    assert!(
        trace.contains("fetch> wait-for-done"),
        "no wait-for-done negotiation:\n{trace}"
    );
    assert!(
        trace.contains("fetch< acknowledgments"),
        "no acknowledgments:\n{trace}"
    );
    assert!(
        !trace.contains("fetch< ready"),
        "ready must not be sent with wait-for-done:\n{trace}"
    );
    let refs = git.ls_remote(&server.url(name), &[]);
    assert!(
        refs.iter()
            .any(|line| line.starts_with(&new) && line.ends_with("refs/heads/negotiated")),
        "{refs:?}"
    );
}
