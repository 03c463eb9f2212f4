//! AVX-512 VNNI kernels of every int8 format (the intrinsics are stable since Rust 1.89; the
//! build script compiles this module only with such a compiler).

use super::*;

/// Sums four `i32x16` vectors whose lower and upper 256 bits belong to two different blocks:
/// returns `([Σlo(v0), Σlo(v1), Σlo(v2), Σlo(v3)], [Σhi(v0), …])`, exactly.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn hsum4_pairs(v: [__m512i; 4]) -> (__m128i, __m128i) {
    let t01 = _mm512_add_epi32(
        _mm512_unpacklo_epi32(v[0], v[1]),
        _mm512_unpackhi_epi32(v[0], v[1]),
    );
    let t23 = _mm512_add_epi32(
        _mm512_unpacklo_epi32(v[2], v[3]),
        _mm512_unpackhi_epi32(v[2], v[3]),
    );
    // Each 128-bit lane k now holds [v0, v1, v2, v3] summed over lane k.
    let u = _mm512_add_epi32(
        _mm512_unpacklo_epi64(t01, t23),
        _mm512_unpackhi_epi64(t01, t23),
    );
    let s = _mm512_add_epi32(u, _mm512_shuffle_i32x4::<0b10_11_00_01>(u, u));
    (_mm512_castsi512_si128(s), _mm512_extracti32x4_epi32::<2>(s))
}

#[inline(always)]
pub(super) unsafe fn load512(p: *const u8) -> __m512i {
    // SAFETY: the caller guarantees 64 readable bytes at `p`.
    unsafe { _mm512_loadu_si512(p as *const _) }
}

/// `[q[32l..32l + 32] | q[128 + 32l..128 + 32l + 32]]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
unsafe fn act_pair(q: *const u8, l: usize) -> __m512i {
    // SAFETY: the caller guarantees 256 activations at `q` and l < 4.
    unsafe {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(load256(q.add(32 * l))),
            load256(q.add(128 + 32 * l)),
        )
    }
}

/// Two consecutive 128-weight blocks of 2-bit codes (64 bytes per row at `p[i] + off`, half `h`
/// at bytes `32h..32h+32` laid out as in [`tern2_block_avx2`]) against 256 activations at `q`.
/// Returns the four rows' `Σ code · q` of each block.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
pub(super) unsafe fn tern2_pair_vnni<const REV: bool>(
    p: [*const u8; 4],
    off: usize,
    q: *const i8,
) -> (__m128i, __m128i) {
    let m3 = _mm512_set1_epi8(3);
    // SAFETY: 256 activations at `q`, 64 code bytes at each `p[i] + off` (caller's contract).
    unsafe {
        let q = q as *const u8;
        let a = [
            act_pair(q, 0),
            act_pair(q, 1),
            act_pair(q, 2),
            act_pair(q, 3),
        ];
        let mut acc = [_mm512_setzero_si512(); 4];
        for (r, acc) in acc.iter_mut().enumerate() {
            let w = load512(p[r].add(off));
            let c0 = _mm512_and_si512(w, m3);
            let c1 = _mm512_and_si512(_mm512_srli_epi16::<2>(w), m3);
            let c2 = _mm512_and_si512(_mm512_srli_epi16::<4>(w), m3);
            let c3 = _mm512_and_si512(_mm512_srli_epi16::<6>(w), m3);
            let (c0, c1, c2, c3) = if REV {
                (c3, c2, c1, c0)
            } else {
                (c0, c1, c2, c3)
            };
            let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c0, a[0]);
            let s = _mm512_dpbusd_epi32(s, c1, a[1]);
            let s = _mm512_dpbusd_epi32(s, c2, a[2]);
            *acc = _mm512_dpbusd_epi32(s, c3, a[3]);
        }
        hsum4_pairs(acc)
    }
}

