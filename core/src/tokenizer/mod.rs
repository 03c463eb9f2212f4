//! Tokenizers: byte-level BPE (GPT-2 style, `tokenizer.ggml.model == "gpt2"`) and SentencePiece
//! BPE (`"llama"`), with special tokens, without an allocator.
//!
//! Every table lives in caller-provided memory: [`Tokenizer::mem_words`] says how many `u32`
//! words a vocabulary needs, [`Tokenizer::build`] fills them (token table, open-addressing hash
//! tables from token bytes to id and from token pairs to merge rank, the special-token list),
//! and the resulting [`Tokenizer`] borrows them together with the vocabulary's string buffer
//! (for GGUF, the file itself). [`Tokenizer::meta`] and [`Tokenizer::from_parts`] let a caller
//! that owns the memory rebuild the view cheaply.
//!
//! Behaviour follows llama.cpp's tokenizer (pre-tokenizer regexes, merge order, special-token
//! partitioning, BOS/EOS defaults), so token ids match it exactly.

mod detok;
mod pretok;
mod source;
pub mod unicode;

#[cfg(test)]
mod tests;

use core::fmt;

pub use detok::{Detokenizer, Utf8Stream};
pub use pretok::PreTokenizer;
pub use source::{
    split_merge, GgufVocab, ModelKind, TokenEntry, TokenType, VocabConfig, VocabSource,
};

use crate::format::gguf::Gguf;

/// Marks an empty hash slot or a missing id.
const NONE: u32 = u32::MAX;
/// Words of scratch on the stack for one word's merges; longer words use the output's free
/// tail.
const STACK_SYMS: usize = 256;
/// Most end-of-generation ids tracked.
const MAX_EOG: usize = 8;
/// Token texts that end generation when present in a vocabulary (as llama.cpp).
const EOG_TEXTS: &[&[u8]] = &[
    b"<|eot_id|>",
    b"<|im_end|>",
    b"<|end|>",
    b"<|end_of_text|>",
    b"<end_of_turn>",
    b"<|endoftext|>",
    b"<|eom_id|>",
    b"<EOT>",
];
/// SentencePiece's space marker `▁` (U+2581).
const SPM_SPACE: [u8; 3] = [0xE2, 0x96, 0x81];

/// What went wrong building a tokenizer or encoding/decoding with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerError {
    /// A required metadata key is absent.
    Missing(&'static str),
    /// A metadata value has the wrong type or length.
    Malformed(&'static str),
    /// `tokenizer.ggml.model` names an unsupported algorithm.
    UnsupportedModel,
    /// The vocabulary is too large for this implementation (more than 2^24 bytes per token or
    /// token strings beyond 4 GiB into their buffer) or a token string lies outside the buffer.
    BadVocab,
    /// The memory given to [`Tokenizer::build`] or [`Tokenizer::from_parts`] is too small.
    MemoryTooSmall {
        /// Words needed.
        needed: usize,
        /// Words given.
        got: usize,
    },
    /// The output buffer of `encode`/`decode` is too small for the result.
    OutputTooSmall,
    /// A token id is out of range.
    BadToken(u32),
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizerError::Missing(k) => write!(f, "tokenizer metadata lacks {k}"),
            TokenizerError::Malformed(k) => write!(f, "tokenizer metadata {k} is malformed"),
            TokenizerError::UnsupportedModel => {
                write!(f, "unsupported tokenizer model (supported: gpt2, llama)")
            }
            TokenizerError::BadVocab => write!(f, "tokenizer vocabulary is malformed or too large"),
            TokenizerError::MemoryTooSmall { needed, got } => {
                write!(
                    f,
                    "tokenizer memory too small: {got} words given, {needed} needed"
                )
            }
            TokenizerError::OutputTooSmall => write!(f, "tokenizer output buffer too small"),
            TokenizerError::BadToken(id) => write!(f, "token id {id} is out of range"),
        }
    }
}

/// Sizes and settings of a built tokenizer: everything besides the borrowed memory and string
/// buffer. Plain data, so an owner of the memory can keep it and call
/// [`Tokenizer::from_parts`].
#[derive(Clone, Copy, Debug)]
pub struct TokenizerMeta {
    config: VocabConfig,
    n_tokens: usize,
    text_cap: usize,
    pair_cap: usize,
    n_special: usize,
    byte_tok: [u32; 256],
    eog: [u32; MAX_EOG],
    n_eog: usize,
    /// SentencePiece: no token has `▁` after a non-`▁` character, so merging never crosses
    /// the start of a space run and text can be merged word by word.
    spm_split: bool,
}

impl TokenizerMeta {
    fn layout(&self) -> Layout {
        Layout::new(
            self.config.model,
            self.n_tokens,
            self.text_cap,
            self.pair_cap,
            self.n_special,
        )
    }
}

