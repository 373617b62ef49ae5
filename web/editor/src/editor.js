// Nimbus web editor: progressively enhances `textarea[data-editor]` with
// CodeMirror 6. Without JavaScript the plain textarea works as before; with
// it, the textarea is hidden (but stays in the form, and always holds the
// editor's current text) and an editor is shown right after it.
//
// Markup contract (see web/editor/README.md):
//   <label for="content">Content</label>
//   <textarea id="content" name="content" data-editor data-path="src/main.rs">…</textarea>
//   <script src="/-/assets/editor.js" defer></script>
// Optional: data-filename-input="filename" names the id of an <input> whose
// value (a file name) chooses the language instead of data-path, live (the
// "new file" form). Once enhanced the textarea gets data-editor-ready="1".
//
// Keyboard: Tab / Shift-Tab indent and dedent. To leave the editor with the
// keyboard press Escape and then Tab (or Shift-Tab) within two seconds, or
// toggle tab-focus mode with Ctrl-M (Shift-Alt-M on macOS). Ctrl-S (Cmd-S)
// submits the form.
//
// Bundled into one IIFE file by scripts/build-editor; no dynamic imports, so
// it runs under the pages' Content-Security-Policy (script-src 'self').

import { EditorState, Compartment } from "@codemirror/state";
import {
  EditorView,
  keymap,
  lineNumbers,
  highlightActiveLineGutter,
  highlightSpecialChars,
  drawSelection,
  dropCursor,
  rectangularSelection,
  crosshairCursor,
  highlightActiveLine,
} from "@codemirror/view";
import {
  defaultKeymap,
  history,
  historyKeymap,
  indentWithTab,
} from "@codemirror/commands";
import {
  StreamLanguage,
  indentUnit,
  indentOnInput,
  syntaxHighlighting,
  defaultHighlightStyle,
  bracketMatching,
  foldGutter,
  foldKeymap,
} from "@codemirror/language";
import { searchKeymap, highlightSelectionMatches, search } from "@codemirror/search";
import { closeBrackets, closeBracketsKeymap } from "@codemirror/autocomplete";
import { oneDark } from "@codemirror/theme-one-dark";

import { javascript } from "@codemirror/lang-javascript";
import { rust } from "@codemirror/lang-rust";
import { python } from "@codemirror/lang-python";
import { markdown, markdownLanguage } from "@codemirror/lang-markdown";
import { json } from "@codemirror/lang-json";
import { html } from "@codemirror/lang-html";
import { css } from "@codemirror/lang-css";
import { yaml } from "@codemirror/lang-yaml";
// C, C++, Java and Go use CodeMirror's legacy (CodeMirror 5 style) modes:
// highlighting and indentation like the Lezer grammars, but about 150 kB
// smaller in the bundle (no syntax tree, so no folding for them).
import { c as cMode, cpp as cppMode, java as javaMode } from "@codemirror/legacy-modes/mode/clike";
import { go as goMode } from "@codemirror/legacy-modes/mode/go";
import { sql } from "@codemirror/lang-sql";
import { xml } from "@codemirror/lang-xml";

// Language support by name; built lazily (only the one used is constructed).
const languages = {
  javascript: () => javascript(),
  jsx: () => javascript({ jsx: true }),
  typescript: () => javascript({ typescript: true }),
  tsx: () => javascript({ jsx: true, typescript: true }),
  rust: () => rust(),
  python: () => python(),
  markdown: () => markdown({ base: markdownLanguage, codeLanguages: fencedLanguage }),
  json: () => json(),
  html: () => html(),
  css: () => css(),
  yaml: () => yaml(),
  go: () => StreamLanguage.define(goMode),
  c: () => StreamLanguage.define(cMode),
  cpp: () => StreamLanguage.define(cppMode),
  java: () => StreamLanguage.define(javaMode),
  sql: () => sql(),
  xml: () => xml(),
};

const byExtension = {
  js: "javascript", mjs: "javascript", cjs: "javascript",
  jsx: "jsx",
  ts: "typescript", mts: "typescript", cts: "typescript",
  tsx: "tsx",
  rs: "rust",
  py: "python", pyi: "python", pyw: "python",
  md: "markdown", markdown: "markdown", mdown: "markdown", mkd: "markdown", mdx: "markdown",
  json: "json", jsonc: "json", json5: "json", webmanifest: "json", geojson: "json",
  html: "html", htm: "html",
  css: "css",
  yaml: "yaml", yml: "yaml",
  go: "go",
  c: "c", h: "cpp", cc: "cpp", cpp: "cpp", cxx: "cpp", "c++": "cpp",
  hh: "cpp", hpp: "cpp", hxx: "cpp", "h++": "cpp", ino: "cpp",
  java: "java",
  sql: "sql",
  xml: "xml", xhtml: "xml", svg: "xml", xsd: "xml", xsl: "xml", xslt: "xml",
  plist: "xml", csproj: "xml", props: "xml", targets: "xml", rss: "xml", atom: "xml",
};

