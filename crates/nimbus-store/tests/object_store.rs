//! One suite of `ObjectStore` behaviour, run against every backend: the
//! local directory and S3 (the S3-compatible server that `scripts/s3` starts,
//! named by `NIMBUS_TEST_S3_ENDPOINT`; each test makes its own bucket).
//! Backend-specific behaviour follows in `local_only` and `s3_only`.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};
use nimbus_store::{LocalObjectStore, S3Config, S3ObjectStore};
use nimbus_types::storage::{ObjectInfo, ObjectStore, ObjectStoreError};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// A store under test and a scratch directory for source and destination
/// files.
struct Fixture {
    store: Arc<dyn ObjectStore>,
    scratch: tempfile::TempDir,
}

impl Fixture {
    fn local() -> anyhow::Result<Self> {
        let scratch = tempfile::tempdir()?;
        let store = Arc::new(LocalObjectStore::new(scratch.path().join("objects")));
        Ok(Fixture { store, scratch })
    }

    async fn s3() -> anyhow::Result<Self> {
        Ok(Fixture {
            store: Arc::new(s3_store_in_new_bucket("").await?),
            scratch: tempfile::tempdir()?,
        })
    }

    fn source(&self, name: &str, content: &[u8]) -> anyhow::Result<PathBuf> {
        let path = self.scratch.path().join(name);
        std::fs::write(&path, content)?;
        Ok(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }
}

/// The S3 server's endpoint; the tests fail loudly without it.
fn s3_endpoint() -> String {
    match std::env::var("NIMBUS_TEST_S3_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => endpoint,
        _ => panic!(
            "NIMBUS_TEST_S3_ENDPOINT is not set: the S3 half of the object store suite needs an \
             S3-compatible server. Run the tests through scripts/test, or start one with \
             `export NIMBUS_TEST_S3_ENDPOINT=\"$(scripts/s3)\"`."
        ),
    }
}

/// Credentials and region the test server accepts (it accepts any).
fn test_sdk_config() -> SdkConfig {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "test",
            "test",
            None,
            None,
            "nimbus-tests",
        )))
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(Provider::Rustls(CryptoMode::Ring))
                .build_https(),
        )
        .build()
}

/// A bucket name no other test (in this or another process) uses.
fn unique_bucket_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "nimbus-test-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn s3_config(endpoint: &str, bucket: &str, prefix: &str) -> S3Config {
    S3Config {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        endpoint: Some(endpoint.to_owned()),
        region: Some("us-east-1".to_owned()),
        force_path_style: true,
    }
}

async fn create_bucket(endpoint: &str, bucket: &str) -> anyhow::Result<()> {
    let config = aws_sdk_s3::config::Builder::from(&test_sdk_config())
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot create the bucket {bucket} on {endpoint}: {}",
                aws_sdk_s3::error::DisplayErrorContext(error)
            )
        })?;
    Ok(())
}

/// An S3 store on a fresh bucket of the test server, keys under `prefix`.
async fn s3_store_in_new_bucket(prefix: &str) -> anyhow::Result<S3ObjectStore> {
    let endpoint = s3_endpoint();
    let bucket = unique_bucket_name();
    create_bucket(&endpoint, &bucket).await?;
    Ok(S3ObjectStore::with_sdk_config(
        s3_config(&endpoint, &bucket, prefix),
        &test_sdk_config(),
    ))
}

/// Declares, for each named `async fn(&Fixture) -> anyhow::Result<()>`, one
/// test per backend: `local::name` and `s3::name`.
macro_rules! object_store_suite {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(&super::Fixture::local()?).await
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(&super::Fixture::s3().await?).await
                }
            )*
        }
    };
}

object_store_suite!(
    put_get_size_and_delete_round_trip,
    put_replaces_an_existing_object,
    missing_objects_are_reported_as_missing,
    delete_is_idempotent,
    put_of_a_missing_source_fails_with_io,
    objects_larger_than_one_upload_round_trip,
    list_returns_objects_with_the_prefix_and_their_metadata,
    nested_keys_are_kept_apart,
    invalid_keys_are_refused_by_every_operation,
    put_is_atomic_for_concurrent_readers,
    check_accepts_a_usable_store,
);

fn sorted_keys(objects: &[ObjectInfo]) -> Vec<String> {
    let mut keys: Vec<String> = objects.iter().map(|object| object.key.clone()).collect();
    keys.sort();
    keys
}

