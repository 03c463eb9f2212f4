//! The dense f32 operations of the Whisper pass, split across the caller's [`Parallel`] pool:
//! matrix products (through ndarray's cache-blocked kernels), layer norm, GELU and attention.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};
use trillim_core::Parallel;

/// A linear layer `y = x · Wᵀ + b` with `W` stored `[out][in]` (PyTorch's layout).
#[derive(Debug, Clone)]
pub struct Linear {
    pub w: Vec<f32>,
    pub b: Option<Vec<f32>>,
    pub n_out: usize,
    pub n_in: usize,
}

fn view(data: &[f32], rows: usize, cols: usize, row_stride: usize) -> ArrayView2<'_, f32> {
    // Shapes are fixed by the model and checked at load; a mismatch is a bug, not input.
    ArrayView2::from_shape((rows, cols).strides((row_stride, 1)), data).expect("matrix view")
}

fn view_t(data: &[f32], rows: usize, cols: usize, col_stride: usize) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape((rows, cols).strides((1, col_stride)), data).expect("matrix view")
}

fn view_mut(data: &mut [f32], rows: usize, cols: usize) -> ArrayViewMut2<'_, f32> {
    ArrayViewMut2::from_shape((rows, cols), data).expect("matrix view")
}

impl Linear {
    /// `y[m][n_out] = x[m][n_in] · Wᵀ + b`. Many rows are split by rows; a few (decoding)
    /// by output columns, so both shapes use every thread.
    pub fn forward(&self, par: &dyn Parallel, x: &[f32], m: usize, y: &mut [f32]) {
        let (k, n) = (self.n_in, self.n_out);
        debug_assert!(x.len() >= m * k && y.len() >= m * n);
        let y = &mut y[..m * n];
        let threads = par.threads().max(1);
        if m >= 4 * threads {
            let rows = m.div_ceil(threads * 4).max(1);
            let w = view_t(&self.w, k, n, k);
            par.for_each_chunk(y, rows * n, &|i, chunk| {
                let r = chunk.len() / n;
                let xs = view(&x[i * rows * k..], r, k, k);
                general_mat_mul(1.0, &xs, &w, 0.0, &mut view_mut(chunk, r, n));
            });
        } else {
            // yᵀ[n][m] = W · xᵀ, a block of W's rows per task, then transposed back.
            let mut yt = vec![0f32; n * m];
            let cols = n.div_ceil(threads * 4).max(16);
            par.for_each_chunk(&mut yt, cols * m, &|i, chunk| {
                let r = chunk.len() / m;
                let ws = view(&self.w[i * cols * k..], r, k, k);
                let xt = view_t(x, k, m, k);
                general_mat_mul(1.0, &ws, &xt, 0.0, &mut view_mut(chunk, r, m));
            });
            for (j, row) in yt.chunks_exact(m).enumerate() {
                for (t, &v) in row.iter().enumerate() {
                    y[t * n + j] = v;
                }
            }
        }
        if let Some(b) = &self.b {
            for row in y.chunks_exact_mut(n) {
                for (v, bb) in row.iter_mut().zip(b) {
                    *v += bb;
                }
            }
        }
    }
}

/// Layer normalization of each `gamma.len()`-wide row of `x` into `out` (ε = 1e-5).
pub fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], out: &mut [f32]) {
    let d = gamma.len();
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + 1e-5).sqrt();
        for (((o, &v), &g), &b) in o.iter_mut().zip(row).zip(gamma).zip(beta) {
            *o = (v - mean) * inv * g + b;
        }
    }
}

