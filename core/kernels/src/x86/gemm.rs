//! AVX2 multi-token (prefill) kernels: one weight matrix times many token vectors.
//!
//! The AVX2 counterpart of the AVX-512 VNNI tiles in `x86_gemm.rs`. A pass takes a tile of
//! eight rows. Each weight block of those rows is decoded once into *codes* (unsigned bytes:
//! 2-bit or base-3 ternary codes, or nibbles) in row-interleaved order: `codes[k]` holds, in
//! 32-bit lane `r`, row `r`'s codes for the block's weights `4k .. 4k + 4`. For each token,
//! `vpmaddubsw` of `codes[k]` with the token's four activations at `4k` broadcast to every lane
//! yields each row's two pair sums as 16-bit lanes; those are added over the activation block
//! in 16 bits (exact: see [`tokens`]) and widened once per block, so the decoded block is
//! reused by every token from L1 and a block costs two vector operations per four weights,
//! eight rows and one token, with no horizontal reduction.
//!
//! Q8_0 runs here only with AVX-VNNI (plain AVX2 has its own tile in `gemm_q8.rs`). Its
//! weights are signed bytes: they are offset by 128 into `0..=255` and split into two nibble
//! planes, `w + 128 = 16h + l`, each multiplied like Q4 codes; `16 · Σ h·a + Σ l·a − 128 · Σ a`
//! is the exact sum for every int8 activation (−128 included).
//!
//! Integer block sums are exact and each (row, token) `f32` accumulator adds the blocks in the
//! scalar reference's order with the same products (lane-wise), so the results are
//! bit-identical to [`crate::scalar`]'s `gemm_*` (and to the matrix-vector kernels).

use core::arch::x86_64::*;

use super::ternary::{tq1_digit256, triple256};
use super::{cvtph_ps256, load128, load256};

use crate::act::ActBatch;
use crate::formats::{
    Q4_0_BLOCK_BYTES, Q4_1_BLOCK_BYTES, Q8_0_BLOCK_BYTES, TQ1_0_BLOCK_BYTES, TQ2_0_BLOCK_BYTES,
};
use crate::q5::{Q5_0_BLOCK_BYTES, Q5_1_BLOCK_BYTES};

/// Rows per tile (one per 32-bit lane of a 256-bit register).
pub(super) const ROWS: usize = 8;
/// Tokens whose `f32` accumulators a pass keeps on the stack.
pub(super) const TOKENS: usize = 64;

// Weight formats, as a const generic parameter of the shared driver.
pub(super) const TQ2: u8 = 0;
pub(super) const I2S: u8 = 1;
pub(super) const TQ1: u8 = 2;
pub(super) const Q8: u8 = 3;
pub(super) const Q40: u8 = 4;
pub(super) const Q41: u8 = 5;
pub(super) const Q50: u8 = 6;
pub(super) const Q51: u8 = 7;

/// Bytes of one weight block of format `F` in a row.
const fn block_bytes(f: u8) -> usize {
    match f {
        TQ2 => TQ2_0_BLOCK_BYTES,
        I2S => 32,
        TQ1 => TQ1_0_BLOCK_BYTES,
        Q8 => Q8_0_BLOCK_BYTES,
        Q40 => Q4_0_BLOCK_BYTES,
        Q41 => Q4_1_BLOCK_BYTES,
        Q50 => Q5_0_BLOCK_BYTES,
        _ => Q5_1_BLOCK_BYTES,
    }
}

/// Activation blocks per weight block.
const fn act_blocks(f: u8) -> usize {
    match f {
        TQ2 | TQ1 => 2,
        _ => 1,
    }
}

/// Code vectors (groups of four weights) per activation block: 128 or 32 weights.
const fn groups(f: u8) -> usize {
    match f {
        TQ2 | I2S | TQ1 => 32,
        _ => 8,
    }
}

