//! The validation rules of the generation endpoints, the same in both servers. Each shell's
//! parser checks JSON types (its own JSON library) and fills [`Fields`]; [`validate`] checks
//! values, ranges and combinations and decides every 400 that is not about a type.

use super::RequestError;
use crate::sampler::SamplerOverrides;

/// Most choices (`n`) a request may ask for where a server runs them.
pub const MAX_N: usize = 64;
/// Most `top_logprobs` alternatives (chat).
pub const MAX_TOP_LOGPROBS: i64 = 20;
/// Most `logprobs` alternatives (completions).
pub const MAX_LOGPROBS: i64 = 5;

/// Which endpoint a body is for: `logprobs` is a boolean for chat, a count for completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
}

/// The generation fields of a request, typed but not yet validated (`None`: absent or null).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fields {
    /// `temperature`.
    pub temperature: Option<f32>,
    /// `top_k`.
    pub top_k: Option<i64>,
    /// `top_p`.
    pub top_p: Option<f32>,
    /// `min_p`.
    pub min_p: Option<f32>,
    /// `repetition_penalty`.
    pub repetition_penalty: Option<f32>,
    /// `presence_penalty`.
    pub presence_penalty: Option<f32>,
    /// `frequency_penalty`.
    pub frequency_penalty: Option<f32>,
    /// `seed`.
    pub seed: Option<i64>,
    /// `max_tokens`.
    pub max_tokens: Option<i64>,
    /// `max_completion_tokens` (wins over `max_tokens`).
    pub max_completion_tokens: Option<i64>,
    /// `n`.
    pub n: Option<i64>,
    /// `best_of`.
    pub best_of: Option<i64>,
    /// Number of `stop` strings, empty ones included.
    pub stops: usize,
    /// `stream`.
    pub stream: Option<bool>,
    /// `stream_options.include_usage`.
    pub include_usage: Option<bool>,
    /// `ignore_eos`.
    pub ignore_eos: Option<bool>,
    /// Chat's `logprobs` (a boolean).
    pub logprobs: Option<bool>,
    /// Completions' `logprobs` (a count).
    pub logprobs_count: Option<i64>,
    /// `top_logprobs` (chat).
    pub top_logprobs: Option<i64>,
    /// `echo` (completions).
    pub echo: Option<bool>,
    /// `suffix` is a non-empty string.
    pub suffix: bool,
    /// `response_format` asks for more than text (`json_object`, `json_schema`).
    pub structured: bool,
}

/// What a server can do beyond plain generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Most choices per prompt (`n`).
    pub max_n: usize,
    /// Log-probabilities and `echo`.
    pub logprobs: bool,
    /// Constrained output (`response_format` other than text).
    pub structured: bool,
}

impl Capabilities {
    /// The desktop server: `n` up to [`MAX_N`], log-probabilities, echo.
    pub const FULL: Capabilities = Capabilities {
        max_n: MAX_N,
        logprobs: true,
        structured: true,
    };
    /// The firmware: one choice, text only.
    pub const TEXT: Capabilities = Capabilities {
        max_n: 1,
        logprobs: false,
        structured: false,
    };
}

/// A request's generation options, validated.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GenParams {
    /// Sampling overrides (validated).
    pub sampling: SamplerOverrides,
    /// `max_completion_tokens` or `max_tokens` (chat: >= 1; completions: >= 0, 0 scores the
    /// prompt only).
    pub max_tokens: Option<usize>,
    /// `stream`.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// `ignore_eos`: keep generating past end-of-generation tokens.
    pub ignore_eos: bool,
    /// `n`: choices per prompt.
    pub n: usize,
    /// Log-probabilities of generated tokens with this many alternatives (chat: `logprobs:
    /// true` with `top_logprobs`; completions: `logprobs`).
    pub logprobs: Option<usize>,
    /// `echo`: completions repeat the prompt (with its log-probabilities when asked).
    pub echo: bool,
}

impl GenParams {
    /// The sampler configuration: request values over `defaults`, `seed` when none is given.
    pub fn sampler(
        &self,
        defaults: &crate::sampler::SamplerConfig,
        seed: u64,
    ) -> crate::sampler::SamplerConfig {
        self.sampling.apply(defaults, seed)
    }
}

pub(super) fn check(
    ok: bool,
    param: &'static str,
    message: &'static str,
) -> Result<(), RequestError> {
    if ok {
        Ok(())
    } else {
        Err(RequestError::invalid(param, message))
    }
}

