//! Online maintenance of a repository's packs.
//!
//! - **Compaction** merges every pack of a repository into one, copying
//!   stored deltas (the pack generator of upload-pack, with no haves). It
//!   keeps every object, so it needs no coordination with pushes.
//! - **Garbage collection** writes one pack of the objects reachable from
//!   the refs and drops the rest. The swap is one metadata transaction that
//!   only succeeds if no push moved a ref since the reachability walk, and
//!   it moves the repository's pack generation on, so a push that was
//!   checked against the old packs is checked again before its refs move.
//!
//! Neither ever deletes a file at once: replaced packs become *retired*
//! and stay in the object store for a grace period, for requests (in any
//! process) that took their snapshot before the swap; the grace period must
//! be longer than the slowest clone. Uploads no metadata records (a push
//! that died between upload and commit, a lost race) are deleted once they
//! are older than the grace period and at least [`MIN_ORPHAN_AGE`], as they
//! may belong to a push still running.

use crate::objects::Objects;
use crate::receive_pack::ingest::{self, IngestLimits};
use crate::service::{GitService, ServiceError, Snapshot};
use crate::upload_pack::pack::{PackError, write_pack};
use crate::upload_pack::plan::{PackPlan, PlanError, ShallowPlan, plan_pack};
use crate::upload_pack::request::FetchRequest;
use gix_hash::ObjectId;
use nimbus_types::metadata::{MetadataStore, PackReplacement, ReplacementConflict};
use nimbus_types::storage::{ObjectInfo, pack_key};
use nimbus_types::unix_now;
use nimbus_types::{RepoId, Repository};
use std::collections::{HashMap, HashSet};
use std::io::{self, BufWriter, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Uploads no metadata records are deleted only once they are older than
/// this, whatever the grace period: the push they belong to may still run.
pub const MIN_ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// What a maintenance run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaintenanceKind {
    /// Merge all packs into one, keeping every object.
    Compact,
    /// Keep only what the refs reach, in one pack.
    CollectGarbage,
}

/// Settings of maintenance.
#[derive(Debug, Clone, Copy)]
pub struct MaintenanceConfig {
    /// Compact a repository once a push leaves it with more packs than this.
    pub compact_threshold: usize,
    /// How long retired packs and unrecorded uploads stay in the object
    /// store. Longer than the slowest push and the slowest clone.
    pub grace: Duration,
    /// How often every repository is garbage collected; `None` never.
    pub gc_interval: Option<Duration>,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            compact_threshold: 16,
            grace: Duration::from_secs(3600),
            gc_interval: Some(Duration::from_secs(24 * 3600)),
        }
    }
}

