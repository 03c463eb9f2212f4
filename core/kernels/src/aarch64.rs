//! aarch64 SIMD kernels (NEON, dotprod). Each is checked against [`crate::scalar`].
//!
//! Integer block sums are exact and each row accumulates `(dw · d) · isum` in the scalar order,
//! so results are bit-identical to the reference. The dotprod variants reach `sdot` through
//! `asm!` in functions compiled with `#[target_feature(enable = "dotprod")]`; NEON is part of
//! the aarch64 baseline.
//!
//! Only the `Kernels` constructors reach the `pub(crate)` wrappers below.

// Rust 1.63 treats the body of an `unsafe fn` as an unsafe block; newer lints require the
// explicit blocks, which 1.63 then reports as redundant.
#![allow(unused_unsafe)]

use core::arch::aarch64::*;
use core::arch::asm;

use crate::act::ActQ8;
use crate::f16::le_f16;
use crate::formats::{Q8_0_BLOCK_BYTES, TQ1_0_BLOCK_BYTES, TQ2_0_BLOCK_BYTES};

/// `acc + Σ c[i] · q[i]` over groups of four bytes, with NEON widening multiplies.
#[inline(always)]
unsafe fn dot16_neon(acc: int32x4_t, c: int8x16_t, q: int8x16_t) -> int32x4_t {
    // SAFETY: NEON is part of the aarch64 baseline.
    unsafe {
        let p = vmull_s8(vget_low_s8(c), vget_low_s8(q));
        let p = vmlal_high_s8(p, c, q);
        vpadalq_s16(acc, p)
    }
}

/// `acc + Σ c[i] · q[i]` with `sdot`. Only inlined into functions that enable `dotprod`.
#[inline(always)]
unsafe fn dot16_sdot(mut acc: int32x4_t, c: int8x16_t, q: int8x16_t) -> int32x4_t {
    // SAFETY: the caller's path contract includes dotprod; `sdot` only touches registers.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {c:v}.16b, {q:v}.16b",
            acc = inout(vreg) acc,
            c = in(vreg) c,
            q = in(vreg) q,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

#[inline(always)]
pub(crate) unsafe fn dot16<const DOT: bool>(
    acc: int32x4_t,
    c: int8x16_t,
    q: int8x16_t,
) -> int32x4_t {
    // SAFETY: forwarded contract (dotprod when DOT).
    unsafe {
        if DOT {
            dot16_sdot(acc, c, q)
        } else {
            dot16_neon(acc, c, q)
        }
    }
}

/// Like [`dot16`] for full-range int8 on both sides: signed × signed products reach
/// 128 · 128, so the NEON path must not add two of them in one i16 lane.
#[inline(always)]
unsafe fn dot16_i8<const DOT: bool>(acc: int32x4_t, c: int8x16_t, q: int8x16_t) -> int32x4_t {
    // SAFETY: forwarded contract (dotprod when DOT); NEON is baseline.
    unsafe {
        if DOT {
            dot16_sdot(acc, c, q)
        } else {
            let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(c), vget_low_s8(q)));
            vpadalq_s16(acc, vmull_high_s8(c, q))
        }
    }
}

#[inline(always)]
unsafe fn ld8(p: *const i8) -> int8x16_t {
    // SAFETY: the caller guarantees 16 readable bytes.
    unsafe { vld1q_s8(p) }
}

#[inline(always)]
unsafe fn ldu8(p: *const u8) -> uint8x16_t {
    // SAFETY: the caller guarantees 16 readable bytes.
    unsafe { vld1q_u8(p) }
}

/// `Σ code · q` of one 128-weight block of 2-bit codes at `w` (32 bytes; code `l` of byte `m`
/// in bits `2l`, or `6 - 2l` with `REV`, for weight `32l + m`) against 128 activations at `q`.
#[inline(always)]
unsafe fn tern2_block<const DOT: bool, const REV: bool>(w: *const u8, q: *const i8) -> i32 {
    // SAFETY: 32 code bytes at `w`, 128 activations at `q` (caller's contract).
    unsafe {
        let m3 = vdupq_n_u8(3);
        let mut acc = vdupq_n_s32(0);
        for half in 0..2 {
            let x = ldu8(w.add(16 * half));
            let c = [
                vandq_u8(x, m3),
                vandq_u8(vshrq_n_u8::<2>(x), m3),
                vandq_u8(vshrq_n_u8::<4>(x), m3),
                vshrq_n_u8::<6>(x),
            ];
            for l in 0..4 {
                let cl = if REV { c[3 - l] } else { c[l] };
                acc = dot16::<DOT>(acc, vreinterpretq_s8_u8(cl), ld8(q.add(32 * l + 16 * half)));
            }
        }
        vaddvq_s32(acc)
    }
}

