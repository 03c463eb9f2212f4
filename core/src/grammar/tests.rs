extern crate std;

use super::json::{INDENT_PER_LEVEL, MAX_WHITESPACE};
use super::*;
use std::string::ToString;
use std::vec;
use std::vec::Vec;

fn accepts(s: &[u8]) -> bool {
    let mut m = JsonMachine::new();
    m.push_all(s) && m.is_accepting()
}

/// What the recognizer must say: valid JSON (checked by serde_json), an object at the top,
/// no surrounding whitespace after it, and no whitespace run longer than the cap (2 bytes,
/// or after a newline 1 + 4 per nesting level).
fn expected(s: &[u8]) -> bool {
    let object = match serde_json::from_slice::<serde_json::Value>(s) {
        Ok(v) => v.is_object(),
        // JSON has no range for numbers; serde_json's `f64` has. Skip the values then.
        Err(e) if e.to_string().contains("number out of range") => {
            serde_json::from_slice::<serde::de::IgnoredAny>(s).is_ok()
                && s.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        }
        Err(_) => return false,
    };
    let (mut run, mut nl, mut depth, mut runs_ok) = (0usize, false, 0usize, true);
    let (mut in_str, mut esc) = (false, false);
    for &b in s {
        if in_str {
            (in_str, esc) = (esc || b != b'"', !esc && b == b'\\');
            continue;
        }
        in_str = b == b'"';
        match b {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
            // One line break per run.
            runs_ok &= !(nl && matches!(b, b'\n' | b'\r'));
            run += 1;
            nl |= b == b'\n';
            runs_ok &= run <= MAX_WHITESPACE as usize
                || (nl && run <= 1 + INDENT_PER_LEVEL as usize * depth);
        } else {
            (run, nl) = (0, false);
        }
    }
    object && !matches!(s.last(), Some(b' ' | b'\n' | b'\t' | b'\r')) && runs_ok
}

#[test]
fn accepts_valid_objects() {
    for s in [
        r#"{}"#,
        r#"{"a":1}"#,
        r#" {"a": [1, -2.5e+3, 0, 0.0, 1E9, true, false, null], "b": {"c": "x\"\\\/\b\f\n\r\t\u00e9"}}"#,
        "{\"k\":\"\u{e9}\u{20ac}\u{1f600}\"}",
        r#"{"a":[],"b":{},"c":[[[]]]}"#,
    ] {
        assert!(accepts(s.as_bytes()), "{s}");
        assert!(expected(s.as_bytes()), "{s}");
    }
}

#[test]
fn refuses_invalid() {
    for s in [
        "[]",
        "1",
        "{\"a\":}",
        "{\"a\":01}",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{a:1}",
        "{\"a\":tru}",
        "{\"a\":\"\x01\"}",
        "{\"a\":\"\\x\"}",
        "{\"a\":1}}",
        "{\"a\":[1}",
        "{\"a\":-}",
        "{\"a\":1.}",
        "{\"a\":1e}",
        "{\"a\":1}   ",
        "{   \"a\":1}",
    ] {
        assert!(!accepts(s.as_bytes()), "{s}");
    }
    // Invalid UTF-8: a lone continuation byte, an overlong form, a surrogate.
    for s in [
        &b"{\"a\":\"\x80\"}"[..],
        b"{\"a\":\"\xc0\xaf\"}",
        b"{\"a\":\"\xed\xa0\x80\"}",
    ] {
        assert!(!accepts(s));
    }
}

#[test]
fn depth_is_capped() {
    let mut m = JsonMachine::new();
    assert!(m.push(b'{') && m.push_all(b"\"a\":"));
    let mut ok = true;
    for _ in 0..200 {
        ok &= m.push(b'[');
    }
    assert!(!ok, "nesting past the cap is refused");
}

