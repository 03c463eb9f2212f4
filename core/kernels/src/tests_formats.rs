//! The llama.cpp block formats (Q5_0 … IQ4_XS): every SIMD path against the scalar reference
//! on random blocks and odd shapes (bit-identical results), and the scalar dot products against
//! the scalar dequantizers.

extern crate std;

use std::format;
use std::vec;
use std::vec::Vec;

use crate::act::{quantize_groups, ActBatch, ActQ8};
use crate::f16::f32_to_f16;
use crate::formats::{dequantize_row, WeightType};
use crate::tests::{simd_paths, Rng};
use crate::Kernels;

const TYPES: [WeightType; 9] = [
    WeightType::Q5_0,
    WeightType::Q5_1,
    WeightType::IQ4_NL,
    WeightType::Q2_K,
    WeightType::Q3_K,
    WeightType::Q4_K,
    WeightType::Q5_K,
    WeightType::Q6_K,
    WeightType::IQ4_XS,
];

/// Byte offsets of a block's f16 scales (the other bytes are codes, any value valid).
fn scale_offsets(ty: WeightType) -> &'static [usize] {
    match ty {
        WeightType::Q5_0 | WeightType::IQ4_NL | WeightType::IQ4_XS => &[0],
        WeightType::Q5_1 | WeightType::Q4_K | WeightType::Q5_K => &[0, 2],
        WeightType::Q2_K => &[80, 82],
        WeightType::Q3_K => &[108],
        WeightType::Q6_K => &[208],
        _ => unreachable!(),
    }
}

/// A random scale: with `pow2` an exact power of two, else a random normal half.
fn scale(rng: &mut Rng, pow2: bool) -> u16 {
    if pow2 {
        let e = 10 + rng.below(8) as u16;
        (e << 10) | if rng.below(2) == 0 { 0 } else { 0x8000 }
    } else {
        let v = rng.f32() * 0.1;
        f32_to_f16(if v == 0.0 { 0.01 } else { v })
    }
}

fn rand_rows(rng: &mut Rng, ty: WeightType, rows: usize, blocks: usize, pow2: bool) -> Vec<u8> {
    let bb = ty.block_bytes();
    let mut w = vec![0u8; rows * blocks * bb];
    for blk in w.chunks_exact_mut(bb) {
        for b in blk.iter_mut() {
            *b = rng.next() as u8;
        }
        for &o in scale_offsets(ty) {
            blk[o..o + 2].copy_from_slice(&scale(rng, pow2).to_le_bytes());
        }
    }
    w
}

/// Owned activations of one or more tokens.
struct Act {
    qs: Vec<i8>,
    d: Vec<f32>,
    sums: Vec<i32>,
}

/// `n` tokens of `cols` activations quantized in `ty`'s format: from random floats (mode 0) or
/// random codes in −127..=127 with power-of-two scales (mode 1).
fn rand_act(rng: &mut Rng, ty: WeightType, n: usize, cols: usize, mode: u32) -> Act {
    let (block, group) = (ty.act_block(), ty.act_group());
    let nb = cols / block;
    let mut a = Act {
        qs: vec![0; n * cols],
        d: vec![0.0; n * nb],
        sums: vec![0; n * nb],
    };
    for t in 0..n {
        let (qs, d, sums) = (
            &mut a.qs[t * cols..(t + 1) * cols],
            &mut a.d[t * nb..(t + 1) * nb],
            &mut a.sums[t * nb..(t + 1) * nb],
        );
        if mode == 0 {
            let x: Vec<f32> = (0..cols)
                .map(|i| rng.f32() * if i % 37 == 5 { 20.0 } else { 1.0 })
                .collect();
            quantize_groups(&x, block, group, qs, d, sums);
        } else {
            for g in 0..cols / group {
                let s = [0.25f32, 0.5, 1.0, 2.0][rng.below(4) as usize];
                for b in 0..group / block {
                    d[g * group / block + b] = s;
                }
            }
            for (i, q) in qs.iter_mut().enumerate() {
                *q = match rng.below(16) {
                    0 => -127,
                    1 => 127,
                    _ => (rng.below(255) as i32 - 127) as i8,
                };
                sums[i / block] += *q as i32;
            }
        }
    }
    a
}

fn view<'a>(a: &'a Act, ty: WeightType) -> ActQ8<'a> {
    ActQ8 {
        qs: &a.qs,
        d: &a.d,
        sums: &a.sums,
        block: ty.act_block(),
    }
}

