//! OpenAI tool calling: the `tools` / `tool_choice` request fields, and the parsers that turn
//! a model's reply into `tool_calls` (Hermes/Qwen `<tool_call>` blocks, or a Llama 3.x JSON
//! reply).

use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};

use super::schema::{compile, Ordered};
use super::ApiError;
use crate::engines::llm::grammar::Grammar;
use std::sync::Arc;
use trillim_core::grammar::MAX_CHOICES;

/// What `tool_choice` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// Never call a tool: tools are not shown to the model.
    None,
    /// The model decides.
    Auto,
    /// The model must call some tool.
    Required,
    /// The model must call this tool.
    Named(String),
}

/// The tools of a chat request.
#[derive(Clone, Debug)]
pub struct Tools {
    /// Each `{"type": "function", "function": {name, description?, parameters}}`, as sent.
    pub defs: Vec<Value>,
    /// `tool_choice`.
    pub choice: ToolChoice,
    /// `parallel_tool_calls` (default true).
    pub parallel: bool,
}

impl Tools {
    /// The definitions to show the template, or `None` when no tool may be called.
    pub fn for_template(&self) -> Option<&[Value]> {
        (self.choice != ToolChoice::None && !self.defs.is_empty()).then_some(&self.defs[..])
    }
}

/// Parses `tools`, `tool_choice` and `parallel_tool_calls`; `None` when there are no tools.
pub fn parse(m: &Map<String, Value>) -> Result<Option<Tools>, ApiError> {
    let defs = match m.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(ApiError::invalid_param("tools", "tools must be an array")),
    };
    let mut names: Vec<&str> = Vec::with_capacity(defs.len());
    for (i, d) in defs.iter().enumerate() {
        let p = format!("tools[{i}]");
        let Value::Object(o) = d else {
            return Err(ApiError::invalid_param(&p, "each tool must be an object"));
        };
        if o.get("type").and_then(Value::as_str) != Some("function") {
            return Err(ApiError::invalid_param(
                &format!("{p}.type"),
                "only tools of type 'function' are supported",
            ));
        }
        let Some(Value::Object(f)) = o.get("function") else {
            return Err(ApiError::invalid_param(
                &format!("{p}.function"),
                "a function tool needs a 'function' object",
            ));
        };
        let name = match f.get("name") {
            Some(Value::String(n)) if valid_name(n) => n.as_str(),
            _ => {
                return Err(ApiError::invalid_param(
                    &format!("{p}.function.name"),
                    "a function needs a name of 1 to 64 letters, digits, '_' or '-'",
                ))
            }
        };
        if names.contains(&name) {
            return Err(ApiError::invalid_param(
                &format!("{p}.function.name"),
                format!("the tool name '{name}' is used twice"),
            ));
        }
        names.push(name);
        if let Some(d) = f.get("description") {
            if !d.is_string() {
                return Err(ApiError::invalid_param(
                    &format!("{p}.function.description"),
                    "description must be a string",
                ));
            }
        }
        match f.get("parameters") {
            None => {}
            Some(Value::Object(s))
                if s.get("type").is_none_or(|t| t == "object")
                    && s.get("properties").is_none_or(Value::is_object) => {}
            Some(_) => {
                return Err(ApiError::invalid_param(
                    &format!("{p}.function.parameters"),
                    "parameters must be a JSON schema of type 'object'",
                ))
            }
        }
    }
    let choice = match m.get("tool_choice") {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            _ => {
                return Err(ApiError::invalid_param(
                    "tool_choice",
                    "tool_choice must be 'none', 'auto', 'required' or a function object",
                ))
            }
        },
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            match (o.get("type").and_then(Value::as_str), name) {
                (Some("function"), Some(n)) => ToolChoice::Named(n.to_string()),
                _ => {
                    return Err(ApiError::invalid_param(
                        "tool_choice",
                        "a tool_choice object is {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    ))
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid_param(
                "tool_choice",
                "tool_choice must be a string or an object",
            ))
        }
    };
    match &choice {
        ToolChoice::Named(n) if !names.contains(&n.as_str()) => {
            return Err(ApiError::invalid_param(
                "tool_choice",
                format!("tool_choice names '{n}', which is not among the tools"),
            ))
        }
        ToolChoice::Required if defs.is_empty() => {
            return Err(ApiError::invalid_param(
                "tool_choice",
                "tool_choice 'required' needs tools",
            ))
        }
        _ => {}
    }
    let parallel = match m.get("parallel_tool_calls") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "parallel_tool_calls",
                "parallel_tool_calls must be a boolean",
            ))
        }
    };
    if defs.is_empty() {
        return Ok(None);
    }
    Ok(Some(Tools {
        defs,
        choice,
        parallel,
    }))
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// How a model writes tool calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one or more (Hermes, Qwen).
    Hermes,
    /// The whole reply is `{"name": ..., "parameters": {...}}`, perhaps after
    /// `<|python_tag|>` (Llama 3.x).
    Llama3Json,
}

