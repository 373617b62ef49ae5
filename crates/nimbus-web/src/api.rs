//! The JSON API: repositories, collaborators, users and tokens under
//! `/api/v1`, authorised by `Authorization: Bearer <token>` (the token needs
//! the `api` scope). Every permission question goes to `AccessControl`;
//! this module only maps its decisions to statuses.

use crate::app::AdminError;
use crate::error::WebError;
use crate::git_http::{auth_failure, authorized_repo, principal};
use crate::{App, Audit, RequestParts, body};
use nimbus_auth::{Decision, InstanceAction, RepoAction, Surface};
use nimbus_types::metadata::{MetadataError, TokenInfo, User};
pub(crate) use nimbus_types::unix_now;
use nimbus_types::{
    Access, Principal, RepoName, RepoUpdate, Repository, Scopes, UserId, Visibility,
};
use serde::{Deserialize, Serialize};
use warp::http::{Method, StatusCode, header};
use warp::reply::{Reply, Response};

/// A repository as the API shows it.
#[derive(Debug, Serialize)]
pub struct RepoView {
    pub id: i64,
    pub name: String,
    pub visibility: Visibility,
    /// The old boolean form of `visibility`: true only for private.
    pub private: bool,
    pub default_branch: String,
    pub clone_url: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRepo {
    name: String,
    /// An alias of `visibility`: `true` is private, `false` public.
    private: Option<bool>,
    visibility: Option<Visibility>,
    default_branch: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchRepo {
    name: Option<String>,
    private: Option<bool>,
    visibility: Option<Visibility>,
    default_branch: Option<String>,
}

/// `visibility` and its alias `private` must agree when both are given.
fn visibility_of(
    private: Option<bool>,
    visibility: Option<Visibility>,
) -> Result<Option<Visibility>, WebError> {
    match (private, visibility) {
        (Some(private), Some(visibility)) if (visibility == Visibility::Private) != private => {
            Err(WebError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "'private' and 'visibility' disagree; give only 'visibility'",
            ))
        }
        (_, Some(visibility)) => Ok(Some(visibility)),
        (Some(private), None) => Ok(Some(Visibility::from_private(private))),
        (None, None) => Ok(None),
    }
}

pub(crate) fn base_url(app: &App, parts: &RequestParts) -> String {
    if let Some(url) = &app.config.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

fn view(base: &str, repo: &Repository) -> RepoView {
    RepoView {
        id: repo.id.0,
        name: repo.name.to_string(),
        visibility: repo.visibility,
        private: repo.visibility == Visibility::Private,
        default_branch: repo.default_branch.clone(),
        clone_url: format!("{base}/{}.git", repo.name),
        created_at: repo.created_at,
        updated_at: repo.updated_at,
    }
}

pub(crate) fn json_reply(status: StatusCode, value: &impl Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

fn admin_error(err: AdminError) -> WebError {
    match err {
        AdminError::InvalidBranch { .. } => {
            WebError::new(StatusCode::UNPROCESSABLE_ENTITY, err.to_string())
        }
        AdminError::Metadata(MetadataError::RepositoryExists { name }) => WebError::new(
            StatusCode::CONFLICT,
            format!("repository '{name}' already exists"),
        ),
        AdminError::Metadata(MetadataError::RepositoryNotFound) => {
            WebError::not_found("repository not found")
        }
        AdminError::Metadata(err) => WebError::internal(&err),
        AdminError::Storage(err) => WebError::internal(&err),
    }
}

pub(crate) async fn read_json<T: for<'de> Deserialize<'de>>(
    app: &App,
    parts: RequestParts,
) -> Result<T, WebError> {
    let bytes = body::read_limited(parts.body, app.config.max_json_bytes)
        .await
        .map_err(|e| match e {
            body::BodyError::TooLarge { .. } => {
                WebError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            e => WebError::bad_request(e.to_string()),
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| WebError::bad_request(format!("invalid JSON body: {e}")))
}

fn repo_name(name: &str) -> Result<RepoName, WebError> {
    RepoName::new(name).map_err(|e| WebError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

/// `GET|POST /api/v1/repos`
pub async fn repos(app: &App, parts: RequestParts) -> Result<Response, WebError> {
    repos_inner(app, parts).await.map_err(WebError::json)
}

async fn repos_inner(app: &App, parts: RequestParts) -> Result<Response, WebError> {
    let principal = principal(app, &parts).await?;
    let base = base_url(app, &parts);
    if parts.method == Method::POST {
        require(app.access.authorize_instance(
            &principal,
            InstanceAction::CreateRepository,
            Surface::Api,
        ))?;
        let client = parts.client.clone();
        let request: CreateRepo = read_json(app, parts).await?;
        let name = repo_name(&request.name)?;
        let visibility =
            visibility_of(request.private, request.visibility)?.unwrap_or(Visibility::Public);
        let repo = app
            .create_repository(
                name,
                visibility,
                request.default_branch,
                crate::app::event_actor(&principal).as_ref(),
            )
            .await
            .map_err(admin_error)?;
        app.audit(
            Audit::new("repo.created")
                .by(&principal)
                .repo(&repo.name)
                .client(client.as_deref())
                .detail(format!(
                    "{} repository, default branch {}",
                    repo.visibility, repo.default_branch
                )),
        )
        .await;
        return Ok(json_reply(StatusCode::CREATED, &view(&base, &repo)));
    }
    if let Principal::User { .. } = principal {
        require(app.access.authorize_self(&principal, Surface::Api))?;
    }
    let all = app
        .meta
        .list_repositories()
        .await
        .map_err(|e| WebError::internal(&e))?;
    let mut visible = Vec::new();
    for repo in &all {
        if app
            .access
            .lists_repo(&principal, repo)
            .await
            .map_err(auth_failure)?
        {
            visible.push(view(&base, repo));
        }
    }
    Ok(json_reply(StatusCode::OK, &visible))
}

/// An instance or self decision as a result; repository decisions go
/// through `authorized_repo`.
pub(crate) fn require(decision: Decision) -> Result<(), WebError> {
    match decision {
        Decision::Allow => Ok(()),
        Decision::Unauthenticated => Err(WebError::unauthorized(
            "authentication required; send a token with the api scope as Authorization: Bearer",
        )),
        Decision::NotFound => Err(WebError::not_found("not found")),
        Decision::Forbidden(refusal) => Err(WebError::forbidden(refusal.to_string())),
    }
}

/// `GET|PATCH|DELETE /api/v1/repos/{name}`
pub async fn repo(app: &App, name: &str, parts: RequestParts) -> Result<Response, WebError> {
    repo_inner(app, name, parts).await.map_err(WebError::json)
}

async fn repo_inner(app: &App, name: &str, parts: RequestParts) -> Result<Response, WebError> {
    let principal: Principal = principal(app, &parts).await?;
    let base = base_url(app, &parts);
    let action = match parts.method {
        Method::GET => RepoAction::Read,
        Method::DELETE => RepoAction::Delete,
        _ => RepoAction::Admin,
    };
    let repo = authorized_repo(app, name, &principal, action, Surface::Api).await?;
    match parts.method {
        Method::GET => Ok(json_reply(StatusCode::OK, &view(&base, &repo))),
        Method::PATCH => {
            let client = parts.client.clone();
            let request: PatchRepo = read_json(app, parts).await?;
            let update = RepoUpdate {
                name: request.name.as_deref().map(repo_name).transpose()?,
                visibility: visibility_of(request.private, request.visibility)?,
                default_branch: request.default_branch,
            };
            let updated = update_repo(app, &principal, &repo, update, client.as_deref()).await?;
            Ok(json_reply(StatusCode::OK, &view(&base, &updated)))
        }
        Method::DELETE => {
            delete_repo(app, &principal, &repo, parts.client.as_deref()).await?;
            Ok(no_content())
        }
        _ => Err(method_not_allowed()),
    }
}

/// Change `repo` as `principal` (already allowed to administer it) and
/// record what changed in the audit log: the API's `PATCH` and the
/// settings page.
pub(crate) async fn update_repo(
    app: &App,
    principal: &Principal,
    repo: &Repository,
    update: RepoUpdate,
    client: Option<&str>,
) -> Result<Repository, WebError> {
    let updated = app
        .update_repository(repo, update, crate::app::event_actor(principal).as_ref())
        .await
        .map_err(admin_error)?;
    let changes = repo_changes(repo, &updated);
    if !changes.is_empty() {
        app.audit(
            Audit::new("repo.updated")
                .by(principal)
                .repo(&updated.name)
                .client(client)
                .detail(changes),
        )
        .await;
    }
    Ok(updated)
}

/// Delete `repo` as `principal` (already allowed to delete it), with its
/// audit entry: the API's `DELETE` and the settings page.
pub(crate) async fn delete_repo(
    app: &App,
    principal: &Principal,
    repo: &Repository,
    client: Option<&str>,
) -> Result<(), WebError> {
    app.delete_repository(repo, crate::app::event_actor(principal).as_ref())
        .await
        .map_err(admin_error)?;
    app.audit(
        Audit::new("repo.deleted")
            .by(principal)
            .repo(&repo.name)
            .client(client),
    )
    .await;
    Ok(())
}

/// What an update changed, for the audit log: `visibility public -> private;
/// name a -> b`. Empty when nothing changed.
pub fn repo_changes(before: &Repository, after: &Repository) -> String {
    let mut changes = Vec::new();
    if before.name != after.name {
        changes.push(format!("name {} -> {}", before.name, after.name));
    }
    if before.visibility != after.visibility {
        changes.push(format!(
            "visibility {} -> {}",
            before.visibility, after.visibility
        ));
    }
    if before.default_branch != after.default_branch {
        changes.push(format!(
            "default branch {} -> {}",
            before.default_branch, after.default_branch
        ));
    }
    changes.join("; ")
}

pub(crate) fn no_content() -> Response {
    warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response()
}

pub(crate) fn method_not_allowed() -> WebError {
    WebError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

pub(crate) fn internal(err: MetadataError) -> WebError {
    WebError::internal(&err)
}

/// A user as the API shows it.
#[derive(Debug, Serialize)]
struct UserView {
    id: i64,
    name: String,
    is_owner: bool,
}

fn user_view(user: &User) -> UserView {
    UserView {
        id: user.id.0,
        name: user.name.clone(),
        is_owner: user.is_owner,
    }
}

#[derive(Debug, Serialize)]
struct CollaboratorView {
    user: String,
    access: Access,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetCollaborator {
    access: String,
}

/// `GET /api/v1/repos/{name}/collaborators`: repository admins only.
pub async fn collaborators(
    app: &App,
    name: &str,
    parts: RequestParts,
) -> Result<Response, WebError> {
    async {
        let principal = principal(app, &parts).await?;
        let repo = authorized_repo(app, name, &principal, RepoAction::Admin, Surface::Api).await?;
        let listed = app
            .meta
            .list_collaborators(repo.id)
            .await
            .map_err(internal)?;
        let views: Vec<CollaboratorView> = listed
            .into_iter()
            .map(|c| CollaboratorView {
                user: c.user.name,
                access: c.access,
            })
            .collect();
        Ok(json_reply(StatusCode::OK, &views))
    }
    .await
    .map_err(WebError::json)
}

pub(crate) async fn existing_user(app: &App, name: &str) -> Result<User, WebError> {
    app.meta
        .user_by_name(name)
        .await
        .map_err(internal)?
        .ok_or_else(|| WebError::not_found(format!("user '{name}' not found")))
}

/// `PUT|DELETE /api/v1/repos/{name}/collaborators/{user}`: repository admins only.
pub async fn collaborator(
    app: &App,
    name: &str,
    user: &str,
    parts: RequestParts,
) -> Result<Response, WebError> {
    async {
        let principal = principal(app, &parts).await?;
        let repo = authorized_repo(app, name, &principal, RepoAction::Admin, Surface::Api).await?;
        let user = existing_user(app, user).await?;
        match parts.method {
            Method::PUT => {
                let client = parts.client.clone();
                let request: SetCollaborator = read_json(app, parts).await?;
                let access = parse_access(&request.access)?;
                set_collaborator(app, &principal, &repo, &user, access, client.as_deref()).await?;
                Ok(json_reply(
                    StatusCode::OK,
                    &CollaboratorView {
                        user: user.name,
                        access,
                    },
                ))
            }
            Method::DELETE => {
                remove_collaborator(app, &principal, &repo, &user, parts.client.as_deref()).await?;
                Ok(no_content())
            }
            _ => Err(method_not_allowed()),
        }
    }
    .await
    .map_err(WebError::json)
}

/// `read`, `write` or `admin`, or a 422 saying so.
pub(crate) fn parse_access(text: &str) -> Result<Access, WebError> {
    Access::parse(text).ok_or_else(|| {
        WebError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("unknown access level {text:?}; use read, write or admin"),
        )
    })
}

/// Give `user` `access` to `repo` as `principal` (already allowed to
/// administer it), with its audit entry: the API's `PUT` and the settings
/// page.
pub(crate) async fn set_collaborator(
    app: &App,
    principal: &Principal,
    repo: &Repository,
    user: &User,
    access: Access,
    client: Option<&str>,
) -> Result<(), WebError> {
    if user.is_owner {
        return Err(WebError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the owner is admin on every repository already",
        ));
    }
    let previous = app
        .meta
        .collaborator_access(repo.id, user.id)
        .await
        .map_err(internal)?;
    app.meta
        .set_collaborator(repo.id, user.id, access)
        .await
        .map_err(internal)?;
    tracing::info!(repo = %repo.name, user = %user.name, %access, by = principal.label(), "collaborator set");
    let event = match previous {
        None => Some(Audit::new("collaborator.added").detail(access.to_string())),
        Some(previous) if previous != access => {
            Some(Audit::new("collaborator.changed").detail(format!("{previous} -> {access}")))
        }
        Some(_) => None,
    };
    if let Some(event) = event {
        app.audit(
            event
                .by(principal)
                .repo(&repo.name)
                .target(&user.name)
                .client(client),
        )
        .await;
    }
    Ok(())
}

/// Take `user`'s access to `repo` away as `principal` (already allowed to
/// administer it), with its audit entry; 404 if they had none.
pub(crate) async fn remove_collaborator(
    app: &App,
    principal: &Principal,
    repo: &Repository,
    user: &User,
    client: Option<&str>,
) -> Result<(), WebError> {
    if !app
        .meta
        .remove_collaborator(repo.id, user.id)
        .await
        .map_err(internal)?
    {
        return Err(WebError::not_found(format!(
            "'{}' is not a collaborator of '{}'",
            user.name, repo.name
        )));
    }
    tracing::info!(repo = %repo.name, user = %user.name, by = principal.label(), "collaborator removed");
    app.audit(
        Audit::new("collaborator.removed")
            .by(principal)
            .repo(&repo.name)
            .target(&user.name)
            .client(client),
    )
    .await;
    Ok(())
}

/// The principal's account, for endpoints about oneself.
pub(crate) async fn signed_in(
    app: &App,
    parts: &RequestParts,
) -> Result<(UserId, Principal), WebError> {
    let principal = principal(app, parts).await?;
    require(app.access.authorize_self(&principal, Surface::Api))?;
    match &principal {
        Principal::User { id, .. } => Ok((*id, principal)),
        Principal::Anonymous => Err(WebError::unauthorized("authentication required")),
    }
}

/// `GET /api/v1/user`: who the token belongs to, and its scopes.
pub async fn current_user(app: &App, parts: RequestParts) -> Result<Response, WebError> {
    async {
        let (_, principal) = signed_in(app, &parts).await?;
        let Principal::User {
            id,
            name,
            is_owner,
            scopes,
        } = principal
        else {
            return Err(WebError::unauthorized("authentication required"));
        };
        Ok(json_reply(
            StatusCode::OK,
            &serde_json::json!({
                "id": id.0,
                "name": name,
                "is_owner": is_owner,
                "token_scopes": scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            }),
        ))
    }
    .await
    .map_err(WebError::json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    name: String,
}

/// `GET|POST /api/v1/users`: the owner manages accounts.
pub async fn users(app: &App, parts: RequestParts) -> Result<Response, WebError> {
    async {
        let principal = principal(app, &parts).await?;
        require(app.access.authorize_instance(
            &principal,
            InstanceAction::ManageUsers,
            Surface::Api,
        ))?;
        if parts.method == Method::POST {
            let client = parts.client.clone();
            let request: CreateUser = read_json(app, parts).await?;
            nimbus_auth::validate_user_name(&request.name)
                .map_err(|e| WebError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
            let user = app
                .meta
                .create_user(&request.name)
                .await
                .map_err(|err| match err {
                    MetadataError::UserExists { name } => WebError::new(
                        StatusCode::CONFLICT,
                        format!("user '{name}' already exists"),
                    ),
                    err => internal(err),
                })?;
            tracing::info!(user = %user.name, by = principal.label(), "user created");
            app.audit(
                Audit::new("user.created")
                    .by(&principal)
                    .target(&user.name)
                    .client(client.as_deref()),
            )
            .await;
            return Ok(json_reply(StatusCode::CREATED, &user_view(&user)));
        }
        let users = app.meta.list_users().await.map_err(internal)?;
        let views: Vec<UserView> = users.iter().map(user_view).collect();
        Ok(json_reply(StatusCode::OK, &views))
    }
    .await
    .map_err(WebError::json)
}

/// `GET|DELETE /api/v1/users/{name}`: the owner manages accounts.
pub async fn user(app: &App, name: &str, parts: RequestParts) -> Result<Response, WebError> {
    async {
        let principal = principal(app, &parts).await?;
        require(app.access.authorize_instance(
            &principal,
            InstanceAction::ManageUsers,
            Surface::Api,
        ))?;
        let user = existing_user(app, name).await?;
        match parts.method {
            Method::GET => Ok(json_reply(StatusCode::OK, &user_view(&user))),
            Method::DELETE => {
                app.meta
                    .delete_user(user.id)
                    .await
                    .map_err(|err| match err {
                        MetadataError::OwnerCannotBeDeleted => {
                            WebError::new(StatusCode::UNPROCESSABLE_ENTITY, err.to_string())
                        }
                        MetadataError::UserNotFound => {
                            WebError::not_found(format!("user '{name}' not found"))
                        }
                        err => internal(err),
                    })?;
                tracing::info!(user = %user.name, by = principal.label(), "user deleted");
                app.audit(
                    Audit::new("user.deleted")
                        .by(&principal)
                        .target(&user.name)
                        .client(parts.client.as_deref()),
                )
                .await;
                Ok(no_content())
            }
            _ => Err(method_not_allowed()),
        }
    }
    .await
    .map_err(WebError::json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    #[serde(default)]
    description: String,
    scopes: Vec<String>,
    /// Days from now; none: the token does not expire.
    expires_in_days: Option<u32>,
}

#[derive(Debug, Serialize)]
struct TokenView {
    id: i64,
    description: String,
    scopes: Vec<&'static str>,
    created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

fn token_view(token: &TokenInfo) -> TokenView {
    TokenView {
        id: token.id,
        description: token.description.clone(),
        scopes: token.scopes.iter().map(|s| s.as_str()).collect(),
        created_at: token.created_at,
        expires_at: token.expires_at,
        last_used_at: token.last_used_at,
        revoked_at: token.revoked_at,
    }
}

/// Issue a token from a request body; the secret is in the reply, once.
async fn create_token(
    app: &App,
    principal: &Principal,
    user: &User,
    parts: RequestParts,
) -> Result<Response, WebError> {
    let client = parts.client.clone();
    let request: CreateToken = read_json(app, parts).await?;
    let issued = issue_token_for(
        app,
        principal,
        user,
        &TokenRequest {
            description: &request.description,
            scopes: &request.scopes.join(","),
            expires_in_days: request.expires_in_days,
        },
        client.as_deref(),
    )
    .await?;
    Ok(json_reply(
        StatusCode::CREATED,
        &serde_json::json!({
            "id": issued.id,
            "token": issued.secret,
            "scopes": issued.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "expires_at": issued.expires_at,
        }),
    ))
}

/// What a new token is asked for (the API's body, the token page's form).
pub(crate) struct TokenRequest<'a> {
    pub description: &'a str,
    /// Comma-separated scope names.
    pub scopes: &'a str,
    /// Days from now; none: the token does not expire.
    pub expires_in_days: Option<u32>,
}

/// A token just issued: its secret exists only here. (No `Debug`: it holds
/// the secret.)
pub(crate) struct IssuedToken {
    pub id: i64,
    pub secret: String,
    pub scopes: Scopes,
    pub expires_at: Option<i64>,
}

/// Issue a token for `user` as `principal` (`user` themselves, or the owner),
/// never with scopes `principal`'s own credential lacks, with its audit
/// entry: the API and the token page.
pub(crate) async fn issue_token_for(
    app: &App,
    principal: &Principal,
    user: &User,
    request: &TokenRequest<'_>,
    client: Option<&str>,
) -> Result<IssuedToken, WebError> {
    let presented = scopes_of(principal);
    let scopes = Scopes::parse(request.scopes)
        .map_err(|e| WebError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    if scopes == Scopes::default() {
        return Err(WebError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "a token needs at least one scope",
        ));
    }
    if !nimbus_auth::policy::may_grant(presented, scopes) {
        return Err(WebError::forbidden(
            "a token cannot create a token with scopes it does not have itself",
        ));
    }
    let expires_at = request
        .expires_in_days
        .map(|days| unix_now().saturating_add(i64::from(days) * 86_400));
    let issued = nimbus_auth::issue_token(
        app.meta.as_ref(),
        user.id,
        request.description,
        scopes,
        expires_at,
    )
    .await
    .map_err(internal)?;
    tracing::info!(token = issued.id, scopes = %scopes, "token created");
    app.audit(
        Audit::new("token.created")
            .by(principal)
            .target(issued.id)
            .client(client)
            .detail(format!("for {} with scopes {scopes}", user.name)),
    )
    .await;
    Ok(IssuedToken {
        id: issued.id,
        secret: issued.secret,
        scopes,
        expires_at,
    })
}

/// Revoke `user`'s token `id` as `principal`, with its audit entry; 404 if
/// `user` has no such live token: the API and the token page.
pub(crate) async fn revoke_own_token(
    app: &App,
    principal: &Principal,
    user: UserId,
    id: &str,
    client: Option<&str>,
) -> Result<(), WebError> {
    let not_found = || WebError::not_found(format!("token {id} not found"));
    let id: i64 = id.parse().map_err(|_| not_found())?;
    if !app
        .meta
        .revoke_token(user, id, unix_now())
        .await
        .map_err(internal)?
    {
        return Err(not_found());
    }
    tracing::info!(token = id, "token revoked");
    app.audit(
        Audit::new("token.revoked")
            .by(principal)
            .target(id)
            .client(client),
    )
    .await;
    Ok(())
}

/// The account of a signed-in principal.
fn principal_user(principal: &Principal) -> Option<User> {
    match principal {
        Principal::User {
            id, name, is_owner, ..
        } => Some(User {
            id: *id,
            name: name.clone(),
            is_owner: *is_owner,
        }),
        Principal::Anonymous => None,
    }
}

fn scopes_of(principal: &Principal) -> Scopes {
    match principal {
        Principal::User { scopes, .. } => *scopes,
        Principal::Anonymous => Scopes::default(),
    }
}

/// `POST /api/v1/users/{name}/tokens`: the owner issues a token for a user.
pub async fn user_tokens(app: &App, name: &str, parts: RequestParts) -> Result<Response, WebError> {
    async {
        let principal = principal(app, &parts).await?;
        require(app.access.authorize_instance(
            &principal,
            InstanceAction::ManageUsers,
            Surface::Api,
        ))?;
        let user = existing_user(app, name).await?;
        create_token(app, &principal, &user, parts).await
    }
    .await
    .map_err(WebError::json)
}

/// `GET|POST /api/v1/user/tokens`: one's own tokens.
pub async fn tokens(app: &App, parts: RequestParts) -> Result<Response, WebError> {
    async {
        let (user, principal) = signed_in(app, &parts).await?;
        if parts.method == Method::POST {
            let user = principal_user(&principal)
                .ok_or_else(|| WebError::unauthorized("authentication required"))?;
            return create_token(app, &principal, &user, parts).await;
        }
        let tokens = app.meta.list_tokens(user).await.map_err(internal)?;
        let views: Vec<TokenView> = tokens.iter().map(token_view).collect();
        Ok(json_reply(StatusCode::OK, &views))
    }
    .await
    .map_err(WebError::json)
}

/// `DELETE /api/v1/user/tokens/{id}`: revoke one's own token.
pub async fn token(app: &App, id: &str, parts: RequestParts) -> Result<Response, WebError> {
    async {
        let (user, principal) = signed_in(app, &parts).await?;
        revoke_own_token(app, &principal, user, id, parts.client.as_deref()).await?;
        Ok(no_content())
    }
    .await
    .map_err(WebError::json)
}
