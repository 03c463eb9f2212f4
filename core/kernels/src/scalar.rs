//! Scalar reference kernels. Every SIMD kernel must agree with these: integer block sums
//! exactly, final `f32` results up to summation order.
//!
//! A matrix-vector kernel computes `out[r] = row_r · x` for `r in 0..out.len()`, where row `r`
//! starts at byte `r * row_bytes` of `w`. Ternary and I2_S results are *not* multiplied by an
//! I2_S per-tensor scale; the caller applies it.

use crate::act::ActQ8;
use crate::f16::{bf16_to_f32, f16_to_f32, le_f16, le_u16};
use crate::formats::{
    tq1_0_block_ternary, Q4_0_BLOCK_BYTES, Q4_1_BLOCK_BYTES, Q8_0_BLOCK_BYTES, TQ1_0_BLOCK_BYTES,
    TQ2_0_BLOCK_BYTES,
};

#[inline]
fn rows(w: &[u8], row_bytes: usize, r: usize) -> &[u8] {
    &w[r * row_bytes..(r + 1) * row_bytes]
}

/// Q8_0 weights × 32-blocks of int8 activations.
pub fn matvec_q8_0(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = rows(w, row_bytes, r);
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(Q8_0_BLOCK_BYTES).enumerate() {
            let q = &a.qs[b * 32..b * 32 + 32];
            let mut isum = 0i32;
            for j in 0..32 {
                isum += (blk[2 + j] as i8) as i32 * q[j] as i32;
            }
            acc += (le_f16(blk, 0) * a.d[b]) * isum as f32;
        }
        *o = acc;
    }
}

/// Q4_0 weights × 32-blocks of int8 activations.
pub fn matvec_q4_0(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = rows(w, row_bytes, r);
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(Q4_0_BLOCK_BYTES).enumerate() {
            let q = &a.qs[b * 32..b * 32 + 32];
            let mut isum = 0i32;
            for j in 0..16 {
                isum += (blk[2 + j] & 0xf) as i32 * q[j] as i32;
                isum += (blk[2 + j] >> 4) as i32 * q[j + 16] as i32;
            }
            isum -= 8 * a.sums[b];
            acc += (le_f16(blk, 0) * a.d[b]) * isum as f32;
        }
        *o = acc;
    }
}

/// Q4_1 weights × 32-blocks of int8 activations.
pub fn matvec_q4_1(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = rows(w, row_bytes, r);
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(Q4_1_BLOCK_BYTES).enumerate() {
            let q = &a.qs[b * 32..b * 32 + 32];
            let mut isum = 0i32;
            for j in 0..16 {
                isum += (blk[4 + j] & 0xf) as i32 * q[j] as i32;
                isum += (blk[4 + j] >> 4) as i32 * q[j + 16] as i32;
            }
            acc += (le_f16(blk, 0) * a.d[b]) * isum as f32
                + (le_f16(blk, 2) * a.d[b]) * a.sums[b] as f32;
        }
        *o = acc;
    }
}

/// Integer sum of `codes[j] * q[j]` for 2-bit codes in {0,1,2}, minus the activation sum:
/// the ternary dot product with the −1 offset removed.
#[inline]
fn ternary_isum(t: &[i8], q: &[i8]) -> i32 {
    let mut isum = 0i32;
    for j in 0..t.len() {
        isum += t[j] as i32 * q[j] as i32;
    }
    isum
}

/// TQ2_0 weights × 128-blocks of int8 activations.
pub fn matvec_tq2_0(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = rows(w, row_bytes, r);
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(TQ2_0_BLOCK_BYTES).enumerate() {
            let dw = le_f16(blk, 64);
            for h in 0..2 {
                // Half h of the block is bytes 32h..32h+32, weights 128h..128h+128:
                // weight 128h + 32l + m sits in bits 2l of byte 32h + m.
                let ab = 2 * b + h;
                let q = &a.qs[ab * 128..ab * 128 + 128];
                let mut isum = 0i32;
                for l in 0..4 {
                    for m in 0..32 {
                        let c = (blk[32 * h + m] >> (2 * l)) & 3;
                        isum += c as i32 * q[32 * l + m] as i32;
                    }
                }
                isum -= a.sums[ab];
                acc += (dw * a.d[ab]) * isum as f32;
            }
        }
        *o = acc;
    }
}

