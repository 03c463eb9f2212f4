//! NEON and dotprod kernels of llama.cpp's later block formats (Q5_0, Q5_1, IQ4_NL, Q2_K …
//! Q6_K, IQ4_XS). Each row's weights are decoded to signed int8 values, whose products with
//! the activations are summed exactly per (sub-)block; the float steps are the scalar
//! reference's, so results are bit-identical to it. Values are at most 127 in magnitude, so
//! the NEON path may add two products in one 16-bit lane.

// Rust 1.63 treats the body of an `unsafe fn` as an unsafe block; newer lints require the
// explicit blocks, which 1.63 then reports as redundant.
#![allow(unused_unsafe)]

use core::arch::aarch64::*;

use crate::aarch64::{check, dot16};
use crate::act::ActQ8;
use crate::f16::le_f16;
use crate::formats::{
    IQ4_NL_BLOCK_BYTES, IQ4_XS_BLOCK_BYTES, Q2_K_BLOCK_BYTES, Q3_K_BLOCK_BYTES, Q4_K_BLOCK_BYTES,
    Q5_0_BLOCK_BYTES, Q5_1_BLOCK_BYTES, Q5_K_BLOCK_BYTES, Q6_K_BLOCK_BYTES,
};

#[inline(always)]
unsafe fn ld(p: *const u8) -> uint8x16_t {
    // SAFETY: the caller guarantees 16 readable bytes.
    unsafe { vld1q_u8(p) }
}

#[inline(always)]
unsafe fn lds(p: *const i8) -> int8x16_t {
    // SAFETY: the caller guarantees 16 readable bytes.
    unsafe { vld1q_s8(p) }
}

/// `Σ w · q` of 16 signed weights and 16 activations at `q`.
#[inline(always)]
unsafe fn dot<const DOT: bool>(w: int8x16_t, q: *const i8) -> i32 {
    // SAFETY: forwarded contract; 16 activations at `q`.
    unsafe { vaddvq_s32(dot16::<DOT>(vdupq_n_s32(0), w, lds(q))) }
}

/// `Σ w · q` over 32 weights (two vectors) and 32 activations at `q`.
#[inline(always)]
unsafe fn dot32<const DOT: bool>(w0: int8x16_t, w1: int8x16_t, q: *const i8) -> i32 {
    // SAFETY: forwarded contract; 32 activations at `q`.
    unsafe {
        let s = dot16::<DOT>(vdupq_n_s32(0), w0, lds(q));
        vaddvq_s32(dot16::<DOT>(s, w1, lds(q.add(16))))
    }
}

/// `(x >> s) & mask` per byte.
#[inline(always)]
unsafe fn bits(x: uint8x16_t, s: i8, mask: u8) -> uint8x16_t {
    // SAFETY: NEON is part of the aarch64 baseline.
    unsafe { vandq_u8(vshlq_u8(x, vdupq_n_s8(-s)), vdupq_n_u8(mask)) }
}

#[inline(always)]
fn s8(x: uint8x16_t) -> int8x16_t {
    // SAFETY: a reinterpretation, NEON is baseline.
    unsafe { vreinterpretq_s8_u8(x) }
}

/// The 32 codes (0..32) of a Q5_0/Q5_1 block whose `qh` starts at `p`: weights 0..16, 16..32.
#[inline(always)]
unsafe fn q5_codes(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: 20 readable bytes at `p` (caller's contract).
    unsafe {
        let qh = (p as *const [u8; 4]).read_unaligned();
        let x = ld(p.add(4));
        let m = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
        let hb = |a: u8, b: u8| {
            let v = vcombine_u8(vdup_n_u8(a), vdup_n_u8(b));
            vandq_u8(vtstq_u8(v, m), vdupq_n_u8(0x10))
        };
        (
            vorrq_u8(vandq_u8(x, vdupq_n_u8(0xf)), hb(qh[0], qh[1])),
            vorrq_u8(vshrq_n_u8::<4>(x), hb(qh[2], qh[3])),
        )
    }
}

#[inline(always)]
unsafe fn q5_0<const DOT: bool>(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let nb = row_bytes / Q5_0_BLOCK_BYTES;
    check(w, row_bytes, out.len(), nb, a, 32);
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(Q5_0_BLOCK_BYTES).enumerate() {
            // SAFETY: the block holds its bits and nibbles; activations were checked.
            let isum = unsafe {
                let (lo, hi) = q5_codes(blk.as_ptr().add(2));
                let k16 = vdupq_n_s8(16);
                let (lo, hi) = (vsubq_s8(s8(lo), k16), vsubq_s8(s8(hi), k16));
                dot32::<DOT>(lo, hi, a.qs.as_ptr().add(32 * b))
            };
            acc += (le_f16(blk, 0) * a.d[b]) * isum as f32;
        }
        *o = acc;
    }
}

