//! Continuous batching: the engine thread serves up to `slots` sequences at once, each in its
//! own KV-cache slot, and advances all of them with one forward pass per step.
//!
//! A step holds one decode token of every sequence that is generating and, in the tokens left
//! of [`STEP_TOKENS`], prompt chunks of the sequences still reading their prompt (oldest
//! first), so a long prompt never stalls running streams for more than one chunk. A new
//! request joins at the next step when a slot is free (the one whose cached tokens share the
//! longest prefix with its prompt); a finished or cancelled one leaves at once. Waiting
//! requests stay in the engine's bounded FIFO until a slot frees up.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use trillim_core::generate::{self, prompt_fits, Decoder, LogprobBufs, StepIo};
use trillim_core::model::SeqToken;
use trillim_core::sampler::Candidate;
use trillim_runtime::{LoadedModel, Session, ThreadPool};

use super::grammar::{Constraint, Vocab};
use super::{
    logprobs_of, Event, Finish, GenerationError, Job, ModelShared, Msg, Prepared, TokenLogprob,
};
use crate::metrics::Metrics;

/// Tokens one forward step processes at most: decode tokens first, prompt chunks in the rest.
/// 128 reads the weights once per 128 prompt tokens (+8-10 % prefill on 2B4T against 64) and
/// bounds a step to about a second for a 2B-parameter model on two cores.
pub const STEP_TOKENS: usize = 128;

/// One request being served.
struct Seq {
    job: Box<Job>,
    slot: usize,
    cached: usize,
    /// Prompt tokens in the KV cache (cached ones included).
    fed: usize,
    /// Sampled and not yet fed (a decoding sequence has one).
    next: Option<u32>,
    /// Sampling, text and the finish decision: the step machine both servers share.
    dec: Decoder<Vec<u8>>,
    prompt_lps: Vec<TokenLogprob>,
    /// The `response_format` grammar and where the output is in it.
    constraint: Option<Constraint>,
    started: Instant,
    last_token: Option<Instant>,
}

/// How a sequence ended.
enum End {
    Finished(Finish),
    Cancelled,
    Failed(GenerationError),
}

struct Worker {
    model: Arc<LoadedModel>,
    shared: Arc<ModelShared>,
    pool: ThreadPool,
    session: Session,
    work: Vec<Candidate>,
    logits: Vec<f32>,
    /// Logits before sampling and the best alternatives, for requests asking logprobs.
    raw: Vec<f32>,
    top: Vec<(u32, f64)>,
    /// When each slot was last given to a sequence (least recently used first on ties).
    used: Vec<u64>,
    clock: u64,
    metrics: Arc<Metrics>,
    /// Token tables for constrained decoding, built on the first request that needs them.
    vocab: Option<Vocab>,
}

