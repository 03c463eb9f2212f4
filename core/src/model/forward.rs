//! The transformer forward pass over a batch of tokens, for the `llama`/`mistral`, `bitnet`
//! and `bitnet-b1.58` family and, with the steps of [`super::qwen`] and [`super::gemma`], for
//! `qwen2`, `qwen3`, `gemma2` and `gemma3`:
//! embedding, then per layer attention and feed-forward blocks ([`super::norm`],
//! [`super::rope`], [`super::attention`], [`super::projection`]), then the logits of the
//! tokens that want them.

use trillim_kernels::f16::f32_to_f16;
use trillim_kernels::formats::dequantize_row;
use trillim_kernels::Kernels;

use super::config::{Activation, Config};
use super::error::ModelError;
use super::gemma::{gelu_mul, softcap};
use super::kv::{KvCache, SeqToken};
use super::lora::{Lora, Proj};
use super::norm::{rms_norm, silu_mul};
use super::scratch::Scratch;
use super::weights::{Buffers, Weights};
use crate::parallel::Parallel;

/// The tokens of one batch and where each goes.
#[derive(Clone, Copy)]
enum Items<'t> {
    /// One sequence (slot 0); logits after the last `n_out` tokens.
    One { tokens: &'t [u32], n_out: usize },
    /// Several sequences.
    Seqs(&'t [SeqToken]),
}

impl Items<'_> {
    fn len(&self) -> usize {
        match self {
            Items::One { tokens, .. } => tokens.len(),
            Items::Seqs(t) => t.len(),
        }
    }

    /// (token, slot, logits wanted) of item `i`.
    fn get(&self, i: usize) -> (u32, usize, bool) {
        match self {
            Items::One { tokens, n_out } => (tokens[i], 0, i + n_out >= tokens.len()),
            Items::Seqs(t) => (t[i].token, t[i].slot as usize, t[i].logits),
        }
    }

    fn sub(&self, start: usize, end: usize) -> Items<'_> {
        match *self {
            Items::One { tokens, n_out } => {
                // Keep "the last n_out of the whole" as "the last k of this piece".
                let first_out = tokens.len() - n_out;
                let piece = &tokens[start..end];
                let k = end.saturating_sub(first_out.max(start));
                Items::One {
                    tokens: piece,
                    n_out: k.min(piece.len()),
                }
            }
            Items::Seqs(t) => Items::Seqs(&t[start..end]),
        }
    }
}

/// Everything the forward pass reads: configuration, weight layout, model bytes and kernels.
#[derive(Clone, Copy, Debug)]
pub struct Forward<'a> {
    /// Hyper-parameters.
    pub config: &'a Config,
    /// Weight layout within `bufs`.
    pub weights: &'a Weights,
    /// Model bytes and the weights the shell built at load.
    pub bufs: Buffers<'a>,
    /// Selected kernels.
    pub kernels: &'a Kernels,
    /// A LoRA adapter applied to the projections, if any.
    pub lora: Option<Lora<'a>>,
}