#[inline(always)]
unsafe fn q5_1<const DOT: bool>(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let nb = row_bytes / Q5_1_BLOCK_BYTES;
    check(w, row_bytes, out.len(), nb, a, 32);
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(Q5_1_BLOCK_BYTES).enumerate() {
            // SAFETY: the block holds its bits and nibbles; activations were checked.
            let isum = unsafe {
                let (lo, hi) = q5_codes(blk.as_ptr().add(4));
                dot32::<DOT>(s8(lo), s8(hi), a.qs.as_ptr().add(32 * b))
            };
            acc += (le_f16(blk, 0) * a.d[b]) * isum as f32
                + (le_f16(blk, 2) * a.d[b]) * a.sums[b] as f32;
        }
        *o = acc;
    }
}

/// The 32 levels of 16 index bytes at `p`: weights 0..16 and 16..32.
#[inline(always)]
unsafe fn iq4_levels(p: *const u8) -> (int8x16_t, int8x16_t) {
    // SAFETY: 16 readable bytes at `p`; `LEVELS` is 16 bytes.
    unsafe {
        let t = vld1q_s8(crate::iq4::LEVELS.as_ptr());
        let x = ld(p);
        (
            vqtbl1q_s8(t, vandq_u8(x, vdupq_n_u8(0xf))),
            vqtbl1q_s8(t, vshrq_n_u8::<4>(x)),
        )
    }
}

#[inline(always)]
unsafe fn iq4_nl<const DOT: bool>(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let nb = row_bytes / IQ4_NL_BLOCK_BYTES;
    check(w, row_bytes, out.len(), nb, a, 32);
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(IQ4_NL_BLOCK_BYTES).enumerate() {
            // SAFETY: the block holds 16 index bytes; activations were checked.
            let isum = unsafe {
                let (lo, hi) = iq4_levels(blk.as_ptr().add(2));
                dot32::<DOT>(lo, hi, a.qs.as_ptr().add(32 * b))
            };
            acc += (le_f16(blk, 0) * a.d[b]) * isum as f32;
        }
        *o = acc;
    }
}

#[inline(always)]
unsafe fn iq4_xs<const DOT: bool>(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let nb = row_bytes / IQ4_XS_BLOCK_BYTES;
    check(w, row_bytes, out.len(), 8 * nb, a, 32);
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(IQ4_XS_BLOCK_BYTES).enumerate() {
            let mut sumi = 0i32;
            for s in 0..8 {
                // SAFETY: the block holds its eight index groups; activations were checked.
                let t = unsafe {
                    let (lo, hi) = iq4_levels(blk.as_ptr().add(8 + 16 * s));
                    dot32::<DOT>(lo, hi, a.qs.as_ptr().add(256 * b + 32 * s))
                };
                sumi += crate::iq4::xs_scale(blk, s) * t;
            }
            acc += (le_f16(blk, 0) * a.d[8 * b]) * sumi as f32;
        }
        *o = acc;
    }
}

/// Shared Q4_K / Q5_K body (`HIGH`: Q5_K's fifth bits).
#[inline(always)]
unsafe fn q45_k<const DOT: bool, const HIGH: bool>(
    w: &[u8],
    row_bytes: usize,
    a: &ActQ8<'_>,
    out: &mut [f32],
) {
    let bb = if HIGH {
        Q5_K_BLOCK_BYTES
    } else {
        Q4_K_BLOCK_BYTES
    };
    let qo = if HIGH { 48 } else { 16 };
    let nb = row_bytes / bb;
    check(w, row_bytes, out.len(), 8 * nb, a, 32);
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(bb).enumerate() {
            let (sc, m) = crate::q4_k::unpack_scales(&blk[4..16]);
            let mut sumi = 0i32;
            // SAFETY: the block holds its codes (and high bits); activations were checked.
            unsafe {
                let p = blk.as_ptr();
                let q = a.qs.as_ptr().add(256 * b);
                let (h0, h1) = if HIGH {
                    (ld(p.add(16)), ld(p.add(32)))
                } else {
                    (vdupq_n_u8(0), vdupq_n_u8(0))
                };
                for c in 0..4 {
                    let x0 = ld(p.add(qo + 32 * c));
                    let x1 = ld(p.add(qo + 32 * c + 16));
                    let mut v = [
                        vandq_u8(x0, vdupq_n_u8(0xf)),
                        vandq_u8(x1, vdupq_n_u8(0xf)),
                        vshrq_n_u8::<4>(x0),
                        vshrq_n_u8::<4>(x1),
                    ];
                    if HIGH {
                        let s = (2 * c) as i8;
                        v[0] = vorrq_u8(v[0], vshlq_n_u8::<4>(bits(h0, s, 1)));
                        v[1] = vorrq_u8(v[1], vshlq_n_u8::<4>(bits(h1, s, 1)));
                        v[2] = vorrq_u8(v[2], vshlq_n_u8::<4>(bits(h0, s + 1, 1)));
                        v[3] = vorrq_u8(v[3], vshlq_n_u8::<4>(bits(h1, s + 1, 1)));
                    }
                    let lo = dot32::<DOT>(s8(v[0]), s8(v[1]), q.add(64 * c));
                    let hi = dot32::<DOT>(s8(v[2]), s8(v[3]), q.add(64 * c + 32));
                    sumi += sc[2 * c] as i32 * lo + sc[2 * c + 1] as i32 * hi;
                }
            }
            let summ = crate::q4_k::mins_dot(&m, &a.sums[8 * b..8 * b + 8]);
            acc = crate::q4_k::block_step(
                acc,
                le_f16(blk, 0),
                le_f16(blk, 2),
                a.d[8 * b],
                sumi,
                summ,
            );
        }
        *o = acc;
    }
}