/// The engine thread: admits jobs into free slots and steps every running sequence.
pub(super) fn run(prepared: Prepared, rx: Receiver<Msg>, metrics: Arc<Metrics>) {
    let Prepared { model, shared } = prepared;
    let slots = shared.slots;
    let pool = ThreadPool::new(shared.threads);
    let session = Session::with_slots(&model, shared.ctx, STEP_TOKENS, slots);
    let n_vocab = model.config.n_vocab;
    tracing::info!(
        model = %shared.id, path = %shared.path.display(), ctx = shared.ctx, slots, threads = shared.threads,
        kernels = shared.kernels, session_mib = session.memory_bytes() >> 20, "engine ready"
    );
    let mut w = Worker {
        model,
        shared,
        pool,
        session,
        work: vec![Candidate::default(); n_vocab],
        logits: Vec::new(),
        raw: vec![0.0; n_vocab],
        top: Vec::new(),
        used: vec![0; slots],
        clock: 0,
        metrics,
        vocab: None,
    };
    let mut running: VecDeque<Seq> = VecDeque::new();
    let mut closing = false;
    loop {
        // Admit waiting jobs while slots are free (block only when nothing runs).
        while !closing && running.len() < slots {
            let msg = if running.is_empty() {
                rx.recv().map_err(|_| TryRecvError::Disconnected)
            } else {
                rx.try_recv()
            };
            match msg {
                Ok(Msg::Job(job)) => {
                    w.metrics.queue_left();
                    if let Some(seq) = w.admit(job, &running) {
                        running.push_back(seq);
                    }
                }
                Ok(Msg::Shutdown) | Err(TryRecvError::Disconnected) => closing = true,
                Err(TryRecvError::Empty) => break,
            }
        }
        if running.is_empty() {
            if closing {
                break;
            }
            continue;
        }
        w.metrics.set_busy(running.len(), w.kv_cells(&running));
        let ended =
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.step(&mut running))) {
                Ok(ended) => ended,
                Err(_) => {
                    tracing::error!("generation step panicked");
                    (0..running.len())
                        .map(|i| (i, End::Failed(GenerationError::Internal("a step panicked"))))
                        .collect()
                }
            };
        // Remove ended sequences, highest index first so the others keep their places.
        let mut ended = ended;
        ended.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
        for (i, end) in ended {
            if let Some(seq) = running.remove(i) {
                w.finish(seq, end);
            }
        }
        // Also when the last sequence left: the gauges (and draining) must see an idle engine.
        w.metrics.set_busy(running.len(), w.kv_cells(&running));
    }
    w.metrics.set_busy(0, 0);
    tracing::info!(model = %w.shared.id, "engine stopped");
}

impl Worker {
    fn kv_cells(&self, running: &VecDeque<Seq>) -> usize {
        running
            .iter()
            .map(|s| self.session.slot_tokens(s.slot).len())
            .sum()
    }

    /// Starts `job` in the free slot that shares the longest prefix with its prompt.
    fn admit(&mut self, job: Box<Job>, running: &VecDeque<Seq>) -> Option<Seq> {
        if job.events.is_closed() {
            tracing::info!(request_id = %job.request_id, "generation cancelled: client went away");
            return None;
        }
        let prompt = &job.prompt;
        let refused = if prompt.is_empty() {
            Some(GenerationError::EmptyPrompt)
        } else if !prompt_fits(prompt.len(), job.max_tokens, self.shared.ctx) {
            Some(GenerationError::PromptTooLong {
                prompt: prompt.len(),
                ctx: self.shared.ctx,
            })
        } else {
            None
        };
        if let Some(e) = refused {
            tracing::info!(request_id = %job.request_id, error = %e, "generation refused");
            let _ = job.events.send(Event::Error(e));
            return None;
        }
        let busy = |slot: usize| running.iter().any(|s| s.slot == slot);
        let slot = (0..self.session.slots())
            .filter(|&s| !busy(s))
            .max_by_key(|&s| {
                (
                    self.session.common_prefix(s, prompt),
                    std::cmp::Reverse(self.used[s]),
                )
            })?;
        self.clock += 1;
        self.used[slot] = self.clock;
        // Scoring a prompt recomputes it all: every position's distribution is reported.
        let cached = if job.echo_logprobs {
            self.session.rewind_slot(slot, 0);
            0
        } else {
            self.session.reuse_prefix_slot(slot, prompt)
        };
        self.metrics.cached(cached);
        let _ = job.events.send(Event::Started {
            cached_tokens: cached,
        });
        let mut prompt_lps = Vec::new();
        if job.echo_logprobs {
            prompt_lps.push(TokenLogprob {
                id: prompt[0],
                logprob: None,
                top: Vec::new(),
            });
        }
        let held = vec![0; Decoder::<Vec<u8>>::held_capacity(&job.stop)];
        let dec = Decoder::new(
            job.sampler,
            job.max_tokens,
            job.ignore_eos,
            self.shared.ctx,
            held,
            false,
        );
        let constraint = job.grammar.clone().map(|g| {
            if self.vocab.is_none() {
                let v = Vocab::new(&self.shared.tok.view());
                tracing::info!(model = %self.shared.id, ms = v.built_in.as_millis() as u64,
                    "constrained-decoding tables built");
                self.vocab = Some(v);
            }
            Constraint::new(g)
        });
        Some(Seq {
            constraint,
            job,
            slot,
            cached,
            fed: cached,
            next: None,
            dec,
            prompt_lps,
            started: Instant::now(),
            last_token: None,
        })
    }

