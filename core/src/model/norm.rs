//! RMSNorm and the gated activations, the per-token blocks around the matrix products.

use super::weights::Tensor;
use super::Forward;
use crate::math::expf_in_range;
use crate::parallel::Parallel;

pub(super) fn rms_norm(x: &mut [f32], w: &[u8], eps: f32) {
    // Eight interleaved partial sums, combined pairwise, so the loop vectorizes (in f64 the
    // order only moves the last bits of the sum, far below the f32 scale's rounding).
    let mut part = [0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (p, &v) in part.iter_mut().zip(c) {
            *p += (v as f64) * (v as f64);
        }
    }
    for (p, &v) in part.iter_mut().zip(chunks.remainder()) {
        *p += (v as f64) * (v as f64);
    }
    let ss =
        ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
    let scale = (1.0 / libm::sqrt(ss / x.len() as f64 + eps as f64)) as f32;
    for (i, v) in x.iter_mut().enumerate() {
        let b = &w[4 * i..4 * i + 4];
        *v = *v * scale * f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + libm::expf(-x))
}

/// `g[i] = silu(g[i]) · u[i]`, bit-identical to [`silu`], vectorized in groups of 16 whose
/// inputs are all inside [`expf_in_range`]'s range.
pub(super) fn silu_mul(g: &mut [f32], u: &[f32]) {
    const GROUP: usize = 16;
    let mut gs = g.chunks_exact_mut(GROUP);
    let mut us = u.chunks_exact(GROUP);
    for (g, u) in (&mut gs).zip(&mut us) {
        // NaN compares false and takes the general path.
        if g.iter().fold(true, |ok, &x| ok & (x.abs() < 87.0)) {
            for (g, u) in g.iter_mut().zip(u) {
                *g = *g / (1.0 + expf_in_range(-*g)) * u;
            }
        } else {
            for (g, u) in g.iter_mut().zip(u) {
                *g = silu(*g) * u;
            }
        }
    }
    for (g, u) in gs.into_remainder().iter_mut().zip(us.remainder()) {
        *g = silu(*g) * u;
    }
}

impl Forward<'_> {
    /// `dst[t] = rms_norm(src[t]) · w` for every token row of `d` elements, rows spread over
    /// threads.
    pub(super) fn norm_rows(
        &self,
        src: &[f32],
        dst: &mut [f32],
        d: usize,
        w: &Tensor,
        par: &dyn Parallel,
    ) {
        let (w, eps) = (w.data(&self.bufs), self.config.rms_eps);
        par.for_each_chunk(dst, d, &|t, row| {
            row.copy_from_slice(&src[t * d..(t + 1) * d]);
            rms_norm(row, w, eps);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silu_mul_matches_silu() {
        let mut x = 0x1234_5678u32;
        let mut g: [f32; 203] = core::array::from_fn(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as f32 / (1 << 20) as f32 - 8.0
        });
        g[40] = f32::NAN;
        g[70] = 100.0;
        g[71] = -100.0;
        g[90] = f32::INFINITY;
        g[120] = -0.0;
        let u: [f32; 203] = core::array::from_fn(|i| 0.5 + i as f32 * 0.01);
        let mut got = g;
        silu_mul(&mut got, &u);
        for i in 0..g.len() {
            let want = silu(g[i]) * u[i];
            assert_eq!(got[i].to_bits(), want.to_bits(), "{}", g[i]);
        }
    }
}
