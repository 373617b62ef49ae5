//! Commits made on the server: a web editor's change (files written or
//! deleted on top of a parent commit) turned into the new blobs, the trees
//! rewritten from each changed path up to the root, and the commit, plus
//! a pack of exactly those objects.
//!
//! Everything here is pure object construction over [`Objects`]: nothing
//! is stored. [`crate::service::GitService::commit_edit`] sends the pack
//! and the ref update through the push path (ingest, upload, the
//! compare-and-swap of `apply_push`, events), as if a client had pushed.

use crate::objects::{ObjectError, Objects};
use crate::pktline::{decode, write_flush, write_line};
use crate::service::{GitService, ServiceError};
use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;
use gix_object::tree::{Entry, EntryKind, EntryMode};
use gix_object::{Kind, WriteTo};
use nimbus_types::events::EventActor;
use nimbus_types::{RefName, Repository};
use std::collections::{BTreeMap, HashSet};

/// The most changes one commit may carry.
pub const MAX_CHANGES: usize = 100;
/// The largest file content a change may write.
pub const MAX_CONTENT_BYTES: usize = 10 * 1024 * 1024;
/// The longest path a change may name.
pub const MAX_PATH_BYTES: usize = 4096;
/// The longest commit message.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The deepest directory nesting a path may have.
pub const MAX_PATH_DEPTH: usize = 256;

/// One change to the parent's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create or overwrite a file. An existing file keeps its mode
    /// (executable or not); a new file is not executable.
    Write { path: String, content: Vec<u8> },
    /// Delete a file (not a directory). Directories left empty disappear.
    Delete { path: String },
}

impl Change {
    pub fn path(&self) -> &str {
        match self {
            Change::Write { path, .. } | Change::Delete { path } => path,
        }
    }
}

/// Who made the commit, and when. Used as author and committer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
    /// Unix seconds.
    pub time: i64,
    /// Offset from UTC in seconds (e.g. `3600` for `+0100`); whole minutes.
    pub offset_seconds: i32,
}

/// A commit to build on top of `parent`.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub parent: ObjectId,
    /// Applied in order; at most [`MAX_CHANGES`], each path at most once.
    pub changes: Vec<Change>,
    /// Trailing whitespace is trimmed, CRLF becomes LF, and one final
    /// newline is added.
    pub message: String,
    pub author: Identity,
}

/// Why an edit cannot be committed. Messages go to users.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("the commit message is empty")]
    EmptyMessage,
    #[error("the commit message is longer than {limit} bytes")]
    MessageTooLong { limit: usize },
    #[error("the commit message contains a NUL byte")]
    MessageHasNul,
    #[error("invalid author: {reason}")]
    BadAuthor { reason: &'static str },
    #[error("the commit changes nothing")]
    NoChanges,
    #[error("a commit may change at most {limit} files")]
    TooManyChanges { limit: usize },
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("{path:?} is changed more than once")]
    DuplicatePath { path: String },
    #[error("{path:?} is larger than {limit} bytes")]
    ContentTooLarge { path: String, limit: usize },
    #[error("{path:?} is a directory")]
    IsDirectory { path: String },
    #[error("{path:?} cannot be created: {parent:?} is a file")]
    ParentIsFile { path: String, parent: String },
    #[error("{path:?} is not a regular file and cannot be edited")]
    NotAFile { path: String },
    #[error("{path:?} does not exist")]
    NotFound { path: String },
    #[error("the change leaves every file as it was")]
    NoChange,
    #[error("the parent commit {id} does not exist")]
    MissingParent { id: ObjectId },
    #[error("the repository's objects could not be read")]
    Objects(#[from] ObjectError),
    #[error("tree {id} could not be decoded")]
    BadTree { id: ObjectId },
    #[error("an object could not be encoded: {0}")]
    Encode(String),
}

/// One object made by [`build_commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewObject {
    pub id: ObjectId,
    pub kind: Kind,
    /// The encoded object, without the `<kind> <size>\0` header.
    pub data: Vec<u8>,
}