/// Word ranges of the memory regions.
#[derive(Clone, Copy, Debug)]
struct Layout {
    tok: (usize, usize),
    score: (usize, usize),
    text: (usize, usize),
    pair: (usize, usize),
    special: (usize, usize),
    total: usize,
}

impl Layout {
    fn new(model: ModelKind, n: usize, text_cap: usize, pair_cap: usize, n_special: usize) -> Self {
        let mut at = 0;
        let mut take = |len: usize| {
            let r = (at, at + len);
            at += len;
            r
        };
        let tok = take(2 * n);
        let score = take(if model == ModelKind::Spm { n } else { 0 });
        let text = take(text_cap);
        let pair = take(4 * pair_cap);
        let special = take(n_special);
        Layout {
            tok,
            score,
            text,
            pair,
            special,
            total: at,
        }
    }
}

fn table_cap(entries: usize) -> usize {
    (entries.saturating_mul(2)).max(16).next_power_of_two()
}

fn is_special_type(ty: TokenType) -> bool {
    matches!(
        ty,
        TokenType::Control | TokenType::UserDefined | TokenType::Unknown
    )
}

/// Streaming hash of a byte sequence (FNV-1a, 64-bit).
#[inline]
fn hash_bytes(it: impl Iterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in it {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h ^ (h >> 29)
}

#[inline]
fn hash_pair(l: u32, r: u32) -> u64 {
    let k = ((l as u64) << 32 | r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    k ^ (k >> 31)
}

/// GPT-2's byte-to-unicode map: the code point that stands for byte `b`.
pub fn gpt2_byte_to_char(b: u8) -> char {
    let cp = match b {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => b as u32,
        0x00..=0x20 => 0x100 + b as u32,
        0x7F..=0xA0 => 0x100 + 33 + (b - 0x7F) as u32,
        0xAD => 0x100 + 67,
    };
    char::from_u32(cp).unwrap_or('?')
}

/// The inverse of [`gpt2_byte_to_char`].
pub fn gpt2_char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    match cp {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(cp as u8),
        0x100..=0x120 => Some((cp - 0x100) as u8),
        0x121..=0x142 => Some((cp - 0x121 + 0x7F) as u8),
        0x143 => Some(0xAD),
        _ => None,
    }
}

/// The UTF-8 bytes of `gpt2_byte_to_char(b)`.
#[inline]
fn gpt2_encoded(b: u8) -> ([u8; 2], usize) {
    let mut buf = [0u8; 4];
    let s = gpt2_byte_to_char(b).encode_utf8(&mut buf);
    let n = s.len();
    ([buf[0], buf[1]], n)
}

/// The GPT-2 encoded bytes of `text`.
fn gpt2_encode_iter(text: &[u8]) -> impl Iterator<Item = u8> + Clone + '_ {
    text.iter().flat_map(|&b| {
        let (a, n) = gpt2_encoded(b);
        a.into_iter().take(n)
    })
}

/// A SentencePiece fragment with its optional virtual leading space; positions index this
/// virtual text.
#[derive(Clone, Copy)]
struct SpmText<'t> {
    prefix: bool,
    text: &'t [u8],
}

impl<'t> SpmText<'t> {
    fn len(&self) -> usize {
        self.text.len() + self.prefix as usize
    }
    #[inline]
    fn byte(&self, i: usize) -> u8 {
        if self.prefix {
            if i == 0 {
                b' '
            } else {
                self.text.get(i - 1).copied().unwrap_or(0)
            }
        } else {
            self.text.get(i).copied().unwrap_or(0)
        }
    }
    /// Bytes `a..b` with spaces escaped to `▁`.
    fn escaped(self, a: usize, b: usize) -> impl Iterator<Item = u8> + Clone + 't {
        (a..b).flat_map(move |i| {
            let c = self.byte(i);
            let (arr, n) = if c == b' ' {
                (SPM_SPACE, 3)
            } else {
                ([c, 0, 0], 1)
            };
            arr.into_iter().take(n)
        })
    }
}

/// Output cursor over the caller's token buffer.
struct Out<'o> {
    buf: &'o mut [u32],
    n: usize,
}

impl Out<'_> {
    #[inline]
    fn push(&mut self, id: u32) -> Result<(), TokenizerError> {
        let slot = self
            .buf
            .get_mut(self.n)
            .ok_or(TokenizerError::OutputTooSmall)?;
        *slot = id;
        self.n += 1;
        Ok(())
    }
}

/// A piece of text after special-token partitioning.
enum Frag<'t> {
    Text(&'t str),
    Special(u32),
}

