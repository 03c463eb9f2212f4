//! The local model store and model resolution.
//!
//! Models live under `$TRILLIM_HOME/models` (default `~/.trillim/models`), one directory per
//! Hub repository: `<root>/<org>/<name>/` holding one or more GGUF files and, where the
//! repository had them, small metadata files (`config.json`, `tokenizer.json`, ...).
//!
//! Two resolvers turn what a user typed into a model file:
//! - [`Store::resolve_cli`] for the command line, which trusts its user: a store ID, a path to
//!   a `.gguf` file or a directory anywhere on disk;
//! - [`Store::resolve_api`] for `POST /v1/models/load`, which does not: only store IDs and
//!   paths that stay inside the store root after every symlink is followed.

pub mod cli;
mod inspect;

#[cfg(test)]
pub(crate) mod tests;

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

pub use inspect::{inspect, GgufSummary};

/// Longest accepted component of a store ID.
const MAX_COMPONENT_LEN: usize = 96;
/// Most components a store-relative path may have (`org/name/file.gguf` is three).
const MAX_COMPONENTS: usize = 4;

/// Why a model could not be resolved or the store could not be read.
///
/// The variants map onto HTTP statuses for the API: [`StoreError::status`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such model in the store or on disk (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The request names something outside the store (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed, or names something that is not a usable model (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The file system failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl StoreError {
    /// The HTTP status this error maps onto.
    pub fn status(&self) -> u16 {
        match self {
            StoreError::NotFound(_) => 404,
            StoreError::Forbidden(_) => 403,
            StoreError::Invalid(_) => 400,
            StoreError::Io { .. } => 500,
        }
    }

    fn io(path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A model file resolved from a store ID or a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedModel {
    /// `org/name` for models in the store, else the file stem (or directory name).
    pub id: String,
    /// The last component of `id`, used as the OpenAI model id.
    pub name: String,
    /// The model's directory, when it was resolved from one (metadata files live there).
    pub dir: Option<PathBuf>,
    /// The GGUF file to load (the first part of a split set).
    pub gguf: PathBuf,
}

/// One model found by [`Store::list`].
#[derive(Clone, Debug)]
pub struct StoredModel {
    /// Store ID: `org/name`, or `org/name/<file stem>` when a directory holds several models.
    pub id: String,
    /// The GGUF file (the first part of a split set).
    pub path: PathBuf,
    /// Every file of the model: one, or all parts of a split set.
    pub files: Vec<PathBuf>,
    /// Total size of `files` in bytes.
    pub size: u64,
    /// What the GGUF header says, or why it could not be read.
    pub summary: GgufSummary,
}

/// The model store rooted at one directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store at `$TRILLIM_HOME/models`, or `~/.trillim/models` when `TRILLIM_HOME` is unset.
    pub fn from_env() -> Store {
        let home = std::env::var_os("TRILLIM_HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home_dir().join(".trillim"));
        Store::new(home.join("models"))
    }

    /// The store rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory a Hub repository `org/name` is stored in (not checked for existence).
    pub fn model_dir(&self, id: &str) -> Result<PathBuf, StoreError> {
        let parts = parse_id(id)?;
        if parts.len() != 2 {
            return Err(StoreError::Invalid(format!(
                "invalid model id '{id}': expected the form org/name"
            )));
        }
        Ok(self.root.join(parts[0]).join(parts[1]))
    }

    /// Resolves a command-line model argument: a store ID (`org/name`, or `org/name/file.gguf`
    /// to pick one of several files), a path to a GGUF file, or a directory holding one.
    ///
    /// A store ID that exists in the store wins over a relative path of the same spelling.
    pub fn resolve_cli(&self, arg: &str) -> Result<ResolvedModel, StoreError> {
        if arg.is_empty() {
            return Err(StoreError::Invalid("no model given".into()));
        }
        if let Ok(parts) = parse_id(arg) {
            let p = self.root.join(parts.join("/"));
            if p.exists() {
                return self.resolve_path(&p, Some(&parts));
            }
        }
        let p = Path::new(arg);
        if p.exists() {
            let in_store = self.relative_to_root(p);
            return match in_store {
                Some(parts) => {
                    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                    self.resolve_path(p, Some(&parts))
                }
                None => self.resolve_path(p, None),
            };
        }
        let hint = if parse_id(arg).map(|p| p.len() == 2).unwrap_or(false) {
            format!("; download it with `trillim pull {arg}`")
        } else {
            String::new()
        };
        Err(StoreError::NotFound(format!(
            "model '{arg}' not found: it is neither a file or directory nor a model in the store at {}{hint}",
            self.root.display()
        )))
    }

    /// Resolves the `model_dir` of an HTTP load request: a store ID or a path inside the store.
    ///
    /// Anything that leads outside the store root (`.`/`..` components, absolute paths
    /// elsewhere, symlinks pointing out) is [`StoreError::Forbidden`]; names that do not exist
    /// are [`StoreError::NotFound`]; a directory without a model is [`StoreError::Invalid`].
    pub fn resolve_api(&self, model_dir: &str) -> Result<ResolvedModel, StoreError> {
        if model_dir.is_empty() {
            return Err(StoreError::Invalid("model_dir is empty".into()));
        }
        let not_found = || {
            StoreError::NotFound(format!(
                "model '{model_dir}' not found in the store; download it with `trillim pull`"
            ))
        };
        let forbidden = || {
            StoreError::Forbidden(format!(
                "model '{model_dir}' is outside the model store; only models in the store can be loaded"
            ))
        };
        let canon_root = match self.root.canonicalize() {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Still refuse escapes before saying "not found", so both answers are stable.
                check_api_syntax(model_dir, &self.root)?;
                return Err(not_found());
            }
            Err(e) => return Err(StoreError::io(&self.root, e)),
        };
        let candidate = if Path::new(model_dir).is_absolute() {
            let p = Path::new(model_dir);
            if p.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(forbidden());
            }
            if !p.starts_with(&self.root) && !p.starts_with(&canon_root) {
                return Err(forbidden());
            }
            p.to_path_buf()
        } else {
            let parts = check_api_syntax(model_dir, &self.root)?;
            self.root.join(parts.join("/"))
        };
        let canon = match candidate.canonicalize() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A dangling symlink is reported as missing; one that resolves elsewhere is
                // caught below.
                return Err(not_found());
            }
            Err(e) => return Err(StoreError::io(&candidate, e)),
        };
        if !canon.starts_with(&canon_root) {
            return Err(forbidden());
        }
        if canon == canon_root {
            return Err(StoreError::Invalid(
                "model_dir names the store root, not a model; give a model id such as org/name"
                    .into(),
            ));
        }
        let rel: Vec<String> = canon
            .strip_prefix(&canon_root)
            .expect("checked prefix")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let rel: Vec<&str> = rel.iter().map(String::as_str).collect();
        let resolved = self.resolve_path(&canon, Some(&rel))?;
        // The chosen file (and every part of a split set) must also stay inside the store.
        for f in split_parts(&resolved.gguf)? {
            let c = f.canonicalize().map_err(|e| StoreError::io(&f, e))?;
            if !c.starts_with(&canon_root) {
                return Err(forbidden());
            }
        }
        Ok(resolved)
    }

    /// Every model in the store with its size and what its GGUF header says, sorted by ID.
    /// An absent store root is an empty store.
    pub fn list(&self) -> Result<Vec<StoredModel>, StoreError> {
        let mut out = Vec::new();
        if !self.root.exists() {
            return Ok(out);
        }
        self.walk(&self.root, &mut Vec::new(), &mut out)?;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    fn walk(
        &self,
        dir: &Path,
        rel: &mut Vec<String>,
        out: &mut Vec<StoredModel>,
    ) -> Result<(), StoreError> {
        let scan = scan_dir(dir)?;
        let multiple = scan.candidates.len() > 1;
        for c in &scan.candidates {
            let mut files = c.parts.clone();
            files.sort();
            let mut size = 0;
            for f in &files {
                size += fs::metadata(f).map_err(|e| StoreError::io(f, e))?.len();
            }
            let mut id = rel.join("/");
            if multiple || rel.is_empty() {
                if !id.is_empty() {
                    id.push('/');
                }
                id.push_str(&file_name(&c.first));
            }
            out.push(StoredModel {
                id,
                path: c.first.clone(),
                summary: inspect(&files),
                files,
                size,
            });
        }
        if rel.len() + 1 >= MAX_COMPONENTS {
            return Ok(());
        }
        for sub in scan.subdirs {
            rel.push(file_name(&sub));
            self.walk(&sub, rel, out)?;
            rel.pop();
        }
        Ok(())
    }

    /// Store-relative components of `p` when it lies inside the root (lexically, after
    /// canonicalizing both).
    fn relative_to_root(&self, p: &Path) -> Option<Vec<String>> {
        let root = self.root.canonicalize().ok()?;
        let p = p.canonicalize().ok()?;
        let rel = p.strip_prefix(&root).ok()?;
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        (!parts.is_empty()).then_some(parts)
    }

    /// Resolves an existing file or directory. `store_rel` is its path relative to the store
    /// root when it is in the store (it then gets a store ID).
    fn resolve_path(
        &self,
        p: &Path,
        store_rel: Option<&[&str]>,
    ) -> Result<ResolvedModel, StoreError> {
        let meta = fs::metadata(p).map_err(|e| StoreError::io(p, e))?;
        if meta.is_dir() {
            let scan = scan_dir(p)?;
            let chosen = scan.choose(p)?;
            let (id, name) = match store_rel {
                Some(rel) => (rel.join("/"), rel.last().copied().unwrap_or("").to_string()),
                None => {
                    let n = dir_name(p);
                    (n.clone(), n)
                }
            };
            return Ok(ResolvedModel {
                id,
                name,
                dir: Some(p.to_path_buf()),
                gguf: chosen,
            });
        }
        let fname = file_name(p);
        if let Some(split) = SplitName::parse(&fname) {
            if split.index != 1 {
                return Err(StoreError::Invalid(format!(
                    "{} is part {} of a split GGUF set; give the first part ({})",
                    p.display(),
                    split.index,
                    split.file_name(1)
                )));
            }
        }
        let stem = model_stem(&fname);
        let dir = p.parent().map(Path::to_path_buf);
        let (id, name) = match store_rel {
            Some(rel) if rel.len() > 1 => {
                let dir_rel = &rel[..rel.len() - 1];
                // The only model of its directory is known by the directory's ID.
                let sole = dir
                    .as_deref()
                    .and_then(|d| scan_dir(d).ok())
                    .map(|s| s.candidates.len() == 1)
                    .unwrap_or(false);
                if sole {
                    (
                        dir_rel.join("/"),
                        dir_rel.last().copied().unwrap_or("").to_string(),
                    )
                } else {
                    (format!("{}/{stem}", dir_rel.join("/")), stem.clone())
                }
            }
            _ => (stem.clone(), stem),
        };
        Ok(ResolvedModel {
            id,
            name,
            dir,
            gguf: p.to_path_buf(),
        })
    }
}

