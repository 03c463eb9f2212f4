//! Loads a Hugging Face `tokenizer.json` (BPE model, byte-level or SentencePiece-style) into
//! memory this module owns, and hands out the core's [`Tokenizer`] over it.
//!
//! Supported: `model.type == "BPE"` with `vocab` and `merges` (`"a b"` strings or `["a", "b"]`
//! pairs), `added_tokens` (special ones become control tokens, the others user-defined), and
//! the pre-tokenizer inferred from the `pre_tokenizer` tree: ByteLevel with its regex (GPT-2),
//! Digits(individual) + ByteLevel (SmolLM/StarCoder), or a Split whose regex is the Llama 3,
//! Qwen 2 or GPT-2 pattern. Vocabularies without ByteLevel but with Metaspace, a `▁`
//! normalizer or `byte_fallback` are treated as SentencePiece, scoring each token by the rank
//! of the merge that produces it.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use trillim_core::tokenizer::{
    split_merge, ModelKind, PreTokenizer, TokenEntry, TokenType, Tokenizer, TokenizerError,
    TokenizerMeta, VocabConfig, VocabSource,
};

/// Why a `tokenizer.json` could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerJsonError {
    /// Reading the file failed.
    #[error("cannot read tokenizer file: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not JSON.
    #[error("tokenizer file is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON lacks something or has an unsupported model.
    #[error("unsupported tokenizer.json: {0}")]
    Unsupported(String),
    /// The core rejected the vocabulary.
    #[error("{0}")]
    Tokenizer(TokenizerError),
}

fn unsupported(s: impl Into<String>) -> TokenizerJsonError {
    TokenizerJsonError::Unsupported(s.into())
}

/// The GPT-2 regex as written in tokenizer.json files (with and without the final `\s+`).
const GPT2_PATTERNS: &[&str] = &[
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
];
const LLAMA3_PATTERNS: &[&str] = &[
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
];
const QWEN2_PATTERNS: &[&str] = &[
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
];

/// A tokenizer loaded from `tokenizer.json`, owning its strings and tables.
#[derive(Debug)]
pub struct OwnedTokenizer {
    blob: Vec<u8>,
    mem: Vec<u32>,
    meta: TokenizerMeta,
}

/// A `tokenizer.json` vocabulary as GGUF stores one: tokens by id with their types (absent ids
/// are empty and unused), merges, SentencePiece scores and the settings.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    /// Token strings and types, by id.
    pub tokens: Vec<(String, TokenType)>,
    /// Merges, best first.
    pub merges: Vec<(String, String)>,
    /// Scores by id (SentencePiece; zeros for byte-level BPE).
    pub scores: Vec<f32>,
    /// Model kind, pre-tokenizer, special tokens and flags.
    pub config: VocabConfig,
}