/// Pointers to rows `r .. r + 8` of `w`, repeating the last row past `rows`.
#[inline(always)]
pub(super) fn row_ptrs8(w: &[u8], row_bytes: usize, rows: usize, r: usize) -> [*const u8; ROWS] {
    let base = w.as_ptr();
    let last = rows - 1;
    // `wrapping_add` keeps this safe; the offsets stay inside `w` (row ≤ last).
    core::array::from_fn(|i| base.wrapping_add(core::cmp::min(r + i, last) * row_bytes))
}

/// Loads 32 bytes at `p[i] + off` of the eight rows and transposes them by 32-bit words:
/// lane `i` of the result's vector `j` holds bytes `4j .. 4j + 4` of row `i`.
///
/// # Safety
/// Each `p[i] + off .. + 32` is readable; the CPU supports AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn load_t8x8(p: &[*const u8; ROWS], off: usize) -> [__m256i; 8] {
    // SAFETY: the caller guarantees 32 readable bytes at every `p[i] + off`.
    unsafe { transpose8x32(core::array::from_fn(|i| load256(p[i].add(off)))) }
}

/// The 8 × 8 transpose of 32-bit lanes: lane `i` of the result's vector `j` is lane `j` of
/// `a[i]`.
///
/// # Safety
/// The CPU supports AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn transpose8x32(a: [__m256i; 8]) -> [__m256i; 8] {
    // u[4g + c]: in 128-bit lane h, word c + 4h of rows 4g .. 4g + 4.
    let mut u = [_mm256_setzero_si256(); 8];
    for g in 0..2 {
        let a = &a[4 * g..4 * g + 4];
        let t0 = _mm256_unpacklo_epi32(a[0], a[1]);
        let t1 = _mm256_unpackhi_epi32(a[0], a[1]);
        let t2 = _mm256_unpacklo_epi32(a[2], a[3]);
        let t3 = _mm256_unpackhi_epi32(a[2], a[3]);
        u[4 * g] = _mm256_unpacklo_epi64(t0, t2);
        u[4 * g + 1] = _mm256_unpackhi_epi64(t0, t2);
        u[4 * g + 2] = _mm256_unpacklo_epi64(t1, t3);
        u[4 * g + 3] = _mm256_unpackhi_epi64(t1, t3);
    }
    let mut y = [_mm256_setzero_si256(); 8];
    for c in 0..4 {
        y[c] = _mm256_permute2x128_si256::<0x20>(u[c], u[4 + c]);
        y[c + 4] = _mm256_permute2x128_si256::<0x31>(u[c], u[4 + c]);
    }
    y
}

/// Like [`load_t8x8`] for 16 bytes per row: four vectors.
///
/// # Safety
/// Each `p[i] + off .. + 16` is readable; the CPU supports AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_t8x4(p: &[*const u8; ROWS], off: usize) -> [__m256i; 4] {
    // a[i] = [row i | row i + 4].
    let mut a = [_mm256_setzero_si256(); 4];
    for (i, a) in a.iter_mut().enumerate() {
        // SAFETY: the caller guarantees 16 readable bytes at every `p[i] + off`.
        *a = unsafe {
            _mm256_set_m128i(
                _mm_loadu_si128(p[i + 4].add(off) as *const __m128i),
                _mm_loadu_si128(p[i].add(off) as *const __m128i),
            )
        };
    }
    let t0 = _mm256_unpacklo_epi32(a[0], a[1]);
    let t1 = _mm256_unpackhi_epi32(a[0], a[1]);
    let t2 = _mm256_unpacklo_epi32(a[2], a[3]);
    let t3 = _mm256_unpackhi_epi32(a[2], a[3]);
    [
        _mm256_unpacklo_epi64(t0, t2),
        _mm256_unpackhi_epi64(t0, t2),
        _mm256_unpacklo_epi64(t1, t3),
        _mm256_unpackhi_epi64(t1, t3),
    ]
}

/// The little-endian f16 at `p[i] + off` of each row as eight `f32` lanes.
///
/// # Safety
/// Each `p[i] + off .. + 2` is readable; the CPU supports AVX2 and F16C.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn f16x8(p: &[*const u8; ROWS], off: usize) -> __m256 {
    // SAFETY: the caller guarantees two readable bytes at every `p[i] + off`.
    let h: [u16; ROWS] =
        core::array::from_fn(|i| unsafe { (p[i].add(off) as *const u16).read_unaligned() });
    // SAFETY: `h` is 16 bytes; the caller's contract includes F16C.
    unsafe { cvtph_ps256(load128(h.as_ptr() as *const u8)) }
}

