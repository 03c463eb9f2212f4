//! The OpenAI-compatible HTTP API on hyper: routing, authentication, the browser policy
//! (CORS and `Host`), connection and body limits ([`limits`]), request ids and the handlers. Inference never runs here: handlers queue jobs on the engine
//! thread and relay its events.

mod body;
mod error;
pub mod limits;
mod openai;
pub mod request;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc::unbounded_channel;
use tracing::Instrument;

pub use body::Body;
pub use error::ApiError;
use limits::{Admission, Guards, Limits};
use openai::{Kind, Output};
use trillim_core::browser::{BrowserPolicy, Refusal};

use crate::engine::{self, Engine, Event, Job, SubmitError};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use trillim_runtime::{LoadOptions, UnembedQuant};

/// What the server is serving.
#[derive(Debug, Clone)]
pub enum Slot {
    /// Nothing loaded (startup failed, or a swap failed after the old model was dropped).
    NoModel,
    /// A model serves requests.
    Running(Arc<Engine>),
    /// A swap is replacing the model.
    Swapping,
}

/// Server settings fixed at startup.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Requests allowed to wait for a free slot.
    pub max_queue: usize,
    /// Sequences generated at once.
    pub parallel: usize,
    /// Context size (`None`: the model's default).
    pub ctx: Option<usize>,
    /// Required bearer token.
    pub api_key: Option<String>,
    /// Connection, time and body-memory limits.
    pub limits: Limits,
    /// The browser policy's lists and where the server is bound.
    pub browser: BrowserSettings,
}

/// The browser policy as configured (see [`trillim_core::browser`]).
#[derive(Debug, Clone, Default)]
pub struct BrowserSettings {
    /// `--cors-origins`: origins allowed besides loopback ones (`*`: any).
    pub cors_origins: Vec<String>,
    /// `--allowed-hosts`: `Host` names served besides loopback ones (`*`: any).
    pub allowed_hosts: Vec<String>,
    /// The address given to `--host`.
    pub bound: String,
    /// Whether `Host` is checked (a loopback bind, or hosts listed).
    pub check_host: bool,
}

