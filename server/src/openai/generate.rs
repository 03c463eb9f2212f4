//! `POST /v1/chat/completions` and `/v1/completions`: validate, template and tokenize, queue
//! one job per (prompt, choice), then answer whole or stream.

use std::sync::Arc;

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc::unbounded_channel;
use trillim_core::generate::prompt_fits;

use super::output::{Kind, Output};
use super::tools;
use super::{request, ApiError};
use crate::engines::llm::{Event, Job, SubmitError};
use crate::harness::{self, run::SearchRequest, Harness};
use crate::http::body::Body;
use crate::http::router::json_response;
use crate::state::{new_id, random_u64, AppState};

/// Chat and completions: validate, template and tokenize, queue, then answer whole or stream.
pub(crate) async fn generate(
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
    let mut parsed = match kind {
        Kind::Chat => Parsed::Chat(request::chat(&m)?),
        Kind::Completion => Parsed::Completion(request::completion(&m)?),
    };
    let mut grammar = super::schema::response_format(body)?;
    let format = tools::Format::of_template(shared.template.source());
    // A forced call (tool_choice required or named): the prompt opens the call, and the
    // grammar makes the rest a well-formed call.
    let mut prefill = "";
    if let Parsed::Chat(c) = &parsed {
        if let Some(t) = &c.tools {
            if let Some(g) = tools::forced_grammar(body, t, format)? {
                if grammar.is_some() {
                    return Err(ApiError::invalid_param(
                        "tool_choice",
                        "a forced tool call cannot be combined with response_format",
                    ));
                }
                grammar = Some(g);
                if format == tools::Format::Hermes {
                    prefill = "<tool_call>\n";
                }
            }
        }
    }
    match &mut parsed {
        Parsed::Chat(c) => c.opts.grammar = grammar,
        Parsed::Completion(c) => c.opts.grammar = grammar,
    }
    let sh = shared.clone();
    // One (tokens, echo text) per prompt: chat has one, completions may have several.
    let (parsed, prompts) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let mut prompts = Vec::new();
        match &parsed {
            Parsed::Chat(c) => {
                let text = sh
                    .template
                    .render_with_tools(
                        &c.messages,
                        c.tools.as_ref().and_then(|t| t.for_template()),
                        true,
                    )
                    .map_err(|e| ApiError::invalid(e.to_string()))?
                    + prefill;
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
        if !prompt_fits(prompt.len(), opts.max_tokens, shared.ctx) {
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
    let harness = state.harness();
    if let (Parsed::Chat(c), Harness::Search(provider)) = (&parsed, harness.harness) {
        let markers = search_markers(&m)?.unwrap_or(harness.markers);
        if opts.n > 1 {
            return Err(ApiError::invalid_param(
                "n",
                "the search harness answers with one choice; send n = 1",
            ));
        }
        if opts.grammar.is_some() {
            return Err(ApiError::invalid_param(
                "response_format",
                "the search harness answers in text; response_format json_object/json_schema \
                 needs a model loaded without it (or use /v1/completions)",
            ));
        }
        let Some((prompt, _)) = prompts.into_iter().next() else {
            return Err(ApiError::invalid_param(param, "no prompt given"));
        };
        let out = Output::new(
            kind,
            id,
            model,
            shared.clone(),
            prompt.len(),
            logprobs,
            opts.include_usage,
            None,
        );
        let req = SearchRequest {
            messages: c.messages.clone(),
            prompt,
            sampler: opts.sampler(&shared.defaults, random_u64()),
            max_tokens: opts.max_tokens,
            stop: opts.stop.clone(),
            logprobs,
            ignore_eos: opts.ignore_eos,
            request_id: rid.to_string(),
            provider,
            markers,
            max_queue: state.settings.max_queue,
        };
        return harness::run::respond(engine, req, out, opts.stream).await;
    }
    drop(engine);
    // Every (prompt, choice) pair is a sequence of its own; they run side by side, as many at
    // a time as the engine has slots, and are merged in order.
    let n = opts.n;
    let tool_names = match &parsed {
        Parsed::Chat(c) => c.tools.as_ref().and_then(|t| {
            t.for_template().map(|defs| {
                let names = match &t.choice {
                    tools::ToolChoice::Named(n) => vec![n.clone()],
                    _ => defs
                        .iter()
                        .filter_map(|d| d["function"]["name"].as_str().map(String::from))
                        .collect(),
                };
                (format, names, t.parallel)
            })
        }),
        Parsed::Completion(_) => None,
    };
    let mut pending = Vec::new();
    for (prompt, echo_text) in prompts {
        for k in 0..n {
            let mut sampler = opts.sampler(&shared.defaults, random_u64());
            // A seeded request with n > 1 still gets n different choices, reproducibly.
            sampler.seed = sampler.seed.wrapping_add(k as u64);
            let mut out = Output::new(
                kind,
                id.clone(),
                model.clone(),
                shared.clone(),
                prompt.len(),
                logprobs,
                opts.include_usage,
                echo_text.clone(),
            );
            out.tools = tool_names.clone();
            let job = Job {
                prompt: prompt.clone(),
                sampler,
                max_tokens: opts.max_tokens,
                stop: opts.stop.clone(),
                logprobs,
                echo_logprobs: echo && logprobs.is_some(),
                ignore_eos: opts.ignore_eos,
                grammar: opts.grammar.clone(),
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

/// The streamed response fed by `rx`, starting with the first frames of `out`.
pub(crate) fn stream_response(
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

/// The opt-in for the search harness's progress markers in streamed content
/// (`"search_markers": true`; `None`: the load's default).
pub(crate) fn search_markers(m: &serde_json::Map<String, Value>) -> Result<Option<bool>, ApiError> {
    match m.get("search_markers") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid_param(
            "search_markers",
            "search_markers must be a boolean",
        )),
    }
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
