//! AVX-512 VNNI multi-token (prefill) kernels: one weight matrix times several token vectors.
//!
//! A pass takes a tile of 16 rows. Each weight block of those rows is decoded once into
//! *codes*: unsigned bytes (2-bit and base-3 ternary codes, nibbles, or int8 weights + 128) in
//! "row-interleaved" order, where `codes[k]` holds, in 32-bit lane `r`, row `r`'s codes for the
//! block's weights `4k .. 4k + 4`. For every token, `vpdpbusd` of `codes[k]` with the token's
//! four activations at `4k` broadcast to all lanes then adds the 16 rows' partial dot products
//! lane-wise, so a block's integer sums need no horizontal reduction, and the decoded block is
//! reused by every token of the batch from L1.
//!
//! Integer block sums are exact and each (row, token) `f32` accumulator adds the blocks in the
//! scalar reference's order with the same products (lane-wise), so the results are
//! bit-identical to [`crate::scalar`]'s `gemm_*` (and to the matrix-vector kernels).

// Intrinsics are `unsafe fn` on older compilers and safe inside `#[target_feature]` functions
// on newer ones; this module is only built with the latter (Rust 1.89+), but keeps the blocks
// for clarity about which operations read memory.
#![allow(unused_unsafe)]
#![allow(clippy::incompatible_msrv)]

use core::arch::x86_64::*;

use crate::act::ActBatch;
use crate::formats::{
    IQ4_NL_BLOCK_BYTES, Q4_0_BLOCK_BYTES, Q4_1_BLOCK_BYTES, Q5_0_BLOCK_BYTES, Q5_1_BLOCK_BYTES,
    Q8_0_BLOCK_BYTES, TQ1_0_BLOCK_BYTES, TQ2_0_BLOCK_BYTES,
};
use crate::x86::{tq1_digit512, triple512};

/// Rows per tile (one per 32-bit lane of a 512-bit register).
pub(crate) const ROWS: usize = 16;
/// Tokens whose `f32` accumulators a pass keeps on the stack.
pub(crate) const TOKENS: usize = 64;

// Weight formats, as a const generic parameter of the shared driver.
const TQ2: u8 = 0;
const I2S: u8 = 1;
const TQ1: u8 = 2;
const Q8: u8 = 3;
const Q40: u8 = 4;
const Q41: u8 = 5;
const Q50: u8 = 6;
const Q51: u8 = 7;
const IQ4NL: u8 = 8;

/// Bytes of one weight block of format `F` in a row.
const fn block_bytes(f: u8) -> usize {
    match f {
        TQ2 => TQ2_0_BLOCK_BYTES,
        I2S => 32,
        TQ1 => TQ1_0_BLOCK_BYTES,
        Q8 => Q8_0_BLOCK_BYTES,
        Q40 => Q4_0_BLOCK_BYTES,
        Q50 => Q5_0_BLOCK_BYTES,
        Q51 => Q5_1_BLOCK_BYTES,
        IQ4NL => IQ4_NL_BLOCK_BYTES,
        _ => Q4_1_BLOCK_BYTES,
    }
}

/// Activation blocks per weight block.
const fn act_blocks(f: u8) -> usize {
    match f {
        TQ2 | TQ1 => 2,
        _ => 1,
    }
}

/// Code vectors (groups of four weights) per activation block: 128 or 32 weights.
const fn groups(f: u8) -> usize {
    match f {
        TQ2 | I2S | TQ1 => 32,
        _ => 8,
    }
}

/// Pointers to rows `r .. r + 16` of `w`, repeating the last row past `rows`.
#[inline(always)]
pub(crate) fn row_ptrs16(w: &[u8], row_bytes: usize, rows: usize, r: usize) -> [*const u8; ROWS] {
    let base = w.as_ptr();
    let last = rows - 1;
    // `wrapping_add` keeps this safe; the offsets stay inside `w` (row ≤ last).
    core::array::from_fn(|i| base.wrapping_add(core::cmp::min(r + i, last) * row_bytes))
}

