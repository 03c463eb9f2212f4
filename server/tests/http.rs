//! End-to-end tests of `trillim serve`: the real binary on a loopback port, driven with raw
//! HTTP/1.1 over std sockets, against the tiny fixture models (random weights, real tokenizer).
#![forbid(unsafe_code)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

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

    // n choices, each its own sequence; the prompt counts once.
    let (st, v) = s.post(
        "/v1/chat/completions",
        &chat_body(json!({"n": 3, "seed": 5})),
    );
    assert_eq!(st, 200, "{v}");
    let ch = v["choices"].as_array().unwrap();
    assert_eq!(ch.len(), 3);
    assert_eq!(ch[2]["index"], 2);
    let (_, one) = s.post("/v1/chat/completions", &chat_body(json!({"seed": 5})));
    assert_eq!(
        v["usage"]["prompt_tokens"], one["usage"]["prompt_tokens"],
        "{v}"
    );

    // Errors, all in the OpenAI shape.
    for n in [json!(5), json!(0), json!(65)] {
        // More choices than slots (4 by default), none, or past the limit.
        let (st, v) = s.post("/v1/chat/completions", &chat_body(json!({ "n": n })));
        assert_error(&v, st, 400);
        assert_eq!(v["error"]["param"], "n");
    }
    let (st, v) = s.post(
        "/v1/chat/completions",
        &chat_body(json!({"n": 2, "stream": true})),
    );
    assert_error(&v, st, 400);
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
                ("Origin", "http://localhost:3000"),
                ("Access-Control-Request-Method", "POST"),
            ],
        )
        .unwrap();
    assert_eq!(st, 204);
    assert!(hdrs
        .iter()
        .any(|(k, v)| k == "access-control-allow-origin" && v == "http://localhost:3000"));
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
        json!({"model_dir": "org/other", "harness": "search", "search_provider": "bing"}),
        json!({"model_dir": "org/other", "harness": "nope"}),
        json!({"model_dir": "org/other", "lora_quant": "q8_0"}),
        json!({"model_dir": "org/other", "unembed_quant": "bogus"}),
        json!({}),
    ] {
        let (st, v) = s.post("/v1/models/load", &body);
        assert_error(&v, st, 400);
    }
    // A model this build cannot run: 400, naming the model, its file and the cause once each.
    let mamba = s.home.join("models/org/mamba");
    std::fs::create_dir_all(&mamba).unwrap();
    std::fs::write(mamba.join("mamba.gguf"), gguf_with_architecture("mamba")).unwrap();
    let (st, v) = s.post("/v1/models/load", &json!({"model_dir": "org/mamba"}));
    assert_error(&v, st, 400);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("cannot load org/mamba: "), "{msg}");
    assert_eq!(
        msg.matches("unsupported architecture 'mamba'").count(),
        1,
        "{msg}"
    );
    assert_eq!(msg.matches("mamba.gguf").count(), 1, "{msg}");
    assert_eq!(v["error"]["param"], "model_dir");
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
    // A generates on SmolLM2 with its whole context and no end-of-generation stop, so it is
    // still going while the swap waits (the tiny fixture could end first on a fast machine).
    let s = start_model("swap", "org/smol", &["--ctx", "8192"]);
    let mut long = chat_body(json!({"stream": true, "max_tokens": 100000, "ignore_eos": true}));
    long["model"] = json!("smol");
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

