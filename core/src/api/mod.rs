//! Request bodies of the OpenAI-style endpoints (`/v1/chat/completions`, `/v1/completions`),
//! parsed with `serde-json-core` into fixed-capacity structures that borrow the body.
//!
//! Strings are kept as they appear in the body ([`JsonStr`], still escaped) and unescaped on
//! demand into caller memory ([`Arena`]), so an escaped `\n` or `\ud83d\ude00` in a message
//! costs nothing until it is used and no string needs its own buffer. Unknown fields are
//! ignored; known fields are checked like the std server checks them, so both answer the same
//! requests with the same 400s.

use core::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

mod rules;
pub mod write;

use rules::check;
pub use rules::{validate, Capabilities, Endpoint, Fields, GenParams, MAX_N};

/// Most messages in a chat request.
pub const MAX_MESSAGES: usize = 64;
/// Most content parts in one message.
pub const MAX_PARTS: usize = 8;
/// Most stop sequences.
pub const MAX_STOP: usize = 4;

/// Why a request body was refused (always a 400).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Not valid JSON, or a field of the wrong type.
    Json(serde_json_core::de::Error),
    /// A field has an invalid value.
    Invalid {
        /// The field.
        param: &'static str,
        /// What is wrong.
        message: &'static str,
    },
}

impl RequestError {
    pub(crate) fn invalid(param: &'static str, message: &'static str) -> Self {
        RequestError::Invalid { param, message }
    }

    /// The offending field, if one is known.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            RequestError::Json(_) => None,
            RequestError::Invalid { param, .. } => Some(param),
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Json(e) => write!(f, "invalid JSON body: {e}"),
            RequestError::Invalid { message, .. } => f.write_str(message),
        }
    }
}

/// A JSON string as it appears in the body, between its quotes, escapes not yet resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JsonStr<'a>(pub &'a str);

/// Why a JSON string could not be unescaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnescapeError {
    /// A malformed escape, a lone surrogate or a raw control character.
    Invalid,
    /// The output buffer is too small.
    OutputTooSmall,
}

fn hex4(b: &[u8]) -> Option<u32> {
    let mut v = 0;
    for &c in b.get(..4)? {
        v = v << 4 | (c as char).to_digit(16)?;
    }
    Some(v)
}

impl<'a> JsonStr<'a> {
    /// The raw (escaped) text.
    pub fn raw(&self) -> &'a str {
        self.0
    }

    /// An upper bound of the unescaped length: escapes never grow text.
    pub fn max_len(&self) -> usize {
        self.0.len()
    }

    /// Writes the unescaped string to `out` and returns its length.
    pub fn unescape_into(&self, out: &mut [u8]) -> Result<usize, UnescapeError> {
        let b = self.0.as_bytes();
        let mut n = 0;
        let mut put = |bytes: &[u8], n: &mut usize| -> Result<(), UnescapeError> {
            let dst = out
                .get_mut(*n..*n + bytes.len())
                .ok_or(UnescapeError::OutputTooSmall)?;
            dst.copy_from_slice(bytes);
            *n += bytes.len();
            Ok(())
        };
        let mut i = 0;
        let mut run = 0;
        while i < b.len() {
            let c = b[i];
            if c < 0x20 {
                return Err(UnescapeError::Invalid);
            }
            if c != b'\\' {
                i += 1;
                continue;
            }
            put(&b[run..i], &mut n)?;
            let e = *b.get(i + 1).ok_or(UnescapeError::Invalid)?;
            i += 2;
            let simple = match e {
                b'"' => Some(b'"'),
                b'\\' => Some(b'\\'),
                b'/' => Some(b'/'),
                b'b' => Some(0x08),
                b'f' => Some(0x0C),
                b'n' => Some(b'\n'),
                b'r' => Some(b'\r'),
                b't' => Some(b'\t'),
                b'u' => None,
                _ => return Err(UnescapeError::Invalid),
            };
            if let Some(s) = simple {
                put(&[s], &mut n)?;
            } else {
                let hi = hex4(&b[i..]).ok_or(UnescapeError::Invalid)?;
                i += 4;
                let cp = match hi {
                    0xD800..=0xDBFF => {
                        if b.get(i..i + 2) != Some(b"\\u") {
                            return Err(UnescapeError::Invalid);
                        }
                        let lo = hex4(&b[i + 2..]).ok_or(UnescapeError::Invalid)?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(UnescapeError::Invalid);
                        }
                        i += 6;
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(UnescapeError::Invalid),
                    cp => cp,
                };
                let ch = char::from_u32(cp).ok_or(UnescapeError::Invalid)?;
                put(ch.encode_utf8(&mut [0; 4]).as_bytes(), &mut n)?;
            }
            run = i;
        }
        put(&b[run..], &mut n)?;
        Ok(n)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = JsonStr<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(JsonStr(v))
    }
}

