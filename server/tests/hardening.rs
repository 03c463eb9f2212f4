//! `trillim serve` under resource and browser attacks, on loopback: slow and stalled bodies,
//! slow heads, idle keep-alive connections, too many connections, too much body memory,
//! cross-origin and DNS-rebinding requests, and request typing. Every scenario is bounded in
//! connections and time; assertions are about what was answered, never about how fast.
#![forbid(unsafe_code)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Reads until the server closes the connection or `limit` passes; returns what arrived and
/// whether the server closed it (a reset counts as closed).
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break false
            }
            Err(_) => break true,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn status_of(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Opens a connection that declares a `len`-byte chat body and sends `sent` bytes of it.
fn partial_body(c: &Client, len: usize, sent: usize) -> TcpStream {
    let mut s = c.connect().unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&vec![b' '; sent]).unwrap();
    s
}

fn header<'a>(hdrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hdrs.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn stalled_and_trickling_bodies_get_408_while_others_are_served() {
    let s = start(
        "slowbody",
        &["--body-timeout", "1", "--min-body-rate", "4096"],
    );
    // Forty connections send part of a 1 MB body and stall.
    let mut stalled: Vec<TcpStream> = (0..40)
        .map(|_| partial_body(&s, 1_000_000, 64 * 1024))
        .collect();
    // One trickles: 16 bytes every 200 ms, far below 4096 bytes/s.
    let mut trickle = partial_body(&s, 100_000, 16);
    let mut t2 = trickle.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for _ in 0..25 {
            std::thread::sleep(Duration::from_millis(200));
            if t2.write_all(&[b' '; 16]).is_err() {
                break;
            }
        }
    });
    // Normal requests are served meanwhile.
    let (st, _, _) = s.try_request("GET", "/v1/models", None, &[]).unwrap();
    assert_eq!(st, 200);
    let (st, v) = s.post("/v1/chat/completions", &chat_body(json!({})));
    assert_eq!(st, 200, "{v}");
    // Every stalled body is answered 408 and its connection closed.
    for c in &mut stalled {
        let (resp, closed) = read_until_closed(c, Duration::from_secs(30));
        assert_eq!(status_of(&resp), 408, "{resp}");
        assert!(resp.contains("request_timeout"), "{resp}");
        assert!(closed);
    }
    // The trickler is cut off too (the 408 may be lost to a reset while it still writes).
    let (resp, closed) = read_until_closed(&mut trickle, Duration::from_secs(30));
    assert!(closed, "the trickling body was not cut off");
    assert!(resp.is_empty() || status_of(&resp) == 408, "{resp}");
    writer.join().unwrap();
    let (st, _, _) = s.try_request("GET", "/v1/models", None, &[]).unwrap();
    assert_eq!(st, 200);
}

