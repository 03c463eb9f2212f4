//! AVX-512 VBMI kernels over tiled ternary weights (see [`crate::ternary_tiles`]).
//!
//! Per step, `vpermb` turns 64 triple indices (16 rows × 4 triples) into the codes of each of
//! the triples' three weight positions, and `vpdpbusd` adds each against four broadcast
//! activations of the matching permuted plane: six instructions for 192 weights, where the
//! base-3 TQ1_0 kernels need about twenty. Results are bit-identical to the scalar reference.

// Intrinsics are `unsafe fn` on older compilers and safe inside `#[target_feature]` functions
// on newer ones; this module is only built with the latter (Rust 1.89+).
#![allow(unused_unsafe)]
#![allow(clippy::incompatible_msrv)]

use core::arch::x86_64::*;

use crate::act::{ActBatch, ActQ8};
use crate::ternary_tiles::{
    BITS_OFFSET, HALF_STEPS, NIBBLES_OFFSET, PERMUTED_HALF, ROW_BLOCK_BYTES, TILE_BLOCK_BYTES,
    TILE_ROWS, TRIPLES,
};

/// Bytes of one permuted 256-weight activation block.
const PERMUTED_BLOCK: usize = 2 * PERMUTED_HALF;
/// Weight blocks whose permuted activations the matrix-vector kernel keeps on the stack.
const CHUNK: usize = 64;
/// Tokens whose `f32` accumulators a multi-token pass keeps on the stack.
const TOKENS: usize = 64;
/// Batches up to this many tokens (decode steps of several sequences) stream the matrix once,
/// tile after tile with prefetching, like the matrix-vector kernel.
const FEW_TOKENS: usize = 8;
/// Weight blocks whose permuted activations the few-token kernel prepares at once.
const FEW_CHUNK: usize = 16;

/// `vpermb` tables: byte `i` of table `j` is code `j` of triple index `i` (`i mod 27`: a
/// damaged index still reads inside the table).
const CODE_TABLES: [[u8; 64]; 3] = {
    let mut t = [[0u8; 64]; 3];
    let mut i = 0;
    while i < 64 {
        let mut j = 0;
        while j < 3 {
            t[j][i] = crate::ternary_tiles::index_code((i % 27) as u8, j);
            j += 1;
        }
        i += 1;
    }
    t
};

/// `vpermt2b` indices of the activation planes: lane `g` of plane `j` is activation `3g + j`
/// (clamped; lanes past the block are masked off).
const PLANE_INDICES: [[u8; 64]; 3] = {
    let mut t = [[0u8; 64]; 3];
    let mut j = 0;
    while j < 3 {
        let mut g = 0;
        while g < 64 {
            let k = 3 * g + j;
            t[j][g] = if k < 127 { k as u8 } else { 127 };
            g += 1;
        }
        j += 1;
    }
    t
};

/// The code tables in registers.
struct Tables([__m512i; 3]);

impl Tables {
    /// # Safety
    /// The CPU supports AVX-512 F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn new() -> Tables {
        // SAFETY: each table is 64 readable bytes.
        Tables(core::array::from_fn(|j| unsafe {
            _mm512_loadu_si512(CODE_TABLES[j].as_ptr() as *const _)
        }))
    }
}

/// Permutes the two 128-element activation blocks at `q` into `out` (two permuted halves).
///
/// # Safety
/// `q` has 256 readable bytes and `out` [`PERMUTED_BLOCK`] writable ones (the stores are
/// masked to the planes); the CPU supports AVX-512 F/BW/VBMI.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn permute_block(q: *const i8, out: *mut i8) {
    // Plane j, lane g: activation 3g + j, zero where that is past the block.
    let valid = [(1u64 << 43) - 1, (1u64 << 43) - 1, (1u64 << 42) - 1];
    let store = (1u64 << TRIPLES) - 1;
    // SAFETY: the caller's contract covers every load and (masked) store.
    unsafe {
        for h in 0..2 {
            let lo = _mm512_loadu_si512(q.add(128 * h) as *const _);
            let hi = _mm512_loadu_si512(q.add(128 * h + 64) as *const _);
            for j in 0..3 {
                let ix = _mm512_loadu_si512(PLANE_INDICES[j].as_ptr() as *const _);
                let v = _mm512_maskz_permutex2var_epi8(valid[j], lo, ix, hi);
                _mm512_mask_storeu_epi8(out.add(PERMUTED_HALF * h + TRIPLES * j), store, v);
            }
        }
    }
}

