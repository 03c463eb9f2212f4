//! A Hugging Face checkpoint directory: `config.json` and its safetensors, one file or shards
//! named by `model.safetensors.index.json`. Only headers are read up front; tensors are read
//! a range of rows at a time.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use trillim_core::kernels::f16::{bf16_to_f32, f16_to_f32};

use super::ConvertError;
use crate::safetensors::{self, Dtype, TensorInfo};

/// Largest JSON side file read (`config.json`, the index, the tokenizer's config).
pub const MAX_JSON: u64 = 64 << 20;

/// Reads a JSON file of at most `limit` bytes.
pub fn read_json(path: &Path, limit: u64) -> Result<serde_json::Value, ConvertError> {
    let text = read_text(path, limit)?;
    serde_json::from_str(&text).map_err(|e| ConvertError::Invalid {
        path: path.to_path_buf(),
        why: format!("not valid JSON: {e}"),
    })
}

/// Reads a text file of at most `limit` bytes.
pub fn read_text(path: &Path, limit: u64) -> Result<String, ConvertError> {
    let io = |e| ConvertError::io(path, e);
    let mut s = String::new();
    File::open(path)
        .map_err(io)?
        .take(limit + 1)
        .read_to_string(&mut s)
        .map_err(io)?;
    if s.len() as u64 > limit {
        return Err(ConvertError::Invalid {
            path: path.to_path_buf(),
            why: format!("larger than {limit} bytes"),
        });
    }
    Ok(s)
}

struct Shard {
    path: PathBuf,
    file: File,
    data_start: u64,
}

/// The tensors of a checkpoint and the files they live in.
pub struct Checkpoint {
    /// The directory.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: serde_json::Value,
    shards: Vec<Shard>,
    tensors: HashMap<String, (usize, TensorInfo)>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("shards", &self.shards.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn shard_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n != "."
        && n != ".."
        && !n.contains(['/', '\\'])
        && n.ends_with(".safetensors")
}

impl Checkpoint {
    /// Opens `dir`: reads `config.json`, the index if there is one, and every shard's header.
    pub fn open(dir: &Path) -> Result<Checkpoint, ConvertError> {
        let cfg_path = dir.join("config.json");
        if !cfg_path.is_file() {
            return Err(ConvertError::Invalid {
                path: dir.to_path_buf(),
                why: "no config.json: not a Hugging Face checkpoint directory".into(),
            });
        }
        let config = read_json(&cfg_path, MAX_JSON)?;
        let index = dir.join("model.safetensors.index.json");
        // (shard file name, tensor names the index puts there; None: every tensor in it)
        let mut wanted: Vec<(String, Option<Vec<String>>)> = Vec::new();
        if index.is_file() {
            let j = read_json(&index, MAX_JSON)?;
            let map = j["weight_map"]
                .as_object()
                .ok_or_else(|| ConvertError::Invalid {
                    path: index.clone(),
                    why: "no weight_map object".into(),
                })?;
            let mut by_shard: HashMap<String, Vec<String>> = HashMap::new();
            for (name, file) in map {
                let file = file.as_str().filter(|f| shard_name_ok(f)).ok_or_else(|| {
                    ConvertError::Invalid {
                        path: index.clone(),
                        why: format!(
                            "tensor '{name}' is mapped to {file}, which is not a .safetensors \
                             file name in this directory"
                        ),
                    }
                })?;
                by_shard
                    .entry(file.to_string())
                    .or_default()
                    .push(name.clone());
            }
            let mut names: Vec<String> = by_shard.keys().cloned().collect();
            names.sort();
            for n in names {
                let t = by_shard.remove(&n);
                wanted.push((n, t));
            }
        } else if dir.join("model.safetensors").is_file() {
            wanted.push(("model.safetensors".into(), None));
        } else {
            return Err(ConvertError::Invalid {
                path: dir.to_path_buf(),
                why: "neither model.safetensors nor model.safetensors.index.json".into(),
            });
        }
        let mut shards = Vec::new();
        let mut tensors = HashMap::new();
        for (name, names) in wanted {
            let path = dir.join(&name);
            if !path.is_file() {
                return Err(ConvertError::Invalid {
                    path: index.clone(),
                    why: format!("the index names the shard {name}, which is missing"),
                });
            }
            let file = File::open(&path).map_err(|e| ConvertError::io(&path, e))?;
            let header = safetensors::read_header(&file).map_err(|e| ConvertError::Invalid {
                path: path.clone(),
                why: e.to_string(),
            })?;
            let si = shards.len();
            let mut in_file: HashMap<String, TensorInfo> = header
                .tensors
                .into_iter()
                .map(|t| (t.name.clone(), t))
                .collect();
            match names {
                None => tensors.extend(in_file.into_iter().map(|(n, t)| (n, (si, t)))),
                Some(names) => {
                    for n in names {
                        let t = in_file.remove(&n).ok_or_else(|| ConvertError::Invalid {
                            path: path.clone(),
                            why: format!(
                                "the index puts tensor '{n}' in this shard, but it is not there"
                            ),
                        })?;
                        tensors.insert(n, (si, t));
                    }
                }
            }
            shards.push(Shard {
                path,
                file,
                data_start: header.data_start,
            });
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            config,
            shards,
            tensors,
        })
    }

    /// A tensor's entry.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name).map(|(_, t)| t)
    }

    /// Every tensor name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Reads `len` bytes at `offset` inside tensor `name`'s data into `out`.
    pub fn read_bytes(
        &self,
        name: &str,
        offset: u64,
        out: &mut Vec<u8>,
        len: usize,
    ) -> Result<(), ConvertError> {
        let (si, t) = self
            .tensors
            .get(name)
            .ok_or_else(|| ConvertError::Missing(name.to_string()))?;
        let shard = &self.shards[*si];
        debug_assert!(t.begin + offset + len as u64 <= t.end);
        out.resize(len, 0);
        let mut f = &shard.file;
        f.seek(SeekFrom::Start(shard.data_start + t.begin + offset))
            .and_then(|_| f.read_exact(out))
            .map_err(|e| ConvertError::io(&shard.path, e))
    }

    /// Reads rows `[r0, r0 + n)` of the 2-D (or 1-D, one row) float tensor `name` as `f32`.
    pub fn read_rows(
        &self,
        name: &str,
        r0: usize,
        n: usize,
        buf: &mut Vec<u8>,
        out: &mut Vec<f32>,
    ) -> Result<(), ConvertError> {
        let t = self
            .get(name)
            .ok_or_else(|| ConvertError::Missing(name.to_string()))?;
        let cols = *t.shape.last().unwrap_or(&1);
        let es = t.dtype.size();
        self.read_bytes(name, (r0 * cols * es) as u64, buf, n * cols * es)?;
        out.clear();
        match t.dtype {
            Dtype::F32 => out.extend(
                buf.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            Dtype::F16 => out.extend(
                buf.chunks_exact(2)
                    .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
            ),
            Dtype::BF16 => out.extend(
                buf.chunks_exact(2)
                    .map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
            ),
            Dtype::U8 | Dtype::I8 | Dtype::I64 => {
                return Err(ConvertError::Invalid {
                    path: self.dir.clone(),
                    why: format!("tensor '{name}' holds integers where floats are expected"),
                })
            }
        }
        Ok(())
    }
}