impl Vocabulary {
    /// Parses the text of `tokenizer.json` (and optionally `tokenizer_config.json`).
    pub fn from_json(
        tokenizer_json: &str,
        tokenizer_config: Option<&str>,
    ) -> Result<Vocabulary, TokenizerJsonError> {
        let j: Value = serde_json::from_str(tokenizer_json)?;
        let cfg_json: Option<Value> = tokenizer_config.map(serde_json::from_str).transpose()?;
        let model = &j["model"];
        if model["type"].as_str().unwrap_or("BPE") != "BPE" {
            return Err(unsupported(format!(
                "model type {} (only BPE is supported)",
                model["type"]
            )));
        }
        let vocab = model["vocab"]
            .as_object()
            .ok_or_else(|| unsupported("model.vocab is missing"))?;

        // Tokens by id.
        let mut by_id: Vec<Option<(String, TokenType)>> = Vec::new();
        let mut put = |id: usize, s: &str, ty: TokenType| {
            if by_id.len() <= id {
                by_id.resize(id + 1, None);
            }
            by_id[id] = Some((s.to_owned(), ty));
        };
        for (s, id) in vocab {
            let id = id
                .as_u64()
                .ok_or_else(|| unsupported("vocab ids must be integers"))?;
            put(id as usize, s, TokenType::Normal);
        }
        for a in j["added_tokens"].as_array().into_iter().flatten() {
            let (Some(id), Some(content)) = (a["id"].as_u64(), a["content"].as_str()) else {
                continue;
            };
            let ty = if a["special"].as_bool().unwrap_or(false) {
                TokenType::Control
            } else {
                TokenType::UserDefined
            };
            put(id as usize, content, ty);
        }
        if by_id.len() >= 1 << 26 {
            return Err(unsupported("vocabulary too large"));
        }

        // Merges.
        let mut merges: Vec<(String, String)> = Vec::new();
        for m in model["merges"].as_array().into_iter().flatten() {
            match m {
                Value::String(s) => {
                    let (l, r) = split_merge(s.as_bytes());
                    merges.push((
                        String::from_utf8_lossy(l).into_owned(),
                        String::from_utf8_lossy(r).into_owned(),
                    ));
                }
                Value::Array(p) if p.len() == 2 => {
                    let (Some(l), Some(r)) = (p[0].as_str(), p[1].as_str()) else {
                        return Err(unsupported("merges must be strings"));
                    };
                    merges.push((l.to_owned(), r.to_owned()));
                }
                _ => return Err(unsupported("merges must be strings or pairs")),
            }
        }

        // Model kind and pre-tokenizer.
        let mut pre_nodes = Vec::new();
        flatten(&j["pre_tokenizer"], "pretokenizers", &mut pre_nodes);
        let mut dec_nodes = Vec::new();
        flatten(&j["decoder"], "decoders", &mut dec_nodes);
        let mut norm_nodes = Vec::new();
        flatten(&j["normalizer"], "normalizers", &mut norm_nodes);
        let has = |nodes: &[&Value], t: &str| nodes.iter().any(|n| n["type"] == t);
        let byte_level = has(&pre_nodes, "ByteLevel") || has(&dec_nodes, "ByteLevel");
        let kind = if byte_level {
            ModelKind::Bpe
        } else if has(&pre_nodes, "Metaspace")
            || has(&dec_nodes, "Metaspace")
            || model["byte_fallback"].as_bool() == Some(true)
            || norm_nodes
                .iter()
                .any(|n| n["type"] == "Replace" && n["content"] == "▁")
        {
            ModelKind::Spm
        } else {
            return Err(unsupported(
                "neither byte-level nor SentencePiece-style BPE",
            ));
        };
        let mut pre_known = true;
        let pre = if kind == ModelKind::Spm {
            PreTokenizer::Gpt2
        } else if let Some(split) = pre_nodes.iter().find(|n| n["type"] == "Split") {
            let pat = split["pattern"]["Regex"].as_str().unwrap_or("");
            if LLAMA3_PATTERNS.contains(&pat) {
                PreTokenizer::Llama3
            } else if QWEN2_PATTERNS.contains(&pat) {
                PreTokenizer::Qwen2
            } else if GPT2_PATTERNS.contains(&pat) {
                PreTokenizer::Gpt2
            } else {
                pre_known = false;
                PreTokenizer::Gpt2
            }
        } else if pre_nodes
            .iter()
            .any(|n| n["type"] == "Digits" && n["individual_digits"] == true)
        {
            PreTokenizer::DigitsGpt2
        } else if pre_nodes
            .iter()
            .any(|n| n["type"] == "ByteLevel" && n["use_regex"] != false)
        {
            PreTokenizer::Gpt2
        } else {
            pre_known = pre_nodes.is_empty();
            PreTokenizer::Gpt2
        };
        let mut config = VocabConfig::defaults(kind, None);
        config.pre = pre;
        config.pre_known = pre_known;
        config.ignore_merges = model["ignore_merges"]
            .as_bool()
            .unwrap_or(kind == ModelKind::Bpe && pre == PreTokenizer::Llama3);
        if kind == ModelKind::Spm {
            config.add_space_prefix = has(&norm_nodes, "Prepend")
                || pre_nodes.iter().any(|n| {
                    n["type"] == "Metaspace"
                        && n["prepend_scheme"].as_str().unwrap_or("always") != "never"
                        && n["add_prefix_space"] != false
                });
        }

        let lookup: HashMap<&str, u32> = by_id
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().map(|(s, _)| (s.as_str(), i as u32)))
            .collect();
        let token_id = |v: &Value| -> Option<u32> {
            let s = v.as_str().or_else(|| v["content"].as_str())?;
            lookup.get(s).copied()
        };
        // BOS from the post-processor template.
        let mut post = Vec::new();
        flatten(&j["post_processor"], "processors", &mut post);
        config.add_bos = false;
        if let Some(t) = post.iter().find(|n| n["type"] == "TemplateProcessing") {
            let single = t["single"].as_array().cloned().unwrap_or_default();
            if let Some(id) = single
                .first()
                .and_then(|s| s["SpecialToken"]["id"].as_str())
                .and_then(|s| lookup.get(s).copied())
            {
                config.bos = Some(id);
                config.add_bos = true;
            }
            if let Some(id) = single
                .last()
                .filter(|_| single.len() > 1)
                .and_then(|s| s["SpecialToken"]["id"].as_str())
                .and_then(|s| lookup.get(s).copied())
            {
                config.eos = Some(id);
                config.add_eos = true;
            }
        }
        if let Some(c) = &cfg_json {
            if let Some(id) = token_id(&c["bos_token"]) {
                config.bos = Some(id);
            }
            if let Some(id) = token_id(&c["eos_token"]) {
                config.eos = Some(id);
            }
            if let Some(id) = token_id(&c["unk_token"]) {
                config.unk = Some(id);
            }
            if let Some(b) = c["add_bos_token"].as_bool() {
                config.add_bos = b;
            }
            if let Some(b) = c["add_eos_token"].as_bool() {
                config.add_eos = b;
            }
        }
        if config.unk.is_none() {
            config.unk = model["unk_token"]
                .as_str()
                .and_then(|s| lookup.get(s).copied());
        }
        config.add_bos &= config.bos.is_some();
        config.add_eos &= config.eos.is_some();

