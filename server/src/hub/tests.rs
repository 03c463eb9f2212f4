//! The Hub client against a stand-in Hub on 127.0.0.1: a small HTTP/1.1 server serving model
//! info, `resolve/` downloads (through a redirect, with `Range`), search, a gated repository,
//! a private one and a connection that breaks off mid-file.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use super::download::part_path;
use super::*;
use crate::store::tests::TempDir;

/// One request the stand-in Hub saw.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    query: String,
    range: Option<String>,
    auth: Option<String>,
}

#[derive(Debug)]
struct FakeRepo {
    sha: &'static str,
    revisions: &'static [&'static str],
    files: Vec<(&'static str, Vec<u8>)>,
    /// `None`: public; `Some(t)`: downloads need `Bearer t`.
    gated_token: Option<&'static str>,
    /// Model info answers 401 RepoNotFound, as the Hub does for private repositories.
    private: bool,
    /// The CDN ignores `Range` and always sends the whole file.
    ignores_range: bool,
}

#[derive(Debug, Default)]
struct State {
    seen: Vec<Seen>,
    /// Download paths whose next answer breaks off halfway.
    break_next: Vec<String>,
}

struct FakeHub {
    addr: SocketAddr,
    repos: Arc<HashMap<&'static str, FakeRepo>>,
    state: Arc<Mutex<State>>,
}

/// Deterministic file contents.
fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed)
        .collect()
}

fn repos() -> HashMap<&'static str, FakeRepo> {
    let public = |files| FakeRepo {
        sha: "0123456789abcdef0123456789abcdef01234567",
        revisions: &["main", "v1"],
        files,
        gated_token: None,
        private: false,
        ignores_range: false,
    };
    let mut m = HashMap::new();
    m.insert(
        "acme/tiny-GGUF",
        public(vec![
            ("tiny-Q4_0.gguf", content(1, 300_000)),
            ("config.json", b"{\"model_type\":\"llama\"}".to_vec()),
            ("tokenizer.json", b"{\"model\":{}}".to_vec()),
            ("README.md", b"# tiny".to_vec()),
        ]),
    );
    m.insert(
        "acme/multi-GGUF",
        public(vec![
            ("m-Q4_K_M.gguf", content(2, 1000)),
            ("m-Q8_0.gguf", content(3, 2000)),
            ("mmproj-m-f16.gguf", content(4, 100)),
            ("big/m-F16-00001-of-00002.gguf", content(5, 3000)),
            ("big/m-F16-00002-of-00002.gguf", content(6, 1500)),
        ]),
    );
    m.insert(
        "acme/whisper-ct2",
        public(vec![
            ("model.bin", content(11, 5000)),
            ("config.json", b"{\"suppress_ids\":[]}".to_vec()),
            ("vocabulary.txt", b"a\nb".to_vec()),
            ("tokenizer.json", b"{\"model\":{}}".to_vec()),
            ("README.md", b"# whisper".to_vec()),
        ]),
    );
    // Kyutai's layout: the gated repository holds the weights with the voice-cloning encoder,
    // its public twin the tokenizer and the built-in voices too.
    m.insert(
        "kyutai/pocket-tts",
        public(vec![
            (
                "languages/english_2026-09/model.safetensors",
                content(12, 4000),
            ),
            (
                "languages/english_7m_2026-10/model.safetensors",
                content(13, 900),
            ),
            (
                "languages/english_7m_2026-10/tokenizer.model",
                content(14, 90),
            ),
            ("languages/french/model.safetensors", content(15, 800)),
            ("README.md", b"# pocket-tts".to_vec()),
        ]),
    );
    m.insert(
        "kyutai/pocket-tts-without-voice-cloning",
        public(vec![
            (
                "languages/english_2026-09/model.safetensors",
                content(16, 3000),
            ),
            (
                "languages/english_2026-09/tokenizer.json",
                b"{\"model\":{}}".to_vec(),
            ),
            (
                "languages/english_2026-09/embeddings/alba.safetensors",
                content(17, 64),
            ),
            (
                "languages/english_2026-09/embeddings/marius.safetensors",
                content(18, 64),
            ),
            (
                "languages/english_2026-09/embeddings/notes.txt",
                b"x".to_vec(),
            ),
            ("languages/french/model.safetensors", content(19, 700)),
            ("languages/french/tokenizer.json", b"{}".to_vec()),
            ("config.json", b"{}".to_vec()),
        ]),
    );
    m.insert(
        "acme/none",
        public(vec![("README.md", b"no weights".to_vec())]),
    );
    let mut gated = public(vec![("g.gguf", content(7, 500))]);
    gated.gated_token = Some("good-token");
    m.insert("acme/gated", gated);
    let mut private = public(vec![("p.gguf", content(8, 10))]);
    private.private = true;
    m.insert("acme/private", private);
    let mut norange = public(vec![("n.gguf", content(9, 50_000))]);
    norange.ignores_range = true;
    m.insert("acme/norange", norange);
    m.insert("acme/flaky", public(vec![("f.gguf", content(10, 200_000))]));
    m
}

