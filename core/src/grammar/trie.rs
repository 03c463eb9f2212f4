//! The token trie: every token's bytes as a path from an implicit root, stored in preorder
//! with each node's subtree end, so a walk can skip a refused prefix's whole subtree.

use super::ByteMachine;

/// Tokens longer than this are left out of the trie (never allowed under a grammar).
pub const MAX_TOKEN_BYTES: usize = 128;

/// No token ends at this node.
const NONE: u32 = u32::MAX;

/// One byte of the trie, in preorder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrieNode {
    /// The byte on the edge into this node.
    pub byte: u8,
    /// Depth from the root, 1 for a token's first byte.
    pub depth: u8,
    /// The token whose bytes end here, or `u32::MAX`.
    pub token: u32,
    /// Index of the first node after this node's subtree.
    pub end: u32,
}

/// Why a trie could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrieError {
    /// The node buffer is shorter than [`TokenTrie::nodes_needed`].
    NodesTooSmall,
    /// The order buffer is shorter than the vocabulary.
    OrderTooSmall,
}

/// A built trie over caller memory.
#[derive(Debug)]
pub struct TokenTrie<'a> {
    nodes: &'a [TrieNode],
    n_vocab: usize,
}

impl<'a> TokenTrie<'a> {
    /// An upper bound of the nodes a vocabulary needs: the sum of its tokens' lengths.
    pub fn nodes_needed<'t>(n_vocab: usize, bytes: impl Fn(u32) -> &'t [u8]) -> usize {
        (0..n_vocab as u32)
            .map(|i| bytes(i).len())
            .filter(|&l| l <= MAX_TOKEN_BYTES)
            .sum()
    }

    /// Builds the trie of tokens `0..n_vocab` whose bytes `bytes` gives, in `nodes` (at least
    /// [`nodes_needed`](Self::nodes_needed)) with `order` (at least `n_vocab`) as scratch.
    /// Empty tokens, tokens over [`MAX_TOKEN_BYTES`] and `skip`'s tokens are left out; of
    /// two tokens with the same bytes only the lower id is reachable.
    pub fn build<'t>(
        n_vocab: usize,
        bytes: impl Fn(u32) -> &'t [u8],
        skip: impl Fn(u32) -> bool,
        order: &mut [u32],
        nodes: &'a mut [TrieNode],
    ) -> Result<TokenTrie<'a>, TrieError> {
        let order = order.get_mut(..n_vocab).ok_or(TrieError::OrderTooSmall)?;
        let mut n = 0;
        for id in 0..n_vocab as u32 {
            let len = bytes(id).len();
            if len > 0 && len <= MAX_TOKEN_BYTES && !skip(id) {
                order[n] = id;
                n += 1;
            }
        }
        let order = &mut order[..n];
        order.sort_unstable_by(|&a, &b| bytes(a).cmp(bytes(b)).then(a.cmp(&b)));
        // open[d]: the node at depth d + 1 on the current path.
        let mut open = [0u32; MAX_TOKEN_BYTES];
        let mut used = 0usize;
        let mut prev: &[u8] = &[];
        for &id in order.iter() {
            let t = bytes(id);
            let lcp = t.iter().zip(prev).take_while(|(a, b)| a == b).count();
            // Close the nodes below the shared prefix.
            for &o in &open[lcp..prev.len()] {
                nodes[o as usize].end = used as u32;
            }
            if lcp == t.len() {
                // Same bytes as the previous token: that one keeps the node.
                continue;
            }
            for (d, &b) in t.iter().enumerate().skip(lcp) {
                let slot = nodes.get_mut(used).ok_or(TrieError::NodesTooSmall)?;
                *slot = TrieNode {
                    byte: b,
                    depth: d as u8 + 1,
                    token: NONE,
                    end: 0,
                };
                open[d] = used as u32;
                used += 1;
            }
            nodes[used - 1].token = id;
            prev = t;
        }
        for &o in &open[..prev.len()] {
            nodes[o as usize].end = used as u32;
        }
        Ok(TokenTrie {
            nodes: &nodes[..used],
            n_vocab,
        })
    }

    /// A trie over nodes a [`build`](Self::build) left (its first [`len`](Self::len)), kept
    /// by the caller.
    pub fn from_nodes(nodes: &'a [TrieNode], n_vocab: usize) -> TokenTrie<'a> {
        TokenTrie { nodes, n_vocab }
    }

    /// The nodes in use.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no token is in the trie.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Calls `allow` for every token whose bytes `m` accepts in full, walking only the
    /// accepted prefixes; returns the nodes visited (the step's cost).
    pub fn walk<M: ByteMachine>(&self, m: &M, mut allow: impl FnMut(u32)) -> usize {
        let mut states = [*m; MAX_TOKEN_BYTES + 1];
        let mut i = 0;
        let mut visited = 0;
        while i < self.nodes.len() {
            let n = self.nodes[i];
            visited += 1;
            let d = n.depth as usize;
            let mut s = states[d - 1];
            if s.push(n.byte) {
                states[d] = s;
                if n.token != NONE {
                    allow(n.token);
                }
                i += 1;
            } else {
                i = n.end as usize;
            }
        }
        visited
    }

    /// Sets the logits of every token `m` refuses to minus infinity; `eog` (the
    /// end-of-generation tokens) stay only when `m` is accepting and are the only ones left
    /// when nothing may follow. `allowed` is scratch of at least `logits.len()` flags.
    /// Returns the nodes visited.
    pub fn mask<M: ByteMachine>(
        &self,
        m: &M,
        eog: &[u32],
        allowed: &mut [bool],
        logits: &mut [f32],
    ) -> usize {
        let n = logits.len().min(self.n_vocab).min(allowed.len());
        allowed[..n].fill(false);
        let visited = if m.is_done() {
            0
        } else {
            self.walk(m, |id| {
                if let Some(a) = allowed.get_mut(id as usize) {
                    *a = true;
                }
            })
        };
        // Nothing the grammar allows is in the vocabulary: end rather than sample garbage.
        let stuck = !allowed[..n].contains(&true);
        if m.is_accepting() || stuck {
            for &e in eog {
                if let Some(a) = allowed.get_mut(e as usize) {
                    *a = true;
                }
            }
        }
        for (l, &a) in logits.iter_mut().zip(allowed.iter()) {
            if !a {
                *l = f32::NEG_INFINITY;
            }
        }
        for l in logits.iter_mut().skip(n) {
            *l = f32::NEG_INFINITY;
        }
        visited
    }
}
