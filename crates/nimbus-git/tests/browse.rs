//! Repository browsing against real git: fixture repositories are made with
//! the `git` CLI, and tree listings, revision names, history and diffs are
//! compared with `git ls-tree`, `git rev-parse`, `git log` and `git diff`.

mod support;

use gix_hash::ObjectId;
use nimbus_git::browse::{
    self, BrowseError, DiffLimits, EntryKind, FileStatus, LineKind, PathTarget, RevKind,
};
use nimbus_git::objects::Objects;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use support::Repo;

/// A linear history of 30 commits: files in subdirectories, a symlink, an
/// executable, a name with spaces and one that is not UTF-8, a binary file,
/// a file without a final newline; branch `feature/x`, lightweight tag `v1`,
/// annotated tag `v2`.
const LINEAR: &str = r#"
set -euo pipefail
n=0
commit() {
  n=$((n + 1))
  git add -A
  GIT_AUTHOR_DATE="$((1700000000 + n * 100)) +0100" GIT_COMMITTER_DATE="$((1700000000 + n * 100)) +0100" \
    git commit -q -m "$1" -m "body of $1"
}
mkdir -p src/util docs notes
printf 'hello\n' > README.md
printf 'fn main() {}\n' > src/lib.rs
printf 'pub fn help() {}\n' > src/util/helpers.rs
printf 'spaces\n' > 'with space.txt'
printf 'latin-1\n' > "$(printf 'caf\351.txt')"
printf '#!/bin/sh\necho hi\n' > tool.sh
chmod +x tool.sh
ln -s README.md link
printf 'bin\0ary\n' > bin.dat
head -c 9000 /dev/zero | tr '\0' a > late-nul.dat
printf '\0' >> late-nul.dat
printf 'guide\n' > docs/guide.md
seq 1 20 | sed 's/^/line /' > poem.txt
printf 'no newline' > tail.txt
commit "initial"
for i in $(seq 2 26); do
  case $((i % 3)) in
    0) echo "// change $i" >> src/lib.rs ;;
    1) echo "guide $i" >> docs/guide.md ;;
    2) echo "note $i" > notes/n$i.txt ;;
  esac
  if [ $i = 10 ]; then git tag v1; fi
  if [ $i = 12 ]; then git rm -q notes/n5.txt; fi
  commit "change $i"
done
sed -i 's/^line 5$/line five/; s/^line 15$/line fifteen\nline 15b/' poem.txt
echo 'line 21' >> poem.txt
printf 'no newline, changed' > tail.txt
commit "edit poem"
printf 'bin\0ary 2\n' > bin.dat
printf 'and more\n' >> 'with space.txt'
commit "binary"
chmod -x tool.sh
commit "mode"
git checkout -q -b feature/x
echo feature > src/feature.rs
commit "feature"
git checkout -q main
git rm -q README.md
echo "extra" > "$(printf 'caf\351.txt')"
commit "delete readme"
git tag -a v2 -m "version 2"
git repack -adq
"#;

/// Two branches merged twice: a clean merge and one whose result for `f`
/// is neither side's (an "evil" merge); committer times increase.
const MERGES: &str = r#"
set -euo pipefail
n=0
commit() {
  n=$((n + 1))
  git add -A
  GIT_AUTHOR_DATE="$((1700000000 + n * 100)) +0000" GIT_COMMITTER_DATE="$((1700000000 + n * 100)) +0000" \
    git commit -q -m "$1"
}
merge() {
  n=$((n + 1))
  GIT_AUTHOR_DATE="$((1700000000 + n * 100)) +0000" GIT_COMMITTER_DATE="$((1700000000 + n * 100)) +0000" \
    git merge -q --no-ff --no-edit "$@"
}
echo base > f; echo base > g; echo base > h
commit base
git checkout -q -b side
echo side1 > g; commit side1
git checkout -q main; echo main1 > h; commit main1
git checkout -q side; echo side2 >> g; commit side2
git checkout -q main; echo main2 > f; commit main2
merge side
git checkout -q side; echo side3 > f; commit side3
git checkout -q main; echo main3 >> h; commit main3
n=$((n + 1))
GIT_AUTHOR_DATE="$((1700000000 + n * 100)) +0000" GIT_COMMITTER_DATE="$((1700000000 + n * 100)) +0000" \
  git merge -q --no-ff --no-commit side >/dev/null 2>&1 || true
