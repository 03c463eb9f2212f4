//! Parsing and validating request bodies. Bodies are read as JSON values and checked field by
//! field so every mistake gets a 400 naming the field; unknown fields are ignored. Types are
//! strict: a number or boolean sent as a string (`"max_tokens": "9"`) is a mistake. The
//! generation fields then go through the rules the firmware applies too
//! ([`trillim_core::api::validate`]), so both servers refuse the same values the same way.

use serde_json::{Map, Value};
use trillim_core::api::{self, Capabilities, Endpoint, GenParams};
use trillim_core::sampler::{SamplerConfig, SamplerOverrides};

use std::sync::Arc;

use super::error::ApiError;
use crate::engines::llm::grammar::Grammar;
use crate::template::Message;

/// Options shared by chat and completions.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// `model` as sent (echoed back).
    pub model: Option<String>,
    /// Sampling overrides (validated).
    pub sampling: SamplerOverrides,
    /// `max_completion_tokens` or `max_tokens`.
    pub max_tokens: Option<usize>,
    /// Stop strings (at most 4).
    pub stop: Vec<String>,
    /// SSE streaming.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// `ignore_eos`: generate until `max_tokens` or the context, past end-of-generation tokens.
    pub ignore_eos: bool,
    /// `n`: choices per prompt (each its own sequence).
    pub n: usize,
    /// `response_format` other than text: the grammar the output is masked to.
    pub grammar: Option<Arc<Grammar>>,
}

impl GenOptions {
    /// The sampler configuration: request values over the model's defaults.
    pub fn sampler(&self, defaults: &SamplerConfig, random_seed: u64) -> SamplerConfig {
        self.sampling.apply(defaults, random_seed)
    }
}

/// A chat completion request.
#[derive(Debug)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub opts: GenOptions,
    /// `logprobs: true`.
    pub logprobs: bool,
    /// `top_logprobs` (0..=20).
    pub top_logprobs: usize,
    /// `tools` with `tool_choice`; `None` when no tools were sent.
    pub tools: Option<super::tools::Tools>,
}

/// What `/v1/completions` was asked to complete.
#[derive(Debug)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

/// A (legacy) completion request.
#[derive(Debug)]
pub struct CompletionRequest {
    /// One or more prompts (several only without streaming).
    pub prompts: Vec<Prompt>,
    pub opts: GenOptions,
    /// `logprobs` (0..=5).
    pub logprobs: Option<usize>,
    pub echo: bool,
}

/// A model load request.
#[derive(Debug)]
pub struct LoadRequest {
    pub model_dir: String,
    pub adapter_dir: Option<String>,
    pub harness: Option<String>,
    pub search_provider: Option<String>,
    pub threads: Option<usize>,
    pub lora_quant: Option<String>,
    pub unembed_quant: Option<String>,
}

/// Parses a body as a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::invalid("the request body must be a JSON object")),
    }
}

struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    fn f32(&self, k: &str) -> Result<Option<f32>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => match number(v) {
                Some(f) if f.is_finite() => Ok(Some(f as f32)),
                _ => Err(ApiError::invalid_param(k, format!("{k} must be a number"))),
            },
        }
    }

    /// An integer; integral floats (`9.0`) count, and values past the `i64` range saturate
    /// (a `max_tokens` of 1e30 means "as many as fit").
    fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.get(k) else {
            return Ok(None);
        };
        if let Some(i) = v.as_i64() {
            return Ok(Some(i));
        }
        if v.as_u64().is_some() {
            return Ok(Some(i64::MAX));
        }
        match number(v) {
            // `as` saturates.
            Some(f) if f.is_finite() && f.fract() == 0.0 => Ok(Some(f as i64)),
            _ => Err(ApiError::invalid_param(
                k,
                format!("{k} must be an integer"),
            )),
        }
    }

    fn uint(&self, k: &str, min: i64) -> Result<Option<usize>, ApiError> {
        match self.int(k)? {
            None => Ok(None),
            Some(v) if v >= min => Ok(Some(v as usize)),
            Some(_) => Err(ApiError::invalid_param(k, format!("{k} must be >= {min}"))),
        }
    }

    fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::invalid_param(k, format!("{k} must be a boolean"))),
        }
    }

    fn string(&self, k: &str) -> Result<Option<String>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid_param(k, format!("{k} must be a string"))),
        }
    }
}

