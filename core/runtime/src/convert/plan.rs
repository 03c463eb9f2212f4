//! What to write: the model's hyper-parameters from `config.json`, and for every GGUF tensor
//! its source, transform and type, checked against the checkpoint before anything is written.

use std::io::Write;

use trillim_core::kernels::f16::{bf16_to_f32, f16_to_f32};
use trillim_core::kernels::quantize::quantize_row;
use trillim_core::kernels::WeightType;

use super::checkpoint::Checkpoint;
use super::ConvertError;
use crate::gguf_write::{GgufWriter, TensorDecl, Value};
use crate::safetensors::Dtype;

/// Source bytes converted per step (at least one row, or one head for permuted matrices).
const CHUNK_BYTES: usize = 8 << 20;

/// The model families this converter reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `LlamaForCausalLM`, `MistralForCausalLM`: GGUF architecture `llama`.
    Llama,
    /// `BitNetForCausalLM` (BitNet b1.58 2B4T): GGUF architecture `bitnet-b1.58`.
    BitNet,
    /// `Qwen2ForCausalLM` (Qwen 2, 2.5): biases on q/k/v; GGUF architecture `qwen2`.
    Qwen2,
    /// `Qwen3ForCausalLM` (dense Qwen 3): per-head q/k norms; GGUF architecture `qwen3`.
    Qwen3,
}

/// Hyper-parameters from `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// The family.
    pub family: Family,
    /// Vocabulary size (embedding rows).
    pub n_vocab: usize,
    /// Hidden size.
    pub d_model: usize,
    /// Layers.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Dimension of a head.
    pub head_dim: usize,
    /// FFN inner size.
    pub d_ff: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base.
    pub rope_theta: f32,
    /// Linear RoPE scaling factor, if any.
    pub rope_linear: Option<f32>,
    /// Llama 3's RoPE scaling (`rope_type: "llama3"`): per rotary pair, the divisor of its
    /// frequency, written as GGUF's `rope_freqs.weight`.
    pub rope_factors: Option<Vec<f32>>,
    /// Trained context.
    pub ctx: usize,
    /// Whether the output matrix is the embedding.
    pub tied: bool,
}

impl ModelInfo {
    /// Reads `config.json`.
    pub fn from_config(c: &serde_json::Value) -> Result<ModelInfo, ConvertError> {
        let bad = |s: String| ConvertError::Config(s);
        let archs: Vec<&str> = c["architectures"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let model_type = c["model_type"].as_str().unwrap_or("");
        let family = if archs
            .iter()
            .any(|a| matches!(*a, "BitNetForCausalLM" | "BitnetForCausalLM"))
            || model_type == "bitnet"
        {
            Family::BitNet
        } else if archs
            .iter()
            .any(|a| matches!(*a, "LlamaForCausalLM" | "MistralForCausalLM"))
            || matches!(model_type, "llama" | "mistral")
        {
            Family::Llama
        } else if archs.contains(&"Qwen2ForCausalLM") || model_type == "qwen2" {
            Family::Qwen2
        } else if archs.contains(&"Qwen3ForCausalLM") || model_type == "qwen3" {
            Family::Qwen3
        } else {
            return Err(bad(format!(
                "architecture {archs:?} (model_type '{model_type}') is not supported \
                 (LlamaForCausalLM, MistralForCausalLM, BitNetForCausalLM, Qwen2ForCausalLM, \
                 Qwen3ForCausalLM)"
            )));
        };
        if c["use_sliding_window"].as_bool() == Some(true) {
            return Err(bad(
                "use_sliding_window is true: sliding-window attention is not converted".into(),
            ));
        }
        let dim = |k: &str| -> Result<usize, ConvertError> {
            c[k].as_u64()
                .filter(|&v| v > 0 && v <= 1 << 24)
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("{k} is missing or not a positive integer")))
        };
        let num = |k: &str, d: f64| -> Result<f32, ConvertError> {
            match c.get(k).filter(|v| !v.is_null()) {
                None => Ok(d as f32),
                Some(v) => v
                    .as_f64()
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .map(|v| v as f32)
                    .ok_or_else(|| bad(format!("{k} is not a positive number"))),
            }
        };
        let d_model = dim("hidden_size")?;
        let n_heads = dim("num_attention_heads")?;
        let n_kv_heads = if c["num_key_value_heads"].is_null() {
            n_heads
        } else {
            dim("num_key_value_heads")?
        };
        if n_heads % n_kv_heads != 0 {
            return Err(bad(format!(
                "num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv_heads}"
            )));
        }
        let head_dim = if c["head_dim"].is_null() {
            if d_model % n_heads != 0 {
                return Err(bad(
                    "hidden_size is not a multiple of num_attention_heads".into()
                ));
            }
            d_model / n_heads
        } else {
            dim("head_dim")?
        };
        if head_dim % 2 != 0 {
            return Err(bad(format!("head_dim {head_dim} is odd")));
        }
        let act = c["hidden_act"].as_str().unwrap_or("silu");
        let want_act = match family {
            Family::Llama | Family::Qwen2 | Family::Qwen3 => "silu",
            Family::BitNet => "relu2",
        };
        if act != want_act {
            return Err(bad(format!(
                "hidden_act '{act}' is not supported for this architecture ({want_act})"
            )));
        }
        let rope_theta = num("rope_theta", 10000.0)?;
        let (mut rope_linear, mut rope_factors) = (None, None);
        match &c["rope_scaling"] {
            serde_json::Value::Null => {}
            s => {
                let ty = s["rope_type"].as_str().or(s["type"].as_str()).unwrap_or("");
                match ty {
                    "linear" => rope_linear = Some(num_in(s, "factor")?),
                    "llama3" => rope_factors = Some(llama3_rope_factors(s, rope_theta, head_dim)?),
                    "default" => {}
                    other => {
                        return Err(bad(format!(
                            "rope_scaling type '{other}' is not supported (linear, llama3)"
                        )))
                    }
                }
            }
        }
        let tied = c["tie_word_embeddings"]
            .as_bool()
            .unwrap_or(family == Family::BitNet);
        Ok(ModelInfo {
            family,
            n_vocab: dim("vocab_size")?,
            d_model,
            n_layers: dim("num_hidden_layers")?,
            n_heads,
            n_kv_heads,
            head_dim,
            d_ff: dim("intermediate_size")?,
            rms_eps: num("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_linear,
            rope_factors,
            ctx: if c["max_position_embeddings"].is_null() {
                2048
            } else {
                dim("max_position_embeddings")?
            },
            tied,
        })
    }

