//! CTranslate2 `model.bin` reader on arbitrary bytes: parsing and every accessor must return
//! errors, never panic, and every reported range must lie inside the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trillim_voice::ct2::Ct2Model;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Ct2Model::parse(data) {
        for name in ["w", "encoder/num_heads", "decoder/embeddings/weight"] {
            if let Ok(v) = m.get(name) {
                assert!(v.offset + v.len <= data.len());
                let _ = m.f32s(data, name, &v.shape.clone());
                let _ = m.int(data, name);
            }
        }
        let _ = trillim_voice::whisper::Whisper::from_ct2(&m, data);
    }
});
