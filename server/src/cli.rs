//! `trillim serve`, `chat`, `generate` and `doctor`.

use std::io::{BufRead, Write};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::sync::mpsc::unbounded_channel;
use trillim_core::sampler::{SamplerConfig, SamplerOverrides};
use trillim_runtime::{LoadOptions, LoraQuant, UnembedQuant};

use crate::engines::llm::{self as engine, Engine, Event, Job, SubmitError};
use crate::metrics::Metrics;
use crate::state::{self, AppState, BrowserSettings, Settings};
use crate::store::{ResolvedModel, Store};
use crate::template::Message;

/// The model `trillim serve` runs when none is named: BitNet b1.58 2B4T, Microsoft's official
/// GGUF conversion (I2_S ternary weights), pulled into the store on first use.
pub const DEFAULT_MODEL: &str = "microsoft/bitnet-b1.58-2B-4T-gguf";

/// Start the OpenAI-compatible HTTP server.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Store id (`org/name`), .gguf file or directory [default: microsoft/bitnet-b1.58-2B-4T-gguf,
    /// pulled on first use].
    pub model: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Inference threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Context size in tokens [default: the model's, capped by available memory].
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Requests that may wait for a free slot; more get 429.
    #[arg(long, default_value_t = 16)]
    pub max_queue: usize,
    /// Sequences generated at once (continuous batching); each has a KV cache of --ctx
    /// positions.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub parallel: u64,
    /// Require `Authorization: Bearer KEY` on /v1 routes.
    #[arg(long, env = "TRILLIM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Serve the voice routes: speech-to-text with Whisper, text-to-speech with pocket-tts.
    #[arg(long)]
    pub voice: bool,
    /// pocket-tts model for --voice: a store id or a directory with model.safetensors,
    /// tokenizer.json and embeddings/ (without it, the default id is used when it is in the
    /// store, else the speech routes answer 503).
    #[arg(long)]
    pub tts_model: Option<String>,
    /// Where custom voices are kept.
    #[arg(long)]
    pub voices_dir: Option<std::path::PathBuf>,
    /// Whisper model for --voice: a store id or a directory with a CTranslate2 model.bin or a
    /// Hugging Face model.safetensors.
    #[arg(long, default_value = crate::engines::stt::DEFAULT_WHISPER_MODEL)]
    pub whisper_model: String,
    /// Beam size for speech-to-text at temperature 0 (1 = greedy decoding); a request with a
    /// temperature above 0 samples instead.
    #[arg(long, default_value_t = crate::engines::stt::DEFAULT_BEAM, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16))]
    pub whisper_beam: usize,
    /// Speech-to-text threads (0 = half the cores); separate from --threads.
    #[arg(long, default_value_t = 0)]
    pub voice_threads: usize,
    /// Re-encode the output matrix at load: q8_0 or q4_0 (less memory traffic per token).
    #[arg(long, value_parser = parse_unembed_quant)]
    pub unembed_quant: Option<UnembedQuant>,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[command(flatten)]
    pub harness: crate::harness::cli::HarnessArgs,
    /// Web origins allowed to call the API besides loopback pages (comma-separated
    /// `scheme://host[:port]`, `null`, or `*` for any).
    #[arg(long, value_delimiter = ',', env = "TRILLIM_CORS_ORIGINS")]
    pub cors_origins: Vec<String>,
    /// Host names served besides loopback ones, checked against the `Host` header
    /// (comma-separated `name` or `name:port`, or `*` for any).
    #[arg(long, value_delimiter = ',', env = "TRILLIM_ALLOWED_HOSTS")]
    pub allowed_hosts: Vec<String>,
    /// Seconds a connection gets to send a request head (also the keep-alive idle timeout).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,
    /// Longest pause, in seconds, while a request body arrives.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout: u64,
    /// Slowest average request-body rate accepted, in bytes per second.
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..))]
    pub min_body_rate: u64,
    /// Most open connections; more get 503.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// MiB that unfinished request bodies may hold in all; a body that does not fit gets 503.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(2..=4096))]
    pub max_body_memory: u64,
    /// Seconds running requests get to finish after SIGTERM before the server exits.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout: u64,
}

impl ServeArgs {
    /// The connection and body limits these flags describe.
    pub fn limits(&self) -> crate::http::limits::Limits {
        use std::time::Duration;
        crate::http::limits::Limits {
            header_timeout: Duration::from_secs(self.header_timeout),
            body_timeout: Duration::from_secs(self.body_timeout),
            min_body_rate: self.min_body_rate,
            max_connections: self.max_connections as usize,
            max_body_memory: (self.max_body_memory as usize) << 20,
        }
    }
}

