//! Rotary position embeddings: the per-position table and its application to a head.

use super::config::RopeStyle;
use super::Forward;

impl Forward<'_> {
    /// Fills `rope[t]` with `cos` (first half) and `sin` (second half) for position `pos[t]`,
    /// at the RoPE base and scale of sliding-window layers if `local`, else of global ones, and
    /// with LongRoPE's long factors if `long`.
    pub(super) fn rope_table(&self, pos: &[i32], rope: &mut [f32], local: bool, long: bool) {
        let c = self.config;
        let factors = match (long, &self.weights.rope_freqs_long) {
            (true, Some(f)) => Some(f),
            _ => self.weights.rope_freqs.as_ref(),
        };
        let half = c.rope_dim / 2;
        let (base, scale) = if local {
            (c.rope_base_local, c.rope_linear_scale_local)
        } else {
            (c.rope_base, c.rope_linear_scale)
        };
        for (t, &p) in pos.iter().enumerate() {
            let p = p as f64 * scale as f64;
            let r = &mut rope[t * c.rope_dim..(t + 1) * c.rope_dim];
            for i in 0..half {
                let mut freq = libm::pow(base as f64, -2.0 * i as f64 / c.rope_dim as f64);
                if let Some(f) = factors {
                    let bytes = &f.data(&self.bufs)[4 * i..4 * i + 4];
                    freq /= f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as f64;
                }
                let theta = p * freq;
                r[i] = libm::cos(theta) as f32;
                r[half + i] = libm::sin(theta) as f32;
                if c.rope_attn_factor != 1.0 {
                    r[i] *= c.rope_attn_factor;
                    r[half + i] *= c.rope_attn_factor;
                }
            }
        }
    }

    pub(super) fn apply_rope(&self, h: &mut [f32], rope: &[f32]) {
        let half = self.config.rope_dim / 2;
        let (cos, sin) = rope.split_at(half);
        match self.config.rope_style {
            RopeStyle::AdjacentPairs => {
                for i in 0..half {
                    let (a, b) = (h[2 * i], h[2 * i + 1]);
                    h[2 * i] = a * cos[i] - b * sin[i];
                    h[2 * i + 1] = a * sin[i] + b * cos[i];
                }
            }
            RopeStyle::HalfSplit => {
                for i in 0..half {
                    let (a, b) = (h[i], h[i + half]);
                    h[i] = a * cos[i] - b * sin[i];
                    h[i + half] = a * sin[i] + b * cos[i];
                }
            }
        }
    }
}
