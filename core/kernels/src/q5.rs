//! Q5_0 and Q5_1: 32-weight blocks of 5-bit codes, paired with Q8_0 (Q5_0) and Q8_1 (Q5_1, the
//! code sums carry its minimum) activations.
//!
//! Q5_0 (22 bytes): f16 `d`, 4 bytes `qh` (bit `j` is the fifth bit of weight `j`), 16 bytes of
//! nibbles (byte `j`: weight `j` low, weight `j + 16` high); `w = d · (q − 16)`.
//! Q5_1 (24 bytes): f16 `d`, f16 `m`, then `qh` and nibbles as Q5_0; `w = d · q + m`.

use crate::act::ActQ8;
use crate::f16::le_f16;

/// Bytes of a Q5_0 block.
pub const Q5_0_BLOCK_BYTES: usize = 22;
/// Bytes of a Q5_1 block.
pub const Q5_1_BLOCK_BYTES: usize = 24;

/// The 32 codes (0..32) of a block whose `qh` starts at byte `o`.
#[inline(always)]
fn codes(b: &[u8], o: usize) -> [u8; 32] {
    let qh = u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let mut q = [0u8; 32];
    for j in 0..16 {
        let x = b[o + 4 + j];
        q[j] = (x & 0xf) | ((((qh >> j) & 1) as u8) << 4);
        q[j + 16] = (x >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

/// Writes the 32 weights of one Q5_0 block.
pub fn dequantize_q5_0(b: &[u8], out: &mut [f32]) {
    let d = le_f16(b, 0);
    for (o, q) in out.iter_mut().zip(codes(b, 2)) {
        *o = (q as i32 - 16) as f32 * d;
    }
}

/// Writes the 32 weights of one Q5_1 block.
pub fn dequantize_q5_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (le_f16(b, 0), le_f16(b, 2));
    for (o, q) in out.iter_mut().zip(codes(b, 4)) {
        *o = q as f32 * d + m;
    }
}

#[inline(always)]
fn isum(q: &[u8; 32], a: &[i8]) -> i32 {
    let mut s = 0i32;
    for j in 0..32 {
        s += q[j] as i32 * a[j] as i32;
    }
    s
}

/// Scalar reference: Q5_0 rows × 32-blocks of int8 activations.
pub fn matvec_q5_0(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(Q5_0_BLOCK_BYTES).enumerate() {
            let s = isum(&codes(blk, 2), &a.qs[32 * b..32 * b + 32]) - 16 * a.sums[b];
            acc += (le_f16(blk, 0) * a.d[b]) * s as f32;
        }
        *o = acc;
    }
}

/// Scalar reference: Q5_1 rows × 32-blocks of int8 activations.
pub fn matvec_q5_1(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(Q5_1_BLOCK_BYTES).enumerate() {
            let s = isum(&codes(blk, 4), &a.qs[32 * b..32 * b + 32]);
            acc +=
                (le_f16(blk, 0) * a.d[b]) * s as f32 + (le_f16(blk, 2) * a.d[b]) * a.sums[b] as f32;
        }
        *o = acc;
    }
}
