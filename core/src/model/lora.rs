//! LoRA adapters applied unmerged: each adapted projection adds a low-rank side path,
//! `y = W·x + s·B(A·x)`, to its base product, whatever the base weight format.
//!
//! The shell owns the adapter's matrices in one byte buffer and describes them here by
//! offsets (as [`super::Weights`] does the model's), so the core stays free of allocation.

use trillim_kernels::WeightType;

use super::Forward;
use crate::parallel::Parallel;

/// Largest rank an adapter may have (its `A·x` lives in the scratch's `tmp`, which holds a
/// projection's rows; a loader also checks the rank against the projection's own sizes).
pub const MAX_LORA_RANK: usize = 512;

/// Output rows one task of the `B` product handles at most.
const B_CHUNK: usize = 64;

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

/// One adapted projection: `A` (`rank × cols`) and `B` (`rows × rank`), row-major, at byte
/// offsets of [`Lora::bytes`], in an `f32`-activation type (`F32`, `F16` or `BF16`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraPair {
    /// Byte offset of `A`.
    pub a: usize,
    /// Byte offset of `B`.
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
        let es = elem_bytes(pair.ty);
        let (a_rb, b_rb) = (cols * es, r * es);
        let a = &lora.bytes[pair.a..pair.a + r * a_rb];
        let bm = &lora.bytes[pair.b..pair.b + rows * b_rb];
        // h[t][j] = A[j] · x[t], one dot product per task.
        let h = &mut tmp[..b * r];
        par.for_each_chunk(h, 1, &|i, o| {
            let (t, j) = (i / r, i % r);
            matvec(
                &a[j * a_rb..(j + 1) * a_rb],
                a_rb,
                &input[t * cols..(t + 1) * cols],
                o,
            );
        });
        let h = &*h;
        // out[t][o] += s · B[o] · h[t], in chunks of rows that never straddle a token.
        let chunk = (1..=B_CHUNK.min(rows))
            .rev()
            .find(|c| rows.is_multiple_of(*c))
            .unwrap_or(1);
        let s = pair.scale;
        par.for_each_chunk(&mut out[..b * rows], chunk, &|i, o| {
            let start = i * chunk;
            let (t, r0) = (start / rows, start % rows);
            let mut acc = [0f32; B_CHUNK];
            let acc = &mut acc[..o.len()];
            matvec(
                &bm[r0 * b_rb..(r0 + o.len()) * b_rb],
                b_rb,
                &h[t * r..(t + 1) * r],
                acc,
            );
            for (y, v) in o.iter_mut().zip(acc.iter()) {
                *y += s * v;
            }
        });
    }
}
