//! A minimal HTTP/1.1 request-head parser over a byte buffer, for servers with fixed memory.
//!
//! [`parse`] looks at the bytes received so far and either asks for more
//! ([`HttpError::Incomplete`]), rejects the request with a status code, or returns a
//! [`Request`] whose strings borrow the buffer. It handles the request line, up to
//! [`MAX_HEADERS`] headers, `Content-Length`, `Connection` (keep-alive defaults of HTTP/1.0 and
//! 1.1) and `Expect: 100-continue`. Chunked request bodies are refused with 411 (the client can
//! send `Content-Length` instead). Any byte sequence is handled without panicking.

use core::fmt;

/// Most headers a request may carry.
pub const MAX_HEADERS: usize = 48;

/// Size limits for a request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request line plus headers, in bytes.
    pub max_head: usize,
    /// Most headers (at most [`MAX_HEADERS`]).
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_headers: MAX_HEADERS,
        }
    }
}

/// Why a request head was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The head is not complete yet: read more bytes and parse again.
    Incomplete,
    /// The head exceeds [`Limits::max_head`] (431).
    HeadTooLarge,
    /// More than [`Limits::max_headers`] headers (431).
    TooManyHeaders,
    /// Malformed request (400), with a short reason.
    BadRequest(&'static str),
    /// A chunked body, which is not supported (411: send `Content-Length`).
    LengthRequired,
    /// An HTTP version other than 1.0 and 1.1 (505).
    VersionNotSupported,
}

impl HttpError {
    /// The status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Incomplete | HttpError::BadRequest(_) => 400,
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::LengthRequired => 411,
            HttpError::VersionNotSupported => 505,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Incomplete => write!(f, "incomplete request"),
            HttpError::HeadTooLarge => write!(f, "request head too large"),
            HttpError::TooManyHeaders => write!(f, "too many request headers"),
            HttpError::BadRequest(r) => write!(f, "malformed request: {r}"),
            HttpError::LengthRequired => write!(
                f,
                "chunked request bodies are not supported; send Content-Length"
            ),
            HttpError::VersionNotSupported => write!(f, "only HTTP/1.0 and HTTP/1.1 are supported"),
        }
    }
}

/// One header; the name is ASCII, the value raw bytes with surrounding whitespace removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header<'a> {
    /// Field name as sent.
    pub name: &'a str,
    /// Field value.
    pub value: &'a [u8],
}

/// A parsed request head borrowing the receive buffer.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Method (`GET`, `POST`, ...).
    pub method: &'a str,
    /// Request target as sent.
    pub target: &'a str,
    /// Target without its query string.
    pub path: &'a str,
    /// The query string (after `?`), if any.
    pub query: Option<&'a str>,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    /// Body length from `Content-Length` (0 when absent).
    pub content_length: usize,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// Bytes of the head, including its terminating empty line; the body starts here.
    pub head_len: usize,
    headers: [Header<'a>; MAX_HEADERS],
    n_headers: usize,
}

