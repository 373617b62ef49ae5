//! `nimbus repo import` and `nimbus repo export`: the sources an import
//! reads (a git bundle file, or a smart-HTTP URL fetched natively with
//! ureq, protocol v2 or v0) and the files an export writes. The git work
//! itself is `GitService::import_pack` / `export_bundle`.

use anyhow::{Context, Result, bail};
use nimbus_git::bundle::{self, HeaderLimits};
use nimbus_git::fetch_client::{self, Advertisement, PackStream, RemoteRefs, ResponseVersion};
use nimbus_types::{ObjectId, RefName};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest ref advertisement or `ls-refs` answer read, in bytes.
const MAX_REF_LIST_BYTES: u64 = 256 << 20;

/// A pack stream to import.
pub type PackReader = Box<dyn Read + Send + 'static>;

/// What an import source offers, read before anything is created.
pub struct Prepared {
    /// Branches and tags to create.
    pub refs: Vec<(RefName, ObjectId)>,
    /// The branch `HEAD` should name, without `refs/heads/`.
    pub head_branch: Option<String>,
    /// Refs of the source that are not imported (outside branches and tags).
    pub skipped: usize,
    source: Opened,
}

enum Opened {
    Bundle(BufReader<std::fs::File>),
    Http(HttpRemote),
}

impl Prepared {
    /// The pack: the rest of a bundle, or a full fetch from the remote.
    pub fn into_pack(self) -> Result<PackReader> {
        match self.source {
            Opened::Bundle(reader) => Ok(Box::new(reader)),
            Opened::Http(remote) => {
                let wants: Vec<ObjectId> = self.refs.iter().map(|(_, id)| *id).collect();
                remote.fetch(&wants)
            }
        }
    }
}

/// Credentials for an HTTP source.
pub struct Credentials {
    /// Used as the password of HTTP Basic authentication.
    pub token: Option<String>,
}

/// Read what `source` (an `http(s)://` URL or a bundle path) offers.
pub fn prepare(source: &str, credentials: &Credentials) -> Result<Prepared> {
    if source.starts_with("http://") || source.starts_with("https://") {
        return prepare_http(source, credentials);
    }
    if source.contains("://") {
        bail!("unsupported source '{source}': use an http(s):// URL or the path of a git bundle");
    }
    prepare_bundle(Path::new(source))
}

fn prepare_bundle(path: &Path) -> Result<Prepared> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the bundle {}", path.display()))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let header = bundle::read_header(&mut reader, HeaderLimits::default())
        .with_context(|| format!("{} cannot be imported", path.display()))?;
    if !header.prerequisites.is_empty() {
        bail!(
            "{} is an incremental bundle: it needs {} commit(s) it does not contain, and a new repository has none; create the bundle with `git bundle create FILE --all`",
            path.display(),
            header.prerequisites.len()
        );
    }
    let head_branch = bundle::guess_head_branch(&header);
    let total = header.refs.len();
    let refs: Vec<(RefName, ObjectId)> = header
        .refs
        .into_iter()
        .filter(|(name, _)| name.is_branch() || name.is_tag())
        .collect();
    Ok(Prepared {
        skipped: total - refs.len(),
        refs,
        head_branch,
        source: Opened::Bundle(reader),
    })
}

/// A smart-HTTP remote after its advertisement was read.
struct HttpRemote {
    agent: ureq::Agent,
    /// The repository URL without credentials or a trailing slash.
    base: String,
    authorization: Option<String>,
    version: ResponseVersion,
}

/// A URL split into the part that may be shown and its credentials.
struct SplitUrl {
    /// The URL without user information.
    shown: String,
    user: Option<String>,
    password: Option<String>,
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(value) = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(value);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn split_url(url: &str) -> SplitUrl {
    let Some((scheme, rest)) = url.split_once("://") else {
        return SplitUrl {
            shown: url.to_owned(),
            user: None,
            password: None,
        };
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(percent_decode(password))),
                None => (userinfo, None),
            };
            SplitUrl {
                shown: format!("{scheme}://{host}{path}"),
                user: Some(percent_decode(user)).filter(|u| !u.is_empty()),
                password,
            }
        }
        None => SplitUrl {
            shown: url.to_owned(),
            user: None,
            password: None,
        },
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Say why a request to `url` failed, without credentials.
fn transport_error(url: &str, err: ureq::Error) -> anyhow::Error {
    match err {
        ureq::Error::HostNotFound => anyhow::anyhow!("cannot reach {url}: the host was not found"),
        ureq::Error::ConnectionFailed | ureq::Error::Io(_) | ureq::Error::Timeout(_) => {
            anyhow::anyhow!("cannot reach {url}: {err}")
        }
        other => anyhow::anyhow!("the request to {url} failed: {other}"),
    }
}

fn check_status(url: &str, response: &ureq::http::Response<ureq::Body>) -> Result<()> {
    match response.status().as_u16() {
        200 => Ok(()),
        401 | 403 => bail!(
            "authentication failed for {url} (HTTP {}): pass a token with --token or NIMBUS_IMPORT_TOKEN, or check it",
            response.status().as_u16()
        ),
        404 => bail!("no repository at {url} (HTTP 404)"),
        status => bail!("{url} answered HTTP {status}"),
    }
}

