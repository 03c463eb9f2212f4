//! x86-64 SIMD kernels (AVX2, AVX-512 VNNI). Each is checked against [`crate::scalar`].
//!
//! The int8 kernels process four rows per pass so that every activation load is shared by four
//! weight rows. Integer block sums are reduced exactly (no float rounding inside a block) and each
//! row's `f32` accumulator adds the blocks in the same order with the same products as the scalar
//! reference, so these kernels return bit-identical results to it.
//!
//! Row counts that are not a multiple of four are handled by repeating the last row's pointer
//! and discarding the extra results.
//!
//! Only the `Kernels` constructors reach the `pub(crate)` wrappers below; their safety rests on
//! the constructors' contract that the CPU supports the features each wrapper's path needs.

// Intrinsics such as `_mm256_add_epi8` and `__cpuid` are `unsafe fn` on older compilers (the
// crate supports Rust 1.63) and safe inside `#[target_feature]` functions on newer ones, so some
// `unsafe` blocks are only needed on the former.
#![allow(unused_unsafe)]

use core::arch::asm;
use core::arch::x86_64::*;

use crate::act::ActQ8;
use crate::formats::{
    Q4_0_BLOCK_BYTES, Q4_1_BLOCK_BYTES, Q8_0_BLOCK_BYTES, TQ1_0_BLOCK_BYTES, TQ2_0_BLOCK_BYTES,
};

// ------------------------------------------------------------------------------------------------
// Argument checks shared by every int8 kernel (the scalar reference panics in the same cases).

/// Checks `w` and `a` are long enough for `rows` rows of `nb` blocks of `block_bytes` bytes,
/// each block consuming `act_blocks` activation blocks of `act_len` codes.
#[inline]
fn check_q8(
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    nb: usize,
    act_blocks: usize,
    a: &ActQ8<'_>,
    act_len: usize,
) {
    assert!(w.len() >= rows * row_bytes, "weight slice too short");
    let nab = nb * act_blocks;
    assert!(a.qs.len() >= nab * act_len, "activation codes too short");
    assert!(
        a.d.len() >= nab && a.sums.len() >= nab,
        "activation scales too short"
    );
}

/// Pointers to rows `r..r + 4` of `w`, repeating the last row past `rows`.
///
/// # Safety
/// `r < rows` and `w` holds `rows * row_bytes` bytes.
#[inline(always)]
unsafe fn row_ptrs(w: &[u8], row_bytes: usize, rows: usize, r: usize) -> [*const u8; 4] {
    let base = w.as_ptr();
    let last = rows - 1;
    let p = |i: usize| -> *const u8 {
        let row = if r + i < last { r + i } else { last };
        // SAFETY: row < rows, so the offset stays inside `w` (caller's contract).
        unsafe { base.add(row * row_bytes) }
    };
    [p(0), p(1), p(2), p(3)]
}

/// Row groups ahead of the current one that the int8 kernels prefetch.
const PREFETCH_GROUPS: usize = 2;

/// Prefetches the bytes that block `b` of the row group `PREFETCH_GROUPS` groups after the one
/// starting at row `r` will read (`bb` bytes per block and row). The four rows of a group are
/// contiguous, so this walks the weights linearly; hardware prefetchers lose track of the four
/// interleaved row streams.
#[inline(always)]
fn prefetch_ahead(w: &[u8], row_bytes: usize, r: usize, b: usize, bb: usize) {
    let start = (r + 4 * PREFETCH_GROUPS) * row_bytes + b * 4 * bb;
    // Addresses past the end are fine: prefetches never fault, and `wrapping_add` keeps the
    // pointer arithmetic defined.
    let p = w.as_ptr().wrapping_add(start);
    let mut k = 0;
    while k < 4 * bb + 64 {
        // SAFETY: `prefetcht0` has no architectural effect and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(k) as *const i8) };
        k += 64;
    }
}

/// Stores the first `out.len() - r` (at most four) lanes of `v` at `out[r..]`.
#[inline(always)]
fn store_rows(out: &mut [f32], r: usize, v: [f32; 4]) {
    let n = core::cmp::min(4, out.len() - r);
    out[r..r + n].copy_from_slice(&v[..n]);
}

// ------------------------------------------------------------------------------------------------
// AVX2 helpers.

/// Reads the little-endian f16 at `p[i] + off` of each of four rows as an `f32` vector.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn f16x4(p: [*const u8; 4], off: usize) -> __m128 {
    // SAFETY: the caller guarantees each `p[i] + off .. + 2` is readable.
    let h = unsafe {
        [
            (p[0].add(off) as *const u16).read_unaligned(),
            (p[1].add(off) as *const u16).read_unaligned(),
            (p[2].add(off) as *const u16).read_unaligned(),
            (p[3].add(off) as *const u16).read_unaligned(),
        ]
    };
    let v = _mm_setr_epi16(
        h[0] as i16,
        h[1] as i16,
        h[2] as i16,
        h[3] as i16,
        0,
        0,
        0,
        0,
    );
    // SAFETY: the caller's path contract includes F16C.
    unsafe { cvtph_ps128(v) }
}

// F16C conversions go through `asm!` because the `f16c` target feature and its intrinsics are
// only stable since Rust 1.68. Every path that calls them requires F16C in its contract.

/// `vcvtph2ps` of four halves.
#[inline]
#[target_feature(enable = "avx,avx2")]
unsafe fn cvtph_ps128(h: __m128i) -> __m128 {
    let r: __m128;
    // SAFETY: the caller's path contract includes F16C; the instruction only reads `h`.
    unsafe {
        asm!("vcvtph2ps {r}, {h}", h = in(xmm_reg) h, r = lateout(xmm_reg) r,
             options(pure, nomem, nostack, preserves_flags));
    }
    r
}

/// `vcvtph2ps` of eight halves.
#[inline]
#[target_feature(enable = "avx,avx2")]
unsafe fn cvtph_ps256(h: __m128i) -> __m256 {
    let r: __m256;
    // SAFETY: the caller's path contract includes F16C; the instruction only reads `h`.
    unsafe {
        asm!("vcvtph2ps {r}, {h}", h = in(xmm_reg) h, r = lateout(ymm_reg) r,
             options(pure, nomem, nostack, preserves_flags));
    }
    r
}

/// Sums each of four `i32x8` vectors: `[Σa, Σb, Σc, Σd]` (exact, wrapping).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum4(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> __m128i {
    let ab = _mm256_hadd_epi32(a, b);
    let cd = _mm256_hadd_epi32(c, d);
    let abcd = _mm256_hadd_epi32(ab, cd);
    _mm_add_epi32(
        _mm256_castsi256_si128(abcd),
        _mm256_extracti128_si256::<1>(abcd),
    )
}

/// Horizontal sum of eight `f32` lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load256(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes at `p`.
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

#[inline(always)]
unsafe fn load128(p: *const u8) -> __m128i {
    // SAFETY: the caller guarantees 16 readable bytes at `p`.
    unsafe { _mm_loadu_si128(p as *const __m128i) }
}

/// `acc += (s · d) · isum` lane-wise, with the scalar reference's rounding order.
#[inline(always)]
unsafe fn fma_block(acc: __m128, s: __m128, d: f32, isum: __m128i) -> __m128 {
    // SAFETY: SSE2 is part of the x86-64 baseline.
    unsafe {
        _mm_add_ps(
            acc,
            _mm_mul_ps(_mm_mul_ps(s, _mm_set1_ps(d)), _mm_cvtepi32_ps(isum)),
        )
    }
}

