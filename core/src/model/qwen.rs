//! What the `qwen2` and `qwen3` families add to the shared pass ([`super::forward`]), between
//! the Q/K/V products and RoPE: Qwen 2's projection biases and Qwen 3's RMSNorm of every query
//! and key head. The rest of both families is the llama pass with half-split RoPE (and, for
//! Qwen 3, a head size read from `key_length`), as llama.cpp runs them.

use super::norm::rms_norm;
use super::weights::Layer;
use super::Forward;
use crate::parallel::Parallel;

/// `x[i] += bias[i]` for a little-endian `f32` bias vector.
fn add_bias(x: &mut [f32], bias: &[u8]) {
    for (v, b) in x.iter_mut().zip(bias.chunks_exact(4)) {
        *v += f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

impl Forward<'_> {
    /// Adds layer `l`'s Q/K/V biases and normalizes each query and key head with its
    /// `attn_q_norm`/`attn_k_norm`, for the `b` token rows of `q`, `k` and `v`, one row per
    /// task. A layer with neither (every other family) is left untouched.
    pub(super) fn qkv_extras(
        &self,
        l: &Layer,
        b: usize,
        (q, k, v): (&mut [f32], &mut [f32], &mut [f32]),
        par: &dyn Parallel,
    ) {
        let c = self.config;
        let (hd, eps) = (c.head_dim, c.rms_eps);
        let parts = [
            (q, c.q_dim(), &l.q_bias, &l.q_norm),
            (k, c.kv_dim(), &l.k_bias, &l.k_norm),
            (v, c.kv_dim(), &l.v_bias, &None),
        ];
        for (x, width, bias, norm) in parts {
            if bias.is_none() && norm.is_none() {
                continue;
            }
            let bias = bias.as_ref().map(|t| t.data(&self.bufs));
            let norm = norm.as_ref().map(|t| t.data(&self.bufs));
            par.for_each_chunk(&mut x[..b * width], width, &|_, row| {
                if let Some(bias) = bias {
                    add_bias(row, bias);
                }
                if let Some(w) = norm {
                    for head in row.chunks_exact_mut(hd) {
                        rms_norm(head, w, eps);
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::add_bias;

    #[test]
    fn bias_is_added_elementwise() {
        let mut bias = [0u8; 12];
        for (b, v) in bias.chunks_exact_mut(4).zip([0.5f32, -1.0, 2.0]) {
            b.copy_from_slice(&v.to_le_bytes());
        }
        let mut x = [1.0f32, 1.0, 1.0];
        add_bias(&mut x, &bias);
        assert_eq!(x, [1.5, 0.0, 3.0]);
    }
}
