//! What the SQLite and PostgreSQL metadata backends share: the SQL text
//! (written in the dialect both understand: `$n` parameters, `ON CONFLICT`,
//! `RETURNING`), and the conversions between stored columns and
//! [`nimbus_types`] values.

use nimbus_types::metadata::{PackRecord, TokenInfo, User};
pub(crate) use nimbus_types::unix_now;
use nimbus_types::{
    Access, ObjectId, Ref, RefName, RepoId, RepoName, Repository, Scopes, UserId, Visibility,
};

pub(crate) const INSERT_REPOSITORY: &str = "INSERT INTO repositories (name, visibility, default_branch, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $4) \
     RETURNING id, name, visibility, default_branch, created_at, updated_at";

/// Names are compared without regard to case, as they are unique that way.
pub(crate) const SELECT_REPOSITORY_BY_NAME: &str = "SELECT id, name, visibility, default_branch, created_at, updated_at \
     FROM repositories WHERE lower(name) = lower($1)";

pub(crate) const SELECT_REPOSITORY_BY_ID: &str = "SELECT id, name, visibility, default_branch, created_at, updated_at \
     FROM repositories WHERE id = $1";

pub(crate) const LIST_REPOSITORIES: &str = "SELECT id, name, visibility, default_branch, created_at, updated_at \
     FROM repositories ORDER BY lower(name), id";

pub(crate) const UPDATE_REPOSITORY: &str = "UPDATE repositories SET \
     name = COALESCE($2, name), \
     visibility = COALESCE($3, visibility), \
     default_branch = COALESCE($4, default_branch), \
     updated_at = $5 \
     WHERE id = $1 \
     RETURNING id, name, visibility, default_branch, created_at, updated_at";

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

pub(crate) const INSERT_TOKEN: &str = "INSERT INTO tokens \
     (user_id, description, hash, access, created_at, expires_at, scopes) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";

pub(crate) const SELECT_TOKEN_BY_HASH: &str = "SELECT tokens.id, tokens.scopes, tokens.expires_at, \
     tokens.revoked_at, users.id, users.name, users.is_owner \
     FROM tokens JOIN users ON users.id = tokens.user_id \
     WHERE tokens.hash = $1";

pub(crate) const TOUCH_TOKEN: &str = "UPDATE tokens SET last_used_at = $2 WHERE id = $1";

pub(crate) const LIST_TOKENS: &str = "SELECT id, description, scopes, created_at, expires_at, \
     last_used_at, revoked_at FROM tokens WHERE user_id = $1 ORDER BY created_at, id";

pub(crate) const REVOKE_TOKEN: &str = "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $3) \
     WHERE user_id = $1 AND id = $2";

pub(crate) const INSERT_USER: &str =
    "INSERT INTO users (name, is_owner, created_at) VALUES ($1, FALSE, $2) RETURNING id";

pub(crate) const SELECT_USER_BY_NAME: &str = "SELECT id, name, is_owner FROM users WHERE name = $1";

pub(crate) const SELECT_USER_IS_OWNER: &str = "SELECT is_owner FROM users WHERE id = $1";

pub(crate) const LIST_USERS: &str =
    "SELECT id, name, is_owner FROM users ORDER BY is_owner DESC, name";

pub(crate) const DELETE_USER: &str = "DELETE FROM users WHERE id = $1 AND NOT is_owner";

pub(crate) const UPSERT_COLLABORATOR: &str = "INSERT INTO collaborators (repo_id, user_id, access) \
     VALUES ($1, $2, $3) ON CONFLICT (repo_id, user_id) DO UPDATE SET access = excluded.access";

pub(crate) const DELETE_COLLABORATOR: &str =
    "DELETE FROM collaborators WHERE repo_id = $1 AND user_id = $2";

pub(crate) const LIST_COLLABORATORS: &str = "SELECT users.id, users.name, users.is_owner, \
     collaborators.access FROM collaborators JOIN users ON users.id = collaborators.user_id \
     WHERE collaborators.repo_id = $1 ORDER BY users.name";

pub(crate) const SELECT_COLLABORATOR_ACCESS: &str =
    "SELECT access FROM collaborators WHERE repo_id = $1 AND user_id = $2";

pub(crate) const INSERT_EVENT: &str = "INSERT INTO events (id, repo_id, repo, type, body, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";

pub(crate) const UNPUBLISHED_EVENTS: &str = "SELECT seq, body, published_at FROM events \
     WHERE published_at IS NULL ORDER BY seq LIMIT $1";

