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
            let rs = core::slice::from_raw_parts(row, row_bytes);
            while j < n {
                let v = match KIND {
                    0 => {
                        f32::from_le_bytes([rs[4 * j], rs[4 * j + 1], rs[4 * j + 2], rs[4 * j + 3]])
                    }
                    1 => crate::f16::le_f16(rs, 2 * j),
                    _ => crate::f16::bf16_to_f32(crate::f16::le_u16(rs, 2 * j)),
                };
                acc += v * x[j];
                j += 1;
            }
            *o = acc;
        }
    }
}
