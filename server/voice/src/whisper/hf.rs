//! Whisper checkpoints in Hugging Face's `transformers` layout (`openai/whisper-*`):
//! `model.safetensors` with `model.encoder.*` / `model.decoder.*` tensors (separate q, k, v
//! projections, k without a bias, `proj_out` tied to `model.decoder.embed_tokens`),
//! `config.json` for the sizes, `tokenizer.json` (or `vocab.json` and `added_tokens.json`)
//! for the pieces and `generation_config.json` for the suppressed tokens.

use std::path::Path;

use trillim_runtime::safetensors::{self, Dtype, TensorView};

use super::linalg::{FloatKernels, Linear};
use super::model::{DecoderLayer, Dims, Embeddings, EncoderLayer, Norm, Whisper};
use super::{read_ids, DecodeConfig, ModelDirError, SpeechModel, Vocab, VocabError};
use crate::ct2::{f16_to_f32, DataType};

/// Why a Hugging Face Whisper checkpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error(transparent)]
    Safetensors(#[from] safetensors::SafetensorsError),
    #[error("tensor `{0}` is missing")]
    Missing(String),
    #[error("tensor `{name}` has shape {got:?}, expected {want:?}")]
    Shape {
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("tensor `{0}` is not a float tensor (F32, F16 or BF16)")]
    Dtype(String),
    #[error("`{0}` is missing or not a positive integer")]
    Config(&'static str),
    #[error("the model's sizes are inconsistent: {0}")]
    Inconsistent(String),
    #[error("`proj_out.weight` differs from `model.decoder.embed_tokens.weight` (untied output projections are not supported)")]
    Untied,
}

struct Tensors<'a> {
    views: std::collections::HashMap<String, TensorView<'a>>,
}

impl Tensors<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<&TensorView<'_>, HfError> {
        let t = self
            .views
            .get(name)
            .ok_or_else(|| HfError::Missing(name.into()))?;
        if t.shape != shape {
            return Err(HfError::Shape {
                name: name.into(),
                got: t.shape.clone(),
                want: shape.to_vec(),
            });
        }
        Ok(t)
    }

    fn f32s(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, HfError> {
        let t = self.get(name, shape)?;
        Ok(match t.dtype {
            Dtype::F32 => t
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => t
                .data
                .chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            Dtype::BF16 => t
                .data
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                .collect(),
            _ => return Err(HfError::Dtype(name.into())),
        })
    }

    fn norm(&self, p: &str, d: usize) -> Result<Norm, HfError> {
        Ok(Norm {
            gamma: self.f32s(&format!("{p}.weight"), &[d])?,
            beta: self.f32s(&format!("{p}.bias"), &[d])?,
        })
    }

    fn linear(&self, p: &str, n_out: usize, n_in: usize) -> Result<Linear, HfError> {
        Ok(Linear::new(
            self.f32s(&format!("{p}.weight"), &[n_out, n_in])?,
            Some(self.f32s(&format!("{p}.bias"), &[n_out])?),
            n_out,
            n_in,
        ))
    }

    /// q, k and v projections stacked into one `[3·d][d]` layer (k has no bias: zeros).
    fn qkv(&self, p: &str, d: usize) -> Result<Linear, HfError> {
        let mut w = self.f32s(&format!("{p}.q_proj.weight"), &[d, d])?;
        w.extend(self.f32s(&format!("{p}.k_proj.weight"), &[d, d])?);
        w.extend(self.f32s(&format!("{p}.v_proj.weight"), &[d, d])?);
        let mut b = self.f32s(&format!("{p}.q_proj.bias"), &[d])?;
        b.extend(self.k_bias(p, d)?);
        b.extend(self.f32s(&format!("{p}.v_proj.bias"), &[d])?);
        Ok(Linear::new(w, Some(b), 3 * d, d))
    }

    /// k and v projections stacked into one `[2·d][d]` layer (cross-attention's memory).
    fn kv(&self, p: &str, d: usize) -> Result<Linear, HfError> {
        let mut w = self.f32s(&format!("{p}.k_proj.weight"), &[d, d])?;
        w.extend(self.f32s(&format!("{p}.v_proj.weight"), &[d, d])?);
        let mut b = self.k_bias(p, d)?;
        b.extend(self.f32s(&format!("{p}.v_proj.bias"), &[d])?);
        Ok(Linear::new(w, Some(b), 2 * d, d))
    }

    /// Whisper's k projections have no bias; a checkpoint that carries one is honoured.
    fn k_bias(&self, p: &str, d: usize) -> Result<Vec<f32>, HfError> {
        let name = format!("{p}.k_proj.bias");
        if self.views.contains_key(&name) {
            self.f32s(&name, &[d])
        } else {
            Ok(vec![0.0; d])
        }
    }
}

fn config_usize(v: &serde_json::Value, key: &'static str) -> Result<usize, HfError> {
    v.get(key)
        .and_then(|x| x.as_u64())
        .and_then(|x| usize::try_from(x).ok())
        .filter(|&x| x > 0)
        .ok_or(HfError::Config(key))
}

