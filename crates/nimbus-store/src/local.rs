//! An object store in a local directory: each key is a file below the root.

use nimbus_types::storage::{ObjectInfo, ObjectStore, ObjectStoreError};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// Names of files being written start with this; they are never keys, so
/// listings skip them and keys may not use it.
const TEMP_PREFIX: &str = ".nimbus-tmp-";

/// An [`ObjectStore`] keeping each object as a file under `root`, at the
/// key's `/`-separated path.
///
/// Objects are written to a temporary file in the destination directory,
/// synced, and renamed into place, so readers never see a partial object.
#[derive(Debug, Clone)]
pub struct LocalObjectStore {
    root: PathBuf,
}

impl LocalObjectStore {
    /// A store rooted at `root`. The directory is created on the first write.
    pub fn new(root: PathBuf) -> Self {
        LocalObjectStore { root }
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, ObjectStoreError> {
        if is_valid_key(key) {
            Ok(self.root.join(key))
        } else {
            Err(ObjectStoreError::InvalidKey {
                key: key.to_owned(),
            })
        }
    }
}

/// A key is a relative path of plain components: no empty, `.` or `..`
/// component, nothing that could escape the root or alias another key.
/// Every backend accepts the same keys, so a key valid in one store is
/// valid in all.
pub(crate) fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.contains('\0')
        && key.split('/').all(|component| {
            !component.is_empty()
                && component != "."
                && component != ".."
                && !component.starts_with(TEMP_PREFIX)
        })
}

/// Whether an I/O error means "there is no object here".
fn is_missing(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Run blocking file system work off the async executor.
async fn blocking<T, F>(key: &str, work: F) -> Result<T, ObjectStoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ObjectStoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join_error) if join_error.is_panic() => {
            std::panic::resume_unwind(join_error.into_panic())
        }
        Err(join_error) => Err(ObjectStoreError::Backend {
            key: key.to_owned(),
            source: Box::new(join_error),
        }),
    }
}

fn io_error(key: &str) -> impl Fn(io::Error) -> ObjectStoreError + '_ {
    move |source| ObjectStoreError::Io {
        key: key.to_owned(),
        source,
    }
}

/// Make a rename in `directory` durable.
#[cfg(unix)]
fn sync_directory(directory: &Path) -> io::Result<()> {
    File::open(directory)?.sync_all()
}

#[cfg(not(unix))]
fn sync_directory(_directory: &Path) -> io::Result<()> {
    Ok(())
}

fn put_file_blocking(key: &str, destination: &Path, source: &Path) -> Result<(), ObjectStoreError> {
    let io = io_error(key);
    let directory = destination
        .parent()
        .expect("a valid key names a file below the root");
    fs::create_dir_all(directory).map_err(&io)?;
    let mut input = File::open(source).map_err(&io)?;
    let mut temporary = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(directory)
        .map_err(&io)?;
    io::copy(&mut input, temporary.as_file_mut()).map_err(&io)?;
    temporary.as_file().sync_all().map_err(&io)?;
    temporary
        .persist(destination)
        .map_err(|persist_error| io(persist_error.error))?;
    sync_directory(directory).map_err(&io)
}

fn get_to_file_blocking(
    key: &str,
    stored: &Path,
    destination: &Path,
) -> Result<(), ObjectStoreError> {
    let io = io_error(key);
    let not_found = || ObjectStoreError::NotFound {
        key: key.to_owned(),
    };
    let mut input = match File::open(stored) {
        Ok(file) => file,
        Err(error) if is_missing(&error) => return Err(not_found()),
        Err(error) => return Err(io(error)),
    };
    if !input.metadata().map_err(&io)?.is_file() {
        return Err(not_found());
    }
    let mut output = File::create(destination).map_err(&io)?;
    io::copy(&mut input, &mut output).map_err(&io)?;
    Ok(())
}