/// Shared server state.
#[derive(Debug)]
pub struct AppState {
    /// The model slot.
    pub slot: RwLock<Slot>,
    /// Held for the whole of a model swap.
    swap: tokio::sync::Mutex<()>,
    /// Threads for the next load (`threads: null` keeps this).
    pub threads: Mutex<usize>,
    /// Settings.
    pub settings: Settings,
    /// The model store.
    pub store: Store,
    /// Connection and body-memory counters.
    pub guards: Guards,
    /// What `/metrics` reports.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// State serving `engine` (if any).
    pub fn new(
        engine: Option<Engine>,
        threads: usize,
        settings: Settings,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> AppState {
        let slot = match engine {
            Some(e) => Slot::Running(Arc::new(e)),
            None => Slot::NoModel,
        };
        AppState {
            slot: RwLock::new(slot),
            swap: tokio::sync::Mutex::new(()),
            threads: Mutex::new(threads),
            guards: Guards::new(settings.limits),
            settings,
            store,
            metrics,
        }
    }

    fn engine(&self) -> Result<Arc<Engine>, ApiError> {
        match &*self.slot.read().unwrap_or_else(|e| e.into_inner()) {
            Slot::Running(e) => Ok(e.clone()),
            Slot::Swapping => Err(ApiError::swapping()),
            Slot::NoModel => Err(ApiError::no_model()),
        }
    }

    fn set_slot(&self, s: Slot) {
        *self.slot.write().unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// Checks `Origin` and `Host` against the browser policy.
    fn browser_check(&self, req: &Request<Incoming>) -> Result<(), ApiError> {
        let b = &self.settings.browser;
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
}

/// A new response id: 128 bits from the operating system's random source, so ids can neither
/// be guessed nor tell how many requests the server has seen.
fn new_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        b[..8].copy_from_slice(&random_u64().to_le_bytes());
        b[8..].copy_from_slice(&random_u64().to_le_bytes());
    }
    let mut s = String::with_capacity(32);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// A random 64-bit value (a sampling seed), from the operating system's random source; the
/// standard library's per-process hash keys and the clock if it is unavailable.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// Accepts connections until Ctrl+C or SIGTERM, then lets open connections finish (briefly).
/// Connections past `--max-connections` are answered 503 and closed ([`limits`]).
pub async fn serve(state: Arc<AppState>, listener: TcpListener) -> anyhow::Result<()> {
    let limits = state.settings.limits;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let permit = match state.guards.admit() {
                    Admission::Serve(p) => p,
                    Admission::Reject(p) => {
                        tracing::debug!(%peer, "connection limit reached: answering 503");
                        tokio::spawn(limits::reject(stream, p));
                        continue;
                    }
                    Admission::Drop => continue,
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(state, req, peer).await) }
                });
                // The head deadline runs from connection open and from the end of each
                // response, so it is the keep-alive idle timeout too; heads (and read
                // buffers) are capped at 64 KiB.
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .max_buf_size(64 * 1024)
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                break;
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(3)) => {}
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Body::full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
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
    {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

const ROUTES: &[(&str, &[Method])] = &[
    ("/health", &[Method::GET]),
    ("/metrics", &[Method::GET]),
    ("/v1/health", &[Method::GET]),
    ("/v1/models", &[Method::GET]),
    ("/v1/chat/completions", &[Method::POST]),
    ("/v1/completions", &[Method::POST]),
    ("/v1/models/load", &[Method::POST]),
];

async fn handle(state: Arc<AppState>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let rid = format!("req-{}", &new_id()[..16]);
    let span = tracing::info_span!("request", id = %rid);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let t0 = Instant::now();
    let allowed = state.browser_check(&req);
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
    let allowed: Option<&[Method]> = ROUTES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, m)| *m)
        .or(model_retrieve.as_ref().map(|_| &[Method::GET][..]));
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
    match path.as_str() {
        "/health" | "/v1/health" => health(state),
        "/metrics" => Ok(metrics(state)),
        "/v1/models" => models(state),
        "/v1/chat/completions" => {
            let body = limits::read_body(&state.guards, req).await?;
            generate(state, &body, Kind::Chat, rid).await
        }
        "/v1/completions" => {
            let body = limits::read_body(&state.guards, req).await?;
            generate(state, &body, Kind::Completion, rid).await
        }
        "/v1/models/load" => {
            let body = limits::read_body(&state.guards, req).await?;
            load(state, &body).await
        }
        _ => retrieve_model(state, model_retrieve.as_deref().unwrap_or("")),
    }
}

fn preflight(req: &Request<Incoming>) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
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

fn metrics(state: &AppState) -> Response<Body> {
    let mut r = Response::new(Body::full(state.metrics.render()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

fn health(state: &AppState) -> Result<Response<Body>, ApiError> {
    let e = state.engine()?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "ok", "model": e.shared.name}),
    ))
}

fn model_entry(e: &Engine) -> Value {
    json!({"id": e.shared.name, "object": "model", "created": e.shared.created, "owned_by": "local"})
}

fn models(state: &AppState) -> Result<Response<Body>, ApiError> {
    let data: Vec<Value> = state
        .engine()
        .ok()
        .map(|e| model_entry(&e))
        .into_iter()
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data}),
    ))
}

fn retrieve_model(state: &AppState, id: &str) -> Result<Response<Body>, ApiError> {
    match state.engine() {
        Ok(e) if e.shared.name == id || e.shared.id == id => {
            Ok(json_response(StatusCode::OK, &model_entry(&e)))
        }
        _ => Err(ApiError::not_found(format!(
            "The model '{id}' is not loaded"
        ))),
    }
}

