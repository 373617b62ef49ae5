//! The `WebhookStore` implementation shared by SQLite and PostgreSQL, like
//! [`crate::identity`]: the SQL is written in the dialect both understand,
//! and each backend invokes [`webhook_store!`] after defining `BEGIN_WRITE`
//! and `query_failed`.
//!
//! `webhooks.events` holds a JSON array of strings; the header columns of
//! `webhook_deliveries` hold JSON arrays of `[name, value]` pairs.

use crate::sql::StoredValueError;
use nimbus_types::webhooks::{
    Delivery, DeliveryOutcome, DeliveryStatus, NewDelivery, NewWebhook, Webhook,
};
use nimbus_types::{RepoId, UserId};

/// The columns of a [`WebhookRow`].
macro_rules! webhook_columns {
    () => {
        "id, repo_id, url, secret, events, active, created_by, created_at, updated_at, since_seq"
    };
}

/// The columns of a [`DeliveryRow`].
macro_rules! delivery_columns {
    () => {
        "id, hook_id, guid, event_seq, event_id, event_type, github_event, attempt, \
         redelivery, status, due_at, created_at, body, delivered_at, duration_ms, \
         request_headers, response_status, response_headers, response_body, error"
    };
}

/// The columns a new delivery is inserted with: `status` is `'pending'`.
macro_rules! delivery_insert_columns {
    () => {
        "INSERT INTO webhook_deliveries \
         (hook_id, guid, event_seq, event_id, event_type, github_event, attempt, redelivery, \
         status, due_at, created_at, body) "
    };
}

pub(crate) const INSERT_WEBHOOK: &str = concat!(
    "INSERT INTO webhooks \
     (repo_id, url, secret, events, active, created_by, created_at, updated_at, since_seq) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) RETURNING ",
    webhook_columns!()
);

pub(crate) const SELECT_WEBHOOK: &str = concat!(
    "SELECT ",
    webhook_columns!(),
    " FROM webhooks WHERE id = $1"
);

pub(crate) const LIST_REPOSITORY_WEBHOOKS: &str = concat!(
    "SELECT ",
    webhook_columns!(),
    " FROM webhooks WHERE repo_id = $1 ORDER BY id"
);

pub(crate) const LIST_INSTANCE_WEBHOOKS: &str = concat!(
    "SELECT ",
    webhook_columns!(),
    " FROM webhooks WHERE repo_id IS NULL ORDER BY id"
);

pub(crate) const WEBHOOKS_FOR_REPOSITORY: &str = concat!(
    "SELECT ",
    webhook_columns!(),
    " FROM webhooks WHERE active AND (repo_id = $1 OR repo_id IS NULL) ORDER BY id"
);

pub(crate) const UPDATE_WEBHOOK: &str = concat!(
    "UPDATE webhooks SET \
     url = COALESCE($2, url), \
     secret = COALESCE($3, secret), \
     events = COALESCE($4, events), \
     active = COALESCE($5, active), \
     updated_at = $6 \
     WHERE id = $1 RETURNING ",
    webhook_columns!()
);

/// The delivery log goes with it (`ON DELETE CASCADE`).
pub(crate) const DELETE_WEBHOOK: &str = "DELETE FROM webhooks WHERE id = $1";

pub(crate) const SELECT_CURSOR: &str = "SELECT seq FROM webhook_cursor WHERE id = 1";

/// Compare and swap: moves only from the expected position.
pub(crate) const ADVANCE_CURSOR: &str =
    "UPDATE webhook_cursor SET seq = $2 WHERE id = 1 AND seq = $1";

pub(crate) const INSERT_DELIVERY: &str = concat!(
    delivery_insert_columns!(),
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $11) RETURNING ",
    delivery_columns!()
);

/// A scheduled delivery (a dispatched event, a retry) whose webhook was
/// deleted meanwhile is dropped rather than failing the whole transaction on
/// the foreign key.
pub(crate) const SCHEDULE_DELIVERY: &str = concat!(
    delivery_insert_columns!(),
    "SELECT $1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $11 \
     WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = $1)"
);

pub(crate) const DUE_DELIVERIES: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    " FROM webhook_deliveries WHERE status = 'pending' AND due_at <= $1 \
     ORDER BY due_at, id LIMIT $2"
);

