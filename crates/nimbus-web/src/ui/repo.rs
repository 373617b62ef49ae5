//! The dashboard and the repository pages:
//! `/`, `/{repo}`, `/{repo}/tree/{rev}/{path}`, `/{repo}/blob/{rev}/{path}`,
//! `/{repo}/raw/{rev}/{path}`, `/{repo}/commits/{rev}[/{path}]` and
//! `/{repo}/commit/{id}`.
//!
//! A revision in a URL may contain slashes (`feature/x`); the longest run of
//! segments naming a branch or tag wins, as on GitHub.

use super::highlight;
use super::layout::{Viewer, error_page, page, size, when};
use super::markdown::{self, DocumentBase};
use super::{RepoPath, decode, path as encode_path, segment, segment_bytes};
use crate::error::WebError;
use crate::git_http::auth_failure;
use crate::{App, RequestParts};
use maud::{Markup, PreEscaped, html};
use nimbus_auth::{Decision, RepoAction, Surface};
use nimbus_git::browse::{
    self, CommitDetail, DiffLimits, DiffLine, EntryKind, FileDiff, LineKind, PathTarget, Resolved,
    RevKind, TreeEntry,
};
use nimbus_git::last_commit::LastCommits;
use nimbus_git::objects::Objects;
use nimbus_types::{Principal, Repository, Visibility};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::{Reply, Response};

/// Commits per page of history.
const LOG_PAGE: usize = 50;
/// The most of a file shown on its page; the rest is behind "raw".
const MAX_SHOWN_BYTES: usize = 512 << 10;
/// The most of a README rendered on the repository page.
const MAX_README_BYTES: usize = 512 << 10;
/// The most bytes `raw` serves.
const MAX_RAW_BYTES: usize = 64 << 20;
const DIFF_LIMITS: DiffLimits = DiffLimits {
    max_files: 300,
    max_bytes_per_file: 512 << 10,
    max_lines_total: 20_000,
};

/// What a page is about, after the access check.
pub(super) struct Context {
    pub(super) viewer: Viewer,
    pub(super) repo: Repository,
    /// Whether the visitor may commit here (the editor's links).
    pub(super) can_write: bool,
    /// Whether the visitor administers it (the settings link).
    pub(super) can_admin: bool,
}

fn viewer(parts: &RequestParts) -> (Principal, Viewer) {
    match &parts.session {
        Some(session) => (
            session.principal(),
            Viewer {
                name: Some(session.user.name.clone()),
            },
        ),
        None => (Principal::Anonymous, Viewer::default()),
    }
}

fn redirect(location: &str) -> Response {
    let mut response = warp::reply::with_status("", StatusCode::SEE_OTHER).into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The repository `name` if the visitor may read it; else the page to show
/// (anonymous visitors are sent to sign in, as a private repository is
/// never revealed).
async fn open(app: &App, name: &str, parts: &RequestParts) -> Result<Context, Response> {
    let (principal, viewer) = viewer(parts);
    let (decision, repo) = super::authorize(app, name, &principal, RepoAction::Read).await?;
    match (decision, repo) {
        (Decision::Allow, Some(repo)) => {
            let can_write = match principal {
                Principal::Anonymous => false,
                _ => {
                    app.access
                        .authorize_repo(&principal, Some(&repo), RepoAction::Write, Surface::Web)
                        .await
                        .map_err(|e| auth_failure(e).into_response())?
                        == Decision::Allow
                }
            };
            let can_admin = can_write
                && app
                    .access
                    .authorize_repo(&principal, Some(&repo), RepoAction::Admin, Surface::Web)
                    .await
                    .map_err(|e| auth_failure(e).into_response())?
                    == Decision::Allow;
            Ok(Context {
                viewer,
                repo,
                can_write,
                can_admin,
            })
        }
        (Decision::Unauthenticated, _) => Err(redirect(&format!(
            "/login?next={}",
            segment(&parts.path).replace("%2F", "/")
        ))),
        _ => Err(error_page(
            StatusCode::NOT_FOUND,
            &viewer,
            &format!("Repository '{name}' was not found."),
        )),
    }
}

/// [`open`] for an expensive page: also counted against an anonymous
/// visitor's allowance.
pub(super) async fn open_expensive(
    app: &App,
    name: &str,
    parts: &RequestParts,
) -> Result<Context, Response> {
    let context = open(app, name, parts).await?;
    match expensive(app, &context, parts) {
        Some(response) => Err(response),
        None => Ok(context),
    }
}

/// Count an expensive page for an anonymous visitor; the page to show
/// instead once its address used up the minute's allowance.
fn expensive(app: &App, context: &Context, parts: &RequestParts) -> Option<Response> {
    if context.viewer.name.is_some() {
        return None;
    }
    let key = format!("page:{}", parts.client.as_deref()?);
    let now = std::time::Instant::now();
    if let Some(wait) = app.page_limits.blocked(&key, now) {
        let seconds = wait.as_secs().max(1);
        let mut response = error_page(
            StatusCode::TOO_MANY_REQUESTS,
            &context.viewer,
            &format!(
                "Too many expensive pages from your address; try again in {seconds} seconds, or sign in."
            ),
        );
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Some(response);
    }
    app.page_limits.record_failure(&key, now);
    None
}

fn internal(viewer: &Viewer, err: &dyn std::error::Error) -> Response {
    tracing::error!(error = %err, "a page failed");
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        viewer,
        "Something went wrong on the server; it was logged.",
    )
}

