//! The local pack cache: verified local copies of stored packs, bounded in
//! size, and per-request snapshot directories that git libraries which
//! read files (`gix_odb`) can open whatever the object store is.
//!
//! Layout under the cache root:
//! - `packs/<repo id>/<pack name>.{pack,idx}`: downloaded files, checked
//!   (size, header, SHA-1 trailers, checksum in the name) before they are
//!   renamed into place, evicted least recently used first when the total
//!   exceeds the size bound.
//! - `snapshots/<instance>/<random>/objects/pack/`: one directory per
//!   [`PackLease`], holding hard links to exactly the packs the request was
//!   given, removed when the lease drops. While a lease lives its packs are
//!   pinned: they stay in the accounting but are never evicted. Each
//!   `PackCache` (each process: a server, or a `nimbus repo` command on the
//!   same data directory) has its own `<instance>` directory and holds a
//!   lock on `snapshots/<instance>.lock` while it lives.
//!
//! When the object store keeps its files locally ([`ObjectStore::local_path`])
//! and they can be hard-linked, snapshots link the store's files directly:
//! nothing is cached, nothing counts against the bound (such a link costs no
//! space), and only sizes are checked, because the store's files were
//! verified when they were ingested. Otherwise (another file system, a
//! remote store) files are downloaded into `packs/` once, however many
//! requests want them at the same time.
//!
//! At start-up the snapshot directories of instances whose lock is free
//! (their process is gone) are removed, never those of a live process,
//! and the index of `packs/` is rebuilt from the directory (files only ever
//! appear there after verification), oldest modification time first in the
//! eviction order.

use nimbus_types::RepoId;
use nimbus_types::metadata::PackRecord;
use nimbus_types::storage::{ObjectStore, ObjectStoreError, pack_key};
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tempfile::TempPath;

/// Names of files being written start with this; they never end in `.idx`
/// or `.pack`, so git never takes them for packs.
const TEMP_PREFIX: &str = ".nimbus-tmp-";

/// How many files are downloaded from the object store at the same time.
const PARALLEL_DOWNLOADS: usize = 4;

/// How often one request retries a pack whose cached files vanished (the
/// cache directory was emptied under it) or were evicted before it could
/// pin them.
const ATTEMPTS: usize = 5;

/// The length of a SHA-1 checksum.
const CHECKSUM_LEN: usize = 20;

/// Failures of the pack cache. Clonable, because one download's outcome is
/// shared by every request that waited for it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PackCacheError {
    #[error("pack name {name:?} is not valid")]
    InvalidPackName { name: String },
    #[error("pack cache I/O failed at {path:?}")]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("could not fetch {key} from the object store")]
    Store {
        key: String,
        #[source]
        source: Arc<ObjectStoreError>,
    },
    #[error("stored file {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{key} vanished from the pack cache {ATTEMPTS} times before it could be used")]
    Thrashing { key: String },
}

