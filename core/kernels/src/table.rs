//! The kernel table a shell selects once from the CPU's detected features.

use crate::act::ActQ8;
use crate::formats::WeightType;
use crate::scalar;

/// A matrix-vector kernel over int8-quantized activations (see [`crate::scalar`]).
pub type MatVecFn = fn(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]);
/// A matrix-vector kernel over `f32` activations.
pub type MatVecF32Fn = fn(w: &[u8], row_bytes: usize, x: &[f32], out: &mut [f32]);

/// Function pointers for every kernel, all with the semantics of the scalar reference.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    /// Human-readable name of the selected path (e.g. `"avx512vnni"`).
    pub name: &'static str,
    /// Q8_0 matrix × int8 vector.
    pub q8_0: MatVecFn,
    /// Q4_0 matrix × int8 vector.
    pub q4_0: MatVecFn,
    /// Q4_1 matrix × int8 vector.
    pub q4_1: MatVecFn,
    /// TQ1_0 matrix × int8 vector.
    pub tq1_0: MatVecFn,
    /// TQ2_0 matrix × int8 vector.
    pub tq2_0: MatVecFn,
    /// I2_S matrix × int8 vector (unscaled).
    pub i2s: MatVecFn,
    /// F32 matrix × f32 vector.
    pub f32: MatVecF32Fn,
    /// F16 matrix × f32 vector.
    pub f16: MatVecF32Fn,
    /// BF16 matrix × f32 vector.
    pub bf16: MatVecF32Fn,
    /// f16 · f32 dot product (attention scores).
    pub dot_f16: fn(&[u16], &[f32]) -> f32,
    /// `out += a · v` with f16 `v` (attention values).
    pub axpy_f16: fn(f32, &[u16], &mut [f32]),
}

impl Kernels {
    /// The portable scalar reference kernels.
    pub fn scalar() -> Kernels {
        Kernels {
            name: "scalar",
            q8_0: scalar::matvec_q8_0,
            q4_0: scalar::matvec_q4_0,
            q4_1: scalar::matvec_q4_1,
            tq1_0: scalar::matvec_tq1_0,
            tq2_0: scalar::matvec_tq2_0,
            i2s: scalar::matvec_i2s,
            f32: scalar::matvec_f32,
            f16: scalar::matvec_f16,
            bf16: scalar::matvec_bf16,
            dot_f16: scalar::dot_f16,
            axpy_f16: scalar::axpy_f16,
        }
    }

    /// The int8-activation kernel for `ty`, or `None` if `ty` takes `f32` activations.
    pub fn matvec_q8(&self, ty: WeightType) -> Option<MatVecFn> {
        Some(match ty {
            WeightType::Q8_0 => self.q8_0,
            WeightType::Q4_0 => self.q4_0,
            WeightType::Q4_1 => self.q4_1,
            WeightType::TQ1_0 => self.tq1_0,
            WeightType::TQ2_0 => self.tq2_0,
            WeightType::I2S => self.i2s,
            WeightType::F32 | WeightType::F16 | WeightType::BF16 => return None,
        })
    }

    /// The `f32`-activation kernel for `ty`, or `None` if `ty` takes int8 activations.
    pub fn matvec_f32(&self, ty: WeightType) -> Option<MatVecF32Fn> {
        Some(match ty {
            WeightType::F32 => self.f32,
            WeightType::F16 => self.f16,
            WeightType::BF16 => self.bf16,
            _ => return None,
        })
    }
}
