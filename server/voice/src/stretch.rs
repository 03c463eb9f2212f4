//! Pitch-preserving time stretch for streamed speech: WSOLA (waveform-similarity overlap-add).
//!
//! Output frames of `2 · hop` samples (30 ms), Hann-windowed, are overlap-added every `hop` samples.
//! The frame for output position `k · hop` is read from the input near `k · hop · speed`,
//! shifted by up to `search` samples to where the input best continues the previous frame
//! (the highest normalized cross-correlation), so pitch periods line up across frames: the
//! duration changes, the pitch does not. Input arrives in blocks of any size and the output
//! is the same however it is split.

/// A streaming time stretch by a fixed `speed` (2 plays twice as fast, at the same pitch).
#[derive(Debug)]
pub struct TimeStretch {
    speed: f64,
    hop: usize,
    search: usize,
    /// Periodic Hann window of `2 · hop`: overlapping halves sum to one.
    window: Vec<f32>,
    /// Input not yet behind every later frame; `input[0]` is absolute sample `offset`.
    input: Vec<f32>,
    offset: usize,
    /// Absolute input samples received.
    received: usize,
    /// Index of the next output frame.
    frame: usize,
    /// Where the previous frame was read from (absolute input position).
    prev: Option<usize>,
    /// Output from `frame · hop` on: the previous frame's second half, summed into.
    tail: Vec<f32>,
    /// Output samples handed out.
    emitted: usize,
}

impl TimeStretch {
    /// A stretch for audio at `rate` Hz: 30 ms frames, a 15 ms search (a pitch period of the
    /// lowest voices). `speed` must be positive.
    pub fn new(speed: f32, rate: u32) -> TimeStretch {
        assert!(speed > 0.0 && speed.is_finite(), "speed must be positive");
        let hop = (rate as usize * 15 / 1000).max(16);
        let search = (rate as usize * 15 / 1000).max(4);
        let n = 2 * hop;
        let window = (0..n)
            .map(|i| {
                let s = (std::f64::consts::PI * i as f64 / n as f64).sin();
                (s * s) as f32
            })
            .collect();
        TimeStretch {
            speed: speed as f64,
            hop,
            search,
            window,
            input: Vec::new(),
            offset: 0,
            received: 0,
            frame: 0,
            prev: None,
            tail: vec![0.0; hop],
            emitted: 0,
        }
    }

    /// Takes the next block of input; returns the output that is now final (at speed 1, the
    /// input itself).
    pub fn push(&mut self, x: &[f32]) -> Vec<f32> {
        if self.speed == 1.0 {
            self.received += x.len();
            self.emitted += x.len();
            return x.to_vec();
        }
        self.input.extend_from_slice(x);
        self.received += x.len();
        let mut out = Vec::new();
        // A frame needs its search range read whole, and never makes the output longer than
        // this much input stretched (the most the whole stream can give).
        let most = (self.received as f64 / self.speed) as usize;
        while self.nominal(self.frame) + self.search + 2 * self.hop <= self.received
            && (self.frame + 1) * self.hop <= most
        {
            self.step(&mut out);
        }
        self.emitted += out.len();
        out
    }

    /// Ends the stream: the rest of the output, to `input length / speed` samples in all.
    pub fn finish(&mut self) -> Vec<f32> {
        if self.speed == 1.0 {
            return Vec::new();
        }
        let total = (self.received as f64 / self.speed).round() as usize;
        let end = self.received;
        // Silence after the end, so the last frames can be read whole.
        let pad = self.search + 3 * self.hop;
        self.input.resize(self.input.len() + pad, 0.0);
        self.received += pad;
        let mut out = Vec::new();
        while self.emitted + out.len() < total && self.nominal(self.frame) < end + self.hop {
            self.step(&mut out);
        }
        out.extend_from_slice(&self.tail);
        out.truncate(total.saturating_sub(self.emitted));
        self.emitted += out.len();
        out
    }

    /// The input position output frame `k` is read from before the search.
    fn nominal(&self, k: usize) -> usize {
        (k as f64 * self.hop as f64 * self.speed).round() as usize
    }

    /// Places the next frame and appends the `hop` samples it completes.
    fn step(&mut self, out: &mut Vec<f32>) {
        let (hop, n) = (self.hop, 2 * self.hop);
        let at = self.nominal(self.frame);
        let start = match self.prev {
            None => at,
            Some(prev) => self.best_start(at, prev + hop),
        };
        let seg = &self.input[start - self.offset..start - self.offset + n];
        // The first half completes the previous frame's output; the second starts the next.
        let (w_in, w_out) = self.window.split_at(hop);
        let (s_in, s_out) = seg.split_at(hop);
        out.extend(
            self.tail
                .iter()
                .zip(w_in.iter().zip(s_in))
                .map(|(t, (w, v))| t + w * v),
        );
        for (t, (w, v)) in self.tail.iter_mut().zip(w_out.iter().zip(s_out)) {
            *t = w * v;
        }
        self.prev = Some(start);
        self.frame += 1;
        // Keep what the next frame may read: its search range and the continuation of this one.
        let keep = (self.nominal(self.frame).saturating_sub(self.search)).min(start + hop);
        if keep > self.offset {
            self.input.drain(..keep - self.offset);
            self.offset = keep;
        }
    }