/// Caller memory that unescaped strings are written into, front to back.
#[derive(Debug)]
pub struct Arena<'b> {
    rest: &'b mut [u8],
}

impl<'b> Arena<'b> {
    /// An arena over `buf`.
    pub fn new(buf: &'b mut [u8]) -> Self {
        Arena { rest: buf }
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Unescapes the concatenation of `parts` and returns it.
    pub fn unescape(&mut self, parts: &[JsonStr<'_>]) -> Result<&'b str, UnescapeError> {
        let rest = core::mem::take(&mut self.rest);
        let mut n = 0;
        for p in parts {
            match p.unescape_into(&mut rest[n..]) {
                Ok(k) => n += k,
                Err(e) => {
                    self.rest = rest;
                    return Err(e);
                }
            }
        }
        let (done, rest) = rest.split_at_mut(n);
        self.rest = rest;
        core::str::from_utf8(done).map_err(|_| UnescapeError::Invalid)
    }

    /// Unescapes one string.
    pub fn unescape_one(&mut self, s: JsonStr<'_>) -> Result<&'b str, UnescapeError> {
        self.unescape(&[s])
    }
}

/// A message's `content`: a string or text parts (concatenated when used).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content<'a> {
    /// The text pieces.
    pub parts: heapless::Vec<JsonStr<'a>, MAX_PARTS>,
    invalid: Option<&'static str>,
}

/// One content part.
enum Part<'a> {
    Text(JsonStr<'a>),
    Bad(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for Part<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Part<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a content part")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Part::Text(JsonStr(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Part::Bad("content parts must be objects"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Part::Bad("content parts must be objects"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut ty: Option<JsonStr<'de>> = None;
                let mut text: Option<JsonStr<'de>> = None;
                while let Some(k) = m.next_key::<JsonStr<'de>>()? {
                    match k.0 {
                        "type" => ty = Some(m.next_value()?),
                        "text" => text = Some(m.next_value()?),
                        _ => {
                            m.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(match (ty, text) {
                    (Some(JsonStr("text")) | None, Some(t)) => Part::Text(t),
                    (Some(JsonStr("text")) | None, None) => {
                        Part::Bad("a content part needs a 'text' string")
                    }
                    _ => Part::Bad("only text content parts are supported"),
                })
            }
        }
        d.deserialize_ignored_any(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const BAD: &str = "content must be a string or an array of text parts";
        impl<'de> Visitor<'de> for V {
            type Value = Content<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(BAD)
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                let mut c = Content::default();
                let _ = c.parts.push(JsonStr(v));
                Ok(c)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Content {
                    invalid: Some(BAD),
                    ..Content::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                self.visit_unit()
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                let mut c = Content::default();
                while let Some(p) = s.next_element::<Part<'de>>()? {
                    match p {
                        Part::Text(t) => {
                            if c.parts.push(t).is_err() {
                                c.invalid = Some("too many content parts in one message");
                            }
                        }
                        Part::Bad(why) => c.invalid = c.invalid.or(Some(why)),
                    }
                }
                Ok(c)
            }
        }
        d.deserialize_ignored_any(V)
    }
}

/// One chat message as sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct RawMessage<'a> {
    /// `role`.
    #[serde(borrow)]
    pub role: Option<JsonStr<'a>>,
    /// `content` (null or absent: empty).
    #[serde(borrow)]
    pub content: Option<Content<'a>>,
}

/// `messages`: at most [`MAX_MESSAGES`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Messages<'a> {
    list: heapless::Vec<RawMessage<'a>, MAX_MESSAGES>,
    overflow: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for Messages<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Messages<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                let mut m = Messages::default();
                while !m.overflow {
                    match s.next_element::<RawMessage<'de>>()? {
                        Some(msg) => m.overflow = m.list.push(msg).is_err(),
                        None => return Ok(m),
                    }
                }
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(m)
            }
        }
        d.deserialize_seq(V)
    }
}

