//! The safetensors reader over any bytes: every view it hands out is in bounds and exactly as
//! long as its shape and dtype say.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trillim_runtime::safetensors::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(tensors) = parse(data) else { return };
    for t in tensors {
        let elems: usize = t.shape.iter().product();
        assert_eq!(elems * t.dtype.size(), t.data.len(), "{}", t.name);
    }
});
