//! Parsing upload-pack requests (protocol v0/v1 and the v2 `fetch` and
//! `ls-refs` commands) into one request model. Pure functions over bytes.

use crate::pktline::{Packet, PktLineError, decode};
use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;

/// The most `want` lines one request may carry.
pub const MAX_WANTS: usize = 1_000_000;
/// The most `have` lines one request may carry.
pub const MAX_HAVES: usize = 1_000_000;
/// The most `shallow` lines one request may carry.
pub const MAX_SHALLOWS: usize = 1_000_000;
/// The most `ref-prefix` / `deepen-not` arguments one request may carry.
pub const MAX_SMALL_ARGS: usize = 65_536;

/// Why an upload-pack request was refused. Messages go to the client.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    PktLine(#[from] PktLineError),
    #[error("unexpected line in request: {line:?}")]
    UnexpectedLine { line: BString },
    #[error("invalid object id in {line:?}")]
    InvalidObjectId { line: BString },
    #[error("the request has more than {limit} {what} lines")]
    TooMany { what: &'static str, limit: usize },
    #[error("invalid depth {value:?}")]
    InvalidDepth { value: BString },
    #[error("invalid timestamp {value:?}")]
    InvalidTimestamp { value: BString },
    #[error("filter {spec:?} is not supported; use blob:none, blob:limit=<n>[kmg] or tree:<depth>")]
    UnsupportedFilter { spec: BString },
    #[error("unknown command {command:?}")]
    UnknownCommand { command: BString },
    #[error("the request is missing the {what}")]
    Missing { what: &'static str },
    #[error("only object-format=sha1 is supported, not {format:?}")]
    UnsupportedObjectFormat { format: BString },
    #[error("deepen and deepen-since/deepen-not cannot be combined")]
    ConflictingDeepen,
}

/// An object filter for partial clones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `blob:none`: no blobs.
    BlobNone,
    /// `blob:limit=<n>`: only blobs smaller than `n` bytes.
    BlobLimit(u64),
    /// `tree:<depth>`: no blobs, and no trees at depth `depth` or deeper
    /// (the root tree is at depth 0).
    TreeDepth(u64),
}

impl Filter {
    pub fn parse(spec: &[u8]) -> Result<Filter, RequestError> {
        let unsupported = || RequestError::UnsupportedFilter { spec: spec.into() };
        let text = std::str::from_utf8(spec).map_err(|_| unsupported())?;
        if text == "blob:none" {
            return Ok(Filter::BlobNone);
        }
        if let Some(limit) = text.strip_prefix("blob:limit=") {
            let (digits, unit) = match limit.as_bytes().last() {
                Some(b'k' | b'K') => (&limit[..limit.len() - 1], 1u64 << 10),
                Some(b'm' | b'M') => (&limit[..limit.len() - 1], 1 << 20),
                Some(b'g' | b'G') => (&limit[..limit.len() - 1], 1 << 30),
                _ => (limit, 1),
            };
            let n: u64 = digits.parse().map_err(|_| unsupported())?;
            return Ok(Filter::BlobLimit(
                n.checked_mul(unit).ok_or_else(unsupported)?,
            ));
        }
        if let Some(depth) = text.strip_prefix("tree:") {
            return depth
                .parse()
                .map(Filter::TreeDepth)
                .map_err(|_| unsupported());
        }
        Err(unsupported())
    }
}

/// How far to deepen a shallow history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deepen {
    /// `deepen <n>`: keep `n` commits of history from each want.
    pub depth: Option<u32>,
    /// `deepen-since <t>`: keep commits committed at or after `t`.
    pub since: Option<i64>,
    /// `deepen-not <ref>`: exclude history reachable from these refs.
    pub not: Vec<BString>,
    /// `deepen-relative`: depth counts from the client's current boundary.
    pub relative: bool,
}

impl Deepen {
    pub fn is_requested(&self) -> bool {
        self.depth.is_some() || self.since.is_some() || !self.not.is_empty()
    }
}

/// Multi-ack mode of a v0 client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MultiAck {
    #[default]
    None,
    Basic,
    Detailed,
}

/// Side-band mode of a v0 client (v2 always uses side-band-64k).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SideBand {
    #[default]
    None,
    Small,
    Large,
}

