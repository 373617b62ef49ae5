//! The delivery worker.
//!
//! It reads the event outbox directly (not the bus), so webhooks fire with
//! the embedded defaults and while NATS is down. Each round:
//! 1. **Fan out**: events after the webhook cursor become one pending
//!    delivery per webhook that wants them; the cursor moves in the same
//!    transaction ([`WebhookStore::enqueue_deliveries`]), so an event is
//!    turned into deliveries exactly once even with processes side by side.
//! 2. **Send** the due deliveries, a few at a time, and record each outcome
//!    together with the next attempt when it failed
//!    ([`WebhookStore::finish_delivery`]): exponential backoff from
//!    [`DispatcherConfig::retry_base`], capped at
//!    [`DispatcherConfig::retry_max`], at most
//!    [`DispatcherConfig::max_attempts`] attempts. A manual redelivery is
//!    one attempt.
//! 3. Now and then, **forget** delivery records older than
//!    [`DispatcherConfig::keep_log`].
//!
//! Only the holder of the `webhook-dispatcher` lease works, so an attempt
//! is normally made once; if a holder dies mid-send, the next one sends the
//! attempt again (receivers de-duplicate by `webhook-id`).

use crate::guard::{AddressPolicy, GuardedResolver};
use crate::payload::{self, PayloadContext};
use crate::{new_guid, sign};
use futures::StreamExt;
use nimbus_types::events::StoredEvent;
use nimbus_types::metadata::{MetadataError, MetadataStore};
use nimbus_types::unix_now;
use nimbus_types::webhooks::{Delivery, DeliveryOutcome, NewDelivery, Webhook};
use nimbus_types::{RepoName, Repository};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The name of the dispatcher's lease.
pub const LEASE: &str = "webhook-dispatcher";

/// Response headers whose values are never stored.
const SECRET_HEADERS: &[&str] = &[
    "set-cookie",
    "cookie",
    "authorization",
    "proxy-authorization",
    "proxy-authenticate",
    "www-authenticate",
];

/// How the dispatcher works and paces itself.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Where users reach this server (links in payloads), no trailing `/`.
    pub base_url: String,
    pub policy: Arc<AddressPolicy>,
    /// How often to look for work when not woken.
    pub poll: Duration,
    /// Events fanned out per round.
    pub batch: u32,
    /// Deliveries taken per round, and sent at once.
    pub send_batch: u32,
    pub concurrency: usize,
    /// The whole attempt: connecting, sending, and reading the response.
    pub timeout: Duration,
    /// The wait after the first failure; it doubles with every attempt.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Attempts of one event to one webhook, the first included.
    pub max_attempts: u32,
    /// The most of a response body kept in the log.
    pub max_response_bytes: usize,
    /// How long finished attempts stay in the log.
    pub keep_log: Duration,
    pub lease_ttl: i64,
}

impl DispatcherConfig {
    pub fn new(base_url: &str, policy: AddressPolicy) -> DispatcherConfig {
        DispatcherConfig {
            base_url: base_url.trim_end_matches('/').to_owned(),
            policy: Arc::new(policy),
            poll: Duration::from_secs(1),
            batch: 100,
            send_batch: 32,
            concurrency: 8,
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(15),
            retry_max: Duration::from_secs(3600),
            max_attempts: 10,
            max_response_bytes: 64 << 10,
            keep_log: Duration::from_secs(30 * 24 * 3600),
            lease_ttl: 15,
        }
    }

    /// Seconds to wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> i64 {
        let base = self.retry_base.as_secs().max(1);
        let factor = 1u64 << attempt.saturating_sub(1).min(30);
        let wait = base
            .saturating_mul(factor)
            .min(self.retry_max.as_secs().max(1));
        i64::try_from(wait).unwrap_or(i64::MAX)
    }
}

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the webhook HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

