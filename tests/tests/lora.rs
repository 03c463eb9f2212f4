//! LoRA adapters on SmolLM2-135M, with fixtures built by `scripts/make-lora-fixtures.sh`
//! (numpy, safetensors and gguf-py): the unmerged side path against a merged `W + s·B·A`
//! reference that the script computes in float64, the PEFT and GGUF forms against each other,
//! scale 0 against the base, and the loader's refusals.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use trillim_core::Sequential;
use trillim_runtime::{Adapter, AdapterError, LoadedModel, LoraQuant, Session};
use trillim_tests::{made_once, repo_root, smollm2_path};

/// "The quick brown fox jumps over the lazy dog. Once upon a time" in SmolLM2's vocabulary
/// (any in-range ids serve: the comparisons are between two runs on the same tokens).
const TOKENS: [u32; 14] = [
    504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30, 9084, 2056, 253, 655,
];

fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lora-fixtures");
        made_once(&dir, |out| {
            let ok = Command::new("bash")
                .arg(repo_root().join("scripts/make-lora-fixtures.sh"))
                .arg(smollm2_path())
                .arg(out)
                .status()
                .expect("run scripts/make-lora-fixtures.sh")
                .success();
            assert!(ok, "scripts/make-lora-fixtures.sh failed");
        })
    })
}

fn open(path: &Path) -> LoadedModel {
    LoadedModel::open(path, trillim_runtime::cpu::best_kernels()).unwrap()
}

fn logits(model: &LoadedModel) -> Vec<f32> {
    let mut s = Session::new(model, TOKENS.len(), TOKENS.len());
    s.feed(model, &Sequential, &TOKENS, TOKENS.len())
        .unwrap()
        .to_vec()
}

/// Logits one token at a time (the decode path), after each token.
fn logits_stepwise(model: &LoadedModel) -> Vec<f32> {
    let mut s = Session::new(model, TOKENS.len(), 1);
    let mut out = Vec::new();
    for t in TOKENS {
        out.extend_from_slice(s.feed(model, &Sequential, &[t], 1).unwrap());
    }
    out
}

/// [`logits`] with the work spread over a pool of `threads`.
fn logits_pooled(model: &LoadedModel, threads: usize) -> Vec<f32> {
    let pool = trillim_runtime::ThreadPool::new(threads);
    let mut s = Session::new(model, TOKENS.len(), TOKENS.len());
    s.feed(model, &pool, &TOKENS, TOKENS.len())
        .unwrap()
        .to_vec()
}

/// Logits fed in pieces of `piece` tokens (decode steps of a few sequences' worth) on a pool
/// of `threads`, after each token.
fn logits_in_pieces(model: &LoadedModel, piece: usize, threads: usize) -> Vec<f32> {
    let pool = trillim_runtime::ThreadPool::new(threads);
    let mut s = Session::new(model, TOKENS.len(), piece);
    let mut out = Vec::new();
    for p in TOKENS.chunks(piece) {
        out.extend_from_slice(s.feed(model, &pool, p, p.len()).unwrap());
    }
    out
}

