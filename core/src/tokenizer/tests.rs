//! Unit tests: pre-tokenizer splits against the reference regexes, and SentencePiece on a
//! small hand-made vocabulary.

#![allow(clippy::type_complexity)]

extern crate std;

use std::string::String;
use std::vec::Vec;

use super::*;

/// (text, Llama 3 pieces, Qwen 2 pieces, GPT-2 pieces) as Python's `regex` module splits them.
#[rustfmt::skip]
const PRETOK_CASES: &[(&str, &[&str], &[&str], &[&str])] = &[
    (
        "Hello, world!",
        &["Hello", ",", " world", "!"],
        &["Hello", ",", " world", "!"],
        &["Hello", ",", " world", "!"],
    ),
    (
        "  leading spaces and   multiple   spaces\n\n\ttabs",
        &[" ", " leading", " spaces", " and", "  ", " multiple", "  ", " spaces", "\n\n", "\ttabs"],
        &[" ", " leading", " spaces", " and", "  ", " multiple", "  ", " spaces", "\n\n", "\ttabs"],
        &[" ", " leading", " spaces", " and", "  ", " multiple", "  ", " spaces", "\n\n", "\t", "tabs"],
    ),
    (
        "I'M HERE, it's 'ok' y'all'd",
        &["I", "'M", " HERE", ",", " it", "'s", " '", "ok", "'", " y", "'all", "'d"],
        &["I", "'M", " HERE", ",", " it", "'s", " '", "ok", "'", " y", "'all", "'d"],
        &["I", "'", "M", " HERE", ",", " it", "'s", " '", "ok", "'", " y", "'", "all", "'d"],
    ),
    (
        "12345678 3.14159 -0.5e10 ١٢٣٤",
        &["123", "456", "78", " ", "3", ".", "141", "59", " -", "0", ".", "5", "e", "10", " ", "١٢٣", "٤"],
        &["1", "2", "3", "4", "5", "6", "7", "8", " ", "3", ".", "1", "4", "1", "5", "9", " -", "0", ".", "5", "e", "1", "0", " ", "١", "٢", "٣", "٤"],
        &["12345678", " 3", ".", "14159", " -", "0", ".", "5", "e", "10", " ١٢٣٤"],
    ),
    (
        "fn main() {\n    println!(\"hi {}\", 42);\n}\n",
        &["fn", " main", "()", " {\n", "   ", " println", "!(\"", "hi", " {}\",", " ", "42", ");\n", "}\n"],
        &["fn", " main", "()", " {\n", "   ", " println", "!(\"", "hi", " {}\",", " ", "4", "2", ");\n", "}\n"],
        &["fn", " main", "()", " {", "\n   ", " println", "!(\"", "hi", " {}\",", " 42", ");", "\n", "}", "\n"],
    ),
    (
        "a\r\n\r\n  b \n c  ",
        &["a", "\r\n\r\n", " ", " b", " \n", " c", "  "],
        &["a", "\r\n\r\n", " ", " b", " \n", " c", "  "],
        &["a", "\r\n\r\n ", " b", " \n", " c", "  "],
    ),
    (
        "naïve café — déjà 🙂 Ünïcödé!!\n\n",
        &["naïve", " café", " —", " déjà", " 🙂", " Ünïcödé", "!!\n\n"],
        &["naïve", " café", " —", " déjà", " 🙂", " Ünïcödé", "!!\n\n"],
        &["naïve", " café", " —", " déjà", " 🙂", " Ünïcödé", "!!", "\n\n"],
    ),
    (
        "日本語のテキストと한국어",
        &["日本語のテキストと한국어"],
        &["日本語のテキストと한국어"],
        &["日本語のテキストと한국어"],
    ),
    (
        "x  y　z  ",
        &["x", " ", " y", "　z", "  "],
        &["x", " ", " y", "　z", "  "],
        &["x", " ", " ", "y", "　", "z", "  "],
    ),
    (
        "$$$abc...\n\n\n",
        &["$$$", "abc", "...\n\n\n"],
        &["$$$", "abc", "...\n\n\n"],
        &["$$$", "abc", "...", "\n\n\n"],
    ),
    (
        " ' 's 'S",
        &[" '", " '", "s", " '", "S"],
        &[" '", " '", "s", " '", "S"],
        &[" '", " '", "s", " '", "S"],
    ),
    (
        "\t\tfoo\n",
        &["\t", "\tfoo", "\n"],
        &["\t", "\tfoo", "\n"],
        &["\t", "\t", "foo", "\n"],
    ),
    (
        "end   ",
        &["end", "   "],
        &["end", "   "],
        &["end", "   "],
    ),
];

fn pieces(p: PreTokenizer, text: &str) -> Vec<String> {
    let mut v = Vec::new();
    p.split(text, &mut |s: &str| -> Result<(), ()> {
        v.push(String::from(s));
        Ok(())
    })
    .unwrap();
    v
}

