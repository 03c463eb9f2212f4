//! AVX2 multi-token (prefill) kernels with 16-bit operands: Q8_0, IQ4_NL and IQ4_XS, whose
//! weights decode to signed bytes, and Q5_K, Q3_K and Q2_K, whose codes times their sub-block
//! scales make 16-bit weights.
//!
//! Signed weights times signed activations fit `vpmaddubsw` only as two nibble planes (see
//! `gemm.rs`), each block then ending in a ten-operation epilogue that widens both planes'
//! 16-bit sums, combines them and removes the offset. These tiles widen both sides to 16 bits
//! instead, once each: a pass decodes a 32-weight sub-block of sixteen rows (two eight-row
//! halves) into `vpmaddwd` operands, where 32-bit lane `r` of vector `j` holds row `r`'s
//! weights `2j` and `2j + 1`, and widens the tokens' activations of that sub-block into a small
//! buffer that serves 64 rows. Each broadcast pair of activations then feeds one `vpmaddwd`
//! per half, whose exact 32-bit sums are the integer dot products as they stand: per
//! sub-block, token and eight rows, 16 `vpmaddwd` and 16 `vpaddd`, the multiplies of the
//! nibble planes, and a four-operation epilogue per scale block.
//!
//! IQ4_NL and IQ4_XS look their indices up in the level table (`vpshufb`); IQ4_XS multiplies
//! each sub-block's levels by its 6-bit scale while decoding (`|level · scale| ≤ 127 · 32`, still
//! 16 bits), so its eight sub-blocks add up in 32 bits to the super-block's integer sum, and the
//! float epilogue runs once per 256 weights, as in the scalar reference. Q5_K (`31 · 63`),
//! Q3_K (`4 · 32`, a scale per 16 weights) and Q2_K (`3 · 15`) fold their scales in alike; the
//! minima term `Σ m · Σ a` is four `vpmaddwd` per super-block, token and half against the
//! token's 32-block code sums for Q5_K, and eight against its 16-code sums for Q2_K.
//!
//! Integer sums are exact and each (row, token) `f32` accumulator adds the scale blocks in the
//! scalar reference's order with the same products (lane-wise), so the results are
//! bit-identical to [`crate::scalar`]'s `gemm_*` (and to the matrix-vector kernels).

use core::arch::x86_64::*;

use super::gemm::{f16x8, prefetch_next, row_ptrs8, store_tile, transpose8x32, ROWS, TOKENS};
use super::load128;

use crate::act::ActBatch;
use crate::formats::{
    IQ4_NL_BLOCK_BYTES, IQ4_XS_BLOCK_BYTES, Q2_K_BLOCK_BYTES, Q3_K_BLOCK_BYTES, Q5_K_BLOCK_BYTES,
    Q8_0_BLOCK_BYTES,
};
use crate::iq4::LEVELS;

// Weight formats, as a const generic parameter of the shared driver.
const Q8: u8 = 0;
const NL: u8 = 1;
const XS: u8 = 2;
const Q5K: u8 = 3;
const Q3K: u8 = 4;
const Q2K: u8 = 5;

/// Bytes of one scale block of format `F`.
const fn block_bytes(f: u8) -> usize {
    match f {
        Q8 => Q8_0_BLOCK_BYTES,
        NL => IQ4_NL_BLOCK_BYTES,
        XS => IQ4_XS_BLOCK_BYTES,
        Q5K => Q5_K_BLOCK_BYTES,
        Q3K => Q3_K_BLOCK_BYTES,
        _ => Q2_K_BLOCK_BYTES,
    }
}

/// 32-weight sub-blocks (activation blocks) per scale block.
const fn subs(f: u8) -> usize {
    match f {
        Q8 | NL => 1,
        _ => 8,
    }
}

/// Pairs of minima per scale block (Q5_K: one per 32 weights, Q2_K: per 16), 0 without.
const fn min_pairs(f: u8) -> usize {
    match f {
        Q5K => 4,
        Q2K => 8,
        _ => 0,
    }
}

/// A scale block's per-row numbers for one eight-row half, read once for its sub-blocks.
#[derive(Clone, Copy)]
struct Scales {
    /// The block scale `d` of each row.
    d: __m256,
    /// Q5_K and Q2_K: the rows' `dmin`.
    dmin: __m256,
    /// Each row's sub-block scales, `sc[r][s]` (Q3_K: one per 16 weights).
    sc: [[i16; 16]; ROWS],
    /// Q5_K and Q2_K: lane `r` of `mins[k]` holds row `r`'s minima `2k` and `2k + 1` as 16-bit
    /// integers.
    mins: [__m256i; 8],
}

