//! The relay: publishes the outbox's events to the bus, in outbox order,
//! and marks each one published once the bus has it.
//!
//! - **Order**: events are taken oldest first and published one at a time;
//!   on a bus error the relay stops and retries from the same event (with
//!   backoff), so no event overtakes an earlier one. Pushes to one
//!   repository are serialised by the database, so outbox order is their
//!   commit order.
//! - **At least once**: an event is marked published only after the bus
//!   acknowledged it; a crash in between publishes it again on restart, and
//!   the bus de-duplicates by event id (NATS: `Nats-Msg-Id`).
//! - **One relay per instance**: processes side by side compete for a
//!   database lease ([`LEASE`]); only the holder publishes, so order holds
//!   across processes. A holder that dies loses the lease after
//!   [`RelayConfig::lease_ttl`] seconds and another process takes over.
//! - **Latency**: [`Relay::wake`] after a commit publishes at once; other
//!   processes' events are found by polling every [`RelayConfig::poll`].

use nimbus_types::events::EventBus;
use nimbus_types::metadata::{MetadataError, MetadataStore};
use nimbus_types::unix_now as now;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The name of the relay's lease.
pub const LEASE: &str = "event-relay";

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Events read from the outbox at a time.
    pub batch: u32,
    /// How often to look for events when not woken.
    pub poll: Duration,
    /// Seconds a relay holds the lease without renewing it.
    pub lease_ttl: i64,
    /// The longest wait between retries after a bus failure.
    pub max_backoff: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch: 100,
            poll: Duration::from_secs(1),
            lease_ttl: 15,
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Why a relay round stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Bus(#[from] nimbus_types::events::BusError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// Publishes the outbox.
pub struct Relay {
    meta: Arc<dyn MetadataStore>,
    bus: Arc<dyn EventBus>,
    holder: String,
    wake: Notify,
    config: RelayConfig,
}

impl Relay {
    pub fn new(meta: Arc<dyn MetadataStore>, bus: Arc<dyn EventBus>, config: RelayConfig) -> Relay {
        let id: [u8; 8] = rand::random();
        Relay {
            meta,
            bus,
            holder: id.iter().map(|b| format!("{b:02x}")).collect(),
            wake: Notify::new(),
            config,
        }
    }

    /// Publish soon: new events were committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.bus
    }

    /// One round: take (or renew) the lease, then publish up to a batch of
    /// events in order. Returns how many were published (0 without the
    /// lease).
    pub async fn run_once(&self) -> Result<usize, RelayError> {
        if !self
            .meta
            .acquire_lease(LEASE, &self.holder, now(), self.config.lease_ttl)
            .await?
        {
            return Ok(0);
        }
        let events = self.meta.unpublished_events(self.config.batch).await?;
        let mut published = 0;
        for stored in &events {
            self.bus.publish(&stored.event).await?;
            self.meta
                .mark_events_published(&[stored.seq], now())
                .await?;
            published += 1;
            tracing::debug!(
                event = %stored.event.id,
                kind = stored.event.kind(),
                repo = %stored.event.repository.name,
                bus = self.bus.name(),
                "event published"
            );
        }
        Ok(published)
    }

    /// Run until the task is dropped or aborted.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.run_once().await {
                Ok(count) => {
                    backoff = Duration::from_millis(100);
                    if count as u32 >= self.config.batch {
                        continue;
                    }
                    let _ = tokio::time::timeout(self.config.poll, self.wake.notified()).await;
                }
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        bus = self.bus.name(),
                        retry_in_ms = backoff.as_millis() as u64,
                        "events wait in the outbox"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }

    /// Start [`Relay::run`] on the runtime.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run())
    }
}
