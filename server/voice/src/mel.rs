//! Whisper's log-mel spectrogram: 16 kHz audio, a 400-point periodic Hann window every 160
//! samples (centred, reflect-padded), the power spectrum through 80 Slaney-normalized mel
//! filters (computed here, as librosa's `filters.mel(sr=16000, n_fft=400, n_mels=80)`), then
//! `log10`, clamped to 8 below the maximum and scaled as `(x + 4) / 4`.

use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
/// Frames in one 30-second window.
pub const WINDOW_FRAMES: usize = 3000;
/// Samples in one 30-second window.
pub const WINDOW_SAMPLES: usize = WINDOW_FRAMES * HOP;

/// A log-mel spectrogram, `[mels][frames]` row-major.
#[derive(Debug, Clone)]
pub struct Mel {
    pub mels: usize,
    pub frames: usize,
    pub data: Vec<f32>,
}

impl Mel {
    /// The `WINDOW_FRAMES` frames starting at `start`; frames past the end are filled with the
    /// spectrogram's lowest value (what silence maps to).
    pub fn window(&self, start: usize) -> Vec<f32> {
        let floor = self.data.iter().copied().fold(f32::INFINITY, f32::min);
        let floor = if floor.is_finite() { floor } else { 0.0 };
        let mut out = vec![floor; self.mels * WINDOW_FRAMES];
        let end = (start + WINDOW_FRAMES).min(self.frames);
        if start < end {
            for m in 0..self.mels {
                let row = &self.data[m * self.frames..(m + 1) * self.frames];
                out[m * WINDOW_FRAMES..m * WINDOW_FRAMES + (end - start)]
                    .copy_from_slice(&row[start..end]);
            }
        }
        out
    }
}

fn hz_to_mel(f: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if f >= MIN_LOG_HZ {
        min_log_mel + (f / MIN_LOG_HZ).ln() / logstep
    } else {
        f / F_SP
    }
}

fn mel_to_hz(m: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if m >= min_log_mel {
        MIN_LOG_HZ * (logstep * (m - min_log_mel)).exp()
    } else {
        F_SP * m
    }
}

/// The Slaney-style mel filterbank, `[n_mels][n_fft / 2 + 1]`.
pub fn mel_filters(n_mels: usize) -> Vec<f32> {
    let bins = N_FFT / 2 + 1;
    let sr = SAMPLE_RATE as f64;
    let fft_freqs: Vec<f64> = (0..bins)
        .map(|j| j as f64 * (sr / 2.0) / (bins - 1) as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sr / 2.0));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut out = vec![0f32; n_mels * bins];
    for i in 0..n_mels {
        let (d0, d1) = (mel_f[i + 1] - mel_f[i], mel_f[i + 2] - mel_f[i + 1]);
        let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
        for (j, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - mel_f[i]) / d0;
            let upper = (mel_f[i + 2] - f) / d1;
            out[i * bins + j] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    out
}

/// The log-mel spectrogram of `samples` (16 kHz mono): `samples.len() / HOP` frames.
pub fn log_mel(samples: &[f32], n_mels: usize) -> Mel {
    let bins = N_FFT / 2 + 1;
    let frames = samples.len() / HOP;
    let pad = N_FFT / 2;
    // Reflect padding needs more samples than the pad; shorter input is zero-extended first.
    let mut x: Vec<f64> = samples.iter().map(|&s| s as f64).collect();
    if x.len() <= pad {
        x.resize(pad + 1, 0.0);
    }
    let n = x.len();
    let padded: Vec<f64> = (0..n + 2 * pad)
        .map(|i| {
            let k = i as isize - pad as isize;
            let k = if k < 0 {
                -k
            } else if k as usize >= n {
                2 * (n as isize - 1) - k
            } else {
                k
            };
            x[k as usize]
        })
        .collect();
    let window: Vec<f64> = (0..N_FFT)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos())
        .collect();
    let filters = mel_filters(n_mels);
    let fft = FftPlanner::<f64>::new().plan_fft_forward(N_FFT);
    let mut buf = vec![Complex::new(0.0, 0.0); N_FFT];
    let mut scratch = vec![Complex::new(0.0, 0.0); fft.get_inplace_scratch_len()];
    let mut power = vec![0f32; bins];
    let mut data = vec![0f32; n_mels * frames];
    for t in 0..frames {
        let frame = &padded[t * HOP..t * HOP + N_FFT];
        for ((b, &s), &w) in buf.iter_mut().zip(frame).zip(&window) {
            *b = Complex::new(s * w, 0.0);
        }
        fft.process_with_scratch(&mut buf, &mut scratch);
        for (p, c) in power.iter_mut().zip(&buf) {
            *p = c.norm_sqr() as f32;
        }
        for m in 0..n_mels {
            let f = &filters[m * bins..(m + 1) * bins];
            let e: f32 = f.iter().zip(&power).map(|(a, b)| a * b).sum();
            data[m * frames + t] = e.max(1e-10).log10();
        }
    }
    let max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in &mut data {
        *v = (v.max(max - 8.0) + 4.0) / 4.0;
    }
    Mel {
        mels: n_mels,
        frames,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_openai_whisper_asset() {
        // Entries of `mel_80` in openai-whisper's shipped `assets/mel_filters.npz`.
        let f = mel_filters(80);
        let want = [
            (0, 1, 0.024_862_595),
            (21, 21, 0.011_899_572),
            (39, 40, 0.001_418_047_6),
            (49, 61, 0.009_859_242),
            (56, 82, 0.001_796_109_5),
            (62, 101, 0.005_150_905),
            (67, 120, 0.003_723_552_2),
            (71, 140, 0.003_257_872_8),
            (74, 163, 0.001_356_04),
            (77, 183, 0.001_158_291_7),
        ];
        for (m, b, v) in want {
            let got = f[m * 201 + b];
            assert!((got - v).abs() < 1e-8, "[{m}][{b}] = {got}, want {v}");
        }
        let sum: f32 = f.iter().sum();
        assert!((sum - 1.999_024_2).abs() < 1e-5, "{sum}");
    }

    #[test]
    fn silence_and_tone_shapes() {
        let mel = log_mel(&vec![0.0; 16_000], 80);
        assert_eq!(mel.frames, 100);
        assert!(mel.data.iter().all(|&v| (v - (-1.5)).abs() < 1e-6));
        // A 1 kHz tone puts its energy in the filters around 1 kHz.
        let tone: Vec<f32> = (0..16_000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        let mel = log_mel(&tone, 80);
        let col: Vec<f32> = (0..80).map(|m| mel.data[m * mel.frames + 50]).collect();
        let peak = col
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        let centre = hz_to_mel(1000.0) / hz_to_mel(8000.0) * 81.0 - 1.0;
        assert!((peak as f64 - centre).abs() <= 1.5, "{peak} vs {centre}");
    }
}
