//! Every SIMD path available on the running CPU against the scalar reference.

extern crate std;

use std::vec;
use std::vec::Vec;

use crate::act::{quantize_blocks, quantize_per_token, ActBatch, ActQ8};
use crate::f16::f32_to_f16;
use crate::formats::{dequantize_row, WeightType};
use crate::{Kernels, TileKernels};

/// xorshift64* pseudo-random numbers.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in [-1, 1).
    pub(crate) fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Every SIMD table the running CPU supports (scalar excluded).
pub(crate) fn simd_paths() -> Vec<Kernels> {
    #[allow(unused_mut)]
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            // SAFETY: AVX2, FMA and F16C were detected.
            v.push(unsafe { Kernels::avx2() });
            #[cfg(trillim_avx512)]
            if std::is_x86_feature_detected!("avxvnni") {
                // SAFETY: as above, and AVX-VNNI was detected.
                v.push(unsafe { Kernels::avxvnni() });
            }
        }
        #[cfg(trillim_avx512)]
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni")
        {
            // SAFETY: every feature the path needs was detected.
            v.push(unsafe { Kernels::avx512vnni() });
            if std::is_x86_feature_detected!("avx512vbmi") {
                // SAFETY: as above, and VBMI was detected.
                v.push(unsafe { Kernels::avx512vbmi() });
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            // SAFETY: NEON was detected.
            v.push(unsafe { Kernels::neon() });
        }
        if std::arch::is_aarch64_feature_detected!("neon")
            && std::arch::is_aarch64_feature_detected!("dotprod")
        {
            // SAFETY: NEON and dotprod were detected.
            v.push(unsafe { Kernels::dotprod() });
        }
    }
    v
}

/// Random f16 scale bits: a random sign, exponent and mantissa within a normal range (or, with
/// `pow2`, an exact power of two).
fn rand_scale(rng: &mut Rng, pow2: bool) -> [u8; 2] {
    let h = if pow2 {
        let e = 12 + rng.below(6) as u16; // 2^-3 .. 2^2
        (e << 10) | if rng.below(2) == 0 { 0 } else { 0x8000 }
    } else {
        let v = rng.f32() * 2.0;
        f32_to_f16(if v == 0.0 { 0.5 } else { v })
    };
    h.to_le_bytes()
}

/// A random row of `nblocks` blocks of `ty` (every code value reachable).
fn rand_row(rng: &mut Rng, ty: WeightType, nblocks: usize, pow2: bool, out: &mut Vec<u8>) {
    for _ in 0..nblocks {
        let start = out.len();
        match ty {
            WeightType::Q8_0 => {
                out.extend_from_slice(&rand_scale(rng, pow2));
                for _ in 0..32 {
                    out.push(rng.next() as u8);
                }
            }
            WeightType::Q4_0 => {
                out.extend_from_slice(&rand_scale(rng, pow2));
                for _ in 0..16 {
                    out.push(rng.next() as u8);
                }
            }
            WeightType::Q4_1 => {
                out.extend_from_slice(&rand_scale(rng, pow2));
                out.extend_from_slice(&rand_scale(rng, pow2));
                for _ in 0..16 {
                    out.push(rng.next() as u8);
                }
            }
            WeightType::TQ2_0 => {
                // Codes 0..=2 in every 2-bit field.
                for _ in 0..64 {
                    let mut b = 0u8;
                    for l in 0..4 {
                        b |= (rng.below(3) as u8) << (2 * l);
                    }
                    out.push(b);
                }
                out.extend_from_slice(&rand_scale(rng, pow2));
            }
            WeightType::TQ1_0 => {
                // 48 bytes of 5 trits and 4 bytes of 4 trits, stored as ceil(v · 256 / 243).
                for i in 0..52 {
                    let nd = if i < 48 { 5 } else { 4 };
                    let mut v = 0u32;
                    for _ in 0..nd {
                        v = v * 3 + rng.below(3) as u32;
                    }
                    if nd == 4 {
                        v *= 3;
                    }
                    out.push(((v * 256 + 242) / 243) as u8);
                }
                out.extend_from_slice(&rand_scale(rng, pow2));
            }
            WeightType::I2S => {
                for _ in 0..32 {
                    let mut b = 0u8;
                    for l in 0..4 {
                        b |= (rng.below(3) as u8) << (2 * l);
                    }
                    out.push(b);
                }
            }
            WeightType::F32 => {
                let v = if pow2 {
                    rng.below(9) as f32 - 4.0
                } else {
                    rng.f32()
                };
                out.extend_from_slice(&v.to_le_bytes());
            }
            WeightType::F16 => {
                let v = if pow2 {
                    rng.below(9) as f32 - 4.0
                } else {
                    rng.f32()
                };
                out.extend_from_slice(&f32_to_f16(v).to_le_bytes());
            }
            WeightType::BF16 => {
                let v = if pow2 {
                    rng.below(9) as f32 - 4.0
                } else {
                    rng.f32()
                };
                out.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
            }
            // The llama.cpp block formats have their own generator (tests_formats.rs).
            other => unreachable!("{other:?}"),
        }
        debug_assert_eq!(out.len() - start, ty.block_bytes());
    }
}

