//! The client side of a full fetch over smart HTTP, for importing a
//! repository: reading the ref advertisement (protocol v2 `ls-refs`, or the
//! v0 advertisement of servers without v2), writing a request that wants
//! every ref tip and has nothing, and turning the side-band response into
//! the plain pack stream that `receive_pack::ingest` reads. No network IO:
//! the caller moves the bytes.

use crate::pktline::{Packet, PacketReader, PktLineError, write_delim, write_flush, write_line};
use bstr::ByteSlice;
use gix_hash::ObjectId;
use nimbus_types::RefName;
use std::io::{self, Read, Write};

/// The agent string sent to servers.
const AGENT: &str = concat!("agent=nimbus/", env!("CARGO_PKG_VERSION"));

/// The most refs accepted from a remote.
pub const MAX_REMOTE_REFS: usize = 1_000_000;

/// Why talking to the remote failed. Messages go to users.
#[derive(Debug, thiserror::Error)]
pub enum FetchClientError {
    #[error(
        "the server does not speak the git smart HTTP protocol (is this a git repository URL?)"
    )]
    NotSmartHttp,
    #[error("the server sent a malformed response: {reason}")]
    Malformed { reason: String },
    #[error("the server sent more than {limit} refs")]
    TooManyRefs { limit: usize },
    #[error("the server refused the request: {message}")]
    Remote { message: String },
    #[error("the server uses an object format other than sha1")]
    UnsupportedObjectFormat,
    #[error("the remote has an invalid ref name: {0}")]
    BadRefName(#[from] nimbus_types::RefNameError),
    #[error(transparent)]
    PktLine(#[from] PktLineError),
    #[error("reading the server's response failed")]
    Io(#[from] io::Error),
}

fn malformed(reason: impl Into<String>) -> FetchClientError {
    FetchClientError::Malformed {
        reason: reason.into(),
    }
}

/// A ref as the remote lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    pub name: RefName,
    pub target: ObjectId,
}

/// What the remote has: the refs to mirror and where its `HEAD` points.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteRefs {
    /// Branches and tags only (`refs/heads/*`, `refs/tags/*`).
    pub refs: Vec<RemoteRef>,
    /// The branch `HEAD` points at, without `refs/heads/`.
    pub head_branch: Option<String>,
    /// Refs the remote has outside branches and tags (pull requests,
    /// notes, ...), which are not mirrored.
    pub skipped: usize,
}

/// What `GET info/refs?service=git-upload-pack` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advertisement {
    /// Protocol v2: refs must be asked for with `ls-refs`.
    V2 { object_format_sha1: bool },
    /// Protocol v0/v1: the refs came with the advertisement.
    V0(RemoteRefs),
}

fn object_id(hex: &[u8]) -> Result<ObjectId, FetchClientError> {
    if hex.len() != 40 {
        return Err(FetchClientError::UnsupportedObjectFormat);
    }
    ObjectId::from_hex(hex).map_err(|_| malformed(format!("bad object id {:?}", hex.as_bstr())))
}

