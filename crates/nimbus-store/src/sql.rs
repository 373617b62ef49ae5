//! What the SQLite and PostgreSQL metadata backends share: the SQL text
//! (written in the dialect both understand: `$n` parameters, `ON CONFLICT`,
//! `RETURNING`), and the conversions between stored columns and
//! [`nimbus_types`] values.

use nimbus_types::metadata::{PackRecord, User};
use nimbus_types::{Access, ObjectId, Ref, RefName, RepoId, RepoName, Repository, UserId};
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) const INSERT_REPOSITORY: &str = "INSERT INTO repositories (name, private, default_branch, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $4) \
     RETURNING id, name, private, default_branch, created_at, updated_at";

/// Names are compared without regard to case, as they are unique that way.
pub(crate) const SELECT_REPOSITORY_BY_NAME: &str = "SELECT id, name, private, default_branch, created_at, updated_at \
     FROM repositories WHERE lower(name) = lower($1)";

pub(crate) const SELECT_REPOSITORY_BY_ID: &str = "SELECT id, name, private, default_branch, created_at, updated_at \
     FROM repositories WHERE id = $1";

pub(crate) const LIST_REPOSITORIES: &str = "SELECT id, name, private, default_branch, created_at, updated_at \
     FROM repositories ORDER BY lower(name), id";

pub(crate) const UPDATE_REPOSITORY: &str = "UPDATE repositories SET \
     name = COALESCE($2, name), \
     private = COALESCE($3, private), \
     default_branch = COALESCE($4, default_branch), \
     updated_at = $5 \
     WHERE id = $1 \
     RETURNING id, name, private, default_branch, created_at, updated_at";

pub(crate) const DELETE_REPOSITORY: &str = "DELETE FROM repositories WHERE id = $1";

/// After a push moved refs.
pub(crate) const TOUCH_REPOSITORY: &str =
    "UPDATE repositories SET updated_at = $2, ref_version = ref_version + 1 WHERE id = $1";

pub(crate) const SELECT_REPOSITORY_COUNTERS: &str =
    "SELECT pack_generation, ref_version FROM repositories WHERE id = $1";

pub(crate) const BUMP_PACK_GENERATION: &str =
    "UPDATE repositories SET pack_generation = pack_generation + 1 WHERE id = $1";

pub(crate) const DELETE_PACK: &str = "DELETE FROM packs WHERE repo_id = $1 AND name = $2";

pub(crate) const INSERT_RETIRED_PACK: &str = "INSERT INTO retired_packs (repo_id, name, retired_at) VALUES ($1, $2, $3) \
     ON CONFLICT (repo_id, name) DO NOTHING";

pub(crate) const LIST_RETIRED_PACKS: &str =
    "SELECT name, retired_at FROM retired_packs WHERE repo_id = $1 ORDER BY retired_at, name";

pub(crate) const DELETE_RETIRED_PACK: &str =
    "DELETE FROM retired_packs WHERE repo_id = $1 AND name = $2";

pub(crate) const LIST_REFS: &str =
    "SELECT name, target, peeled FROM refs WHERE repo_id = $1 ORDER BY name";

pub(crate) const SELECT_REF_TARGET: &str =
    "SELECT target FROM refs WHERE repo_id = $1 AND name = $2";

pub(crate) const SELECT_REF_NAME: &str = "SELECT name FROM refs WHERE repo_id = $1 AND name = $2";

pub(crate) const SELECT_REF_NAME_IN_RANGE: &str =
    "SELECT name FROM refs WHERE repo_id = $1 AND name >= $2 AND name < $3 LIMIT 1";

pub(crate) const CREATE_REF: &str = "INSERT INTO refs (repo_id, name, target, peeled) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (repo_id, name) DO NOTHING";

pub(crate) const UPDATE_REF: &str = "UPDATE refs SET target = $3, peeled = $4 \
     WHERE repo_id = $1 AND name = $2 AND target = $5";

pub(crate) const DELETE_REF: &str =
    "DELETE FROM refs WHERE repo_id = $1 AND name = $2 AND target = $3";

pub(crate) const LIST_PACKS: &str = "SELECT name, pack_size, index_size, object_count, created_at \
     FROM packs WHERE repo_id = $1 ORDER BY created_at, name";

/// The same pack uploaded twice is the same content under the same name:
/// recording it once is enough.
pub(crate) const INSERT_PACK: &str = "INSERT INTO packs \
     (repo_id, name, pack_size, index_size, object_count, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (repo_id, name) DO NOTHING";

pub(crate) const SELECT_OWNER: &str = "SELECT id, name FROM users WHERE is_owner";

pub(crate) const SELECT_OWNER_NAME: &str = "SELECT name FROM users WHERE is_owner";

pub(crate) const INSERT_OWNER: &str =
    "INSERT INTO users (name, is_owner, created_at) VALUES ($1, TRUE, $2) RETURNING id";

pub(crate) const INSERT_TOKEN: &str = "INSERT INTO tokens (user_id, description, hash, access, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";

pub(crate) const SELECT_TOKEN_BY_HASH: &str = "SELECT tokens.id, tokens.access, tokens.expires_at, \
     users.id, users.name, users.is_owner \
     FROM tokens JOIN users ON users.id = tokens.user_id \
     WHERE tokens.hash = $1";