        // SentencePiece-style scores: better (earlier) merges score higher.
        let mut scores = vec![0.0f32; by_id.len()];
        if kind == ModelKind::Spm {
            scores.iter_mut().for_each(|s| *s = -1e9);
            for (rank, (l, r)) in merges.iter().enumerate().rev() {
                if let Some(&id) = lookup.get(format!("{l}{r}").as_str()) {
                    scores[id as usize] = -(rank as f32);
                }
            }
        }

        let tokens = by_id
            .into_iter()
            .map(|t| match t {
                Some((s, TokenType::Normal)) if kind == ModelKind::Spm && is_byte_token(&s) => {
                    (s, TokenType::Byte)
                }
                Some(t) => t,
                None => (String::new(), TokenType::Unused),
            })
            .collect();
        Ok(Vocabulary {
            tokens,
            merges,
            scores,
            config,
        })
    }
}

impl OwnedTokenizer {
    /// Loads `tokenizer.json` and, if given, `tokenizer_config.json` (for BOS/EOS and
    /// `add_bos_token`/`add_eos_token`).
    pub fn from_files(
        tokenizer: &Path,
        config: Option<&Path>,
    ) -> Result<OwnedTokenizer, TokenizerJsonError> {
        let t = std::fs::read_to_string(tokenizer)?;
        let c = config.map(std::fs::read_to_string).transpose()?;
        Self::from_json(&t, c.as_deref())
    }

    /// Parses the text of `tokenizer.json` (and optionally `tokenizer_config.json`).
    pub fn from_json(
        tokenizer_json: &str,
        tokenizer_config: Option<&str>,
    ) -> Result<OwnedTokenizer, TokenizerJsonError> {
        let v = Vocabulary::from_json(tokenizer_json, tokenizer_config)?;
        let (by_id, merges, scores, config) = (v.tokens, v.merges, v.scores, v.config);
        // Strings in one buffer.
        let mut blob = Vec::new();
        let mut entries = Vec::with_capacity(by_id.len());
        for (i, (s, ty)) in by_id.iter().enumerate() {
            let start = blob.len();
            blob.extend_from_slice(s.as_bytes());
            entries.push((start, blob.len(), *ty, scores[i]));
        }
        let src = JsonVocab {
            blob: &blob,
            entries: &entries,
            merges: &merges,
            config,
        };
        let mut mem = vec![0u32; Tokenizer::mem_words(&src)];
        let meta = Tokenizer::build(&src, &mut mem)
            .map_err(TokenizerJsonError::Tokenizer)?
            .meta();
        Ok(OwnedTokenizer { blob, mem, meta })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> Tokenizer<'_> {
        Tokenizer::from_parts(self.meta, &self.blob, &self.mem)
            .expect("the tables were built from these parts")
    }
}

fn is_byte_token(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 6
        && s.starts_with("<0x")
        && s.ends_with('>')
        && b[3..5].iter().all(u8::is_ascii_hexdigit)
}

/// Collects the nodes of a (possibly `Sequence`-nested) component into `out`.
fn flatten<'v>(v: &'v Value, list_key: &str, out: &mut Vec<&'v Value>) {
    if v.is_null() {
        return;
    }
    if v["type"] == "Sequence" {
        for c in v[list_key].as_array().into_iter().flatten() {
            flatten(c, list_key, out);
        }
    } else {
        out.push(v);
    }
}

struct JsonVocab<'a> {
    blob: &'a [u8],
    entries: &'a [(usize, usize, TokenType, f32)],
    merges: &'a [(String, String)],
    config: VocabConfig,
}

impl<'a> VocabSource<'a> for JsonVocab<'a> {
    fn blob(&self) -> &'a [u8] {
        self.blob
    }
    fn n_tokens(&self) -> usize {
        self.entries.len()
    }
    fn tokens(&self) -> impl Iterator<Item = TokenEntry<'a>> + '_ {
        let blob = self.blob;
        self.entries
            .iter()
            .map(move |&(a, b, ty, score)| TokenEntry {
                text: &blob[a..b],
                ty,
                score,
            })
    }
    fn n_merges(&self) -> usize {
        self.merges.len()
    }
    fn merges(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.merges
            .iter()
            .map(|(l, r)| (l.as_bytes(), r.as_bytes()))
    }
    fn config(&self) -> VocabConfig {
        self.config
    }
}
