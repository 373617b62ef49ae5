//! An object store in an S3 bucket (AWS or any S3-compatible service), on
//! the AWS SDK: keys live under an optional prefix of one bucket.

use crate::local::is_valid_key;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region, SharedHttpClient};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use futures::{StreamExt, TryStreamExt};
use nimbus_types::storage::{ObjectInfo, ObjectStore, ObjectStoreError};
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

/// Files up to this size are sent with one `PutObject`; larger ones with a
/// multipart upload.
const MULTIPART_THRESHOLD: u64 = 64 << 20;
/// The size of each part of a multipart upload but the last (S3 wants at
/// least 5 MiB and at most 10,000 parts: this allows objects of 160 GiB).
const PART_SIZE: u64 = 16 << 20;
/// How many parts of one object are sent at once.
const PARTS_IN_FLIGHT: usize = 4;
/// How long establishing a connection may take before the attempt fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one attempt of one request may take, body included (a 64 MiB
/// `PutObject` at about 250 KB/s). Stalled transfers are cut sooner by the
/// SDK's stalled-stream protection.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the start-up probe may take per request, retries included.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// The region used when neither the configuration nor the environment names
/// one: S3-compatible services generally ignore it, but requests must be
/// signed for some region.
const FALLBACK_REGION: &str = "us-east-1";

/// Where an [`S3ObjectStore`] keeps its objects and how it reaches them.
///
/// Credentials are not part of it: they come from the standard AWS chain
/// (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, instance roles).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// Prepended to every key: empty, or `/`-separated components ending in
    /// `/`.
    pub prefix: String,
    /// The service's URL (e.g. `http://127.0.0.1:9000`); default: from
    /// `AWS_ENDPOINT_URL`, or AWS itself.
    pub endpoint: Option<String>,
    /// The region; default: from `AWS_REGION` or the profile, else
    /// `us-east-1`.
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket` instead of `bucket.endpoint`,
    /// as most S3-compatible services need.
    pub force_path_style: bool,
}

/// Why a string is not an `s3://bucket/prefix` URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3ConfigError {
    #[error("{url:?} is not an S3 URL: it must start with s3://")]
    NotS3 { url: String },
    #[error("{url:?} names no bucket: write s3://bucket or s3://bucket/prefix")]
    EmptyBucket { url: String },
    #[error(
        "{bucket:?} is not a valid bucket name: use lowercase letters, digits, '.', '-' and '_'"
    )]
    InvalidBucket { bucket: String },
    #[error("{prefix:?} is not a valid key prefix: it has an empty, '.' or '..' component")]
    InvalidPrefix { prefix: String },
}

impl FromStr for S3Config {
    type Err = S3ConfigError;

    /// Parses `s3://bucket` or `s3://bucket/some/prefix` (a trailing `/` is
    /// optional). Endpoint and region are left to the environment.
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| S3ConfigError::NotS3 {
                url: url.to_owned(),
            })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(S3ConfigError::EmptyBucket {
                url: url.to_owned(),
            });
        }
        let bucket_character_is_valid = |character: char| {
            character.is_ascii_lowercase()
                || character.is_ascii_digit()
                || matches!(character, '.' | '-' | '_')
        };
        if !bucket.chars().all(bucket_character_is_valid) {
            return Err(S3ConfigError::InvalidBucket {
                bucket: bucket.to_owned(),
            });
        }
        let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
        let prefix = if trimmed.is_empty() {
            String::new()
        } else if is_valid_key(trimmed) {
            format!("{trimmed}/")
        } else {
            return Err(S3ConfigError::InvalidPrefix {
                prefix: prefix.to_owned(),
            });
        };
        Ok(S3Config {
            bucket: bucket.to_owned(),
            prefix,
            endpoint: None,
            region: None,
            force_path_style: false,
        })
    }
}

