//! Repository records as the metadata store keeps them.

use crate::name::RepoName;
use serde::{Deserialize, Serialize};

/// A repository's database id. Storage keys use the id, not the name, so a
/// rename touches only metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RepoId(pub i64);

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repository {
    pub id: RepoId,
    pub name: RepoName,
    pub private: bool,
    /// The branch `HEAD` points at, without `refs/heads/`.
    pub default_branch: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last change to metadata or refs.
    pub updated_at: i64,
}

/// What is needed to create a repository.
#[derive(Debug, Clone)]
pub struct NewRepository {
    pub name: RepoName,
    pub private: bool,
    pub default_branch: String,
}

/// A partial change to a repository; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct RepoUpdate {
    pub name: Option<RepoName>,
    pub private: Option<bool>,
    pub default_branch: Option<String>,
}

/// Check a default branch name (the part after `refs/heads/`).
pub fn validate_branch_name(name: &str) -> Result<(), crate::RefNameError> {
    crate::RefName::new(format!("refs/heads/{name}").as_bytes()).map(|_| ())
}
