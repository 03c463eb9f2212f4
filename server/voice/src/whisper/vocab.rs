//! Whisper's vocabulary: the byte-level BPE pieces (one per line of CTranslate2's
//! `vocabulary.txt`, ids by line), the special tokens found by name, and text decoding.

use std::collections::HashMap;

/// Why a vocabulary could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VocabError {
    #[error("the vocabulary has no `{0}` token")]
    Missing(&'static str),
    #[error("the vocabulary has {got} tokens but the model's output has {want}")]
    Size { got: usize, want: usize },
}

/// Ids of the tokens that steer decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Specials {
    pub eot: u32,
    pub sot: u32,
    pub sot_prev: Option<u32>,
    pub transcribe: Option<u32>,
    pub translate: Option<u32>,
    pub no_timestamps: u32,
    /// `<|0.00|>`; every id from here to the end of the vocabulary is a timestamp.
    pub timestamp_begin: u32,
}

/// The token table.
#[derive(Debug, Clone)]
pub struct Vocab {
    pieces: Vec<String>,
    ids: HashMap<String, u32>,
    pub specials: Specials,
    /// Language tokens (`<|en|>`, ...) by code.
    pub languages: Vec<(String, u32)>,
    byte_of: HashMap<char, u8>,
}

/// GPT-2's printable stand-ins for the 256 byte values.
fn byte_chars() -> Vec<(u8, char)> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xa1..=0xac)
        .chain(0xae..=0xff)
        .collect();
    let mut out: Vec<(u8, char)> = printable
        .iter()
        .map(|&b| (b as u8, char::from_u32(b).unwrap_or('?')))
        .collect();
    let mut extra = 0u32;
    for b in 0..=255u32 {
        if !printable.contains(&b) {
            printable.push(b);
            out.push((b as u8, char::from_u32(256 + extra).unwrap_or('?')));
            extra += 1;
        }
    }
    out
}

impl Vocab {
    /// Builds the table from `vocabulary.txt` text (one piece per line).
    pub fn from_lines(text: &str) -> Result<Vocab, VocabError> {
        let pieces: Vec<String> = text.lines().map(str::to_string).collect();
        let ids: HashMap<String, u32> = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), i as u32))
            .collect();
        let find = |name: &'static str| ids.get(name).copied();
        let need = |name: &'static str| find(name).ok_or(VocabError::Missing(name));
        let no_timestamps = need("<|notimestamps|>")?;
        let timestamp_begin = need("<|0.00|>")?;
        let specials = Specials {
            eot: need("<|endoftext|>")?,
            sot: need("<|startoftranscript|>")?,
            sot_prev: find("<|startofprev|>"),
            transcribe: find("<|transcribe|>"),
            translate: find("<|translate|>"),
            no_timestamps,
            timestamp_begin,
        };
        let mut languages = Vec::new();
        for id in specials.sot + 1..specials.translate.unwrap_or(specials.sot + 1) {
            let p = &pieces[id as usize];
            if let Some(code) = p.strip_prefix("<|").and_then(|s| s.strip_suffix("|>")) {
                languages.push((code.to_string(), id));
            }
        }
        Ok(Vocab {
            pieces,
            ids,
            specials,
            languages,
            byte_of: byte_chars().into_iter().map(|(b, c)| (c, b)).collect(),
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The id of a piece, if it is in the table.
    pub fn id(&self, piece: &str) -> Option<u32> {
        self.ids.get(piece).copied()
    }

    /// Whether the model transcribes more than English (Whisper's rule: English-only
    /// vocabularies have 51864 tokens, multilingual ones more).
    pub fn is_multilingual(&self) -> bool {
        self.pieces.len() >= 51865 && !self.languages.is_empty()
    }

    /// The language token for a code such as `en` or `de`.
    pub fn language(&self, code: &str) -> Option<u32> {
        self.languages
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(code))
            .map(|(_, id)| *id)
    }

    /// The text of `tokens`, skipping special and timestamp tokens (invalid UTF-8 becomes U+FFFD).
    pub fn decode(&self, tokens: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &t in tokens {
            if t >= self.specials.eot {
                continue;
            }
            if let Some(p) = self.pieces.get(t as usize) {
                bytes.extend(p.chars().filter_map(|c| self.byte_of.get(&c).copied()));
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection() {
        let t = byte_chars();
        assert_eq!(t.len(), 256);
        let mut bytes: Vec<u8> = t.iter().map(|p| p.0).collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
        assert!(t.contains(&(b' ', 'Ġ')));
    }

    #[test]
    fn decodes_pieces_and_skips_specials() {
        let lines =
            "Hello\nĠworld\n<|endoftext|>\n<|startoftranscript|>\n<|notimestamps|>\n<|0.00|>";
        let v = Vocab::from_lines(lines).unwrap();
        assert_eq!(v.decode(&[0, 1, 2, 5]), "Hello world");
        assert!(!v.is_multilingual());
        assert_eq!(
            Vocab::from_lines("a\nb").unwrap_err(),
            VocabError::Missing("<|notimestamps|>")
        );
    }
}
