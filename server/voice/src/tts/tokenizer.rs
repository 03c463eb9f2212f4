//! The text tokenizer of pocket-tts: a SentencePiece Unigram vocabulary in the Hugging Face
//! `tokenizer.json` form (what the released configs point at), with the Metaspace
//! pre-tokenizer (spaces become `▁`, one is put in front, each `▁` starts a word). Words are
//! split by Viterbi search for the pieces with the highest total log-probability; a character
//! no piece covers becomes the unknown token (consecutive ones fused), as in the reference.
//!
//! Normalizers are not applied: the released vocabulary's normalizer (SentencePiece's NFKC
//! table) leaves the ASCII text the model reads unchanged.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::TtsError;

const SPACE: char = '\u{2581}';

/// A Unigram vocabulary.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    pieces: Vec<String>,
    ids: HashMap<String, (u32, f64)>,
    unk: u32,
    unk_score: f64,
    max_chars: usize,
}

impl Tokenizer {
    /// Reads `tokenizer.json` (model type Unigram).
    pub fn load(path: &Path) -> Result<Tokenizer, TtsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TtsError::Tokenizer(format!("{}: {e}", path.display())))?;
        Tokenizer::from_json(&text)
    }

    /// Parses the JSON text.
    pub fn from_json(text: &str) -> Result<Tokenizer, TtsError> {
        let bad = |m: &str| TtsError::Tokenizer(m.to_string());
        let v: Value =
            serde_json::from_str(text).map_err(|e| TtsError::Tokenizer(e.to_string()))?;
        let model = v.get("model").ok_or_else(|| bad("no model"))?;
        if model.get("type").and_then(Value::as_str) != Some("Unigram") {
            return Err(bad("only Unigram vocabularies are supported"));
        }
        let vocab = model
            .get("vocab")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no vocab"))?;
        let mut pieces = Vec::with_capacity(vocab.len());
        let mut ids = HashMap::with_capacity(vocab.len());
        let mut min_score = f64::INFINITY;
        let mut max_chars = 1;
        for (i, e) in vocab.iter().enumerate() {
            let piece = e
                .get(0)
                .and_then(Value::as_str)
                .ok_or_else(|| bad("bad vocab entry"))?;
            let score = e
                .get(1)
                .and_then(Value::as_f64)
                .ok_or_else(|| bad("bad vocab score"))?;
            min_score = min_score.min(score);
            max_chars = max_chars.max(piece.chars().count());
            ids.entry(piece.to_string()).or_insert((i as u32, score));
            pieces.push(piece.to_string());
        }
        if pieces.is_empty() {
            return Err(bad("empty vocab"));
        }
        let unk = model.get("unk_id").and_then(Value::as_u64).unwrap_or(0) as u32;
        if unk as usize >= pieces.len() {
            return Err(bad("unk_id is outside the vocab"));
        }
        Ok(Tokenizer {
            pieces,
            ids,
            unk,
            unk_score: min_score - 10.0,
            max_chars,
        })
    }

    /// Number of pieces.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Whether the vocabulary is empty (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut s: String = text
            .chars()
            .map(|c| if c == ' ' { SPACE } else { c })
            .collect();
        if !s.starts_with(SPACE) {
            s.insert(0, SPACE);
        }
        let mut out = Vec::new();
        let mut word = String::new();
        for c in s.chars() {
            if c == SPACE && !word.is_empty() {
                self.word(&word, &mut out);
                word.clear();
            }
            word.push(c);
        }
        if !word.is_empty() {
            self.word(&word, &mut out);
        }
        out
    }

    /// Viterbi segmentation of one word.
    fn word(&self, w: &str, out: &mut Vec<u32>) {
        let chars: Vec<(usize, char)> = w.char_indices().collect();
        let n = chars.len();
        let byte = |i: usize| if i == n { w.len() } else { chars[i].0 };
        // best[i]: score of the best segmentation of the first i chars, and its last piece.
        let mut best: Vec<(f64, usize, u32)> = vec![(f64::NEG_INFINITY, 0, 0); n + 1];
        best[0].0 = 0.0;
        for i in 0..n {
            if best[i].0 == f64::NEG_INFINITY {
                continue;
            }
            let mut single = false;
            for len in 1..=self.max_chars.min(n - i) {
                if let Some(&(id, score)) = self.ids.get(&w[byte(i)..byte(i + len)]) {
                    single |= len == 1;
                    let s = best[i].0 + score;
                    if s > best[i + len].0 {
                        best[i + len] = (s, i, id);
                    }
                }
            }
            if !single {
                let s = best[i].0 + self.unk_score;
                if s > best[i + 1].0 {
                    best[i + 1] = (s, i, self.unk);
                }
            }
        }
        let mut path = Vec::new();
        let mut j = n;
        while j > 0 {
            let (_, i, id) = best[j];
            path.push(id);
            j = i;
        }
        for id in path.into_iter().rev() {
            if id == self.unk && out.last() == Some(&self.unk) {
                continue;
            }
            out.push(id);
        }
    }

    /// Text of `ids` (Metaspace decoding: `▁` is a space, the first one dropped).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut s = String::new();
        for (i, &id) in ids.iter().enumerate() {
            let p = self.pieces.get(id as usize).map_or("", |p| p.as_str());
            let p = if i == 0 {
                p.strip_prefix(SPACE).unwrap_or(p)
            } else {
                p
            };
            s.push_str(p);
        }
        s.replace(SPACE, " ")
    }
}
