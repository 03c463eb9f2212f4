//! GGUF's `tokenizer.*` metadata from `tokenizer.json` and `tokenizer_config.json`, written so
//! that the core tokenizer reads back the same vocabulary, settings and chat template.

use std::path::Path;

use trillim_core::tokenizer::{ModelKind, PreTokenizer, TokenType};

use super::checkpoint::{read_json, read_text};
use super::ConvertError;
use crate::gguf_write::Value;
use crate::tokenizer_json::Vocabulary;

/// Largest `tokenizer.json` read.
pub const MAX_TOKENIZER: u64 = 64 << 20;

fn pre_name(p: PreTokenizer) -> &'static str {
    match p {
        PreTokenizer::Default => "default",
        PreTokenizer::Gpt2 => "gpt-2",
        PreTokenizer::DigitsGpt2 => "smollm",
        PreTokenizer::Llama3 => "llama-bpe",
        PreTokenizer::Qwen2 => "qwen2",
    }
}

/// The tokenizer metadata of the checkpoint in `dir`, its vocabulary padded with unused
/// tokens up to `n_vocab` (the embedding's rows).
pub fn metadata(dir: &Path, n_vocab: usize) -> Result<Vec<(String, Value)>, ConvertError> {
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        return Err(ConvertError::Invalid {
            path: dir.to_path_buf(),
            why: "no tokenizer.json".into(),
        });
    }
    let tok = read_text(&tok_path, MAX_TOKENIZER)?;
    let cfg_path = dir.join("tokenizer_config.json");
    let (cfg_text, cfg) = if cfg_path.is_file() {
        let t = read_text(&cfg_path, MAX_TOKENIZER)?;
        let j = read_json(&cfg_path, MAX_TOKENIZER)?;
        (Some(t), j)
    } else {
        (None, serde_json::Value::Null)
    };
    let v =
        Vocabulary::from_json(&tok, cfg_text.as_deref()).map_err(|e| ConvertError::Invalid {
            path: tok_path.clone(),
            why: e.to_string(),
        })?;
    if v.tokens.len() > n_vocab {
        return Err(ConvertError::Invalid {
            path: tok_path,
            why: format!(
                "the tokenizer has {} tokens but the embedding only {n_vocab} rows",
                v.tokens.len()
            ),
        });
    }
    let c = v.config;
    let mut tokens: Vec<String> = Vec::with_capacity(n_vocab);
    let mut types: Vec<i32> = Vec::with_capacity(n_vocab);
    for (i, (s, ty)) in v.tokens.iter().enumerate() {
        if *ty == TokenType::Unused && s.is_empty() {
            tokens.push(format!("[PAD{i}]"));
        } else {
            tokens.push(s.clone());
        }
        types.push(*ty as i32);
    }
    for i in v.tokens.len()..n_vocab {
        tokens.push(format!("[PAD{i}]"));
        types.push(TokenType::Unused as i32);
    }
    let mut m: Vec<(String, Value)> = Vec::new();
    let mut put = |k: &str, v: Value| m.push((k.to_string(), v));
    let spm = c.model == ModelKind::Spm;
    put(
        "tokenizer.ggml.model",
        Value::Str(if spm { "llama" } else { "gpt2" }.into()),
    );
    if !spm {
        put("tokenizer.ggml.pre", Value::Str(pre_name(c.pre).into()));
    }
    put("tokenizer.ggml.tokens", Value::Strs(tokens));
    put("tokenizer.ggml.token_type", Value::I32s(types));
    if spm {
        let mut scores = v.scores.clone();
        scores.resize(n_vocab, -1e9);
        put("tokenizer.ggml.scores", Value::F32s(scores));
    }
    if !v.merges.is_empty() || !spm {
        put(
            "tokenizer.ggml.merges",
            Value::Strs(v.merges.iter().map(|(l, r)| format!("{l} {r}")).collect()),
        );
    }
    for (key, id) in [
        ("tokenizer.ggml.bos_token_id", c.bos),
        ("tokenizer.ggml.eos_token_id", c.eos),
        ("tokenizer.ggml.unknown_token_id", c.unk),
    ] {
        if let Some(id) = id {
            put(key, Value::U32(id));
        }
    }
    let lookup = |t: &serde_json::Value| -> Option<u32> {
        let s = t.as_str().or_else(|| t["content"].as_str())?;
        v.tokens.iter().position(|(x, _)| x == s).map(|i| i as u32)
    };
    if let Some(id) = lookup(&cfg["pad_token"]) {
        put("tokenizer.ggml.padding_token_id", Value::U32(id));
    }
    put("tokenizer.ggml.add_bos_token", Value::Bool(c.add_bos));
    put("tokenizer.ggml.add_eos_token", Value::Bool(c.add_eos));
    if spm {
        put(
            "tokenizer.ggml.add_space_prefix",
            Value::Bool(c.add_space_prefix),
        );
    }
    let template = config_chat_template(&cfg);
    let template = template.or_else(|| {
        let p = dir.join("chat_template.jinja");
        p.is_file()
            .then(|| read_text(&p, MAX_TOKENIZER).ok())
            .flatten()
    });
    if let Some(t) = template {
        put("tokenizer.chat_template", Value::Str(t));
    }
    Ok(m)
}

/// The `chat_template` of a `tokenizer_config.json`: a string, or the one named `default` in a
/// list of named templates.
pub fn config_chat_template(cfg: &serde_json::Value) -> Option<String> {
    match &cfg["chat_template"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(a) => a
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => None,
    }
}
