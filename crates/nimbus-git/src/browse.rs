//! Read-only browsing of a repository for the web UI: resolve a revision
//! named in a URL, list a tree, read a file, walk history and diff two
//! trees.
//!
//! Like the protocol code, this knows nothing of HTTP, async or the
//! database: callers take a [`crate::service::Snapshot`], pass its `refs`
//! and an [`Objects`] over `snapshot.db.handle()`. Every operation is
//! bounded; the limits are the `pub const`s below, and results say when
//! they were cut short rather than failing.
//!
//! Paths are bytes, as in git (`b"src/main.rs"`, or `"src/main.rs".as_bytes()`):
//! names that are not UTF-8 stay addressable. Display strings are lossy
//! UTF-8 next to the raw bytes.

use crate::objects::{ObjectError, Objects};
use gix_hash::ObjectId;
use gix_object::tree::EntryMode;
use nimbus_types::Ref;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};

/// The most entries one tree listing returns (then `truncated` is set).
pub const MAX_TREE_ENTRIES: usize = 10_000;
/// The largest tree object read, in bytes (about a million entries).
pub const MAX_TREE_OBJECT_BYTES: u64 = 64 << 20;
/// The largest blob or commit object decoded, in bytes. Larger objects are
/// a [`BrowseError::TooLarge`]; their size is still available from
/// [`Objects::size`].
pub const MAX_OBJECT_BYTES: u64 = 256 << 20;
/// The longest path accepted, in bytes; longer paths are not found.
pub const MAX_PATH_BYTES: usize = 4096;
/// The most bytes of a symlink target returned.
pub const MAX_SYMLINK_TARGET_BYTES: usize = 4096;
/// How many leading bytes decide whether a blob is binary (a NUL byte among
/// them), as git decides.
pub const BINARY_PROBE_BYTES: usize = 8000;
/// The most bytes of a commit message kept (cut at a character boundary).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// The most commits one [`log`] call visits (parsing, path comparison);
/// beyond it the page is returned with `walk_truncated` set.
pub const MAX_LOG_WALK: usize = 200_000;
/// The most commits one [`log`] page returns; larger limits are clamped.
pub const MAX_LOG_LIMIT: usize = 1_000;
/// The most changed files one [`diff`] lists (then `TreeDiff::truncated`).
pub const MAX_DIFF_ENTRIES: usize = 10_000;
/// The most tree objects one [`diff`] reads (then `TreeDiff::truncated`).
pub const MAX_DIFF_TREES: usize = 100_000;
/// The deepest tree nesting [`diff`] descends into.
pub const MAX_TREE_DEPTH: usize = 1_000;
/// Lines of context around changes in a hunk, as `git diff -U3`.
pub const DIFF_CONTEXT: u32 = 3;

/// Errors browsing a repository. Absent paths and unknown revisions are not
/// errors (`None` / [`PathTarget::NotFound`]); these are broken or
/// oversized objects and wrong arguments.
#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error("object {id} is missing")]
    Missing { id: ObjectId },
    #[error("object {id} is a {actual}, expected a {expected}")]
    WrongKind {
        id: ObjectId,
        expected: gix_object::Kind,
        actual: gix_object::Kind,
    },
    #[error("object {id} could not be decoded")]
    Decode {
        id: ObjectId,
        #[source]
        source: gix_error::Error,
    },
    #[error("object {id} is {size} bytes; the limit is {limit}")]
    TooLarge { id: ObjectId, size: u64, limit: u64 },
    #[error("looking up objects by an abbreviated id failed")]
    Prefix(#[source] gix_error::Error),
}

// ---------------------------------------------------------------------------
// Revisions

/// What kind of name a revision was given by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevKind {
    Branch,
    Tag,
    Commit,
}

/// A revision resolved from the leading segments of a URL path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The commit (tags are peeled).
    pub commit: ObjectId,
    /// The ref's short name (`main`, `feature/x`, `v1.0`), or the commit's
    /// full hex id when it was named by id.
    pub label: String,
    pub kind: RevKind,
    /// How many segments formed the revision; the rest is a path.
    pub consumed: usize,
}

/// Resolve the revision at the start of `segments` (a URL path split at
/// `/`, such as `["feature", "x", "src", "lib.rs"]`).
///
/// Rules, in order:
/// 1. The longest run of leading segments that is the short name of a
///    branch (`refs/heads/<…>`) or tag (`refs/tags/<…>`); on a tie (a
///    branch and a tag of the same name) the branch wins. Ref names can
///    contain slashes, so `feature/x/src` resolves to branch `feature/x`
///    with `consumed == 2`.
/// 2. Otherwise the first segment as a full 40-digit hex id, or an
///    abbreviated one of at least 4 hex digits; an abbreviation must name
///    exactly one commit (or tag of a commit), like git's commit-ish
///    disambiguation.
///
/// Tags are peeled; a name that does not lead to a commit (a tag of a
/// tree, an id of a blob, an unknown or ambiguous name) is `None`.
pub fn resolve(
    refs: &[Ref],
    objects: &mut Objects,
    segments: &[&str],
) -> Result<Option<Resolved>, BrowseError> {
    let Some(first) = segments.first() else {
        return Ok(None);
    };
    if let Some((reference, kind, consumed, label)) = longest_ref(refs, segments) {
        let (id, object_kind) = objects.peel(&reference.target)?;
        if object_kind != gix_object::Kind::Commit {
            return Ok(None);
        }
        return Ok(Some(Resolved {
            commit: id,
            label,
            kind,
            consumed,
        }));
    }
    let hex = first.to_ascii_lowercase();
    if !(4..=40).contains(&hex.len()) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let commit = if hex.len() == 40 {
        let Ok(id) = ObjectId::from_hex(hex.as_bytes()) else {
            return Ok(None);
        };
        commit_of(objects, id)?
    } else {
        let Ok(prefix) = gix_hash::Prefix::from_hex(&hex) else {
            return Ok(None);
        };
        let mut candidates = HashSet::new();
        objects
            .handle
            .lookup_prefix(prefix, Some(&mut candidates))
            .map_err(BrowseError::Prefix)?;
        let mut commits = HashSet::new();
        for candidate in candidates {
            if let Some(commit) = commit_of(objects, candidate)? {
                commits.insert(commit);
            }
        }
        if commits.len() == 1 {
            commits.into_iter().next()
        } else {
            None
        }
    };
    Ok(commit.map(|commit| Resolved {
        commit,
        label: commit.to_hex().to_string(),
        kind: RevKind::Commit,
        consumed: 1,
    }))
}

