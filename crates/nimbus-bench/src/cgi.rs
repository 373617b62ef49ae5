//! The reference server: a small streaming HTTP/1.1 server that runs `git http-backend` as a CGI program.
//!
//! One thread per connection, keep-alive, request bodies (plain or chunked) streamed into the
//! CGI program's stdin on a second thread while its stdout is streamed back to the client as a
//! chunked response. Nothing is buffered whole, so pushes and clones of any size run in bounded
//! memory. Every child is waited for, so its CPU time shows up in this process's
//! `cutime`/`cstime`, which is how the benchmark measures the cost of the git processes.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};

/// Longest request line, header line, chunk-size line or CGI header line accepted, in bytes.
const MAX_LINE: usize = 64 * 1024;
/// Most header lines accepted in one request, one chunked trailer or one CGI header block.
const MAX_HEADERS: usize = 200;
/// Most empty lines tolerated before a request line (RFC 9112 §2.2 asks servers to skip some).
const MAX_LEADING_EMPTY_LINES: usize = 8;
/// Size of the buffers used to copy bodies; each read of the CGI output becomes one chunk.
const COPY_BUFFER: usize = 64 * 1024;
/// How long a connection may sit idle (or stall a body) before it is dropped.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(300);
/// Where Debian installs the backend, used when `git --exec-path` does not lead to one.
const DEBIAN_HTTP_BACKEND: &str = "/usr/lib/git-core/git-http-backend";

/// Finds the `git http-backend` program: `$(git --exec-path)/git-http-backend`, else Debian's path.
pub fn http_backend_binary() -> anyhow::Result<PathBuf> {
    let mut tried = Vec::new();
    match Command::new("git")
        .arg("--exec-path")
        .stderr(Stdio::null())
        .output()
    {
        Ok(output) if output.status.success() => {
            let exec_path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if !exec_path.is_empty() {
                let candidate = Path::new(&exec_path).join("git-http-backend");
                if candidate.is_file() {
                    return Ok(candidate);
                }
                tried.push(candidate.display().to_string());
            }
        }
        Ok(output) => tried.push(format!("`git --exec-path` ({})", output.status)),
        Err(err) => tried.push(format!("`git --exec-path` ({err})")),
    }
    let fallback = PathBuf::from(DEBIAN_HTTP_BACKEND);
    if fallback.is_file() {
        return Ok(fallback);
    }
    tried.push(DEBIAN_HTTP_BACKEND.to_owned());
    Err(anyhow!(
        "cannot find git-http-backend (tried {}); install git (Debian: the `git` package)",
        tried.join(", ")
    ))
}

/// Serves `git http-backend` for the bare repositories under `root` on `listener` until the process is killed.
///
/// Every repository is exported and pushes are allowed (`REMOTE_USER=bench`). A failing
/// connection is logged to stderr and closed; it never stops the server.
pub fn serve(listener: TcpListener, root: &Path, backend: &Path) -> anyhow::Result<()> {
    let root = root
        .canonicalize()
        .with_context(|| format!("repository root {}", root.display()))?;
    anyhow::ensure!(
        backend.is_file(),
        "git-http-backend not found at {}",
        backend.display()
    );
    let config = Arc::new(Config {
        root,
        backend: backend.to_owned(),
    });
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                eprintln!("cgi server: accept failed: {err}");
                // Out of file descriptors and the like: do not spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let config = Arc::clone(&config);
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "unknown peer".to_owned(), |addr| addr.to_string());
        let spawned = std::thread::Builder::new()
            .name("cgi-connection".to_owned())
            .spawn(move || {
                if let Err(err) = handle_connection(stream, &config) {
                    eprintln!("cgi server: {peer}: {err:#}");
                }
            });
        if let Err(err) = spawned {
            eprintln!("cgi server: cannot start a connection thread: {err}");
        }
    }
    Ok(())
}

/// What every connection needs to run the backend.
struct Config {
    root: PathBuf,
    backend: PathBuf,
}

