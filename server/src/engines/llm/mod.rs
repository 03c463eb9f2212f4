//! The inference engine: one OS thread per loaded model owns the weights, the session (a KV
//! cache slot per sequence) and the thread pool, and serves several sequences at once
//! ([`scheduler`]). Requests arrive over a bounded FIFO channel; events flow back over a
//! per-request channel whose closing (the client went away) cancels the generation before its
//! next forward step.

pub mod grammar;
pub mod scheduler;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::mpsc::UnboundedSender;
use trillim_core::sampler::SamplerConfig;
use trillim_runtime::{LoadOptions, LoadedModel};

use crate::metrics::Metrics;
use crate::template::ChatTemplate;
use crate::tok::Tokenizer;

/// Why a model could not be prepared.
///
/// Every variant's message is complete on its own (it names the file and the cause once), so
/// the wrapped errors are not also reported as `source()`: a chain printer such as anyhow's
/// `{:#}` would otherwise repeat the cause once per level.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Loading or validating the weights failed.
    #[error(transparent)]
    Load(#[from] trillim_runtime::LoadError),
    /// The tokenizer could not be built.
    #[error(transparent)]
    Tokenizer(#[from] crate::tok::TokError),
    /// The chat template does not compile.
    #[error(transparent)]
    Template(#[from] crate::template::TemplateError),
    /// The LoRA adapter could not be loaded or does not fit the model.
    #[error(transparent)]
    Adapter(#[from] trillim_runtime::AdapterError),
    /// The requested context is unusable.
    #[error("context size {0} is invalid (must be at least 16)")]
    Ctx(usize),
}

/// What requests need to know about the loaded model, shared with the HTTP side.
#[derive(Debug)]
pub struct ModelShared {
    /// Store id (`org/name`) or path the model was loaded from.
    pub id: String,
    /// Short name reported by the API (`/v1/models`).
    pub name: String,
    /// The GGUF file.
    pub path: PathBuf,
    /// Context size of each sequence (positions).
    pub ctx: usize,
    /// Sequences served at once.
    pub slots: usize,
    /// Sampling defaults (from the model's `generation_config.json`, else built-in defaults).
    pub defaults: SamplerConfig,
    /// Tokenizer.
    pub tok: Tokenizer,
    /// Chat template.
    pub template: ChatTemplate,
    /// Unix time of loading.
    pub created: u64,
    /// Worker threads of the pool.
    pub threads: usize,
    /// Kernel set used.
    pub kernels: &'static str,
}

/// A model loaded and validated but not yet serving.
#[derive(Debug)]
pub struct Prepared {
    model: Arc<LoadedModel>,
    /// Shared description.
    pub shared: Arc<ModelShared>,
}

impl Prepared {
    /// True when loading built something new (a re-encoded output matrix).
    pub fn recompiled(&self) -> bool {
        self.model.recompiled
    }
}

/// Where and how a model is to be served.
#[derive(Debug, Clone, Copy)]
pub struct ServeShape {
    /// Context size per sequence (`None`: the model's, capped by memory).
    pub ctx: Option<usize>,
    /// Inference threads (0: all cores).
    pub threads: usize,
    /// Sequences served at once.
    pub slots: usize,
}

/// Loads and validates everything a model needs without touching any running engine.
pub fn prepare(
    id: &str,
    name: &str,
    gguf: &Path,
    dir: Option<&Path>,
    shape: ServeShape,
    opts: LoadOptions,
) -> Result<Prepared, PrepareError> {
    prepare_adapted(id, name, gguf, dir, shape, opts, None)
}

/// A LoRA adapter to apply to a model being prepared.
#[derive(Debug, Clone)]
pub struct AdapterSpec {
    /// A PEFT directory, a directory holding one GGUF adapter, or a GGUF adapter file.
    pub path: PathBuf,
    /// How its matrices are stored.
    pub quant: trillim_runtime::LoraQuant,
}

/// [`prepare`] with an optional LoRA adapter, checked against the model before anything runs.
pub fn prepare_adapted(
    id: &str,
    name: &str,
    gguf: &Path,
    dir: Option<&Path>,
    shape: ServeShape,
    opts: LoadOptions,
    adapter: Option<&AdapterSpec>,
) -> Result<Prepared, PrepareError> {
    let ServeShape {
        ctx,
        threads,
        slots,
    } = shape;
    let slots = slots.clamp(1, trillim_core::model::MAX_SLOTS);
    let kernels = crate::cpu::kernels();
    let mut model = LoadedModel::open_with(gguf, kernels, opts)?;
    if let Some(a) = adapter {
        let loaded = trillim_runtime::Adapter::open(&a.path, &model, a.quant)?;
        tracing::info!(adapter = %a.path.display(), pairs = loaded.pairs, rank = loaded.max_rank,
            "LoRA adapter applied");
        model.set_adapter(Some(loaded));
    }
    let model = Arc::new(model);
    if model.tile_source != trillim_runtime::TileSource::None {
        tracing::info!("{}: ternary tiles {}", gguf.display(), model.tile_source);
    }
    let tok = Tokenizer::new(model.clone())?;
    // An adapter's own chat template (a fine-tune's format) replaces the model's.
    let meta = model.gguf();
    let source = model
        .adapter()
        .and_then(|a| a.chat_template.as_deref())
        .or_else(|| meta.get_str("tokenizer.chat_template"));
    let template = ChatTemplate::new(source, &tok.bos_text(), &tok.eos_text())?;
    let ctx = match ctx {
        Some(c) if c < 16 => return Err(PrepareError::Ctx(c)),
        Some(c) => c.min(model.config.train_ctx.max(16)),
        None => model.default_ctx_for(slots),
    };
    let defaults = generation_defaults(dir);
    let shared = Arc::new(ModelShared {
        id: id.to_string(),
        name: name.to_string(),
        path: gguf.to_path_buf(),
        ctx,
        slots,
        defaults,
        tok,
        template,
        created: unix_now(),
        threads: if threads == 0 {
            trillim_runtime::pool::auto_threads()
        } else {
            threads
        },
        kernels: kernels.name,
    });
    Ok(Prepared { model, shared })
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sampling defaults: the core's defaults, overridden by `generation_config.json` next to the
/// model (keys `temperature`, `top_k`, `top_p`, `min_p`, `repetition_penalty`,
/// `rep_penalty_lookback`) when it exists.
pub fn generation_defaults(dir: Option<&Path>) -> SamplerConfig {
    let mut d = SamplerConfig::default();
    let Some(dir) = dir else { return d };
    let Ok(text) = std::fs::read_to_string(dir.join("generation_config.json")) else {
        return d;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return d;
    };
    let f = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
    if let Some(t) = f("temperature").filter(|t| *t >= 0.0) {
        d.temperature = t as f32;
    }
    if let Some(t) = f("top_k").filter(|t| *t >= 0.0) {
        d.top_k = t as usize;
    }
    if let Some(t) = f("top_p").filter(|t| *t > 0.0 && *t <= 1.0) {
        d.top_p = t as f32;
    }
    if let Some(t) = f("min_p").filter(|t| (0.0..=1.0).contains(t)) {
        d.min_p = t as f32;
    }
    if let Some(t) = f("repetition_penalty").filter(|t| *t > 0.0) {
        d.repetition_penalty = t as f32;
    }
    if let Some(t) = f("rep_penalty_lookback").filter(|t| *t >= 0.0) {
        d.penalty_window = t as usize;
    }
    d
}

/// Log-probability of a token with the most likely alternatives.
#[derive(Clone, Debug)]
pub struct TokenLogprob {
    /// The token.
    pub id: u32,
    /// Its log-probability (`None` for the first prompt token, which has no context).
    pub logprob: Option<f64>,
    /// The most likely tokens at that position, best first.
    pub top: Vec<(u32, f64)>,
}

/// Why generation ended (shared with the firmware).
pub use trillim_core::generate::Finish;

/// What the worker tells a request.
#[derive(Debug)]
pub enum Event {
    /// The request left the queue and its prompt is being processed.
    Started {
        /// Prompt tokens reused from the previous sequence.
        cached_tokens: usize,
    },
    /// Log-probabilities of the prompt tokens (echo).
    PromptLogprobs(Vec<TokenLogprob>),
    /// One generated token's text (empty while it is held back) and log-probabilities.
    Text {
        /// Text safe to show.
        text: String,
        /// Log-probabilities of the tokens generated since the last event.
        logprobs: Vec<TokenLogprob>,
    },
    /// Generation finished.
    Done {
        /// Why.
        finish: Finish,
        /// Tokens generated (end-of-generation token excluded).
        completion_tokens: usize,
    },
    /// Generation failed; nothing more follows.
    Error(GenerationError),
}

/// Why the engine could not serve a job (sent as [`Event::Error`]); the HTTP side maps each
/// variant to its status and OpenAI error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GenerationError {
    /// The prompt (plus one free position when generating) does not fit a sequence's context.
    /// The HTTP side checks this before queueing, but a model swap between that check and the
    /// job's admission can shrink the context under it.
    #[error("the prompt of {prompt} tokens does not fit the context of {ctx} tokens")]
    PromptTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Context size of a sequence.
        ctx: usize,
    },
    /// The prompt has no tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The forward pass refused the batch (a token outside the vocabulary, a full KV cache).
    #[error("the forward pass failed: {0}")]
    Model(trillim_core::model::ModelError),
    /// A bug: a generation step panicked.
    #[error("internal error during generation: {0}")]
    Internal(&'static str),
}

/// One generation request.
#[derive(Debug)]
pub struct Job {
    /// Prompt tokens.
    pub prompt: Vec<u32>,
    /// Sampling configuration (seed resolved).
    pub sampler: SamplerConfig,
    /// Generated tokens at most (`None`: until the context is full).
    pub max_tokens: Option<usize>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// `Some(n)`: report each generated token's log-probability and `n` alternatives.
    pub logprobs: Option<usize>,
    /// Also report log-probabilities of the prompt tokens.
    pub echo_logprobs: bool,
    /// Keep generating past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// `response_format` other than text: the output is masked to this grammar.
    pub grammar: Option<Arc<grammar::Grammar>>,
    /// Request id for logs.
    pub request_id: String,
    /// Where events go; dropping the receiver cancels the job.
    pub events: UnboundedSender<Event>,
}

pub(crate) enum Msg {
    Job(Box<Job>),
    Shutdown,
}

/// Why a job could not be queued.
#[derive(Debug)]
pub enum SubmitError {
    /// The queue is full.
    Full,
    /// The engine is shutting down.
    Closed,
}

/// A running engine (one model, one worker thread).
#[derive(Debug)]
pub struct Engine {
    /// What the HTTP side needs to know about the model.
    pub shared: Arc<ModelShared>,
    tx: SyncSender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
}

impl Engine {
    /// Starts the worker thread for a prepared model with a queue of `max_queue` jobs waiting
    /// for a slot.
    pub fn start(prepared: Prepared, max_queue: usize, metrics: Arc<Metrics>) -> Engine {
        let (tx, rx) = sync_channel(max_queue);
        let shared = prepared.shared.clone();
        let m = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("trillim-engine".into())
            .spawn(move || scheduler::run(prepared, rx, m))
            .expect("spawn engine thread");
        Engine {
            shared,
            tx,
            thread: Mutex::new(Some(thread)),
            metrics,
        }
    }

    /// Queues a job without blocking.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let prompt = job.prompt.len();
        match self.tx.try_send(Msg::Job(Box::new(job))) {
            Ok(()) => {
                self.metrics.queued(prompt);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(SubmitError::Full),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
        }
    }

    /// Lets every queued job finish, then stops the worker and frees the model (blocking).
    pub fn shutdown(&self) {
        let _ = self.tx.send(Msg::Shutdown);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// The log-probability of `id` in `logits` and the `top` most likely tokens (the core's
/// [`trillim_core::generate::logprobs`], as owned values).
pub(crate) fn logprobs_of(logits: &[f32], id: u32, top: usize) -> TokenLogprob {
    let mut best = vec![(0, 0.0); top.min(logits.len())];
    let logprob = trillim_core::generate::logprobs(logits, id, &mut best);
    TokenLogprob {
        id,
        logprob,
        top: best,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm2() -> PathBuf {
        trillim_tests::smollm2_path()
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/models")
            .join(name)
    }

    /// Submits `prompt` to an engine over the tiny TQ2_0 fixture with a 16-token context and
    /// returns the first event.
    fn first_event(prompt: Vec<u32>, max_tokens: Option<usize>) -> Event {
        let shape = ServeShape {
            ctx: Some(16),
            threads: 1,
            slots: 1,
        };
        let p = prepare(
            "t",
            "t",
            &fixture("tiny-bitnet-tq2_0.gguf"),
            None,
            shape,
            LoadOptions::default(),
        )
        .unwrap();
        let engine = Engine::start(p, 4, Arc::new(Metrics::default()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        engine
            .submit(Job {
                prompt,
                sampler: SamplerConfig::default(),
                max_tokens,
                stop: Vec::new(),
                logprobs: None,
                echo_logprobs: false,
                ignore_eos: false,
                grammar: None,
                request_id: "test".into(),
                events: tx,
            })
            .unwrap();
        let ev = rx.blocking_recv().expect("an event");
        drop(rx);
        engine.shutdown();
        ev
    }

    #[test]
    fn engine_refuses_prompts_that_do_not_fit_with_typed_errors() {
        match first_event(vec![1; 16], None) {
            Event::Error(GenerationError::PromptTooLong {
                prompt: 16,
                ctx: 16,
            }) => {}
            other => panic!("{other:?}"),
        }
        // Scoring may fill the context exactly.
        assert!(matches!(
            first_event(vec![1; 16], Some(0)),
            Event::Started { .. }
        ));
        match first_event(Vec::new(), None) {
            Event::Error(GenerationError::EmptyPrompt) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prepare_errors_name_the_file_and_the_cause_once() {
        let dir = std::env::temp_dir().join(format!("trillim-prepare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mamba.gguf");
        std::fs::write(&path, crate::store::tests::gguf_bytes("mamba", &[])).unwrap();
        let shape = ServeShape {
            ctx: None,
            threads: 1,
            slots: 1,
        };
        let e = prepare("t", "t", &path, None, shape, LoadOptions::default()).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        let chain = format!("{:#}", anyhow::Error::new(e));
        assert_eq!(
            chain.matches("unsupported architecture").count(),
            1,
            "{chain}"
        );
        assert_eq!(chain.matches("mamba.gguf").count(), 1, "{chain}");
    }

    #[test]
    fn smollm2_chat_template_and_ids_match_golden() {
        let path = smollm2();
        let shape = ServeShape {
            ctx: Some(256),
            threads: 1,
            slots: 1,
        };
        let p = prepare("t", "t", &path, None, shape, LoadOptions::default()).unwrap();
        let golden = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/golden/tokenizer-smollm2.json"
        );
        let g: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
        assert!(!p.shared.template.is_fallback);
        for case in g["chat"].as_array().unwrap() {
            let msgs: Vec<crate::template::Message> =
                serde_json::from_value(case["messages"].clone()).unwrap();
            let text = p
                .shared
                .template
                .render(&msgs, case["add_generation_prompt"].as_bool().unwrap())
                .unwrap();
            assert_eq!(text, case["rendered"].as_str().unwrap());
            let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
            assert_eq!(
                p.shared.tok.encode(&text, p.shared.template.is_fallback),
                ids
            );
        }
        for case in g["tokenize"].as_array().unwrap() {
            let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
            assert_eq!(
                p.shared.tok.encode(case["text"].as_str().unwrap(), true),
                ids,
                "{case}"
            );
        }
    }

    #[test]
    fn logprobs_are_normalized_and_sorted() {
        let l = [0.0f32, 1.0, 2.0, -1.0];
        let t = logprobs_of(&l, 1, 2);
        let total: f64 = l.iter().map(|&v| (v as f64 - 2.0).exp()).sum();
        let lse = total.ln() + 2.0;
        assert!((t.logprob.unwrap() - (1.0 - lse)).abs() < 1e-12);
        assert_eq!(t.top.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 1]);
        assert!(logprobs_of(&l, 0, 0).top.is_empty());
    }
}
