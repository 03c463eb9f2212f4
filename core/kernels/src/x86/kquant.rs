//! AVX2 kernels of the 256-weight super-block formats (Q2_K … Q6_K, IQ4_XS) over Q8_K
//! activations. Each super-block's integer sums are exact and its float step is the scalar
//! reference's, so results are bit-identical to it.
//!
//! Activation codes must lie in −127..=127 (as [`crate::act::quantize_groups`] produces them):
//! IQ4_XS multiplies through `vpsignb`, which cannot negate −128.

use core::arch::x86_64::*;

use super::*;
use crate::formats::{
    IQ4_XS_BLOCK_BYTES, Q2_K_BLOCK_BYTES, Q3_K_BLOCK_BYTES, Q4_K_BLOCK_BYTES, Q5_K_BLOCK_BYTES,
    Q6_K_BLOCK_BYTES,
};

/// The 256 activation codes of super-block `b` as eight 32-byte vectors.
#[inline(always)]
unsafe fn act256(a: &ActQ8<'_>, b: usize) -> [__m256i; 8] {
    // SAFETY: the caller checked that `a.qs` holds super-block `b`.
    unsafe {
        let q = a.qs.as_ptr().add(256 * b) as *const u8;
        [
            load256(q),
            load256(q.add(32)),
            load256(q.add(64)),
            load256(q.add(96)),
            load256(q.add(128)),
            load256(q.add(160)),
            load256(q.add(192)),
            load256(q.add(224)),
        ]
    }
}

/// `acc + (d · da) · sumi`, lane-wise: the float step of the formats without minima.
#[inline(always)]
unsafe fn step(acc: __m128, d: __m128, da: f32, sumi: __m128i) -> __m128 {
    // SAFETY: SSE2 is part of the x86-64 baseline.
    unsafe { fma_block(acc, d, da, sumi) }
}

/// `acc + ((d · da) · sumi − (dmin · da) · summ)`, lane-wise (see [`crate::q4_k`]).
#[inline(always)]
unsafe fn step_min(
    acc: __m128,
    d: __m128,
    dmin: __m128,
    da: f32,
    sumi: __m128i,
    summ: __m128i,
) -> __m128 {
    // SAFETY: SSE2 is part of the x86-64 baseline.
    unsafe {
        let da = _mm_set1_ps(da);
        let t = _mm_sub_ps(
            _mm_mul_ps(_mm_mul_ps(d, da), _mm_cvtepi32_ps(sumi)),
            _mm_mul_ps(_mm_mul_ps(dmin, da), _mm_cvtepi32_ps(summ)),
        );
        _mm_add_ps(acc, t)
    }
}

/// Runs `$body` for every group of four rows and super-block, with `$p` the row pointers,
/// `$off` the block's byte offset, `$b` its index and `$acc` the rows' accumulators.
macro_rules! super_blocks {
    ($w:ident, $row_bytes:ident, $a:ident, $out:ident, $bb:expr,
     |$p:ident, $off:ident, $b:ident, $acc:ident| $body:block) => {{
        let rows = $out.len();
        if rows == 0 {
            return;
        }
        let nb = $row_bytes / $bb;
        check_q8($w, $row_bytes, rows, nb, 8, $a, 32);
        let mut r = 0;
        while r < rows {
            // SAFETY: r < rows; every read stays within the checked slices.
            unsafe {
                let $p = row_ptrs($w, $row_bytes, rows, r);
                let mut $acc = _mm_setzero_ps();
                for $b in 0..nb {
                    let $off = $b * $bb;
                    prefetch_ahead($w, $row_bytes, r, $b, $bb);
                    $body
                }
                store_rows($out, r, core::mem::transmute::<__m128, [f32; 4]>($acc));
            }
            r += 4;
        }
    }};
}

