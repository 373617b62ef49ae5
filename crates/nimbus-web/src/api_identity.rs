//! Identity administration in the JSON API: invitations, the audit log and
//! linked external identities (the owner only), and changing one's own
//! password. Conventions as in [`crate::api`]: every permission question
//! goes to `AccessControl`, errors are JSON, and secrets appear only in the
//! reply that creates them.

use crate::api::{
    base_url, existing_user, internal, json_reply, method_not_allowed, no_content, read_json,
    require, signed_in, unix_now,
};
use crate::error::WebError;
use crate::git_http::{principal, too_many_failures};
use crate::{App, Audit, RequestParts};
use nimbus_auth::{InstanceAction, Surface};
use nimbus_types::identity::{
    AuditEvent, AuditQuery, Invitation, InvitationRefusal, NewInvitation,
};
use nimbus_types::{Access, Principal, RepoName, Repository, UserId};
use serde::{Deserialize, Serialize};
use warp::http::{Method, StatusCode};
use warp::reply::Response;

/// How long an invitation lasts unless the request says otherwise.
pub const DEFAULT_INVITATION_HOURS: u32 = 168;
/// The longest an invitation may last.
pub const MAX_INVITATION_HOURS: u32 = 720;
/// The longest note an invitation may carry, in characters.
const MAX_NOTE_CHARS: usize = 500;
/// How many audit events one request lists unless it says otherwise.
pub const DEFAULT_AUDIT_LIMIT: u32 = 100;
/// The most audit events one request may list.
pub const MAX_AUDIT_LIMIT: u32 = 1000;
/// The longest provider name or subject accepted for a linked identity.
const MAX_IDENTITY_BYTES: usize = 255;

fn unprocessable(message: impl Into<String>) -> WebError {
    WebError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// The principal, if it may manage users (the owner).
async fn owner(app: &App, parts: &RequestParts) -> Result<Principal, WebError> {
    let principal = principal(app, parts).await?;
    require(
        app.access
            .authorize_instance(&principal, InstanceAction::ManageUsers, Surface::Api),
    )?;
    Ok(principal)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInvitation {
    /// A repository the new account becomes a collaborator of.
    repo: Option<String>,
    /// The level on `repo`: read, write or admin.
    access: Option<String>,
    expires_in_hours: Option<u32>,
    #[serde(default)]
    note: String,
}

/// An invitation as the API lists it; never its secret.
#[derive(Debug, Serialize)]
struct InvitationView {
    id: i64,
    /// pending, used, expired or revoked.
    state: &'static str,
    repo: Option<String>,
    access: Option<Access>,
    note: String,
    created_by: Option<String>,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    used_by: Option<String>,
    revoked_at: Option<i64>,
}

/// `pending`, `used`, `expired` or `revoked` at `now`.
pub fn invitation_state(invitation: &Invitation, now: i64) -> &'static str {
    match invitation.unusable(now) {
        None => "pending",
        Some(InvitationRefusal::Revoked) => "revoked",
        Some(InvitationRefusal::Used) => "used",
        Some(_) => "expired",
    }
}

fn invitation_view(invitation: &Invitation, now: i64) -> InvitationView {
    let (repo, access) = match &invitation.grant {
        Some((repo, access)) => (Some(repo.clone()), Some(*access)),
        None => (None, None),
    };
    InvitationView {
        id: invitation.id,
        state: invitation_state(invitation, now),
        repo,
        access,
        note: invitation.note.clone(),
        created_by: invitation.created_by.clone(),
        created_at: invitation.created_at,
        expires_at: invitation.expires_at,
        used_at: invitation.used_at,
        used_by: invitation.used_by.clone(),
        revoked_at: invitation.revoked_at,
    }
}

/// `GET|POST /api/v1/invitations`: the owner invites people to make an
/// account.
pub async fn invitations(app: &App, parts: RequestParts) -> Result<Response, WebError> {
    async {
        let principal = owner(app, &parts).await?;
        let now = unix_now();
        if parts.method != Method::POST {
            let listed = app.meta.list_invitations().await.map_err(internal)?;
            let views: Vec<InvitationView> =
                listed.iter().map(|i| invitation_view(i, now)).collect();
            return Ok(json_reply(StatusCode::OK, &views));
        }
        let Principal::User { id: created_by, .. } = &principal else {
            return Err(WebError::unauthorized("authentication required"));
        };
        let created_by = *created_by;
        let base = base_url(app, &parts);
        let client = parts.client.clone();
        let request: CreateInvitation = read_json(app, parts).await?;
        let hours = request.expires_in_hours.unwrap_or(DEFAULT_INVITATION_HOURS);
        let grant = match (&request.repo, &request.access) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(unprocessable(
                    "an invitation to a repository needs 'access': read, write or admin",
                ));
            }
            (None, Some(_)) => {
                return Err(unprocessable("'access' needs a 'repo' to grant it on"));
            }
            (Some(name), Some(level)) => {
                let access = Access::parse(level).ok_or_else(|| {
                    unprocessable(format!(
                        "unknown access level {level:?}; use read, write or admin"
                    ))
                })?;
                let repo = match RepoName::new(name) {
                    Ok(valid) => app.meta.repository(&valid).await.map_err(internal)?,
                    Err(_) => None,
                };
                let repo =
                    repo.ok_or_else(|| unprocessable(format!("repository '{name}' not found")))?;
                Some((repo, access))
            }
        };
        let created = create_invitation(
            app,
            &principal,
            created_by,
            grant.as_ref().map(|(repo, access)| (repo, *access)),
            hours,
            &request.note,
            client.as_deref(),
        )
        .await?;
        let (id, secret) = (created.id, created.secret);
        Ok(json_reply(
            StatusCode::CREATED,
            &serde_json::json!({
                "id": id,
                "url": format!("{base}/invite/{secret}"),
                "state": "pending",
                "repo": grant.as_ref().map(|(repo, _)| repo.name.to_string()),
                "access": grant.as_ref().map(|(_, access)| *access),
                "note": request.note,
                "created_at": created.created_at,
                "expires_at": created.expires_at,
            }),
        ))
    }
    .await
    .map_err(WebError::json)
}

