//! The last commit that changed each entry of a directory, as the web UI's
//! tree listing shows it next to every file.
//!
//! For each entry `e` of directory `dir` at commit `c`, the result is what
//! `git log -1 --format=%H c -- dir/e` prints, with git's default history
//! simplification:
//! - a commit *changes* `e` when the entry (mode and object id; for a
//!   subdirectory its tree id, so any change below it) differs from its
//!   parent's, or from every parent's at a merge; a root commit changes
//!   `e` when `e` exists in it;
//! - a commit that does not change `e` passes it on to its parent; a merge
//!   passes it to the first parent whose entry is the same, and only that
//!   one.
//!
//! So every entry follows one chain of commits, and the answer is the
//! first commit on it that changes the entry. All entries share one walk:
//! each queued commit carries the set of entries it is responsible for
//! (sets are merged when chains meet), a parent whose directory tree is
//! the same takes all of them at once, and otherwise the directory trees
//! are compared entry by entry. Commits are taken newest first (a priority
//! queue by committer time), so chains that meet are merged before their
//! common part is walked.
//!
//! Like [`crate::browse`] this is bounded and knows nothing of HTTP; the web
//! UI computes it in the background and caches it by (commit, path), so it
//! keeps no cache of its own between calls.

use crate::browse::{self, BrowseError, CommitSummary, EntryKind};
use crate::objects::Objects;
use gix_hash::ObjectId;
use gix_object::tree::EntryMode;
use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;

/// The most commits one [`last_commits`] walk processes
/// ([`LastCommitLimits::max_commits`] is clamped to it).
pub const MAX_LAST_COMMIT_WALK: usize = 200_000;
/// How many entry slots of decoded directory trees a walk keeps between
/// steps (a commit's directory is read again as its child's parent's).
const TREE_CACHE_SLOTS: usize = 1 << 20;

/// Bounds of one [`last_commits`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LastCommitLimits {
    /// The most commits processed; entries unresolved then are left out
    /// and [`LastCommits::complete`] is false.
    pub max_commits: usize,
}

impl Default for LastCommitLimits {
    fn default() -> Self {
        LastCommitLimits {
            max_commits: MAX_LAST_COMMIT_WALK,
        }
    }
}

/// The last commit of each entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCommits {
    /// Entry name (as stored) → the last commit that changed it.
    pub entries: HashMap<Vec<u8>, ObjectId>,
    /// Every commit named in `entries`.
    pub commits: HashMap<ObjectId, CommitSummary>,
    /// Whether every entry has its commit: false when the walk stopped at
    /// [`LastCommitLimits::max_commits`], or the directory has more than
    /// [`browse::MAX_TREE_ENTRIES`] entries (only those a listing shows,
    /// the first in display order, are looked up).
    pub complete: bool,
}

/// The last commit that changed each entry of directory `dir` (`b""` is
/// the root) in `commit`; `None` if `dir` is not a directory there. See
/// the module documentation for what "changed" means.
pub fn last_commits(
    objects: &mut Objects,
    commit: ObjectId,
    dir: &[u8],
    limits: &LastCommitLimits,
) -> Result<Option<LastCommits>, BrowseError> {
    let max_commits = limits.max_commits.min(MAX_LAST_COMMIT_WALK);
    let root = browse::tree_of_commit(objects, commit)?;
    let Some(segments) = browse::split_path(dir) else {
        return Ok(None);
    };
    let Some((mode, dir_tree)) = browse::entry_at(objects, root, &segments)? else {
        return Ok(None);
    };
    if !mode.is_tree() {
        return Ok(None);
    }
    let mut raw = browse::tree_entries(objects, dir_tree)?;
    let mut complete = true;
    if raw.len() > browse::MAX_TREE_ENTRIES {
        // The entries a listing shows: directories and submodules first,
        // then files, each by name.
        raw.sort_by(|a, b| {
            let dir_like = |mode: EntryMode| EntryKind::from_mode(mode).is_dir_like();
            dir_like(b.mode)
                .cmp(&dir_like(a.mode))
                .then_with(|| a.name.cmp(&b.name))
        });
        raw.truncate(browse::MAX_TREE_ENTRIES);
        complete = false;
    }
    let names: Vec<Vec<u8>> = raw.into_iter().map(|entry| entry.name).collect();
    let index: HashMap<Vec<u8>, u32> = names
        .iter()
        .enumerate()
        .map(|(position, name)| (name.clone(), position as u32))
        .collect();
    let mut walk = Walk {
        objects,
        segments,
        absent: Rc::from(vec![None; names.len()]),
        index,
        dirs: HashMap::new(),
        values: HashMap::new(),
        cached_slots: 0,
    };
    walk.dirs.insert(root, Some(dir_tree));
    let (found, walk_complete) = walk.run(commit, names.len() as u32, max_commits)?;
    let objects = walk.objects;
    let mut result = LastCommits {
        entries: HashMap::with_capacity(found.len()),
        commits: HashMap::new(),
        complete: complete && walk_complete,
    };
    for (entry, id) in found {
        let Some(name) = names.get(entry as usize) else {
            continue;
        };
        if let Entry::Vacant(vacant) = result.commits.entry(id) {
            vacant.insert(browse::commit_summary(objects, id)?);
        }
        result.entries.insert(name.clone(), id);
    }
    Ok(Some(result))
}

