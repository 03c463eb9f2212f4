//! Chat templates: the model's own `tokenizer.chat_template` rendered the way Hugging Face
//! transformers renders it (Jinja with `trim_blocks` and `lstrip_blocks`, `raise_exception`,
//! `strftime_now`, a `tojson` that writes JSON as Python's `json.dumps` does, Python string
//! methods), and a ChatML fallback for models that ship no template.

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};

/// The template used when a model has none: ChatML, which most instruction-tuned models of the
/// last years either use or tolerate.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Why a template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template source is not valid Jinja.
    #[error("the model's chat template does not compile: {0:#}")]
    Compile(Error),
    /// Rendering failed (including `raise_exception` in the template).
    #[error("chat template error: {0}")]
    Render(String),
}

/// One chat message as the template sees it.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool`, … (passed through).
    pub role: String,
    /// Text content.
    pub content: String,
    /// An assistant turn's tool calls, as OpenAI writes them
    /// (`{"id", "type": "function", "function": {"name", "arguments"}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<serde_json::Value>>,
    /// A `tool` turn's answer to the call with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Whether this is the ChatML fallback rather than the model's own template.
    pub is_fallback: bool,
    bos: String,
    eos: String,
    source: String,
}

impl ChatTemplate {
    /// Compiles `source` (or the ChatML fallback when `None`).
    pub fn new(source: Option<&str>, bos: &str, eos: &str) -> Result<ChatTemplate, TemplateError> {
        let is_fallback = source.is_none();
        let source = source.unwrap_or(CHATML).to_string();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.clone())
            .map_err(TemplateError::Compile)?;
        Ok(ChatTemplate {
            env,
            is_fallback,
            bos: bos.to_string(),
            eos: eos.to_string(),
            source,
        })
    }

    /// The template's Jinja source (`None` for the ChatML fallback).
    pub fn source(&self) -> Option<&str> {
        if self.is_fallback {
            return None;
        }
        Some(&self.source)
    }

    /// Renders `messages`, ending with the assistant's turn opener when `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// Renders `messages` with the `tools` variable set (a list of
    /// `{"type": "function", "function": {...}}`) as transformers does; `None` leaves it undefined.
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError::Render(e.to_string()))?;
        let ctx = minijinja::context! {
            messages => Value::from_serialize(messages),
            tools => tools.map(Value::from_serialize),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        };
        tmpl.render(ctx).map_err(|e| {
            if e.kind() == ErrorKind::InvalidOperation {
                TemplateError::Render(e.detail().unwrap_or("raise_exception").to_string())
            } else {
                TemplateError::Render(format!("{e:#}"))
            }
        })
    }
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    strftime(&format, secs)
}