impl FakeHub {
    fn start() -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hub = FakeHub {
            addr,
            repos: Arc::new(repos()),
            state: Arc::new(Mutex::new(State::default())),
        };
        let (repos, state) = (hub.repos.clone(), hub.state.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (repos, state) = (repos.clone(), state.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &repos, &state);
                });
            }
        });
        hub
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn client(&self, token: Option<&str>) -> Hub {
        Hub::new(&self.endpoint(), token.map(str::to_string)).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn clear(&self) {
        self.state.lock().unwrap().seen.clear();
    }

    fn file(&self, repo: &str, name: &str) -> Vec<u8> {
        self.repos[repo]
            .files
            .iter()
            .find(|f| f.0 == name)
            .unwrap()
            .1
            .clone()
    }
}

fn respond(
    s: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()
}

fn error(s: &mut TcpStream, status: u16, code: &str, msg: &str) -> std::io::Result<()> {
    let body = format!("{{\"error\":\"{msg}\"}}");
    respond(
        s,
        status,
        &[
            ("X-Error-Code", code.to_string()),
            ("X-Error-Message", msg.to_string()),
        ],
        body.as_bytes(),
    )
}

fn serve(
    mut s: TcpStream,
    repos: &HashMap<&'static str, FakeRepo>,
    state: &Mutex<State>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let seen = Seen {
        path: path.to_string(),
        query: query.to_string(),
        range: headers.get("range").cloned(),
        auth: headers.get("authorization").cloned(),
    };
    state.lock().unwrap().seen.push(seen.clone());

    // Search.
    if path == "/api/models" {
        let params: HashMap<&str, &str> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let term = params.get("search").copied().unwrap_or("");
        let limit: usize = params
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(10);
        let mut ids: Vec<&&str> = repos.keys().filter(|k| k.contains(term)).collect();
        ids.sort();
        let list: Vec<String> = ids
            .iter()
            .take(limit)
            .enumerate()
            .map(|(i, id)| {
                format!(
                    "{{\"id\":\"{id}\",\"downloads\":{},\"likes\":{i}}}",
                    1000 - i
                )
            })
            .collect();
        return respond(&mut s, 200, &[], format!("[{}]", list.join(",")).as_bytes());
    }
    // Model info: /api/models/{org}/{name}/revision/{rev}
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() != 4 || parts[2] != "revision" {
            return error(&mut s, 404, "", "bad api path");
        }
        let id = format!("{}/{}", parts[0], parts[1]);
        let Some(repo) = repos.get(id.as_str()) else {
            return error(&mut s, 404, "RepoNotFound", "Repository not found");
        };
        if repo.private && seen.auth.is_none() {
            return error(&mut s, 401, "RepoNotFound", "Repository not found");
        }
        if !repo.revisions.contains(&parts[3]) {
            return error(&mut s, 404, "RevisionNotFound", "Invalid rev id");
        }
        let siblings: Vec<String> = repo
            .files
            .iter()
            .map(|(n, c)| format!("{{\"rfilename\":\"{n}\",\"size\":{}}}", c.len()))
            .collect();
        let body = format!(
            "{{\"id\":\"{id}\",\"sha\":\"{}\",\"siblings\":[{}]}}",
            repo.sha,
            siblings.join(",")
        );
        return respond(&mut s, 200, &[], body.as_bytes());
    }
    // Downloads: /{org}/{name}/resolve/{rev}/{file...} redirect to /cdn/{org}/{name}/{file...}
    let (cdn, rest) = match path.strip_prefix("/cdn/") {
        Some(r) => (true, r),
        None => (false, path.trim_start_matches('/')),
    };
    let mut parts = rest.splitn(3, '/');
    let (org, name, tail) = (parts.next(), parts.next(), parts.next());
    let (Some(org), Some(name), Some(tail)) = (org, name, tail) else {
        return error(&mut s, 404, "", "no route");
    };
    let id = format!("{org}/{name}");
    let Some(repo) = repos.get(id.as_str()) else {
        return error(&mut s, 404, "RepoNotFound", "Repository not found");
    };
    let file = if cdn {
        tail.to_string()
    } else {
        let Some(t) = tail.strip_prefix("resolve/") else {
            return error(&mut s, 404, "", "no route");
        };
        let (rev, file) = t.split_once('/').unwrap_or((t, ""));
        if !repo.revisions.contains(&rev) {
            return error(&mut s, 404, "RevisionNotFound", "Invalid rev id");
        }
        file.to_string()
    };
    if let Some(tok) = repo.gated_token {
        match seen.auth.as_deref() {
            None => {
                return error(
                    &mut s,
                    401,
                    "GatedRepo",
                    "Access to this repo is restricted",
                )
            }
            Some(a) if a != format!("Bearer {tok}") => {
                return error(&mut s, 403, "GatedRepo", "Not in the authorized list")
            }
            Some(_) => {}
        }
    }
    let Some((_, body)) = repo.files.iter().find(|f| f.0 == file) else {
        return error(&mut s, 404, "EntryNotFound", "Entry not found");
    };
    let meta = vec![
        ("ETag", format!("\"etag-{}\"", body.len())),
        ("X-Repo-Commit", repo.sha.to_string()),
    ];
    if !cdn && file.ends_with(".gguf") {
        let mut h = meta.clone();
        h.push(("Location", format!("/cdn/{id}/{file}")));
        h.push(("X-Linked-Size", body.len().to_string()));
        return respond(&mut s, 302, &h, b"");
    }
    let start = match seen.range.as_deref() {
        Some(r) if !repo.ignores_range => r
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok()),
        _ => None,
    };
    if state.lock().unwrap().break_next.contains(&path.to_string()) {
        state.lock().unwrap().break_next.retain(|p| p != path);
        // Announce the whole file, send half, hang up.
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(&body[..body.len() / 2])?;
        s.flush()?;
        return s.shutdown(std::net::Shutdown::Both);
    }
    match start {
        Some(n) if n >= body.len() => respond(
            &mut s,
            416,
            &[("Content-Range", format!("bytes */{}", body.len()))],
            b"",
        ),
        Some(n) => {
            let mut h = meta;
            h.push((
                "Content-Range",
                format!("bytes {n}-{}/{}", body.len() - 1, body.len()),
            ));
            respond(&mut s, 206, &h, &body[n..])
        }
        None => respond(&mut s, 200, &meta, body),
    }
}

