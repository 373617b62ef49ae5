//! The webhook store: webhooks (per repository or instance-wide), the
//! dispatcher's cursor over the event outbox, and the delivery log. One
//! trait, implemented by both metadata backends (every
//! [`crate::metadata::MetadataStore`] is one).
//!
//! A delivery row is one attempt to send one event to one webhook. Every
//! attempt of the same event to the same webhook (automatic retries and
//! manual redeliveries) shares a `guid`, sent as `X-GitHub-Delivery` and
//! `webhook-id`, so receivers can de-duplicate.

use crate::access::UserId;
use crate::metadata::MetadataError;
use crate::repo::RepoId;

/// A webhook's id; unique across repositories and the instance.
pub type HookId = i64;

/// A webhook to create. (`Debug` leaves the secret out.)
#[derive(Clone)]
pub struct NewWebhook {
    /// `None`: instance-wide, it sees every repository's events.
    pub repo: Option<RepoId>,
    pub url: String,
    /// The HMAC key. Stored as given: signing needs it.
    pub secret: String,
    /// Event types (`push`, `branch.created`…) or `*` for all.
    pub events: Vec<String>,
    pub active: bool,
    pub created_by: Option<UserId>,
    pub now: i64,
}

/// A stored webhook. (`Debug` leaves the secret out.)
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: HookId,
    pub repo: Option<RepoId>,
    pub url: String,
    pub secret: String,
    pub events: Vec<String>,
    pub active: bool,
    pub created_by: Option<UserId>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The newest outbox `seq` when the webhook was created: it is sent only
    /// events after that.
    pub since_seq: i64,
}

impl Webhook {
    /// Whether the webhook wants events of type `kind`.
    pub fn wants(&self, kind: &str) -> bool {
        self.events
            .iter()
            .any(|event| event == "*" || event == kind)
    }
}

/// Changes to a webhook; `None` keeps the field. (`Debug` leaves the
/// secret out.)
#[derive(Clone, Default)]
pub struct WebhookUpdate {
    pub url: Option<String>,
    pub secret: Option<String>,
    pub events: Option<Vec<String>>,
    pub active: Option<bool>,
    pub now: i64,
}

impl std::fmt::Debug for NewWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewWebhook")
            .field("repo", &self.repo)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("repo", &self.repo)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("active", &self.active)
            .field("since_seq", &self.since_seq)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for WebhookUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookUpdate")
            .field("url", &self.url)
            .field("secret_changed", &self.secret.is_some())
            .field("events", &self.events)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// Where a delivery attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Not sent yet; sent when `due_at` has come.
    Pending,
    /// The receiver answered 2xx.
    Succeeded,
    /// Refused, unreachable, timed out or answered otherwise.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "succeeded" => Some(DeliveryStatus::Succeeded),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// A delivery attempt to schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub hook: HookId,
    /// Shared by every attempt of this event to this webhook.
    pub guid: String,
    pub event_seq: i64,
    pub event_id: String,
    /// The Nimbus event type (`push`, `branch.created`…).
    pub event_type: String,
    /// GitHub's name for it (`X-GitHub-Event`: `push`, `create`…).
    pub github_event: String,
    /// 1 for the first try; retries count up.
    pub attempt: u32,
    /// Asked for by a person, not scheduled by the retry policy.
    pub redelivery: bool,
    /// Unix seconds: not sent before.
    pub due_at: i64,
    /// The JSON payload.
    pub body: String,
    pub created_at: i64,
}

/// A delivery attempt, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub hook: HookId,
    pub guid: String,
    pub event_seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub github_event: String,
    pub attempt: u32,
    pub redelivery: bool,
    pub status: DeliveryStatus,
    pub due_at: i64,
    pub created_at: i64,
    pub body: String,
    /// Set once the attempt is over.
    pub outcome: Option<DeliveryOutcome>,
}

/// What an attempt did. Headers are stored with secrets already redacted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryOutcome {
    /// Unix seconds when the attempt ended.
    pub delivered_at: i64,
    pub duration_ms: i64,
    pub request_headers: Vec<(String, String)>,
    /// `None` when no response came (refused, unreachable, timed out).
    pub response_status: Option<u16>,
    pub response_headers: Vec<(String, String)>,
    /// The start of the response body.
    pub response_body: String,
    /// Why the attempt failed, when it did.
    pub error: Option<String>,
}

impl DeliveryOutcome {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
            && self
                .response_status
                .is_some_and(|s| (200..300).contains(&s))
    }
}

#[async_trait::async_trait]
pub trait WebhookStore: Send + Sync {
    /// Create a webhook; its `since_seq` is the newest outbox `seq` now.
    async fn create_webhook(&self, new: &NewWebhook) -> Result<Webhook, MetadataError>;
    async fn webhook(&self, id: HookId) -> Result<Option<Webhook>, MetadataError>;
    /// A repository's webhooks, or the instance-wide ones for `None`; by id.
    async fn list_webhooks(&self, repo: Option<RepoId>) -> Result<Vec<Webhook>, MetadataError>;
    /// The active webhooks that see `repo`'s events: its own and the
    /// instance-wide ones.
    async fn webhooks_for_repository(&self, repo: RepoId) -> Result<Vec<Webhook>, MetadataError>;
    /// `None` if there is no such webhook.
    async fn update_webhook(
        &self,
        id: HookId,
        update: &WebhookUpdate,
    ) -> Result<Option<Webhook>, MetadataError>;
    /// Deletes the webhook and its delivery log; false if there was none.
    async fn delete_webhook(&self, id: HookId) -> Result<bool, MetadataError>;

    /// The `seq` of the last outbox event turned into deliveries.
    async fn webhook_cursor(&self) -> Result<i64, MetadataError>;
    /// In one transaction: move the cursor from `from` to `to` and schedule
    /// `deliveries`. False (and nothing written) if the cursor was not at
    /// `from`: another dispatcher got there first.
    async fn enqueue_deliveries(
        &self,
        from: i64,
        to: i64,
        deliveries: &[NewDelivery],
    ) -> Result<bool, MetadataError>;
    /// Schedule one delivery (a manual redelivery); an error if its webhook
    /// is gone.
    async fn add_delivery(&self, delivery: &NewDelivery) -> Result<Delivery, MetadataError>;
    /// Pending deliveries due at `now`, oldest first, whatever their
    /// webhook's state: the dispatcher finishes those of a disabled webhook
    /// as failed. Nothing claims them: only the holder of the dispatcher's
    /// lease sends.
    async fn due_deliveries(&self, now: i64, limit: u32) -> Result<Vec<Delivery>, MetadataError>;
    /// Record a pending attempt's outcome, and in the same transaction
    /// schedule `retry`. False if the attempt was not pending any more.
    async fn finish_delivery(
        &self,
        id: i64,
        outcome: &DeliveryOutcome,
        retry: Option<&NewDelivery>,
    ) -> Result<bool, MetadataError>;
    /// A webhook's delivery log, newest first, ids below `before`.
    async fn deliveries(
        &self,
        hook: HookId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Delivery>, MetadataError>;
    async fn delivery(&self, hook: HookId, id: i64) -> Result<Option<Delivery>, MetadataError>;
    /// Forget finished attempts that ended before `before`; how many.
    async fn prune_deliveries(&self, before: i64) -> Result<u64, MetadataError>;
}
