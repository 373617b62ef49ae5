//! Packs generated for requests that bring nothing (clones, CI checkouts of one commit), kept on local
//! disk and streamed again to the next identical request.
//!
//! A pack depends only on what the request asks for: the objects named by the wants (content addressed,
//! so the same ids always mean the same objects), the depth, the filter, whether annotated tags are
//! included (and then on the tag refs) and whether offset deltas may be used. The key hashes exactly
//! those, with the repository's id, so one repository's packs are never served for another. Requests
//! with haves or existing shallow boundaries depend on the client's state and are not cached.
//!
//! Entries are whole files, written to a temporary name and renamed when the pack is complete, so a
//! reader never sees half a pack; several server processes may share the directory. The directory is
//! bounded: after each new entry the least recently used ones (by modification time, which a hit
//! refreshes) are removed until the total fits. A file removed while it is being streamed stays
//! readable until its reader closes it.
//!
//! Identical requests arriving together (a CI fan-out right after a push) generate the pack once: the
//! first fills the cache while the others wait, then stream the entry. A waiter gives up and generates
//! its own pack if the fill fails, or makes no progress for a minute (its client may be stalled: the
//! copy is written at the pace of the first client).

use super::request::FetchRequest;
use gix_hash::ObjectId;
use nimbus_types::Ref;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

/// Temporary files older than this are left over from a crash and removed.
const STALE_TEMPORARY: Duration = Duration::from_secs(3600);

/// How long a request waits for an identical one's pack without seeing it grow.
const STALLED_FILL: Duration = Duration::from_secs(60);

/// The directory of cached packs and its size bound.
#[derive(Debug)]
pub struct ClonePackCache {
    directory: PathBuf,
    max_bytes: u64,
    /// Fills under way in this process, by key.
    in_flight: Mutex<HashMap<String, Arc<InFlight>>>,
}

/// One fill under way: bytes copied so far, and whether it ended.
#[derive(Debug, Default)]
struct InFlight {
    state: Mutex<(u64, bool)>,
    changed: Condvar,
}

impl InFlight {
    fn state(&self) -> MutexGuard<'_, (u64, bool)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the fill ends; `false` if it stopped making progress.
    fn wait(&self) -> bool {
        let mut state = self.state();
        loop {
            if state.1 {
                return true;
            }
            let before = state.0;
            let (next, timeout) = self
                .changed
                .wait_timeout(state, STALLED_FILL)
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            if timeout.timed_out() && state.0 == before && !state.1 {
                return false;
            }
        }
    }
}

/// What the cache has for a request.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The pack, opened at its start, and its object count.
    Hit(File, u32),
    /// Generate the pack, copying it into the cache as it is sent.
    Fill(CacheFill<'a>),
    /// Generate the pack without keeping it.
    Miss,
}

/// Which cache entry a request maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey(String);

impl ClonePackCache {
    /// A cache in `directory` (created if missing) holding at most `max_bytes` of packs.
    pub fn new(directory: PathBuf, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(&directory)?;
        let cache = ClonePackCache {
            directory,
            max_bytes,
            in_flight: Mutex::default(),
        };
        cache.evict()?;
        Ok(cache)
    }

    /// The key of a request that can be served from the cache, or `None` when the pack depends on what
    /// the client already has. `common` is what negotiation found in common.
    pub fn key(
        repo_id: i64,
        request: &FetchRequest,
        common: &[ObjectId],
        refs: &[Ref],
    ) -> Option<CacheKey> {
        let deepen = &request.deepen;
        if !common.is_empty()
            || !request.client_shallows.is_empty()
            || deepen.since.is_some()
            || !deepen.not.is_empty()
            || deepen.relative
        {
            return None;
        }
        let mut wants = request.wants.clone();
        wants.sort_unstable();
        wants.dedup();
        let mut hasher = Sha256::new();
        hasher.update(b"nimbus clone pack 1\0");
        hasher.update(repo_id.to_le_bytes());
        hasher.update((wants.len() as u64).to_le_bytes());
        for want in &wants {
            hasher.update(want.as_bytes());
        }
        hasher.update(
            deepen
                .depth
                .map_or(0, |depth| u64::from(depth) + 1)
                .to_le_bytes(),
        );
        hasher.update(format!("{:?}\0", request.filter).as_bytes());
        hasher.update([u8::from(request.ofs_delta), u8::from(request.include_tag)]);
        if request.include_tag {
            // Which annotated tags follow their targets depends on the tag refs.
            for tag in refs
                .iter()
                .filter(|r| r.name.as_bstr().starts_with(b"refs/tags/"))
            {
                hasher.update(tag.name.as_bstr());
                hasher.update(b"\0");
                hasher.update(tag.target.as_bytes());
                hasher.update(tag.peeled.as_ref().map_or(&[][..], |id| id.as_bytes()));
                hasher.update(b"\n");
            }
        }
        Some(CacheKey(hex::encode(hasher.finalize())))
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        self.directory.join(format!("{}.pack", key.0))
    }

