//! Read access to a repository's objects: a gix object database over the
//! repository's packs (materialised in a local directory), plus a small
//! cache of parsed commits for the graph walks of negotiation and shallow
//! clones.

use gix_hash::ObjectId;
use gix_object::{Find, FindHeader};
use std::any::Any;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
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
    /// The objects directory, and the file names of the pack indices it
    /// held when opened (sorted), to map it again ([`ObjectDb::remapped`]).
    dir: PathBuf,
    indices: Arc<[OsString]>,
    /// Whatever keeps the directory alive (a pack cache lease), dropped
    /// with the last clone.
    _keep_alive: Arc<dyn Any + Send + Sync>,
}

/// The most bytes of decoded delta bases one handle keeps.
pub const DELTA_BASE_CACHE_BYTES: usize = 16 << 20;

/// The most packs one repository may have before it must be compacted.
const MAX_PACKS: usize = 4096;

impl ObjectDb {
    /// Open the packs under `objects_dir/pack/`. Only the packs present when
    /// the directory is first read are used: callers open a new database
    /// when the repository's pack list changes.
    pub fn open(objects_dir: &Path) -> Result<Self, ObjectError> {
        // Listed first: a pack added later is not one gix saw.
        let indices = first_object_of_every_index(&objects_dir.join("pack"))
            .map(|indices| indices.into_iter().map(|(name, _)| name).collect())
            .unwrap_or_default();
        Self::open_store(objects_dir, indices, Arc::new(()))
    }

    /// [`ObjectDb::open`] for a directory that must hold exactly
    /// `expected_packs` packs, keeping `keep_alive` until the last clone of
    /// the database drops: it owns the directory (a pack cache lease).
    ///
    /// Every index and pack is mapped before this returns, so the database
    /// keeps working even if the directory is removed under it (an emptied
    /// cache); a pack that is already gone is an error here, not a missing
    /// object in the middle of a response.
    pub fn open_keeping(
        objects_dir: &Path,
        expected_packs: usize,
        keep_alive: impl Any + Send + Sync,
    ) -> Result<Self, ObjectError> {
        Self::open_checked(
            objects_dir,
            Expected::Count(expected_packs),
            Arc::new(keep_alive),
        )
    }

    fn open_checked(
        objects_dir: &Path,
        expected: Expected<'_>,
        keep_alive: Arc<dyn Any + Send + Sync>,
    ) -> Result<Self, ObjectError> {
        // Listed before gix lists the directory: if both see every pack,
        // no pack was missing when gix looked.
        let (indices, first_objects): (Vec<OsString>, Vec<Option<ObjectId>>) =
            first_object_of_every_index(&objects_dir.join("pack"))?
                .into_iter()
                .unzip();
        let expected_packs = match expected {
            Expected::Count(count) => count,
            Expected::Same(names) => {
                if *names != *indices {
                    return Err(ObjectError::Open(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the packs of the directory changed",
                    )));
                }
                names.len()
            }
        };
        check_pack_count(
            "pack indices in the directory",
            indices.len(),
            expected_packs,
        )?;
        let db = Self::open_store(objects_dir, indices.into(), keep_alive)?;
        let mut handle = db.store.to_cache_arc();
        handle.prevent_pack_unload();
        handle.refresh_never();
        handle
            .packed_object_count()
            .map_err(|error| ObjectError::Open(std::io::Error::other(error)))?;
        for id in first_objects.into_iter().flatten() {
            match handle.try_header(&id) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(ObjectError::Missing { id }),
                Err(source) => return Err(ObjectError::Read { id, source }),
            }
        }
        let metrics = db.store.metrics();
        check_pack_count(
            "loaded pack indices",
            metrics.open_reachable_indices,
            expected_packs,
        )?;
        Ok(db)
    }

    /// The same packs, mapped anew by a store of its own. Pages read
    /// through it stay resident only while it lives: a long walk reads
    /// through a succession of these ([`Objects::remapping`]) so that it
    /// does not end up with most of the pack mapped into memory. Like
    /// [`ObjectDb::open_keeping`], an error unless the directory holds the
    /// packs it held when this database was opened (pack names are their
    /// checksums), each readable.
    pub fn remapped(&self) -> Result<ObjectDb, ObjectError> {
        Self::open_checked(
            &self.dir,
            Expected::Same(&self.indices),
            Arc::clone(&self._keep_alive),
        )
    }

    fn open_store(
        objects_dir: &Path,
        indices: Arc<[OsString]>,
        keep_alive: Arc<dyn Any + Send + Sync>,
    ) -> Result<Self, ObjectError> {
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
            dir: objects_dir.to_owned(),
            indices,
            _keep_alive: keep_alive,
        })
    }

    /// A handle for one thread. It never rescans the directory on a miss:
    /// unknown `have`s are common and must stay cheap. It keeps the last
    /// delta bases it decoded (at most [`DELTA_BASE_CACHE_BYTES`], allocated
    /// as used), like git's `core.deltaBaseCacheLimit`: walking trees
    /// decodes the versions of one tree one after the other, each a delta
    /// on the next.
    pub fn handle(&self) -> gix_odb::HandleArc {
        let mut handle = self.store.to_cache_arc();
        handle.refresh_never();
        handle.set_pack_cache(|| {
            Box::new(gix_pack::cache::lru::MemoryCappedHashmap::new(
                DELTA_BASE_CACHE_BYTES,
            ))
        });
        handle
    }
}

/// What [`ObjectDb::open_checked`] requires of the directory.
enum Expected<'a> {
    /// This many packs.
    Count(usize),
    /// Exactly the packs whose indices have these file names (sorted).
    Same(&'a [OsString]),
}

