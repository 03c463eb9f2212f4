//! The measurements behind `trillim bench`: prefill and decode speed, time to first token,
//! peak memory, and effective memory bandwidth against a read-bandwidth probe run in the same
//! process.

use std::time::Instant;

use trillim_core::model::ModelError;
use trillim_core::sampler::argmax;
use trillim_core::Parallel;

use crate::model::{LoadedModel, Session};

/// What to measure.
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    /// Prompt length for the prefill measurement.
    pub prompt_tokens: usize,
    /// Tokens generated for the decode measurement.
    pub gen_tokens: usize,
    /// Repetitions (the median is reported).
    pub runs: usize,
    /// Prompt tokens per forward step.
    pub batch: usize,
}

/// Median, minimum and maximum of a set of runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    /// Median.
    pub median: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

impl Stat {
    /// Summarizes `v` (not empty).
    pub fn of(v: &[f64]) -> Stat {
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Stat {
            median,
            min: s[0],
            max: s[n - 1],
        }
    }
}

/// Results of one benchmark.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Threads used.
    pub threads: usize,
    /// Prefill speed, tokens/s.
    pub prefill_tps: Stat,
    /// Decode speed, tokens/s.
    pub decode_tps: Stat,
    /// Time to first token (prefill plus picking the token), ms.
    pub ttft_ms: Stat,
    /// Bytes of weights read per decoded token.
    pub weight_bytes_per_token: usize,
    /// Measured memory read bandwidth, GB/s.
    pub probe_gbps: f64,
    /// Weight bytes per token × median decode speed, GB/s.
    pub effective_gbps: f64,
    /// Peak resident memory of the process, bytes.
    pub peak_rss: Option<usize>,
    /// Weight bytes the model holds in memory (see [`LoadedModel::weight_memory_bytes`]).
    pub model_bytes: usize,
    /// Bytes held by the benchmark session (KV cache, scratch).
    pub session_bytes: usize,
    /// Name of the kernel path.
    pub kernels: &'static str,
}

fn prompt(n: usize, vocab: usize) -> Vec<u32> {
    // A fixed pseudo-random sequence: no cache hits between runs, same work every time.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab.min(32000) as u64) as u32 + 1
        })
        .collect()
}

/// Runs the benchmark on `model` with `pool`.
pub fn run(
    model: &LoadedModel,
    pool: &dyn Parallel,
    opts: BenchOptions,
) -> Result<BenchReport, ModelError> {
    let vocab = model.config.n_vocab;
    let ctx = opts.prompt_tokens + opts.gen_tokens + 1;
    let mut session = Session::new(model, ctx, opts.batch);
    let (mut pre, mut dec, mut ttft) = (Vec::new(), Vec::new(), Vec::new());
    // One untimed warm-up pass faults the weights in.
    session.feed(model, pool, &prompt(opts.prompt_tokens.min(8), vocab), 1)?;
    for run in 0..opts.runs.max(1) {
        session.rewind(0);
        let p = prompt(opts.prompt_tokens, vocab);
        let t0 = Instant::now();
        let logits = session.feed(model, pool, &p, 1)?;
        let mut tok = argmax(logits);
        let dt = t0.elapsed().as_secs_f64();
        pre.push(opts.prompt_tokens as f64 / dt);
        ttft.push(dt * 1e3);
        let t0 = Instant::now();
        for _ in 0..opts.gen_tokens {
            let logits = session.feed(model, pool, &[tok], 1)?;
            tok = argmax(logits).wrapping_add(run as u32) % vocab as u32;
        }
        dec.push(opts.gen_tokens as f64 / t0.elapsed().as_secs_f64());
    }
    let decode_tps = Stat::of(&dec);
    let bpt = model.weights.bytes_per_token();
    // Read before the probe, whose buffer would otherwise dominate the peak.
    let peak_rss = peak_rss();
    Ok(BenchReport {
        threads: pool.threads(),
        prefill_tps: Stat::of(&pre),
        decode_tps,
        ttft_ms: Stat::of(&ttft),
        weight_bytes_per_token: bpt,
        probe_gbps: read_bandwidth_gbps(pool),
        effective_gbps: bpt as f64 * decode_tps.median / 1e9,
        peak_rss,
        model_bytes: model.weight_memory_bytes(),
        session_bytes: session.memory_bytes(),
        kernels: model.kernels.name,
    })
}

/// Measures how fast `pool` reads a buffer much larger than the caches (best of 5), GB/s.
pub fn read_bandwidth_gbps(pool: &dyn Parallel) -> f64 {
    const BYTES: usize = 512 << 20;
    let buf: Vec<u64> = (0..BYTES / 8).map(|i| i as u64).collect();
    let threads = pool.threads().max(1);
    let per = buf.len().div_ceil(threads * 8);
    let mut sums = vec![0f32; buf.len().div_ceil(per)];
    let mut best = 0f64;
    for _ in 0..5 {
        let t0 = Instant::now();
        pool.for_each_chunk(&mut sums, 1, &|i, out| {
            let part = &buf[i * per..((i + 1) * per).min(buf.len())];
            // Eight independent accumulators keep the loads flowing.
            let mut acc = [0u64; 8];
            for c in part.chunks_exact(8) {
                for k in 0..8 {
                    acc[k] = acc[k].wrapping_add(c[k]);
                }
            }
            out[0] = acc.iter().fold(0u64, |a, b| a ^ b) as f32;
        });
        let gbps = BYTES as f64 / t0.elapsed().as_secs_f64() / 1e9;
        best = best.max(gbps);
    }
    std::hint::black_box(&sums);
    best
}

/// Peak resident set size of this process (`VmHWM`), bytes (Linux).
pub fn peak_rss() -> Option<usize> {
    proc_status_kb("VmHWM:").map(|kb| kb * 1024)
}

/// Current resident set size of this process (`VmRSS`), bytes (Linux).
pub fn current_rss() -> Option<usize> {
    proc_status_kb("VmRSS:").map(|kb| kb * 1024)
}

fn proc_status_kb(key: &str) -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl BenchReport {
    /// The report as a JSON object.
    pub fn to_json(&self) -> String {
        let stat = |s: &Stat| {
            format!(
                "{{\"median\":{:.3},\"min\":{:.3},\"max\":{:.3}}}",
                s.median, s.min, s.max
            )
        };
        format!(
            "{{\"threads\":{},\"kernels\":\"{}\",\"prefill_tok_s\":{},\"decode_tok_s\":{},\"ttft_ms\":{},\
             \"weight_bytes_per_token\":{},\"probe_read_gb_s\":{:.3},\"effective_gb_s\":{:.3},\
             \"bandwidth_utilization\":{:.4},\"peak_rss_bytes\":{},\"model_bytes\":{},\"session_bytes\":{}}}",
            self.threads,
            self.kernels,
            stat(&self.prefill_tps),
            stat(&self.decode_tps),
            stat(&self.ttft_ms),
            self.weight_bytes_per_token,
            self.probe_gbps,
            self.effective_gbps,
            self.effective_gbps / self.probe_gbps,
            self.peak_rss.map(|v| v.to_string()).unwrap_or_else(|| "null".into()),
            self.model_bytes,
            self.session_bytes,
        )
    }
}