/// An invitation just made: its secret exists only here. (No `Debug`: it
/// holds the secret.)
pub(crate) struct CreatedInvitation {
    pub id: i64,
    pub secret: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Invite someone as `principal` (the owner, `created_by`), optionally as a
/// collaborator of a repository, for `hours`; with its audit entry. The API
/// and the collaborators settings page.
pub(crate) async fn create_invitation(
    app: &App,
    principal: &Principal,
    created_by: UserId,
    grant: Option<(&Repository, Access)>,
    hours: u32,
    note: &str,
    client: Option<&str>,
) -> Result<CreatedInvitation, WebError> {
    if hours == 0 || hours > MAX_INVITATION_HOURS {
        return Err(unprocessable(format!(
            "expires_in_hours must be between 1 and {MAX_INVITATION_HOURS}"
        )));
    }
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(unprocessable(format!(
            "the note must be at most {MAX_NOTE_CHARS} characters long"
        )));
    }
    let now = unix_now();
    let secret = nimbus_auth::token::generate();
    let expires_at = now.saturating_add(i64::from(hours) * 3600);
    let id = app
        .meta
        .create_invitation(&NewInvitation {
            hash: nimbus_auth::token::hash(&secret).to_vec(),
            created_by,
            grant: grant.map(|(repo, access)| (repo.id, access)),
            note: note.to_owned(),
            created_at: now,
            expires_at,
        })
        .await
        .map_err(internal)?;
    let mut audit = Audit::new("invitation.created")
        .by(principal)
        .target(id)
        .client(client)
        .detail(match &grant {
            Some((_, access)) => format!("{access} access; expires in {hours}h"),
            None => format!("expires in {hours}h"),
        });
    if let Some((repo, _)) = &grant {
        audit = audit.repo(&repo.name);
    }
    app.audit(audit).await;
    tracing::info!(
        invitation = id,
        by = principal.label(),
        "invitation created"
    );
    Ok(CreatedInvitation {
        id,
        secret,
        created_at: now,
        expires_at,
    })
}

