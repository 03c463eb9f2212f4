//! `pattern`, `format` and length bounds from hostile bytes: the first line is the pattern
//! (or, starting with `@`, a format name), the next two bytes the bounds, the rest is pushed
//! into the schema machine. The compiler gives a table or a clear error, never a panic; the
//! builder accepts every table it gives; from every state the machine reaches some byte is
//! accepted unless the string is complete; a complete string decodes to a value the table
//! accepts within the bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trillim_core::grammar::{ByteMachine, Entry, SchemaBuilder, SchemaMachine};

// The compiler's own file, built here without the server around it.
#[path = "../../server/src/openai/pattern.rs"]
#[allow(dead_code)]
mod pattern;

fuzz_target!(|data: &[u8]| {
    let line = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(head) = std::str::from_utf8(&data[..line]) else {
        return;
    };
    let rest = data.get(line + 1..).unwrap_or(&[]);
    let (lo, hi) = (*rest.first().unwrap_or(&0), *rest.get(1).unwrap_or(&255));
    let input = rest.get(2..).unwrap_or(&[]);
    let min = (lo % 8) as u32;
    let max = if hi >= 128 {
        u32::MAX
    } else {
        (hi % 32) as u32
    };
    let (p, f) = match head.strip_prefix('@') {
        Some(f) => (None, Some(f)),
        None => (Some(head), None),
    };
    let Ok(t) = pattern::compile(p, f, min, max) else {
        return;
    };
    let mut entries = vec![Entry::Alt(0); 4];
    let mut pool = vec![0u8; t.bytes.len()];
    let mut b = SchemaBuilder::new(&mut entries, &mut pool);
    let root = b
        .pattern(&t.bytes, t.states, t.classes, t.max)
        .expect("the builder accepts the compiler's tables");
    let schema = b.finish(root).expect("a pattern string is a finite value");
    let mut m = SchemaMachine::new(&schema);
    let mut text = Vec::new();
    for &c in input {
        let before = m.state;
        if !m.push(c) {
            assert_eq!(m.state, before);
            return;
        }
        text.push(c);
        if !m.is_done() {
            assert!((0..=255u8).any(|t| {
                let mut n = m;
                n.push(t)
            }));
        }
    }
    if m.is_done() {
        let v: String = serde_json::from_slice(&text).expect("accepted text is a JSON string");
        let n = v.chars().count() as u32;
        assert!(n >= min && n <= max);
        assert!(t.accepts(&v));
    }
});
