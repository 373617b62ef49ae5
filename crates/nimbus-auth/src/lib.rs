//! Authentication and authorisation for Nimbus.
//!
//! This is the minimal access model of the first release: one owner, who
//! holds personal access tokens; anonymous users may read public
//! repositories. Every request, git or API, is decided by one
//! [`AccessControl`] implementation, so the full model (collaborators,
//! scopes, sessions) replaces this one without touching the callers.

pub mod token;

use nimbus_types::metadata::{MetadataError, MetadataStore, NewToken};
use nimbus_types::{Access, Principal, Repository};
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
    #[error("the owner token must be at least {min} characters long")]
    OwnerTokenTooShort { min: usize },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// The outcome of an access check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No (valid) credentials, but some would help: 401.
    Unauthenticated,
    /// Authenticated, and not allowed: 403.
    Forbidden,
}

/// Decides who a request comes from and what they may do.
#[async_trait::async_trait]
pub trait AccessControl: Send + Sync + 'static {
    /// Who presented `credential` (`None`: anonymous).
    async fn authenticate(&self, credential: Option<&Credential>) -> Result<Principal, AuthError>;
    /// Whether `principal` may use `repo` at `level`.
    fn authorize_repo(&self, principal: &Principal, repo: &Repository, level: Access) -> Decision;
    /// Whether `principal` may create repositories and change instance settings.
    fn authorize_instance(&self, principal: &Principal) -> Decision;
}

/// The single-owner access model: the owner's tokens grant everything (up
/// to the token's own level); anonymous users read public repositories.
pub struct OwnerAccess {
    meta: Arc<dyn MetadataStore>,
}

impl OwnerAccess {
    pub fn new(meta: Arc<dyn MetadataStore>) -> Self {
        OwnerAccess { meta }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[async_trait::async_trait]
impl AccessControl for OwnerAccess {
    async fn authenticate(&self, credential: Option<&Credential>) -> Result<Principal, AuthError> {
        let Some(credential) = credential else {
            return Ok(Principal::Anonymous);
        };
        let hash = token::hash(credential.secret());
        let Some(record) = self.meta.token_by_hash(&hash).await? else {
            return Err(AuthError::InvalidToken);
        };
        if record.expires_at.is_some_and(|t| t <= now()) {
            return Err(AuthError::InvalidToken);
        }
        if let Err(err) = self.meta.touch_token(record.id, now()).await {
            tracing::warn!(error = %err, "could not record token use");
        }
        Ok(Principal::User {
            id: record.user.id,
            name: record.user.name,
            is_owner: record.user.is_owner,
            token_limit: record.access,
        })
    }

    fn authorize_repo(&self, principal: &Principal, repo: &Repository, level: Access) -> Decision {
        match principal {
            Principal::Anonymous => {
                if level == Access::Read && !repo.private {
                    Decision::Allow
                } else {
                    Decision::Unauthenticated
                }
            }
            Principal::User {
                is_owner,
                token_limit,
                ..
            } => {
                let granted = if *is_owner {
                    Some(Access::Admin)
                } else if !repo.private {
                    Some(Access::Read)
                } else {
                    None
                };
                match granted {
                    Some(granted) if level <= granted && level <= *token_limit => Decision::Allow,
                    _ => Decision::Forbidden,
                }
            }
        }
    }

    fn authorize_instance(&self, principal: &Principal) -> Decision {
        match principal {
            Principal::Anonymous => Decision::Unauthenticated,
            Principal::User {
                is_owner: true,
                token_limit: Access::Admin,
                ..
            } => Decision::Allow,
            Principal::User { .. } => Decision::Forbidden,
        }
    }
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
        access: Access::Admin,
        expires_at: None,
    })
    .await?;
    Ok(generated.then_some(secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_types::{RepoId, RepoName, UserId};

    fn repo(private: bool) -> Repository {
        Repository {
            id: RepoId(1),
            name: RepoName::new("demo").expect("valid"),
            private,
            default_branch: "main".into(),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn owner(limit: Access) -> Principal {
        Principal::User {
            id: UserId(1),
            name: "owner".into(),
            is_owner: true,
            token_limit: limit,
        }
    }

    #[tokio::test]
    async fn access_matrix_of_the_single_owner_model() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta: Arc<dyn MetadataStore> = Arc::new(
            nimbus_store::SqliteMetadata::open(&dir.path().join("db.sqlite"))
                .await
                .expect("open"),
        );
        let access = OwnerAccess::new(meta);
        use Decision::*;
        let cases = [
            (Principal::Anonymous, false, Access::Read, Allow),
            (Principal::Anonymous, false, Access::Write, Unauthenticated),
            (Principal::Anonymous, true, Access::Read, Unauthenticated),
            (owner(Access::Admin), true, Access::Write, Allow),
            (owner(Access::Admin), true, Access::Admin, Allow),
            (owner(Access::Read), false, Access::Write, Forbidden),
            (owner(Access::Write), true, Access::Write, Allow),
        ];
        for (principal, private, level, expected) in cases {
            assert_eq!(
                access.authorize_repo(&principal, &repo(private), level),
                expected,
                "{principal:?} private={private} {level:?}"
            );
        }
        assert_eq!(
            access.authorize_instance(&Principal::Anonymous),
            Unauthenticated
        );
        assert_eq!(access.authorize_instance(&owner(Access::Write)), Forbidden);
        assert_eq!(access.authorize_instance(&owner(Access::Admin)), Allow);
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
        let access = OwnerAccess::new(meta.clone());
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
