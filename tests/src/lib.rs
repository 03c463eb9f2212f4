//! Shared helpers for trillim's end-to-end tests: locating test data and scoring logits.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

/// Path of the SmolLM2-135M-Instruct Q4_1 model fetched by `scripts/fetch-test-model.sh`
/// (or named by `TRILLIM_TEST_MODEL`).
///
/// # Panics
///
/// When the file is missing: a test that needs the model fails instead of passing without
/// checking anything (`scripts/test.sh` fetches it before the tests run).
pub fn smollm2_path() -> PathBuf {
    let p = match std::env::var_os("TRILLIM_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .expect("neither XDG_CACHE_HOME nor HOME is set: set TRILLIM_TEST_MODEL")
            .join("trillim")
            .join("SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    assert!(
        p.exists(),
        "the test model {} is missing: run scripts/fetch-test-model.sh (or set TRILLIM_TEST_MODEL)",
        p.display()
    );
    p
}

/// The directory `dir`, made once by `make` (which fills the path it is given) and reused
/// by later runs of the same build directory.
///
/// `make` writes into a sibling staging directory that is renamed into place when it
/// returns, and calls are serialized within the test binary: a test that reads the
/// fixture never sees it half written, whether another test is making it or an earlier
/// run was killed while making it.
pub fn made_once(dir: &Path, make: impl FnOnce(&Path)) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !dir.exists() {
        let staging = dir.with_extension("staging");
        let _ = std::fs::remove_dir_all(&staging);
        make(&staging);
        std::fs::rename(&staging, dir)
            .unwrap_or_else(|e| panic!("rename {} into place: {e}", staging.display()));
    }
    dir.to_path_buf()
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

/// A metadata value for [`GgufBuilder`].
#[derive(Clone, Debug)]
pub enum Meta {
    /// type 0
    U8(u8),
    /// type 1
    I8(i8),
    /// type 2
    U16(u16),
    /// type 3
    I16(i16),
    /// type 4
    U32(u32),
    /// type 5
    I32(i32),
    /// type 6
    F32(f32),
    /// type 7
    Bool(bool),
    /// type 8
    Str(String),
    /// type 9: element type id and elements
    Array(u32, Vec<Meta>),
    /// type 10
    U64(u64),
    /// type 11
    I64(i64),
    /// type 12
    F64(f64),
}

impl Meta {
    fn type_id(&self) -> u32 {
        match self {
            Meta::U8(_) => 0,
            Meta::I8(_) => 1,
            Meta::U16(_) => 2,
            Meta::I16(_) => 3,
            Meta::U32(_) => 4,
            Meta::I32(_) => 5,
            Meta::F32(_) => 6,
            Meta::Bool(_) => 7,
            Meta::Str(_) => 8,
            Meta::Array(..) => 9,
            Meta::U64(_) => 10,
            Meta::I64(_) => 11,
            Meta::F64(_) => 12,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Meta::U8(v) => out.push(*v),
            Meta::I8(v) => out.push(*v as u8),
            Meta::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Meta::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Meta::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Meta::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Meta::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Meta::Bool(v) => out.push(*v as u8),
            Meta::Str(s) => {
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Meta::Array(t, items) => {
                out.extend_from_slice(&t.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for i in items {
                    i.write(out);
                }
            }
            Meta::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Meta::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Meta::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        }
    }
}

/// Writes small GGUF files for tests.
#[derive(Debug, Default)]
pub struct GgufBuilder {
    /// Format version (default 3).
    pub version: u32,
    /// Data alignment (default 32).
    pub alignment: u64,
    meta: Vec<(String, Meta)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

impl GgufBuilder {
    /// An empty version-3 file.
    pub fn new() -> Self {
        GgufBuilder {
            version: 3,
            alignment: 32,
            ..Default::default()
        }
    }

    /// Adds a metadata entry.
    pub fn meta(mut self, key: &str, v: Meta) -> Self {
        self.meta.push((key.to_string(), v));
        self
    }

    /// Adds a tensor with raw data.
    pub fn tensor(mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> Self {
        self.tensors
            .push((name.to_string(), dims.to_vec(), type_id, data));
        self
    }

    /// The file's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.meta.len() as u64).to_le_bytes());
        for (k, v) in &self.meta {
            Meta::Str(k.clone()).write(&mut out);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            v.write(&mut out);
        }
        let align = |n: u64| n.div_ceil(self.alignment) * self.alignment;
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            Meta::Str(name.clone()).write(&mut out);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = align(offset + data.len() as u64);
        }
        out.resize(align(out.len() as u64) as usize, 0);
        for (_, _, _, data) in &self.tensors {
            out.extend_from_slice(data);
            out.resize(align(out.len() as u64) as usize, 0);
        }
        out
    }
}

/// Logits after every token of `tokens` for the GGUF model `model`, computed by the core's
/// forward pass in passes of `batch` tokens over `par`.
///
/// # Panics
///
/// When the model does not load or the pass fails.
pub fn logits_all_par(
    model: &[u8],
    tokens: &[u32],
    kernels: &trillim_core::kernels::Kernels,
    batch: usize,
    par: &dyn trillim_core::Parallel,
) -> Vec<f32> {
    logits_all_ctx(model, tokens, kernels, batch, par, tokens.len())
}

/// [`logits_all_par`] in a context of `ctx` positions (at least `tokens.len()`), which
/// decides LongRoPE's factors.
///
/// # Panics
///
/// When the model does not load or the pass fails.
pub fn logits_all_ctx(
    model: &[u8],
    tokens: &[u32],
    kernels: &trillim_core::kernels::Kernels,
    batch: usize,
    par: &dyn trillim_core::Parallel,
    ctx: usize,
) -> Vec<f32> {
    use trillim_core::format::gguf::Gguf;
    use trillim_core::model::{Buffers, Config, Forward, KvCache, Scratch, ScratchSizes, Weights};
    let g = Gguf::parse(model).expect("parse");
    let config = Config::from_gguf(&g).expect("config");
    let weights = Weights::from_gguf(&g, &config).expect("weights");
    let sz = ScratchSizes::new(&config, batch);
    let (mut f, mut q, mut i) = (vec![0f32; sz.f32s], vec![0i8; sz.i8s], vec![0i32; sz.i32s]);
    let mut scratch = Scratch::new(&config, batch, &mut f, &mut q, &mut i).expect("scratch");
    let ctx = ctx.max(tokens.len());
    let mut kv_buf = vec![0u16; KvCache::elems(&config, ctx)];
    let mut kv = KvCache::new(&config, &mut kv_buf, ctx).expect("kv");
    let fwd = Forward {
        config: &config,
        weights: &weights,
        bufs: Buffers::file(model),
        kernels,
        lora: None,
    };
    let mut logits = vec![0f32; tokens.len() * config.n_vocab];
    fwd.run(tokens, &mut kv, &mut scratch, par, &mut logits)
        .expect("forward");
    logits
}

/// A JSON array of token ids.
///
/// # Panics
///
/// When `v` is not an array of non-negative integers.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// The JSON file at `testdata/<rel>`.
///
/// # Panics
///
/// When it is missing or not JSON.
pub fn testdata_json(rel: &str) -> serde_json::Value {
    let p = testdata(rel);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A model file under `testdata/` and its golden file, as the architecture tests read them.
pub fn model_and_golden(model: &str, golden: &str) -> (Vec<u8>, serde_json::Value) {
    let p = testdata(model);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (bytes, testdata_json(golden))
}

/// Where `tok` disagrees with a golden file's token ids (its `text`/`tokens`, every
/// `tokenize[]` case and every rendered `chat[]` case), each as a readable line; empty when it
/// agrees everywhere. `add_special` is passed to the encoder as the goldens were taken.
pub fn tokenizer_mismatches(
    tok: &trillim_core::tokenizer::Tokenizer<'_>,
    golden: &serde_json::Value,
    add_special: bool,
) -> Vec<String> {
    let mut cases = Vec::new();
    if let Some(text) = golden["text"].as_str() {
        cases.push((text, ids(&golden["tokens"])));
    }
    for c in golden["tokenize"].as_array().into_iter().flatten() {
        cases.push((c["text"].as_str().expect("a text"), ids(&c["ids"])));
    }
    for c in golden["chat"].as_array().into_iter().flatten() {
        cases.push((c["rendered"].as_str().expect("a rendering"), ids(&c["ids"])));
    }
    let mut failures = Vec::new();
    for (text, want) in cases {
        let mut out = vec![0u32; tok.max_tokens(text)];
        let n = tok
            .encode(text, add_special, true, &mut out)
            .expect("encode");
        if out[..n] != want[..] {
            failures.push(format!(
                "{text:?}:\n  got  {:?}\n  want {want:?}",
                &out[..n]
            ));
        }
    }
    failures
}
