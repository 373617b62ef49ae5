//! Indexing a received pack, as `git index-pack --strict --fix-thin` does,
//! in memory that grows by about 60 bytes per object whatever the objects
//! and the pack weigh.
//!
//! 1. **Receive.** The pack streams to a staging file while its SHA-1 is
//!    computed. Each entry's header is parsed and its zlib stream inflated
//!    once, to find where it ends. Whole objects are hashed and checked
//!    (fsck-style) right there; deltas only record their base.
//! 2. **Resolve.** Each whole object with deltas on it is the root of a
//!    family, resolved depth first by a pool of threads reading the staging
//!    file with `pread`: a delta's result is hashed and checked, then its
//!    own deltas are applied to it. The pack is never memory-mapped, so the
//!    process's resident memory does not grow with the pack.
//! 3. **Complete.** Deltas whose base is not in the pack (a thin pack) get
//!    the base from the repository, appended to the pack as a whole object;
//!    the pack's header and trailer are rewritten.
//! 4. **Connect.** Every object id a checked object refers to was recorded
//!    once (a set, not a list: trees repeat their entries in every
//!    version); each must be in the pack or in the repository.
//! 5. **Index.** The index (version 2) is written from the tables.

use super::ingest::{IngestError, IngestLimits, check_object_with};
use crate::objects::ObjectDb;
use gix_hash::ObjectId;
use gix_pack::data::entry::Header;
use std::fs::File;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The most bytes of decoded objects the resolving threads keep, together,
/// for the deltas still to apply to them; beyond it the oldest are dropped
/// and decoded again from the pack when needed. (An object being resolved
/// is always kept, whatever its size.)
const HELD_BYTES: usize = 64 << 20;

/// The most threads resolving deltas.
const MAX_THREADS: usize = 8;

/// Shards of the set of referenced ids (threads rarely wait on each other).
const REFERENCE_SHARDS: usize = 64;

/// A pack written to the staging directory with its index.
pub(crate) struct Indexed {
    /// `pack-<checksum>`.
    pub name: String,
    pub pack_path: PathBuf,
    pub index_path: PathBuf,
    pub object_count: u64,
    pub pack_size: u64,
    pub index_size: u64,
}

fn invalid_pack(message: impl Into<String>) -> IngestError {
    IngestError::InvalidPack {
        message: message.into(),
    }
}

fn read_error(err: io::Error) -> IngestError {
    match err.kind() {
        io::ErrorKind::UnexpectedEof => invalid_pack("the pack is truncated"),
        _ => invalid_pack(err.to_string()),
    }
}

/// The git type numbers of pack entries.
mod kind {
    pub const COMMIT: u8 = 1;
    pub const TREE: u8 = 2;
    pub const BLOB: u8 = 3;
    pub const TAG: u8 = 4;
    pub const OFS_DELTA: u8 = 6;
    pub const REF_DELTA: u8 = 7;
}

fn object_kind(type_id: u8) -> Option<gix_object::Kind> {
    match type_id {
        kind::COMMIT => Some(gix_object::Kind::Commit),
        kind::TREE => Some(gix_object::Kind::Tree),
        kind::BLOB => Some(gix_object::Kind::Blob),
        kind::TAG => Some(gix_object::Kind::Tag),
        _ => None,
    }
}

fn type_id(kind: gix_object::Kind) -> u8 {
    match kind {
        gix_object::Kind::Commit => kind::COMMIT,
        gix_object::Kind::Tree => kind::TREE,
        gix_object::Kind::Blob => kind::BLOB,
        gix_object::Kind::Tag => kind::TAG,
    }
}

fn raw(id: &ObjectId) -> [u8; 20] {
    let mut out = [0u8; 20];
    out.copy_from_slice(id.as_slice());
    out
}

fn object_id(raw: &[u8; 20]) -> ObjectId {
    ObjectId::Sha1(*raw)
}

/// A [`BufRead`] that copies what is consumed to the staging file, hashing
/// it for the pack's trailer and for the current entry's CRC-32.
struct Tee<R> {
    inner: R,
    file: BufWriter<File>,
    /// `None` once the trailer is reached.
    pack_hash: Option<gix_hash::Hasher>,
    crc: crc32fast::Hasher,
    position: u64,
    /// A failed write, reported by the next read.
    error: Option<io::Error>,
}

impl<R: BufRead> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Tee<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if let Some(err) = self.error.take() {
            return Err(err);
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        if amount == 0 {
            return;
        }
        // The caller filled the buffer first: this reads nothing.
        match self.inner.fill_buf() {
            Ok(buffer) => {
                let bytes = &buffer[..amount.min(buffer.len())];
                if let Some(hash) = &mut self.pack_hash {
                    hash.update(bytes);
                }
                self.crc.update(bytes);
                if self.error.is_none()
                    && let Err(err) = self.file.write_all(bytes)
                {
                    self.error = Some(err);
                }
            }
            Err(err) => self.error = Some(err),
        }
        self.inner.consume(amount);
        self.position += amount as u64;
    }
}

