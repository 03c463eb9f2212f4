//! Text preparation and segmentation as pocket-tts does them: the prompt is trimmed, its
//! first letter capitalized and sentence-final punctuation ensured; long input is split at
//! sentence ends (`.`, `!`, `...`, `?` tokens, not decimal points), oversized sentences at
//! `,`, `;` and `:`, and the pieces regrouped into chunks of at most `max_tokens` tokens,
//! each spoken from the voice state afresh.

use super::tokenizer::Tokenizer;

const TERMINAL: &[char] = &['.', '!', '?', '\u{2026}'];
const WEAK: &[char] = &[',', ';', ':', '-', '\u{2013}', '\u{2014}'];
const CLOSERS: &[char] = &['"', '\'', '\u{201d}', '\u{2019}', ')', ']', '\u{bb}'];

/// A prepared chunk: its text and how many frames to speak after end-of-speech.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub text: String,
    pub frames_after_eos: usize,
}

/// `prepare_text_prompt`: `None` for blank text.
pub fn prepare(text: &str, replace: &[(char, String)]) -> Option<Prepared> {
    let mut t = text.trim().to_string();
    if !replace.is_empty() {
        let mut r = String::with_capacity(t.len());
        for c in t.chars() {
            match replace.iter().find(|(k, _)| *k == c) {
                Some((_, v)) => r.push_str(v),
                None => r.push(c),
            }
        }
        t = r.split_whitespace().collect::<Vec<_>>().join(" ");
        t = drop_mark_after_sentence_end(&t);
    }
    if t.is_empty() {
        return None;
    }
    let mut t = t.replace(['\n', '\r'], " ").replace("  ", " ");
    let words = t.split_whitespace().count();
    let frames_after_eos = if words <= 4 { 3 } else { 1 };
    let mut cs = t.chars();
    if let Some(first) = cs.next() {
        if !first.is_uppercase() {
            t = first.to_uppercase().chain(cs).collect();
        }
    }
    Some(Prepared {
        text: ensure_terminal(&t),
        frames_after_eos,
    })
}

/// `([.!?…])\s*[,;:]` → the sentence mark alone.
fn drop_mark_after_sentence_end(t: &str) -> String {
    let cs: Vec<char> = t.chars().collect();
    let mut out = String::with_capacity(t.len());
    let mut i = 0;
    while i < cs.len() {
        out.push(cs[i]);
        if matches!(cs[i], '.' | '!' | '?' | '\u{2026}') {
            let mut j = i + 1;
            while j < cs.len() && cs[j].is_whitespace() {
                j += 1;
            }
            if j < cs.len() && matches!(cs[j], ',' | ';' | ':') {
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    out
}

fn ensure_terminal(text: &str) -> String {
    let core = text.trim_end_matches(|c: char| CLOSERS.contains(&c) || c == ' ');
    let closers = text[core.len()..].trim();
    match core.chars().last() {
        None => text.to_string(),
        Some(c) if TERMINAL.contains(&c) => text.to_string(),
        Some(c) if WEAK.contains(&c) => {
            let base = core.trim_end_matches(|c: char| WEAK.contains(&c) || c == ' ');
            format!("{base}.{closers}")
        }
        Some(_) => format!("{text}."),
    }
}

/// Segment starts after each run of boundary tokens.
fn boundaries(tokens: &[u32], marks: &[u32], tok: Option<&Tokenizer>) -> Vec<usize> {
    let mut idx = vec![0];
    let mut prev = false;
    for (i, t) in tokens.iter().enumerate() {
        if marks.contains(t) {
            prev = true;
            continue;
        }
        if prev {
            if let Some(tok) = tok {
                if decimal_point(tokens, i, tok) {
                    prev = false;
                    continue;
                }
            }
            idx.push(i);
        }
        prev = false;
    }
    idx.push(tokens.len());
    idx
}

fn decimal_point(tokens: &[u32], at: usize, tok: &Tokenizer) -> bool {
    let prefix: Vec<char> = tok.decode(&tokens[..at]).chars().collect();
    let suffix = tok.decode(&tokens[at..]);
    prefix.len() >= 2
        && prefix[prefix.len() - 1] == '.'
        && prefix[prefix.len() - 2].is_ascii_digit()
        && suffix.chars().next().is_some_and(|c| c.is_ascii_digit())
}

fn segments(tokens: &[u32], idx: &[usize], tok: &Tokenizer) -> Vec<(usize, String)> {
    idx.windows(2)
        .map(|w| (w[1] - w[0], tok.decode(&tokens[w[0]..w[1]])))
        .collect()
}

/// `split_into_best_sentences`: the chunks of `text` (empty for blank text).
pub fn chunks(
    tok: &Tokenizer,
    text: &str,
    max_tokens: usize,
    replace: &[(char, String)],
) -> Vec<String> {
    let Some(p) = prepare(text, replace) else {
        return Vec::new();
    };
    let text = p.text.trim();
    let tokens = tok.encode(text);
    let ends = tok.encode(".!...?");
    let commas = tok.encode(",;:");
    let ends = ends.get(1..).unwrap_or(&[]);
    let commas = commas.get(1..).unwrap_or(&[]);
    let sentences = segments(&tokens, &boundaries(&tokens, ends, Some(tok)), tok);
    let mut refined = Vec::new();
    for (n, s) in sentences {
        if n <= max_tokens {
            refined.push((n, s));
            continue;
        }
        let sub = tok.encode(s.trim());
        let parts = segments(&sub, &boundaries(&sub, commas, None), tok);
        if parts.len() > 1 {
            refined.extend(parts);
        } else {
            refined.push((n, s));
        }
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut count = 0;
    for (n, s) in refined {
        if cur.is_empty() {
            cur = s;
            count = n;
        } else if count + n > max_tokens {
            out.push(cur.trim().to_string());
            cur = s;
            count = n;
        } else {
            cur.push(' ');
            cur.push_str(&s);
            count += n;
        }
    }
    if !cur.is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepares_like_the_reference() {
        let p = prepare("  hello there ", &[]).unwrap();
        assert_eq!(p.text, "Hello there.");
        assert_eq!(p.frames_after_eos, 3);
        assert_eq!(prepare("Wait,", &[]).unwrap().text, "Wait.");
        assert_eq!(
            prepare("He said \"hi\"", &[]).unwrap().text,
            "He said \"hi\"."
        );
        assert_eq!(prepare("Done!\"", &[]).unwrap().text, "Done!\"");
        assert!(prepare(" \n\t ", &[]).is_none());
        let r = vec![('\u{2019}', "'".to_string())];
        assert_eq!(prepare("it\u{2019}s  ok", &r).unwrap().text, "It's ok.");
        assert_eq!(prepare("Hi?, she said", &r).unwrap().text, "Hi? she said.");
        assert_eq!(
            prepare("one two three four five", &[])
                .unwrap()
                .frames_after_eos,
            1
        );
    }
}
