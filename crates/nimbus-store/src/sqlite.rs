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
//! The SQL sticks to what PostgreSQL also understands (`$n` parameters,
//! `ON CONFLICT`, `RETURNING`) so the PostgreSQL backend can share it.

use nimbus_types::metadata::{
    MetadataError, MetadataStore, NewToken, PackRecord, PushRecord, RefUpdateRejection,
    TokenRecord, User,
};
use nimbus_types::{
    Access, NewRepository, ObjectId, Ref, RefName, RefUpdate, RepoId, RepoName, RepoUpdate,
    Repository, UserId,
};
use sqlx::SqliteConnection;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections of a file database. SQLite lets readers proceed in parallel
/// with the single writer in WAL mode.
const MAX_CONNECTIONS: u32 = 8;

/// Starts a transaction holding the write lock from its first statement.
const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";

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

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database_error) if database_error.is_unique_violation())
}

/// Now, in Unix seconds.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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

type RepositoryRow = (i64, String, bool, String, i64, i64);

fn repository_from_row(
    (id, name, private, default_branch, created_at, updated_at): RepositoryRow,
) -> Result<Repository, SqliteError> {
    let name = RepoName::new(&name).map_err(|_| SqliteError::InvalidStoredValue {
        column: "repositories.name",
        value: name.clone(),
    })?;
    Ok(Repository {
        id: RepoId(id),
        name,
        private,
        default_branch,
        created_at,
        updated_at,
    })
}

fn object_id_from_hex(column: &'static str, hex: &str) -> Result<ObjectId, SqliteError> {
    ObjectId::from_hex(hex.as_bytes()).map_err(|_| SqliteError::InvalidStoredValue {
        column,
        value: hex.to_owned(),
    })
}

fn hex_of(id: &ObjectId) -> String {
    id.to_hex().to_string()
}

fn to_i64(column: &'static str, value: u64) -> Result<i64, SqliteError> {
    i64::try_from(value).map_err(|_| SqliteError::ValueTooLarge { column, value })
}

fn to_u64(column: &'static str, value: i64) -> Result<u64, SqliteError> {
    u64::try_from(value).map_err(|_| SqliteError::InvalidStoredValue {
        column,
        value: value.to_string(),
    })
}

fn access_as_str(access: Access) -> &'static str {
    match access {
        Access::Read => "read",
        Access::Write => "write",
        Access::Admin => "admin",
    }
}

fn access_from_str(access: &str) -> Result<Access, SqliteError> {
    match access {
        "read" => Ok(Access::Read),
        "write" => Ok(Access::Write),
        "admin" => Ok(Access::Admin),
        other => Err(SqliteError::InvalidStoredValue {
            column: "tokens.access",
            value: other.to_owned(),
        }),
    }
}

/// The current target of a ref, read inside `connection`'s transaction.
async fn current_target(
    connection: &mut SqliteConnection,
    repo: RepoId,
    name: &RefName,
) -> Result<Option<ObjectId>, SqliteError> {
    let target: Option<String> =
        sqlx::query_scalar("SELECT target FROM refs WHERE repo_id = $1 AND name = $2")
            .bind(repo.0)
            .bind(name.as_bytes())
            .fetch_optional(&mut *connection)
            .await
            .map_err(query_failed("reading a ref"))?;
    target
        .map(|hex| object_id_from_hex("refs.target", &hex))
        .transpose()
}

/// Apply one compare-and-swap ref update inside `connection`'s transaction.
/// A ref that would conflict with creating `name`: one of its parent
/// "directories" as a ref (`refs/heads/a` for `refs/heads/a/b`), or a ref
/// below it (`refs/heads/a/b` for `refs/heads/a`).
async fn name_conflict(
    connection: &mut SqliteConnection,
    repo: RepoId,
    name: &[u8],
) -> Result<Option<Vec<u8>>, SqliteError> {
    for (i, byte) in name.iter().enumerate() {
        if *byte != b'/' {
            continue;
        }
        let parent = &name[..i];
        let found: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT name FROM refs WHERE repo_id = $1 AND name = $2")
                .bind(repo.0)
                .bind(parent)
                .fetch_optional(&mut *connection)
                .await
                .map_err(query_failed("checking ref name conflicts"))?;
        if found.is_some() {
            return Ok(found);
        }
    }
    // Names below `name/` sort between `name/` and `name0` ('0' follows '/').
    let mut low = name.to_vec();
    low.push(b'/');
    let mut high = name.to_vec();
    high.push(b'0');
    let below: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT name FROM refs WHERE repo_id = $1 AND name >= $2 AND name < $3 LIMIT 1",
    )
    .bind(repo.0)
    .bind(low)
    .bind(high)
    .fetch_optional(&mut *connection)
    .await
    .map_err(query_failed("checking ref name conflicts"))?;
    Ok(below)
}

