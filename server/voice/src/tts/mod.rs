//! Text-to-speech with Kyutai's pocket-tts: a FlowLM that writes Mimi latents from text
//! tokens after a voice prompt, and the Mimi decoder that turns each latent frame (80 ms)
//! into 24 kHz samples as soon as it exists.
//!
//! A model directory holds `model.safetensors` (the released `flow_lm.*` / `mimi.*` tensors),
//! `tokenizer.json`, optionally `config.json` (hyperparameters; the English model's by
//! default) and the built-in voices in `embeddings/<name>.safetensors`.

use std::path::Path;

use trillim_core::Parallel;

pub mod config;
pub mod conv;
pub mod flow;
pub mod mimi;
pub mod nn;
pub mod text;
pub mod tokenizer;
pub mod transformer;
pub mod voice;
pub mod weights;

pub use config::TtsConfig;
pub use voice::VoiceState;

use flow::FlowLm;
use mimi::{MimiDecoder, MimiState};
use tokenizer::Tokenizer;
use transformer::KvCache;

/// Why a model, voice or utterance failed.
#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("cannot read {0}")]
    Io(String),
    #[error("the text-to-speech weights are not usable: {0}")]
    Weights(String),
    #[error("the text-to-speech tokenizer is not usable: {0}")]
    Tokenizer(String),
    #[error("the voice is not usable: {0}")]
    Voice(String),
}

/// Tokens per chunk the model is given at once (longer text is segmented).
pub const MAX_TOKENS_PER_CHUNK: usize = 50;
/// Frames at the start of a chunk where end-of-speech is not believed.
const MIN_FRAMES_BEFORE_EOS: usize = 6;

/// A loaded model.
#[derive(Debug)]
pub struct TtsModel {
    pub config: TtsConfig,
    pub tokenizer: Tokenizer,
    flow: FlowLm,
    mimi: MimiDecoder,
}

/// How an utterance is sampled.
#[derive(Debug, Clone)]
pub struct SpeakOptions {
    /// Noise variance of the flow head; 0 is deterministic.
    pub temperature: f32,
    /// End-of-speech logit threshold.
    pub eos_threshold: f32,
    /// Tokens per chunk.
    pub max_tokens: usize,
    /// Seed of the noise.
    pub seed: u64,
}

/// One decoded frame handed to the caller.
#[derive(Debug)]
pub struct Chunk<'a> {
    /// Index of the text chunk it belongs to.
    pub segment: usize,
    /// The FlowLM's latent.
    pub latent: &'a [f32],
    /// Its samples in [-∞, ∞] (clip before converting).
    pub audio: &'a [f32],
}

impl TtsModel {
    /// Loads a model directory.
    pub fn load(dir: &Path) -> Result<TtsModel, TtsError> {
        let config = TtsConfig::load(dir)?;
        let tokenizer = Tokenizer::load(&dir.join("tokenizer.json"))?;
        let path = dir.join("model.safetensors");
        let buf =
            std::fs::read(&path).map_err(|e| TtsError::Io(format!("{}: {e}", path.display())))?;
        let mut t = weights::Tensors::parse("model.safetensors", &buf)?;
        drop(buf);
        let flow = FlowLm::load(&mut t, &config)?;
        let mimi = MimiDecoder::load(&mut t, &config)?;
        Ok(TtsModel {
            config,
            tokenizer,
            flow,
            mimi,
        })
    }

    /// Output sample rate.
    pub fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    /// Samples per latent frame.
    pub fn frame_samples(&self) -> usize {
        self.mimi.frame_samples
    }

    /// Default sampling options of this model.
    pub fn default_options(&self) -> SpeakOptions {
        SpeakOptions {
            temperature: self.config.temperature,
            eos_threshold: self.config.eos_threshold,
            max_tokens: MAX_TOKENS_PER_CHUNK,
            seed: 0,
        }
    }

    /// Parses a voice-state file for this model.
    pub fn voice(&self, buf: &[u8]) -> Result<VoiceState, TtsError> {
        VoiceState::from_safetensors(
            buf,
            self.flow.transformer.dims().layers,
            self.flow.transformer.kv_width(),
        )
    }

