//! The Whisper network: weights read from a CTranslate2 `WhisperSpec` checkpoint, the encoder
//! (two convolutions with GELU, sinusoidal positions, pre-LN transformer layers) and the decoder
//! (token and learned position embeddings, causal self-attention with a KV cache,
//! cross-attention over the encoder output, output projection tied to the embeddings).

use trillim_core::{Parallel, Sequential};

use super::linalg::{
    attention, cross_attention, gelu, layer_norm, rows_product, CrossKv, FloatKernels, Linear,
};
use crate::ct2::{f16_to_f32, Ct2Error, Ct2Model, DataType};

/// Sizes of a Whisper network, read from its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub n_mels: usize,
    pub d_model: usize,
    pub enc_layers: usize,
    pub dec_layers: usize,
    pub enc_heads: usize,
    pub dec_heads: usize,
    pub n_audio_ctx: usize,
    pub n_text_ctx: usize,
    pub n_vocab: usize,
}

#[derive(Debug, Clone)]
pub(super) struct Norm {
    pub(super) gamma: Vec<f32>,
    pub(super) beta: Vec<f32>,
}

#[derive(Debug, Clone)]
pub(super) struct EncoderLayer {
    pub(super) attn_norm: Norm,
    pub(super) qkv: Linear,
    pub(super) attn_out: Linear,
    pub(super) ffn_norm: Norm,
    pub(super) fc1: Linear,
    pub(super) fc2: Linear,
}

#[derive(Debug, Clone)]
pub(super) struct DecoderLayer {
    pub(super) self_norm: Norm,
    pub(super) self_qkv: Linear,
    pub(super) self_out: Linear,
    pub(super) cross_norm: Norm,
    pub(super) cross_q: Linear,
    pub(super) cross_kv: Linear,
    pub(super) cross_out: Linear,
    pub(super) ffn_norm: Norm,
    pub(super) fc1: Linear,
    pub(super) fc2: Linear,
}

/// The embedding matrix as stored, with the kernels for its element type.
#[derive(Debug, Clone)]
pub(super) struct Embeddings {
    pub(super) bytes: Vec<u8>,
    pub(super) dtype: DataType,
    pub(super) kernels: FloatKernels,
}

impl Embeddings {
    fn row(&self, i: usize, d: usize) -> Vec<f32> {
        let size = self.dtype.size();
        let b = &self.bytes[i * d * size..(i + 1) * d * size];
        match self.dtype {
            DataType::F16 => b
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            DataType::Bf16 => b
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            _ => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        }
    }
}

/// A loaded Whisper model (f32 weights in memory, embeddings as stored).
#[derive(Debug, Clone)]
pub struct Whisper {
    pub dims: Dims,
    pub(super) conv1: Linear,
    pub(super) conv2: Linear,
    pub(super) enc_pos: Vec<f32>,
    pub(super) enc_layers: Vec<EncoderLayer>,
    pub(super) enc_norm: Norm,
    /// Token embeddings, also the output projection, in the file's element type: the
    /// decoder reads all of it once per token, so f16 halves that traffic.
    pub(super) tok_emb: Embeddings,
    pub(super) dec_pos: Vec<f32>,
    pub(super) dec_layers: Vec<DecoderLayer>,
    pub(super) dec_norm: Norm,
}

struct Reader<'a> {
    m: &'a Ct2Model,
    buf: &'a [u8],
}

