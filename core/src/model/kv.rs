//! The KV cache: every sequence's keys and values, a slot each, in one caller buffer.

use super::config::Config;
use super::error::ModelError;

/// Most sequences one [`KvCache`] holds.
pub const MAX_SLOTS: usize = 64;

/// The KV cache: f16 keys and values for `slots` sequences of up to `capacity` positions
/// each, in one caller buffer.
///
/// Layout `[slot][layer][k|v][kv_head][position][head_dim]`, so that attention reads each
/// head's history contiguously and a slot is a cache of its own.
#[derive(Debug)]
pub struct KvCache<'b> {
    pub(super) data: &'b mut [u16],
    pub(super) capacity: usize,
    pub(super) slots: usize,
    pub(super) lens: [usize; MAX_SLOTS],
    pub(super) kv_heads: usize,
    pub(super) head_dim: usize,
    pub(super) slot_elems: usize,
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

    pub(super) fn head_base(&self, slot: usize, layer: usize, which: usize, head: usize) -> usize {
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