echo resolved > f
git add -A
GIT_AUTHOR_DATE="$((1700000000 + n * 100)) +0000" GIT_COMMITTER_DATE="$((1700000000 + n * 100)) +0000" \
  git commit -q --no-edit
echo after > g; commit after
git repack -adq
"#;

fn kind_of_mode(mode: &str) -> EntryKind {
    match mode {
        "040000" => EntryKind::Dir,
        "100644" => EntryKind::File,
        "100755" => EntryKind::Executable,
        "120000" => EntryKind::Symlink,
        "160000" => EntryKind::Submodule,
        other => panic!("unexpected mode {other}"),
    }
}

/// `git ls-tree -z <rev>`: name bytes, kind and id of each entry.
fn ls_tree(repo: &Repo, rev: &str) -> Vec<(Vec<u8>, EntryKind, ObjectId)> {
    let out = repo.git_bytes(["ls-tree", "-z", rev]);
    out.split(|&b| b == 0)
        .filter(|record| !record.is_empty())
        .map(|record| {
            let tab = record.iter().position(|&b| b == b'\t').expect("tab");
            let meta = std::str::from_utf8(&record[..tab]).expect("ascii");
            let fields: Vec<&str> = meta.split(' ').collect();
            (
                record[tab + 1..].to_vec(),
                kind_of_mode(fields[0]),
                ObjectId::from_hex(fields[2].as_bytes()).expect("hex"),
            )
        })
        .collect()
}

fn listing(target: PathTarget) -> (Vec<browse::TreeEntry>, bool) {
    match target {
        PathTarget::Tree {
            entries, truncated, ..
        } => (entries, truncated),
        other => panic!("expected a tree, got {other:?}"),
    }
}

#[test]
fn tree_listings_match_ls_tree() {
    let repo = Repo::new(LINEAR);
    let mut objects = repo.objects();
    let head = repo.id("main~1");
    for (path, rev) in [
        ("", "main~1"),
        ("src", "main~1:src"),
        ("src/util/", "main~1:src/util"),
    ] {
        let (entries, truncated) =
            listing(browse::lookup_path(&mut objects, head, path.as_bytes()).expect("lookup"));
        assert!(!truncated);
        let ours: HashSet<(Vec<u8>, EntryKind, ObjectId)> = entries
            .iter()
            .map(|e| (e.name_bytes.clone(), e.kind, e.id))
            .collect();
        let theirs: HashSet<_> = ls_tree(&repo, rev).into_iter().collect();
        assert_eq!(ours, theirs, "listing of {path:?}");
        assert_eq!(entries.len(), theirs.len());
        // Directories first, then files, each by name.
        let mut sorted = entries.clone();
        sorted.sort_by_key(|e| (e.kind != EntryKind::Dir, e.name_bytes.clone()));
        assert_eq!(entries, sorted);
    }
    let (root, _) = listing(browse::lookup_path(&mut objects, head, b"").expect("lookup"));
    let names: Vec<&str> = root.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(&names[..4], ["docs", "notes", "src", "README.md"]);
    let latin = root
        .iter()
        .find(|e| e.name_bytes == b"caf\xe9.txt")
        .expect("non-UTF-8 name listed");
    assert_eq!(latin.name, "caf\u{fffd}.txt");
    assert_eq!(
        root.iter().find(|e| e.name == "tool.sh").map(|e| e.kind),
        Some(EntryKind::File),
        "tool.sh lost its executable bit in 'mode'"
    );

    // The executable before the mode change, the symlink, odd names.
    let before = repo.id("main~2");
    match browse::lookup_path(&mut objects, before, b"tool.sh").expect("lookup") {
        PathTarget::Blob {
            id,
            size,
            executable,
        } => {
            assert!(executable);
            assert_eq!(id, repo.id("main~2:tool.sh"));
            let expected = repo.git(&["cat-file", "-s", "main~2:tool.sh"]);
            assert_eq!(size.to_string(), expected.trim());
        }
        other => panic!("expected a blob, got {other:?}"),
    }
    assert_eq!(
        browse::lookup_path(&mut objects, head, b"link").expect("lookup"),
        PathTarget::Symlink {
            id: repo.id("main~1:link"),
            target: "README.md".into()
        }
    );
    for path in [
        &b"with space.txt"[..],
        b"caf\xe9.txt",
        b"src/util/helpers.rs",
    ] {
        match browse::lookup_path(&mut objects, head, path).expect("lookup") {
            PathTarget::Blob {
                executable: false, ..
            } => {}
            other => panic!("{path:?}: expected a blob, got {other:?}"),
        }
    }
    for path in [
        &b"src/../README.md"[..],
        b"..",
        b".",
        b"./README.md",
        b"src//lib.rs",
        b"/README.md",
        b"missing",
        b"README.md/x",
        b"link/x",
        b"src/missing.rs",
    ] {
        assert_eq!(
            browse::lookup_path(&mut objects, head, path).expect("lookup"),
            PathTarget::NotFound,
            "{:?}",
            String::from_utf8_lossy(path)
        );
    }
    // A tree where a commit is expected is an error, not a panic.
    let tree = repo.id("main^{tree}");
    assert!(matches!(
        browse::lookup_path(&mut objects, tree, b""),
        Err(BrowseError::WrongKind { .. })
    ));
}