/// AVX-512 VNNI TQ2_0.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(super) unsafe fn tq2_0_vnni(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let rows = out.len();
    if rows == 0 {
        return;
    }
    let nb = row_bytes / TQ2_0_BLOCK_BYTES;
    check_q8(w, row_bytes, rows, nb, 2, a, 128);
    let mut r = 0;
    while r < rows {
        // SAFETY: r < rows; all reads stay within the checked slices (the 64-byte load covers
        // exactly a block's codes).
        unsafe {
            let p = row_ptrs(w, row_bytes, rows, r);
            let mut acc = _mm_setzero_ps();
            for b in 0..nb {
                let off = b * TQ2_0_BLOCK_BYTES;
                prefetch_ahead(w, row_bytes, r, b, TQ2_0_BLOCK_BYTES);
                let (s0, s1) = tern2_pair_vnni::<false>(p, off, a.qs.as_ptr().add(b * 256));
                let dw = f16x4(p, off + 64);
                let s0 = _mm_sub_epi32(s0, _mm_set1_epi32(*a.sums.get_unchecked(2 * b)));
                acc = fma_block(acc, dw, *a.d.get_unchecked(2 * b), s0);
                let s1 = _mm_sub_epi32(s1, _mm_set1_epi32(*a.sums.get_unchecked(2 * b + 1)));
                acc = fma_block(acc, dw, *a.d.get_unchecked(2 * b + 1), s1);
            }
            store_rows(out, r, core::mem::transmute::<__m128, [f32; 4]>(acc));
        }
        r += 4;
    }
}

/// AVX-512 VNNI I2_S.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(super) unsafe fn i2s_vnni(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let rows = out.len();
    if rows == 0 {
        return;
    }
    let ng = row_bytes / 32;
    check_q8(w, row_bytes, rows, ng, 1, a, 128);
    let mut r = 0;
    while r < rows {
        // SAFETY: r < rows; all reads stay within the checked slices.
        unsafe {
            let p = row_ptrs(w, row_bytes, rows, r);
            let mut acc = _mm_setzero_ps();
            let step = |acc: __m128, g: usize, s: __m128i| -> __m128 {
                // SAFETY: g < ng, inside the checked activation slices.
                unsafe {
                    let s = _mm_sub_epi32(s, _mm_set1_epi32(*a.sums.get_unchecked(g)));
                    _mm_add_ps(
                        acc,
                        _mm_mul_ps(_mm_set1_ps(*a.d.get_unchecked(g)), _mm_cvtepi32_ps(s)),
                    )
                }
            };
            let mut g = 0;
            while g + 2 <= ng {
                prefetch_ahead(w, row_bytes, r, g / 2, 64);
                let (s0, s1) = tern2_pair_vnni::<true>(p, 32 * g, a.qs.as_ptr().add(g * 128));
                acc = step(acc, g, s0);
                acc = step(acc, g + 1, s1);
                g += 2;
            }
            if g < ng {
                let s = tern2_block_avx2::<true>(p, 32 * g, a.qs.as_ptr().add(g * 128));
                acc = step(acc, g, s);
            }
            store_rows(out, r, core::mem::transmute::<__m128, [f32; 4]>(acc));
        }
        r += 4;
    }
}

/// TQ1_0 codes (0, 1, 2) of 64 bytes already multiplied by `3^n` (mod 256):
/// `[q ≥ 86] + [q ≥ 171]`, with unsigned compares into mask registers.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn tq1_digit512(q: __m512i) -> __m512i {
    let k1 = _mm512_cmpge_epu8_mask(q, _mm512_set1_epi8(86));
    let k2 = _mm512_cmpge_epu8_mask(q, _mm512_set1_epi8(171u8 as i8));
    let c = _mm512_maskz_mov_epi8(k1, _mm512_set1_epi8(1));
    _mm512_mask_mov_epi8(c, k2, _mm512_set1_epi8(2))
}

/// [`tq1_digit512`] for 16 bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn tq1_digit128(q: __m128i) -> __m128i {
    let k1 = _mm_cmpge_epu8_mask(q, _mm_set1_epi8(86));
    let k2 = _mm_cmpge_epu8_mask(q, _mm_set1_epi8(171u8 as i8));
    let c = _mm_maskz_mov_epi8(k1, _mm_set1_epi8(1));
    _mm_mask_mov_epi8(c, k2, _mm_set1_epi8(2))
}

/// Bytewise `3q` (mod 256).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn triple512(q: __m512i) -> __m512i {
    _mm512_add_epi8(q, _mm512_add_epi8(q, q))
}

/// Sums each 128-bit lane of `v` (lane `i` belongs to row `i`): `[Σ lane 0, …, Σ lane 3]`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn lane_sums(v: __m512i) -> __m128i {
    let v = _mm512_add_epi32(v, _mm512_shuffle_epi32::<0b01_00_11_10>(v));
    let v = _mm512_add_epi32(v, _mm512_shuffle_epi32::<0b10_11_00_01>(v));
    let idx = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_castsi512_si128(_mm512_permutexvar_epi32(idx, v))
}

