//! One model stored in every weight format gives the same logits as its F32 form (within each
//! format's quantization error): checks each format's decoding at the model level, including
//! the float-activation path that no fixture model uses.
#![forbid(unsafe_code)]

use trillim_core::kernels::f16::f32_to_f16;
use trillim_core::kernels::formats::{quantize_row_q4_0, quantize_row_q8_0};
use trillim_core::kernels::WeightType;
use trillim_core::Sequential;
use trillim_runtime::{LoadedModel, Session};
use trillim_tests::{GgufBuilder, Meta};

const D: usize = 256;
const FF: usize = 512;
const VOCAB: usize = 300;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn encode(ty: WeightType, w: &[f32], cols: usize) -> Vec<u8> {
    match ty {
        WeightType::F32 => w.iter().flat_map(|v| v.to_le_bytes()).collect(),
        WeightType::F16 => w
            .iter()
            .flat_map(|&v| f32_to_f16(v).to_le_bytes())
            .collect(),
        WeightType::BF16 => w
            .iter()
            .flat_map(|&v| ((v.to_bits() >> 16) as u16).to_le_bytes())
            .collect(),
        WeightType::Q8_0 | WeightType::Q4_0 => {
            let rb = ty.row_bytes(cols).unwrap();
            let mut out = vec![0u8; w.len() / cols * rb];
            for (r, o) in w.chunks_exact(cols).zip(out.chunks_exact_mut(rb)) {
                if ty == WeightType::Q8_0 {
                    quantize_row_q8_0(r, o)
                } else {
                    quantize_row_q4_0(r, o)
                }
            }
            out
        }
        WeightType::TQ2_0 | WeightType::TQ1_0 | WeightType::I2S => ternary(ty, w),
        other => unreachable!("{other:?} is not encoded by this test"),
    }
}

/// Ternary weights (values in {−s, 0, s}) in a ternary format.
fn ternary(ty: WeightType, w: &[f32]) -> Vec<u8> {
    let s = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    let t: Vec<u8> = w
        .iter()
        .map(|&v| ((v / s).round() as i32 + 1) as u8)
        .collect();
    let mut out = Vec::new();
    match ty {
        WeightType::TQ2_0 => {
            for blk in t.chunks_exact(256) {
                for j in 0..2 {
                    for m in 0..32 {
                        let mut b = 0u8;
                        for l in 0..4 {
                            b |= blk[j * 128 + l * 32 + m] << (2 * l);
                        }
                        out.push(b);
                    }
                }
                out.extend_from_slice(&f32_to_f16(s).to_le_bytes());
            }
        }
        WeightType::TQ1_0 => {
            // Digits in weight order: 32 bytes × 5, 16 bytes × 5, 4 bytes × 4 (as ggml).
            let pack = |digits: &[u8]| -> u8 {
                let v = digits.iter().fold(0u32, |acc, &d| acc * 3 + d as u32);
                let v = v * 3u32.pow(5 - digits.len() as u32);
                (v * 256).div_ceil(243) as u8
            };
            for blk in t.chunks_exact(256) {
                for m in 0..32 {
                    out.push(pack(&(0..5).map(|n| blk[n * 32 + m]).collect::<Vec<_>>()));
                }
                for m in 0..16 {
                    out.push(pack(
                        &(0..5).map(|n| blk[160 + n * 16 + m]).collect::<Vec<_>>(),
                    ));
                }
                for j in 0..4 {
                    out.push(pack(
                        &(0..4).map(|n| blk[240 + n * 4 + j]).collect::<Vec<_>>(),
                    ));
                }
                out.extend_from_slice(&f32_to_f16(s).to_le_bytes());
            }
        }
        WeightType::I2S => {
            for g in t.chunks_exact(128) {
                for j in 0..32 {
                    out.push(g[j] << 6 | g[j + 32] << 4 | g[j + 64] << 2 | g[j + 96]);
                }
            }
            let mut tail = [0u8; 32];
            tail[..4].copy_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&tail);
        }
        _ => unreachable!(),
    }
    out
}

