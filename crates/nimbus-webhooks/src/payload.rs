//! Webhook payloads: GitHub's shapes wherever GitHub has the same event, so
//! receivers written for GitHub (CI servers, chat bots) work unchanged, and
//! the Nimbus event itself under `nimbus` for receivers that want it.
//!
//! | Nimbus event                  | `X-GitHub-Event` | GitHub payload                       |
//! |-------------------------------|------------------|--------------------------------------|
//! | `push`                        | `push`           | `ref`, `before`, `after`, `created`, `deleted`, `forced`, `compare`, `commits` (oldest first), `head_commit`, `pusher`, `sender`, `repository` |
//! | `branch.created`, `tag.created` | `create`       | `ref` (short), `ref_type`, `master_branch`, `pusher_type`, `sender`, `repository` |
//! | `branch.deleted`, `tag.deleted` | `delete`       | the same                             |
//! | `repository.*`                | `repository`     | `action` (`created`, `deleted`, `renamed`), `changes` for renames |
//!
//! Not sent, because Nimbus does not compute them: a commit's `tree_id`,
//! `committer`, and `added`/`removed`/`modified` file lists.

use nimbus_types::events::{Event, EventCommit, EventData};
use nimbus_types::{Repository, Visibility};
use serde_json::{Value, json};

/// What a payload needs besides the event.
#[derive(Debug, Clone)]
pub struct PayloadContext<'a> {
    /// Where users reach this server, without a trailing slash.
    pub base_url: &'a str,
    /// The repository now, if it still exists under the event's id.
    pub repository: Option<&'a Repository>,
    /// The instance owner's name (GitHub's `repository.owner.login`).
    pub owner: &'a str,
}

/// GitHub's name for the event (`X-GitHub-Event`) and the JSON body.
pub fn build(event: &Event, context: &PayloadContext<'_>) -> (&'static str, Value) {
    let repository = repository_json(event, context);
    let sender = match &event.actor {
        Some(actor) => json!({ "login": actor.name, "id": actor.id, "type": "User" }),
        None => Value::Null,
    };
    let nimbus = serde_json::to_value(event).unwrap_or(Value::Null);
    let repo_url = format!("{}/{}", context.base_url, event.repository.name);
    let (github_event, mut body) = match &event.data {
        EventData::Push {
            ref_name,
            before,
            after,
            created,
            deleted,
            forced,
            commits,
            ..
        } => {
            // GitHub lists the oldest first; the event, the newest first.
            let listed: Vec<Value> = commits
                .iter()
                .rev()
                .map(|commit| commit_json(commit, &repo_url))
                .collect();
            let head = commits
                .iter()
                .find(|commit| &commit.id == after)
                .map(|commit| commit_json(commit, &repo_url))
                .unwrap_or(Value::Null);
            (
                "push",
                json!({
                    "ref": ref_name,
                    "before": before,
                    "after": after,
                    "created": created,
                    "deleted": deleted,
                    "forced": forced,
                    "base_ref": Value::Null,
                    "compare": format!("{repo_url}/compare/{}...{}", short(before), short(after)),
                    "commits": listed,
                    "head_commit": head,
                    "pusher": {
                        "name": event.actor.as_ref().map(|actor| actor.name.as_str()),
                        "email": Value::Null,
                    },
                }),
            )
        }
        EventData::BranchCreated { ref_name, .. } => ("create", ref_json(ref_name, "branch")),
        EventData::TagCreated { ref_name, .. } => ("create", ref_json(ref_name, "tag")),
        EventData::BranchDeleted { ref_name, .. } => ("delete", ref_json(ref_name, "branch")),
        EventData::TagDeleted { ref_name, .. } => ("delete", ref_json(ref_name, "tag")),
        EventData::RepositoryCreated { .. } => ("repository", json!({ "action": "created" })),
        EventData::RepositoryDeleted {} => ("repository", json!({ "action": "deleted" })),
        EventData::RepositoryRenamed { from, .. } => (
            "repository",
            json!({
                "action": "renamed",
                "changes": { "repository": { "name": { "from": from } } },
            }),
        ),
        // Later event kinds: no GitHub shape yet, the Nimbus event alone.
        #[allow(unreachable_patterns)]
        _ => ("nimbus", json!({})),
    };
    if let Value::Object(fields) = &mut body {
        if matches!(github_event, "create" | "delete") {
            let default_branch = context
                .repository
                .map(|repo| repo.default_branch.as_str())
                .unwrap_or("main");
            fields.insert("master_branch".into(), json!(default_branch));
            fields.insert("pusher_type".into(), json!("user"));
            fields.insert("description".into(), Value::Null);
        }
        fields.insert("repository".into(), repository);
        fields.insert("sender".into(), sender);
        fields.insert("nimbus".into(), nimbus);
    }
    (github_event, body)
}

