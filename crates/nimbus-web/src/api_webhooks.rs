//! The webhook API, per repository (`/api/v1/repos/{name}/hooks…`,
//! repository admins) and instance-wide (`/api/v1/hooks…`, the owner):
//!
//! - `GET|POST …/hooks`: list, create;
//! - `GET|PATCH|DELETE …/hooks/{id}`;
//! - `GET …/hooks/{id}/deliveries` (newest first, `?before=&limit=`);
//! - `GET …/hooks/{id}/deliveries/{delivery}`: request and response;
//! - `POST …/hooks/{id}/deliveries/{delivery}/attempts`: redeliver (GitHub's
//!   path for it).
//!
//! Secrets are write-only: a created webhook's generated secret is shown in
//! the creation response and never again; URLs are shown with any password
//! replaced.

use crate::api::{internal, json_reply, method_not_allowed, no_content, read_json, require};
use crate::error::WebError;
use crate::git_http::{authorized_repo, principal};
use crate::{App, Audit, RequestParts};
use nimbus_auth::{InstanceAction, RepoAction, Surface};
use nimbus_types::webhooks::{Delivery, HookId, NewWebhook, Webhook, WebhookUpdate};
use nimbus_types::{Principal, Repository, unix_now};
use nimbus_webhooks::{MAX_SECRET_BYTES, MAX_URL_BYTES, redact_url, validate_events};
use serde::{Deserialize, Serialize};
use warp::http::{Method, StatusCode};
use warp::reply::Response;

const DEFAULT_DELIVERY_LIMIT: u32 = 30;
const MAX_DELIVERY_LIMIT: u32 = 100;