/// A JSON number (not a string holding one).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// Reads the generation fields with strict types, then applies the validation rules both
/// servers share ([`trillim_core::api::validate`]).
fn gen_options(
    m: &Map<String, Value>,
    endpoint: Endpoint,
) -> Result<(GenOptions, GenParams), ApiError> {
    let f = Fields(m);
    let model = f.string("model")?;
    let stop = match f.get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::invalid_param("stop", "stop must be a string or an array of strings")
            })?,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "stop",
                "stop must be a string or an array of strings",
            ))
        }
    };
    let include_usage = match f.get("stream_options") {
        None => None,
        Some(Value::Object(o)) => Fields(o).bool("include_usage")?,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "stream_options",
                "stream_options must be an object",
            ))
        }
    };
    let chat = endpoint == Endpoint::Chat;
    let raw = api::Fields {
        temperature: f.f32("temperature")?,
        top_k: f.int("top_k")?,
        top_p: f.f32("top_p")?,
        min_p: f.f32("min_p")?,
        repetition_penalty: f.f32("repetition_penalty")?,
        presence_penalty: f.f32("presence_penalty")?,
        frequency_penalty: f.f32("frequency_penalty")?,
        seed: f.int("seed")?,
        max_tokens: f.int("max_tokens")?,
        max_completion_tokens: f.int("max_completion_tokens")?,
        n: f.int("n")?,
        best_of: f.int("best_of")?,
        stops: stop.len(),
        stream: f.bool("stream")?,
        include_usage,
        ignore_eos: f.bool("ignore_eos")?,
        logprobs: if chat { f.bool("logprobs")? } else { None },
        logprobs_count: if chat { None } else { f.int("logprobs")? },
        top_logprobs: if chat { f.int("top_logprobs")? } else { None },
        echo: if chat { None } else { f.bool("echo")? },
        suffix: f
            .get("suffix")
            .is_some_and(|s| s.as_str().is_some_and(|s| !s.is_empty())),
        // This server compiles `response_format` itself (`schema::response_format`).
        structured: false,
    };
    let p = api::validate(&raw, endpoint, Capabilities::FULL)
        .map_err(|e| ApiError::invalid_param(e.param().unwrap_or("body"), e.to_string()))?;
    let opts = GenOptions {
        model,
        sampling: p.sampling,
        max_tokens: p.max_tokens,
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        stream: p.stream,
        include_usage: p.include_usage,
        ignore_eos: p.ignore_eos,
        n: p.n,
        // Set from the body by `schema::response_format` (it needs the properties' order).
        grammar: None,
    };
    Ok((opts, p))
}

/// Flattens a message `content`: a string, an array of text parts, or null.
fn content_text(i: usize, v: Option<&Value>) -> Result<String, ApiError> {
    let param = format!("messages[{i}].content");
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for p in parts {
                match p {
                    Value::String(s) => out.push_str(s),
                    Value::Object(o) => match (o.get("type").and_then(Value::as_str), o.get("text")) {
                        (Some("text") | None, Some(Value::String(t))) => out.push_str(t),
                        (Some(other), _) => {
                            return Err(ApiError::invalid_param(
                                &param,
                                format!("content parts of type '{other}' are not supported; only text parts are"),
                            ))
                        }
                        _ => return Err(ApiError::invalid_param(&param, "a content part needs a 'text' string")),
                    },
                    _ => return Err(ApiError::invalid_param(&param, "content parts must be objects")),
                }
            }
            Ok(out)
        }
        Some(_) => Err(ApiError::invalid_param(
            &param,
            "content must be a string or an array of text parts",
        )),
    }
}

