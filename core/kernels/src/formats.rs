//! Byte layouts of the supported weight types (ggml's, plus bitnet.cpp's I2_S) and their scalar
//! dequantizers, which are the reference every kernel is checked against.

use crate::f16::{bf16_to_f32, le_f16, le_u16};

/// A weight storage type, numbered as in GGUF's tensor table.
// ggml's names (`Q4_K`, `IQ4_XS`) are kept: they are what users and files call the formats.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 32-weight blocks: f16 scale, 32 × i8.
    Q8_0,
    /// 32-weight blocks: f16 scale, 16 bytes of 4-bit codes (code − 8).
    Q4_0,
    /// 32-weight blocks: f16 scale, f16 minimum, 16 bytes of 4-bit codes.
    Q4_1,
    /// 256-weight blocks of ternary digits packed five to a byte in base 3, f16 scale.
    TQ1_0,
    /// 256-weight blocks of 2-bit ternary codes, f16 scale.
    TQ2_0,
    /// bitnet.cpp's I2_S: 2-bit codes in 128-weight groups and one f32 scale per tensor.
    I2S,
    /// 32-weight blocks: f16 scale, 32 high bits, 16 bytes of low nibbles (code − 16).
    Q5_0,
    /// 32-weight blocks: f16 scale, f16 minimum, 32 high bits, 16 bytes of low nibbles.
    Q5_1,
    /// 256-weight super-blocks of 2-bit codes with 4-bit scales and minima per 16 weights.
    Q2_K,
    /// 256-weight super-blocks of 3-bit codes with 6-bit scales per 16 weights.
    Q3_K,
    /// 256-weight super-blocks of 4-bit codes with 6-bit scales and minima per 32 weights.
    Q4_K,
    /// 256-weight super-blocks of 5-bit codes with 6-bit scales and minima per 32 weights.
    Q5_K,
    /// 256-weight super-blocks of 6-bit codes with int8 scales per 16 weights.
    Q6_K,
    /// 32-weight blocks of 4-bit indices into a fixed non-linear table, f16 scale.
    IQ4_NL,
    /// 256-weight super-blocks of IQ4_NL indices with 6-bit scales per 32 weights.
    IQ4_XS,
}

/// Bytes of a TQ2_0 block (64 code bytes, f16 scale).
pub const TQ2_0_BLOCK_BYTES: usize = 66;
/// Bytes of a TQ1_0 block (48 base-3 bytes, 4 base-3 bytes, f16 scale).
pub const TQ1_0_BLOCK_BYTES: usize = 54;
/// Bytes of a Q8_0 block.
pub const Q8_0_BLOCK_BYTES: usize = 34;
/// Bytes of a Q4_0 block.
pub const Q4_0_BLOCK_BYTES: usize = 18;
/// Bytes of a Q4_1 block.
pub const Q4_1_BLOCK_BYTES: usize = 20;
pub use crate::iq4::{IQ4_NL_BLOCK_BYTES, IQ4_XS_BLOCK_BYTES};
pub use crate::q2_k::Q2_K_BLOCK_BYTES;
pub use crate::q3_k::Q3_K_BLOCK_BYTES;
pub use crate::q4_k::Q4_K_BLOCK_BYTES;
pub use crate::q5::{Q5_0_BLOCK_BYTES, Q5_1_BLOCK_BYTES};
pub use crate::q5_k::Q5_K_BLOCK_BYTES;
pub use crate::q6_k::Q6_K_BLOCK_BYTES;
/// Bytes that follow an I2_S tensor's codes (its first four hold the f32 scale).
pub const I2S_TAIL_BYTES: usize = 32;

impl WeightType {
    /// Maps a GGUF/ggml type id to a supported type.
    pub fn from_ggml(id: u32) -> Option<WeightType> {
        Some(match id {
            0 => WeightType::F32,
            1 => WeightType::F16,
            2 => WeightType::Q4_0,
            3 => WeightType::Q4_1,
            8 => WeightType::Q8_0,
            30 => WeightType::BF16,
            34 => WeightType::TQ1_0,
            35 => WeightType::TQ2_0,
            36 => WeightType::I2S,
            6 => WeightType::Q5_0,
            7 => WeightType::Q5_1,
            10 => WeightType::Q2_K,
            11 => WeightType::Q3_K,
            12 => WeightType::Q4_K,
            13 => WeightType::Q5_K,
            14 => WeightType::Q6_K,
            20 => WeightType::IQ4_NL,
            23 => WeightType::IQ4_XS,
            _ => return None,
        })
    }