fn unprocessable(message: impl Into<String>) -> WebError {
    WebError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// A webhook as the API shows it (GitHub's shape, minus what does not apply).
#[derive(Debug, Serialize)]
pub struct HookView {
    pub id: HookId,
    /// `repository` or `instance`.
    pub scope: &'static str,
    pub repository: Option<String>,
    pub active: bool,
    pub events: Vec<String>,
    pub config: HookConfigView,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_delivery: Option<DeliverySummary>,
}

#[derive(Debug, Serialize)]
pub struct HookConfigView {
    pub url: String,
    pub content_type: &'static str,
    /// Always masked.
    pub secret: &'static str,
}

/// The creation response: the view, and the secret when Nimbus made it.
#[derive(Debug, Serialize)]
struct CreatedHook {
    #[serde(flatten)]
    hook: HookView,
    /// Shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// One line of the delivery log.
#[derive(Debug, Serialize)]
pub struct DeliverySummary {
    pub id: i64,
    pub guid: String,
    /// GitHub's event name (`X-GitHub-Event`).
    pub event: String,
    pub nimbus_event: String,
    pub event_id: String,
    pub attempt: u32,
    pub redelivery: bool,
    /// `pending`, `succeeded` or `failed`.
    pub status: &'static str,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub due_at: i64,
    pub delivered_at: Option<i64>,
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
struct DeliveryDetail {
    #[serde(flatten)]
    summary: DeliverySummary,
    request: RequestView,
    response: Option<ResponseView>,
}

#[derive(Debug, Serialize)]
struct RequestView {
    /// Empty until the attempt is made (the signature depends on its time).
    headers: Vec<(String, String)>,
    payload: serde_json::Value,
}

#[derive(Debug, Serialize)]
struct ResponseView {
    headers: Vec<(String, String)>,
    payload: String,
}

fn summary(delivery: &Delivery) -> DeliverySummary {
    let outcome = delivery.outcome.as_ref();
    DeliverySummary {
        id: delivery.id,
        guid: delivery.guid.clone(),
        event: delivery.github_event.clone(),
        nimbus_event: delivery.event_type.clone(),
        event_id: delivery.event_id.clone(),
        attempt: delivery.attempt,
        redelivery: delivery.redelivery,
        status: delivery.status.as_str(),
        status_code: outcome.and_then(|o| o.response_status),
        error: outcome.and_then(|o| o.error.clone()),
        due_at: delivery.due_at,
        delivered_at: outcome.map(|o| o.delivered_at),
        duration_ms: outcome.map(|o| o.duration_ms),
    }
}

fn detail(delivery: &Delivery) -> DeliveryDetail {
    let outcome = delivery.outcome.as_ref();
    DeliveryDetail {
        summary: summary(delivery),
        request: RequestView {
            headers: outcome
                .map(|o| o.request_headers.clone())
                .unwrap_or_default(),
            payload: serde_json::from_str(&delivery.body)
                .unwrap_or_else(|_| serde_json::Value::String(delivery.body.clone())),
        },
        response: outcome
            .filter(|o| o.response_status.is_some())
            .map(|o| ResponseView {
                headers: o.response_headers.clone(),
                payload: o.response_body.clone(),
            }),
    }
}

async fn hook_view(
    app: &App,
    hook: &Webhook,
    repo: Option<&Repository>,
) -> Result<HookView, WebError> {
    let last = app
        .meta
        .deliveries(hook.id, None, 1)
        .await
        .map_err(internal)?;
    Ok(HookView {
        id: hook.id,
        scope: if hook.repo.is_some() {
            "repository"
        } else {
            "instance"
        },
        repository: repo.map(|repo| repo.name.to_string()),
        active: hook.active,
        events: hook.events.clone(),
        config: HookConfigView {
            url: redact_url(&hook.url),
            content_type: "json",
            secret: "********",
        },
        created_at: hook.created_at,
        updated_at: hook.updated_at,
        last_delivery: last.first().map(summary),
    })
}

/// Who asks, and for which repository (`None`: instance-wide hooks), once
/// they may manage its webhooks.
async fn scope(
    app: &App,
    repo: Option<&str>,
    parts: &RequestParts,
) -> Result<(Principal, Option<Repository>), WebError> {
    let principal = principal(app, parts).await?;
    match repo {
        Some(name) => {
            let repo =
                authorized_repo(app, name, &principal, RepoAction::Admin, Surface::Api).await?;
            Ok((principal, Some(repo)))
        }
        None => {
            require(app.access.authorize_instance(
                &principal,
                InstanceAction::ManageWebhooks,
                Surface::Api,
            ))?;
            Ok((principal, None))
        }
    }
}

/// The webhook `id` of this scope, or 404.
pub(crate) async fn scoped_hook(
    app: &App,
    id: &str,
    repo: Option<&Repository>,
) -> Result<Webhook, WebError> {
    let not_found = || WebError::not_found(format!("webhook {id} not found"));
    let id: HookId = id.parse().map_err(|_| not_found())?;
    let hook = app
        .meta
        .webhook(id)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    if hook.repo != repo.map(|repo| repo.id) {
        return Err(not_found());
    }
    Ok(hook)
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct HookConfig {
    pub url: Option<String>,
    pub secret: Option<String>,
    pub content_type: Option<String>,
}

/// A webhook to create or change. `url` and `secret` may also be given in
/// `config`, as GitHub's API takes them.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct HookRequest {
    pub url: Option<String>,
    pub secret: Option<String>,
    pub events: Option<Vec<String>>,
    pub active: Option<bool>,
    pub config: Option<HookConfig>,
    /// GitHub's `"web"`; accepted and ignored.
    pub name: Option<String>,
}

/// Checked fields of a [`HookRequest`].
pub(crate) struct Checked {
    url: Option<String>,
    secret: Option<String>,
    events: Option<Vec<String>>,
    active: Option<bool>,
}

/// Check a webhook request (URL against the SSRF policy, secret length,
/// event names): 422 with the reason when it is not acceptable.
pub(crate) fn check(app: &App, request: HookRequest) -> Result<Checked, WebError> {
    let config = request.config.unwrap_or_default();
    if let Some(kind) = config.content_type.as_deref()
        && kind != "json"
    {
        return Err(unprocessable(format!(
            "content_type {kind:?} is not supported; webhooks send JSON"
        )));
    }
    if let Some(name) = request.name.as_deref()
        && name != "web"
    {
        return Err(unprocessable(format!("name must be \"web\", not {name:?}")));
    }
    let url = match request.url.or(config.url) {
        Some(url) if url.len() > MAX_URL_BYTES => {
            return Err(unprocessable(format!(
                "the URL is longer than {MAX_URL_BYTES} bytes"
            )));
        }
        Some(url) => Some(
            app.webhook_policy
                .parse_url(&url)
                .map_err(|refused| unprocessable(refused.to_string()))?
                .to_string(),
        ),
        None => None,
    };
    let secret = request.secret.or(config.secret);
    if let Some(secret) = &secret
        && (secret.len() < 8 || secret.len() > MAX_SECRET_BYTES)
    {
        return Err(unprocessable(format!(
            "the secret must be 8 to {MAX_SECRET_BYTES} bytes long"
        )));
    }
    let events = request
        .events
        .map(|events| validate_events(&events))
        .transpose()
        .map_err(|err| unprocessable(err.to_string()))?;
    Ok(Checked {
        url,
        secret,
        events,
        active: request.active,
    })
}

/// `GET|POST /api/v1/repos/{name}/hooks` and `/api/v1/hooks`.
pub async fn hooks(
    app: &App,
    repo: Option<&str>,
    parts: RequestParts,
) -> Result<Response, WebError> {
    async {
        let (principal, repo) = scope(app, repo, &parts).await?;
        match parts.method {
            Method::GET => {
                let hooks = app
                    .meta
                    .list_webhooks(repo.as_ref().map(|repo| repo.id))
                    .await
                    .map_err(internal)?;
                let mut views = Vec::with_capacity(hooks.len());
                for hook in &hooks {
                    views.push(hook_view(app, hook, repo.as_ref()).await?);
                }
                Ok(json_reply(StatusCode::OK, &views))
            }
            Method::POST => {
                let client = parts.client.clone();
                let request: HookRequest = read_json(app, parts).await?;
                let checked = check(app, request)?;
                let (hook, generated) =
                    create_hook(app, &principal, repo.as_ref(), checked, client.as_deref()).await?;
                let view = hook_view(app, &hook, repo.as_ref()).await?;
                Ok(json_reply(
                    StatusCode::CREATED,
                    &CreatedHook {
                        hook: view,
                        secret: generated,
                    },
                ))
            }
            _ => Err(method_not_allowed()),
        }
    }
    .await
    .map_err(WebError::json)
}

/// Create a webhook for `repo` (`None`: instance-wide) as `principal`
/// (already allowed to manage them), with its audit entry; the generated
/// secret when the request gave none (shown once). The API's `POST` and the
/// settings page.
pub(crate) async fn create_hook(
    app: &App,
    principal: &Principal,
    repo: Option<&Repository>,
    checked: Checked,
    client: Option<&str>,
) -> Result<(Webhook, Option<String>), WebError> {
    let url = checked
        .url
        .ok_or_else(|| unprocessable("a webhook needs a url"))?;
    let generated = checked
        .secret
        .is_none()
        .then(nimbus_webhooks::sign::generate_secret);
    let secret = checked
        .secret
        .or_else(|| generated.clone())
        .unwrap_or_default();
    let hook = app
        .meta
        .create_webhook(&NewWebhook {
            repo: repo.map(|repo| repo.id),
            url,
            secret,
            events: checked.events.unwrap_or_else(|| vec!["push".to_owned()]),
            active: checked.active.unwrap_or(true),
            created_by: crate::app::event_actor(principal)
                .map(|actor| nimbus_types::UserId(actor.id)),
            now: unix_now(),
        })
        .await
        .map_err(internal)?;
    audit(app, "webhook.created", principal, repo, &hook, client).await;
    Ok((hook, generated))
}

/// Change `hook` (of `repo`'s scope) as `principal`, with its audit entry:
/// the API's `PATCH` and the settings page.
pub(crate) async fn update_hook(
    app: &App,
    principal: &Principal,
    repo: Option<&Repository>,
    hook: &Webhook,
    checked: Checked,
    client: Option<&str>,
) -> Result<Webhook, WebError> {
    let updated = app
        .meta
        .update_webhook(
            hook.id,
            &WebhookUpdate {
                url: checked.url,
                secret: checked.secret,
                events: checked.events,
                active: checked.active,
                now: unix_now(),
            },
        )
        .await
        .map_err(internal)?
        .ok_or_else(|| WebError::not_found(format!("webhook {} not found", hook.id)))?;
    audit(app, "webhook.updated", principal, repo, &updated, client).await;
    Ok(updated)
}

/// Delete `hook` as `principal`, with its audit entry.
pub(crate) async fn delete_hook(
    app: &App,
    principal: &Principal,
    repo: Option<&Repository>,
    hook: &Webhook,
    client: Option<&str>,
) -> Result<(), WebError> {
    app.meta.delete_webhook(hook.id).await.map_err(internal)?;
    audit(app, "webhook.deleted", principal, repo, hook, client).await;
    Ok(())
}

/// Queue `original` again, due now, and wake the dispatcher; with its
/// audit entry.
pub(crate) async fn redeliver_delivery(
    app: &App,
    principal: &Principal,
    repo: Option<&Repository>,
    hook: &Webhook,
    original: &Delivery,
    client: Option<&str>,
) -> Result<Delivery, WebError> {
    let queued = app
        .meta
        .add_delivery(&nimbus_webhooks::redelivery(original, unix_now()))
        .await
        .map_err(internal)?;
    if let Some(dispatcher) = &app.webhooks {
        dispatcher.wake();
    }
    audit(app, "webhook.redelivered", principal, repo, hook, client).await;
    Ok(queued)
}

async fn audit(
    app: &App,
    action: &str,
    principal: &Principal,
    repo: Option<&Repository>,
    hook: &Webhook,
    client: Option<&str>,
) {
    let mut event = Audit::new(action)
        .by(principal)
        .target(format!("webhook {}", hook.id))
        .client(client)
        .detail(redact_url(&hook.url));
    if let Some(repo) = repo {
        event = event.repo(&repo.name);
    }
    app.audit(event).await;
}

/// `GET|PATCH|DELETE …/hooks/{id}`.
pub async fn hook(
    app: &App,
    repo: Option<&str>,
    id: &str,
    parts: RequestParts,
) -> Result<Response, WebError> {
    async {
        let (principal, repo) = scope(app, repo, &parts).await?;
        let hook = scoped_hook(app, id, repo.as_ref()).await?;
        match parts.method {
            Method::GET => Ok(json_reply(
                StatusCode::OK,
                &hook_view(app, &hook, repo.as_ref()).await?,
            )),
            Method::PATCH => {
                let client = parts.client.clone();
                let request: HookRequest = read_json(app, parts).await?;
                let checked = check(app, request)?;
                let updated = update_hook(
                    app,
                    &principal,
                    repo.as_ref(),
                    &hook,
                    checked,
                    client.as_deref(),
                )
                .await?;
                Ok(json_reply(
                    StatusCode::OK,
                    &hook_view(app, &updated, repo.as_ref()).await?,
                ))
            }
            Method::DELETE => {
                delete_hook(
                    app,
                    &principal,
                    repo.as_ref(),
                    &hook,
                    parts.client.as_deref(),
                )
                .await?;
                Ok(no_content())
            }
            _ => Err(method_not_allowed()),
        }
    }
    .await
    .map_err(WebError::json)
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeliveryParams {
    before: Option<i64>,
    limit: Option<u32>,
}

/// `GET …/hooks/{id}/deliveries`.
pub async fn deliveries(
    app: &App,
    repo: Option<&str>,
    id: &str,
    parts: RequestParts,
) -> Result<Response, WebError> {
    async {
        let (_, repo) = scope(app, repo, &parts).await?;
        let hook = scoped_hook(app, id, repo.as_ref()).await?;
        let params: DeliveryParams =
            serde_urlencoded::from_str(parts.query.as_deref().unwrap_or(""))
                .map_err(|e| unprocessable(format!("invalid query: {e}")))?;
        let limit = params.limit.unwrap_or(DEFAULT_DELIVERY_LIMIT);
        if limit == 0 || limit > MAX_DELIVERY_LIMIT {
            return Err(unprocessable(format!(
                "limit must be between 1 and {MAX_DELIVERY_LIMIT}"
            )));
        }
        let listed = app
            .meta
            .deliveries(hook.id, params.before, limit)
            .await
            .map_err(internal)?;
        let views: Vec<DeliverySummary> = listed.iter().map(summary).collect();
        Ok(json_reply(StatusCode::OK, &views))
    }
    .await
    .map_err(WebError::json)
}

/// The delivery `id` of `hook`, or 404.
pub(crate) async fn scoped_delivery(
    app: &App,
    hook: &Webhook,
    id: &str,
) -> Result<Delivery, WebError> {
    let not_found = || WebError::not_found(format!("delivery {id} not found"));
    let id: i64 = id.parse().map_err(|_| not_found())?;
    app.meta
        .delivery(hook.id, id)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)
}

/// `GET …/hooks/{id}/deliveries/{delivery}`.
pub async fn delivery(
    app: &App,
    repo: Option<&str>,
    id: &str,
    delivery: &str,
    parts: RequestParts,
) -> Result<Response, WebError> {
    async {
        let (_, repo) = scope(app, repo, &parts).await?;
        let hook = scoped_hook(app, id, repo.as_ref()).await?;
        let delivery = scoped_delivery(app, &hook, delivery).await?;
        Ok(json_reply(StatusCode::OK, &detail(&delivery)))
    }
    .await
    .map_err(WebError::json)
}

/// `POST …/hooks/{id}/deliveries/{delivery}/attempts`: send it again now.
pub async fn redeliver(
    app: &App,
    repo: Option<&str>,
    id: &str,
    delivery: &str,
    parts: RequestParts,
) -> Result<Response, WebError> {
    async {
        let (principal, repo) = scope(app, repo, &parts).await?;
        let hook = scoped_hook(app, id, repo.as_ref()).await?;
        let original = scoped_delivery(app, &hook, delivery).await?;
        let queued = redeliver_delivery(
            app,
            &principal,
            repo.as_ref(),
            &hook,
            &original,
            parts.client.as_deref(),
        )
        .await?;
        Ok(json_reply(StatusCode::ACCEPTED, &summary(&queued)))
    }
    .await
    .map_err(WebError::json)
}