/// The result of [`build_commit`].
#[derive(Debug, Clone)]
pub struct BuiltCommit {
    pub commit: ObjectId,
    pub tree: ObjectId,
    /// The objects the repository does not have yet: the commit first,
    /// then trees and blobs. Objects that already exist (an unchanged
    /// subtree, content that some other file has) are left out.
    pub objects: Vec<NewObject>,
}

impl BuiltCommit {
    /// A version 2 pack of [`Self::objects`], undeltified, made with
    /// `gix_pack::data::output` (zlib entries, SHA-1 trailer).
    pub fn pack(&self) -> Result<Vec<u8>, EditError> {
        use gix_pack::data::output;
        let entries = self
            .objects
            .iter()
            .map(|object| {
                output::Entry::from_data(
                    &output::Count::from_data(object.id, None),
                    &gix_object::Data::new(&object.data, object.kind, gix_hash::Kind::Sha1),
                    gix_zlib::Compression::DEFAULT,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| EditError::Encode(error.to_string()))?;
        let count = u32::try_from(entries.len())
            .map_err(|_| EditError::Encode("too many objects".to_owned()))?;
        let mut out = Vec::new();
        let mut writer = output::bytes::FromEntriesIter::new(
            std::iter::once(Ok(entries)),
            &mut out,
            count,
            gix_pack::data::Version::V2,
            gix_hash::Kind::Sha1,
        );
        for written in &mut writer {
            written.map_err(|error| EditError::Encode(error.to_string()))?;
        }
        drop(writer);
        Ok(out)
    }
}

/// Build the objects of `request` on top of its parent.
pub fn build_commit(
    objects: &mut Objects,
    request: &CommitRequest,
) -> Result<BuiltCommit, EditError> {
    let message = normalize_message(&request.message)?;
    check_identity(&request.author)?;
    if request.changes.is_empty() {
        return Err(EditError::NoChanges);
    }
    if request.changes.len() > MAX_CHANGES {
        return Err(EditError::TooManyChanges { limit: MAX_CHANGES });
    }
    let mut seen = HashSet::new();
    let mut parsed = Vec::with_capacity(request.changes.len());
    for change in &request.changes {
        let path = change.path();
        let components = split_path(path)?;
        if !seen.insert(path) {
            return Err(EditError::DuplicatePath {
                path: path.to_owned(),
            });
        }
        if let Change::Write { content, .. } = change
            && content.len() > MAX_CONTENT_BYTES
        {
            return Err(EditError::ContentTooLarge {
                path: path.to_owned(),
                limit: MAX_CONTENT_BYTES,
            });
        }
        parsed.push((change, components));
    }

    let parent_tree = match objects.commit(&request.parent)? {
        Some(info) => info.tree,
        None => {
            return Err(EditError::MissingParent { id: request.parent });
        }
    };
    let mut new_objects = Vec::new();
    let mut root = Dir::load(objects, parent_tree)?;
    for (change, components) in parsed {
        let path = change.path();
        match change {
            Change::Write { content, .. } => {
                let blob = make_object(objects, Kind::Blob, content.clone(), &mut new_objects)?;
                root.write(objects, path, &components, blob)?;
            }
            Change::Delete { .. } => root.delete(objects, path, &components)?,
        }
    }
    let mut trees = Vec::new();
    let tree = root.store(objects, &mut trees)?;
    if tree == parent_tree {
        return Err(EditError::NoChange);
    }
    let commit_data = encode_commit(tree, request.parent, &request.author, &message);
    gix_object::CommitRef::from_bytes(&commit_data, gix_hash::Kind::Sha1)
        .map_err(|error| EditError::Encode(error.to_string()))?;
    let mut commit = Vec::new();
    let commit_id = make_object(objects, Kind::Commit, commit_data, &mut commit)?;
    // Blobs of files later overwritten or deleted in the same request are
    // not in the final tree and stay out of the pack.
    let mut reachable = HashSet::new();
    collect_entries(&trees, &mut reachable);
    new_objects.retain(|object| reachable.contains(&object.id));
    let mut all = commit;
    all.extend(trees);
    all.extend(new_objects);
    Ok(BuiltCommit {
        commit: commit_id,
        tree,
        objects: all,
    })
}

fn collect_entries(trees: &[NewObject], out: &mut HashSet<ObjectId>) {
    for tree in trees {
        for entry in gix_object::TreeRefIter::from_bytes(&tree.data, gix_hash::Kind::Sha1).flatten()
        {
            out.insert(entry.oid.to_owned());
        }
    }
}

/// Hash `data` as a `kind` object; keep it in `out` unless the repository
/// (or `out`) already has it.
fn make_object(
    objects: &Objects,
    kind: Kind,
    data: Vec<u8>,
    out: &mut Vec<NewObject>,
) -> Result<ObjectId, EditError> {
    let id = gix_object::compute_hash(gix_hash::Kind::Sha1, kind, &data)
        .map_err(|error| EditError::Encode(error.to_string()))?;
    if !objects.contains(&id) && !out.iter().any(|object| object.id == id) {
        out.push(NewObject { id, kind, data });
    }
    Ok(id)
}

/// A directory being edited: its entries as read, and the subdirectories
/// an edit went into (which replace their entries when stored).
struct Dir {
    entries: Vec<Entry>,
    subdirs: BTreeMap<BString, Dir>,
}

impl Dir {
    fn empty() -> Dir {
        Dir {
            entries: Vec::new(),
            subdirs: BTreeMap::new(),
        }
    }

    fn load(objects: &mut Objects, id: ObjectId) -> Result<Dir, EditError> {
        let Some((kind, data)) = objects.find(&id)? else {
            return Err(EditError::Objects(ObjectError::Missing { id }));
        };
        if kind != Kind::Tree {
            return Err(EditError::BadTree { id });
        }
        let tree = gix_object::TreeRef::from_bytes(data, gix_hash::Kind::Sha1)
            .map_err(|_| EditError::BadTree { id })?;
        Ok(Dir {
            entries: gix_object::Tree::from(tree).entries,
            subdirs: BTreeMap::new(),
        })
    }

    /// The subdirectory `name` for an edit of `path`, loaded on first use;
    /// created when missing and `create` is set.
    fn subdir(
        &mut self,
        objects: &mut Objects,
        name: &[u8],
        path: &str,
        parent: &str,
        create: bool,
    ) -> Result<&mut Dir, EditError> {
        use std::collections::btree_map::Entry as Slot;
        match self.subdirs.entry(name.into()) {
            Slot::Occupied(slot) => Ok(slot.into_mut()),
            Slot::Vacant(slot) => {
                let dir = match self.entries.iter().find(|e| e.filename == name) {
                    Some(entry) if entry.mode.is_tree() => Dir::load(objects, entry.oid)?,
                    Some(_) => {
                        return Err(EditError::ParentIsFile {
                            path: path.to_owned(),
                            parent: parent.to_owned(),
                        });
                    }
                    None if create => Dir::empty(),
                    None => {
                        return Err(EditError::NotFound {
                            path: path.to_owned(),
                        });
                    }
                };
                Ok(slot.insert(dir))
            }
        }
    }

    /// Walk to the directory holding the last component of `components`.
    fn walk<'d>(
        &'d mut self,
        objects: &mut Objects,
        path: &str,
        components: &[&str],
        create: bool,
    ) -> Result<&'d mut Dir, EditError> {
        let mut dir = self;
        let mut parent_len = 0;
        for component in &components[..components.len() - 1] {
            parent_len += component.len() + usize::from(parent_len > 0);
            dir = dir.subdir(
                objects,
                component.as_bytes(),
                path,
                &path[..parent_len],
                create,
            )?;
        }
        Ok(dir)
    }