fn parse_unembed_quant(s: &str) -> Result<UnembedQuant, String> {
    UnembedQuant::parse(s)
}

/// A LoRA adapter to apply (`serve`, `chat`, `generate`).
#[derive(Debug, Clone, clap::Args)]
pub struct LoraArgs {
    /// LoRA adapter: a PEFT directory (adapter_config.json + adapter_model.safetensors), a
    /// directory holding one GGUF adapter, or a GGUF adapter file.
    #[arg(long, value_name = "DIR")]
    pub lora: Option<std::path::PathBuf>,
    /// How the adapter's matrices are stored: bf16 (the default), none (f32 as loaded), int8,
    /// q8_0 or q4_0.
    #[arg(long, value_parser = LoraQuant::parse, requires = "lora")]
    pub lora_quant: Option<LoraQuant>,
}

impl LoraArgs {
    /// The adapter these flags name, if any.
    pub(crate) fn spec(&self) -> Option<engine::AdapterSpec> {
        self.lora.as_ref().map(|path| engine::AdapterSpec {
            path: path.clone(),
            quant: self.lora_quant.unwrap_or_default(),
        })
    }
}

/// Options shared by `chat` and `generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Maximum tokens to generate [default: until the context is full].
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Keep only the K most likely tokens (0 = all).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling threshold in (0, 1].
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than this fraction of the most likely one, in [0, 1].
    #[arg(long)]
    pub min_p: Option<f32>,
    /// Penalize recently generated tokens (1 = off).
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    /// Random seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Inference threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Context size in tokens.
    #[arg(long)]
    pub ctx: Option<usize>,
    #[command(flatten)]
    pub lora: LoraArgs,
}

impl SamplingArgs {
    fn sampler(&self, d: &SamplerConfig) -> anyhow::Result<SamplerConfig> {
        let overrides = SamplerOverrides {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            ..SamplerOverrides::default()
        };
        if let Err(e) = overrides.validate() {
            bail!("--{}: {}", e.param.replace('_', "-"), e.message);
        }
        if self.max_tokens == Some(0) {
            bail!("--max-tokens must be >= 1");
        }
        Ok(overrides.apply(d, state::random_u64()))
    }
}

/// Chat with a model in the terminal.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// Store id (`org/name`), .gguf file or directory.
    pub model: String,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub harness: crate::harness::cli::HarnessArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Generate text from a prompt and stream it to stdout.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Store id (`org/name`), .gguf file or directory.
    pub model: String,
    /// Raw prompt (no chat template).
    #[arg(long, conflicts_with = "chat")]
    pub prompt: Option<String>,
    /// A user message, rendered with the model's chat template.
    #[arg(long)]
    pub chat: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Check this machine and the model store.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {}

fn resolve(arg: &str) -> anyhow::Result<ResolvedModel> {
    Store::from_env()
        .resolve_cli(arg)
        .map_err(anyhow::Error::from)
}

