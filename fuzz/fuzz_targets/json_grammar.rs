//! The JSON-object recognizer on arbitrary bytes: never a panic, a refused byte leaves the
//! state unchanged, and whatever it accepts in full is a JSON object for serde_json (numbers
//! out of `f64` range aside).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trillim_core::grammar::{ByteMachine, JsonMachine};

fuzz_target!(|data: &[u8]| {
    let mut m = JsonMachine::new();
    let mut all = true;
    for &b in data {
        let before = m;
        if !m.push(b) {
            assert_eq!(m, before);
            all = false;
            break;
        }
    }
    if all && m.is_accepting() {
        // As a map, not a `Value`: with serde_json's `arbitrary_precision` (enabled elsewhere
        // in the build) an object whose only key is its private number token reads back as a
        // number, though the text is an object.
        if serde_json::from_slice::<serde_json::Value>(data).is_ok() {
            let map = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data);
            assert!(map.is_ok(), "{map:?}");
        }
    }
});
