//! The NATS JetStream event bus: events are stored in one stream, kept for
//! [`NatsConfig::max_age`], de-duplicated by event id, and read by durable
//! consumers that catch up after being down.
//!
//! # Subjects
//!
//! Each event is published on `<prefix>.<repository>.<type>`
//! ([`Event::subject`]), the prefix being [`NatsConfig::subject_prefix`]
//! (`nimbus.events` by default). NATS splits subjects on dots, so each `.`
//! of the repository name is written `%2E` (names never contain `%`), while
//! the type keeps its dots:
//!
//! - `nimbus.events.demo.push`: a push to `demo`;
//! - `nimbus.events.my%2Erepo.branch.created`: a branch created in `my.repo`;
//! - `nimbus.events.demo.>`: every event of the repository `demo`;
//! - `nimbus.events.*.push`: every push, whatever the repository;
//! - `nimbus.events.>`: everything (the subjects of the stream).
//!
//! The body is the event's JSON (see [`nimbus_types::events`]); the
//! `Nats-Msg-Id` header carries the event id, so JetStream stores an event
//! published twice within [`NatsConfig::duplicate_window`] once.
//!
//! # Failures
//!
//! [`NatsBus::connect`] fails when NATS cannot be reached at start-up; the
//! caller decides whether to start anyway. Once connected, the client
//! reconnects in the background for ever: while NATS is away, `publish`
//! returns [`BusError::Unavailable`] within [`PUBLISH_TIMEOUT`] (or at once
//! when the client already knows it is disconnected), and the relay retries.

use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, consumer, context, message::PublishMessage, stream};
use nimbus_types::events::{BusError, Event, EventBus};

/// The stream's default name.
pub const DEFAULT_STREAM: &str = "NIMBUS_EVENTS";
/// The default subject prefix.
pub const DEFAULT_SUBJECT_PREFIX: &str = "nimbus.events";
/// How long JetStream remembers event ids to drop duplicates, by default.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 60);
/// How long the stream keeps events, by default.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The longest wait for a connection at start-up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait for JetStream to acknowledge a published event (and for
/// any other JetStream request).
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how events are stored in NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// The server, such as `nats://127.0.0.1:4222`; credentials may be given
    /// as `nats://user:password@host:port` (never shown in errors).
    pub url: String,
    /// The JetStream stream, created or updated by [`NatsBus::connect`].
    pub stream: String,
    /// Events are published on `<subject_prefix>.<repository>.<type>`.
    pub subject_prefix: String,
    /// How long JetStream de-duplicates by event id.
    pub duplicate_window: Duration,
    /// How long the stream keeps events.
    pub max_age: Duration,
}

impl NatsConfig {
    /// The defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> NatsConfig {
        NatsConfig {
            url: url.into(),
            stream: DEFAULT_STREAM.to_owned(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_owned(),
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

/// Why the NATS bus could not be set up. URLs in here have their password
/// replaced by `***`.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot create or update the JetStream stream {stream} on NATS at {url}: {source}")]
    Stream {
        url: String,
        stream: String,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    #[error("the JetStream stream {stream} on NATS at {url} cannot be read: {source}")]
    GetStream {
        url: String,
        stream: String,
        #[source]
        source: jetstream::context::GetStreamError,
    },
    #[error("cannot create the durable consumer {name} of the JetStream stream {stream}: {source}")]
    Consumer {
        stream: String,
        name: String,
        #[source]
        source: jetstream::stream::ConsumerError,
    },
}

/// Publishes events to a NATS JetStream stream.
#[derive(Debug, Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    config: NatsConfig,
    /// `config.url` without its password, for messages.
    shown_url: String,
}

impl NatsBus {
    /// Connects (waiting at most [`CONNECT_TIMEOUT`]) and creates the stream
    /// (subjects `<prefix>.>`, file storage, the duplicate window and
    /// maximum age of `config`), or updates it to this configuration.
    pub async fn connect(config: NatsConfig) -> Result<NatsBus, NatsError> {
        let shown_url = redact_url(&config.url);
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(CONNECT_TIMEOUT)
            .request_timeout(Some(PUBLISH_TIMEOUT))
            .connect(config.url.as_str())
            .await
            .map_err(|source| NatsError::Connect {
                url: shown_url.clone(),
                source,
            })?;
        let jetstream = context::ContextBuilder::new()
            .timeout(PUBLISH_TIMEOUT)
            .build(client.clone());
        jetstream
            .create_or_update_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec![format!("{}.>", config.subject_prefix)],
                storage: stream::StorageType::File,
                duplicate_window: config.duplicate_window,
                max_age: config.max_age,
                ..Default::default()
            })
            .await
            .map_err(|source| NatsError::Stream {
                url: shown_url.clone(),
                stream: config.stream.clone(),
                source,
            })?;
        tracing::info!(url = %shown_url, stream = %config.stream, "connected to NATS JetStream");
        Ok(NatsBus {
            client,
            jetstream,
            config,
            shown_url,
        })
    }

    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    /// The JetStream context, for readers that need more than
    /// [`NatsBus::durable_consumer`].
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The subject `event` is published on.
    pub fn subject(&self, event: &Event) -> String {
        event.subject(&self.config.subject_prefix)
    }

