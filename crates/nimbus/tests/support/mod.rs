//! Shared end-to-end harness: starts Nimbus and a `git http-backend` reference server, drives the real git CLI against both and compares what they leave behind.
//!
//! Each test file includes it with `mod support;` and uses a different part of it, hence `dead_code` is allowed.
#![allow(dead_code)]

pub mod browser;
pub mod browser_driver;
pub mod cloud;
pub mod git;
pub mod http_backend;
pub mod nats;
pub mod oidc;
pub mod receiver;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use git::{CommandOutput, DAY, EPOCH, Git, find_on_path, git_binary};
pub use http_backend::{HttpBackend, RequestLog, RequestRecord};

/// The owner token every test server is started with (`NIMBUS_OWNER_TOKEN`).
pub const OWNER_TOKEN: &str = "nimbus_test_owner_token_0123456789";

/// How long `nimbus serve` may take to print its `listening on` line.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Declares one `#[test]` per git protocol version for each named function `fn(protocol: u8)`:
/// `name::protocol_v0`, `name::protocol_v1` and `name::protocol_v2`.
#[allow(unused_macros)]
macro_rules! protocol_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn protocol_v0() {
                    super::$name(0);
                }

                #[test]
                fn protocol_v1() {
                    super::$name(1);
                }

                #[test]
                fn protocol_v2() {
                    super::$name(2);
                }
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use protocol_tests;

/// A repository name unique to one test and protocol version, so tests can share a server.
pub fn repo_name(test: &str, protocol: u8) -> String {
    format!("{}-v{protocol}", test.replace('_', "-"))
}

/// Runs `nimbus serve` under a small shell supervisor: when the test process goes away (even without
/// running destructors, as with a server in a `static`), the supervisor's standard input closes, and it
/// stops the server with SIGTERM (SIGKILL ten seconds later) and removes the server's temporary directory.
/// Set `NIMBUS_TEST_KEEP_DATA=1` to keep the directory for a post-mortem.
const SUPERVISOR_SCRIPT: &str = r#"
server="$1"; root="$2"; shift 2
if [ -n "${NIMBUS_TEST_SERVER_PATH+set}" ]; then
  PATH="$NIMBUS_TEST_SERVER_PATH" "$server" "$@" &
else
  "$server" "$@" &
fi
pid=$!
echo "$pid" > "$root/server.pid"
exec >/dev/null
read -r _ignored || true
kill -TERM "$pid" 2>/dev/null
( sleep 10; kill -KILL "$pid" 2>/dev/null ) &
wait "$pid"
status=$?
if [ -z "${NIMBUS_TEST_KEEP_DATA+set}" ]; then rm -rf -- "$root"; fi
exit "$status"
"#;

/// The `PATH` a Nimbus server process gets.
#[derive(Debug, Default, Clone)]
pub enum ServerPath {
    /// The test process's own `PATH`.
    #[default]
    Inherit,
    /// Only an empty directory inside the server's temporary directory: no git, no shell tools.
    EmptyDirectory,
    /// Exactly this value.
    Custom(OsString),
}

/// How to start a Nimbus server.
#[derive(Debug, Default, Clone)]
pub struct ServerOptions {
    pub path: ServerPath,
    /// Extra environment for the server process.
    pub env: Vec<(String, String)>,
    /// The address to listen on (default `127.0.0.1:0`, a free port).
    pub listen: Option<String>,
}

/// A running `nimbus serve` with its own data directory, stopped when dropped.
pub struct NimbusServer {
    supervisor: Child,
    supervisor_stdin: Option<ChildStdin>,
    base_url: String,
    root: PathBuf,
    agent: ureq::Agent,
    /// The environment the server got on top of the test process's.
    env: Vec<(String, String)>,
}

/// An HTTP answer from the server's API.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl ApiResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("response body is not JSON ({error}): {}", self.body))
    }
}

impl NimbusServer {
    /// Starts a server with the test process's environment.
    pub fn start() -> Self {
        Self::start_with(ServerOptions::default())
    }