/// The branch or tag whose short name is the longest run of leading
/// `segments`: the ref, its kind, the segments consumed and the short name.
fn longest_ref<'r>(
    refs: &'r [Ref],
    segments: &[&str],
) -> Option<(&'r Ref, RevKind, usize, String)> {
    let mut best: Option<(&Ref, RevKind, usize)> = None;
    for reference in refs {
        let name = reference.name.as_bytes();
        let (short, kind) = if let Some(short) = name.strip_prefix(b"refs/heads/") {
            (short, RevKind::Branch)
        } else if let Some(short) = name.strip_prefix(b"refs/tags/") {
            (short, RevKind::Tag)
        } else {
            continue;
        };
        let Some(consumed) = segments_matching(segments, short) else {
            continue;
        };
        let better = match best {
            None => true,
            Some((_, best_kind, best_consumed)) => {
                consumed > best_consumed
                    || (consumed == best_consumed
                        && kind == RevKind::Branch
                        && best_kind == RevKind::Tag)
            }
        };
        if better {
            best = Some((reference, kind, consumed));
        }
    }
    best.map(|(reference, kind, consumed)| {
        (reference, kind, consumed, segments[..consumed].join("/"))
    })
}

/// How many leading `segments`, joined by `/`, spell `short` exactly.
fn segments_matching(segments: &[&str], short: &[u8]) -> Option<usize> {
    let mut rest = short;
    for (index, segment) in segments.iter().enumerate() {
        let segment = segment.as_bytes();
        if segment.is_empty() {
            return None;
        }
        rest = rest.strip_prefix(segment)?;
        if rest.is_empty() {
            return Some(index + 1);
        }
        rest = rest.strip_prefix(b"/")?;
    }
    None
}

/// The commit `id` leads to (peeling tags), if it exists and leads to one.
fn commit_of(objects: &mut Objects, id: ObjectId) -> Result<Option<ObjectId>, BrowseError> {
    match objects.kind(&id)? {
        None => Ok(None),
        Some(gix_object::Kind::Commit) => Ok(Some(id)),
        Some(gix_object::Kind::Tag) => match objects.peel(&id)? {
            (peeled, gix_object::Kind::Commit) => Ok(Some(peeled)),
            _ => Ok(None),
        },
        Some(_) => Ok(None),
    }
}

// ---------------------------------------------------------------------------
// Trees and blobs

/// What a tree entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A directory (tree).
    Dir,
    /// A regular file (mode 100644).
    File,
    /// An executable file (mode 100755).
    Executable,
    /// A symbolic link (mode 120000).
    Symlink,
    /// A submodule (a commit entry, mode 160000).
    Submodule,
}

impl EntryKind {
    pub(crate) fn from_mode(mode: EntryMode) -> Self {
        match mode.kind() {
            gix_object::tree::EntryKind::Tree => EntryKind::Dir,
            gix_object::tree::EntryKind::Blob => EntryKind::File,
            gix_object::tree::EntryKind::BlobExecutable => EntryKind::Executable,
            gix_object::tree::EntryKind::Link => EntryKind::Symlink,
            gix_object::tree::EntryKind::Commit => EntryKind::Submodule,
        }
    }

    /// The octal mode git writes for this kind (`100644`, `40000`, …).
    pub fn mode(self) -> &'static str {
        match self {
            EntryKind::Dir => "40000",
            EntryKind::File => "100644",
            EntryKind::Executable => "100755",
            EntryKind::Symlink => "120000",
            EntryKind::Submodule => "160000",
        }
    }

    /// Whether the entry's content is a blob (a file or a symlink).
    pub fn is_blob(self) -> bool {
        matches!(
            self,
            EntryKind::File | EntryKind::Executable | EntryKind::Symlink
        )
    }

    /// Directories and submodules, listed before files.
    pub(crate) fn is_dir_like(self) -> bool {
        matches!(self, EntryKind::Dir | EntryKind::Submodule)
    }
}

/// One entry of a tree listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// The name for display (lossy UTF-8).
    pub name: String,
    /// The name as stored.
    pub name_bytes: Vec<u8>,
    pub kind: EntryKind,
    pub id: ObjectId,
}

/// What a path names in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathTarget {
    /// A directory: directories and submodules first, then files, each
    /// group by name bytes; at most [`MAX_TREE_ENTRIES`], `truncated` when
    /// there were more.
    Tree {
        id: ObjectId,
        entries: Vec<TreeEntry>,
        truncated: bool,
    },
    /// A file (read it with [`read_blob`]).
    Blob {
        id: ObjectId,
        size: u64,
        executable: bool,
    },
    /// A symbolic link and its target (lossy UTF-8, at most
    /// [`MAX_SYMLINK_TARGET_BYTES`]).
    Symlink { id: ObjectId, target: String },
    /// A submodule at commit `id` (not in this repository).
    Submodule { id: ObjectId },
    /// Nothing at that path, or a path that cannot name anything (`..`,
    /// `.`, empty segments, longer than [`MAX_PATH_BYTES`]).
    NotFound,
}

