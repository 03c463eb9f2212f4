//! Audio decoding of uploads on arbitrary bytes: an error or bounded samples, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trillim_voice::audio::decode_16k_mono;

fuzz_target!(|data: &[u8]| {
    if let Ok(samples) = decode_16k_mono(data, 30) {
        assert!(!samples.is_empty());
        assert!(samples.len() <= 31 * 16_000);
        assert!(samples.iter().all(|s| s.is_finite()));
    }
});
