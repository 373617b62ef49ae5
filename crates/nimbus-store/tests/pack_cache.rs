//! The pack cache: materializing stored packs as a local object directory.

use nimbus_store::{LocalObjectStore, PackCache, PackCacheError};
use nimbus_types::RepoId;
use nimbus_types::metadata::PackRecord;
use nimbus_types::storage::{ObjectStore, ObjectStoreError, pack_key};
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
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectStoreError> {
        self.inner.list(prefix).await
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

/// Store a fake pack (content need not be a real pack here) and return its record.
async fn store_pack(
    store: &dyn ObjectStore,
    scratch: &Path,
    name: &str,
    pack: &[u8],
    index: &[u8],
) -> anyhow::Result<PackRecord> {
    for (extension, content) in [("pack", pack), ("idx", index)] {
        let source = scratch.join(format!("{name}.{extension}"));
        std::fs::write(&source, content)?;
        store
            .put_file(&pack_key(REPO, name, extension), &source)
            .await?;
    }
    Ok(PackRecord {
        name: name.into(),
        pack_size: pack.len() as u64,
        index_size: index.len() as u64,
        object_count: 1,
        created_at: 0,
    })
}

struct Fixture {
    _dir: tempfile::TempDir,
    scratch: PathBuf,
    cache_root: PathBuf,
    store: Arc<CountingStore>,
    cache: PackCache,
}

fn fixture(expose_local_paths: bool) -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch)?;
    let cache_root = dir.path().join("cache");
    let store = Arc::new(CountingStore::new(
        dir.path().join("store"),
        expose_local_paths,
    ));
    let cache = PackCache::new(cache_root.clone(), store.clone());
    Ok(Fixture {
        _dir: dir,
        scratch,
        cache_root,
        store,
        cache,
    })
}

fn names_in(directory: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(directory)?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<anyhow::Result<_>>()?;
    names.sort();
    Ok(names)
}

#[tokio::test]
async fn packs_from_a_local_store_are_hard_linked() -> anyhow::Result<()> {
    let f = fixture(true)?;
    let record = store_pack(&*f.store, &f.scratch, "pack-aa", b"PACK data", b"index").await?;

    let objects = f
        .cache
        .materialize(REPO, std::slice::from_ref(&record))
        .await?;
    assert_eq!(objects, f.cache_root.join("repos/7/objects"));
    let pack_dir = objects.join("pack");
    assert_eq!(names_in(&pack_dir)?, ["pack-aa.idx", "pack-aa.pack"]);
    assert_eq!(std::fs::read(pack_dir.join("pack-aa.pack"))?, b"PACK data");
    assert_eq!(std::fs::read(pack_dir.join("pack-aa.idx"))?, b"index");
    assert_eq!(f.store.downloads(), 0, "linked, not downloaded");

    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let stored = f
            .store
            .local_path(&pack_key(REPO, "pack-aa", "pack"))
            .expect("local store");
        assert_eq!(
            std::fs::metadata(stored)?.ino(),
            std::fs::metadata(pack_dir.join("pack-aa.pack"))?.ino()
        );
    }
    Ok(())
}

#[tokio::test]
async fn packs_from_a_remote_store_are_downloaded_once() -> anyhow::Result<()> {
    let f = fixture(false)?;
    let records = vec![
        store_pack(&*f.store, &f.scratch, "pack-aa", b"first pack", b"idx1").await?,
        store_pack(&*f.store, &f.scratch, "pack-bb", b"second pack", b"idx2").await?,
    ];

    let objects = f.cache.materialize(REPO, &records).await?;
    assert_eq!(f.store.downloads(), 4);
    assert_eq!(
        names_in(&objects.join("pack"))?,
        ["pack-aa.idx", "pack-aa.pack", "pack-bb.idx", "pack-bb.pack"]
    );
    assert_eq!(
        std::fs::read(objects.join("pack/pack-bb.pack"))?,
        b"second pack"
    );

    // Idempotent: everything is in place already.
    assert_eq!(f.cache.materialize(REPO, &records).await?, objects);
    assert_eq!(f.store.downloads(), 4);

    // A new pack fetches only that pack.
    let mut more = records.clone();
    more.push(store_pack(&*f.store, &f.scratch, "pack-cc", b"third", b"idx3").await?);
    f.cache.materialize(REPO, &more).await?;
    assert_eq!(f.store.downloads(), 6);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_materializations_fetch_each_file_once() -> anyhow::Result<()> {
    let f = fixture(false)?;
    let records = vec![
        store_pack(&*f.store, &f.scratch, "pack-aa", b"first pack", b"idx1").await?,
        store_pack(&*f.store, &f.scratch, "pack-bb", b"second pack", b"idx2").await?,
    ];
    let cache = Arc::new(f.cache);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let cache = Arc::clone(&cache);
        let records = records.clone();
        tasks.push(tokio::spawn(async move {
            cache.materialize(REPO, &records).await
        }));
    }
    let expected = f.cache_root.join("repos/7/objects");
    for task in tasks {
        assert_eq!(task.await??, expected);
    }
    assert_eq!(f.store.downloads(), 4);
    assert_eq!(
        names_in(&expected.join("pack"))?,
        ["pack-aa.idx", "pack-aa.pack", "pack-bb.idx", "pack-bb.pack"]
    );
    Ok(())
}

