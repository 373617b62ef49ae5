//! Git smart HTTP: `info/refs`, `git-upload-pack` and `git-receive-pack`,
//! with the content types and cache headers git expects.

use crate::error::WebError;
use crate::{App, Audit, RequestParts, body};
use nimbus_auth::{Credential, Decision, Refusal, RepoAction, Surface};
use nimbus_git::advertise::ProtocolVersion;
use nimbus_git::pktline::{write_flush, write_line};
use nimbus_git::service::Service;
use nimbus_types::{Principal, RepoName, Repository};
use tracing::Instrument;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::{Reply, Response};

/// Who sent the request. A token in `Authorization` decides (a present but
/// wrong one is a 401, and counts against the client's failure limit); else
/// the web session, for API requests that repeat its CSRF token in
/// `X-CSRF-Token` (so other sites cannot use it); else anonymous.
pub async fn principal(app: &App, parts: &RequestParts) -> Result<Principal, WebError> {
    let client_key = parts.client.as_deref().map(|ip| format!("ip:{ip}"));
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        if let Some(session) = &parts.session
            && parts
                .headers
                .get("x-csrf-token")
                .is_some_and(|token| token.as_bytes() == session.csrf.as_bytes())
        {
            return Ok(session.principal());
        }
        return Ok(Principal::Anonymous);
    };
    if let Some(key) = &client_key
        && let Some(wait) = app.limits.clients.blocked(key, std::time::Instant::now())
    {
        return Err(too_many_failures(wait));
    }
    let credential = value
        .to_str()
        .map_err(|_| nimbus_auth::AuthError::MalformedHeader)
        .and_then(Credential::from_header);
    let result = match credential {
        Ok(credential) => app.access.authenticate(Some(&credential)).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(principal) => Ok(principal),
        Err(nimbus_auth::AuthError::Metadata(err)) => Err(WebError::internal(&err)),
        Err(err) => {
            if let Some(key) = &client_key {
                app.limits
                    .clients
                    .record_failure(key, std::time::Instant::now());
            }
            app.audit(
                Audit::new("token.failed")
                    .client(parts.client.as_deref())
                    .detail(err.to_string()),
            )
            .await;
            Err(WebError::unauthorized(err.to_string()))
        }
    }
}

/// The answer while a client or account is blocked after failures.
pub fn too_many_failures(wait: std::time::Duration) -> WebError {
    let seconds = wait.as_secs().max(1);
    WebError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many failed sign-in attempts; try again in {seconds} seconds"),
    )
    .retry_after(seconds)
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
    let principal = principal(app, &parts).await?;
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
    let principal = principal(app, &parts).await?;
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

/// `GET /{repo}/bundles/{name}.bundle`: a bundle advertised to clones by
/// `bundle-uri`, for readers of the repository (git sends the clone's
/// credentials, as the URI is relative to the remote's).
pub async fn bundle(
    app: &App,
    name: &str,
    bundle: &str,
    parts: RequestParts,
) -> Result<Response, WebError> {
    let principal = principal(app, &parts).await?;
    let repo = authorized_repo(app, name, &principal, RepoAction::Read, Surface::Git).await?;
    let opened = app
        .git
        .open_bundle(&repo, bundle)
        .await
        .map_err(|e| WebError::internal(&e))?;
    let Some(opened) = opened else {
        return Err(WebError::new(
            StatusCode::NOT_FOUND,
            format!(
                "repository '{}' has no bundle {bundle:?}; it may have been replaced by a newer one",
                repo.name
            ),
        ));
    };
    let size = opened.size;
    let file = tokio::fs::File::from_std(opened.file);
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    // For HEAD, the server sends the headers only.
    let mut response = warp::reply::stream(stream).into_response();
    content_type(&mut response, "application/x-git-bundle");
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    no_cache(&mut response);
    Ok(response)
}

/// `POST /{repo}/git-receive-pack`
pub async fn receive_pack(
    app: &App,
    name: &str,
    parts: RequestParts,
) -> Result<Response, WebError> {
    let principal = principal(app, &parts).await?;
    let repo = authorized_repo(app, name, &principal, RepoAction::Write, Surface::Git).await?;
    let span = tracing::info_span!("receive-pack", repo = %repo.name, user = principal.label());
    require_content_type(&parts.headers, "application/x-git-receive-pack-request")?;
    let body = body::decoded(parts.body, encoding(&parts.headers)).map_err(body_error)?;
    // The refs before, for the audit log's `old..new` (a concurrent push
    // may blur it; the ref names come from this push's own report).
    let before = match app.meta.refs(repo.id).await {
        Ok(before) => before,
        Err(err) => {
            tracing::warn!(repo = %repo.name, error = %err, "could not read refs for the audit log");
            Vec::new()
        }
    };
    let report = app
        .git
        .receive_pack(&repo, crate::app::event_actor(&principal), body)
        .instrument(span)
        .await
        .map_err(|e| WebError::internal(&e))?;
    if let Some(dispatcher) = &app.webhooks {
        dispatcher.wake();
    }
    if let Some(relay) = &app.relay {
        relay.wake();
    }
    let updated = updated_refs(&report);
    if !updated.is_empty() {
        let after = match app.meta.refs(repo.id).await {
            Ok(after) => after,
            Err(err) => {
                tracing::warn!(repo = %repo.name, error = %err, "could not read refs for the audit log");
                Vec::new()
            }
        };
        let target = |refs: &[nimbus_types::Ref], name: &str| {
            refs.iter()
                .find(|r| r.name.as_bytes() == name.as_bytes())
                .map(|r| r.target.to_string())
        };
        // The home page's listing: have its last commits ready.
        let default_ref = format!("refs/heads/{}", repo.default_branch);
        if updated.contains(&default_ref)
            && let Some(head) = after
                .iter()
                .find(|r| r.name.as_bytes() == default_ref.as_bytes())
        {
            app.last_commits.warm(&app.git, &repo, head.target, b"");
        }
        let changes: Vec<(String, Option<String>, Option<String>)> = updated
            .iter()
            .map(|name| (name.clone(), target(&before, name), target(&after, name)))
            .collect();
        app.audit(
            Audit::new("push")
                .by(&principal)
                .repo(&repo.name)
                .client(parts.client.as_deref())
                .detail(push_summary(&changes)),
        )
        .await;
    }
    if let Some(maintainer) = &app.maintainer {
        maintainer.after_push(repo);
    }
    let mut response = warp::reply::with_status(report, StatusCode::OK).into_response();
    content_type(&mut response, "application/x-git-receive-pack-result");
    no_cache(&mut response);
    Ok(response)
}