#[inline(always)]
pub(crate) fn check(
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    nab: usize,
    a: &ActQ8<'_>,
    act_len: usize,
) {
    assert!(w.len() >= rows * row_bytes, "weight slice too short");
    assert!(a.qs.len() >= nab * act_len, "activation codes too short");
    assert!(
        a.d.len() >= nab && a.sums.len() >= nab,
        "activation scales too short"
    );
}

#[inline(always)]
unsafe fn tq2_0<const DOT: bool>(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let nb = row_bytes / TQ2_0_BLOCK_BYTES;
    check(w, row_bytes, out.len(), 2 * nb, a, 128);
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(TQ2_0_BLOCK_BYTES).enumerate() {
            let dw = le_f16(blk, 64);
            for h in 0..2 {
                let ab = 2 * b + h;
                // SAFETY: the block holds 64 code bytes; the activations were length-checked.
                let isum = unsafe {
                    tern2_block::<DOT, false>(blk.as_ptr().add(32 * h), a.qs.as_ptr().add(128 * ab))
                } - a.sums[ab];
                acc += (dw * a.d[ab]) * isum as f32;
            }
        }
        *o = acc;
    }
}

#[inline(always)]
unsafe fn i2s<const DOT: bool>(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let ng = row_bytes / 32;
    check(w, row_bytes, out.len(), ng, a, 128);
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (g, grp) in row.chunks_exact(32).enumerate() {
            // SAFETY: the group holds 32 bytes; the activations were length-checked.
            let isum =
                unsafe { tern2_block::<DOT, true>(grp.as_ptr(), a.qs.as_ptr().add(128 * g)) }
                    - a.sums[g];
            acc += a.d[g] * isum as f32;
        }
        *o = acc;
    }
}

/// Ternary digits (0, 1, 2) of the bytes `x` already multiplied by `3^n`: `(3x) >> 8`.
#[inline(always)]
unsafe fn tq1_digits(x: uint8x16_t) -> int8x16_t {
    // SAFETY: NEON is part of the aarch64 baseline.
    unsafe {
        let three = vdup_n_u8(3);
        let lo = vshrn_n_u16::<8>(vmull_u8(vget_low_u8(x), three));
        let hi = vshrn_n_u16::<8>(vmull_high_u8(x, vdupq_n_u8(3)));
        vreinterpretq_s8_u8(vcombine_u8(lo, hi))
    }
}

#[inline(always)]
unsafe fn tq1_0<const DOT: bool>(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let nb = row_bytes / TQ1_0_BLOCK_BYTES;
    check(w, row_bytes, out.len(), 2 * nb, a, 128);
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(TQ1_0_BLOCK_BYTES).enumerate() {
            let dw = le_f16(blk, 52);
            // SAFETY: the block holds 54 bytes (the 16-byte qh load is replaced by a copy) and
            // the activations were length-checked.
            let (s0, s1) = unsafe {
                let q = a.qs.as_ptr().add(256 * b);
                let (mut h0, mut h1) = (vdupq_n_s32(0), vdupq_n_s32(0));
                // qs[0..32]: digit n of byte m is weight 32n + m.
                for half in 0..2 {
                    let x = ldu8(blk.as_ptr().add(16 * half));
                    for (n, &p) in POW3.iter().enumerate() {
                        let c = tq1_digits(vmulq_u8(x, vdupq_n_u8(p)));
                        let qa = ld8(q.add(32 * n + 16 * half));
                        if n < 4 {
                            h0 = dot16::<DOT>(h0, c, qa);
                        } else {
                            h1 = dot16::<DOT>(h1, c, qa);
                        }
                    }
                }
                // qs[32..48]: digit n of byte m is weight 160 + 16n + m.
                let x = ldu8(blk.as_ptr().add(32));
                for (n, &p) in POW3.iter().enumerate() {
                    let c = tq1_digits(vmulq_u8(x, vdupq_n_u8(p)));
                    h1 = dot16::<DOT>(h1, c, ld8(q.add(160 + 16 * n)));
                }
                // qh[0..4]: digit n of byte m is weight 240 + 4n + m.
                let qh = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes([
                    blk[48], blk[49], blk[50], blk[51],
                ])));
                let pw: [u8; 16] = [1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27];
                let c = tq1_digits(vmulq_u8(qh, vld1q_u8(pw.as_ptr())));
                h1 = dot16::<DOT>(h1, c, ld8(q.add(240)));
                (vaddvq_s32(h0), vaddvq_s32(h1))
            };
            for (h, s) in [s0, s1].iter().enumerate() {
                let ab = 2 * b + h;
                acc += (dw * a.d[ab]) * (s - a.sums[ab]) as f32;
            }
        }
        *o = acc;
    }
}