/// The 64 triple indices of step `s` of the tile block at `blk`.
///
/// # Safety
/// `blk` points to a whole tile block; the CPU supports AVX-512 F/BW.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn step_indices(blk: *const u8, s: usize) -> __m512i {
    // SAFETY: the nibble vector and mask of step `s` lie inside the block.
    unsafe {
        let raw = _mm512_loadu_si512(blk.add(NIBBLES_OFFSET + 64 * (s / 2)) as *const _);
        let nib = if s % 2 == 0 {
            raw
        } else {
            _mm512_srli_epi16::<4>(raw)
        };
        let lo = _mm512_and_si512(nib, _mm512_set1_epi8(0xf));
        let k = (blk.add(BITS_OFFSET + 8 * s) as *const u64).read_unaligned();
        _mm512_mask_add_epi8(lo, k, lo, _mm512_set1_epi8(0x10))
    }
}

/// The codes of step `s` for weight positions 0, 1, 2.
///
/// # Safety
/// As [`step_indices`]; the CPU supports AVX-512 VBMI.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn step_codes(t: &Tables, blk: *const u8, s: usize) -> [__m512i; 3] {
    // SAFETY: forwarded contract.
    let idx = unsafe { step_indices(blk, s) };
    [
        _mm512_permutexvar_epi8(idx, t.0[0]),
        _mm512_permutexvar_epi8(idx, t.0[1]),
        _mm512_permutexvar_epi8(idx, t.0[2]),
    ]
}

/// The broadcast activations of plane `j`, step `st` of a permuted half at `xp`.
///
/// # Safety
/// `xp` points to a permuted half.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn plane_word(xp: *const i8, j: usize, st: usize) -> __m512i {
    // SAFETY: 4 · 10 + 4 ≤ 44, inside plane `j`.
    _mm512_set1_epi32(unsafe { (xp.add(TRIPLES * j + 4 * st) as *const i32).read_unaligned() })
}

/// `acc + (dw · d) · (s0 + s1 + s2 − sum)` lane-wise, as the scalar reference rounds it.
///
/// # Safety
/// The CPU supports AVX-512 F.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn epilogue(acc: __m512, dw: __m512, d: f32, s: &[__m512i; 3], sum: i32) -> __m512 {
    let isum = _mm512_sub_epi32(
        _mm512_add_epi32(_mm512_add_epi32(s[0], s[1]), s[2]),
        _mm512_set1_epi32(sum),
    );
    _mm512_add_ps(
        acc,
        _mm512_mul_ps(
            _mm512_mul_ps(dw, _mm512_set1_ps(d)),
            _mm512_cvtepi32_ps(isum),
        ),
    )
}

/// Argument checks shared by both kernels: rows of whole tiles, enough activations.
fn check(w: &[u8], row_bytes: usize, rows: usize, block: usize, blocks: usize) -> usize {
    assert_eq!(rows % TILE_ROWS, 0, "rows must be whole tiles");
    assert_eq!(block, 128, "activation block length");
    assert!(w.len() >= rows * row_bytes, "weight slice too short");
    let nb = row_bytes / ROW_BLOCK_BYTES;
    assert!(blocks >= 2 * nb, "activation codes too short");
    nb
}

/// The multi-token kernels' checks: returns rows, activation blocks per token and weight
/// blocks per row.
fn check_batch(
    w: &[u8],
    row_bytes: usize,
    a: &ActBatch<'_>,
    out_len: usize,
) -> (usize, usize, usize) {
    let n = a.n.max(1);
    let rows = out_len / n;
    let na = a.cols / a.block.max(1);
    let nb = check(w, row_bytes, rows, a.block, na);
    assert!(a.qs.len() >= n * a.cols, "activation codes too short");
    assert!(
        a.d.len() >= n * na && a.sums.len() >= n * na,
        "activation scales too short"
    );
    (rows, na, nb)
}