/// A 2-layer model; `quantize` picks the projection format, `arch` the semantics.
fn model(arch: &str, ty: WeightType, ternary_weights: bool) -> Vec<u8> {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut mat = |rows: usize, cols: usize| -> Vec<f32> {
        let scale = 1.0 / (cols as f32).sqrt();
        (0..rows * cols)
            .map(|_| {
                let v = rng.next();
                if ternary_weights {
                    (v * 1.5).round().clamp(-1.0, 1.0) * scale
                } else {
                    v * scale * 1.7
                }
            })
            .collect()
    };
    let ones = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| (1.0f32 + (i % 7) as f32 * 0.01).to_le_bytes())
            .collect()
    };
    let (heads, kv_heads) = (4u32, 2u32);
    let kv = D / heads as usize * kv_heads as usize;
    let embd: Vec<f32> = mat(VOCAB, D).iter().map(|v| v * 8.0).collect();
    let mut b = GgufBuilder::new()
        .meta("general.architecture", Meta::Str(arch.into()))
        .meta(&format!("{arch}.embedding_length"), Meta::U32(D as u32))
        .meta(&format!("{arch}.block_count"), Meta::U32(2))
        .meta(&format!("{arch}.feed_forward_length"), Meta::U32(FF as u32))
        .meta(&format!("{arch}.attention.head_count"), Meta::U32(heads))
        .meta(
            &format!("{arch}.attention.head_count_kv"),
            Meta::U32(kv_heads),
        )
        .meta(&format!("{arch}.context_length"), Meta::U32(64))
        .tensor(
            "token_embd.weight",
            &[D as u64, VOCAB as u64],
            0,
            encode(WeightType::F32, &embd, D),
        )
        .tensor("output_norm.weight", &[D as u64], 0, ones(D));
    for l in 0..2 {
        let p = |s: &str| format!("blk.{l}.{s}");
        let mut mats: Vec<(&str, usize, usize, Vec<f32>)> = [
            ("attn_q.weight", D, D),
            ("attn_k.weight", kv, D),
            ("attn_v.weight", kv, D),
            ("attn_output.weight", D, D),
            ("ffn_gate.weight", FF, D),
            ("ffn_up.weight", FF, D),
            ("ffn_down.weight", D, FF),
        ]
        .into_iter()
        .map(|(name, rows, cols)| (name, rows, cols, mat(rows, cols)))
        .collect();
        if arch == "phi3" {
            // Phi-3's fused matrices: Q, K and V rows in one, gate then up rows in another.
            let fuse = |parts: &[&(&str, usize, usize, Vec<f32>)]| -> (usize, Vec<f32>) {
                let rows = parts.iter().map(|m| m.1).sum();
                (
                    rows,
                    parts.iter().flat_map(|m| m.3.iter().copied()).collect(),
                )
            };
            let (qkv_rows, qkv) = fuse(&[&mats[0], &mats[1], &mats[2]]);
            let (gu_rows, gate_up) = fuse(&[&mats[4], &mats[5]]);
            let (o, down) = (mats[3].clone(), mats[6].clone());
            mats = vec![
                ("attn_qkv.weight", qkv_rows, D, qkv),
                o,
                ("ffn_up.weight", gu_rows, D, gate_up),
                down,
            ];
        }
        for (name, rows, cols, w) in mats {
            b = b.tensor(
                &p(name),
                &[cols as u64, rows as u64],
                ty.ggml_id(),
                encode(ty, &w, cols),
            );
        }
        b = b.tensor(&p("attn_norm.weight"), &[D as u64], 0, ones(D));
        b = b.tensor(&p("ffn_norm.weight"), &[D as u64], 0, ones(D));
        if arch.starts_with("bitnet") {
            b = b.tensor(&p("attn_sub_norm.weight"), &[D as u64], 0, ones(D));
            b = b.tensor(&p("ffn_sub_norm.weight"), &[FF as u64], 0, ones(FF));
        }
    }
    b.build()
}

fn logits(bytes: Vec<u8>) -> Vec<f32> {
    let m = LoadedModel::from_vec(bytes, "test".as_ref(), trillim_runtime::cpu::best_kernels())
        .unwrap();
    let tokens: Vec<u32> = (0..12).map(|i| (i * 37 % VOCAB) as u32).collect();
    let mut s = Session::new(&m, 16, 5);
    s.feed(&m, &Sequential, &tokens, 1).unwrap().to_vec()
}

fn compare(name: &str, reference: &[f32], got: &[f32], tol: f32) {
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = reference
        .iter()
        .zip(got)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale;
    println!("{name}: max |dlogit| / max |logit| = {err:.5}");
    assert!(err < tol, "{name}: {err}");
}

#[test]
fn float_and_block_formats_agree_with_f32() {
    let reference = logits(model("llama", WeightType::F32, false));
    for (ty, tol) in [
        (WeightType::F16, 0.002),
        (WeightType::BF16, 0.02),
        (WeightType::Q8_0, 0.02),
        (WeightType::Q4_0, 0.15),
    ] {
        compare(
            ty.name(),
            &reference,
            &logits(model("llama", ty, false)),
            tol,
        );
    }
}

#[test]
fn ternary_formats_agree_with_f32() {
    // Ternary weights are exact in every ternary format; only activation quantization differs.
    for arch in ["bitnet", "bitnet-b1.58"] {
        let reference = logits(model(arch, WeightType::F32, true));
        for ty in [WeightType::TQ2_0, WeightType::TQ1_0, WeightType::I2S] {
            compare(
                &format!("{arch} {}", ty.name()),
                &reference,
                &logits(model(arch, ty, true)),
                0.03,
            );
        }
    }
}

/// Phi-3's fused `attn_qkv` and gate-then-up `ffn_up`, split into row views at load, give the
/// same logits, bit for bit, as the same weights stored apart (`qwen2` without biases is the
/// same pass), in every format: the views are exact byte ranges of each format's rows.
#[test]
fn fused_phi3_matrices_equal_separate_ones_in_every_format() {
    for (ty, ternary) in [
        (WeightType::F32, false),
        (WeightType::F16, false),
        (WeightType::BF16, false),
        (WeightType::Q8_0, false),
        (WeightType::Q4_0, false),
        (WeightType::TQ2_0, true),
        (WeightType::TQ1_0, true),
        (WeightType::I2S, true),
    ] {
        let apart = logits(model("qwen2", ty, ternary));
        let fused = logits(model("phi3", ty, ternary));
        assert!(apart == fused, "{}: fused logits differ", ty.name());
    }
}

