//! The byte-level BPE tokenizer (SmolLM2's vocabulary from the test fixture): decoding the
//! tokens of any text gives the text back, with and without special-token parsing, and the
//! streaming detokenizer agrees with the whole-sequence decoder.
//!
//! Bytes that have no token at all in the vocabulary (SmolLM2 lacks some ASCII control
//! characters, e.g. U+0004) are dropped by encoding, as llama.cpp does; the round trip is
//! checked against the text without them (found by this target: `corpus/tokenizer_roundtrip/
//! regress-byte-without-token`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use trillim_core::format::gguf::Gguf;
use trillim_core::tokenizer::{gpt2_byte_to_char, Detokenizer, Tokenizer};

struct Tok {
    tok: Tokenizer<'static>,
}

fn tokenizer() -> &'static Tok {
    static T: OnceLock<Tok> = OnceLock::new();
    T.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/models/tiny-b158-i2_s.gguf"
        );
        let bytes: &'static [u8] = Box::leak(
            std::fs::read(path)
                .expect("fixture model")
                .into_boxed_slice(),
        );
        let g = Gguf::parse(bytes).expect("fixture parses");
        let words = Tokenizer::mem_words_for_gguf(&g).expect("vocabulary");
        let mem: &'static mut [u32] = Box::leak(vec![0u32; words].into_boxed_slice());
        Tok {
            tok: Tokenizer::from_gguf(&g, mem).expect("tokenizer"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let t = &tokenizer().tok;
    let mut ids = vec![0u32; t.max_tokens(text)];
    let mut bytes = vec![0u8; text.len() * 4 + 64];
    let expected: Vec<u8> = text
        .bytes()
        .filter(|&b| {
            let mut c = [0u8; 4];
            t.token_id(gpt2_byte_to_char(b).encode_utf8(&mut c).as_bytes())
                .is_some()
        })
        .collect();
    for parse_special in [false, true] {
        let n = t
            .encode(text, false, parse_special, &mut ids)
            .expect("encode");
        let m = t.decode(&ids[..n], true, &mut bytes).expect("decode");
        if parse_special {
            // Special-token texts come back verbatim; other bytes as without parsing.
            if expected.len() == text.len() {
                assert_eq!(&bytes[..m], text.as_bytes(), "parse_special");
            }
            continue;
        }
        assert_eq!(&bytes[..m], &expected[..]);
        if let Ok(expected) = std::str::from_utf8(&expected) {
            let mut streamed = String::new();
            let mut d = Detokenizer::new(true);
            for &id in &ids[..n] {
                d.push(t, id, &mut |s| streamed.push_str(s));
            }
            d.flush(&mut |s| streamed.push_str(s));
            assert_eq!(streamed, expected);
        }
    }
});