    /// The GGUF/ggml type id.
    pub fn ggml_id(self) -> u32 {
        match self {
            WeightType::F32 => 0,
            WeightType::F16 => 1,
            WeightType::Q4_0 => 2,
            WeightType::Q4_1 => 3,
            WeightType::Q8_0 => 8,
            WeightType::BF16 => 30,
            WeightType::TQ1_0 => 34,
            WeightType::TQ2_0 => 35,
            WeightType::I2S => 36,
            WeightType::Q5_0 => 6,
            WeightType::Q5_1 => 7,
            WeightType::Q2_K => 10,
            WeightType::Q3_K => 11,
            WeightType::Q4_K => 12,
            WeightType::Q5_K => 13,
            WeightType::Q6_K => 14,
            WeightType::IQ4_NL => 20,
            WeightType::IQ4_XS => 23,
        }
    }

    /// Lower-case name as llama.cpp prints it.
    pub fn name(self) -> &'static str {
        match self {
            WeightType::F32 => "f32",
            WeightType::F16 => "f16",
            WeightType::BF16 => "bf16",
            WeightType::Q8_0 => "q8_0",
            WeightType::Q4_0 => "q4_0",
            WeightType::Q4_1 => "q4_1",
            WeightType::TQ1_0 => "tq1_0",
            WeightType::TQ2_0 => "tq2_0",
            WeightType::I2S => "i2_s",
            WeightType::Q5_0 => "q5_0",
            WeightType::Q5_1 => "q5_1",
            WeightType::Q2_K => "q2_K",
            WeightType::Q3_K => "q3_K",
            WeightType::Q4_K => "q4_K",
            WeightType::Q5_K => "q5_K",
            WeightType::Q6_K => "q6_K",
            WeightType::IQ4_NL => "iq4_nl",
            WeightType::IQ4_XS => "iq4_xs",
        }
    }

    /// Number of weights per block (rows must be a multiple of it).
    pub fn block_len(self) -> usize {
        match self {
            WeightType::F32 | WeightType::F16 | WeightType::BF16 => 1,
            WeightType::Q8_0
            | WeightType::Q4_0
            | WeightType::Q4_1
            | WeightType::Q5_0
            | WeightType::Q5_1
            | WeightType::IQ4_NL => 32,
            WeightType::TQ1_0 | WeightType::TQ2_0 => 256,
            WeightType::I2S => 128,
            WeightType::Q2_K
            | WeightType::Q3_K
            | WeightType::Q4_K
            | WeightType::Q5_K
            | WeightType::Q6_K
            | WeightType::IQ4_XS => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            WeightType::F32 => 4,
            WeightType::F16 | WeightType::BF16 => 2,
            WeightType::Q8_0 => Q8_0_BLOCK_BYTES,
            WeightType::Q4_0 => Q4_0_BLOCK_BYTES,
            WeightType::Q4_1 => Q4_1_BLOCK_BYTES,
            WeightType::TQ1_0 => TQ1_0_BLOCK_BYTES,
            WeightType::TQ2_0 => TQ2_0_BLOCK_BYTES,
            WeightType::I2S => 32,
            WeightType::Q5_0 => Q5_0_BLOCK_BYTES,
            WeightType::Q5_1 => Q5_1_BLOCK_BYTES,
            WeightType::Q2_K => Q2_K_BLOCK_BYTES,
            WeightType::Q3_K => Q3_K_BLOCK_BYTES,
            WeightType::Q4_K => Q4_K_BLOCK_BYTES,
            WeightType::Q5_K => Q5_K_BLOCK_BYTES,
            WeightType::Q6_K => Q6_K_BLOCK_BYTES,
            WeightType::IQ4_NL => IQ4_NL_BLOCK_BYTES,
            WeightType::IQ4_XS => IQ4_XS_BLOCK_BYTES,
        }
    }

    /// Bytes of one row of `n` weights, or `None` if `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if n % self.block_len() != 0 {
            return None;
        }
        (n / self.block_len()).checked_mul(self.block_bytes())
    }

    /// Bytes of a whole tensor of `n` weights (I2_S adds its 32-byte scale tail).
    pub fn tensor_bytes(self, n: usize) -> Option<usize> {
        let body = self.row_bytes(n)?;
        match self {
            WeightType::I2S => body.checked_add(I2S_TAIL_BYTES),
            _ => Some(body),
        }
    }

    /// True for the ternary types whose kernels take 128-weight activation blocks.
    pub fn is_ternary(self) -> bool {
        matches!(
            self,
            WeightType::TQ1_0 | WeightType::TQ2_0 | WeightType::I2S
        )
    }

    /// Activation block length the type's kernel expects (0: kernel takes `f32` activations).
    pub fn act_block(self) -> usize {
        match self {
            WeightType::F32 | WeightType::F16 | WeightType::BF16 => 0,
            WeightType::TQ1_0 | WeightType::TQ2_0 | WeightType::I2S => 128,
            // Everything else takes 32-blocks: Q8_0 activations for the 32-weight formats, and
            // Q8_K activations (one scale per 256, code sums per 32) for the super-block formats.
            _ => 32,
        }
    }

    /// Activation elements sharing one scale (a multiple of [`WeightType::act_block`]): 256 for
    /// the types llama.cpp pairs with Q8_K activations, the block length otherwise.
    pub fn act_group(self) -> usize {
        match self {
            WeightType::TQ1_0
            | WeightType::TQ2_0
            | WeightType::Q2_K
            | WeightType::Q3_K
            | WeightType::Q4_K
            | WeightType::Q5_K
            | WeightType::Q6_K
            | WeightType::IQ4_XS => 256,
            _ => self.act_block(),
        }
    }

    /// Every supported type, in GGUF id order.
    pub const ALL: [WeightType; 18] = [
        WeightType::F32,
        WeightType::F16,
        WeightType::Q4_0,
        WeightType::Q4_1,
        WeightType::Q5_0,
        WeightType::Q5_1,
        WeightType::Q8_0,
        WeightType::Q2_K,
        WeightType::Q3_K,
        WeightType::Q4_K,
        WeightType::Q5_K,
        WeightType::Q6_K,
        WeightType::IQ4_NL,
        WeightType::IQ4_XS,
        WeightType::BF16,
        WeightType::TQ1_0,
        WeightType::TQ2_0,
        WeightType::I2S,
    ];
}

