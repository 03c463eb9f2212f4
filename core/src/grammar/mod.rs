//! Constrained decoding: byte-level recognizers ([`JsonMachine`]) and a token trie
//! ([`TokenTrie`]) that turns a recognizer's state into the set of tokens it allows.
//!
//! The trie is built once per tokenizer into caller memory; a mask is computed by walking
//! it in preorder with one recognizer state per depth, skipping a whole subtree as soon as
//! its prefix is refused, so a step costs the allowed prefixes, not the vocabulary.

mod json;
mod schema;
mod trie;

pub use json::JsonMachine;
pub use schema::{
    Entry, Node, Schema, SchemaBuilder, SchemaError, SchemaMachine, SchemaState, MAX_CHOICES,
    MAX_ENTRY_BYTES, MAX_PATTERN_STATES, MAX_STACK,
};
pub use trie::{TokenTrie, TrieError, TrieNode, MAX_TOKEN_BYTES};

/// A recognizer over bytes; cheap to copy, so the trie walk can keep one state per depth.
pub trait ByteMachine: Copy {
    /// Feeds one byte; `false` (and the state unchanged in meaning) when it is refused.
    fn push(&mut self, b: u8) -> bool;
    /// Whether the bytes so far form a complete value (the generation may end here).
    fn is_accepting(&self) -> bool;
    /// Whether no byte can follow (only the end may come next).
    fn is_done(&self) -> bool;
    /// `Some(n)` when the machine is inside a string that takes any *plain* text (complete
    /// UTF-8 without `"`, `\\` or control bytes) of up to `n` characters and stays there, so a
    /// mask may admit such tokens without walking them.
    fn plain_budget(&self) -> Option<usize> {
        None
    }
}

#[cfg(test)]
mod schema_tests;
#[cfg(test)]
mod tests;
