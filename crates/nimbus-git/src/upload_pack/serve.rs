//! The upload-pack conversation: read one stateless request, answer with
//! acknowledgments, shallow information and a pack, for protocol v0/v1 and
//! v2. Client mistakes are answered in-band (`ERR` lines or side-band error
//! messages); only I/O failures of the response sink are returned.

use super::cache::{ClonePackCache, Lookup, Tee};
use super::pack::{PackStats, write_pack};
use super::plan::{self, Negotiation, PlanError, ShallowPlan};
use super::reach::{self, ReachIndex, ReachSnapshot};
use super::request::{self, FetchRequest, MultiAck, RequestError, SideBand};
use crate::advertise::{Head, write_ls_refs};
use crate::objects::{CommitSource, ObjectDb, Objects};
use crate::pktline::{
    Band, MAX_SIDEBAND_DATA_LEN, SMALL_SIDEBAND_DATA_LEN, SidebandWriter, write_delim, write_flush,
    write_line, write_sideband,
};
use gix_hash::ObjectId;
use nimbus_types::Ref;
use std::io::{self, Write};
use std::sync::Arc;

/// What a repository looks like to one request.
pub struct RepoView<'a> {
    pub db: &'a ObjectDb,
    pub refs: &'a [Ref],
    pub head: &'a Head,
    /// The repository's id: the scope of its entries in `clone_packs`.
    pub repo_id: i64,
    /// Where packs for requests without haves are kept and served again.
    pub clone_packs: Option<&'a ClonePackCache>,
    /// The pack generation `db` was opened at (reachability indexes are
    /// valid for one generation).
    pub pack_generation: i64,
    /// Full clones are planned from, and update, this index.
    pub reach: Option<&'a ReachIndex>,
    /// The repository's commits, parsed (from `reach`).
    pub commit_graph: Option<Arc<dyn CommitSource>>,
}

/// A failure to serve, before any pack data was sent.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("the response could not be written")]
    Io(#[from] io::Error),
}

/// What happened, for logs and metrics.
#[derive(Debug, Default)]
pub struct Summary {
    pub command: &'static str,
    pub pack: Option<PackStats>,
    /// A client error reported in-band.
    pub client_error: Option<String>,
}

/// Writes pkt-lines, wrapped in side-band 1 when `sideband-all` is on.
struct Lines<'w, W: Write> {
    out: &'w mut W,
    sideband_all: bool,
}

impl<W: Write> Lines<'_, W> {
    fn line(&mut self, text: impl AsRef<[u8]>) -> io::Result<()> {
        if self.sideband_all {
            let mut data = text.as_ref().to_vec();
            data.push(b'\n');
            write_sideband(self.out, Band::Data, &data)
        } else {
            write_line(self.out, text)
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        write_flush(self.out)
    }
    fn delim(&mut self) -> io::Result<()> {
        write_delim(self.out)
    }
}

fn write_err(out: &mut impl Write, message: &str) -> io::Result<()> {
    write_line(out, format!("ERR {message}"))
}

/// Resolve wanted objects to the commits they peel to. Unknown wants are an
/// error, as with git.
fn want_commits(objects: &mut Objects, wants: &[ObjectId]) -> Result<Vec<ObjectId>, PlanError> {
    let mut commits = Vec::new();
    for want in wants {
        if !objects.contains(want) {
            return Err(PlanError::NotOurRef { id: *want });
        }
        let (peeled, kind) = objects.peel(want)?;
        if kind == gix_object::Kind::Commit {
            commits.push(peeled);
        }
    }
    Ok(commits)
}

fn progress(out: &mut impl Write, request: &FetchRequest, text: &str) -> io::Result<()> {
    if request.no_progress || request.side_band == SideBand::None {
        return Ok(());
    }
    write_sideband(out, Band::Progress, text.as_bytes())
}

