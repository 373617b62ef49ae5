//! pkt-line framing: the length-prefixed lines every git protocol message is
//! made of. Decoding is bounded: a length is checked before anything is
//! allocated, and a line never exceeds [`MAX_PKT_LEN`].

use std::io::{self, Read, Write};

/// The longest pkt-line git allows, including its 4-byte length header.
pub const MAX_PKT_LEN: usize = 65520;
/// The most payload one pkt-line carries.
pub const MAX_PKT_DATA_LEN: usize = MAX_PKT_LEN - 4;
/// The most payload of one side-band line (one byte goes to the band number).
pub const MAX_SIDEBAND_DATA_LEN: usize = MAX_PKT_DATA_LEN - 1;

/// One decoded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    Data(&'a [u8]),
    /// `0000`: end of a message.
    Flush,
    /// `0001`: separates sections (protocol v2).
    Delim,
    /// `0002`: end of a response (protocol v2, stateless).
    ResponseEnd,
}

impl<'a> Packet<'a> {
    /// The payload without its trailing newline, if this is a data line.
    pub fn line(&self) -> Option<&'a [u8]> {
        match self {
            Packet::Data(data) => Some(data.strip_suffix(b"\n").unwrap_or(data)),
            _ => None,
        }
    }
}

/// Why a pkt-line could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum PktLineError {
    #[error("invalid pkt-line length header {header:?}")]
    InvalidLength { header: [u8; 4] },
    #[error("pkt-line length {length} is out of range (at most {MAX_PKT_LEN})")]
    TooLong { length: usize },
    #[error("the request ended in the middle of a pkt-line")]
    Truncated,
    #[error("the request ended before its flush packet")]
    UnexpectedEof,
    #[error("reading the request failed")]
    Io(#[from] io::Error),
}

fn parse_length(header: [u8; 4]) -> Result<usize, PktLineError> {
    let mut length = 0usize;
    for byte in header {
        let digit = (byte as char)
            .to_digit(16)
            .ok_or(PktLineError::InvalidLength { header })?;
        length = length * 16 + digit as usize;
    }
    Ok(length)
}

/// Decode one packet from the start of `buf`. Returns the packet and the
/// number of bytes it used, or `None` if `buf` holds only part of a packet.
pub fn decode(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>, PktLineError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let header: [u8; 4] = header.try_into().expect("slice of length 4");
    let length = parse_length(header)?;
    let packet = match length {
        0 => Packet::Flush,
        1 => Packet::Delim,
        2 => Packet::ResponseEnd,
        3 => return Err(PktLineError::InvalidLength { header }),
        length if length > MAX_PKT_LEN => return Err(PktLineError::TooLong { length }),
        length => match buf.get(4..length) {
            Some(data) => return Ok(Some((Packet::Data(data), length))),
            None => return Ok(None),
        },
    };
    Ok(Some((packet, 4)))
}

/// Reads packets one at a time from a byte stream, never buffering more than
/// one packet, so the bytes after a flush (a pack) stay in the stream.
pub struct PacketReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: Read> PacketReader<R> {
    pub fn new(inner: R) -> Self {
        PacketReader {
            inner,
            buf: Vec::with_capacity(1024),
        }
    }

    /// The next packet, or `None` at a clean end of stream.
    pub fn next_packet(&mut self) -> Result<Option<Packet<'_>>, PktLineError> {
        let mut header = [0u8; 4];
        let mut filled = 0;
        while filled < 4 {
            let n = self.inner.read(&mut header[filled..])?;
            if n == 0 {
                return if filled == 0 {
                    Ok(None)
                } else {
                    Err(PktLineError::Truncated)
                };
            }
            filled += n;
        }
        let length = parse_length(header)?;
        match length {
            0 => return Ok(Some(Packet::Flush)),
            1 => return Ok(Some(Packet::Delim)),
            2 => return Ok(Some(Packet::ResponseEnd)),
            3 => return Err(PktLineError::InvalidLength { header }),
            length if length > MAX_PKT_LEN => return Err(PktLineError::TooLong { length }),
            _ => {}
        }
        self.buf.clear();
        self.buf.resize(length - 4, 0);
        self.inner.read_exact(&mut self.buf).map_err(|err| {
            if err.kind() == io::ErrorKind::UnexpectedEof {
                PktLineError::Truncated
            } else {
                PktLineError::Io(err)
            }
        })?;
        Ok(Some(Packet::Data(&self.buf)))
    }

    /// Like [`Self::next_packet`], but the end of the stream is an error.
    pub fn expect_packet(&mut self) -> Result<Packet<'_>, PktLineError> {
        self.next_packet()?.ok_or(PktLineError::UnexpectedEof)
    }

    /// The underlying stream, positioned right after the last packet read.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The underlying stream, positioned right after the last packet read.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// Write one data line. `data` must fit in one packet.
pub fn write_data(out: &mut (impl Write + ?Sized), data: &[u8]) -> io::Result<()> {
    debug_assert!(data.len() <= MAX_PKT_DATA_LEN, "caller splits long data");
    write!(out, "{:04x}", data.len() + 4)?;
    out.write_all(data)
}

/// Write one text line, adding the newline.
pub fn write_line(out: &mut (impl Write + ?Sized), line: impl AsRef<[u8]>) -> io::Result<()> {
    let line = line.as_ref();
    write!(out, "{:04x}", line.len() + 5)?;
    out.write_all(line)?;
    out.write_all(b"\n")
}

