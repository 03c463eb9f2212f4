//! The kernel table a shell selects once from the CPU's detected features.

use crate::act::{ActBatch, ActQ8};
use crate::formats::WeightType;
use crate::scalar;

/// A matrix-vector kernel over int8-quantized activations (see [`crate::scalar`]).
pub type MatVecFn = fn(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]);
/// A matrix × several-vectors kernel over int8 activations (prefill): `out[t · rows + r] =
/// row_r · token_t` with `rows = out.len() / a.n`; results equal the matrix-vector kernel's.
pub type GemmFn = fn(w: &[u8], row_bytes: usize, a: &ActBatch<'_>, out: &mut [f32]);
/// A matrix-vector kernel over `f32` activations.
pub type MatVecF32Fn = fn(w: &[u8], row_bytes: usize, x: &[f32], out: &mut [f32]);
/// A matrix × several-vectors kernel over `f32` activations: `x` holds `n` vectors of
/// `x.len() / n` and `out[t · rows + r] = row_r · x_t` with `rows = out.len() / n` (see
/// [`scalar::gemm_f32`]).
pub type GemmF32Fn = fn(w: &[u8], row_bytes: usize, x: &[f32], n: usize, out: &mut [f32]);
/// An element-wise activation in place.
pub type GeluFn = fn(x: &mut [f32]);
/// Softmax numerators in place, returning their sum (see [`crate::math::exp_shifted`]).
pub type ExpShiftedFn = fn(x: &mut [f32], max: f32, scale: f32) -> f32;
/// Attention scores of several query heads against a block of f16 keys (see
/// [`scalar::scores_f16`]).
pub type ScoresF16Fn = fn(k: &[u16], q: &[f32], hd: usize, scores: &mut [f32]);
/// Weighted sums of a block of f16 values for several heads (see [`scalar::mix_f16`]).
pub type MixF16Fn = fn(w: &[f32], v: &[u16], hd: usize, acc: &mut [f32]);
/// Activation quantization with one absmax scale per `group` elements (as
/// [`crate::act::quantize_groups`]).
pub type QuantizeGroupsFn =
    fn(x: &[f32], block: usize, group: usize, qs: &mut [i8], d: &mut [f32], sums: &mut [i32]);
/// Activation quantization with one absmax scale for the vector (as
/// [`crate::act::quantize_per_token`]).
pub type QuantizePerTokenFn =
    fn(x: &[f32], block: usize, qs: &mut [i8], d: &mut [f32], sums: &mut [i32]);

/// CPU features the SIMD paths use, as detected at run time by the std shell.
///
/// AMX is deliberately absent: it must never be enabled from `cpuid` alone (it needs an OS
/// permission request, and some CPUs advertise it but fault when it is used).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// x86-64 AVX2.
    pub avx2: bool,
    /// x86-64 FMA3.
    pub fma: bool,
    /// x86-64 F16C (half-precision conversions).
    pub f16c: bool,
    /// x86-64 AVX-512 Foundation.
    pub avx512f: bool,
    /// x86-64 AVX-512 byte/word instructions.
    pub avx512bw: bool,
    /// x86-64 AVX-512 vector-length extensions.
    pub avx512vl: bool,
    /// x86-64 AVX-512 VNNI (`vpdpbusd`).
    pub avx512vnni: bool,
    /// x86-64 AVX-512 VBMI (`vpermb`).
    pub avx512vbmi: bool,
    /// x86-64 AVX-VNNI (VEX `vpdpbusd` on 256-bit registers; Alder Lake and later clients).
    pub avxvnni: bool,
    /// aarch64 Advanced SIMD.
    pub neon: bool,
    /// aarch64 `sdot`/`udot` (FEAT_DotProd).
    pub dotprod: bool,
}

impl CpuFeatures {
    /// Features present in both `self` and `other`.
    pub fn and(self, other: CpuFeatures) -> CpuFeatures {
        CpuFeatures {
            avx2: self.avx2 && other.avx2,
            fma: self.fma && other.fma,
            f16c: self.f16c && other.f16c,
            avx512f: self.avx512f && other.avx512f,
            avx512bw: self.avx512bw && other.avx512bw,
            avx512vl: self.avx512vl && other.avx512vl,
            avx512vnni: self.avx512vnni && other.avx512vnni,
            avx512vbmi: self.avx512vbmi && other.avx512vbmi,
            avxvnni: self.avxvnni && other.avxvnni,
            neon: self.neon && other.neon,
            dotprod: self.dotprod && other.dotprod,
        }
    }

