//! `trillim bench`: prefill and decode speed, time to first token, memory and effective
//! bandwidth of a model on this machine.

use std::time::Instant;

use anyhow::Context;
use trillim_runtime::bench::{self, BenchOptions, BenchReport};
use trillim_runtime::{LoadOptions, LoadedModel, ThreadPool, TileSource, UnembedQuant};

use crate::store::Store;

/// Measure prefill and decode speed, time to first token, memory and bandwidth.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Store id (`org/name`), .gguf file or model directory.
    pub model: String,
    /// Inference threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens generated for the decode measurement.
    #[arg(long, default_value_t = 64)]
    pub gen_tokens: usize,
    /// Repetitions; the median is reported with min and max.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Re-encode the output matrix at load (q8_0 or q4_0).
    #[arg(long, value_parser = UnembedQuant::parse)]
    pub unembed_quant: Option<UnembedQuant>,
    #[command(flatten)]
    pub lora: crate::cli::LoraArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark and prints its report.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let m = Store::from_env().resolve_cli(&args.model)?;
    let threads = if args.threads == 0 {
        trillim_runtime::pool::auto_threads()
    } else {
        args.threads
    };
    let t0 = Instant::now();
    let opts = LoadOptions {
        unembed_quant: args.unembed_quant,
    };
    let mut model = LoadedModel::open_with(&m.gguf, crate::cpu::kernels(), opts)
        .with_context(|| format!("cannot load {}", m.gguf.display()))?;
    if let Some(a) = args.lora.spec() {
        let adapter = trillim_runtime::Adapter::open(&a.path, &model, a.quant)?;
        model.set_adapter(Some(adapter));
    }
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let pool = ThreadPool::new(threads);
    let opts = BenchOptions {
        prompt_tokens: args.prompt_tokens.max(1),
        gen_tokens: args.gen_tokens.max(1),
        runs: args.runs.max(1),
        // As the server's prefill chunk.
        batch: 128,
    };
    let report = bench::run(&model, &pool, opts).context("benchmark failed")?;
    if args.json {
        let j = report.to_json();
        let name = serde_json::to_string(&m.id)?;
        println!(
            "{{\"model\":{name},\"load_ms\":{load_ms:.1},\"tiles\":\"{}\",\"prompt_tokens\":{},\"gen_tokens\":{},{}",
            model.tile_source.kind(),
            opts.prompt_tokens,
            opts.gen_tokens,
            &j[1..]
        );
    } else {
        print_table(&m.id, load_ms, &model.tile_source, &opts, &report);
    }
    Ok(())
}

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn print_table(id: &str, load_ms: f64, tiles: &TileSource, o: &BenchOptions, r: &BenchReport) {
    let s = |x: &bench::Stat| format!("{:.1} (min {:.1}, max {:.1})", x.median, x.min, x.max);
    println!("model              {id}");
    println!("kernels / threads  {} / {}", r.kernels, r.threads);
    println!("load               {load_ms:.0} ms");
    if *tiles != TileSource::None {
        println!("ternary tiles      {tiles}");
    }
    println!(
        "prefill            {} tok/s, {} tokens",
        s(&r.prefill_tps),
        o.prompt_tokens
    );
    println!(
        "decode             {} tok/s, {} tokens",
        s(&r.decode_tps),
        o.gen_tokens
    );
    println!("time to 1st token  {} ms", s(&r.ttft_ms));
    println!(
        "weights per token  {:.1} MiB",
        mib(r.weight_bytes_per_token)
    );
    println!(
        "bandwidth          {:.1} GB/s effective of {:.1} GB/s measured read ({:.0} %)",
        r.effective_gbps,
        r.probe_gbps,
        100.0 * r.effective_gbps / r.probe_gbps
    );
    match r.peak_rss {
        Some(rss) => println!(
            "peak RSS           {:.1} MiB (weights {:.1} MiB, KV + scratch {:.1} MiB)",
            mib(rss),
            mib(r.model_bytes),
            mib(r.session_bytes)
        ),
        None => println!("peak RSS           unavailable on this system"),
    }
}
