//! SmolLM2 requantized by llama.cpp into every llama.cpp weight format trillim reads (K-quants,
//! Q5_0/Q5_1, IQ4_NL/IQ4_XS, BF16, and the per-tensor mixes such as Q4_K_M), against llama.cpp's
//! own log-probabilities and greedy continuations on the same files
//! (`testdata/golden/quant/`, written by `scripts/quant-goldens.py`), with the tolerances of
//! `testdata/golden/README.md`.
//!
//! Every tensor's dequantized weights are also checked against llama.cpp's dequantization of the
//! same file (`quant-ref dequant`, position-weighted sums), which pins each block layout exactly.
//!
//! Tolerances: the README's, except perplexity (within 6 % instead of 2 %) and, for the
//! Q2_K-pure file (perplexity ≈ 680, a model quantized to noise), the mean |Δ logprob| (0.25
//! instead of 0.15) and the greedy steps' |Δ logprob| (0.6 instead of 0.4).
//! Files whose K-quant matrices take Q8_K activations (one int8 scale per 256 inputs, as
//! llama.cpp pairs them) amplify rounding: on Q4_K_M our own scalar and SIMD paths, which
//! differ only in the order of float additions in attention, give perplexities 5 % apart,
//! while on the same weights stored as F32 trillim and llama.cpp agree within 0.05 %.
//!
//! The model files are not in the repository: a missing one is made by
//! `scripts/quant-models.sh`, and the test fails if that cannot run.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use trillim_core::format::gguf::Gguf;
use trillim_core::kernels::formats::dequantize_row;
use trillim_core::kernels::Kernels;
use trillim_runtime::ThreadPool;
use trillim_tests::{argmax, ids, log_softmax, logits_all_par, repo_root, testdata};

