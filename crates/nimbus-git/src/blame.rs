//! `git blame` for one file at one commit: which commit last changed each
//! line, for the web UI's blame view.
//!
//! Like [`crate::browse`], this knows nothing of HTTP or the database and
//! works on an [`Objects`]; every walk is bounded by [`BlameLimits`] and the
//! result says when it was cut short rather than failing.
//!
//! The algorithm is git's (`blame.c`), without rename or copy detection
//! (`-M`, `-C`, and git's default following of whole-file renames): the
//! path is the same in every commit.
//! - Each *suspect* commit holds the line ranges it may still be blamed
//!   for, each range mapping the suspect's own line numbers to lines of the
//!   final file. Suspects are processed newest first (a priority queue by
//!   committer time); a commit reached from two children gets both sets
//!   of ranges.
//! - If some parent has the same blob at the path, every range passes to
//!   the first such parent unchanged (git's fast path).
//! - Otherwise the suspect's blob is diffed against each parent's (Myers,
//!   git's default, via imara-diff), first parent first: lines unchanged
//!   against a parent pass to it, renumbered in the parent's version, and
//!   are not offered to later parents. A parent without the path (or with
//!   a symlink where the suspect has a file, or the reverse: git's type
//!   change) takes nothing.
//! - What no parent takes (and everything of a root commit) is blamed on
//!   the suspect.
//!
//! Root commits are not boundaries here (like `git blame --root`):
//! [`BlameHunk::boundary`] only marks lines whose walk was cut short.

use crate::browse::{self, BrowseError, CommitSummary, EntryKind};
use crate::objects::Objects;
use gix_hash::ObjectId;
use gix_object::tree::EntryMode;
use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::rc::Rc;

/// The largest blob blamed, in bytes, and the largest version of it read
/// in the history ([`BlameLimits::max_blob_bytes`] is clamped to it).
pub const MAX_BLAME_BLOB_BYTES: u64 = 1 << 20;
/// The most lines a blamed file may have ([`BlameLimits::max_lines`] is
/// clamped to it).
pub const MAX_BLAME_LINES: usize = 100_000;
/// The most commits one blame processes ([`BlameLimits::max_commits`] is
/// clamped to it).
pub const MAX_BLAME_WALK: usize = 100_000;
/// How many bytes of blobs a blame keeps decoded between the steps of its
/// walk (a commit's version is read again as its child's parent version).
const BLOB_CACHE_BYTES: usize = 32 << 20;

/// Bounds of one [`blame`]; values above the `MAX_BLAME_*` constants are
/// clamped to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlameLimits {
    /// The largest blob (of the file, and of its versions in the history)
    /// read, in bytes.
    pub max_blob_bytes: u64,
    /// The most lines the file (and its versions in the history) may
    /// have.
    pub max_lines: usize,
    /// The most commits processed; lines still unresolved then are blamed
    /// on the commit they reached, marked [`BlameHunk::boundary`].
    pub max_commits: usize,
}

impl Default for BlameLimits {
    fn default() -> Self {
        BlameLimits {
            max_blob_bytes: MAX_BLAME_BLOB_BYTES,
            max_lines: MAX_BLAME_LINES,
            max_commits: MAX_BLAME_WALK,
        }
    }
}

/// What [`blame`] found at the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlameOutcome {
    /// Nothing at that path (or a path that cannot name anything).
    NotFound,
    /// A directory or a submodule (symlinks are blamed: their target is
    /// their content, as in git).
    NotAFile,
    /// A NUL byte in the first [`browse::BINARY_PROBE_BYTES`] bytes.
    Binary,
    /// The blob is larger than [`BlameLimits::max_blob_bytes`].
    TooLarge { size: u64 },
    /// The file has more than [`BlameLimits::max_lines`] lines.
    TooManyLines { lines: usize },
    /// The file's blame.
    Blamed(Blame),
}

