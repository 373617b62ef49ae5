//! The real git CLI as the test client: an isolated environment per `Git`, commands with a timeout, deterministic commits and repository inspection.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// 2023-11-14 22:13:20 UTC: the date of every commit that does not choose its own.
pub const EPOCH: u64 = 1_700_000_000;
/// Seconds in a day, to space fixture commits apart.
pub const DAY: u64 = 86_400;

/// How long one git command may run before the test gives up on it; a hung server must fail the test, not hang it.
const GIT_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// The absolute path of the git CLI, looked up once on the test process's own `PATH` before anything changes it.
pub fn git_binary() -> &'static Path {
    static GIT: OnceLock<PathBuf> = OnceLock::new();
    GIT.get_or_init(|| {
        find_on_path("git")
            .expect("the git CLI must be installed and on PATH (scripts/test installs it)")
    })
}

/// The `PATH` the test process started with; git commands get it back after their environment is cleared.
pub fn original_path() -> &'static OsString {
    static PATH: OnceLock<OsString> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"))
    })
}

/// Finds an executable called `program` on the test process's `PATH`.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(original_path())
        .map(|directory| directory.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl CommandOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `command` to completion with its output captured and `input` (if any) as its standard input,
/// killing it after `timeout`.
pub fn run_command(
    mut command: Command,
    description: &str,
    timeout: Duration,
    input: Option<Vec<u8>>,
) -> CommandOutput {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("could not start `{description}`: {error}"));
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
    }
    // The readers share their buffers so a timeout can still report what was printed,
    // even when a grandchild (git-remote-http) keeps the pipes open.
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let stdout_reader = spawn_pipe_reader(child.stdout.take(), Arc::clone(&stdout));
    let stderr_reader = spawn_pipe_reader(child.stderr.take(), Arc::clone(&stderr));
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = lossy(&stderr);
                panic!(
                    "`{description}` did not finish within {timeout:?}; stderr so far:\n{stderr}"
                );
            }
            Ok(None) => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(error) => panic!("could not wait for `{description}`: {error}"),
        }
    };
    let _ = stdout_reader.join();
    let _ = stderr_reader.join();
    let stdout = std::mem::take(&mut *stdout.lock().expect("reader thread does not panic"));
    CommandOutput {
        status,
        stdout,
        stderr: lossy(&stderr),
    }
}

fn spawn_pipe_reader(
    pipe: Option<impl Read + Send + 'static>,
    sink: Arc<Mutex<Vec<u8>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let Some(mut pipe) = pipe else { return };
        let mut buffer = [0u8; 64 * 1024];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(read) => sink
                    .lock()
                    .expect("reader thread does not panic")
                    .extend_from_slice(&buffer[..read]),
            }
        }
    })
}

fn lossy(buffer: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&buffer.lock().expect("reader thread does not panic")).into_owned()
}

/// The git CLI configured for one protocol version, with its own empty `HOME` and no system configuration.
#[derive(Clone)]
pub struct Git {
    protocol: u8,
    home: Arc<tempfile::TempDir>,
}

