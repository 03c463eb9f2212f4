//! LoRA adapters on a running server: `POST /v1/models/load` with `adapter_dir` swaps one in
//! (and `null` out), a bad adapter is refused while the old model keeps serving, and
//! `serve --lora` starts with one. SmolLM2-135M with the adapters of
//! `scripts/make-lora-fixtures.sh`.
#![forbid(unsafe_code)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

fn smollm2() -> PathBuf {
    trillim_tests::smollm2_path()
}

/// The adapters (built once per target directory).
fn adapters() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lora-adapters");
    trillim_tests::made_once(&dir, |out| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-lora-fixtures.sh");
        let ok = Command::new("bash")
            .arg(script)
            .arg(smollm2())
            .arg(out)
            .arg("--adapters")
            .status()
            .expect("run scripts/make-lora-fixtures.sh")
            .success();
        assert!(ok, "scripts/make-lora-fixtures.sh failed");
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A store with SmolLM2 as `org/smol` and the adapters under `adapters/`.
fn store(tag: &str) -> PathBuf {
    let home = store_with(&format!("lora-{tag}"), "org/smol", &smollm2());
    let a = adapters();
    for name in ["peft", "gguf", "bad-half", "bad-arch"] {
        copy_dir(&a.join(name), &home.join("models/adapters").join(name));
    }
    home
}

fn serve(home: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["org/smol", "--threads", "2"];
    args.extend_from_slice(extra);
    common::serve(home.to_path_buf(), &args, &[])
}

/// The greedy completion's tokens and their log-probabilities.
fn answer(s: &Client) -> Value {
    let (st, v) = s.post(
        "/v1/chat/completions",
        &json!({
            "model": "smol",
            "messages": [{"role": "user", "content": "Name a color."}],
            "max_tokens": 6,
            "temperature": 0,
            "logprobs": true,
        }),
    );
    assert_eq!(st, 200, "{v}");
    v["choices"][0]["logprobs"]["content"].clone()
}

fn load(s: &Client, body: Value) -> (u16, Value) {
    s.post("/v1/models/load", &body)
}

#[test]
fn adapters_swap_in_and_out_over_http() {
    let home = store("swap");
    let s = serve(&home, &[]);
    let base = answer(&s);

    let (st, v) = load(
        &s,
        json!({"model_dir": "org/smol", "adapter_dir": "adapters/peft"}),
    );
    assert_eq!(st, 200, "{v}");
    let adapted = answer(&s);
    assert_ne!(
        adapted, base,
        "the adapter must change the log-probabilities"
    );

    // The same adapter in llama.cpp's form, by absolute path inside the store.
    let gguf = home.join("models/adapters/gguf");
    let (st, v) = load(&s, json!({"model_dir": "org/smol", "adapter_dir": gguf}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(answer(&s), adapted);

    // Refused adapters: a clear 400 or 403, and the adapted model keeps serving.
    for (dir, status, says) in [
        ("adapters/bad-half", 400, "has lora_A but no lora_B"),
        ("adapters/bad-arch", 400, "architecture 'qwen2'"),
        ("adapters/missing", 400, "not found"),
        ("../adapters/peft", 403, "outside"),
        ("/etc", 403, "outside"),
    ] {
        let (st, v) = load(&s, json!({"model_dir": "org/smol", "adapter_dir": dir}));
        assert_error(&v, st, status);
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{dir}: {msg}");
        if status == 400 {
            assert_eq!(v["error"]["param"], "adapter_dir", "{v}");
        }
        assert_eq!(answer(&s), adapted);
    }
    let (st, v) = load(
        &s,
        json!({"model_dir": "org/smol", "adapter_dir": "adapters/peft", "lora_quant": "q6_k"}),
    );
    assert_error(&v, st, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("none, bf16, int8, q8_0, q4_0"),
        "{v}"
    );

    // bf16 matrices: close, not equal.
    let (st, v) = load(
        &s,
        json!({"model_dir": "org/smol", "adapter_dir": "adapters/peft", "lora_quant": "bf16"}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        answer(&s).as_array().unwrap().len(),
        adapted.as_array().unwrap().len()
    );

    // null removes it: the base again, bit for bit.
    let (st, v) = load(&s, json!({"model_dir": "org/smol", "adapter_dir": null}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(answer(&s), base);
    drop(s);

    // `serve --lora` starts with the adapter.
    let home = store("flag");
    let peft = home.join("models/adapters/peft");
    let s = serve(&home, &["--lora", peft.to_str().unwrap()]);
    assert_eq!(answer(&s), adapted);
}
