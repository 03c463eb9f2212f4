//! Unicode character classes used by the pre-tokenizers.

#[allow(missing_docs)]
#[rustfmt::skip]
mod tables {
    include!("unicode_tables.rs");
}

pub use tables::UNICODE_VERSION;

/// The class of a code point, as the pre-tokenizer regexes see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Anything else (symbols, marks, controls that are not white space, unassigned).
    Other,
    /// `\p{L}`.
    Letter,
    /// `\p{N}`.
    Number,
    /// `\p{P}`.
    Punct,
    /// `\s` (the White_Space property).
    Space,
}

fn from_code(c: u8) -> Class {
    match c {
        1 => Class::Letter,
        2 => Class::Number,
        3 => Class::Punct,
        4 => Class::Space,
        _ => Class::Other,
    }
}

/// The class of `c`.
pub fn class(c: char) -> Class {
    let cp = c as u32;
    if cp < 128 {
        return from_code(tables::ASCII[cp as usize]);
    }
    let r = &tables::RANGES;
    // Index of the first range whose end is >= cp.
    let i = r.partition_point(|&(_, last, _)| last < cp);
    match r.get(i) {
        Some(&(first, _, code)) if first <= cp => from_code(code),
        _ => Class::Other,
    }
}
