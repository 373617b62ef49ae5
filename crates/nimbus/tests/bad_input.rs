//! Bad input gets a clear error and changes nothing: malformed and
//! oversized pkt-lines, truncated and corrupt packs, objects pointing at
//! missing objects, malformed trees, invalid ref names, unknown
//! repositories, wrong credentials and unsupported capabilities. Requests
//! are built byte by byte from objects made by the real `git`.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;
use support::{Git, NimbusServer, OWNER_TOKEN, basic_authorization, shared_server};

const ZERO: &str = "0000000000000000000000000000000000000000";

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn send(
    server: &NimbusServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut builder = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", server.base_url()));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(body).expect("a well-formed request");
    let mut response = agent
        .run(request)
        .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"));
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .expect("read the response body");
    Reply {
        status: response.status().as_u16(),
        headers,
        body,
    }
}

fn basic(token: &str) -> String {
    // Minimal base64 for "x:<token>" without pulling a crate into the tests.
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("x:{token}").into_bytes();
    let mut out = Vec::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    let mut header = Vec::new();
    write!(header, "Basic ").expect("vec");
    header.extend_from_slice(&out);
    String::from_utf8(header).expect("ascii")
}

fn pkt(line: &str) -> Vec<u8> {
    let mut out = format!("{:04x}", line.len() + 5).into_bytes();
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
    out
}

fn pkt_bytes(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", data.len() + 4).into_bytes();
    out.extend_from_slice(data);
    out
}

const FLUSH: &[u8] = b"0000";

/// What a client can observe of a repository, plus the stored pack files.
#[derive(Debug, PartialEq, Eq)]
struct State {
    refs: Vec<String>,
    stored_files: Vec<String>,
}

fn state(server: &NimbusServer, git: &Git, name: &str) -> State {
    let id = server
        .request(
            "GET",
            &format!("/api/v1/repos/{name}"),
            Some(&format!("Bearer {OWNER_TOKEN}")),
            None,
        )
        .json()["id"]
        .as_i64()
        .expect("repository id");
    let stored_files = server.stored_keys(&format!("repos/{id}/pack/"));
    State {
        refs: git.ls_remote(&server.url(name), &[]),
        stored_files,
    }
}

/// A repository on the server with two commits on `main`, and its clone.
fn seeded(server: &NimbusServer, git: &Git, name: &str) -> tempfile::TempDir {
    server.create_repo(name, false);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    git.commit(work.path(), "one", &[("a.txt", "one\n")], 1_700_000_000);
    git.commit(work.path(), "two", &[("a.txt", "two\n")], 1_700_000_100);
    git.run(work.path(), &["push", "-q", &server.push_url(name), "main"]);
    work
}

