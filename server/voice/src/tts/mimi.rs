//! The Mimi decoder: latents at 12.5 Hz are projected (the quantizer's output projection),
//! upsampled to the codec's inner rate (200 Hz) by a depthwise transposed convolution, run
//! through a windowed streaming transformer and turned into 24 kHz samples by the SEANet
//! decoder (transposed convolutions with residual blocks). Every part keeps its own streaming
//! state, so each latent frame yields its 1920 samples as soon as it is produced.

use trillim_core::Parallel;

use super::config::TtsConfig;
use super::conv::{Conv1d, ConvTr1d, DepthwiseTr1d};
use super::nn::{elu, linear, Linear};
use super::transformer::{Dims, KvCache, Transformer};
use super::weights::Tensors;
use super::TtsError;

#[derive(Debug)]
enum Block {
    Elu,
    Conv(Conv1d),
    ConvTr(ConvTr1d),
    /// `x + conv(elu(conv(elu(x))))`.
    Res(Conv1d, Conv1d),
}

/// The decoding half of Mimi.
#[derive(Debug)]
pub struct MimiDecoder {
    quant_proj: Linear,
    upsample: DepthwiseTr1d,
    transformer: CodecTransformer,
    seanet: Vec<Block>,
    /// Inner-rate steps per latent frame.
    pub upsample_stride: usize,
    /// Samples per latent frame.
    pub frame_samples: usize,
}

/// The decoder's streaming state (one per utterance).
#[derive(Debug, Clone)]
pub struct MimiState {
    upsample: Vec<f32>,
    cache: KvCache,
    convs: Vec<Vec<f32>>,
}

impl MimiDecoder {
    pub fn load(t: &mut Tensors, cfg: &TtsConfig) -> Result<MimiDecoder, TtsError> {
        let m = "mimi";
        let (outer, ldim) = match t.shape(&format!("{m}.quantizer.output_proj.weight")) {
            Some(&[o, l, 1]) => (o, l),
            _ => {
                return Err(TtsError::Weights(
                    "mimi.quantizer.output_proj.weight is missing".into(),
                ))
            }
        };
        let (_, qw) = t.take_any(&format!("{m}.quantizer.output_proj.weight"))?;
        let quant_proj = Linear::new(qw, None, outer, ldim);
        let hop: usize = cfg.ratios.iter().product();
        let inner_rate = cfg.sample_rate as f32 / hop as f32;
        let stride = (inner_rate / cfg.frame_rate).round() as usize;
        if stride == 0 || hop == 0 {
            return Err(TtsError::Weights("the codec's rates do not fit".into()));
        }
        let upsample = DepthwiseTr1d::load(t, &format!("{m}.upsample.convtr.convtr"), stride)?;
        if upsample.channels != outer {
            return Err(TtsError::Weights(
                "the codec's upsampler does not match its projection".into(),
            ));
        }
        let transformer =
            CodecTransformer::load(t, &format!("{m}.decoder_transformer"), outer, cfg, "codec")?;
        // The SEANet decoder: conv, then per ratio ELU, transposed conv and residual blocks,
        // then ELU and the last conv.
        let p = format!("{m}.decoder.model");
        let mut seanet = vec![Block::Conv(Conv1d::load(
            t,
            &format!("{p}.0.conv"),
            1,
            1,
            true,
        )?)];
        let mut i = 1;
        for &r in &cfg.ratios {
            seanet.push(Block::Elu);
            i += 1;
            seanet.push(Block::ConvTr(ConvTr1d::load(
                t,
                &format!("{p}.{i}.convtr"),
                r,
            )?));
            i += 1;
            for j in 0..cfg.residual_layers {
                let dil = cfg.dilation_base.pow(j as u32);
                let a = Conv1d::load(t, &format!("{p}.{i}.block.1.conv"), 1, dil, true)?;
                let b = Conv1d::load(t, &format!("{p}.{i}.block.3.conv"), 1, 1, true)?;
                seanet.push(Block::Res(a, b));
                i += 1;
            }
        }
        seanet.push(Block::Elu);
        i += 1;
        seanet.push(Block::Conv(Conv1d::load(
            t,
            &format!("{p}.{i}.conv"),
            1,
            1,
            true,
        )?));
        Ok(MimiDecoder {
            quant_proj,
            upsample,
            transformer,
            seanet,
            upsample_stride: stride,
            frame_samples: stride * hop,
        })
    }

    /// A fresh streaming state.
    pub fn state(&self) -> MimiState {
        let n = self
            .seanet
            .iter()
            .map(|b| match b {
                Block::Res(..) => 2,
                Block::Elu => 0,
                _ => 1,
            })
            .sum();
        MimiState {
            upsample: Vec::new(),
            cache: self.transformer.cache(),
            convs: vec![Vec::new(); n],
        }
    }

