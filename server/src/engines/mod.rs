//! The engines a server runs, one room each: `llm` generates text, `stt` transcribes speech.

pub mod llm;
pub mod stt;
