//! The request handler. [`Firmware::new`] allocates everything the server will ever use (KV
//! cache, scratch, logits, tokenizer tables, response/prompt/text buffers) from sizes derived
//! from the model and the options; [`Firmware::handle`] then answers one complete request
//! without touching the heap. Receiving requests is the caller's job ([`crate::net`] for
//! sockets, [`Firmware::serve_connection`] for a blocking stream).

use core::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use embedded_io::{Read, Write};
use trillim_core::api::{self, Arena};
use trillim_core::browser::{BrowserPolicy, Refusal};
use trillim_core::chat::{ChatTemplate, Message};
use trillim_core::http::{self, Limits};
use trillim_core::json::{JsonError, JsonWriter};
use trillim_core::model::ModelError;
use trillim_core::sampler::{Candidate, Rng, SamplerConfig};
use trillim_core::tokenizer::{Tokenizer, TokenizerError, TokenizerMeta};
use trillim_runtime::{LoadedModel, Session, ThreadPool};

use crate::frame::{frame, Frame};
use crate::io::{Buffered, Peer};
use crate::reply::{self, respond, wfmt, Body, ErrorBody, Extra, JRes};

/// Sizes and settings chosen at start-up.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Context size in tokens (`None`: the model's, capped by [`DEFAULT_KV_BUDGET`]).
    pub ctx: Option<usize>,
    /// Threads for the forward pass.
    pub threads: usize,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// Largest request head in bytes.
    pub max_head: usize,
    /// Prompt tokens per forward step.
    pub batch: usize,
    /// Which web pages may call the API and which `Host` names are answered.
    pub browser: BrowserPolicy<'static>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ctx: None,
            threads: 1,
            max_body: crate::args::DEFAULT_MAX_BODY,
            max_head: 16 * 1024,
            batch: 32,
            browser: BrowserPolicy {
                cors_origins: &[],
                allowed_hosts: &[],
                check_host: true,
                bound: "127.0.0.1",
            },
        }
    }
}

/// Bytes of KV cache the default context size may use.
pub const DEFAULT_KV_BUDGET: usize = 32 << 20;
/// Largest piece of text sent in one SSE event.
const PIECE: usize = 512;
/// Prompt tokens fed between two checks that the client is still there.
const PREFILL_STEP: usize = 128;
/// `Access-Control-Max-Age` of a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: u32 = 600;
/// Headers a preflight allows when the browser's list cannot be echoed.
const DEFAULT_ALLOW_HEADERS: &str = "Authorization, Content-Type";

/// The fixed buffers.
struct Bufs {
    arena: Vec<u8>,
    prompt: Vec<u8>,
    tokens: Vec<u32>,
    text: Vec<u8>,
    logits: Vec<f32>,
    cands: Vec<Candidate>,
    out: Vec<u8>,
    event: Vec<u8>,
}

/// A model with everything needed to serve it.
pub struct Firmware {
    model: LoadedModel,
    pool: ThreadPool,
    session: Session,
    tok_meta: TokenizerMeta,
    tok_mem: Vec<u32>,
    /// Byte range of `tokenizer.chat_template` in the model file.
    template: Option<(usize, usize)>,
    /// Byte range of the BOS token's text in the model file.
    bos_text: (usize, usize),
    name: String,
    ctx: usize,
    limits: Limits,
    max_body: usize,
    browser: BrowserPolicy<'static>,
    bufs: Bufs,
    counter: u64,
}

impl fmt::Debug for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Firmware")
            .field("name", &self.name)
            .field("ctx", &self.ctx)
            .finish()
    }
}

/// Where `part` (a sub-slice of `whole`) lies in it.
fn range_in(whole: &[u8], part: &[u8]) -> Option<(usize, usize)> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (start + part.len() <= whole.len()).then_some((start, start + part.len()))
}

/// What every response to one request carries.
#[derive(Clone, Copy, Debug)]
struct Reply<'r> {
    keep_alive: bool,
    /// The request's `Origin`, when it is allowed (echoed for CORS).
    origin: Option<&'r str>,
}

impl Reply<'_> {
    fn extra(&self) -> Extra<'_> {
        Extra {
            origin: self.origin,
            ..Extra::default()
        }
    }
}