/// Dot products of one 128-weight block of 2-bit codes (32 bytes per row, code `l` of byte `m`
/// in bits `2l` or, with `REV`, bits `6 - 2l`, for weight `32l + m`) with 128 activations.
/// Returns the four rows' `Σ code · q` (without the −1 offset).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tern2_block_avx2<const REV: bool>(
    p: [*const u8; 4],
    off: usize,
    q: *const i8,
) -> __m128i {
    let m3 = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    // SAFETY: 128 activations at `q` and 32 code bytes at `p[i] + off` (caller's contract).
    unsafe {
        let q = q as *const u8;
        let a = [
            load256(q),
            load256(q.add(32)),
            load256(q.add(64)),
            load256(q.add(96)),
        ];
        let mut acc = [_mm256_setzero_si256(); 4];
        for (r, acc) in acc.iter_mut().enumerate() {
            let w = load256(p[r].add(off));
            let c0 = _mm256_and_si256(w, m3);
            let c1 = _mm256_and_si256(_mm256_srli_epi16::<2>(w), m3);
            let c2 = _mm256_and_si256(_mm256_srli_epi16::<4>(w), m3);
            let c3 = _mm256_and_si256(_mm256_srli_epi16::<6>(w), m3);
            let (c0, c1, c2, c3) = if REV {
                (c3, c2, c1, c0)
            } else {
                (c0, c1, c2, c3)
            };
            // Each i16 lane: at most 4 · 2 · 2 · 128 = 2048 in magnitude.
            let s01 = _mm256_add_epi16(
                _mm256_maddubs_epi16(c0, a[0]),
                _mm256_maddubs_epi16(c1, a[1]),
            );
            let s23 = _mm256_add_epi16(
                _mm256_maddubs_epi16(c2, a[2]),
                _mm256_maddubs_epi16(c3, a[3]),
            );
            *acc = _mm256_madd_epi16(_mm256_add_epi16(s01, s23), ones);
        }
        hsum4(acc[0], acc[1], acc[2], acc[3])
    }
}

// ------------------------------------------------------------------------------------------------
// AVX2 kernels.

/// AVX2 TQ2_0.
///
/// # Safety
/// The CPU supports AVX2 and F16C.
#[target_feature(enable = "avx2,fma")]
unsafe fn tq2_0_avx2(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let rows = out.len();
    if rows == 0 {
        return;
    }
    let nb = row_bytes / TQ2_0_BLOCK_BYTES;
    check_q8(w, row_bytes, rows, nb, 2, a, 128);
    let mut r = 0;
    while r < rows {
        // SAFETY: r < rows; all reads stay within the checked slices.
        unsafe {
            let p = row_ptrs(w, row_bytes, rows, r);
            let mut acc = _mm_setzero_ps();
            for b in 0..nb {
                let off = b * TQ2_0_BLOCK_BYTES;
                prefetch_ahead(w, row_bytes, r, b, TQ2_0_BLOCK_BYTES);
                let dw = f16x4(p, off + 64);
                for h in 0..2 {
                    let ab = 2 * b + h;
                    let s = tern2_block_avx2::<false>(p, off + 32 * h, a.qs.as_ptr().add(ab * 128));
                    let s = _mm_sub_epi32(s, _mm_set1_epi32(*a.sums.get_unchecked(ab)));
                    acc = fma_block(acc, dw, *a.d.get_unchecked(ab), s);
                }
            }
            store_rows(out, r, core::mem::transmute::<__m128, [f32; 4]>(acc));
        }
        r += 4;
    }
}

/// AVX2 I2_S.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2,fma")]
unsafe fn i2s_avx2(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let rows = out.len();
    if rows == 0 {
        return;
    }
    let ng = row_bytes / 32;
    check_q8(w, row_bytes, rows, ng, 1, a, 128);
    let mut r = 0;
    while r < rows {
        // SAFETY: r < rows; all reads stay within the checked slices.
        unsafe {
            let p = row_ptrs(w, row_bytes, rows, r);
            let mut acc = _mm_setzero_ps();
            for g in 0..ng {
                prefetch_ahead(w, row_bytes, r, g, 32);
                let s = tern2_block_avx2::<true>(p, 32 * g, a.qs.as_ptr().add(g * 128));
                let s = _mm_sub_epi32(s, _mm_set1_epi32(*a.sums.get_unchecked(g)));
                acc = _mm_add_ps(
                    acc,
                    _mm_mul_ps(_mm_set1_ps(*a.d.get_unchecked(g)), _mm_cvtepi32_ps(s)),
                );
            }
            store_rows(out, r, core::mem::transmute::<__m128, [f32; 4]>(acc));
        }
        r += 4;
    }
}

/// Ternary digit (0, 1, 2) of each byte of `x`, where `x` holds `q ^ 0x80` and `q` is the
/// TQ1_0 byte already multiplied by `3^n` (mod 256): `digit = (3q) >> 8 = [q ≥ 86] + [q ≥ 171]`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tq1_digit256(x: __m256i) -> __m256i {
    // SAFETY: only called from AVX2 functions.
    unsafe {
        let m1 = _mm256_cmpgt_epi8(x, _mm256_set1_epi8(-43));
        let m2 = _mm256_cmpgt_epi8(x, _mm256_set1_epi8(42));
        _mm256_sub_epi8(_mm256_sub_epi8(_mm256_setzero_si256(), m1), m2)
    }
}

/// Bytewise `3x` (mod 256). With `x = q ^ 0x80`, `3x ≡ (3q) ^ 0x80`, so the offset form is kept.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn triple256(x: __m256i) -> __m256i {
    // SAFETY: only called from AVX2 functions.
    unsafe { _mm256_add_epi8(x, _mm256_add_epi8(x, x)) }
}

#[inline(always)]
unsafe fn triple128(x: __m128i) -> __m128i {
    // SAFETY: SSE2 is part of the x86-64 baseline.
    unsafe { _mm_add_epi8(x, _mm_add_epi8(x, x)) }
}

/// Decodes a TQ1_0 block into eight vectors of codes (0, 1, 2 for −1, 0, +1), vector `k`
/// holding weights `32k .. 32k + 32` in order.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tq1_decode(blk: *const u8) -> [__m256i; 8] {
    let x80 = _mm256_set1_epi8(-128);
    // SAFETY: 52 readable bytes at `blk` (caller's contract).
    unsafe {
        // qs[0..32]: digit n of byte m is weight 32n + m.
        let mut x = _mm256_xor_si256(load256(blk), x80);
        let c0 = tq1_digit256(x);
        x = triple256(x);
        let c1 = tq1_digit256(x);
        x = triple256(x);
        let c2 = tq1_digit256(x);
        x = triple256(x);
        let c3 = tq1_digit256(x);
        x = triple256(x);
        let c4 = tq1_digit256(x);
        // qs[32..48]: digit n of byte m is weight 160 + 16n + m, so [y, 3y] covers 160..192.
        let y = _mm_xor_si128(load128(blk.add(32)), _mm256_castsi256_si128(x80));
        let y = _mm256_set_m128i(triple128(y), y);
        let c5 = tq1_digit256(y);
        let y = triple256(triple256(y));
        let c6 = tq1_digit256(y);
        let y = triple256(triple256(y));
        // qh[0..4]: digit n of byte m is weight 240 + 4n + m.
        let qh = (blk.add(48) as *const i32).read_unaligned();
        let h0 = _mm_xor_si128(_mm_set1_epi32(qh), _mm256_castsi256_si128(x80));
        let h1 = triple128(h0);
        let h2 = triple128(h1);
        let h3 = triple128(h2);
        let h = _mm_blend_epi32::<0b0010>(h0, h1);
        let h = _mm_blend_epi32::<0b0100>(h, h2);
        let h = _mm_blend_epi32::<0b1000>(h, h3);
        let c7 = tq1_digit256(_mm256_set_m128i(h, _mm256_castsi256_si128(y)));
        [c0, c1, c2, c3, c4, c5, c6, c7]
    }
}

