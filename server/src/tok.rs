//! The server's one door to tokenization: everything else calls this module, so the
//! tokenizer implementation behind it can change without touching the engine or the API.
//!
//! Vocabulary and special tokens come from the GGUF metadata (`tokenizer.ggml.*`).

use std::collections::HashMap;

use trillim_core::format::gguf::Gguf;

/// Why a model's tokenizer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TokError {
    /// The metadata lacks what a tokenizer needs.
    #[error("the model file has no usable tokenizer: {0}")]
    Missing(&'static str),
    /// The tokenizer type is not supported.
    #[error("tokenizer model '{0}' is not supported")]
    Unsupported(String),
}

/// Token texts that end a turn when the model marks them as control tokens.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "</s>",
    "<|end|>",
    "<end_of_turn>",
    "<|eom_id|>",
];

/// A model's tokenizer.
#[derive(Debug)]
pub struct Tokenizer {
    /// Raw bytes of each token (byte-level decoding applied); special tokens hold their text.
    bytes: Vec<Vec<u8>>,
    /// Control tokens (never shown as text).
    control: Vec<bool>,
    specials: Vec<(String, u32)>,
    lookup: HashMap<Vec<u8>, u32>,
    max_len: usize,
    eog: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
}

fn byte_decoder() -> HashMap<char, u8> {
    // GPT-2's reversible byte ↔ unicode mapping.
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.iter()
        .zip(cs)
        .map(|(&b, c)| (char::from_u32(c).unwrap_or('?'), b as u8))
        .collect()
}

impl Tokenizer {
    /// Builds the tokenizer described by a model file's metadata.
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Tokenizer, TokError> {
        let model = g
            .get_str("tokenizer.ggml.model")
            .ok_or(TokError::Missing("tokenizer.ggml.model"))?;
        let tokens = g
            .get_array("tokenizer.ggml.tokens")
            .ok_or(TokError::Missing("tokenizer.ggml.tokens"))?;
        let types = g.get_array("tokenizer.ggml.token_type");
        let byte_level = match model {
            "gpt2" => true,
            "llama" => false,
            other => return Err(TokError::Unsupported(other.to_string())),
        };
        let dec = byte_decoder();
        let n = tokens.len();
        let mut bytes = Vec::with_capacity(n);
        let mut control = vec![false; n];
        let mut specials = Vec::new();
        let type_iter: Vec<i64> = match types {
            Some(t) => t.iter().map(|v| v.as_f64().unwrap_or(1.0) as i64).collect(),
            None => vec![1; n],
        };
        for (i, v) in tokens.iter().enumerate() {
            let text = v.as_str().unwrap_or("");
            let ty = type_iter.get(i).copied().unwrap_or(1);
            // 3 = control, 4 = user-defined: matched verbatim in text.
            if ty == 3 || ty == 4 {
                control[i] = ty == 3;
                if !text.is_empty() {
                    specials.push((text.to_string(), i as u32));
                }
                bytes.push(text.as_bytes().to_vec());
                continue;
            }
            let b = if byte_level {
                text.chars()
                    .map(|c| dec.get(&c).copied().unwrap_or(b'?'))
                    .collect()
            } else if ty == 6 && text.len() == 6 && text.starts_with("<0x") {
                vec![u8::from_str_radix(&text[3..5], 16).unwrap_or(b'?')]
            } else {
                text.replace('\u{2581}', " ").into_bytes()
            };
            bytes.push(b);
        }
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
        let mut lookup = HashMap::with_capacity(n);
        for (i, b) in bytes.iter().enumerate() {
            if !b.is_empty() && !specials.iter().any(|s| s.1 == i as u32) {
                lookup.entry(b.clone()).or_insert(i as u32);
            }
        }
        let max_len = lookup.keys().map(Vec::len).max().unwrap_or(1);
        let id = |k: &str| g.get_u64(k).map(|v| v as u32).filter(|&v| (v as usize) < n);
        let bos = id("tokenizer.ggml.bos_token_id");
        let eos = id("tokenizer.ggml.eos_token_id");
        let mut eog: Vec<u32> = Vec::new();
        for k in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Some(t) = id(k) {
                if !eog.contains(&t) {
                    eog.push(t);
                }
            }
        }
        for (text, t) in &specials {
            if control[*t as usize] && EOG_TEXTS.contains(&text.as_str()) && !eog.contains(t) {
                eog.push(*t);
            }
        }
        let add_bos = g
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(!byte_level);
        Ok(Tokenizer {
            bytes,
            control,
            specials,
            lookup,
            max_len,
            eog,
            bos,
            eos,
            add_bos,
        })
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.bytes.len()
    }

    /// Encodes `text`; special-token texts in it become their tokens. `add_special` adds BOS
    /// when the model asks for it.
    pub fn encode(&self, text: &str, add_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            if let Some(b) = self.bos {
                out.push(b);
            }
        }
        let mut rest = text;
        while !rest.is_empty() {
            let next = self
                .specials
                .iter()
                .filter_map(|(s, id)| rest.find(s.as_str()).map(|p| (p, s.len(), *id)))
                .min_by_key(|&(p, len, _)| (p, usize::MAX - len));
            let (plain, special) = match next {
                Some((p, len, id)) => (&rest[..p], Some((len, id))),
                None => (rest, None),
            };
            self.encode_plain(plain.as_bytes(), &mut out);
            match special {
                Some((len, id)) => {
                    out.push(id);
                    rest = &rest[plain.len() + len..];
                }
                None => break,
            }
        }
        out
    }

    fn encode_plain(&self, mut b: &[u8], out: &mut Vec<u32>) {
        while !b.is_empty() {
            let mut found = None;
            for len in (1..=self.max_len.min(b.len())).rev() {
                if let Some(&id) = self.lookup.get(&b[..len]) {
                    found = Some((len, id));
                    break;
                }
            }
            match found {
                Some((len, id)) => {
                    out.push(id);
                    b = &b[len..];
                }
                None => b = &b[1..], // byte not representable: dropped
            }
        }
    }

    /// The raw bytes a token stands for (a special token's text for special tokens).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The token as text for display in logprobs (lossy for partial UTF-8).
    pub fn token_text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.token_bytes(id)).into_owned()
    }

    /// Control tokens are never part of generated text.
    pub fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }

    /// Whether `id` ends generation.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// Text of the BOS token, for chat templates.
    pub fn bos_text(&self) -> String {
        self.bos.map(|b| self.token_text(b)).unwrap_or_default()
    }

    /// Text of the EOS token, for chat templates.
    pub fn eos_text(&self) -> String {
        self.eos.map(|b| self.token_text(b)).unwrap_or_default()
    }
}

/// Turns a stream of tokens into text pieces that never split a UTF-8 character.
#[derive(Debug, Default)]
pub struct Detokenizer {
    pending: Vec<u8>,
}

impl Detokenizer {
    /// Adds a token and returns the text that is now complete (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        if tok.is_control(id) {
            return String::new();
        }
        self.pending.extend_from_slice(tok.token_bytes(id));
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let ok = e.valid_up_to();
                    // Valid prefix is always UTF-8.
                    out.push_str(std::str::from_utf8(&self.pending[..ok]).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..ok + bad);
                        }
                        None => {
                            // An incomplete character at the end: hold it back.
                            self.pending.drain(..ok);
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// Text still held back at the end of generation.
    pub fn flush(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}
