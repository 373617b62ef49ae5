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
}