/// Decodes the weight block at byte `off` of the eight rows into `codes` (see the module
/// docs): `act_blocks(F) · groups(F)` vectors, activation block `s` at `codes[s · groups(F)..]`
/// (Q8_0: the low nibble plane, and the high one after it at `codes[8..16]`).
///
/// # Safety
/// Every row holds a whole block at `off`; the CPU supports AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn decode<const F: u8>(p: &[*const u8; ROWS], off: usize, codes: &mut [__m256i; 64]) {
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm256_set1_epi8(0xf);
    let x80 = _mm256_set1_epi8(-128);
    // SAFETY: every load reads inside the block at `off` (caller's contract).
    unsafe {
        match F {
            TQ2 => {
                // Half h: byte m holds weights 32l + m (l = 0..4) in bits 2l.
                for h in 0..2 {
                    let y = load_t8x8(p, off + 32 * h);
                    for (j, &y) in y.iter().enumerate() {
                        codes[32 * h + j] = _mm256_and_si256(y, m3);
                        codes[32 * h + 8 + j] = _mm256_and_si256(_mm256_srli_epi16::<2>(y), m3);
                        codes[32 * h + 16 + j] = _mm256_and_si256(_mm256_srli_epi16::<4>(y), m3);
                        codes[32 * h + 24 + j] = _mm256_and_si256(_mm256_srli_epi16::<6>(y), m3);
                    }
                }
            }
            I2S => {
                // Byte m holds weights 32l + m in bits 6 − 2l.
                let y = load_t8x8(p, off);
                for (j, &y) in y.iter().enumerate() {
                    codes[j] = _mm256_and_si256(_mm256_srli_epi16::<6>(y), m3);
                    codes[8 + j] = _mm256_and_si256(_mm256_srli_epi16::<4>(y), m3);
                    codes[16 + j] = _mm256_and_si256(_mm256_srli_epi16::<2>(y), m3);
                    codes[24 + j] = _mm256_and_si256(y, m3);
                }
            }
            TQ1 => {
                // The digits are read from `q ^ 0x80` (see `tq1_digit256`).
                // qs[0..32]: digit n of byte m is weight 32n + m.
                let y = load_t8x8(p, off);
                for (j, &y) in y.iter().enumerate() {
                    let mut x = _mm256_xor_si256(y, x80);
                    for n in 0..5 {
                        codes[8 * n + j] = tq1_digit256(x);
                        x = triple256(x);
                    }
                }
                // qs[32..48]: digit n of byte m is weight 160 + 16n + m.
                let z = load_t8x4(p, off + 32);
                for (j, &z) in z.iter().enumerate() {
                    let mut x = _mm256_xor_si256(z, x80);
                    for n in 0..5 {
                        codes[40 + 4 * n + j] = tq1_digit256(x);
                        x = triple256(x);
                    }
                }
                // qh[0..4]: digit n of byte m is weight 240 + 4n + m.
                let h: [u32; ROWS] =
                    core::array::from_fn(|i| (p[i].add(off + 48) as *const u32).read_unaligned());
                let mut x = _mm256_xor_si256(load256(h.as_ptr() as *const u8), x80);
                for n in 0..4 {
                    codes[60 + n] = tq1_digit256(x);
                    x = triple256(x);
                }
            }
            Q8 => {
                let y = load_t8x8(p, off + 2);
                for (j, &y) in y.iter().enumerate() {
                    let b = _mm256_xor_si256(y, x80);
                    codes[j] = _mm256_and_si256(b, m4);
                    codes[8 + j] = _mm256_and_si256(_mm256_srli_epi16::<4>(b), m4);
                }
            }
            Q50 | Q51 => {
                // Nibbles as Q4_0/Q4_1, and bit m of `qh` is weight m's fifth bit.
                let qh = if F == Q51 { 4 } else { 2 };
                let z = load_t8x4(p, off + qh + 4);
                let h: [u32; ROWS] =
                    core::array::from_fn(|i| (p[i].add(off + qh) as *const u32).read_unaligned());
                let h = load256(h.as_ptr() as *const u8);
                for (j, &z) in z.iter().enumerate() {
                    codes[j] = _mm256_or_si256(_mm256_and_si256(z, m4), fifth_bits(h, j));
                    codes[4 + j] = _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(z), m4),
                        fifth_bits(h, 4 + j),
                    );
                }
            }
            _ => {
                // Byte m: weight m in the low nibble, weight 16 + m in the high one.
                let qo = if F == Q41 { 4 } else { 2 };
                let z = load_t8x4(p, off + qo);
                for (j, &z) in z.iter().enumerate() {
                    codes[j] = _mm256_and_si256(z, m4);
                    codes[4 + j] = _mm256_and_si256(_mm256_srli_epi16::<4>(z), m4);
                }
            }
        }
    }
}

