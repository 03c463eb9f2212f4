//! Kernel throughput: every weight format on every kernel path this CPU can run, for one
//! token (matrix-vector, decode) with the weights in cache and streamed from memory, for 64
//! tokens (matrix-matrix, prefill), plus grouped-query attention and activation quantization.
//!
//! `cargo bench -p trillim-runtime --bench kernels` (add `-- tq2_0` to filter). Counters are
//! bytes of weights (or cached keys and values) read, and multiply-accumulates (prefill).
//! `ternary_tiles` is TQ1_0 repacked at load into the layout of the path's tile kernels (16-row
//! tiles, or TQ2_0 rows; see `trillim_kernels::ternary_tiles`), on the paths that have them.

use divan::counter::{BytesCount, ItemsCount};
use divan::{black_box, Bencher};
use trillim_kernels::act::{quantize_blocks, quantize_groups};
use trillim_kernels::{ActBatch, ActQ8, GemmFn, Kernels, MatVecFn, WeightType};

fn main() {
    divan::main();
}

/// Columns of every matrix: the 2B4T model width.
const COLS: usize = 2560;
/// Rows of the decode matrices (2560 × 2560 is the 2B4T attention projection).
const ROWS: usize = 2560;
/// Rows and tokens of the prefill tiles.
const GEMM_ROWS: usize = 256;
const TOKENS: usize = 64;

const TYPES: [WeightType; 14] = [
    WeightType::TQ2_0,
    WeightType::I2S,
    WeightType::TQ1_0,
    WeightType::Q8_0,
    WeightType::Q4_0,
    WeightType::Q4_1,
    WeightType::Q5_0,
    WeightType::Q2_K,
    WeightType::Q3_K,
    WeightType::Q4_K,
    WeightType::Q5_K,
    WeightType::Q6_K,
    WeightType::IQ4_NL,
    WeightType::IQ4_XS,
];

/// The scalar reference and each SIMD path the running CPU supports.
fn paths() -> Vec<Kernels> {
    let f = trillim_runtime::cpu::detect();
    let mut v = vec![Kernels::scalar()];
    let best = Kernels::best_for(f);
    if f.avx2 && f.fma && f.f16c && best.name != "avx2" {
        // SAFETY: the features this path needs were detected on this CPU.
        v.push(unsafe { Kernels::avx2() });
    }
    if best.name != "scalar" {
        v.push(best);
    }
    v
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A `rows × COLS` matrix of random codes with finite f16 scales (and ternary codes ≤ 2).
fn matrix(ty: WeightType, rows: usize) -> Vec<u8> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let bytes = ty.row_bytes(COLS).expect("whole blocks") * rows;
    let mut w: Vec<u8> = (0..bytes).map(|_| rng.next() as u8).collect();
    let one = 0x2c00u16.to_le_bytes(); // 1/16 in f16
    let bb = ty.block_bytes();
    for blk in w.chunks_exact_mut(bb) {
        match ty {
            WeightType::TQ2_0 | WeightType::I2S => {
                for b in blk.iter_mut().take(64.min(bb)) {
                    // Turn every 2-bit code 3 into 2.
                    *b &= !((*b & 0xaa) >> 1 & *b & 0x55);
                }
                if ty == WeightType::TQ2_0 {
                    blk[64..66].copy_from_slice(&one);
                }
            }
            WeightType::TQ1_0 => blk[52..54].copy_from_slice(&one),
            WeightType::Q8_0
            | WeightType::Q4_0
            | WeightType::Q5_0
            | WeightType::IQ4_NL
            | WeightType::IQ4_XS => blk[..2].copy_from_slice(&one),
            WeightType::Q6_K => blk[208..210].copy_from_slice(&one),
            WeightType::Q3_K => blk[108..110].copy_from_slice(&one),
            WeightType::Q2_K => {
                blk[80..82].copy_from_slice(&one);
                blk[82..84].copy_from_slice(&one);
            }
            WeightType::Q4_1 | WeightType::Q4_K | WeightType::Q5_K => {
                blk[..2].copy_from_slice(&one);
                blk[2..4].copy_from_slice(&one);
            }
            _ => {}
        }
    }
    w
}