/// Chat and completions: validate, template and tokenize, queue, then answer whole or stream.
async fn generate(
    state: &Arc<AppState>,
    body: &[u8],
    kind: Kind,
    rid: &str,
) -> Result<Response<Body>, ApiError> {
    let m = request::parse_object(body)?;
    let engine = state.engine()?;
    let shared = engine.shared.clone();
    // Parse (400 on any invalid field), then template and tokenize off the async threads.
    enum Parsed {
        Chat(request::ChatRequest),
        Completion(request::CompletionRequest),
    }
    let parsed = match kind {
        Kind::Chat => Parsed::Chat(request::chat(&m)?),
        Kind::Completion => Parsed::Completion(request::completion(&m)?),
    };
    let sh = shared.clone();
    // One (tokens, echo text) per prompt: chat has one, completions may have several.
    let (parsed, prompts) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let mut prompts = Vec::new();
        match &parsed {
            Parsed::Chat(c) => {
                let text = sh
                    .template
                    .render(&c.messages, true)
                    .map_err(|e| ApiError::invalid(e.to_string()))?;
                prompts.push((sh.tok.encode(&text, sh.template.is_fallback), None));
            }
            Parsed::Completion(c) => {
                for p in &c.prompts {
                    let (toks, text) = match p {
                        request::Prompt::Text(t) => (sh.tok.encode(t, true), t.clone()),
                        request::Prompt::Tokens(t) => {
                            if let Some(bad) = t.iter().find(|&&x| x as usize >= sh.tok.n_vocab()) {
                                return Err(ApiError::invalid_param(
                                    "prompt",
                                    format!("token id {bad} is out of range"),
                                ));
                            }
                            (t.clone(), sh.tok.decode(t))
                        }
                    };
                    prompts.push((toks, c.echo.then_some(text)));
                }
            }
        }
        Ok((parsed, prompts))
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenization failed: {e}")))??;
    let (opts, logprobs, param) = match &parsed {
        Parsed::Chat(c) => (
            c.opts.clone(),
            c.logprobs.then_some(c.top_logprobs),
            "messages",
        ),
        Parsed::Completion(c) => (c.opts.clone(), c.logprobs, "prompt"),
    };
    let echo = matches!(&parsed, Parsed::Completion(c) if c.echo);
    for (prompt, _) in &prompts {
        if prompt.is_empty() {
            return Err(ApiError::invalid_param(param, "the prompt is empty"));
        }
        // Scoring (`max_tokens: 0`) may fill the context exactly; generating needs a free cell.
        let room = if opts.max_tokens == Some(0) { 0 } else { 1 };
        if prompt.len() + room > shared.ctx {
            return Err(ApiError::context_length(prompt.len(), shared.ctx, param));
        }
    }
    if opts.stream && prompts.len() > 1 {
        return Err(ApiError::invalid_param(
            "prompt",
            "streaming supports one prompt per request",
        ));
    }
    if opts.stream && opts.n > 1 {
        return Err(ApiError::invalid_param(
            "n",
            "streaming supports n = 1; send n requests instead",
        ));
    }
    if opts.n > shared.slots {
        return Err(ApiError::invalid_param(
            "n",
            format!(
                "n may be at most {} (the server generates that many sequences at once; see --parallel)",
                shared.slots
            ),
        ));
    }
    drop(engine);
    let prefix = if kind == Kind::Chat {
        "chatcmpl-"
    } else {
        "cmpl-"
    };
    let id = format!("{prefix}{}", new_id());
    let model = opts
        .model
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| shared.name.clone());
    // Every (prompt, choice) pair is a sequence of its own; they run side by side, as many at
    // a time as the engine has slots, and are merged in order.
    let n = opts.n;
    let mut pending = Vec::new();
    for (prompt, echo_text) in prompts {
        for k in 0..n {
            let mut sampler = opts.sampler(&shared.defaults, random_u64());
            // A seeded request with n > 1 still gets n different choices, reproducibly.
            sampler.seed = sampler.seed.wrapping_add(k as u64);
            let out = Output::new(
                kind,
                id.clone(),
                model.clone(),
                shared.clone(),
                prompt.len(),
                logprobs,
                opts.include_usage,
                echo_text.clone(),
            );
            let job = Job {
                prompt: prompt.clone(),
                sampler,
                max_tokens: opts.max_tokens,
                stop: opts.stop.clone(),
                logprobs,
                echo_logprobs: echo && logprobs.is_some(),
                ignore_eos: opts.ignore_eos,
                request_id: rid.to_string(),
                events: tokio::sync::mpsc::unbounded_channel().0,
            };
            pending.push((k == 0, out, job));
        }
    }
    if opts.stream {
        let Some((_, out, job)) = pending.pop() else {
            return Err(ApiError::invalid_param(param, "no prompt given"));
        };
        let (out, rx) = start_job(state, job, out).await?;
        return Ok(stream_response(out, rx));
    }
    let wave = shared.slots.max(1);
    let mut merged: Option<Value> = None;
    let mut index = 0;
    let mut pending = pending.into_iter().peekable();
    while pending.peek().is_some() {
        let mut running = Vec::new();
        for (first, out, job) in pending.by_ref().take(wave) {
            running.push((first, start_job(state, job, out).await?));
        }
        for (first, (out, rx)) in running {
            let v = collect(out, rx).await?;
            merged = Some(match merged {
                None => v,
                Some(acc) => merge_choice(acc, v, index, first),
            });
            index += 1;
        }
    }
    let v = merged.ok_or_else(|| ApiError::invalid_param(param, "no prompt given"))?;
    Ok(json_response(StatusCode::OK, &v))
}

