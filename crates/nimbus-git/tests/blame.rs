//! Blame against real git: fixture repositories are made with the `git`
//! CLI (or `git fast-import` for a generated history), and every hunk is
//! compared with `git blame --root --porcelain` (`--root`: root commits
//! are not boundaries, as in ours).

mod support;

use gix_hash::ObjectId;
use nimbus_git::blame::{self, Blame, BlameHunk, BlameLimits, BlameOutcome};
use std::collections::{HashMap, HashSet};
use support::Repo;

/// One repository with a file for each case: linear edits (changed,
/// inserted and deleted lines), an empty file, a last line without `\n`,
/// CRLF lines, a binary file, a file deleted and re-added, a merge where
/// each side changed different lines, a conflict resolved by hand, and a
/// file created on a branch and changed after the merge. Every line of a
/// file is unique, so diffs are unambiguous, except in `twin.txt` and
/// `twin2.txt`: both sides add the line `same`, so which parent a merge
/// passes it to decides the answer (the merge takes the second parent's
/// `twin.txt` unchanged: git's fast path gives that parent everything;
/// in `twin2.txt`, which neither parent has as merged, the first parent
/// takes it).
const SCENARIOS: &str = r#"
mkdir dir
printf 'l1\nl2\nl3\nl4\nl5\n' > linear.txt
: > empty.txt
printf 'n1\nn2' > nonl.txt
printf 'c1\r\nc2\r\nc3\r\n' > crlf.txt
printf 'bin\0ary\n' > bin.dat
printf 'm1\nm2\nm3\nm4\nm5\nm6\n' > merged.txt
printf 'k1\nk2\nk3\n' > conflict.txt
printf 'r1\nr2\n' > readded.txt
printf 'd1\n' > dir/inner.txt
printf 't1\nt2\n' > twin.txt
printf 'u1\nu2\n' > twin2.txt
commit "root"
printf 'l1\nl2\nl3 changed\nl4\nl5\n' > linear.txt
printf 'n1\nn2\nn3' > nonl.txt
printf 'c1\r\nc2 changed\r\nc3\r\n' > crlf.txt
commit "second"
git rm -q readded.txt
printf 'l0\nl1\nl2\nl3 changed\nl4\nl4b\nl4c\nl5\n' > linear.txt
commit "third: insert lines, delete a file"
printf 'l0\nl1\nl3 changed\nl4\nl4c\nl5\nl6\n' > linear.txt
printf 'r1\nr2\nr3\n' > readded.txt
commit "fourth: delete lines, re-add the file"
git checkout -q -b side
printf 'm1\nm2 side\nm3\nm4\nm5\nm6\nm7 side\n' > merged.txt
printf 'k1\nk2 side\nk3\n' > conflict.txt
printf 'b1\nb2\n' > branch.txt
printf 't1\nsame\nt2\n' > twin.txt
printf 'u1\nsame\nu2\nside only\n' > twin2.txt
commit "side 1"
printf 'b1\nb2 changed\nb3\n' > branch.txt
commit "side 2"
git checkout -q main
printf 'm0 main\nm1\nm2\nm3\nm4\nm5 main\nm6\n' > merged.txt
printf 'k1\nk2 main\nk3\n' > conflict.txt
printf 't1\nsame\nt2\nmain only\n' > twin.txt
printf 'main first\nu1\nsame\nu2\n' > twin2.txt
commit "main 1"
stamp
git merge -q --no-ff --no-edit side >/dev/null 2>&1 || true
printf 'k1\nk2 main\nk2 side\nk2 resolved\nk3\n' > conflict.txt
printf 't1\nsame\nt2\n' > twin.txt
git add -A
git commit -q --no-edit
printf 'b0\nb1\nb2 changed\nb3\n' > branch.txt
printf 'l0\nl1\nl3 changed\nl4\nl4c\nl5\nl6\nl7' > linear.txt
commit "after the merge"
"#;

/// What `git blame --root --porcelain` says: the groups and, per commit,
/// author name, mail, time and summary.
struct GitBlame {
    hunks: Vec<BlameHunk>,
    commits: HashMap<ObjectId, (String, String, i64, String)>,
}

