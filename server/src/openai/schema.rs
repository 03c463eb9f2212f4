//! `response_format`: `text`, `json_object`, or `json_schema`, whose schema is compiled here
//! into the node table the engine masks with ([`trillim_core::grammar::SchemaBuilder`]).
//! The body is read again in document order, so object properties keep the order they were
//! declared in (the generated object follows it). Every keyword the compiler does not
//! enforce is refused with a 400 naming it, rather than silently ignored.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use trillim_core::grammar::{Entry, Node, SchemaBuilder, SchemaError};

use super::error::ApiError;
use super::pattern;
use crate::engines::llm::grammar::{CompiledSchema, Grammar};

/// Table rows and pool bytes one schema may use.
const MAX_ENTRIES: usize = 4096;
const MAX_POOL: usize = 4 << 20;
/// Different `pattern`/`format`/length combinations in one schema (each is determinized).
const MAX_PATTERNS: usize = 32;
/// Nesting of schema objects inside one another (not counting `$ref`s).
const MAX_NESTING: usize = 64;

/// A JSON value whose objects keep their keys in document order.
#[derive(Debug, Clone, PartialEq)]
pub enum Ordered {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Ordered>),
    Object(Vec<(String, Ordered)>),
}

impl Ordered {
    fn get(&self, k: &str) -> Option<&Ordered> {
        match self {
            Ordered::Object(m) => m.iter().find(|(n, _)| n == k).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Ordered::String(s) => Some(s),
            _ => None,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Ordered::Null => Value::Null,
            Ordered::Bool(b) => Value::Bool(*b),
            Ordered::Number(n) => Value::Number(n.clone()),
            Ordered::String(s) => Value::String(s.clone()),
            Ordered::Array(a) => Value::Array(a.iter().map(Ordered::to_json).collect()),
            Ordered::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// Compact JSON text, objects in document order.
    fn text(&self, out: &mut String) {
        match self {
            Ordered::Array(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.text(out);
                }
                out.push(']');
            }
            Ordered::Object(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    v.text(out);
                }
                out.push('}');
            }
            v => out.push_str(&v.to_json().to_string()),
        }
    }

