//! Tokenizer against llama.cpp's token ids for SmolLM2 (testdata/golden/tokenizer-smollm2.json),
//! round trips, the incremental detokenizer, random text, and the tokenizer.json loader.
#![forbid(unsafe_code)]

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

#[test]
fn golden_ids_real_model() {
    let bytes = std::fs::read(smollm2_path()).unwrap();
    with_tokenizer(&bytes, check_golden);
}

#[test]
fn specials_and_eog() {
    let bytes = model_bytes();
    with_tokenizer(&bytes, |tok| {
        assert_eq!(tok.bos(), Some(1));
        assert_eq!(tok.eos(), Some(2));
        // <|im_end|> (2) and <|endoftext|> (0) end generation.
        assert!(tok.is_eog(0) && tok.is_eog(2) && !tok.is_eog(1) && !tok.is_eog(100));
        assert_eq!(tok.token_text(1), b"<|im_start|>");
        // No BOS for this vocabulary even with add_special.
        let ids = encode(tok, "<|im_start|>", true);
        assert_eq!(ids, vec![1]);
        // Control tokens render only on request.
        assert_eq!(decode(tok, &[1, 19556], false), "Hello");
        assert_eq!(decode(tok, &[1, 19556], true), "<|im_start|>Hello");
        // Too small an output buffer is an error, never a silent truncation.
        let mut out = [0u32; 2];
        assert!(tok.encode("Hello, world!", false, false, &mut out).is_err());
    });
}

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_text(r: &mut Rng, max_len: usize) -> String {
    const PIECES: &[&str] = &[
        " ",
        "  ",
        "\n",
        "\r\n",
        "\t",
        "'s",
        "'LL",
        "a",
        "Z",
        "é",
        "ß",
        "1",
        "42",
        "٣",
        "½",
        "Ⅻ",
        ".",
        "!?",
        "—",
        "$",
        "<|im_start|>",
        "<|im_end|>",
        "<|",
        "|>",
        "日本",
        "한",
        "🙂",
        "👍🏽",
        "\u{200b}",
        "\u{a0}",
        "\u{3000}",
        "\u{301}",
        "\u{fffd}",
        "x\u{0}y",
    ];
    let n = r.below(max_len as u64 + 1) as usize;
    let mut s = String::new();
    for _ in 0..n {
        if r.below(3) == 0 {
            // Any scalar value.
            let c = loop {
                let cp = match r.below(4) {
                    0 => r.below(0x80),
                    1 => r.below(0x800),
                    2 => r.below(0x10000),
                    _ => r.below(0x110000),
                } as u32;
                if let Some(c) = char::from_u32(cp) {
                    break c;
                }
            };
            s.push(c);
        } else {
            s.push_str(PIECES[r.below(PIECES.len() as u64) as usize]);
        }
    }
    s
}

/// Bytes that have a token of their own (SmolLM2 lacks a few, e.g. 0x04 and 0xF1: text
/// containing them loses them, as in llama.cpp).
fn byte_has_token(tok: &Tokenizer<'_>, b: u8) -> bool {
    let mut buf = [0u8; 4];
    let c = trillim_core::tokenizer::gpt2_byte_to_char(b).encode_utf8(&mut buf);
    tok.token_id(c.as_bytes()).is_some()
}

#[test]
fn random_text_round_trips() {
    let bytes = model_bytes();
    with_tokenizer(&bytes, |tok| {
        let has: Vec<bool> = (0..=255u8).map(|b| byte_has_token(tok, b)).collect();
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        let mut lossy = 0;
        for i in 0..4000 {
            let s = random_text(&mut r, if i % 100 == 0 { 400 } else { 24 });
            let representable = s.bytes().all(|b| has[b as usize]);
            for special in [false, true] {
                let ids = encode(tok, &s, special);
                assert!(ids.len() <= tok.max_tokens(&s));
                let mut raw = vec![0u8; s.len() + 1];
                let n = tok.decode(&ids, true, &mut raw).unwrap();
                let kept: Vec<u8> = s.bytes().filter(|&b| has[b as usize]).collect();
                assert_eq!(&raw[..n], &kept[..], "{s:?}");
                if representable {
                    assert_eq!(decode(tok, &ids, true), s, "ids {ids:?}");
                } else {
                    lossy += 1;
                }
            }
        }
        assert!(lossy < 4000, "too few representable samples");
    });
}

#[test]
fn long_words_use_the_output_tail() {
    let bytes = model_bytes();
    with_tokenizer(&bytes, |tok| {
        for s in [
            "a".repeat(1000),
            " ".repeat(700) + "x",
            "=".repeat(513),
            "日本語".repeat(200),
            "🙂".repeat(300),
        ] {
            let ids = encode(tok, &s, false);
            assert_eq!(decode(tok, &ids, true), s);
            // Same ids when the word is merged in pieces of the tail without a rank cache.
            let mut out = vec![0u32; s.len()];
            let n = tok.encode(&s, false, false, &mut out).unwrap();
            assert_eq!(&out[..n], &ids[..]);
        }
    });
}