fn git_blame(repo: &Repo, commit: ObjectId, path: &str) -> GitBlame {
    let hex = commit.to_hex().to_string();
    let out = repo.git_bytes(["blame", "--root", "--porcelain", &hex, "--", path]);
    let mut hunks = Vec::new();
    let mut commits: HashMap<ObjectId, (String, String, i64, String)> = HashMap::new();
    let mut current = None;
    for line in out.split(|&b| b == b'\n') {
        if line.is_empty() || line.starts_with(b"\t") {
            continue;
        }
        let line = String::from_utf8_lossy(line);
        let (key, value) = line.split_once(' ').unwrap_or((&line, ""));
        if key.len() == 40 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
            let id = ObjectId::from_hex(key.as_bytes()).expect("hex id");
            current = Some(id);
            let numbers: Vec<u32> = value
                .split(' ')
                .map(|n| n.parse().expect("number"))
                .collect();
            if let [orig, start, len] = numbers[..] {
                hunks.push(BlameHunk {
                    commit: id,
                    start,
                    len,
                    orig_start: orig,
                    boundary: false,
                });
            }
            continue;
        }
        assert_ne!(key, "boundary", "no boundaries with --root");
        let Some(id) = current else { continue };
        let entry = commits.entry(id).or_default();
        match key {
            "author" => entry.0 = value.to_owned(),
            "author-mail" => entry.1 = value.to_owned(),
            "author-time" => entry.2 = value.parse().expect("time"),
            "summary" => entry.3 = value.to_owned(),
            _ => {}
        }
    }
    GitBlame { hunks, commits }
}

fn blamed(repo: &Repo, commit: ObjectId, path: &str, limits: &BlameLimits) -> Blame {
    let mut objects = repo.objects();
    match blame::blame(&mut objects, commit, path.as_bytes(), limits).expect("blame") {
        BlameOutcome::Blamed(blame) => blame,
        other => panic!("{path} at {commit}: expected a blame, got {other:?}"),
    }
}

/// Blame `path` at `commit` and require git's hunks and commit facts.
fn assert_matches_git(repo: &Repo, commit: ObjectId, path: &str) -> Blame {
    let ours = blamed(repo, commit, path, &BlameLimits::default());
    let git = git_blame(repo, commit, path);
    assert_eq!(ours.hunks, git.hunks, "{path} at {commit}");
    assert!(!ours.truncated);
    let total: u32 = ours.hunks.iter().map(|hunk| hunk.len).sum();
    assert_eq!(total, ours.line_count, "{path} at {commit}");
    let named: HashSet<ObjectId> = ours.hunks.iter().map(|hunk| hunk.commit).collect();
    assert_eq!(named, ours.commits.keys().copied().collect(), "{path}");
    for (id, (name, mail, time, summary)) in &git.commits {
        let summary_ours = &ours.commits[id];
        assert_eq!(&summary_ours.author.name, name);
        assert_eq!(&format!("<{}>", summary_ours.author.email), mail);
        assert_eq!(&summary_ours.author.time, time);
        assert_eq!(&summary_ours.summary, summary);
    }
    ours
}

/// The commit each line (1-based, by index + 1) is blamed on.
fn per_line(hunks: &[BlameHunk]) -> Vec<(ObjectId, u32, bool)> {
    hunks
        .iter()
        .flat_map(|hunk| {
            (0..hunk.len).map(move |offset| (hunk.commit, hunk.orig_start + offset, hunk.boundary))
        })
        .collect()
}

#[test]
fn every_scenario_matches_git_blame() {
    let repo = Repo::new(SCENARIOS);
    let files = [
        "linear.txt",
        "empty.txt",
        "nonl.txt",
        "crlf.txt",
        "merged.txt",
        "conflict.txt",
        "readded.txt",
        "branch.txt",
        "dir/inner.txt",
        "twin.txt",
        "twin2.txt",
    ];
    for rev in ["main", "main~1", "main~1^2", "main~2", "main~4", "main~6"] {
        let commit = repo.id(rev);
        for path in files {
            let exists = repo
                .git(&["ls-tree", "--name-only", rev, "--", path])
                .lines()
                .count()
                == 1;
            if exists {
                assert_matches_git(&repo, commit, path);
            }
        }
    }
}

