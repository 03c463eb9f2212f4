use core::fmt::Write;

use super::error::{name, ModelError, Name};
use crate::format::gguf::Gguf;

/// Most transformer layers a model may have.
pub const MAX_LAYERS: usize = 256;

/// Model family, which fixes RoPE pairing, norms and the FFN activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama family (also `mistral`): adjacent-pair RoPE, SiLU-gated FFN.
    Llama,
    /// llama.cpp's `bitnet`: half-split RoPE, sub-norms before the output and down projections,
    /// SiLU-gated FFN.
    Bitnet,
    /// BitNet b1.58 2B4T: as `bitnet` with ReLU² and per-token int8 activations.
    BitnetB158,
    /// Qwen 2 / 2.5: as `llama` with half-split RoPE and biases on the Q, K and V projections.
    Qwen2,
    /// Qwen 3: half-split RoPE, no QKV biases, a per-head RMSNorm of Q and K before RoPE, and a
    /// head size that need not be `d_model / n_heads` (`qwen3.attention.key_length`).
    Qwen3,
    /// Phi-3 / Phi-3.5 mini: as `llama` with half-split (possibly partial) RoPE and fused
    /// `attn_qkv` and gate-then-up `ffn_up` matrices, split into row views at load.
    Phi3,
    /// Gemma 2: embedding scaled by `√d_model`, RMSNorms after attention and the FFN as well as
    /// before, GeGLU (tanh GELU), half-split RoPE, sliding-window layers alternating with global
    /// ones, soft-capped attention scores and logits.
    Gemma2,
    /// Gemma 3: as Gemma 2 with per-head Q/K RMSNorms, every 6th layer global, local layers at
    /// their own RoPE base (`rope.freq_base_swa`, 10 000) and no attention soft-capping.
    Gemma3,
}

/// How RoPE pairs the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// `(x[2i], x[2i+1])` (GGUF llama, whose Q/K rows were permuted at conversion).
    AdjacentPairs,
    /// `(x[i], x[i + n/2])` (GPT-NeoX style).
    HalfSplit,
}

/// FFN gate activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `silu(g) · u`
    Silu,
    /// `relu(g)² · u`
    Relu2,
    /// `gelu(g) · u` with GELU's tanh approximation (GeGLU).
    GeluTanh,
}

/// How the input of an int8-activation projection is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActQuant {
    /// One absmax scale per kernel block (as llama.cpp).
    PerBlock,
    /// One absmax scale per token (BitNet b1.58 semantics) for ternary weights.
    PerToken,
}

/// Hyper-parameters of a model, read from metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Architecture string as found in the file.
    pub arch_name: Name,
    /// Model family.
    pub arch: Arch,
    /// Vocabulary size (rows of the embedding matrix).
    pub n_vocab: usize,
    /// Hidden size.
    pub d_model: usize,
    /// Number of layers.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (GQA when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Dimension of one head.
    pub head_dim: usize,
    /// FFN inner size.
    pub d_ff: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base frequency.
    pub rope_base: f32,
    /// Dimensions of each head that RoPE rotates.
    pub rope_dim: usize,
    /// Linear RoPE position scale (1 = none).
    pub rope_linear_scale: f32,
    /// Factor on RoPE's cos and sin (`rope.scaling.attn_factor`, LongRoPE's; 1 = none).
    pub rope_attn_factor: f32,
    /// RoPE pairing.
    pub rope_style: RopeStyle,
    /// Context length the model was trained for.
    pub train_ctx: usize,
    /// LongRoPE's original context (`rope.scaling.original_context_length`; 0: no LongRoPE).
    /// A context up to it runs on the short factors, a larger one on the long factors, as
    /// llama.cpp chooses them by context size.
    pub rope_orig_ctx: usize,
    /// Keys a query of a sliding-window layer sees, itself included (`attention.sliding_window`;
    /// 0: every layer attends to the whole sequence).
    pub sliding_window: usize,
    /// Which layers are sliding-window ones (bit `l % 64` of word `l / 64`); see
    /// [`Config::is_local`].
    pub local_layers: [u64; MAX_LAYERS / 64],
    /// RoPE base and linear position scale of sliding-window layers.
    pub rope_base_local: f32,
    /// See [`Config::rope_base_local`].
    pub rope_linear_scale_local: f32,
    /// Factor on every query before attention (`1/√head_dim` unless the family says otherwise).
    pub attn_scale: f32,
    /// Attention scores become `c·tanh(s/c)` (0 = none).
    pub attn_softcap: f32,
    /// Logits become `c·tanh(z/c)` (0 = none).
    pub final_softcap: f32,
    /// Factor on the token embedding (`√d_model` for Gemma, else 1).
    pub embd_scale: f32,
    /// Whether `post_attention_norm` and `post_ffw_norm` normalize each block's output before
    /// it joins the residual stream (Gemma).
    pub post_norms: bool,
    /// FFN activation.
    pub activation: Activation,
    /// Whether `attn_sub_norm` and `ffn_sub_norm` are applied.
    pub sub_norms: bool,
    /// Activation quantization of ternary projections.
    pub act_quant: ActQuant,
    /// Whether `attn_q.bias`, `attn_k.bias` and `attn_v.bias` are read (each optional, as
    /// llama.cpp reads them).
    pub qkv_bias: bool,
    /// Whether `attn_q_norm` and `attn_k_norm` (RMSNorm over each head, before RoPE) are
    /// applied.
    pub qk_norm: bool,
}