/// Deterministic bytes that no two offsets repeat cheaply, so a misplaced
/// part shows up.
fn pseudo_random_bytes(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut bytes = Vec::with_capacity(length + 8);
    while bytes.len() < length {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(length);
    bytes
}

async fn put_get_size_and_delete_round_trip(fixture: &Fixture) -> anyhow::Result<()> {
    let store = &fixture.store;
    let source = fixture.source("source", b"pack bytes")?;

    store.put_file("repos/1/pack/pack-a.pack", &source).await?;
    assert_eq!(store.size("repos/1/pack/pack-a.pack").await?, Some(10));

    let destination = fixture.path("out");
    std::fs::write(&destination, b"old content that is longer")?;
    store
        .get_to_file("repos/1/pack/pack-a.pack", &destination)
        .await?;
    assert_eq!(std::fs::read(&destination)?, b"pack bytes");

    store.delete("repos/1/pack/pack-a.pack").await?;
    assert_eq!(store.size("repos/1/pack/pack-a.pack").await?, None);

    // An empty object is an object.
    store
        .put_file("empty", &fixture.source("empty", b"")?)
        .await?;
    assert_eq!(store.size("empty").await?, Some(0));
    store.get_to_file("empty", &destination).await?;
    assert_eq!(std::fs::read(&destination)?, b"");
    Ok(())
}

async fn put_replaces_an_existing_object(fixture: &Fixture) -> anyhow::Result<()> {
    let store = &fixture.store;
    store
        .put_file("k", &fixture.source("one", b"first")?)
        .await?;
    store
        .put_file("k", &fixture.source("two", b"second!")?)
        .await?;
    let out = fixture.path("out");
    store.get_to_file("k", &out).await?;
    assert_eq!(std::fs::read(out)?, b"second!");
    assert_eq!(store.size("k").await?, Some(7));
    assert_eq!(sorted_keys(&store.list("").await?), ["k"]);
    Ok(())
}

async fn missing_objects_are_reported_as_missing(fixture: &Fixture) -> anyhow::Result<()> {
    let store = &fixture.store;
    assert_eq!(store.size("repos/1/nothing").await?, None);
    let destination = fixture.path("out");
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

    // A key's ancestor is not an object, and neither is a path through one.
    store
        .put_file("dir/file", &fixture.source("s", b"x")?)
        .await?;
    assert_eq!(store.size("dir").await?, None);
    assert!(matches!(
        store.get_to_file("dir", &destination).await,
        Err(ObjectStoreError::NotFound { .. })
    ));
    assert_eq!(store.size("dir/file/below").await?, None);
    assert!(matches!(
        store.get_to_file("dir/file/below", &destination).await,
        Err(ObjectStoreError::NotFound { .. })
    ));
    Ok(())
}

async fn delete_is_idempotent(fixture: &Fixture) -> anyhow::Result<()> {
    let store = &fixture.store;
    // Deleting a missing object succeeds, even below a missing "directory".
    store.delete("repos/1/nothing").await?;
    store
        .put_file("repos/1/a", &fixture.source("a", b"a")?)
        .await?;
    store.delete("repos/1/a").await?;
    store.delete("repos/1/a").await?;
    assert_eq!(store.size("repos/1/a").await?, None);
    assert!(store.list("").await?.is_empty());
    Ok(())
}

async fn put_of_a_missing_source_fails_with_io(fixture: &Fixture) -> anyhow::Result<()> {
    let store = &fixture.store;
    let error = store
        .put_file("k", &fixture.path("no-such-file"))
        .await
        .expect_err("the source does not exist");
    assert!(matches!(error, ObjectStoreError::Io { .. }), "{error:?}");
    assert_eq!(store.size("k").await?, None);
    Ok(())
}

/// Larger than the S3 store's single-upload limit (64 MiB), and not a
/// multiple of its part size, so it goes up as a multipart upload with a
/// short last part.
async fn objects_larger_than_one_upload_round_trip(fixture: &Fixture) -> anyhow::Result<()> {
    let store = &fixture.store;
    let length = (67 << 20) + 17;
    let content = pseudo_random_bytes(67, length);
    let source = fixture.source("large", &content)?;
    store.put_file("repos/1/pack/large.pack", &source).await?;
    assert_eq!(
        store.size("repos/1/pack/large.pack").await?,
        Some(length as u64)
    );
    let out = fixture.path("large-out");
    store.get_to_file("repos/1/pack/large.pack", &out).await?;
    let read = std::fs::read(&out)?;
    assert!(read == content, "the large object came back different");

    // And it can be replaced by a small one.
    store
        .put_file(
            "repos/1/pack/large.pack",
            &fixture.source("small", b"small")?,
        )
        .await?;
    store.get_to_file("repos/1/pack/large.pack", &out).await?;
    assert_eq!(std::fs::read(&out)?, b"small");
    store.delete("repos/1/pack/large.pack").await?;
    Ok(())
}

async fn list_returns_objects_with_the_prefix_and_their_metadata(
    fixture: &Fixture,
) -> anyhow::Result<()> {
    let store = &fixture.store;
    // Modification times may be stored to the second.
    let before = SystemTime::now() - Duration::from_secs(2);
    let keys = [
        ("repos/1/pack/pack-a.pack", &b"pack a"[..]),
        ("repos/1/pack/pack-a.idx", b"idx"),
        ("repos/10/pack/pack-b.pack", b"pack b!"),
        ("repos/2/pack/pack-c.pack", b""),
        ("top", b"top"),
    ];
    for (index, (key, content)) in keys.iter().enumerate() {
        let source = fixture.source(&format!("source-{index}"), content)?;
        store.put_file(key, &source).await?;
    }
    let after = SystemTime::now() + Duration::from_secs(2);

    let all = store.list("").await?;
    assert_eq!(all.len(), keys.len(), "{all:?}");
    for (key, content) in keys {
        let object = all
            .iter()
            .find(|object| object.key == key)
            .unwrap_or_else(|| panic!("{key} is not listed: {all:?}"));
        assert_eq!(object.size, content.len() as u64, "{object:?}");
        assert!(
            before <= object.modified && object.modified <= after,
            "{object:?} was not written between {before:?} and {after:?}"
        );
    }

    assert_eq!(
        sorted_keys(&store.list("repos/1/").await?),
        ["repos/1/pack/pack-a.idx", "repos/1/pack/pack-a.pack"]
    );
    // A prefix is a string prefix, not a directory.
    assert_eq!(
        sorted_keys(&store.list("repos/1").await?),
        [
            "repos/1/pack/pack-a.idx",
            "repos/1/pack/pack-a.pack",
            "repos/10/pack/pack-b.pack"
        ]
    );
    assert_eq!(
        sorted_keys(&store.list("repos/1/pack/pack-a.p").await?),
        ["repos/1/pack/pack-a.pack"]
    );
    assert_eq!(sorted_keys(&store.list("top").await?), ["top"]);
    assert!(store.list("repos/3/").await?.is_empty());
    assert!(store.list("../").await?.is_empty());
    Ok(())
}

async fn nested_keys_are_kept_apart(fixture: &Fixture) -> anyhow::Result<()> {
    let store = &fixture.store;
    let keys = [
        "a/b/c/d/e/f",
        "a/b/c/d/e/g",
        "a/b/x",
        "a.b/c",
        "a-b/c",
        ".hidden/x",
    ];
    for key in keys {
        store
            .put_file(key, &fixture.source("s", key.as_bytes())?)
            .await?;
    }
    let out = fixture.path("out");
    for key in keys {
        store.get_to_file(key, &out).await?;
        assert_eq!(std::fs::read(&out)?, key.as_bytes(), "{key}");
    }
    assert_eq!(
        sorted_keys(&store.list("a/b/c/").await?),
        ["a/b/c/d/e/f", "a/b/c/d/e/g"]
    );
    let mut all: Vec<String> = keys.iter().map(|key| key.to_string()).collect();
    all.sort();
    assert_eq!(sorted_keys(&store.list("").await?), all);
    Ok(())
}

async fn invalid_keys_are_refused_by_every_operation(fixture: &Fixture) -> anyhow::Result<()> {
    let store = &fixture.store;
    let source = fixture.source("source", b"x")?;
    let out = fixture.path("out");
    for key in [
        "",
        "/etc/passwd",
        "../escape",
        "a/../../escape",
        "a/./b",
        ".",
        "a//b",
        "a/",
        "a/.nimbus-tmp-1",
    ] {
        let is_invalid = |result: Result<(), ObjectStoreError>| matches!(result, Err(ObjectStoreError::InvalidKey { key: reported }) if reported == key);
        assert!(is_invalid(store.put_file(key, &source).await), "{key:?}");
        assert!(is_invalid(store.get_to_file(key, &out).await), "{key:?}");
        assert!(is_invalid(store.size(key).await.map(|_| ())), "{key:?}");
        assert!(is_invalid(store.delete(key).await), "{key:?}");
        assert_eq!(store.local_path(key), None, "{key:?}");
    }
    assert!(store.list("").await?.is_empty());
    Ok(())
}

/// Readers must see either the old or the new object, never a mix or a
/// truncated one.
async fn put_is_atomic_for_concurrent_readers(fixture: &Fixture) -> anyhow::Result<()> {
    let store = Arc::clone(&fixture.store);
    let size = 1 << 20;
    let first = fixture.source("first", &vec![b'a'; size])?;
    let second = fixture.source("second", &vec![b'b'; size * 2])?;
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
    let out = fixture.path("read");
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        store.get_to_file("repos/1/object", &out).await?;
        reads += 1;
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
    assert_eq!(sorted_keys(&store.list("").await?), ["repos/1/object"]);
    Ok(())
}

async fn check_accepts_a_usable_store(fixture: &Fixture) -> anyhow::Result<()> {
    fixture.store.check().await?;
    // The probe leaves nothing behind, and objects survive it.
    assert!(fixture.store.list("").await?.is_empty());
    fixture
        .store
        .put_file("k", &fixture.source("k", b"k")?)
        .await?;
    fixture.store.check().await?;
    assert_eq!(sorted_keys(&fixture.store.list("").await?), ["k"]);
    Ok(())
}

/// How long a failing `check` may take at most: it must fail, not hang.
const CHECK_FAILS_WITHIN: Duration = Duration::from_secs(15);

mod local_only {
    use super::*;

    #[tokio::test]
    async fn local_path_points_at_the_stored_file() -> anyhow::Result<()> {
        let fixture = Fixture::local()?;
        fixture
            .store
            .put_file("a/b", &fixture.source("s", b"content")?)
            .await?;
        let path = fixture
            .store
            .local_path("a/b")
            .expect("a valid key has a path");
        assert_eq!(std::fs::read(path)?, b"content");
        Ok(())
    }

    #[tokio::test]
    async fn a_store_never_written_lists_nothing() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = LocalObjectStore::new(dir.path().join("never-created"));
        assert!(store.list("").await?.is_empty());
        Ok(())
    }

    /// Writes go through temporary files that must not remain, nor be listed.
    #[tokio::test]
    async fn no_temporary_files_remain() -> anyhow::Result<()> {
        let fixture = Fixture::local()?;
        for round in 0..5 {
            fixture
                .store
                .put_file("repos/1/object", &fixture.source("s", &[round; 100])?)
                .await?;
        }
        fixture.store.check().await?;
        let leftovers: Vec<_> = std::fs::read_dir(fixture.scratch.path().join("objects/repos/1"))?
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect::<Result<_, _>>()?;
        assert_eq!(leftovers, ["object"]);
        let root_entries = std::fs::read_dir(fixture.scratch.path().join("objects"))?.count();
        assert_eq!(root_entries, 1, "only repos/ remains after check");
        Ok(())
    }

    #[tokio::test]
    async fn check_creates_a_missing_directory() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("a/b/objects");
        LocalObjectStore::new(root.clone()).check().await?;
        assert!(root.is_dir());
        Ok(())
    }

    #[tokio::test]
    async fn check_refuses_a_directory_that_cannot_be_created() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"not a directory")?;
        let root = file.join("objects");
        let error = LocalObjectStore::new(root.clone())
            .check()
            .await
            .expect_err("a directory below a file cannot be created");
        assert!(
            matches!(error, ObjectStoreError::Unavailable(_)),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&root.display().to_string()),
            "the message names the directory: {message}"
        );
        Ok(())
    }
}