/// The user's home directory, from `HOME` (or `USERPROFILE`), else the current directory.
fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Checks one component of a store ID: ASCII letters, digits, `-`, `_` and `.`, not starting
/// with `.` (no hidden names, no `.` or `..`), at most [`MAX_COMPONENT_LEN`] bytes.
pub fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= MAX_COMPONENT_LEN
        && !c.starts_with('.')
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Splits a store ID or store-relative path into validated components.
fn parse_id(id: &str) -> Result<Vec<&str>, StoreError> {
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() > MAX_COMPONENTS {
        return Err(StoreError::Invalid(format!(
            "invalid model id '{id}': too many components"
        )));
    }
    for p in &parts {
        if *p == "." || *p == ".." {
            return Err(StoreError::Forbidden(format!(
                "invalid model id '{id}': '.' and '..' are not allowed"
            )));
        }
        if !valid_component(p) {
            return Err(StoreError::Invalid(format!(
                "invalid model id '{id}': components may hold only letters, digits, '-', '_' and '.', and may not start with '.'"
            )));
        }
    }
    Ok(parts)
}

/// Validates a relative `model_dir` of the API; `.`/`..` anywhere (also hidden inside
/// backslash-separated or repeated separators) is forbidden.
fn check_api_syntax<'a>(model_dir: &'a str, root: &Path) -> Result<Vec<&'a str>, StoreError> {
    if Path::new(model_dir).is_absolute() {
        if Path::new(model_dir).starts_with(root) {
            return Ok(Vec::new());
        }
        return Err(StoreError::Forbidden(format!(
            "model '{model_dir}' is outside the model store; only models in the store can be loaded"
        )));
    }
    if model_dir.split(['/', '\\']).any(|c| c == "." || c == "..") {
        return Err(StoreError::Forbidden(format!(
            "model '{model_dir}': '.' and '..' are not allowed in model ids"
        )));
    }
    parse_id(model_dir)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or(OsStr::new(""))
        .to_string_lossy()
        .into_owned()
}

