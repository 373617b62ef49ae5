//! Deciding what to send: which `have`s are common, whether negotiation can
//! stop, where a shallow history ends, and the exact set of objects a pack
//! must hold. Works on an [`Objects`] view and the request; no IO beyond
//! object lookups.

use super::request::{Deepen, FetchRequest, Filter};
use crate::objects::{ObjectError, Objects};
use bstr::ByteSlice;
use gix_hash::ObjectId;
use gix_hashtable::{HashMap, HashSet};
use nimbus_types::Ref;
use std::collections::{BinaryHeap, VecDeque};

/// Why a fetch cannot be served. Messages go to the client.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("upload-pack: not our ref {id}")]
    NotOurRef { id: ObjectId },
    #[error("no commits selected for shallow requests")]
    NoShallowCommits,
    #[error("deepen-not: {name:?} is not a known ref")]
    UnknownDeepenNot { name: bstr::BString },
    #[error(transparent)]
    Object(#[from] ObjectError),
}

/// Most commits one `ok_to_give_up` check walks before answering "not yet".
const GIVE_UP_WALK_LIMIT: usize = 200_000;

/// The result of one negotiation round.
#[derive(Debug, Default)]
pub struct Negotiation {
    /// `have`s we also have, in request order.
    pub common: Vec<ObjectId>,
    /// Every want reaches a common commit: the client may stop sending haves.
    pub ready: bool,
}

/// Find the common `have`s and decide whether negotiation is done.
pub fn negotiate(
    objects: &mut Objects,
    wants: &[ObjectId],
    haves: &[ObjectId],
) -> Result<Negotiation, PlanError> {
    let mut seen = HashSet::default();
    let common: Vec<ObjectId> = haves
        .iter()
        .filter(|id| seen.insert(**id) && objects.contains(id))
        .copied()
        .collect();
    let ready = !common.is_empty() && ok_to_give_up(objects, wants, &common)?;
    Ok(Negotiation { common, ready })
}

/// Whether every wanted commit has a common commit among its ancestors, as
/// git's `ok_to_give_up` decides: walk back from each want, no further than
/// the oldest common commit's time.
fn ok_to_give_up(
    objects: &mut Objects,
    wants: &[ObjectId],
    common: &[ObjectId],
) -> Result<bool, PlanError> {
    let common_set: HashSet<ObjectId> = common.iter().copied().collect();
    let mut oldest = i64::MAX;
    for id in common {
        if let Some(c) = objects.commit(id)? {
            oldest = oldest.min(c.time);
        }
    }
    if oldest == i64::MAX {
        return Ok(false);
    }
    let mut reaches: HashSet<ObjectId> = HashSet::default();
    for want in wants {
        if objects.commit(want)?.is_none() {
            continue;
        }
        let mut visited: HashSet<ObjectId> = HashSet::default();
        let mut queue = VecDeque::from([*want]);
        let mut found = false;
        while let Some(id) = queue.pop_front() {
            if common_set.contains(&id) || reaches.contains(&id) {
                found = true;
                break;
            }
            if !visited.insert(id) || visited.len() > GIVE_UP_WALK_LIMIT {
                if visited.len() > GIVE_UP_WALK_LIMIT {
                    return Ok(false);
                }
                continue;
            }
            let Some(commit) = objects.commit(&id)? else {
                continue;
            };
            if commit.time < oldest {
                continue;
            }
            queue.extend(commit.parents.iter().copied());
        }
        if !found {
            return Ok(false);
        }
        reaches.insert(*want);
    }
    Ok(true)
}

/// Shallow boundaries after a fetch.
#[derive(Debug, Default)]
pub struct ShallowPlan {
    /// `shallow <id>` lines: new boundary commits for the client.
    pub shallow: Vec<ObjectId>,
    /// `unshallow <id>` lines: client boundaries that now get their parents.
    pub unshallow: Vec<ObjectId>,
    /// Commits whose parents the pack walk must not enter.
    pub boundary: HashSet<ObjectId>,
    /// Parents of unshallowed commits, to be sent as if wanted.
    pub extra_wants: Vec<ObjectId>,
    /// Whether the response carries shallow information at all.
    pub send_info: bool,
}

