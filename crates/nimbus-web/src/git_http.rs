//! Git smart HTTP: `info/refs`, `git-upload-pack` and `git-receive-pack`,
//! with the content types and cache headers git expects.

use crate::error::WebError;
use crate::{App, RequestParts, body};
use nimbus_auth::{Credential, Decision, Refusal, RepoAction, Surface};
use nimbus_git::advertise::ProtocolVersion;
use nimbus_git::pktline::{write_flush, write_line};
use nimbus_git::service::Service;
use nimbus_types::{Principal, RepoName, Repository};
use tracing::Instrument;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::{Reply, Response};

/// Who sent the request; a present but wrong credential is a 401.
pub async fn principal(app: &App, headers: &HeaderMap) -> Result<Principal, WebError> {
    let credential = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| WebError::unauthorized("the Authorization header is malformed"))?;
            Some(
                Credential::from_header(value)
                    .map_err(|e| WebError::unauthorized(e.to_string()))?,
            )
        }
    };
    app.access
        .authenticate(credential.as_ref())
        .await
        .map_err(auth_failure)
}

/// The response for a refused repository request. Anonymous users get the
/// same 401 for private and missing repositories, signed-in users the same
/// 404, so neither learns that a private repository exists.
pub fn refusal(decision: Decision, name: &str, action: RepoAction) -> WebError {
    match decision {
        Decision::Allow => WebError::internal(&std::io::Error::other(
            "an allowed request was reported as refused",
        )),
        Decision::Unauthenticated => WebError::unauthorized(match action {
            RepoAction::Read => format!(
                "authentication required to read repository '{name}' (or it does not exist); \
                 use a token as the password"
            ),
            RepoAction::Write => "authentication required to push; use a token with the \
                 repo:write scope as the password"
                .to_owned(),
            RepoAction::Admin | RepoAction::Delete => "authentication required".to_owned(),
        }),
        Decision::NotFound => WebError::not_found(format!("repository '{name}' not found")),
        Decision::Forbidden(Refusal::NotPermitted { needs }) => WebError::forbidden(format!(
            "you do not have {needs} access to repository '{name}'"
        )),
        Decision::Forbidden(refusal) => WebError::forbidden(refusal.to_string()),
    }
}

/// Map a failure of the access control to a response.
pub fn auth_failure(err: nimbus_auth::AuthError) -> WebError {
    match err {
        nimbus_auth::AuthError::Metadata(err) => WebError::internal(&err),
        err => WebError::unauthorized(err.to_string()),
    }
}

/// Find a repository and check `principal` may do `action` on it.
pub async fn authorized_repo(
    app: &App,
    name: &str,
    principal: &Principal,
    action: RepoAction,
    surface: Surface,
) -> Result<Repository, WebError> {
    let repo = match RepoName::new(name) {
        Ok(valid) => app
            .meta
            .repository(&valid)
            .await
            .map_err(|e| WebError::internal(&e))?,
        Err(_) => None,
    };
    let decision = app
        .access
        .authorize_repo(principal, repo.as_ref(), action, surface)
        .await
        .map_err(auth_failure)?;
    match (decision, repo) {
        (Decision::Allow, Some(repo)) => Ok(repo),
        (decision, _) => Err(refusal(decision, name, action)),
    }
}

fn no_cache(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::EXPIRES,
        HeaderValue::from_static("Fri, 01 Jan 1980 00:00:00 GMT"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, max-age=0, must-revalidate"),
    );
}

fn content_type(response: &mut Response, value: &'static str) {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
}

fn protocol_version(headers: &HeaderMap) -> ProtocolVersion {
    ProtocolVersion::from_header(headers.get("git-protocol").map(|v| v.as_bytes()))
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(k, v)| (k == key).then_some(v))
}

fn require_content_type(headers: &HeaderMap, expected: &str) -> Result<(), WebError> {
    let actual = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if actual.split(';').next().map(str::trim) == Some(expected) {
        Ok(())
    } else {
        Err(WebError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("expected Content-Type {expected}, got {actual:?}"),
        ))
    }
}

fn encoding(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
}

