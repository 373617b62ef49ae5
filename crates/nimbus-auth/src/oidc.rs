//! Sign-in through external identity providers: any OpenID Connect
//! provider (authorization code flow with PKCE, `state` and `nonce`,
//! configured by discovery from its issuer URL) through `openidconnect`,
//! and GitHub (OAuth 2 with PKCE, then its user API) through `oauth2`.
//!
//! A sign-in is a [`LoginFlow`] row keyed by the hash of its `state`: taking
//! it at the callback deletes it, so a replayed or forged callback finds
//! nothing. Provider responses are bounded by the HTTP client's timeout,
//! and redirects are never followed.
//!
//! Who may sign in is not decided here: the caller maps the returned
//! [`ExternalIdentity`] to an account through the identities table, an
//! invitation or not at all.

use crate::token;
use nimbus_types::identity::LoginFlow;
use nimbus_types::metadata::{MetadataError, MetadataStore};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// How long a started sign-in may take.
pub const FLOW_TTL: i64 = 10 * 60;
/// How long one request to a provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest user-API answer read from GitHub.
const MAX_USER_BYTES: usize = 256 << 10;

/// The kind of an identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenID Connect, configured by discovery from the issuer URL.
    Oidc { issuer: String },
    /// GitHub or GitHub Enterprise: the web URL (for `/login/oauth/...`)
    /// and the API URL (for `/user`).
    GitHub { web_url: String, api_url: String },
}

/// A configured identity provider.
#[derive(Clone)]
pub struct ProviderConfig {
    /// In URLs and the identities table: `oidc` or `github`.
    pub id: String,
    /// Shown on the sign-in page.
    pub display_name: String,
    pub kind: ProviderKind,
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

impl ProviderConfig {
    /// GitHub.com, or GitHub Enterprise at `web_url` with its API at
    /// `api_url`.
    pub fn github(
        client_id: String,
        client_secret: String,
        web_url: Option<String>,
        api_url: Option<String>,
    ) -> Self {
        ProviderConfig {
            id: "github".into(),
            display_name: "GitHub".into(),
            kind: ProviderKind::GitHub {
                web_url: web_url.unwrap_or_else(|| "https://github.com".into()),
                api_url: api_url.unwrap_or_else(|| "https://api.github.com".into()),
            },
            client_id,
            client_secret,
        }
    }
}

/// Who the provider says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    pub provider: String,
    /// The provider's stable id of the user (`sub`; GitHub's numeric id).
    pub subject: String,
    /// A user name suggestion (`preferred_username`; GitHub's login).
    pub preferred_name: Option<String>,
    pub email: Option<String>,
}

/// A completed sign-in: the identity, and the invitation it accepts.
#[derive(Debug, Clone)]
pub struct CompletedLogin {
    pub identity: ExternalIdentity,
    pub invitation_hash: Option<Vec<u8>>,
}

/// Why a sign-in failed. Messages go to users; none carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("no identity provider {0:?} is configured")]
    UnknownProvider(String),
    #[error("the identity provider could not be reached or configured: {0}")]
    Discovery(String),
    #[error("this sign-in is unknown, expired or already completed; start again")]
    UnknownState,
    #[error("this sign-in was started for another provider")]
    WrongProvider,
    #[error("the identity provider refused the sign-in: {0}")]
    Exchange(String),
    #[error("the identity provider sent no ID token")]
    NoIdToken,
    #[error("the identity provider's ID token was refused: {0}")]
    IdToken(String),
    #[error("could not read the user from the identity provider: {0}")]
    UserInfo(String),
    #[error("invalid provider configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

struct Provider {
    config: ProviderConfig,
    /// Discovered on first use and kept.
    metadata: Mutex<Option<CoreProviderMetadata>>,
}

/// The configured identity providers of an instance.
pub struct Providers {
    providers: Vec<Provider>,
    store: Arc<dyn MetadataStore>,
    http: openidconnect::reqwest::Client,
    /// The instance's public URL; callbacks are `<base>/login/<id>/callback`.
    base_url: String,
}

