//! Authentication and authorisation for Nimbus.
//!
//! Every request, git or API, is decided by one [`AccessControl`]
//! implementation: [`AccountAccess`] authenticates personal access tokens
//! and gathers what [`policy`] needs (the user, their token's scopes, their
//! collaborator level on the repository); the rules themselves are the pure
//! functions of [`policy`]. Callers only map decisions to responses.

pub mod limit;
pub mod oidc;
pub mod password;
pub mod policy;
pub mod session;
pub mod token;

pub use policy::{Decision, InstanceAction, PolicySettings, Refusal, RepoAction, Subject, Surface};

use nimbus_types::metadata::{MetadataError, MetadataStore, NewToken};
use nimbus_types::unix_now as now;
use nimbus_types::{Principal, Repository, Scopes};
use std::sync::Arc;

/// Credentials presented with a request.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// HTTP Basic: git sends the token as the password; the user name is
    /// ignored.
    Basic { user: String, password: String },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        match self {
            Credential::Basic { user, .. } => write!(f, "Basic({user:?}, <redacted>)"),
            Credential::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl Credential {
    /// Parse an `Authorization` header value.
    pub fn from_header(value: &str) -> Result<Credential, AuthError> {
        use base64::Engine as _;
        let value = value.trim();
        let (scheme, rest) = value.split_once(' ').ok_or(AuthError::MalformedHeader)?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(Credential::Bearer(rest.trim().to_owned()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_err(|_| AuthError::MalformedHeader)?;
            let decoded = String::from_utf8(decoded).map_err(|_| AuthError::MalformedHeader)?;
            let (user, password) = decoded.split_once(':').ok_or(AuthError::MalformedHeader)?;
            return Ok(Credential::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            });
        }
        Err(AuthError::UnsupportedScheme)
    }

    fn secret(&self) -> &str {
        match self {
            Credential::Basic { password, .. } => password,
            Credential::Bearer(token) => token,
        }
    }
}

/// Why authentication failed. Messages go to the client.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the Authorization header is malformed")]
    MalformedHeader,
    #[error("only Basic and Bearer authorization are supported")]
    UnsupportedScheme,
    #[error("invalid or expired token")]
    InvalidToken,
    #[error("token expired")]
    TokenExpired,
    #[error("token revoked")]
    TokenRevoked,
    #[error("the owner token must be at least {min} characters long")]
    OwnerTokenTooShort { min: usize },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// Decides who a request comes from and what they may do.
#[async_trait::async_trait]
pub trait AccessControl: Send + Sync + 'static {
    /// Who presented `credential` (`None`: anonymous).
    async fn authenticate(&self, credential: Option<&Credential>) -> Result<Principal, AuthError>;
    /// Whether `principal` may do `action` on `repo` (`None`: it does not
    /// exist, which is answered as for a repository one may not see).
    async fn authorize_repo(
        &self,
        principal: &Principal,
        repo: Option<&Repository>,
        action: RepoAction,
        surface: Surface,
    ) -> Result<Decision, AuthError>;
    /// Whether `repo` appears in `principal`'s repository listing.
    async fn lists_repo(&self, principal: &Principal, repo: &Repository)
    -> Result<bool, AuthError>;
    /// Whether `principal` may create repositories or manage users.
    fn authorize_instance(
        &self,
        principal: &Principal,
        action: InstanceAction,
        surface: Surface,
    ) -> Decision;
    /// Whether `principal` may see and manage their own account and tokens.
    fn authorize_self(&self, principal: &Principal, surface: Surface) -> Decision;
}

/// The accounts model: the owner, collaborators with per-repository levels,
/// and scoped personal access tokens, all in the metadata store.
pub struct AccountAccess {
    meta: Arc<dyn MetadataStore>,
    settings: PolicySettings,
}

impl AccountAccess {
    pub fn new(meta: Arc<dyn MetadataStore>, settings: PolicySettings) -> Self {
        AccountAccess { meta, settings }
    }

