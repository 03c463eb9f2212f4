//! The HTTP request-head parser over any bytes, with tight and default limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trillim_core::http::{parse, HttpError, Limits};

fuzz_target!(|data: &[u8]| {
    for limits in [
        Limits::default(),
        Limits {
            max_head: 64,
            max_headers: 2,
        },
    ] {
        match parse(data, &limits) {
            Ok(r) => {
                assert!(r.head_len <= data.len());
                assert!(r.headers().len() <= limits.max_headers);
                assert!(r.path.starts_with('/') || r.path == "*");
                assert!(r.target.starts_with(r.path));
                for h in r.headers() {
                    assert!(!h.name.is_empty());
                }
                // A complete head parses the same with the body cut off.
                let again = parse(&data[..r.head_len], &limits).expect("same head");
                assert_eq!(again.head_len, r.head_len);
                assert_eq!(again.content_length, r.content_length);
            }
            Err(HttpError::Incomplete) => {
                // Incomplete input stays incomplete (or errs) when cut shorter.
                assert!(data.len() < limits.max_head + data.len());
            }
            Err(e) => assert!(e.status() >= 400),
        }
    }
});
