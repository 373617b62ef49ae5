//! The reachability index: for each repository, every object a full clone
//! of some set of commits (its *tips*) gets, so the next clone does not
//! walk every commit and tree again.
//!
//! A clone of wants `W` is planned from the index of tips `S` as the
//! index's objects plus a walk of `W --not S`, which only visits commits
//! made since the index was written and the trees of their parents. It is
//! used only when every tip of `S` is still reached from `W` (each is a
//! want, or the parent of a commit the walk sends); a branch deleted or
//! rewound since falls back to the full walk, so a clone never gets
//! objects the refs no longer reach.
//!
//! The index is kept on local disk (`reach/` in the data directory), one
//! file per repository, written by garbage collection (a full walk) and by
//! every full clone whose wants differ from the index's tips (the index
//! plus a walk of what was pushed since), so it follows the refs as clones
//! come. Garbage collection
//! may delete objects, so an index is valid only for the pack generation
//! it was written at. A file is replaced by atomic rename and carries a
//! checksum; one that does not match is ignored (and rewritten by the
//! next clone), never trusted.

use super::plan::{self, PackPlan, PlanError, ShallowPlan};
use super::request::FetchRequest;
use crate::objects::{CommitInfo, CommitSource, Objects};
use gix_hash::ObjectId;
use gix_hashtable::HashSet;
use nimbus_types::Ref;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Version 2: objects sorted by id (version 1 files, in walk order, are
/// ignored and rewritten by the next clone).
const MAGIC: &[u8] = b"NIMBUS REACH 2\n";
const ID_LEN: usize = 20;
const CHECKSUM_LEN: usize = 32;

/// The objects reachable from some tips, at one pack generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachSnapshot {
    pub generation: i64,
    /// Sorted, without duplicates.
    pub tips: Vec<ObjectId>,
    /// Every object a full clone of `tips` gets, sorted, without
    /// duplicates (so a clone of an unchanged, fully packed repository is
    /// matched against its pack index in one pass).
    pub objects: Vec<ObjectId>,
}

/// Why an index file could not be read as one; the caller ignores it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReachFileError {
    #[error("the reachability index is not in Nimbus's format")]
    NotAnIndex,
    #[error("the reachability index is truncated or has trailing bytes")]
    WrongLength,
    #[error("the reachability index does not match its checksum")]
    Checksum,
    #[error("the reachability index's ids are not sorted")]
    Unsorted,
    #[error("the reachability index is for pack generation {found}")]
    OtherGeneration { found: i64 },
    #[error("the reachability index could not be read: {message}")]
    Read { message: String },
}

impl From<io::Error> for ReachFileError {
    fn from(error: io::Error) -> Self {
        match error.kind() {
            // Shorter than its counts say (the length is checked first,
            // so the file changed while it was read).
            io::ErrorKind::UnexpectedEof => ReachFileError::WrongLength,
            _ => ReachFileError::Read {
                message: error.to_string(),
            },
        }
    }
}

/// Reads exactly `buf.len()` bytes and adds them to `hasher`.
fn read_hashed(reader: &mut impl io::Read, hasher: &mut Sha256, buf: &mut [u8]) -> io::Result<()> {
    reader.read_exact(buf)?;
    hasher.update(&*buf);
    Ok(())
}

/// Both files' framing: `magic`, then what `body` writes, then a SHA-256
/// of all that.
fn sealed(magic: &[u8], capacity: usize, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(magic.len() + capacity + CHECKSUM_LEN);
    out.extend_from_slice(magic);
    body(&mut out);
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    out
}