/// A fetch request, from v0/v1 or v2.
#[derive(Debug, Clone, Default)]
pub struct FetchRequest {
    pub wants: Vec<ObjectId>,
    pub haves: Vec<ObjectId>,
    pub done: bool,
    /// Commits the client already has as shallow boundaries.
    pub client_shallows: Vec<ObjectId>,
    pub deepen: Deepen,
    pub filter: Option<Filter>,
    pub thin_pack: bool,
    pub no_progress: bool,
    pub include_tag: bool,
    pub ofs_delta: bool,
    pub sideband_all: bool,
    pub wait_for_done: bool,
    // v0/v1 only.
    pub multi_ack: MultiAck,
    pub side_band: SideBand,
    pub no_done: bool,
    /// v0/v1: whether anything followed the want section. A stateless
    /// client asking for a shallow list first sends the wants alone.
    pub have_section: bool,
    /// Unknown capabilities the client sent (ignored, like git does).
    pub agent: Option<BString>,
}

fn object_id(line: &[u8], hex: &[u8]) -> Result<ObjectId, RequestError> {
    if hex.len() != 40 {
        return Err(RequestError::InvalidObjectId { line: line.into() });
    }
    ObjectId::from_hex(hex).map_err(|_| RequestError::InvalidObjectId { line: line.into() })
}

fn push_bounded<T>(
    list: &mut Vec<T>,
    item: T,
    what: &'static str,
    limit: usize,
) -> Result<(), RequestError> {
    if list.len() >= limit {
        return Err(RequestError::TooMany { what, limit });
    }
    list.push(item);
    Ok(())
}

fn parse_depth(value: &[u8]) -> Result<u32, RequestError> {
    value
        .to_str()
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|d| *d > 0 && *d <= i32::MAX as u32)
        .ok_or_else(|| RequestError::InvalidDepth {
            value: value.into(),
        })
}

fn parse_timestamp(value: &[u8]) -> Result<i64, RequestError> {
    value
        .to_str()
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| RequestError::InvalidTimestamp {
            value: value.into(),
        })
}

/// Handle the arguments shared by v0 and v2 fetch requests. Returns false
/// if the line is not one of them.
fn parse_shared_arg(request: &mut FetchRequest, line: &[u8]) -> Result<bool, RequestError> {
    if let Some(hex) = line.strip_prefix(b"want ") {
        push_bounded(&mut request.wants, object_id(line, hex)?, "want", MAX_WANTS)?;
    } else if let Some(hex) = line.strip_prefix(b"have ") {
        push_bounded(&mut request.haves, object_id(line, hex)?, "have", MAX_HAVES)?;
    } else if let Some(hex) = line.strip_prefix(b"shallow ") {
        let id = object_id(line, hex)?;
        push_bounded(&mut request.client_shallows, id, "shallow", MAX_SHALLOWS)?;
    } else if let Some(value) = line.strip_prefix(b"deepen-since ") {
        request.deepen.since = Some(parse_timestamp(value)?);
    } else if let Some(value) = line.strip_prefix(b"deepen-not ") {
        push_bounded(
            &mut request.deepen.not,
            value.into(),
            "deepen-not",
            MAX_SMALL_ARGS,
        )?;
    } else if let Some(value) = line.strip_prefix(b"deepen ") {
        request.deepen.depth = Some(parse_depth(value)?);
    } else if line == b"deepen-relative" {
        request.deepen.relative = true;
    } else if let Some(spec) = line.strip_prefix(b"filter ") {
        request.filter = Some(Filter::parse(spec)?);
    } else {
        return Ok(false);
    }
    Ok(true)
}

fn check_deepen(request: &FetchRequest) -> Result<(), RequestError> {
    let d = &request.deepen;
    if d.depth.is_some() && (d.since.is_some() || !d.not.is_empty()) {
        return Err(RequestError::ConflictingDeepen);
    }
    Ok(())
}

/// Iterate over the packets of a complete request body.
pub(crate) struct Packets<'a> {
    rest: &'a [u8],
}