#[test]
fn revisions_resolve_like_git() {
    let repo = Repo::new(LINEAR);
    let mut objects = repo.objects();
    let refs = repo.refs();
    let resolve = |objects: &mut Objects, segments: &[&str]| {
        browse::resolve(&refs, objects, segments).expect("resolve")
    };

    let main = resolve(&mut objects, &["main", "src", "lib.rs"]).expect("main");
    assert_eq!(main.commit, repo.id("main"));
    assert_eq!(
        (main.label.as_str(), main.kind, main.consumed),
        ("main", RevKind::Branch, 1)
    );

    let feature = resolve(&mut objects, &["feature", "x", "src", "feature.rs"]).expect("feature/x");
    assert_eq!(feature.commit, repo.id("feature/x"));
    assert_eq!(
        (feature.label.as_str(), feature.kind, feature.consumed),
        ("feature/x", RevKind::Branch, 2)
    );
    assert!(resolve(&mut objects, &["feature"]).is_none());

    let v1 = resolve(&mut objects, &["v1"]).expect("lightweight tag");
    assert_eq!((v1.commit, v1.kind), (repo.id("v1"), RevKind::Tag));
    let v2 = resolve(&mut objects, &["v2", "docs"]).expect("annotated tag");
    assert_ne!(repo.id("v2"), repo.id("v2^{commit}"), "v2 is annotated");
    assert_eq!(
        (v2.commit, v2.kind, v2.consumed),
        (repo.id("v2^{commit}"), RevKind::Tag, 1)
    );

    let commit = repo.id("main~3");
    let hex = commit.to_hex().to_string();
    let full = resolve(&mut objects, &[&hex, "docs"]).expect("full id");
    assert_eq!(
        (full.commit, full.label.as_str(), full.kind, full.consumed),
        (commit, hex.as_str(), RevKind::Commit, 1)
    );
    let upper = hex.to_uppercase();
    assert_eq!(
        resolve(&mut objects, &[&upper]).map(|r| r.commit),
        Some(commit)
    );
    let short = repo.git(&["rev-parse", "--short=7", "main~3"]);
    let abbreviated = resolve(&mut objects, &[short.trim()]).expect("abbreviated id");
    assert_eq!(
        (abbreviated.commit, abbreviated.label),
        (commit, hex.clone())
    );
    // The annotated tag's own id peels to its commit.
    let tag_hex = repo.id("v2").to_hex().to_string();
    assert_eq!(
        resolve(&mut objects, &[&tag_hex]).map(|r| r.commit),
        Some(repo.id("v2^{commit}"))
    );

    for unknown in [
        &["nope"][..],
        &["0000000000000000000000000000000000000000"],
        &["abc"],
        &["zzzz"],
        &[],
        &[""],
    ] {
        assert_eq!(resolve(&mut objects, unknown), None, "{unknown:?}");
    }
    // A blob's id is not a revision.
    let blob = repo.id("main:docs/guide.md").to_hex().to_string();
    assert_eq!(resolve(&mut objects, &[&blob]), None);
}

