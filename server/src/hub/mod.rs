//! A client for the Hugging Face Hub: pulling GGUF models into the store and searching.
//!
//! Repository listings go through `hf-hub`'s model-info request
//! (`GET {endpoint}/api/models/{repo}/revision/{rev}`). Files are fetched with the Hub's
//! resolve protocol (`GET {endpoint}/{repo}/resolve/{rev}/{file}`, following redirects) by
//! [`download`], which writes straight into the store, resumes partial `.part` files with
//! `Range` requests and renames a file into place only once it is complete — something
//! `hf-hub`'s own cache-oriented download does not offer.
//!
//! The endpoint comes from `HF_ENDPOINT` (default `https://huggingface.co`); the access token
//! from `HF_TOKEN`, else the token file `$HF_HOME/token` (default
//! `~/.cache/huggingface/token`).

mod download;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hf_hub::api::sync::{Api, ApiBuilder};
use hf_hub::{Repo, RepoType};
use serde::Deserialize;

use crate::store::{is_auxiliary_gguf, is_gguf_name, valid_component, SplitName, Store};
use download::{Fetch, Fetched};

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Held (locked) in a model directory while a pull writes to it; hidden from the store.
const LOCK_FILE: &str = ".trillim-pull.lock";

/// Small metadata files fetched next to the model when the repository has them.
pub const METADATA_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
];

/// Why a Hub operation failed. The messages are meant for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The repository id is not of the form `org/name`.
    #[error("invalid model id '{0}': expected the form org/name (letters, digits, '-', '_', '.')")]
    InvalidRepo(String),
    /// `HF_ENDPOINT` (or the given endpoint) is not an http(s) URL.
    #[error("invalid Hub endpoint '{0}': expected an http:// or https:// URL")]
    BadEndpoint(String),
    /// The repository does not exist (or is private and no accepted token was sent).
    #[error("model '{repo}' not found on the Hub{}", if *.token_sent { "" } else { " (if it is private, set HF_TOKEN to an access token that can read it)" })]
    NotFound {
        /// The repository.
        repo: String,
        /// Whether a token was sent.
        token_sent: bool,
    },
    /// The revision (branch, tag or commit) does not exist.
    #[error("model '{repo}' has no revision '{revision}' on the Hub")]
    RevisionNotFound {
        /// The repository.
        repo: String,
        /// The revision asked for.
        revision: String,
    },
    /// `--file` names no GGUF file of the repository.
    #[error("model '{repo}' has no GGUF file matching '{file}'{}", choices_suffix(.choices))]
    FileNotFound {
        /// The repository.
        repo: String,
        /// What was asked for.
        file: String,
        /// The GGUF files the repository has.
        choices: Vec<String>,
    },
    /// The repository has no GGUF file at all.
    #[error(
        "model '{repo}' has no GGUF file at revision '{revision}'; trillim runs GGUF models only"
    )]
    NoGguf {
        /// The repository.
        repo: String,
        /// The revision.
        revision: String,
    },
    /// The repository has several GGUF files and none was chosen.
    /// A pocket-tts repository without a language folder this build reads, or with several
    /// and none chosen.
    #[error("text-to-speech model '{repo}': {why}{}", choices_suffix(.choices))]
    TtsLanguage {
        /// The repository.
        repo: String,
        /// What is wrong.
        why: String,
        /// The language folders that could be pulled.
        choices: Vec<String>,
    },
    #[error("model '{repo}' has several GGUF files; choose one with --file NAME:\n  {}", .choices.join("\n  "))]
    Ambiguous {
        /// The repository.
        repo: String,
        /// The GGUF files (split sets by their first part).
        choices: Vec<String>,
    },
    /// The repository is gated or the token was refused (HTTP 401/403).
    #[error("access to model '{repo}' was refused (HTTP {status}): it is gated or private. Accept its terms at {endpoint}/{repo} while logged in, then set HF_TOKEN to an access token of that account{}", if *.token_sent { " (a token was sent but not accepted)" } else { "" })]
    Gated {
        /// The repository.
        repo: String,
        /// The Hub endpoint.
        endpoint: String,
        /// 401 or 403.
        status: u16,
        /// Whether a token was sent.
        token_sent: bool,
    },
    /// No connection could be made.
    #[error("the Hub could not be reached at {endpoint}: {detail}")]
    Unreachable {
        /// The Hub endpoint.
        endpoint: String,
        /// The transport error.
        detail: String,
    },
    /// Any other unexpected HTTP status.
    #[error("the Hub answered HTTP {status} for {url}{}", if .message.is_empty() { String::new() } else { format!(": {}", .message) })]
    Http {
        /// The status.
        status: u16,
        /// The URL requested.
        url: String,
        /// The Hub's error message, if any.
        message: String,
    },
    /// The Hub's answer could not be understood.
    #[error("unexpected answer from the Hub for {url}: {detail}")]
    BadResponse {
        /// The URL requested.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The connection broke off during a download; the `.part` file is kept.
    #[error("download of {file} was interrupted: {detail}; run the same command again to resume")]
    Interrupted {
        /// The file being downloaded.
        file: String,
        /// The cause.
        detail: String,
    },
    /// A download ended with the wrong size; the `.part` file is kept.
    #[error("download of {file} stopped at {got} of {expected} bytes; run the same command again to resume")]
    Incomplete {
        /// The file being downloaded.
        file: String,
        /// Bytes on disk.
        got: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// Another pull is writing to the same model directory.
    #[error("another pull is already downloading into {}; wait for it to finish", .dir.display())]
    Busy {
        /// The model directory.
        dir: PathBuf,
    },
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn choices_suffix(choices: &[String]) -> String {
    if choices.is_empty() {
        String::new()
    } else {
        format!("; available:\n  {}", choices.join("\n  "))
    }
}

impl HubError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> HubError {
        HubError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Options of [`pull`].
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// Branch, tag or commit (default `main`).
    pub revision: Option<String>,
    /// Download again even if the files are present.
    pub force: bool,
    /// Which GGUF file to take from a repository with several (a file name, or a part of one
    /// that matches a single file, such as `Q4_K_M`).
    pub file: Option<String>,
    /// Draw progress bars and status lines on stderr.
    pub progress: bool,
}

/// One search result.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct HubModel {
    /// Repository id `org/name`.
    #[serde(alias = "modelId")]
    pub id: String,
    /// Recent downloads.
    #[serde(default)]
    pub downloads: u64,
    /// Likes.
    #[serde(default)]
    pub likes: u64,
}

/// One file of a repository, from the model-info request.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Sibling {
    /// Path inside the repository.
    pub rfilename: String,
    /// Size in bytes, when the Hub reported it.
    #[serde(default)]
    pub size: Option<u64>,
}

