//! A NATS bus that connects on first use, and again after a failed
//! connection, so a server starts while NATS is down and its events wait in
//! the outbox until NATS is back.

use crate::nats::{NatsBus, NatsConfig};
use nimbus_types::events::{BusError, Event, EventBus};
use tokio::sync::Mutex;

/// [`NatsBus`], connected when first needed.
pub struct LazyNatsBus {
    config: NatsConfig,
    bus: Mutex<Option<NatsBus>>,
}

impl LazyNatsBus {
    pub fn new(config: NatsConfig) -> LazyNatsBus {
        LazyNatsBus {
            config,
            bus: Mutex::new(None),
        }
    }

    /// The connected bus, connecting now if need be.
    pub async fn connected(&self) -> Result<NatsBus, BusError> {
        let mut bus = self.bus.lock().await;
        if let Some(bus) = bus.as_ref() {
            return Ok(bus.clone());
        }
        let connected = NatsBus::connect(self.config.clone())
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        *bus = Some(connected.clone());
        Ok(connected)
    }
}

#[async_trait::async_trait]
impl EventBus for LazyNatsBus {
    async fn publish(&self, event: &Event) -> Result<(), BusError> {
        let result = self.connected().await?.publish(event).await;
        if let Err(BusError::Unavailable(_)) = &result {
            // Connect afresh next time (which also re-creates the stream if
            // a restarted NATS lost it).
            *self.bus.lock().await = None;
        }
        result
    }

    fn name(&self) -> &'static str {
        "nats"
    }
}
