//! The web UI in a real browser: headless Chromium driven through
//! chromedriver (support/browser_driver.rs). Accepting an invitation, signing
//! in with a password, the account page and signing out, with JavaScript on
//! and off.

mod support;

use support::browser::invite;
use support::browser_driver::Chrome;
use support::{Git, NimbusServer};

const PASSWORD: &str = "violet-canyon-drifts-at-noon";

/// Whether the page runs scripts: a `data:` page whose script rewrites a paragraph.
fn runs_scripts(chrome: &Chrome) -> bool {
    chrome.goto(
        "data:text/html,<p id=probe>static</p>\
         <script>document.getElementById('probe').textContent='scripted'</script>",
    );
    match chrome.text("#probe").as_str() {
        "scripted" => true,
        "static" => false,
        other => chrome.fail(format!("unexpected probe text {other:?}")),
    }
}

/// Accepts `invitation` in the browser as `name` with a password; the
/// browser ends up signed in on `/account`.
fn accept_invitation(chrome: &Chrome, server: &NimbusServer, invitation: &str, name: &str) {
    chrome.goto(&format!("{}{invitation}", server.base_url()));
    assert_eq!(chrome.title(), "Join Nimbus · Nimbus");
    assert_eq!(chrome.text("h1"), "Join Nimbus");
    chrome.fill("#user", name);
    chrome.fill("#password", PASSWORD);
    chrome.click("button[type=submit]");
    assert_eq!(
        chrome.current_url(),
        format!("{}/account", server.base_url())
    );
    assert_eq!(chrome.text("#user"), name);
}

fn sign_out(chrome: &Chrome, server: &NimbusServer) {
    chrome.submit("form[action='/logout']");
    assert_eq!(chrome.current_url(), format!("{}/login", server.base_url()));
    assert_eq!(chrome.text("h1"), "Sign in");
    // The account page now sends the visitor to the sign-in form.
    chrome.goto(&format!("{}/account", server.base_url()));
    assert_eq!(
        chrome.current_url(),
        format!("{}/login?next=/account", server.base_url())
    );
    assert!(
        !chrome.exists("form[action='/logout']"),
        "{}",
        chrome.source()
    );
}

/// The sign-in page, a wrong and a right password, the account page and
/// signing out, in a browser with or without JavaScript.
fn sign_in_and_out(test_name: &str, javascript: bool) {
    let server = NimbusServer::start();
    let invitation = invite(&server, None);
    let chrome = Chrome::start(test_name, javascript);
    assert_eq!(runs_scripts(&chrome), javascript);
    chrome.set_viewport(1280, 900);

    let name = if javascript { "ada" } else { "grace" };
    accept_invitation(&chrome, &server, &invitation, name);
    sign_out(&chrome, &server);

    // The sign-in page.
    let login = format!("{}/login", server.base_url());
    chrome.goto(&login);
    assert_eq!(chrome.title(), "Sign in · Nimbus");
    assert_eq!(chrome.text("h1"), "Sign in");
    assert_eq!(
        chrome
            .attribute("form[action='/login']", "method")
            .as_deref(),
        Some("post")
    );
    assert!(chrome.exists("form[action='/login'] input[type=hidden][name=csrf]"));
    assert_eq!(
        chrome.attribute("#password", "type").as_deref(),
        Some("password")
    );
    let labels = chrome.texts("form[action='/login'] label");
    assert_eq!(labels, ["User name", "Password"], "{}", chrome.source());
    assert_eq!(
        chrome.text("form[action='/login'] button[type=submit]"),
        "Sign in"
    );
    assert!(!chrome.exists(".error"), "{}", chrome.source());
    chrome.screenshot("login");

    // A wrong password: the form again, with the reason and the name kept.
    chrome.fill("#user", name);
    chrome.fill("#password", "not-the-password");
    chrome.submit("form[action='/login']");
    assert_eq!(chrome.current_url(), login);
    assert_eq!(chrome.text("[role=alert]"), "Wrong user name or password.");
    assert_eq!(chrome.attribute("#user", "value").as_deref(), Some(name));
    chrome.screenshot("login-refused");

    // The right one: the account page, showing who is signed in.
    chrome.fill("#password", PASSWORD);
    chrome.submit("form[action='/login']");
    chrome.wait_for("#user");
    assert_eq!(
        chrome.current_url(),
        format!("{}/account", server.base_url())
    );
    assert_eq!(chrome.title(), "Your account · Nimbus");
    assert_eq!(chrome.text("h1"), "Your account");
    assert_eq!(chrome.text("#user"), name);
    assert!(
        chrome
            .text("main")
            .contains(&format!("Signed in as {name}")),
        "{}",
        chrome.source()
    );
    assert_eq!(chrome.text("form[action='/logout'] button"), "Sign out");
    assert_eq!(chrome.texts("h2"), ["Change password"]);
    chrome.screenshot("account");

    // Back on the sign-in page, the session is recognised.
    chrome.goto(&login);
    assert!(
        chrome
            .text(".muted")
            .contains(&format!("You are signed in as {name}")),
        "{}",
        chrome.source()
    );
    chrome.back();
    assert_eq!(chrome.text("#user"), name);

    sign_out(&chrome, &server);
}

