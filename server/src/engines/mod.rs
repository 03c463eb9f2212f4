//! The engines a server runs, one room each: `llm` generates text, `stt` transcribes speech,
//! `tts` speaks text.

pub mod llm;
pub mod stt;
pub mod tts;