    pub fn start_with(options: ServerOptions) -> Self {
        let root = tempfile::Builder::new()
            .prefix("nimbus-e2e-server-")
            .tempdir()
            .expect("create the server's temporary directory")
            .keep();
        let data_dir = root.join("data");
        fs::create_dir(&data_dir).expect("create the data directory");
        let stderr_log =
            File::create(root.join("server.stderr.log")).expect("create the stderr log");
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(SUPERVISOR_SCRIPT)
            .arg("nimbus-test-supervisor")
            .arg(env!("CARGO_BIN_EXE_nimbus"))
            .arg(&root)
            .args(["serve", "--listen"])
            .arg(options.listen.as_deref().unwrap_or("127.0.0.1:0"))
            .arg("--data-dir")
            .arg(&data_dir)
            .env("NIMBUS_OWNER_TOKEN", OWNER_TOKEN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr_log));
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        let sets_storage = options
            .env
            .iter()
            .any(|(name, _)| name == "NIMBUS_DATABASE_URL" || name == "NIMBUS_OBJECT_STORE");
        let mut storage_env = Vec::new();
        if cloud::cloud_backend_requested() && !sets_storage {
            storage_env = cloud::fresh_cloud_env();
        }
        storage_env.extend(options.env.iter().cloned());
        for (name, value) in &storage_env {
            command.env(name, value);
        }
        match &options.path {
            ServerPath::Inherit => {}
            ServerPath::EmptyDirectory => {
                let empty = root.join("empty-path");
                fs::create_dir(&empty).expect("create the empty PATH directory");
                command.env("NIMBUS_TEST_SERVER_PATH", empty);
            }
            ServerPath::Custom(path) => {
                command.env("NIMBUS_TEST_SERVER_PATH", path);
            }
        }
        let mut supervisor = command.spawn().expect("start the nimbus supervisor shell");
        let supervisor_stdin = supervisor.stdin.take();
        let stdout = supervisor.stdout.take().expect("stdout is piped");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let mut server = Self {
            supervisor,
            supervisor_stdin,
            base_url: String::new(),
            root,
            agent,
            env: storage_env,
        };

        let (sender, receiver) = mpsc::channel();
        let stdout_log_path = server.root.join("server.stdout.log");
        thread::spawn(move || {
            let mut log = File::create(stdout_log_path).ok();
            let mut reader = BufReader::new(stdout);
            let mut announced = false;
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if let Some(log) = log.as_mut() {
                    let _ = log.write_all(&line);
                }
                if !announced
                    && let Some(url) = parse_listening_line(&String::from_utf8_lossy(&line))
                {
                    announced = true;
                    let _ = sender.send(Some(url));
                }
            }
            if !announced {
                let _ = sender.send(None);
            }
        });
        match receiver.recv_timeout(SERVER_START_TIMEOUT) {
            Ok(Some(url)) => server.base_url = url,
            Ok(None) => panic!(
                "nimbus exited before printing `listening on http://...`\n{}",
                server.logs()
            ),
            Err(_) => panic!(
                "nimbus did not print `listening on http://...` within {SERVER_START_TIMEOUT:?}\n{}",
                server.logs()
            ),
        }
        server
    }

    /// `http://127.0.0.1:<port>`, as announced by the server.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The keys under `prefix` in the server's object store, sorted: files
    /// of the data directory's `objects`, or of its S3 bucket.
    pub fn stored_keys(&self, prefix: &str) -> Vec<String> {
        let setting = self
            .env
            .iter()
            .rev()
            .find(|(name, _)| name == "NIMBUS_OBJECT_STORE")
            .map(|(_, value)| value.clone());
        let mut keys = match setting {
            Some(url) if url.starts_with("s3://") => cloud::list_bucket(&url, prefix),
            other => {
                let root = other.map_or_else(|| self.data_dir().join("objects"), PathBuf::from);
                let mut keys = Vec::new();
                list_files(&root, &root, &mut keys);
                keys.retain(|key| key.starts_with(prefix));
                keys
            }
        };
        keys.sort();
        keys
    }

    /// Runs the `nimbus` command line on this server's data directory, with
    /// the storage environment the server got (PostgreSQL and S3 on the
    /// cloud backend).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_nimbus"))
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .env("NIMBUS_LOG", "warn")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .output()
            .expect("run nimbus")
    }

    /// The process id of `nimbus serve` itself (not of its supervisor shell).
    pub fn pid(&self) -> u32 {
        let path = self.root.join("server.pid");
        fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("could not read {}: {error}", path.display()))
            .trim()
            .parse()
            .expect("the supervisor writes a process id")
    }

    /// The anonymous clone URL of `name`.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}.git", self.base_url)
    }

    /// The clone URL with the owner token as the Basic-auth password.
    pub fn push_url(&self, name: &str) -> String {
        let authority = self
            .base_url
            .strip_prefix("http://")
            .expect("the announced URL is http://");
        format!("http://x:{OWNER_TOKEN}@{authority}/{name}.git")
    }

    /// Sends one request to the server; `authorization` is the whole `Authorization` header value.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        json: Option<&serde_json::Value>,
    ) -> ApiResponse {
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_url));
        if let Some(authorization) = authorization {
            builder = builder.header("Authorization", authorization);
        }
        let body = match json {
            Some(json) => {
                builder = builder.header("Content-Type", "application/json");
                serde_json::to_vec(json).expect("serialize the request body")
            }
            None => Vec::new(),
        };
        let request = builder.body(body).expect("a well-formed request");
        let mut response = self
            .agent
            .run(request)
            .unwrap_or_else(|error| panic!("{method} {path} failed: {error}\n{}", self.logs()));
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        // Lossily: a binary body (a bundle, an archive) keeps its text parts.
        let body = response
            .body_mut()
            .read_to_vec()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        ApiResponse {
            status: response.status().as_u16(),
            headers,
            body,
        }
    }

    /// `POST /api/v1/repos` with the owner token; returns the response whatever its status.
    pub fn try_create_repo(&self, body: &serde_json::Value) -> ApiResponse {
        self.request(
            "POST",
            "/api/v1/repos",
            Some(&format!("Bearer {OWNER_TOKEN}")),
            Some(body),
        )
    }

    /// Creates the repository `name` with default branch `main`; asserts 201 and returns the JSON.
    pub fn create_repo(&self, name: &str, private: bool) -> serde_json::Value {
        let response = self.try_create_repo(&serde_json::json!({
            "name": name,
            "private": private,
            "default_branch": "main",
        }));
        assert_eq!(
            response.status,
            201,
            "creating repository {name:?} failed: {}\n{}",
            response.body,
            self.logs()
        );
        response.json()
    }

    /// The server's whole log (its standard error) so far.
    pub fn full_log(&self) -> String {
        fs::read_to_string(self.root.join("server.stderr.log")).unwrap_or_default()
    }

    /// Everything the server printed so far (standard error, then standard output), for failure messages.
    pub fn logs(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.root.join(name)).unwrap_or_default();
        format!(
            "--- nimbus stderr ---\n{}\n--- nimbus stdout ---\n{}",
            tail(&read("server.stderr.log"), 300),
            tail(&read("server.stdout.log"), 50)
        )
    }

    /// Prints what the server logs from now on if the current test fails, so a shared server's log
    /// shows up with the test that went wrong.
    pub fn log_guard(&self) -> LogGuard {
        let path = self.root.join("server.stderr.log");
        let offset = fs::metadata(&path)
            .map(|metadata| metadata.len())
            .unwrap_or(0);
        LogGuard { path, offset }
    }
}