/// Runs requests on one connection until the client closes it, asks to, or something fails.
fn handle_connection(stream: TcpStream, config: &Config) -> anyhow::Result<()> {
    // Each chunk goes out in one write; Nagle would only add delayed-ACK stalls.
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    stream.set_read_timeout(Some(SOCKET_TIMEOUT))?;
    stream.set_write_timeout(Some(SOCKET_TIMEOUT))?;
    let mut writer = stream.try_clone().context("cloning the socket")?;
    let mut reader = BufReader::with_capacity(COPY_BUFFER, stream);
    loop {
        let request = match read_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(HeadError::Io(err))
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(()); // An idle keep-alive connection timed out.
            }
            Err(HeadError::Io(err)) => return Err(err).context("reading a request"),
            Err(err) => {
                // Best effort: the connection is closed either way.
                let _ = write_plain_response(&mut writer, "400 Bad Request", &err.to_string());
                return Err(anyhow!("bad request: {err}"));
            }
        };
        if !serve_request(&mut reader, &mut writer, &request, config)? {
            return Ok(());
        }
    }
}

/// Runs the backend for one request. Returns whether the connection may serve another request.
fn serve_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    request: &Request,
    config: &Config,
) -> anyhow::Result<bool> {
    let mut command = Command::new(&config.backend);
    command.env_clear();
    for inherited in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(inherited) {
            command.env(inherited, value);
        }
    }
    command
        .env("GIT_PROJECT_ROOT", &config.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REMOTE_USER", "bench")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", &request.method)
        .env("PATH_INFO", &request.path_info)
        .env("QUERY_STRING", &request.query);
    if let BodyKind::Length(length) = request.body {
        command.env("CONTENT_LENGTH", length.to_string());
    }
    for (header, variable) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(value) = request.header(header) {
            command.env(variable, value);
        }
    }
    let has_body = request.body != BodyKind::None;
    command
        .stdin(if has_body {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            let _ = write_plain_response(writer, "500 Internal Server Error", "cannot run git");
            return Err(err).with_context(|| format!("running {}", config.backend.display()));
        }
    };
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("stdout was set to piped");

    let (response, body_copy) = std::thread::scope(|scope| {
        let continue_sent = if has_body && request.expect_continue {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        } else {
            Ok(())
        };
        let body = request.body;
        let copier = scope.spawn(move || match stdin {
            Some(stdin) => copy_body(reader, body, stdin),
            None => Ok(0),
        });
        let response = continue_sent
            .map_err(ResponseError::Client)
            .and_then(|()| send_response(writer, stdout, request));
        if response.is_err() {
            // Unblock the body copier (it may wait on the client) and the child (it may wait
            // on a full stdout pipe); both are cleaned up below.
            let _ = writer.shutdown(Shutdown::Both);
            let _ = child.kill();
        }
        let body_copy = copier
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the body copy thread panicked")));
        (response, body_copy)
    });
    let status = child.wait().context("waiting for git-http-backend")?;
    response.context("sending the response")?;
    body_copy.context("copying the request body")?;
    if !status.success() {
        // The backend already answered (usually with an error status); nothing to add.
        eprintln!(
            "cgi server: git-http-backend {status} for {}",
            request.path_info
        );
    }
    Ok(request.keep_alive)
}

/// Why a response could not be completed.
#[derive(Debug)]
enum ResponseError {
    /// The CGI program's output was not a valid CGI response (a 502 was sent).
    Backend(HeadError),
    /// Reading from the CGI program failed.
    BackendIo(io::Error),
    /// Writing to the client failed.
    Client(io::Error),
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Backend(err) => write!(f, "invalid CGI response from git-http-backend: {err}"),
            Self::BackendIo(err) => write!(f, "reading git-http-backend output: {err}"),
            Self::Client(err) => write!(f, "writing to the client: {err}"),
        }
    }
}

impl std::error::Error for ResponseError {}

