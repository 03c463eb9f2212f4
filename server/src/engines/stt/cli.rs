//! `trillim transcribe FILE`: the speech-to-text engine from the command line, and the store
//! listing `trillim doctor` prints.

use std::path::PathBuf;

use anyhow::Context;
use trillim_runtime::ThreadPool;

use super::{default_threads, resolve, Loaded, Request, DEFAULT_BEAM, DEFAULT_WHISPER_MODEL};
use crate::openai::audio::{subtitles, verbose_json, Format};
use crate::store::Store;

/// Transcribe an audio file with Whisper.
#[derive(Debug, clap::Args)]
pub struct TranscribeArgs {
    /// Audio file (wav, flac, mp3, ogg/vorbis, m4a/aac).
    pub file: PathBuf,
    /// Output: text, json, verbose_json, srt or vtt.
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Whisper model: a store id or a directory holding a CTranslate2 model.bin or a Hugging
    /// Face model.safetensors.
    #[arg(long, default_value = DEFAULT_WHISPER_MODEL)]
    pub whisper_model: String,
    /// Beam size (1 = greedy decoding).
    #[arg(long, default_value_t = DEFAULT_BEAM, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16))]
    pub whisper_beam: usize,
    /// Language code for multilingual models (detected when absent).
    #[arg(long)]
    pub language: Option<String>,
    /// Text that conditions the transcript (names, spelling).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Threads (0 = half the cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print load and transcription times, the real-time factor and peak memory to stderr.
    #[arg(long)]
    pub timings: bool,
    /// Transcribe this many times (with --timings: the fastest run is reported).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
}

/// `trillim transcribe`.
pub fn transcribe(args: TranscribeArgs) -> anyhow::Result<()> {
    let format = Format::parse(&args.format).with_context(|| {
        format!(
            "unsupported --format `{}`: use text, json, verbose_json, srt or vtt",
            args.format
        )
    })?;
    let (_, dir) = resolve(&Store::from_env(), &args.whisper_model)?;
    let audio = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let t0 = std::time::Instant::now();
    let loaded = Loaded::load(&dir, args.whisper_beam)?;
    let load_secs = t0.elapsed().as_secs_f64();
    let threads = if args.threads == 0 {
        default_threads()
    } else {
        args.threads
    };
    let pool = ThreadPool::new(threads);
    let request = Request {
        language: args.language,
        prompt: args.prompt,
        ..Request::default()
    };
    let mut best = f64::INFINITY;
    let mut t = None;
    for _ in 0..args.repeat {
        let start = std::time::Instant::now();
        let run = loaded
            .transcribe(&pool, &audio, &request)
            .with_context(|| format!("cannot transcribe {}", args.file.display()))?;
        best = best.min(start.elapsed().as_secs_f64());
        t = Some(run);
    }
    let Some(t) = t else {
        anyhow::bail!("nothing transcribed");
    };
    if args.timings {
        eprintln!(
            "load {load_secs:.3} s; audio {:.2} s; transcription {best:.3} s (best of {}, {threads} threads, file decoding included); real-time factor {:.2}x; peak RSS {}",
            t.duration,
            args.repeat,
            t.duration / best,
            peak_rss().map_or_else(|| "unknown".into(), |kb| format!("{:.1} MiB", kb as f64 / 1024.0)),
        );
    }
    let out = match format {
        Format::Text => format!("{}\n", t.text),
        Format::Json => format!("{}\n", serde_json::json!({ "text": t.text })),
        Format::VerboseJson => format!("{:#}\n", verbose_json(&t)),
        Format::Srt => subtitles(&t, false),
        Format::Vtt => subtitles(&t, true),
    };
    print!("{out}");
    Ok(())
}

/// The process's peak resident set in KiB (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whisper models in the store: `(id, directory, bytes of model.bin)`.
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
            let bin = name.path().join("model.bin");
            if let Ok(meta) = std::fs::metadata(&bin) {
                let id = format!(
                    "{}/{}",
                    org.file_name().to_string_lossy(),
                    name.file_name().to_string_lossy()
                );
                out.push((id, name.path(), meta.len()));
            }
        }
    }
    out.sort();
    out
}