/// Whether a header value can be sent back verbatim (visible ASCII only).
fn echoable(v: &[u8]) -> Option<&str> {
    let ok = !v.is_empty() && v.len() <= 512 && v.iter().all(|c| (0x21..0x7F).contains(c));
    ok.then(|| std::str::from_utf8(v).ok()).flatten()
}

impl Firmware {
    /// Loads `path` and allocates every buffer.
    pub fn new(path: &Path, opts: Options) -> Result<Firmware, String> {
        let kernels = trillim_runtime::cpu::best_kernels();
        let model = LoadedModel::open(path, kernels).map_err(|e| e.to_string())?;
        Self::with_model(model, opts)
    }

    /// Serves an already loaded model.
    pub fn with_model(model: LoadedModel, opts: Options) -> Result<Firmware, String> {
        let g = model.gguf();
        let bytes = model.bytes();
        let words = Tokenizer::mem_words_for_gguf(&g).map_err(|e| e.to_string())?;
        let mut tok_mem = vec![0u32; words];
        let (tok_meta, bos, bos_text) = {
            let tok = Tokenizer::from_gguf(&g, &mut tok_mem).map_err(|e| e.to_string())?;
            let bos_text = tok
                .bos()
                .and_then(|b| range_in(bytes, tok.token_text(b)))
                .unwrap_or((0, 0));
            (tok.meta(), tok.bos(), bos_text)
        };
        let template = g
            .get_str("tokenizer.chat_template")
            .and_then(|t| range_in(bytes, t.as_bytes()));
        if let Some((a, b)) = template {
            let t = std::str::from_utf8(&bytes[a..b]).ok();
            if let Err(e) = ChatTemplate::detect(t) {
                eprintln!("warning: {e}; /v1/chat/completions will answer 400");
            }
        }
        let c = &model.config;
        let ctx = opts.ctx.unwrap_or_else(|| {
            let by_mem = (DEFAULT_KV_BUDGET / model.kv_bytes_per_pos().max(1)) / 256 * 256;
            c.default_ctx().min(by_mem.max(256))
        });
        let n_vocab = c.n_vocab;
        let mut session = Session::new(&model, ctx, opts.batch);
        let pool = ThreadPool::new(opts.threads);
        // One forward step sizes the session's logits buffer once and for all.
        session
            .feed(&model, &pool, &[bos.unwrap_or(0)], 1)
            .map_err(|e| e.to_string())?;
        session.rewind(0);

        let max_head = opts.max_head.max(1024);
        // Template text around the messages: role headers and a default system prompt.
        let prompt_cap = opts.max_body + api::MAX_MESSAGES * 64 + 4096;
        let bufs = Bufs {
            arena: vec![0; opts.max_body],
            prompt: vec![0; prompt_cap],
            // `encode` may use up to `max_tokens` words (SentencePiece: 2 per byte).
            tokens: vec![0; 2 * prompt_cap + 3],
            text: vec![0; (ctx * 32).clamp(64 << 10, 4 << 20)],
            logits: vec![0.0; n_vocab],
            cands: vec![Candidate::default(); n_vocab],
            out: vec![0; 16 << 10],
            event: vec![0; 8 << 10],
        };
        let mut name: String = model
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("model")
            .trim_end_matches(".gguf")
            .chars()
            .take(128)
            .collect();
        name.shrink_to_fit();
        Ok(Firmware {
            model,
            pool,
            session,
            tok_meta,
            tok_mem,
            template,
            bos_text,
            name,
            ctx,
            limits: Limits {
                max_head,
                max_headers: http::MAX_HEADERS,
            },
            max_body: opts.max_body,
            browser: opts.browser,
            bufs,
            counter: 0,
        })
    }

    /// The model's name as served by `/v1/models`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Context size in tokens.
    pub fn ctx(&self) -> usize {
        self.ctx
    }

    /// Limits on a request head.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Largest request body in bytes.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Bytes a buffer must have to hold any request this server accepts.
    pub fn request_capacity(&self) -> usize {
        self.limits.max_head + self.max_body
    }

