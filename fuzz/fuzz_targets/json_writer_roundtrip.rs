//! The streaming JSON writer: what it writes parses back (with serde_json) to the same value.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use trillim_core::json::{JsonError, JsonWriter, MAX_DEPTH};

#[derive(Debug)]
enum V {
    Null,
    Bool(bool),
    U(u64),
    I(i64),
    F(f32),
    D(f64),
    S(String),
    A(Vec<V>),
    O(Vec<(String, V)>),
}

fn gen(u: &mut Unstructured<'_>, depth: usize) -> arbitrary::Result<V> {
    let k = u.int_in_range(0..=if depth > 40 { 6 } else { 8 })?;
    Ok(match k {
        0 => V::Null,
        1 => V::Bool(u.arbitrary()?),
        2 => V::U(u.arbitrary()?),
        3 => V::I(u.arbitrary()?),
        4 => V::F(u.arbitrary()?),
        5 => V::D(u.arbitrary()?),
        6 => V::S(u.arbitrary()?),
        7 => {
            let n = u.int_in_range(0..=4)?;
            V::A(
                (0..n)
                    .map(|_| gen(u, depth + 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut items: Vec<(String, V)> = Vec::new();
            for _ in 0..n {
                let key: String = u.arbitrary()?;
                let v = gen(u, depth + 1)?;
                if !items.iter().any(|(k, _)| *k == key) {
                    items.push((key, v));
                }
            }
            V::O(items)
        }
    })
}

fn depth(v: &V) -> usize {
    match v {
        V::A(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        V::O(o) => 1 + o.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

fn write<W: embedded_io::Write>(w: &mut JsonWriter<W>, v: &V) -> Result<(), JsonError<W::Error>> {
    match v {
        V::Null => w.null(),
        V::Bool(b) => w.bool(*b),
        V::U(x) => w.u64(*x),
        V::I(x) => w.i64(*x),
        V::F(x) => w.f32(*x),
        V::D(x) => w.f64(*x),
        V::S(s) => w.string(s),
        V::A(a) => {
            w.begin_array()?;
            for x in a {
                write(w, x)?;
            }
            w.end_array()
        }
        V::O(o) => {
            w.begin_object()?;
            for (k, x) in o {
                w.key(k)?;
                write(w, x)?;
            }
            w.end_object()
        }
    }
}

fn same(v: &V, j: &Value) -> bool {
    match (v, j) {
        (V::Null, Value::Null) => true,
        (V::F(x), Value::Null) => !x.is_finite(),
        (V::D(x), Value::Null) => !x.is_finite(),
        (V::Bool(a), Value::Bool(b)) => a == b,
        (V::U(a), Value::Number(n)) => n.as_u64() == Some(*a),
        (V::I(a), Value::Number(n)) => n.as_i64() == Some(*a),
        (V::F(a), Value::Number(n)) => n.to_string().parse::<f32>().ok() == Some(*a),
        (V::D(a), Value::Number(n)) => n.to_string().parse::<f64>().ok() == Some(*a),
        (V::S(a), Value::String(b)) => a == b,
        (V::A(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (V::O(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((k, x), (k2, y))| k == k2 && same(x, y))
        }
        _ => false,
    }
}

/// The map key through which serde_json's `arbitrary_precision` (the oracle's exact numbers)
/// smuggles a number: an object with this key parses back as a number, whatever wrote it.
const SERDE_NUMBER_KEY: &str = "$serde_json::private::Number";

fn has_serde_number_key(v: &V) -> bool {
    match v {
        V::A(a) => a.iter().any(has_serde_number_key),
        V::O(o) => o
            .iter()
            .any(|(k, v)| k == SERDE_NUMBER_KEY || has_serde_number_key(v)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(v) = gen(&mut u, 0) else { return };
    if has_serde_number_key(&v) {
        // Valid JSON that the oracle cannot read back as an object.
        return;
    }
    let mut out: Vec<u8> = Vec::new();
    let mut w = JsonWriter::new(&mut out);
    let r = write(&mut w, &v);
    if depth(&v) > MAX_DEPTH {
        assert_eq!(r, Err(JsonError::TooDeep));
        return;
    }
    r.expect("writing a well-formed value");
    assert_eq!(w.depth(), 0);
    let text = std::str::from_utf8(&out).expect("UTF-8 output");
    assert!(!text.contains('\u{2028}') && !text.bytes().any(|b| b < 0x20));
    let back: Value = serde_json::from_str(text).expect("output parses");
    assert!(same(&v, &back), "{v:?} -> {text}");
});

// Keeps `Arbitrary` in scope for `u.arbitrary()`.
#[allow(dead_code)]
fn _uses<'a, T: Arbitrary<'a>>() {}
