//! Events: what happened to a repository, for plugins, webhooks and live
//! streams. Each event is written to the outbox in the same database
//! transaction as the change it describes, then published by the relay to
//! an [`EventBus`].
//!
//! The JSON form is versioned by [`Event::version`] ([`SCHEMA_VERSION`]):
//! fields are only ever added within a version. It looks like
//!
//! ```json
//! {"id": "evt_…", "version": 1, "type": "push", "timestamp": 1700000000,
//!  "repository": {"id": 7, "name": "demo"}, "actor": {"id": 1, "name": "owner"},
//!  "data": {"ref": "refs/heads/main", "before": "…", "after": "…", "created": false,
//!           "deleted": false, "forced": false, "commits": [...], "commit_count": 3,
//!           "commits_truncated": false}}
//! ```
//!
//! Types today: `repository.created`, `repository.deleted`,
//! `repository.renamed`, `branch.created`, `branch.deleted`, `push`,
//! `tag.created`, `tag.deleted`. Later issues add `pull_request.*`,
//! `review.*`, `ci.*` and `deploy.*` as new variants of [`EventData`].

use crate::refs::RefUpdate;
use serde::{Deserialize, Serialize};

/// The version of the event JSON.
pub const SCHEMA_VERSION: u32 = 1;
/// Every event type Nimbus emits today.
pub const EVENT_TYPES: &[&str] = &[
    "repository.created",
    "repository.deleted",
    "repository.renamed",
    "branch.created",
    "branch.deleted",
    "tag.created",
    "tag.deleted",
    "push",
];
/// The most commits listed in a `push` event; `commit_count` counts all.
pub const MAX_PUSH_COMMITS: usize = 20;
/// The most commits counted for one ref update; beyond it the count stops
/// and `commits_truncated` is set.
pub const MAX_COUNTED_COMMITS: u64 = 10_000;
/// The longest commit message kept in an event, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// The repository an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRepository {
    pub id: i64,
    pub name: String,
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventActor {
    pub id: i64,
    pub name: String,
}

/// A commit as a `push` event lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCommit {
    pub id: String,
    /// Capped at [`MAX_MESSAGE_BYTES`].
    pub message: String,
    pub author_name: String,
    pub author_email: String,
    /// Unix seconds (the author time).
    pub timestamp: i64,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
#[non_exhaustive]
pub enum EventData {
    #[serde(rename = "repository.created")]
    RepositoryCreated {
        visibility: String,
        default_branch: String,
    },
    #[serde(rename = "repository.deleted")]
    RepositoryDeleted {},
    #[serde(rename = "repository.renamed")]
    RepositoryRenamed { from: String, to: String },
    #[serde(rename = "branch.created")]
    BranchCreated {
        #[serde(rename = "ref")]
        ref_name: String,
        target: String,
    },
    #[serde(rename = "branch.deleted")]
    BranchDeleted {
        #[serde(rename = "ref")]
        ref_name: String,
        before: String,
    },
    #[serde(rename = "tag.created")]
    TagCreated {
        #[serde(rename = "ref")]
        ref_name: String,
        target: String,
    },
    #[serde(rename = "tag.deleted")]
    TagDeleted {
        #[serde(rename = "ref")]
        ref_name: String,
        before: String,
    },
    /// Any ref moved, was created or deleted (GitHub's `push`).
    #[serde(rename = "push")]
    Push {
        #[serde(rename = "ref")]
        ref_name: String,
        /// All zeros when the ref was created.
        before: String,
        /// All zeros when the ref was deleted.
        after: String,
        created: bool,
        deleted: bool,
        /// The old value is not an ancestor of the new one.
        forced: bool,
        /// The newest first, at most [`MAX_PUSH_COMMITS`].
        commits: Vec<EventCommit>,
        /// Commits reachable from `after` and not from any ref before the
        /// push (capped at [`MAX_COUNTED_COMMITS`]).
        commit_count: u64,
        commits_truncated: bool,
    },
}