/// Resolve a `deepen-not` argument the way git's `dwim_ref` does.
fn resolve_ref<'a>(refs: &'a [Ref], name: &[u8]) -> Option<&'a Ref> {
    let candidates: [&[u8]; 5] = [
        b"",
        b"refs/",
        b"refs/tags/",
        b"refs/heads/",
        b"refs/remotes/",
    ];
    candidates.iter().find_map(|prefix| {
        let mut full = prefix.to_vec();
        full.extend_from_slice(name);
        refs.iter().find(|r| r.name.as_bytes() == full.as_slice())
    })
}

/// Compute shallow boundaries for a request, as git's upload-pack does.
pub fn plan_shallow(
    objects: &mut Objects,
    request: &FetchRequest,
    want_commits: &[ObjectId],
    refs: &[Ref],
) -> Result<ShallowPlan, PlanError> {
    let client: HashSet<ObjectId> = request.client_shallows.iter().copied().collect();
    let deepen: &Deepen = &request.deepen;
    let mut plan = ShallowPlan {
        send_info: deepen.is_requested() || !client.is_empty(),
        ..ShallowPlan::default()
    };
    if !deepen.is_requested() {
        plan.boundary = client;
        return Ok(plan);
    }
    // (boundary commits, commits within the new history)
    let (shallow, not_shallow) = if let Some(depth) = deepen.depth {
        if deepen.relative {
            let starts: Vec<ObjectId> = request.client_shallows.clone();
            shallow_by_depth(objects, &starts, depth.saturating_add(1))?
        } else {
            shallow_by_depth(objects, want_commits, depth)?
        }
    } else {
        let mut excluded: HashSet<ObjectId> = HashSet::default();
        if !deepen.not.is_empty() {
            let mut tips = Vec::new();
            for name in &deepen.not {
                let r = resolve_ref(refs, name).ok_or_else(|| PlanError::UnknownDeepenNot {
                    name: name.as_bstr().to_owned(),
                })?;
                let (peeled, _) = objects.peel(&r.target)?;
                tips.push(peeled);
            }
            excluded = ancestors(objects, &tips, &HashSet::default())?;
        }
        shallow_by_selection(objects, want_commits, deepen.since, &excluded)?
    };
    for id in &shallow {
        if !client.contains(id) {
            plan.shallow.push(*id);
        }
    }
    for id in &request.client_shallows {
        if not_shallow.contains(id) {
            plan.unshallow.push(*id);
            if let Some(c) = objects.commit(id)? {
                plan.extra_wants.extend(c.parents.iter().copied());
            }
        } else {
            plan.boundary.insert(*id);
        }
    }
    plan.boundary.extend(shallow.iter().copied());
    Ok(plan)
}

/// Breadth-first from `starts`: commits at depth `depth` (the starts are at
/// depth 1) become the boundary; shallower ones are inside.
fn shallow_by_depth(
    objects: &mut Objects,
    starts: &[ObjectId],
    depth: u32,
) -> Result<(Vec<ObjectId>, HashSet<ObjectId>), PlanError> {
    let mut shallow = Vec::new();
    let mut inside: HashSet<ObjectId> = HashSet::default();
    let mut visited: HashSet<ObjectId> = HashSet::default();
    let mut queue: VecDeque<(ObjectId, u32)> = VecDeque::new();
    for id in starts {
        if visited.insert(*id) {
            queue.push_back((*id, 1));
        }
    }
    while let Some((id, d)) = queue.pop_front() {
        let Some(commit) = objects.commit(&id)? else {
            continue;
        };
        if d >= depth {
            shallow.push(id);
            continue;
        }
        inside.insert(id);
        let parents = commit.parents.clone();
        for p in parents {
            if visited.insert(p) {
                queue.push_back((p, d + 1));
            }
        }
    }
    Ok((shallow, inside))
}

/// For `deepen-since` / `deepen-not`: commits reachable from the wants that
/// are recent enough and not excluded are selected; selected commits with a
/// parent outside the selection form the boundary.
fn shallow_by_selection(
    objects: &mut Objects,
    wants: &[ObjectId],
    since: Option<i64>,
    excluded: &HashSet<ObjectId>,
) -> Result<(Vec<ObjectId>, HashSet<ObjectId>), PlanError> {
    let mut selected: HashSet<ObjectId> = HashSet::default();
    let mut order = Vec::new();
    let mut queue: VecDeque<ObjectId> = wants.iter().copied().collect();
    let mut visited: HashSet<ObjectId> = HashSet::default();
    while let Some(id) = queue.pop_front() {
        if !visited.insert(id) || excluded.contains(&id) {
            continue;
        }
        let Some(commit) = objects.commit(&id)? else {
            continue;
        };
        if since.is_some_and(|since| commit.time < since) {
            continue;
        }
        selected.insert(id);
        order.push(id);
        queue.extend(commit.parents.iter().copied());
    }
    if selected.is_empty() {
        return Err(PlanError::NoShallowCommits);
    }
    let mut shallow = Vec::new();
    for id in order {
        let commit = objects.expect_commit(&id)?;
        if commit.parents.iter().any(|p| !selected.contains(p)) {
            shallow.push(id);
            selected.remove(&id);
        }
    }
    Ok((shallow, selected))
}

