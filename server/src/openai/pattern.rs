//! String `pattern` (ECMA-262 regular expressions, as JSON Schema specifies them), `format`
//! and length bounds, compiled into one byte DFA for the schema machine
//! ([`Node::Pattern`](trillim_core::grammar::Node::Pattern)).
//!
//! Each expression is translated to `regex-automata` syntax with ECMA-262 meanings (`\d`,
//! `\w`, `\s` and `.` as ECMA defines them; an unanchored pattern may match anywhere in the
//! string), determinized, and the DFAs are run side by side with a character counter; the
//! product's states that cannot reach an accepting one are dropped, and bytes that act alike
//! share a class.

use std::collections::HashMap;

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, MatchKind};
use trillim_core::grammar::MAX_PATTERN_STATES;

/// Longest `pattern` accepted, in bytes.
const MAX_PATTERN_LEN: usize = 1024;
/// Memory one expression's automata may take while they are built.
const BUILD_LIMIT: usize = 8 << 20;

/// The `format`s enforced, each a full-string expression.
const FORMATS: &[(&str, &str)] = &[
    ("date", DATE),
    ("time", TIME),
    ("date-time", concat_date_time()),
    (
        "uuid",
        "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    ),
    ("ipv4", IPV4),
    ("ipv6", IPV6),
    ("hostname", HOSTNAME),
    ("email", EMAIL),
    ("uri", URI),
];

/// A calendar date (`YYYY-MM-DD`, the days of each month, 29 February in leap years).
const DATE: &str = "(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)";
/// RFC 3339 `full-time` with an offset (`Z` or `±hh:mm`).
const TIME: &str = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])";
const IPV4: &str = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}";
/// RFC 4291 text forms, `::` compression included (without an embedded IPv4 tail).
const IPV6: &str = "(?:(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|(?:[0-9a-fA-F]{1,4}:){1,7}:|(?:[0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|(?:[0-9a-fA-F]{1,4}:){1,5}(?::[0-9a-fA-F]{1,4}){1,2}|(?:[0-9a-fA-F]{1,4}:){1,4}(?::[0-9a-fA-F]{1,4}){1,3}|(?:[0-9a-fA-F]{1,4}:){1,3}(?::[0-9a-fA-F]{1,4}){1,4}|(?:[0-9a-fA-F]{1,4}:){1,2}(?::[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(?::[0-9a-fA-F]{1,4}){1,6}|:(?:(?::[0-9a-fA-F]{1,4}){1,7}|:))";
/// Dot-separated labels of 1 to 63 letters, digits and inner hyphens.
const HOSTNAME: &str =
    "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*";
/// A dot-atom local part at a domain of at least two labels.
const EMAIL: &str = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+";
/// An `http`/`https` URL: host, port, path, query and fragment of unreserved characters.
const URI: &str = "https?://[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~!$&'()*+,;=:@-]*)*(?:\\?[A-Za-z0-9._~!$&'()*+,;=:@/?-]*)?(?:#[A-Za-z0-9._~!$&'()*+,;=:@/?-]*)?";

const fn concat_date_time() -> &'static str {
    // `DATE` `T` `TIME`, spelled out (const string concatenation needs a literal).
    "(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
}