    /// The GGUF architecture name.
    pub fn arch(&self) -> &'static str {
        match self.family {
            Family::Llama => "llama",
            Family::BitNet => "bitnet-b1.58",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
        }
    }
}

/// Llama 3's frequency-dependent RoPE scaling, as its reference defines it: rotary pairs whose
/// wavelength is shorter than `original_max_position_embeddings / high_freq_factor` keep their
/// frequency, those longer than `… / low_freq_factor` are slowed by `factor`, and those between
/// blend the two. Returns each pair's divisor.
fn llama3_rope_factors(
    s: &serde_json::Value,
    theta: f32,
    head_dim: usize,
) -> Result<Vec<f32>, ConvertError> {
    let factor = num_in(s, "factor")? as f64;
    let opt = |k: &str, d: f64| -> Result<f64, ConvertError> {
        if s[k].is_null() {
            Ok(d)
        } else {
            num_in(s, k).map(f64::from)
        }
    };
    let low = opt("low_freq_factor", 1.0)?;
    let high = opt("high_freq_factor", 4.0)?;
    let old_ctx = opt("original_max_position_embeddings", 8192.0)?;
    if high <= low {
        return Err(ConvertError::Config(format!(
            "rope_scaling: high_freq_factor {high} must exceed low_freq_factor {low}"
        )));
    }
    let (low_wavelen, high_wavelen) = (old_ctx / low, old_ctx / high);
    Ok((0..head_dim / 2)
        .map(|i| {
            let freq = (theta as f64).powf(-2.0 * i as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let divisor = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            divisor as f32
        })
        .collect())
}

fn num_in(s: &serde_json::Value, k: &str) -> Result<f32, ConvertError> {
    s[k].as_f64()
        .filter(|v| v.is_finite() && *v > 0.0)
        .map(|v| v as f32)
        .ok_or_else(|| ConvertError::Config(format!("rope_scaling.{k} is not a positive number")))
}

/// Where a GGUF tensor's values come from.
#[derive(Clone, Debug, PartialEq)]
enum Src {
    /// A float tensor, rows as stored.
    Float(String),
    /// A float tensor whose rows are permuted per head of `head_dim` rows.
    Permuted(String, usize),
    /// Packed ternary bytes; values `t · scale` (`scale` is 1 when the scale is stored apart).
    Ternary(String, f32),
    /// A one-element `f32` tensor.
    Scalar(f32),
    /// Values computed from the config (`rope_freqs.weight`).
    Values(Vec<f32>),
}

#[derive(Clone, Debug, PartialEq)]
struct Item {
    name: String,
    src: Src,
    ty: WeightType,
    rows: usize,
    cols: usize,
    /// I2_S: the scale in its tail.
    i2s_scale: f32,
}

/// Every tensor to write, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    items: Vec<Item>,
    /// The type of the projections.
    pub ty: WeightType,
    /// Source bytes the plan reads.
    pub source_bytes: u64,
}