impl Drop for NimbusServer {
    fn drop(&mut self) {
        // Every test's server log is checked for credentials before it goes.
        let leaks = if thread::panicking() {
            Vec::new()
        } else {
            secret_leaks(&self.full_log())
        };
        // Closing the supervisor's standard input stops the server and removes its directory.
        drop(self.supervisor_stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut stopped = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.supervisor.try_wait() {
                stopped = true;
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if !stopped {
            let _ = self.supervisor.kill();
            let _ = self.supervisor.wait();
        }
        assert!(leaks.is_empty(), "the server logged credentials: {leaks:?}");
    }
}

/// Credentials found in a log: the owner token, or anything shaped like a
/// Nimbus token (`nimbus_` and 40 letters and digits).
pub fn secret_leaks(log: &str) -> Vec<String> {
    let mut leaks = Vec::new();
    if log.contains(OWNER_TOKEN) {
        leaks.push("the owner token".to_owned());
    }
    for (start, _) in log.match_indices("nimbus_") {
        let body: String = log[start + "nimbus_".len()..]
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        if body.len() >= 40 {
            leaks.push(format!("a token at byte {start}: nimbus_{}...", &body[..4]));
        }
    }
    leaks
}

/// `length` incompressible bytes (xorshift), the same for the same `seed`:
/// file content for pushes that should be large on the wire and on disk.
pub fn noise(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(length + 8);
    while bytes.len() < length {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(length);
    bytes
}

/// Every file below `dir`, as `/`-separated paths relative to `root`.
fn list_files(root: &Path, dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            list_files(root, &path, found);
        } else if let Ok(relative) = path.strip_prefix(root) {
            found.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

fn parse_listening_line(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("listening on ")?;
    let url = rest.split_whitespace().next()?;
    let url = url.trim_end_matches(|character: char| {
        character == '/' || character.is_ascii_punctuation() && character != ']'
    });
    url.starts_with("http://").then(|| url.to_owned())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let skipped = all.len().saturating_sub(lines);
    let mut shown = String::new();
    if skipped > 0 {
        shown.push_str(&format!("[... {skipped} earlier lines ...]\n"));
    }
    shown.push_str(&all[skipped..].join("\n"));
    shown
}

/// Prints the server's standard error written since its creation when dropped during a panic.
pub struct LogGuard {
    path: PathBuf,
    offset: u64,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if !thread::panicking() {
            return;
        }
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.path)
            && file.seek(SeekFrom::Start(self.offset)).is_ok()
        {
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        eprintln!(
            "--- nimbus stderr during this test (other tests share the server) ---\n{}",
            tail(&text, 300)
        );
    }
}

/// The server shared by all tests of one test binary. A server that failed to start fails every test
/// that asks for it, with the same message, instead of each waiting for its own timeout.
pub fn shared_server() -> &'static NimbusServer {
    static SERVER: OnceLock<Result<NimbusServer, String>> = OnceLock::new();
    let started = SERVER.get_or_init(|| {
        std::panic::catch_unwind(NimbusServer::start).map_err(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| {
                    payload
                        .downcast_ref::<&str>()
                        .map(|message| (*message).to_owned())
                })
                .unwrap_or_else(|| "nimbus failed to start".to_owned())
        })
    });
    match started {
        Ok(server) => server,
        Err(message) => panic!("the shared nimbus server is unavailable: {message}"),
    }
}

