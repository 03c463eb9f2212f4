//! Audio decoding of uploads on arbitrary bytes: an error or bounded samples, never a panic
//! that escapes. The decoder catches panics from the codecs it drives (see
//! `trillim_voice::audio::decode_mono`), so the target restores the default panic hook that
//! libFuzzer's replaces with an abort; a panic anywhere else still fails the run.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use trillim_voice::audio::decode_16k_mono;

static HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    HOOK.call_once(|| {
        let _ = std::panic::take_hook();
    });
    if let Ok(samples) = decode_16k_mono(data, 30) {
        assert!(!samples.is_empty());
        assert!(samples.len() <= 31 * 16_000);
        assert!(samples.iter().all(|s| s.is_finite()));
    }
});