/// Plan and send the pack, multiplexed as the client asked.
fn send_pack(
    out: &mut impl Write,
    objects: &mut Objects,
    request: &FetchRequest,
    common: &[ObjectId],
    shallow: &ShallowPlan,
    view: &RepoView<'_>,
) -> Result<PackStats, ServeError> {
    let cache = view.clone_packs.and_then(|cache| {
        ClonePackCache::key(view.repo_id, request, common, view.refs).map(|key| (cache, key))
    });
    let mut fill = None;
    if let Some((cache, key)) = &cache {
        match cache.lookup(key) {
            Lookup::Hit(file, count) => {
                progress(
                    out,
                    request,
                    &format!("Enumerating objects: {count}, done.\n"),
                )?;
                send_cached(out, request, file)?;
                return Ok(PackStats {
                    objects: count as usize,
                    from_cache: true,
                    ..PackStats::default()
                });
            }
            Lookup::Fill(started) => fill = Some(started),
            Lookup::Miss => {}
        }
    }
    let reach = view
        .reach
        .filter(|_| reach::eligible(request, common, shallow));
    let planned = match reach {
        Some(index) => {
            let snapshot = index.load(view.repo_id, view.pack_generation);
            reach::plan_clone(objects, request, shallow, view.refs, snapshot).map(|clone| {
                let stale = !clone.index_current;
                (clone.plan, clone.from_index, stale.then_some(clone.tips))
            })
        }
        None => plan::plan_pack(objects, request, common, shallow, view.refs)
            .map(|plan| (plan, false, None)),
    };
    let (plan, from_index, new_tips) = match planned {
        Ok(planned) => planned,
        Err(err) => {
            // The client already expects pack data: report on band 3.
            if request.side_band != SideBand::None {
                write_sideband(out, Band::Error, format!("{err}\n").as_bytes())?;
                write_flush(out)?;
            }
            return Err(err.into());
        }
    };
    progress(
        out,
        request,
        &format!("Enumerating objects: {}, done.\n", plan.objects.len()),
    )?;
    let result = match sideband_max(request) {
        None => {
            let tee = Tee {
                out: &mut *out,
                fill: &mut fill,
            };
            write_pack(&objects.handle, &plan, request.thin_pack, tee)
        }
        Some(max) => {
            let mut sideband = SidebandWriter::with_max(&mut *out, Band::Data, max);
            let tee = Tee {
                out: &mut sideband,
                fill: &mut fill,
            };
            let result = write_pack(&objects.handle, &plan, request.thin_pack, tee);
            sideband.finish()?;
            result
        }
    };
    match result {
        Ok(mut stats) => {
            if let Some(fill) = fill {
                fill.commit(stats.checksum);
            }
            stats.from_index = from_index;
            if let (Some(index), Some(tips)) = (reach, new_tips) {
                let snapshot = ReachSnapshot {
                    generation: view.pack_generation,
                    tips,
                    objects: plan.objects,
                };
                if let Err(error) = index.store(view.repo_id, &snapshot) {
                    tracing::warn!(error = %error, "cannot write the reachability index");
                }
            }
            if request.side_band != SideBand::None {
                write_flush(out)?;
            }
            Ok(stats)
        }
        Err(err) => {
            tracing::error!(error = %err, "pack generation failed");
            if request.side_band != SideBand::None {
                write_sideband(out, Band::Error, b"pack generation failed on the server\n")?;
                write_flush(out)?;
            }
            Err(ServeError::Io(io::Error::other(err)))
        }
    }
}

/// The largest side-band packet the client takes, or `None` without side-band.
fn sideband_max(request: &FetchRequest) -> Option<usize> {
    match request.side_band {
        SideBand::None => None,
        SideBand::Small => Some(SMALL_SIDEBAND_DATA_LEN),
        SideBand::Large => Some(MAX_SIDEBAND_DATA_LEN),
    }
}

/// Streams a cached pack as the client asked for it (side-band or not).
fn send_cached(
    out: &mut impl Write,
    request: &FetchRequest,
    mut file: std::fs::File,
) -> io::Result<()> {
    match sideband_max(request) {
        None => {
            io::copy(&mut file, out)?;
        }
        Some(max) => {
            let mut sideband = SidebandWriter::with_max(&mut *out, Band::Data, max);
            io::copy(&mut file, &mut sideband)?;
            sideband.finish()?;
            write_flush(out)?;
        }
    }
    Ok(())
}