pub(crate) const EVENTS_AFTER: &str =
    "SELECT seq, body, published_at FROM events WHERE seq > $1 ORDER BY seq LIMIT $2";

pub(crate) const LATEST_EVENT_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM events";

pub(crate) const MARK_EVENT_PUBLISHED: &str =
    "UPDATE events SET published_at = $2 WHERE seq = $1 AND published_at IS NULL";

/// Takes a free or expired lease, or renews one's own.
pub(crate) const ACQUIRE_LEASE: &str = "INSERT INTO relay_leases (name, holder, expires_at) \
     VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE \
     SET holder = excluded.holder, expires_at = excluded.expires_at \
     WHERE relay_leases.holder = excluded.holder OR relay_leases.expires_at <= $4";

pub(crate) type EventRow = (i64, String, Option<i64>);

pub(crate) fn event_from_row(
    (seq, body, published_at): EventRow,
) -> Result<nimbus_types::events::StoredEvent, StoredValueError> {
    let event = serde_json::from_str(&body).map_err(|_| StoredValueError::Invalid {
        column: "events.body",
        value: body.chars().take(80).collect(),
    })?;
    Ok(nimbus_types::events::StoredEvent {
        seq,
        event,
        published_at,
    })
}

/// A value read back from the database that does not fit its Rust type:
/// corruption or a schema mismatch, never a client's mistake.
#[derive(Debug, thiserror::Error)]
pub enum StoredValueError {
    #[error("the stored {column} {value:?} is not valid")]
    Invalid { column: &'static str, value: String },
    #[error("{column} {value} does not fit in a signed 64-bit integer")]
    TooLarge { column: &'static str, value: u64 },
}

pub(crate) type RepositoryRow = (i64, String, String, String, i64, i64);
pub(crate) type RefRow = (Vec<u8>, String, Option<String>);
pub(crate) type PackRow = (String, i64, i64, i64, i64);
pub(crate) type TokenRow = (i64, String, Option<i64>, Option<i64>, i64, String, bool);
pub(crate) type TokenInfoRow = (
    i64,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);
pub(crate) type UserRow = (i64, String, bool);

pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database_error) if database_error.is_unique_violation())
}

pub(crate) fn repository_from_row(
    (id, name, visibility, default_branch, created_at, updated_at): RepositoryRow,
) -> Result<Repository, StoredValueError> {
    let name = RepoName::new(&name).map_err(|_| StoredValueError::Invalid {
        column: "repositories.name",
        value: name.clone(),
    })?;
    let visibility = Visibility::parse(&visibility).ok_or_else(|| StoredValueError::Invalid {
        column: "repositories.visibility",
        value: visibility.clone(),
    })?;
    Ok(Repository {
        id: RepoId(id),
        name,
        visibility,
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

/// The legacy `tokens.access` column, kept consistent with the scopes.
pub(crate) fn token_access_of(scopes: Scopes) -> &'static str {
    scopes.repo_limit().unwrap_or(Access::Read).as_str()
}

pub(crate) fn access_from_str(
    column: &'static str,
    access: &str,
) -> Result<Access, StoredValueError> {
    Access::parse(access).ok_or_else(|| StoredValueError::Invalid {
        column,
        value: access.to_owned(),
    })
}

fn scopes_from_str(scopes: &str) -> Result<Scopes, StoredValueError> {
    Scopes::parse(scopes).map_err(|_| StoredValueError::Invalid {
        column: "tokens.scopes",
        value: scopes.to_owned(),
    })
}

pub(crate) fn user_from_row((id, name, is_owner): UserRow) -> User {
    User {
        id: UserId(id),
        name,
        is_owner,
    }
}

pub(crate) fn token_info_from_row(
    (id, description, scopes, created_at, expires_at, last_used_at, revoked_at): TokenInfoRow,
) -> Result<TokenInfo, StoredValueError> {
    Ok(TokenInfo {
        id,
        description,
        scopes: scopes_from_str(&scopes)?,
        created_at,
        expires_at,
        last_used_at,
        revoked_at,
    })
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
    (id, scopes, expires_at, revoked_at, user_id, user_name, is_owner): TokenRow,
) -> Result<nimbus_types::metadata::TokenRecord, StoredValueError> {
    Ok(nimbus_types::metadata::TokenRecord {
        id,
        user: User {
            id: UserId(user_id),
            name: user_name,
            is_owner,
        },
        scopes: scopes_from_str(&scopes)?,
        expires_at,
        revoked_at,
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
