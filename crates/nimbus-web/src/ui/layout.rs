//! The frame of every repository page: a header with the instance, the
//! repository and who is signed in, the style (dark by default, light when
//! the system prefers it, readable at phone width), and the headers that
//! keep pages from running anything: a Content-Security-Policy without
//! scripts from anywhere but this server, no framing, no sniffing.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::{Reply, Response};

pub const STYLE: &str = r#"
:root { color-scheme: dark light; --bg: #0d1117; --fg: #e6edf3; --muted: #8b949e; --panel: #161b22;
  --line: #30363d; --accent: #2f81f7; --bad: #f85149; --good: #3fb950; --add: rgba(46,160,67,.18);
  --del: rgba(248,81,73,.18); --mark: rgba(187,128,9,.25); }
@media (prefers-color-scheme: light) { :root { --bg: #ffffff; --fg: #1f2328; --muted: #59636e;
  --panel: #f6f8fa; --line: #d1d9e0; --accent: #0969da; --bad: #cf222e; --good: #1a7f37;
  --add: #dafbe1; --del: #ffebe9; --mark: #fff8c5; } }
* { box-sizing: border-box; }
body { background: var(--bg); color: var(--fg); font: 15px/1.5 system-ui, sans-serif; margin: 0; }
a { color: var(--accent); text-decoration: none; } a:hover, a:focus { text-decoration: underline; }
header.top { display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; padding: .75rem 1rem;
  border-bottom: 1px solid var(--line); background: var(--panel); }
header.top .brand { font-weight: 700; color: var(--fg); } header.top .who { margin-left: auto; }
main { max-width: 72rem; margin: 1.5rem auto; padding: 0 1rem; }
h1 { font-size: 1.4rem; margin: 0 0 1rem; word-break: break-word; }
.muted { color: var(--muted); } .error { color: var(--bad); } .ok { color: var(--good); }
.badge { border: 1px solid var(--line); border-radius: 1rem; padding: 0 .5rem; font-size: .8rem; color: var(--muted); }
nav.tabs { display: flex; gap: 1rem; border-bottom: 1px solid var(--line); margin-bottom: 1rem; flex-wrap: wrap; }
nav.tabs a { padding: .4rem 0; } nav.tabs a.current { border-bottom: 2px solid var(--accent); color: var(--fg); }
.box { border: 1px solid var(--line); border-radius: 6px; margin-bottom: 1rem; overflow: hidden; }
.box > .head { background: var(--panel); padding: .5rem .75rem; border-bottom: 1px solid var(--line);
  display: flex; gap: .75rem; flex-wrap: wrap; align-items: center; }
.box > .head .actions { margin-left: auto; display: flex; gap: .75rem; }
table.list { width: 100%; border-collapse: collapse; }
table.list td { padding: .35rem .75rem; border-top: 1px solid var(--line); vertical-align: top; }
table.list tr:first-child td { border-top: 0; }
table.list td.when { color: var(--muted); white-space: nowrap; text-align: right; }
table.list td.last { max-width: 28rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
a.dir { font-weight: 600; }
.crumbs { margin-bottom: .75rem; word-break: break-all; }
table.code { border-collapse: collapse; width: 100%; font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, monospace; }
table.code td { padding: 0 .75rem; white-space: pre; vertical-align: top; }
table.code td.num { width: 1%; text-align: right; color: var(--muted); user-select: none; }
table.code td.num a { color: inherit; }
table.code tr:target td, table.code tr.marked td { background: var(--mark); }
.scroll { overflow-x: auto; }
tr.add td.text { background: var(--add); } tr.del td.text { background: var(--del); }
table.code td.add { background: var(--add); } table.code td.del { background: var(--del); }
table.code td.empty { background: var(--panel); }
table.blame td.who { width: 1%; min-width: 16rem; max-width: 24rem; white-space: normal; font: 12px/1.45 system-ui, sans-serif; border-right: 1px solid var(--line); }
table.blame tr.hunk-start td { border-top: 1px solid var(--line); } table.split td.text { width: 50%; }
tr.hunk td { color: var(--muted); background: var(--panel); }
.markdown { padding: 0 1.5rem 1rem; overflow-wrap: break-word; }
.markdown pre { background: var(--panel); padding: .75rem; overflow-x: auto; border-radius: 6px; }
.markdown img { max-width: 100%; }
.markdown table { border-collapse: collapse; } .markdown td, .markdown th { border: 1px solid var(--line); padding: .25rem .5rem; }
input, select, textarea { background: transparent; color: inherit; border: 1px solid var(--line);
  border-radius: 6px; padding: .4rem; font: inherit; }
code.clone { user-select: all; word-break: break-all; }
.pager { display: flex; gap: 1rem; margin: 1rem 0; }
.stat-add { color: var(--good); } .stat-del { color: var(--bad); }
@media (max-width: 40rem) { table.list td.when, table.list td.last { display: none; } main { margin-top: 1rem; } }
"#;

/// Who is looking, for the header.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    pub name: Option<String>,
}

/// A whole page.
pub fn page(status: StatusCode, title: &str, viewer: &Viewer, content: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Nimbus" }
                style { (PreEscaped(STYLE)) (PreEscaped(super::highlight::STYLE)) }
                @if let Some(script) = crate::assets::url("nimbus.js") { script src=(script) defer {} }
            }
            body {
                header.top {
                    a.brand href="/" { "Nimbus" }
                    span.who {
                        @match &viewer.name {
                            Some(name) => { a href="/account" { (name) } }
                            None => { a href="/login" { "Sign in" } }
                        }
                    }
                }
                main { (content) }
            }
        }
    };
    let mut response =
        warp::reply::with_status(warp::reply::html(markup.into_string()), status).into_response();
    protect(
        &mut response,
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; \
         script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    response
}

/// The headers every HTML page carries: its Content-Security-Policy, no
/// referrer to other sites, no content sniffing.
pub fn protect(response: &mut Response, csp: &'static str) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
}

/// An error as a page.
pub fn error_page(status: StatusCode, viewer: &Viewer, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    page(
        status,
        title,
        viewer,
        html! {
            h1 { (status.as_u16()) " " (title) }
            p.error { (message) }
            p { a href="/" { "All repositories" } }
        },
    )
}

/// Unix seconds as `2026-11-22 15:04 UTC`.
pub fn when(seconds: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|at| at.format(format).ok())
        .unwrap_or_default()
}

/// A human size: `512 B`, `12.5 KiB`, `3.1 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 20), "5.0 MiB");
        assert_eq!(when(1_700_000_000), "2023-11-14 22:13 UTC");
    }
}