/// Parses a chat completion request.
pub fn chat(m: &Map<String, Value>) -> Result<ChatRequest, ApiError> {
    let msgs = match m.get("messages") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_param("messages", "messages is required"))
        }
        Some(_) => {
            return Err(ApiError::invalid_param(
                "messages",
                "messages must be an array",
            ))
        }
    };
    if msgs.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must not be empty",
        ));
    }
    let mut messages = Vec::with_capacity(msgs.len());
    for (i, v) in msgs.iter().enumerate() {
        let Value::Object(o) = v else {
            return Err(ApiError::invalid_param(
                &format!("messages[{i}]"),
                "each message must be an object",
            ));
        };
        let role = match o.get("role") {
            Some(Value::String(r)) if !r.is_empty() => r.clone(),
            _ => {
                return Err(ApiError::invalid_param(
                    &format!("messages[{i}].role"),
                    "each message needs a role",
                ))
            }
        };
        let content = content_text(i, o.get("content"))?;
        let tool_calls = match o.get("tool_calls") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .enumerate()
                    .map(|(j, c)| template_tool_call(i, j, c))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => {
                return Err(ApiError::invalid_param(
                    &format!("messages[{i}].tool_calls"),
                    "tool_calls must be an array",
                ))
            }
        };
        let tool_call_id = match o.get("tool_call_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(ApiError::invalid_param(
                    &format!("messages[{i}].tool_call_id"),
                    "tool_call_id must be a string",
                ))
            }
        };
        if role == "tool" && tool_call_id.is_none() {
            return Err(ApiError::invalid_param(
                &format!("messages[{i}].tool_call_id"),
                "a tool message needs the tool_call_id it answers",
            ));
        }
        messages.push(Message {
            role,
            content,
            tool_calls,
            tool_call_id,
        });
    }
    let tools = super::tools::parse(m)?;
    let (opts, p) = gen_options(m, Endpoint::Chat)?;
    Ok(ChatRequest {
        messages,
        opts,
        logprobs: p.logprobs.is_some(),
        top_logprobs: p.logprobs.unwrap_or(0),
        tools,
    })
}

/// An assistant message's tool call as templates expect it: OpenAI's shape, with
/// `function.arguments` decoded from its JSON string into an object (as transformers users
/// pass it).
fn template_tool_call(i: usize, j: usize, c: &Value) -> Result<Value, ApiError> {
    let param = format!("messages[{i}].tool_calls[{j}]");
    let bad = || {
        ApiError::invalid_param(
            &param,
            "a tool call is {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}",
        )
    };
    let mut c = c.as_object().ok_or_else(bad)?.clone();
    let f = c
        .get_mut("function")
        .and_then(Value::as_object_mut)
        .ok_or_else(bad)?;
    if !f.get("name").is_some_and(Value::is_string) {
        return Err(bad());
    }
    if let Some(Value::String(a)) = f.get("arguments") {
        let parsed: Value = serde_json::from_str(a).map_err(|_| {
            ApiError::invalid_param(
                &format!("{param}.function.arguments"),
                "arguments must be a JSON string",
            )
        })?;
        f.insert("arguments".into(), parsed);
    }
    Ok(Value::Object(c))
}

/// Most prompts one completion request may carry.
const MAX_PROMPTS: usize = 64;

/// Parses a completion request.
pub fn completion(m: &Map<String, Value>) -> Result<CompletionRequest, ApiError> {
    let bad = || {
        ApiError::invalid_param(
            "prompt",
            "prompt must be a string, an array of one string, or an array of token ids",
        )
    };
    let tokens = |a: &Vec<Value>| -> Result<Vec<u32>, ApiError> {
        a.iter()
            .map(|t| {
                t.as_u64()
                    .filter(|&t| t <= u32::MAX as u64)
                    .map(|t| t as u32)
                    .ok_or_else(bad)
            })
            .collect()
    };
    let prompts = match m.get("prompt") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_param("prompt", "prompt is required"))
        }
        Some(Value::String(s)) => vec![Prompt::Text(s.clone())],
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_number) => {
            vec![Prompt::Tokens(tokens(a)?)]
        }
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= MAX_PROMPTS => a
            .iter()
            .map(|p| match p {
                Value::String(s) => Ok(Prompt::Text(s.clone())),
                Value::Array(t) if !t.is_empty() => Ok(Prompt::Tokens(tokens(t)?)),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(a)) if a.len() > MAX_PROMPTS => {
            return Err(ApiError::invalid_param(
                "prompt",
                format!("at most {MAX_PROMPTS} prompts per request"),
            ))
        }
        Some(_) => return Err(bad()),
    };
    let (opts, p) = gen_options(m, Endpoint::Completion)?;
    Ok(CompletionRequest {
        prompts,
        opts,
        logprobs: p.logprobs,
        echo: p.echo,
    })
}

