//! The search harness end to end: `trillim serve` with SmolLM2 and stand-in search providers
//! and web pages on 127.0.0.1 speaking the real wire formats (DuckDuckGo's HTML result page
//! with `uddg` links and its 202 rate-limit answer, Brave's JSON and its 401), pages with
//! redirects, redirects to private addresses, gzip, huge, slow and non-UTF-8 bodies. A canary
//! listener on 127.0.0.2 (not allowlisted) proves no forbidden address is ever connected to.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, read_head, Client};
use serde_json::{json, Value};

/// A request a stand-in received.
#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Req {
    fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// What a stand-in answers.
enum Reply {
    Full(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// Headers promising a long body, then a byte every 50 ms (for at most 20 s).
    Trickle,
    /// A 20 MB body.
    Huge,
}

fn html(status: u16, body: &str) -> Reply {
    Reply::Full(
        status,
        vec![("Content-Type", "text/html; charset=utf-8".into())],
        body.as_bytes().to_vec(),
    )
}

fn redirect(to: String) -> Reply {
    Reply::Full(302, vec![("Location", to)], Vec::new())
}

type Handler = dyn Fn(&Req) -> Reply + Send + Sync;

/// An HTTP/1.1 server on `ip` answering with `handler`, recording every request.
struct StandIn {
    port: u16,
    log: Arc<Mutex<Vec<Req>>>,
    connections: Arc<AtomicUsize>,
}

impl StandIn {
    fn start(ip: &str, handler: Arc<Handler>) -> StandIn {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (l, c) = (log.clone(), connections.clone());
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (l, h) = (l.clone(), handler.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(s, &l, &*h);
                });
            }
        });
        StandIn {
            port,
            log,
            connections,
        }
    }

    fn requests(&self, path: &str) -> Vec<Req> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .cloned()
            .collect()
    }
}