impl<'a> Request<'a> {
    /// All headers in order.
    pub fn headers(&self) -> &[Header<'a>] {
        &self.headers[..self.n_headers]
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Finds the end of the head: the index just past the empty line (CRLF CRLF or LF LF).
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            match buf.get(i + 1) {
                Some(b'\n') => return Some(i + 2),
                Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Splits off one line (without its LF and an optional CR before it).
fn next_line<'b>(rest: &mut &'b [u8]) -> &'b [u8] {
    let r = *rest;
    let (line, after) = match r.iter().position(|&c| c == b'\n') {
        Some(i) => (&r[..i], &r[i + 1..]),
        None => (r, &r[r.len()..]),
    };
    *rest = after;
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn parse_usize(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    let mut n: usize = 0;
    for &c in v {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((c - b'0') as usize)?;
    }
    Some(n)
}

fn has_token(v: &[u8], token: &str) -> bool {
    v.split(|&c| c == b',')
        .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses the request head at the start of `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Result<Request<'a>, HttpError> {
    // Empty lines before the request line are ignored (RFC 9112 §2.2).
    let mut skip = 0;
    while let Some(c @ (b'\r' | b'\n')) = buf.get(skip) {
        if *c == b'\r' && buf.get(skip + 1).is_some_and(|&n| n != b'\n') {
            return Err(HttpError::BadRequest("stray carriage return"));
        }
        skip += 1;
    }
    let scan = &buf[skip..buf.len().min(limits.max_head.saturating_add(skip))];
    let end = match head_end(scan) {
        Some(e) => e,
        None if buf.len() >= limits.max_head.saturating_add(skip) => {
            return Err(HttpError::HeadTooLarge)
        }
        None => return Err(HttpError::Incomplete),
    };
    let mut rest = &scan[..end];

    // Request line: method SP target SP version.
    let line = next_line(&mut rest);
    let mut parts = line.split(|&c| c == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequest("invalid request line"));
    };
    if method.is_empty() || !method.iter().all(|&c| is_tchar(c)) {
        return Err(HttpError::BadRequest("invalid method"));
    }
    if target.is_empty() || !target.iter().all(|&c| (0x21..0x7F).contains(&c)) {
        return Err(HttpError::BadRequest("invalid request target"));
    }
    if target[0] != b'/' && target != b"*" {
        return Err(HttpError::BadRequest("request target must be a path"));
    }
    let minor_version = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        v if v.len() == 8
            && v.starts_with(b"HTTP/")
            && v[5].is_ascii_digit()
            && v[6] == b'.'
            && v[7].is_ascii_digit() =>
        {
            return Err(HttpError::VersionNotSupported)
        }
        _ => return Err(HttpError::BadRequest("invalid HTTP version")),
    };
    // Both were checked to be ASCII above.
    let method = core::str::from_utf8(method).map_err(|_| HttpError::BadRequest("method"))?;
    let target = core::str::from_utf8(target).map_err(|_| HttpError::BadRequest("target"))?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };

    let mut req = Request {
        method,
        target,
        path,
        query,
        minor_version,
        content_length: 0,
        keep_alive: minor_version == 1,
        expect_continue: false,
        head_len: skip + end,
        headers: [Header::default(); MAX_HEADERS],
        n_headers: 0,
    };
    let max_headers = limits.max_headers.min(MAX_HEADERS);
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut conn_close = false;
    let mut conn_keep = false;
    loop {
        let line = next_line(&mut rest);
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            return Err(HttpError::BadRequest("obsolete header line folding"));
        }
        let colon = line
            .iter()
            .position(|&c| c == b':')
            .ok_or(HttpError::BadRequest("header without a colon"))?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&c| is_tchar(c)) {
            return Err(HttpError::BadRequest("invalid header name"));
        }
        let value = trim_ows(&line[colon + 1..]);
        if value.iter().any(|&c| (c < 0x20 && c != b'\t') || c == 0x7F) {
            return Err(HttpError::BadRequest("control character in a header value"));
        }
        if req.n_headers == max_headers {
            return Err(HttpError::TooManyHeaders);
        }
        let name = core::str::from_utf8(name).map_err(|_| HttpError::BadRequest("header"))?;
        req.headers[req.n_headers] = Header { name, value };
        req.n_headers += 1;

        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_usize(value).ok_or(HttpError::BadRequest("invalid Content-Length"))?;
            if content_length.is_some_and(|c| c != n) {
                return Err(HttpError::BadRequest("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if has_token(value, "chunked") {
                chunked = true;
            } else {
                return Err(HttpError::BadRequest("unsupported Transfer-Encoding"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            conn_close |= has_token(value, "close");
            conn_keep |= has_token(value, "keep-alive");
        } else if name.eq_ignore_ascii_case("expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                req.expect_continue = minor_version == 1;
            } else {
                return Err(HttpError::BadRequest("unsupported Expect header"));
            }
        }
    }
    if chunked {
        if content_length.is_some() {
            return Err(HttpError::BadRequest(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        return Err(HttpError::LengthRequired);
    }
    req.content_length = content_length.unwrap_or(0);
    req.keep_alive = if conn_close {
        false
    } else {
        req.keep_alive || conn_keep
    };
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[u8]) -> Result<Request<'_>, HttpError> {
        parse(s, &Limits::default())
    }

    #[test]
    fn parses_a_post() {
        let raw = b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length:  12 \r\n\r\n{\"a\":1}xxxxx";
        let r = p(raw).unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.query, Some("x=1"));
        assert_eq!(r.content_length, 12);
        assert!(r.keep_alive);
        assert_eq!(r.header("content-type"), Some(&b"application/json"[..]));
        assert_eq!(r.headers().len(), 3);
        assert_eq!(&raw[r.head_len..r.head_len + 7], b"{\"a\":1}");
    }

    #[test]
    fn incomplete_and_limits() {
        assert_eq!(
            p(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap_err(),
            HttpError::Incomplete
        );
        assert_eq!(p(b"").unwrap_err(), HttpError::Incomplete);
        let small = Limits {
            max_head: 20,
            max_headers: 1,
        };
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: aaaaaaaaaaaaa", &small).unwrap_err(),
            HttpError::HeadTooLarge
        );
        let two = Limits {
            max_head: 1000,
            max_headers: 1,
        };
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", &two).unwrap_err(),
            HttpError::TooManyHeaders
        );
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!p(b"GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            p(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            !p(b"GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(p(b"\r\nGET / HTTP/1.1\n\n").unwrap().keep_alive);
    }

    #[test]
    fn rejects_bad_input() {
        let bad = |s: &[u8]| p(s).unwrap_err().status();
        assert_eq!(bad(b"GET  / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(bad(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(bad(b"GET / FTP/1.1\r\n\r\n"), 400);
        assert_eq!(bad(b"GET http://x/ HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(bad(b"GET / HTTP/1.1\r\nA : b\r\n\r\n"), 400);
        assert_eq!(bad(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"), 400);
        assert_eq!(bad(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(
            bad(b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            400
        );
        assert_eq!(
            bad(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            bad(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        assert_eq!(
            bad(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            400
        );
        assert_eq!(bad(b"GET / HTTP/1.1\r\nA: \x01\r\n\r\n"), 400);
        assert_eq!(bad(b"G\xffT / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(bad(b"\rGET / HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn expect_continue() {
        let r = p(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert!(r.expect_continue);
    }
}