    /// The cached pack for `key`, opened at its start, with its object count; marks it recently used.
    pub fn open(&self, key: &CacheKey) -> Option<(File, u32)> {
        let mut file = File::open(self.path(key)).ok()?;
        let mut header = [0u8; 12];
        file.read_exact(&mut header).ok()?;
        if &header[..4] != b"PACK" {
            return None;
        }
        let objects = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        file.seek(SeekFrom::Start(0)).ok()?;
        // Refresh the entry for least-recently-used eviction (best effort).
        let _ = file.set_modified(SystemTime::now());
        Some((file, objects))
    }

    fn flights(&self) -> MutexGuard<'_, HashMap<String, Arc<InFlight>>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached pack for `key`; or, when an identical request is filling it, that pack once it is
    /// complete; or else the duty to fill it.
    pub fn lookup(&self, key: &CacheKey) -> Lookup<'_> {
        if let Some((file, count)) = self.open(key) {
            return Lookup::Hit(file, count);
        }
        let flight: Arc<InFlight> = {
            let mut flights = self.flights();
            match flights.get(&key.0) {
                Some(flight) => flight.clone(),
                None => {
                    // Checked again under the lock: a fill that just ended renamed its entry into
                    // place before leaving the table.
                    if let Some((file, count)) = self.open(key) {
                        return Lookup::Hit(file, count);
                    }
                    let flight = Arc::new(InFlight::default());
                    flights.insert(key.0.clone(), flight.clone());
                    drop(flights);
                    return match self.fill(key, flight.clone()) {
                        Some(fill) => Lookup::Fill(fill),
                        None => {
                            self.end_flight(key, &flight);
                            Lookup::Miss
                        }
                    };
                }
            }
        };
        if flight.wait()
            && let Some((file, count)) = self.open(key)
        {
            return Lookup::Hit(file, count);
        }
        Lookup::Miss
    }

    /// Marks a fill as ended and wakes the requests waiting for it.
    fn end_flight(&self, key: &CacheKey, flight: &Arc<InFlight>) {
        let mut flights = self.flights();
        if flights.get(&key.0).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            flights.remove(&key.0);
        }
        drop(flights);
        flight.state().1 = true;
        flight.changed.notify_all();
    }

    /// A writer that keeps a copy of the pack about to be sent for `key`; `None` if the cache cannot
    /// take one now.
    fn fill(&self, key: &CacheKey, flight: Arc<InFlight>) -> Option<CacheFill<'_>> {
        let temporary = tempfile::Builder::new()
            .prefix("tmp-")
            .tempfile_in(&self.directory)
            .ok()?;
        Some(CacheFill {
            file: Some(BufWriter::with_capacity(256 * 1024, temporary)),
            destination: self.path(key),
            written: 0,
            // One pack may take half the cache, so it cannot evict everything else at once.
            limit: self.max_bytes / 2,
            cache: self,
            key: key.clone(),
            flight,
        })
    }

    /// Removes leftover temporary files and the least recently used packs beyond the bound.
    fn evict(&self) -> io::Result<()> {
        let now = SystemTime::now();
        let mut packs = Vec::new();
        for entry in fs::read_dir(&self.directory)? {
            let Ok(entry) = entry else { continue };
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            let modified = metadata.modified().unwrap_or(now);
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("tmp-") {
                if now.duration_since(modified).unwrap_or_default() > STALE_TEMPORARY {
                    let _ = fs::remove_file(entry.path());
                }
            } else if name.ends_with(".pack") {
                packs.push((modified, metadata.len(), entry.path()));
            }
        }
        let mut total: u64 = packs.iter().map(|(_, len, _)| len).sum();
        packs.sort_by_key(|(modified, _, _)| *modified);
        for (_, len, path) in packs {
            if total <= self.max_bytes {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
        Ok(())
    }
}

/// A copy of a pack being sent, kept if the pack completes and fits. Identical requests wait for it
/// until it is dropped.
#[derive(Debug)]
pub struct CacheFill<'a> {
    file: Option<BufWriter<tempfile::NamedTempFile>>,
    destination: PathBuf,
    written: u64,
    limit: u64,
    cache: &'a ClonePackCache,
    key: CacheKey,
    flight: Arc<InFlight>,
}

impl Drop for CacheFill<'_> {
    fn drop(&mut self) {
        self.cache.end_flight(&self.key, &self.flight);
    }
}

