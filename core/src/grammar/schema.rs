//! JSON-schema constraints: a compiled schema is a table of [`Entry`]s and a byte pool in
//! caller memory ([`SchemaBuilder`]), and [`SchemaMachine`] recognizes exactly the JSON texts
//! that validate against it, byte by byte.
//!
//! What the machine enforces:
//! - objects: the declared properties, **in declared order**, each at most once; the
//!   required ones must come, no other keys (`additionalProperties: false`); an object node
//!   without properties ([`Node::AnyObject`]) takes any JSON object;
//! - arrays: every item against `items`, `minItems..=maxItems`;
//! - strings: any JSON string whose length in characters (an escape counts as one; a UTF-16
//!   surrogate pair written as two `\u` escapes counts as two) is in `min..=max`;
//! - pattern strings ([`Node::Pattern`]): strings whose decoded value a DFA over its UTF-8
//!   bytes accepts (the compiler folds `pattern`, `format` and length bounds into it); such a
//!   string is written with raw UTF-8 and the short escapes, `\u` escapes only for control
//!   characters;
//! - numbers and integers: JSON number syntax (integers without fraction or exponent) and,
//!   when a bound is set, the exact value within `minimum..=maximum` (then without an
//!   exponent and with at most 18 integer and 15 fraction digits), checked on every digit so
//!   the text can always still end in range; an integer is never written `-0`; with a
//!   `multipleOf` the value is an exact multiple (written with at most as many fraction
//!   digits as the step has), and some multiple within the bounds stays reachable;
//! - enum/const (and `boolean`, `null`): one of the literals, byte for byte as compiled;
//! - unions: alternatives whose first bytes differ, the first byte picks one; objects that
//!   all begin with the same required property of constant values (a discriminated union,
//!   such as tool calls `{"name": …, "arguments": …}`) are one alternative, and the value
//!   written for that property picks the object ([`Node::Tagged`]).
//!
//! The containers open at once are at most [`MAX_STACK`]; an optional property or an array
//! item that could not finish within the stack left is not offered, so the machine never
//! reaches a state with no way out. Whitespace between tokens is capped like
//! [`JsonMachine`](super::JsonMachine)'s.

use super::json::{ws_allowed, JsonMachine};
use super::ByteMachine;

/// Containers (objects and arrays) open at once, at most.
pub const MAX_STACK: usize = 16;
/// Properties of one object and literals of one enum, at most (a candidate set is a `u64`).
pub const MAX_CHOICES: usize = 64;
/// Longest property name or literal, in bytes.
pub const MAX_ENTRY_BYTES: usize = 4096;
/// States of one pattern DFA, at most.
pub const MAX_PATTERN_STATES: usize = 4096;
/// A nesting depth no value can reach (unsatisfiable).
const INF: u8 = u8::MAX;

/// One schema node (fields as each variant describes).
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Node {
    /// Not yet defined (a reference compiled before its target).
    Pending,
    /// Any JSON object.
    AnyObject,
    /// An object: its properties are the [`Entry::Prop`]s `first..first + len`.
    Object { first: u16, len: u16 },
    /// An array of `items` with `min..=max` of them.
    Array { items: u16, min: u32, max: u32 },
    /// A string of `min..=max` characters.
    String { min: u32, max: u32 },
    /// A string of at most `max` characters whose decoded UTF-8 bytes the DFA at `off` in
    /// the pool accepts: a class per byte (256 bytes), per state whether it accepts (a byte),
    /// per state the fewest characters to an accepting state (`u32` little-endian), then
    /// per state its next state per class (`u16` little-endian). State 0 refuses, state 1
    /// starts.
    Pattern {
        off: u32,
        states: u16,
        classes: u16,
        max: u32,
    },
    /// A number (`integer`: without fraction or exponent) in `min..=max` (infinite:
    /// unbounded) and, unless `multiple` is 0, a multiple of `multiple × 10^-decimals`.
    Number {
        integer: bool,
        min: f64,
        max: f64,
        multiple: u64,
        decimals: u8,
    },
    /// One of the [`Entry::Lit`]s `first..first + len` (JSON text each).
    Enum { first: u16, len: u16 },
    /// One of the nodes in the [`Entry::Alt`]s `first..first + len`.
    Union { first: u16, len: u16 },
    /// One of the objects in the [`Entry::Alt`]s `first..first + len`, which all begin with
    /// the same required property whose values (enums) tell them apart. Until that value is
    /// written the object is `head` (that one property, its values all of theirs); then it
    /// is the object whose value it was, from its second property on.
    Tagged { head: u16, first: u16, len: u16 },
}

/// One row of the table (fields as each variant describes).
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Entry {
    /// A node, with the fewest containers a value of it opens at once (`u8::MAX`: none is
    /// finite).
    Node { node: Node, depth: u8 },
    /// An object property: its JSON-escaped name (without quotes) in the pool, its node.
    Prop {
        off: u32,
        len: u16,
        node: u16,
        required: bool,
    },
    /// An enum literal's JSON text in the pool.
    Lit { off: u32, len: u16 },
    /// A union alternative.
    Alt(u16),
}

/// Why a schema cannot be compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaError {
    /// The table or the pool is full.
    TooLarge,
    /// More than [`MAX_CHOICES`] properties, literals or alternatives in one place.
    TooManyChoices,
    /// A property name or literal is longer than [`MAX_ENTRY_BYTES`] (or empty literal).
    BadText,
    /// Two union alternatives can start with the same byte.
    AmbiguousUnion(u8),
    /// A union refers to a node that is not defined yet (a recursive reference).
    UnionOfPending,
    /// A bound range is empty (`min > max`).
    EmptyRange,
    /// A reference was never defined.
    Undefined,
    /// A pattern table is malformed (sizes, classes, targets, or a state with no way to an
    /// accepting one).
    BadPattern,
    /// No value fits: required recursion, or nesting deeper than [`MAX_STACK`].
    Unsatisfiable,
}

impl core::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SchemaError::TooLarge => f.write_str("the schema is too large"),
            SchemaError::TooManyChoices => write!(
                f,
                "more than {MAX_CHOICES} properties, enum values or alternatives in one place"
            ),
            SchemaError::BadText => f.write_str("a property name or enum value is too long"),
            SchemaError::AmbiguousUnion(b) => write!(
                f,
                "anyOf/type alternatives must start differently, two can start with '{}'",
                *b as char
            ),
            SchemaError::UnionOfPending => {
                f.write_str("anyOf may not refer directly to a recursive $ref")
            }
            SchemaError::EmptyRange => f.write_str("a minimum is above its maximum"),
            SchemaError::Undefined => f.write_str("a $ref was never defined"),
            SchemaError::BadPattern => f.write_str("a compiled pattern is malformed"),
            SchemaError::Unsatisfiable => write!(
                f,
                "no finite value fits the schema within {MAX_STACK} nested objects/arrays"
            ),
        }
    }
}

/// Compiles nodes into caller memory: children first, then their parent.
#[derive(Debug)]
pub struct SchemaBuilder<'a> {
    entries: &'a mut [Entry],
    bytes: &'a mut [u8],
    n: usize,
    b: usize,
}