/// The fifth bits of group `g` (weights `4g .. 4g + 4`) of Q5 blocks whose `qh` words are the
/// lanes of `h`: byte `i` of lane `r` is `16` if bit `4g + i` of row `r`'s `qh` is set, else 0.
#[inline(always)]
unsafe fn fifth_bits(h: __m256i, g: usize) -> __m256i {
    let b = (g / 2) as i32;
    let rep = |l: i32| (4 * l + b) * 0x0101_0101;
    let bits = (0x0804_0201u32 << (4 * (g % 2))) as i32;
    // SAFETY: the caller runs with AVX2 enabled.
    unsafe {
        let ctrl = _mm256_setr_epi32(
            rep(0),
            rep(1),
            rep(2),
            rep(3),
            rep(0),
            rep(1),
            rep(2),
            rep(3),
        );
        let mask = _mm256_set1_epi32(bits);
        let x = _mm256_and_si256(_mm256_shuffle_epi8(h, ctrl), mask);
        _mm256_and_si256(_mm256_cmpeq_epi8(x, mask), _mm256_set1_epi8(16))
    }
}

/// The block's per-row scale (and Q4_1 minimum) for the eight rows.
///
/// # Safety
/// Every row holds a whole block at `off`; the CPU supports AVX2 and F16C.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scales<const F: u8>(p: &[*const u8; ROWS], off: usize) -> (__m256, __m256) {
    // SAFETY: the scales lie inside the block at `off` (caller's contract).
    unsafe {
        match F {
            TQ2 => (f16x8(p, off + 64), _mm256_setzero_ps()),
            // I2_S has no block scale: (1 · d) · isum = d · isum exactly.
            I2S => (_mm256_set1_ps(1.0), _mm256_setzero_ps()),
            TQ1 => (f16x8(p, off + 52), _mm256_setzero_ps()),
            Q41 | Q51 => (f16x8(p, off), f16x8(p, off + 2)),
            _ => (f16x8(p, off), _mm256_setzero_ps()),
        }
    }
}