/// Which server a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Nimbus,
    HttpBackend,
}

/// What a differential scenario gets: a git client, the repository's URLs and an empty working directory.
pub struct Scenario<'a> {
    pub git: &'a Git,
    pub server: ServerKind,
    pub url: String,
    pub push_url: String,
    pub workdir: &'a Path,
    /// The reference server's request log; `None` when running against Nimbus.
    pub reference_requests: Option<RequestLog>,
}

impl Scenario<'_> {
    /// Runs `check` on the requests git sent, when the scenario runs against the reference server
    /// (the harness cannot see Nimbus's requests). Used to prove a scenario exercises what it claims.
    pub fn check_reference_requests(&self, check: impl FnOnce(&[RequestRecord])) {
        if let Some(requests) = &self.reference_requests {
            let requests = requests.lock().expect("request log is not poisoned");
            check(&requests);
        }
    }

    /// A path inside the scenario's working directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.workdir.join(name)
    }
}

/// What a scenario wants compared between the servers: client repositories (by directory name inside the
/// working directory) and free-form observations.
#[derive(Debug, Default)]
pub struct Outcome {
    clients: Vec<String>,
    observations: Vec<(String, String)>,
}

impl Outcome {
    /// Compares the refs, reachable objects and shallow file of client `name` (also checked with fsck).
    pub fn client(&mut self, name: &str) -> &mut Self {
        self.clients.push(name.to_owned());
        self
    }

    /// Compares `value` under `label`.
    pub fn observe(&mut self, label: &str, value: impl std::fmt::Display) -> &mut Self {
        self.observations
            .push((label.to_owned(), value.to_string()));
        self
    }
}

/// The state of one client repository after a scenario.
#[derive(Debug, PartialEq, Eq)]
struct ClientSnapshot {
    refs: Vec<String>,
    objects: Vec<String>,
    shallow: Vec<String>,
}

struct SideResult {
    observations: Vec<(String, String)>,
    clients: Vec<(String, ClientSnapshot)>,
    advertised: Vec<String>,
}