/// AVX2 TQ1_0.
///
/// # Safety
/// The CPU supports AVX2 and F16C.
#[target_feature(enable = "avx2,fma")]
unsafe fn tq1_0_avx2(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let rows = out.len();
    if rows == 0 {
        return;
    }
    let nb = row_bytes / TQ1_0_BLOCK_BYTES;
    check_q8(w, row_bytes, rows, nb, 2, a, 128);
    let ones = _mm256_set1_epi16(1);
    let mut r = 0;
    while r < rows {
        // SAFETY: r < rows; all reads stay within the checked slices.
        unsafe {
            let p = row_ptrs(w, row_bytes, rows, r);
            let mut acc = _mm_setzero_ps();
            for b in 0..nb {
                let off = b * TQ1_0_BLOCK_BYTES;
                prefetch_ahead(w, row_bytes, r, b, TQ1_0_BLOCK_BYTES);
                let dw = f16x4(p, off + 52);
                let q = a.qs.as_ptr().add(b * 256) as *const u8;
                let mut sums = [[_mm256_setzero_si256(); 4]; 2];
                for (rr, p) in p.iter().enumerate() {
                    let c = tq1_decode(p.add(off));
                    for h in 0..2 {
                        let mut s = _mm256_setzero_si256();
                        for k in 0..4 {
                            let qa = load256(q.add(128 * h + 32 * k));
                            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(c[4 * h + k], qa));
                        }
                        sums[h][rr] = _mm256_madd_epi16(s, ones);
                    }
                }
                for (h, s) in sums.iter().enumerate() {
                    let ab = 2 * b + h;
                    let s = hsum4(s[0], s[1], s[2], s[3]);
                    let s = _mm_sub_epi32(s, _mm_set1_epi32(*a.sums.get_unchecked(ab)));
                    acc = fma_block(acc, dw, *a.d.get_unchecked(ab), s);
                }
            }
            store_rows(out, r, core::mem::transmute::<__m128, [f32; 4]>(acc));
        }
        r += 4;
    }
}

/// AVX2 Q8_0 (int8 × int8 through exact 16-bit products).
///
/// # Safety
/// The CPU supports AVX2 and F16C.
#[target_feature(enable = "avx2,fma")]
unsafe fn q8_0_avx2(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let rows = out.len();
    if rows == 0 {
        return;
    }
    let nb = row_bytes / Q8_0_BLOCK_BYTES;
    check_q8(w, row_bytes, rows, nb, 1, a, 32);
    let mut r = 0;
    while r < rows {
        // SAFETY: r < rows; all reads stay within the checked slices.
        unsafe {
            let p = row_ptrs(w, row_bytes, rows, r);
            let mut acc = _mm_setzero_ps();
            for b in 0..nb {
                let off = b * Q8_0_BLOCK_BYTES;
                prefetch_ahead(w, row_bytes, r, b, Q8_0_BLOCK_BYTES);
                let q = a.qs.as_ptr().add(b * 32) as *const u8;
                let qa0 = _mm256_cvtepi8_epi16(load128(q));
                let qa1 = _mm256_cvtepi8_epi16(load128(q.add(16)));
                let mut s = [_mm256_setzero_si256(); 4];
                for (rr, s) in s.iter_mut().enumerate() {
                    let w0 = _mm256_cvtepi8_epi16(load128(p[rr].add(off + 2)));
                    let w1 = _mm256_cvtepi8_epi16(load128(p[rr].add(off + 18)));
                    *s = _mm256_add_epi32(_mm256_madd_epi16(w0, qa0), _mm256_madd_epi16(w1, qa1));
                }
                let dw = f16x4(p, off);
                let s = hsum4(s[0], s[1], s[2], s[3]);
                acc = fma_block(acc, dw, *a.d.get_unchecked(b), s);
            }
            store_rows(out, r, core::mem::transmute::<__m128, [f32; 4]>(acc));
        }
        r += 4;
    }
}

/// Shared Q4_0 / Q4_1 AVX2 body: `Σ nibble · q` per row and block, then the format's epilogue.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn q4_avx2<const Q41: bool>(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let rows = out.len();
    if rows == 0 {
        return;
    }
    let bb = if Q41 {
        Q4_1_BLOCK_BYTES
    } else {
        Q4_0_BLOCK_BYTES
    };
    let qo = if Q41 { 4 } else { 2 };
    let nb = row_bytes / bb;
    check_q8(w, row_bytes, rows, nb, 1, a, 32);
    let m4 = _mm256_set1_epi8(0xf);
    let ones = _mm256_set1_epi16(1);
    let mut r = 0;
    while r < rows {
        // SAFETY: r < rows; all reads stay within the checked slices.
        unsafe {
            let p = row_ptrs(w, row_bytes, rows, r);
            let mut acc = _mm_setzero_ps();
            for b in 0..nb {
                let off = b * bb;
                prefetch_ahead(w, row_bytes, r, b, bb);
                let qa = load256(a.qs.as_ptr().add(b * 32) as *const u8);
                let mut s = [_mm256_setzero_si256(); 4];
                for (rr, s) in s.iter_mut().enumerate() {
                    let x = load128(p[rr].add(off + qo));
                    // Low nibbles are weights 0..16, high nibbles 16..32.
                    let x = _mm256_set_m128i(_mm_srli_epi16::<4>(x), x);
                    let x = _mm256_and_si256(x, m4);
                    *s = _mm256_madd_epi16(_mm256_maddubs_epi16(x, qa), ones);
                }
                let dw = f16x4(p, off);
                let isum = hsum4(s[0], s[1], s[2], s[3]);
                let ab = *a.sums.get_unchecked(b);
                let d = *a.d.get_unchecked(b);
                if Q41 {
                    let m = f16x4(p, off + 2);
                    let t = _mm_add_ps(
                        _mm_mul_ps(_mm_mul_ps(dw, _mm_set1_ps(d)), _mm_cvtepi32_ps(isum)),
                        _mm_mul_ps(_mm_mul_ps(m, _mm_set1_ps(d)), _mm_set1_ps(ab as f32)),
                    );
                    acc = _mm_add_ps(acc, t);
                } else {
                    let isum = _mm_sub_epi32(isum, _mm_set1_epi32(8 * ab));
                    acc = fma_block(acc, dw, d, isum);
                }
            }
            store_rows(out, r, core::mem::transmute::<__m128, [f32; 4]>(acc));
        }
        r += 4;
    }
}

