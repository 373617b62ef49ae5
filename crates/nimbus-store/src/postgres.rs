//! Metadata in PostgreSQL: repositories, refs, packs, users and tokens,
//! behind [`MetadataStore`], with the same behaviour and schema history as
//! the SQLite backend, whose SQL ([`crate::sql`]) it shares.
//!
//! SQLite serialises writers with `BEGIN IMMEDIATE`; here each write that
//! reads before it writes first locks what it depends on, so that racing
//! writers queue instead of interleaving: a push locks its repository's row
//! (`FOR UPDATE`), which orders pushes to one repository (from this process
//! or another) while pushes to different repositories proceed in parallel.
//! Under READ COMMITTED every statement after the lock sees what the
//! previous holder committed, so of two pushes from the same old value
//! exactly one wins and the other sees the winner's value as `Stale`.

use crate::sql::{self, StoredValueError};
use nimbus_types::metadata::{
    Collaborator, MetadataError, MetadataStore, NewToken, PackRecord, PackReplacement, PushRecord,
    RefUpdateRejection, ReplacementConflict, RepoState, RetiredPack, TokenInfo, TokenRecord, User,
};
use nimbus_types::{
    Access, NewRepository, ObjectId, Ref, RefName, RefUpdate, RepoId, RepoName, RepoUpdate,
    Repository, UserId, Visibility,
};
use sqlx::PgConnection;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Connections per store; the server runs queries in parallel.
const MAX_CONNECTIONS: u32 = 8;

/// How long a query waits for a connection (also: for the database to
/// answer at start-up) before it fails: an outage gives errors, not hangs.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Held until the push commits or rolls back: pushes to one repository run
/// one after another, and a repository deleted meanwhile is not found.
const LOCK_REPOSITORY: &str = "SELECT id FROM repositories WHERE id = $1 FOR UPDATE";

/// Conflicts with itself but not with reads: two owners being created at
/// once queue, and the second sees the first.
const LOCK_USERS: &str = "LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE";

/// Failures of the PostgreSQL backend. Connecting returns them directly; the
/// [`MetadataStore`] methods wrap them in [`MetadataError::Backend`].
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL is left out: it may hold a password.
    #[error("could not connect to the PostgreSQL database")]
    Connect {
        #[source]
        source: sqlx::Error,
    },
    #[error("could not migrate the PostgreSQL database")]
    Migrate {
        #[source]
        source: MigrateError,
    },
    #[error("PostgreSQL query failed while {operation}")]
    Query {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    StoredValue(#[from] StoredValueError),
}

impl From<PgError> for MetadataError {
    fn from(error: PgError) -> Self {
        MetadataError::Backend(Box::new(error))
    }
}

fn query_failed(operation: &'static str) -> impl FnOnce(sqlx::Error) -> PgError {
    move |source| PgError::Query { operation, source }
}

/// A [`MetadataStore`] on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgMetadata {
    pool: PgPool,
    refs_cache: std::sync::Arc<crate::refs_cache::RefsCache>,
}

impl PgMetadata {
    /// Connect to the database at `url` (`postgres://user:password@host:port/database`)
    /// and bring its schema up to date. Migrations hold an advisory lock, so
    /// servers starting at once on a new database do not race.
    pub async fn connect(url: &str) -> Result<Self, PgError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(|source| PgError::Connect { source })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| PgError::Migrate { source })?;
        Ok(PgMetadata {
            pool,
            refs_cache: Default::default(),
        })
    }

    /// Close all connections, waiting for running queries to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A plain transaction: pushes serialise on `REPOSITORY_FOR_PUSH`'s row lock.
/// One snapshot for every statement of the read.
const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
const BEGIN_WRITE: &str = "BEGIN";
const REPOSITORY_FOR_PUSH: &str = LOCK_REPOSITORY;
/// Identity columns are handed out at insert, not at commit: two
/// transactions could commit their events out of `seq` order and a reader
/// following `seq` would skip the late one. This lock (held until commit)
/// makes every transaction that writes events commit in `seq` order.
const LOCK_OUTBOX: Option<&str> = Some("SELECT pg_advisory_xact_lock(5716690121)");

/// Two racing `create_owner` calls: the second waits, then sees the owner.
async fn lock_users(connection: &mut PgConnection) -> Result<(), PgError> {
    sqlx::query(LOCK_USERS)
        .execute(&mut *connection)
        .await
        .map_err(query_failed("locking the users"))?;
    Ok(())
}

crate::shared::metadata_store!(PgMetadata, PgConnection, PgError);
crate::identity::identity_store!(PgMetadata, PgError);
crate::webhooks::webhook_store!(PgMetadata, PgError);