#[inline(always)]
unsafe fn q6_k<const DOT: bool>(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let nb = row_bytes / Q6_K_BLOCK_BYTES;
    check(w, row_bytes, out.len(), 8 * nb, a, 32);
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (bi, blk) in row.chunks_exact(Q6_K_BLOCK_BYTES).enumerate() {
            let mut sumi = 0i32;
            // SAFETY: the block holds its codes; activations were checked.
            unsafe {
                let p = blk.as_ptr();
                let q = a.qs.as_ptr().add(256 * bi);
                for n in 0..2 {
                    for k in 0..4 {
                        for h in 0..2 {
                            // Weights 128n + 32k + 16h .. + 16 (sub-block 8n + 2k + h).
                            let l = 16 * h;
                            let ql = ld(p.add(64 * n + l + 32 * (k & 1)));
                            let lo = bits(ql, (4 * (k >> 1)) as i8, 0xf);
                            let hi = bits(ld(p.add(128 + 32 * n + l)), (2 * k) as i8, 3);
                            let v = vsubq_s8(s8(vorrq_u8(lo, vshlq_n_u8::<4>(hi))), vdupq_n_s8(32));
                            let t = dot::<DOT>(v, q.add(128 * n + 32 * k + l));
                            sumi += (blk[192 + 8 * n + 2 * k + h] as i8) as i32 * t;
                        }
                    }
                }
            }
            acc += (le_f16(blk, 208) * a.d[8 * bi]) * sumi as f32;
        }
        *o = acc;
    }
}

#[inline(always)]
unsafe fn q3_k<const DOT: bool>(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let nb = row_bytes / Q3_K_BLOCK_BYTES;
    check(w, row_bytes, out.len(), 8 * nb, a, 32);
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (bi, blk) in row.chunks_exact(Q3_K_BLOCK_BYTES).enumerate() {
            let sc = crate::q3_k::unpack_scales(&blk[96..108]);
            let mut sumi = 0i32;
            // SAFETY: the block holds its codes and high bits; activations were checked.
            unsafe {
                let p = blk.as_ptr();
                let q = a.qs.as_ptr().add(256 * bi);
                for n in 0..2 {
                    for k in 0..4 {
                        for h in 0..2 {
                            let l = 16 * h;
                            let c = bits(ld(p.add(32 + 32 * n + l)), (2 * k) as i8, 3);
                            let hb = bits(ld(p.add(l)), (4 * n + k) as i8, 1);
                            // A clear high bit subtracts 4.
                            let off = vshlq_n_u8::<2>(veorq_u8(hb, vdupq_n_u8(1)));
                            let v = vsubq_s8(s8(c), s8(off));
                            let t = dot::<DOT>(v, q.add(128 * n + 32 * k + l));
                            sumi += sc[8 * n + 2 * k + h] as i32 * t;
                        }
                    }
                }
            }
            acc += (le_f16(blk, 108) * a.d[8 * bi]) * sumi as f32;
        }
        *o = acc;
    }
}

#[inline(always)]
unsafe fn q2_k<const DOT: bool>(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let nb = row_bytes / Q2_K_BLOCK_BYTES;
    check(w, row_bytes, out.len(), 8 * nb, a, 32);
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (bi, blk) in row.chunks_exact(Q2_K_BLOCK_BYTES).enumerate() {
            let (mut sumi, mut summ) = (0i32, 0i32);
            // SAFETY: the block holds its codes; activations were checked.
            unsafe {
                let p = blk.as_ptr();
                let q = a.qs.as_ptr().add(256 * bi);
                let ones = vdupq_n_s8(1);
                for n in 0..2 {
                    for k in 0..4 {
                        for h in 0..2 {
                            let l = 16 * h;
                            let c = bits(ld(p.add(16 + 32 * n + l)), (2 * k) as i8, 3);
                            let qa = q.add(128 * n + 32 * k + l);
                            let sm = blk[8 * n + 2 * k + h];
                            sumi += (sm & 0xf) as i32 * dot::<DOT>(s8(c), qa);
                            summ += (sm >> 4) as i32 * dot::<DOT>(ones, qa);
                        }
                    }
                }
            }
            let da = a.d[8 * bi];
            acc += (le_f16(blk, 80) * da) * sumi as f32 - (le_f16(blk, 82) * da) * summ as f32;
        }
        *o = acc;
    }
}