/// Loads elements `j..j + 8` of a float row as `f32` (`KIND`: 0 f32, 1 f16, 2 bf16).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load8<const KIND: u8>(row: *const u8, j: usize) -> __m256 {
    // SAFETY: the caller guarantees elements j..j + 8 are inside the row.
    unsafe {
        match KIND {
            0 => _mm256_loadu_ps(row.add(4 * j) as *const f32),
            1 => cvtph_ps256(load128(row.add(2 * j))),
            _ => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(load128(
                row.add(2 * j),
            )))),
        }
    }
}

/// Shared F32 / F16 / BF16 AVX2 body (`KIND`: 0 f32, 1 f16, 2 bf16).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn matvec_float_avx2<const KIND: u8>(
    w: &[u8],
    row_bytes: usize,
    x: &[f32],
    out: &mut [f32],
) {
    let rows = out.len();
    if rows == 0 {
        return;
    }
    let esize = if KIND == 0 { 4 } else { 2 };
    let n = x.len();
    assert!(row_bytes >= n * esize, "row too short");
    assert!(w.len() >= rows * row_bytes, "weight slice too short");
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: row r holds `n` elements of `esize` bytes inside `w` (checked above).
        unsafe {
            let row = w.as_ptr().add(r * row_bytes);
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            let xp = x.as_ptr();
            let mut j = 0;
            while j + 32 <= n {
                a0 = _mm256_fmadd_ps(load8::<KIND>(row, j), _mm256_loadu_ps(xp.add(j)), a0);
                a1 = _mm256_fmadd_ps(
                    load8::<KIND>(row, j + 8),
                    _mm256_loadu_ps(xp.add(j + 8)),
                    a1,
                );
                a2 = _mm256_fmadd_ps(
                    load8::<KIND>(row, j + 16),
                    _mm256_loadu_ps(xp.add(j + 16)),
                    a2,
                );
                a3 = _mm256_fmadd_ps(
                    load8::<KIND>(row, j + 24),
                    _mm256_loadu_ps(xp.add(j + 24)),
                    a3,
                );
                j += 32;
            }
            while j + 8 <= n {
                a0 = _mm256_fmadd_ps(load8::<KIND>(row, j), _mm256_loadu_ps(xp.add(j)), a0);
                j += 8;
            }
            let mut acc = hsum_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
            let rs = core::slice::from_raw_parts(row, row_bytes);
            while j < n {
                let v = match KIND {
                    0 => {
                        f32::from_le_bytes([rs[4 * j], rs[4 * j + 1], rs[4 * j + 2], rs[4 * j + 3]])
                    }
                    1 => crate::f16::le_f16(rs, 2 * j),
                    _ => crate::f16::bf16_to_f32(crate::f16::le_u16(rs, 2 * j)),
                };
                acc += v * x[j];
                j += 1;
            }
            *o = acc;
        }
    }
}

/// Query heads whose accumulators one pass of the attention kernels keeps in registers.
const HEADS: usize = 4;

/// AVX2 attention scores: each key row is converted from f16 once and met by up to four query
/// heads (the heads of a grouped-query group share their keys).
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_f16_avx2(k: &[u16], q: &[f32], hd: usize, scores: &mut [f32]) {
    if hd == 0 {
        return;
    }
    let n = k.len() / hd;
    let g = q.len() / hd;
    assert!(scores.len() >= g * n, "scores too short");
    let (kp, qp) = (k.as_ptr() as *const u8, q.as_ptr());
    let mut j0 = 0;
    while j0 < g {
        let gj = core::cmp::min(HEADS, g - j0);
        for p in 0..n {
            // SAFETY: every load reads inside key row `p` (n · hd halves) or query rows
            // `j0 .. j0 + gj` (g · hd floats).
            unsafe {
                let kr = kp.add(2 * p * hd);
                let mut acc = [[_mm256_setzero_ps(); 2]; HEADS];
                let mut c = 0;
                while c + 16 <= hd {
                    let k0 = cvtph_ps256(load128(kr.add(2 * c)));
                    let k1 = cvtph_ps256(load128(kr.add(2 * c + 16)));
                    for (jj, a) in acc.iter_mut().enumerate().take(gj) {
                        let qr = qp.add((j0 + jj) * hd + c);
                        a[0] = _mm256_fmadd_ps(k0, _mm256_loadu_ps(qr), a[0]);
                        a[1] = _mm256_fmadd_ps(k1, _mm256_loadu_ps(qr.add(8)), a[1]);
                    }
                    c += 16;
                }
                if c + 8 <= hd {
                    let k0 = cvtph_ps256(load128(kr.add(2 * c)));
                    for (jj, a) in acc.iter_mut().enumerate().take(gj) {
                        let qr = qp.add((j0 + jj) * hd + c);
                        a[0] = _mm256_fmadd_ps(k0, _mm256_loadu_ps(qr), a[0]);
                    }
                    c += 8;
                }
                for (jj, a) in acc.iter().enumerate().take(gj) {
                    let j = j0 + jj;
                    let s = hsum_ps(_mm256_add_ps(a[0], a[1]));
                    let (kt, qt) = (&k[p * hd + c..(p + 1) * hd], &q[j * hd + c..(j + 1) * hd]);
                    scores[j * n + p] = s + crate::scalar::dot_f16(kt, qt);
                }
            }
        }
        j0 += gj;
    }
}

/// AVX2 weighted value sums: for each 16 columns, up to four heads' accumulators stay in
/// registers while every value row of the block is converted from f16 once and added to all
/// of them.
#[target_feature(enable = "avx2,fma")]
unsafe fn mix_f16_avx2(w: &[f32], v: &[u16], hd: usize, acc: &mut [f32]) {
    if hd == 0 {
        return;
    }
    let n = v.len() / hd;
    let g = acc.len() / hd;
    assert!(w.len() >= g * n, "weights too short");
    let (vp, ap) = (v.as_ptr() as *const u8, acc.as_mut_ptr());
    let mut j0 = 0;
    while j0 < g {
        let gj = core::cmp::min(HEADS, g - j0);
        let mut c = 0;
        // SAFETY: every access is inside value rows `0 .. n` at columns below `hd`, or
        // accumulator rows `j0 .. j0 + gj` (g · hd floats).
        unsafe {
            while c + 16 <= hd {
                let mut a = [[_mm256_setzero_ps(); 2]; HEADS];
                for (jj, a) in a.iter_mut().enumerate().take(gj) {
                    let r = ap.add((j0 + jj) * hd + c);
                    *a = [_mm256_loadu_ps(r), _mm256_loadu_ps(r.add(8))];
                }
                for p in 0..n {
                    let vr = vp.add(2 * (p * hd + c));
                    let v0 = cvtph_ps256(load128(vr));
                    let v1 = cvtph_ps256(load128(vr.add(16)));
                    for (jj, a) in a.iter_mut().enumerate().take(gj) {
                        let wv = _mm256_set1_ps(*w.get_unchecked((j0 + jj) * n + p));
                        a[0] = _mm256_fmadd_ps(wv, v0, a[0]);
                        a[1] = _mm256_fmadd_ps(wv, v1, a[1]);
                    }
                }
                for (jj, a) in a.iter().enumerate().take(gj) {
                    let r = ap.add((j0 + jj) * hd + c);
                    _mm256_storeu_ps(r, a[0]);
                    _mm256_storeu_ps(r.add(8), a[1]);
                }
                c += 16;
            }
        }
        j0 += gj;
    }
    crate::scalar::mix_f16_columns(w, v, hd, acc, hd - hd % 16);
}