/// The names of the formats enforced, for error messages.
pub fn format_names() -> String {
    FORMATS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A compiled table: bytes laid out as `Node::Pattern` describes, its states and classes,
/// and the character bound the machine still has to count (`u32::MAX`: none).
#[derive(Debug)]
pub struct Table {
    pub bytes: Vec<u8>,
    pub states: u16,
    pub classes: u16,
    pub max: u32,
}

/// Compiles a string's `pattern` and `format` with its length bounds (characters).
pub fn compile(
    pattern: Option<&str>,
    format: Option<&str>,
    min: u32,
    max: u32,
) -> Result<Table, String> {
    let mut dfas = Vec::new();
    if let Some(p) = pattern {
        if p.len() > MAX_PATTERN_LEN {
            return Err(format!("'pattern' is longer than {MAX_PATTERN_LEN} bytes"));
        }
        let re = format!("(?s:.)*(?:{})(?s:.)*", translate(p)?);
        dfas.push(build(&re).map_err(|e| format!("'pattern' {p:?}: {e}"))?);
    }
    if let Some(f) = format {
        let (_, re) = FORMATS
            .iter()
            .find(|(n, _)| *n == f)
            .ok_or_else(|| format!("unsupported format '{f}' (supported: {})", format_names()))?;
        dfas.push(build(re).map_err(|e| format!("format '{f}': {e}"))?);
    }
    if dfas.is_empty() {
        return Err("a pattern table needs a 'pattern' or a 'format'".into());
    }
    // The minimum is counted in the product (up to `min`), the maximum by the machine against
    // each state's distance to an accepting one; bounds the expressions imply are dropped.
    let plain = product(&dfas, 0)?;
    let (lo, hi) = (plain.short(1) as u64, plain.longest());
    let mut t = if min as u64 <= lo {
        plain
    } else {
        product(&dfas, min)?
    };
    if t.short(1) as u64 > max as u64 {
        return Err("no string matches the pattern, format and length bounds".into());
    }
    t.max = if hi.is_some_and(|h| h <= max as u64) {
        u32::MAX
    } else {
        max
    };
    Ok(t)
}

fn build(re: &str) -> Result<dense::DFA<Vec<u32>>, String> {
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .start_kind(StartKind::Anchored)
                .match_kind(MatchKind::All)
                .dfa_size_limit(Some(BUILD_LIMIT))
                .determinize_size_limit(Some(BUILD_LIMIT)),
        )
        .syntax(syntax::Config::new().utf8(true).unicode(true))
        .thompson(thompson::Config::new().nfa_size_limit(Some(BUILD_LIMIT)))
        .build(&format!("(?:{re})$"))
        .map_err(|e| {
            let e = e.to_string();
            if e.contains("exceeded") || e.contains("limit") {
                "the expression is too complex".to_string()
            } else {
                e
            }
        })
}

/// The product of `dfas` over value bytes, with a character count where the bounds need
/// one: `(per-DFA states, characters)`.
type Key = (Vec<StateID>, u32);

fn start_states(dfas: &[dense::DFA<Vec<u32>>]) -> Result<Vec<StateID>, String> {
    let cfg = start::Config::new().anchored(Anchored::Yes);
    dfas.iter()
        .map(|d| d.start_state(&cfg).map_err(|e| e.to_string()))
        .collect()
}

fn step(dfas: &[dense::DFA<Vec<u32>>], s: &[StateID], b: u8) -> Option<Vec<StateID>> {
    let mut out = Vec::with_capacity(s.len());
    for (d, &st) in dfas.iter().zip(s) {
        let n = d.next_state(st, b);
        if d.is_dead_state(n) || d.is_quit_state(n) {
            return None;
        }
        out.push(n);
    }
    Some(out)
}

fn matches(dfas: &[dense::DFA<Vec<u32>>], s: &[StateID]) -> bool {
    dfas.iter()
        .zip(s)
        .all(|(d, &st)| d.is_match_state(d.next_eoi_state(st)))
}

/// Whether `b` begins a character (is not a UTF-8 continuation byte).
fn starts_char(b: u8) -> bool {
    b & 0xc0 != 0x80
}

impl Table {
    fn short(&self, s: usize) -> u32 {
        let i = 256 + self.states as usize + 4 * s;
        u32::from_le_bytes(self.bytes[i..i + 4].try_into().unwrap_or([0xff; 4]))
    }

    #[allow(dead_code)] // Tests and the fuzz target check tables with it.
    fn accepting(&self, s: usize) -> bool {
        self.bytes[256 + s] != 0
    }

