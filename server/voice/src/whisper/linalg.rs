//! The dense f32 operations of the Whisper pass, split across the caller's [`Parallel`] pool:
//! matrix products (the project's float kernels for a few rows, ndarray's cache-blocked
//! kernels for many), layer norm, GELU and attention.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};
use trillim_core::kernels::{GemmF32Fn, Kernels, MatVecF32Fn};
use trillim_core::Parallel;

use crate::ct2::DataType;

/// The kernels that multiply a float matrix of one element type with f32 vectors: one
/// vector, or a few at once (a beam's hypotheses) reading the matrix once for all of them.
#[derive(Clone, Copy)]
pub struct FloatKernels {
    pub matvec: MatVecF32Fn,
    pub gemm: GemmF32Fn,
}

impl std::fmt::Debug for FloatKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FloatKernels")
    }
}

impl FloatKernels {
    /// The kernels of `k` for `dtype`, or `None` for an integer type.
    pub fn of(k: &Kernels, dtype: DataType) -> Option<FloatKernels> {
        Some(match dtype {
            DataType::F32 => FloatKernels {
                matvec: k.f32,
                gemm: k.gemm_f32,
            },
            DataType::F16 => FloatKernels {
                matvec: k.f16,
                gemm: k.gemm_f16,
            },
            DataType::Bf16 => FloatKernels {
                matvec: k.bf16,
                gemm: k.gemm_bf16,
            },
            _ => return None,
        })
    }

    /// This CPU's best kernels for `dtype`, or `None` for an integer type.
    pub fn best(dtype: DataType) -> Option<FloatKernels> {
        FloatKernels::of(kernels(), dtype)
    }

    /// `out[t · rows + r] = row_r · x_t` for the `n` vectors of `x` (one vector takes the
    /// matrix-vector kernel).
    pub fn product(&self, w: &[u8], row_bytes: usize, x: &[f32], n: usize, out: &mut [f32]) {
        if n == 1 {
            (self.matvec)(w, row_bytes, x, out)
        } else {
            (self.gemm)(w, row_bytes, x, n, out)
        }
    }
}

/// A linear layer `y = x · Wᵀ + b` with `W` stored `[out][in]` (PyTorch's layout).
#[derive(Debug, Clone)]
pub struct Linear {
    pub w: Vec<f32>,
    pub b: Option<Vec<f32>>,
    pub n_out: usize,
    pub n_in: usize,
    /// The f32 kernels for few-row products (the CPU's best).
    pub kernels: FloatKernels,
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

/// Fewest rows for which a layer goes through ndarray's blocked product, which packs all of
/// `W` on every call: below it the few-vector kernels, which read `W` as stored, are faster
/// (pocket-tts's per-frame convolutions: real-time factor 0.43 → 0.40 on 2 threads with 64
/// against 8).
const BLOCKED_FROM: usize = 64;

impl Linear {
    /// A layer of `n_out × n_in` weights `w` and an optional bias, multiplied with this CPU's
    /// best kernels.
    pub fn new(w: Vec<f32>, b: Option<Vec<f32>>, n_out: usize, n_in: usize) -> Linear {
        assert_eq!(w.len(), n_out * n_in, "linear layer shape");
        Linear {
            w,
            b,
            n_out,
            n_in,
            kernels: FloatKernels::best(DataType::F32).expect("f32 is a float type"),
        }
    }

