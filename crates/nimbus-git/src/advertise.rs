//! Ref and capability advertisements: v0/v1 `info/refs` for upload-pack and
//! receive-pack, the v2 capability list, and the v2 `ls-refs` command.

use crate::pktline::{write_flush, write_line};
use crate::upload_pack::request::LsRefsRequest;
use bstr::ByteSlice;
use gix_hash::ObjectId;
use nimbus_types::{Ref, RefName};
use std::io::{self, Write};

/// The agent string we announce.
pub const AGENT: &str = concat!("agent=nimbus/", env!("CARGO_PKG_VERSION"));

/// Which protocol a client asked for through `Git-Protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProtocolVersion {
    V0,
    V1,
    V2,
}

impl ProtocolVersion {
    /// Read the `Git-Protocol` header (`version=2`, possibly with other
    /// `:`-separated keys). Unknown or absent means v0, as git does.
    pub fn from_header(value: Option<&[u8]>) -> Self {
        let Some(value) = value else {
            return ProtocolVersion::V0;
        };
        let mut best = ProtocolVersion::V0;
        for part in value.split_str(":") {
            let version = match part.trim() {
                b"version=2" => ProtocolVersion::V2,
                b"version=1" => ProtocolVersion::V1,
                _ => continue,
            };
            best = best.max(version);
        }
        best
    }
}

/// What `HEAD` points at.
#[derive(Debug, Clone)]
pub struct Head {
    /// The branch `HEAD` names (`refs/heads/<default branch>`).
    pub symref: RefName,
    /// The branch's value, or `None` when it is unborn.
    pub target: Option<ObjectId>,
}

impl Head {
    /// Resolve `HEAD` for a default branch against a sorted ref list.
    pub fn resolve(default_branch_ref: RefName, refs: &[Ref]) -> Head {
        let target = refs
            .binary_search_by(|r| r.name.as_bytes().cmp(default_branch_ref.as_bytes()))
            .ok()
            .map(|i| refs[i].target);
        Head {
            symref: default_branch_ref,
            target,
        }
    }
}

const UPLOAD_PACK_V0_CAPS: &str = "multi_ack thin-pack side-band side-band-64k ofs-delta shallow \
deepen-since deepen-not deepen-relative no-progress include-tag multi_ack_detailed \
allow-tip-sha1-in-want allow-reachable-sha1-in-want no-done filter object-format=sha1";

const RECEIVE_PACK_CAPS: &str = "report-status report-status-v2 delete-refs side-band-64k quiet \
atomic ofs-delta push-options object-format=sha1";

fn null_id() -> ObjectId {
    ObjectId::null(gix_hash::Kind::Sha1)
}

/// The v0/v1 upload-pack advertisement (after the `# service=` header the
/// HTTP layer writes).
pub fn write_upload_pack_v0<W: Write>(
    out: &mut W,
    version: ProtocolVersion,
    refs: &[Ref],
    head: &Head,
) -> io::Result<()> {
    if version == ProtocolVersion::V1 {
        write_line(out, "version 1")?;
    }
    let mut caps = format!("{UPLOAD_PACK_V0_CAPS} {AGENT}");
    if head.target.is_some() {
        caps = format!("{caps} symref=HEAD:{}", head.symref);
    }
    let mut first = Some(caps);
    let line = |out: &mut W, first: &mut Option<String>, id: &ObjectId, name: &[u8]| {
        let mut text = Vec::with_capacity(64 + name.len());
        text.extend_from_slice(id.to_hex().to_string().as_bytes());
        text.push(b' ');
        text.extend_from_slice(name);
        if let Some(caps) = first.take() {
            text.push(0);
            text.extend_from_slice(caps.as_bytes());
        }
        write_line(out, text)
    };
    if let Some(target) = head.target {
        line(out, &mut first, &target, b"HEAD")?;
    }
    for r in refs {
        line(out, &mut first, &r.target, r.name.as_bytes())?;
        if let Some(peeled) = r.peeled {
            let mut name = r.name.as_bytes().to_vec();
            name.extend_from_slice(b"^{}");
            line(out, &mut first, &peeled, &name)?;
        }
    }
    if first.is_some() {
        line(out, &mut first, &null_id(), b"capabilities^{}")?;
    }
    write_flush(out)
}

/// The v0/v1 receive-pack advertisement.
pub fn write_receive_pack_v0(
    out: &mut impl Write,
    version: ProtocolVersion,
    refs: &[Ref],
) -> io::Result<()> {
    if version == ProtocolVersion::V1 {
        write_line(out, "version 1")?;
    }
    let caps = format!("{RECEIVE_PACK_CAPS} {AGENT}");
    let mut first = true;
    for r in refs {
        let mut text = format!("{} ", r.target.to_hex()).into_bytes();
        text.extend_from_slice(r.name.as_bytes());
        if first {
            text.push(0);
            text.extend_from_slice(caps.as_bytes());
            first = false;
        }
        write_line(out, text)?;
    }
    if first {
        let mut text = format!("{} capabilities^{{}}", null_id().to_hex()).into_bytes();
        text.push(0);
        text.extend_from_slice(caps.as_bytes());
        write_line(out, text)?;
    }
    write_flush(out)
}

/// The protocol v2 capability advertisement; `bundle_uri` offers the
/// `bundle-uri` command.
pub fn write_v2_capabilities(out: &mut impl Write, bundle_uri: bool) -> io::Result<()> {
    write_line(out, "version 2")?;
    write_line(out, AGENT)?;
    write_line(out, "ls-refs=unborn")?;
    write_line(out, "fetch=shallow wait-for-done filter sideband-all")?;
    write_line(out, "server-option")?;
    write_line(out, "object-format=sha1")?;
    if bundle_uri {
        write_line(out, "bundle-uri")?;
    }
    write_flush(out)
}

