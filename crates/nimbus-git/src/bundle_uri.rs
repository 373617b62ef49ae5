//! Bundles for the protocol v2 `bundle-uri` command.
//!
//! A clone with `transfer.bundleURI` enabled asks the server for bundle
//! URIs before it fetches, downloads the bundles straight from where they
//! are stored, and then fetches only what they lack, sending their refs as
//! haves. Nimbus keeps one current bundle per repository in the object
//! store: every ref and the pack a full clone would get, under
//! `repos/<id>/bundles/<name>.bundle`.
//!
//! - **Names** are `<creation time>-<refs digest>`: the Unix time the bundle
//!   was written, so the newest is found by listing, and a digest of the
//!   refs it holds, so an unchanged repository is not bundled again.
//! - **URIs** are presigned download URLs when the object store has them
//!   (S3). Otherwise they are relative (`bundles/<name>.bundle`), which git
//!   resolves against the remote's URL, so the download goes to Nimbus
//!   itself, with the clone's own credentials and access check.
//! - **Replaced bundles** stay for the grace period after the bundle that
//!   replaced them was written, for clients that were sent their URI
//!   just before; then they are deleted.
//!
//! Protocol code here (the response, names, what expires) is pure; the
//! [`GitService`] methods at the end do the IO.

use crate::advertise::Head;
use crate::pktline::{write_flush, write_line};
use crate::service::{ExportError, GitService, ServiceError, export_snapshot};
use nimbus_types::storage::{ObjectInfo, bundle_key, bundle_prefix};
use nimbus_types::{Ref, Repository, unix_now};
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

/// How long a presigned bundle URL stays valid. A client starts its
/// download right after it was told the URI.
pub const URL_VALIDITY: Duration = Duration::from_secs(15 * 60);

/// Settings of bundle URIs.
#[derive(Debug, Clone, Copy)]
pub struct BundleUriConfig {
    /// Write a new bundle after a push (or at the periodic maintenance) once
    /// the newest bundle is older than this; `None`: bundles are written only
    /// when asked for (`nimbus repo bundle`).
    pub refresh_after: Option<Duration>,
    /// Repositories whose packs are smaller than this get no bundle
    /// automatically: one request clones them anyway.
    pub min_pack_bytes: u64,
    /// How long a replaced bundle stays, for downloads already under way.
    pub grace: Duration,
}

impl Default for BundleUriConfig {
    fn default() -> Self {
        BundleUriConfig {
            refresh_after: Some(Duration::from_secs(6 * 3600)),
            min_pack_bytes: 16 << 20,
            grace: Duration::from_secs(3600),
        }
    }
}

/// One bundle in the object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBundle {
    /// `<created>-<refs digest>`, the file name without `.bundle`.
    pub name: String,
    /// When it was written (Unix seconds).
    pub created: u64,
    /// The digest of the refs it holds (see [`refs_digest`]).
    pub refs_digest: String,
    pub size: u64,
}

/// The name of a bundle written at `created` holding refs with `digest`.
pub fn bundle_name(created: u64, digest: &str) -> String {
    format!("{created}-{digest}")
}

/// The parts of a bundle name, or `None` if `name` is not one Nimbus
/// writes (so a request for any other name is refused before the store is
/// asked).
pub fn parse_bundle_name(name: &str) -> Option<(u64, &str)> {
    let (created, digest) = name.split_once('-')?;
    let valid_created =
        !created.is_empty() && created.len() <= 20 && created.bytes().all(|b| b.is_ascii_digit());
    let valid_digest = digest.len() == 32
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !(valid_created && valid_digest) {
        return None;
    }
    Some((created.parse().ok()?, digest))
}