#[test]
fn pre_tokenizers_match_reference_regexes() {
    for (text, llama3, qwen2, gpt2) in PRETOK_CASES {
        assert_eq!(
            pieces(PreTokenizer::Llama3, text),
            *llama3,
            "llama3 {text:?}"
        );
        assert_eq!(pieces(PreTokenizer::Qwen2, text), *qwen2, "qwen2 {text:?}");
        assert_eq!(pieces(PreTokenizer::Gpt2, text), *gpt2, "gpt2 {text:?}");
    }
}

#[test]
fn digit_and_default_pre_tokenizers() {
    assert_eq!(
        pieces(PreTokenizer::DigitsGpt2, "ab 123x"),
        ["ab", " ", "1", "2", "3", "x"]
    );
    assert_eq!(
        pieces(PreTokenizer::Default, "x+=12345 ok"),
        ["x", "+=", "123", "45", " ok"]
    );
}

#[test]
fn unicode_classes() {
    use unicode::{class, Class};
    assert_eq!(class('a'), Class::Letter);
    assert_eq!(class('日'), Class::Letter);
    assert_eq!(class('٣'), Class::Number);
    assert_eq!(class('½'), Class::Number);
    assert_eq!(class('—'), Class::Punct);
    assert_eq!(class('\u{a0}'), Class::Space);
    assert_eq!(class('\u{200b}'), Class::Other);
    assert_eq!(class('🙂'), Class::Other);
    assert_eq!(class('\u{10ffff}'), Class::Other);
}

#[test]
fn gpt2_byte_map_is_a_bijection() {
    for b in 0..=255u8 {
        assert_eq!(gpt2_char_to_byte(gpt2_byte_to_char(b)), Some(b));
    }
    assert_eq!(gpt2_byte_to_char(b' '), '\u{120}');
    assert_eq!(gpt2_byte_to_char(b'\n'), '\u{10a}');
}

/// An in-memory vocabulary.
struct TestVocab<'a> {
    blob: &'a [u8],
    entries: Vec<(usize, usize, TokenType, f32)>,
    merges: Vec<(usize, usize)>,
    config: VocabConfig,
}

impl<'a> VocabSource<'a> for TestVocab<'a> {
    fn blob(&self) -> &'a [u8] {
        self.blob
    }
    fn n_tokens(&self) -> usize {
        self.entries.len()
    }
    fn tokens(&self) -> impl Iterator<Item = TokenEntry<'a>> + '_ {
        self.entries.iter().map(|&(a, b, ty, score)| TokenEntry {
            text: &self.blob[a..b],
            ty,
            score,
        })
    }
    fn n_merges(&self) -> usize {
        self.merges.len()
    }
    fn merges(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.merges.iter().map(|&(l, r)| {
            let t = |i: usize| &self.blob[self.entries[i].0..self.entries[i].1];
            (t(l), t(r))
        })
    }
    fn config(&self) -> VocabConfig {
        self.config
    }
}

fn spm_vocab(blob: &mut Vec<u8>) -> (Vec<(usize, usize, TokenType, f32)>, Vec<String>) {
    let mut names: Vec<String> = Vec::new();
    let mut entries = Vec::new();
    let mut add = |blob: &mut Vec<u8>, s: &str, ty: TokenType, score: f32| {
        let a = blob.len();
        blob.extend_from_slice(s.as_bytes());
        entries.push((a, blob.len(), ty, score));
        names.push(String::from(s));
    };
    add(blob, "<unk>", TokenType::Unknown, 0.0);
    add(blob, "<s>", TokenType::Control, 0.0);
    add(blob, "</s>", TokenType::Control, 0.0);
    for b in 0..=255u8 {
        add(blob, &std::format!("<0x{b:02X}>"), TokenType::Byte, 0.0);
    }
    for (s, score) in [
        ("▁", -5.0),
        ("a", -5.0),
        ("b", -5.0),
        ("c", -5.0),
        ("ab", -1.0),
        ("bc", -0.5),
        ("▁a", -2.0),
        ("▁ab", -0.2),
        ("▁▁", -3.0),
        ("aa", -1.5),
    ] {
        add(blob, s, TokenType::Normal, score);
    }
    (entries, names)
}