/// Failures of S3 requests, carried as the source of [`ObjectStoreError`]s.
/// `detail` is the SDK's full error context (S3 error code and message, or
/// the connection failure).
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("bucket {bucket:?} does not exist or is not accessible: {detail}")]
    BucketUnavailable { bucket: String, detail: String },
    #[error("the S3 endpoint {endpoint} cannot be reached: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("S3 {operation} of {target} failed: {detail}")]
    Request {
        operation: &'static str,
        target: String,
        detail: String,
    },
    #[error("S3 {operation} of {target} answered without {field}")]
    IncompleteAnswer {
        operation: &'static str,
        target: String,
        field: &'static str,
    },
    #[error("reading the body of {target} from S3 failed")]
    Body {
        target: String,
        #[source]
        source: aws_sdk_s3::primitives::ByteStreamError,
    },
}

/// An [`ObjectStore`] keeping each object in an S3 bucket under
/// `prefix + key`.
///
/// A `PutObject` or a completed multipart upload replaces an object
/// atomically, so readers never see a partial object.
#[derive(Debug, Clone)]
pub struct S3ObjectStore {
    client: Client,
    bucket: String,
    prefix: String,
    /// For messages: the endpoint requests go to.
    endpoint: String,
}

/// An HTTPS client on rustls with the `ring` provider (the SDK's default
/// uses aws-lc, a large C build).
fn http_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

