//! Whisper speech-to-text: the network ([`model`]), its vocabulary ([`vocab`]) and
//! transcription — 30-second windows of log-mel frames, beam search or greedy decoding with Whisper's
//! special tokens and timestamp rules (the same rules CTranslate2 applies), segments with
//! start and end times, and seeking by the last timestamp across long audio.

pub mod hf;
pub mod linalg;
pub mod model;
pub mod vocab;

use std::path::Path;

use trillim_core::Parallel;

use crate::ct2::Ct2Model;
use crate::mel::{self, WINDOW_FRAMES, WINDOW_SAMPLES};
pub use linalg::CrossKv;
pub use model::{Dims, KvCache, LoadError, Whisper};
pub use vocab::{Specials, Vocab, VocabError};

/// Seconds per timestamp token and per encoder frame pair.
const TIME_PRECISION: f64 = 0.02;
/// The largest first timestamp a window may start with (1 s, as CTranslate2's default).
const MAX_INITIAL_TIMESTAMP_INDEX: u32 = 50;
/// Beam search's patience: it ends after `round(beam · PATIENCE)` hypotheses have ended
/// (CTranslate2's and faster-whisper's default).
const PATIENCE: f32 = 1.0;
/// The beam size CTranslate2 and faster-whisper use by default.
pub const DEFAULT_BEAM: usize = 5;

/// Why a model directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelDirError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Model { path: String, source: LoadError },
    #[error("{path}: {source}")]
    Hf { path: String, source: hf::HfError },
    #[error("{dir} holds neither a CTranslate2 model.bin nor a Hugging Face model.safetensors")]
    NoModel { dir: String },
    #[error("{path}: {source}")]
    Vocab { path: String, source: VocabError },
    #[error("{path}: not valid JSON or not a CTranslate2 Whisper config: {msg}")]
    Config { path: String, msg: String },
}

/// The decoding settings `config.json` carries.
#[derive(Debug, Clone, Default)]
pub struct DecodeConfig {
    /// Tokens never sampled.
    pub suppress_ids: Vec<u32>,
    /// Tokens not sampled as a window's first.
    pub suppress_ids_begin: Vec<u32>,
}

/// A model ready to transcribe: network, vocabulary and decoding settings.
#[derive(Debug)]
pub struct SpeechModel {
    pub net: Whisper,
    pub vocab: Vocab,
    pub config: DecodeConfig,
}

pub(crate) fn read_ids(v: &serde_json::Value, key: &str) -> Vec<u32> {
    v.get(key)
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
                .collect()
        })
        .unwrap_or_default()
}

impl SpeechModel {
    /// Loads a Whisper directory in either format it holds: CTranslate2's (`model.bin`)
    /// or Hugging Face's (`model.safetensors`, see [`hf`]).
    pub fn load_dir(dir: &Path) -> Result<SpeechModel, ModelDirError> {
        match ModelFormat::of(dir) {
            Some(ModelFormat::Ct2) => Self::load_ct2(dir),
            Some(ModelFormat::Hf) => hf::load_dir(dir),
            None => Err(ModelDirError::NoModel {
                dir: dir.display().to_string(),
            }),
        }
    }

    /// Loads a CTranslate2 Whisper directory: `model.bin`, `vocabulary.txt` and
    /// `config.json`.
    pub fn load_ct2(dir: &Path) -> Result<SpeechModel, ModelDirError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| ModelDirError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let shown = |name: &str| dir.join(name).display().to_string();
        let bin = read("model.bin")?;
        let table = Ct2Model::parse(&bin).map_err(|e| ModelDirError::Model {
            path: shown("model.bin"),
            source: e.into(),
        })?;
        let net = Whisper::from_ct2(&table, &bin).map_err(|source| ModelDirError::Model {
            path: shown("model.bin"),
            source,
        })?;
        drop(bin);
        let text = String::from_utf8_lossy(&read("vocabulary.txt")?).into_owned();
        let vocab = Vocab::from_lines(&text).map_err(|source| ModelDirError::Vocab {
            path: shown("vocabulary.txt"),
            source,
        })?;
        if vocab.len() != net.dims.n_vocab {
            return Err(ModelDirError::Vocab {
                path: shown("vocabulary.txt"),
                source: VocabError::Size {
                    got: vocab.len(),
                    want: net.dims.n_vocab,
                },
            });
        }
        let config = match read("config.json") {
            Ok(bytes) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| ModelDirError::Config {
                        path: shown("config.json"),
                        msg: e.to_string(),
                    })?;
                DecodeConfig {
                    suppress_ids: read_ids(&v, "suppress_ids"),
                    suppress_ids_begin: read_ids(&v, "suppress_ids_begin"),
                }
            }
            Err(_) => DecodeConfig::default(),
        };
        Ok(SpeechModel { net, vocab, config })
    }
}

