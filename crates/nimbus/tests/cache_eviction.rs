//! The pack cache under pressure, end to end: a cache far smaller than the
//! repository, downloads instead of hard links (the object store lives on
//! another file system when one is available), and the whole cache
//! directory deleted again and again while clients clone. Every clone must
//! still be complete and identical to what was pushed.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use support::{Git, NimbusServer, ServerOptions, noise};

/// A directory for the object store on another file system than the
/// server's data directory (under the system temporary directory), so the
/// cache cannot hard-link and must download. Falls back to the same file
/// system (links) when there is no other one.
fn object_store_directory() -> (tempfile::TempDir, bool) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let data_device = std::fs::metadata(std::env::temp_dir()).map(|m| m.dev());
        for candidate in ["/dev/shm", "/run/shm"] {
            let candidate = Path::new(candidate);
            if let (Ok(data_device), Ok(metadata)) = (&data_device, std::fs::metadata(candidate))
                && metadata.dev() != *data_device
                && let Ok(directory) = tempfile::Builder::new()
                    .prefix("nimbus-e2e-objects-")
                    .tempdir_in(candidate)
            {
                return (directory, true);
            }
        }
    }
    (tempfile::tempdir().expect("tempdir"), false)
}

fn directory_bytes(directory: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => directory_bytes(&entry.path()),
            Ok(metadata) => metadata.len(),
            Err(_) => 0,
        })
        .sum()
}

fn is_empty_or_missing(directory: &Path) -> bool {
    std::fs::read_dir(directory).map_or(true, |mut entries| entries.next().is_none())
}

/// Whether no request's snapshot directory is left: `snapshots/` holds one
/// directory per cache instance (and its lock file), each holding one
/// directory per live snapshot.
fn no_live_snapshots(snapshots: &Path) -> bool {
    std::fs::read_dir(snapshots).map_or(true, |entries| {
        entries
            .flatten()
            .filter(|entry| entry.path().is_dir())
            .all(|instance| is_empty_or_missing(&instance.path()))
    })
}

#[test]
fn clones_succeed_while_a_tiny_cache_is_emptied_under_them() {
    let (objects, other_file_system) = object_store_directory();
    let server = NimbusServer::start_with(ServerOptions {
        env: vec![
            ("NIMBUS_CACHE_MIB".into(), "1".into()),
            (
                "NIMBUS_OBJECT_STORE".into(),
                objects.path().to_str().expect("utf-8 path").into(),
            ),
        ],
        ..ServerOptions::default()
    });
    let _log = server.log_guard();
    if !other_file_system {
        eprintln!("no second file system: the cache hard-links instead of downloading");
    }
    let git = Git::new(2);
    server.create_repo("big", false);

    // Four pushes of 600 KB of incompressible content: four packs, 2.4 MB
    // in all, more than twice the cache.
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    let mut head = String::new();
    for push in 0..4u64 {
        head = git.commit(
            work.path(),
            &format!("push {push}"),
            &[(
                format!("blob-{push}.bin").as_str(),
                noise(push + 1, 600_000),
            )],
            1_700_000_000 + push,
        );
        git.run(
            work.path(),
            &["push", "-q", &server.push_url("big"), "main"],
        );
    }

    let cache: PathBuf = server.data_dir().join("cache");
    let stop = Arc::new(AtomicBool::new(false));
    let deletions = Arc::new(AtomicUsize::new(0));
    let deleter = {
        let cache = cache.clone();
        let stop = Arc::clone(&stop);
        let deletions = Arc::clone(&deletions);
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if std::fs::remove_dir_all(&cache).is_ok() {
                    deletions.fetch_add(1, Ordering::SeqCst);
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let clones = tempfile::tempdir().expect("tempdir");
    let cloners: Vec<_> = (0..3)
        .map(|client| {
            let url = server.url("big");
            let root = clones.path().join(format!("client-{client}"));
            thread::spawn(move || {
                let git = Git::new([0, 1, 2][client % 3]);
                let mut heads = Vec::new();
                for round in 0..3 {
                    let target = root.join(format!("round-{round}"));
                    std::fs::create_dir_all(&root).expect("create the clone directory");
                    git.run(
                        &root,
                        &["clone", "-q", &url, target.to_str().expect("utf-8 path")],
                    );
                    git.fsck(&target);
                    heads.push(git.rev_parse(&target, "HEAD"));
                    std::fs::remove_dir_all(&target).expect("remove the clone");
                }
                heads
            })
        })
        .collect();
    let mut all_heads = Vec::new();
    for cloner in cloners {
        all_heads.extend(cloner.join().expect("a cloning thread panicked"));
    }
    stop.store(true, Ordering::SeqCst);
    deleter.join().expect("the deleting thread panicked");
    assert_eq!(all_heads.len(), 9);
    assert!(
        all_heads.iter().all(|cloned| *cloned == head),
        "{all_heads:?} != {head}"
    );
    assert!(
        deletions.load(Ordering::SeqCst) > 0,
        "the cache directory was never deleted during the clones"
    );

    // Once more with the cache left alone: a complete clone, after which
    // the cache is within its bound and no snapshot directory is left.
    let last = clones.path().join("last");
    git.run(
        clones.path(),
        &[
            "clone",
            "-q",
            &server.url("big"),
            last.to_str().expect("utf-8 path"),
        ],
    );
    git.fsck(&last);
    assert_eq!(git.rev_parse(&last, "HEAD"), head);
    assert_eq!(git.commit_count(&last, "HEAD"), 4);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !no_live_snapshots(&cache.join("snapshots")) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        no_live_snapshots(&cache.join("snapshots")),
        "snapshot directories outlived their requests"
    );
    let cached = directory_bytes(&cache.join("packs"));
    assert!(
        cached <= 1 << 20,
        "{cached} bytes cached, over the 1 MiB bound"
    );
    if other_file_system {
        assert!(cached > 0, "packs were downloaded into the cache");
    }
}
