//! Q6_K: 256-weight super-blocks of 6-bit codes (value = code − 32) in sixteen 16-weight
//! sub-blocks with int8 scales (`w = d · sc · (q − 32)`), paired with Q8_K activations.
//!
//! Block layout (210 bytes): 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 int8
//! scales, f16 `d`. In half `n` (weights `128n..128n + 128`), with `ql = 64n`, `qh = 128 + 32n`,
//! weight `128n + 32k + l` (k < 4, l < 32) has low nibble `ql[l + 32(k & 1)] >> 4(k >> 1)` and
//! high bits `qh[l] >> 2k`, and scale `sc[8n + 2k + l / 16]`.

use crate::act::ActQ8;
use crate::f16::le_f16;

/// Bytes of a Q6_K block.
pub const Q6_K_BLOCK_BYTES: usize = 210;

/// Code (0..64) of weight `128n + 32k + l` of a block.
#[inline(always)]
fn code(b: &[u8], n: usize, k: usize, l: usize) -> u8 {
    let lo = (b[64 * n + l + 32 * (k & 1)] >> (4 * (k >> 1))) & 0xf;
    let hi = (b[128 + 32 * n + l] >> (2 * k)) & 3;
    lo | (hi << 4)
}

/// Writes the 256 weights of one block.
pub fn dequantize(b: &[u8], out: &mut [f32]) {
    let d = le_f16(b, 208);
    for n in 0..2 {
        for k in 0..4 {
            for l in 0..32 {
                let sc = b[192 + 8 * n + 2 * k + l / 16] as i8;
                let q = code(b, n, k, l) as i32 - 32;
                out[128 * n + 32 * k + l] = d * sc as f32 * q as f32;
            }
        }
    }
}

/// Scalar reference: Q6_K rows × Q8_K activations (`a.d[8b]` is super-block `b`'s scale).
pub fn matvec(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (bi, blk) in row.chunks_exact(Q6_K_BLOCK_BYTES).enumerate() {
            let q8 = &a.qs[256 * bi..256 * bi + 256];
            let mut sumi = 0i32;
            for n in 0..2 {
                for k in 0..4 {
                    for h in 0..2 {
                        let mut s = 0i32;
                        for l in 16 * h..16 * h + 16 {
                            let q = code(blk, n, k, l) as i32 - 32;
                            s += q * q8[128 * n + 32 * k + l] as i32;
                        }
                        sumi += (blk[192 + 8 * n + 2 * k + h] as i8) as i32 * s;
                    }
                }
            }
            acc += (le_f16(blk, 208) * a.d[8 * bi]) * sumi as f32;
        }
        *o = acc;
    }
}
