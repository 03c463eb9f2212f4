//! OpenAI responses for chat and (legacy) completions, streamed or whole. The envelopes are
//! written by the core's writer ([`trillim_core::api::write`]), the same the firmware uses;
//! this module adds what only this server has: log-probabilities, echo, the merged choices.

use std::convert::Infallible;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use trillim_core::api::write::{self as openai, Delta, Head, Usage};
use trillim_core::api::Endpoint;
use trillim_core::json::embedded_io::{ErrorType, Write};
use trillim_core::json::{JsonError, JsonWriter};

use super::error::ApiError;
use crate::engines::llm::{Event, Finish, GenerationError, ModelShared, TokenLogprob};
use crate::http::body::EventFormatter;

/// Which endpoint a generation answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
}

impl Kind {
    fn endpoint(self) -> Endpoint {
        match self {
            Kind::Chat => Endpoint::Chat,
            Kind::Completion => Endpoint::Completion,
        }
    }

    /// The request field that holds the prompt (named by errors about it).
    pub fn prompt_param(self) -> &'static str {
        match self {
            Kind::Chat => "messages",
            Kind::Completion => "prompt",
        }
    }
}

/// The state of one generation's response, fed with engine events.
pub struct Output {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub shared: Arc<ModelShared>,
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    /// Top alternatives per token when logprobs were asked for.
    pub logprobs: Option<usize>,
    pub include_usage: bool,
    /// Completions with `echo`: the prompt text, sent first.
    pub echo: Option<String>,
    /// Characters of text produced so far (for `text_offset`).
    offset: usize,
    text: String,
    lp_content: Vec<Value>,
    legacy: Legacy,
    finish: Option<Finish>,
    completion_tokens: usize,
    error: Option<GenerationError>,
    /// Chat with tools: the call format and the callable names; a reply holding calls is
    /// answered as `tool_calls`.
    pub tools: Option<(super::tools::Format, Vec<String>, bool)>,
    /// The streamed reply's tool-call parser, made on its first text.
    tool_stream: Option<super::tool_stream::ToolStream>,
}

#[derive(Default)]
struct Legacy {
    tokens: Vec<Value>,
    token_logprobs: Vec<Value>,
    top_logprobs: Vec<Value>,
    text_offset: Vec<Value>,
}

impl Legacy {
    fn to_json(&self) -> Value {
        json!({"tokens": self.tokens, "token_logprobs": self.token_logprobs,
               "top_logprobs": self.top_logprobs, "text_offset": self.text_offset})
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").field("id", &self.id).finish()
    }
}