#[inline(always)]
unsafe fn q4_k<const DOT: bool>(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { q45_k::<DOT, false>(w, row_bytes, a, out) }
}

#[inline(always)]
unsafe fn q5_k<const DOT: bool>(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe { q45_k::<DOT, true>(w, row_bytes, a, out) }
}

// Safe wrappers stored in the kernel table. They are reachable only through the unsafe
// `Kernels` constructors, whose contract is that the CPU supports the path's features.
macro_rules! wrappers {
    ($($neon:ident, $dot:ident => $body:ident;)*) => {$(
        pub(crate) fn $neon(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
            #[target_feature(enable = "neon")]
            unsafe fn inner(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
                // SAFETY: forwarded contract.
                unsafe { $body::<false>(w, row_bytes, a, out) }
            }
            // SAFETY: only reachable through a `Kernels` constructor whose caller promised NEON.
            unsafe { inner(w, row_bytes, a, out) }
        }

        pub(crate) fn $dot(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
            #[target_feature(enable = "neon,dotprod")]
            unsafe fn inner(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
                // SAFETY: forwarded contract (the CPU supports dotprod).
                unsafe { $body::<true>(w, row_bytes, a, out) }
            }
            // SAFETY: only reachable through `Kernels::dotprod`, whose caller promised dotprod.
            unsafe { inner(w, row_bytes, a, out) }
        }
    )*};
}

wrappers! {
    neon_q5_0, dot_q5_0 => q5_0;
    neon_q5_1, dot_q5_1 => q5_1;
    neon_iq4_nl, dot_iq4_nl => iq4_nl;
    neon_iq4_xs, dot_iq4_xs => iq4_xs;
    neon_q2_k, dot_q2_k => q2_k;
    neon_q3_k, dot_q3_k => q3_k;
    neon_q4_k, dot_q4_k => q4_k;
    neon_q5_k, dot_q5_k => q5_k;
    neon_q6_k, dot_q6_k => q6_k;
}

// Multi-token entries: the matrix-vector kernels once per token.
crate::scalar::gemm_from_matvec!(pub(crate) neon_gemm_q5_0, neon_q5_0);
crate::scalar::gemm_from_matvec!(pub(crate) dot_gemm_q5_0, dot_q5_0);
crate::scalar::gemm_from_matvec!(pub(crate) neon_gemm_q5_1, neon_q5_1);
crate::scalar::gemm_from_matvec!(pub(crate) dot_gemm_q5_1, dot_q5_1);
crate::scalar::gemm_from_matvec!(pub(crate) neon_gemm_iq4_nl, neon_iq4_nl);
crate::scalar::gemm_from_matvec!(pub(crate) dot_gemm_iq4_nl, dot_iq4_nl);
crate::scalar::gemm_from_matvec!(pub(crate) neon_gemm_iq4_xs, neon_iq4_xs);
crate::scalar::gemm_from_matvec!(pub(crate) dot_gemm_iq4_xs, dot_iq4_xs);
crate::scalar::gemm_from_matvec!(pub(crate) neon_gemm_q2_k, neon_q2_k);
crate::scalar::gemm_from_matvec!(pub(crate) dot_gemm_q2_k, dot_q2_k);
crate::scalar::gemm_from_matvec!(pub(crate) neon_gemm_q3_k, neon_q3_k);
crate::scalar::gemm_from_matvec!(pub(crate) dot_gemm_q3_k, dot_q3_k);
crate::scalar::gemm_from_matvec!(pub(crate) neon_gemm_q4_k, neon_q4_k);
crate::scalar::gemm_from_matvec!(pub(crate) dot_gemm_q4_k, dot_q4_k);
crate::scalar::gemm_from_matvec!(pub(crate) neon_gemm_q5_k, neon_q5_k);
crate::scalar::gemm_from_matvec!(pub(crate) dot_gemm_q5_k, dot_q5_k);
crate::scalar::gemm_from_matvec!(pub(crate) neon_gemm_q6_k, neon_q6_k);
crate::scalar::gemm_from_matvec!(pub(crate) dot_gemm_q6_k, dot_q6_k);
