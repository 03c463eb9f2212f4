//! Load options: re-encoding the output matrix (`unembed_quant`).
#![forbid(unsafe_code)]

use serde_json::Value;
use trillim_core::Sequential;
use trillim_runtime::{LoadOptions, LoadedModel, Session, UnembedQuant};
use trillim_tests::{log_softmax, testdata};

fn mean_abs_dlogprob(model: &LoadedModel, golden: &Value) -> f64 {
    let tokens: Vec<u32> = golden["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let mut s = Session::new(model, tokens.len(), 16);
    let logits = s
        .feed(model, &Sequential, &tokens, tokens.len())
        .unwrap()
        .to_vec();
    let n = model.config.n_vocab;
    let (mut sum, mut count) = (0.0, 0);
    for (i, p) in golden["positions"].as_array().unwrap().iter().enumerate() {
        if let (Some(next), Some(lp)) = (p["next"].as_u64(), p["next_logprob"].as_f64()) {
            sum += (log_softmax(&logits[i * n..(i + 1) * n])[next as usize] - lp).abs();
            count += 1;
        }
    }
    sum / count as f64
}

#[test]
fn unembed_quant_reencodes_only_when_needed() {
    let path = testdata("models/tiny-bitnet-tq2_0.gguf");
    let golden: Value = serde_json::from_slice(
        &std::fs::read(testdata("golden/logits-tiny-bitnet-tq2_0.json")).unwrap(),
    )
    .unwrap();
    let k = trillim_runtime::cpu::best_kernels();
    let plain = LoadedModel::open(&path, k).unwrap();
    assert!(!plain.recompiled);
    // The file's output matrix is already Q8_0: nothing to build.
    let same = LoadedModel::open_with(
        &path,
        k,
        LoadOptions {
            unembed_quant: Some(UnembedQuant::Q8_0),
        },
    )
    .unwrap();
    assert!(!same.recompiled);
    let q4 = LoadedModel::open_with(
        &path,
        k,
        LoadOptions {
            unembed_quant: Some(UnembedQuant::Q4_0),
        },
    )
    .unwrap();
    assert!(q4.recompiled);
    assert_eq!(q4.weights.output.ty.name(), "q4_0");
    let base = mean_abs_dlogprob(&plain, &golden);
    let requant = mean_abs_dlogprob(&q4, &golden);
    println!("mean |dlogprob|: q8_0 output {base:.4}, q4_0 output {requant:.4}");
    assert!(requant < 0.3, "{requant}");
}

#[test]
fn unavailable_levels_are_named() {
    assert!(UnembedQuant::parse("q6_k")
        .unwrap_err()
        .contains("not available"));
    assert!(UnembedQuant::parse("fp4").unwrap_err().contains("unknown"));
    assert_eq!(UnembedQuant::parse("q4_0"), Ok(UnembedQuant::Q4_0));
}
