//! Archives of a commit's files, as `git archive` makes them: every file
//! under `{prefix}/`, directories as entries, executables mode 755 and
//! other files 644, symbolic links as links, submodules as empty
//! directories, every entry dated with the commit's committer time.
//!
//! Written to any `Write` as the tree is walked (one blob in memory at a
//! time), so the web layer streams it.

use crate::browse::{self, BrowseError};
use crate::objects::Objects;
use gix_hash::ObjectId;
use gix_object::tree::EntryKind;
use std::io::Write;

/// The most entries (files, directories, links) in one archive.
pub const MAX_ARCHIVE_ENTRIES: usize = 1_000_000;
/// The deepest directory nesting followed.
pub const MAX_ARCHIVE_DEPTH: usize = 1_000;

/// Which archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    TarGz,
    Zip,
}

impl ArchiveFormat {
    /// `name.tar.gz` or `name.zip` → (`name`, format).
    pub fn split(name: &str) -> Option<(&str, ArchiveFormat)> {
        if let Some(stem) = name.strip_suffix(".tar.gz") {
            Some((stem, ArchiveFormat::TarGz))
        } else {
            name.strip_suffix(".zip")
                .map(|stem| (stem, ArchiveFormat::Zip))
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ArchiveFormat::TarGz => "tar.gz",
            ArchiveFormat::Zip => "zip",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ArchiveFormat::TarGz => "application/gzip",
            ArchiveFormat::Zip => "application/zip",
        }
    }
}

/// Why an archive could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Browse(#[from] BrowseError),
    #[error("writing the archive failed")]
    Io(#[from] std::io::Error),
    #[error("writing the zip archive failed")]
    Zip(#[from] zip::result::ZipError),
    #[error("tree {id} could not be decoded")]
    Tree { id: ObjectId },
    #[error(
        "the tree has more than {MAX_ARCHIVE_ENTRIES} entries or is nested deeper than {MAX_ARCHIVE_DEPTH}"
    )]
    TooBig,
}

/// Where entries go.
enum Sink<W: Write> {
    Tar(Box<tar::Builder<flate2::write::GzEncoder<W>>>),
    Zip(Box<zip::ZipWriter<zip::write::StreamWriter<W>>>),
}

struct Walk<W: Write> {
    sink: Sink<W>,
    mtime: i64,
    entries: usize,
}

fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