/// Byte offset of the f16 block scale `d` in a block of format `F`.
const fn d_offset(f: u8) -> usize {
    match f {
        Q3K => 108,
        Q2K => 80,
        _ => 0,
    }
}

/// Reads the scale block at byte `off` of the eight rows.
///
/// # Safety
/// Every row holds a whole block at `off`; the CPU supports AVX2 and F16C.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scales<const F: u8>(p: &[*const u8; ROWS], off: usize) -> Scales {
    // SAFETY: every read is inside the block at `off` (caller's contract).
    unsafe {
        let mut out = Scales {
            d: f16x8(p, off + d_offset(F)),
            dmin: _mm256_setzero_ps(),
            sc: [[0; 16]; ROWS],
            mins: [_mm256_setzero_si256(); 8],
        };
        if F == XS {
            for (i, sc) in out.sc.iter_mut().enumerate() {
                let blk = core::slice::from_raw_parts(p[i].add(off), 8);
                for (s, sc) in sc.iter_mut().enumerate().take(8) {
                    *sc = crate::iq4::xs_scale(blk, s) as i16;
                }
            }
        } else if F == Q2K {
            out.dmin = f16x8(p, off + 82);
            let mut m = [[0u32; ROWS]; 8];
            for (i, sc) in out.sc.iter_mut().enumerate() {
                let b = core::slice::from_raw_parts(p[i].add(off), 16);
                for (sc, &b) in sc.iter_mut().zip(b) {
                    *sc = (b & 0xf) as i16;
                }
                for (k, m) in m.iter_mut().enumerate() {
                    m[i] = (b[2 * k] >> 4) as u32 | ((b[2 * k + 1] >> 4) as u32) << 16;
                }
            }
            for (v, m) in out.mins.iter_mut().zip(&m) {
                *v = _mm256_loadu_si256(m.as_ptr() as *const __m256i);
            }
        } else if F == Q3K {
            for (i, sc) in out.sc.iter_mut().enumerate() {
                let s =
                    crate::q3_k::unpack_scales(core::slice::from_raw_parts(p[i].add(off + 96), 12));
                for (sc, &s) in sc.iter_mut().zip(&s) {
                    *sc = s as i16;
                }
            }
        } else if F == Q5K {
            out.dmin = f16x8(p, off + 2);
            let mut m = [[0u32; ROWS]; 4];
            for (i, sc) in out.sc.iter_mut().enumerate() {
                let (s, mi) =
                    crate::q4_k::unpack_scales(core::slice::from_raw_parts(p[i].add(off + 4), 12));
                for k in 0..8 {
                    sc[k] = s[k] as i16;
                }
                for (k, m) in m.iter_mut().enumerate() {
                    m[i] = mi[2 * k] as u32 | (mi[2 * k + 1] as u32) << 16;
                }
            }
            for (v, m) in out.mins.iter_mut().zip(&m) {
                *v = _mm256_loadu_si256(m.as_ptr() as *const __m256i);
            }
        }
        out
    }
}

/// Eight-row halves per pass.
const HALVES: usize = 2;
/// Weight pairs (32-bit lanes of 16-bit values) per sub-block.
const PAIRS: usize = 16;
/// Sixteen-row passes per widening of the activations: the widened sub-block serves 64 rows.
const PASSES: usize = 4;

