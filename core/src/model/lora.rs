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

/// Multiply-adds below which side paths run on the calling thread: less work than that costs
/// less than handing it to the pool (a hand-off is about a microsecond; 2^15 `f32`
/// multiply-adds read 128 KiB of matrices).
const PARALLEL_MACS: usize = 1 << 15;

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

/// One projection of a group whose side paths share their input: which one, and its output
/// (`b` token rows).
pub(super) type SideOut<'o> = (Proj, &'o mut [f32]);

/// A side path ready to run: its pair and `A`, `Bᵀ` row sizes.
#[derive(Clone, Copy)]
struct Active {
    pair: LoraPair,
    a_rb: usize,
    b_rb: usize,
    rows: usize,
}

impl Forward<'_> {
    /// Adds the adapter's side paths of layer `li` to each output of `outs` (`b` token rows
    /// each), for the `b` input rows of `input` (`cols` wide) that the group's projections
    /// share. `tmp` is scratch (the forward pass's, sized for a group of one token's
    /// outputs). Projections without an adapted pair are left alone.
    ///
    /// A few tokens run the whole group in two passes over the pool: every `A·x` row of
    /// every projection, then every piece of every `B·h`, so that a decode step's small side
    /// paths share the threads instead of running one after another on the calling thread.
    /// More tokens run a token per task.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn lora_sides(
        &self,
        li: usize,
        input: &[f32],
        cols: usize,
        b: usize,
        outs: &mut [SideOut<'_>],
        tmp: &mut [f32],
        par: &dyn Parallel,
    ) {
        let Some(lora) = &self.lora else { return };
        let Some(layer) = lora.layers.get(li) else {
            return;
        };
        if b == 0 {
            return;
        }
        let mut act: [Option<Active>; 7] = [None; 7];
        for (slot, (p, out)) in act.iter_mut().zip(outs.iter()) {
            let Some(pair) = layer[*p as usize].filter(|q| q.scale != 0.0) else {
                continue;
            };
            let rows = out.len() / b;
            if let (Some(a_rb), Some(b_rb)) = (pair.ty.row_bytes(cols), pair.ty.row_bytes(rows)) {
                *slot = Some(Active {
                    pair,
                    a_rb,
                    b_rb,
                    rows,
                });
            }
        }
        let act = &act[..outs.len()];
        let Some(first) = act.iter().flatten().next().copied() else {
            return;
        };
        let (ty, r) = (first.pair.ty, first.pair.rank);
        let uniform = act
            .iter()
            .flatten()
            .all(|a| a.pair.ty == ty && a.pair.rank == r);
        let n_h: usize = act.iter().flatten().map(|_| b * r).sum();
        let n_c: usize = act.iter().flatten().map(|a| b * a.rows).sum();
        if b >= 4 || !uniform || n_h + n_c > tmp.len() {
            for ((_, out), a) in outs.iter_mut().zip(act) {
                if let Some(a) = a {
                    self.side_per_token(lora.bytes, a, input, cols, b, out, par);
                }
            }
            return;
        }
        let macs: usize = act.iter().flatten().map(|a| b * r * (a.rows + cols)).sum();
        let par = if macs < PARALLEL_MACS {
            &Sequential
        } else {
            par
        };
        let kernels = self.kernels;
        let members = || act.iter().flatten();
        let (h, c) = tmp.split_at_mut(n_h);
        // h: per member, per token, `r` values (A·x).
        let blocks = ty.blocks().is_some();
        let a_chunk = if blocks { r } else { 1 };
        par.for_each_chunk(h, a_chunk, &|i, o| {
            let (m, rest) = ((i * a_chunk) / (b * r), (i * a_chunk) % (b * r));
            let a = members().nth(m).expect("a member per h block");
            let (t, j) = (rest / r, rest % r);
            let x = &input[t * cols..(t + 1) * cols];
            let mat = &lora.bytes[a.pair.a..a.pair.a + r * a.a_rb];
            let rows = &mat[j * a.a_rb..(j + o.len()) * a.a_rb];
            a_times_x(kernels, ty, rows, a.a_rb, x, o);
        });
        let h = &*h;
        // c: per member, per token, its rows of s·B·h; pieces never straddle a token and are
        // whole 32-blocks for block types (their rows are whole blocks).
        let step = if blocks { 32 } else { 1 };
        let chunk = (1..=B_CHUNK / step)
            .rev()
            .map(|k| k * step)
            .find(|k| members().all(|a| a.rows.is_multiple_of(*k)))
            .unwrap_or(step);
        let c = &mut c[..n_c];
        par.for_each_chunk(c, chunk, &|i, o| {
            let mut start = i * chunk;
            for (m, a) in members().enumerate() {
                if start < b * a.rows {
                    let (t, r0) = (start / a.rows, start % a.rows);
                    let side = Side {
                        bt: &lora.bytes[a.pair.b..a.pair.b + r * a.b_rb],
                        b_rb: a.b_rb,
                        ty,
                        scale: a.pair.scale,
                    };
                    o.fill(0.0);
                    let hm = &h[(m * b + t) * r..(m * b + t + 1) * r];
                    side.add(o, hm, r0);
                    return;
                }
                start -= b * a.rows;
            }
        });
        let mut off = 0;
        for ((_, out), a) in outs.iter_mut().zip(act) {
            if let Some(a) = a {
                let n = b * a.rows;
                for (y, v) in out[..n].iter_mut().zip(&c[off..off + n]) {
                    *y += v;
                }
                off += n;
            }
        }
    }

    /// One side path, a token per task: its `A·x`, then its rows, in one pass over the pool.
    #[allow(clippy::too_many_arguments)]
    fn side_per_token(
        &self,
        bytes: &[u8],
        a: &Active,
        input: &[f32],
        cols: usize,
        b: usize,
        out: &mut [f32],
        par: &dyn Parallel,
    ) {
        let (r, rows) = (a.pair.rank, a.rows);
        let par = if b * r * (rows + cols) < PARALLEL_MACS {
            &Sequential
        } else {
            par
        };
        let mat = &bytes[a.pair.a..a.pair.a + r * a.a_rb];
        let side = Side {
            bt: &bytes[a.pair.b..a.pair.b + r * a.b_rb],
            b_rb: a.b_rb,
            ty: a.pair.ty,
            scale: a.pair.scale,
        };
        let kernels = self.kernels;
        par.for_each_chunk(&mut out[..b * rows], rows, &|t, o| {
            let mut h = [0f32; MAX_LORA_RANK];
            let h = &mut h[..r];
            let x = &input[t * cols..(t + 1) * cols];
            a_times_x(kernels, a.pair.ty, mat, a.a_rb, x, h);
            for (c, piece) in o.chunks_mut(B_CHUNK).enumerate() {
                side.add(piece, h, c * B_CHUNK);
            }
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