/// Quantized activations for `n` tokens in `ty`'s activation blocks.
fn activations(ty: WeightType, n: usize) -> (Vec<i8>, Vec<f32>, Vec<i32>) {
    let mut rng = Rng(7);
    let x: Vec<f32> = (0..n * COLS)
        .map(|_| (rng.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect();
    let block = ty.act_block();
    let nb = n * COLS / block;
    let (mut qs, mut d, mut sums) = (vec![0i8; n * COLS], vec![0f32; nb], vec![0i32; nb]);
    quantize_blocks(&x, block, &mut qs, &mut d, &mut sums);
    (qs, d, sums)
}

fn label(k: &Kernels, ty: WeightType) -> String {
    format!("{}/{}", ty.name(), k.name)
}

/// Label of the tiled TQ1_0 case on path `k`.
fn tiles_label(k: &Kernels) -> String {
    format!("ternary_tiles/{}", k.name)
}

/// The tiled-TQ1_0 kernels of path `k` (the scalar reference stands in on the scalar path).
fn tile_kernels(k: &Kernels) -> Option<trillim_kernels::TileKernels> {
    match k.name {
        "scalar" => Some(trillim_kernels::TileKernels::scalar()),
        _ => k.ternary_tiles,
    }
}

/// Every (format, path) pair, as divan arguments.
fn cases() -> Vec<String> {
    let mut v = Vec::new();
    for ty in TYPES {
        for k in paths() {
            v.push(label(&k, ty));
            if ty == WeightType::TQ1_0 && tile_kernels(&k).is_some() {
                v.push(tiles_label(&k));
            }
        }
    }
    v
}

/// A case's weights (`rows × COLS`), row size and kernels.
struct Case {
    ty: WeightType,
    w: Vec<u8>,
    row_bytes: usize,
    matvec: MatVecFn,
    gemm: GemmFn,
}

fn find(case: &str, rows: usize) -> Case {
    for ty in TYPES {
        for k in paths() {
            if label(&k, ty) == case {
                return Case {
                    ty,
                    w: matrix(ty, rows),
                    row_bytes: ty.row_bytes(COLS).expect("whole blocks"),
                    matvec: k.matvec_q8(ty).expect("int8 kernel"),
                    gemm: k.gemm_q8(ty).expect("int8 kernel"),
                };
            }
            if let Some(t) = tile_kernels(&k).filter(|_| tiles_label(&k) == case) {
                let plain = matrix(WeightType::TQ1_0, rows);
                // In the layout this path's tile kernels read.
                let mut w = vec![0u8; t.layout.tiled_bytes(rows, COLS).expect("tiles")];
                t.layout
                    .repack(WeightType::TQ1_0, &plain, rows, COLS, &mut w)
                    .expect("ternary");
                return Case {
                    ty: WeightType::TQ1_0,
                    row_bytes: w.len() / rows,
                    w,
                    matvec: t.matvec,
                    gemm: t.gemm,
                };
            }
        }
    }
    unreachable!("unknown case {case}")
}

/// One token through a 2560 × 2560 matrix.
#[divan::bench(args = cases())]
fn decode_matvec(bencher: Bencher<'_, '_>, case: &str) {
    decode(bencher, case, ROWS, 0);
}

/// One token through the 2B4T FFN shape (6912 × 2560), cycling over enough matrices that
/// together they exceed any last-level cache: the decode rate when weights come from memory.
#[divan::bench(args = cases(), sample_count = 20)]
fn decode_matvec_dram(bencher: Bencher<'_, '_>, case: &str) {
    decode(bencher, case, 6912, 160 << 20);
}

/// Times one token through `rows × COLS` matrices, cycling over copies that add up to at
/// least `total` bytes (one matrix when `total` is 0).
fn decode(bencher: Bencher<'_, '_>, case: &str, rows: usize, total: usize) {
    let Case {
        ty,
        w: one,
        row_bytes,
        matvec: f,
        ..
    } = find(case, rows);
    let copies = total.div_ceil(one.len()).max(1);
    let mats: Vec<Vec<u8>> = (0..copies).map(|_| one.clone()).collect();
    let (qs, d, sums) = activations(ty, 1);
    let a = ActQ8 {
        qs: &qs,
        d: &d,
        sums: &sums,
        block: ty.act_block(),
    };
    let mut out = vec![0f32; rows];
    let mut i = 0;
    bencher.counter(BytesCount::new(one.len())).bench_local(|| {
        f(black_box(&mats[i % copies]), row_bytes, &a, &mut out);
        i += 1;
    });
}

/// Attention over 1024 cached positions of one 128-wide key/value head for the 4 query heads
/// that share it (the 2B4T grouping), in blocks of 32 positions as the forward pass runs it.
#[divan::bench(args = paths().iter().map(|k| k.name).collect::<Vec<_>>())]
fn attention_gqa(bencher: Bencher<'_, '_>, path: &str) {
    const HD: usize = 128;
    const POS: usize = 1024;
    const HEADS: usize = 4;
    const BLOCK: usize = 32;
    let k = paths().into_iter().find(|k| k.name == path).expect("path");
    let mut rng = Rng(3);
    let mut half = || trillim_kernels::f16::f32_to_f16((rng.next() >> 40) as f32 / 2e7 - 0.4);
    let keys: Vec<u16> = (0..POS * HD).map(|_| half()).collect();
    let values: Vec<u16> = (0..POS * HD).map(|_| half()).collect();
    let q: Vec<f32> = (0..HEADS * HD)
        .map(|i| (i % 7) as f32 * 0.1 - 0.3)
        .collect();
    let mut s = vec![0f32; HEADS * BLOCK];
    let mut acc = vec![0f32; HEADS * HD];
    bencher
        .counter(BytesCount::new(2 * 2 * POS * HD))
        .bench_local(|| {
            for p0 in (0..POS).step_by(BLOCK) {
                let r = p0 * HD..(p0 + BLOCK) * HD;
                (k.scores_f16)(black_box(&keys[r.clone()]), &q, HD, &mut s);
                (k.mix_f16)(&s, black_box(&values[r]), HD, &mut acc);
            }
        });
}

/// 64 tokens through a 256 × 2560 tile.
#[divan::bench(args = cases())]
fn prefill_gemm(bencher: Bencher<'_, '_>, case: &str) {
    let Case {
        ty,
        w,
        row_bytes,
        gemm: g,
        ..
    } = find(case, GEMM_ROWS);
    let (qs, d, sums) = activations(ty, TOKENS);
    let a = ActBatch {
        qs: &qs,
        d: &d,
        sums: &sums,
        block: ty.act_block(),
        cols: COLS,
        n: TOKENS,
    };
    let mut out = vec![0f32; GEMM_ROWS * TOKENS];
    bencher
        .counter(ItemsCount::new(GEMM_ROWS * COLS * TOKENS))
        .bench_local(|| g(black_box(&w), row_bytes, &a, &mut out));
}

/// Quantizing one 2560-wide activation row: 32-element blocks (Q4/Q8) and 128-element blocks
/// with 256-element groups (TQ1_0/TQ2_0).
#[divan::bench(args = [32, 128])]
fn quantize_activations(bencher: Bencher<'_, '_>, block: usize) {
    let mut rng = Rng(11);
    let x: Vec<f32> = (0..COLS)
        .map(|_| (rng.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect();
    let nb = COLS / block;
    let (mut qs, mut d, mut sums) = (vec![0i8; COLS], vec![0f32; nb], vec![0i32; nb]);
    let group = if block == 128 { 256 } else { block };
    bencher
        .counter(ItemsCount::new(COLS))
        .bench_local(|| quantize_groups(black_box(&x), block, group, &mut qs, &mut d, &mut sums));
}