fn prepare_http(url: &str, credentials: &Credentials) -> Result<Prepared> {
    let split = split_url(url);
    let shown = split.shown.trim_end_matches('/').to_owned();
    let password = credentials.token.clone().or(split.password);
    let authorization = match (&split.user, &password) {
        (_, Some(password)) => Some(basic(split.user.as_deref().unwrap_or("nimbus"), password)),
        (Some(user), None) => Some(basic(user, "")),
        (None, None) => None,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .user_agent(concat!("git/2.0 (nimbus/", env!("CARGO_PKG_VERSION"), ")"))
        .build()
        .into();
    let info_refs = format!("{shown}/info/refs?service=git-upload-pack");
    let mut request = agent
        .get(&info_refs)
        .header("Git-Protocol", "version=2")
        .header("Accept", "*/*");
    if let Some(authorization) = &authorization {
        request = request.header("Authorization", authorization);
    }
    let mut response = request.call().map_err(|err| transport_error(&shown, err))?;
    check_status(&shown, &response)?;
    // A redirect moves the repository: later requests go where it went,
    // as git does. Credentials follow only to the same host.
    let final_uri = ureq::ResponseExt::get_uri(&response).to_string();
    let mut base = final_uri
        .split_once("/info/refs")
        .map(|(base, _)| base.to_owned())
        .unwrap_or_else(|| shown.clone());
    let same_host = host_of(&base) == host_of(&shown);
    if !same_host {
        tracing::info!(from = %shown, to = %split_url(&base).shown, "the remote redirected");
    }
    base = split_url(&base).shown;
    let authorization = authorization.filter(|_| same_host);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if content_type != "application/x-git-upload-pack-advertisement" {
        bail!(
            "{shown} is not a git smart-HTTP repository (the server answered {})",
            if content_type.is_empty() {
                "without a content type".to_owned()
            } else {
                content_type
            }
        );
    }
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_REF_LIST_BYTES)
        .read_to_vec()
        .map_err(|err| transport_error(&shown, err))?;
    let advertisement = fetch_client::read_advertisement(&body)
        .with_context(|| format!("fetching from {shown}"))?;
    let mut remote = HttpRemote {
        agent,
        base,
        authorization,
        version: ResponseVersion::V0,
    };
    let listed: RemoteRefs = match advertisement {
        Advertisement::V0(refs) => refs,
        Advertisement::V2 { object_format_sha1 } => {
            if !object_format_sha1 {
                bail!(
                    "{shown} uses an object format other than sha1, which Nimbus does not support"
                );
            }
            remote.version = ResponseVersion::V2;
            let mut request_body = Vec::new();
            fetch_client::write_ls_refs_request(&mut request_body)?;
            let mut response = remote.post(request_body)?;
            let body = response
                .body_mut()
                .with_config()
                .limit(MAX_REF_LIST_BYTES)
                .read_to_vec()
                .map_err(|err| transport_error(&shown, err))?;
            fetch_client::read_ls_refs(&body).with_context(|| format!("listing refs of {shown}"))?
        }
    };
    Ok(Prepared {
        refs: listed
            .refs
            .into_iter()
            .map(|r| (r.name, r.target))
            .collect(),
        head_branch: listed.head_branch,
        skipped: listed.skipped,
        source: Opened::Http(remote),
    })
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

impl HttpRemote {
    fn post(&self, body: Vec<u8>) -> Result<ureq::http::Response<ureq::Body>> {
        let mut request = self
            .agent
            .post(format!("{}/git-upload-pack", self.base))
            .header("Content-Type", "application/x-git-upload-pack-request")
            .header("Accept", "application/x-git-upload-pack-result");
        if self.version == ResponseVersion::V2 {
            request = request.header("Git-Protocol", "version=2");
        }
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let response = request
            .send(&body[..])
            .map_err(|err| transport_error(&self.base, err))?;
        check_status(&self.base, &response)?;
        Ok(response)
    }

    fn fetch(self, wants: &[ObjectId]) -> Result<PackReader> {
        let mut body = Vec::new();
        match self.version {
            ResponseVersion::V2 => fetch_client::write_fetch_request_v2(&mut body, wants)?,
            ResponseVersion::V0 => fetch_client::write_fetch_request_v0(&mut body, wants)?,
        }
        let response = self.post(body)?;
        let reader = response.into_body().into_reader();
        Ok(Box::new(PackStream::new(reader, self.version)))
    }
}

/// Where `nimbus repo export` writes: a file, or standard output for `-`.
pub fn export_target(repo_name: &str, output: Option<&Path>) -> PathBuf {
    output
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from(format!("{repo_name}.bundle")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_split_from_urls() {
        let split = split_url("https://alice:s%40cret@example.com/a/b.git");
        assert_eq!(split.shown, "https://example.com/a/b.git");
        assert_eq!(split.user.as_deref(), Some("alice"));
        assert_eq!(split.password.as_deref(), Some("s@cret"));
        let plain = split_url("http://127.0.0.1:8080/x.git");
        assert_eq!(plain.shown, "http://127.0.0.1:8080/x.git");
        assert!(plain.user.is_none() && plain.password.is_none());
        assert_eq!(
            host_of("https://u:p@example.com:8443/x"),
            "example.com:8443"
        );
    }
}