/// The eight 6-bit scales (bytes 0..8) and minima (bytes 8..16) of the Q4_K/Q5_K super-block
/// at `p`, as [`crate::q4_k::unpack_scales`] returns them, unpacked with word operations.
///
/// # Safety
/// The caller guarantees 16 readable bytes at `p`.
#[inline(always)]
unsafe fn scales_mins_k4(p: *const u8) -> __m128i {
    // SAFETY: bytes 4..16 of the block (caller's contract).
    let w = |i: usize| unsafe { (p.add(4 + 4 * i) as *const u32).read_unaligned() };
    let (a, b, c) = (w(0), w(1), w(2));
    // Byte j of each word: sub-block j's (or j + 4's) field. The high scales and minima take
    // their top two bits from bits 6..8 of the low ones' bytes.
    let sc_lo = a & 0x3f3f_3f3f;
    let sc_hi = (c & 0x0f0f_0f0f) | ((a >> 2) & 0x3030_3030);
    let m_lo = b & 0x3f3f_3f3f;
    let m_hi = ((c >> 4) & 0x0f0f_0f0f) | ((b >> 2) & 0x3030_3030);
    // SAFETY: SSE2 is part of the x86-64 baseline.
    unsafe { _mm_set_epi32(m_hi as i32, m_lo as i32, sc_hi as i32, sc_lo as i32) }
}

/// The scales of [`scales_mins_k4`] as `i16` in each 128-bit lane (for [`scale_of`]), and the
/// minima as eight `i16`.
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn scales_i16(sm: __m128i) -> (__m256i, __m128i) {
    // SAFETY: the caller's AVX2 contract.
    unsafe {
        (
            _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm)),
            _mm_cvtepu8_epi16(_mm_srli_si128::<8>(sm)),
        )
    }
}

/// Scale `j` of `sc` (from [`scales_i16`]) in every 16-bit lane: one byte shuffle.
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn scale_of(sc: __m256i, j: usize) -> __m256i {
    let pick = (((2 * j + 1) << 8) | (2 * j)) as i16;
    // SAFETY: the caller's AVX2 contract.
    unsafe { _mm256_shuffle_epi8(sc, _mm256_set1_epi16(pick)) }
}

/// The sixteen int8 scales at `p` as `i16`: scales `0..8` in both 128-bit lanes of the first
/// vector, `8..16` in both lanes of the second (for [`scale_pair_of`]).
///
/// # Safety
/// 16 readable bytes at `p`; the CPU supports AVX2.
#[inline(always)]
unsafe fn scales16_i16(p: *const u8) -> [__m256i; 2] {
    // SAFETY: the caller's contract.
    unsafe { scales16_i16_of(_mm_loadu_si128(p as *const __m128i)) }
}

/// [`scales16_i16`] of the sixteen int8 scales in `v`.
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn scales16_i16_of(v: __m128i) -> [__m256i; 2] {
    // SAFETY: the caller's AVX2 contract.
    unsafe {
        [
            _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(v)),
            _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_srli_si128::<8>(v))),
        ]
    }
}

/// The sixteen signed scales of the Q3_K super-block whose 12 scale bytes are at `p`, as
/// [`crate::q3_k::unpack_scales`] returns them, unpacked with vector operations.
///
/// # Safety
/// 12 readable bytes at `p`; the CPU supports AVX2.
#[inline(always)]
unsafe fn q3_k_scales(p: *const u8) -> __m128i {
    // SAFETY: the caller's contract (the 16-byte vector is filled from three words).
    unsafe {
        let w = |i: usize| (p.add(4 * i) as *const u32).read_unaligned() as i32;
        let v = _mm_setr_epi32(w(0), w(1), w(2), 0);
        let m4 = _mm_set1_epi8(0xf);
        // Low four bits: bytes 0..8 (scales 0..8), then their high nibbles (scales 8..16).
        let lo = _mm_unpacklo_epi64(
            _mm_and_si128(v, m4),
            _mm_and_si128(_mm_srli_epi16::<4>(v), m4),
        );
        // High two bits of scale j: bits 2(j / 4) of byte 8 + j % 4.
        let x = _mm_shuffle_epi32::<0xaa>(v);
        let x = _mm_blend_epi32::<0b0010>(x, _mm_srli_epi16::<2>(x));
        let x = _mm_blend_epi32::<0b0100>(x, _mm_srli_epi16::<4>(x));
        let x = _mm_blend_epi32::<0b1000>(x, _mm_srli_epi16::<6>(x));
        let hi = _mm_slli_epi16::<4>(_mm_and_si128(x, _mm_set1_epi8(3)));
        _mm_sub_epi8(_mm_or_si128(lo, hi), _mm_set1_epi8(32))
    }
}

