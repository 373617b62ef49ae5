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

use crate::sql::{self, ValueError};
use nimbus_types::metadata::{
    MetadataError, MetadataStore, NewToken, PackRecord, PushRecord, RefUpdateRejection,
    TokenRecord, User,
};
use nimbus_types::{
    NewRepository, ObjectId, Ref, RefName, RefUpdate, RepoId, RepoName, RepoUpdate, Repository,
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
    #[error("the stored {column} {value:?} is not valid")]
    InvalidStoredValue { column: &'static str, value: String },
    #[error("{column} {value} does not fit in a signed 64-bit integer")]
    ValueTooLarge { column: &'static str, value: u64 },
}

impl From<SqliteError> for MetadataError {
    fn from(error: SqliteError) -> Self {
        MetadataError::Backend(Box::new(error))
    }
}

fn query_failed(operation: &'static str) -> impl FnOnce(sqlx::Error) -> SqliteError {
    move |source| SqliteError::Query { operation, source }
}

impl From<ValueError> for SqliteError {
    fn from(error: ValueError) -> Self {
        match error {
            ValueError::Invalid { column, value } => {
                SqliteError::InvalidStoredValue { column, value }
            }
            ValueError::TooLarge { column, value } => SqliteError::ValueTooLarge { column, value },
        }
    }
}

/// A [`MetadataStore`] on a SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteMetadata {
    pool: SqlitePool,
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
        Ok(SqliteMetadata { pool })
    }

    /// Close all connections, waiting for running queries to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The current target of a ref, read inside `connection`'s transaction.
async fn current_target(
    connection: &mut SqliteConnection,
    repo: RepoId,
    name: &RefName,
) -> Result<Option<ObjectId>, SqliteError> {
    let target: Option<String> = sqlx::query_scalar(sql::SELECT_REF_TARGET)
        .bind(repo.0)
        .bind(name.as_bytes())
        .fetch_optional(&mut *connection)
        .await
        .map_err(query_failed("reading a ref"))?;
    Ok(target
        .map(|hex| sql::object_id_from_hex("refs.target", &hex))
        .transpose()?)
}

/// A ref that would conflict with creating `name`: one of its parent
/// "directories" as a ref (`refs/heads/a` for `refs/heads/a/b`), or a ref
/// below it (`refs/heads/a/b` for `refs/heads/a`).
async fn name_conflict(
    connection: &mut SqliteConnection,
    repo: RepoId,
    name: &[u8],
) -> Result<Option<Vec<u8>>, SqliteError> {
    let queries = sql::name_conflict_queries(name);
    for parent in queries.parents {
        let found: Option<Vec<u8>> = sqlx::query_scalar(sql::SELECT_REF_NAME)
            .bind(repo.0)
            .bind(parent)
            .fetch_optional(&mut *connection)
            .await
            .map_err(query_failed("checking ref name conflicts"))?;
        if found.is_some() {
            return Ok(found);
        }
    }
    let below: Option<Vec<u8>> = sqlx::query_scalar(sql::SELECT_REF_NAME_IN_RANGE)
        .bind(repo.0)
        .bind(queries.below_low)
        .bind(queries.below_high)
        .fetch_optional(&mut *connection)
        .await
        .map_err(query_failed("checking ref name conflicts"))?;
    Ok(below)
}

/// Apply one compare-and-swap ref update inside `connection`'s transaction.
async fn apply_ref_update(
    connection: &mut SqliteConnection,
    repo: RepoId,
    update: &RefUpdate,
) -> Result<Result<(), RefUpdateRejection>, SqliteError> {
    let name = update.name.as_bytes();
    let peeled = update.new_peeled.as_ref().map(sql::hex_of);
    if update.old.is_none()
        && update.new.is_some()
        && let Some(existing) = name_conflict(connection, repo, name).await?
    {
        return Ok(Err(RefUpdateRejection::NameConflict {
            existing: existing.into(),
        }));
    }
    let rows_affected = match (&update.old, &update.new) {
        (None, Some(new)) => sqlx::query(sql::CREATE_REF)
            .bind(repo.0)
            .bind(name)
            .bind(sql::hex_of(new))
            .bind(peeled)
            .execute(&mut *connection)
            .await
            .map_err(query_failed("creating a ref"))?
            .rows_affected(),
        (Some(old), Some(new)) => sqlx::query(sql::UPDATE_REF)
            .bind(repo.0)
            .bind(name)
            .bind(sql::hex_of(new))
            .bind(peeled)
            .bind(sql::hex_of(old))
            .execute(&mut *connection)
            .await
            .map_err(query_failed("updating a ref"))?
            .rows_affected(),
        (Some(old), None) => sqlx::query(sql::DELETE_REF)
            .bind(repo.0)
            .bind(name)
            .bind(sql::hex_of(old))
            .execute(&mut *connection)
            .await
            .map_err(query_failed("deleting a ref"))?
            .rows_affected(),
        // "Must not exist, and leave it so": nothing to write, only a check.
        (None, None) => {
            return Ok(
                match current_target(connection, repo, &update.name).await? {
                    None => Ok(()),
                    current @ Some(_) => Err(RefUpdateRejection::Stale { current }),
                },
            );
        }
    };
    if rows_affected == 1 {
        Ok(Ok(()))
    } else {
        let current = current_target(connection, repo, &update.name).await?;
        Ok(Err(RefUpdateRejection::Stale { current }))
    }
}

#[async_trait::async_trait]
impl MetadataStore for SqliteMetadata {
    async fn create_repository(&self, new: &NewRepository) -> Result<Repository, MetadataError> {
        let row: sql::RepositoryRow = sqlx::query_as(sql::INSERT_REPOSITORY)
            .bind(new.name.as_str())
            .bind(new.private)
            .bind(&new.default_branch)
            .bind(sql::unix_now())
            .fetch_one(&self.pool)
            .await
            .map_err(|error| {
                if sql::is_unique_violation(&error) {
                    MetadataError::RepositoryExists {
                        name: new.name.to_string(),
                    }
                } else {
                    query_failed("creating a repository")(error).into()
                }
            })?;
        Ok(sql::repository_from_row(row).map_err(SqliteError::from)?)
    }

    /// Names are compared without regard to case, as they are unique that way.
    async fn repository(&self, name: &RepoName) -> Result<Option<Repository>, MetadataError> {
        let row: Option<sql::RepositoryRow> = sqlx::query_as(sql::SELECT_REPOSITORY_BY_NAME)
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(query_failed("looking up a repository"))?;
        Ok(row
            .map(sql::repository_from_row)
            .transpose()
            .map_err(SqliteError::from)?)
    }

    async fn list_repositories(&self) -> Result<Vec<Repository>, MetadataError> {
        let rows: Vec<sql::RepositoryRow> = sqlx::query_as(sql::LIST_REPOSITORIES)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("listing repositories"))?;
        Ok(rows
            .into_iter()
            .map(sql::repository_from_row)
            .collect::<Result<_, _>>()
            .map_err(SqliteError::from)?)
    }

    async fn update_repository(
        &self,
        id: RepoId,
        update: &RepoUpdate,
    ) -> Result<Repository, MetadataError> {
        let row: Option<sql::RepositoryRow> =
            if update.name.is_none() && update.private.is_none() && update.default_branch.is_none()
            {
                sqlx::query_as(sql::SELECT_REPOSITORY_BY_ID)
                    .bind(id.0)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_failed("reading a repository"))?
            } else {
                sqlx::query_as(sql::UPDATE_REPOSITORY)
                    .bind(id.0)
                    .bind(update.name.as_ref().map(RepoName::as_str))
                    .bind(update.private)
                    .bind(update.default_branch.as_deref())
                    .bind(sql::unix_now())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|error| -> MetadataError {
                        match &update.name {
                            Some(name) if sql::is_unique_violation(&error) => {
                                MetadataError::RepositoryExists {
                                    name: name.to_string(),
                                }
                            }
                            _ => query_failed("updating a repository")(error).into(),
                        }
                    })?
            };
        let row = row.ok_or(MetadataError::RepositoryNotFound)?;
        Ok(sql::repository_from_row(row).map_err(SqliteError::from)?)
    }

    async fn delete_repository(&self, id: RepoId) -> Result<(), MetadataError> {
        let deleted = sqlx::query(sql::DELETE_REPOSITORY)
            .bind(id.0)
            .execute(&self.pool)
            .await
            .map_err(query_failed("deleting a repository"))?
            .rows_affected();
        if deleted == 0 {
            return Err(MetadataError::RepositoryNotFound);
        }
        Ok(())
    }

    async fn refs(&self, repo: RepoId) -> Result<Vec<Ref>, MetadataError> {
        let rows: Vec<sql::RefRow> = sqlx::query_as(sql::LIST_REFS)
            .bind(repo.0)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("listing refs"))?;
        Ok(sql::refs_from_rows(rows).map_err(SqliteError::from)?)
    }

    async fn packs(&self, repo: RepoId) -> Result<Vec<PackRecord>, MetadataError> {
        let rows: Vec<sql::PackRow> = sqlx::query_as(sql::LIST_PACKS)
            .bind(repo.0)
            .fetch_all(&self.pool)
            .await
            .map_err(query_failed("listing packs"))?;
        Ok(sql::packs_from_rows(rows).map_err(SqliteError::from)?)
    }

    async fn apply_push(
        &self,
        repo: RepoId,
        push: &PushRecord,
    ) -> Result<Vec<Result<(), RefUpdateRejection>>, MetadataError> {
        let mut transaction = self
            .pool
            .begin_with(BEGIN_IMMEDIATE)
            .await
            .map_err(query_failed("starting a push"))?;

        let exists: Option<i64> = sqlx::query_scalar(SELECT_REPOSITORY_ID)
            .bind(repo.0)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(query_failed("checking the repository of a push"))?;
        if exists.is_none() {
            return Err(MetadataError::RepositoryNotFound);
        }

        for pack in &push.packs {
            sqlx::query(sql::INSERT_PACK)
                .bind(repo.0)
                .bind(&pack.name)
                .bind(sql::to_i64("packs.pack_size", pack.pack_size).map_err(SqliteError::from)?)
                .bind(sql::to_i64("packs.index_size", pack.index_size).map_err(SqliteError::from)?)
                .bind(
                    sql::to_i64("packs.object_count", pack.object_count)
                        .map_err(SqliteError::from)?,
                )
                .bind(pack.created_at)
                .execute(&mut *transaction)
                .await
                .map_err(query_failed("recording a pack"))?;
        }

        let mut outcomes = Vec::with_capacity(push.updates.len());
        for update in &push.updates {
            outcomes.push(apply_ref_update(&mut transaction, repo, update).await?);
        }
        let applied = outcomes.iter().filter(|outcome| outcome.is_ok()).count();

        if push.atomic && applied < outcomes.len() {
            transaction
                .rollback()
                .await
                .map_err(query_failed("rolling back a failed atomic push"))?;
            let outcomes = outcomes
                .into_iter()
                .map(|outcome| outcome.and(Err(RefUpdateRejection::AtomicPushFailed)))
                .collect();
            return Ok(outcomes);
        }
        if applied == 0 {
            // Nothing changed, so the packs are not part of the repository.
            transaction
                .rollback()
                .await
                .map_err(query_failed("rolling back a push that changed nothing"))?;
            return Ok(outcomes);
        }

        sqlx::query(sql::TOUCH_REPOSITORY)
            .bind(repo.0)
            .bind(sql::unix_now())
            .execute(&mut *transaction)
            .await
            .map_err(query_failed("touching the repository of a push"))?;
        transaction
            .commit()
            .await
            .map_err(query_failed("committing a push"))?;
        tracing::debug!(
            repo = repo.0,
            applied,
            rejected = outcomes.len() - applied,
            packs = push.packs.len(),
            "push recorded"
        );
        Ok(outcomes)
    }

    async fn owner(&self) -> Result<Option<User>, MetadataError> {
        let row: Option<(i64, String)> = sqlx::query_as(sql::SELECT_OWNER)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_failed("looking up the owner"))?;
        Ok(row.map(sql::owner_from_row))
    }

    /// Fails with [`MetadataError::UserExists`] naming the existing owner if
    /// there is one, or `name` if a user of that name exists.
    async fn create_owner(&self, name: &str) -> Result<User, MetadataError> {
        let mut transaction = self
            .pool
            .begin_with(BEGIN_IMMEDIATE)
            .await
            .map_err(query_failed("starting to create the owner"))?;
        let existing: Option<String> = sqlx::query_scalar(sql::SELECT_OWNER_NAME)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(query_failed("looking up the owner"))?;
        if let Some(existing) = existing {
            return Err(MetadataError::UserExists { name: existing });
        }
        let id: i64 = sqlx::query_scalar(sql::INSERT_OWNER)
            .bind(name)
            .bind(sql::unix_now())
            .fetch_one(&mut *transaction)
            .await
            .map_err(|error| -> MetadataError {
                if sql::is_unique_violation(&error) {
                    MetadataError::UserExists {
                        name: name.to_owned(),
                    }
                } else {
                    query_failed("creating the owner")(error).into()
                }
            })?;
        transaction
            .commit()
            .await
            .map_err(query_failed("committing the owner"))?;
        Ok(sql::owner_from_row((id, name.to_owned())))
    }

    async fn add_token(&self, token: &NewToken) -> Result<i64, MetadataError> {
        let id: i64 = sqlx::query_scalar(sql::INSERT_TOKEN)
            .bind(token.user.0)
            .bind(&token.description)
            .bind(&token.hash)
            .bind(sql::access_as_str(token.access))
            .bind(sql::unix_now())
            .bind(token.expires_at)
            .fetch_one(&self.pool)
            .await
            .map_err(query_failed("adding a token"))?;
        Ok(id)
    }

    async fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRecord>, MetadataError> {
        let row: Option<sql::TokenRow> = sqlx::query_as(sql::SELECT_TOKEN_BY_HASH)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_failed("looking up a token"))?;
        Ok(row
            .map(sql::token_from_row)
            .transpose()
            .map_err(SqliteError::from)?)
    }

    async fn touch_token(&self, id: i64, now: i64) -> Result<(), MetadataError> {
        sqlx::query(sql::TOUCH_TOKEN)
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(query_failed("recording a token's use"))?;
        Ok(())
    }
}
