//! Test repositories made with real `git`, shared by the blame and
//! last-commit tests: from a fixture script, or from a generated
//! `git fast-import` stream.
#![allow(dead_code)]

use gix_hash::ObjectId;
use nimbus_git::objects::{ObjectDb, Objects};
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The shell functions fixture scripts use: `commit MESSAGE` commits
/// everything with the next timestamp; `merge ARGS…` merges with it.
pub const PRELUDE: &str = r#"
set -euo pipefail
n=0
stamp() { n=$((n + 1)); export GIT_AUTHOR_DATE="$((1700000000 + n * 100)) +0000" GIT_COMMITTER_DATE="$((1700000000 + n * 100)) +0000"; }
commit() { stamp; git add -A; git commit -q -m "$1"; }
merge() { stamp; git merge -q --no-ff --no-edit "$@"; }
"#;

pub struct Repo {
    _dir: tempfile::TempDir,
    pub work: PathBuf,
    home: PathBuf,
    pub db: ObjectDb,
}

impl Repo {
    fn init() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("work");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let status = Command::new("git")
            .args(["init", "-q", "-b", "main"])
            .arg(&work)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", &home)
            .status()
            .expect("git init");
        assert!(status.success());
        (dir, work, home)
    }

    fn command(program: &str, work: &Path, home: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(work)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", home)
            .env("GIT_AUTHOR_NAME", "Ann Author")
            .env("GIT_AUTHOR_EMAIL", "ann@example.com")
            .env("GIT_COMMITTER_NAME", "Carl Committer")
            .env("GIT_COMMITTER_EMAIL", "carl@example.com");
        command
    }

    fn open(dir: tempfile::TempDir, work: PathBuf, home: PathBuf) -> Self {
        let db = ObjectDb::open(&work.join(".git/objects")).expect("open the object database");
        Repo {
            _dir: dir,
            work,
            home,
            db,
        }
    }

    /// A repository made by running `script` (after [`PRELUDE`]) in it,
    /// then repacked.
    pub fn new(script: &str) -> Self {
        let (dir, work, home) = Self::init();
        let script = format!("{PRELUDE}\n{script}\ngit repack -adq\n");
        let status = Self::command("bash", &work, &home)
            .args(["-c", &script])
            .status()
            .expect("run the fixture script");
        assert!(status.success(), "fixture script failed");
        Self::open(dir, work, home)
    }

    /// A repository made by `git fast-import` from `stream`, and the
    /// commit of each mark (index 0 unused).
    pub fn fast_import(stream: &[u8]) -> (Self, Vec<ObjectId>) {
        let (dir, work, home) = Self::init();
        let marks_file = dir.path().join("marks");
        let mut child = Self::command("git", &work, &home)
            .args(["fast-import", "--quiet"])
            .arg(format!("--export-marks={}", marks_file.display()))
            .stdin(Stdio::piped())
            .spawn()
            .expect("start git fast-import");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stream)
            .expect("write the stream");
        assert!(child.wait().expect("git fast-import").success());
        let marks = std::fs::read_to_string(&marks_file).expect("read the marks");
        let mut ids = vec![ObjectId::null(gix_hash::Kind::Sha1)];
        for line in marks.lines() {
            let (mark, hex) = line.split_once(' ').expect("mark and id");
            let mark: usize = mark.trim_start_matches(':').parse().expect("mark");
            if ids.len() <= mark {
                ids.resize(mark + 1, ObjectId::null(gix_hash::Kind::Sha1));
            }
            ids[mark] = ObjectId::from_hex(hex.as_bytes()).expect("hex id");
        }
        (Self::open(dir, work, home), ids)
    }

    pub fn git_bytes<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Vec<u8> {
        let output = Self::command("git", &self.work, &self.home)
            .args(["-c", "core.quotePath=false", "--literal-pathspecs"])
            .args(args)
            .output()
            .expect("run git");
        assert!(
            output.status.success(),
            "git failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    pub fn git(&self, args: &[&str]) -> String {
        String::from_utf8(self.git_bytes(args)).expect("utf-8 output")
    }

    pub fn id(&self, rev: &str) -> ObjectId {
        let hex = self.git(&["rev-parse", "--verify", rev]);
        ObjectId::from_hex(hex.trim().as_bytes()).expect("hex id")
    }

    pub fn objects(&self) -> Objects {
        Objects::new(self.db.handle())
    }

    /// The ids `git args…` prints, one per line.
    pub fn ids(&self, args: &[&str]) -> Vec<ObjectId> {
        self.git(args)
            .lines()
            .map(|line| ObjectId::from_hex(line.as_bytes()).expect("hex id"))
            .collect()
    }

    /// The repository's branches and tags, as the metadata store holds them.
    pub fn refs(&self) -> Vec<nimbus_types::Ref> {
        self.git(&["for-each-ref", "--format=%(refname) %(objectname)"])
            .lines()
            .map(|line| {
                let (name, id) = line.split_once(' ').expect("two fields");
                nimbus_types::Ref {
                    name: nimbus_types::RefName::new(name.as_bytes()).expect("valid ref name"),
                    target: ObjectId::from_hex(id.as_bytes()).expect("hex id"),
                    peeled: None,
                }
            })
            .collect()
    }
}