/// Owned quantized activations.
struct Act {
    qs: Vec<i8>,
    d: Vec<f32>,
    sums: Vec<i32>,
    block: usize,
}

impl Act {
    fn view(&self) -> ActQ8<'_> {
        ActQ8 {
            qs: &self.qs,
            d: &self.d,
            sums: &self.sums,
            block: self.block,
        }
    }
}

/// Activations of `n` elements: mode 0 per-block absmax, 1 per-token absmax, 2 integer codes
/// with power-of-two scales (so that every path must agree exactly).
fn rand_act(rng: &mut Rng, n: usize, block: usize, mode: u32) -> Act {
    let nb = n / block;
    let mut a = Act {
        qs: vec![0; n],
        d: vec![0.0; nb],
        sums: vec![0; nb],
        block,
    };
    if mode == 2 {
        for (b, d) in a.d.iter_mut().enumerate() {
            *d = [0.25f32, 0.5, 1.0, 2.0][(b + rng.below(4) as usize) % 4];
        }
        for (i, q) in a.qs.iter_mut().enumerate() {
            // Include the extremes −128 and 127.
            *q = match rng.below(16) {
                0 => -128,
                1 => 127,
                _ => rng.next() as i8,
            };
            a.sums[i / block] += *q as i32;
        }
        return a;
    }
    let x: Vec<f32> = (0..n)
        .map(|i| {
            // Occasional outliers make per-token scales produce ±128/±127 codes.
            let v = rng.f32();
            if i % 37 == 5 {
                v * 20.0
            } else {
                v
            }
        })
        .collect();
    if mode == 0 {
        quantize_blocks(&x, block, &mut a.qs, &mut a.d, &mut a.sums);
    } else {
        quantize_per_token(&x, block, &mut a.qs, &mut a.d, &mut a.sums);
    }
    a
}

/// Σ|w_i · x_i| of row `r`, the scale the tolerance is relative to.
fn abs_dot(ty: WeightType, row: &[u8], n: usize, a: &ActQ8<'_>) -> f64 {
    let mut w = vec![0f32; n];
    dequantize_row(ty, row, &mut w, 1.0);
    w.iter()
        .enumerate()
        .map(|(i, &wi)| (wi as f64 * a.qs[i] as f64 * a.d[i / a.block] as f64).abs())
        .sum()
}

const INT_TYPES: [WeightType; 6] = [
    WeightType::Q8_0,
    WeightType::Q4_0,
    WeightType::Q4_1,
    WeightType::TQ1_0,
    WeightType::TQ2_0,
    WeightType::I2S,
];

