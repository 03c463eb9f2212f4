//! The chat page at `/`: one self-contained HTML file (no CDN, no build step), compiled into
//! the binary. It talks to the API like any client (`/v1/models`, streamed
//! `/v1/chat/completions`), keeps the conversation in the browser's local storage and sends the
//! API key, when one is set, from its settings.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::Body;

const PAGE: &str = include_str!("chat.html");

/// `GET /`.
pub(crate) fn chat_page() -> Response<Body> {
    let mut r = Response::new(Body::full(PAGE));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // The page's own inline script and style; it may only call this server; no framing.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
    );
    r
}
