//! AVX2 multi-token (prefill) kernels for Q4_K and Q6_K, in the eight-row tiled layout of
//! [`super::gemm`]: a tile's super-block is decoded once into row-interleaved codes (`codes[k]`
//! holds row `r`'s weights `4k .. 4k + 4` in 32-bit lane `r`) and reused by every token.
//!
//! `vpmaddubsw` pair sums are added in 16 bits over as many groups as stay exact, then one
//! `vpmaddwd` against the rows' sub-block scales (each scale in both 16-bit halves of its lane)
//! both widens and scales them: `sc · (p₀ + p₁)` in 32 bits, with no separate multiply.
//!
//! - Q4_K: nibble codes; a 32-weight sub-block's pair sums (at most `2 · 15 · 128` each, eight
//!   groups: 30720) fit 16 bits. The minima term is two sub-blocks per `vpmaddwd` against the
//!   token's activation sums (a sum of 32 codes fits an `i16`).
//! - Q6_K: signed codes `q − 32` against activations biased into unsigned bytes (`a + 128`, a
//!   copy made once per super-block for every token):
//!   pair sums of at most `2 · 255 · 32`, two groups (16320 · 2 = 32640) per scaling step. Each
//!   row's `Σ sc · 128 · Σ (q − 32)`, fixed per super-block, takes the bias back out.
//!
//! The integer sums equal the scalar reference's and every (row, token) pair takes its single
//! float step per super-block in the same order, so the results are bit-identical.

use core::arch::x86_64::*;

use super::gemm::{f16x8, load_t8x8, row_ptrs8, ROWS, TOKENS};
use crate::act::ActBatch;
use crate::formats::Q4_K_BLOCK_BYTES;
use crate::q6_k::Q6_K_BLOCK_BYTES;

/// The formats, as the const generic parameter of the shared driver.
const Q4K: u8 = 0;
const Q6K: u8 = 1;

/// Bytes of a super-block of format `F`.
const fn block_bytes(f: u8) -> usize {
    if f == Q4K {
        Q4_K_BLOCK_BYTES
    } else {
        Q6_K_BLOCK_BYTES
    }
}

/// One decoded super-block of an eight-row tile.
///
/// `codes`: 64 code vectors (see the module docs). `sc`: each row's scale of sub-block `s` in
/// both `i16` halves of its lane (Q4_K: 8 sub-blocks, Q6_K: 16). Q4_K: `mins[j]`, the minima of
/// sub-blocks `2j` and `2j + 1` as the low and high `i16` of each lane; `d`, `dmin`. Q6_K: `d`
/// and `corr`, each row's bias correction.
struct Block {
    codes: [__m256i; 64],
    sc: [__m256i; 16],
    mins: [__m256i; 4],
    d: __m256,
    dmin: __m256,
    corr: __m256i,
}

/// Two `i16` values as the halves of one `i32` lane.
#[inline(always)]
fn pair16(lo: i32, hi: i32) -> i32 {
    ((lo as u16 as u32) | ((hi as u16 as u32) << 16)) as i32
}

/// Eight lanes from an array.
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn lanes(v: &[i32; ROWS]) -> __m256i {
    // SAFETY: `v` is 32 readable bytes.
    unsafe { _mm256_loadu_si256(v.as_ptr() as *const __m256i) }
}

/// `x >> 2k` in each 16-bit lane.
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn srl_2k(x: __m256i, k: usize) -> __m256i {
    // SAFETY: the caller runs with AVX2 enabled.
    unsafe { _mm256_srl_epi16(x, _mm_cvtsi32_si128(2 * k as i32)) }
}

