//! The HTTP face of Nimbus: git smart HTTP (`info/refs`, `git-upload-pack`,
//! `git-receive-pack`) and the JSON API, served by warp.
//!
//! warp only extracts the method, path, query, headers and body; routing is
//! the pure [`route::route`] function and every failure becomes a response
//! in [`error::WebError`]. The git protocol itself lives in `nimbus-git`.

pub mod api;
pub mod api_identity;
pub mod api_webhooks;
pub mod app;
pub mod assets;
pub mod body;
pub mod error;
pub mod event_stream;
pub mod git_http;
pub mod route;
pub mod session_http;
pub mod ui;

pub use app::{App, AppConfig, Audit};

use error::WebError;
use route::Route;
use std::sync::Arc;
use warp::Filter;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::{Reply, Response};

/// Everything one request hands to its handler.
pub struct RequestParts {
    /// The client's address (see `AppConfig::trust_forwarded_for`).
    pub client: Option<String>,
    /// The web session of the request's cookies, when it has a live one
    /// (never resolved for git requests).
    pub session: Option<nimbus_auth::session::ActiveSession>,
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: body::BodyReader,
}

/// The whole HTTP application as a warp filter.
pub fn routes(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    let query = warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    warp::addr::remote()
        .and(warp::method())
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(body::body_reader())
        .and(warp::any().map(move || app.clone()))
        .then(
            |remote: Option<std::net::SocketAddr>,
             method: Method,
             path: warp::path::FullPath,
             query: Option<String>,
             headers: HeaderMap,
             body: body::BodyReader,
             app: Arc<App>| async move {
                let client = client_address(&app, remote, &headers);
                let has_body = headers.contains_key(warp::http::header::TRANSFER_ENCODING)
                    || headers
                        .get(warp::http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.trim() != "0");
                let (body, finished) = body::Tracked::wrap(body);
                let parts = RequestParts {
                    client,
                    session: None,
                    method,
                    path: path.as_str().to_owned(),
                    query,
                    headers,
                    body,
                };
                let mut response = handle(&app, parts).await;
                // Answered before the request's body was read (a refusal):
                // the server cannot reuse the connection, so it must say so,
                // or the client may send its next request into a closing
                // connection.
                if has_body && !finished.load(std::sync::atomic::Ordering::Relaxed) {
                    response.headers_mut().insert(
                        warp::http::header::CONNECTION,
                        warp::http::HeaderValue::from_static("close"),
                    );
                }
                response
            },
        )
}

/// The client's address: the socket's peer, or the last address of
/// `X-Forwarded-For` when the proxy in front is trusted to write it.
fn client_address(
    app: &App,
    remote: Option<std::net::SocketAddr>,
    headers: &HeaderMap,
) -> Option<String> {
    if app.config.trust_forwarded_for
        && let Some(forwarded) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim)
            .and_then(|v| v.parse::<std::net::IpAddr>().ok())
    {
        return Some(forwarded.to_string());
    }
    remote.map(|addr| addr.ip().to_string())
}

