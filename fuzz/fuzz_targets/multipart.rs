//! The multipart/form-data parser on arbitrary bodies and Content-Type values: errors, never
//! panics, and every part lies inside the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trillim_voice::multipart::{boundary, parse, Limits};

fuzz_target!(|data: &[u8]| {
    // The first line is the Content-Type value, the rest the body.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let ct = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    let b = boundary(&ct).unwrap_or_else(|_| "XyZ".into());
    if let Ok(parts) = parse(body, &b, Limits::default()) {
        assert!(parts.len() <= Limits::default().max_parts);
        for p in parts {
            let start = p.data.as_ptr() as usize - body.as_ptr() as usize;
            assert!(start + p.data.len() <= body.len());
        }
    }
});