/// Folds two row-pair vectors (row `2k` in the lower 256 bits of `p[k]`, row `2k + 1` in
/// the upper) into one vector whose 128-bit lane `i` sums row `i`'s two lanes.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn pairs_to_lanes(p01: __m512i, p23: __m512i) -> __m512i {
    _mm512_add_epi32(
        _mm512_shuffle_i64x2::<0b10_00_10_00>(p01, p23),
        _mm512_shuffle_i64x2::<0b11_01_11_01>(p01, p23),
    )
}

/// AVX-512 VNNI TQ1_0, four rows per pass. The block's three segments are decoded with
/// 512-bit digit extraction: `qs[0..32]` of two rows per register (five digits: weights
/// `32n + m`), `qs[32..48]` of all four rows in one register (weights `160 + 16n + m`) and
/// `qh` of the four rows in one 128-bit register (weights `240 + 4n + m`); each digit
/// vector meets its activations, broadcast to every row, in one `vpdpbusd`. The two
/// 128-weight halves keep separate integer sums, as in the scalar reference.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(super) unsafe fn tq1_0_vnni(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let rows = out.len();
    if rows == 0 {
        return;
    }
    let nb = row_bytes / TQ1_0_BLOCK_BYTES;
    check_q8(w, row_bytes, rows, nb, 2, a, 128);
    let zero = _mm512_setzero_si512();
    let mut r = 0;
    while r < rows {
        // SAFETY: r < rows; all reads stay within the checked slices (a block is 54 bytes:
        // qs at 0..48, qh at 48..52, the scale at 52..54).
        unsafe {
            let p = row_ptrs(w, row_bytes, rows, r);
            let mut acc = _mm_setzero_ps();
            for b in 0..nb {
                let off = b * TQ1_0_BLOCK_BYTES;
                prefetch_ahead(w, row_bytes, r, b, TQ1_0_BLOCK_BYTES);
                let q = a.qs.as_ptr().add(b * 256) as *const u8;
                // qs[0..32], two rows per register.
                let act: [__m512i; 5] =
                    core::array::from_fn(|n| _mm512_broadcast_i64x4(load256(q.add(32 * n))));
                let mut lo = [zero; 2];
                let mut hi = [zero; 2];
                for k in 0..2 {
                    let mut x = _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(load256(p[2 * k].add(off))),
                        load256(p[2 * k + 1].add(off)),
                    );
                    for an in &act[..4] {
                        lo[k] = _mm512_dpbusd_epi32(lo[k], tq1_digit512(x), *an);
                        x = triple512(x);
                    }
                    hi[k] = _mm512_dpbusd_epi32(zero, tq1_digit512(x), act[4]);
                }
                // qs[32..48] of the four rows, one row per 128-bit lane.
                let mut y = _mm512_castsi128_si512(load128(p[0].add(off + 32)));
                y = _mm512_inserti32x4::<1>(y, load128(p[1].add(off + 32)));
                y = _mm512_inserti32x4::<2>(y, load128(p[2].add(off + 32)));
                y = _mm512_inserti32x4::<3>(y, load128(p[3].add(off + 32)));
                let mut mid = zero;
                for n in 0..5 {
                    let bn = _mm512_broadcast_i32x4(load128(q.add(160 + 16 * n)));
                    mid = _mm512_dpbusd_epi32(mid, tq1_digit512(y), bn);
                    y = triple512(y);
                }
                // qh of the four rows, one row per 32-bit lane.
                let qh = |i: usize| (p[i].add(off + 48) as *const i32).read_unaligned();
                let mut h = _mm_setr_epi32(qh(0), qh(1), qh(2), qh(3));
                let mut tail = _mm_setzero_si128();
                for n in 0..4 {
                    let cn = _mm_set1_epi32((q.add(240 + 4 * n) as *const i32).read_unaligned());
                    tail = _mm_dpbusd_epi32(tail, tq1_digit128(h), cn);
                    h = triple128(h);
                }
                let s0 = lane_sums(pairs_to_lanes(lo[0], lo[1]));
                let s1 = _mm_add_epi32(
                    lane_sums(_mm512_add_epi32(pairs_to_lanes(hi[0], hi[1]), mid)),
                    tail,
                );
                let dw = f16x4(p, off + 52);
                for (h, s) in [s0, s1].into_iter().enumerate() {
                    let ab = 2 * b + h;
                    let s = _mm_sub_epi32(s, _mm_set1_epi32(*a.sums.get_unchecked(ab)));
                    acc = fma_block(acc, dw, *a.d.get_unchecked(ab), s);
                }
            }
            store_rows(out, r, core::mem::transmute::<__m128, [f32; 4]>(acc));
        }
        r += 4;
    }
}