/// A digest of the refs and `HEAD` a bundle would hold: equal digests mean
/// equal bundles.
pub fn refs_digest(refs: &[Ref], head: &Head) -> String {
    let mut hasher = Sha256::new();
    if let Some(target) = head.target {
        hasher.update(b"HEAD ");
        hasher.update(head.symref.as_bytes());
        hasher.update(b" ");
        hasher.update(target.as_bytes());
        hasher.update(b"\n");
    }
    for r in refs {
        hasher.update(r.name.as_bytes());
        hasher.update(b" ");
        hasher.update(r.target.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(&hasher.finalize()[..16])
}

/// The bundles among `listed` (objects under a repository's bundle
/// prefix), oldest first. Other objects are ignored.
pub fn stored_bundles(listed: &[ObjectInfo]) -> Vec<StoredBundle> {
    let mut bundles: Vec<StoredBundle> = listed
        .iter()
        .filter_map(|info| {
            let file = info.key.rsplit('/').next()?;
            let name = file.strip_suffix(".bundle")?;
            let (created, digest) = parse_bundle_name(name)?;
            Some(StoredBundle {
                name: name.to_owned(),
                created,
                refs_digest: digest.to_owned(),
                size: info.size,
            })
        })
        .collect();
    bundles.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    bundles
}

/// The bundles of `bundles` (oldest first) that may be deleted at `now`:
/// every one replaced by a newer bundle written at least `grace` ago. The
/// newest is never among them.
pub fn expired_bundles(bundles: &[StoredBundle], now: u64, grace: Duration) -> Vec<&StoredBundle> {
    bundles
        .windows(2)
        .filter(|pair| pair[1].created.saturating_add(grace.as_secs()) <= now)
        .map(|pair| &pair[0])
        .collect()
}

/// One bundle as advertised: an id (a config subsection for the client)
/// and where to download it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedBundle {
    pub id: String,
    pub uri: String,
}

/// The response to a v2 `bundle-uri` command: a bundle list in `mode=all`
/// (the client downloads every bundle), then a flush. With no bundles, the
/// list is empty and the client fetches as usual.
pub fn write_bundle_uri_response(
    out: &mut impl Write,
    bundles: &[AdvertisedBundle],
) -> io::Result<()> {
    if !bundles.is_empty() {
        write_line(out, "bundle.version=1")?;
        write_line(out, "bundle.mode=all")?;
        for bundle in bundles {
            write_line(out, format!("bundle.{}.uri={}", bundle.id, bundle.uri))?;
        }
    }
    write_flush(out)
}

/// The relative URI of a bundle served by Nimbus itself, resolved by git
/// against the remote's URL (`https://host/repo.git/bundles/NAME.bundle`).
pub fn relative_uri(name: &str) -> String {
    format!("bundles/{name}.bundle")
}

/// What [`GitService::write_bundle`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleOutcome {
    /// A new bundle was written.
    Written { bundle: StoredBundle, refs: usize },
    /// The newest bundle already holds the current refs.
    Unchanged { bundle: StoredBundle },
    /// The repository has no refs.
    Empty,
}

/// Why a bundle could not be written or listed; nothing was replaced.
#[derive(Debug, thiserror::Error)]
pub enum BundleUriError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("writing the bundle failed")]
    Export(#[from] ExportError),
}

impl From<nimbus_types::storage::ObjectStoreError> for BundleUriError {
    fn from(error: nimbus_types::storage::ObjectStoreError) -> Self {
        BundleUriError::Service(error.into())
    }
}

impl From<io::Error> for BundleUriError {
    fn from(error: io::Error) -> Self {
        BundleUriError::Service(error.into())
    }
}

/// A bundle file opened for sending.
#[derive(Debug)]
pub struct BundleFile {
    pub file: std::fs::File,
    pub size: u64,
}

impl GitService {
    /// The repository's bundles in the object store, oldest first.
    pub async fn bundles(&self, repo: &Repository) -> Result<Vec<StoredBundle>, ServiceError> {
        let listed = self.store.list(&bundle_prefix(repo.id)).await?;
        Ok(stored_bundles(&listed))
    }

    /// Write a bundle of the repository as it is now, unless the newest
    /// bundle holds the same refs, then delete the replaced bundles whose
    /// grace period is over.
    pub async fn write_bundle(&self, repo: &Repository) -> Result<BundleOutcome, BundleUriError> {
        let snapshot = self.snapshot(repo).await?;
        if snapshot.refs.is_empty() {
            return Ok(BundleOutcome::Empty);
        }
        let digest = refs_digest(&snapshot.refs, &snapshot.head);
        let existing = self.bundles(repo).await?;
        if let Some(newest) = existing.last().filter(|b| b.refs_digest == digest) {
            return Ok(BundleOutcome::Unchanged {
                bundle: newest.clone(),
            });
        }
        // Strictly after the newest, so the newest is always the last written.
        let created = unix_now()
            .max(existing.last().map_or(0, |b| b.created.saturating_add(1)) as i64)
            as u64;
        let name = bundle_name(created, &digest);

        tokio::fs::create_dir_all(&self.config.staging_dir).await?;
        let staging = tempfile::Builder::new()
            .prefix("bundle-")
            .tempdir_in(&self.config.staging_dir)?;
        let path = staging.path().join("repo.bundle");
        let file = std::fs::File::create(&path)?;
        let summary = export_snapshot(snapshot, repo, file).await?;
        let size = tokio::fs::metadata(&path).await?.len();
        self.store
            .put_file(&bundle_key(repo.id, &name), &path)
            .await?;
        drop(staging);
        tracing::info!(repo = %repo.name, bundle = %name, size, refs = summary.refs, "wrote a bundle");

        let mut all = existing;
        let bundle = StoredBundle {
            name,
            created,
            refs_digest: digest,
            size,
        };
        all.push(bundle.clone());
        self.delete_expired_bundles(repo, &all).await;
        Ok(BundleOutcome::Written {
            bundle,
            refs: summary.refs,
        })
    }