/// All commits reachable from `tips`, not entering the parents of `cut`.
fn ancestors(
    objects: &mut Objects,
    tips: &[ObjectId],
    cut: &HashSet<ObjectId>,
) -> Result<HashSet<ObjectId>, PlanError> {
    let mut seen: HashSet<ObjectId> = HashSet::default();
    let mut stack: Vec<ObjectId> = tips.to_vec();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        if cut.contains(&id) {
            continue;
        }
        if let Some(commit) = objects.commit(&id)? {
            stack.extend(commit.parents.iter().copied());
        }
    }
    Ok(seen)
}

/// The objects a pack must hold.
#[derive(Debug, Default)]
pub struct PackPlan {
    /// Every object to send, without duplicates.
    pub objects: Vec<ObjectId>,
    /// Objects the client is known to have; thin-pack deltas may use them
    /// as bases.
    pub client_has: HashSet<ObjectId>,
    pub commit_count: usize,
}

#[derive(PartialEq, Eq)]
struct Queued {
    time: i64,
    id: ObjectId,
    uninteresting: bool,
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.time
            .cmp(&other.time)
            .then_with(|| self.uninteresting.cmp(&other.uninteresting))
            .then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The state of a `wants --not haves` walk: a queue by commit time and the
/// marks each commit has received.
#[derive(Default)]
struct Walk {
    heap: BinaryHeap<Queued>,
    /// Bit 1: reached from a want; bit 2: reached from a have.
    marks: HashMap<ObjectId, u8>,
    interesting_in_queue: usize,
}

impl Walk {
    const INTERESTING: u8 = 1;
    const UNINTERESTING: u8 = 2;

    fn is_uninteresting(&self, id: &ObjectId) -> bool {
        self.marks.get(id).copied().unwrap_or(0) & Self::UNINTERESTING != 0
    }

