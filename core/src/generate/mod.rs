//! One generation, the same in both servers: whether a prompt fits ([`prompt_fits`]), the
//! step machine that turns each row of logits into a token and text ([`Decoder`]: sample,
//! detokenize incrementally, hold back possible stop strings, decide the finish reason, and
//! report log-probabilities through [`logprobs`]), and the rules it is built from
//! ([`after_token`], [`scan_stops`]). The shells own the memory and the forward pass; the
//! decoder only sees a row of logits, the sequence's tokens and caller buffers.

mod decoder;
mod logprobs;

pub use decoder::{Decoder, End, LogprobBufs, Step, StepIo};
pub use logprobs::logprobs;

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens`, the context, or the shell's text buffer ran out.
    Length,
}

impl Finish {
    /// The OpenAI `finish_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// Whether a prompt of `prompt` tokens may run in a context of `ctx` positions: generating
/// needs one free position after it; scoring a prompt (`max_tokens: Some(0)`) may fill the
/// context exactly.
pub fn prompt_fits(prompt: usize, max_tokens: Option<usize>, ctx: usize) -> bool {
    let room = usize::from(max_tokens != Some(0));
    prompt + room <= ctx
}

/// What a sampled token does to its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFate {
    /// An end-of-generation token (not counted, not shown): the generation stops.
    EndOfGeneration,
    /// A token to count and show; the generation ends after it with `Some` finish.
    Emit(Option<Finish>),
}

/// Decides a sampled token's fate: `is_eog` unless `ignore_eos`; `generated` counts the tokens
/// emitted before this one; `max_tokens` as asked.
pub fn after_token(
    is_eog: bool,
    ignore_eos: bool,
    generated: usize,
    max_tokens: Option<usize>,
) -> TokenFate {
    if is_eog && !ignore_eos {
        return TokenFate::EndOfGeneration;
    }
    let done = max_tokens.is_some_and(|m| generated + 1 >= m);
    TokenFate::Emit(done.then_some(Finish::Length))
}

/// How much of the pending text may be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopScan {
    /// Bytes of the pending text that are safe to send (a UTF-8 boundary).
    pub emit: usize,
    /// A stop string starts right after those bytes: the generation ends and nothing after
    /// `emit` is ever sent.
    pub stopped: bool,
}

/// Scans `pending` (generated text not yet sent, valid UTF-8) for `stops` (empty ones are
/// ignored). The earliest match ends the text before it; otherwise everything is sent except
/// the longest tail that could still grow into a stop string, unless `last` (the generation
/// ended for another reason), when all of it is.
pub fn scan_stops<S: AsRef<str>>(pending: &[u8], stops: &[S], last: bool) -> StopScan {
    let hit = stops
        .iter()
        .map(|s| s.as_ref().as_bytes())
        .filter(|s| !s.is_empty())
        .filter_map(|s| find(pending, s))
        .min();
    if let Some(p) = hit {
        return StopScan {
            emit: p,
            stopped: true,
        };
    }
    if last {
        return StopScan {
            emit: pending.len(),
            stopped: false,
        };
    }
    // A tail equal to a proper prefix of a stop string starts where that string starts, on a
    // character boundary, so what is sent stays whole characters.
    let held = stops
        .iter()
        .map(|s| s.as_ref().as_bytes())
        .flat_map(|s| (1..s.len()).map(move |k| &s[..k]))
        .filter(|pre| pending.ends_with(pre))
        .map(|pre| pre.len())
        .max()
        .unwrap_or(0);
    StopScan {
        emit: pending.len() - held,
        stopped: false,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_cut_before_the_earliest_match() {
        let s = scan_stops(b"hello END and STOP", &["STOP", "END"], false);
        assert_eq!(
            s,
            StopScan {
                emit: 6,
                stopped: true
            }
        );
        assert_eq!(scan_stops::<&str>(b"abc", &[], false).emit, 3);
        assert_eq!(scan_stops(b"abc", &[""], false).emit, 3);
    }

    #[test]
    fn possible_prefixes_are_held_back_until_decided() {
        // "EN" could become "END".
        assert_eq!(scan_stops(b"hello EN", &["END"], false).emit, 6);
        assert_eq!(scan_stops(b"hello EN", &["END"], true).emit, 8);
        // The longest possible prefix of any stop string.
        assert_eq!(scan_stops(b"x ab", &["abc", "b!"], false).emit, 2);
        // Multi-byte characters are never split: the tail "é" is a prefix of "éa".
        let text = "caf\u{e9}".as_bytes();
        let s = scan_stops(text, &["\u{e9}a"], false);
        assert_eq!(s.emit, 3);
        assert!(core::str::from_utf8(&text[..s.emit]).is_ok());
    }

    #[test]
    fn prompts_leave_room_for_one_token_unless_scored() {
        assert!(prompt_fits(63, None, 64) && prompt_fits(63, Some(1), 64));
        assert!(!prompt_fits(64, None, 64) && !prompt_fits(64, Some(5), 64));
        assert!(prompt_fits(64, Some(0), 64) && !prompt_fits(65, Some(0), 64));
    }

    #[test]
    fn token_fates() {
        assert_eq!(
            after_token(true, false, 0, None),
            TokenFate::EndOfGeneration
        );
        assert_eq!(after_token(true, true, 0, None), TokenFate::Emit(None));
        assert_eq!(
            after_token(false, false, 3, Some(4)),
            TokenFate::Emit(Some(Finish::Length))
        );
        assert_eq!(after_token(false, false, 2, Some(4)), TokenFate::Emit(None));
        assert_eq!(Finish::Length.as_str(), "length");
    }
}