/// `DELETE /api/v1/invitations/{id}`: the owner revokes a pending
/// invitation.
pub async fn invitation(app: &App, id: &str, parts: RequestParts) -> Result<Response, WebError> {
    async {
        let principal = owner(app, &parts).await?;
        if parts.method != Method::DELETE {
            return Err(method_not_allowed());
        }
        revoke_invitation(app, &principal, id, parts.client.as_deref()).await?;
        Ok(no_content())
    }
    .await
    .map_err(WebError::json)
}

/// Revoke the pending invitation `id` as `principal` (the owner), with its
/// audit entry; 404 if there is no such pending invitation. The API and the
/// collaborators settings page.
pub(crate) async fn revoke_invitation(
    app: &App,
    principal: &Principal,
    id: &str,
    client: Option<&str>,
) -> Result<(), WebError> {
    let not_found = || WebError::not_found(format!("no pending invitation {id}"));
    let id: i64 = id.parse().map_err(|_| not_found())?;
    if !app
        .meta
        .revoke_invitation(id, unix_now())
        .await
        .map_err(internal)?
    {
        return Err(not_found());
    }
    app.audit(
        Audit::new("invitation.revoked")
            .by(principal)
            .target(id)
            .client(client),
    )
    .await;
    tracing::info!(
        invitation = id,
        by = principal.label(),
        "invitation revoked"
    );
    Ok(())
}

/// The query of `GET /api/v1/audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    action: Option<String>,
    actor: Option<String>,
    repo: Option<String>,
    before: Option<i64>,
    since: Option<i64>,
    limit: Option<u32>,
}

/// Whether `action` is a valid action filter: `[a-z.]+` (an exact action,
/// or a prefix ending in `.`).
pub fn valid_action_filter(action: &str) -> bool {
    !action.is_empty() && action.bytes().all(|b| b.is_ascii_lowercase() || b == b'.')
}

/// Turn the query string of `GET /api/v1/audit` into a store query.
fn audit_query(query: Option<&str>) -> Result<AuditQuery, WebError> {
    let params: AuditParams = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| unprocessable(format!("invalid query: {e}")))?;
    let empty_is_none = |value: Option<String>| value.filter(|v| !v.is_empty());
    let action = empty_is_none(params.action);
    if let Some(action) = &action
        && !valid_action_filter(action)
    {
        return Err(unprocessable(format!(
            "invalid action filter {action:?}: use lowercase letters and dots, like token. or push"
        )));
    }
    let limit = params.limit.unwrap_or(DEFAULT_AUDIT_LIMIT);
    if limit == 0 || limit > MAX_AUDIT_LIMIT {
        return Err(unprocessable(format!(
            "limit must be between 1 and {MAX_AUDIT_LIMIT}"
        )));
    }
    Ok(AuditQuery {
        action,
        actor: empty_is_none(params.actor),
        repo: empty_is_none(params.repo),
        before: params.before,
        since: params.since,
        limit,
    })
}

#[derive(Debug, Serialize)]
struct AuditView {
    id: i64,
    at: i64,
    actor: Option<String>,
    action: String,
    repo: Option<String>,
    target: Option<String>,
    client: Option<String>,
    detail: String,
}

fn audit_view(event: AuditEvent) -> AuditView {
    AuditView {
        id: event.id,
        at: event.at,
        actor: event.actor,
        action: event.action,
        repo: event.repo,
        target: event.target,
        client: event.client,
        detail: event.detail,
    }
}

