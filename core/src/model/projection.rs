//! Matrix products: activation quantization in each weight format's blocks, the kernel for each
//! format, and the parallel passes (one token, a few sharing one pass, or many in row tiles).

use trillim_kernels::{ActBatch, ActQ8, GemmFn, MatVecFn, TileKernels};

use super::config::ActQuant;
use super::weights::{Storage, Tensor};
use super::Forward;
use crate::parallel::{ActRows, Parallel};

/// How a projection's input must be quantized (None: the kernel takes `f32`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct ActFormat {
    /// Kernel block length.
    block: usize,
    /// Elements sharing one scale (a multiple of `block`), unless `per_token`.
    group: usize,
    /// One scale for the whole vector.
    per_token: bool,
}

impl Forward<'_> {
    pub(super) fn act_format(&self, w: &Tensor) -> Option<ActFormat> {
        let block = w.ty.act_block();
        if block == 0 {
            return None;
        }
        let per_token = w.ty.is_ternary() && self.config.act_quant == ActQuant::PerToken;
        // The types llama.cpp pairs with Q8_K activations share one scale per 256 elements.
        let group = w.ty.act_group();
        Some(ActFormat {
            block,
            group,
            per_token,
        })
    }

    /// The int8-activation kernels for `w` (none for `f32`-activation types).
    pub(super) fn int8_kernels(&self, w: &Tensor) -> (Option<MatVecFn>, Option<GemmFn>) {
        if w.storage == Storage::Tiles {
            // A shell tiles weights only for a table with tile kernels; the reference serves
            // any other table it is combined with.
            let t = self
                .kernels
                .ternary_tiles
                .unwrap_or_else(TileKernels::scalar);
            return (Some(t.matvec), Some(t.gemm));
        }
        (self.kernels.matvec_q8(w.ty), self.kernels.gemm_q8(w.ty))
    }

    /// Quantizes the `act.n` token rows of `input` (`cols` wide) as `want` says into `act`,
    /// unless `fmt` says they already are.
    pub(super) fn quantize_input(
        &self,
        want: Option<ActFormat>,
        input: &[f32],
        cols: usize,
        act: ActRows<'_>,
        fmt: &mut Option<ActFormat>,
        par: &dyn Parallel,
    ) {
        let Some(f) = want else { return };
        if *fmt == want {
            return;
        }
        let (b, nb) = (act.n, cols / f.block);
        let act = ActRows {
            n: b,
            qs: &mut act.qs[..b * cols],
            d: &mut act.d[..b * nb],
            sums: &mut act.sums[..b * nb],
        };
        let quantize = |t: usize, qs: &mut [i8], d: &mut [f32], sums: &mut [i32]| {
            let x = &input[t * cols..(t + 1) * cols];
            if f.per_token {
                (self.kernels.quantize_per_token)(x, f.block, qs, d, sums);
            } else {
                (self.kernels.quantize_groups)(x, f.block, f.group, qs, d, sums);
            }
        };
        par.for_each_act_row(act, cols, nb, &quantize);
        *fmt = want;
    }

    /// `outs[i][t] = ws[i] · input[t]` for `b` tokens and matrices that share their input: one
    /// parallel pass over all their rows when decoding one token, a pass per matrix otherwise.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn project_all(
        &self,
        ws: &[&Tensor],
        input: &[f32],
        b: usize,
        outs: &mut [&mut [f32]],
        (act_qs, act_d, act_sums, tmp): (&mut [i8], &mut [f32], &mut [i32], &mut [f32]),
        fmt: &mut Option<ActFormat>,
        par: &dyn Parallel,
    ) {
        if b == 1 {
            let act = (&mut *act_qs, &mut *act_d, &mut *act_sums);
            if self.project_together(ws, input, outs, act, &mut *tmp, fmt, par) {
                return;
            }
        }
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            let (qs, d, sums, t) = (&mut *act_qs, &mut *act_d, &mut *act_sums, &mut *tmp);
            self.project(w, input, b, out, qs, d, sums, t, fmt, par);
        }
    }

    /// For one token, `outs[i] = ws[i] · input` for matrices that share their input, in one
    /// parallel pass over all their rows (one barrier instead of one per matrix). Returns
    /// false, doing nothing, when they cannot share a pass (different activation formats,
    /// `f32` kernels, or a `tmp` too small for all their rows).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn project_together(
        &self,
        ws: &[&Tensor],
        input: &[f32],
        outs: &mut [&mut [f32]],
        (qs, d, sums): (&mut [i8], &mut [f32], &mut [i32]),
        tmp: &mut [f32],
        fmt: &mut Option<ActFormat>,
        par: &dyn Parallel,
    ) -> bool {
        let want = self.act_format(ws[0]);
        let cols = ws[0].cols;
        let total: usize = ws.iter().map(|w| w.rows).sum();
        // Tiled matrices must start on a tile boundary of the combined rows, so that every
        // task's piece of them is whole tiles.
        let mut start = 0;
        let fits = ws.iter().all(|w| {
            let aligned = w.storage != Storage::Tiles || start % 16 == 0;
            start += w.rows;
            aligned
                && w.cols == cols
                && self.act_format(w) == want
                && self.int8_kernels(w).0.is_some()
        });
        let Some(f) = want.filter(|_| fits && tmp.len() >= total) else {
            return false;
        };
        let act = ActRows {
            n: 1,
            qs: &mut *qs,
            d: &mut *d,
            sums: &mut *sums,
        };
        self.quantize_input(want, input, cols, act, fmt, par);
        let nb = cols / f.block;
        let a = ActQ8 {
            qs: &qs[..cols],
            d: &d[..nb],
            sums: &sums[..nb],
            block: f.block,
        };
        // Whole tiles of 16 rows per task, so that no piece of a tiled matrix is cut mid-tile.
        let chunk = chunk_rows(total, par.threads());
        par.for_each_chunk(&mut tmp[..total], chunk, &|i, dst| {
            let (lo, hi) = (i * chunk, i * chunk + dst.len());
            let mut start = 0;
            for w in ws {
                let (a0, a1) = (lo.max(start), hi.min(start + w.rows));
                if a0 < a1 {
                    let rb = w.row_bytes();
                    let rows = &w.data(&self.bufs)[(a0 - start) * rb..(a1 - start) * rb];
                    let out = &mut dst[a0 - lo..a1 - lo];
                    if let Some(k) = self.int8_kernels(w).0 {
                        k(rows, rb, &a, out);
                    }
                    scale_rows(out, w.scale);
                }
                start += w.rows;
            }
        });
        let mut start = 0;
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            out[..w.rows].copy_from_slice(&tmp[start..start + w.rows]);
            start += w.rows;
        }
        true
    }

    /// `out[t] = w · input[t]` for `b` tokens; quantizes `input` unless `fmt` says it already is.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn project(
        &self,
        w: &Tensor,
        input: &[f32],
        b: usize,
        out: &mut [f32],
        act_qs: &mut [i8],
        act_d: &mut [f32],
        act_sums: &mut [i32],
        tmp: &mut [f32],
        fmt: &mut Option<ActFormat>,
        par: &dyn Parallel,
    ) {
        let cols = w.cols;
        let rows = w.rows;
        let data = w.data(&self.bufs);
        let rb = w.row_bytes();
        let want = self.act_format(w);
        let act = ActRows {
            n: b,
            qs: act_qs,
            d: act_d,
            sums: act_sums,
        };
        self.quantize_input(want, input, cols, act, fmt, par);
        let (qs, ds, sums) = (&*act_qs, &*act_d, &*act_sums);
        let (q8, gemm) = self.int8_kernels(w);
        let f32k = self.kernels.matvec_f32(w.ty);
        let scale = w.scale;
        let chunk_rows = chunk_rows(rows, par.threads());
        let n_blocks = want.map(|f| cols / f.block).unwrap_or(0);
        let compute = |first_row: usize, nrows: usize, t: usize, dst: &mut [f32]| {
            let wrows = &data[first_row * rb..(first_row + nrows) * rb];
            if let (Some(k), Some(_)) = (q8, want) {
                let blk = want.map(|f| f.block).unwrap_or(32);
                let a = ActQ8 {
                    qs: &qs[t * cols..(t + 1) * cols],
                    d: &ds[t * n_blocks..(t + 1) * n_blocks],
                    sums: &sums[t * n_blocks..(t + 1) * n_blocks],
                    block: blk,
                };
                k(wrows, rb, &a, dst);
            } else if let Some(k) = f32k {
                k(wrows, rb, &input[t * cols..(t + 1) * cols], dst);
            }
            scale_rows(dst, scale);
        };
        if b == 1 {
            par.for_each_chunk(&mut out[..rows], chunk_rows, &|i, dst| {
                compute(i * chunk_rows, dst.len(), 0, dst);
            });
            return;
        }
        // Several tokens: each task takes a tile of rows for all tokens (so the tile is read
        // from memory once), laid out [tile][token][row] in `tmp`, then scattered.
        let tile = chunk_rows * b;
        par.for_each_chunk(&mut tmp[..rows * b], tile, &|i, dst| {
            let first = i * chunk_rows;
            let n = dst.len() / b;
            match (gemm, want) {
                (Some(g), Some(f)) => {
                    let batch = ActBatch {
                        qs: &qs[..b * cols],
                        d: &ds[..b * n_blocks],
                        sums: &sums[..b * n_blocks],
                        block: f.block,
                        cols,
                        n: b,
                    };
                    g(&data[first * rb..(first + n) * rb], rb, &batch, dst);
                    scale_rows(dst, scale);
                }
                _ => {
                    for t in 0..b {
                        compute(first, n, t, &mut dst[t * n..(t + 1) * n]);
                    }
                }
            }
        });
        // Scatter [tile][token][row] into [token][row], one token per task.
        let tmp = &*tmp;
        par.for_each_chunk(&mut out[..rows * b], rows, &|t, dst| {
            let mut first = 0;
            while first < rows {
                let n = chunk_rows.min(rows - first);
                dst[first..first + n].copy_from_slice(&tmp[first * b + t * n..][..n]);
                first += n;
            }
        });
    }
}

/// Applies a matrix's output factor (I2_S tensor scale, `.scale` tensor) to its results.
pub(super) fn scale_rows(out: &mut [f32], scale: f32) {
    if scale != 1.0 {
        for v in out.iter_mut() {
            *v *= scale;
        }
    }
}

/// Rows per task: enough tasks to balance `threads`, tiles of a multiple of 16 rows.
fn chunk_rows(rows: usize, threads: usize) -> usize {
    if threads <= 1 {
        return rows.clamp(1, 256);
    }
    let per = rows.div_ceil(threads * 4);
    per.div_ceil(16).max(1) * 16
}