async fn apply_ref_update(
    connection: &mut SqliteConnection,
    repo: RepoId,
    update: &RefUpdate,
) -> Result<Result<(), RefUpdateRejection>, SqliteError> {
    let name = update.name.as_bytes();
    let peeled = update.new_peeled.as_ref().map(hex_of);
    if update.old.is_none()
        && update.new.is_some()
        && let Some(existing) = name_conflict(connection, repo, name).await?
    {
        return Ok(Err(RefUpdateRejection::NameConflict {
            existing: existing.into(),
        }));
    }
    let rows_affected = match (&update.old, &update.new) {
        (None, Some(new)) => sqlx::query(
            "INSERT INTO refs (repo_id, name, target, peeled) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (repo_id, name) DO NOTHING",
        )
        .bind(repo.0)
        .bind(name)
        .bind(hex_of(new))
        .bind(peeled)
        .execute(&mut *connection)
        .await
        .map_err(query_failed("creating a ref"))?
        .rows_affected(),
        (Some(old), Some(new)) => sqlx::query(
            "UPDATE refs SET target = $3, peeled = $4 \
             WHERE repo_id = $1 AND name = $2 AND target = $5",
        )
        .bind(repo.0)
        .bind(name)
        .bind(hex_of(new))
        .bind(peeled)
        .bind(hex_of(old))
        .execute(&mut *connection)
        .await
        .map_err(query_failed("updating a ref"))?
        .rows_affected(),
        (Some(old), None) => {
            sqlx::query("DELETE FROM refs WHERE repo_id = $1 AND name = $2 AND target = $3")
                .bind(repo.0)
                .bind(name)
                .bind(hex_of(old))
                .execute(&mut *connection)
                .await
                .map_err(query_failed("deleting a ref"))?
                .rows_affected()
        }
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
        let now = unix_now();
        let row: RepositoryRow = sqlx::query_as(
            "INSERT INTO repositories (name, private, default_branch, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) \
             RETURNING id, name, private, default_branch, created_at, updated_at",
        )
        .bind(new.name.as_str())
        .bind(new.private)
        .bind(&new.default_branch)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(|error| {
            if is_unique_violation(&error) {
                MetadataError::RepositoryExists {
                    name: new.name.to_string(),
                }
            } else {
                query_failed("creating a repository")(error).into()
            }
        })?;
        Ok(repository_from_row(row)?)
    }

    /// Names are compared without regard to case, as they are unique that way.
    async fn repository(&self, name: &RepoName) -> Result<Option<Repository>, MetadataError> {
        let row: Option<RepositoryRow> = sqlx::query_as(
            "SELECT id, name, private, default_branch, created_at, updated_at \
             FROM repositories WHERE lower(name) = lower($1)",
        )
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(query_failed("looking up a repository"))?;
        Ok(row.map(repository_from_row).transpose()?)
    }

    async fn list_repositories(&self) -> Result<Vec<Repository>, MetadataError> {
        let rows: Vec<RepositoryRow> = sqlx::query_as(
            "SELECT id, name, private, default_branch, created_at, updated_at \
             FROM repositories ORDER BY lower(name), id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_failed("listing repositories"))?;
        Ok(rows
            .into_iter()
            .map(repository_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn update_repository(
        &self,
        id: RepoId,
        update: &RepoUpdate,
    ) -> Result<Repository, MetadataError> {
        let row: Option<RepositoryRow> = if update.name.is_none()
            && update.private.is_none()
            && update.default_branch.is_none()
        {
            sqlx::query_as(
                "SELECT id, name, private, default_branch, created_at, updated_at \
                 FROM repositories WHERE id = $1",
            )
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_failed("reading a repository"))?
        } else {
            sqlx::query_as(
                "UPDATE repositories SET \
                 name = COALESCE($2, name), \
                 private = COALESCE($3, private), \
                 default_branch = COALESCE($4, default_branch), \
                 updated_at = $5 \
                 WHERE id = $1 \
                 RETURNING id, name, private, default_branch, created_at, updated_at",
            )
            .bind(id.0)
            .bind(update.name.as_ref().map(RepoName::as_str))
            .bind(update.private)
            .bind(update.default_branch.as_deref())
            .bind(unix_now())
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| -> MetadataError {
                match &update.name {
                    Some(name) if is_unique_violation(&error) => MetadataError::RepositoryExists {
                        name: name.to_string(),
                    },
                    _ => query_failed("updating a repository")(error).into(),
                }
            })?
        };
        let row = row.ok_or(MetadataError::RepositoryNotFound)?;
        Ok(repository_from_row(row)?)
    }

    async fn delete_repository(&self, id: RepoId) -> Result<(), MetadataError> {
        let deleted = sqlx::query("DELETE FROM repositories WHERE id = $1")
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
        let rows: Vec<(Vec<u8>, String, Option<String>)> = sqlx::query_as(
            "SELECT name, target, peeled FROM refs WHERE repo_id = $1 ORDER BY name",
        )
        .bind(repo.0)
        .fetch_all(&self.pool)
        .await
        .map_err(query_failed("listing refs"))?;
        let mut refs = rows
            .into_iter()
            .map(|(name, target, peeled)| {
                let name = RefName::new(&name).map_err(|_| SqliteError::InvalidStoredValue {
                    column: "refs.name",
                    value: String::from_utf8_lossy(&name).into_owned(),
                })?;
                Ok(Ref {
                    name,
                    target: object_id_from_hex("refs.target", &target)?,
                    peeled: peeled
                        .map(|hex| object_id_from_hex("refs.peeled", &hex))
                        .transpose()?,
                })
            })
            .collect::<Result<Vec<_>, SqliteError>>()?;
        // BLOBs already sort bytewise; this keeps the promise whatever the
        // database's collation.
        refs.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(refs)
    }

    async fn packs(&self, repo: RepoId) -> Result<Vec<PackRecord>, MetadataError> {
        let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT name, pack_size, index_size, object_count, created_at \
             FROM packs WHERE repo_id = $1 ORDER BY created_at, name",
        )
        .bind(repo.0)
        .fetch_all(&self.pool)
        .await
        .map_err(query_failed("listing packs"))?;
        Ok(rows
            .into_iter()
            .map(|(name, pack_size, index_size, object_count, created_at)| {
                Ok(PackRecord {
                    name,
                    pack_size: to_u64("packs.pack_size", pack_size)?,
                    index_size: to_u64("packs.index_size", index_size)?,
                    object_count: to_u64("packs.object_count", object_count)?,
                    created_at,
                })
            })
            .collect::<Result<_, SqliteError>>()?)
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

        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM repositories WHERE id = $1")
            .bind(repo.0)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(query_failed("checking the repository of a push"))?;
        if exists.is_none() {
            return Err(MetadataError::RepositoryNotFound);
        }

        for pack in &push.packs {
            // The same pack uploaded twice is the same content under the
            // same name: recording it once is enough.
            sqlx::query(
                "INSERT INTO packs \
                 (repo_id, name, pack_size, index_size, object_count, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (repo_id, name) DO NOTHING",
            )
            .bind(repo.0)
            .bind(&pack.name)
            .bind(to_i64("packs.pack_size", pack.pack_size)?)
            .bind(to_i64("packs.index_size", pack.index_size)?)
            .bind(to_i64("packs.object_count", pack.object_count)?)
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

        sqlx::query("UPDATE repositories SET updated_at = $2 WHERE id = $1")
            .bind(repo.0)
            .bind(unix_now())
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
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT id, name FROM users WHERE is_owner")
                .fetch_optional(&self.pool)
                .await
                .map_err(query_failed("looking up the owner"))?;
        Ok(row.map(|(id, name)| User {
            id: UserId(id),
            name,
            is_owner: true,
        }))
    }

    /// Fails with [`MetadataError::UserExists`] naming the existing owner if
    /// there is one, or `name` if a user of that name exists.
    async fn create_owner(&self, name: &str) -> Result<User, MetadataError> {
        let mut transaction = self
            .pool
            .begin_with(BEGIN_IMMEDIATE)
            .await
            .map_err(query_failed("starting to create the owner"))?;
        let existing: Option<String> = sqlx::query_scalar("SELECT name FROM users WHERE is_owner")
            .fetch_optional(&mut *transaction)
            .await
            .map_err(query_failed("looking up the owner"))?;
        if let Some(existing) = existing {
            return Err(MetadataError::UserExists { name: existing });
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (name, is_owner, created_at) VALUES ($1, TRUE, $2) RETURNING id",
        )
        .bind(name)
        .bind(unix_now())
        .fetch_one(&mut *transaction)
        .await
        .map_err(|error| -> MetadataError {
            if is_unique_violation(&error) {
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
        Ok(User {
            id: UserId(id),
            name: name.to_owned(),
            is_owner: true,
        })
    }

    async fn add_token(&self, token: &NewToken) -> Result<i64, MetadataError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO tokens (user_id, description, hash, access, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(token.user.0)
        .bind(&token.description)
        .bind(&token.hash)
        .bind(access_as_str(token.access))
        .bind(unix_now())
        .bind(token.expires_at)
        .fetch_one(&self.pool)
        .await
        .map_err(query_failed("adding a token"))?;
        Ok(id)
    }

    async fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRecord>, MetadataError> {
        let row: Option<(i64, String, Option<i64>, i64, String, bool)> = sqlx::query_as(
            "SELECT tokens.id, tokens.access, tokens.expires_at, \
             users.id, users.name, users.is_owner \
             FROM tokens JOIN users ON users.id = tokens.user_id \
             WHERE tokens.hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_failed("looking up a token"))?;
        let Some((id, access, expires_at, user_id, user_name, is_owner)) = row else {
            return Ok(None);
        };
        Ok(Some(TokenRecord {
            id,
            user: User {
                id: UserId(user_id),
                name: user_name,
                is_owner,
            },
            access: access_from_str(&access)?,
            expires_at,
        }))
    }

    async fn touch_token(&self, id: i64, now: i64) -> Result<(), MetadataError> {
        sqlx::query("UPDATE tokens SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(query_failed("recording a token's use"))?;
        Ok(())
    }
}