fn opts() -> PullOptions {
    PullOptions::default()
}

fn downloads(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|s| s.path.starts_with("/cdn/"))
        .collect()
}

#[test]
fn pull_downloads_model_and_metadata() {
    let hub = FakeHub::start();
    let t = TempDir::new("pull");
    let store = Store::new(t.path().join("models"));
    let path = hub
        .client(None)
        .pull(&store, "acme/tiny-GGUF", &opts())
        .unwrap();
    let dir = store.root().join("acme/tiny-GGUF");
    assert_eq!(path, dir.join("tiny-Q4_0.gguf"));
    assert_eq!(
        fs::read(&path).unwrap(),
        hub.file("acme/tiny-GGUF", "tiny-Q4_0.gguf")
    );
    assert!(dir.join("config.json").is_file());
    assert!(dir.join("tokenizer.json").is_file());
    assert!(!dir.join("README.md").exists());
    assert!(!part_path(&path).exists());
    // The model info was asked for the revision, the file through the redirect.
    let seen = hub.seen();
    assert!(seen
        .iter()
        .any(|s| s.path == "/api/models/acme/tiny-GGUF/revision/main"));
    assert!(seen
        .iter()
        .any(|s| s.path == "/acme/tiny-GGUF/resolve/main/tiny-Q4_0.gguf"));
    assert_eq!(downloads(&seen).len(), 1);
    // The store resolves it.
    let r = store.resolve_cli("acme/tiny-GGUF").unwrap();
    assert_eq!((r.gguf, r.name.as_str()), (path.clone(), "tiny-GGUF"));

    // A rerun downloads nothing.
    hub.clear();
    let again = hub
        .client(None)
        .pull(&store, "acme/tiny-GGUF", &opts())
        .unwrap();
    assert_eq!(again, path);
    let seen = hub.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].path.starts_with("/api/models/"));
}

