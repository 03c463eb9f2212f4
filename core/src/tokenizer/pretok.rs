//! Pre-tokenizers: split text into the pieces ("words") that byte-level BPE merges within.
//!
//! The regexes are implemented by hand as scanners that, given a start position, return the end
//! of the next piece. A pre-tokenizer is a sequence of stages; each stage splits every piece of
//! the previous stage further (the way llama.cpp applies its list of regexes): the text that a
//! stage's regex matches and the text between matches both become pieces.

use super::unicode::{class, Class};

/// Which pre-tokenizer a vocabulary uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    Gpt2,
    /// llama.cpp's "default" BPE pre-tokenizer: `[\p{P}\$\+<=>\^~\|]+`, then GPT-2, then
    /// `\p{N}+`, then `[0-9][0-9][0-9]`.
    Default,
    /// Every `\p{N}` on its own, then GPT-2 (SmolLM, StarCoder, Refact, Command-R, CodeShell,
    /// EXAONE, Minerva).
    DigitsGpt2,
    /// Llama 3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    Llama3,
    /// Qwen 2: as Llama 3 but with single digits (`\p{N}`).
    Qwen2,
}

impl PreTokenizer {
    /// The pre-tokenizer that llama.cpp selects for a `tokenizer.ggml.pre` value, or `None`
    /// when the name is unknown.
    pub fn from_gguf_name(name: &str) -> Option<PreTokenizer> {
        Some(match name {
            "default" => PreTokenizer::Default,
            "gpt2" | "gpt-2" | "mpt" | "olmo" | "jais" | "trillion" => PreTokenizer::Gpt2,
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" | "minerva" => PreTokenizer::DigitsGpt2,
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "dbrx" | "smaug-bpe" => PreTokenizer::Llama3,
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" | "hunyuan" => {
                PreTokenizer::Qwen2
            }
            _ => return None,
        })
    }

    fn stages(self) -> &'static [Stage] {
        match self {
            PreTokenizer::Gpt2 => &[Stage::Gpt2],
            PreTokenizer::Default => &[
                Stage::PunctRuns,
                Stage::Gpt2,
                Stage::NumberRuns,
                Stage::AsciiTriples,
            ],
            PreTokenizer::DigitsGpt2 => &[Stage::EachNumber, Stage::Gpt2],
            PreTokenizer::Llama3 => &[Stage::Llama3 { max_digits: 3 }],
            PreTokenizer::Qwen2 => &[Stage::Llama3 { max_digits: 1 }],
        }
    }

    /// Calls `f` with every piece of `text`, in order. The pieces concatenate to `text`.
    pub fn split<E, F>(self, text: &str, f: &mut F) -> Result<(), E>
    where
        F: FnMut(&str) -> Result<(), E>,
    {
        split_stages(self.stages(), text, f)
    }
}

#[derive(Clone, Copy, Debug)]
enum Stage {
    Gpt2,
    Llama3 { max_digits: usize },
    EachNumber,
    NumberRuns,
    PunctRuns,
    AsciiTriples,
}

fn split_stages<E, F>(stages: &[Stage], text: &str, f: &mut F) -> Result<(), E>
where
    F: FnMut(&str) -> Result<(), E>,
{
    let Some((stage, rest)) = stages.split_first() else {
        return if text.is_empty() { Ok(()) } else { f(text) };
    };
    let mut pos = 0;
    while pos < text.len() {
        let end = stage.next_end(text, pos).clamp(pos + 1, text.len());
        // `end` is a char boundary by construction; `get` keeps this panic-free regardless.
        if let Some(piece) = text.get(pos..end) {
            split_stages(rest, piece, f)?;
        }
        pos = end;
    }
    Ok(())
}

/// The char at byte `pos`, if `pos` is inside `s`.
#[inline]
fn char_at(s: &str, pos: usize) -> Option<char> {
    s.get(pos..).and_then(|t| t.chars().next())
}

#[inline]
fn class_at(s: &str, pos: usize) -> Option<Class> {
    char_at(s, pos).map(class)
}

/// End of the run of chars from `pos` whose class satisfies `pred`.
#[inline]
fn run_end(s: &str, mut pos: usize, pred: impl Fn(Class) -> bool) -> usize {
    while let Some(c) = char_at(s, pos) {
        if !pred(class(c)) {
            break;
        }
        pos += c.len_utf8();
    }
    pos
}

fn not_space_letter_number(k: Class) -> bool {
    !matches!(k, Class::Space | Class::Letter | Class::Number)
}

fn is_default_punct(c: char) -> bool {
    class(c) == Class::Punct || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|')
}

