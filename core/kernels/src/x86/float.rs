//! AVX2 kernels of the float formats: F32, F16 and BF16.

use core::arch::x86_64::*;

use super::*;

/// Loads elements `j..j + 8` of a float row as `f32` (`KIND`: 0 f32, 1 f16, 2 bf16).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn load8<const KIND: u8>(row: *const u8, j: usize) -> __m256 {
    // SAFETY: the caller guarantees elements j..j + 8 are inside the row.
    unsafe {
        match KIND {
            0 => _mm256_loadu_ps(row.add(4 * j) as *const f32),
            1 => cvtph_ps256(load128(row.add(2 * j))),
            _ => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(load128(
                row.add(2 * j),
            )))),
        }
    }
}

/// Shared F32 / F16 / BF16 AVX2 body (`KIND`: 0 f32, 1 f16, 2 bf16).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn matvec_float_avx2<const KIND: u8>(
    w: &[u8],
    row_bytes: usize,
    x: &[f32],
    out: &mut [f32],
) {
    let rows = out.len();
    if rows == 0 {
        return;
    }
    let esize = if KIND == 0 { 4 } else { 2 };
    let n = x.len();
    assert!(row_bytes >= n * esize, "row too short");
    assert!(w.len() >= rows * row_bytes, "weight slice too short");
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: row r holds `n` elements of `esize` bytes inside `w` (checked above).
        unsafe {
            let row = w.as_ptr().add(r * row_bytes);
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            let xp = x.as_ptr();
            let mut j = 0;
            while j + 32 <= n {
                a0 = _mm256_fmadd_ps(load8::<KIND>(row, j), _mm256_loadu_ps(xp.add(j)), a0);
                a1 = _mm256_fmadd_ps(
                    load8::<KIND>(row, j + 8),
                    _mm256_loadu_ps(xp.add(j + 8)),
                    a1,
                );
                a2 = _mm256_fmadd_ps(
                    load8::<KIND>(row, j + 16),
                    _mm256_loadu_ps(xp.add(j + 16)),
                    a2,
                );
                a3 = _mm256_fmadd_ps(
                    load8::<KIND>(row, j + 24),
                    _mm256_loadu_ps(xp.add(j + 24)),
                    a3,
                );
                j += 32;
            }
            while j + 8 <= n {
                a0 = _mm256_fmadd_ps(load8::<KIND>(row, j), _mm256_loadu_ps(xp.add(j)), a0);
                j += 8;
            }
            let mut acc = hsum_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
            while j < n {
                acc += elem::<KIND>(row, j) * x[j];
                j += 1;
            }
            *o = acc;
        }
    }
}

/// Element `j` of a float row as `f32` (`KIND` as in [`load8`]).
#[inline]
unsafe fn elem<const KIND: u8>(row: *const u8, j: usize) -> f32 {
    // SAFETY: the caller guarantees element j is inside the row.
    unsafe {
        match KIND {
            0 => f32::from_bits(u32::from_le(
                (row.add(4 * j) as *const u32).read_unaligned(),
            )),
            1 => crate::f16::f16_to_f32(u16::from_le(
                (row.add(2 * j) as *const u16).read_unaligned(),
            )),
            _ => crate::f16::bf16_to_f32(u16::from_le(
                (row.add(2 * j) as *const u16).read_unaligned(),
            )),
        }
    }
}