fn body_error(err: body::BodyError) -> WebError {
    match err {
        body::BodyError::TooLarge { .. } => {
            WebError::new(StatusCode::PAYLOAD_TOO_LARGE, err.to_string())
        }
        body::BodyError::UnsupportedEncoding { .. } => {
            WebError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, err.to_string())
        }
        body::BodyError::Io(_) => WebError::bad_request(err.to_string()),
    }
}

/// `GET /{repo}/info/refs?service=git-upload-pack|git-receive-pack`
pub async fn info_refs(app: &App, name: &str, parts: RequestParts) -> Result<Response, WebError> {
    let service = match query_param(parts.query.as_deref(), "service") {
        Some("git-upload-pack") => Service::UploadPack,
        Some("git-receive-pack") => Service::ReceivePack,
        Some(other) => {
            return Err(WebError::forbidden(format!(
                "unsupported service {other:?}"
            )));
        }
        None => {
            return Err(WebError::forbidden(
                "only the smart HTTP protocol is supported; use git 1.6.6 or newer",
            ));
        }
    };
    let principal = principal(app, &parts.headers).await?;
    let level = match service {
        Service::UploadPack => RepoAction::Read,
        Service::ReceivePack => RepoAction::Write,
    };
    let repo = authorized_repo(app, name, &principal, level, Surface::Git).await?;
    let version = protocol_version(&parts.headers);
    let advertisement = app
        .git
        .advertise(&repo, service, version)
        .await
        .map_err(|e| WebError::internal(&e))?;
    let mut body = Vec::with_capacity(advertisement.len() + 64);
    let v2 = version == ProtocolVersion::V2 && service == Service::UploadPack;
    if !v2 {
        write_line(&mut body, format!("# service={}", service.name()))
            .and_then(|_| write_flush(&mut body))
            .map_err(|e| WebError::internal(&e))?;
    }
    body.extend_from_slice(&advertisement);
    let mut response = warp::reply::with_status(body, StatusCode::OK).into_response();
    content_type(
        &mut response,
        match service {
            Service::UploadPack => "application/x-git-upload-pack-advertisement",
            Service::ReceivePack => "application/x-git-receive-pack-advertisement",
        },
    );
    no_cache(&mut response);
    Ok(response)
}

/// `POST /{repo}/git-upload-pack`
pub async fn upload_pack(app: &App, name: &str, parts: RequestParts) -> Result<Response, WebError> {
    let principal = principal(app, &parts.headers).await?;
    let repo = authorized_repo(app, name, &principal, RepoAction::Read, Surface::Git).await?;
    let span = tracing::info_span!("upload-pack", repo = %repo.name, user = principal.label());
    require_content_type(&parts.headers, "application/x-git-upload-pack-request")?;
    let version = protocol_version(&parts.headers);
    let body = body::decoded(parts.body, encoding(&parts.headers)).map_err(body_error)?;
    let receiver = async {
        let request = body::read_limited(body, app.config.max_negotiation_bytes)
            .await
            .map_err(body_error)?;
        app.git
            .upload_pack(&repo, version, request)
            .await
            .map_err(|e| WebError::internal(&e))
    }
    .instrument(span)
    .await?;
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    let mut response = warp::reply::stream(stream).into_response();
    content_type(&mut response, "application/x-git-upload-pack-result");
    no_cache(&mut response);
    Ok(response)
}

/// `POST /{repo}/git-receive-pack`
pub async fn receive_pack(
    app: &App,
    name: &str,
    parts: RequestParts,
) -> Result<Response, WebError> {
    let principal = principal(app, &parts.headers).await?;
    let repo = authorized_repo(app, name, &principal, RepoAction::Write, Surface::Git).await?;
    let span = tracing::info_span!("receive-pack", repo = %repo.name, user = principal.label());
    require_content_type(&parts.headers, "application/x-git-receive-pack-request")?;
    let body = body::decoded(parts.body, encoding(&parts.headers)).map_err(body_error)?;
    let report = app
        .git
        .receive_pack(&repo, body)
        .instrument(span)
        .await
        .map_err(|e| WebError::internal(&e))?;
    if let Some(maintainer) = &app.maintainer {
        maintainer.after_push(repo);
    }
    let mut response = warp::reply::with_status(report, StatusCode::OK).into_response();
    content_type(&mut response, "application/x-git-receive-pack-result");
    no_cache(&mut response);
    Ok(response)
}
