//! AVX2 kernels of the 32-weight block formats: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and IQ4_NL.

use core::arch::x86_64::*;

use super::*;
use crate::formats::{IQ4_NL_BLOCK_BYTES, Q5_0_BLOCK_BYTES, Q5_1_BLOCK_BYTES};

/// AVX2 Q8_0 (int8 × int8 through exact 16-bit products).
///
/// # Safety
/// The CPU supports AVX2 and F16C.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn q8_0_avx2(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
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

/// AVX2 Q8_0 times a few tokens (at most [`super::ternary::FEW`]): the matrix-vector kernel's
/// pass over groups of four rows, each block's weights widened once and kept in registers for
/// every token, so the matrix is read from memory once. Per token, exactly [`q8_0_avx2`]'s
/// arithmetic. `out` is `[token][row]`.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn q8_0_avx2_few(
    w: &[u8],
    row_bytes: usize,
    a: &crate::act::ActBatch<'_>,
    out: &mut [f32],
) {
    let nb = row_bytes / Q8_0_BLOCK_BYTES;
    let rows = match few_rows(w, row_bytes, a, out, (nb, 1, 32)) {
        Some(rows) => rows,
        None => return,
    };
    let n = a.n;
    let na = a.cols / 32;
    let mut acc = [_mm_setzero_ps(); super::ternary::FEW];
    let mut r = 0;
    while r < rows {
        // SAFETY: r < rows; all reads stay within the checked slices.
        unsafe {
            let p = row_ptrs(w, row_bytes, rows, r);
            acc[..n].fill(_mm_setzero_ps());
            for b in 0..nb {
                let off = b * Q8_0_BLOCK_BYTES;
                prefetch_ahead(w, row_bytes, r, b, Q8_0_BLOCK_BYTES);
                let wv: [[__m256i; 2]; 4] = core::array::from_fn(|rr| {
                    [
                        _mm256_cvtepi8_epi16(load128(p[rr].add(off + 2))),
                        _mm256_cvtepi8_epi16(load128(p[rr].add(off + 18))),
                    ]
                });
                let dw = f16x4(p, off);
                for (t, acc) in acc[..n].iter_mut().enumerate() {
                    let i = t * na + b;
                    let q = a.qs.as_ptr().add(t * a.cols + b * 32) as *const u8;
                    let qa0 = _mm256_cvtepi8_epi16(load128(q));
                    let qa1 = _mm256_cvtepi8_epi16(load128(q.add(16)));
                    let s: [__m256i; 4] = core::array::from_fn(|rr| {
                        _mm256_add_epi32(
                            _mm256_madd_epi16(wv[rr][0], qa0),
                            _mm256_madd_epi16(wv[rr][1], qa1),
                        )
                    });
                    let s = hsum4(s[0], s[1], s[2], s[3]);
                    *acc = fma_block(*acc, dw, *a.d.get_unchecked(i), s);
                }
            }
            let sums = acc.map(|v| core::mem::transmute::<__m128, [f32; 4]>(v));
            store_tokens(out, rows, r, &sums[..n]);
        }
        r += 4;
    }
}

/// Shared Q4_0 / Q4_1 AVX2 body: `Σ nibble · q` per row and block, then the format's epilogue.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn q4_avx2<const Q41: bool>(
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

/// 0x10 in byte `i` where bit `i` of the 32 bits at `p` is set, 0 elsewhere.
#[inline(always)]
unsafe fn fifth_bits(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes at `p`; AVX2 per the callers' contract.
    unsafe {
        let bits = (p as *const u32).read_unaligned();
        // Byte i takes byte i / 8 of the word, then tests bit i % 8 of it.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            ),
        );
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }
}

/// Shared Q5_0 / Q5_1 AVX2 body: `Σ code · q` per row and block, then the format's epilogue.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn q5_avx2<const Q51: bool>(
    w: &[u8],
    row_bytes: usize,
    a: &ActQ8<'_>,
    out: &mut [f32],
) {
    let rows = out.len();
    if rows == 0 {
        return;
    }
    let bb = if Q51 {
        Q5_1_BLOCK_BYTES
    } else {
        Q5_0_BLOCK_BYTES
    };
    let ho = if Q51 { 4 } else { 2 };
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
                    let x = load128(p[rr].add(off + ho + 4));
                    let x = _mm256_set_m128i(_mm_srli_epi16::<4>(x), x);
                    let x =
                        _mm256_or_si256(_mm256_and_si256(x, m4), fifth_bits(p[rr].add(off + ho)));
                    *s = _mm256_madd_epi16(_mm256_maddubs_epi16(x, qa), ones);
                }
                let dw = f16x4(p, off);
                let isum = hsum4(s[0], s[1], s[2], s[3]);
                let ab = *a.sums.get_unchecked(b);
                let d = *a.d.get_unchecked(b);
                if Q51 {
                    let m = f16x4(p, off + 2);
                    let t = _mm_add_ps(
                        _mm_mul_ps(_mm_mul_ps(dw, _mm_set1_ps(d)), _mm_cvtepi32_ps(isum)),
                        _mm_mul_ps(_mm_mul_ps(m, _mm_set1_ps(d)), _mm_set1_ps(ab as f32)),
                    );
                    acc = _mm_add_ps(acc, t);
                } else {
                    let isum = _mm_sub_epi32(isum, _mm_set1_epi32(16 * ab));
                    acc = fma_block(acc, dw, d, isum);
                }
            }
            store_rows(out, r, core::mem::transmute::<__m128, [f32; 4]>(acc));
        }
        r += 4;
    }
}

/// AVX2 IQ4_NL × Q8_0 (activation codes must not be −128, see [`super::kquant`]).
///
/// # Safety
/// The CPU supports AVX2 and F16C.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn iq4_nl_avx2(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let rows = out.len();
    if rows == 0 {
        return;
    }
    let bb = IQ4_NL_BLOCK_BYTES;
    let nb = row_bytes / bb;
    check_q8(w, row_bytes, rows, nb, 1, a, 32);
    // SAFETY: AVX2 per this function's contract.
    let table = unsafe { iq4_table() };
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
                    let lv = iq4_levels(p[rr].add(off + 2), table);
                    *s = _mm256_madd_epi16(signed_pairs(lv, qa), ones);
                }
                let isum = hsum4(s[0], s[1], s[2], s[3]);
                acc = fma_block(acc, f16x4(p, off), *a.d.get_unchecked(b), isum);
            }
            store_rows(out, r, core::mem::transmute::<__m128, [f32; 4]>(acc));
        }
        r += 4;
    }
}