/// Split a path into its segments: `""` is the root, one trailing `/` is
/// ignored; `None` for paths that cannot name an entry.
pub(crate) fn split_path(path: &[u8]) -> Option<Vec<&[u8]>> {
    if path.len() > MAX_PATH_BYTES {
        return None;
    }
    if path.is_empty() {
        return Some(Vec::new());
    }
    let path = path.strip_suffix(b"/").unwrap_or(path);
    let segments: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    let valid = segments
        .iter()
        .all(|s| !s.is_empty() && *s != b"." && *s != b".." && !s.contains(&0));
    valid.then_some(segments)
}

/// The tree of commit `id`; an error if it is missing or not a commit.
pub(crate) fn tree_of_commit(objects: &mut Objects, id: ObjectId) -> Result<ObjectId, BrowseError> {
    match objects.commit(&id)? {
        Some(info) => Ok(info.tree),
        None => Err(match objects.kind(&id)? {
            None => BrowseError::Missing { id },
            Some(actual) => BrowseError::WrongKind {
                id,
                expected: gix_object::Kind::Commit,
                actual,
            },
        }),
    }
}

/// Read an object of the expected kind, at most `limit` bytes large.
pub(crate) fn read_object(
    objects: &mut Objects,
    id: ObjectId,
    expected: gix_object::Kind,
    limit: u64,
) -> Result<&[u8], BrowseError> {
    let size = objects.size(&id)?.ok_or(BrowseError::Missing { id })?;
    if size > limit {
        return Err(BrowseError::TooLarge { id, size, limit });
    }
    match objects.find(&id)? {
        None => Err(BrowseError::Missing { id }),
        Some((kind, _)) if kind != expected => Err(BrowseError::WrongKind {
            id,
            expected,
            actual: kind,
        }),
        Some((_, data)) => Ok(data),
    }
}

/// A tree entry with its mode, owned.
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    pub(crate) name: Vec<u8>,
    pub(crate) mode: EntryMode,
    pub(crate) id: ObjectId,
}

/// All entries of tree `id`, in tree order.
pub(crate) fn tree_entries(
    objects: &mut Objects,
    id: ObjectId,
) -> Result<Vec<RawEntry>, BrowseError> {
    let data = read_object(objects, id, gix_object::Kind::Tree, MAX_TREE_OBJECT_BYTES)?;
    let mut entries = Vec::new();
    for entry in gix_object::TreeRefIter::from_bytes(data, gix_hash::Kind::Sha1) {
        let entry = entry.map_err(|source| BrowseError::Decode { id, source })?;
        entries.push(RawEntry {
            name: entry.filename.to_vec(),
            mode: entry.mode,
            id: entry.oid.to_owned(),
        });
    }
    Ok(entries)
}

/// The entry named `name` in tree `id`, if any.
fn tree_entry(
    objects: &mut Objects,
    id: ObjectId,
    name: &[u8],
) -> Result<Option<(EntryMode, ObjectId)>, BrowseError> {
    let data = read_object(objects, id, gix_object::Kind::Tree, MAX_TREE_OBJECT_BYTES)?;
    for entry in gix_object::TreeRefIter::from_bytes(data, gix_hash::Kind::Sha1) {
        let entry = entry.map_err(|source| BrowseError::Decode { id, source })?;
        if entry.filename == name {
            return Ok(Some((entry.mode, entry.oid.to_owned())));
        }
    }
    Ok(None)
}

