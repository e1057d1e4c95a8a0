//! A small blocking HTTP/1.1 client over one keep-alive TCP connection.
//!
//! The load generator shares the machine's two cores with the server, so its cost per request
//! must stay small next to the server's: requests are built once as bytes and reused, the
//! response is parsed in place (status line, `Content-Length` or chunked body), and nothing
//! else happens (no TLS, redirects, cookies or pooling). Every scenario, the ceiling included,
//! goes through this same client, so the ratios between scenarios compare like with like.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response: its status and body.
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body parsed as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The start of the body as text, for error reports.
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(300).collect()
    }
}

/// Builds the bytes of one request. `body` is sent as `application/json`.
pub fn request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.map_or(0, <[u8]>::len));
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if let Some(body) = body {
        out.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(body);
    } else {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One keep-alive connection to the server; reconnects when the server closes it.
pub struct Client {
    addr: SocketAddr,
    host: String,
    stream: Option<TcpStream>,
    /// Read buffer: `buf[lo..hi]` are bytes read but not yet consumed.
    buf: Vec<u8>,
    lo: usize,
    hi: usize,
    /// Requests sent on the current connection.
    used: u64,
}

impl Client {
    /// A client for `addr`; connects on first use.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            stream: None,
            buf: vec![0; 64 * 1024],
            lo: 0,
            hi: 0,
            used: 0,
        }
    }

    /// `GET path` with `headers`.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
        let raw = request("GET", &self.host, path, headers, None);
        self.send(&raw)
    }

    /// `POST path` with a JSON body.
    pub fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let raw = request("POST", &self.host, path, headers, Some(body));
        self.send(&raw)
    }

    /// Sends a request built by [`request`] and reads its response. A connection the server
    /// closed while idle is replaced once, transparently (nothing of the request was read).
    pub fn send(&mut self, raw: &[u8]) -> io::Result<Response> {
        let reused = self.stream.is_some() && self.used > 0;
        match self.exchange(raw) {
            Ok(r) => Ok(r),
            Err(Stale) if reused => {
                self.reset();
                self.exchange(raw).map_err(Failure::into_io)
            }
            Err(e) => {
                self.reset();
                Err(e.into_io())
            }
        }
    }

    fn reset(&mut self) {
        self.stream = None;
        self.lo = 0;
        self.hi = 0;
        self.used = 0;
    }

    fn connect(&mut self) -> io::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(120)))?;
            stream.set_write_timeout(Some(Duration::from_secs(120)))?;
            self.stream = Some(stream);
            self.lo = 0;
            self.hi = 0;
            self.used = 0;
        }
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::other("no connection"))
    }

    fn exchange(&mut self, raw: &[u8]) -> Result<Response, Failure> {
        let stream = self.connect().map_err(Failure::Io)?;
        if let Err(e) = stream.write_all(raw) {
            return Err(if is_stale(&e) { Stale } else { Failure::Io(e) });
        }
        self.used += 1;
        let (response, close) = self.read_response()?;
        if close {
            self.reset();
        }
        Ok(response)
    }

    /// The bytes read and not yet consumed.
    fn pending(&self) -> &[u8] {
        &self.buf[self.lo..self.hi]
    }

    fn consume(&mut self, n: usize) {
        self.lo += n;
        if self.lo == self.hi {
            self.lo = 0;
            self.hi = 0;
        }
    }

    /// Takes the next `n` pending bytes.
    fn take(&mut self, n: usize) -> Vec<u8> {
        let out = self.buf[self.lo..self.lo + n].to_vec();
        self.consume(n);
        out
    }

    /// Reads more bytes after the pending ones; `Ok(0)` at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        if self.hi == self.buf.len() {
            if self.lo > 0 {
                self.buf.copy_within(self.lo..self.hi, 0);
                self.hi -= self.lo;
                self.lo = 0;
            } else {
                let grown = self.buf.len() * 2;
                self.buf.resize(grown, 0);
            }
        }
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::other("no connection"))?;
        loop {
            match stream.read(&mut self.buf[self.hi..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(n) => {
                    self.hi += n;
                    return Ok(n);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn read_response(&mut self) -> Result<(Response, bool), Failure> {
        // The head.
        let head_end = loop {
            if let Some(i) = find(self.pending(), b"\r\n\r\n") {
                break i;
            }
            match self.fill() {
                Ok(0) if self.pending().is_empty() => return Err(Stale),
                Ok(0) => return Err(Failure::Io(eof("inside a response head"))),
                Ok(_) => {}
                Err(e) if self.pending().is_empty() && is_stale(&e) => return Err(Stale),
                Err(e) => return Err(Failure::Io(e)),
            }
        };
        let head = std::str::from_utf8(&self.pending()[..head_end])
            .map_err(|_| Failure::Io(bad("response head is not UTF-8")))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Failure::Io(bad("bad status line")))?;
        let mut length = None;
        let mut chunked = false;
        let mut close = status_line.starts_with("HTTP/1.0");
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        self.consume(head_end + 4);
        let body = if chunked {
            self.read_chunked()?
        } else if let Some(length) = length {
            self.read_exact_body(length)?
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            Vec::new()
        } else {
            // No length: the body runs to the end of the connection.
            loop {
                match self.fill() {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(Failure::Io(e)),
                }
            }
            close = true;
            let n = self.pending().len();
            self.take(n)
        };
        Ok((Response { status, body }, close))
    }

    fn read_exact_body(&mut self, length: usize) -> Result<Vec<u8>, Failure> {
        while self.pending().len() < length {
            match self.fill() {
                Ok(0) => return Err(Failure::Io(eof("inside a response body"))),
                Ok(_) => {}
                Err(e) => return Err(Failure::Io(e)),
            }
        }
        Ok(self.take(length))
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, Failure> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(self.pending(), b"\r\n") {
                    break i;
                }
                match self.fill() {
                    Ok(0) => return Err(Failure::Io(eof("inside a chunk header"))),
                    Ok(_) => {}
                    Err(e) => return Err(Failure::Io(e)),
                }
            };
            let size_text = std::str::from_utf8(&self.pending()[..line_end]).unwrap_or_default();
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| Failure::Io(bad("bad chunk size")))?;
            self.consume(line_end + 2);
            // The chunk and its CRLF (for the last chunk: the CRLF ending the trailers).
            let chunk = self.read_exact_body(size + 2)?;
            if size == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
}

/// Why an exchange failed: `Stale` means the server had closed the connection before reading
/// anything of the request (safe to resend once).
enum Failure {
    Stale,
    Io(io::Error),
}
use Failure::Stale;

impl Failure {
    fn into_io(self) -> io::Error {
        match self {
            Stale => eof("before a response"),
            Failure::Io(e) => e,
        }
    }
}

fn is_stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

fn eof(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("connection closed {what}"),
    )
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
