//! Git smart HTTP: `info/refs`, `git-upload-pack` and `git-receive-pack`,
//! with the content types and cache headers git expects.

use crate::error::WebError;
use crate::{App, RequestParts, body};
use nimbus_auth::{Credential, Decision};
use nimbus_git::advertise::ProtocolVersion;
use nimbus_git::pktline::{write_flush, write_line};
use nimbus_git::service::Service;
use nimbus_types::{Access, Principal, RepoName, Repository};
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
        .map_err(|err| match err {
            nimbus_auth::AuthError::Metadata(err) => WebError::internal(&err),
            err => WebError::unauthorized(err.to_string()),
        })
}

/// Find a repository and check `principal` may use it at `level`.
pub async fn authorized_repo(
    app: &App,
    name: &str,
    principal: &Principal,
    level: Access,
) -> Result<Repository, WebError> {
    let not_found = || WebError::not_found(format!("repository '{name}' not found"));
    let name = RepoName::new(name).map_err(|_| not_found())?;
    let repo = app
        .meta
        .repository(&name)
        .await
        .map_err(|e| WebError::internal(&e))?
        .ok_or_else(not_found)?;
    match app.access.authorize_repo(principal, &repo, level) {
        Decision::Allow => Ok(repo),
        Decision::Unauthenticated => Err(WebError::unauthorized(match level {
            Access::Read => "authentication required to read this repository",
            _ => "authentication required to push; use a token with write access as the password",
        })),
        Decision::Forbidden => Err(WebError::forbidden(format!(
            "your token does not grant {} access to '{}'",
            match level {
                Access::Read => "read",
                Access::Write => "write",
                Access::Admin => "admin",
            },
            repo.name
        ))),
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
        Service::UploadPack => Access::Read,
        Service::ReceivePack => Access::Write,
    };
    let repo = authorized_repo(app, name, &principal, level).await?;
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
    let repo = authorized_repo(app, name, &principal, Access::Read).await?;
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
    let repo = authorized_repo(app, name, &principal, Access::Write).await?;
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
