//! The last commit of each directory entry against real git: every entry's
//! commit is compared with `git log -1 --format=%H <commit> -- <dir/entry>`
//! on fixture repositories made with the `git` CLI and on a generated
//! history (`git fast-import`).

mod support;

use gix_hash::ObjectId;
use nimbus_git::last_commit::{self, LastCommitLimits, LastCommits};
use nimbus_git::objects::Objects;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use support::Repo;

/// Files in nested directories, an executable whose mode changes, a
/// symlink, a name that is not UTF-8; a file created on a branch, a clean
/// merge where each side changed a different file of `src` (so `src`
/// differs from both parents), a directory deleted and re-added, and a
/// conflicting merge where one file is resolved by hand and another by
/// taking the second parent's version; `twin.txt`, added with the same
/// content on both branches (a merge follows its first parent).
const SCENARIOS: &str = r#"
mkdir -p src/util docs
echo a > a.txt
echo b > src/b.rs
echo u > src/util/u.rs
echo d > docs/d.md
echo same > same.txt
printf '#!/bin/sh\n' > tool.sh
ln -s a.txt link
echo latin > "$(printf 'caf\351.txt')"
echo c > c.txt
echo c2 > c2.txt
commit "root"
echo a2 > a.txt
commit "a2"
git checkout -q -b side
echo s > src/side.rs
commit "side adds src/side.rs"
echo b-side > src/b.rs
echo c-side > c.txt
echo c2-side > c2.txt
echo twin > twin.txt
commit "side changes b, c and c2"
git checkout -q main
echo u2 > src/util/u.rs
echo twin > twin.txt
commit "main changes util"
merge side
git rm -q -r docs
commit "delete docs"
mkdir docs
echo d2 > docs/d.md
chmod +x tool.sh
commit "re-add docs, tool.sh executable"
echo c-main > c.txt
echo c2-main > c2.txt
commit "main changes c and c2"
git checkout -q side
echo c-side-2 > c.txt
echo c2-side-2 > c2.txt
commit "side changes c and c2 again"
git checkout -q main
stamp
git merge -q --no-ff --no-edit side >/dev/null 2>&1 || true
echo c-resolved > c.txt
git checkout -q side -- c2.txt
git add -A
git commit -q --no-edit
echo latin2 > "$(printf 'caf\351.txt')"
commit "change the latin-1 name"
"#;

fn last_commits(
    repo: &Repo,
    commit: ObjectId,
    dir: &str,
    limits: &LastCommitLimits,
) -> LastCommits {
    let mut objects = repo.objects();
    last_commit::last_commits(&mut objects, commit, dir.as_bytes(), limits)
        .expect("last commits")
        .unwrap_or_else(|| panic!("{dir} is not a directory at {commit}"))
}