/// # Safety
/// The CPU supports AVX-512 F/BW/VL/VNNI/VBMI and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,f16c")]
unsafe fn matvec(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let rows = out.len();
    let nb = check(w, row_bytes, rows, a.block, a.d.len().min(a.sums.len()));
    assert!(a.qs.len() >= 256 * nb, "activation codes too short");
    // SAFETY: this function's features include the tables' AVX-512 F/BW.
    let t = unsafe { Tables::new() };
    let mut xp = [0i8; CHUNK * PERMUTED_BLOCK + 64];
    let tile_bytes = TILE_ROWS * row_bytes;
    let mut c0 = 0;
    while c0 < nb {
        let cn = core::cmp::min(CHUNK, nb - c0);
        for b in 0..cn {
            // SAFETY: block c0 + b's 256 codes are inside `a.qs` (checked); `xp` has room for
            // `CHUNK` permuted blocks plus slack.
            unsafe {
                permute_block(
                    a.qs.as_ptr().add(256 * (c0 + b)),
                    xp.as_mut_ptr().add(PERMUTED_BLOCK * b),
                )
            };
        }
        for (ti, o) in out.chunks_exact_mut(TILE_ROWS).enumerate() {
            let mut acc = if c0 == 0 {
                _mm512_setzero_ps()
            } else {
                // SAFETY: `o` holds 16 floats.
                unsafe { _mm512_loadu_ps(o.as_ptr()) }
            };
            for b in c0..c0 + cn {
                // SAFETY: tile `ti` holds `nb` blocks (`w.len()` checked); the prefetch never
                // faults.
                unsafe {
                    let blk = w.as_ptr().add(ti * tile_bytes + b * TILE_BLOCK_BYTES);
                    let ahead = blk.wrapping_add(8 * TILE_BLOCK_BYTES);
                    for l in 0..TILE_BLOCK_BYTES / 64 + 1 {
                        _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * l) as *const i8);
                    }
                    let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
                    for h in 0..2 {
                        let xh = xp
                            .as_ptr()
                            .add(PERMUTED_BLOCK * (b - c0) + PERMUTED_HALF * h);
                        let mut s = [_mm512_setzero_si512(); 3];
                        for st in 0..HALF_STEPS {
                            let c = step_codes(&t, blk, HALF_STEPS * h + st);
                            for j in 0..3 {
                                s[j] = _mm512_dpbusd_epi32(s[j], c[j], plane_word(xh, j, st));
                            }
                        }
                        let ab = 2 * b + h;
                        acc = epilogue(acc, dw, a.d[ab], &s, a.sums[ab]);
                    }
                }
            }
            // SAFETY: `o` holds 16 floats.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), acc) };
        }
        c0 += cn;
    }
}

/// Adds `T` tokens (permuted activations at `xp`, `stride` bytes apart) times the decoded block `codes` to their accumulators, half by half.
///
/// # Safety
/// `xp` holds `T` permuted blocks `stride` bytes apart; `d` and `sums` point to the first
/// token's scales and code sums of the block's two halves, with `na` entries per token; the CPU supports AVX-512 F/BW/VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tokens<const T: usize>(
    codes: &[[__m512i; 3]; 2 * HALF_STEPS],
    xp: *const i8,
    stride: usize,
    dw: __m512,
    (d, sums, na): (*const f32, *const i32, usize),
    acc: &mut [__m512],
) {
    for h in 0..2 {
        let mut s = [[_mm512_setzero_si512(); 3]; T];
        for st in 0..HALF_STEPS {
            let c = &codes[HALF_STEPS * h + st];
            for j in 0..3 {
                for (t, s) in s.iter_mut().enumerate() {
                    // SAFETY: token `t`'s permuted half `h` is inside `xp` (caller's contract).
                    let q = unsafe { plane_word(xp.add(stride * t + PERMUTED_HALF * h), j, st) };
                    s[j] = _mm512_dpbusd_epi32(s[j], c[j], q);
                }
            }
        }
        for (t, s) in s.iter().enumerate() {
            // SAFETY: token `t`'s scale and code sum of half `h` are inside the activation
            // arrays (caller's contract).
            let (d, sum) = unsafe { (d.add(t * na + h).read(), sums.add(t * na + h).read()) };
            // SAFETY: register arithmetic within this function's features.
            acc[t] = unsafe { epilogue(acc[t], dw, d, s, sum) };
        }
    }
}

/// Weight blocks whose permuted activations a multi-token pass prepares at once (shared by
/// every tile).
const PASS_BLOCKS: usize = 2;