/// `stop` or `prompt`: a string or an array of strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Strings<'a> {
    list: heapless::Vec<JsonStr<'a>, MAX_STOP>,
    overflow: bool,
    not_strings: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for Strings<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strings<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                let mut s = Strings::default();
                let _ = s.list.push(JsonStr(v));
                Ok(s)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Strings {
                    not_strings: true,
                    ..Strings::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                self.visit_unit()
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                let mut out = Strings::default();
                while let Some(p) = s.next_element::<Part<'de>>()? {
                    match p {
                        // Objects and nested arrays are not strings.
                        Part::Text(t) if !out.not_strings => {
                            out.overflow |= out.list.push(t).is_err();
                        }
                        _ => out.not_strings = true,
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_ignored_any(V)
    }
}

/// `response_format`: only its `type` matters to the validation both servers share.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<JsonStr<'a>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// An integer field, read as a JSON number: integral floats (`9.0`) count, values past the
/// `i64` range saturate (a `max_tokens` of 1e30 means "as many as fit").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Int(i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int, E> {
                if v.is_finite() && v == libm::trunc(v) {
                    // `as` saturates.
                    Ok(Int(v as i64))
                } else {
                    Err(E::custom("not an integer"))
                }
            }
        }
        d.deserialize_f64(V)
    }
}

#[derive(Clone, Debug, Default)]
struct Body<'a> {
    model: Option<JsonStr<'a>>,
    messages: Option<Messages<'a>>,
    prompt: Option<Strings<'a>>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<Int>,
    min_p: Option<f32>,
    repetition_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    seed: Option<i64>,
    max_tokens: Option<Int>,
    max_completion_tokens: Option<Int>,
    n: Option<Int>,
    best_of: Option<Int>,
    stop: Option<Strings<'a>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    ignore_eos: Option<bool>,
    /// Chat's `logprobs`.
    logprobs: Option<bool>,
    /// Completions' `logprobs`.
    logprobs_count: Option<Int>,
    top_logprobs: Option<Int>,
    echo: Option<bool>,
    suffix: Option<JsonStr<'a>>,
    response_format: Option<ResponseFormat<'a>>,
}

/// What each known field must be, for the 400 when it is not.
const FIELD_TYPES: &[(&str, &str)] = &[
    ("model", "model must be a string"),
    (
        "messages",
        "messages must be an array of message objects with string roles",
    ),
    (
        "prompt",
        "prompt must be a string or an array of one string",
    ),
    ("temperature", "temperature must be a number"),
    ("top_p", "top_p must be a number"),
    ("top_k", "top_k must be an integer"),
    ("min_p", "min_p must be a number"),
    ("repetition_penalty", "repetition_penalty must be a number"),
    ("presence_penalty", "presence_penalty must be a number"),
    ("frequency_penalty", "frequency_penalty must be a number"),
    ("seed", "seed must be an integer"),
    ("max_tokens", "max_tokens must be an integer"),
    (
        "max_completion_tokens",
        "max_completion_tokens must be an integer",
    ),
    ("n", "n must be an integer"),
    ("best_of", "best_of must be an integer"),
    ("stop", "stop must be a string or an array of strings"),
    ("stream", "stream must be a boolean"),
    (
        "stream_options",
        "stream_options must be an object with a boolean include_usage",
    ),
    ("ignore_eos", "ignore_eos must be a boolean"),
    (
        "logprobs",
        "logprobs must be a boolean (chat) or an integer (completions)",
    ),
    ("top_logprobs", "top_logprobs must be an integer"),
    ("echo", "echo must be a boolean"),
    ("suffix", "suffix must be a string"),
    (
        "response_format",
        "response_format must be an object with a string type",
    ),
];

