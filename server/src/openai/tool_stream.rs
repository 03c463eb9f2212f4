//! Incremental tool-call parsing for streamed chat replies: text before a call goes out as
//! content at once, and a call goes out as its header (name) followed by its `arguments` as
//! they are generated.
//!
//! What is held back, per format:
//! - Hermes: while in text, a suffix that could begin `<tool_call>`, and the whitespace before
//!   it (the text before a call is trimmed at its end, as in the whole reply). A reply that
//!   begins with `{` is held as a possible bare call (a forced call's reply is one).
//! - Llama 3 JSON: only a reply that begins (after whitespace) with `{` or `<|python_tag|>`
//!   is held; any other is content from its first character.
//!
//! A call is sent once `{"name": <a known tool>, "arguments"|"parameters": {` has arrived;
//! its arguments then stream as written, each byte checked as a JSON prefix. A call written
//! otherwise (keys in another order, arguments as a string) is held until its object closes
//! and sent whole. Anything found malformed before the first call was sent makes the whole
//! held text plain content, as in the whole reply.

use super::tools::{call_object, Format};

/// What to send next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// A `content` delta.
    Content(String),
    /// A call's first delta: `index`, a fresh id, `type` and the name.
    Start { index: usize, name: String },
    /// More of call `index`'s `arguments`.
    Args { index: usize, text: String },
}

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";
const TAG: &str = "<|python_tag|>";

#[derive(Debug)]
enum State {
    /// Whitespace at the start of the reply.
    Start,
    /// Plain text; `detect`: watch for `<tool_call>`.
    Content {
        detect: bool,
    },
    /// After a marker: whitespace, then the call's `{`.
    Open,
    Call(Box<CallScan>),
    /// After a Hermes call's object: whitespace, then `</tool_call>`.
    Close,
    /// After `</tool_call>`: whitespace, then another `<tool_call>` or the end.
    Between,
    /// After a bare call: whitespace to the end.
    AfterBare,
    /// Everything left is dropped (`parallel_tool_calls: false` after the first call).
    Ignore,
}

/// The incremental parser of one streamed reply.
#[derive(Debug)]
pub struct ToolStream {
    format: Format,
    names: Vec<String>,
    parallel: bool,
    state: State,
    text: String,
    /// Next byte to scan.
    pos: usize,
    /// Start of the text neither sent as content nor taken into a call.
    sent: usize,
    /// Calls sent, and how many of them closed.
    calls: usize,
    closed: usize,
    /// Whether the current call is a bare one (no `<tool_call>` around it).
    bare: bool,
}

impl ToolStream {
    pub fn new(format: Format, names: Vec<String>, parallel: bool) -> ToolStream {
        ToolStream {
            format,
            names,
            parallel,
            state: State::Start,
            text: String::new(),
            pos: 0,
            sent: 0,
            calls: 0,
            closed: 0,
            bare: false,
        }
    }

    /// Whether the reply is a tool-call reply: at least one call sent, and every sent call
    /// closed (its `finish_reason` is then `tool_calls`).
    pub fn called(&self) -> bool {
        self.calls > 0 && self.closed == self.calls
    }

    /// Takes more generated text.
    pub fn push(&mut self, s: &str) -> Vec<Piece> {
        self.text.push_str(s);
        let mut out = Vec::new();
        self.run(&mut out);
        out
    }