/// # Safety
/// The CPU supports AVX-512 F/BW/VL/VNNI/VBMI and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,f16c")]
unsafe fn gemm(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    let n = a.n;
    if n == 0 || out.is_empty() {
        return;
    }
    if n <= FEW_TOKENS {
        // SAFETY: same features as this function.
        return unsafe { gemm_few(w, row_bytes, a, out) };
    }
    let (rows, na, nb) = check_batch(w, row_bytes, a, out.len());
    // SAFETY: this function's features include the tables' AVX-512 F/BW.
    let t = unsafe { Tables::new() };
    let tile_bytes = TILE_ROWS * row_bytes;
    let mut codes = [[_mm512_setzero_si512(); 3]; 2 * HALF_STEPS];
    // Permuted activations of a pass: token k, block b at PERMUTED_BLOCK · (PASS_BLOCKS k + b).
    let mut xp = [0i8; TOKENS * PASS_BLOCKS * PERMUTED_BLOCK];
    let mut acc = [_mm512_setzero_ps(); TOKENS];
    let mut t0 = 0;
    while t0 < n {
        let nt = core::cmp::min(TOKENS, n - t0);
        let mut c0 = 0;
        while c0 < nb {
            let cn = core::cmp::min(PASS_BLOCKS, nb - c0);
            // SAFETY: tokens t0.. hold blocks c0.. (checked above); `xp` holds `nt` tokens of
            // `PASS_BLOCKS` permuted blocks.
            unsafe { permute_tokens(a, t0..t0 + nt, c0..c0 + cn, PASS_BLOCKS, &mut xp) };
            for ti in 0..rows / TILE_ROWS {
                let at = |k: usize| (t0 + k) * rows + ti * TILE_ROWS;
                // SAFETY: rows are whole tiles, so every token's 16 rows of this tile are in `out`.
                unsafe { load_acc(out, &mut acc[..nt], c0 == 0, at) };
                for b in c0..c0 + cn {
                    // SAFETY: tile `ti` holds `nb` blocks (checked above); every permuted
                    // block read is one this pass wrote.
                    unsafe {
                        let blk = w.as_ptr().add(ti * tile_bytes + b * TILE_BLOCK_BYTES);
                        for (s, c) in codes.iter_mut().enumerate() {
                            *c = step_codes(&t, blk, s);
                        }
                        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
                        // Token k's block b sits PASS_BLOCKS permuted blocks after token k − 1's.
                        let stride = PERMUTED_BLOCK * PASS_BLOCKS;
                        let scale = |k: usize| {
                            let i = (t0 + k) * na + 2 * b;
                            (a.d.as_ptr().add(i), a.sums.as_ptr().add(i), na)
                        };
                        let xb =
                            |k: usize| xp.as_ptr().add(PERMUTED_BLOCK * (PASS_BLOCKS * k + b - c0));
                        block_tokens(&codes, xb, stride, dw, scale, &mut acc[..nt]);
                    }
                }
                // SAFETY: rows are whole tiles, so every token's 16 rows of this tile are in `out`.
                unsafe { store_acc(out, &acc[..nt], at) };
            }
            c0 += cn;
        }
        t0 += nt;
    }
}

/// Permutes blocks `blocks` of tokens `tokens` into `xp`: token `k` (counted from the first),
/// block `b` (from the first) at `PERMUTED_BLOCK · (per_token · k + b)`.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VBMI; every token holds those blocks and `xp` has room for
/// `tokens.len()` tokens of `per_token` permuted blocks (`blocks.len() <= per_token`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn permute_tokens(
    a: &ActBatch<'_>,
    tokens: core::ops::Range<usize>,
    blocks: core::ops::Range<usize>,
    per_token: usize,
    xp: &mut [i8],
) {
    debug_assert!(blocks.len() <= per_token);
    debug_assert!(xp.len() >= tokens.len() * per_token * PERMUTED_BLOCK);
    for (k, t) in tokens.enumerate() {
        for (b, c) in blocks.clone().enumerate() {
            // SAFETY: token `t` holds block `c` and the slot is inside `xp` (caller's contract).
            unsafe {
                permute_block(
                    a.qs.as_ptr().add(t * a.cols + 256 * c),
                    xp.as_mut_ptr().add(PERMUTED_BLOCK * (per_token * k + b)),
                )
            };
        }
    }
}

/// Token `k`'s accumulator for a tile: zero on the first pass over a row's blocks, else what
/// the earlier passes left at `out[at(k)..]`.
///
/// # Safety
/// The CPU supports AVX-512 F; `at(k) + 16 <= out.len()` for every token.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_acc(out: &[f32], acc: &mut [__m512], fresh: bool, at: impl Fn(usize) -> usize) {
    for (k, acc) in acc.iter_mut().enumerate() {
        let o = at(k);
        *acc = if fresh {
            _mm512_setzero_ps()
        } else {
            // SAFETY: `out[o .. o + 16]` is inside `out` (rows are whole tiles).
            unsafe { _mm512_loadu_ps(out[o..o + TILE_ROWS].as_ptr()) }
        };
    }
}

