//! The `IdentityStore` implementation shared by SQLite and PostgreSQL, like
//! [`crate::shared`]: the SQL is written in the dialect both understand, and
//! each backend invokes [`identity_store!`] after defining `BEGIN_WRITE` and
//! `query_failed`.

use nimbus_types::Access;
use nimbus_types::identity::{AuditEvent, Invitation, SessionRecord};
use nimbus_types::metadata::User;

pub(crate) const SELECT_USER_BY_ID: &str = "SELECT id, name, is_owner FROM users WHERE id = $1";

pub(crate) const SELECT_USER_CREDENTIALS: &str =
    "SELECT id, name, is_owner, password_hash FROM users WHERE name = $1";

pub(crate) const SET_PASSWORD_HASH: &str = "UPDATE users SET password_hash = $2 WHERE id = $1";

pub(crate) const INSERT_SESSION: &str = "INSERT INTO sessions \
     (id, user_id, refresh_hash, csrf, created_at, refreshed_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $5, $6)";

pub(crate) const SELECT_SESSION: &str = "SELECT sessions.id, users.id, users.name, users.is_owner, \
     sessions.csrf, sessions.created_at, sessions.refreshed_at, sessions.expires_at, \
     sessions.revoked_at \
     FROM sessions JOIN users ON users.id = sessions.user_id WHERE sessions.id = $1";

/// Succeeds only with the current secret of a live session.
pub(crate) const ROTATE_SESSION: &str = "UPDATE sessions SET \
     previous_refresh_hash = refresh_hash, refresh_hash = $3, refreshed_at = $4 \
     WHERE id = $1 AND refresh_hash = $2 AND revoked_at IS NULL AND expires_at > $4";

/// The previous secret presented again: revoke (theft detection).
pub(crate) const REVOKE_REUSED_SESSION: &str = "UPDATE sessions SET revoked_at = $3 \
     WHERE id = $1 AND previous_refresh_hash = $2 AND revoked_at IS NULL";

pub(crate) const REVOKE_SESSION: &str =
    "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2";

pub(crate) const REVOKE_USER_SESSIONS: &str = "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL \
     AND expires_at > $2";

/// Sessions that ended more than a day ago are of no use to anyone.
pub(crate) const PRUNE_SESSIONS: &str = "DELETE FROM sessions WHERE expires_at < $1 \
     OR (revoked_at IS NOT NULL AND revoked_at < $1)";

pub(crate) const INSERT_INVITATION: &str = "INSERT INTO invitations \
     (hash, created_by, repo_id, access, note, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";

/// The columns of an [`InvitationRow`], with the names they refer to.
macro_rules! invitation_select {
    () => {
        "SELECT invitations.id, creator.name, repositories.name, \
         invitations.access, invitations.note, invitations.created_at, invitations.expires_at, \
         invitations.used_at, acceptor.name, invitations.revoked_at \
         FROM invitations \
         LEFT JOIN users creator ON creator.id = invitations.created_by \
         LEFT JOIN users acceptor ON acceptor.id = invitations.used_by \
         LEFT JOIN repositories ON repositories.id = invitations.repo_id"
    };
}

pub(crate) const LIST_INVITATIONS: &str =
    concat!(invitation_select!(), " ORDER BY invitations.id DESC");

pub(crate) const SELECT_INVITATION_BY_HASH: &str =
    concat!(invitation_select!(), " WHERE invitations.hash = $1");

pub(crate) const REVOKE_INVITATION: &str = "UPDATE invitations SET revoked_at = $2 \
     WHERE id = $1 AND used_at IS NULL AND revoked_at IS NULL";

/// Claims the invitation: only one acceptance can succeed.
pub(crate) const CLAIM_INVITATION: &str = "UPDATE invitations SET used_at = $2 \
     WHERE hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2 \
     RETURNING id, repo_id, access";

pub(crate) const SET_INVITATION_USER: &str = "UPDATE invitations SET used_by = $2 WHERE id = $1";