#[test]
fn log_matches_git_log_on_linear_history() {
    let repo = Repo::new(LINEAR);
    let mut objects = repo.objects();
    let head = repo.id("main");
    let all = browse::log(&mut objects, head, None, 0, 1000).expect("log");
    assert_eq!(all.commits.len(), 30);
    assert!(!all.more && !all.walk_truncated);
    let ours: Vec<ObjectId> = all.commits.iter().map(|c| c.id).collect();
    assert_eq!(ours, repo.ids(&["log", "--format=%H", "main"]));

    for path in [
        "src/lib.rs",
        "src",
        "docs/guide.md",
        "notes",
        "notes/n5.txt",
        "poem.txt",
        "tool.sh",
        "README.md",
        "bin.dat",
        "missing",
    ] {
        let page = browse::log(&mut objects, head, Some(path.as_bytes()), 0, 1000).expect("log");
        let ours: Vec<ObjectId> = page.commits.iter().map(|c| c.id).collect();
        let theirs = repo.ids(&["log", "--format=%H", "main", "--", path]);
        assert_eq!(ours, theirs, "log -- {path}");
    }
    assert!(
        browse::log(&mut objects, head, Some(b"src/../poem.txt"), 0, 10)
            .expect("log")
            .commits
            .is_empty()
    );

    // Commit details agree with git's formatting.
    let detail = &all.commits[3];
    let theirs = repo.git(&[
        "show",
        "-s",
        "--format=%T%n%P%n%an%n%ae%n%at%n%cn%n%ce%n%ct%n%s",
        &detail.id.to_hex().to_string(),
    ]);
    let lines: Vec<&str> = theirs.lines().collect();
    assert_eq!(detail.tree.to_hex().to_string(), lines[0]);
    let parents: Vec<String> = detail
        .parents
        .iter()
        .map(|p| p.to_hex().to_string())
        .collect();
    assert_eq!(parents.join(" "), lines[1]);
    assert_eq!(
        (detail.author.name.as_str(), detail.author.email.as_str()),
        (lines[2], lines[3])
    );
    assert_eq!(detail.author.time.to_string(), lines[4]);
    assert_eq!(detail.author.offset_minutes, 60);
    assert_eq!(
        (
            detail.committer.name.as_str(),
            detail.committer.email.as_str()
        ),
        (lines[5], lines[6])
    );
    assert_eq!(detail.committer.time.to_string(), lines[7]);
    assert_eq!(detail.summary(), lines[8]);
    assert!(detail.message.contains("body of"));
}

#[test]
fn log_pages_concatenate_to_the_whole_log() {
    let repo = Repo::new(LINEAR);
    let mut objects = repo.objects();
    let head = repo.id("main");
    for path in [None, Some(&b"src"[..])] {
        let whole: Vec<ObjectId> = browse::log(&mut objects, head, path, 0, 1000)
            .expect("log")
            .commits
            .iter()
            .map(|c| c.id)
            .collect();
        let mut pages = Vec::new();
        let mut skip = 0;
        loop {
            let page = browse::log(&mut objects, head, path, skip, 7).expect("log");
            assert!(page.commits.len() <= 7);
            pages.extend(page.commits.iter().map(|c| c.id));
            skip += 7;
            if !page.more {
                assert!(page.commits.len() < 7 || pages.len() == whole.len());
                break;
            }
            assert_eq!(page.commits.len(), 7);
        }
        assert_eq!(pages, whole, "{path:?}");
    }
    let empty = browse::log(&mut objects, head, None, 1000, 10).expect("log");
    assert!(empty.commits.is_empty() && !empty.more);
    let none = browse::log(&mut objects, head, None, 0, 0).expect("log");
    assert!(none.commits.is_empty() && none.more);
}

