//! Constrained decoding on the engine thread: [`Grammar`] is what a request asks for
//! (`response_format`), [`Vocab`] the per-model token tables (built once, on first use), and
//! [`Constraint`] one sequence's recognizer state with its cache of masks.
//!
//! A mask costs one of: a cache hit (a bitset per recognizer state, least recently used out),
//! or a trie walk over the accepted prefixes. Inside a string that takes free text, tokens of
//! plain text (complete UTF-8 without `"`, `\` or control bytes) are admitted from a
//! precomputed list by their length in characters, and only the other tokens are walked.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use trillim_core::grammar::{
    ByteMachine, Entry, JsonMachine, Schema, SchemaMachine, SchemaState, TokenTrie, TrieNode,
};
use trillim_core::tokenizer::Tokenizer;

/// A compiled `json_schema`: table, pool and root, owned.
#[derive(Debug, Clone)]
pub struct CompiledSchema {
    /// The node table.
    pub entries: Vec<Entry>,
    /// Names and literals.
    pub bytes: Vec<u8>,
    /// The root node.
    pub root: u16,
}

impl CompiledSchema {
    /// The schema view.
    pub fn schema(&self) -> Schema<'_> {
        Schema::from_parts(&self.entries, &self.bytes, self.root)
    }
}

/// The output a request constrains its generation to.
#[derive(Debug, Clone)]
pub enum Grammar {
    /// `json_object`: one JSON object.
    JsonObject,
    /// `json_schema`: a value valid against the schema.
    Schema(CompiledSchema),
}

/// Masks kept per sequence.
const CACHE: usize = 256;

/// A sequence's recognizer state (hashable: the mask cache's key). Kept inline, not boxed:
/// it is copied and hashed once per token.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum State {
    Json(JsonMachine),
    Schema(SchemaState),
}

/// Per-model token tables for masks.
#[derive(Debug)]
pub struct Vocab {
    n_vocab: usize,
    full: Vec<TrieNode>,
    /// The trie of tokens that are not plain text.
    special: Vec<TrieNode>,
    /// Characters of each plain-text token, 0 for the others.
    plain: Vec<u8>,
    /// Every token's bytes.
    offs: Vec<u32>,
    pool: Vec<u8>,
    eog: Vec<u32>,
    /// How long building took.
    pub built_in: Duration,
}

fn is_plain(b: &[u8]) -> Option<usize> {
    let s = std::str::from_utf8(b).ok()?;
    (!s.is_empty() && !s.bytes().any(|c| c == b'"' || c == b'\\' || c < 0x20))
        .then(|| s.chars().count())
}

fn trie<'t>(
    n: usize,
    bytes: &dyn Fn(u32) -> &'t [u8],
    skip: &dyn Fn(u32) -> bool,
) -> Vec<TrieNode> {
    let mut nodes = vec![TrieNode::default(); TokenTrie::nodes_needed(n, bytes)];
    let mut order = vec![0u32; n];
    let len = TokenTrie::build(n, bytes, skip, &mut order, &mut nodes)
        .map(|t| t.len())
        .unwrap_or(0);
    nodes.truncate(len);
    nodes
}

impl Vocab {
    /// The tables of `tok`'s vocabulary.
    pub fn new(tok: &Tokenizer<'_>) -> Vocab {
        let t0 = Instant::now();
        let n = tok.n_vocab();
        let mut offs = Vec::with_capacity(n + 1);
        let mut pool = Vec::new();
        offs.push(0);
        for id in 0..n as u32 {
            pool.extend(tok.decode_token(id, false));
            offs.push(pool.len() as u32);
        }
        let bytes = |id: u32| &pool[offs[id as usize] as usize..offs[id as usize + 1] as usize];
        let eog: Vec<u32> = tok.eog_ids().to_vec();
        let skip = |id: u32| tok.is_eog(id);
        let plain: Vec<u8> = (0..n as u32)
            .map(|id| match is_plain(bytes(id)) {
                Some(c) if !skip(id) => c.min(255) as u8,
                _ => 0,
            })
            .collect();
        let full = trie(n, &bytes, &skip);
        let special = trie(n, &bytes, &|id| skip(id) || plain[id as usize] != 0);
        Vocab {
            n_vocab: n,
            full,
            special,
            plain,
            offs,
            pool,
            eog,
            built_in: t0.elapsed(),
        }
    }