/// Why maintenance failed; nothing visible changed.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("walking the reachable objects failed")]
    Plan(#[from] PlanError),
    #[error("writing the new pack failed")]
    Pack(#[from] PackError),
    #[error("indexing the new pack failed: {0}")]
    Ingest(#[from] ingest::IngestError),
    #[error("listing the objects failed")]
    List(#[source] gix_error::Error),
    #[error("I/O failed")]
    Io(#[from] io::Error),
}

impl From<nimbus_types::metadata::MetadataError> for MaintenanceError {
    fn from(error: nimbus_types::metadata::MetadataError) -> Self {
        MaintenanceError::Service(error.into())
    }
}

impl From<nimbus_types::storage::ObjectStoreError> for MaintenanceError {
    fn from(error: nimbus_types::storage::ObjectStoreError) -> Self {
        MaintenanceError::Service(error.into())
    }
}

impl From<tokio::task::JoinError> for MaintenanceError {
    fn from(error: tokio::task::JoinError) -> Self {
        MaintenanceError::Service(error.into())
    }
}

/// Figures of one maintenance run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Packs recorded for the repository, before and after.
    pub packs_before: usize,
    pub packs_after: usize,
    /// Objects in the recorded packs (duplicates counted), before and after.
    pub objects_before: u64,
    pub objects_after: u64,
    /// Bytes in the object store under the repository (recorded, retired
    /// and orphaned files), before and after.
    pub stored_bytes_before: u64,
    pub stored_bytes_after: u64,
    /// Why the packs were left as they were, if they were.
    pub skipped: Option<String>,
    /// Retired packs and orphaned uploads whose files were deleted.
    pub retired_deleted: usize,
    pub orphans_deleted: usize,
}

/// The pack name of a stored pack file key (`repos/1/pack/NAME.idx`).
fn stored_pack_name(key: &str) -> Option<&str> {
    let file = key.rsplit('/').next()?;
    file.strip_suffix(".pack")
        .or_else(|| file.strip_suffix(".idx"))
}

fn stored_bytes(objects: &[ObjectInfo]) -> u64 {
    objects.iter().map(|object| object.size).sum()
}

/// The objects of the new pack.
fn plan(snapshot: &Snapshot, kind: MaintenanceKind) -> Result<PackPlan, MaintenanceError> {
    let handle = snapshot.db.handle();
    match kind {
        MaintenanceKind::Compact => {
            let mut seen = HashSet::new();
            let mut objects = Vec::new();
            for id in handle.iter().map_err(MaintenanceError::List)? {
                let id: ObjectId =
                    id.map_err(|error| MaintenanceError::Io(io::Error::other(error)))?;
                if seen.insert(id) {
                    objects.push(id);
                }
            }
            Ok(PackPlan {
                objects,
                ..PackPlan::default()
            })
        }
        MaintenanceKind::CollectGarbage => {
            let request = FetchRequest {
                wants: snapshot.refs.iter().map(|r| r.target).collect(),
                ..FetchRequest::default()
            };
            let mut objects = Objects::new(handle);
            Ok(plan_pack(
                &mut objects,
                &request,
                &[],
                &ShallowPlan::default(),
                &snapshot.refs,
            )?)
        }
    }
}

impl GitService {
    /// Compact or garbage collect one repository, then delete the files of
    /// retired packs and orphaned uploads older than `grace`. Safe to run
    /// while the repository is read and pushed to, in any process.
    pub async fn maintain(
        &self,
        repo: &Repository,
        kind: MaintenanceKind,
        grace: Duration,
    ) -> Result<MaintenanceReport, MaintenanceError> {
        let mut report = MaintenanceReport::default();
        let listed = self.store.list(&pack_prefix(repo.id)).await?;
        report.stored_bytes_before = stored_bytes(&listed);

        let snapshot = self.snapshot(repo).await?;
        report.packs_before = snapshot.packs.len();
        report.objects_before = snapshot.packs.iter().map(|p| p.object_count).sum();
        report.skipped = match kind {
            MaintenanceKind::Compact if snapshot.packs.len() < 2 => {
                Some("there is at most one pack".to_owned())
            }
            MaintenanceKind::CollectGarbage if snapshot.packs.is_empty() => {
                Some("there are no packs".to_owned())
            }
            _ => self.repack(repo, snapshot, kind).await?,
        };

        let (retired, orphans) = self.delete_expired(repo, grace).await?;
        report.retired_deleted = retired;
        report.orphans_deleted = orphans;

        let after = self.meta.packs(repo.id).await?;
        report.packs_after = after.len();
        report.objects_after = after.iter().map(|p| p.object_count).sum();
        report.stored_bytes_after = stored_bytes(&self.store.list(&pack_prefix(repo.id)).await?);
        tracing::info!(
            repo = %repo.name,
            ?kind,
            packs_before = report.packs_before,
            packs_after = report.packs_after,
            stored_bytes_before = report.stored_bytes_before,
            stored_bytes_after = report.stored_bytes_after,
            skipped = report.skipped.as_deref(),
            "maintenance finished"
        );
        Ok(report)
    }

    /// Write the new pack, upload it and swap it in. Returns why the swap
    /// did not happen, if it did not.
    async fn repack(
        &self,
        repo: &Repository,
        snapshot: Snapshot,
        kind: MaintenanceKind,
    ) -> Result<Option<String>, MaintenanceError> {
        tokio::fs::create_dir_all(&self.config.staging_dir).await?;
        let staging = tempfile::Builder::new()
            .prefix("maintain-")
            .tempdir_in(&self.config.staging_dir)?;
        let staging_path = staging.path().to_owned();
        let remove: Vec<String> = snapshot.packs.iter().map(|p| p.name.clone()).collect();
        let ref_version = snapshot.ref_version;

        let received = tokio::task::spawn_blocking(move || -> Result<_, MaintenanceError> {
            let plan = plan(&snapshot, kind)?;
            let pack_path = staging_path.join("new.pack-data");
            let mut out = BufWriter::new(std::fs::File::create(&pack_path)?);
            write_pack(&snapshot.db.handle(), &plan, false, &mut out)?;
            out.flush()?;
            drop(out);
            // Index and check the new pack exactly as a pushed one.
            let limits = IngestLimits {
                max_pack_bytes: u64::MAX,
                max_object_bytes: usize::MAX,
                max_objects: u32::MAX,
            };
            let data = io::BufReader::new(std::fs::File::open(&pack_path)?);
            let received = ingest::ingest(data, &staging_path, &snapshot.db, limits)?;
            std::fs::remove_file(&pack_path)?;
            Ok(received)
        })
        .await??;

        let add = match &received {
            Some(pack) => Some(self.upload(repo, pack).await?),
            None => None,
        };
        let replacement = PackReplacement {
            remove,
            add: add.clone(),
            prune_at_ref_version: (kind == MaintenanceKind::CollectGarbage).then_some(ref_version),
        };
        let outcome = self
            .meta
            .replace_packs(repo.id, &replacement, unix_now())
            .await?;
        drop(staging);
        match outcome {
            Ok(()) => Ok(None),
            Err(conflict) => {
                if let Some(pack) = &add {
                    self.remove_pack(repo, &pack.name).await;
                }
                Ok(Some(match conflict {
                    ReplacementConflict::RefsMoved => {
                        "a push moved refs meanwhile; the next run will collect".to_owned()
                    }
                    ReplacementConflict::PackGone { name } => {
                        format!("pack {name} was replaced by another maintenance run meanwhile")
                    }
                }))
            }
        }
    }

    /// Delete the files of retired packs retired longer than `grace` ago,
    /// and of uploads no metadata records that are older than `grace`.
    async fn delete_expired(
        &self,
        repo: &Repository,
        grace: Duration,
    ) -> Result<(usize, usize), MaintenanceError> {
        let now = unix_now();
        let grace_secs = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        // List first, read metadata second: an upload recorded in between
        // is then seen as recorded.
        let listed = self.store.list(&pack_prefix(repo.id)).await?;
        let retired = self.meta.retired_packs(repo.id).await?;
        let recorded: HashSet<String> = self
            .meta
            .packs(repo.id)
            .await?
            .into_iter()
            .map(|p| p.name)
            .collect();

        let mut retired_deleted = 0;
        for pack in &retired {
            if now.saturating_sub(pack.retired_at) < grace_secs || recorded.contains(&pack.name) {
                continue;
            }
            self.delete_pack_files(repo, &pack.name).await?;
            self.meta.forget_retired_pack(repo.id, &pack.name).await?;
            retired_deleted += 1;
        }

        let retired: HashSet<&str> = retired.iter().map(|p| p.name.as_str()).collect();
        // An unrecorded upload may belong to a push still running (S3 dates
        // a multipart upload from its start): never younger than an hour.
        let cutoff = SystemTime::now()
            .checked_sub(grace.max(MIN_ORPHAN_AGE))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut orphans: HashMap<&str, bool> = HashMap::new();
        for object in &listed {
            let Some(name) = stored_pack_name(&object.key) else {
                continue;
            };
            if recorded.contains(name) || retired.contains(name) {
                continue;
            }
            // Every file of the pack must be old enough.
            let old_enough = object.modified <= cutoff;
            orphans
                .entry(name)
                .and_modify(|all| *all &= old_enough)
                .or_insert(old_enough);
        }
        let mut orphans_deleted = 0;
        for (name, old_enough) in orphans {
            if old_enough {
                tracing::info!(repo = %repo.name, pack = name, "deleting an unrecorded upload");
                self.delete_pack_files(repo, name).await?;
                orphans_deleted += 1;
            }
        }
        Ok((retired_deleted, orphans_deleted))
    }

    /// Delete a pack's index, then the pack: readers find packs by index.
    async fn delete_pack_files(
        &self,
        repo: &Repository,
        name: &str,
    ) -> Result<(), MaintenanceError> {
        for extension in ["idx", "pack"] {
            self.store
                .delete(&pack_key(repo.id, name, extension))
                .await?;
        }
        Ok(())
    }
}

fn pack_prefix(repo: RepoId) -> String {
    format!("{}pack/", nimbus_types::storage::repo_prefix(repo))
}

/// Runs maintenance in the background of a server: compaction after pushes
/// that leave too many packs, garbage collection of every repository at an
/// interval. At most one run per repository at a time in this process
/// (runs in other processes are safe, only wasted work).
pub struct Maintainer {
    git: Arc<GitService>,
    meta: Arc<dyn MetadataStore>,
    config: MaintenanceConfig,
    running: Mutex<HashSet<RepoId>>,
    /// Repositories whose bundle is being written.
    bundling: Mutex<HashSet<RepoId>>,
}

impl std::fmt::Debug for Maintainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintainer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Maintainer {
    pub fn new(
        git: Arc<GitService>,
        meta: Arc<dyn MetadataStore>,
        config: MaintenanceConfig,
    ) -> Arc<Self> {
        Arc::new(Maintainer {
            git,
            meta,
            config,
            running: Mutex::new(HashSet::new()),
            bundling: Mutex::new(HashSet::new()),
        })
    }

    /// Call after a push to `repo`: compacts it in the background when it
    /// has more packs than the threshold, then writes a new bundle for
    /// `bundle-uri` when its newest is older than the refresh interval.
    pub fn after_push(self: &Arc<Self>, repo: Repository) {
        let this = self.clone();
        tokio::spawn(async move {
            match this.meta.packs(repo.id).await {
                Ok(packs) if packs.len() > this.config.compact_threshold => {
                    this.run(&repo, MaintenanceKind::Compact).await;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(repo = %repo.name, error = %error, "cannot count packs")
                }
            }
            this.refresh_bundle(&repo).await;
        });
    }

    /// Write a new bundle of `repo` if its newest is stale (see
    /// [`GitService::bundle_is_stale`]).
    async fn refresh_bundle(&self, repo: &Repository) {
        let Some(_running) = RunningGuard::enter(&self.bundling, repo.id) else {
            return;
        };
        let outcome = match self.git.bundle_is_stale(repo).await {
            Ok(true) => self.git.write_bundle(repo).await.map(Some),
            Ok(false) => Ok(None),
            Err(error) => Err(error.into()),
        };
        if let Err(error) = outcome {
            tracing::warn!(repo = %repo.name, error = %error, "writing a bundle failed");
        }
    }

    /// Garbage collect every repository now and then, forever.
    pub fn spawn_periodic(self: &Arc<Self>) {
        let Some(interval) = self.config.gc_interval else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate; let the server start first.
            ticker.tick().await;
            loop {
                ticker.tick().await;
                match this.meta.list_repositories().await {
                    Ok(repos) => {
                        for repo in repos {
                            this.run(&repo, MaintenanceKind::CollectGarbage).await;
                            this.refresh_bundle(&repo).await;
                        }
                    }
                    Err(error) => tracing::warn!(error = %error, "cannot list repositories"),
                }
            }
        });
    }

    async fn run(&self, repo: &Repository, kind: MaintenanceKind) {
        let Some(_running) = RunningGuard::enter(&self.running, repo.id) else {
            return;
        };
        if let Err(error) = self.git.maintain(repo, kind, self.config.grace).await {
            tracing::warn!(repo = %repo.name, ?kind, error = %error, "maintenance failed");
        } else if let Err(error) = self.git.update_reach_index(repo).await {
            tracing::warn!(repo = %repo.name, error = %error, "building the reachability index failed");
        }
    }
}

/// Marks a repository as being maintained until dropped (also when the run
/// panics, so the repository is not skipped forever).
struct RunningGuard<'a> {
    running: &'a Mutex<HashSet<RepoId>>,
    repo: RepoId,
}