/// Float rows × several f32 vectors (`KIND` as in [`load8`]): `x` holds `n` vectors and
/// `out[t · rows + r] = row_r · x_t`. Two rows and up to four vectors at a time, so each
/// converted weight vector serves every vector of the group and each loaded vector both rows;
/// a weight row is read from memory once for all the vectors.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_float_avx2<const KIND: u8>(
    w: &[u8],
    row_bytes: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) {
    let (k, rows) = match crate::scalar::gemm_shape(x.len(), out.len(), n) {
        Some(shape) => shape,
        None => return,
    };
    let esize = if KIND == 0 { 4 } else { 2 };
    assert!(row_bytes >= k * esize, "row too short");
    assert!(w.len() >= rows * row_bytes, "weight slice too short");
    // Vectors in groups of at most four, as even as possible (5 = 3 + 2, 10 = 4 + 3 + 3),
    // so no group is left with a single accumulator chain.
    let groups = (n + 3) / 4;
    let (w, x) = (w.as_ptr(), x.as_ptr());
    let mut r = 0;
    while r < rows {
        let two = rows - r >= 2;
        let mut t = 0;
        for g in 0..groups {
            let tn = (n - t) / (groups - g);
            let tile = Tile {
                w,
                row_bytes,
                x,
                k,
                r,
                t,
            };
            // SAFETY: rows r..r + (1 or 2) and vectors t..t + tn are inside `w`, `x` and
            // `out` (checked above); the CPU has AVX2 and FMA (the caller's contract).
            unsafe {
                match (two, tn) {
                    (true, 4) => tile.run::<KIND, 2, 4, 1>(out, rows),
                    (true, 3) => tile.run::<KIND, 2, 3, 1>(out, rows),
                    (true, 2) => tile.run::<KIND, 2, 2, 2>(out, rows),
                    (true, _) => tile.run::<KIND, 2, 1, 4>(out, rows),
                    (false, 4) => tile.run::<KIND, 1, 4, 2>(out, rows),
                    (false, 3) => tile.run::<KIND, 1, 3, 2>(out, rows),
                    (false, 2) => tile.run::<KIND, 1, 2, 4>(out, rows),
                    (false, _) => tile.run::<KIND, 1, 1, 8>(out, rows),
                }
            }
            t += tn;
        }
        r += if two { 2 } else { 1 };
    }
}

/// Where one tile of [`gemm_float_avx2`] starts: row `r` and vector `t`.
struct Tile {
    w: *const u8,
    row_bytes: usize,
    x: *const f32,
    k: usize,
    r: usize,
    t: usize,
}

impl Tile {
    /// `R` rows × `T` vectors with `U` accumulators per pair over interleaved 8-wide
    /// chunks, so every tile has at least eight independent FMA chains where it can.
    // Index loops: the tile is a grid of registers, addressed by row and vector.
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run<const KIND: u8, const R: usize, const T: usize, const U: usize>(
        &self,
        out: &mut [f32],
        rows: usize,
    ) {
        let Tile {
            w,
            row_bytes,
            x,
            k,
            r,
            t,
        } = *self;
        // SAFETY: the caller guarantees rows r..r + R of `w` hold k elements each, vectors
        // t..t + T of `x` hold k floats each, and out[(t + T - 1) · rows + r + R - 1] exists.
        unsafe {
            let row = |i: usize| w.add((r + i) * row_bytes);
            let vec = |i: usize| x.add((t + i) * k);
            let mut acc = [[[_mm256_setzero_ps(); T]; R]; U];
            let mut j = 0;
            while j + 8 * U <= k {
                for (u, acc) in acc.iter_mut().enumerate() {
                    let jj = j + 8 * u;
                    let mut wv = [_mm256_setzero_ps(); R];
                    for (i, v) in wv.iter_mut().enumerate() {
                        *v = load8::<KIND>(row(i), jj);
                    }
                    for ti in 0..T {
                        let xv = _mm256_loadu_ps(vec(ti).add(jj));
                        for i in 0..R {
                            acc[i][ti] = _mm256_fmadd_ps(wv[i], xv, acc[i][ti]);
                        }
                    }
                }
                j += 8 * U;
            }
            while j + 8 <= k {
                for i in 0..R {
                    let wv = load8::<KIND>(row(i), j);
                    for ti in 0..T {
                        let xv = _mm256_loadu_ps(vec(ti).add(j));
                        acc[0][i][ti] = _mm256_fmadd_ps(wv, xv, acc[0][i][ti]);
                    }
                }
                j += 8;
            }
            for i in 0..R {
                for ti in 0..T {
                    let mut v = acc[0][i][ti];
                    for a in &acc[1..] {
                        v = _mm256_add_ps(v, a[i][ti]);
                    }
                    let mut s = hsum_ps(v);
                    for jj in j..k {
                        s += elem::<KIND>(row(i), jj) * *vec(ti).add(jj);
                    }
                    out[(t + ti) * rows + r + i] = s;
                }
            }
        }
    }
}