    /// Decodes `n` de-normalized latents (`[n][ldim]`) into `n · frame_samples` samples.
    pub fn decode(
        &self,
        par: &dyn Parallel,
        latents: &[f32],
        n: usize,
        st: &mut MimiState,
    ) -> Vec<f32> {
        let outer = self.quant_proj.n_out;
        let mut q = vec![0f32; n * outer];
        self.quant_proj.forward(par, latents, n, &mut q);
        let qt = transpose(&q, n, outer);
        let t = n * self.upsample_stride;
        let up = self.upsample.forward(&qt, n, &mut st.upsample);
        let rows = transpose(&up, outer, t);
        let (x, c) = self.transformer.forward(par, rows, t, &mut st.cache);
        let mut h = transpose(&x, t, c);
        let mut len = t;
        let mut si = 0;
        for b in &self.seanet {
            match b {
                Block::Elu => elu(&mut h),
                Block::Conv(cv) => {
                    h = cv.forward(par, &h, len, &mut st.convs[si]);
                    si += 1;
                }
                Block::ConvTr(ct) => {
                    h = ct.forward(par, &h, len, &mut st.convs[si]);
                    len *= ct_stride(ct, &h, len);
                    si += 1;
                }
                Block::Res(a, c2) => {
                    let mut v = h.clone();
                    elu(&mut v);
                    let mut v = a.forward(par, &v, len, &mut st.convs[si]);
                    elu(&mut v);
                    let v = c2.forward(par, &v, len, &mut st.convs[si + 1]);
                    for (x, v) in h.iter_mut().zip(&v) {
                        *x += v;
                    }
                    si += 2;
                }
            }
        }
        h
    }
}

/// One of Mimi's two streaming transformers with its optional input and output projections
/// (`<prefix>.input_proj`, `<prefix>.transformer`, `<prefix>.output_projs.0`).
#[derive(Debug)]
pub(super) struct CodecTransformer {
    input_proj: Option<Linear>,
    transformer: Transformer,
    output_proj: Option<Linear>,
}

impl CodecTransformer {
    /// Loads the one at `prefix`, fed rows `outer` wide; `what` names it in errors.
    pub(super) fn load(
        t: &mut Tensors,
        prefix: &str,
        outer: usize,
        cfg: &TtsConfig,
        what: &str,
    ) -> Result<CodecTransformer, TtsError> {
        let proj = |t: &mut Tensors, name: &str| match t.shape(&format!("{prefix}.{name}.weight")) {
            Some(&[o, i]) => linear(t, &format!("{prefix}.{name}"), o, i, false).map(Some),
            _ => Ok(None),
        };
        let input_proj = proj(t, "input_proj")?;
        let d = input_proj.as_ref().map_or(outer, |p| p.n_out);
        let layers = super::flow::count(t, &format!("{prefix}.transformer.layers."));
        let ff = t
            .shape(&format!("{prefix}.transformer.layers.0.linear1.weight"))
            .map_or(0, |s| s[0]);
        if cfg.mimi_heads == 0 || !d.is_multiple_of(cfg.mimi_heads) {
            return Err(TtsError::Weights(format!(
                "the {what} width {d} does not fit {} heads",
                cfg.mimi_heads
            )));
        }
        let dims = Dims {
            d_model: d,
            heads: cfg.mimi_heads,
            kv_heads: cfg.mimi_heads,
            attn_dim: d,
            ff,
            layers,
            max_period: cfg.mimi_max_period,
            context: Some(cfg.mimi_context),
            layer_scale: true,
        };
        let transformer = Transformer::load(t, &format!("{prefix}.transformer"), dims)?;
        let output_proj = proj(t, "output_projs.0")?;
        Ok(CodecTransformer {
            input_proj,
            transformer,
            output_proj,
        })
    }

    /// Width of its output rows.
    pub(super) fn width(&self) -> usize {
        self.output_proj
            .as_ref()
            .map_or(self.transformer.dims().d_model, |p| p.n_out)
    }

    /// A fresh key/value cache for it.
    pub(super) fn cache(&self) -> KvCache {
        KvCache::new(self.transformer.dims().layers)
    }

    /// Runs `t` rows (`[t][outer]`) through it; returns `[t][width]` and the width.
    pub(super) fn forward(
        &self,
        par: &dyn Parallel,
        rows: Vec<f32>,
        t: usize,
        cache: &mut KvCache,
    ) -> (Vec<f32>, usize) {
        let project = |p: &Linear, x: &[f32]| {
            let mut y = vec![0f32; t * p.n_out];
            p.forward(par, x, t, &mut y);
            y
        };
        let mut x = match &self.input_proj {
            Some(p) => project(p, &rows),
            None => rows,
        };
        self.transformer.forward(par, &mut x, t, cache);
        match &self.output_proj {
            Some(p) => (project(p, &x), p.n_out),
            None => (x, self.transformer.dims().d_model),
        }
    }
}

/// The length factor of a transposed conv's output.
fn ct_stride(ct: &ConvTr1d, out: &[f32], len: usize) -> usize {
    out.len() / ct.cout / len.max(1)
}

/// `[r][c]` to `[c][r]`.
pub fn transpose(x: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut y = vec![0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            y[j * r + i] = x[i * c + j];
        }
    }
    y
}