/// The entry at `segments` below `root` (the root itself for no segments).
pub(crate) fn entry_at(
    objects: &mut Objects,
    root: ObjectId,
    segments: &[&[u8]],
) -> Result<Option<(EntryMode, ObjectId)>, BrowseError> {
    let mut current = (EntryMode::from(gix_object::tree::EntryKind::Tree), root);
    for segment in segments {
        if !current.0.is_tree() {
            return Ok(None);
        }
        match tree_entry(objects, current.1, segment)? {
            Some(entry) => current = entry,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// What `path` names in commit `commit`: a directory listing, a file, a
/// symlink, a submodule or nothing. `b""` is the root directory.
pub fn lookup_path(
    objects: &mut Objects,
    commit: ObjectId,
    path: &[u8],
) -> Result<PathTarget, BrowseError> {
    let root = tree_of_commit(objects, commit)?;
    let Some(segments) = split_path(path) else {
        return Ok(PathTarget::NotFound);
    };
    let Some((mode, id)) = entry_at(objects, root, &segments)? else {
        return Ok(PathTarget::NotFound);
    };
    Ok(match EntryKind::from_mode(mode) {
        EntryKind::Dir => {
            let (entries, truncated) = list_tree(objects, id)?;
            PathTarget::Tree {
                id,
                entries,
                truncated,
            }
        }
        kind @ (EntryKind::File | EntryKind::Executable) => PathTarget::Blob {
            id,
            size: objects.size(&id)?.ok_or(BrowseError::Missing { id })?,
            executable: kind == EntryKind::Executable,
        },
        EntryKind::Symlink => {
            let blob = read_blob(objects, id, MAX_SYMLINK_TARGET_BYTES)?;
            PathTarget::Symlink {
                id,
                target: String::from_utf8_lossy(&blob.data).into_owned(),
            }
        }
        EntryKind::Submodule => PathTarget::Submodule { id },
    })
}

/// The entries of tree `id` in display order, and whether there were more
/// than [`MAX_TREE_ENTRIES`].
fn list_tree(objects: &mut Objects, id: ObjectId) -> Result<(Vec<TreeEntry>, bool), BrowseError> {
    let mut entries: Vec<TreeEntry> = tree_entries(objects, id)?
        .into_iter()
        .map(|raw| TreeEntry {
            name: String::from_utf8_lossy(&raw.name).into_owned(),
            name_bytes: raw.name,
            kind: EntryKind::from_mode(raw.mode),
            id: raw.id,
        })
        .collect();
    entries.sort_by(|a, b| {
        b.kind
            .is_dir_like()
            .cmp(&a.kind.is_dir_like())
            .then_with(|| a.name_bytes.cmp(&b.name_bytes))
    });
    let truncated = entries.len() > MAX_TREE_ENTRIES;
    entries.truncate(MAX_TREE_ENTRIES);
    Ok((entries, truncated))
}

/// The start of a blob's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// At most `max_bytes` leading bytes.
    pub data: Vec<u8>,
    /// The whole blob's size.
    pub size: u64,
    /// Whether `data` is shorter than the blob.
    pub truncated: bool,
    /// Whether a NUL byte occurs in the first [`BINARY_PROBE_BYTES`] bytes
    /// (of the whole blob, not only of `data`).
    pub binary: bool,
}

/// Whether `data` looks binary to git: a NUL in its first 8000 bytes.
pub(crate) fn is_binary(data: &[u8]) -> bool {
    data[..data.len().min(BINARY_PROBE_BYTES)].contains(&0)
}

/// Read at most `max_bytes` of blob `id`. Blobs over [`MAX_OBJECT_BYTES`]
/// are a [`BrowseError::TooLarge`] (packed objects are decoded whole).
pub fn read_blob(
    objects: &mut Objects,
    id: ObjectId,
    max_bytes: usize,
) -> Result<Blob, BrowseError> {
    let data = read_object(objects, id, gix_object::Kind::Blob, MAX_OBJECT_BYTES)?;
    let keep = data.len().min(max_bytes);
    Ok(Blob {
        data: data[..keep].to_vec(),
        size: data.len() as u64,
        truncated: keep < data.len(),
        binary: is_binary(data),
    })
}

// ---------------------------------------------------------------------------
// Commits and history

/// An author or committer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub name: String,
    pub email: String,
    /// Unix seconds (0 if the signature's time is malformed).
    pub time: i64,
    /// The time zone's offset from UTC in minutes (east positive).
    pub offset_minutes: i32,
}

impl Person {
    fn new(name: &[u8], email: &[u8], time: Option<(i64, i32)>) -> Self {
        let (time, offset) = time.unwrap_or((0, 0));
        Person {
            name: String::from_utf8_lossy(name).into_owned(),
            email: String::from_utf8_lossy(email).into_owned(),
            time,
            offset_minutes: offset / 60,
        }
    }
}

/// A signature's parts as [`Person::new`] takes them (a macro: the
/// signature type lives in gix-actor, which is not a direct dependency).
macro_rules! person {
    ($signature:expr) => {
        match $signature {
            Ok(signature) => {
                let signature = signature.trim();
                let time = signature
                    .time()
                    .ok()
                    .map(|time| (time.seconds, time.offset));
                Person::new(signature.name, signature.email, time)
            }
            Err(_) => Person::new(b"", b"", None),
        }
    };
}

/// A commit, decoded for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitDetail {
    pub id: ObjectId,
    pub tree: ObjectId,
    pub parents: Vec<ObjectId>,
    pub author: Person,
    pub committer: Person,
    /// The whole message (lossy UTF-8, at most [`MAX_MESSAGE_BYTES`]).
    pub message: String,
}

impl CommitDetail {
    /// The message's first line.
    pub fn summary(&self) -> &str {
        self.message.lines().next().unwrap_or("").trim_end()
    }
}

/// Decode commit `id`; an error if it is missing or not a commit.
pub fn commit_detail(objects: &mut Objects, id: ObjectId) -> Result<CommitDetail, BrowseError> {
    let data = read_object(objects, id, gix_object::Kind::Commit, MAX_OBJECT_BYTES)?;
    let commit = gix_object::CommitRef::from_bytes(data, gix_hash::Kind::Sha1)
        .map_err(|source| BrowseError::Decode { id, source })?;
    let mut message = String::from_utf8_lossy(commit.message).into_owned();
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    Ok(CommitDetail {
        id,
        tree: commit.tree(),
        parents: commit.parents().collect(),
        author: person!(commit.author()),
        committer: person!(commit.committer()),
        message,
    })
}

/// The facts about a commit that annotations (blame, last commits of a
/// directory) show next to a line or an entry: smaller than
/// [`CommitDetail`], whose whole message is not needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSummary {
    /// The commit.
    pub id: ObjectId,
    /// Who wrote the change, and when.
    pub author: Person,
    /// Who committed it, and when (the time history walks order by).
    pub committer: Person,
    /// The message's first line (lossy UTF-8, trailing whitespace removed).
    pub summary: String,
}

/// Decode the summary of commit `id`; an error if it is missing or not a
/// commit.
pub fn commit_summary(objects: &mut Objects, id: ObjectId) -> Result<CommitSummary, BrowseError> {
    let data = read_object(objects, id, gix_object::Kind::Commit, MAX_OBJECT_BYTES)?;
    let commit = gix_object::CommitRef::from_bytes(data, gix_hash::Kind::Sha1)
        .map_err(|source| BrowseError::Decode { id, source })?;
    let message: &[u8] = commit.message;
    let first_line = message.split(|&b| b == b'\n').next().unwrap_or_default();
    Ok(CommitSummary {
        id,
        author: person!(commit.author()),
        committer: person!(commit.committer()),
        summary: String::from_utf8_lossy(first_line).trim_end().to_owned(),
    })
}

