//! The text-to-speech engine: one OS thread owning a pocket-tts model and its thread pool,
//! fed through a bounded queue (a full queue is refused at once: 429). Each utterance streams
//! 16-bit PCM through a small bounded channel as frames are decoded; when the client goes,
//! the channel closes and synthesis stops at the next frame. Cloning a voice from a recording
//! goes through the same queue and pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use trillim_runtime::ThreadPool;
use trillim_voice::stretch::TimeStretch;
use trillim_voice::tts::{TtsModel, VoiceState};

use crate::store::Store;

pub mod cli;

/// The store id `--tts-model` names by default (its files are placed by hand for now:
/// `trillim pull` fetches GGUF and CTranslate2 repositories only).
pub const DEFAULT_TTS_MODEL: &str = "kyutai/pocket-tts";
/// Utterances that may wait behind the running one; more are refused.
pub const QUEUE: usize = 4;
/// The built-in voices, in the order `GET /v1/voices` lists them.
pub const BUILTIN_VOICES: [&str; 8] = [
    "alba", "azelma", "cosette", "eponine", "fantine", "javert", "jean", "marius",
];
/// The voice used when a request names none.
pub const DEFAULT_VOICE: &str = "alba";
/// Longest input accepted, in characters.
pub const MAX_INPUT_CHARS: usize = 100_000;
/// Custom voices kept at most.
pub const MAX_CUSTOM_VOICES: usize = 64;
/// Total bytes of custom voice files kept at most.
pub const MAX_VOICES_BYTES: u64 = 100 << 20;

/// Why an utterance or a voice was refused.
#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("the text-to-speech queue is full ({QUEUE} waiting); retry shortly")]
    Busy,
    #[error("Unknown voice: {0}")]
    UnknownVoice(String),
    #[error("{0}")]
    BadVoice(String),
    #[error("the text-to-speech engine stopped")]
    Stopped,
    #[error("cloning a voice from a recording needs a model with the Mimi encoder and speaker projection; this one has none (upload a voice state instead)")]
    NoCloning,
    #[error("cannot clone a voice from this file: {0}")]
    BadRecording(String),
}

enum Job {
    Speak {
        text: String,
        voice: Arc<VoiceState>,
        speed: f32,
        out: mpsc::Sender<Bytes>,
    },
    Clone {
        recording: Vec<u8>,
        reply: oneshot::Sender<Result<VoiceState, trillim_voice::tts::TtsError>>,
    },
}

/// A running text-to-speech engine.
#[derive(Clone)]
pub struct Tts {
    tx: SyncSender<Job>,
    model: Arc<TtsModel>,
    /// The model's name.
    pub model_id: String,
    model_dir: PathBuf,
    voices_dir: PathBuf,
    voices: Arc<Mutex<BTreeMap<String, Arc<VoiceState>>>>,
    /// Threads of the engine's pool.
    pub threads: usize,
}

impl std::fmt::Debug for Tts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tts")
            .field("model_id", &self.model_id)
            .finish_non_exhaustive()
    }
}

/// Finds a pocket-tts model: a directory holding `model.safetensors` and `tokenizer.json`,
/// or a store id.
pub fn resolve(store: &Store, arg: &str) -> anyhow::Result<(String, PathBuf)> {
    let is_model =
        |d: &Path| d.join("model.safetensors").is_file() && d.join("tokenizer.json").is_file();
    let p = Path::new(arg);
    if is_model(p) {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| arg.into());
        return Ok((name, p.to_path_buf()));
    }
    if let Ok(dir) = store.model_dir(arg) {
        if is_model(&dir) {
            return Ok((arg.to_string(), dir));
        }
        // The Hub repository keeps each language in its own folder.
        let english = dir.join("languages/english");
        if is_model(&english) {
            return Ok((arg.to_string(), english));
        }
    }
    let into = store
        .model_dir(arg)
        .unwrap_or_else(|_| store.root().join(DEFAULT_TTS_MODEL));
    anyhow::bail!(
        "text-to-speech model `{arg}` is neither a directory with model.safetensors and \
         tokenizer.json nor in the model store: run `trillim pull {DEFAULT_TTS_MODEL}` (gated: \
         accept its terms on the Hub and set HF_TOKEN; `trillim pull \
         {DEFAULT_TTS_MODEL}-without-voice-cloning` needs no token but cannot clone voices), or \
         pass its directory (pulled, it is {})",
        into.display()
    )
}

/// `~/.trillim/voices`.
pub fn default_voices_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".trillim/voices")
}