/// TQ1_0 weights × 128-blocks of int8 activations.
pub fn matvec_tq1_0(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let mut t = [0i8; 256];
    for (r, o) in out.iter_mut().enumerate() {
        let row = rows(w, row_bytes, r);
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(TQ1_0_BLOCK_BYTES).enumerate() {
            tq1_0_block_ternary(blk, &mut t);
            let dw = le_f16(blk, 52);
            for h in 0..2 {
                let ab = 2 * b + h;
                let isum =
                    ternary_isum(&t[128 * h..128 * h + 128], &a.qs[ab * 128..ab * 128 + 128]);
                acc += (dw * a.d[ab]) * isum as f32;
            }
        }
        *o = acc;
    }
}

/// I2_S weights × 128-blocks of int8 activations (result not multiplied by the tensor scale).
pub fn matvec_i2s(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = rows(w, row_bytes, r);
        let mut acc = 0f32;
        for (g, grp) in row.chunks_exact(32).enumerate() {
            let q = &a.qs[g * 128..g * 128 + 128];
            let mut isum = 0i32;
            for j in 0..32 {
                let byte = grp[j];
                isum += ((byte >> 6) & 3) as i32 * q[j] as i32;
                isum += ((byte >> 4) & 3) as i32 * q[j + 32] as i32;
                isum += ((byte >> 2) & 3) as i32 * q[j + 64] as i32;
                isum += (byte & 3) as i32 * q[j + 96] as i32;
            }
            isum -= a.sums[g];
            acc += a.d[g] * isum as f32;
        }
        *o = acc;
    }
}

/// F32 weights × f32 activations.
pub fn matvec_f32(w: &[u8], row_bytes: usize, x: &[f32], out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = rows(w, row_bytes, r);
        let mut acc = 0f32;
        for (j, &v) in x.iter().enumerate() {
            let b = &row[4 * j..4 * j + 4];
            acc += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * v;
        }
        *o = acc;
    }
}

/// F16 weights × f32 activations.
pub fn matvec_f16(w: &[u8], row_bytes: usize, x: &[f32], out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = rows(w, row_bytes, r);
        let mut acc = 0f32;
        for (j, &v) in x.iter().enumerate() {
            acc += le_f16(row, 2 * j) * v;
        }
        *o = acc;
    }
}

/// BF16 weights × f32 activations.
pub fn matvec_bf16(w: &[u8], row_bytes: usize, x: &[f32], out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = rows(w, row_bytes, r);
        let mut acc = 0f32;
        for (j, &v) in x.iter().enumerate() {
            acc += bf16_to_f32(le_u16(row, 2 * j)) * v;
        }
        *o = acc;
    }
}

/// The vector length and row count of a several-vector float product over `n` vectors in
/// `x_len` floats into `out_len` results, or `None` when there is nothing to compute.
pub(crate) fn gemm_shape(x_len: usize, out_len: usize, n: usize) -> Option<(usize, usize)> {
    if n == 0 || out_len < n {
        return None;
    }
    Some((x_len / n, out_len / n))
}

/// Float weights × several f32 vectors, one matrix-vector product per vector: `x` holds `n`
/// vectors and `out[t · rows + r] = row_r · x_t`.
fn gemm_each(
    matvec: fn(&[u8], usize, &[f32], &mut [f32]),
    w: &[u8],
    row_bytes: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) {
    let (k, rows) = match gemm_shape(x.len(), out.len(), n) {
        Some(shape) => shape,
        None => return,
    };
    for (t, o) in out.chunks_exact_mut(rows).enumerate() {
        matvec(w, row_bytes, &x[t * k..(t + 1) * k], o);
    }
}

/// F32 weights × several f32 vectors.
pub fn gemm_f32(w: &[u8], row_bytes: usize, x: &[f32], n: usize, out: &mut [f32]) {
    gemm_each(matvec_f32, w, row_bytes, x, n, out)
}

/// F16 weights × several f32 vectors.
pub fn gemm_f16(w: &[u8], row_bytes: usize, x: &[f32], n: usize, out: &mut [f32]) {
    gemm_each(matvec_f16, w, row_bytes, x, n, out)
}

/// BF16 weights × several f32 vectors.
pub fn gemm_bf16(w: &[u8], row_bytes: usize, x: &[f32], n: usize, out: &mut [f32]) {
    gemm_each(matvec_bf16, w, row_bytes, x, n, out)
}

/// The exact (erf) GELU in place (see [`crate::math::gelu_erf`]).
pub fn gelu_erf(x: &mut [f32]) {
    crate::math::gelu_erf(x)
}

/// Softmax numerators and their sum (see [`crate::math::exp_shifted`]).
pub fn exp_shifted(x: &mut [f32], max: f32, scale: f32) -> f32 {
    crate::math::exp_shifted(x, max, scale)
}