impl Forward<'_> {
    /// Runs `tokens` through the model at positions `kv.len()..`, appending to the cache.
    ///
    /// `logits` receives `logits.len() / n_vocab` rows: the logits after each of the last that
    /// many tokens. Fails (changing nothing) if a token is out of range or the cache is full.
    pub fn run(
        &self,
        tokens: &[u32],
        kv: &mut KvCache<'_>,
        s: &mut Scratch<'_>,
        par: &dyn Parallel,
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        let c = self.config;
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(ModelError::BadToken(t));
        }
        if kv.lens[0] + tokens.len() > kv.capacity {
            return Err(ModelError::ContextFull);
        }
        let n_out = logits.len() / c.n_vocab;
        if n_out > tokens.len() {
            return Err(ModelError::BufferTooSmall("logits"));
        }
        self.run_items(Items::One { tokens, n_out }, kv, s, par, logits)
    }

    /// Runs a batch whose tokens extend several sequences: each token goes to the end of its
    /// slot, in order (a slot's tokens may be a prompt chunk, another's a single decode step).
    ///
    /// `logits` receives one row per token with `logits: true`, in batch order. A token's
    /// logits are the same, bit for bit, whatever else is in its batch. Fails (changing
    /// nothing) if a token or slot is out of range or a slot would overflow.
    pub fn run_seqs(
        &self,
        tokens: &[SeqToken],
        kv: &mut KvCache<'_>,
        s: &mut Scratch<'_>,
        par: &dyn Parallel,
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        let c = self.config;
        let mut next = kv.lens;
        let mut rows = 0;
        for t in tokens {
            if t.token as usize >= c.n_vocab {
                return Err(ModelError::BadToken(t.token));
            }
            let slot = t.slot as usize;
            if slot >= kv.slots {
                return Err(ModelError::BufferTooSmall("kv cache slots"));
            }
            next[slot] += 1;
            if next[slot] > kv.capacity {
                return Err(ModelError::ContextFull);
            }
            rows += usize::from(t.logits);
        }
        if rows * c.n_vocab > logits.len() {
            return Err(ModelError::BufferTooSmall("logits"));
        }
        self.run_items(Items::Seqs(tokens), kv, s, par, logits)
    }

    fn run_items(
        &self,
        items: Items<'_>,
        kv: &mut KvCache<'_>,
        s: &mut Scratch<'_>,
        par: &dyn Parallel,
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        let nv = self.config.n_vocab;
        let mut row = 0;
        let mut start = 0;
        while start < items.len() {
            let end = (start + s.max_batch).min(items.len());
            let piece = items.sub(start, end);
            self.batch(piece, kv, s, par)?;
            // The output matrix is the largest one: rows wanting logits share its passes, as
            // many at a time as the scratch holds results for.
            let group = (s.tmp.len() / nv).clamp(1, s.max_batch);
            let d = self.config.d_model;
            let mut k = 0;
            for t in 0..piece.len() {
                if piece.get(t).2 {
                    s.xn[k * d..(k + 1) * d].copy_from_slice(&s.x[t * d..(t + 1) * d]);
                    k += 1;
                }
                if k == group || (k > 0 && t + 1 == piece.len()) {
                    self.logits_rows(s, k, &mut logits[row * nv..(row + k) * nv], par);
                    row += k;
                    k = 0;
                }
            }
            start = end;
        }
        Ok(())
    }

    /// Logits for the `k` final hidden states gathered at the start of `s.xn`.
    fn logits_rows(&self, s: &mut Scratch<'_>, k: usize, out: &mut [f32], par: &dyn Parallel) {
        let c = self.config;
        let d = c.d_model;
        let w = self.weights.output_norm.data(&self.bufs);
        for row in s.xn[..k * d].chunks_exact_mut(d) {
            rms_norm(row, w, c.rms_eps);
        }
        let w = self.weights.output;
        let mut fmt = None;
        self.project(
            &w,
            &s.xn[..k * d],
            k,
            out,
            s.act_qs,
            s.act_d,
            s.act_sums,
            s.tmp,
            &mut fmt,
            par,
        );
        if c.final_softcap > 0.0 {
            softcap(&mut out[..k * c.n_vocab], c.final_softcap);
        }
    }

    fn batch(
        &self,
        items: Items<'_>,
        kv: &mut KvCache<'_>,
        s: &mut Scratch<'_>,
        par: &dyn Parallel,
    ) -> Result<(), ModelError> {
        let c = self.config;
        let (d, qd, kvd, ff) = (c.d_model, c.q_dim(), c.kv_dim(), c.d_ff);
        let b = items.len();
        let w = self.weights;

        // Each token's slot and position: the end of its slot, after its batch-mates.
        let mut next = kv.lens;
        let emb = &w.token_embd;
        for t in 0..b {
            let (tok, slot, _) = items.get(t);
            s.seq_slot[t] = slot as i32;
            s.seq_pos[t] = next[slot] as i32;
            next[slot] += 1;
            let rb = emb.row_bytes();
            let row = &emb.data(&self.bufs)[tok as usize * rb..][..rb];
            dequantize_row(emb.ty, row, &mut s.x[t * d..(t + 1) * d], emb.scale);
            if c.embd_scale != 1.0 {
                for v in &mut s.x[t * d..(t + 1) * d] {
                    *v *= c.embd_scale;
                }
            }
        }
        // The RoPE table of the layer kind (sliding-window or global) last built.
        let mut table_local = None;
        let long = c.rope_long(kv.capacity);

        for (li, l) in w.layers.iter().enumerate() {
            let local = c.sliding_window > 0 && c.is_local(li);
            if table_local != Some(local) {
                self.rope_table(&s.seq_pos[..b], s.rope, local, long);
                table_local = Some(local);
            }
            // Attention block.
            self.norm_rows(&s.x[..b * d], &mut s.xn[..b * d], d, &l.attn_norm, par);
            let mut fmt = None;
            let xn = &s.xn[..b * d];
            self.project_all(
                &[&l.q, &l.k, &l.v],
                xn,
                b,
                &mut [&mut s.q[..b * qd], &mut s.k[..b * kvd], &mut s.v[..b * kvd]],
                (&mut *s.act_qs, &mut *s.act_d, &mut *s.act_sums, &mut *s.tmp),
                &mut fmt,
                par,
            );
            let xn = &s.xn[..b * d];
            let mut outs = [
                (Proj::Q, &mut s.q[..b * qd]),
                (Proj::K, &mut s.k[..b * kvd]),
                (Proj::V, &mut s.v[..b * kvd]),
            ];
            self.lora_sides(li, xn, d, b, &mut outs, s.tmp, par);
            let qkv = (&mut s.q[..b * qd], &mut s.k[..b * kvd], &mut s.v[..b * kvd]);
            self.qkv_extras(l, b, qkv, par);
            for t in 0..b {
                let rope = &s.rope[t * c.rope_dim..(t + 1) * c.rope_dim];
                for h in s.q[t * qd..(t + 1) * qd].chunks_exact_mut(c.head_dim) {
                    self.apply_rope(h, rope);
                }
                for h in s.k[t * kvd..(t + 1) * kvd].chunks_exact_mut(c.head_dim) {
                    self.apply_rope(h, rope);
                }
                let (slot, pos) = (s.seq_slot[t] as usize, s.seq_pos[t] as usize);
                for kh in 0..c.n_kv_heads {
                    let src = kh * c.head_dim..(kh + 1) * c.head_dim;
                    let kb = kv.head_base(slot, li, 0, kh) + pos * c.head_dim;
                    let vb = kv.head_base(slot, li, 1, kh) + pos * c.head_dim;
                    for (o, &x) in kv.data[kb..kb + c.head_dim]
                        .iter_mut()
                        .zip(&s.k[t * kvd..][src.clone()])
                    {
                        *o = f32_to_f16(x);
                    }
                    for (o, &x) in kv.data[vb..vb + c.head_dim]
                        .iter_mut()
                        .zip(&s.v[t * kvd..][src])
                    {
                        *o = f32_to_f16(x);
                    }
                }
            }
            let seqs = (&s.seq_slot[..b], &s.seq_pos[..b]);
            self.attention(li, seqs, kv, &s.q[..b * qd], &mut s.att[..b * qd], par);
            if let Some(sub) = &l.attn_sub_norm {
                let w = sub.data(&self.bufs);
                par.for_each_chunk(&mut s.att[..b * qd], qd, &|_, row| {
                    rms_norm(row, w, c.rms_eps)
                });
            }
            let mut fmt = None;
            let (aq, ad, asum, tmp) =
                (&mut *s.act_qs, &mut *s.act_d, &mut *s.act_sums, &mut *s.tmp);
            self.project(
                &l.o,
                &s.att[..b * qd],
                b,
                &mut s.xn[..b * d],
                aq,
                ad,
                asum,
                tmp,
                &mut fmt,
                par,
            );
            let mut outs = [(Proj::O, &mut s.xn[..b * d])];
            self.lora_sides(li, &s.att[..b * qd], qd, b, &mut outs, s.tmp, par);
            self.post_norm(&l.attn_post_norm, &mut s.xn[..b * d], d, par);
            for (x, o) in s.x[..b * d].iter_mut().zip(&s.xn[..b * d]) {
                *x += o;
            }

            // Feed-forward block.
            self.norm_rows(&s.x[..b * d], &mut s.xn[..b * d], d, &l.ffn_norm, par);
            let mut fmt = None;
            let xn = &s.xn[..b * d];
            self.project_all(
                &[&l.gate, &l.up],
                xn,
                b,
                &mut [&mut s.g[..b * ff], &mut s.u[..b * ff]],
                (&mut *s.act_qs, &mut *s.act_d, &mut *s.act_sums, &mut *s.tmp),
                &mut fmt,
                par,
            );
            let xn = &s.xn[..b * d];
            let mut outs = [
                (Proj::Gate, &mut s.g[..b * ff]),
                (Proj::Up, &mut s.u[..b * ff]),
            ];
            self.lora_sides(li, xn, d, b, &mut outs, s.tmp, par);
            // Gate activation times up, then the optional sub-norm, one token row per task.
            let sub = l.ffn_sub_norm.as_ref().map(|t| t.data(&self.bufs));
            let u = &s.u[..b * ff];
            par.for_each_chunk(&mut s.g[..b * ff], ff, &|t, g| {
                let u = &u[t * ff..(t + 1) * ff];
                match c.activation {
                    Activation::Silu => silu_mul(g, u),
                    Activation::GeluTanh => gelu_mul(g, u),
                    Activation::Relu2 => {
                        for (g, u) in g.iter_mut().zip(u) {
                            let r = g.max(0.0);
                            *g = r * r * u;
                        }
                    }
                }
                if let Some(w) = sub {
                    rms_norm(g, w, c.rms_eps);
                }
            });
            let mut fmt = None;
            let (aq, ad, asum, tmp) =
                (&mut *s.act_qs, &mut *s.act_d, &mut *s.act_sums, &mut *s.tmp);
            self.project(
                &l.down,
                &s.g[..b * ff],
                b,
                &mut s.xn[..b * d],
                aq,
                ad,
                asum,
                tmp,
                &mut fmt,
                par,
            );
            let mut outs = [(Proj::Down, &mut s.xn[..b * d])];
            self.lora_sides(li, &s.g[..b * ff], ff, b, &mut outs, s.tmp, par);
            self.post_norm(&l.ffn_post_norm, &mut s.xn[..b * d], d, par);
            for (x, o) in s.x[..b * d].iter_mut().zip(&s.xn[..b * d]) {
                *x += o;
            }
        }
        kv.lens = next;
        Ok(())
    }
}