/// Reads the per-tensor scale of an I2_S tensor whose codes take `n / 4` bytes.
pub fn i2s_scale(tensor: &[u8], n: usize) -> f32 {
    let o = n / 4;
    f32::from_le_bytes([tensor[o], tensor[o + 1], tensor[o + 2], tensor[o + 3]])
}

/// Decodes the ternary digit `n` (0..5) of a TQ1_0 byte, exactly as ggml does.
#[inline]
pub fn tq1_digit(byte: u8, n: usize) -> i8 {
    const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];
    let q = byte.wrapping_mul(POW3[n]);
    (((q as u16) * 3) >> 8) as i8 - 1
}

/// Writes the ternary values (−1, 0, +1) of one TQ1_0 block in weight order.
pub fn tq1_0_block_ternary(block: &[u8], out: &mut [i8]) {
    let qs = &block[..48];
    let qh = &block[48..52];
    let mut k = 0;
    for n in 0..5 {
        for &b in &qs[..32] {
            out[k] = tq1_digit(b, n);
            k += 1;
        }
    }
    for n in 0..5 {
        for &b in &qs[32..48] {
            out[k] = tq1_digit(b, n);
            k += 1;
        }
    }
    for n in 0..4 {
        for &b in qh {
            out[k] = tq1_digit(b, n);
            k += 1;
        }
    }
}

/// Writes the ternary values of one TQ2_0 block in weight order.
pub fn tq2_0_block_ternary(block: &[u8], out: &mut [i8]) {
    let qs = &block[..64];
    for j in 0..2 {
        for l in 0..4 {
            for m in 0..32 {
                out[j * 128 + l * 32 + m] = ((qs[j * 32 + m] >> (2 * l)) & 3) as i8 - 1;
            }
        }
    }
}