/// Adds activation block `ab` of tokens `t0 .. t0 + T` times the decoded codes of `R`
/// eight-row halves (`c[h]`, with their scales `sc[h]`) to the tokens' accumulators
/// `acc[0..T][h]`, with the scalar reference's per-block epilogue. Each broadcast activation
/// feeds all `R` halves.
///
/// The 16-bit sums are exact: a pair sum is at most `2 · 2 · 128 = 512` in magnitude for
/// ternary codes (32 groups: 16384) and `2 · 15 · 128 = 3840` for nibbles (8 groups: 30720);
/// Q8_0's two nibble planes sum like nibbles (8 groups each), and Q5's 5-bit codes
/// (`2 · 31 · 128 = 7936`) in two halves of four groups (31744 each).
///
/// # Safety
/// Each `c[h]` points to `groups(F)` vectors (Q8_0: and the high plane 8 after); tokens
/// `t0 .. t0 + T` and block `ab` are inside `a` (checked by the caller); the CPU supports AVX2.
#[inline(always)]
unsafe fn tokens<const F: u8, const T: usize, const V: bool, const R: usize>(
    c: [*const __m256i; R],
    a: &ActBatch<'_>,
    t0: usize,
    ab: usize,
    sc: &[(__m256, __m256); R],
    acc: &mut [[__m256; R]],
) {
    let k_n = groups(F);
    let na = a.cols / a.block;
    let q0 = a.qs.as_ptr().wrapping_add(t0 * a.cols + ab * 4 * k_n) as *const u8;
    // SAFETY: the caller runs with AVX2 enabled.
    let (zero, ones) = unsafe { (_mm256_setzero_si256(), _mm256_set1_epi16(1)) };
    let mut s = [[zero; T]; R];
    let mut hi = [[zero; T]; R];
    // SAFETY: `c[h][0..k_n]` are the decoded codes and every activation read is inside token
    // `t0 + t`'s block `ab` (caller's contract).
    unsafe {
        // One group of four weights into the sums `s`, every token and half.
        let group = |k: usize, s: &mut [[__m256i; T]; R]| {
            let ck: [__m256i; R] = core::array::from_fn(|h| c[h].add(k).read());
            for t in 0..T {
                let q = (q0.add(t * a.cols + 4 * k) as *const i32).read_unaligned();
                let q = _mm256_set1_epi32(q);
                for (s, &ck) in s.iter_mut().zip(&ck) {
                    s[t] = dot4::<V>(s[t], ck, q);
                }
            }
        };
        if F == Q8 {
            for k in 0..k_n {
                let ck: [__m256i; R] = core::array::from_fn(|h| c[h].add(k).read());
                let ch: [__m256i; R] = core::array::from_fn(|h| c[h].add(8 + k).read());
                for t in 0..T {
                    let q = (q0.add(t * a.cols + 4 * k) as *const i32).read_unaligned();
                    let q = _mm256_set1_epi32(q);
                    for h in 0..R {
                        s[h][t] = dot4::<V>(s[h][t], ck[h], q);
                        hi[h][t] = dot4::<V>(hi[h][t], ch[h], q);
                    }
                }
            }
        } else if F == Q50 || F == Q51 {
            // Each half of Q5's groups has sums of its own: four groups of 5-bit pair sums
            // fill 16 bits. (Two loops, so that both stay in registers.)
            for k in 0..4 {
                group(k, &mut s);
            }
            for k in 4..8 {
                group(k, &mut hi);
            }
        } else {
            for k in 0..k_n {
                group(k, &mut s);
            }
        }
        // 16-bit pair sums widen to each lane's 32-bit sum (VNNI sums are 32-bit already).
        let widen = |v: __m256i| if V { v } else { _mm256_madd_epi16(v, ones) };
        for (t, acc) in acc.iter_mut().enumerate().take(T) {
            let i = (t0 + t) * na + ab;
            let d = _mm256_set1_ps(*a.d.get_unchecked(i));
            let sum = *a.sums.get_unchecked(i);
            for (h, acc) in acc.iter_mut().enumerate() {
                let (dw, m) = sc[h];
                let s0 = widen(s[h][t]);
                let s0 = match F {
                    Q8 => {
                        let hs = _mm256_slli_epi32::<4>(widen(hi[h][t]));
                        _mm256_sub_epi32(_mm256_add_epi32(hs, s0), _mm256_set1_epi32(128 * sum))
                    }
                    Q50 | Q51 => _mm256_add_epi32(s0, widen(hi[h][t])),
                    _ => s0,
                };
                let isum = match F {
                    TQ2 | I2S | TQ1 => _mm256_sub_epi32(s0, _mm256_set1_epi32(sum)),
                    Q40 => _mm256_sub_epi32(s0, _mm256_set1_epi32(8 * sum)),
                    Q50 => _mm256_sub_epi32(s0, _mm256_set1_epi32(16 * sum)),
                    _ => s0,
                };
                let mut v = _mm256_mul_ps(_mm256_mul_ps(dw, d), _mm256_cvtepi32_ps(isum));
                if F == Q41 || F == Q51 {
                    v = _mm256_add_ps(
                        v,
                        _mm256_mul_ps(_mm256_mul_ps(m, d), _mm256_set1_ps(sum as f32)),
                    );
                }
                *acc = _mm256_add_ps(*acc, v);
            }
        }
    }
}

