//! The transformer forward pass over a batch of tokens.

use trillim_kernels::act::{quantize_groups, quantize_per_token};
use trillim_kernels::f16::f32_to_f16;
use trillim_kernels::formats::dequantize_row;
use trillim_kernels::{ActBatch, ActQ8, GemmFn, Kernels, MatVecFn, TileKernels, WeightType};

use super::config::{ActQuant, Activation, Config, RopeStyle};
use super::error::ModelError;
use super::scratch::Scratch;
use super::weights::{Buffers, Storage, Tensor, Weights};
use crate::parallel::{ActRows, Parallel};

/// Most sequences one [`KvCache`] holds.
pub const MAX_SLOTS: usize = 64;

/// The KV cache: f16 keys and values for `slots` sequences of up to `capacity` positions
/// each, in one caller buffer.
///
/// Layout `[slot][layer][k|v][kv_head][position][head_dim]`, so that attention reads each
/// head's history contiguously and a slot is a cache of its own.
#[derive(Debug)]
pub struct KvCache<'b> {
    data: &'b mut [u16],
    capacity: usize,
    slots: usize,
    lens: [usize; MAX_SLOTS],
    kv_heads: usize,
    head_dim: usize,
    slot_elems: usize,
}

impl<'b> KvCache<'b> {
    /// Elements (`u16`) needed for one slot of `capacity` positions of `config`.
    pub fn elems(config: &Config, capacity: usize) -> usize {
        config.kv_elems_per_pos() * capacity
    }

    /// Wraps `data` (at least [`KvCache::elems`] long) as an empty one-sequence cache.
    pub fn new(config: &Config, data: &'b mut [u16], capacity: usize) -> Result<Self, ModelError> {
        Self::with_slots(config, data, capacity, 1)
    }

    /// Wraps `data` (at least `slots ×` [`KvCache::elems`] long) as `slots` empty sequences.
    pub fn with_slots(
        config: &Config,
        data: &'b mut [u16],
        capacity: usize,
        slots: usize,
    ) -> Result<Self, ModelError> {
        if slots == 0 || slots > MAX_SLOTS {
            return Err(ModelError::BufferTooSmall("kv cache slots"));
        }
        let slot_elems = Self::elems(config, capacity);
        if data.len() < slot_elems * slots {
            return Err(ModelError::BufferTooSmall("kv cache"));
        }
        Ok(KvCache {
            data,
            capacity,
            slots,
            lens: [0; MAX_SLOTS],
            kv_heads: config.n_kv_heads,
            head_dim: config.head_dim,
            slot_elems,
        })
    }

    /// Wraps `data` whose first `len` positions were filled by earlier calls.
    pub fn resume(
        config: &Config,
        data: &'b mut [u16],
        capacity: usize,
        len: usize,
    ) -> Result<Self, ModelError> {
        let mut kv = Self::new(config, data, capacity)?;
        kv.lens[0] = len.min(capacity);
        Ok(kv)
    }

    /// Positions filled (of the first sequence).
    pub fn len(&self) -> usize {
        self.lens[0]
    }

    /// True when no position of the first sequence is filled.
    pub fn is_empty(&self) -> bool {
        self.lens[0] == 0
    }

    /// Positions each sequence can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sequences held.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Positions filled in `slot` (0 for a slot out of range).
    pub fn slot_len(&self, slot: usize) -> usize {
        self.lens.get(slot).copied().unwrap_or(0)
    }

    /// Declares the first `len` positions of `slot` filled, e.g. by earlier calls over the same
    /// buffer (capped at the capacity; ignored for a slot out of range).
    pub fn set_slot_len(&mut self, slot: usize, len: usize) {
        if slot < self.slots {
            self.lens[slot] = len.min(self.capacity);
        }
    }

    /// Forgets every position from `len` on (keeps a reusable prefix) of the first sequence.
    pub fn truncate(&mut self, len: usize) {
        self.lens[0] = self.lens[0].min(len);
    }

    fn head_base(&self, slot: usize, layer: usize, which: usize, head: usize) -> usize {
        slot * self.slot_elems
            + ((layer * 2 + which) * self.kv_heads + head) * self.capacity * self.head_dim
    }
}

/// One token of a batch over several sequences: it goes to the end of sequence `slot`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqToken {
    /// The token id.
    pub token: u32,
    /// The sequence (KV cache slot) it extends.
    pub slot: u16,
    /// Whether logits are wanted after this token.
    pub logits: bool,
}

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
}

/// How a projection's input must be quantized (None: the kernel takes `f32`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct ActFormat {
    /// Kernel block length.
    block: usize,
    /// Elements sharing one scale (a multiple of `block`), unless `per_token`.
    group: usize,
    /// One scale for the whole vector.
    per_token: bool,
}

