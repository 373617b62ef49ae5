//! Metadata in SQLite: repositories, refs, packs, users and tokens, behind
//! [`MetadataStore`].
//!
//! Every write that reads before it writes runs in a transaction started with
//! `BEGIN IMMEDIATE`, which takes SQLite's write lock up front. A deferred
//! transaction that later upgrades from reading to writing can fail with
//! `SQLITE_BUSY` at once, without waiting; an immediate one waits its turn
//! (up to the busy timeout), so concurrent pushes, from this process or
//! another one on the same file, serialize instead of failing.
//!
//! The SQL text lives in [`crate::sql`], shared with the PostgreSQL backend.

use crate::sql::{self, StoredValueError};
use nimbus_types::metadata::{
    Collaborator, MetadataError, MetadataStore, NewToken, PackRecord, PackReplacement, PushRecord,
    RefUpdateRejection, ReplacementConflict, RepoState, RetiredPack, TokenInfo, TokenRecord, User,
};
use nimbus_types::{
    Access, NewRepository, ObjectId, Ref, RefName, RefUpdate, RepoId, RepoName, RepoUpdate,
    Repository, UserId, Visibility,
};
use sqlx::SqliteConnection;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections of a file database. SQLite lets readers proceed in parallel
/// with the single writer in WAL mode.
const MAX_CONNECTIONS: u32 = 8;

/// Starts a transaction holding the write lock from its first statement.
const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";

/// The write lock already serialises pushes, so the check that the
/// repository exists needs no row lock (SQLite has none).
const SELECT_REPOSITORY_ID: &str = "SELECT id FROM repositories WHERE id = $1";

/// Failures of the SQLite backend. Opening returns them directly; the
/// [`MetadataStore`] methods wrap them in [`MetadataError::Backend`].
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("could not open the SQLite database {path:?}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("could not migrate the SQLite database")]
    Migrate {
        #[source]
        source: MigrateError,
    },
    #[error("SQLite query failed while {operation}")]
    Query {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    StoredValue(#[from] StoredValueError),
}

impl From<SqliteError> for MetadataError {
    fn from(error: SqliteError) -> Self {
        MetadataError::Backend(Box::new(error))
    }
}

fn query_failed(operation: &'static str) -> impl FnOnce(sqlx::Error) -> SqliteError {
    move |source| SqliteError::Query { operation, source }
}

/// A [`MetadataStore`] on a SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteMetadata {
    pool: SqlitePool,
    refs_cache: std::sync::Arc<crate::refs_cache::RefsCache>,
}

impl SqliteMetadata {
    /// Open (creating it if missing) the database file at `path` and bring
    /// its schema up to date. The database uses WAL journaling, enforces
    /// foreign keys and waits up to 10 seconds for a concurrent writer.
    pub async fn open(path: &Path) -> Result<Self, SqliteError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|source| SqliteError::Open {
                path: path.to_owned(),
                source,
            })?;
        Self::with_migrated_pool(pool).await
    }

    /// A fresh database that lives in memory as long as this value (and its
    /// clones) do. It uses a single connection, so operations serialize.
    pub async fn in_memory() -> Result<Self, SqliteError> {
        let open_failed = |source| SqliteError::Open {
            path: PathBuf::from(":memory:"),
            source,
        };
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(open_failed)?
            .foreign_keys(true);
        // The database disappears with its last connection: keep exactly one,
        // forever.
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(open_failed)?;
        Self::with_migrated_pool(pool).await
    }

    async fn with_migrated_pool(pool: SqlitePool) -> Result<Self, SqliteError> {
        // Migrate under the write lock, so two processes starting at once on
        // a new file do not both try to create the tables.
        let mut transaction = pool
            .begin_with(BEGIN_IMMEDIATE)
            .await
            .map_err(query_failed("starting the migration"))?;
        MIGRATOR
            .run(&mut *transaction)
            .await
            .map_err(|source| SqliteError::Migrate { source })?;
        transaction
            .commit()
            .await
            .map_err(query_failed("committing the migration"))?;
        Ok(SqliteMetadata {
            pool,
            refs_cache: Default::default(),
        })
    }

    /// Close all connections, waiting for running queries to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// SQLite takes the write lock up front, so concurrent writers queue on
/// `busy_timeout` instead of failing when a read lock cannot be upgraded.
/// In WAL mode a deferred transaction reads one snapshot from its first read.
const BEGIN_READ: &str = "BEGIN";
const BEGIN_WRITE: &str = BEGIN_IMMEDIATE;
/// `BEGIN IMMEDIATE` already serialises writers.
const REPOSITORY_FOR_PUSH: &str = SELECT_REPOSITORY_ID;
/// Write transactions are serialised already (`BEGIN IMMEDIATE`).
const LOCK_OUTBOX: Option<&str> = None;

/// Owner creation is serialised by `BEGIN IMMEDIATE` already.
async fn lock_users(_: &mut SqliteConnection) -> Result<(), SqliteError> {
    Ok(())
}

crate::shared::metadata_store!(SqliteMetadata, SqliteConnection, SqliteError);
crate::identity::identity_store!(SqliteMetadata, SqliteError);
crate::webhooks::webhook_store!(SqliteMetadata, SqliteError);