impl PackCacheError {
    fn io(path: &Path, source: io::Error) -> Self {
        PackCacheError::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        }
    }

    fn corrupt(key: &str, reason: impl Into<String>) -> Self {
        PackCacheError::Corrupt {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    /// Whether a pack asked for is gone from the object store (or kept
    /// vanishing): maintenance may have replaced and deleted it since the
    /// pack list was read, so reading the list again may fix it.
    pub fn is_missing_pack(&self) -> bool {
        match self {
            PackCacheError::Store { source, .. } => {
                matches!(**source, ObjectStoreError::NotFound { .. })
            }
            PackCacheError::Thrashing { .. } => true,
            _ => false,
        }
    }

    /// Whether this is a file that disappeared under us, which a retry fixes.
    fn is_vanished_file(&self) -> bool {
        matches!(self, PackCacheError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Counters of the cache, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackCacheStats {
    /// Bytes of cached (downloaded) files, pinned ones included.
    pub bytes: u64,
    /// Number of cached files (a pack and its index are two).
    pub files: u64,
    /// Packs a request found in the cache.
    pub hits: u64,
    /// Packs downloaded into the cache.
    pub misses: u64,
    /// Packs removed to respect the size bound, by `evict_repo` or `clear`.
    pub evictions: u64,
    /// Packs linked straight from a local object store (not cached).
    pub linked: u64,
}

/// A pack of a repository: the unit of caching and eviction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PackId {
    repo: RepoId,
    name: String,
}

struct Entry {
    pack_size: u64,
    index_size: u64,
    /// Position in the use order: the smallest unpinned one is evicted first.
    last_used: u64,
    pins: usize,
    /// Tells this entry from a later one of the same pack (after the files
    /// vanished and were fetched again), so old pins do not unpin it.
    generation: u64,
    /// Remove the files when the last pin goes (`evict_repo`, `clear`).
    evict_when_unpinned: bool,
}

impl Entry {
    fn bytes(&self) -> u64 {
        self.pack_size + self.index_size
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<PackId, Entry>,
    bytes: u64,
    clock: u64,
    hits: u64,
    misses: u64,
    evictions: u64,
    linked: u64,
}

type FetchCell = Arc<tokio::sync::OnceCell<Result<(), PackCacheError>>>;

struct Shared {
    root: PathBuf,
    /// This instance's directory of snapshots (see the module docs).
    snapshots: PathBuf,
    store: Arc<dyn ObjectStore>,
    limit_bytes: u64,
    state: Mutex<State>,
    /// One cell per pack being downloaded: everybody who needs the pack
    /// meanwhile awaits the same cell instead of downloading it again.
    in_flight: Mutex<HashMap<PackId, FetchCell>>,
    downloads: tokio::sync::Semaphore,
    /// Held (locked) while this instance lives; dropped after `snapshots`
    /// is removed.
    _instance_lock: tempfile::NamedTempFile,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Err(error) = remove_dir_if_present(&self.snapshots) {
            tracing::warn!(path = %self.snapshots.display(), %error, "cannot remove the snapshot directory");
        }
    }
}

const INSTANCE_LOCK_SUFFIX: &str = ".lock";

/// Remove what dead instances left in `snapshots`: the directory of every
/// instance whose lock file can be locked, and snapshot directories of the
/// layout before instances. Directories without a lock file are left alone
/// (their instance may be about to lock).
fn remove_stale_snapshots(snapshots: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(snapshots)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("snapshot-") {
            remove_dir_if_present(&entry.path())?;
            continue;
        }
        let Some(instance) = name.strip_suffix(INSTANCE_LOCK_SUFFIX) else {
            continue;
        };
        let lock = match File::open(entry.path()) {
            Ok(lock) => lock,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        if lock.try_lock().is_ok() {
            remove_dir_if_present(&snapshots.join(instance))?;
            remove_file_if_present(&entry.path())?;
        }
    }
    Ok(())
}

/// Create and lock this instance's lock file, and create its directory.
fn new_instance(snapshots: &Path) -> io::Result<(tempfile::NamedTempFile, PathBuf)> {
    loop {
        let lock = tempfile::Builder::new()
            .prefix("instance-")
            .suffix(INSTANCE_LOCK_SUFFIX)
            .tempfile_in(snapshots)?;
        lock.as_file()
            .try_lock()
            .map_err(|error| io::Error::other(error.to_string()))?;
        // Another instance cleaning up may have taken the file for a dead
        // one's between its creation and the lock: then start again.
        if !lock.path().exists() {
            continue;
        }
        let name = lock
            .path()
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let directory = snapshots.join(name.trim_end_matches(INSTANCE_LOCK_SUFFIX));
        std::fs::create_dir_all(&directory)?;
        return Ok((lock, directory));
    }
}

/// A bounded cache of stored packs, and the snapshot directories built
/// from it. See the module documentation.
pub struct PackCache {
    shared: Arc<Shared>,
}

impl fmt::Debug for PackCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackCache")
            .field("root", &self.shared.root)
            .field("limit_bytes", &self.shared.limit_bytes)
            .finish_non_exhaustive()
    }
}

/// A request's view of a repository's packs: an `objects` directory whose
/// `pack/` holds exactly the packs it was made for. The packs stay in the
/// cache while it lives; dropping it removes the directory.
pub struct PackLease {
    snapshot_dir: PathBuf,
    objects_dir: PathBuf,
    _pins: Vec<Pin>,
}

impl fmt::Debug for PackLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackLease")
            .field("objects_dir", &self.objects_dir)
            .finish_non_exhaustive()
    }
}

impl PackLease {
    /// The `objects` directory (with its `pack/` directory) of this snapshot.
    pub fn objects_dir(&self) -> &Path {
        &self.objects_dir
    }
}

impl Drop for PackLease {
    fn drop(&mut self) {
        // Runs before the pins drop: the links go before the packs may.
        if let Err(error) = std::fs::remove_dir_all(&self.snapshot_dir)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.snapshot_dir.display(), %error, "cannot remove a pack snapshot");
        }
    }
}

/// Keeps one cached pack from being evicted.
struct Pin {
    shared: Arc<Shared>,
    id: PackId,
    generation: u64,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut state = self.shared.lock_state();
        let Some(entry) = state
            .entries
            .get_mut(&self.id)
            .filter(|entry| entry.generation == self.generation)
        else {
            return;
        };
        entry.pins = entry.pins.saturating_sub(1);
        if entry.pins == 0 && entry.evict_when_unpinned {
            self.shared.remove_entry(&mut state, &self.id);
        }
        self.shared.evict_over_limit(&mut state, None);
    }
}