/// Decodes sub-block `s` of the scale block at byte `off` of the eight rows: lane `r` of
/// `codes[j]` holds row `r`'s weights `2j` and `2j + 1` as 16-bit integers (IQ4_XS: times
/// the sub-block's scale).
///
/// # Safety
/// Every row holds a whole block at `off`; the CPU supports AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn decode<const F: u8>(
    p: &[*const u8; ROWS],
    off: usize,
    (s, sc): (usize, &Scales),
    codes: &mut [__m256i; PAIRS],
) {
    // SAFETY: every load reads inside the block at `off` (caller's contract).
    unsafe {
        // lo[i], hi[i]: row i's weights 0..16 and 16..32, widened.
        let (lo, hi): ([__m256i; ROWS], [__m256i; ROWS]) = if F == Q8 {
            (
                core::array::from_fn(|i| _mm256_cvtepi8_epi16(load128(p[i].add(off + 2)))),
                core::array::from_fn(|i| _mm256_cvtepi8_epi16(load128(p[i].add(off + 18)))),
            )
        } else if F == Q2K {
            // Sub-block s = 4n + k: bits 2k of bytes 16 + 32n ..; scales 2s and 2s + 1.
            let (n, k) = (s / 4, s % 4);
            let m3 = _mm256_set1_epi8(3);
            let shift = _mm_cvtsi32_si128(2 * k as i32);
            let code: [__m256i; ROWS] = core::array::from_fn(|i| {
                let q = _mm256_loadu_si256(p[i].add(off + 16 + 32 * n) as *const __m256i);
                _mm256_and_si256(_mm256_srl_epi16(q, shift), m3)
            });
            let scaled = |x: __m128i, sc: i16| {
                _mm256_mullo_epi16(_mm256_cvtepu8_epi16(x), _mm256_set1_epi16(sc))
            };
            (
                core::array::from_fn(|i| scaled(_mm256_castsi256_si128(code[i]), sc.sc[i][2 * s])),
                core::array::from_fn(|i| {
                    scaled(_mm256_extracti128_si256::<1>(code[i]), sc.sc[i][2 * s + 1])
                }),
            )
        } else if F == Q3K {
            // Sub-block s = 4n + k: bits 2k of bytes 32 + 32n .., high bit s of bytes 0 .. 32
            // (clear: −4); scales 2s and 2s + 1 for its two halves.
            let (n, k) = (s / 4, s % 4);
            let m3 = _mm256_set1_epi8(3);
            let bit = _mm256_set1_epi8((1u8 << s) as i8);
            let shift = _mm_cvtsi32_si128(2 * k as i32);
            let code: [__m256i; ROWS] = core::array::from_fn(|i| {
                let q = _mm256_loadu_si256(p[i].add(off + 32 + 32 * n) as *const __m256i);
                let q = _mm256_and_si256(_mm256_srl_epi16(q, shift), m3);
                let hm = _mm256_loadu_si256(p[i].add(off) as *const __m256i);
                let hi = _mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit);
                _mm256_or_si256(q, _mm256_and_si256(hi, _mm256_set1_epi8(4)))
            });
            let four = _mm256_set1_epi16(4);
            let scaled = |x: __m128i, sc: i16| {
                let v = _mm256_sub_epi16(_mm256_cvtepu8_epi16(x), four);
                _mm256_mullo_epi16(v, _mm256_set1_epi16(sc))
            };
            (
                core::array::from_fn(|i| scaled(_mm256_castsi256_si128(code[i]), sc.sc[i][2 * s])),
                core::array::from_fn(|i| {
                    scaled(_mm256_extracti128_si256::<1>(code[i]), sc.sc[i][2 * s + 1])
                }),
            )
        } else if F == Q5K {
            // Sub-block s = 2c + h: nibble h of bytes 48 + 32c .., fifth bit s of bytes 16 ...
            let (c, h) = (s / 2, s % 2);
            let m4 = _mm256_set1_epi8(0xf);
            let bit = _mm256_set1_epi8(1 << s);
            let code: [__m256i; ROWS] = core::array::from_fn(|i| {
                let q = _mm256_loadu_si256(p[i].add(off + 48 + 32 * c) as *const __m256i);
                let q = if h == 0 { q } else { _mm256_srli_epi16::<4>(q) };
                let qh = _mm256_loadu_si256(p[i].add(off + 16) as *const __m256i);
                let hi = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
                _mm256_or_si256(
                    _mm256_and_si256(q, m4),
                    _mm256_and_si256(hi, _mm256_set1_epi8(16)),
                )
            });
            let scaled = |i: usize, x: __m128i| {
                _mm256_mullo_epi16(_mm256_cvtepu8_epi16(x), _mm256_set1_epi16(sc.sc[i][s]))
            };
            (
                core::array::from_fn(|i| scaled(i, _mm256_castsi256_si128(code[i]))),
                core::array::from_fn(|i| scaled(i, _mm256_extracti128_si256::<1>(code[i]))),
            )
        } else {
            let table = load128(LEVELS.as_ptr() as *const u8);
            let m4 = _mm_set1_epi8(0xf);
            let qs = if F == NL { off + 2 } else { off + 8 + 16 * s };
            let v: [__m128i; ROWS] = core::array::from_fn(|i| load128(p[i].add(qs)));
            let level = |x: __m128i| _mm256_cvtepi8_epi16(_mm_shuffle_epi8(table, x));
            let mut lo: [__m256i; ROWS] = core::array::from_fn(|i| level(_mm_and_si128(v[i], m4)));
            let mut hi: [__m256i; ROWS] =
                core::array::from_fn(|i| level(_mm_and_si128(_mm_srli_epi16::<4>(v[i]), m4)));
            if F == XS {
                for i in 0..ROWS {
                    let k = _mm256_set1_epi16(sc.sc[i][s]);
                    lo[i] = _mm256_mullo_epi16(lo[i], k);
                    hi[i] = _mm256_mullo_epi16(hi[i], k);
                }
            }
            (lo, hi)
        };
        codes[..8].copy_from_slice(&transpose8x32(lo));
        codes[8..].copy_from_slice(&transpose8x32(hi));
    }
}