    /// Bytes of memory held besides the mapped model file (request buffers are the
    /// caller's).
    pub fn memory_bytes(&self) -> usize {
        let b = &self.bufs;
        self.session.memory_bytes()
            + self.tok_mem.len() * 4
            + b.arena.len()
            + b.prompt.len()
            + b.tokens.len() * 4
            + b.text.len()
            + b.logits.len() * 4
            + b.cands.len() * size_of::<Candidate>()
            + b.out.len()
            + b.event.len()
    }

    /// Serves requests read from the blocking stream `s` into `buf` (at least
    /// [`request_capacity`](Self::request_capacity) bytes) until the client closes it or asks
    /// to, or an error ends it.
    pub fn serve_connection<S: Read + Peer>(
        &mut self,
        s: &mut S,
        buf: &mut [u8],
    ) -> Result<(), S::Error> {
        let mut filled = 0;
        loop {
            let mut continued = false;
            let end = loop {
                match frame(&buf[..filled], &self.limits, self.max_body) {
                    Frame::Complete { end } => break end,
                    Frame::Reject(r) => {
                        reply::error_close(s, &r.body(), &Extra::default())?;
                        return Ok(());
                    }
                    Frame::Head {
                        expect_continue: true,
                        ..
                    } if !continued => {
                        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
                        s.flush()?;
                        continued = true;
                    }
                    _ => {}
                }
                if filled == buf.len() {
                    return Ok(());
                }
                let n = s.read(&mut buf[filled..])?;
                if n == 0 {
                    return Ok(());
                }
                filled += n;
            };
            let keep = self.handle(s, &buf[..end])?;
            buf.copy_within(end..filled, 0);
            filled -= end;
            if !keep {
                return Ok(());
            }
        }
    }

    /// Answers one complete request (`request` holds its head and body, as framed by
    /// [`frame`](crate::frame::frame)); returns whether the connection stays open. Between
    /// generated tokens it asks [`Peer::alive`] whether to go on.
    pub fn handle<S: Peer>(&mut self, s: &mut S, request: &[u8]) -> Result<bool, S::Error> {
        let req = match http::parse(request, &self.limits) {
            Ok(r) => r,
            Err(e) => {
                let b = ErrorBody::new(e.status(), &e);
                return respond(
                    s,
                    &mut self.bufs.out,
                    b.status,
                    false,
                    &Extra::default(),
                    &b,
                );
            }
        };
        let end = (req.head_len + req.content_length).min(request.len());
        let body = &request[req.head_len.min(end)..end];
        let origin = req.header("origin");
        let refused = self.browser.check(origin, req.header("host")).err();
        let echo = origin.and_then(echoable);
        let refused = refused.or((origin.is_some() && echo.is_none()).then_some(Refusal::Origin));
        let r = Reply {
            keep_alive: req.keep_alive,
            origin: echo,
        };
        if let Some(why) = refused {
            let (header, value, flag, code) = match why {
                Refusal::Origin => ("Origin", origin, "--cors-origins", "origin_not_allowed"),
                Refusal::Host => (
                    "Host",
                    req.header("host"),
                    "--allowed-hosts",
                    "host_not_allowed",
                ),
            };
            let msg = Refused {
                header,
                value: value.unwrap_or_default(),
                flag,
            };
            let b = ErrorBody::new(403, &msg).code(code);
            let extra = Extra::default();
            return respond(s, &mut self.bufs.out, 403, r.keep_alive, &extra, &b);
        }
        self.route(s, &req, body, r)
    }

