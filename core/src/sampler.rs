//! Token sampling over a caller's logits buffer: penalties, temperature, top-k, top-p, min-p,
//! and a seedable PRNG so a seed reproduces its output.

/// Sampling parameters. The defaults are greedy-free sampling as most servers ship it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; `0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (`0` = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (`1` = all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (`0` = off).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recent tokens by this (`1` = off).
    pub repetition_penalty: f32,
    /// Subtract from the logit of every recent token (`0` = off).
    pub presence_penalty: f32,
    /// Subtract `count ·` this from the logit of every recent token (`0` = off).
    pub frequency_penalty: f32,
    /// How many of the latest tokens the penalties look at.
    pub penalty_window: usize,
    /// PRNG seed.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_window: 64,
            seed: 0,
        }
    }
}

/// Per-request overrides of a model's sampling defaults (`None` keeps the default), with the
/// ranges every shell enforces in one place.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SamplerOverrides {
    /// Temperature, `>= 0`.
    pub temperature: Option<f32>,
    /// Top-k (`0` = off).
    pub top_k: Option<usize>,
    /// Top-p in `(0, 1]`.
    pub top_p: Option<f32>,
    /// Min-p in `[0, 1]`.
    pub min_p: Option<f32>,
    /// Repetition penalty, `>= 0`.
    pub repetition_penalty: Option<f32>,
    /// Presence penalty in `[-2, 2]`.
    pub presence_penalty: Option<f32>,
    /// Frequency penalty in `[-2, 2]`.
    pub frequency_penalty: Option<f32>,
    /// PRNG seed.
    pub seed: Option<u64>,
}

/// A sampling parameter outside its range: the field and what it must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidParam {
    /// Request field name.
    pub param: &'static str,
    /// What the field must be.
    pub message: &'static str,
}

impl SamplerOverrides {
    /// Checks every given value against its range.
    pub fn validate(&self) -> Result<(), InvalidParam> {
        type Check = (&'static str, Option<f32>, fn(f32) -> bool, &'static str);
        let checks: [Check; 6] = [
            (
                "temperature",
                self.temperature,
                |t| t >= 0.0,
                "temperature must be >= 0",
            ),
            (
                "top_p",
                self.top_p,
                |p| p > 0.0 && p <= 1.0,
                "top_p must be in (0, 1]",
            ),
            (
                "min_p",
                self.min_p,
                |p| (0.0..=1.0).contains(&p),
                "min_p must be in [0, 1]",
            ),
            (
                "repetition_penalty",
                self.repetition_penalty,
                |p| p >= 0.0,
                "repetition_penalty must be >= 0",
            ),
            (
                "presence_penalty",
                self.presence_penalty,
                |p| (-2.0..=2.0).contains(&p),
                "presence_penalty must be between -2 and 2",
            ),
            (
                "frequency_penalty",
                self.frequency_penalty,
                |p| (-2.0..=2.0).contains(&p),
                "frequency_penalty must be between -2 and 2",
            ),
        ];
        for (param, value, ok, message) in checks {
            match value {
                Some(v) if !v.is_finite() => {
                    return Err(InvalidParam {
                        param,
                        message: "value must be a finite number",
                    })
                }
                Some(v) if !ok(v) => return Err(InvalidParam { param, message }),
                _ => {}
            }
        }
        Ok(())
    }