/// Adds the products of the unsigned codes `c` and the signed activations `q`, four bytes
/// per 32-bit lane: as 16-bit pair sums (`vpmaddubsw`, exact for the bounds above) or, with
/// AVX-VNNI (`V`), straight into 32-bit lane sums (`vpdpbusd`).
#[inline(always)]
unsafe fn dot4<const V: bool>(acc: __m256i, c: __m256i, q: __m256i) -> __m256i {
    // Built only by compilers with stable AVX-VNNI (Rust 1.89+, `trillim_avx512`).
    #[cfg(trillim_avx512)]
    #[allow(clippy::incompatible_msrv)]
    if V {
        // SAFETY: `V` is only set by `gemm_vnni`, whose caller promised AVX-VNNI.
        return unsafe { _mm256_dpbusd_avx_epi32(acc, c, q) };
    }
    // SAFETY: every caller runs with AVX2 enabled.
    unsafe { _mm256_add_epi16(acc, _mm256_maddubs_epi16(c, q)) }
}

/// The shared multi-token driver for format `F`: `out` is `[token][row]`.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm<const F: u8>(
    w: &[u8],
    row_bytes: usize,
    a: &ActBatch<'_>,
    out: &mut [f32],
) {
    // SAFETY: the caller's contract.
    unsafe { driver::<F, false>(w, row_bytes, a, out) }
}

/// [`gemm`] with the block sums by `vpdpbusd` on ymm (AVX-VNNI), one instruction per four
/// weights, eight rows and a token instead of two; the same integer sums, so the same results.
///
/// # Safety
/// The CPU supports AVX2, FMA, F16C and AVX-VNNI.
#[cfg(trillim_avx512)]
#[target_feature(enable = "avx2,fma,avxvnni")]
pub(super) unsafe fn gemm_vnni<const F: u8>(
    w: &[u8],
    row_bytes: usize,
    a: &ActBatch<'_>,
    out: &mut [f32],
) {
    // SAFETY: the caller's contract.
    unsafe { driver::<F, true>(w, row_bytes, a, out) }
}

/// Whether format `F` keeps two 16-bit sums per token (Q8_0's nibble planes, Q5's halves).
const fn two_sums(f: u8) -> bool {
    matches!(f, Q8 | Q50 | Q51)
}

/// The body of [`gemm`] and [`gemm_vnni`], inlined into each with its features: sixteen rows
/// per pass (two eight-row halves sharing each activation broadcast) for formats with one sum
/// per token, eight for the others, whose two sums per token fill the registers.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C, and AVX-VNNI if `V`.
#[inline(always)]
unsafe fn driver<const F: u8, const V: bool>(
    w: &[u8],
    row_bytes: usize,
    a: &ActBatch<'_>,
    out: &mut [f32],
) {
    // SAFETY: the caller's contract.
    unsafe {
        if two_sums(F) {
            pass::<F, V, 1>(w, row_bytes, a, out)
        } else {
            pass::<F, V, 2>(w, row_bytes, a, out)
        }
    }
}