    fn route<S: Peer>(
        &mut self,
        s: &mut S,
        req: &http::Request<'_>,
        body: &[u8],
        r: Reply<'_>,
    ) -> Result<bool, S::Error> {
        let path = req.path.trim_end_matches('/');
        let (endpoint, allowed) = match path {
            "/health" | "/v1/health" => (Route::Health, "GET"),
            "/v1/models" | "/models" => (Route::Models, "GET"),
            "/v1/chat/completions" | "/chat/completions" => {
                (Route::Generate(Endpoint::Chat), "POST")
            }
            "/v1/completions" | "/completions" => (Route::Generate(Endpoint::Completion), "POST"),
            _ => {
                let msg = NotFound(req.path);
                let b = ErrorBody::new(404, &msg).code("not_found");
                return respond(s, &mut self.bufs.out, 404, r.keep_alive, &r.extra(), &b);
            }
        };
        let methods = match allowed {
            "GET" => "GET, OPTIONS",
            _ => "POST, OPTIONS",
        };
        if req.method == "OPTIONS" {
            return preflight(s, req, methods, r);
        }
        if req.method != allowed {
            let msg = NotAllowed(req.method, req.path);
            let b = ErrorBody::new(405, &msg).code("method_not_allowed");
            let extra = Extra {
                allow: Some(methods),
                ..r.extra()
            };
            return respond(s, &mut self.bufs.out, 405, r.keep_alive, &extra, &b);
        }
        match endpoint {
            Route::Health => {
                let b = HealthBody { name: &self.name };
                respond(s, &mut self.bufs.out, 200, r.keep_alive, &r.extra(), &b)
            }
            Route::Models => {
                let b = ModelsBody { name: &self.name };
                respond(s, &mut self.bufs.out, 200, r.keep_alive, &r.extra(), &b)
            }
            Route::Generate(kind) => self.generate(s, kind, body, r),
        }
    }

