//! The real `trillim-firmware` binary on a loopback port, against the clients that used to
//! hold it: trickling senders, idle keep-alive connections, garbage first lines, clients that
//! leave during a generation, a full connection table; and the browser policy's matrix.
//!
//! Assertions are about behaviour (which status, whether a connection was closed); time
//! bounds are generous, far above what a loaded machine needs and far below what the old
//! failure modes took.
#![forbid(unsafe_code)]

mod common;

use common::{read_response, read_to_close, status};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running firmware, killed when dropped.
struct Firmware {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Firmware {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(flags: &[&str]) -> Firmware {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/models/tiny-b158-i2_s.gguf"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_trillim-firmware"))
        .args(["--model", model, "--host", "127.0.0.1", "--port", "0"])
        .args(["--threads", "1"])
        .args(flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting trillim-firmware");
    // The start-up line names the port.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("the firmware exited before serving")
            .unwrap();
        if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
            break rest
                .split(' ')
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .expect("a port in the start-up line");
        }
    };
    // Keep draining stderr so the firmware never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Firmware {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connecting");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// One request on a fresh connection (`Connection: close`); the whole response.
fn request(addr: SocketAddr, head: &str, body: &str) -> String {
    let mut s = connect(addr);
    let req = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return read_to_close(&mut s);
    }
    read_to_close(&mut s)
}

fn models(addr: SocketAddr) -> String {
    request(addr, "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1", "")
}

