//! The speech-to-text engine: one OS thread owning a Whisper model and its own thread pool,
//! fed through a bounded queue. A full queue is refused at once (the route answers 429); a
//! request whose client has gone is dropped before it is decoded.
//!
//! Threads: the engine's pool is separate from the text engine's. `--voice-threads 0` (the
//! default) gives it half the cores (at least one); both pools park when idle, so each engine
//! gets the whole machine's share it was given while the other is quiet, and they split the
//! cores when both run.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::oneshot;
use trillim_runtime::tokenizer_json::OwnedTokenizer;
use trillim_runtime::ThreadPool;
use trillim_voice::audio::{decode_16k_mono, AudioError};
use trillim_voice::whisper::{ModelFormat, Options, SpeechModel, Transcript};

use crate::store::Store;

pub mod cli;

/// The store id `--voice` uses when `--whisper-model` is not given.
pub const DEFAULT_WHISPER_MODEL: &str = "Systran/faster-whisper-tiny.en";
/// Longest audio accepted, in seconds.
pub const MAX_AUDIO_SECONDS: u32 = 30 * 60;
/// Transcriptions that may wait behind the running one; more are refused.
pub const QUEUE: usize = 8;
/// Beam size at temperature 0 unless `--whisper-beam` says otherwise (CTranslate2's and
/// faster-whisper's default).
pub const DEFAULT_BEAM: usize = trillim_voice::whisper::DEFAULT_BEAM;

/// What a transcription request asks for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Language code (multilingual models only).
    pub language: Option<String>,
    /// Text that conditions the transcript (names, spelling, style).
    pub prompt: Option<String>,
    /// Sampling temperature; 0 decodes with the engine's beam search.
    pub temperature: f32,
    /// Seed for sampling.
    pub seed: u64,
}

/// Why a transcription did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SttError {
    #[error("the speech-to-text queue is full ({QUEUE} waiting); retry shortly")]
    Busy,
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error("the speech-to-text engine stopped")]
    Stopped,
    #[error("transcription failed inside the engine")]
    Failed,
}

struct Job {
    audio: Vec<u8>,
    request: Request,
    reply: oneshot::Sender<Result<Transcript, SttError>>,
}

/// A running speech-to-text engine.
#[derive(Debug, Clone)]
pub struct Stt {
    tx: SyncSender<Job>,
    /// The model's name as the API reports it.
    pub model_id: String,
    /// Threads of the engine's pool.
    pub threads: usize,
}

/// Finds a Whisper model: a directory holding a CTranslate2 `model.bin` or a Hugging Face
/// `model.safetensors`, or a store id.
pub fn resolve(store: &Store, arg: &str) -> anyhow::Result<(String, PathBuf)> {
    let as_path = Path::new(arg);
    if ModelFormat::of(as_path).is_some() {
        let name = as_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| arg.to_string());
        return Ok((name, as_path.to_path_buf()));
    }
    if let Ok(dir) = store.model_dir(arg) {
        if ModelFormat::of(&dir).is_some() {
            return Ok((arg.to_string(), dir));
        }
        if dir.is_dir() {
            anyhow::bail!(
                "{} holds neither a CTranslate2 model.bin nor a Hugging Face model.safetensors \
                 (Whisper models such as {DEFAULT_WHISPER_MODEL} or openai/whisper-tiny.en are supported)",
                dir.display()
            );
        }
    }
    anyhow::bail!(
        "Whisper model `{arg}` is neither a directory with a model.bin or model.safetensors nor in \
         the model store ({}); get it with `trillim pull {arg}`",
        store.root().display()
    )
}

/// Half the cores, at least one.
pub fn default_threads() -> usize {
    (trillim_runtime::pool::auto_threads() / 2).max(1)
}

/// A loaded model with what the engine needs beside it.
pub struct Loaded {
    model: SpeechModel,
    /// Beam size at temperature 0 (1 = greedy).
    beam: usize,
    tokenizer: Option<OwnedTokenizer>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").finish_non_exhaustive()
    }
}

impl Loaded {
    /// Loads the model directory; `beam` is the beam size used at temperature 0.
    pub fn load(dir: &Path, beam: usize) -> anyhow::Result<Loaded> {
        let model = SpeechModel::load_dir(dir)
            .with_context(|| format!("cannot load the Whisper model in {}", dir.display()))?;
        let tok = dir.join("tokenizer.json");
        let tokenizer = if tok.is_file() {
            Some(
                OwnedTokenizer::from_files(&tok, None)
                    .with_context(|| format!("cannot read {}", tok.display()))?,
            )
        } else {
            None
        };
        Ok(Loaded {
            model,
            beam,
            tokenizer,
        })
    }

    /// Transcribes encoded audio.
    pub fn transcribe(
        &self,
        pool: &ThreadPool,
        audio: &[u8],
        request: &Request,
    ) -> Result<Transcript, SttError> {
        let samples = decode_16k_mono(audio, MAX_AUDIO_SECONDS)?;
        let opts = Options {
            language: request.language.clone(),
            prompt: self.prompt_tokens(request.prompt.as_deref()),
            timestamps: true,
            temperature: request.temperature,
            beam: self.beam,
            seed: request.seed,
        };
        Ok(self.model.transcribe(pool, &samples, &opts))
    }

    /// A prompt as Whisper expects it: the text with one leading space, as text tokens.
    fn prompt_tokens(&self, prompt: Option<&str>) -> Vec<u32> {
        let (Some(text), Some(tok)) = (prompt.map(str::trim), &self.tokenizer) else {
            return Vec::new();
        };
        if text.is_empty() {
            return Vec::new();
        }
        let text = format!(" {text}");
        let t = tok.tokenizer();
        let mut out = vec![0u32; text.len() + 8];
        match t.encode(&text, false, false, &mut out) {
            Ok(n) => {
                out.truncate(n);
                let eot = self.model.vocab.specials.eot;
                out.retain(|&id| id < eot);
                out
            }
            Err(_) => Vec::new(),
        }
    }
}

impl Stt {
    /// Loads the model and starts the engine thread with a pool of `threads`, decoding with
    /// beams of `beam` at temperature 0.
    pub fn start(model_id: String, dir: &Path, threads: usize, beam: usize) -> anyhow::Result<Stt> {
        let loaded = Arc::new(Loaded::load(dir, beam)?);
        let threads = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("trillim-stt".into())
            .spawn(move || {
                let pool = ThreadPool::new(threads);
                while let Ok(job) = rx.recv() {
                    if job.reply.is_closed() {
                        continue;
                    }
                    // Nothing a request carries may stop the engine: a panic fails that
                    // request only.
                    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        loaded.transcribe(&pool, &job.audio, &job.request)
                    }))
                    .unwrap_or(Err(SttError::Failed));
                    let _ = job.reply.send(out);
                }
            })
            .context("cannot start the speech-to-text thread")?;
        Ok(Stt {
            tx,
            model_id,
            threads,
        })
    }

    /// Queues `audio` and waits for its transcript.
    pub async fn transcribe(
        &self,
        audio: Vec<u8>,
        request: Request,
    ) -> Result<Transcript, SttError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Job {
                audio,
                request,
                reply,
            })
            .map_err(|e| match e {
                TrySendError::Full(_) => SttError::Busy,
                TrySendError::Disconnected(_) => SttError::Stopped,
            })?;
        rx.await.map_err(|_| SttError::Stopped)?
    }
}
