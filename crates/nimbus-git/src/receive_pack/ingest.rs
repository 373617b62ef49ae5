//! Receiving a pack: stream it to a staging directory (thin packs are
//! completed from the repository's objects), index it, and check every
//! object in it the way `git fsck` would, including that everything it
//! points to exists.

use super::index_pack;
use crate::objects::ObjectDb;
use bstr::{BStr, ByteSlice};
use gix_hash::ObjectId;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Bounds on what one push may send.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// The largest pack accepted, in bytes.
    pub max_pack_bytes: u64,
    /// The largest single object accepted, in bytes (decompressed).
    pub max_object_bytes: usize,
    /// The most objects one pack may hold: indexing keeps about 75 bytes
    /// per object in memory.
    pub max_objects: u32,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_pack_bytes: 4 << 30,
            max_object_bytes: 1 << 30,
            max_objects: 20_000_000,
        }
    }
}

/// Why a received pack was refused. Messages go to the client.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the pack is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the pack is invalid: {message}")]
    InvalidPack { message: String },
    #[error("invalid object {id}: {reason}")]
    InvalidObject { id: ObjectId, reason: String },
    #[error("object {id} refers to {missing}, which does not exist")]
    MissingObject { id: ObjectId, missing: ObjectId },
    #[error("could not write the received pack: {0}")]
    Write(#[source] io::Error),
}

/// A pack that was received, indexed and checked.
pub struct ReceivedPack {
    /// `pack-<checksum>`.
    pub name: String,
    pub pack_path: PathBuf,
    pub index_path: PathBuf,
    pub object_count: u64,
    pub pack_size: u64,
    pub index_size: u64,
    pub bundle: gix_pack::Bundle,
}

/// Counts bytes and stops at a limit, remembering that it did.
struct Limited<R> {
    inner: R,
    remaining: u64,
    exceeded: Arc<AtomicBool>,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // Anything more than the limit is too much.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? > 0 {
                self.exceeded.store(true, Ordering::Relaxed);
                return Err(io::Error::other("pack too large"));
            }
            return Ok(0);
        }
        let max = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn describe(err: &gix_error::Error) -> String {
    // gix errors chain their causes in Display with {:#}.
    format!("{err:#}")
}

/// Receive the pack in `stream` into `staging` (which must exist and be
/// private to this push). Returns `None` for a pack with no objects.
pub fn ingest(
    stream: impl Read,
    staging: &Path,
    existing: &ObjectDb,
    limits: IngestLimits,
) -> Result<Option<ReceivedPack>, IngestError> {
    let exceeded = Arc::new(AtomicBool::new(false));
    let limited = Limited {
        inner: stream,
        remaining: limits.max_pack_bytes,
        exceeded: exceeded.clone(),
    };
    let mut reader = io::BufReader::with_capacity(256 * 1024, limited);
    // An empty stream is an empty pack only if git sent nothing at all.
    if reader
        .fill_buf()
        .map_err(|e| IngestError::InvalidPack {
            message: e.to_string(),
        })?
        .is_empty()
    {
        return Err(IngestError::InvalidPack {
            message: "the pack is missing".into(),
        });
    }
    let indexed =
        index_pack::index_pack(&mut reader, staging, existing, limits).map_err(|err| {
            if exceeded.load(Ordering::Relaxed) {
                IngestError::TooLarge {
                    limit: limits.max_pack_bytes,
                }
            } else {
                err
            }
        })?;
    let Some(indexed) = indexed else {
        return Ok(None);
    };
    let bundle =
        gix_pack::Bundle::at(&indexed.index_path, gix_hash::Kind::Sha1).map_err(|err| {
            IngestError::InvalidPack {
                message: describe(&err),
            }
        })?;
    Ok(Some(ReceivedPack {
        name: indexed.name,
        object_count: indexed.object_count,
        pack_path: indexed.pack_path,
        index_path: indexed.index_path,
        pack_size: indexed.pack_size,
        index_size: indexed.index_size,
        bundle,
    }))
}

/// The first problem found by the parallel object check.
type FirstError = Arc<Mutex<Option<IngestError>>>;

