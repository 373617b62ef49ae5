//! Deterministic repositories at three scales, written with `git fast-import` and cached on disk.
//!
//! Every scale is one history on `main`: the first commit adds every file, each later commit edits one to
//! three of them (a line changed, sometimes one added), ten minutes apart. The same seed gives the same
//! bytes, so the same commit ids, on every machine. On top of the history: 10,000 lightweight tags spread
//! over it as `refs/tags/many/{thousands}/{n}` (the `ls-remote` row, pushed to a repository of its own),
//! 100 tags `refs/tags/bench/{n}` (what the main repository carries, like a project's releases), and the
//! branches `base-1` and `base-100`, one and a hundred commits behind `main` (the starting points of the
//! incremental fetches).

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::git::Git;

/// How many tags the repository of the `ls-remote` row can carry (`refs/tags/many/…`).
pub const MANY_REFS: usize = 10_000;
/// How many tags the main benchmark repository carries (`refs/tags/bench/…`).
pub const RELEASE_TAGS: usize = 100;

/// The size of a generated repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    pub name: &'static str,
    pub commits: usize,
    pub files: usize,
    pub directories: usize,
}

/// The three scales of the issue: about 1,000 commits; 20,000 commits and 5,000 files; 200,000 commits.
pub const SCALES: [Scale; 3] = [
    Scale {
        name: "small",
        commits: 1_000,
        files: 500,
        directories: 25,
    },
    Scale {
        name: "medium",
        commits: 20_000,
        files: 5_000,
        directories: 250,
    },
    Scale {
        name: "large",
        commits: 200_000,
        files: 10_000,
        directories: 500,
    },
];

impl Scale {
    pub fn by_name(name: &str) -> Result<Scale> {
        SCALES
            .into_iter()
            .find(|scale| scale.name == name)
            .with_context(|| format!("unknown scale {name:?}: expected small, medium or large"))
    }
}

/// Bump when the generator changes, so caches made by an older one are not reused.
const GENERATOR_VERSION: u32 = 2;

/// A small deterministic random number generator (SplitMix64): the history must not depend on a
/// library's version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound > 0`).
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

fn blob(out: &mut impl Write, mark: usize, lines: &[String]) -> std::io::Result<()> {
    let mut data = String::new();
    for line in lines {
        data.push_str(line);
        data.push('\n');
    }
    write!(out, "blob\nmark :{mark}\ndata {}\n", data.len())?;
    out.write_all(data.as_bytes())?;
    out.write_all(b"\n")
}

/// Writes the fast-import stream of `scale`'s repository.
fn fast_import_stream(scale: Scale, out: &mut impl Write) -> std::io::Result<()> {
    let mut rng = Rng(42);
    let mut names: Vec<String> = (0..scale.files)
        .map(|i| {
            let directory = i % scale.directories;
            format!("src/dir{directory:03}/sub{}/file{i:05}.c", directory % 7)
        })
        .collect();
    names.push("README.md".to_owned());
    let mut contents: Vec<Vec<String>> = names
        .iter()
        .map(|name| {
            (0..40)
                .map(|k| format!("/* {name} line {k} */ int v{k} = {k};"))
                .collect()
        })
        .collect();
    contents[scale.files] = vec![
        "# Benchmark".to_owned(),
        String::new(),
        "A generated repository.".to_owned(),
    ];
    // Marks 1..=files+1 are the first blobs; commit marks and later blobs follow.
    let mut mark = 0;
    for lines in &contents {
        mark += 1;
        blob(out, mark, lines)?;
    }
    let mut commit_marks = Vec::with_capacity(scale.commits);
    let mut when: u64 = 1_100_000_000;
    for number in 0..scale.commits {
        let mut changed: Vec<(usize, usize)> = Vec::new();
        if number > 0 {
            for _ in 0..1 + rng.below(3) {
                let file = rng.below(scale.files);
                if changed.iter().any(|(f, _)| *f == file) {
                    continue;
                }
                let lines = &mut contents[file];
                let k = rng.below(lines.len());
                lines[k] = format!(
                    "/* {} edited in {number} */ int v{k} = {number};",
                    names[file]
                );
                if rng.below(10) < 3 {
                    let at = rng.below(lines.len());
                    lines.insert(at, format!("/* added in {number} */"));
                }
                mark += 1;
                blob(out, mark, lines)?;
                changed.push((file, mark));
            }
        }
        when += 600;
        mark += 1;
        commit_marks.push(mark);
        let message = if number == 0 {
            format!("Commit 0: add {} files\n", names.len())
        } else {
            let mut message = format!("Commit {number}: edit");
            for (file, _) in &changed {
                let _ = write!(message, " {}", names[*file]);
            }
            message.push('\n');
            message
        };
        writeln!(out, "commit refs/heads/main\nmark :{mark}")?;
        writeln!(out, "author Dev <dev@example.com> {when} +0000")?;
        writeln!(out, "committer Dev <dev@example.com> {when} +0000")?;
        write!(out, "data {}\n{message}", message.len())?;
        if number == 0 {
            for (index, name) in names.iter().enumerate() {
                writeln!(out, "M 100644 :{} {name}", index + 1)?;
            }
        } else {
            for (file, blob_mark) in &changed {
                writeln!(out, "M 100644 :{blob_mark} {}", names[*file])?;
            }
        }
        out.write_all(b"\n")?;
    }
    for tag in 0..RELEASE_TAGS {
        let commit = commit_marks[tag * scale.commits / RELEASE_TAGS];
        write!(out, "reset refs/tags/bench/{tag:03}\nfrom :{commit}\n\n")?;
    }
    for tag in 0..MANY_REFS {
        let commit = commit_marks[tag * scale.commits / MANY_REFS];
        write!(
            out,
            "reset refs/tags/many/{}/{tag:05}\nfrom :{commit}\n\n",
            tag / 1000
        )?;
    }
    for behind in [1, 100] {
        let commit = commit_marks[scale.commits.saturating_sub(behind + 1)];
        write!(out, "reset refs/heads/base-{behind}\nfrom :{commit}\n\n")?;
    }
    out.flush()
}