#[test]
fn log_walks_merges_in_date_order() {
    let repo = Repo::new(MERGES);
    let mut objects = repo.objects();
    let head = repo.id("main");
    let all = browse::log(&mut objects, head, None, 0, 1000).expect("log");
    let ours: Vec<ObjectId> = all.commits.iter().map(|c| c.id).collect();
    // Every commit once, newest first: git's default order on increasing
    // committer times.
    assert_eq!(ours, repo.ids(&["log", "--format=%H", "main"]));
    assert_eq!(ours.iter().collect::<HashSet<_>>().len(), ours.len());
    let times: Vec<i64> = all.commits.iter().map(|c| c.committer.time).collect();
    assert!(times.windows(2).all(|w| w[0] > w[1]));
    assert!(all.commits.iter().filter(|c| c.parents.len() == 2).count() == 2);

    // The path rule: `git log --full-history -- path`, minus merges whose
    // entry equals some parent's.
    for path in ["f", "g", "h"] {
        let page = browse::log(&mut objects, head, Some(path.as_bytes()), 0, 1000).expect("log");
        let ours: Vec<ObjectId> = page.commits.iter().map(|c| c.id).collect();
        let full = repo.ids(&["log", "--format=%H", "--full-history", "main", "--", path]);
        let expected: Vec<ObjectId> = full
            .into_iter()
            .filter(|commit| {
                let hex = commit.to_hex().to_string();
                let parents = repo.git(&["show", "-s", "--format=%P", &hex]);
                parents.split_whitespace().all(|parent| {
                    let entry = |rev: &str| repo.git(&["ls-tree", rev, "--", path]);
                    entry(parent) != entry(&hex)
                })
            })
            .collect();
        assert_eq!(ours, expected, "log -- {path}");
    }
    // The evil merge is in the history of f; the clean merge is not.
    let f: Vec<ObjectId> = browse::log(&mut objects, head, Some(b"f"), 0, 100)
        .expect("log")
        .commits
        .iter()
        .map(|c| c.id)
        .collect();
    assert!(f.contains(&repo.id("main~1")));
    assert!(!f.contains(&repo.id("main~3")));
}

/// One file of `git diff --numstat -z`: additions and deletions (`None`
/// for binary files) per path.
fn numstat(repo: &Repo, old: &str, new: &str) -> HashMap<Vec<u8>, (Option<u32>, Option<u32>)> {
    let out = repo.git_bytes(["diff", "--numstat", "-z", old, new]);
    out.split(|&b| b == 0)
        .filter(|r| !r.is_empty())
        .map(|record| {
            let mut fields = record.splitn(3, |&b| b == b'\t');
            let mut number = || {
                let field = std::str::from_utf8(fields.next().expect("field")).expect("ascii");
                field.parse::<u32>().ok()
            };
            let (added, deleted) = (number(), number());
            (fields.next().expect("path").to_vec(), (added, deleted))
        })
        .collect()
}

/// `git diff -U3` of one path, from the first hunk header on, with the
/// headers' section headings removed.
fn git_patch(repo: &Repo, old: &str, new: &str, path: &[u8]) -> Vec<String> {
    let out = repo.git_bytes([
        OsStr::new("diff"),
        OsStr::new("-U3"),
        OsStr::new("--no-color"),
        OsStr::new(old),
        OsStr::new(new),
        OsStr::new("--"),
        OsStr::from_bytes(path),
    ]);
    let text = String::from_utf8_lossy(&out);
    text.lines()
        .skip_while(|line| !line.starts_with("@@"))
        .map(|line| {
            if let Some(rest) = line.strip_prefix("@@") {
                let end = rest.find("@@").expect("closing @@") + 4;
                line[..end].to_string()
            } else {
                line.to_string()
            }
        })
        .collect()
}