#[test]
fn detokenizer_holds_back_split_characters() {
    let bytes = model_bytes();
    with_tokenizer(&bytes, |tok| {
        for text in [
            "naïve café déjà vu",
            "日本語のテキスト",
            "🙂👍🏽 ok",
            "Ünïcödé—",
        ] {
            // Every byte as its own token: each multi-byte character arrives in pieces.
            let byte_ids: Vec<u32> = text
                .bytes()
                .map(|b| {
                    let mut buf = [0u8; 4];
                    let c = trillim_core::tokenizer::gpt2_byte_to_char(b).encode_utf8(&mut buf);
                    tok.token_id(c.as_bytes()).unwrap()
                })
                .collect();
            let mut d = Detokenizer::new(false);
            let mut got = String::new();
            for &id in &byte_ids {
                d.push(tok, id, &mut |t: &str| {
                    got.push_str(t);
                });
                // Everything except an incomplete trailing character is out.
                assert!(text.starts_with(&got));
                assert!(d.pending() < 4);
            }
            assert_eq!(d.pending(), 0);
            d.flush(&mut |t: &str| got.push_str(t));
            assert_eq!(got, text);
        }
        // A dangling lead byte comes out as U+FFFD at the end.
        let mut d = Detokenizer::new(false);
        let mut got = String::new();
        let e = tok.token_id("ì".as_bytes()).unwrap(); // byte 0xEC
        d.push(tok, e, &mut |t: &str| got.push_str(t));
        assert_eq!(got, "");
        d.flush(&mut |t: &str| got.push_str(t));
        assert_eq!(got, "\u{fffd}");
    });
}

#[test]
fn encode_speed() {
    let bytes = model_bytes();
    let g = golden();
    let mut text = String::new();
    while text.len() < 1 << 20 {
        for case in g["tokenize"].as_array().unwrap() {
            text.push_str(case["text"].as_str().unwrap());
            text.push('\n');
        }
        text.push_str(
            "The quick brown fox jumps over the lazy dog. In 1905, Einstein published \
             four papers; they changed physics forever.\n",
        );
    }
    with_tokenizer(&bytes, |tok| {
        let mut out = vec![0u32; tok.max_tokens(&text)];
        let t = std::time::Instant::now();
        let n = tok.encode(&text, false, true, &mut out).unwrap();
        let dt = t.elapsed().as_secs_f64();
        eprintln!(
            "encoded {} bytes into {n} tokens in {:.1} ms: {:.2} M tokens/s",
            text.len(),
            dt * 1e3,
            n as f64 / dt / 1e6
        );
        let t = std::time::Instant::now();
        let mut s = String::with_capacity(text.len());
        let mut d = Detokenizer::new(true);
        for &id in &out[..n] {
            d.push(tok, id, &mut |p: &str| s.push_str(p));
        }
        eprintln!("decoded in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(s, text);
    });
}

/// A tokenizer.json with SmolLM2's vocabulary, merges and special tokens, written from the
/// GGUF the way Hugging Face stores it.
fn smollm2_tokenizer_json(bytes: &[u8]) -> String {
    use serde_json::{json, Map, Value};
    let g = Gguf::parse(bytes).unwrap();
    let tokens = g.get_array("tokenizer.ggml.tokens").unwrap();
    let types = g.get_array("tokenizer.ggml.token_type").unwrap();
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (i, (t, ty)) in tokens.iter().zip(types.iter()).enumerate() {
        let s = t.as_str().unwrap().to_owned();
        if ty.as_u64() == Some(3) {
            added.push(
                json!({"id": i, "content": s, "special": true, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false}),
            );
        }
        vocab.insert(s, json!(i));
    }
    let merges: Vec<Value> = g
        .get_array("tokenizer.ggml.merges")
        .unwrap()
        .iter()
        .map(|m| json!(m.as_str().unwrap()))
        .collect();
    json!({
        "version": "1.0",
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": merges}
    })
    .to_string()
}

#[test]
fn tokenizer_json_matches_golden() {
    use trillim_runtime::tokenizer_json::OwnedTokenizer;
    let bytes = model_bytes();
    let json = smollm2_tokenizer_json(&bytes);
    let config =
        r#"{"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": false}"#;
    let owned = OwnedTokenizer::from_json(&json, Some(config)).unwrap();
    let tok = owned.tokenizer();
    assert_eq!(tok.pre_tokenizer(), PreTokenizer::DigitsGpt2);
    assert!(tok.pre_tokenizer_known());
    assert_eq!(tok.n_vocab(), 49152);
    assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)));
    check_golden(&tok);
}