/// Loads 32 bytes at `p[i] + off` for each of the 16 rows and transposes them by 32-bit words:
/// lane `i` of the result's vector `j` holds bytes `4j .. 4j + 4` of row `i`.
///
/// # Safety
/// Each `p[i] + off .. + 32` is readable; the CPU supports AVX-512 F/BW.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
pub(crate) unsafe fn load_t16x8(p: &[*const u8; ROWS], off: usize) -> [__m512i; 8] {
    // SAFETY: the caller guarantees 32 readable bytes at every `p[i] + off`.
    let ld = |i: usize| unsafe { _mm256_loadu_si256(p[i].add(off) as *const __m256i) };
    // a[i] = [row i | row i + 4] for i < 4, [row i + 4 | row i + 8] for 4 ≤ i < 8.
    let pair = |x: usize, y: usize| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(ld(x)), ld(y));
    let a = [
        pair(0, 4),
        pair(1, 5),
        pair(2, 6),
        pair(3, 7),
        pair(8, 12),
        pair(9, 13),
        pair(10, 14),
        pair(11, 15),
    ];
    // 4 × 4 transposes inside every 128-bit lane: u[4g + c] lane k holds word c (k even) or
    // c + 4 (k odd) of rows 8g + 4(k / 2) .. + 4.
    let mut u = [_mm512_setzero_si512(); 8];
    for g in 0..2 {
        let a = &a[4 * g..4 * g + 4];
        let t0 = _mm512_unpacklo_epi32(a[0], a[1]);
        let t1 = _mm512_unpackhi_epi32(a[0], a[1]);
        let t2 = _mm512_unpacklo_epi32(a[2], a[3]);
        let t3 = _mm512_unpackhi_epi32(a[2], a[3]);
        u[4 * g] = _mm512_unpacklo_epi64(t0, t2);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t0, t2);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t1, t3);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t1, t3);
    }
    let mut y = [_mm512_setzero_si512(); 8];
    for c in 0..4 {
        y[c] = _mm512_shuffle_i32x4::<0b10_00_10_00>(u[c], u[4 + c]);
        y[c + 4] = _mm512_shuffle_i32x4::<0b11_01_11_01>(u[c], u[4 + c]);
    }
    y
}

/// Like [`load_t16x8`] for 16 bytes per row: four vectors.
///
/// # Safety
/// Each `p[i] + off .. + 16` is readable; the CPU supports AVX-512 F/BW.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
unsafe fn load_t16x4(p: &[*const u8; ROWS], off: usize) -> [__m512i; 4] {
    // SAFETY: the caller guarantees 16 readable bytes at every `p[i] + off`.
    let ld = |i: usize| unsafe { _mm_loadu_si128(p[i].add(off) as *const __m128i) };
    // a[i] = [row i | row i + 4 | row i + 8 | row i + 12].
    let a: [__m512i; 4] = core::array::from_fn(|i| {
        let v = _mm512_castsi128_si512(ld(i));
        let v = _mm512_inserti32x4::<1>(v, ld(i + 4));
        let v = _mm512_inserti32x4::<2>(v, ld(i + 8));
        _mm512_inserti32x4::<3>(v, ld(i + 12))
    });
    let t0 = _mm512_unpacklo_epi32(a[0], a[1]);
    let t1 = _mm512_unpackhi_epi32(a[0], a[1]);
    let t2 = _mm512_unpacklo_epi32(a[2], a[3]);
    let t3 = _mm512_unpackhi_epi32(a[2], a[3]);
    [
        _mm512_unpacklo_epi64(t0, t2),
        _mm512_unpackhi_epi64(t0, t2),
        _mm512_unpacklo_epi64(t1, t3),
        _mm512_unpackhi_epi64(t1, t3),
    ]
}

/// The little-endian f16 at `p[i] + off` of each row as 16 `f32` lanes.
///
/// # Safety
/// Each `p[i] + off .. + 2` is readable; the CPU supports AVX-512 F.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
pub(crate) unsafe fn f16x16(p: &[*const u8; ROWS], off: usize) -> __m512 {
    // SAFETY: the caller guarantees two readable bytes at every `p[i] + off`.
    let h: [u16; ROWS] =
        core::array::from_fn(|i| unsafe { (p[i].add(off) as *const u16).read_unaligned() });
    // SAFETY: `h` is 32 bytes.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(h.as_ptr() as *const __m256i) })
}