/// xorshift, so the property tests are reproducible without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_value(r: &mut Rng, depth: usize) -> serde_json::Value {
    use serde_json::Value;
    match r.below(if depth > 3 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(r.below(2) == 0),
        2 => Value::from(r.next() as i64 >> r.below(60)),
        3 => Value::from((r.next() as i64 >> 20) as f64 / 1e3),
        4 => {
            let cs = ['a', 'é', '"', '\\', '\n', '€', '😀', '\u{1}', ' '];
            Value::String((0..r.below(6)).map(|_| cs[r.below(cs.len())]).collect())
        }
        5 => Value::Array(
            (0..r.below(4))
                .map(|_| random_value(r, depth + 1))
                .collect(),
        ),
        _ => random_object(r, depth + 1),
    }
}

fn random_object(r: &mut Rng, depth: usize) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for i in 0..r.below(4) {
        m.insert(std::format!("k{i}"), random_value(r, depth + 1));
    }
    serde_json::Value::Object(m)
}

/// Random objects, pretty and compact, and one-byte mutations of them: the recognizer agrees
/// with serde_json on each, and every prefix of an accepted text is accepted byte by byte.
#[test]
fn agrees_with_serde_json() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let alphabet = b"{}[]:,\"\\ \n0123456789.-+eEtrufalsn\x01\xc3\xa9";
    let mut valid = 0;
    for _ in 0..3000 {
        let v = random_object(&mut r, 0);
        let mut s = if r.below(2) == 0 {
            serde_json::to_vec(&v).unwrap()
        } else {
            serde_json::to_vec_pretty(&v).unwrap()
        };
        let exact = expected(&s);
        assert_eq!(
            accepts(&s),
            exact,
            "{}",
            std::string::String::from_utf8_lossy(&s)
        );
        valid += usize::from(exact);
        for _ in 0..4 {
            let mut t = s.clone();
            let at = r.below(t.len() + 1);
            match r.below(3) {
                0 if at < t.len() => {
                    t.remove(at);
                }
                1 if at < t.len() => t[at] = alphabet[r.below(alphabet.len())],
                _ => t.insert(at, alphabet[r.below(alphabet.len())]),
            }
            assert_eq!(
                accepts(&t),
                expected(&t),
                "{:?}",
                std::string::String::from_utf8_lossy(&t)
            );
        }
        s.truncate(r.below(s.len()));
        // A proper prefix of an object is never complete but is pushed byte by byte.
        let mut m = JsonMachine::new();
        if exact {
            assert!(m.push_all(&s));
            assert!(!m.is_accepting());
        }
    }
    assert!(valid > 1000, "the generator makes mostly valid texts");
}

fn vocab() -> Vec<&'static [u8]> {
    vec![
        b"{",
        b"}",
        b"{\"",
        b"\"",
        b"\":",
        b"a",
        b"ab",
        b"abc",
        b"1",
        b"12",
        b"true",
        b"tr",
        b" ",
        b"  ",
        b"   ",
        b"\n",
        b",",
        b"[",
        b"]",
        b"}}",
        b"x",
        b"",
        b"ab",
        b"\"a\":1}",
    ]
}