/// A small deterministic pseudo-random generator (xorshift64*), so
/// generated histories are the same on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// Files as lines (each with its `\n`), by path.
pub type Files = std::collections::BTreeMap<String, Vec<String>>;

/// Builds a `git fast-import` stream: every commit lists all its files.
#[derive(Default)]
pub struct Stream {
    pub bytes: Vec<u8>,
    marks: usize,
}

impl Stream {
    /// Commit `files` on `branch` with parents `parents` (marks) at
    /// `time`; returns the new commit's mark.
    pub fn commit(
        &mut self,
        branch: &str,
        parents: &[usize],
        time: i64,
        message: &str,
        files: &Files,
    ) -> usize {
        self.marks += 1;
        let mark = self.marks;
        let out = &mut self.bytes;
        writeln!(out, "commit refs/heads/{branch}\nmark :{mark}").expect("write");
        writeln!(out, "author Ann Author <ann@example.com> {time} +0000").expect("write");
        writeln!(
            out,
            "committer Carl Committer <carl@example.com> {time} +0000"
        )
        .expect("write");
        writeln!(out, "data {}\n{message}", message.len()).expect("write");
        for (index, parent) in parents.iter().enumerate() {
            let verb = if index == 0 { "from" } else { "merge" };
            writeln!(out, "{verb} :{parent}").expect("write");
        }
        writeln!(out, "deleteall").expect("write");
        for (path, lines) in files {
            let content: String = lines.concat();
            writeln!(out, "M 100644 inline {path}\ndata {}", content.len()).expect("write");
            out.extend_from_slice(content.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        mark
    }
}

/// The paths of a generated history; `gen.txt` always exists, the others
/// come and go.
pub const GENERATED_PATHS: [&str; 7] = [
    "gen.txt",
    "a.txt",
    "e.txt",
    "dir/b.txt",
    "dir/c.txt",
    "dir/sub/d.txt",
    "dir/sub/f.txt",
];

/// One branch of a generated history.
#[derive(Clone, Default)]
struct Branch {
    tip: Option<usize>,
    /// Each file's lines, as ids.
    files: std::collections::BTreeMap<&'static str, Vec<u64>>,
}

/// A generated history: `git fast-import` input for branches `main` and
/// `side` with `steps` commits (edits, merges both ways, branch restarts),
/// committer times strictly increasing.
///
/// Every line ever written is unique (`<path> line <id>`), and lines never
/// move: per path, all lines ever created have one global order (a new
/// line goes right after its predecessor in that order), and every version
/// of the file lists its lines in that order. So any two versions have one
/// longest common subsequence, and every diff is unambiguous: git's and
/// ours must agree line for line.
pub fn generated_history(seed: u64, steps: usize) -> Vec<u8> {
    struct Generator {
        rng: Rng,
        next_line: u64,
        /// Per path, every line ever created in the global order.
        order: std::collections::HashMap<&'static str, Vec<u64>>,
    }
    impl Generator {
        fn position(&self, path: &str, line: u64) -> usize {
            self.order[path]
                .iter()
                .position(|&l| l == line)
                .expect("known line")
        }
        /// Insert `count` new lines at `at` in `lines`.
        fn insert(&mut self, path: &'static str, lines: &mut Vec<u64>, at: usize, count: usize) {
            let global = match at.checked_sub(1) {
                Some(before) => self.position(path, lines[before]) + 1,
                None => 0,
            };
            let new: Vec<u64> = (0..count)
                .map(|_| {
                    self.next_line += 1;
                    self.next_line
                })
                .collect();
            let order = self.order.entry(path).or_default();
            order.splice(global..global, new.iter().copied());
            lines.splice(at..at, new);
        }
        /// Change `lines` somehow (never a no-op).
        fn edit(&mut self, path: &'static str, lines: &mut Vec<u64>) {
            let operation = if lines.is_empty() {
                0
            } else if lines.len() > 120 {
                1
            } else {
                self.rng.below(3)
            };
            match operation {
                0 => {
                    let at = self.rng.below(lines.len() + 1);
                    let count = 1 + self.rng.below(4);
                    self.insert(path, lines, at, count);
                }
                _ => {
                    let at = self.rng.below(lines.len());
                    let count = (1 + self.rng.below(3)).min(lines.len() - at);
                    lines.drain(at..at + count);
                    if operation == 2 {
                        let new = 1 + self.rng.below(3);
                        self.insert(path, lines, at, new);
                    }
                }
            }
        }
        fn sorted(&self, path: &str, mut lines: Vec<u64>) -> Vec<u64> {
            lines.sort_by_key(|&line| self.position(path, line));
            lines.dedup();
            lines
        }
    }
    fn files(branch: &Branch) -> Files {
        branch
            .files
            .iter()
            .map(|(path, lines)| {
                let text = lines
                    .iter()
                    .map(|id| format!("{path} line {id}\n"))
                    .collect();
                (path.to_string(), text)
            })
            .collect()
    }

    let mut generator = Generator {
        rng: Rng::new(seed),
        next_line: 0,
        order: Default::default(),
    };
    let mut stream = Stream::default();
    let mut main = Branch::default();
    for (path, count) in [
        ("gen.txt", 30),
        ("a.txt", 3),
        ("dir/b.txt", 3),
        ("dir/sub/d.txt", 3),
    ] {
        let mut lines = Vec::new();
        generator.insert(path, &mut lines, 0, count);
        main.files.insert(path, lines);
    }
    let time = |step: usize| 1_700_000_000 + step as i64 * 100;
    main.tip = Some(stream.commit("main", &[], time(0), "root", &files(&main)));
    let mut side = main.clone();
    for step in 1..steps {
        let roll = generator.rng.below(100);
        let merge = (80..95).contains(&roll) && main.tip != side.tip;
        if merge {
            let (into, from, name) = if roll < 90 {
                (&mut main, &side, "main")
            } else {
                (&mut side, &main, "side")
            };
            let mut result = std::collections::BTreeMap::new();
            for path in GENERATED_PATHS {
                let choice = generator.rng.below(10);
                let lines = match (into.files.get(path), from.files.get(path)) {
                    (Some(ours), Some(theirs)) => Some(match choice {
                        0..=2 => ours.clone(),
                        3..=5 => theirs.clone(),
                        _ => {
                            let union = ours.iter().chain(theirs).copied().collect();
                            generator.sorted(path, union)
                        }
                    }),
                    (Some(one), None) | (None, Some(one)) => (choice < 7).then(|| one.clone()),
                    (None, None) => None,
                };
                let Some(mut lines) = lines.or_else(|| (path == "gen.txt").then(Vec::new)) else {
                    continue;
                };
                // Now and then an "evil" merge: a change of its own.
                if generator.rng.below(8) == 0 {
                    generator.edit(path, &mut lines);
                }
                result.insert(path, lines);
            }
            into.files = result;
            let parents = [into.tip.expect("tip"), from.tip.expect("tip")];
            let message = format!("merge {step}");
            into.tip = Some(stream.commit(name, &parents, time(step), &message, &files(into)));
            continue;
        }
        let (branch, name) = if roll < 45 {
            (&mut main, "main")
        } else {
            if roll >= 95 {
                // Restart the side branch from main.
                side = main.clone();
            }
            (&mut side, "side")
        };
        let changes = 1 + generator.rng.below(2);
        for change in 0..changes {
            let path = if change == 0 && generator.rng.below(2) == 0 {
                "gen.txt"
            } else {
                GENERATED_PATHS[generator.rng.below(GENERATED_PATHS.len())]
            };
            match branch.files.get_mut(path) {
                None => {
                    let mut lines = Vec::new();
                    let count = 1 + generator.rng.below(3);
                    generator.insert(path, &mut lines, 0, count);
                    branch.files.insert(path, lines);
                }
                Some(_) if path != "gen.txt" && generator.rng.below(8) == 0 => {
                    branch.files.remove(path);
                }
                Some(lines) => {
                    let mut edited = std::mem::take(lines);
                    generator.edit(path, &mut edited);
                    branch.files.insert(path, edited);
                }
            }
        }
        let parents: Vec<usize> = branch.tip.into_iter().collect();
        let message = format!("change {step}");
        branch.tip = Some(stream.commit(name, &parents, time(step), &message, &files(branch)));
    }
    stream.bytes
}
