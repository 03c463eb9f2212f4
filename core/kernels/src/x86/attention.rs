//! AVX2 attention kernels over the f16 KV cache: scores and the weighted sum of values.

use core::arch::x86_64::*;

use super::*;

/// Query heads whose accumulators one pass of the attention kernels keeps in registers.
pub(super) const HEADS: usize = 4;

/// AVX2 attention scores: each key row is converted from f16 once and met by up to four query
/// heads (the heads of a grouped-query group share their keys).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn scores_f16_avx2(k: &[u16], q: &[f32], hd: usize, scores: &mut [f32]) {
    if hd == 0 {
        return;
    }
    let n = k.len() / hd;
    let g = q.len() / hd;
    assert!(scores.len() >= g * n, "scores too short");
    let (kp, qp) = (k.as_ptr() as *const u8, q.as_ptr());
    let mut j0 = 0;
    while j0 < g {
        let gj = core::cmp::min(HEADS, g - j0);
        for p in 0..n {
            // SAFETY: every load reads inside key row `p` (n · hd halves) or query rows
            // `j0 .. j0 + gj` (g · hd floats).
            unsafe {
                let kr = kp.add(2 * p * hd);
                let mut acc = [[_mm256_setzero_ps(); 2]; HEADS];
                let mut c = 0;
                while c + 16 <= hd {
                    let k0 = cvtph_ps256(load128(kr.add(2 * c)));
                    let k1 = cvtph_ps256(load128(kr.add(2 * c + 16)));
                    for (jj, a) in acc.iter_mut().enumerate().take(gj) {
                        let qr = qp.add((j0 + jj) * hd + c);
                        a[0] = _mm256_fmadd_ps(k0, _mm256_loadu_ps(qr), a[0]);
                        a[1] = _mm256_fmadd_ps(k1, _mm256_loadu_ps(qr.add(8)), a[1]);
                    }
                    c += 16;
                }
                if c + 8 <= hd {
                    let k0 = cvtph_ps256(load128(kr.add(2 * c)));
                    for (jj, a) in acc.iter_mut().enumerate().take(gj) {
                        let qr = qp.add((j0 + jj) * hd + c);
                        a[0] = _mm256_fmadd_ps(k0, _mm256_loadu_ps(qr), a[0]);
                    }
                    c += 8;
                }
                for (jj, a) in acc.iter().enumerate().take(gj) {
                    let j = j0 + jj;
                    let s = hsum_ps(_mm256_add_ps(a[0], a[1]));
                    let (kt, qt) = (&k[p * hd + c..(p + 1) * hd], &q[j * hd + c..(j + 1) * hd]);
                    scores[j * n + p] = s + crate::scalar::dot_f16(kt, qt);
                }
            }
        }
        j0 += gj;
    }
}

/// AVX2 weighted value sums: for each 16 columns, up to four heads' accumulators stay in
/// registers while every value row of the block is converted from f16 once and added to all
/// of them.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn mix_f16_avx2(w: &[f32], v: &[u16], hd: usize, acc: &mut [f32]) {
    if hd == 0 {
        return;
    }
    let n = v.len() / hd;
    let g = acc.len() / hd;
    assert!(w.len() >= g * n, "weights too short");
    let (vp, ap) = (v.as_ptr() as *const u8, acc.as_mut_ptr());
    let mut j0 = 0;
    while j0 < g {
        let gj = core::cmp::min(HEADS, g - j0);
        let mut c = 0;
        // SAFETY: every access is inside value rows `0 .. n` at columns below `hd`, or
        // accumulator rows `j0 .. j0 + gj` (g · hd floats).
        unsafe {
            while c + 16 <= hd {
                let mut a = [[_mm256_setzero_ps(); 2]; HEADS];
                for (jj, a) in a.iter_mut().enumerate().take(gj) {
                    let r = ap.add((j0 + jj) * hd + c);
                    *a = [_mm256_loadu_ps(r), _mm256_loadu_ps(r.add(8))];
                }
                for p in 0..n {
                    let vr = vp.add(2 * (p * hd + c));
                    let v0 = cvtph_ps256(load128(vr));
                    let v1 = cvtph_ps256(load128(vr.add(16)));
                    for (jj, a) in a.iter_mut().enumerate().take(gj) {
                        let wv = _mm256_set1_ps(*w.get_unchecked((j0 + jj) * n + p));
                        a[0] = _mm256_fmadd_ps(wv, v0, a[0]);
                        a[1] = _mm256_fmadd_ps(wv, v1, a[1]);
                    }
                }
                for (jj, a) in a.iter().enumerate().take(gj) {
                    let r = ap.add((j0 + jj) * hd + c);
                    _mm256_storeu_ps(r, a[0]);
                    _mm256_storeu_ps(r.add(8), a[1]);
                }
                c += 16;
            }
        }
        j0 += gj;
    }
    crate::scalar::mix_f16_columns(w, v, hd, acc, hd - hd % 16);
}
