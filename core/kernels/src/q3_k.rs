//! Q3_K: 256-weight super-blocks of 3-bit codes (value −4..4) in sixteen 16-weight sub-blocks
//! with 6-bit scales (`w = d · (sc − 32) · q`), paired with Q8_K activations.
//!
//! Block layout (110 bytes): 32 bytes `hmask`, 64 bytes of 2-bit codes, 12 bytes of packed
//! scales, f16 `d`. In half `n` (weights `128n..128n + 128`), weight `128n + 32k + l` (k < 4,
//! l < 32) has low bits `qs[32n + l] >> 2k` and high bit `hmask[l] >> (4n + k)`; a clear high
//! bit subtracts 4. Its scale is number `8n + 2k + l / 16`.

use crate::act::ActQ8;
use crate::f16::le_f16;

/// Bytes of a Q3_K block.
pub const Q3_K_BLOCK_BYTES: usize = 110;

/// Unpacks the sixteen 6-bit scales (stored as 4 low bits in bytes 0..8 and 2 high bits in
/// bytes 8..12), minus their offset of 32.
#[inline(always)]
pub fn unpack_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for j in 0..16 {
        let lo = if j < 8 { s[j] & 0xf } else { s[j - 8] >> 4 };
        let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = (lo | (hi << 4)) as i8 - 32;
    }
    out
}

/// Value (−4..4) of weight `128n + 32k + l` of a block.
#[inline(always)]
fn value(b: &[u8], n: usize, k: usize, l: usize) -> i32 {
    let q = ((b[32 + 32 * n + l] >> (2 * k)) & 3) as i32;
    let h = (b[l] >> (4 * n + k)) & 1;
    q - if h == 0 { 4 } else { 0 }
}

/// Writes the 256 weights of one block.
pub fn dequantize(b: &[u8], out: &mut [f32]) {
    let d = le_f16(b, 108);
    let sc = unpack_scales(&b[96..108]);
    for n in 0..2 {
        for k in 0..4 {
            for l in 0..32 {
                let dl = d * sc[8 * n + 2 * k + l / 16] as f32;
                out[128 * n + 32 * k + l] = dl * value(b, n, k, l) as f32;
            }
        }
    }
}

/// Scalar reference: Q3_K rows × Q8_K activations (`a.d[8b]` is super-block `b`'s scale).
pub fn matvec(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (bi, blk) in row.chunks_exact(Q3_K_BLOCK_BYTES).enumerate() {
            let sc = unpack_scales(&blk[96..108]);
            let q8 = &a.qs[256 * bi..256 * bi + 256];
            let mut sumi = 0i32;
            for n in 0..2 {
                for k in 0..4 {
                    for h in 0..2 {
                        let mut s = 0i32;
                        for l in 16 * h..16 * h + 16 {
                            s += value(blk, n, k, l) * q8[128 * n + 32 * k + l] as i32;
                        }
                        sumi += sc[8 * n + 2 * k + h] as i32 * s;
                    }
                }
            }
            acc += (le_f16(blk, 108) * a.d[8 * bi]) * sumi as f32;
        }
        *o = acc;
    }
}