    /// The sampler configuration: these values over `defaults`, `seed` when none is given.
    pub fn apply(&self, defaults: &SamplerConfig, seed: u64) -> SamplerConfig {
        SamplerConfig {
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            min_p: self.min_p.unwrap_or(defaults.min_p),
            repetition_penalty: self
                .repetition_penalty
                .unwrap_or(defaults.repetition_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(defaults.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(defaults.frequency_penalty),
            penalty_window: defaults.penalty_window,
            seed: self.seed.unwrap_or(seed),
        }
    }
}

/// A candidate token with its (scaled) logit, used as sampler working memory.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Candidate {
    /// Token id.
    pub id: u32,
    /// Logit, then probability.
    pub p: f32,
}

/// xoshiro256** seeded through SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose stream depends only on `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Applies repetition, presence and frequency penalties for the last `window` of `history`.
pub fn apply_penalties(logits: &mut [f32], history: &[u32], cfg: &SamplerConfig) {
    let off = cfg.repetition_penalty == 1.0
        && cfg.presence_penalty == 0.0
        && cfg.frequency_penalty == 0.0;
    if off || cfg.penalty_window == 0 {
        return;
    }
    let recent = &history[history.len().saturating_sub(cfg.penalty_window)..];
    for (i, &tok) in recent.iter().enumerate() {
        if recent[..i].contains(&tok) {
            continue; // each distinct token once
        }
        let Some(l) = logits.get_mut(tok as usize) else {
            continue;
        };
        let count = recent[i..].iter().filter(|&&t| t == tok).count() as f32;
        if cfg.repetition_penalty != 1.0 && cfg.repetition_penalty > 0.0 {
            if *l > 0.0 {
                *l /= cfg.repetition_penalty;
            } else {
                *l *= cfg.repetition_penalty;
            }
        }
        *l -= cfg.presence_penalty + count * cfg.frequency_penalty;
    }
}

/// Index of the largest logit (the lowest index on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Picks the next token. `logits` is modified (penalties); `work` must hold `logits.len()`
/// candidates.
pub fn sample(
    logits: &mut [f32],
    history: &[u32],
    cfg: &SamplerConfig,
    rng: &mut Rng,
    work: &mut [Candidate],
) -> u32 {
    apply_penalties(logits, history, cfg);
    if cfg.temperature <= 0.0 || cfg.top_k == 1 {
        return argmax(logits);
    }
    let n = logits.len().min(work.len());
    let cands = &mut work[..n];
    for (i, c) in cands.iter_mut().enumerate() {
        *c = Candidate {
            id: i as u32,
            p: logits[i] / cfg.temperature,
        };
    }
    let desc = |a: &Candidate, b: &Candidate| b.p.total_cmp(&a.p);
    // Top-k: partition so the k best come first, then sort only those.
    let mut len = n;
    if cfg.top_k > 0 && cfg.top_k < n {
        cands.select_nth_unstable_by(cfg.top_k - 1, desc);
        len = cfg.top_k;
    }
    let cands = &mut cands[..len];
    cands.sort_unstable_by(desc);
    // Softmax over the survivors.
    let max = cands[0].p;
    let mut sum = 0f64;
    for c in cands.iter_mut() {
        c.p = libm::expf(c.p - max);
        sum += c.p as f64;
    }
    for c in cands.iter_mut() {
        c.p = (c.p as f64 / sum) as f32;
    }
    // Top-p then min-p, both on the sorted list.
    let mut keep = cands.len();
    if cfg.top_p < 1.0 {
        let mut acc = 0f32;
        for (i, c) in cands.iter().enumerate() {
            acc += c.p;
            if acc >= cfg.top_p {
                keep = i + 1;
                break;
            }
        }
    }
    if cfg.min_p > 0.0 {
        let floor = cands[0].p * cfg.min_p;
        keep = keep.min(cands.iter().take_while(|c| c.p >= floor).count().max(1));
    }
    let kept = &cands[..keep];
    let total: f64 = kept.iter().map(|c| c.p as f64).sum();
    let mut r = rng.next_f64() * total;
    for c in kept {
        r -= c.p as f64;
        if r < 0.0 {
            return c.id;
        }
    }
    kept[keep - 1].id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_argmax_and_penalties_apply() {
        let mut l = [1.0, 3.0, 2.0];
        let cfg = SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        };
        let mut w = [Candidate::default(); 3];
        assert_eq!(sample(&mut l, &[], &cfg, &mut Rng::new(1), &mut w), 1);
        let cfg = SamplerConfig {
            temperature: 0.0,
            repetition_penalty: 2.0,
            ..Default::default()
        };
        let mut l = [1.0, 3.0, 2.0];
        assert_eq!(sample(&mut l, &[1, 1], &cfg, &mut Rng::new(1), &mut w), 2);
        assert_eq!(l[1], 1.5);
        let mut l = [0.0, 0.0];
        let cfg = SamplerConfig {
            frequency_penalty: 0.5,
            presence_penalty: 1.0,
            ..cfg
        };
        apply_penalties(
            &mut l,
            &[0, 0, 1],
            &SamplerConfig {
                repetition_penalty: 1.0,
                ..cfg
            },
        );
        assert_eq!(l, [-2.0, -1.5]);
    }

    #[test]
    fn same_seed_same_tokens_and_distribution_follows_probabilities() {
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        };
        let base = [0.0f32, (3.0f32).ln(), 0.0, f32::NEG_INFINITY];
        let mut w = [Candidate::default(); 4];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut counts = [0usize; 4];
            for _ in 0..20000 {
                let mut l = base;
                counts[sample(&mut l, &[], &cfg, &mut rng, &mut w.clone()) as usize] += 1;
            }
            counts
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        // Expected 0.2 / 0.6 / 0.2 / 0.
        assert!((a[1] as f64 / 20000.0 - 0.6).abs() < 0.02, "{a:?}");
        assert_eq!(a[3], 0);
        let mut l = base;
        let top1 = SamplerConfig { top_k: 1, ..cfg };
        assert_eq!(sample(&mut l, &[], &top1, &mut Rng::new(3), &mut w), 1);
        let mut l = base;
        let minp = SamplerConfig { min_p: 0.5, ..cfg };
        assert_eq!(sample(&mut l, &[], &minp, &mut Rng::new(3), &mut w), 1);
        let mut l = base;
        let topp = SamplerConfig { top_p: 0.5, ..cfg };
        assert_eq!(sample(&mut l, &[], &topp, &mut Rng::new(3), &mut w), 1);
    }
}