fn strip_newline(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

fn check_err(line: &[u8]) -> Result<(), FetchClientError> {
    if let Some(message) = line.strip_prefix(b"ERR ") {
        return Err(FetchClientError::Remote {
            message: strip_newline(message).to_str_lossy().into_owned(),
        });
    }
    Ok(())
}

/// Collects refs, keeping branches and tags.
#[derive(Default)]
struct RefCollector {
    out: RemoteRefs,
    seen: usize,
}

impl RefCollector {
    fn add(&mut self, name: &[u8], target: ObjectId) -> Result<(), FetchClientError> {
        self.seen += 1;
        if self.seen > MAX_REMOTE_REFS {
            return Err(FetchClientError::TooManyRefs {
                limit: MAX_REMOTE_REFS,
            });
        }
        if name.starts_with(b"refs/heads/") || name.starts_with(b"refs/tags/") {
            // A v0 advertisement lists peeled tags as `<name>^{}`.
            if name.ends_with(b"^{}") {
                return Ok(());
            }
            self.out.refs.push(RemoteRef {
                name: RefName::new(name)?,
                target,
            });
        } else if name != b"HEAD" && !name.ends_with(b"^{}") {
            self.out.skipped += 1;
        }
        Ok(())
    }

    fn head(&mut self, target: &[u8]) {
        if let Some(branch) = target.strip_prefix(b"refs/heads/")
            && let Ok(branch) = branch.to_str()
        {
            self.out.head_branch = Some(branch.to_owned());
        }
    }
}

/// Parse the body of `GET info/refs?service=git-upload-pack`.
pub fn read_advertisement(body: &[u8]) -> Result<Advertisement, FetchClientError> {
    let mut reader = PacketReader::new(body);
    let mut first = match reader.next_packet() {
        Ok(Some(Packet::Data(line))) => line.to_vec(),
        Ok(_) | Err(PktLineError::InvalidLength { .. }) => {
            return Err(FetchClientError::NotSmartHttp);
        }
        Err(err) => return Err(err.into()),
    };
    // Smart HTTP servers start with `# service=...` and a flush.
    if first.starts_with(b"# service=") {
        match reader.expect_packet()? {
            Packet::Flush => {}
            _ => return Err(malformed("no flush after the service line")),
        }
        first = match reader.expect_packet()? {
            Packet::Data(line) => line.to_vec(),
            // An empty repository over v0 advertises nothing at all.
            Packet::Flush => return Ok(Advertisement::V0(RemoteRefs::default())),
            _ => return Err(malformed("unexpected packet after the service line")),
        };
    }
    check_err(&first)?;
    if strip_newline(&first) == b"version 2" {
        let mut object_format_sha1 = true;
        loop {
            match reader.expect_packet()? {
                Packet::Flush => break,
                Packet::Data(line) => {
                    if let Some(format) = strip_newline(line).strip_prefix(b"object-format=") {
                        object_format_sha1 = format == b"sha1";
                    }
                }
                _ => return Err(malformed("unexpected packet in the capability list")),
            }
        }
        return Ok(Advertisement::V2 { object_format_sha1 });
    }
    let mut collector = RefCollector::default();
    let mut line = first;
    loop {
        let line_text = strip_newline(&line);
        let (ref_part, capabilities) = match line_text.find_byte(0) {
            Some(nul) => (&line_text[..nul], Some(&line_text[nul + 1..])),
            None => (line_text, None),
        };
        if let Some(capabilities) = capabilities {
            for capability in capabilities.split(|b| *b == b' ') {
                if let Some(target) = capability.strip_prefix(b"symref=HEAD:") {
                    collector.head(target);
                }
                if let Some(format) = capability.strip_prefix(b"object-format=")
                    && format != b"sha1"
                {
                    return Err(FetchClientError::UnsupportedObjectFormat);
                }
            }
        }
        let space = ref_part
            .find_byte(b' ')
            .ok_or_else(|| malformed("a ref line without a name"))?;
        let name = &ref_part[space + 1..];
        // An empty repository advertises `capabilities^{}` on the null id.
        if name != b"capabilities^{}" {
            collector.add(name, object_id(&ref_part[..space])?)?;
        }
        line = match reader.expect_packet()? {
            Packet::Data(data) => data.to_vec(),
            Packet::Flush => break,
            _ => return Err(malformed("unexpected packet in the ref advertisement")),
        };
    }
    Ok(Advertisement::V0(collector.out))
}

/// The body of a v2 `ls-refs` request for branches, tags and `HEAD`.
pub fn write_ls_refs_request(out: &mut impl Write) -> io::Result<()> {
    write_line(out, "command=ls-refs")?;
    write_line(out, AGENT)?;
    write_delim(out)?;
    write_line(out, "symrefs")?;
    for prefix in ["HEAD", "refs/heads/", "refs/tags/"] {
        write_line(out, format!("ref-prefix {prefix}"))?;
    }
    write_flush(out)
}

/// Parse the response to [`write_ls_refs_request`].
pub fn read_ls_refs(body: &[u8]) -> Result<RemoteRefs, FetchClientError> {
    let mut reader = PacketReader::new(body);
    let mut collector = RefCollector::default();
    loop {
        let line = match reader.expect_packet()? {
            Packet::Flush => break,
            Packet::Data(line) => strip_newline(line),
            _ => return Err(malformed("unexpected packet in the ls-refs response")),
        };
        check_err(line)?;
        let mut fields = line.split(|b| *b == b' ');
        let id = fields.next().unwrap_or_default();
        let name = fields
            .next()
            .ok_or_else(|| malformed("a ref line without a name"))?;
        let mut symref_target = None;
        for attribute in fields {
            if let Some(target) = attribute.strip_prefix(b"symref-target:") {
                symref_target = Some(target);
            }
        }
        if name == b"HEAD" {
            if let Some(target) = symref_target {
                collector.head(target);
            }
            // An unborn HEAD is `unborn HEAD symref-target:...`.
            continue;
        }
        collector.add(name, object_id(id)?)?;
    }
    Ok(collector.out)
}

/// The distinct ref targets, in first-seen order.
fn distinct(wants: &[ObjectId]) -> Vec<ObjectId> {
    let mut seen = std::collections::HashSet::new();
    wants
        .iter()
        .copied()
        .filter(|id| seen.insert(*id))
        .collect()
}

/// A v2 `fetch` request for `wants` with no haves: a full pack.
pub fn write_fetch_request_v2(out: &mut impl Write, wants: &[ObjectId]) -> io::Result<()> {
    write_line(out, "command=fetch")?;
    write_line(out, AGENT)?;
    write_delim(out)?;
    for line in ["ofs-delta", "no-progress"] {
        write_line(out, line)?;
    }
    for want in distinct(wants) {
        write_line(out, format!("want {want}"))?;
    }
    write_line(out, "done")?;
    write_flush(out)
}

/// A v0 upload-pack request for `wants` with no haves: a full pack.
pub fn write_fetch_request_v0(out: &mut impl Write, wants: &[ObjectId]) -> io::Result<()> {
    for (i, want) in distinct(wants).iter().enumerate() {
        if i == 0 {
            write_line(
                out,
                format!("want {want} side-band-64k ofs-delta no-progress {AGENT}"),
            )?;
        } else {
            write_line(out, format!("want {want}"))?;
        }
    }
    write_flush(out)?;
    write_line(out, "done")
}

/// Which protocol a fetch response speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseVersion {
    V0,
    V2,
}

