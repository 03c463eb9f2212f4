//! A streaming JSON writer over [`embedded_io::Write`]: objects, arrays, escaped strings,
//! integers and floats, written piece by piece without any allocation.
//!
//! The writer tracks nesting (up to [`MAX_DEPTH`] levels) and inserts commas and colons
//! itself, so a caller only says what comes next:
//!
//! ```
//! use trillim_core::json::JsonWriter;
//! let mut buf = [0u8; 64];
//! let mut w = JsonWriter::new(&mut buf[..]);
//! w.begin_object().unwrap();
//! w.key("a").unwrap();
//! w.u64(1).unwrap();
//! w.key("b").unwrap();
//! w.string("x\"y").unwrap();
//! w.end_object().unwrap();
//! let rest = w.into_inner().len();
//! assert_eq!(&buf[..64 - rest], br#"{"a":1,"b":"x\"y"}"#);
//! ```
//!
//! Strings are escaped completely: `"` and `\`, every control character (`\n`, `\t`, ... or
//! `\u00XX`), DEL, and U+2028/U+2029 (so the output is also safe inside JavaScript). Lone
//! surrogates cannot occur because input is `&str`. Non-finite floats are written as `null`.

use core::fmt;

use embedded_io::Write;

/// The I/O traits the writer writes through, for shells that implement them on their own
/// buffers.
pub use embedded_io;

/// Deepest nesting of arrays and objects the writer accepts.
pub const MAX_DEPTH: usize = 32;

/// Why a write failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonError<E> {
    /// The underlying writer failed.
    Io(E),
    /// More than [`MAX_DEPTH`] nested containers.
    TooDeep,
    /// A call out of place: a value where a key is expected, a key outside an object, an end
    /// without a matching begin, or an `end_object` right after a key.
    Misuse,
}

impl<E: fmt::Debug> fmt::Display for JsonError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Io(e) => write!(f, "write failed: {e:?}"),
            JsonError::TooDeep => write!(f, "JSON nesting deeper than {MAX_DEPTH}"),
            JsonError::Misuse => write!(f, "JSON writer used out of order"),
        }
    }
}

/// Writes JSON values to `W` as they are described.
#[derive(Debug)]
pub struct JsonWriter<W> {
    w: W,
    depth: usize,
    /// Bit `i`: level `i + 1` is an object (else an array).
    objects: u32,
    /// Bit `i`: level `i + 1` already holds an element.
    nonempty: u32,
    /// A key was written and its value is due.
    after_key: bool,
}

type Res<W> = Result<(), JsonError<<W as embedded_io::ErrorType>::Error>>;

impl<W: Write> JsonWriter<W> {
    /// A writer at the top level.
    pub fn new(w: W) -> Self {
        JsonWriter {
            w,
            depth: 0,
            objects: 0,
            nonempty: 0,
            after_key: false,
        }
    }

    /// The underlying writer (for framing bytes between top-level values).
    pub fn inner_mut(&mut self) -> &mut W {
        &mut self.w
    }

    /// Returns the underlying writer.
    pub fn into_inner(self) -> W {
        self.w
    }

    /// Current nesting depth (0 at the top level).
    pub fn depth(&self) -> usize {
        self.depth
    }

    fn raw(&mut self, b: &[u8]) -> Res<W> {
        self.w.write_all(b).map_err(JsonError::Io)
    }

    fn top_bit(&self) -> u32 {
        1 << (self.depth - 1)
    }

    /// Comma and state bookkeeping before a value.
    fn before_value(&mut self) -> Res<W> {
        if self.after_key {
            self.after_key = false;
            return Ok(());
        }
        if self.depth == 0 {
            return Ok(());
        }
        let bit = self.top_bit();
        if self.objects & bit != 0 {
            return Err(JsonError::Misuse);
        }
        if self.nonempty & bit != 0 {
            self.raw(b",")?;
        }
        self.nonempty |= bit;
        Ok(())
    }

    fn begin(&mut self, object: bool) -> Res<W> {
        if self.depth >= MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        self.before_value()?;
        self.depth += 1;
        let bit = self.top_bit();
        self.nonempty &= !bit;
        if object {
            self.objects |= bit;
        } else {
            self.objects &= !bit;
        }
        self.raw(if object { b"{" } else { b"[" })
    }

    fn end(&mut self, object: bool) -> Res<W> {
        if self.depth == 0 || self.after_key || ((self.objects & self.top_bit() != 0) != object) {
            return Err(JsonError::Misuse);
        }
        self.depth -= 1;
        self.raw(if object { b"}" } else { b"]" })
    }

    /// Opens an object.
    pub fn begin_object(&mut self) -> Res<W> {
        self.begin(true)
    }

    /// Closes the innermost object.
    pub fn end_object(&mut self) -> Res<W> {
        self.end(true)
    }

    /// Opens an array.
    pub fn begin_array(&mut self) -> Res<W> {
        self.begin(false)
    }

    /// Closes the innermost array.
    pub fn end_array(&mut self) -> Res<W> {
        self.end(false)
    }

