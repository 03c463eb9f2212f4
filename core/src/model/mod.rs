//! Transformer models: configuration from metadata, weight layout, and the forward pass
//! (`forward`), built from shared blocks: the KV cache (`kv`), norms and activations (`norm`),
//! rotary embeddings (`rope`), attention (`attention`), matrix products (`projection`) and
//! the LoRA side path (`lora`). An architecture family is a module beside `forward` over the
//! same blocks: `qwen` holds what Qwen 2 and 3 add to the pass, `gemma` what Gemma 2 and 3 add.

mod attention;
mod config;
mod error;
mod forward;
mod gemma;
mod kv;
mod lora;
mod norm;
mod projection;
mod qwen;
mod rope;
mod scratch;
mod weights;

pub use config::{ActQuant, Activation, Arch, Config, RopeStyle, MAX_LAYERS};
pub use error::{ModelError, Name};
pub use forward::Forward;
pub use kv::{KvCache, SeqToken, MAX_SLOTS};
pub use lora::{Lora, LoraPair, LoraType, Proj, MAX_LORA_QUANT_COLS, MAX_LORA_RANK};
pub use scratch::{Scratch, ScratchSizes};
pub use weights::{Buffers, Layer, Storage, Tensor, Weights};
