//! The reference server: a small threaded HTTP/1.1 server on std::net that runs `git http-backend` as a CGI program.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::git::{Git, git_binary, original_path};

/// Longest request line or header line the server accepts.
const MAX_LINE: u64 = 64 * 1024;
/// Most header lines in one request.
const MAX_HEADERS: usize = 200;
/// Largest request body: comfortably above the biggest push the tests make.
const MAX_BODY: usize = 1 << 30;

/// The `git-http-backend` program: preferably the one beside the client git, so both sides are one git version.
pub fn http_backend_binary() -> &'static Path {
    static BACKEND: OnceLock<PathBuf> = OnceLock::new();
    BACKEND.get_or_init(|| {
        let exec_path = Command::new(git_binary())
            .arg("--exec-path")
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
        exec_path
            .map(|directory| directory.join("git-http-backend"))
            .into_iter()
            .chain([PathBuf::from("/usr/lib/git-core/git-http-backend")])
            .find(|candidate| candidate.is_file())
            .expect("git-http-backend must be installed (Debian's git package ships it)")
    })
}

/// One parsed HTTP request with its body fully read (and de-chunked).
#[derive(Debug)]
pub struct HttpRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The request target without its query string.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(path, _)| path)
    }

    /// The query string, without the `?`.
    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, query)| query)
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Reads one line without its line ending; fails on end of input and on lines longer than `MAX_LINE`.
fn read_line(reader: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = Vec::new();
    let read = reader
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)?;
    if read == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(invalid("line too long or truncated"));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| invalid("line is not UTF-8"))
}