    /// Queue `id` with a mark, once per mark; non-commits are ignored.
    fn push(
        &mut self,
        objects: &mut Objects,
        id: ObjectId,
        uninteresting: bool,
    ) -> Result<(), PlanError> {
        let mark = if uninteresting {
            Self::UNINTERESTING
        } else {
            Self::INTERESTING
        };
        let marks = self.marks.entry(id).or_insert(0);
        if *marks & mark != 0 {
            return Ok(());
        }
        *marks |= mark;
        let Some(commit) = objects.commit(&id)? else {
            return Ok(());
        };
        if !uninteresting {
            self.interesting_in_queue += 1;
        }
        self.heap.push(Queued {
            time: commit.time,
            id,
            uninteresting,
        });
        Ok(())
    }
}

/// Which commits to send: reachable from `wants`, not from `haves`, newest
/// first, like `git rev-list wants --not haves`. The walk does not enter
/// the parents of `boundary` commits, and the have side stops at the
/// client's shallow commits (`client_shallows`), whose parents it lacks.
/// Returns the commits to send and the have-side commits next to them.
fn commits_to_send(
    objects: &mut Objects,
    wants: &[ObjectId],
    haves: &[ObjectId],
    boundary: &HashSet<ObjectId>,
    client_shallows: &HashSet<ObjectId>,
) -> Result<(Vec<ObjectId>, Vec<ObjectId>), PlanError> {
    let mut walk = Walk::default();
    for id in haves {
        walk.push(objects, *id, true)?;
    }
    for id in wants {
        walk.push(objects, *id, false)?;
    }
    let mut sent = Vec::new();
    while let Some(item) = walk.heap.pop() {
        if !item.uninteresting {
            walk.interesting_in_queue -= 1;
        }
        let uninteresting = walk.is_uninteresting(&item.id);
        let parents = objects.expect_commit(&item.id)?.parents;
        if uninteresting {
            if !client_shallows.contains(&item.id) {
                for p in parents {
                    walk.push(objects, p, true)?;
                }
            }
        } else {
            sent.push(item.id);
            if !boundary.contains(&item.id) {
                for p in parents {
                    walk.push(objects, p, false)?;
                }
            }
        }
        if walk.interesting_in_queue == 0 {
            break;
        }
    }
    // A commit found uninteresting after it was listed (clock skew) is
    // still sent; that costs bytes, never correctness.
    let sent_set: HashSet<ObjectId> = sent.iter().copied().collect();
    let mut edges = Vec::new();
    let mut edge_seen: HashSet<ObjectId> = HashSet::default();
    for id in &sent {
        if boundary.contains(id) {
            continue;
        }
        for p in objects.expect_commit(id)?.parents {
            let known = walk.is_uninteresting(&p);
            if known && !sent_set.contains(&p) && edge_seen.insert(p) {
                edges.push(p);
            }
        }
    }
    Ok((sent, edges))
}

/// The entries of tree `id`, each made into a `T` by `make`.
fn read_tree<T>(
    objects: &mut Objects,
    id: ObjectId,
    make: impl Fn(gix_object::tree::EntryRef<'_>) -> T,
) -> Result<Vec<T>, PlanError> {
    let data = match objects.find(&id)? {
        Some((gix_object::Kind::Tree, data)) => data,
        Some((actual, _)) => {
            return Err(ObjectError::WrongKind {
                id,
                expected: gix_object::Kind::Tree,
                actual,
            }
            .into());
        }
        None => return Err(ObjectError::Missing { id }.into()),
    };
    gix_object::TreeRefIter::from_bytes(data, gix_hash::Kind::Sha1)
        .map(|entry| entry.map(&make))
        .collect::<Result<_, _>>()
        .map_err(|source| ObjectError::Decode { id, source }.into())
}

/// The entries of tree `id`: name, id and mode.
fn tree_entries(
    objects: &mut Objects,
    id: ObjectId,
) -> Result<Vec<(bstr::BString, ObjectId, gix_object::tree::EntryMode)>, PlanError> {
    read_tree(objects, id, |e| {
        (e.filename.to_owned(), e.oid.to_owned(), e.mode)
    })
}

/// The entries of tree `id`: id and mode.
fn tree_entry_ids(objects: &mut Objects, id: ObjectId) -> Result<TreeEntries, PlanError> {
    read_tree(objects, id, |e| (e.oid.to_owned(), e.mode))
}

/// Mark in `known` (at depth 0: never walked again) what the client has
/// below the trees of the edges (`known_roots`), as git's `pack.useSparse`
/// (its default) does in `mark_trees_uninteresting_sparse`: the trees of
/// the sent commits and of the edges are grouped by path, and a path is
/// only descended into where the group holds both a known tree and one
/// that is not. Below a path where nothing changed nothing is read, so a
/// fetch of one commit reads the trees along the paths it changed, not
/// every tree of the repository twice. An object the client has but that
/// was not reached this way is sent again; that costs bytes, never
/// correctness, and is what git sends too.
///
/// The entries of the trees read that the client does not have are kept in
/// `parsed`, for the walk that sends them.
fn mark_known_sparse(
    objects: &mut Objects,
    known: &mut HashMap<ObjectId, u64>,
    parsed: &mut HashMap<ObjectId, TreeEntries>,
    sent_roots: &[ObjectId],
    known_roots: &[ObjectId],
) -> Result<(), PlanError> {
    for root in known_roots {
        known.insert(*root, 0);
    }
    let mut first: Vec<ObjectId> = sent_roots.iter().chain(known_roots).copied().collect();
    first.sort_unstable();
    first.dedup();
    let mut groups = vec![first];
    while let Some(group) = groups.pop() {
        let has_known = group.iter().any(|tree| known.contains_key(tree));
        let has_other = group.iter().any(|tree| !known.contains_key(tree));
        if !has_known || !has_other {
            continue;
        }
        let mut by_name: std::collections::BTreeMap<bstr::BString, Vec<ObjectId>> =
            std::collections::BTreeMap::new();
        for tree in group {
            let tree_known = known.contains_key(&tree);
            let entries = tree_entries(objects, tree)?;
            if !tree_known {
                parsed.insert(tree, entries.iter().map(|e| (e.1, e.2)).collect());
            }
            for (name, id, mode) in entries {
                if mode.is_commit() {
                    continue; // submodules live elsewhere
                }
                if tree_known {
                    known.insert(id, 0);
                }
                if mode.is_tree() {
                    by_name.entry(name).or_default().push(id);
                }
            }
        }
        for (_, mut trees) in by_name {
            trees.sort_unstable();
            trees.dedup();
            groups.push(trees);
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visit {
    New,
    Shallower,
    Known,
}

/// A tree's entries: id and mode.
type TreeEntries = Vec<(ObjectId, gix_object::tree::EntryMode)>;

/// Trees and blobs below a root, with git's filter semantics.
struct TreeWalker<'a> {
    filter: Option<Filter>,
    /// Object -> the smallest depth it was visited at.
    seen: HashMap<ObjectId, u64>,
    /// Trees already read (by [`mark_known_sparse`]), not to be read again.
    parsed: HashMap<ObjectId, TreeEntries>,
    out: &'a mut Vec<ObjectId>,
}

impl TreeWalker<'_> {
    fn included(&self, depth: u64) -> bool {
        match self.filter {
            Some(Filter::TreeDepth(limit)) => depth < limit,
            _ => true,
        }
    }

    /// Record a visit at `depth`. An object is emitted only on its first
    /// visit; a later visit at a smaller depth (tree filters) walks it again
    /// to reach children that were too deep before, without emitting it twice.
    fn visit(&mut self, id: ObjectId, depth: u64) -> Visit {
        match self.seen.get(&id) {
            Some(d) if *d <= depth => Visit::Known,
            Some(_) => {
                self.seen.insert(id, depth);
                Visit::Shallower
            }
            None => {
                self.seen.insert(id, depth);
                Visit::New
            }
        }
    }

    /// Emit a wanted blob unless it was already emitted.
    fn add_blob(&mut self, id: ObjectId) {
        if self.visit(id, 0) == Visit::New {
            self.out.push(id);
        }
    }

    fn walk(&mut self, objects: &mut Objects, root: ObjectId, depth: u64) -> Result<(), PlanError> {
        if !self.included(depth) {
            return Ok(());
        }
        match self.visit(root, depth) {
            Visit::Known => return Ok(()),
            Visit::New => self.out.push(root),
            Visit::Shallower => {}
        }
        let mut stack = vec![(root, depth)];
        while let Some((tree, depth)) = stack.pop() {
            let entries = match self.parsed.remove(&tree) {
                Some(entries) => entries,
                None => tree_entry_ids(objects, tree)?,
            };
            let child_depth = depth + 1;
            if !self.included(child_depth) {
                continue;
            }
            for (id, mode) in entries {
                if mode.is_commit() {
                    continue; // submodules live elsewhere
                }
                if mode.is_tree() {
                    match self.visit(id, child_depth) {
                        Visit::Known => {}
                        Visit::New => {
                            self.out.push(id);
                            stack.push((id, child_depth));
                        }
                        Visit::Shallower => stack.push((id, child_depth)),
                    }
                } else if self.blob_wanted(objects, &id)?
                    && self.visit(id, child_depth) == Visit::New
                {
                    self.out.push(id);
                }
            }
        }
        Ok(())
    }

    fn blob_wanted(&self, objects: &Objects, id: &ObjectId) -> Result<bool, PlanError> {
        Ok(match self.filter {
            // Depth was already checked by the caller for tree filters.
            None | Some(Filter::TreeDepth(_)) => true,
            Some(Filter::BlobNone) => false,
            Some(Filter::BlobLimit(limit)) => objects.size(id)?.is_some_and(|size| size < limit),
        })
    }
}

/// Plan the objects of a pack for `wants` given the common `haves`, the
/// shallow plan and the request's filter and include-tag option.
pub fn plan_pack(
    objects: &mut Objects,
    request: &FetchRequest,
    common: &[ObjectId],
    shallow: &ShallowPlan,
    refs: &[Ref],
) -> Result<PackPlan, PlanError> {
    plan_pack_detailed(objects, request, common, shallow, refs).map(|planned| planned.plan)
}

/// A plan with what the walk learnt on the way (see [`plan_pack_detailed`]).
#[derive(Debug)]
pub struct DetailedPlan {
    pub plan: PackPlan,
    /// The commits the wants are or peel to.
    pub want_commits: Vec<ObjectId>,
    /// Commits the client has that are parents of sent commits.
    pub edges: Vec<ObjectId>,
    /// Whether a want is (or peels to) a tree or a blob.
    pub wants_non_commits: bool,
}

/// [`plan_pack`], also returning the wanted commits and the edges of the
/// walk, which the reachability index needs.
pub fn plan_pack_detailed(
    objects: &mut Objects,
    request: &FetchRequest,
    common: &[ObjectId],
    shallow: &ShallowPlan,
    refs: &[Ref],
) -> Result<DetailedPlan, PlanError> {
    let mut out: Vec<ObjectId> = Vec::new();
    let mut explicit_trees = Vec::new();
    let mut explicit_blobs = Vec::new();
    let mut want_commits = Vec::new();
    let mut sent_tags: HashSet<ObjectId> = HashSet::default();
    for want in request.wants.iter().chain(&shallow.extra_wants) {
        let mut current = *want;
        loop {
            match objects.kind(&current)? {
                None => return Err(PlanError::NotOurRef { id: *want }),
                Some(gix_object::Kind::Tag) => {
                    if sent_tags.insert(current) {
                        out.push(current);
                    }
                    let (kind, data) = objects
                        .find(&current)?
                        .ok_or(ObjectError::Missing { id: current })?;
                    debug_assert_eq!(kind, gix_object::Kind::Tag);
                    let tag = gix_object::TagRef::from_bytes(data, gix_hash::Kind::Sha1).map_err(
                        |source| ObjectError::Decode {
                            id: current,
                            source,
                        },
                    )?;
                    current = tag.target();
                }
                Some(gix_object::Kind::Commit) => {
                    want_commits.push(current);
                    break;
                }
                Some(gix_object::Kind::Tree) => {
                    explicit_trees.push(current);
                    break;
                }
                Some(gix_object::Kind::Blob) => {
                    explicit_blobs.push(current);
                    break;
                }
            }
        }
    }
    let wants_non_commits = !explicit_trees.is_empty() || !explicit_blobs.is_empty();
    let client_shallows: HashSet<ObjectId> = request.client_shallows.iter().copied().collect();
    let (commits, mut edges) = commits_to_send(
        objects,
        &want_commits,
        common,
        &shallow.boundary,
        &client_shallows,
    )?;
    let walk_edges = edges.clone();
    edges.extend(shallow.unshallow.iter().copied());
    let commit_count = commits.len();

    let mut trees_and_blobs = Vec::new();
    let mut walker = TreeWalker {
        filter: request.filter,
        seen: HashMap::default(),
        out: &mut trees_and_blobs,
        parsed: HashMap::default(),
    };
    let mut known_roots = Vec::new();
    for edge in &edges {
        if let Some(commit) = objects.commit(edge)? {
            known_roots.push(commit.tree);
        }
    }
    let mut sent_roots = Vec::with_capacity(commits.len());
    for commit in &commits {
        sent_roots.push(objects.expect_commit(commit)?.tree);
    }
    mark_known_sparse(
        objects,
        &mut walker.seen,
        &mut walker.parsed,
        &sent_roots,
        &known_roots,
    )?;
    let client_has: HashSet<ObjectId> = walker.seen.keys().copied().collect();
    for commit in &commits {
        let tree = objects.expect_commit(commit)?.tree;
        walker.walk(objects, tree, 0)?;
    }
    // Explicitly wanted objects (lazy fetches, refs to trees and blobs)
    // are sent whatever the filter; a tree filter does not apply to them.
    if matches!(walker.filter, Some(Filter::TreeDepth(_))) {
        walker.filter = None;
    }
    for tree in explicit_trees {
        walker.walk(objects, tree, 0)?;
    }
    for blob in explicit_blobs {
        walker.add_blob(blob);
    }
    drop(walker);

    let commit_set: HashSet<ObjectId> = commits.iter().copied().collect();
    out.extend(commits);
    if request.include_tag {
        for r in refs {
            let Some(peeled) = r.peeled else { continue };
            if commit_set.contains(&peeled) && !sent_tags.contains(&r.target) {
                // Send the whole tag chain down to the commit.
                let mut current = r.target;
                while current != peeled && sent_tags.insert(current) {
                    out.push(current);
                    match objects.find(&current)? {
                        Some((gix_object::Kind::Tag, data)) => {
                            let tag = gix_object::TagRef::from_bytes(data, gix_hash::Kind::Sha1)
                                .map_err(|source| ObjectError::Decode {
                                    id: current,
                                    source,
                                })?;
                            current = tag.target();
                        }
                        _ => break,
                    }
                }
            }
        }
    }
    out.extend(trees_and_blobs);
    Ok(DetailedPlan {
        plan: PackPlan {
            objects: out,
            client_has,
            commit_count,
        },
        want_commits,
        edges: walk_edges,
        wants_non_commits,
    })
}
