//! GitHub-flavoured Markdown to safe HTML: pulldown-cmark renders (tables,
//! strikethrough, task lists, footnotes, autolinks), ammonia sanitises
//! (an allowlist of tags and attributes; no scripts, styles, event handlers
//! or `javascript:` URLs). Links relative to the document point into the
//! repository: links to its blob pages, images to its raw files.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};

/// Where a document lives, for its relative links.
#[derive(Debug, Clone)]
pub struct DocumentBase<'a> {
    /// `/{repo}`
    pub repo_path: &'a str,
    /// The revision in URLs (a branch name or commit id), already encoded.
    pub rev: &'a str,
    /// The document's directory inside the repository (`""` at the root,
    /// else `docs/guide`), already encoded.
    pub dir: &'a str,
}

fn is_relative(url: &str) -> bool {
    !(url.is_empty()
        || url.starts_with('#')
        || url.starts_with('/')
        || url.starts_with("//")
        || url.contains(':'))
}

fn join(base: &DocumentBase<'_>, kind: &str, url: &str) -> String {
    // Keep the fragment or query for links (`docs/a.md#usage`).
    let (path, rest) = match url.find(['#', '?']) {
        Some(at) => url.split_at(at),
        None => (url, ""),
    };
    let mut parts: Vec<&str> = base.dir.split('/').filter(|p| !p.is_empty()).collect();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!(
        "{}/{kind}/{}/{}{rest}",
        base.repo_path,
        base.rev,
        parts.join("/")
    )
}

/// Render `markdown` as sanitised HTML.
pub fn render(markdown: &str, base: Option<&DocumentBase<'_>>) -> String {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_GFM;
    let events = Parser::new_ext(markdown, options).map(|event| match (event, base) {
        (
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            }),
            Some(base),
        ) if is_relative(&dest_url) => Event::Start(Tag::Link {
            link_type,
            dest_url: CowStr::from(join(base, "blob", &dest_url)),
            title,
            id,
        }),
        (
            Event::Start(Tag::Image {
                link_type,
                dest_url,
                title,
                id,
            }),
            Some(base),
        ) if is_relative(&dest_url) => Event::Start(Tag::Image {
            link_type,
            dest_url: CowStr::from(join(base, "raw", &dest_url)),
            title,
            id,
        }),
        (event, _) => event,
    });
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events);
    ammonia::Builder::default()
        .url_schemes(["http", "https", "mailto"].into_iter().collect())
        .link_rel(Some("noopener noreferrer nofollow"))
        .add_tag_attributes("input", ["type", "checked", "disabled"])
        .add_tags(["input"])
        .clean(&html)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(markdown: &str) -> String {
        render(markdown, None)
    }

    #[test]
    fn formatting_survives() {
        let html = plain(
            "# Title\n\n*it* **bold** ~~gone~~ `code`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- [x] done\n",
        );
        for needle in [
            "<h1>Title</h1>",
            "<em>it</em>",
            "<strong>bold</strong>",
            "<del>gone</del>",
            "<code>code</code>",
            "<table>",
            "<td>1</td>",
            "type=\"checkbox\"",
        ] {
            assert!(html.contains(needle), "{needle} in {html}");
        }
    }

    #[test]
    fn scripts_and_handlers_are_removed() {
        for attack in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "<a href=\"javascript:alert(1)\">x</a>",
            "[x](javascript:alert(1))",
            "[x](JaVaScRiPt:alert(1))",
            "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
            "<iframe src=\"https://evil.example\"></iframe>",
            "<svg onload=alert(1)>",
            "<div style=\"background:url(javascript:alert(1))\">x</div>",
            "<form action=\"https://evil.example\"><button>go</button></form>",
        ] {
            let html = plain(attack);
            let lower = html.to_ascii_lowercase();
            for forbidden in [
                "<script",
                "onerror",
                "javascript:",
                "<iframe",
                "onload",
                "style=",
                "<form",
                "data:text",
            ] {
                assert!(!lower.contains(forbidden), "{attack:?} gave {html:?}");
            }
        }
    }

    #[test]
    fn links_get_rel_and_relative_urls_point_into_the_repository() {
        let base = DocumentBase {
            repo_path: "/demo",
            rev: "main",
            dir: "docs",
        };
        let html = render(
            "[guide](guide.md#usage) [up](../README.md) ![logo](img/logo.png) [abs](https://example.com) [frag](#top)",
            Some(&base),
        );
        assert!(
            html.contains("href=\"/demo/blob/main/docs/guide.md#usage\""),
            "{html}"
        );
        assert!(
            html.contains("href=\"/demo/blob/main/README.md\""),
            "{html}"
        );
        assert!(
            html.contains("src=\"/demo/raw/main/docs/img/logo.png\""),
            "{html}"
        );
        assert!(html.contains("href=\"https://example.com\""), "{html}");
        assert!(html.contains("href=\"#top\""), "{html}");
        assert!(
            html.contains("rel=\"noopener noreferrer nofollow\""),
            "{html}"
        );
    }
}