/// Repeatedly merges the best adjacent pair of `syms` (lowest `key`, leftmost on ties) until no
/// pair has a key below [`NONE`]; returns the number of symbols left. `merge(syms, i)` updates
/// symbol `i` to stand for symbols `i` and `i + 1`; the loop then removes symbol `i + 1`.
/// `cache` holds pair keys when it is at least as long as `syms` (else keys are recomputed).
fn merge_loop(
    syms: &mut [u32],
    cache: &mut [u32],
    key: impl Fn(&[u32], usize) -> u32,
    mut merge: impl FnMut(&mut [u32], usize),
) -> usize {
    let mut n = syms.len();
    let cached = cache.len() >= n;
    if cached {
        for (i, c) in cache.iter_mut().enumerate().take(n.saturating_sub(1)) {
            *c = key(&syms[..n], i);
        }
    }
    while n >= 2 {
        let mut best = NONE;
        let mut at = 0;
        if cached {
            for (i, &k) in cache[..n - 1].iter().enumerate() {
                if k < best {
                    best = k;
                    at = i;
                }
            }
        } else {
            for i in 0..n - 1 {
                let k = key(&syms[..n], i);
                if k < best {
                    best = k;
                    at = i;
                }
            }
        }
        if best == NONE {
            break;
        }
        merge(&mut syms[..n], at);
        syms.copy_within(at + 2..n, at + 1);
        n -= 1;
        if cached {
            if at + 2 <= n {
                cache.copy_within(at + 2..n, at + 1);
            }
            if at > 0 {
                cache[at - 1] = key(&syms[..n], at - 1);
            }
            if at + 1 < n {
                cache[at] = key(&syms[..n], at);
            }
        }
    }
    n
}

/// Maps a score to a key that sorts the best (highest) score first.
#[inline]
fn score_key(s: f32) -> u32 {
    let b = s.to_bits();
    let ord = if b >> 31 == 1 { !b } else { b | 0x8000_0000 };
    (!ord).min(NONE - 1)
}

/// A tokenizer over borrowed tables. Cheap to copy.
#[derive(Clone, Copy)]
pub struct Tokenizer<'a> {
    meta: TokenizerMeta,
    blob: &'a [u8],
    /// Per token: offset of its string in `blob`, and `len | type << 24`.
    tok: &'a [u32],
    score: &'a [u32],
    text: &'a [u32],
    pair: &'a [u32],
    special: &'a [u32],
}

impl fmt::Debug for Tokenizer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.meta.config.model)
            .field("pre", &self.meta.config.pre)
            .field("n_vocab", &self.meta.n_tokens)
            .field("n_special", &self.meta.n_special)
            .finish()
    }
}

impl<'a> Tokenizer<'a> {
    /// Words of memory that [`Tokenizer::build`] needs for `src`.
    pub fn mem_words<'s, S: VocabSource<'s>>(src: &S) -> usize {
        let n = src.n_tokens();
        let n_special = src
            .tokens()
            .filter(|t| is_special_type(t.ty) && !t.text.is_empty())
            .count();
        let pair_cap = match src.config().model {
            ModelKind::Bpe => table_cap(src.n_merges()),
            ModelKind::Spm => 0,
        };
        Layout::new(src.config().model, n, table_cap(n), pair_cap, n_special).total
    }

    /// Words of memory that [`Tokenizer::from_gguf`] needs for `g`.
    pub fn mem_words_for_gguf(g: &Gguf<'_>) -> Result<usize, TokenizerError> {
        Ok(Self::mem_words(&GgufVocab::new(g)?))
    }