const PROJ: [(&str, &str); 7] = [
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

fn tensor_err(name: &str, why: String) -> ConvertError {
    ConvertError::Tensor {
        name: name.to_string(),
        why,
    }
}

impl Plan {
    /// Plans the conversion of `ckpt` (described by `info`) with projections in `ty`.
    pub fn new(
        ckpt: &Checkpoint,
        info: &ModelInfo,
        ty: Option<WeightType>,
    ) -> Result<Plan, ConvertError> {
        let ternary_src = {
            let n = "model.layers.0.self_attn.q_proj.weight";
            ckpt.get(n).map(|t| t.dtype == Dtype::U8).unwrap_or(false)
        };
        let ty = ty.unwrap_or(if ternary_src {
            WeightType::TQ2_0
        } else {
            WeightType::Q8_0
        });
        if ty.is_ternary() && !ternary_src {
            return Err(ConvertError::Config(format!(
                "{} needs a ternary checkpoint (BitNet's packed weights); this one stores floats",
                ty.name()
            )));
        }
        // Embeddings (and the output matrix, which shares their precision): f16 beside
        // ternary projections (as llama.cpp's TQ mixes), Q8_0 beside 4-bit ones (as
        // llama.cpp's Q4_0/Q4_1 files keep them: the output matrix is the most sensitive).
        let embd_ty = match ty {
            t if t.is_ternary() => WeightType::F16,
            WeightType::Q4_0 | WeightType::Q4_1 => WeightType::Q8_0,
            t => t,
        };
        let mut p = Plan {
            items: Vec::new(),
            ty,
            source_bytes: 0,
        };
        let (d, hd) = (info.d_model, info.head_dim);
        p.float(
            ckpt,
            "model.embed_tokens.weight",
            "token_embd.weight",
            embd_ty,
            info.n_vocab,
            d,
        )?;
        p.float(
            ckpt,
            "model.norm.weight",
            "output_norm.weight",
            WeightType::F32,
            1,
            d,
        )?;
        if let Some(f) = &info.rope_factors {
            p.push(
                "rope_freqs.weight",
                Src::Values(f.clone()),
                WeightType::F32,
                1,
                f.len(),
            )?;
        }
        if !info.tied {
            p.float(
                ckpt,
                "lm_head.weight",
                "output.weight",
                embd_ty,
                info.n_vocab,
                d,
            )?;
        }
        let q_dim = info.n_heads * hd;
        let kv_dim = info.n_kv_heads * hd;
        for i in 0..info.n_layers {
            let hf = |s: &str| format!("model.layers.{i}.{s}");
            let gg = |s: &str| format!("blk.{i}.{s}");
            p.float(
                ckpt,
                &hf("input_layernorm.weight"),
                &gg("attn_norm.weight"),
                WeightType::F32,
                1,
                d,
            )?;
            for (k, (h, g)) in PROJ.iter().enumerate() {
                let (rows, cols) = match k {
                    0 => (q_dim, d),
                    1 | 2 => (kv_dim, d),
                    3 => (d, q_dim),
                    4 | 5 => (info.d_ff, d),
                    _ => (d, info.d_ff),
                };
                let permute = info.family == Family::Llama && k < 2;
                p.proj(ckpt, &hf(h), &gg(g), ty, rows, cols, permute.then_some(hd))?;
            }
            match info.family {
                Family::Qwen2 => {
                    for (x, n) in [("q", q_dim), ("k", kv_dim), ("v", kv_dim)] {
                        p.float(
                            ckpt,
                            &hf(&format!("self_attn.{x}_proj.bias")),
                            &gg(&format!("attn_{x}.bias")),
                            WeightType::F32,
                            1,
                            n,
                        )?;
                    }
                }
                Family::Qwen3 => {
                    for x in ["q", "k"] {
                        p.float(
                            ckpt,
                            &hf(&format!("self_attn.{x}_norm.weight")),
                            &gg(&format!("attn_{x}_norm.weight")),
                            WeightType::F32,
                            1,
                            hd,
                        )?;
                    }
                }
                Family::Llama | Family::BitNet => {}
            }
            p.float(
                ckpt,
                &hf("post_attention_layernorm.weight"),
                &gg("ffn_norm.weight"),
                WeightType::F32,
                1,
                d,
            )?;
            if info.family == Family::BitNet {
                p.float(
                    ckpt,
                    &hf("self_attn.attn_sub_norm.weight"),
                    &gg("attn_sub_norm.weight"),
                    WeightType::F32,
                    1,
                    q_dim,
                )?;
                p.float(
                    ckpt,
                    &hf("mlp.ffn_sub_norm.weight"),
                    &gg("ffn_sub_norm.weight"),
                    WeightType::F32,
                    1,
                    info.d_ff,
                )?;
            }
        }
        Ok(p)
    }

    fn push(
        &mut self,
        name: &str,
        src: Src,
        ty: WeightType,
        rows: usize,
        cols: usize,
    ) -> Result<(), ConvertError> {
        if ty.row_bytes(cols).is_none() {
            return Err(tensor_err(
                name,
                format!(
                    "rows of {cols} weights are not whole {}-weight blocks of {}",
                    ty.block_len(),
                    ty.name()
                ),
            ));
        }
        self.items.push(Item {
            name: name.to_string(),
            src,
            ty,
            rows,
            cols,
            i2s_scale: 1.0,
        });
        Ok(())
    }

    /// A float tensor of `rows × cols` (`rows` 1: a vector).
    fn float(
        &mut self,
        ckpt: &Checkpoint,
        hf: &str,
        gg: &str,
        ty: WeightType,
        rows: usize,
        cols: usize,
    ) -> Result<(), ConvertError> {
        let t = ckpt
            .get(hf)
            .ok_or_else(|| ConvertError::Missing(hf.to_string()))?;
        let want: Vec<usize> = if rows == 1 {
            vec![cols]
        } else {
            vec![rows, cols]
        };
        if t.shape != want {
            return Err(tensor_err(
                hf,
                format!("shape {:?}, expected {want:?}", t.shape),
            ));
        }
        if !matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(tensor_err(
                hf,
                format!("dtype {:?}, expected a float type", t.dtype),
            ));
        }
        self.source_bytes += t.end - t.begin;
        self.push(gg, Src::Float(hf.to_string()), ty, rows, cols)
    }

    /// A projection: float (permuted per head when `permute` gives the head size) or packed
    /// ternary with its `weight_scale`.
    #[allow(clippy::too_many_arguments)]
    fn proj(
        &mut self,
        ckpt: &Checkpoint,
        hf: &str,
        gg: &str,
        ty: WeightType,
        rows: usize,
        cols: usize,
        permute: Option<usize>,
    ) -> Result<(), ConvertError> {
        let wname = format!("{hf}.weight");
        let t = ckpt
            .get(&wname)
            .ok_or_else(|| ConvertError::Missing(wname.clone()))?;
        if t.dtype != Dtype::U8 {
            if ty.is_ternary() {
                return Err(tensor_err(
                    &wname,
                    format!("{} needs packed ternary weights", ty.name()),
                ));
            }
            if let Some(hd) = permute {
                if t.shape == [rows, cols] {
                    self.source_bytes += t.end - t.begin;
                    return self.push(
                        &format!("{gg}.weight"),
                        Src::Permuted(wname, hd),
                        ty,
                        rows,
                        cols,
                    );
                }
            }
            return self.float(ckpt, &wname, &format!("{gg}.weight"), ty, rows, cols);
        }
        if !rows.is_multiple_of(4) || t.shape != [rows / 4, cols] {
            return Err(tensor_err(
                &wname,
                format!(
                    "packed ternary shape {:?}, expected [{}, {cols}]",
                    t.shape,
                    rows / 4
                ),
            ));
        }
        let sname = format!("{hf}.weight_scale");
        let st = ckpt
            .get(&sname)
            .ok_or_else(|| ConvertError::Missing(sname.clone()))?;
        if st.elems() != 1 {
            return Err(tensor_err(
                &sname,
                format!("shape {:?}, expected one value", st.shape),
            ));
        }
        let mut buf = Vec::new();
        ckpt.read_bytes(&sname, 0, &mut buf, st.dtype.size())?;
        let ws = match st.dtype {
            Dtype::F32 => f32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]),
            Dtype::F16 => f16_to_f32(u16::from_le_bytes([buf[0], buf[1]])),
            Dtype::BF16 => bf16_to_f32(u16::from_le_bytes([buf[0], buf[1]])),
            _ => return Err(tensor_err(&sname, "weight_scale must be a float".into())),
        };
        let scale = 1.0 / ws;
        if !ws.is_finite() || ws == 0.0 || !scale.is_finite() {
            return Err(tensor_err(
                &sname,
                format!("weight_scale {ws} is not a usable scale"),
            ));
        }
        self.source_bytes += t.end - t.begin;
        let name = format!("{gg}.weight");
        match ty {
            WeightType::I2S => {
                self.push(&name, Src::Ternary(wname, 1.0), ty, rows, cols)?;
                self.items.last_mut().expect("pushed").i2s_scale = scale;
            }
            WeightType::TQ1_0 | WeightType::TQ2_0 => {
                self.push(&name, Src::Ternary(wname, 1.0), ty, rows, cols)?;
                self.push(
                    &format!("{gg}.scale"),
                    Src::Scalar(scale),
                    WeightType::F32,
                    1,
                    1,
                )?;
            }
            _ => self.push(&name, Src::Ternary(wname, scale), ty, rows, cols)?,
        }
        Ok(())
    }

    /// The GGUF tensor table.
    pub fn decls(&self) -> Vec<TensorDecl> {
        self.items
            .iter()
            .map(|it| TensorDecl {
                name: it.name.clone(),
                dims: if it.rows == 1 {
                    vec![it.cols as u64]
                } else {
                    vec![it.cols as u64, it.rows as u64]
                },
                ty: it.ty,
            })
            .collect()
    }

    /// Streams every tensor into `w`.
    pub fn write<W: Write>(
        &self,
        ckpt: &Checkpoint,
        w: &mut GgufWriter<W>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), ConvertError> {
        let mut bytes = Vec::new();
        let mut vals = Vec::new();
        let mut tmp = Vec::new();
        let mut out = Vec::new();
        let mut done = 0u64;
        for it in &self.items {
            let base = done;
            let rb = it.ty.row_bytes(it.cols).expect("checked in push");
            let rows_per = (CHUNK_BYTES / (it.cols * 4)).max(1);
            let mut r0 = 0;
            while r0 < it.rows {
                let n = match &it.src {
                    Src::Permuted(_, hd) => (rows_per / hd).max(1) * hd,
                    // Stay inside one packed row block.
                    Src::Ternary(..) => rows_per.min(it.rows / 4 - r0 % (it.rows / 4)),
                    _ => rows_per,
                }
                .min(it.rows - r0);
                match &it.src {
                    Src::Float(name) => {
                        ckpt.read_rows(name, r0, n, &mut bytes, &mut vals)?;
                        done += bytes.len() as u64;
                    }
                    Src::Permuted(name, hd) => {
                        ckpt.read_rows(name, r0, n, &mut bytes, &mut tmp)?;
                        done += bytes.len() as u64;
                        permute_heads(&tmp, &mut vals, *hd, it.cols);
                    }
                    Src::Ternary(name, scale) => {
                        let quarter = it.rows / 4;
                        let (block, p0) = (r0 / quarter, r0 % quarter);
                        ckpt.read_bytes(name, (p0 * it.cols) as u64, &mut bytes, n * it.cols)?;
                        // Each packed byte is read once per row block: a quarter each time.
                        done = base + ((r0 + n) * it.cols / 4) as u64;
                        vals.clear();
                        for &b in &bytes {
                            let code = (b >> (2 * block)) & 3;
                            if code == 3 {
                                return Err(tensor_err(
                                    name,
                                    "a packed ternary code is 3 (only 0, 1, 2 are ternary)".into(),
                                ));
                            }
                            vals.push((code as f32 - 1.0) * scale);
                        }
                    }
                    Src::Scalar(v) => {
                        vals.clear();
                        vals.push(*v);
                    }
                    Src::Values(v) => {
                        vals.clear();
                        vals.extend_from_slice(v);
                    }
                }
                if let Some(bad) = vals.iter().position(|v| !v.is_finite()) {
                    return Err(tensor_err(
                        &it.name,
                        format!("value {} is not finite", vals[bad]),
                    ));
                }
                out.clear();
                if it.ty == WeightType::I2S {
                    i2s_codes(&vals, &mut out);
                } else {
                    out.resize(n * rb, 0);
                    for (x, o) in vals.chunks_exact(it.cols).zip(out.chunks_exact_mut(rb)) {
                        quantize_row(it.ty, x, o);
                    }
                }
                w.write(&out)?;
                progress(done, self.source_bytes);
                r0 += n;
            }
            if it.ty == WeightType::I2S {
                let mut tail = [0u8; trillim_core::kernels::formats::I2S_TAIL_BYTES];
                tail[..4].copy_from_slice(&it.i2s_scale.to_le_bytes());
                w.write(&tail)?;
            }
        }
        Ok(())
    }
}