// ------------------------------------------------------------------------------------------------
// AVX-512 VNNI kernels (need the AVX-512 intrinsics stabilized in Rust 1.89).

// Compiled only when the build script found a compiler with these intrinsics (1.89+).
#[cfg(trillim_avx512)]
pub(crate) use avx512::{tq1_digit512, triple512};

#[cfg(trillim_avx512)]
#[allow(clippy::incompatible_msrv)]
mod avx512 {
    use super::*;

    /// Sums four `i32x16` vectors whose lower and upper 256 bits belong to two different blocks:
    /// returns `([Σlo(v0), Σlo(v1), Σlo(v2), Σlo(v3)], [Σhi(v0), …])`, exactly.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn hsum4_pairs(v: [__m512i; 4]) -> (__m128i, __m128i) {
        let t01 = _mm512_add_epi32(
            _mm512_unpacklo_epi32(v[0], v[1]),
            _mm512_unpackhi_epi32(v[0], v[1]),
        );
        let t23 = _mm512_add_epi32(
            _mm512_unpacklo_epi32(v[2], v[3]),
            _mm512_unpackhi_epi32(v[2], v[3]),
        );
        // Each 128-bit lane k now holds [v0, v1, v2, v3] summed over lane k.
        let u = _mm512_add_epi32(
            _mm512_unpacklo_epi64(t01, t23),
            _mm512_unpackhi_epi64(t01, t23),
        );
        let s = _mm512_add_epi32(u, _mm512_shuffle_i32x4::<0b10_11_00_01>(u, u));
        (_mm512_castsi512_si128(s), _mm512_extracti32x4_epi32::<2>(s))
    }

    #[inline(always)]
    pub(super) unsafe fn load512(p: *const u8) -> __m512i {
        // SAFETY: the caller guarantees 64 readable bytes at `p`.
        unsafe { _mm512_loadu_si512(p as *const _) }
    }

    /// `[q[32l..32l + 32] | q[128 + 32l..128 + 32l + 32]]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
    unsafe fn act_pair(q: *const u8, l: usize) -> __m512i {
        // SAFETY: the caller guarantees 256 activations at `q` and l < 4.
        unsafe {
            _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(load256(q.add(32 * l))),
                load256(q.add(128 + 32 * l)),
            )
        }
    }

    /// Two consecutive 128-weight blocks of 2-bit codes (64 bytes per row at `p[i] + off`, half `h`
    /// at bytes `32h..32h+32` laid out as in [`tern2_block_avx2`]) against 256 activations at `q`.
    /// Returns the four rows' `Σ code · q` of each block.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
    pub(super) unsafe fn tern2_pair_vnni<const REV: bool>(
        p: [*const u8; 4],
        off: usize,
        q: *const i8,
    ) -> (__m128i, __m128i) {
        let m3 = _mm512_set1_epi8(3);
        // SAFETY: 256 activations at `q`, 64 code bytes at each `p[i] + off` (caller's contract).
        unsafe {
            let q = q as *const u8;
            let a = [
                act_pair(q, 0),
                act_pair(q, 1),
                act_pair(q, 2),
                act_pair(q, 3),
            ];
            let mut acc = [_mm512_setzero_si512(); 4];
            for (r, acc) in acc.iter_mut().enumerate() {
                let w = load512(p[r].add(off));
                let c0 = _mm512_and_si512(w, m3);
                let c1 = _mm512_and_si512(_mm512_srli_epi16::<2>(w), m3);
                let c2 = _mm512_and_si512(_mm512_srli_epi16::<4>(w), m3);
                let c3 = _mm512_and_si512(_mm512_srli_epi16::<6>(w), m3);
                let (c0, c1, c2, c3) = if REV {
                    (c3, c2, c1, c0)
                } else {
                    (c0, c1, c2, c3)
                };
                let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c0, a[0]);
                let s = _mm512_dpbusd_epi32(s, c1, a[1]);
                let s = _mm512_dpbusd_epi32(s, c2, a[2]);
                *acc = _mm512_dpbusd_epi32(s, c3, a[3]);
            }
            hsum4_pairs(acc)
        }
    }

    /// AVX-512 VNNI TQ2_0.
    ///
    /// # Safety
    /// The CPU supports AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    pub(super) unsafe fn tq2_0_vnni(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
        let rows = out.len();
        if rows == 0 {
            return;
        }
        let nb = row_bytes / TQ2_0_BLOCK_BYTES;
        check_q8(w, row_bytes, rows, nb, 2, a, 128);
        let mut r = 0;
        while r < rows {
            // SAFETY: r < rows; all reads stay within the checked slices (the 64-byte load covers
            // exactly a block's codes).
            unsafe {
                let p = row_ptrs(w, row_bytes, rows, r);
                let mut acc = _mm_setzero_ps();
                for b in 0..nb {
                    let off = b * TQ2_0_BLOCK_BYTES;
                    prefetch_ahead(w, row_bytes, r, b, TQ2_0_BLOCK_BYTES);
                    let (s0, s1) = tern2_pair_vnni::<false>(p, off, a.qs.as_ptr().add(b * 256));
                    let dw = f16x4(p, off + 64);
                    let s0 = _mm_sub_epi32(s0, _mm_set1_epi32(*a.sums.get_unchecked(2 * b)));
                    acc = fma_block(acc, dw, *a.d.get_unchecked(2 * b), s0);
                    let s1 = _mm_sub_epi32(s1, _mm_set1_epi32(*a.sums.get_unchecked(2 * b + 1)));
                    acc = fma_block(acc, dw, *a.d.get_unchecked(2 * b + 1), s1);
                }
                store_rows(out, r, core::mem::transmute::<__m128, [f32; 4]>(acc));
            }
            r += 4;
        }
    }

    /// AVX-512 VNNI I2_S.
    ///
    /// # Safety
    /// The CPU supports AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    pub(super) unsafe fn i2s_vnni(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
        let rows = out.len();
        if rows == 0 {
            return;
        }
        let ng = row_bytes / 32;
        check_q8(w, row_bytes, rows, ng, 1, a, 128);
        let mut r = 0;
        while r < rows {
            // SAFETY: r < rows; all reads stay within the checked slices.
            unsafe {
                let p = row_ptrs(w, row_bytes, rows, r);
                let mut acc = _mm_setzero_ps();
                let step = |acc: __m128, g: usize, s: __m128i| -> __m128 {
                    // SAFETY: g < ng, inside the checked activation slices.
                    unsafe {
                        let s = _mm_sub_epi32(s, _mm_set1_epi32(*a.sums.get_unchecked(g)));
                        _mm_add_ps(
                            acc,
                            _mm_mul_ps(_mm_set1_ps(*a.d.get_unchecked(g)), _mm_cvtepi32_ps(s)),
                        )
                    }
                };
                let mut g = 0;
                while g + 2 <= ng {
                    prefetch_ahead(w, row_bytes, r, g / 2, 64);
                    let (s0, s1) = tern2_pair_vnni::<true>(p, 32 * g, a.qs.as_ptr().add(g * 128));
                    acc = step(acc, g, s0);
                    acc = step(acc, g + 1, s1);
                    g += 2;
                }
                if g < ng {
                    let s = tern2_block_avx2::<true>(p, 32 * g, a.qs.as_ptr().add(g * 128));
                    acc = step(acc, g, s);
                }
                store_rows(out, r, core::mem::transmute::<__m128, [f32; 4]>(acc));
            }
            r += 4;
        }
    }

    /// TQ1_0 codes (0, 1, 2) of 64 bytes already multiplied by `3^n` (mod 256):
    /// `[q ≥ 86] + [q ≥ 171]`, with unsigned compares into mask registers.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn tq1_digit512(q: __m512i) -> __m512i {
        let k1 = _mm512_cmpge_epu8_mask(q, _mm512_set1_epi8(86));
        let k2 = _mm512_cmpge_epu8_mask(q, _mm512_set1_epi8(171u8 as i8));
        let c = _mm512_maskz_mov_epi8(k1, _mm512_set1_epi8(1));
        _mm512_mask_mov_epi8(c, k2, _mm512_set1_epi8(2))
    }

    /// [`tq1_digit512`] for 16 bytes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn tq1_digit128(q: __m128i) -> __m128i {
        let k1 = _mm_cmpge_epu8_mask(q, _mm_set1_epi8(86));
        let k2 = _mm_cmpge_epu8_mask(q, _mm_set1_epi8(171u8 as i8));
        let c = _mm_maskz_mov_epi8(k1, _mm_set1_epi8(1));
        _mm_mask_mov_epi8(c, k2, _mm_set1_epi8(2))
    }

    /// Bytewise `3q` (mod 256).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn triple512(q: __m512i) -> __m512i {
        _mm512_add_epi8(q, _mm512_add_epi8(q, q))
    }

    /// Sums each 128-bit lane of `v` (lane `i` belongs to row `i`): `[Σ lane 0, …, Σ lane 3]`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn lane_sums(v: __m512i) -> __m128i {
        let v = _mm512_add_epi32(v, _mm512_shuffle_epi32::<0b01_00_11_10>(v));
        let v = _mm512_add_epi32(v, _mm512_shuffle_epi32::<0b10_11_00_01>(v));
        let idx = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        _mm512_castsi512_si128(_mm512_permutexvar_epi32(idx, v))
    }

    /// Folds two row-pair vectors (row `2k` in the lower 256 bits of `p[k]`, row `2k + 1` in
    /// the upper) into one vector whose 128-bit lane `i` sums row `i`'s two lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn pairs_to_lanes(p01: __m512i, p23: __m512i) -> __m512i {
        _mm512_add_epi32(
            _mm512_shuffle_i64x2::<0b10_00_10_00>(p01, p23),
            _mm512_shuffle_i64x2::<0b11_01_11_01>(p01, p23),
        )
    }

    /// AVX-512 VNNI TQ1_0, four rows per pass. The block's three segments are decoded with
    /// 512-bit digit extraction: `qs[0..32]` of two rows per register (five digits: weights
    /// `32n + m`), `qs[32..48]` of all four rows in one register (weights `160 + 16n + m`) and
    /// `qh` of the four rows in one 128-bit register (weights `240 + 4n + m`); each digit
    /// vector meets its activations, broadcast to every row, in one `vpdpbusd`. The two
    /// 128-weight halves keep separate integer sums, as in the scalar reference.
    ///
    /// # Safety
    /// The CPU supports AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    pub(super) unsafe fn tq1_0_vnni(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
        let rows = out.len();
        if rows == 0 {
            return;
        }
        let nb = row_bytes / TQ1_0_BLOCK_BYTES;
        check_q8(w, row_bytes, rows, nb, 2, a, 128);
        let zero = _mm512_setzero_si512();
        let mut r = 0;
        while r < rows {
            // SAFETY: r < rows; all reads stay within the checked slices (a block is 54 bytes:
            // qs at 0..48, qh at 48..52, the scale at 52..54).
            unsafe {
                let p = row_ptrs(w, row_bytes, rows, r);
                let mut acc = _mm_setzero_ps();
                for b in 0..nb {
                    let off = b * TQ1_0_BLOCK_BYTES;
                    prefetch_ahead(w, row_bytes, r, b, TQ1_0_BLOCK_BYTES);
                    let q = a.qs.as_ptr().add(b * 256) as *const u8;
                    // qs[0..32], two rows per register.
                    let act: [__m512i; 5] =
                        core::array::from_fn(|n| _mm512_broadcast_i64x4(load256(q.add(32 * n))));
                    let mut lo = [zero; 2];
                    let mut hi = [zero; 2];
                    for k in 0..2 {
                        let mut x = _mm512_inserti64x4::<1>(
                            _mm512_castsi256_si512(load256(p[2 * k].add(off))),
                            load256(p[2 * k + 1].add(off)),
                        );
                        for an in &act[..4] {
                            lo[k] = _mm512_dpbusd_epi32(lo[k], tq1_digit512(x), *an);
                            x = triple512(x);
                        }
                        hi[k] = _mm512_dpbusd_epi32(zero, tq1_digit512(x), act[4]);
                    }
                    // qs[32..48] of the four rows, one row per 128-bit lane.
                    let mut y = _mm512_castsi128_si512(load128(p[0].add(off + 32)));
                    y = _mm512_inserti32x4::<1>(y, load128(p[1].add(off + 32)));
                    y = _mm512_inserti32x4::<2>(y, load128(p[2].add(off + 32)));
                    y = _mm512_inserti32x4::<3>(y, load128(p[3].add(off + 32)));
                    let mut mid = zero;
                    for n in 0..5 {
                        let bn = _mm512_broadcast_i32x4(load128(q.add(160 + 16 * n)));
                        mid = _mm512_dpbusd_epi32(mid, tq1_digit512(y), bn);
                        y = triple512(y);
                    }
                    // qh of the four rows, one row per 32-bit lane.
                    let qh = |i: usize| (p[i].add(off + 48) as *const i32).read_unaligned();
                    let mut h = _mm_setr_epi32(qh(0), qh(1), qh(2), qh(3));
                    let mut tail = _mm_setzero_si128();
                    for n in 0..4 {
                        let cn =
                            _mm_set1_epi32((q.add(240 + 4 * n) as *const i32).read_unaligned());
                        tail = _mm_dpbusd_epi32(tail, tq1_digit128(h), cn);
                        h = triple128(h);
                    }
                    let s0 = lane_sums(pairs_to_lanes(lo[0], lo[1]));
                    let s1 = _mm_add_epi32(
                        lane_sums(_mm512_add_epi32(pairs_to_lanes(hi[0], hi[1]), mid)),
                        tail,
                    );
                    let dw = f16x4(p, off + 52);
                    for (h, s) in [s0, s1].into_iter().enumerate() {
                        let ab = 2 * b + h;
                        let s = _mm_sub_epi32(s, _mm_set1_epi32(*a.sums.get_unchecked(ab)));
                        acc = fma_block(acc, dw, *a.d.get_unchecked(ab), s);
                    }
                }
                store_rows(out, r, core::mem::transmute::<__m128, [f32; 4]>(acc));
            }
            r += 4;
        }
    }

    /// Pointers to rows `r .. r + 8` of `w` (the last row repeated past `rows`), and their byte
    /// offsets from the first as gather indices.
    ///
    /// # Safety
    /// `r < rows`, `w` holds `rows * row_bytes` bytes and `8 * row_bytes` fits in an `i32`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn rows8(
        w: &[u8],
        row_bytes: usize,
        rows: usize,
        r: usize,
    ) -> ([*const u8; 8], __m256i) {
        let row = |i: usize| core::cmp::min(r + i, rows - 1);
        // SAFETY: row(i) < rows, so every offset stays inside `w` (caller's contract).
        let p = core::array::from_fn(|i| unsafe { w.as_ptr().add(row(i) * row_bytes) });
        let o = |i: usize| ((row(i) - r) * row_bytes) as i32;
        let idx = _mm256_setr_epi32(o(0), o(1), o(2), o(3), o(4), o(5), o(6), o(7));
        (p, idx)
    }

    /// Sums each of eight `i32x8` vectors: `[Σv0, …, Σv7]` (exact, wrapping).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn hsum8(v: [__m256i; 8]) -> __m256i {
        let ab = _mm256_hadd_epi32(v[0], v[1]);
        let cd = _mm256_hadd_epi32(v[2], v[3]);
        let ef = _mm256_hadd_epi32(v[4], v[5]);
        let gh = _mm256_hadd_epi32(v[6], v[7]);
        // Lane-wise: the lower 128 bits hold the sums of the rows' lower halves, the upper 128
        // bits those of their upper halves.
        let abcd = _mm256_hadd_epi32(ab, cd);
        let efgh = _mm256_hadd_epi32(ef, gh);
        _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(abcd, efgh),
            _mm256_permute2x128_si256::<0x31>(abcd, efgh),
        )
    }

    /// The little-endian `u32` at byte `off` of each of the eight rows at `base + idx[i]`.
    ///
    /// # Safety
    /// Four bytes are readable at every `base + idx[i] + off`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn gather8(base: *const u8, off: usize, idx: __m256i) -> __m256i {
        // SAFETY: the caller's contract; the gather reads exactly those bytes.
        unsafe { _mm256_i32gather_epi32::<1>(base.add(off) as *const i32, idx) }
    }

    /// The f16 in the low (`HI = false`) or high half of each `u32` lane, as `f32`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx2")]
    unsafe fn f16_lanes<const HI: bool>(h: __m256i) -> __m256 {
        let h = if HI { _mm256_srli_epi32::<16>(h) } else { h };
        // SAFETY: the path contract includes F16C.
        unsafe { cvtph_ps256(_mm256_cvtepi32_epi16(h)) }
    }

    /// Bytes of an eight-row group up to which the next group is prefetched into L1: the
    /// group being read and the one being fetched then fit in a 32 KiB L1. Larger groups (the
    /// 2B4T output matrix has 21 KiB groups) go to L2; from memory that is 1.5× faster for
    /// them, while 12 KiB groups (Q4 rows of 2560) run slightly faster from L1
    /// (`decode_matvec_dram` in `cargo bench -p trillim-runtime`).
    const L1_GROUP_BYTES: usize = 16 << 10;

    /// Prefetches block `b` of the eight-row group after the one at row `r` (the eight rows
    /// are contiguous, so this is a linear sweep `8 · bb` bytes per block).
    #[inline(always)]
    fn prefetch_ahead8(w: &[u8], row_bytes: usize, r: usize, b: usize, bb: usize) {
        let start = (r + 8) * row_bytes + b * 8 * bb;
        let p = w.as_ptr().wrapping_add(start);
        let to_l1 = 8 * row_bytes <= L1_GROUP_BYTES;
        let mut k = 0;
        while k < 8 * bb {
            let q = p.wrapping_add(k) as *const i8;
            // SAFETY: prefetches have no architectural effect and never fault.
            unsafe {
                if to_l1 {
                    _mm_prefetch::<_MM_HINT_T0>(q)
                } else {
                    _mm_prefetch::<_MM_HINT_T1>(q)
                }
            };
            k += 64;
        }
    }

    /// Stores the first `min(8, out.len() - r)` lanes of `v` at `out[r..]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl")]
    unsafe fn store8(out: &mut [f32], r: usize, v: __m256) {
        let n = core::cmp::min(8, out.len() - r);
        let dst = &mut out[r..r + n];
        // SAFETY: `dst` holds `n` floats and the masked store writes only the first `n` lanes.
        unsafe { _mm256_mask_storeu_ps(dst.as_mut_ptr(), ((1u32 << n) - 1) as u8, v) };
    }

    /// AVX-512 VNNI Q8_0: `Σ (w + 128) · q − 128 · Σq`, exact for every int8 pair; eight rows
    /// per pass share each activation load, and their scales arrive in one gather.
    ///
    /// # Safety
    /// The CPU supports AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    pub(super) unsafe fn q8_0_vnni(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
        let rows = out.len();
        if rows == 0 {
            return;
        }
        let bb = Q8_0_BLOCK_BYTES;
        let nb = row_bytes / bb;
        check_q8(w, row_bytes, rows, nb, 1, a, 32);
        let x80 = _mm256_set1_epi8(-128);
        let mut r = 0;
        while r < rows {
            // SAFETY: r < rows; all reads stay within the checked slices (every block starts
            // with its two-byte scale and holds 34 bytes, so the 4-byte gather stays inside).
            unsafe {
                let (p, idx) = rows8(w, row_bytes, rows, r);
                let mut acc = _mm256_setzero_ps();
                for b in 0..nb {
                    let off = b * bb;
                    prefetch_ahead8(w, row_bytes, r, b, bb);
                    let qa = load256(a.qs.as_ptr().add(b * 32) as *const u8);
                    let s: [__m256i; 8] = core::array::from_fn(|rr| {
                        let x = _mm256_xor_si256(load256(p[rr].add(off + 2)), x80);
                        _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, qa)
                    });
                    let isum = _mm256_sub_epi32(
                        hsum8(s),
                        _mm256_set1_epi32(128 * *a.sums.get_unchecked(b)),
                    );
                    let dw = f16_lanes::<false>(gather8(p[0], off, idx));
                    let d = _mm256_set1_ps(*a.d.get_unchecked(b));
                    acc = _mm256_add_ps(
                        acc,
                        _mm256_mul_ps(_mm256_mul_ps(dw, d), _mm256_cvtepi32_ps(isum)),
                    );
                }
                store8(out, r, acc);
            }
            r += 8;
        }
    }

    /// AVX-512 VNNI Q4_0 / Q4_1 (`Q41`), eight rows per pass as [`q8_0_vnni`]: nibbles are
    /// already unsigned, Q4_0's −8 offset is corrected by the activation block sum and Q4_1's
    /// minimum is applied with it.
    ///
    /// # Safety
    /// The CPU supports AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    pub(super) unsafe fn q4_vnni<const Q41: bool>(
        w: &[u8],
        row_bytes: usize,
        a: &ActQ8<'_>,
        out: &mut [f32],
    ) {
        let rows = out.len();
        if rows == 0 {
            return;
        }
        let bb = if Q41 {
            Q4_1_BLOCK_BYTES
        } else {
            Q4_0_BLOCK_BYTES
        };
        let qo = if Q41 { 4 } else { 2 };
        let nb = row_bytes / bb;
        check_q8(w, row_bytes, rows, nb, 1, a, 32);
        let m4 = _mm256_set1_epi8(0xf);
        let mut r = 0;
        while r < rows {
            // SAFETY: r < rows; all reads stay within the checked slices (a block holds at
            // least 18 bytes, so the 4-byte scale gather stays inside it).
            unsafe {
                let (p, idx) = rows8(w, row_bytes, rows, r);
                let mut acc = _mm256_setzero_ps();
                for b in 0..nb {
                    let off = b * bb;
                    prefetch_ahead8(w, row_bytes, r, b, bb);
                    let qa = load256(a.qs.as_ptr().add(b * 32) as *const u8);
                    let s: [__m256i; 8] = core::array::from_fn(|rr| {
                        let x = load128(p[rr].add(off + qo));
                        let x = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(x), x), m4);
                        _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, qa)
                    });
                    let isum = hsum8(s);
                    let h = gather8(p[0], off, idx);
                    let dw = f16_lanes::<false>(h);
                    let ab = *a.sums.get_unchecked(b);
                    let d = _mm256_set1_ps(*a.d.get_unchecked(b));
                    if Q41 {
                        let m = f16_lanes::<true>(h);
                        let t = _mm256_add_ps(
                            _mm256_mul_ps(_mm256_mul_ps(dw, d), _mm256_cvtepi32_ps(isum)),
                            _mm256_mul_ps(_mm256_mul_ps(m, d), _mm256_set1_ps(ab as f32)),
                        );
                        acc = _mm256_add_ps(acc, t);
                    } else {
                        let isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(8 * ab));
                        acc = _mm256_add_ps(
                            acc,
                            _mm256_mul_ps(_mm256_mul_ps(dw, d), _mm256_cvtepi32_ps(isum)),
                        );
                    }
                }
                store8(out, r, acc);
            }
            r += 8;
        }
    }
}
#[cfg(trillim_avx512)]
use avx512::*;

