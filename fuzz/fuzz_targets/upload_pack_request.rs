//! upload-pack request parsing: the v0/v1 parser, the v2 command parser and
//! its `fetch` / `ls-refs` interpreters, and filter specs. Arbitrary bytes
//! must give a request or an error, never a panic, and what is accepted
//! must be consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nimbus_git::pktline::{write_delim, write_flush, write_line};
use nimbus_git::upload_pack::request::{
    FetchRequest, Filter, MAX_HAVES, MAX_SHALLOWS, MAX_WANTS, RequestError, parse_v0,
    parse_v2_command, parse_v2_fetch, parse_v2_ls_refs,
};

fn check_fetch(request: &FetchRequest) {
    assert!(request.wants.len() <= MAX_WANTS);
    assert!(request.haves.len() <= MAX_HAVES);
    assert!(request.client_shallows.len() <= MAX_SHALLOWS);
    let d = &request.deepen;
    assert!(
        !(d.depth.is_some() && (d.since.is_some() || !d.not.is_empty())),
        "conflicting deepen accepted"
    );
    if let Some(depth) = d.depth {
        assert!(depth > 0 && depth <= i32::MAX as u32);
    }
    if let Some(filter) = request.filter {
        check_filter_round_trip(filter);
    }
}

/// A filter written back as a spec parses to the same filter.
fn check_filter_round_trip(filter: Filter) {
    let spec = match filter {
        Filter::BlobNone => "blob:none".to_owned(),
        Filter::BlobLimit(n) => format!("blob:limit={n}"),
        Filter::TreeDepth(d) => format!("tree:{d}"),
    };
    assert_eq!(
        Filter::parse(spec.as_bytes()).expect("a written filter parses"),
        filter
    );
}

/// Turn the input into pkt-lines: one line per `\n`-separated piece, with
/// `0000` and `0001` pieces becoming flush and delimiter packets, so the
/// parsers see well-framed requests most of the time.
fn framed(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in data.split(|&b| b == b'\n') {
        match piece {
            b"0000" => write_flush(&mut out).expect("vec"),
            b"0001" => write_delim(&mut out).expect("vec"),
            line if line.len() < 65515 => write_line(&mut out, line).expect("vec"),
            _ => {}
        }
    }
    out
}

fn check_body(body: &[u8]) {
    match parse_v0(body) {
        Ok(request) => check_fetch(&request),
        Err(RequestError::TooMany { .. }) => unreachable!("inputs are too small to hit limits"),
        Err(_) => {}
    }
    match parse_v2_command(body) {
        Ok(Some(cmd)) => {
            assert!(!cmd.command.is_empty(), "a command without a name");
            for cap in &cmd.capabilities {
                if let Some(format) = cap.strip_prefix(b"object-format=") {
                    assert_eq!(format, b"sha1");
                }
            }
            if let Ok(request) = parse_v2_fetch(&cmd) {
                check_fetch(&request);
                assert_eq!(
                    request.side_band,
                    nimbus_git::upload_pack::request::SideBand::Large
                );
            }
            if let Ok(request) = parse_v2_ls_refs(&cmd) {
                assert!(request.prefixes.len() <= cmd.args.len());
            }
        }
        Ok(None) | Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    // The raw bytes as a request body.
    check_body(data);
    // The bytes as lines of a well-framed request.
    check_body(&framed(data));
    // The bytes as a filter spec.
    if let Ok(filter) = Filter::parse(data) {
        check_filter_round_trip(filter);
    }
});
