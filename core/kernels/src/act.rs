//! Activation quantization: `f32` vectors to int8 blocks with one scale per block.

/// An int8-quantized activation vector: `x[i] ≈ qs[i] · d[i / block]`.
///
/// `sums[b]` holds the integer sum of block `b`'s codes, used by kernels that store weights
/// with an offset (unsigned codes) and by Q4_1's minimum term.
#[derive(Clone, Copy, Debug)]
pub struct ActQ8<'a> {
    /// Codes, one per element.
    pub qs: &'a [i8],
    /// Scale of each block.
    pub d: &'a [f32],
    /// Sum of each block's codes.
    pub sums: &'a [i32],
    /// Elements per block (32 for Q-formats, 128 for ternary formats).
    pub block: usize,
}

/// Several tokens' activations quantized alike, stored back to back: token `t` has codes
/// `qs[t·cols..(t+1)·cols]` and block scales and sums `d[t·nb..(t+1)·nb]` with `nb = cols / block`.
#[derive(Clone, Copy, Debug)]
pub struct ActBatch<'a> {
    /// Codes of all tokens.
    pub qs: &'a [i8],
    /// Block scales of all tokens.
    pub d: &'a [f32],
    /// Block code sums of all tokens.
    pub sums: &'a [i32],
    /// Elements per block.
    pub block: usize,
    /// Elements per token.
    pub cols: usize,
    /// Number of tokens.
    pub n: usize,
}

impl<'a> ActBatch<'a> {
    /// Token `t` as a single vector.
    pub fn token(&self, t: usize) -> ActQ8<'a> {
        let nb = self.cols / self.block;
        ActQ8 {
            qs: &self.qs[t * self.cols..(t + 1) * self.cols],
            d: &self.d[t * nb..(t + 1) * nb],
            sums: &self.sums[t * nb..(t + 1) * nb],
            block: self.block,
        }
    }
}

/// Rounds half away from zero (as C's `roundf`) for values well inside the `i32` range.
#[inline(always)]
pub fn round_i32(v: f32) -> i32 {
    plus_half_away(v) as i32
}

/// `v ± 0.5` with the sign of `v`, without a branch (so loops vectorize): truncating it rounds
/// half away from zero. For −0.0 this adds −0.5 instead of 0.5; both truncate to 0.
#[inline(always)]
fn plus_half_away(v: f32) -> f32 {
    v + f32::from_bits(0.5f32.to_bits() | (v.to_bits() & 0x8000_0000))
}

/// `|v|` by clearing the sign bit (`f32::abs` is not in `core` on Rust 1.63).
#[inline(always)]
fn abs(v: f32) -> f32 {
    f32::from_bits(v.to_bits() & 0x7fff_ffff)
}

/// Largest `|x[i]|` (0 for an empty slice; NaNs are skipped).
#[inline(always)]
fn abs_max(x: &[f32]) -> f32 {
    // Eight independent running maxima (the maximum does not depend on the order).
    let mut m = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (m, &v) in m.iter_mut().zip(c) {
            let a = abs(v);
            *m = if a > *m { a } else { *m };
        }
    }
    let mut r = 0.0f32;
    for &a in m.iter().chain(chunks.remainder()) {
        let a = abs(a);
        if a > r {
            r = a;
        }
    }
    r
}

/// Quantizes `x` in blocks of `block` elements, each with its own absmax scale
/// (`d = max|x| / 127`, `q = round(x / d)`), as llama.cpp's Q8_0/Q8_1 activations.
///
/// `x.len()` must be a multiple of `block`; `qs` holds `x.len()` codes, `d` and `sums` one entry
/// per block.
pub fn quantize_blocks(x: &[f32], block: usize, qs: &mut [i8], d: &mut [f32], sums: &mut [i32]) {
    quantize_groups(x, block, block, qs, d, sums);
}

/// Like [`quantize_blocks`], but one absmax scale covers `group` elements (a multiple of
/// `block`); every block of a group carries that scale. With `block = 128, group = 256` this is
/// llama.cpp's Q8_K activation quantization used for TQ1_0/TQ2_0.
///
/// Always inlined, so the SIMD paths' `target_feature` wrappers vectorize it with their
/// features (the same IEEE operations in the same order: bit-identical).
#[inline(always)]
pub fn quantize_groups(
    x: &[f32],
    block: usize,
    group: usize,
    qs: &mut [i8],
    d: &mut [f32],
    sums: &mut [i32],
) {
    let per = group / block;
    for (gi, xg) in x.chunks(group).enumerate() {
        let amax = abs_max(xg);
        let scale = amax / 127.0;
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for (bj, xb) in xg.chunks_exact(block).enumerate() {
            let b = gi * per + bj;
            d[b] = scale;
            sums[b] = quantize_block(xb, inv, -127, &mut qs[b * block..(b + 1) * block]);
        }
    }
}