impl CacheFill<'_> {
    /// Copies pack bytes; past the size limit or on a write error the copy is abandoned (the client's
    /// pack is unaffected).
    pub fn write(&mut self, data: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        self.written += data.len() as u64;
        if self.written > self.limit || file.write_all(data).is_err() {
            self.file = None;
        }
        self.flight.state().0 = self.written;
    }

    /// The pack was sent completely and ends with `checksum`: make the copy an entry of the cache. A
    /// copy that is not exactly the whole pack is dropped.
    pub fn commit(mut self, checksum: Option<ObjectId>) {
        let (Some(file), Some(checksum)) = (self.file.take(), checksum) else {
            return;
        };
        let written = self.written;
        let complete = |temporary: &tempfile::NamedTempFile| -> io::Result<bool> {
            let file = temporary.as_file();
            let len = file.metadata()?.len();
            if len != written || len < 32 {
                return Ok(false);
            }
            let mut trailer = [0u8; 20];
            file.read_exact_at(&mut trailer, len - 20)?;
            Ok(trailer == checksum.as_bytes())
        };
        let kept = file
            .into_inner()
            .map_err(|error| error.into_error())
            .and_then(|temporary| match complete(&temporary)? {
                true => temporary
                    .persist(&self.destination)
                    .map(drop)
                    .map_err(|error| error.error),
                false => Err(io::Error::other("the copy is not the whole pack")),
            });
        match kept {
            Ok(()) => {
                if let Err(error) = self.cache.evict() {
                    tracing::warn!(%error, "could not trim the clone pack cache");
                }
            }
            Err(error) => tracing::warn!(%error, "could not keep a pack in the clone pack cache"),
        }
    }
}

/// Sends everything written to `out` and copies it into `fill`.
pub(super) struct Tee<'a, 'c, W> {
    pub out: W,
    pub fill: &'a mut Option<CacheFill<'c>>,
}

impl<W: Write> Write for Tee<'_, '_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let written = self.out.write(data)?;
        if let Some(fill) = self.fill.as_mut() {
            fill.write(&data[..written]);
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> CacheKey {
        CacheKey(text.to_owned())
    }

    fn filling<'a>(cache: &'a ClonePackCache, key: &CacheKey) -> CacheFill<'a> {
        match cache.lookup(key) {
            Lookup::Fill(fill) => fill,
            other => panic!("expected to fill {key:?}, got {other:?}"),
        }
    }

    /// A "pack": header, body, and a trailer standing for its checksum.
    fn pack(trailer: [u8; 20]) -> Vec<u8> {
        let mut bytes = b"PACK\0\0\0\x02\0\0\0\x03".to_vec();
        bytes.extend_from_slice(&[7; 40]);
        bytes.extend_from_slice(&trailer);
        bytes
    }

    #[test]
    fn only_whole_packs_ending_with_their_checksum_are_kept() {
        let directory = tempfile::tempdir().expect("tempdir");
        let cache = ClonePackCache::new(directory.path().to_owned(), 1 << 20).expect("cache");
        let checksum = ObjectId::from_bytes_or_panic(&[9; 20]);

        let mut fill = filling(&cache, &key("good"));
        fill.write(&pack([9; 20]));
        fill.commit(Some(checksum));
        let (_, objects) = cache.open(&key("good")).expect("kept");
        assert_eq!(objects, 3);

        // Cut short: the last bytes never arrived.
        let mut fill = filling(&cache, &key("short"));
        fill.write(&pack([9; 20])[..50]);
        fill.commit(Some(checksum));
        assert!(cache.open(&key("short")).is_none());

        // Another pack's checksum, or none (the pack failed).
        let mut fill = filling(&cache, &key("other"));
        fill.write(&pack([8; 20]));
        fill.commit(Some(checksum));
        assert!(cache.open(&key("other")).is_none());
        let mut fill = filling(&cache, &key("failed"));
        fill.write(&pack([9; 20]));
        fill.commit(None);
        assert!(cache.open(&key("failed")).is_none());

        // Nothing but the good entry is left behind.
        let names: Vec<_> = fs::read_dir(directory.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["good.pack"]);
    }

    #[test]
    fn a_pack_over_half_the_cache_is_not_kept() {
        let directory = tempfile::tempdir().expect("tempdir");
        let cache = ClonePackCache::new(directory.path().to_owned(), 100).expect("cache");
        let mut fill = filling(&cache, &key("big"));
        fill.write(&pack([9; 20]));
        fill.write(&[0; 64]);
        fill.commit(Some(ObjectId::from_bytes_or_panic(&[9; 20])));
        assert!(cache.open(&key("big")).is_none());
    }
}
