//! `trillim quantize`'s converter on Hugging Face checkpoints in the layouts the Hub ships,
//! built by `scripts/make-hf-checkpoints.sh` from GGUF models with independent goldens:
//!
//! - SmolLM2-135M as `LlamaForCausalLM` (two float32 shards with an index, float16 norms,
//!   q/k rows in Hugging Face's rotate-half order), converted to Q4_1 and Q8_0 and scored
//!   against llama.cpp's log-probabilities and greedy steps of the original Q4_1 file, its
//!   tokenizer against llama.cpp's token ids; llama.cpp itself loads the converted files and
//!   agrees with the same goldens.
//! - The tiny BitNet b1.58 fixture as `BitNetForCausalLM` (packed uint8 ternary weights with a
//!   bf16 `weight_scale`, bf16 embeddings and norms), converted to I2_S, TQ2_0 and TQ1_0 and
//!   scored against the float64 reference's goldens.
//!
//! Tolerances: `testdata/golden/README.md`'s (mean |Δ logprob| < 0.15, perplexity within 2 %,
//! clear top-1 equal; greedy steps with margin > 0.75 equal and within 0.4 nats).
//! And the refusals: truncated files, headers that lie, missing shards, other architectures.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use trillim_core::format::gguf::Gguf;
use trillim_core::kernels::{Kernels, WeightType};
use trillim_core::model::Config;
use trillim_core::tokenizer::Tokenizer;
use trillim_runtime::convert::{self, Checkpoint, ConvertError};
use trillim_runtime::ThreadPool;
use trillim_tests::{
    argmax, ids, log_softmax, logits_all_par, made_once, repo_root, smollm2_path, testdata,
    testdata_json, tokenizer_mismatches,
};

/// The checkpoints, made once per build directory.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hf-checkpoints");
        made_once(&dir, |out| {
            let script = repo_root().join("scripts/make-hf-checkpoints.sh");
            for (kind, src) in [
                ("smollm2", smollm2_path()),
                ("bitnet", testdata("models/tiny-b158-i2_s.gguf")),
            ] {
                let ok = Command::new("bash")
                    .arg(&script)
                    .arg(kind)
                    .arg(src)
                    .arg(out.join(kind))
                    .status()
                    .expect("run scripts/make-hf-checkpoints.sh")
                    .success();
                assert!(ok, "scripts/make-hf-checkpoints.sh {kind} failed");
            }
        })
    })
}

/// Converts checkpoint `kind` to `ty` (`None`: the default type) and returns the GGUF bytes.
fn convert_to(kind: &str, ty: Option<WeightType>) -> Vec<u8> {
    let ckpt = Checkpoint::open(&fixtures().join(kind)).expect("open checkpoint");
    let mut out = Vec::new();
    let mut last = (0, 0);
    let size = convert::convert(&ckpt, ty, &mut out, &mut |d, t| last = (d, t)).expect("convert");
    assert_eq!(size, out.len() as u64, "reported size");
    assert_eq!(last.0, last.1, "progress ends at the total");
    out
}

/// Logits after every token of `tokens`, in passes of `batch`.
fn logits_all(model: &[u8], tokens: &[u32], kernels: &Kernels, batch: usize) -> Vec<f32> {
    logits_all_par(model, tokens, kernels, batch, &ThreadPool::new(2))
}

fn golden(name: &str) -> Value {
    testdata_json(name)
}