impl Output {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: Kind,
        id: String,
        model: String,
        shared: Arc<ModelShared>,
        prompt_tokens: usize,
        logprobs: Option<usize>,
        include_usage: bool,
        echo: Option<String>,
    ) -> Output {
        Output {
            kind,
            id,
            created: crate::engines::llm::unix_now(),
            model,
            shared,
            prompt_tokens,
            cached_tokens: 0,
            logprobs,
            include_usage,
            echo,
            offset: 0,
            text: String::new(),
            lp_content: Vec::new(),
            legacy: Legacy::default(),
            finish: None,
            completion_tokens: 0,
            error: None,
            tools: None,
            tool_stream: None,
        }
    }

    fn usage(&self) -> Usage {
        Usage {
            prompt: self.prompt_tokens,
            completion: self.completion_tokens,
            cached: self.cached_tokens,
        }
    }

    fn head(&self) -> Head<'_> {
        Head {
            endpoint: self.kind.endpoint(),
            id: &self.id,
            created: self.created,
            model: &self.model,
        }
    }

    fn chat_entry(&self, t: &TokenLogprob) -> Value {
        let tok = &self.shared.tok;
        let top: Vec<Value> = t
            .top
            .iter()
            .map(|&(id, lp)| json!({"token": tok.token_text(id), "logprob": lp, "bytes": tok.token_bytes(id)}))
            .collect();
        json!({"token": tok.token_text(t.id), "logprob": t.logprob.unwrap_or(0.0),
               "bytes": tok.token_bytes(t.id), "top_logprobs": top})
    }

    /// Adds entries to a legacy logprobs object, advancing the text offset.
    fn legacy_add(&mut self, legacy_out: &mut Legacy, lps: &[TokenLogprob]) {
        let tok = &self.shared.tok;
        for t in lps {
            let text = tok.token_text(t.id);
            legacy_out.tokens.push(json!(text));
            legacy_out.token_logprobs.push(json!(t.logprob));
            legacy_out.text_offset.push(json!(self.offset));
            self.offset += text.chars().count();
            match t.logprob {
                None => legacy_out.top_logprobs.push(Value::Null),
                Some(lp) => {
                    let mut m = Map::new();
                    for &(id, l) in &t.top {
                        m.entry(tok.token_text(id)).or_insert(json!(l));
                    }
                    // The chosen token is always included, as OpenAI does.
                    m.entry(text).or_insert(json!(lp));
                    legacy_out.top_logprobs.push(Value::Object(m));
                }
            }
        }
    }

    /// Applies an event to the accumulated (non-streaming) response.
    pub fn absorb(&mut self, ev: Event) {
        match ev {
            Event::Started { cached_tokens } => self.cached_tokens = cached_tokens,
            Event::PromptLogprobs(lps) => {
                let mut l = std::mem::take(&mut self.legacy);
                self.legacy_add(&mut l, &lps);
                self.legacy = l;
                // Generated text starts after the echoed prompt text.
                self.offset = self
                    .echo
                    .as_deref()
                    .map(|e| e.chars().count())
                    .unwrap_or(self.offset);
            }
            Event::Text { text, logprobs } => {
                if self.logprobs.is_some() {
                    match self.kind {
                        Kind::Chat => {
                            let entries: Vec<Value> =
                                logprobs.iter().map(|t| self.chat_entry(t)).collect();
                            self.lp_content.extend(entries);
                        }
                        Kind::Completion => {
                            let mut l = std::mem::take(&mut self.legacy);
                            self.legacy_add(&mut l, &logprobs);
                            self.legacy = l;
                        }
                    }
                }
                self.text.push_str(&text);
            }
            Event::Done {
                finish,
                completion_tokens,
            } => {
                self.finish = Some(finish);
                self.completion_tokens = completion_tokens;
            }
            Event::Error(e) => self.error = Some(e),
        }
    }

    /// Before the first event: the echo text counts toward offsets when there are no prompt logprobs.
    pub fn start_offsets(&mut self) {
        if let Some(e) = &self.echo {
            self.offset = e.chars().count();
        }
    }

    /// The whole (non-streaming) response, or the error that ended generation.
    pub fn response(&self) -> Result<Value, ApiError> {
        if let Some(e) = &self.error {
            return Err(ApiError::generation(e, self.kind.prompt_param()));
        }
        let logprobs = self.logprobs.map(|_| match self.kind {
            Kind::Chat => json!({"content": self.lp_content, "refusal": null}).to_string(),
            Kind::Completion => self.legacy.to_json().to_string(),
        });
        let echo = self.echo.as_deref().unwrap_or("");
        let body = render(|w| {
            openai::response(
                w,
                &self.head(),
                &[echo, &self.text],
                self.finish,
                logprobs.as_deref(),
                &self.usage(),
            )
        })?;
        let mut v: Value = serde_json::from_str(&body).map_err(|e| {
            ApiError::internal(format!("response writer produced invalid JSON: {e}"))
        })?;
        if let Some((format, names, parallel)) = &self.tools {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            if let Some((before, mut calls)) =
                super::tools::parse_reply(*format, &self.text, &names)
            {
                if !parallel {
                    calls.truncate(1);
                }
                let choice = &mut v["choices"][0];
                choice["message"]["content"] = if before.is_empty() {
                    Value::Null
                } else {
                    Value::String(before)
                };
                choice["message"]["tool_calls"] =
                    Value::Array(calls.iter().map(super::tools::Call::to_openai).collect());
                choice["finish_reason"] = Value::String("tool_calls".into());
            }
        }
        Ok(v)
    }

    /// The SSE events for pieces of a streamed reply with tools.
    fn pieces(&self, pieces: Vec<super::tool_stream::Piece>) -> String {
        use super::tool_stream::Piece;
        let mut s = String::new();
        for p in pieces {
            let call = match p {
                Piece::Content(t) => {
                    s.push_str(&self.chunk(Delta::Text(&t), None));
                    continue;
                }
                Piece::Start { index, name } => json!({"index": index,
                    "id": super::tools::call_id(), "type": "function",
                    "function": {"name": name, "arguments": ""}}),
                Piece::Args { index, text } => {
                    json!({"index": index, "function": {"arguments": text}})
                }
            };
            let mut v = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "logprobs": null,
                             "finish_reason": null}],
            });
            if self.include_usage {
                v["usage"] = Value::Null;
            }
            s.push_str(&sse(&v));
        }
        s
    }

    /// The streamed reply's tool-call parser (only called when `tools` is set).
    fn tool_stream(&mut self) -> &mut super::tool_stream::ToolStream {
        let tools = &self.tools;
        self.tool_stream.get_or_insert_with(|| {
            let (format, names, parallel) =
                tools
                    .clone()
                    .unwrap_or((super::tools::Format::Hermes, Vec::new(), true));
            super::tool_stream::ToolStream::new(format, names, parallel)
        })
    }

    /// One SSE event holding a chunk of choice 0.
    fn chunk(&self, delta: Delta<'_>, logprobs: Option<&Value>) -> String {
        let lp = logprobs.map(Value::to_string);
        let head = self.head();
        let usage_null = self.include_usage;
        sse_of(render(|w| {
            openai::chunk(w, &head, delta, lp.as_deref(), usage_null)
        }))
    }

    /// The first SSE frames (role chunk for chat, echoed prompt for completions).
    pub fn stream_start(&mut self) -> String {
        match self.kind {
            Kind::Chat => self.chunk(Delta::Role, None),
            Kind::Completion => match &self.echo {
                // With prompt logprobs the echo is sent with them.
                Some(e) if self.logprobs.is_none() => {
                    let s = self.chunk(Delta::Text(e), None);
                    self.start_offsets();
                    s
                }
                _ => String::new(),
            },
        }
    }
}

