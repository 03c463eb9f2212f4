//! The token trie on SmolLM2's real vocabulary: its masks equal a scan of every token,
//! and the cost of building it and of one mask is printed (`--nocapture`).
#![forbid(unsafe_code)]

use std::time::Instant;
use trillim_core::format::gguf::Gguf;
use trillim_core::grammar::{ByteMachine, JsonMachine, TokenTrie, TrieNode};
use trillim_core::tokenizer::Tokenizer;
use trillim_tests::smollm2_path;

#[test]
fn smollm2_masks_equal_a_vocabulary_scan() {
    let file = std::fs::read(smollm2_path()).unwrap();
    let g = Gguf::parse(&file).unwrap();
    let mut mem = vec![0u32; Tokenizer::mem_words_for_gguf(&g).unwrap()];
    let tok = Tokenizer::from_gguf(&g, &mut mem).unwrap();
    let n = tok.n_vocab();
    let t0 = Instant::now();
    let vocab: Vec<Vec<u8>> = (0..n as u32)
        .map(|id| tok.decode_token(id, false).collect())
        .collect();
    let bytes = |id: u32| vocab[id as usize].as_slice();
    let mut nodes = vec![TrieNode::default(); TokenTrie::nodes_needed(n, bytes)];
    let mut order = vec![0u32; n];
    let trie = TokenTrie::build(n, bytes, |id| tok.is_eog(id), &mut order, &mut nodes).unwrap();
    let built = t0.elapsed();
    // A token with the same bytes as a lower id is left out of the trie.
    let mut first = std::collections::HashMap::new();
    let dup: Vec<bool> = (0..n)
        .map(|id| *first.entry(&vocab[id]).or_insert(id) != id)
        .collect();

    // A random walk through JSON objects: each step's mask against a scan, then a token
    // the mask allows (xorshift, reproducible).
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut m = JsonMachine::new();
    let mut allowed = vec![false; n];
    let mut logits = vec![0.0f32; n];
    let (mut visited, mut steps, mut ends) = (0usize, 0usize, 0usize);
    let (mut t_mask, mut t_scan) = (0.0f64, 0.0f64);
    let mut text = Vec::new();
    for _ in 0..300 {
        logits.fill(0.0);
        let t = Instant::now();
        visited += trie.mask(&m, tok.eog_ids(), &mut allowed, &mut logits);
        t_mask += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let scan: Vec<bool> = (0..n as u32)
            .map(|id| {
                let b = bytes(id);
                if tok.is_eog(id) || b.is_empty() || b.len() > 128 {
                    return m.is_accepting() && tok.is_eog(id);
                }
                let mut s = m;
                s.push_all(b)
            })
            .collect();
        t_scan += t.elapsed().as_secs_f64();
        for id in 0..n {
            if !dup[id] {
                assert_eq!(
                    logits[id] == 0.0,
                    scan[id],
                    "token {id} after {:?}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
        steps += 1;
        let open: Vec<usize> = (0..n).filter(|&i| logits[i] == 0.0).collect();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let pick = open[rng as usize % open.len()];
        if tok.is_eog(pick as u32) {
            ends += 1;
            m = JsonMachine::new();
            text.clear();
            continue;
        }
        assert!(m.push_all(bytes(pick as u32)));
        text.extend_from_slice(bytes(pick as u32));
    }
    println!(
        "SmolLM2 vocabulary {n}: trie of {} nodes built in {:.1} ms; a mask visits {:.0} nodes \
         on average, {:.1} µs (a scan of the vocabulary: {:.1} µs); {ends} objects completed",
        trie.len(),
        built.as_secs_f64() * 1e3,
        visited as f64 / steps as f64,
        t_mask / steps as f64 * 1e6,
        t_scan / steps as f64 * 1e6,
    );
}