    /// A durable pull consumer of the stream named `name`, receiving every
    /// stored event whose subject matches `filter_subject` (such as
    /// `nimbus.events.demo.>`; see the module documentation), from the
    /// oldest one still stored, each until it is acknowledged. Created on
    /// first use; afterwards the existing consumer (and its configuration)
    /// is returned, so a subscriber that was down resumes where it stopped.
    pub async fn durable_consumer(
        &self,
        name: &str,
        filter_subject: &str,
    ) -> Result<consumer::PullConsumer, NatsError> {
        let stream = self
            .jetstream
            .get_stream(&self.config.stream)
            .await
            .map_err(|source| NatsError::GetStream {
                url: self.shown_url.clone(),
                stream: self.config.stream.clone(),
                source,
            })?;
        stream
            .get_or_create_consumer(
                name,
                consumer::pull::Config {
                    durable_name: Some(name.to_owned()),
                    filter_subject: filter_subject.to_owned(),
                    ack_policy: consumer::AckPolicy::Explicit,
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                },
            )
            .await
            .map_err(|source| NatsError::Consumer {
                stream: self.config.stream.clone(),
                name: name.to_owned(),
                source,
            })
    }

    async fn publish_and_wait_for_ack(&self, event: &Event) -> Result<(), BusError> {
        let body = serde_json::to_vec(event)
            .map_err(|error| BusError::Refused(format!("event {}: {error}", event.id)))?;
        let subject = self.subject(event);
        let ack = self
            .jetstream
            .send_publish(
                subject.clone(),
                PublishMessage::build()
                    .payload(body.into())
                    .message_id(&event.id),
            )
            .await
            .map_err(|error| self.publish_error(&subject, error))?;
        let ack = ack
            .await
            .map_err(|error| self.publish_error(&subject, error))?;
        if ack.duplicate {
            tracing::debug!(event = %event.id, "NATS already had this event");
        }
        Ok(())
    }

    fn publish_error(&self, subject: &str, error: context::PublishError) -> BusError {
        use context::PublishErrorKind as Kind;
        let message = format!(
            "publishing on {subject} to NATS at {}: {error}",
            self.shown_url
        );
        match error.kind() {
            // No stream takes the subject: JetStream is still recovering
            // its streams after a restart, or someone deleted the stream.
            Kind::StreamNotFound => BusError::Unavailable(format!(
                "{message} (is the stream {} there?)",
                self.config.stream
            )),
            Kind::TimedOut | Kind::BrokenPipe | Kind::MaxAckPending => {
                BusError::Unavailable(message)
            }
            _ => BusError::Refused(message),
        }
    }
}

#[async_trait::async_trait]
impl EventBus for NatsBus {
    async fn publish(&self, event: &Event) -> Result<(), BusError> {
        // Not queued while disconnected: the relay keeps the event in the
        // outbox and retries, which is better than a client buffer that a
        // restart loses.
        if self.client.connection_state() != State::Connected {
            return Err(BusError::Unavailable(format!(
                "not connected to NATS at {} (reconnecting)",
                self.shown_url
            )));
        }
        // Sending and the acknowledgement are each bounded by
        // PUBLISH_TIMEOUT; this bounds them together.
        tokio::time::timeout(2 * PUBLISH_TIMEOUT, self.publish_and_wait_for_ack(event))
            .await
            .unwrap_or_else(|_| {
                Err(BusError::Unavailable(format!(
                    "NATS at {} did not acknowledge event {} within {:?}",
                    self.shown_url,
                    event.id,
                    2 * PUBLISH_TIMEOUT
                )))
            })
    }

    fn name(&self) -> &'static str {
        "nats"
    }
}

/// `url` with the password of `user:password@` (or a lone token `token@`)
/// replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{scheme}://{shown}{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_in_messages_hide_passwords_and_tokens() {
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            redact_url("nats://alice:secret@host:4222"),
            "nats://alice:***@host:4222"
        );
        assert_eq!(redact_url("tls://s3cr3t@host"), "tls://***@host");
        assert_eq!(redact_url("host:4222"), "host:4222");
    }
}
