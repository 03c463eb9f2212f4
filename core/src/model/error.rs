use core::fmt;

use crate::format::gguf::GgufError;

/// A short owned name (metadata key, tensor name or architecture) carried in errors.
pub type Name = heapless::String<64>;

/// Builds a [`Name`], truncating at a character boundary if needed.
pub fn name(s: &str) -> Name {
    let mut n = Name::new();
    for ch in s.chars() {
        if n.push(ch).is_err() {
            break;
        }
    }
    n
}

/// Why a model cannot be loaded or run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelError {
    /// The file is not a valid GGUF file.
    Gguf(GgufError),
    /// `general.architecture` names an architecture this build does not run.
    UnsupportedArchitecture(Name),
    /// A required metadata key is missing or has the wrong type.
    MissingKey(Name),
    /// A metadata value is out of range.
    BadValue(Name),
    /// A required tensor is missing.
    MissingTensor(Name),
    /// A tensor has a weight type this build cannot compute with.
    UnsupportedType {
        /// Tensor name.
        tensor: Name,
        /// ggml type name.
        type_name: &'static str,
    },
    /// A tensor's shape does not match the configuration.
    BadShape(Name),
    /// The model has more layers than [`crate::model::MAX_LAYERS`].
    TooManyLayers(usize),
    /// A caller-provided buffer is too small.
    BufferTooSmall(&'static str),
    /// A token id is not in the vocabulary.
    BadToken(u32),
    /// The sequence would exceed the KV cache capacity.
    ContextFull,
    /// The model uses a feature this build does not run (named by the tensor or key).
    UnsupportedFeature {
        /// Tensor or metadata key that shows the feature.
        found: Name,
        /// The feature.
        feature: &'static str,
    },
}

impl From<GgufError> for ModelError {
    fn from(e: GgufError) -> Self {
        ModelError::Gguf(e)
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::Gguf(e) => write!(f, "{e}"),
            ModelError::UnsupportedArchitecture(a) => {
                write!(f, "unsupported architecture '{a}' (supported: ")?;
                for (i, s) in super::config::SUPPORTED_ARCHITECTURES.iter().enumerate() {
                    write!(f, "{}{s}", if i > 0 { ", " } else { "" })?;
                }
                write!(f, ")")
            }
            ModelError::MissingKey(k) => write!(f, "missing or invalid metadata key '{k}'"),
            ModelError::BadValue(k) => write!(f, "metadata value '{k}' is out of range"),
            ModelError::MissingTensor(t) => write!(f, "missing tensor '{t}'"),
            ModelError::UnsupportedType { tensor, type_name } => {
                write!(
                    f,
                    "tensor '{tensor}' has weight type {type_name}, which is not supported \
                     (supported: "
                )?;
                for (i, t) in trillim_kernels::WeightType::ALL.iter().enumerate() {
                    let name = crate::format::gguf::ggml_type_name(t.ggml_id());
                    write!(f, "{}{name}", if i > 0 { ", " } else { "" })?;
                }
                write!(f, ")")
            }
            ModelError::BadShape(t) => write!(f, "tensor '{t}' has an unexpected shape"),
            ModelError::TooManyLayers(n) => write!(f, "model has {n} layers, too many"),
            ModelError::BufferTooSmall(b) => write!(f, "buffer '{b}' is too small"),
            ModelError::BadToken(t) => write!(f, "token id {t} is outside the vocabulary"),
            ModelError::ContextFull => write!(f, "the context window is full"),
            ModelError::UnsupportedFeature { found, feature } => {
                write!(f, "'{found}' asks for {feature}, which is not supported")
            }
        }
    }
}

impl core::error::Error for ModelError {}
