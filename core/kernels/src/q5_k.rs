//! Q5_K: as Q4_K with a fifth bit per weight (codes 0..32), paired with Q8_K activations.
//!
//! Block layout (176 bytes): f16 `d`, f16 `dmin`, 12 scale bytes (packed as Q4_K's), 32 bytes of
//! high bits (bit `c` of byte `l` for weight `32c + l`), 128 bytes of low nibbles laid out as
//! Q4_K's codes.

use crate::act::ActQ8;
use crate::f16::le_f16;
use crate::q4_k::{block_step, mins_dot, unpack_scales};

/// Bytes of a Q5_K block.
pub const Q5_K_BLOCK_BYTES: usize = 176;

/// Code of weight `64c + 32h + l` of a block (0..32).
#[inline(always)]
fn code(b: &[u8], c: usize, h: usize, l: usize) -> u8 {
    let q = b[48 + 32 * c + l];
    let lo = if h == 0 { q & 0xf } else { q >> 4 };
    let hi = (b[16 + l] >> (2 * c + h)) & 1;
    lo | (hi << 4)
}

/// Writes the 256 weights of one block.
pub fn dequantize(b: &[u8], out: &mut [f32]) {
    let d = le_f16(b, 0);
    let dmin = le_f16(b, 2);
    let (sc, m) = unpack_scales(&b[4..16]);
    for c in 0..4 {
        for h in 0..2 {
            let (dl, ml) = (d * sc[2 * c + h] as f32, dmin * m[2 * c + h] as f32);
            for l in 0..32 {
                out[64 * c + 32 * h + l] = dl * code(b, c, h, l) as f32 - ml;
            }
        }
    }
}

/// Scalar reference: Q5_K rows × Q8_K activations (see [`crate::q4_k::matvec`]).
pub fn matvec(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (bi, blk) in row.chunks_exact(Q5_K_BLOCK_BYTES).enumerate() {
            let (sc, m) = unpack_scales(&blk[4..16]);
            let q8 = &a.qs[256 * bi..256 * bi + 256];
            let (mut sumi, mut summ) = (0i32, 0i32);
            for c in 0..4 {
                for h in 0..2 {
                    let mut s = 0i32;
                    for l in 0..32 {
                        s += code(blk, c, h, l) as i32 * q8[64 * c + 32 * h + l] as i32;
                    }
                    sumi += sc[2 * c + h] as i32 * s;
                }
            }
            summ += mins_dot(&m, &a.sums[8 * bi..8 * bi + 8]);
            acc = block_step(acc, le_f16(blk, 0), le_f16(blk, 2), a.d[8 * bi], sumi, summ);
        }
        *o = acc;
    }
}
