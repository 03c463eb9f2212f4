//! AVX-512 VNNI multi-token (prefill) kernels for Q4_K and Q6_K, in the tiled layout of
//! [`crate::x86_gemm`]: a 16-row tile's super-block is decoded once into row-interleaved codes
//! and reused by every token. Each sub-block's exact `vpdpbusd` sums are scaled by the rows'
//! scales in integers (Q4_K's minima term formed from the activation sums, Q6_K's code offset
//! from the weights' own sums), so every (row, token) pair takes the scalar reference's single
//! float step per super-block: results are bit-identical.

#![allow(unused_unsafe)]
#![allow(clippy::incompatible_msrv)]

use core::arch::x86_64::*;

use crate::act::ActBatch;
use crate::formats::Q4_K_BLOCK_BYTES;
use crate::q6_k::Q6_K_BLOCK_BYTES;
use crate::x86_gemm::{f16x16, load_t16x8, row_ptrs16, ROWS, TOKENS};

/// The super-block's per-row scales and minima as eight vectors of 16 `i32` lanes each.
///
/// # Safety
/// Every row holds a whole block at `off`; the CPU supports AVX-512 F.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
unsafe fn scales(p: &[*const u8; ROWS], off: usize) -> ([__m512i; 8], [__m512i; 8]) {
    let mut sc = [[0i32; ROWS]; 8];
    let mut m = [[0i32; ROWS]; 8];
    for (i, &pi) in p.iter().enumerate() {
        // SAFETY: the 12 scale bytes follow the two f16 scales (caller's contract).
        let bytes = unsafe { (pi.add(off + 4) as *const [u8; 12]).read_unaligned() };
        let (s, mm) = crate::q4_k::unpack_scales(&bytes);
        for j in 0..8 {
            sc[j][i] = s[j] as i32;
            m[j][i] = mm[j] as i32;
        }
    }
    // SAFETY: each array is 64 bytes.
    let ld = |v: &[i32; ROWS]| unsafe { _mm512_loadu_si512(v.as_ptr() as *const _) };
    (
        core::array::from_fn(|j| ld(&sc[j])),
        core::array::from_fn(|j| ld(&m[j])),
    )
}

/// The formats, as the const generic parameter of the shared driver.
const Q4K: u8 = 0;
const Q6K: u8 = 1;

/// One decoded super-block of a 16-row tile: codes `codes[k]` (row `r`'s weights `4k .. 4k + 4`
/// in 32-bit lane `r`), the rows' sub-block scales as `i32` lanes, and the float scales.
///
/// Q4_K: nibble codes; `sc[0..8]` the 6-bit scales, `sc[8..16]` the minima, and `mins`
/// the minima of sub-blocks `2j` and `2j + 1` as the low and high `i16` of each lane (for one
/// `vpmaddwd` against a token's two activation sums); `d`, `dmin`.
/// Q6_K: signed codes `q − 32`; `sc` the sixteen int8 scales; `d`, and `corr`, each row's
/// `Σ scale · 128 · Σ q` that takes back out the bias of activations fed as unsigned.
struct Block {
    codes: [__m512i; 64],
    sc: [__m512i; 16],
    mins: [__m512i; 4],
    d: __m512,
    dmin: __m512,
    corr: __m512i,
}

/// Bytes of a super-block of format `F`.
const fn block_bytes(f: u8) -> usize {
    if f == Q4K {
        Q4_K_BLOCK_BYTES
    } else {
        Q6_K_BLOCK_BYTES
    }
}