impl<'a> Packets<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Self {
        Packets { rest: body }
    }

    pub(crate) fn next(&mut self) -> Result<Option<Packet<'a>>, RequestError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        match decode(self.rest)? {
            Some((packet, used)) => {
                self.rest = &self.rest[used..];
                Ok(Some(packet))
            }
            None => Err(PktLineError::Truncated.into()),
        }
    }
}

fn apply_v0_capability(request: &mut FetchRequest, cap: &[u8]) {
    match cap {
        b"multi_ack" if request.multi_ack == MultiAck::None => request.multi_ack = MultiAck::Basic,
        b"multi_ack_detailed" => request.multi_ack = MultiAck::Detailed,
        b"side-band" if request.side_band == SideBand::None => request.side_band = SideBand::Small,
        b"side-band-64k" => request.side_band = SideBand::Large,
        b"thin-pack" => request.thin_pack = true,
        b"no-progress" => request.no_progress = true,
        b"include-tag" => request.include_tag = true,
        b"ofs-delta" => request.ofs_delta = true,
        b"no-done" => request.no_done = true,
        b"deepen-relative" => request.deepen.relative = true,
        _ => {
            if let Some(agent) = cap.strip_prefix(b"agent=") {
                request.agent = Some(agent.into());
            }
        }
    }
}

/// Parse a v0/v1 stateless upload-pack request: wants (the first carrying
/// capabilities), shallow/deepen/filter lines, a flush, then haves ending
/// in a flush or `done`.
pub fn parse_v0(body: &[u8]) -> Result<FetchRequest, RequestError> {
    let mut request = FetchRequest::default();
    let mut packets = Packets::new(body);
    let mut first = true;
    // Section 1: wants and friends, up to a flush.
    loop {
        let Some(packet) = packets.next()? else {
            return Err(RequestError::Missing {
                what: "flush after the want lines",
            });
        };
        let line = match packet {
            Packet::Flush => break,
            Packet::Data(_) => packet.line().unwrap_or_default(),
            _ => {
                return Err(RequestError::UnexpectedLine {
                    line: "delimiter".into(),
                });
            }
        };
        let line = if first && line.starts_with(b"want ") {
            first = false;
            // `want <oid> cap cap ...`: split off the capabilities.
            let mut parts = line.splitn_str(3, " ");
            let _ = parts.next();
            let hex = parts.next().unwrap_or_default();
            for cap in parts.next().unwrap_or_default().split_str(" ") {
                apply_v0_capability(&mut request, cap);
            }
            push_bounded(&mut request.wants, object_id(line, hex)?, "want", MAX_WANTS)?;
            continue;
        } else {
            line
        };
        if line.starts_with(b"have ") || !parse_shared_arg(&mut request, line)? {
            return Err(RequestError::UnexpectedLine { line: line.into() });
        }
    }
    // Section 2: haves, up to a flush or `done` (or nothing at all).
    while let Some(packet) = packets.next()? {
        request.have_section = true;
        match packet {
            Packet::Flush => continue,
            Packet::Data(_) => {
                let line = packet.line().unwrap_or_default();
                if line == b"done" {
                    request.done = true;
                    break;
                }
                match line.strip_prefix(b"have ") {
                    Some(hex) => {
                        push_bounded(&mut request.haves, object_id(line, hex)?, "have", MAX_HAVES)?
                    }
                    None => return Err(RequestError::UnexpectedLine { line: line.into() }),
                }
            }
            _ => {
                return Err(RequestError::UnexpectedLine {
                    line: "delimiter".into(),
                });
            }
        }
    }
    check_deepen(&request)?;
    Ok(request)
}

/// A protocol v2 command request: `command=<name>`, capabilities, a
/// delimiter, arguments, a flush.
#[derive(Debug, Clone, Default)]
pub struct V2Command {
    pub command: BString,
    pub capabilities: Vec<BString>,
    pub args: Vec<BString>,
}