/// One page of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    pub commits: Vec<CommitDetail>,
    /// Whether more matching commits follow this page.
    pub more: bool,
    /// Whether the walk stopped at [`MAX_LOG_WALK`] visited commits before
    /// the page was full or the history ended: older matches may exist.
    pub walk_truncated: bool,
}

/// Commits reachable from `start`, newest first by committer time (git's
/// default `git log` order: a walk that always continues with the newest
/// commit seen; equal times in the order they were reached, first parents
/// first). Skips `skip` matching commits and returns at most `limit`
/// (clamped to [`MAX_LOG_LIMIT`]).
///
/// With a `path`, a commit matches when the entry at that path (its mode
/// and object id; contents are not diffed) differs from the entry in every
/// parent; a root commit matches when the path exists in it. Every parent
/// of a merge is walked (like `--full-history`), but a merge is listed only
/// if it differs from all its parents: a merge that took one side's version
/// unchanged brought no change of its own. So the result is `git log
/// --full-history -- path` minus the merges that are TREESAME to some
/// parent; for linear history it is exactly `git log -- path`. A path that
/// cannot name anything matches nothing.
pub fn log(
    objects: &mut Objects,
    start: ObjectId,
    path: Option<&[u8]>,
    skip: usize,
    limit: usize,
) -> Result<LogPage, BrowseError> {
    let limit = limit.min(MAX_LOG_LIMIT);
    let segments = match path {
        None => None,
        Some(path) => match split_path(path) {
            Some(segments) => Some(segments),
            None => {
                return Ok(LogPage {
                    commits: Vec::new(),
                    more: false,
                    walk_truncated: false,
                });
            }
        },
    };
    // The entry at the path, per root tree.
    let mut entries: HashMap<ObjectId, Option<(EntryMode, ObjectId)>> = HashMap::new();
    let mut entry_in = |objects: &mut Objects, tree: ObjectId, segments: &[&[u8]]| {
        if let Some(entry) = entries.get(&tree) {
            return Ok::<_, BrowseError>(*entry);
        }
        let entry = entry_at(objects, tree, segments)?;
        entries.insert(tree, entry);
        Ok(entry)
    };

    let mut queue: BinaryHeap<(i64, Reverse<u64>, ObjectId)> = BinaryHeap::new();
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut sequence = 0u64;
    let first = objects
        .commit(&start)?
        .ok_or(BrowseError::Missing { id: start })?;
    queue.push((first.time, Reverse(sequence), start));
    seen.insert(start);

    let mut page = LogPage {
        commits: Vec::new(),
        more: false,
        walk_truncated: false,
    };
    let mut matched = 0usize;
    let mut visited = 0usize;
    while let Some((_, _, id)) = queue.pop() {
        if visited == MAX_LOG_WALK {
            page.walk_truncated = true;
            break;
        }
        visited += 1;
        let info = objects
            .commit(&id)?
            .cloned()
            .ok_or(BrowseError::Missing { id })?;
        for parent in &info.parents {
            if seen.insert(*parent) {
                let time = objects
                    .commit(parent)?
                    .ok_or(BrowseError::Missing { id: *parent })?
                    .time;
                sequence += 1;
                queue.push((time, Reverse(sequence), *parent));
            }
        }
        let matches = match &segments {
            None => true,
            Some(segments) => {
                let ours = entry_in(objects, info.tree, segments)?;
                if info.parents.is_empty() {
                    ours.is_some()
                } else {
                    let mut differs_from_all = true;
                    for parent in &info.parents {
                        let parent_tree = objects
                            .commit(parent)?
                            .ok_or(BrowseError::Missing { id: *parent })?
                            .tree;
                        if parent_tree == info.tree
                            || entry_in(objects, parent_tree, segments)? == ours
                        {
                            differs_from_all = false;
                            break;
                        }
                    }
                    differs_from_all
                }
            }
        };
        if !matches {
            continue;
        }
        matched += 1;
        if matched <= skip {
            continue;
        }
        if page.commits.len() == limit {
            page.more = true;
            break;
        }
        page.commits.push(commit_detail(objects, id)?);
    }
    Ok(page)
}

/// What `head` has that `base` has not, as GitHub's `base...head` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// The newest common ancestor (by committer time) reached from `head`;
    /// `None` when the histories are unrelated. Diff from it to `head`.
    pub merge_base: Option<ObjectId>,
    /// Commits reachable from `head` and not from `base`, newest first, at
    /// most the `limit` asked for.
    pub commits: Vec<CommitDetail>,
    /// How many such commits there are (up to [`MAX_LOG_WALK`]).
    pub ahead: usize,
    /// Whether a walk stopped at [`MAX_LOG_WALK`] commits: counts and the
    /// merge base may be incomplete.
    pub walk_truncated: bool,
}

