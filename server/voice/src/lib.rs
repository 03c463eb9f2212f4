//! trillim's speech side: decoding uploaded audio to 16 kHz mono, the Whisper speech-to-text
//! model read from CTranslate2 `model.bin` files, and the bounded `multipart/form-data` parser
//! that uploads come through, and pocket-tts text-to-speech (FlowLM and the Mimi decoder).
//! Everything here takes untrusted bytes and answers with typed
//! errors; nothing panics on bad input.
#![forbid(unsafe_code)]

pub mod audio;
pub mod ct2;
pub mod mel;
pub mod multipart;
pub mod resample;
pub mod stretch;
pub mod tts;
pub mod whisper;
