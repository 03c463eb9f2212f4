//! Routing: the route table, authentication, the browser policy (CORS and `Host`), request
//! ids, logging and metrics of every request, and the JSON and error responses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use tracing::Instrument;
use trillim_core::browser::{BrowserPolicy, Refusal};

use super::body::Body;
use super::limits;
use crate::openai::output::Kind;
use crate::openai::{audio, generate, load, models, ApiError};
use crate::state::{new_id, AppState};

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Body::full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.status, &e.body());
    let h = r.headers_mut();
    if let Some(s) = e.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    if e.status == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"trillim\""),
        );
    }
    // The body may not have been read whole: the connection cannot carry another request.
    if e.status == StatusCode::PAYLOAD_TOO_LARGE
        || e.status == StatusCode::REQUEST_TIMEOUT
        || e.code == Some("server_busy")
        || e.code == Some("server_draining")
    {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

const ROUTES: &[(&str, &[Method])] = &[
    ("/", &[Method::GET]),
    ("/health", &[Method::GET]),
    ("/livez", &[Method::GET]),
    ("/readyz", &[Method::GET]),
    ("/metrics", &[Method::GET]),
    ("/v1/health", &[Method::GET]),
    ("/v1/models", &[Method::GET]),
    ("/v1/chat/completions", &[Method::POST]),
    ("/v1/completions", &[Method::POST]),
    ("/v1/models/load", &[Method::POST]),
    ("/v1/audio/transcriptions", &[Method::POST]),
    ("/v1/audio/speech", &[Method::POST]),
    ("/v1/voices", &[Method::GET, Method::POST]),
];

pub(crate) async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let rid = format!("req-{}", &new_id()[..16]);
    let span = tracing::info_span!("request", id = %rid);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let t0 = Instant::now();
    let allowed = browser_check(&state, &req);
    // Only an allowed origin is echoed back; a refused one gets a 403 the page cannot read.
    let origin = allowed
        .is_ok()
        .then(|| req.headers().get(header::ORIGIN).cloned())
        .flatten();
    let mut resp = match allowed {
        Ok(()) => route(&state, req, &rid)
            .instrument(span.clone())
            .await
            .unwrap_or_else(|e| error_response(&e)),
        Err(e) => error_response(&e),
    };
    let h = resp.headers_mut();
    h.insert(
        "x-request-id",
        HeaderValue::from_str(&rid).unwrap_or(HeaderValue::from_static("-")),
    );
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-request-id, retry-after"),
        );
    }
    state
        .metrics
        .request(route_label(&path), resp.status().as_u16());
    span.in_scope(|| {
        tracing::info!(%method, %path, status = resp.status().as_u16(), ms = t0.elapsed().as_millis() as u64, %peer, "http")
    });
    resp
}

/// The route a path is counted under in `/metrics` (unknown paths share one label, so a
/// client cannot grow the label set).
fn route_label(path: &str) -> &'static str {
    let p = path.trim_end_matches('/');
    ROUTES
        .iter()
        .map(|(r, _)| *r)
        .find(|r| *r == p)
        .unwrap_or(if p.starts_with("/v1/models/") {
            "/v1/models/{id}"
        } else if p.starts_with("/v1/voices/") {
            "/v1/voices/{id}"
        } else {
            "other"
        })
}