impl S3ObjectStore {
    /// A store configured by `config`, with credentials, and endpoint and
    /// region unless `config` names them, from the standard AWS chain
    /// (environment, profile files, instance metadata).
    pub async fn connect(config: S3Config) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk_config = loader.load().await;
        Self::with_sdk_config(config, &sdk_config)
    }

    /// A store configured by `config` on top of an explicit SDK
    /// configuration (credentials, region), as tests use.
    pub fn with_sdk_config(config: S3Config, sdk_config: &aws_config::SdkConfig) -> Self {
        let mut builder = aws_sdk_s3::config::Builder::from(sdk_config)
            .http_client(http_client())
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            )
            .force_path_style(config.force_path_style);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        if let Some(region) = &config.region {
            builder = builder.region(Region::new(region.clone()));
        } else if sdk_config.region().is_none() {
            builder = builder.region(Region::new(FALLBACK_REGION));
        }
        let endpoint = config
            .endpoint
            .clone()
            .or_else(|| sdk_config.endpoint_url().map(str::to_owned))
            .unwrap_or_else(|| "of AWS S3".to_owned());
        S3ObjectStore {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket,
            prefix: config.prefix,
            endpoint,
        }
    }

    /// The bucket's key for `key`.
    fn full_key(&self, key: &str) -> Result<String, ObjectStoreError> {
        if is_valid_key(key) {
            Ok(format!("{}{key}", self.prefix))
        } else {
            Err(ObjectStoreError::InvalidKey {
                key: key.to_owned(),
            })
        }
    }

    /// `s3://bucket/full_key`, for messages.
    fn target(&self, full_key: &str) -> String {
        format!("s3://{}/{full_key}", self.bucket)
    }

    /// Classify a failed request: no connection (or no answer in time) means
    /// the endpoint is unreachable; anything else is a failed request.
    fn request_error<E, R>(
        &self,
        operation: &'static str,
        full_key: &str,
        error: &SdkError<E, R>,
    ) -> S3Error
    where
        E: std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        let detail = error_chain(error);
        match error {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => S3Error::Unreachable {
                endpoint: self.endpoint.clone(),
                detail,
            },
            _ => S3Error::Request {
                operation,
                target: self.target(full_key),
                detail,
            },
        }
    }

    fn backend(key: &str, error: S3Error) -> ObjectStoreError {
        ObjectStoreError::Backend {
            key: key.to_owned(),
            source: Box::new(error),
        }
    }

    async fn put_single(&self, full_key: &str, source: &Path) -> Result<(), S3Error> {
        let body = ByteStream::from_path(source)
            .await
            .map_err(|source| S3Error::Body {
                target: self.target(full_key),
                source,
            })?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full_key)
            .body(body)
            .send()
            .await
            .map_err(|error| self.request_error("PutObject", full_key, &error))?;
        Ok(())
    }

    async fn put_multipart(&self, full_key: &str, source: &Path, size: u64) -> Result<(), S3Error> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full_key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|error| self.request_error("CreateMultipartUpload", full_key, &error))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| S3Error::IncompleteAnswer {
                operation: "CreateMultipartUpload",
                target: self.target(full_key),
                field: "an upload id",
            })?
            .to_owned();
        let result = match self.upload_parts(full_key, &upload_id, source, size).await {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(full_key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(drop)
                .map_err(|error| self.request_error("CompleteMultipartUpload", full_key, &error)),
            Err(error) => Err(error),
        };
        if result.is_err() {
            // Parts of an abandoned upload are stored (and billed) until
            // aborted; a failure here leaves them to the bucket's lifecycle.
            if let Err(error) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(full_key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(
                    key = full_key,
                    upload_id,
                    error = %DisplayErrorContext(&error),
                    "could not abort a failed multipart upload"
                );
            }
        }
        result
    }

    /// Upload `source` as parts of `PART_SIZE`, a few at a time, each
    /// streamed from its range of the file; the parts in order.
    async fn upload_parts(
        &self,
        full_key: &str,
        upload_id: &str,
        source: &Path,
        size: u64,
    ) -> Result<Vec<CompletedPart>, S3Error> {
        let part_count = size.div_ceil(PART_SIZE);
        futures::stream::iter(0..part_count)
            .map(|index| async move {
                let offset = index * PART_SIZE;
                let length = PART_SIZE.min(size - offset);
                let part_number = i32::try_from(index + 1).expect("at most 10,000 parts");
                let body = ByteStream::read_from()
                    .path(source)
                    .offset(offset)
                    .length(Length::Exact(length))
                    .build()
                    .await
                    .map_err(|source| S3Error::Body {
                        target: self.target(full_key),
                        source,
                    })?;
                let uploaded = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(full_key)
                    .upload_id(upload_id)
                    .part_number(part_number)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .body(body)
                    .send()
                    .await
                    .map_err(|error| self.request_error("UploadPart", full_key, &error))?;
                Ok(CompletedPart::builder()
                    .part_number(part_number)
                    .set_e_tag(uploaded.e_tag().map(str::to_owned))
                    .set_checksum_crc32(uploaded.checksum_crc32().map(str::to_owned))
                    .build())
            })
            .buffered(PARTS_IN_FLIGHT)
            .try_collect()
            .await
    }

    /// The start-up probe, as an [`S3Error`].
    async fn check_bucket(&self) -> Result<(), S3Error> {
        let quick = || {
            aws_sdk_s3::config::Builder::new()
                .retry_config(RetryConfig::standard().with_max_attempts(2))
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(CONNECT_TIMEOUT)
                        .operation_timeout(CHECK_TIMEOUT)
                        .build(),
                )
        };
        if let Err(error) = self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .customize()
            .config_override(quick())
            .send()
            .await
        {
            return Err(match self.request_error("HeadBucket", "", &error) {
                S3Error::Request { detail, .. } => S3Error::BucketUnavailable {
                    bucket: self.bucket.clone(),
                    detail,
                },
                other => other,
            });
        }
        let probe_key = format!(
            "{}.nimbus-check-{}-{}",
            self.prefix,
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&probe_key)
            .body(ByteStream::from_static(b"nimbus start-up check"))
            .customize()
            .config_override(quick())
            .send()
            .await
            .map_err(|error| self.request_error("PutObject", &probe_key, &error))?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&probe_key)
            .customize()
            .config_override(quick())
            .send()
            .await
            .map_err(|error| self.request_error("DeleteObject", &probe_key, &error))?;
        Ok(())
    }
}