#[test]
fn scenario_lines_are_blamed_where_expected() {
    let repo = Repo::new(SCENARIOS);
    let head = repo.id("main");
    let merge = repo.id("main~1");
    let main_1 = repo.id("main~2");
    let side_1 = repo.id("side~1");
    let fourth = repo.id("main~3");
    let second = repo.id("main~5");
    let root = repo.id("main~6");

    let conflict = per_line(&blamed(&repo, head, "conflict.txt", &BlameLimits::default()).hunks);
    let commits: Vec<ObjectId> = conflict.iter().map(|line| line.0).collect();
    // k1, k2 main, k2 side, k2 resolved, k3.
    assert_eq!(commits, [root, main_1, side_1, merge, root]);

    let readded = blamed(&repo, head, "readded.txt", &BlameLimits::default());
    assert_eq!(readded.hunks.len(), 1);
    assert_eq!(readded.hunks[0].commit, fourth);

    // `n2` gained its `\n` in "second": a different line to git.
    let nonl = per_line(&blamed(&repo, head, "nonl.txt", &BlameLimits::default()).hunks);
    let commits: Vec<ObjectId> = nonl.iter().map(|line| line.0).collect();
    assert_eq!(commits, [root, second, second]);

    let empty = blamed(&repo, head, "empty.txt", &BlameLimits::default());
    assert_eq!((empty.line_count, empty.hunks.len()), (0, 0));
    assert!(empty.commits.is_empty());

    // Both sides added `same`: the merge kept the second parent's
    // `twin.txt` as it was, so everything passes to that parent; in
    // `twin2.txt` the first parent is offered the line first.
    let twin = per_line(&blamed(&repo, head, "twin.txt", &BlameLimits::default()).hunks);
    let commits: Vec<ObjectId> = twin.iter().map(|line| line.0).collect();
    assert_eq!(commits, [root, side_1, root]);
    let twin2 = per_line(&blamed(&repo, head, "twin2.txt", &BlameLimits::default()).hunks);
    let commits: Vec<ObjectId> = twin2.iter().map(|line| line.0).collect();
    assert_eq!(commits, [main_1, root, main_1, root, side_1]);

    let crlf = blamed(&repo, head, "crlf.txt", &BlameLimits::default());
    assert_eq!(crlf.line_count, 3);
    let commits: Vec<ObjectId> = per_line(&crlf.hunks).iter().map(|l| l.0).collect();
    assert_eq!(commits, [root, second, root]);
}

#[test]
fn binary_missing_and_directories_are_refused() {
    let repo = Repo::new(SCENARIOS);
    let head = repo.id("main");
    let mut objects = repo.objects();
    let limits = BlameLimits::default();
    let mut outcome =
        |path: &[u8], limits: &BlameLimits| blame::blame(&mut objects, head, path, limits);
    assert_eq!(
        outcome(b"bin.dat", &limits).expect("blame"),
        BlameOutcome::Binary
    );
    for missing in [
        &b"nope.txt"[..],
        b"linear.txt/x",
        b"../linear.txt",
        b"dir/x",
    ] {
        assert_eq!(
            outcome(missing, &limits).expect("blame"),
            BlameOutcome::NotFound,
            "{missing:?}"
        );
    }
    for directory in [&b"dir"[..], b"dir/", b""] {
        assert_eq!(
            outcome(directory, &limits).expect("blame"),
            BlameOutcome::NotAFile
        );
    }
    let small = BlameLimits {
        max_blob_bytes: 4,
        ..BlameLimits::default()
    };
    assert!(matches!(
        outcome(b"linear.txt", &small).expect("blame"),
        BlameOutcome::TooLarge { size } if size > 4
    ));
    let short = BlameLimits {
        max_lines: 2,
        ..BlameLimits::default()
    };
    assert_eq!(
        outcome(b"linear.txt", &short).expect("blame"),
        BlameOutcome::TooManyLines { lines: 8 }
    );
    let blob = repo.id("main:linear.txt");
    assert!(blame::blame(&mut objects, blob, b"linear.txt", &limits).is_err());
}