/// Builds the network from `model.safetensors` bytes and the parsed `config.json`.
pub fn whisper_from_safetensors(
    buf: &[u8],
    config: &serde_json::Value,
) -> Result<Whisper, HfError> {
    let d = config_usize(config, "d_model")?;
    let dims = Dims {
        n_mels: config_usize(config, "num_mel_bins")?,
        d_model: d,
        enc_layers: config_usize(config, "encoder_layers")?,
        dec_layers: config_usize(config, "decoder_layers")?,
        enc_heads: config_usize(config, "encoder_attention_heads")?,
        dec_heads: config_usize(config, "decoder_attention_heads")?,
        n_audio_ctx: config_usize(config, "max_source_positions")?,
        n_text_ctx: config_usize(config, "max_target_positions")?,
        n_vocab: config_usize(config, "vocab_size")?,
    };
    if d % dims.enc_heads != 0 || d % dims.dec_heads != 0 || dims.n_text_ctx < 4 {
        return Err(HfError::Inconsistent(format!("{dims:?}")));
    }
    let enc_ff = config_usize(config, "encoder_ffn_dim")?;
    let dec_ff = config_usize(config, "decoder_ffn_dim")?;
    if enc_ff != dec_ff {
        return Err(HfError::Inconsistent(format!(
            "encoder_ffn_dim {enc_ff} and decoder_ffn_dim {dec_ff} differ"
        )));
    }
    let t = Tensors {
        views: safetensors::parse(buf)?
            .into_iter()
            .map(|v| (v.name.clone(), v))
            .collect(),
    };
    let conv = |p: &str, n_in: usize| -> Result<Linear, HfError> {
        Ok(Linear::new(
            t.f32s(&format!("{p}.weight"), &[d, n_in, 3])?,
            Some(t.f32s(&format!("{p}.bias"), &[d])?),
            d,
            n_in * 3,
        ))
    };
    let enc_layers = (0..dims.enc_layers)
        .map(|i| {
            let p = format!("model.encoder.layers.{i}");
            Ok(EncoderLayer {
                attn_norm: t.norm(&format!("{p}.self_attn_layer_norm"), d)?,
                qkv: t.qkv(&format!("{p}.self_attn"), d)?,
                attn_out: t.linear(&format!("{p}.self_attn.out_proj"), d, d)?,
                ffn_norm: t.norm(&format!("{p}.final_layer_norm"), d)?,
                fc1: t.linear(&format!("{p}.fc1"), enc_ff, d)?,
                fc2: t.linear(&format!("{p}.fc2"), d, enc_ff)?,
            })
        })
        .collect::<Result<_, HfError>>()?;
    let dec_layers = (0..dims.dec_layers)
        .map(|i| {
            let p = format!("model.decoder.layers.{i}");
            Ok(DecoderLayer {
                self_norm: t.norm(&format!("{p}.self_attn_layer_norm"), d)?,
                self_qkv: t.qkv(&format!("{p}.self_attn"), d)?,
                self_out: t.linear(&format!("{p}.self_attn.out_proj"), d, d)?,
                cross_norm: t.norm(&format!("{p}.encoder_attn_layer_norm"), d)?,
                cross_q: t.linear(&format!("{p}.encoder_attn.q_proj"), d, d)?,
                cross_kv: t.kv(&format!("{p}.encoder_attn"), d)?,
                cross_out: t.linear(&format!("{p}.encoder_attn.out_proj"), d, d)?,
                ffn_norm: t.norm(&format!("{p}.final_layer_norm"), d)?,
                fc1: t.linear(&format!("{p}.fc1"), dec_ff, d)?,
                fc2: t.linear(&format!("{p}.fc2"), d, dec_ff)?,
            })
        })
        .collect::<Result<_, HfError>>()?;
    let emb_name = "model.decoder.embed_tokens.weight";
    let emb = t.get(emb_name, &[dims.n_vocab, d])?;
    // Usually absent (tied weights are saved once); when present it must be the same matrix.
    if let Some(p) = t.views.get("proj_out.weight") {
        if p.shape != emb.shape || p.dtype != emb.dtype || p.data != emb.data {
            return Err(HfError::Untied);
        }
    }
    let dtype = match emb.dtype {
        Dtype::F32 => DataType::F32,
        Dtype::F16 => DataType::F16,
        Dtype::BF16 => DataType::Bf16,
        _ => return Err(HfError::Dtype(emb_name.into())),
    };
    let kernels = FloatKernels::best(dtype).expect("a float element type");
    Ok(Whisper {
        dims,
        conv1: conv("model.encoder.conv1", dims.n_mels)?,
        conv2: conv("model.encoder.conv2", d)?,
        enc_pos: t.f32s(
            "model.encoder.embed_positions.weight",
            &[dims.n_audio_ctx, d],
        )?,
        enc_layers,
        enc_norm: t.norm("model.encoder.layer_norm", d)?,
        tok_emb: Embeddings {
            bytes: emb.data.to_vec(),
            dtype,
            kernels,
        },
        dec_pos: t.f32s(
            "model.decoder.embed_positions.weight",
            &[dims.n_text_ctx, d],
        )?,
        dec_layers,
        dec_norm: t.norm("model.decoder.layer_norm", d)?,
    })
}