#[test]
fn pull_fetches_a_ctranslate2_whisper_checkpoint() {
    let hub = FakeHub::start();
    let t = TempDir::new("pull-ct2");
    let store = Store::new(t.path().join("models"));
    let path = hub
        .client(None)
        .pull(&store, "acme/whisper-ct2", &opts())
        .unwrap();
    let dir = store.root().join("acme/whisper-ct2");
    assert_eq!(path, dir.join("model.bin"));
    for f in [
        "model.bin",
        "config.json",
        "vocabulary.txt",
        "tokenizer.json",
    ] {
        assert_eq!(
            fs::read(dir.join(f)).unwrap(),
            hub.file("acme/whisper-ct2", f),
            "{f}"
        );
    }
    assert!(!dir.join("README.md").exists());
}

#[test]
fn pull_fetches_a_pocket_tts_language_folder() {
    let hub = FakeHub::start();
    let t = TempDir::new("pull-tts");
    let store = Store::new(t.path().join("models"));
    let twin = "kyutai/pocket-tts-without-voice-cloning";
    // The public twin alone: its English folder, flattened; no root metadata, no other file.
    let path = hub.client(None).pull(&store, twin, &opts()).unwrap();
    let dir = store.root().join(twin);
    assert_eq!(path, dir.join("model.safetensors"));
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "embeddings/alba.safetensors",
        "embeddings/marius.safetensors",
    ] {
        let remote = format!("languages/english_2026-09/{f}");
        assert_eq!(
            fs::read(dir.join(f)).unwrap(),
            hub.file(twin, &remote),
            "{f}"
        );
    }
    assert!(!dir.join("config.json").exists());
    assert!(!dir.join("embeddings/notes.txt").exists());

    // The gated repository: its weights, the twin's tokenizer and voices.
    let path = hub
        .client(None)
        .pull(&store, "kyutai/pocket-tts", &opts())
        .unwrap();
    let dir = store.root().join("kyutai/pocket-tts");
    assert_eq!(path, dir.join("model.safetensors"));
    assert_eq!(
        fs::read(&path).unwrap(),
        hub.file(
            "kyutai/pocket-tts",
            "languages/english_2026-09/model.safetensors"
        )
    );
    for f in ["tokenizer.json", "embeddings/alba.safetensors"] {
        let remote = format!("languages/english_2026-09/{f}");
        assert_eq!(
            fs::read(dir.join(f)).unwrap(),
            hub.file(twin, &remote),
            "{f}"
        );
    }

    // Another language by name; one the twin lacks a tokenizer for, or none at all: clear errors.
    let french = PullOptions {
        file: Some("french".into()),
        ..opts()
    };
    let t2 = TempDir::new("pull-tts-fr");
    let store2 = Store::new(t2.path().join("models"));
    let path = hub.client(None).pull(&store2, twin, &french).unwrap();
    assert_eq!(
        fs::read(path.with_file_name("tokenizer.json")).unwrap(),
        b"{}"
    );
    for (repo, file, want) in [
        (
            "kyutai/pocket-tts",
            Some("german"),
            "no language folder matches 'german'",
        ),
        ("kyutai/pocket-tts", Some("english_7m"), "tokenizer.json"),
        (twin, Some("e"), "several language folders"),
    ] {
        let o = PullOptions {
            file: file.map(str::to_string),
            ..opts()
        };
        let err = hub
            .client(None)
            .pull(&store2, repo, &o)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{repo} {file:?}: {err}");
    }
}

#[test]
fn pull_resumes_a_partial_download() {
    let hub = FakeHub::start();
    let t = TempDir::new("resume");
    let store = Store::new(t.path());
    let full = hub.file("acme/tiny-GGUF", "tiny-Q4_0.gguf");
    let dest = store.root().join("acme/tiny-GGUF/tiny-Q4_0.gguf");
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::write(part_path(&dest), &full[..100_000]).unwrap();
    let path = hub
        .client(None)
        .pull(&store, "acme/tiny-GGUF", &opts())
        .unwrap();
    assert_eq!(fs::read(&path).unwrap(), full);
    assert!(!part_path(&dest).exists());
    let seen = hub.seen();
    let dl = downloads(&seen);
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].range.as_deref(), Some("bytes=100000-"));

    // A complete `.part` is just renamed.
    fs::remove_file(&path).unwrap();
    fs::write(part_path(&dest), &full).unwrap();
    hub.clear();
    hub.client(None)
        .pull(&store, "acme/tiny-GGUF", &opts())
        .unwrap();
    assert_eq!(fs::read(&path).unwrap(), full);
    assert!(downloads(&hub.seen()).is_empty());
}