    /// Features this crate can verify without the OS: `cpuid` + `xgetbv` on x86-64; the
    /// compile-time baseline (NEON, and dotprod if compiled in) on aarch64; none elsewhere.
    pub fn verified() -> CpuFeatures {
        #[cfg(target_arch = "x86_64")]
        {
            crate::x86::cpuid_features()
        }
        #[cfg(target_arch = "aarch64")]
        {
            CpuFeatures {
                neon: cfg!(target_feature = "neon"),
                dotprod: cfg!(target_feature = "neon") && cfg!(target_feature = "dotprod"),
                ..CpuFeatures::default()
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            CpuFeatures::default()
        }
    }
}

/// Kernels over ternary weights repacked into 16-row tiles (see [`crate::ternary_tiles`]).
#[derive(Clone, Copy)]
pub struct TileKernels {
    /// The layout these kernels read.
    pub layout: crate::ternary_tiles::TileLayout,
    /// Tiled ternary matrix × int8 vector.
    pub matvec: MatVecFn,
    /// Tiled ternary matrix × several int8 vectors.
    pub gemm: GemmFn,
}

impl core::fmt::Debug for TileKernels {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TileKernels").finish_non_exhaustive()
    }
}

impl TileKernels {
    /// The scalar reference kernels for the tiled layout.
    pub fn scalar() -> TileKernels {
        TileKernels {
            layout: crate::ternary_tiles::TileLayout::Tiles16,
            matvec: crate::ternary_tiles::matvec,
            gemm: crate::ternary_tiles::gemm,
        }
    }

    /// TQ1_0 re-encoded as TQ2_0 ([`TileLayout::Tq2Rows`]), run by a table's TQ2_0 kernels.
    ///
    /// [`TileLayout::Tq2Rows`]: crate::ternary_tiles::TileLayout::Tq2Rows
    pub fn tq2_rows(k: &Kernels) -> TileKernels {
        TileKernels {
            layout: crate::ternary_tiles::TileLayout::Tq2Rows,
            matvec: k.tq2_0,
            gemm: k.gemm_tq2_0,
        }
    }
}