/// Whether `id` may name a custom voice: ASCII letters, digits, `-` and `_`, at most 64.
pub fn valid_voice_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// 16-bit little-endian PCM of `samples`, clipped to [-1, 1].
pub fn pcm16(samples: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    for s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32767.0) as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The 44-byte header of an unbounded mono 16-bit WAV stream (sizes 0xFFFFFFFF).
pub fn wav_header(rate: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    h[8..16].copy_from_slice(b"WAVEfmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&1u16.to_le_bytes());
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * 2).to_le_bytes());
    h[32..34].copy_from_slice(&2u16.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    h
}

/// An utterance taken off the queue.
struct SpeakJob {
    text: String,
    voice: Arc<VoiceState>,
    speed: f32,
    out: mpsc::Sender<Bytes>,
}

impl Tts {
    /// Loads the model and starts the engine thread.
    pub fn start(
        model_id: String,
        dir: &Path,
        voices_dir: PathBuf,
        threads: usize,
    ) -> anyhow::Result<Tts> {
        let model = Arc::new(TtsModel::load(dir).with_context(|| {
            format!("cannot load the text-to-speech model in {}", dir.display())
        })?);
        let threads = if threads == 0 {
            crate::engines::stt::default_threads()
        } else {
            threads
        };
        let tts = Tts {
            tx: Self::spawn(model.clone(), threads)?,
            model,
            model_id,
            model_dir: dir.to_path_buf(),
            voices_dir,
            voices: Arc::new(Mutex::new(BTreeMap::new())),
            threads,
        };
        // The default voice is checked (and cached) at start, so a broken model directory
        // fails here rather than on the first request.
        tts.voice(DEFAULT_VOICE)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(tts)
    }