/// The checkpoint formats a Whisper directory may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// CTranslate2's `model.bin`.
    Ct2,
    /// Hugging Face's `model.safetensors` with `config.json`.
    Hf,
}

impl ModelFormat {
    /// What `dir` holds (`model.bin` first when it holds both).
    pub fn of(dir: &Path) -> Option<ModelFormat> {
        if dir.join("model.bin").is_file() {
            Some(ModelFormat::Ct2)
        } else if dir.join("model.safetensors").is_file() {
            Some(ModelFormat::Hf)
        } else {
            None
        }
    }
}

/// How to transcribe.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Language code for multilingual models (`None` detects it); ignored by English-only ones.
    pub language: Option<String>,
    /// Text ids (already tokenized) that condition the first window, like a previous transcript.
    pub prompt: Vec<u32>,
    /// Predict timestamps (segments with times); without them a window is one segment.
    pub timestamps: bool,
    /// 0 decodes deterministically (beam search, or greedily when `beam` is 0 or 1); above
    /// that tokens are sampled one at a time at this temperature (seeded), and `beam` is unused.
    pub temperature: f32,
    /// Beam size at temperature 0; 0 or 1 decodes greedily.
    pub beam: usize,
    /// Seed for sampling.
    pub seed: u64,
}

/// A piece of the transcript with its time span.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
}

/// A whole transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// Each segment's text trimmed, joined with single spaces.
    pub text: String,
    pub language: String,
    /// Seconds of audio.
    pub duration: f64,
    pub segments: Vec<Segment>,
}

/// The tokens one window decoded to (without the prompt, without end of text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowTokens {
    pub tokens: Vec<u32>,
}

struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }
}

impl SpeechModel {
    /// The language of a window: the most likely language token after `<|startoftranscript|>`.
    pub fn detect_language(&self, par: &dyn Parallel, cross: &[CrossKv]) -> String {
        if !self.vocab.is_multilingual() {
            return "en".into();
        }
        let mut cache = self.net.new_cache();
        let logits = self
            .net
            .decode(par, &[self.vocab.specials.sot], &mut cache, cross);
        self.vocab
            .languages
            .iter()
            .max_by(|a, b| logits[a.1 as usize].total_cmp(&logits[b.1 as usize]))
            .map_or_else(|| "en".into(), |(c, _)| c.clone())
    }

    /// The start-of-transcript sequence for a window.
    pub fn sot_sequence(&self, language: &str, timestamps: bool) -> Vec<u32> {
        let s = self.vocab.specials;
        let mut seq = vec![s.sot];
        if self.vocab.is_multilingual() {
            if let Some(l) = self.vocab.language(language) {
                seq.push(l);
            }
            if let Some(t) = s.transcribe {
                seq.push(t);
            }
        }
        if !timestamps {
            seq.push(s.no_timestamps);
        }
        seq
    }

    /// Decodes one window: the prompt (`<|startofprev|>` and `previous`, if any, then
    /// `sot_seq`) through the decoder, then one token at a time until end of text or the
    /// length limit.
    pub fn decode_window(
        &self,
        par: &dyn Parallel,
        cross: &[CrossKv],
        previous: &[u32],
        sot_seq: &[u32],
        temperature: f32,
        rng_seed: u64,
    ) -> WindowTokens {
        let s = self.vocab.specials;
        let ctx = self.net.dims.n_text_ctx;
        let prompt = self.window_prompt(previous, sot_seq);
        let timestamps = !sot_seq.contains(&s.no_timestamps);
        let max_new = (ctx / 2).min(ctx - prompt.len());
        let mut cache = self.net.new_cache();
        let mut logits = self.net.decode(par, &prompt, &mut cache, cross);
        let mut out = Vec::new();
        let mut rng = Rng(rng_seed);
        for step in 0..max_new {
            self.constrain(&mut logits, &out, timestamps);
            let next = if temperature > 0.0 {
                sample(&logits, temperature, &mut rng)
            } else {
                argmax(&logits)
            };
            if next == s.eot {
                break;
            }
            out.push(next);
            if step + 1 == max_new || cache.len >= ctx {
                break;
            }
            logits = self.net.decode(par, &[next], &mut cache, cross);
        }
        WindowTokens { tokens: out }
    }

