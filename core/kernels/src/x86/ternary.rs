//! AVX2 kernels of the ternary formats: TQ2_0, I2_S and TQ1_0.

use core::arch::x86_64::*;

use super::*;

/// Dot products of one 128-weight block of 2-bit codes (32 bytes per row, code `l` of byte `m`
/// in bits `2l` or, with `REV`, bits `6 - 2l`, for weight `32l + m`) with 128 activations.
/// Returns the four rows' `Σ code · q` (without the −1 offset).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn tern2_block_avx2<const REV: bool>(
    p: [*const u8; 4],
    off: usize,
    q: *const i8,
) -> __m128i {
    // SAFETY: forwarded contract.
    unsafe { tern2_block_avx2_n::<REV, 1>(p, off, [q])[0] }
}

/// [`tern2_block_avx2`] for `T` tokens: each row's codes are unpacked once and multiplied with
/// every token's activations (`q[t]`). Returns each token's four row sums.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tern2_block_avx2_n<const REV: bool, const T: usize>(
    p: [*const u8; 4],
    off: usize,
    q: [*const i8; T],
) -> [__m128i; T] {
    let m3 = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    // SAFETY: 128 activations at each `q[t]` and 32 code bytes at `p[i] + off` (caller's
    // contract).
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); 4]; T];
        for r in 0..4 {
            let w = load256(p[r].add(off));
            let c0 = _mm256_and_si256(w, m3);
            let c1 = _mm256_and_si256(_mm256_srli_epi16::<2>(w), m3);
            let c2 = _mm256_and_si256(_mm256_srli_epi16::<4>(w), m3);
            let c3 = _mm256_and_si256(_mm256_srli_epi16::<6>(w), m3);
            let c = if REV {
                [c3, c2, c1, c0]
            } else {
                [c0, c1, c2, c3]
            };
            for (t, acc) in acc.iter_mut().enumerate() {
                let a = q[t] as *const u8;
                // Each i16 lane: at most 4 · 2 · 2 · 128 = 2048 in magnitude.
                let s01 = _mm256_add_epi16(
                    _mm256_maddubs_epi16(c[0], load256(a)),
                    _mm256_maddubs_epi16(c[1], load256(a.add(32))),
                );
                let s23 = _mm256_add_epi16(
                    _mm256_maddubs_epi16(c[2], load256(a.add(64))),
                    _mm256_maddubs_epi16(c[3], load256(a.add(96))),
                );
                acc[r] = _mm256_madd_epi16(_mm256_add_epi16(s01, s23), ones);
            }
        }
        core::array::from_fn(|t| hsum4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]))
    }
}

/// AVX2 TQ2_0.
///
/// # Safety
/// The CPU supports AVX2 and F16C.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tq2_0_avx2(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
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

/// AVX2 TQ2_0 (or I2_S with `I2S`) times a few tokens: the matrix-vector kernel's pass over
/// groups of four rows, each 2-bit block unpacked once per pair of tokens and read from memory
/// once for all of them. Per token, exactly the matrix-vector kernel's arithmetic (bit-identical
/// to the scalar reference). `out` is `[token][row]`.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tern2_avx2_few<const I2S: bool>(
    w: &[u8],
    row_bytes: usize,
    a: &crate::act::ActBatch<'_>,
    out: &mut [f32],
) {
    let bb = if I2S { 32 } else { TQ2_0_BLOCK_BYTES };
    let nb = row_bytes / bb;
    let subs = if I2S { 1 } else { 2 };
    let rows = match few_rows(w, row_bytes, a, out, (nb, subs, 128)) {
        Some(rows) => rows,
        None => return,
    };
    let n = a.n;
    let na = a.cols / 128;
    let mut acc = [_mm_setzero_ps(); FEW];
    let mut r = 0;
    while r < rows {
        // SAFETY: r < rows; every read stays inside the checked slices.
        unsafe {
            let p = row_ptrs(w, row_bytes, rows, r);
            acc[..n].fill(_mm_setzero_ps());
            for b in 0..nb {
                let off = b * bb;
                prefetch_ahead(w, row_bytes, r, b, bb);
                let dw = if I2S {
                    _mm_set1_ps(1.0)
                } else {
                    f16x4(p, off + 64)
                };
                for h in 0..subs {
                    let ab = subs * b + h;
                    let qa = |t: usize| a.qs.as_ptr().add(t * a.cols + ab * 128);
                    let mut t = 0;
                    while t < n {
                        let s = if t + 1 < n {
                            tern2_block_avx2_n::<I2S, 2>(p, off + 32 * h, [qa(t), qa(t + 1)])
                        } else {
                            [
                                tern2_block_avx2::<I2S>(p, off + 32 * h, qa(t)),
                                _mm_setzero_si128(),
                            ]
                        };
                        for (k, s) in s.iter().enumerate().take(n - t) {
                            let i = (t + k) * na + ab;
                            let s = _mm_sub_epi32(*s, _mm_set1_epi32(*a.sums.get_unchecked(i)));
                            acc[t + k] = fma_block(acc[t + k], dw, *a.d.get_unchecked(i), s);
                        }
                        t += 2;
                    }
                }
            }
            let sums = acc.map(|v| core::mem::transmute::<__m128, [f32; 4]>(v));
            store_tokens(out, rows, r, &sums[..n]);
        }
        r += 4;
    }
}

/// Most tokens [`tern2_avx2_few`] takes; more go through the matrix-vector kernel per token.
pub(super) const FEW: usize = 8;

/// AVX2 I2_S.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn i2s_avx2(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
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
pub(super) unsafe fn tq1_digit256(x: __m256i) -> __m256i {
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
pub(super) unsafe fn triple256(x: __m256i) -> __m256i {
    // SAFETY: only called from AVX2 functions.
    unsafe { _mm256_add_epi8(x, _mm256_add_epi8(x, x)) }
}

#[inline(always)]
pub(super) unsafe fn triple128(x: __m128i) -> __m128i {
    // SAFETY: SSE2 is part of the x86-64 baseline.
    unsafe { _mm_add_epi8(x, _mm_add_epi8(x, x)) }
}

/// Decodes a TQ1_0 block into eight vectors of codes (0, 1, 2 for −1, 0, +1), vector `k`
/// holding weights `32k .. 32k + 32` in order.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn tq1_decode(blk: *const u8) -> [__m256i; 8] {
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
pub(super) unsafe fn tq1_0_avx2(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
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
