//! The repository pages over plain HTTP (issue 6): what they show, that
//! user content is escaped and never run, odd paths and files, and that a
//! private repository stays hidden. The same pages in a real browser:
//! `web_browser.rs`.

mod support;

use support::{Git, NimbusServer, OWNER_TOKEN};

fn get(server: &NimbusServer, path: &str) -> support::ApiResponse {
    server.request("GET", path, None, None)
}

fn page(server: &NimbusServer, path: &str) -> String {
    let response = get(server, path);
    assert_eq!(response.status, 200, "GET {path}: {}", response.body);
    assert!(
        response
            .header("content-security-policy")
            .is_some_and(|csp| csp.contains("default-src 'none'")),
        "{path} has a CSP: {:?}",
        response.headers
    );
    response.body
}

/// A repository with the files the pages must cope with, pushed to `name`.
fn push_fixture(
    server: &NimbusServer,
    git: &Git,
    dir: &std::path::Path,
    name: &str,
) -> (String, String) {
    git.init(dir);
    let long_line = "x".repeat(20_000);
    let big: String = (0..60_000)
        .map(|n| format!("line {n} of a big file\n"))
        .collect();
    let first = git.commit(
        dir,
        "first",
        &[
            ("README.md", "# Fixture\n\nSee [the guide](docs/guide.md).\n\n<script>alert('readme')</script>\n\n[bad](javascript:alert(1))\n"),
            ("docs/guide.md", "one\ntwo\nthree\n"),
            ("docs/with space.txt", "spaced\n"),
            ("evil<b>.html", "<html><script>alert('html')</script></html>\n"),
            ("image.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"></svg>\n"),
            ("long.txt", long_line.as_str()),
            ("big.txt", big.as_str()),
        ],
        1_700_000_000,
    );
    std::fs::write(dir.join("blob.bin"), b"bin\0ary\x01\x02").expect("write");
    git.run(dir, &["add", "blob.bin"]);
    let second = git.commit(
        dir,
        "second <script>alert('message')</script>",
        &[("docs/guide.md", "one\n2\nthree\nfour\n")],
        1_700_000_100,
    );
    git.run(
        dir,
        &["push", "-q", &server.push_url(name), "HEAD:refs/heads/main"],
    );
    git.run(
        dir,
        &[
            "push",
            "-q",
            &server.push_url(name),
            "HEAD~1:refs/heads/feature/x",
        ],
    );
    git.run(dir, &["tag", "v1.0", "HEAD~1"]);
    git.run(
        dir,
        &["push", "-q", &server.push_url(name), "refs/tags/v1.0"],
    );
    (first, second)
}

#[test]
fn pages_show_the_repository_and_escape_everything() {
    let server = NimbusServer::start();
    server.create_repo("fixture", false);
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("tempdir");
    let (first, second) = push_fixture(&server, &git, work.path(), "fixture");

    // Dashboard and home: files, last commit, rendered README.
    let dashboard = page(&server, "/");
    assert!(dashboard.contains("href=\"/fixture\""), "{dashboard}");
    let home = page(&server, "/fixture");
    assert!(home.contains("<title>fixture · Nimbus</title>"), "{home}");
    for needle in [
        "href=\"/fixture/tree/main/docs\"",
        "href=\"/fixture/blob/main/README.md\"",
        "<h1>Fixture</h1>",
        "href=\"/fixture/blob/main/docs/guide.md\"",
        "fixture.git",
    ] {
        assert!(home.contains(needle), "{needle} in {home}");
    }
    // The README's script and javascript: link are gone; the message escaped.
    assert!(
        !home.contains("alert('readme')") && !home.contains("javascript:"),
        "{home}"
    );
    assert!(!home.contains("<script>alert('message')"), "{home}");
    assert!(home.contains("second &lt;script&gt;"), "{home}");

    // A tree, a branch with a slash, a file name with a space.
    let docs = page(&server, "/fixture/tree/feature/x/docs");
    assert!(
        docs.contains("href=\"/fixture/blob/feature/x/docs/with%20space.txt\""),
        "{docs}"
    );
    let spaced = page(&server, "/fixture/blob/feature/x/docs/with%20space.txt");
    assert!(spaced.contains("spaced"), "{spaced}");

    // A file: numbered, linkable lines.
    let guide = page(&server, "/fixture/blob/main/docs/guide.md");
    assert!(guide.contains("id=\"L4\""), "{guide}");
    assert!(guide.contains("href=\"#L2\""), "{guide}");
    assert!(guide.contains(">four<"), "{guide}");
    // The older version by commit id.
    let old = page(&server, &format!("/fixture/blob/{first}/docs/guide.md"));
    assert!(old.contains(">two<") && !old.contains(">four<"), "{old}");

    // Odd files: a file name with markup, a very long line, a binary, a big one.
    let tree = page(&server, "/fixture/tree/main");
    assert!(
        tree.contains("evil&lt;b&gt;.html") && !tree.contains("evil<b>"),
        "{tree}"
    );
    let long = page(&server, "/fixture/blob/main/long.txt");
    assert!(long.contains(&"x".repeat(20_000)));
    let binary = page(&server, "/fixture/blob/main/blob.bin");
    assert!(binary.contains("Binary file not shown"), "{binary}");
    let big = page(&server, "/fixture/blob/main/big.txt");
    assert!(big.contains("id=\"truncated\""), "big files are cut");
    assert!(big.contains("href=\"/fixture/raw/main/big.txt\""));
    assert!(
        big.len() < 4 << 20,
        "the page stays bounded: {} bytes",
        big.len()
    );

    // Raw: the bytes, never as HTML or SVG that could run.
    for (path, kind) in [
        (
            "/fixture/raw/main/evil%3Cb%3E.html",
            "text/plain; charset=utf-8",
        ),
        ("/fixture/raw/main/image.svg", "text/plain; charset=utf-8"),
        ("/fixture/raw/main/blob.bin", "application/octet-stream"),
    ] {
        let raw = get(&server, path);
        assert_eq!(raw.status, 200, "{path}: {}", raw.body);
        assert_eq!(raw.header("content-type"), Some(kind), "{path}");
        assert_eq!(raw.header("x-content-type-options"), Some("nosniff"));
        assert!(
            raw.header("content-security-policy")
                .is_some_and(|csp| csp.starts_with("sandbox"))
        );
    }
    let big_raw = get(&server, "/fixture/raw/main/big.txt");
    assert!(big_raw.body.ends_with("line 59999 of a big file\n"));
    let download = get(&server, "/fixture/raw/main/docs/guide.md?download=1");
    assert!(
        download
            .header("content-disposition")
            .is_some_and(|d| d.starts_with("attachment"))
    );

    // History and a commit's diff.
    let commits = page(&server, "/fixture/commits/main");
    assert!(
        commits.contains(&format!("href=\"/fixture/commit/{second}\"")),
        "{commits}"
    );
    assert!(
        commits.contains(&format!("href=\"/fixture/commit/{first}\"")),
        "{commits}"
    );
    let history = page(&server, "/fixture/commits/main/docs/with%20space.txt");
    assert!(
        history.contains(&first) && !history.contains(&format!("/commit/{second}\"")),
        "{history}"
    );
    let commit = page(&server, &format!("/fixture/commit/{second}"));
    for needle in [
        "docs/guide.md",
        "@@ -1,3 +1,4 @@",
        "-two",
        "+2",
        "+four",
        "blob.bin",
        "Binary file.",
    ] {
        assert!(commit.contains(needle), "{needle} in {commit}");
    }
    let short = page(&server, &format!("/fixture/commit/{}", &second[..8]));
    assert!(short.contains(&second));

    // Branches, tags and comparisons.
    let branches = page(&server, "/fixture/branches");
    assert!(
        branches.contains("href=\"/fixture/tree/feature/x\"")
            && branches.contains("href=\"/fixture/tree/main\""),
        "{branches}"
    );
    assert!(
        branches.contains("href=\"/fixture/compare/main...feature/x\""),
        "{branches}"
    );
    let tags = page(&server, "/fixture/tags");
    assert!(tags.contains("href=\"/fixture/tree/v1.0\""), "{tags}");
    let ahead = page(&server, "/fixture/compare/feature/x...main");
    assert!(ahead.contains("1 commit, 2 changed files"), "{ahead}");
    assert!(
        ahead.contains(&format!("/fixture/commit/{second}")) && ahead.contains("+four"),
        "{ahead}"
    );
    let behind = page(&server, "/fixture/compare/main...v1.0");
    assert!(behind.contains("0 commits, 0 changed files"), "{behind}");

    // Bad paths and names: a clear 404, never a panic.
    for path in [
        "/fixture/blob/main/../../etc/passwd",
        "/fixture/blob/main/docs/%2e%2e/%2e%2e/x",
        "/fixture/blob/main/nothing",
        "/fixture/tree/no-such-branch",
        "/fixture/blob/main/docs",
        "/fixture/commit/0000000000000000000000000000000000000000",
        "/fixture/raw/main/%ff",
        "/fixture/compare/main..feature/x",
        "/fixture/compare/main...nothing",
        "/fixture/compare/...main",
    ] {
        let response = get(&server, path);
        assert_eq!(response.status, 404, "{path}: {}", response.body);
    }
}

#[test]
fn private_repositories_stay_hidden() {
    let server = NimbusServer::start();
    server.create_repo("secret", true);
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    git.commit(
        work.path(),
        "hidden",
        &[("a.txt", "classified")],
        1_700_000_000,
    );
    git.run(
        work.path(),
        &[
            "push",
            "-q",
            &server.push_url("secret"),
            "HEAD:refs/heads/main",
        ],
    );

    assert!(!page(&server, "/").contains("secret"));
    for path in [
        "/secret",
        "/secret/blob/main/a.txt",
        "/secret/raw/main/a.txt",
        "/secret/commits/main",
    ] {
        // The client follows the redirect to the sign-in form.
        let response = get(&server, path);
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        assert!(
            response.body.contains("name=\"password\""),
            "{path}: {}",
            response.body
        );
        assert!(!response.body.contains("classified"));
    }
    // The API token does not sign in to pages (browsers use the session).
    let with_token = server.request(
        "GET",
        "/secret/raw/main/a.txt",
        Some(&format!("Bearer {OWNER_TOKEN}")),
        None,
    );
    assert!(
        !with_token.body.contains("classified"),
        "{}",
        with_token.body
    );
    // A missing repository looks the same as a private one.
    let missing = get(&server, "/nothing-here");
    assert!(
        missing.body.contains("name=\"password\""),
        "{}",
        missing.body
    );
}

#[test]
fn the_editor_refuses_readers_forgeries_and_empty_commits() {
    use support::browser::{Browser, accept, invite};
    const PASSWORD: &str = "quiet-harbour-lanterns-glow";
    let server = NimbusServer::start();
    server.create_repo("shared", false);
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    let head = git.commit(work.path(), "Start", &[("a.txt", "one\n")], 1_700_000_000);
    git.run(
        work.path(),
        &[
            "push",
            "-q",
            &server.push_url("shared"),
            "HEAD:refs/heads/main",
        ],
    );

    // Anonymous visitors are sent to sign in; readers are refused.
    let anonymous = get(&server, "/shared/edit/main/a.txt");
    assert!(
        anonymous.body.contains("name=\"password\""),
        "{}",
        anonymous.body
    );
    let mut reader = Browser::new(server.base_url());
    let invitation = invite(&server, Some(("shared", "read")));
    assert_eq!(
        accept(&mut reader, &invitation, "rita", PASSWORD).status,
        303
    );
    assert_eq!(reader.get("/shared/edit/main/a.txt").status, 403);
    assert!(
        !reader
            .get("/shared/blob/main/a.txt")
            .body
            .contains("id=\"edit\"")
    );

    let mut writer = Browser::new(server.base_url());
    let invitation = invite(&server, Some(("shared", "write")));
    assert_eq!(
        accept(&mut writer, &invitation, "wes", PASSWORD).status,
        303
    );
    assert!(
        writer
            .get("/shared/blob/main/a.txt")
            .body
            .contains("id=\"edit\"")
    );
    let form = writer.get("/shared/edit/main/a.txt");
    assert_eq!(form.status, 200, "{}", form.body);
    let csrf = form.hidden("csrf");
    assert_eq!(form.hidden("parent"), head);
    let commit = |browser: &mut Browser, fields: &[(&str, &str)], extra: &[(&str, &str)]| {
        browser.post_form_with("/shared/edit/main/a.txt", fields, extra)
    };
    // A wrong CSRF token, another site, nothing changed, a tag, a bad path.
    let forged = commit(
        &mut writer,
        &[
            ("csrf", "nope"),
            ("parent", &head),
            ("content", "x"),
            ("message", "m"),
        ],
        &[],
    );
    assert_eq!(forged.status, 403, "{}", forged.body);
    let cross = commit(
        &mut writer,
        &[
            ("csrf", &csrf),
            ("parent", &head),
            ("content", "x"),
            ("message", "m"),
        ],
        &[("Origin", "http://evil.test")],
    );
    assert_eq!(cross.status, 403, "{}", cross.body);
    let same = commit(
        &mut writer,
        &[
            ("csrf", &csrf),
            ("parent", &head),
            ("content", "one\r\n"),
            ("message", "m"),
        ],
        &[],
    );
    assert_eq!(same.status, 422, "{}", same.body);
    assert!(same.body.contains("Nothing changed"), "{}", same.body);
    let no_message = commit(
        &mut writer,
        &[
            ("csrf", &csrf),
            ("parent", &head),
            ("content", "two\n"),
            ("message", ""),
        ],
        &[],
    );
    assert_eq!(no_message.status, 422, "{}", no_message.body);
    let new_form = writer.get("/shared/new/main");
    assert_eq!(new_form.status, 200, "{}", new_form.body);
    let bad_name = writer.post_form(
        "/shared/new/main",
        &[
            ("csrf", &csrf),
            ("parent", &head),
            ("filename", "../escape.txt"),
            ("content", "x"),
            ("message", "m"),
        ],
    );
    assert_eq!(bad_name.status, 422, "{}", bad_name.body);
    let dot_git = writer.post_form(
        "/shared/new/main",
        &[
            ("csrf", &csrf),
            ("parent", &head),
            ("filename", ".git/config"),
            ("content", "x"),
            ("message", "m"),
        ],
    );
    assert_eq!(dot_git.status, 422, "{}", dot_git.body);
    // Nothing of that reached the branch.
    let remote = git.ls_remote(&server.url("shared"), &["refs/heads/main"]);
    assert!(
        remote.iter().all(|line| line.starts_with(&head)),
        "{remote:?}"
    );

    // A real edit, with the textarea's CRLF line endings made LF.
    let done = commit(
        &mut writer,
        &[
            ("csrf", &csrf),
            ("parent", &head),
            ("content", "one\r\ntwo\r\n"),
            ("message", "Add two"),
        ],
        &[],
    );
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location(), "/shared/blob/main/a.txt");
    git.run(work.path(), &["pull", "-q", &server.url("shared"), "main"]);
    assert_eq!(
        std::fs::read_to_string(work.path().join("a.txt")).expect("read"),
        "one\ntwo\n"
    );
    // The push went through the outbox like any other.
    let events = server.request(
        "GET",
        "/api/v1/audit?action=push",
        Some(&format!("Bearer {OWNER_TOKEN}")),
        None,
    );
    assert!(
        events.body.contains("web editor: refs/heads/main"),
        "{}",
        events.body
    );
}

