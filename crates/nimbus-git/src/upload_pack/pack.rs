//! Streaming a pack for a [`PackPlan`]: stored deltas are copied as they are
//! when their base travels too (or, for thin packs, when the client has the
//! base); everything else is sent whole. Entries are produced in small
//! chunks bounded by bytes and written as they are produced, so memory does
//! not grow with the repository or with its object sizes.

use super::plan::PackPlan;
use gix_hash::ObjectId;
use gix_hashtable::HashSet;
use gix_pack::Find as _;
use gix_pack::data::output;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::PathBuf;

/// Why a pack could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("the repository has more than {max} objects to send")]
    TooManyObjects { max: u32 },
    #[error("generating the pack failed")]
    Generate(#[source] gix_error::Error),
    #[error("object {id} could not be found while generating the pack")]
    Missing { id: ObjectId },
    #[error("the pack could not be written")]
    Write(#[source] std::io::Error),
}

/// Figures about a written pack.
#[derive(Debug, Clone, Default)]
pub struct PackStats {
    pub objects: usize,
    pub copied_from_pack: usize,
    pub recompressed: usize,
    pub thin_deltas: usize,
    pub checksum: Option<ObjectId>,
    /// Streamed from the clone pack cache rather than generated.
    pub from_cache: bool,
    /// Planned from the reachability index rather than a full walk.
    pub from_index: bool,
    /// Entry sizes were read from the pack index, not found by inflating.
    pub sizes_from_pack_index: bool,
    /// The repository's only pack was sent as it is (it held exactly the
    /// objects to send).
    pub whole_pack: bool,
}

/// Stop filling a chunk of entries once it holds this many compressed bytes.
const CHUNK_BYTES: usize = 4 << 20;
/// ... or this many entries.
const CHUNK_ENTRIES: usize = 1024;

/// Find where each object lives, in parallel (this inflates each entry
/// once to learn its size).
fn locate(db: &gix_odb::HandleArc, counts: &mut [output::Count]) -> Result<(), PackError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 8);
    let per_thread = counts.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = counts
            .chunks_mut(per_thread)
            .map(|chunk| {
                let db = db.clone();
                scope.spawn(move || -> Result<(), PackError> {
                    let mut buf = Vec::new();
                    for count in chunk {
                        let location = db
                            .location_by_oid(&count.id, &mut buf)
                            .map_err(PackError::Generate)?;
                        count.entry_pack_location = output::count::PackLocation::LookedUp(location);
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    })
}

/// The index of the repository's pack, when it has exactly one.
fn only_pack_index(
    db: &gix_odb::HandleArc,
) -> Result<Option<(PathBuf, gix_pack::index::File)>, PackError> {
    let pack_dir = db.store_ref().path().join("pack");
    let Ok(listing) = std::fs::read_dir(&pack_dir) else {
        return Ok(None);
    };
    let mut indexes = listing
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "idx"));
    let (Some(index_path), None) = (indexes.next(), indexes.next()) else {
        return Ok(None);
    };
    let index = gix_pack::index::File::at(&index_path, gix_hash::Kind::Sha1).map_err(|error| {
        PackError::Generate(gix_error::ErrorExt::raise(gix_error::message!("{error}")))
    })?;
    Ok(Some((index_path, index)))
}

/// Finds ids' positions in a pack index. Ids asked for in sorted order
/// (as clone plans hold them) are found by one pass over the index, in
/// order: a binary search each touches the index all over (at the large
/// scale, 1.8 million searches were most of a cold clone's CPU time).
struct Positions<'a> {
    index: &'a gix_pack::index::File,
    /// With sorted ids: the first position not below the last id asked for.
    cursor: Option<u32>,
}

impl<'a> Positions<'a> {
    /// `sorted`: the ids will be asked for in ascending order.
    fn new(index: &'a gix_pack::index::File, sorted: bool) -> Self {
        Positions {
            index,
            cursor: sorted.then_some(0),
        }
    }

    /// The position of `id` in the index, if it is there.
    fn of(&mut self, id: &gix_hash::oid) -> Option<u32> {
        let Some(cursor) = self.cursor.as_mut() else {
            return self.index.lookup(id);
        };
        let total = self.index.num_objects();
        while *cursor < total && self.index.oid_at_index(*cursor) < id {
            *cursor += 1;
        }
        (*cursor < total && self.index.oid_at_index(*cursor) == id).then_some(*cursor)
    }
}