    /// `/v1/chat/completions` and `/v1/completions`.
    fn generate<S: Peer>(
        &mut self,
        s: &mut S,
        kind: Endpoint,
        body: &[u8],
        r: Reply<'_>,
    ) -> Result<bool, S::Error> {
        self.counter += 1;
        let Firmware {
            model,
            pool,
            session,
            tok_meta,
            tok_mem,
            template,
            bos_text,
            name,
            ctx,
            bufs,
            counter,
            ..
        } = self;
        let Bufs {
            arena,
            prompt,
            tokens,
            text,
            logits,
            cands,
            out,
            event,
            ..
        } = bufs;
        let ctx = *ctx;
        let ka = r.keep_alive;
        let extra = r.extra();
        let bytes = model.bytes();
        let err =
            |s: &mut S, out: &mut [u8], b: ErrorBody<'_>| respond(s, out, b.status, ka, &extra, &b);
        let tok = match Tokenizer::from_parts(*tok_meta, bytes, tok_mem) {
            Ok(t) => t,
            Err(e) => return err(s, out, ErrorBody::new(500, &e)),
        };
        let mut arena = Arena::new(arena);
        const BAD_ESCAPE: &str = "invalid string escape in the request body";

        // The prompt text and request options.
        let (prompt_text, add_special, params, raw_stops) = match kind {
            Endpoint::Chat => {
                let req = match api::parse_chat(body) {
                    Ok(r) => r,
                    Err(e) => return err(s, out, ErrorBody::new(400, &e).param(e.param())),
                };
                let mut msgs = [Message {
                    role: "",
                    content: "",
                }; api::MAX_MESSAGES];
                for (m, raw) in msgs.iter_mut().zip(&req.messages) {
                    match (arena.unescape_one(raw.role), arena.unescape(&raw.content)) {
                        (Ok(role), Ok(content)) => *m = Message { role, content },
                        _ => return err(s, out, invalid(&BAD_ESCAPE, "messages")),
                    }
                }
                let ttext = template.and_then(|(a, b)| std::str::from_utf8(&bytes[a..b]).ok());
                let t = match ChatTemplate::detect(ttext) {
                    Ok(t) => t,
                    Err(e) => return err(s, out, ErrorBody::new(400, &e).param(Some("messages"))),
                };
                let bos = std::str::from_utf8(&bytes[bos_text.0..bos_text.1]).unwrap_or("");
                let n = req.messages.len();
                match t.render(&msgs[..n], true, bos, None, prompt) {
                    Ok(p) => (p, !t.bos, req.params, req.stop),
                    Err(e) => return err(s, out, ErrorBody::new(400, &e).param(Some("messages"))),
                }
            }
            Endpoint::Completion => {
                let req = match api::parse_completion(body) {
                    Ok(r) => r,
                    Err(e) => return err(s, out, ErrorBody::new(400, &e).param(e.param())),
                };
                match arena.unescape_one(req.prompt) {
                    Ok(p) => (p, true, req.params, req.stop),
                    Err(_) => return err(s, out, invalid(&BAD_ESCAPE, "prompt")),
                }
            }
        };
        let mut stops = [""; api::MAX_STOP];
        for (d, raw) in stops.iter_mut().zip(&raw_stops) {
            match arena.unescape_one(*raw) {
                Ok(t) => *d = t,
                Err(_) => return err(s, out, invalid(&BAD_ESCAPE, "stop")),
            }
        }
        let stops = &stops[..raw_stops.len()];
        let param = match kind {
            Endpoint::Chat => "messages",
            Endpoint::Completion => "prompt",
        };

        // Tokens.
        let n = match tok.encode(prompt_text, add_special, true, tokens) {
            Ok(n) => n,
            Err(TokenizerError::OutputTooSmall) => usize::MAX,
            Err(e) => return err(s, out, ErrorBody::new(400, &e).param(Some(param))),
        };
        let n = if n == 0 {
            match tok.bos() {
                Some(b) => {
                    tokens[0] = b;
                    1
                }
                None => return err(s, out, invalid(&"the prompt is empty", param)),
            }
        } else {
            n
        };
        if !prompt_fits(n, params.max_tokens, ctx) {
            let m = ContextLength { n, ctx };
            let b = ErrorBody::new(400, &m)
                .param(Some(param))
                .code("context_length_exceeded");
            return err(s, out, b);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let seed = now.as_nanos() as u64 ^ counter.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let cfg = params.sampler(&SamplerConfig::default(), seed);
        let mut id: heapless::String<48> = heapless::String::new();
        let _ = fmt::Write::write_fmt(
            &mut id,
            format_args!(
                "{}{:016x}",
                id_prefix(kind),
                Rng::new(seed ^ *counter).next_u64()
            ),
        );
        let head = Head {
            endpoint: kind,
            id: &id,
            created: now.as_secs(),
            model: name,
        };
        let mut gen = Gen {
            model,
            pool,
            session,
            tok,
            text,
            logits,
            cands,
        };
        let prompt_tokens = &tokens[..n];

        if !params.stream {
            let mut sink = Quiet(&mut *s);
            let o = match gen.run(prompt_tokens, &params, &cfg, stops, &mut sink) {
                Ok(o) if o.cancelled => return Ok(false),
                Ok(o) => o,
                Err(e) => return err(s, out, ErrorBody::new(500, &e)),
            };
            let b = FullBody {
                head: &head,
                text: std::str::from_utf8(&gen.text[..o.text_len]).unwrap_or(""),
                finish: o.finish,
                usage: usage(n, &o),
            };
            return respond(s, out, 200, ka, &extra, &b);
        }

        // Streaming: chunked transfer for HTTP/1.1; HTTP/1.0 gets the raw stream and a close.
        let chunked = ka;
        let mut w = Buffered::new(&mut *s, out);
        wfmt(
            &mut w,
            format_args!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n{}",
                if chunked {
                    "Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n"
                } else {
                    "Connection: close\r\n"
                }
            ),
        )?;
        extra.write(&mut w)?;
        w.write_all(b"\r\n")?;
        let mut sink = Events {
            w,
            buf: event,
            chunked,
            head: &head,
            include_usage: params.include_usage,
            err: None,
        };
        if kind == Endpoint::Chat {
            sink.send(Event::Role);
        }
        let r = gen.run(prompt_tokens, &params, &cfg, stops, &mut sink);
        match r {
            Ok(o) if o.cancelled => {
                return match sink.err.take() {
                    Some(e) => Err(e),
                    None => Ok(false),
                }
            }
            Ok(o) => {
                sink.send(Event::Finish(o.finish));
                if params.include_usage {
                    sink.send(Event::Usage(usage(n, &o)));
                }
            }
            Err(e) => {
                sink.send(Event::Error(&e));
            }
        }
        sink.send(Event::Done);
        if let Some(e) = sink.err {
            return Err(e);
        }
        let mut w = sink.w;
        if chunked {
            w.write_all(b"0\r\n\r\n")?;
        }
        w.flush()?;
        Ok(chunked)
    }
}

