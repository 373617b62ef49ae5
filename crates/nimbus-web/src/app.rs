//! The application: backends wired together, and the repository
//! administration shared by the API and the command line.

use nimbus_auth::AccessControl;
use nimbus_git::maintenance::Maintainer;
use nimbus_git::service::{GitService, ServiceError};
use nimbus_types::metadata::{MetadataError, MetadataStore};
use nimbus_types::repo::validate_branch_name;
use nimbus_types::{NewRepository, RepoName, RepoUpdate, Repository, Visibility};
use std::sync::Arc;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The URL clients reach this server at (for clone URLs); when unset,
    /// it is derived from each request's `Host` header.
    pub public_url: Option<String>,
    /// The largest upload-pack request body accepted (after decompression).
    pub max_negotiation_bytes: u64,
    /// The largest JSON body accepted.
    pub max_json_bytes: u64,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            public_url: None,
            max_negotiation_bytes: 100 << 20,
            max_json_bytes: 1 << 20,
        }
    }
}

/// Everything a request may need.
pub struct App {
    pub meta: Arc<dyn MetadataStore>,
    pub git: Arc<GitService>,
    /// Background compaction after pushes; `None` in one-shot commands.
    pub maintainer: Option<Arc<Maintainer>>,
    pub access: Arc<dyn AccessControl>,
    pub config: AppConfig,
}

/// Failures of repository administration. Messages go to users.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("invalid default branch {name:?}: {reason}")]
    InvalidBranch { name: String, reason: String },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Storage(#[from] ServiceError),
}

impl App {
    pub async fn create_repository(
        &self,
        name: RepoName,
        visibility: Visibility,
        default_branch: Option<String>,
    ) -> Result<Repository, AdminError> {
        let default_branch = default_branch.unwrap_or_else(|| "main".to_owned());
        check_branch(&default_branch)?;
        let repo = self
            .meta
            .create_repository(&NewRepository {
                name,
                visibility,
                default_branch,
            })
            .await?;
        tracing::info!(repo = %repo.name, visibility = %repo.visibility, "repository created");
        Ok(repo)
    }

    pub async fn update_repository(
        &self,
        repo: &Repository,
        update: RepoUpdate,
    ) -> Result<Repository, AdminError> {
        if let Some(branch) = &update.default_branch {
            check_branch(branch)?;
        }
        let updated = self.meta.update_repository(repo.id, &update).await?;
        tracing::info!(repo = %updated.name, "repository updated");
        Ok(updated)
    }

    /// Delete the metadata first (the repository disappears at once), then
    /// the stored objects.
    pub async fn delete_repository(&self, repo: &Repository) -> Result<(), AdminError> {
        self.meta.delete_repository(repo.id).await?;
        self.git.purge(repo).await?;
        tracing::info!(repo = %repo.name, "repository deleted");
        Ok(())
    }
}

fn check_branch(name: &str) -> Result<(), AdminError> {
    validate_branch_name(name).map_err(|err| AdminError::InvalidBranch {
        name: name.to_owned(),
        reason: err.to_string(),
    })
}