/// Hugging Face rotate-half rows to GGUF adjacent pairs, per head (llama.cpp's `permute`):
/// output row `2i + half` of a head is input row `half · hd/2 + i`.
fn permute_heads(src: &[f32], out: &mut Vec<f32>, hd: usize, cols: usize) {
    out.clear();
    out.resize(src.len(), 0.0);
    for (h_in, h_out) in src
        .chunks_exact(hd * cols)
        .zip(out.chunks_exact_mut(hd * cols))
    {
        for k in 0..hd {
            let from = (k % 2) * (hd / 2) + k / 2;
            h_out[k * cols..(k + 1) * cols].copy_from_slice(&h_in[from * cols..(from + 1) * cols]);
        }
    }
}

/// I2_S codes of ternary values (bitnet.cpp's layout: weight `j` of a 128-group in bits
/// `6 − 2·(j / 32)` of byte `j % 32`; 2 for +1, 1 for 0, 0 for −1).
fn i2s_codes(vals: &[f32], out: &mut Vec<u8>) {
    for g in vals.chunks_exact(128) {
        let mut b = [0u8; 32];
        for (j, &v) in g.iter().enumerate() {
            let q: u8 = if v > 0.0 {
                2
            } else if v < 0.0 {
                0
            } else {
                1
            };
            b[j % 32] |= q << (6 - 2 * (j / 32));
        }
        out.extend_from_slice(&b);
    }
}