/// Check every object of `bundle` (the fsck-style checks) and that what it
/// refers to is in the bundle or in `existing`. Ingest runs it; a push runs
/// it again when garbage collection replaced the packs it was checked
/// against.
pub fn check_objects(bundle: &gix_pack::Bundle, existing: &ObjectDb) -> Result<(), IngestError> {
    let first: FirstError = Arc::new(Mutex::new(None));
    let handle = existing.handle();
    let index = &bundle.index;
    let record = first.clone();
    let processor = move |kind: gix_object::Kind,
                          data: &[u8],
                          entry: &gix_pack::index::Entry,
                          _progress: &dyn gix_utils::progress::Progress|
          -> gix_error::Result<()> {
        let exists =
            |id: &ObjectId| index.lookup(id).is_some() || handle.exists_without_refresh(id);
        if let Err(err) = check_object(entry.oid, kind, data, &exists) {
            let mut slot = record.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(err);
            }
            return Err(gix_error::ErrorExt::raise(gix_error::message!(
                "invalid object"
            )));
        }
        Ok(())
    };
    let result = index.traverse(
        &bundle.pack,
        &mut gix_utils::progress::Discard,
        &AtomicBool::new(false),
        processor,
        gix_pack::index::traverse::Options {
            traversal: gix_pack::index::traverse::Algorithm::DeltaTreeLookup,
            thread_limit: None,
            // The pack was hashed and verified while it was received.
            check: gix_pack::index::traverse::SafetyCheck::SkipFileAndObjectChecksumVerification,
            alloc_limit_bytes: None,
            make_pack_lookup_cache: || gix_pack::cache::Never,
        },
    );
    if let Some(err) = first.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(err);
    }
    result.map(|_| ()).map_err(|err| IngestError::InvalidPack {
        message: describe(&err),
    })
}

fn invalid(id: ObjectId, reason: impl Into<String>) -> IngestError {
    IngestError::InvalidObject {
        id,
        reason: reason.into(),
    }
}

/// Check one object as `git fsck` would, and that what it refers to exists.
pub fn check_object(
    id: ObjectId,
    kind: gix_object::Kind,
    data: &[u8],
    exists: &dyn Fn(&ObjectId) -> bool,
) -> Result<(), IngestError> {
    check_object_with(id, kind, data, &mut |target| {
        if exists(&target) {
            Ok(())
        } else {
            Err(IngestError::MissingObject {
                id,
                missing: target,
            })
        }
    })
}

/// [`check_object`], handing each id the object refers to to `require`.
pub(crate) fn check_object_with(
    id: ObjectId,
    kind: gix_object::Kind,
    data: &[u8],
    require: &mut dyn FnMut(ObjectId) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    match kind {
        gix_object::Kind::Blob => Ok(()),
        gix_object::Kind::Commit => {
            let commit = gix_object::CommitRef::from_bytes(data, gix_hash::Kind::Sha1)
                .map_err(|e| invalid(id, format!("bad commit: {}", describe(&e))))?;
            for (what, signature) in [
                ("author", commit.author()),
                ("committer", commit.committer()),
            ] {
                let signature =
                    signature.map_err(|e| invalid(id, format!("bad {what}: {}", describe(&e))))?;
                signature
                    .time()
                    .map_err(|_| invalid(id, format!("bad date in {what}")))?;
            }
            require(commit.tree())?;
            for parent in commit.parents() {
                require(parent)?;
            }
            Ok(())
        }
        gix_object::Kind::Tag => {
            let tag = gix_object::TagRef::from_bytes(data, gix_hash::Kind::Sha1)
                .map_err(|e| invalid(id, format!("bad tag: {}", describe(&e))))?;
            if let Some(tagger) = tag
                .tagger()
                .map_err(|e| invalid(id, format!("bad tagger: {}", describe(&e))))?
            {
                tagger
                    .time()
                    .map_err(|_| invalid(id, "bad date in tagger"))?;
            }
            require(tag.target())
        }
        gix_object::Kind::Tree => check_tree(id, data, require),
    }
}

const VALID_MODES: [gix_object::tree::EntryKind; 5] = [
    gix_object::tree::EntryKind::Blob,
    gix_object::tree::EntryKind::BlobExecutable,
    gix_object::tree::EntryKind::Link,
    gix_object::tree::EntryKind::Tree,
    gix_object::tree::EntryKind::Commit,
];

fn check_tree(
    id: ObjectId,
    data: &[u8],
    require: &mut dyn FnMut(ObjectId) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let mut previous: Option<(&BStr, bool)> = None;
    // Names of files and of directories, to catch a file and a directory
    // of the same name (they are not adjacent in git's tree order).
    let mut file_names: Vec<&BStr> = Vec::new();
    let mut tree_names: Vec<&BStr> = Vec::new();
    for entry in gix_object::TreeRefIter::from_bytes(data, gix_hash::Kind::Sha1) {
        let entry = entry.map_err(|e| invalid(id, format!("bad tree: {}", describe(&e))))?;
        // The five modes git writes, exactly ("040000" is another mode).
        if !VALID_MODES.iter().any(|kind| entry.mode == (*kind).into()) {
            let mut buf = [0u8; 6];
            let mode = entry.mode.as_bytes(&mut buf);
            return Err(invalid(id, format!("bad file mode {mode:?}")));
        }
        check_entry_name(id, entry.filename)?;
        let is_tree = entry.mode.is_tree();
        if let Some((prev_name, prev_tree)) = previous {
            let order = gix_object::tree::name_order(prev_name, prev_tree, entry.filename, is_tree);
            if order != std::cmp::Ordering::Less {
                return Err(invalid(id, "tree entries are not sorted or not unique"));
            }
        }
        previous = Some((entry.filename, is_tree));
        if is_tree {
            tree_names.push(entry.filename);
        } else {
            file_names.push(entry.filename);
        }
        if !entry.mode.is_commit() {
            require(entry.oid.to_owned())?;
        }
    }
    if !tree_names.is_empty() {
        file_names.sort_unstable();
    }
    for name in &tree_names {
        if file_names.binary_search(name).is_ok() {
            return Err(invalid(
                id,
                format!(
                    "duplicate entry {:?} (a file and a directory)",
                    name.as_bstr()
                ),
            ));
        }
    }
    Ok(())
}