/// Decodes the super-block at byte `off` of the eight rows into `blk`.
///
/// # Safety
/// Every row holds a whole block at `off`; the CPU supports AVX2 and F16C.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn decode<const F: u8>(p: &[*const u8; ROWS], off: usize, blk: &mut Block) {
    let m4 = _mm256_set1_epi8(0xf);
    // SAFETY: every read lies inside the block at `off` (caller's contract).
    unsafe {
        if F == Q4K {
            // Chunk c: byte l holds weight 64c + l (low nibble) and 64c + 32 + l.
            for c in 0..4 {
                let y = load_t8x8(p, off + 16 + 32 * c);
                for (j, &y) in y.iter().enumerate() {
                    blk.codes[16 * c + j] = _mm256_and_si256(y, m4);
                    blk.codes[16 * c + 8 + j] = _mm256_and_si256(_mm256_srli_epi16::<4>(y), m4);
                }
            }
            let mut sc = [[0i32; ROWS]; 8];
            let mut mins = [[0i32; ROWS]; 4];
            for (i, &pi) in p.iter().enumerate() {
                let bytes = (pi.add(off + 4) as *const [u8; 12]).read_unaligned();
                let (s, m) = crate::q4_k::unpack_scales(&bytes);
                for j in 0..8 {
                    sc[j][i] = pair16(s[j] as i32, s[j] as i32);
                }
                for j in 0..4 {
                    mins[j][i] = pair16(m[2 * j] as i32, m[2 * j + 1] as i32);
                }
            }
            for (v, sc) in blk.sc.iter_mut().zip(&sc) {
                *v = lanes(sc);
            }
            for (v, m) in blk.mins.iter_mut().zip(&mins) {
                *v = lanes(m);
            }
            blk.d = f16x8(p, off);
            blk.dmin = f16x8(p, off + 2);
            return;
        }
        let (m2, c32, ones) = (
            _mm256_set1_epi8(3),
            _mm256_set1_epi8(32),
            _mm256_set1_epi8(1),
        );
        // Half h, quarter k: weights 128h + 32k + l, at codes[32h + 8k + l / 4].
        for h in 0..2 {
            let lo = [load_t8x8(p, off + 64 * h), load_t8x8(p, off + 64 * h + 32)];
            let hi = load_t8x8(p, off + 128 + 32 * h);
            for k in 0..4 {
                for j in 0..8 {
                    let l = lo[k & 1][j];
                    let l = if k >> 1 == 0 {
                        _mm256_and_si256(l, m4)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16::<4>(l), m4)
                    };
                    let q = _mm256_and_si256(srl_2k(hi[j], k), m2);
                    let code = _mm256_or_si256(l, _mm256_slli_epi16::<4>(q));
                    blk.codes[32 * h + 8 * k + j] = _mm256_sub_epi8(code, c32);
                }
            }
        }
        let mut sc = [[0i32; ROWS]; 16];
        for (i, &pi) in p.iter().enumerate() {
            let bytes = (pi.add(off + 192) as *const [u8; 16]).read_unaligned();
            for (s, &v) in bytes.iter().enumerate() {
                sc[s][i] = pair16(v as i8 as i32, v as i8 as i32);
            }
        }
        let mut corr = _mm256_setzero_si256();
        for (s, sc) in sc.iter().enumerate() {
            let scale = lanes(sc);
            blk.sc[s] = scale;
            // Σ (q − 32) over the sub-block as 16-bit pair sums (at most 256), then scaled.
            let mut qs = _mm256_setzero_si256();
            for k in 0..4 {
                qs = _mm256_add_epi16(qs, _mm256_maddubs_epi16(ones, blk.codes[4 * s + k]));
            }
            let scaled = _mm256_madd_epi16(qs, scale);
            corr = _mm256_add_epi32(corr, _mm256_slli_epi32::<7>(scaled));
        }
        blk.corr = corr;
        blk.d = f16x8(p, off + 208);
    }
}