/// Only a pending attempt can finish, and only once.
pub(crate) const FINISH_DELIVERY: &str = "UPDATE webhook_deliveries SET \
     status = $2, delivered_at = $3, duration_ms = $4, request_headers = $5, \
     response_status = $6, response_headers = $7, response_body = $8, error = $9 \
     WHERE id = $1 AND status = 'pending'";

pub(crate) const LIST_DELIVERIES: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    " FROM webhook_deliveries WHERE hook_id = $1 AND ($2 IS NULL OR id < $2) \
     ORDER BY id DESC LIMIT $3"
);

pub(crate) const SELECT_DELIVERY: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    " FROM webhook_deliveries WHERE hook_id = $1 AND id = $2"
);

pub(crate) const PRUNE_DELIVERIES: &str =
    "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND delivered_at < $1";

pub(crate) type WebhookRow = (
    i64,
    Option<i64>,
    String,
    String,
    String,
    bool,
    Option<i64>,
    i64,
    i64,
    i64,
);

pub(crate) fn webhook_from_row(row: WebhookRow) -> Result<Webhook, StoredValueError> {
    let (id, repo, url, secret, events, active, created_by, created_at, updated_at, since_seq) =
        row;
    Ok(Webhook {
        id,
        repo: repo.map(RepoId),
        url,
        secret,
        events: events_from_json(&events)?,
        active,
        created_by: created_by.map(UserId),
        created_at,
        updated_at,
        since_seq,
    })
}

/// More columns than a tuple can decode: read by name.
#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    id: i64,
    hook_id: i64,
    guid: String,
    event_seq: i64,
    event_id: String,
    event_type: String,
    github_event: String,
    attempt: i64,
    redelivery: bool,
    status: String,
    due_at: i64,
    created_at: i64,
    body: String,
    delivered_at: Option<i64>,
    duration_ms: Option<i64>,
    request_headers: Option<String>,
    response_status: Option<i64>,
    response_headers: Option<String>,
    response_body: Option<String>,
    error: Option<String>,
}

pub(crate) fn delivery_from_row(row: DeliveryRow) -> Result<Delivery, StoredValueError> {
    let attempt = u32::try_from(row.attempt).map_err(|_| StoredValueError::Invalid {
        column: "webhook_deliveries.attempt",
        value: row.attempt.to_string(),
    })?;
    let status = DeliveryStatus::parse(&row.status).ok_or_else(|| StoredValueError::Invalid {
        column: "webhook_deliveries.status",
        value: row.status.clone(),
    })?;
    let outcome = match row.delivered_at {
        None => None,
        Some(delivered_at) => Some(DeliveryOutcome {
            delivered_at,
            duration_ms: row.duration_ms.unwrap_or_default(),
            request_headers: headers_from_json(
                "webhook_deliveries.request_headers",
                row.request_headers.as_deref(),
            )?,
            response_status: row
                .response_status
                .map(|status| {
                    u16::try_from(status).map_err(|_| StoredValueError::Invalid {
                        column: "webhook_deliveries.response_status",
                        value: status.to_string(),
                    })
                })
                .transpose()?,
            response_headers: headers_from_json(
                "webhook_deliveries.response_headers",
                row.response_headers.as_deref(),
            )?,
            response_body: row.response_body.unwrap_or_default(),
            error: row.error,
        }),
    };
    Ok(Delivery {
        id: row.id,
        hook: row.hook_id,
        guid: row.guid,
        event_seq: row.event_seq,
        event_id: row.event_id,
        event_type: row.event_type,
        github_event: row.github_event,
        attempt,
        redelivery: row.redelivery,
        status,
        due_at: row.due_at,
        created_at: row.created_at,
        body: row.body,
        outcome,
    })
}

pub(crate) fn deliveries_from_rows(
    rows: Vec<DeliveryRow>,
) -> Result<Vec<Delivery>, StoredValueError> {
    rows.into_iter().map(delivery_from_row).collect()
}

pub(crate) fn events_to_json(events: &[String]) -> String {
    serde_json::Value::from(events).to_string()
}

fn events_from_json(events: &str) -> Result<Vec<String>, StoredValueError> {
    serde_json::from_str(events).map_err(|_| StoredValueError::Invalid {
        column: "webhooks.events",
        value: events.chars().take(80).collect(),
    })
}

