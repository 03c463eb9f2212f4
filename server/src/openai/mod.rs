//! The OpenAI-compatible routes: one module per route family, the request parsing and
//! validation they share, the error type every answer uses, and the response and stream
//! formatting. Inference never runs here: handlers queue jobs on an engine and relay its
//! events.

pub mod audio;
mod error;
pub mod generate;
pub mod load;
pub mod models;
pub mod output;
pub mod pattern;
pub mod request;
pub mod schema;
pub mod tool_stream;
pub mod tools;

pub use error::ApiError;
