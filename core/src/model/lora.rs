//! LoRA adapters applied unmerged: each adapted projection adds a low-rank side path,
//! `y = W·x + s·B(A·x)`, to its base product, whatever the base weight format.
//!
//! The shell owns the adapter's matrices in one byte buffer and describes them here by
//! offsets (as [`super::Weights`] does the model's), so the core stays free of allocation.

use trillim_kernels::act::{quantize_blocks, ActQ8};
use trillim_kernels::f16::bf16_to_f32;
use trillim_kernels::formats::dequantize_row;
use trillim_kernels::WeightType;

use super::Forward;
use crate::parallel::{Parallel, Sequential};

/// Largest rank an adapter may have (a token's `A·x` lives on the stack, or in the scratch's
/// `tmp`, which holds a projection's rows: a loader also checks the rank against the
/// projection's own sizes).
pub const MAX_LORA_RANK: usize = 512;

/// Output rows one task of the `B` product handles at most.
const B_CHUNK: usize = 64;

/// Multiply-adds below which the side path runs on the calling thread: a decode step's side
/// path is a few microseconds of work, less than handing it to the pool costs.
const PARALLEL_MACS: usize = 1 << 18;

/// Widest input a block-quantized (`Q8_0`, `Q4_0`) `A` may have: a token's activation codes
/// for it live on the stack.
pub const MAX_LORA_QUANT_COLS: usize = 32768;

/// How an adapter's matrices are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraType {
    /// `f32`, exactly as loaded.
    F32,
    /// bfloat16.
    Bf16,
    /// Per row: an `f32` scale, then one int8 code per value (`v ≈ scale · code`, absmax);
    /// products take `f32` activations.
    Int8,
    /// ggml's Q8_0 blocks; `A·x` quantizes `x` to Q8 blocks, as the base products do.
    Q8_0,
    /// ggml's Q4_0 blocks; likewise.
    Q4_0,
}

impl LoraType {
    /// Bytes of a row of `n` values (`None`: `n` is not whole blocks).
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        match self {
            LoraType::F32 => Some(4 * n),
            LoraType::Bf16 => Some(2 * n),
            LoraType::Int8 => Some(4 + n),
            LoraType::Q8_0 => WeightType::Q8_0.row_bytes(n),
            LoraType::Q4_0 => WeightType::Q4_0.row_bytes(n),
        }
    }

    /// The ggml block format, for the block-quantized types.
    pub fn blocks(self) -> Option<WeightType> {
        match self {
            LoraType::Q8_0 => Some(WeightType::Q8_0),
            LoraType::Q4_0 => Some(WeightType::Q4_0),
            _ => None,
        }
    }
}

/// Index of each projection in [`Layer::projections`](super::Layer::projections) order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Proj {
    Q = 0,
    K = 1,
    V = 2,
    O = 3,
    Gate = 4,
    Up = 5,
    Down = 6,
}

/// One adapted projection: `A` (`rank × cols`, row-major) and `B` stored transposed
/// (`rank × rows`, row-major: `Bᵀ`), at byte offsets of [`Lora::bytes`], both in `ty`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraPair {
    /// Byte offset of `A`.
    pub a: usize,
    /// Byte offset of `Bᵀ`.
    pub b: usize,
    /// Storage of both matrices.
    pub ty: LoraType,
    /// Rank (rows of `A`, columns of `B`), at most [`MAX_LORA_RANK`].
    pub rank: usize,
    /// Scale `s` of the side path.
    pub scale: f32,
}

/// An adapter's view for the forward pass: per layer, the pair of each of the seven
/// projections (in [`Proj`] order) that it adapts.
#[derive(Clone, Copy, Debug)]
pub struct Lora<'a> {
    /// The matrices.
    pub bytes: &'a [u8],
    /// One entry per model layer.
    pub layers: &'a [[Option<LoraPair>; 7]],
}

