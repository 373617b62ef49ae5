//! The web editor: edit, create or delete a file on a branch and commit it,
//! as the signed-in user, with write access.
//!
//! - `GET|POST /{repo}/edit/{branch}/{path}`
//! - `GET|POST /{repo}/new/{branch}/{directory}`
//! - `GET|POST /{repo}/delete/{branch}/{path}`
//!
//! The form carries the commit the page was made from; the commit is made
//! by `GitService::commit_edit`, through the same ingestion, compare-and-swap
//! and events as a push. If the branch moved meanwhile, the form comes back
//! with the user's text and a conflict message, and nothing changes. Forms
//! work without JavaScript (a textarea).

use super::layout::{Viewer, error_page, page};
use super::{decode, path as encode_path};
use crate::error::WebError;
use crate::{App, Audit, RequestParts, body};
use maud::html;
use nimbus_auth::session::ActiveSession;
use nimbus_auth::{Decision, RepoAction};
use nimbus_git::browse::{self, PathTarget, RevKind};
use nimbus_git::edit::CommitEditError;
use nimbus_git::edit::{Change, CommitRequest, EditError, Identity};
use nimbus_git::objects::Objects;
use nimbus_types::{ObjectId, Repository};
use serde::Deserialize;
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::{Reply, Response};

/// The largest form accepted: the largest file the editor commits, and room
/// for the other fields.
const MAX_EDIT_FORM_BYTES: u64 = (nimbus_git::edit::MAX_CONTENT_BYTES as u64) * 3 + (64 << 10);
/// The largest file offered for editing in the browser.
const MAX_EDITABLE_BYTES: usize = 1 << 20;

/// Which form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditKind {
    Edit,
    New,
    Delete,
}

impl EditKind {
    fn segment(self) -> &'static str {
        match self {
            EditKind::Edit => "edit",
            EditKind::New => "new",
            EditKind::Delete => "delete",
        }
    }
}

#[derive(Debug, Deserialize, Default)]
struct EditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    parent: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    filename: String,
}

/// What the form is about.
struct Target {
    session: ActiveSession,
    viewer: Viewer,
    repo: Repository,
    branch: String,
    /// The file (edit, delete) or directory (new), `""` for the root.
    path: String,
    /// The branch's commit when the page was made.
    head: ObjectId,
    /// The file's content (edit).
    content: Option<String>,
}

fn redirect(location: &str) -> Response {
    let mut response = warp::reply::with_status("", StatusCode::SEE_OTHER).into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The signed-in user's write access, the branch and the path; or the page
/// to show instead.
async fn target(
    app: &App,
    name: &str,
    kind: EditKind,
    rest: &[&str],
    parts: &RequestParts,
) -> Result<Target, Response> {
    let Some(session) = parts.session.clone() else {
        return Err(redirect(&format!(
            "/login?next={}",
            super::path(&parts.path)
        )));
    };
    let viewer = Viewer {
        name: Some(session.user.name.clone()),
    };
    let (decision, repo) =
        super::authorize(app, name, &session.principal(), RepoAction::Write).await?;
    let repo = match (decision, repo) {
        (Decision::Allow, Some(repo)) => repo,
        (Decision::Forbidden(_), Some(repo)) => {
            return Err(error_page(
                StatusCode::FORBIDDEN,
                &viewer,
                &format!("You may read '{}' but not change it.", repo.name),
            ));
        }
        _ => {
            return Err(error_page(
                StatusCode::NOT_FOUND,
                &viewer,
                &format!("Repository '{name}' was not found."),
            ));
        }
    };
    let Some(rest) = rest
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| decode(s))
        .collect::<Option<Vec<String>>>()
    else {
        return Err(error_page(StatusCode::NOT_FOUND, &viewer, "No such path."));
    };
    let snapshot = app
        .git
        .snapshot(&repo)
        .await
        .map_err(|e| WebError::internal(&e).into_response())?;
    let found = tokio::task::spawn_blocking(move || {
        let mut objects = Objects::new(snapshot.db.handle());
        let segments: Vec<&str> = rest.iter().map(String::as_str).collect();
        let Some(resolved) = browse::resolve(&snapshot.refs, &mut objects, &segments)? else {
            return Ok(None);
        };
        if resolved.kind != RevKind::Branch {
            return Ok(None);
        }
        let path = rest[resolved.consumed.min(rest.len())..].join("/");
        let target = browse::lookup_path(&mut objects, resolved.commit, path.as_bytes())?;
        let content = match (kind, target) {
            (EditKind::Edit, PathTarget::Blob { id, .. }) => {
                let blob = browse::read_blob(&mut objects, id, MAX_EDITABLE_BYTES)?;
                if blob.binary || blob.truncated {
                    return Ok(Some((resolved, path, None, false)));
                }
                Some(String::from_utf8_lossy(&blob.data).into_owned())
            }
            (EditKind::Delete, PathTarget::Blob { .. } | PathTarget::Symlink { .. }) => None,
            (EditKind::New, PathTarget::Tree { .. }) => None,
            _ => return Ok(None),
        };
        Ok::<_, browse::BrowseError>(Some((resolved, path, content, true)))
    })
    .await
    .map_err(|e| WebError::internal(&e).into_response())?
    .map_err(|e| WebError::internal(&e).into_response())?;
    match found {
        Some((resolved, path, content, true)) => Ok(Target {
            session,
            viewer,
            repo,
            branch: resolved.label,
            path,
            head: resolved.commit,
            content,
        }),
        Some((_, _, _, false)) => Err(error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &viewer,
            "This file is binary or larger than 1 MiB; it cannot be edited in the browser.",
        )),
        None => Err(error_page(
            StatusCode::NOT_FOUND,
            &viewer,
            "No such branch, file or directory (only branches can be edited).",
        )),
    }
}