    fn write(
        &mut self,
        objects: &mut Objects,
        path: &str,
        components: &[&str],
        blob: ObjectId,
    ) -> Result<(), EditError> {
        let dir = self.walk(objects, path, components, true)?;
        let name = components[components.len() - 1].as_bytes();
        if dir.subdirs.contains_key(name) {
            return Err(EditError::IsDirectory {
                path: path.to_owned(),
            });
        }
        match dir.entries.iter_mut().find(|e| e.filename == name) {
            Some(entry) => match entry.mode.kind() {
                EntryKind::Blob | EntryKind::BlobExecutable => entry.oid = blob,
                EntryKind::Tree => {
                    return Err(EditError::IsDirectory {
                        path: path.to_owned(),
                    });
                }
                EntryKind::Link | EntryKind::Commit => {
                    return Err(EditError::NotAFile {
                        path: path.to_owned(),
                    });
                }
            },
            None => dir.entries.push(Entry {
                mode: EntryMode::from(EntryKind::Blob),
                filename: name.into(),
                oid: blob,
            }),
        }
        Ok(())
    }

    fn delete(
        &mut self,
        objects: &mut Objects,
        path: &str,
        components: &[&str],
    ) -> Result<(), EditError> {
        let dir = self.walk(objects, path, components, false)?;
        let name = components[components.len() - 1].as_bytes();
        let Some(index) = dir.entries.iter().position(|e| e.filename == name) else {
            // A directory made by an earlier change of this request has no
            // entry yet.
            return Err(if dir.subdirs.contains_key(name) {
                EditError::IsDirectory {
                    path: path.to_owned(),
                }
            } else {
                EditError::NotFound {
                    path: path.to_owned(),
                }
            });
        };
        if dir.entries[index].mode.is_tree() || dir.subdirs.contains_key(name) {
            return Err(EditError::IsDirectory {
                path: path.to_owned(),
            });
        }
        dir.entries.remove(index);
        Ok(())
    }