/// Dot product of an f16 vector (a cached key) with an f32 vector (a query).
pub fn dot_f16(k: &[u16], q: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (a, b) in k.iter().zip(q) {
        acc += f16_to_f32(*a) * b;
    }
    acc
}

/// `out += a · v` for an f16 vector `v` (a cached value).
pub fn axpy_f16(a: f32, v: &[u16], out: &mut [f32]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o += a * f16_to_f32(*x);
    }
}

/// Attention scores of `g = q.len() / hd` query heads (one after another) against
/// `n = k.len() / hd` cached f16 keys: `scores[j · n + p] = k_p · q_j`.
pub fn scores_f16(k: &[u16], q: &[f32], hd: usize, scores: &mut [f32]) {
    if hd == 0 {
        return;
    }
    let n = k.len() / hd;
    for (j, qj) in q.chunks_exact(hd).enumerate() {
        for (p, kp) in k.chunks_exact(hd).enumerate() {
            scores[j * n + p] = dot_f16(kp, qj);
        }
    }
}

/// Softmax-weighted values of `g = acc.len() / hd` heads over `n = v.len() / hd` cached f16
/// values: `acc_j += Σ_p w[j · n + p] · v_p`.
pub fn mix_f16(w: &[f32], v: &[u16], hd: usize, acc: &mut [f32]) {
    if hd == 0 {
        return;
    }
    let n = v.len() / hd;
    for (j, aj) in acc.chunks_exact_mut(hd).enumerate() {
        for (p, vp) in v.chunks_exact(hd).enumerate() {
            axpy_f16(w[j * n + p], vp, aj);
        }
    }
}

/// [`mix_f16`] restricted to columns `from..hd` of every head: the tail the SIMD kernels leave
/// after their full vectors.
pub(crate) fn mix_f16_columns(w: &[f32], v: &[u16], hd: usize, acc: &mut [f32], from: usize) {
    if hd == 0 {
        return;
    }
    let n = v.len() / hd;
    for (j, aj) in acc.chunks_exact_mut(hd).enumerate() {
        for (cc, a) in aj.iter_mut().enumerate().skip(from) {
            for p in 0..n {
                *a += w[j * n + p] * f16_to_f32(v[p * hd + cc]);
            }
        }
    }
}

/// Defines a matrix × several-vectors kernel that runs a matrix-vector kernel once per token:
/// the scalar reference for the fused multi-token (prefill) kernels, and the multi-token entry
/// of SIMD paths without a fused one. `out` is token-major: `out[t · rows + r]`.
macro_rules! gemm_from_matvec {
    ($vis:vis $name:ident, $matvec:path) => {
        #[doc = concat!("Multi-token kernel running `", stringify!($matvec), "` per token.")]
        $vis fn $name(
            w: &[u8],
            row_bytes: usize,
            a: &$crate::act::ActBatch<'_>,
            out: &mut [f32],
        ) {
            if a.n == 0 {
                return;
            }
            let rows = out.len() / a.n;
            if rows == 0 {
                return;
            }
            for (t, o) in out.chunks_exact_mut(rows).enumerate() {
                $matvec(w, row_bytes, &a.token(t), o);
            }
        }
    };
}
pub(crate) use gemm_from_matvec;

gemm_from_matvec!(pub gemm_q8_0, matvec_q8_0);
gemm_from_matvec!(pub gemm_q4_0, matvec_q4_0);
gemm_from_matvec!(pub gemm_q4_1, matvec_q4_1);
gemm_from_matvec!(pub gemm_tq1_0, matvec_tq1_0);
gemm_from_matvec!(pub gemm_tq2_0, matvec_tq2_0);
gemm_from_matvec!(pub gemm_i2s, matvec_i2s);
gemm_from_matvec!(pub gemm_q5_0, crate::q5::matvec_q5_0);
gemm_from_matvec!(pub gemm_q5_1, crate::q5::matvec_q5_1);
gemm_from_matvec!(pub gemm_q2_k, crate::q2_k::matvec);
gemm_from_matvec!(pub gemm_q3_k, crate::q3_k::matvec);
gemm_from_matvec!(pub gemm_q4_k, crate::q4_k::matvec);
gemm_from_matvec!(pub gemm_q5_k, crate::q5_k::matvec);
gemm_from_matvec!(pub gemm_q6_k, crate::q6_k::matvec);
gemm_from_matvec!(pub gemm_iq4_nl, crate::iq4::matvec_nl);
gemm_from_matvec!(pub gemm_iq4_xs, crate::iq4::matvec_xs);
