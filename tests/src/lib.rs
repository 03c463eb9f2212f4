//! Shared helpers for trillim's end-to-end tests: locating test data and scoring logits.

use std::path::PathBuf;

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of a file under `testdata/`.
pub fn testdata(rel: &str) -> PathBuf {
    repo_root().join("testdata").join(rel)
}

/// Path of the SmolLM2-135M-Instruct Q4_1 model fetched by `scripts/fetch-test-model.sh`,
/// or `None` when it has not been fetched.
pub fn smollm2_path() -> Option<PathBuf> {
    let p = match std::env::var_os("TRILLIM_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            base.join("trillim").join("SmolLM2-135M-Instruct.Q4_1.gguf")
        }
    };
    p.exists().then_some(p)
}

/// `log_softmax(logits)[i]` for every `i`, computed in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits
        .iter()
        .map(|&v| (v as f64 - m).exp())
        .sum::<f64>()
        .ln()
        + m;
    logits.iter().map(|&v| v as f64 - lse).collect()
}

/// Index of the largest value.
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}
