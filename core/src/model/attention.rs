//! Causal grouped-query attention over the KV cache, each token against its own sequence.

use super::gemma::softcap;
use super::kv::KvCache;
use super::Forward;
use crate::math::expf_in_range;
use crate::parallel::Parallel;

/// Key positions whose scores attention computes before exponentiating them together.
const ATT_BLOCK: usize = 32;
/// Query heads that attention processes against the same key and value rows at once.
const ATT_HEADS: usize = 8;

impl Forward<'_> {
    /// Causal attention for tokens `t` at slot `slots[t]`, position `pos[t]` (keys already
    /// cached), one (token, head group) pair per task, with a single-pass (online) softmax.
    /// A sliding-window layer's query at position `p` sees the keys at `p - w + 1 ..= p` only;
    /// the cache keeps every position, so the window is a bound on the loop.
    pub(super) fn attention(
        &self,
        layer: usize,
        (slots, pos): (&[i32], &[i32]),
        kv: &KvCache<'_>,
        q: &[f32],
        out: &mut [f32],
        par: &dyn Parallel,
    ) {
        let c = self.config;
        let b = pos.len();
        let hd = c.head_dim;
        let group = c.n_heads / c.n_kv_heads;
        let scale = c.attn_scale;
        let cap = c.attn_softcap;
        let window = if c.sliding_window > 0 && c.is_local(layer) {
            c.sliding_window
        } else {
            usize::MAX
        };
        let scores_fn = self.kernels.scores_f16;
        let mix_fn = self.kernels.mix_f16;
        // Heads per task: as many of a key/value head's query heads as keep every thread
        // busy (they share each key and value row), else fewer.
        let per_task = (1..=group)
            .rev()
            .find(|&d| group.is_multiple_of(d) && b * c.n_heads / d >= 4 * par.threads())
            .unwrap_or(1);
        let tasks_per_token = c.n_heads / per_task;
        let task = |i: usize, out: &mut [f32]| {
            let (t, h0) = (i / tasks_per_token, (i % tasks_per_token) * per_task);
            let kh = h0 / group;
            let slot = slots[t] as usize;
            let kb = kv.head_base(slot, layer, 0, kh);
            let vb = kv.head_base(slot, layer, 1, kh);
            let n = pos[t] as usize + 1;
            for (sub, acc) in out.chunks_mut(ATT_HEADS * hd).enumerate() {
                let g = acc.len() / hd;
                let h = h0 + sub * ATT_HEADS;
                let qg = &q[t * c.q_dim() + h * hd..][..g * hd];
                acc.fill(0.0);
                let mut m = [f32::NEG_INFINITY; ATT_HEADS];
                let mut l = [0f32; ATT_HEADS];
                // Positions in blocks: every head's scores of a block first, then at most one
                // rescale of each running sum, the block's exponentials in one vectorizable
                // pass, then the weighted values.
                let mut e = [0f32; ATT_HEADS * ATT_BLOCK];
                let mut p0 = n.saturating_sub(window);
                while p0 < n {
                    let nb = ATT_BLOCK.min(n - p0);
                    let es = &mut e[..g * nb];
                    let keys = &kv.data[kb + p0 * hd..kb + (p0 + nb) * hd];
                    scores_fn(keys, qg, hd, es);
                    for j in 0..g {
                        let row = &mut es[j * nb..(j + 1) * nb];
                        let mut bm = f32::NEG_INFINITY;
                        for v in row.iter_mut() {
                            *v *= scale;
                        }
                        if cap > 0.0 {
                            softcap(row, cap);
                        }
                        for v in row.iter() {
                            bm = bm.max(*v);
                        }
                        if bm > m[j] {
                            let r = libm::expf(m[j] - bm);
                            for a in acc[j * hd..(j + 1) * hd].iter_mut() {
                                *a *= r;
                            }
                            l[j] *= r;
                            m[j] = bm;
                        }
                        // exp(x) for x ≤ 0; below −87 it is under 2^−126, which changes no sum.
                        for v in row.iter_mut() {
                            *v = expf_in_range((*v - m[j]).max(-87.0));
                        }
                        l[j] += row.iter().sum::<f32>();
                    }
                    mix_fn(es, &kv.data[vb + p0 * hd..vb + (p0 + nb) * hd], hd, acc);
                    p0 += nb;
                }
                for (j, a) in acc.chunks_exact_mut(hd).enumerate() {
                    let inv = 1.0 / l[j];
                    for v in a.iter_mut() {
                        *v *= inv;
                    }
                }
            }
        };
        par.for_each_chunk(&mut out[..b * c.q_dim()], per_task * hd, &task);
    }
}
