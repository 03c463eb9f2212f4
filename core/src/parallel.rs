//! The one seam through which the shells add threads to the forward pass.

/// Runs independent pieces of work, possibly on several threads.
///
/// Core code only ever hands out disjoint `&mut` chunks, so implementations need no locking.
pub trait Parallel {
    /// Calls `f(i, chunk)` for every chunk `i` of `out` split into `chunk_len`-element pieces
    /// (the last may be shorter), in any order and possibly concurrently.
    fn for_each_chunk(
        &self,
        out: &mut [f32],
        chunk_len: usize,
        f: &(dyn Fn(usize, &mut [f32]) + Sync),
    );

    /// Calls `f(t, qs, d, sums)` for every token `t` of quantized activations, where `qs`,
    /// `d` and `sums` are token `t`'s pieces (`cols`, `blocks` and `blocks` long) of the three
    /// buffers, in any order and possibly concurrently.
    ///
    /// The default runs every token on the calling thread.
    fn for_each_act_row(&self, act: ActRows<'_>, cols: usize, blocks: usize, f: &ActRowFn<'_>) {
        sequential_act_rows(act, cols, blocks, f);
    }

    /// Number of threads that share the work (used to size chunks).
    fn threads(&self) -> usize;
}

/// A task over one token's quantized activations: `(token, codes, scales, code sums)`.
pub type ActRowFn<'a> = dyn Fn(usize, &mut [i8], &mut [f32], &mut [i32]) + Sync + 'a;

/// Quantized activations of several tokens, token after token: `n` tokens of `cols` codes and
/// `blocks` scales and code sums each.
#[derive(Debug)]
pub struct ActRows<'a> {
    /// Tokens to split.
    pub n: usize,
    /// Codes, at least `n · cols`.
    pub qs: &'a mut [i8],
    /// Block scales, at least `n · blocks`.
    pub d: &'a mut [f32],
    /// Block code sums, at least `n · blocks`.
    pub sums: &'a mut [i32],
}

/// [`Parallel::for_each_act_row`] on the calling thread.
fn sequential_act_rows(act: ActRows<'_>, cols: usize, blocks: usize, f: &ActRowFn<'_>) {
    let rows = act
        .qs
        .chunks_mut(cols.max(1))
        .zip(act.d.chunks_mut(blocks.max(1)))
        .zip(act.sums.chunks_mut(blocks.max(1)))
        .take(act.n);
    for (t, ((qs, d), sums)) in rows.enumerate() {
        f(t, qs, d, sums);
    }
}

/// Runs everything on the calling thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sequential;

impl Parallel for Sequential {
    fn for_each_chunk(
        &self,
        out: &mut [f32],
        chunk_len: usize,
        f: &(dyn Fn(usize, &mut [f32]) + Sync),
    ) {
        for (i, c) in out.chunks_mut(chunk_len.max(1)).enumerate() {
            f(i, c);
        }
    }

    fn threads(&self) -> usize {
        1
    }
}