/// A compiled schema over its table and pool.
#[derive(Clone, Copy, Debug)]
pub struct Schema<'a> {
    entries: &'a [Entry],
    bytes: &'a [u8],
    root: u16,
}

impl<'a> SchemaBuilder<'a> {
    /// A builder over `entries` (at most 65 535 are used) and the text pool `bytes`.
    pub fn new(entries: &'a mut [Entry], bytes: &'a mut [u8]) -> Self {
        SchemaBuilder {
            entries,
            bytes,
            n: 0,
            b: 0,
        }
    }

    /// Entries used so far.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Pool bytes used so far.
    pub fn bytes_used(&self) -> usize {
        self.b
    }

    fn push(&mut self, e: Entry) -> Result<u16, SchemaError> {
        if self.n >= self.entries.len() || self.n >= u16::MAX as usize {
            return Err(SchemaError::TooLarge);
        }
        self.entries[self.n] = e;
        self.n += 1;
        Ok((self.n - 1) as u16)
    }

    fn text(&mut self, t: &[u8]) -> Result<(u32, u16), SchemaError> {
        if t.len() > MAX_ENTRY_BYTES {
            return Err(SchemaError::BadText);
        }
        Ok((self.blob(t)?, t.len() as u16))
    }

    /// Copies `t` into the pool (no per-entry length cap: pattern tables), returning its offset.
    fn blob(&mut self, t: &[u8]) -> Result<u32, SchemaError> {
        let dst = self
            .bytes
            .get_mut(self.b..self.b + t.len())
            .ok_or(SchemaError::TooLarge)?;
        dst.copy_from_slice(t);
        self.b += t.len();
        Ok((self.b - t.len()) as u32)
    }

    fn node_at(&self, id: u16) -> Node {
        match self.entries.get(id as usize) {
            Some(Entry::Node { node, .. }) => *node,
            _ => Node::Pending,
        }
    }

    /// A node to define later with [`define`](Self::define) (for references).
    pub fn reserve(&mut self) -> Result<u16, SchemaError> {
        self.push(Entry::Node {
            node: Node::Pending,
            depth: INF,
        })
    }

    /// Gives the reserved node `id` the definition of the node `to`.
    pub fn define(&mut self, id: u16, to: u16) {
        let node = self.node_at(to);
        if let Some(e) = self.entries.get_mut(id as usize) {
            *e = Entry::Node { node, depth: INF };
        }
    }

    /// A leaf or array node (`Object`, `Enum` and `Union` have their own methods).
    pub fn node(&mut self, node: Node) -> Result<u16, SchemaError> {
        match node {
            Node::String { min, max } | Node::Array { min, max, .. } if min > max => {
                return Err(SchemaError::EmptyRange)
            }
            Node::Number {
                integer,
                min,
                max,
                multiple,
                decimals,
            } => {
                let (lo, hi) = if integer {
                    (ceil(min), floor(max))
                } else {
                    (min, max)
                };
                if lo > hi || min.is_nan() || max.is_nan() {
                    return Err(SchemaError::EmptyRange);
                }
                if multiple != 0 {
                    let d = if integer { 0 } else { decimals };
                    if d > MAX_STEP_DECIMALS || multiple > MAX_STEP {
                        return Err(SchemaError::EmptyRange);
                    }
                    let (a, b) = scaled_bounds(min, max, d);
                    if !has_multiple(a, b, multiple) {
                        return Err(SchemaError::EmptyRange);
                    }
                }
            }
            _ => {}
        }
        self.push(Entry::Node { node, depth: INF })
    }

    /// A pattern string of at most `max` characters over `table`, laid out as
    /// [`Node::Pattern`] describes. Checked: sizes, classes and targets, and that every state
    /// but 0 has a shortest way to an accepting one as its distance says (so a string the
    /// machine lets in can always still end).
    pub fn pattern(
        &mut self,
        table: &[u8],
        states: u16,
        classes: u16,
        max: u32,
    ) -> Result<u16, SchemaError> {
        let (n, c) = (states as usize, classes as usize);
        if !(2..=MAX_PATTERN_STATES).contains(&n)
            || c == 0
            || table.len() != 256 + 5 * n + 2 * n * c
        {
            return Err(SchemaError::BadPattern);
        }
        let t = Dfa {
            table,
            states,
            classes,
        };
        if table[..256].iter().any(|&k| k as usize >= c)
            || (0..n).any(|s| (0..c).any(|k| t.next_class(s as u16, k) >= states))
        {
            return Err(SchemaError::BadPattern);
        }
        for s in 1..states {
            let d = t.short(s);
            let ok = (t.accepting(s) && d == 0)
                || (!t.accepting(s)
                    && d != u32::MAX
                    && (0..=255u8).any(|b| {
                        let m = t.next(s, b);
                        m != 0 && t.short(m) != u32::MAX && t.short(m) + t.cost(b) <= d
                    }));
            if !ok {
                return Err(SchemaError::BadPattern);
            }
        }
        if t.short(1) as u64 > max as u64 {
            return Err(SchemaError::EmptyRange);
        }
        let off = self.blob(table)?;
        self.push(Entry::Node {
            node: Node::Pattern {
                off,
                states,
                classes,
                max,
            },
            depth: INF,
        })
    }

    /// An object of `props` (JSON-escaped name, node, required), in this order.
    pub fn object(&mut self, props: &[(&[u8], u16, bool)]) -> Result<u16, SchemaError> {
        if props.len() > MAX_CHOICES {
            return Err(SchemaError::TooManyChoices);
        }
        let first = self.n as u16;
        for &(name, node, required) in props {
            let (off, len) = self.text(name)?;
            self.push(Entry::Prop {
                off,
                len,
                node,
                required,
            })?;
        }
        self.node(Node::Object {
            first,
            len: props.len() as u16,
        })
    }

