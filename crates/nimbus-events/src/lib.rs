//! Event buses of Nimbus: where the relay publishes the events of the
//! outbox, and where plugins, webhooks and live streams read them.
//!
//! Two implementations of [`nimbus_types::events::EventBus`]:
//! - [`in_process::InProcessBus`], the embedded default: a bounded broadcast
//!   channel inside the server process. Nothing survives a restart and a
//!   subscriber that falls behind loses events; the outbox keeps history.
//! - [`nats::NatsBus`], NATS JetStream: events are stored in a stream, de-
//!   duplicated by event id, and durable consumers that were down catch up.
//!
//! [`relay::Relay`] moves events from the transactional outbox (written by
//! the metadata store with the changes they describe) to the bus.
//!
//! Publishing is at least once (the relay retries on error), so subscribers
//! must tolerate seeing an event id twice.

pub mod in_process;
pub mod lazy;
pub mod nats;
pub mod relay;