/// Reads the CGI response from `stdout` and streams it to the client as an HTTP response.
fn send_response(
    writer: &mut TcpStream,
    stdout: impl Read,
    request: &Request,
) -> Result<(), ResponseError> {
    let mut cgi = BufReader::with_capacity(COPY_BUFFER, stdout);
    let head = match read_cgi_head(&mut cgi) {
        Ok(head) => head,
        Err(err) => {
            let _ = write_plain_response(writer, "502 Bad Gateway", "invalid CGI response");
            return Err(ResponseError::Backend(err));
        }
    };
    let status_code = head.status.get(..3).unwrap_or_default();
    let has_body = request.method != "HEAD" && !matches!(status_code, "204" | "304");
    // HTTP/1.0 clients cannot take chunked bodies; they get the body delimited by the close.
    let chunked = has_body && request.http11;
    let mut out = format!("HTTP/1.1 {}\r\n", head.status);
    for (name, value) in &head.headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    if chunked {
        out.push_str("Transfer-Encoding: chunked\r\n");
    }
    if !request.keep_alive {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    writer
        .write_all(out.as_bytes())
        .map_err(ResponseError::Client)?;
    if !has_body {
        // Still drain the output so the child never blocks on a full pipe.
        return io::copy(&mut cgi, &mut io::sink())
            .map(drop)
            .map_err(ResponseError::BackendIo);
    }
    if chunked {
        write_chunked(&mut cgi, writer)
    } else {
        copy_plain(&mut cgi, writer)
    }
}

/// Copies `source` to `out` as an HTTP/1.1 chunked body, one chunk per read, ending with the last chunk.
fn write_chunked(source: &mut impl Read, out: &mut impl Write) -> Result<(), ResponseError> {
    // Room before the data for the chunk-size line and after it for the CRLF, so each chunk
    // goes to the socket in a single write.
    const PREFIX: usize = 16;
    let mut buffer = vec![0_u8; PREFIX + COPY_BUFFER + 2];
    loop {
        let length = match source.read(&mut buffer[PREFIX..PREFIX + COPY_BUFFER]) {
            Ok(0) => break,
            Ok(length) => length,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(ResponseError::BackendIo(err)),
        };
        let size_line = format!("{length:x}\r\n");
        let start = PREFIX - size_line.len();
        buffer[start..PREFIX].copy_from_slice(size_line.as_bytes());
        buffer[PREFIX + length..PREFIX + length + 2].copy_from_slice(b"\r\n");
        out.write_all(&buffer[start..PREFIX + length + 2])
            .map_err(ResponseError::Client)?;
    }
    out.write_all(b"0\r\n\r\n").map_err(ResponseError::Client)?;
    out.flush().map_err(ResponseError::Client)
}

/// Copies `source` to `out` unchanged.
fn copy_plain(source: &mut impl Read, out: &mut impl Write) -> Result<(), ResponseError> {
    let mut buffer = vec![0_u8; COPY_BUFFER];
    loop {
        let length = match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(length) => length,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(ResponseError::BackendIo(err)),
        };
        out.write_all(&buffer[..length])
            .map_err(ResponseError::Client)?;
    }
    out.flush().map_err(ResponseError::Client)
}

/// Sends a small complete response with a text body and closes the conversation.
fn write_plain_response(writer: &mut impl Write, status: &str, message: &str) -> io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{message}\n",
        message.len() + 1
    );
    writer.write_all(response.as_bytes())?;
    writer.flush()
}

/// Copies a request body of the given kind from `reader` into `sink` (the child's stdin).
///
/// If the child stops reading (a broken pipe), the rest of the body is still read and
/// discarded, so the connection stays in step for the next request. Returns the bytes read.
fn copy_body(reader: &mut impl BufRead, kind: BodyKind, sink: impl Write) -> io::Result<u64> {
    let mut sink = ForgivingSink { inner: Some(sink) };
    let copied = match kind {
        BodyKind::None => 0,
        BodyKind::Length(length) => {
            let copied = copy_all(&mut reader.take(length), &mut sink)?;
            if copied != length {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("request body ended after {copied} of {length} bytes"),
                ));
            }
            copied
        }
        BodyKind::Chunked => copy_all(&mut ChunkedReader::new(reader), &mut sink)?,
    };
    sink.flush()?;
    // Dropping the sink closes the child's stdin, which is its end of input.
    Ok(copied)
}

/// `io::copy` with a larger buffer, to move request bodies in 64 KiB steps.
fn copy_all(source: &mut impl Read, sink: &mut impl Write) -> io::Result<u64> {
    let mut buffer = vec![0_u8; COPY_BUFFER];
    let mut total = 0_u64;
    loop {
        let length = match source.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(length) => length,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        sink.write_all(&buffer[..length])?;
        total += length as u64;
    }
}

/// A writer that turns into a sink once its inner writer reports a broken pipe.
struct ForgivingSink<W> {
    inner: Option<W>,
}

impl<W: Write> Write for ForgivingSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(inner) = &mut self.inner else {
            return Ok(buf.len());
        };
        match inner.write(buf) {
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
                self.inner = None;
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let Some(inner) = &mut self.inner else {
            return Ok(());
        };
        match inner.flush() {
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
                self.inner = None;
                Ok(())
            }
            other => other,
        }
    }
}