fn ref_json(full: &str, kind: &str) -> Value {
    let short = full
        .strip_prefix("refs/heads/")
        .or_else(|| full.strip_prefix("refs/tags/"))
        .unwrap_or(full);
    json!({ "ref": short, "ref_type": kind })
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn commit_json(commit: &EventCommit, repo_url: &str) -> Value {
    json!({
        "id": commit.id,
        "distinct": true,
        "message": commit.message,
        "timestamp": rfc3339(commit.timestamp),
        "url": format!("{repo_url}/commit/{}", commit.id),
        "author": { "name": commit.author_name, "email": commit.author_email },
    })
}

fn repository_json(event: &Event, context: &PayloadContext<'_>) -> Value {
    // Repositories have one-part names here; `full_name` is that name too,
    // matching `html_url` (GitHub's is `owner/name`).
    let name = &event.repository.name;
    let html_url = format!("{}/{}", context.base_url, name);
    let mut value = json!({
        "id": event.repository.id,
        "name": name,
        "full_name": name,
        "owner": { "login": context.owner, "type": "User" },
        "html_url": html_url,
        "url": html_url,
        "clone_url": format!("{html_url}.git"),
        "fork": false,
    });
    if let (Some(repo), Value::Object(fields)) = (context.repository, &mut value)
        && repo.id.0 == event.repository.id
    {
        let private = repo.visibility == Visibility::Private;
        fields.insert("private".into(), json!(private));
        fields.insert(
            "visibility".into(),
            json!(if private { "private" } else { "public" }),
        );
        fields.insert("default_branch".into(), json!(repo.default_branch));
        fields.insert("master_branch".into(), json!(repo.default_branch));
        fields.insert("created_at".into(), json!(rfc3339(repo.created_at)));
        fields.insert("updated_at".into(), json!(rfc3339(repo.updated_at)));
    }
    value
}

/// Unix seconds as RFC 3339 in UTC (`2026-11-22T15:00:00Z`).
pub fn rfc3339(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_types::events::{EventActor, EventRepository};
    use nimbus_types::{RepoId, RepoName};

    fn event(data: EventData) -> Event {
        Event::new(
            EventRepository {
                id: 7,
                name: "hammer".into(),
            },
            Some(EventActor {
                id: 3,
                name: "alice".into(),
            }),
            1_700_000_000,
            data,
        )
    }

    fn commit(id: char, message: &str) -> EventCommit {
        EventCommit {
            id: id.to_string().repeat(40),
            message: message.into(),
            author_name: "Alice".into(),
            author_email: "alice@example.com".into(),
            timestamp: 1_700_000_000,
        }
    }

    fn repo() -> Repository {
        Repository {
            id: RepoId(7),
            name: RepoName::new("hammer").expect("valid name"),
            visibility: Visibility::Private,
            default_branch: "trunk".into(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn push_has_githubs_fields() {
        let repo = repo();
        let context = PayloadContext {
            base_url: "https://git.example.com",
            repository: Some(&repo),
            owner: "root",
        };
        let push = event(EventData::Push {
            ref_name: "refs/heads/trunk".into(),
            before: "a".repeat(40),
            after: "c".repeat(40),
            created: false,
            deleted: false,
            forced: true,
            commits: vec![commit('c', "second"), commit('b', "first")],
            commit_count: 2,
            commits_truncated: false,
        });
        let (kind, body) = build(&push, &context);
        assert_eq!(kind, "push");
        assert_eq!(body["ref"], "refs/heads/trunk");
        assert_eq!(body["forced"], true);
        assert_eq!(body["commits"][0]["message"], "first");
        assert_eq!(body["commits"][1]["id"], "c".repeat(40));
        assert_eq!(body["head_commit"]["message"], "second");
        assert_eq!(body["commits"][0]["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(
            body["head_commit"]["url"],
            format!("https://git.example.com/hammer/commit/{}", "c".repeat(40))
        );
        assert_eq!(
            body["compare"],
            "https://git.example.com/hammer/compare/aaaaaaaaaaaa...cccccccccccc"
        );
        assert_eq!(body["pusher"]["name"], "alice");
        assert_eq!(body["sender"]["login"], "alice");
        assert_eq!(body["repository"]["full_name"], "hammer");
        assert_eq!(body["repository"]["private"], true);
        assert_eq!(body["repository"]["default_branch"], "trunk");
        assert_eq!(
            body["repository"]["clone_url"],
            "https://git.example.com/hammer.git"
        );
        assert_eq!(body["nimbus"]["type"], "push");
        assert_eq!(body["nimbus"]["id"], push.id);
    }

    #[test]
    fn branch_and_tag_events_are_create_and_delete() {
        let context = PayloadContext {
            base_url: "http://h",
            repository: None,
            owner: "root",
        };
        let (kind, body) = build(
            &event(EventData::TagCreated {
                ref_name: "refs/tags/v1".into(),
                target: "a".repeat(40),
            }),
            &context,
        );
        assert_eq!(
            (kind, &body["ref"], &body["ref_type"]),
            ("create", &json!("v1"), &json!("tag"))
        );
        let (kind, body) = build(
            &event(EventData::BranchDeleted {
                ref_name: "refs/heads/x/y".into(),
                before: "a".repeat(40),
            }),
            &context,
        );
        assert_eq!(
            (kind, &body["ref"], &body["ref_type"]),
            ("delete", &json!("x/y"), &json!("branch"))
        );
        assert_eq!(body["pusher_type"], "user");
        // Without the repository, no guessed visibility.
        assert!(body["repository"].get("private").is_none());
    }

    #[test]
    fn renames_carry_the_old_name() {
        let context = PayloadContext {
            base_url: "http://h",
            repository: None,
            owner: "root",
        };
        let (kind, body) = build(
            &event(EventData::RepositoryRenamed {
                from: "old".into(),
                to: "hammer".into(),
            }),
            &context,
        );
        assert_eq!(kind, "repository");
        assert_eq!(body["action"], "renamed");
        assert_eq!(body["changes"]["repository"]["name"]["from"], "old");
    }
}