/// Function pointers for every kernel, all with the semantics of the scalar reference.
// `Debug` is written by hand: Rust 1.63 has no `Debug` for higher-ranked fn pointers.
#[derive(Clone, Copy)]
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
    /// F32 matrix × several f32 vectors.
    pub gemm_f32: GemmF32Fn,
    /// F16 matrix × several f32 vectors.
    pub gemm_f16: GemmF32Fn,
    /// BF16 matrix × several f32 vectors.
    pub gemm_bf16: GemmF32Fn,
    /// The exact (erf) GELU, bit-identical on every path.
    pub gelu_erf: GeluFn,
    /// Softmax numerators and their sum, bit-identical on every path.
    pub exp_shifted: ExpShiftedFn,
    /// Scores of the query heads sharing a key head, over a block of keys.
    pub scores_f16: ScoresF16Fn,
    /// Softmax-weighted value sums of those heads, over a block of values.
    pub mix_f16: MixF16Fn,
    /// Activations to int8 codes, a scale per group, bit-identical on every path.
    pub quantize_groups: QuantizeGroupsFn,
    /// Activations to int8 codes, one scale per token, bit-identical on every path.
    pub quantize_per_token: QuantizePerTokenFn,
    /// Q8_0 matrix × several int8 vectors.
    pub gemm_q8_0: GemmFn,
    /// Q4_0 matrix × several int8 vectors.
    pub gemm_q4_0: GemmFn,
    /// Q4_1 matrix × several int8 vectors.
    pub gemm_q4_1: GemmFn,
    /// TQ1_0 matrix × several int8 vectors.
    pub gemm_tq1_0: GemmFn,
    /// TQ2_0 matrix × several int8 vectors.
    pub gemm_tq2_0: GemmFn,
    /// I2_S matrix × several int8 vectors (unscaled).
    pub gemm_i2s: GemmFn,
    /// Q5_0 matrix × int8 vector.
    pub q5_0: MatVecFn,
    /// Q5_1 matrix × int8 vector.
    pub q5_1: MatVecFn,
    /// Q2_K matrix × int8 vector.
    pub q2_k: MatVecFn,
    /// Q3_K matrix × int8 vector.
    pub q3_k: MatVecFn,
    /// Q4_K matrix × int8 vector.
    pub q4_k: MatVecFn,
    /// Q5_K matrix × int8 vector.
    pub q5_k: MatVecFn,
    /// Q6_K matrix × int8 vector.
    pub q6_k: MatVecFn,
    /// IQ4_NL matrix × int8 vector.
    pub iq4_nl: MatVecFn,
    /// IQ4_XS matrix × int8 vector.
    pub iq4_xs: MatVecFn,
    /// Q5_0 matrix × several int8 vectors.
    pub gemm_q5_0: GemmFn,
    /// Q5_1 matrix × several int8 vectors.
    pub gemm_q5_1: GemmFn,
    /// Q2_K matrix × several int8 vectors.
    pub gemm_q2_k: GemmFn,
    /// Q3_K matrix × several int8 vectors.
    pub gemm_q3_k: GemmFn,
    /// Q4_K matrix × several int8 vectors.
    pub gemm_q4_k: GemmFn,
    /// Q5_K matrix × several int8 vectors.
    pub gemm_q5_k: GemmFn,
    /// Q6_K matrix × several int8 vectors.
    pub gemm_q6_k: GemmFn,
    /// IQ4_NL matrix × several int8 vectors.
    pub gemm_iq4_nl: GemmFn,
    /// IQ4_XS matrix × several int8 vectors.
    pub gemm_iq4_xs: GemmFn,
    /// Kernels for ternary weights repacked into tiles, on paths where they beat the file
    /// layouts' kernels; `None` keeps ternary models in the file's layout.
    pub ternary_tiles: Option<TileKernels>,
}