/// The pack inside a fetch response: skips what comes before the pack
/// (`NAK`, or v2's section headers) and strips side-band framing, so
/// reading it yields exactly the pack bytes. Band 3 ends it with the
/// server's message.
pub struct PackStream<R> {
    reader: PacketReader<R>,
    version: ResponseVersion,
    started: bool,
    finished: bool,
    pending: Vec<u8>,
    position: usize,
}

impl<R: Read> PackStream<R> {
    pub fn new(response: R, version: ResponseVersion) -> Self {
        PackStream {
            reader: PacketReader::new(response),
            version,
            started: false,
            finished: false,
            pending: Vec::new(),
            position: 0,
        }
    }

    fn start(&mut self) -> Result<(), FetchClientError> {
        loop {
            let line = match self.reader.expect_packet()? {
                Packet::Data(line) => strip_newline(line).to_vec(),
                // v2 separates sections with delimiters; nothing else ends
                // the response before the pack.
                Packet::Delim => continue,
                Packet::Flush | Packet::ResponseEnd => {
                    return Err(malformed("the response ended before the pack"));
                }
            };
            check_err(&line)?;
            match self.version {
                ResponseVersion::V0 if line == b"NAK" => return Ok(()),
                ResponseVersion::V2 if line == b"packfile" => return Ok(()),
                // Acknowledgments, shallow info and the like: not needed
                // for a full fetch.
                _ => {}
            }
        }
    }

    fn next_chunk(&mut self) -> Result<(), FetchClientError> {
        loop {
            match self.reader.next_packet()? {
                None | Some(Packet::Flush) | Some(Packet::ResponseEnd) => {
                    self.finished = true;
                    return Ok(());
                }
                Some(Packet::Delim) => return Err(malformed("a delimiter inside the pack")),
                Some(Packet::Data(data)) => match data.split_first() {
                    Some((1, payload)) => {
                        self.pending.clear();
                        self.pending.extend_from_slice(payload);
                        self.position = 0;
                        if !self.pending.is_empty() {
                            return Ok(());
                        }
                    }
                    Some((2, _)) => {}
                    Some((3, message)) => {
                        return Err(FetchClientError::Remote {
                            message: strip_newline(message).to_str_lossy().into_owned(),
                        });
                    }
                    _ => return Err(malformed("a packet on an unknown side-band channel")),
                },
            }
        }
    }
}