/// Inflate one zlib stream from `input` into `out` (resized to `size`),
/// or, without `out`, only check that it inflates to `size` bytes. Reads
/// exactly the stream's bytes.
fn inflate(
    input: &mut impl BufRead,
    state: &mut gix_zlib::Decompress,
    size: usize,
    out: Option<&mut Vec<u8>>,
) -> Result<(), IngestError> {
    // The output grows with what is actually inflated, so a header
    // announcing a huge object costs nothing until its data comes.
    const FIRST_OUTPUT: usize = 64 * 1024;
    let mut scratch = [0u8; 8 * 1024];
    let mut out = out;
    if let Some(out) = out.as_deref_mut() {
        out.clear();
        out.resize(size.min(FIRST_OUTPUT), 0);
    }
    state.reset();
    let mut produced = 0usize;
    loop {
        let input_bytes = input.fill_buf().map_err(read_error)?;
        if input_bytes.is_empty() {
            return Err(invalid_pack("the pack is truncated"));
        }
        let target: &mut [u8] = match out.as_deref_mut() {
            Some(out) if produced < size => {
                if produced == out.len() {
                    out.resize(size.min(out.len().saturating_mul(2)), 0);
                }
                &mut out[produced..]
            }
            _ => &mut scratch,
        };
        let (before_in, before_out) = (state.total_in(), state.total_out());
        let status = state
            .decompress(input_bytes, target, gix_zlib::FlushDecompress::None)
            .map_err(|err| invalid_pack(format!("corrupt deflate stream: {err}")))?;
        let consumed = (state.total_in() - before_in) as usize;
        let written = (state.total_out() - before_out) as usize;
        input.consume(consumed);
        // Past the end of `out`, or counting only: anything beyond `size`
        // is an error.
        produced = produced.saturating_add(written);
        if produced > size {
            return Err(invalid_pack(
                "an entry inflates to more bytes than its header says",
            ));
        }
        match status {
            gix_zlib::Status::StreamEnd => {
                return if produced == size {
                    Ok(())
                } else {
                    Err(invalid_pack(
                        "an entry inflates to fewer bytes than its header says",
                    ))
                };
            }
            _ if consumed == 0 && written == 0 => {
                return Err(invalid_pack("corrupt deflate stream: no progress"));
            }
            _ => {}
        }
    }
}

/// The size a delta's header records (of its base or of its result).
fn delta_size(data: &[u8], at: &mut usize) -> Result<u64, IngestError> {
    let mut size = 0u64;
    let mut shift = 0u32;
    loop {
        let byte = *data
            .get(*at)
            .ok_or_else(|| invalid_pack("a delta's header is truncated"))?;
        *at += 1;
        if shift > 63 {
            return Err(invalid_pack("a delta's header is too long"));
        }
        size |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(size);
        }
    }
}

/// One operand of a delta's copy command: `bytes` little-endian bytes,
/// each present if its bit in `present` is set (else zero).
fn copy_operand(
    present: u8,
    bytes: u8,
    delta: &[u8],
    at: &mut usize,
) -> Result<usize, IngestError> {
    let mut value = 0usize;
    for byte in 0..bytes {
        if present & (1 << byte) != 0 {
            let read = *delta
                .get(*at)
                .ok_or_else(|| invalid_pack("corrupt delta: a copy is truncated"))?;
            *at += 1;
            value |= usize::from(read) << (8 * byte);
        }
    }
    Ok(value)
}

/// Apply `delta` to `base`, refusing a result over `max_size` bytes.
fn apply_delta(base: &[u8], delta: &[u8], max_size: usize) -> Result<Vec<u8>, IngestError> {
    let corrupt = |what: &str| invalid_pack(format!("corrupt delta: {what}"));
    let mut at = 0;
    let base_size = delta_size(delta, &mut at)?;
    if base_size != base.len() as u64 {
        return Err(corrupt("its base has another size"));
    }
    let result_size = delta_size(delta, &mut at)?;
    let result_size = usize::try_from(result_size)
        .ok()
        .filter(|size| *size <= max_size)
        .ok_or_else(|| {
            invalid_pack(format!(
                "an object is larger than the limit of {max_size} bytes"
            ))
        })?;
    // Reserved up to a point: the header's size is only a claim.
    let mut out = Vec::with_capacity(result_size.min(16 << 20));
    while let Some(&command) = delta.get(at) {
        at += 1;
        if command & 0x80 != 0 {
            // Bits 0-3 say which bytes of the offset follow, bits 4-6 those
            // of the size (little-endian, absent bytes are zero).
            let offset = copy_operand(command, 4, delta, &mut at)?;
            let mut size = copy_operand(command >> 4, 3, delta, &mut at)?;
            if size == 0 {
                size = 0x10000;
            }
            let copied = offset
                .checked_add(size)
                .and_then(|end| base.get(offset..end))
                .ok_or_else(|| corrupt("a copy reaches past its base"))?;
            if out.len() + copied.len() > result_size {
                return Err(corrupt("it makes more than its header says"));
            }
            out.extend_from_slice(copied);
        } else if command != 0 {
            let size = usize::from(command);
            let inserted = delta
                .get(at..at + size)
                .ok_or_else(|| corrupt("an insert is truncated"))?;
            at += size;
            if out.len() + inserted.len() > result_size {
                return Err(corrupt("it makes more than its header says"));
            }
            out.extend_from_slice(inserted);
        } else {
            return Err(corrupt("command 0 is reserved"));
        }
    }
    if out.len() != result_size {
        return Err(corrupt("it makes fewer bytes than its header says"));
    }
    Ok(out)
}

