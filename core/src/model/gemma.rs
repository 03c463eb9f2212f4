//! What the `gemma2` and `gemma3` families add to the shared pass ([`super::forward`]): the
//! GeGLU activation, the RMSNorms of each block's output before the residual add, and
//! soft-capping. The embedding scale, the per-layer sliding window with its RoPE base and the
//! query scale are configuration ([`super::Config`]) that the shared blocks read; Gemma 3's
//! per-head Q/K norms are Qwen 3's ([`super::qwen`]). Norm weights are used as the file holds
//! them: llama.cpp's converter already stores Gemma's `1 + w`.

use super::norm::rms_norm;
use super::weights::Tensor;
use super::Forward;
use crate::parallel::Parallel;

/// `√(2/π)` and the cubic coefficient of GELU's tanh approximation.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_COEF_A: f32 = 0.044_715;

/// GELU, tanh approximation: `x/2 · (1 + tanh(√(2/π) · (x + 0.044715·x³)))`.
pub(super) fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::tanhf(SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)))
}

/// `g[i] = gelu_tanh(g[i]) · u[i]` (GeGLU).
pub(super) fn gelu_mul(g: &mut [f32], u: &[f32]) {
    for (g, u) in g.iter_mut().zip(u) {
        *g = gelu_tanh(*g) * u;
    }
}

/// `x = c · tanh(x / c)` for every element (`c > 0`).
pub(super) fn softcap(x: &mut [f32], c: f32) {
    let inv = 1.0 / c;
    for v in x {
        *v = c * libm::tanhf(*v * inv);
    }
}

impl Forward<'_> {
    /// Normalizes each `d`-wide row of `rows` in place with `norm`, if the layer has one.
    pub(super) fn post_norm(
        &self,
        norm: &Option<Tensor>,
        rows: &mut [f32],
        d: usize,
        par: &dyn Parallel,
    ) {
        if let Some(t) = norm {
            let (w, eps) = (t.data(&self.bufs), self.config.rms_eps);
            par.for_each_chunk(rows, d, &|_, row| rms_norm(row, w, eps));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_tanh_matches_its_definition() {
        for x in [-6.0f64, -1.5, -0.3, 0.0, 0.4, 1.0, 2.5, 9.0] {
            let want = 0.5
                * x
                * (1.0
                    + ((2.0 / core::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh());
            let got = gelu_tanh(x as f32) as f64;
            assert!(
                (got - want).abs() < 1e-6 * (1.0 + want.abs()),
                "{x}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn softcap_bounds_and_keeps_small_values() {
        let mut x = [0.01f32, -1000.0, 1000.0, 30.0];
        softcap(&mut x, 30.0);
        assert!((x[0] - 0.01).abs() < 1e-6);
        assert!(x[1] >= -30.0 && x[1] < -29.99);
        assert!(x[2] <= 30.0 && x[2] > 29.99);
        assert!((x[3] - 30.0 * 1f32.tanh()).abs() < 1e-5);
    }
}