/// The repository's pack, opened, when it is the only one and holds exactly
/// `objects` (as a set): then that file, as it is, is the pack to send (its
/// header counts these objects, every delta's base is in it, and its
/// trailer is its checksum), which is what a clone after garbage
/// collection asks for. Every object of the pack must be one of `objects`
/// and the other way round, so a clone never gets an object its refs do not
/// reach (one left in the pack by a deleted branch, say). `None` when that
/// does not hold or the pack cannot be read; the caller then generates the
/// pack.
fn whole_pack(
    only_pack: Option<&(PathBuf, gix_pack::index::File)>,
    objects: &[ObjectId],
) -> Result<Option<(std::fs::File, ObjectId)>, PackError> {
    let Some((index_path, index)) = only_pack else {
        return Ok(None);
    };
    if u64::from(index.num_objects()) != objects.len() as u64 {
        return Ok(None);
    }
    // Every object is in the pack, and every entry of the pack is hit
    // (so duplicates in `objects` cannot hide an extra entry).
    let mut hit = vec![false; objects.len()];
    let mut positions = Positions::new(index, objects.is_sorted());
    for id in objects {
        match positions.of(id) {
            Some(at) => hit[at as usize] = true,
            None => return Ok(None),
        }
    }
    if hit.contains(&false) {
        return Ok(None);
    }
    // The pack must be the one this index describes: its trailer is the
    // checksum the index records.
    let Ok(mut file) = std::fs::File::open(index_path.with_extension("pack")) else {
        return Ok(None);
    };
    let checksum = index.pack_checksum().to_owned();
    let mut trailer = [0u8; 20];
    let trailer_matches = file
        .seek(SeekFrom::End(-20))
        .and_then(|_| file.read_exact(&mut trailer))
        .and_then(|_| file.rewind())
        .is_ok_and(|_| trailer == checksum.as_bytes());
    Ok(trailer_matches.then_some((file, checksum)))
}

/// Find where each object lives from the pack index alone, when the
/// repository is one pack and most of it is to be sent (clones): an entry
/// ends where the next one by offset starts, so nothing is inflated, where
/// [`locate`] inflates every entry (most of a clone's time once the
/// reachability index spared the walk). Returns `false`, having done
/// nothing, when it does not apply.
fn locate_from_index(
    db: &gix_odb::HandleArc,
    only_pack: Option<&(PathBuf, gix_pack::index::File)>,
    counts: &mut [output::Count],
) -> Result<bool, PackError> {
    let Some((index_path, index)) = only_pack else {
        return Ok(false);
    };
    let total = index.num_objects();
    if total == 0 || (counts.len() as u64).saturating_mul(4) < u64::from(total) {
        return Ok(false);
    }
    let pack_len = std::fs::metadata(index_path.with_extension("pack"))
        .map_err(PackError::Write)?
        .len();
    // The pack's last entry ends before its trailing checksum.
    let end = pack_len.saturating_sub(20);
    let mut offsets: Vec<u64> = (0..total).map(|i| index.pack_offset_at_index(i)).collect();
    offsets.sort_unstable();
    // The database's id for its only pack.
    let mut buf = Vec::new();
    let probe = index.oid_at_index(0).to_owned();
    let Some(probed) = db
        .location_by_oid(&probe, &mut buf)
        .map_err(PackError::Generate)?
    else {
        return Ok(false);
    };
    let mut positions = Positions::new(index, counts.is_sorted_by(|a, b| a.id <= b.id));
    for count in counts.iter_mut() {
        let Some(at) = positions.of(&count.id) else {
            continue;
        };
        let offset = index.pack_offset_at_index(at);
        let next = match offsets.binary_search(&offset) {
            Ok(position) => offsets.get(position + 1).copied().unwrap_or(end),
            Err(_) => return Ok(false),
        };
        let Ok(entry_size) = usize::try_from(next.saturating_sub(offset)) else {
            return Ok(false);
        };
        count.entry_pack_location =
            output::count::PackLocation::LookedUp(Some(gix_pack::data::entry::Location {
                pack_id: probed.pack_id,
                pack_offset: offset,
                entry_size,
            }));
    }
    Ok(true)
}

fn location(count: &output::Count) -> Option<&gix_pack::data::entry::Location> {
    count.entry_pack_location.as_ref()
}

