//! The tiny Phi-3 fixtures (scripts/arch-goldens.py) beyond their logits: the configuration read
//! from their metadata (partial RoPE, the sliding window, Phi-3.5's LongRoPE), the fused Q/K/V
//! and gate/up matrices split into views of the file, the refusal of LongRoPE's long factors
//! alone and the context cap of its short ones alone, the tokenizer (the real Phi-3
//! SentencePiece vocabulary, cut down) against llama.cpp's ids, and the native chat renderer's
//! refusal of its template (the server renders it with minijinja).
#![forbid(unsafe_code)]

use serde_json::Value;
use trillim_core::chat::ChatTemplate;
use trillim_core::format::gguf::Gguf;
use trillim_core::model::{Arch, Config, RopeStyle, Weights};
use trillim_core::tokenizer::Tokenizer;
use trillim_tests::{model_and_golden, testdata, tokenizer_mismatches};

const MODEL: &str = "models/tiny-phi3-q8_0.gguf";
const GOLDEN: &str = "golden/logits-tiny-phi3-q8_0.json";

fn load() -> (Vec<u8>, Value) {
    model_and_golden(MODEL, GOLDEN)
}

#[test]
fn configuration_follows_the_metadata() {
    let (bytes, _) = load();
    let g = Gguf::parse(&bytes).unwrap();
    let c = Config::from_gguf(&g).unwrap();
    assert_eq!(c.arch, Arch::Phi3);
    assert_eq!(
        (c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.d_ff),
        (128, 4, 2, 32, 256)
    );
    assert_eq!(c.rope_style, RopeStyle::HalfSplit);
    // RoPE turns 16 of each head's 32 dimensions.
    assert_eq!(c.rope_dim, 16);
    // The whole 4096-token context, each query seeing the last 2047 positions in every layer.
    assert_eq!(c.train_ctx, 4096);
    assert_eq!(c.sliding_window, 2047);
    assert!((0..c.n_layers).all(|l| c.is_local(l)));
    assert!(!c.qkv_bias && !c.qk_norm && !c.sub_norms);
}

/// Phi-3.5's LongRoPE: 128k context, by default the original 4096 where the short factors
/// apply, the long ones beyond it, with the attention factor on cos and sin.
#[test]
fn longrope_picks_its_factors_by_context_size() {
    let bytes = std::fs::read(testdata("models/tiny-phi3.5-q8_0.gguf")).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let c = Config::from_gguf(&g).unwrap();
    assert_eq!(g.get_u64("phi3.context_length"), Some(131072));
    assert_eq!((c.train_ctx, c.rope_orig_ctx), (131072, 4096));
    assert_eq!(c.default_ctx(), 4096);
    assert!(!c.rope_long(4096) && c.rope_long(4097));
    let want = (1.0 + (32f64).ln() / (4096f64).ln()).sqrt() as f32;
    assert!(
        (c.rope_attn_factor - want).abs() < 1e-6,
        "{}",
        c.rope_attn_factor
    );
    let w = Weights::from_gguf(&g, &c).unwrap();
    let short = g.tensor("rope_factors_short.weight").unwrap();
    let freqs = w.rope_freqs.unwrap();
    assert_eq!(
        freqs.offset,
        short.data.as_ptr() as usize - bytes.as_ptr() as usize
    );
    assert_eq!(freqs.cols, c.rope_dim / 2);
    let long = g.tensor("rope_factors_long.weight").unwrap();
    assert_eq!(
        w.rope_freqs_long.unwrap().offset,
        long.data.as_ptr() as usize - bytes.as_ptr() as usize
    );
}

/// Short factors without long ones keep the context within the original one.
#[test]
fn longrope_without_long_factors_stops_at_the_original_context() {
    let mut bytes = std::fs::read(testdata("models/tiny-phi3.5-q8_0.gguf")).unwrap();
    let (from, to) = (b"rope_factors_long.weight", b"rope_factors_xxxx.weight");
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    bytes[at..at + to.len()].copy_from_slice(to);
    let g = Gguf::parse(&bytes).unwrap();
    let c = Config::from_gguf(&g).unwrap();
    assert_eq!((c.train_ctx, c.rope_orig_ctx), (4096, 0));
    assert!(!c.rope_long(131072));
    assert!(Weights::from_gguf(&g, &c)
        .unwrap()
        .rope_freqs_long
        .is_none());
}

#[test]
fn fused_matrices_split_into_views_of_the_file() {
    let (bytes, _) = load();
    let g = Gguf::parse(&bytes).unwrap();
    let c = Config::from_gguf(&g).unwrap();
    let w = Weights::from_gguf(&g, &c).unwrap();
    for (i, l) in w.layers.iter().enumerate() {
        let qkv = g.tensor(&format!("blk.{i}.attn_qkv.weight")).unwrap();
        let base = qkv.data.as_ptr() as usize - bytes.as_ptr() as usize;
        assert_eq!(l.q.offset, base);
        assert_eq!((l.q.rows, l.k.rows, l.v.rows), (128, 64, 64));
        assert_eq!(l.k.offset, l.q.offset + l.q.len);
        assert_eq!(l.v.offset, l.k.offset + l.k.len);
        assert_eq!(l.q.len + l.k.len + l.v.len, qkv.data.len());
        let up = g.tensor(&format!("blk.{i}.ffn_up.weight")).unwrap();
        let base = up.data.as_ptr() as usize - bytes.as_ptr() as usize;
        // Gate rows first, then up.
        assert_eq!(l.gate.offset, base);
        assert_eq!(l.up.offset, base + l.gate.len);
        assert_eq!((l.gate.rows, l.up.rows, l.up.cols), (256, 256, 128));
        assert_eq!(l.gate.len + l.up.len, up.data.len());
    }
    assert_eq!(w.output, w.token_embd, "the fixture ties its embeddings");
}

/// A file with LongRoPE's long factors but not its short ones is refused, naming them.
#[test]
fn longrope_without_short_factors_is_refused() {
    let (mut bytes, _) = load();
    let (from, to) = (b"blk.0.attn_output.weight", b"rope_factors_long.weight");
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    bytes[at..at + to.len()].copy_from_slice(to);
    let g = Gguf::parse(&bytes).unwrap();
    let c = Config::from_gguf(&g).unwrap();
    let e = Weights::from_gguf(&g, &c).unwrap_err().to_string();
    assert!(
        e.contains("rope_factors_long.weight") && e.contains("LongRoPE"),
        "{e}"
    );
}

#[test]
fn tokenizer_matches_llama_cpp() {
    let (bytes, g) = load();
    let gguf = Gguf::parse(&bytes).unwrap();
    assert_eq!(gguf.get_str("tokenizer.ggml.model"), Some("llama"));
    let mut mem = vec![0u32; Tokenizer::mem_words_for_gguf(&gguf).unwrap()];
    let tok = Tokenizer::from_gguf(&gguf, &mut mem).unwrap();
    // <|end|> (32007 in the full vocabulary) ends generation, <|user|> does not.
    assert!(tok.is_eog(8007) && !tok.is_eog(8010));
    // llama.cpp's ids were taken without BOS.
    let failures = tokenizer_mismatches(&tok, &g, false);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn native_chat_renderer_refuses_the_template() {
    let (bytes, _) = load();
    let gguf = Gguf::parse(&bytes).unwrap();
    let template = gguf.get_str("tokenizer.chat_template").unwrap();
    assert!(template.contains("<|assistant|>"));
    let e = ChatTemplate::detect(Some(template))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not supported"), "{e}");
}
