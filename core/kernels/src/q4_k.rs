//! Q4_K: 256-weight super-blocks of 4-bit codes in eight 32-weight sub-blocks, each with a 6-bit
//! scale and a 6-bit minimum (`w = d · sc · q − dmin · m`), paired with Q8_K activations.
//!
//! Block layout (144 bytes): f16 `d`, f16 `dmin`, 12 bytes of packed scales and minima, then
//! 128 bytes of codes: byte `32c + l` holds weight `64c + l` in its low nibble and weight
//! `64c + 32 + l` in its high nibble.

use crate::act::ActQ8;
use crate::f16::le_f16;

/// Bytes of a Q4_K block.
pub const Q4_K_BLOCK_BYTES: usize = 144;

/// Unpacks the 12 scale bytes shared by Q4_K and Q5_K into eight 6-bit scales and eight 6-bit
/// minima (llama.cpp's `get_scale_min_k4` for every sub-block at once).
#[inline(always)]
pub fn unpack_scales(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0xf) | ((s[j] >> 6) << 4);
        m[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
    (sc, m)
}

/// Writes the 256 weights of one block.
pub fn dequantize(b: &[u8], out: &mut [f32]) {
    let d = le_f16(b, 0);
    let dmin = le_f16(b, 2);
    let (sc, m) = unpack_scales(&b[4..16]);
    let qs = &b[16..144];
    for c in 0..4 {
        let (d1, m1) = (d * sc[2 * c] as f32, dmin * m[2 * c] as f32);
        let (d2, m2) = (d * sc[2 * c + 1] as f32, dmin * m[2 * c + 1] as f32);
        for l in 0..32 {
            let q = qs[32 * c + l];
            out[64 * c + l] = d1 * (q & 0xf) as f32 - m1;
            out[64 * c + 32 + l] = d2 * (q >> 4) as f32 - m2;
        }
    }
}

/// `Σ m_j · sums_j` over the eight 32-blocks of a super-block.
#[inline(always)]
pub(crate) fn mins_dot(m: &[u8; 8], sums: &[i32]) -> i32 {
    m.iter().zip(sums).map(|(&m, &s)| m as i32 * s).sum()
}

/// `acc + (d · da) · Σ sc·(q·a) − (dmin · da) · Σ m·(Σa)`: the per-block float step every
/// Q4_K/Q5_K kernel takes in this order, so that all paths agree bit for bit.
#[inline(always)]
pub(crate) fn block_step(acc: f32, d: f32, dmin: f32, da: f32, sumi: i32, summ: i32) -> f32 {
    acc + ((d * da) * sumi as f32 - (dmin * da) * summ as f32)
}

/// Scalar reference: Q4_K rows × Q8_K activations (32-blocks whose scale is shared by each 256;
/// `a.d[8b]` is super-block `b`'s scale and `a.sums` the 32-block code sums).
pub fn matvec(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(Q4_K_BLOCK_BYTES).enumerate() {
            let (sc, m) = unpack_scales(&blk[4..16]);
            let qs = &blk[16..];
            let q8 = &a.qs[256 * b..256 * b + 256];
            let (mut sumi, mut summ) = (0i32, 0i32);
            for c in 0..4 {
                let (mut lo, mut hi) = (0i32, 0i32);
                for l in 0..32 {
                    let q = qs[32 * c + l];
                    lo += (q & 0xf) as i32 * q8[64 * c + l] as i32;
                    hi += (q >> 4) as i32 * q8[64 * c + 32 + l] as i32;
                }
                sumi += sc[2 * c] as i32 * lo + sc[2 * c + 1] as i32 * hi;
            }
            summ += mins_dot(&m, &a.sums[8 * b..8 * b + 8]);
            acc = block_step(acc, le_f16(blk, 0), le_f16(blk, 2), a.d[8 * b], sumi, summ);
        }
        *o = acc;
    }
}