/// The sixteen sums of 16 codes of the 256 activations at `q`, as 16-bit lanes in order.
///
/// # Safety
/// 256 bytes are readable at `q`; the CPU supports AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn sums16(q: *const u8) -> __m256i {
    // SAFETY: every load is inside the 256 bytes at `q` (caller's contract).
    unsafe {
        let (ones8, ones16) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
        // x[c], lane j: the sum of codes 32c + 4j .. + 4 (lanes 0..4: the first 16).
        let x: [__m256i; 8] = core::array::from_fn(|c| {
            let v = _mm256_loadu_si256(q.add(32 * c) as *const __m256i);
            _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16)
        });
        let half = |x: &[__m256i]| {
            // The first sums of 16 of four chunks, then their second sums.
            let g = _mm256_hadd_epi32(_mm256_hadd_epi32(x[0], x[1]), _mm256_hadd_epi32(x[2], x[3]));
            let hi = _mm256_permute2x128_si256::<0x01>(g, g);
            // Lanes 0..4: (first, second) of each chunk as 16-bit halves (each sum fits).
            _mm256_or_si256(
                _mm256_and_si256(g, _mm256_set1_epi32(0xffff)),
                _mm256_slli_epi32::<16>(hi),
            )
        };
        let (a, b) = (half(&x[..4]), half(&x[4..]));
        _mm256_permute2x128_si256::<0x20>(a, b)
    }
}

/// Scales `2k` and `2k + 1` of a half from [`scales16_i16`], the first in the low eight 16-bit
/// lanes and the second in the high eight (the scales of two 16-weight sub-blocks for the
/// products of one 32-weight vector): one byte shuffle.
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn scale_pair_of(sc: __m256i, k: usize) -> __m256i {
    let lo = (((4 * k + 1) << 8) | (4 * k)) as i16;
    let hi = (((4 * k + 3) << 8) | (4 * k + 2)) as i16;
    // SAFETY: the caller's AVX2 contract.
    unsafe {
        let pick = _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo));
        _mm256_shuffle_epi8(sc, pick)
    }
}

/// `Σ m_j · sums_j` for four rows' minima (`m[r]`, eight `i16` each) against the super-block's
/// eight activation sums: exact (a sum of 32 codes fits an `i16`).
///
/// # Safety
/// `sums` holds eight values; the CPU supports AVX2.
#[inline(always)]
unsafe fn mins_dot4_simd(m: &[__m128i; 4], sums: *const i32) -> __m128i {
    // SAFETY: eight readable sums (caller's contract); SSE4.1 comes with AVX2.
    unsafe {
        let s = _mm_packs_epi32(
            _mm_loadu_si128(sums as *const __m128i),
            _mm_loadu_si128(sums.add(4) as *const __m128i),
        );
        let p: [__m128i; 4] = core::array::from_fn(|r| _mm_madd_epi16(m[r], s));
        _mm_hadd_epi32(_mm_hadd_epi32(p[0], p[1]), _mm_hadd_epi32(p[2], p[3]))
    }
}

