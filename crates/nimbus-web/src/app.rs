//! The application: backends wired together, and the repository
//! administration shared by the API and the command line.

use nimbus_auth::AccessControl;
use nimbus_auth::limit::AuthLimits;
use nimbus_auth::oidc::Providers;
use nimbus_auth::session::Sessions;
use nimbus_git::maintenance::Maintainer;
use nimbus_git::service::{GitService, ServiceError};
use nimbus_types::events::EventActor;
use nimbus_types::identity::NewAuditEvent;
use nimbus_types::metadata::User;
use nimbus_types::metadata::{MetadataError, MetadataStore};
use nimbus_types::repo::validate_branch_name;
use nimbus_types::{NewRepository, Principal, RepoName, RepoUpdate, Repository, Visibility};
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
    /// Whether cookies get the `Secure` attribute (the public URL is
    /// HTTPS).
    pub secure_cookies: bool,
    /// Whether the client address is taken from `X-Forwarded-For` (set
    /// only behind a proxy that writes it).
    pub trust_forwarded_for: bool,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            public_url: None,
            max_negotiation_bytes: 100 << 20,
            max_json_bytes: 1 << 20,
            secure_cookies: false,
            trust_forwarded_for: false,
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
    /// Web sessions (cookies) and the keys that sign them.
    pub sessions: Arc<Sessions>,
    /// External identity providers (may be none).
    pub providers: Arc<Providers>,
    /// Limits on failed authentication.
    pub limits: Arc<AuthLimits>,
    /// Expensive pages (archives, diffs, history, comparisons) per
    /// anonymous client address; git traffic and signed-in users are not
    /// counted.
    pub page_limits: Arc<nimbus_auth::limit::FailureLimiter>,
    /// The last commit of each entry of listed directories (tree pages).
    pub last_commits: Arc<crate::ui::last_commits::LastCommitCache>,
    /// Publishes the outbox's events; `None` in one-shot commands (their
    /// events wait in the outbox for a server).
    pub relay: Option<Arc<nimbus_events::relay::Relay>>,
    /// Sends webhooks; `None` in one-shot commands (their deliveries wait
    /// in the database for a server).
    pub webhooks: Option<Arc<nimbus_webhooks::dispatch::Dispatcher>>,
    /// Which webhook URLs are accepted (the SSRF guard's allowlist).
    pub webhook_policy: Arc<nimbus_webhooks::guard::AddressPolicy>,
    pub config: AppConfig,
}

/// A security event for the audit log, built up by the code that saw it.
#[derive(Debug, Clone)]
pub struct Audit(NewAuditEvent);

impl Audit {
    /// An event named `action`, such as `token.created`.
    pub fn new(action: &str) -> Audit {
        Audit(NewAuditEvent {
            action: action.to_owned(),
            ..NewAuditEvent::default()
        })
    }

    /// Who did it (anonymous principals leave the actor empty).
    pub fn by(mut self, principal: &Principal) -> Audit {
        if let Principal::User {
            id, name, is_owner, ..
        } = principal
        {
            self.0.actor = Some(User {
                id: *id,
                name: name.clone(),
                is_owner: *is_owner,
            });
        }
        self
    }

    pub fn by_user(mut self, user: &User) -> Audit {
        self.0.actor = Some(user.clone());
        self
    }

    pub fn repo(mut self, name: impl std::fmt::Display) -> Audit {
        self.0.repo = Some(name.to_string());
        self
    }

    pub fn target(mut self, target: impl std::fmt::Display) -> Audit {
        self.0.target = Some(target.to_string());
        self
    }

    /// The client address, as in `RequestParts::client`.
    pub fn client(mut self, client: Option<&str>) -> Audit {
        self.0.client = client.map(str::to_owned);
        self
    }

    /// Free text; never a secret.
    pub fn detail(mut self, detail: impl Into<String>) -> Audit {
        self.0.detail = detail.into();
        self
    }
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
    /// Record a security event now. A failure to record is logged, never
    /// turned into a failed request: the action already happened.
    pub async fn audit(&self, audit: Audit) {
        let mut event = audit.0;
        event.at = now();
        if let Err(err) = self.meta.record_audit(&event).await {
            tracing::error!(error = %err, action = %event.action, "could not record an audit event");
        }
    }

    /// Create a repository; `actor` is named in its event.
    pub async fn create_repository(
        &self,
        name: RepoName,
        visibility: Visibility,
        default_branch: Option<String>,
        actor: Option<&EventActor>,
    ) -> Result<Repository, AdminError> {
        let default_branch = default_branch.unwrap_or_else(|| "main".to_owned());
        check_branch(&default_branch)?;
        let repo = self
            .meta
            .create_repository_by(
                &NewRepository {
                    name,
                    visibility,
                    default_branch,
                },
                actor,
            )
            .await?;
        tracing::info!(repo = %repo.name, visibility = %repo.visibility, "repository created");
        Ok(repo)
    }

    pub async fn update_repository(
        &self,
        repo: &Repository,
        update: RepoUpdate,
        actor: Option<&EventActor>,
    ) -> Result<Repository, AdminError> {
        if let Some(branch) = &update.default_branch {
            check_branch(branch)?;
        }
        let updated = self
            .meta
            .update_repository_by(repo.id, &update, actor)
            .await?;
        tracing::info!(repo = %updated.name, "repository updated");
        Ok(updated)
    }

    /// Delete the metadata first (the repository disappears at once), then
    /// the stored objects.
    pub async fn delete_repository(
        &self,
        repo: &Repository,
        actor: Option<&EventActor>,
    ) -> Result<(), AdminError> {
        self.meta.delete_repository_by(repo.id, actor).await?;
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

/// Who a principal is in events.
pub fn event_actor(principal: &Principal) -> Option<EventActor> {
    match principal {
        Principal::User { id, name, .. } => Some(EventActor {
            id: id.0,
            name: name.clone(),
        }),
        Principal::Anonymous => None,
    }
}

/// Unix seconds now.
pub use nimbus_types::unix_now as now;
