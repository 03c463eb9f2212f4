//! Where a tokenizer's vocabulary comes from: the [`VocabSource`] trait and its GGUF
//! implementation.

use crate::format::gguf::{Array, Gguf, Value};

use super::{PreTokenizer, TokenizerError};

/// Token types, as GGUF's `tokenizer.ggml.token_type` numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TokenType {
    /// An ordinary token.
    Normal = 1,
    /// The unknown token.
    Unknown = 2,
    /// A control token (`<|im_start|>`, `<s>`): only produced from text when special tokens are
    /// parsed, and not rendered unless asked for.
    Control = 3,
    /// A user-defined token: always matched as a whole in text, rendered verbatim.
    UserDefined = 4,
    /// An unused slot.
    Unused = 5,
    /// A SentencePiece byte token (`<0xXX>`).
    Byte = 6,
}

impl TokenType {
    /// The type for a GGUF number (unknown numbers are normal tokens).
    pub fn from_u32(v: u32) -> TokenType {
        match v {
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Normal,
        }
    }
}

/// The tokenization algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// Byte-level BPE over GPT-2's byte-to-unicode alphabet, with ranked merges
    /// (`tokenizer.ggml.model == "gpt2"`).
    Bpe,
    /// SentencePiece BPE with scores, `▁` for spaces and `<0xXX>` byte fallback
    /// (`tokenizer.ggml.model == "llama"`).
    Spm,
}

/// Settings of a vocabulary other than its tokens and merges.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VocabConfig {
    /// The algorithm.
    pub model: ModelKind,
    /// The pre-tokenizer (BPE only).
    pub pre: PreTokenizer,
    /// False when the source named a pre-tokenizer this crate does not know and [`Self::pre`]
    /// is the GPT-2 fallback.
    pub pre_known: bool,
    /// Beginning-of-sequence token.
    pub bos: Option<u32>,
    /// End-of-sequence token.
    pub eos: Option<u32>,
    /// End-of-turn token.
    pub eot: Option<u32>,
    /// End-of-message token.
    pub eom: Option<u32>,
    /// Unknown token.
    pub unk: Option<u32>,
    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub add_bos: bool,
    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub add_eos: bool,
    /// SentencePiece: prefix a space to text at the start and after special tokens.
    pub add_space_prefix: bool,
    /// BPE: a pre-tokenized word that is itself a token is emitted without merging (Llama 3).
    pub ignore_merges: bool,
    /// Phi-3: whitespace right after a special token is dropped (its tokenizer marks them
    /// `rstrip`), except after `<unk>`, `<s>` and `<|endoftext|>`.
    pub rstrip_specials: bool,
}

impl VocabConfig {
    /// llama.cpp's defaults for a model kind and pre-tokenizer name (`None`: not given).
    pub fn defaults(model: ModelKind, pre_name: Option<&str>) -> VocabConfig {
        let named = pre_name.map(PreTokenizer::from_gguf_name);
        let pre = match named {
            Some(Some(p)) => p,
            Some(None) => PreTokenizer::Gpt2,
            None => PreTokenizer::Default,
        };
        let llama3 = pre == PreTokenizer::Llama3;
        VocabConfig {
            model,
            pre,
            pre_known: !matches!(named, Some(None)),
            bos: None,
            eos: None,
            eot: None,
            eom: None,
            unk: None,
            add_bos: model == ModelKind::Spm || (model == ModelKind::Bpe && llama3),
            add_eos: false,
            add_space_prefix: model == ModelKind::Spm,
            ignore_merges: model == ModelKind::Bpe && llama3,
            rstrip_specials: false,
        }
    }
}

/// One vocabulary entry.
#[derive(Clone, Copy, Debug)]
pub struct TokenEntry<'a> {
    /// The token's string as stored (GPT-2 byte-encoded for BPE, with `▁` for SentencePiece).
    /// It must lie inside [`VocabSource::blob`].
    pub text: &'a [u8],
    /// Its type.
    pub ty: TokenType,
    /// Its score (SentencePiece; 0 otherwise).
    pub score: f32,
}

/// A vocabulary: anything that can list tokens (whose strings live in one byte buffer that the
/// tokenizer keeps referring to) and BPE merges.
pub trait VocabSource<'a> {
    /// The buffer that every token string lies in.
    fn blob(&self) -> &'a [u8];
    /// Number of tokens.
    fn n_tokens(&self) -> usize;
    /// The tokens in id order (exactly [`Self::n_tokens`] of them).
    fn tokens(&self) -> impl Iterator<Item = TokenEntry<'a>> + '_;
    /// Number of merges.
    fn n_merges(&self) -> usize;
    /// The merges, best (lowest rank) first, as (left, right) token strings.
    fn merges(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_;
    /// Settings.
    fn config(&self) -> VocabConfig;
}

/// The tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
#[derive(Clone, Copy, Debug)]
pub struct GgufVocab<'a> {
    blob: &'a [u8],
    tokens: Array<'a>,
    types: Option<Array<'a>>,
    scores: Option<Array<'a>>,
    merges: Option<Array<'a>>,
    config: VocabConfig,
}