/// The exact (erf) GELU, in place.
pub fn gelu(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + libm::erff(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Multi-head attention of `tq` queries over `tk` keys and values, all `[pos][heads · hd]`
/// rows with the given row strides; `causal_offset` (decoding) lets query `i` see keys
/// `0..=causal_offset + i`, `None` sees every key. Writes `[tq][heads · hd]` into `out`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    par: &dyn Parallel,
    q: (&[f32], usize),
    k: (&[f32], usize),
    v: (&[f32], usize),
    tq: usize,
    tk: usize,
    heads: usize,
    hd: usize,
    causal_offset: Option<usize>,
    out: &mut [f32],
) {
    let d = heads * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let threads = par.threads().max(1);
    let out = &mut out[..tq * d];
    if tq >= 4 * threads {
        // Query rows split across tasks; each task does every head for its rows.
        let rows = tq.div_ceil(threads * 4).max(1);
        par.for_each_chunk(out, rows * d, &|i, chunk| {
            let r = chunk.len() / d;
            let q0 = i * rows;
            let mut scores = vec![0f32; r * tk];
            for h in 0..heads {
                attend_head(
                    (&q.0[q0 * q.1 + h * hd..], q.1),
                    (&k.0[h * hd..], k.1),
                    (&v.0[h * hd..], v.1),
                    r,
                    tk,
                    hd,
                    scale,
                    causal_offset.map(|c| c + q0),
                    &mut scores,
                    &mut chunk[h * hd..],
                    d,
                );
            }
        });
    } else {
        // Few queries (decoding): one head per task into a per-head buffer.
        let mut per_head = vec![0f32; heads * tq * hd];
        par.for_each_chunk(&mut per_head, tq * hd, &|h, chunk| {
            let mut scores = vec![0f32; tq * tk];
            attend_head(
                (&q.0[h * hd..], q.1),
                (&k.0[h * hd..], k.1),
                (&v.0[h * hd..], v.1),
                tq,
                tk,
                hd,
                scale,
                causal_offset,
                &mut scores,
                chunk,
                hd,
            );
        });
        for h in 0..heads {
            for t in 0..tq {
                out[t * d + h * hd..t * d + (h + 1) * hd]
                    .copy_from_slice(&per_head[(h * tq + t) * hd..(h * tq + t + 1) * hd]);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn attend_head(
    q: (&[f32], usize),
    k: (&[f32], usize),
    v: (&[f32], usize),
    tq: usize,
    tk: usize,
    hd: usize,
    scale: f32,
    causal_offset: Option<usize>,
    scores: &mut [f32],
    out: &mut [f32],
    out_stride: usize,
) {
    let qv = view(q.0, tq, hd, q.1);
    let kt = view_t(k.0, hd, tk, k.1);
    let mut s = view_mut(&mut scores[..tq * tk], tq, tk);
    general_mat_mul(scale, &qv, &kt, 0.0, &mut s);
    for (i, row) in scores[..tq * tk].chunks_exact_mut(tk).enumerate() {
        let visible = causal_offset.map_or(tk, |c| (c + i + 1).min(tk));
        let max = row[..visible]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for s in &mut row[..visible] {
            *s = (*s - max).exp();
            sum += *s;
        }
        for s in &mut row[..visible] {
            *s /= sum;
        }
        row[visible..].fill(0.0);
    }
    let p = view(scores, tq, tk, tk);
    let vv = view(v.0, tk, hd, v.1);
    let mut o = ArrayViewMut2::from_shape((tq, hd).strides((out_stride, 1)), out)
        .expect("attention output view");
    general_mat_mul(1.0, &p, &vv, 0.0, &mut o);
}

#[cfg(test)]
mod tests {
    use super::*;
    use trillim_core::Sequential;

    fn naive(x: &[f32], m: usize, l: &Linear) -> Vec<f32> {
        let mut y = vec![0f32; m * l.n_out];
        for t in 0..m {
            for j in 0..l.n_out {
                let mut s = l.b.as_ref().map_or(0.0, |b| b[j]);
                for i in 0..l.n_in {
                    s += x[t * l.n_in + i] * l.w[j * l.n_in + i];
                }
                y[t * l.n_out + j] = s;
            }
        }
        y
    }

    #[test]
    fn linear_matches_naive_for_both_splits() {
        let (k, n) = (37, 53);
        let l = Linear {
            w: (0..n * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 10.0)
                .collect(),
            b: Some((0..n).map(|i| i as f32 / 100.0).collect()),
            n_out: n,
            n_in: k,
        };
        for m in [1, 3, 29] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 7.0)
                .collect();
            let mut y = vec![0f32; m * n];
            l.forward(&Sequential, &x, m, &mut y);
            for (a, b) in y.iter().zip(naive(&x, m, &l)) {
                assert!((a - b).abs() < 1e-4, "{a} {b}");
            }
        }
    }
}