#[test]
fn pull_restarts_when_the_server_ignores_ranges() {
    let hub = FakeHub::start();
    let t = TempDir::new("norange");
    let store = Store::new(t.path());
    let full = hub.file("acme/norange", "n.gguf");
    let dest = store.root().join("acme/norange/n.gguf");
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::write(part_path(&dest), &full[..1000]).unwrap();
    let path = hub
        .client(None)
        .pull(&store, "acme/norange", &opts())
        .unwrap();
    assert_eq!(fs::read(path).unwrap(), full);
}

#[test]
fn interrupted_download_keeps_the_part_and_resumes() {
    let hub = FakeHub::start();
    let t = TempDir::new("flaky");
    let store = Store::new(t.path());
    hub.state
        .lock()
        .unwrap()
        .break_next
        .push("/cdn/acme/flaky/f.gguf".into());
    let e = hub
        .client(None)
        .pull(&store, "acme/flaky", &opts())
        .unwrap_err();
    assert!(
        matches!(
            e,
            HubError::Interrupted { .. } | HubError::Incomplete { .. }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("run the same command again to resume"),
        "{e}"
    );
    let dest = store.root().join("acme/flaky/f.gguf");
    assert!(!dest.exists());
    let kept = fs::metadata(part_path(&dest)).unwrap().len();
    assert!(kept > 0 && kept < 200_000, "{kept}");

    hub.clear();
    let path = hub
        .client(None)
        .pull(&store, "acme/flaky", &opts())
        .unwrap();
    assert_eq!(fs::read(path).unwrap(), hub.file("acme/flaky", "f.gguf"));
    let seen = hub.seen();
    assert_eq!(
        downloads(&seen)[0].range.as_deref(),
        Some(format!("bytes={kept}-").as_str())
    );
}

#[test]
fn force_downloads_again() {
    let hub = FakeHub::start();
    let t = TempDir::new("force");
    let store = Store::new(t.path());
    let path = hub
        .client(None)
        .pull(&store, "acme/tiny-GGUF", &opts())
        .unwrap();
    let full = fs::read(&path).unwrap();
    // Same size, different bytes: a plain rerun keeps it, --force replaces it.
    fs::write(&path, vec![0u8; full.len()]).unwrap();
    fs::write(part_path(&path), b"stale").unwrap();
    hub.client(None)
        .pull(&store, "acme/tiny-GGUF", &opts())
        .unwrap();
    assert_ne!(fs::read(&path).unwrap(), full);
    hub.clear();
    let force = PullOptions {
        force: true,
        ..opts()
    };
    hub.client(None)
        .pull(&store, "acme/tiny-GGUF", &force)
        .unwrap();
    assert_eq!(fs::read(&path).unwrap(), full);
    let seen = hub.seen();
    let dl = downloads(&seen);
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].range, None);
    // The metadata files were fetched again, too.
    assert!(seen.iter().any(|s| s.path.ends_with("/config.json")));
    assert!(!part_path(&path).exists());
}