fn authorized(state: &AppState, req: &Request<Incoming>) -> bool {
    let Some(key) = &state.settings.api_key else {
        return true;
    };
    let h = req.headers();
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let x_api_key = h.get("x-api-key").and_then(|v| v.to_str().ok());
    let ok = |given: &str| constant_time_eq(given.as_bytes(), key.as_bytes());
    bearer.is_some_and(ok) || x_api_key.is_some_and(ok)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn route(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    rid: &str,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path
    };
    let method = req.method().clone();
    if method == Method::OPTIONS {
        return Ok(preflight(&req));
    }
    let model_retrieve = path
        .strip_prefix("/v1/models/")
        .filter(|rest| *rest != "load")
        .map(str::to_string);
    let voice_item = path.strip_prefix("/v1/voices/").is_some();
    let allowed: Option<&[Method]> = ROUTES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, m)| *m)
        .or(model_retrieve.as_ref().map(|_| &[Method::GET][..]))
        .or(voice_item.then_some(&[Method::DELETE][..]));
    let Some(allowed) = allowed else {
        return Err(ApiError::not_found(format!(
            "Unknown route {method} {path}"
        )));
    };
    if !allowed.contains(&method) {
        let mut r = error_response(&ApiError::method_not_allowed(method.as_str(), &path));
        let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        r.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_str(&allow.join(", ")).unwrap_or(HeaderValue::from_static("GET")),
        );
        return Ok(r);
    }
    if (path.starts_with("/v1/") || path == "/metrics") && !authorized(state, &req) {
        return Err(ApiError::unauthorized());
    }
    // A draining replica finishes what it runs and refuses new work with a retryable 503.
    if method == Method::POST && state.is_draining() {
        return Err(ApiError::draining());
    }
    match path.as_str() {
        "/" => Ok(super::page::chat_page()),
        "/health" | "/v1/health" => models::health(state),
        "/livez" => Ok(models::livez()),
        "/readyz" => Ok(models::readyz(state)),
        "/metrics" => Ok(models::metrics(state)),
        "/v1/models" => models::models(state),
        "/v1/chat/completions" => {
            let body = limits::read_body(&state.guards, req).await?;
            generate::generate(state, &body, Kind::Chat, rid).await
        }
        "/v1/completions" => {
            let body = limits::read_body(&state.guards, req).await?;
            generate::generate(state, &body, Kind::Completion, rid).await
        }
        "/v1/models/load" => {
            let body = limits::read_body(&state.guards, req).await?;
            load::load(state, &body).await
        }
        "/v1/audio/transcriptions" => audio::transcriptions(state, req).await,
        "/v1/audio/speech" => {
            let body = limits::read_body(&state.guards, req).await?;
            audio::speech(state, &body)
        }
        "/v1/voices" if method == Method::GET => audio::list_voices(state),
        "/v1/voices" => audio::add_voice(state, req).await,
        _ if voice_item => audio::delete_voice(state, &path["/v1/voices/".len()..]),
        _ => models::retrieve_model(state, model_retrieve.as_deref().unwrap_or("")),
    }
}

fn preflight(req: &Request<Incoming>) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    let asked = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        asked.unwrap_or(HeaderValue::from_static(
            "authorization, content-type, x-api-key",
        )),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

/// Checks `Origin` and `Host` against the browser policy.
fn browser_check(state: &AppState, req: &Request<Incoming>) -> Result<(), ApiError> {
    let b = &state.settings.browser;
    let origins: Vec<&str> = b.cors_origins.iter().map(String::as_str).collect();
    let hosts: Vec<&str> = b.allowed_hosts.iter().map(String::as_str).collect();
    let policy = BrowserPolicy {
        cors_origins: &origins,
        allowed_hosts: &hosts,
        check_host: b.check_host,
        bound: &b.bound,
    };
    let origin = req.headers().get(header::ORIGIN).map(HeaderValue::as_bytes);
    let host = req
        .headers()
        .get(header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| req.uri().authority().map(|a| a.as_str().as_bytes()));
    let shown = |v: Option<&[u8]>| String::from_utf8_lossy(v.unwrap_or_default()).into_owned();
    match policy.check(origin, host) {
        Ok(()) => Ok(()),
        Err(Refusal::Origin) => Err(ApiError::refused_by_policy(
            "Origin",
            &shown(origin),
            "--cors-origins",
            "origin_not_allowed",
        )),
        Err(Refusal::Host) => Err(ApiError::refused_by_policy(
            "Host",
            &shown(host),
            "--allowed-hosts",
            "host_not_allowed",
        )),
    }
}
