//! Tokenizer against llama.cpp's token ids for SmolLM2 (testdata/golden/tokenizer-smollm2.json),
//! round trips, the incremental detokenizer, random text, and the tokenizer.json loader.

use trillim_core::format::gguf::Gguf;
use trillim_core::tokenizer::{Detokenizer, PreTokenizer, Tokenizer};
use trillim_tests::{smollm2_path, testdata};

fn golden() -> serde_json::Value {
    let s = std::fs::read_to_string(testdata("golden/tokenizer-smollm2.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn model_bytes() -> Vec<u8> {
    std::fs::read(testdata("models/tiny-bitnet-tq2_0.gguf")).unwrap()
}

fn with_tokenizer(bytes: &[u8], f: impl FnOnce(&Tokenizer<'_>)) {
    let g = Gguf::parse(bytes).unwrap();
    let mut mem = vec![0u32; Tokenizer::mem_words_for_gguf(&g).unwrap()];
    let tok = Tokenizer::from_gguf(&g, &mut mem).unwrap();
    f(&tok)
}

fn encode(tok: &Tokenizer<'_>, text: &str, parse_special: bool) -> Vec<u32> {
    let mut out = vec![0u32; tok.max_tokens(text)];
    let n = tok.encode(text, true, parse_special, &mut out).unwrap();
    out.truncate(n);
    out
}

fn decode(tok: &Tokenizer<'_>, ids: &[u32], render_special: bool) -> String {
    let mut s = String::new();
    let mut d = Detokenizer::for_sequence_start(tok, render_special);
    for &id in ids {
        d.push(tok, id, &mut |t: &str| s.push_str(t));
    }
    d.flush(&mut |t: &str| s.push_str(t));
    s
}

fn check_golden(tok: &Tokenizer<'_>) {
    let g = golden();
    let mut failures = Vec::new();
    for case in g["tokenize"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        for (key, special) in [("ids", true), ("ids_no_special", false)] {
            let want = ids_of(&case[key]);
            let got = encode(tok, text, special);
            if got != want {
                failures.push(format!(
                    "{text:?} ({key}):\n  got  {got:?}\n  want {want:?}"
                ));
            }
            assert_eq!(decode(tok, &got, true), text, "round trip of {text:?}");
        }
    }
    for case in g["chat"].as_array().unwrap() {
        let text = case["rendered"].as_str().unwrap();
        let want = ids_of(&case["ids"]);
        let got = encode(tok, text, true);
        if got != want {
            failures.push(format!("chat {text:?}:\n  got  {got:?}\n  want {want:?}"));
        }
        assert_eq!(decode(tok, &got, true), text);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn golden_ids_tiny_model() {
    let bytes = model_bytes();
    with_tokenizer(&bytes, |tok| {
        assert_eq!(tok.pre_tokenizer(), PreTokenizer::DigitsGpt2);
        assert!(tok.pre_tokenizer_known());
        assert_eq!(tok.n_vocab(), 49152);
        check_golden(tok);
    });
}