#[test]
fn sign_in_with_javascript() {
    sign_in_and_out("sign_in_with_javascript", true);
}

#[test]
fn sign_in_without_javascript() {
    sign_in_and_out("sign_in_without_javascript", false);
}

/// A private repository a collaborator browses: dashboard, README, a
/// directory, a file at a line, its raw bytes, history and a commit's diff,
/// and the back button.
fn browse(test_name: &str, javascript: bool) {
    let server = NimbusServer::start();
    server.create_repo("private-app", true);
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    let first = git.commit(
        work.path(),
        "Start the app",
        &[
            (
                "README.md",
                "# Private app\n\nRead [the guide](docs/guide.md).\n",
            ),
            ("docs/guide.md", "alpha\nbeta\ngamma\n"),
        ],
        1_700_000_000,
    );
    let second = git.commit(
        work.path(),
        "Say delta",
        &[("docs/guide.md", "alpha\nbeta\ngamma\ndelta\n")],
        1_700_000_100,
    );
    git.run(
        work.path(),
        &[
            "push",
            "-q",
            &server.push_url("private-app"),
            "HEAD:refs/heads/main",
        ],
    );

    let invitation = invite(&server, Some(("private-app", "read")));

    let chrome = Chrome::start(test_name, javascript);
    // Signed out, the repository is not shown: the visitor is asked to sign in.
    chrome.goto(&format!("{}/private-app", server.base_url()));
    assert_eq!(chrome.title(), "Sign in · Nimbus");
    accept_invitation(&chrome, &server, &invitation, "carol");

    chrome.goto(server.base_url());
    assert_eq!(chrome.title(), "Repositories · Nimbus");
    chrome.screenshot("dashboard");
    chrome.click("#repos a[href='/private-app']");
    assert_eq!(chrome.title(), "private-app · Nimbus");
    assert_eq!(chrome.text("#readme h1"), "Private app");
    assert!(chrome.text(".box .head").contains("Say delta"));
    chrome.screenshot("repository");
    assert_eq!(
        chrome.attribute("#archive-zip", "href").as_deref(),
        Some("/private-app/archive/main.zip")
    );

    chrome.click("#files a[href='/private-app/tree/main/docs']");
    assert_eq!(chrome.title(), "docs at main · private-app · Nimbus");
    chrome.click("#files a[href='/private-app/blob/main/docs/guide.md']");
    assert_eq!(
        chrome.title(),
        "docs/guide.md at main · private-app · Nimbus"
    );
    assert_eq!(
        chrome.texts("#code td.text"),
        ["alpha", "beta", "gamma", "delta"]
    );

    // A line link, highlighted by CSS (:target) with or without scripts.
    chrome.goto(&format!(
        "{}/private-app/blob/main/docs/guide.md#L2",
        server.base_url()
    ));
    assert_eq!(
        chrome.execute("return document.querySelector(':target').id"),
        "L2"
    );
    assert_eq!(chrome.text("#L2 td.text"), "beta");
    chrome.screenshot("file-at-line");

    // A line range. With scripts its lines are marked and a shift-click
    // on a line number makes a new range; without, the page still opens
    // at the file (a fragment never reaches the server).
    chrome.goto(&format!(
        "{}/private-app/blob/main/docs/guide.md#L2-L3",
        server.base_url()
    ));
    assert_eq!(chrome.texts("#code td.text").len(), 4);
    let marked = || chrome.texts("#code tr.marked td.text");
    if javascript {
        assert_eq!(marked(), ["beta", "gamma"]);
        chrome.screenshot("file-at-line-range");
        chrome.click_in_place("#L1 td.num a");
        assert!(
            chrome.current_url().ends_with("#L1"),
            "{}",
            chrome.current_url()
        );
        assert_eq!(marked(), ["alpha"]);
        chrome.execute(
            "document.querySelector('#L4 td.num a').dispatchEvent(\
             new MouseEvent('click', {bubbles: true, cancelable: true, shiftKey: true}))",
        );
        assert!(
            chrome.current_url().ends_with("#L1-L4"),
            "{}",
            chrome.current_url()
        );
        assert_eq!(marked(), ["alpha", "beta", "gamma", "delta"]);
        // Back restores the previous selection.
        chrome.execute("history.back()");
        chrome.wait_for("#code tr.marked");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while marked().len() != 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(marked(), ["alpha"]);
    } else {
        assert!(marked().is_empty());
    }

    // The file's blame: each line with its commit.
    chrome.goto(&format!(
        "{}/private-app/blob/main/docs/guide.md",
        server.base_url()
    ));
    chrome.click("#blame");
    assert_eq!(
        chrome.title(),
        "Blame of docs/guide.md at main · private-app · Nimbus"
    );
    assert_eq!(
        chrome.texts("#blame td.text"),
        ["alpha", "beta", "gamma", "delta"]
    );
    let commits = chrome.texts("#blame a.commit");
    assert_eq!(commits, [first[..7].to_owned(), second[..7].to_owned()]);
    chrome.screenshot("blame");

    // The archive, downloaded by the browser.
    chrome.goto(&format!("{}/private-app", server.base_url()));
    chrome.click_in_place("#archive-zip");
    let zip = chrome.downloaded("private-app-main.zip");
    let saved = work.path().join("downloaded.zip");
    std::fs::write(&saved, &zip).expect("save the archive");
    let listed = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
             print(z.read('private-app-main/docs/guide.md').decode(), end='')",
        ])
        .arg(&saved)
        .output()
        .expect("run python3");
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "alpha\nbeta\ngamma\ndelta\n"
    );

    chrome.goto(&format!(
        "{}/private-app/blob/main/docs/guide.md",
        server.base_url()
    ));

    // Raw bytes, then back.
    let raw = chrome.attribute("#raw", "href").expect("a raw link");
    chrome.click("#raw");
    assert!(
        chrome
            .current_url()
            .ends_with("/private-app/raw/main/docs/guide.md"),
        "{raw}"
    );
    assert!(chrome.source().contains("delta"));
    chrome.back();
    assert_eq!(
        chrome.title(),
        "docs/guide.md at main · private-app · Nimbus"
    );

    // History and the commit's diff.
    chrome.goto(&format!("{}/private-app/commits/main", server.base_url()));
    assert_eq!(
        chrome
            .texts("#commits td a[href^='/private-app/commit/']")
            .len(),
        2
    );
    chrome.screenshot("commits");
    chrome.click(&format!("#commits a[href='/private-app/commit/{second}']"));
    assert_eq!(chrome.text("#summary"), "Say delta");
    assert_eq!(chrome.text("#commit-id"), second);
    let added: Vec<String> = chrome.texts("tr.add td.text");
    assert_eq!(added, ["+delta"]);
    assert!(
        chrome.text("#stats").contains("1 additions")
            || chrome.text("#stats").contains("1 addition")
    );
    chrome.screenshot("commit-diff");
    chrome.click("#diff-view a[href='?diff=split']");
    assert_eq!(chrome.texts("table.split td.add"), ["delta"]);
    assert_eq!(chrome.texts("table.split td.empty").len(), 1);
    chrome.screenshot("commit-diff-split");
    chrome.back();
    chrome.back();
    assert_eq!(chrome.title(), "Commits of main · private-app · Nimbus");

    // At phone width the page still fits: nothing wider than the window.
    chrome.set_viewport(390, 844);
    chrome.goto(&format!("{}/private-app", server.base_url()));
    let overflow =
        chrome.execute("return document.documentElement.scrollWidth > window.innerWidth");
    assert_eq!(overflow, false, "the repository page fits a phone");
    chrome.screenshot("repository-phone");
}