impl Format {
    /// Hermes when the chat template mentions `<tool_call>`, else Llama 3 JSON.
    pub fn of_template(source: Option<&str>) -> Format {
        match source {
            Some(s) if s.contains("<tool_call>") => Format::Hermes,
            _ => Format::Llama3Json,
        }
    }
}

/// The grammar that forces a call when `tool_choice` is `required` or names a function: one
/// JSON object `{"name": <a chosen name>, "<arguments key>": <its parameters schema>}`, the
/// key being `arguments` (Hermes) or `parameters` (Llama 3). With several tools to choose
/// from, the name written picks the tool whose schema the arguments then follow (a
/// discriminated union); past the schema machine's limits (more than 64 tools, a table too
/// large) the arguments are any JSON object and the name one of theirs (any string past 64). `None` when no call is
/// forced.
pub fn forced_grammar(
    body: &[u8],
    tools: &Tools,
    format: Format,
) -> Result<Option<Arc<Grammar>>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Body {
        tools: Option<Vec<Ordered>>,
    }
    let chosen = match &tools.choice {
        ToolChoice::None | ToolChoice::Auto => return Ok(None),
        ToolChoice::Required => None,
        ToolChoice::Named(n) => Some(n.as_str()),
    };
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_param("tools", e.to_string()))?;
    let key = match format {
        Format::Hermes => "arguments",
        Format::Llama3Json => "parameters",
    };
    let bad = |name: &str, e: String| {
        ApiError::invalid_param("tools", format!("the parameters of '{name}': {e}"))
    };
    // Each tool: its name and parameters.
    let mut calls: Vec<(&str, Ordered)> = Vec::new();
    let defs = body.tools.unwrap_or_default();
    for t in &defs {
        let Some(f) = field(t, "function") else {
            continue;
        };
        let Some(Ordered::String(name)) = field(f, "name") else {
            continue;
        };
        if chosen.is_some_and(|c| c != name) {
            continue;
        }
        let params = field(f, "parameters")
            .cloned()
            .unwrap_or_else(|| object(vec![("type", string("object"))]));
        calls.push((name, params));
    }
    // One tool's call object at the document's root, with its `$ref`s resolving there.
    let alone = |(name, params): &(&str, Ordered)| {
        let at = format!("/properties/{key}");
        compile(&call_schema(name, key, rebase_refs(params, &at))).map_err(|e| bad(name, e))
    };
    let c = match &calls[..] {
        [] => return Ok(None),
        [one] => Some(alone(one)?),
        several => {
            let objects = several
                .iter()
                .enumerate()
                .map(|(i, (name, params))| {
                    let at = format!("/anyOf/{i}/properties/{key}");
                    call_schema(name, key, rebase_refs(params, &at))
                })
                .collect();
            match compile(&object(vec![("anyOf", Ordered::Array(objects))])) {
                Ok(c) => Some(c),
                // A bad tool schema is named; if each compiles alone, the union is past the
                // machine's limits.
                Err(_) => {
                    for t in several {
                        alone(t)?;
                    }
                    None
                }
            }
        }
    };
    let names: Vec<Ordered> = calls.iter().map(|(n, _)| string(n)).collect();
    let c = match c {
        Some(c) => c,
        None => {
            let names = if names.len() <= MAX_CHOICES {
                object(vec![("enum", Ordered::Array(names))])
            } else {
                object(vec![("type", string("string"))])
            };
            let any = object(vec![("type", string("object"))]);
            compile(&object(vec![
                ("type", string("object")),
                ("properties", object(vec![("name", names), (key, any)])),
                (
                    "required",
                    Ordered::Array(vec![string("name"), string(key)]),
                ),
                ("additionalProperties", Ordered::Bool(false)),
            ]))
            .map_err(|e| ApiError::invalid_param("tools", e))?
        }
    };
    Ok(Some(Arc::new(Grammar::Schema(c))))
}