    /// Decodes one window with beam search as CTranslate2 does: each step keeps the
    /// `beam` likeliest continuations by summed log-probability, looking at `2 · beam`
    /// candidates so a hypothesis that ends (end of text) is replaced by the next one; the
    /// search stops once `round(beam · patience)` hypotheses have ended (or at the length
    /// limit, where every live one ends), and the winner is the ended hypothesis with the best
    /// score divided by its length (length penalty 1).
    pub fn decode_window_beam(
        &self,
        par: &dyn Parallel,
        cross: &[CrossKv],
        previous: &[u32],
        sot_seq: &[u32],
        beam: usize,
    ) -> WindowTokens {
        let beam = beam.max(1);
        let s = self.vocab.specials;
        let ctx = self.net.dims.n_text_ctx;
        let n_vocab = self.net.dims.n_vocab;
        let prompt = self.window_prompt(previous, sot_seq);
        let timestamps = !sot_seq.contains(&s.no_timestamps);
        let max_new = (ctx / 2).min(ctx - prompt.len());
        let max_ended = ((beam as f32) * PATIENCE).round().max(1.0) as usize;
        let n_cand = 2 * beam;
        let mut caches = vec![self.net.new_cache()];
        let mut logits = self.net.decode(par, &prompt, &mut caches[0], cross);
        // Live hypotheses: tokens so far and summed log-probability.
        let mut live: Vec<(Vec<u32>, f32)> = vec![(Vec::new(), 0.0)];
        let mut ended: Vec<(f32, Vec<u32>)> = Vec::new();
        let mut spare: Vec<KvCache> = Vec::new();
        for step in 0..max_new {
            let last_step = step + 1 == max_new;
            // The best n_cand (score, hypothesis, token) over every live hypothesis.
            let mut cand: Vec<(f32, usize, u32)> = Vec::with_capacity(n_cand + 1);
            for (b, (tokens, score)) in live.iter().enumerate() {
                let row = &mut logits[b * n_vocab..(b + 1) * n_vocab];
                self.constrain(row, tokens, timestamps);
                let lse = log_sum_exp(row);
                for (id, &l) in row.iter().enumerate() {
                    let v = score + (l - lse);
                    if cand.len() < n_cand || v > cand[cand.len() - 1].0 {
                        let at = cand.partition_point(|c| c.0 >= v);
                        cand.insert(at, (v, b, id as u32));
                        cand.truncate(n_cand);
                    }
                }
            }
            let mut next: Vec<(f32, usize, u32)> = Vec::with_capacity(beam);
            let mut secondary = beam;
            for k in 0..beam.min(cand.len()) {
                let mut c = cand[k];
                if c.2 == s.eot || last_step {
                    let mut tokens = live[c.1].0.clone();
                    if c.2 != s.eot {
                        tokens.push(c.2);
                    }
                    let norm = c.0 / tokens.len() as f32;
                    ended.push((
                        if norm.is_nan() {
                            f32::NEG_INFINITY
                        } else {
                            norm
                        },
                        tokens,
                    ));
                    if let Some(j) = (secondary..cand.len()).find(|&j| cand[j].2 != s.eot) {
                        c = cand[j];
                        secondary = j + 1;
                    }
                }
                next.push(c);
            }
            if last_step || ended.len() >= max_ended {
                break;
            }
            // Each new hypothesis continues from its parent's cache.
            let mut new_caches = Vec::with_capacity(next.len());
            let mut new_live = Vec::with_capacity(next.len());
            for &(score, b, id) in &next {
                let mut cache = spare.pop().unwrap_or_else(|| self.net.new_cache());
                cache.copy_from(&caches[b]);
                new_caches.push(cache);
                let mut tokens = live[b].0.clone();
                tokens.push(id);
                new_live.push((tokens, score));
            }
            spare.append(&mut caches);
            caches = new_caches;
            live = new_live;
            if caches.iter().any(|c| c.len >= ctx) {
                break;
            }
            let ids: Vec<u32> = next.iter().map(|c| c.2).collect();
            logits = self.net.decode_rows(par, &ids, &mut caches, cross);
        }
        // The best ended hypothesis (the first of equals, as a stable sort keeps them).
        let best = ended
            .into_iter()
            .fold(None, |best: Option<(f32, Vec<u32>)>, h| match best {
                Some(b) if b.0 >= h.0 => Some(b),
                _ => Some(h),
            })
            .map(|h| h.1)
            .unwrap_or_else(|| live.swap_remove(0).0);
        WindowTokens { tokens: best }
    }