    /// The generation ended: what was held goes out.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        match &self.state {
            State::Start | State::Content { .. } | State::Open => self.flush(&mut out),
            State::Call(c) if !c.committed => self.flush(&mut out),
            // A sent call cut short stays as sent; a missing `</tool_call>` is tolerated.
            _ => {}
        }
        out
    }

    fn flush(&mut self, out: &mut Vec<Piece>) {
        if self.sent < self.text.len() {
            out.push(Piece::Content(self.text[self.sent..].to_string()));
        }
        self.sent = self.text.len();
        self.pos = self.text.len();
    }

    /// A call that cannot be one: before any call was sent, the whole held text is content;
    /// the rest of the reply is content too.
    fn fail(&mut self) {
        let detect = self.format == Format::Hermes && self.calls == 0 && self.bare;
        self.state = State::Content { detect };
        self.pos = self.sent;
        self.bare = false;
    }

    fn run(&mut self, out: &mut Vec<Piece>) {
        loop {
            let rest = &self.text[self.pos..];
            match &mut self.state {
                State::Start => {
                    let t = rest.trim_start();
                    if t.is_empty() {
                        return;
                    }
                    let at = self.text.len() - t.len();
                    if t.starts_with('{') {
                        self.pos = at;
                        self.bare = true;
                        self.state = State::Call(Box::new(CallScan::new(at, self.calls)));
                    } else if self.format == Format::Llama3Json && TAG.starts_with(t) {
                        return;
                    } else if self.format == Format::Llama3Json && t.starts_with(TAG) {
                        self.pos = at + TAG.len();
                        self.bare = true;
                        self.state = State::Open;
                    } else {
                        self.state = State::Content {
                            detect: self.format == Format::Hermes,
                        };
                    }
                }
                State::Content { detect: false } => {
                    self.flush(out);
                    return;
                }
                State::Content { detect: true } => {
                    let (end, marker) = match rest.find(OPEN) {
                        Some(i) => (self.pos + i, true),
                        None => (self.text.len() - partial_suffix(rest, OPEN), false),
                    };
                    let keep = self.text[self.sent..end].trim_end().len() + self.sent;
                    if keep > self.sent {
                        out.push(Piece::Content(self.text[self.sent..keep].to_string()));
                        self.sent = keep;
                    }
                    if !marker {
                        self.pos = end;
                        return;
                    }
                    self.pos = end + OPEN.len();
                    self.state = State::Open;
                }
                State::Open => {
                    let t = rest.trim_start();
                    if t.is_empty() {
                        return;
                    }
                    let at = self.text.len() - t.len();
                    if t.starts_with('{') {
                        self.pos = at;
                        self.state = State::Call(Box::new(CallScan::new(at, self.calls)));
                    } else {
                        self.fail();
                    }
                }
                State::Call(c) => {
                    let r = c.feed(&self.text, self.pos, &self.names, out);
                    if c.committed {
                        // What a sent call has taken is no longer held.
                        self.calls = c.index + 1;
                        self.sent = c.args_from.unwrap_or(c.scanned);
                    }
                    match r {
                        Fed::More => {
                            self.pos = self.text.len();
                            return;
                        }
                        Fed::Bad if c.committed => {
                            // Broken after it was sent: the rest is content.
                            self.sent = c.scanned;
                            self.pos = self.sent;
                            self.state = State::Content { detect: false };
                        }
                        Fed::Bad => self.fail(),
                        Fed::Closed(end) => {
                            self.closed += 1;
                            self.pos = end;
                            self.sent = end;
                            self.state = if !self.parallel {
                                State::Ignore
                            } else if self.bare {
                                State::AfterBare
                            } else {
                                State::Close
                            };
                        }
                    }
                }
                State::Close | State::Between => {
                    let t = rest.trim_start();
                    let at = self.text.len() - t.len();
                    let want = if matches!(self.state, State::Close) {
                        CLOSE
                    } else {
                        OPEN
                    };
                    if t.is_empty() || want.starts_with(t) {
                        self.pos = at;
                        return;
                    }
                    if let Some(after) = t.strip_prefix(want) {
                        self.pos = self.text.len() - after.len();
                        self.sent = self.pos;
                        self.state = if want == CLOSE {
                            State::Between
                        } else {
                            State::Open
                        };
                    } else {
                        // Text after the calls: content.
                        self.sent = at;
                        self.state = State::Content { detect: false };
                    }
                }
                State::AfterBare => {
                    let t = rest.trim_start();
                    if t.is_empty() {
                        self.pos = self.text.len();
                        return;
                    }
                    self.sent = self.text.len() - t.len();
                    self.state = State::Content { detect: false };
                }
                State::Ignore => {
                    self.pos = self.text.len();
                    self.sent = self.pos;
                    return;
                }
            }
        }
    }
}

/// The length of the longest suffix of `s` that is a proper prefix of `marker`.
fn partial_suffix(s: &str, marker: &str) -> usize {
    (1..marker.len().min(s.len() + 1))
        .rev()
        .find(|&k| s.is_char_boundary(s.len() - k) && marker.starts_with(&s[s.len() - k..]))
        .unwrap_or(0)
}

enum Fed {
    /// Needs more text.
    More,
    /// Not a JSON prefix, or not a call.
    Bad,
    /// The call's object ended before this byte.
    Closed(usize),
}