/// A run of lines of the final file last changed by one commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlameHunk {
    /// The commit the lines are blamed on.
    pub commit: ObjectId,
    /// The first line in the blamed file, 1-based (as `git blame`).
    pub start: u32,
    /// How many lines (at least 1).
    pub len: u32,
    /// The first line's number in `commit`'s version of the file, 1-based.
    pub orig_start: u32,
    /// Whether the walk stopped at `commit` because of
    /// [`BlameLimits::max_commits`] (or because a parent's version of the
    /// file is over [`BlameLimits::max_blob_bytes`] or
    /// [`BlameLimits::max_lines`]): the lines may be older than `commit`.
    pub boundary: bool,
}

/// The blame of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blame {
    /// The blob blamed.
    pub blob: ObjectId,
    /// Hunks in line order, covering every line once. Consecutive lines
    /// from the same commit with consecutive original line numbers (and the
    /// same `boundary`) form one hunk, as the groups of `git blame
    /// --porcelain`.
    pub hunks: Vec<BlameHunk>,
    /// Every commit named by a hunk.
    pub commits: HashMap<ObjectId, CommitSummary>,
    /// How many lines the file has (a last line without `\n` counts).
    pub line_count: u32,
    /// Whether some hunk is a `boundary`: the walk was cut short.
    pub truncated: bool,
}

/// Blame the file at `path` in `commit` (see the module documentation for
/// the algorithm). Errors are broken or missing objects, and `commit` not
/// being a commit.
pub fn blame(
    objects: &mut Objects,
    commit: ObjectId,
    path: &[u8],
    limits: &BlameLimits,
) -> Result<BlameOutcome, BrowseError> {
    let max_blob_bytes = limits.max_blob_bytes.min(MAX_BLAME_BLOB_BYTES);
    let max_lines = limits.max_lines.min(MAX_BLAME_LINES);
    let max_commits = limits.max_commits.min(MAX_BLAME_WALK);
    let root = browse::tree_of_commit(objects, commit)?;
    let Some(segments) = browse::split_path(path) else {
        return Ok(BlameOutcome::NotFound);
    };
    if segments.is_empty() {
        return Ok(BlameOutcome::NotAFile);
    }
    let Some((mode, blob)) = browse::entry_at(objects, root, &segments)? else {
        return Ok(BlameOutcome::NotFound);
    };
    if !EntryKind::from_mode(mode).is_blob() {
        return Ok(BlameOutcome::NotAFile);
    }
    let size = objects
        .size(&blob)?
        .ok_or(BrowseError::Missing { id: blob })?;
    if size > max_blob_bytes {
        return Ok(BlameOutcome::TooLarge { size });
    }
    let mut walk = Walk {
        objects,
        segments,
        entries: HashMap::new(),
        blobs: HashMap::new(),
        blob_bytes: 0,
        max_blob_bytes,
        max_lines,
    };
    let Some(data) = walk.blob(blob)? else {
        return Ok(BlameOutcome::TooLarge { size });
    };
    if browse::is_binary(&data) {
        return Ok(BlameOutcome::Binary);
    }
    let lines = line_count(&data);
    if lines > max_lines {
        return Ok(BlameOutcome::TooManyLines { lines });
    }
    // `lines <= MAX_BLAME_LINES`, far below `u32::MAX`.
    let line_count = lines as u32;
    walk.entries.insert(root, Some((mode, blob)));
    let finished = walk.run(commit, blob, mode, line_count, max_commits)?;
    drop(data);
    let objects = walk.objects;

    // Which commit, original line and boundary flag each final line has.
    let mut by_line: Vec<Option<(ObjectId, u32, bool)>> = vec![None; lines];
    for (suspect, range, boundary) in &finished {
        for offset in 0..range.len {
            if let Some(slot) = by_line.get_mut((range.final_start + offset) as usize) {
                *slot = Some((*suspect, range.suspect_start + offset, *boundary));
            }
        }
    }
    let mut hunks: Vec<BlameHunk> = Vec::new();
    for (index, slot) in by_line.into_iter().enumerate() {
        // Every line is covered by construction; a gap would be a bug, and
        // is shown as the start commit's own line rather than a panic.
        let (suspect, orig, boundary) = slot.unwrap_or((commit, index as u32, true));
        let line = index as u32 + 1;
        if let Some(last) = hunks.last_mut()
            && last.commit == suspect
            && last.boundary == boundary
            && last.start + last.len == line
            && last.orig_start + last.len == orig + 1
        {
            last.len += 1;
            continue;
        }
        hunks.push(BlameHunk {
            commit: suspect,
            start: line,
            len: 1,
            orig_start: orig + 1,
            boundary,
        });
    }
    let mut commits = HashMap::new();
    for hunk in &hunks {
        if let Entry::Vacant(vacant) = commits.entry(hunk.commit) {
            vacant.insert(browse::commit_summary(objects, hunk.commit)?);
        }
    }
    Ok(BlameOutcome::Blamed(Blame {
        blob,
        truncated: hunks.iter().any(|hunk| hunk.boundary),
        hunks,
        commits,
        line_count,
    }))
}

