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
pub mod encoder;
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

use encoder::MimiEncoder;
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
    #[error("this model cannot clone voices (it has no Mimi encoder or speaker projection)")]
    NoCloning,
    #[error("{0}")]
    Audio(#[from] crate::audio::AudioError),
}

/// Longest recording a voice is cloned from, in seconds; the rest is cut off (pocket-tts's
/// `truncate` limit).
pub const MAX_CLONE_SECONDS: u32 = 30;
/// Longest upload decoded for cloning, in seconds (it is then cut to `MAX_CLONE_SECONDS`).
pub const MAX_CLONE_UPLOAD_SECONDS: u32 = 600;

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
    encoder: Option<MimiEncoder>,
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
        let encoder = MimiEncoder::load(&mut t, &config)?;
        Ok(TtsModel {
            config,
            tokenizer,
            flow,
            mimi,
            encoder,
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

    /// Whether voices can be cloned from recordings with this model.
    pub fn can_clone(&self) -> bool {
        self.encoder.is_some() && self.flow.speaker_proj.is_some()
    }

    /// The voice-state file of `voice` for this model.
    pub fn voice_file(&self, voice: &VoiceState) -> Vec<u8> {
        let dims = self.flow.transformer.dims();
        voice.to_safetensors(dims.kv_heads, dims.attn_dim / dims.heads)
    }

    /// Clones a voice from an uploaded recording (any format `audio::decode_mono` reads).
    pub fn clone_voice_file(
        &self,
        par: &dyn Parallel,
        bytes: &[u8],
    ) -> Result<VoiceState, TtsError> {
        if !self.can_clone() {
            return Err(TtsError::NoCloning);
        }
        if bytes.is_empty() {
            return Err(crate::audio::AudioError::Empty.into());
        }
        let (mono, rate) = crate::audio::decode_mono(bytes, MAX_CLONE_UPLOAD_SECONDS)?;
        if mono.is_empty() {
            return Err(crate::audio::AudioError::NoSamples.into());
        }
        self.clone_voice(par, &mono, rate)
    }

    /// Clones a voice from mono samples at `rate` Hz as pocket-tts's
    /// `get_state_for_audio_prompt(…, truncate=True)` does: the first 30 s, resampled to the
    /// codec's rate, ended on a pause, encoded by Mimi, projected to the FlowLM's width after
    /// its `bos_before_voice` row, and run through the FlowLM's transformer; the voice is the
    /// key/value cache that leaves.
    pub fn clone_voice(
        &self,
        par: &dyn Parallel,
        samples: &[f32],
        rate: u32,
    ) -> Result<VoiceState, TtsError> {
        let (Some(enc), Some(proj)) = (&self.encoder, &self.flow.speaker_proj) else {
            return Err(TtsError::NoCloning);
        };
        if rate == 0 {
            return Err(crate::audio::AudioError::BadParameters.into());
        }
        let keep = samples
            .len()
            .min(MAX_CLONE_SECONDS as usize * rate as usize);
        let wav = crate::resample::resample(&samples[..keep], rate, self.config.sample_rate);
        if wav.is_empty() {
            return Err(crate::audio::AudioError::NoSamples.into());
        }
        if wav.iter().any(|x| !x.is_finite()) {
            return Err(TtsError::Voice(
                "the recording holds non-finite samples".into(),
            ));
        }
        let wav = voice::end_on_pause(&wav, self.config.sample_rate);
        let latents = enc.encode(par, &wav);
        let n = latents.len() / enc.dim;
        let d = self.flow.d;
        let bos = self.flow.bos_before_voice.as_deref().unwrap_or(&[]);
        let lead = bos.len() / d;
        let mut rows = vec![0f32; (lead + n) * d];
        rows[..bos.len()].copy_from_slice(bos);
        proj.forward(par, &latents, n, &mut rows[bos.len()..]);
        if lead + n > voice::MAX_VOICE_POSITIONS {
            return Err(TtsError::Voice("the recording is too long".into()));
        }
        let mut cache = KvCache::new(self.flow.transformer.dims().layers);
        self.flow.prompt_rows(par, &mut rows, lead + n, &mut cache);
        Ok(VoiceState { cache })
    }

    /// The Mimi encoder's latents of 24 kHz samples (for tests against the reference).
    pub fn encode_latents(&self, par: &dyn Parallel, samples: &[f32]) -> Option<Vec<f32>> {
        self.encoder.as_ref().map(|e| e.encode(par, samples))
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