impl<W: Write> Walk<W> {
    fn zip_options(&self, mode: u32) -> zip::write::SimpleFileOptions {
        let mut options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode);
        if let Some(at) = zip_time(self.mtime) {
            options = options.last_modified_time(at);
        }
        options
    }

    fn tar_header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(u64::try_from(self.mtime).unwrap_or(0));
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    fn count(&mut self) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > MAX_ARCHIVE_ENTRIES {
            return Err(ArchiveError::TooBig);
        }
        Ok(())
    }

    fn directory(&mut self, path: &[u8]) -> Result<(), ArchiveError> {
        self.count()?;
        let mut name = path.to_vec();
        name.push(b'/');
        let options = self.zip_options(0o775);
        let mut header = self.tar_header(tar::EntryType::Directory, 0o775, 0);
        match &mut self.sink {
            Sink::Tar(builder) => {
                builder.append_data(&mut header, tar_path(&name), std::io::empty())?
            }
            Sink::Zip(writer) => writer.add_directory(lossy(path), options)?,
        }
        Ok(())
    }

    fn file(&mut self, path: &[u8], executable: bool, data: &[u8]) -> Result<(), ArchiveError> {
        self.count()?;
        let mode = if executable { 0o775 } else { 0o664 };
        let options = self.zip_options(mode);
        let mut header = self.tar_header(tar::EntryType::Regular, mode, data.len() as u64);
        match &mut self.sink {
            Sink::Tar(builder) => builder.append_data(&mut header, tar_path(path), data)?,
            Sink::Zip(writer) => {
                writer.start_file(lossy(path), options)?;
                writer.write_all(data)?;
            }
        }
        Ok(())
    }

    fn symlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), ArchiveError> {
        self.count()?;
        let options = self.zip_options(0o777);
        let mut header = self.tar_header(tar::EntryType::Symlink, 0o777, 0);
        match &mut self.sink {
            Sink::Tar(builder) => {
                builder.append_link(&mut header, tar_path(path), tar_path(target))?
            }
            Sink::Zip(writer) => writer.add_symlink(lossy(path), lossy(target), options)?,
        }
        Ok(())
    }

    fn tree(
        &mut self,
        objects: &mut Objects,
        id: ObjectId,
        prefix: &[u8],
        depth: usize,
    ) -> Result<(), ArchiveError> {
        if depth > MAX_ARCHIVE_DEPTH {
            return Err(ArchiveError::TooBig);
        }
        let data = match objects.find(&id).map_err(BrowseError::from)? {
            Some((gix_object::Kind::Tree, data)) => data.to_vec(),
            _ => return Err(ArchiveError::Tree { id }),
        };
        let tree = gix_object::TreeRef::from_bytes(&data, gix_hash::Kind::Sha1)
            .map_err(|_| ArchiveError::Tree { id })?;
        let entries: Vec<(EntryKind, Vec<u8>, ObjectId)> = tree
            .entries
            .iter()
            .map(|entry| {
                (
                    entry.mode.kind(),
                    entry.filename.to_vec(),
                    entry.oid.to_owned(),
                )
            })
            .collect();
        for (kind, name, oid) in entries {
            let mut path = prefix.to_vec();
            path.push(b'/');
            path.extend_from_slice(&name);
            match kind {
                EntryKind::Tree => {
                    self.directory(&path)?;
                    self.tree(objects, oid, &path, depth + 1)?;
                }
                EntryKind::Commit => self.directory(&path)?,
                EntryKind::Blob | EntryKind::BlobExecutable => {
                    let blob = browse::read_blob(objects, oid, usize::MAX)?;
                    self.file(&path, kind == EntryKind::BlobExecutable, &blob.data)?;
                }
                EntryKind::Link => {
                    let blob = browse::read_blob(objects, oid, 4096)?;
                    self.symlink(&path, &blob.data)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(unix)]
fn tar_path(bytes: &[u8]) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    std::path::PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(not(unix))]
fn tar_path(bytes: &[u8]) -> std::path::PathBuf {
    std::path::PathBuf::from(lossy(bytes))
}

/// A zip timestamp (local time without zone, 1980–2107) for Unix seconds.
fn zip_time(seconds: i64) -> Option<zip::DateTime> {
    let at = time::OffsetDateTime::from_unix_timestamp(seconds).ok()?;
    zip::DateTime::from_date_and_time(
        u16::try_from(at.year()).ok()?,
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
    )
    .ok()
}

/// Write `commit`'s files as an archive in `format` to `out`, each under
/// `prefix/`.
pub fn write_archive<W: Write>(
    objects: &mut Objects,
    commit: ObjectId,
    prefix: &str,
    format: ArchiveFormat,
    out: W,
) -> Result<W, ArchiveError> {
    let detail = browse::commit_detail(objects, commit)?;
    let sink = match format {
        ArchiveFormat::TarGz => {
            let encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            Sink::Tar(Box::new(tar::Builder::new(encoder)))
        }
        ArchiveFormat::Zip => Sink::Zip(Box::new(zip::ZipWriter::new_stream(out))),
    };
    let mut walk = Walk {
        sink,
        mtime: detail.committer.time,
        entries: 0,
    };
    let prefix = prefix.trim_matches('/').as_bytes().to_vec();
    walk.directory(&prefix)?;
    walk.tree(objects, detail.tree, &prefix, 0)?;
    match walk.sink {
        Sink::Tar(builder) => Ok(builder.into_inner()?.finish()?),
        Sink::Zip(writer) => Ok(writer.finish()?.into_inner()),
    }
}
