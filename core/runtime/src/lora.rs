//! Loading LoRA adapters for a loaded model, in both forms people have: PEFT directories
//! (`adapter_config.json` + `adapter_model.safetensors`) and llama.cpp's GGUF adapters.
//!
//! Everything is checked against the model before an [`Adapter`] exists (architecture, layer
//! count, every matrix's dimensions, both halves of every pair, finite values), so attaching
//! one cannot fail later. The matrices are kept in the model's (GGUF) row order: PEFT's
//! `q_proj`/`k_proj` `B` rows are permuted the way llama.cpp's converter permutes the base
//! weights of models whose rotary pairs are adjacent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use trillim_core::format::gguf::{ggml_type_name, Gguf};
use trillim_core::kernels::formats::dequantize_row;
use trillim_core::kernels::quantize::quantize_row;
use trillim_core::kernels::WeightType;
use trillim_core::model::{
    Config, Lora, LoraPair, LoraType, RopeStyle, Weights, MAX_LORA_QUANT_COLS, MAX_LORA_RANK,
};

use crate::safetensors::{self, Dtype};
use crate::LoadedModel;

/// The seven projections: PEFT module name, GGUF tensor name, in [`trillim_core::model::Proj`]
/// order.
const PROJECTIONS: [(&str, &str); 7] = [
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// Largest `adapter_config.json` read.
const MAX_CONFIG: u64 = 1 << 20;

/// How the adapter's matrices are stored for the side path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoraQuant {
    /// `f32`, exactly as loaded.
    None,
    /// bfloat16 (rounded to nearest even): half the memory traffic. The default: decode is
    /// bound by memory traffic, and a rank-16 adapter in `f32` adds a sixth to what a 2-bit
    /// 2B model reads per token, for a side-path error of 2⁻⁹ of its own effect in bf16.
    #[default]
    Bf16,
    /// int8 codes with one absmax scale per row: a quarter of the traffic, `f32` activations.
    Int8,
    /// ggml's Q8_0 blocks (a scale per 32 values), products over Q8 activations.
    Q8_0,
    /// ggml's Q4_0 blocks: an eighth of the traffic, the coarsest.
    Q4_0,
}