    /// Encode this directory (and its edited subdirectories), adding new
    /// trees to `out`. Empty subdirectories are dropped; the root may be
    /// the empty tree.
    fn store(self, objects: &Objects, out: &mut Vec<NewObject>) -> Result<ObjectId, EditError> {
        let Dir {
            mut entries,
            subdirs,
        } = self;
        for (name, sub) in subdirs {
            entries.retain(|e| e.filename != name);
            if sub.is_empty() {
                continue;
            }
            let oid = sub.store(objects, out)?;
            entries.push(Entry {
                mode: EntryMode::from(EntryKind::Tree),
                filename: name,
                oid,
            });
        }
        entries.sort();
        let tree = gix_object::Tree { entries };
        let mut data = Vec::with_capacity(tree.size() as usize);
        tree.write_to(&mut data)
            .map_err(|error| EditError::Encode(error.to_string()))?;
        make_object(objects, Kind::Tree, data, out)
    }

    /// Whether storing this directory leaves nothing.
    fn is_empty(&self) -> bool {
        self.entries
            .iter()
            .all(|e| self.subdirs.get(&e.filename).is_some_and(Dir::is_empty))
            && self.subdirs.values().all(Dir::is_empty)
    }
}

/// Split and check a path: at most [`MAX_PATH_BYTES`], components
/// separated by single `/` (none leading or trailing), none of them empty,
/// `.`, `..` or `.git` (in any case); no backslash and no control
/// characters such as NUL (what `git fsck` or a checkout on Windows would
/// refuse).
pub fn split_path(path: &str) -> Result<Vec<&str>, EditError> {
    let invalid = |reason| EditError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("it is empty"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(invalid("it is too long"));
    }
    if path.starts_with('/') || path.ends_with('/') {
        return Err(invalid("it starts or ends with '/'"));
    }
    if path.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    if path.contains('\\') {
        return Err(invalid("it contains a backslash"));
    }
    if path.chars().any(char::is_control) {
        return Err(invalid("it contains a control character"));
    }
    let components: Vec<&str> = path.split('/').collect();
    if components.len() > MAX_PATH_DEPTH {
        return Err(invalid("it is nested too deeply"));
    }
    for component in &components {
        match *component {
            "" => return Err(invalid("it has an empty component ('//')")),
            "." | ".." => return Err(invalid("it has a '.' or '..' component")),
            c if c.eq_ignore_ascii_case(".git") => {
                return Err(invalid("it has a '.git' component"));
            }
            _ => {}
        }
    }
    Ok(components)
}

