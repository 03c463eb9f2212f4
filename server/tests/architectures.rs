//! `trillim serve` on the tiny fixtures of each architecture family beyond Llama and BitNet
//! (Qwen 2, Qwen 3, Phi-3 with a sliding window, Phi-3.5 with LongRoPE's short and long
//! factors, Gemma 3 with
//! sliding-window layers shorter than its prompts) over real HTTP: the
//! model's own chat template (rendered by minijinja where the native renderer does not know
//! it) gives llama.cpp's prompt ids, and greedy decoding follows llama.cpp's continuation
//! (testdata/golden/logits-tiny-*.json, from scripts/arch-goldens.py).
#![forbid(unsafe_code)]

mod common;

use common::{fixture, Server};
use serde_json::{json, Value};
use trillim_core::format::gguf::Gguf;
use trillim_core::tokenizer::Tokenizer;

fn serve(file: &str, ctx: usize) -> Server {
    let tag = file.trim_end_matches(".gguf");
    let home = common::store_with(&format!("arch-{tag}"), "org/arch", &fixture(file));
    let ctx = ctx.to_string();
    common::serve(home, &["org/arch", "--threads", "1", "--ctx", &ctx], &[])
}

#[test]
fn chat_follows_llama_cpp_greedy() {
    // The goldens' context is 2048: the long LongRoPE fixture needs it (its factors are chosen
    // by context size), the others give the same logits in any context that holds the text.
    for (name, ctx) in [
        ("tiny-qwen2-q8_0", 256),
        ("tiny-qwen3-f16", 256),
        ("tiny-phi3-q8_0", 256),
        ("tiny-phi3.5-q8_0", 256),
        ("tiny-phi3.5-long-q8_0", 2048),
        ("tiny-gemma3-q8_0", 256),
        ("tiny-gemma2-q8_0", 256),
    ] {
        let file = format!("{name}.gguf");
        let golden = std::fs::read(format!(
            "{}/../testdata/golden/logits-{name}.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let golden: Value = serde_json::from_slice(&golden).unwrap();
        let model = std::fs::read(fixture(&file)).unwrap();
        let gguf = Gguf::parse(&model).unwrap();
        let mut mem = vec![0u32; Tokenizer::mem_words_for_gguf(&gguf).unwrap()];
        let tok = Tokenizer::from_gguf(&gguf, &mut mem).unwrap();
        let s = serve(&file, ctx);
        let (mut cases, mut checked) = (0, 0);
        // The chat cases, whose prompts are the model's template rendered by jinja2.
        for case in golden["greedy"].as_array().unwrap() {
            let Some(messages) = case.get("messages") else {
                continue;
            };
            let want: Vec<u32> = case["greedy_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let (t1, t2) = (&case["top1_logprob"], &case["top2_logprob"]);
            let lp = |v: &Value| v.as_f64().unwrap();
            // Free-running greedy text may part from llama.cpp's after a near-tie: follow it
            // up to the first step whose margin is 0.75 nats or less, and at that step compare
            // only the two best log-probabilities.
            let steps = (0..want.len())
                .find(|&k| lp(&t1[k]) - lp(&t2[k]) <= 0.75)
                .unwrap_or(want.len() - 1);
            cases += 1;
            let body = json!({"model": "arch", "messages": messages, "temperature": 0,
                              "max_tokens": steps + 1, "logprobs": true, "top_logprobs": 2});
            let (st, v) = s.post("/v1/chat/completions", &body);
            assert_eq!(st, 200, "{v}");
            assert_eq!(
                v["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
                case["prompt_ids"].as_array().unwrap().len(),
                "{name}"
            );
            let got = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
            for (k, &id) in want[..=steps].iter().enumerate() {
                if k < steps && tok.is_eog(id) {
                    assert_eq!(got.len(), k, "{name}: stops at step {k}");
                    assert_eq!(v["choices"][0]["finish_reason"], "stop");
                    break;
                }
                // At the near-tie our pick may be an end-of-generation token, which has no entry.
                let Some(entry) = got.get(k) else {
                    assert_eq!(k, steps, "{name}: no step {k}");
                    break;
                };
                let top = entry["top_logprobs"].as_array().unwrap();
                let (a, b) = (lp(&top[0]["logprob"]), lp(&top[1]["logprob"]));
                assert!((a - lp(&t1[k])).abs() < 0.4, "{name}: step {k} best {a}");
                assert!((b - lp(&t2[k])).abs() < 0.4, "{name}: step {k} second {b}");
                checked += 1;
                if k == steps {
                    break;
                }
                let bytes: Vec<u8> = tok.decode_token(id, true).collect();
                let mine: Vec<u8> = entry["bytes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_u64().unwrap() as u8)
                    .collect();
                assert_eq!(mine, bytes, "{name}: step {k}");
                let d = (lp(&entry["logprob"]) - lp(&t1[k])).abs();
                assert!(d < 0.4, "{name}: step {k} logprob off by {d}");
            }
        }
        println!("{name}: {cases} chats, {checked} steps agree with llama.cpp");
        assert!(cases == 2 && checked >= cases, "{name}");
    }
}