/// The model file of `ty`, made by `scripts/quant-models.sh` when missing.
fn model_path(ty: &str) -> PathBuf {
    let out = Command::new(repo_root().join("scripts/quant-models.sh"))
        .arg(ty)
        .output()
        .expect("run scripts/quant-models.sh");
    assert!(
        out.status.success(),
        "scripts/quant-models.sh {ty} failed (it needs cmake, g++ and the network once):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(p.exists(), "{} missing", p.display());
    p
}

/// Logits after every token of `tokens`, computed in passes of `batch` tokens.
fn logits_all(model: &[u8], tokens: &[u32], kernels: &Kernels, batch: usize) -> Vec<f32> {
    logits_all_par(model, tokens, kernels, batch, &ThreadPool::new(2))
}

/// Teacher-forced log-probabilities of the golden text: mean |Δ logprob|, perplexity and clear
/// top-1 tokens, for one pass of every token (batch 64) and token by token (batch 1).
fn check_text(ty: &str, model: &[u8], golden: &Value, kernels: &Kernels) {
    let tokens = ids(&golden["tokens"]);
    for batch in [64, 1] {
        let logits = logits_all(model, &tokens, kernels, batch);
        let n_vocab = logits.len() / tokens.len();
        let (mut sum_abs, mut nll, mut n, mut clear, mut agree) = (0f64, 0f64, 0usize, 0, 0);
        for (i, p) in golden["positions"].as_array().unwrap().iter().enumerate() {
            let row = &logits[i * n_vocab..(i + 1) * n_vocab];
            let lp = log_softmax(row);
            if let (Some(next), Some(want)) = (p["next"].as_u64(), p["next_logprob"].as_f64()) {
                sum_abs += (lp[next as usize] - want).abs();
                nll -= lp[next as usize];
                n += 1;
            }
            let top = p["top"].as_array().unwrap();
            let (l1, l2) = (top[0][1].as_f64().unwrap(), top[1][1].as_f64().unwrap());
            if l1 - l2 > 0.5 {
                clear += 1;
                let want = top[0][0].as_u64().unwrap() as usize;
                if argmax(row) == want {
                    agree += 1;
                } else {
                    eprintln!("{ty}: position {i}: top-1 {}, golden {want}", argmax(row));
                }
            }
        }
        let mean = sum_abs / n as f64;
        let ppl = (nll / n as f64).exp();
        let golden_ppl = golden["ppl"].as_f64().unwrap();
        let dppl = (ppl / golden_ppl - 1.0) * 100.0;
        println!(
            "{ty} {} batch {batch}: mean|dlogprob| {mean:.4}, ppl {ppl:.3} vs {golden_ppl:.3} ({dppl:+.2}%), clear top-1 {agree}/{clear}",
            kernels.name
        );
        let max_mean = if ty == "Q2_K-pure" { 0.25 } else { 0.15 };
        assert!(mean < max_mean, "{ty}: mean |dlogprob| {mean}");
        assert!(dppl.abs() < 6.0, "{ty}: perplexity off by {dppl}%");
        assert_eq!(agree, clear, "{ty}: clear top-1 disagreements");
    }
}

/// Greedy continuations, teacher-forced: wherever llama.cpp's top-1 leads its top-2 by more
/// than 0.75 nats, the argmax must agree and its log-probability be within 0.4 nats.
fn check_greedy(ty: &str, model: &[u8], golden: &Value, kernels: &Kernels) {
    let (mut checked, mut worst) = (0, 0f64);
    for case in golden["greedy"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let greedy = ids(&case["greedy_ids"]);
        let mut seq = prompt.clone();
        seq.extend_from_slice(&greedy);
        let logits = logits_all(model, &seq, kernels, 16);
        let n_vocab = logits.len() / seq.len();
        for (k, &want) in greedy.iter().enumerate() {
            let row = &logits[(prompt.len() - 1 + k) * n_vocab..][..n_vocab];
            let t1 = case["top1_logprob"][k].as_f64().unwrap();
            let t2 = case["top2_logprob"][k].as_f64().unwrap();
            if t1 - t2 <= 0.75 {
                continue;
            }
            checked += 1;
            assert_eq!(argmax(row) as u32, want, "{ty}: greedy step {k}");
            let d = (log_softmax(row)[want as usize] - t1).abs();
            worst = worst.max(d);
            let max_d = if ty == "Q2_K-pure" { 0.6 } else { 0.4 };
            assert!(d < max_d, "{ty}: greedy step {k}: |dlogprob| {d}");
        }
    }
    println!("{ty}: {checked} confident greedy steps agree, worst |dlogprob| {worst:.4}");
    assert!(checked > 0, "{ty}: no confident greedy step to check");
}

/// Every tensor's weights, dequantized by trillim, against llama.cpp's dequantization of the
/// same file: `Σ w_i · (1 + i mod 7)` (order-sensitive) and `Σ |w_i|` must agree.
fn check_dequant(ty: &str, path: &Path, model: &[u8]) {
    let tool = path.parent().unwrap().join("quant-ref");
    let out = Command::new(&tool)
        .arg("dequant")
        .arg(path)
        .output()
        .expect("run quant-ref");
    assert!(out.status.success(), "{} dequant failed", tool.display());
    let g = Gguf::parse(model).expect("parse");
    let mut checked = 0;
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (want_sum, want_abs): (f64, f64) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        let t = g.tensor(f[0]).expect("tensor in file");
        let wty =
            t.ty.unwrap_or_else(|| panic!("{ty}: {} has an unsupported type", f[0]));
        let n = t.row_len();
        let rb = wty.row_bytes(n).unwrap();
        let mut row = vec![0f32; n];
        let (mut sum, mut abs, mut i) = (0f64, 0f64, 0u64);
        for r in 0..t.n_rows() {
            dequantize_row(wty, &t.data[r * rb..(r + 1) * rb], &mut row, 1.0);
            for &w in &row {
                sum += w as f64 * (1 + i % 7) as f64;
                abs += (w as f64).abs();
                i += 1;
            }
        }
        let tol = 1e-9 * want_abs.max(1e-30);
        assert!(
            (sum - want_sum).abs() <= tol && (abs - want_abs).abs() <= tol,
            "{ty}: {} ({}): {sum} / {abs} vs llama.cpp {want_sum} / {want_abs}",
            f[0],
            f[1]
        );
        checked += 1;
    }
    assert_eq!(checked, g.tensor_count(), "{ty}: tensors checked");
}

fn check(ty: &str) {
    let path = model_path(ty);
    let model = std::fs::read(&path).unwrap();
    check_dequant(ty, &path, &model);
    let name = format!("golden/quant/logits-SmolLM2-135M-Instruct.{ty}.json");
    let golden: Value = serde_json::from_slice(&std::fs::read(testdata(&name)).unwrap()).unwrap();
    let kernels = trillim_runtime::cpu::best_kernels();
    check_text(ty, &model, &golden, &kernels);
    check_greedy(ty, &model, &golden, &kernels);
}

macro_rules! golden_tests {
    ($($name:ident => $ty:literal;)*) => {$(
        #[test]
        fn $name() {
            check($ty);
        }
    )*};
}

golden_tests! {
    q4_k_m_matches_llama_cpp => "Q4_K_M";
    q4_k_s_matches_llama_cpp => "Q4_K_S";
    q5_k_m_matches_llama_cpp => "Q5_K_M";
    q6_k_matches_llama_cpp => "Q6_K";
    q3_k_m_matches_llama_cpp => "Q3_K_M";
    q2_k_matches_llama_cpp => "Q2_K";
    q2_k_pure_matches_llama_cpp => "Q2_K-pure";
    q5_0_matches_llama_cpp => "Q5_0";
    q5_1_matches_llama_cpp => "Q5_1";
    iq4_nl_matches_llama_cpp => "IQ4_NL";
    iq4_xs_matches_llama_cpp => "IQ4_XS";
    bf16_matches_llama_cpp => "BF16";
}