/// Reads a body, noting in `field` which known field's value is being read, so that a value
/// of the wrong type is reported against its field.
struct BodySeed<'c> {
    endpoint: Endpoint,
    field: &'c core::cell::Cell<Option<&'static str>>,
}

impl<'de> de::DeserializeSeed<'de> for BodySeed<'_> {
    type Value = Body<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Body<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = Body<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Body<'de>, A::Error> {
        let mut b = Body::default();
        while let Some(k) = m.next_key::<JsonStr<'de>>()? {
            self.field
                .set(FIELD_TYPES.iter().find(|(n, _)| *n == k.0).map(|(n, _)| *n));
            match k.0 {
                "model" => b.model = m.next_value()?,
                "messages" => b.messages = m.next_value()?,
                "prompt" => b.prompt = m.next_value()?,
                "temperature" => b.temperature = m.next_value()?,
                "top_p" => b.top_p = m.next_value()?,
                "top_k" => b.top_k = m.next_value()?,
                "min_p" => b.min_p = m.next_value()?,
                "repetition_penalty" => b.repetition_penalty = m.next_value()?,
                "presence_penalty" => b.presence_penalty = m.next_value()?,
                "frequency_penalty" => b.frequency_penalty = m.next_value()?,
                "seed" => b.seed = m.next_value()?,
                "max_tokens" => b.max_tokens = m.next_value()?,
                "max_completion_tokens" => b.max_completion_tokens = m.next_value()?,
                "n" => b.n = m.next_value()?,
                "best_of" => b.best_of = m.next_value()?,
                "stop" => b.stop = m.next_value()?,
                "stream" => b.stream = m.next_value()?,
                "stream_options" => b.stream_options = m.next_value()?,
                "ignore_eos" => b.ignore_eos = m.next_value()?,
                "logprobs" if self.endpoint == Endpoint::Chat => b.logprobs = m.next_value()?,
                "logprobs" => b.logprobs_count = m.next_value()?,
                "top_logprobs" => b.top_logprobs = m.next_value()?,
                "echo" => b.echo = m.next_value()?,
                "suffix" => b.suffix = m.next_value()?,
                "response_format" => b.response_format = m.next_value()?,
                _ => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
            self.field.set(None);
        }
        Ok(b)
    }
}

/// A validated chat request.
#[derive(Clone, Debug)]
pub struct ChatRequest<'a> {
    /// `model` as sent.
    pub model: Option<JsonStr<'a>>,
    /// The messages: roles are non-empty, content parts are text.
    pub messages: heapless::Vec<Message<'a>, MAX_MESSAGES>,
    /// Generation options.
    pub params: GenParams,
    /// Non-empty stop sequences.
    pub stop: heapless::Vec<JsonStr<'a>, MAX_STOP>,
}

/// A validated chat message (still escaped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message<'a> {
    /// The role.
    pub role: JsonStr<'a>,
    /// Content pieces.
    pub content: heapless::Vec<JsonStr<'a>, MAX_PARTS>,
}

/// A validated completion request.
#[derive(Clone, Debug)]
pub struct CompletionRequest<'a> {
    /// `model` as sent.
    pub model: Option<JsonStr<'a>>,
    /// The prompt.
    pub prompt: JsonStr<'a>,
    /// Generation options.
    pub params: GenParams,
    /// Non-empty stop sequences.
    pub stop: heapless::Vec<JsonStr<'a>, MAX_STOP>,
}

type Stops<'a> = heapless::Vec<JsonStr<'a>, MAX_STOP>;