/// Scores per-position log-probabilities (`lp[i]` after token `i`) against a golden text.
fn check_positions(what: &str, lps: &[Vec<f64>], golden: &Value) {
    let (mut sum_abs, mut nll, mut n, mut clear, mut agree) = (0f64, 0f64, 0usize, 0, 0);
    for (i, p) in golden["positions"].as_array().unwrap().iter().enumerate() {
        let lp = &lps[i];
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
            let mine = (0..lp.len())
                .max_by(|&a, &b| lp[a].total_cmp(&lp[b]))
                .unwrap();
            if mine == want {
                agree += 1;
            } else {
                eprintln!("{what}: position {i}: top-1 {mine}, golden {want}");
            }
        }
    }
    let mean = sum_abs / n as f64;
    let ppl = (nll / n as f64).exp();
    let golden_ppl = golden["ppl"].as_f64().unwrap();
    let dppl = (ppl / golden_ppl - 1.0) * 100.0;
    println!(
        "{what}: mean|dlogprob| {mean:.4}, ppl {ppl:.3} vs {golden_ppl:.3} ({dppl:+.2}%), clear top-1 {agree}/{clear}"
    );
    assert!(mean < 0.15, "{what}: mean |dlogprob| {mean}");
    assert!(dppl.abs() < 2.0, "{what}: perplexity off by {dppl}%");
    assert_eq!(agree, clear, "{what}: clear top-1 disagreements");
}

fn check_text(what: &str, model: &[u8], golden: &Value) {
    let tokens = ids(&golden["tokens"]);
    let kernels = trillim_runtime::cpu::best_kernels();
    let logits = logits_all(model, &tokens, &kernels, 64);
    let n_vocab = logits.len() / tokens.len();
    let lps: Vec<Vec<f64>> = logits.chunks_exact(n_vocab).map(log_softmax).collect();
    check_positions(&format!("{what} ({})", kernels.name), &lps, golden);
}

/// SmolLM2's greedy continuations, teacher-forced.
fn check_greedy(what: &str, model: &[u8], golden: &Value) {
    let kernels = trillim_runtime::cpu::best_kernels();
    let mut checked = 0;
    for case in golden["greedy"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let greedy = ids(&case["greedy_ids"]);
        let mut seq = prompt.clone();
        seq.extend_from_slice(&greedy);
        let logits = logits_all(model, &seq, &kernels, 16);
        let n_vocab = logits.len() / seq.len();
        for (k, &want) in greedy.iter().enumerate() {
            let row = &logits[(prompt.len() - 1 + k) * n_vocab..][..n_vocab];
            let t1 = case["top1_logprob"][k].as_f64().unwrap();
            let t2 = case["top2_logprob"][k].as_f64().unwrap();
            if t1 - t2 <= 0.75 {
                continue;
            }
            checked += 1;
            assert_eq!(argmax(row) as u32, want, "{what}: greedy step {k}");
            let d = (log_softmax(row)[want as usize] - t1).abs();
            assert!(d < 0.4, "{what}: greedy step {k}: |dlogprob| {d}");
        }
    }
    assert!(checked > 0, "{what}: no confident greedy step");
}

/// The converted file's tokenizer gives llama.cpp's ids, and its vocabulary, merges, special
/// tokens and chat template are the original file's.
fn check_tokenizer(model: &[u8]) {
    let original = std::fs::read(smollm2_path()).unwrap();
    let (a, b) = (Gguf::parse(model).unwrap(), Gguf::parse(&original).unwrap());
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.chat_template",
    ] {
        assert_eq!(a.get_str(key), b.get_str(key), "{key}");
        assert_eq!(a.get_u64(key), b.get_u64(key), "{key}");
    }
    let mut mem = vec![0u32; Tokenizer::mem_words_for_gguf(&a).unwrap()];
    let tok = Tokenizer::from_gguf(&a, &mut mem).unwrap();
    let g = golden("golden/tokenizer-smollm2.json");
    let mut cases = 0;
    for case in g["tokenize"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let mut out = vec![0u32; tok.max_tokens(text)];
        let n = tok.encode(text, true, true, &mut out).unwrap();
        assert_eq!(&out[..n], ids(&case["ids"]).as_slice(), "{text:?}");
        cases += 1;
    }
    assert!(cases > 0);
}

