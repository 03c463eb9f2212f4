//! `trillim speak TEXT -o out.wav`: the text-to-speech engine from the command line, with
//! optional timings (time to first audio, real-time factor) for benchmarks.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use trillim_runtime::ThreadPool;
use trillim_voice::stretch::TimeStretch;
use trillim_voice::tts::TtsModel;

use super::{
    default_voices_dir, pcm16, resolve, valid_voice_id, BUILTIN_VOICES, DEFAULT_TTS_MODEL,
    DEFAULT_VOICE,
};
use crate::store::Store;

/// Speak a text with pocket-tts into a WAV file.
#[derive(Debug, clap::Args)]
pub struct SpeakArgs {
    /// The text.
    pub text: String,
    /// Voice: a built-in one (alba, marius, javert, jean, fantine, cosette, eponine, azelma)
    /// or a custom one in --voices-dir.
    #[arg(long, default_value = DEFAULT_VOICE)]
    pub voice: String,
    /// Output WAV file (`-` for standard output).
    #[arg(short, long, default_value = "speech.wav")]
    pub output: PathBuf,
    /// pocket-tts model: a store id or a directory with model.safetensors and tokenizer.json.
    #[arg(long, default_value = DEFAULT_TTS_MODEL)]
    pub tts_model: String,
    /// Where custom voices are kept.
    #[arg(long)]
    pub voices_dir: Option<PathBuf>,
    /// Threads (0 = half the cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Speaking rate, 0.25–4.0: the duration changes, the pitch does not.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f32,
    /// Sampling temperature of the flow head (the model's default when absent).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Print the load time, time to first audio and real-time factor to stderr.
    #[arg(long)]
    pub timings: bool,
}

/// `trillim speak`.
pub fn speak(args: SpeakArgs) -> anyhow::Result<()> {
    if args.text.trim().is_empty() {
        anyhow::bail!("the text is empty");
    }
    if !(0.25..=4.0).contains(&args.speed) {
        anyhow::bail!("speed must be between 0.25 and 4.0");
    }
    let (_, dir) = resolve(&Store::from_env(), &args.tts_model)?;
    let voice_path = if BUILTIN_VOICES.contains(&args.voice.as_str()) {
        dir.join("embeddings")
            .join(format!("{}.safetensors", args.voice))
    } else if valid_voice_id(&args.voice) {
        args.voices_dir
            .clone()
            .unwrap_or_else(default_voices_dir)
            .join(format!("{}.safetensors", args.voice))
    } else {
        anyhow::bail!("Unknown voice: {}", args.voice);
    };
    let t0 = std::time::Instant::now();
    let model = TtsModel::load(&dir)
        .with_context(|| format!("cannot load the model in {}", dir.display()))?;
    let voice_bytes = std::fs::read(&voice_path)
        .with_context(|| format!("Unknown voice: {} ({})", args.voice, voice_path.display()))?;
    let voice = model.voice(&voice_bytes)?;
    let load = t0.elapsed();
    let threads = if args.threads == 0 {
        crate::engines::stt::default_threads()
    } else {
        args.threads
    };
    let pool = ThreadPool::new(threads);
    let mut opts = model.default_options();
    if let Some(t) = args.temperature {
        opts.temperature = t.max(0.0);
    }
    opts.seed = crate::state::random_u64();
    let mut samples = Vec::new();
    let t1 = std::time::Instant::now();
    let mut first = None;
    let mut stretch = TimeStretch::new(args.speed, model.sample_rate());
    model.speak(&pool, &voice, &args.text, &opts, &mut |c| {
        first.get_or_insert_with(|| t1.elapsed());
        samples.extend(stretch.push(c.audio));
        true
    });
    samples.extend(stretch.finish());
    let synth = t1.elapsed();
    let rate = model.sample_rate();
    let pcm = pcm16(&samples);
    let mut wav = super::wav_header(rate).to_vec();
    let data = pcm.len() as u32;
    wav[4..8].copy_from_slice(&(36 + data).to_le_bytes());
    wav[40..44].copy_from_slice(&data.to_le_bytes());
    wav.extend_from_slice(&pcm);
    if args.output.as_os_str() == "-" {
        std::io::stdout()
            .write_all(&wav)
            .context("cannot write to standard output")?;
    } else {
        std::fs::write(&args.output, &wav)
            .with_context(|| format!("cannot write {}", args.output.display()))?;
    }
    if args.timings {
        let audio_secs = samples.len() as f64 / rate as f64;
        eprintln!(
            "load {:.3} s, first audio {:.1} ms, {:.2} s of audio in {:.3} s: real-time factor {:.3} ({:.1}x faster than real time), {threads} threads",
            load.as_secs_f64(),
            first.map_or(0.0, |f| f.as_secs_f64() * 1000.0),
            audio_secs,
            synth.as_secs_f64(),
            synth.as_secs_f64() / audio_secs.max(1e-9),
            audio_secs / synth.as_secs_f64().max(1e-9),
        );
    }
    Ok(())
}

/// pocket-tts models in the store (what `trillim doctor` lists): id, directory, weight bytes.
pub fn stored_models(store: &Store) -> Vec<(String, PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(orgs) = std::fs::read_dir(store.root()) else {
        return out;
    };
    for org in orgs.flatten() {
        let Ok(names) = std::fs::read_dir(org.path()) else {
            continue;
        };
        for name in names.flatten() {
            let id = format!(
                "{}/{}",
                org.file_name().to_string_lossy(),
                name.file_name().to_string_lossy()
            );
            if let Ok((_, dir)) = resolve(store, &id) {
                if let Ok(meta) = std::fs::metadata(dir.join("model.safetensors")) {
                    out.push((id, dir, meta.len()));
                }
            }
        }
    }
    out.sort();
    out
}