    async fn subject(
        &self,
        principal: &Principal,
        repo: Option<&Repository>,
    ) -> Result<Subject, AuthError> {
        Ok(match principal {
            Principal::Anonymous => Subject::Anonymous,
            Principal::User {
                id,
                is_owner,
                scopes,
                ..
            } => Subject::User {
                is_owner: *is_owner,
                collaborator: match repo {
                    Some(repo) if !*is_owner => self.meta.collaborator_access(repo.id, *id).await?,
                    _ => None,
                },
                scopes: *scopes,
            },
        })
    }
}

#[async_trait::async_trait]
impl AccessControl for AccountAccess {
    async fn authenticate(&self, credential: Option<&Credential>) -> Result<Principal, AuthError> {
        let Some(credential) = credential else {
            return Ok(Principal::Anonymous);
        };
        let hash = token::hash(credential.secret());
        let Some(record) = self.meta.token_by_hash(&hash).await? else {
            return Err(AuthError::InvalidToken);
        };
        if record.revoked_at.is_some() {
            return Err(AuthError::TokenRevoked);
        }
        if record.expires_at.is_some_and(|t| t <= now()) {
            return Err(AuthError::TokenExpired);
        }
        if let Err(err) = self.meta.touch_token(record.id, now()).await {
            tracing::warn!(error = %err, "could not record token use");
        }
        Ok(Principal::User {
            id: record.user.id,
            name: record.user.name,
            is_owner: record.user.is_owner,
            scopes: record.scopes,
        })
    }

    async fn authorize_repo(
        &self,
        principal: &Principal,
        repo: Option<&Repository>,
        action: RepoAction,
        surface: Surface,
    ) -> Result<Decision, AuthError> {
        let subject = self.subject(principal, repo).await?;
        Ok(policy::decide_repo(
            self.settings,
            subject,
            repo.map(|repo| repo.visibility),
            action,
            surface,
        ))
    }

    async fn lists_repo(
        &self,
        principal: &Principal,
        repo: &Repository,
    ) -> Result<bool, AuthError> {
        let subject = self.subject(principal, Some(repo)).await?;
        Ok(policy::lists_repo(self.settings, subject, repo.visibility))
    }

    fn authorize_instance(
        &self,
        principal: &Principal,
        action: InstanceAction,
        surface: Surface,
    ) -> Decision {
        let subject = match principal {
            Principal::Anonymous => Subject::Anonymous,
            Principal::User {
                is_owner, scopes, ..
            } => Subject::User {
                is_owner: *is_owner,
                collaborator: None,
                scopes: *scopes,
            },
        };
        policy::decide_instance(subject, action, surface)
    }

    fn authorize_self(&self, principal: &Principal, surface: Surface) -> Decision {
        let subject = match principal {
            Principal::Anonymous => Subject::Anonymous,
            Principal::User {
                is_owner, scopes, ..
            } => Subject::User {
                is_owner: *is_owner,
                collaborator: None,
                scopes: *scopes,
            },
        };
        policy::decide_self(subject, surface)
    }
}

/// Why a user name is refused. Messages go to users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserNameError {
    #[error("a user name must be 1 to 64 characters long")]
    Length,
    #[error(
        "a user name may contain only ASCII letters, digits, '-', '_' and '.', and must not start with '.' or '-'"
    )]
    Characters,
}

/// Check a user name: short, ASCII, safe in URLs and logs.
pub fn validate_user_name(name: &str) -> Result<(), UserNameError> {
    if name.is_empty() || name.len() > 64 {
        return Err(UserNameError::Length);
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.chars().all(allowed) || name.starts_with(['.', '-']) {
        return Err(UserNameError::Characters);
    }
    Ok(())
}

/// A token just issued: its id and the secret, to be shown once.
#[derive(Clone)]
pub struct IssuedToken {
    pub id: i64,
    pub secret: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IssuedToken({}, <redacted>)", self.id)
    }
}

