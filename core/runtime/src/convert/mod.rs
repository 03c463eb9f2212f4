//! Hugging Face safetensors checkpoints to GGUF (`trillim quantize`): Llama-family models in
//! bf16/f16/f32 and BitNet b1.58 with packed ternary weights, converted tensor by tensor a
//! few rows at a time, so memory stays at one chunk whatever the model's size.
//!
//! Llama's `q_proj`/`k_proj` rows are permuted as llama.cpp's converter does (GGUF pairs
//! rotary dimensions adjacently); BitNet keeps Hugging Face's order (its GGUF architecture
//! rotates halves). A BitNet matrix is stored `[out/4, in]` as bytes whose 2-bit field `i`
//! holds row block `i` (code − 1), with weight `ternary / weight_scale`: ternary outputs keep
//! the codes exact and carry `1 / weight_scale` as the tensor's scale.

pub mod checkpoint;
mod plan;
pub mod vocab;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use checkpoint::Checkpoint;
pub use plan::{Family, ModelInfo, Plan};
use trillim_core::kernels::WeightType;

use crate::gguf_write::{GgufWriter, WriteError};

/// Why a conversion failed. Each message names the file or tensor and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A file could not be read or written.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A file is malformed or not something this converter reads.
    #[error("{}: {why}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// `config.json` describes something this build does not convert.
    #[error("config.json: {0}")]
    Config(String),
    /// A tensor the architecture needs is not in the checkpoint.
    #[error("the checkpoint has no tensor '{0}'")]
    Missing(String),
    /// A tensor's shape or dtype does not fit the architecture or the output type.
    #[error("tensor '{name}': {why}")]
    Tensor {
        /// The tensor.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// Writing the GGUF failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl ConvertError {
    pub(crate) fn io(path: &Path, cause: std::io::Error) -> ConvertError {
        ConvertError::Io {
            path: path.to_path_buf(),
            cause,
        }
    }
}

/// The output types `trillim quantize --type` accepts, by name.
pub const TYPE_NAMES: &[&str] = &[
    "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "tq1_0", "tq2_0", "i2_s",
];

/// Parses an output type name (case-insensitive).
pub fn parse_type(name: &str) -> Result<WeightType, String> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "f32" => WeightType::F32,
        "f16" => WeightType::F16,
        "bf16" => WeightType::BF16,
        "q8_0" => WeightType::Q8_0,
        "q4_0" => WeightType::Q4_0,
        "q4_1" => WeightType::Q4_1,
        "tq1_0" => WeightType::TQ1_0,
        "tq2_0" => WeightType::TQ2_0,
        "i2_s" | "i2s" => WeightType::I2S,
        other => {
            return Err(format!(
                "unknown type '{other}' (accepted: {})",
                TYPE_NAMES.join(", ")
            ))
        }
    })
}

/// Converts `ckpt` into a GGUF written to `out`, with the projections in `ty` (`None`: TQ2_0
/// for ternary checkpoints, Q8_0 otherwise). `progress(done, total)` is called after every
/// chunk with source bytes. Returns the GGUF's size.
pub fn convert<W: Write>(
    ckpt: &Checkpoint,
    ty: Option<WeightType>,
    out: W,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, ConvertError> {
    let info = ModelInfo::from_config(&ckpt.config)?;
    let plan = Plan::new(ckpt, &info, ty)?;
    let mut meta = plan::metadata(&info, &plan);
    meta.extend(vocab::metadata(&ckpt.dir, info.n_vocab)?);
    let mut w = GgufWriter::new(out, &meta, &plan.decls())?;
    let size = w.file_size();
    plan.write(ckpt, &mut w, progress)?;
    w.finish()?;
    Ok(size)
}