    /// A JSON pointer (`/a/b/0`, `~0`/`~1` escapes).
    fn pointer(&self, p: &str) -> Option<&Ordered> {
        if p.is_empty() {
            return Some(self);
        }
        let mut v = self;
        for part in p.strip_prefix('/')?.split('/') {
            let part = part.replace("~1", "/").replace("~0", "~");
            v = match v {
                Ordered::Object(_) => v.get(&part)?,
                Ordered::Array(a) => a.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ordered, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Ordered, E> {
                Ok(Ordered::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Ordered, E> {
                Ok(Ordered::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Ordered, E> {
                Ok(Ordered::Number(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Ordered, E> {
                Ok(serde_json::Number::from_f64(n).map_or(Ordered::Null, Ordered::Number))
            }
            fn visit_str<E>(self, s: &str) -> Result<Ordered, E> {
                Ok(Ordered::String(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Ordered, E> {
                Ok(Ordered::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Ordered::Array(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut v: Vec<(String, Ordered)> = Vec::new();
                while let Some((k, x)) = a.next_entry::<String, Ordered>()? {
                    // A repeated key: the last one wins, as for serde_json's maps.
                    v.retain(|(n, _)| *n != k);
                    v.push((k, x));
                }
                Ok(Ordered::Object(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(serde::Deserialize)]
struct Body {
    response_format: Option<Ordered>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::invalid_param("response_format", message)
}

/// The grammar a request body's `response_format` asks for (`None`: plain text).
pub fn response_format(body: &[u8]) -> Result<Option<Arc<Grammar>>, ApiError> {
    let body: Body =
        serde_json::from_slice(body).map_err(|e| bad(format!("response_format: {e}")))?;
    let rf = match body.response_format {
        None | Some(Ordered::Null) => return Ok(None),
        Some(rf @ Ordered::Object(_)) => rf,
        Some(_) => return Err(bad("response_format must be an object")),
    };
    match rf.get("type").and_then(Ordered::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Arc::new(Grammar::JsonObject))),
        Some("json_schema") => {
            let js = match rf.get("json_schema") {
                Some(o @ Ordered::Object(_)) => o,
                _ => {
                    return Err(bad(
                        "response_format.json_schema must be an object with a 'schema'",
                    ))
                }
            };
            if let Some(n) = js.get("name") {
                if n.as_str().is_none() {
                    return Err(bad("response_format.json_schema.name must be a string"));
                }
            }
            if let Some(s) = js.get("strict") {
                if !matches!(s, Ordered::Bool(_) | Ordered::Null) {
                    return Err(bad("response_format.json_schema.strict must be a boolean"));
                }
            }
            let schema = js
                .get("schema")
                .ok_or_else(|| bad("response_format.json_schema.schema is required"))?;
            let c =
                compile(schema).map_err(|e| bad(format!("response_format.json_schema: {e}")))?;
            Ok(Some(Arc::new(Grammar::Schema(c))))
        }
        Some(t) => Err(bad(format!(
            "unsupported response_format type '{t}': use text, json_object or json_schema"
        ))),
        None => Err(bad("response_format.type is required")),
    }
}

/// Keywords that only annotate (accepted, no effect on the output).
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "$schema",
    "$id",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$defs",
    "definitions",
];

/// Keywords the compiler enforces, by the type they belong to.
const GENERAL: &[&str] = &["type", "enum", "const", "anyOf", "oneOf", "$ref"];
const OBJECT: &[&str] = &["properties", "required", "additionalProperties"];
const ARRAY: &[&str] = &["items", "minItems", "maxItems"];
const STRING: &[&str] = &["minLength", "maxLength", "pattern", "format"];
const NUMBER: &[&str] = &[
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];

/// Compiles a JSON schema.
pub fn compile(schema: &Ordered) -> Result<CompiledSchema, String> {
    let mut entries = vec![Entry::Alt(0); MAX_ENTRIES];
    let mut bytes = vec![0u8; MAX_POOL];
    let (n, nb, root) = {
        let mut c = Compiler {
            root: schema,
            b: SchemaBuilder::new(&mut entries, &mut bytes),
            refs: HashMap::new(),
            patterns: HashMap::new(),
        };
        let root = c.node(schema, "#", 0)?;
        let (n, nb) = (c.b.len(), c.b.bytes_used());
        c.b.finish(root).map_err(|e| e.to_string())?;
        (n, nb, root)
    };
    entries.truncate(n);
    entries.shrink_to_fit();
    bytes.truncate(nb);
    bytes.shrink_to_fit();
    Ok(CompiledSchema {
        entries,
        bytes,
        root,
    })
}

struct Compiler<'r, 'a> {
    root: &'r Ordered,
    b: SchemaBuilder<'a>,
    refs: HashMap<String, u16>,
    /// Pattern nodes by (pattern, format, minLength, maxLength): one table each.
    patterns: HashMap<(Option<String>, Option<String>, u32, u32), u16>,
}

fn uint(v: Option<&Ordered>, k: &str, at: &str) -> Result<Option<u32>, String> {
    match v {
        None => Ok(None),
        Some(Ordered::Number(n)) => n
            .as_u64()
            .map(|x| x.min(u32::MAX as u64 - 1) as u32)
            .map(Some)
            .ok_or_else(|| format!("'{k}' must be a non-negative integer at {at}")),
        Some(_) => Err(format!("'{k}' must be a non-negative integer at {at}")),
    }
}

fn num(v: Option<&Ordered>, k: &str, at: &str) -> Result<Option<f64>, String> {
    match v {
        None => Ok(None),
        Some(Ordered::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(format!("'{k}' must be a number at {at}")),
    }
}

/// `minimum`/`maximum` with the exclusive forms folded in: an exclusive bound becomes the
/// next value a double can hold (the numbers compared are doubles); the draft-4 boolean
/// form makes `minimum`/`maximum` themselves exclusive.
fn number_bounds(s: &Ordered, at: &str) -> Result<(f64, f64), String> {
    let mut min = num(s.get("minimum"), "minimum", at)?.unwrap_or(f64::NEG_INFINITY);
    let mut max = num(s.get("maximum"), "maximum", at)?.unwrap_or(f64::INFINITY);
    for (k, up) in [("exclusiveMinimum", true), ("exclusiveMaximum", false)] {
        let bound = match s.get(k) {
            None | Some(Ordered::Bool(false)) => continue,
            Some(Ordered::Bool(true)) => {
                let b = if up { min } else { max };
                if !b.is_finite() {
                    return Err(format!(
                        "'{k}': true needs a {} at {at}",
                        &k[9..].to_lowercase()
                    ));
                }
                b
            }
            Some(Ordered::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
            Some(_) => return Err(format!("'{k}' must be a number at {at}")),
        };
        if up {
            min = min.max(bound.next_up());
        } else {
            max = max.min(bound.next_down());
        }
    }
    Ok((min, max))
}

/// A `multipleOf` written `text` as (integer multiple, fraction digits): the step is
/// `multiple × 10^-digits`. For an integer the step becomes the smallest integer step with
/// the same multiples. `None` when it is not positive or too fine or too large.
fn step(text: &str, integer: bool) -> Option<(u64, u8)> {
    let (mant, exp) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (whole, frac) = mant.split_once('.').unwrap_or((mant, ""));
    if whole.starts_with('-') || !(whole.chars().chain(frac.chars())).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = format!("{whole}{frac}");
    let mut decimals = frac.len() as i32 - exp;
    while decimals > 0 && digits.ends_with('0') {
        digits.pop();
        decimals -= 1;
    }
    while decimals < 0 {
        digits.push('0');
        decimals += 1;
    }
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() || digits.len() > 18 || decimals > 15 {
        return None;
    }
    let multiple: u64 = digits.parse().ok()?;
    if !integer {
        return Some((multiple, decimals as u8));
    }
    // Integers that are multiples of m / 10^d are the multiples of m / gcd(m, 10^d).
    let pow = 10u64.pow(decimals as u32);
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    Some((multiple / gcd(multiple, pow), 0))
}

fn built(e: SchemaError, at: &str) -> String {
    format!("{e} at {at}")
}

impl Compiler<'_, '_> {
    fn node(&mut self, s: &Ordered, at: &str, nesting: usize) -> Result<u16, String> {
        if nesting > MAX_NESTING {
            return Err(format!(
                "the schema is nested more than {MAX_NESTING} levels deep"
            ));
        }
        let m = match s {
            Ordered::Object(m) => m,
            Ordered::Bool(_) => {
                return Err(format!(
                    "boolean schemas are not supported (at {at}): give a type"
                ))
            }
            _ => return Err(format!("a schema must be an object (at {at})")),
        };
        let types: Vec<&str> = match s.get("type") {
            None => Vec::new(),
            Some(Ordered::String(t)) => vec![t.as_str()],
            Some(Ordered::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|t| {
                    t.as_str()
                        .ok_or_else(|| format!("'type' must name types at {at}"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(format!("'type' must be a string or an array at {at}")),
        };
        for (k, _) in m {
            let known = ANNOTATIONS.contains(&k.as_str())
                || [GENERAL, OBJECT, ARRAY, STRING, NUMBER]
                    .iter()
                    .any(|set| set.contains(&k.as_str()));
            if !known {
                return Err(format!("unsupported keyword '{k}' at {at}"));
            }
        }
        let enforced: Vec<&str> = m
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !ANNOTATIONS.contains(k))
            .collect();
        let only = |allowed: &[&str], what: &str| -> Result<(), String> {
            match enforced.iter().find(|k| !allowed.contains(k)) {
                Some(k) => Err(format!(
                    "keyword '{k}' cannot be combined with {what} at {at}"
                )),
                None => Ok(()),
            }
        };
        if let Some(r) = s.get("$ref") {
            only(&["$ref"], "'$ref'")?;
            let r = r
                .as_str()
                .ok_or_else(|| format!("'$ref' must be a string at {at}"))?;
            return self.reference(r, at, nesting);
        }
        if let Some(key) = ["anyOf", "oneOf"].into_iter().find(|k| s.get(k).is_some()) {
            only(&[key], &format!("'{key}'"))?;
            let Some(Ordered::Array(alts)) = s.get(key) else {
                return Err(format!("'{key}' must be an array of schemas at {at}"));
            };
            let mut ids = Vec::with_capacity(alts.len());
            for (i, a) in alts.iter().enumerate() {
                ids.push(self.node(a, &format!("{at}/{key}/{i}"), nesting + 1)?);
            }
            return self.b.union(&ids).map_err(|e| built(e, at));
        }
        if let Some(key) = ["enum", "const"].into_iter().find(|k| s.get(k).is_some()) {
            only(&[key, "type"], &format!("'{key}'"))?;
            let values: Vec<&Ordered> = match (key, s.get(key)) {
                ("enum", Some(Ordered::Array(a))) if !a.is_empty() => a.iter().collect(),
                ("const", Some(v)) => vec![v],
                _ => return Err(format!("'enum' must be a non-empty array at {at}")),
            };
            let mut lits: Vec<String> = Vec::new();
            for v in values {
                let mut t = String::new();
                v.text(&mut t);
                if !lits.contains(&t) {
                    lits.push(t);
                }
            }
            return self
                .b
                .enumeration(lits.iter().map(|l| l.as_bytes()))
                .map_err(|e| built(e, at));
        }
        let types = if types.is_empty() {
            if s.get("properties").is_some() || s.get("additionalProperties").is_some() {
                vec!["object"]
            } else if s.get("items").is_some() {
                vec!["array"]
            } else {
                return Err(format!(
                    "a schema needs 'type', 'enum', 'const', 'anyOf' or '$ref' (at {at})"
                ));
            }
        } else {
            types
        };
        if types.len() > 1 {
            let mut ids = Vec::with_capacity(types.len());
            for t in &types {
                ids.push(self.typed(s, t, &types, &enforced, at, nesting)?);
            }
            return self.b.union(&ids).map_err(|e| built(e, at));
        }
        self.typed(s, types[0], &types, &enforced, at, nesting)
    }

    /// A node of type `t`, one of `types` (the schema's `type` list): each keyword must
    /// belong to one of them, and each type takes its own.
    fn typed(
        &mut self,
        s: &Ordered,
        t: &str,
        types: &[&str],
        enforced: &[&str],
        at: &str,
        nesting: usize,
    ) -> Result<u16, String> {
        let own = |t: &str| -> Result<&'static [&'static str], String> {
            Ok(match t {
                "object" => OBJECT,
                "array" => ARRAY,
                "string" => STRING,
                "number" | "integer" => NUMBER,
                "boolean" | "null" => &[],
                _ => return Err(format!("unknown type '{t}' at {at}")),
            })
        };
        own(t)?;
        for k in enforced.iter().filter(|k| **k != "type") {
            let mut applies = false;
            for ty in types {
                applies |= own(ty)?.contains(k);
            }
            if !applies {
                return Err(format!(
                    "keyword '{k}' does not apply to type '{t}' at {at}"
                ));
            }
        }
        let e = |e| built(e, at);
        match t {
            "boolean" => self
                .b
                .enumeration([&b"true"[..], b"false"].into_iter())
                .map_err(e),
            "null" => self.b.enumeration([&b"null"[..]].into_iter()).map_err(e),
            "string" => {
                let min = uint(s.get("minLength"), "minLength", at)?.unwrap_or(0);
                let max = uint(s.get("maxLength"), "maxLength", at)?.unwrap_or(u32::MAX);
                let text = |k: &str| match s.get(k) {
                    None => Ok(None),
                    Some(Ordered::String(p)) => Ok(Some(p.as_str())),
                    Some(_) => Err(format!("'{k}' must be a string at {at}")),
                };
                let (p, f) = (text("pattern")?, text("format")?);
                if p.is_none() && f.is_none() {
                    return self.b.node(Node::String { min, max }).map_err(e);
                }
                if min > max {
                    return Err(built(SchemaError::EmptyRange, at));
                }
                let key = (p.map(str::to_string), f.map(str::to_string), min, max);
                if let Some(&id) = self.patterns.get(&key) {
                    return Ok(id);
                }
                if self.patterns.len() >= MAX_PATTERNS {
                    return Err(format!(
                        "more than {MAX_PATTERNS} different patterns/formats in one schema"
                    ));
                }
                let t = pattern::compile(p, f, min, max).map_err(|m| format!("{m} at {at}"))?;
                let id = self
                    .b
                    .pattern(&t.bytes, t.states, t.classes, t.max)
                    .map_err(e)?;
                self.patterns.insert(key, id);
                Ok(id)
            }
            "number" | "integer" => {
                let integer = t == "integer";
                let (min, max) = number_bounds(s, at)?;
                let (multiple, decimals) = match s.get("multipleOf") {
                    None => (0, 0),
                    Some(Ordered::Number(n)) => step(&n.to_string(), integer).ok_or_else(|| {
                        format!(
                            "'multipleOf' must be a positive number with at most 15 \
                                 fraction digits and 18 integer digits at {at}"
                        )
                    })?,
                    Some(_) => return Err(format!("'multipleOf' must be a number at {at}")),
                };
                self.b
                    .node(Node::Number {
                        integer,
                        min,
                        max,
                        multiple,
                        decimals,
                    })
                    .map_err(e)
            }
            "array" => {
                let items = s
                    .get("items")
                    .ok_or_else(|| format!("arrays need an 'items' schema (at {at})"))?;
                let items = self.node(items, &format!("{at}/items"), nesting + 1)?;
                let min = uint(s.get("minItems"), "minItems", at)?.unwrap_or(0);
                let max = uint(s.get("maxItems"), "maxItems", at)?.unwrap_or(u32::MAX);
                self.b.node(Node::Array { items, min, max }).map_err(e)
            }
            _ => self.object(s, at, nesting),
        }
    }

    fn object(&mut self, s: &Ordered, at: &str, nesting: usize) -> Result<u16, String> {
        let closed = match s.get("additionalProperties") {
            None | Some(Ordered::Bool(true)) => false,
            Some(Ordered::Bool(false)) => true,
            Some(_) => {
                return Err(format!(
                    "unsupported keyword 'additionalProperties' with a schema at {at}: use true or false"
                ))
            }
        };
        let required: Vec<&str> = match s.get("required") {
            None => Vec::new(),
            Some(Ordered::Array(a)) => a
                .iter()
                .map(|r| {
                    r.as_str()
                        .ok_or_else(|| format!("'required' must list names at {at}"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(format!("'required' must be an array at {at}")),
        };
        let props = match s.get("properties") {
            None if !closed => {
                if let Some(r) = required.first() {
                    return Err(format!(
                        "required property '{r}' is not in 'properties' at {at}"
                    ));
                }
                return self.b.node(Node::AnyObject).map_err(|e| built(e, at));
            }
            None => &Vec::new(),
            Some(Ordered::Object(p)) => p,
            Some(_) => return Err(format!("'properties' must be an object at {at}")),
        };
        if let Some(r) = required
            .iter()
            .find(|r| !props.iter().any(|(k, _)| k == *r))
        {
            return Err(format!(
                "required property '{r}' is not in 'properties' at {at}"
            ));
        }
        let mut compiled = Vec::with_capacity(props.len());
        for (k, v) in props {
            let id = self.node(v, &format!("{at}/properties/{k}"), nesting + 1)?;
            let name = serde_json::Value::String(k.clone()).to_string();
            let name = name.as_bytes()[1..name.len() - 1].to_vec();
            compiled.push((name, id, required.contains(&k.as_str())));
        }
        let refs: Vec<(&[u8], u16, bool)> = compiled
            .iter()
            .map(|(n, id, r)| (n.as_slice(), *id, *r))
            .collect();
        self.b.object(&refs).map_err(|e| built(e, at))
    }

    fn reference(&mut self, r: &str, at: &str, nesting: usize) -> Result<u16, String> {
        if let Some(&id) = self.refs.get(r) {
            return Ok(id);
        }
        let ptr = r
            .strip_prefix('#')
            .ok_or_else(|| format!("only local $refs ('#/$defs/...') are supported, not '{r}'"))?;
        let target = self
            .root
            .pointer(ptr)
            .ok_or_else(|| format!("$ref '{r}' does not resolve (at {at})"))?;
        let id = self.b.reserve().map_err(|e| built(e, at))?;
        self.refs.insert(r.to_string(), id);
        let to = self.node(target, r, nesting + 1)?;
        self.b.define(id, to);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trillim_core::grammar::{ByteMachine, SchemaMachine};

    fn compiled(schema: &str) -> Result<CompiledSchema, String> {
        compile(&serde_json::from_str::<Ordered>(schema).unwrap())
    }

    fn accepts(c: &CompiledSchema, text: &str) -> bool {
        let s = c.schema();
        let mut m = SchemaMachine::new(&s);
        m.push_all(text.as_bytes()) && m.is_accepting()
    }

    #[test]
    fn properties_keep_document_order_and_refs_resolve() {
        let c = compiled(
            r##"{"type": "object", "title": "T",
                "properties": {"zeta": {"type": "boolean"}, "alpha": {"$ref": "#/$defs/list"},
                               "mid": {"type": ["integer", "null"], "minimum": 1}},
                "required": ["zeta"], "additionalProperties": false,
                "$defs": {"list": {"type": "array", "items": {"$ref": "#/$defs/list"}, "maxItems": 2}}}"##,
        )
        .unwrap();
        assert!(accepts(&c, r#"{"zeta":true,"alpha":[[],[[]]],"mid":null}"#));
        assert!(accepts(&c, r#"{"zeta":false,"mid":3}"#));
        assert!(!accepts(&c, r#"{"alpha":[],"zeta":true}"#));
        assert!(!accepts(&c, r#"{"zeta":true,"mid":0}"#));
        assert!(!accepts(&c, r#"{"zeta":true,"alpha":[[],[],[]]}"#));
        // Names are matched as JSON text, escapes included.
        let c = compiled(
            r#"{"type":"object","properties":{"a\"b":{"const":"é"}},"required":["a\"b"]}"#,
        )
        .unwrap();
        assert!(accepts(&c, r#"{"a\"b":"é"}"#));
    }

    #[test]
    fn pattern_strings_take_escapes_and_count_characters() {
        let c = compile(
            &serde_json::from_value(serde_json::json!(
                {"type": "string", "pattern": "^a\"b\\\\c\\né$"}
            ))
            .unwrap(),
        )
        .unwrap();
        assert!(accepts(&c, r#""a\"b\\c\né""#));
        // Control characters may be written as a `\u` escape; others are written raw.
        assert!(accepts(&c, r#""a\"b\\c\u000Aé""#));
        assert!(!accepts(&c, r#""a\"b\\c\n\u00e9""#));
        assert!(!accepts(&c, r#""a\"b\\c\n""#));
        let c = compiled(r#"{"type":"string","pattern":"^[a-z]+$","maxLength":3}"#).unwrap();
        assert!(accepts(&c, r#""abc""#) && !accepts(&c, r#""\u0061bc""#));
        assert!(!accepts(&c, r#""abcd""#) && !accepts(&c, r#""""#));
        let c = compiled(r#"{"type":"string","format":"date","minLength":10}"#).unwrap();
        assert!(accepts(&c, r#""2024-02-29""#) && !accepts(&c, r#""2023-02-29""#));
    }

    /// Random byte walks through pattern strings never reach a state with no way out, and
    /// what they end with decodes to a string the pattern's table accepts within the bounds.
    #[test]
    fn pattern_walks_always_end_valid() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for (schema, p, f, min, max) in [
            (
                r#"{"type":"string","format":"date-time"}"#,
                None,
                Some("date-time"),
                0,
                u32::MAX,
            ),
            (
                r#"{"type":"string","format":"email","maxLength":20}"#,
                None,
                Some("email"),
                0,
                20,
            ),
            (
                r#"{"type":"string","pattern":"^[a-c\\n\"é]{2,6}x?$","minLength":3}"#,
                Some("^[a-c\\n\"é]{2,6}x?$"),
                None,
                3,
                u32::MAX,
            ),
            (
                r#"{"type":"string","pattern":"q.?z","maxLength":5}"#,
                Some("q.?z"),
                None,
                0,
                5,
            ),
        ] {
            let c = compiled(schema).unwrap();
            let table = pattern::compile(p, f, min, max).unwrap();
            let sc = c.schema();
            for _ in 0..200 {
                let mut m = SchemaMachine::new(&sc);
                let mut text = Vec::new();
                while !m.is_done() {
                    let ok: Vec<u8> = (0..=255u8)
                        .filter(|&b| {
                            let mut t = m;
                            t.push(b)
                        })
                        .collect();
                    assert!(
                        !ok.is_empty(),
                        "{schema}: dead end after {:?}",
                        String::from_utf8_lossy(&text)
                    );
                    // Lean towards the closing quote once the text is long.
                    let b = if text.len() > 40 && ok.contains(&b'"') {
                        b'"'
                    } else {
                        ok[rand() as usize % ok.len()]
                    };
                    assert!(m.push(b));
                    text.push(b);
                    assert!(text.len() < 4000, "{schema}: no end");
                }
                let v: String = serde_json::from_slice(&text)
                    .unwrap_or_else(|e| panic!("{schema}: {e} in {text:?}"));
                let n = v.chars().count() as u32;
                assert!(n >= min && n <= max, "{schema}: {v:?}");
                assert!(table.accepts(&v), "{schema}: {v:?}");
            }
        }
    }

    #[test]
    fn multiple_of_and_exclusive_bounds() {
        assert_eq!(step("0.25", false), Some((25, 2)));
        assert_eq!(step("2.5", true), Some((5, 0)));
        assert_eq!(step("1e-3", false), Some((1, 3)));
        assert_eq!(step("1.5e2", true), Some((150, 0)));
        assert_eq!(step("0.1", true), Some((1, 0)));
        for bad in ["0", "-2", "1e-20", "1e30"] {
            assert_eq!(step(bad, false), None, "{bad}");
        }
        let c = compiled(
            r#"{"type":"integer","multipleOf":3,"exclusiveMinimum":0,"exclusiveMaximum":10}"#,
        )
        .unwrap();
        for (t, ok) in [
            ("3", true),
            ("9", true),
            ("0", false),
            ("12", false),
            ("4", false),
        ] {
            assert_eq!(accepts(&c, t), ok, "{t}");
        }
        let c = compiled(r#"{"type":"number","multipleOf":0.5,"minimum":1,"exclusiveMaximum":2}"#)
            .unwrap();
        for (t, ok) in [
            ("1", true),
            ("1.5", true),
            ("2", false),
            ("1.25", false),
            ("0.5", false),
        ] {
            assert_eq!(accepts(&c, t), ok, "{t}");
        }
        let c = compiled(r#"{"type":"number","exclusiveMinimum":0}"#).unwrap();
        assert!(!accepts(&c, "0") && accepts(&c, "0.001") && !accepts(&c, "-1"));
        let c = compiled(r#"{"type":"number","minimum":0,"exclusiveMinimum":true}"#).unwrap();
        assert!(!accepts(&c, "0") && accepts(&c, "1"));
        let e =
            compiled(r#"{"type":"integer","multipleOf":10,"minimum":1,"maximum":9}"#).unwrap_err();
        assert!(e.contains("minimum is above"), "{e}");
    }

    #[test]
    fn refusals_name_the_keyword_or_the_problem() {
        for (schema, want) in [
            (
                r#"{"type":"object","properties":{"a":{"type":"string","format":"color"}}}"#,
                "unsupported format 'color' (supported: date, time, date-time",
            ),
            (
                r#"{"type":"string","pattern":"(a)\\1"}"#,
                "backreferences are not supported at #",
            ),
            (
                r#"{"type":"array","items":{"type":"number"},"uniqueItems":true}"#,
                "unsupported keyword 'uniqueItems'",
            ),
            (r#"{"type":"array"}"#, "arrays need an 'items'"),
            (r#"{"$ref":"http://x/y"}"#, "only local $refs"),
            (
                r##"{"$ref":"#/$defs/a","$defs":{"a":{"$ref":"#/$defs/a"}}}"##,
                "never defined",
            ),
            (r#"{"type":["number","integer"]}"#, "start differently"),
            (r#"{"enum":[]}"#, "non-empty array"),
            (
                r#"{"type":"string","minLength":3,"maxLength":2}"#,
                "minimum is above",
            ),
            (
                r#"{"type":"object","additionalProperties":{"type":"string"}}"#,
                "additionalProperties",
            ),
        ] {
            let e = compiled(schema).unwrap_err();
            assert!(e.contains(want), "{schema}: {e}");
        }
    }
}
