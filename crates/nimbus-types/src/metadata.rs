//! The metadata store: repositories, refs, the packs that make up each
//! repository, users and tokens. One trait, implemented for SQLite (and
//! later PostgreSQL); callers never branch on the backend.

use crate::access::{Access, Scopes, UserId};
use crate::name::RepoName;
use crate::refs::{Ref, RefUpdate};
use crate::repo::{NewRepository, RepoId, RepoUpdate, Repository};
use gix_hash::ObjectId;

/// Failures of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("repository {name:?} already exists")]
    RepositoryExists { name: String },
    #[error("repository does not exist")]
    RepositoryNotFound,
    #[error("a user named {name:?} already exists")]
    UserExists { name: String },
    #[error("user does not exist")]
    UserNotFound,
    #[error("the owner account cannot be deleted")]
    OwnerCannotBeDeleted,
    /// Garbage collection replaced the repository's packs after the push
    /// read them, so what the push was checked against may be gone; check
    /// again against the new packs and retry.
    #[error("the repository's packs were replaced by garbage collection during the push")]
    PacksReplaced,
    #[error("metadata backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A pack file recorded as part of a repository. Its name is
/// `pack-<hex of the pack checksum>-<upload id>`: the checksum identifies
/// the content, the upload id makes every upload's key its own, so deleting
/// one upload (a rejected push, garbage) never removes another's identical
/// pack. (Packs recorded before upload ids have no suffix.) The pack and its
/// index are stored under [`crate::storage::pack_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackRecord {
    pub name: String,
    pub pack_size: u64,
    pub index_size: u64,
    pub object_count: u64,
    /// Unix seconds.
    pub created_at: i64,
}

/// A push to record: packs that were uploaded completely, and the ref
/// updates they enable.
#[derive(Debug, Clone)]
pub struct PushRecord {
    pub packs: Vec<PackRecord>,
    pub updates: Vec<RefUpdate>,
    /// All updates succeed or none does.
    pub atomic: bool,
    /// The [`RepoState::pack_generation`] the push's objects were checked
    /// against; if garbage collection has moved it on, nothing is applied
    /// and [`MetadataError::PacksReplaced`] is returned.
    pub pack_generation: i64,
    /// The events of each update, in the order of `updates` (missing
    /// entries: none). The events of applied updates are written to the
    /// outbox in the push's transaction; a rolled-back push writes none.
    pub events: Vec<Vec<crate::events::Event>>,
}

/// What one request reads of a repository, in one consistent read.
#[derive(Debug, Clone, Default)]
pub struct RepoState {
    /// Sorted by name (bytewise).
    pub refs: Vec<Ref>,
    /// Oldest first.
    pub packs: Vec<PackRecord>,
    /// Incremented each time garbage collection removes objects.
    pub pack_generation: i64,
    /// Incremented by each push that moves a ref.
    pub ref_version: i64,
}

/// A change of a repository's pack list by maintenance: `remove` are
/// replaced by `add`, which holds every object of theirs that is kept
/// (`None` when nothing is: garbage collection of a repository without
/// refs).
#[derive(Debug, Clone)]
pub struct PackReplacement {
    pub remove: Vec<String>,
    pub add: Option<PackRecord>,
    /// Garbage collection dropped unreachable objects: the refs must still
    /// be at this [`RepoState::ref_version`] (what was reachable is still
    /// what is reachable), and the pack generation moves on. `None` for a
    /// compaction, which keeps every object.
    pub prune_at_ref_version: Option<i64>,
}

/// Why a [`PackReplacement`] was not applied; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplacementConflict {
    /// A pack to remove is no longer part of the repository (another
    /// maintenance run replaced it first).
    PackGone { name: String },
    /// A push moved refs since the reachability walk.
    RefsMoved,
}

/// A pack taken out of a repository by maintenance. Its files stay in the
/// object store for a grace period, for requests that still read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredPack {
    pub name: String,
    /// Unix seconds.
    pub retired_at: i64,
}

