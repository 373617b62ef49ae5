//! The production configuration for tests: metadata in a real PostgreSQL
//! and packs in a real S3-compatible server (moto), both started by
//! `scripts/test` (`scripts/postgres`, `scripts/s3`), which name them in
//! `NIMBUS_TEST_POSTGRES_URL` and `NIMBUS_TEST_S3_ENDPOINT`.
//!
//! With `NIMBUS_TEST_BACKEND=cloud`, every `NimbusServer` a test starts
//! without storage settings of its own gets a fresh database and a fresh
//! bucket: that is how `scripts/test` runs the git end-to-end scenarios a
//! second time on PostgreSQL + S3.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether servers should run on PostgreSQL + S3 by default.
pub fn cloud_backend_requested() -> bool {
    std::env::var("NIMBUS_TEST_BACKEND").is_ok_and(|value| value == "cloud")
}

fn required(variable: &str, starter: &str) -> String {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => value,
        // Never skip: a missing service would otherwise pass as green.
        _ => panic!(
            "{variable} is not set; scripts/test starts the service \
             (or run: export {variable}=\"$({starter})\")"
        ),
    }
}

pub fn postgres_url() -> String {
    required("NIMBUS_TEST_POSTGRES_URL", "scripts/postgres")
}

pub fn s3_endpoint() -> String {
    required("NIMBUS_TEST_S3_ENDPOINT", "scripts/s3")
}

/// A name no other test (in this run or an earlier one) uses: lowercase
/// letters, digits and `_`, valid as a database and (with `_` as `-`) as a
/// bucket name.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000
    )
}

/// A fresh, empty database on the test PostgreSQL server; returns its URL.
/// `scripts/test` drops the `nimbus_e2e_` databases of earlier runs.
pub fn fresh_database(name: &str) -> String {
    let admin = postgres_url();
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        let output = Command::new("psql")
            .arg(&admin)
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-c", &statement])
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "{statement}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base)
        .expect("a database URL ends in /<database>");
    format!("{base}/{name}")
}

/// A fresh bucket on the test S3 server; returns its name. (moto takes
/// unsigned requests, so a plain `PUT /<bucket>` makes one.)
pub fn fresh_bucket(name: &str) -> String {
    let bucket = name.replace('_', "-");
    let url = format!("{}/{bucket}", s3_endpoint());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .put(&url)
        .send_empty()
        .unwrap_or_else(|error| panic!("PUT {url} failed: {error}"));
    assert!(
        response.status().is_success(),
        "creating bucket {bucket} failed: {}",
        response.status()
    );
    bucket
}

/// The server environment for metadata in `database_url` and packs in
/// `s3://<bucket>/<prefix>`.
pub fn cloud_env(database_url: &str, bucket: &str, prefix: &str) -> Vec<(String, String)> {
    [
        ("NIMBUS_DATABASE_URL", database_url.to_owned()),
        ("NIMBUS_OBJECT_STORE", format!("s3://{bucket}/{prefix}")),
        ("NIMBUS_S3_PATH_STYLE", "true".to_owned()),
        ("AWS_ENDPOINT_URL", s3_endpoint()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// A fresh database and bucket, as server environment.
pub fn fresh_cloud_env() -> Vec<(String, String)> {
    let name = unique_name("nimbus_e2e");
    let database = fresh_database(&name);
    let bucket = fresh_bucket(&name);
    cloud_env(&database, &bucket, "nimbus")
}

/// The keys (relative to the prefix of `store_url`, `s3://bucket/prefix`)
/// that start with `prefix` in the bucket, read with ListObjectsV2.
pub fn list_bucket(store_url: &str, prefix: &str) -> Vec<String> {
    let location = store_url.strip_prefix("s3://").expect("an s3:// URL");
    let (bucket, base) = location.split_once('/').unwrap_or((location, ""));
    let base = if base.is_empty() || base.ends_with('/') {
        base.to_owned()
    } else {
        format!("{base}/")
    };
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut request = agent
            .get(&format!("{}/{bucket}", s3_endpoint()))
            .query("list-type", "2")
            .query("prefix", format!("{base}{prefix}"));
        if let Some(token) = &token {
            request = request.query("continuation-token", token);
        }
        let body = request
            .call()
            .and_then(|mut response| response.body_mut().read_to_string())
            .unwrap_or_else(|error| panic!("listing bucket {bucket} failed: {error}"));
        for key in xml_values(&body, "Key") {
            keys.push(key.strip_prefix(&base).unwrap_or(&key).to_owned());
        }
        token = xml_values(&body, "NextContinuationToken")
            .into_iter()
            .next();
        if token.is_none() {
            return keys;
        }
    }
}

/// The text of every `<tag>...</tag>` in `xml` (S3 keys here are plain).
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut values = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        values.push(after[..end].replace("&amp;", "&"));
        rest = &after[end + close.len()..];
    }
    values
}