/// A growable buffer for the core's writer.
#[derive(Default)]
struct Buf(Vec<u8>);

impl ErrorType for Buf {
    type Error = Infallible;
}

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> Result<usize, Infallible> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// Writes one JSON value with the core's writer.
fn render(
    f: impl FnOnce(&mut JsonWriter<Buf>) -> Result<(), JsonError<Infallible>>,
) -> Result<String, ApiError> {
    let mut w = JsonWriter::new(Buf::default());
    f(&mut w).map_err(|e| ApiError::internal(format!("cannot write the response: {e}")))?;
    String::from_utf8(w.into_inner().0)
        .map_err(|_| ApiError::internal("the response writer produced invalid UTF-8"))
}

/// One SSE event from a rendered value; a value that could not be written becomes the error
/// event.
fn sse_of(json: Result<String, ApiError>) -> String {
    match json {
        Ok(j) => format!("data: {j}\n\n"),
        Err(e) => sse(&e.body()),
    }
}

/// One SSE event.
pub fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

impl EventFormatter for Output {
    fn format(&mut self, ev: Event) -> (String, bool) {
        match ev {
            Event::Started { cached_tokens } => {
                self.cached_tokens = cached_tokens;
                (String::new(), false)
            }
            Event::PromptLogprobs(lps) => {
                let mut l = Legacy::default();
                self.legacy_add(&mut l, &lps);
                let text = self.echo.clone().unwrap_or_default();
                self.offset = text.chars().count();
                let s = self.chunk(Delta::Text(&text), Some(&l.to_json()));
                (s, false)
            }
            Event::Text { text, .. } if self.tools.is_some() && self.kind == Kind::Chat => {
                // With tools, text streams as content or as calls once it is known which.
                let pieces = self.tool_stream().push(&text);
                (self.pieces(pieces), false)
            }
            Event::Text { text, logprobs } => {
                let s = match self.kind {
                    Kind::Chat => {
                        let lp = self.logprobs.map(|_| {
                            let c: Vec<Value> =
                                logprobs.iter().map(|t| self.chat_entry(t)).collect();
                            json!({"content": c, "refusal": null})
                        });
                        self.chunk(Delta::Text(&text), lp.as_ref())
                    }
                    Kind::Completion => {
                        let lp = self.logprobs.map(|_| {
                            let mut l = Legacy::default();
                            self.legacy_add(&mut l, &logprobs);
                            l.to_json()
                        });
                        self.chunk(Delta::Text(&text), lp.as_ref())
                    }
                };
                (s, false)
            }
            Event::Done {
                finish,
                completion_tokens,
            } => {
                self.completion_tokens = completion_tokens;
                let mut s = String::new();
                let mut finish_chunk = self.chunk(Delta::Finish(finish), None);
                if self.tools.is_some() && self.kind == Kind::Chat {
                    let ts = self.tool_stream();
                    let pieces = ts.finish();
                    let called = ts.called();
                    s.push_str(&self.pieces(pieces));
                    if called {
                        finish_chunk = retag_finish(&finish_chunk, "tool_calls");
                    }
                }
                s.push_str(&finish_chunk);
                if self.include_usage {
                    let (head, usage) = (self.head(), self.usage());
                    s.push_str(&sse_of(render(|w| openai::usage_chunk(w, &head, &usage))));
                }
                s.push_str("data: [DONE]\n\n");
                (s, true)
            }
            Event::Error(e) => (
                sse(&ApiError::generation(&e, self.kind.prompt_param()).body()),
                true,
            ),
        }
    }

    fn abort(&mut self) -> String {
        sse(&ApiError::internal("the model was unloaded before the generation finished").body())
    }
}

/// A rendered finish chunk (`data: {…}\n\n`) with another `finish_reason`.
fn retag_finish(event: &str, reason: &str) -> String {
    let json = event.trim_start_matches("data: ").trim_end();
    match serde_json::from_str::<Value>(json) {
        Ok(mut v) => {
            v["choices"][0]["finish_reason"] = Value::String(reason.into());
            sse(&v)
        }
        Err(_) => event.to_string(),
    }
}
