//! The GGUF reader, model configuration, weight layout and tokenizer sizing over any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trillim_core::format::gguf::Gguf;
use trillim_core::model::{Config, Weights};
use trillim_core::tokenizer::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::parse(data) else { return };
    for (k, v) in g.metadata() {
        let _ = (k.len(), v.as_u64(), v.as_f64(), v.as_str(), v.as_bool());
        if let Some(a) = v.as_array() {
            for x in a.iter().take(64) {
                let _ = x.as_str();
            }
            let _ = a.f32_at(a.len().saturating_sub(1));
        }
    }
    for t in g.tensors() {
        let _ = (t.n_elements(), t.row_len(), t.n_rows());
    }
    if let Ok(c) = Config::from_gguf(&g) {
        let _ = Weights::from_gguf(&g, &c);
    }
    if let Ok(words) = Tokenizer::mem_words_for_gguf(&g) {
        if words <= 1 << 20 {
            let mut mem = vec![0u32; words];
            if let Ok(tok) = Tokenizer::from_gguf(&g, &mut mem) {
                let mut out = [0u32; 256];
                let _ = tok.encode("Hello, world! <|im_start|>", true, true, &mut out);
            }
        }
    }
});