/// Writes one TQ2_0 block (`out`, 66 bytes) of the 256 ternary values `t` (weight order) and
/// the f16 scale bits `scale`: the inverse of [`tq2_0_block_ternary`].
pub fn tq2_0_block_from_ternary(t: &[i8], scale: [u8; 2], out: &mut [u8]) {
    for j in 0..2 {
        for m in 0..32 {
            let mut q = 0u8;
            for l in 0..4 {
                q |= (((t[j * 128 + l * 32 + m] as i32 + 1) & 3) as u8) << (2 * l);
            }
            out[j * 32 + m] = q;
        }
    }
    out[64..66].copy_from_slice(&scale);
}

/// Writes the ternary values of one 128-weight I2_S group (32 bytes) in weight order.
pub fn i2s_group_ternary(group: &[u8], out: &mut [i8]) {
    for j in 0..32 {
        let b = group[j];
        out[j] = ((b >> 6) & 3) as i8 - 1;
        out[j + 32] = ((b >> 4) & 3) as i8 - 1;
        out[j + 64] = ((b >> 2) & 3) as i8 - 1;
        out[j + 96] = (b & 3) as i8 - 1;
    }
}

/// Quantizes `x` (a multiple of 32 long) to Q8_0 blocks in `out`, as ggml's reference
/// quantizer: `d = max|x| / 127`, `q = round(x / d)`.
pub fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) {
    for (xb, o) in x
        .chunks_exact(32)
        .zip(out.chunks_exact_mut(Q8_0_BLOCK_BYTES))
    {
        let amax = xb.iter().fold(0f32, |m, &v| {
            let a = if v < 0.0 { -v } else { v };
            if a > m {
                a
            } else {
                m
            }
        });
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        o[..2].copy_from_slice(&crate::f16::f32_to_f16(d).to_le_bytes());
        for j in 0..32 {
            o[2 + j] = crate::act::round_i32(xb[j] * id).clamp(-127, 127) as i8 as u8;
        }
    }
}

