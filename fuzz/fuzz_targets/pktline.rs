//! pkt-line framing: `decode` and `PacketReader` over arbitrary bytes must
//! agree packet for packet and never panic, and what the writers write must
//! decode back to what was written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nimbus_git::pktline::{
    Band, MAX_PKT_DATA_LEN, MAX_PKT_LEN, Packet, PacketReader, PktLineError, SidebandWriter,
    decode, write_data, write_delim, write_flush, write_line, write_sideband_sized,
};
use std::io::{self, Read, Write};

/// A reader that hands out at most `step` bytes per call, to exercise the
/// short reads of a network stream.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[derive(Debug, PartialEq)]
enum Owned {
    Data(Vec<u8>),
    Flush,
    Delim,
    ResponseEnd,
}

fn owned(p: Packet<'_>) -> Owned {
    match p {
        Packet::Data(d) => Owned::Data(d.to_vec()),
        Packet::Flush => Owned::Flush,
        Packet::Delim => Owned::Delim,
        Packet::ResponseEnd => Owned::ResponseEnd,
    }
}

/// How a run over a buffer ended.
#[derive(Debug, PartialEq)]
enum End {
    Clean,
    Truncated,
    Invalid,
    TooLong(usize),
}

/// Every packet `decode` finds in `data`, and how it ended.
fn decode_all(mut data: &[u8]) -> (Vec<Owned>, End) {
    let mut out = Vec::new();
    loop {
        if data.is_empty() {
            return (out, End::Clean);
        }
        match decode(data) {
            Ok(Some((packet, used))) => {
                assert!(used >= 4 && used <= data.len() && used <= MAX_PKT_LEN);
                if let Packet::Data(d) = packet {
                    assert_eq!(d.len(), used - 4);
                    assert!(std::ptr::eq(d.as_ptr(), data[4..].as_ptr()));
                    assert!(d.len() <= MAX_PKT_DATA_LEN);
                    let line = packet.line().expect("data has a line");
                    assert!(d.starts_with(line) && d.len() - line.len() <= 1);
                } else {
                    assert_eq!(used, 4);
                    assert_eq!(packet.line(), None);
                }
                out.push(owned(packet));
                data = &data[used..];
            }
            Ok(None) => return (out, End::Truncated),
            Err(PktLineError::InvalidLength { header }) => {
                assert_eq!(&header[..], &data[..4]);
                return (out, End::Invalid);
            }
            Err(PktLineError::TooLong { length }) => {
                assert!(length > MAX_PKT_LEN);
                return (out, End::TooLong(length));
            }
            Err(other) => panic!("decode of a buffer returned {other:?}"),
        }
    }
}

fn read_all(reader: &mut PacketReader<impl Read>) -> (Vec<Owned>, End) {
    let mut out = Vec::new();
    loop {
        match reader.next_packet() {
            Ok(Some(packet)) => out.push(owned(packet)),
            Ok(None) => return (out, End::Clean),
            Err(PktLineError::Truncated) => return (out, End::Truncated),
            Err(PktLineError::InvalidLength { .. }) => return (out, End::Invalid),
            Err(PktLineError::TooLong { length }) => return (out, End::TooLong(length)),
            Err(other) => panic!("reading a buffer returned {other:?}"),
        }
    }
}

fn check_decoders_agree(data: &[u8]) {
    let expected = decode_all(data);
    let got = read_all(&mut PacketReader::new(data));
    assert_eq!(got, expected, "PacketReader and decode disagree");
    let step = 1 + data.first().copied().unwrap_or(0) as usize % 7;
    let got = read_all(&mut PacketReader::new(Trickle { data, step }));
    assert_eq!(got, expected, "PacketReader over short reads disagrees");

    // The reader leaves the bytes after a flush in the stream.
    if let Some(pos) = find_flush_boundary(data) {
        let mut reader = PacketReader::new(data);
        loop {
            match reader.next_packet() {
                Ok(Some(Packet::Flush)) => break,
                Ok(Some(_)) => {}
                other => panic!("expected to reach the flush, got {other:?}"),
            }
        }
        let mut rest = Vec::new();
        reader.into_inner().read_to_end(&mut rest).expect("slice");
        assert_eq!(rest, &data[pos..]);
    }
}

/// The offset right after the first flush packet, if decoding reaches one.
fn find_flush_boundary(data: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Ok(Some((packet, used))) = decode(&data[at..]) {
        at += used;
        if packet == Packet::Flush {
            return Some(at);
        }
    }
    None
}

/// Use the input as a script of writes, then check they decode back.
fn check_round_trip(data: &[u8]) {
    let mut out = Vec::new();
    let mut expected = Vec::new();
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let take = |rest: &mut &[u8], max: usize| {
            let len = rest.first().map_or(0, |&b| b as usize * 97 % (max + 1));
            let len = len.min(rest.len().saturating_sub(1));
            let chunk = &rest[1.min(rest.len())..1.min(rest.len()) + len];
            *rest = &rest[(1 + len).min(rest.len())..];
            chunk.to_vec()
        };
        match op % 6 {
            0 => {
                let line = take(&mut rest, MAX_PKT_DATA_LEN - 1);
                write_line(&mut out, &line).expect("vec");
                let mut with_nl = line;
                with_nl.push(b'\n');
                expected.push(Owned::Data(with_nl));
            }
            1 => {
                let chunk = take(&mut rest, MAX_PKT_DATA_LEN);
                write_data(&mut out, &chunk).expect("vec");
                expected.push(Owned::Data(chunk));
            }
            2 => {
                write_flush(&mut out).expect("vec");
                expected.push(Owned::Flush);
            }
            3 => {
                write_delim(&mut out).expect("vec");
                expected.push(Owned::Delim);
            }
            4 => {
                // Side-band data, split into packets of at most `max`.
                let max = 1 + op as usize % 1000;
                let chunk = take(&mut rest, 4 * max);
                write_sideband_sized(&mut out, Band::Progress, &chunk, max).expect("vec");
                for part in chunk.chunks(max) {
                    let mut packet = vec![Band::Progress as u8];
                    packet.extend_from_slice(part);
                    expected.push(Owned::Data(packet));
                }
            }
            _ => {
                let max = 1 + op as usize % 300;
                let chunk = take(&mut rest, 4 * max);
                let mut w = SidebandWriter::with_max(Vec::new(), Band::Data, max);
                // Write in uneven pieces.
                for piece in chunk.chunks(1 + max / 3) {
                    w.write_all(piece).expect("vec");
                }
                out.extend_from_slice(&w.finish().expect("vec"));
                for part in chunk.chunks(max) {
                    let mut packet = vec![Band::Data as u8];
                    packet.extend_from_slice(part);
                    expected.push(Owned::Data(packet));
                }
            }
        }
    }
    let (decoded, end) = decode_all(&out);
    assert_eq!(end, End::Clean);
    assert_eq!(decoded, expected, "written packets do not decode back");
    let (read, end) = read_all(&mut PacketReader::new(&out[..]));
    assert_eq!(end, End::Clean);
    assert_eq!(read, expected);
}

fuzz_target!(|data: &[u8]| {
    check_decoders_agree(data);
    check_round_trip(data);
});