/// Sends webhooks.
pub struct Dispatcher {
    meta: Arc<dyn MetadataStore>,
    client: reqwest::Client,
    config: DispatcherConfig,
    holder: String,
    wake: Notify,
    last_prune: AtomicI64,
}

impl Dispatcher {
    pub fn new(
        meta: Arc<dyn MetadataStore>,
        config: DispatcherConfig,
    ) -> Result<Dispatcher, ClientError> {
        let policy = config.policy.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 3 {
                return attempt.error("more than 3 redirects");
            }
            // Names are checked when they resolve; IP literals here.
            match policy.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refused) => attempt.error(format!("redirect refused: {refused}")),
            }
        });
        let client = reqwest::Client::builder()
            .user_agent(concat!("Nimbus-Hookshot/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver::new(config.policy.clone())))
            .redirect(redirects)
            // A proxy would resolve and connect past the guard.
            .no_proxy()
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .build()?;
        Ok(Dispatcher {
            meta,
            client,
            config,
            holder: new_guid(),
            wake: Notify::new(),
            last_prune: AtomicI64::new(0),
        })
    }

    pub fn config(&self) -> &DispatcherConfig {
        &self.config
    }

    /// Work soon: events or a redelivery were committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// One round; how many events and attempts it handled (0 without the
    /// lease).
    pub async fn run_once(&self) -> Result<usize, MetadataError> {
        let now = unix_now();
        if !self
            .meta
            .acquire_lease(LEASE, &self.holder, now, self.config.lease_ttl)
            .await?
        {
            return Ok(0);
        }
        let fanned = self.fan_out().await?;
        let sent = self.send_due().await?;
        if now - self.last_prune.load(Ordering::Relaxed) >= 3600 {
            self.last_prune.store(now, Ordering::Relaxed);
            let keep = i64::try_from(self.config.keep_log.as_secs()).unwrap_or(i64::MAX);
            let forgotten = self.meta.prune_deliveries(now.saturating_sub(keep)).await?;
            if forgotten > 0 {
                tracing::info!(forgotten, "old webhook deliveries forgotten");
            }
        }
        Ok(fanned + sent)
    }

    /// Run until the task is dropped or aborted.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.run_once().await {
                Ok(_) => {
                    backoff = Duration::from_millis(200);
                    let _ = tokio::time::timeout(self.config.poll, self.wake.notified()).await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "webhook dispatcher waits for the database");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run())
    }

    /// Turn the events after the cursor into deliveries.
    async fn fan_out(&self) -> Result<usize, MetadataError> {
        let cursor = self.meta.webhook_cursor().await?;
        let events = self.meta.events_after(cursor, self.config.batch).await?;
        let Some(last) = events.last().map(|stored| stored.seq) else {
            return Ok(0);
        };
        let owner = self
            .meta
            .owner()
            .await?
            .map(|user| user.name)
            .unwrap_or_default();
        let mut hooks: HashMap<i64, Vec<Webhook>> = HashMap::new();
        let mut deliveries = Vec::new();
        for stored in &events {
            let repo_id = stored.event.repository.id;
            let known = match hooks.entry(repo_id) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => entry.insert(
                    self.meta
                        .webhooks_for_repository(nimbus_types::RepoId(repo_id))
                        .await?,
                ),
            };
            let wanting: Vec<&Webhook> = known
                .iter()
                .filter(|hook| hook.since_seq < stored.seq && hook.wants(stored.event.kind()))
                .collect();
            if wanting.is_empty() {
                continue;
            }
            let repository = self.repository_of(stored).await?;
            let context = PayloadContext {
                base_url: &self.config.base_url,
                repository: repository.as_ref(),
                owner: &owner,
            };
            let (github_event, body) = payload::build(&stored.event, &context);
            let body = body.to_string();
            let now = unix_now();
            for hook in wanting {
                deliveries.push(NewDelivery {
                    hook: hook.id,
                    guid: new_guid(),
                    event_seq: stored.seq,
                    event_id: stored.event.id.clone(),
                    event_type: stored.event.kind().to_owned(),
                    github_event: github_event.to_owned(),
                    attempt: 1,
                    redelivery: false,
                    due_at: now,
                    body: body.clone(),
                    created_at: now,
                });
            }
        }
        let scheduled = deliveries.len();
        if self
            .meta
            .enqueue_deliveries(cursor, last, &deliveries)
            .await?
        {
            if scheduled > 0 {
                tracing::debug!(
                    events = events.len(),
                    scheduled,
                    "webhook deliveries scheduled"
                );
            }
            Ok(events.len())
        } else {
            Ok(0)
        }
    }

    async fn repository_of(
        &self,
        stored: &StoredEvent,
    ) -> Result<Option<Repository>, MetadataError> {
        let Ok(name) = RepoName::new(&stored.event.repository.name) else {
            return Ok(None);
        };
        Ok(self
            .meta
            .repository(&name)
            .await?
            .filter(|repo| repo.id.0 == stored.event.repository.id))
    }

    async fn send_due(&self) -> Result<usize, MetadataError> {
        let due = self
            .meta
            .due_deliveries(unix_now(), self.config.send_batch)
            .await?;
        let count = due.len();
        let results: Vec<Result<(), MetadataError>> = futures::stream::iter(due)
            .map(|delivery| self.attempt(delivery))
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect::<Result<(), _>>()?;
        Ok(count)
    }

    /// Make one attempt and record it, with the next one if it failed.
    async fn attempt(&self, delivery: Delivery) -> Result<(), MetadataError> {
        let Some(hook) = self.meta.webhook(delivery.hook).await? else {
            // Deleted since: its deliveries went with it.
            return Ok(());
        };
        let outcome = if hook.active {
            self.send(&hook, &delivery).await
        } else {
            DeliveryOutcome {
                delivered_at: unix_now(),
                error: Some("the webhook is disabled".into()),
                ..DeliveryOutcome::default()
            }
        };
        let retry = (!outcome.succeeded()
            && hook.active
            && !delivery.redelivery
            && delivery.attempt < self.config.max_attempts)
            .then(|| NewDelivery {
                hook: delivery.hook,
                guid: delivery.guid.clone(),
                event_seq: delivery.event_seq,
                event_id: delivery.event_id.clone(),
                event_type: delivery.event_type.clone(),
                github_event: delivery.github_event.clone(),
                attempt: delivery.attempt + 1,
                redelivery: false,
                due_at: outcome.delivered_at + self.config.backoff(delivery.attempt),
                body: delivery.body.clone(),
                created_at: outcome.delivered_at,
            });
        tracing::info!(
            hook = hook.id,
            delivery = delivery.id,
            event = %delivery.event_id,
            attempt = delivery.attempt,
            status = outcome.response_status,
            error = outcome.error.as_deref(),
            retry_at = retry.as_ref().map(|next| next.due_at),
            "webhook delivery"
        );
        self.meta
            .finish_delivery(delivery.id, &outcome, retry.as_ref())
            .await?;
        Ok(())
    }

    /// Send one attempt; never fails, the outcome says what happened.
    pub async fn send(&self, hook: &Webhook, delivery: &Delivery) -> DeliveryOutcome {
        let started = Instant::now();
        let timestamp = unix_now();
        let body = delivery.body.as_bytes();
        let headers: Vec<(String, String)> = [
            ("Content-Type", "application/json".to_owned()),
            (
                "User-Agent",
                concat!("Nimbus-Hookshot/", env!("CARGO_PKG_VERSION")).to_owned(),
            ),
            ("X-GitHub-Event", delivery.github_event.clone()),
            ("X-GitHub-Delivery", delivery.guid.clone()),
            ("X-GitHub-Hook-ID", hook.id.to_string()),
            (
                "X-GitHub-Hook-Installation-Target-Type",
                if hook.repo.is_some() {
                    "repository"
                } else {
                    "instance"
                }
                .to_owned(),
            ),
            (
                "X-Hub-Signature-256",
                sign::github_signature(&hook.secret, body),
            ),
            ("X-Nimbus-Event", delivery.event_type.clone()),
            ("X-Nimbus-Event-Id", delivery.event_id.clone()),
            ("X-Nimbus-Attempt", delivery.attempt.to_string()),
            ("webhook-id", delivery.guid.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            (
                "webhook-signature",
                sign::standard_signature(&hook.secret, &delivery.guid, timestamp, body),
            ),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        let mut outcome = DeliveryOutcome {
            request_headers: headers.clone(),
            ..DeliveryOutcome::default()
        };
        let secrets = secrets_of(hook);
        let result = match self.config.policy.parse_url(&hook.url) {
            Err(refused) => Err(refused.to_string()),
            Ok(url) => {
                let mut request = self.client.post(url).body(delivery.body.clone());
                for (name, value) in &headers {
                    request = request.header(name, value);
                }
                self.exchange(request, &mut outcome).await
            }
        };
        if let Err(error) = result {
            outcome.error = Some(redact(&error, &secrets));
        } else if !outcome.succeeded() {
            let status = outcome.response_status.unwrap_or_default();
            outcome.error = Some(format!("the receiver answered {status}"));
        }
        outcome.response_body = redact(&outcome.response_body, &secrets);
        for (_, value) in &mut outcome.response_headers {
            *value = redact(value, &secrets);
        }
        outcome.delivered_at = unix_now();
        outcome.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        outcome
    }

    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        outcome: &mut DeliveryOutcome,
    ) -> Result<(), String> {
        let mut response = request.send().await.map_err(describe)?;
        outcome.response_status = Some(response.status().as_u16());
        outcome.response_headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                let name = name.as_str().to_owned();
                let value = if SECRET_HEADERS.contains(&name.as_str()) {
                    "[redacted]".to_owned()
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                };
                (name, value)
            })
            .collect();
        let mut kept = Vec::new();
        let limit = self.config.max_response_bytes;
        while kept.len() < limit {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = limit - kept.len();
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                // The status is what counts; a body cut short is noted.
                Err(err) => {
                    kept.extend_from_slice(
                        format!("\n[body cut short: {}]", describe(err)).as_bytes(),
                    );
                    break;
                }
            }
        }
        outcome.response_body = String::from_utf8_lossy(&kept).into_owned();
        Ok(())
    }
}