/// The refs a `report-status` answer reports as updated (`ok <ref>`),
/// whether or not it is side-band multiplexed.
pub fn updated_refs(report: &[u8]) -> Vec<String> {
    fn packets(mut data: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        while data.len() >= 4 {
            let Some(length) = std::str::from_utf8(&data[..4])
                .ok()
                .and_then(|hex| usize::from_str_radix(hex, 16).ok())
            else {
                break;
            };
            if length < 4 {
                // flush, delimiter, response end
                data = &data[4..];
                continue;
            }
            if length > data.len() {
                break;
            }
            out.push(&data[4..length]);
            data = &data[length..];
        }
        out
    }
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut band: Vec<u8> = Vec::new();
    for packet in packets(report) {
        match packet.first() {
            Some(1) => band.extend_from_slice(&packet[1..]),
            Some(2 | 3) => {}
            _ => lines.push(packet),
        }
    }
    let inner = packets(&band);
    lines
        .into_iter()
        .chain(inner)
        .filter_map(|line| line.strip_prefix(b"ok "))
        .map(|name| String::from_utf8_lossy(name.trim_ascii_end()).into_owned())
        .collect()
}

/// The longest `detail` of a push event, in bytes.
const MAX_PUSH_SUMMARY: usize = 500;
/// How many refs a push event names.
const MAX_PUSH_SUMMARY_REFS: usize = 5;

/// A short account of a push for the audit log: `refs/heads/main
/// 1a2b3c4..5d6e7f8, refs/tags/v1 new 9a8b7c6 (and 3 more)`.
pub fn push_summary(changes: &[(String, Option<String>, Option<String>)]) -> String {
    let short = |id: &str| id.chars().take(7).collect::<String>();
    let mut parts = Vec::new();
    let mut length = 0;
    for (name, old, new) in changes.iter().take(MAX_PUSH_SUMMARY_REFS) {
        let name: String = name.chars().take(200).collect();
        let part = match (old, new) {
            (Some(old), Some(new)) => format!("{name} {}..{}", short(old), short(new)),
            (None, Some(new)) => format!("{name} new {}", short(new)),
            (Some(old), None) => format!("{name} deleted {}", short(old)),
            (None, None) => name,
        };
        if length + part.len() + 2 > MAX_PUSH_SUMMARY - 40 {
            break;
        }
        length += part.len() + 2;
        parts.push(part);
    }
    let mut summary = parts.join(", ");
    if changes.len() > parts.len() {
        summary.push_str(&format!(" (and {} more)", changes.len() - parts.len()));
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(payload: &[u8]) -> Vec<u8> {
        let mut out = format!("{:04x}", payload.len() + 4).into_bytes();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn updated_refs_are_read_from_plain_and_side_band_reports() {
        let mut plain = pkt(b"unpack ok\n");
        plain.extend(pkt(b"ok refs/heads/main\n"));
        plain.extend(pkt(b"ng refs/heads/x non-fast-forward\n"));
        plain.extend(b"0000");
        assert_eq!(updated_refs(&plain), vec!["refs/heads/main".to_owned()]);
        let mut banded = Vec::new();
        let mut first = vec![1u8];
        first.extend_from_slice(&plain[..plain.len() / 2]);
        let mut second = vec![1u8];
        second.extend_from_slice(&plain[plain.len() / 2..]);
        banded.extend(pkt(&first));
        banded.extend(pkt(b"\x02remote: hello\n"));
        banded.extend(pkt(&second));
        banded.extend(b"0000");
        assert_eq!(updated_refs(&banded), vec!["refs/heads/main".to_owned()]);
        assert!(updated_refs(b"").is_empty());
        assert!(updated_refs(&pkt(b"ERR nope")).is_empty());
    }

    #[test]
    fn push_summaries_are_short() {
        let a = "1a2b3c4d".repeat(5);
        let b = "5d6e7f80".repeat(5);
        let summary = push_summary(&[
            ("refs/heads/main".into(), Some(a.clone()), Some(b.clone())),
            ("refs/tags/v1".into(), None, Some(b.clone())),
            ("refs/heads/old".into(), Some(a.clone()), None),
        ]);
        assert_eq!(
            summary,
            "refs/heads/main 1a2b3c4..5d6e7f8, refs/tags/v1 new 5d6e7f8, refs/heads/old deleted 1a2b3c4"
        );
        let many: Vec<_> = (0..100)
            .map(|i| {
                (
                    format!("refs/heads/{}", "x".repeat(150) + &i.to_string()),
                    None,
                    Some(b.clone()),
                )
            })
            .collect();
        let summary = push_summary(&many);
        assert!(summary.len() <= MAX_PUSH_SUMMARY, "{}", summary.len());
        assert!(summary.ends_with("more)"), "{summary}");
    }
}
