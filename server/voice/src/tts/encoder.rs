//! The Mimi encoder, for voice cloning: 24 kHz samples through the SEANet encoder (causal
//! convolutions with residual blocks, strided down to the codec's inner rate, 200 Hz), the
//! encoder transformer (windowed, like the decoder's) and a strided convolution down to the
//! latent rate (12.5 Hz) and width. The audio is fed one block of frames at a time with every
//! part keeping its streaming state, which gives what one pass over the whole clip gives while
//! the intermediate buffers stay the size of a block.

use trillim_core::Parallel;

use super::config::TtsConfig;
use super::conv::Conv1d;
use super::mimi::{transpose, CodecTransformer};
use super::nn::elu;
use super::weights::Tensors;
use super::TtsError;

#[derive(Debug)]
enum Block {
    Elu,
    Conv(Conv1d),
    /// `x + conv(elu(conv(elu(x))))`.
    Res(Conv1d, Conv1d),
}

/// The encoding half of Mimi.
#[derive(Debug)]
pub struct MimiEncoder {
    seanet: Vec<Block>,
    transformer: CodecTransformer,
    /// Inner rate to latent rate (`ConvDownsample1d`, replicate padding, no bias).
    downsample: Conv1d,
    /// Samples per latent frame.
    pub frame_samples: usize,
    /// Width of a latent.
    pub dim: usize,
}

/// Latent frames encoded per block.
const BLOCK_FRAMES: usize = 5;

impl MimiEncoder {
    /// Loads `mimi.encoder.*`, `mimi.encoder_transformer.*` and `mimi.downsample.*`;
    /// `None` when the file has no encoder (the models released without voice cloning).
    pub fn load(t: &mut Tensors, cfg: &TtsConfig) -> Result<Option<MimiEncoder>, TtsError> {
        let p = "mimi.encoder.model";
        if !t.has(&format!("{p}.0.conv.weight")) {
            return Ok(None);
        }
        let mut seanet = vec![Block::Conv(Conv1d::load(
            t,
            &format!("{p}.0.conv"),
            1,
            1,
            true,
        )?)];
        let mut i = 1;
        // The encoder walks the ratios from the finest (last) one.
        for &r in cfg.ratios.iter().rev() {
            for j in 0..cfg.residual_layers {
                let dil = cfg.dilation_base.pow(j as u32);
                let a = Conv1d::load(t, &format!("{p}.{i}.block.1.conv"), 1, dil, true)?;
                let b = Conv1d::load(t, &format!("{p}.{i}.block.3.conv"), 1, 1, true)?;
                seanet.push(Block::Res(a, b));
                i += 1;
            }
            seanet.push(Block::Elu);
            i += 1;
            seanet.push(Block::Conv(Conv1d::load(
                t,
                &format!("{p}.{i}.conv"),
                r,
                1,
                true,
            )?));
            i += 1;
        }
        seanet.push(Block::Elu);
        i += 1;
        let last = Conv1d::load(t, &format!("{p}.{i}.conv"), 1, 1, true)?;
        let outer = last.cout;
        seanet.push(Block::Conv(last));

        let transformer =
            CodecTransformer::load(t, "mimi.encoder_transformer", outer, cfg, "codec encoder")?;
        let width = transformer.width();
        let hop: usize = cfg.ratios.iter().product();
        let inner_rate = cfg.sample_rate as f32 / hop as f32;
        let stride = (inner_rate / cfg.frame_rate).round() as usize;
        if stride == 0 {
            return Err(TtsError::Weights("the codec's rates do not fit".into()));
        }
        let downsample = Conv1d::load(t, "mimi.downsample.conv.conv", stride, 1, false)?;
        if downsample.cin != width {
            return Err(TtsError::Weights(
                "the codec's downsampler does not match its encoder".into(),
            ));
        }
        Ok(Some(MimiEncoder {
            seanet,
            transformer,
            dim: downsample.cout,
            downsample,
            frame_samples: stride * hop,
        }))
    }

    /// Encodes 24 kHz mono samples into `[n][dim]` latents (unnormalized, as
    /// `encode_to_latent` gives them); the clip is padded with zeros to whole frames.
    pub fn encode(&self, par: &dyn Parallel, samples: &[f32]) -> Vec<f32> {
        let fs = self.frame_samples;
        let frames = samples.len().div_ceil(fs);
        let mut convs: Vec<Vec<f32>> = vec![Vec::new(); 2 * self.seanet.len()];
        let mut cache = self.transformer.cache();
        let mut down: Option<Vec<f32>> = None;
        let mut out = Vec::with_capacity(frames * self.dim);
        let mut f0 = 0;
        while f0 < frames {
            let nf = BLOCK_FRAMES.min(frames - f0);
            let mut x = vec![0f32; nf * fs];
            let lo = (f0 * fs).min(samples.len());
            let hi = ((f0 + nf) * fs).min(samples.len());
            x[..hi - lo].copy_from_slice(&samples[lo..hi]);
            let (h, len) = self.seanet(par, x, nf * fs, &mut convs);
            let c = h.len() / len;
            let rows = transpose(&h, c, len);
            let (z, w) = self.transformer.forward(par, rows, len, &mut cache);
            let zt = transpose(&z, len, w);
            // Replicate padding: the left context starts as copies of the first step.
            let prev = down.get_or_insert_with(|| {
                let tp = self.downsample.state_len();
                (0..w).flat_map(|ci| vec![zt[ci * len]; tp]).collect()
            });
            let y = self.downsample.forward(par, &zt, len, prev);
            out.extend(transpose(&y, self.dim, nf));
            f0 += nf;
        }
        out
    }

    /// The SEANet encoder over one block `[1][t]`; returns `[c][len]` and `len`.
    fn seanet(
        &self,
        par: &dyn Parallel,
        mut h: Vec<f32>,
        mut len: usize,
        convs: &mut [Vec<f32>],
    ) -> (Vec<f32>, usize) {
        for (bi, b) in self.seanet.iter().enumerate() {
            let (s0, s1) = convs[2 * bi..2 * bi + 2].split_at_mut(1);
            match b {
                Block::Elu => elu(&mut h),
                Block::Conv(cv) => {
                    h = cv.forward(par, &h, len, &mut s0[0]);
                    len /= cv.stride();
                }
                Block::Res(a, c2) => {
                    let mut v = h.clone();
                    elu(&mut v);
                    let mut v = a.forward(par, &v, len, &mut s0[0]);
                    elu(&mut v);
                    let v = c2.forward(par, &v, len, &mut s1[0]);
                    for (x, v) in h.iter_mut().zip(&v) {
                        *x += v;
                    }
                }
            }
        }
        (h, len)
    }
}