pub(crate) const INSERT_ACCOUNT: &str = "INSERT INTO users (name, is_owner, created_at, password_hash) \
     VALUES ($1, FALSE, $2, $3) RETURNING id";

pub(crate) const SELECT_USER_BY_IDENTITY: &str = "SELECT users.id, users.name, users.is_owner \
     FROM identities JOIN users ON users.id = identities.user_id \
     WHERE identities.provider = $1 AND identities.subject = $2";

pub(crate) const INSERT_IDENTITY: &str = "INSERT INTO identities (provider, subject, user_id, created_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (provider, subject) DO NOTHING";

pub(crate) const LIST_IDENTITIES: &str =
    "SELECT provider, subject FROM identities WHERE user_id = $1 ORDER BY provider, subject";

pub(crate) const DELETE_IDENTITY: &str =
    "DELETE FROM identities WHERE user_id = $1 AND provider = $2 AND subject = $3";

pub(crate) const INSERT_LOGIN_FLOW: &str = "INSERT INTO login_flows \
     (state_hash, provider, nonce, pkce_verifier, invitation_hash, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

pub(crate) const TAKE_LOGIN_FLOW: &str = "DELETE FROM login_flows WHERE state_hash = $1 \
     RETURNING state_hash, provider, nonce, pkce_verifier, invitation_hash, created_at, expires_at";

pub(crate) const PRUNE_LOGIN_FLOWS: &str = "DELETE FROM login_flows WHERE expires_at <= $1";

pub(crate) const LIST_SIGNING_KEYS: &str = "SELECT kid, algorithm, private_key, public_key, created_at \
     FROM signing_keys ORDER BY created_at DESC, kid";

pub(crate) const INSERT_SIGNING_KEY: &str = "INSERT INTO signing_keys \
     (kid, algorithm, private_key, public_key, created_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (kid) DO NOTHING";

pub(crate) const INSERT_AUDIT_EVENT: &str = "INSERT INTO audit_events \
     (at, actor_id, actor, action, repo, target, client, detail) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// `$1` is an action pattern for LIKE (callers allow only `[a-z.]`, so it
/// has no wildcard but the trailing `%` of a prefix).
pub(crate) const LIST_AUDIT_EVENTS: &str = "SELECT id, at, actor, action, repo, target, client, detail \
     FROM audit_events \
     WHERE ($1 IS NULL OR action LIKE $1) AND ($2 IS NULL OR actor = $2) \
     AND ($3 IS NULL OR repo = $3) AND ($4 IS NULL OR id < $4) AND ($5 IS NULL OR at >= $5) \
     ORDER BY id DESC LIMIT $6";

pub(crate) type SessionRow = (
    String,
    i64,
    String,
    bool,
    String,
    i64,
    i64,
    i64,
    Option<i64>,
);

pub(crate) fn session_from_row(row: SessionRow) -> SessionRecord {
    let (id, user_id, name, is_owner, csrf, created_at, refreshed_at, expires_at, revoked_at) = row;
    SessionRecord {
        id,
        user: crate::sql::user_from_row((user_id, name, is_owner)),
        csrf,
        created_at,
        refreshed_at,
        expires_at,
        revoked_at,
    }
}