// ------------------------------------------------------------------------------------------------
// Safe wrappers stored in the kernel table. They are reachable only through the unsafe
// `Kernels` constructors, whose contract is that the CPU supports the path's features.

macro_rules! wrap_q8 {
    ($($name:ident => $inner:expr;)*) => {$(
        pub(crate) fn $name(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
            // SAFETY: only reachable through a `Kernels` constructor whose caller promised the
            // CPU supports this path's target features.
            unsafe { $inner(w, row_bytes, a, out) }
        }
    )*};
}

macro_rules! wrap_f32 {
    ($($name:ident => $inner:expr;)*) => {$(
        pub(crate) fn $name(w: &[u8], row_bytes: usize, x: &[f32], out: &mut [f32]) {
            // SAFETY: only reachable through a `Kernels` constructor whose caller promised the
            // CPU supports this path's target features.
            unsafe { $inner(w, row_bytes, x, out) }
        }
    )*};
}

wrap_q8! {
    avx2_tq2_0 => tq2_0_avx2;
    avx2_i2s => i2s_avx2;
    avx2_tq1_0 => tq1_0_avx2;
    avx2_q8_0 => q8_0_avx2;
    avx2_q4_0 => q4_avx2::<false>;
    avx2_q4_1 => q4_avx2::<true>;
}

