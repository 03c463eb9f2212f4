//! Q2_K: 256-weight super-blocks of 2-bit codes in sixteen 16-weight sub-blocks, each with a
//! 4-bit scale and a 4-bit minimum (`w = d · sc · q − dmin · m`), paired with Q8_K activations.
//!
//! Block layout (84 bytes): 16 scale bytes (scale in the low nibble, minimum in the high one),
//! 64 bytes of codes, f16 `d`, f16 `dmin`. Weight `128n + 32k + l` (k < 4, l < 32) is
//! `qs[32n + l] >> 2k`, in sub-block `8n + 2k + l / 16`.

use crate::act::ActQ8;
use crate::f16::le_f16;

/// Bytes of a Q2_K block.
pub const Q2_K_BLOCK_BYTES: usize = 84;

#[inline(always)]
fn code(b: &[u8], n: usize, k: usize, l: usize) -> i32 {
    ((b[16 + 32 * n + l] >> (2 * k)) & 3) as i32
}

/// Writes the 256 weights of one block.
pub fn dequantize(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (le_f16(b, 80), le_f16(b, 82));
    for n in 0..2 {
        for k in 0..4 {
            for l in 0..32 {
                let s = b[8 * n + 2 * k + l / 16];
                let (dl, ml) = (d * (s & 0xf) as f32, dmin * (s >> 4) as f32);
                out[128 * n + 32 * k + l] = dl * code(b, n, k, l) as f32 - ml;
            }
        }
    }
}

/// Scalar reference: Q2_K rows × Q8_K activations (`a.d[8b]` is super-block `b`'s scale). The
/// minima need code sums per 16 activations, which the kernel forms itself.
pub fn matvec(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (bi, blk) in row.chunks_exact(Q2_K_BLOCK_BYTES).enumerate() {
            let q8 = &a.qs[256 * bi..256 * bi + 256];
            let (mut sumi, mut summ) = (0i32, 0i32);
            for n in 0..2 {
                for k in 0..4 {
                    for h in 0..2 {
                        let (mut s, mut sa) = (0i32, 0i32);
                        for l in 16 * h..16 * h + 16 {
                            let q = q8[128 * n + 32 * k + l] as i32;
                            s += code(blk, n, k, l) * q;
                            sa += q;
                        }
                        let sm = blk[8 * n + 2 * k + h];
                        sumi += (sm & 0xf) as i32 * s;
                        summ += (sm >> 4) as i32 * sa;
                    }
                }
            }
            let da = a.d[8 * bi];
            acc += (le_f16(blk, 80) * da) * sumi as f32 - (le_f16(blk, 82) * da) * summ as f32;
        }
        *o = acc;
    }
}
