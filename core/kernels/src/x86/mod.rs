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

use crate::act::{ActBatch, ActQ8};
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

/// The argument checks of a few-token product: `out` is `[token][row]` for `a.n` tokens (at
/// most [`ternary::FEW`]), every token's activations cover `nb` weight blocks of
/// `act_blocks` activation blocks of `act_len` values. Returns the row count, or `None` when
/// there is nothing to compute.
fn few_rows(
    w: &[u8],
    row_bytes: usize,
    a: &ActBatch<'_>,
    out: &[f32],
    (nb, act_blocks, act_len): (usize, usize, usize),
) -> Option<usize> {
    let n = a.n;
    if n == 0 || out.len() < n {
        return None;
    }
    assert!(
        n <= ternary::FEW,
        "too many tokens for the few-token kernel"
    );
    let rows = out.len() / n;
    for t in 0..n {
        check_q8(w, row_bytes, rows, nb, act_blocks, &a.token(t), act_len);
    }
    Some(rows)
}

/// The argument checks of the multi-token tile drivers (the scalar reference panics in the
/// same cases): `rows = out.len() / n` rows of `row_bytes` in `w`, whose blocks of
/// `block_bytes` take `per_block` activation blocks of `act_len` codes each, and every token's
/// codes, scales and sums. Returns `(rows, blocks per row)`, or `None` when there is nothing
/// to compute.
pub(crate) fn tile_shape(
    w: &[u8],
    row_bytes: usize,
    a: &ActBatch<'_>,
    out: &[f32],
    (block_bytes, per_block, act_len): (usize, usize, usize),
) -> Option<(usize, usize)> {
    let n = a.n;
    if n == 0 || out.len() < n {
        return None;
    }
    let rows = out.len() / n;
    let nb = row_bytes / block_bytes;
    assert!(w.len() >= rows * row_bytes, "weight slice too short");
    assert_eq!(a.block, act_len, "activation block length");
    let na = a.cols / a.block;
    assert!(na >= nb * per_block, "activation codes too short");
    assert!(a.qs.len() >= n * a.cols, "activation codes too short");
    assert!(
        a.d.len() >= n * na && a.sums.len() >= n * na,
        "activation scales too short"
    );
    Some((rows, nb))
}

