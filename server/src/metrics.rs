//! Prometheus metrics, served at `GET /metrics` in the text exposition format (version 0.0.4).
//!
//! Counters and gauges are atomics; histograms keep fixed buckets behind a mutex that is held
//! for a few additions. The engine thread and the HTTP side both write here.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the time-to-first-token buckets.
const TTFT_BUCKETS: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Upper bounds (seconds) of the inter-token-latency and step buckets.
const ITL_BUCKETS: &[f64] = &[0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5, 5.0];

#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything `/metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<Vec<(&'static str, u16, u64)>>,
    prompt_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    queued: AtomicUsize,
    busy_slots: AtomicUsize,
    slots: AtomicUsize,
    kv_cells: AtomicUsize,
    kv_capacity: AtomicUsize,
    load_seconds: Mutex<f64>,
    ttft: Mutex<Histogram>,
    itl: Mutex<Histogram>,
    step: Mutex<Histogram>,
    step_tokens: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(Vec::new()),
            prompt_tokens: AtomicU64::new(0),
            cached_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            busy_slots: AtomicUsize::new(0),
            slots: AtomicUsize::new(0),
            kv_cells: AtomicUsize::new(0),
            kv_capacity: AtomicUsize::new(0),
            load_seconds: Mutex::new(0.0),
            ttft: Mutex::new(Histogram::new(TTFT_BUCKETS)),
            itl: Mutex::new(Histogram::new(ITL_BUCKETS)),
            step: Mutex::new(Histogram::new(ITL_BUCKETS)),
            step_tokens: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// A request on `route` was answered with `status`.
    pub fn request(&self, route: &'static str, status: u16) {
        let mut r = lock(&self.requests);
        match r.iter_mut().find(|(p, s, _)| *p == route && *s == status) {
            Some(e) => e.2 += 1,
            None => r.push((route, status, 1)),
        }
    }

    /// A generation was queued with `prompt` tokens.
    pub fn queued(&self, prompt: usize) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.prompt_tokens
            .fetch_add(prompt as u64, Ordering::Relaxed);
    }

    /// A queued generation left the queue (started, or was dropped).
    pub fn queue_left(&self) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| q.checked_sub(1));
    }

    /// Prompt tokens taken from the cache.
    pub fn cached(&self, n: usize) {
        self.cached_tokens.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Tokens generated.
    pub fn generated(&self, n: usize) {
        self.generated_tokens.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Nothing queued and no slot busy: the engine has finished every generation it took.
    pub fn idle(&self) -> bool {
        self.queued.load(Ordering::Relaxed) == 0 && self.busy_slots.load(Ordering::Relaxed) == 0
    }

    /// Sequences running now and KV cells they hold.
    pub fn set_busy(&self, slots: usize, kv_cells: usize) {
        self.busy_slots.store(slots, Ordering::Relaxed);
        self.kv_cells.store(kv_cells, Ordering::Relaxed);
    }

    /// A model was loaded in `seconds` with `slots` sequences of `ctx` positions.
    pub fn model_loaded(&self, seconds: f64, slots: usize, ctx: usize) {
        *lock(&self.load_seconds) = seconds;
        self.slots.store(slots, Ordering::Relaxed);
        self.kv_capacity.store(slots * ctx, Ordering::Relaxed);
    }

    /// Time from a request entering the engine to its first token.
    pub fn first_token(&self, d: Duration) {
        lock(&self.ttft).observe(d.as_secs_f64());
    }

    /// Time between two tokens of one stream.
    pub fn inter_token(&self, d: Duration) {
        lock(&self.itl).observe(d.as_secs_f64());
    }

    /// One forward step over `tokens` tokens.
    pub fn step(&self, tokens: usize, d: Duration) {
        lock(&self.step).observe(d.as_secs_f64());
        self.step_tokens.fetch_add(tokens as u64, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP trillim_requests_total HTTP requests answered, by route and status.\n# TYPE trillim_requests_total counter"
        );
        let mut reqs = lock(&self.requests).clone();
        reqs.sort();
        for (route, status, n) in reqs {
            let _ = writeln!(
                o,
                "trillim_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let gauge = |o: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let lu = |a: &AtomicUsize| a.load(Ordering::Relaxed) as f64;
        counter(
            &mut o,
            "trillim_prompt_tokens_total",
            "Prompt tokens of generation requests.",
            ld(&self.prompt_tokens),
        );
        counter(
            &mut o,
            "trillim_cached_prompt_tokens_total",
            "Prompt tokens reused from the KV cache.",
            ld(&self.cached_tokens),
        );
        counter(
            &mut o,
            "trillim_generated_tokens_total",
            "Tokens generated.",
            ld(&self.generated_tokens),
        );
        counter(
            &mut o,
            "trillim_step_tokens_total",
            "Tokens processed by forward steps (prompt and generated).",
            ld(&self.step_tokens),
        );
        gauge(
            &mut o,
            "trillim_queue_depth",
            "Generation requests waiting for a slot.",
            lu(&self.queued),
        );
        gauge(
            &mut o,
            "trillim_slots_busy",
            "Sequences being generated now.",
            lu(&self.busy_slots),
        );
        gauge(
            &mut o,
            "trillim_slots",
            "Sequences the loaded model serves at once (--parallel).",
            lu(&self.slots),
        );
        gauge(
            &mut o,
            "trillim_kv_cells_used",
            "KV-cache positions held by running sequences.",
            lu(&self.kv_cells),
        );
        gauge(
            &mut o,
            "trillim_kv_cells",
            "KV-cache positions of all slots.",
            lu(&self.kv_capacity),
        );
        gauge(
            &mut o,
            "trillim_model_load_seconds",
            "Seconds the loaded model took to load.",
            *lock(&self.load_seconds),
        );
        lock(&self.ttft).write(
            &mut o,
            "trillim_time_to_first_token_seconds",
            "Time from a request reaching the engine to its first generated token.",
        );
        lock(&self.itl).write(
            &mut o,
            "trillim_inter_token_latency_seconds",
            "Time between consecutive tokens of one stream.",
        );
        lock(&self.step).write(
            &mut o,
            "trillim_step_seconds",
            "Duration of one forward step over all running sequences.",
        );
        o
    }
}
