//! Git bundle files (`git bundle`): reading the header of a v2 or v3
//! bundle, which lists refs and prerequisites before the pack that
//! follows it, and writing a v2 header. Only `Read`/`Write`; the caller
//! streams the pack itself.

use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;
use nimbus_types::RefName;
use std::io::{self, BufRead, Write};

/// The first line of a v2 bundle.
pub const V2_SIGNATURE: &[u8] = b"# v2 git bundle\n";
/// The first line of a v3 bundle.
pub const V3_SIGNATURE: &[u8] = b"# v3 git bundle\n";

/// Bounds on a bundle header.
#[derive(Debug, Clone, Copy)]
pub struct HeaderLimits {
    /// The largest header accepted, in bytes (signature to blank line).
    pub max_header_bytes: usize,
    /// The most refs accepted.
    pub max_refs: usize,
    /// The most prerequisites accepted.
    pub max_prerequisites: usize,
}

impl Default for HeaderLimits {
    fn default() -> Self {
        HeaderLimits {
            max_header_bytes: 16 << 20,
            max_refs: 100_000,
            max_prerequisites: 100_000,
        }
    }
}

/// Why a bundle header was refused. Messages go to users.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(
        "this is not a git bundle (it does not start with '# v2 git bundle' or '# v3 git bundle')"
    )]
    NotABundle,
    #[error("the bundle ends inside its header (the file is truncated)")]
    Truncated,
    #[error("the bundle header is larger than {limit} bytes")]
    HeaderTooLarge { limit: usize },
    #[error("the bundle lists more than {limit} {what}")]
    TooMany { what: &'static str, limit: usize },
    #[error("the bundle uses the object format {format:?}; only sha1 is supported")]
    UnsupportedObjectFormat { format: BString },
    #[error("the bundle has the capability {capability:?}, which is not supported")]
    UnsupportedCapability { capability: BString },
    #[error("malformed bundle header line {line:?}")]
    MalformedLine { line: BString },
    #[error("the bundle has an invalid ref name: {0}")]
    BadRefName(#[from] nimbus_types::RefNameError),
    #[error("the bundle lists the ref {name} twice")]
    DuplicateRef { name: RefName },
    #[error("reading the bundle failed")]
    Io(#[from] io::Error),
}

/// What a bundle header says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleHeader {
    /// 2 or 3.
    pub version: u8,
    /// Commits the pack's objects depend on but does not contain (an
    /// incremental bundle, made from a range).
    pub prerequisites: Vec<ObjectId>,
    /// Refs under `refs/`, in header order.
    pub refs: Vec<(RefName, ObjectId)>,
    /// The object `HEAD` pointed at, when the bundle lists it.
    pub head: Option<ObjectId>,
}

/// Read one header line (without its newline) into `line`, counting
/// bytes against the limit; `Ok(false)` at the end of the input.
fn read_line<R: BufRead>(
    reader: &mut R,
    line: &mut Vec<u8>,
    remaining: &mut usize,
    limit: usize,
) -> Result<bool, BundleError> {
    line.clear();
    let mut limited = <&mut R as io::Read>::take(reader, *remaining as u64 + 1);
    let n = limited.read_until(b'\n', line)?;
    if n == 0 {
        return Ok(false);
    }
    if n > *remaining {
        return Err(BundleError::HeaderTooLarge { limit });
    }
    *remaining -= n;
    if line.pop() != Some(b'\n') {
        return Err(BundleError::Truncated);
    }
    Ok(true)
}

fn object_id(hex: &[u8], line: &[u8]) -> Result<ObjectId, BundleError> {
    if hex.len() != 40 {
        return Err(BundleError::MalformedLine { line: line.into() });
    }
    ObjectId::from_hex(hex).map_err(|_| BundleError::MalformedLine { line: line.into() })
}

/// Read a bundle header from `reader`, leaving it at the first byte of the
/// pack.
pub fn read_header(
    reader: &mut impl BufRead,
    limits: HeaderLimits,
) -> Result<BundleHeader, BundleError> {
    let mut remaining = limits.max_header_bytes;
    let limit = limits.max_header_bytes;
    let mut line = Vec::new();
    // The signature decides whether this is a bundle at all: read it with
    // a small bound so a large binary file is refused at once.
    let mut signature_budget = V2_SIGNATURE.len();
    let signature_ok = match read_line(reader, &mut line, &mut signature_budget, limit) {
        Ok(true) => true,
        Ok(false) | Err(BundleError::HeaderTooLarge { .. }) | Err(BundleError::Truncated) => false,
        Err(err) => return Err(err),
    };
    let version = match (signature_ok, line.as_slice()) {
        (true, b"# v2 git bundle") => 2,
        (true, b"# v3 git bundle") => 3,
        _ => return Err(BundleError::NotABundle),
    };
    remaining -= V2_SIGNATURE.len();
    let mut header = BundleHeader {
        version,
        ..BundleHeader::default()
    };
    let mut names = std::collections::HashSet::new();
    let mut in_capabilities = version == 3;
    loop {
        if !read_line(reader, &mut line, &mut remaining, limit)? {
            return Err(BundleError::Truncated);
        }
        if line.is_empty() {
            return Ok(header);
        }
        if in_capabilities && line.first() == Some(&b'@') {
            let capability = &line[1..];
            let (key, value) = match capability.find_byte(b'=') {
                Some(i) => (&capability[..i], Some(&capability[i + 1..])),
                None => (capability, None),
            };
            match (key, value) {
                (b"object-format", Some(b"sha1")) => {}
                (b"object-format", Some(format)) => {
                    return Err(BundleError::UnsupportedObjectFormat {
                        format: format.into(),
                    });
                }
                _ => {
                    return Err(BundleError::UnsupportedCapability {
                        capability: capability.into(),
                    });
                }
            }
            continue;
        }
        in_capabilities = false;
        if let Some(rest) = line.strip_prefix(b"-") {
            let hex = rest.split(|b| *b == b' ').next().unwrap_or_default();
            let id = object_id(hex, &line)?;
            if header.prerequisites.len() >= limits.max_prerequisites {
                return Err(BundleError::TooMany {
                    what: "prerequisites",
                    limit: limits.max_prerequisites,
                });
            }
            header.prerequisites.push(id);
            continue;
        }
        let Some(space) = line.find_byte(b' ') else {
            return Err(BundleError::MalformedLine {
                line: line.as_slice().into(),
            });
        };
        let id = object_id(&line[..space], &line)?;
        let name = &line[space + 1..];
        if name == b"HEAD" {
            header.head = Some(id);
            continue;
        }
        let name = RefName::new(name)?;
        if header.refs.len() >= limits.max_refs {
            return Err(BundleError::TooMany {
                what: "refs",
                limit: limits.max_refs,
            });
        }
        if !names.insert(name.clone()) {
            return Err(BundleError::DuplicateRef { name });
        }
        header.refs.push((name, id));
    }
}

/// Write a v2 bundle header: `HEAD` first when given, then every ref, then
/// the blank line after which the pack goes.
pub fn write_header_v2(
    out: &mut impl Write,
    head: Option<ObjectId>,
    refs: &[(RefName, ObjectId)],
) -> io::Result<()> {
    out.write_all(V2_SIGNATURE)?;
    if let Some(head) = head {
        writeln!(out, "{head} HEAD")?;
    }
    for (name, id) in refs {
        write!(out, "{id} ")?;
        out.write_all(name.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.write_all(b"\n")
}

/// The branch (without `refs/heads/`) a bundle's `HEAD` most likely named:
/// a bundle records only the commit, so among the branches at that commit
/// prefer `main`, then `master`, then the first. Without a `HEAD` line the
/// same preference applies to all branches.
pub fn guess_head_branch(header: &BundleHeader) -> Option<String> {
    let branches: Vec<&[u8]> = header
        .refs
        .iter()
        .filter(|(name, id)| name.is_branch() && header.head.is_none_or(|head| head == *id))
        .map(|(name, _)| &name.as_bytes()["refs/heads/".len()..])
        .collect();
    let chosen = ["main".as_bytes(), b"master"]
        .into_iter()
        .find(|preferred| branches.contains(preferred))
        .or_else(|| branches.first().copied())?;
    chosen.to_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(hex: char) -> ObjectId {
        ObjectId::from_hex(hex.to_string().repeat(40).as_bytes()).expect("valid")
    }

    fn parse(data: &[u8]) -> Result<(BundleHeader, Vec<u8>), BundleError> {
        let mut reader = io::BufReader::new(data);
        let header = read_header(&mut reader, HeaderLimits::default())?;
        let mut rest = Vec::new();
        io::Read::read_to_end(&mut reader, &mut rest)?;
        Ok((header, rest))
    }

    #[test]
    fn v2_header_is_read_and_leaves_the_pack() {
        let data = format!(
            "# v2 git bundle\n{a} HEAD\n{a} refs/heads/main\n{b} refs/tags/v1\n\nPACKdata",
            a = id('a'),
            b = id('b')
        );
        let (header, rest) = parse(data.as_bytes()).expect("valid");
        assert_eq!(header.version, 2);
        assert_eq!(header.head, Some(id('a')));
        assert_eq!(header.refs.len(), 2);
        assert_eq!(header.refs[1].0.as_bytes(), b"refs/tags/v1");
        assert!(header.prerequisites.is_empty());
        assert_eq!(rest, b"PACKdata");
        assert_eq!(guess_head_branch(&header).as_deref(), Some("main"));
    }

    #[test]
    fn v3_capabilities_and_prerequisites() {
        let data = format!(
            "# v3 git bundle\n@object-format=sha1\n-{a} a commit message\n{b} refs/heads/dev\n\n",
            a = id('a'),
            b = id('b')
        );
        let (header, rest) = parse(data.as_bytes()).expect("valid");
        assert_eq!(header.version, 3);
        assert_eq!(header.prerequisites, vec![id('a')]);
        assert!(rest.is_empty());
        assert_eq!(guess_head_branch(&header).as_deref(), Some("dev"));
    }

    #[test]
    fn written_header_reads_back() {
        let refs = vec![
            (RefName::new(b"refs/heads/main").expect("valid"), id('1')),
            (RefName::new(b"refs/tags/v1").expect("valid"), id('2')),
        ];
        let mut out = Vec::new();
        write_header_v2(&mut out, Some(id('1')), &refs).expect("write");
        let (header, _) = parse(&out).expect("valid");
        assert_eq!(header.refs, refs);
        assert_eq!(header.head, Some(id('1')));
    }

    #[test]
    fn bad_headers_are_refused_with_a_reason() {
        let a = id('a');
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"PACK\0\0\0\x02".to_vec(), "not a git bundle"),
            (b"".to_vec(), "not a git bundle"),
            (b"# v4 git bundle\n\n".to_vec(), "not a git bundle"),
            (
                format!("# v2 git bundle\n{a} refs/heads/main\n").into_bytes(),
                "truncated",
            ),
            (
                format!("# v2 git bundle\n{a} refs/heads/ma").into_bytes(),
                "truncated",
            ),
            (
                format!("# v2 git bundle\n{a} refs/heads/a..b\n\n").into_bytes(),
                "invalid ref name",
            ),
            (
                format!("# v2 git bundle\n{a} main\n\n").into_bytes(),
                "invalid ref name",
            ),
            (
                b"# v2 git bundle\nxyz refs/heads/main\n\n".to_vec(),
                "malformed",
            ),
            (
                format!("# v3 git bundle\n@object-format=sha256\n{a} refs/heads/main\n\n")
                    .into_bytes(),
                "sha256",
            ),
            (
                format!("# v3 git bundle\n@filter=blob:none\n{a} refs/heads/main\n\n").into_bytes(),
                "filter=blob:none",
            ),
            (
                format!("# v2 git bundle\n{a} refs/heads/x\n{a} refs/heads/x\n\n").into_bytes(),
                "twice",
            ),
        ];
        for (data, expected) in cases {
            let err = parse(&data).expect_err(expected);
            assert!(
                err.to_string().contains(expected),
                "{err} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn header_size_and_ref_count_are_bounded() {
        let mut data = b"# v2 git bundle\n".to_vec();
        for i in 0..20 {
            data.extend_from_slice(format!("{} refs/heads/b{i}\n", id('a')).as_bytes());
        }
        data.push(b'\n');
        let limits = HeaderLimits {
            max_header_bytes: 200,
            ..HeaderLimits::default()
        };
        let err = read_header(&mut io::BufReader::new(&data[..]), limits).expect_err("too big");
        assert!(matches!(err, BundleError::HeaderTooLarge { .. }));
        let limits = HeaderLimits {
            max_refs: 5,
            ..HeaderLimits::default()
        };
        let err = read_header(&mut io::BufReader::new(&data[..]), limits).expect_err("too many");
        assert!(matches!(err, BundleError::TooMany { what: "refs", .. }));
    }
}
