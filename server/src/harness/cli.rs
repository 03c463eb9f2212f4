//! `trillim search` (the search message a model would be given, for tuning providers) and
//! the search harness of `trillim chat`.

use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context};

use super::run::{converse, SearchRequest};
use super::search::{self, SearchSettings};
use super::Provider;
use crate::engines::llm::Engine;
use crate::template::Message;

/// Run a web search and print the message the search harness would give the model.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// The query.
    #[arg(required = true, num_args = 1..)]
    pub query: Vec<String>,
    /// Search provider: ddgs, brave (SEARCH_API_KEY) or searxng (TRILLIM_SEARXNG_URL).
    #[arg(long, default_value = "ddgs", value_parser = Provider::parse)]
    pub provider: Provider,
    /// Count tokens with this model's tokenizer (store id, .gguf file or directory)
    /// [default: 4 characters per token].
    #[arg(long)]
    pub model: Option<String>,
    /// Tokens the results may take.
    #[arg(long, default_value_t = 1024)]
    pub budget: usize,
    /// Results used at most.
    #[arg(long, default_value_t = 3)]
    pub max_results: usize,
    /// Use the providers' snippets only; do not fetch the result pages.
    #[arg(long)]
    pub no_fetch: bool,
    /// Print the message, every result and the timings as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `trillim search`.
pub fn search_command(args: SearchArgs) -> anyhow::Result<()> {
    if args.budget == 0 || args.max_results == 0 {
        bail!("--budget and --max-results must be at least 1");
    }
    let query = args.query.join(" ");
    let tok = match &args.model {
        None => None,
        Some(m) => {
            let resolved = crate::store::Store::from_env()
                .resolve_cli(m)
                .map_err(anyhow::Error::from)?;
            let shape = crate::engines::llm::ServeShape {
                ctx: None,
                threads: 1,
                slots: 1,
            };
            let p = crate::engines::llm::prepare(
                &resolved.id,
                &resolved.name,
                &resolved.gguf,
                resolved.dir.as_deref(),
                shape,
                Default::default(),
            )
            .with_context(|| format!("cannot load {}", resolved.id))?;
            Some(p.shared.clone())
        }
    };
    let count = move |s: &str| match &tok {
        Some(sh) => sh.tok.encode(s, false).len(),
        None => s.chars().count().div_ceil(4),
    };
    let mut settings = SearchSettings::new(args.provider, usize::MAX);
    settings.token_budget = args.budget;
    settings.max_results = args.max_results;
    settings.fetch_pages = !args.no_fetch;
    let t0 = std::time::Instant::now();
    let outcome = search::run(&settings, &query, &count)?;
    let total = t0.elapsed();
    let mut out = std::io::stdout();
    if args.json {
        let mut v = outcome.to_json(args.provider);
        v["timings_ms"]["total"] = serde_json::json!((total.as_secs_f64() * 1e6).round() / 1e3);
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(out, "{}", outcome.content)?;
    for (i, u) in outcome.results.iter().enumerate() {
        let how = match (&u.page_text, &u.fetch_error) {
            (Some(t), _) => format!("page text, {} chars", t.chars().count()),
            (None, Some(e)) => format!("snippet ({e})"),
            (None, None) => "snippet".to_string(),
        };
        eprintln!("[{}] {} — {how}", i + 1, u.hit.url);
    }
    eprintln!(
        "[{} tokens; provider {:.0} ms, pages {:.0} ms, formatting {:.0} ms]",
        outcome.tokens,
        outcome.provider_time.as_secs_f64() * 1e3,
        outcome.fetch_time.as_secs_f64() * 1e3,
        outcome.format_time.as_secs_f64() * 1e3
    );
    Ok(())
}

/// One exchange of `trillim chat --harness search`: markers on their own lines, the answer
/// streamed. Returns the messages to add to the conversation.
pub fn chat_exchange(
    rt: &tokio::runtime::Runtime,
    engine: &Arc<Engine>,
    provider: Provider,
    history: &[Message],
    prompt: Vec<u32>,
    sampler: trillim_core::sampler::SamplerConfig,
    max_tokens: Option<usize>,
) -> anyhow::Result<Vec<Message>> {
    let req = SearchRequest {
        messages: history.to_vec(),
        prompt,
        sampler,
        max_tokens,
        stop: Vec::new(),
        logprobs: None,
        ignore_eos: false,
        request_id: "cli".into(),
        provider,
        markers: true,
        max_queue: 1,
    };
    let marker = |m: String| {
        println!("{m}");
    };
    let mut print = |t: &str| {
        let mut o = std::io::stdout();
        let _ = o.write_all(t.as_bytes());
        let _ = o.flush();
    };
    rt.block_on(converse(engine.clone(), req, &marker, &mut print))
        .map_err(|e| anyhow::anyhow!(e.message))
}

/// `--harness` and `--search-provider`, shared by `serve` and `chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct HarnessArgs {
    /// Harness for chat: default (one pass) or search (a search-tuned model may look things
    /// up on the web).
    #[arg(long, default_value = "default", value_parser = ["default", "search"])]
    pub harness: String,
    /// Provider for the search harness: ddgs, brave (SEARCH_API_KEY) or searxng
    /// (TRILLIM_SEARXNG_URL).
    #[arg(long, default_value = "ddgs", value_parser = Provider::parse)]
    pub search_provider: Provider,
    /// Stream the search harness's progress markers unless a request says otherwise
    /// (`trillim chat` always shows them).
    #[arg(long)]
    pub search_markers: bool,
}

impl HarnessArgs {
    /// The harness asked for.
    pub fn harness(&self) -> super::Harness {
        if self.harness == "search" {
            super::Harness::Search(self.search_provider)
        } else {
            super::Harness::Default
        }
    }

    /// The harness with its marker default.
    pub fn config(&self) -> super::HarnessConfig {
        super::HarnessConfig {
            harness: self.harness(),
            markers: self.search_markers,
        }
    }
}
