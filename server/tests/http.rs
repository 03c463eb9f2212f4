//! End-to-end tests of `trillim serve`: the real binary on a loopback port, driven with raw
//! HTTP/1.1 over std sockets, against the tiny fixture models (random weights, real tokenizer).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/models")
        .join(name)
}

/// A server process with its own model store; killed on drop.
struct Server {
    child: Child,
    client: Client,
    home: PathBuf,
}

/// Talks HTTP/1.1 to a server's port.
#[derive(Clone, Copy)]
struct Client {
    port: u16,
}

impl std::ops::Deref for Server {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a server on `org/tiny` (the TQ2_0 fixture) with extra arguments.
fn start(tag: &str, extra: &[&str]) -> Server {
    let home = std::env::temp_dir().join(format!("trillim-http-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    for (dir, file) in [
        ("org/tiny", "tiny-bitnet-tq2_0.gguf"),
        ("org/other", "tiny-b158-i2_s.gguf"),
    ] {
        let d = home.join("models").join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(fixture(file), d.join(file)).unwrap();
    }
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_trillim"))
        .args([
            "serve",
            "org/tiny",
            "--port",
            &port.to_string(),
            "--threads",
            "1",
        ])
        .args(extra)
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
    loop {
        if let Ok((200, _, _)) = s.try_request("GET", "/health", None, &[]) {
            return s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "server did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

type Resp = (u16, Vec<(String, String)>, String);

impl Client {
    fn connect(&self) -> std::io::Result<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(s)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> std::io::Result<TcpStream> {
        let mut s = self.connect()?;
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        if let Some(b) = body {
            s.write_all(b)?;
        }
        Ok(s)
    }

    fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Resp> {
        let s = self.send(method, path, body, headers)?;
        let mut r = BufReader::new(s);
        let (status, hdrs) = read_head(&mut r)?;
        let mut body = Vec::new();
        r.read_to_end(&mut body)?;
        let chunked = hdrs
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked { dechunk(&body) } else { body };
        Ok((status, hdrs, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Starts a streamed chat completion and returns the stream once its `200` head arrived
    /// (the request has left the queue and is running).
    fn open_stream(&self, body: &Value) -> BufReader<TcpStream> {
        let a = self
            .send(
                "POST",
                "/v1/chat/completions",
                Some(body.to_string().as_bytes()),
                &[],
            )
            .unwrap();
        let mut r = BufReader::new(a);
        assert_eq!(read_head(&mut r).unwrap().0, 200);
        r
    }

    fn post(&self, path: &str, v: &Value) -> (u16, Value) {
        let (st, _, body) = self
            .try_request("POST", path, Some(v.to_string().as_bytes()), &[])
            .unwrap();
        (
            st,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut hdrs = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            hdrs.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((status, hdrs))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if n == 0 || b.len() < nl + 2 + n {
            break;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[(nl + 4 + n).min(b.len())..];
    }
    out
}

fn assert_error(v: &Value, status: u16, want: u16) {
    assert_eq!(status, want, "{v}");
    let e = &v["error"];
    assert!(e["message"].is_string() && e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
}

fn chat_body(extra: Value) -> Value {
    let mut b = json!({"model": "tiny", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 4});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

#[test]
fn routes_shapes_and_errors() {
    let s = start("shapes", &["--ctx", "128"]);
    let (st, _, body) = s.try_request("GET", "/v1/models", None, &[]).unwrap();
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["id"], "tiny");
    assert_eq!(v["data"][0]["object"], "model");

    // Chat, whole.
    let (st, v) = s.post(
        "/v1/chat/completions",
        &chat_body(json!({"temperature": 0, "logprobs": true, "top_logprobs": 2})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let c = &v["choices"][0];
    assert_eq!(c["message"]["role"], "assistant");
    assert!(["stop", "length"].contains(&c["finish_reason"].as_str().unwrap()));
    let u = &v["usage"];
    let (p, n) = (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    );
    assert!(p > 0 && n <= 4);
    assert_eq!(u["total_tokens"].as_u64().unwrap(), p + n);
    assert_eq!(
        u["cached_tokens"],
        u["prompt_tokens_details"]["cached_tokens"]
    );
    let lp = c["logprobs"]["content"].as_array().unwrap();
    assert_eq!(lp.len() as u64, n);
    if n > 0 {
        assert!(lp[0]["logprob"].as_f64().unwrap() <= 0.0);
        assert_eq!(lp[0]["top_logprobs"].as_array().unwrap().len(), 2);
    }

    // The same conversation again reuses the cached prompt.
    let (_, v2) = s.post(
        "/v1/chat/completions",
        &chat_body(json!({"temperature": 0})),
    );
    assert!(v2["usage"]["cached_tokens"].as_u64().unwrap() > 0, "{v2}");
    // Greedy is deterministic whether or not the prefix came from the cache.
    assert_eq!(
        v2["choices"][0]["message"]["content"],
        c["message"]["content"]
    );

    // Chat, streamed with usage.
    let (st, hdrs, body) = s
        .try_request(
            "POST",
            "/v1/chat/completions",
            Some(
                chat_body(json!({"stream": true, "stream_options": {"include_usage": true}}))
                    .to_string()
                    .as_bytes(),
            ),
            &[],
        )
        .unwrap();
    assert_eq!(st, 200);
    assert!(hdrs
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream")));
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert!(usage["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let fin = &chunks[chunks.len() - 2];
    assert!(fin["choices"][0]["finish_reason"].is_string());
    for c in &chunks[..chunks.len() - 2] {
        assert!(c["choices"][0]["finish_reason"].is_null());
        assert!(c["usage"].is_null());
    }
    // One content chunk per generated token between the role and finish chunks, plus at most
    // one for text still held back when generation ends.
    let (content, tokens) = (
        (chunks.len() - 3) as u64,
        usage["usage"]["completion_tokens"].as_u64().unwrap(),
    );
    assert!(
        content == tokens || content == tokens + 1,
        "{content} chunks, {tokens} tokens"
    );

    // Completions with echo + logprobs and max_tokens 0 score the prompt.
    let (st, v) = s.post(
        "/v1/completions",
        &json!({"prompt": "The quick brown fox", "max_tokens": 0, "echo": true, "logprobs": 1}),
    );
    assert_eq!(st, 200, "{v}");
    let c = &v["choices"][0];
    assert_eq!(c["text"], "The quick brown fox");
    assert_eq!(c["finish_reason"], "length");
    let lp = &c["logprobs"];
    let toks = lp["tokens"].as_array().unwrap();
    assert_eq!(
        toks.len() as u64,
        v["usage"]["prompt_tokens"].as_u64().unwrap()
    );
    assert!(lp["token_logprobs"][0].is_null() && lp["top_logprobs"][0].is_null());
    assert!(lp["token_logprobs"][1].as_f64().unwrap() < 0.0);
    assert_eq!(lp["text_offset"][0], 0);
    assert_eq!(
        toks.iter().map(|t| t.as_str().unwrap()).collect::<String>(),
        "The quick brown fox"
    );

    // Generation stops when prompt + completion fill the context (128 here).
    let (st, v) = s.post(
        "/v1/completions",
        &json!({"prompt": vec![100; 120], "temperature": 0}),
    );
    assert_eq!(st, 200, "{v}");
    if v["choices"][0]["finish_reason"] == "length" {
        assert_eq!(v["usage"]["completion_tokens"], 8, "{v}");
    }

    // Several prompts in one request: one choice each, usage summed.
    let (st, v) = s.post(
        "/v1/completions",
        &json!({"prompt": ["One", "Two three"], "max_tokens": 2}),
    );
    assert_eq!(st, 200, "{v}");
    let ch = v["choices"].as_array().unwrap();
    assert_eq!(
        (ch.len(), &ch[0]["index"], &ch[1]["index"]),
        (2, &json!(0), &json!(1))
    );
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 3);

    // Errors, all in the OpenAI shape.
    let (st, v) = s.post("/v1/chat/completions", &chat_body(json!({"n": 2})));
    assert_error(&v, st, 400);
    assert_eq!(v["error"]["param"], "n");
    let (st, _, body) = s
        .try_request("POST", "/v1/chat/completions", Some(b"{not json"), &[])
        .unwrap();
    assert_error(&serde_json::from_str(&body).unwrap(), st, 400);
    let (st, v) = s.post("/v1/chat/completions", &json!({"messages": "x"}));
    assert_error(&v, st, 400);
    let long = "word ".repeat(400);
    let (st, v) = s.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": long}]}),
    );
    assert_error(&v, st, 400);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let (st, _, body) = s.try_request("GET", "/v1/nothing", None, &[]).unwrap();
    assert_error(&serde_json::from_str(&body).unwrap(), st, 404);
    let (st, hdrs, body) = s
        .try_request("GET", "/v1/chat/completions", None, &[])
        .unwrap();
    assert_error(&serde_json::from_str(&body).unwrap(), st, 405);
    assert!(hdrs.iter().any(|(k, _)| k == "allow"));
    let big = vec![b' '; 3 * 1024 * 1024];
    let (st, _, body) = s
        .try_request("POST", "/v1/chat/completions", Some(&big), &[])
        .unwrap();
    assert_error(&serde_json::from_str(&body).unwrap(), st, 413);

    // CORS preflight.
    let (st, hdrs, _) = s
        .try_request(
            "OPTIONS",
            "/v1/chat/completions",
            None,
            &[
                ("Origin", "http://x"),
                ("Access-Control-Request-Method", "POST"),
            ],
        )
        .unwrap();
    assert_eq!(st, 204);
    assert!(hdrs
        .iter()
        .any(|(k, v)| k == "access-control-allow-origin" && v == "http://x"));
}

#[test]
fn model_load_validates_and_swaps() {
    let s = start("load", &[]);
    for (dir, want) in [("../../etc", 403), ("/etc", 403), ("org/missing", 404)] {
        let (st, v) = s.post("/v1/models/load", &json!({"model_dir": dir}));
        assert_error(&v, st, want);
    }
    for body in [
        json!({"model_dir": "org/other", "adapter_dir": "org/a"}),
        json!({"model_dir": "org/other", "harness": "search"}),
        json!({"model_dir": "org/other", "harness": "nope"}),
        json!({"model_dir": "org/other", "lora_quant": "q8_0"}),
        json!({"model_dir": "org/other", "unembed_quant": "bogus"}),
        json!({}),
    ] {
        let (st, v) = s.post("/v1/models/load", &body);
        assert_error(&v, st, 400);
    }
    // Still serving the old model.
    let (st, _) = s.post("/v1/chat/completions", &chat_body(json!({})));
    assert_eq!(st, 200);
    let (st, v) = s.post(
        "/v1/models/load",
        &json!({"model_dir": "org/other", "threads": null}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v,
        json!({"status": "success", "model": "other", "recompiled": false, "message": ""})
    );
    let (_, _, body) = s.try_request("GET", "/v1/models", None, &[]).unwrap();
    assert!(body.contains("\"other\""), "{body}");
    let (st, v) = s.post("/v1/chat/completions", &chat_body(json!({})));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["usage"]["cached_tokens"], 0);
    // Re-encoding the output matrix is a real build step and is reported as one.
    let (st, v) = s.post(
        "/v1/models/load",
        &json!({"model_dir": "org/other", "unembed_quant": "q6_k"}),
    );
    assert_error(&v, st, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("q6_k"),
        "{v}"
    );
    let (st, v) = s.post(
        "/v1/models/load",
        &json!({"model_dir": "org/other", "unembed_quant": "q4_0"}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["recompiled"], true, "{v}");
    let (st, v) = s.post("/v1/chat/completions", &chat_body(json!({})));
    assert_eq!(st, 200, "{v}");
    let (st, v) = s.post(
        "/v1/models/load",
        &json!({"model_dir": "org/other", "unembed_quant": "q8_0"}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["recompiled"], false,
        "the file's output matrix is already Q8_0: {v}"
    );
}

#[test]
fn swap_waits_for_in_flight_work_and_refuses_a_second_load() {
    let s = start("swap", &[]);
    let long = chat_body(json!({"stream": true, "max_tokens": 100000}));
    let mut ra = s.open_stream(&long);
    // The load validates, then waits for A (still generating on the old model).
    let c = s.client;
    let loader =
        std::thread::spawn(move || c.post("/v1/models/load", &json!({"model_dir": "org/other"})));
    // Once the loader holds the swap (new requests get 503), a second load is refused.
    let mut saw503 = false;
    for _ in 0..1000 {
        // (A chat request here would queue behind A; /health answers at once.)
        let (st, _, _) = s.try_request("GET", "/health", None, &[]).unwrap();
        if st == 503 {
            saw503 = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(saw503, "no 503 during the swap");
    let (st, v) = s.post("/v1/chat/completions", &chat_body(json!({})));
    assert_error(&v, st, 503);
    let (st, v) = s.post("/v1/models/load", &json!({"model_dir": "org/tiny"}));
    assert_error(&v, st, 409);
    // A still streams from the old model.
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        assert!(ra.read_line(&mut line).unwrap() > 0, "stream ended");
    }
    drop(ra);
    let (st, v) = loader.join().unwrap();
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["model"], "other");
}

#[test]
fn queue_overflow_and_disconnect_cancel() {
    // A runs until its client goes away (no end-of-generation stop), B waits in the queue and
    // C finds the queue (1) full. A still ends once its context is full (the tiny model's
    // training context, about a second of decoding), which a loaded machine can reach before
    // B is queued; C is then served (200) and the scenario starts over.
    let s = start("queue", &["--max-queue", "1"]);
    let long = chat_body(json!({"stream": true, "max_tokens": 100000, "ignore_eos": true}));
    let mut seen = Vec::new();
    for _attempt in 0..5 {
        // A: running.
        let ra = s.open_stream(&long);
        // B: waits in the queue (its answer only comes once A is gone).
        let b = s
            .send(
                "POST",
                "/v1/chat/completions",
                Some(chat_body(json!({})).to_string().as_bytes()),
                &[],
            )
            .unwrap();
        // C: B may not be queued yet when C arrives; retry until it is.
        let mut got429 = false;
        for _ in 0..200 {
            let (st, hdrs, body) = s
                .try_request(
                    "POST",
                    "/v1/chat/completions",
                    Some(chat_body(json!({})).to_string().as_bytes()),
                    &[],
                )
                .unwrap();
            seen.push(st);
            if st == 429 {
                assert!(hdrs.iter().any(|(k, _)| k == "retry-after"));
                assert_error(&serde_json::from_str(&body).unwrap(), st, 429);
                got429 = true;
                break;
            }
            if st == 200 {
                break; // A has ended: start over
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut rb = BufReader::new(b);
        if !got429 {
            drop(ra);
            let _ = read_head(&mut rb);
            continue;
        }
        // Dropping A cancels its generation, so B gets served.
        drop(ra);
        let (st, _) = read_head(&mut rb).unwrap();
        assert_eq!(st, 200);
        return;
    }
    seen.dedup();
    panic!("no 429 with a full queue in 5 tries; statuses seen: {seen:?}");
}

#[test]
fn api_key_is_required_when_set() {
    let s = start("auth", &["--api-key", "sekret"]);
    let (st, _, body) = s.try_request("GET", "/v1/models", None, &[]).unwrap();
    assert_error(&serde_json::from_str(&body).unwrap(), st, 401);
    let (st, _, _) = s
        .try_request(
            "GET",
            "/v1/models",
            None,
            &[("Authorization", "Bearer sekret")],
        )
        .unwrap();
    assert_eq!(st, 200);
    let (st, _, _) = s.try_request("GET", "/health", None, &[]).unwrap();
    assert_eq!(st, 200);
}

#[test]
fn cli_errors_exit_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_trillim"))
        .args(["generate", "/nonexistent/model.gguf", "--prompt", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("Error: "));
    let out = Command::new(env!("CARGO_BIN_EXE_trillim"))
        .args(["serve", "x", "--voice"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not available"));
    let out = Command::new(env!("CARGO_BIN_EXE_trillim"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("trillim "));
    let out = Command::new(env!("CARGO_BIN_EXE_trillim"))
        .args([
            "generate",
            fixture("tiny-bitnet-tq2_0.gguf").to_str().unwrap(),
            "--prompt",
            "Hi",
            "--max-tokens",
            "3",
            "--seed",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
