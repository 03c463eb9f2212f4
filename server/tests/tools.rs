//! Tool calls end to end on SmolLM2: a named `tool_choice` answers with a call whose
//! arguments validate, a conversation with a `tool` turn renders and answers, and bad tool
//! definitions are 400s naming the field.

mod common;

use common::assert_error;
use serde_json::{json, Value};

fn weather() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
            "days": {"type": "integer", "minimum": 1, "maximum": 7}},
            "required": ["city", "days"], "additionalProperties": false}}})
}

#[test]
fn tool_calls() {
    let home = common::store_with("tools", "org/smol", &trillim_tests::smollm2_path());
    let s = common::serve(home, &["org/smol", "--threads", "2", "--ctx", "1024"], &[]);
    let user = json!({"role": "user", "content": "What is the weather in Paris?"});
    for seed in 0..3 {
        let (st, v) = s.post(
            "/v1/chat/completions",
            &json!({"messages": [user], "tools": [weather()], "max_tokens": 120, "seed": seed,
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
        );
        assert_eq!(st, 200, "{v}");
        let ch = &v["choices"][0];
        assert_eq!(ch["finish_reason"], "tool_calls", "{v}");
        assert!(ch["message"]["content"].is_null(), "{v}");
        let call = &ch["message"]["tool_calls"][0];
        assert!(call["id"].as_str().unwrap().starts_with("call_"), "{v}");
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        let o = args.as_object().unwrap();
        assert_eq!(o.len(), 2, "{args}");
        assert!(o["city"].as_str().unwrap().chars().count() <= 20, "{args}");
        assert!((1..=7).contains(&o["days"].as_i64().unwrap()), "{args}");
    }
    // Streamed: no content, one `tool_calls` delta with the whole call, then `tool_calls`.
    let body = json!({"messages": [user], "tools": [weather()], "max_tokens": 120, "seed": 1,
        "stream": true, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}});
    let (st, _, text) = s
        .try_request(
            "POST",
            "/v1/chat/completions",
            Some(body.to_string().as_bytes()),
            &[],
        )
        .unwrap();
    assert_eq!(st, 200, "{text}");
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let mut calls = Vec::new();
    let mut finish = Value::Null;
    for c in &chunks {
        let ch = &c["choices"][0];
        assert!(
            ch["delta"]
                .get("content")
                .is_none_or(|v| v.is_null() || v == ""),
            "{c}"
        );
        if let Some(t) = ch["delta"]["tool_calls"].as_array() {
            calls.extend(t.iter().cloned());
        }
        if !ch["finish_reason"].is_null() {
            finish = ch["finish_reason"].clone();
        }
    }
    assert_eq!(finish, "tool_calls", "{text}");
    assert_eq!(calls.len(), 1, "{text}");
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!((1..=7).contains(&args["days"].as_i64().unwrap()), "{args}");

    // A conversation carrying the call and its result renders and is answered.
    let (st, v) = s.post(
        "/v1/chat/completions",
        &json!({"messages": [user,
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"days\":1}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"}],
            "tools": [weather()], "max_tokens": 16, "temperature": 0}),
    );
    assert_eq!(st, 200, "{v}");
    assert!(
        v["choices"][0]["message"]["content"].is_string()
            || v["choices"][0]["message"]["tool_calls"].is_array(),
        "{v}"
    );
    // tool_choice none: plain text.
    let (st, v) = s.post(
        "/v1/chat/completions",
        &json!({"messages": [user], "tools": [weather()], "tool_choice": "none", "max_tokens": 4}),
    );
    assert_eq!(st, 200, "{v}");
    assert!(
        v["choices"][0]["message"].get("tool_calls").is_none(),
        "{v}"
    );
    // Bad definitions.
    for (extra, param) in [
        (
            json!({"tools": [{"type": "function", "function": {"description": "x"}}]}),
            "tools[0].function.name",
        ),
        (
            json!({"tools": [weather(), weather()]}),
            "tools[1].function.name",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]}),
            "tools[0].function.parameters",
        ),
        (
            json!({"tools": [weather()], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].tool_call_id",
        ),
    ] {
        let mut b = json!({"messages": [user], "max_tokens": 4});
        for (k, x) in extra.as_object().unwrap() {
            b[k] = x.clone();
        }
        let (st, v) = s.post("/v1/chat/completions", &b);
        assert_error(&v, st, 400);
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert_eq!(v["error"]["param"], param, "{v}");
    }
}