/// An error and its causes as one line (`a: b: c`), without the SDK's
/// debug dump of the raw response.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // The SDK's wrappers often repeat their cause's message.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether a failed request was answered with HTTP 404.
fn is_http_not_found<E>(error: &SdkError<E, HttpResponse>) -> bool {
    error
        .raw_response()
        .is_some_and(|response| response.status().as_u16() == 404)
}

#[async_trait::async_trait]
impl ObjectStore for S3ObjectStore {
    async fn put_file(&self, key: &str, source: &Path) -> Result<(), ObjectStoreError> {
        let full_key = self.full_key(key)?;
        let size = tokio::fs::metadata(source)
            .await
            .map_err(|source| ObjectStoreError::Io {
                key: key.to_owned(),
                source,
            })?
            .len();
        let result = if size > MULTIPART_THRESHOLD {
            self.put_multipart(&full_key, source, size).await
        } else {
            self.put_single(&full_key, source).await
        };
        result.map_err(|error| Self::backend(key, error))
    }

    async fn get_to_file(&self, key: &str, destination: &Path) -> Result<(), ObjectStoreError> {
        let full_key = self.full_key(key)?;
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full_key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(error) => {
                let missing_key = match error.as_service_error() {
                    Some(GetObjectError::NoSuchKey(_)) => true,
                    Some(service_error) => {
                        // A missing bucket is a broken store, not a missing
                        // object.
                        service_error.code() != Some("NoSuchBucket") && is_http_not_found(&error)
                    }
                    None => false,
                };
                if missing_key {
                    return Err(ObjectStoreError::NotFound {
                        key: key.to_owned(),
                    });
                }
                return Err(Self::backend(
                    key,
                    self.request_error("GetObject", &full_key, &error),
                ));
            }
        };
        let io = |source| ObjectStoreError::Io {
            key: key.to_owned(),
            source,
        };
        let mut file = tokio::fs::File::create(destination).await.map_err(io)?;
        let mut body = output.body;
        while let Some(chunk) = body.try_next().await.map_err(|source| {
            Self::backend(
                key,
                S3Error::Body {
                    target: self.target(&full_key),
                    source,
                },
            )
        })? {
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        Ok(())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, ObjectStoreError> {
        let full_key = self.full_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full_key)
            .send()
            .await
        {
            Ok(output) => {
                let length = output
                    .content_length()
                    .and_then(|length| u64::try_from(length).ok());
                match length {
                    Some(length) => Ok(Some(length)),
                    None => Err(Self::backend(
                        key,
                        S3Error::IncompleteAnswer {
                            operation: "HeadObject",
                            target: self.target(&full_key),
                            field: "a content length",
                        },
                    )),
                }
            }
            Err(error)
                if matches!(error.as_service_error(), Some(HeadObjectError::NotFound(_)))
                    || is_http_not_found(&error) =>
            {
                Ok(None)
            }
            Err(error) => Err(Self::backend(
                key,
                self.request_error("HeadObject", &full_key, &error),
            )),
        }
    }