/// Quantizes `x` with one absmax scale for the whole vector (BitNet b1.58's per-token
/// activation quantization: `s = 127 / max|x|`, `q = clamp(round(x · s), −128, 127)`), stored
/// in blocks of `block` elements that all carry the scale `1 / s`.
/// Inlined like [`quantize_groups`].
#[inline(always)]
pub fn quantize_per_token(x: &[f32], block: usize, qs: &mut [i8], d: &mut [f32], sums: &mut [i32]) {
    let amax = abs_max(x);
    let s = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    let scale = if amax > 0.0 { 1.0 / s } else { 0.0 };
    for (b, xb) in x.chunks_exact(block).enumerate() {
        d[b] = scale;
        sums[b] = quantize_block(xb, s, -128, &mut qs[b * block..(b + 1) * block]);
    }
}

/// `qs[j] = clamp(round(x[j] · s), lo, 127)`; returns the sum of the codes.
#[inline(always)]
fn quantize_block(x: &[f32], s: f32, lo: i32, qs: &mut [i8]) -> i32 {
    // `round_i32(v · s).clamp(lo, 127)`, written so that it vectorizes: the clamp moves
    // before the truncation (the bounds are integers, so the two commute) and NaN, which the
    // saturating cast sends to 0, is mapped to 0 explicitly.
    let (lo_f, hi_f) = (lo as f32, 127.0f32);
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        let t = plus_half_away(v * s);
        let t = if t.is_nan() {
            0.0
        } else {
            t.max(lo_f).min(hi_f)
        };
        // SAFETY: `t` is finite and within `lo..=127`, so the truncation is in range.
        let c = unsafe { t.to_int_unchecked::<i32>() };
        *q = c as i8;
        sum += c;
    }
    sum
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn blocks_reconstruct_within_half_step() {
        let x: [f32; 64] = core::array::from_fn(|i| ((i * 37 % 23) as f32 - 11.0) * 0.13);
        let (mut q, mut d, mut s) = ([0i8; 64], [0f32; 2], [0i32; 2]);
        quantize_blocks(&x, 32, &mut q, &mut d, &mut s);
        for i in 0..64 {
            let err = (q[i] as f32 * d[i / 32] - x[i]).abs();
            assert!(err <= d[i / 32] * 0.5 + 1e-6);
        }
        assert_eq!(s[0], q[..32].iter().map(|&v| v as i32).sum::<i32>());
    }

    /// The straightforward (branchy) formulas the vectorizable ones must match exactly.
    fn reference(x: &[f32], block: usize, lo: i32) -> (Vec<i8>, f32, Vec<i32>) {
        let mut amax = 0.0f32;
        for &v in x {
            let a = if v < 0.0 { -v } else { v };
            if a > amax {
                amax = a;
            }
        }
        let s = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        let mut qs = Vec::new();
        let mut sums = Vec::new();
        for xb in x.chunks_exact(block) {
            let mut sum = 0;
            for &v in xb {
                let r = v * s;
                let q = if r >= 0.0 {
                    (r + 0.5) as i32
                } else {
                    (r - 0.5) as i32
                };
                let q = q.clamp(lo, 127);
                qs.push(q as i8);
                sum += q;
            }
            sums.push(sum);
        }
        (qs, s, sums)
    }

    #[test]
    fn per_token_matches_branchy_formulas() {
        let mut seed = 0x9e37_79b9u32;
        for len in [128usize, 256, 2560] {
            let mut x: Vec<f32> = (0..len)
                .map(|i| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    // Exact halves after scaling appear with integer-valued inputs.
                    if i % 5 == 0 {
                        (seed % 255) as f32 - 127.0
                    } else {
                        (seed >> 8) as f32 / (1 << 22) as f32 - 2.0
                    }
                })
                .collect();
            x[3] = -0.0;
            x[7] = f32::NAN;
            let (want_q, s, want_s) = reference(&x, 128, -128);
            let nb = len / 128;
            let (mut q, mut d, mut sums) = (vec![0i8; len], vec![0f32; nb], vec![0i32; nb]);
            quantize_per_token(&x, 128, &mut q, &mut d, &mut sums);
            assert_eq!(q, want_q);
            assert_eq!(sums, want_s);
            assert_eq!(d[0], if s > 0.0 { 1.0 / s } else { 0.0 });
        }
    }

    #[test]
    fn zero_vector_is_all_zero() {
        let x = [0f32; 128];
        let (mut q, mut d, mut s) = ([1i8; 128], [1f32; 1], [1i32; 1]);
        quantize_per_token(&x, 128, &mut q, &mut d, &mut s);
        assert!(q.iter().all(|&v| v == 0));
        assert_eq!((d[0], s[0]), (0.0, 0));
    }
}
