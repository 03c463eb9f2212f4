//! The tiny Gemma 3 fixture (scripts/arch-goldens.py) beyond its logits: the configuration read
//! from its metadata (sliding-window and global layers with their RoPE bases, the query scale
//! from `key_length`, the embedding scale), the post-norm and Q/K-norm tensors, the tokenizer
//! (SentencePiece without a space prefix) against llama.cpp's ids, and the native chat renderer
//! against jinja2's renderings of Gemma's template.
#![forbid(unsafe_code)]

use serde_json::Value;
use trillim_core::chat::{ChatError, ChatTemplate, Family, Message};
use trillim_core::format::gguf::Gguf;
use trillim_core::model::{Activation, Arch, Config, RopeStyle, Weights};
use trillim_core::tokenizer::Tokenizer;
use trillim_tests::{model_and_golden, testdata, tokenizer_mismatches};

const MODEL: &str = "models/tiny-gemma3-q8_0.gguf";
const GOLDEN: &str = "golden/logits-tiny-gemma3-q8_0.json";

fn load() -> (Vec<u8>, Value) {
    model_and_golden(MODEL, GOLDEN)
}

#[test]
fn configuration_follows_the_metadata() {
    let (bytes, _) = load();
    let g = Gguf::parse(&bytes).unwrap();
    let c = Config::from_gguf(&g).unwrap();
    assert_eq!(c.arch, Arch::Gemma3);
    // The head size comes from key_length (4 × 128 ≠ 256).
    assert_eq!(
        (c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.d_ff),
        (256, 4, 1, 128, 512)
    );
    assert_eq!(c.rope_style, RopeStyle::HalfSplit);
    assert_eq!(c.activation, Activation::GeluTanh);
    assert!(c.qk_norm && c.post_norms && !c.qkv_bias && !c.sub_norms);
    // Every 6th layer is global; the window does not cap the context.
    assert_eq!(c.sliding_window, 16);
    let local: Vec<bool> = (0..c.n_layers).map(|l| c.is_local(l)).collect();
    assert_eq!(local, [true, true, true, true, true, false, true, true]);
    assert_eq!(c.train_ctx, 32768);
    // Global layers: the file's base and linear scaling; local ones: 10 000, unscaled.
    assert_eq!((c.rope_base, c.rope_linear_scale), (1e6, 0.125));
    assert_eq!((c.rope_base_local, c.rope_linear_scale_local), (1e4, 1.0));
    assert_eq!(c.attn_scale, 1.0 / 128f32.sqrt());
    assert_eq!(c.embd_scale, 16.0);
    assert_eq!((c.attn_softcap, c.final_softcap), (0.0, 0.0));
    let w = Weights::from_gguf(&g, &c).unwrap();
    for l in &w.layers {
        assert_eq!(l.attn_post_norm.map(|t| t.cols), Some(256));
        assert_eq!(l.ffn_post_norm.map(|t| t.cols), Some(256));
        assert_eq!(l.q_norm.map(|t| t.cols), Some(128));
        assert_eq!(l.k_norm.map(|t| t.cols), Some(128));
    }
}

/// Gemma 2: every other layer global at the same RoPE base, soft-capping from the metadata,
/// no Q/K norms, and the embeddings as the output matrix.
#[test]
fn gemma2_configuration_follows_the_metadata() {
    let bytes = std::fs::read(testdata("models/tiny-gemma2-q8_0.gguf")).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let c = Config::from_gguf(&g).unwrap();
    assert_eq!(c.arch, Arch::Gemma2);
    assert_eq!(
        (c.d_model, c.n_heads, c.n_kv_heads, c.head_dim),
        (256, 4, 2, 64)
    );
    let local: Vec<bool> = (0..c.n_layers).map(|l| c.is_local(l)).collect();
    assert_eq!(local, [true, false, true, false]);
    assert_eq!(c.sliding_window, 16);
    assert_eq!((c.rope_base_local, c.rope_base), (1e4, 1e4));
    assert_eq!((c.attn_softcap, c.final_softcap), (2.0, 4.0));
    assert!(c.post_norms && !c.qk_norm);
    let w = Weights::from_gguf(&g, &c).unwrap();
    assert_eq!(w.output, w.token_embd);
    assert!(w.layers[0].q_norm.is_none() && w.layers[0].attn_post_norm.is_some());
}

/// A Gemma file without its post-attention norms is refused, naming the missing tensor.
#[test]
fn missing_post_norm_is_refused() {
    let (mut bytes, _) = load();
    let name = b"blk.3.post_attention_norm.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap();
    bytes[at + 6] = b'X';
    let g = Gguf::parse(&bytes).unwrap();
    let c = Config::from_gguf(&g).unwrap();
    let e = Weights::from_gguf(&g, &c).unwrap_err().to_string();
    assert!(e.contains("blk.3.post_attention_norm.weight"), "{e}");
}

#[test]
fn tokenizer_matches_llama_cpp() {
    let (bytes, g) = load();
    let gguf = Gguf::parse(&bytes).unwrap();
    assert_eq!(gguf.get_str("tokenizer.ggml.model"), Some("llama"));
    assert_eq!(
        gguf.get("tokenizer.ggml.add_space_prefix")
            .and_then(|v| v.as_bool()),
        Some(false)
    );
    let mut mem = vec![0u32; Tokenizer::mem_words_for_gguf(&gguf).unwrap()];
    let tok = Tokenizer::from_gguf(&gguf, &mut mem).unwrap();
    // <end_of_turn> (added after the 8000 kept tokens) ends generation, <start_of_turn> not.
    assert!(tok.is_eog(8001) && !tok.is_eog(8000));
    // llama.cpp's ids were taken without BOS (the chat renderings carry its text).
    let failures = tokenizer_mismatches(&tok, &g, false);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn messages(case: &Value) -> Vec<(String, String)> {
    case["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap().to_string();
            (s("role"), s("content"))
        })
        .collect()
}

fn render(t: &ChatTemplate<'_>, msgs: &[(String, String)], agp: bool) -> Result<String, ChatError> {
    let m: Vec<Message<'_>> = msgs
        .iter()
        .map(|(role, content)| Message { role, content })
        .collect();
    let mut out = vec![0u8; 4096];
    t.render(&m, agp, "<s>", None, &mut out).map(str::to_string)
}

/// The fixture's template (llama.cpp's copy of gemma-2-2b-it's) against jinja2's renderings;
/// the conversations it raises on are refused with its message.
#[test]
fn native_chat_renderer_matches_jinja2() {
    let (bytes, g) = load();
    let gguf = Gguf::parse(&bytes).unwrap();
    let t = ChatTemplate::detect(gguf.get_str("tokenizer.chat_template")).unwrap();
    assert_eq!(t.family, Family::Gemma2);
    assert!(t.bos);
    let chats = g["chat"].as_array().unwrap();
    assert_eq!(chats.len(), 3);
    for case in chats {
        let agp = case["add_generation_prompt"].as_bool().unwrap();
        let got = render(&t, &messages(case), agp).unwrap();
        assert_eq!(got, case["rendered"].as_str().unwrap());
    }
    let own = |r: &str, c: &str| (r.to_string(), c.to_string());
    let system = [own("system", "Be terse."), own("user", "Hi")];
    assert_eq!(
        render(&t, &system, true),
        Err(ChatError::Refused("System role not supported"))
    );
    let twice = [own("user", "Hi"), own("user", "Again")];
    let e = render(&t, &twice, true).unwrap_err().to_string();
    assert!(e.contains("must alternate"), "{e}");
}