    /// A window's decoder prompt: `<|startofprev|>` and the end of `previous` (if any), then
    /// `sot_seq`.
    fn window_prompt(&self, previous: &[u32], sot_seq: &[u32]) -> Vec<u32> {
        let s = self.vocab.specials;
        let ctx = self.net.dims.n_text_ctx;
        let mut prompt = Vec::new();
        if let (Some(prev), false) = (s.sot_prev, previous.is_empty()) {
            prompt.push(prev);
            let keep = previous.len().min(ctx / 2 - 1);
            prompt.extend_from_slice(&previous[previous.len() - keep..]);
        }
        prompt.extend_from_slice(sot_seq);
        prompt
    }

    /// The tokens a step may not produce after `sampled` in this window: the configured
    /// suppressions, the blank-start ones at the first step, and the timestamp rules.
    fn constrain(&self, logits: &mut [f32], sampled: &[u32], timestamps: bool) {
        for &id in &self.config.suppress_ids {
            disable(logits, id);
        }
        if sampled.is_empty() {
            for &id in &self.config.suppress_ids_begin {
                disable(logits, id);
            }
        }
        if timestamps {
            self.timestamp_rules(logits, sampled);
        }
    }

    /// Whisper's timestamp rules over the tokens sampled so far in this window.
    fn timestamp_rules(&self, logits: &mut [f32], sampled: &[u32]) {
        let s = self.vocab.specials;
        let (tb, eot) = (s.timestamp_begin as usize, s.eot as usize);
        disable(logits, s.no_timestamps);
        let mut check = false;
        match sampled {
            [] => {
                logits[..tb].fill(f32::NEG_INFINITY);
                let max_initial = tb + MAX_INITIAL_TIMESTAMP_INDEX as usize;
                if max_initial + 1 < logits.len() {
                    logits[max_initial + 1..].fill(f32::NEG_INFINITY);
                }
            }
            [.., last] if *last as usize >= tb => {
                let penultimate = if sampled.len() >= 2 {
                    sampled[sampled.len() - 2]
                } else {
                    *last
                };
                if penultimate as usize >= tb {
                    logits[tb..].fill(f32::NEG_INFINITY);
                } else {
                    logits[..eot].fill(f32::NEG_INFINITY);
                    logits[tb..*last as usize].fill(f32::NEG_INFINITY);
                    check = true;
                }
            }
            _ => {
                check = true;
                if let Some(&t) = sampled.iter().rev().find(|&&t| t as usize >= tb) {
                    logits[tb..=t as usize].fill(f32::NEG_INFINITY);
                }
            }
        }
        if check {
            // If the timestamps together are likelier than any text token, sample a timestamp.
            let lse = log_sum_exp(logits);
            let text_max = logits[..tb]
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max)
                - lse;
            let ts = log_sum_exp(&logits[tb..]) - lse;
            if ts > text_max {
                logits[..tb].fill(f32::NEG_INFINITY);
            }
        }
    }

    /// Transcribes 16 kHz mono samples.
    pub fn transcribe(&self, par: &dyn Parallel, samples: &[f32], opts: &Options) -> Transcript {
        let n_mels = self.net.dims.n_mels;
        let mut padded = Vec::with_capacity(samples.len() + WINDOW_SAMPLES);
        padded.extend_from_slice(samples);
        padded.resize(samples.len() + WINDOW_SAMPLES, 0.0);
        let mel = mel::log_mel(&padded, n_mels);
        let content_frames = samples.len() / mel::HOP;
        let s = self.vocab.specials;
        let tb = s.timestamp_begin;
        let mut seek = 0usize;
        let mut segments = Vec::new();
        let mut previous: Vec<u32> = opts.prompt.clone();
        let mut language = opts
            .language
            .clone()
            .filter(|_| self.vocab.is_multilingual())
            .unwrap_or_else(|| "en".into());
        let mut detected = opts.language.is_some() || !self.vocab.is_multilingual();
        let mut window_index = 0u64;
        while seek < content_frames {
            let window = mel.window(seek);
            let enc = self.net.encode(par, &window);
            let cross = self.net.cross_kv(par, &enc);
            if !detected {
                language = self.detect_language(par, &cross);
                detected = true;
            }
            let sot = self.sot_sequence(&language, opts.timestamps);
            let tokens = if opts.temperature <= 0.0 && opts.beam > 1 {
                self.decode_window_beam(par, &cross, &previous, &sot, opts.beam)
            } else {
                self.decode_window(
                    par,
                    &cross,
                    &previous,
                    &sot,
                    opts.temperature,
                    opts.seed.wrapping_add(window_index),
                )
            }
            .tokens;
            window_index += 1;
            let size = WINDOW_FRAMES.min(content_frames - seek);
            let offset = seek as f64 * mel::HOP as f64 / mel::SAMPLE_RATE as f64;
            let window_secs = size as f64 * mel::HOP as f64 / mel::SAMPLE_RATE as f64;
            let is_ts = |t: u32| t >= tb;
            let mut advance = size;
            let consecutive: Vec<usize> = (1..tokens.len())
                .filter(|&i| is_ts(tokens[i - 1]) && is_ts(tokens[i]))
                .collect();
            let single_ending = tokens.len() >= 2
                && !is_ts(tokens[tokens.len() - 2])
                && is_ts(tokens[tokens.len() - 1]);
            if opts.timestamps && !consecutive.is_empty() {
                let mut slices = consecutive;
                if single_ending {
                    slices.push(tokens.len());
                }
                let mut last = 0;
                for &cut in &slices {
                    let part = &tokens[last..cut];
                    if let (Some(&a), Some(&b)) = (part.first(), part.last()) {
                        self.push_segment(&mut segments, offset, a - tb, b - tb, part);
                    }
                    last = cut;
                }
                if !single_ending {
                    let last_ts = tokens[last - 1].saturating_sub(tb) as usize;
                    // Timestamps count encoder frames pairs: two mel frames each.
                    if last_ts > 0 {
                        advance = (last_ts * 2).min(size);
                    }
                }
            } else {
                let mut end = window_secs;
                if let Some(&t) = tokens.iter().rev().find(|&&t| is_ts(t)) {
                    if t != tb {
                        end = (t - tb) as f64 * TIME_PRECISION;
                    }
                }
                let text_tokens: Vec<u32> = tokens.iter().copied().filter(|&t| !is_ts(t)).collect();
                let text = self.vocab.decode(&text_tokens);
                if !text.trim().is_empty() {
                    segments.push(Segment {
                        start: offset,
                        end: offset + end,
                        text,
                        tokens: text_tokens,
                    });
                }
            }
            previous.extend(tokens.iter().copied().filter(|&t| t < s.eot));
            seek += advance.max(1);
        }
        // Each segment's text trimmed, joined with single spaces.
        let text = segments
            .iter()
            .map(|s| s.text.trim())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Transcript {
            text,
            language,
            duration: samples.len() as f64 / mel::SAMPLE_RATE as f64,
            segments,
        }
    }

    fn push_segment(&self, out: &mut Vec<Segment>, offset: f64, a: u32, b: u32, part: &[u32]) {
        let text_tokens: Vec<u32> = part
            .iter()
            .copied()
            .filter(|&t| t < self.vocab.specials.eot)
            .collect();
        let text = self.vocab.decode(&text_tokens);
        if text.trim().is_empty() {
            return;
        }
        out.push(Segment {
            start: offset + a as f64 * TIME_PRECISION,
            end: offset + b as f64 * TIME_PRECISION,
            text,
            tokens: text_tokens,
        });
    }
}

fn disable(logits: &mut [f32], id: u32) {
    if let Some(l) = logits.get_mut(id as usize) {
        *l = f32::NEG_INFINITY;
    }
}

/// The first index of the largest logit.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn sample(logits: &[f32], temperature: f32, rng: &mut Rng) -> u32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f32> = logits
        .iter()
        .map(|&l| ((l - max) / temperature).exp())
        .collect();
    let total: f32 = weights.iter().sum();
    let mut r = rng.next_f32() * total;
    for (i, w) in weights.iter().enumerate() {
        r -= w;
        if r <= 0.0 && *w > 0.0 {
            return i as u32;
        }
    }
    argmax(logits)
}

fn log_sum_exp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    // Through a stack buffer: the exponentials vectorize only as a pass over memory.
    let mut buf = [0f32; 1024];
    let mut sum = 0.0;
    for c in x.chunks(buf.len()) {
        let e = &mut buf[..c.len()];
        e.copy_from_slice(c);
        sum += linalg::exp_shifted(e, max, 1.0);
    }
    max + sum.ln()
}