/// Why a request head, a chunked body or a CGI header block could not be read.
#[derive(Debug)]
enum HeadError {
    /// The transport failed.
    Io(io::Error),
    /// The input ended in the middle of a line or a header block.
    UnexpectedEof,
    /// A line was longer than [`MAX_LINE`].
    LineTooLong,
    /// More than [`MAX_HEADERS`] header lines.
    TooManyHeaders,
    /// The input broke the syntax; the text says which part.
    Malformed(&'static str),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(err) => write!(f, "{err}"),
            Self::UnexpectedEof => f.write_str("unexpected end of input"),
            Self::LineTooLong => write!(f, "line longer than {MAX_LINE} bytes"),
            Self::TooManyHeaders => write!(f, "more than {MAX_HEADERS} header lines"),
            Self::Malformed(what) => write!(f, "malformed {what}"),
        }
    }
}

impl std::error::Error for HeadError {}

impl From<HeadError> for io::Error {
    fn from(err: HeadError) -> Self {
        match err {
            HeadError::Io(err) => err,
            HeadError::UnexpectedEof => io::Error::new(io::ErrorKind::UnexpectedEof, err),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// Reads one line of at most `max` bytes (not counting its `\n` or `\r\n`, which are removed).
///
/// Returns `None` if the input ends before the line starts.
fn read_line_bounded(reader: &mut impl BufRead, max: usize) -> Result<Option<Vec<u8>>, HeadError> {
    let mut line = Vec::new();
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(HeadError::Io(err)),
        };
        if available.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(HeadError::UnexpectedEof)
            };
        }
        let (taken, complete) = match available.iter().position(|&byte| byte == b'\n') {
            Some(newline) => (newline + 1, true),
            None => (available.len(), false),
        };
        // `+ 2` leaves room for the line ending, which is not part of the limit.
        if line.len() + taken > max + 2 {
            return Err(HeadError::LineTooLong);
        }
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken);
        if complete {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > max {
                return Err(HeadError::LineTooLong);
            }
            return Ok(Some(line));
        }
    }
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    /// No body.
    None,
    /// Exactly this many bytes follow.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
struct Request {
    method: String,
    /// The percent-decoded path, without the query.
    path_info: String,
    /// The raw query, without the `?`.
    query: String,
    http11: bool,
    /// Names lower-cased, in the order received.
    headers: Vec<(String, String)>,
    body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
}

