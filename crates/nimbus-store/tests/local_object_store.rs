//! The local-directory object store, through the `ObjectStore` trait.

use nimbus_store::LocalObjectStore;
use nimbus_types::storage::{ObjectStore, ObjectStoreError};
use std::path::Path;
use std::sync::Arc;

fn store_in(dir: &Path) -> LocalObjectStore {
    LocalObjectStore::new(dir.join("objects"))
}

fn write_source(dir: &Path, name: &str, content: &[u8]) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, content)?;
    Ok(path)
}

#[tokio::test]
async fn put_get_size_and_delete_round_trip() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = store_in(dir.path());
    let source = write_source(dir.path(), "source", b"pack bytes")?;

    store.put_file("repos/1/pack/pack-a.pack", &source).await?;
    assert_eq!(store.size("repos/1/pack/pack-a.pack").await?, Some(10));

    let destination = dir.path().join("out");
    std::fs::write(&destination, b"old content that is longer")?;
    store
        .get_to_file("repos/1/pack/pack-a.pack", &destination)
        .await?;
    assert_eq!(std::fs::read(&destination)?, b"pack bytes");

    store.delete("repos/1/pack/pack-a.pack").await?;
    assert_eq!(store.size("repos/1/pack/pack-a.pack").await?, None);
    Ok(())
}

#[tokio::test]
async fn put_replaces_an_existing_object() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = store_in(dir.path());
    store
        .put_file("k", &write_source(dir.path(), "one", b"first")?)
        .await?;
    store
        .put_file("k", &write_source(dir.path(), "two", b"second!")?)
        .await?;
    let out = dir.path().join("out");
    store.get_to_file("k", &out).await?;
    assert_eq!(std::fs::read(out)?, b"second!");
    Ok(())
}

#[tokio::test]
async fn missing_objects_are_reported_as_missing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = store_in(dir.path());
    assert_eq!(store.size("repos/1/nothing").await?, None);
    // Deleting a missing object succeeds, even below a missing directory.
    store.delete("repos/1/nothing").await?;
    let destination = dir.path().join("out");
    let error = store
        .get_to_file("repos/1/nothing", &destination)
        .await
        .expect_err("the object does not exist");
    assert!(
        matches!(&error, ObjectStoreError::NotFound { key } if key == "repos/1/nothing"),
        "{error:?}"
    );
    assert!(
        !destination.exists(),
        "a failed get must not create the destination"
    );

    // A directory is not an object.
    store
        .put_file("dir/file", &write_source(dir.path(), "s", b"x")?)
        .await?;
    assert_eq!(store.size("dir").await?, None);
    assert!(matches!(
        store.get_to_file("dir", &destination).await,
        Err(ObjectStoreError::NotFound { .. })
    ));
    // A path through a file is not an object either.
    assert_eq!(store.size("dir/file/below").await?, None);
    Ok(())
}

#[tokio::test]
async fn put_of_a_missing_source_fails_with_io() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = store_in(dir.path());
    let error = store
        .put_file("k", &dir.path().join("no-such-file"))
        .await
        .expect_err("the source does not exist");
    assert!(matches!(error, ObjectStoreError::Io { .. }), "{error:?}");
    assert_eq!(store.size("k").await?, None);
    Ok(())
}

#[tokio::test]
async fn list_returns_keys_with_the_prefix() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = store_in(dir.path());
    let source = write_source(dir.path(), "source", b"x")?;
    let keys = [
        "repos/1/pack/pack-a.pack",
        "repos/1/pack/pack-a.idx",
        "repos/10/pack/pack-b.pack",
        "repos/2/pack/pack-c.pack",
        "top",
    ];
    for key in keys {
        store.put_file(key, &source).await?;
    }

    let sorted = |mut keys: Vec<String>| {
        keys.sort();
        keys
    };
    assert_eq!(
        sorted(store.list("repos/1/").await?),
        ["repos/1/pack/pack-a.idx", "repos/1/pack/pack-a.pack"]
    );
    // A prefix is a string prefix, not a directory.
    assert_eq!(
        sorted(store.list("repos/1").await?),
        [
            "repos/1/pack/pack-a.idx",
            "repos/1/pack/pack-a.pack",
            "repos/10/pack/pack-b.pack"
        ]
    );
    assert_eq!(
        sorted(store.list("repos/1/pack/pack-a.p").await?),
        ["repos/1/pack/pack-a.pack"]
    );
    let mut all: Vec<String> = keys.iter().map(|key| key.to_string()).collect();
    all.sort();
    assert_eq!(sorted(store.list("").await?), all);
    assert!(store.list("repos/3/").await?.is_empty());
    assert!(store.list("../").await?.is_empty());

    let empty = LocalObjectStore::new(dir.path().join("never-created"));
    assert!(empty.list("").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn invalid_keys_are_refused_by_every_operation() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = store_in(dir.path());
    let source = write_source(dir.path(), "source", b"x")?;
    let out = dir.path().join("out");
    for key in [
        "",
        "/etc/passwd",
        "../escape",
        "a/../../escape",
        "a/./b",
        ".",
        "a//b",
        "a/",
    ] {
        let is_invalid = |result: Result<(), ObjectStoreError>| matches!(result, Err(ObjectStoreError::InvalidKey { key: reported }) if reported == key);
        assert!(is_invalid(store.put_file(key, &source).await), "{key:?}");
        assert!(is_invalid(store.get_to_file(key, &out).await), "{key:?}");
        assert!(is_invalid(store.size(key).await.map(|_| ())), "{key:?}");
        assert!(is_invalid(store.delete(key).await), "{key:?}");
        assert_eq!(store.local_path(key), None, "{key:?}");
    }
    assert!(!dir.path().join("escape").exists());
    Ok(())
}

#[tokio::test]
async fn local_path_points_at_the_stored_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = store_in(dir.path());
    store
        .put_file("a/b", &write_source(dir.path(), "s", b"content")?)
        .await?;
    let path = store.local_path("a/b").expect("a valid key has a path");
    assert_eq!(std::fs::read(path)?, b"content");
    Ok(())
}

/// Readers must see either the old or the new object, never a mix or a
/// truncated file, and no temporary files may remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_is_atomic_for_concurrent_readers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(store_in(dir.path()));
    let size = 1 << 20;
    let first = write_source(dir.path(), "first", &vec![b'a'; size])?;
    let second = write_source(dir.path(), "second", &vec![b'b'; size * 2])?;
    store.put_file("repos/1/object", &first).await?;

    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for round in 0..20 {
                let source = if round % 2 == 0 { &second } else { &first };
                store.put_file("repos/1/object", source).await?;
            }
            Ok::<_, ObjectStoreError>(())
        })
    };
    let out = dir.path().join("read");
    while !writer.is_finished() {
        store.get_to_file("repos/1/object", &out).await?;
        let content = std::fs::read(&out)?;
        let uniform =
            |byte: u8, length: usize| content.len() == length && content.iter().all(|&b| b == byte);
        assert!(
            uniform(b'a', size) || uniform(b'b', size * 2),
            "saw a partial object of {} bytes",
            content.len()
        );
    }
    writer.await??;

    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("objects/repos/1"))?
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(leftovers, ["object"]);
    assert_eq!(store.list("").await?, ["repos/1/object"]);
    Ok(())
}