/// Up to this many objects the client has are located one by one (for thin
/// deltas), rather than by reading the whole index of each pack a delta
/// comes from: a fetch of one commit from a 1.8 M-object pack spent most of
/// its 0.2 s there, for a few hundred objects.
const FEW_CLIENT_OBJECTS: usize = 4096;

/// Where each object the client has sits, offset to id for each pack, for
/// every pack (an empty map for packs holding none of them).
fn locate_client_objects(
    db: &gix_odb::HandleArc,
    has: &HashSet<ObjectId>,
    client_has_at: &mut HashMap<u32, HashMap<u64, ObjectId>>,
) -> Result<(), gix_error::Error> {
    let mut buf = Vec::new();
    // Each is inflated to learn its size, which is not needed here; with
    // one pack, `locate_in_only_pack` avoids that.
    for id in has {
        if let Some(location) = db.location_by_oid(id, &mut buf)? {
            client_has_at
                .entry(location.pack_id)
                .or_default()
                .insert(location.pack_offset, *id);
        }
    }
    Ok(())
}

/// [`locate_client_objects`] for a repository of one pack, whose id in the
/// database is `pack_id`: offsets straight from its index, nothing
/// inflated, so any number of them is cheap.
fn locate_in_only_pack(
    index: &gix_pack::index::File,
    pack_id: u32,
    has: &HashSet<ObjectId>,
    client_has_at: &mut HashMap<u32, HashMap<u64, ObjectId>>,
) {
    let at = client_has_at.entry(pack_id).or_default();
    for id in has {
        if let Some(position) = index.lookup(id) {
            at.insert(index.pack_offset_at_index(position), *id);
        }
    }
}

/// Produces pack entries chunk by chunk, in pack order.
struct Entries<'a> {
    db: gix_odb::HandleArc,
    counts: &'a [output::Count],
    /// For each source pack: the range of `counts` it holds.
    by_pack: Vec<(u32, Range<usize>)>,
    next: usize,
    client_has: Option<&'a HashSet<ObjectId>>,
    /// For each source pack a delta was copied from: where the objects the client has sit in
    /// it, offset to id. Found by locating each of them when they are few, else read once per
    /// pack and request, in index order, keeping only what the client has (sorting every entry
    /// of a 1.8 M-object pack by offset cost 0.1 s per fetch).
    client_has_at: HashMap<u32, HashMap<u64, ObjectId>>,
    /// Whether `client_has_at` was filled for every pack at once
    /// ([`locate_client_objects`]).
    client_has_located: bool,
    /// The index of the repository's pack, when it has only one.
    only_index: Option<gix_pack::index::File>,
    buf: Vec<u8>,
    stats: PackStats,
}

impl Entries<'_> {
    fn entry(&mut self, index: usize) -> Result<output::Entry, gix_error::Error> {
        let count = &self.counts[index];
        if let Some(loc) = location(count)
            && let Some(pack_entry) = self.db.entry_by_location(loc)
        {
            let range = self
                .by_pack
                .binary_search_by_key(&loc.pack_id, |e| e.0)
                .map(|i| self.by_pack[i].1.clone())
                .unwrap_or(index..index + 1);
            let base_offset = range.start;
            let in_pack = &self.counts[range];
            let client_has = self.client_has;
            let db = &self.db;
            let client_has_at = &mut self.client_has_at;
            let located = &mut self.client_has_located;
            let only_index = self.only_index.as_ref();
            let mut thin = 0usize;
            let thin_count = &mut thin;
            let lookup = client_has.map(|has| {
                move |pack_id: u32, offset: u64| -> gix_error::Result<Option<ObjectId>> {
                    if !*located {
                        if let Some(index) = only_index {
                            locate_in_only_pack(index, pack_id, has, client_has_at);
                            *located = true;
                        } else if has.len() <= FEW_CLIENT_OBJECTS {
                            locate_client_objects(db, has, client_has_at)?;
                            *located = true;
                        }
                    }
                    let at = match client_has_at.entry(pack_id) {
                        Entry::Occupied(entry) => entry.into_mut(),
                        // None of them is in this pack.
                        Entry::Vacant(entry) if *located => entry.insert(HashMap::new()),
                        Entry::Vacant(entry) => entry.insert(
                            db.pack_offsets_and_oid(pack_id)?
                                .unwrap_or_default()
                                .into_iter()
                                .filter(|(_, id)| has.contains(id))
                                .collect(),
                        ),
                    };
                    // Only bases the client is known to have may be left out.
                    let base = at.get(&offset).copied();
                    *thin_count += usize::from(base.is_some());
                    Ok(base)
                }
            });
            let copied = output::Entry::from_pack_entry(
                pack_entry,
                count,
                in_pack,
                base_offset,
                lookup,
                gix_pack::data::Version::V2,
            );
            self.stats.thin_deltas += thin;
            if let Some(entry) = copied {
                self.stats.copied_from_pack += 1;
                return entry;
            }
        }
        let count = &self.counts[index];
        let id = count.id;
        match gix_pack::Find::try_find(&self.db, &id, &mut self.buf)? {
            Some((data, _)) => {
                self.stats.recompressed += 1;
                output::Entry::from_data(count, &data, gix_zlib::Compression::DEFAULT)
            }
            None => Err(gix_error::ErrorExt::raise(gix_error::message!(
                "object {id} disappeared while packing"
            ))),
        }
    }
}