/// Adds response `v`'s one choice to `acc` as choice `index`, with its usage; `first` says it
/// is the first choice of its prompt (whose prompt tokens count once).
fn merge_choice(mut acc: Value, v: Value, index: usize, first: bool) -> Value {
    let mut choice = v["choices"][0].clone();
    choice["index"] = json!(index);
    if let Some(c) = acc["choices"].as_array_mut() {
        c.push(choice);
    }
    let mut keys = vec!["completion_tokens"];
    if first {
        keys.extend(["prompt_tokens", "cached_tokens"]);
    }
    for k in keys {
        let sum = acc["usage"][k].as_u64().unwrap_or(0) + v["usage"][k].as_u64().unwrap_or(0);
        acc["usage"][k] = json!(sum);
    }
    let total = acc["usage"]["prompt_tokens"].as_u64().unwrap_or(0)
        + acc["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    acc["usage"]["total_tokens"] = json!(total);
    acc["usage"]["prompt_tokens_details"]["cached_tokens"] = acc["usage"]["cached_tokens"].clone();
    acc
}

/// Queues `job` (429 when the queue is full) and waits until it leaves the queue.
async fn start_job(
    state: &AppState,
    mut job: Job,
    mut out: Output,
) -> Result<(Output, tokio::sync::mpsc::UnboundedReceiver<Event>), ApiError> {
    let (tx, mut rx) = unbounded_channel();
    job.events = tx;
    let engine = state.engine()?;
    match engine.submit(job) {
        Ok(()) => {}
        Err(SubmitError::Full) => return Err(ApiError::queue_full(state.settings.max_queue)),
        Err(SubmitError::Closed) => return Err(ApiError::swapping()),
    }
    drop(engine);
    // Errors up to the start still get a proper status.
    match rx.recv().await {
        Some(Event::Started { cached_tokens }) => out.cached_tokens = cached_tokens,
        Some(Event::Error(e)) => return Err(ApiError::generation(&e, out.kind.prompt_param())),
        Some(_) => {}
        None => return Err(ApiError::swapping()),
    }
    Ok((out, rx))
}

fn stream_response(
    mut out: Output,
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
) -> Response<Body> {
    let first = out.stream_start();
    let mut r = Response::new(Body::sse(first, rx, Box::new(out)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Gathers a whole (non-streaming) answer.
async fn collect(
    mut out: Output,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
) -> Result<Value, ApiError> {
    if out.logprobs.is_none() || out.echo.is_none() {
        out.start_offsets();
    }
    while let Some(ev) = rx.recv().await {
        let done = matches!(ev, Event::Done { .. } | Event::Error(_));
        out.absorb(ev);
        if done {
            return out.response();
        }
    }
    Err(ApiError::internal(
        "the model was unloaded before the generation finished",
    ))
}

fn store_error(e: StoreError) -> ApiError {
    match e.status() {
        403 => ApiError::forbidden(e.to_string()),
        404 => ApiError::not_found(e.to_string()),
        400 => ApiError::invalid_param("model_dir", e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

const LORA_QUANTS: &[&str] = &["none", "bf16", "int8", "q4_0", "q5_0", "q6_k", "q8_0"];

/// `POST /v1/models/load`: validate everything, load the new model while the old one keeps
/// serving, then let the old one drain its queue (new requests get 503) and switch.
async fn load(state: &Arc<AppState>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let m = request::parse_object(body)?;
    let r = request::load(&m)?;
    let not_yet = |field: &str, what: &str| {
        ApiError::invalid_param(
            field,
            format!("{what} are not available in this build yet; omit {field} or set it to null"),
        )
    };
    if r.adapter_dir.as_deref().is_some_and(|a| !a.is_empty()) {
        return Err(not_yet("adapter_dir", "LoRA adapters"));
    }
    match r.harness.as_deref().map(|h| h.trim().to_ascii_lowercase()) {
        None => {}
        Some(h) if h == "default" => {}
        Some(h) if h == "search" => {
            if let Some(p) = &r.search_provider {
                let p = p.trim().to_ascii_lowercase();
                if p != "ddgs" && p != "brave" {
                    return Err(ApiError::invalid_param(
                        "search_provider",
                        format!("Unknown search provider '{p}'. Available: brave, ddgs"),
                    ));
                }
            }
            return Err(ApiError::invalid_param(
                "harness",
                "the search harness is not available in this build yet; use harness \"default\"",
            ));
        }
        Some(h) => {
            return Err(ApiError::invalid_param(
                "harness",
                format!("Unknown harness '{h}'. Available: default, search"),
            ))
        }
    }
    if let Some(v) = &r.lora_quant {
        if !LORA_QUANTS.contains(&v.as_str()) {
            return Err(ApiError::invalid_param(
                "lora_quant",
                format!(
                    "Unknown lora_quant '{v}'. Available: {}",
                    LORA_QUANTS.join(", ")
                ),
            ));
        }
        return Err(not_yet("lora_quant", "LoRA quantization levels"));
    }
    let unembed_quant = match &r.unembed_quant {
        None => None,
        Some(v) => Some(
            UnembedQuant::parse(v).map_err(|msg| ApiError::invalid_param("unembed_quant", msg))?,
        ),
    };
    let store = state.store.clone();
    let dir = r.model_dir.clone();
    let resolved = tokio::task::spawn_blocking(move || store.resolve_api(&dir))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(store_error)?;
    let Ok(_guard) = state.swap.try_lock() else {
        return Err(ApiError::conflict("Model swap already in progress"));
    };
    let threads = match r.threads {
        Some(t) => t,
        None => *state.threads.lock().unwrap_or_else(|e| e.into_inner()),
    };
    let shape = engine::ServeShape {
        ctx: state.settings.ctx,
        threads,
        slots: state.settings.parallel,
    };
    tracing::info!(model = %resolved.id, path = %resolved.gguf.display(), "loading model");
    let res = resolved.clone();
    let t_load = Instant::now();
    let prepared = tokio::task::spawn_blocking(move || {
        engine::prepare(
            &res.id,
            &res.name,
            &res.gguf,
            res.dir.as_deref(),
            shape,
            LoadOptions { unembed_quant },
        )
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| match e {
        engine::PrepareError::Load(trillim_runtime::LoadError::Io { .. }) => {
            ApiError::internal(e.to_string())
        }
        // The error names the file and the cause once; say which model was asked for.
        other => {
            ApiError::invalid_param("model_dir", format!("cannot load {}: {other}", resolved.id))
        }
    })?;
    // Validated: now take the old model out of service and let its queue drain on it.
    let old = std::mem::replace(
        &mut *state.slot.write().unwrap_or_else(|e| e.into_inner()),
        Slot::Swapping,
    );
    if let Slot::Running(old) = old {
        tokio::task::spawn_blocking(move || old.shutdown())
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    let name = prepared.shared.name.clone();
    let recompiled = prepared.recompiled();
    state.metrics.model_loaded(
        t_load.elapsed().as_secs_f64(),
        prepared.shared.slots,
        prepared.shared.ctx,
    );
    let engine = Engine::start(prepared, state.settings.max_queue, state.metrics.clone());
    state.set_slot(Slot::Running(Arc::new(engine)));
    *state.threads.lock().unwrap_or_else(|e| e.into_inner()) = threads;
    tracing::info!(model = %resolved.id, "model swapped in");
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "success", "model": name, "recompiled": recompiled, "message": ""}),
    ))
}