#[test]
fn a_generated_history_matches_git_blame_for_every_line() {
    let (repo, marks) = Repo::fast_import(&support::generated_history(0x5eed_b1a3e, 220));
    let merges = repo.git(&["rev-list", "--merges", "--all"]).lines().count();
    assert!(merges >= 10, "only {merges} merges");
    let mut commits: Vec<ObjectId> = marks.iter().skip(1).step_by(20).copied().collect();
    commits.push(repo.id("main"));
    commits.push(repo.id("side"));
    let mut blamed_commits = HashSet::new();
    for commit in commits {
        let blame = assert_matches_git(&repo, commit, "gen.txt");
        assert!(blame.line_count > 0);
        blamed_commits.extend(blame.commits.into_keys());
    }
    assert!(
        blamed_commits.len() > 20,
        "{} commits",
        blamed_commits.len()
    );
}

#[test]
fn the_walk_limit_marks_boundaries_and_keeps_resolved_lines_exact() {
    let (repo, _) = Repo::fast_import(&support::generated_history(0x7_0c0ffee, 150));
    let head = repo.id("main");
    let git = per_line(&git_blame(&repo, head, "gen.txt").hunks);
    let final_lines = repo.git(&["show", "main:gen.txt"]);
    let final_lines: Vec<&str> = final_lines.lines().collect();
    for max_commits in [0, 1, 5, 20, 60] {
        let limits = BlameLimits {
            max_commits,
            ..BlameLimits::default()
        };
        let ours = blamed(&repo, head, "gen.txt", &limits);
        let lines = per_line(&ours.hunks);
        assert_eq!(lines.len(), git.len());
        assert_eq!(ours.truncated, lines.iter().any(|line| line.2));
        if max_commits < 20 {
            assert!(ours.truncated, "{max_commits}");
        }
        for (index, (ours, theirs)) in lines.iter().zip(&git).enumerate() {
            let (commit, orig, boundary) = *ours;
            if !boundary {
                assert_eq!((commit, orig), (theirs.0, theirs.1), "line {}", index + 1);
                continue;
            }
            // Cut short at `commit`: git's answer lies further back, and the
            // line is there at `orig`.
            let hex = commit.to_hex().to_string();
            let ancestors = repo.git(&["rev-list", &hex]);
            assert!(ancestors.contains(&theirs.0.to_hex().to_string()));
            let version = repo.git(&["show", &format!("{hex}:gen.txt")]);
            let line = version.lines().nth(orig as usize - 1);
            assert_eq!(line, Some(final_lines[index]), "line {}", index + 1);
        }
    }
    let everything = blamed(&repo, head, "gen.txt", &BlameLimits::default());
    assert!(!everything.truncated);
    // With no commit processed, every line stays on the start commit.
    let none = blamed(
        &repo,
        head,
        "gen.txt",
        &BlameLimits {
            max_commits: 0,
            ..BlameLimits::default()
        },
    );
    assert_eq!(
        none.hunks,
        [BlameHunk {
            commit: head,
            start: 1,
            len: none.line_count,
            orig_start: 1,
            boundary: true
        }]
    );
}

#[test]
fn an_older_version_over_the_size_limit_is_a_boundary() {
    let repo = Repo::new(SCENARIOS);
    let head = repo.id("main");
    let fourth = repo.id("main~3");
    let size = |rev: &str| repo.git(&["cat-file", "-s", &format!("{rev}:linear.txt")]);
    let final_size: u64 = size("main").trim().parse().expect("size");
    let third_size: u64 = size("main~4").trim().parse().expect("size");
    assert!(third_size > final_size);
    let limits = BlameLimits {
        max_blob_bytes: final_size,
        ..BlameLimits::default()
    };
    let ours = blamed(&repo, head, "linear.txt", &limits);
    assert!(ours.truncated);
    let git = per_line(&git_blame(&repo, head, "linear.txt").hunks);
    for (line, theirs) in per_line(&ours.hunks).iter().zip(&git) {
        if line.2 {
            // Stopped where the next version back is too large.
            assert_eq!(line.0, fourth);
        } else {
            assert_eq!((line.0, line.1), (theirs.0, theirs.1));
        }
    }
}
