//! CPU features and the kernel set the engine runs with.

use trillim_kernels::{CpuFeatures, Kernels};

/// The fastest kernels this CPU can run (or the set forced by `TRILLIM_KERNELS`).
pub fn kernels() -> Kernels {
    trillim_runtime::cpu::best_kernels()
}

/// SIMD features detected on this CPU.
pub fn features() -> CpuFeatures {
    trillim_runtime::cpu::detect()
}

/// Detected features as a list of names.
pub fn feature_names(f: &CpuFeatures) -> Vec<&'static str> {
    let all = [
        ("avx2", f.avx2),
        ("fma", f.fma),
        ("f16c", f.f16c),
        ("avx512f", f.avx512f),
        ("avx512bw", f.avx512bw),
        ("avx512vl", f.avx512vl),
        ("avx512vnni", f.avx512vnni),
        ("avx512vbmi", f.avx512vbmi),
        ("avxvnni", f.avxvnni),
        ("neon", f.neon),
        ("dotprod", f.dotprod),
    ];
    all.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect()
}