impl Iterator for Entries<'_> {
    type Item = Result<Vec<output::Entry>, gix_error::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.counts.len() {
            return None;
        }
        let mut chunk = Vec::new();
        let mut bytes = 0;
        while self.next < self.counts.len() && bytes < CHUNK_BYTES && chunk.len() < CHUNK_ENTRIES {
            match self.entry(self.next) {
                Ok(entry) => {
                    bytes += entry.compressed_data.len();
                    chunk.push(entry);
                }
                Err(err) => return Some(Err(err)),
            }
            self.next += 1;
        }
        Some(Ok(chunk))
    }
}

/// Write a pack holding `plan.objects` to `out`. With `thin`, deltas
/// against objects the client already has are kept as ref-deltas.
pub fn write_pack(
    handle: &gix_odb::HandleArc,
    plan: &PackPlan,
    thin: bool,
    out: impl Write,
) -> Result<PackStats, PackError> {
    let num_entries = u32::try_from(plan.objects.len())
        .map_err(|_| PackError::TooManyObjects { max: u32::MAX })?;
    // Listed and opened once for both uses below.
    let only_pack = only_pack_index(handle)?;
    if let Some((mut file, checksum)) = whole_pack(only_pack.as_ref(), &plan.objects)? {
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, out);
        std::io::copy(&mut file, &mut out).map_err(PackError::Write)?;
        out.flush().map_err(PackError::Write)?;
        return Ok(PackStats {
            objects: plan.objects.len(),
            copied_from_pack: plan.objects.len(),
            checksum: Some(checksum),
            whole_pack: true,
            ..PackStats::default()
        });
    }
    let mut db = handle.clone();
    db.prevent_pack_unload();
    let mut counts: Vec<output::Count> = plan
        .objects
        .iter()
        .map(|id| output::Count {
            id: *id,
            entry_pack_location: output::count::PackLocation::NotLookedUp,
        })
        .collect();
    let sizes_from_pack_index = locate_from_index(&db, only_pack.as_ref(), &mut counts)?;
    let only_index = only_pack.map(|(_, index)| index);
    if !sizes_from_pack_index {
        locate(&db, &mut counts)?;
    }
    // A pack's header announces its object count, so a missing object must
    // be found now: discovered mid-stream it would make the pack corrupt.
    // (Objects outside packs, which Nimbus never stores, would be
    // recompressed below.)
    for count in counts.iter().filter(|c| c.entry_pack_location.is_none()) {
        if !gix_object::Exists::exists(&db, &count.id) {
            return Err(PackError::Missing { id: count.id });
        }
    }
    // Pack order: each source pack's entries by offset, so a delta's base
    // (always at a smaller offset) is written before the delta.
    counts.sort_by(|a, b| match (location(a), location(b)) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(a), Some(b)) => a
            .pack_id
            .cmp(&b.pack_id)
            .then(a.pack_offset.cmp(&b.pack_offset)),
    });
    let mut by_pack: Vec<(u32, Range<usize>)> = Vec::new();
    for (i, count) in counts.iter().enumerate() {
        let Some(loc) = location(count) else { continue };
        match by_pack.last_mut() {
            Some((id, range)) if *id == loc.pack_id => range.end = i + 1,
            _ => by_pack.push((loc.pack_id, i..i + 1)),
        }
    }
    let mut entries = Entries {
        db,
        counts: &counts,
        by_pack,
        next: 0,
        client_has: thin.then_some(&plan.client_has),
        client_has_at: HashMap::new(),
        client_has_located: false,
        only_index,
        buf: Vec::new(),
        stats: PackStats {
            objects: plan.objects.len(),
            sizes_from_pack_index,
            ..PackStats::default()
        },
    };
    let mut writer = output::bytes::FromEntriesIter::new(
        &mut entries,
        std::io::BufWriter::with_capacity(256 * 1024, out),
        num_entries,
        gix_pack::data::Version::V2,
        gix_hash::Kind::Sha1,
    );
    for written in &mut writer {
        if let Err(err) = written {
            return Err(PackError::Generate(err));
        }
    }
    let checksum = writer.digest();
    // Flush explicitly: dropping the buffer would swallow a failure to write its last bytes.
    writer.into_write().flush().map_err(PackError::Write)?;
    let mut stats = entries.stats;
    stats.checksum = checksum;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pack index of a small repository `git` made (objects of three
    /// commits), read from a temporary directory.
    fn git_index() -> (tempfile::TempDir, PathBuf, gix_pack::index::File) {
        let dir = tempfile::tempdir().expect("tempdir");
        let git = |args: &[&str]| {
            let status = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@e", "-C"])
                .arg(dir.path())
                .args(args)
                .status()
                .expect("git runs");
            assert!(status.success(), "git {args:?}");
        };
        git(&["init", "-q"]);
        for n in 0..3 {
            std::fs::write(dir.path().join(format!("f{n}")), format!("{n}\n")).expect("write");
            git(&["add", "."]);
            git(&["commit", "-q", "-m", &format!("c{n}")]);
        }
        git(&["repack", "-adq"]);
        let packs = dir.path().join(".git/objects/pack");
        let index = std::fs::read_dir(&packs)
            .expect("pack directory")
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .find(|path| path.extension().is_some_and(|e| e == "idx"))
            .expect("an index");
        let file = gix_pack::index::File::at(&index, gix_hash::Kind::Sha1).expect("index");
        (dir, index, file)
    }

    #[test]
    fn positions_of_sorted_ids_are_the_lookups() {
        let (_dir, _, index) = git_index();
        let stored: Vec<ObjectId> = (0..index.num_objects())
            .map(|at| index.oid_at_index(at).to_owned())
            .collect();
        assert!(stored.len() >= 9 && stored.is_sorted());
        // Ids the index lacks: below, between and above its own.
        let mut absent = vec![
            ObjectId::from_bytes_or_panic(&[0; 20]),
            ObjectId::from_bytes_or_panic(&[0xff; 20]),
        ];
        for pair in stored.windows(2) {
            let mut between = pair[0];
            between.as_mut_slice()[19] ^= 1;
            if between > pair[0] && between < pair[1] {
                absent.push(between);
            }
        }
        assert!(absent.len() > 2, "some gaps between the index's ids");
        // Every other stored id, twice, and the absent ones.
        let mut ids: Vec<ObjectId> = stored.iter().step_by(2).copied().collect();
        ids.extend(stored.iter().step_by(4).copied());
        ids.extend(absent.iter().copied());
        ids.sort();
        let mut sorted = Positions::new(&index, true);
        let mut searched = Positions::new(&index, false);
        for id in &ids {
            let expected = index.lookup(id);
            assert_eq!(expected.is_some(), stored.contains(id));
            assert_eq!(sorted.of(id), expected, "{id}");
            assert_eq!(searched.of(id), expected, "{id}");
        }
    }

    #[test]
    fn the_whole_pack_is_sent_only_for_exactly_its_objects() {
        let (_dir, index_path, index) = git_index();
        let stored: Vec<ObjectId> = (0..index.num_objects())
            .map(|at| index.oid_at_index(at).to_owned())
            .collect();
        let only_pack = Some((index_path, index));
        let sends_whole = |ids: &[ObjectId]| {
            whole_pack(only_pack.as_ref(), ids)
                .expect("no error")
                .is_some()
        };
        let mut reversed = stored.clone();
        reversed.reverse();
        assert!(sends_whole(&stored), "sorted");
        assert!(sends_whole(&reversed), "in another order");
        let mut fewer = stored.clone();
        fewer.pop();
        assert!(!sends_whole(&fewer));
        // As many ids, one of them twice: an entry of the pack is missed.
        let mut repeated = stored.clone();
        repeated[1] = repeated[0];
        assert!(!sends_whole(&repeated));
        let mut other = stored.clone();
        other[0] = ObjectId::from_bytes_or_panic(&[0; 20]);
        assert!(!sends_whole(&other));
    }
}