/// How many lines `data` has, as imara-diff splits it: every `\n` ends one,
/// and trailing bytes without one are a last line.
fn line_count(data: &[u8]) -> usize {
    let newlines = data.iter().filter(|&&b| b == b'\n').count();
    newlines + usize::from(data.last().is_some_and(|&b| b != b'\n'))
}

/// Lines of a suspect's version (0-based `suspect_start`) that stand for
/// lines of the final file (0-based `final_start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lines {
    suspect_start: u32,
    final_start: u32,
    len: u32,
}

/// A commit and the lines it may be blamed for.
struct Suspect {
    blob: ObjectId,
    symlink: bool,
    lines: Vec<Lines>,
}

/// The state of one blame walk.
struct Walk<'a, 'p> {
    objects: &'a mut Objects,
    segments: Vec<&'p [u8]>,
    /// The entry at the path, per root tree.
    entries: HashMap<ObjectId, Option<(EntryMode, ObjectId)>>,
    /// Recently read blobs.
    blobs: HashMap<ObjectId, Rc<[u8]>>,
    blob_bytes: usize,
    max_blob_bytes: u64,
    max_lines: usize,
}

impl Walk<'_, '_> {
    /// The entry at the path in root tree `tree`.
    fn entry(&mut self, tree: ObjectId) -> Result<Option<(EntryMode, ObjectId)>, BrowseError> {
        if let Some(entry) = self.entries.get(&tree) {
            return Ok(*entry);
        }
        let entry = browse::entry_at(self.objects, tree, &self.segments)?;
        self.entries.insert(tree, entry);
        Ok(entry)
    }

    /// The contents of blob `id`, or `None` if it is larger than
    /// `max_blob_bytes`.
    fn blob(&mut self, id: ObjectId) -> Result<Option<Rc<[u8]>>, BrowseError> {
        if let Some(data) = self.blobs.get(&id) {
            return Ok(Some(Rc::clone(data)));
        }
        let size = self.objects.size(&id)?.ok_or(BrowseError::Missing { id })?;
        if size > self.max_blob_bytes {
            return Ok(None);
        }
        let data: Rc<[u8]> = Rc::from(browse::read_object(
            self.objects,
            id,
            gix_object::Kind::Blob,
            self.max_blob_bytes,
        )?);
        if self.blob_bytes + data.len() > BLOB_CACHE_BYTES {
            self.blobs.clear();
            self.blob_bytes = 0;
        }
        self.blob_bytes += data.len();
        self.blobs.insert(id, Rc::clone(&data));
        Ok(Some(data))
    }

    /// Walk from `start` (whose version of the file is `blob`, `lines`
    /// long): every line range with the commit it is blamed on and whether
    /// that is a boundary.
    fn run(
        &mut self,
        start: ObjectId,
        blob: ObjectId,
        mode: EntryMode,
        lines: u32,
        max_commits: usize,
    ) -> Result<Vec<(ObjectId, Lines, bool)>, BrowseError> {
        let mut finished = Vec::new();
        if lines == 0 {
            return Ok(finished);
        }
        let mut queue = Queue::default();
        let time = self
            .objects
            .commit(&start)?
            .ok_or(BrowseError::Missing { id: start })?
            .time;
        queue.add(
            start,
            time,
            blob,
            mode.is_link(),
            vec![Lines {
                suspect_start: 0,
                final_start: 0,
                len: lines,
            }],
        );
        let mut processed = 0usize;
        while let Some((id, suspect)) = queue.pop() {
            if processed == max_commits {
                finished.extend(suspect.lines.into_iter().map(|l| (id, l, true)));
                while let Some((id, suspect)) = queue.pop() {
                    finished.extend(suspect.lines.into_iter().map(|l| (id, l, true)));
                }
                break;
            }
            processed += 1;
            self.pass_blame(id, suspect, &mut queue, &mut finished)?;
        }
        Ok(finished)
    }