#[test]
fn browse_a_repository_with_javascript() {
    browse("browse_a_repository_with_javascript", true);
}

#[test]
fn browse_a_repository_without_javascript() {
    browse("browse_a_repository_without_javascript", false);
}

/// Puts `text` in the editor form's content: the textarea without
/// JavaScript; with it, the code editor that replaces the textarea, typed
/// into as a person would (the textarea follows it).
fn set_content(chrome: &Chrome, javascript: bool, text: &str) {
    if !javascript {
        chrome.fill("#content", text);
        return;
    }
    chrome.wait_for("#content[data-editor-ready]");
    assert!(
        chrome.exists(".cm-editor .cm-content"),
        "{}",
        chrome.source()
    );
    assert_eq!(
        chrome.execute("return getComputedStyle(document.getElementById('content')).display"),
        "none"
    );
    chrome.execute(
        "const view = window.nimbusEditor.view; \
         view.dispatch({changes: {from: 0, to: view.state.doc.length, insert: ''}}); view.focus();",
    );
    chrome.type_keys(".cm-content", text);
    assert_eq!(
        chrome.execute("return window.nimbusEditor.view.state.doc.toString()"),
        text
    );
    assert_eq!(
        chrome.execute("return document.getElementById('content').value"),
        text
    );
}

