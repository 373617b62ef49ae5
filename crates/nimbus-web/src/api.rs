//! The JSON API: `/api/v1/repos` and `/api/v1/repos/{name}`, authorised by
//! `Authorization: Bearer <token>`.

use crate::app::AdminError;
use crate::error::WebError;
use crate::git_http::{authorized_repo, principal};
use crate::{App, RequestParts, body};
use nimbus_auth::Decision;
use nimbus_types::metadata::MetadataError;
use nimbus_types::{Access, Principal, RepoName, RepoUpdate, Repository};
use serde::{Deserialize, Serialize};
use warp::http::{Method, StatusCode, header};
use warp::reply::{Reply, Response};

/// A repository as the API shows it.
#[derive(Debug, Serialize)]
pub struct RepoView {
    pub id: i64,
    pub name: String,
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
    #[serde(default)]
    private: bool,
    default_branch: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchRepo {
    name: Option<String>,
    private: Option<bool>,
    default_branch: Option<String>,
}

fn base_url(app: &App, parts: &RequestParts) -> String {
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
        private: repo.private,
        default_branch: repo.default_branch.clone(),
        clone_url: format!("{base}/{}.git", repo.name),
        created_at: repo.created_at,
        updated_at: repo.updated_at,
    }
}

fn json_reply(status: StatusCode, value: &impl Serialize) -> Response {
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

async fn read_json<T: for<'de> Deserialize<'de>>(
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
    let principal = principal(app, &parts.headers).await?;
    let base = base_url(app, &parts);
    if parts.method == Method::POST {
        match app.access.authorize_instance(&principal) {
            Decision::Allow => {}
            Decision::Unauthenticated => {
                return Err(WebError::unauthorized(
                    "a token is required to create repositories",
                ));
            }
            Decision::Forbidden => {
                return Err(WebError::forbidden(
                    "only the owner can create repositories",
                ));
            }
        }
        let request: CreateRepo = read_json(app, parts).await?;
        let name = repo_name(&request.name)?;
        let repo = app
            .create_repository(name, request.private, request.default_branch)
            .await
            .map_err(admin_error)?;
        return Ok(json_reply(StatusCode::CREATED, &view(&base, &repo)));
    }
    let all = app
        .meta
        .list_repositories()
        .await
        .map_err(|e| WebError::internal(&e))?;
    let visible: Vec<RepoView> = all
        .iter()
        .filter(|repo| app.access.authorize_repo(&principal, repo, Access::Read) == Decision::Allow)
        .map(|repo| view(&base, repo))
        .collect();
    Ok(json_reply(StatusCode::OK, &visible))
}

/// `GET|PATCH|DELETE /api/v1/repos/{name}`
pub async fn repo(app: &App, name: &str, parts: RequestParts) -> Result<Response, WebError> {
    repo_inner(app, name, parts).await.map_err(WebError::json)
}

async fn repo_inner(app: &App, name: &str, parts: RequestParts) -> Result<Response, WebError> {
    let principal: Principal = principal(app, &parts.headers).await?;
    let base = base_url(app, &parts);
    let level = if parts.method == Method::GET {
        Access::Read
    } else {
        Access::Admin
    };
    let repo = authorized_repo(app, name, &principal, level).await?;
    match parts.method {
        Method::GET => Ok(json_reply(StatusCode::OK, &view(&base, &repo))),
        Method::PATCH => {
            let request: PatchRepo = read_json(app, parts).await?;
            let update = RepoUpdate {
                name: request.name.as_deref().map(repo_name).transpose()?,
                private: request.private,
                default_branch: request.default_branch,
            };
            let updated = app
                .update_repository(&repo, update)
                .await
                .map_err(admin_error)?;
            Ok(json_reply(StatusCode::OK, &view(&base, &updated)))
        }
        Method::DELETE => {
            app.delete_repository(&repo).await.map_err(admin_error)?;
            Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
        }
        _ => Err(WebError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        )),
    }
}
