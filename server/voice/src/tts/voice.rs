//! Voice states: the FlowLM's key/value cache after a voice prompt, as pocket-tts exports
//! them (`embeddings/<voice>.safetensors`, keys `transformer.layers.N.self_attn/cache`
//! `[2, 1, T, heads, head_dim]` and `…/offset` or the older `…/current_end`).

use super::transformer::KvCache;
use super::weights::Tensors;
use super::TtsError;

/// A voice, ready to be cloned into each utterance's cache.
#[derive(Debug, Clone)]
pub struct VoiceState {
    pub cache: KvCache,
}

/// Largest voice prompt accepted, in positions (a few minutes of audio).
pub const MAX_VOICE_POSITIONS: usize = 4096;

impl VoiceState {
    /// Parses a voice-state file for a FlowLM of `layers` layers with `kv_width`-wide rows.
    pub fn from_safetensors(
        buf: &[u8],
        layers: usize,
        kv_width: usize,
    ) -> Result<VoiceState, TtsError> {
        let mut t = Tensors::parse("voice state", buf)?;
        let mut cache = KvCache::new(layers);
        let mut offset = None;
        for (i, lc) in cache.layers.iter_mut().enumerate() {
            let p = format!("transformer.layers.{i}.self_attn");
            let (shape, data) = t
                .take_any(&format!("{p}/cache"))
                .map_err(|_| TtsError::Voice(format!("{p}/cache is missing")))?;
            let [2, 1, len, h, d] = shape[..] else {
                return Err(TtsError::Voice(format!("{p}/cache has shape {shape:?}")));
            };
            if h * d != kv_width {
                return Err(TtsError::Voice(format!(
                    "the voice was made for another model ({h}×{d} wide keys, this one has {kv_width})"
                )));
            }
            let off = match (
                t.int(&format!("{p}/offset")),
                t.shape(&format!("{p}/current_end")),
            ) {
                (Some((_, v)), _) if !v.is_empty() => usize::try_from(v[0]).ok(),
                (_, Some(s)) if s.len() == 1 => Some(s[0]),
                _ => Some(len),
            }
            .filter(|&o| o <= len && o <= MAX_VOICE_POSITIONS)
            .ok_or_else(|| TtsError::Voice(format!("{p}: the position is outside the cache")))?;
            if *offset.get_or_insert(off) != off {
                return Err(TtsError::Voice(
                    "the layers disagree on the position".into(),
                ));
            }
            let n = off * kv_width;
            let plane = len * kv_width;
            lc.k = data[..n].to_vec();
            lc.v = data[plane..plane + n].to_vec();
            if lc.k.iter().chain(&lc.v).any(|x| !x.is_finite()) {
                return Err(TtsError::Voice(
                    "the voice state holds non-finite values".into(),
                ));
            }
        }
        cache.offset = offset.unwrap_or(0);
        Ok(VoiceState { cache })
    }
}