    /// Pass what `suspect` (commit `id`) holds to its parents, and record
    /// what none takes as blamed on it.
    fn pass_blame(
        &mut self,
        id: ObjectId,
        suspect: Suspect,
        queue: &mut Queue,
        finished: &mut Vec<(ObjectId, Lines, bool)>,
    ) -> Result<(), BrowseError> {
        let parents = self
            .objects
            .commit(&id)?
            .ok_or(BrowseError::Missing { id })?
            .parents
            .clone();
        // Each parent's version of the file, with the parent's time.
        let mut origins: Vec<(ObjectId, i64, ObjectId)> = Vec::new();
        for parent in parents {
            let info = self
                .objects
                .commit(&parent)?
                .ok_or(BrowseError::Missing { id: parent })?;
            let (tree, time) = (info.tree, info.time);
            if let Some((mode, blob)) = self.entry(tree)?
                && EntryKind::from_mode(mode).is_blob()
                && mode.is_link() == suspect.symlink
            {
                origins.push((parent, time, blob));
            }
        }
        if let Some(&(parent, time, blob)) = origins.iter().find(|o| o.2 == suspect.blob) {
            queue.add(parent, time, blob, suspect.symlink, suspect.lines);
            return Ok(());
        }
        let Some(ours) = self.blob(suspect.blob)? else {
            finished.extend(suspect.lines.into_iter().map(|l| (id, l, true)));
            return Ok(());
        };
        let mut remaining = suspect.lines;
        let mut diffed: HashSet<ObjectId> = HashSet::new();
        for (parent, time, blob) in origins {
            if remaining.is_empty() {
                break;
            }
            // A parent with the same version as an earlier one would only
            // be offered lines that version already refused.
            if !diffed.insert(blob) {
                continue;
            }
            let theirs = self
                .blob(blob)?
                .filter(|theirs| line_count(theirs) <= self.max_lines);
            let Some(theirs) = theirs else {
                // The parent's version is too large to diff: stop here.
                finished.extend(remaining.drain(..).map(|l| (id, l, true)));
                break;
            };
            let runs = unchanged_runs(&theirs, &ours);
            let (passed, kept) = split(remaining, &runs);
            if !passed.is_empty() {
                queue.add(parent, time, blob, suspect.symlink, passed);
            }
            remaining = kept;
        }
        finished.extend(remaining.into_iter().map(|l| (id, l, false)));
        Ok(())
    }
}

/// Suspects waiting to be processed, newest first by committer time (equal
/// times in the order they were reached).
#[derive(Default)]
struct Queue {
    heap: BinaryHeap<(i64, Reverse<u64>, ObjectId)>,
    waiting: HashMap<ObjectId, Suspect>,
    sequence: u64,
}

impl Queue {
    /// Give `lines` of commit `id` (whose version is `blob`) to it; a
    /// commit already waiting gets them added to its own.
    fn add(&mut self, id: ObjectId, time: i64, blob: ObjectId, symlink: bool, lines: Vec<Lines>) {
        if let Some(suspect) = self.waiting.get_mut(&id) {
            suspect.lines.extend(lines);
            return;
        }
        self.sequence += 1;
        self.heap.push((time, Reverse(self.sequence), id));
        self.waiting.insert(
            id,
            Suspect {
                blob,
                symlink,
                lines,
            },
        );
    }