pub(crate) type InvitationRow = (
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

pub(crate) fn invitation_from_row(
    row: InvitationRow,
) -> Result<Invitation, crate::sql::StoredValueError> {
    let (id, created_by, repo, access, note, created_at, expires_at, used_at, used_by, revoked_at) =
        row;
    let grant = match (repo, access) {
        (Some(repo), Some(access)) => Some((
            repo,
            crate::sql::access_from_str("invitations.access", &access)?,
        )),
        _ => None,
    };
    Ok(Invitation {
        id,
        created_by,
        grant,
        note,
        created_at,
        expires_at,
        used_at,
        used_by,
        revoked_at,
    })
}

pub(crate) type AuditRow = (
    i64,
    i64,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

pub(crate) fn audit_from_row(row: AuditRow) -> AuditEvent {
    let (id, at, actor, action, repo, target, client, detail) = row;
    AuditEvent {
        id,
        at,
        actor,
        action,
        repo,
        target,
        client,
        detail,
    }
}

/// The stored form of an optional grant.
pub(crate) fn grant_columns(
    grant: Option<(nimbus_types::RepoId, Access)>,
) -> (Option<i64>, Option<&'static str>) {
    match grant {
        Some((repo, access)) => (Some(repo.0), Some(access.as_str())),
        None => (None, None),
    }
}

/// The actor columns of an audit event.
pub(crate) fn actor_columns(actor: Option<&User>) -> (Option<i64>, Option<&str>) {
    match actor {
        Some(user) => (Some(user.id.0), Some(user.name.as_str())),
        None => (None, None),
    }
}

/// Expands to `impl IdentityStore for $store`.
macro_rules! identity_store {
    ($store:ident, $error:ident) => {
        #[async_trait::async_trait]
        impl nimbus_types::identity::IdentityStore for $store {
            async fn user_by_id(&self, id: UserId) -> Result<Option<User>, MetadataError> {
                let row: Option<sql::UserRow> =
                    sqlx::query_as(crate::identity::SELECT_USER_BY_ID)
                        .bind(id.0)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(query_failed("looking up a user"))?;
                Ok(row.map(sql::user_from_row))
            }

            async fn user_credentials(
                &self,
                name: &str,
            ) -> Result<Option<(User, Option<String>)>, MetadataError> {
                let row: Option<(i64, String, bool, Option<String>)> =
                    sqlx::query_as(crate::identity::SELECT_USER_CREDENTIALS)
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(query_failed("looking up a user"))?;
                Ok(row.map(|(id, name, is_owner, hash)| {
                    (sql::user_from_row((id, name, is_owner)), hash)
                }))
            }

            async fn set_password_hash(
                &self,
                user: UserId,
                hash: Option<&str>,
            ) -> Result<(), MetadataError> {
                let affected = sqlx::query(crate::identity::SET_PASSWORD_HASH)
                    .bind(user.0)
                    .bind(hash)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("setting a password"))?
                    .rows_affected();
                if affected == 1 {
                    Ok(())
                } else {
                    Err(MetadataError::UserNotFound)
                }
            }

            async fn create_session(
                &self,
                session: &nimbus_types::identity::NewSession,
            ) -> Result<(), MetadataError> {
                sqlx::query(crate::identity::PRUNE_SESSIONS)
                    .bind(session.created_at - 86_400)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("pruning old sessions"))?;
                sqlx::query(crate::identity::INSERT_SESSION)
                    .bind(&session.id)
                    .bind(session.user.0)
                    .bind(&session.refresh_hash)
                    .bind(&session.csrf)
                    .bind(session.created_at)
                    .bind(session.expires_at)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("creating a session"))?;
                Ok(())
            }

            async fn session(
                &self,
                id: &str,
            ) -> Result<Option<nimbus_types::identity::SessionRecord>, MetadataError> {
                let row: Option<crate::identity::SessionRow> =
                    sqlx::query_as(crate::identity::SELECT_SESSION)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(query_failed("looking up a session"))?;
                Ok(row.map(crate::identity::session_from_row))
            }

            async fn rotate_session(
                &self,
                id: &str,
                presented: &[u8],
                replacement: &[u8],
                now: i64,
            ) -> Result<nimbus_types::identity::Rotation, MetadataError> {
                use nimbus_types::identity::Rotation;
                let rotated = sqlx::query(crate::identity::ROTATE_SESSION)
                    .bind(id)
                    .bind(presented)
                    .bind(replacement)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("refreshing a session"))?
                    .rows_affected();
                if rotated == 1 {
                    return Ok(match self.session(id).await? {
                        Some(session) => Rotation::Rotated(session),
                        None => Rotation::Refused,
                    });
                }
                let revoked = sqlx::query(crate::identity::REVOKE_REUSED_SESSION)
                    .bind(id)
                    .bind(presented)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("revoking a session"))?
                    .rows_affected();
                Ok(if revoked == 1 {
                    Rotation::Reused
                } else {
                    Rotation::Refused
                })
            }

            async fn revoke_session(&self, id: &str, now: i64) -> Result<bool, MetadataError> {
                let affected = sqlx::query(crate::identity::REVOKE_SESSION)
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("revoking a session"))?
                    .rows_affected();
                Ok(affected == 1)
            }

            async fn revoke_user_sessions(
                &self,
                user: UserId,
                now: i64,
            ) -> Result<u64, MetadataError> {
                Ok(sqlx::query(crate::identity::REVOKE_USER_SESSIONS)
                    .bind(user.0)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("revoking sessions"))?
                    .rows_affected())
            }

            async fn create_invitation(
                &self,
                invitation: &nimbus_types::identity::NewInvitation,
            ) -> Result<i64, MetadataError> {
                let (repo, access) = crate::identity::grant_columns(invitation.grant);
                let id: i64 = sqlx::query_scalar(crate::identity::INSERT_INVITATION)
                    .bind(&invitation.hash)
                    .bind(invitation.created_by.0)
                    .bind(repo)
                    .bind(access)
                    .bind(&invitation.note)
                    .bind(invitation.created_at)
                    .bind(invitation.expires_at)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|error| -> MetadataError {
                        if matches!(&error, sqlx::Error::Database(e) if e.is_foreign_key_violation())
                        {
                            MetadataError::RepositoryNotFound
                        } else {
                            query_failed("creating an invitation")(error).into()
                        }
                    })?;
                Ok(id)
            }

            async fn list_invitations(
                &self,
            ) -> Result<Vec<nimbus_types::identity::Invitation>, MetadataError> {
                let rows: Vec<crate::identity::InvitationRow> =
                    sqlx::query_as(crate::identity::LIST_INVITATIONS)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(query_failed("listing invitations"))?;
                Ok(rows
                    .into_iter()
                    .map(crate::identity::invitation_from_row)
                    .collect::<Result<_, _>>()
                    .map_err($error::from)?)
            }

            async fn invitation_by_hash(
                &self,
                hash: &[u8],
            ) -> Result<Option<nimbus_types::identity::Invitation>, MetadataError> {
                let row: Option<crate::identity::InvitationRow> =
                    sqlx::query_as(crate::identity::SELECT_INVITATION_BY_HASH)
                        .bind(hash)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(query_failed("looking up an invitation"))?;
                Ok(row
                    .map(crate::identity::invitation_from_row)
                    .transpose()
                    .map_err($error::from)?)
            }

            async fn revoke_invitation(&self, id: i64, now: i64) -> Result<bool, MetadataError> {
                let affected = sqlx::query(crate::identity::REVOKE_INVITATION)
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("revoking an invitation"))?
                    .rows_affected();
                Ok(affected == 1)
            }

            async fn accept_invitation(
                &self,
                hash: &[u8],
                account: &nimbus_types::identity::NewAccount,
                now: i64,
            ) -> Result<Result<User, nimbus_types::identity::InvitationRefusal>, MetadataError>
            {
                use nimbus_types::identity::InvitationRefusal;
                let mut transaction = self
                    .pool
                    .begin_with(BEGIN_WRITE)
                    .await
                    .map_err(query_failed("starting to accept an invitation"))?;
                let claimed: Option<(i64, Option<i64>, Option<String>)> =
                    sqlx::query_as(crate::identity::CLAIM_INVITATION)
                        .bind(hash)
                        .bind(now)
                        .fetch_optional(&mut *transaction)
                        .await
                        .map_err(query_failed("claiming an invitation"))?;
                let Some((invitation, repo, access)) = claimed else {
                    drop(transaction);
                    let refusal = match self.invitation_by_hash(hash).await? {
                        None => InvitationRefusal::Unknown,
                        Some(found) => found.unusable(now).unwrap_or(InvitationRefusal::Used),
                    };
                    return Ok(Err(refusal));
                };
                let inserted: Result<i64, sqlx::Error> =
                    sqlx::query_scalar(crate::identity::INSERT_ACCOUNT)
                        .bind(&account.name)
                        .bind(now)
                        .bind(account.password_hash.as_deref())
                        .fetch_one(&mut *transaction)
                        .await;
                let user_id = match inserted {
                    Ok(id) => id,
                    Err(error) if sql::is_unique_violation(&error) => {
                        return Ok(Err(InvitationRefusal::NameTaken(account.name.clone())));
                    }
                    Err(error) => return Err(query_failed("creating an account")(error).into()),
                };
                sqlx::query(crate::identity::SET_INVITATION_USER)
                    .bind(invitation)
                    .bind(user_id)
                    .execute(&mut *transaction)
                    .await
                    .map_err(query_failed("recording an invitation's use"))?;
                if let (Some(repo), Some(access)) = (repo, access) {
                    sqlx::query(sql::UPSERT_COLLABORATOR)
                        .bind(repo)
                        .bind(user_id)
                        .bind(access)
                        .execute(&mut *transaction)
                        .await
                        .map_err(query_failed("granting an invitation's access"))?;
                }
                if let Some((provider, subject)) = &account.identity {
                    let linked = sqlx::query(crate::identity::INSERT_IDENTITY)
                        .bind(provider)
                        .bind(subject)
                        .bind(user_id)
                        .bind(now)
                        .execute(&mut *transaction)
                        .await
                        .map_err(query_failed("linking an identity"))?
                        .rows_affected();
                    if linked != 1 {
                        return Ok(Err(InvitationRefusal::IdentityLinked));
                    }
                }
                transaction
                    .commit()
                    .await
                    .map_err(query_failed("committing an accepted invitation"))?;
                Ok(Ok(User {
                    id: UserId(user_id),
                    name: account.name.clone(),
                    is_owner: false,
                }))
            }

            async fn user_by_identity(
                &self,
                provider: &str,
                subject: &str,
            ) -> Result<Option<User>, MetadataError> {
                let row: Option<sql::UserRow> =
                    sqlx::query_as(crate::identity::SELECT_USER_BY_IDENTITY)
                        .bind(provider)
                        .bind(subject)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(query_failed("looking up an identity"))?;
                Ok(row.map(sql::user_from_row))
            }

            async fn link_identity(
                &self,
                user: UserId,
                provider: &str,
                subject: &str,
            ) -> Result<bool, MetadataError> {
                let affected = sqlx::query(crate::identity::INSERT_IDENTITY)
                    .bind(provider)
                    .bind(subject)
                    .bind(user.0)
                    .bind(sql::unix_now())
                    .execute(&self.pool)
                    .await
                    .map_err(|error| -> MetadataError {
                        if matches!(&error, sqlx::Error::Database(e) if e.is_foreign_key_violation())
                        {
                            MetadataError::UserNotFound
                        } else {
                            query_failed("linking an identity")(error).into()
                        }
                    })?
                    .rows_affected();
                Ok(affected == 1)
            }

            async fn list_identities(
                &self,
                user: UserId,
            ) -> Result<Vec<(String, String)>, MetadataError> {
                Ok(sqlx::query_as(crate::identity::LIST_IDENTITIES)
                    .bind(user.0)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_failed("listing identities"))?)
            }

            async fn unlink_identity(
                &self,
                user: UserId,
                provider: &str,
                subject: &str,
            ) -> Result<bool, MetadataError> {
                let affected = sqlx::query(crate::identity::DELETE_IDENTITY)
                    .bind(user.0)
                    .bind(provider)
                    .bind(subject)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("unlinking an identity"))?
                    .rows_affected();
                Ok(affected == 1)
            }

            async fn create_login_flow(
                &self,
                flow: &nimbus_types::identity::LoginFlow,
            ) -> Result<(), MetadataError> {
                sqlx::query(crate::identity::PRUNE_LOGIN_FLOWS)
                    .bind(flow.created_at)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("pruning sign-in flows"))?;
                sqlx::query(crate::identity::INSERT_LOGIN_FLOW)
                    .bind(&flow.state_hash)
                    .bind(&flow.provider)
                    .bind(&flow.nonce)
                    .bind(&flow.pkce_verifier)
                    .bind(flow.invitation_hash.as_deref())
                    .bind(flow.created_at)
                    .bind(flow.expires_at)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("recording a sign-in flow"))?;
                Ok(())
            }

            async fn take_login_flow(
                &self,
                state_hash: &[u8],
                now: i64,
            ) -> Result<Option<nimbus_types::identity::LoginFlow>, MetadataError> {
                type FlowRow = (Vec<u8>, String, String, String, Option<Vec<u8>>, i64, i64);
                let row: Option<FlowRow> = sqlx::query_as(crate::identity::TAKE_LOGIN_FLOW)
                    .bind(state_hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_failed("taking a sign-in flow"))?;
                Ok(row
                    .map(
                        |(
                            state_hash,
                            provider,
                            nonce,
                            pkce_verifier,
                            invitation_hash,
                            created_at,
                            expires_at,
                        )| nimbus_types::identity::LoginFlow {
                            state_hash,
                            provider,
                            nonce,
                            pkce_verifier,
                            invitation_hash,
                            created_at,
                            expires_at,
                        },
                    )
                    .filter(|flow| flow.expires_at > now))
            }

            async fn signing_keys(
                &self,
            ) -> Result<Vec<nimbus_types::identity::SigningKey>, MetadataError> {
                let rows: Vec<(String, String, Vec<u8>, Vec<u8>, i64)> =
                    sqlx::query_as(crate::identity::LIST_SIGNING_KEYS)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(query_failed("reading signing keys"))?;
                Ok(rows
                    .into_iter()
                    .map(|(kid, algorithm, private_key, public_key, created_at)| {
                        nimbus_types::identity::SigningKey {
                            kid,
                            algorithm,
                            private_key,
                            public_key,
                            created_at,
                        }
                    })
                    .collect())
            }

            async fn add_signing_key(
                &self,
                key: &nimbus_types::identity::SigningKey,
            ) -> Result<(), MetadataError> {
                sqlx::query(crate::identity::INSERT_SIGNING_KEY)
                    .bind(&key.kid)
                    .bind(&key.algorithm)
                    .bind(&key.private_key)
                    .bind(&key.public_key)
                    .bind(key.created_at)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("storing a signing key"))?;
                Ok(())
            }

            async fn record_audit(
                &self,
                event: &nimbus_types::identity::NewAuditEvent,
            ) -> Result<(), MetadataError> {
                let (actor_id, actor) = crate::identity::actor_columns(event.actor.as_ref());
                sqlx::query(crate::identity::INSERT_AUDIT_EVENT)
                    .bind(event.at)
                    .bind(actor_id)
                    .bind(actor)
                    .bind(&event.action)
                    .bind(event.repo.as_deref())
                    .bind(event.target.as_deref())
                    .bind(event.client.as_deref())
                    .bind(&event.detail)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("recording an audit event"))?;
                Ok(())
            }

            async fn list_audit(
                &self,
                query: &nimbus_types::identity::AuditQuery,
            ) -> Result<Vec<nimbus_types::identity::AuditEvent>, MetadataError> {
                let action = query.action.as_ref().map(|action| {
                    if action.ends_with('.') {
                        format!("{action}%")
                    } else {
                        action.clone()
                    }
                });
                let rows: Vec<crate::identity::AuditRow> =
                    sqlx::query_as(crate::identity::LIST_AUDIT_EVENTS)
                        .bind(action)
                        .bind(query.actor.as_deref())
                        .bind(query.repo.as_deref())
                        .bind(query.before)
                        .bind(query.since)
                        .bind(i64::from(query.limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(query_failed("listing audit events"))?;
                Ok(rows
                    .into_iter()
                    .map(crate::identity::audit_from_row)
                    .collect())
            }
        }
    };
}

pub(crate) use identity_store;
