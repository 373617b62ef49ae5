//! The identity store: what signing in needs besides users and tokens:
//! password hashes, web sessions, invitations, links to external identity
//! providers, pending sign-ins at those providers, the keys that sign
//! session tokens, and the audit log. One trait, implemented by both
//! metadata backends (every [`crate::metadata::MetadataStore`] is one).
//!
//! Secrets never reach this trait: sessions, invitations and sign-in flows
//! are stored and looked up by the SHA-256 of their secret.

use crate::access::{Access, UserId};
use crate::metadata::{MetadataError, User};
use crate::repo::RepoId;

/// A web session to store. Its id travels in the signed session token; the
/// refresh secret only as its hash.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub user: UserId,
    pub refresh_hash: Vec<u8>,
    /// The anti-CSRF token of the session's forms (not a credential: it is
    /// also printed in every page's forms).
    pub csrf: String,
    pub created_at: i64,
    /// Unix seconds: the session ends then, however often it is refreshed.
    pub expires_at: i64,
}

/// A stored web session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub user: User,
    pub csrf: String,
    pub created_at: i64,
    pub refreshed_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// What presenting a refresh secret did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The secret was the current one; it is replaced by the new one.
    Rotated(SessionRecord),
    /// The secret was the one before the current one: it was used twice, so
    /// it was stolen (or a response was lost). The session is now revoked.
    Reused,
    /// Unknown session, wrong secret, expired or revoked.
    Refused,
}

/// An invitation to create an account, made by the owner.
#[derive(Debug, Clone)]
pub struct NewInvitation {
    /// SHA-256 of the secret in the invitation link.
    pub hash: Vec<u8>,
    pub created_by: UserId,
    /// The repository the new collaborator gets access to, if any.
    pub grant: Option<(RepoId, Access)>,
    pub note: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// An invitation as the owner sees it in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub id: i64,
    pub created_by: Option<String>,
    /// Repository name and level granted on acceptance.
    pub grant: Option<(String, Access)>,
    pub note: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    /// The account that accepted it.
    pub used_by: Option<String>,
    pub revoked_at: Option<i64>,
}

impl Invitation {
    /// Why the invitation can no longer be accepted at `now`, if it cannot.
    pub fn unusable(&self, now: i64) -> Option<InvitationRefusal> {
        if self.revoked_at.is_some() {
            Some(InvitationRefusal::Revoked)
        } else if self.used_at.is_some() {
            Some(InvitationRefusal::Used)
        } else if self.expires_at <= now {
            Some(InvitationRefusal::Expired)
        } else {
            None
        }
    }
}

/// The account an accepted invitation creates.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub name: String,
    /// An argon2id PHC string, for a local password.
    pub password_hash: Option<String>,
    /// `(provider, subject)`: an external identity to link.
    pub identity: Option<(String, String)>,
}

/// Why an invitation was not accepted; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvitationRefusal {
    #[error("this invitation link is not valid")]
    Unknown,
    #[error("this invitation has already been used")]
    Used,
    #[error("this invitation has expired; ask the owner for a new one")]
    Expired,
    #[error("this invitation was revoked")]
    Revoked,
    #[error("the user name {0:?} is taken; choose another")]
    NameTaken(String),
    #[error("this identity is already linked to an account; sign in instead")]
    IdentityLinked,
}

/// A sign-in started at an external provider, waiting for its callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginFlow {
    /// SHA-256 of the `state` parameter.
    pub state_hash: Vec<u8>,
    pub provider: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// SHA-256 of the invitation secret when the sign-in accepts one.
    pub invitation_hash: Option<Vec<u8>>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A key that signs session tokens, shared by every process of an instance.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    /// `EdDSA`.
    pub algorithm: String,
    /// PKCS#8 DER.
    pub private_key: Vec<u8>,
    /// The raw public key.
    pub public_key: Vec<u8>,
    pub created_at: i64,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, {}, <private>)", self.kid, self.algorithm)
    }
}

/// A security event to record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub at: i64,
    /// `None`: anonymous (a failed login names the account in `target`).
    pub actor: Option<User>,
    /// For example `login`, `login.failed`, `token.created`; see the README.
    pub action: String,
    pub repo: Option<String>,
    /// What was acted on: a user name, a token id, a ref.
    pub target: Option<String>,
    /// The client's address.
    pub client: Option<String>,
    /// Free text: never a secret.
    pub detail: String,
}

