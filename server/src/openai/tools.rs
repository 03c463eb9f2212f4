//! OpenAI tool calling: the `tools` / `tool_choice` request fields, and the parsers that turn
//! a model's reply into `tool_calls` (Hermes/Qwen `<tool_call>` blocks, or a Llama 3.x JSON
//! reply).

use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};

use super::schema::{compile, Ordered};
use super::ApiError;
use crate::engines::llm::grammar::Grammar;
use std::sync::Arc;

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
/// key being `arguments` (Hermes) or `parameters` (Llama 3); with several tools to choose
/// from, the name is one of them and the arguments any JSON object. `None` when no call is
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
    let str = |s: &str| Ordered::String(s.to_string());
    let (mut alts, mut names) = (Vec::new(), Vec::new());
    for t in body.tools.unwrap_or_default() {
        let Some(f) = field(&t, "function") else {
            continue;
        };
        let Some(Ordered::String(name)) = field(f, "name") else {
            continue;
        };
        if chosen.is_some_and(|c| c != name) {
            continue;
        }
        names.push(str(name));
        let params = field(f, "parameters")
            .cloned()
            .unwrap_or_else(|| Ordered::Object(vec![("type".into(), str("object"))]));
        alts.push(Ordered::Object(vec![
            ("type".into(), str("object")),
            (
                "properties".into(),
                Ordered::Object(vec![
                    (
                        "name".into(),
                        Ordered::Object(vec![("const".into(), str(name))]),
                    ),
                    (key.into(), params),
                ]),
            ),
            (
                "required".into(),
                Ordered::Array(vec![str("name"), str(key)]),
            ),
            ("additionalProperties".into(), Ordered::Bool(false)),
        ]));
    }
    // Several tools: their call objects all begin `{"name": "`, which a union cannot tell
    // apart at its first byte, so the name is one of theirs and the arguments any object
    // (each tool's own schema still reaches the model through its template).
    let schema = if alts.len() == 1 {
        alts.pop().unwrap_or(Ordered::Null)
    } else {
        Ordered::Object(vec![
            ("type".into(), str("object")),
            (
                "properties".into(),
                Ordered::Object(vec![
                    (
                        "name".into(),
                        Ordered::Object(vec![("enum".into(), Ordered::Array(names))]),
                    ),
                    (
                        key.into(),
                        Ordered::Object(vec![("type".into(), str("object"))]),
                    ),
                ]),
            ),
            (
                "required".into(),
                Ordered::Array(vec![str("name"), str(key)]),
            ),
            ("additionalProperties".into(), Ordered::Bool(false)),
        ])
    };
    let c = compile(&schema)
        .map_err(|e| ApiError::invalid_param("tools", format!("a tool's parameters: {e}")))?;
    Ok(Some(Arc::new(Grammar::Schema(c))))
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