/// One call object being read.
#[derive(Debug)]
struct CallScan {
    /// Where its `{` is.
    start: usize,
    /// Bytes scanned so far (absolute).
    scanned: usize,
    json: Json,
    keys: usize,
    key: String,
    key_start: usize,
    val_start: usize,
    name: Option<String>,
    /// Still `{"name": …, "arguments": {` in that order.
    fast: bool,
    /// The header was sent.
    committed: bool,
    /// The call's `index`.
    index: usize,
    /// Next byte of the arguments to send, while they stream.
    args_from: Option<usize>,
}

impl CallScan {
    fn new(start: usize, index: usize) -> CallScan {
        CallScan {
            start,
            scanned: start,
            json: Json::default(),
            keys: 0,
            key: String::new(),
            key_start: 0,
            val_start: 0,
            name: None,
            fast: true,
            committed: false,
            index,
            args_from: None,
        }
    }

    fn feed(&mut self, text: &str, from: usize, names: &[String], out: &mut Vec<Piece>) -> Fed {
        let index = self.index;
        let known = |n: &str| names.iter().any(|k| k == n);
        for (off, c) in text[from..].char_indices() {
            let i = from + off;
            self.scanned = i;
            let Some(evs) = self.json.step(c) else {
                self.send_args(text, i, index, out);
                return Fed::Bad;
            };
            for ev in evs.into_iter().flatten() {
                match ev {
                    Ev::KeyStart(1) => self.key_start = i,
                    Ev::KeyEnd(1) => {
                        self.keys += 1;
                        self.key =
                            serde_json::from_str(&text[self.key_start..=i]).unwrap_or_default();
                    }
                    Ev::ValueStart(1) => {
                        self.val_start = i;
                        if !self.fast {
                        } else if self.keys == 1 && self.key != "name" {
                            self.fast = false;
                        } else if self.keys == 2 {
                            if matches!(self.key.as_str(), "arguments" | "parameters")
                                && c == '{'
                                && self.name.is_some()
                            {
                                self.committed = true;
                                out.push(Piece::Start {
                                    index,
                                    name: self.name.clone().unwrap_or_default(),
                                });
                                self.args_from = Some(i);
                            } else {
                                self.fast = false;
                            }
                        }
                    }
                    Ev::ValueEnd(1, end) => {
                        let end = end.map_or(i + c.len_utf8(), |_| i);
                        if self.key == "name" && !self.committed {
                            match serde_json::from_str::<String>(&text[self.val_start..end]) {
                                Ok(n) if known(&n) => self.name = Some(n),
                                _ => return Fed::Bad,
                            }
                        } else if self.args_from.is_some() {
                            self.send_args(text, end, index, out);
                            self.args_from = None;
                        }
                    }
                    Ev::ValueEnd(0, _) => {
                        let end = i + c.len_utf8();
                        if !self.committed {
                            let Some(call) = call_object(&text[self.start..end]) else {
                                return Fed::Bad;
                            };
                            if !known(&call.name) {
                                return Fed::Bad;
                            }
                            self.committed = true;
                            out.push(Piece::Start {
                                index,
                                name: call.name,
                            });
                            out.push(Piece::Args {
                                index,
                                text: call.arguments.to_string(),
                            });
                        }
                        return Fed::Closed(end);
                    }
                    _ => {}
                }
            }
        }
        self.scanned = text.len();
        self.send_args(text, text.len(), index, out);
        Fed::More
    }

    fn send_args(&mut self, text: &str, upto: usize, index: usize, out: &mut Vec<Piece>) {
        if let Some(from) = self.args_from {
            if upto > from {
                out.push(Piece::Args {
                    index,
                    text: text[from..upto].to_string(),
                });
                self.args_from = Some(upto);
            }
        }
    }
}

