//! Where a request ends in the bytes received so far, and whether those bytes must be refused
//! before the rest arrives: a head too large, a body over the limit, or a first line that no
//! valid request line can start with (answered at once instead of after a blank line that may
//! never come).

use core::fmt;

use trillim_core::http::{self, HttpError, Limits};

use crate::reply::ErrorBody;

/// What the bytes at the start of a connection's buffer amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Not a whole head yet: read more.
    Partial,
    /// The head is complete; the body ends at `end`, which has not arrived yet.
    Head {
        /// Where the request (head and body) ends.
        end: usize,
        /// The client waits for `100 Continue` before sending the body.
        expect_continue: bool,
    },
    /// A whole request, head and body, in `..end`.
    Complete {
        /// Where the request ends (pipelined bytes may follow).
        end: usize,
    },
    /// Refuse the request and close the connection.
    Reject(Reject),
}

/// Why a request was refused while it was being received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// A malformed or unsupported head (400, 411, 431, 505).
    Http(HttpError),
    /// A `Content-Length` over the body limit (413); the limit is given.
    TooLarge(usize),
}

impl Reject {
    /// The error to answer with.
    pub(crate) fn body(&self) -> ErrorBody<'_> {
        match self {
            Reject::Http(e) => ErrorBody::new(e.status(), e),
            Reject::TooLarge(_) => ErrorBody::new(413, self).code("request_too_large"),
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reject::Http(e) => e.fmt(f),
            Reject::TooLarge(n) => write!(f, "request body too large (limit {n} bytes)"),
        }
    }
}

/// Frames the request at the start of `buf`.
pub fn frame(buf: &[u8], limits: &Limits, max_body: usize) -> Frame {
    match http::parse(buf, limits) {
        Ok(r) if r.content_length > max_body => Frame::Reject(Reject::TooLarge(max_body)),
        Ok(r) => {
            let end = r.head_len + r.content_length;
            if buf.len() >= end {
                Frame::Complete { end }
            } else {
                Frame::Head {
                    end,
                    expect_continue: r.expect_continue,
                }
            }
        }
        Err(HttpError::Incomplete) => match bad_start(buf) {
            Some(e) => Frame::Reject(Reject::Http(e)),
            None => Frame::Partial,
        },
        Err(e) => Frame::Reject(Reject::Http(e)),
    }
}

/// Longest method accepted; no registered method comes close.
const MAX_METHOD: usize = 32;

/// Checks the bytes of an incomplete head: `Some` when no valid request line
/// (`method SP /target SP HTTP/1.x`) starts with them. Everything refused here would also be
/// refused by [`http::parse`] once the head was complete.
pub fn bad_start(buf: &[u8]) -> Option<HttpError> {
    let bad = |why| Some(HttpError::BadRequest(why));
    // Empty lines before the request line are allowed, as in `http::parse`.
    let mut i = 0;
    while let Some(&c @ (b'\r' | b'\n')) = buf.get(i) {
        if c == b'\r' && buf.get(i + 1).is_some_and(|&n| n != b'\n') {
            return bad("stray carriage return");
        }
        i += 1;
    }
    let line = &buf[i..];
    // Method.
    let m = line.iter().take_while(|&&c| is_tchar(c)).count();
    match line.get(m) {
        None if m <= MAX_METHOD => return None,
        Some(b' ') if (1..=MAX_METHOD).contains(&m) => {}
        _ => return bad("invalid request line"),
    }
    // Target.
    let rest = &line[m + 1..];
    match rest.first() {
        None => return None,
        Some(b'/' | b'*') => {}
        Some(_) => return bad("invalid request line"),
    }
    let t = rest
        .iter()
        .take_while(|&&c| (0x21..0x7F).contains(&c))
        .count();
    match rest.get(t) {
        None => return None,
        Some(b' ') => {}
        Some(_) => return bad("invalid request line"),
    }
    // Version, then the end of the line.
    let v = &rest[t + 1..];
    const SHAPE: &[u8] = b"HTTP/#.#";
    for (k, &c) in v.iter().enumerate().take(SHAPE.len()) {
        let ok = match SHAPE[k] {
            b'#' => c.is_ascii_digit(),
            s => c == s,
        };
        if !ok {
            return bad("invalid HTTP version");
        }
    }
    if v.len() < SHAPE.len() {
        return None;
    }
    match &v[SHAPE.len()..] {
        [] | [b'\n', ..] | [b'\r'] | [b'\r', b'\n', ..] => {}
        _ => return bad("invalid request line"),
    }
    match &v[..SHAPE.len()] {
        b"HTTP/1.1" | b"HTTP/1.0" => None,
        _ => Some(HttpError::VersionNotSupported),
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn prefixes_of_valid_requests_pass() {
        let req = b"\r\nPOST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        for k in 0..req.len() {
            assert_eq!(bad_start(&req[..k]), None, "{k}");
        }
        assert_eq!(bad_start(b"OPTIONS * HTTP/1.0\n"), None);
    }

    #[test]
    fn impossible_starts_are_refused_at_once() {
        for junk in [
            &b"GARBAGE\r\n"[..],
            b"GARBAGE\n",
            b"\x16\x03\x01\x02\x00",
            b"GET\x00",
            b"GET  /",
            b"GET x",
            b"GET /a\tb",
            b"GET / http/1.1",
            b"GET / HTTP/1.1 \r\n",
            b"GET / HTTP/1.1\rX",
            b"GET / HTTP/11",
            b"\rX",
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(
                matches!(bad_start(junk), Some(HttpError::BadRequest(_))),
                "{junk:?}"
            );
            assert!(http::parse(junk, &limits()).is_err());
        }
        assert_eq!(
            bad_start(b"GET / HTTP/2.0\r\n"),
            Some(HttpError::VersionNotSupported)
        );
    }

    #[test]
    fn frames() {
        let l = limits();
        assert_eq!(frame(b"GET / HT", &l, 10), Frame::Partial);
        assert_eq!(
            frame(b"GET / HTTP/1.1\r\n\r\nGET", &l, 10),
            Frame::Complete { end: 18 }
        );
        let post = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nab";
        assert_eq!(
            frame(post, &l, 10),
            Frame::Head {
                end: post.len() + 3,
                expect_continue: true
            }
        );
        assert_eq!(frame(post, &l, 4), Frame::Reject(Reject::TooLarge(4)));
        assert!(matches!(
            frame(b"GARBAGE\r\n", &l, 10),
            Frame::Reject(Reject::Http(HttpError::BadRequest(_)))
        ));
    }
}
