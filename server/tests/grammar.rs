//! `response_format` end to end: `trillim serve` on SmolLM2, outputs that parse and
//! validate (non-streamed, streamed, two sequences batched, `n` > 1), `max_tokens` cutting a
//! value short, and the 400s of schemas the compiler refuses.

mod common;

use std::io::BufRead;

use common::{assert_error, Client, Server};
use serde_json::{json, Value};

fn start(tag: &str) -> Server {
    let home = common::store_with(
        &format!("grammar-{tag}"),
        "org/smol",
        &trillim_tests::smollm2_path(),
    );
    common::serve(
        home,
        &[
            "org/smol",
            "--threads",
            "2",
            "--ctx",
            "1024",
            "--parallel",
            "2",
        ],
        &[],
    )
}

/// {"name": string ≤ 24 chars, "age": 0..=120, "tags": 1-3 of red/green/blue, "pet"?: null or
/// a string, "address": {"city": string}} with `$defs`. Raw text: a `serde_json` map would
/// sort the properties, and their order is the order the output must follow.
const PERSON: &str = r##"{
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/color"}, "minItems": 1, "maxItems": 3},
        "pet": {"type": ["string", "null"]},
        "address": {"$ref": "#/$defs/address"}
    },
    "required": ["name", "age", "tags", "address"],
    "additionalProperties": false,
    "$defs": {
        "color": {"enum": ["red", "green", "blue"]},
        "address": {"type": "object", "properties": {"city": {"type": "string"}},
                    "required": ["city"], "additionalProperties": false}
    }
}"##;

/// `body` as JSON text with the person `response_format` in it.
fn with_person(mut body: Value) -> String {
    body["response_format"] = json!({"type": "json_schema",
        "json_schema": {"name": "person", "strict": true, "schema": "SCHEMA"}});
    body.to_string().replace("\"SCHEMA\"", PERSON)
}

fn post_raw(c: Client, path: &str, body: &str) -> (u16, Value) {
    let (st, _, text) = c
        .try_request("POST", path, Some(body.as_bytes()), &[])
        .unwrap();
    (st, serde_json::from_str(&text).unwrap())
}

/// A hand check of `person_schema`, properties in declared order included.
fn person_valid(text: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("{e}: {text}"))?;
    let o = v.as_object().ok_or("not an object")?;
    let order = ["name", "age", "tags", "pet", "address"];
    let mut at = 0;
    // serde_json's map is sorted, so check the declared order on the text.
    for k in o.keys() {
        if !order.contains(&k.as_str()) {
            return Err(format!("unexpected key {k}"));
        }
    }
    // A key is its quoted name followed by a colon (a value's quote would be escaped).
    let key_at = |k: &str| {
        let q = format!("\"{k}\"");
        text.match_indices(&q)
            .map(|(i, _)| i)
            .find(|&i| text[i + q.len()..].trim_start().starts_with(':'))
    };
    for k in order {
        if let Some(p) = key_at(k) {
            if p < at {
                return Err(format!("{k} out of order: {text}"));
            }
            at = p;
        }
    }
    let name = o["name"].as_str().ok_or("name")?;
    let n = name.chars().count();
    let age = o["age"].as_i64().ok_or("age")?;
    let tags = o["tags"].as_array().ok_or("tags")?;
    let ok = (1..=24).contains(&n)
        && (0..=120).contains(&age)
        && (1..=3).contains(&tags.len())
        && tags
            .iter()
            .all(|t| ["red", "green", "blue"].contains(&t.as_str().unwrap_or("")))
        && o.get("pet").is_none_or(|p| p.is_null() || p.is_string())
        && o["address"]
            .as_object()
            .is_some_and(|a| a.len() == 1 && a["city"].is_string());
    if ok {
        Ok(())
    } else {
        Err(format!("invalid: {text}"))
    }
}