fn key(arch: &str, suffix: &str) -> Name {
    let mut k = Name::new();
    let _ = write!(k, "{arch}.{suffix}");
    k
}

fn req_u64(g: &Gguf<'_>, arch: &str, suffix: &str) -> Result<usize, ModelError> {
    let k = key(arch, suffix);
    let v = g
        .get_u64(&k)
        .ok_or_else(|| ModelError::MissingKey(k.clone()))?;
    if v == 0 || v > (1 << 24) {
        return Err(ModelError::BadValue(k));
    }
    Ok(v as usize)
}

fn opt_u64(g: &Gguf<'_>, arch: &str, suffix: &str) -> Result<Option<usize>, ModelError> {
    let k = key(arch, suffix);
    match g.get(&k) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(v) if v > 0 && v <= (1 << 24) => Ok(Some(v as usize)),
            _ => Err(ModelError::BadValue(k)),
        },
    }
}

fn opt_f32(g: &Gguf<'_>, arch: &str, suffix: &str, default: f32) -> Result<f32, ModelError> {
    let k = key(arch, suffix);
    match g.get(&k) {
        None => Ok(default),
        Some(v) => match v.as_f64() {
            Some(v) if v.is_finite() && v > 0.0 => Ok(v as f32),
            _ => Err(ModelError::BadValue(k)),
        },
    }
}

/// The sliding-window layers of a model with a window: `attention.sliding_window_pattern` as a
/// per-layer array of booleans (true: sliding-window) or a period `n` (layer `l` is global when
/// `l % n == n - 1`; 0 or 1: none global), else the family's period.
fn local_layers(
    g: &Gguf<'_>,
    a: &str,
    n_layers: usize,
    every: usize,
) -> Result<[u64; MAX_LAYERS / 64], ModelError> {
    let k = key(a, "attention.sliding_window_pattern");
    let mut bits = [0u64; MAX_LAYERS / 64];
    let mut set = |l: usize| bits[l / 64] |= 1 << (l % 64);
    match g.get(&k) {
        Some(v) if v.as_u64().is_none() => {
            let arr = v
                .as_array()
                .ok_or_else(|| ModelError::BadValue(k.clone()))?;
            if arr.len() != n_layers {
                return Err(ModelError::BadValue(k));
            }
            for (l, item) in arr.iter().enumerate() {
                match item.as_bool() {
                    Some(true) => set(l),
                    Some(false) => {}
                    None => return Err(ModelError::BadValue(k)),
                }
            }
        }
        v => {
            let n = match v.and_then(|v| v.as_u64()) {
                Some(n) => n.min(1 << 24) as usize,
                None => every,
            };
            for l in 0..n_layers {
                if n <= 1 || l % n < n - 1 {
                    set(l);
                }
            }
        }
    }
    Ok(bits)
}

/// The `general.architecture` values this build runs (aliases of the same family included).
pub const SUPPORTED_ARCHITECTURES: [&str; 11] = [
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "phi3",
    "gemma2",
    "gemma3",
    "bitnet",
    "bitnet-b1.58",
    "bitnet_b1_58",
    "bitnet-25",
];

/// What a family changes in the shared pass.
struct Features {
    rope_style: RopeStyle,
    activation: Activation,
    sub_norms: bool,
    act_quant: ActQuant,
    qkv_bias: bool,
    qk_norm: bool,
    post_norms: bool,
    /// Every `n`th layer is global, the rest sliding-window, where the file sets a window and
    /// no `attention.sliding_window_pattern` (llama.cpp's defaults; 1: all sliding-window).
    swa_every: usize,
}

