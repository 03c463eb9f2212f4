use super::config::Config;
use super::error::ModelError;
use super::lora::MAX_LORA_RANK;

/// Element counts of the three arenas a [`Scratch`] is carved from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScratchSizes {
    /// `f32` elements.
    pub f32s: usize,
    /// `i8` elements (quantized activations).
    pub i8s: usize,
    /// `i32` elements (block sums of quantized activations).
    pub i32s: usize,
    /// Tokens processed per forward step.
    pub max_batch: usize,
}

struct Dims {
    d: usize,
    q: usize,
    kv: usize,
    ff: usize,
    rope: usize,
    max_in: usize,
    max_rows: usize,
    /// Extra `tmp` room for one token's group of projections that share their input (Q, K
    /// and V; gate and up) and their LoRA `A·x`: such a group runs as one pass.
    group: usize,
}

fn dims(c: &Config) -> Dims {
    let (d, q, kv, ff) = (c.d_model, c.q_dim(), c.kv_dim(), c.d_ff);
    Dims {
        d,
        q,
        kv,
        ff,
        rope: c.rope_dim,
        max_in: d.max(q).max(ff),
        max_rows: d.max(q).max(kv).max(ff),
        group: (q + 2 * kv).max(2 * ff).max(d) + 3 * MAX_LORA_RANK,
    }
}

impl ScratchSizes {
    /// Sizes for `config` processing up to `max_batch` tokens per step.
    pub fn new(config: &Config, max_batch: usize) -> ScratchSizes {
        let b = max_batch.max(1);
        let m = dims(config);
        let blocks = m.max_in.div_ceil(32);
        ScratchSizes {
            f32s: b * (m.d + 2 * m.q.max(m.d) + m.q + 2 * m.kv + 2 * m.ff + m.max_rows + m.rope)
                + m.group
                + b * blocks,
            i8s: b * m.max_in,
            i32s: b * blocks + 2 * b,
            max_batch: b,
        }
    }

    /// Total bytes.
    pub fn bytes(&self) -> usize {
        self.f32s * 4 + self.i8s + self.i32s * 4
    }
}

/// Working memory of the forward pass, carved from caller-provided arenas.
#[derive(Debug)]
#[allow(missing_docs)]
pub struct Scratch<'s> {
    pub max_batch: usize,
    pub x: &'s mut [f32],
    pub xn: &'s mut [f32],
    pub q: &'s mut [f32],
    pub k: &'s mut [f32],
    pub v: &'s mut [f32],
    pub att: &'s mut [f32],
    pub g: &'s mut [f32],
    pub u: &'s mut [f32],
    pub tmp: &'s mut [f32],
    pub rope: &'s mut [f32],
    pub act_qs: &'s mut [i8],
    pub act_d: &'s mut [f32],
    pub act_sums: &'s mut [i32],
    /// Each batch token's KV slot.
    pub seq_slot: &'s mut [i32],
    /// Each batch token's position in its slot.
    pub seq_pos: &'s mut [i32],
}

fn carve<'s, T>(buf: &mut &'s mut [T], n: usize) -> &'s mut [T] {
    let taken = core::mem::take(buf);
    let (a, b) = taken.split_at_mut(n);
    *buf = b;
    a
}

impl<'s> Scratch<'s> {
    /// Splits the arenas (at least [`ScratchSizes::new`]`(config, max_batch)` large).
    pub fn new(
        config: &Config,
        max_batch: usize,
        mut f: &'s mut [f32],
        mut i8s: &'s mut [i8],
        mut i32s: &'s mut [i32],
    ) -> Result<Scratch<'s>, ModelError> {
        let sz = ScratchSizes::new(config, max_batch);
        if f.len() < sz.f32s || i8s.len() < sz.i8s || i32s.len() < sz.i32s {
            return Err(ModelError::BufferTooSmall("scratch"));
        }
        let b = sz.max_batch;
        let m = dims(config);
        let blocks = m.max_in.div_ceil(32);
        Ok(Scratch {
            max_batch: b,
            x: carve(&mut f, b * m.d),
            xn: carve(&mut f, b * m.q.max(m.d)),
            q: carve(&mut f, b * m.q),
            k: carve(&mut f, b * m.kv),
            v: carve(&mut f, b * m.kv),
            att: carve(&mut f, b * m.q.max(m.d)),
            g: carve(&mut f, b * m.ff),
            u: carve(&mut f, b * m.ff),
            tmp: carve(&mut f, b * m.max_rows + m.group),
            rope: carve(&mut f, b * m.rope),
            act_d: carve(&mut f, b * blocks),
            act_qs: carve(&mut i8s, b * m.max_in),
            act_sums: carve(&mut i32s, b * blocks),
            seq_slot: carve(&mut i32s, b),
            seq_pos: carve(&mut i32s, b),
        })
    }
}
