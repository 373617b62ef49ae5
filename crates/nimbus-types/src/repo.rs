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

/// Who may see a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Listed, and readable by anyone (anonymous users too, if the instance
    /// allows anonymous reads).
    Public,
    /// Only the owner and the repository's collaborators know it exists.
    Private,
    /// Readable like a public repository by anyone who knows its name, but
    /// listed only to the owner and its collaborators.
    Hidden,
}

impl Visibility {
    /// `public`, `private` or `hidden`, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
            Visibility::Hidden => "hidden",
        }
    }

    /// The inverse of [`Visibility::as_str`].
    pub fn parse(text: &str) -> Option<Visibility> {
        match text {
            "public" => Some(Visibility::Public),
            "private" => Some(Visibility::Private),
            "hidden" => Some(Visibility::Hidden),
            _ => None,
        }
    }

    /// The old boolean `private` field: true only for private repositories.
    pub fn from_private(private: bool) -> Visibility {
        if private {
            Visibility::Private
        } else {
            Visibility::Public
        }
    }
}

impl std::fmt::Display for Visibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repository {
    pub id: RepoId,
    pub name: RepoName,
    pub visibility: Visibility,
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
    pub visibility: Visibility,
    pub default_branch: String,
}

/// A partial change to a repository; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct RepoUpdate {
    pub name: Option<RepoName>,
    pub visibility: Option<Visibility>,
    pub default_branch: Option<String>,
}

/// Check a default branch name (the part after `refs/heads/`).
pub fn validate_branch_name(name: &str) -> Result<(), crate::RefNameError> {
    crate::RefName::new(format!("refs/heads/{name}").as_bytes()).map(|_| ())
}
