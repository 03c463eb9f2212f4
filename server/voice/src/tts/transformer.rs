//! The streaming transformer both halves of pocket-tts use: pre-norm layers of causal
//! self-attention with interleaved-pair rotary embeddings and a key/value cache (optionally
//! limited to the last `context` positions, as in the Mimi codec), then a tanh-GELU MLP, each
//! optionally scaled per channel (layer scale).

use trillim_core::Parallel;

use super::nn::{gelu_tanh, linear, Linear, Norm};
use super::weights::Tensors;
use super::TtsError;

/// Shape of one transformer.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub d_model: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Width of queries and of the attention output.
    pub attn_dim: usize,
    pub ff: usize,
    pub layers: usize,
    pub max_period: f32,
    /// Keys a query may look back to (itself included); `None` is unbounded.
    pub context: Option<usize>,
    pub layer_scale: bool,
}

#[derive(Debug)]
struct Layer {
    in_proj: Linear,
    out_proj: Linear,
    norm1: Norm,
    norm2: Norm,
    linear1: Linear,
    linear2: Linear,
    scale1: Option<Vec<f32>>,
    scale2: Option<Vec<f32>>,
}

/// A stack of layers.
#[derive(Debug)]
pub struct Transformer {
    dims: Dims,
    hd: usize,
    layers: Vec<Layer>,
}

/// One layer's keys and values, rows `[pos][kv_heads · hd]` from absolute position `start`.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub start: usize,
}

/// The streaming state of a transformer: every layer's cache and the next position.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub layers: Vec<LayerCache>,
    pub offset: usize,
}

impl KvCache {
    /// An empty cache for `layers` layers.
    pub fn new(layers: usize) -> KvCache {
        KvCache {
            layers: vec![LayerCache::default(); layers],
            offset: 0,
        }
    }
}

impl Transformer {
    /// Loads `prefix.layers.N.*`.
    pub fn load(t: &mut Tensors, prefix: &str, dims: Dims) -> Result<Transformer, TtsError> {
        let d = dims.d_model;
        let hd = dims.attn_dim / dims.heads;
        let kv = hd * dims.kv_heads;
        let mut layers = Vec::with_capacity(dims.layers);
        for i in 0..dims.layers {
            let p = format!("{prefix}.layers.{i}");
            let scale = |t: &mut Tensors, n: usize| -> Result<Option<Vec<f32>>, TtsError> {
                if dims.layer_scale {
                    Ok(Some(t.take(&format!("{p}.layer_scale_{n}.scale"), &[d])?))
                } else {
                    Ok(None)
                }
            };
            layers.push(Layer {
                in_proj: linear(
                    t,
                    &format!("{p}.self_attn.in_proj"),
                    dims.attn_dim + 2 * kv,
                    d,
                    false,
                )?,
                out_proj: linear(
                    t,
                    &format!("{p}.self_attn.out_proj"),
                    d,
                    dims.attn_dim,
                    false,
                )?,
                norm1: Norm::load(t, &format!("{p}.norm1"), d, 1e-5)?,
                norm2: Norm::load(t, &format!("{p}.norm2"), d, 1e-5)?,
                linear1: linear(t, &format!("{p}.linear1"), dims.ff, d, false)?,
                linear2: linear(t, &format!("{p}.linear2"), d, dims.ff, false)?,
                scale1: scale(t, 1)?,
                scale2: scale(t, 2)?,
            });
        }
        Ok(Transformer { dims, hd, layers })
    }

    /// The shape.
    pub fn dims(&self) -> Dims {
        self.dims
    }

    /// Width of one cached key row.
    pub fn kv_width(&self) -> usize {
        self.hd * self.dims.kv_heads
    }