/// The 20-byte checksum in a pack name: `pack-<40 hex>` or
/// `pack-<40 hex>-<suffix>` (a suffix of letters, digits, `-` and `_`
/// that makes uploads unique). Pack names become file names, so nothing
/// else is accepted.
fn checksum_of_pack_name(name: &str) -> Option<[u8; CHECKSUM_LEN]> {
    let rest = name.strip_prefix("pack-")?;
    let hex = rest.get(..2 * CHECKSUM_LEN)?;
    let suffix = &rest[2 * CHECKSUM_LEN..];
    let suffix_ok = suffix.is_empty()
        || suffix.strip_prefix('-').is_some_and(|suffix| {
            !suffix.is_empty()
                && suffix
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        });
    if !suffix_ok {
        return None;
    }
    let mut checksum = [0; CHECKSUM_LEN];
    for (byte, pair) in checksum.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        // Lower case only, as git writes them: one name, one file.
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        *byte = digit(pair[0])? * 16 + digit(pair[1])?;
    }
    Some(checksum)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Run blocking file system work off the async executor.
async fn blocking<T, F>(work: F) -> Result<T, PackCacheError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, PackCacheError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join_error) if join_error.is_panic() => {
            std::panic::resume_unwind(join_error.into_panic())
        }
        Err(join_error) => Err(PackCacheError::Io {
            path: PathBuf::new(),
            source: Arc::new(io::Error::other(join_error)),
        }),
    }
}

fn remove_file_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

fn remove_dir_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// SHA-1 of the first `length` bytes of `file`, streamed.
fn sha1_of_prefix(
    file: &mut File,
    length: u64,
    key: &str,
) -> Result<[u8; CHECKSUM_LEN], PackCacheError> {
    finish_sha1(sha1_prefix_state(file, length, key)?, key)
}

fn finish_sha1(hasher: gix_hash::Hasher, key: &str) -> Result<[u8; CHECKSUM_LEN], PackCacheError> {
    let digest = hasher
        .try_finalize()
        .map_err(|error| PackCacheError::corrupt(key, error.to_string()))?;
    let mut checksum = [0; CHECKSUM_LEN];
    checksum.copy_from_slice(digest.as_bytes());
    Ok(checksum)
}

fn read_error(key: &str, error: io::Error) -> PackCacheError {
    PackCacheError::corrupt(key, format!("cannot read it: {error}"))
}

/// Open `path` and check that it holds `expected_size` bytes.
fn open_with_size(path: &Path, expected_size: u64, key: &str) -> Result<File, PackCacheError> {
    let file = File::open(path).map_err(|error| PackCacheError::io(path, error))?;
    let size = file
        .metadata()
        .map_err(|error| PackCacheError::io(path, error))?
        .len();
    if size != expected_size {
        return Err(PackCacheError::corrupt(
            key,
            format!("it has {size} bytes, the record says {expected_size}"),
        ));
    }
    Ok(file)
}

/// A `.pack` is whole and the one named: `PACK`, version 2 or 3, and a
/// trailer that is the SHA-1 of everything before it and the checksum in
/// the pack's name.
fn verify_pack_file(
    path: &Path,
    expected_size: u64,
    checksum: &[u8; CHECKSUM_LEN],
    key: &str,
) -> Result<(), PackCacheError> {
    let mut file = open_with_size(path, expected_size, key)?;
    if expected_size < 12 + CHECKSUM_LEN as u64 {
        return Err(PackCacheError::corrupt(key, "too short for a pack"));
    }
    let mut header = [0; 12];
    file.read_exact(&mut header)
        .map_err(|error| read_error(key, error))?;
    if &header[..4] != b"PACK" {
        return Err(PackCacheError::corrupt(key, "no PACK signature"));
    }
    let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if version != 2 && version != 3 {
        return Err(PackCacheError::corrupt(
            key,
            format!("unsupported pack version {version}"),
        ));
    }
    let content = expected_size - CHECKSUM_LEN as u64;
    file.seek(SeekFrom::Start(0))
        .map_err(|error| read_error(key, error))?;
    let computed = sha1_of_prefix(&mut file, content, key)?;
    let mut trailer = [0; CHECKSUM_LEN];
    file.read_exact(&mut trailer)
        .map_err(|error| read_error(key, error))?;
    if trailer != computed {
        return Err(PackCacheError::corrupt(
            key,
            format!(
                "its content hashes to {}, its trailer says {}",
                hex(&computed),
                hex(&trailer)
            ),
        ));
    }
    if &trailer != checksum {
        return Err(PackCacheError::corrupt(
            key,
            format!("its checksum is {}, not the one in its name", hex(&trailer)),
        ));
    }
    Ok(())
}

/// A `.idx` is whole and belongs to the pack: its trailer is the SHA-1 of
/// everything before it, and the pack checksum it records (the 20 bytes
/// before that trailer) is the pack's.
fn verify_index_file(
    path: &Path,
    expected_size: u64,
    checksum: &[u8; CHECKSUM_LEN],
    key: &str,
) -> Result<(), PackCacheError> {
    let mut file = open_with_size(path, expected_size, key)?;
    if expected_size < 2 * CHECKSUM_LEN as u64 {
        return Err(PackCacheError::corrupt(key, "too short for a pack index"));
    }
    let content = expected_size - 2 * CHECKSUM_LEN as u64;
    let mut hasher_input = sha1_prefix_state(&mut file, content, key)?;
    let mut pack_checksum = [0; CHECKSUM_LEN];
    file.read_exact(&mut pack_checksum)
        .map_err(|error| read_error(key, error))?;
    hasher_input.update(&pack_checksum);
    let digest = finish_sha1(hasher_input, key)?;
    let mut trailer = [0; CHECKSUM_LEN];
    file.read_exact(&mut trailer)
        .map_err(|error| read_error(key, error))?;
    if digest != trailer {
        return Err(PackCacheError::corrupt(
            key,
            format!(
                "its content hashes to {}, its trailer says {}",
                hex(&digest),
                hex(&trailer)
            ),
        ));
    }
    if &pack_checksum != checksum {
        return Err(PackCacheError::corrupt(
            key,
            format!(
                "it indexes pack {}, not the one in its name",
                hex(&pack_checksum)
            ),
        ));
    }
    Ok(())
}