/// What the model-info request returns (the fields used here).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ModelInfo {
    /// The commit the revision points at.
    #[serde(default)]
    pub sha: Option<String>,
    /// The repository's files.
    #[serde(default)]
    pub siblings: Vec<Sibling>,
}

/// Pulls `repo` (`org/name`) into the store of `$TRILLIM_HOME` from the Hub of `HF_ENDPOINT`,
/// returning the path of the GGUF file (the first part of a split set).
pub fn pull(repo: &str, opts: PullOptions) -> Result<PathBuf, HubError> {
    Hub::from_env()?.pull(&Store::from_env(), repo, &opts)
}

/// Searches the Hub of `HF_ENDPOINT` for GGUF models matching `term`, most downloaded first.
pub fn search(term: &str, limit: usize) -> Result<Vec<HubModel>, HubError> {
    Hub::from_env()?.search(term, limit)
}

/// The access token from `HF_TOKEN`, else from the token file under `HF_HOME`.
pub fn token_from_env() -> Option<String> {
    token_from(std::env::var("HF_TOKEN").ok(), &hf_hub::Cache::from_env())
}

/// `var` (the value of `HF_TOKEN`) when set and not blank, else the token file of `cache`.
fn token_from(var: Option<String>, cache: &hf_hub::Cache) -> Option<String> {
    var.map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .or_else(|| cache.token())
}

/// A Hub endpoint with its credentials.
#[derive(Debug)]
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    agent: ureq::Agent,
    api: Api,
}

impl Hub {
    /// The Hub of `HF_ENDPOINT` (default the public Hub) with the token of `HF_TOKEN` or the
    /// `HF_HOME` token file.
    pub fn from_env() -> Result<Hub, HubError> {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        Hub::new(&endpoint, token_from_env())
    }

