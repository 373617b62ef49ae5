//! The local pack cache: copies (or hard links) of a repository's stored
//! packs laid out as a git object directory, so git libraries that read
//! files (`gix_odb`) can serve the repository whatever the object store is.
//!
//! Layout: `<root>/repos/<repo id>/objects/pack/<pack name>.{pack,idx}`.
//! Files appear atomically (renamed or linked into place, never written in
//! place), and a pack's `.pack` always appears before its `.idx`, because
//! readers discover packs by their index.

use nimbus_types::RepoId;
use nimbus_types::metadata::PackRecord;
use nimbus_types::storage::{ObjectStore, ObjectStoreError, pack_key};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tempfile::TempPath;

/// Names of files being written start with this; they never end in `.idx`
/// or `.pack`, so git never takes them for packs.
const TEMP_PREFIX: &str = ".nimbus-tmp-";

/// Failures of the pack cache.
#[derive(Debug, thiserror::Error)]
pub enum PackCacheError {
    #[error("pack name {name:?} is not valid")]
    InvalidPackName { name: String },
    #[error("pack cache I/O failed at {path:?}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not fetch a pack from the object store")]
    Store {
        #[source]
        source: ObjectStoreError,
    },
}

/// Materializes stored packs as local object directories.
///
/// Concurrent materializations of the same repository within this process
/// take turns, so each missing file is fetched once.
pub struct PackCache {
    root: PathBuf,
    store: Arc<dyn ObjectStore>,
    repo_locks: Mutex<HashMap<RepoId, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for PackCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackCache")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Pack names come from metadata and become file names: keep them plain.
fn is_valid_pack_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// Run blocking file system work off the async executor.
async fn blocking<T, F>(path: &Path, work: F) -> Result<T, PackCacheError>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|source| PackCacheError::Io {
            path: path.to_owned(),
            source,
        }),
        Err(join_error) if join_error.is_panic() => {
            std::panic::resume_unwind(join_error.into_panic())
        }
        Err(join_error) => Err(PackCacheError::Io {
            path: path.to_owned(),
            source: io::Error::other(join_error),
        }),
    }
}