const byFileName = { ".babelrc": "json", ".eslintrc": "json" };

// The language name for a path, or null for plain text.
function languageFor(path) {
  const name = String(path || "").split("/").pop().toLowerCase();
  if (Object.prototype.hasOwnProperty.call(byFileName, name)) return byFileName[name];
  const dot = name.lastIndexOf(".");
  if (dot < 0) return null;
  return byExtension[name.slice(dot + 1)] || null;
}

// Fenced code blocks in Markdown: ```rust, ```ts, ```py …
const fenceAliases = {
  js: "javascript", javascript: "javascript", node: "javascript",
  jsx: "jsx", ts: "typescript", typescript: "typescript", tsx: "tsx",
  rs: "rust", rust: "rust", py: "python", python: "python",
  md: "markdown", markdown: "markdown", json: "json", html: "html",
  css: "css", yaml: "yaml", yml: "yaml", go: "go", golang: "go",
  c: "c", cpp: "cpp", "c++": "cpp", h: "cpp", java: "java", sql: "sql",
  xml: "xml", svg: "xml",
};
const fenceCache = {};
function fencedLanguage(info) {
  const name = fenceAliases[String(info).trim().toLowerCase()];
  if (!name || name === "markdown") return null;
  if (!fenceCache[name]) {
    const support = languages[name]();
    fenceCache[name] = support.language || support;
  }
  return fenceCache[name];
}

// The indentation a file already uses: a tab, or 2, 4 or 8 spaces; else
// the usual one for its language.
function detectIndent(text, language) {
  let tabs = 0;
  const widths = {};
  const lines = text.split("\n", 2000);
  for (const line of lines) {
    if (line[0] === "\t") tabs++;
    else if (line[0] === " ") {
      const width = line.match(/^ */)[0].length;
      if (width < line.length && line[width] !== "*") widths[width] = (widths[width] || 0) + 1;
    }
  }
  const spaced = Object.values(widths).reduce((a, b) => a + b, 0);
  if (tabs > spaced) return "\t";
  // The largest unit that most indented lines are a multiple of.
  for (const unit of [8, 4, 2]) {
    if (!spaced || !widths[unit]) continue;
    let fits = 0;
    for (const [width, count] of Object.entries(widths)) if (width % unit === 0) fits += count;
    if (fits >= spaced * 0.9) return " ".repeat(unit);
  }
  if (language === "go") return "\t";
  if (["rust", "python", "java", "c", "cpp"].includes(language)) return "    ";
  return "  ";
}

function languageExtension(path) {
  const name = languageFor(path);
  return name ? languages[name]() : [];
}

// The editor's frame: the size of the textarea it replaces, the page's
// monospace font, a visible focus ring.
function frameTheme(rows) {
  const lines = Math.max(Number(rows) || 24, 6);
  return EditorView.theme({
    "&": {
      height: `calc(${lines * 1.45}em + 10px)`,
      minHeight: "8em",
      fontSize: "13px",
      border: "1px solid var(--line, #8888)",
      borderRadius: "6px",
      resize: "vertical",
      overflow: "hidden",
    },
    "&.cm-focused": {
      outline: "2px solid var(--accent, Highlight)",
      outlineOffset: "1px",
    },
    ".cm-scroller": {
      fontFamily: "ui-monospace, SFMono-Regular, Menlo, monospace",
      lineHeight: "1.45",
    },
  });
}

// A Content-Security-Policy nonce for the editor's <style> element, taken
// from the script element's nonce (only needed if style-src lacks
// 'unsafe-inline'). Read now: document.currentScript is only set while the
// script first runs.
const cspNonce = (document.currentScript && document.currentScript.nonce) || "";

const darkQuery =
  typeof window.matchMedia === "function"
    ? window.matchMedia("(prefers-color-scheme: dark)")
    : null;
const colourTheme = () => (darkQuery && darkQuery.matches ? oneDark : []);

// The accessible name: the textarea's aria-label, else its <label>s.
function accessibleLabel(textarea) {
  const aria = textarea.getAttribute("aria-label");
  if (aria) return aria;
  const labels = textarea.labels ? Array.from(textarea.labels) : [];
  const text = labels
    .map((label) => label.textContent.replace(/\s+/g, " ").trim())
    .filter(Boolean)
    .join(" ");
  return text || null;
}