/// Decodes the super-block at byte `off` of the 16 rows into `blk`.
///
/// # Safety
/// Every row holds a whole block at `off`; the CPU supports AVX-512 F/BW/VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn decode<const F: u8>(p: &[*const u8; ROWS], off: usize, blk: &mut Block) {
    let m4 = _mm512_set1_epi8(0xf);
    // SAFETY: every read lies inside the block at `off` (caller's contract).
    unsafe {
        if F == Q4K {
            // Chunk c: byte l holds weight 64c + l (low nibble) and 64c + 32 + l.
            for c in 0..4 {
                let y = load_t16x8(p, off + 16 + 32 * c);
                for (j, &y) in y.iter().enumerate() {
                    blk.codes[16 * c + j] = _mm512_and_si512(y, m4);
                    blk.codes[16 * c + 8 + j] = _mm512_and_si512(_mm512_srli_epi16::<4>(y), m4);
                }
            }
            let (sc, m) = scales(p, off);
            blk.sc[..8].copy_from_slice(&sc);
            blk.sc[8..].copy_from_slice(&m);
            // Minima are 6-bit: each fits its `i16` half.
            for j in 0..4 {
                blk.mins[j] = _mm512_or_si512(m[2 * j], _mm512_slli_epi32::<16>(m[2 * j + 1]));
            }
            blk.d = f16x16(p, off);
            blk.dmin = f16x16(p, off + 2);
            return;
        }
        let (m2, c32, ones) = (
            _mm512_set1_epi8(3),
            _mm512_set1_epi8(32),
            _mm512_set1_epi8(1),
        );
        // Half h, quarter k: weights 128h + 32k + l, at codes[32h + 8k + l / 4].
        for h in 0..2 {
            let lo = [
                load_t16x8(p, off + 64 * h),
                load_t16x8(p, off + 64 * h + 32),
            ];
            let hi = load_t16x8(p, off + 128 + 32 * h);
            for k in 0..4 {
                for j in 0..8 {
                    let l = lo[k & 1][j];
                    let l = if k >> 1 == 0 {
                        _mm512_and_si512(l, m4)
                    } else {
                        _mm512_and_si512(_mm512_srli_epi16::<4>(l), m4)
                    };
                    let q = _mm512_and_si512(
                        _mm512_srlv_epi16(hi[j], _mm512_set1_epi16(2 * k as i16)),
                        m2,
                    );
                    let code = _mm512_or_si512(l, _mm512_slli_epi16::<4>(q));
                    blk.codes[32 * h + 8 * k + j] = _mm512_sub_epi8(code, c32);
                }
            }
        }
        let mut sc_rows = [[0i32; ROWS]; 16];
        for (i, &pi) in p.iter().enumerate() {
            let bytes = (pi.add(off + 192) as *const [u8; 16]).read_unaligned();
            for (s, &v) in bytes.iter().enumerate() {
                sc_rows[s][i] = v as i8 as i32;
            }
        }
        let mut corr = _mm512_setzero_si512();
        for (s, sc) in sc_rows.iter().enumerate() {
            let scale = _mm512_loadu_si512(sc.as_ptr() as *const _);
            blk.sc[s] = scale;
            let mut qs = _mm512_setzero_si512();
            for k in 0..4 {
                qs = _mm512_dpbusd_epi32(qs, ones, blk.codes[4 * s + k]);
            }
            corr = _mm512_add_epi32(corr, _mm512_mullo_epi32(_mm512_slli_epi32::<7>(qs), scale));
        }
        blk.corr = corr;
        blk.d = f16x16(p, off + 208);
    }
}

/// Adds super-block `b` of tokens `t0 .. t0 + T` to their accumulators, with the scalar
/// reference's single float step per (row, token) and super-block.
///
/// # Safety
/// `blk` holds the decoded block; tokens `t0 .. t0 + T` and super-block `b` are inside `a`
/// (checked by the caller); the CPU supports AVX-512 F/BW/VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn tokens<const F: u8, const T: usize>(
    blk: &Block,
    a: &ActBatch<'_>,
    t0: usize,
    b: usize,
    acc: &mut [__m512],
) {
    let na = a.cols / a.block;
    let q0 = a.qs.as_ptr().wrapping_add(t0 * a.cols + 256 * b) as *const u8;
    let mut sumi = [_mm512_setzero_si512(); T];
    let mut summ = [_mm512_setzero_si512(); T];
    // Q4_K: 8 sub-blocks of 32 weights; Q6_K: 16 of 16.
    let (subs, groups) = if F == Q4K { (8, 8) } else { (16, 4) };
    // SAFETY: every activation read is inside token `t0 + t`'s super-block `b`, every scale and
    // sum index inside the token's blocks (caller's contract).
    unsafe {
        for s in 0..subs {
            let mut si = [_mm512_setzero_si512(); T];
            for k in 0..groups {
                let ck = blk.codes[groups * s + k];
                for (t, si) in si.iter_mut().enumerate() {
                    let q =
                        (q0.add(t * a.cols + 4 * (groups * s + k)) as *const i32).read_unaligned();
                    *si = if F == Q4K {
                        _mm512_dpbusd_epi32(*si, ck, _mm512_set1_epi32(q))
                    } else {
                        // Activations biased into unsigned bytes, against signed codes.
                        let biased = _mm512_set1_epi32(q ^ 0x8080_8080u32 as i32);
                        _mm512_dpbusd_epi32(*si, biased, ck)
                    };
                }
            }
            for t in 0..T {
                sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(si[t], blk.sc[s]));
            }
        }
        if F == Q4K {
            // Σ minimum · activation sum, two sub-blocks per `vpmaddwd`: a sum of 32 codes in
            // −127..=127 fits an `i16`, so the products and their sum are exact.
            for (t, summ) in summ.iter_mut().enumerate() {
                let sums = a.sums.as_ptr().add((t0 + t) * na + 8 * b);
                for j in 0..4 {
                    let lo = *sums.add(2 * j) as u16 as u32;
                    let hi = *sums.add(2 * j + 1) as u32;
                    let pair = _mm512_set1_epi32((lo | hi << 16) as i32);
                    *summ = _mm512_add_epi32(*summ, _mm512_madd_epi16(blk.mins[j], pair));
                }
            }
        }
        for t in 0..T {
            let da = _mm512_set1_ps(*a.d.get_unchecked((t0 + t) * na + 8 * b));
            let v = if F == Q4K {
                _mm512_sub_ps(
                    _mm512_mul_ps(_mm512_mul_ps(blk.d, da), _mm512_cvtepi32_ps(sumi[t])),
                    _mm512_mul_ps(_mm512_mul_ps(blk.dmin, da), _mm512_cvtepi32_ps(summ[t])),
                )
            } else {
                let isum = _mm512_sub_epi32(sumi[t], blk.corr);
                _mm512_mul_ps(_mm512_mul_ps(blk.d, da), _mm512_cvtepi32_ps(isum))
            };
            acc[t] = _mm512_add_ps(acc[t], v);
        }
    }
}