impl core::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Kernels")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
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
            gemm_f32: scalar::gemm_f32,
            gemm_f16: scalar::gemm_f16,
            gemm_bf16: scalar::gemm_bf16,
            gelu_erf: scalar::gelu_erf,
            exp_shifted: scalar::exp_shifted,
            scores_f16: scalar::scores_f16,
            mix_f16: scalar::mix_f16,
            quantize_groups: crate::act::quantize_groups,
            quantize_per_token: crate::act::quantize_per_token,
            gemm_q8_0: scalar::gemm_q8_0,
            gemm_q4_0: scalar::gemm_q4_0,
            gemm_q4_1: scalar::gemm_q4_1,
            gemm_tq1_0: scalar::gemm_tq1_0,
            gemm_tq2_0: scalar::gemm_tq2_0,
            gemm_i2s: scalar::gemm_i2s,
            q5_0: crate::q5::matvec_q5_0,
            q5_1: crate::q5::matvec_q5_1,
            q2_k: crate::q2_k::matvec,
            q3_k: crate::q3_k::matvec,
            q4_k: crate::q4_k::matvec,
            q5_k: crate::q5_k::matvec,
            q6_k: crate::q6_k::matvec,
            iq4_nl: crate::iq4::matvec_nl,
            iq4_xs: crate::iq4::matvec_xs,
            gemm_q5_0: scalar::gemm_q5_0,
            gemm_q5_1: scalar::gemm_q5_1,
            gemm_q2_k: scalar::gemm_q2_k,
            gemm_q3_k: scalar::gemm_q3_k,
            gemm_q4_k: scalar::gemm_q4_k,
            gemm_q5_k: scalar::gemm_q5_k,
            gemm_q6_k: scalar::gemm_q6_k,
            gemm_iq4_nl: scalar::gemm_iq4_nl,
            gemm_iq4_xs: scalar::gemm_iq4_xs,
            ternary_tiles: None,
        }
    }

    /// This table with TQ1_0 projections re-encoded as TQ2_0 at load and run by its TQ2_0
    /// kernels ([`TileKernels::tq2_rows`]): for paths whose TQ1_0 kernels decode base-3 digits
    /// slower than memory delivers them.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    fn with_tq1_as_tq2(self) -> Kernels {
        Kernels {
            ternary_tiles: Some(TileKernels::tq2_rows(&self)),
            ..self
        }
    }

    /// AVX2 kernels (with FMA and F16C) where they exist, scalar elsewhere.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C (and the OS must have enabled AVX state). Calling
    /// any of the table's functions on a CPU without them is undefined behaviour.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn avx2() -> Kernels {
        use crate::x86;
        Kernels {
            name: "avx2",
            q8_0: x86::avx2_q8_0,
            q4_0: x86::avx2_q4_0,
            q4_1: x86::avx2_q4_1,
            tq1_0: x86::avx2_tq1_0,
            tq2_0: x86::avx2_tq2_0,
            i2s: x86::avx2_i2s,
            f32: x86::avx2_f32,
            f16: x86::avx2_f16,
            bf16: x86::avx2_bf16,
            gemm_f32: x86::avx2_gemm_f32,
            gemm_f16: x86::avx2_gemm_f16,
            gemm_bf16: x86::avx2_gemm_bf16,
            gelu_erf: x86::avx2_gelu_erf,
            exp_shifted: x86::avx2_exp_shifted,
            scores_f16: x86::avx2_scores_f16,
            mix_f16: x86::avx2_mix_f16,
            quantize_groups: x86::avx2_quantize_groups,
            quantize_per_token: x86::avx2_quantize_per_token,
            gemm_q8_0: x86::avx2_gemm_q8_0,
            gemm_q4_0: x86::avx2_gemm_q4_0,
            gemm_q4_1: x86::avx2_gemm_q4_1,
            gemm_tq1_0: x86::avx2_gemm_tq1_0,
            gemm_tq2_0: x86::avx2_gemm_tq2_0,
            gemm_i2s: x86::avx2_gemm_i2s,
            q5_0: x86::avx2_q5_0,
            q5_1: x86::avx2_q5_1,
            q2_k: x86::avx2_q2_k,
            q3_k: x86::avx2_q3_k,
            q4_k: x86::avx2_q4_k,
            q5_k: x86::avx2_q5_k,
            q6_k: x86::avx2_q6_k,
            iq4_nl: x86::avx2_iq4_nl,
            iq4_xs: x86::avx2_iq4_xs,
            gemm_q5_0: x86::avx2_gemm_q5_0,
            gemm_q5_1: x86::avx2_gemm_q5_1,
            gemm_q2_k: x86::avx2_gemm_q2_k,
            gemm_q3_k: x86::avx2_gemm_q3_k,
            gemm_q4_k: x86::avx2_gemm_q4_k,
            gemm_q5_k: x86::avx2_gemm_q5_k,
            gemm_q6_k: x86::avx2_gemm_q6_k,
            gemm_iq4_nl: x86::avx2_gemm_iq4_nl,
            gemm_iq4_xs: x86::avx2_gemm_iq4_xs,
            ternary_tiles: None,
        }
        .with_tq1_as_tq2()
    }

    /// The AVX2 kernels with AVX-VNNI multi-token kernels (`vpdpbusd` on ymm) for the ternary,
    /// Q4, Q5 and Q8_0 formats, for CPUs that have AVX-VNNI but not AVX-512.
    ///
    /// # Safety
    /// As [`Kernels::avx2`], and the CPU must also support AVX-VNNI.
    #[cfg(all(target_arch = "x86_64", trillim_avx512))]
    pub unsafe fn avxvnni() -> Kernels {
        use crate::x86;
        Kernels {
            name: "avxvnni",
            gemm_q8_0: x86::avxvnni_gemm_q8_0,
            gemm_q4_0: x86::avxvnni_gemm_q4_0,
            gemm_q4_1: x86::avxvnni_gemm_q4_1,
            gemm_tq1_0: x86::avxvnni_gemm_tq1_0,
            gemm_tq2_0: x86::avxvnni_gemm_tq2_0,
            gemm_i2s: x86::avxvnni_gemm_i2s,
            gemm_q5_0: x86::avxvnni_gemm_q5_0,
            gemm_q5_1: x86::avxvnni_gemm_q5_1,
            // SAFETY: the caller's contract includes AVX2, FMA and F16C.
            ..unsafe { Kernels::avx2() }
        }
        .with_tq1_as_tq2()
    }

    /// AVX-512 VNNI kernels (`vpdpbusd`) for the int8 formats, AVX2 for the rest.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW, VL and VNNI as well as AVX2, FMA and F16C, and the OS
    /// must have enabled AVX-512 state.
    #[cfg(all(target_arch = "x86_64", trillim_avx512))]
    pub unsafe fn avx512vnni() -> Kernels {
        use crate::{x86, x86_gemm};
        Kernels {
            name: "avx512vnni",
            q8_0: x86::vnni_q8_0,
            q4_0: x86::vnni_q4_0,
            q4_1: x86::vnni_q4_1,
            tq1_0: x86::vnni_tq1_0,
            tq2_0: x86::vnni_tq2_0,
            i2s: x86::vnni_i2s,
            gemm_q8_0: x86_gemm::vnni_gemm_q8_0,
            gemm_q4_0: x86_gemm::vnni_gemm_q4_0,
            gemm_q4_1: x86_gemm::vnni_gemm_q4_1,
            gemm_tq1_0: x86_gemm::vnni_gemm_tq1_0,
            gemm_tq2_0: x86_gemm::vnni_gemm_tq2_0,
            gemm_i2s: x86_gemm::vnni_gemm_i2s,
            gemm_q5_0: x86_gemm::vnni_gemm_q5_0,
            gemm_q5_1: x86_gemm::vnni_gemm_q5_1,
            gemm_iq4_nl: x86_gemm::vnni_gemm_iq4_nl,
            gemm_q4_k: crate::x86_gemm_k::vnni_gemm_q4_k,
            gemm_q6_k: crate::x86_gemm_k::vnni_gemm_q6_k,
            quantize_groups: x86::avx512_quantize_groups,
            quantize_per_token: x86::avx512_quantize_per_token,
            // SAFETY: the caller's contract includes AVX2, FMA and F16C.
            ..unsafe { Kernels::avx2() }
        }
        .with_tq1_as_tq2()
    }

    /// The AVX-512 VNNI kernels plus `vpermb` kernels over tiled ternary weights.
    ///
    /// # Safety
    /// As [`Kernels::avx512vnni`], and the CPU must also support AVX-512 VBMI.
    #[cfg(all(target_arch = "x86_64", trillim_avx512))]
    pub unsafe fn avx512vbmi() -> Kernels {
        use crate::x86_tiles;
        Kernels {
            name: "avx512vbmi",
            ternary_tiles: Some(TileKernels {
                layout: crate::ternary_tiles::TileLayout::Tiles16,
                matvec: x86_tiles::vbmi_tiles,
                gemm: x86_tiles::vbmi_gemm_tiles,
            }),
            // SAFETY: the caller's contract includes every AVX-512 VNNI path feature.
            ..unsafe { Kernels::avx512vnni() }
        }
    }

    /// NEON kernels for the ternary formats, Q8_0 and llama.cpp's later block formats, scalar
    /// elsewhere.
    ///
    /// # Safety
    /// The CPU must support NEON (every aarch64 Linux/macOS target does).
    #[cfg(target_arch = "aarch64")]
    pub unsafe fn neon() -> Kernels {
        use crate::{aarch64, aarch64_blocks};
        Kernels {
            name: "neon",
            q8_0: aarch64::neon_q8_0,
            tq1_0: aarch64::neon_tq1_0,
            tq2_0: aarch64::neon_tq2_0,
            i2s: aarch64::neon_i2s,
            gemm_q8_0: aarch64::neon_gemm_q8_0,
            gemm_tq1_0: aarch64::neon_gemm_tq1_0,
            gemm_tq2_0: aarch64::neon_gemm_tq2_0,
            gemm_i2s: aarch64::neon_gemm_i2s,
            scores_f16: aarch64::neon_scores_f16,
            mix_f16: aarch64::neon_mix_f16,
            q5_0: aarch64_blocks::neon_q5_0,
            q5_1: aarch64_blocks::neon_q5_1,
            iq4_nl: aarch64_blocks::neon_iq4_nl,
            iq4_xs: aarch64_blocks::neon_iq4_xs,
            q2_k: aarch64_blocks::neon_q2_k,
            q3_k: aarch64_blocks::neon_q3_k,
            q4_k: aarch64_blocks::neon_q4_k,
            q5_k: aarch64_blocks::neon_q5_k,
            q6_k: aarch64_blocks::neon_q6_k,
            gemm_q5_0: aarch64_blocks::neon_gemm_q5_0,
            gemm_q5_1: aarch64_blocks::neon_gemm_q5_1,
            gemm_iq4_nl: aarch64_blocks::neon_gemm_iq4_nl,
            gemm_iq4_xs: aarch64_blocks::neon_gemm_iq4_xs,
            gemm_q2_k: aarch64_blocks::neon_gemm_q2_k,
            gemm_q3_k: aarch64_blocks::neon_gemm_q3_k,
            gemm_q4_k: aarch64_blocks::neon_gemm_q4_k,
            gemm_q5_k: aarch64_blocks::neon_gemm_q5_k,
            gemm_q6_k: aarch64_blocks::neon_gemm_q6_k,
            ..Kernels::scalar()
        }
        .with_tq1_as_tq2()
    }

    /// `sdot` kernels for the ternary formats, Q8_0 and llama.cpp's later block formats, scalar
    /// elsewhere.
    ///
    /// # Safety
    /// The CPU must support NEON and the dot-product extension (FEAT_DotProd).
    #[cfg(target_arch = "aarch64")]
    pub unsafe fn dotprod() -> Kernels {
        use crate::{aarch64, aarch64_blocks};
        Kernels {
            name: "dotprod",
            q8_0: aarch64::dot_q8_0,
            tq1_0: aarch64::dot_tq1_0,
            tq2_0: aarch64::dot_tq2_0,
            i2s: aarch64::dot_i2s,
            gemm_q8_0: aarch64::dot_gemm_q8_0,
            gemm_tq1_0: aarch64::dot_gemm_tq1_0,
            gemm_tq2_0: aarch64::dot_gemm_tq2_0,
            gemm_i2s: aarch64::dot_gemm_i2s,
            scores_f16: aarch64::neon_scores_f16,
            mix_f16: aarch64::neon_mix_f16,
            q5_0: aarch64_blocks::dot_q5_0,
            q5_1: aarch64_blocks::dot_q5_1,
            iq4_nl: aarch64_blocks::dot_iq4_nl,
            iq4_xs: aarch64_blocks::dot_iq4_xs,
            q2_k: aarch64_blocks::dot_q2_k,
            q3_k: aarch64_blocks::dot_q3_k,
            q4_k: aarch64_blocks::dot_q4_k,
            q5_k: aarch64_blocks::dot_q5_k,
            q6_k: aarch64_blocks::dot_q6_k,
            gemm_q5_0: aarch64_blocks::dot_gemm_q5_0,
            gemm_q5_1: aarch64_blocks::dot_gemm_q5_1,
            gemm_iq4_nl: aarch64_blocks::dot_gemm_iq4_nl,
            gemm_iq4_xs: aarch64_blocks::dot_gemm_iq4_xs,
            gemm_q2_k: aarch64_blocks::dot_gemm_q2_k,
            gemm_q3_k: aarch64_blocks::dot_gemm_q3_k,
            gemm_q4_k: aarch64_blocks::dot_gemm_q4_k,
            gemm_q5_k: aarch64_blocks::dot_gemm_q5_k,
            gemm_q6_k: aarch64_blocks::dot_gemm_q6_k,
            ..Kernels::scalar()
        }
        .with_tq1_as_tq2()
    }

    /// The fastest table `features` allow.
    ///
    /// `features` normally comes from the std shell's runtime detection. On x86-64 it is
    /// intersected with this crate's own `cpuid`/`xgetbv` check, so a wrong claim can only
    /// select a slower path, never an unsupported one; on aarch64 NEON is part of the baseline
    /// and the dotprod path is chosen only when the crate is compiled with `dotprod` enabled
    /// (use [`Kernels::best_for_trusted`] to pass runtime-detected dotprod support).
    ///
    /// AMX is never used: enabling it needs an OS permission request, and some CPUs advertise
    /// it in `cpuid` yet fault on use, so it must never be turned on from `cpuid` alone.
    pub fn best_for(features: CpuFeatures) -> Kernels {
        let checked = features.and(CpuFeatures::verified());
        // SAFETY: `checked` only holds features this function verified on the running CPU.
        unsafe { Kernels::best_for_trusted(checked) }
    }

    /// Like [`Kernels::best_for`] but trusts `features` without re-checking them.
    ///
    /// # Safety
    /// Every feature set in `features` must be supported by the running CPU and enabled by the
    /// OS (as `std::is_x86_feature_detected!` / `std::arch::is_aarch64_feature_detected!`
    /// report).
    // Rust 1.63 sees the inner `unsafe` blocks as redundant; newer lints require them.
    #[allow(unused_variables, unused_unsafe)]
    pub unsafe fn best_for_trusted(features: CpuFeatures) -> Kernels {
        let f = features;
        #[cfg(all(target_arch = "x86_64", trillim_avx512))]
        if f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni {
            if f.avx512vbmi {
                // SAFETY: the caller guarantees every listed feature.
                return unsafe { Kernels::avx512vbmi() };
            }
            // SAFETY: the caller guarantees every listed feature.
            return unsafe { Kernels::avx512vnni() };
        }
        #[cfg(all(target_arch = "x86_64", trillim_avx512))]
        if f.avx2 && f.fma && f.f16c && f.avxvnni {
            // SAFETY: the caller guarantees AVX2, FMA, F16C and AVX-VNNI.
            return unsafe { Kernels::avxvnni() };
        }
        #[cfg(target_arch = "x86_64")]
        if f.avx2 && f.fma && f.f16c {
            // SAFETY: the caller guarantees AVX2, FMA and F16C.
            return unsafe { Kernels::avx2() };
        }
        #[cfg(target_arch = "aarch64")]
        if f.neon && f.dotprod {
            // SAFETY: the caller guarantees NEON and dotprod.
            return unsafe { Kernels::dotprod() };
        }
        #[cfg(target_arch = "aarch64")]
        if f.neon {
            // SAFETY: the caller guarantees NEON.
            return unsafe { Kernels::neon() };
        }
        Kernels::scalar()
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
            WeightType::Q5_0 => self.q5_0,
            WeightType::Q5_1 => self.q5_1,
            WeightType::Q2_K => self.q2_k,
            WeightType::Q3_K => self.q3_k,
            WeightType::Q4_K => self.q4_k,
            WeightType::Q5_K => self.q5_k,
            WeightType::Q6_K => self.q6_k,
            WeightType::IQ4_NL => self.iq4_nl,
            WeightType::IQ4_XS => self.iq4_xs,
            WeightType::F32 | WeightType::F16 | WeightType::BF16 => return None,
        })
    }

    /// The multi-token int8-activation kernel for `ty`, or `None` if `ty` takes `f32`
    /// activations.
    pub fn gemm_q8(&self, ty: WeightType) -> Option<GemmFn> {
        Some(match ty {
            WeightType::Q8_0 => self.gemm_q8_0,
            WeightType::Q4_0 => self.gemm_q4_0,
            WeightType::Q4_1 => self.gemm_q4_1,
            WeightType::TQ1_0 => self.gemm_tq1_0,
            WeightType::TQ2_0 => self.gemm_tq2_0,
            WeightType::I2S => self.gemm_i2s,
            WeightType::Q5_0 => self.gemm_q5_0,
            WeightType::Q5_1 => self.gemm_q5_1,
            WeightType::Q2_K => self.gemm_q2_k,
            WeightType::Q3_K => self.gemm_q3_k,
            WeightType::Q4_K => self.gemm_q4_k,
            WeightType::Q5_K => self.gemm_q5_k,
            WeightType::Q6_K => self.gemm_q6_k,
            WeightType::IQ4_NL => self.gemm_iq4_nl,
            WeightType::IQ4_XS => self.gemm_iq4_xs,
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

    /// The several-vector `f32`-activation kernel for `ty`, or `None` if `ty` takes int8
    /// activations.
    pub fn gemm_f32(&self, ty: WeightType) -> Option<GemmF32Fn> {
        Some(match ty {
            WeightType::F32 => self.gemm_f32,
            WeightType::F16 => self.gemm_f16,
            WeightType::BF16 => self.gemm_bf16,
            _ => return None,
        })
    }
}