#[test]
fn smollm2_checkpoint_to_q4_1_matches_llama_cpp() {
    let m = convert_to("smollm2", Some(WeightType::Q4_1));
    let g = golden("golden/logits-SmolLM2-135M-Instruct.Q4_1.json");
    check_tokenizer(&m);
    check_text("SmolLM2 HF -> Q4_1", &m, &g);
    check_greedy("SmolLM2 HF -> Q4_1", &m, &g);
}

#[test]
fn smollm2_checkpoint_to_q8_0_matches_llama_cpp_on_the_same_file() {
    let m = convert_to("smollm2", None);
    let g = Gguf::parse(&m).unwrap();
    assert_eq!(
        g.tensor("blk.0.attn_q.weight").unwrap().ty,
        Some(WeightType::Q8_0),
        "default type for a float checkpoint"
    );
    // The weights are the Q4_1 model's, requantized: close to its goldens...
    let q4 = golden("golden/logits-SmolLM2-135M-Instruct.Q4_1.json");
    let tokens = ids(&q4["tokens"]);
    let kernels = trillim_runtime::cpu::best_kernels();
    let logits = logits_all(&m, &tokens, &kernels, 64);
    let n_vocab = logits.len() / tokens.len();
    let lps: Vec<Vec<f64>> = logits.chunks_exact(n_vocab).map(log_softmax).collect();
    let mean = mean_abs_dlogprob(&lps, &q4);
    println!("SmolLM2 HF -> Q8_0 against the Q4_1 file's goldens: mean|dlogprob| {mean:.4}");
    assert!(mean < 0.15, "{mean}");
    // ...and llama.cpp loads the written file and agrees with trillim on it.
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("smollm2-hf-q8_0.gguf");
    std::fs::write(&path, &m).unwrap();
    let reference = llama_cpp_goldens(&path, &tokens);
    check_positions(
        "SmolLM2 HF -> Q8_0 against llama.cpp on it",
        &lps,
        &reference,
    );
}

fn mean_abs_dlogprob(lps: &[Vec<f64>], golden: &Value) -> f64 {
    let (mut sum, mut n) = (0f64, 0usize);
    for (i, p) in golden["positions"].as_array().unwrap().iter().enumerate() {
        if let (Some(next), Some(want)) = (p["next"].as_u64(), p["next_logprob"].as_f64()) {
            sum += (lps[i][next as usize] - want).abs();
            n += 1;
        }
    }
    sum / n as f64
}

/// llama.cpp's teacher-forced top-5 log-probabilities of `tokens` on the file at `path`, in the
/// goldens' shape (`positions`, `ppl`).
fn llama_cpp_goldens(path: &Path, tokens: &[u32]) -> Value {
    use std::io::Write;
    let tool = llama_cpp_tool();
    let req = format!(
        "L {}\n",
        tokens
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut child = Command::new(&tool)
        .arg("goldens")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run quant-ref");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "llama.cpp could not run {}",
        path.display()
    );
    // "P <i> <next> <logprob> <id>:<logprob> ×5"
    let (mut positions, mut nll, mut n) = (Vec::new(), 0f64, 0usize);
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() != Some(&"P") {
            continue;
        }
        let top: Vec<Value> = f[4..]
            .iter()
            .map(|p| {
                let (id, lp) = p.split_once(':').unwrap();
                serde_json::json!([id.parse::<u64>().unwrap(), lp.parse::<f64>().unwrap()])
            })
            .collect();
        let next: i64 = f[2].parse().unwrap();
        if next >= 0 {
            let lp: f64 = f[3].parse().unwrap();
            nll -= lp;
            n += 1;
            positions.push(serde_json::json!({"top": top, "next": next, "next_logprob": lp}));
        } else {
            positions.push(serde_json::json!({"top": top, "next": null, "next_logprob": null}));
        }
    }
    assert_eq!(positions.len(), tokens.len(), "llama.cpp's rows");
    serde_json::json!({"positions": positions, "ppl": (nll / n as f64).exp()})
}