impl Request {
    /// The first value of the header `name` (lower case).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Reads a request line and its headers. Returns `None` if the client closed the connection first.
fn read_request(reader: &mut impl BufRead) -> Result<Option<Request>, HeadError> {
    let mut request_line = None;
    for _ in 0..=MAX_LEADING_EMPTY_LINES {
        match read_line_bounded(reader, MAX_LINE)? {
            None => return Ok(None),
            Some(line) if line.is_empty() => continue,
            Some(line) => {
                request_line = Some(line);
                break;
            }
        }
    }
    let request_line = request_line.ok_or(HeadError::Malformed("request line"))?;
    let request_line =
        std::str::from_utf8(&request_line).map_err(|_| HeadError::Malformed("request line"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed("request line"));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(HeadError::Malformed("method"));
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(HeadError::Malformed("HTTP version")),
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') {
        return Err(HeadError::Malformed("request target"));
    }
    let path_info = percent_decode(path).ok_or(HeadError::Malformed("request path"))?;

    let headers = read_headers(reader)?;
    let mut request = Request {
        method: method.to_owned(),
        path_info,
        query: query.to_owned(),
        http11,
        headers,
        body: BodyKind::None,
        keep_alive: http11,
        expect_continue: false,
    };
    request.body = body_kind(&request.headers)?;
    for (name, value) in &request.headers {
        match name.as_str() {
            "connection" if has_token(value, "close") => request.keep_alive = false,
            "expect" if http11 && value.eq_ignore_ascii_case("100-continue") => {
                request.expect_continue = true;
            }
            _ => {}
        }
    }
    Ok(Some(request))
}

/// Reads `Name: value` lines up to the empty line; names are lower-cased.
fn read_headers(reader: &mut impl BufRead) -> Result<Vec<(String, String)>, HeadError> {
    let mut headers = Vec::new();
    loop {
        let line = read_line_bounded(reader, MAX_LINE)?.ok_or(HeadError::UnexpectedEof)?;
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() == MAX_HEADERS {
            return Err(HeadError::TooManyHeaders);
        }
        headers.push(parse_header_line(&line)?);
    }
}

/// Splits `Name: value`, checking the name is a token and the value has no control characters.
fn parse_header_line(line: &[u8]) -> Result<(String, String), HeadError> {
    let colon = line
        .iter()
        .position(|&byte| byte == b':')
        .ok_or(HeadError::Malformed("header line"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    // This also rejects obsolete line folding (a line starting with whitespace).
    if name.is_empty() || !name.iter().copied().all(is_token_byte) {
        return Err(HeadError::Malformed("header name"));
    }
    let value = value.trim_ascii();
    if value
        .iter()
        .any(|&byte| (byte < 0x20 && byte != b'\t') || byte == 0x7f)
    {
        return Err(HeadError::Malformed("header value"));
    }
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    Ok((name, String::from_utf8_lossy(value).into_owned()))
}

/// Works out the body framing from the headers (RFC 9112 §6.3), refusing ambiguous framing.
fn body_kind(headers: &[(String, String)]) -> Result<BodyKind, HeadError> {
    let mut transfer_encoding = None;
    let mut content_length = None;
    for (name, value) in headers {
        match name.as_str() {
            "transfer-encoding" => {
                if transfer_encoding.is_some() || !value.eq_ignore_ascii_case("chunked") {
                    return Err(HeadError::Malformed(
                        "Transfer-Encoding (only chunked is supported)",
                    ));
                }
                transfer_encoding = Some(());
            }
            "content-length" => {
                let length = parse_decimal(value).ok_or(HeadError::Malformed("Content-Length"))?;
                if content_length.is_some_and(|previous| previous != length) {
                    return Err(HeadError::Malformed("Content-Length (conflicting values)"));
                }
                content_length = Some(length);
            }
            _ => {}
        }
    }
    match (transfer_encoding, content_length) {
        (Some(()), Some(_)) => Err(HeadError::Malformed(
            "framing (both Transfer-Encoding and Content-Length)",
        )),
        (Some(()), None) => Ok(BodyKind::Chunked),
        (None, Some(0) | None) => Ok(BodyKind::None),
        (None, Some(length)) => Ok(BodyKind::Length(length)),
    }
}

/// Whether the comma-separated list `value` contains `token` (ignoring case).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// An HTTP token character (RFC 9110 §5.6.2).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Parses a non-empty string of ASCII digits, refusing overflow.
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Decodes `%XX` escapes. `None` for a bad escape, or a result that is not UTF-8 or holds a NUL
/// (it goes into an environment variable).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let high = hex_value(*bytes.get(index + 1)?)?;
            let low = hex_value(*bytes.get(index + 2)?)?;
            decoded.push(high << 4 | low);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    if decoded.contains(&0) {
        return None;
    }
    String::from_utf8(decoded).ok()
}

/// The value of one hexadecimal digit.
fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

/// Decodes an HTTP/1.1 chunked body on the fly (RFC 9112 §7.1); trailers are read and dropped.
struct ChunkedReader<R> {
    inner: R,
    state: ChunkState,
}

/// Where a [`ChunkedReader`] is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk, having read this many trailer lines.
    Trailers(usize),
    /// The body is complete.
    Done,
}

impl<R: BufRead> ChunkedReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            state: ChunkState::Size,
        }
    }

    /// Reads a line that must be there: the body cannot end at this point.
    fn required_line(&mut self) -> io::Result<Vec<u8>> {
        Ok(read_line_bounded(&mut self.inner, MAX_LINE)?.ok_or(HeadError::UnexpectedEof)?)
    }
}

impl<R: BufRead> Read for ChunkedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let line = self.required_line()?;
                    let size = parse_chunk_size(&line)?;
                    self.state = if size == 0 {
                        ChunkState::Trailers(0)
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(0);
                    }
                    let available = self.inner.fill_buf()?;
                    if available.is_empty() {
                        return Err(HeadError::UnexpectedEof.into());
                    }
                    let length = available
                        .len()
                        .min(buf.len())
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    buf[..length].copy_from_slice(&available[..length]);
                    self.inner.consume(length);
                    let remaining = remaining - length as u64;
                    self.state = if remaining == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(remaining)
                    };
                    return Ok(length);
                }
                ChunkState::DataEnd => {
                    if !self.required_line()?.is_empty() {
                        return Err(
                            HeadError::Malformed("chunk (data longer than its size)").into()
                        );
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers(count) => {
                    if self.required_line()?.is_empty() {
                        self.state = ChunkState::Done;
                    } else if count == MAX_HEADERS {
                        return Err(HeadError::TooManyHeaders.into());
                    } else {
                        self.state = ChunkState::Trailers(count + 1);
                    }
                }
                ChunkState::Done => return Ok(0),
            }
        }
    }
}

