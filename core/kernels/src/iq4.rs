//! IQ4_NL and IQ4_XS: 4-bit indices into a fixed non-linear table of int8 levels.
//!
//! IQ4_NL (18 bytes per 32 weights, with Q8_0 activations): f16 `d`, 16 bytes of indices (byte
//! `j`: weight `j` low, weight `j + 16` high); `w = d · LEVELS[i]`.
//! IQ4_XS (136 bytes per 256 weights, with Q8_K activations): f16 `d`, u16 `scales_h`, 4 bytes
//! `scales_l`, then eight 16-byte groups of indices laid out as IQ4_NL's; sub-block `s` has the
//! 6-bit scale `ls = (scales_l[s / 2] >> 4(s % 2)) & 15 | ((scales_h >> 2s) & 3) << 4` and
//! `w = d · (ls − 32) · LEVELS[i]`.

use crate::act::ActQ8;
use crate::f16::{le_f16, le_u16};

/// Bytes of an IQ4_NL block.
pub const IQ4_NL_BLOCK_BYTES: usize = 18;
/// Bytes of an IQ4_XS block.
pub const IQ4_XS_BLOCK_BYTES: usize = 136;

/// The sixteen levels an index selects.
pub const LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Scale (−32..32) of IQ4_XS sub-block `s`.
#[inline(always)]
pub fn xs_scale(b: &[u8], s: usize) -> i32 {
    let h = le_u16(b, 2);
    let lo = (b[4 + s / 2] >> (4 * (s % 2))) & 0xf;
    let hi = ((h >> (2 * s)) & 3) as u8;
    (lo | (hi << 4)) as i32 - 32
}

/// `Σ LEVELS[i_j] · a_j` over the 32 weights whose indices are the 16 bytes `q`.
#[inline(always)]
fn isum(q: &[u8], a: &[i8]) -> i32 {
    let mut s = 0i32;
    for j in 0..16 {
        s += LEVELS[(q[j] & 0xf) as usize] as i32 * a[j] as i32;
        s += LEVELS[(q[j] >> 4) as usize] as i32 * a[j + 16] as i32;
    }
    s
}

fn levels(q: &[u8], d: f32, out: &mut [f32]) {
    for j in 0..16 {
        out[j] = d * LEVELS[(q[j] & 0xf) as usize] as f32;
        out[j + 16] = d * LEVELS[(q[j] >> 4) as usize] as f32;
    }
}

/// Writes the 32 weights of one IQ4_NL block.
pub fn dequantize_nl(b: &[u8], out: &mut [f32]) {
    levels(&b[2..18], le_f16(b, 0), out);
}

/// Writes the 256 weights of one IQ4_XS block.
pub fn dequantize_xs(b: &[u8], out: &mut [f32]) {
    let d = le_f16(b, 0);
    for s in 0..8 {
        let dl = d * xs_scale(b, s) as f32;
        levels(
            &b[8 + 16 * s..24 + 16 * s],
            dl,
            &mut out[32 * s..32 * s + 32],
        );
    }
}

/// Scalar reference: IQ4_NL rows × 32-blocks of int8 activations.
pub fn matvec_nl(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(IQ4_NL_BLOCK_BYTES).enumerate() {
            let s = isum(&blk[2..18], &a.qs[32 * b..32 * b + 32]);
            acc += (le_f16(blk, 0) * a.d[b]) * s as f32;
        }
        *o = acc;
    }
}

/// Scalar reference: IQ4_XS rows × Q8_K activations (`a.d[8b]` is super-block `b`'s scale).
pub fn matvec_xs(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(IQ4_XS_BLOCK_BYTES).enumerate() {
            let mut sumi = 0i32;
            for s in 0..8 {
                let q8 = &a.qs[256 * b + 32 * s..256 * b + 32 * s + 32];
                sumi += xs_scale(blk, s) * isum(&blk[8 + 16 * s..24 + 16 * s], q8);
            }
            acc += (le_f16(blk, 0) * a.d[8 * b]) * sumi as f32;
        }
        *o = acc;
    }
}