    /// Whether the table accepts the string `v` within its counted bound.
    #[allow(dead_code)] // Tests and the fuzz target check tables with it.
    pub fn accepts(&self, v: &str) -> bool {
        let mut st = 1;
        for &b in v.as_bytes() {
            st = self.next(st, b);
            if st == 0 {
                return false;
            }
        }
        self.accepting(st) && v.chars().count() as u64 <= self.max as u64
    }

    fn next(&self, s: usize, b: u8) -> usize {
        let (n, c) = (self.states as usize, self.classes as usize);
        let i = 256 + 5 * n + 2 * (s * c + self.bytes[b as usize] as usize);
        u16::from_le_bytes([self.bytes[i], self.bytes[i + 1]]) as usize
    }

    /// The longest accepted string in characters (`None`: unbounded, a cycle).
    fn longest(&self) -> Option<u64> {
        let n = self.states as usize;
        // Iterative depth-first search: post-order, and a back edge means a cycle.
        let mut mark = vec![0u8; n];
        let mut long: Vec<u64> = vec![0; n];
        let mut stack = vec![(1usize, 0usize)];
        mark[1] = 1;
        while let Some(&mut (v, ref mut b)) = stack.last_mut() {
            if *b == 256 {
                // Every state is live, so every successor contributes a path.
                let mut best = 0;
                for c in 0..=255u8 {
                    let m = self.next(v, c);
                    if m != 0 {
                        best = best.max(long[m] + starts_char(c) as u64);
                    }
                }
                long[v] = best;
                mark[v] = 2;
                stack.pop();
                continue;
            }
            let m = self.next(v, *b as u8);
            *b += 1;
            match (m, mark.get(m)) {
                (0, _) => {}
                (_, Some(0)) => {
                    mark[m] = 1;
                    stack.push((m, 0));
                }
                (_, Some(1)) => return None,
                _ => {}
            }
        }
        Some(long[1])
    }
}

