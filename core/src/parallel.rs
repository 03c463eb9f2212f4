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

    /// Number of threads that share the work (used to size chunks).
    fn threads(&self) -> usize;
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