impl Reader<'_> {
    fn f32s(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, Ct2Error> {
        self.m.f32s(self.buf, name, shape)
    }
    fn norm(&self, p: &str, d: usize) -> Result<Norm, Ct2Error> {
        Ok(Norm {
            gamma: self.f32s(&format!("{p}/gamma"), &[d])?,
            beta: self.f32s(&format!("{p}/beta"), &[d])?,
        })
    }
    fn linear(&self, p: &str, n_out: usize, n_in: usize, bias: bool) -> Result<Linear, Ct2Error> {
        let b = if bias || self.m.contains(&format!("{p}/bias")) {
            Some(self.f32s(&format!("{p}/bias"), &[n_out])?)
        } else {
            None
        };
        Ok(Linear::new(
            self.f32s(&format!("{p}/weight"), &[n_out, n_in])?,
            b,
            n_out,
            n_in,
        ))
    }
    fn shape(&self, name: &str) -> Result<&[usize], Ct2Error> {
        Ok(&self.m.get(name)?.shape)
    }
    fn count_layers(&self, p: &str) -> usize {
        (0..)
            .take_while(|i| {
                self.m
                    .contains(&format!("{p}/layer_{i}/ffn/linear_0/weight"))
            })
            .count()
    }
}

/// Why a checkpoint is not a Whisper model this crate can run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Format(#[from] Ct2Error),
    #[error("model.bin is a {0}, not a WhisperSpec")]
    Spec(String),
    #[error("the checkpoint's shapes are inconsistent: {0}")]
    Inconsistent(String),
}

fn embeddings(m: &Ct2Model, buf: &[u8], n_vocab: usize, d: usize) -> Result<Embeddings, LoadError> {
    let name = "decoder/embeddings/weight";
    let v = m.get(name)?;
    let kernels = FloatKernels::best(v.dtype).ok_or(Ct2Error::WrongType {
        name: name.into(),
        dtype: v.dtype,
        wanted: "floats",
    })?;
    if v.shape != [n_vocab, d] {
        return Err(LoadError::Inconsistent(format!(
            "{name} has shape {:?}",
            v.shape
        )));
    }
    Ok(Embeddings {
        bytes: buf[v.offset..v.offset + v.len].to_vec(),
        dtype: v.dtype,
        kernels,
    })
}

/// A 2-D view's shape, or an error naming the variable.
fn dims2(s: &[usize], name: &str) -> Result<(usize, usize), LoadError> {
    match s {
        [a, b] => Ok((*a, *b)),
        _ => Err(LoadError::Inconsistent(format!("{name} has shape {s:?}"))),
    }
}

