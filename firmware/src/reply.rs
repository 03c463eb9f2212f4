//! Response heads and OpenAI-shaped error bodies, written without allocating: a JSON body is
//! written twice, once to count its bytes for `Content-Length` and once to send it.

use core::fmt;

use embedded_io::Write;
use trillim_core::json::{Counter, JsonError, JsonWriter};

use crate::io::Buffered;

pub(crate) type JRes<W> = Result<(), JsonError<<W as embedded_io::ErrorType>::Error>>;

/// A JSON response body.
pub(crate) trait Body {
    fn write<W: Write>(&self, w: &mut JsonWriter<W>) -> JRes<W>;
}

/// Response headers besides `Content-Type`, `Content-Length` and `Connection`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Extra<'a> {
    /// An allowed `Origin` to echo in `Access-Control-Allow-Origin`.
    pub origin: Option<&'a str>,
    /// Methods for an `Allow` header.
    pub allow: Option<&'a str>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
}

impl Extra<'_> {
    pub(crate) fn write<W: Write>(&self, w: &mut W) -> Result<(), W::Error> {
        if let Some(o) = self.origin {
            wfmt(
                w,
                format_args!("Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n"),
            )?;
        }
        if let Some(a) = self.allow {
            wfmt(w, format_args!("Allow: {a}\r\n"))?;
        }
        if let Some(s) = self.retry_after {
            wfmt(w, format_args!("Retry-After: {s}\r\n"))?;
        }
        Ok(())
    }
}

/// `{"error":{"message","type","param","code"}}`.
#[derive(Clone, Copy)]
pub(crate) struct ErrorBody<'a> {
    pub status: u16,
    pub msg: &'a dyn fmt::Display,
    pub param: Option<&'a str>,
    /// The OpenAI error type.
    pub kind: &'static str,
    /// A machine-readable code.
    pub code: Option<&'static str>,
}

impl<'a> ErrorBody<'a> {
    /// An error whose type follows from its status.
    pub(crate) fn new(status: u16, msg: &'a dyn fmt::Display) -> ErrorBody<'a> {
        let kind = match status {
            403 => "permission_error",
            503 => "service_unavailable_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        };
        ErrorBody {
            status,
            msg,
            param: None,
            kind,
            code: None,
        }
    }

    pub(crate) fn param(self, param: Option<&'a str>) -> Self {
        ErrorBody { param, ..self }
    }

    pub(crate) fn code(self, code: &'static str) -> Self {
        ErrorBody {
            code: Some(code),
            ..self
        }
    }
}

impl Body for ErrorBody<'_> {
    fn write<W: Write>(&self, w: &mut JsonWriter<W>) -> JRes<W> {
        w.begin_object()?;
        w.key("error")?;
        w.begin_object()?;
        w.key("message")?;
        w.string_fmt(format_args!("{}", self.msg))?;
        w.key("type")?;
        w.string(self.kind)?;
        w.key("param")?;
        match self.param {
            Some(p) => w.string(p)?,
            None => w.null()?,
        }
        w.key("code")?;
        match self.code {
            Some(c) => w.string(c)?,
            None => w.null()?,
        }
        w.end_object()?;
        w.end_object()
    }
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Internal Server Error",
    }
}

pub(crate) fn wfmt<W: Write>(w: &mut W, args: fmt::Arguments<'_>) -> Result<(), W::Error> {
    match w.write_fmt(args) {
        Ok(()) => Ok(()),
        Err(embedded_io::WriteFmtError::Other(e)) => Err(e),
        // Formatting integers and strings cannot fail by itself.
        Err(_) => Ok(()),
    }
}

pub(crate) fn json_io<E>(r: Result<(), JsonError<E>>) -> Result<(), E> {
    match r {
        Err(JsonError::Io(e)) => Err(e),
        // Bodies are well-formed by construction.
        _ => Ok(()),
    }
}

/// Sends a whole JSON response through `out`; returns whether the connection stays open.
pub(crate) fn respond<S: Write, B: Body>(
    s: &mut S,
    out: &mut [u8],
    status: u16,
    keep_alive: bool,
    extra: &Extra<'_>,
    body: &B,
) -> Result<bool, S::Error> {
    let mut c = Counter::default();
    let _ = body.write(&mut JsonWriter::new(&mut c));
    let mut w = Buffered::new(&mut *s, out);
    wfmt(
        &mut w,
        format_args!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n",
            reason(status),
            c.n,
            if keep_alive { "keep-alive" } else { "close" },
        ),
    )?;
    extra.write(&mut w)?;
    w.write_all(b"\r\n")?;
    json_io(body.write(&mut JsonWriter::new(&mut w)))?;
    w.flush()?;
    Ok(keep_alive)
}

/// Sends an error with `Connection: close` from a small stack buffer, for answers given
/// outside the request handler (framing errors, timeouts, a full connection table).
pub(crate) fn error_close<S: Write>(
    s: &mut S,
    e: &ErrorBody<'_>,
    extra: &Extra<'_>,
) -> Result<(), S::Error> {
    let mut out = [0u8; 512];
    respond(s, &mut out, e.status, false, extra, e).map(|_| ())
}