    /// One of `lits`, each a compact JSON text.
    pub fn enumeration<'t>(
        &mut self,
        lits: impl ExactSizeIterator<Item = &'t [u8]>,
    ) -> Result<u16, SchemaError> {
        let len = lits.len();
        if len > MAX_CHOICES || len == 0 {
            return Err(SchemaError::TooManyChoices);
        }
        let first = self.n as u16;
        for l in lits {
            if l.is_empty() {
                return Err(SchemaError::BadText);
            }
            let (off, len) = self.text(l)?;
            self.push(Entry::Lit { off, len })?;
        }
        self.node(Node::Enum {
            first,
            len: len as u16,
        })
    }

    /// One of `alts`, which must start with different bytes, except objects that
    /// [`Node::Tagged`] can tell apart.
    pub fn union(&mut self, alts: &[u16]) -> Result<u16, SchemaError> {
        if alts.len() > MAX_CHOICES || alts.is_empty() {
            return Err(SchemaError::TooManyChoices);
        }
        let mut objects = heapless::Vec::<u16, MAX_CHOICES>::new();
        for &a in alts {
            if matches!(self.node_at(a), Node::Object { .. }) {
                let _ = objects.push(a);
            }
        }
        let mut rest = heapless::Vec::<u16, MAX_CHOICES>::new();
        let tagged = if objects.len() > 1 {
            self.tagged(&objects)?
        } else {
            None
        };
        for &a in alts {
            if tagged.is_none() || !objects.contains(&a) {
                let _ = rest.push(a);
            }
        }
        if let Some(t) = tagged {
            let _ = rest.push(t);
        }
        if rest.len() == 1 {
            return Ok(rest[0]);
        }
        let alts = &rest[..];
        let mut seen = [false; 256];
        for &a in alts {
            let starts = self.starts(a)?;
            for (b, &s) in starts.iter().enumerate() {
                if s && seen[b] {
                    return Err(SchemaError::AmbiguousUnion(b as u8));
                }
                seen[b] |= s;
            }
        }
        let first = self.n as u16;
        for &a in alts {
            self.push(Entry::Alt(a))?;
        }
        self.node(Node::Union {
            first,
            len: alts.len() as u16,
        })
    }

    /// The (JSON-escaped name, value node) of the first property of object `id`, when it is
    /// required and its value an enum.
    fn tag_of(&self, id: u16) -> Option<(u32, u16, u16)> {
        let Node::Object { first, len } = self.node_at(id) else {
            return None;
        };
        match self.entries.get(first as usize) {
            Some(&Entry::Prop {
                off,
                len: name_len,
                node,
                required: true,
            }) if len > 0 && matches!(self.node_at(node), Node::Enum { .. }) => {
                Some((off, name_len, node))
            }
            _ => None,
        }
    }

    /// The pool bytes at `(offset, length)`.
    fn text_at(&self, (off, len): (u32, u16)) -> &[u8] {
        &self.bytes[off as usize..][..len as usize]
    }

    /// The literals `(offset, length)` of enum node `id`.
    fn lits_of(&self, id: u16) -> impl Iterator<Item = (u32, u16)> + '_ {
        let (first, len) = match self.node_at(id) {
            Node::Enum { first, len } => (first, len),
            _ => (0, 0),
        };
        (first..first + len).filter_map(move |i| match self.entries[i as usize] {
            Entry::Lit { off, len } => Some((off, len)),
            _ => None,
        })
    }

    /// The [`Node::Tagged`] of `objects`, or `None` when their first properties do not tell
    /// them apart (not all required enums of one name, a value shared, more than
    /// [`MAX_CHOICES`] values in all).
    fn tagged(&mut self, objects: &[u16]) -> Result<Option<u16>, SchemaError> {
        let Some((name_off, name_len, _)) = self.tag_of(objects[0]) else {
            return Ok(None);
        };
        let mut total = 0;
        for (i, &o) in objects.iter().enumerate() {
            let Some((off, len, values)) = self.tag_of(o) else {
                return Ok(None);
            };
            if self.text_at((off, len)) != self.text_at((name_off, name_len)) {
                return Ok(None);
            }
            for v in self.lits_of(values) {
                total += 1;
                for &p in &objects[..i] {
                    let Some((_, _, earlier)) = self.tag_of(p) else {
                        return Ok(None);
                    };
                    if self
                        .lits_of(earlier)
                        .any(|w| self.text_at(w) == self.text_at(v))
                    {
                        return Ok(None);
                    }
                }
            }
        }
        if total > MAX_CHOICES {
            return Ok(None);
        }
        // The head: the shared property, its values those of every object in order.
        let lit_first = self.n as u16;
        for &o in objects {
            let values = self.tag_of(o).map_or(0, |t| t.2);
            let (first, len) = match self.node_at(values) {
                Node::Enum { first, len } => (first, len),
                _ => (0, 0),
            };
            for i in first..first + len {
                let e = self.entries[i as usize];
                self.push(e)?;
            }
        }
        let values = self.node(Node::Enum {
            first: lit_first,
            len: total as u16,
        })?;
        let prop_first = self.n as u16;
        self.push(Entry::Prop {
            off: name_off,
            len: name_len,
            node: values,
            required: true,
        })?;
        let head = self.node(Node::Object {
            first: prop_first,
            len: 1,
        })?;
        let first = self.n as u16;
        for &o in objects {
            self.push(Entry::Alt(o))?;
        }
        self.node(Node::Tagged {
            head,
            first,
            len: objects.len() as u16,
        })
        .map(Some)
    }

    /// The bytes a value of node `id` can start with.
    fn starts(&self, id: u16) -> Result<[bool; 256], SchemaError> {
        let mut s = [false; 256];
        match self.node_at(id) {
            Node::Pending => return Err(SchemaError::UnionOfPending),
            Node::AnyObject | Node::Object { .. } | Node::Tagged { .. } => s[b'{' as usize] = true,
            Node::Array { .. } => s[b'[' as usize] = true,
            Node::String { .. } | Node::Pattern { .. } => s[b'"' as usize] = true,
            Node::Number { .. } => {
                s[b'-' as usize] = true;
                s[b'0' as usize..=b'9' as usize].fill(true);
            }
            Node::Enum { first, len } => {
                for i in first..first + len {
                    if let Entry::Lit { off, .. } = self.entries[i as usize] {
                        s[self.bytes[off as usize] as usize] = true;
                    }
                }
            }
            Node::Union { first, len } => {
                for i in first..first + len {
                    if let Entry::Alt(a) = self.entries[i as usize] {
                        let t = self.starts(a)?;
                        for (d, x) in s.iter_mut().zip(t) {
                            *d |= x;
                        }
                    }
                }
            }
        }
        Ok(s)
    }

    /// Checks the whole table with `root` as the value wanted: every reference defined and
    /// some finite value within [`MAX_STACK`] containers.
    pub fn finish(self, root: u16) -> Result<Schema<'a>, SchemaError> {
        let entries: &'a mut [Entry] = self.entries;
        let n = self.n;
        let entries = &mut entries[..n];
        for e in entries.iter() {
            if let Entry::Node {
                node: Node::Pending,
                ..
            } = e
            {
                return Err(SchemaError::Undefined);
            }
        }
        // Fewest containers per node: a fixed point, each pass settles at least one more.
        for _ in 0..=n {
            let mut changed = false;
            for i in 0..n {
                let Entry::Node { node, depth } = entries[i] else {
                    continue;
                };
                let d = min_depth(entries, node);
                if d < depth {
                    entries[i] = Entry::Node { node, depth: d };
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let schema = Schema {
            entries,
            bytes: &self.bytes[..self.b],
            root,
        };
        if schema.depth(root) as usize > MAX_STACK {
            return Err(SchemaError::Unsatisfiable);
        }
        Ok(schema)
    }
}

/// The most fraction digits a `multipleOf` step may have, and its largest integer part.
const MAX_STEP_DECIMALS: u8 = 15;
const MAX_STEP: u64 = 1_000_000_000_000_000_000;

/// `min..=max` in units of `10^-decimals`, rounded inwards (unbounded: far beyond any
/// value the digit caps allow).
fn scaled_bounds(min: f64, max: f64, decimals: u8) -> (i128, i128) {
    let far = 10i128.pow(38);
    let scale = |x: f64, up: bool| -> i128 {
        if !x.is_finite() {
            return if x > 0.0 { far } else { -far };
        }
        let v = x * pow10(decimals);
        let r = if up { ceil(v) } else { floor(v) };
        if r >= 1e37 {
            far
        } else if r <= -1e37 {
            -far
        } else {
            r as i128
        }
    };
    (scale(min, true), scale(max, false))
}

/// Whether `a..=b` holds a multiple of `p`.
fn has_multiple(a: i128, b: i128, p: u64) -> bool {
    let p = p as i128;
    a <= b && a + (p - a.rem_euclid(p)) % p <= b
}

fn floor(x: f64) -> f64 {
    let t = x as i64 as f64;
    if x.is_infinite() {
        x
    } else if t > x {
        t - 1.0
    } else {
        t
    }
}

fn ceil(x: f64) -> f64 {
    -floor(-x)
}

fn depth_of(entries: &[Entry], id: u16) -> u8 {
    match entries.get(id as usize) {
        Some(Entry::Node { depth, .. }) => *depth,
        _ => INF,
    }
}

fn min_depth(entries: &[Entry], node: Node) -> u8 {
    let up = |d: u8| if d == INF { INF } else { d.saturating_add(1) };
    match node {
        Node::Pending => INF,
        // A free object runs its own recognizer, with its own stack.
        Node::AnyObject
        | Node::String { .. }
        | Node::Pattern { .. }
        | Node::Number { .. }
        | Node::Enum { .. } => 0,
        Node::Object { first, len } => {
            let mut d = 0;
            for e in &entries[first as usize..(first + len) as usize] {
                if let Entry::Prop {
                    node,
                    required: true,
                    ..
                } = e
                {
                    d = d.max(depth_of(entries, *node));
                }
            }
            up(d)
        }
        Node::Array { items, min, .. } => {
            if min == 0 {
                1
            } else {
                up(depth_of(entries, items))
            }
        }
        Node::Union { first, len } | Node::Tagged { first, len, .. } => entries
            [first as usize..(first + len) as usize]
            .iter()
            .map(|e| match e {
                Entry::Alt(a) => depth_of(entries, *a),
                _ => INF,
            })
            .min()
            .unwrap_or(INF),
    }
}

impl<'a> Schema<'a> {
    /// A schema over a table and pool that [`SchemaBuilder::finish`] accepted (kept by the
    /// caller as plain data).
    pub fn from_parts(entries: &'a [Entry], bytes: &'a [u8], root: u16) -> Self {
        Schema {
            entries,
            bytes,
            root,
        }
    }

    /// The table.
    pub fn entries(&self) -> &'a [Entry] {
        self.entries
    }

    /// The pool.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The root node.
    pub fn root(&self) -> u16 {
        self.root
    }

    fn node(&self, id: u16) -> Node {
        match self.entries.get(id as usize) {
            Some(Entry::Node { node, .. }) => *node,
            _ => Node::Pending,
        }
    }

    fn depth(&self, id: u16) -> u8 {
        depth_of(self.entries, id)
    }

    fn prop(&self, i: usize) -> (&'a [u8], u16, bool) {
        match self.entries.get(i) {
            Some(&Entry::Prop {
                off,
                len,
                node,
                required,
            }) => (
                &self.bytes[off as usize..off as usize + len as usize],
                node,
                required,
            ),
            _ => (&[], 0, false),
        }
    }

    /// A pattern node's DFA and character bound.
    fn dfa(&self, node: u16) -> Option<(Dfa<'a>, u32)> {
        match self.node(node) {
            Node::Pattern {
                off,
                states,
                classes,
                max,
            } => Some((
                Dfa {
                    table: &self.bytes[off as usize..],
                    states,
                    classes,
                },
                max,
            )),
            _ => None,
        }
    }

    fn lit(&self, i: usize) -> &'a [u8] {
        match self.entries.get(i) {
            Some(&Entry::Lit { off, len }) => {
                &self.bytes[off as usize..off as usize + len as usize]
            }
            _ => &[],
        }
    }
}

