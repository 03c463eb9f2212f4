extern crate std;

use super::*;
use serde_json::Value;
use std::vec;
use std::vec::Vec;

/// Owned table and pool for tests.
struct Owned {
    entries: Vec<Entry>,
    bytes: Vec<u8>,
    root: u16,
}

impl Owned {
    fn schema(&self) -> Schema<'_> {
        Schema::from_parts(&self.entries, &self.bytes, self.root)
    }
}

fn build(
    f: impl FnOnce(&mut SchemaBuilder<'_>) -> Result<u16, SchemaError>,
) -> Result<Owned, SchemaError> {
    let mut entries = vec![Entry::Alt(0); 512];
    let mut bytes = vec![0u8; 4096];
    let mut b = SchemaBuilder::new(&mut entries, &mut bytes);
    let root = f(&mut b)?;
    let (n, nb) = (b.len(), b.bytes_used());
    b.finish(root)?;
    entries.truncate(n);
    bytes.truncate(nb);
    Ok(Owned {
        entries,
        bytes,
        root,
    })
}

fn accepts(o: &Owned, s: &str) -> bool {
    let schema = o.schema();
    let mut m = SchemaMachine::new(&schema);
    m.push_all(s.as_bytes()) && m.is_accepting()
}

fn prefix_ok(o: &Owned, s: &str) -> bool {
    let schema = o.schema();
    let mut m = SchemaMachine::new(&schema);
    m.push_all(s.as_bytes())
}

const STR: Node = Node::String {
    min: 0,
    max: u32::MAX,
};

/// {"name": string, "age"?: integer 0..=150, "tags": [string]{1,3}, "ok": boolean}
fn person() -> Owned {
    build(|b| {
        let name = b.node(STR)?;
        let age = b.node(Node::Number {
            integer: true,
            min: 0.0,
            max: 150.0,
            multiple: 0,
            decimals: 0,
        })?;
        let tag = b.node(Node::String { min: 1, max: 4 })?;
        let tags = b.node(Node::Array {
            items: tag,
            min: 1,
            max: 3,
        })?;
        let ok = b.enumeration([&b"true"[..], b"false"].into_iter())?;
        b.object(&[
            (b"name", name, true),
            (b"age", age, false),
            (b"tags", tags, true),
            (b"ok", ok, true),
        ])
    })
    .unwrap()
}

#[test]
fn objects_follow_declared_order_and_required() {
    let p = person();
    for s in [
        r#"{"name":"Al","age":30,"tags":["a"],"ok":true}"#,
        r#"{"name": "Al", "tags": ["abcd", "b", "c"], "ok": false}"#,
        "{\n \"name\": \"\\u00e9\\n\u{1f600}\",\n \"tags\": [\"x\"],\n \"ok\": true\n}",
        r#"{"name":"","age":0,"tags":["a"],"ok":true}"#,
        r#"{"name":"","age":150,"tags":["a"],"ok":true}"#,
        // Pretty-printed with 4 spaces: a newline and up to 1 + 4 per level.
        "{\n    \"name\": \"Al\",\n    \"tags\": [\n        \"a\"\n    ],\n    \"ok\": true\n}",
    ] {
        assert!(accepts(&p, s), "{s}");
    }
    for s in [
        r#"{"age":30,"name":"Al","tags":["a"],"ok":true}"#, // order
        r#"{"name":"Al","tags":["a"]}"#,                    // required ok missing
        r#"{"name":"Al","tags":[],"ok":true}"#,             // minItems
        r#"{"name":"Al","tags":["a","b","c","d"],"ok":true}"#, // maxItems
        r#"{"name":"Al","tags":["abcde"],"ok":true}"#,      // maxLength
        r#"{"name":"Al","tags":[""],"ok":true}"#,           // minLength
        r#"{"name":"Al","age":151,"tags":["a"],"ok":true}"#,
        r#"{"name":"Al","age":-1,"tags":["a"],"ok":true}"#,
        r#"{"name":"Al","age":1.5,"tags":["a"],"ok":true}"#,
        r#"{"name":"Al","age":01,"tags":["a"],"ok":true}"#,
        r#"{"name":"Al","tags":["a"],"ok":tru}"#,
        r#"{"name":"Al","tags":["a"],"ok":true,"x":1}"#, // additional
        r#"{"name":"Al","name":"B","tags":["a"],"ok":true}"#, // twice
        r#"{"name":"Al","tags":["a"],"ok":true} "#,
        r#"{"name":"Al","tags":["a"],"ok":true,}"#,
        r#"{"name":   "Al","tags":["a"],"ok":true}"#, // whitespace run
        "{\n     \"name\": \"Al\", \"tags\": [\"a\"], \"ok\": true}", // indented too far
    ] {
        assert!(!accepts(&p, s), "{s}");
    }
    // Digits that could never end in range are refused as they come.
    assert!(!prefix_ok(&p, r#"{"name":"","age":2000"#));
    assert!(
        !prefix_ok(&p, r#"{"name":"","age":16"#)
            || accepts(&p, r#"{"name":"","age":16,"tags":["a"],"ok":true}"#)
    );
    assert!(!prefix_ok(&p, r#"{"name":"","age":151"#));
    assert!(!prefix_ok(&p, r#"{"name":"","age":-"#));
}

#[test]
fn numbers_respect_bounds_exactly() {
    let num = |integer, min, max| {
        build(|b| {
            b.node(Node::Number {
                integer,
                min,
                max,
                multiple: 0,
                decimals: 0,
            })
        })
        .unwrap()
    };
    let n = num(false, -2.5, 10.0);
    for s in [
        "-2.5", "-2", "0", "0.0", "10", "10.0", "9.999", "-0.5", "-0",
    ] {
        assert!(accepts(&n, s), "{s}");
    }
    for s in ["-2.51", "-3", "10.01", "11", "1e1", "-", "1.", "00"] {
        assert!(!accepts(&n, s), "{s}");
    }
    let i = num(true, 50.0, 60.0);
    assert!(accepts(&i, "55") && accepts(&i, "60") && accepts(&i, "50"));
    assert!(!prefix_ok(&i, "7") && !prefix_ok(&i, "4") && !accepts(&i, "5") && !prefix_ok(&i, "-"));
    let neg = num(true, -100.0, -3.0);
    assert!(accepts(&neg, "-3") && accepts(&neg, "-100") && accepts(&neg, "-42"));
    assert!(!prefix_ok(&neg, "1") && !accepts(&neg, "-2") && !prefix_ok(&neg, "-101"));
    let free = build(|b| {
        b.node(Node::Number {
            integer: false,
            min: f64::NEG_INFINITY,
            max: f64::INFINITY,
            multiple: 0,
            decimals: 0,
        })
    })
    .unwrap();
    for s in ["1e5", "-0.5E-3", "123456789012345678901234567890"] {
        assert!(accepts(&free, s), "{s}");
    }
    assert!(matches!(
        build(|b| b.node(Node::Number {
            integer: true,
            min: 1.2,
            max: 1.8,
            multiple: 0,
            decimals: 0
        })),
        Err(SchemaError::EmptyRange)
    ));
}

#[test]
fn steps_give_exact_multiples_within_bounds() {
    let num = |integer, min, max, multiple, decimals| {
        build(|b| {
            b.node(Node::Number {
                integer,
                min,
                max,
                multiple,
                decimals,
            })
        })
    };
    let inf = f64::INFINITY;
    let seven = num(true, -inf, inf, 7, 0).unwrap();
    for s in ["0", "7", "-14", "700000000000000007"] {
        assert!(accepts(&seven, s), "{s}");
    }
    for s in ["1", "-8", "70.0", "7e1"] {
        assert!(!accepts(&seven, s), "{s}");
    }
    // Every prefix can still reach a multiple (append digits).
    assert!(prefix_ok(&seven, "123") && prefix_ok(&seven, "-9"));
    // Bounds and step together: 10..=25 in fives; "1" may only go on to 10/15, "3" nowhere.
    let fives = num(true, 10.0, 25.0, 5, 0).unwrap();
    assert!(accepts(&fives, "15") && accepts(&fives, "25") && !accepts(&fives, "30"));
    assert!(!accepts(&fives, "12") && !prefix_ok(&fives, "3") && !prefix_ok(&fives, "0"));
    assert!(!prefix_ok(&fives, "11") && prefix_ok(&fives, "1"));
    // A decimal step: 0.25 within 0..=1, at most two fraction digits.
    let q = num(false, 0.0, 1.0, 25, 2).unwrap();
    for s in ["0", "0.25", "0.5", "0.50", "1", "1.0", "0.0"] {
        assert!(accepts(&q, s), "{s}");
    }
    for s in ["0.3", "0.255", "1.25", "-0.25", "0.125"] {
        assert!(!accepts(&q, s), "{s}");
    }
    assert!(!prefix_ok(&q, "0.3") && prefix_ok(&q, "0.2"));
    // No multiple in range: refused when built.
    assert!(matches!(
        num(true, 1.0, 9.0, 10, 0),
        Err(SchemaError::EmptyRange)
    ));
}

#[test]
fn enums_unions_and_free_objects() {
    let e = build(|b| {
        b.enumeration(
            [
                &br#""red""#[..],
                br#""redder""#,
                b"1",
                b"12",
                b"null",
                br#"{"a":[1]}"#,
            ]
            .into_iter(),
        )
    })
    .unwrap();
    for s in [r#""red""#, r#""redder""#, "1", "12", "null", r#"{"a":[1]}"#] {
        assert!(accepts(&e, s), "{s}");
    }
    for s in [r#""re""#, "2", "123", r#"{"a": [1]}"#, r#""Red""#] {
        assert!(!accepts(&e, s), "{s}");
    }
    // ["string", "null"] and an array of free objects.
    let u = build(|b| {
        let s = b.node(STR)?;
        let n = b.enumeration([&b"null"[..]].into_iter())?;
        let sn = b.union(&[s, n])?;
        let any = b.node(Node::AnyObject)?;
        let arr = b.node(Node::Array {
            items: any,
            min: 0,
            max: u32::MAX,
        })?;
        b.object(&[(b"v", sn, true), (b"xs", arr, true)])
    })
    .unwrap();
    assert!(accepts(&u, r#"{"v":null,"xs":[]}"#));
    assert!(accepts(
        &u,
        r#"{"v":"x","xs":[{"a":{"b":[1,"2",null]}},{}]}"#
    ));
    assert!(!accepts(&u, r#"{"v":1,"xs":[]}"#));
    assert!(!accepts(&u, r#"{"v":null,"xs":[1]}"#));
    // Two objects cannot be told apart by their first byte.
    assert_eq!(
        build(|b| {
            let a = b.node(Node::AnyObject)?;
            let c = b.object(&[])?;
            b.union(&[a, c])
        })
        .err(),
        Some(SchemaError::AmbiguousUnion(b'{'))
    );
}

/// Tool calls: {"name": "weather", "arguments": {"city": string}} or
/// {"name": "add" | "plus", "arguments": {"a": integer 0..9}} or a plain string.
fn tool_calls() -> Result<Owned, SchemaError> {
    build(|b| {
        let weather = b.enumeration([&br#""weather""#[..]].into_iter())?;
        let city = b.node(STR)?;
        let wargs = b.object(&[(b"city", city, true)])?;
        let w = b.object(&[(b"name", weather, true), (b"arguments", wargs, true)])?;
        let add = b.enumeration([&br#""add""#[..], br#""plus""#].into_iter())?;
        let digit = b.node(Node::Number {
            integer: true,
            min: 0.0,
            max: 9.0,
            multiple: 0,
            decimals: 0,
        })?;
        let aargs = b.object(&[(b"a", digit, true)])?;
        let a = b.object(&[(b"name", add, true), (b"arguments", aargs, true)])?;
        let text = b.node(STR)?;
        b.union(&[w, text, a])
    })
}

#[test]
fn objects_told_apart_by_a_leading_tag() {
    let t = tool_calls().unwrap();
    for s in [
        r#"{"name":"weather","arguments":{"city":"Paris"}}"#,
        r#"{"name":"add","arguments":{"a":3}}"#,
        r#"{ "name": "plus", "arguments": { "a": 0 } }"#,
        r#""just text""#,
    ] {
        assert!(accepts(&t, s), "{s}");
    }
    for s in [
        // Each object's arguments are its own.
        r#"{"name":"weather","arguments":{"a":3}}"#,
        r#"{"name":"add","arguments":{"city":"Paris"}}"#,
        r#"{"name":"add","arguments":{"a":10}}"#,
        r#"{"name":"minus","arguments":{"a":1}}"#,
        r#"{"arguments":{"a":1},"name":"add"}"#,
        r#"{"name":"add"}"#,
        r#"{}"#,
    ] {
        assert!(!accepts(&t, s), "{s}");
    }
    // After the tag only the chosen object's next key may come.
    assert!(prefix_ok(&t, r#"{"name":"add","arguments":{"#));
    assert!(!prefix_ok(&t, r#"{"name":"add","arguments":{"c"#));
    assert!(prefix_ok(&t, r#"{"name":"weather","arguments":{"c"#));
    // Random walks end in one of the three shapes.
    let schema = t.schema();
    for seed in 1..200u64 {
        let mut m = SchemaMachine::new(&schema);
        assert!(random_completion(&mut m, seed, 4000), "seed {seed}");
    }
    // Not told apart: a shared value, a tag that is not first or not required.
    let shared = build(|b| {
        let x = b.enumeration([&br#""x""#[..]].into_iter())?;
        let y = b.enumeration([&br#""y""#[..], br#""x""#].into_iter())?;
        let o1 = b.object(&[(b"k", x, true)])?;
        let o2 = b.object(&[(b"k", y, true)])?;
        b.union(&[o1, o2])
    });
    assert_eq!(shared.err(), Some(SchemaError::AmbiguousUnion(b'{')));
    let optional = build(|b| {
        let x = b.enumeration([&br#""x""#[..]].into_iter())?;
        let y = b.enumeration([&br#""y""#[..]].into_iter())?;
        let o1 = b.object(&[(b"k", x, false)])?;
        let o2 = b.object(&[(b"k", y, true)])?;
        b.union(&[o1, o2])
    });
    assert_eq!(optional.err(), Some(SchemaError::AmbiguousUnion(b'{')));
    let names = build(|b| {
        let x = b.enumeration([&br#""x""#[..]].into_iter())?;
        let y = b.enumeration([&br#""y""#[..]].into_iter())?;
        let o1 = b.object(&[(b"k", x, true)])?;
        let o2 = b.object(&[(b"j", y, true)])?;
        b.union(&[o1, o2])
    });
    assert_eq!(names.err(), Some(SchemaError::AmbiguousUnion(b'{')));
}

/// A tag whose object could not finish in the containers left is not offered.
#[test]
fn tags_of_objects_too_deep_for_the_stack_are_not_offered() {
    let t = build(|b| {
        // deep: {"t": "deep", "v": [[[…15 levels…]]]}; flat: {"t": "flat"}.
        let mut inner = b.node(STR)?;
        for _ in 0..15 {
            inner = b.node(Node::Array {
                items: inner,
                min: 1,
                max: 1,
            })?;
        }
        let d = b.enumeration([&br#""deep""#[..]].into_iter())?;
        let f = b.enumeration([&br#""flat""#[..]].into_iter())?;
        let deep = b.object(&[(b"t", d, true), (b"v", inner, true)])?;
        let flat = b.object(&[(b"t", f, true)])?;
        let tagged = b.union(&[deep, flat])?;
        b.object(&[(b"x", tagged, true)])
    })
    .unwrap();
    assert!(accepts(&t, r#"{"x":{"t":"flat"}}"#));
    // The deep object needs 16 containers beside the outer one: 17 > 16.
    assert!(!prefix_ok(&t, r#"{"x":{"t":"d"#));
}

#[test]
fn recursion_is_bounded_and_unsatisfiable_schemas_refused() {
    // node = {"name": string, "kids"?: [node]}
    let tree = build(|b| {
        let node = b.reserve()?;
        let name = b.node(STR)?;
        let kids = b.node(Node::Array {
            items: node,
            min: 0,
            max: u32::MAX,
        })?;
        let obj = b.object(&[(b"name", name, true), (b"kids", kids, false)])?;
        b.define(node, obj);
        Ok(node)
    })
    .unwrap();
    assert!(accepts(
        &tree,
        r#"{"name":"a","kids":[{"name":"b","kids":[]},{"name":"c"}]}"#
    ));
    // Deep nesting stops where the stack ends, and the state is never a dead end.
    let mut deep = std::string::String::new();
    let schema = tree.schema();
    let mut m = SchemaMachine::new(&schema);
    let mut levels = 0;
    loop {
        let before = m;
        if !m.push_all(br#"{"name":"x","kids":["#) {
            m = before;
            break;
        }
        deep.push_str(r#"{"name":"x","kids":["#);
        levels += 1;
    }
    assert!((4..=MAX_STACK).contains(&levels));
    // From the deepest point there is still a way to close everything.
    assert!(random_completion(&mut m, 1, 100_000));
    // Required recursion has no finite value.
    let r = build(|b| {
        let node = b.reserve()?;
        let obj = b.object(&[(b"next", node, true)])?;
        b.define(node, obj);
        Ok(node)
    });
    assert_eq!(r.err(), Some(SchemaError::Unsatisfiable));
    assert_eq!(build(|b| b.reserve()).err(), Some(SchemaError::Undefined));
    assert_eq!(
        build(|b| b.node(Node::String { min: 3, max: 2 })).err(),
        Some(SchemaError::EmptyRange)
    );
    let mut tiny = [Entry::Alt(0); 2];
    let mut pool = [0u8; 4];
    let mut b = SchemaBuilder::new(&mut tiny, &mut pool);
    assert_eq!(
        b.object(&[(b"abcdef", 0, true)]).err(),
        Some(SchemaError::TooLarge)
    );
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Pushes random accepted bytes until the machine accepts; `false` if it got stuck.
fn random_completion(m: &mut SchemaMachine<'_>, seed: u64, steps: usize) -> bool {
    let mut r = Rng(seed | 1);
    let mut alphabet: Vec<u8> = b"{}[],:\"\\ 0123456789.-+eEtrufalsnbxyz".to_vec();
    alphabet.extend([0xc3, 0xa9, b'\n']);
    for _ in 0..steps {
        if m.is_accepting() && (m.is_done() || r.next().is_multiple_of(4)) {
            return true;
        }
        // Prefer closing bytes as the walk goes on so it ends.
        let ok: Vec<u8> = (0..=255u8)
            .filter(|&b| {
                let mut t = *m;
                t.push(b)
            })
            .collect();
        if ok.is_empty() {
            return false;
        }
        let closers: Vec<u8> = ok.iter().copied().filter(|b| b"}]\"".contains(b)).collect();
        let pick = if !closers.is_empty() && !r.next().is_multiple_of(3) {
            closers[r.next() as usize % closers.len()]
        } else {
            let pref: Vec<u8> = ok
                .iter()
                .copied()
                .filter(|b| alphabet.contains(b))
                .collect();
            let from = if pref.is_empty() { &ok } else { &pref };
            from[r.next() as usize % from.len()]
        };
        assert!(m.push(pick));
    }
    m.is_accepting()
}

/// Whether `v` validates against the `person` schema (a hand check).
fn person_valid(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    let keys: Vec<&str> = o.keys().map(|k| k.as_str()).collect();
    let order_ok = keys
        .iter()
        .all(|k| ["name", "age", "tags", "ok"].contains(k));
    let tags = o.get("tags").and_then(Value::as_array);
    order_ok
        && o.get("name").is_some_and(Value::is_string)
        && o.get("age")
            .is_none_or(|a| a.as_i64().is_some_and(|a| (0..=150).contains(&a)))
        && tags.is_some_and(|t| {
            (1..=3).contains(&t.len())
                && t.iter().all(|s| {
                    s.as_str()
                        .is_some_and(|s| (1..=4).contains(&s.chars().count()))
                })
        })
        && o.get("ok").is_some_and(Value::is_boolean)
}

#[test]
fn random_walks_end_in_valid_documents() {
    let p = person();
    let schema = p.schema();
    for seed in 1..300u64 {
        let mut m = SchemaMachine::new(&schema);
        let mut text = Vec::new();
        let mut r = Rng(seed * 0x9e37_79b9);
        // Record the bytes by replaying the walk's choices.
        let mut steps = 0;
        while !(m.is_accepting() && m.is_done()) {
            let ok: Vec<u8> = (0..=255u8)
                .filter(|&b| {
                    let mut t = m;
                    t.push(b)
                })
                .collect();
            assert!(
                !ok.is_empty(),
                "stuck after {:?}",
                std::string::String::from_utf8_lossy(&text)
            );
            let closers: Vec<u8> = ok
                .iter()
                .copied()
                .filter(|b| b"}]\",".contains(b))
                .collect();
            let printable: Vec<u8> = ok
                .iter()
                .copied()
                .filter(|b| b.is_ascii_graphic() || *b == b' ')
                .collect();
            let b = if steps > 40 && !closers.is_empty() && r.next().is_multiple_of(2) {
                closers[r.next() as usize % closers.len()]
            } else if !printable.is_empty() {
                printable[r.next() as usize % printable.len()]
            } else {
                ok[r.next() as usize % ok.len()]
            };
            assert!(m.push(b));
            text.push(b);
            steps += 1;
            assert!(steps < 5000, "no end");
        }
        let v: Value = serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("{e}: {:?}", std::string::String::from_utf8_lossy(&text)));
        assert!(person_valid(&v), "{v}");
    }
    // Escapes, non-ASCII and control characters written as serde_json writes them.
    let name = serde_json::to_string("x\"y\\\u{1}é😀").unwrap();
    assert!(accepts(
        &p,
        &std::format!(r#"{{"name":{name},"age":7,"tags":["é","😀😀"],"ok":false}}"#)
    ));
}

#[test]
fn refused_bytes_leave_the_state_unchanged_and_plain_budget_is_exact() {
    let p = person();
    let schema = p.schema();
    let mut m = SchemaMachine::new(&schema);
    assert!(m.push_all(br#"{"name":"ab"#));
    assert_eq!(m.plain_budget(), Some(usize::MAX));
    for b in 0..=255u8 {
        let before = m.state;
        let mut t = m;
        if !t.push(b) {
            assert_eq!(t.state, before);
        }
    }
    assert!(m.push_all(br#"","tags":["ab"#));
    assert_eq!(m.plain_budget(), Some(2));
    assert!(m.push_all(br#"\n"#));
    assert_eq!(m.plain_budget(), Some(1));
}