fn check_entry_name(id: ObjectId, name: &BStr) -> Result<(), IngestError> {
    if name.is_empty() {
        return Err(invalid(id, "empty file name in tree"));
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(invalid(id, format!("bad file name {name:?} in tree")));
    }
    if name == "." || name == ".." {
        return Err(invalid(id, format!("bad file name {name:?} in tree")));
    }
    // `.git` in any case, and the variants filesystems fold into it.
    let trimmed = name.trim_end_with(|c| c == '.' || c == ' ');
    if trimmed.eq_ignore_ascii_case(b".git") || trimmed.eq_ignore_ascii_case(b"git~1") {
        return Err(invalid(
            id,
            format!("tree contains {name:?}, which git refuses"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(hex: char) -> ObjectId {
        ObjectId::from_hex(hex.to_string().repeat(40).as_bytes()).expect("valid")
    }

    fn tree(entries: &[(&str, &str, ObjectId)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (mode, name, oid) in entries {
            out.extend_from_slice(mode.as_bytes());
            out.push(b' ');
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            out.extend_from_slice(oid.as_bytes());
        }
        out
    }

    fn all_exist(_: &ObjectId) -> bool {
        true
    }

    #[test]
    fn well_formed_tree_passes() {
        let data = tree(&[("100644", "a", id('1')), ("40000", "b", id('2'))]);
        check_object(id('f'), gix_object::Kind::Tree, &data, &all_exist).expect("valid");
    }

    #[test]
    fn trees_git_fsck_rejects_are_rejected() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                tree(&[("100644", "b", id('1')), ("100644", "a", id('2'))]),
                "not sorted",
            ),
            (
                tree(&[("100644", "a", id('1')), ("100644", "a", id('2'))]),
                "not sorted",
            ),
            (tree(&[("100664", "a", id('1'))]), "bad file mode"),
            (tree(&[("040000", "a", id('1'))]), "bad file mode"),
            (tree(&[("100644", ".git", id('1'))]), "refuses"),
            (tree(&[("40000", ".GIT", id('1'))]), "refuses"),
            (tree(&[("100644", "..", id('1'))]), "bad file name"),
            (
                tree(&[("100644", "a", id('1')), ("40000", "a", id('2'))]),
                "a file and a directory",
            ),
        ];
        for (data, expected) in cases {
            let err = check_object(id('f'), gix_object::Kind::Tree, &data, &all_exist)
                .expect_err(expected);
            assert!(
                err.to_string().contains(expected),
                "{err} should contain {expected}"
            );
        }
    }

    #[test]
    fn missing_referenced_objects_are_reported() {
        let data = tree(&[("100644", "a", id('1'))]);
        let err = check_object(id('f'), gix_object::Kind::Tree, &data, &|_| false)
            .expect_err("missing blob");
        assert!(matches!(err, IngestError::MissingObject { missing, .. } if missing == id('1')));
    }

    #[test]
    fn commits_need_dates_and_existing_parents() {
        let good = format!(
            "tree {}\nparent {}\nauthor A <a@b> 1700000000 +0000\ncommitter A <a@b> 1700000000 +0000\n\nmsg\n",
            id('1'),
            id('2')
        );
        check_object(
            id('f'),
            gix_object::Kind::Commit,
            good.as_bytes(),
            &all_exist,
        )
        .expect("valid");
        let no_date = format!(
            "tree {}\nauthor A <a@b>\ncommitter A <a@b>\n\nmsg\n",
            id('1')
        );
        assert!(
            check_object(
                id('f'),
                gix_object::Kind::Commit,
                no_date.as_bytes(),
                &all_exist
            )
            .is_err()
        );
        let exists = |o: &ObjectId| *o != id('2');
        let err = check_object(id('f'), gix_object::Kind::Commit, good.as_bytes(), &exists)
            .expect_err("missing parent");
        assert!(matches!(err, IngestError::MissingObject { .. }));
    }
}