    /// Builds the tokenizer stored in a GGUF file.
    pub fn from_gguf(g: &Gguf<'a>, mem: &'a mut [u32]) -> Result<Tokenizer<'a>, TokenizerError> {
        Self::build(&GgufVocab::new(g)?, mem)
    }

    /// Builds a tokenizer for `src` in `mem` (at least [`Tokenizer::mem_words`] words).
    pub fn build<S: VocabSource<'a>>(
        src: &S,
        mem: &'a mut [u32],
    ) -> Result<Tokenizer<'a>, TokenizerError> {
        let config = src.config();
        let n = src.n_tokens();
        if n >= (NONE as usize) / 2 {
            return Err(TokenizerError::BadVocab);
        }
        let blob = src.blob();
        let n_special = src
            .tokens()
            .filter(|t| is_special_type(t.ty) && !t.text.is_empty())
            .count();
        let pair_cap = match config.model {
            ModelKind::Bpe => table_cap(src.n_merges()),
            ModelKind::Spm => 0,
        };
        let mut meta = TokenizerMeta {
            config,
            n_tokens: n,
            text_cap: table_cap(n),
            pair_cap,
            n_special,
            byte_tok: [NONE; 256],
            eog: [NONE; MAX_EOG],
            n_eog: 0,
            spm_split: config.model == ModelKind::Spm,
        };
        let lay = meta.layout();
        if mem.len() < lay.total {
            return Err(TokenizerError::MemoryTooSmall {
                needed: lay.total,
                got: mem.len(),
            });
        }
        let mem = &mut mem[..lay.total];
        let (tok, rest) = mem.split_at_mut(lay.tok.1);
        let (score, rest) = rest.split_at_mut(lay.score.1 - lay.score.0);
        let (text, rest) = rest.split_at_mut(lay.text.1 - lay.text.0);
        let (pair, special) = rest.split_at_mut(lay.pair.1 - lay.pair.0);

        // Token table and scores.
        let base = blob.as_ptr() as usize;
        let mut count = 0;
        let mut n_sp = 0;
        for (i, t) in src.tokens().enumerate().take(n) {
            let off = (t.text.as_ptr() as usize).wrapping_sub(base);
            if t.text.is_empty() {
                tok[2 * i] = 0;
            } else if off > blob.len() || t.text.len() > blob.len() - off || off > NONE as usize {
                return Err(TokenizerError::BadVocab);
            } else {
                tok[2 * i] = off as u32;
            }
            if t.text.len() >= 1 << 24 {
                return Err(TokenizerError::BadVocab);
            }
            tok[2 * i + 1] = t.text.len() as u32 | (t.ty as u32) << 24;
            if let Some(s) = score.get_mut(i) {
                *s = t.score.to_bits();
            }
            if is_special_type(t.ty) && !t.text.is_empty() && n_sp < special.len() {
                special[n_sp] = i as u32;
                n_sp += 1;
            }
            if meta.spm_split {
                // Does `▁` follow a character other than `▁`?
                let mut seen_other = false;
                let mut j = 0;
                while j < t.text.len() {
                    if t.text[j..].starts_with(&SPM_SPACE) {
                        if seen_other {
                            meta.spm_split = false;
                        }
                        j += 3;
                    } else {
                        seen_other = true;
                        j += 1;
                    }
                }
            }
            count += 1;
        }
        if count != n || n_sp != n_special {
            return Err(TokenizerError::BadVocab);
        }

        // Text hash table: later duplicates win, as in llama.cpp.
        text.fill(NONE);
        let mask = text.len() - 1;
        for i in 0..n {
            let t = tok_bytes(blob, tok, i as u32);
            let mut h = hash_bytes(t.iter().copied()) as usize & mask;
            loop {
                let slot = text[h];
                if slot == NONE {
                    text[h] = i as u32;
                    break;
                }
                if tok_bytes(blob, tok, slot) == t {
                    text[h] = i as u32;
                    break;
                }
                h = (h + 1) & mask;
            }
        }

        {
            let view = Tokenizer {
                meta,
                blob,
                tok,
                score,
                text,
                pair: &[],
                special: &[],
            };
            // Byte tokens.
            for b in 0..=255u8 {
                meta.byte_tok[b as usize] = match config.model {
                    ModelKind::Bpe => {
                        let (a, len) = gpt2_encoded(b);
                        view.find(a.into_iter().take(len))
                    }
                    ModelKind::Spm => {
                        let hex = b"0123456789ABCDEF";
                        let name = [
                            b'<',
                            b'0',
                            b'x',
                            hex[(b >> 4) as usize],
                            hex[(b & 15) as usize],
                            b'>',
                        ];
                        view.find(name.into_iter())
                            .or_else(|| view.find(core::iter::once(b)))
                            .or(config.unk)
                    }
                }
                .unwrap_or(NONE);
            }
            // End-of-generation set.
            let mut add_eog = |id: u32| {
                if !meta.eog[..meta.n_eog].contains(&id) && meta.n_eog < MAX_EOG {
                    meta.eog[meta.n_eog] = id;
                    meta.n_eog += 1;
                }
            };
            for id in [config.eos, config.eot, config.eom].into_iter().flatten() {
                add_eog(id);
            }
            for t in EOG_TEXTS {
                if let Some(id) = view.find(t.iter().copied()) {
                    add_eog(id);
                }
            }

            // Merges: (left id, right id) -> (rank, merged id); the first of duplicates wins.
            pair.fill(NONE);
            if !pair.is_empty() {
                let pmask = pair.len() / 4 - 1;
                for (rank, (l, r)) in src.merges().enumerate() {
                    let (Some(li), Some(ri), Some(mi)) = (
                        view.find(l.iter().copied()),
                        view.find(r.iter().copied()),
                        view.find(l.iter().chain(r.iter()).copied()),
                    ) else {
                        continue;
                    };
                    let mut h = hash_pair(li, ri) as usize & pmask;
                    loop {
                        let s = &mut pair[4 * h..4 * h + 4];
                        if s[0] == NONE {
                            s.copy_from_slice(&[li, ri, rank as u32, mi]);
                            break;
                        }
                        if s[0] == li && s[1] == ri {
                            break;
                        }
                        h = (h + 1) & pmask;
                    }
                }
            }
        }

        // Special tokens, longest first (ties by id).
        special.sort_unstable_by_key(|&id| {
            let len = tok[2 * id as usize + 1] & 0xFF_FFFF;
            (core::cmp::Reverse(len), id)
        });

        Ok(Tokenizer {
            meta,
            blob,
            tok,
            score,
            text,
            pair,
            special,
        })
    }

    /// The sizes and settings of this tokenizer, for [`Tokenizer::from_parts`].
    pub fn meta(&self) -> TokenizerMeta {
        self.meta
    }

    /// Re-creates a tokenizer from the `meta` of one built by [`Tokenizer::build`], the same
    /// string buffer and the memory it was built in. Checks sizes; tables that were altered
    /// since give wrong tokens but never a panic.
    pub fn from_parts(
        meta: TokenizerMeta,
        blob: &'a [u8],
        mem: &'a [u32],
    ) -> Result<Tokenizer<'a>, TokenizerError> {
        let lay = meta.layout();
        if mem.len() < lay.total {
            return Err(TokenizerError::MemoryTooSmall {
                needed: lay.total,
                got: mem.len(),
            });
        }
        if !meta.text_cap.is_power_of_two()
            || (meta.pair_cap != 0 && !meta.pair_cap.is_power_of_two())
        {
            return Err(TokenizerError::BadVocab);
        }
        let r = |(a, b): (usize, usize)| &mem[a..b];
        Ok(Tokenizer {
            meta,
            blob,
            tok: r(lay.tok),
            score: r(lay.score),
            text: r(lay.text),
            pair: r(lay.pair),
            special: r(lay.special),
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.meta.n_tokens
    }

    /// The algorithm.
    pub fn model(&self) -> ModelKind {
        self.meta.config.model
    }

    /// The settings (BOS/EOS, pre-tokenizer, ...).
    pub fn config(&self) -> &VocabConfig {
        &self.meta.config
    }

    /// The pre-tokenizer in use.
    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.meta.config.pre
    }

    /// False when the vocabulary named a pre-tokenizer that is not implemented and the GPT-2
    /// regex is used instead (tokens may then differ from the reference).
    pub fn pre_tokenizer_known(&self) -> bool {
        self.meta.config.pre_known
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.meta.config.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.meta.config.eos
    }

    /// Whether `id` ends generation (EOS, end-of-turn, end-of-message and the like).
    pub fn is_eog(&self, id: u32) -> bool {
        self.meta.eog[..self.meta.n_eog].contains(&id)
    }

    /// The end-of-generation ids.
    pub fn eog_ids(&self) -> &[u32] {
        &self.meta.eog[..self.meta.n_eog]
    }

    /// Whether decoding a whole sequence should drop the leading space of its text (the first
    /// token that renders any bytes), for SentencePiece vocabularies that prefix one when
    /// encoding.
    pub fn strips_leading_space(&self) -> bool {
        self.meta.config.model == ModelKind::Spm && self.meta.config.add_space_prefix
    }

    /// The type of token `id` (`None` if out of range).
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        let w = *self.tok.get(2 * id as usize + 1)?;
        Some(TokenType::from_u32(w >> 24))
    }

    /// The token's string as stored in the vocabulary (GPT-2 byte-encoded for BPE, `▁` for
    /// spaces for SentencePiece); empty when out of range.
    pub fn token_text(&self, id: u32) -> &'a [u8] {
        tok_bytes(self.blob, self.tok, id)
    }

    /// The token's SentencePiece score (0 for BPE vocabularies or out-of-range ids).
    pub fn token_score(&self, id: u32) -> f32 {
        self.score
            .get(id as usize)
            .map_or(0.0, |&b| f32::from_bits(b))
    }

    /// The id of the token whose stored string is exactly `text`.
    pub fn token_id(&self, text: &[u8]) -> Option<u32> {
        self.find(text.iter().copied())
    }

    /// An upper bound on the number of tokens [`Tokenizer::encode`] produces for `text`.
    pub fn max_tokens(&self, text: &str) -> usize {
        match self.meta.config.model {
            ModelKind::Bpe => text.len() + 2,
            ModelKind::Spm => 2 * text.len() + 3,
        }
    }

    /// The raw bytes that token `id` stands for. Control and unknown tokens yield their text
    /// when `render_special` is set and nothing otherwise; unused tokens yield nothing.
    pub fn decode_token(&self, id: u32, render_special: bool) -> TokenBytes<'a> {
        let text = self.token_text(id);
        let inner = match self.token_type(id) {
            None | Some(TokenType::Unused) => Inner::Raw(&[]),
            Some(TokenType::Control | TokenType::Unknown) => {
                Inner::Raw(if render_special { text } else { &[] })
            }
            Some(TokenType::UserDefined) => Inner::Raw(text),
            Some(TokenType::Byte) if self.meta.config.model == ModelKind::Spm => {
                match parse_byte_token(text) {
                    Some(b) => Inner::Byte(Some(b)),
                    None => Inner::Raw(text),
                }
            }
            Some(_) => match self.meta.config.model {
                ModelKind::Spm => Inner::Spm(text),
                ModelKind::Bpe => match core::str::from_utf8(text) {
                    Ok(s) => Inner::Gpt2 {
                        chars: s.chars(),
                        pend: [0; 4],
                        at: 0,
                        len: 0,
                    },
                    Err(_) => Inner::Raw(text),
                },
            },
        };
        TokenBytes { inner }
    }

    /// Writes the raw bytes of `ids` to `out` (special tokens rendered when `render_special`)
    /// and returns their length. The bytes need not be UTF-8 at token boundaries; see
    /// [`Detokenizer`] for streaming text.
    pub fn decode(
        &self,
        ids: &[u32],
        render_special: bool,
        out: &mut [u8],
    ) -> Result<usize, TokenizerError> {
        let mut n = 0;
        let mut strip = self.strips_leading_space();
        for &id in ids {
            if id as usize >= self.meta.n_tokens {
                return Err(TokenizerError::BadToken(id));
            }
            for b in self.decode_token(id, render_special) {
                // The first byte of text: drop it if it is the prefixed space.
                if core::mem::take(&mut strip) && b == b' ' {
                    continue;
                }
                *out.get_mut(n).ok_or(TokenizerError::OutputTooSmall)? = b;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Tokenizes `text` into `out` and returns the number of tokens. With `add_special`, BOS
    /// and EOS are added as the vocabulary asks; with `parse_special`, control tokens written
    /// in the text (`<|im_start|>`) become single tokens (user-defined tokens always do).
    ///
    /// Fails with [`TokenizerError::OutputTooSmall`] when `out` cannot hold the result; when
    /// `out` is shorter than [`Tokenizer::max_tokens`], that may also happen for some texts
    /// whose tokens would fit (words longer than 256 bytes use `out`'s free tail as scratch).
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
        out: &mut [u32],
    ) -> Result<usize, TokenizerError> {
        let mut o = Out { buf: out, n: 0 };
        let cfg = &self.meta.config;
        if add_special && cfg.add_bos {
            if let Some(b) = cfg.bos {
                o.push(b)?;
            }
        }
        let mut prev_special = true;
        self.partition(text, 0, parse_special, &mut |f| match f {
            Frag::Special(id) => {
                prev_special = true;
                o.push(id)
            }
            Frag::Text(t) => {
                let r = match cfg.model {
                    ModelKind::Bpe => self.encode_bpe(t, &mut o),
                    ModelKind::Spm => self.encode_spm(
                        SpmText {
                            prefix: cfg.add_space_prefix && prev_special,
                            text: t.as_bytes(),
                        },
                        &mut o,
                    ),
                };
                prev_special = false;
                r
            }
        })?;
        if add_special && cfg.add_eos {
            if let Some(e) = cfg.eos {
                o.push(e)?;
            }
        }
        Ok(o.n)
    }

    // ---- internals ----

    /// Looks up the token whose string is the byte sequence `it`.
    fn find<I: Iterator<Item = u8> + Clone>(&self, it: I) -> Option<u32> {
        let mask = self.text.len().checked_sub(1)?;
        let mut h = hash_bytes(it.clone()) as usize & mask;
        for _ in 0..self.text.len() {
            let id = *self.text.get(h)?;
            if id == NONE {
                return None;
            }
            if self.token_text(id).iter().copied().eq(it.clone()) {
                return Some(id);
            }
            h = (h + 1) & mask;
        }
        None
    }

    /// `(rank, merged id)` of the merge of tokens `l` and `r`.
    #[inline]
    fn find_pair(&self, l: u32, r: u32) -> Option<(u32, u32)> {
        if l == NONE || r == NONE {
            return None;
        }
        let cap = self.pair.len() / 4;
        let mask = cap.checked_sub(1)?;
        let mut h = hash_pair(l, r) as usize & mask;
        for _ in 0..cap {
            let s = self.pair.get(4 * h..4 * h + 4)?;
            if s[0] == NONE {
                return None;
            }
            if s[0] == l && s[1] == r {
                return Some((s[2], s[3]));
            }
            h = (h + 1) & mask;
        }
        None
    }

    /// Whether whitespace after special token `id` is dropped ([`VocabConfig::rstrip_specials`]).
    fn rstrips(&self, id: u32) -> bool {
        self.meta.config.rstrip_specials
            && !matches!(self.token_text(id), b"<unk>" | b"<s>" | b"<|endoftext|>")
    }

    /// Splits `text` at special tokens the way llama.cpp does: the longest special token is
    /// split out everywhere first, then shorter ones in the remaining text.
    fn partition<F>(
        &self,
        text: &str,
        from: usize,
        parse_special: bool,
        f: &mut F,
    ) -> Result<(), TokenizerError>
    where
        F: FnMut(Frag<'_>) -> Result<(), TokenizerError>,
    {
        if text.is_empty() {
            return Ok(());
        }
        let hay = text.as_bytes();
        for (j, &id) in self.special.iter().enumerate().skip(from) {
            let ty = self.token_type(id);
            if !parse_special && matches!(ty, Some(TokenType::Control | TokenType::Unknown)) {
                continue;
            }
            let pat = self.token_text(id);
            if pat.is_empty() || pat.len() > hay.len() {
                continue;
            }
            let Some(first) = find_bytes(hay, pat, 0) else {
                continue;
            };
            let mut start = 0;
            let mut at = first;
            // A valid UTF-8 pattern matches at char boundaries; others cannot split text.
            while let (Some(before), true) =
                (text.get(start..at), text.is_char_boundary(at + pat.len()))
            {
                self.partition(before, j + 1, parse_special, f)?;
                f(Frag::Special(id))?;
                start = at + pat.len();
                if self.rstrips(id) {
                    while hay
                        .get(start)
                        .is_some_and(|&b| b.is_ascii_whitespace() || b == 0x0b)
                    {
                        start += 1;
                    }
                }
                match find_bytes(hay, pat, start) {
                    Some(p) => at = p,
                    None => break,
                }
            }
            return self.partition(text.get(start..).unwrap_or(""), j + 1, parse_special, f);
        }
        f(Frag::Text(text))
    }

    fn encode_bpe(&self, text: &str, o: &mut Out<'_>) -> Result<(), TokenizerError> {
        self.meta
            .config
            .pre
            .split(text, &mut |word: &str| self.bpe_word(word.as_bytes(), o))
    }

    fn bpe_word(&self, word: &[u8], o: &mut Out<'_>) -> Result<(), TokenizerError> {
        if self.meta.config.ignore_merges {
            if let Some(id) = self.find(gpt2_encode_iter(word)) {
                return o.push(id);
            }
        }
        let n = word.len();
        let key = |s: &[u32], i: usize| self.find_pair(s[i], s[i + 1]).map_or(NONE, |p| p.0);
        let merge = |s: &mut [u32], i: usize| {
            if let Some((_, m)) = self.find_pair(s[i], s[i + 1]) {
                s[i] = m;
            }
        };
        if n <= STACK_SYMS {
            let mut syms = [0u32; STACK_SYMS];
            let mut cache = [0u32; STACK_SYMS];
            for (s, &b) in syms.iter_mut().zip(word) {
                *s = self.meta.byte_tok[b as usize];
            }
            let k = merge_loop(&mut syms[..n], &mut cache[..n], key, merge);
            for &id in &syms[..k] {
                if id != NONE {
                    o.push(id)?;
                }
            }
            return Ok(());
        }
        // Long word: work in the output's free tail.
        let free = o.buf.len() - o.n;
        if free < n {
            return Err(TokenizerError::OutputTooSmall);
        }
        let (syms, cache) = o.buf[o.n..].split_at_mut(n);
        for (s, &b) in syms.iter_mut().zip(word) {
            *s = self.meta.byte_tok[b as usize];
        }
        let k = merge_loop(syms, cache, key, merge);
        // Drop bytes that have no token.
        let mut w = 0;
        for r in 0..k {
            if syms[r] != NONE {
                syms[w] = syms[r];
                w += 1;
            }
        }
        o.n += w;
        Ok(())
    }

    fn encode_spm(&self, v: SpmText<'_>, o: &mut Out<'_>) -> Result<(), TokenizerError> {
        let len = v.len();
        let mut a = 0;
        while a < len {
            let mut b = len;
            if self.meta.spm_split {
                // End the segment where a space follows a non-space.
                b = a + 1;
                while b < len && !(v.byte(b) == b' ' && v.byte(b - 1) != b' ') {
                    b += 1;
                }
            }
            self.spm_segment(v, a, b, o)?;
            a = b;
        }
        Ok(())
    }

    /// SentencePiece merging of `v[a..b]`: the adjacent pair whose concatenation is the
    /// highest-scoring token merges first (leftmost on ties).
    fn spm_segment(
        &self,
        v: SpmText<'_>,
        a: usize,
        b: usize,
        o: &mut Out<'_>,
    ) -> Result<(), TokenizerError> {
        let is_start = |i: usize| v.byte(i) & 0xC0 != 0x80;
        let n = (a..b).filter(|&i| is_start(i)).count();
        let key = |s: &[u32], i: usize| {
            let end = s.get(i + 2).map_or(b, |&e| e as usize);
            self.find(v.escaped(s[i] as usize, end))
                .map_or(NONE, |id| score_key(self.token_score(id)))
        };
        let starts = (a..b).filter(|&i| is_start(i)).map(|i| i as u32);
        if n <= STACK_SYMS {
            let mut syms = [0u32; STACK_SYMS];
            let mut cache = [0u32; STACK_SYMS];
            for (s, i) in syms.iter_mut().zip(starts) {
                *s = i;
            }
            let k = merge_loop(&mut syms[..n], &mut cache[..n], key, |_, _| {});
            for i in 0..k {
                let end = syms
                    .get(i + 1)
                    .filter(|_| i + 1 < k)
                    .map_or(b, |&e| e as usize);
                self.spm_emit(v, syms[i] as usize, end, &mut |id| o.push(id))?;
            }
            return Ok(());
        }
        // Long segment: merge in the output's free tail, then move the symbol starts to the
        // end of the buffer and emit from the front.
        let total = o.buf.len();
        if total - o.n < n {
            return Err(TokenizerError::OutputTooSmall);
        }
        let k = {
            let (syms, cache) = o.buf[o.n..].split_at_mut(n);
            for (s, i) in syms.iter_mut().zip(starts) {
                *s = i;
            }
            merge_loop(syms, cache, key, |_, _| {})
        };
        let base = total - k;
        o.buf.copy_within(o.n..o.n + k, base);
        let mut w = o.n;
        for i in 0..k {
            let s = o.buf[base + i] as usize;
            let e = if i + 1 < k {
                o.buf[base + i + 1] as usize
            } else {
                b
            };
            let limit = base + i + 2;
            let buf = &mut *o.buf;
            self.spm_emit(v, s, e, &mut |id| {
                if w >= limit.min(total) {
                    return Err(TokenizerError::OutputTooSmall);
                }
                buf[w] = id;
                w += 1;
                Ok(())
            })?;
        }
        o.n = w;
        Ok(())
    }

    /// Emits the token for `v[s..e]`, or its bytes' tokens.
    fn spm_emit(
        &self,
        v: SpmText<'_>,
        s: usize,
        e: usize,
        push: &mut dyn FnMut(u32) -> Result<(), TokenizerError>,
    ) -> Result<(), TokenizerError> {
        if let Some(id) = self.find(v.escaped(s, e)) {
            return push(id);
        }
        for byte in v.escaped(s, e) {
            let id = self.meta.byte_tok[byte as usize];
            if id != NONE {
                push(id)?;
            }
        }
        Ok(())
    }
}

fn tok_bytes<'a>(blob: &'a [u8], tok: &[u32], id: u32) -> &'a [u8] {
    let i = id as usize;
    match (tok.get(2 * i), tok.get(2 * i + 1)) {
        (Some(&off), Some(&w)) => {
            let off = off as usize;
            blob.get(off..off + (w & 0xFF_FFFF) as usize).unwrap_or(&[])
        }
        _ => &[],
    }
}