fn with_adapter(mut model: LoadedModel, dir: &Path, quant: LoraQuant) -> LoadedModel {
    let a = Adapter::open(dir, &model, quant).unwrap();
    model.set_adapter(Some(a));
    model
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn scale_zero_is_the_base_bit_for_bit() {
    let base = logits(&open(&smollm2_path()));
    let model = with_adapter(
        open(&smollm2_path()),
        &fixtures().join("peft-zero"),
        LoraQuant::None,
    );
    assert_eq!(model.adapter().unwrap().pairs, 21);
    assert_eq!(logits(&model), base);
}

/// The side path on the f32 base equals the model whose weights the script merged in float64.
/// Every product of both runs takes `f32` activations, so they differ only in `f32` rounding
/// (`W·x + s·B(A·x)` against `(W + s·B·A)·x`) and in where that moves the f16 rounding of the
/// KV cache: measured 3.6e-4 of the logits' range (0.011 of 31), bounded here by 2e-3, while
/// the adapter itself moves logits by about 1.0 (a wrong row order of q/k would move them by
/// as much as the adapter does).
#[test]
fn unmerged_equals_the_merged_reference() {
    let fx = fixtures();
    let plain = logits(&open(&fx.join("base-f32.gguf")));
    let merged = logits(&open(&fx.join("merged.gguf")));
    for dir in ["peft", "gguf"] {
        let model = with_adapter(
            open(&fx.join("base-f32.gguf")),
            &fx.join(dir),
            LoraQuant::None,
        );
        // A batch (a token per task) and single tokens (a dot product per task) compute each
        // value the same way: equal bit for bit.
        let (batch, steps) = (logits(&model), logits_stepwise(&model));
        assert_eq!(batch, steps, "{dir}");
        // Pieces of 1 to 5 tokens on 2 threads: a projection group's side paths in two pool
        // passes (under 4 tokens) or a token per task, each value computed the same way.
        for piece in 1..=5 {
            assert_eq!(logits_in_pieces(&model, piece, 2), batch, "{dir}: {piece}");
        }
        for got in [batch, steps] {
            let range = merged.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = max_abs_diff(&got, &merged);
            assert!(
                diff < 2e-3 * range,
                "{dir}: max |unmerged − merged| = {diff} (logit range {range})"
            );
            assert!(
                max_abs_diff(&plain, &merged) > 0.5,
                "the adapter must matter"
            );
        }
    }
}

/// PEFT (Hugging Face row order) and GGUF (q/k rows of B permuted by the converter) hold the
/// same numbers, so after the loader's permutation both give the same logits bit for bit, on
/// the real Q4_1 model.
#[test]
fn peft_and_gguf_forms_agree() {
    let fx = fixtures();
    let peft = with_adapter(open(&smollm2_path()), &fx.join("peft"), LoraQuant::None);
    let gguf = with_adapter(
        open(&smollm2_path()),
        &fx.join("gguf/adapter.gguf"),
        LoraQuant::None,
    );
    let (a, b) = (logits(&peft), logits(&gguf));
    assert_eq!(a, b);
    // Spread over threads, each value is still computed by one task in the same order.
    assert_eq!(logits_pooled(&peft, 3), a);
    let base = logits(&open(&smollm2_path()));
    assert!(max_abs_diff(&a, &base) > 0.5);
}

/// bfloat16 matrices: within 1 % of the logits' range of the f32 adapter, on the base whose
/// products all take `f32` activations (on a Q4_1 base, any change of the inputs flips int8
/// activation codes downstream, which moves single logits by up to 2 on its own).
#[test]
fn bf16_adapter_stays_close() {
    let fx = fixtures();
    let base = || open(&fx.join("base-f32.gguf"));
    let f32s = logits(&with_adapter(base(), &fx.join("peft"), LoraQuant::None));
    let bf16 = logits(&with_adapter(base(), &fx.join("peft"), LoraQuant::Bf16));
    let range = f32s.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(&f32s, &bf16);
    assert!(diff < 0.01 * range, "bf16 diff {diff}, range {range}");
}

fn refused(dir: &str) -> String {
    let model = open(&smollm2_path());
    match Adapter::open(&fixtures().join(dir), &model, LoraQuant::None) {
        Ok(_) => panic!("{dir} was accepted"),
        Err(e @ (AdapterError::Invalid { .. } | AdapterError::Mismatch { .. })) => e.to_string(),
        Err(e) => panic!("{dir}: unexpected error {e}"),
    }
}

#[test]
fn bad_adapters_are_refused_clearly() {
    let half = refused("bad-half");
    assert!(
        half.contains("layer 13 q_proj has lora_A but no lora_B"),
        "{half}"
    );
    let shape = refused("bad-shape");
    assert!(
        shape.contains("layer 13 gate_proj") && shape.contains("575"),
        "{shape}"
    );
    let layer = refused("bad-layer");
    assert!(
        layer.contains("layer 30") && layer.contains("30 layers"),
        "{layer}"
    );
    let arch = refused("bad-arch");
    assert!(
        arch.contains("'qwen2'") && arch.contains("'llama'"),
        "{arch}"
    );
    let none = refused("gguf/..");
    assert!(none.contains("no adapter found"), "{none}");
}

/// A copy of the PEFT fixture with SmolLM2's own tokenizer files beside it
/// (`scripts/make-hf-checkpoints.sh tokenizer`), changed by `edit`.
fn peft_with_files(tag: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("lora-files-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(fixtures().join("peft")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let ok = Command::new("bash")
        .arg(repo_root().join("scripts/make-hf-checkpoints.sh"))
        .arg("tokenizer")
        .arg(smollm2_path())
        .arg(&dir)
        .status()
        .expect("run scripts/make-hf-checkpoints.sh")
        .success();
    assert!(ok, "scripts/make-hf-checkpoints.sh tokenizer failed");
    edit(&dir);
    dir
}

fn template_of(dir: &Path) -> Result<Option<String>, String> {
    let model = open(&smollm2_path());
    Adapter::open(dir, &model, LoraQuant::None)
        .map(|a| a.chat_template)
        .map_err(|e| e.to_string())
}

/// The model's own tokenizer files beside an adapter change nothing; a chat template there
/// replaces the model's (`lora_chat_template.jinja` over `chat_template.jinja` over the
/// tokenizer config's), and a GGUF adapter written from it carries the template along.
#[test]
fn an_adapter_brings_its_chat_template() {
    let model_template = {
        let m = open(&smollm2_path());
        m.gguf()
            .get_str("tokenizer.chat_template")
            .unwrap()
            .to_string()
    };
    let same = peft_with_files("same", |_| {});
    assert_eq!(
        template_of(&same).unwrap().as_deref(),
        Some(&*model_template)
    );

    let custom = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}";
    let jinja = peft_with_files("jinja", |d| {
        std::fs::write(d.join("chat_template.jinja"), custom).unwrap();
    });
    assert_eq!(template_of(&jinja).unwrap().as_deref(), Some(custom));
    let lora_jinja = peft_with_files("lora-jinja", |d| {
        std::fs::write(d.join("chat_template.jinja"), "ignored").unwrap();
        std::fs::write(d.join("lora_chat_template.jinja"), custom).unwrap();
    });
    assert_eq!(template_of(&lora_jinja).unwrap().as_deref(), Some(custom));

    // Written as a GGUF adapter (what `trillim quantize --adapter` does), the template and the
    // matrices come back as they were.
    let model = open(&smollm2_path());
    let a = Adapter::open(&jinja, &model, LoraQuant::None).unwrap();
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lora-written.gguf");
    let mut out = Vec::new();
    a.write_gguf(&model, &mut out).unwrap();
    std::fs::write(&path, &out).unwrap();
    let back = Adapter::open(&path, &model, LoraQuant::None).unwrap();
    assert_eq!(back.chat_template.as_deref(), Some(custom));
    let (x, y) = (
        logits(&with_adapter(
            open(&smollm2_path()),
            &jinja,
            LoraQuant::None,
        )),
        logits(&with_adapter(open(&smollm2_path()), &path, LoraQuant::None)),
    );
    assert_eq!(
        x, y,
        "the written GGUF adapter computes what the PEFT one does"
    );
}

/// Tokenizer files that describe another vocabulary, or other special tokens, are refused
/// with a message that names the difference.
#[test]
fn an_adapter_that_changes_the_tokenizer_is_refused() {
    let renamed = peft_with_files("renamed", |d| {
        let p = d.join("tokenizer.json");
        let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let vocab = j["model"]["vocab"].as_object_mut().unwrap();
        let id = vocab
            .remove("hello")
            .expect("'hello' is in SmolLM2's vocabulary");
        vocab.insert("howdy".into(), id);
        std::fs::write(&p, j.to_string()).unwrap();
    });
    let e = template_of(&renamed).unwrap_err();
    assert!(
        e.contains("another vocabulary") && e.contains("howdy"),
        "{e}"
    );

    let eos = peft_with_files("eos", |d| {
        let p = d.join("tokenizer_config.json");
        let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        j["eos_token"] = "<|endoftext|>".into();
        std::fs::write(&p, j.to_string()).unwrap();
    });
    let e = template_of(&eos).unwrap_err();
    assert!(e.contains("eos_token") && e.contains("<|im_end|>"), "{e}");
}

/// `lora_quant` int8, q8_0 and q4_0: the side path's error, as a share of how far the f32
/// adapter moves the logits, stays within 5 % (int8), 8 % (q8_0, whose `A·x` also quantizes
/// its input) and 25 % (q4_0), on the base whose
/// products all take `f32` activations; the decode path (a token at a time) and the batched
/// one agree, and the scalar kernels agree with the selected SIMD ones (within the float
/// rounding the base model's own kernels already differ by, a few thousandths of a logit).
#[test]
fn quantized_adapters_stay_within_tolerance() {
    let fx = fixtures();
    let base_path = fx.join("base-f32.gguf");
    let base = || open(&base_path);
    let peft = fx.join("peft");
    let f32s = logits(&with_adapter(base(), &peft, LoraQuant::None));
    let effect = max_abs_diff(&f32s, &logits(&base()));
    assert!(effect > 0.5, "the adapter moves the logits ({effect})");
    for (quant, share) in [
        (LoraQuant::Int8, 0.05),
        (LoraQuant::Q8_0, 0.08),
        (LoraQuant::Q4_0, 0.25),
    ] {
        let m = with_adapter(base(), &peft, quant);
        let batched = logits(&m);
        let err = max_abs_diff(&f32s, &batched);
        println!(
            "{quant:?}: max |dlogit| {err:.4} = {:.1} % of the adapter's effect {effect:.3}",
            100.0 * err / effect
        );
        assert!(err < share * effect, "{quant:?}: {err} vs effect {effect}");
        let stepwise = logits_stepwise(&m);
        let d = max_abs_diff(&batched, &stepwise);
        assert!(d < 0.03 * effect, "{quant:?}: decode path {d}");
        let scalar =
            LoadedModel::open(&base_path, trillim_core::kernels::Kernels::scalar()).unwrap();
        let scalar = logits(&with_adapter(scalar, &peft, quant));
        let d = max_abs_diff(&batched, &scalar);
        println!(
            "{quant:?}: decode path within {:.5}, scalar kernels within {d:.5}",
            max_abs_diff(&batched, &stepwise)
        );
        assert!(d < 0.03 * effect, "{quant:?}: scalar kernels {d}");
    }
    // A name outside the list is refused naming the accepted ones.
    let e = LoraQuant::parse("q5_k").unwrap_err();
    assert!(e.contains("none, bf16, int8, q8_0, q4_0"), "{e}");
}
