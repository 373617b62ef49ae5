//! Deciding each command's fate before the metadata store sees it, and
//! writing the `report-status` answer.

use super::ingest::ReceivedPack;
use super::request::{Command, PushCapabilities};
use crate::objects::ObjectDb;
use crate::pktline::{Band, write_flush, write_line, write_sideband};
use bstr::BString;
use gix_hash::ObjectId;
use gix_object::Find;
use nimbus_types::{RefName, RefUpdate};
use std::collections::HashSet;
use std::io::{self, Write};

/// Looks objects up in a received pack first, then in the repository.
pub(super) struct Lookup<'a> {
    received: Option<&'a ReceivedPack>,
    handle: gix_odb::HandleArc,
    buf: Vec<u8>,
    inflate: gix_zlib::Inflate,
}

impl<'a> Lookup<'a> {
    pub(super) fn new(received: Option<&'a ReceivedPack>, existing: &ObjectDb) -> Lookup<'a> {
        Lookup {
            received,
            handle: existing.handle(),
            buf: Vec::new(),
            inflate: gix_zlib::Inflate::default(),
        }
    }

    /// Whether the received pack holds `id`.
    pub(super) fn in_received(&self, id: &ObjectId) -> bool {
        self.received
            .is_some_and(|received| received.bundle.index.lookup(id).is_some())
    }

    pub(super) fn find(&mut self, id: &ObjectId) -> Option<(gix_object::Kind, Vec<u8>)> {
        if let Some(received) = self.received
            && let Ok(Some((data, _))) = received.bundle.find(
                id,
                &mut self.buf,
                &mut self.inflate,
                &mut gix_pack::cache::Never,
            )
        {
            return Some((data.kind, data.data.to_vec()));
        }
        match self.handle.try_find(id, &mut self.buf) {
            Ok(Some(data)) => Some((data.kind, data.data.to_vec())),
            _ => None,
        }
    }

    /// The object's kind and, for tags, the non-tag object it peels to.
    fn kind_and_peeled(&mut self, id: &ObjectId) -> Option<(gix_object::Kind, Option<ObjectId>)> {
        let (kind, data) = self.find(id)?;
        if kind != gix_object::Kind::Tag {
            return Some((kind, None));
        }
        let mut data = data;
        for _ in 0..64 {
            let tag = gix_object::TagRef::from_bytes(&data, gix_hash::Kind::Sha1).ok()?;
            let target = tag.target();
            let (target_kind, target_data) = self.find(&target)?;
            if target_kind != gix_object::Kind::Tag {
                return Some((kind, Some(target)));
            }
            data = target_data;
        }
        None
    }
}

/// Check each command against git's rules and turn it into a
/// compare-and-swap update, or the reason it is refused (an `ng` line).
pub fn check_commands(
    commands: &[Command],
    received: Option<&ReceivedPack>,
    existing: &ObjectDb,
    current_branch: &RefName,
) -> Vec<Result<RefUpdate, String>> {
    let mut lookup = Lookup::new(received, existing);
    let mut names = HashSet::new();
    commands
        .iter()
        .map(|command| {
            let name = RefName::new(&command.name).map_err(|_| "funny refname".to_owned())?;
            if !names.insert(command.name.clone()) {
                return Err("duplicate ref update".to_owned());
            }
            if command.old.is_null() && command.new.is_null() {
                return Err("nothing to do: old and new are both missing".to_owned());
            }
            if command.is_delete() {
                if &name == current_branch {
                    return Err("deletion of the current branch prohibited".to_owned());
                }
                return Ok(RefUpdate {
                    name,
                    old: (!command.old.is_null()).then_some(command.old),
                    new: None,
                    new_peeled: None,
                });
            }
            let Some((kind, peeled)) = lookup.kind_and_peeled(&command.new) else {
                return Err("missing necessary objects".to_owned());
            };
            if name.is_branch() && kind != gix_object::Kind::Commit {
                return Err(format!(
                    "trying to write non-commit object {} to branch '{}'",
                    command.new, name
                ));
            }
            Ok(RefUpdate {
                name,
                old: (!command.old.is_null()).then_some(command.old),
                new: Some(command.new),
                new_peeled: peeled,
            })
        })
        .collect()
}

/// Write the report for a push: `unpack ok` or the unpack error, then an
/// `ok` or `ng` line per command.
pub fn write_report<W: Write>(
    out: &mut W,
    capabilities: &PushCapabilities,
    unpack: Result<(), String>,
    results: &[(BString, Result<(), String>)],
) -> io::Result<()> {
    // With side-band, an unpack error is also shown as `remote: error: ...`.
    let show_error = |out: &mut W| -> io::Result<()> {
        match &unpack {
            Err(message) if capabilities.side_band_64k => write_sideband(
                out,
                Band::Progress,
                format!("error: {message}\n").as_bytes(),
            ),
            _ => Ok(()),
        }
    };
    if !(capabilities.report_status || capabilities.report_status_v2) {
        if capabilities.side_band_64k {
            show_error(out)?;
            write_flush(out)?;
        }
        return Ok(());
    }
    let mut report = Vec::new();
    match &unpack {
        Ok(()) => write_line(&mut report, "unpack ok")?,
        Err(message) => write_line(&mut report, format!("unpack {}", one_line(message)))?,
    }
    for (name, result) in results {
        let mut line = Vec::with_capacity(name.len() + 16);
        match result {
            Ok(()) => line.extend_from_slice(b"ok "),
            Err(_) => line.extend_from_slice(b"ng "),
        }
        line.extend_from_slice(name);
        if let Err(reason) = result {
            line.push(b' ');
            line.extend_from_slice(one_line(reason).as_bytes());
        }
        write_line(&mut report, line)?;
    }
    write_flush(&mut report)?;
    if capabilities.side_band_64k {
        show_error(out)?;
        write_sideband(out, Band::Data, &report)?;
        write_flush(out)
    } else {
        out.write_all(&report)
    }
}

fn one_line(message: &str) -> String {
    message
        .lines()
        .collect::<Vec<_>>()
        .join("; ")
        .replace(['\r', '\0'], " ")
}

/// Reject every command with the same reason (e.g. after an unpack error).
pub fn reject_all(commands: &[Command], reason: &str) -> Vec<(BString, Result<(), String>)> {
    commands
        .iter()
        .map(|c| (c.name.clone(), Err(reason.to_owned())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktline::{Packet, decode};
    use bstr::ByteSlice;

    #[test]
    fn report_lists_each_ref_inside_side_band() {
        let caps = PushCapabilities {
            report_status: true,
            side_band_64k: true,
            ..PushCapabilities::default()
        };
        let results = vec![
            (BString::from("refs/heads/main"), Ok(())),
            (BString::from("refs/heads/x"), Err("stale info".to_owned())),
        ];
        let mut out = Vec::new();
        write_report(&mut out, &caps, Ok(()), &results).expect("vec");
        let (packet, used) = decode(&out).expect("valid").expect("complete");
        let Packet::Data(data) = packet else {
            panic!("expected data")
        };
        assert_eq!(data[0], 1);
        let inner = &data[1..];
        let mut lines = Vec::new();
        let mut rest = inner;
        while let Some((p, n)) = decode(rest).expect("valid") {
            lines.push(p.line().map(|l| l.to_str_lossy().into_owned()));
            rest = &rest[n..];
        }
        assert_eq!(
            lines,
            vec![
                Some("unpack ok".to_owned()),
                Some("ok refs/heads/main".to_owned()),
                Some("ng refs/heads/x stale info".to_owned()),
                None
            ]
        );
        assert_eq!(&out[used..], b"0000");
    }
}