#[test]
fn survives_slow_idle_garbage_and_leaving_clients() {
    let fw = start(&[
        "--ctx",
        "16384",
        "--max-connections",
        "8",
        "--request-timeout",
        "3",
        "--keep-alive-timeout",
        "2",
    ]);
    let addr = fw.addr;
    assert_eq!(status(&models(addr)), 200);

    // A garbage first line is refused at once, not after the request deadline (408).
    let mut g = connect(addr);
    g.write_all(b"GARBAGE\r\n").unwrap();
    let r = read_to_close(&mut g);
    assert_eq!(status(&r), 400, "{r}");
    let mut g = connect(addr);
    g.write_all(b"\x16\x03\x01\x00\xa5\x01\x00").unwrap();
    assert_eq!(status(&read_to_close(&mut g)), 400);

    // A kept-alive connection is closed once idle past the keep-alive deadline.
    let mut k = connect(addr);
    k.write_all(b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(status(&read_response(&mut k)), 200);
    let t = Instant::now();
    assert_eq!(
        read_to_close(&mut k),
        "",
        "nothing more on an idle connection"
    );
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "closed by the server"
    );

    // A request that stops arriving gets 408 at its deadline.
    let mut slow = connect(addr);
    slow.write_all(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")
        .unwrap();
    let r = read_to_close(&mut slow);
    assert_eq!(status(&r), 408, "{r}");

    // A client that leaves during a long non-streaming generation cancels it: the next
    // request does not wait for the ~16000 tokens.
    let body = r#"{"prompt":"Once upon a time","max_tokens":16000,"ignore_eos":true}"#;
    let mut l = connect(addr);
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    l.write_all(req.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(l);
    let t = Instant::now();
    assert_eq!(status(&models(addr)), 200);
    let after_cancel = t.elapsed();
    assert!(
        after_cancel < Duration::from_secs(15),
        "the next request waited {after_cancel:?}"
    );

    // A full slot table: eight silent connections hold every slot, the ninth gets 503.
    let held: Vec<TcpStream> = (0..8).map(|_| connect(addr)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = connect(addr);
    let r = read_to_close(&mut extra);
    assert_eq!(status(&r), 503, "{r}");
    assert!(r.contains("Retry-After: 1\r\n") && r.contains("Connection: close\r\n"));
    assert!(r.contains(r#""type":"service_unavailable_error""#), "{r}");
    drop(held);

    // Trickling senders (a byte a second, reconnecting when dropped) against normal
    // requests, which must keep being answered.
    let stop = Arc::new(AtomicBool::new(false));
    let tricklers: Vec<_> = (0..30)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let head = b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
                while !stop.load(Ordering::SeqCst) {
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    };
                    for b in head
                        .iter()
                        .chain(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter())
                    {
                        if stop.load(Ordering::SeqCst) || s.write_all(&[*b]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let pid = fw.child.id();
    let mut latencies = Vec::new();
    let mut busy = 0;
    for _ in 0..20 {
        let t = Instant::now();
        let mut answered = false;
        while t.elapsed() < Duration::from_secs(20) {
            let r = request(
                addr,
                "POST /v1/completions HTTP/1.1\r\nHost: localhost",
                r#"{"prompt":"Hello","max_tokens":4}"#,
            );
            match status(&r) {
                200 => {
                    answered = true;
                    break;
                }
                503 => {
                    busy += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                s => panic!("status {s} during the trickle: {r}"),
            }
        }
        assert!(
            answered,
            "a normal request went unanswered during the trickle"
        );
        latencies.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = rss
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .collect::<Vec<_>>()
        .join(", ");
    stop.store(true, Ordering::SeqCst);
    for t in tricklers {
        t.join().unwrap();
    }
    latencies.sort();
    eprintln!(
        "trickle: 20 normal requests answered; latency median {:?}, max {:?}; {busy} answers of 503 retried; {rss}; after a cancelled generation {after_cancel:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
    assert_eq!(status(&models(addr)), 200);
}

#[test]
fn browser_policy() {
    let fw = start(&[]);
    let addr = fw.addr;
    // The same liveness route as the desktop server.
    for path in ["/health", "/v1/health"] {
        let r = request(addr, &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1"), "");
        assert_eq!(status(&r), 200, "{r}");
        assert!(r.contains("\"status\":\"ok\""), "{r}");
    }
    let get = |extra: &str| request(addr, &format!("GET /v1/models HTTP/1.1\r\n{extra}"), "");
    let r = get("Host: 127.0.0.1\r\nOrigin: http://localhost:3000");
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.contains("Access-Control-Allow-Origin: http://localhost:3000\r\n"));
    assert!(r.contains("Vary: Origin\r\n"));
    let r = get("Host: localhost:8000");
    assert_eq!(status(&r), 200);
    assert!(
        !r.contains("Access-Control"),
        "no CORS headers without Origin"
    );
    for (headers, flag) in [
        (
            "Host: 127.0.0.1\r\nOrigin: https://evil.example",
            "--cors-origins",
        ),
        ("Host: 127.0.0.1\r\nOrigin: null", "--cors-origins"),
        ("Host: evil.example", "--allowed-hosts"),
    ] {
        let r = get(headers);
        assert_eq!(status(&r), 403, "{headers}: {r}");
        assert!(r.contains(r#""type":"permission_error""#), "{r}");
        assert!(r.contains(flag), "{r}");
        assert!(!r.contains("Access-Control-Allow-Origin"));
    }
    // Preflights.
    let pre = |origin: &str| {
        request(
            addr,
            &format!(
                "OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {origin}\r\n\
                 Access-Control-Request-Method: POST\r\n\
                 Access-Control-Request-Headers: content-type, authorization"
            ),
            "",
        )
    };
    let r = pre("http://127.0.0.1:5173");
    assert_eq!(status(&r), 204, "{r}");
    assert!(r.contains("Access-Control-Allow-Origin: http://127.0.0.1:5173\r\n"));
    assert!(r.contains("Access-Control-Allow-Methods: POST, OPTIONS\r\n"));
    assert!(r.contains("Access-Control-Allow-Headers: content-type, authorization\r\n"));
    assert!(r.contains("Access-Control-Max-Age: "));
    assert_eq!(status(&pre("https://evil.example")), 403);
    drop(fw);

    // Widened by flags.
    let fw = start(&[
        "--cors-origins",
        "https://app.example,null",
        "--allowed-hosts",
        "box.lan",
    ]);
    let addr = fw.addr;
    let get = |extra: &str| request(addr, &format!("GET /v1/models HTTP/1.1\r\n{extra}"), "");
    let r = get("Host: box.lan:8000\r\nOrigin: https://app.example");
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.contains("Access-Control-Allow-Origin: https://app.example\r\n"));
    assert_eq!(status(&get("Host: 127.0.0.1\r\nOrigin: null")), 200);
    assert_eq!(
        status(&get("Host: 127.0.0.1\r\nOrigin: https://evil.example")),
        403
    );
    assert_eq!(status(&get("Host: other.lan")), 403);
}