    /// A Hub at `endpoint` (such as `https://huggingface.co`), sending `token` if given.
    pub fn new(endpoint: &str, token: Option<String>) -> Result<Hub, HubError> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let host = endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("http://"))
            .filter(|h| !h.is_empty() && !h.starts_with('/'))
            .ok_or_else(|| HubError::BadEndpoint(endpoint.clone()))?;
        let host = host.split('/').next().unwrap_or(host);
        let loopback =
            host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");
        let agent = ureq::AgentBuilder::new()
            .user_agent(concat!("trillim/", env!("CARGO_PKG_VERSION")))
            .redirect_auth_headers(ureq::RedirectAuthHeaders::SameHost)
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(60))
            .try_proxy_from_env(!loopback)
            .build();
        let api = ApiBuilder::new()
            .with_endpoint(endpoint.clone())
            .with_token(token.clone())
            .with_progress(false)
            .with_user_agent("trillim", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| HubError::BadEndpoint(format!("{endpoint} ({e})")))?;
        Ok(Hub {
            endpoint,
            token,
            agent,
            api,
        })
    }

    /// The endpoint, without a trailing `/`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn get(&self, url: &str) -> ureq::Request {
        let req = self.agent.get(url);
        match &self.token {
            Some(t) => req.set("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    /// The files of `repo` at `revision`.
    pub fn model_info(&self, repo: &str, revision: &str) -> Result<ModelInfo, HubError> {
        check_repo(repo)?;
        let api_repo = self.api.repo(Repo::with_revision(
            repo.to_string(),
            RepoType::Model,
            revision.to_string(),
        ));
        let req = api_repo.info_request().query("blobs", "true");
        let url = req.url().to_string();
        let ctx = Ctx::Info { repo, revision };
        let resp = req.call().map_err(|e| self.map_err(e, &url, &ctx))?;
        resp.into_json().map_err(|e| HubError::BadResponse {
            url,
            detail: e.to_string(),
        })
    }

    /// GGUF models matching `term` (all GGUF models when empty), most downloaded first.
    pub fn search(&self, term: &str, limit: usize) -> Result<Vec<HubModel>, HubError> {
        let url = format!("{}/api/models", self.endpoint);
        let mut req = self.get(&url);
        let term = term.trim();
        if !term.is_empty() {
            req = req.query("search", term);
        }
        let req = req
            .query("filter", "gguf")
            .query("sort", "downloads")
            .query("direction", "-1")
            .query("limit", &limit.max(1).to_string());
        let full_url = req.url().to_string();
        let resp = req
            .call()
            .map_err(|e| self.map_err(e, &full_url, &Ctx::Search))?;
        resp.into_json().map_err(|e| HubError::BadResponse {
            url: full_url,
            detail: e.to_string(),
        })
    }

    /// Pulls `repo` into `<store>/<org>/<name>/`: one GGUF model (all parts of a split set)
    /// and the repository's small metadata files. Returns the GGUF file's path. A repository
    /// with no GGUF file but a CTranslate2 `model.bin` (a Whisper checkpoint such as
    /// `Systran/faster-whisper-tiny.en`) gets `model.bin` and its vocabulary instead, and a
    /// pocket-tts repository one language folder (`pocket_tts_files`); the path is then
    /// that of `model.bin` or `model.safetensors`.
    pub fn pull(&self, store: &Store, repo: &str, opts: &PullOptions) -> Result<PathBuf, HubError> {
        check_repo(repo)?;
        let revision = opts.revision.as_deref().unwrap_or("main");
        let info = self.model_info(repo, revision)?;
        let file = opts.file.as_deref();
        // (file, where it goes under the model directory)
        let tts = pocket_tts_files(repo, &info.siblings, file)?;
        let (chosen, with_metadata): (Vec<(&Sibling, String)>, bool) = match &tts {
            Some((files, _)) => (files.clone(), false),
            None => {
                let files = match ctranslate2_files(&info.siblings, file) {
                    Some(files) => files,
                    None => choose_gguf(repo, revision, &info.siblings, file)?,
                };
                let bad = |s: &Sibling| HubError::BadResponse {
                    url: format!("{}/api/models/{repo}", self.endpoint),
                    detail: format!("unusable file name '{}'", s.rfilename),
                };
                let named = files
                    .into_iter()
                    .map(|s| {
                        Ok((
                            s,
                            local_name(&s.rfilename).ok_or_else(|| bad(s))?.to_string(),
                        ))
                    })
                    .collect::<Result<Vec<_>, HubError>>()?;
                (named, true)
            }
        };
        // Kyutai keeps the tokenizer and the built-in voices of the gated `kyutai/pocket-tts`
        // in its public twin `kyutai/pocket-tts-without-voice-cloning`.
        let twin_repo = format!("{repo}{TTS_TWIN_SUFFIX}");
        let twin_info;
        let mut twin_files = Vec::new();
        if let Some((files, lang)) = &tts {
            if !files.iter().any(|(_, l)| l == "tokenizer.json") {
                let missing = || HubError::TtsLanguage {
                    repo: repo.to_string(),
                    why: format!("languages/{lang}/ has no tokenizer.json, here or in {twin_repo}"),
                    choices: Vec::new(),
                };
                if repo.ends_with(TTS_TWIN_SUFFIX) {
                    return Err(missing());
                }
                twin_info = self.model_info(&twin_repo, "main").map_err(|e| match e {
                    HubError::NotFound { .. } => missing(),
                    e => e,
                })?;
                twin_files = tts_folder_files(&twin_info.siblings, lang)
                    .into_iter()
                    .filter(|(_, l)| l != "model.safetensors" && l != "config.json")
                    .collect();
                if !twin_files.iter().any(|(_, l)| l == "tokenizer.json") {
                    return Err(missing());
                }
            }
        }
        let dir = store
            .model_dir(repo)
            .map_err(|_| HubError::InvalidRepo(repo.to_string()))?;
        std::fs::create_dir_all(&dir).map_err(|e| HubError::io(&dir, e))?;
        // One pull per model directory at a time: two writers appending to one `.part` file
        // would interleave their bytes. The lock goes with the file handle.
        let lock_path = dir.join(LOCK_FILE);
        let lock = std::fs::File::create(&lock_path).map_err(|e| HubError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(HubError::Busy { dir }),
            Err(std::fs::TryLockError::Error(e)) => return Err(HubError::io(&lock_path, e)),
        }

        // (repository, revision, file, where it goes)
        let mut jobs: Vec<(&str, &str, &Sibling, String)> = chosen
            .iter()
            .map(|(s, l)| (repo, revision, *s, l.clone()))
            .collect();
        for meta in METADATA_FILES.iter().filter(|_| with_metadata) {
            if let Some(s) = info.siblings.iter().find(|s| s.rfilename == *meta) {
                jobs.push((repo, revision, s, meta.to_string()));
            }
        }
        for (s, l) in &twin_files {
            jobs.push((&twin_repo, "main", *s, l.clone()));
        }
        if opts.progress {
            let commit = info
                .sha
                .as_deref()
                .map(|s| format!(" (commit {})", &s[..s.len().min(12)]))
                .unwrap_or_default();
            eprintln!(
                "Pulling {repo} at {revision}{commit} from {} into {}",
                self.endpoint(),
                dir.display()
            );
        }
        for &(repo, revision, s, ref local) in &jobs {
            let local = local.as_str();
            let dest = dir.join(local);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
            }
            let url = format!(
                "{}/{repo}/resolve/{}/{}",
                self.endpoint,
                encode_segment(revision),
                s.rfilename
                    .split('/')
                    .map(encode_segment)
                    .collect::<Vec<_>>()
                    .join("/")
            );
            let ctx = Ctx::File {
                repo,
                revision,
                file: &s.rfilename,
            };
            let fetch = Fetch {
                url: &url,
                dest: &dest,
                label: local,
                expected: s.size,
                force: opts.force,
                progress: opts.progress,
            };
            let outcome = download::fetch(self, &fetch, |e| self.map_err(e, &url, &ctx))?;
            if opts.progress {
                if let Fetched::Skipped = outcome {
                    eprintln!("{local}: already downloaded");
                }
            }
        }
        drop(lock);
        Ok(dir.join(&chosen[0].1))
    }

    fn map_err(&self, err: ureq::Error, url: &str, ctx: &Ctx<'_>) -> HubError {
        let token_sent = self.token.is_some();
        match err {
            ureq::Error::Status(status, resp) => {
                let code = resp.header("X-Error-Code").unwrap_or("").to_string();
                let message = resp
                    .header("X-Error-Message")
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        resp.into_string()
                            .unwrap_or_default()
                            .chars()
                            .take(300)
                            .collect()
                    });
                let repo = ctx.repo().unwrap_or("").to_string();
                match (status, code.as_str(), ctx) {
                    (
                        _,
                        "RevisionNotFound",
                        Ctx::Info { revision, .. } | Ctx::File { revision, .. },
                    ) => HubError::RevisionNotFound {
                        repo,
                        revision: revision.to_string(),
                    },
                    (_, "EntryNotFound", Ctx::File { file, .. })
                    | (404, _, Ctx::File { file, .. }) => HubError::FileNotFound {
                        repo,
                        file: file.to_string(),
                        choices: Vec::new(),
                    },
                    (401 | 404, "RepoNotFound", Ctx::Info { .. } | Ctx::File { .. })
                    | (404, _, Ctx::Info { .. }) => HubError::NotFound { repo, token_sent },
                    (401 | 403, _, Ctx::Info { .. } | Ctx::File { .. }) => HubError::Gated {
                        repo,
                        endpoint: self.endpoint.clone(),
                        status,
                        token_sent,
                    },
                    _ => HubError::Http {
                        status,
                        url: url.to_string(),
                        message: message.trim().to_string(),
                    },
                }
            }
            ureq::Error::Transport(t) => HubError::Unreachable {
                endpoint: self.endpoint.clone(),
                detail: transport_detail(&t),
            },
        }
    }
}

