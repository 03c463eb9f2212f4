//! The OpenAI response and stream-chunk envelopes, written the same by both servers: the
//! head (`id`, `object`, `created`, `model`, `system_fingerprint`), one choice (a chat
//! `message`/`delta` or a completion `text`, `logprobs`, `finish_reason`) and `usage`.
//! Log-probabilities are the desktop server's alone; it hands them in serialized.

use embedded_io::Write;

use super::Endpoint;
use crate::generate::Finish;
use crate::json::{JsonError, JsonWriter};

type Res<W> = Result<(), JsonError<<W as embedded_io::ErrorType>::Error>>;

/// `system_fingerprint` of every response.
pub const FINGERPRINT: &str = concat!("trillim-", env!("CARGO_PKG_VERSION"));

/// Who answers: the endpoint, the response id, its creation time and the model's name.
#[derive(Clone, Copy, Debug)]
pub struct Head<'a> {
    /// Chat or completions.
    pub endpoint: Endpoint,
    /// `id` (`chatcmpl-…`, `cmpl-…`).
    pub id: &'a str,
    /// `created`, Unix seconds.
    pub created: u64,
    /// `model`.
    pub model: &'a str,
}

/// Token counts of a generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt: usize,
    /// Generated tokens.
    pub completion: usize,
    /// Prompt tokens reused from the cache.
    pub cached: usize,
}

/// What a stream chunk carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delta<'a> {
    /// Chat's first chunk: the assistant role and empty content.
    Role,
    /// Generated (or, for completions with `echo`, prompt) text.
    Text(&'a str),
    /// The last choice chunk: no text, the finish reason.
    Finish(Finish),
}

fn head<W: Write>(w: &mut JsonWriter<W>, h: &Head<'_>, chunk: bool) -> Res<W> {
    let object = match (h.endpoint, chunk) {
        (Endpoint::Chat, false) => "chat.completion",
        (Endpoint::Chat, true) => "chat.completion.chunk",
        (Endpoint::Completion, _) => "text_completion",
    };
    w.key("id")?;
    w.string(h.id)?;
    w.key("object")?;
    w.string(object)?;
    w.key("created")?;
    w.u64(h.created)?;
    w.key("model")?;
    w.string(h.model)?;
    w.key("system_fingerprint")?;
    w.string(FINGERPRINT)
}

fn usage<W: Write>(w: &mut JsonWriter<W>, u: &Usage) -> Res<W> {
    w.key("usage")?;
    w.begin_object()?;
    w.key("prompt_tokens")?;
    w.u64(u.prompt as u64)?;
    w.key("completion_tokens")?;
    w.u64(u.completion as u64)?;
    w.key("total_tokens")?;
    w.u64((u.prompt + u.completion) as u64)?;
    w.key("cached_tokens")?;
    w.u64(u.cached as u64)?;
    w.key("prompt_tokens_details")?;
    w.begin_object()?;
    w.key("cached_tokens")?;
    w.u64(u.cached as u64)?;
    w.end_object()?;
    w.end_object()
}

fn logprobs_and_finish<W: Write>(
    w: &mut JsonWriter<W>,
    logprobs: Option<&str>,
    finish: Option<Finish>,
) -> Res<W> {
    w.key("logprobs")?;
    match logprobs {
        Some(json) => w.raw_value(json)?,
        None => w.null()?,
    }
    w.key("finish_reason")?;
    match finish {
        Some(f) => w.string(f.as_str()),
        None => w.null(),
    }
}

/// A whole (non-streamed) response: `text` is the concatenation of its parts (a completion's
/// echoed prompt and its generated text), `logprobs` the serialized `logprobs` value.
pub fn response<W: Write>(
    w: &mut JsonWriter<W>,
    h: &Head<'_>,
    text: &[&str],
    finish: Option<Finish>,
    logprobs: Option<&str>,
    u: &Usage,
) -> Res<W> {
    w.begin_object()?;
    head(w, h, false)?;
    w.key("choices")?;
    w.begin_array()?;
    w.begin_object()?;
    w.key("index")?;
    w.u64(0)?;
    match h.endpoint {
        Endpoint::Chat => {
            w.key("message")?;
            w.begin_object()?;
            w.key("role")?;
            w.string("assistant")?;
            w.key("content")?;
            w.string_parts(text.iter().copied())?;
            w.end_object()?;
        }
        Endpoint::Completion => {
            w.key("text")?;
            w.string_parts(text.iter().copied())?;
        }
    }
    logprobs_and_finish(w, logprobs, finish)?;
    w.end_object()?;
    w.end_array()?;
    usage(w, u)?;
    w.end_object()
}