mod s3_only {
    use super::*;

    /// Keys are relative to the configured prefix: objects outside it are
    /// neither listed nor reachable, and the prefix is not part of a key.
    #[tokio::test]
    async fn keys_are_relative_to_the_configured_prefix() -> anyhow::Result<()> {
        let endpoint = s3_endpoint();
        let bucket = unique_bucket_name();
        create_bucket(&endpoint, &bucket).await?;
        let sdk = test_sdk_config();
        let tenant = S3ObjectStore::with_sdk_config(s3_config(&endpoint, &bucket, "tenant/"), &sdk);
        let other =
            S3ObjectStore::with_sdk_config(s3_config(&endpoint, &bucket, "tenant-2/"), &sdk);
        let whole = S3ObjectStore::with_sdk_config(s3_config(&endpoint, &bucket, ""), &sdk);
        let scratch = tempfile::tempdir()?;
        let source = scratch.path().join("s");
        std::fs::write(&source, b"content")?;

        tenant.put_file("repos/1/a", &source).await?;
        other.put_file("repos/1/b", &source).await?;
        assert_eq!(sorted_keys(&tenant.list("").await?), ["repos/1/a"]);
        assert_eq!(sorted_keys(&tenant.list("repos/").await?), ["repos/1/a"]);
        assert_eq!(sorted_keys(&other.list("").await?), ["repos/1/b"]);
        assert_eq!(
            sorted_keys(&whole.list("").await?),
            ["tenant-2/repos/1/b", "tenant/repos/1/a"]
        );
        assert_eq!(tenant.size("repos/1/b").await?, None);
        assert_eq!(whole.size("tenant/repos/1/a").await?, Some(7));
        tenant.check().await?;
        assert_eq!(sorted_keys(&whole.list("").await?).len(), 2);
        Ok(())
    }

