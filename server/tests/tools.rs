//! Tool calls end to end on SmolLM2: a named `tool_choice` answers with a call whose
//! arguments validate, a conversation with a `tool` turn renders and answers, and bad tool
//! definitions are 400s naming the field. Streamed, a call arrives as its header and then its
//! arguments in fragments; a plain answer streams token by token.

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
    // `required` among several tools: a call to one of them, its arguments valid against that
    // tool's own schema.
    let time = json!({"type": "function", "function": {"name": "get_time", "description": "Time in a city",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 8}},
            "required": ["zone"], "additionalProperties": false}}});
    for seed in 0..4 {
        let (st, v) = s.post(
            "/v1/chat/completions",
            &json!({"messages": [user], "tools": [weather(), time], "max_tokens": 120,
                "seed": seed, "tool_choice": "required"}),
        );
        assert_eq!(st, 200, "{v}");
        let ch = &v["choices"][0];
        assert_eq!(ch["finish_reason"], "tool_calls", "{v}");
        let f = &ch["message"]["tool_calls"][0]["function"];
        assert!(
            ["get_weather", "get_time"].contains(&f["name"].as_str().unwrap()),
            "{v}"
        );
        let args: Value = serde_json::from_str(f["arguments"].as_str().unwrap()).unwrap();
        let o = args.as_object().unwrap();
        if f["name"] == "get_weather" {
            assert_eq!(o.len(), 2, "{v}");
            assert!((1..=7).contains(&o["days"].as_i64().unwrap()), "{v}");
        } else {
            assert_eq!(o.len(), 1, "{v}");
            assert!(o["zone"].as_str().unwrap().chars().count() <= 8, "{v}");
        }
    }
    // Streamed: the header (index, id, type, name, empty arguments) first, then the arguments
    // in fragments that join to the non-streamed reply's for the same seed.
    let forced = json!({"messages": [user], "tools": [weather()], "max_tokens": 120, "seed": 1,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}});
    let (st, whole) = s.post("/v1/chat/completions", &forced);
    assert_eq!(st, 200, "{whole}");
    let whole_args: Value = serde_json::from_str(
        whole["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let mut body = forced.clone();
    body["stream"] = json!(true);
    let chunks = stream(&s, &body);
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert!(deltas.len() >= 3, "{chunks:?}");
    let head = deltas[0];
    assert_eq!(head["index"], 0);
    assert!(head["id"].as_str().unwrap().starts_with("call_"), "{head}");
    assert_eq!(head["type"], "function");
    assert_eq!(head["function"]["name"], "get_weather");
    assert_eq!(head["function"]["arguments"], "");
    let mut args = String::new();
    for d in &deltas[1..] {
        assert_eq!(d["index"], 0, "{d}");
        assert!(
            d.get("id").is_none() && d["function"].get("name").is_none(),
            "{d}"
        );
        args.push_str(d["function"]["arguments"].as_str().unwrap());
    }
    let args: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(args, whole_args);
    for c in &chunks {
        let delta = &c["choices"][0]["delta"];
        assert!(
            delta.get("content").is_none_or(|v| v.is_null() || v == ""),
            "{c}"
        );
    }
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("tool_calls")]);
    assert!(chunks.last().unwrap()["choices"][0]["finish_reason"] == "tool_calls");

    // With tools but a plain answer, the text streams token by token, as without tools.
    let auto = json!({"messages": [user], "tools": [weather()], "max_tokens": 24,
        "temperature": 0});
    let (st, whole) = s.post("/v1/chat/completions", &auto);
    assert_eq!(st, 200, "{whole}");
    let mut body = auto.clone();
    body["stream"] = json!(true);
    let chunks = stream(&s, &body);
    let texts: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|t| !t.is_empty())
        .collect();
    assert!(texts.len() >= 10, "{chunks:?}");
    assert_eq!(
        texts.concat(),
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );

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

/// The `data:` chunks of a streamed request, `[DONE]` checked and left out.
fn stream(s: &common::Server, body: &Value) -> Vec<Value> {
    let (st, _, text) = s
        .try_request(
            "POST",
            "/v1/chat/completions",
            Some(body.to_string().as_bytes()),
            &[],
        )
        .unwrap();
    assert_eq!(st, 200, "{text}");
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}
