//! A byte-level pushdown recognizer for JSON (RFC 8259) whose top level is an object, as
//! `response_format: {"type": "json_object"}` asks. The stack is a bitset (object or array
//! per level), so a state is a few words and copies freely. Runs of whitespace between
//! tokens are capped so a model cannot pad forever ([`ws_allowed`]).

use super::ByteMachine;

/// Deepest nesting accepted (the stack is one `u128`).
pub const MAX_DEPTH: u8 = 128;
/// Longest run of whitespace accepted between two JSON tokens without a newline.
pub const MAX_WHITESPACE: u8 = 2;
/// Indentation accepted per nesting level after a newline (2- and 4-space pretty printing).
pub const INDENT_PER_LEVEL: u16 = 4;

/// Whether whitespace byte `b` may extend a run of `run` bytes (`newline`: one of them is
/// `\n`) at nesting `depth` (1 inside the top object): any run of up to [`MAX_WHITESPACE`]
/// bytes, or a run with one line break of at most 1 + [`INDENT_PER_LEVEL`] × `depth` bytes,
/// so pretty-printed JSON is accepted while padding stays bounded per token (blank lines,
/// which small models repeat, are not).
pub fn ws_allowed(run: u16, newline: bool, b: u8, depth: u8) -> bool {
    if newline && (b == b'\n' || b == b'\r') {
        return false;
    }
    let run = run + 1;
    run <= MAX_WHITESPACE as u16
        || ((newline || b == b'\n') && run <= 1 + INDENT_PER_LEVEL * depth as u16)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Lit {
    True,
    False,
    Null,
}

impl Lit {
    fn text(self) -> &'static [u8] {
        match self {
            Lit::True => b"true",
            Lit::False => b"false",
            Lit::Null => b"null",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Num {
    /// After `-`: a digit must come.
    Minus,
    /// After a leading `0`.
    Zero,
    /// In the integer digits.
    Int,
    /// After `.`: a digit must come.
    Dot,
    Frac,
    /// After `e`/`E`: a sign or digit.
    E,
    /// After the exponent's sign: a digit.
    ESign,
    Exp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum St {
    /// Before the top-level object.
    Start,
    /// A value must come (after `:` or `,` in an array).
    Value,
    /// After `{`: a key or `}`.
    ObjOpen,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After `[`: a value or `]`.
    ArrOpen,
    /// After a value: `,`, the closing bracket, or the end at depth 0.
    After,
    /// Inside a string (`key`: an object key, followed by `:`).
    Str {
        key: bool,
    },
    /// After a backslash.
    Esc {
        key: bool,
    },
    /// In `\uXXXX`, `left` hex digits to go.
    Hex {
        key: bool,
        left: u8,
    },
    /// In a multi-byte UTF-8 character: `left` continuation bytes, the next in `lo..=hi`.
    Utf8 {
        key: bool,
        left: u8,
        lo: u8,
        hi: u8,
    },
    Lit {
        lit: Lit,
        pos: u8,
    },
    Num(Num),
    /// The top-level object is closed.
    Done,
}

/// The recognizer's state: copy it to explore, keep it to commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JsonMachine {
    st: St,
    /// Bit `i` set: level `i` is an array; clear: an object.
    stack: u128,
    depth: u8,
    /// The current whitespace run: its length, and whether it holds a newline.
    ws: u16,
    nl: bool,
}

impl Default for JsonMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonMachine {
    /// A recognizer waiting for a top-level object.
    pub fn new() -> Self {
        JsonMachine {
            st: St::Start,
            stack: 0,
            depth: 0,
            ws: 0,
            nl: false,
        }
    }

    /// Feeds every byte of `bytes`; `false` at the first refused one.
    pub fn push_all(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.push(b))
    }

    fn open(&mut self, array: bool) -> bool {
        if self.depth >= MAX_DEPTH {
            return false;
        }
        let bit = 1u128 << self.depth;
        if array {
            self.stack |= bit;
        } else {
            self.stack &= !bit;
        }
        self.depth += 1;
        self.st = if array { St::ArrOpen } else { St::ObjOpen };
        true
    }

    fn in_array(&self) -> bool {
        self.depth > 0 && self.stack & (1u128 << (self.depth - 1)) != 0
    }

    fn close(&mut self, array: bool) -> bool {
        if self.depth == 0 || self.in_array() != array {
            return false;
        }
        self.depth -= 1;
        self.st = if self.depth == 0 { St::Done } else { St::After };
        true
    }

    /// A value's first byte.
    fn value_start(&mut self, b: u8) -> bool {
        self.st = match b {
            b'{' => return self.open(false),
            b'[' => return self.open(true),
            b'"' => St::Str { key: false },
            b't' => St::Lit {
                lit: Lit::True,
                pos: 1,
            },
            b'f' => St::Lit {
                lit: Lit::False,
                pos: 1,
            },
            b'n' => St::Lit {
                lit: Lit::Null,
                pos: 1,
            },
            b'-' => St::Num(Num::Minus),
            b'0' => St::Num(Num::Zero),
            b'1'..=b'9' => St::Num(Num::Int),
            _ => return false,
        };
        true
    }

    /// A byte after a complete value.
    fn after(&mut self, b: u8) -> bool {
        match b {
            b',' if self.in_array() => {
                self.st = St::Value;
                true
            }
            b',' if self.depth > 0 => {
                self.st = St::Key;
                true
            }
            b']' => self.close(true),
            b'}' => self.close(false),
            _ => false,
        }
    }

    fn string_end(&mut self, key: bool) {
        self.st = if key { St::Colon } else { St::After };
    }

    fn string_byte(&mut self, key: bool, b: u8) -> bool {
        let (left, lo, hi) = match b {
            b'"' => {
                self.string_end(key);
                return true;
            }
            b'\\' => {
                self.st = St::Esc { key };
                return true;
            }
            0x00..=0x1f => return false,
            0x20..=0x7f => return true,
            0xc2..=0xdf => (1, 0x80, 0xbf),
            0xe0 => (2, 0xa0, 0xbf),
            0xed => (2, 0x80, 0x9f),
            0xe1..=0xef => (2, 0x80, 0xbf),
            0xf0 => (3, 0x90, 0xbf),
            0xf1..=0xf3 => (3, 0x80, 0xbf),
            0xf4 => (3, 0x80, 0x8f),
            _ => return false,
        };
        self.st = St::Utf8 { key, left, lo, hi };
        true
    }

    fn number(&mut self, n: Num, b: u8) -> bool {
        let next = match (n, b) {
            (Num::Minus, b'0') => Num::Zero,
            (Num::Minus, b'1'..=b'9') => Num::Int,
            (Num::Int, b'0'..=b'9') => Num::Int,
            (Num::Zero | Num::Int, b'.') => Num::Dot,
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::E,
            (Num::Dot | Num::Frac, b'0'..=b'9') => Num::Frac,
            (Num::E, b'+' | b'-') => Num::ESign,
            (Num::E | Num::ESign | Num::Exp, b'0'..=b'9') => Num::Exp,
            (Num::Zero | Num::Int | Num::Frac | Num::Exp, _) => {
                // The number ended; this byte belongs to what follows it.
                self.st = St::After;
                (self.ws, self.nl) = (0, false);
                return self.push(b);
            }
            _ => return false,
        };
        self.st = St::Num(next);
        true
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r')
}

impl ByteMachine for JsonMachine {
    fn push(&mut self, b: u8) -> bool {
        let between = matches!(
            self.st,
            St::Start | St::Value | St::ObjOpen | St::Key | St::Colon | St::ArrOpen | St::After
        );
        if between && is_ws(b) {
            if !ws_allowed(self.ws, self.nl, b, self.depth) {
                return false;
            }
            (self.ws, self.nl) = (self.ws + 1, self.nl || b == b'\n');
            return true;
        }
        let saved = *self;
        (self.ws, self.nl) = (0, false);
        let ok = match self.st {
            St::Start => b == b'{' && self.open(false),
            St::Value => self.value_start(b),
            St::ObjOpen => match b {
                b'"' => {
                    self.st = St::Str { key: true };
                    true
                }
                b'}' => self.close(false),
                _ => false,
            },
            St::Key => {
                self.st = St::Str { key: true };
                b == b'"'
            }
            St::Colon => {
                self.st = St::Value;
                b == b':'
            }
            St::ArrOpen => b == b']' && self.close(true) || self.value_start(b),
            St::After => self.after(b),
            St::Str { key } => self.string_byte(key, b),
            St::Esc { key } => {
                self.st = match b {
                    b'u' => St::Hex { key, left: 4 },
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => St::Str { key },
                    _ => return false,
                };
                true
            }
            St::Hex { key, left } => {
                self.st = if left == 1 {
                    St::Str { key }
                } else {
                    St::Hex {
                        key,
                        left: left - 1,
                    }
                };
                b.is_ascii_hexdigit()
            }
            St::Utf8 { key, left, lo, hi } => {
                self.st = if left == 1 {
                    St::Str { key }
                } else {
                    St::Utf8 {
                        key,
                        left: left - 1,
                        lo: 0x80,
                        hi: 0xbf,
                    }
                };
                (lo..=hi).contains(&b)
            }
            St::Lit { lit, pos } => {
                let text = lit.text();
                if text[pos as usize] != b {
                    false
                } else {
                    self.st = if pos as usize + 1 == text.len() {
                        St::After
                    } else {
                        St::Lit { lit, pos: pos + 1 }
                    };
                    true
                }
            }
            St::Num(n) => self.number(n, b),
            St::Done => false,
        };
        if !ok {
            *self = saved;
        }
        ok
    }

    fn is_accepting(&self) -> bool {
        self.st == St::Done
    }

    fn is_done(&self) -> bool {
        self.st == St::Done
    }

    fn plain_budget(&self) -> Option<usize> {
        matches!(self.st, St::Str { .. }).then_some(usize::MAX)
    }
}