/// [`driver`] with `R` eight-row halves per pass.
///
/// # Safety
/// As [`driver`].
#[inline(always)]
unsafe fn pass<const F: u8, const V: bool, const R: usize>(
    w: &[u8],
    row_bytes: usize,
    a: &ActBatch<'_>,
    out: &mut [f32],
) {
    let (bb, subs, k_n) = (block_bytes(F), act_blocks(F), groups(F));
    // (No `let … else`: the crate builds with Rust 1.63.)
    let (rows, nb) = match super::tile_shape(w, row_bytes, a, out, (bb, subs, 4 * k_n)) {
        Some(s) => s,
        None => return,
    };
    let n = a.n;
    // SAFETY: the caller runs with AVX2 enabled.
    let (zero, zero_ps) = unsafe { (_mm256_setzero_si256(), _mm256_setzero_ps()) };
    let mut codes = [[zero; 64]; R];
    let mut acc = [[zero_ps; R]; TOKENS];
    let mut r = 0;
    while r < rows {
        // Halves past the last row repeat it; their results are dropped.
        let p: [[*const u8; ROWS]; R] = core::array::from_fn(|h| {
            row_ptrs8(w, row_bytes, rows, core::cmp::min(r + ROWS * h, rows - 1))
        });
        let mut t0 = 0;
        while t0 < n {
            let nt = core::cmp::min(TOKENS, n - t0);
            acc[..nt].fill([zero_ps; R]);
            for b in 0..nb {
                let off = b * bb;
                // SAFETY: every row of `w` holds `nb` blocks (checked above); prefetches of the
                // next block never fault.
                unsafe {
                    if b + 1 < nb {
                        prefetch_next(p.iter().flatten(), off + bb, bb);
                    }
                    let mut sc = [(zero_ps, zero_ps); R];
                    for h in 0..R {
                        decode::<F>(&p[h], off, &mut codes[h]);
                        sc[h] = scales::<F>(&p[h], off);
                    }
                    for s in 0..subs {
                        let ab = b * subs + s;
                        let c: [*const __m256i; R] =
                            core::array::from_fn(|h| codes[h].as_ptr().add(s * k_n));
                        let mut t = 0;
                        // Eight tokens of one half, or six of two, fill the registers.
                        while R == 1 && !two_sums(F) && t + 8 <= nt {
                            tokens::<F, 8, V, R>(c, a, t0 + t, ab, &sc, &mut acc[t..]);
                            t += 8;
                        }
                        while R == 2 && t + 6 <= nt {
                            tokens::<F, 6, V, R>(c, a, t0 + t, ab, &sc, &mut acc[t..]);
                            t += 6;
                        }
                        while t + 4 <= nt {
                            tokens::<F, 4, V, R>(c, a, t0 + t, ab, &sc, &mut acc[t..]);
                            t += 4;
                        }
                        if t + 2 <= nt {
                            tokens::<F, 2, V, R>(c, a, t0 + t, ab, &sc, &mut acc[t..]);
                            t += 2;
                        }
                        if t < nt {
                            tokens::<F, 1, V, R>(c, a, t0 + t, ab, &sc, &mut acc[t..]);
                        }
                    }
                }
            }
            store_tile(out, rows, (r, t0), &acc[..nt]);
            t0 += nt;
        }
        r += ROWS * R;
    }
}

/// Prefetches the block of `bb` bytes at `off` of each row in `p` (its first and last cache
/// lines: blocks are at most 66 bytes).
#[inline(always)]
pub(super) fn prefetch_next<'a>(p: impl Iterator<Item = &'a *const u8>, off: usize, bb: usize) {
    for &pi in p {
        // SAFETY: `prefetcht0` has no architectural effect and never faults; `wrapping_add`
        // keeps the pointer arithmetic defined.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(pi.wrapping_add(off) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(pi.wrapping_add(off + bb - 1) as *const i8);
        }
    }
}

/// Stores a pass's accumulators, `acc[t][h]` for rows `r + 8h ..` of token `t0 + t`, into
/// `out` (`[token][row]`), dropping the lanes of rows past `rows`.
#[inline(always)]
pub(super) fn store_tile<const R: usize>(
    out: &mut [f32],
    rows: usize,
    (r, t0): (usize, usize),
    acc: &[[__m256; R]],
) {
    for (t, v) in acc.iter().enumerate() {
        for (h, v) in v.iter().enumerate() {
            let r0 = r + ROWS * h;
            if r0 >= rows {
                break;
            }
            let nr = core::cmp::min(ROWS, rows - r0);
            // SAFETY: `__m256` and `[f32; 8]` have the same size and any bits are valid.
            let v: [f32; 8] = unsafe { core::mem::transmute::<__m256, [f32; 8]>(*v) };
            let o = (t0 + t) * rows + r0;
            out[o..o + nr].copy_from_slice(&v[..nr]);
        }
    }
}