/// A pattern table in the pool (layout as [`Node::Pattern`] describes).
#[derive(Clone, Copy)]
struct Dfa<'a> {
    table: &'a [u8],
    states: u16,
    classes: u16,
}

impl Dfa<'_> {
    fn accepting(&self, s: u16) -> bool {
        self.table[256 + s as usize] != 0
    }

    /// The fewest characters from `s` to an accepting state (`u32::MAX`: none).
    fn short(&self, s: u16) -> u32 {
        let i = 256 + self.states as usize + 4 * s as usize;
        u32::from_le_bytes([
            self.table[i],
            self.table[i + 1],
            self.table[i + 2],
            self.table[i + 3],
        ])
    }

    fn next_class(&self, s: u16, class: usize) -> u16 {
        let i = 256 + 5 * self.states as usize + 2 * (s as usize * self.classes as usize + class);
        u16::from_le_bytes([self.table[i], self.table[i + 1]])
    }

    /// The state after the value byte `b` (0: refused).
    fn next(&self, s: u16, b: u8) -> u16 {
        self.next_class(s, self.table[b as usize] as usize)
    }

    /// Characters `b` adds: 1 unless it continues a UTF-8 sequence.
    fn cost(&self, b: u8) -> u32 {
        (b & 0xc0 != 0x80) as u32
    }
}

/// Where a pattern string is inside an escape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PatEsc {
    No,
    Backslash,
    /// In `\u00XX`: hex digits left and the value so far (always below 0x20).
    Hex {
        left: u8,
        cp: u8,
    },
}

/// What the innermost open container expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    /// After the opening bracket.
    Open,
    /// After a comma.
    Comma,
    /// After a key (the property's entry index): `:`.
    Colon(u16),
    /// After a value.
    After,
}