/// AVX2 Q4_K × Q8_K.
///
/// # Safety
/// The CPU supports AVX2 and F16C.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn q4_k_avx2(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let m4 = _mm256_set1_epi8(0xf);
    super_blocks!(w, row_bytes, a, out, Q4_K_BLOCK_BYTES, |p, off, b, acc| {
        let q = act256(a, b);
        let mut s = [_mm256_setzero_si256(); 4];
        let mut mins = [_mm_setzero_si128(); 4];
        for rr in 0..4 {
            let blk = p[rr].add(off);
            let (sc, m) = scales_i16(scales_mins_k4(blk));
            mins[rr] = m;
            let mut t = _mm256_setzero_si256();
            for c in 0..4 {
                let x = load256(blk.add(16 + 32 * c));
                let lo = _mm256_maddubs_epi16(_mm256_and_si256(x, m4), q[2 * c]);
                let hi = _mm256_maddubs_epi16(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(x), m4),
                    q[2 * c + 1],
                );
                t = _mm256_add_epi32(t, _mm256_madd_epi16(lo, scale_of(sc, 2 * c)));
                t = _mm256_add_epi32(t, _mm256_madd_epi16(hi, scale_of(sc, 2 * c + 1)));
            }
            s[rr] = t;
        }
        let sumi = hsum4(s[0], s[1], s[2], s[3]);
        let summ = mins_dot4_simd(&mins, a.sums.as_ptr().add(8 * b));
        let da = *a.d.get_unchecked(8 * b);
        acc = step_min(acc, f16x4(p, off), f16x4(p, off + 2), da, sumi, summ);
    });
}

/// AVX2 Q5_K × Q8_K.
///
/// # Safety
/// The CPU supports AVX2 and F16C.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn q5_k_avx2(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let m4 = _mm256_set1_epi8(0xf);
    let m16 = _mm256_set1_epi8(0x10);
    super_blocks!(w, row_bytes, a, out, Q5_K_BLOCK_BYTES, |p, off, b, acc| {
        let q = act256(a, b);
        let mut s = [_mm256_setzero_si256(); 4];
        let mut mins = [_mm_setzero_si128(); 4];
        for rr in 0..4 {
            let blk = p[rr].add(off);
            let (sc, m) = scales_i16(scales_mins_k4(blk));
            mins[rr] = m;
            // Bits 2c and 2c + 1 of each high-bit byte belong to chunk c; shift them down.
            let mut hb = load256(blk.add(16));
            let mut t = _mm256_setzero_si256();
            for c in 0..4 {
                let x = load256(blk.add(48 + 32 * c));
                let lo = _mm256_or_si256(
                    _mm256_and_si256(x, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(hb), m16),
                );
                let hi = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(x), m4),
                    _mm256_and_si256(_mm256_slli_epi16::<3>(hb), m16),
                );
                hb = _mm256_srli_epi16::<2>(hb);
                let lo = _mm256_maddubs_epi16(lo, q[2 * c]);
                let hi = _mm256_maddubs_epi16(hi, q[2 * c + 1]);
                t = _mm256_add_epi32(t, _mm256_madd_epi16(lo, scale_of(sc, 2 * c)));
                t = _mm256_add_epi32(t, _mm256_madd_epi16(hi, scale_of(sc, 2 * c + 1)));
            }
            s[rr] = t;
        }
        let sumi = hsum4(s[0], s[1], s[2], s[3]);
        let summ = mins_dot4_simd(&mins, a.sums.as_ptr().add(8 * b));
        let da = *a.d.get_unchecked(8 * b);
        acc = step_min(acc, f16x4(p, off), f16x4(p, off + 2), da, sumi, summ);
    });
}