/// The pieces by id from `tokenizer.json` (its BPE vocabulary and added tokens), as
/// `vocabulary.txt` lines.
fn pieces_from_tokenizer(v: &serde_json::Value) -> Option<Vec<String>> {
    let mut by_id: Vec<Option<String>> = Vec::new();
    let mut put = |id: u64, piece: &str| {
        let id = usize::try_from(id).ok().filter(|&i| i < 1 << 20)?;
        if by_id.len() <= id {
            by_id.resize(id + 1, None);
        }
        by_id[id] = Some(piece.to_string());
        Some(())
    };
    for (piece, id) in v.get("model")?.get("vocab")?.as_object()? {
        put(id.as_u64()?, piece)?;
    }
    for t in v.get("added_tokens")?.as_array()? {
        put(t.get("id")?.as_u64()?, t.get("content")?.as_str()?)?;
    }
    by_id.into_iter().collect()
}

/// The pieces by id from `vocab.json` and `added_tokens.json` (both token → id maps).
fn pieces_from_maps(maps: &[serde_json::Value]) -> Option<Vec<String>> {
    let mut by_id: Vec<Option<String>> = Vec::new();
    for m in maps {
        for (piece, id) in m.as_object()? {
            let id = usize::try_from(id.as_u64()?)
                .ok()
                .filter(|&i| i < 1 << 20)?;
            if by_id.len() <= id {
                by_id.resize(id + 1, None);
            }
            by_id[id] = Some(piece.clone());
        }
    }
    by_id.into_iter().collect()
}

/// Loads a Hugging Face Whisper directory.
pub fn load_dir(dir: &Path) -> Result<SpeechModel, ModelDirError> {
    let shown = |name: &str| dir.join(name).display().to_string();
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|source| ModelDirError::Io {
            path: shown(name),
            source,
        })
    };
    let json = |name: &str| -> Result<serde_json::Value, ModelDirError> {
        serde_json::from_slice(&read(name)?).map_err(|e| ModelDirError::Config {
            path: shown(name),
            msg: e.to_string(),
        })
    };
    let config = json("config.json")?;
    if config.get("model_type").and_then(|m| m.as_str()) != Some("whisper") {
        return Err(ModelDirError::Config {
            path: shown("config.json"),
            msg: "`model_type` is not \"whisper\"".into(),
        });
    }
    let bin = read("model.safetensors")?;
    let net = whisper_from_safetensors(&bin, &config).map_err(|source| ModelDirError::Hf {
        path: shown("model.safetensors"),
        source,
    })?;
    drop(bin);
    let (vocab_file, pieces) = if dir.join("tokenizer.json").is_file() {
        let v = json("tokenizer.json")?;
        ("tokenizer.json", pieces_from_tokenizer(&v))
    } else {
        let mut maps = vec![json("vocab.json")?];
        if dir.join("added_tokens.json").is_file() {
            maps.push(json("added_tokens.json")?);
        }
        ("vocab.json", pieces_from_maps(&maps))
    };
    let pieces = pieces.ok_or_else(|| ModelDirError::Config {
        path: shown(vocab_file),
        msg: "not a token → id table covering every id".into(),
    })?;
    let vocab_err = |source| ModelDirError::Vocab {
        path: shown(vocab_file),
        source,
    };
    if pieces.iter().any(|p| p.contains('\n')) {
        return Err(ModelDirError::Config {
            path: shown(vocab_file),
            msg: "a piece holds a line break".into(),
        });
    }
    let mut pieces = pieces;
    // Older tokenizers end at `<|notimestamps|>`; the ids after it up to the model's vocabulary
    // size are the timestamps `<|0.00|>`, `<|0.02|>`, … (as transformers and CTranslate2 name them).
    if pieces.last().map(String::as_str) == Some("<|notimestamps|>") {
        let first = pieces.len();
        pieces.extend(
            (0..net.dims.n_vocab.saturating_sub(first))
                .map(|i| format!("<|{:.2}|>", i as f64 * 0.02)),
        );
    }
    let vocab = Vocab::from_lines(&pieces.join("\n")).map_err(vocab_err)?;
    if vocab.len() != net.dims.n_vocab {
        return Err(vocab_err(VocabError::Size {
            got: vocab.len(),
            want: net.dims.n_vocab,
        }));
    }
    // Suppressions: generation_config.json, else config.json (older checkpoints keep them there).
    let gen = if dir.join("generation_config.json").is_file() {
        json("generation_config.json")?
    } else {
        config.clone()
    };
    let decode = DecodeConfig {
        suppress_ids: read_ids(&gen, "suppress_tokens"),
        suppress_ids_begin: read_ids(&gen, "begin_suppress_tokens"),
    };
    Ok(SpeechModel {
        net,
        vocab,
        config: decode,
    })
}
