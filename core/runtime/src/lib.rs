//! std glue shared by trillim's shells (the server and the firmware): CPU feature detection
//! and kernel selection, a persistent thread pool, memory-mapped model loading and sessions.

pub mod adapter_files;
pub mod bench;
pub mod convert;
pub mod cpu;
pub mod gguf_write;
pub mod lora;
pub mod model;
pub mod pool;
pub mod safetensors;
pub mod tiles;
pub mod tokenizer_json;

pub use lora::{Adapter, AdapterError, LoraQuant};
pub use memmap2::Mmap;
pub use model::{map_file, LoadError, LoadOptions, LoadedModel, Session, UnembedQuant};
pub use pool::ThreadPool;
pub use tiles::TileSource;