fn find_bytes(hay: &[u8], pat: &[u8], from: usize) -> Option<usize> {
    let first = *pat.first()?;
    let last_start = hay.len().checked_sub(pat.len())?;
    let mut i = from;
    while i <= last_start {
        match hay[i..=last_start].iter().position(|&b| b == first) {
            Some(p) => i += p,
            None => return None,
        }
        if &hay[i..i + pat.len()] == pat {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn parse_byte_token(t: &[u8]) -> Option<u8> {
    if t.len() != 6 || !t.starts_with(b"<0x") || t[5] != b'>' {
        return None;
    }
    let d = |c: u8| (c as char).to_digit(16);
    Some((d(t[3])? * 16 + d(t[4])?) as u8)
}

/// The bytes of one token; see [`Tokenizer::decode_token`].
#[derive(Clone, Debug)]
pub struct TokenBytes<'a> {
    inner: Inner<'a>,
}

#[derive(Clone, Debug)]
enum Inner<'a> {
    Raw(&'a [u8]),
    Byte(Option<u8>),
    Spm(&'a [u8]),
    Gpt2 {
        chars: core::str::Chars<'a>,
        pend: [u8; 4],
        at: u8,
        len: u8,
    },
}

impl Iterator for TokenBytes<'_> {
    type Item = u8;
    #[inline]
    fn next(&mut self) -> Option<u8> {
        match &mut self.inner {
            Inner::Raw(s) => {
                let (&b, rest) = s.split_first()?;
                *s = rest;
                Some(b)
            }
            Inner::Byte(b) => b.take(),
            Inner::Spm(s) => {
                if s.starts_with(&SPM_SPACE) {
                    *s = &s[3..];
                    return Some(b' ');
                }
                let (&b, rest) = s.split_first()?;
                *s = rest;
                Some(b)
            }
            Inner::Gpt2 {
                chars,
                pend,
                at,
                len,
            } => {
                if at < len {
                    let b = pend[*at as usize];
                    *at += 1;
                    return Some(b);
                }
                let c = chars.next()?;
                match gpt2_char_to_byte(c) {
                    Some(b) => Some(b),
                    None => {
                        // Not part of the byte alphabet: pass the character through.
                        let n = c.encode_utf8(pend).len();
                        *len = n as u8;
                        *at = 1;
                        Some(pend[0])
                    }
                }
            }
        }
    }
}
