//! Streaming a pack for a [`PackPlan`]: stored deltas are copied as they are
//! when their base travels too (or, for thin packs, when the client has the
//! base); everything else is sent whole. Entries are written as they are
//! produced, never collected.

use super::plan::PackPlan;
use gix_hash::ObjectId;
use gix_hashtable::HashSet;
use gix_object::Find;
use gix_pack::data::output;
use gix_parallel::Finalize;
use std::io::Write;

/// Why a pack could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("the repository has more than {max} objects to send")]
    TooManyObjects { max: u32 },
    #[error("generating the pack failed")]
    Generate(#[source] gix_error::Error),
    #[error("object {id} disappeared while generating the pack")]
    Missing { id: ObjectId },
    #[error("{count} objects could not be found while generating the pack")]
    MissingObjects { count: usize },
    #[error("writing the pack failed")]
    Write(#[source] std::io::Error),
}

/// Figures about a written pack.
#[derive(Debug, Clone, Default)]
pub struct PackStats {
    pub objects: usize,
    pub copied_from_pack: usize,
    pub recompressed: usize,
    pub checksum: Option<ObjectId>,
}

/// Write a pack holding `plan.objects` to `out`. With `thin`, deltas
/// against objects the client already has are kept as ref-deltas.
pub fn write_pack(
    handle: &gix_odb::HandleArc,
    plan: &PackPlan,
    thin: bool,
    out: impl Write,
) -> Result<PackStats, PackError> {
    let num_entries = u32::try_from(plan.objects.len())
        .map_err(|_| PackError::TooManyObjects { max: u32::MAX })?;
    let mut db = handle.clone();
    db.prevent_pack_unload();
    let counts: Vec<output::Count> = plan
        .objects
        .iter()
        .map(|id| output::Count {
            id: *id,
            entry_pack_location: output::count::PackLocation::NotLookedUp,
        })
        .collect();
    let planned: HashSet<ObjectId> = if thin {
        plan.objects.iter().copied().collect()
    } else {
        HashSet::default()
    };
    let compression = gix_zlib::Compression::DEFAULT;
    let entries = output::entry::iter_from_counts(
        counts,
        db.clone(),
        Box::new(gix_utils::progress::Discard),
        output::entry::iter_from_counts::Options {
            thread_limit: None,
            mode: output::entry::iter_from_counts::Mode::PackCopyAndBaseObjects,
            allow_thin_pack: thin,
            chunk_size: 64,
            version: gix_pack::data::Version::V2,
            compression,
        },
    )
    .map_err(PackError::Generate)?;
    let mut in_order = gix_parallel::InOrderIter::from(entries);
    let mut buf = Vec::new();
    // gix reuses whatever base a stored delta has; a thin pack may only
    // refer to bases the client has, so other ref-deltas are sent whole.
    let fixed = std::iter::from_fn(|| {
        let chunk = in_order.next()?;
        Some(chunk.and_then(|mut entries: Vec<output::Entry>| {
            for entry in entries.iter_mut() {
                if let output::entry::Kind::DeltaOid { id: base } = entry.kind {
                    if plan.client_has.contains(&base) || planned.contains(&base) {
                        continue;
                    }
                    let id = entry.id;
                    let data = db.try_find(&id, &mut buf)?.ok_or_else(|| {
                        gix_error::ErrorExt::raise(gix_error::message!(
                            "object {id} disappeared while packing"
                        ))
                    })?;
                    let count = output::Count {
                        id,
                        entry_pack_location: output::count::PackLocation::NotLookedUp,
                    };
                    *entry = output::Entry::from_data(&count, &data, compression)?;
                }
            }
            Ok(entries)
        }))
    });
    let mut writer = output::bytes::FromEntriesIter::new(
        fixed,
        std::io::BufWriter::with_capacity(256 * 1024, out),
        num_entries,
        gix_pack::data::Version::V2,
        gix_hash::Kind::Sha1,
    );
    for written in &mut writer {
        if let Err(err) = written {
            return Err(PackError::Generate(err));
        }
    }
    let checksum = writer.digest();
    drop(writer);
    let stats = in_order.inner.finalize().map_err(PackError::Generate)?;
    if stats.missing_objects > 0 {
        return Err(PackError::MissingObjects {
            count: stats.missing_objects,
        });
    }
    Ok(PackStats {
        objects: plan.objects.len(),
        copied_from_pack: stats.objects_copied_from_pack,
        recompressed: stats.decoded_and_recompressed_objects,
        checksum,
    })
}