/// The trimmed product automaton of `dfas` with at least `min` characters, each state with
/// its fewest characters to an accepting one.
fn product(dfas: &[dense::DFA<Vec<u32>>], min: u32) -> Result<Table, String> {
    let too_big = || {
        format!("the pattern, format and length bounds need more than {MAX_PATTERN_STATES} states")
    };
    // Characters are counted up to where the bound stops caring.
    let cap = min;
    let mut ids: HashMap<Key, usize> = HashMap::new();
    let mut keys: Vec<Key> = Vec::new();
    let start: Key = (start_states(dfas)?, 0);
    ids.insert(start.clone(), 0);
    keys.push(start);
    let mut edges: Vec<[u32; 256]> = Vec::new();
    let mut i = 0;
    while i < keys.len() {
        let (s, len) = keys[i].clone();
        let mut row = [u32::MAX; 256];
        for b in 0..=255u8 {
            let l = if starts_char(b) { len + 1 } else { len };
            let Some(n) = step(dfas, &s, b) else {
                continue;
            };
            let key = (n, l.min(cap));
            let id = match ids.get(&key) {
                Some(&id) => id,
                None => {
                    if keys.len() >= MAX_PATTERN_STATES - 1 {
                        return Err(too_big());
                    }
                    ids.insert(key.clone(), keys.len());
                    keys.push(key);
                    keys.len() - 1
                }
            };
            row[b as usize] = id as u32;
        }
        edges.push(row);
        i += 1;
    }
    let accept: Vec<bool> = keys
        .iter()
        .map(|(s, len)| *len >= min && matches(dfas, s))
        .collect();

    // Fewest characters to an accepting state: 0-1 breadth-first search on reversed edges
    // (a byte that continues a UTF-8 sequence costs nothing). Unreached states are dropped.
    let n = keys.len();
    let mut rev: Vec<Vec<(u32, bool)>> = vec![Vec::new(); n];
    for (s, row) in edges.iter().enumerate() {
        for (b, &m) in row.iter().enumerate() {
            if m != u32::MAX {
                rev[m as usize].push((s as u32, starts_char(b as u8)));
            }
        }
    }
    let mut dist = vec![u32::MAX; n];
    let mut queue = std::collections::VecDeque::new();
    for s in (0..n).filter(|&s| accept[s]) {
        dist[s] = 0;
        queue.push_back(s);
    }
    while let Some(m) = queue.pop_front() {
        for &(s, lead) in &rev[m] {
            let d = dist[m] + lead as u32;
            if d < dist[s as usize] {
                dist[s as usize] = d;
                if lead {
                    queue.push_back(s as usize);
                } else {
                    queue.push_front(s as usize);
                }
            }
        }
    }
    let live: Vec<bool> = dist.iter().map(|&d| d != u32::MAX).collect();
    if !live[0] {
        return Err("no string matches the pattern, format and length bounds".into());
    }
    // Numbering: 0 refuses, 1 starts, then the live states in discovery order.
    let mut new_id = vec![0u16; n];
    let mut next_id = 1u16;
    for s in 0..n {
        if live[s] {
            new_id[s] = next_id;
            next_id += 1;
        }
    }
    let states = next_id as usize;
    let target = |s: usize, b: usize| -> u16 {
        let m = edges[s][b];
        if m == u32::MAX {
            0
        } else {
            new_id[m as usize]
        }
    };
    let live_states: Vec<usize> = (0..n).filter(|&s| live[s]).collect();
    // Bytes whose columns agree share a class.
    let mut class_of = [0u8; 256];
    let mut columns: Vec<Vec<u16>> = Vec::new();
    for (b, class) in class_of.iter_mut().enumerate() {
        let col: Vec<u16> = live_states.iter().map(|&s| target(s, b)).collect();
        let k = match columns.iter().position(|c| *c == col) {
            Some(k) => k,
            None => {
                columns.push(col);
                columns.len() - 1
            }
        };
        *class = k as u8;
    }
    let classes = columns.len();
    let mut bytes = Vec::with_capacity(256 + 5 * states + 2 * states * classes);
    bytes.extend_from_slice(&class_of);
    bytes.push(0);
    bytes.extend(live_states.iter().map(|&s| accept[s] as u8));
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    for &s in &live_states {
        bytes.extend_from_slice(&dist[s].to_le_bytes());
    }
    bytes.extend(std::iter::repeat_n(0, 2 * classes));
    for (row, _) in live_states.iter().enumerate() {
        for col in &columns {
            bytes.extend_from_slice(&col[row].to_le_bytes());
        }
    }
    Ok(Table {
        bytes,
        states: states as u16,
        classes: classes as u16,
        max: u32::MAX,
    })
}

/// ECMA-262 `\s`: white space and line terminators.
const ECMA_SPACE: &str =
    "\\t\\n\\x0B\\f\\r \\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}";