impl EventData {
    /// The event type, as in the JSON and in bus subjects.
    pub fn kind(&self) -> &'static str {
        match self {
            EventData::RepositoryCreated { .. } => "repository.created",
            EventData::RepositoryDeleted {} => "repository.deleted",
            EventData::RepositoryRenamed { .. } => "repository.renamed",
            EventData::BranchCreated { .. } => "branch.created",
            EventData::BranchDeleted { .. } => "branch.deleted",
            EventData::TagCreated { .. } => "tag.created",
            EventData::TagDeleted { .. } => "tag.deleted",
            EventData::Push { .. } => "push",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique: `evt_` and 32 hex digits. Also the bus's de-duplication id.
    pub id: String,
    pub version: u32,
    /// Unix seconds.
    pub timestamp: i64,
    pub repository: EventRepository,
    pub actor: Option<EventActor>,
    #[serde(flatten)]
    pub data: EventData,
}

impl Event {
    /// A new event with a fresh id.
    pub fn new(
        repository: EventRepository,
        actor: Option<EventActor>,
        timestamp: i64,
        data: EventData,
    ) -> Event {
        Event {
            id: new_event_id(),
            version: SCHEMA_VERSION,
            timestamp,
            repository,
            actor,
            data,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.data.kind()
    }

    /// The bus subject: `<prefix>.<repository>.<type>`, with each `.` of
    /// the repository name written `%2E` (subjects split on dots; names
    /// never contain `%`). Example: `nimbus.events.demo.branch.created`;
    /// subscribe to `nimbus.events.demo.>` for one repository.
    pub fn subject(&self, prefix: &str) -> String {
        format!(
            "{prefix}.{}.{}",
            self.repository.name.replace('.', "%2E"),
            self.kind()
        )
    }
}

fn new_event_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let mut id = String::with_capacity(36);
    id.push_str("evt_");
    for byte in bytes {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// An event as the outbox holds it: `seq` orders all events of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub event: Event,
    /// Unix seconds, once the relay published it.
    pub published_at: Option<i64>,
}

/// What the git service knows of one ref update besides the update itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushDetail {
    pub forced: bool,
    /// Newest first, at most [`MAX_PUSH_COMMITS`].
    pub commits: Vec<EventCommit>,
    pub commit_count: u64,
    pub commits_truncated: bool,
}

const ZERO: &str = "0000000000000000000000000000000000000000";

/// The events of one applied ref update: `push`, and `branch.*` or `tag.*`
/// when a branch or tag was created or deleted.
pub fn ref_update_events(
    repository: &EventRepository,
    actor: Option<&EventActor>,
    update: &RefUpdate,
    detail: PushDetail,
    timestamp: i64,
) -> Vec<Event> {
    let name = String::from_utf8_lossy(update.name.as_bytes()).into_owned();
    let before = update
        .old
        .map_or_else(|| ZERO.to_owned(), |id| id.to_string());
    let after = update
        .new
        .map_or_else(|| ZERO.to_owned(), |id| id.to_string());
    let event = |data| Event::new(repository.clone(), actor.cloned(), timestamp, data);
    let mut events = Vec::with_capacity(2);
    let branch = name.starts_with("refs/heads/");
    let tag = name.starts_with("refs/tags/");
    match (update.old, update.new) {
        (None, Some(_)) if branch => events.push(event(EventData::BranchCreated {
            ref_name: name.clone(),
            target: after.clone(),
        })),
        (None, Some(_)) if tag => events.push(event(EventData::TagCreated {
            ref_name: name.clone(),
            target: after.clone(),
        })),
        (Some(_), None) if branch => events.push(event(EventData::BranchDeleted {
            ref_name: name.clone(),
            before: before.clone(),
        })),
        (Some(_), None) if tag => events.push(event(EventData::TagDeleted {
            ref_name: name.clone(),
            before: before.clone(),
        })),
        _ => {}
    }
    events.push(event(EventData::Push {
        ref_name: name,
        created: update.old.is_none(),
        deleted: update.new.is_none(),
        before,
        after,
        forced: detail.forced,
        commits: detail.commits,
        commit_count: detail.commit_count,
        commits_truncated: detail.commits_truncated,
    }));
    events
}

/// Why publishing failed; the relay retries.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the event bus is unavailable: {0}")]
    Unavailable(String),
    #[error("the event bus refused the event: {0}")]
    Refused(String),
}