impl LoraQuant {
    /// The accepted names.
    pub const NAMES: &'static [&'static str] = &["none", "bf16", "int8", "q8_0", "q4_0"];

    /// How matrices are stored at this level.
    pub fn lora_type(self) -> LoraType {
        match self {
            LoraQuant::None => LoraType::F32,
            LoraQuant::Bf16 => LoraType::Bf16,
            LoraQuant::Int8 => LoraType::Int8,
            LoraQuant::Q8_0 => LoraType::Q8_0,
            LoraQuant::Q4_0 => LoraType::Q4_0,
        }
    }

    /// Parses a level name.
    pub fn parse(name: &str) -> Result<LoraQuant, String> {
        match name {
            "none" => Ok(LoraQuant::None),
            "bf16" => Ok(LoraQuant::Bf16),
            "int8" => Ok(LoraQuant::Int8),
            "q8_0" => Ok(LoraQuant::Q8_0),
            "q4_0" => Ok(LoraQuant::Q4_0),
            other => Err(format!(
                "lora_quant '{other}' is not available in this build (accepted: {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// The form an adapter was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterFormat {
    /// PEFT `adapter_config.json` + `adapter_model.safetensors`.
    Peft,
    /// llama.cpp GGUF adapter.
    Gguf,
}

/// Why an adapter could not be loaded. Each message names the adapter and the cause.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// A file could not be read.
    #[error("cannot read {}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The files are not an adapter this build reads.
    #[error("{}: {why}", path.display())]
    Invalid {
        /// The adapter.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A valid adapter that does not fit the model.
    #[error("{}: the adapter does not fit the model: {why}", path.display())]
    Mismatch {
        /// The adapter.
        path: PathBuf,
        /// What differs.
        why: String,
    },
}

/// A LoRA adapter checked against one model, ready for its forward pass.
#[derive(Debug)]
pub struct Adapter {
    bytes: Vec<u8>,
    layers: Vec<[Option<LoraPair>; 7]>,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The form it was read in.
    pub format: AdapterFormat,
    /// Number of adapted projections.
    pub pairs: usize,
    /// Largest rank of its pairs.
    pub max_rank: usize,
    /// The chat template it brings (see [`crate::adapter_files`]), which replaces the model's.
    pub chat_template: Option<String>,
}

/// `tokenizer.chat_template` of a GGUF adapter's bytes.
fn gguf_chat_template(bytes: &[u8]) -> Option<String> {
    Gguf::parse(bytes)
        .ok()?
        .get_str("tokenizer.chat_template")
        .map(str::to_string)
}

/// A row-major matrix read from the adapter file, as `f32`.
struct Mat {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

/// The halves read so far, by (layer, projection).
type Halves = BTreeMap<(usize, usize), (Option<Mat>, Option<Mat>)>;

/// What a reader found: the halves and how each pair's scale follows from its rank.
struct Read {
    halves: Halves,
    scale: Box<dyn Fn(usize) -> f32>,
    format: AdapterFormat,
}

impl Adapter {
    /// Loads the adapter at `path` (a PEFT directory, a directory holding one `.gguf` adapter,
    /// or a `.gguf` file) for `model`, storing its matrices as `quant` says.
    pub fn open(
        path: &Path,
        model: &LoadedModel,
        quant: LoraQuant,
    ) -> Result<Adapter, AdapterError> {
        let invalid = |why: String| AdapterError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |cause| AdapterError::Io { path: p, cause }
        };
        let mut gguf_template = None;
        let read = if path.is_dir() {
            let st = path.join("adapter_model.safetensors");
            if st.is_file() {
                let cfg = path.join("adapter_config.json");
                let text = read_limited(&cfg, MAX_CONFIG).map_err(io(&cfg))?;
                let bytes = std::fs::read(&st).map_err(io(&st))?;
                read_peft(&text, &bytes, &model.config).map_err(invalid)?
            } else {
                let ggufs: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(io(path))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
                    .collect();
                let [one] = ggufs.as_slice() else {
                    return Err(invalid(format!(
                        "no adapter found: expected adapter_config.json with \
                         adapter_model.safetensors (PEFT) or one .gguf adapter file, found {} \
                         .gguf files",
                        ggufs.len()
                    )));
                };
                let bytes = std::fs::read(one).map_err(io(one))?;
                gguf_template = gguf_chat_template(&bytes);
                read_gguf(&bytes, model, path)?
            }
        } else {
            let bytes = std::fs::read(path).map_err(io(path))?;
            gguf_template = gguf_chat_template(&bytes);
            read_gguf(&bytes, model, path)?
        };
        // Files beside the matrices win over a template inside a GGUF adapter.
        let chat_template = if path.is_dir() {
            crate::adapter_files::chat_template(path, &model.gguf())?
        } else {
            None
        }
        .or(gguf_template);
        let mut a = pack(read, &model.config, &model.weights, quant, path)?;
        a.chat_template = chat_template;
        Ok(a)
    }

    /// The view the forward pass reads.
    pub fn view(&self) -> Lora<'_> {
        Lora {
            bytes: &self.bytes,
            layers: &self.layers,
        }
    }

    /// Bytes of the stored matrices.
    pub fn memory_bytes(&self) -> usize {
        self.bytes.len()
    }
}

impl Adapter {
    /// Writes this adapter (read with [`LoraQuant::None`]) as llama.cpp's GGUF LoRA adapter
    /// for `model`: `blk.N.<proj>.weight.lora_a` (`rank × in`) and `lora_b` (`out × rank`), f32,
    /// in the model's row order. One `adapter.lora.alpha` gives every pair its scale when
    /// `scale × rank` is the same for all; otherwise each `B` is multiplied by its scale and
    /// the alpha is left out (scale 1).
    pub fn write_gguf<W: std::io::Write>(
        &self,
        model: &LoadedModel,
        out: W,
    ) -> Result<u64, crate::gguf_write::WriteError> {
        use crate::gguf_write::{GgufWriter, TensorDecl, Value};
        let mut pairs = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            for (p, pair) in layer.iter().enumerate() {
                if let Some(pair) = pair {
                    let w = model.weights.layers[l].projections()[p];
                    pairs.push((l, p, *pair, w.rows, w.cols));
                }
            }
        }
        let alphas: Vec<f32> = pairs
            .iter()
            .map(|(_, _, x, ..)| x.scale * x.rank as f32)
            .collect();
        if pairs.iter().any(|(_, _, x, ..)| x.ty != LoraType::F32) {
            return Err(crate::gguf_write::WriteError::Data(
                "the adapter was loaded with quantized matrices; load it with lora_quant none"
                    .into(),
            ));
        }
        let first = alphas.first().copied().unwrap_or(0.0);
        let uniform = alphas.iter().all(|&a| a == first) && first != 0.0;
        let mut meta = vec![
            (
                "general.architecture".to_string(),
                Value::Str(model.config.arch_name.to_string()),
            ),
            ("general.type".to_string(), Value::Str("adapter".into())),
            ("adapter.type".to_string(), Value::Str("lora".into())),
        ];
        if uniform {
            meta.push(("adapter.lora.alpha".to_string(), Value::F32(first)));
        }
        if let Some(t) = &self.chat_template {
            meta.push(("tokenizer.chat_template".to_string(), Value::Str(t.clone())));
        }
        let mut decls = Vec::new();
        for &(l, p, pair, rows, cols) in &pairs {
            let g = PROJECTIONS[p].1;
            decls.push(TensorDecl {
                name: format!("blk.{l}.{g}.weight.lora_a"),
                dims: vec![cols as u64, pair.rank as u64],
                ty: WeightType::F32,
            });
            decls.push(TensorDecl {
                name: format!("blk.{l}.{g}.weight.lora_b"),
                dims: vec![pair.rank as u64, rows as u64],
                ty: WeightType::F32,
            });
        }
        let mut w = GgufWriter::new(out, &meta, &decls)?;
        let size = w.file_size();
        let f32s = |off: usize, n: usize| -> Vec<f32> {
            self.bytes[off..off + 4 * n]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        for &(_, _, pair, rows, cols) in &pairs {
            let a = f32s(pair.a, pair.rank * cols);
            w.write(&a.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())?;
            let bt = f32s(pair.b, pair.rank * rows);
            let mut b = transpose(&bt, pair.rank, rows);
            if !uniform {
                b.iter_mut().for_each(|v| *v *= pair.scale);
            }
            w.write(&b.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())?;
        }
        w.finish()?;
        Ok(size)
    }
}

fn read_limited(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut s = String::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_string(&mut s)?;
    if s.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(s)
}

/// Reads a PEFT adapter: its configuration and its safetensors matrices.
fn read_peft(config: &str, bytes: &[u8], model: &Config) -> Result<Read, String> {
    let cfg: serde_json::Value = serde_json::from_str(config)
        .map_err(|e| format!("adapter_config.json is not valid JSON: {e}"))?;
    let get = |k: &str| cfg.get(k).filter(|v| !v.is_null());
    if let Some(t) = get("peft_type").and_then(|v| v.as_str()) {
        if t != "LORA" {
            return Err(format!("peft_type {t} is not supported (LORA)"));
        }
    }
    let truthy = |k: &str| get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    for (key, what) in [
        ("use_dora", "DoRA adapters"),
        ("fan_in_fan_out", "fan_in_fan_out adapters"),
    ] {
        if truthy(key) {
            return Err(format!("{what} are not supported ({key} is true)"));
        }
    }
    if get("modules_to_save")
        .and_then(|v| v.as_array())
        .is_some_and(|a| !a.is_empty())
    {
        return Err(
            "modules_to_save is not supported: only the seven projections \
                    (q/k/v/o_proj, gate/up/down_proj) can be adapted"
                .into(),
        );
    }
    if get("alpha_pattern")
        .and_then(|v| v.as_object())
        .is_some_and(|a| !a.is_empty())
    {
        return Err("alpha_pattern is not supported".into());
    }
    if let Some(b) = get("bias").and_then(|v| v.as_str()) {
        if b != "none" {
            return Err(format!("bias '{b}' is not supported (none)"));
        }
    }
    if let Some(mods) = get("target_modules").and_then(|v| v.as_array()) {
        for m in mods {
            let m = m.as_str().unwrap_or("");
            if !PROJECTIONS.iter().any(|(p, _)| p.ends_with(m)) || m.is_empty() {
                return Err(format!(
                    "target module '{m}' is not supported (q_proj, k_proj, v_proj, o_proj, \
                     gate_proj, up_proj, down_proj)"
                ));
            }
        }
    }
    let alpha = match get("lora_alpha") {
        None => 8.0,
        Some(v) => v
            .as_f64()
            .filter(|a| a.is_finite())
            .ok_or("lora_alpha is not a number")?,
    };
    let rslora = truthy("use_rslora");
    let tensors =
        safetensors::parse(bytes).map_err(|e| format!("adapter_model.safetensors: {e}"))?;
    let mut halves = Halves::new();
    for t in tensors {
        let (layer, proj, is_b) = peft_name(&t.name).ok_or_else(|| {
            format!(
                "tensor '{}' is not a LoRA matrix of the seven projections",
                t.name
            )
        })?;
        let [rows, cols] = t.shape[..] else {
            return Err(format!("tensor '{}' is not a matrix", t.name));
        };
        if t.dtype == Dtype::I64 {
            return Err(format!("tensor '{}' holds integers, not weights", t.name));
        }
        let mut data = to_f32(t.dtype, t.data);
        // The model's q/k rows are in the converter's order: move B's rows the same way.
        if is_b && model.rope_style == RopeStyle::AdjacentPairs && proj < 2 {
            let heads = if proj == 0 {
                model.n_heads
            } else {
                model.n_kv_heads
            };
            data = permute_rows(&data, rows, cols, heads).ok_or_else(|| {
                format!(
                    "tensor '{}': {rows} rows do not split into {heads} heads",
                    t.name
                )
            })?;
        }
        insert(
            &mut halves,
            layer,
            proj,
            is_b,
            Mat { rows, cols, data },
            &t.name,
        )?;
    }
    let scale = move |r: usize| {
        let r = r as f64;
        (if rslora { alpha / r.sqrt() } else { alpha / r }) as f32
    };
    Ok(Read {
        halves,
        scale: Box::new(scale),
        format: AdapterFormat::Peft,
    })
}

/// `(layer, projection, is_B)` of a PEFT tensor name such as
/// `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight`.
fn peft_name(name: &str) -> Option<(usize, usize, bool)> {
    let at = name.find("layers.")?;
    if at != 0 && !name[..at].ends_with('.') {
        return None;
    }
    let rest = &name[at + "layers.".len()..];
    let (n, rest) = rest.split_once('.')?;
    let layer: usize = n.parse().ok()?;
    let (proj, half) = PROJECTIONS.iter().enumerate().find_map(|(i, (m, _))| {
        let half = rest.strip_prefix(m)?.strip_prefix('.')?;
        Some((i, half))
    })?;
    let is_b = match half {
        "lora_A.weight" | "lora_A.default.weight" => false,
        "lora_B.weight" | "lora_B.default.weight" => true,
        _ => return None,
    };
    Some((layer, proj, is_b))
}

fn to_f32(dtype: Dtype, data: &[u8]) -> Vec<f32> {
    let ty = match dtype {
        Dtype::F32 => WeightType::F32,
        Dtype::F16 => WeightType::F16,
        Dtype::BF16 => WeightType::BF16,
        // `safetensors::parse` hands out float tensors only.
        Dtype::U8 | Dtype::I8 => unreachable!("byte tensors are refused by parse"),
        Dtype::I64 => unreachable!("integer tensors are refused before conversion"),
    };
    let mut out = vec![0f32; data.len() / dtype.size()];
    dequantize_row(ty, data, &mut out, 1.0);
    out
}

/// Hugging Face's rotate-half row order to GGUF's adjacent pairs, per head: row
/// `h·hd + half·hd/2 + i` moves to `h·hd + 2i + half` (llama.cpp's converter's `permute`).
fn permute_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Option<Vec<f32>> {
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return None;
    }
    let hd = rows / heads;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for half in 0..2 {
            for i in 0..hd / 2 {
                let src = h * hd + half * (hd / 2) + i;
                let dst = h * hd + 2 * i + half;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Some(out)
}

fn insert(
    halves: &mut Halves,
    layer: usize,
    proj: usize,
    is_b: bool,
    m: Mat,
    name: &str,
) -> Result<(), String> {
    let e = halves.entry((layer, proj)).or_default();
    let slot = if is_b { &mut e.1 } else { &mut e.0 };
    if slot.is_some() {
        return Err(format!("tensor '{name}' appears twice"));
    }
    *slot = Some(m);
    Ok(())
}

/// Reads a llama.cpp GGUF adapter for `model`.
fn read_gguf(bytes: &[u8], model: &LoadedModel, path: &Path) -> Result<Read, AdapterError> {
    let invalid = |why: String| AdapterError::Invalid {
        path: path.to_path_buf(),
        why,
    };
    let g = Gguf::parse(bytes).map_err(|e| invalid(format!("not a valid GGUF file: {e}")))?;
    let ty = g.get_str("general.type").unwrap_or("model");
    if ty != "adapter" {
        return Err(invalid(format!(
            "not a LoRA adapter (general.type is '{ty}', expected 'adapter')"
        )));
    }
    let at = g.get_str("adapter.type").unwrap_or("");
    if at != "lora" {
        return Err(invalid(format!(
            "adapter.type '{at}' is not supported (lora)"
        )));
    }
    let base = model.gguf();
    let (want, have) = (
        base.get_str("general.architecture").unwrap_or(""),
        g.get_str("general.architecture").unwrap_or(""),
    );
    if want != have {
        return Err(AdapterError::Mismatch {
            path: path.to_path_buf(),
            why: format!("the adapter is for architecture '{have}', the model is '{want}'"),
        });
    }
    let alpha = g.get_f64("adapter.lora.alpha").unwrap_or(0.0);
    if !alpha.is_finite() {
        return Err(invalid("adapter.lora.alpha is not finite".into()));
    }
    let mut halves = Halves::new();
    for t in g.tensors() {
        let parsed = gguf_name(t.name).ok_or_else(|| {
            invalid(format!(
                "tensor '{}' is not a LoRA matrix of the seven projections",
                t.name
            ))
        })?;
        let (layer, proj, is_b) = parsed;
        let Some(wt) = t.ty else {
            return Err(invalid(format!(
                "tensor '{}' has type {}, which this build does not read",
                t.name,
                ggml_type_name(t.type_id)
            )));
        };
        if t.n_dims != 2 {
            return Err(invalid(format!("tensor '{}' is not a matrix", t.name)));
        }
        let (cols, rows) = (t.row_len(), t.n_rows());
        let rb = wt
            .row_bytes(cols)
            .filter(|&rb| rb.checked_mul(rows) == Some(t.data.len()))
            .ok_or_else(|| {
                invalid(format!(
                    "tensor '{}' has a size its type cannot have",
                    t.name
                ))
            })?;
        let mut data = vec![0f32; rows * cols];
        for (r, out) in data.chunks_exact_mut(cols.max(1)).enumerate() {
            dequantize_row(wt, &t.data[r * rb..(r + 1) * rb], out, 1.0);
        }
        insert(
            &mut halves,
            layer,
            proj,
            is_b,
            Mat { rows, cols, data },
            t.name,
        )
        .map_err(invalid)?;
    }
    // llama.cpp's rule: no alpha means a scale of one.
    let scale = move |r: usize| {
        if alpha == 0.0 {
            1.0
        } else {
            (alpha / r as f64) as f32
        }
    };
    Ok(Read {
        halves,
        scale: Box::new(scale),
        format: AdapterFormat::Gguf,
    })
}

/// `(layer, projection, is_B)` of a GGUF adapter tensor name such as `blk.3.attn_q.weight.lora_a`.
fn gguf_name(name: &str) -> Option<(usize, usize, bool)> {
    let rest = name.strip_prefix("blk.")?;
    let (n, rest) = rest.split_once('.')?;
    let layer: usize = n.parse().ok()?;
    let (proj, half) = rest.split_once(".weight.")?;
    let proj = PROJECTIONS.iter().position(|(_, g)| *g == proj)?;
    let is_b = match half {
        "lora_a" => false,
        "lora_b" => true,
        _ => return None,
    };
    Some((layer, proj, is_b))
}

/// Checks every pair against the model and stores the matrices.
fn pack(
    read: Read,
    config: &Config,
    weights: &Weights,
    quant: LoraQuant,
    path: &Path,
) -> Result<Adapter, AdapterError> {
    let mismatch = |why: String| AdapterError::Mismatch {
        path: path.to_path_buf(),
        why,
    };
    let invalid = |why: String| AdapterError::Invalid {
        path: path.to_path_buf(),
        why,
    };
    let names = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ];
    if read.halves.is_empty() {
        return Err(invalid("the adapter has no LoRA matrices".into()));
    }
    let mut layers = vec![[None; 7]; config.n_layers];
    let mut bytes = Vec::new();
    let (mut pairs, mut max_rank) = (0, 0);
    for ((layer, proj), (a, b)) in read.halves {
        let what = format!("layer {layer} {}", names[proj]);
        if layer >= config.n_layers {
            return Err(mismatch(format!(
                "it adapts layer {layer} but the model has {} layers",
                config.n_layers
            )));
        }
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) => (a, b),
            (Some(_), None) => return Err(invalid(format!("{what} has lora_A but no lora_B"))),
            (None, _) => return Err(invalid(format!("{what} has lora_B but no lora_A"))),
        };
        let w = weights.layers[layer].projections()[proj];
        let rank = a.rows;
        if a.cols != w.cols || b.rows != w.rows || b.cols != rank {
            return Err(mismatch(format!(
                "{what}: A is {}×{} and B is {}×{}, but the model's matrix is {}×{} \
                 (A must be rank×{}, B {}×rank)",
                a.rows, a.cols, b.rows, b.cols, w.rows, w.cols, w.cols, w.rows
            )));
        }
        if rank == 0 || rank > MAX_LORA_RANK || rank > w.rows.min(w.cols) {
            return Err(invalid(format!(
                "{what}: rank {rank} is outside 1..={}",
                MAX_LORA_RANK.min(w.rows.min(w.cols))
            )));
        }
        if a.data.iter().chain(&b.data).any(|v| !v.is_finite()) {
            return Err(invalid(format!("{what} holds a value that is not finite")));
        }
        let scale = (read.scale)(rank);
        let ty = quant.lora_type();
        if ty.blocks().is_some()
            && (!w.cols.is_multiple_of(32)
                || !w.rows.is_multiple_of(32)
                || w.cols > MAX_LORA_QUANT_COLS)
        {
            return Err(invalid(format!(
                "{what}: lora_quant {quant:?} stores rows in blocks of 32 values, but the                  matrix is {}×{} (use none, bf16 or int8)",
                w.rows, w.cols
            )));
        }
        let a_off = bytes.len();
        store(&mut bytes, &a.data, a.cols, ty);
        let b_off = bytes.len();
        store(&mut bytes, &transpose(&b.data, b.rows, b.cols), b.rows, ty);
        layers[layer][proj] = Some(LoraPair {
            a: a_off,
            b: b_off,
            ty,
            rank,
            scale,
        });
        pairs += 1;
        max_rank = max_rank.max(rank);
    }
    Ok(Adapter {
        bytes,
        layers,
        path: path.to_path_buf(),
        format: read.format,
        pairs,
        max_rank,
        chat_template: None,
    })
}