/// What a request was for, to word its errors.
#[derive(Debug)]
enum Ctx<'a> {
    Info {
        repo: &'a str,
        revision: &'a str,
    },
    File {
        repo: &'a str,
        revision: &'a str,
        file: &'a str,
    },
    Search,
}

impl Ctx<'_> {
    fn repo(&self) -> Option<&str> {
        match self {
            Ctx::Info { repo, .. } | Ctx::File { repo, .. } => Some(repo),
            Ctx::Search => None,
        }
    }
}

fn transport_detail(t: &ureq::Transport) -> String {
    let mut s = t.kind().to_string();
    if let Some(m) = t.message() {
        s.push_str(": ");
        s.push_str(m);
    }
    if let Some(src) = std::error::Error::source(t) {
        s.push_str(": ");
        s.push_str(&src.to_string());
    }
    s
}

fn check_repo(repo: &str) -> Result<(), HubError> {
    let mut parts = repo.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(org), Some(name), None) if valid_component(org) && valid_component(name) => Ok(()),
        _ => Err(HubError::InvalidRepo(repo.to_string())),
    }
}

/// The name a repository file gets in the store: its last path component, which must be a
/// plain file name.
fn local_name(rfilename: &str) -> Option<&str> {
    let base = rfilename.rsplit('/').next()?;
    let ok = !base.is_empty()
        && !base.starts_with('.')
        && !base.contains(['\\', '\0', ':'])
        && base.len() <= 255;
    ok.then_some(base)
}