impl Stage {
    /// End of the piece that starts at `pos` (< `s.len()`, a char boundary).
    fn next_end(self, s: &str, pos: usize) -> usize {
        match self {
            Stage::Gpt2 => gpt2_end(s, pos),
            Stage::Llama3 { max_digits } => llama3_end(s, pos, max_digits),
            Stage::EachNumber => match char_at(s, pos) {
                Some(c) if class(c) == Class::Number => pos + c.len_utf8(),
                _ => run_end(s, pos, |k| k != Class::Number),
            },
            Stage::NumberRuns => match class_at(s, pos) {
                Some(Class::Number) => run_end(s, pos, |k| k == Class::Number),
                _ => run_end(s, pos, |k| k != Class::Number),
            },
            Stage::PunctRuns => {
                let inside = char_at(s, pos).is_some_and(is_default_punct);
                let mut p = pos;
                while let Some(c) = char_at(s, p) {
                    if is_default_punct(c) != inside {
                        break;
                    }
                    p += c.len_utf8();
                }
                p
            }
            Stage::AsciiTriples => {
                let b = s.as_bytes();
                let triple = |i: usize| {
                    b.get(i..i + 3)
                        .is_some_and(|t| t.iter().all(|d| d.is_ascii_digit()))
                };
                if triple(pos) {
                    return pos + 3;
                }
                // Gap up to the next match (a match starts at an ASCII byte: a char boundary).
                let mut p = pos + 1;
                while p < b.len() && !triple(p) {
                    p += 1;
                }
                while !s.is_char_boundary(p) {
                    p += 1;
                }
                p
            }
        }
    }
}

/// Scanner for the whitespace alternatives shared by both regex families: returns
/// (end of the run, start of its last char, end of its last `\r`/`\n`, number of chars).
fn whitespace_run(s: &str, pos: usize) -> (usize, usize, Option<usize>, usize) {
    let (mut p, mut last, mut rn, mut n) = (pos, pos, None, 0);
    while let Some(c) = char_at(s, p) {
        if class(c) != Class::Space {
            break;
        }
        last = p;
        p += c.len_utf8();
        if c == '\r' || c == '\n' {
            rn = Some(p);
        }
        n += 1;
    }
    (p, last, rn, n)
}

fn contraction_len(s: &str, pos: usize, fold_case: bool) -> Option<usize> {
    let b = s.as_bytes();
    if b.get(pos) != Some(&b'\'') {
        return None;
    }
    let low = |i: usize| {
        b.get(i)
            .map(|&c| if fold_case { c.to_ascii_lowercase() } else { c })
    };
    match low(pos + 1) {
        Some(b's' | b't' | b'm' | b'd') => return Some(2),
        None => return None,
        _ => {}
    }
    match (low(pos + 1), low(pos + 2)) {
        (Some(b'r'), Some(b'e')) | (Some(b'v'), Some(b'e')) | (Some(b'l'), Some(b'l')) => Some(3),
        _ => None,
    }
}

fn gpt2_end(s: &str, pos: usize) -> usize {
    let Some(c) = char_at(s, pos) else {
        return s.len();
    };
    if let Some(n) = contraction_len(s, pos, false) {
        return pos + n;
    }
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
    let (start, k2) = if c == ' ' {
        (pos + 1, class_at(s, pos + 1))
    } else {
        (pos, Some(class(c)))
    };
    match k2 {
        Some(Class::Letter) => return run_end(s, start, |k| k == Class::Letter),
        Some(Class::Number) => return run_end(s, start, |k| k == Class::Number),
        Some(k) if not_space_letter_number(k) => return run_end(s, start, not_space_letter_number),
        _ => {}
    }
    // `\s+(?!\S)`, `\s+`
    let (end, last, _, n) = whitespace_run(s, pos);
    if n > 1 && end < s.len() {
        return last;
    }
    if n > 0 {
        return end;
    }
    pos + c.len_utf8()
}

fn llama3_end(s: &str, pos: usize, max_digits: usize) -> usize {
    let Some(c) = char_at(s, pos) else {
        return s.len();
    };
    if let Some(n) = contraction_len(s, pos, true) {
        return pos + n;
    }
    let k = class(c);
    let clen = c.len_utf8();
    // `[^\r\n\p{L}\p{N}]?\p{L}+`
    if !(c == '\r' || c == '\n' || k == Class::Number)
        && (k == Class::Letter || class_at(s, pos + clen) == Some(Class::Letter))
    {
        return run_end(s, pos + clen, |k| k == Class::Letter);
    }
    // `\p{N}{1,max_digits}`
    if k == Class::Number {
        let mut p = pos;
        let mut n = 0;
        while n < max_digits {
            match char_at(s, p) {
                Some(d) if class(d) == Class::Number => p += d.len_utf8(),
                _ => break,
            }
            n += 1;
        }
        return p;
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let (start, k2) = if c == ' ' {
        (pos + 1, class_at(s, pos + 1))
    } else {
        (pos, Some(k))
    };
    if k2.is_none_or(not_space_letter_number) {
        let mut p = run_end(s, start, not_space_letter_number);
        while matches!(s.as_bytes().get(p), Some(b'\r' | b'\n')) {
            p += 1;
        }
        return p;
    }
    // `\s*[\r\n]+`, `\s+(?!\S)`, `\s+`
    let (end, last, rn, n) = whitespace_run(s, pos);
    if let Some(rn) = rn {
        return rn;
    }
    if n > 1 && end < s.len() {
        return last;
    }
    if n > 0 {
        return end;
    }
    pos + clen
}
