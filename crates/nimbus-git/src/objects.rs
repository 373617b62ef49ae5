//! Read access to a repository's objects: a gix object database over the
//! repository's packs (materialised in a local directory), plus a small
//! cache of parsed commits for the graph walks of negotiation and shallow
//! clones.

use gix_hash::ObjectId;
use gix_object::{Find, FindHeader};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Errors reading objects.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("could not open the object database")]
    Open(#[source] std::io::Error),
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
    #[error("reading object {id} failed")]
    Read {
        id: ObjectId,
        #[source]
        source: gix_error::Error,
    },
}

/// A repository's object database. Cheap to clone; a handle per thread.
#[derive(Clone)]
pub struct ObjectDb {
    store: Arc<gix_odb::Store>,
}

/// The most packs one repository may have before it must be compacted.
const MAX_PACKS: usize = 4096;

impl ObjectDb {
    /// Open the packs under `objects_dir/pack/`. Only the packs present when
    /// the directory is first read are used: callers open a new database
    /// when the repository's pack list changes.
    pub fn open(objects_dir: &Path) -> Result<Self, ObjectError> {
        let store = gix_odb::Store::at_opts(
            objects_dir.to_owned(),
            gix_hash::Kind::Sha1,
            &mut std::iter::empty(),
            gix_odb::store::init::Options {
                slots: gix_odb::store::init::Slots::Given(MAX_PACKS as u16),
                ..Default::default()
            },
        )
        .map_err(ObjectError::Open)?;
        Ok(ObjectDb {
            store: Arc::new(store),
        })
    }

    /// A handle for one thread. It never rescans the directory on a miss:
    /// unknown `have`s are common and must stay cheap.
    pub fn handle(&self) -> gix_odb::HandleArc {
        let mut handle = self.store.to_cache_arc();
        handle.refresh_never();
        handle
    }
}

/// The facts about a commit that graph walks need.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub tree: ObjectId,
    pub parents: Vec<ObjectId>,
    /// Committer time, Unix seconds.
    pub time: i64,
}

/// Look up objects through a handle, with parsed commits cached.
pub struct Objects {
    pub handle: gix_odb::HandleArc,
    commits: HashMap<ObjectId, Option<CommitInfo>>,
    buf: Vec<u8>,
}

impl Objects {
    pub fn new(handle: gix_odb::HandleArc) -> Self {
        Objects {
            handle,
            commits: HashMap::new(),
            buf: Vec::new(),
        }
    }

    /// Whether the object exists.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.handle.exists_without_refresh(id)
    }

    /// The kind of an object, or `None` if it is missing.
    pub fn kind(&self, id: &ObjectId) -> Result<Option<gix_object::Kind>, ObjectError> {
        match self.handle.try_header(id) {
            Ok(header) => Ok(header.map(|h| h.kind)),
            Err(source) => Err(ObjectError::Read { id: *id, source }),
        }
    }

    /// An object's size, or `None` if it is missing.
    pub fn size(&self, id: &ObjectId) -> Result<Option<u64>, ObjectError> {
        match self.handle.try_header(id) {
            Ok(header) => Ok(header.map(|h| h.size)),
            Err(source) => Err(ObjectError::Read { id: *id, source }),
        }
    }

    /// The decoded object, or `None` if it is missing.
    pub fn find(
        &mut self,
        id: &ObjectId,
    ) -> Result<Option<(gix_object::Kind, &[u8])>, ObjectError> {
        match self.handle.try_find(id, &mut self.buf) {
            Ok(Some(data)) => Ok(Some((data.kind, data.data))),
            Ok(None) => Ok(None),
            Err(source) => Err(ObjectError::Read { id: *id, source }),
        }
    }

    /// The parsed commit, or `None` if `id` is missing or not a commit.
    pub fn commit(&mut self, id: &ObjectId) -> Result<Option<&CommitInfo>, ObjectError> {
        if !self.commits.contains_key(id) {
            let info = match self.handle.try_find(id, &mut self.buf) {
                Ok(Some(data)) if data.kind == gix_object::Kind::Commit => {
                    let commit = gix_object::CommitRef::from_bytes(data.data, gix_hash::Kind::Sha1)
                        .map_err(|source| ObjectError::Decode { id: *id, source })?;
                    Some(CommitInfo {
                        tree: commit.tree(),
                        parents: commit.parents().collect(),
                        time: commit.time().map(|t| t.seconds).unwrap_or(0),
                    })
                }
                Ok(_) => None,
                Err(source) => return Err(ObjectError::Read { id: *id, source }),
            };
            self.commits.insert(*id, info);
        }
        Ok(self.commits.get(id).and_then(|c| c.as_ref()))
    }

    /// Like [`Self::commit`], but a missing commit is an error.
    pub fn expect_commit(&mut self, id: &ObjectId) -> Result<CommitInfo, ObjectError> {
        self.commit(id)?
            .cloned()
            .ok_or(ObjectError::Missing { id: *id })
    }

    /// Follow tags until a non-tag object. Returns the object and its kind.
    pub fn peel(&mut self, id: &ObjectId) -> Result<(ObjectId, gix_object::Kind), ObjectError> {
        let mut current = *id;
        // Tag chains are short in practice; a loop bound guards against cycles
        // (impossible with sound hashes, but cheap to rule out).
        for _ in 0..64 {
            let Some((kind, data)) = self.find(&current)? else {
                return Err(ObjectError::Missing { id: current });
            };
            if kind != gix_object::Kind::Tag {
                return Ok((current, kind));
            }
            let tag =
                gix_object::TagRef::from_bytes(data, gix_hash::Kind::Sha1).map_err(|source| {
                    ObjectError::Decode {
                        id: current,
                        source,
                    }
                })?;
            current = tag.target();
        }
        Err(ObjectError::Missing { id: current })
    }
}