/// Answers a CORS preflight (`OPTIONS`) for a route serving `methods`.
fn preflight<S: Write>(
    s: &mut S,
    req: &http::Request<'_>,
    methods: &str,
    r: Reply<'_>,
) -> Result<bool, S::Error> {
    let conn = if r.keep_alive { "keep-alive" } else { "close" };
    wfmt(
        s,
        format_args!("HTTP/1.1 204 No Content\r\nConnection: {conn}\r\n"),
    )?;
    match r.origin {
        Some(o) => {
            // The browser's own list of headers, when it is a plain list of names.
            let asked = req
                .header("access-control-request-headers")
                .and_then(|h| {
                    let names = h.iter().all(|&c| c == b',' || c == b' ' || is_tchar(c));
                    (names && h.len() <= 512).then(|| std::str::from_utf8(h).ok())?
                })
                .filter(|h| !h.trim().is_empty())
                .unwrap_or(DEFAULT_ALLOW_HEADERS);
            wfmt(
                s,
                format_args!(
                    "Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n\
                     Access-Control-Allow-Methods: {methods}\r\n\
                     Access-Control-Allow-Headers: {asked}\r\n\
                     Access-Control-Max-Age: {PREFLIGHT_MAX_AGE}\r\n"
                ),
            )?;
        }
        None => wfmt(s, format_args!("Allow: {methods}\r\n"))?,
    }
    s.write_all(b"\r\n")?;
    s.flush()?;
    Ok(r.keep_alive)
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// A 400 naming the field at fault.
fn invalid<'a>(msg: &'a &'static str, param: &'a str) -> ErrorBody<'a> {
    ErrorBody::new(400, msg).param(Some(param))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Health,
    Models,
    Generate(Endpoint),
}

use trillim_core::api::write::{self as openai, Delta, Head, Usage};
use trillim_core::api::{Endpoint, GenParams};

/// The start of a response id (`chatcmpl-…`, `cmpl-…`).
fn id_prefix(kind: Endpoint) -> &'static str {
    match kind {
        Endpoint::Chat => "chatcmpl-",
        Endpoint::Completion => "cmpl-",
    }
}
pub use trillim_core::generate::Finish;
use trillim_core::generate::{prompt_fits, Decoder, End, StepIo};

/// The result of one generation.
#[derive(Clone, Copy, Debug)]
struct Outcome {
    finish: Finish,
    completion_tokens: usize,
    cached: usize,
    text_len: usize,
    /// The client went away; nothing is to be sent.
    cancelled: bool,
}

/// Borrowed state of one generation.
struct Gen<'a> {
    model: &'a LoadedModel,
    pool: &'a ThreadPool,
    session: &'a mut Session,
    tok: Tokenizer<'a>,
    text: &'a mut [u8],
    logits: &'a mut [f32],
    cands: &'a mut [Candidate],
}

/// Emits `bytes` (valid UTF-8) in pieces of at most [`PIECE`] bytes.
fn emit_pieces(mut bytes: &[u8], emit: &mut dyn FnMut(&str) -> bool) -> bool {
    while !bytes.is_empty() {
        let mut k = bytes.len().min(PIECE);
        while k < bytes.len() && (bytes[k] & 0xC0) == 0x80 {
            k -= 1;
        }
        if k == 0 {
            k = bytes.len();
        }
        let s = std::str::from_utf8(&bytes[..k]).unwrap_or("");
        if !emit(s) {
            return false;
        }
        bytes = &bytes[k..];
    }
    true
}

