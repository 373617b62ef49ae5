//! Reading a receive-pack request: ref update commands with the client's
//! capabilities, then push options. The pack that follows stays in the
//! stream for the ingester.

use crate::pktline::{Packet, PacketReader, PktLineError};
use bstr::{BString, ByteSlice};
use gix_hash::ObjectId;
use std::io::Read;

/// The most commands one push may carry.
pub const MAX_COMMANDS: usize = 200_000;
/// The most push options one push may carry.
pub const MAX_PUSH_OPTIONS: usize = 256;

/// Why a receive-pack request was refused.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    PktLine(#[from] PktLineError),
    #[error("malformed command line {line:?}; expected '<old-id> <new-id> <ref>'")]
    Malformed { line: BString },
    #[error("the push has more than {limit} {what}")]
    TooMany { what: &'static str, limit: usize },
    #[error("the push has no commands")]
    Empty,
    #[error("only object-format=sha1 is supported, not {format:?}")]
    UnsupportedObjectFormat { format: BString },
    #[error("push certificates are not supported")]
    PushCertUnsupported,
}

/// One ref update as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The client's idea of the current value; null to create.
    pub old: ObjectId,
    /// The value to set; null to delete.
    pub new: ObjectId,
    pub name: BString,
}

impl Command {
    pub fn is_delete(&self) -> bool {
        self.new.is_null()
    }
}

/// Capabilities a pushing client selected.
#[derive(Debug, Clone, Default)]
pub struct PushCapabilities {
    pub report_status: bool,
    pub report_status_v2: bool,
    pub side_band_64k: bool,
    pub quiet: bool,
    pub atomic: bool,
    pub push_options: bool,
    pub agent: Option<BString>,
}

/// A parsed push, up to (not including) the pack.
#[derive(Debug, Clone, Default)]
pub struct PushRequest {
    pub commands: Vec<Command>,
    pub capabilities: PushCapabilities,
    pub push_options: Vec<BString>,
    /// `shallow` lines of a shallow client (accepted, not needed: objects
    /// must still connect to what the server has).
    pub shallows: Vec<ObjectId>,
}

impl PushRequest {
    /// Whether a pack follows the commands (git sends none for pure deletes).
    pub fn expects_pack(&self) -> bool {
        self.commands.iter().any(|c| !c.is_delete())
    }
}

fn parse_id(line: &[u8], hex: &[u8]) -> Result<ObjectId, CommandError> {
    if hex.len() != 40 {
        return Err(CommandError::Malformed { line: line.into() });
    }
    ObjectId::from_hex(hex).map_err(|_| CommandError::Malformed { line: line.into() })
}

fn apply_capabilities(caps: &mut PushCapabilities, list: &[u8]) -> Result<(), CommandError> {
    for cap in list.split_str(" ").filter(|c| !c.is_empty()) {
        match cap {
            b"report-status" => caps.report_status = true,
            b"report-status-v2" => caps.report_status_v2 = true,
            b"side-band-64k" => caps.side_band_64k = true,
            b"quiet" => caps.quiet = true,
            b"atomic" => caps.atomic = true,
            b"push-options" => caps.push_options = true,
            other => {
                if let Some(agent) = other.strip_prefix(b"agent=") {
                    caps.agent = Some(agent.into());
                } else if let Some(format) = other.strip_prefix(b"object-format=")
                    && format != b"sha1"
                {
                    return Err(CommandError::UnsupportedObjectFormat {
                        format: format.into(),
                    });
                }
                // Unknown capabilities are ignored, as git does.
            }
        }
    }
    Ok(())
}

