//! The server's one door to tokenization: an owning wrapper around the core tokenizer, whose
//! tables live in memory this wrapper owns and whose vocabulary strings are read from the
//! (memory-mapped) model file it keeps alive.

use std::sync::Arc;

use trillim_core::tokenizer::{self as core_tok, TokenizerError, TokenizerMeta};
use trillim_runtime::LoadedModel;

/// Why a model's tokenizer could not be built.
#[derive(Debug, thiserror::Error)]
#[error("the model file has no usable tokenizer: {0}")]
pub struct TokError(TokenizerError);

/// A model's tokenizer (cheap to share behind an `Arc`).
pub struct Tokenizer {
    model: Arc<LoadedModel>,
    meta: TokenizerMeta,
    mem: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("n_vocab", &self.n_vocab())
            .finish()
    }
}

impl Tokenizer {
    /// Builds the tokenizer described by a model file's metadata.
    pub fn new(model: Arc<LoadedModel>) -> Result<Tokenizer, TokError> {
        let err = TokError;
        let g = model.gguf();
        let words = core_tok::Tokenizer::mem_words_for_gguf(&g).map_err(err)?;
        let mut mem = vec![0u32; words];
        let meta = core_tok::Tokenizer::from_gguf(&g, &mut mem)
            .map_err(err)?
            .meta();
        if !core_tok::Tokenizer::from_parts(meta, model.bytes(), &mem)
            .map_err(err)?
            .pre_tokenizer_known()
        {
            tracing::warn!("the model's pre-tokenizer is not implemented; using GPT-2's (token ids may differ)");
        }
        Ok(Tokenizer { model, meta, mem })
    }

    pub(crate) fn view(&self) -> core_tok::Tokenizer<'_> {
        core_tok::Tokenizer::from_parts(self.meta, self.model.bytes(), &self.mem)
            .expect("validated when built")
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.view().n_vocab()
    }

    /// Encodes `text`; control-token texts in it (`<|im_start|>`) become their tokens.
    /// `add_special` adds BOS/EOS as the vocabulary asks.
    pub fn encode(&self, text: &str, add_special: bool) -> Vec<u32> {
        let t = self.view();
        let mut out = vec![0u32; t.max_tokens(text) + 8];
        match t.encode(text, add_special, true, &mut out) {
            Ok(n) => out.truncate(n),
            Err(_) => {
                // Only possible for pathological words; retry with room to spare.
                out = vec![0u32; 4 * text.len() + 64];
                let n = t.encode(text, add_special, true, &mut out).unwrap_or(0);
                out.truncate(n);
            }
        }
        out
    }

    /// The bytes a token stands for (a special token's text for special tokens).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.view().decode_token(id, true).collect()
    }

    /// The token as text for logprobs (lossy for partial UTF-8).
    pub fn token_text(&self, id: u32) -> String {
        String::from_utf8_lossy(&self.token_bytes(id)).into_owned()
    }

    /// Text of the BOS token, for chat templates.
    pub fn bos_text(&self) -> String {
        self.view()
            .bos()
            .map(|b| self.token_text(b))
            .unwrap_or_default()
    }

    /// Text of the EOS token, for chat templates.
    pub fn eos_text(&self) -> String {
        self.view()
            .eos()
            .map(|b| self.token_text(b))
            .unwrap_or_default()
    }

    /// Text of `ids` with special tokens rendered (for echoing a prompt given as tokens).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut d = core_tok::Detokenizer::for_sequence_start(&self.view(), true);
        let mut s = String::new();
        let t = self.view();
        for &id in ids {
            d.push(&t, id, &mut |p: &str| s.push_str(p));
        }
        d.flush(&mut |p: &str| s.push_str(p));
        s
    }
}