/// A SHA-1 hasher fed the first `length` bytes of `file`, streamed.
fn sha1_prefix_state(
    file: &mut File,
    length: u64,
    key: &str,
) -> Result<gix_hash::Hasher, PackCacheError> {
    let mut hasher = gix_hash::hasher(gix_hash::Kind::Sha1);
    let mut remaining = length;
    let mut buffer = vec![0; 64 * 1024];
    while remaining > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let read = file
            .read(&mut buffer[..want])
            .map_err(|error| read_error(key, error))?;
        if read == 0 {
            return Err(PackCacheError::corrupt(key, "it is shorter than its size"));
        }
        hasher.update(&buffer[..read]);
        remaining -= read as u64;
    }
    Ok(hasher)
}

/// An empty temporary file in `directory`, closed so others can write it.
fn empty_temporary(directory: &Path) -> Result<TempPath, PackCacheError> {
    Ok(tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(directory)
        .map_err(|error| PackCacheError::io(directory, error))?
        .into_temp_path())
}

/// A pack to put in a snapshot, with what its name promises.
#[derive(Clone)]
struct Wanted {
    id: PackId,
    record: PackRecord,
    checksum: [u8; CHECKSUM_LEN],
}

impl Wanted {
    fn key(&self, extension: &str) -> String {
        pack_key(self.id.repo, &self.id.name, extension)
    }
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn packs_dir(&self) -> PathBuf {
        self.root.join("packs")
    }

    fn repo_dir(&self, repo: RepoId) -> PathBuf {
        self.packs_dir().join(repo.0.to_string())
    }

    fn cached_file(&self, id: &PackId, extension: &str) -> PathBuf {
        self.repo_dir(id.repo)
            .join(format!("{}.{extension}", id.name))
    }

    /// Forget an entry and delete its files (the index first: readers find
    /// packs by their index). Called with the state locked, so no download
    /// of the same pack can be renaming files into place meanwhile.
    fn remove_entry(&self, state: &mut State, id: &PackId) {
        if let Some(entry) = state.entries.remove(id) {
            state.bytes -= entry.bytes();
            state.evictions += 1;
            for extension in ["idx", "pack"] {
                let path = self.cached_file(id, extension);
                if let Err(error) = remove_file_if_present(&path) {
                    tracing::warn!(path = %path.display(), %error, "cannot remove a cached pack file");
                }
            }
        }
    }