/// AVX2 Q6_K × Q8_K: codes 0..64 through `vpmaddubsw`, minus 32 × the activation pair sums.
///
/// # Safety
/// The CPU supports AVX2 and F16C.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn q6_k_avx2(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let m4 = _mm256_set1_epi8(0xf);
    let m3 = _mm256_set1_epi8(0x30);
    let k32 = _mm256_set1_epi8(32);
    super_blocks!(w, row_bytes, a, out, Q6_K_BLOCK_BYTES, |p, off, b, acc| {
        let q = act256(a, b);
        let mut q32 = [_mm256_setzero_si256(); 8];
        for i in 0..8 {
            q32[i] = _mm256_maddubs_epi16(k32, q[i]);
        }
        let mut s = [_mm256_setzero_si256(); 4];
        for rr in 0..4 {
            let blk = p[rr].add(off);
            let sc = scales16_i16(blk.add(192));
            let mut t = _mm256_setzero_si256();
            for (n, &sc) in sc.iter().enumerate() {
                let ql0 = load256(blk.add(64 * n));
                let ql1 = load256(blk.add(64 * n + 32));
                let qh = load256(blk.add(128 + 32 * n));
                let codes = [
                    _mm256_or_si256(
                        _mm256_and_si256(ql0, m4),
                        _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m3),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, m4),
                        _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m3),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                        _mm256_and_si256(qh, m3),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m3),
                    ),
                ];
                for (k, &c) in codes.iter().enumerate() {
                    let i = 4 * n + k;
                    let prod = _mm256_sub_epi16(_mm256_maddubs_epi16(c, q[i]), q32[i]);
                    let scl = scale_pair_of(sc, k);
                    t = _mm256_add_epi32(t, _mm256_madd_epi16(prod, scl));
                }
            }
            s[rr] = t;
        }
        let sumi = hsum4(s[0], s[1], s[2], s[3]);
        acc = step(acc, f16x4(p, off + 208), *a.d.get_unchecked(8 * b), sumi);
    });
}

/// AVX2 Q3_K × Q8_K: 2-bit codes through `vpmaddubsw`, minus 4 × the activations whose high
/// bit is clear.
///
/// # Safety
/// The CPU supports AVX2 and F16C.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn q3_k_avx2(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let m3 = _mm256_set1_epi8(3);
    let four = _mm256_set1_epi8(4);
    super_blocks!(w, row_bytes, a, out, Q3_K_BLOCK_BYTES, |p, off, b, acc| {
        let q = act256(a, b);
        // The −4 of every weight, once for the four rows: Σ 4 · a per pair.
        let q4: [__m256i; 8] = core::array::from_fn(|i| _mm256_maddubs_epi16(four, q[i]));
        let mut s = [_mm256_setzero_si256(); 4];
        for rr in 0..4 {
            let blk = p[rr].add(off);
            let sc = scales16_i16_of(q3_k_scales(blk.add(96)));
            let mut hm = load256(blk);
            let mut t = _mm256_setzero_si256();
            for (n, &sc) in sc.iter().enumerate() {
                let mut qs = load256(blk.add(32 + 32 * n));
                for k in 0..4 {
                    let i = 4 * n + k;
                    // Value + 4: the low bits, plus 4 where the high bit is set.
                    let c = _mm256_or_si256(
                        _mm256_and_si256(qs, m3),
                        _mm256_and_si256(_mm256_slli_epi16::<2>(hm), four),
                    );
                    let prod = _mm256_sub_epi16(_mm256_maddubs_epi16(c, q[i]), q4[i]);
                    let scl = scale_pair_of(sc, k);
                    t = _mm256_add_epi32(t, _mm256_madd_epi16(prod, scl));
                    qs = _mm256_srli_epi16::<2>(qs);
                    hm = _mm256_srli_epi16::<1>(hm);
                }
            }
            s[rr] = t;
        }
        let sumi = hsum4(s[0], s[1], s[2], s[3]);
        acc = step(acc, f16x4(p, off + 108), *a.d.get_unchecked(8 * b), sumi);
    });
}

