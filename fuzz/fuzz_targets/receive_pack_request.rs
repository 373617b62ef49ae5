//! receive-pack request parsing: `read_request` over arbitrary bytes gives a
//! request or an error, never a panic; an accepted request is consistent
//! and leaves exactly the bytes after its last flush in the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nimbus_git::pktline::{Packet, PacketReader, decode, write_flush, write_line};
use nimbus_git::receive_pack::request::{MAX_PUSH_OPTIONS, read_request};
use std::io::Read;

/// The offset right after the `n`th flush packet, if decoding reaches it.
fn after_flush(data: &[u8], n: usize) -> Option<usize> {
    let mut at = 0;
    let mut seen = 0;
    while let Ok(Some((packet, used))) = decode(&data[at..]) {
        at += used;
        if packet == Packet::Flush {
            seen += 1;
            if seen == n {
                return Some(at);
            }
        }
    }
    None
}

fn check(body: &[u8]) {
    let mut reader = PacketReader::new(body);
    let Ok(request) = read_request(&mut reader) else {
        return;
    };
    assert!(!request.commands.is_empty(), "a push without commands");
    assert!(request.push_options.len() <= MAX_PUSH_OPTIONS);
    if !request.capabilities.push_options {
        assert!(request.push_options.is_empty());
    }
    assert_eq!(
        request.expects_pack(),
        request.commands.iter().any(|c| !c.new.is_null())
    );
    // Commands end at a flush, push options (if any) at a second one; the
    // pack is whatever follows.
    let flushes = if request.capabilities.push_options {
        2
    } else {
        1
    };
    let end = after_flush(body, flushes).expect("an accepted request ends in a flush");
    let mut rest = Vec::new();
    reader.into_inner().read_to_end(&mut rest).expect("slice");
    assert_eq!(
        rest,
        &body[end..],
        "the pack does not start after the flush"
    );
}

/// The input as lines of a well-framed request: `\n` separates lines, a
/// `0000` line is a flush, and `\t` stands for the NUL before capabilities.
fn framed(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in data.split(|&b| b == b'\n') {
        if piece == b"0000" {
            write_flush(&mut out).expect("vec");
        } else if piece.len() < 65515 {
            let line: Vec<u8> = piece
                .iter()
                .map(|&b| if b == b'\t' { 0 } else { b })
                .collect();
            write_line(&mut out, line).expect("vec");
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    check(data);
    check(&framed(data));
});