fn load(
    m: &ResolvedModel,
    shape: engine::ServeShape,
    opts: LoadOptions,
    lora: &LoraArgs,
) -> anyhow::Result<engine::Prepared> {
    let dir = m.dir.as_deref();
    let adapter = lora.spec();
    engine::prepare_adapted(&m.id, &m.name, &m.gguf, dir, shape, opts, adapter.as_ref())
        // The error names the file and the cause; the context adds what the user asked for.
        .with_context(|| format!("cannot load {}", m.id))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRILLIM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

/// `trillim serve`.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.max_queue == 0 {
        bail!("--max-queue must be at least 1");
    }
    init_logging();
    let store = Store::from_env();
    // A missing voice model fails before the text model is loaded.
    let tts_model = match (&args.tts_model, args.voice) {
        (Some(m), true) => Some(crate::engines::tts::resolve(&store, m)?),
        (None, true) => {
            crate::engines::tts::resolve(&store, crate::engines::tts::DEFAULT_TTS_MODEL).ok()
        }
        (_, false) => None,
    };
    let whisper = if args.voice {
        match crate::engines::stt::resolve(&store, &args.whisper_model) {
            Ok(w) => Some(w),
            // A text-to-speech-only server: the default Whisper model may be absent.
            Err(e)
                if tts_model.is_some()
                    && args.whisper_model == crate::engines::stt::DEFAULT_WHISPER_MODEL =>
            {
                tracing::warn!("speech-to-text is off: {e:#}");
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let resolved = match &args.model {
        Some(m) => resolve(m)?,
        None => match store.resolve_cli(DEFAULT_MODEL) {
            Ok(r) => r,
            Err(crate::store::StoreError::NotFound(_)) => {
                eprintln!("The default model {DEFAULT_MODEL} is not in the store yet; pulling it.");
                crate::store::cli::pull(crate::store::cli::PullArgs {
                    repo: DEFAULT_MODEL.to_string(),
                    revision: None,
                    force: false,
                    file: None,
                })?;
                resolve(DEFAULT_MODEL)?
            }
            Err(e) => return Err(e.into()),
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("trillim-http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let addr = format!("{}:{}", args.host, args.port);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&addr))
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().context("no local address")?;
    let opts = LoadOptions {
        unembed_quant: args.unembed_quant,
    };
    let shape = engine::ServeShape {
        ctx: args.ctx,
        threads: args.threads,
        slots: args.parallel as usize,
    };
    let stt = if let Some((id, dir)) = whisper {
        let stt = crate::engines::stt::Stt::start(id, &dir, args.voice_threads, args.whisper_beam)?;
        tracing::info!(model = %stt.model_id, threads = stt.threads, "speech-to-text ready");
        Some(stt)
    } else {
        None
    };
    let tts = if let Some((id, dir)) = tts_model {
        let voices = args
            .voices_dir
            .clone()
            .unwrap_or_else(crate::engines::tts::default_voices_dir);
        let tts = crate::engines::tts::Tts::start(id, &dir, voices, args.voice_threads)?;
        tracing::info!(model = %tts.model_id, threads = tts.threads, "text-to-speech ready");
        Some(tts)
    } else {
        if args.voice {
            tracing::warn!(
                "text-to-speech is off: no pocket-tts model (--tts-model DIR, or {} in the store)",
                crate::engines::tts::DEFAULT_TTS_MODEL
            );
        }
        None
    };
    let metrics = Arc::new(Metrics::default());
    let loopback = local.ip().is_loopback();
    if !loopback && args.api_key.is_none() {
        tracing::warn!(
            "listening on {local} without --api-key: anyone who can reach this address can use the model"
        );
    }
    let mut cors_origins = args.cors_origins.clone();
    cors_origins.retain(|o| !o.trim().is_empty());
    let mut allowed_hosts = args.allowed_hosts.clone();
    allowed_hosts.retain(|h| !h.trim().is_empty());
    let browser = BrowserSettings {
        check_host: loopback || !allowed_hosts.is_empty(),
        cors_origins,
        allowed_hosts,
        bound: args.host.clone(),
    };
    let settings = Settings {
        max_queue: args.max_queue,
        parallel: args.parallel as usize,
        ctx: args.ctx,
        limits: args.limits(),
        api_key: args.api_key.clone(),
        browser,
        drain_timeout: std::time::Duration::from_secs(args.drain_timeout),
    };
    let mut state = AppState::new(None, args.threads, settings, store, metrics.clone());
    if let Some(stt) = stt {
        state = state.with_stt(stt);
    }
    if let Some(tts) = tts {
        state = state.with_tts(tts);
    }
    state.voice = args.voice;
    // The server answers while the model loads: probes see it alive and not ready, requests
    // get a retryable 503, so a load balancer sends work elsewhere instead of waiting.
    state.set_slot(crate::registry::Slot::Loading);
    let state = Arc::new(state);
    *state.harness.write().unwrap_or_else(|e| e.into_inner()) = args.harness.config();
    // Held through the first load: a /v1/models/load meanwhile gets 409, not a race.
    let first_load = state.swap.blocking_lock();
    let server = rt.spawn(crate::http::serve(state.clone(), listener));
    tracing::info!(model = %resolved.id, "loading; listening on http://{local}");
    let t_load = std::time::Instant::now();
    let prepared = match load(&resolved, shape, opts, &args.lora) {
        Ok(p) => p,
        Err(e) => {
            state.stop.notify_one();
            let _ = rt.block_on(server);
            return Err(e);
        }
    };
    metrics.model_loaded(
        t_load.elapsed().as_secs_f64(),
        prepared.shared.slots,
        prepared.shared.ctx,
    );
    let engine = Engine::start(prepared, args.max_queue, metrics.clone());
    state.set_slot(crate::registry::Slot::Running(Arc::new(engine)));
    drop(first_load);
    tracing::info!(model = %resolved.id, "listening on http://{local}");
    eprintln!(
        "trillim {} serving {} on http://{local}",
        env!("CARGO_PKG_VERSION"),
        resolved.id
    );
    rt.block_on(server).context("the server task failed")??;
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

/// Runs one generation on `engine`, printing text as it comes; returns the text.
/// What one blocking generation produced.
struct Generated {
    text: String,
    tokens: usize,
    /// Seconds from submitting the job to the first generated token, if any.
    first_token: Option<f64>,
}

fn run_blocking(
    engine: &Engine,
    prompt: Vec<u32>,
    sampler: SamplerConfig,
    max_tokens: Option<usize>,
) -> anyhow::Result<Generated> {
    let start = std::time::Instant::now();
    let mut first_token = None;
    let (tx, mut rx) = unbounded_channel();
    let job = Job {
        prompt,
        sampler,
        max_tokens,
        stop: Vec::new(),
        logprobs: None,
        echo_logprobs: false,
        ignore_eos: false,
        grammar: None,
        request_id: "cli".into(),
        events: tx,
    };
    match engine.submit(job) {
        Ok(()) => {}
        Err(SubmitError::Full | SubmitError::Closed) => bail!("the engine is not accepting work"),
    }
    let mut text = String::new();
    let mut out = std::io::stdout();
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            Event::Started { .. } => {}
            Event::Text { text: t, .. } => {
                first_token.get_or_insert_with(|| start.elapsed().as_secs_f64());
                let _ = out.write_all(t.as_bytes());
                let _ = out.flush();
                text.push_str(&t);
            }
            Event::Done {
                completion_tokens, ..
            } => {
                return Ok(Generated {
                    text,
                    tokens: completion_tokens,
                    first_token,
                })
            }
            Event::Error(e) => bail!("generation failed: {e}"),
            Event::PromptLogprobs(_) => {}
        }
    }
    bail!("the engine stopped unexpectedly")
}

/// `trillim generate`.
pub fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let m = resolve(&args.model)?;
    let shape = engine::ServeShape {
        ctx: args.sampling.ctx,
        threads: args.sampling.threads,
        slots: 1,
    };
    let prepared = load(&m, shape, LoadOptions::default(), &args.sampling.lora)?;
    let shared = prepared.shared.clone();
    let sampler = args.sampling.sampler(&shared.defaults)?;
    let prompt = match (&args.prompt, &args.chat) {
        (Some(p), None) => shared.tok.encode(p, true),
        (None, Some(c)) => {
            let msgs = [Message {
                role: "user".into(),
                content: c.clone(),
                ..Default::default()
            }];
            let text = shared.template.render(&msgs, true)?;
            shared.tok.encode(&text, shared.template.is_fallback)
        }
        _ => bail!("give exactly one of --prompt or --chat"),
    };
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    if prompt.len() >= shared.ctx {
        bail!(
            "the prompt has {} tokens but the context holds {}",
            prompt.len(),
            shared.ctx
        );
    }
    let engine = Engine::start(prepared, 1, Arc::new(Metrics::default()));
    let t0 = std::time::Instant::now();
    let g = run_blocking(&engine, prompt.clone(), sampler, args.sampling.max_tokens)?;
    let dt = t0.elapsed().as_secs_f64();
    let n = g.tokens;
    println!();
    let ttft = g
        .first_token
        .map(|s| format!("first token after {:.1} ms, ", s * 1e3))
        .unwrap_or_default();
    eprintln!(
        "[{} prompt tokens, {n} generated in {dt:.2} s, {ttft}{:.1} tokens/s, {} threads, {} kernels]",
        prompt.len(),
        n as f64 / dt.max(1e-9),
        shared.threads,
        shared.kernels
    );
    engine.shutdown();
    Ok(())
}

/// `trillim chat`.
pub fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let m = resolve(&args.model)?;
    let shape = engine::ServeShape {
        ctx: args.sampling.ctx,
        threads: args.sampling.threads,
        slots: 1,
    };
    let prepared = load(&m, shape, LoadOptions::default(), &args.sampling.lora)?;
    let shared = prepared.shared.clone();
    let sampler = args.sampling.sampler(&shared.defaults)?;
    let engine = Arc::new(Engine::start(prepared, 1, Arc::new(Metrics::default())));
    let harness = args.harness.harness();
    // The search loop's network work runs on this runtime's blocking threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut history: Vec<Message> = Vec::new();
    let reset = |h: &mut Vec<Message>| {
        h.clear();
        if let Some(s) = &args.system {
            h.push(Message {
                role: "system".into(),
                content: s.clone(),
                ..Default::default()
            });
        }
    };
    reset(&mut history);
    eprintln!(
        "Talk to {} (Ctrl+D or 'q' to quit, '/new' for a new conversation)",
        m.name
    );
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    loop {
        eprint!("> ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        if lines.read_line(&mut line)? == 0 {
            eprintln!();
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "q" | "/quit" | "/exit" => break,
            "/new" => {
                reset(&mut history);
                eprintln!("(new conversation)");
                continue;
            }
            "" => continue,
            _ => {}
        }
        history.push(Message {
            role: "user".into(),
            content: line.to_string(),
            ..Default::default()
        });
        let encode = |h: &[Message]| -> anyhow::Result<Vec<u32>> {
            let text = shared.template.render(h, true)?;
            Ok(shared.tok.encode(&text, shared.template.is_fallback))
        };
        let mut prompt = encode(&history)?;
        if prompt.len() >= shared.ctx {
            eprintln!(
                "Context window full ({} tokens). Starting a new conversation.",
                shared.ctx
            );
            let last = history.pop().expect("just pushed");
            reset(&mut history);
            history.push(last);
            prompt = encode(&history)?;
            if prompt.len() >= shared.ctx {
                eprintln!("This message exceeds the context window ({} tokens). Shorten it and try again.", shared.ctx);
                history.pop();
                continue;
            }
        }
        let s = SamplerConfig {
            seed: state::random_u64(),
            ..sampler
        };
        if let crate::harness::Harness::Search(provider) = harness {
            let added = crate::harness::cli::chat_exchange(
                &rt,
                &engine,
                provider,
                &history,
                prompt,
                s,
                args.sampling.max_tokens,
            )?;
            println!();
            history.extend(added);
            continue;
        }
        let reply = run_blocking(&engine, prompt, s, args.sampling.max_tokens)?.text;
        println!();
        history.push(Message {
            role: "assistant".into(),
            content: reply,
            ..Default::default()
        });
    }
    engine.shutdown();
    Ok(())
}

/// `trillim doctor`.
pub fn doctor(_args: DoctorArgs) -> anyhow::Result<()> {
    println!("trillim {}", env!("CARGO_PKG_VERSION"));
    println!(
        "platform: {}-{}",
        std::env::consts::ARCH,
        std::env::consts::OS
    );
    let f = crate::cpu::features();
    let names = crate::cpu::feature_names(&f);
    println!(
        "cpu features detected: {}",
        if names.is_empty() {
            "(none)".to_string()
        } else {
            names.join(" ")
        }
    );
    println!("kernels used: {}", crate::cpu::kernels().name);
    println!("threads (auto): {}", trillim_runtime::pool::auto_threads());
    match trillim_runtime::model::available_memory() {
        Some(m) => println!(
            "memory available: {:.1} GiB",
            m as f64 / (1u64 << 30) as f64
        ),
        None => println!("memory available: unknown"),
    }
    let store = Store::from_env();
    println!("model store: {}", store.root().display());
    match store.list() {
        Ok(models) if models.is_empty() => {
            println!("  (empty; run `trillim pull {DEFAULT_MODEL}` to get the default model)")
        }
        Ok(models) => {
            for m in models {
                println!(
                    "  {} ({:.1} MiB) {}",
                    m.id,
                    m.size as f64 / (1u64 << 20) as f64,
                    m.path.display()
                );
            }
        }
        Err(e) => println!("  cannot read the store: {e}"),
    }
    let voice = crate::engines::stt::cli::stored_models(&store);
    if voice.is_empty() {
        println!(
            "voice models: none (run `trillim pull {}` for `trillim serve --voice`)",
            crate::engines::stt::DEFAULT_WHISPER_MODEL
        );
    } else {
        println!("voice models:");
        for (id, dir, size) in voice {
            println!(
                "  {id} (Whisper, {:.1} MiB) {}",
                size as f64 / (1u64 << 20) as f64,
                dir.display()
            );
        }
    }
    let tts = crate::engines::tts::cli::stored_models(&store);
    if tts.is_empty() {
        println!(
            "text-to-speech models: none (`trillim pull {}` for `trillim serve --voice`)",
            crate::engines::tts::DEFAULT_TTS_MODEL,
        );
    } else {
        println!("text-to-speech models:");
        for (id, dir, size) in tts {
            println!(
                "  {id} (pocket-tts, {:.1} MiB) {}",
                size as f64 / (1u64 << 20) as f64,
                dir.display()
            );
        }
    }
    if crate::cpu::kernels().ternary_tiles.is_some() {
        match trillim_runtime::tiles::cache_dir() {
            Some(dir) => {
                let (n, bytes) = trillim_runtime::tiles::cache_usage(&dir);
                println!(
                    "tiled-weight cache: {} ({n} files, {:.1} MiB; safe to delete)",
                    dir.display(),
                    bytes as f64 / (1u64 << 20) as f64
                );
            }
            None => println!("tiled-weight cache: none (no home directory)"),
        }
    }
    Ok(())
}
