//! Webhooks of Nimbus: events sent as HTTP POSTs to URLs users choose,
//! signed, retried and logged.
//!
//! - [`payload`]: GitHub-compatible JSON bodies (so existing receivers
//!   work) that also carry the Nimbus event.
//! - [`sign`]: `X-Hub-Signature-256` and the Standard Webhooks
//!   `webhook-signature`.
//! - [`guard`]: the SSRF guard, refusing non-public addresses unless the
//!   owner allowlists them.
//! - [`dispatch`]: the worker that turns outbox events into deliveries,
//!   sends them and retries them.
//!
//! Webhooks and the delivery log live in the metadata store
//! ([`nimbus_types::webhooks::WebhookStore`]).

pub mod dispatch;
pub mod guard;
pub mod payload;
pub mod sign;

use nimbus_types::events::EVENT_TYPES;
use nimbus_types::webhooks::{Delivery, NewDelivery};

/// A webhook's event list is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    #[error("choose at least one event (or \"*\" for all)")]
    Empty,
    #[error("unknown event type {0:?}; known: *, {known}", known = EVENT_TYPES.join(", "))]
    Unknown(String),
    #[error("at most 64 event types")]
    TooMany,
}

/// Check and normalise (sort, de-duplicate) a webhook's event types.
pub fn validate_events(events: &[String]) -> Result<Vec<String>, EventsError> {
    if events.len() > 64 {
        return Err(EventsError::TooMany);
    }
    let mut chosen: Vec<String> = Vec::new();
    for event in events {
        let event = event.trim();
        if event != "*" && !EVENT_TYPES.contains(&event) {
            return Err(EventsError::Unknown(event.to_owned()));
        }
        chosen.push(event.to_owned());
    }
    if chosen.is_empty() {
        return Err(EventsError::Empty);
    }
    if chosen.iter().any(|event| event == "*") {
        return Ok(vec!["*".to_owned()]);
    }
    chosen.sort();
    chosen.dedup();
    Ok(chosen)
}

/// The longest webhook secret accepted, in bytes.
pub const MAX_SECRET_BYTES: usize = 256;
/// The longest webhook URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// A webhook URL as shown to people and logs: any password replaced.
pub fn redact_url(text: &str) -> String {
    match reqwest::Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("redacted"));
            url.to_string()
        }
        _ => text.to_owned(),
    }
}

/// A manual redelivery of `original`: the same event and `guid` (receivers
/// see it is the same delivery), due now, attempted once.
pub fn redelivery(original: &Delivery, now: i64) -> NewDelivery {
    NewDelivery {
        hook: original.hook,
        guid: original.guid.clone(),
        event_seq: original.event_seq,
        event_id: original.event_id.clone(),
        event_type: original.event_type.clone(),
        github_event: original.github_event.clone(),
        attempt: original.attempt,
        redelivery: true,
        due_at: now,
        body: original.body.clone(),
        created_at: now,
    }
}

/// A random UUID (version 4) in text form: GitHub's delivery ids look so.
pub(crate) fn new_guid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_checked_and_normalised() {
        let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            validate_events(&list(&["push", "tag.created", "push"])),
            Ok(list(&["push", "tag.created"]))
        );
        assert_eq!(validate_events(&list(&["push", "*"])), Ok(list(&["*"])));
        assert_eq!(validate_events(&[]), Err(EventsError::Empty));
        assert_eq!(
            validate_events(&list(&["pushed"])),
            Err(EventsError::Unknown("pushed".into()))
        );
    }

    #[test]
    fn passwords_in_urls_are_hidden() {
        assert_eq!(
            redact_url("https://bot:s3cret@hooks.example.com/x"),
            "https://bot:redacted@hooks.example.com/x"
        );
        assert_eq!(
            redact_url("https://hooks.example.com/x"),
            "https://hooks.example.com/x"
        );
    }

    #[test]
    fn guids_are_version_4_uuids() {
        let guid = new_guid();
        assert_eq!(guid.len(), 36);
        assert_eq!(&guid[14..15], "4");
        assert!(matches!(&guid[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(guid, new_guid());
    }
}
