//! Malformed model files give errors, never panics or out-of-bounds reads.
#![forbid(unsafe_code)]

use trillim_core::format::gguf::{Gguf, GgufError};
use trillim_core::kernels::Kernels;
use trillim_core::model::{
    Buffers, Config, Forward, KvCache, ModelError, Scratch, ScratchSizes, Weights,
};
use trillim_core::Sequential;
use trillim_tests::testdata;

fn fixture() -> Vec<u8> {
    std::fs::read(testdata("models/tiny-bitnet-tq2_0.gguf")).unwrap()
}

/// Loads and, when loading succeeds, runs a few tokens: any outcome but a panic is fine.
fn load_and_run(bytes: &[u8]) -> Result<(), ModelError> {
    let g = Gguf::parse(bytes)?;
    let _ = g.metadata().count();
    let _ = g.tensors().count();
    let c = Config::from_gguf(&g)?;
    let w = Weights::from_gguf(&g, &c)?;
    if c.d_model > 4096 || c.n_layers > 8 {
        return Ok(()); // mutated into a huge model: don't allocate for it here
    }
    let sz = ScratchSizes::new(&c, 2);
    let (mut f, mut q, mut i) = (vec![0f32; sz.f32s], vec![0i8; sz.i8s], vec![0i32; sz.i32s]);
    let mut s = Scratch::new(&c, 2, &mut f, &mut q, &mut i)?;
    let mut kvb = vec![0u16; KvCache::elems(&c, 4)];
    let mut kv = KvCache::new(&c, &mut kvb, 4)?;
    let k = Kernels::scalar();
    let fwd = Forward {
        config: &c,
        weights: &w,
        bufs: Buffers::file(bytes),
        kernels: &k,
        lora: None,
    };
    let mut logits = vec![0f32; c.n_vocab];
    fwd.run(&[1, 2, 3], &mut kv, &mut s, &Sequential, &mut logits)
}

#[test]
fn every_truncation_is_an_error() {
    let full = fixture();
    let g = Gguf::parse(&full).unwrap();
    let header_end = g.data_offset();
    // Dense over the first 4 KiB and the end of the header, sampled elsewhere.
    let mut cuts: Vec<usize> = (0..4096).collect();
    cuts.extend((header_end.saturating_sub(2048)..header_end + 64).step_by(1));
    cuts.extend((0..full.len()).step_by(9973));
    for n in cuts {
        if n >= full.len() {
            continue;
        }
        assert!(
            load_and_run(&full[..n]).is_err(),
            "prefix of {n} bytes loaded"
        );
    }
}

#[test]
fn random_header_corruption_never_panics() {
    let full = fixture();
    let header_end = Gguf::parse(&full).unwrap().data_offset();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut errors = 0;
    for _ in 0..300 {
        let mut b = full.clone();
        for _ in 0..1 + rnd() % 4 {
            // Bias towards the small fields at the start and the tensor table at the end.
            let pos = match rnd() % 3 {
                0 => (rnd() % 64) as usize,
                1 => header_end - 1 - (rnd() % 4096) as usize,
                _ => (rnd() % header_end as u64) as usize,
            };
            b[pos] = rnd() as u8;
        }
        if load_and_run(&b).is_err() {
            errors += 1;
        }
    }
    println!("{errors} of 300 corrupted files were rejected; the rest loaded and ran");
}

#[test]
fn clear_errors_for_bad_headers() {
    assert_eq!(
        Gguf::parse(b"GGML\x03\0\0\0").unwrap_err(),
        GgufError::BadMagic
    );
    let mut v1 = b"GGUF".to_vec();
    v1.extend_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(&[0; 16]);
    assert_eq!(
        Gguf::parse(&v1).unwrap_err(),
        GgufError::UnsupportedVersion(1)
    );
    // A tensor count the file cannot possibly hold is rejected before any loop.
    let mut huge = b"GGUF".to_vec();
    huge.extend_from_slice(&3u32.to_le_bytes());
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    huge.extend_from_slice(&0u64.to_le_bytes());
    assert!(matches!(
        Gguf::parse(&huge).unwrap_err(),
        GgufError::Truncated(_)
    ));
}

#[test]
fn unsupported_architecture_is_named() {
    let mut b = fixture();
    let needle = b"bitnet";
    let pos = b.windows(needle.len()).position(|w| w == needle).unwrap();
    b[pos..pos + 6].copy_from_slice(b"mamba2");
    let g = Gguf::parse(&b).unwrap();
    let err = Config::from_gguf(&g).unwrap_err();
    assert!(err.to_string().contains("mamba2"), "{err}");
}