/// Parse the next v2 command from a request body. Returns `None` when the
/// body holds no further command (a bare flush ends the session).
pub fn parse_v2_command(body: &[u8]) -> Result<Option<V2Command>, RequestError> {
    let mut packets = Packets::new(body);
    let mut cmd = V2Command::default();
    let mut in_args = false;
    loop {
        let Some(packet) = packets.next()? else {
            if cmd.command.is_empty() {
                return Ok(None);
            }
            return Err(RequestError::Missing {
                what: "flush ending the command",
            });
        };
        match packet {
            Packet::Flush => {
                if cmd.command.is_empty() {
                    return Ok(None);
                }
                break;
            }
            Packet::Delim if !in_args => in_args = true,
            Packet::Delim | Packet::ResponseEnd => {
                return Err(RequestError::UnexpectedLine {
                    line: "delimiter".into(),
                });
            }
            Packet::Data(_) => {
                let line = packet.line().unwrap_or_default();
                if in_args {
                    push_bounded(
                        &mut cmd.args,
                        line.into(),
                        "argument",
                        MAX_WANTS + MAX_HAVES,
                    )?;
                } else if let Some(name) = line.strip_prefix(b"command=") {
                    cmd.command = name.into();
                } else {
                    if let Some(format) = line.strip_prefix(b"object-format=")
                        && format != b"sha1"
                    {
                        return Err(RequestError::UnsupportedObjectFormat {
                            format: format.into(),
                        });
                    }
                    push_bounded(
                        &mut cmd.capabilities,
                        line.into(),
                        "capability",
                        MAX_SMALL_ARGS,
                    )?;
                }
            }
        }
    }
    if cmd.command.is_empty() {
        return Err(RequestError::Missing {
            what: "command= line",
        });
    }
    Ok(Some(cmd))
}

/// Interpret the arguments of a v2 `fetch` command.
pub fn parse_v2_fetch(cmd: &V2Command) -> Result<FetchRequest, RequestError> {
    let mut request = FetchRequest {
        // v2 always multiplexes the pack on side-band-64k.
        side_band: SideBand::Large,
        ..FetchRequest::default()
    };
    for cap in &cmd.capabilities {
        if let Some(agent) = cap.strip_prefix(b"agent=") {
            request.agent = Some(agent.into());
        }
    }
    for arg in &cmd.args {
        let line = arg.as_slice();
        if parse_shared_arg(&mut request, line)? {
            continue;
        }
        match line {
            b"done" => request.done = true,
            b"thin-pack" => request.thin_pack = true,
            b"no-progress" => request.no_progress = true,
            b"include-tag" => request.include_tag = true,
            b"ofs-delta" => request.ofs_delta = true,
            b"sideband-all" => request.sideband_all = true,
            b"wait-for-done" => request.wait_for_done = true,
            _ => return Err(RequestError::UnexpectedLine { line: line.into() }),
        }
    }
    check_deepen(&request)?;
    Ok(request)
}

/// Arguments of a v2 `ls-refs` command.
#[derive(Debug, Clone, Default)]
pub struct LsRefsRequest {
    pub symrefs: bool,
    pub peel: bool,
    pub unborn: bool,
    pub prefixes: Vec<BString>,
}