impl Features {
    fn of(arch: Arch) -> Features {
        let llama = Features {
            rope_style: RopeStyle::AdjacentPairs,
            activation: Activation::Silu,
            sub_norms: false,
            act_quant: ActQuant::PerBlock,
            qkv_bias: false,
            qk_norm: false,
            post_norms: false,
            swa_every: 1,
        };
        match arch {
            Arch::Llama => llama,
            Arch::Bitnet => Features {
                rope_style: RopeStyle::HalfSplit,
                sub_norms: true,
                ..llama
            },
            Arch::BitnetB158 => Features {
                rope_style: RopeStyle::HalfSplit,
                activation: Activation::Relu2,
                sub_norms: true,
                act_quant: ActQuant::PerToken,
                ..llama
            },
            Arch::Qwen2 => Features {
                rope_style: RopeStyle::HalfSplit,
                qkv_bias: true,
                ..llama
            },
            Arch::Qwen3 => Features {
                rope_style: RopeStyle::HalfSplit,
                qk_norm: true,
                ..llama
            },
            Arch::Phi3 => Features {
                rope_style: RopeStyle::HalfSplit,
                ..llama
            },
            Arch::Gemma2 => Features {
                rope_style: RopeStyle::HalfSplit,
                activation: Activation::GeluTanh,
                post_norms: true,
                swa_every: 2,
                ..llama
            },
            Arch::Gemma3 => Features {
                rope_style: RopeStyle::HalfSplit,
                activation: Activation::GeluTanh,
                post_norms: true,
                qk_norm: true,
                swa_every: 6,
                ..llama
            },
        }
    }
}