fn dir_name(p: &Path) -> String {
    let n = file_name(p);
    if !n.is_empty() {
        return n;
    }
    p.canonicalize()
        .ok()
        .map(|c| file_name(&c))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "model".into())
}

/// A file name ends in `.gguf` (any case).
pub fn is_gguf_name(name: &str) -> bool {
    name.len() > 5 && name[name.len() - 5..].eq_ignore_ascii_case(".gguf")
}

/// GGUF files that are not language models on their own (vision projectors).
pub fn is_auxiliary_gguf(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.to_ascii_lowercase().starts_with("mmproj")
}

/// The model's name from its file name: no `.gguf`, no `-00001-of-00003` split suffix.
pub fn model_stem(file_name: &str) -> String {
    if let Some(s) = SplitName::parse(file_name) {
        return s.prefix.to_string();
    }
    if is_gguf_name(file_name) {
        file_name[..file_name.len() - 5].to_string()
    } else {
        file_name.to_string()
    }
}

/// A file name of a split GGUF set: `<prefix>-<index>-of-<count>.gguf` with five-digit numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitName<'a> {
    /// Everything before `-<index>-of-<count>`.
    pub prefix: &'a str,
    /// 1-based part number.
    pub index: u32,
    /// Number of parts.
    pub count: u32,
}