impl Whisper {
    /// Reads a CTranslate2 `WhisperSpec` variable table over `buf`.
    pub fn from_ct2(m: &Ct2Model, buf: &[u8]) -> Result<Whisper, LoadError> {
        if m.spec != "WhisperSpec" {
            return Err(LoadError::Spec(m.spec.clone()));
        }
        let r = Reader { m, buf };
        let (n_vocab, d) = dims2(r.shape("decoder/embeddings/weight")?, "embeddings")?;
        let (n_audio_ctx, d2) = dims2(
            r.shape("encoder/position_encodings/encodings")?,
            "encoder positions",
        )?;
        let (n_text_ctx, d3) = dims2(
            r.shape("decoder/position_encodings/encodings")?,
            "decoder positions",
        )?;
        let n_mels = match r.shape("encoder/conv1/weight")? {
            [o, i, 3] if *o == d => *i,
            s => return Err(LoadError::Inconsistent(format!("conv1 has shape {s:?}"))),
        };
        let heads = |name: &str| -> Result<usize, LoadError> {
            let h = m.int(buf, name)?;
            if h <= 0 || d % h as usize != 0 {
                return Err(LoadError::Inconsistent(format!(
                    "{name} = {h} does not divide {d}"
                )));
            }
            Ok(h as usize)
        };
        let dims = Dims {
            n_mels,
            d_model: d,
            enc_layers: r.count_layers("encoder"),
            dec_layers: r.count_layers("decoder"),
            enc_heads: heads("encoder/num_heads")?,
            dec_heads: heads("decoder/num_heads")?,
            n_audio_ctx,
            n_text_ctx,
            n_vocab,
        };
        if d2 != d || d3 != d || dims.enc_layers == 0 || dims.dec_layers == 0 {
            return Err(LoadError::Inconsistent(format!("{dims:?}")));
        }
        let ff = r.shape("encoder/layer_0/ffn/linear_0/weight")?[0];
        // Convolutions as products over unfolded [in · 3] columns (weights are [out][in][3]).
        let conv = |p: &str, n_in: usize| -> Result<Linear, Ct2Error> {
            Ok(Linear::new(
                r.f32s(&format!("{p}/weight"), &[d, n_in, 3])?,
                Some(r.f32s(&format!("{p}/bias"), &[d])?),
                d,
                n_in * 3,
            ))
        };
        let enc_layers = (0..dims.enc_layers)
            .map(|i| {
                let p = format!("encoder/layer_{i}");
                Ok(EncoderLayer {
                    attn_norm: r.norm(&format!("{p}/self_attention/layer_norm"), d)?,
                    qkv: r.linear(&format!("{p}/self_attention/linear_0"), 3 * d, d, true)?,
                    attn_out: r.linear(&format!("{p}/self_attention/linear_1"), d, d, true)?,
                    ffn_norm: r.norm(&format!("{p}/ffn/layer_norm"), d)?,
                    fc1: r.linear(&format!("{p}/ffn/linear_0"), ff, d, true)?,
                    fc2: r.linear(&format!("{p}/ffn/linear_1"), d, ff, true)?,
                })
            })
            .collect::<Result<_, Ct2Error>>()?;
        let dec_layers = (0..dims.dec_layers)
            .map(|i| {
                let p = format!("decoder/layer_{i}");
                Ok(DecoderLayer {
                    self_norm: r.norm(&format!("{p}/self_attention/layer_norm"), d)?,
                    self_qkv: r.linear(&format!("{p}/self_attention/linear_0"), 3 * d, d, true)?,
                    self_out: r.linear(&format!("{p}/self_attention/linear_1"), d, d, true)?,
                    cross_norm: r.norm(&format!("{p}/attention/layer_norm"), d)?,
                    cross_q: r.linear(&format!("{p}/attention/linear_0"), d, d, true)?,
                    cross_kv: r.linear(&format!("{p}/attention/linear_1"), 2 * d, d, true)?,
                    cross_out: r.linear(&format!("{p}/attention/linear_2"), d, d, true)?,
                    ffn_norm: r.norm(&format!("{p}/ffn/layer_norm"), d)?,
                    fc1: r.linear(&format!("{p}/ffn/linear_0"), ff, d, true)?,
                    fc2: r.linear(&format!("{p}/ffn/linear_1"), d, ff, true)?,
                })
            })
            .collect::<Result<_, Ct2Error>>()?;
        if m.contains("decoder/projection/weight") {
            let p = m.get("decoder/projection/weight")?;
            let e = m.get("decoder/embeddings/weight")?;
            if p.offset != e.offset {
                return Err(LoadError::Inconsistent(
                    "an output projection not tied to the embeddings".into(),
                ));
            }
        }
        Ok(Whisper {
            dims,
            conv1: conv("encoder/conv1", n_mels)?,
            conv2: conv("encoder/conv2", d)?,
            enc_pos: r.f32s("encoder/position_encodings/encodings", &[n_audio_ctx, d])?,
            enc_layers,
            enc_norm: r.norm("encoder/layer_norm", d)?,
            tok_emb: embeddings(m, buf, n_vocab, d)?,
            dec_pos: r.f32s("decoder/position_encodings/encodings", &[n_text_ctx, d])?,
            dec_layers,
            dec_norm: r.norm("decoder/layer_norm", d)?,
        })
    }