/// A subset of C `strftime` over a UTC timestamp: the codes chat templates use.
pub fn strftime(format: &str, unix: u64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = (unix / 86400) as i64;
    let sod = unix % 86400;
    let (y, m, d) = civil_from_days(days);
    let weekday = ((days + 3).rem_euclid(7)) as usize; // 1970-01-01 was a Thursday
    let mut out = String::new();
    let mut it = format.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('-') => match it.next() {
                Some('d') => out.push_str(&d.to_string()),
                Some('m') => out.push_str(&m.to_string()),
                Some(o) => {
                    out.push_str("%-");
                    out.push(o)
                }
                None => out.push_str("%-"),
            },
            Some('B') => out.push_str(MONTHS[(m - 1) as usize]),
            Some('b') => out.push_str(&MONTHS[(m - 1) as usize][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{:02}", sod / 3600)),
            Some('M') => out.push_str(&format!("{:02}", sod / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", sod % 60)),
            Some('y') => out.push_str(&format!("{:02}", y % 100)),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o)
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent)`,
/// which separates items with `", "` and keys with `": "` (unlike minijinja's built-in filter,
/// which writes compact JSON and escapes HTML characters).
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, &value, indent, sort_keys.unwrap_or(false), 0)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(
    out: &mut String,
    v: &Value,
    indent: Option<usize>,
    sort: bool,
    depth: usize,
) -> Result<(), Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Some(i) = v.as_i64() {
                out.push_str(&i.to_string());
            } else {
                let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                out.push_str(&py_float(f));
            }
        }
        ValueKind::String => write_json_str(out, v.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(out, item, indent, sort, depth + 1)?;
            }
            if !items.is_empty() {
                newline(out, depth);
            }
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if sort {
                keys.sort();
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                let key = k
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| k.to_string());
                write_json_str(out, &key);
                out.push_str(": ");
                write_json(out, &v.get_item(k)?, indent, sort, depth + 1)?;
            }
            if !keys.is_empty() {
                newline(out, depth);
            }
            out.push('}');
        }
        _ => write_json_str(out, &v.to_string()),
    }
    Ok(())
}

/// A float as Python's `repr` writes it for the common cases.
fn py_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if f == f.trunc() && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden() -> serde_json::Value {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/golden/tokenizer-smollm2.json"
        );
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_golden_renders_exactly() {
        let t = ChatTemplate::new(Some(SMOLLM2), "<|im_start|>", "<|im_end|>").unwrap();
        let g = golden();
        for case in g["chat"].as_array().unwrap() {
            let msgs: Vec<Message> = case["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| Message {
                    role: m["role"].as_str().unwrap().into(),
                    content: m["content"].as_str().unwrap().into(),
                    ..Default::default()
                })
                .collect();
            let agp = case["add_generation_prompt"].as_bool().unwrap();
            assert_eq!(
                t.render(&msgs, agp).unwrap(),
                case["rendered"].as_str().unwrap()
            );
        }
    }

    /// Qwen 2.5's and Qwen 3's own templates (in the tiny Qwen fixtures), against jinja2's
    /// renderings (testdata/golden/logits-tiny-qwen*.json, from scripts/arch-goldens.py):
    /// default system prompt, `namespace`, reversed loops, `split`/`strip` and think blocks.
    #[test]
    fn qwen_templates_render_as_jinja2() {
        for name in ["tiny-qwen2-q8_0", "tiny-qwen3-f16"] {
            let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata");
            let model = std::fs::read(format!("{root}/models/{name}.gguf")).unwrap();
            let gguf = trillim_core::format::gguf::Gguf::parse(&model).unwrap();
            let src = gguf.get_str("tokenizer.chat_template");
            let t = ChatTemplate::new(src, "<|endoftext|>", "<|im_end|>").unwrap();
            let golden = std::fs::read(format!("{root}/golden/logits-{name}.json")).unwrap();
            let golden: serde_json::Value = serde_json::from_slice(&golden).unwrap();
            for case in golden["chat"].as_array().unwrap() {
                let msgs: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
                let agp = case["add_generation_prompt"].as_bool().unwrap();
                assert_eq!(
                    t.render(&msgs, agp).unwrap(),
                    case["rendered"].as_str().unwrap(),
                    "{name}"
                );
            }
        }
    }

    /// Phi-3.5-mini-instruct's template (in the tiny Phi-3 fixture), which the native renderer
    /// refuses, against jinja2's renderings, `eos_token` included.
    #[test]
    fn phi3_template_renders_as_jinja2() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata");
        let model = std::fs::read(format!("{root}/models/tiny-phi3-q8_0.gguf")).unwrap();
        let gguf = trillim_core::format::gguf::Gguf::parse(&model).unwrap();
        let src = gguf.get_str("tokenizer.chat_template");
        let t = ChatTemplate::new(src, "<s>", "<|end|>").unwrap();
        let golden = std::fs::read(format!("{root}/golden/logits-tiny-phi3-q8_0.json")).unwrap();
        let golden: serde_json::Value = serde_json::from_slice(&golden).unwrap();
        for case in golden["chat"].as_array().unwrap() {
            let msgs: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
            let agp = case["add_generation_prompt"].as_bool().unwrap();
            assert_eq!(
                t.render(&msgs, agp).unwrap(),
                case["rendered"].as_str().unwrap()
            );
        }
    }

    /// Gemma 3's template (google/gemma-3-4b-it's tokenizer_config.json, text parts), rendered
    /// by minijinja, against the native renderer, which the firmware uses: a system message
    /// folded into the first turn, `assistant` written `model`, contents trimmed.
    #[test]
    fn gemma3_template_renders_as_the_native_renderer() {
        const GEMMA3: &str = "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- if messages[0]['content'] is string -%}\n        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n    {%- else -%}\n        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n    {%- endif -%}\n    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n    {%- endif -%}\n    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n    {%- else -%}\n        {{ raise_exception(\"Invalid content type\") }}\n    {%- endif -%}\n    {{ '<end_of_turn>\\n' }}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\\n'}}\n{%- endif -%}\n";
        let jinja = ChatTemplate::new(Some(GEMMA3), "<bos>", "<eos>").unwrap();
        let native = trillim_core::chat::ChatTemplate::detect(Some(GEMMA3)).unwrap();
        assert_eq!(native.family, trillim_core::chat::Family::Gemma3);
        let m = |role: &str, content: &str| Message {
            role: role.into(),
            content: content.into(),
            ..Default::default()
        };
        let chats = [
            vec![m("user", "What is 2+2?")],
            vec![
                m("system", " Be terse. "),
                m("user", " Hi \n"),
                m("assistant", "Hello!"),
                m("user", "Bye"),
            ],
            vec![m("user", "Say hi."), m("assistant", " Hi! ")],
            vec![m("system", "Only a system message.")],
        ];
        for (i, chat) in chats.iter().enumerate() {
            for agp in [true, false] {
                let want = jinja.render(chat, agp).unwrap();
                let msgs: Vec<trillim_core::chat::Message<'_>> = chat
                    .iter()
                    .map(|x| trillim_core::chat::Message {
                        role: &x.role,
                        content: &x.content,
                    })
                    .collect();
                let mut out = vec![0u8; 1024];
                let got = native.render(&msgs, agp, "<bos>", None, &mut out).unwrap();
                assert_eq!(got, want, "chat {i}");
            }
        }
        let twice = [m("user", "a"), m("user", "b")];
        let err = jinja.render(&twice, true).unwrap_err().to_string();
        assert!(err.contains("must alternate"), "{err}");
        let msgs = [
            trillim_core::chat::Message {
                role: "user",
                content: "a",
            },
            trillim_core::chat::Message {
                role: "user",
                content: "b",
            },
        ];
        let e = native
            .render(&msgs, true, "<bos>", None, &mut [0u8; 256])
            .unwrap_err();
        assert!(e.to_string().contains("must alternate"), "{e}");
    }

    #[test]
    fn hf_features() {
        let src = "{% if messages|length == 0 %}{{ raise_exception('no messages') }}{% endif %}\
                   {{ bos_token }}{{ messages[0]|tojson }}|{{ messages[0].content.strip() }}|{{ strftime_now('%Y')|length }}";
        let t = ChatTemplate::new(Some(src), "<s>", "</s>").unwrap();
        let m = [Message {
            role: "user".into(),
            content: " hi \"<x>\" ".into(),
            ..Default::default()
        }];
        assert_eq!(
            t.render(&m, true).unwrap(),
            "<s>{\"role\": \"user\", \"content\": \" hi \\\"<x>\\\" \"}|hi \"<x>\"|4"
        );
        let err = t.render(&[], true).unwrap_err().to_string();
        assert!(err.contains("no messages"), "{err}");
        // trim_blocks + lstrip_blocks
        let t = ChatTemplate::new(Some("  {% if true %}\nA\n  {% endif %}\nB"), "", "").unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "A\nB");
    }

    #[test]
    fn chatml_fallback_and_strftime() {
        let t = ChatTemplate::new(None, "", "").unwrap();
        assert!(t.is_fallback);
        let m = [Message {
            role: "user".into(),
            content: "Hi".into(),
            ..Default::default()
        }];
        assert_eq!(
            t.render(&m, true).unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            strftime("%d %B %Y %H:%M:%S %a", 1_700_000_000),
            "14 November 2023 22:13:20 Tue"
        );
        assert_eq!(strftime("%-d %b", 951_782_400), "29 Feb");
    }
}