/// Stores token `k`'s accumulator at `out[at(k)..]`.
///
/// # Safety
/// The CPU supports AVX-512 F; `at(k) + 16 <= out.len()` for every token.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_acc(out: &mut [f32], acc: &[__m512], at: impl Fn(usize) -> usize) {
    for (k, &v) in acc.iter().enumerate() {
        let o = at(k);
        // SAFETY: `out[o .. o + 16]` is inside `out` (rows are whole tiles).
        unsafe { _mm512_storeu_ps(out[o..o + TILE_ROWS].as_mut_ptr(), v) };
    }
}

/// Adds one decoded block times every token's activations to the tokens' accumulators, in
/// groups of eight, four, two and one.
///
/// # Safety
/// As [`tokens`], for every token `k < acc.len()` at `xb(k)` with scales at `scale(k)`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn block_tokens(
    codes: &[[__m512i; 3]; 2 * HALF_STEPS],
    xb: impl Fn(usize) -> *const i8,
    stride: usize,
    dw: __m512,
    scale: impl Fn(usize) -> (*const f32, *const i32, usize),
    acc: &mut [__m512],
) {
    let n = acc.len();
    let mut k = 0;
    while k + 8 <= n {
        // SAFETY: the caller's contract covers every token below `n`.
        unsafe { tokens::<8>(codes, xb(k), stride, dw, scale(k), &mut acc[k..k + 8]) };
        k += 8;
    }
    while k + 4 <= n {
        // SAFETY: the caller's contract covers every token below `n`.
        unsafe { tokens::<4>(codes, xb(k), stride, dw, scale(k), &mut acc[k..k + 4]) };
        k += 4;
    }
    while k + 2 <= n {
        // SAFETY: the caller's contract covers every token below `n`.
        unsafe { tokens::<2>(codes, xb(k), stride, dw, scale(k), &mut acc[k..k + 2]) };
        k += 2;
    }
    while k < n {
        // SAFETY: the caller's contract covers every token below `n`.
        unsafe { tokens::<1>(codes, xb(k), stride, dw, scale(k), &mut acc[k..k + 1]) };
        k += 1;
    }
}

/// Adds one tile block times `T` tokens (at most four) to their accumulators, decoding each
/// step's codes once and using them at once for every token, so the codes stay in registers
/// (the batch kernel decodes a whole block first and reads it back per group of tokens).
/// Same integer sums and epilogue, in the same order, as [`tokens`].
///
/// # Safety
/// As [`tokens`], with `blk` pointing to a whole tile block; the CPU supports AVX-512
/// F/BW/VL/VNNI/VBMI.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn block_fused<const T: usize>(
    t: &Tables,
    blk: *const u8,
    xp: *const i8,
    stride: usize,
    dw: __m512,
    (d, sums, na): (*const f32, *const i32, usize),
    acc: &mut [__m512],
) {
    for h in 0..2 {
        let mut s = [[_mm512_setzero_si512(); 3]; T];
        for st in 0..HALF_STEPS {
            // SAFETY: `blk` is a whole tile block (caller's contract).
            let c = unsafe { step_codes(t, blk, HALF_STEPS * h + st) };
            for j in 0..3 {
                for (k, s) in s.iter_mut().enumerate() {
                    // SAFETY: token `k`'s permuted half `h` is inside `xp` (caller's contract).
                    let q = unsafe { plane_word(xp.add(stride * k + PERMUTED_HALF * h), j, st) };
                    s[j] = _mm512_dpbusd_epi32(s[j], c[j], q);
                }
            }
        }
        for (k, s) in s.iter().enumerate() {
            // SAFETY: token `k`'s scale and code sum of half `h` are inside the activation
            // arrays (caller's contract).
            let (d, sum) = unsafe { (d.add(k * na + h).read(), sums.add(k * na + h).read()) };
            // SAFETY: register arithmetic within this function's features.
            acc[k] = unsafe { epilogue(acc[k], dw, d, s, sum) };
        }
    }
}