pub fn parse_v2_ls_refs(cmd: &V2Command) -> Result<LsRefsRequest, RequestError> {
    let mut request = LsRefsRequest::default();
    for arg in &cmd.args {
        match arg.as_slice() {
            b"symrefs" => request.symrefs = true,
            b"peel" => request.peel = true,
            b"unborn" => request.unborn = true,
            line => match line.strip_prefix(b"ref-prefix ") {
                Some(prefix) => push_bounded(
                    &mut request.prefixes,
                    prefix.into(),
                    "ref-prefix",
                    MAX_SMALL_ARGS,
                )?,
                None => return Err(RequestError::UnexpectedLine { line: line.into() }),
            },
        }
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktline::{write_delim, write_flush, write_line};

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn body(lines: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            match *line {
                "0000" => write_flush(&mut out).expect("vec"),
                "0001" => write_delim(&mut out).expect("vec"),
                line => write_line(&mut out, line).expect("vec"),
            }
        }
        out
    }

    #[test]
    fn v0_request_with_capabilities_haves_and_done() {
        let req = parse_v0(&body(&[
            &format!("want {A} multi_ack_detailed side-band-64k thin-pack ofs-delta no-done agent=git/2.47"),
            &format!("want {B}"),
            "deepen 3",
            "filter blob:limit=2k",
            "0000",
            &format!("have {B}"),
            "done",
        ]))
        .expect("valid");
        assert_eq!(req.wants.len(), 2);
        assert_eq!(req.haves.len(), 1);
        assert!(req.done && req.thin_pack && req.ofs_delta && req.no_done);
        assert_eq!(req.multi_ack, MultiAck::Detailed);
        assert_eq!(req.side_band, SideBand::Large);
        assert_eq!(req.deepen.depth, Some(3));
        assert_eq!(req.filter, Some(Filter::BlobLimit(2048)));
        assert_eq!(req.agent, Some(BString::from("git/2.47")));
    }

    #[test]
    fn v0_request_without_flush_is_refused() {
        let err = parse_v0(&body(&[&format!("want {A}")])).expect_err("no flush");
        assert!(err.to_string().contains("flush"), "{err}");
    }

    #[test]
    fn bad_object_ids_are_refused() {
        let err = parse_v0(&body(&["want 12345", "0000"])).expect_err("short id");
        assert!(matches!(err, RequestError::InvalidObjectId { .. }));
        let err =
            parse_v0(&body(&[&format!("want {}", "g".repeat(40)), "0000"])).expect_err("not hex");
        assert!(matches!(err, RequestError::InvalidObjectId { .. }));
    }

    #[test]
    fn v2_fetch_command() {
        let cmd = parse_v2_command(&body(&[
            "command=fetch",
            "agent=git/2.47",
            "object-format=sha1",
            "0001",
            "thin-pack",
            "ofs-delta",
            &format!("want {A}"),
            &format!("have {B}"),
            "deepen-since 1700000000",
            "deepen-not refs/heads/old",
            "filter tree:0",
            "done",
            "0000",
        ]))
        .expect("valid")
        .expect("a command");
        assert_eq!(cmd.command, "fetch");
        let req = parse_v2_fetch(&cmd).expect("valid");
        assert!(req.done && req.thin_pack);
        assert_eq!(req.deepen.since, Some(1_700_000_000));
        assert_eq!(req.deepen.not, vec![BString::from("refs/heads/old")]);
        assert_eq!(req.filter, Some(Filter::TreeDepth(0)));
    }

    #[test]
    fn v2_refuses_sha256_and_unknown_arguments() {
        let err = parse_v2_command(&body(&["command=fetch", "object-format=sha256", "0000"]))
            .expect_err("sha256");
        assert!(matches!(err, RequestError::UnsupportedObjectFormat { .. }));
        let cmd = parse_v2_command(&body(&["command=fetch", "0001", "frobnicate", "0000"]))
            .expect("valid")
            .expect("a command");
        assert!(matches!(
            parse_v2_fetch(&cmd),
            Err(RequestError::UnexpectedLine { .. })
        ));
    }

    #[test]
    fn v2_ls_refs_command() {
        let cmd = parse_v2_command(&body(&[
            "command=ls-refs",
            "0001",
            "peel",
            "symrefs",
            "unborn",
            "ref-prefix refs/heads/",
            "0000",
        ]))
        .expect("valid")
        .expect("a command");
        let req = parse_v2_ls_refs(&cmd).expect("valid");
        assert!(req.peel && req.symrefs && req.unborn);
        assert_eq!(req.prefixes, vec![BString::from("refs/heads/")]);
    }

    #[test]
    fn filters_parse_like_git() {
        assert_eq!(Filter::parse(b"blob:none").expect("ok"), Filter::BlobNone);
        assert_eq!(
            Filter::parse(b"blob:limit=1m").expect("ok"),
            Filter::BlobLimit(1 << 20)
        );
        assert_eq!(Filter::parse(b"tree:2").expect("ok"), Filter::TreeDepth(2));
        for bad in [
            &b"sparse:oid=abc"[..],
            b"blob:limit=x",
            b"tree:-1",
            b"combine:a+b",
        ] {
            assert!(matches!(
                Filter::parse(bad),
                Err(RequestError::UnsupportedFilter { .. })
            ));
        }
    }

    #[test]
    fn conflicting_deepen_is_refused() {
        let err = parse_v0(&body(&[
            &format!("want {A}"),
            "deepen 2",
            "deepen-since 5",
            "0000",
        ]))
        .expect_err("conflict");
        assert!(matches!(err, RequestError::ConflictingDeepen));
    }
}