fn our_patch(file: &browse::FileDiff) -> Vec<String> {
    let mut lines = Vec::new();
    for hunk in &file.hunks {
        lines.push(hunk.header());
        for line in &hunk.lines {
            let sign = match line.kind {
                LineKind::Context => ' ',
                LineKind::Added => '+',
                LineKind::Removed => '-',
            };
            lines.push(format!("{sign}{}", line.text));
            if line.no_newline {
                lines.push("\\ No newline at end of file".into());
            }
        }
    }
    lines
}

const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

#[test]
fn diffs_match_git_diff() {
    let repo = Repo::new(LINEAR);
    let mut objects = repo.objects();
    let commits = repo.ids(&["log", "--format=%H", "--all"]);
    let mut seen = HashSet::new();
    for commit in &commits {
        let detail = browse::commit_detail(&mut objects, *commit).expect("commit");
        let new = commit.to_hex().to_string();
        let old = match detail.parents.first() {
            Some(parent) => parent.to_hex().to_string(),
            None => EMPTY_TREE.to_string(),
        };
        let old_tree = detail.parents.first().map(|p| {
            browse::commit_detail(&mut objects, *p)
                .expect("parent")
                .tree
        });
        let result =
            browse::diff(&mut objects, old_tree, detail.tree, DiffLimits::default()).expect("diff");
        assert!(!result.truncated);
        let theirs = numstat(&repo, &old, &new);
        let ours: HashMap<Vec<u8>, (Option<u32>, Option<u32>)> = result
            .files
            .iter()
            .map(|f| (f.path_bytes.clone(), (f.additions, f.deletions)))
            .collect();
        assert_eq!(ours, theirs, "numstat of {new}");
        let mut paths: Vec<&Vec<u8>> = result.files.iter().map(|f| &f.path_bytes).collect();
        let sorted = {
            let mut sorted = paths.clone();
            sorted.sort();
            sorted
        };
        assert_eq!(paths, sorted, "path order");
        paths.dedup();
        assert_eq!(paths.len(), result.files.len());

        let statuses = repo.git_bytes(["diff", "--name-status", "-z", &old, &new]);
        let statuses: Vec<&[u8]> = statuses
            .split(|&b| b == 0)
            .filter(|r| !r.is_empty())
            .collect();
        for pair in statuses.chunks(2) {
            let file = result
                .files
                .iter()
                .find(|f| f.path_bytes == pair[1])
                .expect("file listed");
            let status = match pair[0] {
                b"A" => FileStatus::Added,
                b"D" => FileStatus::Deleted,
                b"M" => FileStatus::Modified,
                other => panic!("unexpected status {other:?}"),
            };
            assert_eq!(file.status, status);
            assert_eq!(file.old_id.is_some(), status != FileStatus::Added);
            assert_eq!(file.new_id.is_some(), status != FileStatus::Deleted);
            seen.insert(pair[0].to_vec());
        }

        for file in &result.files {
            assert!(!file.truncated);
            assert_eq!(file.binary, file.additions.is_none(), "{:?}", file.new_path);
            if file.binary {
                assert!(file.hunks.is_empty());
                seen.insert(b"binary".to_vec());
                continue;
            }
            assert_eq!(
                our_patch(file),
                git_patch(&repo, &old, &new, &file.path_bytes),
                "diff of {:?} in {new}",
                file.new_path.as_ref().or(file.old_path.as_ref())
            );
            let added = file
                .hunks
                .iter()
                .flat_map(|h| &h.lines)
                .filter(|l| l.kind == LineKind::Added);
            assert_eq!(added.count() as u32, file.additions.unwrap_or(0));
        }
    }
    for what in [&b"A"[..], b"D", b"M", b"binary"] {
        assert!(
            seen.contains(what),
            "{:?} was covered",
            String::from_utf8_lossy(what)
        );
    }

    // The poem edit: two hunks, line numbers on both sides.
    let poem = repo.id("main~3");
    let detail = browse::commit_detail(&mut objects, poem).expect("commit");
    assert_eq!(detail.summary(), "edit poem");
    let parent_tree = browse::commit_detail(&mut objects, detail.parents[0])
        .expect("parent")
        .tree;
    let result = browse::diff(
        &mut objects,
        Some(parent_tree),
        detail.tree,
        DiffLimits::default(),
    )
    .expect("diff");
    let file = result
        .files
        .iter()
        .find(|f| f.new_path.as_deref() == Some("poem.txt"))
        .expect("poem changed");
    let headers: Vec<String> = file.hunks.iter().map(|h| h.header()).collect();
    assert_eq!(headers, ["@@ -2,7 +2,7 @@", "@@ -12,9 +12,11 @@"]);
    let five = file.hunks[0]
        .lines
        .iter()
        .find(|l| l.kind == LineKind::Added)
        .expect("an added line");
    assert_eq!(
        (five.text.as_str(), five.old_no, five.new_no),
        ("line five", None, Some(5))
    );
    let context = &file.hunks[1].lines[0];
    assert_eq!(
        (context.kind, context.old_no, context.new_no),
        (LineKind::Context, Some(12), Some(12))
    );
    // The mode change: listed, no lines.
    let mode = repo.id("main~1");
    let detail = browse::commit_detail(&mut objects, mode).expect("commit");
    let parent_tree = browse::commit_detail(&mut objects, detail.parents[0])
        .expect("parent")
        .tree;
    let result = browse::diff(
        &mut objects,
        Some(parent_tree),
        detail.tree,
        DiffLimits::default(),
    )
    .expect("diff");
    assert_eq!(result.files.len(), 1);
    assert_eq!(
        (result.files[0].old_kind, result.files[0].new_kind),
        (Some(EntryKind::Executable), Some(EntryKind::File))
    );
    assert_eq!(
        (result.files[0].additions, result.files[0].deletions),
        (Some(0), Some(0))
    );
}