function enhance(textarea) {
  if (textarea.dataset.editorReady === "1") return null;
  const form = textarea.form;
  const language = new Compartment();
  const theme = new Compartment();

  const sync = (view) => {
    const text = view.state.doc.toString();
    if (textarea.value !== text) textarea.value = text;
  };

  const submit = (view) => {
    sync(view);
    if (!form) return false;
    if (typeof form.requestSubmit === "function") form.requestSubmit();
    else form.submit();
    return true;
  };

  const contentAttributes = { spellcheck: "false", autocorrect: "off", autocapitalize: "off" };
  const label = accessibleLabel(textarea);
  if (label) contentAttributes["aria-label"] = label;
  const describedBy = textarea.getAttribute("aria-describedby");
  if (describedBy) contentAttributes["aria-describedby"] = describedBy;
  if (textarea.readOnly) contentAttributes["aria-readonly"] = "true";

  const filenameInput = textarea.dataset.filenameInput
    ? document.getElementById(textarea.dataset.filenameInput)
    : null;
  const currentPath = () =>
    (filenameInput && filenameInput.value) || textarea.dataset.path || "";

  const state = EditorState.create({
    doc: textarea.value,
    extensions: [
      lineNumbers(),
      highlightActiveLineGutter(),
      highlightSpecialChars(),
      history(),
      foldGutter(),
      drawSelection(),
      dropCursor(),
      EditorState.allowMultipleSelections.of(true),
      indentOnInput(),
      syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
      bracketMatching(),
      closeBrackets(),
      rectangularSelection(),
      crosshairCursor(),
      highlightActiveLine(),
      highlightSelectionMatches(),
      search({ top: true }),
      keymap.of([
        { key: "Mod-s", run: submit, preventDefault: true },
        ...closeBracketsKeymap,
        ...defaultKeymap,
        ...searchKeymap,
        ...historyKeymap,
        ...foldKeymap,
        indentWithTab,
      ]),
      EditorState.readOnly.of(textarea.readOnly),
      EditorView.editable.of(!textarea.disabled),
      EditorView.contentAttributes.of(contentAttributes),
      EditorView.updateListener.of((update) => {
        if (update.docChanged) sync(update.view);
      }),
      frameTheme(textarea.getAttribute("rows")),
      theme.of(colourTheme()),
      language.of(languageExtension(currentPath())),
      indentUnit.of(detectIndent(textarea.value, languageFor(currentPath()))),
      cspNonce ? EditorView.cspNonce.of(cspNonce) : [],
    ],
  });

  const view = new EditorView({ state });
  textarea.insertAdjacentElement("afterend", view.dom);
  textarea.hidden = true;
  textarea.style.display = "none";

  if (form) form.addEventListener("submit", () => sync(view), true);
  // A form reset restores the textarea's default text: show it.
  if (form)
    form.addEventListener("reset", () =>
      setTimeout(() => {
        view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: textarea.value } });
      }, 0),
    );

  // Clicking the textarea's <label> focuses the editor instead.
  if (textarea.labels)
    for (const el of Array.from(textarea.labels))
      el.addEventListener("click", (event) => {
        event.preventDefault();
        view.focus();
      });

  if (darkQuery) {
    const onChange = () => view.dispatch({ effects: theme.reconfigure(colourTheme()) });
    if (typeof darkQuery.addEventListener === "function") darkQuery.addEventListener("change", onChange);
    else if (typeof darkQuery.addListener === "function") darkQuery.addListener(onChange);
  }

  if (filenameInput) {
    let shown = languageFor(currentPath());
    filenameInput.addEventListener("input", () => {
      const next = languageFor(currentPath());
      if (next === shown) return;
      shown = next;
      view.dispatch({ effects: language.reconfigure(next ? languages[next]() : []) });
    });
  }

  textarea.dataset.editorReady = "1";
  return view;
}

function start() {
  const views = [];
  for (const textarea of Array.from(document.querySelectorAll("textarea[data-editor]"))) {
    try {
      const view = enhance(textarea);
      if (view) views.push(view);
    } catch (err) {
      // Leave the plain textarea working.
      const next = textarea.nextElementSibling;
      if (next && next.classList.contains("cm-editor")) next.remove();
      textarea.hidden = false;
      textarea.style.display = "";
      console.error("nimbus editor:", err);
    }
  }
  if (views.length) window.nimbusEditor = { view: views[0], views, languageFor };
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