/// Why one ref update of a push was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefUpdateRejection {
    /// The ref's current value is not the expected old value: someone else
    /// moved it first.
    Stale { current: Option<ObjectId> },
    /// Another update of an atomic push failed, so this one was not applied.
    AtomicPushFailed,
    /// Objects the update needs were removed by garbage collection while
    /// the push ran (decided by the git service, never by a store).
    ObjectsRemoved,
    /// Creating the ref would make it both a file and a directory, as with
    /// `refs/heads/a` next to `refs/heads/a/b`; git refuses that.
    NameConflict { existing: bstr::BString },
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub is_owner: bool,
}

/// A token to store; only its hash is kept.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub user: UserId,
    pub description: String,
    /// SHA-256 of the secret.
    pub hash: Vec<u8>,
    /// What the token may be used for.
    pub scopes: Scopes,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

/// A stored token, looked up by the hash of a presented secret.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: i64,
    pub user: User,
    pub scopes: Scopes,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Unix seconds; a revoked token is kept (listed) but never accepted.
    pub revoked_at: Option<i64>,
}

/// A token as its user sees it in a listing: never the secret or its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: i64,
    pub description: String,
    pub scopes: Scopes,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A user's access to one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collaborator {
    pub user: User,
    pub access: Access,
}

/// One backend for all metadata; it stores identities too.
#[async_trait::async_trait]
pub trait MetadataStore:
    crate::identity::IdentityStore + crate::webhooks::WebhookStore + Send + Sync + 'static
{
    /// Create a repository; fails with [`MetadataError::RepositoryExists`]
    /// when the name is taken.
    async fn create_repository(&self, new: &NewRepository) -> Result<Repository, MetadataError> {
        self.create_repository_by(new, None).await
    }
    /// Create a repository for `actor`, with its `repository.created`
    /// event in the same transaction.
    async fn create_repository_by(
        &self,
        new: &NewRepository,
        actor: Option<&crate::events::EventActor>,
    ) -> Result<Repository, MetadataError>;
    async fn repository(&self, name: &RepoName) -> Result<Option<Repository>, MetadataError>;
    async fn list_repositories(&self) -> Result<Vec<Repository>, MetadataError>;
    async fn update_repository(
        &self,
        id: RepoId,
        update: &RepoUpdate,
    ) -> Result<Repository, MetadataError> {
        self.update_repository_by(id, update, None).await
    }
    /// Update a repository for `actor`; a rename writes its
    /// `repository.renamed` event in the same transaction.
    async fn update_repository_by(
        &self,
        id: RepoId,
        update: &RepoUpdate,
        actor: Option<&crate::events::EventActor>,
    ) -> Result<Repository, MetadataError>;
    /// Delete the repository and its refs and pack records. The caller
    /// removes the stored objects afterwards.
    async fn delete_repository(&self, id: RepoId) -> Result<(), MetadataError> {
        self.delete_repository_by(id, None).await
    }
    /// Delete a repository for `actor`, with its `repository.deleted` event
    /// in the same transaction.
    async fn delete_repository_by(
        &self,
        id: RepoId,
        actor: Option<&crate::events::EventActor>,
    ) -> Result<(), MetadataError>;

    /// All refs of a repository, sorted by name (bytewise).
    async fn refs(&self, repo: RepoId) -> Result<Vec<Ref>, MetadataError>;
    /// The packs that make up a repository, oldest first.
    async fn packs(&self, repo: RepoId) -> Result<Vec<PackRecord>, MetadataError>;
    /// Refs, packs and counters of a repository, read in one transaction.
    async fn repo_state(&self, repo: RepoId) -> Result<RepoState, MetadataError>;

    /// Replace packs (compaction, garbage collection) in one transaction;
    /// the removed packs become retired packs as of `now` (Unix seconds).
    async fn replace_packs(
        &self,
        repo: RepoId,
        replacement: &PackReplacement,
        now: i64,
    ) -> Result<Result<(), ReplacementConflict>, MetadataError>;
    /// Retired packs of a repository, oldest first.
    async fn retired_packs(&self, repo: RepoId) -> Result<Vec<RetiredPack>, MetadataError>;
    /// Forget a retired pack once its files are deleted.
    async fn forget_retired_pack(&self, repo: RepoId, name: &str) -> Result<(), MetadataError>;

    /// Record the packs of a push and apply its ref updates, each a
    /// compare-and-swap, in one transaction. Returns one outcome per update,
    /// in order. The packs are recorded only if at least one update is
    /// applied; an atomic push applies all or none.
    async fn apply_push(
        &self,
        repo: RepoId,
        push: &PushRecord,
    ) -> Result<Vec<Result<(), RefUpdateRejection>>, MetadataError>;

    /// The instance owner, if bootstrapped.
    async fn owner(&self) -> Result<Option<User>, MetadataError>;
    /// Create the owner account (once).
    async fn create_owner(&self, name: &str) -> Result<User, MetadataError>;
    async fn add_token(&self, token: &NewToken) -> Result<i64, MetadataError>;
    async fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRecord>, MetadataError>;
    /// Record that a token was used now (Unix seconds).
    async fn touch_token(&self, id: i64, now: i64) -> Result<(), MetadataError>;
    /// The tokens of a user, oldest first, revoked ones included.
    async fn list_tokens(&self, user: UserId) -> Result<Vec<TokenInfo>, MetadataError>;
    /// Revoke a token of `user` as of `now`; `false` when the user has no
    /// such token. Revoking twice keeps the first time.
    async fn revoke_token(&self, user: UserId, id: i64, now: i64) -> Result<bool, MetadataError>;

    /// Create a (non-owner) user; fails with [`MetadataError::UserExists`].
    async fn create_user(&self, name: &str) -> Result<User, MetadataError>;
    async fn user_by_name(&self, name: &str) -> Result<Option<User>, MetadataError>;
    /// All users, the owner first, then by name.
    async fn list_users(&self) -> Result<Vec<User>, MetadataError>;
    /// Delete a user with their tokens and collaborations; the owner cannot
    /// be deleted ([`MetadataError::OwnerCannotBeDeleted`]).
    async fn delete_user(&self, id: UserId) -> Result<(), MetadataError>;

    /// Give `user` `access` to `repo`, replacing any level they had.
    async fn set_collaborator(
        &self,
        repo: RepoId,
        user: UserId,
        access: Access,
    ) -> Result<(), MetadataError>;
    /// `false` when the user was not a collaborator.
    async fn remove_collaborator(&self, repo: RepoId, user: UserId) -> Result<bool, MetadataError>;
    /// The collaborators of a repository, by user name.
    async fn list_collaborators(&self, repo: RepoId) -> Result<Vec<Collaborator>, MetadataError>;
    /// Outbox events not yet published, oldest first, at most `limit`.
    async fn unpublished_events(
        &self,
        limit: u32,
    ) -> Result<Vec<crate::events::StoredEvent>, MetadataError>;
    /// Events after `seq`, oldest first, at most `limit`, published or not.
    async fn events_after(
        &self,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<crate::events::StoredEvent>, MetadataError>;
    /// The newest event's `seq` (0 when there is none).
    async fn latest_event_seq(&self) -> Result<i64, MetadataError>;
    /// Mark outbox events published as of `now`.
    async fn mark_events_published(&self, seqs: &[i64], now: i64) -> Result<(), MetadataError>;
    /// Take or renew the lease `name` for `holder` until `now + ttl`;
    /// `false` while another holder's lease is live.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl: i64,
    ) -> Result<bool, MetadataError>;

    /// The level `user` was given on `repo`, if any.
    async fn collaborator_access(
        &self,
        repo: RepoId,
        user: UserId,
    ) -> Result<Option<Access>, MetadataError>;
}