/// Pointers to rows `r .. r + 8` of `w` (the last row repeated past `rows`), and their byte
/// offsets from the first as gather indices.
///
/// # Safety
/// `r < rows`, `w` holds `rows * row_bytes` bytes and `8 * row_bytes` fits in an `i32`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn rows8(w: &[u8], row_bytes: usize, rows: usize, r: usize) -> ([*const u8; 8], __m256i) {
    let row = |i: usize| core::cmp::min(r + i, rows - 1);
    // SAFETY: row(i) < rows, so every offset stays inside `w` (caller's contract).
    let p = core::array::from_fn(|i| unsafe { w.as_ptr().add(row(i) * row_bytes) });
    let o = |i: usize| ((row(i) - r) * row_bytes) as i32;
    let idx = _mm256_setr_epi32(o(0), o(1), o(2), o(3), o(4), o(5), o(6), o(7));
    (p, idx)
}

/// Sums each of eight `i32x8` vectors: `[Σv0, …, Σv7]` (exact, wrapping).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum8(v: [__m256i; 8]) -> __m256i {
    let ab = _mm256_hadd_epi32(v[0], v[1]);
    let cd = _mm256_hadd_epi32(v[2], v[3]);
    let ef = _mm256_hadd_epi32(v[4], v[5]);
    let gh = _mm256_hadd_epi32(v[6], v[7]);
    // Lane-wise: the lower 128 bits hold the sums of the rows' lower halves, the upper 128
    // bits those of their upper halves.
    let abcd = _mm256_hadd_epi32(ab, cd);
    let efgh = _mm256_hadd_epi32(ef, gh);
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(abcd, efgh),
        _mm256_permute2x128_si256::<0x31>(abcd, efgh),
    )
}

/// The little-endian `u32` at byte `off` of each of the eight rows at `base + idx[i]`.
///
/// # Safety
/// Four bytes are readable at every `base + idx[i] + off`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn gather8(base: *const u8, off: usize, idx: __m256i) -> __m256i {
    // SAFETY: the caller's contract; the gather reads exactly those bytes.
    unsafe { _mm256_i32gather_epi32::<1>(base.add(off) as *const i32, idx) }
}

/// The f16 in the low (`HI = false`) or high half of each `u32` lane, as `f32`.
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx2")]
unsafe fn f16_lanes<const HI: bool>(h: __m256i) -> __m256 {
    let h = if HI { _mm256_srli_epi32::<16>(h) } else { h };
    // SAFETY: the path contract includes F16C.
    unsafe { cvtph_ps256(_mm256_cvtepi32_epi16(h)) }
}

/// Bytes of an eight-row group up to which the next group is prefetched into L1: the
/// group being read and the one being fetched then fit in a 32 KiB L1. Larger groups (the
/// 2B4T output matrix has 21 KiB groups) go to L2; from memory that is 1.5× faster for
/// them, while 12 KiB groups (Q4 rows of 2560) run slightly faster from L1
/// (`decode_matvec_dram` in `cargo bench -p trillim-runtime`).
const L1_GROUP_BYTES: usize = 16 << 10;

/// Prefetches block `b` of the eight-row group after the one at row `r` (the eight rows
/// are contiguous, so this is a linear sweep `8 · bb` bytes per block).
#[inline(always)]
fn prefetch_ahead8(w: &[u8], row_bytes: usize, r: usize, b: usize, bb: usize) {
    let start = (r + 8) * row_bytes + b * 8 * bb;
    let p = w.as_ptr().wrapping_add(start);
    let to_l1 = 8 * row_bytes <= L1_GROUP_BYTES;
    let mut k = 0;
    while k < 8 * bb {
        let q = p.wrapping_add(k) as *const i8;
        // SAFETY: prefetches have no architectural effect and never fault.
        unsafe {
            if to_l1 {
                _mm_prefetch::<_MM_HINT_T0>(q)
            } else {
                _mm_prefetch::<_MM_HINT_T1>(q)
            }
        };
        k += 64;
    }
}

