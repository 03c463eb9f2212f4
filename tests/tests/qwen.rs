//! The tiny Qwen 2 and Qwen 3 fixtures (scripts/arch-goldens.py) beyond their logits: the
//! configuration read from their metadata, their tokenizer (the real Qwen 2 vocabulary, cut
//! down) against llama.cpp's ids, and the native chat renderer against jinja2's rendering of
//! their real chat templates.
#![forbid(unsafe_code)]

use trillim_core::chat::{ChatTemplate, Family, Message};
use trillim_core::format::gguf::Gguf;
use trillim_core::model::{Arch, Config, RopeStyle, Weights};
use trillim_core::tokenizer::Tokenizer;
use trillim_tests::{model_and_golden, tokenizer_mismatches};

const MODELS: [(&str, &str); 2] = [
    (
        "models/tiny-qwen2-q8_0.gguf",
        "golden/logits-tiny-qwen2-q8_0.json",
    ),
    (
        "models/tiny-qwen3-f16.gguf",
        "golden/logits-tiny-qwen3-f16.json",
    ),
];

#[test]
fn configuration_follows_the_metadata() {
    let (q2, _) = model_and_golden(MODELS[0].0, MODELS[0].1);
    let g = Gguf::parse(&q2).unwrap();
    let c = Config::from_gguf(&g).unwrap();
    assert_eq!(c.arch, Arch::Qwen2);
    assert_eq!(
        (c.d_model, c.n_heads, c.n_kv_heads, c.head_dim),
        (128, 4, 2, 32)
    );
    assert_eq!(c.rope_style, RopeStyle::HalfSplit);
    assert!(c.qkv_bias && !c.qk_norm);
    let w = Weights::from_gguf(&g, &c).unwrap();
    let l = &w.layers[0];
    assert_eq!(l.q_bias.map(|t| t.cols), Some(128));
    assert_eq!(l.k_bias.map(|t| t.cols), Some(64));
    assert!(l.q_norm.is_none());
    assert_ne!(
        w.output, w.token_embd,
        "the Qwen 2 fixture has its own output matrix"
    );

    let (q3, _) = model_and_golden(MODELS[1].0, MODELS[1].1);
    let g = Gguf::parse(&q3).unwrap();
    let c = Config::from_gguf(&g).unwrap();
    assert_eq!(c.arch, Arch::Qwen3);
    // The head size comes from key_length, not d_model / n_heads.
    assert_eq!(
        (c.d_model, c.head_dim, c.q_dim(), c.kv_dim()),
        (128, 64, 256, 128)
    );
    assert!(c.qk_norm && !c.qkv_bias);
    let w = Weights::from_gguf(&g, &c).unwrap();
    let l = &w.layers[1];
    assert_eq!(l.q_norm.map(|t| t.cols), Some(64));
    assert_eq!(l.k_norm.map(|t| t.cols), Some(64));
    assert!(l.q_bias.is_none());
    assert_eq!((l.o.rows, l.o.cols), (128, 256));
    assert_eq!(
        w.output, w.token_embd,
        "the Qwen 3 fixture ties its embeddings"
    );
}

/// A Qwen 3 file without its per-head norms is refused, naming the missing tensor.
#[test]
fn qwen3_without_head_norms_is_refused() {
    let (mut bytes, _) = model_and_golden(MODELS[1].0, MODELS[1].1);
    let name = b"blk.0.attn_q_norm.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap();
    bytes[at + 6] = b'X';
    let g = Gguf::parse(&bytes).unwrap();
    let c = Config::from_gguf(&g).unwrap();
    let e = Weights::from_gguf(&g, &c).unwrap_err().to_string();
    assert!(e.contains("blk.0.attn_q_norm.weight"), "{e}");
}

#[test]
fn tokenizer_matches_llama_cpp() {
    for (model, golden) in MODELS {
        let (bytes, g) = model_and_golden(model, golden);
        let gguf = Gguf::parse(&bytes).unwrap();
        assert_eq!(gguf.get_str("tokenizer.ggml.pre"), Some("qwen2"));
        let mut mem = vec![0u32; Tokenizer::mem_words_for_gguf(&gguf).unwrap()];
        let tok = Tokenizer::from_gguf(&gguf, &mut mem).unwrap();
        // <|endoftext|> and <|im_end|> end generation, <|im_start|> does not.
        assert!(tok.is_eog(5117) && tok.is_eog(5119) && !tok.is_eog(5118));
        let failures = tokenizer_mismatches(&tok, &g, true);
        assert!(failures.is_empty(), "{model}: {}", failures.join("\n"));
    }
}

#[test]
fn native_chat_renderer_matches_the_templates() {
    for ((model, golden), family) in MODELS.iter().zip([Family::Qwen, Family::Qwen3]) {
        let (bytes, g) = model_and_golden(model, golden);
        let gguf = Gguf::parse(&bytes).unwrap();
        let t = ChatTemplate::detect(gguf.get_str("tokenizer.chat_template")).unwrap();
        assert_eq!(t.family, family, "{model}");
        for case in g["chat"].as_array().unwrap() {
            let messages: Vec<Message<'_>> = case["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| Message {
                    role: m["role"].as_str().unwrap(),
                    content: m["content"].as_str().unwrap(),
                })
                .collect();
            let gen = case["add_generation_prompt"].as_bool().unwrap();
            let mut buf = vec![0u8; 4096];
            let got = t.render(&messages, gen, "", None, &mut buf).unwrap();
            assert_eq!(got, case["rendered"].as_str().unwrap(), "{model}");
        }
    }
}