/// Percent-encodes one URL path segment (RFC 3986 unreserved characters stay).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A GGUF model of a repository: one file, or the parts of a split set in order.
#[derive(Debug)]
struct RemoteModel<'a> {
    parts: Vec<&'a Sibling>,
}

impl RemoteModel<'_> {
    fn label(&self) -> String {
        let first = &self.parts[0].rfilename;
        let size: Option<u64> = self.parts.iter().map(|p| p.size).sum();
        let mut s = first.clone();
        if self.parts.len() > 1 {
            s.push_str(&format!(" ({} parts)", self.parts.len()));
        }
        if let Some(n) = size {
            s.push_str(&format!(" [{}]", human_size(n)));
        }
        s
    }
}

/// Groups the GGUF files of a repository into models (split sets become one model named by
/// its first part); vision projectors and incomplete split sets are left out.
fn remote_models(siblings: &[Sibling]) -> Vec<RemoteModel<'_>> {
    let mut out: Vec<RemoteModel<'_>> = Vec::new();
    let mut sets: std::collections::BTreeMap<String, Vec<(u32, u32, &Sibling)>> =
        Default::default();
    for s in siblings {
        if !is_gguf_name(&s.rfilename) || is_auxiliary_gguf(&s.rfilename) {
            continue;
        }
        let base = s.rfilename.rsplit('/').next().unwrap_or(&s.rfilename);
        match SplitName::parse(base) {
            Some(split) => {
                let dir_len = s.rfilename.len() - base.len();
                let key = format!("{}{}", &s.rfilename[..dir_len], split.prefix);
                sets.entry(key)
                    .or_default()
                    .push((split.index, split.count, s));
            }
            None => out.push(RemoteModel { parts: vec![s] }),
        }
    }
    for (_, mut parts) in sets {
        parts.sort_by_key(|p| p.0);
        let count = parts[0].1;
        let complete = parts.len() == count as usize
            && parts
                .iter()
                .enumerate()
                .all(|(i, p)| p.0 == i as u32 + 1 && p.1 == count);
        if complete {
            out.push(RemoteModel {
                parts: parts.into_iter().map(|p| p.2).collect(),
            });
        }
    }
    out.sort_by(|a, b| a.parts[0].rfilename.cmp(&b.parts[0].rfilename));
    out
}