/// Whether a file of [`sealed`]'s framing ends with the checksum of the rest.
fn checksum_matches(bytes: &[u8]) -> bool {
    bytes.len() >= CHECKSUM_LEN && {
        let (content, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        Sha256::digest(content)[..] == *checksum
    }
}

impl ReachSnapshot {
    /// The file's bytes: magic, generation, counts, tips, objects, then a
    /// SHA-256 of all that.
    pub fn encode(&self) -> Vec<u8> {
        let ids = self.tips.len() + self.objects.len();
        sealed(MAGIC, 24 + ids * ID_LEN, |out| {
            out.extend_from_slice(&self.generation.to_le_bytes());
            out.extend_from_slice(&(self.tips.len() as u64).to_le_bytes());
            out.extend_from_slice(&(self.objects.len() as u64).to_le_bytes());
            for id in self.tips.iter().chain(&self.objects) {
                out.extend_from_slice(id.as_bytes());
            }
        })
    }

    /// Read what [`encode`](Self::encode) wrote; any other bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<ReachSnapshot, ReachFileError> {
        Self::read(bytes, bytes.len() as u64, None)
    }

    /// Read what [`encode`](Self::encode) wrote from `reader`, which holds
    /// `len` bytes, without holding the file in memory besides the ids.
    /// With `generation`, an index of another one is refused after its
    /// header is read.
    pub fn read(
        reader: impl io::Read,
        len: u64,
        generation: Option<i64>,
    ) -> Result<ReachSnapshot, ReachFileError> {
        let mut reader = io::BufReader::with_capacity(256 * 1024, reader);
        let mut hasher = Sha256::new();
        let mut magic = [0u8; MAGIC.len()];
        if len < MAGIC.len() as u64 {
            return Err(ReachFileError::NotAnIndex);
        }
        read_hashed(&mut reader, &mut hasher, &mut magic)?;
        if magic != MAGIC {
            return Err(ReachFileError::NotAnIndex);
        }
        if len < (MAGIC.len() + 24 + CHECKSUM_LEN) as u64 {
            return Err(ReachFileError::WrongLength);
        }
        let mut header = [0u8; 24];
        read_hashed(&mut reader, &mut hasher, &mut header)?;
        let word = |at: usize| {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(&header[at..at + 8]);
            buf
        };
        let found = i64::from_le_bytes(word(0));
        let tips = u64::from_le_bytes(word(8));
        let objects = u64::from_le_bytes(word(16));
        let expected_len = tips
            .checked_add(objects)
            .and_then(|n| n.checked_mul(ID_LEN as u64))
            .and_then(|n| n.checked_add((MAGIC.len() + 24 + CHECKSUM_LEN) as u64))
            .ok_or(ReachFileError::WrongLength)?;
        if expected_len != len {
            return Err(ReachFileError::WrongLength);
        }
        if generation.is_some_and(|wanted| wanted != found) {
            return Err(ReachFileError::OtherGeneration { found });
        }
        // The length matched the counts, so these fit in memory as the
        // file does.
        let mut read_ids = |count: u64| -> Result<Vec<ObjectId>, ReachFileError> {
            let count = usize::try_from(count).map_err(|_| ReachFileError::WrongLength)?;
            let mut ids = Vec::with_capacity(count);
            let mut chunk = vec![0u8; 4096 * ID_LEN];
            while ids.len() < count {
                let n = (count - ids.len()).min(4096);
                let bytes = &mut chunk[..n * ID_LEN];
                read_hashed(&mut reader, &mut hasher, bytes)?;
                // Chunks of exactly 20 bytes: `from_bytes_or_panic` cannot panic.
                ids.extend(
                    bytes
                        .chunks_exact(ID_LEN)
                        .map(ObjectId::from_bytes_or_panic),
                );
            }
            Ok(ids)
        };
        let tips = read_ids(tips)?;
        let objects = read_ids(objects)?;
        let mut checksum = [0u8; CHECKSUM_LEN];
        io::Read::read_exact(&mut reader, &mut checksum)?;
        if hasher.finalize()[..] != checksum {
            return Err(ReachFileError::Checksum);
        }
        if !strictly_sorted(&tips) || !strictly_sorted(&objects) {
            return Err(ReachFileError::Unsorted);
        }
        Ok(ReachSnapshot {
            generation: found,
            tips,
            objects,
        })
    }
}

const GRAPH_MAGIC: &[u8] = b"NIMBUS GRAPH 1\n";
/// id, tree, time, parent count, two parents.
const RECORD_LEN: usize = ID_LEN * 2 + 8 + 1 + ID_LEN * 2;

/// A repository's commits, parsed once, for walks that would otherwise
/// inflate every commit they pass (negotiation, the commits of a pack):
/// fixed-size records sorted by id, found by binary search. Commits with
/// more than two parents are left out (read from the objects instead), as
/// are commits newer than the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitGraph {
    pub generation: i64,
    records: Vec<u8>,
}