/// AVX2 Q2_K × Q8_K.
///
/// # Safety
/// The CPU supports AVX2 and F16C.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn q2_k_avx2(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0xf);
    super_blocks!(w, row_bytes, a, out, Q2_K_BLOCK_BYTES, |p, off, b, acc| {
        let q = act256(a, b);
        let s16 = sums16(a.qs.as_ptr().add(256 * b) as *const u8);
        let mut s = [_mm256_setzero_si256(); 4];
        let mut summ = [_mm256_setzero_si256(); 4];
        for rr in 0..4 {
            let blk = p[rr].add(off);
            let sm = _mm_loadu_si128(blk as *const __m128i);
            let sc = scales16_i16_of(_mm_and_si128(sm, m4));
            let m = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(sm), m4));
            summ[rr] = _mm256_madd_epi16(m, s16);
            let mut t = _mm256_setzero_si256();
            for (n, &sc) in sc.iter().enumerate() {
                let mut qs = load256(blk.add(16 + 32 * n));
                for k in 0..4 {
                    let i = 4 * n + k;
                    let prod = _mm256_maddubs_epi16(_mm256_and_si256(qs, m3), q[i]);
                    t = _mm256_add_epi32(t, _mm256_madd_epi16(prod, scale_pair_of(sc, k)));
                    qs = _mm256_srli_epi16::<2>(qs);
                }
            }
            s[rr] = t;
        }
        let sumi = hsum4(s[0], s[1], s[2], s[3]);
        let summ = hsum4(summ[0], summ[1], summ[2], summ[3]);
        let da = *a.d.get_unchecked(8 * b);
        acc = step_min(acc, f16x4(p, off + 80), f16x4(p, off + 82), da, sumi, summ);
    });
}

/// The IQ4 levels in both 128-bit lanes, for `vpshufb` lookups.
#[inline(always)]
pub(super) unsafe fn iq4_table() -> __m256i {
    // SAFETY: `LEVELS` is 16 bytes; AVX is implied by the callers' AVX2 contract.
    unsafe {
        let t = _mm_loadu_si128(crate::iq4::LEVELS.as_ptr() as *const __m128i);
        _mm256_set_m128i(t, t)
    }
}

/// The 32 signed levels of one 16-byte group of IQ4 indices at `p`, in weight order.
#[inline(always)]
pub(super) unsafe fn iq4_levels(p: *const u8, table: __m256i) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes at `p`; AVX2 per the callers' contract.
    unsafe {
        let x = load128(p);
        let x = _mm256_set_m128i(_mm_srli_epi16::<4>(x), x);
        _mm256_shuffle_epi8(table, _mm256_and_si256(x, _mm256_set1_epi8(0xf)))
    }
}

/// Pairwise `Σ w · q` of signed weights and activations (16-bit lanes; `q` must not be −128).
#[inline(always)]
pub(super) unsafe fn signed_pairs(w: __m256i, q: __m256i) -> __m256i {
    // SAFETY: AVX2 per the callers' contract.
    unsafe { _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(q, w)) }
}

/// AVX2 IQ4_XS × Q8_K.
///
/// # Safety
/// The CPU supports AVX2 and F16C.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn iq4_xs_avx2(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    // SAFETY: AVX2 per this function's contract.
    let table = unsafe { iq4_table() };
    super_blocks!(
        w,
        row_bytes,
        a,
        out,
        IQ4_XS_BLOCK_BYTES,
        |p, off, b, acc| {
            let q = act256(a, b);
            let mut s = [_mm256_setzero_si256(); 4];
            for rr in 0..4 {
                let blk = p[rr].add(off);
                let bytes = (blk as *const [u8; 8]).read_unaligned();
                let mut t = _mm256_setzero_si256();
                for (j, &qj) in q.iter().enumerate() {
                    let lv = iq4_levels(blk.add(8 + 16 * j), table);
                    let ls = crate::iq4::xs_scale(&bytes, j) as i16;
                    t = _mm256_add_epi32(
                        t,
                        _mm256_madd_epi16(signed_pairs(lv, qj), _mm256_set1_epi16(ls)),
                    );
                }
                s[rr] = t;
            }
            let sumi = hsum4(s[0], s[1], s[2], s[3]);
            acc = step(acc, f16x4(p, off), *a.d.get_unchecked(8 * b), sumi);
        }
    );
}