/// The bytes at `path` (the API helper reads text).
fn download(server: &NimbusServer, path: &str) -> (String, Vec<u8>) {
    let mut response = ureq::get(&format!("{}{path}", server.base_url()))
        .call()
        .unwrap_or_else(|err| panic!("GET {path}: {err}"));
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()
        .expect("read the body");
    (kind, bytes)
}

/// Unpack `archive` (`tar.gz` or `zip`) into a new directory.
fn unpack(archive: &[u8], format: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(format!("archive.{format}"));
    std::fs::write(&file, archive).expect("write");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let status = match format {
        "tar.gz" => std::process::Command::new("tar")
            .arg("-xzf")
            .arg(&file)
            .arg("-C")
            .arg(&out)
            .status(),
        _ => std::process::Command::new("python3")
            .args([
                "-c",
                "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])",
            ])
            .arg(&file)
            .arg(&out)
            .status(),
    }
    .expect("run the unpacker");
    assert!(status.success(), "unpacking the {format} archive failed");
    std::fs::remove_file(&file).expect("remove");
    dir
}

/// Every file under `root` with its content and whether it is executable.
fn files(root: &std::path::Path) -> Vec<(String, Vec<u8>, bool)> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let executable = std::fs::metadata(&path)
                    .expect("metadata")
                    .permissions()
                    .mode()
                    & 0o111
                    != 0;
                let name = path
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                found.push((name, std::fs::read(&path).expect("read"), executable));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn archives_hold_what_git_archive_holds() {
    use std::os::unix::fs::PermissionsExt;
    let server = NimbusServer::start();
    server.create_repo("packed", false);
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("tempdir");
    let (_, main) = push_fixture(&server, &git, work.path(), "packed");
    let tool = work.path().join("tools/run.sh");
    std::fs::create_dir_all(tool.parent().expect("parent")).expect("mkdir");
    std::fs::write(&tool, "#!/bin/sh\necho run\n").expect("write");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    git.run(work.path(), &["add", "tools/run.sh"]);
    let feature = git.commit(
        work.path(),
        "A tool",
        &[("tools/README", "tools\n")],
        1_700_000_300,
    );
    git.run(
        work.path(),
        &[
            "push",
            "-q",
            &server.push_url("packed"),
            "HEAD:refs/heads/feature/y",
        ],
    );

    // Server revisions, and the same commits in the work tree (whose own
    // `main` has the tool commit too).
    for (rev, local, prefix) in [
        ("main", main.as_str(), "packed-main"),
        ("feature/y", feature.as_str(), "packed-feature-y"),
        ("v1.0", "v1.0", "packed-v1.0"),
    ] {
        for format in ["tar.gz", "zip"] {
            let (kind, ours) = download(&server, &format!("/packed/archive/{rev}.{format}"));
            assert_eq!(
                kind,
                if format == "zip" {
                    "application/zip"
                } else {
                    "application/gzip"
                }
            );
            let reference = std::process::Command::new(support::git_binary())
                .current_dir(work.path())
                .args([
                    "archive",
                    &format!("--format={format}"),
                    &format!("--prefix={prefix}/"),
                    local,
                ])
                .output()
                .expect("git archive");
            assert!(reference.status.success());
            let ours = unpack(&ours, format);
            let theirs = unpack(&reference.stdout, format);
            let ours_files = files(ours.path());
            let theirs_files = files(theirs.path());
            assert!(!ours_files.is_empty());
            let names = |files: &[(String, Vec<u8>, bool)]| -> Vec<(String, bool)> {
                files
                    .iter()
                    .map(|(name, _, exec)| (name.clone(), *exec))
                    .collect()
            };
            assert_eq!(names(&ours_files), names(&theirs_files), "{rev}.{format}");
            for (ours, theirs) in ours_files.iter().zip(&theirs_files) {
                assert!(ours.1 == theirs.1, "{rev}.{format}: {} differs", ours.0);
            }
        }
    }
    let missing = get(&server, "/packed/archive/nothing.zip");
    assert_eq!(missing.status, 404);
    let no_format = get(&server, "/packed/archive/main.rar");
    assert_eq!(no_format.status, 404);
}