fn rms_norm(x: &mut [f32], w: &[u8], eps: f32) {
    // Eight interleaved partial sums, combined pairwise, so the loop vectorizes (in f64 the
    // order only moves the last bits of the sum, far below the f32 scale's rounding).
    let mut part = [0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (p, &v) in part.iter_mut().zip(c) {
            *p += (v as f64) * (v as f64);
        }
    }
    for (p, &v) in part.iter_mut().zip(chunks.remainder()) {
        *p += (v as f64) * (v as f64);
    }
    let ss =
        ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
    let scale = (1.0 / libm::sqrt(ss / x.len() as f64 + eps as f64)) as f32;
    for (i, v) in x.iter_mut().enumerate() {
        let b = &w[4 * i..4 * i + 4];
        *v = *v * scale * f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + libm::expf(-x))
}

/// `libm::expf` (FreeBSD's `e_expf`) for `|x| < 87` without branches: the same `f32` operations
/// in the same order, so bit-identical to it, in a form the compiler vectorizes.
#[inline(always)]
fn expf_in_range(x: f32) -> f32 {
    // libm's constants, as written there.
    #![allow(clippy::excessive_precision)]
    const LN2_HI: f32 = 6.9314575195e-01; // 0x3f317200
    const LN2_LO: f32 = 1.4286067653e-06; // 0x35bfbe8e
    const INV_LN2: f32 = 1.4426950216e+00; // 0x3fb8aa3b
    const P1: f32 = 1.6666625440e-1; // 0x3e2aaa8f
    const P2: f32 = -2.7667332906e-3; // 0xbb355215
    let bits = x.to_bits();
    let hx = bits & 0x7fff_ffff;
    let neg = bits >> 31 != 0;
    // Argument reduction x = k·ln2 + r (k = 0 leaves x as it is: x − 0 · LN2_HI = x).
    let k = if hx > 0x3f85_1592 {
        (INV_LN2 * x + if neg { -0.5 } else { 0.5 }) as i32
    } else if hx > 0x3eb1_7218 {
        if neg {
            -1
        } else {
            1
        }
    } else {
        0
    };
    let kf = k as f32;
    let hi = x - kf * LN2_HI;
    let lo = kf * LN2_LO;
    let r = hi - lo;
    let rr = r * r;
    let c = r - rr * (P1 + rr * P2);
    let y = 1.0 + (r * c / (2.0 - c) - lo + hi);
    // |k| ≤ 126, so 2^k is a normal float and scaling is one multiplication (by 1 for k = 0).
    let scaled = y * f32::from_bits(((0x7f + k) as u32) << 23);
    if hx > 0x3900_0000 {
        scaled
    } else {
        1.0 + x
    }
}

/// `g[i] = silu(g[i]) · u[i]`, bit-identical to [`silu`], vectorized in groups of 16 whose
/// inputs are all inside [`expf_in_range`]'s range.
fn silu_mul(g: &mut [f32], u: &[f32]) {
    const GROUP: usize = 16;
    let mut gs = g.chunks_exact_mut(GROUP);
    let mut us = u.chunks_exact(GROUP);
    for (g, u) in (&mut gs).zip(&mut us) {
        // NaN compares false and takes the general path.
        if g.iter().fold(true, |ok, &x| ok & (x.abs() < 87.0)) {
            for (g, u) in g.iter_mut().zip(u) {
                *g = *g / (1.0 + expf_in_range(-*g)) * u;
            }
        } else {
            for (g, u) in g.iter_mut().zip(u) {
                *g = silu(*g) * u;
            }
        }
    }
    for (g, u) in gs.into_remainder().iter_mut().zip(us.remainder()) {
        *g = silu(*g) * u;
    }
}