fn check_pack_count(what: &str, found: usize, expected: usize) -> Result<(), ObjectError> {
    if found == expected {
        return Ok(());
    }
    Err(ObjectError::Open(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{found} {what}, expected {expected}"),
    )))
}

/// For every `.idx` in `pack_dir`, by file name: its name and its first
/// object id (if any).
fn first_object_of_every_index(
    pack_dir: &Path,
) -> Result<Vec<(OsString, Option<ObjectId>)>, ObjectError> {
    let mut first_objects = Vec::new();
    for entry in std::fs::read_dir(pack_dir).map_err(ObjectError::Open)? {
        let entry = entry.map_err(ObjectError::Open)?;
        let path = entry.path();
        if path.extension().is_some_and(|extension| extension == "idx") {
            let first = first_object_of_index(&path).map_err(ObjectError::Open)?;
            first_objects.push((entry.file_name(), first));
        }
    }
    first_objects.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(first_objects)
}

/// The first object id of a version 2 pack index (`None` for an empty or
/// older index): header (8 bytes), fan-out table (256 counts of 4 bytes),
/// then the sorted ids.
fn first_object_of_index(path: &Path) -> std::io::Result<Option<ObjectId>> {
    use std::io::Read;
    const IDS_START: usize = 8 + 256 * 4;
    let mut head = [0u8; IDS_START + 20];
    let mut file = std::fs::File::open(path)?;
    if file.read_exact(&mut head).is_err() || head[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
        return Ok(None);
    }
    let count = u32::from_be_bytes([
        head[IDS_START - 4],
        head[IDS_START - 3],
        head[IDS_START - 2],
        head[IDS_START - 1],
    ]);
    let mut id = [0u8; 20];
    id.copy_from_slice(&head[IDS_START..]);
    Ok((count > 0).then_some(ObjectId::Sha1(id)))
}

/// The facts about a commit that graph walks need.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub tree: ObjectId,
    pub parents: Vec<ObjectId>,
    /// Committer time, Unix seconds.
    pub time: i64,
}

/// Where commits parsed earlier can be looked up without reading the
/// object (the repository's commit graph, see `upload_pack::reach`).
pub trait CommitSource: Send + Sync {
    fn commit_info(&self, id: &ObjectId) -> Option<CommitInfo>;
}

/// Look up objects through a handle, with parsed commits cached.
pub struct Objects {
    pub handle: gix_odb::HandleArc,
    commits: HashMap<ObjectId, Option<CommitInfo>>,
    graph: Option<std::sync::Arc<dyn CommitSource>>,
    buf: Vec<u8>,
    remap: Option<Remap>,
}

/// How many object reads [`Objects::remapping`] lets one set of mappings
/// serve. On the large benchmark repository a read touches about 1 KiB of
/// pack and index pages on average, so a set of mappings holds some tens
/// of MiB when it is dropped.
pub const READS_PER_MAPPING: u32 = 4096;

/// See [`Objects::remapping`].
struct Remap {
    db: ObjectDb,
    every: u32,
    reads: u32,
}

impl Objects {
    pub fn new(handle: gix_odb::HandleArc) -> Self {
        Objects {
            handle,
            commits: HashMap::new(),
            graph: None,
            buf: Vec::new(),
            remap: None,
        }
    }

    /// Objects of `db` read through mappings of their own, replaced by
    /// fresh ones ([`ObjectDb::remapped`]) every `every` reads, for walks
    /// that read far more of a pack than they need at any one time (the
    /// last commit of every file of a large history). Memory-mapped pack
    /// pages count towards the process's resident memory as long as the
    /// mapping lives; this bounds them at what `every` reads touch, for
    /// the price of faulting in again (from the page cache) what the next
    /// set of mappings reads. If the packs cannot be mapped again (a
    /// cache emptied under the walk), reading goes on through the mappings
    /// in use.
    pub fn remapping(db: ObjectDb, every: u32) -> Self {
        let handle = db.remapped().unwrap_or_else(|_| db.clone()).handle();
        let mut objects = Objects::new(handle);
        objects.remap = Some(Remap {
            db,
            every: every.max(1),
            reads: 0,
        });
        objects
    }

    /// Count one read of an object's data (header lookups are not
    /// counted: they touch far less), and map the packs anew when the mappings in use
    /// have served their reads.
    fn count_read(&mut self) {
        let Some(remap) = &mut self.remap else {
            return;
        };
        remap.reads += 1;
        if remap.reads < remap.every {
            return;
        }
        remap.reads = 0;
        if let Ok(fresh) = remap.db.remapped() {
            self.handle = fresh.handle();
        }
    }

    /// Commits found in `graph` are not read from the object database.
    pub fn with_graph(mut self, graph: Option<std::sync::Arc<dyn CommitSource>>) -> Self {
        self.graph = graph;
        self
    }

    /// Every commit parsed so far (by [`Self::commit`]).
    pub fn parsed_commits(&self) -> impl Iterator<Item = (&ObjectId, &CommitInfo)> {
        self.commits
            .iter()
            .filter_map(|(id, info)| info.as_ref().map(|info| (id, info)))
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
        self.count_read();
        match self.handle.try_find(id, &mut self.buf) {
            Ok(Some(data)) => Ok(Some((data.kind, data.data))),
            Ok(None) => Ok(None),
            Err(source) => Err(ObjectError::Read { id: *id, source }),
        }
    }

    /// The parsed commit, or `None` if `id` is missing or not a commit.
    pub fn commit(&mut self, id: &ObjectId) -> Result<Option<&CommitInfo>, ObjectError> {
        if !self.commits.contains_key(id) {
            if let Some(info) = self.graph.as_ref().and_then(|g| g.commit_info(id)) {
                self.commits.insert(*id, Some(info));
                return Ok(self.commits.get(id).and_then(|c| c.as_ref()));
            }
            self.count_read();
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