#[test]
fn slow_heads_and_idle_keep_alive_connections_are_closed() {
    let s = start("slowhead", &["--header-timeout", "1"]);
    // A head that never ends.
    let mut slow = s.connect().unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    // A connection that never sends anything.
    let mut silent = s.connect().unwrap();
    // A keep-alive connection, idle after its first response.
    let mut idle = s.connect().unwrap();
    idle.write_all(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    for c in [&mut slow, &mut silent, &mut idle] {
        let (_, closed) = read_until_closed(c, Duration::from_secs(30));
        assert!(closed, "connection left open");
    }
    let (resp, _) = {
        // The idle connection did get its answer before being closed.
        let mut again = s.connect().unwrap();
        again
            .write_all(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        read_until_closed(&mut again, Duration::from_secs(30))
    };
    assert_eq!(status_of(&resp), 200, "{resp}");
}

#[test]
fn connections_past_the_cap_get_503_with_retry_after() {
    let s = start(
        "conncap",
        &["--max-connections", "3", "--header-timeout", "60"],
    );
    let held: Vec<TcpStream> = (0..3).map(|_| s.connect().unwrap()).collect();
    // The server accepts the three and then answers the next one with 503.
    let t0 = Instant::now();
    let (st, hdrs, body) = loop {
        let r = s.try_request("GET", "/v1/models", None, &[]).unwrap();
        if r.0 == 503 || t0.elapsed() > Duration::from_secs(20) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_error(&v, st, 503);
    assert_eq!(v["error"]["code"], "too_many_connections");
    assert_eq!(header(&hdrs, "retry-after"), Some("1"));
    drop(held);
    let t0 = Instant::now();
    loop {
        let (st, _, _) = s.try_request("GET", "/v1/models", None, &[]).unwrap();
        if st == 200 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "slots were not freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn unfinished_bodies_share_a_bounded_budget() {
    let s = start(
        "bodymem",
        &["--max-body-memory", "2", "--body-timeout", "30"],
    );
    // 1.5 MiB of the 2 MiB budget is taken by a body that stalls.
    let hog = partial_body(&s, 1_572_864, 1024);
    std::thread::sleep(Duration::from_millis(300));
    let pad = "x".repeat(1_000_000);
    let big = chat_body(json!({"pad": pad})).to_string();
    let (st, hdrs, body) = s
        .try_request("POST", "/v1/chat/completions", Some(big.as_bytes()), &[])
        .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_error(&v, st, 503);
    assert_eq!(v["error"]["code"], "server_busy");
    assert!(header(&hdrs, "retry-after").is_some());
    // Small requests still fit.
    let (st, _) = s.post("/v1/chat/completions", &chat_body(json!({})));
    assert_eq!(st, 200);
    // The budget comes back when the stalled client goes away.
    drop(hog);
    let t0 = Instant::now();
    loop {
        let (st, _, body) = s
            .try_request("POST", "/v1/chat/completions", Some(big.as_bytes()), &[])
            .unwrap();
        if st == 200 {
            break;
        }
        assert_eq!(st, 503, "{body}");
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "budget not released"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn browser_policy_allows_loopback_pages_only() {
    let s = start("browser", &[]);
    let port = s.port.to_string();
    let get = |hdrs: &[(&str, &str)]| s.try_request("GET", "/v1/models", None, hdrs).unwrap();

    let (st, h, _) = get(&[("Origin", "http://localhost:5173")]);
    assert_eq!(st, 200);
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    assert_eq!(header(&h, "vary"), Some("Origin"));
    for bad in [
        "https://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
    ] {
        let (st, h, body) = get(&[("Origin", bad)]);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_error(&v, st, 403);
        assert_eq!(v["error"]["code"], "origin_not_allowed");
        assert!(header(&h, "access-control-allow-origin").is_none());
    }
    // Preflights follow the same rule.
    let pre = |origin: &str| {
        s.try_request(
            "OPTIONS",
            "/v1/chat/completions",
            None,
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
        )
        .unwrap()
    };
    let (st, h, _) = pre("http://127.0.0.1:3000");
    assert_eq!(st, 204);
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("http://127.0.0.1:3000")
    );
    let (st, h, _) = pre("https://evil.example");
    assert_eq!(st, 403);
    assert!(header(&h, "access-control-allow-origin").is_none());

    // DNS rebinding: the page's own name reaches 127.0.0.1 but is refused.
    let rebound = format!("rebind.example:{port}");
    let (st, _, body) = get(&[("Host", &rebound), ("Origin", "http://rebind.example")]);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_error(&v, st, 403);
    assert_eq!(v["error"]["code"], "host_not_allowed");
    let (st, _) = {
        let b = json!({"model_dir": "org/other"}).to_string();
        let (st, _, body) = s
            .try_request(
                "POST",
                "/v1/models/load",
                Some(b.as_bytes()),
                &[("Host", &rebound)],
            )
            .unwrap();
        (st, body)
    };
    assert_eq!(st, 403);
    let (_, _, body) = get(&[]);
    assert!(
        body.contains("\"tiny\""),
        "a refused load swapped the model: {body}"
    );
    for ok in [
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("127.0.0.1:{port}"),
    ] {
        assert_eq!(get(&[("Host", &ok)]).0, 200, "{ok}");
    }

    // Widened by flags.
    let w = start(
        "browser-wide",
        &[
            "--cors-origins",
            "https://app.example,null",
            "--allowed-hosts",
            "box.lan",
        ],
    );
    let get = |hdrs: &[(&str, &str)]| w.try_request("GET", "/v1/models", None, hdrs).unwrap();
    let (st, h, _) = get(&[("Origin", "https://app.example")]);
    assert_eq!(st, 200);
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(get(&[("Origin", "null")]).0, 200);
    assert_eq!(get(&[("Origin", "https://evil.example")]).0, 403);
    assert_eq!(get(&[("Host", "box.lan:8000")]).0, 200);
    assert_eq!(get(&[("Host", "other.lan:8000")]).0, 403);
    let any = start("browser-any", &["--cors-origins", "*"]);
    let get = |o: &str| {
        any.try_request("GET", "/v1/models", None, &[("Origin", o)])
            .unwrap()
            .0
    };
    assert_eq!(get("https://anything.example"), 200);
    assert_eq!(get("null"), 403);
}

#[test]
fn request_typing_and_context_edges() {
    let s = start("typing", &["--ctx", "64"]);
    for (field, value) in [
        ("max_tokens", json!("9")),
        ("temperature", json!("0.5")),
        ("stream", json!("true")),
        ("seed", json!("1")),
        ("top_k", json!(true)),
        ("logprobs", json!("false")),
    ] {
        let (st, v) = s.post("/v1/chat/completions", &chat_body(json!({ field: value })));
        assert_error(&v, st, 400);
        assert_eq!(v["error"]["param"], field, "{v}");
    }
    // A max_tokens beyond the context means "until the context is full".
    let (st, v) = s.post(
        "/v1/chat/completions",
        &chat_body(json!({"max_tokens": 9223372036854775807u64, "temperature": 0})),
    );
    assert_eq!(st, 200, "{v}");

    // Scoring may fill the context exactly; generating needs one free position.
    let ids = |n: u32| json!((1..=n).collect::<Vec<u32>>());
    let score = |n: u32, max_tokens: u32| {
        s.post(
            "/v1/completions",
            &json!({"prompt": ids(n), "max_tokens": max_tokens, "echo": true, "logprobs": 1}),
        )
    };
    let (st, v) = score(64, 0);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], 64);
    assert_eq!(
        v["choices"][0]["logprobs"]["token_logprobs"]
            .as_array()
            .unwrap()
            .len(),
        64
    );
    for (n, m) in [(65, 0), (64, 1)] {
        let (st, v) = score(n, m);
        assert_error(&v, st, 400);
        assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
    }

    // Response ids share nothing: both halves are random.
    let id = |v: &Value| {
        v["id"]
            .as_str()
            .unwrap()
            .trim_start_matches("chatcmpl-")
            .to_string()
    };
    let a = id(&s.post("/v1/chat/completions", &chat_body(json!({}))).1);
    let b = id(&s.post("/v1/chat/completions", &chat_body(json!({}))).1);
    assert_eq!(a.len(), 32);
    assert_ne!(a[..16], b[..16]);
    assert_ne!(a[16..], b[16..]);
}