/// The v2 `ls-refs` response.
pub fn write_ls_refs(
    out: &mut impl Write,
    request: &LsRefsRequest,
    refs: &[Ref],
    head: &Head,
) -> io::Result<()> {
    let wanted = |name: &[u8]| {
        request.prefixes.is_empty() || request.prefixes.iter().any(|p| name.starts_with(p))
    };
    if wanted(b"HEAD") {
        let mut text = match head.target {
            Some(target) => format!("{} HEAD", target.to_hex()).into_bytes(),
            None if request.unborn => b"unborn HEAD".to_vec(),
            None => Vec::new(),
        };
        if !text.is_empty() {
            if request.symrefs || head.target.is_none() {
                text.extend_from_slice(b" symref-target:");
                text.extend_from_slice(head.symref.as_bytes());
            }
            write_line(out, text)?;
        }
    }
    for r in refs.iter().filter(|r| wanted(r.name.as_bytes())) {
        let mut text = format!("{} ", r.target.to_hex()).into_bytes();
        text.extend_from_slice(r.name.as_bytes());
        if request.peel
            && let Some(peeled) = r.peeled
        {
            text.extend_from_slice(format!(" peeled:{}", peeled.to_hex()).as_bytes());
        }
        write_line(out, text)?;
    }
    write_flush(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktline::{Packet, decode};

    fn id(hex: char) -> ObjectId {
        ObjectId::from_hex(hex.to_string().repeat(40).as_bytes()).expect("valid")
    }

    fn lines(mut buf: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((packet, used)) = decode(buf).expect("valid") {
            out.push(match packet {
                Packet::Data(_) => packet.line().expect("data").to_str_lossy().into_owned(),
                Packet::Flush => "0000".into(),
                _ => "other".into(),
            });
            buf = &buf[used..];
        }
        out
    }

    fn refs() -> Vec<Ref> {
        vec![
            Ref {
                name: RefName::new(b"refs/heads/main").expect("valid"),
                target: id('a'),
                peeled: None,
            },
            Ref {
                name: RefName::new(b"refs/tags/v1").expect("valid"),
                target: id('b'),
                peeled: Some(id('a')),
            },
        ]
    }

    #[test]
    fn v0_upload_pack_lists_head_refs_and_peeled_tags() {
        let refs = refs();
        let head = Head::resolve(RefName::new(b"refs/heads/main").expect("valid"), &refs);
        let mut out = Vec::new();
        write_upload_pack_v0(&mut out, ProtocolVersion::V0, &refs, &head).expect("vec");
        let l = lines(&out);
        assert!(
            l[0].starts_with(&format!("{} HEAD\0multi_ack", id('a'))),
            "{l:?}"
        );
        assert!(l[0].ends_with("symref=HEAD:refs/heads/main"), "{l:?}");
        assert_eq!(l[1], format!("{} refs/heads/main", id('a')));
        assert_eq!(l[2], format!("{} refs/tags/v1", id('b')));
        assert_eq!(l[3], format!("{} refs/tags/v1^{{}}", id('a')));
        assert_eq!(l[4], "0000");
    }

    #[test]
    fn empty_repositories_advertise_capabilities_only() {
        let head = Head::resolve(RefName::new(b"refs/heads/main").expect("valid"), &[]);
        let mut out = Vec::new();
        write_upload_pack_v0(&mut out, ProtocolVersion::V1, &[], &head).expect("vec");
        let l = lines(&out);
        assert_eq!(l[0], "version 1");
        assert!(l[1].starts_with(&format!("{} capabilities^{{}}\0", null_id())));
        let mut out = Vec::new();
        write_receive_pack_v0(&mut out, ProtocolVersion::V0, &[]).expect("vec");
        assert!(lines(&out)[0].contains("report-status"));
    }

    #[test]
    fn ls_refs_honours_prefixes_peel_symrefs_and_unborn() {
        let refs = refs();
        let head = Head::resolve(RefName::new(b"refs/heads/main").expect("valid"), &refs);
        let request = LsRefsRequest {
            symrefs: true,
            peel: true,
            unborn: true,
            prefixes: vec!["refs/tags/".into(), "HEAD".into()],
        };
        let mut out = Vec::new();
        write_ls_refs(&mut out, &request, &refs, &head).expect("vec");
        assert_eq!(
            lines(&out),
            vec![
                format!("{} HEAD symref-target:refs/heads/main", id('a')),
                format!("{} refs/tags/v1 peeled:{}", id('b'), id('a')),
                "0000".into()
            ]
        );
        let unborn = Head::resolve(RefName::new(b"refs/heads/dev").expect("valid"), &[]);
        let mut out = Vec::new();
        write_ls_refs(&mut out, &request, &[], &unborn).expect("vec");
        assert_eq!(lines(&out)[0], "unborn HEAD symref-target:refs/heads/dev");
    }

    #[test]
    fn protocol_header_picks_the_highest_known_version() {
        assert_eq!(ProtocolVersion::from_header(None), ProtocolVersion::V0);
        assert_eq!(
            ProtocolVersion::from_header(Some(b"version=2")),
            ProtocolVersion::V2
        );
        assert_eq!(
            ProtocolVersion::from_header(Some(b"foo=bar:version=1")),
            ProtocolVersion::V1
        );
        assert_eq!(
            ProtocolVersion::from_header(Some(b"version=3")),
            ProtocolVersion::V0
        );
    }
}