/// Compare `head` with `base` like `git log base..head` and `git
/// merge-base base head` (for histories with one merge base; with several,
/// the newest by committer time).
pub fn compare(
    objects: &mut Objects,
    base: ObjectId,
    head: ObjectId,
    limit: usize,
) -> Result<Comparison, BrowseError> {
    let limit = limit.min(MAX_LOG_LIMIT);
    let mut walk_truncated = false;
    // Everything `base` reaches.
    let mut in_base: HashSet<ObjectId> = HashSet::new();
    let mut stack = vec![base];
    in_base.insert(base);
    while let Some(id) = stack.pop() {
        if in_base.len() >= MAX_LOG_WALK {
            walk_truncated = true;
            break;
        }
        let info = objects.commit(&id)?.ok_or(BrowseError::Missing { id })?;
        for parent in info.parents.clone() {
            if in_base.insert(parent) {
                stack.push(parent);
            }
        }
    }
    // `head` newest first, stopping at `base`'s commits.
    let mut queue: BinaryHeap<(i64, Reverse<u64>, ObjectId)> = BinaryHeap::new();
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut sequence = 0u64;
    let time = objects
        .commit(&head)?
        .ok_or(BrowseError::Missing { id: head })?
        .time;
    queue.push((time, Reverse(sequence), head));
    seen.insert(head);
    let mut comparison = Comparison {
        merge_base: None,
        commits: Vec::new(),
        ahead: 0,
        walk_truncated,
    };
    while let Some((_, _, id)) = queue.pop() {
        if in_base.contains(&id) {
            comparison.merge_base.get_or_insert(id);
            continue;
        }
        if seen.len() >= MAX_LOG_WALK {
            comparison.walk_truncated = true;
            break;
        }
        comparison.ahead += 1;
        if comparison.commits.len() < limit {
            comparison.commits.push(commit_detail(objects, id)?);
        }
        let parents = objects
            .commit(&id)?
            .ok_or(BrowseError::Missing { id })?
            .parents
            .clone();
        for parent in parents {
            if seen.insert(parent) {
                let time = objects
                    .commit(&parent)?
                    .ok_or(BrowseError::Missing { id: parent })?
                    .time;
                sequence += 1;
                queue.push((time, Reverse(sequence), parent));
            }
        }
    }
    Ok(comparison)
}

// ---------------------------------------------------------------------------
// Diffs

/// Bounds of one [`diff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DiffLimits {
    /// How many changed files get their contents compared; later files are
    /// listed with `truncated` and no stats.
    pub max_files: usize,
    /// Files with a side larger than this are listed with `truncated` and
    /// no stats.
    pub max_bytes_per_file: u64,
    /// How many hunk lines all files may produce together. The file that
    /// would exceed it keeps its stats but loses its hunks (`truncated`);
    /// later files are `truncated` without stats.
    pub max_lines_total: usize,
}

impl Default for DiffLimits {
    fn default() -> Self {
        DiffLimits {
            max_files: 300,
            max_bytes_per_file: 1 << 20,
            max_lines_total: 20_000,
        }
    }
}

/// How a file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileStatus {
    Added,
    Deleted,
    /// Content, mode or kind changed (see `old_kind` and `new_kind`).
    Modified,
}

/// The kind of a diff line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineKind {
    Context,
    Added,
    Removed,
}

/// One line of a hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    pub kind: LineKind,
    /// The 1-based line number in the old file (not for added lines).
    pub old_no: Option<u32>,
    /// The 1-based line number in the new file (not for removed lines).
    pub new_no: Option<u32>,
    /// The line without its `\n` (lossy UTF-8).
    pub text: String,
    /// Whether the line is the file's last and has no `\n` (git's
    /// `\ No newline at end of file`).
    pub no_newline: bool,
}

/// A hunk as in `git diff -U3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    /// As in the `@@ -old_start,old_lines` header: the first line's 1-based
    /// number, or the line before for an empty range.
    pub old_start: u32,
    pub old_lines: u32,
    pub new_start: u32,
    pub new_lines: u32,
    pub lines: Vec<DiffLine>,
}

impl Hunk {
    /// The header as git writes it, without a section heading:
    /// `@@ -1,4 +1,5 @@` (a count of 1 is left out, as git does).
    pub fn header(&self) -> String {
        fn range(start: u32, lines: u32) -> String {
            if lines == 1 {
                start.to_string()
            } else {
                format!("{start},{lines}")
            }
        }
        format!(
            "@@ -{} +{} @@",
            range(self.old_start, self.old_lines),
            range(self.new_start, self.new_lines)
        )
    }
}

/// One changed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    /// The path before (lossy UTF-8); `None` when added.
    pub old_path: Option<String>,
    /// The path after (lossy UTF-8); `None` when deleted.
    pub new_path: Option<String>,
    /// The path as stored (the same on both sides: no rename detection).
    pub path_bytes: Vec<u8>,
    pub status: FileStatus,
    pub old_kind: Option<EntryKind>,
    pub new_kind: Option<EntryKind>,
    pub old_id: Option<ObjectId>,
    pub new_id: Option<ObjectId>,
    /// Whether either side is binary (a NUL in its first 8000 bytes);
    /// only known when the contents were read (not for `truncated` files).
    pub binary: bool,
    /// Lines added, when counted: `None` for binary files, submodules and
    /// files truncated before their contents were compared.
    pub additions: Option<u32>,
    /// Lines removed, as `additions`.
    pub deletions: Option<u32>,
    pub hunks: Vec<Hunk>,
    /// Whether the hunks were left out because of a [`DiffLimits`] bound.
    pub truncated: bool,
}

/// The changes between two trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeDiff {
    /// Changed files in path order (as `git diff`).
    pub files: Vec<FileDiff>,
    /// Whether more files changed than are listed ([`MAX_DIFF_ENTRIES`],
    /// [`MAX_DIFF_TREES`] or [`MAX_TREE_DEPTH`] was reached).
    pub truncated: bool,
}

/// A changed file found by the tree comparison.
struct Change {
    path: Vec<u8>,
    old: Option<(EntryKind, ObjectId)>,
    new: Option<(EntryKind, ObjectId)>,
}