/// One stream chunk of choice 0; `usage_null` adds `"usage": null` (streams that end with a
/// usage chunk carry it on every other chunk, as OpenAI's do).
pub fn chunk<W: Write>(
    w: &mut JsonWriter<W>,
    h: &Head<'_>,
    delta: Delta<'_>,
    logprobs: Option<&str>,
    usage_null: bool,
) -> Res<W> {
    w.begin_object()?;
    head(w, h, true)?;
    w.key("choices")?;
    w.begin_array()?;
    w.begin_object()?;
    w.key("index")?;
    w.u64(0)?;
    let finish = match delta {
        Delta::Finish(f) => Some(f),
        _ => None,
    };
    match h.endpoint {
        Endpoint::Chat => {
            w.key("delta")?;
            w.begin_object()?;
            match delta {
                Delta::Role => {
                    w.key("role")?;
                    w.string("assistant")?;
                    w.key("content")?;
                    w.string("")?;
                }
                Delta::Text(t) => {
                    w.key("content")?;
                    w.string(t)?;
                }
                Delta::Finish(_) => {}
            }
            w.end_object()?;
        }
        Endpoint::Completion => {
            w.key("text")?;
            w.string(match delta {
                Delta::Text(t) => t,
                _ => "",
            })?;
        }
    }
    logprobs_and_finish(w, logprobs, finish)?;
    w.end_object()?;
    w.end_array()?;
    if usage_null {
        w.key("usage")?;
        w.null()?;
    }
    w.end_object()
}

/// The chunk that ends a stream asked for `include_usage`: no choices, the usage.
pub fn usage_chunk<W: Write>(w: &mut JsonWriter<W>, h: &Head<'_>, u: &Usage) -> Res<W> {
    w.begin_object()?;
    head(w, h, true)?;
    w.key("choices")?;
    w.begin_array()?;
    w.end_array()?;
    usage(w, u)?;
    w.end_object()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the writer call `$f` on a fresh writer over a stack buffer; the text written.
    macro_rules! out {
        (|$w:ident| $f:expr) => {{
            let mut buf = [0u8; 1024];
            let cap = buf.len();
            let mut $w = JsonWriter::new(&mut buf[..]);
            $f.unwrap();
            let n = cap - $w.into_inner().len();
            let mut o = heapless::String::<1024>::new();
            o.push_str(core::str::from_utf8(&buf[..n]).unwrap())
                .unwrap();
            o
        }};
    }

    const H: Head<'static> = Head {
        endpoint: Endpoint::Chat,
        id: "chatcmpl-1",
        created: 7,
        model: "m",
    };

    #[test]
    fn envelopes() {
        let fp = FINGERPRINT;
        let u = Usage {
            prompt: 3,
            completion: 2,
            cached: 1,
        };
        let r = out!(|w| response(&mut w, &H, &["a", "\"b"], Some(Finish::Stop), None, &u));
        let want = "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":7,\"model\":\"m\",\"system_fingerprint\":\"FP\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"a\\\"b\"},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5,\"cached_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":1}}}";
        assert_eq!(r.as_str(), want.replace("FP", fp));
        let c = out!(|w| chunk(
            &mut w,
            &H,
            Delta::Text("hi"),
            Some("{\"content\":[]}"),
            true
        ));
        assert!(c.contains("\"delta\":{\"content\":\"hi\"},\"logprobs\":{\"content\":[]},\"finish_reason\":null}],\"usage\":null}"), "{c}");
        let c = out!(|w| chunk(&mut w, &H, Delta::Finish(Finish::Length), None, false));
        assert!(
            c.ends_with("\"delta\":{},\"logprobs\":null,\"finish_reason\":\"length\"}]}"),
            "{c}"
        );
        let h = Head {
            endpoint: Endpoint::Completion,
            ..H
        };
        let c = out!(|w| chunk(&mut w, &h, Delta::Role, None, false));
        assert!(
            c.contains("\"object\":\"text_completion\"") && c.contains("\"text\":\"\""),
            "{c}"
        );
        let c = out!(|w| usage_chunk(&mut w, &h, &u));
        assert!(
            c.contains("\"choices\":[],\"usage\":{\"prompt_tokens\":3"),
            "{c}"
        );
    }
}