/// Suffix of the public twin of a gated pocket-tts repository, which holds its tokenizer and
/// built-in voices.
const TTS_TWIN_SUFFIX: &str = "-without-voice-cloning";

/// A language folder's files and the folder's name, when the repository is a pocket-tts one.
type TtsFiles<'a> = Result<Option<(Vec<(&'a Sibling, String)>, String)>, HubError>;

/// A pocket-tts repository (`kyutai/pocket-tts`, `kyutai/pocket-tts-without-voice-cloning`)
/// keeps each language in `languages/<name>/`: `model.safetensors`, `tokenizer.json`, and the
/// built-in voices in `embeddings/<voice>.safetensors`. When the repository is laid out so,
/// the files of one language (`file` names it, exactly or as the only folder containing it;
/// else `english`, or the only `english…` folder), each with where it goes in the model
/// directory: the folder's layout, flattened, as `trillim serve --tts-model` reads it.
fn pocket_tts_files<'a>(repo: &str, siblings: &'a [Sibling], file: Option<&str>) -> TtsFiles<'a> {
    let lang_of = |s: &Sibling| -> Option<String> {
        let rest = s.rfilename.strip_prefix("languages/")?;
        let (lang, name) = rest.split_once('/')?;
        (name == "model.safetensors" && local_name(lang) == Some(lang)).then(|| lang.to_string())
    };
    let all: Vec<String> = siblings.iter().filter_map(lang_of).collect();
    if all.is_empty() || !remote_models(siblings).is_empty() {
        return Ok(None);
    }
    let has = |lang: &str, name: &str| {
        let want = format!("languages/{lang}/{name}");
        siblings.iter().any(|s| s.rfilename == want)
    };
    // Folders whose tokenizer is SentencePiece's `tokenizer.model` only are not offered.
    let mut usable: Vec<String> = all
        .iter()
        .filter(|l| !has(l, "tokenizer.model") || has(l, "tokenizer.json"))
        .cloned()
        .collect();
    usable.sort();
    let err = |why: String, choices: Vec<String>| HubError::TtsLanguage {
        repo: repo.to_string(),
        why,
        choices,
    };
    if usable.is_empty() {
        return Err(err(
            format!(
                "no language folder has a tokenizer.json (found {}; SentencePiece                  tokenizer.model files are not read)",
                all.join(", ")
            ),
            Vec::new(),
        ));
    }
    let pick = |pred: &dyn Fn(&str) -> bool| -> Vec<String> {
        usable.iter().filter(|l| pred(l)).cloned().collect()
    };
    let lang = match file {
        Some(want) if usable.iter().any(|l| l == want) => want.to_string(),
        Some(want) => {
            let needle = want.to_ascii_lowercase();
            match &pick(&|l| l.to_ascii_lowercase().contains(&needle))[..] {
                [one] => one.clone(),
                [] => {
                    let why = match all
                        .iter()
                        .find(|l| l.to_ascii_lowercase().contains(&needle))
                    {
                        Some(l) => format!(
                            "languages/{l}/ has only a SentencePiece tokenizer.model, which this \
                             build does not read (it reads tokenizer.json)"
                        ),
                        None => format!("no language folder matches '{want}'"),
                    };
                    return Err(err(why, usable));
                }
                several => {
                    return Err(err(
                        format!("several language folders match '{want}'; choose one with --file"),
                        several.to_vec(),
                    ))
                }
            }
        }
        None if usable.iter().any(|l| l == "english") => "english".to_string(),
        None => match &pick(&|l| l.starts_with("english"))[..] {
            [one] => one.clone(),
            _ => {
                return Err(err(
                    "choose a language folder with --file NAME".to_string(),
                    usable,
                ))
            }
        },
    };
    Ok(Some((tts_folder_files(siblings, &lang), lang)))
}