/// Translates an ECMA-262 pattern into `regex-automata` syntax with the same meaning, or
/// names the construct a DFA cannot express.
fn translate(p: &str) -> Result<String, String> {
    let mut out = String::with_capacity(p.len() * 2);
    let cs: Vec<char> = p.chars().collect();
    let mut i = 0;
    let mut class = false;
    let mut class_start = false;
    let mut quantifier = false;
    let lit = |c: char, out: &mut String| out.push_str(&format!("\\x{{{:X}}}", c as u32));
    while i < cs.len() {
        let c = cs[i];
        i += 1;
        let at_class_start = std::mem::take(&mut class_start);
        if c == '\\' {
            let e = *cs.get(i).ok_or("'pattern' ends with a lone '\\'")?;
            i += 1;
            match e {
                'd' | 'D' | 'w' | 'W' | 's' | 'S' => {
                    let set = match e.to_ascii_lowercase() {
                        'd' => "0-9",
                        'w' => "0-9A-Za-z_",
                        _ => ECMA_SPACE,
                    };
                    let neg = if e.is_ascii_uppercase() { "^" } else { "" };
                    out.push_str(&format!("[{neg}{set}]"));
                }
                'b' if class => out.push_str("\\x08"),
                'b' | 'B' => return Err("word boundaries (\\b, \\B) are not supported".into()),
                '1'..='9' | 'k' => return Err("backreferences are not supported".into()),
                '0' => out.push_str("\\x00"),
                'n' => out.push_str("\\n"),
                'r' => out.push_str("\\r"),
                't' => out.push_str("\\t"),
                'f' => out.push_str("\\f"),
                'v' => out.push_str("\\x0B"),
                'c' => {
                    let l = cs
                        .get(i)
                        .filter(|l| l.is_ascii_alphabetic())
                        .ok_or("'\\c' needs a letter")?;
                    i += 1;
                    out.push_str(&format!("\\x{:02X}", (*l as u32) % 32));
                }
                'x' => {
                    let h: String = cs.iter().skip(i).take(2).collect();
                    if h.len() != 2 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err("'\\x' needs two hex digits".into());
                    }
                    i += 2;
                    out.push_str(&format!("\\x{{{h}}}"));
                }
                'u' => {
                    let (cp, used) = unicode_escape(&cs[i..])?;
                    i += used;
                    let ch = char::from_u32(cp).ok_or("a lone surrogate in '\\u'")?;
                    lit(ch, &mut out);
                }
                'p' | 'P' => {
                    let end = cs[i..]
                        .iter()
                        .position(|&c| c == '}')
                        .filter(|_| cs.get(i) == Some(&'{'))
                        .ok_or("'\\p' needs '{name}'")?;
                    out.push('\\');
                    out.push(e);
                    out.extend(&cs[i..=i + end]);
                    i += end + 1;
                }
                c if c.is_ascii_alphanumeric() => {
                    return Err(format!("unknown escape '\\{c}'"));
                }
                c => lit(c, &mut out),
            }
            continue;
        }
        if class {
            match c {
                ']' => {
                    class = false;
                    out.push(']');
                }
                '^' if at_class_start => out.push('^'),
                '-' if cs.get(i) != Some(&'-') && !out.ends_with('-') => out.push('-'),
                '[' | '&' | '~' | '^' | '-' => lit(c, &mut out),
                c => out.push(c),
            }
            continue;
        }
        match c {
            '[' => {
                let neg = cs.get(i) == Some(&'^');
                let close = cs.get(i + neg as usize) == Some(&']');
                match (neg, close) {
                    (false, true) => return Err("an empty class '[]' matches nothing".into()),
                    (true, true) => {
                        out.push_str("(?s:.)");
                        i += 2;
                    }
                    _ => {
                        class = true;
                        class_start = true;
                        out.push('[');
                    }
                }
            }
            '.' => out.push_str("[^\\n\\r\\x{2028}\\x{2029}]"),
            '(' if cs.get(i) == Some(&'?') => {
                let rest: String = cs[i..].iter().take(4).collect();
                if rest.starts_with("?:") {
                    out.push_str("(?:");
                    i += 2;
                } else if rest.starts_with("?=")
                    || rest.starts_with("?!")
                    || rest.starts_with("?<=")
                    || rest.starts_with("?<!")
                {
                    return Err("lookahead and lookbehind are not supported".into());
                } else if rest.starts_with("?<") {
                    out.push_str("(?P<");
                    i += 2;
                } else {
                    return Err("unsupported group syntax '(?'".into());
                }
            }
            '{' => {
                // A quantifier `{n}`, `{n,}` or `{n,m}`; otherwise a literal brace.
                let end = cs[i..].iter().position(|&c| c == '}');
                let body: Option<String> = end.map(|e| cs[i..i + e].iter().collect());
                let quant = body.as_deref().is_some_and(|b| {
                    let mut parts = b.splitn(2, ',');
                    let n = parts.next().unwrap_or("");
                    let m = parts.next();
                    !n.is_empty()
                        && n.chars().all(|c| c.is_ascii_digit())
                        && m.is_none_or(|m| m.chars().all(|c| c.is_ascii_digit()))
                });
                if quant {
                    quantifier = true;
                    out.push('{');
                } else {
                    lit('{', &mut out);
                }
            }
            '}' if quantifier => {
                quantifier = false;
                out.push('}');
            }
            '}' => lit('}', &mut out),
            // Free-spacing and set operators are regex-automata syntax, not ECMA's.
            '#' | ' ' | '&' | '~' => lit(c, &mut out),
            c => out.push(c),
        }
    }
    if class {
        return Err("'pattern' has an unclosed '['".into());
    }
    Ok(out)
}

