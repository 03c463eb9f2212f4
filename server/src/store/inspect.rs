//! What a model file's GGUF header says, for `trillim list`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use trillim_core::format::gguf::{ggml_type_name, Gguf};
use trillim_core::model::{Config, Weights};
use trillim_runtime::{map_file as map_read_only, Mmap};

/// A model file's architecture and weight types, or why it cannot be used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GgufSummary {
    /// `general.architecture`, when the header could be read.
    pub arch: Option<String>,
    /// Tensor count per ggml type name, most frequent first.
    pub types: Vec<(String, usize)>,
    /// Why this build cannot load the model (`None` when it can).
    pub error: Option<String>,
}

/// Reads the GGUF headers of a model's files (one, or every part of a split set) and checks
/// the first file the way the loader does.
pub fn inspect(files: &[PathBuf]) -> GgufSummary {
    let mut summary = GgufSummary::default();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        let map = match map_file(f) {
            Ok(m) => m,
            Err(e) => {
                summary.error.get_or_insert(e);
                continue;
            }
        };
        let g = match Gguf::parse(&map) {
            Ok(g) => g,
            Err(e) => {
                // The first file is the model the row names; name the others.
                let msg = if i == 0 {
                    e.to_string()
                } else {
                    format!(
                        "{}: {e}",
                        f.file_name().unwrap_or_default().to_string_lossy()
                    )
                };
                summary.error.get_or_insert(msg);
                continue;
            }
        };
        for t in g.tensors() {
            *counts.entry(ggml_type_name(t.type_id)).or_default() += 1;
        }
        if i == 0 {
            summary.arch = g.get_str("general.architecture").map(str::to_string);
            let usable = Config::from_gguf(&g).and_then(|c| Weights::from_gguf(&g, &c).map(|_| ()));
            if let Err(e) = usable {
                summary.error.get_or_insert(e.to_string());
            }
        }
    }
    let mut types: Vec<(String, usize)> = counts
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    types.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    summary.types = types;
    summary
}

fn map_file(path: &Path) -> Result<Mmap, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if len == 0 {
        return Err(format!("{} is empty", path.display()));
    }
    // Read-only and private, and kept only while this module reads the header.
    map_read_only(&file).map_err(|e| format!("cannot map {}: {e}", path.display()))
}
