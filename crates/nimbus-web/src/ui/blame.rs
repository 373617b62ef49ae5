//! `GET /{repo}/blame/{rev}/{path}`: each line of a file with the commit
//! that last changed it (`nimbus_git::blame`), highlighted like the file
//! view. An expensive page: anonymous visitors' allowance counts it.

use super::highlight;
use super::layout::{error_page, page, size, when};
use super::repo::{breadcrumbs, open_expensive, owned, repo_header, split_rev, with_objects};
use super::{RepoPath, path as encode_path};
use crate::error::WebError;
use crate::{App, RequestParts};
use maud::{PreEscaped, html};
use nimbus_git::blame::{self, BlameLimits, BlameOutcome};
use nimbus_git::browse;
use warp::http::StatusCode;
use warp::reply::Response;

/// The most characters of a commit summary shown beside its lines.
const SUMMARY_CHARS: usize = 60;

/// What the blocking part found.
enum Found {
    NoRevision,
    Outcome {
        label: String,
        path: RepoPath,
        outcome: BlameOutcome,
        lines: Vec<String>,
        highlighted: Option<Vec<String>>,
    },
}

/// `GET /{repo}/blame/{rev}/{path}`.
pub async fn blame(
    app: &App,
    name: &str,
    rest: &[&str],
    parts: RequestParts,
) -> Result<Response, WebError> {
    let context = match open_expensive(app, name, &parts).await {
        Ok(context) => context,
        Err(response) => return Ok(response),
    };
    let not_found = |message: &str| error_page(StatusCode::NOT_FOUND, &context.viewer, message);
    let rest = owned(rest);
    let found = with_objects(app, &context, move |refs, objects| {
        let Some((resolved, path)) = split_rev(refs, objects, &rest)? else {
            return Ok(Found::NoRevision);
        };
        let outcome = blame::blame(
            objects,
            resolved.commit,
            path.as_bytes(),
            &BlameLimits::default(),
        )?;
        let (lines, highlighted) = match &outcome {
            BlameOutcome::Blamed(blamed) => {
                let max = usize::try_from(blame::MAX_BLAME_BLOB_BYTES).unwrap_or(usize::MAX);
                let blob = browse::read_blob(objects, blamed.blob, max)?;
                let text = String::from_utf8_lossy(&blob.data);
                let highlighted = highlight::highlight(&path.to_string(), &text);
                (text.lines().map(str::to_owned).collect(), highlighted)
            }
            _ => (Vec::new(), None),
        };
        Ok(Found::Outcome {
            label: resolved.label,
            path,
            outcome,
            lines,
            highlighted,
        })
    })
    .await;
    let (label, path, outcome, lines, highlighted) = match found {
        Err(response) => return Ok(response),
        Ok(Found::NoRevision) => return Ok(not_found("No such revision or file.")),
        Ok(Found::Outcome {
            label,
            path,
            outcome,
            lines,
            highlighted,
        }) => (label, path, outcome, lines, highlighted),
    };
    let repo = context.repo.name.as_str();
    let file_url = format!("/{repo}/blob/{}/{}", encode_path(&label), path.url());
    let raw_url = format!("/{repo}/raw/{}/{}", encode_path(&label), path.url());
    let unavailable = |status: StatusCode, message: String| {
        let body = html! {
            (repo_header(&context, "code", &label))
            (breadcrumbs(repo, &label, &path))
            p.error #blame-unavailable { (message) }
            p { a href=(file_url) { "View the file" } " · " a href=(raw_url) { "Raw" } }
        };
        page(
            status,
            &format!("Blame of {path} · {repo}"),
            &context.viewer,
            body,
        )
    };
    let blamed = match outcome {
        BlameOutcome::Blamed(blamed) => blamed,
        BlameOutcome::NotFound => return Ok(not_found("No such file.")),
        BlameOutcome::NotAFile => {
            return Ok(unavailable(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Only files can be blamed; this is a directory or a submodule.".to_owned(),
            ));
        }
        BlameOutcome::Binary => {
            return Ok(unavailable(
                StatusCode::UNPROCESSABLE_ENTITY,
                "This is a binary file; it has no lines to blame.".to_owned(),
            ));
        }
        BlameOutcome::TooLarge { size: bytes } => {
            return Ok(unavailable(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "This file is {}; blame is shown for files up to {}.",
                    size(bytes),
                    size(blame::MAX_BLAME_BLOB_BYTES)
                ),
            ));
        }
        BlameOutcome::TooManyLines { lines } => {
            return Ok(unavailable(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "This file has {lines} lines; blame is shown for files up to {} lines.",
                    blame::MAX_BLAME_LINES
                ),
            ));
        }
    };
    let line_html = |number: u32| -> maud::Markup {
        let index = number.saturating_sub(1) as usize;
        match highlighted.as_ref().and_then(|lines| lines.get(index)) {
            Some(html) => html! { td.text { (PreEscaped(html)) } },
            None => html! { td.text { (lines.get(index).map(String::as_str).unwrap_or("")) } },
        }
    };
    let body = html! {
        (repo_header(&context, "code", &label))
        (breadcrumbs(repo, &label, &path))
        div.box {
            div.head {
                strong { "Blame" }
                span.muted { (blamed.line_count) " lines" }
                span.muted { (blamed.commits.len()) @if blamed.commits.len() == 1 { " commit" } @else { " commits" } }
                span.actions {
                    a #file href=(file_url) { "File" }
                    a href=(raw_url) { "Raw" }
                    a href={ "/" (repo) "/commits/" (encode_path(&label)) "/" (path.url()) } { "History" }
                }
            }
            @if blamed.truncated {
                p.markdown.muted #blame-truncated { "The history was too long to follow to the end: lines marked ^ may be older than the commit shown." }
            }
            div.scroll { table.code.blame #blame {
                @for hunk in &blamed.hunks {
                    @let commit = blamed.commits.get(&hunk.commit);
                    @for offset in 0..hunk.len {
                        @let number = hunk.start + offset;
                        tr id={ "L" (number) } class=[(offset == 0).then_some("hunk-start")] {
                            @if offset == 0 {
                                td.who rowspan=(hunk.len) {
                                    a.commit href={ "/" (repo) "/commit/" (hunk.commit) } title=[commit.map(|c| c.summary.as_str())] {
                                        @if hunk.boundary { "^" }
                                        code { (hunk.commit.to_hex_with_len(7)) }
                                    }
                                    @if let Some(commit) = commit {
                                        " " span.summary { (shorten(&commit.summary)) }
                                        br;
                                        span.muted { (commit.author.name) " · " (when(commit.author.time)) }
                                    }
                                }
                            }
                            td.num { a href={ "#L" (number) } { (number) } }
                            (line_html(number))
                        }
                    }
                }
            } }
        }
    };
    Ok(page(
        StatusCode::OK,
        &format!("Blame of {path} at {label} · {repo}"),
        &context.viewer,
        body,
    ))
}

/// `text` cut to [`SUMMARY_CHARS`] characters, with an ellipsis.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(SUMMARY_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_summaries_are_cut_at_characters() {
        assert_eq!(shorten("short"), "short");
        let long = "é".repeat(SUMMARY_CHARS + 5);
        let cut = shorten(&long);
        assert_eq!(cut.chars().count(), SUMMARY_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