    /// The start within `at ± search` whose first `hop` samples best match the input's own
    /// continuation of the previous frame, `x[natural..natural + hop]`.
    fn best_start(&self, at: usize, natural: usize) -> usize {
        let hop = self.hop;
        let x = |abs: usize| self.input[abs - self.offset];
        let template: Vec<f32> = (0..hop).step_by(2).map(|i| x(natural + i)).collect();
        let lo = at.saturating_sub(self.search).max(self.offset);
        let hi = at + self.search;
        let (mut best, mut best_score) = (at.max(lo), f64::NEG_INFINITY);
        for s in lo..=hi {
            let (mut dot, mut energy) = (0f64, 0f64);
            for (j, &t) in template.iter().enumerate() {
                let v = x(s + 2 * j) as f64;
                dot += t as f64 * v;
                energy += v * v;
            }
            let score = dot / (energy + 1e-9).sqrt();
            // Ties (silence) keep the nominal position, the earliest closest one.
            if score > best_score + 1e-12
                || (score >= best_score - 1e-12 && s.abs_diff(at) < best.abs_diff(at))
            {
                best = s;
                best_score = score.max(best_score);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 24_000;

    /// A voiced sound: harmonics of `f0` with falling amplitudes.
    fn voiced(f0: f64, secs: f64) -> Vec<f32> {
        let n = (secs * RATE as f64) as usize;
        (0..n)
            .map(|i| {
                let t = i as f64 / RATE as f64;
                (1..=8)
                    .map(|h| (2.0 * std::f64::consts::PI * f0 * h as f64 * t).sin() / h as f64)
                    .sum::<f64>() as f32
                    * 0.3
            })
            .collect()
    }

    /// The period (in samples) with the highest normalized autocorrelation, 2.5–20 ms.
    fn period(x: &[f32]) -> usize {
        let x = &x[x.len() / 4..x.len() * 3 / 4];
        let (lo, hi) = (RATE as usize / 400, RATE as usize / 50);
        (lo..hi)
            .max_by(|&a, &b| {
                let c = |lag: usize| {
                    let (mut d, mut e) = (0f64, 0f64);
                    for i in 0..x.len() - lag {
                        d += x[i] as f64 * x[i + lag] as f64;
                        e += x[i + lag] as f64 * x[i + lag] as f64;
                    }
                    d / e.sqrt()
                };
                c(a).total_cmp(&c(b))
            })
            .unwrap()
    }

    fn run(speed: f32, x: &[f32], block: usize) -> Vec<f32> {
        let mut s = TimeStretch::new(speed, RATE);
        let mut out = Vec::new();
        for b in x.chunks(block) {
            out.extend(s.push(b));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn length_follows_speed_and_pitch_stays() {
        let x = voiced(150.0, 1.5);
        let want_period = period(&x);
        assert_eq!(want_period, 160);
        for speed in [0.25f32, 0.5, 0.8, 1.25, 2.0, 4.0] {
            let y = run(speed, &x, 4096);
            let want = (x.len() as f64 / speed as f64).round() as usize;
            assert_eq!(y.len(), want, "speed {speed}");
            assert!(y.iter().all(|v| v.is_finite() && v.abs() < 1.5));
            let p = period(&y);
            assert!(p.abs_diff(want_period) <= 2, "speed {speed}: period {p}");
        }
    }

    #[test]
    fn frames_join_without_cancelling() {
        // A steady tone keeps its level: the frames are aligned, not averaged out of phase.
        let x = voiced(123.0, 1.0);
        let rms =
            |v: &[f32]| (v.iter().map(|a| (a * a) as f64).sum::<f64>() / v.len() as f64).sqrt();
        let want = rms(&x[2400..21600]);
        for speed in [0.5f32, 1.5, 3.0] {
            let y = run(speed, &x, 1000);
            let mid = &y[y.len() / 5..y.len() * 4 / 5];
            let got = rms(mid);
            assert!(
                (got / want - 1.0).abs() < 0.1,
                "speed {speed}: rms {got} vs {want}"
            );
        }
    }

    #[test]
    fn output_does_not_depend_on_block_sizes() {
        let x = voiced(210.0, 0.7);
        for speed in [0.5f32, 2.0] {
            let whole = run(speed, &x, x.len());
            for block in [1usize, 7, 480, 1919] {
                assert_eq!(
                    run(speed, &x, block),
                    whole,
                    "speed {speed}, blocks of {block}"
                );
            }
        }
    }

    #[test]
    fn speed_one_passes_the_input_through() {
        let x = voiced(180.0, 0.3);
        assert_eq!(run(1.0, &x, 777), x);
    }

    #[test]
    fn silence_and_tiny_inputs() {
        assert!(run(2.0, &vec![0.0; 10_000], 333).iter().all(|&v| v == 0.0));
        assert_eq!(run(2.0, &[], 1).len(), 0);
        assert_eq!(run(0.5, &[0.1; 10], 3).len(), 20);
        assert_eq!(run(4.0, &[0.1; 3], 3).len(), 1);
    }
}