/// Route and answer one request, with one log line per request.
pub async fn handle(app: &App, mut parts: RequestParts) -> Response {
    let started = std::time::Instant::now();
    let method = parts.method.clone();
    let path = route::loggable_path(&parts.path).into_owned();
    // Sessions are for the web and the API; git requests never carry one.
    let route = route::route(&parts.path);
    let cookies = if route::is_git(&route) {
        session_http::SessionCookies::default()
    } else {
        session_http::resolve(app, &mut parts).await
    };
    let mut response = dispatch(app, route, parts).await;
    cookies.apply(app, &mut response);
    // The query may carry nothing secret today, but paths are enough to
    // follow a request; credentials live in headers and are never logged.
    tracing::info!(
        %method,
        %path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

async fn dispatch(app: &App, route: Route, parts: RequestParts) -> Response {
    let allowed = route::allowed_methods(&route);
    let method = parts.method.clone();
    if route != Route::NotFound && !allowed.contains(&method.as_str()) {
        let mut response = WebError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here; use {}", allowed.join(", ")),
        )
        .into_response();
        if let Ok(value) = allowed.join(", ").parse() {
            response
                .headers_mut()
                .insert(warp::http::header::ALLOW, value);
        }
        return response;
    }
    let result = match route {
        Route::Health => Ok(warp::reply::with_status("ok\n", StatusCode::OK).into_response()),
        Route::InfoRefs { repo } => git_http::info_refs(app, &repo, parts).await,
        Route::UploadPack { repo } => git_http::upload_pack(app, &repo, parts).await,
        Route::ReceivePack { repo } => git_http::receive_pack(app, &repo, parts).await,
        Route::Bundle { repo, name } => git_http::bundle(app, &repo, &name, parts).await,
        Route::ApiRepos => api::repos(app, parts).await,
        Route::ApiRepo { name } => api::repo(app, &name, parts).await,
        Route::ApiCollaborators { repo } => api::collaborators(app, &repo, parts).await,
        Route::ApiCollaborator { repo, user } => api::collaborator(app, &repo, &user, parts).await,
        Route::ApiHooks { repo } => api_webhooks::hooks(app, repo.as_deref(), parts).await,
        Route::ApiHook { repo, id } => api_webhooks::hook(app, repo.as_deref(), &id, parts).await,
        Route::ApiHookDeliveries { repo, id } => {
            api_webhooks::deliveries(app, repo.as_deref(), &id, parts).await
        }
        Route::ApiHookDelivery { repo, id, delivery } => {
            api_webhooks::delivery(app, repo.as_deref(), &id, &delivery, parts).await
        }
        Route::ApiHookRedeliver { repo, id, delivery } => {
            api_webhooks::redeliver(app, repo.as_deref(), &id, &delivery, parts).await
        }
        Route::ApiCurrentUser => api::current_user(app, parts).await,
        Route::ApiUsers => api::users(app, parts).await,
        Route::ApiUser { name } => api::user(app, &name, parts).await,
        Route::ApiUserTokens { name } => api::user_tokens(app, &name, parts).await,
        Route::ApiTokens => api::tokens(app, parts).await,
        Route::ApiToken { id } => api::token(app, &id, parts).await,
        Route::ApiPassword => api_identity::password(app, parts).await,
        Route::ApiInvitations => api_identity::invitations(app, parts).await,
        Route::ApiInvitation { id } => api_identity::invitation(app, &id, parts).await,
        Route::ApiAudit => api_identity::audit(app, parts).await,
        Route::ApiIdentities { name } => api_identity::identities(app, &name, parts).await,
        Route::ApiIdentity {
            name,
            provider,
            subject,
        } => api_identity::identity(app, &name, &provider, &subject, parts).await,
        Route::ApiEvents => event_stream::events(app, parts).await,
        Route::Dashboard => ui::repo::dashboard(app, parts).await,
        Route::RepoHome { repo } => ui::repo::home(app, &repo, parts).await,
        Route::RepoPage { repo, page, rest } => {
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            match page {
                route::RepoPage::Tree => ui::repo::tree(app, &repo, &rest, parts).await,
                route::RepoPage::Blob => ui::repo::blob(app, &repo, &rest, parts).await,
                route::RepoPage::Raw => ui::repo::raw(app, &repo, &rest, parts).await,
                route::RepoPage::Blame => ui::blame::blame(app, &repo, &rest, parts).await,
                route::RepoPage::Commits => ui::repo::commits(app, &repo, &rest, parts).await,
                route::RepoPage::Edit => {
                    ui::editor::editor(app, &repo, ui::editor::EditKind::Edit, &rest, parts).await
                }
                route::RepoPage::New => {
                    ui::editor::editor(app, &repo, ui::editor::EditKind::New, &rest, parts).await
                }
                route::RepoPage::Delete => {
                    ui::editor::editor(app, &repo, ui::editor::EditKind::Delete, &rest, parts).await
                }
                route::RepoPage::Settings => ui::settings::settings(app, &repo, &rest, parts).await,
                route::RepoPage::Archive => ui::repo::archive(app, &repo, &rest, parts).await,
                route::RepoPage::Branches => ui::repo::refs(app, &repo, false, parts).await,
                route::RepoPage::Tags => ui::repo::refs(app, &repo, true, parts).await,
                route::RepoPage::Compare => ui::repo::compare(app, &repo, &rest, parts).await,
                route::RepoPage::Commit => {
                    ui::repo::commit(app, &repo, rest.first().copied().unwrap_or(""), parts).await
                }
            }
        }
        Route::Login => session_http::login(app, parts).await,
        Route::Logout => session_http::logout(app, parts).await,
        Route::LoginProvider { provider } => {
            session_http::login_provider(app, &provider, parts).await
        }
        Route::LoginCallback { provider } => {
            session_http::login_callback(app, &provider, parts).await
        }
        Route::Invite { secret } => session_http::invite(app, &secret, parts).await,
        Route::Account => session_http::account(app, parts).await,
        Route::AccountPassword => session_http::account_password(app, parts).await,
        Route::AccountTokens => ui::tokens::tokens(app, parts).await,
        Route::AccountTokenRevoke { id } => ui::tokens::revoke(app, &id, parts).await,
        Route::Jwks => Ok(session_http::jwks(app)),
        Route::Asset { name } => Ok(assets::serve(
            &name,
            parts.headers.get(warp::http::header::IF_NONE_MATCH),
        )),
        Route::NotFound => Err(WebError::not_found("not found")),
    };
    result.unwrap_or_else(WebError::into_response)
}

/// Serve `app` on `listener` until `shutdown` completes.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    warp::serve(routes(app))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}