    /// `y[m][n_out] = x[m][n_in] · Wᵀ + b`. Many rows are split by rows; a few (decoding)
    /// by output columns, so both shapes use every thread.
    pub fn forward(&self, par: &dyn Parallel, x: &[f32], m: usize, y: &mut [f32]) {
        let (k, n) = (self.n_in, self.n_out);
        debug_assert!(x.len() >= m * k && y.len() >= m * n);
        let y = &mut y[..m * n];
        let threads = par.threads().max(1);
        if m >= BLOCKED_FROM.max(4 * threads) {
            // One task per thread: every task packs all of W, so fewer tasks pack it less.
            let rows = m.div_ceil(threads).max(1);
            let w = view_t(&self.w, k, n, k);
            par.for_each_chunk(y, rows * n, &|i, chunk| {
                let r = chunk.len() / n;
                let xs = view(&x[i * rows * k..], r, k, k);
                general_mat_mul(1.0, &xs, &w, 0.0, &mut view_mut(chunk, r, n));
            });
        } else {
            // Fewer rows (decoding one or several hypotheses, a prompt, a frame's convolution):
            // blocks of W's rows per task, each read once for all the rows.
            rows_product(
                par,
                bytemuck::cast_slice(&self.w),
                k * 4,
                self.kernels,
                x,
                k,
                m,
                y,
            );
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

/// `y[m][n_out] = x[m][k] · Wᵀ` for a few rows `x` and `W` stored as `n_out` rows of
/// `row_bytes` that `kernels` read (f32, f16 or bf16). Blocks of W's rows are split across
/// the pool and each block is multiplied with every row of `x` while it is in cache, so W is
/// read from memory once however many rows there are (a beam's hypotheses).
#[allow(clippy::too_many_arguments)]
pub fn rows_product(
    par: &dyn Parallel,
    w: &[u8],
    row_bytes: usize,
    kernels: FloatKernels,
    x: &[f32],
    k: usize,
    m: usize,
    y: &mut [f32],
) {
    let n = y.len() / m.max(1);
    let cols = n.div_ceil(par.threads().max(1) * 4).max(32);
    let x = &x[..m * k];
    // Task i writes its block `[m][rows of the block]` at i · cols · m (for one row that is
    // `y` itself); with several rows the pieces are then copied into place.
    let mut parts = if m == 1 {
        Vec::new()
    } else {
        vec![0f32; n * m]
    };
    let out = if m == 1 { &mut *y } else { &mut parts[..] };
    par.for_each_chunk(out, cols * m, &|i, out| {
        let nr = out.len() / m;
        let rows = &w[i * cols * row_bytes..(i * cols + nr) * row_bytes];
        kernels.product(rows, row_bytes, x, m, out);
    });
    for (i, part) in parts.chunks(cols * m).enumerate() {
        let nr = part.len() / m;
        for (t, piece) in part.chunks_exact(nr).enumerate() {
            y[t * n + i * cols..t * n + i * cols + nr].copy_from_slice(piece);
        }
    }
}

/// A dot product with eight independent sums, so it vectorizes.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
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

/// The exact (erf) GELU, in place (libm's `erff`, vectorized).
pub fn gelu(x: &mut [f32]) {
    (kernels().gelu_erf)(x)
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
        // Query rows split across tasks (one per thread); each does every head for its rows.
        let rows = tq.div_ceil(threads).max(1);
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

/// One decoder layer's cross-attention keys, `[head][pos][hd]`, and values transposed,
/// `[head][hd][pos]`, so both products of a decoding step are matrix-vector products over
/// contiguous rows.
#[derive(Debug, Clone)]
pub struct CrossKv {
    k: Vec<f32>,
    vt: Vec<f32>,
    len: usize,
}

impl CrossKv {
    /// Splits `[pos][k | v]` rows (2 · heads · hd wide) by head.
    pub fn new(kv: &[f32], len: usize, heads: usize, hd: usize) -> CrossKv {
        let d = heads * hd;
        let mut k = vec![0f32; len * d];
        let mut vt = vec![0f32; len * d];
        for p in 0..len {
            let row = &kv[p * 2 * d..(p + 1) * 2 * d];
            for h in 0..heads {
                k[(h * len + p) * hd..(h * len + p + 1) * hd]
                    .copy_from_slice(&row[h * hd..(h + 1) * hd]);
                for j in 0..hd {
                    vt[(h * hd + j) * len + p] = row[d + h * hd + j];
                }
            }
        }
        CrossKv { k, vt, len }
    }
}

/// Cross-attention of `tq` queries (`[tq][heads · hd]`) over `kv` into `out`, a head per
/// task: the queries' scores against the head's keys and their weighted sums of its values
/// are each one several-vector product, reading the head's keys and values once.
#[allow(clippy::too_many_arguments)]
pub fn cross_attention(
    par: &dyn Parallel,
    kernels: FloatKernels,
    q: &[f32],
    tq: usize,
    kv: &CrossKv,
    heads: usize,
    hd: usize,
    out: &mut [f32],
) {
    let d = heads * hd;
    let tk = kv.len;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut per_head = vec![0f32; heads * tq * hd];
    par.for_each_chunk(&mut per_head, tq * hd, &|h, o| {
        let kh: &[u8] = bytemuck::cast_slice(&kv.k[h * tk * hd..(h + 1) * tk * hd]);
        let vh: &[u8] = bytemuck::cast_slice(&kv.vt[h * hd * tk..(h + 1) * hd * tk]);
        let mut qh = vec![0f32; tq * hd];
        for (i, row) in qh.chunks_exact_mut(hd).enumerate() {
            row.copy_from_slice(&q[i * d + h * hd..i * d + (h + 1) * hd]);
        }
        let mut scores = vec![0f32; tq * tk];
        kernels.product(kh, hd * 4, &qh, tq, &mut scores);
        for row in scores.chunks_exact_mut(tk) {
            softmax_scaled(row, scale);
        }
        kernels.product(vh, tk * 4, &scores, tq, o);
    });
    for h in 0..heads {
        for t in 0..tq {
            out[t * d + h * hd..t * d + (h + 1) * hd]
                .copy_from_slice(&per_head[(h * tq + t) * hd..(h * tq + t + 1) * hd]);
        }
    }
}

/// This CPU's kernel table (selected once).
fn kernels() -> &'static Kernels {
    static K: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();
    K.get_or_init(trillim_runtime::cpu::best_kernels)
}

/// `e^(scale · (x − max))` of each element in place, returning their sum: libm's `expf`,
/// vectorized (arguments below −87, under 1.7e-38, read as −87).
pub fn exp_shifted(x: &mut [f32], max: f32, scale: f32) -> f32 {
    (kernels().exp_shifted)(x, max, scale)
}

/// `softmax(scale · x)` in place.
fn softmax_scaled(x: &mut [f32], scale: f32) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let inv = 1.0 / exp_shifted(x, max, scale);
    for v in x.iter_mut() {
        *v *= inv;
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
    if tq <= 4 {
        // Decoding: dot products over the key rows and a weighted sum of the value rows,
        // without the packing a blocked product would do for so few queries.
        for i in 0..tq {
            let qi = &q.0[i * q.1..i * q.1 + hd];
            let visible = causal_offset.map_or(tk, |c| (c + i + 1).min(tk));
            let row = &mut scores[i * tk..i * tk + visible];
            for (j, s) in row.iter_mut().enumerate() {
                *s = dot(qi, &k.0[j * k.1..j * k.1 + hd]) * scale;
            }
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum = exp_shifted(row, max, 1.0);
            let o = &mut out[i * out_stride..i * out_stride + hd];
            o.fill(0.0);
            for (j, &p) in row.iter().enumerate() {
                let vj = &v.0[j * v.1..j * v.1 + hd];
                for (a, b) in o.iter_mut().zip(vj) {
                    *a += p * b;
                }
            }
            for a in o.iter_mut() {
                *a /= sum;
            }
        }
        return;
    }
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
        let inv = 1.0 / exp_shifted(&mut row[..visible], max, 1.0);
        for s in &mut row[..visible] {
            *s *= inv;
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
            kernels: FloatKernels::of(&Kernels::scalar(), DataType::F32).unwrap(),
        };
        for m in [1, 3, 29, 70] {
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