    /// Runs `n` rows of `x` (`[n][d_model]`, in place) after what `cache` holds, appending
    /// their keys and values.
    pub fn forward(&self, par: &dyn Parallel, x: &mut [f32], n: usize, cache: &mut KvCache) {
        let dims = self.dims;
        let d = dims.d_model;
        let kvw = self.kv_width();
        let qkv_w = dims.attn_dim + 2 * kvw;
        let mut h = vec![0f32; n * d];
        let mut qkv = vec![0f32; n * qkv_w];
        let mut att = vec![0f32; n * dims.attn_dim];
        let mut upd = vec![0f32; n * d];
        let mut ff = vec![0f32; n * dims.ff];
        let pos0 = cache.offset;
        for (layer, lc) in self.layers.iter().zip(cache.layers.iter_mut()) {
            layer.norm1.apply(&x[..n * d], &mut h);
            layer.in_proj.forward(par, &h, n, &mut qkv);
            for (t, row) in qkv.chunks_exact_mut(qkv_w).enumerate() {
                let pos = (pos0 + t) as f32;
                let (q, kv) = row.split_at_mut(dims.attn_dim);
                rope(q, self.hd, pos, dims.max_period);
                rope(&mut kv[..kvw], self.hd, pos, dims.max_period);
                lc.k.extend_from_slice(&kv[..kvw]);
                lc.v.extend_from_slice(&kv[kvw..]);
            }
            self.attend(par, &qkv, n, pos0, lc, &mut att);
            layer.out_proj.forward(par, &att, n, &mut upd);
            add_scaled(&mut x[..n * d], &upd, layer.scale1.as_deref());
            layer.norm2.apply(&x[..n * d], &mut h);
            layer.linear1.forward(par, &h, n, &mut ff);
            gelu_tanh(&mut ff);
            layer.linear2.forward(par, &ff, n, &mut upd);
            add_scaled(&mut x[..n * d], &upd, layer.scale2.as_deref());
            if let Some(ctx) = dims.context {
                trim(lc, kvw, pos0 + n, ctx);
            }
        }
        cache.offset = pos0 + n;
    }

    /// Causal attention of the `n` queries at `pos0..` over the cache (which already holds
    /// their own keys), heads split across the pool.
    fn attend(
        &self,
        par: &dyn Parallel,
        qkv: &[f32],
        n: usize,
        pos0: usize,
        lc: &LayerCache,
        out: &mut [f32],
    ) {
        let dims = self.dims;
        let hd = self.hd;
        let kvw = self.kv_width();
        let qkv_w = dims.attn_dim + 2 * kvw;
        let group = dims.heads / dims.kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut per_head = vec![0f32; dims.heads * n * hd];
        par.for_each_chunk(&mut per_head, n * hd, &|h, chunk| {
            let kh = h / group;
            let mut scores = Vec::new();
            for t in 0..n {
                let p = pos0 + t;
                let lo = dims
                    .context
                    .map_or(0, |c| (p + 1).saturating_sub(c))
                    .max(lc.start);
                let q = &qkv[t * qkv_w + h * hd..t * qkv_w + (h + 1) * hd];
                scores.clear();
                for j in lo..=p {
                    let r = (j - lc.start) * kvw + kh * hd;
                    let k = &lc.k[r..r + hd];
                    scores.push(q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale);
                }
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let o = &mut chunk[t * hd..(t + 1) * hd];
                o.fill(0.0);
                for (i, s) in scores.iter().enumerate() {
                    let r = (lo + i - lc.start) * kvw + kh * hd;
                    let w = s / sum;
                    for (o, v) in o.iter_mut().zip(&lc.v[r..r + hd]) {
                        *o += w * v;
                    }
                }
            }
        });
        for h in 0..dims.heads {
            for t in 0..n {
                out[t * dims.attn_dim + h * hd..t * dims.attn_dim + (h + 1) * hd]
                    .copy_from_slice(&per_head[(h * n + t) * hd..(h * n + t + 1) * hd]);
            }
        }
    }
}

/// `x += s ⊙ u` (or `x += u`), row by row.
fn add_scaled(x: &mut [f32], u: &[f32], s: Option<&[f32]>) {
    match s {
        Some(s) => {
            let d = s.len();
            for (xr, ur) in x.chunks_exact_mut(d).zip(u.chunks_exact(d)) {
                for ((x, u), s) in xr.iter_mut().zip(ur).zip(s) {
                    *x += s * u;
                }
            }
        }
        None => {
            for (x, u) in x.iter_mut().zip(u) {
                *x += u;
            }
        }
    }
}

/// Drops keys no future query can see, once they are many.
fn trim(lc: &mut LayerCache, kvw: usize, next: usize, ctx: usize) {
    let keep_from = next.saturating_sub(ctx);
    if keep_from > lc.start + ctx {
        let drop = (keep_from - lc.start) * kvw;
        lc.k.drain(..drop);
        lc.v.drain(..drop);
        lc.start = keep_from;
    }
}

/// Rotary embedding of `hd`-wide heads in place, pairs `(2i, 2i+1)` rotated by
/// `pos · max_period^(-2i/hd)`, computed in f32 as the reference does.
pub fn rope(x: &mut [f32], hd: usize, pos: f32, max_period: f32) {
    let c = (-(max_period as f64).ln() * 2.0 / hd as f64) as f32;
    for head in x.chunks_exact_mut(hd) {
        for i in 0..hd / 2 {
            let f = (i as f32 * c).exp();
            let a = f * pos;
            let (s, co) = a.sin_cos();
            let (r, im) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = r * co - im * s;
            head[2 * i + 1] = r * s + im * co;
        }
    }
}