impl CommitGraph {
    pub fn build<'a>(
        generation: i64,
        commits: impl IntoIterator<Item = (&'a ObjectId, &'a CommitInfo)>,
    ) -> CommitGraph {
        let mut sorted: Vec<(&ObjectId, &CommitInfo)> = commits
            .into_iter()
            .filter(|(_, info)| info.parents.len() <= 2)
            .collect();
        sorted.sort_unstable_by_key(|(id, _)| **id);
        sorted.dedup_by_key(|(id, _)| **id);
        let mut records = Vec::with_capacity(sorted.len() * RECORD_LEN);
        for (id, info) in sorted {
            records.extend_from_slice(id.as_bytes());
            records.extend_from_slice(info.tree.as_bytes());
            records.extend_from_slice(&info.time.to_le_bytes());
            records.push(info.parents.len() as u8);
            for slot in 0..2 {
                match info.parents.get(slot) {
                    Some(parent) => records.extend_from_slice(parent.as_bytes()),
                    None => records.extend_from_slice(&[0; ID_LEN]),
                }
            }
        }
        CommitGraph {
            generation,
            records,
        }
    }

    pub fn len(&self) -> usize {
        self.records.len() / RECORD_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn record(&self, index: usize) -> &[u8] {
        &self.records[index * RECORD_LEN..(index + 1) * RECORD_LEN]
    }

    pub fn encode(&self) -> Vec<u8> {
        sealed(GRAPH_MAGIC, 8 + self.records.len(), |out| {
            out.extend_from_slice(&self.generation.to_le_bytes());
            out.extend_from_slice(&self.records);
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<CommitGraph, ReachFileError> {
        let rest = bytes
            .strip_prefix(GRAPH_MAGIC)
            .ok_or(ReachFileError::NotAnIndex)?;
        if rest.len() < 8 + CHECKSUM_LEN
            || !(rest.len() - 8 - CHECKSUM_LEN).is_multiple_of(RECORD_LEN)
        {
            return Err(ReachFileError::WrongLength);
        }
        if !checksum_matches(bytes) {
            return Err(ReachFileError::Checksum);
        }
        let mut generation = [0u8; 8];
        generation.copy_from_slice(&rest[..8]);
        let graph = CommitGraph {
            generation: i64::from_le_bytes(generation),
            records: rest[8..rest.len() - CHECKSUM_LEN].to_vec(),
        };
        let sorted =
            (1..graph.len()).all(|i| graph.record(i - 1)[..ID_LEN] < graph.record(i)[..ID_LEN]);
        if !sorted {
            return Err(ReachFileError::NotAnIndex);
        }
        Ok(graph)
    }
}

impl CommitSource for CommitGraph {
    fn commit_info(&self, id: &ObjectId) -> Option<CommitInfo> {
        let wanted = id.as_bytes();
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let middle = (low + high) / 2;
            let record = self.record(middle);
            match record[..ID_LEN].cmp(wanted) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => {
                    let id_at = |at: usize| ObjectId::from_bytes_or_panic(&record[at..at + ID_LEN]);
                    let mut time = [0u8; 8];
                    time.copy_from_slice(&record[2 * ID_LEN..2 * ID_LEN + 8]);
                    let count = usize::from(record[2 * ID_LEN + 8]).min(2);
                    let parents_at = 2 * ID_LEN + 9;
                    return Some(CommitInfo {
                        tree: id_at(ID_LEN),
                        parents: (0..count)
                            .map(|slot| id_at(parents_at + slot * ID_LEN))
                            .collect(),
                        time: i64::from_le_bytes(time),
                    });
                }
            }
        }
        None
    }
}

/// The index files of every repository, in one directory.
#[derive(Debug)]
pub struct ReachIndex {
    dir: PathBuf,
    /// Commit graphs read from disk, by repository: kept while the file's
    /// modification time is unchanged.
    graphs: Mutex<HashMap<i64, (SystemTime, Arc<CommitGraph>)>>,
}

impl ReachIndex {
    pub fn new(dir: PathBuf) -> io::Result<ReachIndex> {
        std::fs::create_dir_all(&dir)?;
        Ok(ReachIndex {
            dir,
            graphs: Mutex::new(HashMap::new()),
        })
    }

    fn path(&self, repo_id: i64) -> PathBuf {
        self.dir.join(format!("{repo_id}.reach"))
    }

    fn graph_path(&self, repo_id: i64) -> PathBuf {
        self.dir.join(format!("{repo_id}.graph"))
    }

    /// The repository's commit graph for `generation`, if there is one.
    pub fn graph(&self, repo_id: i64, generation: i64) -> Option<Arc<CommitGraph>> {
        let path = self.graph_path(repo_id);
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
        let mut graphs = self.graphs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, graph)) = graphs.get(&repo_id)
            && *seen == modified
        {
            return (graph.generation == generation).then(|| graph.clone());
        }
        let graph = match std::fs::read(&path).map(|bytes| CommitGraph::decode(&bytes)) {
            Ok(Ok(graph)) => Arc::new(graph),
            Ok(Err(error)) => {
                tracing::warn!(repo_id, error = %error, "ignoring the commit graph");
                return None;
            }
            Err(_) => return None,
        };
        graphs.insert(repo_id, (modified, graph.clone()));
        (graph.generation == generation).then_some(graph)
    }

    /// Replace the repository's commit graph (atomically).
    pub fn store_graph(&self, repo_id: i64, graph: &CommitGraph) -> io::Result<()> {
        self.write_atomically(self.graph_path(repo_id), &graph.encode())
    }

    fn write_atomically(&self, path: PathBuf, bytes: &[u8]) -> io::Result<()> {
        let mut file = tempfile::Builder::new()
            .prefix(".reach-")
            .tempfile_in(&self.dir)?;
        file.write_all(bytes)?;
        file.as_file().sync_data()?;
        file.persist(path).map(drop).map_err(|error| error.error)
    }

    /// The repository's index if there is a valid one for `generation`.
    /// A damaged file is logged and ignored.
    pub fn load(&self, repo_id: i64, generation: i64) -> Option<ReachSnapshot> {
        let opened = std::fs::File::open(self.path(repo_id))
            .and_then(|file| file.metadata().map(|meta| (file, meta.len())));
        let (file, len) = match opened {
            Ok(opened) => opened,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!(repo_id, error = %error, "cannot read the reachability index");
                return None;
            }
        };
        match ReachSnapshot::read(file, len, Some(generation)) {
            Ok(snapshot) => Some(snapshot),
            Err(ReachFileError::OtherGeneration { .. }) => None,
            Err(error) => {
                tracing::warn!(repo_id, error = %error, "ignoring the reachability index");
                None
            }
        }
    }

    /// Replace the repository's index by `snapshot` (atomically).
    pub fn store(&self, repo_id: i64, snapshot: &ReachSnapshot) -> io::Result<()> {
        self.write_atomically(self.path(repo_id), &snapshot.encode())
    }

    /// Forget the repository's index and commit graph (it was deleted).
    pub fn remove(&self, repo_id: i64) {
        let _ = std::fs::remove_file(self.path(repo_id));
        let _ = std::fs::remove_file(self.graph_path(repo_id));
        self.graphs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&repo_id);
    }
}