/// Run `work` on the repository's objects on a blocking thread.
pub(super) async fn with_objects<T: Send + 'static>(
    app: &App,
    context: &Context,
    work: impl FnOnce(&[nimbus_types::Ref], &mut Objects) -> Result<T, browse::BrowseError>
    + Send
    + 'static,
) -> Result<T, Response> {
    let snapshot = app
        .git
        .snapshot(&context.repo)
        .await
        .map_err(|e| internal(&context.viewer, &e))?;
    let viewer = context.viewer.clone();
    tokio::task::spawn_blocking(move || {
        let mut objects = Objects::new(snapshot.db.handle());
        work(&snapshot.refs, &mut objects)
    })
    .await
    .map_err(|e| internal(&viewer, &e))?
    .map_err(|e| internal(&context.viewer, &e))
}

pub(super) fn repo_header(context: &Context, current: &str, rev: &str) -> Markup {
    let name = context.repo.name.as_str();
    let rev = encode_path(rev);
    html! {
        h1 {
            a href={ "/" (name) } { (name) } " "
            span.badge { (context.repo.visibility) }
        }
        nav.tabs {
            a.current[current == "code"] href={ "/" (name) "/tree/" (rev) } { "Code" }
            a.current[current == "commits"] href={ "/" (name) "/commits/" (rev) } { "Commits" }
            a.current[current == "branches"] href={ "/" (name) "/branches" } { "Branches" }
            a.current[current == "tags"] href={ "/" (name) "/tags" } { "Tags" }
            @if context.can_admin { a #settings-link href={ "/" (name) "/settings" } { "Settings" } }
        }
    }
}

pub(super) fn breadcrumbs(repo: &str, rev: &str, path: &RepoPath) -> Markup {
    let rev = encode_path(rev);
    let levels = path.ancestors();
    html! {
        div.crumbs {
            a href={ "/" (repo) "/tree/" (rev) } { (repo) }
            @for (index, (at, name)) in levels.iter().enumerate() {
                " / "
                @if index + 1 == levels.len() {
                    strong { (name) }
                } @else {
                    a href={ "/" (repo) "/tree/" (rev) "/" (at.url()) } { (name) }
                }
            }
        }
    }
}

/// `GET /`: the repositories the visitor may see, most recently active first.
pub async fn dashboard(app: &App, parts: RequestParts) -> Result<Response, WebError> {
    let (principal, viewer) = viewer(&parts);
    let mut repos = Vec::new();
    for repo in app
        .meta
        .list_repositories()
        .await
        .map_err(|e| WebError::internal(&e))?
    {
        if app
            .access
            .lists_repo(&principal, &repo)
            .await
            .map_err(auth_failure)?
        {
            repos.push(repo);
        }
    }
    repos.sort_by_key(|repo| std::cmp::Reverse(repo.updated_at));
    Ok(page(
        StatusCode::OK,
        "Repositories",
        &viewer,
        html! {
            h1 { "Repositories" }
            @if repos.is_empty() {
                p.muted { "No repositories yet." @if viewer.name.is_none() { " " a href="/login" { "Sign in" } " to see private ones." } }
            } @else {
                div.box { table.list #repos {
                    @for repo in &repos {
                        tr {
                            td {
                                a href={ "/" (repo.name) } { strong { (repo.name) } } " "
                                @if repo.visibility != Visibility::Public { span.badge { (repo.visibility) } }
                            }
                            td.when { "updated " (when(repo.updated_at)) }
                        }
                    }
                } }
            }
        },
    ))
}

/// `name` (`main`, `feature/x`, an id) as a revision, all of it.
fn resolve_whole(
    refs: &[nimbus_types::Ref],
    objects: &mut Objects,
    name: &str,
) -> Result<Option<Resolved>, browse::BrowseError> {
    let segments: Vec<&str> = name.split('/').collect();
    Ok(browse::resolve(refs, objects, &segments)?
        .filter(|resolved| resolved.consumed == segments.len()))
}

/// The first segments of `rest` (still percent-encoded, empty ones
/// ignored) as a revision, the others as a path, byte for byte.
pub(super) fn split_rev(
    refs: &[nimbus_types::Ref],
    objects: &mut Objects,
    rest: &[String],
) -> Result<Option<(Resolved, RepoPath)>, browse::BrowseError> {
    let rest: Vec<&str> = rest
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    // Revisions are UTF-8 (ref names, ids); a segment that is not cannot
    // be part of one, and its lossy form matches nothing.
    let decoded: Vec<String> = rest
        .iter()
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    Ok(browse::resolve(refs, objects, &segments)?.map(|resolved| {
        let path = RepoPath::from_url_segments(&rest[resolved.consumed.min(rest.len())..]);
        (resolved, path)
    }))
}

/// `rest` owned, or the default branch when it names no revision (`/tree`,
/// `/commits`).
fn or_default_branch(context: &Context, rest: &[&str]) -> Vec<String> {
    if rest.iter().all(|s| s.is_empty()) {
        vec![segment(&context.repo.default_branch)]
    } else {
        owned(rest)
    }
}

/// The request path's segments after the page name, owned for a blocking
/// task.
pub(super) fn owned(rest: &[&str]) -> Vec<String> {
    rest.iter().map(|s| (*s).to_owned()).collect()
}

fn decoded(rest: &[&str]) -> Option<Vec<String>> {
    rest.iter()
        .filter(|s| !s.is_empty())
        .map(|s| decode(s))
        .collect()
}