    /// One forward pass over every running sequence; returns the sequences that ended, by
    /// index in `running`.
    fn step(&mut self, running: &mut VecDeque<Seq>) -> Vec<(usize, End)> {
        let mut ended = Vec::new();
        for (i, seq) in running.iter().enumerate() {
            if seq.job.events.is_closed() {
                ended.push((i, End::Cancelled));
            }
        }
        let live = |i: usize, ended: &[(usize, End)]| !ended.iter().any(|(j, _)| *j == i);
        // Decode tokens first, then prompt chunks oldest first in what is left of the step.
        // `owner[k]`: the sequence of batch token k and, for a prompt token, its position.
        let mut batch: Vec<SeqToken> = Vec::with_capacity(STEP_TOKENS + running.len());
        let mut owner: Vec<(usize, Option<usize>)> = Vec::with_capacity(batch.capacity());
        for (i, seq) in running.iter().enumerate() {
            if let (Some(id), true) = (seq.next, live(i, &ended)) {
                batch.push(SeqToken {
                    token: id,
                    slot: seq.slot as u16,
                    logits: true,
                });
                owner.push((i, None));
            }
        }
        let mut budget = STEP_TOKENS.saturating_sub(batch.len()).max(1);
        let mut fed: Vec<(usize, usize)> = Vec::new();
        for (i, seq) in running.iter().enumerate() {
            let left = seq.job.prompt.len() - seq.fed;
            if seq.next.is_some() || left == 0 || budget == 0 || !live(i, &ended) {
                continue;
            }
            let n = left.min(budget);
            budget -= n;
            for p in seq.fed..seq.fed + n {
                let last = p + 1 == seq.job.prompt.len();
                batch.push(SeqToken {
                    token: seq.job.prompt[p],
                    slot: seq.slot as u16,
                    logits: last || seq.job.echo_logprobs,
                });
                owner.push((i, Some(p)));
            }
            fed.push((i, seq.fed + n));
        }
        if batch.is_empty() {
            return ended;
        }
        let t0 = Instant::now();
        let n_vocab = self.model.config.n_vocab;
        let mut logits = std::mem::take(&mut self.logits);
        if let Err(e) = self
            .session
            .feed_seqs_into(&self.model, &self.pool, &batch, &mut logits)
        {
            // Nothing was appended; the sequences in this batch fail, the others go on.
            self.logits = logits;
            let err = GenerationError::Model(e);
            let mut failed: Vec<usize> = owner.iter().map(|o| o.0).collect();
            failed.dedup();
            for i in failed {
                if live(i, &ended) {
                    ended.push((i, End::Failed(err.clone())));
                }
            }
            return ended;
        }
        self.metrics.step(batch.len(), t0.elapsed());
        for &(i, n) in &fed {
            running[i].fed = n;
        }
        // Hand each row of logits to its sequence, in batch order (sampling works in place).
        let wanted = owner
            .iter()
            .zip(&batch)
            .filter_map(|(o, t)| t.logits.then_some(*o));
        for (r, (i, pos)) in logits.chunks_exact_mut(n_vocab).zip(wanted) {
            let seq = &mut running[i];
            seq.next = None;
            if let Some(pos) = pos {
                // A prompt token: its row is the distribution of the next prompt token (echo),
                // or, after the last one, of the first generated token.
                let top = seq.job.logprobs.unwrap_or(0);
                if let Some(&next) = seq.job.prompt.get(pos + 1) {
                    if seq.job.echo_logprobs {
                        seq.prompt_lps.push(logprobs_of(r, next, top));
                    }
                    continue;
                }
                if seq.job.echo_logprobs {
                    let lps = std::mem::take(&mut seq.prompt_lps);
                    let _ = seq.job.events.send(Event::PromptLogprobs(lps));
                }
                self.metrics.first_token(seq.started.elapsed());
            }
            if let Some(end) = self.sample_next(seq, r) {
                ended.push((i, end));
            }
        }
        self.logits = logits;
        ended
    }