impl Git {
    /// A client that asks for `protocol.version=protocol` (0, 1 or 2).
    pub fn new(protocol: u8) -> Self {
        assert!(
            protocol <= 2,
            "git knows protocol versions 0, 1 and 2, not {protocol}"
        );
        let home = tempfile::Builder::new()
            .prefix("nimbus-git-home-")
            .tempdir()
            .expect("create a HOME directory for git");
        Self {
            protocol,
            home: Arc::new(home),
        }
    }

    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// The isolated `HOME`; also a harmless working directory for commands that need none.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// A `git` command in `dir` with the isolated environment and configuration, not yet run.
    pub fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let default_date = format!("{EPOCH} +0000");
        let mut command = Command::new(git_binary());
        command
            .current_dir(dir)
            .env_clear()
            .env("PATH", original_path())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_DATE", &default_date)
            .env("GIT_COMMITTER_DATE", &default_date)
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .arg("-c")
            .arg(format!("protocol.version={}", self.protocol));
        for setting in [
            "init.defaultBranch=main",
            "user.name=Nimbus Test",
            "user.email=test@nimbus.invalid",
            "advice.detachedHead=false",
            "core.autocrlf=false",
            "gc.auto=0",
            "maintenance.auto=false",
            // The client checks every object it receives, so a malformed pack fails the fetch.
            "transfer.fsckObjects=true",
            "http.lowSpeedLimit=1",
            "http.lowSpeedTime=120",
        ] {
            command.arg("-c").arg(setting);
        }
        if std::env::var_os("NIMBUS_TEST_GIT_TRACE").is_some() {
            command
                .env("GIT_TRACE_PACKET", "1")
                .env("GIT_TRACE", "1")
                .env("GIT_CURL_VERBOSE", "1");
        }
        command.args(args);
        command
    }

    fn describe(&self, dir: &Path, args: &[&str]) -> String {
        format!(
            "git -c protocol.version={} {} (in {})",
            self.protocol,
            args.join(" "),
            dir.display()
        )
    }

    /// Runs git and returns what happened, whatever the exit status.
    pub fn output_with_env(
        &self,
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> CommandOutput {
        let mut command = self.command(dir, args);
        for (name, value) in env {
            command.env(name, value);
        }
        run_command(
            command,
            &self.describe(dir, args),
            GIT_COMMAND_TIMEOUT,
            None,
        )
    }

    /// Runs git with `input` on its standard input, asserts it succeeded and returns its raw standard output.
    pub fn run_with_input_bytes(&self, dir: &Path, args: &[&str], input: Vec<u8>) -> Vec<u8> {
        let command = self.command(dir, args);
        let output = run_command(
            command,
            &self.describe(dir, args),
            GIT_COMMAND_TIMEOUT,
            Some(input),
        );
        assert!(
            output.status.success(),
            "`{}` failed with {}\nstderr:\n{}",
            self.describe(dir, args),
            output.status,
            output.stderr
        );
        output.stdout
    }

    /// Runs git with `input` on its standard input, asserts it succeeded and returns its standard output.
    pub fn run_with_input(&self, dir: &Path, args: &[&str], input: Vec<u8>) -> String {
        String::from_utf8_lossy(&self.run_with_input_bytes(dir, args, input)).into_owned()
    }

    pub fn output(&self, dir: &Path, args: &[&str]) -> CommandOutput {
        self.output_with_env(dir, args, &[])
    }

    /// Runs git, asserts it succeeded and returns its standard output.
    pub fn run_with_env(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
        let output = self.output_with_env(dir, args, env);
        assert!(
            output.status.success(),
            "`{}` failed with {}\nstderr:\n{}\nstdout:\n{}",
            self.describe(dir, args),
            output.status,
            output.stderr,
            output.stdout_text()
        );
        output.stdout_text()
    }

    pub fn run(&self, dir: &Path, args: &[&str]) -> String {
        self.run_with_env(dir, args, &[])
    }

    /// Runs git, asserts it failed and returns its standard error.
    pub fn run_expect_failure(&self, dir: &Path, args: &[&str]) -> String {
        let output = self.output(dir, args);
        assert!(
            !output.status.success(),
            "`{}` was expected to fail but succeeded\nstderr:\n{}\nstdout:\n{}",
            self.describe(dir, args),
            output.stderr,
            output.stdout_text()
        );
        output.stderr
    }

    /// `git init` of a fresh working repository at `dir`, on branch `main`.
    pub fn init(&self, dir: &Path) {
        fs::create_dir_all(dir).expect("create the working directory");
        self.run(dir, &["init", "-q"]);
    }

    /// Writes `files` under `dir`, stages everything and commits it dated `unix_time` (UTC); returns the commit id.
    ///
    /// The same files, message and date give the same commit id on every run and against every server.
    pub fn commit<C: AsRef<[u8]>>(
        &self,
        dir: &Path,
        message: &str,
        files: &[(&str, C)],
        unix_time: u64,
    ) -> String {
        for (path, content) in files {
            let full_path = dir.join(path);
            if let Some(parent) = full_path.parent() {
                fs::create_dir_all(parent).expect("create the file's directory");
            }
            fs::write(&full_path, content.as_ref()).expect("write a fixture file");
        }
        self.run(dir, &["add", "-A"]);
        let date = format!("{unix_time} +0000");
        self.run_with_env(
            dir,
            &["commit", "-q", "--allow-empty", "-m", message],
            &[("GIT_AUTHOR_DATE", &date), ("GIT_COMMITTER_DATE", &date)],
        );
        self.rev_parse(dir, "HEAD")
    }

    /// An annotated tag `name` on `target`, with a fixed tagger date.
    pub fn annotated_tag(
        &self,
        dir: &Path,
        name: &str,
        target: &str,
        message: &str,
        unix_time: u64,
    ) {
        let date = format!("{unix_time} +0000");
        self.run_with_env(
            dir,
            &["tag", "-a", name, "-m", message, target],
            &[("GIT_COMMITTER_DATE", &date)],
        );
    }

    /// `git rev-parse --verify <rev>`.
    pub fn rev_parse(&self, dir: &Path, rev: &str) -> String {
        self.run(dir, &["rev-parse", "--verify", "--end-of-options", rev])
            .trim()
            .to_owned()
    }

    /// The number of commits reachable from `rev` (bounded by the shallow file, if any).
    pub fn commit_count(&self, dir: &Path, rev: &str) -> usize {
        self.run(dir, &["rev-list", "--count", rev])
            .trim()
            .parse()
            .expect("rev-list --count prints a number")
    }

    /// `git fsck --full`: asserts it exits cleanly and reports nothing but notices. Dangling objects are fine;
    /// objects a partial clone's promisor remote promised are fine too (fsck knows them).
    pub fn fsck(&self, dir: &Path) {
        let args = ["fsck", "--full", "--no-progress", "--no-dangling"];
        let output = self.output(dir, &args);
        let stdout = output.stdout_text();
        let problems: Vec<&str> = stdout
            .lines()
            .chain(output.stderr.lines())
            .filter(|line| !line.trim().is_empty() && !line.starts_with("notice:"))
            .collect();
        assert!(
            output.status.success() && problems.is_empty(),
            "`{}` found problems (exit {}):\n{}",
            self.describe(dir, &args),
            output.status,
            problems.join("\n")
        );
    }

    /// Every ref as `<id> <name>`, sorted, plus `HEAD -> <target>` when HEAD is symbolic.
    pub fn refs(&self, dir: &Path) -> Vec<String> {
        let mut refs: Vec<String> = self
            .run(dir, &["for-each-ref", "--format=%(objectname) %(refname)"])
            .lines()
            .map(str::to_owned)
            .collect();
        let head = self.output(dir, &["symbolic-ref", "-q", "HEAD"]);
        if head.status.success() {
            refs.push(format!("HEAD -> {}", head.stdout_text().trim()));
        }
        refs.sort();
        refs
    }

    /// The ids of all objects reachable from any ref, sorted. Objects a partial clone does not have are listed
    /// as `?<id>` (and not fetched).
    pub fn reachable_objects(&self, dir: &Path) -> Vec<String> {
        let mut objects: Vec<String> = self
            .run(dir, &["rev-list", "--objects", "--all", "--missing=print"])
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        objects.sort();
        objects.dedup();
        objects
    }

    /// The sorted lines of `<git-dir>/shallow`; empty for a complete repository.
    pub fn shallow(&self, dir: &Path) -> Vec<String> {
        let git_dir = self.run(dir, &["rev-parse", "--absolute-git-dir"]);
        let shallow_file = Path::new(git_dir.trim()).join("shallow");
        let mut lines: Vec<String> = match fs::read_to_string(&shallow_file) {
            Ok(content) => content.lines().map(str::to_owned).collect(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => panic!("could not read {}: {error}", shallow_file.display()),
        };
        lines.sort();
        lines
    }

    /// `git ls-remote --symref [options] <url> [patterns]`, one line per entry, sorted. Arguments starting
    /// with `-` go before the URL, the others (patterns) after it.
    pub fn ls_remote(&self, url: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["ls-remote", "--symref"];
        args.extend(extra.iter().filter(|arg| arg.starts_with('-')));
        args.push(url);
        args.extend(extra.iter().filter(|arg| !arg.starts_with('-')));
        let mut lines: Vec<String> = self
            .run(self.home(), &args)
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    /// Runs `git fast-import` on `stream`, a fixture script in fast-import's format (without the final `done`).
    pub fn fast_import(&self, dir: &Path, stream: &str) {
        let stream = format!("{stream}done\n");
        self.run_with_input(
            dir,
            &["fast-import", "--quiet", "--done"],
            stream.into_bytes(),
        );
    }

    /// Creates `count` branches `refs/heads/<prefix>/<index>`, each one commit on top of `base` adding its
    /// own small file, so every branch points at a distinct commit.
    pub fn fan_out_branches(&self, dir: &Path, base: &str, prefix: &str, count: usize) {
        let mut stream = String::new();
        for index in 0..count {
            stream.push_str(&format!(
                "commit refs/heads/{prefix}/{index:05}\ncommitter Nimbus Test <test@nimbus.invalid> {} +0000\n",
                EPOCH + DAY + index as u64
            ));
            stream.push_str(&fast_import_data(&format!("{prefix} {index}\n")));
            stream.push_str(&format!(
                "from {base}\nM 100644 inline {prefix}-{index:05}.txt\n"
            ));
            stream.push_str(&fast_import_data(&format!("{prefix} branch {index}\n")));
            stream.push('\n');
        }
        self.fast_import(dir, &stream);
    }

    /// Appends `count` commits to `branch` (starting from `base`), commit `i` dated `start_time + i` minutes,
    /// each rewriting `<branch>.txt`; returns the new tip.
    pub fn extend_branch(
        &self,
        dir: &Path,
        branch: &str,
        base: &str,
        count: usize,
        start_time: u64,
    ) -> String {
        let mut stream = String::new();
        for index in 0..count {
            stream.push_str(&format!(
                "commit refs/heads/{branch}\nmark :{}\ncommitter Nimbus Test <test@nimbus.invalid> {} +0000\n",
                index + 1,
                start_time + index as u64 * 60
            ));
            stream.push_str(&fast_import_data(&format!("{branch} {index}\n")));
            if index == 0 {
                stream.push_str(&format!("from {base}\n"));
            } else {
                stream.push_str(&format!("from :{index}\n"));
            }
            let file = branch.replace('/', "-");
            stream.push_str(&format!("M 100644 inline {file}.txt\n"));
            stream.push_str(&fast_import_data(
                &format!("{branch} line {index}\n").repeat(index % 7 + 1),
            ));
            stream.push('\n');
        }
        self.fast_import(dir, &stream);
        self.rev_parse(dir, &format!("refs/heads/{branch}"))
    }

    /// Builds a linear history of `count` commits on the current branch of `dir`, commit `i` dated
    /// `EPOCH + i` days. Every commit rewrites one of three small files and appends to `log.txt`, so packs
    /// have deltas. Returns the commit ids, oldest first.
    pub fn linear_history(&self, dir: &Path, label: &str, count: usize) -> Vec<String> {
        let mut log = String::new();
        (0..count)
            .map(|index| {
                log.push_str(&format!("{label}: entry {index}\n"));
                let rotating_file = format!("src/file-{}.txt", index % 3);
                let rotating_content = format!("{label} version {index}\n").repeat(20 + index);
                self.commit(
                    dir,
                    &format!("{label} commit {index}"),
                    &[
                        ("log.txt", log.as_str()),
                        (rotating_file.as_str(), &rotating_content),
                    ],
                    EPOCH + index as u64 * DAY,
                )
            })
            .collect()
    }
}

/// A `data` command of fast-import's format.
fn fast_import_data(content: &str) -> String {
    format!("data {}\n{content}\n", content.len())
}