/// The form, filled with `form` (a resubmission) or the file as it is.
fn form_page(
    status: StatusCode,
    kind: EditKind,
    target: &Target,
    form: Option<&EditForm>,
    error: Option<&str>,
) -> Response {
    let repo = target.repo.name.as_str();
    let branch = encode_path(&target.branch);
    let action = format!(
        "/{repo}/{}/{branch}{}",
        kind.segment(),
        if target.path.is_empty() {
            String::new()
        } else {
            format!("/{}", encode_path(&target.path))
        }
    );
    let file_name = target.path.rsplit('/').next().unwrap_or("");
    let default_message = match kind {
        EditKind::Edit => format!("Update {file_name}"),
        EditKind::New => "Create a file".to_owned(),
        EditKind::Delete => format!("Delete {file_name}"),
    };
    let message = form.map_or(default_message.as_str(), |f| f.message.as_str());
    let content = form.map_or_else(
        || target.content.clone().unwrap_or_default(),
        |f| f.content.clone(),
    );
    let parent = form.map_or_else(|| target.head.to_string(), |f| f.parent.clone());
    let title = match kind {
        EditKind::Edit => format!("Editing {} · {repo}", target.path),
        EditKind::New => format!("New file in {repo}/{}", target.path),
        EditKind::Delete => format!("Deleting {} · {repo}", target.path),
    };
    let body = html! {
        h1 { a href={ "/" (repo) } { (repo) } " · " (match kind { EditKind::Edit => "Edit", EditKind::New => "New file", EditKind::Delete => "Delete" }) }
        p.muted { "On branch " strong { (target.branch) } @if !target.path.is_empty() { ": " code { (target.path) } } }
        @if let Some(error) = error { p.error #edit-error role="alert" { (error) } }
        form #editor method="post" action=(action) {
            input type="hidden" name="csrf" value=(target.session.csrf);
            input type="hidden" name="parent" value=(parent);
            @if kind == EditKind::New {
                p { label for="filename" { "File name" } br;
                    input #filename name="filename" required size="60" placeholder="name.txt or dir/name.txt"
                        value=(form.map_or("", |f| f.filename.as_str())); }
            }
            @if kind != EditKind::Delete {
                p { label for="content" { "Content" } br;
                    textarea #content name="content" rows="24" style="width:100%;font:13px/1.45 ui-monospace,monospace" spellcheck="false"
                        data-editor="" data-path=(target.path) data-filename-input=[(kind == EditKind::New).then_some("filename")] { (content) } }
            } @else {
                p { "The file will be deleted in a new commit on " strong { (target.branch) } "." }
            }
            p { label for="message" { "Commit message" } br;
                input #message name="message" required size="80" value=(message); }
            p { button type="submit" { "Commit" } " " a href={ "/" (repo) "/tree/" (branch) } { "Cancel" } }
        }
        @if kind != EditKind::Delete {
            @if let Some(script) = crate::assets::url("editor.js") { script src=(script) defer {} }
        }
    };
    page(status, &title, &target.viewer, body)
}

/// `GET|POST /{repo}/{edit,new,delete}/{branch}/{path}`.
pub async fn editor(
    app: &App,
    name: &str,
    kind: EditKind,
    rest: &[&str],
    parts: RequestParts,
) -> Result<Response, WebError> {
    let target = match target(app, name, kind, rest, &parts).await {
        Ok(target) => target,
        Err(response) => return Ok(response),
    };
    if parts.method != Method::POST {
        return Ok(form_page(StatusCode::OK, kind, &target, None, None));
    }
    if let Err(err) = crate::session_http::check_origin(app, &parts) {
        return Ok(error_page(err.status, &target.viewer, &err.message));
    }
    let client = parts.client.clone();
    let bytes = match body::read_limited(parts.body, MAX_EDIT_FORM_BYTES).await {
        Ok(bytes) => bytes,
        Err(err) => {
            return Ok(error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                &target.viewer,
                &err.to_string(),
            ));
        }
    };
    let form: EditForm = match serde_urlencoded::from_bytes(&bytes) {
        Ok(form) => form,
        Err(err) => {
            return Ok(error_page(
                StatusCode::BAD_REQUEST,
                &target.viewer,
                &format!("invalid form: {err}"),
            ));
        }
    };
    if form.csrf != target.session.csrf {
        return Ok(error_page(
            StatusCode::FORBIDDEN,
            &target.viewer,
            "This form is stale or was not sent from this site; reload the page.",
        ));
    }
    let Ok(parent) = form.parent.parse::<ObjectId>() else {
        return Ok(form_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            kind,
            &target,
            Some(&form),
            Some("The form lost track of the commit it was made from; reload the page."),
        ));
    };
    // Browsers send textarea lines with CRLF: keep the file's own endings.
    let keeps_crlf = target
        .content
        .as_deref()
        .is_some_and(|c| c.contains("\r\n"));
    let content = if keeps_crlf {
        form.content.clone()
    } else {
        form.content.replace("\r\n", "\n")
    };
    let change = match kind {
        EditKind::Edit => Change::Write {
            path: target.path.clone(),
            content: content.into_bytes(),
        },
        EditKind::New => Change::Write {
            path: if target.path.is_empty() {
                form.filename.trim().to_owned()
            } else {
                format!("{}/{}", target.path, form.filename.trim())
            },
            content: content.into_bytes(),
        },
        EditKind::Delete => Change::Delete {
            path: target.path.clone(),
        },
    };
    let changed_path = change.path().to_owned();
    let user = &target.session.user;
    let request = CommitRequest {
        parent,
        changes: vec![change],
        message: form.message.clone(),
        author: Identity {
            name: user.name.clone(),
            email: format!("{}@users.noreply.nimbus", user.name),
            time: nimbus_types::unix_now(),
            offset_seconds: 0,
        },
    };
    let principal = target.session.principal();
    let result = app
        .git
        .commit_edit(
            &target.repo,
            crate::app::event_actor(&principal),
            &target.branch,
            request,
        )
        .await;
    let repo = target.repo.name.as_str();
    match result {
        Ok(commit) => {
            if let Some(relay) = &app.relay {
                relay.wake();
            }
            if let Some(dispatcher) = &app.webhooks {
                dispatcher.wake();
            }
            app.audit(
                Audit::new("push")
                    .by(&principal)
                    .repo(repo)
                    .client(client.as_deref())
                    .detail(format!(
                        "web editor: refs/heads/{} {}..{}",
                        target.branch,
                        parent.to_hex_with_len(7),
                        commit.to_hex_with_len(7)
                    )),
            )
            .await;
            if let Some(maintainer) = &app.maintainer {
                maintainer.after_push(target.repo.clone());
            }
            let branch = encode_path(&target.branch);
            let location = match kind {
                EditKind::Delete => {
                    let dir = changed_path.rsplit_once('/').map_or("", |(dir, _)| dir);
                    format!("/{repo}/tree/{branch}/{}", encode_path(dir))
                }
                _ => format!("/{repo}/blob/{branch}/{}", encode_path(&changed_path)),
            };
            Ok(redirect(&location))
        }
        Err(CommitEditError::Conflict { .. }) => Ok(form_page(
            StatusCode::CONFLICT,
            kind,
            &target,
            Some(&form),
            Some(&format!(
                "The branch {} changed since this page was opened, so nothing was committed. \
                 Your text is kept below: copy it, reload the page to see the new version, \
                 and apply your change again.",
                target.branch
            )),
        )),
        Err(CommitEditError::Edit(err)) => {
            let message = match err {
                EditError::NoChange => "Nothing changed, so there is nothing to commit.".to_owned(),
                other => other.to_string(),
            };
            Ok(form_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                kind,
                &target,
                Some(&form),
                Some(&message),
            ))
        }
        Err(CommitEditError::BadBranch { name }) => Ok(form_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            kind,
            &target,
            Some(&form),
            Some(&format!("'{name}' is not a valid branch name.")),
        )),
        Err(CommitEditError::Rejected { reason }) => Ok(form_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            kind,
            &target,
            Some(&form),
            Some(&format!("The commit was refused: {reason}")),
        )),
        Err(CommitEditError::Service(err)) => {
            tracing::error!(error = %err, "a web commit failed");
            Ok(form_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                kind,
                &target,
                Some(&form),
                Some(
                    "The server failed to store the commit; it was logged. Your text is kept below.",
                ),
            ))
        }
    }
}