#[tokio::test]
async fn a_repository_without_packs_gets_an_empty_pack_directory() -> anyhow::Result<()> {
    let f = fixture(true)?;
    let objects = f.cache.materialize(REPO, &[]).await?;
    assert!(objects.join("pack").is_dir());
    assert!(names_in(&objects.join("pack"))?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_cached_file_of_the_wrong_size_is_replaced() -> anyhow::Result<()> {
    let f = fixture(false)?;
    let record = store_pack(&*f.store, &f.scratch, "pack-aa", b"full pack", b"index").await?;
    let pack_dir = f.cache_root.join("repos/7/objects/pack");
    std::fs::create_dir_all(&pack_dir)?;
    std::fs::write(pack_dir.join("pack-aa.pack"), b"trunc")?;

    f.cache.materialize(REPO, &[record]).await?;
    assert_eq!(std::fs::read(pack_dir.join("pack-aa.pack"))?, b"full pack");
    assert_eq!(f.store.downloads(), 2);
    Ok(())
}

#[tokio::test]
async fn a_pack_missing_from_the_store_is_an_error_and_leaves_no_index() -> anyhow::Result<()> {
    for expose_local_paths in [true, false] {
        let f = fixture(expose_local_paths)?;
        let record = PackRecord {
            name: "pack-gone".into(),
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
                PackCacheError::Store {
                    source: ObjectStoreError::NotFound { .. }
                }
            ),
            "{error:?}"
        );
        let pack_dir = f.cache_root.join("repos/7/objects/pack");
        assert!(
            names_in(&pack_dir)?.is_empty(),
            "no partial or temporary files remain"
        );
    }
    Ok(())
}

#[tokio::test]
async fn invalid_pack_names_are_refused() -> anyhow::Result<()> {
    let f = fixture(true)?;
    for name in ["../../escape", "pack/x", ""] {
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
async fn evicting_a_repository_removes_its_cache() -> anyhow::Result<()> {
    let f = fixture(true)?;
    let record = store_pack(&*f.store, &f.scratch, "pack-aa", b"pack", b"idx").await?;
    let objects = f
        .cache
        .materialize(REPO, std::slice::from_ref(&record))
        .await?;
    let other = f.cache.materialize(RepoId(8), &[]).await?;

    f.cache.evict_repo(REPO).await?;
    assert!(!f.cache_root.join("repos/7").exists());
    assert!(other.is_dir(), "other repositories stay cached");
    // Evicting twice is fine, and the repository can be materialized again.
    f.cache.evict_repo(REPO).await?;
    assert_eq!(f.cache.materialize(REPO, &[record]).await?, objects);
    assert!(objects.join("pack/pack-aa.idx").is_file());
    // The store keeps its objects.
    assert_eq!(
        f.store.size(&pack_key(REPO, "pack-aa", "pack")).await?,
        Some(4)
    );
    Ok(())
}

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

/// Real git is the reference: it must read objects from the materialized
/// directory.
#[tokio::test]
async fn git_reads_objects_from_the_materialized_directory() -> anyhow::Result<()> {
    for expose_local_paths in [true, false] {
        let f = fixture(expose_local_paths)?;
        let work = f.scratch.join("work");
        std::fs::create_dir(&work)?;
        git(&work, &["init", "--quiet"])?;
        std::fs::write(work.join("hello.txt"), "hello from nimbus\n")?;
        git(&work, &["add", "hello.txt"])?;
        git(&work, &["commit", "--quiet", "-m", "first"])?;
        git(&work, &["repack", "-a", "-d", "--quiet"])?;
        let commit = git(&work, &["rev-parse", "HEAD"])?;
        let blob = git(&work, &["rev-parse", "HEAD:hello.txt"])?;

        let git_pack_dir = work.join(".git/objects/pack");
        let pack_file = names_in(&git_pack_dir)?
            .into_iter()
            .find(|name| name.ends_with(".pack"))
            .ok_or_else(|| anyhow::anyhow!("git repack wrote no pack"))?;
        let name = pack_file.trim_end_matches(".pack").to_owned();
        let pack = std::fs::read(git_pack_dir.join(format!("{name}.pack")))?;
        let index = std::fs::read(git_pack_dir.join(format!("{name}.idx")))?;
        let record = store_pack(&*f.store, &f.scratch, &name, &pack, &index).await?;

        let objects = f.cache.materialize(REPO, &[record]).await?;

        let empty = f.scratch.join("empty.git");
        git(&f.scratch, &["init", "--quiet", "--bare", "empty.git"])?;
        let output = Command::new("git")
            .args(["cat-file", "-p", &blob])
            .current_dir(&empty)
            .env("GIT_DIR", &empty)
            .env("GIT_OBJECT_DIRECTORY", &objects)
            .output()?;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.stdout, b"hello from nimbus\n");
        let output = Command::new("git")
            .args(["cat-file", "-t", &commit])
            .current_dir(&empty)
            .env("GIT_DIR", &empty)
            .env("GIT_OBJECT_DIRECTORY", &objects)
            .output()?;
        assert_eq!(output.stdout, b"commit\n");
    }
    Ok(())
}