/// [`block_fused`] for `acc.len()` tokens (at most [`FEW_TOKENS`]), four at a time.
///
/// # Safety
/// As [`block_fused`] for every token `k < acc.len()` at `xb(k)` with scales at `scale(k)`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn block_few(
    t: &Tables,
    blk: *const u8,
    xb: impl Fn(usize) -> *const i8,
    stride: usize,
    dw: __m512,
    scale: impl Fn(usize) -> (*const f32, *const i32, usize),
    acc: &mut [__m512],
) {
    let mut k = 0;
    while k < acc.len() {
        let n = core::cmp::min(4, acc.len() - k);
        let a = &mut acc[k..k + n];
        // SAFETY: the caller's contract covers every token below `acc.len()`.
        unsafe {
            match n {
                4 => block_fused::<4>(t, blk, xb(k), stride, dw, scale(k), a),
                3 => block_fused::<3>(t, blk, xb(k), stride, dw, scale(k), a),
                2 => block_fused::<2>(t, blk, xb(k), stride, dw, scale(k), a),
                _ => block_fused::<1>(t, blk, xb(k), stride, dw, scale(k), a),
            }
        }
        k += n;
    }
}

/// A few tokens (at most [`FEW_TOKENS`]) × a tiled matrix in one streaming pass: tile after
/// tile, every block of a tile in order, prefetched ahead, each step of a block decoded once
/// (per four tokens) and used at once from registers ([`block_fused`]). The multi-token pass instead sweeps every tile for two blocks at a time, which
/// suits compute-bound prefill but not memory-bound decode. Same arithmetic, in the same order,
/// as both.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL/VNNI/VBMI and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,f16c")]
unsafe fn gemm_few(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    let n = a.n;
    assert!(n <= FEW_TOKENS, "too many tokens for the few-token kernel");
    let (rows, na, nb) = check_batch(w, row_bytes, a, out.len());
    // SAFETY: this function's features include the tables' AVX-512 F/BW.
    let t = unsafe { Tables::new() };
    let tile_bytes = TILE_ROWS * row_bytes;
    // Token k's permuted block b (of this chunk) at PERMUTED_BLOCK · (FEW_CHUNK k + b).
    let mut xp = [0i8; FEW_TOKENS * FEW_CHUNK * PERMUTED_BLOCK];
    let stride = PERMUTED_BLOCK * FEW_CHUNK;
    let mut acc = [_mm512_setzero_ps(); FEW_TOKENS];
    let mut c0 = 0;
    while c0 < nb {
        let cn = core::cmp::min(FEW_CHUNK, nb - c0);
        // SAFETY: every token holds blocks c0.. (checked above); `xp` holds `n` tokens of
        // `FEW_CHUNK` permuted blocks.
        unsafe { permute_tokens(a, 0..n, c0..c0 + cn, FEW_CHUNK, &mut xp) };
        for ti in 0..rows / TILE_ROWS {
            let at = |k: usize| k * rows + ti * TILE_ROWS;
            // SAFETY: rows are whole tiles, so every token's 16 rows of this tile are in `out`.
            unsafe { load_acc(out, &mut acc[..n], c0 == 0, at) };
            for b in c0..c0 + cn {
                // SAFETY: tile `ti` holds `nb` blocks (checked above); every permuted block read
                // is one this chunk wrote; the prefetch never faults.
                unsafe {
                    let blk = w.as_ptr().add(ti * tile_bytes + b * TILE_BLOCK_BYTES);
                    let ahead = blk.wrapping_add(8 * TILE_BLOCK_BYTES);
                    for l in 0..TILE_BLOCK_BYTES / 64 + 1 {
                        _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * l) as *const i8);
                    }
                    let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
                    let scale = |k: usize| {
                        let i = k * na + 2 * b;
                        (a.d.as_ptr().add(i), a.sums.as_ptr().add(i), na)
                    };
                    let xb = |k: usize| xp.as_ptr().add(PERMUTED_BLOCK * (FEW_CHUNK * k + b - c0));
                    block_few(&t, blk, xb, stride, dw, scale, &mut acc[..n]);
                }
            }
            // SAFETY: rows are whole tiles, so every token's 16 rows of this tile are in `out`.
            unsafe { store_acc(out, &acc[..n], at) };
        }
        c0 += cn;
    }
}

// Safe wrappers stored in the kernel table, reachable only through `Kernels::avx512vbmi`, whose
// contract is that the CPU supports these target features.

/// Tiled ternary matrix × int8 vector.
pub(crate) fn vbmi_tiles(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    // SAFETY: only reachable through `Kernels::avx512vbmi` (see above).
    unsafe { matvec(w, row_bytes, a, out) }
}

/// Tiled ternary matrix × several int8 vectors.
pub(crate) fn vbmi_gemm_tiles(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]) {
    // SAFETY: only reachable through `Kernels::avx512vbmi` (see above).
    unsafe { gemm(w, row_bytes, a, out) }
}