#[test]
fn expensive_pages_are_limited_for_anonymous_visitors_only() {
    use support::browser::{Browser, accept, invite};
    let server = NimbusServer::start_with(support::ServerOptions {
        env: vec![("NIMBUS_ANONYMOUS_PAGE_LIMIT".into(), "3".into())],
        ..support::ServerOptions::default()
    });
    server.create_repo("busy", false);
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    let head = git.commit(work.path(), "One", &[("a.txt", "a\n")], 1_700_000_000);
    git.run(
        work.path(),
        &[
            "push",
            "-q",
            &server.push_url("busy"),
            "HEAD:refs/heads/main",
        ],
    );

    for path in [
        "/busy/archive/main.zip",
        "/busy/commits/main",
        &format!("/busy/commit/{head}"),
    ] {
        assert_eq!(get(&server, path).status, 200, "{path}");
    }
    let limited = get(&server, "/busy/archive/main.tar.gz");
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(
        limited
            .header("retry-after")
            .is_some_and(|s| s.parse::<u64>().is_ok_and(|s| (1..=60).contains(&s)))
    );
    assert!(limited.body.contains("sign in"), "{}", limited.body);
    // Cheap pages and git are not limited.
    assert_eq!(get(&server, "/busy/blob/main/a.txt").status, 200);
    assert!(
        git.ls_remote(&server.url("busy"), &[])
            .iter()
            .any(|line| line.ends_with("refs/heads/main"))
    );
    let clone = tempfile::tempdir().expect("tempdir");
    git.run(clone.path(), &["clone", "-q", &server.url("busy"), "copy"]);
    // Signed-in visitors are not counted.
    let mut browser = Browser::new(server.base_url());
    let invitation = invite(&server, None);
    assert_eq!(
        accept(
            &mut browser,
            &invitation,
            "paula",
            "amber-meadow-whistles-softly"
        )
        .status,
        303
    );
    for _ in 0..5 {
        assert_eq!(browser.get(&format!("/busy/commit/{head}")).status, 200);
    }
}

