//! The embedded event bus: a bounded broadcast channel in the server
//! process, for a single-process installation without NATS.
//!
//! A subscriber that falls more than [`DEFAULT_CAPACITY`] events behind
//! loses the oldest ones (its receiver reports
//! [`broadcast::error::RecvError::Lagged`]), and nothing survives a restart.
//! Durable catch-up is what the NATS bus is for; the outbox keeps history.

use std::sync::Arc;

use nimbus_types::events::{BusError, Event, EventBus};
use tokio::sync::broadcast;

/// How many events a subscriber may fall behind before it loses some.
pub const DEFAULT_CAPACITY: usize = 4096;

/// Events broadcast to the subscribers of this process. Cloning shares the
/// channel.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    sender: broadcast::Sender<Arc<Event>>,
}

impl InProcessBus {
    /// A bus keeping up to [`DEFAULT_CAPACITY`] events per subscriber.
    pub fn new() -> InProcessBus {
        InProcessBus::with_capacity(DEFAULT_CAPACITY)
    }

    /// A bus keeping up to `capacity` events (at least one) per subscriber.
    pub fn with_capacity(capacity: usize) -> InProcessBus {
        let (sender, _) = broadcast::channel(capacity.max(1));
        InProcessBus { sender }
    }

    /// Every event published from now on, in order. The receiver reports
    /// `Lagged(n)` when it fell behind and `n` events were lost.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }
}

impl Default for InProcessBus {
    fn default() -> InProcessBus {
        InProcessBus::new()
    }
}

#[async_trait::async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, event: &Event) -> Result<(), BusError> {
        // An error only means nobody subscribes right now: the event is
        // published to no one, which is not a failure of the bus.
        let _ = self.sender.send(Arc::new(event.clone()));
        Ok(())
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}