    /// A token's bytes.
    pub fn bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match (self.offs.get(i), self.offs.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.pool[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Sets bit `id` of `bits` for every token `m` allows next (end-of-generation tokens
    /// once the value is complete, or when nothing else is left).
    fn allowed<M: ByteMachine>(&self, m: &M, bits: &mut [u64]) {
        bits.fill(0);
        let mut set = |id: u32| bits[id as usize / 64] |= 1 << (id % 64);
        if !m.is_done() {
            if let Some(budget) = m.plain_budget() {
                for (id, &c) in self.plain.iter().enumerate() {
                    if c != 0 && c as usize <= budget {
                        set(id as u32);
                    }
                }
                TokenTrie::from_nodes(&self.special, self.n_vocab).walk(m, &mut set);
            } else {
                TokenTrie::from_nodes(&self.full, self.n_vocab).walk(m, &mut set);
            }
        }
        let stuck = bits.iter().all(|&w| w == 0);
        if m.is_accepting() || stuck {
            for &e in &self.eog {
                if (e as usize) < self.n_vocab {
                    bits[e as usize / 64] |= 1 << (e % 64);
                }
            }
        }
    }
}

/// One sequence's constraint: the grammar, where the output is in it, and recent masks.
#[derive(Debug)]
pub struct Constraint {
    grammar: std::sync::Arc<Grammar>,
    state: State,
    cache: HashMap<State, (Box<[u64]>, u64)>,
    clock: u64,
    /// Masks computed and served from the cache, and time spent masking.
    pub computed: u64,
    /// Masks served from the cache.
    pub hits: u64,
    /// Time spent building and applying masks.
    pub spent: Duration,
}

impl Constraint {
    /// A constraint at the start of `grammar`.
    pub fn new(grammar: std::sync::Arc<Grammar>) -> Constraint {
        let state = match &*grammar {
            Grammar::JsonObject => State::Json(JsonMachine::new()),
            Grammar::Schema(s) => State::Schema(SchemaState::new(&s.schema())),
        };
        Constraint {
            grammar,
            state,
            cache: HashMap::new(),
            clock: 0,
            computed: 0,
            hits: 0,
            spent: Duration::ZERO,
        }
    }

    /// Whether the value is complete and nothing may follow.
    pub fn is_done(&self) -> bool {
        match (&self.state, &*self.grammar) {
            (State::Json(j), _) => j.is_done(),
            (State::Schema(s), Grammar::Schema(c)) => {
                SchemaMachine::with_state(&c.schema(), *s).is_done()
            }
            _ => true,
        }
    }

    /// Sets every logit the grammar refuses next to minus infinity.
    pub fn mask(&mut self, vocab: &Vocab, logits: &mut [f32]) {
        let t0 = Instant::now();
        self.clock += 1;
        let clock = self.clock;
        if let Some((_, used)) = self.cache.get_mut(&self.state) {
            *used = clock;
            self.hits += 1;
        } else {
            let mut bits = vec![0u64; vocab.n_vocab.div_ceil(64)].into_boxed_slice();
            match (&self.state, &*self.grammar) {
                (State::Json(j), _) => vocab.allowed(j, &mut bits),
                (State::Schema(s), Grammar::Schema(c)) => {
                    let schema = c.schema();
                    vocab.allowed(&SchemaMachine::with_state(&schema, *s), &mut bits)
                }
                _ => {}
            }
            if self.cache.len() >= CACHE {
                if let Some(old) = self.cache.iter().min_by_key(|(_, v)| v.1).map(|(k, _)| *k) {
                    self.cache.remove(&old);
                }
            }
            self.cache.insert(self.state, (bits, clock));
            self.computed += 1;
        }
        let bits = &self.cache[&self.state].0;
        for (i, l) in logits.iter_mut().enumerate() {
            if bits.get(i / 64).is_none_or(|w| w & (1 << (i % 64)) == 0) {
                *l = f32::NEG_INFINITY;
            }
        }
        self.spent += t0.elapsed();
    }

    /// Feeds the chosen token's bytes; `false` when the grammar refuses them.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        match (&mut self.state, &*self.grammar) {
            (State::Json(j), _) => j.push_all(bytes),
            (State::Schema(s), Grammar::Schema(c)) => {
                let schema = c.schema();
                let mut m = SchemaMachine::with_state(&schema, *s);
                let ok = m.push_all(bytes);
                *s = m.state;
                ok
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use trillim_core::format::gguf::Gguf;
    use trillim_core::grammar::{Node, SchemaBuilder};

    /// Every mask (plain-text fast path, trie walks, cache) against a scan of the whole
    /// vocabulary along random constrained walks on SmolLM2; prints the costs.
    #[test]
    fn smollm2_masks_equal_a_vocabulary_scan() {
        let file = std::fs::read(trillim_tests::smollm2_path()).unwrap();
        let g = Gguf::parse(&file).unwrap();
        let mut mem = vec![0u32; Tokenizer::mem_words_for_gguf(&g).unwrap()];
        let tok = Tokenizer::from_gguf(&g, &mut mem).unwrap();
        let vocab = Vocab::new(&tok);
        println!("tables built in {:?}", vocab.built_in);
        let n = vocab.n_vocab;
        let mut entries = vec![Entry::Alt(0); 64];
        let mut pool = vec![0u8; 256];
        let mut b = SchemaBuilder::new(&mut entries, &mut pool);
        let s = b
            .node(Node::String {
                min: 0,
                max: u32::MAX,
            })
            .unwrap();
        let short = b.node(Node::String { min: 2, max: 6 }).unwrap();
        let i = b
            .node(Node::Number {
                integer: true,
                min: -5.0,
                max: 300.0,
                multiple: 0,
                decimals: 0,
            })
            .unwrap();
        let arr = b
            .node(Node::Array {
                items: short,
                min: 0,
                max: 4,
            })
            .unwrap();
        let root = b
            .object(&[(b"text", s, true), (b"n", i, false), (b"xs", arr, true)])
            .unwrap();
        let (ne, nb) = (b.len(), b.bytes_used());
        b.finish(root).unwrap();
        entries.truncate(ne);
        pool.truncate(nb);
        let compiled = CompiledSchema {
            entries,
            bytes: pool,
            root,
        };
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut logits = vec![0.0f32; n];
        for grammar in [Grammar::JsonObject, Grammar::Schema(compiled)] {
            let grammar = Arc::new(grammar);
            for _walk in 0..3 {
                let mut c = Constraint::new(grammar.clone());
                for _ in 0..60 {
                    if c.is_done() {
                        break;
                    }
                    logits.fill(0.0);
                    c.mask(&vocab, &mut logits);
                    let scan: Vec<bool> = (0..n as u32)
                        .map(|id| {
                            let bytes = vocab.bytes(id);
                            if tok.is_eog(id) {
                                return false;
                            }
                            let mut t = Constraint {
                                cache: HashMap::new(),
                                ..Constraint::new(grammar.clone())
                            };
                            t.state = c.state;
                            !bytes.is_empty() && t.feed(bytes)
                        })
                        .collect();
                    let accepting = match (&c.state, &*grammar) {
                        (State::Json(j), _) => j.is_accepting(),
                        (State::Schema(st), Grammar::Schema(s)) => {
                            SchemaMachine::with_state(&s.schema(), *st).is_accepting()
                        }
                        _ => false,
                    };
                    // Same bytes as a lower id: only that one is in the tries.
                    let mut seen = HashMap::new();
                    for id in 0..n {
                        let first = *seen.entry(vocab.bytes(id as u32)).or_insert(id) == id;
                        let masked = logits[id] == f32::NEG_INFINITY;
                        if tok.is_eog(id as u32) {
                            assert_eq!(!masked, accepting, "eog {id}");
                        } else if first || vocab.plain[id] == 0 {
                            assert_eq!(
                                !masked,
                                scan[id],
                                "token {id} {:?}",
                                vocab.bytes(id as u32)
                            );
                        }
                    }
                    // Follow a random allowed token, preferring longer text.
                    let ok: Vec<u32> = (0..n as u32)
                        .filter(|&id| logits[id as usize] != f32::NEG_INFINITY && !tok.is_eog(id))
                        .collect();
                    if ok.is_empty() {
                        break;
                    }
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let id = ok[(rng % ok.len() as u64) as usize];
                    assert!(c.feed(vocab.bytes(id)));
                }
                let name = match &*grammar {
                    Grammar::JsonObject => "json_object",
                    Grammar::Schema(_) => "json_schema",
                };
                println!(
                    "{name}: {} masks computed, {} cached, {:?}",
                    c.computed, c.hits, c.spent
                );
            }
        }
    }
}
