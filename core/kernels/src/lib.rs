//! Weight formats and dot-product kernels for trillim.
//!
//! This crate has no dependencies and compiles with Rust 1.63 so that the same code can be
//! cross-compiled for ARM boards with older distribution toolchains.
//!
//! * [`formats`] describes the byte layout of every supported weight type and holds the scalar
//!   dequantizers; the block formats of llama.cpp beyond the first ones have a module each
//!   ([`q5`], [`q2_k`], [`q3_k`], [`q4_k`], [`q5_k`], [`q6_k`], [`iq4`]) with their layout,
//!   dequantizer and reference dot product.
//! * [`ternary_tiles`] is a load-time re-layout of TQ1_0 weights for byte-permute kernels.
//! * [`act`] quantizes activations to int8 blocks ([`ActQ8`]).
//! * [`scalar`] holds the reference kernels; `x86` and `aarch64` hold SIMD kernels with the same
//!   signatures, each tested against the reference.
//! * [`Kernels`] is a table of function pointers; the shell picks one with detected CPU features.
#![no_std]
#![warn(missing_docs)]

pub mod act;
pub mod f16;
pub mod formats;
pub mod iq4;
pub mod math;
pub mod q2_k;
pub mod q3_k;
pub mod q4_k;
pub mod q5;
pub mod q5_k;
pub mod q6_k;
pub mod quantize;
pub mod scalar;
mod table;
pub mod ternary_tiles;

#[cfg(target_arch = "x86_64")]
pub mod x86;

#[cfg(all(target_arch = "x86_64", trillim_avx512))]
mod x86_gemm;

#[cfg(all(target_arch = "x86_64", trillim_avx512))]
mod x86_gemm_k;

#[cfg(all(target_arch = "x86_64", trillim_avx512))]
mod x86_tiles;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;

#[cfg(target_arch = "aarch64")]
mod aarch64_blocks;

pub use act::{ActBatch, ActQ8};
pub use formats::WeightType;
pub use table::{
    CpuFeatures, ExpShiftedFn, GeluFn, GemmF32Fn, GemmFn, Kernels, MatVecF32Fn, MatVecFn, MixF16Fn,
    ScoresF16Fn, TileKernels,
};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_formats;
#[cfg(test)]
mod tests_quantize;