/// Each tracked entry's mode and id in one directory tree, by entry index
/// (`None`: absent).
type Values = Rc<[Option<(EntryMode, ObjectId)>]>;

/// The state of one walk.
struct Walk<'a, 'p> {
    objects: &'a mut Objects,
    segments: Vec<&'p [u8]>,
    /// The values of a commit without the directory.
    absent: Values,
    /// Entry name → index.
    index: HashMap<Vec<u8>, u32>,
    /// The directory's tree id per root tree (`None`: no directory there).
    dirs: HashMap<ObjectId, Option<ObjectId>>,
    /// Recently decoded directory trees.
    values: HashMap<ObjectId, Values>,
    cached_slots: usize,
}

impl Walk<'_, '_> {
    /// The directory's tree in root tree `root`.
    fn dir(&mut self, root: ObjectId) -> Result<Option<ObjectId>, BrowseError> {
        if let Some(dir) = self.dirs.get(&root) {
            return Ok(*dir);
        }
        let dir = match browse::entry_at(self.objects, root, &self.segments)? {
            Some((mode, id)) if mode.is_tree() => Some(id),
            _ => None,
        };
        self.dirs.insert(root, dir);
        Ok(dir)
    }

    /// The tracked entries of directory tree `dir`.
    fn values(&mut self, dir: Option<ObjectId>) -> Result<Values, BrowseError> {
        let Some(dir) = dir else {
            return Ok(Rc::clone(&self.absent));
        };
        if let Some(values) = self.values.get(&dir) {
            return Ok(Rc::clone(values));
        }
        let mut values = vec![None; self.absent.len()];
        for entry in browse::tree_entries(self.objects, dir)? {
            if let Some(&position) = self.index.get(&entry.name)
                && let Some(slot) = values.get_mut(position as usize)
            {
                *slot = Some((entry.mode, entry.id));
            }
        }
        let values: Values = Rc::from(values);
        if self.cached_slots + values.len() > TREE_CACHE_SLOTS {
            self.values.clear();
            self.cached_slots = 0;
        }
        self.cached_slots += values.len();
        self.values.insert(dir, Rc::clone(&values));
        Ok(values)
    }

    /// Walk from `start` responsible for entries `0..entries`: the entries
    /// found with their commits, and whether the walk finished.
    fn run(
        &mut self,
        start: ObjectId,
        entries: u32,
        max_commits: usize,
    ) -> Result<(Vec<(u32, ObjectId)>, bool), BrowseError> {
        let mut found = Vec::new();
        let mut queue = Queue::default();
        if entries == 0 {
            return Ok((found, true));
        }
        let time = self
            .objects
            .commit(&start)?
            .ok_or(BrowseError::Missing { id: start })?
            .time;
        queue.add(start, time, (0..entries).collect());
        let mut processed = 0usize;
        while let Some((id, mut responsible)) = queue.pop() {
            if processed == max_commits {
                return Ok((found, false));
            }
            processed += 1;
            responsible.sort_unstable();
            responsible.dedup();
            let info = self
                .objects
                .commit(&id)?
                .ok_or(BrowseError::Missing { id })?
                .clone();
            let ours_dir = self.dir(info.tree)?;
            if info.parents.is_empty() {
                let ours = self.values(ours_dir)?;
                for entry in responsible {
                    if ours.get(entry as usize).is_some_and(Option::is_some) {
                        found.push((entry, id));
                    }
                }
                continue;
            }
            let mut remaining = responsible;
            for parent in &info.parents {
                if remaining.is_empty() {
                    break;
                }
                let parent_info = self
                    .objects
                    .commit(parent)?
                    .ok_or(BrowseError::Missing { id: *parent })?;
                let (parent_tree, parent_time) = (parent_info.tree, parent_info.time);
                let parent_dir = if parent_tree == info.tree {
                    ours_dir
                } else {
                    self.dir(parent_tree)?
                };
                if parent_dir == ours_dir {
                    queue.add(*parent, parent_time, std::mem::take(&mut remaining));
                    break;
                }
                let ours = self.values(ours_dir)?;
                let theirs = self.values(parent_dir)?;
                let (same, different): (Vec<u32>, Vec<u32>) = remaining
                    .into_iter()
                    .partition(|&entry| ours.get(entry as usize) == theirs.get(entry as usize));
                if !same.is_empty() {
                    queue.add(*parent, parent_time, same);
                }
                remaining = different;
            }
            found.extend(remaining.into_iter().map(|entry| (entry, id)));
        }
        Ok((found, true))
    }
}

/// Commits waiting to be processed with the entries they carry, newest
/// first by committer time.
#[derive(Default)]
struct Queue {
    heap: BinaryHeap<(i64, Reverse<u64>, ObjectId)>,
    waiting: HashMap<ObjectId, Vec<u32>>,
    sequence: u64,
}

impl Queue {
    /// Make commit `id` responsible for `entries` too.
    fn add(&mut self, id: ObjectId, time: i64, entries: Vec<u32>) {
        if let Some(waiting) = self.waiting.get_mut(&id) {
            waiting.extend(entries);
            return;
        }
        self.sequence += 1;
        self.heap.push((time, Reverse(self.sequence), id));
        self.waiting.insert(id, entries);
    }

    fn pop(&mut self) -> Option<(ObjectId, Vec<u32>)> {
        while let Some((_, _, id)) = self.heap.pop() {
            if let Some(entries) = self.waiting.remove(&id) {
                return Some((id, entries));
            }
        }
        None
    }
}