    /// Delete the bundles of `bundles` whose grace period is over. Failures
    /// are logged: the next run tries again.
    async fn delete_expired_bundles(&self, repo: &Repository, bundles: &[StoredBundle]) {
        let grace = self.config.bundle_uri.unwrap_or_default().grace;
        for expired in expired_bundles(bundles, unix_now().max(0) as u64, grace) {
            if let Err(error) = self.store.delete(&bundle_key(repo.id, &expired.name)).await {
                tracing::warn!(repo = %repo.name, bundle = %expired.name, error = %error, "cannot delete a replaced bundle");
            }
        }
    }

    /// Whether the repository should get a new bundle now: bundle URIs are
    /// on with a refresh interval, its packs are large enough, and it has no
    /// bundle younger than the interval.
    pub async fn bundle_is_stale(&self, repo: &Repository) -> Result<bool, ServiceError> {
        let Some(config) = self.config.bundle_uri else {
            return Ok(false);
        };
        let Some(refresh_after) = config.refresh_after else {
            return Ok(false);
        };
        let packs = self.meta.packs(repo.id).await?;
        let pack_bytes: u64 = packs.iter().map(|p| p.pack_size).sum();
        if pack_bytes < config.min_pack_bytes || packs.is_empty() {
            return Ok(false);
        }
        let newest = self.bundles(repo).await?.pop();
        let now = unix_now().max(0) as u64;
        Ok(newest.is_none_or(|b| b.created.saturating_add(refresh_after.as_secs()) <= now))
    }

    /// The response to a v2 `bundle-uri` command for `repo`: its newest
    /// bundle, by a presigned URL when the store has them.
    pub async fn bundle_uri_response(&self, repo: &Repository) -> Result<Vec<u8>, ServiceError> {
        let mut advertised = Vec::new();
        if let Some(newest) = self.bundles(repo).await?.pop() {
            let key = bundle_key(repo.id, &newest.name);
            let uri = match self.store.download_url(&key, URL_VALIDITY).await? {
                Some(url) => url,
                None => relative_uri(&newest.name),
            };
            advertised.push(AdvertisedBundle {
                id: format!("b{}", newest.created),
                uri,
            });
        }
        let mut out = Vec::new();
        write_bundle_uri_response(&mut out, &advertised)?;
        Ok(out)
    }