    fn spawn(model: Arc<TtsModel>, threads: usize) -> anyhow::Result<SyncSender<Job>> {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("trillim-tts".into())
            .spawn(move || {
                let pool = ThreadPool::new(threads);
                let mut opts = model.default_options();
                while let Ok(job) = rx.recv() {
                    let (text, voice, speed, out) = match job {
                        Job::Speak {
                            text,
                            voice,
                            speed,
                            out,
                        } => (text, voice, speed, out),
                        Job::Clone { recording, reply } => {
                            if reply.is_closed() {
                                continue;
                            }
                            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                model.clone_voice_file(&pool, &recording)
                            }))
                            .unwrap_or_else(|_| {
                                Err(trillim_voice::tts::TtsError::Voice(
                                    "the recording could not be encoded".into(),
                                ))
                            });
                            let _ = reply.send(r);
                            continue;
                        }
                    };
                    let job = SpeakJob {
                        text,
                        voice,
                        speed,
                        out,
                    };
                    if job.out.is_closed() {
                        continue;
                    }
                    opts.seed = crate::state::random_u64();
                    // A speed other than 1 changes the duration, not the pitch.
                    let mut stretch = TimeStretch::new(job.speed, model.sample_rate());
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        model.speak(&pool, &job.voice, &job.text, &opts, &mut |c| {
                            let samples = stretch.push(c.audio);
                            job.out.blocking_send(Bytes::from(pcm16(&samples))).is_ok()
                        })
                    }));
                    let rest = stretch.finish();
                    if !rest.is_empty() {
                        let _ = job.out.blocking_send(Bytes::from(pcm16(&rest)));
                    }
                }
            })
            .context("cannot start the text-to-speech thread")?;
        Ok(tx)
    }

    /// Clones a voice from a recording on the engine thread (queued like an utterance).
    pub async fn clone_voice(&self, recording: Vec<u8>) -> Result<VoiceState, TtsError> {
        if !self.model.can_clone() {
            return Err(TtsError::NoCloning);
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Job::Clone { recording, reply })
            .map_err(|e| match e {
                TrySendError::Full(_) => TtsError::Busy,
                TrySendError::Disconnected(_) => TtsError::Stopped,
            })?;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(trillim_voice::tts::TtsError::NoCloning)) => Err(TtsError::NoCloning),
            Ok(Err(e)) => Err(TtsError::BadRecording(e.to_string())),
            Err(_) => Err(TtsError::Stopped),
        }
    }

    /// Output sample rate.
    pub fn sample_rate(&self) -> u32 {
        self.model.sample_rate()
    }

    /// The voice `id`: a built-in one from the model directory or a custom one.
    pub fn voice(&self, id: &str) -> Result<Arc<VoiceState>, TtsError> {
        if let Some(v) = self
            .voices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return Ok(v.clone());
        }
        let path = if BUILTIN_VOICES.contains(&id) {
            self.model_dir
                .join("embeddings")
                .join(format!("{id}.safetensors"))
        } else if valid_voice_id(id) {
            self.voices_dir.join(format!("{id}.safetensors"))
        } else {
            return Err(TtsError::UnknownVoice(id.to_string()));
        };
        let bytes = std::fs::read(&path).map_err(|_| TtsError::UnknownVoice(id.to_string()))?;
        let v = Arc::new(
            self.model
                .voice(&bytes)
                .map_err(|e| TtsError::BadVoice(format!("voice '{id}': {e}")))?,
        );
        self.voices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), v.clone());
        Ok(v)
    }

    /// Custom voices on disk, sorted.
    pub fn custom_voices(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.voices_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = name.strip_suffix(".safetensors")?;
                (valid_voice_id(id) && !BUILTIN_VOICES.contains(&id)).then(|| id.to_string())
            })
            .collect();
        out.sort();
        out
    }

    /// Registers (or replaces) a custom voice from a voice-state file, written atomically.
    pub fn add_voice(&self, id: &str, bytes: &[u8]) -> Result<(), TtsError> {
        let v = self.model.voice(bytes).map_err(|e| {
            TtsError::BadVoice(format!("the file is not a voice state for this model: {e}"))
        })?;
        self.store_voice(id, v, bytes)
    }

    /// Registers (or replaces) a cloned voice, stored as its voice-state file.
    pub fn add_cloned_voice(&self, id: &str, v: VoiceState) -> Result<(), TtsError> {
        let bytes = self.model.voice_file(&v);
        self.store_voice(id, v, &bytes)
    }

    /// Writes `bytes` (the voice-state file of `v`) as `id` within the caps, atomically.
    fn store_voice(&self, id: &str, v: VoiceState, bytes: &[u8]) -> Result<(), TtsError> {
        let existing = self.custom_voices();
        if !existing.iter().any(|e| e == id) && existing.len() >= MAX_CUSTOM_VOICES {
            return Err(TtsError::BadVoice(format!(
                "at most {MAX_CUSTOM_VOICES} custom voices are kept; delete one first"
            )));
        }
        let total: u64 = existing
            .iter()
            .filter(|e| *e != id)
            .filter_map(|e| {
                std::fs::metadata(self.voices_dir.join(format!("{e}.safetensors"))).ok()
            })
            .map(|m| m.len())
            .sum();
        if total + bytes.len() as u64 > MAX_VOICES_BYTES {
            return Err(TtsError::BadVoice(
                "the voices directory is full (100 MB); delete a voice first".into(),
            ));
        }
        let io = |e: std::io::Error| TtsError::BadVoice(format!("cannot store the voice: {e}"));
        std::fs::create_dir_all(&self.voices_dir).map_err(io)?;
        let tmp = self
            .voices_dir
            .join(format!(".{id}.{}.tmp", crate::state::random_u64()));
        let dst = self.voices_dir.join(format!("{id}.safetensors"));
        let written = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &dst));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        self.voices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), Arc::new(v));
        Ok(())
    }

    /// Deletes a custom voice; `false` if there was none.
    pub fn delete_voice(&self, id: &str) -> bool {
        if !valid_voice_id(id) || BUILTIN_VOICES.contains(&id) {
            return false;
        }
        self.voices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        std::fs::remove_file(self.voices_dir.join(format!("{id}.safetensors"))).is_ok()
    }

    /// Queues an utterance; its PCM arrives on the returned receiver, frame by frame.
    pub fn speak(
        &self,
        text: String,
        voice: Arc<VoiceState>,
        speed: f32,
    ) -> Result<mpsc::Receiver<Bytes>, TtsError> {
        let (out, rx) = mpsc::channel(8);
        self.tx
            .try_send(Job::Speak {
                text,
                voice,
                speed,
                out,
            })
            .map_err(|e| match e {
                TrySendError::Full(_) => TtsError::Busy,
                TrySendError::Disconnected(_) => TtsError::Stopped,
            })?;
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_unbounded_pcm() {
        let h = wav_header(24000);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(&h[4..8], &[0xff; 4]);
        assert_eq!(u32::from_le_bytes(h[24..28].try_into().unwrap()), 24000);
        assert_eq!(&h[40..44], &[0xff; 4]);
    }

    #[test]
    fn voice_ids() {
        assert!(valid_voice_id("my-voice_2"));
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", "a.b", &"x".repeat(65)] {
            assert!(!valid_voice_id(bad), "{bad}");
        }
    }
}