/// `acc[i] += w · v[i]` for the values `v` of elements `[e0, e0 + acc.len())` of a row stored
/// as `ty` (`row` is the whole row). Block types need `e0` and the length on block bounds.
fn add_scaled(acc: &mut [f32], row: &[u8], e0: usize, ty: LoraType, w: f32) {
    let n = acc.len();
    match ty {
        LoraType::F32 => {
            for (a, c) in acc
                .iter_mut()
                .zip(row[4 * e0..4 * (e0 + n)].chunks_exact(4))
            {
                *a += w * f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        LoraType::Bf16 => {
            for (a, c) in acc
                .iter_mut()
                .zip(row[2 * e0..2 * (e0 + n)].chunks_exact(2))
            {
                *a += w * bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        LoraType::Int8 => {
            let ws = w * f32::from_le_bytes([row[0], row[1], row[2], row[3]]);
            for (a, &c) in acc.iter_mut().zip(&row[4 + e0..4 + e0 + n]) {
                *a += ws * c as i8 as f32;
            }
        }
        LoraType::Q8_0 | LoraType::Q4_0 => {
            let wt = ty.blocks().expect("a block type");
            let (bl, bb) = (
                wt.block_len(),
                wt.row_bytes(wt.block_len()).expect("a block"),
            );
            let mut vals = [0f32; B_CHUNK];
            let vals = &mut vals[..n];
            dequantize_row(wt, &row[e0 / bl * bb..(e0 + n) / bl * bb], vals, 1.0);
            for (a, v) in acc.iter_mut().zip(vals.iter()) {
                *a += w * v;
            }
        }
    }
}

/// `A·x` for the rows of `a` (each `a_rb` bytes) into `out`, for `x` of `cols` values.
fn a_times_x(
    kernels: &trillim_kernels::Kernels,
    ty: LoraType,
    a: &[u8],
    a_rb: usize,
    x: &[f32],
    out: &mut [f32],
) {
    match ty {
        LoraType::F32 | LoraType::Bf16 => {
            let wt = if ty == LoraType::F32 {
                WeightType::F32
            } else {
                WeightType::BF16
            };
            let matvec = kernels
                .matvec_f32(wt)
                .expect("f32-activation kernels exist");
            matvec(a, a_rb, x, out);
        }
        LoraType::Int8 => {
            for (o, row) in out.iter_mut().zip(a.chunks_exact(a_rb)) {
                let scale = f32::from_le_bytes([row[0], row[1], row[2], row[3]]);
                let mut acc = 0f32;
                for (&c, &v) in row[4..].iter().zip(x) {
                    acc += c as i8 as f32 * v;
                }
                *o = scale * acc;
            }
        }
        LoraType::Q8_0 | LoraType::Q4_0 => {
            let wt = ty.blocks().expect("a block type");
            let matvec = kernels.matvec_q8(wt).expect("Q8_0 and Q4_0 kernels exist");
            let cols = x.len();
            let nb = cols / 32;
            let mut qs = [0i8; MAX_LORA_QUANT_COLS];
            let mut d = [0f32; MAX_LORA_QUANT_COLS / 32];
            let mut sums = [0i32; MAX_LORA_QUANT_COLS / 32];
            quantize_blocks(x, 32, &mut qs[..cols], &mut d[..nb], &mut sums[..nb]);
            let act = ActQ8 {
                qs: &qs[..cols],
                d: &d[..nb],
                sums: &sums[..nb],
                block: 32,
            };
            matvec(a, a_rb, &act, out);
        }
    }
}

impl Forward<'_> {
    /// Adds the adapter's side path of projection `p` of layer `li` to `out` (`b` token rows
    /// of `rows`), for the `b` input rows of `input` (`cols` wide). `tmp` holds `A·x`
    /// (at least `b × rank` values). Nothing happens without an adapter for it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn lora_side(
        &self,
        li: usize,
        p: Proj,
        input: &[f32],
        cols: usize,
        b: usize,
        out: &mut [f32],
        rows: usize,
        tmp: &mut [f32],
        par: &dyn Parallel,
    ) {
        let Some(lora) = &self.lora else { return };
        let Some(pair) = lora.layers.get(li).and_then(|l| l[p as usize]) else {
            return;
        };
        if pair.scale == 0.0 || b == 0 {
            return;
        }
        let r = pair.rank;
        let par = if b * r * (rows + cols) < PARALLEL_MACS {
            &Sequential
        } else {
            par
        };
        let (Some(a_rb), Some(b_rb)) = (pair.ty.row_bytes(cols), pair.ty.row_bytes(rows)) else {
            return;
        };
        let a = &lora.bytes[pair.a..pair.a + r * a_rb];
        let bt = &lora.bytes[pair.b..pair.b + r * b_rb];
        let side = Side {
            bt,
            b_rb,
            ty: pair.ty,
            scale: pair.scale,
        };
        let kernels = self.kernels;
        if b >= 4 {
            // A token per task: its A·x, then its rows, in one pass over the pool.
            par.for_each_chunk(&mut out[..b * rows], rows, &|t, o| {
                let mut h = [0f32; MAX_LORA_RANK];
                let h = &mut h[..r];
                a_times_x(
                    kernels,
                    pair.ty,
                    a,
                    a_rb,
                    &input[t * cols..(t + 1) * cols],
                    h,
                );
                for (c, piece) in o.chunks_mut(B_CHUNK).enumerate() {
                    side.add(piece, h, c * B_CHUNK);
                }
            });
            return;
        }
        // A token or a few: h[t][j] = A[j] · x[t] a dot product per task, then chunks of
        // rows that never straddle a token.
        let h = &mut tmp[..b * r];
        if pair.ty.blocks().is_some() {
            // Block types quantize the token's input once for all of A's rows.
            par.for_each_chunk(h, r, &|t, o| {
                a_times_x(
                    kernels,
                    pair.ty,
                    a,
                    a_rb,
                    &input[t * cols..(t + 1) * cols],
                    o,
                );
            });
        } else {
            par.for_each_chunk(h, 1, &|i, o| {
                let (t, j) = (i / r, i % r);
                let x = &input[t * cols..(t + 1) * cols];
                a_times_x(kernels, pair.ty, &a[j * a_rb..(j + 1) * a_rb], a_rb, x, o);
            });
        }
        let h = &*h;
        // Pieces of whole 32-blocks for block types (their rows are whole blocks).
        let step = if pair.ty.blocks().is_some() { 32 } else { 1 };
        let chunk = (1..=B_CHUNK.min(rows) / step)
            .rev()
            .map(|c| c * step)
            .find(|c| rows.is_multiple_of(*c))
            .unwrap_or(step);
        par.for_each_chunk(&mut out[..b * rows], chunk, &|i, o| {
            let start = i * chunk;
            let (t, r0) = (start / rows, start % rows);
            side.add(o, &h[t * r..(t + 1) * r], r0);
        });
    }
}

/// The `B` half of a side path.
struct Side<'a> {
    /// `Bᵀ`, `rank` rows of `b_rb` bytes.
    bt: &'a [u8],
    b_rb: usize,
    ty: LoraType,
    scale: f32,
}

impl Side<'_> {
    /// `o[i] += s · Σ_j h[j] · Bᵀ[j][r0 + i]` for a piece of at most [`B_CHUNK`] rows: a sum
    /// of `rank` contiguous row pieces, which vectorizes where rank-long dot products would
    /// not.
    fn add(&self, o: &mut [f32], h: &[f32], r0: usize) {
        let mut acc = [0f32; B_CHUNK];
        let acc = &mut acc[..o.len()];
        for (j, &hj) in h.iter().enumerate() {
            let row = &self.bt[j * self.b_rb..(j + 1) * self.b_rb];
            add_scaled(acc, row, r0, self.ty, hj);
        }
        for (y, v) in o.iter_mut().zip(acc.iter()) {
            *y += self.scale * v;
        }
    }
}