pub fn write_flush(out: &mut (impl Write + ?Sized)) -> io::Result<()> {
    out.write_all(b"0000")
}

pub fn write_delim(out: &mut (impl Write + ?Sized)) -> io::Result<()> {
    out.write_all(b"0001")
}

/// Side-band channels of `side-band-64k` and `sideband-all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Band {
    Data = 1,
    Progress = 2,
    Error = 3,
}

/// Write `data` on a side-band channel, split into as many packets as needed.
pub fn write_sideband(out: &mut (impl Write + ?Sized), band: Band, data: &[u8]) -> io::Result<()> {
    write_sideband_sized(out, band, data, MAX_SIDEBAND_DATA_LEN)
}

/// Like [`write_sideband`], with packets of at most `max` payload bytes
/// (995 for the old `side-band`).
pub fn write_sideband_sized(
    out: &mut (impl Write + ?Sized),
    band: Band,
    data: &[u8],
    max: usize,
) -> io::Result<()> {
    for chunk in data.chunks(max) {
        write!(out, "{:04x}", chunk.len() + 5)?;
        out.write_all(&[band as u8])?;
        out.write_all(chunk)?;
    }
    Ok(())
}

/// A writer that wraps everything written to it into side-band packets on
/// one band, buffering up to one full packet so packets are large.
pub struct SidebandWriter<W: Write> {
    inner: W,
    band: Band,
    max: usize,
    buf: Vec<u8>,
}

/// Payload limit of the old `side-band` capability.
pub const SMALL_SIDEBAND_DATA_LEN: usize = 995;

impl<W: Write> SidebandWriter<W> {
    pub fn new(inner: W, band: Band) -> Self {
        Self::with_max(inner, band, MAX_SIDEBAND_DATA_LEN)
    }

    /// Packets of at most `max` payload bytes.
    pub fn with_max(inner: W, band: Band, max: usize) -> Self {
        SidebandWriter {
            inner,
            band,
            max,
            buf: Vec::with_capacity(max),
        }
    }

    /// Flush buffered data and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_buf()?;
        Ok(self.inner)
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            write_sideband_sized(&mut self.inner, self.band, &self.buf, self.max)?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl<W: Write> Write for SidebandWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.max - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.max {
            self.flush_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_data_and_special_packets() {
        let input = b"0009want\n000000010002";
        let (p, n) = decode(input).expect("valid").expect("complete");
        assert_eq!((p, n), (Packet::Data(b"want\n"), 9));
        assert_eq!(p.line(), Some(&b"want"[..]));
        let rest = &input[n..];
        assert_eq!(decode(rest).expect("valid"), Some((Packet::Flush, 4)));
        assert_eq!(decode(&rest[4..]).expect("valid"), Some((Packet::Delim, 4)));
        assert_eq!(
            decode(&rest[8..]).expect("valid"),
            Some((Packet::ResponseEnd, 4))
        );
    }

    #[test]
    fn partial_input_asks_for_more() {
        assert_eq!(decode(b"00").expect("valid"), None);
        assert_eq!(decode(b"000awa").expect("valid"), None);
    }

    #[test]
    fn refuses_bad_lengths() {
        assert!(matches!(
            decode(b"zzzz"),
            Err(PktLineError::InvalidLength { .. })
        ));
        assert!(matches!(
            decode(b"0003"),
            Err(PktLineError::InvalidLength { .. })
        ));
        assert!(matches!(
            decode(b"fff1"),
            Err(PktLineError::TooLong { length: 65521 })
        ));
    }

    #[test]
    fn reader_leaves_the_bytes_after_a_flush_in_the_stream() {
        let mut reader = PacketReader::new(&b"0008abcd0000PACK..."[..]);
        assert_eq!(reader.expect_packet().expect("ok"), Packet::Data(b"abcd"));
        assert_eq!(reader.expect_packet().expect("ok"), Packet::Flush);
        let mut rest = Vec::new();
        reader.into_inner().read_to_end(&mut rest).expect("read");
        assert_eq!(rest, b"PACK...");
    }

    #[test]
    fn reader_reports_truncation() {
        let mut reader = PacketReader::new(&b"0010abc"[..]);
        assert!(matches!(reader.next_packet(), Err(PktLineError::Truncated)));
        let mut reader = PacketReader::new(&b"00"[..]);
        assert!(matches!(reader.next_packet(), Err(PktLineError::Truncated)));
        let mut reader = PacketReader::new(&b""[..]);
        assert!(matches!(reader.next_packet(), Ok(None)));
    }

    #[test]
    fn sideband_writer_splits_into_max_sized_packets() {
        let data = vec![7u8; MAX_SIDEBAND_DATA_LEN + 10];
        let mut w = SidebandWriter::new(Vec::new(), Band::Data);
        w.write_all(&data).expect("write");
        let out = w.finish().expect("finish");
        let (first, n) = decode(&out).expect("valid").expect("complete");
        assert_eq!(n, MAX_PKT_LEN);
        assert_eq!(first, Packet::Data(&out[4..MAX_PKT_LEN]));
        assert_eq!(out[4], 1);
        let (second, _) = decode(&out[n..]).expect("valid").expect("complete");
        assert_eq!(second, Packet::Data(&out[n + 4..]));
        assert_eq!(out.len() - n - 5, 10);
    }
}