/// Read commands (and push options) from the start of a push request.
pub fn read_request<R: Read>(reader: &mut PacketReader<R>) -> Result<PushRequest, CommandError> {
    let mut request = PushRequest::default();
    let mut first = true;
    loop {
        let packet = reader.expect_packet()?;
        let data = match packet {
            Packet::Flush => break,
            Packet::Data(_) => packet.line().unwrap_or_default(),
            _ => {
                return Err(CommandError::Malformed {
                    line: "delimiter".into(),
                });
            }
        };
        if let Some(hex) = data.strip_prefix(b"shallow ") {
            let id = parse_id(data, hex)?;
            if request.shallows.len() >= MAX_COMMANDS {
                return Err(CommandError::TooMany {
                    what: "shallow lines",
                    limit: MAX_COMMANDS,
                });
            }
            request.shallows.push(id);
            continue;
        }
        if data.starts_with(b"push-cert") {
            return Err(CommandError::PushCertUnsupported);
        }
        let (command, caps) = match data.find_byte(0) {
            Some(nul) => (&data[..nul], Some(&data[nul + 1..])),
            None => (data, None),
        };
        if first {
            if let Some(caps) = caps {
                apply_capabilities(&mut request.capabilities, caps)?;
            }
            first = false;
        }
        let mut parts = command.splitn_str(3, " ");
        let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CommandError::Malformed { line: data.into() });
        };
        if request.commands.len() >= MAX_COMMANDS {
            return Err(CommandError::TooMany {
                what: "commands",
                limit: MAX_COMMANDS,
            });
        }
        request.commands.push(Command {
            old: parse_id(data, old)?,
            new: parse_id(data, new)?,
            name: name.into(),
        });
    }
    if request.commands.is_empty() {
        return Err(CommandError::Empty);
    }
    if request.capabilities.push_options {
        loop {
            let packet = reader.expect_packet()?;
            match packet {
                Packet::Flush => break,
                Packet::Data(_) => {
                    if request.push_options.len() >= MAX_PUSH_OPTIONS {
                        return Err(CommandError::TooMany {
                            what: "push options",
                            limit: MAX_PUSH_OPTIONS,
                        });
                    }
                    request
                        .push_options
                        .push(packet.line().unwrap_or_default().into());
                }
                _ => {
                    return Err(CommandError::Malformed {
                        line: "delimiter".into(),
                    });
                }
            }
        }
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktline::{write_flush, write_line};

    const Z: &str = "0000000000000000000000000000000000000000";
    const A: &str = "1111111111111111111111111111111111111111";

    #[test]
    fn reads_commands_capabilities_and_push_options() {
        let mut body = Vec::new();
        write_line(
            &mut body,
            format!("{Z} {A} refs/heads/main\0report-status side-band-64k atomic push-options agent=git/2"),
        )
        .expect("vec");
        write_line(&mut body, format!("{A} {Z} refs/heads/old")).expect("vec");
        write_flush(&mut body).expect("vec");
        write_line(&mut body, "ci.skip").expect("vec");
        write_flush(&mut body).expect("vec");
        body.extend_from_slice(b"PACK");
        let mut reader = PacketReader::new(&body[..]);
        let request = read_request(&mut reader).expect("valid");
        assert_eq!(request.commands.len(), 2);
        assert_eq!(request.commands[0].name, "refs/heads/main");
        assert!(request.commands[1].is_delete());
        let caps = &request.capabilities;
        assert!(caps.report_status && caps.side_band_64k && caps.atomic && caps.push_options);
        assert_eq!(request.push_options, vec![BString::from("ci.skip")]);
        let mut rest = Vec::new();
        reader.into_inner().read_to_end(&mut rest).expect("read");
        assert_eq!(rest, b"PACK");
    }

    #[test]
    fn malformed_and_empty_pushes_are_refused() {
        let mut body = Vec::new();
        write_line(&mut body, format!("{Z} {A}")).expect("vec");
        write_flush(&mut body).expect("vec");
        let err = read_request(&mut PacketReader::new(&body[..])).expect_err("no ref name");
        assert!(matches!(err, CommandError::Malformed { .. }));
        let err = read_request(&mut PacketReader::new(&b"0000"[..])).expect_err("empty");
        assert!(matches!(err, CommandError::Empty));
        let err = read_request(&mut PacketReader::new(&b"00"[..])).expect_err("truncated");
        assert!(matches!(
            err,
            CommandError::PktLine(PktLineError::Truncated)
        ));
    }
}