/// Whether a request is a full clone, the only kind the index answers:
/// nothing in common, no shallow boundaries, no filter.
pub fn eligible(request: &FetchRequest, common: &[ObjectId], shallow: &ShallowPlan) -> bool {
    let deepen = &request.deepen;
    common.is_empty()
        && request.filter.is_none()
        && request.client_shallows.is_empty()
        && deepen.depth.is_none()
        && deepen.since.is_none()
        && deepen.not.is_empty()
        && !deepen.relative
        && shallow.boundary.is_empty()
        && shallow.extra_wants.is_empty()
        && shallow.unshallow.is_empty()
}

/// A clone's plan and the index entry it makes.
#[derive(Debug)]
pub struct ClonePlan {
    /// Its objects sorted by id, without duplicates (as the index keeps
    /// them).
    pub plan: PackPlan,
    /// The wanted commits (sorted, without duplicates): the index's tips.
    pub tips: Vec<ObjectId>,
    /// Whether the plan started from the index rather than a full walk.
    pub from_index: bool,
    /// Whether the index given had these tips already (it need not be
    /// written again).
    pub index_current: bool,
}

/// Plan a full clone (see [`eligible`]), from `index` when it applies.
/// The index's object list becomes the plan's (it is not copied: at the
/// large scale it is 36 MB).
pub fn plan_clone(
    objects: &mut Objects,
    request: &FetchRequest,
    shallow: &ShallowPlan,
    refs: &[Ref],
    index: Option<ReachSnapshot>,
) -> Result<ClonePlan, PlanError> {
    let index_tips = index.as_ref().map(|index| index.tips.clone());
    let from_index = match index {
        Some(index) => plan_from_index(objects, request, shallow, refs, index)?,
        None => None,
    };
    let mut clone = match from_index {
        Some(clone) => clone,
        None => {
            let mut planned = plan::plan_pack_detailed(objects, request, &[], shallow, refs)?;
            planned.plan.objects = sorted(std::mem::take(&mut planned.plan.objects));
            ClonePlan {
                tips: sorted(planned.want_commits),
                plan: planned.plan,
                from_index: false,
                index_current: false,
            }
        }
    };
    clone.index_current = index_tips.is_some_and(|tips| tips == clone.tips);
    Ok(clone)
}

