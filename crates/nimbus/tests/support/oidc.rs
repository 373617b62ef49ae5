//! A real OpenID Connect provider (npm `oidc-provider`, run by `scripts/oidc-provider.mjs`) for the tests, and a browser-less sign-in through its login and consent pages.
//!
//! `scripts/oidc-provider install` installs the package (`scripts/test` runs it once and exports
//! `NIMBUS_TEST_OIDC_DIR`; without that variable the first [`OidcProvider::start`] of a test
//! process runs it). Each provider is a `node` child process on its own port with one client of
//! random id and secret, stopped when dropped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::Duration;

/// How long the provider may take to print `ready`.
const PROVIDER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// How many pages a sign-in may go through before it is considered stuck in a loop
/// (authorize, login page, login, resume, consent page, consent, resume: seven in the usual case).
const SIGN_IN_MAX_STEPS: usize = 20;

/// A running `oidc-provider` with one confidential client, stopped when dropped.
pub struct OidcProvider {
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    child: Child,
    stderr: Arc<Mutex<String>>,
    agent: ureq::Agent,
}

impl OidcProvider {
    /// Starts a provider whose client may redirect to `redirect_uri` only.
    pub fn start(redirect_uri: &str) -> OidcProvider {
        let install_dir = install_dir();
        let client_id = format!("nimbus-test-{}", random_hex(8));
        let client_secret = random_hex(24);
        // The port is free when picked but another process may take it before node binds it;
        // the provider then exits with EADDRINUSE and another port is tried.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = free_port();
            match spawn(&install_dir, port, &client_id, &client_secret, redirect_uri) {
                Ok((child, stderr)) => {
                    return OidcProvider {
                        issuer: format!("http://127.0.0.1:{port}"),
                        client_id,
                        client_secret,
                        child,
                        stderr,
                        agent: browser_agent(),
                    };
                }
                Err(failure) if failure.port_taken && attempts < 5 => continue,
                Err(failure) => panic!("{}", failure.message),
            }
        }
    }

    /// The provider's OpenID Connect discovery document.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// What the provider wrote to its standard error so far.
    pub fn logs(&self) -> String {
        self.stderr
            .lock()
            .map(|text| text.clone())
            .unwrap_or_default()
    }

    /// Signs `login` in (with any password) and consents, as a browser would, starting from a
    /// relying party's `authorization_url`. Returns the URL the provider finally redirects to, on
    /// the request's `redirect_uri` (with `code` and `state`, or with `error`), without requesting
    /// it.
    pub fn sign_in(&self, authorization_url: &str, login: &str) -> String {
        let redirect_uri =
            query_parameter(authorization_url, "redirect_uri").unwrap_or_else(|| {
                panic!("the authorization URL has no redirect_uri parameter: {authorization_url}")
            });
        assert!(
            authorization_url.starts_with(&format!("{}/", self.issuer)),
            "the authorization URL {authorization_url} does not point at this provider ({})",
            self.issuer
        );
        let mut cookies = CookieJar::default();
        let mut next = Step::Get(authorization_url.to_owned());
        let mut trail = Vec::new();
        for _ in 0..SIGN_IN_MAX_STEPS {
            let (method, url, form) = match &next {
                Step::Get(url) => ("GET", url.clone(), None),
                Step::Post(url, form) => ("POST", url.clone(), Some(form.clone())),
            };
            trail.push(format!("{method} {url}"));
            let request_result = match &form {
                None => self
                    .agent
                    .get(&url)
                    .header("Cookie", cookies.header())
                    .call(),
                Some(form) => self
                    .agent
                    .post(&url)
                    .header("Cookie", cookies.header())
                    .send_form(
                        form.iter()
                            .map(|(name, value)| (name.as_str(), value.as_str())),
                    ),
            };
            let response = request_result.unwrap_or_else(|error| {
                panic!(
                    "sign-in request {method} {url} failed: {error}\nprovider stderr:\n{}",
                    self.logs()
                )
            });
            let status = response.status().as_u16();
            for set_cookie in response.headers().get_all("set-cookie") {
                cookies.store(&String::from_utf8_lossy(set_cookie.as_bytes()));
            }
            let location = response
                .headers()
                .get("location")
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
            let body = response
                .into_body()
                .read_to_string()
                .unwrap_or_else(|error| format!("<unreadable body: {error}>"));
            let unexpected = |what: &str| -> ! {
                panic!(
                    "sign-in of {login:?} failed: {what}\nrequests so far:\n  {}\nresponse {status} body:\n{body}\nprovider stderr:\n{}",
                    trail.join("\n  "),
                    self.logs()
                )
            };
            next = match (status, location) {
                (300..=399, Some(location)) => {
                    let target = resolve_location(&url, &location)
                        .unwrap_or_else(|| unexpected(&format!("unusable Location {location:?}")));
                    if is_on_redirect_uri(&target, &redirect_uri) {
                        return target;
                    }
                    if !target.starts_with(&format!("{}/", self.issuer)) {
                        unexpected(&format!(
                            "redirect to {target}, neither the provider nor {redirect_uri}"
                        ));
                    }
                    Step::Get(target)
                }
                (200, _) => {
                    let Some(form) = HtmlForm::parse(&body) else {
                        unexpected("a page without a login or consent form")
                    };
                    let action = resolve_location(&url, &form.action).unwrap_or_else(|| {
                        unexpected(&format!("unusable form action {:?}", form.action))
                    });
                    let fields = match form.prompt.as_str() {
                        "login" => vec![
                            ("prompt".to_owned(), "login".to_owned()),
                            ("login".to_owned(), login.to_owned()),
                            ("password".to_owned(), "any password will do".to_owned()),
                        ],
                        "consent" => vec![("prompt".to_owned(), "consent".to_owned())],
                        other => unexpected(&format!("a form for the unknown prompt {other:?}")),
                    };
                    Step::Post(action, fields)
                }
                _ => unexpected("neither a redirect nor a form"),
            };
        }
        panic!(
            "sign-in of {login:?} did not reach {redirect_uri} within {SIGN_IN_MAX_STEPS} requests:\n  {}\nprovider stderr:\n{}",
            trail.join("\n  "),
            self.logs()
        )
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Step {
    Get(String),
    Post(String, Vec<(String, String)>),
}

/// Why the provider process did not come up.
struct StartFailure {
    message: String,
    port_taken: bool,
}

/// The directory holding the provider's `node_modules`: `NIMBUS_TEST_OIDC_DIR`, or what
/// `scripts/oidc-provider install` prints (run once per test process).
fn install_dir() -> PathBuf {
    static INSTALL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let installed = INSTALL.get_or_init(|| {
        if let Some(dir) = std::env::var_os("NIMBUS_TEST_OIDC_DIR").filter(|dir| !dir.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        let script = workspace_root().join("scripts/oidc-provider");
        let output = Command::new(&script)
            .arg("install")
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("cannot run {}: {error}", script.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let dir = stdout.trim();
        if !output.status.success() || dir.is_empty() {
            return Err(format!(
                "`{} install` failed ({}):\n{}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(PathBuf::from(dir))
    });
    match installed {
        Ok(dir) => dir.clone(),
        Err(message) => panic!("the OpenID Connect provider is not installed: {message}"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

fn spawn(
    install_dir: &Path,
    port: u16,
    client_id: &str,
    client_secret: &str,
    redirect_uri: &str,
) -> Result<(Child, Arc<Mutex<String>>), StartFailure> {
    let script = workspace_root().join("scripts/oidc-provider.mjs");
    let mut child = Command::new("node")
        .arg(&script)
        // The script finds the package through CommonJS resolution, which honours NODE_PATH.
        .env("NODE_PATH", install_dir.join("node_modules"))
        .env("OIDC_PORT", port.to_string())
        .env("OIDC_CLIENT_ID", client_id)
        .env("OIDC_CLIENT_SECRET", client_secret)
        .env("OIDC_REDIRECT_URIS", redirect_uri)
        // The provider exits when this pipe closes, even if the test process is killed.
        .env("OIDC_EXIT_WITH_STDIN", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| StartFailure {
            message: format!("cannot run node {}: {error}", script.display()),
            port_taken: false,
        })?;

    let stderr_text = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr is piped");
    let stderr_sink = Arc::clone(&stderr_text);
    let (stderr_done, stderr_closed) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|read| read > 0) {
            if let Ok(mut text) = stderr_sink.lock() {
                text.push_str(&line);
            }
            line.clear();
        }
        let _ = stderr_done.send(());
    });

    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut announced = false;
        // Keep reading after `ready` so the provider never blocks on a full pipe.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !announced && line.trim() == "ready" {
                announced = true;
                let _ = sender.send(true);
            }
        }
        if !announced {
            let _ = sender.send(false);
        }
    });

    let failure = match receiver.recv_timeout(PROVIDER_START_TIMEOUT) {
        Ok(true) => return Ok((child, stderr_text)),
        Ok(false) => "exited before printing `ready`",
        Err(_) => "did not print `ready` within 30 seconds",
    };
    let _ = child.kill();
    let status = child.wait().map_or_else(
        |error| format!("wait failed: {error}"),
        |status| status.to_string(),
    );
    // Let the reader take in the last lines before they are shown.
    let _ = stderr_closed.recv_timeout(Duration::from_secs(5));
    let stderr = stderr_text
        .lock()
        .map(|text| text.clone())
        .unwrap_or_default();
    Err(StartFailure {
        port_taken: stderr.contains("EADDRINUSE"),
        message: format!(
            "the OpenID Connect provider (node {} on port {port}) {failure} ({status}); its stderr:\n{stderr}",
            script.display()
        ),
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free local port")
        .port()
}

/// `bytes` random bytes from the kernel, hex encoded.
fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0; bytes];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut buffer))
        .expect("read /dev/urandom");
    buffer.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// An agent that behaves like a browser without cookies: redirects and error statuses are
/// returned to the caller, which handles them.
fn browser_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// The cookies of the one origin a sign-in talks to, by name. Paths are ignored: sending the
/// provider's interaction cookies to all of its pages is harmless, and it only ever sets one
/// cookie of each name at a time.
#[derive(Default)]
struct CookieJar {
    cookies: BTreeMap<String, String>,
}

impl CookieJar {
    fn store(&mut self, set_cookie: &str) {
        let mut attributes = set_cookie.split(';');
        let Some((name, value)) = attributes.next().and_then(|pair| pair.split_once('=')) else {
            return;
        };
        let (name, value) = (name.trim(), value.trim());
        let expired = attributes.any(|attribute| {
            let attribute = attribute.trim().to_ascii_lowercase();
            attribute == "max-age=0"
                || attribute.starts_with("max-age=-")
                || attribute.starts_with("expires=") && attribute.contains("1970")
        });
        if expired || value.is_empty() {
            self.cookies.remove(name);
        } else {
            self.cookies.insert(name.to_owned(), value.to_owned());
        }
    }

    fn header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The login or consent form of the provider's development interaction pages.
struct HtmlForm {
    action: String,
    /// The hidden `prompt` field: `login` or `consent`.
    prompt: String,
}

impl HtmlForm {
    fn parse(html: &str) -> Option<HtmlForm> {
        let form_start = html.find("<form")?;
        let form = &html[form_start..];
        let form_tag = &form[..form.find('>')?];
        let action = html_unescape(&attribute_value(form_tag, "action")?);
        let prompt = form
            .split("<input")
            .skip(1)
            .map(|input| &input[..input.find('>').unwrap_or(input.len())])
            .find(|input| attribute_value(input, "name").as_deref() == Some("prompt"))
            .and_then(|input| attribute_value(input, "value"))?;
        Some(HtmlForm {
            action,
            prompt: html_unescape(&prompt),
        })
    }
}

/// The double-quoted value of attribute `name` in the inside of an HTML tag.
fn attribute_value(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let length = tag[start..].find('"')?;
    Some(tag[start..start + length].to_owned())
}

fn html_unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#x2F;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// `location` (absolute or origin-relative) made absolute against the URL it came from.
fn resolve_location(current: &str, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_owned());
    }
    if !location.starts_with('/') || location.starts_with("//") {
        return None;
    }
    let scheme_end = current.find("://")? + 3;
    let origin_end = current[scheme_end..]
        .find('/')
        .map_or(current.len(), |index| scheme_end + index);
    Some(format!("{}{location}", &current[..origin_end]))
}

fn is_on_redirect_uri(url: &str, redirect_uri: &str) -> bool {
    url.strip_prefix(redirect_uri)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('?') || rest.starts_with('#'))
}

/// The decoded value of the first query (or fragment) parameter `name` of `url`.
pub fn query_parameter(url: &str, name: &str) -> Option<String> {
    let query = url.split_once(['?', '#'])?.1;
    query
        .split(['&', '#'])
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| percent_decode(key) == name)
        .map(|(_, value)| percent_decode(value))
}

/// Decodes `application/x-www-form-urlencoded` text (`%XX` escapes and `+` for space).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes
            .get(index + 1..index + 3)
            .filter(|_| bytes[index] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[index], escaped) {
            (_, Some(byte)) => {
                decoded.push(byte);
                index += 3;
                continue;
            }
            (b'+', None) => decoded.push(b' '),
            (byte, None) => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// Encodes `text` for a URL query or a form body: everything but unreserved characters as `%XX`.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
