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
#[inline]
pub fn round_i32(v: f32) -> i32 {
    if v >= 0.0 {
        (v + 0.5) as i32
    } else {
        (v - 0.5) as i32
    }
}

fn abs_max(x: &[f32]) -> f32 {
    let mut m = 0.0f32;
    for &v in x {
        let a = if v < 0.0 { -v } else { v };
        if a > m {
            m = a;
        }
    }
    m
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
            let mut sum = 0i32;
            for (j, &v) in xb.iter().enumerate() {
                let q = round_i32(v * inv).clamp(-127, 127);
                qs[b * block + j] = q as i8;
                sum += q;
            }
            d[b] = scale;
            sums[b] = sum;
        }
    }
}

/// Quantizes `x` with one absmax scale for the whole vector (BitNet b1.58's per-token
/// activation quantization: `s = 127 / max|x|`, `q = clamp(round(x · s), −128, 127)`), stored
/// in blocks of `block` elements that all carry the scale `1 / s`.
pub fn quantize_per_token(x: &[f32], block: usize, qs: &mut [i8], d: &mut [f32], sums: &mut [i32]) {
    let amax = abs_max(x);
    let s = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    let scale = if amax > 0.0 { 1.0 / s } else { 0.0 };
    for (b, xb) in x.chunks_exact(block).enumerate() {
        let mut sum = 0i32;
        for (j, &v) in xb.iter().enumerate() {
            let q = round_i32(v * s).clamp(-128, 127);
            qs[b * block + j] = q as i8;
            sum += q;
        }
        d[b] = scale;
        sums[b] = sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn zero_vector_is_all_zero() {
        let x = [0f32; 128];
        let (mut q, mut d, mut s) = ([1i8; 128], [1f32; 1], [1i32; 1]);
        quantize_per_token(&x, 128, &mut q, &mut d, &mut s);
        assert!(q.iter().all(|&v| v == 0));
        assert_eq!((d[0], s[0]), (0.0, 0));
    }
}
