//! Transformer models: configuration from metadata, weight layout, and the forward pass.

mod config;
mod error;
mod forward;
mod scratch;
mod weights;

pub use config::{ActQuant, Activation, Arch, Config, RopeStyle, MAX_LAYERS};
pub use error::{ModelError, Name};
pub use forward::{Forward, KvCache, SeqToken, MAX_SLOTS};
pub use scratch::{Scratch, ScratchSizes};
pub use weights::{Buffers, Layer, Storage, Tensor, Weights};