impl<R: Read> Read for PackStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.started {
            self.start().map_err(io::Error::other)?;
            self.started = true;
        }
        if self.position == self.pending.len() {
            if self.finished {
                return Ok(0);
            }
            self.next_chunk().map_err(io::Error::other)?;
            if self.finished {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.pending.len() - self.position);
        buf[..n].copy_from_slice(&self.pending[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktline::{Band, write_sideband};

    fn id(hex: char) -> ObjectId {
        ObjectId::from_hex(hex.to_string().repeat(40).as_bytes()).expect("valid")
    }

    #[test]
    fn v2_advertisement_then_ls_refs() {
        let mut body = Vec::new();
        write_line(&mut body, "# service=git-upload-pack").expect("write");
        write_flush(&mut body).expect("write");
        for line in ["version 2", "ls-refs=unborn", "fetch=shallow"] {
            write_line(&mut body, line).expect("write");
        }
        write_flush(&mut body).expect("write");
        assert_eq!(
            read_advertisement(&body).expect("valid"),
            Advertisement::V2 {
                object_format_sha1: true
            }
        );
        let mut refs = Vec::new();
        for line in [
            format!("{} HEAD symref-target:refs/heads/trunk", id('a')),
            format!("{} refs/heads/trunk", id('a')),
            format!("{} refs/pull/1/head", id('b')),
            format!("{} refs/tags/v1 peeled:{}", id('c'), id('a')),
        ] {
            write_line(&mut refs, line).expect("write");
        }
        write_flush(&mut refs).expect("write");
        let remote = read_ls_refs(&refs).expect("valid");
        assert_eq!(remote.head_branch.as_deref(), Some("trunk"));
        assert_eq!(remote.skipped, 1);
        let names: Vec<_> = remote.refs.iter().map(|r| r.name.to_string()).collect();
        assert_eq!(names, ["refs/heads/trunk", "refs/tags/v1"]);
    }

    #[test]
    fn v0_advertisement_lists_refs_and_head() {
        let mut body = Vec::new();
        write_line(&mut body, "# service=git-upload-pack").expect("write");
        write_flush(&mut body).expect("write");
        write_line(
            &mut body,
            format!(
                "{} HEAD\0multi_ack symref=HEAD:refs/heads/main agent=x",
                id('a')
            ),
        )
        .expect("write");
        write_line(&mut body, format!("{} refs/heads/main", id('a'))).expect("write");
        write_line(&mut body, format!("{} refs/tags/v1", id('b'))).expect("write");
        write_line(&mut body, format!("{} refs/tags/v1^{{}}", id('a'))).expect("write");
        write_flush(&mut body).expect("write");
        let Advertisement::V0(remote) = read_advertisement(&body).expect("valid") else {
            panic!("expected a v0 advertisement");
        };
        assert_eq!(remote.head_branch.as_deref(), Some("main"));
        assert_eq!(remote.refs.len(), 2);
        assert_eq!(remote.skipped, 0);
    }

    #[test]
    fn html_is_not_smart_http() {
        let err = read_advertisement(b"<html>hello</html>").expect_err("not git");
        assert!(matches!(err, FetchClientError::NotSmartHttp), "{err}");
    }

    #[test]
    fn pack_stream_strips_sections_and_side_band() {
        let mut body = Vec::new();
        write_line(&mut body, "acknowledgments").expect("write");
        write_line(&mut body, "NAK").expect("write");
        write_delim(&mut body).expect("write");
        write_line(&mut body, "packfile").expect("write");
        write_sideband(&mut body, Band::Progress, b"counting").expect("write");
        write_sideband(&mut body, Band::Data, b"PACK").expect("write");
        write_sideband(&mut body, Band::Data, b"rest").expect("write");
        write_flush(&mut body).expect("write");
        let mut pack = Vec::new();
        PackStream::new(&body[..], ResponseVersion::V2)
            .read_to_end(&mut pack)
            .expect("read");
        assert_eq!(pack, b"PACKrest");

        let mut body = Vec::new();
        write_line(&mut body, "NAK").expect("write");
        write_sideband(&mut body, Band::Data, b"PACK").expect("write");
        write_sideband(&mut body, Band::Error, b"disk full").expect("write");
        let err = PackStream::new(&body[..], ResponseVersion::V0)
            .read_to_end(&mut Vec::new())
            .expect_err("server error");
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}