#[test]
fn diff_limits_truncate_without_losing_files() {
    let repo = Repo::new(LINEAR);
    let mut objects = repo.objects();
    let root = browse::commit_detail(&mut objects, repo.id("main~29")).expect("root");
    assert!(root.parents.is_empty());
    let whole = browse::diff(&mut objects, None, root.tree, DiffLimits::default()).expect("diff");
    let files = whole.files.len();
    assert_eq!(files, 12);
    assert!(whole.files.iter().all(|f| f.status == FileStatus::Added));

    let few = DiffLimits {
        max_files: 2,
        ..DiffLimits::default()
    };
    let result = browse::diff(&mut objects, None, root.tree, few).expect("diff");
    assert_eq!(result.files.len(), files);
    assert!(result.files[..2].iter().all(|f| !f.truncated));
    assert!(
        result.files[2..]
            .iter()
            .all(|f| f.truncated && f.hunks.is_empty() && f.additions.is_none())
    );

    let small = DiffLimits {
        max_bytes_per_file: 100,
        ..DiffLimits::default()
    };
    let result = browse::diff(&mut objects, None, root.tree, small).expect("diff");
    let large: Vec<&str> = result
        .files
        .iter()
        .filter(|f| f.truncated)
        .map(|f| {
            assert!(f.additions.is_none() && f.hunks.is_empty());
            f.new_path.as_deref().unwrap_or_default()
        })
        .collect();
    assert_eq!(large, ["late-nul.dat", "poem.txt"]);

    let short = DiffLimits {
        max_lines_total: 25,
        ..DiffLimits::default()
    };
    let result = browse::diff(&mut objects, None, root.tree, short).expect("diff");
    let total: usize = result
        .files
        .iter()
        .flat_map(|f| &f.hunks)
        .map(|h| h.lines.len())
        .sum();
    assert!(total <= 25);
    let cut = result
        .files
        .iter()
        .position(|f| f.truncated)
        .expect("a file was cut");
    assert!(
        result.files[cut].additions.is_some(),
        "the file that did not fit keeps its stats"
    );
    assert!(result.files[cut + 1..].iter().all(|f| f.truncated));
}