/// Validates the generation fields of `b` with the shared rules ([`validate`]), for a server
/// that generates text only ([`Capabilities::TEXT`]).
fn params<'a>(b: &Body<'a>, endpoint: Endpoint) -> Result<(GenParams, Stops<'a>), RequestError> {
    let mut stop = Stops::new();
    let mut stops = 0;
    if let Some(s) = &b.stop {
        if s.not_strings {
            return Err(RequestError::invalid(
                "stop",
                "stop must be a string or an array of strings",
            ));
        }
        stops = if s.overflow {
            MAX_STOP + 1
        } else {
            s.list.len()
        };
        for t in s.list.iter().filter(|t| !t.0.is_empty()) {
            let _ = stop.push(*t);
        }
    }
    let f = Fields {
        temperature: b.temperature,
        top_k: b.top_k.map(|k| k.0),
        top_p: b.top_p,
        min_p: b.min_p,
        repetition_penalty: b.repetition_penalty,
        presence_penalty: b.presence_penalty,
        frequency_penalty: b.frequency_penalty,
        seed: b.seed,
        max_tokens: b.max_tokens.map(|v| v.0),
        max_completion_tokens: b.max_completion_tokens.map(|v| v.0),
        n: b.n.map(|v| v.0),
        best_of: b.best_of.map(|v| v.0),
        stops,
        stream: b.stream,
        include_usage: b.stream_options.as_ref().and_then(|o| o.include_usage),
        ignore_eos: b.ignore_eos,
        logprobs: b.logprobs,
        logprobs_count: b.logprobs_count.map(|v| v.0),
        top_logprobs: b.top_logprobs.map(|v| v.0),
        echo: b.echo,
        suffix: b.suffix.is_some_and(|s| !s.0.is_empty()),
        structured: b
            .response_format
            .as_ref()
            .and_then(|r| r.kind)
            .is_some_and(|k| k.0 != "text"),
    };
    Ok((validate(&f, endpoint, Capabilities::TEXT)?, stop))
}

fn body(json: &[u8], endpoint: Endpoint) -> Result<Body<'_>, RequestError> {
    use serde::de::DeserializeSeed;
    use serde_json_core::de::Error as E;
    let field = core::cell::Cell::new(None);
    let mut de = serde_json_core::de::Deserializer::new(json, None);
    let seed = BodySeed {
        endpoint,
        field: &field,
    };
    let r = seed.deserialize(&mut de);
    let r = r.and_then(|b| de.end().map(|_| b));
    r.map_err(|e| match (field.get(), e) {
        // A body cut short is malformed JSON, whatever field it stopped in.
        (
            _,
            E::EofWhileParsingList
            | E::EofWhileParsingObject
            | E::EofWhileParsingString
            | E::EofWhileParsingNumber
            | E::EofWhileParsingValue,
        )
        | (None, _) => RequestError::Json(e),
        (Some(f), _) => {
            let message = FIELD_TYPES
                .iter()
                .find(|(n, _)| *n == f)
                .map_or("invalid value", |(_, m)| *m);
            RequestError::invalid(f, message)
        }
    })
}

/// Parses and validates a `/v1/chat/completions` body.
pub fn parse_chat(json: &[u8]) -> Result<ChatRequest<'_>, RequestError> {
    let b = body(json, Endpoint::Chat)?;
    let msgs = b
        .messages
        .as_ref()
        .ok_or(RequestError::invalid("messages", "messages is required"))?;
    check(!msgs.overflow, "messages", "too many messages (at most 64)")?;
    check(
        !msgs.list.is_empty(),
        "messages",
        "messages must not be empty",
    )?;
    let mut messages = heapless::Vec::new();
    for m in &msgs.list {
        let role = m
            .role
            .filter(|r| !r.0.is_empty())
            .ok_or(RequestError::invalid(
                "messages",
                "each message needs a role",
            ))?;
        let content = match &m.content {
            None => heapless::Vec::new(),
            Some(c) => {
                if let Some(why) = c.invalid {
                    return Err(RequestError::invalid("messages", why));
                }
                c.parts.clone()
            }
        };
        let _ = messages.push(Message { role, content });
    }
    let (params, stop) = params(&b, Endpoint::Chat)?;
    Ok(ChatRequest {
        model: b.model,
        messages,
        params,
        stop,
    })
}