    /// A prefix given in an `s3://` URL means the same as one set directly.
    #[tokio::test]
    async fn a_store_configured_from_a_url_uses_its_prefix() -> anyhow::Result<()> {
        let endpoint = s3_endpoint();
        let bucket = unique_bucket_name();
        create_bucket(&endpoint, &bucket).await?;
        let mut config: S3Config = format!("s3://{bucket}/deep/prefix").parse()?;
        config.endpoint = Some(endpoint.clone());
        config.force_path_style = true;
        let sdk = test_sdk_config();
        let store = S3ObjectStore::with_sdk_config(config, &sdk);
        let whole = S3ObjectStore::with_sdk_config(s3_config(&endpoint, &bucket, ""), &sdk);
        let scratch = tempfile::tempdir()?;
        let source = scratch.path().join("s");
        std::fs::write(&source, b"x")?;
        store.put_file("k", &source).await?;
        assert_eq!(sorted_keys(&whole.list("").await?), ["deep/prefix/k"]);
        Ok(())
    }

    fn missing_bucket_store() -> (S3ObjectStore, String) {
        let bucket = unique_bucket_name();
        let store = S3ObjectStore::with_sdk_config(
            s3_config(&s3_endpoint(), &bucket, ""),
            &test_sdk_config(),
        );
        (store, bucket)
    }