/// A recorded security event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: i64,
    pub at: i64,
    pub actor: Option<String>,
    pub action: String,
    pub repo: Option<String>,
    pub target: Option<String>,
    pub client: Option<String>,
    pub detail: String,
}

/// Which audit events to list: newest first, all filters combined.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Exact action, or a prefix ending in `.` (`token.`).
    pub action: Option<String>,
    pub actor: Option<String>,
    pub repo: Option<String>,
    /// Only events with a smaller id (paging backwards).
    pub before: Option<i64>,
    /// Only events at or after this Unix time.
    pub since: Option<i64>,
    pub limit: u32,
}

/// Storage of sessions, invitations, identities, keys and the audit log.
#[async_trait::async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, MetadataError>;
    /// A user and their password hash (argon2id PHC string), by name.
    async fn user_credentials(
        &self,
        name: &str,
    ) -> Result<Option<(User, Option<String>)>, MetadataError>;
    /// Set (or, with `None`, remove) a user's password hash.
    async fn set_password_hash(
        &self,
        user: UserId,
        hash: Option<&str>,
    ) -> Result<(), MetadataError>;

    async fn create_session(&self, session: &NewSession) -> Result<(), MetadataError>;
    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, MetadataError>;
    /// Replace the session's refresh secret if `presented` is its current
    /// hash and the session is live at `now`.
    async fn rotate_session(
        &self,
        id: &str,
        presented: &[u8],
        replacement: &[u8],
        now: i64,
    ) -> Result<Rotation, MetadataError>;
    /// `false` when there was no live session of that id.
    async fn revoke_session(&self, id: &str, now: i64) -> Result<bool, MetadataError>;
    /// Revoke every live session of a user; returns how many.
    async fn revoke_user_sessions(&self, user: UserId, now: i64) -> Result<u64, MetadataError>;

    async fn create_invitation(&self, invitation: &NewInvitation) -> Result<i64, MetadataError>;
    /// Every invitation, newest first.
    async fn list_invitations(&self) -> Result<Vec<Invitation>, MetadataError>;
    async fn invitation_by_hash(&self, hash: &[u8]) -> Result<Option<Invitation>, MetadataError>;
    /// `false` when there is no such unused invitation.
    async fn revoke_invitation(&self, id: i64, now: i64) -> Result<bool, MetadataError>;
    /// In one transaction: check the invitation is usable at `now`, create
    /// the account, mark the invitation used, grant its repository access
    /// and link the identity. On refusal nothing changes.
    async fn accept_invitation(
        &self,
        hash: &[u8],
        account: &NewAccount,
        now: i64,
    ) -> Result<Result<User, InvitationRefusal>, MetadataError>;

    async fn user_by_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<User>, MetadataError>;
    /// `false` when the identity is linked to someone already.
    async fn link_identity(
        &self,
        user: UserId,
        provider: &str,
        subject: &str,
    ) -> Result<bool, MetadataError>;
    /// A user's linked `(provider, subject)` pairs.
    async fn list_identities(&self, user: UserId) -> Result<Vec<(String, String)>, MetadataError>;
    async fn unlink_identity(
        &self,
        user: UserId,
        provider: &str,
        subject: &str,
    ) -> Result<bool, MetadataError>;

    async fn create_login_flow(&self, flow: &LoginFlow) -> Result<(), MetadataError>;
    /// Remove and return the flow of `state_hash` if it has not expired at
    /// `now`; a flow is usable once. Expired flows are removed too.
    async fn take_login_flow(
        &self,
        state_hash: &[u8],
        now: i64,
    ) -> Result<Option<LoginFlow>, MetadataError>;

    /// Every signing key, newest first.
    async fn signing_keys(&self) -> Result<Vec<SigningKey>, MetadataError>;
    /// Store a key unless one of that id exists.
    async fn add_signing_key(&self, key: &SigningKey) -> Result<(), MetadataError>;

    async fn record_audit(&self, event: &NewAuditEvent) -> Result<(), MetadataError>;
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, MetadataError>;
}
