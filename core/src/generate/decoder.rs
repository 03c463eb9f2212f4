//! The step machine of one generation: each row of logits becomes a sampled token, the
//! token's text, and a decision whether the generation goes on.

use super::{after_token, logprobs, scan_stops, Finish, TokenFate};
use crate::sampler::{sample, Candidate, Rng, SamplerConfig};
use crate::tokenizer::{Detokenizer, Tokenizer};

/// How a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// It finished: an end-of-generation token, a stop string, `max_tokens`, the context, or
    /// a full text buffer.
    Finished(Finish),
    /// The shell's `emit` refused text (its client went away): nothing more is to be sent.
    Halted,
}

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// The sampled token, counted as generated; `None` when the generation ended without one
    /// (an end-of-generation token, `max_tokens: 0`, or a generation already over).
    pub token: Option<u32>,
    /// The token's log-probability over the raw logits, when [`StepIo::logprobs`] asked.
    pub logprob: Option<f64>,
    /// `None`: feed `token` and step again with the next row of logits.
    pub end: Option<End>,
}

/// Buffers for log-probabilities: `raw` (at least the vocabulary) keeps the logits before the
/// sampler changes them; `top` receives the best alternatives.
#[derive(Debug)]
pub struct LogprobBufs<'a> {
    /// Scratch for a copy of the logits.
    pub raw: &'a mut [f32],
    /// The best `top.len()` tokens and their log-probabilities, best first.
    pub top: &'a mut [(u32, f64)],
}

/// What one step reads and writes.
pub struct StepIo<'a, 'e, S> {
    /// The row of logits for the next token (the sampler changes it).
    pub logits: &'a mut [f32],
    /// Every token of the sequence so far (prompt and generated), for penalties and the
    /// context limit.
    pub history: &'a [u32],
    /// The sampler's candidate buffer (at least the vocabulary).
    pub cands: &'a mut [Candidate],
    /// Stop strings (empty ones are ignored).
    pub stops: &'a [S],
    /// Log-probability buffers, when the request asks for them.
    pub logprobs: Option<LogprobBufs<'a>>,
    /// Takes text that is final; returning false halts the generation.
    pub emit: &'e mut dyn FnMut(&str) -> bool,
}

