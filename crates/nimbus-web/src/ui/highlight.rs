//! Syntax highlighting of file views: syntect with the grammars bat ships
//! (through `two-face`), turned into `<span class="hl-…">` per line so the
//! colours live in the page's style (dark and light) rather than in the
//! markup, and every line of the numbered table stands alone.
//!
//! Highlighting is a courtesy, never a requirement: a file too large, with
//! a line too long (minified code), in a language we don't know, or taking
//! longer than [`BUDGET`] is shown as plain escaped text instead.

use std::sync::OnceLock;
use std::time::{Duration, Instant};
use syntect::html::{ClassStyle, line_tokens_to_classed_spans};
use syntect::parsing::{ParseState, Scope, ScopeStack, SyntaxReference, SyntaxSet};
use syntect::util::LinesWithEndings;

/// Files larger than this are shown plain.
pub const MAX_BYTES: usize = 512 << 10;
/// A file with a line longer than this (in bytes) is shown plain.
pub const MAX_LINE_BYTES: usize = 4_000;
/// Highlighting that takes longer than this gives up (plain text).
pub const BUDGET: Duration = Duration::from_millis(250);

const CLASSES: ClassStyle = ClassStyle::SpacedPrefixed { prefix: "hl-" };

/// The colours of the classes this module emits, for the page's style:
/// a handful of scopes, in the palette's variables so both themes work.
pub const STYLE: &str = r#"
:root { --hl-comment: #8b949e; --hl-keyword: #ff7b72; --hl-string: #a5d6ff; --hl-constant: #79c0ff;
  --hl-function: #d2a8ff; --hl-type: #ffa657; --hl-tag: #7ee787; --hl-variable: #ffa657; }
@media (prefers-color-scheme: light) { :root { --hl-comment: #59636e; --hl-keyword: #cf222e;
  --hl-string: #0a3069; --hl-constant: #0550ae; --hl-function: #8250df; --hl-type: #953800;
  --hl-tag: #116329; --hl-variable: #953800; } }
.hl-comment { color: var(--hl-comment); font-style: italic; }
.hl-keyword, .hl-storage { color: var(--hl-keyword); }
.hl-string { color: var(--hl-string); }
.hl-constant, .hl-support { color: var(--hl-constant); }
.hl-entity.hl-name.hl-function, .hl-meta.hl-function-call, .hl-support.hl-function { color: var(--hl-function); }
.hl-entity.hl-name.hl-type, .hl-entity.hl-name.hl-class, .hl-storage.hl-type, .hl-support.hl-type { color: var(--hl-type); }
.hl-entity.hl-name.hl-tag, .hl-markup.hl-heading { color: var(--hl-tag); }
.hl-variable.hl-parameter { color: var(--hl-variable); }
.hl-invalid { color: var(--bad); }
.hl-markup.hl-bold { font-weight: 700; } .hl-markup.hl-italic { font-style: italic; }
"#;

fn syntaxes() -> &'static SyntaxSet {
    static SET: OnceLock<SyntaxSet> = OnceLock::new();
    SET.get_or_init(two_face::syntax::extra_newlines)
}

/// Load the grammars now (about a tenth of a second) rather than on the
/// first file view. Call from a blocking thread.
pub fn warm() {
    syntaxes();
}

/// The grammar for a file named `path` (by extension, then whole name),
/// else by its first line (`#!/usr/bin/env python`); `None` for plain text.
fn syntax_for<'a>(set: &'a SyntaxSet, path: &str, text: &str) -> Option<&'a SyntaxReference> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let by_name = name
        .rsplit_once('.')
        .and_then(|(_, extension)| set.find_syntax_by_extension(extension))
        .or_else(|| set.find_syntax_by_extension(name));
    let found = by_name.or_else(|| {
        let first = text.lines().next().unwrap_or("");
        set.find_syntax_by_first_line(first)
    })?;
    (found.name != "Plain Text").then_some(found)
}