/// One open container: its node, the next property index (object) or the items so far
/// (array), and what comes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Frame {
    node: u16,
    idx: u32,
    phase: Phase,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Esc {
    No,
    Backslash,
    Hex(u8),
    Utf8 { left: u8, lo: u8, hi: u8 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum NumSt {
    /// Before the first byte (only while the first byte is checked).
    Start,
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

/// The digits of a number so far (as [`Lex::Num`] keeps them).
#[derive(Clone, Copy)]
struct Digits {
    st: NumSt,
    neg: bool,
    int: u64,
    idigits: u8,
    frac: u64,
    fdigits: u8,
}

/// The token in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Lex {
    /// Between tokens.
    None,
    /// A value of this node must come.
    Expect(u16),
    /// In an object key: the candidate properties (bits over the object's properties) and
    /// the name bytes matched.
    Key { cands: u64, pos: u16 },
    /// In a string: characters so far (capped where the bounds stop caring).
    Str { node: u16, len: u32, esc: Esc },
    /// In a number: digits kept only when the node is bounded.
    Num {
        node: u16,
        st: NumSt,
        neg: bool,
        int: u64,
        idigits: u8,
        frac: u64,
        fdigits: u8,
    },
    /// In a pattern string: the DFA state and characters so far (0 when unbounded).
    Pat {
        node: u16,
        st: u16,
        len: u32,
        esc: PatEsc,
    },
    /// In an enum literal: candidates and bytes matched.
    Enum { node: u16, cands: u64, pos: u16 },
    /// In a free object.
    Any(JsonMachine),
}

/// The machine's whole state, plain data (hashable: a mask cache can key on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SchemaState {
    stack: [Frame; MAX_STACK],
    depth: u8,
    lex: Lex,
    /// The current whitespace run: its length, and whether it holds a newline.
    ws: u16,
    nl: bool,
    done: bool,
}

impl SchemaState {
    /// The state before the value of `schema`'s root.
    pub fn new(schema: &Schema<'_>) -> Self {
        SchemaState {
            stack: [Frame {
                node: 0,
                idx: 0,
                phase: Phase::Open,
            }; MAX_STACK],
            depth: 0,
            lex: Lex::Expect(schema.root),
            ws: 0,
            nl: false,
            done: false,
        }
    }
}

/// A recognizer of the JSON texts valid against a schema (copyable: a state and a reference).
#[derive(Clone, Copy, Debug)]
pub struct SchemaMachine<'s> {
    schema: &'s Schema<'s>,
    /// The state (keep it to resume with another machine over the same schema).
    pub state: SchemaState,
}

const MAX_INT_DIGITS: u8 = 18;
const MAX_FRAC_DIGITS: u8 = 15;

fn pow10(n: u8) -> f64 {
    let mut x = 1.0;
    for _ in 0..n {
        x *= 10.0;
    }
    x
}

impl<'s> SchemaMachine<'s> {
    /// A machine at the start of `schema`'s root value.
    pub fn new(schema: &'s Schema<'s>) -> Self {
        SchemaMachine {
            schema,
            state: SchemaState::new(schema),
        }
    }

    /// A machine resuming `state` over `schema`.
    pub fn with_state(schema: &'s Schema<'s>, state: SchemaState) -> Self {
        SchemaMachine { schema, state }
    }

