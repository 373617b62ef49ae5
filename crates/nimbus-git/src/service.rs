//! The git service: the async adapter between the protocol engine and the
//! storage backends. It takes a snapshot of a repository (refs from the
//! metadata store, packs materialised from the object store), runs the
//! engine on a blocking thread, and for pushes uploads the new pack before
//! one metadata transaction moves the refs.

use crate::advertise::{self, Head, ProtocolVersion};
use crate::objects::{ObjectDb, ObjectError};
use crate::pktline::{PacketReader, write_line};
use crate::receive_pack::details::push_details;
use crate::receive_pack::ingest::{self, IngestLimits, ReceivedPack};
use crate::receive_pack::report::{check_commands, reject_all, write_report};
use crate::receive_pack::request::{CommandError, read_request};
use crate::upload_pack::{self, ClonePackCache, RepoView};
use bstr::BString;
use bytes::Bytes;
use nimbus_store::{PackCache, PackCacheError};
use nimbus_types::events::{EventActor, EventRepository, PushDetail, ref_update_events};
use nimbus_types::metadata::{
    MetadataError, MetadataStore, PackRecord, PushRecord, RefUpdateRejection, RepoState,
};
use nimbus_types::storage::{ObjectStore, ObjectStoreError, pack_key};
use nimbus_types::unix_now;
use nimbus_types::{Ref, RefName, Repository};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

/// Which of the two git services a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    UploadPack,
    ReceivePack,
}

impl Service {
    pub fn name(&self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
        }
    }
}

