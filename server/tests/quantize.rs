//! `trillim quantize` as a user runs it: a Hugging Face checkpoint into the store (staged,
//! renamed into place, runnable at once), `--out`, a broken checkpoint that leaves nothing
//! behind and does not touch the good model of the same name, and `--adapter` turning a PEFT
//! adapter into a GGUF adapter that generates what the PEFT one does.
//!
//! The checkpoint is the tiny BitNet b1.58 fixture in Hugging Face's layout
//! (`scripts/make-hf-checkpoints.sh`); its numbers are checked against goldens in
//! `tests/tests/quantize.rs`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn smollm2() -> PathBuf {
    trillim_tests::smollm2_path()
}

/// Runs `script args… DIR trailing…` once per target directory, with DIR named `name`.
fn fixture(name: &str, script: &str, args: &[&Path], trailing: &[&str]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    trillim_tests::made_once(&dir, |out| {
        let ok = Command::new("bash")
            .arg(repo().join(script))
            .args(args)
            .arg(out)
            .args(trailing)
            .status()
            .unwrap_or_else(|e| panic!("run {script}: {e}"))
            .success();
        assert!(ok, "{script} failed");
    })
}

/// The tiny BitNet checkpoint.
fn checkpoint() -> PathBuf {
    fixture(
        "quantize-hf-bitnet",
        "scripts/make-hf-checkpoints.sh",
        &[
            Path::new("bitnet"),
            &repo().join("testdata/models/tiny-b158-i2_s.gguf"),
        ],
        &[],
    )
}

fn trillim(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trillim"))
        .args(args)
        .env("TRILLIM_HOME", home)
        .env("TRILLIM_LOG", "warn")
        .output()
        .expect("run trillim")
}

fn home(tag: &str) -> PathBuf {
    let h = std::env::temp_dir().join(format!("trillim-quantize-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&h);
    std::fs::create_dir_all(&h).unwrap();
    h
}

/// Every entry under `dir`, recursively, relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_checkpoint_lands_in_the_store_and_runs() {
    let ckpt = checkpoint();
    let h = home("store");
    let out = trillim(
        &h,
        &[
            "quantize",
            ckpt.to_str().unwrap(),
            "--type",
            "i2_s",
            "--name",
            "tiny",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Local/tiny");
    let models = h.join("models");
    assert_eq!(
        tree(&models),
        ["Local", "Local/tiny", "Local/tiny/tiny.gguf"]
    );

    let gen = trillim(
        &h,
        &[
            "generate",
            "Local/tiny",
            "--prompt",
            "Once upon a time",
            "--max-tokens",
            "4",
            "--temperature",
            "0",
            "--threads",
            "1",
        ],
    );
    assert!(gen.status.success(), "{}", text(&gen));

    // The default name: the checkpoint directory's and the type.
    let out = trillim(&h, &["quantize", ckpt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dir_name = ckpt.file_name().unwrap().to_string_lossy().to_string();
    assert_eq!(id, format!("Local/{dir_name}-TQ2_0"));
    assert!(models
        .join(&id)
        .join(format!("{dir_name}-TQ2_0.gguf"))
        .is_file());

    // --out: a directory of the user's, nothing in the store.
    let out_dir = h.join("elsewhere");
    let out = trillim(
        &h,
        &[
            "quantize",
            ckpt.to_str().unwrap(),
            "--type",
            "tq1_0",
            "--out",
            out_dir.to_str().unwrap(),
            "--name",
            "t1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(tree(&out_dir), ["t1.gguf"]);
    let _ = std::fs::remove_dir_all(&h);
}

#[test]
fn a_broken_checkpoint_leaves_the_store_as_it_was() {
    let ckpt = checkpoint();
    let h = home("broken");
    let out = trillim(&h, &["quantize", ckpt.to_str().unwrap(), "--name", "tiny"]);
    assert!(out.status.success(), "{}", text(&out));
    let good = h.join("models/Local/tiny/tiny.gguf");
    let before = std::fs::read(&good).unwrap();
    let listing = tree(&h.join("models"));

    // The same checkpoint with a shard cut short, converted under the same name.
    let bad = h.join("bad-ckpt");
    std::fs::create_dir_all(&bad).unwrap();
    for e in std::fs::read_dir(&ckpt).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), bad.join(e.file_name())).unwrap();
    }
    let st = bad.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() - 4096]).unwrap();
    let out = trillim(&h, &["quantize", bad.to_str().unwrap(), "--name", "tiny"]);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("model.safetensors"), "{msg}");
    println!("truncated: {}", msg.trim());
    assert_eq!(tree(&h.join("models")), listing, "the store changed");
    assert_eq!(
        std::fs::read(&good).unwrap(),
        before,
        "the good model changed"
    );

    // Not a checkpoint, a refused type, a bad name: clear errors, nothing written.
    for (args, want) in [
        (vec!["quantize", h.to_str().unwrap()], "config.json"),
        (
            vec!["quantize", ckpt.to_str().unwrap(), "--type", "q9_9"],
            "accepted",
        ),
        (
            vec!["quantize", ckpt.to_str().unwrap(), "--name", "../x"],
            "invalid name",
        ),
    ] {
        let out = trillim(&h, &args);
        assert!(!out.status.success(), "{args:?}");
        let msg = text(&out);
        assert!(msg.contains(want), "{args:?}: {msg}");
        assert_eq!(
            msg.to_lowercase().matches("error:").count(),
            1,
            "one error: {msg}"
        );
        println!("{args:?}: {}", msg.trim());
    }
    assert_eq!(tree(&h.join("models")), listing, "the store changed");
    let _ = std::fs::remove_dir_all(&h);
}

#[test]
fn a_peft_adapter_becomes_a_gguf_adapter_that_generates_the_same() {
    let adapters = fixture(
        "quantize-lora",
        "scripts/make-lora-fixtures.sh",
        &[&smollm2()],
        &["--adapters"],
    );
    let h = home("adapter");
    let peft = adapters.join("peft");
    let out = trillim(
        &h,
        &[
            "quantize",
            smollm2().to_str().unwrap(),
            "--adapter",
            peft.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Local/peft");
    let written = h.join("models/Local/peft");
    assert_eq!(tree(&written), ["adapter.gguf"]);

    let generate = |lora: &Path| {
        let o = trillim(
            &h,
            &[
                "generate",
                smollm2().to_str().unwrap(),
                "--prompt",
                "The capital of France is",
                "--max-tokens",
                "12",
                "--temperature",
                "0",
                "--threads",
                "2",
                "--lora",
                lora.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(generate(&written), generate(&peft));

    // An adapter for another model is refused before anything is written.
    let out = trillim(
        &h,
        &[
            "quantize",
            smollm2().to_str().unwrap(),
            "--adapter",
            adapters.join("bad-arch").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(!h.join("models/Local/bad-arch").exists());
    let _ = std::fs::remove_dir_all(&h);
}