    /// Feeds every byte of `bytes`; `false` at the first refused one.
    pub fn push_all(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.push(b))
    }

    /// Whether a value of `node` fits in the containers left.
    fn fits(&self, node: u16) -> bool {
        let d = self.schema.depth(node);
        d != INF && self.state.depth as usize + d as usize <= MAX_STACK
    }

    fn top(&mut self) -> &mut Frame {
        &mut self.state.stack[self.state.depth as usize - 1]
    }

    /// Ends the value in progress (a number or literal, which only the next byte ends) and
    /// pushes `b` as what follows it; on refusal the state is `saved` again.
    fn end_value_then(&mut self, b: u8, saved: SchemaState) -> bool {
        self.value_done();
        (self.state.ws, self.state.nl) = (0, false);
        let ok = self.push(b);
        if !ok {
            self.state = saved;
        }
        ok
    }

    /// The value in progress is complete.
    fn value_done(&mut self) {
        self.state.lex = Lex::None;
        if self.state.depth == 0 {
            self.state.done = true;
            return;
        }
        let f = self.top();
        if let Phase::Open | Phase::Comma = f.phase {
            // An array item.
            f.idx += 1;
        }
        f.phase = Phase::After;
    }

    fn open(&mut self, node: u16) -> bool {
        if self.state.depth as usize >= MAX_STACK {
            return false;
        }
        self.state.stack[self.state.depth as usize] = Frame {
            node,
            idx: 0,
            phase: Phase::Open,
        };
        self.state.depth += 1;
        self.state.lex = Lex::None;
        true
    }

    fn close(&mut self) -> bool {
        self.state.depth -= 1;
        self.value_done();
        true
    }

    /// The first byte of a value of `node`.
    fn start(&mut self, node: u16, b: u8) -> bool {
        let s = self.schema;
        match s.node(node) {
            Node::Pending => false,
            Node::Union { first, len } => (first..first + len).any(|i| {
                let Entry::Alt(a) = s.entries[i as usize] else {
                    return false;
                };
                if !self.fits(a) {
                    return false;
                }
                let mut t = *self;
                if t.start(a, b) {
                    *self = t;
                    true
                } else {
                    false
                }
            }),
            Node::AnyObject => {
                let mut j = JsonMachine::new();
                if b != b'{' || !j.push(b) {
                    return false;
                }
                self.state.lex = Lex::Any(j);
                true
            }
            Node::Object { .. } | Node::Tagged { .. } | Node::Array { .. } => {
                let want = if !matches!(s.node(node), Node::Array { .. }) {
                    b'{'
                } else {
                    b'['
                };
                b == want && self.open(node)
            }
            Node::String { .. } => {
                self.state.lex = Lex::Str {
                    node,
                    len: 0,
                    esc: Esc::No,
                };
                b == b'"'
            }
            Node::Pattern { .. } => {
                self.state.lex = Lex::Pat {
                    node,
                    st: 1,
                    len: 0,
                    esc: PatEsc::No,
                };
                b == b'"'
            }
            Node::Number { .. } => {
                let st = match b {
                    b'-' => NumSt::Minus,
                    b'0' => NumSt::Zero,
                    b'1'..=b'9' => NumSt::Int,
                    _ => return false,
                };
                let mut t = *self;
                t.state.lex = Lex::Num {
                    node,
                    st: if st == NumSt::Minus {
                        NumSt::Minus
                    } else {
                        NumSt::Start
                    },
                    neg: false,
                    int: 0,
                    idigits: 0,
                    frac: 0,
                    fdigits: 0,
                };
                if st == NumSt::Minus {
                    if let Lex::Num { neg, .. } = &mut t.state.lex {
                        *neg = true;
                    }
                    if !t.num_feasible() {
                        return false;
                    }
                } else if !t.number(b) {
                    return false;
                }
                *self = t;
                true
            }
            Node::Enum { first, len } => {
                let mut cands = 0u64;
                let fit = self.tag_values_that_fit();
                for k in 0..len {
                    if s.lit((first + k) as usize).first() == Some(&b) {
                        cands |= 1 << k;
                    }
                }
                cands &= fit;
                self.state.lex = Lex::Enum {
                    node,
                    cands,
                    pos: 1,
                };
                cands != 0
            }
        }
    }

    /// Bounds of a number node (`None`: unbounded, no step either) and whether it is an
    /// integer.
    fn bounds(&self, node: u16) -> (bool, Option<(f64, f64)>) {
        match self.schema.node(node) {
            Node::Number {
                integer,
                min,
                max,
                multiple,
                ..
            } => {
                let bounded = min.is_finite() || max.is_finite() || multiple != 0;
                (integer, bounded.then_some((min, max)))
            }
            _ => (false, None),
        }
    }

    /// A number node's step as (integer multiple, fraction digits), `None` without one.
    fn step(&self, node: u16) -> Option<(u64, u8)> {
        match self.schema.node(node) {
            Node::Number {
                integer,
                multiple,
                decimals,
                ..
            } if multiple != 0 => Some((multiple, if integer { 0 } else { decimals })),
            _ => None,
        }
    }

    /// With a step: whether the number `d` of `node` can still end as a multiple within
    /// bounds. Completions are intervals of the value in units of `10^-decimals`.
    fn step_feasible(&self, node: u16, (p, e): (u64, u8), d: Digits) -> bool {
        let Digits {
            st,
            neg,
            int,
            idigits,
            frac,
            fdigits,
        } = d;
        let (_, bounds) = self.bounds(node);
        let (lo, hi) = bounds.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
        let (lo, hi) = scaled_bounds(lo, hi, e);
        let p10 = |n: u8| 10i128.pow(n as u32);
        let hit = |a: i128, b: i128| {
            let (a, b) = if neg { (-b, -a) } else { (a, b) };
            has_multiple(a.max(lo), b.min(hi), p)
        };
        match st {
            NumSt::Minus => (0u8..=9).any(|d| {
                let mut t = *self;
                t.number(b'0' + d)
            }),
            NumSt::Zero => hit(0, p10(e) - 1),
            NumSt::Int => (0..=MAX_INT_DIGITS - idigits).any(|j| {
                let v = int as i128;
                hit(v * p10(j + e), (v + 1) * p10(j + e) - 1)
            }),
            NumSt::Dot | NumSt::Frac => {
                let q = int as i128 * p10(fdigits) + frac as i128;
                let k = p10(e - fdigits);
                hit(q * k, (q + 1) * k - 1)
            }
            NumSt::Start | NumSt::E | NumSt::ESign | NumSt::Exp => false,
        }
    }

    /// Whether the number so far can still end within its bounds.
    fn num_feasible(&self) -> bool {
        let Lex::Num {
            node,
            st,
            neg,
            int,
            idigits,
            frac,
            fdigits,
        } = self.state.lex
        else {
            return false;
        };
        if let Some(step) = self.step(node) {
            let d = Digits {
                st,
                neg,
                int,
                idigits,
                frac,
                fdigits,
            };
            return self.step_feasible(node, step, d);
        }
        let (integer, Some((lo, hi))) = self.bounds(node) else {
            return true;
        };
        // Completions lie in [x, x + width) for magnitudes; mirrored when negative.
        let hit = |x: f64, width: f64, closed: bool| {
            let (a, b) = if neg {
                (-(x + width), -x)
            } else {
                (x, x + width)
            };
            if closed {
                // Exactly x (an integer end).
                let v = if neg { -x } else { x };
                lo <= v && v <= hi
            } else if neg {
                b >= lo && a < hi
            } else {
                a <= hi && lo < b
            }
        };
        match st {
            NumSt::Minus => (0u8..=9).any(|d| {
                let mut t = *self;
                t.number(b'0' + d)
            }),
            NumSt::Zero => {
                if integer {
                    hit(0.0, 0.0, true)
                } else {
                    hit(0.0, 1.0, false) || hit(0.0, 0.0, true)
                }
            }
            NumSt::Int => {
                let v = int as f64;
                (0..=MAX_INT_DIGITS - idigits).any(|j| {
                    let p = pow10(j);
                    if integer {
                        // [v * 10^j, (v + 1) * 10^j - 1], closed.
                        let a = v * p;
                        let w = p - 1.0;
                        if neg {
                            -a >= lo && -(a + w) <= hi
                        } else {
                            a <= hi && a + w >= lo
                        }
                    } else {
                        hit(v * p, p, false) || hit(v * p, 0.0, true)
                    }
                })
            }
            NumSt::Dot | NumSt::Frac => {
                let x = int as f64 + frac as f64 / pow10(fdigits);
                hit(x, 1.0 / pow10(fdigits), false) || hit(x, 0.0, true)
            }
            NumSt::Start | NumSt::E | NumSt::ESign | NumSt::Exp => false,
        }
    }

    /// Whether the number so far is complete and within bounds.
    fn num_complete(&self) -> bool {
        let Lex::Num {
            node,
            st,
            neg,
            int,
            frac,
            fdigits,
            ..
        } = self.state.lex
        else {
            return false;
        };
        if !matches!(st, NumSt::Zero | NumSt::Int | NumSt::Frac | NumSt::Exp) {
            return false;
        }
        let (_, Some((lo, hi))) = self.bounds(node) else {
            return true;
        };
        if let Some((p, e)) = self.step(node) {
            let n = (int as i128 * 10i128.pow(fdigits as u32) + frac as i128)
                * 10i128.pow((e - fdigits) as u32);
            let n = if neg { -n } else { n };
            let (a, b) = scaled_bounds(lo, hi, e);
            return a <= n && n <= b && n % p as i128 == 0;
        }
        let x = int as f64 + frac as f64 / pow10(fdigits);
        let v = if neg { -x } else { x };
        lo <= v && v <= hi
    }

    /// A byte inside a number: `false` when it does not continue it.
    fn number(&mut self, b: u8) -> bool {
        let Lex::Num {
            node,
            st,
            neg,
            mut int,
            mut idigits,
            mut frac,
            mut fdigits,
        } = self.state.lex
        else {
            return false;
        };
        let (integer, bounds) = self.bounds(node);
        let bounded = bounds.is_some();
        let d = b.wrapping_sub(b'0') as u64;
        let next = match (st, b) {
            // `-0` is no integer a schema author means.
            (NumSt::Minus, b'0') if !integer => NumSt::Zero,
            (NumSt::Start, b'0') => NumSt::Zero,
            (NumSt::Start | NumSt::Minus, b'1'..=b'9') | (NumSt::Int, b'0'..=b'9') => NumSt::Int,
            (NumSt::Zero | NumSt::Int, b'.')
                if !integer && self.step(node).is_none_or(|(_, e)| e > 0) =>
            {
                NumSt::Dot
            }
            (NumSt::Zero | NumSt::Int | NumSt::Frac, b'e' | b'E') if !integer && !bounded => {
                NumSt::E
            }
            (NumSt::Dot | NumSt::Frac, b'0'..=b'9') => NumSt::Frac,
            (NumSt::E, b'+' | b'-') => NumSt::ESign,
            (NumSt::E | NumSt::ESign | NumSt::Exp, b'0'..=b'9') => NumSt::Exp,
            _ => return false,
        };
        if bounded {
            match next {
                NumSt::Int | NumSt::Zero if b != b'.' => {
                    if idigits >= MAX_INT_DIGITS {
                        return false;
                    }
                    int = int * 10 + d;
                    idigits += 1;
                }
                NumSt::Frac => {
                    let cap = self.step(node).map_or(MAX_FRAC_DIGITS, |(_, e)| e);
                    if fdigits >= cap {
                        return false;
                    }
                    frac = frac * 10 + d;
                    fdigits += 1;
                }
                _ => {}
            }
        }
        let mut t = *self;
        t.state.lex = Lex::Num {
            node,
            st: next,
            neg,
            int,
            idigits,
            frac,
            fdigits,
        };
        if !t.num_feasible() {
            return false;
        }
        *self = t;
        true
    }

    /// A byte inside a string of `node`.
    fn string(&mut self, node: u16, len: u32, esc: Esc, b: u8) -> bool {
        let (min, max) = match self.schema.node(node) {
            Node::String { min, max } => (min, max),
            _ => return false,
        };
        // Past what the bounds care about the count stays put (equal states cache alike).
        let cap = if max == u32::MAX { min } else { max };
        let counted = |l: u32| (l + 1).min(cap);
        let room = len < max;
        let set = |m: &mut Self, len: u32, esc: Esc| {
            m.state.lex = Lex::Str { node, len, esc };
        };
        match esc {
            Esc::No => {
                let (left, lo, hi) = match b {
                    b'"' => {
                        if len < min {
                            return false;
                        }
                        self.value_done();
                        return true;
                    }
                    b'\\' if room => {
                        set(self, len, Esc::Backslash);
                        return true;
                    }
                    0x20..=0x7f if b != b'\\' && room => {
                        set(self, counted(len), Esc::No);
                        return true;
                    }
                    _ if !room => return false,
                    0xc2..=0xdf => (1, 0x80, 0xbf),
                    0xe0 => (2, 0xa0, 0xbf),
                    0xed => (2, 0x80, 0x9f),
                    0xe1..=0xef => (2, 0x80, 0xbf),
                    0xf0 => (3, 0x90, 0xbf),
                    0xf1..=0xf3 => (3, 0x80, 0xbf),
                    0xf4 => (3, 0x80, 0x8f),
                    _ => return false,
                };
                set(self, len, Esc::Utf8 { left, lo, hi });
                true
            }
            Esc::Backslash => {
                let e = match b {
                    b'u' => Esc::Hex(4),
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                        set(self, counted(len), Esc::No);
                        return true;
                    }
                    _ => return false,
                };
                set(self, len, e);
                true
            }
            Esc::Hex(left) => {
                if !b.is_ascii_hexdigit() {
                    return false;
                }
                if left == 1 {
                    set(self, counted(len), Esc::No);
                } else {
                    set(self, len, Esc::Hex(left - 1));
                }
                true
            }
            Esc::Utf8 { left, lo, hi } => {
                if !(lo..=hi).contains(&b) {
                    return false;
                }
                if left == 1 {
                    set(self, counted(len), Esc::No);
                } else {
                    set(
                        self,
                        len,
                        Esc::Utf8 {
                            left: left - 1,
                            lo: 0x80,
                            hi: 0xbf,
                        },
                    );
                }
                true
            }
        }
    }

    /// A byte inside a pattern string of `node`, in DFA state `st` after `len` characters.
    fn pattern(&mut self, node: u16, st: u16, len: u32, esc: PatEsc, b: u8) -> bool {
        let Some((d, max)) = self.schema.dfa(node) else {
            return false;
        };
        // Whether the value byte `v` may come: its state can still end within `max`.
        let fits = |v: u8| {
            let m = d.next(st, v);
            let l = len as u64 + d.cost(v) as u64;
            m != 0 && l + d.short(m) as u64 <= max as u64
        };
        let mut go = |v: u8, esc: PatEsc| {
            if !fits(v) {
                return false;
            }
            // The count only matters under a bound (unbounded strings keep equal states).
            let len = if max == u32::MAX { 0 } else { len + d.cost(v) };
            self.state.lex = Lex::Pat {
                node,
                st: d.next(st, v),
                len,
                esc,
            };
            true
        };
        let hold = |m: &mut Self, esc: PatEsc| {
            m.state.lex = Lex::Pat { node, st, len, esc };
            true
        };
        match esc {
            PatEsc::No => match b {
                b'"' if d.accepting(st) => {
                    self.value_done();
                    true
                }
                b'\\' if (0..0x20u8).chain(*b"\"\\/").any(fits) => hold(self, PatEsc::Backslash),
                b'"' | b'\\' | 0..=0x1f => false,
                _ => go(b, PatEsc::No),
            },
            PatEsc::Backslash => {
                let v = match b {
                    b'u' if (0..0x20u8).any(fits) => {
                        return hold(self, PatEsc::Hex { left: 4, cp: 0 })
                    }
                    b'"' | b'\\' | b'/' => b,
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    _ => return false,
                };
                go(v, PatEsc::No)
            }
            PatEsc::Hex { left, cp } => {
                let h = match b {
                    b'0'..=b'9' => b - b'0',
                    b'a'..=b'f' => b - b'a' + 10,
                    b'A'..=b'F' => b - b'A' + 10,
                    _ => return false,
                };
                match left {
                    // `\u00`: only control characters are written with a `\u` escape (as
                    // JSON writers do; a printable one costs six bytes for one).
                    4 | 3 if h == 0 => hold(self, PatEsc::Hex { left: left - 1, cp }),
                    2 if h < 2 && (0..16).any(|l| fits(h << 4 | l)) => {
                        hold(self, PatEsc::Hex { left: 1, cp: h })
                    }
                    1 => go(cp << 4 | h, PatEsc::No),
                    _ => false,
                }
            }
        }
    }

    /// The properties `(first, len)` of the object open in frame `f` (a [`Node::Tagged`]'s
    /// before its tag is written: its head's).
    fn props(&self, f: Frame) -> Option<(u16, u16)> {
        match self.schema.node(f.node) {
            Node::Object { first, len } => Some((first, len)),
            Node::Tagged { head, .. } => match self.schema.node(head) {
                Node::Object { first, len } => Some((first, len)),
                _ => None,
            },
            _ => None,
        }
    }

    /// The objects of the innermost open [`Node::Tagged`] whose tag is still to be written,
    /// each with its count of tag values (the head's values are theirs in this order).
    fn tag_objects(&self) -> impl Iterator<Item = (u16, u32)> + 's {
        let s = self.schema;
        let (first, len) = match self.state.depth {
            0 => (0, 0),
            d => match s.node(self.state.stack[d as usize - 1].node) {
                Node::Tagged { first, len, .. } => (first, len),
                _ => (0, 0),
            },
        };
        (first..first + len).filter_map(move |i| {
            let Entry::Alt(o) = s.entries[i as usize] else {
                return None;
            };
            let Node::Object { first: p, .. } = s.node(o) else {
                return None;
            };
            match s.node(s.prop(p as usize).1) {
                Node::Enum { len, .. } => Some((o, len as u32)),
                _ => None,
            }
        })
    }

    /// The tag values (bits over the head's enum) whose objects fit in the containers left;
    /// every bit when no tag is being written.
    fn tag_values_that_fit(&self) -> u64 {
        let mut bits = 0u64;
        let mut at = 0;
        let mut any = false;
        for (o, n) in self.tag_objects() {
            any = true;
            // The object's frame is open already: it takes the place of the tagged one's.
            let d = self.schema.depth(o);
            if d != INF && self.state.depth as usize - 1 + d as usize <= MAX_STACK {
                bits |= (u64::MAX >> (64 - n)) << at;
            }
            at += n;
        }
        if any {
            bits
        } else {
            u64::MAX
        }
    }

    /// Tag value `k` of the innermost [`Node::Tagged`] object has been written: the object
    /// becomes the one whose value it is, after its first property.
    fn tag_written(&mut self, k: u32) {
        let mut at = 0;
        for (o, n) in self.tag_objects() {
            if k < at + n {
                let f = self.top();
                f.node = o;
                f.idx = 1;
                return;
            }
            at += n;
        }
    }

    /// The candidate keys after `{` or `,`: from the next property up to the first required
    /// one, those whose values fit.
    fn key_cands(&self, f: Frame) -> u64 {
        let Some((first, len)) = self.props(f) else {
            return 0;
        };
        let mut cands = 0;
        for k in f.idx..len as u32 {
            let (_, node, required) = self.schema.prop((first as u32 + k) as usize);
            // The value sits one container deeper than the object's own frame.
            if self.schema.depth(node) != INF
                && self.state.depth as usize + self.schema.depth(node) as usize <= MAX_STACK
            {
                cands |= 1 << k;
            }
            if required {
                break;
            }
        }
        cands
    }

    /// Whether an object may close: no required property left.
    fn may_close(&self, f: Frame) -> bool {
        let Some((first, len)) = self.props(f) else {
            return false;
        };
        (f.idx..len as u32).all(|k| !self.schema.prop((first as u32 + k) as usize).2)
    }

    fn key_byte(&mut self, cands: u64, pos: u16, b: u8) -> bool {
        let f = self.state.stack[self.state.depth as usize - 1];
        let Some((first, _)) = self.props(f) else {
            return false;
        };
        let schema = self.schema;
        let name = |k: u32| schema.prop((first as u32 + k) as usize).0;
        let mut next = 0u64;
        let mut bits = cands;
        while bits != 0 {
            let k = bits.trailing_zeros();
            bits &= bits - 1;
            let n = name(k);
            if b == b'"' && n.len() == pos as usize {
                let f = self.top();
                f.idx = k + 1;
                f.phase = Phase::Colon(first + k as u16);
                self.state.lex = Lex::None;
                return true;
            }
            if n.get(pos as usize) == Some(&b) {
                next |= 1 << k;
            }
        }
        if next == 0 {
            return false;
        }
        self.state.lex = Lex::Key {
            cands: next,
            pos: pos + 1,
        };
        true
    }

    /// A byte between tokens inside the innermost container.
    fn structural(&mut self, b: u8) -> bool {
        if self.state.depth == 0 {
            return false;
        }
        let f = self.state.stack[self.state.depth as usize - 1];
        match self.schema.node(f.node) {
            Node::Object { .. } | Node::Tagged { .. } => match (f.phase, b) {
                (Phase::Open | Phase::Comma, b'"') => {
                    let cands = self.key_cands(f);
                    self.state.lex = Lex::Key { cands, pos: 0 };
                    cands != 0
                }
                (Phase::Open | Phase::After, b'}') if self.may_close(f) => self.close(),
                (Phase::After, b',') if self.key_cands(f) != 0 => {
                    self.top().phase = Phase::Comma;
                    true
                }
                (Phase::Colon(p), b':') => {
                    let (_, node, _) = self.schema.prop(p as usize);
                    self.state.lex = Lex::Expect(node);
                    true
                }
                _ => false,
            },
            Node::Array { items, min, max } => match (f.phase, b) {
                (Phase::Open, b']') if min == 0 => self.close(),
                (Phase::After, b']') if f.idx >= min => self.close(),
                (Phase::After, b',') if f.idx < max && self.fits(items) => {
                    self.top().phase = Phase::Comma;
                    true
                }
                (Phase::Open | Phase::Comma, _) if f.idx < max && self.fits(items) => {
                    self.start(items, b)
                }
                _ => false,
            },
            _ => false,
        }
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r')
}