/// `text` (the file at `path`) as one HTML fragment per line, as many as
/// `text.lines()` yields, each with its spans balanced; `None` when it is
/// shown plain (see the module docs).
pub fn highlight(path: &str, text: &str) -> Option<Vec<String>> {
    if text.len() > MAX_BYTES || text.lines().any(|line| line.len() > MAX_LINE_BYTES) {
        return None;
    }
    let set = syntaxes();
    let syntax = syntax_for(set, path, text)?;
    let started = Instant::now();
    let mut state = ParseState::new(syntax);
    let mut stack = ScopeStack::new();
    let mut lines = Vec::new();
    for (index, line) in LinesWithEndings::from(text).enumerate() {
        if index % 64 == 63 && started.elapsed() > BUDGET {
            return None;
        }
        let ops = state.parse_line(line, set).ok()?;
        let mut html = String::with_capacity(line.len() * 2);
        let open = stack.as_slice().len();
        for scope in stack.as_slice() {
            open_span(&mut html, *scope);
        }
        let (spans, delta) = line_tokens_to_classed_spans(line, &ops, CLASSES, &mut stack).ok()?;
        html.extend(spans.chars().filter(|c| !matches!(c, '\n' | '\r')));
        let still_open = usize::try_from(open as isize + delta).ok()?;
        for _ in 0..still_open {
            html.push_str("</span>");
        }
        lines.push(html);
    }
    Some(lines)
}

fn open_span(html: &mut String, scope: Scope) {
    html.push_str("<span class=\"");
    for (index, atom) in scope.build_string().split('.').enumerate() {
        if index > 0 {
            html.push(' ');
        }
        html.push_str("hl-");
        html.push_str(atom);
    }
    html.push_str("\">");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balanced(line: &str) -> bool {
        line.matches("<span").count() == line.matches("</span>").count()
    }

    #[test]
    fn rust_gets_classes_and_every_line_stands_alone() {
        let text = "/* a comment\n   over lines */\nfn main() {\n    let s = \"<b>\";\n}\n";
        let lines = highlight("src/main.rs", text).expect("rust is known");
        assert_eq!(lines.len(), text.lines().count());
        assert!(lines.iter().all(|line| balanced(line)), "{lines:#?}");
        // The comment's second line is still a comment.
        assert!(lines[1].contains("hl-comment"), "{}", lines[1]);
        assert!(lines[2].contains("hl-keyword") || lines[2].contains("hl-storage"));
        // Text is escaped.
        assert!(lines[3].contains("&lt;b&gt;") && !lines[3].contains("<b>"));
        assert!(!lines.iter().any(|line| line.contains('\n')));
    }

    #[test]
    fn plain_too_large_or_minified_is_not_highlighted() {
        assert!(highlight("notes.txt", "just words\n").is_none());
        assert!(highlight("unknown.zzzz", "x = 1\n").is_none());
        let minified = format!("var a={};\n", "1".repeat(MAX_LINE_BYTES));
        assert!(highlight("app.min.js", &minified).is_none());
        let huge = "let x = 1;\n".repeat(MAX_BYTES / 10);
        assert!(highlight("big.rs", &huge).is_none());
    }

    #[test]
    fn shebang_and_whole_names_choose_grammars() {
        let script = "#!/usr/bin/env python3\nprint('hi')\n";
        let lines = highlight("bin/tool", script).expect("python by shebang");
        assert!(lines[1].contains("hl-"), "{}", lines[1]);
        assert!(highlight("Makefile", "all:\n\techo hi\n").is_some());
        // CRLF files: no carriage returns left in the markup.
        let crlf = highlight("a.rs", "fn a() {}\r\nfn b() {}\r\n").expect("rust");
        assert_eq!(crlf.len(), 2);
        assert!(!crlf.iter().any(|line| line.contains('\r')));
    }
}