/// A collaborator with write access edits a file and commits it, hits the
/// conflict when the branch moved meanwhile (keeping their text), and adds
/// a new file; git sees the commits.
fn edit_and_commit(test_name: &str, javascript: bool) {
    let server = NimbusServer::start();
    server.create_repo("notes", false);
    let git = Git::new(2);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    git.commit(
        work.path(),
        "Start",
        &[
            ("README.md", "# Notes\n"),
            ("docs/guide.md", "alpha\nbeta\n"),
        ],
        1_700_000_000,
    );
    git.run(
        work.path(),
        &[
            "push",
            "-q",
            &server.push_url("notes"),
            "HEAD:refs/heads/main",
        ],
    );
    let invitation = invite(&server, Some(("notes", "write")));

    let chrome = Chrome::start(test_name, javascript);
    accept_invitation(&chrome, &server, &invitation, "dave");

    // Edit and commit.
    chrome.goto(&format!(
        "{}/notes/blob/main/docs/guide.md",
        server.base_url()
    ));
    chrome.click("#edit");
    assert_eq!(chrome.title(), "Editing docs/guide.md · notes · Nimbus");
    assert_eq!(
        chrome.execute("return document.getElementById('content').value"),
        "alpha\nbeta\n"
    );
    set_content(&chrome, javascript, "alpha\nBETA\n");
    chrome.fill("#message", "Shout beta");
    chrome.screenshot("editor");
    chrome.click("#editor button[type=submit]");
    assert_eq!(chrome.title(), "docs/guide.md at main · notes · Nimbus");
    assert_eq!(chrome.texts("#code td.text"), ["alpha", "BETA"]);
    chrome.screenshot("committed");
    git.run(work.path(), &["pull", "-q", &server.url("notes"), "main"]);
    assert_eq!(
        git.run(work.path(), &["log", "-1", "--format=%an <%ae>%n%s"])
            .trim(),
        "dave <dave@users.noreply.nimbus>\nShout beta"
    );
    assert_eq!(
        std::fs::read_to_string(work.path().join("docs/guide.md")).expect("read"),
        "alpha\nBETA\n"
    );
    git.fsck(work.path());

    // The branch moves while the form is open: a conflict, text kept.
    chrome.goto(&format!(
        "{}/notes/edit/main/docs/guide.md",
        server.base_url()
    ));
    let moved = git.commit(
        work.path(),
        "Meanwhile",
        &[("README.md", "# Notes, moved\n")],
        1_700_000_200,
    );
    git.run(
        work.path(),
        &[
            "push",
            "-q",
            &server.push_url("notes"),
            "HEAD:refs/heads/main",
        ],
    );
    set_content(&chrome, javascript, "alpha\nmy change\n");
    chrome.fill("#message", "Too late");
    chrome.click("#editor button[type=submit]");
    assert!(
        chrome
            .text("#edit-error")
            .contains("changed since this page was opened"),
        "{}",
        chrome.source()
    );
    assert_eq!(
        chrome.execute("return document.getElementById('content').value"),
        "alpha\nmy change\n"
    );
    if javascript {
        // The editor starts from the kept text too.
        chrome.wait_for("#content[data-editor-ready]");
        assert_eq!(
            chrome.execute("return window.nimbusEditor.view.state.doc.toString()"),
            "alpha\nmy change\n"
        );
    }
    chrome.screenshot("conflict");
    let remote = git.ls_remote(&server.url("notes"), &["refs/heads/main"]);
    assert!(
        remote.iter().any(|line| line.starts_with(&moved)),
        "{remote:?}"
    );

    // A new file in a new directory, from the tree page.
    chrome.goto(&format!("{}/notes/tree/main/docs", server.base_url()));
    chrome.click("#new-file");
    chrome.fill("#filename", "more/hello.txt");
    set_content(&chrome, javascript, "hello\n");
    chrome.fill("#message", "Say hello");
    chrome.click("#editor button[type=submit]");
    assert_eq!(
        chrome.title(),
        "docs/more/hello.txt at main · notes · Nimbus"
    );
    assert_eq!(chrome.texts("#code td.text"), ["hello"]);
}

#[test]
fn edit_and_commit_with_javascript() {
    edit_and_commit("edit_and_commit_with_javascript", true);
}

#[test]
fn edit_and_commit_without_javascript() {
    edit_and_commit("edit_and_commit_without_javascript", false);
}
