//! Small dense operations shared by the FlowLM and the Mimi decoder: linear layers from
//! PyTorch-layout weights, the normalizations and activations pocket-tts uses.

use super::weights::Tensors;
use super::TtsError;
pub use crate::whisper::linalg::Linear;

/// A linear layer from `name.weight` `[n_out][n_in]` (and `name.bias` when `bias`).
pub fn linear(
    t: &mut Tensors,
    name: &str,
    n_out: usize,
    n_in: usize,
    bias: bool,
) -> Result<Linear, TtsError> {
    linear_from(t, &format!("{name}.weight"), name, n_out, n_in, bias)
}

/// A linear layer from a weight tensor with another name (and `prefix.bias`).
pub fn linear_from(
    t: &mut Tensors,
    weight: &str,
    prefix: &str,
    n_out: usize,
    n_in: usize,
    bias: bool,
) -> Result<Linear, TtsError> {
    let w = t.take(weight, &[n_out, n_in])?;
    let b = if bias {
        Some(t.take(&format!("{prefix}.bias"), &[n_out])?)
    } else {
        None
    };
    Ok(Linear::new(w, b, n_out, n_in))
}

/// Affine layer-norm parameters.
#[derive(Debug, Clone)]
pub struct Norm {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub eps: f32,
}

impl Norm {
    pub fn load(t: &mut Tensors, name: &str, d: usize, eps: f32) -> Result<Norm, TtsError> {
        Ok(Norm {
            w: t.take(&format!("{name}.weight"), &[d])?,
            b: t.take(&format!("{name}.bias"), &[d])?,
            eps,
        })
    }

    /// Normalizes each `d`-wide row of `x` into `out`.
    pub fn apply(&self, x: &[f32], out: &mut [f32]) {
        layer_norm(x, Some((&self.w, &self.b)), self.eps, self.w.len(), out);
    }
}

/// Layer normalization of `d`-wide rows (biased variance, as `torch.nn.LayerNorm`).
pub fn layer_norm(
    x: &[f32],
    affine: Option<(&[f32], &[f32])>,
    eps: f32,
    d: usize,
    out: &mut [f32],
) {
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        match affine {
            Some((g, b)) => {
                for (((o, &v), &g), &b) in o.iter_mut().zip(row).zip(g).zip(b) {
                    *o = (v - mean) * inv * g + b;
                }
            }
            None => {
                for (o, &v) in o.iter_mut().zip(row) {
                    *o = (v - mean) * inv;
                }
            }
        }
    }
}

/// pocket-tts's RMS norm: `x · α / √(ε + var(x))` with the unbiased variance (the mean is
/// subtracted for the variance only).
pub fn rms_norm(x: &mut [f32], alpha: &[f32], eps: f32) {
    let d = alpha.len();
    for row in x.chunks_exact_mut(d) {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / (d as f32 - 1.0);
        let inv = 1.0 / (eps + var).sqrt();
        for (v, &a) in row.iter_mut().zip(alpha) {
            *v *= a * inv;
        }
    }
}

/// GELU with the tanh approximation, in place.
pub fn gelu_tanh(x: &mut [f32]) {
    const C: f32 = 0.797_884_6; // √(2/π)
    for v in x {
        let u = *v;
        *v = 0.5 * u * (1.0 + (C * (u + 0.044_715 * u * u * u)).tanh());
    }
}

/// SiLU, in place.
pub fn silu(x: &mut [f32]) {
    for v in x {
        *v /= 1.0 + (-*v).exp();
    }
}

/// ELU with α = 1, in place.
pub fn elu(x: &mut [f32]) {
    for v in x {
        if *v <= 0.0 {
            *v = v.exp_m1();
        }
    }
}