/// Parses a chunk-size line: hex digits, then optional whitespace and `;extensions`.
fn parse_chunk_size(line: &[u8]) -> Result<u64, HeadError> {
    let digits_end = line
        .iter()
        .position(|byte| !byte.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = line[digits_end..].trim_ascii_start();
    if digits_end == 0 || !(rest.is_empty() || rest.starts_with(b";")) {
        return Err(HeadError::Malformed("chunk size"));
    }
    line[..digits_end].iter().try_fold(0_u64, |size, &digit| {
        size.checked_mul(16)
            .and_then(|size| size.checked_add(u64::from(hex_value(digit)?)))
            .ok_or(HeadError::Malformed("chunk size (too large)"))
    })
}

/// The header block of a CGI response (RFC 3875 §6).
#[derive(Debug, PartialEq, Eq)]
struct CgiHead {
    /// Code and reason, e.g. `200 OK`.
    status: String,
    /// Headers to pass on, without `Status` and the framing headers this server sets itself.
    headers: Vec<(String, String)>,
}

/// Reads the CGI header block up to its empty line; lines may end in `\n` or `\r\n`.
fn read_cgi_head(reader: &mut impl BufRead) -> Result<CgiHead, HeadError> {
    let mut status = None;
    let mut has_location = false;
    let mut headers = Vec::new();
    for _ in 0..=MAX_HEADERS {
        let line = read_line_bounded(reader, MAX_LINE)?.ok_or(HeadError::UnexpectedEof)?;
        if line.is_empty() {
            let status = status.unwrap_or_else(|| {
                // RFC 3875 §6.2.3: a Location without Status is a redirect.
                if has_location { "302 Found" } else { "200 OK" }.to_owned()
            });
            return Ok(CgiHead { status, headers });
        }
        let (name, value) = parse_header_line(&line)?;
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "status" => status = Some(parse_cgi_status(&value)?),
            // Framing is this server's business: the body is re-sent chunked.
            "content-length" | "transfer-encoding" | "connection" | "keep-alive" => {}
            _ => {
                has_location |= lower == "location";
                // Keep the CGI program's spelling of the name.
                let colon = line.iter().position(|&byte| byte == b':').unwrap_or(0);
                let original = String::from_utf8_lossy(&line[..colon]).into_owned();
                headers.push((original, value));
            }
        }
    }
    Err(HeadError::TooManyHeaders)
}