fn client_error(
    out: &mut impl Write,
    command: &'static str,
    err: ServeError,
) -> io::Result<Summary> {
    match err {
        ServeError::Io(err) => Err(err),
        err => {
            let message = err.to_string();
            write_err(out, &message)?;
            Ok(Summary {
                command,
                pack: None,
                client_error: Some(message),
            })
        }
    }
}

/// Serve one stateless v0/v1 upload-pack request.
pub fn serve_v0(view: &RepoView<'_>, body: &[u8], out: &mut impl Write) -> io::Result<Summary> {
    match serve_v0_inner(view, body, out) {
        Ok(summary) => Ok(summary),
        Err(err) => client_error(out, "upload-pack", err),
    }
}

fn serve_v0_inner(
    view: &RepoView<'_>,
    body: &[u8],
    out: &mut impl Write,
) -> Result<Summary, ServeError> {
    let request = request::parse_v0(body)?;
    let mut summary = Summary {
        command: "upload-pack",
        ..Summary::default()
    };
    if request.wants.is_empty() {
        // Nothing wanted (e.g. everything up to date): git sends nothing.
        return Ok(summary);
    }
    let mut objects = Objects::new(view.db.handle()).with_graph(view.commit_graph.clone());
    let wanted = want_commits(&mut objects, &request.wants)?;
    let shallow = plan::plan_shallow(&mut objects, &request, &wanted, view.refs)?;
    if request.deepen.is_requested() {
        for id in &shallow.shallow {
            write_line(out, format!("shallow {id}"))?;
        }
        for id in &shallow.unshallow {
            write_line(out, format!("unshallow {id}"))?;
        }
        write_flush(out)?;
    }
    if !request.have_section {
        // The client only asked for the shallow list (see git's
        // upload_pack(): EOF right after the wants ends the request).
        return Ok(summary);
    }

    // Acknowledge haves as git's get_common_commits does.
    let mut common = Vec::new();
    let mut got_other = false;
    let mut sent_ready = false;
    let mut ready_cache: Option<(usize, bool)> = None;
    let mut is_ready = |objects: &mut Objects, common: &[ObjectId]| -> Result<bool, ServeError> {
        if let Some((n, ready)) = ready_cache
            && n == common.len()
        {
            return Ok(ready);
        }
        let ready = !common.is_empty() && plan::negotiate(objects, &wanted, common)?.ready;
        ready_cache = Some((common.len(), ready));
        Ok(ready)
    };
    for have in &request.haves {
        if objects.contains(have) {
            if common.contains(have) {
                continue;
            }
            common.push(*have);
            match request.multi_ack {
                MultiAck::Detailed => write_line(out, format!("ACK {have} common"))?,
                MultiAck::Basic => write_line(out, format!("ACK {have} continue"))?,
                MultiAck::None if common.len() == 1 => write_line(out, format!("ACK {have}"))?,
                MultiAck::None => {}
            }
        } else {
            got_other = true;
            if request.multi_ack != MultiAck::None && is_ready(&mut objects, &common)? {
                if request.multi_ack == MultiAck::Detailed {
                    sent_ready = true;
                    write_line(out, format!("ACK {have} ready"))?;
                } else {
                    write_line(out, format!("ACK {have} continue"))?;
                }
            }
        }
    }
    let last = common.last().copied();
    if !request.done {
        if let Some(last) = last
            && request.multi_ack == MultiAck::Detailed
            && !got_other
            && is_ready(&mut objects, &common)?
        {
            sent_ready = true;
            write_line(out, format!("ACK {last} ready"))?;
        }
        if common.is_empty() || request.multi_ack != MultiAck::None {
            write_line(out, "NAK")?;
        }
        match last {
            Some(last) if request.no_done && sent_ready => {
                write_line(out, format!("ACK {last}"))?;
            }
            // Stateless: the client sends another round.
            _ => return Ok(summary),
        }
    } else {
        match last {
            Some(last) if request.multi_ack != MultiAck::None => {
                write_line(out, format!("ACK {last}"))?
            }
            Some(_) => {}
            None => write_line(out, "NAK")?,
        }
    }
    summary.pack = Some(send_pack(
        out,
        &mut objects,
        &request,
        &common,
        &shallow,
        view,
    )?);
    Ok(summary)
}