fn normalize_message(message: &str) -> Result<String, EditError> {
    if message.contains('\0') {
        return Err(EditError::MessageHasNul);
    }
    let message = message.replace("\r\n", "\n");
    let trimmed = message.trim_end();
    if trimmed.trim_start().is_empty() {
        return Err(EditError::EmptyMessage);
    }
    if trimmed.len() > MAX_MESSAGE_BYTES {
        return Err(EditError::MessageTooLong {
            limit: MAX_MESSAGE_BYTES,
        });
    }
    Ok(format!("{trimmed}\n"))
}

fn check_identity(identity: &Identity) -> Result<(), EditError> {
    let bad = |value: &str| value.contains(['<', '>', '\n', '\r', '\0']);
    if identity.name.trim().is_empty() || bad(&identity.name) || identity.name.len() > 256 {
        return Err(EditError::BadAuthor {
            reason: "the name is empty, too long or has '<', '>' or a line break",
        });
    }
    if bad(&identity.email) || identity.email.len() > 256 {
        return Err(EditError::BadAuthor {
            reason: "the email is too long or has '<', '>' or a line break",
        });
    }
    if identity.offset_seconds.unsigned_abs() >= 100 * 3600 || identity.offset_seconds % 60 != 0 {
        return Err(EditError::BadAuthor {
            reason: "the time zone offset is not whole minutes under 100 hours",
        });
    }
    if identity.time < 0 {
        return Err(EditError::BadAuthor {
            reason: "the time is before 1970",
        });
    }
    Ok(())
}

fn encode_commit(tree: ObjectId, parent: ObjectId, author: &Identity, message: &str) -> Vec<u8> {
    let offset = author.offset_seconds.unsigned_abs() / 60;
    let sign = if author.offset_seconds < 0 { '-' } else { '+' };
    let signature = format!(
        "{} <{}> {} {sign}{:02}{:02}",
        author.name.trim(),
        author.email.trim(),
        author.time,
        offset / 60,
        offset % 60
    );
    let mut out = Vec::with_capacity(256 + message.len());
    out.extend_from_slice(format!("tree {tree}\nparent {parent}\n").as_bytes());
    out.extend_from_slice(format!("author {signature}\ncommitter {signature}\n\n").as_bytes());
    out.extend_from_slice(message.as_bytes());
    out
}

