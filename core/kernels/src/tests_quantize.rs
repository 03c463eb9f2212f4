//! The reference quantizers against the scalar dequantizers: ternary values come back exactly,
//! the 4- and 8-bit formats within half a step (a whole one for Q4_0's short side). (Bit-exactness with llama.cpp's quantizers is
//! checked in `tests/tests/quantize.rs` against gguf-py's.)

extern crate std;

use std::vec;
use std::vec::Vec;

use crate::formats::{dequantize_row, i2s_scale, WeightType};
use crate::quantize::{f32_to_bf16, quantize_i2s, quantize_row};
use crate::tests::Rng;

fn ternary(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.below(3) as f32 - 1.0) * scale)
        .collect()
}

#[test]
fn ternary_types_round_trip_exactly() {
    let mut rng = Rng::new(7);
    for ty in [WeightType::TQ1_0, WeightType::TQ2_0] {
        for &scale in &[1.0f32, 0.5, 0.0] {
            let x = ternary(&mut rng, 512, scale);
            let mut q = vec![0u8; ty.row_bytes(512).unwrap()];
            assert!(quantize_row(ty, &x, &mut q));
            let mut back = vec![0f32; 512];
            dequantize_row(ty, &q, &mut back, 1.0);
            assert_eq!(back, x, "{ty:?} scale {scale}");
        }
    }
    let x = ternary(&mut rng, 384, 0.25);
    let ty = WeightType::I2S;
    let mut q = vec![0u8; ty.tensor_bytes(384).unwrap()];
    quantize_i2s(&x, &mut q);
    let s = i2s_scale(&q, 384);
    assert_eq!(s, 0.25);
    let mut back = vec![0f32; 384];
    dequantize_row(ty, &q[..96], &mut back, s);
    assert_eq!(back, x);
}

#[test]
fn block_types_round_trip_within_half_a_step() {
    let mut rng = Rng::new(11);
    let x: Vec<f32> = (0..256).map(|_| rng.f32() * 3.0).collect();
    for (ty, steps) in [
        (WeightType::Q8_0, 127.0f32),
        (WeightType::Q4_0, 8.0),
        (WeightType::Q4_1, 7.5),
    ] {
        let mut q = vec![0u8; ty.row_bytes(256).unwrap()];
        assert!(quantize_row(ty, &x, &mut q));
        let mut back = vec![0f32; 256];
        dequantize_row(ty, &q, &mut back, 1.0);
        for (b, (xb, yb)) in x.chunks(32).zip(back.chunks(32)).enumerate() {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let range = xb.iter().fold(f32::MIN, |m, &v| m.max(v))
                - xb.iter().fold(f32::MAX, |m, &v| m.min(v));
            let step = if ty == WeightType::Q4_1 {
                range / 15.0
            } else {
                amax / steps
            };
            for (a, b2) in xb.iter().zip(yb) {
                // Q4_0 maps the extreme to −8, so the other sign reaches only +7 steps.
                let tol = if ty == WeightType::Q4_0 { 1.01 } else { 0.51 };
                assert!(
                    (a - b2).abs() <= step * tol + 1e-3,
                    "{ty:?} block {b}: {a} vs {b2}"
                );
            }
        }
    }
    for ty in [WeightType::F32, WeightType::F16, WeightType::BF16] {
        let mut q = vec![0u8; ty.row_bytes(256).unwrap()];
        assert!(quantize_row(ty, &x, &mut q));
        let mut back = vec![0f32; 256];
        dequantize_row(ty, &q, &mut back, 1.0);
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() <= a.abs() * 4e-3, "{ty:?}");
        }
    }
}

#[test]
fn bf16_rounds_to_nearest_even() {
    assert_eq!(f32_to_bf16(1.0), 0x3f80);
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
    assert!(f32::from_bits((f32_to_bf16(f32::NAN) as u32) << 16).is_nan());
}