/// Adds super-block `b` of tokens `t0 .. t0 + T` to their accumulators, with the scalar
/// reference's single float step per (row, token) and super-block. Q6_K reads the tokens'
/// activations biased into unsigned bytes from `biased` (256 bytes per token).
///
/// # Safety
/// `blk` holds the decoded block; tokens `t0 .. t0 + T` and super-block `b` are inside `a`
/// (checked by the caller), and for Q6_K `biased` holds `T · 256` bytes; the CPU supports AVX2.
#[inline(always)]
unsafe fn tokens<const F: u8, const T: usize>(
    blk: &Block,
    a: &ActBatch<'_>,
    (t0, b): (usize, usize),
    biased: *const u8,
    acc: &mut [__m256],
) {
    let na = a.cols / a.block;
    let q0 = a.qs.as_ptr().wrapping_add(t0 * a.cols + 256 * b) as *const u8;
    // SAFETY: every activation read is inside token `t0 + t`'s super-block `b`, every scale and
    // sum index inside the token's blocks (caller's contract); AVX2 is enabled.
    unsafe {
        let bcast = |t: usize, i: usize| {
            _mm256_set1_epi32((q0.add(t * a.cols + i) as *const i32).read_unaligned())
        };
        let mut sumi = [_mm256_setzero_si256(); T];
        if F == Q4K {
            for s in 0..8 {
                let mut si = [_mm256_setzero_si256(); T];
                for k in 0..8 {
                    let ck = blk.codes[8 * s + k];
                    for (t, si) in si.iter_mut().enumerate() {
                        let q = bcast(t, 32 * s + 4 * k);
                        *si = _mm256_add_epi16(*si, _mm256_maddubs_epi16(ck, q));
                    }
                }
                for t in 0..T {
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(si[t], blk.sc[s]));
                }
            }
            for (t, acc) in acc.iter_mut().enumerate().take(T) {
                // Σ minimum · activation sum, two sub-blocks per `vpmaddwd`.
                let sums = a.sums.as_ptr().add((t0 + t) * na + 8 * b);
                let mut summ = _mm256_setzero_si256();
                for j in 0..4 {
                    let pair = _mm256_set1_epi32(pair16(*sums.add(2 * j), *sums.add(2 * j + 1)));
                    summ = _mm256_add_epi32(summ, _mm256_madd_epi16(blk.mins[j], pair));
                }
                let da = _mm256_set1_ps(*a.d.get_unchecked((t0 + t) * na + 8 * b));
                let v = _mm256_sub_ps(
                    _mm256_mul_ps(_mm256_mul_ps(blk.d, da), _mm256_cvtepi32_ps(sumi[t])),
                    _mm256_mul_ps(_mm256_mul_ps(blk.dmin, da), _mm256_cvtepi32_ps(summ)),
                );
                *acc = _mm256_add_ps(*acc, v);
            }
            return;
        }
        // The biased activations, 256 bytes per token.
        let bcast = |t: usize, i: usize| {
            _mm256_set1_epi32((biased.add(256 * t + i) as *const i32).read_unaligned())
        };
        for s in 0..16 {
            for g in 0..2 {
                let k = 4 * s + 2 * g;
                let (c0, c1) = (blk.codes[k], blk.codes[k + 1]);
                for (t, sumi) in sumi.iter_mut().enumerate() {
                    let b0 = bcast(t, 4 * k);
                    let b1 = bcast(t, 4 * k + 4);
                    let x = _mm256_add_epi16(
                        _mm256_maddubs_epi16(b0, c0),
                        _mm256_maddubs_epi16(b1, c1),
                    );
                    *sumi = _mm256_add_epi32(*sumi, _mm256_madd_epi16(x, blk.sc[s]));
                }
            }
        }
        for (t, acc) in acc.iter_mut().enumerate().take(T) {
            let da = _mm256_set1_ps(*a.d.get_unchecked((t0 + t) * na + 8 * b));
            let isum = _mm256_sub_epi32(sumi[t], blk.corr);
            let v = _mm256_mul_ps(_mm256_mul_ps(blk.d, da), _mm256_cvtepi32_ps(isum));
            *acc = _mm256_add_ps(*acc, v);
        }
    }
}