impl Providers {
    pub fn new(
        configs: Vec<ProviderConfig>,
        store: Arc<dyn MetadataStore>,
        base_url: &str,
    ) -> Result<Providers, OidcError> {
        let http = openidconnect::reqwest::Client::builder()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .user_agent("nimbus")
            .build()
            .map_err(|e| OidcError::Config(e.to_string()))?;
        Ok(Providers {
            providers: configs
                .into_iter()
                .map(|config| Provider {
                    config,
                    metadata: Mutex::new(None),
                })
                .collect(),
            store,
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// `(id, display name)` of each provider, for the sign-in page.
    pub fn list(&self) -> Vec<(String, String)> {
        self.providers
            .iter()
            .map(|p| (p.config.id.clone(), p.config.display_name.clone()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    fn provider(&self, id: &str) -> Result<&Provider, OidcError> {
        self.providers
            .iter()
            .find(|p| p.config.id == id)
            .ok_or_else(|| OidcError::UnknownProvider(id.to_owned()))
    }

    /// The redirect URI registered at the provider.
    pub fn callback_url(&self, id: &str) -> String {
        format!("{}/login/{id}/callback", self.base_url)
    }

    fn redirect_url(&self, id: &str) -> Result<RedirectUrl, OidcError> {
        RedirectUrl::new(self.callback_url(id)).map_err(|e| OidcError::Config(e.to_string()))
    }

    async fn metadata(&self, provider: &Provider) -> Result<CoreProviderMetadata, OidcError> {
        let ProviderKind::Oidc { issuer } = &provider.config.kind else {
            return Err(OidcError::Config("not an OpenID Connect provider".into()));
        };
        let mut cached = provider.metadata.lock().await;
        if let Some(metadata) = cached.as_ref() {
            return Ok(metadata.clone());
        }
        let issuer =
            IssuerUrl::new(issuer.clone()).map_err(|e| OidcError::Config(e.to_string()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| OidcError::Discovery(error_chain(&e)))?;
        *cached = Some(metadata.clone());
        Ok(metadata)
    }

    /// Start signing in with provider `id`: record the flow and return the
    /// provider's authorization URL and the `state`, which the caller also
    /// keeps in a cookie to bind the callback to this browser.
    pub async fn begin(
        &self,
        id: &str,
        invitation_hash: Option<Vec<u8>>,
        now: i64,
    ) -> Result<(String, String), OidcError> {
        let provider = self.provider(id)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = match &provider.config.kind {
            ProviderKind::Oidc { .. } => {
                let metadata = self.metadata(provider).await?;
                let client = CoreClient::from_provider_metadata(
                    metadata,
                    ClientId::new(provider.config.client_id.clone()),
                    Some(ClientSecret::new(provider.config.client_secret.clone())),
                )
                .set_redirect_uri(self.redirect_url(id)?);
                let (url, state, nonce) = client
                    .authorize_url(
                        CoreAuthenticationFlow::AuthorizationCode,
                        CsrfToken::new_random,
                        Nonce::new_random,
                    )
                    .add_scope(Scope::new("profile".into()))
                    .add_scope(Scope::new("email".into()))
                    .set_pkce_challenge(challenge)
                    .url();
                (url, state, nonce.secret().clone())
            }
            ProviderKind::GitHub { web_url, .. } => {
                let client = github_client(&provider.config, web_url)?
                    .set_redirect_uri(self.redirect_url(id)?);
                let (url, state) = client
                    .authorize_url(CsrfToken::new_random)
                    .add_scope(Scope::new("read:user".into()))
                    .set_pkce_challenge(challenge)
                    .url();
                (url, state, String::new())
            }
        };
        self.store
            .create_login_flow(&LoginFlow {
                state_hash: token::hash(state.secret()).to_vec(),
                provider: id.to_owned(),
                nonce,
                pkce_verifier: verifier.secret().clone(),
                invitation_hash,
                created_at: now,
                expires_at: now + FLOW_TTL,
            })
            .await?;
        Ok((url.to_string(), state.secret().clone()))
    }

    /// Finish a sign-in at its callback: take the flow of `state` (once),
    /// exchange `code` with the PKCE verifier, and check the ID token's
    /// signature, issuer, audience, expiry and nonce.
    pub async fn complete(
        &self,
        id: &str,
        state: &str,
        code: &str,
        now: i64,
    ) -> Result<CompletedLogin, OidcError> {
        let provider = self.provider(id)?;
        let flow = self
            .store
            .take_login_flow(&token::hash(state), now)
            .await?
            .ok_or(OidcError::UnknownState)?;
        if flow.provider != id {
            return Err(OidcError::WrongProvider);
        }
        let verifier = PkceCodeVerifier::new(flow.pkce_verifier.clone());
        let identity = match &provider.config.kind {
            ProviderKind::Oidc { .. } => {
                let metadata = self.metadata(provider).await?;
                let client = CoreClient::from_provider_metadata(
                    metadata,
                    ClientId::new(provider.config.client_id.clone()),
                    Some(ClientSecret::new(provider.config.client_secret.clone())),
                )
                .set_redirect_uri(self.redirect_url(id)?);
                let response = client
                    .exchange_code(AuthorizationCode::new(code.to_owned()))
                    .map_err(|e| OidcError::Config(e.to_string()))?
                    .set_pkce_verifier(verifier)
                    .request_async(&self.http)
                    .await
                    .map_err(|e| OidcError::Exchange(error_chain(&e)))?;
                let id_token = response.id_token().ok_or(OidcError::NoIdToken)?;
                let claims = id_token
                    .claims(&client.id_token_verifier(), &Nonce::new(flow.nonce.clone()))
                    .map_err(|e| OidcError::IdToken(error_chain(&e)))?;
                ExternalIdentity {
                    provider: id.to_owned(),
                    subject: claims.subject().to_string(),
                    preferred_name: claims.preferred_username().map(|name| name.to_string()),
                    email: claims.email().map(|email| email.to_string()),
                }
            }
            ProviderKind::GitHub { web_url, api_url } => {
                let client = github_client(&provider.config, web_url)?
                    .set_redirect_uri(self.redirect_url(id)?);
                let response = client
                    .exchange_code(AuthorizationCode::new(code.to_owned()))
                    .set_pkce_verifier(verifier)
                    .request_async(&self.http)
                    .await
                    .map_err(|e| OidcError::Exchange(error_chain(&e)))?;
                self.github_user(id, api_url, response.access_token().secret())
                    .await?
            }
        };
        Ok(CompletedLogin {
            identity,
            invitation_hash: flow.invitation_hash,
        })
    }

    async fn github_user(
        &self,
        id: &str,
        api_url: &str,
        access_token: &str,
    ) -> Result<ExternalIdentity, OidcError> {
        let url = format!("{}/user", api_url.trim_end_matches('/'));
        let response = self
            .http
            .get(&url)
            .bearer_auth(access_token)
            .header("Accept", "application/vnd.github+json")
            .send()
            .await
            .map_err(|e| OidcError::UserInfo(error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(OidcError::UserInfo(format!(
                "{url} answered {}",
                response.status()
            )));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| OidcError::UserInfo(error_chain(&e)))?;
        if body.len() > MAX_USER_BYTES {
            return Err(OidcError::UserInfo("the answer is too large".into()));
        }
        #[derive(serde::Deserialize)]
        struct GitHubUser {
            id: u64,
            login: String,
            email: Option<String>,
        }
        let user: GitHubUser =
            serde_json::from_slice(&body).map_err(|e| OidcError::UserInfo(e.to_string()))?;
        Ok(ExternalIdentity {
            provider: id.to_owned(),
            subject: user.id.to_string(),
            preferred_name: Some(user.login),
            email: user.email,
        })
    }
}

type GitHubClient = oauth2::basic::BasicClient<
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

fn github_client(config: &ProviderConfig, web_url: &str) -> Result<GitHubClient, OidcError> {
    let web_url = web_url.trim_end_matches('/');
    let auth = oauth2::AuthUrl::new(format!("{web_url}/login/oauth/authorize"))
        .map_err(|e| OidcError::Config(e.to_string()))?;
    let token = oauth2::TokenUrl::new(format!("{web_url}/login/oauth/access_token"))
        .map_err(|e| OidcError::Config(e.to_string()))?;
    Ok(
        oauth2::basic::BasicClient::new(oauth2::ClientId::new(config.client_id.clone()))
            .set_client_secret(oauth2::ClientSecret::new(config.client_secret.clone()))
            .set_auth_uri(auth)
            .set_token_uri(token),
    )
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