    /// Samples the sequence's next token from `logits` and reports it; `Some` when the
    /// sequence is done.
    fn sample_next(&mut self, seq: &mut Seq, logits: &mut [f32]) -> Option<End> {
        let job = &seq.job;
        let tok = self.shared.tok.view();
        if let (Some(c), Some(v)) = (seq.constraint.as_mut(), self.vocab.as_ref()) {
            if c.is_done() {
                // The value is complete: nothing more may be generated.
                return Some(End::Finished(Finish::Stop));
            }
            c.mask(v, logits);
        }
        let lp = job.logprobs.map(|n| {
            self.top.resize(n.min(logits.len()), (0, 0.0));
            LogprobBufs {
                raw: &mut self.raw,
                top: &mut self.top,
            }
        });
        let mut text = String::new();
        let step = seq.dec.step(
            &tok,
            StepIo {
                logits,
                history: self.session.slot_tokens(seq.slot),
                cands: &mut self.work,
                stops: &job.stop,
                logprobs: lp,
                emit: &mut |piece| {
                    text.push_str(piece);
                    true
                },
            },
        );
        if let Some(id) = step.token {
            if let (Some(c), Some(v)) = (seq.constraint.as_mut(), self.vocab.as_ref()) {
                if !c.feed(v.bytes(id)) {
                    tracing::warn!(request_id = %job.request_id, id, "sampled a token the grammar refuses");
                }
            }
            let now = Instant::now();
            if let Some(prev) = seq.last_token.replace(now) {
                self.metrics.inter_token(now - prev);
            }
            self.metrics.generated(1);
            let logprobs = match job.logprobs {
                Some(_) => vec![TokenLogprob {
                    id,
                    logprob: step.logprob,
                    top: self.top.clone(),
                }],
                None => Vec::new(),
            };
            // One event per generated token, also when its text is held back (a partial
            // character, a possible stop-string prefix, or a control token that renders as
            // nothing): streams then tick once per token, as OpenAI's do.
            let _ = job.events.send(Event::Text { text, logprobs });
            seq.next = Some(id);
        }
        step.end.map(|e| match e {
            generate::End::Finished(f) => End::Finished(f),
            generate::End::Halted => End::Cancelled,
        })
    }

    fn finish(&mut self, mut seq: Seq, end: End) {
        let job = &seq.job;
        match end {
            End::Finished(finish) => {
                // Whatever the decoder still holds back is real text, unless a stop string
                // ended the generation.
                let mut text = String::new();
                let end =
                    seq.dec
                        .finish(generate::End::Finished(finish), &job.stop, &mut |piece| {
                            text.push_str(piece);
                            true
                        });
                let finish = match end {
                    generate::End::Finished(f) => f,
                    generate::End::Halted => finish,
                };
                if !text.is_empty() {
                    let _ = job.events.send(Event::Text {
                        text,
                        logprobs: Vec::new(),
                    });
                }
                let _ = job.events.send(Event::Done {
                    finish,
                    completion_tokens: seq.dec.generated(),
                });
                if let Some(c) = &seq.constraint {
                    tracing::info!(request_id = %job.request_id, masks = c.computed, cached = c.hits,
                        mask_ms = format!("{:.3}", c.spent.as_secs_f64() * 1e3), "constrained decoding");
                }
                tracing::info!(
                    request_id = %job.request_id, prompt_tokens = job.prompt.len(), cached_tokens = seq.cached,
                    completion_tokens = seq.dec.generated(), finish = finish.as_str(),
                    seconds = format!("{:.3}", seq.started.elapsed().as_secs_f64()), "generation done"
                );
            }
            End::Cancelled => {
                tracing::info!(request_id = %job.request_id, "generation cancelled: client went away");
            }
            End::Failed(e) => {
                tracing::warn!(request_id = %job.request_id, error = %e, "generation failed");
                self.session.rewind_slot(seq.slot, 0);
                let _ = job.events.send(Event::Error(e));
            }
        }
        // The slot keeps its tokens (their keys and values are valid) for prefix reuse.
    }
}