    /// The chunks `text` is spoken in.
    pub fn chunks(&self, text: &str, max_tokens: usize) -> Vec<String> {
        text::chunks(
            &self.tokenizer,
            text,
            max_tokens,
            &self.config.replace_characters,
        )
    }

    /// Speaks `text`, calling `sink` with every frame as it is decoded; `sink` returning
    /// `false` stops the synthesis (the listener has gone).
    pub fn speak(
        &self,
        par: &dyn Parallel,
        voice: &VoiceState,
        text: &str,
        opts: &SpeakOptions,
        sink: &mut dyn FnMut(Chunk<'_>) -> bool,
    ) {
        let mut rng = Rng::new(opts.seed);
        for (segment, chunk) in self.chunks(text, opts.max_tokens.max(1)).iter().enumerate() {
            let Some(p) = text::prepare(chunk, &self.config.replace_characters) else {
                continue;
            };
            if !self.speak_chunk(par, voice, segment, &p, opts, &mut rng, sink) {
                return;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn speak_chunk(
        &self,
        par: &dyn Parallel,
        voice: &VoiceState,
        segment: usize,
        p: &text::Prepared,
        opts: &SpeakOptions,
        rng: &mut Rng,
        sink: &mut dyn FnMut(Chunk<'_>) -> bool,
    ) -> bool {
        let tokens = self.tokenizer.encode(&p.text);
        let frames_after_eos = p.frames_after_eos + 2;
        let secs = tokens.len() as f64 / 3.0 + 2.0;
        let max_frames = (secs * self.config.frame_rate as f64).ceil() as usize;
        let mut cache: KvCache = voice.cache.clone();
        self.flow.prompt_text(par, &tokens, &mut cache);
        let mut mimi: MimiState = self.mimi.state();
        let fade = (self.config.sample_rate / 200) as usize;
        let std = opts.temperature.max(0.0).sqrt();
        let ldim = self.flow.ldim;
        let mut prev: Option<Vec<f32>> = None;
        let mut eos_step = None;
        let mut noise = vec![0f32; ldim];
        for step in 0..max_frames {
            for n in noise.iter_mut() {
                *n = if std > 0.0 { rng.normal() * std } else { 0.0 };
            }
            let frame = self.flow.step(par, prev.as_deref(), &noise, &mut cache);
            if frame.eos_logit > opts.eos_threshold
                && eos_step.is_none()
                && step >= MIN_FRAMES_BEFORE_EOS
            {
                eos_step = Some(step);
            }
            if eos_step.is_some_and(|e| step >= e + frames_after_eos) {
                break;
            }
            let z: Vec<f32> = frame
                .latent
                .iter()
                .zip(&self.flow.emb_std)
                .zip(&self.flow.emb_mean)
                .map(|((x, s), m)| x * s + m)
                .collect();
            let mut audio = self.mimi.decode(par, &z, 1, &mut mimi);
            if step == 0 {
                let n = fade.min(audio.len());
                for (i, a) in audio[..n].iter_mut().enumerate() {
                    *a *= if fade > 1 {
                        i as f32 / (fade - 1) as f32
                    } else {
                        1.0
                    };
                }
            }
            let go_on = sink(Chunk {
                segment,
                latent: &frame.latent,
                audio: &audio,
            });
            if !go_on {
                return false;
            }
            prev = Some(frame.latent);
        }
        true
    }
}

/// Seeded normals for the flow noise: Box–Muller over the sampler's xoshiro256** stream.
#[derive(Debug, Clone)]
struct Rng {
    bits: trillim_core::sampler::Rng,
    spare: Option<f32>,
}

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng {
            bits: trillim_core::sampler::Rng::new(seed),
            spare: None,
        }
    }

    fn uniform(&mut self) -> f64 {
        ((self.bits.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f32 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u, v) = (self.uniform(), self.uniform());
        let r = (-2.0 * u.ln()).sqrt();
        let a = std::f64::consts::TAU * v;
        self.spare = Some((r * a.sin()) as f32);
        (r * a.cos()) as f32
    }
}
