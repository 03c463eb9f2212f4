//! aarch64 SIMD kernels (NEON, dotprod). Each is checked against [`crate::scalar`].
