//! Incremental decoding of token streams into text that never splits a UTF-8 character.

use super::Tokenizer;

const CHUNK: usize = 64;
const REPLACEMENT: &str = "\u{FFFD}";

/// Turns a stream of bytes into `&str` chunks: complete characters go out at once, an
/// incomplete trailing sequence waits for the next bytes, and invalid bytes become U+FFFD
/// (one per maximal invalid subsequence, as the WHATWG decoder does).
#[derive(Clone, Copy, Debug, Default)]
pub struct Utf8Stream {
    pend: [u8; 4],
    len: u8,
    need: u8,
}

/// A fixed buffer of complete UTF-8 text handed out in pieces.
struct Chunk<'f, F: FnMut(&str)> {
    buf: [u8; CHUNK],
    n: usize,
    out: &'f mut F,
}

impl<F: FnMut(&str)> Chunk<'_, F> {
    fn put(&mut self, bytes: &[u8]) {
        if self.n + bytes.len() > CHUNK {
            self.flush();
        }
        self.buf[self.n..self.n + bytes.len()].copy_from_slice(bytes);
        self.n += bytes.len();
    }
    fn flush(&mut self) {
        if self.n > 0 {
            // Only whole characters are ever put in.
            if let Ok(s) = core::str::from_utf8(&self.buf[..self.n]) {
                (self.out)(s);
            }
            self.n = 0;
        }
    }
}

impl Utf8Stream {
    /// An empty stream.
    pub const fn new() -> Utf8Stream {
        Utf8Stream {
            pend: [0; 4],
            len: 0,
            need: 0,
        }
    }

    /// Number of bytes held back (an incomplete character).
    pub fn pending(&self) -> usize {
        self.len as usize
    }

    /// Feeds `bytes`; calls `out` with the text that is complete.
    pub fn push<F: FnMut(&str)>(&mut self, bytes: impl IntoIterator<Item = u8>, out: &mut F) {
        let mut c = Chunk {
            buf: [0; CHUNK],
            n: 0,
            out,
        };
        for b in bytes {
            self.byte(b, &mut c);
        }
        c.flush();
    }

    /// Ends the stream: a held-back incomplete character comes out as U+FFFD.
    pub fn flush<F: FnMut(&str)>(&mut self, out: &mut F) {
        if self.len > 0 {
            self.len = 0;
            out(REPLACEMENT);
        }
    }

    fn byte<F: FnMut(&str)>(&mut self, b: u8, c: &mut Chunk<'_, F>) {
        loop {
            if self.len == 0 {
                if b < 0x80 {
                    c.put(&[b]);
                    return;
                }
                self.need = match b {
                    0xC2..=0xDF => 1,
                    0xE0..=0xEF => 2,
                    0xF0..=0xF4 => 3,
                    _ => {
                        c.put(REPLACEMENT.as_bytes());
                        return;
                    }
                };
                self.pend[0] = b;
                self.len = 1;
                return;
            }
            let (lo, hi) = if self.len == 1 {
                match self.pend[0] {
                    0xE0 => (0xA0, 0xBF),
                    0xED => (0x80, 0x9F),
                    0xF0 => (0x90, 0xBF),
                    0xF4 => (0x80, 0x8F),
                    _ => (0x80, 0xBF),
                }
            } else {
                (0x80, 0xBF)
            };
            if (lo..=hi).contains(&b) {
                self.pend[self.len as usize] = b;
                self.len += 1;
                if self.len == self.need + 1 {
                    let n = self.len as usize;
                    self.len = 0;
                    c.put(&self.pend[..n]);
                }
                return;
            }
            // The held-back sequence is invalid; `b` starts afresh.
            self.len = 0;
            c.put(REPLACEMENT.as_bytes());
        }
    }
}

/// Incremental detokenizer: push token ids as they are generated and receive text that is
/// always valid UTF-8; a character split across tokens comes out once it is complete.
#[derive(Clone, Copy, Debug)]
pub struct Detokenizer {
    utf8: Utf8Stream,
    render_special: bool,
    strip_space: bool,
}

impl Detokenizer {
    /// A detokenizer; control tokens are rendered as their text when `render_special`.
    pub const fn new(render_special: bool) -> Detokenizer {
        Detokenizer {
            utf8: Utf8Stream::new(),
            render_special,
            strip_space: false,
        }
    }

    /// For decoding a sequence from its start: drops the leading space of the text (of the
    /// first token that renders any bytes) when the tokenizer added one while encoding
    /// (SentencePiece's space prefix).
    pub fn for_sequence_start(tok: &Tokenizer<'_>, render_special: bool) -> Detokenizer {
        Detokenizer {
            strip_space: tok.strips_leading_space(),
            ..Detokenizer::new(render_special)
        }
    }

    /// Number of bytes held back.
    pub fn pending(&self) -> usize {
        self.utf8.pending()
    }

    /// Decodes token `id` and calls `out` with the text that became complete (possibly not
    /// at all).
    pub fn push<F: FnMut(&str)>(&mut self, tok: &Tokenizer<'_>, id: u32, out: &mut F) {
        let mut bytes = tok.decode_token(id, self.render_special).peekable();
        if let Some(&b) = bytes.peek() {
            if core::mem::take(&mut self.strip_space) && b == b' ' {
                bytes.next();
            }
        }
        self.utf8.push(bytes, out);
    }

    /// Ends the sequence: held-back bytes of an incomplete character come out as U+FFFD.
    pub fn flush<F: FnMut(&str)>(&mut self, out: &mut F) {
        self.utf8.flush(out);
    }
}
