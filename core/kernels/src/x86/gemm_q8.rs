//! AVX2 Q8_0 multi-token (prefill) kernel: one weight matrix times many token vectors.
//!
//! Q8_0's weights and activations are both signed bytes. `vpmaddubsw` takes them only as two
//! nibble planes (see `gemm.rs`), each block then ending in a ten-operation epilogue that
//! widens both planes' 16-bit sums, combines them and removes the offset. This tile widens
//! both sides to 16 bits instead, once each: a pass decodes a block of sixteen rows (two
//! eight-row halves) into `vpmaddwd` operands, where 32-bit lane `r` of vector `j` holds row
//! `r`'s weights `2j` and `2j + 1`, and widens the tokens' activations of that block into a
//! small buffer. Each broadcast pair of activations then feeds one `vpmaddwd` per half, whose
//! exact 32-bit sums are the block's integer dot products as they stand: per block, token and
//! eight rows, 16 `vpmaddwd` and 16 `vpaddd`, with the same number of multiplies as the
//! nibble planes and a four-operation epilogue.
//!
//! Integer block sums are exact and each (row, token) `f32` accumulator adds the blocks in the
//! scalar reference's order with the same products (lane-wise), so the results are
//! bit-identical to [`crate::scalar::gemm_q8_0`] (and to the matrix-vector kernels).

use core::arch::x86_64::*;

use super::gemm::{f16x8, prefetch_next, row_ptrs8, store_tile, transpose8x32, ROWS, TOKENS};
use super::load128;

use crate::act::ActBatch;
use crate::formats::Q8_0_BLOCK_BYTES;

/// Eight-row halves per pass.
const HALVES: usize = 2;
/// Weight pairs (32-bit lanes of 16-bit values) per block.
const PAIRS: usize = 16;

/// Decodes the block at byte `off` of the eight rows: lane `r` of `codes[j]` holds row `r`'s
/// weights `2j` and `2j + 1` as 16-bit integers.
///
/// # Safety
/// Every row holds a whole block at `off`; the CPU supports AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn decode(p: &[*const u8; ROWS], off: usize, codes: &mut [__m256i; PAIRS]) {
    // SAFETY: the block's 32 weights follow its 2-byte scale (caller's contract).
    unsafe {
        for (k, c) in codes.chunks_exact_mut(8).enumerate() {
            let x =
                core::array::from_fn(|i| _mm256_cvtepi8_epi16(load128(p[i].add(off + 2 + 16 * k))));
            c.copy_from_slice(&transpose8x32(x));
        }
    }
}

/// Adds tokens `0 .. T` of the widened activations `q` (pairs as in [`decode`]), with block
/// scales `d`, times both halves' decoded block `codes` (scales `dw`) to the accumulators
/// `acc[t][h]`, with the scalar reference's per-block epilogue.
///
/// # Safety
/// `q`, `d` and `acc` hold at least `T` tokens; the CPU supports AVX2.
#[inline(always)]
unsafe fn tokens<const T: usize>(
    codes: &[[__m256i; PAIRS]; HALVES],
    dw: &[__m256; HALVES],
    (q, d): (&[[i32; PAIRS]], &[f32]),
    acc: &mut [[__m256; HALVES]],
) {
    let (q, d, acc) = (&q[..T], &d[..T], &mut acc[..T]);
    // SAFETY: the caller runs with AVX2 enabled.
    unsafe {
        let mut s = [[_mm256_setzero_si256(); T]; HALVES];
        for j in 0..PAIRS {
            let c = [codes[0][j], codes[1][j]];
            for (t, q) in q.iter().enumerate() {
                let q = _mm256_set1_epi32(q[j]);
                for (s, &c) in s.iter_mut().zip(&c) {
                    // Each 32-bit lane: two products of at most 2^14, exact.
                    s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(c, q));
                }
            }
        }
        for (t, (acc, &d)) in acc.iter_mut().zip(d).enumerate() {
            let d = _mm256_set1_ps(d);
            for (h, acc) in acc.iter_mut().enumerate() {
                let v = _mm256_mul_ps(_mm256_mul_ps(dw[h], d), _mm256_cvtepi32_ps(s[h][t]));
                *acc = _mm256_add_ps(*acc, v);
            }
        }
    }
}