impl<'a> GgufVocab<'a> {
    /// Reads the tokenizer metadata of `g`.
    pub fn new(g: &Gguf<'a>) -> Result<GgufVocab<'a>, TokenizerError> {
        let model = match g.get_str("tokenizer.ggml.model") {
            Some("gpt2") => ModelKind::Bpe,
            Some("llama") => ModelKind::Spm,
            Some(_) => return Err(TokenizerError::UnsupportedModel),
            None => return Err(TokenizerError::Missing("tokenizer.ggml.model")),
        };
        let tokens = g
            .get_array("tokenizer.ggml.tokens")
            .ok_or(TokenizerError::Missing("tokenizer.ggml.tokens"))?;
        let n = tokens.len();
        let sized = |key: &'static str| -> Result<Option<Array<'a>>, TokenizerError> {
            match g.get_array(key) {
                Some(a) if a.len() == n => Ok(Some(a)),
                Some(_) => Err(TokenizerError::Malformed(key)),
                None => Ok(None),
            }
        };
        let types = sized("tokenizer.ggml.token_type")?;
        let scores = sized("tokenizer.ggml.scores")?;
        let merges = g.get_array("tokenizer.ggml.merges");
        if model == ModelKind::Bpe && merges.is_none() {
            return Err(TokenizerError::Missing("tokenizer.ggml.merges"));
        }
        let mut config = VocabConfig::defaults(model, g.get_str("tokenizer.ggml.pre"));
        if model == ModelKind::Spm {
            config.bos = Some(1);
            config.eos = Some(2);
            config.unk = Some(0);
        }
        let id = |key: &str, dflt: Option<u32>| match g.get_u64(key) {
            Some(v) if (v as usize) < n => Some(v as u32),
            Some(_) => None,
            None => dflt,
        };
        config.bos = id("tokenizer.ggml.bos_token_id", config.bos);
        config.eos = id("tokenizer.ggml.eos_token_id", config.eos);
        config.eot = id("tokenizer.ggml.eot_token_id", None);
        config.eom = id("tokenizer.ggml.eom_token_id", None);
        config.unk = id("tokenizer.ggml.unknown_token_id", config.unk);
        let flag = |key: &str, dflt: bool| g.get(key).and_then(|v| v.as_bool()).unwrap_or(dflt);
        config.add_bos = flag("tokenizer.ggml.add_bos_token", config.add_bos);
        config.add_eos = flag("tokenizer.ggml.add_eos_token", config.add_eos);
        config.add_space_prefix = flag("tokenizer.ggml.add_space_prefix", config.add_space_prefix);
        // llama.cpp recognises Phi-3 by its name; a `phi3` file with a SentencePiece vocabulary
        // is one too, whatever it is called.
        let has = |n: &str, w: &str| {
            n.as_bytes()
                .windows(w.len())
                .any(|x| x.eq_ignore_ascii_case(w.as_bytes()))
        };
        let named_phi3 = g
            .get_str("general.name")
            .is_some_and(|n| has(n, "phi-3") || has(n, "phi3"));
        // Phi-4 shares the `phi3` architecture but has a BPE vocabulary without the rule.
        let phi3_spm = model == ModelKind::Spm && g.get_str("general.architecture") == Some("phi3");
        config.rstrip_specials = named_phi3 || phi3_spm;
        Ok(GgufVocab {
            blob: g.bytes(),
            tokens,
            types,
            scores,
            merges,
            config,
        })
    }
}

impl<'a> VocabSource<'a> for GgufVocab<'a> {
    fn blob(&self) -> &'a [u8] {
        self.blob
    }
    fn n_tokens(&self) -> usize {
        self.tokens.len()
    }
    fn tokens(&self) -> impl Iterator<Item = TokenEntry<'a>> + '_ {
        let mut types = self.types.map(|a| a.iter());
        let mut scores = self.scores.map(|a| a.iter());
        self.tokens.iter().map(move |v| {
            let text = match v {
                Value::Str(s) => s,
                _ => &[][..],
            };
            let ty = types
                .as_mut()
                .and_then(|t| t.next())
                .and_then(|v| match v {
                    Value::Int(i) => u32::try_from(i).ok(),
                    _ => None,
                })
                .map_or(TokenType::Normal, TokenType::from_u32);
            let score = scores
                .as_mut()
                .and_then(|s| s.next())
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0) as f32;
            TokenEntry { text, ty, score }
        })
    }
    fn n_merges(&self) -> usize {
        self.merges.map_or(0, |m| m.len())
    }
    fn merges(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.merges
            .into_iter()
            .flat_map(|m| m.iter())
            .map(|v| match v {
                Value::Str(s) => split_merge(s),
                _ => (&[][..], &[][..]),
            })
    }
    fn config(&self) -> VocabConfig {
        self.config
    }
}

/// Splits a merge string `"left right"` at the first space after its first byte.
pub fn split_merge(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().skip(1).position(|&b| b == b' ') {
        Some(i) => (&s[..i + 1], &s[i + 2..]),
        None => (s, &[]),
    }
}