impl Gen<'_> {
    fn feed(
        session: &mut Session,
        model: &LoadedModel,
        pool: &ThreadPool,
        logits: &mut [f32],
        tokens: &[u32],
    ) -> Result<(), ModelError> {
        let l = session.feed(model, pool, tokens, 1)?;
        let n = logits.len().min(l.len());
        logits[..n].copy_from_slice(&l[..n]);
        Ok(())
    }

    /// Generates after `prompt` with the shared step machine; `keep`: the text stays in the
    /// text buffer for a response written at the end.
    fn run(
        &mut self,
        prompt: &[u32],
        params: &GenParams,
        cfg: &SamplerConfig,
        stops: &[&str],
        sink: &mut dyn Sink,
    ) -> Result<Outcome, ModelError> {
        let cached = self.session.reuse_prefix(prompt);
        let mut o = Outcome {
            finish: Finish::Length,
            completion_tokens: 0,
            cached,
            text_len: 0,
            cancelled: false,
        };
        for step in prompt[cached..].chunks(PREFILL_STEP) {
            if !sink.alive() {
                o.cancelled = true;
                return Ok(o);
            }
            Self::feed(self.session, self.model, self.pool, self.logits, step)?;
        }
        let keep = !params.stream;
        let mut dec = Decoder::new(
            *cfg,
            params.max_tokens,
            params.ignore_eos,
            self.session.capacity(),
            &mut *self.text,
            keep,
        );
        let end = loop {
            let step = dec.step(
                &self.tok,
                StepIo {
                    logits: self.logits,
                    history: self.session.tokens(),
                    cands: self.cands,
                    stops,
                    logprobs: None,
                    emit: &mut |p| emit_pieces(p.as_bytes(), &mut |q| sink.text(q)),
                },
            );
            match (step.end, step.token) {
                (Some(end), _) => break end,
                (None, Some(t)) => {
                    Self::feed(self.session, self.model, self.pool, self.logits, &[t])?;
                    if !sink.alive() {
                        break End::Halted;
                    }
                }
                (None, None) => break End::Finished(Finish::Length),
            }
        };
        let end = match end {
            End::Halted => End::Halted,
            e => dec.finish(e, stops, &mut |p| {
                emit_pieces(p.as_bytes(), &mut |q| sink.text(q))
            }),
        };
        o.completion_tokens = dec.generated();
        o.text_len = dec.text().len();
        match end {
            End::Finished(f) => o.finish = f,
            End::Halted => o.cancelled = true,
        }
        Ok(o)
    }
}

/// Where a generation's text goes, and whether it goes on.
trait Sink {
    /// Takes a piece of text; false stops the generation (the client is gone).
    fn text(&mut self, piece: &str) -> bool;
    /// Asked between prefill steps and tokens; false cancels the generation.
    fn alive(&mut self) -> bool;
}

/// A non-streaming generation: the text is collected, the peer only watched.
struct Quiet<'s, S>(&'s mut S);

impl<S: Peer> Sink for Quiet<'_, S> {
    fn text(&mut self, _: &str) -> bool {
        true
    }
    fn alive(&mut self) -> bool {
        self.0.alive()
    }
}

/// A streaming generation: every piece of text is sent as an SSE event.
struct Events<'a, 's, S: Write> {
    w: Buffered<'a, &'s mut S>,
    buf: &'a mut [u8],
    chunked: bool,
    head: &'a Head<'a>,
    include_usage: bool,
    /// The first write error; nothing more is sent after it.
    err: Option<S::Error>,
}

impl<S: Write> Events<'_, '_, S> {
    fn send(&mut self, ev: Event<'_>) -> bool {
        if self.err.is_some() {
            return false;
        }
        let r = send_event(
            &mut self.w,
            self.buf,
            self.chunked,
            self.head,
            ev,
            self.include_usage,
        );
        match r {
            Ok(()) => true,
            Err(e) => {
                self.err = Some(e);
                false
            }
        }
    }
}

impl<S: Peer> Sink for Events<'_, '_, S> {
    fn text(&mut self, piece: &str) -> bool {
        self.send(Event::Content(piece))
    }
    fn alive(&mut self) -> bool {
        self.err.is_none() && self.w.inner_mut().alive()
    }
}

/// The token counts of a generation of `prompt` prompt tokens.
fn usage(prompt: usize, o: &Outcome) -> Usage {
    Usage {
        prompt,
        completion: o.completion_tokens,
        cached: o.cached,
    }
}

struct FullBody<'a> {
    head: &'a Head<'a>,
    text: &'a str,
    finish: Finish,
    usage: Usage,
}

impl Body for FullBody<'_> {
    fn write<W: Write>(&self, w: &mut JsonWriter<W>) -> JRes<W> {
        openai::response(
            w,
            self.head,
            &[self.text],
            Some(self.finish),
            None,
            &self.usage,
        )
    }
}

/// `{"status":"ok","model":NAME}`, as the desktop server answers `/health`.
struct HealthBody<'a> {
    name: &'a str,
}

