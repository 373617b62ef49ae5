//! `nimbus serve` with a storage configuration that cannot work stops at
//! start-up, quickly, with a message naming the setting to fix; with a good
//! S3 configuration it serves pushes and clones from the bucket.
//!
//! The S3 cases use the S3-compatible server that `scripts/s3` starts
//! (`NIMBUS_TEST_S3_ENDPOINT`). That server accepts any credentials, so
//! wrong credentials cannot be tested here.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Git, NimbusServer, ServerOptions};

/// A failing start-up must end by itself well within this; the test kills
/// the process after it (and fails).
const START_UP_GIVES_UP_WITHIN: Duration = Duration::from_secs(45);

fn s3_endpoint() -> String {
    match std::env::var("NIMBUS_TEST_S3_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => endpoint,
        _ => panic!(
            "NIMBUS_TEST_S3_ENDPOINT is not set: these tests need an S3-compatible server. \
             Run them through scripts/test, or start one with \
             `export NIMBUS_TEST_S3_ENDPOINT=\"$(scripts/s3)\"`."
        ),
    }
}

/// A local address where nothing listens (bound, then released).
fn unused_local_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free local port")
        .port()
}

/// A bucket name no other test uses.
fn unique_bucket_name(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("nimbus-{test}-{}-{nanos}", std::process::id())
}

/// The environment of a server using `bucket` on the S3 server at
/// `endpoint`, with credentials it accepts and nothing taken from the
/// machine's own AWS configuration.
fn s3_env(endpoint: &str, bucket: &str) -> Vec<(String, String)> {
    [
        ("NIMBUS_OBJECT_STORE", format!("s3://{bucket}/nimbus")),
        ("NIMBUS_S3_PATH_STYLE", "true".to_owned()),
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// Runs `nimbus serve` with `env`, expecting it to fail on its own; returns
/// its standard error.
fn serve_fails(data_dir: &Path, env: &[(String, String)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nimbus"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("NIMBUS_LOG", "warn")
        .env_remove("NIMBUS_DATABASE_URL")
        .env_remove("NIMBUS_OBJECT_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start nimbus serve");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for nimbus") {
            break status;
        }
        if started.elapsed() > START_UP_GIVES_UP_WITHIN {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect nimbus's output");
            panic!(
                "nimbus serve with {env:?} was still running after {START_UP_GIVES_UP_WITHIN:?}; \
                 stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().expect("collect nimbus's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !status.success(),
        "nimbus serve with {env:?} should fail; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        !stdout.contains("listening on"),
        "nimbus must not listen with a broken configuration: {stdout}"
    );
    stderr
}

fn assert_mentions(stderr: &str, expected: &[&str]) {
    for text in expected {
        assert!(
            stderr.contains(text),
            "the error should mention {text:?}:\n{stderr}"
        );
    }
}

#[test]
fn unreachable_postgresql_names_nimbus_database_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "postgres://nimbus:secret-password@127.0.0.1:{}/nimbus",
        unused_local_port()
    );
    let stderr = serve_fails(dir.path(), &[("NIMBUS_DATABASE_URL".to_owned(), url)]);
    assert_mentions(&stderr, &["NIMBUS_DATABASE_URL"]);
    assert!(
        !stderr.contains("secret-password"),
        "the password must not be printed:\n{stderr}"
    );
}

#[test]
fn missing_s3_bucket_names_nimbus_object_store_and_the_bucket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = unique_bucket_name("missing");
    let stderr = serve_fails(dir.path(), &s3_env(&s3_endpoint(), &bucket));
    assert_mentions(
        &stderr,
        &[
            &format!("NIMBUS_OBJECT_STORE=s3://{bucket}/nimbus"),
            &format!("bucket \"{bucket}\" does not exist or is not accessible"),
        ],
    );
}

#[test]
fn unreachable_s3_endpoint_names_nimbus_object_store_and_the_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = format!("http://127.0.0.1:{}", unused_local_port());
    let stderr = serve_fails(dir.path(), &s3_env(&endpoint, "nimbus-packs"));
    assert_mentions(
        &stderr,
        &[
            "NIMBUS_OBJECT_STORE=s3://nimbus-packs/nimbus",
            &format!("the S3 endpoint {endpoint} cannot be reached"),
        ],
    );
}

#[test]
fn malformed_s3_url_names_nimbus_object_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (url, reason) in [
        ("s3://", "names no bucket"),
        ("s3://Packs", "is not a valid bucket name"),
        ("s3://packs//x", "is not a valid key prefix"),
    ] {
        let stderr = serve_fails(
            dir.path(),
            &[("NIMBUS_OBJECT_STORE".to_owned(), url.to_owned())],
        );
        assert_mentions(&stderr, &[&format!("NIMBUS_OBJECT_STORE={url}"), reason]);
    }
}

#[test]
fn unwritable_object_directory_names_nimbus_object_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write a file");
    let objects = file.join("objects");
    let stderr = serve_fails(
        &dir.path().join("data"),
        &[(
            "NIMBUS_OBJECT_STORE".to_owned(),
            objects.display().to_string(),
        )],
    );
    assert_mentions(
        &stderr,
        &[&format!("NIMBUS_OBJECT_STORE={}", objects.display())],
    );
}

/// Creates `bucket` on the test server (which does not check signatures,
/// so a plain request will do).
fn create_bucket(endpoint: &str, bucket: &str) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .put(&format!("{endpoint}/{bucket}"))
        .send_empty()
        .expect("reach the S3 test server");
    assert_eq!(
        response.status().as_u16(),
        200,
        "create the bucket {bucket} on {endpoint}"
    );
}

/// The bucket's `ListObjectsV2` answer (XML).
fn bucket_listing(endpoint: &str, bucket: &str) -> String {
    ureq::get(&format!("{endpoint}/{bucket}?list-type=2"))
        .call()
        .expect("list the bucket")
        .body_mut()
        .read_to_string()
        .expect("read the bucket listing")
}

/// With a usable bucket the server starts, pushed packs go to the bucket
/// under the prefix, and clones get them back.
#[test]
fn pushes_and_clones_work_with_an_s3_object_store() {
    let endpoint = s3_endpoint();
    let bucket = unique_bucket_name("serve");
    create_bucket(&endpoint, &bucket);
    let server = NimbusServer::start_with(ServerOptions {
        env: s3_env(&endpoint, &bucket),
        ..ServerOptions::default()
    });
    let _logs = server.log_guard();
    server.create_repo("on-s3", false);
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("create a work directory");
    let alice = work.path().join("alice");
    git.init(&alice);
    git.run(
        &alice,
        &["remote", "add", "origin", &server.push_url("on-s3")],
    );
    git.linear_history(&alice, "s3", 3);
    git.run(&alice, &["push", "-q", "origin", "main"]);
    assert!(
        !server.data_dir().join("objects").exists(),
        "packs must go to the bucket, not the data directory"
    );
    let listing = bucket_listing(&endpoint, &bucket);
    assert!(
        listing.contains("<Key>nimbus/repos/") && listing.contains(".pack</Key>"),
        "the pack is in the bucket under the prefix: {listing}"
    );
    git.run(work.path(), &["clone", "-q", &server.url("on-s3"), "bob"]);
    let bob = work.path().join("bob");
    assert_eq!(git.rev_parse(&bob, "HEAD"), git.rev_parse(&alice, "HEAD"));
    git.fsck(&bob);
}