/// Line number → commit, from `git blame --porcelain` (header lines are
/// `<sha> <orig line> <final line>[ <count>]`).
fn git_blame(git: &Git, dir: &std::path::Path, path: &str) -> Vec<(u32, String)> {
    let out = git.run(dir, &["blame", "--porcelain", "HEAD", "--", path]);
    let mut lines = Vec::new();
    for line in out.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() >= 3
            && fields[0].len() == 40
            && fields[0].bytes().all(|b| b.is_ascii_hexdigit())
        {
            let number: u32 = fields[2].parse().expect("final line");
            lines.push((number, fields[0].to_owned()));
        }
    }
    lines.sort();
    lines
}

/// Line number → commit, from the blame page: each row is
/// `<tr id="L{n}"`, and a hunk's first row links its commit.
fn page_blame(body: &str, repo: &str) -> Vec<(u32, String)> {
    let link = format!("href=\"/{repo}/commit/");
    let mut current = String::new();
    let mut lines = Vec::new();
    for row in body.split("<tr id=\"L").skip(1) {
        let number: u32 = row[..row.find('"').expect("id ends")]
            .parse()
            .expect("line number");
        if let Some(at) = row.find(&link) {
            let start = at + link.len();
            current = row[start..start + 40].to_owned();
        }
        assert!(!current.is_empty(), "row {number} has no commit yet");
        lines.push((number, current.clone()));
    }
    lines
}