impl Forward<'_> {
    fn act_format(&self, w: &Tensor) -> Option<ActFormat> {
        let block = w.ty.act_block();
        if block == 0 {
            return None;
        }
        let per_token = w.ty.is_ternary() && self.config.act_quant == ActQuant::PerToken;
        // TQ1_0/TQ2_0 take llama.cpp's Q8_K activations: one scale per 256 elements.
        let group = match w.ty {
            WeightType::TQ1_0 | WeightType::TQ2_0 => 256,
            _ => block,
        };
        Some(ActFormat {
            block,
            group,
            per_token,
        })
    }

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
        }
        self.rope_table(&s.seq_pos[..b], s.rope);

        for (li, l) in w.layers.iter().enumerate() {
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
            // Gate activation times up, then the optional sub-norm, one token row per task.
            let sub = l.ffn_sub_norm.as_ref().map(|t| t.data(&self.bufs));
            let u = &s.u[..b * ff];
            par.for_each_chunk(&mut s.g[..b * ff], ff, &|t, g| {
                let u = &u[t * ff..(t + 1) * ff];
                match c.activation {
                    Activation::Silu => silu_mul(g, u),
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
            for (x, o) in s.x[..b * d].iter_mut().zip(&s.xn[..b * d]) {
                *x += o;
            }
        }
        kv.lens = next;
        Ok(())
    }

    /// `dst[t] = rms_norm(src[t]) · w` for every token row of `d` elements, rows spread over
    /// threads.
    fn norm_rows(&self, src: &[f32], dst: &mut [f32], d: usize, w: &Tensor, par: &dyn Parallel) {
        let (w, eps) = (w.data(&self.bufs), self.config.rms_eps);
        par.for_each_chunk(dst, d, &|t, row| {
            row.copy_from_slice(&src[t * d..(t + 1) * d]);
            rms_norm(row, w, eps);
        });
    }

    /// Fills `rope[t]` with `cos` (first half) and `sin` (second half) for position `pos[t]`.
    fn rope_table(&self, pos: &[i32], rope: &mut [f32]) {
        let c = self.config;
        let half = c.rope_dim / 2;
        for (t, &p) in pos.iter().enumerate() {
            let p = p as f64 * c.rope_linear_scale as f64;
            let r = &mut rope[t * c.rope_dim..(t + 1) * c.rope_dim];
            for i in 0..half {
                let mut freq = libm::pow(c.rope_base as f64, -2.0 * i as f64 / c.rope_dim as f64);
                if let Some(f) = &self.weights.rope_freqs {
                    let bytes = &f.data(&self.bufs)[4 * i..4 * i + 4];
                    freq /= f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as f64;
                }
                let theta = p * freq;
                r[i] = libm::cos(theta) as f32;
                r[half + i] = libm::sin(theta) as f32;
            }
        }
    }

    fn apply_rope(&self, h: &mut [f32], rope: &[f32]) {
        let half = self.config.rope_dim / 2;
        let (cos, sin) = rope.split_at(half);
        match self.config.rope_style {
            RopeStyle::AdjacentPairs => {
                for i in 0..half {
                    let (a, b) = (h[2 * i], h[2 * i + 1]);
                    h[2 * i] = a * cos[i] - b * sin[i];
                    h[2 * i + 1] = a * sin[i] + b * cos[i];
                }
            }
            RopeStyle::HalfSplit => {
                for i in 0..half {
                    let (a, b) = (h[i], h[i + half]);
                    h[i] = a * cos[i] - b * sin[i];
                    h[i + half] = a * sin[i] + b * cos[i];
                }
            }
        }
    }

    /// Causal attention for tokens `t` at slot `slots[t]`, position `pos[t]` (keys already
    /// cached), one (token, head group) pair per task, with a single-pass (online) softmax.
    fn attention(
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
        let scale = 1.0 / libm::sqrtf(hd as f32);
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
                let mut p0 = 0;
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

    /// The int8-activation kernels for `w` (none for `f32`-activation types).
    fn int8_kernels(&self, w: &Tensor) -> (Option<MatVecFn>, Option<GemmFn>) {
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
    fn quantize_input(
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
                quantize_per_token(x, f.block, qs, d, sums);
            } else {
                quantize_groups(x, f.block, f.group, qs, d, sums);
            }
        };
        par.for_each_act_row(act, cols, nb, &quantize);
        *fmt = want;
    }

    /// `outs[i][t] = ws[i] · input[t]` for `b` tokens and matrices that share their input: one
    /// parallel pass over all their rows when decoding one token, a pass per matrix otherwise.
    #[allow(clippy::too_many_arguments)]
    fn project_all(
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
    fn project_together(
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
    fn project(
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
fn scale_rows(out: &mut [f32], scale: f32) {
    if scale != 1.0 {
        for v in out.iter_mut() {
            *v *= scale;
        }
    }
}

/// Key positions whose scores attention computes before exponentiating them together.
const ATT_BLOCK: usize = 32;
/// Query heads that attention processes against the same key and value rows at once.
const ATT_HEADS: usize = 8;

/// Rows per task: enough tasks to balance `threads`, tiles of a multiple of 16 rows.
fn chunk_rows(rows: usize, threads: usize) -> usize {
    if threads <= 1 {
        return rows.clamp(1, 256);
    }
    let per = rows.div_ceil(threads * 4);
    per.div_ceil(16).max(1) * 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expf_in_range_is_libm_bit_for_bit() {
        let limit = 87.0f32.to_bits();
        let mut bits = 0u32;
        while bits < limit {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                assert_eq!(expf_in_range(x).to_bits(), libm::expf(x).to_bits(), "{x:e}");
            }
            // Every value near the reduction thresholds, a stride elsewhere.
            let near = [0x3900_0000u32, 0x3eb1_7218, 0x3f85_1592]
                .iter()
                .any(|&t| bits.abs_diff(t) < 4096);
            bits += if near { 1 } else { 61 };
        }
    }

    #[test]
    fn silu_mul_matches_silu() {
        let mut x = 0x1234_5678u32;
        let mut g: [f32; 203] = core::array::from_fn(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as f32 / (1 << 20) as f32 - 8.0
        });
        g[40] = f32::NAN;
        g[70] = 100.0;
        g[71] = -100.0;
        g[90] = f32::INFINITY;
        g[120] = -0.0;
        let u: [f32; 203] = core::array::from_fn(|i| 0.5 + i as f32 * 0.01);
        let mut got = g;
        silu_mul(&mut got, &u);
        for i in 0..g.len() {
            let want = silu(g[i]) * u[i];
            assert_eq!(got[i].to_bits(), want.to_bits(), "{}", g[i]);
        }
    }
}
