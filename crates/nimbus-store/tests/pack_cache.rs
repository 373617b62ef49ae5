//! The pack cache: verified downloads, a size bound with LRU eviction,
//! pinned packs, coalesced downloads and per-request snapshot directories.

use nimbus_store::{LocalObjectStore, PackCache, PackCacheError, PackLease};
use nimbus_types::RepoId;
use nimbus_types::metadata::PackRecord;
use nimbus_types::storage::{ObjectInfo, ObjectStore, ObjectStoreError, pack_key};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A local store that can hide its files (to act like a remote store) and
/// counts downloads.
struct CountingStore {
    inner: LocalObjectStore,
    expose_local_paths: bool,
    downloads: AtomicUsize,
}

impl CountingStore {
    fn new(root: PathBuf, expose_local_paths: bool) -> Self {
        CountingStore {
            inner: LocalObjectStore::new(root),
            expose_local_paths,
            downloads: AtomicUsize::new(0),
        }
    }

    fn downloads(&self) -> usize {
        self.downloads.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl ObjectStore for CountingStore {
    async fn put_file(&self, key: &str, source: &Path) -> Result<(), ObjectStoreError> {
        self.inner.put_file(key, source).await
    }
    async fn get_to_file(&self, key: &str, destination: &Path) -> Result<(), ObjectStoreError> {
        self.downloads.fetch_add(1, Ordering::SeqCst);
        // Slow enough that concurrent callers overlap.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.inner.get_to_file(key, destination).await
    }
    async fn size(&self, key: &str) -> Result<Option<u64>, ObjectStoreError> {
        self.inner.size(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectStoreError> {
        self.inner.list(prefix).await
    }
    async fn check(&self) -> Result<(), ObjectStoreError> {
        self.inner.check().await
    }
    fn local_path(&self, key: &str) -> Option<PathBuf> {
        if self.expose_local_paths {
            self.inner.local_path(key)
        } else {
            None
        }
    }
}

const REPO: RepoId = RepoId(7);

fn git(directory: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(directory)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// Incompressible bytes (xorshift), so a pack is about as big as its content.
fn noise(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A real pack made by git: one commit of `hello.txt` with `content`.
struct GitPack {
    name: String,
    pack: Vec<u8>,
    index: Vec<u8>,
    blob: String,
}

fn git_pack(scratch: &Path, label: &str, content: &[u8]) -> anyhow::Result<GitPack> {
    let work = scratch.join(format!("work-{label}"));
    std::fs::create_dir(&work)?;
    git(&work, &["init", "--quiet"])?;
    std::fs::write(work.join("hello.txt"), content)?;
    git(&work, &["add", "hello.txt"])?;
    git(&work, &["commit", "--quiet", "-m", label])?;
    git(&work, &["repack", "-a", "-d", "--quiet"])?;
    let blob = git(&work, &["rev-parse", "HEAD:hello.txt"])?;
    let pack_dir = work.join(".git/objects/pack");
    let pack_file = names_in(&pack_dir)?
        .into_iter()
        .find(|name| name.ends_with(".pack"))
        .ok_or_else(|| anyhow::anyhow!("git repack wrote no pack"))?;
    let name = pack_file.trim_end_matches(".pack").to_owned();
    Ok(GitPack {
        pack: std::fs::read(pack_dir.join(format!("{name}.pack")))?,
        index: std::fs::read(pack_dir.join(format!("{name}.idx")))?,
        name,
        blob,
    })
}

/// Put a pack's files into the store under `name` and return its record.
async fn store_files(
    store: &dyn ObjectStore,
    scratch: &Path,
    name: &str,
    pack: &[u8],
    index: &[u8],
) -> anyhow::Result<PackRecord> {
    for (extension, content) in [("pack", pack), ("idx", index)] {
        let source = scratch.join(format!("upload-{name}.{extension}"));
        std::fs::write(&source, content)?;
        store
            .put_file(&pack_key(REPO, name, extension), &source)
            .await?;
        std::fs::remove_file(&source)?;
    }
    Ok(PackRecord {
        name: name.into(),
        pack_size: pack.len() as u64,
        index_size: index.len() as u64,
        object_count: 3,
        created_at: 0,
    })
}

struct Fixture {
    _dir: tempfile::TempDir,
    scratch: PathBuf,
    cache_root: PathBuf,
    store: Arc<CountingStore>,
    cache: PackCache,
    packs_made: usize,
}

fn fixture(expose_local_paths: bool, limit_bytes: u64) -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch)?;
    let cache_root = dir.path().join("cache");
    let store = Arc::new(CountingStore::new(
        dir.path().join("store"),
        expose_local_paths,
    ));
    let cache = PackCache::new(cache_root.clone(), store.clone(), limit_bytes)?;
    Ok(Fixture {
        _dir: dir,
        scratch,
        cache_root,
        store,
        cache,
        packs_made: 0,
    })
}

impl Fixture {
    /// Make a real pack whose file is about `size` bytes and store it.
    async fn pack(&mut self, size: usize) -> anyhow::Result<(PackRecord, GitPack)> {
        self.packs_made += 1;
        let label = self.packs_made.to_string();
        let made = git_pack(&self.scratch, &label, &noise(self.packs_made as u64, size))?;
        let record = store_files(
            &*self.store,
            &self.scratch,
            &made.name,
            &made.pack,
            &made.index,
        )
        .await?;
        Ok((record, made))
    }

    /// The packs whose files are in the cache (not in snapshots).
    fn cached(&self) -> anyhow::Result<Vec<String>> {
        let directory = self.cache_root.join("packs/7");
        if !directory.exists() {
            return Ok(Vec::new());
        }
        names_in(&directory)
    }

    fn reopen(&mut self, limit_bytes: u64) -> anyhow::Result<()> {
        self.cache = PackCache::new(self.cache_root.clone(), self.store.clone(), limit_bytes)?;
        Ok(())
    }
}

fn names_in(directory: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(directory)?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<anyhow::Result<_>>()?;
    names.sort();
    Ok(names)
}

/// The snapshot directories that exist under `cache_root`, of every
/// instance (`snapshots/<instance>/<snapshot>`).
fn live_snapshots(cache_root: &Path) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(cache_root.join("snapshots"))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            for snapshot in names_in(&entry.path())? {
                found.push(format!(
                    "{}/{snapshot}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    Ok(found)
}

fn files_of(records: &[&PackRecord]) -> Vec<String> {
    let mut names: Vec<String> = records
        .iter()
        .flat_map(|record| {
            [
                format!("{}.idx", record.name),
                format!("{}.pack", record.name),
            ]
        })
        .collect();
    names.sort();
    names
}

fn snapshot_files(lease: &PackLease) -> anyhow::Result<Vec<String>> {
    names_in(&lease.objects_dir().join("pack"))
}

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn packs_from_a_local_store_are_linked_not_cached() -> anyhow::Result<()> {
    let mut f = fixture(true, MIB)?;
    let (record, made) = f.pack(1000).await?;

    let lease = f
        .cache
        .materialize(REPO, std::slice::from_ref(&record))
        .await?;
    assert_eq!(snapshot_files(&lease)?, files_of(&[&record]));
    let pack_dir = lease.objects_dir().join("pack");
    assert_eq!(
        std::fs::read(pack_dir.join(format!("{}.pack", record.name)))?,
        made.pack
    );
    assert_eq!(f.store.downloads(), 0, "linked, not downloaded");
    let stats = f.cache.stats();
    assert_eq!((stats.bytes, stats.files, stats.linked), (0, 0, 1));
    assert!(f.cached()?.is_empty(), "nothing is copied into the cache");

    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let stored = f
            .store
            .local_path(&pack_key(REPO, &record.name, "pack"))
            .expect("local store");
        assert_eq!(
            std::fs::metadata(stored)?.ino(),
            std::fs::metadata(pack_dir.join(format!("{}.pack", record.name)))?.ino()
        );
    }
    Ok(())
}

#[tokio::test]
async fn packs_from_a_remote_store_are_downloaded_once() -> anyhow::Result<()> {
    let mut f = fixture(false, MIB)?;
    let (first, made) = f.pack(1000).await?;
    let (second, _) = f.pack(1000).await?;
    let records = vec![first.clone(), second.clone()];

    let lease = f.cache.materialize(REPO, &records).await?;
    assert_eq!(f.store.downloads(), 4);
    assert_eq!(snapshot_files(&lease)?, files_of(&[&first, &second]));
    assert_eq!(
        std::fs::read(
            lease
                .objects_dir()
                .join(format!("pack/{}.pack", first.name))
        )?,
        made.pack
    );
    assert_eq!(f.cached()?, files_of(&[&first, &second]));
    let stats = f.cache.stats();
    assert_eq!(stats.misses, 2);
    assert_eq!(stats.files, 4);
    assert_eq!(
        stats.bytes,
        first.pack_size + first.index_size + second.pack_size + second.index_size
    );

    // Cached now: another snapshot downloads nothing.
    let again = f.cache.materialize(REPO, &records).await?;
    assert_eq!(f.store.downloads(), 4);
    assert_eq!(f.cache.stats().hits, 2);
    assert_ne!(
        again.objects_dir(),
        lease.objects_dir(),
        "one directory per snapshot"
    );

    // A new pack fetches only that pack.
    let (third, _) = f.pack(1000).await?;
    f.cache.materialize(REPO, &[first, second, third]).await?;
    assert_eq!(f.store.downloads(), 6);
    Ok(())
}

#[tokio::test]
async fn snapshots_hold_exactly_the_recorded_packs_and_vanish_when_dropped() -> anyhow::Result<()> {
    for expose_local_paths in [true, false] {
        let mut f = fixture(expose_local_paths, MIB)?;
        let (a, _) = f.pack(500).await?;
        let (b, _) = f.pack(500).await?;
        let (c, _) = f.pack(500).await?;
        let all = f
            .cache
            .materialize(REPO, &[a.clone(), b.clone(), c.clone()])
            .await?;
        assert_eq!(snapshot_files(&all)?, files_of(&[&a, &b, &c]));

        // B is retired (garbage collection): a later snapshot must not see
        // it, although it is still cached and in use by `all`.
        let later = f.cache.materialize(REPO, &[a.clone(), c.clone()]).await?;
        assert_eq!(snapshot_files(&later)?, files_of(&[&a, &c]));

        let empty = f.cache.materialize(REPO, &[]).await?;
        assert!(snapshot_files(&empty)?.is_empty());

        let directories = [&all, &later, &empty].map(|lease| lease.objects_dir().to_owned());
        drop((all, later, empty));
        for directory in directories {
            assert!(
                !directory.exists(),
                "{} outlived its lease",
                directory.display()
            );
        }
        assert!(live_snapshots(&f.cache_root)?.is_empty());
    }
    Ok(())
}

#[tokio::test]
async fn least_recently_used_packs_are_evicted_first() -> anyhow::Result<()> {
    let mut f = fixture(false, MIB)?;
    let (a, _) = f.pack(40_000).await?;
    let (b, _) = f.pack(40_000).await?;
    let (c, _) = f.pack(40_000).await?;
    let one = a.pack_size + a.index_size;
    // Room for two packs, not three.
    f.reopen(one * 5 / 2)?;

    drop(f.cache.materialize(REPO, std::slice::from_ref(&a)).await?);
    drop(f.cache.materialize(REPO, std::slice::from_ref(&b)).await?);
    // A is used again: B is now the least recently used.
    drop(f.cache.materialize(REPO, std::slice::from_ref(&a)).await?);
    assert_eq!(f.cache.stats().evictions, 0);
    drop(f.cache.materialize(REPO, std::slice::from_ref(&c)).await?);

    assert_eq!(f.cached()?, files_of(&[&a, &c]));
    let stats = f.cache.stats();
    assert_eq!(stats.evictions, 1);
    assert_eq!(stats.files, 4);
    assert!(stats.bytes <= one * 5 / 2);
    assert_eq!(f.store.downloads(), 6);

    // B comes back by download, evicting A (used before C).
    drop(f.cache.materialize(REPO, std::slice::from_ref(&b)).await?);
    assert_eq!(f.store.downloads(), 8);
    assert_eq!(f.cached()?, files_of(&[&b, &c]));
    Ok(())
}

#[tokio::test]
async fn packs_in_use_are_not_evicted_until_released() -> anyhow::Result<()> {
    let mut f = fixture(false, MIB)?;
    let (a, made_a) = f.pack(40_000).await?;
    let (b, _) = f.pack(40_000).await?;
    // Smaller than one pack.
    f.reopen(10_000)?;

    let lease_a = f.cache.materialize(REPO, std::slice::from_ref(&a)).await?;
    let lease_b = f.cache.materialize(REPO, std::slice::from_ref(&b)).await?;
    assert_eq!(f.cached()?, files_of(&[&a, &b]), "both are in use");
    let stats = f.cache.stats();
    assert_eq!(stats.evictions, 0);
    assert_eq!(
        stats.bytes,
        a.pack_size + a.index_size + b.pack_size + b.index_size,
        "pinned packs stay in the accounting"
    );

    // Clearing the cache leaves packs in use alone.
    f.cache.clear().await?;
    assert_eq!(f.cached()?, files_of(&[&a, &b]));
    assert_eq!(
        std::fs::read(lease_a.objects_dir().join(format!("pack/{}.pack", a.name)))?,
        made_a.pack
    );

    drop(lease_a);
    assert_eq!(f.cached()?, files_of(&[&b]), "released and over the bound");
    drop(lease_b);
    assert!(f.cached()?.is_empty());
    let stats = f.cache.stats();
    assert_eq!((stats.bytes, stats.files, stats.evictions), (0, 0, 2));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_for_one_pack_download_it_once() -> anyhow::Result<()> {
    let mut f = fixture(false, MIB)?;
    let (record, _) = f.pack(20_000).await?;
    let (other, _) = f.pack(20_000).await?;
    let cache = Arc::new(f.cache);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let cache = Arc::clone(&cache);
        let record = record.clone();
        tasks.push(tokio::spawn(async move {
            let lease = cache.materialize(REPO, &[record]).await?;
            anyhow::Ok(snapshot_files(&lease)?)
        }));
    }
    for task in tasks {
        assert_eq!(task.await??, files_of(&[&record]));
    }
    assert_eq!(f.store.downloads(), 2, "one .pack and one .idx download");

    // Two packs of a snapshot, requested together, each once.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let cache = Arc::clone(&cache);
        let records = vec![record.clone(), other.clone()];
        tasks.push(tokio::spawn(async move {
            let lease = cache.materialize(REPO, &records).await?;
            anyhow::Ok(snapshot_files(&lease)?)
        }));
    }
    for task in tasks {
        assert_eq!(task.await??, files_of(&[&record, &other]));
    }
    assert_eq!(f.store.downloads(), 4);
    assert_eq!(cache.stats().misses, 2);
    Ok(())
}

/// Overwrite the stored file `key` with `content`.
fn tamper(f: &Fixture, key: &str, content: &[u8]) -> anyhow::Result<()> {
    let path = f
        .store
        .inner
        .local_path(key)
        .ok_or_else(|| anyhow::anyhow!("local store"))?;
    std::fs::remove_file(&path)?;
    std::fs::write(&path, content)?;
    Ok(())
}

fn assert_corrupt(error: &PackCacheError, expected_key: &str) {
    assert!(
        matches!(error, PackCacheError::Corrupt { key, .. } if key == expected_key),
        "{error:?}"
    );
}

#[tokio::test]
async fn corrupt_downloads_are_refused_and_deleted() -> anyhow::Result<()> {
    let mut f = fixture(false, MIB)?;
    let (record, made) = f.pack(5000).await?;
    let pack = pack_key(REPO, &record.name, "pack");
    let index = pack_key(REPO, &record.name, "idx");

    // One flipped byte in the middle of the pack.
    let mut flipped = made.pack.clone();
    flipped[made.pack.len() / 2] ^= 0x40;
    tamper(&f, &pack, &flipped)?;
    let error = f
        .cache
        .materialize(REPO, std::slice::from_ref(&record))
        .await
        .expect_err("a corrupt pack");
    assert_corrupt(&error, &pack);
    assert!(f.cached()?.is_empty(), "nothing is left in the cache");

    // A pack whose trailer matches its content but not its name.
    let mut other = made.pack.clone();
    let (content, trailer) = other.split_at_mut(made.pack.len() - 20);
    content[content.len() / 2] ^= 0x40;
    let mut hasher = gix_hash::hasher(gix_hash::Kind::Sha1);
    hasher.update(content);
    let digest = hasher
        .try_finalize()
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    trailer.copy_from_slice(digest.as_bytes());
    tamper(&f, &pack, &other)?;
    let error = f
        .cache
        .materialize(REPO, std::slice::from_ref(&record))
        .await
        .expect_err("a pack of another name");
    assert_corrupt(&error, &pack);
    assert!(f.cached()?.is_empty());

    // A corrupt index of a good pack.
    tamper(&f, &pack, &made.pack)?;
    let mut flipped = made.index.clone();
    flipped[100] ^= 1;
    tamper(&f, &index, &flipped)?;
    let error = f
        .cache
        .materialize(REPO, std::slice::from_ref(&record))
        .await
        .expect_err("a corrupt index");
    assert_corrupt(&error, &index);
    assert!(f.cached()?.is_empty());

    // Restored, it is served.
    tamper(&f, &index, &made.index)?;
    f.cache.materialize(REPO, &[record]).await?;
    Ok(())
}

#[tokio::test]
async fn files_of_the_wrong_size_are_refused() -> anyhow::Result<()> {
    for expose_local_paths in [true, false] {
        let mut f = fixture(expose_local_paths, MIB)?;
        let (record, _) = f.pack(5000).await?;
        let mut wrong = record.clone();
        wrong.pack_size += 1;
        let error = f
            .cache
            .materialize(REPO, &[wrong])
            .await
            .expect_err("a pack of another size");
        assert_corrupt(&error, &pack_key(REPO, &record.name, "pack"));
        let mut wrong = record.clone();
        wrong.index_size -= 1;
        let error = f
            .cache
            .materialize(REPO, &[wrong])
            .await
            .expect_err("an index of another size");
        assert_corrupt(&error, &pack_key(REPO, &record.name, "idx"));
        assert!(f.cached()?.is_empty());
    }
    Ok(())
}

#[tokio::test]
async fn names_with_an_upload_suffix_are_verified_too() -> anyhow::Result<()> {
    let mut f = fixture(false, MIB)?;
    let (_, made) = f.pack(1000).await?;
    let name = format!("{}-0a1b2c3d", made.name);
    let record = store_files(&*f.store, &f.scratch, &name, &made.pack, &made.index).await?;
    let lease = f
        .cache
        .materialize(REPO, std::slice::from_ref(&record))
        .await?;
    assert_eq!(snapshot_files(&lease)?, files_of(&[&record]));

    // The same content under the name of another checksum is refused.
    let forged = format!("pack-{}", "0".repeat(40));
    let record = store_files(&*f.store, &f.scratch, &forged, &made.pack, &made.index).await?;
    let error = f
        .cache
        .materialize(REPO, &[record])
        .await
        .expect_err("the checksum differs from the name");
    assert_corrupt(&error, &pack_key(REPO, &forged, "pack"));
    Ok(())
}

#[tokio::test]
async fn a_pack_missing_from_the_store_is_an_error_and_leaves_nothing() -> anyhow::Result<()> {
    for expose_local_paths in [true, false] {
        let f = fixture(expose_local_paths, MIB)?;
        let record = PackRecord {
            name: format!("pack-{}", "ab".repeat(20)),
            pack_size: 10,
            index_size: 10,
            object_count: 1,
            created_at: 0,
        };
        let error = f
            .cache
            .materialize(REPO, &[record])
            .await
            .expect_err("the pack is not stored");
        assert!(
            matches!(
                &error,
                PackCacheError::Store { source, .. } if matches!(**source, ObjectStoreError::NotFound { .. })
            ),
            "{error:?}"
        );
        assert!(
            f.cached()?.is_empty(),
            "no partial or temporary files remain"
        );
        assert!(live_snapshots(&f.cache_root)?.is_empty());
    }
    Ok(())
}

#[tokio::test]
async fn invalid_pack_names_are_refused() -> anyhow::Result<()> {
    let f = fixture(true, MIB)?;
    for name in ["../../escape", "pack/x", "", "pack-aa"] {
        let record = PackRecord {
            name: name.into(),
            pack_size: 0,
            index_size: 0,
            object_count: 0,
            created_at: 0,
        };
        let error = f
            .cache
            .materialize(REPO, &[record])
            .await
            .expect_err("invalid name");
        assert!(
            matches!(&error, PackCacheError::InvalidPackName { name: refused } if refused == name),
            "{error:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn evicting_a_repository_removes_its_cached_packs() -> anyhow::Result<()> {
    let mut f = fixture(false, MIB)?;
    let (record, _) = f.pack(1000).await?;
    let lease = f
        .cache
        .materialize(REPO, std::slice::from_ref(&record))
        .await?;

    f.cache.evict_repo(RepoId(8)).await?;
    assert_eq!(f.cached()?, files_of(&[&record]), "other repositories stay");
    f.cache.evict_repo(REPO).await?;
    assert_eq!(
        f.cached()?,
        files_of(&[&record]),
        "in use: removed on release"
    );
    drop(lease);
    assert!(f.cached()?.is_empty());
    assert_eq!(f.cache.stats().bytes, 0);

    // Evicting twice is fine, and the repository can be materialized again.
    f.cache.evict_repo(REPO).await?;
    f.cache
        .materialize(REPO, std::slice::from_ref(&record))
        .await?;
    assert_eq!(f.store.downloads(), 4);
    // The store keeps its objects.
    assert_eq!(
        f.store.size(&pack_key(REPO, &record.name, "pack")).await?,
        Some(record.pack_size)
    );
    Ok(())
}

#[tokio::test]
async fn a_restart_keeps_the_cache_and_removes_stale_snapshots() -> anyhow::Result<()> {
    let mut f = fixture(false, MIB)?;
    let (a, _) = f.pack(40_000).await?;
    let (b, _) = f.pack(40_000).await?;
    drop(f.cache.materialize(REPO, std::slice::from_ref(&a)).await?);
    // Modification times order the rebuilt index.
    std::thread::sleep(std::time::Duration::from_millis(20));
    drop(f.cache.materialize(REPO, std::slice::from_ref(&b)).await?);
    let stale = f.cache_root.join("snapshots/snapshot-old/objects/pack");
    std::fs::create_dir_all(&stale)?;
    std::fs::write(f.cache_root.join("packs/7/.nimbus-tmp-partial"), b"half")?;
    let bytes = f.cache.stats().bytes;

    f.reopen(MIB)?;
    assert!(!f.cache_root.join("snapshots/snapshot-old").exists());
    assert_eq!(
        f.cached()?,
        files_of(&[&a, &b]),
        "temporary files are removed"
    );
    assert_eq!(f.cache.stats().bytes, bytes);
    drop(f.cache.materialize(REPO, &[a.clone(), b.clone()]).await?);
    assert_eq!(f.store.downloads(), 4, "served from the rebuilt index");

    // A smaller bound at start-up evicts the oldest first.
    f.reopen(a.pack_size + a.index_size + 1000)?;
    assert_eq!(f.cached()?, files_of(&[&b]));
    Ok(())
}

#[tokio::test]
async fn an_emptied_cache_directory_is_filled_again() -> anyhow::Result<()> {
    let mut f = fixture(false, MIB)?;
    let (record, _) = f.pack(1000).await?;
    drop(
        f.cache
            .materialize(REPO, std::slice::from_ref(&record))
            .await?,
    );
    let in_use = f
        .cache
        .materialize(REPO, std::slice::from_ref(&record))
        .await?;

    // Someone deletes the whole cache directory.
    std::fs::remove_dir_all(&f.cache_root)?;
    let lease = f
        .cache
        .materialize(REPO, std::slice::from_ref(&record))
        .await?;
    assert_eq!(snapshot_files(&lease)?, files_of(&[&record]));
    assert_eq!(f.store.downloads(), 4, "downloaded again");
    drop((in_use, lease));
    assert_eq!(f.cached()?, files_of(&[&record]));
    Ok(())
}

/// Real git is the reference: it must read objects from the snapshot.
#[tokio::test]
async fn git_reads_objects_from_a_snapshot() -> anyhow::Result<()> {
    for expose_local_paths in [true, false] {
        let mut f = fixture(expose_local_paths, MIB)?;
        let (record, made) = f.pack(1000).await?;
        let content = noise(f.packs_made as u64, 1000);
        let lease = f.cache.materialize(REPO, &[record]).await?;

        let empty = f.scratch.join("empty.git");
        git(&f.scratch, &["init", "--quiet", "--bare", "empty.git"])?;
        let output = Command::new("git")
            .args(["cat-file", "blob", &made.blob])
            .current_dir(&empty)
            .env("GIT_DIR", &empty)
            .env("GIT_OBJECT_DIRECTORY", lease.objects_dir())
            .output()?;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.stdout, content);
    }
    Ok(())
}

#[tokio::test]
async fn instances_on_one_directory_keep_each_others_snapshots() -> anyhow::Result<()> {
    let mut f = fixture(false, MIB)?;
    let (a, _) = f.pack(20_000).await?;
    let lease = f.cache.materialize(REPO, std::slice::from_ref(&a)).await?;
    // What a process that died left behind: an unlocked lock file and its
    // directory.
    let dead = f
        .cache_root
        .join("snapshots/instance-dead/snapshot-x/objects/pack");
    std::fs::create_dir_all(&dead)?;
    std::fs::write(f.cache_root.join("snapshots/instance-dead.lock"), b"")?;

    // A second instance on the same directory (`nimbus repo gc` beside a
    // running server) removes the dead one's, never the live one's.
    let second = PackCache::new(f.cache_root.clone(), f.store.clone(), MIB)?;
    assert!(!f.cache_root.join("snapshots/instance-dead").exists());
    assert!(!f.cache_root.join("snapshots/instance-dead.lock").exists());
    assert!(lease.objects_dir().join("pack").exists());
    assert_eq!(snapshot_files(&lease)?, files_of(&[&a]));
    let other = second.materialize(REPO, std::slice::from_ref(&a)).await?;
    assert_eq!(live_snapshots(&f.cache_root)?.len(), 2);

    drop((lease, other));
    assert!(live_snapshots(&f.cache_root)?.is_empty());
    // A dropped instance removes its directory and its lock file.
    drop(second);
    let instances: Vec<String> = names_in(&f.cache_root.join("snapshots"))?;
    assert_eq!(
        instances.len(),
        2,
        "only the first instance's directory and lock: {instances:?}"
    );
    Ok(())
}
