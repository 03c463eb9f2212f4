//! x86-64 SIMD kernels (AVX2, AVX-512 VNNI). Each is checked against [`crate::scalar`].