/// The code point of a `\u` escape after the `u` (`XXXX`, `{X…}` or a surrogate pair) and
/// the characters it used.
fn unicode_escape(cs: &[char]) -> Result<(u32, usize), String> {
    let hex = |s: &[char]| -> Option<u32> {
        let t: String = s.iter().collect();
        (!t.is_empty() && t.len() <= 6 && t.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(&t, 16).ok())
            .flatten()
    };
    if cs.first() == Some(&'{') {
        let end = cs
            .iter()
            .position(|&c| c == '}')
            .ok_or("'\\u{' is not closed")?;
        let cp = hex(&cs[1..end]).ok_or("bad '\\u{…}' escape")?;
        return Ok((cp, end + 1));
    }
    let cp = cs
        .get(..4)
        .and_then(hex)
        .ok_or("'\\u' needs four hex digits")?;
    if (0xd800..0xdc00).contains(&cp) && cs.get(4) == Some(&'\\') && cs.get(5) == Some(&'u') {
        if let Some(lo) = cs.get(6..10).and_then(hex) {
            if (0xdc00..0xe000).contains(&lo) {
                return Ok((0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00), 10));
            }
        }
    }
    Ok((cp, 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(t: &Table, s: &str) -> bool {
        t.accepts(s)
    }

    fn pat(p: &str) -> Table {
        compile(Some(p), None, 0, u32::MAX).unwrap()
    }

    #[test]
    fn ecma_meanings_and_unanchored_search() {
        let t = pat("^[a-z]+\\d{2,3}$");
        assert!(accepts(&t, "abc12") && accepts(&t, "x123"));
        assert!(!accepts(&t, "abc1") && !accepts(&t, "abc1234") && !accepts(&t, "Abc12"));
        // `\d` is ASCII only, as in ECMA-262.
        assert!(!accepts(&t, "ab١٢"));
        // Unanchored: anywhere in the string.
        let t = pat("ab+c");
        assert!(accepts(&t, "xxabbbcyy") && accepts(&t, "abc") && !accepts(&t, "acb"));
        let t = pat("^(?:foo|bar)-[^\\s]{2}$");
        assert!(accepts(&t, "foo-é!") && !accepts(&t, "foo- a") && !accepts(&t, "baz-ab"));
        // `.` stops at line terminators; `[^]` does not.
        assert!(!accepts(&pat("^.$"), "\n") && accepts(&pat("^[^]$"), "\n"));
        assert!(accepts(&pat("^\\u00e9\\x41\\/{2}$"), "éA//"));
        assert!(accepts(&pat("^a{2}[{}]$"), "aa{") && accepts(&pat("^x{$"), "x{"));
        assert!(accepts(&pat("^[\\w-]+$"), "a-b_9") && !accepts(&pat("^[\\w-]+$"), "a b"));
        assert!(accepts(&pat("^\\uD83D\\uDE00$"), "😀"));
    }

    #[test]
    fn formats_accept_their_forms_only() {
        let f = |name: &str| compile(None, Some(name), 0, u32::MAX).unwrap();
        let date = f("date");
        for ok in ["2024-02-29", "2000-02-29", "1999-12-31", "2023-04-30"] {
            assert!(accepts(&date, ok), "{ok}");
        }
        for bad in [
            "2023-02-29",
            "1900-02-29",
            "2023-04-31",
            "2023-13-01",
            "23-01-01",
        ] {
            assert!(!accepts(&date, bad), "{bad}");
        }
        let dt = f("date-time");
        assert!(accepts(&dt, "2024-05-06T07:08:09Z"));
        assert!(accepts(&dt, "2024-05-06T07:08:09.123+02:00"));
        assert!(!accepts(&dt, "2024-05-06 07:08:09Z") && !accepts(&dt, "2024-05-06T24:00:00Z"));
        let ip = f("ipv4");
        assert!(accepts(&ip, "192.168.0.255") && !accepts(&ip, "256.1.1.1"));
        assert!(!accepts(&ip, "01.2.3.4"));
        let ip6 = f("ipv6");
        for ok in ["::1", "::", "fe80::1:2", "1:2:3:4:5:6:7:8", "2001:db8::"] {
            assert!(accepts(&ip6, ok), "{ok}");
        }
        assert!(!accepts(&ip6, "1:2:3:4:5:6:7:8:9") && !accepts(&ip6, "1::2::3"));
        let uuid = f("uuid");
        assert!(accepts(&uuid, "123e4567-e89b-12d3-a456-426614174000"));
        assert!(accepts(&f("email"), "a.b+c@example.co.uk"));
        assert!(!accepts(&f("email"), "a..b@example.com") && !accepts(&f("email"), "a@b"));
        assert!(accepts(&f("uri"), "https://example.com:8080/a/b?q=1#top"));
        assert!(accepts(&f("hostname"), "a-b.example") && !accepts(&f("hostname"), "-a"));
    }

    #[test]
    fn length_bounds_and_format_combine() {
        let t = compile(Some("^[ab]*$"), None, 2, 3).unwrap();
        assert!(!accepts(&t, "a") && accepts(&t, "ab") && accepts(&t, "aba"));
        assert!(!accepts(&t, "abab"));
        // Characters, not bytes.
        let t = compile(Some("^.*$"), None, 0, 2).unwrap();
        assert!(accepts(&t, "éé") && !accepts(&t, "ééé"));
        // Pattern and format both hold.
        let t = compile(Some("^2024-"), Some("date"), 0, u32::MAX).unwrap();
        assert!(accepts(&t, "2024-01-02") && !accepts(&t, "2023-01-02"));
        // A bound the format implies adds no states.
        let plain = compile(None, Some("date-time"), 0, u32::MAX).unwrap();
        let bounded = compile(None, Some("date-time"), 0, 100).unwrap();
        assert_eq!(plain.states, bounded.states);
    }

    #[test]
    fn refusals_name_the_construct() {
        for (p, want) in [
            ("(a)\\1", "backreferences"),
            ("\\bword", "word boundaries"),
            ("a(?=b)", "lookahead"),
            ("[]", "empty class"),
            ("[abc", "unclosed"),
            ("^a$b", "no string matches"),
            ("(a", "pattern"),
            ("\\q", "unknown escape"),
        ] {
            let e = compile(Some(p), None, 0, u32::MAX).unwrap_err();
            assert!(e.contains(want), "{p}: {e}");
        }
        let e = compile(None, Some("color"), 0, u32::MAX).unwrap_err();
        assert!(
            e.contains("unsupported format 'color'") && e.contains("date-time"),
            "{e}"
        );
        let e = compile(Some(&"a".repeat(2000)), None, 0, u32::MAX).unwrap_err();
        assert!(e.contains("longer than"), "{e}");
        let e = compile(Some("^[a-z]*$"), None, 5000, u32::MAX).unwrap_err();
        assert!(e.contains("states"), "{e}");
        // A long maximum is counted by the machine, not in states.
        let t = compile(None, Some("email"), 0, 254).unwrap();
        assert_eq!(t.max, 254);
        assert!(compile(Some("^a{3}$"), None, 0, 2).is_err());
    }
}