    #[tokio::test]
    async fn check_names_a_missing_bucket() -> anyhow::Result<()> {
        let (store, bucket) = missing_bucket_store();
        let started = Instant::now();
        let error = store.check().await.expect_err("the bucket does not exist");
        assert!(
            started.elapsed() < CHECK_FAILS_WITHIN,
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(error, ObjectStoreError::Unavailable(_)),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("bucket \"{bucket}\" does not exist")),
            "{message}"
        );
        Ok(())
    }

    /// A missing bucket is a broken store: reading from it must not look
    /// like a missing object.
    #[tokio::test]
    async fn a_missing_bucket_is_not_a_missing_object() -> anyhow::Result<()> {
        let (store, _) = missing_bucket_store();
        let scratch = tempfile::tempdir()?;
        let error = store
            .get_to_file("k", &scratch.path().join("out"))
            .await
            .expect_err("the bucket does not exist");
        assert!(
            matches!(error, ObjectStoreError::Backend { .. }),
            "{error:?}"
        );
        let source = scratch.path().join("s");
        std::fs::write(&source, b"x")?;
        assert!(store.put_file("k", &source).await.is_err());
        assert!(store.list("").await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn check_names_an_unreachable_endpoint() -> anyhow::Result<()> {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let store =
            S3ObjectStore::with_sdk_config(s3_config(&endpoint, "bucket", ""), &test_sdk_config());
        let started = Instant::now();
        let error = store.check().await.expect_err("nothing listens there");
        assert!(
            started.elapsed() < CHECK_FAILS_WITHIN,
            "{:?}",
            started.elapsed()
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("the S3 endpoint {endpoint} cannot be reached")),
            "{message}"
        );
        Ok(())
    }
}