#[cfg(trillim_avx512)]
wrap_q8! {
    vnni_tq2_0 => tq2_0_vnni;
    vnni_i2s => i2s_vnni;
    vnni_tq1_0 => tq1_0_vnni;
    vnni_q8_0 => q8_0_vnni;
    vnni_q4_0 => q4_vnni::<false>;
    vnni_q4_1 => q4_vnni::<true>;
}

// Multi-token entries of the AVX2 path: the matrix-vector kernels once per token.
crate::scalar::gemm_from_matvec!(pub(crate) avx2_gemm_tq2_0, avx2_tq2_0);
crate::scalar::gemm_from_matvec!(pub(crate) avx2_gemm_i2s, avx2_i2s);
crate::scalar::gemm_from_matvec!(pub(crate) avx2_gemm_tq1_0, avx2_tq1_0);
crate::scalar::gemm_from_matvec!(pub(crate) avx2_gemm_q8_0, avx2_q8_0);
crate::scalar::gemm_from_matvec!(pub(crate) avx2_gemm_q4_0, avx2_q4_0);
crate::scalar::gemm_from_matvec!(pub(crate) avx2_gemm_q4_1, avx2_q4_1);

wrap_f32! {
    avx2_f32 => matvec_float_avx2::<0>;
    avx2_f16 => matvec_float_avx2::<1>;
    avx2_bf16 => matvec_float_avx2::<2>;
}