/// Quantizes `x` (a multiple of 32 long) to Q4_0 blocks in `out`, as ggml's reference
/// quantizer: the value of largest magnitude maps to −8.
pub fn quantize_row_q4_0(x: &[f32], out: &mut [u8]) {
    for (xb, o) in x
        .chunks_exact(32)
        .zip(out.chunks_exact_mut(Q4_0_BLOCK_BYTES))
    {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in xb {
            let a = if v < 0.0 { -v } else { v };
            if a > amax {
                amax = a;
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        o[..2].copy_from_slice(&crate::f16::f32_to_f16(d).to_le_bytes());
        let q = |v: f32| -> u8 {
            let t = v * id + 8.5;
            let t = if t < 0.0 { 0 } else { t as i32 };
            t.min(15) as u8
        };
        for j in 0..16 {
            o[2 + j] = q(xb[j]) | (q(xb[j + 16]) << 4);
        }
    }
}

/// Dequantizes one row of `out.len()` weights of type `ty` from `row` (scalar reference).
///
/// For I2_S, `i2s_scale` is the tensor's scale (see [`i2s_scale`]); other types ignore it.
pub fn dequantize_row(ty: WeightType, row: &[u8], out: &mut [f32], i2s_scale: f32) {
    let n = out.len();
    match ty {
        WeightType::F32 => {
            for (i, o) in out.iter_mut().enumerate() {
                let b = &row[4 * i..4 * i + 4];
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        WeightType::F16 => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = le_f16(row, 2 * i);
            }
        }
        WeightType::BF16 => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = bf16_to_f32(le_u16(row, 2 * i));
            }
        }
        WeightType::Q8_0 => {
            for (b, o) in row
                .chunks_exact(Q8_0_BLOCK_BYTES)
                .zip(out.chunks_exact_mut(32))
            {
                let d = le_f16(b, 0);
                for j in 0..32 {
                    o[j] = (b[2 + j] as i8) as f32 * d;
                }
            }
        }
        WeightType::Q4_0 => {
            for (b, o) in row
                .chunks_exact(Q4_0_BLOCK_BYTES)
                .zip(out.chunks_exact_mut(32))
            {
                let d = le_f16(b, 0);
                for j in 0..16 {
                    o[j] = ((b[2 + j] & 0xf) as i32 - 8) as f32 * d;
                    o[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        WeightType::Q4_1 => {
            for (b, o) in row
                .chunks_exact(Q4_1_BLOCK_BYTES)
                .zip(out.chunks_exact_mut(32))
            {
                let d = le_f16(b, 0);
                let m = le_f16(b, 2);
                for j in 0..16 {
                    o[j] = (b[4 + j] & 0xf) as f32 * d + m;
                    o[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
                }
            }
        }
        WeightType::TQ1_0 | WeightType::TQ2_0 => {
            let bytes = ty.block_bytes();
            let mut t = [0i8; 256];
            for (b, o) in row.chunks_exact(bytes).zip(out.chunks_exact_mut(256)) {
                if ty == WeightType::TQ1_0 {
                    tq1_0_block_ternary(b, &mut t);
                } else {
                    tq2_0_block_ternary(b, &mut t);
                }
                let d = le_f16(b, bytes - 2);
                for j in 0..256 {
                    o[j] = t[j] as f32 * d;
                }
            }
        }
        WeightType::I2S => {
            let mut t = [0i8; 128];
            for (g, o) in row.chunks_exact(32).zip(out.chunks_exact_mut(128)) {
                i2s_group_ternary(g, &mut t);
                for j in 0..128 {
                    o[j] = t[j] as f32 * i2s_scale;
                }
            }
        }
        WeightType::Q5_0 => each_block(row, out, ty, crate::q5::dequantize_q5_0),
        WeightType::Q5_1 => each_block(row, out, ty, crate::q5::dequantize_q5_1),
        WeightType::Q2_K => each_block(row, out, ty, crate::q2_k::dequantize),
        WeightType::Q3_K => each_block(row, out, ty, crate::q3_k::dequantize),
        WeightType::Q4_K => each_block(row, out, ty, crate::q4_k::dequantize),
        WeightType::Q5_K => each_block(row, out, ty, crate::q5_k::dequantize),
        WeightType::Q6_K => each_block(row, out, ty, crate::q6_k::dequantize),
        WeightType::IQ4_NL => each_block(row, out, ty, crate::iq4::dequantize_nl),
        WeightType::IQ4_XS => each_block(row, out, ty, crate::iq4::dequantize_xs),
    }
    debug_assert_eq!(n % ty.block_len(), 0);
}

/// Runs a one-block dequantizer over every block of `row`.
fn each_block(row: &[u8], out: &mut [f32], ty: WeightType, f: fn(&[u8], &mut [f32])) {
    for (b, o) in row
        .chunks_exact(ty.block_bytes())
        .zip(out.chunks_exact_mut(ty.block_len()))
    {
        f(b, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tq1_digits_decode_base3() {
        // 5 ternary digits t0..t4 (values 0..2) are stored as ceil(v * 256 / 243) with
        // v = sum t_i 3^(4-i); digit n is read back by multiplying by 3^n.
        for v in 0u32..243 {
            let byte = ((v * 256 + 242) / 243) as u8;
            let mut rest = v;
            let mut digits = [0i8; 5];
            for i in (0..5).rev() {
                digits[i] = (rest % 3) as i8 - 1;
                rest /= 3;
            }
            for (n, &want) in digits.iter().enumerate() {
                assert_eq!(tq1_digit(byte, n), want, "v={v} n={n}");
            }
        }
    }

    #[test]
    fn requantized_rows_reconstruct() {
        let x: [f32; 64] = core::array::from_fn(|i| ((i * 29 % 31) as f32 - 15.0) * 0.37);
        let mut b8 = [0u8; 68];
        let mut b4 = [0u8; 36];
        quantize_row_q8_0(&x, &mut b8);
        quantize_row_q4_0(&x, &mut b4);
        let (mut y8, mut y4) = ([0f32; 64], [0f32; 64]);
        dequantize_row(WeightType::Q8_0, &b8, &mut y8, 1.0);
        dequantize_row(WeightType::Q4_0, &b4, &mut y4, 1.0);
        for i in 0..64 {
            assert!((x[i] - y8[i]).abs() < 0.03, "q8_0 {i}");
            // Q4_0 is asymmetric (−8..7): the far side of the range can be off by one step.
            assert!((x[i] - y4[i]).abs() < 0.75, "q4_0 {i}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(WeightType::TQ2_0.row_bytes(256), Some(66));
        assert_eq!(WeightType::I2S.tensor_bytes(256 * 256), Some(16384 + 32));
        assert_eq!(WeightType::Q4_1.row_bytes(33), None);
        for id in 0..64 {
            if let Some(t) = WeightType::from_ggml(id) {
                assert_eq!(t.ggml_id(), id);
            }
        }
    }
}