/// Why [`GitService::commit_edit`] made no commit.
#[derive(Debug, thiserror::Error)]
pub enum CommitEditError {
    /// The branch is not at the request's parent (any more): someone
    /// pushed since the page was loaded. `None`: the branch is gone.
    #[error("the branch was changed since the file was opened; reload and edit again")]
    Conflict { current: Option<ObjectId> },
    #[error("{name:?} is not a valid branch name")]
    BadBranch { name: String },
    #[error(transparent)]
    Edit(#[from] EditError),
    /// The push path refused the commit; `reason` is git's status text.
    #[error("the commit was refused: {reason}")]
    Rejected { reason: String },
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// What receive-pack says when the compare-and-swap of `apply_push` fails
/// (see `GitService::receive_pack`).
const STALE_REASON: &str = "it was changed by another push";

/// See [`GitService::commit_edit`].
pub(crate) async fn commit_edit(
    service: &GitService,
    repo: &Repository,
    actor: Option<EventActor>,
    branch: &str,
    request: CommitRequest,
) -> Result<ObjectId, CommitEditError> {
    let bad_branch = || CommitEditError::BadBranch {
        name: branch.to_owned(),
    };
    let name = RefName::new(format!("refs/heads/{branch}").as_bytes()).map_err(|_| bad_branch())?;
    if !name.is_branch() {
        return Err(bad_branch());
    }
    let snapshot = service.snapshot(repo).await?;
    let current = snapshot
        .refs
        .iter()
        .find(|r| r.name == name)
        .map(|r| r.target);
    if current != Some(request.parent) {
        return Err(CommitEditError::Conflict { current });
    }
    let parent = request.parent;
    let db = snapshot.db.clone();
    drop(snapshot);
    let (built, pack) = tokio::task::spawn_blocking(move || {
        let mut objects = Objects::new(db.handle());
        let built = build_commit(&mut objects, &request)?;
        let pack = built.pack()?;
        Ok::<_, EditError>((built, pack))
    })
    .await
    .map_err(ServiceError::from)??;

    // Exactly what `git push` sends: one command with report-status, then
    // the pack. Ingestion, upload, the compare-and-swap and the events are
    // the push's own.
    let mut body = Vec::with_capacity(pack.len() + 200);
    let mut command = format!("{parent} {} ", built.commit).into_bytes();
    command.extend_from_slice(name.as_bstr());
    command.extend_from_slice(b"\0report-status atomic agent=nimbus-editor\n");
    write_line(&mut body, command).map_err(ServiceError::from)?;
    write_flush(&mut body).map_err(ServiceError::from)?;
    body.extend_from_slice(&pack);
    let report = service
        .receive_pack(repo, actor, std::io::Cursor::new(body))
        .await?;
    match read_report(&report, name.as_bstr()) {
        Ok(()) => Ok(built.commit),
        Err(reason) if reason.contains(STALE_REASON) => {
            let current = service
                .meta
                .refs(repo.id)
                .await
                .map_err(ServiceError::from)?
                .into_iter()
                .find(|r| r.name == name)
                .map(|r| r.target);
            Err(CommitEditError::Conflict { current })
        }
        Err(reason) => Err(CommitEditError::Rejected { reason }),
    }
}

/// Whether a `report-status` answer accepted the update of `name`; the
/// reason it did not otherwise.
fn read_report(mut report: &[u8], name: &[u8]) -> Result<(), String> {
    let mut unpack = None;
    let mut status = None;
    while let Ok(Some((packet, used))) = decode(report) {
        report = &report[used..];
        let Some(line) = packet.line() else { continue };
        if let Some(error) = line.strip_prefix(b"ERR ") {
            return Err(error.to_str_lossy().into_owned());
        } else if let Some(result) = line.strip_prefix(b"unpack ") {
            unpack = Some(result.to_str_lossy().into_owned());
        } else if let Some(rest) = line.strip_prefix(b"ok ")
            && rest == name
        {
            status = Some(Ok(()));
        } else if let Some(rest) = line.strip_prefix(b"ng ")
            && let Some(reason) = rest.strip_prefix(name).and_then(|r| r.strip_prefix(b" "))
        {
            status = Some(Err(reason.to_str_lossy().into_owned()));
        }
    }
    match unpack.as_deref() {
        Some("ok") => {}
        Some(error) => return Err(format!("unpack failed: {error}")),
        None => return Err("no report from receive-pack".to_owned()),
    }
    status.unwrap_or_else(|| Err("receive-pack did not report the branch".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert_eq!(split_path("a/b.txt").ok(), Some(vec!["a", "b.txt"]));
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "./a",
            "a/../b",
            ".git/config",
            "x/.GIT/y",
            "a\0b",
            "a\\b",
        ] {
            assert!(split_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(split_path(&"a".repeat(MAX_PATH_BYTES + 1)).is_err());
        assert!(split_path(".gitignore").is_ok());
    }

    #[test]
    fn messages_are_normalized() {
        assert_eq!(
            normalize_message("a\r\nb  \n\n").ok(),
            Some("a\nb\n".into())
        );
        assert!(matches!(
            normalize_message(" \n "),
            Err(EditError::EmptyMessage)
        ));
    }

    #[test]
    fn commit_encoding_has_git_time_zones() {
        let author = Identity {
            name: "A".into(),
            email: "a@example.com".into(),
            time: 1_700_000_000,
            offset_seconds: -(5 * 3600 + 30 * 60),
        };
        let null = ObjectId::null(gix_hash::Kind::Sha1);
        let data = encode_commit(null, null, &author, "m\n");
        assert!(
            data.as_bstr()
                .contains_str("author A <a@example.com> 1700000000 -0530\n")
        );
    }
}