/// The `cols × rows` transpose of a row-major `rows × cols` matrix.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for (r, row) in data.chunks_exact(cols.max(1)).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    out
}

/// Appends the rows (`cols` values each) of `data` stored as `ty`.
fn store(out: &mut Vec<u8>, data: &[f32], cols: usize, ty: LoraType) {
    match ty {
        LoraType::F32 => out.extend(data.iter().flat_map(|v| v.to_le_bytes())),
        LoraType::Bf16 => out.extend(data.iter().flat_map(|v| f32_to_bf16(*v).to_le_bytes())),
        LoraType::Int8 => {
            for row in data.chunks_exact(cols) {
                let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = amax / 127.0;
                let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
                out.extend_from_slice(&scale.to_le_bytes());
                out.extend(
                    row.iter()
                        .map(|v| (v * inv).round().clamp(-127.0, 127.0) as i8 as u8),
                );
            }
        }
        LoraType::Q8_0 | LoraType::Q4_0 => {
            let wt = ty.blocks().expect("a block type");
            let rb = wt.row_bytes(cols).expect("checked: whole blocks");
            for row in data.chunks_exact(cols) {
                let at = out.len();
                out.resize(at + rb, 0);
                quantize_row(wt, row, &mut out[at..]);
            }
        }
    }
}

/// Rounds to the nearest bfloat16, ties to even (values are finite: checked before).
fn f32_to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            peft_name("base_model.model.model.layers.12.mlp.down_proj.lora_B.weight"),
            Some((12, 6, true))
        );
        assert_eq!(
            peft_name("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"),
            Some((0, 1, false))
        );
        assert_eq!(peft_name("base_model.model.lm_head.lora_A.weight"), None);
        assert_eq!(peft_name("xlayers.0.mlp.up_proj.lora_A.weight"), None);
        assert_eq!(
            gguf_name("blk.7.attn_output.weight.lora_a"),
            Some((7, 3, false))
        );
        assert_eq!(gguf_name("blk.7.attn_qkv.weight.lora_a"), None);
    }

    #[test]
    fn permutation_matches_the_converter() {
        // One head of 4 rows: HF order [r0 r1 | r2 r3] becomes [r0 r2 r1 r3].
        let d = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(permute_rows(&d, 4, 1, 1).unwrap(), vec![0.0, 2.0, 1.0, 3.0]);
        assert!(permute_rows(&d, 4, 1, 3).is_none());
    }

    #[test]
    fn bf16_rounding() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
    }
}