/// Whether `path` is a file of `expected_size` bytes. Any other size means
/// the file is not the pack we were told about, and is replaced.
async fn is_in_place(path: &Path, expected_size: u64) -> Result<bool, PackCacheError> {
    match tokio::fs::metadata(path).await {
        Ok(metadata) => Ok(metadata.is_file() && metadata.len() == expected_size),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(PackCacheError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Hard-link `source` to a temporary name in `directory`.
fn link_to_temporary(source: &Path, directory: &Path) -> io::Result<TempPath> {
    let linked = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .make_in(directory, |path| std::fs::hard_link(source, path))?;
    Ok(linked.into_temp_path())
}

/// An empty temporary file in `directory`, closed so others can write it.
fn empty_temporary(directory: &Path) -> io::Result<TempPath> {
    Ok(tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(directory)?
        .into_temp_path())
}

/// Holds a repository's lock entry; dropping it forgets the entry when
/// nobody else is using it, so the map does not grow with every repository
/// ever served.
struct RepoLockHandle<'a> {
    cache: &'a PackCache,
    repo: RepoId,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for RepoLockHandle<'_> {
    fn drop(&mut self) {
        let mut locks = self
            .cache
            .repo_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // One reference in the map, one here: nobody is waiting. Clones are
        // only made while the map is locked, so this cannot race.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.repo);
        }
    }
}

impl PackCache {
    /// A cache under `root`, filled from `store`.
    pub fn new(root: PathBuf, store: Arc<dyn ObjectStore>) -> Self {
        PackCache {
            root,
            store,
            repo_locks: Mutex::new(HashMap::new()),
        }
    }

    /// The directory holding everything cached for `repo`.
    fn repo_dir(&self, repo: RepoId) -> PathBuf {
        self.root.join("repos").join(repo.0.to_string())
    }

    fn repo_lock(&self, repo: RepoId) -> RepoLockHandle<'_> {
        let mut locks = self
            .repo_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let lock = locks.entry(repo).or_default().clone();
        RepoLockHandle {
            cache: self,
            repo,
            lock,
        }
    }

    /// Make sure the `.pack` and `.idx` of every record are in the cache and
    /// return the repository's `objects` directory (which exists, with its
    /// `pack` directory, even when there are no packs).
    ///
    /// Files already present with the recorded sizes are kept; the sizes in
    /// `packs` must be the byte sizes of the stored files.
    pub async fn materialize(
        &self,
        repo: RepoId,
        packs: &[PackRecord],
    ) -> Result<PathBuf, PackCacheError> {
        if let Some(pack) = packs.iter().find(|pack| !is_valid_pack_name(&pack.name)) {
            return Err(PackCacheError::InvalidPackName {
                name: pack.name.clone(),
            });
        }
        let objects = self.repo_dir(repo).join("objects");
        let pack_dir = objects.join("pack");

        let handle = self.repo_lock(repo);
        let _guard = handle.lock.lock().await;

        tokio::fs::create_dir_all(&pack_dir)
            .await
            .map_err(|source| PackCacheError::Io {
                path: pack_dir.clone(),
                source,
            })?;
        for pack in packs {
            // The .pack first: a reader that finds the .idx expects its pack.
            self.ensure_file(repo, &pack_dir, &pack.name, "pack", pack.pack_size)
                .await?;
            self.ensure_file(repo, &pack_dir, &pack.name, "idx", pack.index_size)
                .await?;
        }
        Ok(objects)
    }

    /// Remove everything cached for `repo`, e.g. after it was deleted.
    /// Readers holding files open keep reading them.
    pub async fn evict_repo(&self, repo: RepoId) -> Result<(), PackCacheError> {
        let handle = self.repo_lock(repo);
        let _guard = handle.lock.lock().await;
        let repo_dir = self.repo_dir(repo);
        match tokio::fs::remove_dir_all(&repo_dir).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(PackCacheError::Io {
                path: repo_dir,
                source,
            }),
        }
    }

    /// Put one stored file at `<pack_dir>/<pack_name>.<extension>` unless it
    /// is there already.
    async fn ensure_file(
        &self,
        repo: RepoId,
        pack_dir: &Path,
        pack_name: &str,
        extension: &str,
        expected_size: u64,
    ) -> Result<(), PackCacheError> {
        let destination = pack_dir.join(format!("{pack_name}.{extension}"));
        if is_in_place(&destination, expected_size).await? {
            return Ok(());
        }
        let key = pack_key(repo, pack_name, extension);

        let temporary = match self.link_from_store(&key, pack_dir).await {
            Some(linked) => linked,
            None => {
                let directory = pack_dir.to_owned();
                let temporary = blocking(pack_dir, move || empty_temporary(&directory)).await?;
                self.store
                    .get_to_file(&key, &temporary)
                    .await
                    .map_err(|source| PackCacheError::Store { source })?;
                temporary
            }
        };

        let target = destination.clone();
        blocking(&destination, move || {
            temporary
                .persist(&target)
                .map_err(|persist_error| persist_error.error)
        })
        .await?;
        tracing::debug!(repo = repo.0, key, "pack file cached");
        Ok(())
    }

    /// A hard link to the store's own file, when the store has one and the
    /// link works (it does not across file systems).
    async fn link_from_store(&self, key: &str, pack_dir: &Path) -> Option<TempPath> {
        let source = self.store.local_path(key)?;
        let directory = pack_dir.to_owned();
        match blocking(pack_dir, move || link_to_temporary(&source, &directory)).await {
            Ok(linked) => Some(linked),
            Err(error) => {
                tracing::debug!(key, error = %error, "cannot link from the object store; copying");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_valid_pack_name;

    #[test]
    fn pack_names_are_plain_file_names() {
        assert!(is_valid_pack_name(
            "pack-0123456789abcdef0123456789abcdef01234567"
        ));
        for invalid in ["", "../x", "a/b", "a.b", ".nimbus-tmp-x", "pack x"] {
            assert!(!is_valid_pack_name(invalid), "{invalid:?}");
        }
    }
}