/// One sub-block of the chunk's tokens: activations widened to 16 bits (pairs as in
/// [`decode`]), the scale block's activation scale, and the pairs of code sums its minima
/// take (Q5_K: per 32 activations, Q2_K: per 16), `sums[k]` holding sums `2k` and `2k + 1` as
/// 16-bit integers.
struct Acts {
    q: [[i32; PAIRS]; TOKENS],
    d: [f32; TOKENS],
    sums: [[i32; 8]; TOKENS],
}

/// Adds tokens `t .. t + T` of `x` times both halves' decoded sub-block `codes` to the integer
/// sums `ia[t][h]` (starting them at zero if `first`). If `last`, the scale block is complete:
/// its sums, with the rows' scales `sc`, go into the accumulators `acc[t][h]` by the scalar
/// reference's per-block step.
///
/// # Safety
/// `x`, `ia` and `acc` hold at least `t + T` tokens; the CPU supports AVX2.
#[inline(always)]
unsafe fn tokens<const F: u8, const T: usize>(
    (codes, sc): (&[[__m256i; PAIRS]; HALVES], &[Scales; HALVES]),
    (x, t): (&Acts, usize),
    (first, last): (bool, bool),
    ia: &mut [[__m256i; HALVES]],
    acc: &mut [[__m256; HALVES]],
) {
    let (q, d, sums) = (&x.q[t..t + T], &x.d[t..t + T], &x.sums[t..t + T]);
    let (ia, acc) = (&mut ia[t..t + T], &mut acc[t..t + T]);
    // SAFETY: the caller runs with AVX2 enabled.
    unsafe {
        let mut s = [[_mm256_setzero_si256(); T]; HALVES];
        if !first {
            for (t, ia) in ia.iter().enumerate() {
                for h in 0..HALVES {
                    s[h][t] = ia[h];
                }
            }
        }
        for j in 0..PAIRS {
            let c = [codes[0][j], codes[1][j]];
            for (t, q) in q.iter().enumerate() {
                let q = _mm256_set1_epi32(q[j]);
                for (s, &c) in s.iter_mut().zip(&c) {
                    // Each 32-bit lane: two products of at most 2^14 (IQ4_XS: 4064 · 128,
                    // Q5_K: 31 · 63 · 128, Q3_K: 4 · 32 · 128), and at most 256 of them in a
                    // scale block: exact.
                    s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(c, q));
                }
            }
        }
        if !last {
            for (t, ia) in ia.iter_mut().enumerate() {
                for h in 0..HALVES {
                    ia[h] = s[h][t];
                }
            }
            return;
        }
        for (t, acc) in acc.iter_mut().enumerate() {
            let da = _mm256_set1_ps(d[t]);
            for (h, acc) in acc.iter_mut().enumerate() {
                let v = _mm256_mul_ps(_mm256_mul_ps(sc[h].d, da), _mm256_cvtepi32_ps(s[h][t]));
                if min_pairs(F) > 0 {
                    // Σ m · (Σ a) over the block's minima: at most 63 · 4096 per product, exact.
                    let mut m = _mm256_setzero_si256();
                    for (k, &mk) in sc[h].mins.iter().enumerate().take(min_pairs(F)) {
                        let a = _mm256_set1_epi32(sums[t][k]);
                        m = _mm256_add_epi32(m, _mm256_madd_epi16(mk, a));
                    }
                    let vm = _mm256_mul_ps(_mm256_mul_ps(sc[h].dmin, da), _mm256_cvtepi32_ps(m));
                    *acc = _mm256_add_ps(*acc, _mm256_sub_ps(v, vm));
                } else {
                    *acc = _mm256_add_ps(*acc, v);
                }
            }
        }
    }
}