    /// Evict unpinned packs, least recently used first, until the total is
    /// within the bound or only pinned packs (and `keep`) are left.
    fn evict_over_limit(&self, state: &mut State, keep: Option<&PackId>) {
        while state.bytes > self.limit_bytes {
            let victim = state
                .entries
                .iter()
                .filter(|(id, entry)| entry.pins == 0 && Some(*id) != keep)
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(id, _)| id.clone());
            let Some(victim) = victim else { break };
            tracing::debug!(
                repo = victim.repo.0,
                pack = victim.name,
                "evicting a cached pack"
            );
            self.remove_entry(state, &victim);
        }
    }

    /// Pin a cached pack if it is there with the recorded sizes.
    fn try_pin(self: &Arc<Self>, wanted: &Wanted) -> Result<Option<Pin>, PackCacheError> {
        let mut state = self.lock_state();
        state.clock += 1;
        let clock = state.clock;
        let Some(entry) = state.entries.get_mut(&wanted.id) else {
            return Ok(None);
        };
        if entry.pack_size != wanted.record.pack_size
            || entry.index_size != wanted.record.index_size
        {
            // Names are checksums, so this is a bad record or a tampered
            // cache; a download replaces unpinned files.
            if entry.pins > 0 {
                return Err(PackCacheError::corrupt(
                    &wanted.key("pack"),
                    "the cached files in use have other sizes than the record",
                ));
            }
            self.remove_entry(&mut state, &wanted.id);
            return Ok(None);
        }
        entry.pins += 1;
        entry.last_used = clock;
        Ok(Some(Pin {
            shared: Arc::clone(self),
            id: wanted.id.clone(),
            generation: entry.generation,
        }))
    }

    /// Forget a pinned entry whose files vanished (the cache directory was
    /// emptied by someone else), so the next attempt downloads it again.
    fn forget_vanished(&self, id: &PackId) {
        let mut state = self.lock_state();
        if let Some(entry) = state.entries.remove(id) {
            state.bytes -= entry.bytes();
        }
    }

    /// Pin `wanted`, downloading it first if it is not cached. Concurrent
    /// callers for one pack share one download.
    async fn acquire(self: Arc<Self>, wanted: Wanted) -> Result<Pin, PackCacheError> {
        let mut downloads = 0;
        loop {
            if let Some(pin) = self.try_pin(&wanted)? {
                if downloads == 0 {
                    self.lock_state().hits += 1;
                }
                return Ok(pin);
            }
            if downloads == ATTEMPTS {
                return Err(PackCacheError::Thrashing {
                    key: wanted.key("pack"),
                });
            }
            downloads += 1;
            let cell = {
                let mut in_flight = self
                    .in_flight
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                Arc::clone(in_flight.entry(wanted.id.clone()).or_default())
            };
            let result = cell.get_or_init(|| self.download(&wanted)).await.clone();
            {
                let mut in_flight = self
                    .in_flight
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if in_flight
                    .get(&wanted.id)
                    .is_some_and(|current| Arc::ptr_eq(current, &cell))
                {
                    in_flight.remove(&wanted.id);
                }
            }
            match result {
                Ok(()) => {}
                // The cache directory was emptied during the download.
                Err(error) if error.is_vanished_file() && downloads < ATTEMPTS => {
                    tracing::info!(
                        key = wanted.key("pack"),
                        "cache directory emptied during a download; retrying"
                    );
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Download, verify and cache one pack (its `.pack`, then its `.idx`).
    async fn download(self: &Arc<Self>, wanted: &Wanted) -> Result<(), PackCacheError> {
        let _permit = self
            .downloads
            .acquire()
            .await
            .expect("the download semaphore is never closed");
        let directory = self.repo_dir(wanted.id.repo);
        let mut temporaries = Vec::new();
        for (extension, size) in [
            ("pack", wanted.record.pack_size),
            ("idx", wanted.record.index_size),
        ] {
            let key = wanted.key(extension);
            let directory = directory.clone();
            let temporary = blocking(move || {
                std::fs::create_dir_all(&directory)
                    .map_err(|error| PackCacheError::io(&directory, error))?;
                empty_temporary(&directory)
            })
            .await?;
            if let Err(source) = self.store.get_to_file(&key, &temporary).await {
                // Tell "our directory was removed under us" (retried) from
                // a failure of the store.
                if !temporary.exists() {
                    return Err(PackCacheError::io(
                        &temporary,
                        io::Error::from(io::ErrorKind::NotFound),
                    ));
                }
                return Err(PackCacheError::Store {
                    key: key.clone(),
                    source: Arc::new(source),
                });
            }
            let checksum = wanted.checksum;
            let temporary = blocking(move || {
                let verified = if extension == "pack" {
                    verify_pack_file(&temporary, size, &checksum, &key)
                } else {
                    verify_index_file(&temporary, size, &checksum, &key)
                };
                if let Err(error @ PackCacheError::Corrupt { .. }) = &verified {
                    tracing::warn!(key, %error, "refusing a downloaded pack file");
                }
                // A refused file is deleted when `temporary` drops.
                verified.map(|()| temporary)
            })
            .await?;
            temporaries.push((extension, temporary));
        }

        let shared = Arc::clone(self);
        let wanted = wanted.clone();
        blocking(move || {
            // The .pack first: a reader that finds the .idx expects its pack.
            for (extension, temporary) in temporaries {
                let target = shared.cached_file(&wanted.id, extension);
                temporary
                    .persist(&target)
                    .map_err(|error| PackCacheError::io(&target, error.error))?;
            }
            let mut state = shared.lock_state();
            state.misses += 1;
            state.clock += 1;
            let entry = Entry {
                pack_size: wanted.record.pack_size,
                index_size: wanted.record.index_size,
                last_used: state.clock,
                pins: 0,
                generation: state.clock,
                evict_when_unpinned: false,
            };
            state.bytes += entry.bytes();
            if let Some(replaced) = state.entries.insert(wanted.id.clone(), entry) {
                state.bytes -= replaced.bytes();
            }
            // The new pack is about to be pinned by its requesters: it goes
            // last, even if it alone is over the bound.
            shared.evict_over_limit(&mut state, Some(&wanted.id));
            tracing::debug!(
                repo = wanted.id.repo.0,
                pack = wanted.id.name,
                "pack cached"
            );
            Ok(())
        })
        .await
    }
}

/// Hard-link `source` to `destination`, after checking that `source` has
/// `expected_size` bytes.
fn link_with_size(
    source: &Path,
    destination: &Path,
    expected_size: u64,
    key: &str,
) -> Result<(), PackCacheError> {
    let size = std::fs::metadata(source)
        .map_err(|error| PackCacheError::io(source, error))?
        .len();
    if size != expected_size {
        return Err(PackCacheError::corrupt(
            key,
            format!("it has {size} bytes, the record says {expected_size}"),
        ));
    }
    std::fs::hard_link(source, destination).map_err(|error| PackCacheError::io(destination, error))
}

impl PackCache {
    /// A cache under `root` holding at most `limit_bytes` of downloaded
    /// files (more only while requests use them), filled from `store`.
    ///
    /// Removes snapshot directories left by processes that are gone and
    /// rebuilds the index of cached packs from `root`; this does blocking
    /// file system work, once, at start-up.
    pub fn new(
        root: PathBuf,
        store: Arc<dyn ObjectStore>,
        limit_bytes: u64,
    ) -> Result<Self, PackCacheError> {
        // The layout before snapshots; then what dead instances left.
        let old_layout = root.join("repos");
        remove_dir_if_present(&old_layout)
            .map_err(|error| PackCacheError::io(&old_layout, error))?;
        let snapshots_root = root.join("snapshots");
        std::fs::create_dir_all(&snapshots_root)
            .and_then(|()| remove_stale_snapshots(&snapshots_root))
            .map_err(|error| PackCacheError::io(&snapshots_root, error))?;
        let (instance_lock, snapshots) = new_instance(&snapshots_root)
            .map_err(|error| PackCacheError::io(&snapshots_root, error))?;
        let shared = Arc::new(Shared {
            root,
            snapshots,
            _instance_lock: instance_lock,
            store,
            limit_bytes,
            state: Mutex::new(State::default()),
            in_flight: Mutex::new(HashMap::new()),
            downloads: tokio::sync::Semaphore::new(PARALLEL_DOWNLOADS),
        });
        let mut state = shared.lock_state();
        rebuild_index(&shared, &mut state)?;
        shared.evict_over_limit(&mut state, None);
        tracing::info!(
            root = %shared.root.display(),
            limit_bytes,
            cached_bytes = state.bytes,
            cached_packs = state.entries.len(),
            "pack cache ready"
        );
        drop(state);
        Ok(PackCache { shared })
    }

    /// The counters of the cache.
    pub fn stats(&self) -> PackCacheStats {
        let state = self.shared.lock_state();
        PackCacheStats {
            bytes: state.bytes,
            files: 2 * state.entries.len() as u64,
            hits: state.hits,
            misses: state.misses,
            evictions: state.evictions,
            linked: state.linked,
        }
    }

    /// A snapshot of exactly `packs`: a fresh `objects` directory whose
    /// `pack/` holds them (the directory exists even without packs).
    /// Missing packs are downloaded and verified first; a corrupt download
    /// is deleted and reported as [`PackCacheError::Corrupt`], never served.
    ///
    /// The sizes in `packs` must be the byte sizes of the stored files.
    pub async fn materialize(
        &self,
        repo: RepoId,
        packs: &[PackRecord],
    ) -> Result<PackLease, PackCacheError> {
        let mut wanted = Vec::with_capacity(packs.len());
        for record in packs {
            let checksum = checksum_of_pack_name(&record.name).ok_or_else(|| {
                PackCacheError::InvalidPackName {
                    name: record.name.clone(),
                }
            })?;
            wanted.push(Wanted {
                id: PackId {
                    repo,
                    name: record.name.clone(),
                },
                record: record.clone(),
                checksum,
            });
        }

        let snapshots = self.shared.snapshots.clone();
        let snapshot_dir = blocking(move || {
            std::fs::create_dir_all(&snapshots)
                .map_err(|error| PackCacheError::io(&snapshots, error))?;
            let directory = tempfile::Builder::new()
                .prefix("snapshot-")
                .tempdir_in(&snapshots)
                .map_err(|error| PackCacheError::io(&snapshots, error))?
                .keep();
            let pack_dir = directory.join("objects").join("pack");
            std::fs::create_dir_all(&pack_dir)
                .map_err(|error| PackCacheError::io(&pack_dir, error))?;
            Ok(directory)
        })
        .await?;
        let mut lease = PackLease {
            objects_dir: snapshot_dir.join("objects"),
            snapshot_dir,
            _pins: Vec::new(),
        };
        let pack_dir = lease.objects_dir.join("pack");

        let mut remaining = self.link_from_store(&pack_dir, wanted).await?;
        for attempt in 0..ATTEMPTS {
            if remaining.is_empty() {
                break;
            }
            let pins = self.pin_all(&remaining).await?;
            let linked = self.link_cached(&pack_dir, &remaining).await?;
            let mut vanished = Vec::new();
            for ((wanted, pin), outcome) in remaining.into_iter().zip(pins).zip(linked) {
                match outcome {
                    Ok(()) => lease._pins.push(pin),
                    Err(error) if error.is_vanished_file() && attempt + 1 < ATTEMPTS => {
                        tracing::info!(
                            key = wanted.key("pack"),
                            "cached pack vanished; fetching it again"
                        );
                        drop(pin);
                        self.shared.forget_vanished(&wanted.id);
                        vanished.push(wanted);
                    }
                    Err(error) => return Err(error),
                }
            }
            remaining = vanished;
        }
        Ok(lease)
    }

    /// Link every pack the object store keeps as a local file straight into
    /// the snapshot; return the packs that must come through the cache.
    async fn link_from_store(
        &self,
        pack_dir: &Path,
        wanted: Vec<Wanted>,
    ) -> Result<Vec<Wanted>, PackCacheError> {
        let store = Arc::clone(&self.shared.store);
        if wanted.is_empty() || store.local_path(&wanted[0].key("pack")).is_none() {
            return Ok(wanted);
        }
        let pack_dir = pack_dir.to_owned();
        let (linked, remaining) = blocking(move || {
            let mut linked = 0;
            let mut remaining = Vec::new();
            for wanted in wanted {
                let mut outcome = Ok(());
                for (extension, size) in [
                    ("pack", wanted.record.pack_size),
                    ("idx", wanted.record.index_size),
                ] {
                    let key = wanted.key(extension);
                    let Some(source) = store.local_path(&key) else {
                        outcome = Err(None);
                        break;
                    };
                    let destination = pack_dir.join(format!("{}.{extension}", wanted.id.name));
                    match link_with_size(&source, &destination, size, &key) {
                        Ok(()) => {}
                        Err(error @ PackCacheError::Corrupt { .. }) => return Err(error),
                        Err(error) => {
                            outcome = Err(Some(error));
                            break;
                        }
                    }
                }
                match outcome {
                    Ok(()) => linked += 1,
                    Err(error) => {
                        if let Some(error) = error {
                            tracing::debug!(%error, "cannot link from the object store; downloading");
                        }
                        for extension in ["pack", "idx"] {
                            let path = pack_dir.join(format!("{}.{extension}", wanted.id.name));
                            remove_file_if_present(&path)
                                .map_err(|error| PackCacheError::io(&path, error))?;
                        }
                        remaining.push(wanted);
                    }
                }
            }
            Ok((linked, remaining))
        })
        .await?;
        self.shared.lock_state().linked += linked;
        Ok(remaining)
    }

    /// Pin every pack of `wanted`, downloading the missing ones (at most
    /// [`PARALLEL_DOWNLOADS`] files at a time across the process).
    async fn pin_all(&self, wanted: &[Wanted]) -> Result<Vec<Pin>, PackCacheError> {
        let mut pins: Vec<Option<Pin>> = Vec::with_capacity(wanted.len());
        let mut missing = Vec::new();
        for (position, wanted) in wanted.iter().enumerate() {
            let pin = self.shared.try_pin(wanted)?;
            if pin.is_some() {
                self.shared.lock_state().hits += 1;
            } else {
                missing.push(position);
            }
            pins.push(pin);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for position in missing {
            let shared = Arc::clone(&self.shared);
            let wanted = wanted[position].clone();
            tasks.spawn(async move { (position, shared.acquire(wanted).await) });
        }
        while let Some(joined) = tasks.join_next().await {
            let (position, pin) = match joined {
                Ok(done) => done,
                Err(join_error) if join_error.is_panic() => {
                    std::panic::resume_unwind(join_error.into_panic())
                }
                Err(join_error) => {
                    return Err(PackCacheError::Io {
                        path: self.shared.packs_dir(),
                        source: Arc::new(io::Error::other(join_error)),
                    });
                }
            };
            pins[position] = Some(pin?);
        }
        Ok(pins
            .into_iter()
            .map(|pin| pin.expect("every pack was pinned or failed"))
            .collect())
    }

    /// Hard-link the cached files of pinned packs into the snapshot; one
    /// outcome per pack.
    async fn link_cached(
        &self,
        pack_dir: &Path,
        wanted: &[Wanted],
    ) -> Result<Vec<Result<(), PackCacheError>>, PackCacheError> {
        let shared = Arc::clone(&self.shared);
        let pack_dir = pack_dir.to_owned();
        let wanted = wanted.to_vec();
        blocking(move || {
            // Someone may have emptied the cache directory, snapshots included.
            std::fs::create_dir_all(&pack_dir)
                .map_err(|error| PackCacheError::io(&pack_dir, error))?;
            Ok(wanted
                .iter()
                .map(|wanted| {
                    for (extension, size) in [
                        ("pack", wanted.record.pack_size),
                        ("idx", wanted.record.index_size),
                    ] {
                        let source = shared.cached_file(&wanted.id, extension);
                        let destination = pack_dir.join(format!("{}.{extension}", wanted.id.name));
                        // Left by an earlier attempt whose other file vanished.
                        remove_file_if_present(&destination)
                            .map_err(|error| PackCacheError::io(&destination, error))?;
                        link_with_size(&source, &destination, size, &wanted.key(extension))?;
                    }
                    Ok(())
                })
                .collect())
        })
        .await
    }

    /// Remove everything cached for `repo`, e.g. after it was deleted.
    /// Packs in use are removed when their last snapshot goes.
    pub async fn evict_repo(&self, repo: RepoId) -> Result<(), PackCacheError> {
        self.evict_where(move |id| id.repo == repo).await
    }

    /// Remove every cached pack; packs in use are removed when their last
    /// snapshot goes.
    pub async fn clear(&self) -> Result<(), PackCacheError> {
        self.evict_where(|_| true).await
    }

    async fn evict_where(
        &self,
        selected: impl Fn(&PackId) -> bool + Send + 'static,
    ) -> Result<(), PackCacheError> {
        let shared = Arc::clone(&self.shared);
        blocking(move || {
            let mut state = shared.lock_state();
            let ids: Vec<PackId> = state
                .entries
                .keys()
                .filter(|id| selected(id))
                .cloned()
                .collect();
            for id in ids {
                let entry = state.entries.get_mut(&id).expect("listed just now");
                if entry.pins > 0 {
                    entry.evict_when_unpinned = true;
                } else {
                    shared.remove_entry(&mut state, &id);
                }
            }
            Ok(())
        })
        .await
    }
}

/// Fill the index from `packs/<repo id>/`: complete pairs of `.pack` and
/// `.idx` with valid names are entries; temporary files, files of a
/// half-removed pack and anything unexpected are deleted.
fn rebuild_index(shared: &Shared, state: &mut State) -> Result<(), PackCacheError> {
    let packs_dir = shared.packs_dir();
    let repos = match std::fs::read_dir(&packs_dir) {
        Ok(repos) => repos,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(PackCacheError::io(&packs_dir, error)),
    };
    let mut found = Vec::new();
    for repo_entry in repos {
        let repo_entry = repo_entry.map_err(|error| PackCacheError::io(&packs_dir, error))?;
        let repo_path = repo_entry.path();
        let repo = repo_entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i64>().ok())
            .map(RepoId);
        let (Some(repo), true) = (repo, repo_path.is_dir()) else {
            tracing::warn!(path = %repo_path.display(), "removing an unexpected entry of the pack cache");
            remove_dir_if_present(&repo_path)
                .or_else(|_| remove_file_if_present(&repo_path))
                .map_err(|error| PackCacheError::io(&repo_path, error))?;
            continue;
        };
        let mut files: HashMap<String, (Option<std::fs::Metadata>, Option<std::fs::Metadata>)> =
            HashMap::new();
        let listing =
            std::fs::read_dir(&repo_path).map_err(|error| PackCacheError::io(&repo_path, error))?;
        for file in listing {
            let file = file.map_err(|error| PackCacheError::io(&repo_path, error))?;
            let path = file.path();
            let name = file.file_name().to_string_lossy().into_owned();
            let metadata = file
                .metadata()
                .map_err(|error| PackCacheError::io(&path, error))?;
            let pair = name
                .strip_suffix(".pack")
                .map(|stem| (stem, true))
                .or_else(|| name.strip_suffix(".idx").map(|stem| (stem, false)))
                .filter(|(stem, _)| checksum_of_pack_name(stem).is_some());
            match pair {
                Some((stem, is_pack)) if metadata.is_file() => {
                    let slot = files.entry(stem.to_owned()).or_default();
                    if is_pack {
                        slot.0 = Some(metadata);
                    } else {
                        slot.1 = Some(metadata);
                    }
                }
                _ => remove_file_if_present(&path)
                    .map_err(|error| PackCacheError::io(&path, error))?,
            }
        }
        for (name, pair) in files {
            let id = PackId { repo, name };
            match pair {
                (Some(pack), Some(index)) => {
                    let modified = pack.modified().ok();
                    found.push((modified, id, pack.len(), index.len()));
                }
                _ => {
                    for extension in ["idx", "pack"] {
                        let path = shared.cached_file(&id, extension);
                        remove_file_if_present(&path)
                            .map_err(|error| PackCacheError::io(&path, error))?;
                    }
                }
            }
        }
    }
    found.sort_by_key(|(modified, _, _, _)| *modified);
    for (_, id, pack_size, index_size) in found {
        state.clock += 1;
        let entry = Entry {
            pack_size,
            index_size,
            last_used: state.clock,
            pins: 0,
            generation: state.clock,
            evict_when_unpinned: false,
        };
        state.bytes += entry.bytes();
        state.entries.insert(id, entry);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::checksum_of_pack_name;

    #[test]
    fn pack_names_carry_their_checksum() {
        let hex = "0123456789abcdef0123456789abcdef01234567";
        let expected = checksum_of_pack_name(&format!("pack-{hex}")).expect("plain name");
        assert_eq!(expected[0], 0x01);
        assert_eq!(expected[19], 0x67);
        assert_eq!(
            checksum_of_pack_name(&format!("pack-{hex}-1a2b_c")),
            Some(expected),
            "an upload suffix is allowed"
        );
        for invalid in [
            String::new(),
            "../x".into(),
            "pack-aa".into(),
            format!("pack-{hex}-"),
            format!("pack-{hex}x"),
            format!("pack-{hex}-a/b"),
            format!("pack-{hex}-a.b"),
            format!("pack-{}", "g".repeat(40)),
            format!(".nimbus-tmp-{hex}"),
        ] {
            assert!(checksum_of_pack_name(&invalid).is_none(), "{invalid:?}");
        }
    }
}
