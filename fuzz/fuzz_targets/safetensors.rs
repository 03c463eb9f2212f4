//! The safetensors readers over any bytes: every view `parse` hands out is in bounds and
//! exactly as long as its shape and dtype say, and the header reader that `trillim quantize`
//! uses on checkpoint files (every dtype, the data section's length taken from the input)
//! only accepts byte ranges inside that length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trillim_runtime::safetensors::{header_end, parse, parse_header};

fuzz_target!(|data: &[u8]| {
    if let Ok(tensors) = parse(data) {
        for t in tensors {
            let elems: usize = t.shape.iter().product();
            assert_eq!(elems * t.dtype.size(), t.data.len(), "{}", t.name);
        }
    }
    // A file of `data.len()` bytes, or (first byte odd) one that claims a huge data section.
    let Some(prefix) = data.get(..8) else { return };
    let file_len = if data[0] & 1 == 1 {
        u64::MAX / 2
    } else {
        data.len() as u64
    };
    let Ok(end) = header_end(prefix.try_into().unwrap(), file_len) else {
        return;
    };
    let Some(json) = data.get(8..end.min(data.len() as u64) as usize) else {
        return;
    };
    let data_len = file_len - end;
    if let Ok(infos) = parse_header(json, data_len) {
        for t in infos {
            assert!(t.begin <= t.end && t.end <= data_len, "{}", t.name);
            assert_eq!(
                t.end - t.begin,
                (t.elems() * t.dtype.size()) as u64,
                "{}",
                t.name
            );
        }
    }
});