    fn pop(&mut self) -> Option<(ObjectId, Suspect)> {
        while let Some((_, _, id)) = self.heap.pop() {
            if let Some(suspect) = self.waiting.remove(&id) {
                return Some((id, suspect));
            }
        }
        None
    }
}

/// A run of lines unchanged between a parent's version and the suspect's:
/// `len` lines from `after_start` in the suspect's version are the lines
/// from `before_start` in the parent's (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    after_start: u32,
    before_start: u32,
    len: u32,
}

/// The unchanged runs of a line diff from `before` to `after`, in order.
fn unchanged_runs(before: &[u8], after: &[u8]) -> Vec<Run> {
    use imara_diff::{Algorithm, Diff, InternedInput};
    let input = InternedInput::new(before, after);
    let mut diff = Diff::compute(Algorithm::Myers, &input);
    diff.postprocess_lines(&input);
    let after_len = input.after.len() as u32;
    let mut runs = Vec::new();
    let (mut after_at, mut before_at) = (0u32, 0u32);
    for hunk in diff.hunks() {
        if hunk.after.start > after_at {
            runs.push(Run {
                after_start: after_at,
                before_start: before_at,
                len: hunk.after.start - after_at,
            });
        }
        after_at = hunk.after.end;
        before_at = hunk.before.end;
    }
    if after_len > after_at {
        runs.push(Run {
            after_start: after_at,
            before_start: before_at,
            len: after_len - after_at,
        });
    }
    runs
}

/// Split `lines` of a suspect by the unchanged `runs` against a parent:
/// the parts inside a run, renumbered in the parent's version, and the
/// parts outside every run.
fn split(lines: Vec<Lines>, runs: &[Run]) -> (Vec<Lines>, Vec<Lines>) {
    let mut passed = Vec::new();
    let mut kept = Vec::new();
    for range in lines {
        let start = range.suspect_start;
        let end = start + range.len;
        let mut cursor = start;
        let first = runs.partition_point(|run| run.after_start + run.len <= start);
        for run in &runs[first..] {
            if run.after_start >= end {
                break;
            }
            let overlap_start = run.after_start.max(start);
            let overlap_end = (run.after_start + run.len).min(end);
            if overlap_start > cursor {
                kept.push(Lines {
                    suspect_start: cursor,
                    final_start: range.final_start + (cursor - start),
                    len: overlap_start - cursor,
                });
            }
            passed.push(Lines {
                suspect_start: run.before_start + (overlap_start - run.after_start),
                final_start: range.final_start + (overlap_start - start),
                len: overlap_end - overlap_start,
            });
            cursor = overlap_end;
        }
        if cursor < end {
            kept.push(Lines {
                suspect_start: cursor,
                final_start: range.final_start + (cursor - start),
                len: end - cursor,
            });
        }
    }
    (passed, kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_like_the_diff_splits_them() {
        assert_eq!(line_count(b""), 0);
        assert_eq!(line_count(b"a"), 1);
        assert_eq!(line_count(b"a\n"), 1);
        assert_eq!(line_count(b"a\r\nb"), 2);
        assert_eq!(line_count(b"\n\n"), 2);
    }

    #[test]
    fn ranges_split_at_unchanged_runs() {
        // Parent: a b c d; suspect: a X c d Y.
        let runs = unchanged_runs(b"a\nb\nc\nd\n", b"a\nX\nc\nd\nY\n");
        assert_eq!(
            runs,
            [
                Run {
                    after_start: 0,
                    before_start: 0,
                    len: 1
                },
                Run {
                    after_start: 2,
                    before_start: 2,
                    len: 2
                }
            ]
        );
        let (passed, kept) = split(
            vec![Lines {
                suspect_start: 1,
                final_start: 10,
                len: 4,
            }],
            &runs,
        );
        assert_eq!(
            passed,
            [Lines {
                suspect_start: 2,
                final_start: 11,
                len: 2
            }]
        );
        assert_eq!(
            kept,
            [
                Lines {
                    suspect_start: 1,
                    final_start: 10,
                    len: 1
                },
                Lines {
                    suspect_start: 4,
                    final_start: 13,
                    len: 1
                }
            ]
        );
    }
}