/// `schema` with its local `$ref`s (`#…`, which point into the parameters schema) pointing
/// into it at `at` in the document it is placed in. Only schema positions are visited, so a
/// property or an enum value that happens to be called `$ref` stays as it is.
fn rebase_refs(schema: &Ordered, at: &str) -> Ordered {
    let Ordered::Object(m) = schema else {
        return schema.clone();
    };
    let each = |v: &Ordered, f: &dyn Fn(&Ordered) -> Ordered| match v {
        Ordered::Object(m) => Ordered::Object(m.iter().map(|(k, v)| (k.clone(), f(v))).collect()),
        Ordered::Array(a) => Ordered::Array(a.iter().map(f).collect()),
        v => v.clone(),
    };
    let sub = |v: &Ordered| rebase_refs(v, at);
    Ordered::Object(
        m.iter()
            .map(|(k, v)| {
                let v = match (k.as_str(), v) {
                    ("$ref", Ordered::String(r)) => match r.strip_prefix('#') {
                        Some(ptr) => Ordered::String(format!("#{at}{ptr}")),
                        None => v.clone(),
                    },
                    // Maps and lists of schemas.
                    (
                        "properties" | "patternProperties" | "$defs" | "definitions" | "anyOf"
                        | "oneOf" | "allOf" | "prefixItems",
                        _,
                    ) => each(v, &sub),
                    // One schema (`items` may also be a list of them).
                    ("items", Ordered::Array(_)) => each(v, &sub),
                    ("items" | "additionalProperties" | "not" | "contains", _) => sub(v),
                    _ => v.clone(),
                };
                (k.clone(), v)
            })
            .collect(),
    )
}

/// `{"name": <const name>, <key>: <params>}`, both required, nothing else.
fn call_schema(name: &str, key: &str, params: Ordered) -> Ordered {
    object(vec![
        ("type", string("object")),
        (
            "properties",
            object(vec![
                ("name", object(vec![("const", string(name))])),
                (key, params),
            ]),
        ),
        (
            "required",
            Ordered::Array(vec![string("name"), string(key)]),
        ),
        ("additionalProperties", Ordered::Bool(false)),
    ])
}

fn string(s: &str) -> Ordered {
    Ordered::String(s.to_string())
}

fn object(fields: Vec<(&str, Ordered)>) -> Ordered {
    Ordered::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn field<'a>(o: &'a Ordered, k: &str) -> Option<&'a Ordered> {
    match o {
        Ordered::Object(m) => m.iter().find(|(n, _)| n == k).map(|(_, v)| v),
        _ => None,
    }
}

/// One parsed call.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub name: String,
    /// The arguments as a JSON object.
    pub arguments: Value,
}

impl Call {
    /// The OpenAI `tool_calls` entry, with a fresh id.
    pub fn to_openai(&self) -> Value {
        json!({
            "id": call_id(),
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments.to_string()},
        })
    }
}

/// A fresh `call_…` id, unique within the process and unlikely to repeat across runs.
pub fn call_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "call_{:016x}{:08x}",
        t ^ (n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        n as u32
    )
}

/// A reply split into the text before the calls and the calls; `None` when the reply holds no
/// well-formed call naming one of `names` (it is then a plain answer).
pub fn parse_reply(format: Format, text: &str, names: &[&str]) -> Option<(String, Vec<Call>)> {
    let (before, calls) = match format {
        // A forced Hermes call: the prompt ends with the opener, the reply is the JSON.
        Format::Hermes if !text.contains("<tool_call>") => {
            (String::new(), vec![call_object(text.trim())?])
        }
        Format::Hermes => hermes(text)?,
        Format::Llama3Json => (String::new(), vec![llama3(text)?]),
    };
    if calls.is_empty() || calls.iter().any(|c| !names.contains(&c.name.as_str())) {
        return None;
    }
    Some((before, calls))
}

fn hermes(text: &str) -> Option<(String, Vec<Call>)> {
    const OPEN: &str = "<tool_call>";
    const CLOSE: &str = "</tool_call>";
    let start = text.find(OPEN)?;
    let before = text[..start].trim_end().to_string();
    let mut rest = &text[start..];
    let mut calls = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let body = rest.strip_prefix(OPEN)?;
        let end = body.find(CLOSE)?;
        calls.push(call_object(body[..end].trim())?);
        rest = &body[end + CLOSE.len()..];
    }
    Some((before, calls))
}