#[test]
fn file_selection() {
    let hub = FakeHub::start();
    let t = TempDir::new("file");
    let store = Store::new(t.path());
    let c = hub.client(None);
    let e = c.pull(&store, "acme/multi-GGUF", &opts()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, HubError::Ambiguous { .. }), "{e:?}");
    assert!(msg.contains("--file"), "{msg}");
    assert!(
        msg.contains("m-Q4_K_M.gguf") && msg.contains("m-Q8_0.gguf"),
        "{msg}"
    );
    assert!(
        msg.contains("big/m-F16-00001-of-00002.gguf (2 parts)"),
        "{msg}"
    );
    assert!(!msg.contains("mmproj"), "{msg}");

    let with = |f: &str| PullOptions {
        file: Some(f.to_string()),
        ..opts()
    };
    let p = c
        .pull(&store, "acme/multi-GGUF", &with("m-Q8_0.gguf"))
        .unwrap();
    assert_eq!(
        fs::read(&p).unwrap(),
        hub.file("acme/multi-GGUF", "m-Q8_0.gguf")
    );
    // A quantization tag matching one file.
    let p = c.pull(&store, "acme/multi-GGUF", &with("q4_k_m")).unwrap();
    assert!(p.ends_with("m-Q4_K_M.gguf"));
    // A split set: every part, stored flat.
    let p = c.pull(&store, "acme/multi-GGUF", &with("F16")).unwrap();
    let dir = store.root().join("acme/multi-GGUF");
    assert_eq!(p, dir.join("m-F16-00001-of-00002.gguf"));
    assert_eq!(
        fs::read(dir.join("m-F16-00002-of-00002.gguf")).unwrap(),
        hub.file("acme/multi-GGUF", "big/m-F16-00002-of-00002.gguf")
    );
    // With several models in one directory, a file picks one.
    let r = store.resolve_cli("acme/multi-GGUF/m-Q8_0.gguf").unwrap();
    assert_eq!(r.id, "acme/multi-GGUF/m-Q8_0");

    let e = c
        .pull(&store, "acme/multi-GGUF", &with("nope.gguf"))
        .unwrap_err();
    assert!(matches!(e, HubError::FileNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("m-Q8_0.gguf"), "{e}");
    let e = c.pull(&store, "acme/multi-GGUF", &with("Q")).unwrap_err();
    assert!(matches!(e, HubError::Ambiguous { .. }), "{e:?}");

    let e = c.pull(&store, "acme/none", &opts()).unwrap_err();
    assert!(matches!(e, HubError::NoGguf { .. }), "{e:?}");
}