/// The received entries, in pack order.
#[derive(Default)]
struct Entries {
    offsets: Vec<u64>,
    crcs: Vec<u32>,
    /// Git's type number of each entry.
    types: Vec<u8>,
    /// Set when the object is known: whole objects while receiving, deltas
    /// when resolved (by whichever thread).
    ids: Vec<OnceLock<[u8; 20]>>,
    /// (base, delta) entry numbers of offset deltas, sorted by base.
    ofs_children: Vec<(u32, u32)>,
    /// (base id, delta) of reference deltas, sorted by base id.
    ref_children: Vec<([u8; 20], u32)>,
    /// Where the entries end (and the trailer starts).
    data_end: u64,
}

impl Entries {
    fn len(&self) -> usize {
        self.offsets.len()
    }

    /// The bytes of entry `index` in the pack file.
    fn span(&self, index: usize) -> (u64, u64) {
        let start = self.offsets[index];
        let end = self
            .offsets
            .get(index + 1)
            .copied()
            .unwrap_or(self.data_end);
        (start, end)
    }

    /// Entries that are deltas on entry `index` (whose id is `id`, if known).
    fn children(&self, index: u32, id: Option<&[u8; 20]>) -> Children {
        let ofs_start = self.ofs_children.partition_point(|(base, _)| *base < index);
        let ofs_end = self
            .ofs_children
            .partition_point(|(base, _)| *base <= index);
        let (ref_start, ref_end) = match id {
            Some(id) if !self.ref_children.is_empty() => (
                self.ref_children.partition_point(|(base, _)| base < id),
                self.ref_children.partition_point(|(base, _)| base <= id),
            ),
            _ => (0, 0),
        };
        Children {
            ofs: ofs_start..ofs_end,
            refs: ref_start..ref_end,
        }
    }

    fn child(&self, children: &Children, n: usize) -> Option<u32> {
        let ofs = children.ofs.len();
        if n < ofs {
            Some(self.ofs_children[children.ofs.start + n].1)
        } else if n - ofs < children.refs.len() {
            Some(self.ref_children[children.refs.start + n - ofs].1)
        } else {
            None
        }
    }
}

struct Children {
    ofs: std::ops::Range<usize>,
    refs: std::ops::Range<usize>,
}

impl Children {
    fn count(&self) -> usize {
        self.ofs.len() + self.refs.len()
    }
}

/// Every id a checked object refers to, with the first object found
/// referring to it.
struct References {
    shards: Vec<Mutex<gix_hashtable::HashMap<ObjectId, u32>>>,
}

