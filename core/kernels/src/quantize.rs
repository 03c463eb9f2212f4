//! Scalar reference quantizers from `f32` for the types `trillim quantize` writes, bit for bit
//! as llama.cpp's `quantize_row_*_ref` (Q4_1, TQ1_0, TQ2_0) and bitnet.cpp's `quantize_i2_s`.
//! Q8_0 and Q4_0 are in [`crate::formats`].

use crate::f16::f32_to_f16;
use crate::formats::{
    WeightType, I2S_TAIL_BYTES, Q4_1_BLOCK_BYTES, TQ1_0_BLOCK_BYTES, TQ2_0_BLOCK_BYTES,
};

pub use crate::formats::{quantize_row_q4_0, quantize_row_q8_0};

/// C's `lroundf` (half away from zero) for the small values the ternary quantizers see.
#[inline]
fn lround(v: f32) -> i32 {
    crate::act::round_i32(v)
}

#[inline]
fn abs(v: f32) -> f32 {
    f32::from_bits(v.to_bits() & 0x7fff_ffff)
}

fn abs_max(x: &[f32]) -> f32 {
    x.iter()
        .fold(0f32, |m, &v| if abs(v) > m { abs(v) } else { m })
}

/// Rounds `f32` to bfloat16 bits, ties to even; NaN stays a quiet NaN.
pub fn f32_to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        return ((bits >> 16) as u16) | 0x40;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// Quantizes `x` (a multiple of 32 long) to Q4_1 blocks: `d = (max − min) / 15`, `m = min`.
pub fn quantize_row_q4_1(x: &[f32], out: &mut [u8]) {
    for (xb, o) in x
        .chunks_exact(32)
        .zip(out.chunks_exact_mut(Q4_1_BLOCK_BYTES))
    {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in xb {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        o[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        o[2..4].copy_from_slice(&f32_to_f16(min).to_le_bytes());
        // `(int8_t)(x + 0.5f)` then `MIN(15, ·)`: truncation toward zero of a non-negative value.
        let q = |v: f32| -> u8 { (((v - min) * id + 0.5) as i8).min(15) as u8 };
        for j in 0..16 {
            o[4 + j] = q(xb[j]) | (q(xb[j + 16]) << 4);
        }
    }
}

/// Quantizes `x` (a multiple of 256 long) to TQ2_0 blocks: `d = max|x|`, codes
/// `round(x / d) + 1` four to a byte.
pub fn quantize_row_tq2_0(x: &[f32], out: &mut [u8]) {
    for (xb, o) in x
        .chunks_exact(256)
        .zip(out.chunks_exact_mut(TQ2_0_BLOCK_BYTES))
    {
        let d = abs_max(xb);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut t = [0i8; 256];
        for (t, &x) in t.iter_mut().zip(xb) {
            // In −1..=1: |x · id| ≤ 1.
            *t = lround(x * id) as i8;
        }
        crate::formats::tq2_0_block_from_ternary(&t, f32_to_f16(d).to_le_bytes(), o);
    }
}

/// Five ternary digits (most significant first) to the byte ggml stores (ceiling of q·256/243).
#[inline]
fn tq1_byte(q: u8) -> u8 {
    ((q as u16 * 256 + 242) / 243) as u8
}

/// Quantizes `x` (a multiple of 256 long) to TQ1_0 blocks: `d = max|x|`, five base-3 digits to
/// a byte in 48 bytes, four in the last 4.
pub fn quantize_row_tq1_0(x: &[f32], out: &mut [u8]) {
    for (xb, o) in x
        .chunks_exact(256)
        .zip(out.chunks_exact_mut(TQ1_0_BLOCK_BYTES))
    {
        let d = abs_max(xb);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let t = |v: f32| (lround(v * id) + 1) as u8;
        // 32 bytes of five digits over 160 weights.
        for m in 0..32 {
            let mut q = 0u8;
            for n in 0..5 {
                q = q.wrapping_mul(3).wrapping_add(t(xb[m + n * 32]));
            }
            o[m] = tq1_byte(q);
        }
        // 16 bytes of five digits over the next 80.
        let xs = &xb[160..];
        for m in 0..16 {
            let mut q = 0u8;
            for n in 0..5 {
                q = q.wrapping_mul(3).wrapping_add(t(xs[m + n * 16]));
            }
            o[32 + m] = tq1_byte(q);
        }
        // 4 bytes of four digits over the last 16 (shifted to the top trits).
        let xs = &xb[240..];
        for j in 0..4 {
            let mut q = 0u8;
            for m in 0..4 {
                q = q.wrapping_mul(3).wrapping_add(t(xs[j + m * 4]));
            }
            o[48 + j] = tq1_byte(q.wrapping_mul(3));
        }
        o[52..54].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    }
}

/// Quantizes a whole tensor `x` (a multiple of 128 long) to I2_S as bitnet.cpp does: one scale
/// `max|x|` in the tail, code 1 for `|x| < 1e-6`, else 2 for positive and 0 for negative
/// values. `out` is [`WeightType::tensor_bytes`] long.
pub fn quantize_i2s(x: &[f32], out: &mut [u8]) {
    let n = x.len();
    let scale = abs_max(x);
    for (g, o) in x.chunks_exact(128).zip(out[..n / 4].chunks_exact_mut(32)) {
        o.iter_mut().for_each(|b| *b = 0);
        for (j, &v) in g.iter().enumerate() {
            let q: u8 = if abs(v) < 1e-6 {
                1
            } else if v * scale > 0.0 {
                2
            } else {
                0
            };
            o[j % 32] |= q << (6 - 2 * (j / 32));
        }
    }
    let tail = &mut out[n / 4..n / 4 + I2S_TAIL_BYTES];
    tail.iter_mut().for_each(|b| *b = 0);
    tail[..4].copy_from_slice(&scale.to_le_bytes());
}

/// Whether [`quantize_row`] can write `ty` (I2_S is written per tensor by [`quantize_i2s`]).
pub fn can_quantize(ty: WeightType) -> bool {
    matches!(
        ty,
        WeightType::F32
            | WeightType::F16
            | WeightType::BF16
            | WeightType::Q8_0
            | WeightType::Q4_0
            | WeightType::Q4_1
            | WeightType::TQ1_0
            | WeightType::TQ2_0
    )
}

/// Quantizes one row `x` to `ty` into `out` ([`WeightType::row_bytes`] long); `false` when
/// `ty` is not one [`can_quantize`] names.
pub fn quantize_row(ty: WeightType, x: &[f32], out: &mut [u8]) -> bool {
    match ty {
        WeightType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        WeightType::F16 => {
            for (o, &v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&f32_to_f16(v).to_le_bytes());
            }
        }
        WeightType::BF16 => {
            for (o, &v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&f32_to_bf16(v).to_le_bytes());
            }
        }
        WeightType::Q8_0 => quantize_row_q8_0(x, out),
        WeightType::Q4_0 => quantize_row_q4_0(x, out),
        WeightType::Q4_1 => quantize_row_q4_1(x, out),
        WeightType::TQ1_0 => quantize_row_tq1_0(x, out),
        WeightType::TQ2_0 => quantize_row_tq2_0(x, out),
        _ => return false,
    }
    true
}