    /// Encodes one 30-second window of log-mel frames (`[n_mels][2 · n_audio_ctx]`) into
    /// `[n_audio_ctx][d_model]`.
    pub fn encode(&self, par: &dyn Parallel, mel: &[f32]) -> Vec<f32> {
        let Dims {
            n_mels,
            d_model: d,
            n_audio_ctx: t,
            ..
        } = self.dims;
        let frames = 2 * t;
        assert_eq!(mel.len(), n_mels * frames, "mel window size");
        // conv1: kernel 3, padding 1, stride 1 → [frames][d].
        let cols = unfold(mel, n_mels, frames, 1);
        let mut h1 = vec![0f32; frames * d];
        self.conv1.forward(par, &cols, frames, &mut h1);
        gelu(&mut h1);
        // conv2: kernel 3, padding 1, stride 2, over the channel-major transpose of h1.
        let h1t = transpose(&h1, frames, d);
        let cols = unfold(&h1t, d, frames, 2);
        let mut x = vec![0f32; t * d];
        self.conv2.forward(par, &cols, t, &mut x);
        gelu(&mut x);
        for (v, p) in x.iter_mut().zip(&self.enc_pos) {
            *v += p;
        }
        let heads = self.dims.enc_heads;
        let ff = self.enc_layers[0].fc1.n_out;
        let mut h = vec![0f32; t * d];
        let mut qkv = vec![0f32; t * 3 * d];
        let mut a = vec![0f32; t * d];
        let mut f = vec![0f32; t * ff];
        for l in &self.enc_layers {
            layer_norm(&x, &l.attn_norm.gamma, &l.attn_norm.beta, &mut h);
            l.qkv.forward(par, &h, t, &mut qkv);
            attention(
                par,
                (&qkv, 3 * d),
                (&qkv[d..], 3 * d),
                (&qkv[2 * d..], 3 * d),
                t,
                t,
                heads,
                d / heads,
                None,
                &mut a,
            );
            l.attn_out.forward(par, &a, t, &mut h);
            add(&mut x, &h);
            layer_norm(&x, &l.ffn_norm.gamma, &l.ffn_norm.beta, &mut h);
            l.fc1.forward(par, &h, t, &mut f);
            gelu(&mut f);
            l.fc2.forward(par, &f, t, &mut h);
            add(&mut x, &h);
        }
        let mut out = vec![0f32; t * d];
        layer_norm(&x, &self.enc_norm.gamma, &self.enc_norm.beta, &mut out);
        out
    }

    /// Cross-attention keys and values of every decoder layer for one encoded window.
    pub fn cross_kv(&self, par: &dyn Parallel, enc: &[f32]) -> Vec<CrossKv> {
        let t = self.dims.n_audio_ctx;
        let heads = self.dims.dec_heads;
        let mut kv = vec![0f32; t * 2 * self.dims.d_model];
        self.dec_layers
            .iter()
            .map(|l| {
                l.cross_kv.forward(par, enc, t, &mut kv);
                CrossKv::new(&kv, t, heads, self.dims.d_model / heads)
            })
            .collect()
    }