#[test]
fn revisions() {
    let hub = FakeHub::start();
    let t = TempDir::new("rev");
    let store = Store::new(t.path());
    let v1 = PullOptions {
        revision: Some("v1".into()),
        ..opts()
    };
    hub.client(None)
        .pull(&store, "acme/tiny-GGUF", &v1)
        .unwrap();
    let seen = hub.seen();
    assert!(seen
        .iter()
        .any(|s| s.path == "/api/models/acme/tiny-GGUF/revision/v1"));
    assert!(seen
        .iter()
        .any(|s| s.path == "/acme/tiny-GGUF/resolve/v1/tiny-Q4_0.gguf"));
    let bad = PullOptions {
        revision: Some("nope".into()),
        ..opts()
    };
    let e = hub
        .client(None)
        .pull(&store, "acme/tiny-GGUF", &bad)
        .unwrap_err();
    assert!(matches!(e, HubError::RevisionNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("no revision 'nope'"), "{e}");
}

#[test]
fn gated_private_and_missing_repositories() {
    let hub = FakeHub::start();
    let t = TempDir::new("gated");
    let store = Store::new(t.path());
    let e = hub
        .client(None)
        .pull(&store, "acme/gated", &opts())
        .unwrap_err();
    assert!(matches!(e, HubError::Gated { status: 401, .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("accept") || msg.contains("Accept"), "{msg}");
    assert!(msg.contains("HF_TOKEN"), "{msg}");
    assert!(
        msg.contains(&format!("{}/acme/gated", hub.endpoint())),
        "{msg}"
    );

    let e = hub
        .client(Some("wrong"))
        .pull(&store, "acme/gated", &opts())
        .unwrap_err();
    assert!(
        matches!(
            e,
            HubError::Gated {
                status: 403,
                token_sent: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("not accepted"), "{e}");

    let p = hub
        .client(Some("good-token"))
        .pull(&store, "acme/gated", &opts())
        .unwrap();
    assert_eq!(fs::read(p).unwrap(), hub.file("acme/gated", "g.gguf"));
    // The token went along on the resolve request and on the same-host redirect.
    assert!(downloads(&hub.seen())
        .iter()
        .all(|s| s.auth.as_deref() == Some("Bearer good-token")));

    let e = hub
        .client(None)
        .pull(&store, "acme/nothing", &opts())
        .unwrap_err();
    assert!(matches!(e, HubError::NotFound { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("model 'acme/nothing' not found on the Hub"),
        "{e}"
    );

    let e = hub
        .client(None)
        .pull(&store, "acme/private", &opts())
        .unwrap_err();
    assert!(
        matches!(
            e,
            HubError::NotFound {
                token_sent: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("HF_TOKEN"), "{e}");
    // Nothing is left behind for failed pulls.
    assert!(!store.root().join("acme/nothing").exists());
}

#[test]
fn unreachable_hub() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let hub = Hub::new(&endpoint, None).unwrap();
    let t = TempDir::new("unreach");
    let e = hub
        .pull(&Store::new(t.path()), "acme/tiny-GGUF", &opts())
        .unwrap_err();
    assert!(matches!(e, HubError::Unreachable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("the Hub could not be reached at {endpoint}")),
        "{e}"
    );
    let e = hub.search("x", 3).unwrap_err();
    assert!(matches!(e, HubError::Unreachable { .. }), "{e:?}");
}

#[test]
fn search_models() {
    let hub = FakeHub::start();
    let found = hub.client(None).search("GGUF", 5).unwrap();
    assert_eq!(
        found.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["acme/multi-GGUF", "acme/tiny-GGUF"]
    );
    assert_eq!((found[0].downloads, found[0].likes), (1000, 0));
    let seen = hub.seen();
    let q = &seen.last().unwrap().query;
    assert!(
        q.contains("search=GGUF") && q.contains("filter=gguf") && q.contains("limit=5"),
        "{q}"
    );
    let found = hub.client(None).search("", 2).unwrap();
    assert_eq!(found.len(), 2);
    assert!(!hub.seen().last().unwrap().query.contains("search="));
}

#[test]
fn invalid_inputs_fail_before_any_request() {
    let hub = FakeHub::start();
    let t = TempDir::new("invalid");
    let store = Store::new(t.path());
    for bad in ["../x", "a/b/c", "noslash", "a/..", "a/b c", ""] {
        let e = hub.client(None).pull(&store, bad, &opts()).unwrap_err();
        assert!(matches!(e, HubError::InvalidRepo(_)), "{bad}: {e:?}");
    }
    assert!(hub.seen().is_empty());
    assert!(matches!(
        Hub::new("ftp://example", None),
        Err(HubError::BadEndpoint(_))
    ));
    assert_eq!(
        Hub::new("http://127.0.0.1:1/", None).unwrap().endpoint(),
        "http://127.0.0.1:1"
    );
}

#[test]
fn token_sources() {
    let t = TempDir::new("token");
    let cache = hf_hub::Cache::new(t.path().join("hub"));
    assert_eq!(token_from(None, &cache), None);
    fs::write(t.path().join("token"), "hf_file_token\n").unwrap();
    assert_eq!(token_from(None, &cache).as_deref(), Some("hf_file_token"));
    assert_eq!(
        token_from(Some("  ".into()), &cache).as_deref(),
        Some("hf_file_token")
    );
    assert_eq!(
        token_from(Some("hf_env".into()), &cache).as_deref(),
        Some("hf_env")
    );
}

#[test]
fn helpers() {
    assert_eq!(human_size(0), "0 B");
    assert_eq!(human_size(1536), "1.5 KiB");
    assert_eq!(human_size(3 * 1024 * 1024 * 1024), "3.0 GiB");
    assert_eq!(human_size(500 * 1024 * 1024), "500 MiB");
    assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
    assert_eq!(encode_segment("a b+c.gguf"), "a%20b%2Bc.gguf");
    assert_eq!(local_name("sub/dir/x.gguf"), Some("x.gguf"));
    assert_eq!(local_name("../.."), None);
    assert_eq!(local_name("dir/"), None);
    assert_eq!(local_name(".hidden"), None);
}

#[test]
fn one_pull_per_directory_at_a_time() {
    let hub = FakeHub::start();
    let t = TempDir::new("busy");
    let store = Store::new(t.path());
    let dir = store.root().join("acme/tiny-GGUF");
    fs::create_dir_all(&dir).unwrap();
    let held = fs::File::create(dir.join(LOCK_FILE)).unwrap();
    held.lock().unwrap();
    let e = hub
        .client(None)
        .pull(&store, "acme/tiny-GGUF", &opts())
        .unwrap_err();
    assert!(matches!(e, HubError::Busy { .. }), "{e:?}");
    drop(held);
    hub.client(None)
        .pull(&store, "acme/tiny-GGUF", &opts())
        .unwrap();
    // The lock file is hidden from the store.
    assert_eq!(store.list().unwrap().len(), 1);
}