fn serve_one(s: TcpStream, log: &Mutex<Vec<Req>>, handler: &Handler) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len.min(1 << 20)];
    r.read_exact(&mut body)?;
    let req = Req {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    log.lock().unwrap().push(req.clone());
    let mut w = s;
    match handler(&req) {
        Reply::Full(status, hdrs, body) => {
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in hdrs {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            w.write_all(head.as_bytes())?;
            w.write_all(&body)?;
        }
        Reply::Trickle => {
            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n<html><body><p>")?;
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(20) {
                w.write_all(b"s")?;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Reply::Huge => {
            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 20000000\r\nConnection: close\r\n\r\n<html><body>")?;
            let chunk = "<p>HUGEMARK filler text about nothing in particular.</p>\n".repeat(1000);
            let mut sent = 0;
            while sent < 20_000_000 {
                w.write_all(chunk.as_bytes())?;
                sent += chunk.len();
            }
        }
    }
    w.flush()
}

fn article(marker: &str, topic: &str) -> String {
    let p = format!(
        "{topic} has a long history that historians have written about for centuries, and \
         the city's museums, bridges and markets still draw visitors from every continent."
    );
    format!(
        "<!doctype html><html><head><title>{topic} guide</title><script>var tracker = 1;</script></head>\
         <body><nav><a href=/>Home</a> <a href=/news>News</a> <a href=/sport>Sport</a></nav>\
         <article><h1>{topic}</h1><p>{marker}: {p}</p><p>{p}</p><p>{p}</p></article>\
         <footer>Copyright Example Media. All rights reserved.</footer></body></html>"
    )
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A DuckDuckGo HTML result page linking to `urls` through `uddg` redirects, after an ad.
fn ddg_page(urls: &[String]) -> String {
    let mut s = String::from(
        r#"<!DOCTYPE html><html><body><div id="links" class="results">
<div class="result results_links results_links_deep result--ad"><div class="links_main links_deep result__body">
<h2 class="result__title"><a rel="nofollow" class="result__a" href="https://duckduckgo.com/y.js?ad_domain=ads.example">Sponsored</a></h2>
<a class="result__snippet" href="https://duckduckgo.com/y.js?x=1">Buy things</a></div></div>
"#,
    );
    for (i, u) in urls.iter().enumerate() {
        let enc: String = url_encode(u);
        s.push_str(&format!(
            r#"<div class="result results_links results_links_deep web-result "><div class="links_main links_deep result__body">
<h2 class="result__title"><a rel="nofollow" class="result__a" href="//duckduckgo.com/l/?uddg={enc}&amp;rut=r{i}">Result {i} about Paris</a></h2>
<div class="result__extras"><div class="result__extras__url"><a class="result__url" href="//duckduckgo.com/l/?uddg={enc}">{u}</a></div></div>
<a class="result__snippet" href="//duckduckgo.com/l/?uddg={enc}">SNIPPET{i} Paris is the capital of France.</a>
</div></div>
"#
        ));
    }
    s.push_str("</div></body></html>");
    s
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The canary (127.0.0.2, never allowlisted), the pages and the providers.
struct World {
    canary: StandIn,
    web: StandIn,
    rate_limited: Arc<AtomicBool>,
    brave_denied: Arc<AtomicBool>,
    ddg_stalls: Arc<AtomicBool>,
}

impl World {
    /// `pages`: the paths DuckDuckGo's results link to on the page server (absolute URLs
    /// are used as they are; `{canary}` is replaced by the canary's address).
    fn start(pages: &[&str]) -> World {
        let canary = StandIn::start(
            "127.0.0.2",
            Arc::new(|_: &Req| html(200, "<p>CANARY secret</p>")),
        );
        let canary_base = format!("http://127.0.0.2:{}", canary.port);
        let rate_limited = Arc::new(AtomicBool::new(false));
        let brave_denied = Arc::new(AtomicBool::new(false));
        let ddg_stalls = Arc::new(AtomicBool::new(false));
        let stalls = ddg_stalls.clone();
        let port = Arc::new(AtomicUsize::new(0));
        let (rl, bd, p2, cb) = (
            rate_limited.clone(),
            brave_denied.clone(),
            port.clone(),
            canary_base.clone(),
        );
        let pages: Vec<String> = pages
            .iter()
            .map(|p| p.replace("{canary}", &canary_base))
            .collect();
        let handler = move |r: &Req| -> Reply {
            let base = format!("http://127.0.0.1:{}", p2.load(Ordering::SeqCst));
            let path = r.path.split('?').next().unwrap_or("");
            match path {
                "/html/" => {
                    if stalls.load(Ordering::SeqCst) {
                        return Reply::Trickle;
                    }
                    if rl.load(Ordering::SeqCst) {
                        return html(202, "<html><body>rate limited</body></html>");
                    }
                    let urls: Vec<String> = pages
                        .iter()
                        .map(|p| {
                            if p.starts_with("http") {
                                p.clone()
                            } else {
                                format!("{base}{p}")
                            }
                        })
                        .collect();
                    html(200, &ddg_page(&urls))
                }
                "/res/v1/web/search" => {
                    if bd.load(Ordering::SeqCst)
                        || r.header("x-subscription-token") != Some("good-key")
                    {
                        return Reply::Full(401, vec![("Content-Type", "application/json".into())],
                            br#"{"type":"ErrorResponse","error":{"code":"SUBSCRIPTION_TOKEN_INVALID","status":401}}"#.to_vec());
                    }
                    let v = json!({"type": "search", "query": {"original": "q"}, "web": {"type": "search", "results": [
                        {"title": "Brave <strong>Paris</strong> result", "url": format!("{base}/article"),
                         "description": "BRAVESNIPPET Paris is <strong>the capital</strong>.", "language": "en"}
                    ]}});
                    // Brave compresses its answers for clients that accept gzip.
                    assert_eq!(r.header("accept-encoding"), Some("gzip"));
                    Reply::Full(
                        200,
                        vec![
                            ("Content-Type", "application/json".into()),
                            ("Content-Encoding", "gzip".into()),
                        ],
                        gzip(v.to_string().as_bytes()),
                    )
                }
                "/article" => html(200, &article("ARTICLEMARK", "Paris")),
                "/redirect" => redirect("/moved".into()),
                "/moved" => html(200, &article("MOVEDMARK", "Lyon")),
                "/to-private" => redirect(format!("{cb}/secret")),
                "/to-localhost" => {
                    redirect(format!("http://localhost:{}/", p2.load(Ordering::SeqCst)))
                }
                "/to-metadata" => redirect("http://169.254.169.254/latest/meta-data/".into()),
                "/loop" => redirect("/loop".into()),
                "/gzip" => Reply::Full(
                    200,
                    vec![
                        ("Content-Type", "text/html".into()),
                        ("Content-Encoding", "gzip".into()),
                    ],
                    gzip(article("GZIPMARK", "Marseille").as_bytes()),
                ),
                "/bad-gzip" => Reply::Full(
                    200,
                    vec![
                        ("Content-Type", "text/html".into()),
                        ("Content-Encoding", "gzip".into()),
                    ],
                    b"\x1f\x8b\x08\x00garbage".to_vec(),
                ),
                "/latin1" => {
                    let mut b = b"<html><head><title>Caf\xe9</title></head><body><p>LATINMARK caf\xe9 cr\xe8me ".to_vec();
                    b.extend_from_slice(b"\x93quoted\x94</p></body></html>");
                    Reply::Full(
                        200,
                        vec![("Content-Type", "text/html; charset=windows-1252".into())],
                        b,
                    )
                }
                "/huge" => Reply::Huge,
                "/slow" => Reply::Trickle,
                "/plain" => Reply::Full(
                    200,
                    vec![("Content-Type", "text/plain".into())],
                    b"PLAINMARK line one\nline two".to_vec(),
                ),
                "/image" => Reply::Full(
                    200,
                    vec![("Content-Type", "image/png".into())],
                    vec![0x89, b'P', b'N', b'G'],
                ),
                _ => html(404, "not found"),
            }
        };
        let web = StandIn::start("127.0.0.1", Arc::new(handler));
        port.store(web.port as usize, Ordering::SeqCst);
        World {
            canary,
            web,
            rate_limited,
            brave_denied,
            ddg_stalls,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let base = format!("http://127.0.0.1:{}", self.web.port);
        let canary = format!("http://127.0.0.2:{}", self.canary.port);
        vec![
            ("TRILLIM_DDG_URL", base.clone()),
            ("TRILLIM_BRAVE_URL", base),
            ("TRILLIM_SEARCH_ALLOW_HOSTS", "127.0.0.1".into()),
            ("SEARCH_API_KEY", "good-key".into()),
            // Proxies would connect where the guard cannot see: they must be ignored, and the
            // canary proves it.
            ("HTTP_PROXY", canary.clone()),
            ("HTTPS_PROXY", canary.clone()),
            ("ALL_PROXY", canary.clone()),
            ("http_proxy", canary.clone()),
            ("https_proxy", canary.clone()),
            ("all_proxy", canary),
        ]
    }
}

/// A server process on SmolLM2 with `world`'s providers; killed on drop.
struct Server {
    child: std::process::Child,
    client: Client,
    home: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn start_server(tag: &str, world: &World, extra: &[&str]) -> Server {
    let home = std::env::temp_dir().join(format!("trillim-search-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let dir = home.join("models/org/smol");
    std::fs::create_dir_all(&dir).unwrap();
    let model = trillim_tests::smollm2_path();
    let dest = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if std::fs::hard_link(&model, &dest).is_err() {
        std::fs::copy(&model, &dest).unwrap();
    }
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_trillim"))
        .args([
            "serve",
            "org/smol",
            "--port",
            &port.to_string(),
            "--threads",
            "2",
            "--ctx",
            "2048",
        ])
        .args(extra)
        .envs(world.env())
        .env("TRILLIM_HOME", &home)
        .env("TRILLIM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start trillim");
    let s = Server {
        child,
        client: Client { port },
        home,
    };
    let t0 = Instant::now();
    while !matches!(
        s.client.try_request("GET", "/health", None, &[]),
        Ok((200, _, _))
    ) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "server did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

/// A conversation that makes SmolLM2 answer with a search (two examples before the question).
fn few_shot(extra: Value) -> Value {
    let mut b = json!({"messages": [
        {"role": "system", "content": "You answer every question with a web search written as <search>query</search>."},
        {"role": "user", "content": "Who won the 2022 World Cup?"},
        {"role": "assistant", "content": "<search>2022 World Cup winner</search>"},
        {"role": "user", "content": "How tall is Mount Everest?"},
        {"role": "assistant", "content": "<search>Mount Everest height</search>"},
        {"role": "user", "content": "What is the capital of France?"}
    ], "temperature": 0, "max_tokens": 48});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// Streams a chat completion; returns the content deltas and whether `[DONE]` came.
fn stream(c: &Client, body: &Value) -> (Vec<String>, bool) {
    let mut b = body.clone();
    b["stream"] = json!(true);
    let s = c
        .send(
            "POST",
            "/v1/chat/completions",
            Some(b.to_string().as_bytes()),
            &[],
        )
        .unwrap();
    let mut r = BufReader::new(s);
    let (status, _) = read_head(&mut r).unwrap();
    assert_eq!(status, 200);
    let mut raw = Vec::new();
    r.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&common::dechunk(&raw)).into_owned();
    let mut deltas = Vec::new();
    let mut done = false;
    for line in text.lines() {
        let Some(d) = line.strip_prefix("data: ") else {
            continue;
        };
        if d == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(d).unwrap();
        assert!(v.get("error").is_none(), "{v}");
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            if !t.is_empty() {
                deltas.push(t.to_string());
            }
        }
    }
    (deltas, done)
}

fn load(c: &Client, v: Value) -> (u16, Value) {
    let mut b = json!({"model_dir": "org/smol"});
    for (k, x) in v.as_object().unwrap() {
        b[k] = x.clone();
    }
    c.post("/v1/models/load", &b)
}

#[test]
fn search_harness_through_chat_completions() {
    let world = World::start(&[
        "/article",
        "/redirect",
        "/to-private",
        "{canary}/direct",
        "/to-metadata",
    ]);
    let srv = start_server("chat", &world, &[]);
    let c = &srv.client;
    let ddg = || world.web.requests("/html/").len();

    // The default harness: the tag is just text and nothing is searched.
    let (st, v) = c.post("/v1/chat/completions", &few_shot(json!({})));
    assert_eq!(st, 200, "{v}");
    let plain = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        plain.contains("<search>"),
        "the fixture conversation makes the model search: {plain}"
    );
    let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(ddg(), 0);

    // Bad harness settings are refused and change nothing.
    let (st, v) = load(c, json!({"harness": "bogus"}));
    common::assert_error(&v, st, 400);
    assert_eq!(v["error"]["param"], "harness");
    let (st, v) = load(c, json!({"harness": "search", "search_provider": "bing"}));
    common::assert_error(&v, st, 400);
    assert_eq!(v["error"]["param"], "search_provider");
    let (st, _) = c.post("/v1/chat/completions", &few_shot(json!({})));
    assert_eq!((st, ddg()), (200, 0));

    let (st, v) = load(c, json!({"harness": "search", "search_provider": "ddgs"}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "success");

    // Streamed with markers: the search is announced on its own line, then the answer.
    let (deltas, done) = stream(c, &few_shot(json!({"search_markers": true})));
    assert!(done, "{deltas:?}");
    assert!(
        deltas[0].starts_with("[Searching: ") && deltas[0].ends_with("]\n"),
        "{deltas:?}"
    );
    assert!(
        deltas.contains(&"[Synthesizing...]\n".to_string()),
        "{deltas:?}"
    );
    let searches = ddg();
    assert!((1..=2).contains(&searches), "{searches} searches");
    let form = &world.web.requests("/html/")[0];
    assert_eq!(form.method, "POST");
    assert!(
        form.body.starts_with("q=")
            && form.header("content-type") == Some("application/x-www-form-urlencoded"),
        "{form:?}"
    );
    // Result pages were fetched, redirects followed by hand.
    assert!(!world.web.requests("/article").is_empty());
    assert!(!world.web.requests("/moved").is_empty());
    assert!(!world.web.requests("/to-private").is_empty());

    // Whole answers carry no markers; usage counts the request's prompt and the last turn.
    let before = ddg();
    let (st, v) = c.post("/v1/chat/completions", &few_shot(json!({})));
    assert_eq!(st, 200, "{v}");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.contains("[Searching"), "{content}");
    assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(prompt_tokens));
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 48);
    assert!(ddg() > before);

    // Markers are opt-in: a plain stream shows only the answer.
    let (deltas, done) = stream(c, &few_shot(json!({})));
    assert!(done);
    assert!(
        deltas.iter().all(|d| !d.starts_with("[Searching")),
        "{deltas:?}"
    );
    // A load may make markers the default; a request's own value still wins.
    let (st, v) = load(c, json!({"search_markers": true}));
    assert_eq!(st, 200, "{v}");
    let (deltas, _) = stream(c, &few_shot(json!({})));
    assert!(deltas[0].starts_with("[Searching: "), "{deltas:?}");
    let (deltas, _) = stream(c, &few_shot(json!({"search_markers": false})));
    assert!(
        deltas.iter().all(|d| !d.starts_with("[Searching")),
        "{deltas:?}"
    );
    let (st, v) = load(c, json!({"search_markers": false}));
    assert_eq!(st, 200, "{v}");
    let (st, v) = c.post(
        "/v1/chat/completions",
        &few_shot(json!({"search_markers": "yes"})),
    );
    common::assert_error(&v, st, 400);
    let (st, v) = c.post("/v1/chat/completions", &few_shot(json!({"n": 2})));
    common::assert_error(&v, st, 400);
    let (st, v) = c.post(
        "/v1/chat/completions",
        &few_shot(json!({"response_format": {"type": "json_object"}})),
    );
    common::assert_error(&v, st, 400);
    assert_eq!(v["error"]["param"], "response_format", "{v}");

    // A rate-limited DuckDuckGo (HTTP 202) degrades to an answer from memory.
    world.rate_limited.store(true, Ordering::SeqCst);
    let before = ddg();
    let (deltas, done) = stream(c, &few_shot(json!({"search_markers": true})));
    assert!(done, "{deltas:?}");
    assert!(
        deltas.contains(&"[Search unavailable]\n".to_string()),
        "{deltas:?}"
    );
    assert!(
        !deltas.contains(&"[Synthesizing...]\n".to_string()),
        "{deltas:?}"
    );
    assert_eq!(ddg(), before + 1, "no second search after a failed one");
    world.rate_limited.store(false, Ordering::SeqCst);

    // /v1/completions never goes through the harness.
    let before = ddg();
    let (st, v) = c.post(
        "/v1/completions",
        &json!({"prompt": "<search>capital of France</search>", "max_tokens": 8}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(ddg(), before);

    // Brave: the key is sent; a refused key degrades like any provider failure.
    let (st, v) = load(c, json!({"search_provider": "brave"}));
    assert_eq!(st, 200, "{v}");
    let (deltas, done) = stream(c, &few_shot(json!({"search_markers": true})));
    assert!(
        done && deltas.contains(&"[Synthesizing...]\n".to_string()),
        "{deltas:?}"
    );
    let brave = world.web.requests("/res/v1/web/search");
    assert!(!brave.is_empty());
    assert_eq!(brave[0].header("x-subscription-token"), Some("good-key"));
    assert_eq!(brave[0].header("accept"), Some("application/json"));
    assert!(brave[0].path.contains("q="), "{:?}", brave[0]);
    world.brave_denied.store(true, Ordering::SeqCst);
    let (deltas, done) = stream(c, &few_shot(json!({"search_markers": true})));
    assert!(
        done && deltas.contains(&"[Search unavailable]\n".to_string()),
        "{deltas:?}"
    );

    // Back to the default harness: no searches.
    let (st, _) = load(c, json!({"harness": "default"}));
    assert_eq!(st, 200);
    let before = world.web.log.lock().unwrap().len();
    let (st, _) = c.post("/v1/chat/completions", &few_shot(json!({})));
    assert_eq!(st, 200);
    assert_eq!(world.web.log.lock().unwrap().len(), before);

    assert_eq!(
        world.canary.connections.load(Ordering::SeqCst),
        0,
        "a forbidden address was connected to"
    );
}

/// `trillim search --json` with the stand-ins: what each kind of page becomes.
fn search_json(world: &World, args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trillim"))
        .args([
            "search",
            "capital of France",
            "--json",
            "--max-results",
            "20",
        ])
        .args(if args.contains(&"--budget") {
            &[][..]
        } else {
            &["--budget", "8000"][..]
        })
        .args(args)
        .envs(world.env())
        .env("TRILLIM_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.success(), v, stderr)
}

#[test]
fn pages_are_fetched_safely_and_decoded() {
    let world = World::start(&[
        "/article",
        "/redirect",
        "/to-private",
        "/to-localhost",
        "/to-metadata",
        "{canary}/direct",
        "http://localhost:1/",
        "http://[::1]:1/",
        "http://2130706434:1/",
        "http://0x7f.0.0.3:1/",
        "/loop",
        "/gzip",
        "/bad-gzip",
        "/latin1",
        "/huge",
        "/slow",
        "/plain",
        "/image",
    ]);
    let (ok, v, err) = search_json(&world, &[]);
    assert!(ok, "{err}");
    let results = v["results"].as_array().unwrap();
    let by = |suffix: &str| {
        results
            .iter()
            .find(|r| r["url"].as_str().unwrap().ends_with(suffix))
            .unwrap_or_else(|| panic!("no result {suffix}: {v}"))
    };
    let content = v["content"].as_str().unwrap();
    for (page, fetched) in [
        ("/article", true),
        ("/redirect", true),
        ("/gzip", true),
        ("/latin1", true),
        ("/huge", true),
        ("/plain", true),
        ("/to-private", false),
        ("/to-localhost", false),
        ("/to-metadata", false),
        ("/direct", false),
        ("/loop", false),
        ("/bad-gzip", false),
        ("/slow", false),
        ("/image", false),
    ] {
        assert_eq!(by(page)["fetched"], fetched, "{page}: {}", by(page));
    }
    for refused in ["/to-private", "/to-localhost", "/to-metadata", "/direct"] {
        let e = by(refused)["fetch_error"].as_str().unwrap();
        assert!(e.starts_with("refused"), "{refused}: {e}");
    }
    for literal in [
        "http://localhost:1/",
        "http://[::1]:1/",
        "http://127.0.0.2:1/",
        "http://127.0.0.3:1/",
    ] {
        let r = results
            .iter()
            .find(|r| r["url"] == literal)
            .unwrap_or_else(|| panic!("{literal}: {v}"));
        assert!(
            r["fetch_error"].as_str().unwrap().starts_with("refused"),
            "{r}"
        );
    }
    assert!(by("/loop")["fetch_error"]
        .as_str()
        .unwrap()
        .contains("redirects"));
    assert!(by("/huge")["page_chars"].as_u64().unwrap() <= 200_000);
    for mark in [
        "ARTICLEMARK",
        "MOVEDMARK",
        "GZIPMARK",
        "LATINMARK café crème “quoted”",
        "HUGEMARK",
        "PLAINMARK",
    ] {
        assert!(content.contains(mark), "{mark} missing from {content}");
    }
    // Failed pages fall back to their snippets; boilerplate is gone.
    assert!(content.contains("SNIPPET"), "{content}");
    assert!(
        !content.contains("Copyright Example Media") && !content.contains("tracker"),
        "{content}"
    );
    assert!(!content.contains("CANARY"));
    assert!(v["tokens"].as_u64().unwrap() <= 8000);
    assert_eq!(world.canary.connections.load(Ordering::SeqCst), 0);

    // A small budget is kept exactly.
    let (ok, v, err) = search_json(&world, &["--budget", "100", "--no-fetch"]);
    assert!(ok, "{err}");
    assert!(v["tokens"].as_u64().unwrap() <= 100, "{v}");
    assert!(
        v["content"]
            .as_str()
            .unwrap()
            .starts_with("[1] Result 0 about Paris\n"),
        "{v}"
    );

    // Provider failures are errors of the command, with the cause; a provider that stalls
    // mid-answer is given up on at its deadline.
    world.ddg_stalls.store(true, Ordering::SeqCst);
    let (ok, _, err) = search_json(&world, &[]);
    assert!(
        !ok && err.contains("DuckDuckGo answered unreadably"),
        "{err}"
    );
    world.ddg_stalls.store(false, Ordering::SeqCst);
    world.rate_limited.store(true, Ordering::SeqCst);
    let (ok, _, err) = search_json(&world, &[]);
    assert!(!ok && err.contains("rate-limiting"), "{err}");
    let (ok, v, err) = search_json(&world, &["--provider", "brave", "--no-fetch"]);
    assert!(ok, "{err}");
    assert_eq!(
        v["content"],
        "[1] Brave Paris result\nBRAVESNIPPET Paris is the capital."
    );
    world.brave_denied.store(true, Ordering::SeqCst);
    let (ok, _, err) = search_json(&world, &["--provider", "brave"]);
    assert!(
        !ok && err.contains("Brave authentication failed. Check SEARCH_API_KEY."),
        "{err}"
    );
}