/// The shared driver for format `F`: `out` is `[token][row]`.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm<const F: u8>(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    let (bb, ns) = (block_bytes(F), subs(F));
    // (No `let … else`: the crate builds with Rust 1.63.)
    let (rows, nb) = match super::tile_shape(w, row_bytes, a, out, (bb, ns, 32)) {
        Some(s) => s,
        None => return,
    };
    let (n, na) = (a.n, a.cols / 32);
    let mut codes = [[_mm256_setzero_si256(); PAIRS]; HALVES];
    let no_scales = Scales {
        d: _mm256_setzero_ps(),
        dmin: _mm256_setzero_ps(),
        sc: [[0; 16]; ROWS],
        mins: [_mm256_setzero_si256(); 8],
    };
    let mut sc = [[no_scales; HALVES]; PASSES];
    let mut acc = [[[_mm256_setzero_ps(); HALVES]; TOKENS]; PASSES];
    // The integer sums of a scale block of several sub-blocks, between them.
    let mut ia = [[[_mm256_setzero_si256(); HALVES]; TOKENS]; PASSES];
    let mut x = Acts {
        q: [[0; PAIRS]; TOKENS],
        d: [0.0; TOKENS],
        sums: [[0; 8]; TOKENS],
    };
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
                for s in 0..ns {
                    let ab = b * ns + s;
                    // SAFETY: every row of `w` holds `nb` blocks and every token `nb · ns`
                    // activation blocks (checked above); prefetches never fault.
                    unsafe {
                        for t in 0..nt {
                            let src = a.qs.as_ptr().add((t0 + t) * a.cols + 32 * ab) as *const u8;
                            let dst = x.q[t].as_mut_ptr() as *mut __m256i;
                            _mm256_storeu_si256(dst, _mm256_cvtepi8_epi16(load128(src)));
                            _mm256_storeu_si256(
                                dst.add(1),
                                _mm256_cvtepi8_epi16(load128(src.add(16))),
                            );
                            let i = (t0 + t) * na + b * ns;
                            if s == 0 {
                                // The scale block's activation scale: its first sub-block's.
                                x.d[t] = *a.d.get_unchecked(i);
                            }
                            if F == Q5K && s == 0 {
                                for k in 0..4 {
                                    let lo = *a.sums.get_unchecked(i + 2 * k) as u16 as u32;
                                    let hi = *a.sums.get_unchecked(i + 2 * k + 1) as u32;
                                    x.sums[t][k] = (lo | hi << 16) as i32;
                                }
                            }
                            if F == Q2K && s == 0 {
                                let src = a.qs.as_ptr().add((t0 + t) * a.cols + 256 * b);
                                let v = super::kquant::sums16(src as *const u8);
                                _mm256_storeu_si256(x.sums[t].as_mut_ptr() as *mut __m256i, v);
                            }
                        }
                        let flags = (s == 0, s + 1 == ns);
                        for (((p, sc), acc), ia) in p.iter().zip(&mut sc).zip(&mut acc).zip(&mut ia)
                        {
                            let mut l = 0;
                            while s == 0 && b + 1 < nb && l < bb {
                                let len = core::cmp::min(64, bb - l);
                                prefetch_next(p.iter().flatten(), off + bb + l, len);
                                l += 64;
                            }
                            for h in 0..HALVES {
                                if s == 0 {
                                    sc[h] = scales::<F>(&p[h], off);
                                }
                                decode::<F>(&p[h], off, (s, &sc[h]), &mut codes[h]);
                            }
                            let blk = (&codes, &*sc);
                            let mut t = 0;
                            // Six tokens of two halves fill the registers.
                            while t + 6 <= nt {
                                tokens::<F, 6>(blk, (&x, t), flags, ia, acc);
                                t += 6;
                            }
                            if t + 4 <= nt {
                                tokens::<F, 4>(blk, (&x, t), flags, ia, acc);
                                t += 4;
                            }
                            if t + 2 <= nt {
                                tokens::<F, 2>(blk, (&x, t), flags, ia, acc);
                                t += 2;
                            }
                            if t < nt {
                                tokens::<F, 1>(blk, (&x, t), flags, ia, acc);
                            }
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

/// AVX2 Q8_0 tiles.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_q8_0(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { gemm::<Q8>(w, row_bytes, a, out) }
}

/// AVX2 IQ4_NL tiles, under the contract of [`gemm_q8_0`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_iq4_nl(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { gemm::<NL>(w, row_bytes, a, out) }
}

/// AVX2 IQ4_XS tiles, under the contract of [`gemm_q8_0`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_iq4_xs(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { gemm::<XS>(w, row_bytes, a, out) }
}

/// AVX2 Q5_K tiles, under the contract of [`gemm_q8_0`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_q5_k(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { gemm::<Q5K>(w, row_bytes, a, out) }
}

/// AVX2 Q3_K tiles, under the contract of [`gemm_q8_0`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_q3_k(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { gemm::<Q3K>(w, row_bytes, a, out) }
}

/// AVX2 Q2_K tiles, under the contract of [`gemm_q8_0`].
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_q2_k(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { gemm::<Q2K>(w, row_bytes, a, out) }
}