impl<'a> RunningGuard<'a> {
    fn enter(running: &'a Mutex<HashSet<RepoId>>, repo: RepoId) -> Option<Self> {
        let mut set = running.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(repo).then(|| RunningGuard { running, repo })
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.repo);
    }
}

#[cfg(test)]
mod tests {
    use super::{RunningGuard, stored_pack_name};
    use nimbus_types::RepoId;
    use std::collections::HashSet;
    use std::sync::Mutex;

    #[test]
    fn one_run_per_repository_at_a_time() {
        let running = Mutex::new(HashSet::new());
        let first = RunningGuard::enter(&running, RepoId(1)).expect("nothing runs yet");
        // A refused second entry must not release the first one's mark.
        assert!(RunningGuard::enter(&running, RepoId(1)).is_none());
        assert!(RunningGuard::enter(&running, RepoId(1)).is_none());
        let other = RunningGuard::enter(&running, RepoId(2));
        assert!(other.is_some());
        drop(first);
        assert!(RunningGuard::enter(&running, RepoId(1)).is_some());
    }

    #[test]
    fn pack_names_of_stored_keys() {
        assert_eq!(
            stored_pack_name("repos/1/pack/pack-ab-01.idx"),
            Some("pack-ab-01")
        );
        assert_eq!(
            stored_pack_name("repos/1/pack/pack-ab.pack"),
            Some("pack-ab")
        );
        assert_eq!(stored_pack_name("repos/1/pack/probe"), None);
    }
}