/// Sixteen-row passes per widening of the activations: the widened block serves 64 rows.
const PASSES: usize = 4;

/// AVX2 Q8_0 times many tokens: `out` is `[token][row]`.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    let bb = Q8_0_BLOCK_BYTES;
    // (No `let … else`: the crate builds with Rust 1.63.)
    let (rows, nb) = match super::tile_shape(w, row_bytes, a, out, (bb, 1, 32)) {
        Some(s) => s,
        None => return,
    };
    let (n, na) = (a.n, a.cols / 32);
    let mut codes = [[_mm256_setzero_si256(); PAIRS]; HALVES];
    let mut acc = [[[_mm256_setzero_ps(); HALVES]; TOKENS]; PASSES];
    // One block of every token of the chunk: activations widened to 16 bits, and scales.
    let mut q = [[0i32; PAIRS]; TOKENS];
    let mut d = [0f32; TOKENS];
    let mut r = 0;
    while r < rows {
        let passes = core::cmp::min(PASSES, (rows - r + 2 * ROWS - 1) / (2 * ROWS));
        // Halves past the last row repeat it; their results are dropped.
        let p: [[[*const u8; ROWS]; HALVES]; PASSES] = core::array::from_fn(|g| {
            core::array::from_fn(|h| {
                let r0 = core::cmp::min(r + ROWS * (HALVES * g + h), rows - 1);
                row_ptrs8(w, row_bytes, rows, r0)
            })
        });
        let p = &p[..passes];
        let mut t0 = 0;
        while t0 < n {
            let nt = core::cmp::min(TOKENS, n - t0);
            for acc in &mut acc[..passes] {
                acc[..nt].fill([_mm256_setzero_ps(); HALVES]);
            }
            for b in 0..nb {
                let off = b * bb;
                // SAFETY: every row of `w` holds `nb` blocks and every token `nb` activation
                // blocks (checked above); prefetches never fault.
                unsafe {
                    for (t, (q, d)) in q[..nt].iter_mut().zip(&mut d[..nt]).enumerate() {
                        let src = a.qs.as_ptr().add((t0 + t) * a.cols + 32 * b) as *const u8;
                        let dst = q.as_mut_ptr() as *mut __m256i;
                        _mm256_storeu_si256(dst, _mm256_cvtepi8_epi16(load128(src)));
                        _mm256_storeu_si256(dst.add(1), _mm256_cvtepi8_epi16(load128(src.add(16))));
                        *d = *a.d.get_unchecked((t0 + t) * na + b);
                    }
                    for (p, acc) in p.iter().zip(&mut acc) {
                        if b + 1 < nb {
                            prefetch_next(p.iter().flatten(), off + bb, bb);
                        }
                        let mut dw = [_mm256_setzero_ps(); HALVES];
                        for h in 0..HALVES {
                            decode(&p[h], off, &mut codes[h]);
                            dw[h] = f16x8(&p[h], off);
                        }
                        let mut t = 0;
                        // Six tokens of two halves fill the registers.
                        while t + 6 <= nt {
                            tokens::<6>(&codes, &dw, (&q[t..], &d[t..]), &mut acc[t..]);
                            t += 6;
                        }
                        if t + 4 <= nt {
                            tokens::<4>(&codes, &dw, (&q[t..], &d[t..]), &mut acc[t..]);
                            t += 4;
                        }
                        if t + 2 <= nt {
                            tokens::<2>(&codes, &dw, (&q[t..], &d[t..]), &mut acc[t..]);
                            t += 2;
                        }
                        if t < nt {
                            tokens::<1>(&codes, &dw, (&q[t..], &d[t..]), &mut acc[t..]);
                        }
                    }
                }
            }
            for (g, acc) in acc[..passes].iter().enumerate() {
                store_tile(out, rows, (r + HALVES * ROWS * g, t0), &acc[..nt]);
            }
            t0 += nt;
        }
        r += ROWS * HALVES * passes;
    }
}