/// `git pack-objects --stdout` for the given `--revs` input.
fn pack(git: &Git, dir: &Path, revs: &str) -> Vec<u8> {
    let mut child = git
        .command(dir, &["pack-objects", "--stdout", "--revs", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start git pack-objects");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(revs.as_bytes())
        .expect("write revs");
    let output = child.wait_with_output().expect("git pack-objects");
    assert!(output.status.success(), "git pack-objects failed");
    output.stdout
}

fn push_body(commands: &[String], pack: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, command) in commands.iter().enumerate() {
        if i == 0 {
            body.extend(pkt_bytes(
                format!("{command}\0report-status side-band-64k\n").as_bytes(),
            ));
        } else {
            body.extend(pkt(command));
        }
    }
    body.extend_from_slice(FLUSH);
    body.extend_from_slice(pack);
    body
}

fn receive_pack(server: &NimbusServer, name: &str, body: Vec<u8>) -> Reply {
    let auth = basic(OWNER_TOKEN);
    send(
        server,
        "POST",
        &format!("/{name}.git/git-receive-pack"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-git-receive-pack-request"),
        ],
        body,
    )
}

fn upload_pack(server: &NimbusServer, name: &str, body: Vec<u8>, version: u8) -> Reply {
    let protocol = format!("version={version}");
    send(
        server,
        "POST",
        &format!("/{name}.git/git-upload-pack"),
        &[
            ("Content-Type", "application/x-git-upload-pack-request"),
            ("Git-Protocol", &protocol),
        ],
        body,
    )
}

#[test]
fn malformed_pkt_line_length_gets_an_err_line() {
    let server = shared_server();
    let git = Git::new(2);
    let _work = seeded(server, &git, "bad-pkt-length");
    let before = state(server, &git, "bad-pkt-length");
    let reply = upload_pack(server, "bad-pkt-length", b"zzzzwant".to_vec(), 0);
    assert_eq!(reply.status, 200);
    assert!(
        reply.text().contains("ERR invalid pkt-line length header"),
        "{}",
        reply.text()
    );
    assert_eq!(state(server, &git, "bad-pkt-length"), before);
}

#[test]
fn oversized_pkt_line_gets_an_err_line() {
    let server = shared_server();
    let git = Git::new(2);
    let _work = seeded(server, &git, "bad-pkt-size");
    let mut body = b"fff1".to_vec();
    body.extend(std::iter::repeat_n(b'a', 70_000));
    for version in [0, 2] {
        let reply = upload_pack(server, "bad-pkt-size", body.clone(), version);
        assert!(
            reply
                .text()
                .contains("ERR pkt-line length 65521 is out of range"),
            "v{version}: {}",
            reply.text()
        );
    }
    let reply = receive_pack(server, "bad-pkt-size", body);
    assert!(
        reply
            .text()
            .contains("ERR pkt-line length 65521 is out of range"),
        "{}",
        reply.text()
    );
}

#[test]
fn unknown_wants_and_unsupported_capabilities_get_err_lines() {
    let server = shared_server();
    let git = Git::new(2);
    let work = seeded(server, &git, "bad-caps");
    let head = git.rev_parse(work.path(), "HEAD");
    let missing = "1234567890123456789012345678901234567890";

    let mut body = pkt(&format!("want {missing} side-band-64k"));
    body.extend_from_slice(FLUSH);
    body.extend(pkt("done"));
    let reply = upload_pack(server, "bad-caps", body, 0);
    assert!(
        reply
            .text()
            .contains(&format!("ERR upload-pack: not our ref {missing}")),
        "{}",
        reply.text()
    );

    let v2 = |args: &[String], caps: &[&str], command: &str| {
        let mut body = pkt(&format!("command={command}"));
        for cap in caps {
            body.extend(pkt(cap));
        }
        body.extend_from_slice(b"0001");
        for arg in args {
            body.extend(pkt(arg));
        }
        body.extend_from_slice(FLUSH);
        upload_pack(server, "bad-caps", body, 2).text()
    };
    let want = format!("want {head}");
    let text = v2(
        &[want.clone(), "filter sparse:oid=abc".into(), "done".into()],
        &[],
        "fetch",
    );
    assert!(
        text.contains("ERR filter \"sparse:oid=abc\" is not supported"),
        "{text}"
    );
    let text = v2(
        &[want.clone(), "done".into()],
        &["object-format=sha256"],
        "fetch",
    );
    assert!(
        text.contains("ERR only object-format=sha1 is supported"),
        "{text}"
    );
    let text = v2(&[], &[], "object-info");
    assert!(
        text.contains("ERR unknown command \"object-info\""),
        "{text}"
    );
    let text = v2(&[want, "frobnicate".into(), "done".into()], &[], "fetch");
    assert!(
        text.contains("ERR unexpected line in request: \"frobnicate\""),
        "{text}"
    );
}

#[test]
fn truncated_and_corrupt_packs_change_nothing() {
    let server = shared_server();
    let git = Git::new(2);
    let name = "bad-packs";
    let work = seeded(server, &git, name);
    let old = git.rev_parse(work.path(), "HEAD");
    let new = git.commit(work.path(), "three", &[("b.txt", "three\n")], 1_700_000_200);
    let good = pack(&git, work.path(), &format!("{new}\n^{old}\n"));
    let before = state(server, &git, name);
    let command = format!("{old} {new} refs/heads/main");

    let truncated = &good[..good.len() - 30];
    let reply = receive_pack(
        server,
        name,
        push_body(std::slice::from_ref(&command), truncated),
    );
    let text = reply.text();
    assert!(text.contains("unpack the pack is invalid"), "{text}");
    assert!(text.contains("ng refs/heads/main unpacker error"), "{text}");
    assert_eq!(state(server, &git, name), before);

    let mut corrupt = good.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    let reply = receive_pack(
        server,
        name,
        push_body(std::slice::from_ref(&command), &corrupt),
    );
    let text = reply.text();
    assert!(text.contains("unpack the pack is invalid"), "{text}");
    assert!(text.contains("ng refs/heads/main unpacker error"), "{text}");
    assert_eq!(state(server, &git, name), before);

    let reply = receive_pack(server, name, push_body(&[command], b"not a pack at all"));
    assert!(
        reply.text().contains("unpack the pack is invalid"),
        "{}",
        reply.text()
    );
    assert_eq!(state(server, &git, name), before);
}

#[test]
fn objects_pointing_at_missing_objects_change_nothing() {
    let server = shared_server();
    let git = Git::new(2);
    let name = "bad-missing-parent";
    server.create_repo(name, false);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    let first = git.commit(work.path(), "one", &[("a.txt", "one\n")], 1_700_000_000);
    let second = git.commit(work.path(), "two", &[("a.txt", "two\n")], 1_700_000_100);
    let before = state(server, &git, name);
    // The pack holds the second commit but not its parent.
    let partial = pack(&git, work.path(), &format!("{second}\n^{first}\n"));
    let reply = receive_pack(
        server,
        name,
        push_body(&[format!("{ZERO} {second} refs/heads/main")], &partial),
    );
    let text = reply.text();
    assert!(
        text.contains(&format!(
            "object {second} refers to {first}, which does not exist"
        )),
        "{text}"
    );
    assert!(text.contains("ng refs/heads/main unpacker error"), "{text}");
    assert_eq!(state(server, &git, name), before);
}

#[test]
fn malformed_tree_is_refused_like_git_fsck() {
    let server = shared_server();
    let git = Git::new(2);
    let name = "bad-tree";
    let work = seeded(server, &git, name);
    let old = git.rev_parse(work.path(), "HEAD");
    let blob = git.rev_parse(work.path(), "HEAD:a.txt");
    // A tree with an entry named ".git", which git refuses to check out.
    let mut tree = b"100644 .git\0".to_vec();
    tree.extend((0..20).map(|i| u8::from_str_radix(&blob[2 * i..2 * i + 2], 16).expect("hex")));
    let tree_path = work.path().join("evil-tree");
    std::fs::write(&tree_path, &tree).expect("write tree");
    let tree_id = git
        .run(
            work.path(),
            &[
                "hash-object",
                "-t",
                "tree",
                "--literally",
                "-w",
                tree_path.to_str().expect("utf8"),
            ],
        )
        .trim()
        .to_owned();
    let commit = git
        .run_with_env(
            work.path(),
            &["commit-tree", &tree_id, "-p", &old, "-m", "evil"],
            &[
                ("GIT_AUTHOR_DATE", "1700000300 +0000"),
                ("GIT_COMMITTER_DATE", "1700000300 +0000"),
            ],
        )
        .trim()
        .to_owned();
    let before = state(server, &git, name);
    let evil = pack(&git, work.path(), &format!("{commit}\n^{old}\n"));
    let reply = receive_pack(
        server,
        name,
        push_body(&[format!("{old} {commit} refs/heads/main")], &evil),
    );
    let text = reply.text();
    assert!(
        text.contains(&format!("invalid object {tree_id}")),
        "{text}"
    );
    assert!(text.contains("which git refuses"), "{text}");
    assert_eq!(state(server, &git, name), before);
}

#[test]
fn invalid_ref_names_are_refused_per_ref() {
    let server = shared_server();
    let git = Git::new(2);
    let name = "bad-ref-names";
    let work = seeded(server, &git, name);
    let head = git.rev_parse(work.path(), "HEAD");
    let before = state(server, &git, name);
    let empty_pack = pack(&git, work.path(), &format!("{head}\n^{head}\n"));
    let reply = receive_pack(
        server,
        name,
        push_body(
            &[
                format!("{ZERO} {head} refs/heads/bad..name"),
                format!("{ZERO} {head} refs/heads/x.lock"),
                format!("{ZERO} {head} HEAD"),
            ],
            &empty_pack,
        ),
    );
    let text = reply.text();
    assert!(text.contains("unpack ok"), "{text}");
    for r in ["refs/heads/bad..name", "refs/heads/x.lock", "HEAD"] {
        assert!(
            text.contains(&format!("ng {r} funny refname")),
            "{r}: {text}"
        );
    }
    assert_eq!(state(server, &git, name), before);
}

#[test]
fn commands_without_a_flush_are_refused() {
    let server = shared_server();
    let git = Git::new(2);
    let name = "bad-commands";
    let work = seeded(server, &git, name);
    let head = git.rev_parse(work.path(), "HEAD");
    let before = state(server, &git, name);
    let body = pkt_bytes(format!("{ZERO} {head} refs/heads/new\0report-status\n").as_bytes());
    let reply = receive_pack(server, name, body);
    assert!(
        reply
            .text()
            .contains("ERR the request ended before its flush packet"),
        "{}",
        reply.text()
    );
    let reply = receive_pack(server, name, [pkt("garbage"), FLUSH.to_vec()].concat());
    assert!(
        reply
            .text()
            .contains("ERR malformed command line \"garbage\""),
        "{}",
        reply.text()
    );
    assert_eq!(state(server, &git, name), before);
}

/// Anonymous users get the 401 a private repository gets (so git asks for
/// credentials, and existence is not revealed); signed-in users get 404.
#[test]
fn unknown_repository_is_401_anonymously_and_404_signed_in() {
    let server = shared_server();
    let reply = send(
        server,
        "GET",
        "/no-such-repo.git/info/refs?service=git-upload-pack",
        &[],
        Vec::new(),
    );
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.text(),
        "authentication required to read repository 'no-such-repo' (or it does not exist); \
         use a token as the password\n"
    );
    let reply = upload_pack(server, "no-such-repo", FLUSH.to_vec(), 2);
    assert_eq!(reply.status, 401);
    let authorization = basic_authorization("x", OWNER_TOKEN);
    let reply = send(
        server,
        "GET",
        "/no-such-repo.git/info/refs?service=git-upload-pack",
        &[("Authorization", authorization.as_str())],
        Vec::new(),
    );
    assert_eq!(reply.status, 404);
    assert_eq!(reply.text(), "repository 'no-such-repo' not found\n");
    let git = Git::new(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let stderr = git.run_expect_failure(dir.path(), &["clone", &server.push_url("no-such-repo")]);
    assert!(stderr.contains("not found"), "{stderr}");
}

#[test]
fn wrong_or_missing_credentials_get_401_with_a_basic_challenge() {
    let server = shared_server();
    let git = Git::new(2);
    let name = "bad-credentials";
    let work = seeded(server, &git, name);
    let before = state(server, &git, name);
    let path = format!("/{name}.git/info/refs?service=git-receive-pack");
    let wrong = basic("nimbus_not_the_right_token_at_all");
    for headers in [vec![], vec![("Authorization", wrong.as_str())]] {
        let reply = send(server, "GET", &path, &headers, Vec::new());
        assert_eq!(reply.status, 401, "{}", reply.text());
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Basic")),
            "{:?}",
            reply.headers
        );
    }
    let reply = send(
        server,
        "GET",
        &path,
        &[("Authorization", wrong.as_str())],
        Vec::new(),
    );
    assert_eq!(reply.text(), "invalid or expired token\n");

    git.commit(work.path(), "three", &[("c.txt", "c\n")], 1_700_000_400);
    let url = server
        .push_url(name)
        .replace(OWNER_TOKEN, "nimbus_not_the_right_token_at_all");
    let stderr = git.run_expect_failure(work.path(), &["push", &url, "main"]);
    assert!(stderr.contains("Authentication failed"), "{stderr}");
    assert_eq!(state(server, &git, name), before);

    // Private repositories refuse anonymous readers the same way.
    server.create_repo("bad-credentials-private", true);
    let reply = send(
        server,
        "GET",
        "/bad-credentials-private.git/info/refs?service=git-upload-pack",
        &[],
        Vec::new(),
    );
    assert_eq!(reply.status, 401);
}

#[test]
fn wrong_content_type_and_encoding_are_refused() {
    let server = shared_server();
    let git = Git::new(2);
    let _work = seeded(server, &git, "bad-content-type");
    let reply = send(
        server,
        "POST",
        "/bad-content-type.git/git-upload-pack",
        &[("Content-Type", "text/plain")],
        FLUSH.to_vec(),
    );
    assert_eq!(reply.status, 415);
    assert!(
        reply
            .text()
            .contains("expected Content-Type application/x-git-upload-pack-request")
    );
    let reply = send(
        server,
        "POST",
        "/bad-content-type.git/git-upload-pack",
        &[
            ("Content-Type", "application/x-git-upload-pack-request"),
            ("Content-Encoding", "br"),
        ],
        FLUSH.to_vec(),
    );
    assert_eq!(reply.status, 415);
    assert!(
        reply
            .text()
            .contains("Content-Encoding \"br\" is not supported"),
        "{}",
        reply.text()
    );
}