fn readme_name(entries: &[TreeEntry]) -> Option<&TreeEntry> {
    const NAMES: [&str; 5] = [
        "README.md",
        "readme.md",
        "README.markdown",
        "README",
        "README.txt",
    ];
    NAMES.iter().find_map(|wanted| {
        entries
            .iter()
            .find(|entry| entry.name == *wanted && entry.kind == EntryKind::File)
    })
}

fn entry_rows(
    repo: &str,
    rev: &str,
    dir: &RepoPath,
    entries: &[TreeEntry],
    last: Option<&LastCommits>,
) -> Markup {
    let rev = encode_path(rev);
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{}/", dir.url())
    };
    html! {
        table.list #files {
            @for entry in entries {
                tr {
                    td {
                        @match entry.kind {
                            EntryKind::Dir => { a.dir href={ "/" (repo) "/tree/" (rev) "/" (prefix) (segment_bytes(&entry.name_bytes)) } { (entry.name) "/" } }
                            EntryKind::Submodule => { (entry.name) " " span.muted { "@ " (entry.id.to_hex_with_len(7)) } }
                            _ => { a href={ "/" (repo) "/blob/" (rev) "/" (prefix) (segment_bytes(&entry.name_bytes)) } { (entry.name) } }
                        }
                    }
                    @if let Some(last) = last {
                        @match last.entries.get(&entry.name_bytes).and_then(|id| last.commits.get(id)) {
                            Some(commit) => {
                                td.last { a.muted href={ "/" (repo) "/commit/" (commit.id) } title=(commit.summary) { (commit.summary) } }
                                td.when { (when(commit.committer.time)) }
                            }
                            None => { td.last {} td.when {} }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /{repo}`: the default branch's files and README.
pub async fn home(app: &App, name: &str, parts: RequestParts) -> Result<Response, WebError> {
    let context = match open(app, name, &parts).await {
        Ok(context) => context,
        Err(response) => return Ok(response),
    };
    let branch = context.repo.default_branch.clone();
    let found = with_objects(app, &context, move |refs, objects| {
        let Some(resolved) = browse::resolve(refs, objects, &[branch.as_str()])? else {
            return Ok(None);
        };
        let PathTarget::Tree {
            entries, truncated, ..
        } = browse::lookup_path(objects, resolved.commit, b"")?
        else {
            return Ok(None);
        };
        let listing = Listing { entries, truncated };
        let readme = match readme_name(&listing.entries) {
            Some(entry) => {
                let blob = browse::read_blob(objects, entry.id, MAX_README_BYTES)?;
                Some((entry.name.clone(), blob))
            }
            None => None,
        };
        let head = browse::commit_detail(objects, resolved.commit)?;
        Ok(Some((resolved, listing, readme, head)))
    })
    .await;
    let found = match found {
        Ok(found) => found,
        Err(response) => return Ok(response),
    };
    let last = match &found {
        Some((resolved, ..)) => {
            app.last_commits
                .lookup(&app.git, &context.repo, resolved.commit, b"")
                .await
        }
        None => None,
    };
    let repo = context.repo.name.as_str();
    let clone_url = format!("{}/{}.git", crate::api::base_url(app, &parts), repo);
    let body = match found {
        None => html! {
            (repo_header(&context, "code", &context.repo.default_branch))
            div.box {
                div.head { "This repository is empty." }
                div.markdown {
                    p { "Push an existing repository:" }
                    pre { code { "git remote add origin " (clone_url) "\ngit push -u origin " (context.repo.default_branch) } }
                }
            }
        },
        Some((resolved, listing, readme, head)) => html! {
            (repo_header(&context, "code", &resolved.label))
            p {
                "Clone: " code.clone #clone-url { (clone_url) }
                " · Download "
                a #archive-tar href={ "/" (repo) "/archive/" (encode_path(&resolved.label)) ".tar.gz" } { ".tar.gz" }
                " "
                a #archive-zip href={ "/" (repo) "/archive/" (encode_path(&resolved.label)) ".zip" } { ".zip" }
            }
            div.box {
                div.head {
                    span.muted { (resolved.label) }
                    a href={ "/" (repo) "/commit/" (head.id) } { (head.summary()) }
                    span.actions.muted { (head.author.name) " · " (when(head.committer.time)) }
                }
                (listing_box(repo, &resolved.label, &RepoPath::default(), &listing, last.as_deref()))
            }
            @if let Some((readme_name, blob)) = readme {
                div.box #readme {
                    div.head { strong { (readme_name) } }
                    (readme_html(repo, &resolved.label, &RepoPath::default(), &readme_name, &blob))
                }
            }
        },
    };
    Ok(page(StatusCode::OK, repo, &context.viewer, body))
}

/// A directory's entries, at most `browse::MAX_TREE_ENTRIES`.
struct Listing {
    entries: Vec<TreeEntry>,
    truncated: bool,
}

fn listing_box(
    repo: &str,
    rev: &str,
    dir: &RepoPath,
    listing: &Listing,
    last: Option<&LastCommits>,
) -> Markup {
    html! {
        (entry_rows(repo, rev, dir, &listing.entries, last))
        @if listing.truncated { p.muted { "Only the first " (listing.entries.len()) " entries are shown." } }
    }
}

fn readme_html(repo: &str, rev: &str, dir: &RepoPath, name: &str, blob: &browse::Blob) -> Markup {
    let text = String::from_utf8_lossy(&blob.data);
    if name.ends_with(".md") || name.ends_with(".markdown") {
        let repo_path = format!("/{repo}");
        let rev = encode_path(rev);
        let dir = dir.url();
        let base = DocumentBase {
            repo_path: &repo_path,
            rev: &rev,
            dir: &dir,
        };
        html! { div.markdown { (PreEscaped(markdown::render(&text, Some(&base)))) } }
    } else {
        html! { div.markdown { pre { (text) } } }
    }
}

/// `GET /{repo}/tree/{rev}/{path}`.
pub async fn tree(
    app: &App,
    name: &str,
    rest: &[&str],
    parts: RequestParts,
) -> Result<Response, WebError> {
    let context = match open(app, name, &parts).await {
        Ok(context) => context,
        Err(response) => return Ok(response),
    };
    let rest = or_default_branch(&context, rest);
    let found = with_objects(app, &context, move |refs, objects| {
        let Some((resolved, path)) = split_rev(refs, objects, &rest)? else {
            return Ok(None);
        };
        let target = browse::lookup_path(objects, resolved.commit, path.as_bytes())?;
        let readme = match &target {
            PathTarget::Tree { entries, .. } => match readme_name(entries) {
                Some(entry) => Some((
                    entry.name.clone(),
                    browse::read_blob(objects, entry.id, MAX_README_BYTES)?,
                )),
                None => None,
            },
            _ => None,
        };
        Ok(Some((resolved, path, target, readme)))
    })
    .await;
    let repo = context.repo.name.as_str();
    match found {
        Err(response) => Ok(response),
        Ok(Some((
            resolved,
            path,
            PathTarget::Tree {
                entries, truncated, ..
            },
            readme,
        ))) => {
            let listing = Listing { entries, truncated };
            let last = app
                .last_commits
                .lookup(&app.git, &context.repo, resolved.commit, path.as_bytes())
                .await;
            let title = if path.is_empty() {
                format!("{repo} at {}", resolved.label)
            } else {
                format!("{path} at {} · {repo}", resolved.label)
            };
            let body = html! {
                (repo_header(&context, "code", &resolved.label))
                (breadcrumbs(repo, &resolved.label, &path))
                @if context.can_write && resolved.kind == RevKind::Branch {
                    p { a #new-file href={ "/" (repo) "/new/" (encode_path(&resolved.label)) @if !path.is_empty() { "/" (path.url()) } } { "Add a file" } }
                }
                div.box { (listing_box(repo, &resolved.label, &path, &listing, last.as_deref())) }
                @if let Some((readme_name, blob)) = readme {
                    div.box #readme {
                        div.head { strong { (readme_name) } }
                        (readme_html(repo, &resolved.label, &path, &readme_name, &blob))
                    }
                }
            };
            Ok(page(StatusCode::OK, &title, &context.viewer, body))
        }
        Ok(Some((resolved, path, PathTarget::Blob { .. } | PathTarget::Symlink { .. }, _))) => {
            Ok(redirect(&format!(
                "/{repo}/blob/{}/{}",
                encode_path(&resolved.label),
                path.url()
            )))
        }
        Ok(_) => Ok(error_page(
            StatusCode::NOT_FOUND,
            &context.viewer,
            "No such revision or directory.",
        )),
    }
}

/// The file at `rest` (a revision, then a path), at most `max_bytes` of it,
/// once the visitor may read the repository; else the page to show.
async fn file_at(
    app: &App,
    name: &str,
    rest: &[&str],
    parts: &RequestParts,
    max_bytes: usize,
) -> Result<(Context, Resolved, RepoPath, browse::Blob), Response> {
    let context = open(app, name, parts).await?;
    let not_found = |context: &Context| {
        error_page(
            StatusCode::NOT_FOUND,
            &context.viewer,
            "No such revision or file.",
        )
    };
    let rest = owned(rest);
    let found = with_objects(app, &context, move |refs, objects| {
        let Some((resolved, path)) = split_rev(refs, objects, &rest)? else {
            return Ok(None);
        };
        match browse::lookup_path(objects, resolved.commit, path.as_bytes())? {
            PathTarget::Blob { id, .. } | PathTarget::Symlink { id, .. } => {
                let blob = browse::read_blob(objects, id, max_bytes)?;
                Ok(Some((resolved, path, blob)))
            }
            _ => Ok(None),
        }
    })
    .await?;
    match found {
        Some((resolved, path, blob)) => Ok((context, resolved, path, blob)),
        None => Err(not_found(&context)),
    }
}

/// `GET /{repo}/blob/{rev}/{path}`: a file with line numbers.
pub async fn blob(
    app: &App,
    name: &str,
    rest: &[&str],
    parts: RequestParts,
) -> Result<Response, WebError> {
    let (context, resolved, path, blob) =
        match file_at(app, name, rest, &parts, MAX_SHOWN_BYTES).await {
            Ok(found) => found,
            Err(response) => return Ok(response),
        };
    let repo = context.repo.name.as_str();
    let raw = format!(
        "/{repo}/raw/{}/{}",
        encode_path(&resolved.label),
        path.url()
    );
    let text = String::from_utf8_lossy(&blob.data).into_owned();
    let (text, highlighted) = if blob.binary || text.len() > highlight::MAX_BYTES {
        (text, None)
    } else {
        let file = path.to_string();
        tokio::task::spawn_blocking(move || {
            let highlighted = highlight::highlight(&file, &text);
            (text, highlighted)
        })
        .await
        .map_err(|e| WebError::internal(&e))?
    };
    let body = html! {
        (repo_header(&context, "code", &resolved.label))
        (breadcrumbs(repo, &resolved.label, &path))
        div.box {
            div.head {
                span.muted { (size(blob.size)) }
                @if !blob.binary { span.muted { (text.lines().count()) " lines" } }
                span.actions {
                    a #raw href=(raw) { "Raw" }
                    a href={ (raw) "?download=1" } { "Download" }
                    @if !blob.binary { a #blame href={ "/" (repo) "/blame/" (encode_path(&resolved.label)) "/" (path.url()) } { "Blame" } }
                    a href={ "/" (repo) "/commits/" (encode_path(&resolved.label)) "/" (path.url()) } { "History" }
                    @if context.can_write && resolved.kind == RevKind::Branch && path.is_utf8() {
                        @if !blob.binary { a #edit href={ "/" (repo) "/edit/" (encode_path(&resolved.label)) "/" (path.url()) } { "Edit" } }
                        a #delete href={ "/" (repo) "/delete/" (encode_path(&resolved.label)) "/" (path.url()) } { "Delete" }
                    }
                }
            }
            @if blob.binary {
                p.markdown { "Binary file not shown. " a href=(raw) { "View raw" } }
            } @else {
                @if blob.truncated {
                    p.markdown.muted #truncated { "This file is large; only its first " (size(blob.data.len() as u64)) " are shown. " a href=(raw) { "View the whole file" } }
                }
                div.scroll { table.code #code .highlighted[highlighted.is_some()] {
                    @for (index, line) in text.lines().enumerate() {
                        tr id={ "L" (index + 1) } {
                            td.num { a href={ "#L" (index + 1) } { (index + 1) } }
                            @match highlighted.as_ref().and_then(|lines| lines.get(index)) {
                                Some(html) => td.text { (PreEscaped(html)) },
                                None => td.text { (line) },
                            }
                        }
                    }
                } }
            }
        }
    };
    Ok(page(
        StatusCode::OK,
        &format!("{path} at {} · {repo}", resolved.label),
        &context.viewer,
        body,
    ))
}

/// `GET /{repo}/raw/{rev}/{path}`: the file's bytes, never run: text as
/// plain text, a few image types as images, everything else as a download,
/// under a sandboxing Content-Security-Policy.
pub async fn raw(
    app: &App,
    name: &str,
    rest: &[&str],
    parts: RequestParts,
) -> Result<Response, WebError> {
    let (context, _, path, blob) = match file_at(app, name, rest, &parts, MAX_RAW_BYTES).await {
        Ok(found) => found,
        Err(response) => return Ok(response),
    };
    if blob.truncated {
        return Ok(error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            &context.viewer,
            &format!(
                "This file is {}; files over {} are not served here. Clone the repository to get it.",
                size(blob.size),
                size(MAX_RAW_BYTES as u64)
            ),
        ));
    }
    let path = path.to_string();
    let kind = content_type(&path, blob.binary);
    let download = parts
        .query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "download=1"));
    let file_name = path
        .rsplit('/')
        .next()
        .unwrap_or("file")
        .replace(['"', '\\'], "_");
    let mut response = warp::reply::with_status(blob.data, StatusCode::OK).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'",
        ),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    let disposition = if download || kind == "application/octet-stream" {
        "attachment"
    } else {
        "inline"
    };
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{disposition}; filename=\"{}\"",
        segment(&file_name)
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

fn content_type(path: &str, binary: bool) -> &'static str {
    let lower = path.to_ascii_lowercase();
    let ext = lower.rsplit('.').next().unwrap_or("");
    match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        // SVG and HTML can carry scripts: shown as text.
        _ if binary => "application/octet-stream",
        _ => "text/plain; charset=utf-8",
    }
}

fn person(detail: &CommitDetail) -> Markup {
    html! {
        strong { (detail.author.name) } " committed " (when(detail.committer.time))
    }
}

/// `GET /{repo}/commits/{rev}[/{path}]?page=N`.
pub async fn commits(
    app: &App,
    name: &str,
    rest: &[&str],
    parts: RequestParts,
) -> Result<Response, WebError> {
    let context = match open_expensive(app, name, &parts).await {
        Ok(context) => context,
        Err(response) => return Ok(response),
    };
    let rest = or_default_branch(&context, rest);
    let page_number: usize = parts
        .query
        .as_deref()
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("page=")))
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=100_000).contains(n))
        .unwrap_or(1);
    let found = with_objects(app, &context, move |refs, objects| {
        let Some((resolved, path)) = split_rev(refs, objects, &rest)? else {
            return Ok(None);
        };
        let filter = (!path.is_empty()).then_some(path.as_bytes());
        let log = browse::log(
            objects,
            resolved.commit,
            filter,
            (page_number - 1) * LOG_PAGE,
            LOG_PAGE,
        )?;
        Ok(Some((resolved, path, log)))
    })
    .await;
    let (resolved, path, log) = match found {
        Err(response) => return Ok(response),
        Ok(None) => {
            return Ok(error_page(
                StatusCode::NOT_FOUND,
                &context.viewer,
                "No such revision.",
            ));
        }
        Ok(Some(found)) => found,
    };
    let repo = context.repo.name.as_str();
    let here = format!(
        "/{repo}/commits/{}{}",
        encode_path(&resolved.label),
        if path.is_empty() {
            String::new()
        } else {
            format!("/{}", path.url())
        }
    );
    let body = html! {
        (repo_header(&context, "commits", &resolved.label))
        @if !path.is_empty() { p { "History of " (breadcrumbs(repo, &resolved.label, &path)) } }
        div.box { table.list #commits {
            @for commit in &log.commits {
                tr {
                    td {
                        a href={ "/" (repo) "/commit/" (commit.id) } { (commit.summary()) }
                        br;
                        span.muted { (person(commit)) }
                    }
                    td.when { code { a href={ "/" (repo) "/tree/" (commit.id) } { (commit.id.to_hex_with_len(7)) } } }
                }
            }
        } }
        @if log.commits.is_empty() { p.muted { "No commits." } }
        div.pager {
            @if page_number > 1 { a rel="prev" href={ (here) "?page=" (page_number - 1) } { "Newer" } }
            @if log.more { a rel="next" href={ (here) "?page=" (page_number + 1) } { "Older" } }
        }
    };
    Ok(page(
        StatusCode::OK,
        &format!("Commits of {} · {repo}", resolved.label),
        &context.viewer,
        body,
    ))
}

/// Whether the visitor asked for the side-by-side diff (`?diff=split`).
fn split_diff(parts: &RequestParts) -> bool {
    parts
        .query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "diff=split"))
}

/// Links between the unified and the side-by-side diff.
fn diff_views(split: bool) -> Markup {
    html! {
        p #diff-view {
            @if split { a href="?diff=unified" { "Unified" } " · " strong { "Split" } }
            @else { strong { "Unified" } " · " a href="?diff=split" { "Split" } }
        }
    }
}

/// A hunk's lines as rows of a side-by-side diff: context on both sides,
/// and each run of removed lines beside the run of added lines that
/// follows it.
fn split_rows(lines: &[DiffLine]) -> Vec<(Option<&DiffLine>, Option<&DiffLine>)> {
    let mut rows = Vec::with_capacity(lines.len());
    let mut index = 0;
    while index < lines.len() {
        if lines[index].kind == LineKind::Context {
            rows.push((Some(&lines[index]), Some(&lines[index])));
            index += 1;
            continue;
        }
        let removed_end = index
            + lines[index..]
                .iter()
                .take_while(|line| line.kind == LineKind::Removed)
                .count();
        let added_end = removed_end
            + lines[removed_end..]
                .iter()
                .take_while(|line| line.kind == LineKind::Added)
                .count();
        let removed = &lines[index..removed_end];
        let added = &lines[removed_end..added_end];
        for row in 0..removed.len().max(added.len()) {
            rows.push((removed.get(row), added.get(row)));
        }
        index = added_end;
    }
    rows
}

fn diff_file(file: &FileDiff, split: bool) -> Markup {
    let path = file
        .new_path
        .as_deref()
        .or(file.old_path.as_deref())
        .unwrap_or("");
    let side = |line: Option<&DiffLine>, number: Option<u32>| {
        let class = match line.map(|line| line.kind) {
            Some(LineKind::Added) => "text add",
            Some(LineKind::Removed) => "text del",
            Some(LineKind::Context) => "text",
            None => "text empty",
        };
        html! {
            td.num { @if let Some(n) = number { (n) } }
            td class=(class) { @if let Some(line) = line { (line.text) } }
        }
    };
    html! {
        div.box.file {
            div.head {
                strong { (path) }
                span.muted { (format!("{:?}", file.status).to_lowercase()) }
                span.actions {
                    @if let (Some(added), Some(removed)) = (file.additions, file.deletions) {
                        span.stat-add { "+" (added) }
                        span.stat-del { "−" (removed) }
                    }
                }
            }
            @if file.binary {
                p.markdown.muted { "Binary file." }
            } @else if file.truncated {
                p.markdown.muted { "This diff is too large to show." }
            } @else if split {
                div.scroll { table.code.split {
                    @for hunk in &file.hunks {
                        tr.hunk { td.num {} td.text colspan="3" { (hunk.header()) } }
                        @for (old, new) in split_rows(&hunk.lines) {
                            tr {
                                (side(old, old.and_then(|line| line.old_no)))
                                (side(new, new.and_then(|line| line.new_no)))
                            }
                        }
                    }
                } }
            } @else {
                div.scroll { table.code {
                    @for hunk in &file.hunks {
                        tr.hunk { td.num {} td.num {} td.text { (hunk.header()) } }
                        @for line in &hunk.lines {
                            @let class = match line.kind { LineKind::Added => "add", LineKind::Removed => "del", LineKind::Context => "ctx" };
                            @let sign = match line.kind { LineKind::Added => "+", LineKind::Removed => "-", LineKind::Context => " " };
                            tr class=(class) {
                                td.num { @if let Some(n) = line.old_no { (n) } }
                                td.num { @if let Some(n) = line.new_no { (n) } }
                                td.text { (sign) (line.text) }
                            }
                        }
                    }
                } }
            }
        }
    }
}

/// `GET /{repo}/commit/{id}`: message, parents and the diff to the first
/// parent.
pub async fn commit(
    app: &App,
    name: &str,
    id: &str,
    parts: RequestParts,
) -> Result<Response, WebError> {
    let context = match open_expensive(app, name, &parts).await {
        Ok(context) => context,
        Err(response) => return Ok(response),
    };
    let split = split_diff(&parts);
    let wanted = id.to_owned();
    let found = with_objects(app, &context, move |refs, objects| {
        let Some(resolved) = browse::resolve(refs, objects, &[wanted.as_str()])? else {
            return Ok(None);
        };
        let detail = browse::commit_detail(objects, resolved.commit)?;
        let old_tree = match detail.parents.first() {
            Some(parent) => Some(browse::commit_detail(objects, *parent)?.tree),
            None => None,
        };
        let diff = browse::diff(objects, old_tree, detail.tree, DIFF_LIMITS)?;
        Ok(Some((detail, diff)))
    })
    .await;
    let (detail, diff) = match found {
        Err(response) => return Ok(response),
        Ok(None) => {
            return Ok(error_page(
                StatusCode::NOT_FOUND,
                &context.viewer,
                "No such commit.",
            ));
        }
        Ok(Some(found)) => found,
    };
    let repo = context.repo.name.as_str();
    let hex = detail.id.to_string();
    let files = &diff.files;
    let additions: u64 = files
        .iter()
        .filter_map(|f| f.additions)
        .map(u64::from)
        .sum();
    let deletions: u64 = files
        .iter()
        .filter_map(|f| f.deletions)
        .map(u64::from)
        .sum();
    let (summary, body_text) = match detail.message.split_once('\n') {
        Some((summary, rest)) => (summary.to_owned(), rest.trim().to_owned()),
        None => (detail.message.clone(), String::new()),
    };
    let body = html! {
        (repo_header(&context, "commits", &hex))
        div.box {
            div.head { strong #summary { (summary) } }
            @if !body_text.is_empty() { div.markdown { pre { (body_text) } } }
            div.markdown {
                p.muted {
                    (person(&detail)) br;
                    "commit " code #commit-id { (hex) }
                    @for parent in &detail.parents {
                        br; "parent " a href={ "/" (repo) "/commit/" (parent) } { code { (parent.to_hex_with_len(7)) } }
                    }
                    br; a href={ "/" (repo) "/tree/" (hex) } { "Browse files" }
                }
            }
        }
        p #stats { (files.len()) @if files.len() == 1 { " changed file with " } @else { " changed files with " } span.stat-add { (additions) " additions" } " and " span.stat-del { (deletions) " deletions" } }
        (diff_views(split))
        @for file in files { (diff_file(file, split)) }
        @if diff.truncated { p.muted { "More files changed than are shown." } }
    };
    Ok(page(
        StatusCode::OK,
        &format!("{summary} · {repo}@{}", detail.id.to_hex_with_len(7)),
        &context.viewer,
        body,
    ))
}

/// The most branches or tags listed on one page.
const MAX_LISTED_REFS: usize = 500;

/// `GET /{repo}/branches` and `/{repo}/tags`: newest commit first.
pub async fn refs(
    app: &App,
    name: &str,
    tags: bool,
    parts: RequestParts,
) -> Result<Response, WebError> {
    let context = match open(app, name, &parts).await {
        Ok(context) => context,
        Err(response) => return Ok(response),
    };
    let prefix = if tags { "refs/tags/" } else { "refs/heads/" };
    let listed = with_objects(app, &context, move |refs, objects| {
        let mut listed = Vec::new();
        let mut total = 0usize;
        for reference in refs {
            let full = reference.name.to_string();
            let Some(short) = full.strip_prefix(prefix) else {
                continue;
            };
            total += 1;
            if listed.len() == MAX_LISTED_REFS {
                continue;
            }
            let target = reference.peeled.unwrap_or(reference.target);
            // Tags of trees or blobs have no commit to show.
            let detail = match objects.commit(&target)? {
                Some(_) => Some(browse::commit_detail(objects, target)?),
                None => None,
            };
            listed.push((short.to_owned(), detail));
        }
        listed.sort_by_key(|(_, detail)| {
            std::cmp::Reverse(detail.as_ref().map_or(i64::MIN, |d| d.committer.time))
        });
        Ok((listed, total))
    })
    .await;
    let (listed, total) = match listed {
        Ok(listed) => listed,
        Err(response) => return Ok(response),
    };
    let repo = context.repo.name.as_str();
    let what = if tags { "Tags" } else { "Branches" };
    let default = &context.repo.default_branch;
    let body = html! {
        (repo_header(&context, if tags { "tags" } else { "branches" }, default))
        @if listed.is_empty() {
            p.muted { @if tags { "No tags." } @else { "No branches." } }
        } @else {
            div.box { table.list #refs {
                @for (short, detail) in &listed {
                    tr {
                        td {
                            a href={ "/" (repo) "/tree/" (encode_path(short)) } { strong { (short) } }
                            @if !tags && short == default { " " span.badge { "default" } }
                            @if let Some(detail) = detail {
                                br;
                                span.muted { (detail.summary()) }
                            }
                        }
                        td.when {
                            @if let Some(detail) = detail { (when(detail.committer.time)) }
                            @if !tags && short != default {
                                br;
                                a href={ "/" (repo) "/compare/" (encode_path(default)) "..." (encode_path(short)) } { "Compare" }
                            }
                        }
                    }
                }
            } }
            @if total > listed.len() { p.muted { "Only " (listed.len()) " of " (total) " are listed." } }
        }
    };
    Ok(page(
        StatusCode::OK,
        &format!("{what} · {repo}"),
        &context.viewer,
        body,
    ))
}

/// The commits listed on a comparison.
const COMPARE_COMMITS: usize = 250;

/// `GET /{repo}/compare/{base}...{head}`: the commits `head` has that
/// `base` has not, and the diff from their merge base to `head`.
pub async fn compare(
    app: &App,
    name: &str,
    rest: &[&str],
    parts: RequestParts,
) -> Result<Response, WebError> {
    let context = match open_expensive(app, name, &parts).await {
        Ok(context) => context,
        Err(response) => return Ok(response),
    };
    let split = split_diff(&parts);
    let spec = decoded(rest).map(|segments| segments.join("/"));
    let Some((base_name, head_name)) = spec
        .as_deref()
        .and_then(|spec| spec.split_once("..."))
        .map(|(base, head)| (base.to_owned(), head.to_owned()))
        .filter(|(base, head)| !base.is_empty() && !head.is_empty())
    else {
        return Ok(error_page(
            StatusCode::NOT_FOUND,
            &context.viewer,
            "Compare two revisions as /{repository}/compare/{base}...{head}.",
        ));
    };
    let names = (base_name.clone(), head_name.clone());
    let found = with_objects(app, &context, move |refs, objects| {
        let base = resolve_whole(refs, objects, &names.0)?;
        let head = resolve_whole(refs, objects, &names.1)?;
        let (Some(base), Some(head)) = (base, head) else {
            return Ok(None);
        };
        let comparison = browse::compare(objects, base.commit, head.commit, COMPARE_COMMITS)?;
        let old_tree = match comparison.merge_base {
            Some(merge_base) => Some(browse::commit_detail(objects, merge_base)?.tree),
            None => None,
        };
        let new_tree = browse::commit_detail(objects, head.commit)?.tree;
        let diff = browse::diff(objects, old_tree, new_tree, DIFF_LIMITS)?;
        Ok(Some((comparison, diff)))
    })
    .await;
    let (comparison, diff) = match found {
        Err(response) => return Ok(response),
        Ok(None) => {
            return Ok(error_page(
                StatusCode::NOT_FOUND,
                &context.viewer,
                &format!("No such revision: {base_name} or {head_name}."),
            ));
        }
        Ok(Some(found)) => found,
    };
    let repo = context.repo.name.as_str();
    let files = &diff.files;
    let body = html! {
        (repo_header(&context, "branches", &head_name))
        h2 #compare-title { "Comparing " code { (base_name) } " … " code { (head_name) } }
        @if comparison.merge_base.is_none() {
            p.muted { "These histories have no commit in common; the diff is against an empty tree." }
        }
        p #ahead { (comparison.ahead) @if comparison.ahead == 1 { " commit" } @else { " commits" } ", " (files.len()) @if files.len() == 1 { " changed file" } @else { " changed files" } }
        @if !comparison.commits.is_empty() {
            div.box { table.list #commits {
                @for commit in &comparison.commits {
                    tr {
                        td {
                            a href={ "/" (repo) "/commit/" (commit.id) } { (commit.summary()) }
                            br;
                            span.muted { (person(commit)) }
                        }
                        td.when { code { (commit.id.to_hex_with_len(7)) } }
                    }
                }
            } }
            @if comparison.ahead > comparison.commits.len() { p.muted { "Only the newest " (comparison.commits.len()) " commits are listed." } }
        }
        (diff_views(split))
        @for file in files { (diff_file(file, split)) }
        @if diff.truncated { p.muted { "More files changed than are shown." } }
    };
    Ok(page(
        StatusCode::OK,
        &format!("Comparing {base_name}...{head_name} · {repo}"),
        &context.viewer,
        body,
    ))
}

/// `GET /{repo}/archive/{rev}.tar.gz` and `.zip`: the revision's files,
/// streamed, under `{repo}-{rev}/` (GitHub's naming).
pub async fn archive(
    app: &App,
    name: &str,
    rest: &[&str],
    parts: RequestParts,
) -> Result<Response, WebError> {
    let context = match open_expensive(app, name, &parts).await {
        Ok(context) => context,
        Err(response) => return Ok(response),
    };
    let not_found = |context: &Context| {
        Ok(error_page(
            StatusCode::NOT_FOUND,
            &context.viewer,
            "Archives are /{repository}/archive/{revision}.tar.gz or .zip.",
        ))
    };
    let Some(joined) = decoded(rest).map(|segments| segments.join("/")) else {
        return not_found(&context);
    };
    let Some((rev, format)) = nimbus_git::archive::ArchiveFormat::split(&joined)
        .map(|(rev, format)| (rev.to_owned(), format))
        .filter(|(rev, _)| !rev.is_empty())
    else {
        return not_found(&context);
    };
    let wanted = rev.clone();
    let resolved = with_objects(app, &context, move |refs, objects| {
        resolve_whole(refs, objects, &wanted)
    })
    .await;
    let resolved = match resolved {
        Err(response) => return Ok(response),
        Ok(None) => return not_found(&context),
        Ok(Some(resolved)) => resolved,
    };
    let prefix = format!("{}-{}", context.repo.name, rev.replace('/', "-"));
    let receiver = match app
        .git
        .archive(&context.repo, resolved.commit, prefix.clone(), format)
        .await
    {
        Ok(receiver) => receiver,
        Err(err) => return Ok(internal(&context.viewer, &err)),
    };
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    let mut response = warp::reply::stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}.{}\"",
        segment(&prefix),
        format.extension()
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(kind: LineKind, text: &str) -> DiffLine {
        DiffLine {
            kind,
            old_no: None,
            new_no: None,
            text: text.to_owned(),
            no_newline: false,
        }
    }

    #[test]
    fn split_rows_pair_removed_runs_with_the_added_runs_after_them() {
        use LineKind::{Added, Context, Removed};
        let lines = [
            line(Context, "a"),
            line(Removed, "b"),
            line(Removed, "c"),
            line(Added, "B"),
            line(Context, "d"),
            line(Added, "e"),
            line(Removed, "f"),
        ];
        let rows: Vec<(Option<&str>, Option<&str>)> = split_rows(&lines)
            .into_iter()
            .map(|(old, new)| (old.map(|l| l.text.as_str()), new.map(|l| l.text.as_str())))
            .collect();
        assert_eq!(
            rows,
            [
                (Some("a"), Some("a")),
                (Some("b"), Some("B")),
                (Some("c"), None),
                (Some("d"), Some("d")),
                (None, Some("e")),
                (Some("f"), None),
            ]
        );
        assert!(split_rows(&[]).is_empty());
    }
}
