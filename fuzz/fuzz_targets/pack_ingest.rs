//! Pack ingestion: `ingest` receives arbitrary bytes as a pushed pack. It
//! must refuse what is not a valid, complete, connected pack with an error
//! (never a panic, never unbounded memory), and what it accepts must be a
//! real pack on disk whose objects all passed the fsck-style checks.
//!
//! The repository already holds one small pack (`seeds/base.pack`), so thin
//! packs against it can be completed. Inputs that look like packs are tried
//! twice: as they are, and with the trailing SHA-1 recomputed, so that
//! mutations of valid packs get past the checksum to the object checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nimbus_git::objects::ObjectDb;
use nimbus_git::receive_pack::ingest::{IngestError, IngestLimits, ingest};
use sha1::{Digest, Sha1};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const LIMITS: IngestLimits = IngestLimits {
    max_pack_bytes: 1 << 20,
    max_object_bytes: 4 << 20,
    max_objects: 100_000,
};

struct Fixture {
    _dir: tempfile::TempDir,
    db: ObjectDb,
    staging: PathBuf,
}

fn scratch_dir() -> tempfile::TempDir {
    // Prefer memory: every iteration writes a pack and an index.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("nimbus-fuzz-")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = scratch_dir();
        let empty = dir.path().join("empty");
        let objects = dir.path().join("objects");
        let staging = dir.path().join("staging");
        for d in [empty.join("pack"), objects.join("pack"), staging.clone()] {
            std::fs::create_dir_all(&d).expect("mkdir");
        }
        // Receive the base pack into the repository's pack directory.
        let empty_db = ObjectDb::open(&empty).expect("empty db");
        let base = include_bytes!("../seeds/base.pack");
        ingest(&base[..], &objects.join("pack"), &empty_db, LIMITS)
            .expect("the base pack is valid")
            .expect("the base pack has objects");
        let db = ObjectDb::open(&objects).expect("db");
        Fixture {
            _dir: dir,
            db,
            staging,
        }
    })
}

fn clear(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read staging") {
        let path = entry.expect("entry").path();
        std::fs::remove_file(&path).expect("remove");
    }
}

/// Ingest `data`; returns whether it was accepted.
fn check(data: &[u8]) -> bool {
    let fx = fixture();
    let result = ingest(data, &fx.staging, &fx.db, LIMITS);
    let accepted = match &result {
        Ok(Some(received)) => {
            assert!(received.object_count > 0);
            assert_eq!(
                received.pack_size,
                std::fs::metadata(&received.pack_path).expect("pack").len()
            );
            assert_eq!(
                received.index_size,
                std::fs::metadata(&received.index_path).expect("idx").len()
            );
            assert_eq!(
                u64::from(received.bundle.index.num_objects()),
                received.object_count
            );
            assert!(received.name.starts_with("pack-"));
            // Whatever was accepted starts like a pack.
            assert_eq!(&data[..4], b"PACK");
            true
        }
        Ok(None) => {
            assert_eq!(&data[..4], b"PACK");
            false
        }
        Err(IngestError::TooLarge { .. }) => {
            assert!(data.len() as u64 > LIMITS.max_pack_bytes);
            false
        }
        Err(IngestError::Write(err)) => panic!("writing to staging failed: {err}"),
        Err(_) => false,
    };
    drop(result);
    clear(&fx.staging);
    accepted
}

fuzz_target!(|data: &[u8]| {
    if check(data) {
        return;
    }
    // Recompute the trailer of something pack-like and try again.
    if data.len() >= 32 && data.starts_with(b"PACK") {
        let body = &data[..data.len() - 20];
        let digest = Sha1::digest(body);
        if digest[..] != data[data.len() - 20..] {
            let mut fixed = body.to_vec();
            fixed.extend_from_slice(&digest);
            check(&fixed);
        }
    }
});