/// Decodes the weight block at byte `off` of the 16 rows into `codes` (see the module docs):
/// `act_blocks(F) · groups(F)` vectors, activation block `s` at `codes[s · groups(F)..]`.
///
/// # Safety
/// Every row holds a whole block at `off`; the CPU supports AVX-512 F/BW.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
unsafe fn decode<const F: u8>(p: &[*const u8; ROWS], off: usize, codes: &mut [__m512i; 64]) {
    let m3 = _mm512_set1_epi8(3);
    let m4 = _mm512_set1_epi8(0xf);
    // SAFETY: every load reads inside the block at `off` (caller's contract).
    unsafe {
        match F {
            TQ2 => {
                // Half h: byte m holds weights 32l + m (l = 0..4) in bits 2l.
                for h in 0..2 {
                    let y = load_t16x8(p, off + 32 * h);
                    for (j, &y) in y.iter().enumerate() {
                        codes[32 * h + j] = _mm512_and_si512(y, m3);
                        codes[32 * h + 8 + j] = _mm512_and_si512(_mm512_srli_epi16::<2>(y), m3);
                        codes[32 * h + 16 + j] = _mm512_and_si512(_mm512_srli_epi16::<4>(y), m3);
                        codes[32 * h + 24 + j] = _mm512_and_si512(_mm512_srli_epi16::<6>(y), m3);
                    }
                }
            }
            I2S => {
                // Byte m holds weights 32l + m in bits 6 − 2l.
                let y = load_t16x8(p, off);
                for (j, &y) in y.iter().enumerate() {
                    codes[j] = _mm512_and_si512(_mm512_srli_epi16::<6>(y), m3);
                    codes[8 + j] = _mm512_and_si512(_mm512_srli_epi16::<4>(y), m3);
                    codes[16 + j] = _mm512_and_si512(_mm512_srli_epi16::<2>(y), m3);
                    codes[24 + j] = _mm512_and_si512(y, m3);
                }
            }
            TQ1 => {
                // qs[0..32]: digit n of byte m is weight 32n + m.
                let y = load_t16x8(p, off);
                for (j, &y) in y.iter().enumerate() {
                    let mut x = y;
                    for n in 0..5 {
                        codes[8 * n + j] = tq1_digit512(x);
                        x = triple512(x);
                    }
                }
                // qs[32..48]: digit n of byte m is weight 160 + 16n + m.
                let z = load_t16x4(p, off + 32);
                for (j, &z) in z.iter().enumerate() {
                    let mut x = z;
                    for n in 0..5 {
                        codes[40 + 4 * n + j] = tq1_digit512(x);
                        x = triple512(x);
                    }
                }
                // qh[0..4]: digit n of byte m is weight 240 + 4n + m.
                let h: [u32; ROWS] =
                    core::array::from_fn(|i| (p[i].add(off + 48) as *const u32).read_unaligned());
                let mut x = _mm512_loadu_si512(h.as_ptr() as *const _);
                for n in 0..4 {
                    codes[60 + n] = tq1_digit512(x);
                    x = triple512(x);
                }
            }
            Q8 => {
                // w + 128 as unsigned bytes; the kernel subtracts 128 · Σq.
                let y = load_t16x8(p, off + 2);
                let x80 = _mm512_set1_epi8(-128);
                for (j, &y) in y.iter().enumerate() {
                    codes[j] = _mm512_xor_si512(y, x80);
                }
            }
            _ => {
                // Byte m: weight m in the low nibble, weight 16 + m in the high one.
                let qo = match F {
                    Q41 => 4,
                    Q50 => 6,
                    Q51 => 8,
                    _ => 2,
                };
                let z = load_t16x4(p, off + qo);
                for (j, &z) in z.iter().enumerate() {
                    codes[j] = _mm512_and_si512(z, m4);
                    codes[4 + j] = _mm512_and_si512(_mm512_srli_epi16::<4>(z), m4);
                }
                if F == Q50 || F == Q51 {
                    fifth_bits(p, off + qo - 4, codes);
                }
                if F == IQ4NL {
                    // Level + 128 as unsigned bytes; the kernel subtracts 128 · Σq.
                    let mut t = [0u8; 16];
                    for (t, &l) in t.iter_mut().zip(crate::iq4::LEVELS.iter()) {
                        *t = (l as i32 + 128) as u8;
                    }
                    let t = _mm512_broadcast_i32x4(_mm_loadu_si128(t.as_ptr() as *const __m128i));
                    for c in codes[..8].iter_mut() {
                        *c = _mm512_shuffle_epi8(t, *c);
                    }
                }
            }
        }
    }
}