#[test]
fn blobs_are_read_truncated_and_classified() {
    let repo = Repo::new(LINEAR);
    let mut objects = repo.objects();
    let poem = repo.id("main:poem.txt");
    let size: u64 = repo
        .git(&["cat-file", "-s", "main:poem.txt"])
        .trim()
        .parse()
        .expect("size");
    let whole = browse::read_blob(&mut objects, poem, usize::MAX).expect("blob");
    assert_eq!(
        whole.data,
        repo.git_bytes(["cat-file", "blob", "main:poem.txt"])
    );
    assert_eq!(
        (whole.size, whole.truncated, whole.binary),
        (size, false, false)
    );
    let head = browse::read_blob(&mut objects, poem, 10).expect("blob");
    assert_eq!(head.data, &whole.data[..10]);
    assert_eq!((head.size, head.truncated), (size, true));

    let binary = browse::read_blob(&mut objects, repo.id("main:bin.dat"), 2).expect("blob");
    assert!(binary.binary && binary.truncated);
    // A NUL after the first 8000 bytes does not make a file binary (git
    // agrees: numstat counts its lines).
    let late = browse::read_blob(&mut objects, repo.id("main:late-nul.dat"), 100).expect("blob");
    assert!(!late.binary);
    assert_eq!(late.size, 9001);
    let stats = numstat(&repo, EMPTY_TREE, "main");
    assert_eq!(stats[&b"late-nul.dat"[..]], (Some(1), Some(0)));
    assert_eq!(stats[&b"bin.dat"[..]], (None, None));

    let tree = repo.id("main^{tree}");
    assert!(matches!(
        browse::read_blob(&mut objects, tree, 10),
        Err(BrowseError::WrongKind { .. })
    ));
    let missing = ObjectId::from_hex(b"0123456789012345678901234567890123456789").expect("hex");
    assert!(matches!(
        browse::read_blob(&mut objects, missing, 10),
        Err(BrowseError::Missing { .. })
    ));
}

#[test]
fn comparisons_match_merge_base_and_rev_list() {
    let repo = Repo::new(MERGES);
    let mut objects = repo.objects();
    let revs = ["main", "side", "main~1", "main~2", "side~1", "main~4"];
    for base in revs {
        for head in revs {
            let comparison =
                browse::compare(&mut objects, repo.id(base), repo.id(head), 1000).expect("compare");
            let ahead = repo.ids(&["rev-list", &format!("{base}..{head}")]);
            let listed: Vec<ObjectId> = comparison.commits.iter().map(|c| c.id).collect();
            assert_eq!(
                listed.iter().collect::<HashSet<_>>(),
                ahead.iter().collect::<HashSet<_>>(),
                "{base}...{head}"
            );
            assert_eq!(comparison.ahead, ahead.len(), "{base}...{head}");
            let times: Vec<i64> = comparison
                .commits
                .iter()
                .map(|c| c.committer.time)
                .collect();
            assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
            let merge_base = repo.git(&["merge-base", base, head]);
            assert_eq!(
                comparison.merge_base.map(|id| id.to_hex().to_string()),
                Some(merge_base.trim().to_owned()),
                "merge-base {base} {head}"
            );
            assert!(!comparison.walk_truncated);
        }
    }
    let limited =
        browse::compare(&mut objects, repo.id("main~4"), repo.id("main"), 2).expect("compare");
    assert_eq!(limited.commits.len(), 2);
    assert!(limited.ahead > 2);
}