/// The shared driver: a K-quant matrix × several Q8_K token vectors, `out` `[token][row]`.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL/VNNI, AVX2 and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn gemm<const F: u8>(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    let bb = block_bytes(F);
    let (rows, nb) = match crate::x86::tile_shape(w, row_bytes, a, out, (bb, 8, 32)) {
        Some(s) => s,
        None => return,
    };
    let n = a.n;
    let mut blk = Block {
        codes: [_mm512_setzero_si512(); 64],
        sc: [_mm512_setzero_si512(); 16],
        mins: [_mm512_setzero_si512(); 4],
        d: _mm512_setzero_ps(),
        dmin: _mm512_setzero_ps(),
        corr: _mm512_setzero_si512(),
    };
    let mut acc = [_mm512_setzero_ps(); TOKENS];
    let mut r = 0;
    while r < rows {
        let p = row_ptrs16(w, row_bytes, rows, r);
        let mut t0 = 0;
        while t0 < n {
            let nt = core::cmp::min(TOKENS, n - t0);
            acc[..nt].fill(_mm512_setzero_ps());
            for b in 0..nb {
                // SAFETY: every row of `w` holds `nb` blocks (checked above).
                unsafe {
                    decode::<F>(&p, b * bb, &mut blk);
                    let mut t = 0;
                    while t + 4 <= nt {
                        tokens::<F, 4>(&blk, a, t0 + t, b, &mut acc[t..]);
                        t += 4;
                    }
                    while t < nt {
                        tokens::<F, 1>(&blk, a, t0 + t, b, &mut acc[t..]);
                        t += 1;
                    }
                }
            }
            let nr = core::cmp::min(ROWS, rows - r);
            let mask = ((1u32 << nr) - 1) as u16;
            for (t, &v) in acc[..nt].iter().enumerate() {
                let o = (t0 + t) * rows + r;
                let dst = &mut out[o..o + nr];
                // SAFETY: `dst` holds `nr` floats and the store writes only the first `nr` lanes.
                unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, v) };
            }
            t0 += nt;
        }
        r += ROWS;
    }
}

/// Safe wrapper stored in the kernel table, reachable only through `Kernels::avx512vnni`, whose
/// contract is that the CPU supports AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
pub(crate) fn vnni_gemm_q4_k(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    // SAFETY: see above.
    unsafe { gemm::<Q4K>(w, row_bytes, a, out) }
}

/// Safe wrapper stored in the kernel table, reachable only through `Kernels::avx512vnni`, whose
/// contract is that the CPU supports AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
pub(crate) fn vnni_gemm_q6_k(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    // SAFETY: see above.
    unsafe { gemm::<Q6K>(w, row_bytes, a, out) }
}