    /// A fresh self-attention cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        let d = self.dims.d_model;
        KvCache {
            len: 0,
            row: 2 * d,
            layers: vec![vec![0f32; self.dims.n_text_ctx * 2 * d]; self.dims.dec_layers],
        }
    }

    /// Runs `tokens` through the decoder after the `cache.len` tokens already in `cache`, and
    /// returns the logits of the last one. `tokens` must fit in the text context.
    pub fn decode(
        &self,
        par: &dyn Parallel,
        tokens: &[u32],
        cache: &mut KvCache,
        cross: &[CrossKv],
    ) -> Vec<f32> {
        let d = self.dims.d_model;
        let n = tokens.len();
        let start = cache.len;
        assert!(start + n <= self.dims.n_text_ctx, "decoder context");
        let heads = self.dims.dec_heads;
        let mut x = vec![0f32; n * d];
        for (i, &tok) in tokens.iter().enumerate() {
            self.embed(tok, start + i, &mut x[i * d..(i + 1) * d]);
        }
        // One token's layer products are too small to gain from the pool: handing each to
        // the workers costs more than it saves (measured), so they run on this thread; a
        // prompt of many tokens still uses the pool.
        let lp: &dyn Parallel = if n >= 8 { par } else { &Sequential };
        let ff = self.dec_layers[0].fc1.n_out;
        let mut h = vec![0f32; n * d];
        let mut qkv = vec![0f32; n * 3 * d];
        let mut q = vec![0f32; n * d];
        let mut a = vec![0f32; n * d];
        let mut f = vec![0f32; n * ff];
        for (li, l) in self.dec_layers.iter().enumerate() {
            layer_norm(&x, &l.self_norm.gamma, &l.self_norm.beta, &mut h);
            l.self_qkv.forward(lp, &h, n, &mut qkv);
            // The cache holds [pos][k | v] rows of 2·d.
            let kv = &mut cache.layers[li];
            for i in 0..n {
                let row = &mut kv[(start + i) * 2 * d..(start + i + 1) * 2 * d];
                row.copy_from_slice(&qkv[i * 3 * d + d..(i + 1) * 3 * d]);
            }
            attention(
                lp,
                (&qkv, 3 * d),
                (&kv[..], 2 * d),
                (&kv[d..], 2 * d),
                n,
                start + n,
                heads,
                d / heads,
                Some(start),
                &mut a,
            );
            self.layer_rest(
                lp,
                l,
                &cross[li],
                n,
                &mut x,
                (&mut a, &mut h, &mut q, &mut f),
            );
        }
        cache.len = start + n;
        self.logits(par, &x[(n - 1) * d..n * d], 1)
    }

    /// Runs one token per sequence through the decoder (the hypotheses of a beam): token `i`
    /// follows the tokens already in `caches[i]`. Returns each one's logits, `[n][n_vocab]`.
    /// The layers' weights are read once for all of them.
    pub fn decode_rows(
        &self,
        par: &dyn Parallel,
        tokens: &[u32],
        caches: &mut [KvCache],
        cross: &[CrossKv],
    ) -> Vec<f32> {
        let d = self.dims.d_model;
        let n = tokens.len();
        assert_eq!(caches.len(), n, "one cache per token");
        let heads = self.dims.dec_heads;
        let mut x = vec![0f32; n * d];
        for (i, &tok) in tokens.iter().enumerate() {
            let pos = caches[i].len;
            assert!(pos < self.dims.n_text_ctx, "decoder context");
            self.embed(tok, pos, &mut x[i * d..(i + 1) * d]);
        }
        let ff = self.dec_layers[0].fc1.n_out;
        let mut h = vec![0f32; n * d];
        let mut qkv = vec![0f32; n * 3 * d];
        let mut q = vec![0f32; n * d];
        let mut a = vec![0f32; n * d];
        let mut f = vec![0f32; n * ff];
        for (li, l) in self.dec_layers.iter().enumerate() {
            layer_norm(&x, &l.self_norm.gamma, &l.self_norm.beta, &mut h);
            l.self_qkv.forward(par, &h, n, &mut qkv);
            for (i, cache) in caches.iter_mut().enumerate() {
                let pos = cache.len;
                let kv = &mut cache.layers[li];
                kv[pos * 2 * d..(pos + 1) * 2 * d]
                    .copy_from_slice(&qkv[i * 3 * d + d..(i + 1) * 3 * d]);
                attention(
                    &Sequential,
                    (&qkv[i * 3 * d..], 3 * d),
                    (&kv[..], 2 * d),
                    (&kv[d..], 2 * d),
                    1,
                    pos + 1,
                    heads,
                    d / heads,
                    Some(pos),
                    &mut a[i * d..(i + 1) * d],
                );
            }
            self.layer_rest(
                par,
                l,
                &cross[li],
                n,
                &mut x,
                (&mut a, &mut h, &mut q, &mut f),
            );
        }
        for cache in caches.iter_mut() {
            cache.len += 1;
        }
        self.logits(par, &x, n)
    }

    /// The decoder's input row for `tok` at position `pos`: its embedding plus the position's
    /// (out-of-range ids read the last row).
    fn embed(&self, tok: u32, pos: usize, row: &mut [f32]) {
        let d = self.dims.d_model;
        let tok = (tok as usize).min(self.dims.n_vocab - 1);
        let e = self.tok_emb.row(tok, d);
        let p = &self.dec_pos[pos * d..(pos + 1) * d];
        for ((r, a), b) in row.iter_mut().zip(&e).zip(p) {
            *r = a + b;
        }
    }

    /// Decoder layer `l` after its self-attention (whose `n` output rows are in `a`): the
    /// output projection and residual, cross-attention over `cross` and the feed-forward
    /// block, into `x`. `h`, `q` and `f` are scratch of `n` rows (`f` of the FFN's width).
    #[allow(clippy::type_complexity)]
    fn layer_rest(
        &self,
        par: &dyn Parallel,
        l: &DecoderLayer,
        cross: &CrossKv,
        n: usize,
        x: &mut [f32],
        (a, h, q, f): (&mut [f32], &mut [f32], &mut [f32], &mut [f32]),
    ) {
        let d = self.dims.d_model;
        let heads = self.dims.dec_heads;
        l.self_out.forward(par, a, n, h);
        add(x, h);
        layer_norm(x, &l.cross_norm.gamma, &l.cross_norm.beta, h);
        l.cross_q.forward(par, h, n, q);
        cross_attention(par, l.cross_q.kernels, q, n, cross, heads, d / heads, a);
        l.cross_out.forward(par, a, n, h);
        add(x, h);
        layer_norm(x, &l.ffn_norm.gamma, &l.ffn_norm.beta, h);
        l.fc1.forward(par, h, n, f);
        gelu(f);
        l.fc2.forward(par, f, n, h);
        add(x, h);
    }

    /// The final norm and output projection of `n` hidden rows: `[n][n_vocab]` logits.
    fn logits(&self, par: &dyn Parallel, hidden: &[f32], n: usize) -> Vec<f32> {
        let d = self.dims.d_model;
        let mut normed = vec![0f32; n * d];
        layer_norm(
            &hidden[..n * d],
            &self.dec_norm.gamma,
            &self.dec_norm.beta,
            &mut normed,
        );
        let mut logits = vec![0f32; n * self.dims.n_vocab];
        let emb = &self.tok_emb;
        rows_product(
            par,
            &emb.bytes,
            d * emb.dtype.size(),
            emb.kernels,
            &normed,
            d,
            n,
            &mut logits,
        );
        logits
    }
}

