//! What a push's events say about each ref update besides old and new:
//! the commits it adds and whether it rewrote history.
//!
//! "Added" commits are those the push brought: reachable from the new value
//! through commits of the received pack. The walk stops at commits the
//! repository already had, which is what the client's negotiation found the
//! server to have; it is bounded by [`MAX_COUNTED_COMMITS`]. Whether an
//! update is forced (the old value is not an ancestor of the new one) is
//! decided by walking back from the new value, cut off below the old
//! commit's time (with a day of slack for clock skew) and by the same
//! bound; an update whose answer is not found within the bound counts as
//! not forced.

use super::ingest::ReceivedPack;
use super::report::Lookup;
use crate::objects::ObjectDb;
use gix_hash::ObjectId;
use nimbus_types::RefUpdate;
use nimbus_types::events::{
    EventCommit, MAX_COUNTED_COMMITS, MAX_MESSAGE_BYTES, MAX_PUSH_COMMITS, PushDetail,
};
use std::collections::{HashMap, HashSet, VecDeque};

/// Clock skew tolerated when cutting the ancestry walk off by commit time.
const SKEW_SECONDS: i64 = 24 * 3600;

struct Commit {
    parents: Vec<ObjectId>,
    time: i64,
    summary: EventCommit,
}

fn parse(id: &ObjectId, data: &[u8]) -> Option<Commit> {
    let commit = gix_object::CommitRef::from_bytes(data, gix_hash::Kind::Sha1).ok()?;
    let author = commit.author().ok()?;
    let time = author.time().map(|t| t.seconds).unwrap_or(0);
    let mut message = String::from_utf8_lossy(commit.message).into_owned();
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    Some(Commit {
        parents: commit.parents().collect(),
        time,
        summary: EventCommit {
            id: id.to_string(),
            message: message.trim_end().to_owned(),
            author_name: String::from_utf8_lossy(author.name).into_owned(),
            author_email: String::from_utf8_lossy(author.email).into_owned(),
            timestamp: time,
        },
    })
}

/// The details of each update, in order.
pub fn push_details(
    updates: &[RefUpdate],
    received: Option<&ReceivedPack>,
    existing: &ObjectDb,
) -> Vec<PushDetail> {
    let mut lookup = Commits {
        lookup: Lookup::new(received, existing),
        graph: HashMap::new(),
    };
    updates
        .iter()
        .map(|update| detail(update, received.is_some(), &mut lookup))
        .collect()
}

/// Commits read for one push. The walks of its updates overlap (a push of
/// many tags along one history walks the same commits for each), so the
/// parents and time of each commit read are kept: a few dozen bytes each,
/// for at most [`MAX_COUNTED_COMMITS`] commits per update.
struct Commits<'a> {
    lookup: Lookup<'a>,
    graph: HashMap<ObjectId, Option<(Vec<ObjectId>, i64)>>,
}

impl Commits<'_> {
    fn in_received(&self, id: &ObjectId) -> bool {
        self.lookup.in_received(id)
    }

    /// The parents and time of commit `id`; `None` if it is not a commit.
    fn node(&mut self, id: &ObjectId) -> Option<(Vec<ObjectId>, i64)> {
        if let Some(node) = self.graph.get(id) {
            return node.clone();
        }
        let node = commit(self, id).map(|commit| (commit.parents, commit.time));
        self.graph.insert(*id, node.clone());
        node
    }
}

fn commit(lookup: &mut Commits<'_>, id: &ObjectId) -> Option<Commit> {
    let (kind, data) = lookup.lookup.find(id)?;
    (kind == gix_object::Kind::Commit)
        .then(|| parse(id, &data))
        .flatten()
}

fn detail(update: &RefUpdate, has_pack: bool, lookup: &mut Commits<'_>) -> PushDetail {
    let Some(new) = update.new_peeled.or(update.new) else {
        return PushDetail::default();
    };
    let mut detail = PushDetail::default();
    // The commits the push brought, newest first (breadth-first from the
    // new value, which for linear history is newest first).
    if has_pack {
        let mut queue = VecDeque::from([new]);
        let mut seen = HashSet::from([new]);
        while let Some(id) = queue.pop_front() {
            if !lookup.in_received(&id) {
                continue;
            }
            let Some((parents, _)) = lookup.node(&id) else {
                continue;
            };
            if detail.commit_count >= MAX_COUNTED_COMMITS {
                detail.commits_truncated = true;
                break;
            }
            detail.commit_count += 1;
            if detail.commits.len() < MAX_PUSH_COMMITS
                && let Some(commit) = commit(lookup, &id)
            {
                detail.commits.push(commit.summary);
            }
            for parent in parents {
                if seen.insert(parent) {
                    queue.push_back(parent);
                }
            }
        }
    }
    if let Some(old) = update.old
        && update.new.is_some()
    {
        detail.forced = !is_ancestor(lookup, old, new);
    }
    detail
}

/// Whether `old` is an ancestor of (or equal to) `new`; `true` when the
/// walk gives up (see the module docs).
fn is_ancestor(lookup: &mut Commits<'_>, old: ObjectId, new: ObjectId) -> bool {
    if old == new {
        return true;
    }
    let Some(old_commit) = commit(lookup, &old) else {
        // Not a commit (a tag moved, say): "forced" does not apply.
        return true;
    };
    let cutoff = old_commit.time - SKEW_SECONDS;
    let mut queue = VecDeque::from([new]);
    let mut seen = HashSet::from([new]);
    let mut walked = 0u64;
    while let Some(id) = queue.pop_front() {
        if id == old {
            return true;
        }
        walked += 1;
        if walked > MAX_COUNTED_COMMITS {
            return true;
        }
        let Some((parents, time)) = lookup.node(&id) else {
            continue;
        };
        if time < cutoff {
            continue;
        }
        for parent in parents {
            if seen.insert(parent) {
                queue.push_back(parent);
            }
        }
    }
    false
}