/// The files of `languages/<lang>/` that a pocket-tts model directory holds, with where each
/// goes: `model.safetensors` (first), `tokenizer.json`, `config.json` and
/// `embeddings/<voice>.safetensors`.
fn tts_folder_files<'a>(siblings: &'a [Sibling], lang: &str) -> Vec<(&'a Sibling, String)> {
    let prefix = format!("languages/{lang}/");
    let mut files: Vec<(&Sibling, String)> = Vec::new();
    for s in siblings {
        let Some(rest) = s.rfilename.strip_prefix(&prefix) else {
            continue;
        };
        let keep = match rest.split_once('/') {
            None => matches!(rest, "model.safetensors" | "tokenizer.json" | "config.json"),
            Some(("embeddings", voice)) => {
                voice.ends_with(".safetensors") && local_name(voice) == Some(voice)
            }
            Some(_) => false,
        };
        if keep {
            files.push((s, rest.to_string()));
        }
    }
    // The weights first: `pull` answers with the first file's path.
    files.sort_by_key(|(_, local)| (local != "model.safetensors", local.clone()));
    files
}

/// A CTranslate2 checkpoint's files (`model.bin` first, then its vocabulary) when the
/// repository has one and no GGUF model, and no file was asked for.
fn ctranslate2_files<'a>(siblings: &'a [Sibling], file: Option<&str>) -> Option<Vec<&'a Sibling>> {
    if file.is_some() || !remote_models(siblings).is_empty() {
        return None;
    }
    let find = |name: &str| siblings.iter().find(|s| s.rfilename == name);
    let mut files = vec![find("model.bin")?];
    files.extend(
        [
            "vocabulary.txt",
            "vocabulary.json",
            "preprocessor_config.json",
        ]
        .iter()
        .filter_map(|n| find(n)),
    );
    Some(files)
}

/// Picks the files to download: the model `file` names (exactly, by base name, or as the only
/// model whose name contains it, ignoring case), else the repository's only model.
fn choose_gguf<'a>(
    repo: &str,
    revision: &str,
    siblings: &'a [Sibling],
    file: Option<&str>,
) -> Result<Vec<&'a Sibling>, HubError> {
    let models = remote_models(siblings);
    let labels = || models.iter().map(RemoteModel::label).collect::<Vec<_>>();
    let Some(want) = file else {
        return match models.len() {
            0 => Err(HubError::NoGguf {
                repo: repo.to_string(),
                revision: revision.to_string(),
            }),
            1 => Ok(models.into_iter().next().expect("one").parts),
            _ => Err(HubError::Ambiguous {
                repo: repo.to_string(),
                choices: labels(),
            }),
        };
    };
    // An exact path or base name, of any part of a split set or of any GGUF file (a vision
    // projector, too, when asked for by name).
    let base = |s: &Sibling| s.rfilename.rsplit('/').next().unwrap_or("").to_string();
    for m in &models {
        if m.parts
            .iter()
            .any(|p| p.rfilename == want || base(p) == want)
        {
            return Ok(m.parts.clone());
        }
    }
    if let Some(s) = siblings
        .iter()
        .find(|s| is_gguf_name(&s.rfilename) && (s.rfilename == want || base(s) == want))
    {
        return Ok(vec![s]);
    }
    let needle = want.to_ascii_lowercase();
    let matching: Vec<&RemoteModel<'_>> = models
        .iter()
        .filter(|m| m.parts[0].rfilename.to_ascii_lowercase().contains(&needle))
        .collect();
    match matching.len() {
        1 => Ok(matching[0].parts.clone()),
        0 => Err(HubError::FileNotFound {
            repo: repo.to_string(),
            file: want.to_string(),
            choices: labels(),
        }),
        _ => Err(HubError::Ambiguous {
            repo: repo.to_string(),
            choices: matching.iter().map(|m| m.label()).collect(),
        }),
    }
}

/// `1.5 GiB`-style sizes.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