/// Compare tree `old_tree` (`None`: the empty tree, for root commits) with
/// `new_tree`, recursively: added, deleted and modified files (content or
/// mode), in path order; no rename detection. Text files get a unified
/// line diff with [`DIFF_CONTEXT`] lines of context (Myers, as git's
/// default), within `limits`.
pub fn diff(
    objects: &mut Objects,
    old_tree: Option<ObjectId>,
    new_tree: ObjectId,
    limits: DiffLimits,
) -> Result<TreeDiff, BrowseError> {
    let mut walk = TreeWalk {
        changes: Vec::new(),
        trees_read: 0,
        truncated: false,
    };
    walk.compare(objects, old_tree, Some(new_tree), &mut Vec::new(), 0)?;
    let mut files = Vec::with_capacity(walk.changes.len());
    let mut lines_left = limits.max_lines_total;
    let mut lines_exhausted = false;
    for (index, change) in walk.changes.into_iter().enumerate() {
        let mut file = FileDiff {
            old_path: change
                .old
                .map(|_| String::from_utf8_lossy(&change.path).into_owned()),
            new_path: change
                .new
                .map(|_| String::from_utf8_lossy(&change.path).into_owned()),
            status: match (change.old, change.new) {
                (None, _) => FileStatus::Added,
                (_, None) => FileStatus::Deleted,
                _ => FileStatus::Modified,
            },
            old_kind: change.old.map(|(kind, _)| kind),
            new_kind: change.new.map(|(kind, _)| kind),
            old_id: change.old.map(|(_, id)| id),
            new_id: change.new.map(|(_, id)| id),
            path_bytes: change.path,
            binary: false,
            additions: None,
            deletions: None,
            hunks: Vec::new(),
            truncated: false,
        };
        let is_blob = |side: Option<(EntryKind, ObjectId)>| side.is_none_or(|(k, _)| k.is_blob());
        if !is_blob(change.old) || !is_blob(change.new) {
            // A submodule on either side: no content to compare.
            files.push(file);
            continue;
        }
        if index >= limits.max_files || lines_exhausted {
            file.truncated = true;
            files.push(file);
            continue;
        }
        let old_id = change.old.map(|(_, id)| id);
        let new_id = change.new.map(|(_, id)| id);
        if old_id == new_id {
            // Only the mode changed.
            file.additions = Some(0);
            file.deletions = Some(0);
            files.push(file);
            continue;
        }
        let max_bytes = limits.max_bytes_per_file.min(MAX_OBJECT_BYTES);
        let mut too_large = false;
        for id in [old_id, new_id].into_iter().flatten() {
            let size = objects.size(&id)?.ok_or(BrowseError::Missing { id })?;
            too_large |= size > max_bytes;
        }
        if too_large {
            file.truncated = true;
            files.push(file);
            continue;
        }
        let old = blob_or_empty(objects, old_id, max_bytes)?;
        let new = blob_or_empty(objects, new_id, max_bytes)?;
        if is_binary(&old) || is_binary(&new) {
            file.binary = true;
            files.push(file);
            continue;
        }
        let (additions, deletions, hunks) = line_diff(&old, &new);
        file.additions = Some(additions);
        file.deletions = Some(deletions);
        let lines: usize = hunks.iter().map(|hunk| hunk.lines.len()).sum();
        if lines > lines_left {
            lines_exhausted = true;
            file.truncated = true;
        } else {
            lines_left -= lines;
            file.hunks = hunks;
        }
        files.push(file);
    }
    Ok(TreeDiff {
        files,
        truncated: walk.truncated,
    })
}

/// The contents of a blob, or nothing for an absent side.
fn blob_or_empty(
    objects: &mut Objects,
    id: Option<ObjectId>,
    limit: u64,
) -> Result<Vec<u8>, BrowseError> {
    match id {
        None => Ok(Vec::new()),
        Some(id) => Ok(read_object(objects, id, gix_object::Kind::Blob, limit)?.to_vec()),
    }
}

/// The recursive tree comparison of [`diff`].
struct TreeWalk {
    changes: Vec<Change>,
    trees_read: usize,
    truncated: bool,
}

impl TreeWalk {
    fn entries(
        &mut self,
        objects: &mut Objects,
        tree: Option<ObjectId>,
    ) -> Result<Vec<RawEntry>, BrowseError> {
        match tree {
            None => Ok(Vec::new()),
            Some(id) => {
                self.trees_read += 1;
                tree_entries(objects, id)
            }
        }
    }

    fn record(&mut self, path: &[u8], old: Option<&RawEntry>, new: Option<&RawEntry>) {
        if self.changes.len() == MAX_DIFF_ENTRIES {
            self.truncated = true;
            return;
        }
        let side = |entry: Option<&RawEntry>| entry.map(|e| (EntryKind::from_mode(e.mode), e.id));
        self.changes.push(Change {
            path: path.to_vec(),
            old: side(old),
            new: side(new),
        });
    }