/// An error and its causes on one line, without the URL (it may carry
/// credentials).
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The strings of `hook` that must not reach the log: its secret and any
/// password in its URL.
fn secrets_of(hook: &Webhook) -> Vec<String> {
    let mut secrets = vec![hook.secret.clone()];
    if let Ok(url) = reqwest::Url::parse(&hook.url)
        && let Some(password) = url.password()
    {
        secrets.push(password.to_owned());
    }
    secrets.retain(|secret| secret.len() >= 4);
    secrets
}

fn redact(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_owned();
    for secret in secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "[redacted]");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut config = DispatcherConfig::new("http://h", AddressPolicy::public_only());
        config.retry_base = Duration::from_secs(15);
        config.retry_max = Duration::from_secs(3600);
        let waits: Vec<i64> = (1..=10).map(|attempt| config.backoff(attempt)).collect();
        assert_eq!(waits, [15, 30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(config.backoff(u32::MAX), 3600);
    }

    #[test]
    fn secrets_are_redacted() {
        let hook = Webhook {
            id: 1,
            repo: None,
            url: "https://bot:pa55word@hooks.example.com/x".into(),
            secret: "whsec_abcdef".into(),
            events: vec!["*".into()],
            active: true,
            created_by: None,
            created_at: 0,
            updated_at: 0,
            since_seq: 0,
        };
        let secrets = secrets_of(&hook);
        assert_eq!(
            redact("echo whsec_abcdef and pa55word", &secrets),
            "echo [redacted] and [redacted]"
        );
    }
}