#[inline(always)]
unsafe fn q8_0<const DOT: bool>(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let nb = row_bytes / Q8_0_BLOCK_BYTES;
    check(w, row_bytes, out.len(), nb, a, 32);
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = 0f32;
        for (b, blk) in row.chunks_exact(Q8_0_BLOCK_BYTES).enumerate() {
            // SAFETY: the block holds 32 weights after its scale; activations were checked.
            let isum = unsafe {
                let x = blk.as_ptr().add(2) as *const i8;
                let q = a.qs.as_ptr().add(32 * b);
                let s = dot16_i8::<DOT>(vdupq_n_s32(0), ld8(x), ld8(q));
                let s = dot16_i8::<DOT>(s, ld8(x.add(16)), ld8(q.add(16)));
                vaddvq_s32(s)
            };
            acc += (le_f16(blk, 0) * a.d[b]) * isum as f32;
        }
        *o = acc;
    }
}

macro_rules! wrappers {
    ($($neon:ident, $dot:ident => $body:ident;)*) => {$(
        #[target_feature(enable = "neon")]
        unsafe fn $neon(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
            // SAFETY: forwarded contract.
            unsafe { $body::<false>(w, row_bytes, a, out) }
        }

        #[target_feature(enable = "neon,dotprod")]
        unsafe fn $dot(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
            // SAFETY: forwarded contract (the CPU supports dotprod).
            unsafe { $body::<true>(w, row_bytes, a, out) }
        }
    )*};
}

wrappers! {
    tq2_0_neon, tq2_0_dot => tq2_0;
    i2s_neon, i2s_dot => i2s;
    tq1_0_neon, tq1_0_dot => tq1_0;
    q8_0_neon, q8_0_dot => q8_0;
}

macro_rules! safe {
    ($($name:ident => $inner:ident;)*) => {$(
        pub(crate) fn $name(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
            // SAFETY: only reachable through a `Kernels` constructor whose caller promised the
            // CPU supports this path's target features.
            unsafe { $inner(w, row_bytes, a, out) }
        }
    )*};
}

safe! {
    neon_tq2_0 => tq2_0_neon;
    neon_i2s => i2s_neon;
    neon_tq1_0 => tq1_0_neon;
    neon_q8_0 => q8_0_neon;
    dot_tq2_0 => tq2_0_dot;
    dot_i2s => i2s_dot;
    dot_tq1_0 => tq1_0_dot;
    dot_q8_0 => q8_0_dot;
}

// Multi-token entries: the matrix-vector kernels once per token.
crate::scalar::gemm_from_matvec!(pub(crate) neon_gemm_tq2_0, neon_tq2_0);
crate::scalar::gemm_from_matvec!(pub(crate) neon_gemm_i2s, neon_i2s);
crate::scalar::gemm_from_matvec!(pub(crate) neon_gemm_tq1_0, neon_tq1_0);
crate::scalar::gemm_from_matvec!(pub(crate) neon_gemm_q8_0, neon_q8_0);
crate::scalar::gemm_from_matvec!(pub(crate) dot_gemm_tq2_0, dot_tq2_0);
crate::scalar::gemm_from_matvec!(pub(crate) dot_gemm_i2s, dot_i2s);
crate::scalar::gemm_from_matvec!(pub(crate) dot_gemm_tq1_0, dot_tq1_0);
crate::scalar::gemm_from_matvec!(pub(crate) dot_gemm_q8_0, dot_q8_0);

// ------------------------------------------------------------------------------------------------
// Attention over the f16 KV cache.

/// Query heads whose accumulators one pass of the attention kernels keeps in registers.
const HEADS: usize = 4;