    /// Compare two trees (either may be absent) whose entries live below
    /// `prefix` (empty or ending in `/`).
    fn compare(
        &mut self,
        objects: &mut Objects,
        old: Option<ObjectId>,
        new: Option<ObjectId>,
        prefix: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), BrowseError> {
        if self.truncated {
            return Ok(());
        }
        if depth > MAX_TREE_DEPTH || self.trees_read + 2 > MAX_DIFF_TREES {
            self.truncated = true;
            return Ok(());
        }
        let old_entries = self.entries(objects, old)?;
        let new_entries = self.entries(objects, new)?;
        let (mut i, mut j) = (0, 0);
        while i < old_entries.len() || j < new_entries.len() {
            if self.truncated {
                return Ok(());
            }
            let order = match (old_entries.get(i), new_entries.get(j)) {
                (Some(a), Some(b)) => gix_object::tree::name_order(
                    &a.name,
                    a.mode.is_tree(),
                    &b.name,
                    b.mode.is_tree(),
                ),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            let (a, b) = match order {
                Ordering::Less => {
                    i += 1;
                    (old_entries.get(i - 1), None)
                }
                Ordering::Greater => {
                    j += 1;
                    (None, new_entries.get(j - 1))
                }
                Ordering::Equal => {
                    i += 1;
                    j += 1;
                    (old_entries.get(i - 1), new_entries.get(j - 1))
                }
            };
            if let (Some(a), Some(b)) = (a, b)
                && a.id == b.id
                && a.mode == b.mode
            {
                continue;
            }
            let name = a.or(b).map(|e| e.name.as_slice()).unwrap_or_default();
            let length = prefix.len();
            prefix.extend_from_slice(name);
            let is_tree = |e: Option<&RawEntry>| e.filter(|e| e.mode.is_tree()).map(|e| e.id);
            // Same-named entries are both trees or both not (name order
            // tells a tree `x` from a file `x`).
            if a.is_some_and(|e| e.mode.is_tree()) || b.is_some_and(|e| e.mode.is_tree()) {
                prefix.push(b'/');
                self.compare(objects, is_tree(a), is_tree(b), prefix, depth + 1)?;
            } else {
                let path = prefix.clone();
                self.record(&path, a, b);
            }
            prefix.truncate(length);
        }
        Ok(())
    }
}

/// A line diff of two texts: additions, deletions and the hunks with
/// [`DIFF_CONTEXT`] lines of context.
fn line_diff(old: &[u8], new: &[u8]) -> (u32, u32, Vec<Hunk>) {
    use imara_diff::{Algorithm, Diff, InternedInput};
    let input = InternedInput::new(old, new);
    let mut diff = Diff::compute(Algorithm::Myers, &input);
    diff.postprocess_lines(&input);
    let changes: Vec<imara_diff::Hunk> = diff.hunks().collect();
    let old_len = input.before.len() as u32;
    let line =
        |kind: LineKind, token: imara_diff::Token, old_no: Option<u32>, new_no: Option<u32>| {
            let bytes: &[u8] = input.interner[token];
            let (text, no_newline) = match bytes.strip_suffix(b"\n") {
                Some(text) => (text, false),
                None => (bytes, true),
            };
            DiffLine {
                kind,
                old_no,
                new_no,
                text: String::from_utf8_lossy(text).into_owned(),
                no_newline,
            }
        };
    let mut hunks = Vec::new();
    let mut first = 0;
    while first < changes.len() {
        // Changes closer than twice the context share a hunk, as in git.
        let mut last = first;
        while last + 1 < changes.len()
            && changes[last + 1].before.start - changes[last].before.end <= 2 * DIFF_CONTEXT
        {
            last += 1;
        }
        // Lines before the first and after the last change are common to
        // both sides, so the context is the same length on both.
        let leading = DIFF_CONTEXT.min(changes[first].before.start);
        let trailing = DIFF_CONTEXT.min(old_len - changes[last].before.end);
        let old_begin = changes[first].before.start - leading;
        let new_begin = changes[first].after.start - leading;
        let old_end = changes[last].before.end + trailing;
        let new_end = changes[last].after.end + trailing;
        let mut lines = Vec::new();
        let (mut o, mut n) = (old_begin, new_begin);
        for change in &changes[first..=last] {
            while o < change.before.start {
                lines.push(line(
                    LineKind::Context,
                    input.before[o as usize],
                    Some(o + 1),
                    Some(n + 1),
                ));
                o += 1;
                n += 1;
            }
            for index in change.before.clone() {
                lines.push(line(
                    LineKind::Removed,
                    input.before[index as usize],
                    Some(index + 1),
                    None,
                ));
            }
            for index in change.after.clone() {
                lines.push(line(
                    LineKind::Added,
                    input.after[index as usize],
                    None,
                    Some(index + 1),
                ));
            }
            o = change.before.end;
            n = change.after.end;
        }
        while o < old_end {
            lines.push(line(
                LineKind::Context,
                input.before[o as usize],
                Some(o + 1),
                Some(n + 1),
            ));
            o += 1;
            n += 1;
        }
        let start = |begin: u32, end: u32| if end > begin { begin + 1 } else { begin };
        hunks.push(Hunk {
            old_start: start(old_begin, old_end),
            old_lines: old_end - old_begin,
            new_start: start(new_begin, new_end),
            new_lines: new_end - new_begin,
            lines,
        });
        first = last + 1;
    }
    (diff.count_additions(), diff.count_removals(), hunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_cannot_name_entries_are_refused() {
        assert_eq!(split_path(b""), Some(vec![]));
        assert_eq!(split_path(b"a/b/"), Some(vec![&b"a"[..], b"b"]));
        for bad in [
            &b"a/../b"[..],
            b"..",
            b".",
            b"a//b",
            b"/a",
            b"a/./b",
            b"a\0b",
        ] {
            assert_eq!(split_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ref_names_match_whole_segments() {
        assert_eq!(
            segments_matching(&["feature", "x", "src"], b"feature/x"),
            Some(2)
        );
        assert_eq!(segments_matching(&["feature", "xy"], b"feature/x"), None);
        assert_eq!(segments_matching(&["main"], b"main"), Some(1));
        assert_eq!(segments_matching(&["feature"], b"feature/x"), None);
        assert_eq!(segments_matching(&["", "x"], b"/x"), None);
    }

    #[test]
    fn hunks_match_git_for_a_simple_change() {
        let old = b"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n";
        let new = b"1\n2\n3\n4\nfive\n6\n7\n8\n9\n10\n11";
        let (additions, deletions, hunks) = line_diff(old, new);
        assert_eq!((additions, deletions), (2, 1));
        let headers: Vec<String> = hunks.iter().map(Hunk::header).collect();
        assert_eq!(headers, ["@@ -2,9 +2,10 @@"]);
        let last = hunks[0]
            .lines
            .last()
            .map(|l| (l.text.as_str(), l.no_newline));
        assert_eq!(last, Some(("11", true)));
    }
}