#[test]
fn blame_highlighting_split_diffs_and_assets() {
    let server = NimbusServer::start();
    server.create_repo("code", false);
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    git.init(dir);
    let v1 = "fn main() {\n    let a = 1;\n    let b = 2;\n    println!(\"{}\", a + b);\n}\n";
    git.commit(
        dir,
        "first",
        &[("src/main.rs", v1), ("notes.txt", "plain words\n")],
        1_700_000_000,
    );
    let v2 = "// A comment <b>\nfn main() {\n    let a = 10;\n    let b = 2;\n    println!(\"{}\", a + b);\n}\n";
    git.commit(dir, "second", &[("src/main.rs", v2)], 1_700_000_100);
    let v3 = "// A comment <b>\nfn main() {\n    let a = 10;\n    let b = 2;\n    let c = 3;\n    println!(\"{}\", a + b + c);\n}\n";
    // A file whose name is not UTF-8 (git stores names as bytes).
    {
        use std::os::unix::ffi::OsStrExt;
        std::fs::create_dir_all(dir.join("odd")).expect("mkdir");
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9 <b>.txt");
        std::fs::write(dir.join("odd").join(name), "latin-1 name\n").expect("write");
        git.run(dir, &["add", "-A"]);
    }
    let third = git.commit(dir, "third", &[("src/main.rs", v3)], 1_700_000_200);
    git.run(
        dir,
        &[
            "push",
            "-q",
            &server.push_url("code"),
            "HEAD:refs/heads/main",
        ],
    );

    // Blame: every line's commit as `git blame` says.
    let blame = page(&server, "/code/blame/main/src/main.rs");
    assert!(
        blame.contains("<title>Blame of src/main.rs at main · code · Nimbus</title>"),
        "{blame}"
    );
    let expected = git_blame(&git, dir, "src/main.rs");
    assert_eq!(expected.len(), 7);
    assert_eq!(page_blame(&blame, "code"), expected);
    // Commit summaries beside the lines; code highlighted and escaped.
    assert!(
        blame.contains("third") && blame.contains("second"),
        "{blame}"
    );
    assert!(
        blame.contains("hl-comment") && blame.contains("&lt;b&gt;"),
        "{blame}"
    );
    // The file page links to the blame; blame refuses what it cannot do.
    let file = page(&server, "/code/blob/main/src/main.rs");
    assert!(
        file.contains("href=\"/code/blame/main/src/main.rs\""),
        "{file}"
    );
    assert_eq!(get(&server, "/code/blame/main/src").status, 422);
    assert_eq!(get(&server, "/code/blame/main/missing.rs").status, 404);
    assert_eq!(get(&server, "/code/blame/nobranch/src/main.rs").status, 404);

    // Highlighting: Rust gets classes, plain text does not, both escaped.
    assert!(file.contains("class=\"hl-"), "{file}");
    assert!(
        file.contains("&lt;b&gt;") && !file.contains("<b>"),
        "{file}"
    );
    let notes = page(&server, "/code/blob/main/notes.txt");
    assert!(
        notes.contains("plain words") && !notes.contains("class=\"hl-"),
        "{notes}"
    );

    // Side-by-side diff: a run of removed lines beside the added lines
    // that replace them, in order, and an empty old side for the rest.
    let unified = page(&server, &format!("/code/commit/{third}"));
    assert!(unified.contains("href=\"?diff=split\""), "{unified}");
    let split = page(&server, &format!("/code/commit/{third}?diff=split"));
    assert!(split.contains("class=\"code split\""), "{split}");
    let row_with = |needle: &str| {
        split
            .split("<tr>")
            .find(|row| row.contains(needle))
            .unwrap_or_else(|| panic!("no row with {needle}: {split}"))
            .to_owned()
    };
    let paired = row_with("let c = 3");
    assert!(
        paired.contains("class=\"text del\"")
            && paired.contains("a + b);")
            && paired.contains("class=\"text add\""),
        "{paired}"
    );
    let added = row_with("a + b + c");
    assert!(
        added.contains("class=\"text empty\"") && added.contains("class=\"text add\""),
        "{added}"
    );
    let context = row_with("let b = 2");
    assert_eq!(context.matches("let b = 2").count(), 2, "{context}");

    // The odd name is listed, escaped, linked byte for byte, and opens.
    let odd = page(&server, "/code/tree/main/odd");
    assert!(
        odd.contains("href=\"/code/blob/main/odd/caf%E9%20%3Cb%3E.txt\""),
        "{odd}"
    );
    assert!(odd.contains("caf\u{fffd} &lt;b&gt;.txt"), "{odd}");
    let odd_file = page(&server, "/code/blob/main/odd/caf%E9%20%3Cb%3E.txt");
    assert!(odd_file.contains("latin-1 name"), "{odd_file}");
    assert!(
        odd_file.contains("href=\"/code/raw/main/odd/caf%E9%20%3Cb%3E.txt\""),
        "{odd_file}"
    );
    assert!(
        odd_file.contains("href=\"/code/tree/main/odd\""),
        "breadcrumbs: {odd_file}"
    );
    assert_eq!(
        get(&server, "/code/raw/main/odd/caf%E9%20%3Cb%3E.txt").body,
        "latin-1 name\n"
    );
    let odd_blame = page(&server, "/code/blame/main/odd/caf%E9%20%3Cb%3E.txt");
    assert!(odd_blame.contains("latin-1 name"), "{odd_blame}");

    // Listings show each entry's last commit, as `git log -1 -- entry`,
    // once the background computation is done (the page waits briefly).
    let last_of = |path: &str| {
        git.run(dir, &["log", "-1", "--format=%H", "--", path])
            .trim()
            .to_owned()
    };
    for (url, entries) in [
        ("/code", vec![("notes.txt", "notes.txt"), ("src", "src")]),
        ("/code/tree/main/src", vec![("main.rs", "src/main.rs")]),
    ] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let listing = loop {
            let body = page(&server, url);
            if body.contains("<td class=\"last\"><a") || std::time::Instant::now() > deadline {
                break body;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        for (name, path) in entries {
            let row = listing
                .split("<tr>")
                .find(|row| {
                    row.contains(&format!(">{name}<")) || row.contains(&format!(">{name}/<"))
                })
                .unwrap_or_else(|| panic!("no row for {name}: {listing}"));
            assert!(
                row.contains(&format!("href=\"/code/commit/{}\"", last_of(path))),
                "{name}: {row}"
            );
        }
    }
    assert_ne!(last_of("notes.txt"), last_of("src"));

    // Scripts: served from this server, versioned and cacheable.
    let script_src = file
        .split("<script src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a script");
    assert!(
        script_src.starts_with("/-/assets/nimbus.js?v="),
        "{script_src}"
    );
    let script = get(&server, script_src);
    assert_eq!(script.status, 200);
    assert!(
        script
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/javascript"))
    );
    assert!(
        script
            .header("cache-control")
            .is_some_and(|c| c.contains("immutable"))
    );
    assert!(script.body.contains("scrollIntoView"));
    assert_eq!(get(&server, "/-/assets/../Cargo.toml").status, 404);
    assert_eq!(get(&server, "/-/assets/none.js").status, 404);
}
