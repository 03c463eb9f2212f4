//! Chat and completion request bodies: parsing never panics, and every string that both this
//! parser and serde_json accept unescapes to what serde_json reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trillim_core::api::{parse_chat, parse_completion, Arena};

fuzz_target!(|data: &[u8]| {
    let reference: Option<serde_json::Value> = serde_json::from_slice(data).ok();
    let mut buf = vec![0u8; data.len()];
    if let Ok(r) = parse_chat(data) {
        let mut arena = Arena::new(&mut buf);
        for (i, m) in r.messages.iter().enumerate() {
            let role = arena.unescape_one(m.role);
            let content = arena.unescape(&m.content);
            if let Some(v) = &reference {
                let msg = &v["messages"][i];
                if let (Ok(role), Some(want)) = (role, msg["role"].as_str()) {
                    assert_eq!(role, want);
                }
                if let (Ok(content), Some(want)) = (content, msg["content"].as_str()) {
                    assert_eq!(content, want);
                }
            }
        }
        for s in &r.stop {
            let _ = arena.unescape_one(*s);
        }
    }
    if let Ok(r) = parse_completion(data) {
        let mut arena = Arena::new(&mut buf);
        let p = arena.unescape_one(r.prompt);
        if let (Ok(p), Some(v)) = (p, &reference) {
            if let Some(want) = v["prompt"].as_str() {
                assert_eq!(p, want);
            }
        }
    }
});