/// The decoder's self-attention keys and values for one sequence.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Tokens already in the cache.
    pub len: usize,
    /// Floats per position: keys and values, `2 · d_model`.
    row: usize,
    layers: Vec<Vec<f32>>,
}

impl KvCache {
    /// Makes this cache a copy of `other`'s filled positions (a beam taking over another's
    /// history), without allocating when both come from the same model.
    pub fn copy_from(&mut self, other: &KvCache) {
        let used = other.len * self.row;
        for (a, b) in self.layers.iter_mut().zip(&other.layers) {
            a[..used].copy_from_slice(&b[..used]);
        }
        self.len = other.len;
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `[channels][len]` into `[len / stride][channels · 3]` columns for a kernel-3, padding-1
/// convolution with the given stride (the column order matches `[out][in][3]` weights).
fn unfold(x: &[f32], channels: usize, len: usize, stride: usize) -> Vec<f32> {
    let out_len = len.div_ceil(stride);
    let mut cols = vec![0f32; out_len * channels * 3];
    for t in 0..out_len {
        let row = &mut cols[t * channels * 3..(t + 1) * channels * 3];
        for c in 0..channels {
            for k in 0..3 {
                let src = (t * stride + k) as isize - 1;
                if src >= 0 && (src as usize) < len {
                    row[c * 3 + k] = x[c * len + src as usize];
                }
            }
        }
    }
    cols
}

fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
    out
}