#[test]
fn block_formats_simd_match_scalar() {
    let scalar = Kernels::scalar();
    let paths = simd_paths();
    let mut rng = Rng::new(2024);
    for ty in TYPES {
        for &rows in &[1usize, 3, 4, 5, 9, 17] {
            for &blocks in &[1usize, 2, 3, 11] {
                for mode in 0..2u32 {
                    let cols = blocks * ty.block_len();
                    let rb = ty.row_bytes(cols).unwrap();
                    let w = rand_rows(&mut rng, ty, rows, blocks, mode == 1);
                    let act = rand_act(&mut rng, ty, 1, cols, mode);
                    let a = view(&act, ty);
                    let mut want = vec![0f32; rows];
                    (scalar.matvec_q8(ty).unwrap())(&w, rb, &a, &mut want);
                    for k in &paths {
                        let mut got = vec![f32::NAN; rows];
                        (k.matvec_q8(ty).unwrap())(&w, rb, &a, &mut got);
                        for r in 0..rows {
                            let ctx = (k.name, ty, rows, blocks, mode, r);
                            assert_eq!(got[r].to_bits(), want[r].to_bits(), "{ctx:?}");
                        }
                    }
                }
            }
        }
    }
}

/// Every SIMD path's multi-token kernel for `ty` against the scalar one on `w` (`rb` bytes per
/// row) and the batch `a`: bit-identical results. `ctx` names the case in a failure.
fn assert_gemm_paths_match(ty: WeightType, w: &[u8], rb: usize, a: &ActBatch<'_>, ctx: &str) {
    let rows = w.len() / rb;
    let mut want = vec![0f32; rows * a.n];
    (Kernels::scalar().gemm_q8(ty).unwrap())(w, rb, a, &mut want);
    for k in &simd_paths() {
        let mut got = vec![f32::NAN; rows * a.n];
        (k.gemm_q8(ty).unwrap())(w, rb, a, &mut got);
        for i in 0..rows * a.n {
            let at = (k.name, ty, i / rows, i % rows);
            assert_eq!(got[i].to_bits(), want[i].to_bits(), "{ctx} {at:?}");
        }
    }
}

#[test]
fn block_formats_gemm_match_scalar() {
    let mut rng = Rng::new(77);
    for ty in TYPES {
        for &(rows, blocks, n) in &[
            (1usize, 1usize, 1usize),
            (5, 2, 3),
            (17, 3, 8),
            (33, 1, 13),
            (48, 2, 70),
            // Past the 64 rows one widening of the 16-bit tiles' activations serves.
            (130, 1, 9),
        ] {
            let cols = blocks * ty.block_len();
            let rb = ty.row_bytes(cols).unwrap();
            let w = rand_rows(&mut rng, ty, rows, blocks, false);
            let act = rand_act(&mut rng, ty, n, cols, 0);
            let a = ActBatch {
                qs: &act.qs,
                d: &act.d,
                sums: &act.sums,
                block: ty.act_block(),
                cols,
                n,
            };
            let ctx = format!("rows {rows}, blocks {blocks}, tokens {n}");
            assert_gemm_paths_match(ty, &w, rb, &a, &ctx);
        }
    }
}

/// The multi-token kernels at the bounds of their 16-bit partial sums: every code byte 0x00 or
/// 0xff (the largest and, for signed formats, most negative codes) against activations all
/// 127 or all −127 (the quantizer's range), enough tokens for the tiles.
#[test]
fn block_formats_gemm_extremes_match_scalar() {
    let mut rng = Rng::new(78);
    for ty in TYPES {
        let (rows, blocks, n) = (9usize, 2usize, 9usize);
        let cols = blocks * ty.block_len();
        let rb = ty.row_bytes(cols).unwrap();
        let nb = cols / ty.act_block();
        for byte in [0x00u8, 0xff] {
            let mut w = vec![byte; rows * blocks * ty.block_bytes()];
            for blk in w.chunks_exact_mut(ty.block_bytes()) {
                for &o in scale_offsets(ty) {
                    blk[o..o + 2].copy_from_slice(&scale(&mut rng, true).to_le_bytes());
                }
            }
            for code in [127i8, -127] {
                let qs = vec![code; n * cols];
                let d = vec![0.5f32; n * nb];
                let sums = vec![code as i32 * ty.act_block() as i32; n * nb];
                let a = ActBatch {
                    qs: &qs,
                    d: &d,
                    sums: &sums,
                    block: ty.act_block(),
                    cols,
                    n,
                };
                assert_gemm_paths_match(ty, &w, rb, &a, &format!("bytes {byte:#x}, codes {code}"));
            }
        }
    }
}

