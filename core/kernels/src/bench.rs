//! Throughput of every path on decode-shaped matrices, in GB/s of weight bytes read.
//!
//! Not a timed assertion; run with
//! `cargo test -p trillim-kernels --release bench -- --ignored --nocapture --test-threads=1`.

extern crate std;

use std::println;
use std::time::Instant;
use std::vec;
use std::vec::Vec;

use crate::act::quantize_blocks;
use crate::formats::WeightType;
use crate::tests::{simd_paths, Rng};
use crate::{ActQ8, Kernels};

/// Rows × columns of the matrices timed (the 2B4T FFN up/gate shape: 6912 rows of 2560).
const ROWS: usize = 6912;
const COLS: usize = 2560;

fn rand_matrix(rng: &mut Rng, ty: WeightType, rows: usize, cols: usize) -> Vec<u8> {
    let bytes = ty.row_bytes(cols).unwrap() * rows;
    let mut w: Vec<u8> = (0..bytes).map(|_| rng.next() as u8).collect();
    // Keep every block's f16 scale(s) finite and every 2-bit code ≤ 2.
    let bb = ty.block_bytes();
    for blk in w.chunks_exact_mut(bb) {
        match ty {
            WeightType::TQ2_0 | WeightType::I2S => {
                for b in blk.iter_mut().take(64.min(bb)) {
                    // Map each 2-bit field 3 → 2.
                    let hi = *b & 0xaa;
                    let lo = *b & 0x55;
                    *b &= !((hi >> 1) & lo);
                }
                if ty == WeightType::TQ2_0 {
                    blk[64..66].copy_from_slice(&0x3400u16.to_le_bytes());
                }
            }
            WeightType::TQ1_0 => blk[52..54].copy_from_slice(&0x3400u16.to_le_bytes()),
            WeightType::Q8_0 | WeightType::Q4_0 => {
                blk[0..2].copy_from_slice(&0x3400u16.to_le_bytes())
            }
            WeightType::Q4_1 => {
                blk[0..2].copy_from_slice(&0x3400u16.to_le_bytes());
                blk[2..4].copy_from_slice(&0xb400u16.to_le_bytes());
            }
            WeightType::F16 => blk.copy_from_slice(&crate::f16::f32_to_f16(0.1).to_le_bytes()),
            _ => {}
        }
    }
    w
}

/// Nanoseconds this thread has run on a CPU (Linux `schedstat`), so that a busy machine's
/// time slicing does not count; falls back to wall time elsewhere.
fn cpu_ns(wall: Instant) -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| wall.elapsed().as_nanos() as u64)
}

/// Times `f` over `mats` (hot: one matrix re-read from cache; cold: several matrices whose total
/// exceeds the last-level cache) and returns GB/s of thread CPU time.
fn gbps(bytes_per_call: usize, mut f: impl FnMut(usize)) -> f64 {
    f(0);
    let mut calls = 0usize;
    let t = Instant::now();
    let c0 = cpu_ns(t);
    while t.elapsed().as_secs_f64() < 0.4 {
        f(calls);
        calls += 1;
    }
    let ns = cpu_ns(t) - c0;
    (bytes_per_call * calls) as f64 / ns as f64
}