/// llama.cpp's reference tool (`scripts/quant-ref.cpp`), built by `scripts/quant-models.sh`.
fn llama_cpp_tool() -> PathBuf {
    let out = Command::new(repo_root().join("scripts/quant-models.sh"))
        .arg("Q8_0")
        .output()
        .expect("run scripts/quant-models.sh");
    assert!(
        out.status.success(),
        "scripts/quant-models.sh failed (it needs cmake, g++ and the network once):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let model = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    model.parent().unwrap().join("quant-ref")
}

#[test]
fn bitnet_checkpoint_to_every_ternary_type_matches_the_reference() {
    let g = golden("golden/logits-tiny-b158-i2_s.json");
    for (ty, name) in [
        (None, "default (TQ2_0)"),
        (Some(WeightType::I2S), "I2_S"),
        (Some(WeightType::TQ1_0), "TQ1_0"),
    ] {
        let m = convert_to("bitnet", ty);
        let parsed = Gguf::parse(&m).unwrap();
        let want = ty.unwrap_or(WeightType::TQ2_0);
        assert_eq!(
            parsed.tensor("blk.1.ffn_down.weight").unwrap().ty,
            Some(want),
            "{name}"
        );
        assert_eq!(
            Config::from_gguf(&parsed).unwrap().arch_name,
            "bitnet-b1.58"
        );
        check_text(&format!("BitNet HF -> {name}"), &m, &g);
    }
}

// ----- refusals -----

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A copy of the BitNet checkpoint, changed by `edit`, and the error converting it gives.
fn refused(tag: &str, edit: impl FnOnce(&Path)) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bad-ckpt-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&fixtures().join("bitnet"), &dir);
    edit(&dir);
    let err: ConvertError = match Checkpoint::open(&dir) {
        Err(e) => e,
        Ok(ckpt) => convert::convert(&ckpt, None, std::io::sink(), &mut |_, _| {})
            .expect_err("a broken checkpoint converted"),
    };
    err.to_string()
}

fn header_json(path: &Path) -> (u64, Value, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let j: Value = serde_json::from_slice(&bytes[8..8 + n as usize]).unwrap();
    (n, j, bytes[8 + n as usize..].to_vec())
}

fn write_with_header(path: &Path, j: &Value, data: &[u8]) {
    let mut text = serde_json::to_vec(j).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    std::fs::write(path, out).unwrap();
}