impl References {
    fn new() -> Self {
        References {
            shards: (0..REFERENCE_SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// The map hashes an id's first bytes; shards split on its last.
    fn shard(id: &ObjectId) -> usize {
        usize::from(id.as_slice()[19]) % REFERENCE_SHARDS
    }

    fn insert(&self, target: ObjectId, referrer: u32) {
        let mut map = self.shards[Self::shard(&target)]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(target).or_insert(referrer);
    }
}

/// The ids one thread recorded last, so that the entries every version of
/// a tree repeats are not recorded again and again: a direct-mapped cache.
struct Recent {
    slots: Vec<Option<ObjectId>>,
}

impl Recent {
    const SLOTS: usize = 1 << 12;

    fn new() -> Self {
        Recent {
            slots: vec![None; Self::SLOTS],
        }
    }

    /// Whether `id` was not among the recent ones (it is now).
    fn fresh(&mut self, id: &ObjectId) -> bool {
        let bytes = id.as_slice();
        let slot = (usize::from(bytes[0]) << 8 | usize::from(bytes[1])) % Self::SLOTS;
        if self.slots[slot].as_ref() == Some(id) {
            return false;
        }
        self.slots[slot] = Some(*id);
        true
    }
}

/// Hash and check one object (entry `index`), recording what it refers to.
fn identify(
    index: u32,
    kind: gix_object::Kind,
    data: &[u8],
    references: &References,
    recent: &mut Recent,
) -> Result<[u8; 20], IngestError> {
    let id = gix_object::compute_hash(gix_hash::Kind::Sha1, kind, data)
        .map_err(|err| invalid_pack(format!("cannot hash an object: {err:#}")))?;
    check_object_with(id, kind, data, &mut |target| {
        if recent.fresh(&target) {
            references.insert(target, index);
        }
        Ok(())
    })?;
    Ok(raw(&id))
}

/// Receive, check and index the pack in `input` into `staging`. Returns
/// `None` for a pack without objects. `input` is left after the pack.
pub(crate) fn index_pack(
    input: &mut impl BufRead,
    staging: &Path,
    existing: &ObjectDb,
    limits: IngestLimits,
) -> Result<Option<Indexed>, IngestError> {
    index_pack_holding(input, staging, existing, limits, HELD_BYTES)
}

/// [`index_pack`], keeping at most `held_bytes` of decoded bases.
fn index_pack_holding(
    input: &mut impl BufRead,
    staging: &Path,
    existing: &ObjectDb,
    limits: IngestLimits,
    held_bytes: usize,
) -> Result<Option<Indexed>, IngestError> {
    let temporary = staging.join("incoming.pack");
    let result = index_into(input, staging, &temporary, existing, limits, held_bytes);
    if result.is_err() {
        // Refused: nothing of it stays in staging.
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

fn index_into(
    input: &mut impl BufRead,
    staging: &Path,
    temporary: &Path,
    existing: &ObjectDb,
    limits: IngestLimits,
    held_bytes: usize,
) -> Result<Option<Indexed>, IngestError> {
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(temporary)
        .map_err(IngestError::Write)?;
    let references = References::new();
    let (mut entries, mut file, checksum) = receive(input, file, limits, &references)?;
    if entries.len() == 0 {
        drop(file);
        let _ = std::fs::remove_file(temporary);
        return Ok(None);
    }
    entries.ofs_children.sort_unstable_by_key(|(base, _)| *base);
    entries.ref_children.sort_unstable();

    let roots: Vec<u32> = (0..entries.len() as u32)
        .filter(|&index| object_kind(entries.types[index as usize]).is_some())
        .collect();
    let resolving = Resolving {
        limits,
        held_bytes,
        references: &references,
    };
    resolve(&file, &entries, &roots, &resolving)?;
    let checksum =
        complete_thin(&mut file, &mut entries, existing, &resolving)?.unwrap_or(checksum);

    check_connected(&entries, existing, references)?;
    let order = sorted_by_id(&entries)?;

    let name = format!("pack-{}", hex::encode(checksum));
    let pack_path = staging.join(format!("{name}.pack"));
    let index_path = staging.join(format!("{name}.idx"));
    file.sync_all().map_err(IngestError::Write)?;
    drop(file);
    write_index(&index_path, &entries, &order, &checksum).map_err(|err| {
        let _ = std::fs::remove_file(&index_path);
        IngestError::Write(err)
    })?;
    std::fs::rename(temporary, &pack_path).map_err(IngestError::Write)?;
    let size = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(IngestError::Write)
    };
    Ok(Some(Indexed {
        name,
        object_count: entries.len() as u64,
        pack_size: size(&pack_path)?,
        index_size: size(&index_path)?,
        pack_path,
        index_path,
    }))
}

/// Phase 1: stream the pack to `file`, parsing every entry.
fn receive(
    input: &mut impl BufRead,
    file: File,
    limits: IngestLimits,
    references: &References,
) -> Result<(Entries, File, [u8; 20]), IngestError> {
    let mut tee = Tee {
        inner: input,
        file: BufWriter::with_capacity(256 * 1024, file),
        pack_hash: Some(gix_hash::hasher(gix_hash::Kind::Sha1)),
        crc: crc32fast::Hasher::new(),
        position: 0,
        error: None,
    };
    let mut header = [0u8; 12];
    tee.read_exact(&mut header).map_err(read_error)?;
    let (_version, count) = gix_pack::data::header::decode(&header)
        .map_err(|err| invalid_pack(format!("bad pack header: {err:#}")))?;
    if count > limits.max_objects {
        return Err(invalid_pack(format!(
            "the pack holds {count} objects, more than the limit of {}",
            limits.max_objects
        )));
    }
    let count = count as usize;
    // Reserve for what was announced only up to a point: the tables grow
    // with the entries actually received.
    let reserve = count.min(1 << 20);
    let mut entries = Entries {
        offsets: Vec::with_capacity(reserve),
        crcs: Vec::with_capacity(reserve),
        types: Vec::with_capacity(reserve),
        ids: Vec::with_capacity(reserve),
        ..Entries::default()
    };
    let mut state = gix_zlib::Decompress::new();
    let mut object = Vec::new();
    let mut recent = Recent::new();
    for index in 0..count {
        let index = u32::try_from(index).map_err(|_| invalid_pack("too many objects"))?;
        let offset = tee.position;
        tee.crc = crc32fast::Hasher::new();
        let entry =
            gix_pack::data::Entry::from_read(&mut tee, offset, 20).map_err(|err| {
                match err.kind() {
                    io::ErrorKind::UnexpectedEof => invalid_pack("the pack is truncated"),
                    _ => invalid_pack(format!("bad entry at offset {offset}: {err}")),
                }
            })?;
        let size = usize::try_from(entry.decompressed_size)
            .ok()
            .filter(|size| *size <= limits.max_object_bytes)
            .ok_or_else(|| {
                invalid_pack(format!(
                    "the entry at offset {offset} is larger than the limit of {} bytes",
                    limits.max_object_bytes
                ))
            })?;
        let mut id = OnceLock::new();
        let type_id = match entry.header {
            Header::OfsDelta { base_distance } => {
                let base = offset
                    .checked_sub(base_distance)
                    .filter(|_| base_distance > 0)
                    .and_then(|base| entries.offsets.binary_search(&base).ok())
                    .ok_or_else(|| {
                        invalid_pack(format!(
                            "the delta at offset {offset} has no base entry at distance {base_distance}"
                        ))
                    })?;
                inflate(&mut tee, &mut state, size, None)?;
                entries.ofs_children.push((base as u32, index));
                kind::OFS_DELTA
            }
            Header::RefDelta { base_id } => {
                inflate(&mut tee, &mut state, size, None)?;
                entries.ref_children.push((raw(&base_id), index));
                kind::REF_DELTA
            }
            header => {
                let kind = header
                    .as_kind()
                    .ok_or_else(|| invalid_pack("unknown entry type"))?;
                inflate(&mut tee, &mut state, size, Some(&mut object))?;
                id = OnceLock::from(identify(index, kind, &object, references, &mut recent)?);
                type_id(kind)
            }
        };
        entries.offsets.push(offset);
        entries.crcs.push(tee.crc.clone().finalize());
        entries.types.push(type_id);
        entries.ids.push(id);
        if object.capacity() > 1 << 20 {
            object = Vec::new();
        }
    }
    entries.data_end = tee.position;
    let computed = tee
        .pack_hash
        .take()
        .ok_or_else(|| invalid_pack("the pack is read twice"))?
        .try_finalize()
        .map_err(|err| invalid_pack(format!("cannot hash the pack: {err:#}")))?;
    let mut trailer = [0u8; 20];
    tee.read_exact(&mut trailer)
        .map_err(|_| invalid_pack("the pack's checksum is missing"))?;
    if computed.as_slice() != trailer {
        return Err(invalid_pack(format!(
            "the pack's checksum is {}, but its content hashes to {computed}",
            hex::encode(trailer)
        )));
    }
    if let Some(err) = tee.error.take() {
        return Err(IngestError::Write(err));
    }
    // Nothing may follow the pack.
    if !tee.inner.fill_buf().map_err(read_error)?.is_empty() {
        return Err(invalid_pack("unexpected data after the pack"));
    }
    let file = tee
        .file
        .into_inner()
        .map_err(|err| IngestError::Write(err.into_error()))?;
    Ok((entries, file, trailer))
}

/// What resolving needs besides the pack.
struct Resolving<'a> {
    limits: IngestLimits,
    held_bytes: usize,
    references: &'a References,
}

/// Shared state of the resolving threads.
struct Resolver<'a> {
    file: &'a File,
    entries: &'a Entries,
    references: &'a References,
    max_object: usize,
    /// Per thread.
    held_bytes: usize,
    failed: AtomicBool,
    error: Mutex<Option<IngestError>>,
}

/// One object on a thread's stack of deltas being resolved.
struct Frame {
    index: u32,
    data: Option<Vec<u8>>,
    children: Children,
    next: usize,
}

/// A thread's reusable buffers.
struct Scratch {
    state: gix_zlib::Decompress,
    compressed: Vec<u8>,
    delta: Vec<u8>,
    recent: Recent,
}

impl Resolver<'_> {
    fn fail(&self, err: IngestError) {
        self.failed.store(true, Ordering::Relaxed);
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(err);
        }
    }

