//! A file whose architecture or weight type this build cannot run is refused with a message
//! that names the culprit once and lists what is supported.
#![forbid(unsafe_code)]

use trillim_core::format::gguf::Gguf;
use trillim_core::model::{Config, Weights};
use trillim_tests::smollm2_path;

/// Byte offset of the first occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

#[test]
fn unknown_architecture_is_named_once_with_the_supported_list() {
    let mut file = std::fs::read(smollm2_path()).unwrap();
    // The value of general.architecture: a u64 length, then the string.
    let at = find(&file, b"general.architecture") + "general.architecture".len() + 4 + 8;
    assert_eq!(&file[at..at + 5], b"llama");
    file[at..at + 5].copy_from_slice(b"mamba");
    let g = Gguf::parse(&file).unwrap();
    let msg = Config::from_gguf(&g).unwrap_err().to_string();
    assert_eq!(msg.matches("mamba").count(), 1, "{msg}");
    assert!(msg.contains("unsupported architecture 'mamba'"), "{msg}");
    for arch in [
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "phi3",
        "gemma3",
        "bitnet-b1.58",
    ] {
        assert!(msg.contains(arch), "{msg}");
    }
}

#[test]
fn unknown_weight_type_is_named_once_with_the_supported_list() {
    let mut file = std::fs::read(smollm2_path()).unwrap();
    // Tensor info: name, n_dims (u32), n_dims u64 dimensions, then the u32 type id.
    let name = b"blk.0.ffn_down.weight";
    let at = find(&file, name) + name.len();
    let n_dims = u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
    let ty = at + 4 + 8 * n_dims;
    file[ty..ty + 4].copy_from_slice(&15u32.to_le_bytes()); // Q8_K: an activation type
    let g = Gguf::parse(&file).unwrap();
    let config = Config::from_gguf(&g).unwrap();
    let msg = Weights::from_gguf(&g, &config).unwrap_err().to_string();
    assert_eq!(msg.matches("Q8_K").count(), 1, "{msg}");
    assert!(msg.contains("blk.0.ffn_down.weight"), "{msg}");
    for ty in ["Q4_K", "Q6_K", "IQ4_XS", "Q5_0", "BF16", "TQ2_0"] {
        assert_eq!(msg.matches(ty).count(), 1, "{ty}: {msg}");
    }
}
