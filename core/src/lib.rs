//! The inference core of trillim: `no_std`, no allocator, no I/O.
//!
//! Everything here works on caller-provided memory: model files are read from `&[u8]`
//! ([`format::gguf`]), the forward pass ([`model`]) writes into a scratch arena and a KV buffer
//! whose sizes are computed from the model's configuration, and parallelism enters through
//! the [`Parallel`] trait that the shells implement with their own thread pools.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod browser;
pub mod chat;
pub mod format;
pub mod generate;
pub mod grammar;
pub mod http;
pub mod json;
pub mod math;

pub use trillim_kernels as kernels;
pub mod model;
pub mod parallel;
pub mod sampler;
pub mod tokenizer;

pub use parallel::{ActRows, Parallel, Sequential};