    /// Read entry `index` and inflate its data (an object or a delta).
    fn inflate_entry(
        &self,
        index: u32,
        scratch: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> Result<(), IngestError> {
        let (start, end) = self.entries.span(index as usize);
        let length = usize::try_from(end - start).map_err(|_| invalid_pack("entry too large"))?;
        scratch.compressed.resize(length, 0);
        self.file
            .read_exact_at(&mut scratch.compressed, start)
            .map_err(IngestError::Write)?;
        let entry =
            gix_pack::data::Entry::from_bytes(&scratch.compressed, start, gix_hash::Kind::Sha1)
                .map_err(|err| invalid_pack(format!("bad entry at offset {start}: {err:#}")))?;
        let size = usize::try_from(entry.decompressed_size)
            .map_err(|_| invalid_pack("entry too large"))?;
        let mut data = scratch
            .compressed
            .get(entry.header_size()..)
            .ok_or_else(|| invalid_pack("the pack is truncated"))?;
        inflate(&mut data, &mut scratch.state, size, Some(out))
    }

    /// Apply delta entry `index` to `base`.
    fn apply(
        &self,
        index: u32,
        base: &[u8],
        scratch: &mut Scratch,
    ) -> Result<Vec<u8>, IngestError> {
        let mut delta = std::mem::take(&mut scratch.delta);
        let result = self
            .inflate_entry(index, scratch, &mut delta)
            .and_then(|()| apply_delta(base, &delta, self.max_object));
        if delta.capacity() <= 1 << 20 {
            scratch.delta = delta;
        }
        result
    }

    /// The data of `stack[at]`, decoding it again from the nearest object
    /// below it that still has its data (or from the pack) if it was
    /// dropped.
    fn data_of(
        &self,
        stack: &mut [Frame],
        at: usize,
        scratch: &mut Scratch,
    ) -> Result<usize, IngestError> {
        if stack[at].data.is_some() {
            return Ok(0);
        }
        let from = (0..at).rev().find(|&i| stack[i].data.is_some());
        let mut data = match from {
            Some(i) => stack[i].data.clone().unwrap_or_default(),
            None => {
                let mut out = Vec::new();
                self.inflate_entry(stack[0].index, scratch, &mut out)?;
                out
            }
        };
        let first = from.map_or(1, |i| i + 1);
        for frame in &stack[first..=at] {
            data = self.apply(frame.index, &data, scratch)?;
        }
        let added = data.len();
        stack[at].data = Some(data);
        Ok(added)
    }

    /// Resolve every delta that descends from the whole object `root`.
    fn resolve_family(&self, root: u32, scratch: &mut Scratch) -> Result<(), IngestError> {
        let entries = self.entries;
        let Some(kind) = object_kind(entries.types[root as usize]) else {
            return Ok(());
        };
        let root_id = entries.ids[root as usize].get();
        let children = entries.children(root, root_id);
        if children.count() == 0 {
            return Ok(());
        }
        let mut data = Vec::new();
        self.inflate_entry(root, scratch, &mut data)?;
        let mut held = data.len();
        let mut stack = vec![Frame {
            index: root,
            data: Some(data),
            children,
            next: 0,
        }];
        while let Some(top) = stack.last_mut() {
            if self.failed.load(Ordering::Relaxed) {
                return Ok(());
            }
            let Some(child) = entries.child(&top.children, top.next) else {
                held -= top.data.as_ref().map_or(0, Vec::len);
                stack.pop();
                continue;
            };
            top.next += 1;
            let last = top.next == top.children.count();
            let at = stack.len() - 1;
            held += self.data_of(&mut stack, at, scratch)?;
            let base = stack[at].data.as_deref().unwrap_or_default();
            let data = self.apply(child, base, scratch)?;
            if last {
                // No other delta needs this base.
                held -= stack[at].data.take().map_or(0, |d| d.len());
            }
            let id = identify(child, kind, &data, self.references, &mut scratch.recent)?;
            if entries.ids[child as usize].set(id).is_err() {
                return Err(invalid_pack("an object is resolved twice"));
            }
            let children = entries.children(child, Some(&id));
            if children.count() > 0 {
                held += data.len();
                stack.push(Frame {
                    index: child,
                    data: Some(data),
                    children,
                    next: 0,
                });
                // Over the budget: drop the oldest data, but never the top's.
                let top = stack.len() - 1;
                for frame in &mut stack[..top] {
                    if held <= self.held_bytes {
                        break;
                    }
                    held -= frame.data.take().map_or(0, |d| d.len());
                }
            }
        }
        Ok(())
    }
}

/// Phase 2: resolve the deltas on `roots`, in parallel.
fn resolve(
    file: &File,
    entries: &Entries,
    roots: &[u32],
    resolving: &Resolving<'_>,
) -> Result<(), IngestError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_THREADS)
        .min(roots.len().div_ceil(64))
        .max(1);
    let resolver = Resolver {
        file,
        entries,
        references: resolving.references,
        max_object: resolving.limits.max_object_bytes,
        held_bytes: resolving.held_bytes / threads,
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
    };
    let next = AtomicUsize::new(0);
    let work = || {
        let mut scratch = Scratch {
            state: gix_zlib::Decompress::new(),
            compressed: Vec::new(),
            delta: Vec::new(),
            recent: Recent::new(),
        };
        loop {
            let at = next.fetch_add(1, Ordering::Relaxed);
            let Some(&root) = roots.get(at) else { break };
            if resolver.failed.load(Ordering::Relaxed) {
                break;
            }
            if let Err(err) = resolver.resolve_family(root, &mut scratch) {
                resolver.fail(err);
                break;
            }
            if scratch.compressed.capacity() > 1 << 20 {
                scratch.compressed = Vec::new();
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(work);
        }
        work();
    });
    match resolver
        .error
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
    {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Phase 3: append the bases of deltas that are not in the pack (a thin
/// pack) from `existing`, and resolve those deltas. Returns the new
/// checksum if the pack changed.
///
/// As git does: unresolved reference deltas are taken in pack order, and
/// for each still unresolved, its base is appended if the repository has
/// it and its family resolved at once, so that a base which is the result
/// of another delta of the pack (waiting on an outside base itself) is
/// made by that delta, never appended twice.
fn complete_thin(
    file: &mut File,
    entries: &mut Entries,
    existing: &ObjectDb,
    resolving: &Resolving<'_>,
) -> Result<Option<[u8; 20]>, IngestError> {
    let resolved = |entries: &Entries, index: u32| entries.ids[index as usize].get().is_some();
    let mut waiting: Vec<(u32, [u8; 20])> = entries
        .ref_children
        .iter()
        .filter(|(_, delta)| !resolved(entries, *delta))
        .map(|(base, delta)| (*delta, *base))
        .collect();
    if waiting.is_empty() {
        return if entries.ids.iter().all(|id| id.get().is_some()) {
            Ok(None)
        } else {
            Err(invalid_pack("a delta's base could not be resolved"))
        };
    }
    waiting.sort_unstable();
    let handle = existing.handle();
    // Drop the trailer; bases go where it was.
    file.set_len(entries.data_end).map_err(IngestError::Write)?;
    let mut buffer = Vec::new();
    for (delta, base) in &waiting {
        if resolved(entries, *delta) {
            continue;
        }
        let id = object_id(base);
        let Some(object) = gix_object::Find::try_find(&handle, &id, &mut buffer)
            .map_err(|err| invalid_pack(format!("cannot read {id}: {err:#}")))?
        else {
            // Perhaps the result of a later delta of the pack.
            continue;
        };
        let kind = object.kind;
        let header = match kind {
            gix_object::Kind::Commit => Header::Commit,
            gix_object::Kind::Tree => Header::Tree,
            gix_object::Kind::Blob => Header::Blob,
            gix_object::Kind::Tag => Header::Tag,
        };
        let mut encoded = Vec::new();
        header
            .write_to(object.data.len() as u64, &mut encoded)
            .map_err(IngestError::Write)?;
        let mut encoder = flate2::write::ZlibEncoder::new(encoded, flate2::Compression::fast());
        encoder.write_all(object.data).map_err(IngestError::Write)?;
        let encoded = encoder.finish().map_err(IngestError::Write)?;
        let position = entries.data_end;
        file.write_all_at(&encoded, position)
            .map_err(IngestError::Write)?;
        let index = u32::try_from(entries.len()).map_err(|_| invalid_pack("too many objects"))?;
        entries.offsets.push(position);
        entries.crcs.push(crc32fast::hash(&encoded));
        entries.types.push(type_id(kind));
        entries.ids.push(OnceLock::from(*base));
        entries.data_end = position + encoded.len() as u64;
        resolve(file, entries, &[index], resolving)?;
    }
    if let Some((_, base)) = waiting.iter().find(|(delta, _)| !resolved(entries, *delta)) {
        return Err(invalid_pack(format!(
            "a delta's base {} is neither in the pack nor in the repository",
            object_id(base)
        )));
    }
    if entries.ids.iter().any(|id| id.get().is_none()) {
        return Err(invalid_pack("a delta's base could not be resolved"));
    }

    // The new object count, then the new trailer over everything.
    let count = u32::try_from(entries.len()).map_err(|_| invalid_pack("too many objects"))?;
    let header = gix_pack::data::header::encode(gix_pack::data::Version::V2, count);
    file.write_all_at(&header, 0).map_err(IngestError::Write)?;
    let end = entries.data_end;
    let mut hasher = gix_hash::hasher(gix_hash::Kind::Sha1);
    let mut chunk = vec![0u8; 256 * 1024];
    let mut at = 0u64;
    while at < end {
        let n = chunk.len().min((end - at) as usize);
        file.read_exact_at(&mut chunk[..n], at)
            .map_err(IngestError::Write)?;
        hasher.update(&chunk[..n]);
        at += n as u64;
    }
    let checksum = raw(&hasher
        .try_finalize()
        .map_err(|err| invalid_pack(format!("cannot hash the pack: {err:#}")))?);
    file.write_all_at(&checksum, end)
        .map_err(IngestError::Write)?;
    Ok(Some(checksum))
}

/// Entry numbers sorted by object id; a pack may not hold an object twice.
fn sorted_by_id(entries: &Entries) -> Result<Vec<u32>, IngestError> {
    let id = |index: u32| {
        entries.ids[index as usize]
            .get()
            .copied()
            .unwrap_or_default()
    };
    let mut order: Vec<u32> = (0..entries.len() as u32).collect();
    order.sort_unstable_by_key(|&index| id(index));
    if let Some(pair) = order.windows(2).find(|pair| id(pair[0]) == id(pair[1])) {
        return Err(invalid_pack(format!(
            "the pack holds {} twice",
            object_id(&id(pair[0]))
        )));
    }
    Ok(order)
}

/// Phase 4: everything referred to is in the pack or in `existing`.
fn check_connected(
    entries: &Entries,
    existing: &ObjectDb,
    references: References,
) -> Result<(), IngestError> {
    let mut shards: Vec<_> = references
        .shards
        .into_iter()
        .map(|shard| shard.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect();
    // What the pack holds is there; what is left must be in the repository.
    for id in &entries.ids {
        if let Some(id) = id.get() {
            let id = object_id(id);
            shards[References::shard(&id)].remove(&id);
        }
    }
    let handle = existing.handle();
    for shard in shards {
        for (target, referrer) in shard {
            if !handle.exists_without_refresh(&target) {
                let referrer = entries.ids[referrer as usize]
                    .get()
                    .copied()
                    .unwrap_or_default();
                return Err(IngestError::MissingObject {
                    id: object_id(&referrer),
                    missing: target,
                });
            }
        }
    }
    Ok(())
}

/// Phase 5: the pack index, version 2.
fn write_index(
    path: &Path,
    entries: &Entries,
    order: &[u32],
    pack_checksum: &[u8; 20],
) -> io::Result<()> {
    struct Hashing<W> {
        out: W,
        hash: gix_hash::Hasher,
    }
    impl<W: Write> Hashing<W> {
        fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.hash.update(bytes);
            self.out.write_all(bytes)
        }
    }
    let id = |index: u32| {
        entries.ids[index as usize]
            .get()
            .copied()
            .unwrap_or_default()
    };
    let mut out = Hashing {
        out: BufWriter::with_capacity(256 * 1024, File::create(path)?),
        hash: gix_hash::hasher(gix_hash::Kind::Sha1),
    };
    out.put(b"\xfftOc")?;
    out.put(&2u32.to_be_bytes())?;
    let mut fanout = [0u32; 256];
    for &index in order {
        fanout[usize::from(id(index)[0])] += 1;
    }
    let mut total = 0u32;
    for count in fanout {
        total += count;
        out.put(&total.to_be_bytes())?;
    }
    for &index in order {
        out.put(&id(index))?;
    }
    for &index in order {
        out.put(&entries.crcs[index as usize].to_be_bytes())?;
    }
    let mut large = Vec::new();
    for &index in order {
        let offset = entries.offsets[index as usize];
        let small = match u32::try_from(offset) {
            Ok(small) if small < 0x8000_0000 => small,
            _ => {
                let at = u32::try_from(large.len())
                    .map_err(|_| io::Error::other("too many large offsets"))?;
                large.push(offset);
                0x8000_0000 | at
            }
        };
        out.put(&small.to_be_bytes())?;
    }
    for offset in large {
        out.put(&offset.to_be_bytes())?;
    }
    out.put(pack_checksum)?;
    let checksum = out
        .hash
        .try_finalize()
        .map_err(|err| io::Error::other(format!("{err:#}")))?;
    out.out.write_all(checksum.as_slice())?;
    let file = out.out.into_inner().map_err(|err| err.into_error())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn git(dir: &Path, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let mut child = Command::new("git")
            .current_dir(dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("git runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("write stdin");
        let output = child.wait_with_output().expect("git finishes");
        assert!(output.status.success(), "git {args:?} failed");
        output.stdout
    }

    /// A pack of one file edited 80 times (long delta chains) and a tree
    /// per commit, as git packs it.
    fn deep_pack(dir: &Path) -> Vec<u8> {
        git(dir, &["init", "-q", "--bare", "."], b"");
        let mut stream = Vec::new();
        for version in 0..80u32 {
            let content: String = (0..400u32)
                .map(|line| format!("line {line} {}\n", line.min(version)))
                .collect();
            stream.extend_from_slice(
                format!(
                    "commit refs/heads/main\ncommitter A <a@example.com> {} +0000\ndata 2\nc\n\
                     M 644 inline dir/f.txt\ndata {}\n{content}\n",
                    1_700_000_000 + version,
                    content.len()
                )
                .as_bytes(),
            );
        }
        git(dir, &["fast-import", "--quiet"], &stream);
        git(
            dir,
            &[
                "pack-objects",
                "--all",
                "--stdout",
                "--depth=60",
                "--window=100",
            ],
            b"",
        )
    }

    #[test]
    fn bases_dropped_for_memory_are_decoded_again() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let source = scratch.path().join("source");
        std::fs::create_dir_all(&source).expect("mkdir");
        let pack = deep_pack(&source);
        let empty = scratch.path().join("empty");
        std::fs::create_dir_all(empty.join("pack")).expect("mkdir");
        let existing = ObjectDb::open(&empty).expect("empty db");
        std::fs::write(scratch.path().join("reference.pack"), &pack).expect("write");
        git(
            scratch.path(),
            &["index-pack", "-o", "reference.idx", "reference.pack"],
            b"",
        );
        let reference = std::fs::read(scratch.path().join("reference.idx")).expect("idx");
        // The chains are long enough for dropped bases to matter.
        let stats = git(scratch.path(), &["verify-pack", "-s", "reference.idx"], b"");
        let stats = String::from_utf8_lossy(&stats);
        assert!(
            stats.contains("chain length = 20:"),
            "expected deep delta chains: {stats}"
        );
        // Nothing kept (every base decoded again from the pack), a little,
        // and the default.
        for held in [0, 4096, HELD_BYTES] {
            let staging = scratch.path().join(format!("staging-{held}"));
            std::fs::create_dir_all(&staging).expect("mkdir");
            let indexed = index_pack_holding(
                &mut &pack[..],
                &staging,
                &existing,
                IngestLimits::default(),
                held,
            )
            .expect("valid pack")
            .expect("objects");
            assert_eq!(indexed.object_count, 80 * 4);
            assert_eq!(
                std::fs::read(&indexed.index_path).expect("idx"),
                reference,
                "the index git writes (holding {held} bytes)"
            );
            assert_eq!(std::fs::read(&indexed.pack_path).expect("pack"), pack);
        }
    }

    #[test]
    fn a_claimed_size_is_not_allocated_before_the_data_comes() {
        let mut compressed = Vec::new();
        let mut encoder =
            flate2::write::ZlibEncoder::new(&mut compressed, flate2::Compression::fast());
        encoder.write_all(b"ten bytes!").expect("compress");
        encoder.finish().expect("compress");
        let mut state = gix_zlib::Decompress::new();
        let mut out = Vec::new();
        let err = inflate(&mut &compressed[..], &mut state, 1 << 30, Some(&mut out))
            .expect_err("ten bytes are not a GiB");
        assert!(err.to_string().contains("fewer bytes"), "{err}");
        assert!(
            out.capacity() < 1 << 20,
            "{} bytes allocated",
            out.capacity()
        );
        inflate(&mut &compressed[..], &mut state, 10, Some(&mut out)).expect("exact");
        assert_eq!(out, b"ten bytes!");
        let err = inflate(&mut &compressed[..], &mut state, 9, None).expect_err("one too many");
        assert!(err.to_string().contains("more bytes"), "{err}");
    }

    #[test]
    fn deltas_copy_and_insert() {
        let base = b"hello world";
        // base size 11, result size 11: copy 0..6, insert "there"
        let delta = [11, 11, 0x90, 6, 5, b't', b'h', b'e', b'r', b'e'];
        let out = apply_delta(base, &delta, 100).expect("valid");
        assert_eq!(out, b"hello there");
    }

    #[test]
    fn bad_deltas_are_refused() {
        let base = b"hello world";
        for (delta, why) in [
            (vec![12u8, 5, 5, b'h', b'e', b'l', b'l', b'o'], "other size"),
            (vec![11, 5, 0x91, 10, 5], "past its base"),
            (vec![11, 5, 0], "reserved"),
            (vec![11, 5, 4, b'a', b'b', b'c', b'd'], "fewer bytes"),
            (vec![11, 2, 4, b'a', b'b', b'c', b'd'], "more than"),
            (vec![11, 5, 9, b'a'], "truncated"),
        ] {
            let err = apply_delta(base, &delta, 100).expect_err(why);
            assert!(err.to_string().contains(why), "{err} should say {why}");
        }
        let err = apply_delta(base, &[11, 101], 100).expect_err("too large");
        assert!(err.to_string().contains("limit"), "{err}");
    }
}