#[test]
fn sentencepiece_hand_derived_ids() {
    let mut blob = Vec::new();
    let (entries, names) = spm_vocab(&mut blob);
    let mut config = VocabConfig::defaults(ModelKind::Spm, None);
    config.bos = Some(1);
    config.eos = Some(2);
    config.unk = Some(0);
    let src = TestVocab {
        blob: &blob,
        entries,
        merges: Vec::new(),
        config,
    };
    let mut mem = std::vec![0u32; Tokenizer::mem_words(&src)];
    let tok = Tokenizer::build(&src, &mut mem).unwrap();
    let id = |s: &str| names.iter().position(|n| n == s).unwrap() as u32;
    let enc = |text: &str, add: bool, special: bool| {
        let mut out = std::vec![0u32; tok.max_tokens(text)];
        let n = tok.encode(text, add, special, &mut out).unwrap();
        out.truncate(n);
        out
    };
    // "▁abc": bc (-0.5) merges first, then ▁a (-2); "▁abc" is no token.
    assert_eq!(enc("abc", false, false), [id("▁a"), id("bc")]);
    // "▁ab": ab (-1) beats ▁a (-2), then ▁ab.
    assert_eq!(enc("ab", false, false), [id("▁ab")]);
    // BOS is added for SentencePiece by default; é has no token: byte fallback.
    assert_eq!(
        enc("aé", true, false),
        [1, id("▁a"), id("<0xC3>"), id("<0xA9>")]
    );
    // A space run stays apart from the word before it.
    assert_eq!(
        enc("b  c", false, false),
        [id("▁"), id("b"), id("▁▁"), id("c")]
    );
    // Equal scores: the leftmost pair merges first ("▁aaa" -> ▁ aa a, not ▁a aa).
    assert_eq!(enc("aaa", false, false), [id("▁"), id("aa"), id("a")]);
    // After a special token the text gets the space prefix again.
    assert_eq!(enc("<s>ab", true, true), [1, 1, id("▁ab")]);
    assert_eq!(
        enc("<s>", false, false),
        [id("▁"), id("<0x3C>"), id("<0x73>"), id("<0x3E>")]
    );
    assert_eq!(enc("", true, true), [1]);

    // Decoding drops the prefix space once and maps bytes back.
    let ids = enc("aé  abc", true, false);
    let mut buf = [0u8; 64];
    let n = tok.decode(&ids, false, &mut buf).unwrap();
    assert_eq!(core::str::from_utf8(&buf[..n]).unwrap(), "aé  abc");
    let mut s = String::new();
    let mut d = Detokenizer::for_sequence_start(&tok, false);
    for &t in &ids {
        d.push(&tok, t, &mut |p: &str| s.push_str(p));
    }
    d.flush(&mut |p: &str| s.push_str(p));
    assert_eq!(s, "aé  abc");

    // The same ids when merging runs in the output tail (segments over 256 characters).
    let long: String = "ab".repeat(200) + " c";
    let ids = enc(&long, false, false);
    let mut out = std::vec![0u32; long.len() + 1];
    let n = tok.encode(&long, false, false, &mut out).unwrap();
    assert_eq!(&out[..n], &ids[..]);
    let mut buf = std::vec![0u8; 1024];
    let n = tok.decode(&ids, false, &mut buf).unwrap();
    assert_eq!(core::str::from_utf8(&buf[..n]).unwrap(), long);
}

#[test]
fn bpe_merges_by_rank() {
    // Byte-level BPE over a vocabulary of the 256 byte characters plus a few merges.
    let mut blob = Vec::new();
    let mut entries = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut add = |blob: &mut Vec<u8>, s: &str| {
        let a = blob.len();
        blob.extend_from_slice(s.as_bytes());
        entries.push((a, blob.len(), TokenType::Normal, 0.0));
        names.push(String::from(s));
        names.len() - 1
    };
    for b in 0..=255u8 {
        add(&mut blob, gpt2_byte_to_char(b).encode_utf8(&mut [0; 4]));
    }
    let g = |s: &str| names_of(s);
    fn names_of(s: &str) -> String {
        s.bytes().map(gpt2_byte_to_char).collect()
    }
    let ab = add(&mut blob, &g("ab"));
    let bc = add(&mut blob, &g("bc"));
    let sp_a = add(&mut blob, &g(" a"));
    let sp_abc = add(&mut blob, &g(" abc"));
    let id = |s: &str| names.iter().position(|n| *n == names_of(s)).unwrap();
    let merges = std::vec![
        (id("b"), id("c")), // rank 0: bc
        (id("a"), id("b")), // rank 1: ab
        (id(" "), id("a")), // rank 2: " a"
        (sp_a, bc),         // rank 3: " abc"
    ];
    let _ = ab;
    let src = TestVocab {
        blob: &blob,
        entries,
        merges,
        config: VocabConfig::defaults(ModelKind::Bpe, Some("gpt2")),
    };
    let mut mem = std::vec![0u32; Tokenizer::mem_words(&src)];
    let tok = Tokenizer::build(&src, &mut mem).unwrap();
    let enc = |text: &str| {
        let mut out = std::vec![0u32; tok.max_tokens(text)];
        let n = tok.encode(text, true, true, &mut out).unwrap();
        out.truncate(n);
        out
    };
    // " abc": bc (0) first, then " a" (2), then " abc" (3); ab never gets a chance.
    assert_eq!(enc(" abc"), [sp_abc as u32]);
    // "abc": bc first leaves a + bc.
    assert_eq!(enc("abc"), [id("a") as u32, bc as u32]);
    assert_eq!(enc("ab"), [ab as u32]);
    assert!(!tok.config().add_bos);
}
