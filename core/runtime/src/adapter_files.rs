//! What an adapter directory may carry besides its matrices: a chat template, which is
//! honoured, and tokenizer files, which must describe the model's own vocabulary.
//!
//! Fine-tunes often teach a new chat format, and PEFT saves the tokenizer beside the adapter.
//! Looked for, in order (the first found wins): `lora_chat_template.jinja`,
//! `chat_template.jinja`, then `chat_template` in `lora_tokenizer_config.json` or
//! `tokenizer_config.json`. A `lora_tokenizer.json` / `tokenizer.json` is read and compared with
//! the model's vocabulary: equal, it changes nothing; different (new tokens, other merges), the
//! adapter is refused, since the engine runs the model's tokenizer. A `bos_token` / `eos_token`
//! in the tokenizer config that names another token than the model's is refused the same way.

use std::path::Path;

use trillim_core::format::gguf::Gguf;

use crate::convert::checkpoint::read_text;
use crate::convert::vocab::config_chat_template;
use crate::lora::AdapterError;
use crate::tokenizer_json::Vocabulary;

/// Largest tokenizer or template file read.
const MAX_FILE: u64 = 64 << 20;

/// The chat template the adapter directory `dir` carries, after checking its tokenizer files
/// against `model` (the base model's GGUF).
pub fn chat_template(dir: &Path, model: &Gguf<'_>) -> Result<Option<String>, AdapterError> {
    let invalid = |why: String| AdapterError::Invalid {
        path: dir.to_path_buf(),
        why,
    };
    let read = |name: &str| -> Result<Option<String>, AdapterError> {
        let p = dir.join(name);
        if !p.is_file() {
            return Ok(None);
        }
        read_text(&p, MAX_FILE)
            .map(Some)
            .map_err(|e| invalid(e.to_string()))
    };
    let tokens = base_tokens(model);

    let config_name = ["lora_tokenizer_config.json", "tokenizer_config.json"]
        .into_iter()
        .find(|n| dir.join(n).is_file());
    let config = match config_name {
        Some(n) => {
            let text = read(n)?.unwrap_or_default();
            let j: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| invalid(format!("{n} is not valid JSON: {e}")))?;
            Some((n, j))
        }
        None => None,
    };
    if let Some((n, j)) = &config {
        for (key, gguf_key) in [
            ("bos_token", "tokenizer.ggml.bos_token_id"),
            ("eos_token", "tokenizer.ggml.eos_token_id"),
        ] {
            let Some(want) = j[key].as_str().or_else(|| j[key]["content"].as_str()) else {
                continue;
            };
            let have = model
                .get_u64(gguf_key)
                .and_then(|id| tokens.get(id as usize))
                .map(String::as_str);
            if have.is_some_and(|h| h != want) {
                return Err(invalid(format!(
                    "{n} sets {key} to '{want}', but the model's is '{}'; changing the \
                     model's special tokens with an adapter is not supported",
                    have.unwrap_or_default()
                )));
            }
        }
    }

    for name in ["lora_tokenizer.json", "tokenizer.json"] {
        let Some(text) = read(name)? else { continue };
        let cfg_text = config.as_ref().map(|(_, j)| j.to_string()).filter(|_| {
            name == "tokenizer.json" || config_name == Some("lora_tokenizer_config.json")
        });
        let v = Vocabulary::from_json(&text, cfg_text.as_deref())
            .map_err(|e| invalid(format!("{name}: {e}")))?;
        if let Some(why) = vocab_differs(&v, &tokens, model) {
            return Err(invalid(format!(
                "{name} describes another vocabulary than the model's ({why}); adapters that \
                 change the tokenizer are not supported"
            )));
        }
    }

    for name in ["lora_chat_template.jinja", "chat_template.jinja"] {
        if let Some(t) = read(name)? {
            return Ok(Some(t));
        }
    }
    Ok(config.and_then(|(_, j)| config_chat_template(&j)))
}

fn base_tokens(model: &Gguf<'_>) -> Vec<String> {
    model
        .get_array("tokenizer.ggml.tokens")
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Why `v` is not the model's vocabulary, if it is not (the model may pad it with unused
/// tokens at the end).
fn vocab_differs(v: &Vocabulary, tokens: &[String], model: &Gguf<'_>) -> Option<String> {
    if v.tokens.len() > tokens.len() {
        return Some(format!(
            "{} tokens, the model has {}",
            v.tokens.len(),
            tokens.len()
        ));
    }
    if let Some((i, (t, _))) = v
        .tokens
        .iter()
        .enumerate()
        .find(|(i, (t, _))| !t.is_empty() && *t != tokens[*i])
    {
        return Some(format!(
            "token {i} is '{t}', the model's is '{}'",
            tokens[i]
        ));
    }
    let merges = model
        .get_array("tokenizer.ggml.merges")
        .map(|a| a.len())
        .unwrap_or(0);
    if !v.merges.is_empty() && v.merges.len() != merges {
        return Some(format!("{} merges, the model has {merges}", v.merges.len()));
    }
    None
}
