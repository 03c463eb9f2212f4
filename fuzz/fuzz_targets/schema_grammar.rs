//! The schema compiler and machine on arbitrary bytes: the first part of the input is a
//! program of builder calls (any schema the builder accepts, or a typed error), the rest is
//! pushed into the machine. Never a panic; a refused byte leaves the state unchanged; from
//! every reachable state some byte is accepted unless the value is complete; whatever is
//! accepted in full parses as JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trillim_core::grammar::{ByteMachine, Entry, Node, SchemaBuilder, SchemaMachine};

const LITS: &[&[u8]] = &[
    b"null",
    b"true",
    b"1",
    b"12",
    b"-3.5",
    br#""a""#,
    br#""ab""#,
    br#"{"k":[]}"#,
];
const NAMES: &[&[u8]] = &[b"a", b"ab", b"b", b"\\n", b"\xc3\xa9"];

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    let (prog, input) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));
    let mut entries = vec![Entry::Alt(0); 256];
    let mut pool = vec![0u8; 1024];
    let mut b = SchemaBuilder::new(&mut entries, &mut pool);
    let mut ids: Vec<u16> = Vec::new();
    let mut pending: Vec<u16> = Vec::new();
    for w in prog.chunks(3) {
        let (op, x, y) = (w[0], *w.get(1).unwrap_or(&0), *w.get(2).unwrap_or(&0));
        let last = |k: usize| ids.iter().rev().nth(k).copied();
        let r = match op % 9 {
            0 => b.node(Node::String {
                min: (x % 4) as u32,
                max: if y % 2 == 0 { u32::MAX } else { (y % 8) as u32 },
            }),
            1 => b.node(Node::Number {
                integer: x % 2 == 0,
                min: if y % 3 == 0 {
                    f64::NEG_INFINITY
                } else {
                    (x as i8) as f64 / 4.0
                },
                max: if y % 5 == 0 {
                    f64::INFINITY
                } else {
                    (x as i8) as f64 / 4.0 + y as f64
                },
                // Now and then a step (`multipleOf`), integer or decimal.
                multiple: if y % 7 == 0 { (x % 13) as u64 } else { 0 },
                decimals: y % 3,
            }),
            2 => b.enumeration(
                LITS.iter()
                    .copied()
                    .skip((x % 8) as usize)
                    .take(1 + (y % 3) as usize),
            ),
            3 => match last(0) {
                Some(items) => b.node(Node::Array {
                    items,
                    min: (x % 3) as u32,
                    max: (x % 3 + y % 4) as u32,
                }),
                None => continue,
            },
            4 => {
                let n = (x % 4) as usize;
                let props: Vec<(&[u8], u16, bool)> = (0..n)
                    .filter_map(|k| {
                        last(k).map(|id| {
                            (NAMES[(k + y as usize) % NAMES.len()], id, y & (1 << k) != 0)
                        })
                    })
                    .collect();
                b.object(&props)
            }
            // Two or three alternatives (objects with a leading enum become a tagged union).
            5 => match (last(0), last(1), last(2)) {
                (Some(a), Some(c), Some(d)) if x % 2 == 1 => b.union(&[a, c, d]),
                (Some(a), Some(c), _) => b.union(&[a, c]),
                _ => continue,
            },
            6 => b.node(Node::AnyObject),
            7 => b.reserve().inspect(|&id| pending.push(id)),
            _ => match (pending.pop(), last(0)) {
                (Some(p), Some(to)) => {
                    b.define(p, to);
                    continue;
                }
                _ => continue,
            },
        };
        match r {
            Ok(id) => ids.push(id),
            Err(_) => return,
        }
    }
    let Some(&root) = ids.last() else { return };
    let Ok(schema) = b.finish(root) else { return };
    let mut m = SchemaMachine::new(&schema);
    let mut all = true;
    for &c in input {
        let before = m.state;
        if !m.push(c) {
            assert_eq!(m.state, before);
            all = false;
            break;
        }
        if !m.is_done() {
            assert!(
                m.is_accepting()
                    || (0..=255u8).any(|t| {
                        let mut n = m;
                        n.push(t)
                    })
            );
        }
    }
    if all && m.is_accepting() {
        serde_json::from_slice::<serde_json::Value>(input).expect("accepted text parses");
    }
});
