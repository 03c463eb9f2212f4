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
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
            assert!(v.is_object());
        }
    }
});