    /// Writes an object key; the next call writes its value.
    pub fn key(&mut self, k: &str) -> Res<W> {
        if self.depth == 0 || self.after_key || self.objects & self.top_bit() == 0 {
            return Err(JsonError::Misuse);
        }
        let bit = self.top_bit();
        if self.nonempty & bit != 0 {
            self.raw(b",")?;
        }
        self.nonempty |= bit;
        self.escaped(k)?;
        self.raw(b":")?;
        self.after_key = true;
        Ok(())
    }

    /// Writes a string value.
    pub fn string(&mut self, s: &str) -> Res<W> {
        self.before_value()?;
        self.escaped(s)
    }

    /// Writes a string value given in pieces (their concatenation is the string).
    pub fn string_parts<'s>(&mut self, parts: impl IntoIterator<Item = &'s str>) -> Res<W> {
        self.before_value()?;
        self.raw(b"\"")?;
        for p in parts {
            self.escaped_body(p)?;
        }
        self.raw(b"\"")
    }

    /// Writes a string value produced by formatting `args` (escaped as it is produced).
    pub fn string_fmt(&mut self, args: fmt::Arguments<'_>) -> Res<W> {
        self.before_value()?;
        self.raw(b"\"")?;
        let mut e = Escaper { j: self, err: None };
        if fmt::write(&mut e, args).is_err() {
            return Err(e.err.unwrap_or(JsonError::Misuse));
        }
        self.raw(b"\"")
    }

    /// Writes an unsigned integer.
    pub fn u64(&mut self, v: u64) -> Res<W> {
        self.before_value()?;
        let mut buf = [0u8; 20];
        let s = fmt_u64(v, &mut buf);
        self.raw(s)
    }

    /// Writes a signed integer.
    pub fn i64(&mut self, v: i64) -> Res<W> {
        self.before_value()?;
        if v < 0 {
            self.raw(b"-")?;
        }
        let mut buf = [0u8; 20];
        let s = fmt_u64(v.unsigned_abs(), &mut buf);
        self.raw(s)
    }

    /// Writes a float in its shortest round-trip form; NaN and infinities become `null`.
    pub fn f32(&mut self, v: f32) -> Res<W> {
        if !v.is_finite() {
            return self.null();
        }
        self.before_value()?;
        self.display(v)
    }

    /// Writes a double in its shortest round-trip form; NaN and infinities become `null`.
    pub fn f64(&mut self, v: f64) -> Res<W> {
        if !v.is_finite() {
            return self.null();
        }
        self.before_value()?;
        self.display(v)
    }

    /// Writes `true` or `false`.
    pub fn bool(&mut self, v: bool) -> Res<W> {
        self.before_value()?;
        self.raw(if v { b"true" } else { b"false" })
    }

    /// Writes `null`.
    pub fn null(&mut self) -> Res<W> {
        self.before_value()?;
        self.raw(b"null")
    }

    /// Writes `json`, one complete JSON value serialized elsewhere, as the next value. The
    /// caller vouches that it is valid JSON.
    pub fn raw_value(&mut self, json: &str) -> Res<W> {
        self.before_value()?;
        self.raw(json.as_bytes())
    }

    fn display(&mut self, v: impl fmt::Display) -> Res<W> {
        let mut a = FmtAdapter {
            w: &mut self.w,
            err: None,
        };
        if fmt::write(&mut a, format_args!("{v}")).is_err() {
            return Err(match a.err {
                Some(e) => JsonError::Io(e),
                None => JsonError::Misuse,
            });
        }
        Ok(())
    }

    fn escaped(&mut self, s: &str) -> Res<W> {
        self.raw(b"\"")?;
        self.escaped_body(s)?;
        self.raw(b"\"")
    }

    fn escaped_body(&mut self, s: &str) -> Res<W> {
        let b = s.as_bytes();
        let mut start = 0;
        let mut i = 0;
        let mut esc_buf = *b"\\u0000";
        while i < b.len() {
            let c = b[i];
            let (esc, skip): (&[u8], usize) = match c {
                b'"' => (b"\\\"", 1),
                b'\\' => (b"\\\\", 1),
                b'\n' => (b"\\n", 1),
                b'\r' => (b"\\r", 1),
                b'\t' => (b"\\t", 1),
                0x08 => (b"\\b", 1),
                0x0C => (b"\\f", 1),
                0x00..=0x1F | 0x7F => {
                    esc_buf[4] = HEX[(c >> 4) as usize];
                    esc_buf[5] = HEX[(c & 15) as usize];
                    (&esc_buf, 1)
                }
                0xE2 if b.get(i + 1) == Some(&0x80)
                    && matches!(b.get(i + 2), Some(0xA8 | 0xA9)) =>
                {
                    if b[i + 2] == 0xA8 {
                        (b"\\u2028", 3)
                    } else {
                        (b"\\u2029", 3)
                    }
                }
                _ => {
                    i += 1;
                    continue;
                }
            };
            self.raw(&b[start..i])?;
            self.raw(esc)?;
            i += skip;
            start = i;
        }
        self.raw(&b[start..])
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Formats `v` in decimal into the end of `buf`.
fn fmt_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

struct FmtAdapter<'w, W: Write> {
    w: &'w mut W,
    err: Option<W::Error>,
}