fn sorted(mut ids: Vec<ObjectId>) -> Vec<ObjectId> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn strictly_sorted(ids: &[ObjectId]) -> bool {
    ids.windows(2).all(|pair| pair[0] < pair[1])
}

/// Merge `new` (in any order; none of them in `all`) into `all` (sorted,
/// without duplicates), keeping it so, in one pass from the end: no second
/// copy of `all`, which is the whole repository's object list.
fn merge_sorted(all: &mut Vec<ObjectId>, mut new: Vec<ObjectId>) {
    new.sort_unstable();
    new.dedup();
    let mut kept = all.len();
    let mut added = new.len();
    all.extend_from_slice(&new);
    let mut at = all.len();
    while added > 0 {
        at -= 1;
        if kept > 0 && all[kept - 1] > new[added - 1] {
            kept -= 1;
            all[at] = all[kept];
        } else {
            added -= 1;
            all[at] = new[added];
        }
    }
}

/// The clone as the index's objects plus a walk of `wants --not tips`, or
/// `None` if the index does not apply.
fn plan_from_index(
    objects: &mut Objects,
    request: &FetchRequest,
    shallow: &ShallowPlan,
    refs: &[Ref],
    index: ReachSnapshot,
) -> Result<Option<ClonePlan>, PlanError> {
    // include-tag adds tags pointing into the pack; the walk below only
    // sees new commits, so every tag must be wanted outright.
    if request.include_tag
        && refs
            .iter()
            .any(|r| r.peeled.is_some() && !request.wants.contains(&r.target))
    {
        return Ok(None);
    }
    let planned = plan::plan_pack_detailed(objects, request, &index.tips, shallow, refs)?;
    if planned.wants_non_commits {
        return Ok(None);
    }
    let reached: HashSet<ObjectId> = planned
        .want_commits
        .iter()
        .chain(&planned.edges)
        .copied()
        .collect();
    if !index.tips.iter().all(|tip| reached.contains(tip)) {
        return Ok(None);
    }
    let new: HashSet<ObjectId> = planned.plan.objects.iter().copied().collect();
    let mut all = index.objects;
    if !new.is_empty() {
        all.retain(|id| !new.contains(id));
        merge_sorted(&mut all, planned.plan.objects);
    }
    Ok(Some(ClonePlan {
        plan: PackPlan {
            objects: all,
            // The client has nothing: no delta may be thin.
            client_has: HashSet::default(),
            commit_count: planned.plan.commit_count,
        },
        tips: sorted(planned.want_commits),
        from_index: true,
        index_current: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(byte: u8) -> ObjectId {
        ObjectId::from_bytes_or_panic(&[byte; 20])
    }

    fn snapshot() -> ReachSnapshot {
        ReachSnapshot {
            generation: 7,
            tips: vec![id(1), id(2)],
            objects: vec![id(1), id(2), id(3), id(4)],
        }
    }

    #[test]
    fn files_round_trip_and_damage_is_refused() {
        let encoded = snapshot().encode();
        assert_eq!(ReachSnapshot::decode(&encoded), Ok(snapshot()));

        assert_eq!(
            ReachSnapshot::decode(b"something else"),
            Err(ReachFileError::NotAnIndex)
        );
        for cut in [MAGIC.len(), MAGIC.len() + 30, encoded.len() - 1] {
            assert_eq!(
                ReachSnapshot::decode(&encoded[..cut]),
                Err(ReachFileError::WrongLength),
                "cut at {cut}"
            );
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert_eq!(
            ReachSnapshot::decode(&longer),
            Err(ReachFileError::WrongLength)
        );
        let mut flipped = encoded.clone();
        let at = MAGIC.len() + 24 + 5;
        flipped[at] ^= 1;
        assert_eq!(
            ReachSnapshot::decode(&flipped),
            Err(ReachFileError::Checksum)
        );
        // Counts that overflow are a wrong length, not a panic.
        let mut huge = encoded;
        huge[MAGIC.len() + 8..MAGIC.len() + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            ReachSnapshot::decode(&huge),
            Err(ReachFileError::WrongLength)
        );
    }

    #[test]
    fn files_with_unsorted_ids_or_of_version_1_are_refused() {
        let mut unsorted = snapshot();
        unsorted.objects.swap(1, 2);
        assert_eq!(
            ReachSnapshot::decode(&unsorted.encode()),
            Err(ReachFileError::Unsorted)
        );
        let mut repeated = snapshot();
        repeated.objects[1] = repeated.objects[0];
        assert_eq!(
            ReachSnapshot::decode(&repeated.encode()),
            Err(ReachFileError::Unsorted)
        );
        let mut tips = snapshot();
        tips.tips.reverse();
        assert_eq!(
            ReachSnapshot::decode(&tips.encode()),
            Err(ReachFileError::Unsorted)
        );
        // A version 1 file (objects in walk order), sealed as it was.
        let v1 = sealed(b"NIMBUS REACH 1\n", 0, |out| {
            out.extend_from_slice(&snapshot().encode()[MAGIC.len()..]);
        });
        assert_eq!(ReachSnapshot::decode(&v1), Err(ReachFileError::NotAnIndex));
    }

    #[test]
    fn new_objects_are_merged_into_the_sorted_list() {
        let ids = |bytes: &[u8]| bytes.iter().map(|b| id(*b)).collect::<Vec<_>>();
        for (all, new, expected) in [
            (
                &[2, 4, 6][..],
                &[5, 1, 7, 3][..],
                &[1, 2, 3, 4, 5, 6, 7][..],
            ),
            (&[2, 4, 6], &[], &[2, 4, 6]),
            (&[], &[3, 1, 3, 2], &[1, 2, 3]),
            (&[1, 2], &[9, 8], &[1, 2, 8, 9]),
            (&[8, 9], &[2, 1], &[1, 2, 8, 9]),
        ] {
            let mut merged = ids(all);
            merge_sorted(&mut merged, ids(new));
            assert_eq!(merged, ids(expected), "{all:?} + {new:?}");
        }
    }

    #[test]
    fn commit_graphs_answer_like_the_commits_and_refuse_damage() {
        let info = |tree: u8, parents: &[u8], time: i64| CommitInfo {
            tree: id(tree),
            parents: parents.iter().map(|p| id(*p)).collect(),
            time,
        };
        let commits = [
            (id(9), info(90, &[8, 7], 1_700_000_009)),
            (id(8), info(80, &[], -5)),
            (id(7), info(70, &[8], 1_700_000_007)),
            (id(6), info(60, &[9, 8, 7], 1)),
        ];
        let graph = CommitGraph::build(3, commits.iter().map(|(id, info)| (id, info)));
        assert_eq!(graph.len(), 3, "octopus merges are left out");
        for (commit, expected) in &commits[..3] {
            let found = graph.commit_info(commit).expect("in the graph");
            assert_eq!(
                (found.tree, &found.parents, found.time),
                (expected.tree, &expected.parents, expected.time)
            );
        }
        assert!(graph.commit_info(&id(6)).is_none());
        assert!(graph.commit_info(&id(1)).is_none());

        let encoded = graph.encode();
        assert_eq!(CommitGraph::decode(&encoded), Ok(graph.clone()));
        assert_eq!(
            CommitGraph::decode(&encoded[..encoded.len() - 1]),
            Err(ReachFileError::WrongLength)
        );
        let mut flipped = encoded.clone();
        flipped[GRAPH_MAGIC.len() + 8 + 3] ^= 1;
        assert_eq!(CommitGraph::decode(&flipped), Err(ReachFileError::Checksum));

        let dir = tempfile::tempdir().expect("tempdir");
        let index = ReachIndex::new(dir.path().to_owned()).expect("index");
        assert!(index.graph(1, 3).is_none());
        index.store_graph(1, &graph).expect("store");
        assert_eq!(index.graph(1, 3).as_deref(), Some(&graph));
        assert!(index.graph(1, 4).is_none(), "another generation");
        index.remove(1);
        assert!(index.graph(1, 3).is_none());
    }

    #[test]
    fn the_index_is_per_repository_and_generation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = ReachIndex::new(dir.path().join("reach")).expect("create");
        assert_eq!(index.load(1, 7), None);
        index.store(1, &snapshot()).expect("store");
        assert_eq!(index.load(1, 7), Some(snapshot()));
        assert_eq!(index.load(1, 8), None, "another generation");
        assert_eq!(index.load(2, 7), None, "another repository");
        std::fs::write(dir.path().join("reach/1.reach"), b"NIMBUS REACH 1\ngarbage")
            .expect("damage");
        assert_eq!(index.load(1, 7), None, "a damaged file is ignored");
        index.store(1, &snapshot()).expect("store again");
        index.remove(1);
        assert_eq!(index.load(1, 7), None);
    }
}