/// Collect all files below `directory` (whose key prefix is
/// `directory_key`, empty or ending in `/`) whose keys start with `prefix`.
fn list_blocking(
    directory: &Path,
    directory_key: &str,
    prefix: &str,
    objects: &mut Vec<ObjectInfo>,
) -> io::Result<()> {
    let entries = match fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if is_missing(&error) => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        // Keys are strings; a file whose name is not UTF-8 is not ours.
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let key = format!("{directory_key}{name}");
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            let subdirectory_key = format!("{key}/");
            // Only descend where a key with the prefix can be.
            if subdirectory_key.starts_with(prefix) || prefix.starts_with(&subdirectory_key) {
                list_blocking(&entry.path(), &subdirectory_key, prefix, objects)?;
            }
        } else if file_type.is_file() && key.starts_with(prefix) {
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                // Deleted since the directory was read.
                Err(error) if is_missing(&error) => continue,
                Err(error) => return Err(error),
            };
            objects.push(ObjectInfo {
                key,
                size: metadata.len(),
                modified: metadata.modified()?,
            });
        }
    }
    Ok(())
}

/// The object directory failed [`ObjectStore::check`].
#[derive(Debug, thiserror::Error)]
#[error("the object directory {} cannot be created or written", directory.display())]
struct NotWritable {
    directory: PathBuf,
    #[source]
    source: io::Error,
}

/// Create the root if needed, then write, sync and remove a probe file in it.
fn check_blocking(root: &Path) -> io::Result<()> {
    fs::create_dir_all(root)?;
    let mut probe = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(root)?;
    io::Write::write_all(probe.as_file_mut(), b"nimbus start-up check")?;
    probe.as_file().sync_all()?;
    probe.close()
}

#[async_trait::async_trait]
impl ObjectStore for LocalObjectStore {
    async fn put_file(&self, key: &str, source: &Path) -> Result<(), ObjectStoreError> {
        let destination = self.path_of(key)?;
        let source = source.to_owned();
        let owned_key = key.to_owned();
        blocking(key, move || {
            put_file_blocking(&owned_key, &destination, &source)
        })
        .await
    }

    async fn get_to_file(&self, key: &str, destination: &Path) -> Result<(), ObjectStoreError> {
        let stored = self.path_of(key)?;
        let destination = destination.to_owned();
        let owned_key = key.to_owned();
        blocking(key, move || {
            get_to_file_blocking(&owned_key, &stored, &destination)
        })
        .await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, ObjectStoreError> {
        let stored = self.path_of(key)?;
        let owned_key = key.to_owned();
        blocking(key, move || match fs::metadata(&stored) {
            Ok(metadata) if metadata.is_file() => Ok(Some(metadata.len())),
            Ok(_) => Ok(None),
            Err(error) if is_missing(&error) => Ok(None),
            Err(error) => Err(io_error(&owned_key)(error)),
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        let stored = self.path_of(key)?;
        let owned_key = key.to_owned();
        blocking(key, move || match fs::remove_file(&stored) {
            Ok(()) => Ok(()),
            Err(error) if is_missing(&error) => Ok(()),
            Err(error) => Err(io_error(&owned_key)(error)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectStoreError> {
        let root = self.root.clone();
        let owned_prefix = prefix.to_owned();
        blocking(prefix, move || {
            let mut objects = Vec::new();
            list_blocking(&root, "", &owned_prefix, &mut objects)
                .map_err(io_error(&owned_prefix))?;
            Ok(objects)
        })
        .await
    }

    async fn check(&self) -> Result<(), ObjectStoreError> {
        let root = self.root.clone();
        blocking("", move || {
            check_blocking(&root).map_err(|source| {
                ObjectStoreError::Unavailable(Box::new(NotWritable {
                    directory: root.clone(),
                    source,
                }))
            })
        })
        .await
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path_of(key).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::is_valid_key;

    #[test]
    fn keys_are_plain_relative_paths() {
        for valid in ["a", "repos/1/pack/pack-ab.pack", "a.b/c_d-e", ".hidden/x"] {
            assert!(is_valid_key(valid), "{valid:?}");
        }
        for invalid in [
            "",
            "/abs",
            "a//b",
            "a/",
            "./a",
            "a/./b",
            "../a",
            "a/../b",
            "..",
            "a\0b",
            "a/.nimbus-tmp-123",
        ] {
            assert!(!is_valid_key(invalid), "{invalid:?}");
        }
    }
}