fn chat(extra: Value) -> Value {
    let mut b = json!({"messages": [{"role": "user", "content": "Describe a person as JSON."}],
                       "max_tokens": 200, "temperature": 0.8});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// The streamed content of a chat completion and its finish reason.
fn stream(c: Client, body: String) -> (String, String) {
    let s = c
        .send("POST", "/v1/chat/completions", Some(body.as_bytes()), &[])
        .unwrap();
    let mut r = std::io::BufReader::new(s);
    assert_eq!(common::read_head(&mut r).unwrap().0, 200);
    let (mut text, mut finish) = (String::new(), String::new());
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let Some(data) = line.trim().strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(ch) = v["choices"].get(0) {
            text.push_str(ch["delta"]["content"].as_str().unwrap_or(""));
            if let Some(f) = ch["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
    }
    (text, finish)
}

#[test]
fn outputs_parse_and_validate() {
    let s = start("valid");
    // json_object, whole.
    let (st, v) = s.post(
        "/v1/chat/completions",
        &chat(json!({"response_format": {"type": "json_object"}, "max_tokens": 400, "temperature": 0})),
    );
    assert_eq!(st, 200, "{v}");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert!(
        serde_json::from_str::<Value>(text).unwrap().is_object(),
        "{text}"
    );
    // text is today's behaviour.
    let (st, _) = s.post(
        "/v1/chat/completions",
        &chat(json!({"response_format": {"type": "text"}, "max_tokens": 4})),
    );
    assert_eq!(st, 200);

    // json_schema: streamed, two sequences at once, several seeds.
    let c = s.client;
    for round in 0..2u64 {
        let handles: Vec<_> = (0..2u64)
            .map(|i| {
                let body = with_person(chat(json!({"stream": true, "seed": 10 * round + i})));
                std::thread::spawn(move || stream(c, body))
            })
            .collect();
        for h in handles {
            let (text, finish) = h.join().unwrap();
            assert_eq!(finish, "stop", "{text}");
            person_valid(&text).unwrap();
        }
    }
    // Completions with n = 2, not streamed: each choice is its own constrained sequence.
    let (st, v) = post_raw(
        c,
        "/v1/completions",
        &with_person(
            json!({"prompt": "A person as JSON:", "max_tokens": 200, "n": 2,
                            "seed": 5, "temperature": 1.0}),
        ),
    );
    assert_eq!(st, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    for ch in choices {
        assert_eq!(ch["finish_reason"], "stop", "{ch}");
        person_valid(ch["text"].as_str().unwrap()).unwrap();
    }
    // A value cut by max_tokens ends with "length" (and is a prefix only).
    let (st, v) = post_raw(
        c,
        "/v1/chat/completions",
        &with_person(chat(json!({"max_tokens": 5, "seed": 1}))),
    );
    assert_eq!(st, 200);
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    // Up to 2 whitespace characters may come before the value.
    let cut = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(cut.trim_start().starts_with('{'), "{cut:?}");
    // A top-level scalar schema.
    let (st, v) = s.post(
        "/v1/chat/completions",
        &chat(
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema":
            {"type": "integer", "minimum": 10, "maximum": 99}}}}),
        ),
    );
    assert_eq!(st, 200);
    let n: i64 = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .trim_start()
        .parse()
        .unwrap();
    assert!((10..=99).contains(&n), "{v}");
}

#[test]
fn unsupported_or_broken_schemas_are_400() {
    let s = start("refused");
    let schema =
        |sc: Value| json!({"type": "json_schema", "json_schema": {"name": "x", "schema": sc}});
    let mut deep = json!({"type": "string"});
    for _ in 0..100 {
        deep = json!({"type": "array", "items": deep});
    }
    let many: serde_json::Map<String, Value> = (0..100)
        .map(|i| (format!("p{i}"), json!({"type": "string"})))
        .collect();
    let cases = [
        (
            schema(json!({"type": "object", "patternProperties": {"a": {}}})),
            "unsupported keyword 'patternProperties'",
        ),
        (
            schema(json!({"type": "string", "pattern": "(a)\\1"})),
            "backreferences are not supported",
        ),
        (
            schema(json!({"type": "string", "format": "color"})),
            "unsupported format 'color'",
        ),
        (
            schema(json!({"type": "integer", "minLength": 1})),
            "does not apply",
        ),
        (
            schema(json!({"type": "integer", "minimum": 5, "maximum": 1})),
            "minimum is above",
        ),
        (schema(json!({"$ref": "#/$defs/nope"})), "does not resolve"),
        (
            schema(
                json!({"$ref": "#/$defs/a", "$defs": {"a": {"type": "object",
            "properties": {"n": {"$ref": "#/$defs/a"}}, "required": ["n"]}}}),
            ),
            "no finite value",
        ),
        (
            schema(json!({"anyOf": [{"type": "object"}, {"type": "object", "properties": {}}]})),
            "start differently",
        ),
        (
            schema(json!({"type": "object", "properties": {}, "required": ["a"]})),
            "not in 'properties'",
        ),
        (schema(deep), "nested"),
        (
            schema(json!({"type": "object", "properties": many})),
            "more than 64",
        ),
        (schema(json!(true)), "boolean schemas"),
        (schema(json!({})), "needs 'type'"),
        (json!({"type": "xml"}), "unsupported response_format type"),
        (
            json!({"type": "json_schema"}),
            "json_schema must be an object",
        ),
        (json!("json"), "must be an object"),
    ];
    for (rf, want) in cases {
        for path in ["/v1/chat/completions", "/v1/completions"] {
            let body = json!({"prompt": "x", "messages": [{"role": "user", "content": "x"}],
                              "response_format": rf});
            let (st, v) = s.post(path, &body);
            assert_error(&v, st, 400);
            assert_eq!(v["error"]["type"], "invalid_request_error");
            assert_eq!(v["error"]["param"], "response_format");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains(want), "{rf}: {msg}");
        }
    }
}