    async fn download_url(
        &self,
        key: &str,
        valid_for: Duration,
    ) -> Result<Option<String>, ObjectStoreError> {
        let full_key = self.full_key(key)?;
        let config = PresigningConfig::expires_in(valid_for).map_err(|error| {
            Self::backend(
                key,
                S3Error::Request {
                    operation: "presigning GetObject",
                    target: self.target(&full_key),
                    detail: error.to_string(),
                },
            )
        })?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full_key)
            .presigned(config)
            .await
            .map_err(|error| {
                Self::backend(
                    key,
                    self.request_error("presigning GetObject", &full_key, &error),
                )
            })?;
        Ok(Some(request.uri().to_owned()))
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        let full_key = self.full_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full_key)
            .send()
            .await
            .map_err(|error| {
                Self::backend(key, self.request_error("DeleteObject", &full_key, &error))
            })?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectStoreError> {
        let full_prefix = format!("{}{prefix}", self.prefix);
        let incomplete = |field| {
            Self::backend(
                prefix,
                S3Error::IncompleteAnswer {
                    operation: "ListObjectsV2",
                    target: self.target(&full_prefix),
                    field,
                },
            )
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| {
                Self::backend(
                    prefix,
                    self.request_error("ListObjectsV2", &full_prefix, &error),
                )
            })?;
            for object in page.contents() {
                let full_key = object.key().ok_or_else(|| incomplete("a key"))?;
                // Only keys this store could have written: a foreign object
                // with an odd name is not ours to report.
                let Some(key) = full_key.strip_prefix(&self.prefix) else {
                    continue;
                };
                if !is_valid_key(key) {
                    continue;
                }
                let size = object
                    .size()
                    .and_then(|size| u64::try_from(size).ok())
                    .ok_or_else(|| incomplete("an object size"))?;
                // Garbage collection decides by age: an object of unknown
                // age must not look old.
                let modified = object
                    .last_modified()
                    .and_then(|modified| SystemTime::try_from(*modified).ok())
                    .ok_or_else(|| incomplete("a modification time"))?;
                objects.push(ObjectInfo {
                    key: key.to_owned(),
                    size,
                    modified,
                });
            }
        }
        Ok(objects)
    }

    async fn check(&self) -> Result<(), ObjectStoreError> {
        self.check_bucket()
            .await
            .map_err(|error| ObjectStoreError::Unavailable(Box::new(error)))
    }
}

#[cfg(test)]
mod tests {
    use super::{S3Config, S3ConfigError};

    fn parse(url: &str) -> Result<S3Config, S3ConfigError> {
        url.parse()
    }

    #[test]
    fn bucket_and_prefix_are_parsed() {
        for (url, bucket, prefix) in [
            ("s3://packs", "packs", ""),
            ("s3://packs/", "packs", ""),
            ("s3://packs/nimbus", "packs", "nimbus/"),
            ("s3://packs/nimbus/", "packs", "nimbus/"),
            ("s3://my.bucket-1/a/b/c", "my.bucket-1", "a/b/c/"),
        ] {
            assert_eq!(
                parse(url),
                Ok(S3Config {
                    bucket: bucket.to_owned(),
                    prefix: prefix.to_owned(),
                    endpoint: None,
                    region: None,
                    force_path_style: false,
                }),
                "{url}"
            );
        }
    }

    #[test]
    fn malformed_urls_are_refused_with_the_reason() {
        let not_s3 = |url: &str| S3ConfigError::NotS3 {
            url: url.to_owned(),
        };
        assert_eq!(parse("/srv/objects"), Err(not_s3("/srv/objects")));
        assert_eq!(parse("S3://packs"), Err(not_s3("S3://packs")));
        assert_eq!(parse("gs://packs"), Err(not_s3("gs://packs")));
        assert_eq!(parse("s3:/packs"), Err(not_s3("s3:/packs")));
        for url in ["s3://", "s3:///prefix"] {
            assert_eq!(
                parse(url),
                Err(S3ConfigError::EmptyBucket {
                    url: url.to_owned()
                })
            );
        }
        for bucket in ["Packs", "pa cks", "packs?x=1", "päcks", "user@packs"] {
            assert_eq!(
                parse(&format!("s3://{bucket}/p")),
                Err(S3ConfigError::InvalidBucket {
                    bucket: bucket.to_owned()
                })
            );
        }
        for prefix in ["a//b", "./a", "a/../b", "..", "/a", "a//"] {
            assert_eq!(
                parse(&format!("s3://packs/{prefix}")),
                Err(S3ConfigError::InvalidPrefix {
                    prefix: prefix.to_owned()
                }),
                "{prefix}"
            );
        }
    }
}