pub(crate) fn avx2_scores_f16(k: &[u16], q: &[f32], hd: usize, scores: &mut [f32]) {
    // SAFETY: only reachable through a `Kernels` constructor whose caller promised AVX2/FMA/F16C.
    unsafe { scores_f16_avx2(k, q, hd, scores) }
}

pub(crate) fn avx2_mix_f16(w: &[f32], v: &[u16], hd: usize, acc: &mut [f32]) {
    // SAFETY: only reachable through a `Kernels` constructor whose caller promised AVX2/FMA/F16C.
    unsafe { mix_f16_avx2(w, v, hd, acc) }
}

// ------------------------------------------------------------------------------------------------
// Feature detection with `cpuid` alone (no OS calls), used to re-check caller-supplied features.

/// Features this crate's x86-64 paths use, as reported by `cpuid` and enabled by the OS in XCR0.
///
/// AMX is deliberately not reported: using it needs a permission request to the OS
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM)`) and some CPUs advertise it in `cpuid` but fault on use.
pub fn cpuid_features() -> crate::CpuFeatures {
    let mut f = crate::CpuFeatures::default();
    // SAFETY: `cpuid` is available on every x86-64 CPU.
    let l0 = unsafe { __cpuid(0) };
    if l0.eax < 7 {
        return f;
    }
    // SAFETY: leaf 1 exists (max leaf ≥ 7).
    let l1 = unsafe { __cpuid(1) };
    // SAFETY: leaf 7 exists (max leaf ≥ 7).
    let l7 = unsafe { __cpuid_count(7, 0) };
    let osxsave = l1.ecx & (1 << 27) != 0;
    if !osxsave {
        return f;
    }
    // SAFETY: OSXSAVE is set, so `xgetbv` is enabled; the function only needs XSAVE.
    let xcr0 = unsafe { read_xcr0() };
    let ymm_os = xcr0 & 0b110 == 0b110;
    let zmm_os = ymm_os && xcr0 & 0b1110_0000 == 0b1110_0000;
    let avx = l1.ecx & (1 << 28) != 0 && ymm_os;
    f.fma = avx && l1.ecx & (1 << 12) != 0;
    f.f16c = avx && l1.ecx & (1 << 29) != 0;
    f.avx2 = avx && l7.ebx & (1 << 5) != 0;
    f.avx512f = zmm_os && l7.ebx & (1 << 16) != 0;
    f.avx512bw = f.avx512f && l7.ebx & (1 << 30) != 0;
    f.avx512vl = f.avx512f && l7.ebx & (1 << 31) != 0;
    f.avx512vnni = f.avx512f && l7.ecx & (1 << 11) != 0;
    f.avx512vbmi = f.avx512f && l7.ecx & (1 << 1) != 0;
    f
}

#[target_feature(enable = "xsave")]
unsafe fn read_xcr0() -> u64 {
    // SAFETY: the caller checked OSXSAVE.
    unsafe { _xgetbv(0) }
}