impl<S: core::fmt::Debug> core::fmt::Debug for StepIo<'_, '_, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StepIo")
            .field("logits", &self.logits.len())
            .field("history", &self.history.len())
            .field("stops", &self.stops)
            .field("logprobs", &self.logprobs.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Halt {
    Stop,
    Full,
    Refused,
}

/// One generation's decoding state over a caller text buffer `B`.
///
/// Generated text goes through the buffer: what could still become a stop string is held
/// there until decided, everything else is handed to `emit` at once. In *keep* mode the buffer
/// also keeps every byte sent (for a response that is written at the end,
/// [`Decoder::text`]); otherwise sent text is dropped and the buffer only needs to hold the
/// longest stop string plus one piece ([`Decoder::held_capacity`]). A full buffer ends the
/// generation with [`Finish::Length`].
#[derive(Debug)]
pub struct Decoder<B> {
    cfg: SamplerConfig,
    rng: Rng,
    detok: Detokenizer,
    buf: B,
    len: usize,
    sent: usize,
    keep: bool,
    max_tokens: Option<usize>,
    ignore_eos: bool,
    ctx: usize,
    generated: usize,
    halt: Option<Halt>,
    end: Option<End>,
}

/// Largest piece of text the detokenizer hands out at once.
const PIECE: usize = 64;

impl<B: AsMut<[u8]> + AsRef<[u8]>> Decoder<B> {
    /// A decoder for a sequence with `ctx` positions (prompt and completion together never
    /// exceed it), sampling with `cfg` (seeded from
    /// `cfg.seed`), stopping after `max_tokens` (`Some(0)`: none are generated) unless an
    /// end-of-generation token comes first (ignored with `ignore_eos`).
    pub fn new(
        cfg: SamplerConfig,
        max_tokens: Option<usize>,
        ignore_eos: bool,
        ctx: usize,
        buf: B,
        keep: bool,
    ) -> Decoder<B> {
        Decoder {
            rng: Rng::new(cfg.seed),
            cfg,
            detok: Detokenizer::new(false),
            buf,
            len: 0,
            sent: 0,
            keep,
            max_tokens,
            ignore_eos,
            ctx,
            generated: 0,
            halt: None,
            end: None,
        }
    }

    /// The buffer a non-keeping decoder needs for `stops`.
    pub fn held_capacity<S: AsRef<str>>(stops: &[S]) -> usize {
        stops.iter().map(|s| s.as_ref().len()).max().unwrap_or(0) + PIECE
    }

    /// Tokens generated so far (end-of-generation tokens are not counted).
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// How the generation ended, once it has.
    pub fn end(&self) -> Option<End> {
        self.end
    }

    /// In keep mode, all text sent so far (empty otherwise).
    pub fn text(&self) -> &str {
        core::str::from_utf8(&self.buf.as_ref()[..self.sent]).unwrap_or("")
    }

    /// Samples the next token from `io.logits`, turns it into text and decides whether the
    /// generation goes on.
    pub fn step<S: AsRef<str>>(&mut self, tok: &Tokenizer<'_>, io: StepIo<'_, '_, S>) -> Step {
        let mut step = Step {
            token: None,
            logprob: None,
            end: self.end,
        };
        if self.end.is_some() {
            return step;
        }
        if self.max_tokens == Some(0) {
            return self.ended(step, End::Finished(Finish::Length));
        }
        let StepIo {
            logits,
            history,
            cands,
            stops,
            logprobs: lp,
            emit,
        } = io;
        let mut lp = lp;
        if let Some(b) = lp.as_mut() {
            let n = logits.len().min(b.raw.len());
            b.raw[..n].copy_from_slice(&logits[..n]);
        }
        let id = sample(logits, history, &self.cfg, &mut self.rng, cands);
        let more = match after_token(
            tok.is_eog(id),
            self.ignore_eos,
            self.generated,
            self.max_tokens,
        ) {
            TokenFate::EndOfGeneration => {
                return self.ended(step, End::Finished(Finish::Stop));
            }
            TokenFate::Emit(ends) => ends,
        };
        self.generated += 1;
        step.token = Some(id);
        if let Some(b) = lp {
            let n = logits.len().min(b.raw.len());
            step.logprob = logprobs(&b.raw[..n], id, b.top);
        }
        let mut detok = self.detok;
        detok.push(tok, id, &mut |piece| self.take(piece, stops, emit));
        self.detok = detok;
        let end = match self.halt {
            Some(Halt::Stop) => Some(End::Finished(Finish::Stop)),
            Some(Halt::Full) => Some(End::Finished(Finish::Length)),
            Some(Halt::Refused) => Some(End::Halted),
            // Prompt and completion together fill the context.
            None if history.len() + 1 >= self.ctx => Some(End::Finished(Finish::Length)),
            None => more.map(End::Finished),
        };
        match end {
            Some(e) => self.ended(step, e),
            None => step,
        }
    }

    /// Ends a generation that ended with `end`: unless a stop string cut it or the client is
    /// gone, text still held back (an incomplete character, a possible stop string's prefix)
    /// is final and goes to `emit`. Returns how it ended after that (held text may complete a
    /// stop string; `emit` may refuse).
    pub fn finish<S: AsRef<str>>(
        &mut self,
        end: End,
        stops: &[S],
        emit: &mut dyn FnMut(&str) -> bool,
    ) -> End {
        self.end = Some(end);
        if self.halt.is_none() || self.halt == Some(Halt::Full) {
            let mut detok = self.detok;
            detok.flush(&mut |piece| self.take(piece, stops, emit));
            self.detok = detok;
            self.release(stops, true, emit);
        }
        let end = match (self.halt, end) {
            (Some(Halt::Refused), _) => End::Halted,
            (Some(Halt::Stop), _) => End::Finished(Finish::Stop),
            (_, e) => e,
        };
        self.end = Some(end);
        end
    }

    fn ended(&mut self, mut step: Step, end: End) -> Step {
        self.end = Some(end);
        step.end = Some(end);
        step
    }

    /// Takes a piece of generated text.
    fn take<S: AsRef<str>>(
        &mut self,
        piece: &str,
        stops: &[S],
        emit: &mut dyn FnMut(&str) -> bool,
    ) {
        if self.halt.is_some() {
            return;
        }
        let none = stops.iter().all(|s| s.as_ref().is_empty());
        if none && !self.keep {
            if !emit(piece) {
                self.halt = Some(Halt::Refused);
            }
            return;
        }
        let buf = self.buf.as_mut();
        match buf.get_mut(self.len..self.len + piece.len()) {
            Some(d) => d.copy_from_slice(piece.as_bytes()),
            None => {
                self.halt = Some(Halt::Full);
                return;
            }
        }
        self.len += piece.len();
        self.release(stops, false, emit);
    }

    /// Hands out what is decided; `last`: nothing more will come.
    fn release<S: AsRef<str>>(
        &mut self,
        stops: &[S],
        last: bool,
        emit: &mut dyn FnMut(&str) -> bool,
    ) {
        if matches!(self.halt, Some(Halt::Stop | Halt::Refused)) {
            return;
        }
        let buf = self.buf.as_mut();
        let scan = scan_stops(&buf[self.sent..self.len], stops, last);
        let until = self.sent + scan.emit;
        if until > self.sent {
            let text = core::str::from_utf8(&buf[self.sent..until]).unwrap_or("");
            if !emit(text) {
                self.halt = Some(Halt::Refused);
            }
        }
        self.sent = until;
        if scan.stopped {
            self.len = until;
            if self.halt.is_none() || self.halt == Some(Halt::Full) {
                self.halt = Some(Halt::Stop);
            }
        }
        if !self.keep && self.sent > 0 {
            buf.copy_within(self.sent..self.len, 0);
            self.len -= self.sent;
            self.sent = 0;
        }
    }
}