pub(crate) fn headers_to_json(headers: &[(String, String)]) -> String {
    serde_json::Value::from_iter(
        headers
            .iter()
            .map(|(name, value)| serde_json::json!([name, value])),
    )
    .to_string()
}

/// A missing column reads as no headers.
fn headers_from_json(
    column: &'static str,
    headers: Option<&str>,
) -> Result<Vec<(String, String)>, StoredValueError> {
    match headers {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text).map_err(|_| StoredValueError::Invalid {
            column,
            value: text.chars().take(80).collect(),
        }),
    }
}

/// The stored form of a delivery's `attempt`.
pub(crate) fn attempt_column(delivery: &NewDelivery) -> i64 {
    i64::from(delivery.attempt)
}

/// The status a finished attempt is stored with.
pub(crate) fn finished_status(outcome: &DeliveryOutcome) -> &'static str {
    if outcome.succeeded() {
        DeliveryStatus::Succeeded.as_str()
    } else {
        DeliveryStatus::Failed.as_str()
    }
}

/// The stored form of a new webhook's owner columns.
pub(crate) fn webhook_owner_columns(new: &NewWebhook) -> (Option<i64>, Option<i64>) {
    (
        new.repo.map(|repo| repo.0),
        new.created_by.map(|user| user.0),
    )
}

/// Binds a [`NewDelivery`] to `$1`..`$11` of `INSERT_DELIVERY` or
/// `SCHEDULE_DELIVERY`.
macro_rules! bind_new_delivery {
    ($query:expr, $delivery:expr) => {{
        let delivery: &nimbus_types::webhooks::NewDelivery = $delivery;
        $query
            .bind(delivery.hook)
            .bind(&delivery.guid)
            .bind(delivery.event_seq)
            .bind(&delivery.event_id)
            .bind(&delivery.event_type)
            .bind(&delivery.github_event)
            .bind(crate::webhooks::attempt_column(delivery))
            .bind(delivery.redelivery)
            .bind(delivery.due_at)
            .bind(delivery.created_at)
            .bind(&delivery.body)
    }};
}

pub(crate) use bind_new_delivery;