/// Create a personal access token for `user`; only its hash is stored.
pub async fn issue_token(
    meta: &dyn MetadataStore,
    user: nimbus_types::UserId,
    description: &str,
    scopes: Scopes,
    expires_at: Option<i64>,
) -> Result<IssuedToken, MetadataError> {
    let secret = token::generate();
    let id = meta
        .add_token(&NewToken {
            user,
            description: description.to_owned(),
            hash: token::hash(&secret).to_vec(),
            scopes,
            expires_at,
        })
        .await?;
    Ok(IssuedToken { id, secret })
}

/// The shortest owner token accepted from the environment.
pub const MIN_OWNER_TOKEN_LEN: usize = 20;

/// Make sure the instance has an owner. On first start the owner gets a
/// token: `preset` if given (e.g. from `NIMBUS_OWNER_TOKEN`), else a new
/// random one, which is returned so it can be printed once. A preset token
/// is also registered on later starts, so it keeps working.
pub async fn bootstrap_owner(
    meta: &dyn MetadataStore,
    preset: Option<&str>,
) -> Result<Option<String>, AuthError> {
    if let Some(preset) = preset
        && preset.len() < MIN_OWNER_TOKEN_LEN
    {
        return Err(AuthError::OwnerTokenTooShort {
            min: MIN_OWNER_TOKEN_LEN,
        });
    }
    let owner = match meta.owner().await? {
        Some(owner) => {
            let Some(preset) = preset else {
                return Ok(None);
            };
            if meta.token_by_hash(&token::hash(preset)).await?.is_some() {
                return Ok(None);
            }
            owner
        }
        None => meta.create_owner("owner").await?,
    };
    let (secret, generated) = match preset {
        Some(preset) => (preset.to_owned(), false),
        None => (token::generate(), true),
    };
    meta.add_token(&NewToken {
        user: owner.id,
        description: if generated {
            "owner bootstrap token".into()
        } else {
            "owner token from NIMBUS_OWNER_TOKEN".into()
        },
        hash: token::hash(&secret).to_vec(),
        scopes: Scopes::ALL,
        expires_at: None,
    })
    .await?;
    Ok(generated.then_some(secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_types::{RepoName, Visibility};

    #[tokio::test]
    async fn collaborator_levels_come_from_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta: Arc<dyn MetadataStore> = Arc::new(
            nimbus_store::SqliteMetadata::open(&dir.path().join("db.sqlite"))
                .await
                .expect("open"),
        );
        let repo = meta
            .create_repository(&nimbus_types::NewRepository {
                name: RepoName::new("demo").expect("valid"),
                visibility: Visibility::Private,
                default_branch: "main".into(),
            })
            .await
            .expect("create");
        let bob = meta.create_user("bob").await.expect("user");
        meta.set_collaborator(repo.id, bob.id, nimbus_types::Access::Write)
            .await
            .expect("collaborator");
        let carol = meta.create_user("carol").await.expect("user");
        let access = AccountAccess::new(meta, PolicySettings::default());
        let principal = |user: &nimbus_types::metadata::User| Principal::User {
            id: user.id,
            name: user.name.clone(),
            is_owner: false,
            scopes: Scopes::ALL,
        };
        let decide = |principal: Principal, action| {
            let access = &access;
            let repo = &repo;
            async move {
                access
                    .authorize_repo(&principal, Some(repo), action, Surface::Git)
                    .await
                    .expect("decided")
            }
        };
        assert_eq!(
            decide(principal(&bob), RepoAction::Write).await,
            Decision::Allow
        );
        assert!(matches!(
            decide(principal(&bob), RepoAction::Admin).await,
            Decision::Forbidden(Refusal::NotPermitted { .. })
        ));
        assert_eq!(
            decide(principal(&carol), RepoAction::Read).await,
            Decision::NotFound
        );
        assert_eq!(
            decide(Principal::Anonymous, RepoAction::Read).await,
            Decision::Unauthenticated
        );
    }

    #[tokio::test]
    async fn expired_and_revoked_tokens_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta: Arc<dyn MetadataStore> = Arc::new(
            nimbus_store::SqliteMetadata::open(&dir.path().join("db.sqlite"))
                .await
                .expect("open"),
        );
        let bob = meta.create_user("bob").await.expect("user");
        let add = async |secret: &str, expires_at| {
            meta.add_token(&NewToken {
                user: bob.id,
                description: secret.into(),
                hash: token::hash(secret).to_vec(),
                scopes: Scopes::parse("repo:read").expect("valid"),
                expires_at,
            })
            .await
            .expect("token")
        };
        add("expired-token", Some(1)).await;
        let revoked = add("revoked-token", None).await;
        add("good-token", Some(now() + 3600)).await;
        meta.revoke_token(bob.id, revoked, now())
            .await
            .expect("revoke");
        let access = AccountAccess::new(meta.clone(), PolicySettings::default());
        let bearer = |secret: &str| Credential::Bearer(secret.into());
        assert!(matches!(
            access.authenticate(Some(&bearer("expired-token"))).await,
            Err(AuthError::TokenExpired)
        ));
        assert!(matches!(
            access.authenticate(Some(&bearer("revoked-token"))).await,
            Err(AuthError::TokenRevoked)
        ));
        let good = access
            .authenticate(Some(&bearer("good-token")))
            .await
            .expect("valid");
        assert!(
            matches!(good, Principal::User { is_owner: false, scopes, .. } if scopes.repo_read && !scopes.api)
        );
    }

    #[tokio::test]
    async fn bootstrap_prints_a_token_once_and_keeps_a_preset_working() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = nimbus_store::SqliteMetadata::open(&dir.path().join("db.sqlite"))
            .await
            .expect("open");
        let meta: Arc<dyn MetadataStore> = Arc::new(store);
        let first = bootstrap_owner(meta.as_ref(), None)
            .await
            .expect("bootstrap");
        let token = first.expect("a new token on first start");
        assert!(
            bootstrap_owner(meta.as_ref(), None)
                .await
                .expect("again")
                .is_none()
        );
        let access = AccountAccess::new(meta.clone(), PolicySettings::default());
        let principal = access
            .authenticate(Some(&Credential::Bearer(token.clone())))
            .await
            .expect("valid token");
        assert!(matches!(principal, Principal::User { is_owner: true, .. }));
        let wrong = access
            .authenticate(Some(&Credential::Bearer(format!("{token}x"))))
            .await;
        assert!(matches!(wrong, Err(AuthError::InvalidToken)));

        let preset = "preset-owner-token-0123456789";
        assert!(
            bootstrap_owner(meta.as_ref(), Some(preset))
                .await
                .expect("preset")
                .is_none()
        );
        let basic = Credential::Basic {
            user: "anything".into(),
            password: preset.into(),
        };
        assert!(access.authenticate(Some(&basic)).await.is_ok());
        assert!(matches!(
            bootstrap_owner(meta.as_ref(), Some("short")).await,
            Err(AuthError::OwnerTokenTooShort { .. })
        ));
    }

    #[test]
    fn authorization_headers_parse() {
        let basic = Credential::from_header("Basic eDpzZWNyZXQ=").expect("valid");
        assert_eq!(
            basic,
            Credential::Basic {
                user: "x".into(),
                password: "secret".into()
            }
        );
        assert_eq!(
            Credential::from_header("bearer abc").expect("valid"),
            Credential::Bearer("abc".into())
        );
        assert!(Credential::from_header("Basic !!!").is_err());
        assert!(Credential::from_header("Digest x").is_err());
        assert!(!format!("{basic:?}").contains("secret"));
    }
}