/// The shared driver: a K-quant matrix × several Q8_K token vectors, `out` `[token][row]`.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm<const F: u8>(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    let bb = block_bytes(F);
    let (rows, nb) = match super::tile_shape(w, row_bytes, a, out, (bb, 8, 32)) {
        Some(s) => s,
        None => return,
    };
    let n = a.n;
    let zero = _mm256_setzero_si256();
    let mut blk = Block {
        codes: [zero; 64],
        sc: [zero; 16],
        mins: [zero; 4],
        d: _mm256_setzero_ps(),
        dmin: _mm256_setzero_ps(),
        corr: zero,
    };
    let mut acc = [_mm256_setzero_ps(); TOKENS];
    let mut biased = [[0u8; 256]; TOKENS];
    let mut r = 0;
    while r < rows {
        let p = row_ptrs8(w, row_bytes, rows, r);
        let mut t0 = 0;
        while t0 < n {
            let nt = core::cmp::min(TOKENS, n - t0);
            acc[..nt].fill(_mm256_setzero_ps());
            for b in 0..nb {
                let off = b * bb;
                // SAFETY: every row of `w` holds `nb` blocks (checked above); prefetches of the
                // next block never fault.
                unsafe {
                    if b + 1 < nb {
                        for &pi in &p {
                            for l in (0..bb).step_by(64) {
                                _mm_prefetch::<_MM_HINT_T0>(
                                    pi.wrapping_add(off + bb + l) as *const i8
                                );
                            }
                        }
                    }
                    decode::<F>(&p, off, &mut blk);
                    if F == Q6K {
                        // Once per block for every token, not per use of each activation.
                        let x80 = _mm256_set1_epi8(-128);
                        for (t, dst) in biased[..nt].iter_mut().enumerate() {
                            let src = a.qs.as_ptr().add((t0 + t) * a.cols + 256 * b);
                            for i in 0..8 {
                                let v = _mm256_loadu_si256(src.add(32 * i) as *const __m256i);
                                _mm256_storeu_si256(
                                    dst.as_mut_ptr().add(32 * i) as *mut __m256i,
                                    _mm256_xor_si256(v, x80),
                                );
                            }
                        }
                    }
                    let mut t = 0;
                    while t + 4 <= nt {
                        let q = biased[t..].as_ptr() as *const u8;
                        tokens::<F, 4>(&blk, a, (t0 + t, b), q, &mut acc[t..]);
                        t += 4;
                    }
                    while t < nt {
                        let q = biased[t..].as_ptr() as *const u8;
                        tokens::<F, 1>(&blk, a, (t0 + t, b), q, &mut acc[t..]);
                        t += 1;
                    }
                }
            }
            let nr = core::cmp::min(ROWS, rows - r);
            for (t, v) in acc[..nt].iter().enumerate() {
                // SAFETY: `__m256` and `[f32; 8]` have the same size and any bits are valid.
                let v: [f32; 8] = unsafe { core::mem::transmute::<__m256, [f32; 8]>(*v) };
                let o = (t0 + t) * rows + r;
                out[o..o + nr].copy_from_slice(&v[..nr]);
            }
            t0 += nt;
        }
        r += ROWS;
    }
}

/// Q4_K tiles. Reachable only through `Kernels::avx2` (or a path above it), whose contract is
/// that the CPU supports AVX2, FMA and F16C.
pub(super) fn tiles_q4_k(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    // SAFETY: see above.
    unsafe { gemm::<Q4K>(w, row_bytes, a, out) }
}

/// Q6_K tiles, under the same contract as [`tiles_q4_k`].
pub(super) fn tiles_q6_k(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    // SAFETY: see above.
    unsafe { gemm::<Q6K>(w, row_bytes, a, out) }
}