fn count(v: i64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Validates `f` for `endpoint` on a server that can do `caps`.
pub fn validate(
    f: &Fields,
    endpoint: Endpoint,
    caps: Capabilities,
) -> Result<GenParams, RequestError> {
    check(
        f.top_k.is_none_or(|k| k >= 0),
        "top_k",
        "top_k must be >= 0",
    )?;
    let sampling = SamplerOverrides {
        temperature: f.temperature,
        top_k: f.top_k.map(count),
        top_p: f.top_p,
        min_p: f.min_p,
        repetition_penalty: f.repetition_penalty,
        presence_penalty: f.presence_penalty,
        frequency_penalty: f.frequency_penalty,
        seed: f.seed.map(|s| s as u64),
    };
    sampling
        .validate()
        .map_err(|e| RequestError::invalid(e.param, e.message))?;
    let chat = endpoint == Endpoint::Chat;
    let max_tokens = match (f.max_completion_tokens, f.max_tokens) {
        (Some(v), _) => {
            let ok = v >= 1 || (!chat && v == 0);
            let msg = if chat {
                "max_completion_tokens must be >= 1"
            } else {
                "max_completion_tokens must be >= 0"
            };
            check(ok, "max_completion_tokens", msg)?;
            Some(count(v))
        }
        (None, Some(v)) => {
            let ok = v >= 1 || (!chat && v == 0);
            let msg = if chat {
                "max_tokens must be >= 1"
            } else {
                "max_tokens must be >= 0"
            };
            check(ok, "max_tokens", msg)?;
            Some(count(v))
        }
        (None, None) => None,
    };
    let n = f.n.unwrap_or(1);
    if caps.max_n == 1 {
        check(n == 1, "n", "only n = 1 is supported")?;
    } else {
        check(
            n >= 1 && count(n) <= caps.max_n,
            "n",
            "n must be between 1 and 64",
        )?;
    }
    check(
        f.best_of.is_none_or(|b| b == 1),
        "best_of",
        "only best_of = 1 is supported",
    )?;
    check(!f.suffix, "suffix", "suffix is not supported")?;
    check(
        !f.structured || caps.structured,
        "response_format",
        "response_format json_object/json_schema is not supported by this server",
    )?;
    check(
        f.stops <= super::MAX_STOP,
        "stop",
        "stop may hold at most 4 sequences",
    )?;
    let logprobs = if chat {
        let top = f.top_logprobs.unwrap_or(0);
        check(
            (0..=MAX_TOP_LOGPROBS).contains(&top),
            "top_logprobs",
            "top_logprobs must be between 0 and 20",
        )?;
        let on = f.logprobs == Some(true);
        check(
            top == 0 || on,
            "top_logprobs",
            "top_logprobs requires logprobs to be true",
        )?;
        on.then_some(count(top))
    } else {
        let l = f.logprobs_count;
        check(
            l.is_none_or(|l| (0..=MAX_LOGPROBS).contains(&l)),
            "logprobs",
            "logprobs must be between 0 and 5",
        )?;
        l.map(count)
    };
    let echo = !chat && f.echo == Some(true);
    if !caps.logprobs {
        check(
            logprobs.is_none(),
            "logprobs",
            "logprobs are not supported by this server; use trillim serve",
        )?;
        check(
            !echo,
            "echo",
            "echo is not supported by this server; use trillim serve",
        )?;
    }
    Ok(GenParams {
        sampling,
        max_tokens,
        stream: f.stream.unwrap_or(false),
        include_usage: f.include_usage.unwrap_or(false),
        ignore_eos: f.ignore_eos.unwrap_or(false),
        n: count(n),
        logprobs,
        echo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(f: Fields, e: Endpoint, caps: Capabilities) -> Option<&'static str> {
        validate(&f, e, caps).err().and_then(|e| e.param())
    }

    #[test]
    fn both_servers_apply_the_same_ranges() {
        use Endpoint::*;
        let d = Fields::default();
        for caps in [Capabilities::FULL, Capabilities::TEXT] {
            assert_eq!(validate(&d, Chat, caps).unwrap().n, 1);
            let bad = [
                Fields {
                    temperature: Some(-1.0),
                    ..d
                },
                Fields {
                    top_p: Some(0.0),
                    ..d
                },
                Fields {
                    top_k: Some(-1),
                    ..d
                },
                Fields {
                    max_tokens: Some(0),
                    ..d
                },
                Fields {
                    max_completion_tokens: Some(0),
                    max_tokens: Some(5),
                    ..d
                },
                Fields { n: Some(0), ..d },
                Fields { n: Some(65), ..d },
                Fields {
                    best_of: Some(2),
                    ..d
                },
                Fields { stops: 5, ..d },
                Fields {
                    top_logprobs: Some(21),
                    logprobs: Some(true),
                    ..d
                },
                Fields {
                    top_logprobs: Some(2),
                    ..d
                },
                Fields { suffix: true, ..d },
            ];
            for f in bad {
                assert!(validate(&f, Chat, caps).is_err(), "{f:?}");
            }
            assert_eq!(
                param(
                    Fields {
                        max_tokens: Some(0),
                        ..d
                    },
                    Completion,
                    caps
                ),
                None
            );
            assert_eq!(
                param(
                    Fields {
                        logprobs_count: Some(6),
                        ..d
                    },
                    Completion,
                    caps
                ),
                Some("logprobs")
            );
        }
        // What only the full server does.
        let full = Capabilities::FULL;
        let text = Capabilities::TEXT;
        let n4 = Fields { n: Some(4), ..d };
        assert_eq!(validate(&n4, Chat, full).unwrap().n, 4);
        let rf = Fields {
            structured: true,
            ..d
        };
        assert!(validate(&rf, Chat, full).is_ok());
        assert_eq!(param(rf, Completion, text), Some("response_format"));
        assert_eq!(param(n4, Chat, text), Some("n"));
        let lp = Fields {
            logprobs: Some(true),
            top_logprobs: Some(3),
            ..d
        };
        assert_eq!(validate(&lp, Chat, full).unwrap().logprobs, Some(3));
        assert_eq!(param(lp, Chat, text), Some("logprobs"));
        let echo = Fields {
            echo: Some(true),
            ..d
        };
        assert!(validate(&echo, Completion, full).unwrap().echo);
        assert_eq!(param(echo, Completion, text), Some("echo"));
        // max_completion_tokens wins; huge values saturate.
        let m = Fields {
            max_completion_tokens: Some(7),
            max_tokens: Some(0),
            ..d
        };
        assert_eq!(validate(&m, Chat, full).unwrap().max_tokens, Some(7));
        let huge = Fields {
            max_tokens: Some(i64::MAX),
            ..d
        };
        assert!(validate(&huge, Chat, text).unwrap().max_tokens.unwrap() > 1 << 30);
    }
}