/// Parses a model load request.
pub fn load(m: &Map<String, Value>) -> Result<LoadRequest, ApiError> {
    let f = Fields(m);
    let model_dir = f
        .string("model_dir")?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::invalid_param("model_dir", "model_dir is required"))?;
    if model_dir.len() > 4096 {
        return Err(ApiError::invalid_param(
            "model_dir",
            "model_dir is too long",
        ));
    }
    let threads = f.uint("threads", 0)?;
    if threads.is_some_and(|t| t > 1024) {
        return Err(ApiError::invalid_param(
            "threads",
            "threads must be between 0 and 1024",
        ));
    }
    Ok(LoadRequest {
        model_dir,
        adapter_dir: f.string("adapter_dir")?,
        harness: f.string("harness")?,
        search_provider: f.string("search_provider")?,
        threads,
        lora_quant: f.string("lora_quant")?,
        unembed_quant: f.string("unembed_quant")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn chat_accepts_openai_fields_and_rejects_bad_ones() {
        let r = chat(&obj(json!({
            "model": "x", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            "max_completion_tokens": 5, "max_tokens": 9, "stop": "\n", "seed": 3, "n": 1, "unknown": {"x": 1},
            "stream_options": {"include_usage": true}, "logprobs": true, "top_logprobs": 2
        })))
        .unwrap();
        assert_eq!(r.messages[0].content, "ab");
        assert_eq!(r.opts.max_tokens, Some(5));
        assert_eq!(r.opts.stop, vec!["\n".to_string()]);
        assert!(r.opts.include_usage && r.logprobs && r.top_logprobs == 2);
        for (body, param) in [
            (json!({"messages": []}), "messages"),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "n": 0}),
                "n",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "n": 65}),
                "n",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "temperature": -1}),
                "temperature",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "top_p": 0}),
                "top_p",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
                "max_tokens",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5}),
                "max_tokens",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}),
                "stop",
            ),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}),
                "top_logprobs",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}),
                "max_tokens",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "temperature": "0.5"}),
                "temperature",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "stream": "true"}),
                "stream",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "ignore_eos": 1}),
                "ignore_eos",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "seed": "7"}),
                "seed",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "best_of": 2}),
                "best_of",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "logprobs": "true"}),
                "logprobs",
            ),
        ] {
            let e = chat(&obj(body)).unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(e.param.as_deref(), Some(param));
        }
    }

    #[test]
    fn huge_max_tokens_means_as_many_as_fit() {
        for v in [
            json!(9223372036854775807u64),
            json!(18446744073709551615u64),
            json!(1e30),
        ] {
            let r = chat(&obj(
                json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": v}),
            ))
            .unwrap();
            assert!(r.opts.max_tokens.unwrap() >= i64::MAX as usize);
        }
        let r = chat(&obj(
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 9.0}),
        ))
        .unwrap();
        assert_eq!(r.opts.max_tokens, Some(9));
    }

    #[test]
    fn completion_prompts() {
        let r = completion(&obj(
            json!({"prompt": [1, 2, 3], "logprobs": 5, "echo": true}),
        ))
        .unwrap();
        assert!(matches!(r.prompts[..], [Prompt::Tokens(ref t)] if t == &[1, 2, 3]));
        assert!(r.echo && r.logprobs == Some(5));
        assert!(matches!(
            completion(&obj(json!({"prompt": ["hi"]}))).unwrap().prompts[..],
            [Prompt::Text(_)]
        ));
        let two = completion(&obj(json!({"prompt": ["a", [1, 2]]}))).unwrap();
        assert!(matches!(
            two.prompts[..],
            [Prompt::Text(_), Prompt::Tokens(_)]
        ));
        assert!(completion(&obj(json!({"prompt": []}))).is_err());
        assert!(completion(&obj(json!({"prompt": [{"x": 1}]}))).is_err());
        assert!(completion(&obj(json!({"prompt": "a", "logprobs": 6}))).is_err());
        assert!(parse_object(b"{").is_err());
    }
}