/// Logits after each prompt's last token and after each of `steps` greedy tokens, for every
/// prompt run alone in a one-sequence session.
fn alone(m: &LoadedModel, prompts: &[Vec<u32>], steps: usize) -> Vec<Vec<Vec<f32>>> {
    let nv = m.config.n_vocab;
    prompts
        .iter()
        .map(|p| {
            let mut s = Session::new(m, 48, 4);
            let mut rows = vec![s.feed(m, &Sequential, p, 1).unwrap().to_vec()];
            for _ in 0..steps {
                let next = trillim_tests::argmax(rows.last().unwrap()) as u32;
                rows.push(s.feed(m, &Sequential, &[next], 1).unwrap()[..nv].to_vec());
            }
            rows
        })
        .collect()
}

/// The same, all prompts together in one session with a slot each: every step mixes decode
/// tokens of the sequences that finished their prompt with prompt chunks of the others, in
/// batches larger than the session's `max_batch` (so they are split across passes too).
fn batched(
    m: &LoadedModel,
    prompts: &[Vec<u32>],
    steps: usize,
    par: &dyn trillim_core::Parallel,
) -> Vec<Vec<Vec<f32>>> {
    use trillim_core::model::SeqToken;
    let nv = m.config.n_vocab;
    let mut s = Session::with_slots(m, 48, 4, prompts.len());
    let mut fed = vec![0usize; prompts.len()];
    let mut rows: Vec<Vec<Vec<f32>>> = vec![Vec::new(); prompts.len()];
    while rows.iter().any(|r| r.len() < steps + 1) {
        let mut batch = Vec::new();
        for (slot, p) in prompts.iter().enumerate() {
            if fed[slot] < p.len() {
                // A prompt chunk of up to 3 tokens (the slot's number + 1: uneven chunks).
                let n = (slot + 1).min(p.len() - fed[slot]);
                for k in 0..n {
                    let last = fed[slot] + k + 1 == p.len();
                    batch.push(SeqToken {
                        token: p[fed[slot] + k],
                        slot: slot as u16,
                        logits: last,
                    });
                }
                fed[slot] += n;
            } else if rows[slot].len() < steps + 1 {
                let next = trillim_tests::argmax(rows[slot].last().unwrap()) as u32;
                batch.push(SeqToken {
                    token: next,
                    slot: slot as u16,
                    logits: true,
                });
            }
        }
        let out = s.feed_seqs(m, par, &batch).unwrap().to_vec();
        for (row, t) in batch.iter().filter(|t| t.logits).enumerate() {
            rows[t.slot as usize].push(out[row * nv..(row + 1) * nv].to_vec());
        }
    }
    rows
}

/// A sequence's logits are bit-identical whether it runs alone or batched with others, for
/// every weight format (synthetic models), the fixture files and SmolLM2.
#[test]
fn batching_sequences_does_not_change_logits() {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for ty in [
        WeightType::F32,
        WeightType::F16,
        WeightType::BF16,
        WeightType::Q8_0,
        WeightType::Q4_0,
    ] {
        files.push((ty.name().to_string(), model("llama", ty, false)));
    }
    for ty in [WeightType::TQ2_0, WeightType::TQ1_0, WeightType::I2S] {
        files.push((ty.name().to_string(), model("bitnet-b1.58", ty, true)));
    }
    for f in [
        "models/tiny-bitnet-tq2_0.gguf",
        "models/tiny-bitnet-tq1_0.gguf",
        "models/tiny-b158-i2_s.gguf",
    ] {
        files.push((
            f.to_string(),
            std::fs::read(trillim_tests::testdata(f)).unwrap(),
        ));
    }
    let smollm2 = trillim_tests::smollm2_path();
    files.push(("SmolLM2 Q4_1".into(), std::fs::read(smollm2).unwrap()));
    let pool = trillim_runtime::ThreadPool::new(2);
    for (name, bytes) in files {
        let m = LoadedModel::from_vec(bytes, "test".as_ref(), trillim_runtime::cpu::best_kernels())
            .unwrap();
        let nv = m.config.n_vocab as u32;
        let prompts: Vec<Vec<u32>> = [13usize, 5, 9]
            .iter()
            .enumerate()
            .map(|(k, &n)| {
                (0..n as u32)
                    .map(|i| (i * 37 + k as u32 * 101) % nv)
                    .collect()
            })
            .collect();
        let want = alone(&m, &prompts, 4);
        let got = batched(&m, &prompts, 4, &pool);
        for (slot, (w, g)) in want.iter().zip(&got).enumerate() {
            for (step, (a, b)) in w.iter().zip(g).enumerate() {
                assert!(
                    a == b,
                    "{name}: sequence {slot}, step {step} differs when batched"
                );
            }
        }
    }
}
