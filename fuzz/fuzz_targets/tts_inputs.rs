//! pocket-tts inputs on arbitrary bytes: voice-state files (uploads) and `tokenizer.json`
//! text must parse or return errors, never panic; a parsed tokenizer must encode and decode
//! any text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trillim_voice::tts::tokenizer::Tokenizer;
use trillim_voice::tts::VoiceState;

fuzz_target!(|data: &[u8]| {
    let _ = VoiceState::from_safetensors(data, 2, 64);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(t) = Tokenizer::from_json(text) {
            let ids = t.encode("Hello world, it's 42.");
            let _ = t.decode(&ids);
        }
        let _ = trillim_voice::tts::text::prepare(text, &[('\u{2019}', "'".into())]);
    }
});