/// llama.cpp's `general.file_type` for a projection type (`None`: it has no number).
fn file_type(ty: WeightType) -> Option<u32> {
    Some(match ty {
        WeightType::F32 => 0,
        WeightType::F16 => 1,
        WeightType::Q4_0 => 2,
        WeightType::Q4_1 => 3,
        WeightType::Q8_0 => 7,
        WeightType::BF16 => 32,
        WeightType::TQ1_0 => 36,
        WeightType::TQ2_0 => 37,
        _ => return None,
    })
}

/// The model's metadata (everything but the tokenizer).
pub fn metadata(info: &ModelInfo, plan: &Plan) -> Vec<(String, Value)> {
    let a = info.arch();
    let mut m: Vec<(String, Value)> = Vec::new();
    let mut put = |k: &str, v: Value| m.push((k.to_string(), v));
    put("general.architecture", Value::Str(a.into()));
    put("general.type", Value::Str("model".into()));
    put("general.quantization_version", Value::U32(2));
    if let Some(ft) = file_type(plan.ty) {
        put("general.file_type", Value::U32(ft));
    }
    let k = |s: &str| format!("{a}.{s}");
    let u = |v: usize| Value::U32(v as u32);
    put(&k("context_length"), u(info.ctx));
    put(&k("embedding_length"), u(info.d_model));
    put(&k("block_count"), u(info.n_layers));
    put(&k("feed_forward_length"), u(info.d_ff));
    put(&k("attention.head_count"), u(info.n_heads));
    put(&k("attention.head_count_kv"), u(info.n_kv_heads));
    if info.head_dim * info.n_heads != info.d_model {
        put(&k("attention.key_length"), u(info.head_dim));
        put(&k("attention.value_length"), u(info.head_dim));
    }
    put(
        &k("attention.layer_norm_rms_epsilon"),
        Value::F32(info.rms_eps),
    );
    put(&k("rope.freq_base"), Value::F32(info.rope_theta));
    put(&k("rope.dimension_count"), u(info.head_dim));
    if let Some(f) = info.rope_linear {
        put(&k("rope.scaling.type"), Value::Str("linear".into()));
        put(&k("rope.scaling.factor"), Value::F32(f));
    }
    put(&k("vocab_size"), u(info.n_vocab));
    m
}