/// The integer dot products agree with the dequantized weights times the dequantized
/// activations (in f64), so the two scalar readings of each layout agree.
#[test]
fn block_formats_dot_matches_dequantized() {
    let scalar = Kernels::scalar();
    let mut rng = Rng::new(5);
    for ty in TYPES {
        for blocks in [1usize, 4] {
            let cols = blocks * ty.block_len();
            let rb = ty.row_bytes(cols).unwrap();
            let w = rand_rows(&mut rng, ty, 3, blocks, false);
            let act = rand_act(&mut rng, ty, 1, cols, 0);
            let a = view(&act, ty);
            let mut got = vec![0f32; 3];
            (scalar.matvec_q8(ty).unwrap())(&w, rb, &a, &mut got);
            for r in 0..3 {
                let mut wf = vec![0f32; cols];
                dequantize_row(ty, &w[r * rb..(r + 1) * rb], &mut wf, 1.0);
                let (mut dot, mut mag) = (0f64, 0f64);
                for (i, &wi) in wf.iter().enumerate() {
                    let x = a.qs[i] as f64 * a.d[i / a.block] as f64;
                    dot += wi as f64 * x;
                    mag += (wi as f64 * x).abs();
                }
                let err = (got[r] as f64 - dot).abs();
                assert!(err <= 1e-5 * mag + 1e-9, "{ty:?} r{r}: {} vs {dot}", got[r]);
            }
        }
    }
}

/// Hand-built blocks whose weights are known, one per format.
#[test]
fn block_formats_decode_known_weights() {
    let one = f32_to_f16(1.0).to_le_bytes();
    // Q6_K: code 32 + 1 everywhere (low nibble 1, high bits 2), scales 1..=16.
    let mut b = [0u8; 210];
    b[..128].iter_mut().for_each(|x| *x = 0x11);
    b[128..192].iter_mut().for_each(|x| *x = 0xaa);
    for j in 0..16 {
        b[192 + j] = j as u8 + 1;
    }
    b[208..].copy_from_slice(&one);
    let mut y = [0f32; 256];
    dequantize_row(WeightType::Q6_K, &b, &mut y, 1.0);
    for (i, &v) in y.iter().enumerate() {
        assert_eq!(v, (i / 16 + 1) as f32, "q6_K {i}");
    }
    // Q4_K: d = 1, dmin = 1, scale j + 1 and minimum 1 for sub-block j, codes 3.
    let mut b = [0u8; 144];
    b[..2].copy_from_slice(&one);
    b[2..4].copy_from_slice(&one);
    for j in 0..4 {
        b[4 + j] = j as u8 + 1;
        b[8 + j] = 1;
        b[12 + j] = (j as u8 + 5) | (1 << 4);
    }
    b[16..].iter_mut().for_each(|x| *x = 0x33);
    let mut y = [0f32; 256];
    dequantize_row(WeightType::Q4_K, &b, &mut y, 1.0);
    for (i, &v) in y.iter().enumerate() {
        assert_eq!(v, (i / 32 + 1) as f32 * 3.0 - 1.0, "q4_K {i}");
    }
    // IQ4_NL: indices 0..16 map to the level table.
    let mut b = [0u8; 18];
    b[..2].copy_from_slice(&one);
    for j in 0..16 {
        b[2 + j] = j as u8 | ((15 - j as u8) << 4);
    }
    let mut y = [0f32; 32];
    dequantize_row(WeightType::IQ4_NL, &b, &mut y, 1.0);
    for j in 0..16 {
        assert_eq!(y[j], crate::iq4::LEVELS[j] as f32);
        assert_eq!(y[j + 16], crate::iq4::LEVELS[15 - j] as f32);
    }
    // Q5_0: all fifth bits set, nibbles 0 → code 16 → 0; then bit 0 clear → −16.
    let mut b = [0u8; 22];
    b[..2].copy_from_slice(&one);
    b[2..6].copy_from_slice(&0xffff_fffeu32.to_le_bytes());
    let mut y = [0f32; 32];
    dequantize_row(WeightType::Q5_0, &b, &mut y, 1.0);
    assert_eq!(y[0], -16.0);
    assert!(y[1..].iter().all(|&v| v == 0.0));
}