#[test]
#[ignore]
fn bench_matvec() {
    let mut rng = Rng::new(1);
    let mut paths = vec![Kernels::scalar()];
    paths.extend(simd_paths());
    let x: Vec<f32> = (0..COLS).map(|_| rng.f32()).collect();
    println!("{ROWS}x{COLS} matrices, single thread, GB/s of weight bytes per second of thread CPU time (hot = 1 matrix, cold = 8 matrices)");
    let only = std::env::var("TRILLIM_BENCH").unwrap_or_default();
    for ty in [
        WeightType::TQ2_0,
        WeightType::I2S,
        WeightType::TQ1_0,
        WeightType::Q8_0,
        WeightType::Q4_0,
        WeightType::Q4_1,
        WeightType::F16,
    ] {
        if !only.is_empty() && !only.split(',').any(|t| t == ty.name()) {
            continue;
        }
        let row_bytes = ty.row_bytes(COLS).unwrap();
        let mats: Vec<Vec<u8>> = (0..8)
            .map(|_| rand_matrix(&mut rng, ty, ROWS, COLS))
            .collect();
        let mut out = vec![0f32; ROWS];
        let block = ty.act_block();
        let nb = COLS.checked_div(block).unwrap_or(0);
        let (mut qs, mut d, mut sums) = (vec![0i8; COLS], vec![0f32; nb], vec![0i32; nb]);
        if block > 0 {
            quantize_blocks(&x, block, &mut qs, &mut d, &mut sums);
        }
        let a = ActQ8 {
            qs: &qs,
            d: &d,
            sums: &sums,
            block,
        };
        let bytes = row_bytes * ROWS;
        for k in &paths {
            let run = |m: &[u8], out: &mut [f32]| match k.matvec_q8(ty) {
                Some(f) => f(m, row_bytes, &a, out),
                None => (k.matvec_f32(ty).unwrap())(m, row_bytes, &x, out),
            };
            let hot = gbps(bytes, |_| run(&mats[0], &mut out));
            let cold = gbps(bytes, |i| run(&mats[i % 8], &mut out));
            println!(
                "{:>6} {:>11}: hot {:6.2} GB/s  cold {:6.2} GB/s",
                ty.name(),
                k.name,
                hot,
                cold
            );
        }
    }
    // Attention: dot products and axpy over a 128-wide f16 head, 4096 positions.
    let n = 128 * 4096;
    let kv: Vec<u16> = (0..n).map(|_| crate::f16::f32_to_f16(rng.f32())).collect();
    let q: Vec<f32> = (0..128).map(|_| rng.f32()).collect();
    let mut y = vec![0f32; 128];
    for k in &paths {
        let dot = gbps(2 * n, |_| {
            let mut s = 0.0;
            for row in kv.chunks_exact(128) {
                s += (k.dot_f16)(row, &q);
            }
            // SAFETY: `s` is a live local; the volatile read only keeps the loop from being elided.
            unsafe { core::ptr::read_volatile(&s) };
        });
        let axpy = gbps(2 * n, |_| {
            for row in kv.chunks_exact(128) {
                (k.axpy_f16)(0.001, row, &mut y);
            }
        });
        println!(
            "f16 attn {:>11}: dot {:6.2} GB/s  axpy {:6.2} GB/s",
            k.name, dot, axpy
        );
    }
}

/// Multi-token (prefill) kernels: a tile of rows as the forward pass hands one thread task,
/// times a batch of 64 tokens, in giga multiply-accumulates per second of thread CPU time.
///
/// Run with `cargo test -p trillim-kernels --release bench_gemm -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_gemm() {
    const TILE: usize = 256;
    const N: usize = 64;
    let mut rng = Rng::new(2);
    let mut paths = vec![Kernels::scalar()];
    paths.extend(simd_paths());
    println!("{TILE}x{COLS} tile x {N} tokens, single thread, GMAC/s of thread CPU time");
    let only = std::env::var("TRILLIM_BENCH").unwrap_or_default();
    for ty in [
        WeightType::TQ2_0,
        WeightType::I2S,
        WeightType::TQ1_0,
        WeightType::Q8_0,
        WeightType::Q4_0,
        WeightType::Q4_1,
    ] {
        if !only.is_empty() && !only.split(',').any(|t| t == ty.name()) {
            continue;
        }
        let row_bytes = ty.row_bytes(COLS).unwrap();
        let w = rand_matrix(&mut rng, ty, TILE, COLS);
        let block = ty.act_block();
        let nb = COLS / block;
        let (mut qs, mut d, mut sums) =
            (vec![0i8; N * COLS], vec![0f32; N * nb], vec![0i32; N * nb]);
        for t in 0..N {
            let x: Vec<f32> = (0..COLS).map(|_| rng.f32()).collect();
            quantize_blocks(
                &x,
                block,
                &mut qs[t * COLS..(t + 1) * COLS],
                &mut d[t * nb..(t + 1) * nb],
                &mut sums[t * nb..(t + 1) * nb],
            );
        }
        let a = crate::ActBatch {
            qs: &qs,
            d: &d,
            sums: &sums,
            block,
            cols: COLS,
            n: N,
        };
        let mut out = vec![0f32; TILE * N];
        for k in &paths {
            let g = k.gemm_q8(ty).unwrap();
            // Bytes-per-call is MACs per call here, so the result reads as GMAC/s.
            let gmac = gbps(TILE * COLS * N, |_| g(&w, row_bytes, &a, &mut out));
            println!("{:>6} {:>11}: {:7.1} GMAC/s", ty.name(), k.name, gmac);
        }
    }
}