/// Serve one v2 command request (`ls-refs` or `fetch`).
pub fn serve_v2(view: &RepoView<'_>, body: &[u8], out: &mut impl Write) -> io::Result<Summary> {
    match serve_v2_inner(view, body, out) {
        Ok(summary) => Ok(summary),
        Err(err) => client_error(out, "v2", err),
    }
}

fn serve_v2_inner(
    view: &RepoView<'_>,
    body: &[u8],
    out: &mut impl Write,
) -> Result<Summary, ServeError> {
    let Some(command) = request::parse_v2_command(body)? else {
        return Ok(Summary::default());
    };
    match command.command.as_slice() {
        b"ls-refs" => {
            let request = request::parse_v2_ls_refs(&command)?;
            write_ls_refs(out, &request, view.refs, view.head)?;
            Ok(Summary {
                command: "ls-refs",
                ..Summary::default()
            })
        }
        b"fetch" => {
            let request = request::parse_v2_fetch(&command)?;
            fetch_v2(view, &request, out)
        }
        _ => Err(RequestError::UnknownCommand {
            command: command.command.clone(),
        }
        .into()),
    }
}

/// Serve a v2 `ls-refs` request from the refs alone: listing refs needs no
/// objects, so the caller need not open the repository's packs. Other
/// commands are refused as [`serve_v2`] refuses unknown ones.
pub fn serve_v2_ls_refs(
    refs: &[Ref],
    head: &Head,
    body: &[u8],
    out: &mut impl Write,
) -> io::Result<Summary> {
    let served = request::parse_v2_command(body)
        .map_err(ServeError::from)
        .and_then(|command| {
            let Some(command) = command else {
                return Ok(Summary::default());
            };
            if command.command != "ls-refs" {
                return Err(RequestError::UnknownCommand {
                    command: command.command,
                }
                .into());
            }
            let request = request::parse_v2_ls_refs(&command)?;
            write_ls_refs(out, &request, refs, head)?;
            Ok(Summary {
                command: "ls-refs",
                ..Summary::default()
            })
        });
    match served {
        Ok(summary) => Ok(summary),
        Err(err) => client_error(out, "v2", err),
    }
}

fn fetch_v2(
    view: &RepoView<'_>,
    request: &FetchRequest,
    out: &mut impl Write,
) -> Result<Summary, ServeError> {
    let mut summary = Summary {
        command: "fetch",
        ..Summary::default()
    };
    let mut objects = Objects::new(view.db.handle()).with_graph(view.commit_graph.clone());
    let wanted = want_commits(&mut objects, &request.wants)?;
    let mut lines = Lines {
        out,
        sideband_all: request.sideband_all,
    };
    let mut common = Vec::new();
    if !request.done {
        let Negotiation {
            common: found,
            ready,
        } = plan::negotiate(&mut objects, &wanted, &request.haves)?;
        let ready = ready && !request.wait_for_done;
        lines.line("acknowledgments")?;
        if found.is_empty() {
            lines.line("NAK")?;
        }
        for id in &found {
            lines.line(format!("ACK {id}"))?;
        }
        if !ready {
            lines.flush()?;
            return Ok(summary);
        }
        lines.line("ready")?;
        lines.delim()?;
        common = found;
    } else {
        for have in &request.haves {
            if objects.contains(have) {
                common.push(*have);
            }
        }
    }
    let shallow = plan::plan_shallow(&mut objects, request, &wanted, view.refs)?;
    if shallow.send_info {
        lines.line("shallow-info")?;
        for id in &shallow.shallow {
            lines.line(format!("shallow {id}"))?;
        }
        for id in &shallow.unshallow {
            lines.line(format!("unshallow {id}"))?;
        }
        lines.delim()?;
    }
    lines.line("packfile")?;
    summary.pack = Some(send_pack(
        out,
        &mut objects,
        request,
        &common,
        &shallow,
        view,
    )?);
    Ok(summary)
}
