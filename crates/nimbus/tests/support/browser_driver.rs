//! A real browser for the web UI tests: headless Chromium driven through its
//! own chromedriver (WebDriver) with fantoccini.
//!
//! Each [`Chrome`] starts a private chromedriver on a free port and one
//! browser session with a fresh profile; dropping it closes the session and
//! stops chromedriver. The API looks synchronous, as the tests are plain
//! `#[test]` functions: every call runs on a tokio runtime the struct owns.
//! Failures panic with the action, the page's URL and (shortened) source.
//!
//! `scripts/chromium` installs Chromium and chromedriver; `scripts/test`
//! exports `NIMBUS_TEST_CHROMEDRIVER` with chromedriver's path.

use std::cell::Cell;
use std::fmt::Display;
use std::fs;
use std::future::Future;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// The Chromium binary Debian's `chromium` package installs.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver when `NIMBUS_TEST_CHROMEDRIVER` is not set.
const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long chromedriver may take to accept connections.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Chrome::wait_for`] polls.
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one WebDriver command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of the page's source a failure message shows.
const SOURCE_IN_PANIC: usize = 4000;

/// A headless Chromium session and the chromedriver serving it.
pub struct Chrome {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    test_name: String,
    screenshots: PathBuf,
    screenshot_count: Cell<u32>,
    /// The browser profile and chromedriver's log; removed on drop.
    profile: tempfile::TempDir,
}

impl Chrome {
    /// Starts chromedriver and a headless Chromium session for the test
    /// `test_name` (which names its screenshot directory, emptied here),
    /// with JavaScript enabled or disabled.
    pub fn start(test_name: &str, javascript: bool) -> Self {
        let driver_path = chromedriver_path();
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: run scripts/chromium to install Chromium and chromedriver"
        );
        let profile = tempfile::Builder::new()
            .prefix("nimbus-chrome-")
            .tempdir()
            .expect("create the browser's temporary directory");
        let user_data_dir = profile.path().join("profile");
        let driver_log = profile.path().join("chromedriver.log");
        let port = super::free_port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", driver_log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "could not start {} ({error}); run scripts/chromium to install it",
                    driver_path.display()
                )
            });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("build the browser's tokio runtime");
        let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("screenshots")
            .join(test_name);
        let _ = fs::remove_dir_all(&screenshots);
        let mut chrome = Self {
            runtime,
            client: None,
            driver,
            test_name: test_name.to_owned(),
            screenshots,
            screenshot_count: Cell::new(0),
            profile,
        };
        chrome.wait_for_driver(port, &driver_log);

        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=1280,900".to_owned(),
        ];
        args.push(format!("--user-data-dir={}", user_data_dir.display()));
        let downloads = chrome.downloads();
        fs::create_dir_all(&downloads).expect("create the downloads directory");
        let mut prefs = json!({
            "download.default_directory": downloads,
            "download.prompt_for_download": false,
        });
        if !javascript {
            prefs["profile.managed_default_content_settings.javascript"] = json!(2);
        }
        let options = json!({ "binary": CHROMIUM, "args": args, "prefs": prefs });
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "timeouts": { "pageLoad": 30_000, "script": 30_000, "implicit": 0 },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        let url = format!("http://127.0.0.1:{port}");
        let connected = chrome.runtime.block_on(async {
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&url),
            )
            .await
        });
        match connected {
            Ok(Ok(client)) => chrome.client = Some(client),
            Ok(Err(error)) => panic!(
                "chromedriver at {url} could not open a Chromium session: {error}\n{}",
                log_tail(&driver_log)
            ),
            Err(_) => panic!(
                "chromedriver at {url} did not open a Chromium session within {COMMAND_TIMEOUT:?}\n{}",
                log_tail(&driver_log)
            ),
        }
        chrome
    }

    /// Polls until chromedriver accepts TCP connections on `port`.
    fn wait_for_driver(&mut self, port: u16, log: &Path) {
        let deadline = Instant::now() + DRIVER_START_TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!(
                    "chromedriver exited ({status}) before answering\n{}",
                    log_tail(log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on port {port} within {DRIVER_START_TIMEOUT:?}\n{}",
                log_tail(log)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    /// Runs one WebDriver command; on error or timeout, panics with `what`
    /// and the page's context.
    fn run<T, E: Display>(
        &self,
        what: impl Display,
        command: impl Future<Output = Result<T, E>>,
    ) -> T {
        match self
            .runtime
            .block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, command).await })
        {
            Ok(Ok(value)) => value,
            Ok(Err(error)) => self.fail(format!("{what}: {error}")),
            Err(_) => self.fail(format!("{what}: no answer within {COMMAND_TIMEOUT:?}")),
        }
    }

    /// Panics with `message`, the current URL and the start of the page's source.
    #[track_caller]
    pub fn fail(&self, message: impl Display) -> ! {
        let client = self.client();
        let (url, source) = self.runtime.block_on(async {
            let limit = Duration::from_secs(5);
            let url = match tokio::time::timeout(limit, client.current_url()).await {
                Ok(Ok(url)) => url.to_string(),
                Ok(Err(error)) => format!("(unknown: {error})"),
                Err(_) => "(unknown: no answer)".to_owned(),
            };
            let source = match tokio::time::timeout(limit, client.source()).await {
                Ok(Ok(source)) => shorten(&source, SOURCE_IN_PANIC),
                Ok(Err(error)) => format!("(unavailable: {error})"),
                Err(_) => "(unavailable: no answer)".to_owned(),
            };
            (url, source)
        });
        panic!(
            "browser ({}): {message}\n--- at {url} ---\n{source}\n--- end of page ---",
            self.test_name
        )
    }

    /// Opens `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.run(format!("open {url}"), self.client().goto(url));
    }

    /// The address of the current page.
    pub fn current_url(&self) -> String {
        self.run("read the current URL", self.client().current_url())
            .to_string()
    }

    /// The current page's `<title>`.
    pub fn title(&self) -> String {
        self.run("read the title", self.client().title())
    }

    /// The rendered text of the first element matching `css`.
    pub fn text(&self, css: &str) -> String {
        self.run(format!("read the text of {css:?}"), async {
            self.client().find(Locator::Css(css)).await?.text().await
        })
    }

    /// The rendered text of every element matching `css`, in document order.
    pub fn texts(&self, css: &str) -> Vec<String> {
        self.run(format!("read the texts of {css:?}"), async {
            let mut texts = Vec::new();
            for element in self.client().find_all(Locator::Css(css)).await? {
                texts.push(element.text().await?);
            }
            Ok::<_, fantoccini::error::CmdError>(texts)
        })
    }

    /// The value of attribute `name` of the first element matching `css`.
    pub fn attribute(&self, css: &str, name: &str) -> Option<String> {
        self.run(format!("read attribute {name:?} of {css:?}"), async {
            self.client()
                .find(Locator::Css(css))
                .await?
                .attr(name)
                .await
        })
    }

    /// Whether some element matches `css`.
    pub fn exists(&self, css: &str) -> bool {
        !self
            .run(
                format!("look for {css:?}"),
                self.client().find_all(Locator::Css(css)),
            )
            .is_empty()
    }

    /// Clicks the first element matching `css`. When it is a link or a
    /// submit button, waits (up to 10 seconds) for the next page to load;
    /// use [`Chrome::click_in_place`] for controls that do not navigate.
    pub fn click(&self, css: &str) {
        let old_page = self.page_element();
        let navigates = self.run(format!("click {css:?}"), async {
            let element = self.client().find(Locator::Css(css)).await?;
            let tag = element.tag_name().await?.to_ascii_lowercase();
            let kind = element.attr("type").await?.unwrap_or_default();
            let navigates = match tag.as_str() {
                "a" => element.attr("href").await?.is_some(),
                "button" => kind.is_empty() || kind.eq_ignore_ascii_case("submit"),
                "input" => {
                    kind.eq_ignore_ascii_case("submit") || kind.eq_ignore_ascii_case("image")
                }
                _ => false,
            };
            element.click().await?;
            Ok::<_, fantoccini::error::CmdError>(navigates)
        });
        if navigates {
            self.wait_for_navigation(&old_page, &format!("clicking {css:?}"));
        }
    }

    /// Clicks the first element matching `css` and waits for nothing.
    pub fn click_in_place(&self, css: &str) {
        self.run(format!("click {css:?}"), async {
            self.client().find(Locator::Css(css)).await?.click().await
        });
    }

    /// Where the browser saves downloads (empty at the start).
    pub fn downloads(&self) -> PathBuf {
        self.profile.path().join("downloads")
    }

    /// Polls up to 10 seconds for the finished download `name` and returns
    /// its bytes.
    pub fn downloaded(&self, name: &str) -> Vec<u8> {
        let path = self.downloads().join(name);
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            // Chromium writes `<name>.crdownload` and renames it when done.
            if let Ok(bytes) = fs::read(&path) {
                return bytes;
            }
            if Instant::now() >= deadline {
                let present: Vec<_> = fs::read_dir(self.downloads())
                    .map(|dir| dir.flatten().map(|e| e.file_name()).collect())
                    .unwrap_or_default();
                self.fail(format!(
                    "no download {name:?} after {WAIT_TIMEOUT:?}; present: {present:?}"
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `value` into the element matching `css` (which keeps focus),
    /// without emptying it first: for editors that are not form fields.
    pub fn type_keys(&self, css: &str, value: &str) {
        self.run(format!("type into {css:?}"), async {
            self.client()
                .find(Locator::Css(css))
                .await?
                .send_keys(value)
                .await
        });
    }

    /// Empties the field matching `css` and types `value` into it.
    pub fn fill(&self, css: &str, value: &str) {
        self.run(format!("fill {css:?}"), async {
            let field = self.client().find(Locator::Css(css)).await?;
            field.clear().await?;
            field.send_keys(value).await
        });
    }

    /// Submits the form matching `form_css` by clicking its first submit
    /// button, as a person would, and waits (up to 10 seconds) for the next
    /// page to load.
    pub fn submit(&self, form_css: &str) {
        let old_page = self.page_element();
        self.run(format!("submit the form {form_css:?}"), async {
            self.client()
                .form(Locator::Css(form_css))
                .await?
                .submit()
                .await
        });
        self.wait_for_navigation(&old_page, &format!("submitting {form_css:?}"));
    }

    /// The current page's HTML, as the browser serializes its DOM.
    pub fn source(&self) -> String {
        self.run("read the page source", self.client().source())
    }

    /// Polls up to 10 seconds for an element matching `css`.
    pub fn wait_for(&self, css: &str) {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        while !self.exists(css) {
            if Instant::now() >= deadline {
                self.fail(format!("no element matches {css:?} after {WAIT_TIMEOUT:?}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Goes back one page in the history.
    pub fn back(&self) {
        let old_page = self.page_element();
        self.run("go back", self.client().back());
        self.wait_for_navigation(&old_page, "going back");
    }

    /// Runs `script` (a function body: `return` gives the result) in the page.
    pub fn execute(&self, script: &str) -> Value {
        self.run(
            format!("run the script {script:?}"),
            self.client().execute(script, Vec::new()),
        )
    }

    /// Resizes the window so the page's viewport is `width` by `height` CSS
    /// pixels (the window's size when the page runs no JavaScript).
    pub fn set_viewport(&self, width: u32, height: u32) {
        self.run(
            format!("resize the window to {width}x{height}"),
            self.client().set_window_size(width, height),
        );
        let inner = self.runtime.block_on(async {
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                self.client().execute(
                    "return [window.innerWidth, window.innerHeight];",
                    Vec::new(),
                ),
            )
            .await
        });
        let Ok(Ok(inner)) = inner else { return };
        let (Some(inner_width), Some(inner_height)) = (inner[0].as_u64(), inner[1].as_u64()) else {
            return;
        };
        // The window was just made `width` by `height`: add what its frame
        // takes from the viewport.
        let outer = |wanted: u32, inner: u64| {
            u32::try_from((u64::from(wanted) * 2).saturating_sub(inner)).unwrap_or(wanted)
        };
        if u64::from(width) != inner_width || u64::from(height) != inner_height {
            let (outer_width, outer_height) =
                (outer(width, inner_width), outer(height, inner_height));
            self.run(
                format!("resize the window to {outer_width}x{outer_height}"),
                self.client().set_window_size(outer_width, outer_height),
            );
        }
    }

    /// Saves a PNG of the viewport as
    /// `$CARGO_TARGET_TMPDIR/screenshots/<test>/<nn>-<name>.png`, numbered in
    /// the order taken; returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.run(
            format!("take the screenshot {name:?}"),
            self.client().screenshot(),
        );
        let number = self.screenshot_count.get() + 1;
        self.screenshot_count.set(number);
        fs::create_dir_all(&self.screenshots).unwrap_or_else(|error| {
            panic!("could not create {}: {error}", self.screenshots.display())
        });
        let path = self.screenshots.join(format!("{number:02}-{name}.png"));
        fs::write(&path, png)
            .unwrap_or_else(|error| panic!("could not write {}: {error}", path.display()));
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// The current document's root element, to tell when it is replaced.
    fn page_element(&self) -> Element {
        self.run(
            "find the page's root element",
            self.client().find(Locator::Css("html")),
        )
    }

    /// Waits (up to 10 seconds) until `old_page`, the root element of the
    /// document shown before `action`, is gone and its successor has loaded.
    /// WebDriver's own waiting does not cover a form's POST still awaiting
    /// its answer: meanwhile the old document stays, fully loaded.
    fn wait_for_navigation(&self, old_page: &Element, action: &str) {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let probe = self.runtime.block_on(async {
                tokio::time::timeout(COMMAND_TIMEOUT, old_page.tag_name()).await
            });
            match probe {
                Ok(Err(error)) if error.is_stale_element_reference() => break,
                Ok(Ok(_)) => {}
                // Other errors about the old element (Chromium sometimes
                // reports a detached node or a lost execution context
                // instead of a stale reference) also mean it is gone.
                Ok(Err(_)) => break,
                Err(_) => self.fail(format!(
                    "waiting for the page after {action}: no answer within {COMMAND_TIMEOUT:?}"
                )),
            }
            if Instant::now() >= deadline {
                self.fail(format!(
                    "no new page within {WAIT_TIMEOUT:?} after {action}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
        loop {
            let state = self.run(
                format!("read the page's loading state after {action}"),
                self.client()
                    .execute("return document.readyState;", Vec::new()),
            );
            if state == "complete" {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(format!(
                    "the page after {action} did not finish loading within {WAIT_TIMEOUT:?} (state {state})"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `$NIMBUS_TEST_CHROMEDRIVER`, or `/usr/bin/chromedriver`; panics if missing.
fn chromedriver_path() -> PathBuf {
    let path = std::env::var_os("NIMBUS_TEST_CHROMEDRIVER")
        .filter(|value| !value.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CHROMEDRIVER), PathBuf::from);
    assert!(
        path.exists(),
        "chromedriver not found at {} (NIMBUS_TEST_CHROMEDRIVER or {DEFAULT_CHROMEDRIVER}): \
         run scripts/chromium to install Chromium and chromedriver",
        path.display()
    );
    path
}

/// The end of chromedriver's log, for failure messages.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(40);
    format!(
        "--- chromedriver log ({}) ---\n{}",
        log.display(),
        lines[start..].join("\n")
    )
}

/// At most `limit` bytes of `text` (cut at a character boundary).
fn shorten(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n… ({} more bytes)", &text[..end], text.len() - end)
}