impl<W: Write> fmt::Write for FmtAdapter<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.w.write_all(s.as_bytes()).map_err(|e| {
            self.err = Some(e);
            fmt::Error
        })
    }
}

struct Escaper<'j, W: Write> {
    j: &'j mut JsonWriter<W>,
    err: Option<JsonError<W::Error>>,
}

impl<W: Write> fmt::Write for Escaper<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.j.escaped_body(s).map_err(|e| {
            self.err = Some(e);
            fmt::Error
        })
    }
}

/// A sink that only counts bytes: run a writer over it first to learn a body's length.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counter {
    /// Bytes written so far.
    pub n: usize,
}

impl embedded_io::ErrorType for Counter {
    type Error = core::convert::Infallible;
}

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.n += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Writes `s` as a JSON string body (no quotes) to `w`: the escaping [`JsonWriter::string`]
/// applies, for callers that frame strings themselves.
pub fn write_escaped<W: Write>(w: W, s: &str) -> Result<(), JsonError<W::Error>> {
    JsonWriter::new(w).escaped_body(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<F: FnOnce(&mut JsonWriter<&mut [u8]>)>(f: F) -> heapless::String<512> {
        let mut buf = [0u8; 512];
        let n = {
            let mut w = JsonWriter::new(&mut buf[..]);
            f(&mut w);
            512 - w.into_inner().len()
        };
        let mut s = heapless::String::new();
        s.push_str(core::str::from_utf8(&buf[..n]).unwrap())
            .unwrap();
        s
    }

    #[test]
    fn nested_values_get_commas_and_colons() {
        let s = with(|w| {
            w.begin_object().unwrap();
            w.key("a").unwrap();
            w.begin_array().unwrap();
            w.u64(1).unwrap();
            w.i64(-2).unwrap();
            w.bool(true).unwrap();
            w.null().unwrap();
            w.begin_object().unwrap();
            w.end_object().unwrap();
            w.begin_array().unwrap();
            w.end_array().unwrap();
            w.end_array().unwrap();
            w.key("b").unwrap();
            w.f32(0.1).unwrap();
            w.key("c").unwrap();
            w.f64(f64::NAN).unwrap();
            w.key("d").unwrap();
            w.f32(f32::INFINITY).unwrap();
            w.key("e").unwrap();
            w.i64(i64::MIN).unwrap();
            w.end_object().unwrap();
            assert_eq!(w.depth(), 0);
        });
        assert_eq!(
            s.as_str(),
            r#"{"a":[1,-2,true,null,{},[]],"b":0.1,"c":null,"d":null,"e":-9223372036854775808}"#
        );
    }

    #[test]
    fn strings_are_fully_escaped() {
        let s = with(|w| {
            w.string("q\"b\\n\n r\r t\t \u{8}\u{c} \u{0}\u{1f}\u{7f} \u{2028}\u{2029} é😀")
                .unwrap()
        });
        assert_eq!(
            s.as_str(),
            "\"q\\\"b\\\\n\\n r\\r t\\t \\b\\f \\u0000\\u001f\\u007f \\u2028\\u2029 é😀\""
        );
        let s = with(|w| w.string_parts(["a\"", "", "\nb"]).unwrap());
        assert_eq!(s.as_str(), r#""a\"\nb""#);
        let s = with(|w| w.string_fmt(format_args!("{}\t{}", "q\"", 5)).unwrap());
        assert_eq!(s.as_str(), r#""q\"\t5""#);
    }

    #[test]
    fn misuse_and_depth_are_reported() {
        let mut buf = [0u8; 256];
        let mut w = JsonWriter::new(&mut buf[..]);
        assert_eq!(w.key("x"), Err(JsonError::Misuse));
        assert_eq!(w.end_array(), Err(JsonError::Misuse));
        w.begin_object().unwrap();
        assert_eq!(w.u64(1), Err(JsonError::Misuse));
        assert_eq!(w.end_array(), Err(JsonError::Misuse));
        w.key("k").unwrap();
        assert_eq!(w.end_object(), Err(JsonError::Misuse));
        assert_eq!(w.key("k2"), Err(JsonError::Misuse));
        w.begin_array().unwrap();
        for _ in 2..MAX_DEPTH {
            w.begin_array().unwrap();
        }
        assert_eq!(w.begin_array(), Err(JsonError::TooDeep));
    }

    #[test]
    fn short_buffers_fail_with_io_errors() {
        let mut buf = [0u8; 4];
        let mut w = JsonWriter::new(&mut buf[..]);
        assert!(matches!(w.string("hello"), Err(JsonError::Io(_))));
        let mut c = Counter::default();
        JsonWriter::new(&mut c).string("a\nb").unwrap();
        assert_eq!(c.n, 6);
    }
}