/// Stores each token's four row sums (`acc[t]`, rows `r..r + 4`) into `out`, `[token][row]`.
#[inline(always)]
fn store_tokens(out: &mut [f32], rows: usize, r: usize, acc: &[[f32; 4]]) {
    for (t, v) in acc.iter().enumerate() {
        store_rows(&mut out[t * rows..(t + 1) * rows], r, *v);
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

// ------------------------------------------------------------------------------------------------
// The kernels, a module per family of formats; the wrappers below put them in the table.

mod attention;
mod blocks;
mod float;
mod gemm;
mod gemm_i16;
mod gemm_k;
mod kquant;
mod ternary;
use attention::*;
use blocks::*;
use float::*;
use kquant::*;
use ternary::*;

// AVX-512 VNNI kernels, compiled only when the build script found a compiler with these
// intrinsics (1.89+).
#[cfg(trillim_avx512)]
pub(crate) use avx512::{tq1_digit512, triple512};

#[cfg(trillim_avx512)]
#[allow(clippy::incompatible_msrv)]
mod avx512;
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
    avx2_q5_0 => q5_avx2::<false>;
    avx2_q5_1 => q5_avx2::<true>;
    avx2_iq4_nl => iq4_nl_avx2;
    avx2_q2_k => q2_k_avx2;
    avx2_q3_k => q3_k_avx2;
    avx2_q4_k => q4_k_avx2;
    avx2_q5_k => q5_k_avx2;
    avx2_q6_k => q6_k_avx2;
    avx2_iq4_xs => iq4_xs_avx2;
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

// Multi-token entries of the AVX2 path. A few tokens (decode steps of several sequences) take
// the few-token kernels, which read each row group once for all of them with the
// matrix-vector kernels' arithmetic; more tokens (prefill) take the register-blocked tiles of
// `gemm` (Q8_0 and IQ4: `gemm_i16`, K-quants: `gemm_k`), which decode a block of eight or sixteen rows
// once for up to 64 tokens (TQ2_0, I2_S and Q8_0 switch at `ternary::FEW` tokens, the others at
// `TILES_FROM`). Formats without either run the matrix-vector kernel once per token.
macro_rules! gemm_entry {
    ($($name:ident => $few:expr, $tiles:expr;)*) => {$(
        pub(crate) fn $name(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
            // SAFETY: only reachable through `Kernels::avx2` (or a path above it), whose
            // caller promised AVX2, FMA and F16C.
            unsafe {
                if a.n <= ternary::FEW {
                    $few(w, row_bytes, a, out)
                } else {
                    $tiles(w, row_bytes, a, out)
                }
            }
        }
    )*};
}

gemm_entry! {
    avx2_gemm_tq2_0 => tern2_avx2_few::<false>, gemm::gemm::<{ gemm::TQ2 }>;
    avx2_gemm_i2s => tern2_avx2_few::<true>, gemm::gemm::<{ gemm::I2S }>;
}

macro_rules! gemm_tiles {
    ($($name:ident => $each:ident, $tiles:expr;)*) => {$(
        pub(crate) fn $name(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
            if a.n < TILES_FROM {
                $each(w, row_bytes, a, out)
            } else {
                // SAFETY: as in `gemm_entry`.
                unsafe { $tiles(w, row_bytes, a, out) }
            }
        }
    )*};
}

/// Fewest tokens for which the tiles beat the matrix-vector kernel run per token.
const TILES_FROM: usize = 4;

crate::scalar::gemm_from_matvec!(avx2_gemm_tq1_0_each, avx2_tq1_0);
crate::scalar::gemm_from_matvec!(avx2_gemm_q4_0_each, avx2_q4_0);
crate::scalar::gemm_from_matvec!(avx2_gemm_q4_1_each, avx2_q4_1);

crate::scalar::gemm_from_matvec!(avx2_gemm_q5_0_each, avx2_q5_0);
crate::scalar::gemm_from_matvec!(avx2_gemm_q5_1_each, avx2_q5_1);

crate::scalar::gemm_from_matvec!(avx2_gemm_q4_k_each, avx2_q4_k);
crate::scalar::gemm_from_matvec!(avx2_gemm_q6_k_each, avx2_q6_k);

crate::scalar::gemm_from_matvec!(avx2_gemm_iq4_nl_each, avx2_iq4_nl);
crate::scalar::gemm_from_matvec!(avx2_gemm_iq4_xs_each, avx2_iq4_xs);
crate::scalar::gemm_from_matvec!(avx2_gemm_q5_k_each, avx2_q5_k);
crate::scalar::gemm_from_matvec!(avx2_gemm_q3_k_each, avx2_q3_k);
crate::scalar::gemm_from_matvec!(avx2_gemm_q2_k_each, avx2_q2_k);

gemm_tiles! {
    avx2_gemm_iq4_nl => avx2_gemm_iq4_nl_each, gemm_i16::gemm_iq4_nl;
    avx2_gemm_iq4_xs => avx2_gemm_iq4_xs_each, gemm_i16::gemm_iq4_xs;
    avx2_gemm_q5_k => avx2_gemm_q5_k_each, gemm_i16::gemm_q5_k;
    avx2_gemm_q3_k => avx2_gemm_q3_k_each, gemm_i16::gemm_q3_k;
    avx2_gemm_q2_k => avx2_gemm_q2_k_each, gemm_i16::gemm_q2_k;
    avx2_gemm_q4_k => avx2_gemm_q4_k_each, gemm_k::tiles_q4_k;
    avx2_gemm_q6_k => avx2_gemm_q6_k_each, gemm_k::tiles_q6_k;
}

gemm_tiles! {
    avx2_gemm_tq1_0 => avx2_gemm_tq1_0_each, gemm::gemm::<{ gemm::TQ1 }>;
    avx2_gemm_q4_0 => avx2_gemm_q4_0_each, gemm::gemm::<{ gemm::Q40 }>;
    avx2_gemm_q4_1 => avx2_gemm_q4_1_each, gemm::gemm::<{ gemm::Q41 }>;
    avx2_gemm_q5_0 => avx2_gemm_q5_0_each, gemm::gemm::<{ gemm::Q50 }>;
    avx2_gemm_q5_1 => avx2_gemm_q5_1_each, gemm::gemm::<{ gemm::Q51 }>;
}

gemm_entry! {
    avx2_gemm_q8_0 => q8_0_avx2_few, gemm_i16::gemm_q8_0;
}

/// The AVX2 tiles with `vpdpbusd` (AVX-VNNI) for the block sums, behind the same few-token
/// and per-token fallbacks as their AVX2 entries.
#[cfg(trillim_avx512)]
mod vnni_entries {
    use super::*;

    macro_rules! vnni_entry {
        ($($name:ident => $few:expr, $from:expr, $tiles:expr;)*) => {$(
            pub(crate) fn $name(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
                if a.n < $from {
                    $few(w, row_bytes, a, out)
                } else {
                    // SAFETY: only reachable through `Kernels::avxvnni`, whose caller promised
                    // AVX2, FMA, F16C and AVX-VNNI.
                    unsafe { $tiles(w, row_bytes, a, out) }
                }
            }
        )*};
    }

    vnni_entry! {
        avxvnni_gemm_tq2_0 => avx2_gemm_tq2_0, ternary::FEW + 1, gemm::gemm_vnni::<{ gemm::TQ2 }>;
        avxvnni_gemm_i2s => avx2_gemm_i2s, ternary::FEW + 1, gemm::gemm_vnni::<{ gemm::I2S }>;
        avxvnni_gemm_tq1_0 => avx2_gemm_tq1_0, TILES_FROM, gemm::gemm_vnni::<{ gemm::TQ1 }>;
        avxvnni_gemm_q4_0 => avx2_gemm_q4_0, TILES_FROM, gemm::gemm_vnni::<{ gemm::Q40 }>;
        avxvnni_gemm_q4_1 => avx2_gemm_q4_1, TILES_FROM, gemm::gemm_vnni::<{ gemm::Q41 }>;
        avxvnni_gemm_q5_0 => avx2_gemm_q5_0, TILES_FROM, gemm::gemm_vnni::<{ gemm::Q50 }>;
        avxvnni_gemm_q5_1 => avx2_gemm_q5_1, TILES_FROM, gemm::gemm_vnni::<{ gemm::Q51 }>;
        avxvnni_gemm_q8_0 => avx2_gemm_q8_0, ternary::FEW + 1, gemm::gemm_vnni::<{ gemm::Q8 }>;
    }
}
#[cfg(trillim_avx512)]
pub(crate) use vnni_entries::*;

wrap_f32! {
    avx2_f32 => matvec_float_avx2::<0>;
    avx2_f16 => matvec_float_avx2::<1>;
    avx2_bf16 => matvec_float_avx2::<2>;
}

macro_rules! wrap_gemm_f32 {
    ($($name:ident => $inner:expr;)*) => {$(
        pub(crate) fn $name(w: &[u8], row_bytes: usize, x: &[f32], n: usize, out: &mut [f32]) {
            // SAFETY: only reachable through a `Kernels` constructor whose caller promised the
            // CPU supports this path's target features.
            unsafe { $inner(w, row_bytes, x, n, out) }
        }
    )*};
}

wrap_gemm_f32! {
    avx2_gemm_f32 => gemm_float_avx2::<0>;
    avx2_gemm_f16 => gemm_float_avx2::<1>;
    avx2_gemm_bf16 => gemm_float_avx2::<2>;
}

/// The scalar element-wise bodies compiled for AVX2: the same operations (Rust does not fuse
/// multiplies and adds on its own), eight lanes at a time.
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_erf_avx2(x: &mut [f32]) {
    crate::math::gelu_erf(x)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_avx2(x: &mut [f32], max: f32, scale: f32) -> f32 {
    crate::math::exp_shifted(x, max, scale)
}

pub(crate) fn avx2_gelu_erf(x: &mut [f32]) {
    // SAFETY: only reachable through a `Kernels` constructor whose caller promised AVX2/FMA.
    unsafe { gelu_erf_avx2(x) }
}

pub(crate) fn avx2_exp_shifted(x: &mut [f32], max: f32, scale: f32) -> f32 {
    // SAFETY: only reachable through a `Kernels` constructor whose caller promised AVX2/FMA.
    unsafe { exp_shifted_avx2(x, max, scale) }
}

/// Activation quantization compiled with a path's features: `$groups` and `$per_token` are the
/// table's safe entries, reachable only through a `Kernels` constructor whose caller promised
/// `$features`.
macro_rules! quantize_entries {
    ($features:literal, $groups:ident, $per_token:ident) => {
        pub(crate) fn $groups(
            x: &[f32],
            block: usize,
            group: usize,
            qs: &mut [i8],
            d: &mut [f32],
            sums: &mut [i32],
        ) {
            #[target_feature(enable = $features)]
            unsafe fn with_features(
                x: &[f32],
                block: usize,
                group: usize,
                qs: &mut [i8],
                d: &mut [f32],
                sums: &mut [i32],
            ) {
                crate::act::quantize_groups(x, block, group, qs, d, sums);
            }
            // SAFETY: the constructor's caller promised `$features`.
            unsafe { with_features(x, block, group, qs, d, sums) }
        }

        pub(crate) fn $per_token(
            x: &[f32],
            block: usize,
            qs: &mut [i8],
            d: &mut [f32],
            sums: &mut [i32],
        ) {
            #[target_feature(enable = $features)]
            unsafe fn with_features(
                x: &[f32],
                block: usize,
                qs: &mut [i8],
                d: &mut [f32],
                sums: &mut [i32],
            ) {
                crate::act::quantize_per_token(x, block, qs, d, sums);
            }
            // SAFETY: as above.
            unsafe { with_features(x, block, qs, d, sums) }
        }
    };
}

quantize_entries!("avx2,fma", avx2_quantize_groups, avx2_quantize_per_token);
#[cfg(trillim_avx512)]
quantize_entries!(
    "avx512f,avx512bw,avx512vl,avx2,fma",
    avx512_quantize_groups,
    avx512_quantize_per_token
);

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
    if l7.eax >= 1 {
        // SAFETY: leaf 7 reports sub-leaf 1.
        let l71 = unsafe { __cpuid_count(7, 1) };
        f.avxvnni = f.avx2 && l71.eax & (1 << 4) != 0;
    }
    f
}

#[target_feature(enable = "xsave")]
unsafe fn read_xcr0() -> u64 {
    // SAFETY: the caller checked OSXSAVE.
    unsafe { _xgetbv(0) }
}