/// Expands to `impl WebhookStore for $store`.
macro_rules! webhook_store {
    ($store:ident, $error:ident) => {
        #[async_trait::async_trait]
        impl nimbus_types::webhooks::WebhookStore for $store {
            async fn create_webhook(
                &self,
                new: &nimbus_types::webhooks::NewWebhook,
            ) -> Result<nimbus_types::webhooks::Webhook, MetadataError> {
                let (repo, created_by) = crate::webhooks::webhook_owner_columns(new);
                let mut transaction = self
                    .pool
                    .begin_with(BEGIN_WRITE)
                    .await
                    .map_err(query_failed("starting to create a webhook"))?;
                let since_seq: i64 = sqlx::query_scalar(crate::sql::LATEST_EVENT_SEQ)
                    .fetch_one(&mut *transaction)
                    .await
                    .map_err(query_failed("reading the newest event"))?;
                let inserted: Result<crate::webhooks::WebhookRow, sqlx::Error> =
                    sqlx::query_as(crate::webhooks::INSERT_WEBHOOK)
                        .bind(repo)
                        .bind(&new.url)
                        .bind(&new.secret)
                        .bind(crate::webhooks::events_to_json(&new.events))
                        .bind(new.active)
                        .bind(created_by)
                        .bind(new.now)
                        .bind(since_seq)
                        .fetch_one(&mut *transaction)
                        .await;
                let row = match inserted {
                    Ok(row) => row,
                    Err(sqlx::Error::Database(error)) if error.is_foreign_key_violation() => {
                        drop(transaction);
                        // The repository or the creator is gone: say which.
                        if let Some(user) = new.created_by
                            && nimbus_types::identity::IdentityStore::user_by_id(self, user)
                                .await?
                                .is_none()
                        {
                            return Err(MetadataError::UserNotFound);
                        }
                        return Err(MetadataError::RepositoryNotFound);
                    }
                    Err(error) => return Err(query_failed("creating a webhook")(error).into()),
                };
                transaction
                    .commit()
                    .await
                    .map_err(query_failed("committing a new webhook"))?;
                Ok(crate::webhooks::webhook_from_row(row).map_err($error::from)?)
            }

            async fn webhook(
                &self,
                id: nimbus_types::webhooks::HookId,
            ) -> Result<Option<nimbus_types::webhooks::Webhook>, MetadataError> {
                let row: Option<crate::webhooks::WebhookRow> =
                    sqlx::query_as(crate::webhooks::SELECT_WEBHOOK)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(query_failed("looking up a webhook"))?;
                Ok(row
                    .map(crate::webhooks::webhook_from_row)
                    .transpose()
                    .map_err($error::from)?)
            }

            async fn list_webhooks(
                &self,
                repo: Option<RepoId>,
            ) -> Result<Vec<nimbus_types::webhooks::Webhook>, MetadataError> {
                let rows: Vec<crate::webhooks::WebhookRow> = match repo {
                    Some(repo) => sqlx::query_as(crate::webhooks::LIST_REPOSITORY_WEBHOOKS)
                        .bind(repo.0)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(query_failed("listing a repository's webhooks"))?,
                    None => sqlx::query_as(crate::webhooks::LIST_INSTANCE_WEBHOOKS)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(query_failed("listing instance webhooks"))?,
                };
                Ok(rows
                    .into_iter()
                    .map(crate::webhooks::webhook_from_row)
                    .collect::<Result<_, _>>()
                    .map_err($error::from)?)
            }

            async fn webhooks_for_repository(
                &self,
                repo: RepoId,
            ) -> Result<Vec<nimbus_types::webhooks::Webhook>, MetadataError> {
                let rows: Vec<crate::webhooks::WebhookRow> =
                    sqlx::query_as(crate::webhooks::WEBHOOKS_FOR_REPOSITORY)
                        .bind(repo.0)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(query_failed("listing the webhooks of a repository"))?;
                Ok(rows
                    .into_iter()
                    .map(crate::webhooks::webhook_from_row)
                    .collect::<Result<_, _>>()
                    .map_err($error::from)?)
            }

            async fn update_webhook(
                &self,
                id: nimbus_types::webhooks::HookId,
                update: &nimbus_types::webhooks::WebhookUpdate,
            ) -> Result<Option<nimbus_types::webhooks::Webhook>, MetadataError> {
                let events = update
                    .events
                    .as_deref()
                    .map(crate::webhooks::events_to_json);
                let row: Option<crate::webhooks::WebhookRow> =
                    sqlx::query_as(crate::webhooks::UPDATE_WEBHOOK)
                        .bind(id)
                        .bind(update.url.as_deref())
                        .bind(update.secret.as_deref())
                        .bind(events)
                        .bind(update.active)
                        .bind(update.now)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(query_failed("updating a webhook"))?;
                Ok(row
                    .map(crate::webhooks::webhook_from_row)
                    .transpose()
                    .map_err($error::from)?)
            }

            async fn delete_webhook(
                &self,
                id: nimbus_types::webhooks::HookId,
            ) -> Result<bool, MetadataError> {
                let affected = sqlx::query(crate::webhooks::DELETE_WEBHOOK)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("deleting a webhook"))?
                    .rows_affected();
                Ok(affected == 1)
            }

            async fn webhook_cursor(&self) -> Result<i64, MetadataError> {
                Ok(sqlx::query_scalar(crate::webhooks::SELECT_CURSOR)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(query_failed("reading the webhook cursor"))?)
            }

            async fn enqueue_deliveries(
                &self,
                from: i64,
                to: i64,
                deliveries: &[nimbus_types::webhooks::NewDelivery],
            ) -> Result<bool, MetadataError> {
                let mut transaction = self
                    .pool
                    .begin_with(BEGIN_WRITE)
                    .await
                    .map_err(query_failed("starting to schedule deliveries"))?;
                let moved = sqlx::query(crate::webhooks::ADVANCE_CURSOR)
                    .bind(from)
                    .bind(to)
                    .execute(&mut *transaction)
                    .await
                    .map_err(query_failed("moving the webhook cursor"))?
                    .rows_affected();
                if moved != 1 {
                    transaction
                        .rollback()
                        .await
                        .map_err(query_failed("abandoning stale deliveries"))?;
                    return Ok(false);
                }
                for delivery in deliveries {
                    crate::webhooks::bind_new_delivery!(
                        sqlx::query(crate::webhooks::SCHEDULE_DELIVERY),
                        delivery
                    )
                    .execute(&mut *transaction)
                    .await
                    .map_err(query_failed("scheduling a delivery"))?;
                }
                transaction
                    .commit()
                    .await
                    .map_err(query_failed("committing scheduled deliveries"))?;
                Ok(true)
            }

            async fn add_delivery(
                &self,
                delivery: &nimbus_types::webhooks::NewDelivery,
            ) -> Result<nimbus_types::webhooks::Delivery, MetadataError> {
                let row: crate::webhooks::DeliveryRow = crate::webhooks::bind_new_delivery!(
                    sqlx::query_as(crate::webhooks::INSERT_DELIVERY),
                    delivery
                )
                .fetch_one(&self.pool)
                .await
                .map_err(query_failed("adding a delivery"))?;
                Ok(crate::webhooks::delivery_from_row(row).map_err($error::from)?)
            }

            async fn due_deliveries(
                &self,
                now: i64,
                limit: u32,
            ) -> Result<Vec<nimbus_types::webhooks::Delivery>, MetadataError> {
                let rows: Vec<crate::webhooks::DeliveryRow> =
                    sqlx::query_as(crate::webhooks::DUE_DELIVERIES)
                        .bind(now)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(query_failed("listing due deliveries"))?;
                Ok(crate::webhooks::deliveries_from_rows(rows).map_err($error::from)?)
            }

            async fn finish_delivery(
                &self,
                id: i64,
                outcome: &nimbus_types::webhooks::DeliveryOutcome,
                retry: Option<&nimbus_types::webhooks::NewDelivery>,
            ) -> Result<bool, MetadataError> {
                let mut transaction = self
                    .pool
                    .begin_with(BEGIN_WRITE)
                    .await
                    .map_err(query_failed("starting to record a delivery"))?;
                let finished = sqlx::query(crate::webhooks::FINISH_DELIVERY)
                    .bind(id)
                    .bind(crate::webhooks::finished_status(outcome))
                    .bind(outcome.delivered_at)
                    .bind(outcome.duration_ms)
                    .bind(crate::webhooks::headers_to_json(&outcome.request_headers))
                    .bind(outcome.response_status.map(i64::from))
                    .bind(crate::webhooks::headers_to_json(&outcome.response_headers))
                    .bind(&outcome.response_body)
                    .bind(outcome.error.as_deref())
                    .execute(&mut *transaction)
                    .await
                    .map_err(query_failed("recording a delivery's outcome"))?
                    .rows_affected();
                if finished != 1 {
                    transaction
                        .rollback()
                        .await
                        .map_err(query_failed("abandoning a delivery's outcome"))?;
                    return Ok(false);
                }
                if let Some(retry) = retry {
                    crate::webhooks::bind_new_delivery!(
                        sqlx::query(crate::webhooks::SCHEDULE_DELIVERY),
                        retry
                    )
                    .execute(&mut *transaction)
                    .await
                    .map_err(query_failed("scheduling a retry"))?;
                }
                transaction
                    .commit()
                    .await
                    .map_err(query_failed("committing a delivery's outcome"))?;
                Ok(true)
            }

            async fn deliveries(
                &self,
                hook: nimbus_types::webhooks::HookId,
                before: Option<i64>,
                limit: u32,
            ) -> Result<Vec<nimbus_types::webhooks::Delivery>, MetadataError> {
                let rows: Vec<crate::webhooks::DeliveryRow> =
                    sqlx::query_as(crate::webhooks::LIST_DELIVERIES)
                        .bind(hook)
                        .bind(before)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(query_failed("listing deliveries"))?;
                Ok(crate::webhooks::deliveries_from_rows(rows).map_err($error::from)?)
            }

            async fn delivery(
                &self,
                hook: nimbus_types::webhooks::HookId,
                id: i64,
            ) -> Result<Option<nimbus_types::webhooks::Delivery>, MetadataError> {
                let row: Option<crate::webhooks::DeliveryRow> =
                    sqlx::query_as(crate::webhooks::SELECT_DELIVERY)
                        .bind(hook)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(query_failed("looking up a delivery"))?;
                Ok(row
                    .map(crate::webhooks::delivery_from_row)
                    .transpose()
                    .map_err($error::from)?)
            }

            async fn prune_deliveries(&self, before: i64) -> Result<u64, MetadataError> {
                Ok(sqlx::query(crate::webhooks::PRUNE_DELIVERIES)
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err(query_failed("pruning deliveries"))?
                    .rows_affected())
            }
        }
    };
}

pub(crate) use webhook_store;