/// Stores the first `min(8, out.len() - r)` lanes of `v` at `out[r..]`.
#[inline]
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn store8(out: &mut [f32], r: usize, v: __m256) {
    let n = core::cmp::min(8, out.len() - r);
    let dst = &mut out[r..r + n];
    // SAFETY: `dst` holds `n` floats and the masked store writes only the first `n` lanes.
    unsafe { _mm256_mask_storeu_ps(dst.as_mut_ptr(), ((1u32 << n) - 1) as u8, v) };
}

/// AVX-512 VNNI Q8_0: `Σ (w + 128) · q − 128 · Σq`, exact for every int8 pair; eight rows
/// per pass share each activation load, and their scales arrive in one gather.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(super) unsafe fn q8_0_vnni(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    let rows = out.len();
    if rows == 0 {
        return;
    }
    let bb = Q8_0_BLOCK_BYTES;
    let nb = row_bytes / bb;
    check_q8(w, row_bytes, rows, nb, 1, a, 32);
    let x80 = _mm256_set1_epi8(-128);
    let mut r = 0;
    while r < rows {
        // SAFETY: r < rows; all reads stay within the checked slices (every block starts
        // with its two-byte scale and holds 34 bytes, so the 4-byte gather stays inside).
        unsafe {
            let (p, idx) = rows8(w, row_bytes, rows, r);
            let mut acc = _mm256_setzero_ps();
            for b in 0..nb {
                let off = b * bb;
                prefetch_ahead8(w, row_bytes, r, b, bb);
                let qa = load256(a.qs.as_ptr().add(b * 32) as *const u8);
                let s: [__m256i; 8] = core::array::from_fn(|rr| {
                    let x = _mm256_xor_si256(load256(p[rr].add(off + 2)), x80);
                    _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, qa)
                });
                let isum =
                    _mm256_sub_epi32(hsum8(s), _mm256_set1_epi32(128 * *a.sums.get_unchecked(b)));
                let dw = f16_lanes::<false>(gather8(p[0], off, idx));
                let d = _mm256_set1_ps(*a.d.get_unchecked(b));
                acc = _mm256_add_ps(
                    acc,
                    _mm256_mul_ps(_mm256_mul_ps(dw, d), _mm256_cvtepi32_ps(isum)),
                );
            }
            store8(out, r, acc);
        }
        r += 8;
    }
}

/// AVX-512 VNNI Q4_0 / Q4_1 (`Q41`), eight rows per pass as [`q8_0_vnni`]: nibbles are
/// already unsigned, Q4_0's −8 offset is corrected by the activation block sum and Q4_1's
/// minimum is applied with it.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(super) unsafe fn q4_vnni<const Q41: bool>(
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
    let mut r = 0;
    while r < rows {
        // SAFETY: r < rows; all reads stay within the checked slices (a block holds at
        // least 18 bytes, so the 4-byte scale gather stays inside it).
        unsafe {
            let (p, idx) = rows8(w, row_bytes, rows, r);
            let mut acc = _mm256_setzero_ps();
            for b in 0..nb {
                let off = b * bb;
                prefetch_ahead8(w, row_bytes, r, b, bb);
                let qa = load256(a.qs.as_ptr().add(b * 32) as *const u8);
                let s: [__m256i; 8] = core::array::from_fn(|rr| {
                    let x = load128(p[rr].add(off + qo));
                    let x = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(x), x), m4);
                    _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, qa)
                });
                let isum = hsum8(s);
                let h = gather8(p[0], off, idx);
                let dw = f16_lanes::<false>(h);
                let ab = *a.sums.get_unchecked(b);
                let d = _mm256_set1_ps(*a.d.get_unchecked(b));
                if Q41 {
                    let m = f16_lanes::<true>(h);
                    let t = _mm256_add_ps(
                        _mm256_mul_ps(_mm256_mul_ps(dw, d), _mm256_cvtepi32_ps(isum)),
                        _mm256_mul_ps(_mm256_mul_ps(m, d), _mm256_set1_ps(ab as f32)),
                    );
                    acc = _mm256_add_ps(acc, t);
                } else {
                    let isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(8 * ab));
                    acc = _mm256_add_ps(
                        acc,
                        _mm256_mul_ps(_mm256_mul_ps(dw, d), _mm256_cvtepi32_ps(isum)),
                    );
                }
            }
            store8(out, r, acc);
        }
        r += 8;
    }
}