/// Four halves at `p` widened to `f32` with `fcvtl` (base AdvSIMD; the f16 vector types have
/// no stable intrinsics).
///
/// # Safety
/// Eight bytes are readable at `p`.
#[inline(always)]
unsafe fn f16x4_to_f32(p: *const u16) -> float32x4_t {
    let r: float32x4_t;
    // SAFETY: the caller's contract covers the load; `fcvtl` only touches registers.
    unsafe {
        let h = vld1_u16(p);
        asm!(
            "fcvtl {r:v}.4s, {h:v}.4h",
            h = in(vreg) h,
            r = lateout(vreg) r,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    r
}

/// NEON attention scores (see [`crate::scalar::scores_f16`]): each key row is widened once
/// and met by up to four query heads.
unsafe fn scores_f16_neon(k: &[u16], q: &[f32], hd: usize, scores: &mut [f32]) {
    if hd == 0 {
        return;
    }
    let n = k.len() / hd;
    let g = q.len() / hd;
    assert!(scores.len() >= g * n, "scores too short");
    let mut j0 = 0;
    while j0 < g {
        let gj = core::cmp::min(HEADS, g - j0);
        for p in 0..n {
            // SAFETY: every load reads inside key row `p` or query rows `j0 .. j0 + gj`.
            unsafe {
                let kr = k.as_ptr().add(p * hd);
                let mut acc = [[vdupq_n_f32(0.0); 2]; HEADS];
                let mut c = 0;
                while c + 8 <= hd {
                    let k0 = f16x4_to_f32(kr.add(c));
                    let k1 = f16x4_to_f32(kr.add(c + 4));
                    for (jj, a) in acc.iter_mut().enumerate().take(gj) {
                        let qr = q.as_ptr().add((j0 + jj) * hd + c);
                        a[0] = vfmaq_f32(a[0], k0, vld1q_f32(qr));
                        a[1] = vfmaq_f32(a[1], k1, vld1q_f32(qr.add(4)));
                    }
                    c += 8;
                }
                for (jj, a) in acc.iter().enumerate().take(gj) {
                    let j = j0 + jj;
                    let s = vaddvq_f32(vaddq_f32(a[0], a[1]));
                    let (kt, qt) = (&k[p * hd + c..(p + 1) * hd], &q[j * hd + c..(j + 1) * hd]);
                    scores[j * n + p] = s + crate::scalar::dot_f16(kt, qt);
                }
            }
        }
        j0 += gj;
    }
}

/// NEON weighted value sums (see [`crate::scalar::mix_f16`]): for each 8 columns, up to four
/// heads' accumulators stay in registers while every value row is widened once.
unsafe fn mix_f16_neon(w: &[f32], v: &[u16], hd: usize, acc: &mut [f32]) {
    if hd == 0 {
        return;
    }
    let n = v.len() / hd;
    let g = acc.len() / hd;
    assert!(w.len() >= g * n, "weights too short");
    let mut j0 = 0;
    while j0 < g {
        let gj = core::cmp::min(HEADS, g - j0);
        let mut c = 0;
        // SAFETY: every access is inside value rows `0 .. n` at columns below `hd`, or
        // accumulator rows `j0 .. j0 + gj`.
        unsafe {
            let ap = acc.as_mut_ptr();
            while c + 8 <= hd {
                let mut a = [[vdupq_n_f32(0.0); 2]; HEADS];
                for (jj, a) in a.iter_mut().enumerate().take(gj) {
                    let r = ap.add((j0 + jj) * hd + c);
                    *a = [vld1q_f32(r), vld1q_f32(r.add(4))];
                }
                for p in 0..n {
                    let vr = v.as_ptr().add(p * hd + c);
                    let v0 = f16x4_to_f32(vr);
                    let v1 = f16x4_to_f32(vr.add(4));
                    for (jj, a) in a.iter_mut().enumerate().take(gj) {
                        let wv = vdupq_n_f32(*w.get_unchecked((j0 + jj) * n + p));
                        a[0] = vfmaq_f32(a[0], wv, v0);
                        a[1] = vfmaq_f32(a[1], wv, v1);
                    }
                }
                for (jj, a) in a.iter().enumerate().take(gj) {
                    let r = ap.add((j0 + jj) * hd + c);
                    vst1q_f32(r, a[0]);
                    vst1q_f32(r.add(4), a[1]);
                }
                c += 8;
            }
        }
        j0 += gj;
    }
    crate::scalar::mix_f16_columns(w, v, hd, acc, hd - hd % 8);
}

pub(crate) fn neon_scores_f16(k: &[u16], q: &[f32], hd: usize, scores: &mut [f32]) {
    // SAFETY: NEON is part of the aarch64 baseline.
    unsafe { scores_f16_neon(k, q, hd, scores) }
}

pub(crate) fn neon_mix_f16(w: &[f32], v: &[u16], hd: usize, acc: &mut [f32]) {
    // SAFETY: NEON is part of the aarch64 baseline.
    unsafe { mix_f16_neon(w, v, hd, acc) }
}