pub(crate) const TOUCH_TOKEN: &str = "UPDATE tokens SET last_used_at = $2 WHERE id = $1";

/// A value read back from the database that does not fit its Rust type:
/// corruption or a schema mismatch, never a client's mistake.
#[derive(Debug, thiserror::Error)]
pub enum StoredValueError {
    #[error("the stored {column} {value:?} is not valid")]
    Invalid { column: &'static str, value: String },
    #[error("{column} {value} does not fit in a signed 64-bit integer")]
    TooLarge { column: &'static str, value: u64 },
}

pub(crate) type RepositoryRow = (i64, String, bool, String, i64, i64);
pub(crate) type RefRow = (Vec<u8>, String, Option<String>);
pub(crate) type PackRow = (String, i64, i64, i64, i64);
pub(crate) type TokenRow = (i64, String, Option<i64>, i64, String, bool);

/// Now, in Unix seconds.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database_error) if database_error.is_unique_violation())
}

pub(crate) fn repository_from_row(
    (id, name, private, default_branch, created_at, updated_at): RepositoryRow,
) -> Result<Repository, StoredValueError> {
    let name = RepoName::new(&name).map_err(|_| StoredValueError::Invalid {
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

pub(crate) fn object_id_from_hex(
    column: &'static str,
    hex: &str,
) -> Result<ObjectId, StoredValueError> {
    ObjectId::from_hex(hex.as_bytes()).map_err(|_| StoredValueError::Invalid {
        column,
        value: hex.to_owned(),
    })
}

pub(crate) fn hex_of(id: &ObjectId) -> String {
    id.to_hex().to_string()
}

pub(crate) fn to_i64(column: &'static str, value: u64) -> Result<i64, StoredValueError> {
    i64::try_from(value).map_err(|_| StoredValueError::TooLarge { column, value })
}

fn to_u64(column: &'static str, value: i64) -> Result<u64, StoredValueError> {
    u64::try_from(value).map_err(|_| StoredValueError::Invalid {
        column,
        value: value.to_string(),
    })
}

pub(crate) fn access_as_str(access: Access) -> &'static str {
    match access {
        Access::Read => "read",
        Access::Write => "write",
        Access::Admin => "admin",
    }
}

fn access_from_str(access: &str) -> Result<Access, StoredValueError> {
    match access {
        "read" => Ok(Access::Read),
        "write" => Ok(Access::Write),
        "admin" => Ok(Access::Admin),
        other => Err(StoredValueError::Invalid {
            column: "tokens.access",
            value: other.to_owned(),
        }),
    }
}

/// The refs of a repository from their rows, sorted bytewise whatever the
/// database's collation (BLOB and BYTEA already sort that way).
pub(crate) fn refs_from_rows(rows: Vec<RefRow>) -> Result<Vec<Ref>, StoredValueError> {
    let mut refs = rows
        .into_iter()
        .map(|(name, target, peeled)| {
            let name = RefName::new(&name).map_err(|_| StoredValueError::Invalid {
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
        .collect::<Result<Vec<_>, StoredValueError>>()?;
    refs.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(refs)
}

pub(crate) fn packs_from_rows(rows: Vec<PackRow>) -> Result<Vec<PackRecord>, StoredValueError> {
    rows.into_iter()
        .map(|(name, pack_size, index_size, object_count, created_at)| {
            Ok(PackRecord {
                name,
                pack_size: to_u64("packs.pack_size", pack_size)?,
                index_size: to_u64("packs.index_size", index_size)?,
                object_count: to_u64("packs.object_count", object_count)?,
                created_at,
            })
        })
        .collect()
}

pub(crate) fn token_from_row(
    (id, access, expires_at, user_id, user_name, is_owner): TokenRow,
) -> Result<nimbus_types::metadata::TokenRecord, StoredValueError> {
    Ok(nimbus_types::metadata::TokenRecord {
        id,
        user: User {
            id: UserId(user_id),
            name: user_name,
            is_owner,
        },
        access: access_from_str(&access)?,
        expires_at,
    })
}

pub(crate) fn owner_from_row((id, name): (i64, String)) -> User {
    User {
        id: UserId(id),
        name,
        is_owner: true,
    }
}

/// The names that would conflict with creating the ref `name`, as the
/// queries of the check ask for them: each parent "directory" (`refs/heads/a`
/// for `refs/heads/a/b`), then the half-open range `[name/, name0)` that holds
/// every ref below it (`refs/heads/a/b` for `refs/heads/a`), as '0' follows
/// '/' and both databases compare these bytes bytewise.
pub(crate) struct NameConflictQueries<'a> {
    pub(crate) parents: Vec<&'a [u8]>,
    pub(crate) below_low: Vec<u8>,
    pub(crate) below_high: Vec<u8>,
}

pub(crate) fn name_conflict_queries(name: &[u8]) -> NameConflictQueries<'_> {
    let parents = name
        .iter()
        .enumerate()
        .filter(|(_, byte)| **byte == b'/')
        .map(|(i, _)| &name[..i])
        .collect();
    let mut below_low = name.to_vec();
    below_low.push(b'/');
    let mut below_high = name.to_vec();
    below_high.push(b'0');
    NameConflictQueries {
        parents,
        below_low,
        below_high,
    }
}