/// Reads a request: request line, headers and the body (by `Content-Length` or chunked transfer coding).
/// Answers `Expect: 100-continue` before reading the body.
pub fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<HttpRequest> {
    let request_line = read_line(reader)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(_version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("malformed request line {request_line:?}")));
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(invalid("too many headers"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("malformed header {line:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut request = HttpRequest {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body: Vec::new(),
    };
    if request
        .header("Expect")
        .is_some_and(|value| value.eq_ignore_ascii_case("100-continue"))
    {
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let chunked = request
        .header("Transfer-Encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
    if chunked {
        request.body = read_chunked_body(reader)?;
    } else if let Some(length) = request.header("Content-Length") {
        let length: usize = length
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {length:?}")))?;
        if length > MAX_BODY {
            return Err(invalid(format!("body of {length} bytes is too large")));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        request.body = body;
    }
    Ok(request)
}

fn read_chunked_body(reader: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(reader)?;
        let size_text = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
        if size == 0 {
            // Trailer section, ended by an empty line.
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        if body.len().saturating_add(size) > MAX_BODY {
            return Err(invalid("chunked body is too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        if !read_line(reader)?.is_empty() {
            return Err(invalid("chunk not followed by CRLF"));
        }
    }
}

/// Writes a complete response with a body and closes the exchange.
pub fn write_response(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// How to run `git http-backend` for one request.
pub struct CgiSettings<'a> {
    /// `GIT_PROJECT_ROOT`: the directory holding the bare repositories.
    pub project_root: &'a Path,
    /// `PATH_INFO`: the repository path and the git endpoint, e.g. `/demo.git/info/refs`.
    pub path_info: &'a str,
    /// `HOME` of the CGI process, so no user configuration leaks in.
    pub home: &'a Path,
    /// Where the CGI's standard error goes.
    pub log: &'a Path,
}

/// Runs `git http-backend` for `request` and streams its answer to `stream` as an HTTP/1.1 response.
pub fn run_http_backend(
    stream: &mut TcpStream,
    request: HttpRequest,
    settings: &CgiSettings<'_>,
) -> io::Result<()> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(settings.log)?;
    let mut command = Command::new(http_backend_binary());
    command
        .env_clear()
        .env("PATH", original_path())
        .env("HOME", settings.home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", settings.project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_HTTP_MAX_REQUEST_BUFFER", "1G")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", &request.method)
        .env("PATH_INFO", settings.path_info)
        .env("QUERY_STRING", request.query())
        .env("CONTENT_LENGTH", request.body.len().to_string())
        .env("REMOTE_USER", "test")
        .env("REMOTE_ADDR", "127.0.0.1");
    for (header, variable) in [
        ("Content-Type", "CONTENT_TYPE"),
        ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
        ("Git-Protocol", "HTTP_GIT_PROTOCOL"),
    ] {
        if let Some(value) = request.header(header) {
            command.env(variable, value);
        }
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let mut child = command.spawn()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let body = request.body;
    // Feeding the body from its own thread lets the CGI answer while it still reads.
    let feeder = thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut output = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut status = String::from("200 OK");
    let mut headers = String::new();
    loop {
        let mut line = Vec::new();
        if output
            .by_ref()
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)?
            == 0
        {
            break;
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("Status") => {
                status = value.trim().to_owned();
            }
            Some(_) => {
                headers.push_str(line);
                headers.push_str("\r\n");
            }
            None => return Err(invalid(format!("malformed CGI header {line:?}"))),
        }
    }
    // No Content-Length: the body ends when the connection closes, so big packs stream through.
    let head = format!("HTTP/1.1 {status}\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    io::copy(&mut output, stream)?;
    stream.flush()?;
    let _ = feeder.join();
    child.wait()?;
    Ok(())
}

/// What the reference server saw of one request, so tests can check git used the transfer they meant to test.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub method: String,
    pub target: String,
    /// `Content-Encoding: gzip` was set.
    pub gzip: bool,
    /// The body came with chunked transfer coding.
    pub chunked: bool,
    /// The body's length after de-chunking (still compressed if `gzip`).
    pub body_length: usize,
}

/// Every request the reference server answered, in order.
pub type RequestLog = Arc<Mutex<Vec<RequestRecord>>>;

/// `git http-backend` behind a local HTTP server: serves every bare repository under its own temporary root.
pub struct HttpBackend {
    root: tempfile::TempDir,
    address: SocketAddr,
    shutdown: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    admin: Git,
    requests: RequestLog,
}

impl HttpBackend {
    /// Listens on `127.0.0.1:0` and serves until dropped.
    pub fn start() -> Self {
        let root = tempfile::Builder::new()
            .prefix("nimbus-http-backend-")
            .tempdir()
            .expect("create the http-backend root");
        for directory in ["repos", "home"] {
            std::fs::create_dir(root.path().join(directory))
                .expect("create http-backend directories");
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the http-backend listener");
        let address = listener.local_addr().expect("listener has an address");
        let shutdown = Arc::new(AtomicBool::new(false));
        let project_root = root.path().join("repos");
        let home = root.path().join("home");
        let log = root.path().join("http-backend.log");
        let requests = RequestLog::default();
        let acceptor = {
            let shutdown = Arc::clone(&shutdown);
            let requests = Arc::clone(&requests);
            thread::spawn(move || {
                for connection in listener.incoming() {
                    if shutdown.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(connection) = connection else { continue };
                    let (project_root, home, log) =
                        (project_root.clone(), home.clone(), log.clone());
                    let requests = Arc::clone(&requests);
                    thread::spawn(move || {
                        let settings = CgiSettings {
                            project_root: &project_root,
                            path_info: "",
                            home: &home,
                            log: &log,
                        };
                        if let Err(error) = serve_connection(connection, &settings, &requests) {
                            append_log(&log, &format!("http-backend harness: {error}\n"));
                        }
                    });
                }
            })
        };
        Self {
            root,
            address,
            shutdown,
            acceptor: Some(acceptor),
            admin: Git::new(0),
            requests,
        }
    }

    /// The requests answered so far.
    pub fn requests(&self) -> RequestLog {
        Arc::clone(&self.requests)
    }

    /// Creates the bare repository `<name>.git` with HEAD on `main`, pushes, filters and push options enabled.
    pub fn create_repo(&self, name: &str) -> PathBuf {
        let path = self.repo_path(name);
        let path_text = path.to_str().expect("temporary paths are UTF-8");
        self.admin.run(
            self.admin.home(),
            &["init", "-q", "--bare", "--initial-branch=main", path_text],
        );
        for (key, value) in [
            ("http.receivepack", "true"),
            ("uploadpack.allowFilter", "true"),
            ("uploadpack.allowAnySHA1InWant", "true"),
            ("receive.advertisePushOptions", "true"),
        ] {
            self.admin.run(&path, &["config", key, value]);
        }
        path
    }

    pub fn repo_path(&self, name: &str) -> PathBuf {
        self.root.path().join("repos").join(format!("{name}.git"))
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The clone URL of `name`.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}.git", self.base_url())
    }

    /// The push URL of `name`: the same as the clone URL, as every request runs as user `test`.
    pub fn push_url(&self, name: &str) -> String {
        self.url(name)
    }

    /// What `git http-backend` wrote to standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("http-backend.log")).unwrap_or_default()
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn serve_connection(
    connection: TcpStream,
    settings: &CgiSettings<'_>,
    requests: &RequestLog,
) -> io::Result<()> {
    connection.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut writer = connection.try_clone()?;
    let mut reader = BufReader::new(connection);
    let request = match read_request(&mut reader) {
        Ok(request) => request,
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
        Err(error) => {
            let _ = write_response(
                &mut writer,
                400,
                "Bad Request",
                &[],
                error.to_string().as_bytes(),
            );
            return Err(error);
        }
    };
    let record = RequestRecord {
        method: request.method.clone(),
        target: request.target.clone(),
        gzip: request
            .header("Content-Encoding")
            .is_some_and(|value| value.eq_ignore_ascii_case("gzip")),
        chunked: request
            .header("Transfer-Encoding")
            .is_some_and(|value| value.to_ascii_lowercase().contains("chunked")),
        body_length: request.body.len(),
    };
    if let Ok(mut requests) = requests.lock() {
        requests.push(record);
    }
    let path_info = request.path().to_owned();
    let settings = CgiSettings {
        path_info: &path_info,
        ..*settings
    };
    run_http_backend(&mut writer, request, &settings)
}

fn append_log(log: &Path, message: &str) {
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = file.write_all(message.as_bytes());
    }
}