/// Adds the fifth bits of Q5_0/Q5_1 (the u32 at `off` of each row: bit `i` for weight `i`) as
/// 16 to the nibble codes `codes[0..8]`.
///
/// # Safety
/// Each `p[i] + off .. + 4` is readable; the CPU supports AVX-512 F/BW.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
unsafe fn fifth_bits(p: &[*const u8; ROWS], off: usize, codes: &mut [__m512i; 64]) {
    // SAFETY: the caller guarantees four readable bytes at every `p[i] + off`.
    let h: [u32; ROWS] =
        core::array::from_fn(|i| unsafe { (p[i].add(off) as *const u32).read_unaligned() });
    // SAFETY: `h` is 64 bytes.
    let h = unsafe { _mm512_loadu_si512(h.as_ptr() as *const _) };
    // Byte b of codes[k] (lane r) is weight 4k + b: bit 4(k & 1) + b of byte k / 2 of row r's
    // word. Every byte of a lane takes that byte of the lane's own word, then tests its bit.
    let lanes = _mm512_set4_epi32(0x0c0c_0c0c, 0x0808_0808, 0x0404_0404, 0);
    let sixteen = _mm512_set1_epi8(0x10);
    for (k, c) in codes[..8].iter_mut().enumerate() {
        let spread =
            _mm512_shuffle_epi8(h, _mm512_add_epi8(lanes, _mm512_set1_epi8((k / 2) as i8)));
        let bit = _mm512_set1_epi32(if k % 2 == 0 {
            0x0804_0201
        } else {
            0x8040_2010u32 as i32
        });
        let set = _mm512_test_epi8_mask(spread, bit);
        *c = _mm512_or_si512(*c, _mm512_maskz_mov_epi8(set, sixteen));
    }
}

/// The block's per-row scale (and Q4_1 minimum) for the 16 rows.
///
/// # Safety
/// Every row holds a whole block at `off`; the CPU supports AVX-512 F.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
unsafe fn scales<const F: u8>(p: &[*const u8; ROWS], off: usize) -> (__m512, __m512) {
    // SAFETY: the scales lie inside the block at `off` (caller's contract).
    unsafe {
        match F {
            TQ2 => (f16x16(p, off + 64), _mm512_setzero_ps()),
            // I2_S has no block scale: (1 · d) · isum = d · isum exactly.
            I2S => (_mm512_set1_ps(1.0), _mm512_setzero_ps()),
            TQ1 => (f16x16(p, off + 52), _mm512_setzero_ps()),
            Q41 | Q51 => (f16x16(p, off), f16x16(p, off + 2)),
            _ => (f16x16(p, off), _mm512_setzero_ps()),
        }
    }
}

/// Adds activation block `ab` of tokens `t0 .. t0 + T` times the decoded codes `c` to the
/// tokens' accumulators `acc[0..T]`, with the scalar reference's per-block epilogue.
///
/// # Safety
/// `c` points to `groups(F)` vectors; tokens `t0 .. t0 + T` and block `ab` are inside `a`
/// (checked by the caller); the CPU supports AVX-512 F/BW/VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn tokens<const F: u8, const T: usize>(
    c: *const __m512i,
    a: &ActBatch<'_>,
    t0: usize,
    ab: usize,
    (dw, m): (__m512, __m512),
    acc: &mut [__m512],
) {
    let k_n = groups(F);
    let na = a.cols / a.block;
    let q0 = a.qs.as_ptr().wrapping_add(t0 * a.cols + ab * 4 * k_n) as *const u8;
    let mut s = [_mm512_setzero_si512(); T];
    // SAFETY: `c[0..k_n]` are the decoded codes and every activation read is inside token
    // `t0 + t`'s block `ab` (caller's contract).
    unsafe {
        for k in 0..k_n {
            let ck = c.add(k).read();
            for (t, s) in s.iter_mut().enumerate() {
                let q = (q0.add(t * a.cols + 4 * k) as *const i32).read_unaligned();
                *s = _mm512_dpbusd_epi32(*s, ck, _mm512_set1_epi32(q));
            }
        }
        for (t, (s, acc)) in s.iter().zip(acc.iter_mut()).enumerate() {
            let i = (t0 + t) * na + ab;
            let d = _mm512_set1_ps(*a.d.get_unchecked(i));
            let sum = *a.sums.get_unchecked(i);
            let isum = match F {
                TQ2 | I2S | TQ1 => _mm512_sub_epi32(*s, _mm512_set1_epi32(sum)),
                Q8 | IQ4NL => _mm512_sub_epi32(*s, _mm512_set1_epi32(128 * sum)),
                Q40 => _mm512_sub_epi32(*s, _mm512_set1_epi32(8 * sum)),
                Q50 => _mm512_sub_epi32(*s, _mm512_set1_epi32(16 * sum)),
                _ => *s,
            };
            let mut v = _mm512_mul_ps(_mm512_mul_ps(dw, d), _mm512_cvtepi32_ps(isum));
            if F == Q41 || F == Q51 {
                v = _mm512_add_ps(
                    v,
                    _mm512_mul_ps(_mm512_mul_ps(m, d), _mm512_set1_ps(sum as f32)),
                );
            }
            *acc = _mm512_add_ps(*acc, v);
        }
    }
}