/// Failures of the service that are not the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    PackCache(#[from] PackCacheError),
    #[error(transparent)]
    ObjectStore(#[from] ObjectStoreError),
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error("the default branch {name:?} is not a valid branch name")]
    BadDefaultBranch { name: String },
    #[error("I/O failed")]
    Io(#[from] io::Error),
    #[error("a worker thread failed")]
    Join(#[from] tokio::task::JoinError),
}

/// Settings of the git service.
#[derive(Debug, Clone)]
pub struct GitServiceConfig {
    /// Where received packs are staged before upload.
    pub staging_dir: PathBuf,
    pub ingest_limits: IngestLimits,
    /// Packs generated for clones, served again to identical requests (`None`: every pack is
    /// generated).
    pub clone_packs: Option<Arc<ClonePackCache>>,
    /// Bundles advertised to clones by the protocol v2 `bundle-uri` command
    /// (`None`: the command is not offered).
    pub bundle_uri: Option<crate::bundle_uri::BundleUriConfig>,
    /// Reachability indexes of full clones (`None`: every clone walks all
    /// commits and trees).
    pub reach: Option<Arc<upload_pack::ReachIndex>>,
}

/// A repository as one request sees it.
pub struct Snapshot {
    pub refs: Vec<Ref>,
    pub head: Head,
    pub db: ObjectDb,
    /// The packs `db` was opened over.
    pub packs: Vec<PackRecord>,
    /// The pack generation `db` was opened at (see `PushRecord`).
    pub pack_generation: i64,
    /// The ref version `refs` were read at.
    pub ref_version: i64,
}

/// How often `snapshot` materializes and opens a repository's packs before
/// giving up (a retry is needed only when the cache is emptied under it).
const SNAPSHOT_ATTEMPTS: u32 = 3;

/// Serves git for every repository.
pub struct GitService {
    pub(crate) meta: Arc<dyn MetadataStore>,
    pub(crate) store: Arc<dyn ObjectStore>,
    cache: PackCache,
    pub(crate) config: GitServiceConfig,
}

/// Chunks of response body, sent as they are produced; the bounded
/// channel is the back-pressure between the engine and the client.
pub type BodyReceiver = mpsc::Receiver<io::Result<Bytes>>;

/// How many times a push is checked again because garbage collection
/// replaced the packs under it, before it gives up.
const MAX_RECHECKS: usize = 3;

/// How many response chunks may wait for a slow client.
const RESPONSE_CHANNEL_CHUNKS: usize = 16;

/// `std::io::Write` into a bounded channel, for blocking engine threads.
struct ChannelWriter {
    sender: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

const CHANNEL_CHUNK: usize = 64 * 1024;

impl ChannelWriter {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHANNEL_CHUNK),
        ));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHANNEL_CHUNK {
            self.send_buf()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

impl GitService {
    pub fn new(
        meta: Arc<dyn MetadataStore>,
        store: Arc<dyn ObjectStore>,
        cache: PackCache,
        config: GitServiceConfig,
    ) -> Self {
        GitService {
            meta,
            store,
            cache,
            config,
        }
    }

    /// Read the repository's refs and make its packs available locally.
    pub async fn snapshot(&self, repo: &Repository) -> Result<Snapshot, ServiceError> {
        let mut attempt = 1;
        loop {
            let state = self.meta.repo_state(repo.id).await?;
            match self.open_packs(repo, &state.packs).await {
                Ok(db) => {
                    let RepoState {
                        refs,
                        packs,
                        pack_generation,
                        ref_version,
                    } = state;
                    let head = Head::resolve(head_branch(repo)?, &refs);
                    return Ok(Snapshot {
                        refs,
                        head,
                        db,
                        packs,
                        pack_generation,
                        ref_version,
                    });
                }
                // Maintenance replaced a pack and deleted it after the list
                // was read (possible with a short grace period): read again.
                Err(ServiceError::PackCache(error))
                    if error.is_missing_pack() && attempt < SNAPSHOT_ATTEMPTS =>
                {
                    tracing::info!(repo = repo.id.0, attempt, error = %error, "a pack is gone; reading the pack list again");
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Materialise `packs` and open them as one object database.
    async fn open_packs(
        &self,
        repo: &Repository,
        packs: &[PackRecord],
    ) -> Result<ObjectDb, ServiceError> {
        let pack_count = packs.len();
        let mut attempt = 1;
        loop {
            // The database owns the lease: the snapshot directory and the
            // pins on its packs live until the last clone of `db` drops.
            let lease = self.cache.materialize(repo.id, packs).await?;
            let objects_dir = lease.objects_dir().to_owned();
            let opened = tokio::task::spawn_blocking(move || {
                ObjectDb::open_keeping(&objects_dir, pack_count, lease)
            })
            .await?;
            match opened {
                Ok(db) => return Ok(db),
                // The cache can be emptied at any time, also between
                // materializing and opening; the next attempt fetches again.
                Err(error) if attempt < SNAPSHOT_ATTEMPTS => {
                    tracing::info!(repo = repo.id.0, attempt, error = %error, "pack snapshot unusable; retrying");
                    attempt += 1;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The body of `GET info/refs?service=...` (without the HTTP-only
    /// `# service=` preamble, which the web layer adds for v0/v1).
    pub async fn advertise(
        &self,
        repo: &Repository,
        service: Service,
        version: ProtocolVersion,
    ) -> Result<Vec<u8>, ServiceError> {
        let mut out = Vec::new();
        if version == ProtocolVersion::V2 && service == Service::UploadPack {
            advertise::write_v2_capabilities(&mut out, self.config.bundle_uri.is_some())?;
            return Ok(out);
        }
        let refs = self.meta.refs(repo.id).await?;
        match service {
            Service::UploadPack => {
                let head = Head::resolve(head_branch(repo)?, &refs);
                advertise::write_upload_pack_v0(&mut out, version, &refs, &head)?;
            }
            Service::ReceivePack => advertise::write_receive_pack_v0(&mut out, version, &refs)?,
        }
        Ok(out)
    }

    /// Answer one upload-pack request. The response streams through the
    /// returned channel while the engine works on a blocking thread.
    pub async fn upload_pack(
        &self,
        repo: &Repository,
        version: ProtocolVersion,
        body: Vec<u8>,
    ) -> Result<BodyReceiver, ServiceError> {
        let v2_command = (version == ProtocolVersion::V2)
            .then(|| v2_command_name(&body))
            .flatten();
        if v2_command.as_deref() == Some(b"ls-refs".as_slice()) {
            // Refs only: no packs to materialize and open.
            let refs = self.meta.refs(repo.id).await?;
            let head = Head::resolve(head_branch(repo)?, &refs);
            let mut response = Vec::new();
            upload_pack::serve_v2_ls_refs(&refs, &head, &body, &mut response)?;
            return Ok(single_chunk(response).await);
        }
        if v2_command.as_deref() == Some(b"bundle-uri".as_slice())
            && self.config.bundle_uri.is_some()
        {
            let response = match self.bundle_uri_response(repo).await {
                Ok(response) => response,
                Err(error) => {
                    // The clone goes on without bundles.
                    tracing::warn!(repo = %repo.name, error = %error, "cannot list bundles");
                    let mut empty = Vec::new();
                    crate::pktline::write_flush(&mut empty)?;
                    empty
                }
            };
            return Ok(single_chunk(response).await);
        }
        let snapshot = self.snapshot(repo).await?;
        let (sender, receiver) = mpsc::channel(RESPONSE_CHANNEL_CHUNKS);
        let repo_name = repo.name.to_string();
        let repo_id = repo.id.0;
        let clone_packs = self.config.clone_packs.clone();
        let reach = self.config.reach.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = ChannelWriter {
                sender: sender.clone(),
                buf: Vec::with_capacity(CHANNEL_CHUNK),
            };
            let view = RepoView {
                db: &snapshot.db,
                refs: &snapshot.refs,
                head: &snapshot.head,
                repo_id,
                clone_packs: clone_packs.as_deref(),
                pack_generation: snapshot.pack_generation,
                reach: reach.as_deref(),
                commit_graph: reach
                    .as_ref()
                    .and_then(|r| r.graph(repo_id, snapshot.pack_generation))
                    .map(|graph| graph as Arc<dyn crate::objects::CommitSource>),
            };
            let result = if version == ProtocolVersion::V2 {
                upload_pack::serve_v2(&view, &body, &mut out)
            } else {
                upload_pack::serve_v0(&view, &body, &mut out)
            };
            let result = result.and_then(|summary| out.flush().map(|_| summary));
            match result {
                Ok(summary) => {
                    if let Some(message) = &summary.client_error {
                        tracing::info!(repo = %repo_name, error = %message, "upload-pack refused a request");
                    }
                    if let Some(pack) = &summary.pack {
                        tracing::info!(
                            repo = %repo_name,
                            command = summary.command,
                            objects = pack.objects,
                            copied = pack.copied_from_pack,
                            thin_deltas = pack.thin_deltas,
                            recompressed = pack.recompressed,
                            from_cache = pack.from_cache,
                            from_index = pack.from_index,
                            sizes_from_pack_index = pack.sizes_from_pack_index,
                            whole_pack = pack.whole_pack,
                            "sent pack"
                        );
                    }
                }
                Err(err) => {
                    tracing::warn!(repo = %repo_name, error = %err, "upload-pack ended early");
                    let _ = sender.blocking_send(Err(err));
                }
            }
        });
        Ok(receiver)
    }

    /// `commit`'s files as an archive, streamed as it is written; an error
    /// part-way ends the stream with that error (the download is cut).
    pub async fn archive(
        &self,
        repo: &Repository,
        commit: gix_hash::ObjectId,
        prefix: String,
        format: crate::archive::ArchiveFormat,
    ) -> Result<BodyReceiver, ServiceError> {
        let snapshot = self.snapshot(repo).await?;
        let (sender, receiver) = mpsc::channel(RESPONSE_CHANNEL_CHUNKS);
        let repo_name = repo.name.to_string();
        tokio::task::spawn_blocking(move || {
            let out = ChannelWriter {
                sender: sender.clone(),
                buf: Vec::with_capacity(CHANNEL_CHUNK),
            };
            let mut objects = crate::objects::Objects::new(snapshot.db.handle());
            let written = crate::archive::write_archive(&mut objects, commit, &prefix, format, out)
                .map_err(io::Error::other)
                .and_then(|mut out| out.flush());
            if let Err(err) = written {
                tracing::warn!(repo = %repo_name, error = %err, "an archive ended early");
                let _ = sender.blocking_send(Err(err));
            }
        });
        Ok(receiver)
    }

    /// Receive one push: commands and pack from `body`; returns the report.
    /// `pusher` is named in the push's events.
    pub async fn receive_pack(
        &self,
        repo: &Repository,
        pusher: Option<EventActor>,
        body: impl AsyncRead + Send + Unpin + 'static,
    ) -> Result<Vec<u8>, ServiceError> {
        let snapshot = self.snapshot(repo).await?;
        let current_branch = snapshot.head.symref.clone();
        tokio::fs::create_dir_all(&self.config.staging_dir).await?;
        let staging = tempfile::Builder::new()
            .prefix("receive-")
            .tempdir_in(&self.config.staging_dir)?;
        let staging_path = staging.path().to_owned();
        let limits = self.config.ingest_limits;
        let db = snapshot.db.clone();

        // Read commands and the pack on a blocking thread.
        let prepared = tokio::task::spawn_blocking(move || {
            let bridge = tokio_util::io::SyncIoBridge::new(body);
            let mut reader = PacketReader::new(bridge);
            let request = match read_request(&mut reader) {
                Ok(request) => request,
                Err(err) => return Prepared::BadRequest(err),
            };
            let received = if request.expects_pack() {
                match ingest::ingest(reader.into_inner(), &staging_path, &db, limits) {
                    Ok(received) => received.map(Box::new),
                    Err(err) => {
                        return Prepared::UnpackFailed {
                            request,
                            error: err.to_string(),
                        };
                    }
                }
            } else {
                None
            };
            let checked =
                check_commands(&request.commands, received.as_deref(), &db, &current_branch);
            let accepted: Vec<_> = checked
                .iter()
                .filter_map(|c| c.as_ref().ok().cloned())
                .collect();
            let details = push_details(&accepted, received.as_deref(), &db);
            Prepared::Ready {
                request,
                received,
                checked,
                details,
            }
        })
        .await?;

        let mut out = Vec::new();
        let (request, received, checked, details) = match prepared {
            Prepared::BadRequest(CommandError::Empty) => {
                // git probes with a lone flush before a large chunked push
                // (remote-curl's probe_rpc); receive-pack answers nothing.
                return Ok(out);
            }
            Prepared::BadRequest(err) => {
                tracing::info!(repo = %repo.name, error = %err, "refused push request");
                write_line(&mut out, format!("ERR {err}"))?;
                return Ok(out);
            }
            Prepared::UnpackFailed { request, error } => {
                tracing::info!(repo = %repo.name, error = %error, "refused pack");
                let results = reject_all(&request.commands, "unpacker error");
                write_report(&mut out, &request.capabilities, Err(error), &results)?;
                return Ok(out);
            }
            Prepared::Ready {
                request,
                received,
                checked,
                details,
            } => (request, received, checked, details),
        };

        let mut results: Vec<(BString, Result<(), String>)> = Vec::new();
        let any_refused = checked.iter().any(|c| c.is_err());
        if request.capabilities.atomic && any_refused {
            for (command, check) in request.commands.iter().zip(&checked) {
                let result = match check {
                    Err(reason) => Err(reason.clone()),
                    Ok(_) => Err("atomic push failure".to_owned()),
                };
                results.push((command.name.clone(), result));
            }
        } else {
            let updates: Vec<_> = checked
                .iter()
                .filter_map(|c| c.as_ref().ok().cloned())
                .collect();
            let outcomes = if updates.is_empty() {
                Vec::new()
            } else {
                let packs = match &received {
                    Some(pack) => vec![self.upload(repo, pack).await?],
                    None => Vec::new(),
                };
                let repository = EventRepository {
                    id: repo.id.0,
                    name: repo.name.to_string(),
                };
                let now = unix_now();
                let events = updates
                    .iter()
                    .zip(details)
                    .map(|(update, detail)| {
                        ref_update_events(&repository, pusher.as_ref(), update, detail, now)
                    })
                    .collect();
                let mut record = PushRecord {
                    packs: packs.clone(),
                    updates,
                    atomic: request.capabilities.atomic,
                    pack_generation: snapshot.pack_generation,
                    events,
                };
                let mut received = received;
                let mut attempts = 0;
                let outcomes = loop {
                    match self.meta.apply_push(repo.id, &record).await {
                        Err(MetadataError::PacksReplaced) if attempts < MAX_RECHECKS => {
                            attempts += 1;
                            let (fresh, pack, still_valid) = self
                                .recheck_push(repo, received, &request.commands, &record.updates)
                                .await?;
                            received = pack;
                            if !still_valid {
                                break record
                                    .updates
                                    .iter()
                                    .map(|_| Err(RefUpdateRejection::ObjectsRemoved))
                                    .collect();
                            }
                            record.pack_generation = fresh;
                        }
                        result => break result?,
                    }
                };
                if !outcomes.iter().any(|o| o.is_ok()) {
                    for pack in &packs {
                        self.remove_pack(repo, &pack.name).await;
                    }
                }
                outcomes
            };
            let mut outcomes = outcomes.into_iter();
            for (command, check) in request.commands.iter().zip(&checked) {
                let result = match check {
                    Err(reason) => Err(reason.clone()),
                    Ok(_) => match outcomes.next() {
                        Some(Ok(())) => Ok(()),
                        Some(Err(RefUpdateRejection::Stale { .. })) => Err(
                            "failed to update ref: it was changed by another push; fetch and try again"
                                .to_owned(),
                        ),
                        Some(Err(RefUpdateRejection::NameConflict { existing })) => Err(format!(
                            "cannot lock ref '{}': '{}' exists; cannot create '{}'",
                            command.name, existing, command.name
                        )),
                        Some(Err(RefUpdateRejection::ObjectsRemoved)) => Err(
                            "objects this push needs were removed by garbage collection while it ran; push again"
                                .to_owned(),
                        ),
                        Some(Err(RefUpdateRejection::AtomicPushFailed)) | None => {
                            Err("atomic push failure".to_owned())
                        }
                    },
                };
                results.push((command.name.clone(), result));
            }
        }
        for (name, result) in &results {
            match result {
                Ok(()) => tracing::info!(repo = %repo.name, r#ref = %name, "ref updated"),
                Err(reason) => {
                    tracing::info!(repo = %repo.name, r#ref = %name, %reason, "ref update refused")
                }
            }
        }
        write_report(&mut out, &request.capabilities, Ok(()), &results)?;
        drop(staging);
        Ok(out)
    }

    /// Commit `request` (an edit made in the web UI) to `branch` as if it
    /// were pushed: refused with `Conflict` unless the branch is at
    /// `request.parent`; otherwise the objects go through receive-pack
    /// (ingest, upload, `apply_push`'s compare-and-swap, events by `actor`).
    /// Returns the new commit. See [`crate::edit`].
    pub async fn commit_edit(
        &self,
        repo: &Repository,
        actor: Option<EventActor>,
        branch: &str,
        request: crate::edit::CommitRequest,
    ) -> Result<gix_hash::ObjectId, crate::edit::CommitEditError> {
        crate::edit::commit_edit(self, repo, actor, branch, request).await
    }

    /// Check a received push again against the repository's current packs,
    /// after garbage collection replaced the ones it was checked against.
    /// Returns the new pack generation, the pack (handed back), and whether
    /// everything the push refers to still exists.
    async fn recheck_push(
        &self,
        repo: &Repository,
        received: Option<Box<ReceivedPack>>,
        commands: &[crate::receive_pack::request::Command],
        updates: &[nimbus_types::RefUpdate],
    ) -> Result<(i64, Option<Box<ReceivedPack>>, bool), ServiceError> {
        let fresh = self.snapshot(repo).await?;
        let commands = commands.to_vec();
        let updates = updates.to_vec();
        let current_branch = fresh.head.symref.clone();
        let db = fresh.db.clone();
        let (received, valid) = tokio::task::spawn_blocking(move || {
            let objects_ok = received
                .as_deref()
                .is_none_or(|pack| ingest::check_objects(&pack.bundle, &db).is_ok());
            let checked = check_commands(&commands, received.as_deref(), &db, &current_branch);
            let still_checked: Vec<_> = checked.into_iter().filter_map(Result::ok).collect();
            (received, objects_ok && still_checked == updates)
        })
        .await?;
        tracing::info!(repo = %repo.name, valid, "push checked again after garbage collection");
        Ok((fresh.pack_generation, received, valid))
    }

    /// Upload a received pack and its index; the pack goes first, so an
    /// index in the store always has its pack. The stored name gets a
    /// unique upload id (see `PackRecord`).
    pub(crate) async fn upload(
        &self,
        repo: &Repository,
        pack: &ReceivedPack,
    ) -> Result<PackRecord, ServiceError> {
        let name = format!("{}-{:016x}", pack.name, rand::random::<u64>());
        self.store
            .put_file(&pack_key(repo.id, &name, "pack"), &pack.pack_path)
            .await?;
        self.store
            .put_file(&pack_key(repo.id, &name, "idx"), &pack.index_path)
            .await?;
        Ok(PackRecord {
            name,
            pack_size: pack.pack_size,
            index_size: pack.index_size,
            object_count: pack.object_count,
            created_at: unix_now(),
        })
    }

    /// Remove an unreferenced upload (best effort; garbage collection
    /// catches what this misses).
    pub(crate) async fn remove_pack(&self, repo: &Repository, name: &str) {
        for extension in ["idx", "pack"] {
            if let Err(err) = self.store.delete(&pack_key(repo.id, name, extension)).await {
                tracing::warn!(repo = %repo.name, pack = name, error = %err, "could not remove unused pack");
            }
        }
    }

    /// Remove everything stored for a deleted repository.
    pub async fn purge(&self, repo: &Repository) -> Result<(), ServiceError> {
        let prefix = nimbus_types::storage::repo_prefix(repo.id);
        for object in self.store.list(&prefix).await? {
            self.store.delete(&object.key).await?;
        }
        self.cache.evict_repo(repo.id).await?;
        if let Some(reach) = &self.config.reach {
            reach.remove(repo.id.0);
        }
        Ok(())
    }

    /// Bring the repository's reachability index up to its refs: from the
    /// existing index (a walk of what was pushed since), or by a full walk
    /// when there is none for the current pack generation (after gc).
    /// Returns whether an index was written.
    pub async fn update_reach_index(&self, repo: &Repository) -> Result<bool, ExportError> {
        let Some(reach) = self.config.reach.clone() else {
            return Ok(false);
        };
        let snapshot = self.snapshot(repo).await?;
        if snapshot.refs.is_empty() {
            return Ok(false);
        }
        let repo_id = repo.id.0;
        let updated = tokio::task::spawn_blocking(move || -> Result<bool, ExportError> {
            let existing = reach.load(repo_id, snapshot.pack_generation);
            // What a clone of every ref asks for.
            let request = upload_pack::request::FetchRequest {
                wants: snapshot.refs.iter().map(|r| r.target).collect(),
                done: true,
                ofs_delta: true,
                include_tag: true,
                ..Default::default()
            };
            let mut objects = crate::objects::Objects::new(snapshot.db.handle());
            let clone = upload_pack::reach::plan_clone(
                &mut objects,
                &request,
                &upload_pack::plan::ShallowPlan::default(),
                &snapshot.refs,
                existing,
            )?;
            if !clone.from_index {
                // A full walk parsed every commit: keep them.
                let graph = upload_pack::reach::CommitGraph::build(
                    snapshot.pack_generation,
                    objects.parsed_commits(),
                );
                reach
                    .store_graph(repo_id, &graph)
                    .map_err(ServiceError::from)?;
            }
            if clone.index_current {
                return Ok(false);
            }
            let index = upload_pack::reach::ReachSnapshot {
                generation: snapshot.pack_generation,
                tips: clone.tips,
                objects: clone.plan.objects,
            };
            reach.store(repo_id, &index).map_err(ServiceError::from)?;
            Ok(true)
        })
        .await
        .map_err(ServiceError::from)??;
        Ok(updated)
    }
}

enum Prepared {
    BadRequest(CommandError),
    UnpackFailed {
        request: crate::receive_pack::request::PushRequest,
        error: String,
    },
    Ready {
        request: crate::receive_pack::request::PushRequest,
        received: Option<Box<ReceivedPack>>,
        checked: Vec<Result<nimbus_types::RefUpdate, String>>,
        /// For each accepted update, in order.
        details: Vec<nimbus_types::events::PushDetail>,
    },
}

/// The full name of the branch `HEAD` points at.
fn head_branch(repo: &Repository) -> Result<RefName, ServiceError> {
    RefName::new(format!("refs/heads/{}", repo.default_branch).as_bytes()).map_err(|_| {
        ServiceError::BadDefaultBranch {
            name: repo.default_branch.clone(),
        }
    })
}

/// Why an import was refused. Messages go to users.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("repository '{name}' is not empty: import only into a new repository")]
    NotEmpty { name: String },
    #[error("nothing to import: the source has no branches or tags")]
    NoRefs,
    #[error("the pack was refused: {0}")]
    Pack(#[from] ingest::IngestError),
    #[error("ref {name}: {reason}")]
    Ref { name: String, reason: String },
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<MetadataError> for ImportError {
    fn from(err: MetadataError) -> Self {
        ImportError::Service(err.into())
    }
}

/// What an import stored.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    pub refs: usize,
    pub objects: u64,
    pub pack_bytes: u64,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("repository '{name}' is empty: there is nothing to export")]
    Empty { name: String },
    #[error("planning the pack failed")]
    Plan(#[from] upload_pack::plan::PlanError),
    #[error("writing the pack failed")]
    Pack(#[from] upload_pack::pack::PackError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub refs: usize,
    pub objects: usize,
}

/// Moving whole repositories in and out: an imported pack takes the push
/// path (ingest with every object check, upload, one atomic `apply_push`
/// creating all refs); an export is a bundle holding the pack a full clone
/// would get.
impl GitService {
    /// Import `pack` (a complete pack stream) and create `refs` in `repo`,
    /// which must be empty. All refs are created in one transaction, or
    /// none is.
    pub async fn import_pack(
        &self,
        repo: &Repository,
        pack: impl io::Read + Send + 'static,
        refs: Vec<(RefName, gix_hash::ObjectId)>,
    ) -> Result<ImportSummary, ImportError> {
        if refs.is_empty() {
            return Err(ImportError::NoRefs);
        }
        let snapshot = self.snapshot(repo).await?;
        if !snapshot.refs.is_empty() || !self.meta.packs(repo.id).await?.is_empty() {
            return Err(ImportError::NotEmpty {
                name: repo.name.to_string(),
            });
        }
        let current_branch = snapshot.head.symref.clone();
        tokio::fs::create_dir_all(&self.config.staging_dir)
            .await
            .map_err(ServiceError::from)?;
        let staging = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(&self.config.staging_dir)
            .map_err(ServiceError::from)?;
        let staging_path = staging.path().to_owned();
        let limits = self.config.ingest_limits;
        let db = snapshot.db.clone();
        let commands: Vec<crate::receive_pack::request::Command> = refs
            .iter()
            .map(|(name, id)| crate::receive_pack::request::Command {
                old: gix_hash::ObjectId::null(gix_hash::Kind::Sha1),
                new: *id,
                name: name.as_bstr().to_owned(),
            })
            .collect();
        let (received, checked) = tokio::task::spawn_blocking(move || {
            let received = ingest::ingest(pack, &staging_path, &db, limits)?;
            let checked = check_commands(&commands, received.as_ref(), &db, &current_branch);
            Ok::<_, ImportError>((received, checked))
        })
        .await
        .map_err(ServiceError::from)??;
        let mut updates = Vec::with_capacity(checked.len());
        for ((name, _), check) in refs.iter().zip(checked) {
            match check {
                Ok(update) => updates.push(update),
                Err(reason) => {
                    return Err(ImportError::Ref {
                        name: name.to_string(),
                        reason,
                    });
                }
            }
        }
        let Some(received) = received else {
            // check_commands found every target, so this cannot be reached
            // with refs; an empty pack with refs was refused above.
            return Err(ImportError::NoRefs);
        };
        let pack = self.upload(repo, &received).await?;
        // Imports list no commits in their events (whole histories).
        let repository = EventRepository {
            id: repo.id.0,
            name: repo.name.to_string(),
        };
        let now = unix_now();
        let events = updates
            .iter()
            .map(|update| ref_update_events(&repository, None, update, PushDetail::default(), now))
            .collect();
        let record = PushRecord {
            packs: vec![pack.clone()],
            updates,
            atomic: true,
            pack_generation: snapshot.pack_generation,
            events,
        };
        let outcomes = self.meta.apply_push(repo.id, &record).await?;
        if let Some((index, rejection)) = outcomes
            .iter()
            .enumerate()
            .find_map(|(i, o)| o.as_ref().err().map(|r| (i, r)))
        {
            self.remove_pack(repo, &pack.name).await;
            let reason = match rejection {
                RefUpdateRejection::Stale { .. } => {
                    "it was created by someone else during the import".to_owned()
                }
                RefUpdateRejection::NameConflict { existing } => {
                    format!("'{existing}' exists")
                }
                RefUpdateRejection::AtomicPushFailed => "another ref was refused".to_owned(),
                RefUpdateRejection::ObjectsRemoved => {
                    "its objects were removed during the import".to_owned()
                }
            };
            let name = record
                .updates
                .get(index)
                .map(|u| u.name.to_string())
                .unwrap_or_default();
            return Err(ImportError::Ref { name, reason });
        }
        tracing::info!(
            repo = %repo.name,
            refs = record.updates.len(),
            objects = received.object_count,
            "imported"
        );
        drop(staging);
        Ok(ImportSummary {
            refs: record.updates.len(),
            objects: received.object_count,
            pack_bytes: received.pack_size,
        })
    }

    /// Write `repo` as a v2 git bundle to `out`: every ref (and `HEAD` when
    /// its branch exists), then the pack a full clone would get, streamed.
    pub async fn export_bundle(
        &self,
        repo: &Repository,
        out: impl Write + Send + 'static,
    ) -> Result<ExportSummary, ExportError> {
        let snapshot = self.snapshot(repo).await?;
        export_snapshot(snapshot, repo, out).await
    }
}

/// The command of a v2 request body, to answer `ls-refs` (refs only) and
/// `bundle-uri` (the object store) without opening the repository's packs.
fn v2_command_name(body: &[u8]) -> Option<Vec<u8>> {
    match upload_pack::request::parse_v2_command(body) {
        Ok(Some(command)) => Some(command.command.into()),
        _ => None,
    }
}

/// A response body that is already complete.
async fn single_chunk(response: Vec<u8>) -> BodyReceiver {
    let (sender, receiver) = mpsc::channel(1);
    // The receiver is returned below; it cannot be gone yet.
    let _ = sender.send(Ok(Bytes::from(response))).await;
    receiver
}

/// Write `snapshot` of `repo` as a v2 git bundle to `out` (see
/// [`GitService::export_bundle`]).
pub(crate) async fn export_snapshot(
    snapshot: Snapshot,
    repo: &Repository,
    out: impl Write + Send + 'static,
) -> Result<ExportSummary, ExportError> {
    if snapshot.refs.is_empty() {
        return Err(ExportError::Empty {
            name: repo.name.to_string(),
        });
    }
    let repo_name = repo.name.to_string();
    tokio::task::spawn_blocking(move || {
        let mut out = io::BufWriter::with_capacity(256 * 1024, out);
        let refs: Vec<(RefName, gix_hash::ObjectId)> = snapshot
            .refs
            .iter()
            .map(|r| (r.name.clone(), r.target))
            .collect();
        crate::bundle::write_header_v2(&mut out, snapshot.head.target, &refs)
            .map_err(ServiceError::from)?;
        let mut objects = crate::objects::Objects::new(snapshot.db.handle());
        let request = upload_pack::request::FetchRequest {
            wants: refs.iter().map(|(_, id)| *id).collect(),
            done: true,
            ofs_delta: true,
            ..Default::default()
        };
        let plan = upload_pack::plan::plan_pack(
            &mut objects,
            &request,
            &[],
            &upload_pack::plan::ShallowPlan::default(),
            &snapshot.refs,
        )?;
        let stats = upload_pack::pack::write_pack(&objects.handle, &plan, false, &mut out)?;
        out.flush().map_err(ServiceError::from)?;
        tracing::info!(repo = %repo_name, refs = refs.len(), objects = stats.objects, "exported");
        Ok(ExportSummary {
            refs: refs.len(),
            objects: stats.objects,
        })
    })
    .await
    .map_err(ServiceError::from)?
}
