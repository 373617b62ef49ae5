//! The object store: where packs and their indexes live.
//!
//! A store holds immutable blobs under `/`-separated keys. Packs are written
//! once, under a name derived from their content, and never modified, which
//! is what lets any number of server processes share one store.

use crate::repo::RepoId;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's key (relative to the store, as passed to `put_file`).
    pub key: String,
    /// The object's size in bytes.
    pub size: u64,
    /// When the object was written.
    pub modified: SystemTime,
}

/// Failures of an object store backend.
#[derive(Debug, thiserror::Error)]
pub enum ObjectStoreError {
    #[error("object {key:?} does not exist in the object store")]
    NotFound { key: String },
    #[error("object store key {key:?} is not valid")]
    InvalidKey { key: String },
    #[error("object store I/O failed for {key:?}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("object store backend failed for {key:?}")]
    Backend {
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store as configured cannot be used at all (a missing bucket or
    /// directory, no permission, an unreachable endpoint); the backend's
    /// error says which.
    #[error(transparent)]
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
}

/// One backend for immutable blobs (local directory, S3, ...).
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Store the content of the local file `source` under `key`. Readers
    /// never observe a partially written object.
    async fn put_file(&self, key: &str, source: &Path) -> Result<(), ObjectStoreError>;

    /// Copy the object at `key` into the local file `destination`
    /// (created or truncated).
    async fn get_to_file(&self, key: &str, destination: &Path) -> Result<(), ObjectStoreError>;

    /// The size of the object at `key`, or `None` if it does not exist.
    async fn size(&self, key: &str) -> Result<Option<u64>, ObjectStoreError>;

    /// Remove the object at `key`; removing a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError>;

    /// All objects whose keys start with `prefix`, in no particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectStoreError>;

    /// A cheap probe that the store as configured is usable (it exists, can
    /// be reached, and objects can be written and deleted), so a bad
    /// configuration stops start-up instead of failing the first push.
    async fn check(&self) -> Result<(), ObjectStoreError>;

    /// A URL from which anyone holding it may download `key` for
    /// `valid_for` (an S3 presigned URL), or `None` when the backend has no
    /// such URLs and the server must send the object itself.
    async fn download_url(
        &self,
        _key: &str,
        _valid_for: std::time::Duration,
    ) -> Result<Option<String>, ObjectStoreError> {
        Ok(None)
    }

    /// For backends that keep objects as local files: the file holding `key`,
    /// so a cache can link it instead of copying.
    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }
}

/// The key prefix of everything stored for one repository.
pub fn repo_prefix(repo: RepoId) -> String {
    format!("repos/{}/", repo.0)
}

/// The key of a pack file (`extension` is `pack` or `idx`) of a repository.
pub fn pack_key(repo: RepoId, pack_name: &str, extension: &str) -> String {
    format!("repos/{}/pack/{pack_name}.{extension}", repo.0)
}

/// The key prefix of a repository's bundles (see `bundle_key`).
pub fn bundle_prefix(repo: RepoId) -> String {
    format!("repos/{}/bundles/", repo.0)
}

/// The key of a bundle of a repository, advertised to clones by the
/// protocol v2 `bundle-uri` command.
pub fn bundle_key(repo: RepoId, bundle_name: &str) -> String {
    format!("{}{bundle_name}.bundle", bundle_prefix(repo))
}