#[test]
fn broken_checkpoints_are_refused_clearly() {
    let st = |d: &Path| d.join("model.safetensors");
    let e = refused("truncated", |d| {
        let b = std::fs::read(st(d)).unwrap();
        std::fs::write(st(d), &b[..b.len() / 2]).unwrap();
    });
    assert!(e.contains("model.safetensors"), "{e}");

    let e = refused("offsets", |d| {
        let (_, mut j, data) = header_json(&st(d));
        j["model.norm.weight"]["data_offsets"] = serde_json::json!([0, 1u64 << 40]);
        write_with_header(&st(d), &j, &data);
    });
    assert!(
        e.contains("model.norm.weight") || e.contains("offset"),
        "{e}"
    );

    let e = refused("dtype", |d| {
        let (_, mut j, data) = header_json(&st(d));
        j["model.layers.0.self_attn.q_proj.weight"]["dtype"] = "F64".into();
        write_with_header(&st(d), &j, &data);
    });
    assert!(e.contains("F64") || e.contains("dtype"), "{e}");

    let e = refused("shape", |d| {
        let (_, mut j, data) = header_json(&st(d));
        j["model.layers.1.mlp.up_proj.weight"]["shape"] = serde_json::json!([1, 1]);
        write_with_header(&st(d), &j, &data);
    });
    assert!(e.contains("up_proj"), "{e}");

    let e = refused("missing-tensor", |d| {
        let (_, mut j, data) = header_json(&st(d));
        let t = j
            .as_object_mut()
            .unwrap()
            .remove("model.layers.1.self_attn.v_proj.weight_scale");
        assert!(t.is_some());
        write_with_header(&st(d), &j, &data);
    });
    assert!(e.contains("v_proj.weight_scale"), "{e}");

    let e = refused("index-missing-shard", |d| {
        std::fs::write(
            d.join("model.safetensors.index.json"),
            r#"{"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
    });
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");

    let e = refused("index-escape", |d| {
        std::fs::write(
            d.join("model.safetensors.index.json"),
            r#"{"weight_map": {"model.norm.weight": "../model.safetensors"}}"#,
        )
        .unwrap();
    });
    assert!(e.contains("not a .safetensors file name"), "{e}");

    let e = refused("arch", |d| {
        let mut c: Value =
            serde_json::from_slice(&std::fs::read(d.join("config.json")).unwrap()).unwrap();
        c["architectures"] = serde_json::json!(["GPTNeoXForCausalLM"]);
        c["model_type"] = "gpt_neox".into();
        std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    });
    assert!(e.contains("GPTNeoXForCausalLM"), "{e}");

    let e = refused("no-tokenizer", |d| {
        std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    });
    assert!(e.contains("tokenizer.json"), "{e}");

    let e = refused("bad-code", |d| {
        let (_, j, mut data) = header_json(&st(d));
        let off = j["model.layers.0.mlp.gate_proj.weight"]["data_offsets"][0]
            .as_u64()
            .unwrap() as usize;
        data[off] = 0xff; // code 3 in every field
        write_with_header(&st(d), &j, &data);
    });
    assert!(e.contains("code is 3"), "{e}");
}

#[test]
fn float_checkpoints_refuse_ternary_types() {
    let ckpt = Checkpoint::open(&fixtures().join("smollm2")).unwrap();
    let e = convert::convert(
        &ckpt,
        Some(WeightType::TQ2_0),
        std::io::sink(),
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ternary"), "{e}");
}

/// Llama 3's RoPE scaling (`rope_scaling.rope_type: "llama3"`, as Llama 3.1/3.2 ship it) becomes
/// GGUF's `rope_freqs.weight` with the divisors Meta's definition gives, and llama.cpp reads the
/// written file as trillim does. The original context is set to 64 tokens so that the scaling
/// changes the frequencies within the golden text's length.
#[test]
fn llama3_rope_scaling_becomes_rope_freqs() {
    let src = fixtures().join("smollm2");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hf-smollm2-llama3-rope");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let to = dir.join(e.file_name());
        if std::fs::hard_link(e.path(), &to).is_err() {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
    let (factor, low, high, old_ctx) = (8.0f64, 1.0f64, 4.0f64, 64.0f64);
    let cfg_path = dir.join("config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["rope_scaling"] = serde_json::json!({
        "rope_type": "llama3", "factor": factor, "low_freq_factor": low,
        "high_freq_factor": high, "original_max_position_embeddings": old_ctx
    });
    std::fs::remove_file(&cfg_path).unwrap(); // a hard link: do not write through it
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();

    let ckpt = Checkpoint::open(&dir).unwrap();
    let mut m = Vec::new();
    convert::convert(&ckpt, None, &mut m, &mut |_, _| {}).unwrap();
    let g = Gguf::parse(&m).unwrap();
    let t = g.tensor("rope_freqs.weight").expect("rope_freqs.weight");
    let freqs: Vec<f32> = t
        .data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    // Meta's definition, restated: frequency f of pair i, wavelength 2π / f.
    let theta = cfg["rope_theta"].as_f64().unwrap();
    let hd = freqs.len() * 2;
    let (mut kept, mut slowed, mut blended) = (0, 0, 0);
    for (i, &got) in freqs.iter().enumerate() {
        let f = theta.powf(-2.0 * i as f64 / hd as f64);
        let wavelen = 2.0 * std::f64::consts::PI / f;
        let scaled = if wavelen < old_ctx / high {
            kept += 1;
            f
        } else if wavelen > old_ctx / low {
            slowed += 1;
            f / factor
        } else {
            blended += 1;
            let s = (old_ctx / wavelen - low) / (high - low);
            (1.0 - s) * f / factor + s * f
        };
        let want = f / scaled;
        assert!(
            (got as f64 - want).abs() < 1e-5 * want,
            "pair {i}: {got} vs {want}"
        );
    }
    assert!(
        kept > 0 && slowed > 0 && blended > 0,
        "{kept}/{slowed}/{blended}"
    );

    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("smollm2-llama3-rope.gguf");
    std::fs::write(&path, &m).unwrap();
    let tokens = ids(&golden("golden/logits-SmolLM2-135M-Instruct.Q4_1.json")["tokens"]);
    let reference = llama_cpp_goldens(&path, &tokens);
    let kernels = trillim_runtime::cpu::best_kernels();
    let logits = logits_all(&m, &tokens, &kernels, 64);
    let n_vocab = logits.len() / tokens.len();
    let lps: Vec<Vec<f64>> = logits.chunks_exact(n_vocab).map(log_softmax).collect();
    check_positions("llama3 RoPE scaling against llama.cpp", &lps, &reference);
    // And it matters: the unscaled model's log-probabilities are elsewhere.
    let plain = convert_to("smollm2", None);
    let base = logits_all(&plain, &tokens, &kernels, 64);
    let base_lps: Vec<Vec<f64>> = base.chunks_exact(n_vocab).map(log_softmax).collect();
    let moved = mean_abs_dlogprob(&base_lps, &reference);
    println!("unscaled against the scaled reference: {moved:.3} nats");
    assert!(moved > 0.15, "{moved}");
}

/// The tiny Qwen 2 and Qwen 3 fixtures as `Qwen2ForCausalLM` / `Qwen3ForCausalLM`
/// checkpoints (float32, Qwen 2's pre-tokenizer), made once per build directory.
fn qwen_fixture(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("hf-{name}"));
    if !dir.join("config.json").exists() {
        let ok = Command::new("bash")
            .arg(repo_root().join("scripts/make-hf-checkpoints.sh"))
            .arg("qwen")
            .arg(testdata(&format!("models/{name}.gguf")))
            .arg(&dir)
            .status()
            .expect("run scripts/make-hf-checkpoints.sh")
            .success();
        assert!(ok, "scripts/make-hf-checkpoints.sh qwen failed");
    }
    dir
}

/// Qwen checkpoints convert into files that match llama.cpp's goldens of the originals: the
/// biases and head norms land where the engine reads them, and the tokenizer gives
/// llama.cpp's ids.
#[test]
fn qwen_checkpoints_match_llama_cpp() {
    for (name, ty) in [
        ("tiny-qwen2-q8_0", WeightType::Q8_0),
        ("tiny-qwen3-f16", WeightType::F16),
    ] {
        let ckpt = Checkpoint::open(&qwen_fixture(name)).unwrap();
        let mut m = Vec::new();
        convert::convert(&ckpt, Some(ty), &mut m, &mut |_, _| {}).unwrap();
        let g = Gguf::parse(&m).unwrap();
        let arch = &name[5..10];
        assert_eq!(Config::from_gguf(&g).unwrap().arch_name, arch);
        let gold = golden(&format!("golden/logits-{name}.json"));
        check_text(&format!("{name} HF -> {ty:?}"), &m, &gold);
        let mut mem = vec![0u32; Tokenizer::mem_words_for_gguf(&g).unwrap()];
        let tok = Tokenizer::from_gguf(&g, &mut mem).unwrap();
        let failures = tokenizer_mismatches(&tok, &gold, true);
        assert!(failures.is_empty(), "{name}: {}", failures.join("\n"));
    }
}