/// The shared multi-token driver for format `F`.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL/VNNI, AVX2 and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn gemm<const F: u8>(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    let (bb, subs, k_n) = (block_bytes(F), act_blocks(F), groups(F));
    let (rows, nb) = match crate::x86::tile_shape(w, row_bytes, a, out, (bb, subs, 4 * k_n)) {
        Some(s) => s,
        None => return,
    };
    let n = a.n;
    let mut codes = [_mm512_setzero_si512(); 64];
    let mut acc = [_mm512_setzero_ps(); TOKENS];
    let mut r = 0;
    while r < rows {
        let p = row_ptrs16(w, row_bytes, rows, r);
        let mut t0 = 0;
        while t0 < n {
            let nt = core::cmp::min(TOKENS, n - t0);
            acc[..nt].fill(_mm512_setzero_ps());
            for b in 0..nb {
                let off = b * bb;
                // SAFETY: every row of `w` holds `nb` blocks (checked above); prefetches of the
                // next block never fault.
                unsafe {
                    if b + 1 < nb {
                        for &pi in &p {
                            _mm_prefetch::<_MM_HINT_T0>(pi.wrapping_add(off + bb) as *const i8);
                            _mm_prefetch::<_MM_HINT_T0>(
                                pi.wrapping_add(off + 2 * bb - 1) as *const i8
                            );
                        }
                    }
                    decode::<F>(&p, off, &mut codes);
                    let sc = scales::<F>(&p, off);
                    for s in 0..subs {
                        let ab = b * subs + s;
                        let c = codes.as_ptr().add(s * k_n);
                        let mut t = 0;
                        while t + 8 <= nt {
                            tokens::<F, 8>(c, a, t0 + t, ab, sc, &mut acc[t..]);
                            t += 8;
                        }
                        if t + 4 <= nt {
                            tokens::<F, 4>(c, a, t0 + t, ab, sc, &mut acc[t..]);
                            t += 4;
                        }
                        if t + 2 <= nt {
                            tokens::<F, 2>(c, a, t0 + t, ab, sc, &mut acc[t..]);
                            t += 2;
                        }
                        if t < nt {
                            tokens::<F, 1>(c, a, t0 + t, ab, sc, &mut acc[t..]);
                        }
                    }
                }
            }
            let nr = core::cmp::min(ROWS, rows - r);
            let mask = ((1u32 << nr) - 1) as u16;
            for (t, &v) in acc[..nt].iter().enumerate() {
                let o = (t0 + t) * rows + r;
                let dst = &mut out[o..o + nr];
                // SAFETY: `dst` holds `nr` floats and the store writes only the first `nr` lanes
                // (masked-off lanes never fault).
                unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, v) };
            }
            t0 += nt;
        }
        r += ROWS;
    }
}

// Safe wrappers stored in the kernel table, reachable only through `Kernels::avx512vnni`, whose
// contract is that the CPU supports AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
macro_rules! wrap_gemm {
    ($($name:ident => $f:expr;)*) => {$(
        pub(crate) fn $name(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
            // SAFETY: only reachable through `Kernels::avx512vnni`, whose caller promised the
            // CPU supports this path's target features.
            unsafe { gemm::<{ $f }>(w, row_bytes, a, out) }
        }
    )*};
}

wrap_gemm! {
    vnni_gemm_tq2_0 => TQ2;
    vnni_gemm_i2s => I2S;
    vnni_gemm_tq1_0 => TQ1;
    vnni_gemm_q8_0 => Q8;
    vnni_gemm_q4_0 => Q40;
    vnni_gemm_q4_1 => Q41;
    vnni_gemm_q5_0 => Q50;
    vnni_gemm_q5_1 => Q51;
    vnni_gemm_iq4_nl => IQ4NL;
}
