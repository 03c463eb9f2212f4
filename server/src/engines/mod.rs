//! The engines a server runs, one room each: `llm` generates text (more, such as speech, are
//! to come beside it).

pub mod llm;
