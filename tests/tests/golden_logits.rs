//! Teacher-forced log-probabilities against llama.cpp / float64 goldens, with the tolerances
//! of testdata/golden/README.md.
#![forbid(unsafe_code)]

use serde_json::Value;
use trillim_core::kernels::Kernels;
use trillim_core::Sequential;
use trillim_runtime::ThreadPool;
use trillim_tests::{log_softmax, logits_all_ctx, logits_all_par, smollm2_path, testdata};

struct Scores {
    mean_abs_dlogprob: f64,
    ppl: f64,
    golden_ppl: f64,
    clear_top1: usize,
    clear_top1_agree: usize,
}

/// Context of the goldens' llama.cpp runs (scripts/quant-ref.cpp).
const GOLDEN_CTX: usize = 2048;

fn logits_all(model: &[u8], tokens: &[u32], kernels: &Kernels, batch: usize) -> Vec<f32> {
    logits_all_par(model, tokens, kernels, batch, &Sequential)
}

fn score(model: &[u8], golden: &Value, kernels: &Kernels, batch: usize) -> Scores {
    let tokens: Vec<u32> = golden["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let logits = logits_all_ctx(model, &tokens, kernels, batch, &Sequential, GOLDEN_CTX);
    let n_vocab = logits.len() / tokens.len();
    let positions = golden["positions"].as_array().unwrap();
    let (mut sum_abs, mut nll, mut n) = (0f64, 0f64, 0usize);
    let (mut clear, mut agree) = (0, 0);
    for (i, p) in positions.iter().enumerate() {
        let lp = log_softmax(&logits[i * n_vocab..(i + 1) * n_vocab]);
        // The last position has no next token.
        if let (Some(next), Some(golden_lp)) = (p["next"].as_u64(), p["next_logprob"].as_f64()) {
            sum_abs += (lp[next as usize] - golden_lp).abs();
            nll -= lp[next as usize];
            n += 1;
        }
        let top = p["top"].as_array().unwrap();
        let (t1, l1) = (
            top[0][0].as_u64().unwrap() as usize,
            top[0][1].as_f64().unwrap(),
        );
        let l2 = top[1][1].as_f64().unwrap();
        if l1 - l2 > 0.5 {
            clear += 1;
            let mine = trillim_tests::argmax(&logits[i * n_vocab..(i + 1) * n_vocab]);
            if mine == t1 {
                agree += 1;
            } else {
                eprintln!(
                    "position {i}: top-1 {mine}, golden {t1} (margin {:.3})",
                    l1 - l2
                );
            }
        }
    }
    Scores {
        mean_abs_dlogprob: sum_abs / n as f64,
        ppl: (nll / n as f64).exp(),
        golden_ppl: golden["ppl"].as_f64().unwrap(),
        clear_top1: clear,
        clear_top1_agree: agree,
    }
}

fn check(model: &[u8], golden_name: &str) {
    let golden: Value =
        serde_json::from_slice(&std::fs::read(testdata(golden_name)).unwrap()).unwrap();
    let best = trillim_runtime::cpu::best_kernels();
    // The scalar reference at one batch size, the selected SIMD path at several.
    let runs = [(Kernels::scalar(), 7), (best, 1), (best, 7), (best, 64)];
    for (kernels, batch) in runs {
        let s = score(model, &golden, &kernels, batch);
        let dppl = (s.ppl / s.golden_ppl - 1.0) * 100.0;
        println!(
            "{golden_name} {} batch {batch}: mean|dlogprob| {:.4} nats, ppl {:.4} vs {:.4} ({dppl:+.3}%), clear top-1 {}/{}",
            kernels.name, s.mean_abs_dlogprob, s.ppl, s.golden_ppl, s.clear_top1_agree, s.clear_top1
        );
        assert!(
            s.mean_abs_dlogprob < 0.15,
            "mean |dlogprob| {}",
            s.mean_abs_dlogprob
        );
        assert!(dppl.abs() < 2.0, "perplexity off by {dppl}%");
        assert_eq!(
            s.clear_top1_agree, s.clear_top1,
            "clear top-1 disagreements"
        );
    }
}

#[test]
fn tiny_bitnet_tq2_0_matches_golden() {
    let m = std::fs::read(testdata("models/tiny-bitnet-tq2_0.gguf")).unwrap();
    check(&m, "golden/logits-tiny-bitnet-tq2_0.json");
}

#[test]
fn tiny_bitnet_tq1_0_matches_golden() {
    let m = std::fs::read(testdata("models/tiny-bitnet-tq1_0.gguf")).unwrap();
    check(&m, "golden/logits-tiny-bitnet-tq1_0.json");
}

#[test]
fn tiny_b158_i2_s_matches_golden() {
    let m = std::fs::read(testdata("models/tiny-b158-i2_s.gguf")).unwrap();
    check(&m, "golden/logits-tiny-b158-i2_s.json");
}

#[test]
fn smollm2_q4_1_matches_golden() {
    let p = smollm2_path();
    let m = std::fs::read(p).unwrap();
    check(&m, "golden/logits-SmolLM2-135M-Instruct.Q4_1.json");
}

#[test]
fn tiny_qwen2_q8_0_matches_golden() {
    let m = std::fs::read(testdata("models/tiny-qwen2-q8_0.gguf")).unwrap();
    check(&m, "golden/logits-tiny-qwen2-q8_0.json");
}

#[test]
fn tiny_qwen3_f16_matches_golden() {
    let m = std::fs::read(testdata("models/tiny-qwen3-f16.gguf")).unwrap();
    check(&m, "golden/logits-tiny-qwen3-f16.json");
}

#[test]
fn tiny_phi3_q8_0_matches_golden() {
    let m = std::fs::read(testdata("models/tiny-phi3-q8_0.gguf")).unwrap();
    check(&m, "golden/logits-tiny-phi3-q8_0.json");
}

/// LongRoPE within its original context (4096): the short factors.
#[test]
fn tiny_phi3_5_longrope_q8_0_matches_golden() {
    let m = std::fs::read(testdata("models/tiny-phi3.5-q8_0.gguf")).unwrap();
    check(&m, "golden/logits-tiny-phi3.5-q8_0.json");
}

/// LongRoPE beyond its original context (512, the goldens' 2048): the long factors.
#[test]
fn tiny_phi3_5_long_factors_q8_0_matches_golden() {
    let m = std::fs::read(testdata("models/tiny-phi3.5-long-q8_0.gguf")).unwrap();
    check(&m, "golden/logits-tiny-phi3.5-long-q8_0.json");
}

/// Gemma 3: sliding-window layers (16 positions, shorter than the text) around a global one.
#[test]
fn tiny_gemma3_q8_0_matches_golden() {
    let m = std::fs::read(testdata("models/tiny-gemma3-q8_0.gguf")).unwrap();
    check(&m, "golden/logits-tiny-gemma3-q8_0.json");
}

/// Gemma 2: alternating sliding-window and global layers, soft-capped attention and logits.
#[test]
fn tiny_gemma2_q8_0_matches_golden() {
    let m = std::fs::read(testdata("models/tiny-gemma2-q8_0.gguf")).unwrap();
    check(&m, "golden/logits-tiny-gemma2-q8_0.json");
}

/// SmolLM2 greedy continuations, teacher-forced: wherever llama.cpp's top-1 leads its top-2 by
/// more than 0.75 nats, our argmax must agree and our log-probability of that token must be
/// within 0.4 nats of llama.cpp's.
#[test]
fn smollm2_greedy_teacher_forced_matches_golden() {
    let model = std::fs::read(smollm2_path()).unwrap();
    greedy_teacher_forced(&model, "golden/logits-SmolLM2-135M-Instruct.Q4_1.json", 40);
}

/// The same for the tiny Qwen, Phi-3 and Gemma models (random weights: fewer confident steps).
#[test]
fn tiny_qwen_greedy_teacher_forced_matches_golden() {
    for (model, golden, min) in [
        ("tiny-qwen2-q8_0.gguf", "logits-tiny-qwen2-q8_0.json", 15),
        ("tiny-qwen3-f16.gguf", "logits-tiny-qwen3-f16.json", 50),
        ("tiny-phi3-q8_0.gguf", "logits-tiny-phi3-q8_0.json", 15),
        ("tiny-phi3.5-q8_0.gguf", "logits-tiny-phi3.5-q8_0.json", 15),
        ("tiny-gemma3-q8_0.gguf", "logits-tiny-gemma3-q8_0.json", 25),
        ("tiny-gemma2-q8_0.gguf", "logits-tiny-gemma2-q8_0.json", 10),
    ] {
        let model = std::fs::read(testdata(&format!("models/{model}"))).unwrap();
        greedy_teacher_forced(&model, &format!("golden/{golden}"), min);
    }
}

/// Feeds each greedy case's prompt and llama.cpp's continuation; at every step whose golden
/// margin exceeds 0.75 nats our argmax must be its token, within 0.4 nats of its log-prob.
/// More than `min_checked` steps must be checked.
fn greedy_teacher_forced(model: &[u8], golden_name: &str, min_checked: usize) {
    let golden: Value =
        serde_json::from_slice(&std::fs::read(testdata(golden_name)).unwrap()).unwrap();
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let pool = ThreadPool::new(2);
    let (mut checked, mut worst) = (0, 0f64);
    for case in golden["greedy"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let greedy = ids(&case["greedy_ids"]);
        let mut seq = prompt.clone();
        seq.extend_from_slice(&greedy);
        let logits = logits_all_par(
            model,
            &seq,
            &trillim_runtime::cpu::best_kernels(),
            16,
            &pool,
        );
        let n_vocab = logits.len() / seq.len();
        for (k, &want) in greedy.iter().enumerate() {
            let pos = prompt.len() - 1 + k;
            let row = &logits[pos * n_vocab..(pos + 1) * n_vocab];
            let t1 = case["top1_logprob"][k].as_f64().unwrap();
            let t2 = case["top2_logprob"][k].as_f64().unwrap();
            if t1 - t2 <= 0.75 {
                continue;
            }
            checked += 1;
            let lp = log_softmax(row);
            assert_eq!(trillim_tests::argmax(row) as u32, want, "step {k}");
            let d = (lp[want as usize] - t1).abs();
            worst = worst.max(d);
            assert!(d < 0.4, "step {k}: logprob {} vs {t1}", lp[want as usize]);
        }
    }
    println!("{golden_name} greedy: {checked} confident steps agree, worst |dlogprob| {worst:.4}");
    assert!(checked > min_checked, "{checked} confident steps");
}

/// The same logits at every thread count (the pool only changes who computes which rows).
#[test]
fn thread_count_does_not_change_logits() {
    let model = std::fs::read(testdata("models/tiny-bitnet-tq2_0.gguf")).unwrap();
    let tokens: Vec<u32> = (0..40).map(|i| (i * 7919 % 49000) as u32).collect();
    let kernels = trillim_runtime::cpu::best_kernels();
    let reference = logits_all(&model, &tokens, &kernels, 8);
    for threads in [2, 3, 4] {
        let pool = ThreadPool::new(threads);
        let got = logits_all_par(&model, &tokens, &kernels, 8, &pool);
        assert_eq!(got, reference, "{threads} threads");
    }
}

/// The same logits, bit for bit, whatever the batch a token is fed in: the server relies on
/// it to sample the first token from the prompt's last chunk and still reproduce a seeded
/// output whether or not the prompt's prefix came from the cache.
#[test]
fn batch_size_does_not_change_logits() {
    let kernels = trillim_runtime::cpu::best_kernels();
    let mut models: Vec<(Vec<u8>, u32)> = [
        "models/tiny-bitnet-tq2_0.gguf",
        "models/tiny-bitnet-tq1_0.gguf",
        "models/tiny-b158-i2_s.gguf",
    ]
    .iter()
    .map(|m| (std::fs::read(testdata(m)).unwrap(), 49000))
    .collect();
    models.push((std::fs::read(smollm2_path()).unwrap(), 49000));
    // The Qwen fixtures' vocabulary has 5120 tokens.
    for m in ["models/tiny-qwen2-q8_0.gguf", "models/tiny-qwen3-f16.gguf"] {
        models.push((std::fs::read(testdata(m)).unwrap(), 5000));
    }
    // The Phi-3 fixture's has 8064.
    models.push((
        std::fs::read(testdata("models/tiny-phi3-q8_0.gguf")).unwrap(),
        8000,
    ));
    // The Gemma fixtures' have 8002; 70 tokens cross their 16-position windows.
    for m in [
        "models/tiny-gemma3-q8_0.gguf",
        "models/tiny-gemma2-q8_0.gguf",
    ] {
        models.push((std::fs::read(testdata(m)).unwrap(), 8000));
    }
    for (model, ids) in &models {
        let tokens: Vec<u32> = (0..70).map(|i| i * 7919 % ids).collect();
        let reference = logits_all(model, &tokens, &kernels, 1);
        for batch in [7, 64] {
            let got = logits_all(model, &tokens, &kernels, batch);
            assert!(got == reference, "batch {batch} differs from batch 1");
        }
    }
}