/// The value of the gauge `name` on `/metrics`.
fn gauge(s: &Server, name: &str) -> u64 {
    let (st, _, text) = s.try_request("GET", "/metrics", None, &[]).unwrap();
    assert_eq!(st, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no gauge {name} in {text}"))
}

/// Polls `/metrics` until the gauge `name` reads `want` (at most 30 s).
fn await_gauge(s: &Server, name: &str, want: u64) {
    let t0 = std::time::Instant::now();
    while gauge(s, name) != want {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{name} never reached {want}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn queue_overflow_and_disconnect_cancel() {
    // A runs until its client goes away, B waits in the queue and C finds the queue (1) full.
    // A is SmolLM2 with its whole 8192-token context and no end-of-generation stop: thousands
    // of decode steps, so it cannot end on its own before B is queued and C turned away (the
    // tiny fixture's short context could). The metrics say when each stage is reached.
    let s = start_model(
        "queue",
        "org/smol",
        &["--ctx", "8192", "--max-queue", "1", "--parallel", "1"],
    );
    let body = |extra: Value| {
        let mut b = chat_body(extra);
        b["model"] = json!("smol");
        b
    };
    // A: running.
    let ra = s.open_stream(&body(
        json!({"stream": true, "max_tokens": 100000, "ignore_eos": true}),
    ));
    await_gauge(&s, "trillim_slots_busy", 1);
    // B: waits in the queue (its answer only comes once A is gone).
    let b = s
        .send(
            "POST",
            "/v1/chat/completions",
            Some(body(json!({})).to_string().as_bytes()),
            &[],
        )
        .unwrap();
    await_gauge(&s, "trillim_queue_depth", 1);
    // C: the queue is full.
    let (st, hdrs, text) = s
        .try_request(
            "POST",
            "/v1/chat/completions",
            Some(body(json!({})).to_string().as_bytes()),
            &[],
        )
        .unwrap();
    assert_eq!(st, 429, "{text}");
    assert!(hdrs.iter().any(|(k, _)| k == "retry-after"));
    assert_error(&serde_json::from_str(&text).unwrap(), st, 429);
    assert_eq!(gauge(&s, "trillim_slots_busy"), 1, "A ended on its own");
    // Dropping A cancels its generation, so B gets served.
    drop(ra);
    let (st, _) = read_head(&mut BufReader::new(b)).unwrap();
    assert_eq!(st, 200);
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
    // Every /v1 route needs the key, /v1/health too; 401 names the scheme.
    let (st, hdrs, _) = s.try_request("GET", "/v1/health", None, &[]).unwrap();
    assert_eq!(st, 401);
    assert!(hdrs
        .iter()
        .any(|(k, v)| k == "www-authenticate" && v.starts_with("Bearer")));
    let (st, _, _) = s
        .try_request("GET", "/v1/health", None, &[("x-api-key", "sekret")])
        .unwrap();
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
    // A model this build cannot run: the cause and the file are each named once.
    let dir = std::env::temp_dir().join(format!("trillim-cli-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mamba = dir.join("mamba.gguf");
    std::fs::write(&mamba, gguf_with_architecture("mamba")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_trillim"))
        .args(["generate", mamba.to_str().unwrap(), "--prompt", "x"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("Error: cannot load mamba: "), "{err}");
    assert_eq!(
        err.matches("unsupported architecture 'mamba'").count(),
        1,
        "{err}"
    );
    assert_eq!(err.matches("mamba.gguf").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_trillim"))
        .args(["serve", "x", "--voice", "--whisper-model", "org/no-whisper"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("trillim pull org/no-whisper"));
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

/// Requests served side by side (continuous batching over 4 slots, more waiting in the queue)
/// give the same greedy text as the same requests served one by one; cancelling one stream
/// leaves the others going.
#[test]
fn concurrent_requests_match_solo_runs() {
    let s = start("parallel", &["--parallel", "4"]);
    let body = |i: usize| {
        json!({"prompt": format!("Story {i}: once upon a time"), "max_tokens": 24 + 3 * i,
               "temperature": 0, "ignore_eos": true})
    };
    let text = |v: &Value| v["choices"][0]["text"].as_str().unwrap_or("").to_string();
    let alone: Vec<String> = (0..6)
        .map(|i| text(&s.post("/v1/completions", &body(i)).1))
        .collect();
    let client = s.client;
    // A stream that will be cancelled mid-way shares the batch.
    let doomed = s.open_stream(&chat_body(
        json!({"stream": true, "max_tokens": 100000, "ignore_eos": true}),
    ));
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let b = body(i);
            std::thread::spawn(move || client.post("/v1/completions", &b))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    drop(doomed);
    for (i, h) in handles.into_iter().enumerate() {
        let (st, v) = h.join().unwrap();
        assert_eq!(st, 200, "{v}");
        assert_eq!(text(&v), alone[i], "request {i} changed when batched");
    }
}