impl Body for HealthBody<'_> {
    fn write<W: Write>(&self, w: &mut JsonWriter<W>) -> JRes<W> {
        w.begin_object()?;
        w.key("status")?;
        w.string("ok")?;
        w.key("model")?;
        w.string(self.name)?;
        w.end_object()
    }
}

struct ModelsBody<'a> {
    name: &'a str,
}

impl Body for ModelsBody<'_> {
    fn write<W: Write>(&self, w: &mut JsonWriter<W>) -> JRes<W> {
        w.begin_object()?;
        w.key("object")?;
        w.string("list")?;
        w.key("data")?;
        w.begin_array()?;
        w.begin_object()?;
        w.key("id")?;
        w.string(self.name)?;
        w.key("object")?;
        w.string("model")?;
        w.key("created")?;
        w.u64(0)?;
        w.key("owned_by")?;
        w.string("local")?;
        w.end_object()?;
        w.end_array()?;
        w.end_object()
    }
}

enum Event<'a> {
    Role,
    Content(&'a str),
    Finish(Finish),
    Usage(Usage),
    Error(&'a ModelError),
    Done,
}

/// Writes one SSE event (a chunk of the chunked body when `chunked`) and flushes it.
fn send_event<W: Write>(
    w: &mut W,
    buf: &mut [u8],
    chunked: bool,
    h: &Head<'_>,
    ev: Event<'_>,
    include_usage: bool,
) -> Result<(), W::Error> {
    let cap = buf.len();
    let mut slice: &mut [u8] = buf;
    let r = (|| -> JRes<&mut [u8]> {
        let sl = &mut slice;
        if let Event::Done = ev {
            return sl.write_all(b"data: [DONE]\n\n").map_err(JsonError::Io);
        }
        sl.write_all(b"data: ").map_err(JsonError::Io)?;
        let mut j = JsonWriter::new(&mut *sl);
        match ev {
            Event::Error(e) => ErrorBody::new(500, e).write(&mut j)?,
            Event::Usage(u) => openai::usage_chunk(&mut j, h, &u)?,
            Event::Role => openai::chunk(&mut j, h, Delta::Role, None, include_usage)?,
            Event::Content(c) => openai::chunk(&mut j, h, Delta::Text(c), None, include_usage)?,
            Event::Finish(f) => openai::chunk(&mut j, h, Delta::Finish(f), None, include_usage)?,
            Event::Done => {}
        }
        sl.write_all(b"\n\n").map_err(JsonError::Io)
    })();
    if r.is_err() {
        // An event larger than its buffer: cannot happen with PIECE-sized content.
        return Ok(());
    }
    let len = cap - slice.len();
    if chunked {
        wfmt(w, format_args!("{len:x}\r\n"))?;
    }
    w.write_all(&buf[..len])?;
    if chunked {
        w.write_all(b"\r\n")?;
    }
    w.flush()
}

struct NotFound<'a>(&'a str);
impl fmt::Display for NotFound<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Unknown endpoint: {}", self.0)
    }
}

struct NotAllowed<'a>(&'a str, &'a str);
impl fmt::Display for NotAllowed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Method {} is not allowed for {}", self.0, self.1)
    }
}

struct ContextLength {
    n: usize,
    ctx: usize,
}
impl fmt::Display for ContextLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.n == usize::MAX {
            write!(
                f,
                "This model's maximum context length is {} tokens; the prompt is longer",
                self.ctx
            )
        } else {
            write!(
                f,
                "This model's maximum context length is {} tokens. However, your prompt is {} tokens",
                self.ctx, self.n
            )
        }
    }
}

/// The 403 of the browser policy.
struct Refused<'a> {
    header: &'static str,
    value: &'a [u8],
    flag: &'static str,
}
impl fmt::Display for Refused<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '", self.header)?;
        for &c in self.value.iter().take(200) {
            let c = if (0x20..0x7F).contains(&c) {
                c as char
            } else {
                '?'
            };
            fmt::Write::write_char(f, c)?;
        }
        write!(
            f,
            "' is not allowed; start the firmware with {} to allow it",
            self.flag
        )
    }
}