/// The entry names of `dir` at `commit`, from `git ls-tree`.
fn entry_names(repo: &Repo, commit: ObjectId, dir: &str) -> Vec<Vec<u8>> {
    let tree = format!("{}:{dir}", commit.to_hex());
    repo.git_bytes(["ls-tree", "-z", "--name-only", &tree])
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// What `git log -1 --format=%H <commit> -- <path>` prints.
fn git_last_commit(repo: &Repo, commit: ObjectId, path: &[u8]) -> Option<ObjectId> {
    let hex = commit.to_hex().to_string();
    let out = repo.git_bytes([
        OsStr::new("log"),
        OsStr::new("-1"),
        OsStr::new("--format=%H"),
        OsStr::new(&hex),
        OsStr::new("--"),
        OsStr::from_bytes(path),
    ]);
    let out = String::from_utf8(out).expect("hex");
    let line = out.trim();
    (!line.is_empty()).then(|| ObjectId::from_hex(line.as_bytes()).expect("hex id"))
}

fn full_path(dir: &str, name: &[u8]) -> Vec<u8> {
    let mut path = dir.as_bytes().to_vec();
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// Require git's answer for every entry of `dir` at `commit`.
fn assert_matches_git(repo: &Repo, commit: ObjectId, dir: &str) -> LastCommits {
    let ours = last_commits(repo, commit, dir, &LastCommitLimits::default());
    assert!(ours.complete);
    let names = entry_names(repo, commit, dir);
    assert_eq!(
        ours.entries.keys().cloned().collect::<HashSet<_>>(),
        names.iter().cloned().collect::<HashSet<_>>(),
        "{dir} at {commit}"
    );
    for name in &names {
        let path = full_path(dir, name);
        let git = git_last_commit(repo, commit, &path).expect("git finds a commit");
        assert_eq!(
            ours.entries[name],
            git,
            "{} at {commit}",
            String::from_utf8_lossy(&path)
        );
    }
    let named: HashSet<ObjectId> = ours.entries.values().copied().collect();
    assert_eq!(named, ours.commits.keys().copied().collect());
    ours
}

#[test]
fn every_scenario_matches_git_log() {
    let repo = Repo::new(SCENARIOS);
    let revs = [
        "main", "main~1", "main~1^2", "main~2", "main~3", "main~4", "main~5", "main~6", "main~8",
        "side",
    ];
    for rev in revs {
        let commit = repo.id(rev);
        for dir in ["", "src", "src/util", "docs"] {
            if dir.is_empty()
                || repo
                    .git(&["ls-tree", "-d", "--name-only", rev, "--", dir])
                    .trim()
                    == dir
            {
                assert_matches_git(&repo, commit, dir);
            }
        }
    }
}

#[test]
fn scenario_entries_name_the_expected_commits() {
    let repo = Repo::new(SCENARIOS);
    let head = repo.id("main");
    let root = last_commits(&repo, head, "", &LastCommitLimits::default());
    let summary = |name: &[u8]| root.commits[&root.entries[name]].summary.clone();
    assert_eq!(summary(b"a.txt"), "a2");
    assert_eq!(summary(b"same.txt"), "root");
    assert_eq!(summary(b"link"), "root");
    assert_eq!(summary(b"tool.sh"), "re-add docs, tool.sh executable");
    assert_eq!(summary(b"docs"), "re-add docs, tool.sh executable");
    // Resolved by hand: the merge changed it.
    assert!(summary(b"c.txt").starts_with("Merge branch 'side'"));
    // Resolved as the second parent's version: that side's commit.
    assert_eq!(summary(b"c2.txt"), "side changes c and c2 again");
    // Each side changed a different file of `src`: only the merge made it.
    assert!(summary(b"src").starts_with("Merge branch 'side'"));
    // The same in both parents of the merge: the first parent's history.
    assert_eq!(summary(b"twin.txt"), "main changes util");
    assert_eq!(summary(b"caf\xe9.txt"), "change the latin-1 name");
    let author = &root.commits[&root.entries[&b"a.txt"[..]]].author;
    assert_eq!(author.name, "Ann Author");

    let src = last_commits(&repo, head, "src", &LastCommitLimits::default());
    let summary = |name: &[u8]| src.commits[&src.entries[name]].summary.clone();
    assert_eq!(summary(b"side.rs"), "side adds src/side.rs");
    assert_eq!(summary(b"b.rs"), "side changes b, c and c2");
    assert_eq!(summary(b"util"), "main changes util");
}

#[test]
fn paths_that_are_not_directories_are_none() {
    let repo = Repo::new(SCENARIOS);
    let head = repo.id("main");
    let mut objects = repo.objects();
    let limits = LastCommitLimits::default();
    for path in [
        &b"a.txt"[..],
        b"nope",
        b"src/nope",
        b"../src",
        b"link",
        b"a.txt/x",
    ] {
        let found = last_commit::last_commits(&mut objects, head, path, &limits).expect("walk");
        assert_eq!(found, None, "{path:?}");
    }
    let found = last_commit::last_commits(&mut objects, head, b"src/", &limits).expect("walk");
    assert!(found.is_some_and(|found| found.entries.len() == 3));
    let tree = repo.id("main^{tree}");
    assert!(last_commit::last_commits(&mut objects, tree, b"", &limits).is_err());
}

#[test]
fn a_generated_history_matches_git_log_for_every_entry() {
    let (repo, marks) = Repo::fast_import(&support::generated_history(0x1a57_c0de, 220));
    let merges = repo.git(&["rev-list", "--merges", "--all"]).lines().count();
    assert!(merges >= 10, "only {merges} merges");
    let mut commits: Vec<ObjectId> = marks.iter().skip(1).step_by(15).copied().collect();
    commits.push(repo.id("main"));
    commits.push(repo.id("side"));
    let mut checked = 0;
    for commit in commits {
        let hex = commit.to_hex().to_string();
        let dirs = repo.git(&["ls-tree", "-r", "-d", "--name-only", &hex]);
        for dir in std::iter::once("").chain(dirs.lines()) {
            let result = assert_matches_git(&repo, commit, dir);
            checked += result.entries.len();
        }
    }
    assert!(checked > 100, "{checked} entries");
}

#[test]
fn the_walk_limit_leaves_out_unresolved_entries() {
    let (repo, _) = Repo::fast_import(&support::generated_history(0x1a57_c0de, 150));
    let head = repo.id("main");
    let names = entry_names(&repo, head, "");
    let git: Vec<Option<ObjectId>> = names
        .iter()
        .map(|name| git_last_commit(&repo, head, name))
        .collect();
    let mut seen_partial = false;
    for max_commits in [0, 1, 2, 5, 20, 100_000] {
        let limits = LastCommitLimits { max_commits };
        let ours = last_commits(&repo, head, "", &limits);
        for (name, git) in names.iter().zip(&git) {
            if let Some(found) = ours.entries.get(name) {
                assert_eq!(Some(*found), *git, "{max_commits}");
            }
        }
        let all = ours.entries.len() == names.len();
        assert!(all || !ours.complete, "{max_commits}");
        if max_commits == 0 {
            assert!(ours.entries.is_empty() && !ours.complete);
        }
        seen_partial |= !all && !ours.entries.is_empty();
        if max_commits == 100_000 {
            assert!(all && ours.complete);
        }
    }
    assert!(
        seen_partial,
        "some limit should resolve only part of the entries"
    );
}

/// The web UI walks through mappings renewed every so many reads
/// (`Objects::remapping`), so a long walk does not keep the whole pack
/// resident: answers must not depend on where the renewals fall.
#[test]
fn walks_through_renewed_mappings_give_the_same_answers() {
    let (repo, marks) = Repo::fast_import(&support::generated_history(0x1a57_c0de, 220));
    let head = repo.id("main");
    let limits = LastCommitLimits::default();
    for (commit, dir) in [(head, ""), (head, "dir"), (marks[40], "")] {
        let expected = assert_matches_git(&repo, commit, dir);
        for every in [1, 2, 5] {
            let mut objects = Objects::remapping(repo.db.clone(), every);
            let first = objects.handle.store();
            let ours = last_commit::last_commits(&mut objects, commit, dir.as_bytes(), &limits)
                .expect("walk")
                .expect("a directory");
            assert_eq!(ours, expected, "{dir:?} at {commit}, renewed every {every}");
            assert!(
                !Arc::ptr_eq(&first, &objects.handle.store()),
                "the mappings were renewed (every {every})"
            );
        }
    }
}

/// When the directory no longer holds the packs the database was opened
/// over, the walk goes on through the mappings it has rather than through
/// a store that sees other packs.
#[test]
fn renewed_mappings_are_not_taken_from_a_changed_directory() {
    let (repo, _) = Repo::fast_import(&support::generated_history(0x1a57_c0de, 60));
    let head = repo.id("main");
    let limits = LastCommitLimits::default();
    let expected = assert_matches_git(&repo, head, "");
    let mut objects = Objects::remapping(repo.db.clone(), 1);
    // A pack added beside the old ones (nothing removed).
    let later = repo.git(&["commit-tree", "main^{tree}", "-p", "main", "-m", "later"]);
    repo.git(&["update-ref", "refs/heads/later", later.trim()]);
    repo.git(&["repack", "-q"]);
    assert!(repo.db.remapped().is_err(), "the directory has a new pack");
    let first = objects.handle.store();
    let ours = last_commit::last_commits(&mut objects, head, b"", &limits)
        .expect("walk")
        .expect("a directory");
    assert_eq!(ours, expected);
    assert!(Arc::ptr_eq(&first, &objects.handle.store()));
}