    /// The bundle `name` of `repo` opened for reading, or `None` if there is
    /// no such bundle. For stores without local files it is first copied
    /// into the staging directory (the copy is unlinked at once and lives
    /// as long as the returned file).
    pub async fn open_bundle(
        &self,
        repo: &Repository,
        name: &str,
    ) -> Result<Option<BundleFile>, ServiceError> {
        if parse_bundle_name(name).is_none() {
            return Ok(None);
        }
        let key = bundle_key(repo.id, name);
        let local: Option<PathBuf> = self.store.local_path(&key);
        let path = match local {
            Some(path) => path,
            None => {
                if self.store.size(&key).await?.is_none() {
                    return Ok(None);
                }
                tokio::fs::create_dir_all(&self.config.staging_dir).await?;
                let copy = tempfile::Builder::new()
                    .prefix("bundle-download-")
                    .tempfile_in(&self.config.staging_dir)?
                    .into_temp_path();
                self.store.get_to_file(&key, &copy).await?;
                let file = std::fs::File::open(&copy)?;
                let size = file.metadata()?.len();
                drop(copy);
                return Ok(Some(BundleFile { file, size }));
            }
        };
        match std::fs::File::open(&path) {
            Ok(file) => {
                let size = file.metadata()?.len();
                Ok(Some(BundleFile { file, size }))
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktline::{Packet, PacketReader};
    use std::time::SystemTime;

    fn info(key: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.to_owned(),
            size: 10,
            modified: SystemTime::UNIX_EPOCH,
        }
    }

    const DIGEST: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn names_round_trip_and_others_are_refused() {
        let name = bundle_name(1_700_000_000, DIGEST);
        assert_eq!(parse_bundle_name(&name), Some((1_700_000_000, DIGEST)));
        for bad in [
            "",
            "1700000000",
            "-0123456789abcdef0123456789abcdef",
            "17x-0123456789abcdef0123456789abcdef",
            "1700000000-0123456789ABCDEF0123456789abcdef",
            "1700000000-0123",
            "1700000000-0123456789abcdef0123456789abcdef/../x",
            "../1-0123456789abcdef0123456789abcdef",
            "99999999999999999999999-0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(parse_bundle_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stored_bundles_are_sorted_by_creation_and_other_keys_ignored() {
        let listed = [
            info(&format!("repos/1/bundles/300-{DIGEST}.bundle")),
            info("repos/1/bundles/notes.txt"),
            info(&format!("repos/1/bundles/20-{DIGEST}.bundle")),
            info(&format!("repos/1/bundles/100-{DIGEST}.bundle.partial")),
        ];
        let bundles = stored_bundles(&listed);
        let created: Vec<u64> = bundles.iter().map(|b| b.created).collect();
        assert_eq!(created, [20, 300]);
        assert_eq!(bundles[1].name, format!("300-{DIGEST}"));
    }

    #[test]
    fn replaced_bundles_expire_a_grace_period_after_their_replacement() {
        let at = |created| StoredBundle {
            name: bundle_name(created, DIGEST),
            created,
            refs_digest: DIGEST.to_owned(),
            size: 1,
        };
        let bundles = [at(100), at(200), at(1000)];
        let grace = Duration::from_secs(50);
        let names = |now| -> Vec<u64> {
            expired_bundles(&bundles, now, grace)
                .iter()
                .map(|b| b.created)
                .collect()
        };
        assert_eq!(names(249), Vec::<u64>::new());
        assert_eq!(names(250), [100]);
        assert_eq!(names(1049), [100]);
        assert_eq!(names(1050), [100, 200]);
        // The newest never expires.
        assert_eq!(names(u64::MAX), [100, 200]);
        assert!(expired_bundles(&bundles[..1], u64::MAX, grace).is_empty());
    }

    #[test]
    fn the_digest_follows_refs_and_head() {
        let id = |byte: u8| gix_hash::ObjectId::from_bytes_or_panic(&[byte; 20]);
        let main = nimbus_types::RefName::new(b"refs/heads/main").expect("valid");
        let refs = vec![Ref {
            name: main.clone(),
            target: id(1),
            peeled: None,
        }];
        let head = Head {
            symref: main.clone(),
            target: Some(id(1)),
        };
        let digest = refs_digest(&refs, &head);
        assert_eq!(digest.len(), 32);
        assert!(parse_bundle_name(&bundle_name(1, &digest)).is_some());
        let mut moved = refs.clone();
        moved[0].target = id(2);
        assert_ne!(refs_digest(&moved, &head), digest);
        let unborn = Head {
            symref: main,
            target: None,
        };
        assert_ne!(refs_digest(&refs, &unborn), digest);
    }

    #[test]
    fn the_response_is_a_bundle_list_in_pkt_lines() {
        let mut out = Vec::new();
        write_bundle_uri_response(
            &mut out,
            &[AdvertisedBundle {
                id: "b7".to_owned(),
                uri: relative_uri(&bundle_name(7, DIGEST)),
            }],
        )
        .expect("in memory");
        let mut reader = PacketReader::new(&out[..]);
        let mut lines = Vec::new();
        loop {
            match reader.next_packet().expect("well formed") {
                Some(Packet::Data(line)) => lines.push(
                    String::from_utf8(line.strip_suffix(b"\n").unwrap_or(line).to_vec())
                        .expect("utf-8"),
                ),
                Some(Packet::Flush) => break,
                other => panic!("unexpected packet {other:?}"),
            }
        }
        assert_eq!(reader.next_packet().expect("well formed"), None);
        assert_eq!(
            lines,
            [
                "bundle.version=1",
                "bundle.mode=all",
                &format!("bundle.b7.uri=bundles/7-{DIGEST}.bundle"),
            ]
        );

        let mut empty = Vec::new();
        write_bundle_uri_response(&mut empty, &[]).expect("in memory");
        assert_eq!(empty, b"0000");
    }
}