impl Config {
    /// Reads the configuration from GGUF metadata and the embedding tensor's shape.
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Config, ModelError> {
        let arch_name = g
            .get_str("general.architecture")
            .ok_or_else(|| ModelError::MissingKey(name("general.architecture")))?;
        let arch = match arch_name {
            "llama" | "mistral" => Arch::Llama,
            "bitnet" => Arch::Bitnet,
            "bitnet-b1.58" | "bitnet_b1_58" | "bitnet-25" => Arch::BitnetB158,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "phi3" => Arch::Phi3,
            "gemma2" => Arch::Gemma2,
            "gemma3" => Arch::Gemma3,
            other => return Err(ModelError::UnsupportedArchitecture(name(other))),
        };
        let a = arch_name;
        let d_model = req_u64(g, a, "embedding_length")?;
        let n_layers = req_u64(g, a, "block_count")?;
        if n_layers > MAX_LAYERS {
            return Err(ModelError::TooManyLayers(n_layers));
        }
        let d_ff = req_u64(g, a, "feed_forward_length")?;
        let n_heads = req_u64(g, a, "attention.head_count")?;
        let n_kv_heads = opt_u64(g, a, "attention.head_count_kv")?.unwrap_or(n_heads);
        if n_heads % n_kv_heads != 0 {
            return Err(ModelError::BadValue(key(a, "attention.head_count_kv")));
        }
        let head_dim = match opt_u64(g, a, "attention.key_length")? {
            Some(h) => h,
            None => {
                if d_model % n_heads != 0 {
                    return Err(ModelError::BadValue(key(a, "attention.head_count")));
                }
                d_model / n_heads
            }
        };
        if let Some(v) = opt_u64(g, a, "attention.value_length")? {
            if v != head_dim {
                return Err(ModelError::BadValue(key(a, "attention.value_length")));
            }
        }
        let rope_dim = opt_u64(g, a, "rope.dimension_count")?.unwrap_or(head_dim);
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(ModelError::BadValue(key(a, "rope.dimension_count")));
        }
        let rms_eps = opt_f32(g, a, "attention.layer_norm_rms_epsilon", 1e-5)?;
        let rope_base = opt_f32(g, a, "rope.freq_base", 10000.0)?;
        let rope_linear_scale = match g.get_str(&key(a, "rope.scaling.type")) {
            Some("linear") => 1.0 / opt_f32(g, a, "rope.scaling.factor", 1.0)?,
            Some("none") | None => 1.0,
            Some(_) => return Err(ModelError::BadValue(key(a, "rope.scaling.type"))),
        };
        let mut train_ctx = opt_u64(g, a, "context_length")?.unwrap_or(2048);
        // LongRoPE (Phi-3 128k, Phi-3.5, Phi-4-mini): short factors within the original
        // context, long ones beyond it. Without long factors the context stops there.
        let mut rope_orig_ctx = 0;
        if g.tensor("rope_factors_short.weight").is_some() {
            if let Some(orig) = opt_u64(g, a, "rope.scaling.original_context_length")? {
                if g.tensor("rope_factors_long.weight").is_some() && orig < train_ctx {
                    rope_orig_ctx = orig.max(1);
                } else {
                    train_ctx = train_ctx.min(orig);
                }
            }
        }
        let f = Features::of(arch);
        let swa = key(a, "attention.sliding_window");
        let mut sliding_window = match g.get(&swa).map(|v| v.as_u64()) {
            None | Some(Some(0)) => 0,
            Some(Some(w)) => w.min(1 << 24) as usize,
            Some(None) => return Err(ModelError::BadValue(swa)),
        };
        // Gemma 2 files from before the key was written: Gemma 2's 4096.
        if arch == Arch::Gemma2 && sliding_window == 0 && g.get(&swa).is_none() {
            sliding_window = 4096;
        }
        let local_layers = if sliding_window == 0 {
            [0; MAX_LAYERS / 64]
        } else {
            local_layers(g, a, n_layers, f.swa_every)?
        };
        // Gemma's sliding-window layers keep their own RoPE base, unscaled; other families'
        // share the global one.
        let (rope_base_local, rope_linear_scale_local) = match arch {
            Arch::Gemma3 => (opt_f32(g, a, "rope.freq_base_swa", 10000.0)?, 1.0),
            Arch::Gemma2 => (
                opt_f32(g, a, "rope.freq_base_swa", rope_base)?,
                rope_linear_scale,
            ),
            _ => (rope_base, rope_linear_scale),
        };
        // Gemma scales queries by query_pre_attn_scalar^-1/2, which GGUF does not store:
        // llama.cpp's rule is the head size except for the 27B models (d_model / n_heads).
        let gemma_27b =
            (arch == Arch::Gemma2 && n_layers == 46) || (arch == Arch::Gemma3 && n_layers == 62);
        let attn_scale = if gemma_27b {
            1.0 / libm::sqrtf((d_model / n_heads) as f32)
        } else {
            1.0 / libm::sqrtf(head_dim as f32)
        };
        let gemma = matches!(arch, Arch::Gemma2 | Arch::Gemma3);
        let softcap = |suffix| -> Result<f32, ModelError> {
            if gemma {
                opt_f32(g, a, suffix, 0.0)
            } else {
                Ok(0.0)
            }
        };
        let attn_softcap = if arch == Arch::Gemma2 {
            softcap("attn_logit_softcapping")?
        } else {
            0.0
        };
        let final_softcap = softcap("final_logit_softcapping")?;
        let embd = g
            .tensor("token_embd.weight")
            .ok_or_else(|| ModelError::MissingTensor(name("token_embd.weight")))?;
        if embd.n_dims != 2 || embd.dims[0] as usize != d_model {
            return Err(ModelError::BadShape(name("token_embd.weight")));
        }
        let n_vocab = embd.dims[1] as usize;
        Ok(Config {
            arch_name: name(arch_name),
            arch,
            n_vocab,
            d_model,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            d_ff,
            rms_eps,
            rope_base,
            rope_dim,
            rope_linear_scale,
            rope_attn_factor: opt_f32(g, a, "rope.scaling.attn_factor", 1.0)?,
            rope_style: f.rope_style,
            train_ctx,
            rope_orig_ctx,
            sliding_window,
            local_layers,
            rope_base_local,
            rope_linear_scale_local,
            attn_scale,
            attn_softcap,
            final_softcap,
            embd_scale: if gemma {
                libm::sqrtf(d_model as f32)
            } else {
                1.0
            },
            post_norms: f.post_norms,
            activation: f.activation,
            sub_norms: f.sub_norms,
            act_quant: f.act_quant,
            qkv_bias: f.qkv_bias,
            qk_norm: f.qk_norm,
        })
    }

    /// The longest context to use when none is asked for: the training context, except
    /// LongRoPE's original one (where the short factors, and llama.cpp's default context,
    /// keep the model as it runs most of the time).
    pub fn default_ctx(&self) -> usize {
        if self.rope_orig_ctx > 0 {
            self.rope_orig_ctx.min(self.train_ctx)
        } else {
            self.train_ctx
        }
    }

    /// Whether a context of `ctx` positions per sequence rotates with LongRoPE's long factors.
    pub fn rope_long(&self, ctx: usize) -> bool {
        self.rope_orig_ctx > 0 && ctx > self.rope_orig_ctx
    }

    /// Whether layer `l` attends only to the last [`Config::sliding_window`] positions.
    pub fn is_local(&self, l: usize) -> bool {
        l < MAX_LAYERS && self.local_layers[l / 64] >> (l % 64) & 1 == 1
    }

    /// Width of the query projection (`n_heads · head_dim`).
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of the key and value projections (`n_kv_heads · head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Elements (f16) of KV cache one position takes across all layers.
    pub fn kv_elems_per_pos(&self) -> usize {
        2 * self.n_layers * self.kv_dim()
    }
}