/// What a character did, at a nesting depth (the call object's members are at depth 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    KeyStart(usize),
    KeyEnd(usize),
    ValueStart(usize),
    /// A value ended: at this character, or (`Some(())`) just before it (a number).
    ValueEnd(usize, Option<()>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Value,
    ValueOrClose,
    KeyOrClose,
    Key,
    Colon,
    After,
    Str { key: bool, esc: u8 },
    Num(u8),
    Lit(&'static str, usize),
}

/// A JSON prefix checker, one character at a time (RFC 8259).
#[derive(Debug)]
struct Json {
    /// `true`: an object; `false`: an array.
    stack: Vec<bool>,
    mode: Mode,
}

impl Default for Json {
    fn default() -> Json {
        Json {
            stack: Vec::new(),
            mode: Mode::Value,
        }
    }
}

impl Json {
    /// `None` when `c` cannot continue the text as JSON.
    fn step(&mut self, c: char) -> Option<[Option<Ev>; 2]> {
        let d = self.stack.len();
        let ws = matches!(c, ' ' | '\t' | '\n' | '\r');
        match self.mode {
            Mode::Value | Mode::ValueOrClose => {
                if ws {
                    return Some([None, None]);
                }
                if c == ']' && self.mode == Mode::ValueOrClose {
                    return self.close(c);
                }
                self.mode = match c {
                    '{' => {
                        self.stack.push(true);
                        Mode::KeyOrClose
                    }
                    '[' => {
                        self.stack.push(false);
                        Mode::ValueOrClose
                    }
                    '"' => Mode::Str { key: false, esc: 0 },
                    '-' => Mode::Num(0),
                    '0' => Mode::Num(2),
                    '1'..='9' => Mode::Num(1),
                    't' => Mode::Lit("true", 1),
                    'f' => Mode::Lit("false", 1),
                    'n' => Mode::Lit("null", 1),
                    _ => return None,
                };
                Some([Some(Ev::ValueStart(d)), None])
            }
            Mode::KeyOrClose | Mode::Key => {
                if ws {
                    return Some([None, None]);
                }
                if c == '}' && self.mode == Mode::KeyOrClose {
                    return self.close(c);
                }
                if c != '"' {
                    return None;
                }
                self.mode = Mode::Str { key: true, esc: 0 };
                Some([Some(Ev::KeyStart(d)), None])
            }
            Mode::Colon => {
                if ws {
                    return Some([None, None]);
                }
                (c == ':').then(|| {
                    self.mode = Mode::Value;
                    [None, None]
                })
            }
            Mode::After => {
                if ws {
                    return Some([None, None]);
                }
                match (c, self.stack.last()) {
                    (',', Some(true)) => self.mode = Mode::Key,
                    (',', Some(false)) => self.mode = Mode::Value,
                    ('}', Some(true)) | (']', Some(false)) => return self.close(c),
                    _ => return None,
                }
                Some([None, None])
            }
            Mode::Str { key, esc } => {
                match esc {
                    0 => match c {
                        '"' => {
                            self.mode = if key { Mode::Colon } else { Mode::After };
                            let ev = if key {
                                Ev::KeyEnd(d)
                            } else {
                                Ev::ValueEnd(d, None)
                            };
                            return Some([Some(ev), None]);
                        }
                        '\\' => self.mode = Mode::Str { key, esc: 1 },
                        c if (c as u32) < 0x20 => return None,
                        _ => {}
                    },
                    1 => {
                        let next = match c {
                            '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' => 0,
                            'u' => 2,
                            _ => return None,
                        };
                        self.mode = Mode::Str { key, esc: next };
                    }
                    // 2..=5: the four hex digits of \u.
                    n => {
                        if !c.is_ascii_hexdigit() {
                            return None;
                        }
                        self.mode = Mode::Str {
                            key,
                            esc: if n == 5 { 0 } else { n + 1 },
                        };
                    }
                }
                Some([None, None])
            }
            Mode::Num(s) => {
                // 0 '-', 1 int digits, 2 leading zero, 3 '.', 4 fraction, 5 'e', 6 exp sign,
                // 7 exponent digits.
                let next = match (s, c) {
                    (0, '0') => Some(2),
                    (0, '1'..='9') | (1, '0'..='9') => Some(1),
                    (1 | 2, '.') => Some(3),
                    (3 | 4, '0'..='9') => Some(4),
                    (1 | 2 | 4, 'e' | 'E') => Some(5),
                    (5, '+' | '-') => Some(6),
                    (5..=7, '0'..='9') => Some(7),
                    _ => None,
                };
                if let Some(n) = next {
                    self.mode = Mode::Num(n);
                    return Some([None, None]);
                }
                if !matches!(s, 1 | 2 | 4 | 7) {
                    return None;
                }
                self.mode = Mode::After;
                let end = Ev::ValueEnd(d, Some(()));
                let [a, _] = self.step(c)?;
                Some([Some(end), a])
            }
            Mode::Lit(word, k) => {
                if word.as_bytes().get(k) != Some(&(c as u8)) || !c.is_ascii() {
                    return None;
                }
                if k + 1 == word.len() {
                    self.mode = Mode::After;
                    return Some([Some(Ev::ValueEnd(d, None)), None]);
                }
                self.mode = Mode::Lit(word, k + 1);
                Some([None, None])
            }
        }
    }

    fn close(&mut self, _c: char) -> Option<[Option<Ev>; 2]> {
        self.stack.pop();
        self.mode = Mode::After;
        Some([Some(Ev::ValueEnd(self.stack.len(), None)), None])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Feeds `text` in pieces of `n` characters; returns the content, the calls as
    /// (name, arguments) and whether it ended as calls.
    fn run(
        format: Format,
        text: &str,
        n: usize,
        parallel: bool,
    ) -> (String, Vec<(String, String)>, bool, Vec<Piece>) {
        let mut ts = ToolStream::new(format, vec!["get_weather".into(), "time".into()], parallel);
        let chars: Vec<char> = text.chars().collect();
        let mut pieces = Vec::new();
        for ch in chars.chunks(n) {
            pieces.extend(ts.push(&ch.iter().collect::<String>()));
        }
        pieces.extend(ts.finish());
        let mut content = String::new();
        let mut calls: Vec<(String, String)> = Vec::new();
        for p in &pieces {
            match p {
                Piece::Content(c) => content.push_str(c),
                Piece::Start { index, name } => {
                    assert_eq!(*index, calls.len());
                    calls.push((name.clone(), String::new()));
                }
                Piece::Args { index, text } => calls[*index].1.push_str(text),
            }
        }
        (content, calls, ts.called(), pieces)
    }

    fn js(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn hermes_content_then_calls() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa\\\"ris\", \"days\": [1, -2.5e3, true, null]}}\n</tool_call>\n<tool_call>{\"name\": \"time\", \"arguments\": {}}</tool_call>\n";
        for n in [1, 2, 3, 7, 1000] {
            let (content, calls, called, pieces) = run(Format::Hermes, text, n, true);
            assert_eq!(content, "Let me check.", "{n}");
            assert!(called);
            assert_eq!(calls.len(), 2);
            assert_eq!(calls[0].0, "get_weather");
            assert_eq!(
                js(&calls[0].1),
                serde_json::json!({"city": "Pa\"ris", "days": [1, -2500.0, true, null]})
            );
            assert_eq!(calls[1], ("time".into(), "{}".into()));
            // Content first, then the header, then the arguments.
            assert!(matches!(pieces[0], Piece::Content(_)));
            if n == 1 {
                assert!(matches!(pieces.last(), Some(Piece::Args { .. })));
                let frags = pieces
                    .iter()
                    .filter(|p| matches!(p, Piece::Args { index: 0, .. }))
                    .count();
                assert!(frags > 10, "{frags}");
            }
        }
        // Content goes out before the marker arrives, held only from a possible '<'.
        let mut ts = ToolStream::new(Format::Hermes, vec!["time".into()], true);
        assert_eq!(ts.push("Hello"), vec![Piece::Content("Hello".into())]);
        assert_eq!(
            ts.push(" there <tool"),
            vec![Piece::Content(" there".into())]
        );
        assert_eq!(
            ts.push("box> x"),
            vec![Piece::Content(" <toolbox> x".into())]
        );
    }

    #[test]
    fn forced_and_llama3_calls_stream() {
        for (f, text) in [
            (
                Format::Hermes,
                "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}",
            ),
            (
                Format::Llama3Json,
                " <|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
            ),
            (
                Format::Llama3Json,
                "{\"parameters\": {\"city\": \"Oslo\"}, \"name\": \"get_weather\"}",
            ),
            (
                Format::Llama3Json,
                "{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Oslo\\\"}\"}",
            ),
        ] {
            for n in [1, 4, 100] {
                let (content, calls, called, _) = run(f, text, n, true);
                assert_eq!(content, "", "{text}");
                assert!(called, "{text}");
                assert_eq!(calls.len(), 1);
                assert_eq!(
                    js(&calls[0].1),
                    serde_json::json!({"city": "Oslo"}),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn malformed_is_the_whole_text() {
        for (f, text) in [
            (Format::Hermes, "no call here "),
            (
                Format::Hermes,
                "Hi <tool_call>{\"name\": \"other\", \"arguments\": {}}</tool_call>",
            ),
            (Format::Hermes, "x <tool_call>[1]</tool_call>"),
            (Format::Hermes, "x <tool_call>{\"name\": 3}"),
            (Format::Hermes, "{\"a\": 1} <tool_call"),
            (Format::Llama3Json, "The weather is nice."),
            (
                Format::Llama3Json,
                "{\"name\": \"get_weather\", \"parameters\": 3}",
            ),
            (Format::Llama3Json, "{\"parameters\": {}}"),
            (Format::Llama3Json, "  {\"name\": \"get_weather\", \"para"),
            (Format::Llama3Json, "<|python"),
            (Format::Llama3Json, "{ nope"),
        ] {
            for n in [1, 3, 100] {
                let (content, calls, called, _) = run(f, text, n, true);
                assert_eq!(content, text, "{text} {n}");
                assert!(calls.is_empty() && !called, "{text}");
            }
        }
    }

    #[test]
    fn after_a_call() {
        // Cut short: the call stays as sent, and the reply is not a finished call.
        let (content, calls, called, _) = run(
            Format::Llama3Json,
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Os",
            2,
            true,
        );
        assert_eq!((content.as_str(), calls.len(), called), ("", 1, false));
        assert_eq!(calls[0].1, "{\"city\": \"Os");
        // Text after a bare call is content.
        let (content, _, called, _) = run(
            Format::Llama3Json,
            "{\"name\": \"time\", \"parameters\": {}} and more",
            3,
            true,
        );
        assert_eq!((content.as_str(), called), ("and more", true));
        // One call only: the rest is dropped.
        let text = "<tool_call>{\"name\": \"time\", \"arguments\": {}}</tool_call><tool_call>{\"name\": \"time\", \"arguments\": {}}</tool_call>";
        let (content, calls, called, _) = run(Format::Hermes, text, 5, false);
        assert_eq!((content.as_str(), calls.len(), called), ("", 1, true));
    }

    #[test]
    fn agrees_with_the_whole_reply_parser() {
        let names = ["get_weather", "time"];
        for (f, text) in [
            (Format::Hermes, "Sure.  \n\n<tool_call>{\"name\": \"time\", \"arguments\": {\"tz\": \"\\u00e9\"}}</tool_call>"),
            (Format::Hermes, "<tool_call>\n{\"arguments\": {}, \"name\": \"time\"}\n</tool_call>"),
            (Format::Hermes, "{\"name\": \"get_weather\", \"arguments\": {\"a\": {\"b\": [{}]}}}"),
            (Format::Llama3Json, "\n{\"name\": \"time\", \"parameters\": null}"),
            (Format::Llama3Json, "{\"name\": \"time\", \"parameters\": {\"n\": 0.5}, \"x\": 1}"),
        ] {
            let (before, want) = super::super::tools::parse_reply(f, text, &names).unwrap();
            for n in [1, 2, 5, 1000] {
                let (content, calls, called, _) = run(f, text, n, true);
                assert!(called, "{text}");
                assert_eq!(content, before, "{text}");
                assert_eq!(calls.len(), want.len(), "{text}");
                for (c, w) in calls.iter().zip(&want) {
                    assert_eq!(c.0, w.name);
                    assert_eq!(js(&c.1), w.arguments, "{text}");
                }
            }
        }
    }

    #[test]
    fn json_prefix_checker() {
        for ok in [
            "{}",
            "[1,2]",
            "{\"a\":[{}, \"\\u00e9\"], \"b\": -0.5E+2}",
            "0",
            "\"x\"",
        ] {
            let mut j = Json::default();
            assert!(ok.chars().all(|c| j.step(c).is_some()), "{ok}");
        }
        for bad in [
            "{,}",
            "[01]",
            "{\"a\" 1}",
            "[1,]",
            "\"\\x\"",
            "tru ",
            "{\"a\":1]",
            "-.",
        ] {
            let mut j = Json::default();
            assert!(!bad.chars().all(|c| j.step(c).is_some()), "{bad}");
        }
    }
}