/// The cached repositories of one scale: the source every server is pushed from, and the client
/// repositories the incremental fetches start from.
#[derive(Debug)]
pub struct Fixture {
    /// Bare: `main`, the tags, `base-1` and `base-100`.
    pub source: PathBuf,
    /// Bare clone of `main` and the tags: the client of no-op fetches and pushes.
    pub full_client: PathBuf,
    /// Bare clones of `base-1` and `base-100` alone, without tags.
    pub behind_1: PathBuf,
    pub behind_100: PathBuf,
    /// The commit `main` points at.
    pub main: String,
}

/// Makes (or reuses) the repositories of `scale` under `cache`.
pub fn fixture(git: &Git, cache: &Path, scale: Scale) -> Result<Fixture> {
    let directory = cache.join(format!("v{GENERATOR_VERSION}-{}", scale.name));
    let done = directory.join("done");
    let fixture = Fixture {
        source: directory.join("source.git"),
        full_client: directory.join("full.git"),
        behind_1: directory.join("behind-1.git"),
        behind_100: directory.join("behind-100.git"),
        main: String::new(),
    };
    if !done.exists() {
        if directory.exists() {
            std::fs::remove_dir_all(&directory)
                .with_context(|| format!("removing the incomplete {}", directory.display()))?;
        }
        std::fs::create_dir_all(&directory)?;
        eprintln!(
            "nimbus-bench: generating the {} repository ({} commits, {} files)...",
            scale.name, scale.commits, scale.files
        );
        git.run(
            None,
            ["init", "-q", "--bare", "-b", "main"],
            [fixture.source.as_os_str()],
        )?;
        let mut importer = Command::new(git.program())
            .args(["fast-import", "--quiet"])
            .current_dir(&fixture.source)
            .envs(git.env())
            .stdin(Stdio::piped())
            .spawn()
            .context("starting git fast-import")?;
        let stdin = importer.stdin.take().context("fast-import's input")?;
        let mut writer = BufWriter::with_capacity(1 << 20, stdin);
        let written = fast_import_stream(scale, &mut writer);
        drop(writer);
        let status = importer.wait()?;
        written.context("writing to git fast-import")?;
        if !status.success() {
            bail!("git fast-import failed: {status}");
        }
        // One pack with good deltas, as a developer's repository would have.
        git.run(Some(&fixture.source), ["gc", "-q", "--prune=now"], [])?;
        // The clients: `main` with the tags it reaches, and the two starting points without tags.
        for (branch, client, tags) in [
            ("main", &fixture.full_client, "--tags"),
            ("base-1", &fixture.behind_1, "--no-tags"),
            ("base-100", &fixture.behind_100, "--no-tags"),
        ] {
            git.run(
                None,
                [
                    "clone",
                    "-q",
                    "--bare",
                    "--no-local",
                    tags,
                    "--single-branch",
                    "--branch",
                    branch,
                ],
                [fixture.source.as_os_str(), client.as_os_str()],
            )?;
        }
        std::fs::write(&done, b"")?;
    }
    let main = git.rev_parse(&fixture.source, "refs/heads/main")?;
    Ok(Fixture { main, ..fixture })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_deterministic_and_names_every_commit_and_tag() {
        let scale = Scale {
            name: "unit",
            commits: 30,
            files: 12,
            directories: 3,
        };
        let mut first = Vec::new();
        let mut second = Vec::new();
        fast_import_stream(scale, &mut first).expect("in memory");
        fast_import_stream(scale, &mut second).expect("in memory");
        assert_eq!(first, second);
        let text = String::from_utf8(first).expect("ASCII");
        assert_eq!(text.matches("commit refs/heads/main\n").count(), 30);
        assert_eq!(text.matches("reset refs/tags/bench/").count(), RELEASE_TAGS);
        assert_eq!(text.matches("reset refs/tags/many/").count(), MANY_REFS);
        assert!(text.contains("reset refs/heads/base-100\n"));
    }

    #[test]
    fn scales_are_found_by_name() {
        assert_eq!(
            Scale::by_name("medium").map(|s| s.commits).ok(),
            Some(20_000)
        );
        assert!(Scale::by_name("huge").is_err());
    }
}