/// Parses and validates a `/v1/completions` body. Token-id prompts are not supported.
pub fn parse_completion(json: &[u8]) -> Result<CompletionRequest<'_>, RequestError> {
    let b = body(json, Endpoint::Completion)?;
    const BAD: &str = "prompt must be a string or an array of one string";
    let p = b
        .prompt
        .as_ref()
        .ok_or(RequestError::invalid("prompt", "prompt is required"))?;
    check(!p.not_strings, "prompt", BAD)?;
    check(
        p.list.len() <= 1 && !p.overflow,
        "prompt",
        "only one prompt per request is supported",
    )?;
    let prompt = *p.list.first().ok_or(RequestError::invalid("prompt", BAD))?;
    let (params, stop) = params(&b, Endpoint::Completion)?;
    Ok(CompletionRequest {
        model: b.model,
        prompt,
        params,
        stop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unescape(s: &str) -> Result<heapless::String<256>, UnescapeError> {
        let mut buf = [0u8; 256];
        let n = JsonStr(s).unescape_into(&mut buf)?;
        let mut o = heapless::String::new();
        o.push_str(core::str::from_utf8(&buf[..n]).unwrap())
            .unwrap();
        Ok(o)
    }

    #[test]
    fn unescapes_everything_json_allows() {
        assert_eq!(
            unescape(r#"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00"#)
                .unwrap()
                .as_str(),
            "a\"b\\c/d\u{8}\u{c}\n\r\té😀"
        );
        assert_eq!(unescape(r"\ud83d"), Err(UnescapeError::Invalid));
        assert_eq!(unescape(r"\ude00"), Err(UnescapeError::Invalid));
        assert_eq!(unescape(r"\x"), Err(UnescapeError::Invalid));
        assert_eq!(unescape(r"\u12"), Err(UnescapeError::Invalid));
        assert_eq!(unescape("\\"), Err(UnescapeError::Invalid));
        assert_eq!(unescape("a\u{1}"), Err(UnescapeError::Invalid));
        let mut small = [0u8; 2];
        assert_eq!(
            JsonStr("abc").unescape_into(&mut small),
            Err(UnescapeError::OutputTooSmall)
        );
    }

    #[test]
    fn parses_a_chat_request() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"Be \"brief\"."},
            {"role":"user","content":[{"type":"text","text":"Hi "},{"text":"there"}],"name":"x"}],
            "temperature":0.5,"top_k":3,"max_tokens":7,"stop":["\n\n",""],"stream":true,
            "stream_options":{"include_usage":true},"unknown":{"a":[1,2,{"b":null}]},"seed":9}"#;
        let r = parse_chat(body).unwrap();
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[0].role, JsonStr("system"));
        let mut buf = [0u8; 128];
        let mut a = Arena::new(&mut buf);
        assert_eq!(a.unescape(&r.messages[0].content).unwrap(), "Be \"brief\".");
        assert_eq!(a.unescape(&r.messages[1].content).unwrap(), "Hi there");
        assert_eq!(r.params.sampling.temperature, Some(0.5));
        assert_eq!(r.params.sampling.top_k, Some(3));
        assert_eq!(r.params.max_tokens, Some(7));
        assert_eq!(r.params.sampling.seed, Some(9));
        assert!(r.params.stream && r.params.include_usage);
        assert_eq!(r.stop.len(), 1);
        assert_eq!(a.unescape_one(r.stop[0]).unwrap(), "\n\n");
        assert_eq!(r.model, Some(JsonStr("m")));
    }

    #[test]
    fn rejects_bad_chat_requests() {
        let param = |b: &[u8]| parse_chat(b).unwrap_err().param();
        assert_eq!(param(b"{}"), Some("messages"));
        assert_eq!(param(br#"{"messages":[]}"#), Some("messages"));
        assert_eq!(
            param(br#"{"messages":[{"content":"x"}]}"#),
            Some("messages")
        );
        assert_eq!(
            param(br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}"#),
            Some("messages")
        );
        assert_eq!(
            param(br#"{"messages":[{"role":"user","content":5}]}"#),
            Some("messages")
        );
        let ok = br#"{"messages":[{"role":"user","content":null}]"#;
        let with = |extra: &str| {
            let mut b = heapless::Vec::<u8, 256>::new();
            b.extend_from_slice(ok).unwrap();
            b.extend_from_slice(extra.as_bytes()).unwrap();
            b.push(b'}').unwrap();
            parse_chat(&b).map(|_| ()).map_err(|e| e.param())
        };
        assert_eq!(with(""), Ok(()));
        assert_eq!(with(r#","temperature":-1"#), Err(Some("temperature")));
        assert_eq!(with(r#","top_p":0"#), Err(Some("top_p")));
        assert_eq!(with(r#","max_tokens":0"#), Err(Some("max_tokens")));
        assert_eq!(with(r#","n":2"#), Err(Some("n")));
        assert_eq!(with(r#","stop":["a","b","c","d","e"]"#), Err(Some("stop")));
        assert_eq!(with(r#","stop":5"#), Err(Some("stop")));
        assert_eq!(with(r#","temperature":"hot""#), Err(Some("temperature")));
        assert_eq!(with(r#","max_tokens":"9""#), Err(Some("max_tokens")));
        assert_eq!(with(r#","max_tokens":1.5"#), Err(Some("max_tokens")));
        assert_eq!(with(r#","stream":"true""#), Err(Some("stream")));
        assert_eq!(with(r#","ignore_eos":1"#), Err(Some("ignore_eos")));
        assert_eq!(with(r#","seed":"7""#), Err(Some("seed")));
        assert_eq!(with(r#","best_of":2"#), Err(Some("best_of")));
        assert_eq!(with(r#","top_logprobs":21"#), Err(Some("top_logprobs")));
        assert_eq!(with(r#","top_logprobs":2"#), Err(Some("top_logprobs")));
        assert_eq!(with(r#","logprobs":true"#), Err(Some("logprobs")));
        assert_eq!(with(r#","logprobs":"yes""#), Err(Some("logprobs")));
        assert_eq!(
            with(r#","stream_options":{"include_usage":"1"}"#),
            Err(Some("stream_options"))
        );
        assert_eq!(
            with(r#","logprobs":false,"top_logprobs":0,"best_of":1"#),
            Ok(())
        );
        assert_eq!(parse_chat(br#"{"temperature":"#).unwrap_err().param(), None);
        let huge = parse_chat(
            br#"{"messages":[{"role":"user","content":"x"}],"max_tokens":9223372036854775807,"ignore_eos":true}"#,
        )
        .unwrap();
        assert_eq!(
            huge.params.max_tokens,
            Some(usize::try_from(i64::MAX).unwrap_or(usize::MAX))
        );
        assert!(huge.params.ignore_eos);
        let nine = parse_chat(br#"{"messages":[{"role":"user","content":"x"}],"max_tokens":9.0}"#)
            .unwrap();
        assert_eq!(nine.params.max_tokens, Some(9));
        assert_eq!(with(r#","temperature":1e99"#), Err(Some("temperature")));
        assert!(parse_chat(b"[1]").is_err());
        assert!(parse_chat(b"{\"messages\":").is_err());
    }

    #[test]
    fn parses_completion_prompts() {
        let r = parse_completion(br#"{"prompt":"The quick\nfox","stop":"x"}"#).unwrap();
        assert_eq!(r.prompt, JsonStr(r"The quick\nfox"));
        assert_eq!(r.stop.len(), 1);
        assert!(parse_completion(br#"{"prompt":["one"]}"#).is_ok());
        let param = |b: &[u8]| parse_completion(b).unwrap_err().param();
        assert_eq!(param(br#"{"prompt":["a","b"]}"#), Some("prompt"));
        assert_eq!(param(br#"{"prompt":[1,2]}"#), Some("prompt"));
        assert_eq!(param(br#"{}"#), Some("prompt"));
        assert_eq!(param(br#"{"prompt":"a","logprobs":1}"#), Some("logprobs"));
        assert_eq!(param(br#"{"prompt":"a","logprobs":6}"#), Some("logprobs"));
        assert_eq!(param(br#"{"prompt":"a","echo":true}"#), Some("echo"));
        assert_eq!(param(br#"{"prompt":"a","suffix":"z"}"#), Some("suffix"));
        assert_eq!(
            param(br#"{"prompt":"a","response_format":{"type":"json_object"}}"#),
            Some("response_format")
        );
        assert_eq!(
            param(br#"{"prompt":"a","response_format":7}"#),
            Some("response_format")
        );
        assert!(parse_completion(
            br#"{"prompt":"a","response_format":{"type":"text","json_schema":{"a":[1]}}}"#
        )
        .is_ok());
        assert_eq!(param(br#"{"prompt":5}"#), Some("prompt"));
        assert!(parse_completion(br#"{"prompt":"a","echo":false,"suffix":""}"#).is_ok());
    }
}