fn llama3(text: &str) -> Option<Call> {
    let t = text.trim();
    let t = t.strip_prefix("<|python_tag|>").unwrap_or(t).trim();
    call_object(t)
}

/// `{"name": ..., "arguments" | "parameters": {...}}` (the arguments also as a JSON string).
pub(super) fn call_object(s: &str) -> Option<Call> {
    let Value::Object(mut o) = serde_json::from_str::<Value>(s).ok()? else {
        return None;
    };
    let Some(Value::String(name)) = o.remove("name") else {
        return None;
    };
    let args = match o.remove("arguments") {
        Some(a) => Some(a),
        None => o.remove("parameters"),
    };
    let arguments = match args {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        // Some models write the arguments as a JSON string, as the OpenAI API does.
        Some(Value::String(a)) => match serde_json::from_str::<Value>(&a).ok()? {
            v @ Value::Object(_) => v,
            _ => return None,
        },
        Some(_) => return None,
    };
    Some(Call { name, arguments })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn weather() -> Value {
        json!({"type": "function", "function": {"name": "get_weather", "description": "d",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
    }

    #[test]
    fn parses_tools_and_choices() {
        let t = parse(&obj(json!({"tools": [weather()], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})))
            .unwrap()
            .unwrap();
        assert_eq!(t.choice, ToolChoice::Named("get_weather".into()));
        assert!(t.parallel);
        assert!(t.for_template().is_some());
        let t = parse(&obj(json!({"tools": [weather()], "tool_choice": "none"})))
            .unwrap()
            .unwrap();
        assert!(t.for_template().is_none());
        assert!(parse(&obj(json!({}))).unwrap().is_none());
    }

    #[test]
    fn bad_tools_name_the_field() {
        let cases = [
            (
                json!({"tools": [{"type": "function", "function": {}}]}),
                "tools[0].function.name",
            ),
            (
                json!({"tools": [weather(), weather()]}),
                "tools[1].function.name",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]}),
                "tools[0].function.parameters",
            ),
            (json!({"tools": [{"type": "retrieval"}]}), "tools[0].type"),
            (
                json!({"tools": [weather()], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
                "tool_choice",
            ),
            (
                json!({"tools": [weather()], "tool_choice": "sometimes"}),
                "tool_choice",
            ),
            (json!({"tool_choice": "required"}), "tool_choice"),
            (
                json!({"tools": [weather()], "parallel_tool_calls": 1}),
                "parallel_tool_calls",
            ),
            (json!({"tools": {}}), "tools"),
        ];
        for (body, param) in cases {
            let e = parse(&obj(body.clone())).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
    }

    /// Whether the grammar forced for `body` accepts `text`.
    fn forced_accepts(body: &Value, format: Format, text: &str) -> bool {
        use trillim_core::grammar::{ByteMachine, SchemaMachine};
        let t = parse(&obj(body.clone())).unwrap().unwrap();
        let g = forced_grammar(body.to_string().as_bytes(), &t, format)
            .unwrap()
            .unwrap();
        let Grammar::Schema(c) = &*g else {
            panic!("a schema grammar")
        };
        let s = c.schema();
        let mut m = SchemaMachine::new(&s);
        m.push_all(text.as_bytes()) && m.is_accepting()
    }

    #[test]
    fn required_holds_each_tool_to_its_own_parameters() {
        // A pydantic-style tool whose parameters use `$defs` (from a property whose name is
        // a keyword), beside a plain one. `json!` sorts keys: the properties are in this order.
        let order = json!({"type": "function", "function": {"name": "order", "parameters": {
            "type": "object", "properties": {"default": {"$ref": "#/$defs/Item"},
                "note": {"type": "integer"}},
            "required": ["default"], "additionalProperties": false,
            "$defs": {"Item": {"type": "object", "properties": {"sku": {"type": "string",
                "pattern": "^[A-Z]{3}$"}}, "required": ["sku"], "additionalProperties": false}}}}});
        let body = json!({"tools": [weather(), order], "tool_choice": "required"});
        for (text, ok) in [
            (
                r#"{"name":"get_weather","arguments":{"city":"Oslo"}}"#,
                true,
            ),
            (
                r#"{"name":"order","arguments":{"default":{"sku":"ABC"}}}"#,
                true,
            ),
            (
                r#"{"name":"order","arguments":{"default":{"sku":"ABC"},"note":3}}"#,
                true,
            ),
            (r#"{"name":"order","arguments":{"note":3}}"#, false),
            (r#"{"name":"order","arguments":{"city":"Oslo"}}"#, false),
            (
                r#"{"name":"order","arguments":{"default":{"sku":"abc"}}}"#,
                false,
            ),
            (
                r#"{"name":"get_weather","arguments":{"default":{}}}"#,
                false,
            ),
            (r#"{"name":"other","arguments":{}}"#, false),
        ] {
            assert_eq!(forced_accepts(&body, Format::Hermes, text), ok, "{text}");
        }
        // The same `$defs` under one named tool, in Llama 3's key.
        let named = json!({"tools": body["tools"], "tool_choice": {"type": "function", "function": {"name": "order"}}});
        assert!(forced_accepts(
            &named,
            Format::Llama3Json,
            r#"{"name":"order","parameters":{"default":{"sku":"XYZ"}}}"#
        ));
        // A bad schema is named, with `required` too.
        let bad = json!({"type": "function", "function": {"name": "bad", "parameters": {
            "type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}}}});
        let body = json!({"tools": [weather(), bad], "tool_choice": "required"});
        let t = parse(&obj(body.clone())).unwrap().unwrap();
        let e = forced_grammar(body.to_string().as_bytes(), &t, Format::Hermes).unwrap_err();
        assert!(e.message.contains("'bad'"), "{}", e.message);
    }

    #[test]
    fn more_tools_than_the_machine_holds_still_force_a_call() {
        let tools: Vec<Value> = (0..70)
            .map(|i| {
                json!({"type": "function", "function": {"name": format!("f{i}"),
                "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}})
            })
            .collect();
        let body = json!({"tools": tools, "tool_choice": "required"});
        // Past 64 names the name is free too; the call shape still holds.
        assert!(forced_accepts(
            &body,
            Format::Hermes,
            r#"{"name":"f69","arguments":{"y":"any"}}"#
        ));
        assert!(!forced_accepts(
            &body,
            Format::Hermes,
            r#"{"arguments":{}}"#
        ));
    }

    #[test]
    fn hermes_calls() {
        let names = ["get_weather", "time"];
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>{\"name\": \"time\", \"arguments\": \"{}\"}</tool_call>";
        let (before, calls) = parse_reply(Format::Hermes, text, &names).unwrap();
        assert_eq!(before, "Let me check.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].arguments, json!({"city": "Paris"}));
        assert_eq!(calls[1].name, "time");
        let v = calls[0].to_openai();
        assert!(v["id"].as_str().unwrap().starts_with("call_"));
        assert_ne!(v["id"], calls[0].to_openai()["id"]);
        assert_eq!(v["function"]["arguments"], "{\"city\":\"Paris\"}");
    }

    #[test]
    fn llama3_calls() {
        let names = ["get_weather"];
        for text in [
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
            "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
            " {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n",
        ] {
            let (before, calls) = parse_reply(Format::Llama3Json, text, &names).unwrap();
            assert_eq!(before, "");
            assert_eq!(calls[0].arguments, json!({"city": "Oslo"}), "{text}");
        }
    }

    #[test]
    fn malformed_is_plain_text() {
        let names = ["get_weather"];
        for (f, text) in [
            (Format::Hermes, "no call here"),
            (
                Format::Hermes,
                "<tool_call>{\"name\": \"get_weather\", \"arguments\": {",
            ),
            (
                Format::Hermes,
                "<tool_call>{\"name\": \"get_weather\"}</tool_call> trailing",
            ),
            (
                Format::Hermes,
                "<tool_call>{\"name\": \"other\", \"arguments\": {}}</tool_call>",
            ),
            (Format::Hermes, "<tool_call>[1]</tool_call>"),
            (Format::Llama3Json, "The weather is nice."),
            (
                Format::Llama3Json,
                "{\"name\": \"get_weather\", \"parameters\": 3}",
            ),
            (Format::Llama3Json, "{\"parameters\": {}}"),
        ] {
            assert!(parse_reply(f, text, &names).is_none(), "{text}");
        }
    }
}