fn run_side(
    protocol: u8,
    server: ServerKind,
    (url, push_url): (String, String),
    reference_requests: Option<RequestLog>,
    scenario: &dyn Fn(&Scenario<'_>, &mut Outcome),
) -> SideResult {
    eprintln!("--- differential: running the scenario against {server:?} ({url})");
    let git = Git::new(protocol);
    let workdir = tempfile::Builder::new()
        .prefix("nimbus-scenario-")
        .tempdir()
        .expect("create the scenario directory");
    let context = Scenario {
        git: &git,
        server,
        url: url.clone(),
        push_url,
        workdir: workdir.path(),
        reference_requests,
    };
    let mut outcome = Outcome::default();
    scenario(&context, &mut outcome);
    let clients = outcome
        .clients
        .iter()
        .map(|name| {
            let dir = workdir.path().join(name);
            git.fsck(&dir);
            let snapshot = ClientSnapshot {
                refs: git.refs(&dir),
                objects: git.reachable_objects(&dir),
                shallow: git.shallow(&dir),
            };
            (name.clone(), snapshot)
        })
        .collect();
    SideResult {
        observations: outcome.observations,
        clients,
        advertised: git.ls_remote(&url, &[]),
    }
}

/// Runs `scenario` against `git http-backend` and against Nimbus (repository `repo` created fresh on
/// each, public, default branch `main`) with the same client protocol version, and asserts both leave
/// identical client refs, reachable objects and shallow files, identical observations and the same
/// `ls-remote --symref` listing on the server.
pub fn differential(protocol: u8, repo: &str, scenario: impl Fn(&Scenario<'_>, &mut Outcome)) {
    let backend = HttpBackend::start();
    backend.create_repo(repo);
    let reference = run_side(
        protocol,
        ServerKind::HttpBackend,
        (backend.url(repo), backend.push_url(repo)),
        Some(backend.requests()),
        &scenario,
    );

    let server = shared_server();
    let _logs = server.log_guard();
    server.create_repo(repo, false);
    let nimbus = run_side(
        protocol,
        ServerKind::Nimbus,
        (server.url(repo), server.push_url(repo)),
        None,
        &scenario,
    );

    let mut mismatches = Vec::new();
    for ((label, expected), (_, actual)) in reference.observations.iter().zip(&nimbus.observations)
    {
        if expected != actual {
            mismatches.push(format!(
                "observation {label:?}:\n  http-backend: {expected}\n  nimbus:       {actual}"
            ));
        }
    }
    for ((name, expected), (_, actual)) in reference.clients.iter().zip(&nimbus.clients) {
        for (what, expected, actual) in [
            ("refs", &expected.refs, &actual.refs),
            ("reachable objects", &expected.objects, &actual.objects),
            ("shallow file", &expected.shallow, &actual.shallow),
        ] {
            if let Some(difference) = describe_difference(expected, actual) {
                mismatches.push(format!("client {name:?} {what}: {difference}"));
            }
        }
    }
    if let Some(difference) = describe_difference(&reference.advertised, &nimbus.advertised) {
        mismatches.push(format!("server ls-remote --symref: {difference}"));
    }
    assert!(
        mismatches.is_empty(),
        "nimbus differs from git http-backend for repository {repo:?} over protocol v{protocol}:\n{}",
        mismatches.join("\n")
    );
}

/// Asserts two sorted lists are equal; on failure shows only the entries that differ (at most 40 each).
#[track_caller]
pub fn assert_same_lines(what: &str, expected: &[String], actual: &[String]) {
    if let Some(difference) = describe_difference(expected, actual) {
        panic!("{what} differ: {difference}");
    }
}

/// `None` when both lists are equal, else the entries only one side has (at most 40 of each).
pub fn describe_difference(expected: &[String], actual: &[String]) -> Option<String> {
    if expected == actual {
        return None;
    }
    let only = |from: &[String], other: &[String]| -> Vec<String> {
        let other: BTreeSet<&String> = other.iter().collect();
        from.iter()
            .filter(|entry| !other.contains(entry))
            .take(40)
            .cloned()
            .collect()
    };
    Some(format!(
        "{} vs {} entries\n    only in the expected (http-backend): {:?}\n    only in the actual (nimbus):         {:?}",
        expected.len(),
        actual.len(),
        only(expected, actual),
        only(actual, expected)
    ))
}

/// Deterministic pseudo-random bytes (SplitMix64), for content that neither compresses nor deltas.
pub fn pseudo_random_bytes(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed;
    let mut bytes = Vec::with_capacity(length + 8);
    while bytes.len() < length {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut value = state;
        value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        value ^= value >> 31;
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes.truncate(length);
    bytes
}

/// Writes `content` to `path`, creating parent directories.
pub fn write_file(path: &Path, content: impl AsRef<[u8]>) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent directories");
    }
    fs::write(path, content).expect("write a file");
}

/// `Authorization` header value for HTTP Basic with `user` and `password`.
/// A port that was free a moment ago, for a server whose URL must be known
/// before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("find a free port")
}

pub fn basic_authorization(user: &str, password: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let mut encoded = String::new();
    for chunk in input.as_bytes().chunks(3) {
        let bytes = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let value = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for index in 0..4 {
            if index <= chunk.len() {
                encoded.push(char::from(
                    ALPHABET[((value >> (18 - 6 * index)) & 63) as usize],
                ));
            } else {
                encoded.push('=');
            }
        }
    }
    format!("Basic {encoded}")
}

/// Commit `label` to `file.txt` in `dir` and push it to `repo`'s `main` as
/// the owner; the new commit's id.
pub fn commit_and_push(
    server: &NimbusServer,
    git: &Git,
    dir: &Path,
    repo: &str,
    label: &str,
) -> String {
    let id = git.commit(dir, label, &[("file.txt", label)], 1_700_000_000);
    git.run(
        dir,
        &["push", "-q", &server.push_url(repo), "HEAD:refs/heads/main"],
    );
    id
}