impl<'a> SplitName<'a> {
    /// Parses `name`, or `None` when it is not the name of a part of a split set.
    pub fn parse(name: &'a str) -> Option<SplitName<'a>> {
        if !is_gguf_name(name) {
            return None;
        }
        let stem = &name[..name.len() - 5];
        // "-00001-of-00003" is 15 bytes.
        if stem.len() < 16 || !stem.is_char_boundary(stem.len() - 15) {
            return None;
        }
        let (prefix, tail) = stem.split_at(stem.len() - 15);
        let tail = tail.as_bytes();
        let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
        if tail[0] != b'-'
            || &tail[6..10] != b"-of-"
            || !digits(&tail[1..6])
            || !digits(&tail[10..])
        {
            return None;
        }
        let index: u32 = std::str::from_utf8(&tail[1..6]).ok()?.parse().ok()?;
        let count: u32 = std::str::from_utf8(&tail[10..]).ok()?.parse().ok()?;
        if index == 0 || count == 0 || index > count {
            return None;
        }
        Some(SplitName {
            prefix,
            index,
            count,
        })
    }

    /// The file name of part `index` of this set.
    pub fn file_name(&self, index: u32) -> String {
        format!("{}-{:05}-of-{:05}.gguf", self.prefix, index, self.count)
    }
}

/// All files of the model whose first (or only) file is `first`: the file itself, or every
/// part of its split set (which must all be present).
pub fn split_parts(first: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let name = file_name(first);
    let Some(split) = SplitName::parse(&name) else {
        return Ok(vec![first.to_path_buf()]);
    };
    let dir = first.parent().unwrap_or(Path::new("."));
    let mut parts = Vec::with_capacity(split.count as usize);
    for i in 1..=split.count {
        let p = dir.join(split.file_name(i));
        if !p.is_file() {
            return Err(StoreError::Invalid(format!(
                "split GGUF set {} is incomplete: {} is missing",
                first.display(),
                p.display()
            )));
        }
        parts.push(p);
    }
    Ok(parts)
}

/// One model found in a directory.
#[derive(Clone, Debug)]
struct Candidate {
    /// The only file, or the first part of a split set.
    first: PathBuf,
    /// All parts present (just `first` for a single file).
    parts: Vec<PathBuf>,
    /// Whether this is a split set.
    split: bool,
}

/// What one directory holds.
#[derive(Debug, Default)]
struct DirScan {
    candidates: Vec<Candidate>,
    /// Split sets whose first part is missing (named by the prefix).
    incomplete: Vec<String>,
    /// Subdirectories (not hidden), sorted.
    subdirs: Vec<PathBuf>,
}

impl DirScan {
    /// The model file to load from this directory: its only single GGUF file, else its only
    /// split set; several candidates are an error that lists them.
    fn choose(&self, dir: &Path) -> Result<PathBuf, StoreError> {
        let singles: Vec<&Candidate> = self.candidates.iter().filter(|c| !c.split).collect();
        let sets: Vec<&Candidate> = self.candidates.iter().filter(|c| c.split).collect();
        let pick = match (singles.len(), sets.len()) {
            (1, _) => Some(singles[0]),
            (0, 1) => Some(sets[0]),
            _ => None,
        };
        if let Some(c) = pick {
            return Ok(c.first.clone());
        }
        if self.candidates.is_empty() {
            let extra = if self.incomplete.is_empty() {
                String::new()
            } else {
                format!(
                    " (split sets without their first part: {})",
                    self.incomplete.join(", ")
                )
            };
            return Err(StoreError::Invalid(format!(
                "{} contains no GGUF model file{extra}",
                dir.display()
            )));
        }
        let names: Vec<String> = self
            .candidates
            .iter()
            .map(|c| file_name(&c.first))
            .collect();
        Err(StoreError::Invalid(format!(
            "{} contains several GGUF models; choose one by giving its file: {}",
            dir.display(),
            names.join(", ")
        )))
    }
}

/// Lists the GGUF models and subdirectories of `dir` (not recursive). Hidden entries,
/// partial downloads and auxiliary GGUF files (vision projectors) are skipped.
fn scan_dir(dir: &Path) -> Result<DirScan, StoreError> {
    let rd = fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    let mut singles = Vec::new();
    let mut sets: std::collections::BTreeMap<String, Vec<(u32, PathBuf)>> = Default::default();
    let mut subdirs = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follow symlinks here; resolve_api checks where they lead.
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            subdirs.push(path);
            continue;
        }
        if !meta.is_file() || !is_gguf_name(&name) || is_auxiliary_gguf(&name) {
            continue;
        }
        match SplitName::parse(&name) {
            Some(s) => sets
                .entry(format!("{}-of-{:05}", s.prefix, s.count))
                .or_default()
                .push((s.index, path)),
            None => singles.push(path),
        }
    }
    singles.sort();
    subdirs.sort();
    let mut candidates: Vec<Candidate> = singles
        .into_iter()
        .map(|p| Candidate {
            first: p.clone(),
            parts: vec![p],
            split: false,
        })
        .collect();
    let mut incomplete = Vec::new();
    for (key, mut parts) in sets {
        parts.sort();
        match parts.first() {
            Some((1, first)) => candidates.push(Candidate {
                first: first.clone(),
                parts: parts.iter().map(|(_, p)| p.clone()).collect(),
                split: true,
            }),
            _ => incomplete.push(key),
        }
    }
    Ok(DirScan {
        candidates,
        incomplete,
        subdirs,
    })
}
