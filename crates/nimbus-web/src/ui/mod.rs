//! The web interface: server-rendered HTML (maud) at the URLs people know
//! from GitHub and Gitea, working without JavaScript.
//!
//! - [`layout`]: the page frame, style and security headers;
//! - [`markdown`]: GitHub-flavoured Markdown, sanitised;
//! - [`repo`]: the dashboard and the repository pages (home, tree, blob,
//!   raw, commits, commit).
//! - [`settings`]: a repository's settings (visibility, default branch,
//!   deletion, collaborators, webhooks and their deliveries), for admins;
//! - [`tokens`]: the signed-in user's personal access tokens.
//!
//! Pages read repositories through `nimbus_git::browse` on a blocking
//! thread, and ask `AccessControl` (surface `Web`) whether the signed-in
//! user (the session cookie) or an anonymous visitor may read them.

pub mod blame;
pub mod editor;
pub mod highlight;
pub mod last_commits;
pub mod layout;
pub mod markdown;
pub mod repo;
pub mod settings;
pub mod tokens;

use crate::App;
use crate::error::WebError;
use crate::git_http::auth_failure;
use nimbus_auth::{Decision, RepoAction, Surface};
use nimbus_types::{Principal, RepoName, Repository};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use warp::reply::Response;

/// The repository `name` (if it exists) and whether `principal` may do
/// `action` on it through the web.
pub(crate) async fn authorize(
    app: &App,
    name: &str,
    principal: &Principal,
    action: RepoAction,
) -> Result<(Decision, Option<Repository>), Response> {
    let repo = match RepoName::new(name) {
        Ok(valid) => app
            .meta
            .repository(&valid)
            .await
            .map_err(|e| WebError::internal(&e).into_response())?,
        Err(_) => None,
    };
    let decision = app
        .access
        .authorize_repo(principal, repo.as_ref(), action, Surface::Web)
        .await
        .map_err(|e| auth_failure(e).into_response())?;
    Ok((decision, repo))
}

/// Characters escaped in one URL path segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// Characters escaped in a path of several segments (`/` kept).
const PATH: &AsciiSet = &SEGMENT.remove(b'/');

/// `text` as one path segment.
pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// `text` as a path, its `/` kept.
pub fn path(text: &str) -> String {
    utf8_percent_encode(text, PATH).to_string()
}

/// A path inside a repository as git stores it: bytes, which need not be
/// UTF-8. Shown lossily; put in URLs byte for byte, so every file stays
/// reachable whatever its name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoPath(Vec<u8>);

impl RepoPath {
    /// The non-empty `segments` (percent-encoded URL path segments) joined
    /// with `/`.
    pub fn from_url_segments(segments: &[&str]) -> Self {
        let mut path = Vec::new();
        for segment in segments.iter().filter(|segment| !segment.is_empty()) {
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend(percent_encoding::percent_decode_str(segment));
        }
        RepoPath(path)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the path is UTF-8 (the editor's forms need it to be).
    pub fn is_utf8(&self) -> bool {
        std::str::from_utf8(&self.0).is_ok()
    }

    /// The path for a URL, `/` kept, other bytes escaped.
    pub fn url(&self) -> String {
        percent_encoding::percent_encode(&self.0, PATH).to_string()
    }

    /// Each directory level: the path up to it and its own name.
    pub fn ancestors(&self) -> Vec<(RepoPath, String)> {
        let mut levels = Vec::new();
        for (end, _) in self.0.iter().enumerate().filter(|(_, b)| **b == b'/') {
            levels.push(end);
        }
        levels.push(self.0.len());
        let mut start = 0;
        let mut out = Vec::new();
        for end in levels {
            let name = &self.0[start..end];
            if !name.is_empty() {
                out.push((
                    RepoPath(self.0[..end].to_vec()),
                    String::from_utf8_lossy(name).into_owned(),
                ));
            }
            start = end + 1;
        }
        out
    }
}

impl std::fmt::Display for RepoPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// `bytes` (a file name as stored) as one path segment.
pub fn segment_bytes(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, SEGMENT).to_string()
}

/// Percent-decode one segment of a request path; `None` if it is not UTF-8.
pub fn decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_through_urls() {
        for name in [
            "plain.txt",
            "with space.md",
            "q?#%.rs",
            "ünïcödé",
            "a<b>.html",
        ] {
            let encoded = segment(name);
            assert!(!encoded.contains(['/', ' ', '?', '#', '<']), "{encoded}");
            assert_eq!(decode(&encoded).as_deref(), Some(name));
        }
        assert_eq!(path("docs/a b/c.md"), "docs/a%20b/c.md");
        assert_eq!(decode("%ff"), None);
    }

    #[test]
    fn repository_paths_keep_bytes_that_are_not_utf8() {
        let path = RepoPath::from_url_segments(&["docs", "", "caf%E9%20x.txt"]);
        assert_eq!(path.as_bytes(), b"docs/caf\xe9 x.txt");
        assert_eq!(path.url(), "docs/caf%E9%20x.txt");
        assert_eq!(path.to_string(), "docs/caf\u{fffd} x.txt");
        let levels: Vec<(Vec<u8>, String)> = path
            .ancestors()
            .into_iter()
            .map(|(at, name)| (at.as_bytes().to_vec(), name))
            .collect();
        assert_eq!(
            levels,
            [
                (b"docs".to_vec(), "docs".to_owned()),
                (
                    b"docs/caf\xe9 x.txt".to_vec(),
                    "caf\u{fffd} x.txt".to_owned()
                ),
            ]
        );
        assert_eq!(segment_bytes(b"a/b\xff"), "a%2Fb%FF");
        assert!(RepoPath::from_url_segments(&[]).is_empty());
    }
}
