//! CPU feature detection and kernel selection.
//!
//! `TRILLIM_KERNELS=scalar|avx2|avxvnni|avx512vnni|avx512vbmi|neon|dotprod` forces a kernel path; a path the CPU
//! cannot run is reported on stderr and the best supported one is used instead.
//!
//! AMX is never enabled: it needs an OS permission request and some CPUs advertise it in
//! `cpuid` yet fault on use, so it must not be turned on from `cpuid` alone.

use trillim_kernels::{CpuFeatures, Kernels};

/// The SIMD features of the running CPU that the kernels can use.
pub fn detect() -> CpuFeatures {
    #[allow(unused_mut)]
    let mut f = CpuFeatures::default();
    #[cfg(target_arch = "x86_64")]
    {
        f.avx2 = std::is_x86_feature_detected!("avx2");
        f.fma = std::is_x86_feature_detected!("fma");
        f.f16c = std::is_x86_feature_detected!("f16c");
        f.avx512f = std::is_x86_feature_detected!("avx512f");
        f.avx512bw = std::is_x86_feature_detected!("avx512bw");
        f.avx512vl = std::is_x86_feature_detected!("avx512vl");
        f.avx512vnni = std::is_x86_feature_detected!("avx512vnni");
        f.avx512vbmi = std::is_x86_feature_detected!("avx512vbmi");
        f.avxvnni = std::is_x86_feature_detected!("avxvnni");
    }
    #[cfg(target_arch = "aarch64")]
    {
        f.neon = std::arch::is_aarch64_feature_detected!("neon");
        f.dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
    }
    f
}

/// The features a named path needs, or `None` for an unknown name.
fn required(name: &str) -> Option<CpuFeatures> {
    let none = CpuFeatures::default();
    Some(match name {
        "scalar" => none,
        "avx2" => CpuFeatures {
            avx2: true,
            fma: true,
            f16c: true,
            ..none
        },
        "avxvnni" => CpuFeatures {
            avxvnni: true,
            ..required("avx2")?
        },
        "avx512vnni" => CpuFeatures {
            avx2: true,
            fma: true,
            f16c: true,
            avx512f: true,
            avx512bw: true,
            avx512vl: true,
            avx512vnni: true,
            ..none
        },
        "avx512vbmi" => CpuFeatures {
            avx512vbmi: true,
            ..required("avx512vnni")?
        },
        "neon" => CpuFeatures { neon: true, ..none },
        "dotprod" => CpuFeatures {
            neon: true,
            dotprod: true,
            ..none
        },
        _ => return None,
    })
}

/// The fastest kernels for this CPU, or the path named by `TRILLIM_KERNELS` if it can run here.
pub fn best_kernels() -> Kernels {
    let detected = detect();
    // SAFETY: `detected` comes from the standard library's runtime feature detection.
    let best = unsafe { Kernels::best_for_trusted(detected) };
    let forced = match std::env::var("TRILLIM_KERNELS") {
        Ok(v) if !v.is_empty() => v,
        _ => return best,
    };
    let Some(need) = required(&forced) else {
        eprintln!(
            "trillim: unknown TRILLIM_KERNELS={forced:?} \
             (expected scalar, avx2, avxvnni, avx512vnni, avx512vbmi, neon or dotprod); using {}",
            best.name
        );
        return best;
    };
    if need.and(detected) != need {
        eprintln!(
            "trillim: TRILLIM_KERNELS={forced} is not supported by this CPU or build; using {}",
            best.name
        );
        return best;
    }
    // SAFETY: `need ⊆ detected`, and `need` holds exactly the features of the forced path.
    let k = unsafe { Kernels::best_for_trusted(need) };
    if k.name != forced {
        eprintln!(
            "trillim: TRILLIM_KERNELS={forced} is not available in this build; using {}",
            k.name
        );
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_paths() {
        for name in [
            "scalar",
            "avx2",
            "avx512vnni",
            "avx512vbmi",
            "neon",
            "dotprod",
        ] {
            let need = required(name).unwrap();
            if need.and(detect()) == need {
                // SAFETY: every feature in `need` was detected.
                let k = unsafe { Kernels::best_for_trusted(need) };
                assert!(
                    k.name == name
                        || k.name == "scalar"
                        || k.name == "avx2"
                        || k.name == "avx512vnni",
                    "{name}"
                );
            }
        }
        assert!(required("amx").is_none());
        let k = best_kernels();
        assert!(!k.name.is_empty());
    }
}