#[test]
fn int8_kernels_match_scalar() {
    let scalar = Kernels::scalar();
    let paths = simd_paths();
    let mut rng = Rng::new(42);
    for ty in INT_TYPES {
        for &rows in &[1usize, 3, 4, 5, 8, 9, 17] {
            for &blocks in &[1usize, 2, 3, 27] {
                for mode in 0..3u32 {
                    let pow2 = mode == 2;
                    let n = blocks * ty.block_len();
                    let row_bytes = ty.row_bytes(n).unwrap();
                    let mut w = Vec::new();
                    for _ in 0..rows {
                        rand_row(&mut rng, ty, blocks, pow2, &mut w);
                    }
                    let act = rand_act(&mut rng, n, ty.act_block(), mode);
                    let a = act.view();
                    let mut want = vec![0f32; rows];
                    (scalar.matvec_q8(ty).unwrap())(&w, row_bytes, &a, &mut want);
                    for k in &paths {
                        let mut got = vec![f32::NAN; rows];
                        (k.matvec_q8(ty).unwrap())(&w, row_bytes, &a, &mut got);
                        for r in 0..rows {
                            let ctx = (k.name, ty, rows, blocks, mode, r);
                            if pow2 {
                                assert_eq!(got[r], want[r], "{ctx:?}");
                            } else {
                                let row = &w[r * row_bytes..(r + 1) * row_bytes];
                                let tol = 1e-5 * abs_dot(ty, row, n, &a).max(1e-30);
                                let err = (got[r] as f64 - want[r] as f64).abs();
                                assert!(err <= tol, "{ctx:?}: {} vs {}", got[r], want[r]);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `n` tokens of random activations of `cols` elements each, stored back to back.
fn rand_batch(rng: &mut Rng, n: usize, cols: usize, block: usize, mode: u32) -> Act {
    let mut all = Act {
        qs: Vec::new(),
        d: Vec::new(),
        sums: Vec::new(),
        block,
    };
    for _ in 0..n {
        let t = rand_act(rng, cols, block, mode);
        all.qs.extend_from_slice(&t.qs);
        all.d.extend_from_slice(&t.d);
        all.sums.extend_from_slice(&t.sums);
    }
    all
}

/// Every multi-token kernel against the scalar reference (which loops the scalar matrix-vector
/// kernel per token): the results must be bit-identical.
#[test]
fn gemm_kernels_match_scalar() {
    let scalar = Kernels::scalar();
    let paths = simd_paths();
    let mut rng = Rng::new(4242);
    let mut shapes = Vec::new();
    for &rows in &[1usize, 3, 4, 5, 17] {
        for &blocks in &[1usize, 2, 3, 27] {
            for &n in &[1usize, 2, 3, 4, 5, 8, 13] {
                shapes.push((rows, blocks, n));
            }
        }
    }
    // Several row tiles, and more tokens than one pass holds.
    shapes.push((48, 2, 70));
    shapes.push((33, 1, 64));
    // Row counts past one widening of the Q8_0 tiles' activations (64 rows), and a partial
    // last group.
    shapes.push((100, 2, 9));
    shapes.push((130, 1, 70));
    for ty in INT_TYPES {
        for &(rows, blocks, n) in &shapes {
            for mode in 0..3u32 {
                let cols = blocks * ty.block_len();
                let row_bytes = ty.row_bytes(cols).unwrap();
                let mut w = Vec::new();
                for _ in 0..rows {
                    rand_row(&mut rng, ty, blocks, mode == 2, &mut w);
                }
                let act = rand_batch(&mut rng, n, cols, ty.act_block(), mode);
                let a = ActBatch {
                    qs: &act.qs,
                    d: &act.d,
                    sums: &act.sums,
                    block: act.block,
                    cols,
                    n,
                };
                let mut want = vec![0f32; rows * n];
                (scalar.gemm_q8(ty).unwrap())(&w, row_bytes, &a, &mut want);
                // The reference is the matrix-vector kernel per token.
                let mut one = vec![0f32; rows];
                (scalar.matvec_q8(ty).unwrap())(&w, row_bytes, &a.token(n - 1), &mut one);
                assert_eq!(one[..], want[(n - 1) * rows..]);
                for k in &paths {
                    let mut got = vec![f32::NAN; rows * n];
                    (k.gemm_q8(ty).unwrap())(&w, row_bytes, &a, &mut got);
                    for i in 0..rows * n {
                        let ctx = (k.name, ty, rows, blocks, n, mode, i / rows, i % rows);
                        assert_eq!(
                            got[i].to_bits(),
                            want[i].to_bits(),
                            "{ctx:?}: {} vs {}",
                            got[i],
                            want[i]
                        );
                    }
                }
            }
        }
    }
}

/// Every tiled kernel (scalar reference included) against the plain scalar reference of the
/// type that was tiled, over the same weights: the results must be bit-identical.
#[test]
fn tiled_kernels_match_plain_scalar() {
    let scalar = Kernels::scalar();
    let mut tiled = vec![("scalar", TileKernels::scalar())];
    for k in simd_paths() {
        if let Some(t) = k.ternary_tiles {
            tiled.push((k.name, t));
        }
    }
    let mut rng = Rng::new(99);
    // 65 blocks crosses the matrix-vector kernel's activation chunk.
    let shapes = [(16usize, 1usize), (32, 2), (48, 3), (16, 65), (32, 27)];
    for (ty, &(rows, blocks)) in [WeightType::TQ1_0, WeightType::TQ2_0, WeightType::I2S]
        .iter()
        .flat_map(|&ty| shapes.iter().map(move |s| (ty, s)))
    {
        for mode in 0..3u32 {
            let cols = blocks * 256;
            let rb = ty.row_bytes(cols).unwrap();
            let mut w = Vec::new();
            for _ in 0..rows {
                rand_row(&mut rng, ty, cols / ty.block_len(), mode == 2, &mut w);
            }
            // Each table's weights in its own layout (none for types it keeps as they are).
            let layouts: Vec<Option<Vec<u8>>> = tiled
                .iter()
                .map(|(_, k)| {
                    let l = k.layout;
                    l.can_tile(ty).then(|| {
                        let mut t = vec![0u8; l.tiled_bytes(rows, cols).unwrap()];
                        l.repack(ty, &w, rows, cols, &mut t).unwrap();
                        t
                    })
                })
                .collect();
            let tiled: Vec<_> = tiled
                .iter()
                .zip(&layouts)
                .filter_map(|(&(name, k), t)| Some((name, k, t.as_deref()?)))
                .collect();
            let act = rand_act(&mut rng, cols, 128, mode);
            let mut want = vec![0f32; rows];
            (scalar.matvec_q8(ty).unwrap())(&w, rb, &act.view(), &mut want);
            for &(name, k, t) in &tiled {
                let trb = t.len() / rows;
                let mut got = vec![f32::NAN; rows];
                (k.matvec)(t, trb, &act.view(), &mut got);
                for r in 0..rows {
                    let ctx = (name, ty, rows, blocks, mode, r);
                    assert_eq!(got[r].to_bits(), want[r].to_bits(), "{ctx:?}");
                }
            }
            // 2-8 tokens take the few-token kernel; 65 cross the multi-token pass (64).
            for &n in &[1usize, 2, 3, 4, 5, 7, 8, 9, 33, 40, 65] {
                let act = rand_batch(&mut rng, n, cols, 128, mode);
                let a = ActBatch {
                    qs: &act.qs,
                    d: &act.d,
                    sums: &act.sums,
                    block: 128,
                    cols,
                    n,
                };
                let mut want = vec![0f32; rows * n];
                (scalar.gemm_q8(ty).unwrap())(&w, rb, &a, &mut want);
                for &(name, k, t) in &tiled {
                    let trb = t.len() / rows;
                    let mut got = vec![f32::NAN; rows * n];
                    (k.gemm)(t, trb, &a, &mut got);
                    for i in 0..rows * n {
                        let ctx = (name, ty, rows, blocks, n, mode, i / rows, i % rows);
                        assert_eq!(got[i].to_bits(), want[i].to_bits(), "{ctx:?}");
                    }
                }
            }
        }
    }
}

/// TQ1_0 re-encoded as TQ2_0 keeps every weight and every block scale; other types and
/// shapes are refused.
#[test]
fn tq1_as_tq2_keeps_every_weight_and_scale() {
    use crate::formats::{tq1_0_block_ternary, tq2_0_block_ternary};
    use crate::ternary_tiles::{RepackError, TileLayout};
    let mut rng = Rng::new(31);
    let (rows, blocks) = (16usize, 3usize);
    let cols = 256 * blocks;
    let mut w = Vec::new();
    for _ in 0..rows {
        rand_row(&mut rng, WeightType::TQ1_0, blocks, false, &mut w);
    }
    let l = TileLayout::Tq2Rows;
    let mut t = vec![0u8; l.tiled_bytes(rows, cols).unwrap()];
    l.repack(WeightType::TQ1_0, &w, rows, cols, &mut t).unwrap();
    assert_eq!(t.len(), rows * blocks * 66);
    for (src, dst) in w.chunks_exact(54).zip(t.chunks_exact(66)) {
        let (mut a, mut b) = ([0i8; 256], [0i8; 256]);
        tq1_0_block_ternary(src, &mut a);
        tq2_0_block_ternary(dst, &mut b);
        assert_eq!(a, b);
        assert_eq!(src[52..54], dst[64..66]);
    }
    let tq2 = vec![0u8; rows * blocks * 66];
    assert_eq!(
        l.repack(WeightType::TQ2_0, &tq2, rows, cols, &mut t),
        Err(RepackError::Type(WeightType::TQ2_0))
    );
    assert!(!l.can_tile(WeightType::I2S));
    assert_eq!(l.tiled_bytes(15, cols), None);
    assert_eq!(l.tiled_bytes(16, 255), None);
}

/// A SIMD float dot product `got` against the scalar one `want` of `row` (weights of `ty`)
/// and `x`: equal when the inputs are small integers (every order sums them exactly), else
/// within 1e-5 of the sum of the products' magnitudes.
fn assert_float_dot(
    ty: WeightType,
    row: &[u8],
    x: &[f32],
    got: f32,
    want: f32,
    exact: bool,
    ctx: impl core::fmt::Debug,
) {
    if exact {
        assert_eq!(got, want, "{ctx:?}");
        return;
    }
    let mut wr = vec![0f32; x.len()];
    dequantize_row(ty, row, &mut wr, 1.0);
    let mag: f64 = wr
        .iter()
        .zip(x)
        .map(|(a, b)| (*a as f64 * *b as f64).abs())
        .sum();
    let err = (got as f64 - want as f64).abs();
    assert!(err <= 1e-5 * mag.max(1e-30), "{ctx:?} {got} {want}");
}

#[test]
fn float_kernels_match_scalar() {
    let scalar = Kernels::scalar();
    let paths = simd_paths();
    let mut rng = Rng::new(7);
    for ty in [WeightType::F32, WeightType::F16, WeightType::BF16] {
        for &rows in &[1usize, 3, 5, 17] {
            for &n in &[1usize, 7, 8, 31, 32, 33, 100, 2560] {
                for pow2 in [false, true] {
                    let row_bytes = ty.row_bytes(n).unwrap();
                    let mut w = Vec::new();
                    for _ in 0..rows {
                        rand_row(&mut rng, ty, n, pow2, &mut w);
                    }
                    let x: Vec<f32> = (0..n)
                        .map(|_| {
                            if pow2 {
                                rng.below(17) as f32 - 8.0
                            } else {
                                rng.f32()
                            }
                        })
                        .collect();
                    let mut want = vec![0f32; rows];
                    (scalar.matvec_f32(ty).unwrap())(&w, row_bytes, &x, &mut want);
                    for k in &paths {
                        let mut got = vec![f32::NAN; rows];
                        (k.matvec_f32(ty).unwrap())(&w, row_bytes, &x, &mut got);
                        for r in 0..rows {
                            let row = &w[r * row_bytes..(r + 1) * row_bytes];
                            let ctx = (k.name, ty, rows, n, pow2, r);
                            assert_float_dot(ty, row, &x, got[r], want[r], pow2, ctx);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn float_gemm_kernels_match_scalar() {
    let scalar = Kernels::scalar();
    let paths = simd_paths();
    let mut rng = Rng::new(11);
    for ty in [WeightType::F32, WeightType::F16, WeightType::BF16] {
        for &rows in &[1usize, 2, 3, 5, 17] {
            for &k in &[1usize, 7, 8, 31, 64, 100, 385] {
                for n in [1usize, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13] {
                    let pow2 = (rows + k + n) % 2 == 0;
                    let row_bytes = ty.row_bytes(k).unwrap();
                    let mut w = Vec::new();
                    for _ in 0..rows {
                        rand_row(&mut rng, ty, k, pow2, &mut w);
                    }
                    let x: Vec<f32> = (0..n * k)
                        .map(|_| {
                            if pow2 {
                                rng.below(17) as f32 - 8.0
                            } else {
                                rng.f32()
                            }
                        })
                        .collect();
                    let mut want = vec![0f32; rows * n];
                    (scalar.gemm_f32(ty).unwrap())(&w, row_bytes, &x, n, &mut want);
                    // The scalar several-vector kernel is the matrix-vector one per vector.
                    for t in 0..n {
                        let mut one = vec![0f32; rows];
                        (scalar.matvec_f32(ty).unwrap())(
                            &w,
                            row_bytes,
                            &x[t * k..(t + 1) * k],
                            &mut one,
                        );
                        assert_eq!(one, want[t * rows..(t + 1) * rows]);
                    }
                    for kn in &paths {
                        let mut got = vec![f32::NAN; rows * n];
                        (kn.gemm_f32(ty).unwrap())(&w, row_bytes, &x, n, &mut got);
                        for t in 0..n {
                            for r in 0..rows {
                                let row = &w[r * row_bytes..(r + 1) * row_bytes];
                                let (g, e) = (got[t * rows + r], want[t * rows + r]);
                                let ctx = (kn.name, ty, rows, k, n, t, r);
                                assert_float_dot(ty, row, &x[t * k..(t + 1) * k], g, e, pow2, ctx);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn element_wise_kernels_equal_scalar_bit_for_bit() {
    let scalar = Kernels::scalar();
    let mut rng = Rng::new(13);
    for n in [0usize, 1, 7, 8, 15, 16, 17, 100, 1001] {
        // Every range of erf and of the exponential, edges and non-finite values included.
        let x: Vec<f32> = (0..n)
            .map(|i| match i % 11 {
                0 => f32::INFINITY,
                1 => f32::NEG_INFINITY,
                2 => 1e-30,
                3 => -0.84375,
                4 => 1.25,
                5 => -6.5,
                _ => rng.f32() * 8.0,
            })
            .collect();
        let finite: Vec<f32> = x.iter().map(|v| v.clamp(-100.0, 100.0)).collect();
        for k in simd_paths() {
            let (mut a, mut b) = (x.clone(), x.clone());
            (scalar.gelu_erf)(&mut a);
            (k.gelu_erf)(&mut b);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{} gelu, n {n}", k.name);
            let (mut a, mut b) = (finite.clone(), finite.clone());
            let max = finite.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sa = (scalar.exp_shifted)(&mut a, max, 0.7);
            let sb = (k.exp_shifted)(&mut b, max, 0.7);
            assert_eq!(bits(&a), bits(&b), "{} exp, n {n}", k.name);
            assert_eq!(sa.to_bits(), sb.to_bits(), "{} exp sum, n {n}", k.name);
        }
    }
}

#[test]
fn grouped_attention_kernels_match_scalar() {
    let scalar = Kernels::scalar();
    let paths = simd_paths();
    let mut rng = Rng::new(7);
    for &hd in &[1usize, 7, 8, 16, 24, 64, 100, 128] {
        for &g in &[1usize, 3, 4, 5, 8] {
            for &n in &[1usize, 2, 17, 32] {
                let k: Vec<u16> = (0..n * hd).map(|_| f32_to_f16(rng.f32())).collect();
                let v: Vec<u16> = (0..n * hd).map(|_| f32_to_f16(rng.f32())).collect();
                let q: Vec<f32> = (0..g * hd).map(|_| rng.f32()).collect();
                let w: Vec<f32> = (0..g * n).map(|_| rng.f32().abs()).collect();
                let acc0: Vec<f32> = (0..g * hd).map(|_| rng.f32()).collect();
                let mut want_s = vec![0f32; g * n];
                (scalar.scores_f16)(&k, &q, hd, &mut want_s);
                let mut want_a = acc0.clone();
                (scalar.mix_f16)(&w, &v, hd, &mut want_a);
                for p in &paths {
                    let ctx = (p.name, hd, g, n);
                    let mut got_s = vec![f32::NAN; g * n];
                    (p.scores_f16)(&k, &q, hd, &mut got_s);
                    for (j, (got, want)) in got_s.iter().zip(&want_s).enumerate() {
                        // |k|, |q| < 1: each product is below 1, so hd bounds the magnitude.
                        let tol = 1e-5 * hd as f32;
                        assert!((got - want).abs() <= tol, "{ctx:?} {j}: {got} vs {want}");
                    }
                    let mut got_a = acc0.clone();
                    (p.mix_f16)(&w, &v, hd, &mut got_a);
                    for (j, (got, want)) in got_a.iter().zip(&want_a).enumerate() {
                        let tol = 1e-5 * (n as f32 + 1.0);
                        assert!((got - want).abs() <= tol, "{ctx:?} {j}: {got} vs {want}");
                    }
                }
            }
        }
    }
}

#[test]
fn best_for_never_exceeds_the_cpu() {
    let all = crate::CpuFeatures {
        avx2: true,
        fma: true,
        f16c: true,
        avx512f: true,
        avx512bw: true,
        avx512vl: true,
        avx512vnni: true,
        avx512vbmi: true,
        avxvnni: true,
        neon: true,
        dotprod: true,
    };
    let k = Kernels::best_for(all);
    let names: Vec<&str> = simd_paths().iter().map(|k| k.name).collect();
    assert!(k.name == "scalar" || names.contains(&k.name), "{}", k.name);
    assert_eq!(
        Kernels::best_for(crate::CpuFeatures::default()).name,
        "scalar"
    );
}

#[test]
#[cfg(target_arch = "x86_64")]
fn detected_paths_are_tested() {
    let names: Vec<&str> = simd_paths().iter().map(|k| k.name).collect();
    std::println!("SIMD paths under test: {names:?}");
    if std::is_x86_feature_detected!("avx2") {
        assert!(names.contains(&"avx2"));
    }
    #[cfg(trillim_avx512)]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("avxvnni") {
        assert!(names.contains(&"avxvnni"));
    }
}

#[test]
#[cfg(target_arch = "aarch64")]
fn detected_paths_are_tested() {
    let names: Vec<&str> = simd_paths().iter().map(|k| k.name).collect();
    std::println!("SIMD paths under test: {names:?}");
    assert!(names.contains(&"neon"));
    if std::arch::is_aarch64_feature_detected!("dotprod") {
        assert!(names.contains(&"dotprod"));
    }
}

/// Activation quantization on every SIMD path equals the scalar reference bit for bit: odd
/// lengths, outliers, ties at half a step, zeros, negative zero, infinities and NaN.
#[test]
fn quantize_kernels_match_scalar() {
    let scalar = Kernels::scalar();
    let mut rng = Rng::new(31);
    for &(block, group, blocks) in &[
        (32usize, 32usize, 1usize),
        (32, 32, 7),
        (32, 256, 8),
        (128, 256, 6),
        (32, 256, 24),
    ] {
        let n = block * blocks;
        for case in 0..6 {
            let mut x: Vec<f32> = (0..n).map(|_| rng.f32() * 3.0).collect();
            match case {
                1 => x[n / 3] = 250.0,
                // Values on exact half steps of the scale 127 / 127.
                2 => {
                    for (i, v) in x.iter_mut().enumerate() {
                        *v = (i % 255) as f32 - 127.0 + if i % 2 == 0 { 0.5 } else { -0.5 };
                    }
                    x[0] = 127.0;
                }
                3 => x.iter_mut().for_each(|v| *v = 0.0),
                4 => {
                    x[1] = -0.0;
                    x[2] = f32::INFINITY;
                    x[5] = f32::NAN;
                }
                5 => x[n - 1] = -1e30,
                _ => {}
            }
            let run = |k: &Kernels, per_token: bool| {
                let (mut qs, mut d, mut sums) =
                    (vec![0i8; n], vec![0f32; blocks], vec![0i32; blocks]);
                if per_token {
                    (k.quantize_per_token)(&x, block, &mut qs, &mut d, &mut sums);
                } else if n % group == 0 {
                    (k.quantize_groups)(&x, block, group, &mut qs, &mut d, &mut sums);
                }
                let d: Vec<u32> = d.iter().map(|v| v.to_bits()).collect();
                (qs, d, sums)
            };
            for k in &simd_paths() {
                for per_token in [false, true] {
                    assert_eq!(
                        run(k, per_token),
                        run(&scalar, per_token),
                        "{} {block} {group} {blocks} {case} {per_token}",
                        k.name
                    );
                }
            }
        }
    }
}