/// `GET /api/v1/audit?action=&actor=&repo=&before=&since=&limit=`: the
/// owner reads the audit log, newest first.
pub async fn audit(app: &App, parts: RequestParts) -> Result<Response, WebError> {
    async {
        owner(app, &parts).await?;
        let query = audit_query(parts.query.as_deref())?;
        let events = app.meta.list_audit(&query).await.map_err(internal)?;
        let views: Vec<AuditView> = events.into_iter().map(audit_view).collect();
        Ok(json_reply(StatusCode::OK, &views))
    }
    .await
    .map_err(WebError::json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePassword {
    /// Required when the account has a password.
    current_password: Option<String>,
    new_password: String,
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, WebError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| WebError::internal(&e))
}

/// `PUT /api/v1/user/password`: set one's own password. When the account
/// has one, the current password must be given (a wrong one is a 403, not a
/// 401: the request is authenticated, the proof is wrong); every web session
/// of the account is revoked afterwards.
pub async fn password(app: &App, parts: RequestParts) -> Result<Response, WebError> {
    async {
        let (user_id, principal) = signed_in(app, &parts).await?;
        let Principal::User { name, .. } = &principal else {
            return Err(WebError::unauthorized("authentication required"));
        };
        let client = parts.client.clone();
        let client_key = client.as_deref().map(|ip| format!("ip:{ip}"));
        if let Some(key) = &client_key
            && let Some(wait) = app.limits.clients.blocked(key, std::time::Instant::now())
        {
            return Err(too_many_failures(wait));
        }
        let request: ChangePassword = read_json(app, parts).await?;
        let (user, stored) = app
            .meta
            .user_credentials(name)
            .await
            .map_err(internal)?
            .ok_or_else(|| WebError::unauthorized("authentication required"))?;
        if user.id != user_id {
            return Err(WebError::unauthorized("authentication required"));
        }
        if let Some(stored) = stored {
            let current = request.current_password.clone().unwrap_or_default();
            let matches =
                blocking(move || nimbus_auth::password::verify(&current, Some(&stored))).await?;
            if !matches {
                if let Some(key) = &client_key {
                    app.limits
                        .clients
                        .record_failure(key, std::time::Instant::now());
                }
                app.audit(
                    Audit::new("password.failed")
                        .by(&principal)
                        .target(&user.name)
                        .client(client.as_deref())
                        .detail("wrong current password"),
                )
                .await;
                return Err(WebError::forbidden(if request.current_password.is_none() {
                    "this account has a password: give it as current_password"
                } else {
                    "the current password is wrong"
                }));
            }
        }
        let new_password = request.new_password;
        let user_name = user.name.clone();
        let hashed = blocking(move || {
            nimbus_auth::password::check_strength(&new_password, &user_name)?;
            nimbus_auth::password::hash(&new_password)
        })
        .await?
        .map_err(|err| match err {
            nimbus_auth::password::PasswordError::Hashing => WebError::internal(&err),
            err => unprocessable(err.to_string()),
        })?;
        app.meta
            .set_password_hash(user.id, Some(&hashed))
            .await
            .map_err(internal)?;
        let revoked = app
            .meta
            .revoke_user_sessions(user.id, unix_now())
            .await
            .map_err(internal)?;
        app.audit(
            Audit::new("password.changed")
                .by(&principal)
                .target(&user.name)
                .client(client.as_deref())
                .detail(format!("{revoked} web sessions revoked")),
        )
        .await;
        tracing::info!(user = %user.name, "password changed");
        Ok(no_content())
    }
    .await
    .map_err(WebError::json)
}

#[derive(Debug, Serialize)]
struct IdentityView {
    provider: String,
    subject: String,
}

/// `GET /api/v1/users/{name}/identities`: a user's linked external
/// identities.
pub async fn identities(app: &App, name: &str, parts: RequestParts) -> Result<Response, WebError> {
    async {
        owner(app, &parts).await?;
        let user = existing_user(app, name).await?;
        let linked = app.meta.list_identities(user.id).await.map_err(internal)?;
        let views: Vec<IdentityView> = linked
            .into_iter()
            .map(|(provider, subject)| IdentityView { provider, subject })
            .collect();
        Ok(json_reply(StatusCode::OK, &views))
    }
    .await
    .map_err(WebError::json)
}

/// Decode `%XX` escapes of a path segment (a subject may hold `|` or `/`).
pub fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn identity_part(segment: &str, what: &str) -> Result<String, WebError> {
    let decoded = percent_decode(segment)
        .ok_or_else(|| unprocessable(format!("the {what} is not valid percent-encoded UTF-8")))?;
    if decoded.is_empty() || decoded.len() > MAX_IDENTITY_BYTES {
        return Err(unprocessable(format!(
            "the {what} must be 1 to {MAX_IDENTITY_BYTES} bytes long"
        )));
    }
    if decoded.chars().any(char::is_control) {
        return Err(unprocessable(format!(
            "the {what} must not contain control characters"
        )));
    }
    Ok(decoded)
}

/// `PUT|DELETE /api/v1/users/{name}/identities/{provider}/{subject}`: the
/// owner links an external identity to an account, or unlinks it.
pub async fn identity(
    app: &App,
    name: &str,
    provider: &str,
    subject: &str,
    parts: RequestParts,
) -> Result<Response, WebError> {
    async {
        let principal = owner(app, &parts).await?;
        let user = existing_user(app, name).await?;
        let provider = identity_part(provider, "provider")?;
        let subject = identity_part(subject, "subject")?;
        let view = IdentityView {
            provider: provider.clone(),
            subject: subject.clone(),
        };
        match parts.method {
            Method::PUT => {
                let holder = app
                    .meta
                    .user_by_identity(&provider, &subject)
                    .await
                    .map_err(internal)?;
                match holder {
                    Some(holder) if holder.id == user.id => {
                        return Ok(json_reply(StatusCode::OK, &view));
                    }
                    Some(holder) => {
                        return Err(WebError::new(
                            StatusCode::CONFLICT,
                            format!(
                                "this identity is linked to '{}'; unlink it there first",
                                holder.name
                            ),
                        ));
                    }
                    None => {}
                }
                if !app
                    .meta
                    .link_identity(user.id, &provider, &subject)
                    .await
                    .map_err(internal)?
                {
                    return Err(WebError::new(
                        StatusCode::CONFLICT,
                        "this identity is linked to another account",
                    ));
                }
                app.audit(
                    Audit::new("identity.linked")
                        .by(&principal)
                        .target(&user.name)
                        .client(parts.client.as_deref())
                        .detail(format!("{provider} {subject}")),
                )
                .await;
                tracing::info!(user = %user.name, %provider, "identity linked");
                Ok(json_reply(StatusCode::CREATED, &view))
            }
            Method::DELETE => {
                if !app
                    .meta
                    .unlink_identity(user.id, &provider, &subject)
                    .await
                    .map_err(internal)?
                {
                    return Err(WebError::not_found(format!(
                        "'{}' has no linked identity {subject:?} at {provider:?}",
                        user.name
                    )));
                }
                app.audit(
                    Audit::new("identity.unlinked")
                        .by(&principal)
                        .target(&user.name)
                        .client(parts.client.as_deref())
                        .detail(format!("{provider} {subject}")),
                )
                .await;
                tracing::info!(user = %user.name, %provider, "identity unlinked");
                Ok(no_content())
            }
            _ => Err(method_not_allowed()),
        }
    }
    .await
    .map_err(WebError::json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_filters_are_lowercase_and_dots() {
        for good in ["push", "token.", "token.created", "a.b.c"] {
            assert!(valid_action_filter(good), "{good}");
        }
        for bad in ["", "Token", "token_created", "token%", "token*", "a b", "1"] {
            assert!(!valid_action_filter(bad), "{bad}");
        }
    }

    #[test]
    fn audit_queries_are_parsed_and_bounded() {
        let query =
            audit_query(Some("action=token.&actor=bob&repo=x&before=9&limit=5")).expect("valid");
        assert_eq!(query.action.as_deref(), Some("token."));
        assert_eq!(query.actor.as_deref(), Some("bob"));
        assert_eq!(query.repo.as_deref(), Some("x"));
        assert_eq!(query.before, Some(9));
        assert_eq!(query.limit, 5);
        assert_eq!(audit_query(None).expect("empty").limit, DEFAULT_AUDIT_LIMIT);
        assert!(
            audit_query(Some("action="))
                .expect("empty action")
                .action
                .is_none()
        );
        for bad in [
            "action=DROP",
            "action=token%25",
            "limit=0",
            "limit=1001",
            "limit=many",
            "before=x",
            "colour=red",
        ] {
            let err = audit_query(Some(bad)).expect_err(bad);
            assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        }
    }

    #[test]
    fn identity_segments_are_percent_decoded() {
        assert_eq!(percent_decode("auth0%7C42").as_deref(), Some("auth0|42"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("bad%4"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