fn build(v: &[&'static [u8]], nodes: &mut Vec<TrieNode>) -> usize {
    let need = TokenTrie::nodes_needed(v.len(), |i| v[i as usize]);
    nodes.resize(need, TrieNode::default());
    need
}

/// The trie walk allows exactly the tokens a scan of the vocabulary would.
#[test]
fn trie_walk_matches_scan() {
    let v = vocab();
    let mut nodes = Vec::new();
    build(&v, &mut nodes);
    let mut order = vec![0u32; v.len()];
    let trie = TokenTrie::build(
        v.len(),
        |i| v[i as usize],
        |_| false,
        &mut order,
        &mut nodes,
    )
    .unwrap();
    let mut r = Rng(7);
    let mut m = JsonMachine::new();
    for step in 0..200 {
        let mut walked = Vec::new();
        trie.walk(&m, |id| walked.push(id));
        walked.sort_unstable();
        let scanned: Vec<u32> = (0..v.len() as u32)
            .filter(|&i| {
                let t = v[i as usize];
                let mut s = m;
                !t.is_empty() && s.push_all(t) && !(i == 22 && t == v[6])
            })
            .collect();
        assert_eq!(walked, scanned, "step {step}");
        if walked.is_empty() || m.is_done() {
            m = JsonMachine::new();
            continue;
        }
        let pick = walked[r.below(walked.len())];
        assert!(m.push_all(v[pick as usize]));
    }
}

#[test]
fn mask_sets_refused_to_minus_infinity_and_forces_the_end() {
    let v = vocab();
    let mut nodes = Vec::new();
    build(&v, &mut nodes);
    let mut order = vec![0u32; v.len()];
    let trie = TokenTrie::build(
        v.len(),
        |i| v[i as usize],
        |_| false,
        &mut order,
        &mut nodes,
    )
    .unwrap();
    let eog = [21u32];
    let mut allowed = vec![false; v.len()];
    let mut logits = vec![0.0f32; v.len()];
    let m = JsonMachine::new();
    trie.mask(&m, &eog, &mut allowed, &mut logits);
    let open: Vec<usize> = (0..v.len()).filter(|&i| logits[i] == 0.0).collect();
    assert_eq!(open, [0, 2, 12, 13, 15]); // `{`, `{"`, one or two spaces, newline
    let mut done = JsonMachine::new();
    assert!(done.push_all(b"{}"));
    logits.fill(0.0);
    assert_eq!(trie.mask(&done, &eog, &mut allowed, &mut logits), 0);
    let open: Vec<usize> = (0..v.len()).filter(|&i| logits[i] == 0.0).collect();
    assert_eq!(open, [21]);
}

#[test]
fn small_buffers_are_errors() {
    let v = vocab();
    let mut nodes = vec![TrieNode::default(); 3];
    let mut order = vec![0u32; v.len()];
    let e = TokenTrie::build(
        v.len(),
        |i| v[i as usize],
        |_| false,
        &mut order,
        &mut nodes,
    );
    assert_eq!(e.unwrap_err(), TrieError::NodesTooSmall);
    let mut order = vec![0u32; 2];
    let e = TokenTrie::build(
        v.len(),
        |i| v[i as usize],
        |_| false,
        &mut order,
        &mut nodes,
    );
    assert_eq!(e.unwrap_err(), TrieError::OrderTooSmall);
}

#[test]
fn pretty_printed_json_is_accepted_and_padding_stays_bounded() {
    let v = serde_json::json!({"a": [1, {"b": [true, null]}], "c": {"d": {"e": "x"}}, "f": []});
    let two = serde_json::to_string_pretty(&v).unwrap();
    let mut four = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    serde::Serialize::serialize(
        &v,
        &mut serde_json::Serializer::with_formatter(&mut four, fmt),
    )
    .unwrap();
    let tabs = two.replace("  ", "\t");
    for s in [
        two.as_bytes(),
        &four[..],
        tabs.as_bytes(),
        b"{\r\n  \"a\": 1\r\n}",
    ] {
        assert!(accepts(s), "{}", std::string::String::from_utf8_lossy(s));
        assert!(expected(s));
    }
    // Without a newline the cap is 2; after one, 1 + 4 per level, counting from the run's
    // first byte; a second line break in a run (a blank line) is refused.
    for (s, ok) in [
        ("{\"a\":   1}", false),
        ("{\n    \"a\": 1}", true),
        ("{\n     \"a\": 1}", false),
        ("{\"a\": {\n        \"b\": 1}}", true),
        ("{\"a\": {\n         \"b\": 1}}", false),
        ("{\"a\": [\n      1]}", true),
        ("{\"a\": [\n\n1]}", false),
        ("{\"a\": [\n \r\n1]}", false),
        ("{\"a\":\r\n[\r\n1]}", true),
        ("   {}", false),
    ] {
        assert_eq!(accepts(s.as_bytes()), ok, "{s:?}");
        assert_eq!(expected(s.as_bytes()), ok, "{s:?}");
    }
}
