//! Band-limited sample-rate conversion: a windowed-sinc interpolator (Blackman window, 16
//! zero crossings each side) whose cutoff follows the lower of the two Nyquist rates, so
//! downsampling does not alias.

use std::f64::consts::PI;

const ZERO_CROSSINGS: f64 = 16.0;

/// `x` at `from` Hz, resampled to `to` Hz. Rates must be non-zero.
pub fn resample(x: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || x.is_empty() || from == 0 || to == 0 {
        return x.to_vec();
    }
    let ratio = to as f64 / from as f64;
    let cutoff = ratio.min(1.0);
    let half = ZERO_CROSSINGS / cutoff;
    let n_out = ((x.len() as f64) * ratio).round() as usize;
    // Output j sits at input time j·from/to; with g = gcd its fraction takes to/g values, so
    // the taps are tabulated once per phase (direct evaluation when there are too many).
    let g = gcd(from as u64, to as u64);
    let (l, m) = (to as u64 / g, from as u64 / g);
    let taps = 2 * half.ceil() as usize + 1;
    let table: Option<Vec<f64>> = (l <= 4096).then(|| {
        let mut t = vec![0f64; l as usize * taps];
        for p in 0..l as usize {
            let frac = p as f64 / l as f64;
            for k in 0..taps {
                let d = frac - (k as f64 - half.ceil());
                t[p * taps + k] = kernel(d, cutoff, half);
            }
        }
        t
    });
    let mut out = Vec::with_capacity(n_out);
    for j in 0..n_out {
        let acc = match &table {
            Some(t) => {
                let pos = j as u64 * m;
                let (base, phase) = ((pos / l) as i64, (pos % l) as usize);
                let row = &t[phase * taps..(phase + 1) * taps];
                let first = base - half.ceil() as i64;
                let mut acc = 0.0f64;
                for (k, &w) in row.iter().enumerate() {
                    let i = first + k as i64;
                    if i >= 0 && (i as usize) < x.len() {
                        acc += x[i as usize] as f64 * w;
                    }
                }
                acc
            }
            None => {
                let t = j as f64 / ratio;
                let lo = (t - half).ceil().max(0.0) as usize;
                let hi = ((t + half).floor() as usize).min(x.len() - 1);
                (lo..=hi)
                    .map(|i| x[i] as f64 * kernel(t - i as f64, cutoff, half))
                    .sum()
            }
        };
        out.push(acc as f32);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn kernel(d: f64, cutoff: f64, half: f64) -> f64 {
    if d.abs() >= half {
        return 0.0;
    }
    let x = d * cutoff;
    let sinc = if x.abs() < 1e-12 {
        1.0
    } else {
        (PI * x).sin() / (PI * x)
    };
    // Blackman window over [-half, half].
    let p = (d / half + 1.0) / 2.0;
    let w = 0.42 - 0.5 * (2.0 * PI * p).cos() + 0.08 * (4.0 * PI * p).cos();
    cutoff * sinc * w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, secs: f64) -> Vec<f32> {
        (0..(rate as f64 * secs) as usize)
            .map(|i| (2.0 * PI * freq * i as f64 / rate as f64).sin() as f32)
            .collect()
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn keeps_in_band_tones_and_length() {
        for from in [8_000, 22_050, 44_100, 48_000] {
            let x = tone(440.0, from, 1.0);
            let y = resample(&x, from, 16_000);
            assert!((y.len() as i64 - 16_000).abs() <= 1, "{from}: {}", y.len());
            // Compare with the ideal tone away from the edges.
            let ideal = tone(440.0, 16_000, 1.0);
            let err: f64 = y[1000..15000]
                .iter()
                .zip(&ideal[1000..15000])
                .map(|(a, b)| (a - b).abs() as f64)
                .fold(0.0, f64::max);
            assert!(err < 2e-3, "{from}: max error {err}");
        }
    }

    #[test]
    fn odd_rates_use_the_direct_path() {
        let x = tone(300.0, 44_101, 0.5);
        let y = resample(&x, 44_101, 16_000);
        let ideal = tone(300.0, 16_000, 0.5);
        let err = y[500..7500]
            .iter()
            .zip(&ideal[500..7500])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 2e-3, "{err}");
    }

    #[test]
    fn removes_tones_above_the_new_nyquist() {
        let x = tone(12_000.0, 48_000, 1.0);
        let y = resample(&x, 48_000, 16_000);
        assert!(rms(&y[1000..15000]) < 1e-3, "{}", rms(&y));
    }
}