/// Checks a CGI `Status` value: three digits (100–599), then an optional reason.
fn parse_cgi_status(value: &str) -> Result<String, HeadError> {
    let (code, reason) = value.split_once(' ').unwrap_or((value, ""));
    let valid = code.len() == 3
        && code.bytes().all(|byte| byte.is_ascii_digit())
        && (b'1'..=b'5').contains(&code.as_bytes()[0]);
    if !valid {
        return Err(HeadError::Malformed("CGI Status"));
    }
    // The status line needs the space even when the reason is empty.
    Ok(format!("{code} {}", reason.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn decode_chunked(input: &[u8]) -> io::Result<Vec<u8>> {
        let mut decoded = Vec::new();
        ChunkedReader::new(Cursor::new(input)).read_to_end(&mut decoded)?;
        Ok(decoded)
    }

    #[test]
    fn chunked_body_is_decoded_and_stops_after_the_last_chunk() {
        let input = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let mut cursor = Cursor::new(&input[..]);
        let mut decoded = Vec::new();
        ChunkedReader::new(&mut cursor)
            .read_to_end(&mut decoded)
            .expect("valid chunked body");
        assert_eq!(decoded, b"hello, world");
        // The next request on the connection is left unread.
        assert_eq!(&input[cursor.position() as usize..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn chunked_trailers_and_bare_newlines_are_accepted() {
        let input = b"3\nabc\nA \r\n0123456789\r\n0\r\nX-Trailer: yes\r\n\r\n";
        assert_eq!(decode_chunked(input).expect("valid"), b"abc0123456789");
    }

    #[test]
    fn chunked_body_read_one_byte_at_a_time() {
        let input = b"4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n";
        let mut reader = ChunkedReader::new(Cursor::new(&input[..]));
        let mut decoded = Vec::new();
        let mut byte = [0_u8; 1];
        while reader.read(&mut byte).expect("valid") == 1 {
            decoded.push(byte[0]);
        }
        assert_eq!(decoded, b"wikipedia");
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for input in [
            &b"zz\r\nabc\r\n0\r\n\r\n"[..], // not hex
            b"\r\n",                        // empty size
            b"3\r\nabcd\r\n0\r\n\r\n",      // data longer than the size
            b"5\r\nabc",                    // truncated data
            b"3\r\nabc\r\n",                // no last chunk
            b"0\r\n",                       // no end of trailers
            b"10000000000000000\r\n",       // overflows u64
            b"3 x\r\nabc\r\n0\r\n\r\n",     // junk after size
        ] {
            assert!(
                decode_chunked(input).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn chunked_size_line_is_bounded() {
        let mut input = vec![b'0'; MAX_LINE + 10];
        input.extend_from_slice(b"1\r\nx\r\n0\r\n\r\n");
        let err = decode_chunked(&input).expect_err("line too long");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn write_chunked_round_trips_through_the_decoder() {
        let data: Vec<u8> = (0..200_000_u32).map(|i| (i % 251) as u8).collect();
        let mut encoded = Vec::new();
        write_chunked(&mut Cursor::new(&data), &mut encoded).expect("in memory");
        assert!(encoded.ends_with(b"\r\n0\r\n\r\n"));
        assert_eq!(decode_chunked(&encoded).expect("valid"), data);
    }

    #[test]
    fn write_chunked_of_nothing_is_the_last_chunk() {
        let mut encoded = Vec::new();
        write_chunked(&mut Cursor::new(b""), &mut encoded).expect("in memory");
        assert_eq!(encoded, b"0\r\n\r\n");
    }

    #[test]
    fn line_bounds() {
        let exact = [vec![b'a'; MAX_LINE], b"\r\n".to_vec()].concat();
        let line = read_line_bounded(&mut Cursor::new(&exact), MAX_LINE).expect("fits");
        assert_eq!(line.map(|line| line.len()), Some(MAX_LINE));

        let over = [vec![b'a'; MAX_LINE + 1], b"\r\n".to_vec()].concat();
        assert!(matches!(
            read_line_bounded(&mut Cursor::new(&over), MAX_LINE),
            Err(HeadError::LineTooLong)
        ));

        // No newline at all: refused once the bound is passed, without reading everything.
        let endless = vec![b'a'; 4 * MAX_LINE];
        assert!(matches!(
            read_line_bounded(&mut Cursor::new(&endless), MAX_LINE),
            Err(HeadError::LineTooLong)
        ));

        assert!(matches!(
            read_line_bounded(&mut Cursor::new(b""), MAX_LINE),
            Ok(None)
        ));
        assert!(matches!(
            read_line_bounded(&mut Cursor::new(b"partial"), MAX_LINE),
            Err(HeadError::UnexpectedEof)
        ));
    }

    fn parse_request(input: &[u8]) -> Result<Option<Request>, HeadError> {
        read_request(&mut Cursor::new(input))
    }

    #[test]
    fn request_head_is_parsed() {
        let request = parse_request(
            b"POST /r%20x.git/git-upload-pack?a=b HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/x-git-upload-pack-request\r\n\
              Git-Protocol: version=2\r\nContent-Length: 42\r\n\r\n",
        )
        .expect("valid")
        .expect("not at end");
        assert_eq!(request.method, "POST");
        assert_eq!(request.path_info, "/r x.git/git-upload-pack");
        assert_eq!(request.query, "a=b");
        assert_eq!(request.body, BodyKind::Length(42));
        assert_eq!(request.header("git-protocol"), Some("version=2"));
        assert!(request.keep_alive);
        assert!(!request.expect_continue);
    }

    #[test]
    fn request_framing_and_connection_options() {
        let request = parse_request(
            b"\r\nPOST /r.git/git-receive-pack HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\
              Expect: 100-continue\r\nConnection: keep-alive, Close\r\n\r\n",
        )
        .expect("valid")
        .expect("not at end");
        assert_eq!(request.body, BodyKind::Chunked);
        assert!(request.expect_continue);
        assert!(!request.keep_alive);

        let request = parse_request(b"GET / HTTP/1.0\r\n\r\n")
            .expect("valid")
            .expect("not at end");
        assert!(!request.keep_alive);
        assert_eq!(request.body, BodyKind::None);
    }

    #[test]
    fn end_of_input_before_a_request_is_not_an_error() {
        assert!(matches!(parse_request(b""), Ok(None)));
    }

    #[test]
    fn malformed_requests_are_refused() {
        for input in [
            &b"GET /\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET r.git HTTP/1.1\r\n\r\n",
            b"GET /%zz HTTP/1.1\r\n\r\n",
            b"GET /%00 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n", // head never ends
        ] {
            assert!(
                parse_request(input).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn header_count_is_bounded() {
        let mut input = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            input.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        let mut too_many = input.clone();
        input.extend_from_slice(b"\r\n");
        assert!(parse_request(&input).is_ok());
        too_many.extend_from_slice(b"X-last: y\r\n\r\n");
        assert!(matches!(
            parse_request(&too_many),
            Err(HeadError::TooManyHeaders)
        ));
    }

    #[test]
    fn request_line_is_bounded() {
        let input = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_LINE));
        assert!(matches!(
            parse_request(input.as_bytes()),
            Err(HeadError::LineTooLong)
        ));
    }

    #[test]
    fn cgi_head_with_status_and_body_left_unread() {
        let mut output = Cursor::new(
            &b"Status: 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nno\n"
                [..],
        );
        let head = read_cgi_head(&mut output).expect("valid");
        assert_eq!(
            head,
            CgiHead {
                status: "404 Not Found".to_owned(),
                headers: vec![("Content-Type".to_owned(), "text/plain".to_owned())],
            }
        );
        let mut body = Vec::new();
        output.read_to_end(&mut body).expect("in memory");
        assert_eq!(body, b"no\n");
    }

    #[test]
    fn cgi_head_defaults() {
        let head = read_cgi_head(&mut Cursor::new(
            &b"Expires: Fri, 01 Jan 1980 00:00:00 GMT\nPragma: no-cache\n\nbody"[..],
        ))
        .expect("valid");
        assert_eq!(head.status, "200 OK");
        assert_eq!(head.headers.len(), 2);

        let head = read_cgi_head(&mut Cursor::new(&b"Location: /x\r\n\r\n"[..])).expect("valid");
        assert_eq!(head.status, "302 Found");

        let head = read_cgi_head(&mut Cursor::new(&b"Status: 204\r\n\r\n"[..])).expect("valid");
        assert_eq!(head.status, "204 ");
    }

    #[test]
    fn malformed_cgi_heads_are_errors() {
        for output in [
            &b""[..],
            b"Content-Type: text/plain\r\n",
            b"no colon here\r\n\r\n",
            b"Status: 42 Odd\r\n\r\n",
            b"Status: 700 Odd\r\n\r\n",
            b"Status: abc\r\n\r\n",
        ] {
            assert!(
                read_cgi_head(&mut Cursor::new(output)).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(output)
            );
        }
        let endless: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\n")).collect();
        assert!(matches!(
            read_cgi_head(&mut Cursor::new(format!("{endless}\n").as_bytes())),
            Err(HeadError::TooManyHeaders)
        ));
    }

    #[test]
    fn body_of_known_length_is_copied_exactly() {
        let mut input = Cursor::new(&b"0123456789NEXT"[..]);
        let mut sink = Vec::new();
        let copied = copy_body(&mut input, BodyKind::Length(10), &mut sink).expect("valid");
        assert_eq!(copied, 10);
        assert_eq!(sink, b"0123456789");
        assert_eq!(input.position(), 10);

        let short = copy_body(
            &mut Cursor::new(&b"abc"[..]),
            BodyKind::Length(10),
            Vec::new(),
        );
        assert_eq!(
            short.expect_err("too short").kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    /// A child's stdin whose reader has gone away.
    struct BrokenPipe;

    impl Write for BrokenPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn body_is_drained_when_the_child_stops_reading() {
        let mut input = Cursor::new(&b"3\r\nabc\r\n0\r\n\r\nNEXT"[..]);
        let copied = copy_body(&mut input, BodyKind::Chunked, BrokenPipe).expect("drained");
        assert_eq!(copied, 3);
        assert_eq!(&input.get_ref()[input.position() as usize..], b"NEXT");
    }
}
