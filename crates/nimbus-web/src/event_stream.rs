//! `GET /api/v1/events`: the live event stream, as Server-Sent Events.
//!
//! The stream reads the outbox (every event, published or not, in `seq`
//! order), so it needs no bus and loses nothing: each SSE `id` is the
//! event's `seq`, and a client that reconnects with `Last-Event-ID` gets
//! every event after it. Without it, the stream starts at the newest event.
//! Filters: `repo=<name>` and `type=<type or prefix ending in .>`, each
//! repeatable. Every event is checked against the reader's right to read
//! its repository (the owner sees all; others never see events of
//! repositories they cannot read, nor of deleted ones).
//!
//! Authentication: a token (`Authorization: Bearer`, `api` scope), or the
//! web session cookie: reading cannot be forged across sites, and browsers'
//! `EventSource` cannot send headers.

use crate::error::WebError;
use crate::git_http::principal;
use crate::{App, RequestParts};
use futures::StreamExt as _;
use nimbus_auth::{AccessControl, Decision, RepoAction, Surface};
use nimbus_types::events::StoredEvent;
use nimbus_types::metadata::MetadataStore;
use nimbus_types::{Principal, RepoName};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

/// How often the outbox is read while nothing new came.
const POLL: Duration = Duration::from_millis(500);
/// Events read at a time.
const BATCH: u32 = 200;
/// The most filters of each kind.
const MAX_FILTERS: usize = 32;

#[derive(Debug, Default)]
struct Filters {
    repos: Vec<String>,
    types: Vec<String>,
}

impl Filters {
    fn parse(query: Option<&str>) -> Result<Filters, WebError> {
        let mut filters = Filters::default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| WebError::bad_request(format!("invalid query: {e}")).json())?;
        for (key, value) in pairs {
            match key.as_str() {
                "repo" => filters.repos.push(value.to_ascii_lowercase()),
                "type"
                    if value
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_') =>
                {
                    filters.types.push(value)
                }
                "type" => {
                    return Err(WebError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("invalid event type filter {value:?}"),
                    )
                    .json());
                }
                other => {
                    return Err(WebError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("unknown parameter {other:?}; use repo and type"),
                    )
                    .json());
                }
            }
        }
        if filters.repos.len() > MAX_FILTERS || filters.types.len() > MAX_FILTERS {
            return Err(WebError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("at most {MAX_FILTERS} repo and {MAX_FILTERS} type filters"),
            )
            .json());
        }
        Ok(filters)
    }

    fn matches(&self, stored: &StoredEvent) -> bool {
        let kind = stored.event.kind();
        let repo_ok = self.repos.is_empty()
            || self
                .repos
                .iter()
                .any(|r| r.eq_ignore_ascii_case(&stored.event.repository.name));
        let type_ok = self.types.is_empty()
            || self.types.iter().any(|t| {
                if t.ends_with('.') {
                    kind.starts_with(t.as_str())
                } else {
                    kind == t
                }
            });
        repo_ok && type_ok
    }
}

/// Decides, per repository and once per stream, whether the reader may see
/// its events.
struct Readable {
    meta: Arc<dyn MetadataStore>,
    access: Arc<dyn AccessControl>,
    principal: Principal,
    decided: HashMap<i64, bool>,
}

impl Readable {
    async fn allows(&mut self, stored: &StoredEvent) -> bool {
        if matches!(self.principal, Principal::User { is_owner: true, .. }) {
            return true;
        }
        let id = stored.event.repository.id;
        if let Some(known) = self.decided.get(&id) {
            return *known;
        }
        let repo = match RepoName::new(&stored.event.repository.name) {
            Ok(name) => self.meta.repository(&name).await.ok().flatten(),
            Err(_) => None,
        };
        // A renamed-away or deleted repository: not the one the event was
        // about, so nothing is shown (the owner sees everything above).
        let allowed = match repo {
            Some(repo) if repo.id.0 == id => matches!(
                self.access
                    .authorize_repo(&self.principal, Some(&repo), RepoAction::Read, Surface::Api)
                    .await,
                Ok(Decision::Allow)
            ),
            _ => false,
        };
        self.decided.insert(id, allowed);
        allowed
    }
}

fn last_event_id(parts: &RequestParts) -> Result<Option<i64>, WebError> {
    match parts.headers.get("last-event-id") {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|seq| *seq >= 0)
            .map(Some)
            .ok_or_else(|| {
                WebError::bad_request("Last-Event-ID must be an event id from this stream").json()
            }),
    }
}

/// `GET /api/v1/events`
pub async fn events(app: &App, parts: RequestParts) -> Result<Response, WebError> {
    let principal = if parts
        .headers
        .contains_key(warp::http::header::AUTHORIZATION)
    {
        principal(app, &parts).await.map_err(WebError::json)?
    } else {
        parts
            .session
            .as_ref()
            .map_or(Principal::Anonymous, |session| session.principal())
    };
    if let Principal::User { scopes, .. } = &principal
        && !scopes.api
    {
        return Err(WebError::forbidden("this token lacks the 'api' scope").json());
    }
    let filters = Filters::parse(parts.query.as_deref())?;
    let start = match last_event_id(&parts)? {
        Some(seq) => seq,
        None => app
            .meta
            .latest_event_seq()
            .await
            .map_err(|e| WebError::internal(&e).json())?,
    };
    let readable = Readable {
        meta: app.meta.clone(),
        access: app.access.clone(),
        principal,
        decided: HashMap::new(),
    };
    struct State {
        after: i64,
        pending: VecDeque<StoredEvent>,
        filters: Filters,
        readable: Readable,
        idle: bool,
    }
    let state = State {
        after: start,
        pending: VecDeque::new(),
        filters,
        readable,
        idle: false,
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        loop {
            while let Some(stored) = state.pending.pop_front() {
                if state.filters.matches(&stored) && state.readable.allows(&stored).await {
                    let data = serde_json::to_string(&stored.event).unwrap_or_default();
                    let event = warp::sse::Event::default()
                        .id(stored.seq.to_string())
                        .event(stored.event.kind())
                        .data(data);
                    return Some((Ok::<_, std::convert::Infallible>(event), state));
                }
            }
            if state.idle {
                tokio::time::sleep(POLL).await;
            }
            match state.readable.meta.events_after(state.after, BATCH).await {
                Ok(batch) => {
                    state.idle = batch.is_empty();
                    if let Some(last) = batch.last() {
                        state.after = last.seq;
                    }
                    state.pending.extend(batch);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the event stream could not read events");
                    state.idle = true;
                }
            }
        }
    });
    // warp needs a `Sync` stream: produce on a task, hand over by channel.
    // The task ends when the client goes (the channel closes).
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                () = sender.closed() => None,
            };
            let Some(event) = event else { break };
            if sender.send(event).await.is_err() {
                break;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    let reply = warp::sse::reply(warp::sse::keep_alive().stream(stream));
    let mut response = reply.into_response();
    response.headers_mut().insert(
        warp::http::header::CACHE_CONTROL,
        warp::http::HeaderValue::from_static("no-cache"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_refuse_nonsense() {
        let filters = Filters::parse(Some("repo=Demo&type=branch.&type=push")).expect("valid");
        assert_eq!(filters.repos, ["demo"]);
        assert_eq!(filters.types, ["branch.", "push"]);
        assert!(Filters::parse(Some("type=PUSH")).is_err());
        assert!(Filters::parse(Some("since=1")).is_err());
        let many = (0..40)
            .map(|i| format!("repo=r{i}"))
            .collect::<Vec<_>>()
            .join("&");
        assert!(Filters::parse(Some(&many)).is_err());
    }
}