impl ByteMachine for SchemaMachine<'_> {
    fn push(&mut self, b: u8) -> bool {
        if self.state.done {
            return false;
        }
        let saved = self.state;
        let between = matches!(self.state.lex, Lex::None | Lex::Expect(_));
        if between && is_ws(b) {
            if !ws_allowed(self.state.ws, self.state.nl, b, self.state.depth) {
                return false;
            }
            (self.state.ws, self.state.nl) = (self.state.ws + 1, self.state.nl || b == b'\n');
            return true;
        }
        let ok = match self.state.lex {
            Lex::None => self.structural(b),
            Lex::Expect(node) => self.start(node, b),
            Lex::Key { cands, pos } => self.key_byte(cands, pos, b),
            Lex::Str { node, len, esc } => self.string(node, len, esc, b),
            Lex::Pat { node, st, len, esc } => self.pattern(node, st, len, esc, b),
            Lex::Num { .. } => {
                if self.number(b) {
                    true
                } else if self.num_complete() {
                    // The number ended; this byte belongs to what follows it.
                    return self.end_value_then(b, saved);
                } else {
                    false
                }
            }
            Lex::Enum { node, cands, pos } => {
                let Node::Enum { first, .. } = self.schema.node(node) else {
                    return false;
                };
                let mut next = 0u64;
                let mut complete = None;
                let mut bits = cands;
                while bits != 0 {
                    let k = bits.trailing_zeros();
                    bits &= bits - 1;
                    let l = self.schema.lit((first as u32 + k) as usize);
                    if l.get(pos as usize) == Some(&b) {
                        next |= 1 << k;
                    }
                    if l.len() == pos as usize {
                        complete = Some(k);
                    }
                }
                if next != 0 {
                    self.state.lex = Lex::Enum {
                        node,
                        cands: next,
                        pos: pos + 1,
                    };
                    true
                } else if let Some(k) = complete {
                    self.tag_written(k);
                    return self.end_value_then(b, saved);
                } else {
                    false
                }
            }
            Lex::Any(mut j) => {
                if j.push(b) {
                    if j.is_done() {
                        self.value_done();
                    } else {
                        self.state.lex = Lex::Any(j);
                    }
                    true
                } else {
                    false
                }
            }
        };
        if ok {
            (self.state.ws, self.state.nl) = (0, false);
        } else {
            self.state = saved;
        }
        ok
    }

    fn is_accepting(&self) -> bool {
        if self.state.done {
            return true;
        }
        if self.state.depth != 0 {
            return false;
        }
        match self.state.lex {
            Lex::Num { .. } => self.num_complete(),
            Lex::Enum { node, cands, pos } => {
                let Node::Enum { first, .. } = self.schema.node(node) else {
                    return false;
                };
                (0..64u32).any(|k| {
                    cands & (1 << k) != 0
                        && self.schema.lit((first as u32 + k) as usize).len() == pos as usize
                })
            }
            _ => false,
        }
    }

    fn is_done(&self) -> bool {
        self.state.done
    }

    fn plain_budget(&self) -> Option<usize> {
        match self.state.lex {
            Lex::Str {
                node,
                len,
                esc: Esc::No,
            } => match self.schema.node(node) {
                Node::String { max, .. } if max == u32::MAX => Some(usize::MAX),
                Node::String { max, .. } => Some(max.saturating_sub(len) as usize),
                _ => None,
            },
            Lex::Any(j) => j.plain_budget(),
            _ => None,
        }
    }
}
