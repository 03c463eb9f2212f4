//! Voice states: the FlowLM's key/value cache after a voice prompt, as pocket-tts exports
//! them (`embeddings/<voice>.safetensors`, keys `transformer.layers.N.self_attn/cache`
//! `[2, 1, T, heads, head_dim]` and `…/offset` or the older `…/current_end`), read and
//! written; and the preparation of a recording for cloning (`end_on_pause`).

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

impl VoiceState {
    /// The voice-state file of this voice (what `pocket-tts export-voice` writes): per layer
    /// `…/cache` F32 `[2, 1, T, kv_heads, head_dim]` and `…/offset` I64 `[1]`.
    pub fn to_safetensors(&self, kv_heads: usize, head_dim: usize) -> Vec<u8> {
        let t = self.cache.offset;
        let mut header = serde_json::Map::new();
        let mut blobs: Vec<Vec<u8>> = Vec::new();
        let mut off = 0usize;
        let mut push = |name: String, dtype: &str, shape: Vec<usize>, bytes: Vec<u8>| {
            header.insert(
                name,
                serde_json::json!({"dtype": dtype, "shape": shape,
                                   "data_offsets": [off, off + bytes.len()]}),
            );
            off += bytes.len();
            blobs.push(bytes);
        };
        for (i, lc) in self.cache.layers.iter().enumerate() {
            let p = format!("transformer.layers.{i}.self_attn");
            let n = t * kv_heads * head_dim;
            let bytes: Vec<u8> = lc.k[..n]
                .iter()
                .chain(&lc.v[..n])
                .flat_map(|x| x.to_le_bytes())
                .collect();
            push(
                format!("{p}/cache"),
                "F32",
                vec![2, 1, t, kv_heads, head_dim],
                bytes,
            );
            push(
                format!("{p}/offset"),
                "I64",
                vec![1],
                (t as i64).to_le_bytes().to_vec(),
            );
        }
        let mut h = serde_json::Value::Object(header).to_string().into_bytes();
        h.resize(h.len().div_ceil(8) * 8, b' ');
        let mut out = Vec::with_capacity(8 + h.len() + off);
        out.extend_from_slice(&(h.len() as u64).to_le_bytes());
        out.extend_from_slice(&h);
        for b in blobs {
            out.extend_from_slice(&b);
        }
        out
    }
}

/// Ends a voice prompt on exactly 80 ms of silence, as pocket-tts's `end_on_pause` does:
/// the trailing 20 ms frames more than 35 dB below the loudest are cut (with any partial
/// last frame), the last 20 ms of what remains fades out linearly and 80 ms of zeros follow.
pub fn end_on_pause(wav: &[f32], sample_rate: u32) -> Vec<f32> {
    let frame = ((0.02 * sample_rate as f64) as usize).max(1);
    let n = wav.len() / frame;
    if n == 0 {
        return wav.to_vec();
    }
    let db: Vec<f32> = wav[..n * frame]
        .chunks_exact(frame)
        .map(|c| {
            let ms = c.iter().map(|x| x * x).sum::<f32>() / frame as f32;
            20.0 * (ms.sqrt() + 1e-12).log10()
        })
        .collect();
    let max = db.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let last = db.iter().rposition(|&d| d > max - 35.0).unwrap_or(n - 1);
    let end = (last + 1) * frame;
    let mut out = wav[..end].to_vec();
    let fade = ((0.02 * sample_rate as f64) as usize).min(end);
    let start = end - fade;
    for (i, x) in out[start..].iter_mut().enumerate() {
        // torch.linspace(1, 0, fade)
        let w = if fade > 1 {
            1.0 - i as f32 / (fade - 1) as f32
        } else {
            1.0
        };
        *x *= w;
    }
    out.resize(end + (0.08 * sample_rate as f64) as usize, 0.0);
    out
}