/// Where published events go: in-process subscribers, or NATS JetStream.
/// Publishing is at least once: the same event (same id) may be published
/// again after a failure or a crash; backends de-duplicate by id where
/// they can.
#[async_trait::async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publish one event; `Ok` once the bus has it durably (for NATS, the
    /// JetStream acknowledgement).
    async fn publish(&self, event: &Event) -> Result<(), BusError>;
    /// A short name for logs: `in-process`, `nats`.
    fn name(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refs::RefName;

    fn repo() -> EventRepository {
        EventRepository {
            id: 7,
            name: "my.repo".into(),
        }
    }

    fn id(hex: char) -> gix_hash::ObjectId {
        gix_hash::ObjectId::from_hex(hex.to_string().repeat(40).as_bytes()).expect("hex")
    }

    fn update(name: &str, old: Option<char>, new: Option<char>) -> RefUpdate {
        RefUpdate {
            name: RefName::new(name.as_bytes()).expect("valid"),
            old: old.map(id),
            new: new.map(id),
            new_peeled: None,
        }
    }

    #[test]
    fn ref_updates_become_push_and_create_or_delete_events() {
        let kinds = |u: RefUpdate| -> Vec<&'static str> {
            ref_update_events(&repo(), None, &u, PushDetail::default(), 1)
                .iter()
                .map(Event::kind)
                .collect()
        };
        assert_eq!(
            kinds(update("refs/heads/main", None, Some('a'))),
            ["branch.created", "push"]
        );
        assert_eq!(
            kinds(update("refs/heads/main", Some('a'), Some('b'))),
            ["push"]
        );
        assert_eq!(
            kinds(update("refs/heads/main", Some('a'), None)),
            ["branch.deleted", "push"]
        );
        assert_eq!(
            kinds(update("refs/tags/v1", None, Some('a'))),
            ["tag.created", "push"]
        );
        assert_eq!(
            kinds(update("refs/tags/v1", Some('a'), None)),
            ["tag.deleted", "push"]
        );
        assert_eq!(kinds(update("refs/notes/x", None, Some('a'))), ["push"]);
    }

    #[test]
    fn json_shape_and_subjects() {
        let actor = EventActor {
            id: 1,
            name: "owner".into(),
        };
        let events = ref_update_events(
            &repo(),
            Some(&actor),
            &update("refs/heads/main", None, Some('a')),
            PushDetail {
                forced: false,
                commits: Vec::new(),
                commit_count: 1,
                commits_truncated: false,
            },
            1_700_000_000,
        );
        let push = &events[1];
        let json = serde_json::to_value(push).expect("json");
        assert_eq!(json["type"], "push");
        assert_eq!(json["version"], 1);
        assert_eq!(json["data"]["ref"], "refs/heads/main");
        assert_eq!(json["data"]["before"], ZERO);
        assert_eq!(json["data"]["created"], true);
        assert_eq!(json["repository"]["name"], "my.repo");
        assert_eq!(json["actor"]["name"], "owner");
        assert!(push.id.starts_with("evt_") && push.id.len() == 36);
        assert_ne!(events[0].id, events[1].id);
        let back: Event = serde_json::from_value(json).expect("round trip");
        assert_eq!(&back, push);
        assert_eq!(
            push.subject("nimbus.events"),
            "nimbus.events.my%2Erepo.push"
        );
        assert_eq!(
            events[0].subject("nimbus.events"),
            "nimbus.events.my%2Erepo.branch.created"
        );
    }
}
