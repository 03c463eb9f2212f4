//! LoRA adapters applied unmerged: each adapted projection adds a low-rank side path,
//! `y = W·x + s·B(A·x)`, to its base product, whatever the base weight format.
//!
//! The shell owns the adapter's matrices in one byte buffer and describes them here by
//! offsets (as [`super::Weights`] does the model's), so the core stays free of allocation.

use trillim_kernels::f16::{bf16_to_f32, f16_to_f32};
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
/// (`rank × rows`, row-major: `Bᵀ`), at byte offsets of [`Lora::bytes`], in an
/// `f32`-activation type (`F32`, `F16` or `BF16`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraPair {
    /// Byte offset of `A`.
    pub a: usize,
    /// Byte offset of `Bᵀ`.
    pub b: usize,
    /// Element type of both matrices.
    pub ty: WeightType,
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

fn elem_bytes(ty: WeightType) -> usize {
    if ty == WeightType::F32 {
        4
    } else {
        2
    }
}

/// `acc[i] += w · row[i]` for a row of `ty` elements (`F32`, `F16` or `BF16`).
fn add_scaled(acc: &mut [f32], row: &[u8], ty: WeightType, w: f32) {
    match ty {
        WeightType::F32 => {
            for (a, c) in acc.iter_mut().zip(row.chunks_exact(4)) {
                *a += w * f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        WeightType::BF16 => {
            for (a, c) in acc.iter_mut().zip(row.chunks_exact(2)) {
                *a += w * bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        _ => {
            for (a, c) in acc.iter_mut().zip(row.chunks_exact(2)) {
                *a += w * f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
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
        let Some(matvec) = self.kernels.matvec_f32(pair.ty) else {
            return;
        };
        let r = pair.rank;
        let par = if b * r * (rows + cols) < PARALLEL_MACS {
            &Sequential
        } else {
            par
        };
        let es = elem_bytes(pair.ty);
        let a_rb = cols * es;
        let a = &lora.bytes[pair.a..pair.a + r * a_rb];
        let bt = &lora.bytes[pair.b..pair.b + r * rows * es];
        let side = Side {
            bt,
            rows,
            ty: pair.ty,
            scale: pair.scale,
        };
        if b >= 4 {
            // A token per task: its A·x, then its rows, in one pass over the pool.
            par.for_each_chunk(&mut out[..b * rows], rows, &|t, o| {
                let mut h = [0f32; MAX_LORA_RANK];
                let h = &mut h[..r];
                matvec(a, a_rb, &input[t * cols..(t + 1) * cols], h);
                for (c, piece) in o.chunks_mut(B_CHUNK).enumerate() {
                    side.add(piece, h, c * B_CHUNK);
                }
            });
            return;
        }
        // A token or a few: h[t][j] = A[j] · x[t] a dot product per task, then chunks of
        // rows that never straddle a token.
        let h = &mut tmp[..b * r];
        par.for_each_chunk(h, 1, &|i, o| {
            let (t, j) = (i / r, i % r);
            let x = &input[t * cols..(t + 1) * cols];
            matvec(&a[j * a_rb..(j + 1) * a_rb], a_rb, x, o);
        });
        let h = &*h;
        let chunk = (1..=B_CHUNK.min(rows))
            .rev()
            .find(|c| rows.is_multiple_of(*c))
            .unwrap_or(1);
        par.for_each_chunk(&mut out[..b * rows], chunk, &|i, o| {
            let start = i * chunk;
            let (t, r0) = (start / rows, start % rows);
            side.add(o, &h[t * r..(t + 1) * r], r0);
        });
    }
}

/// The `B` half of a side path.
struct Side<'a> {
    /// `Bᵀ`, `rank × rows`.
    bt: &'a [u8],
    rows: usize,
    ty: WeightType,
    scale: f32,
}

impl Side<'_> {
    /// `o[i] += s · Σ_j h[j] · Bᵀ[j][r0 + i]` for a piece of at most [`B_CHUNK`] rows: a sum
    /// of `rank` contiguous row pieces, which vectorizes where rank-long dot products would
    /// not.
    fn add(&self, o: &mut [f32], h: &[f32], r0: usize) {
        let es = elem_bytes(self.ty);
        let mut acc = [0f32; B_CHUNK];
        let acc = &mut acc[..o.len()];
        for (j, &hj) in h.iter().enumerate() {
            let at = j * self.rows + r0;
            add_scaled(acc, &self.bt[at * es..(at + o.len()) * es], self.ty, hj);
        }
        for (y, v) in o.iter_mut().zip(acc.iter()) {
            *y += self.scale * v;
        }
    }
}
