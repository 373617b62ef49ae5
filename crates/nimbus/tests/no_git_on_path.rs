//! Nimbus speaks git itself: with nothing on the server's `PATH` (no git binary), clones, fetches and pushes still work.

mod support;

use std::sync::OnceLock;

use support::{
    DAY, EPOCH, Git, NimbusServer, ServerOptions, ServerPath, find_on_path, git_binary,
    protocol_tests, repo_name,
};

protocol_tests!(clone_fetch_and_push_work_without_git_on_the_server_path);

/// One server for this test binary whose `PATH` is an empty directory.
fn server_without_git() -> &'static NimbusServer {
    static SERVER: OnceLock<NimbusServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        // The client's git is found before anything changes, and used by absolute path.
        assert!(git_binary().is_absolute());
        assert!(
            find_on_path("git").is_some(),
            "the test client needs git on PATH"
        );
        NimbusServer::start_with(ServerOptions {
            path: ServerPath::EmptyDirectory,
            ..ServerOptions::default()
        })
    })
}

fn clone_fetch_and_push_work_without_git_on_the_server_path(protocol: u8) {
    let server = server_without_git();
    let _logs = server.log_guard();
    let name = repo_name("no-git", protocol);
    server.create_repo(&name, false);
    let git = Git::new(protocol);
    let work = tempfile::tempdir().expect("create a work directory");
    let alice = work.path().join("alice");
    git.init(&alice);
    git.run(
        &alice,
        &["remote", "add", "origin", &server.push_url(&name)],
    );
    git.linear_history(&alice, "no-git", 3);
    git.run(&alice, &["push", "-q", "origin", "main"]);

    git.run(work.path(), &["clone", "-q", &server.url(&name), "bob"]);
    let bob = work.path().join("bob");
    assert_eq!(git.rev_parse(&bob, "HEAD"), git.rev_parse(&alice, "HEAD"));

    let newer = git.commit(
        &alice,
        "newer",
        &[("log.txt", "rewritten\n")],
        EPOCH + 10 * DAY,
    );
    git.annotated_tag(&alice, "v1", &newer, "v1", EPOCH + 10 * DAY);
    git.run(&alice, &["push", "-q", "origin", "main", "v1"]);
    git.run(&bob, &["pull", "-q", "--ff-only"]);
    assert_eq!(git.rev_parse(&bob, "HEAD"), newer);
    assert_eq!(git.rev_parse(&bob, "v1"), git.rev_parse(&alice, "v1"));
    git.fsck(&bob);
    git.fsck(&alice);
}

#[test]
fn server_process_path_holds_no_git() {
    let server = server_without_git();
    let environment = std::fs::read(format!("/proc/{}/environ", server.pid()))
        .expect("read the server's environment from /proc");
    let path = environment
        .split(|byte| *byte == 0)
        .find_map(|variable| variable.strip_prefix(b"PATH="))
        .expect("the server has a PATH");
    let path = std::str::from_utf8(path).expect("the PATH is UTF-8");
    for directory in std::env::split_paths(path) {
        let entries = std::fs::read_dir(&directory)
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(
            entries,
            0,
            "{} on the server's PATH is not empty",
            directory.display()
        );
    }
}
