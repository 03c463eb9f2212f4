//! `trillim transcribe FILE`: the speech-to-text engine from the command line, and the store
//! listing `trillim doctor` prints.

use std::path::PathBuf;

use anyhow::Context;
use trillim_runtime::ThreadPool;

use super::{default_threads, resolve, Loaded, Request, DEFAULT_WHISPER_MODEL};
use crate::openai::audio::{subtitles, transcript_text, verbose_json, Format};
use crate::store::Store;

/// Transcribe an audio file with Whisper.
#[derive(Debug, clap::Args)]
pub struct TranscribeArgs {
    /// Audio file (wav, flac, mp3, ogg/vorbis, m4a/aac).
    pub file: PathBuf,
    /// Output: text, json, verbose_json, srt or vtt.
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Whisper model: a store id or a directory holding a CTranslate2 model.bin.
    #[arg(long, default_value = DEFAULT_WHISPER_MODEL)]
    pub whisper_model: String,
    /// Language code for multilingual models (detected when absent).
    #[arg(long)]
    pub language: Option<String>,
    /// Text that conditions the transcript (names, spelling).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Threads (0 = half the cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
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
    let loaded = Loaded::load(&dir)?;
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
    let t = loaded
        .transcribe(&pool, &audio, &request)
        .with_context(|| format!("cannot transcribe {}", args.file.display()))?;
    let out = match format {
        Format::Text => format!("{}\n", transcript_text(&t)),
        Format::Json => format!("{}\n", serde_json::json!({ "text": transcript_text(&t) })),
        Format::VerboseJson => format!("{:#}\n", verbose_json(&t)),
        Format::Srt => subtitles(&t, false),
        Format::Vtt => subtitles(&t, true),
    };
    print!("{out}");
    Ok(())
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
