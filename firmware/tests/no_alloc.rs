//! Proof that serving allocates nothing: a counting global allocator around many requests of
//! every kind (streaming, not streaming, malformed, oversized, refused by the browser policy,
//! preflights, cancelled), driven over in-memory streams, and then around the real connection
//! loop on a loopback socket (a full slot table's 503, request deadlines' 408, a garbage first
//! line's 400, a client that leaves during a generation).
//!
//! Runs without the test harness so no other thread allocates while counting; the loopback
//! client's thread is exempt from the count.

mod common;

use common::{read_response, read_to_close, status};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use embedded_io::{ErrorType, Read, Write};
use trillim_firmware::io::Peer;
use trillim_firmware::{Firmware, Net, NetConfig, Options};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the loopback client's thread, whose allocations are not the server's.
    static EXEMPT: Cell<bool> = const { Cell::new(false) };
}

fn note(size: usize) {
    if COUNTING.load(Ordering::SeqCst) && !EXEMPT.with(|e| e.get()) {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        BYTES.fetch_add(size, Ordering::SeqCst);
    }
}

// SAFETY: every method forwards to the system allocator with the caller's arguments
// unchanged; the only addition is an atomic counter update, which neither allocates nor
// touches the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` and `layout` come from this allocator, which is the system one.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by the system allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A client connection in memory: reads hand out `input` in small pieces, writes land in a
/// fixed buffer; after `alive_for` questions between tokens the client is gone.
struct Mem<'a> {
    input: &'a [u8],
    pos: usize,
    piece: usize,
    out: &'a mut [u8],
    n: usize,
    alive_for: usize,
}

impl Peer for Mem<'_> {
    fn alive(&mut self) -> bool {
        self.alive_for = self.alive_for.saturating_sub(1);
        self.alive_for > 0
    }
}

impl ErrorType for Mem<'_> {
    type Error = Infallible;
}

impl Read for Mem<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let k = buf.len().min(self.piece).min(self.input.len() - self.pos);
        buf[..k].copy_from_slice(&self.input[self.pos..self.pos + k]);
        self.pos += k;
        Ok(k)
    }
}

impl Write for Mem<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        let room = self.out.len().saturating_sub(self.n);
        let k = buf.len().min(room);
        self.out[self.n..self.n + k].copy_from_slice(&buf[..k]);
        self.n += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

fn post(path: &str, body: &str, close: bool) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost:8000\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
}

fn serve(
    fw: &mut Firmware,
    req: &mut [u8],
    input: &[u8],
    out: &mut [u8],
    piece: usize,
    alive_for: usize,
) -> usize {
    let mut m = Mem {
        input,
        pos: 0,
        piece,
        out,
        n: 0,
        alive_for,
    };
    let _ = fw.serve_connection(&mut m, req);
    m.n
}

fn statuses(out: &[u8]) -> Vec<u16> {
    let s = String::from_utf8_lossy(out);
    s.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| s.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

fn main() {
    let model =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/models/tiny-b158-i2_s.gguf");
    let opts = Options {
        ctx: Some(512),
        threads: 2,
        max_body: 64 * 1024,
        ..Options::default()
    };
    let mut fw = Firmware::new(&model, opts).expect("loading the fixture model");

    // One keep-alive connection carrying every kind of request, repeated.
    let round = [
        "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nOrigin: http://localhost:3000\r\n\r\n"
            .to_string(),
        "GET /v1/models HTTP/1.1\r\nOrigin: https://evil.example\r\n\r\n".to_string(),
        "GET /v1/models HTTP/1.1\r\nOrigin: null\r\n\r\n".to_string(),
        "OPTIONS /v1/chat/completions HTTP/1.1\r\nOrigin: http://127.0.0.1:5173\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n"
            .to_string(),
        "OPTIONS /v1/completions HTTP/1.1\r\nOrigin: https://evil.example\r\n\r\n".to_string(),
        "OPTIONS /v1/models HTTP/1.1\r\n\r\n".to_string(),
        post(
            "/v1/completions",
            &format!(r#"{{"prompt":"{}","max_tokens":1}}"#, "word ".repeat(600)),
            false,
        ),
        post(
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"Hello \"there\"\n"}],"max_tokens":6,"temperature":0}"#,
            false,
        ),
        post(
            "/v1/chat/completions",
            r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi \ud83d\ude00"}]}],"max_tokens":6,"stream":true,"stop":["\n","zz"],"seed":3}"#,
            false,
        ),
        post(
            "/v1/completions",
            r#"{"prompt":"The capital of France is","max_tokens":5,"top_k":5,"top_p":0.9,"repetition_penalty":1.1}"#,
            false,
        ),
        post(
            "/v1/completions",
            r#"{"prompt":["Once upon a time"],"max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}"#,
            false,
        ),
        post(
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"x"}],"#,
            false,
        ),
        post(
            "/v1/chat/completions",
            r#"{"messages":[],"max_tokens":2}"#,
            false,
        ),
        post(
            "/v1/completions",
            r#"{"prompt":"x","stop":["a","b","c","d","e"]}"#,
            false,
        ),
        post(
            "/v1/completions",
            r#"{"prompt":"x","temperature":-1}"#,
            false,
        ),
        "GET /v1/nothing HTTP/1.1\r\n\r\n".to_string(),
        "GET /v1/chat/completions HTTP/1.1\r\n\r\n".to_string(),
        "DELETE /v1/models HTTP/1.1\r\n\r\n".to_string(),
    ];
    let expected_round = [
        403, 200, 403, 403, 204, 403, 204, 400, 200, 200, 200, 200, 400, 400, 400, 400, 404, 405,
        405,
    ];
    let rounds = 5;
    let mut conn = String::new();
    let mut expected = Vec::new();
    for _ in 0..rounds {
        for r in &round {
            conn.push_str(r);
        }
        expected.extend_from_slice(&expected_round);
    }
    conn.push_str(&post(
        "/v1/completions",
        r#"{"prompt":"Bye","max_tokens":2}"#,
        true,
    ));
    expected.push(200);

    // Connections that end in an error and a close.
    let big = "x".repeat(70 * 1024);
    let closing = [
        (post("/v1/completions", &big, false), 413),
        (
            "POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_string(),
            411,
        ),
        ("GARBAGE\x00\r\n\r\n".to_string(), 400),
        // Refused at the end of the first line, without waiting for a blank line.
        ("GARBAGE\r\n".to_string(), 400),
        ("\x16\x03\x01\x02\x00\x01".to_string(), 400),
        ("GET / HTTP/3.0\r\n\r\n".to_string(), 505),
        (
            format!("GET / HTTP/1.1\r\nA: {}\r\n\r\n", "b".repeat(20000)),
            431,
        ),
    ];
    // A generation whose client leaves after a few tokens: no answer, the connection ends.
    let long = post(
        "/v1/completions",
        r#"{"prompt":"Once","max_tokens":400,"ignore_eos":true}"#,
        false,
    );
    let long_stream = post(
        "/v1/completions",
        r#"{"prompt":"Once","max_tokens":400,"ignore_eos":true,"stream":true}"#,
        false,
    );
    let mut out = vec![0u8; 4 << 20];
    let mut req = vec![0u8; fw.request_capacity()];
    let mut n_closing = Vec::with_capacity(closing.len());

    // The real loop on loopback: two slots, one-second deadlines, no eviction.
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding loopback");
    let addr = listener.local_addr().unwrap();
    let cfg = NetConfig {
        max_connections: 2,
        request_timeout: Duration::from_secs(1),
        keep_alive_timeout: Duration::from_secs(1),
        evict_grace: Duration::from_secs(3600),
    };
    let mut net = Net::new(listener, cfg, &fw).expect("connection slots");
    let start = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let (start, done) = (start.clone(), done.clone());
        std::thread::spawn(move || {
            EXEMPT.with(|e| e.set(true));
            while !start.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let r = loopback_client(addr);
            done.store(true, Ordering::SeqCst);
            r
        })
    };

    COUNTING.store(true, Ordering::SeqCst);
    let n = serve(
        &mut fw,
        &mut req,
        conn.as_bytes(),
        &mut out,
        1000,
        usize::MAX,
    );
    for (c, _) in &closing {
        let k = serve(
            &mut fw,
            &mut req,
            c.as_bytes(),
            &mut out[n..],
            777,
            usize::MAX,
        );
        n_closing.push(k);
    }
    // Byte-at-a-time reads of a whole keep-alive exchange.
    let chat = &round[8];
    let m = serve(
        &mut fw,
        &mut req,
        chat.as_bytes(),
        &mut out[n + 4096..],
        1,
        usize::MAX,
    );
    let cancelled = serve(&mut fw, &mut req, long.as_bytes(), &mut out[n..], 1000, 5);
    let cancelled_stream = serve(
        &mut fw,
        &mut req,
        long_stream.as_bytes(),
        &mut out[n..],
        1000,
        5,
    );
    start.store(true, Ordering::SeqCst);
    while !done.load(Ordering::SeqCst) {
        net.turn(&mut fw, Some(Duration::from_millis(20)));
    }
    COUNTING.store(false, Ordering::SeqCst);

    let allocs = ALLOCS.load(Ordering::SeqCst);
    let bytes = BYTES.load(Ordering::SeqCst);
    let loopback = client.join().expect("the loopback client");
    let requests = expected.len() + closing.len() + 3 + loopback.len();

    let got = statuses(&out[..n]);
    assert_eq!(
        got,
        expected,
        "responses:\n{}",
        String::from_utf8_lossy(&out[..n])
    );
    let text = String::from_utf8_lossy(&out[..n]);
    assert_eq!(text.matches("data: [DONE]").count(), 2 * rounds);
    assert!(text.contains(r#""object":"chat.completion""#));
    assert!(text.contains(r#""object":"text_completion""#));
    assert!(text.contains(r#""delta":{"role":"assistant","content":""}"#));
    assert!(text.contains(r#""prompt_tokens_details":{"cached_tokens":"#));
    assert!(text.contains(r#""type":"invalid_request_error""#));
    assert!(text.contains(r#""type":"permission_error""#));
    assert!(text.contains(r#""code":"context_length_exceeded""#));
    assert!(text.contains("Access-Control-Allow-Origin: http://localhost:3000\r\nVary: Origin\r\n"));
    assert!(text.contains("Access-Control-Allow-Headers: content-type\r\n"));
    assert!(m > 0);
    assert_eq!(cancelled, 0, "a cancelled generation answers nothing");
    assert!(!String::from_utf8_lossy(&out[n..n + cancelled_stream]).contains("[DONE]"));
    for ((c, want), k) in closing.iter().zip(&n_closing) {
        let mut one = vec![0u8; 4096];
        let k2 = serve(&mut fw, &mut req, c.as_bytes(), &mut one, 777, usize::MAX);
        assert_eq!(*k, k2);
        assert_eq!(statuses(&one[..k2.min(4096)]), vec![*want], "{c:?}");
    }
    let want: Vec<(&str, u16)> = vec![
        ("models", 200),
        ("full table", 503),
        ("slow sender", 408),
        ("slow sender", 408),
        ("garbage", 400),
        ("evil host", 403),
        ("after a cancelled generation", 200),
        ("keep-alive", 200),
    ];
    let got: Vec<(&str, u16)> = loopback.iter().map(|(w, st, _)| (*w, *st)).collect();
    assert_eq!(got, want, "{loopback:?}");
    assert!(loopback[1].2.contains("Retry-After: 1\r\n"), "{loopback:?}");
    assert!(loopback[1].2.contains(r#""code":"too_many_connections""#));
    println!("no_alloc: {requests} requests served, {allocs} heap allocations ({bytes} bytes)");
    assert_eq!(
        allocs, 0,
        "serving allocated {allocs} times ({bytes} bytes)"
    );
}

/// The loopback scenarios; returns (what, status, response) for each answer.
fn loopback_client(addr: SocketAddr) -> Vec<(&'static str, u16, String)> {
    let mut got = Vec::new();
    let mut note = |what, r: String| got.push((what, status(&r), r));
    let models_close = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let connect = || TcpStream::connect(addr).expect("connecting");

    let mut c = connect();
    c.write_all(models_close).unwrap();
    note("models", read_to_close(&mut c));

    // Two slow senders fill both slots; a third connection is turned away unread.
    let mut slow = [connect(), connect()];
    for s in &mut slow {
        s.write_all(b"GET /v1/models HT").unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    note("full table", read_to_close(&mut connect()));
    for s in &mut slow {
        note("slow sender", read_to_close(s));
    }

    let mut g = connect();
    g.write_all(b"GARBAGE\r\n").unwrap();
    note("garbage", read_to_close(&mut g));

    let mut e = connect();
    e.write_all(b"GET /v1/models HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        .unwrap();
    note("evil host", read_to_close(&mut e));

    let body = r#"{"prompt":"Once","max_tokens":400,"ignore_eos":true}"#;
    let mut l = connect();
    write!(
        l,
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    drop(l);
    let mut c = connect();
    c.write_all(models_close).unwrap();
    note("after a cancelled generation", read_to_close(&mut c));

    // Kept alive, then closed by the server once idle.
    let mut k = connect();
    k.write_all(b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    note("keep-alive", read_response(&mut k));
    let rest = read_to_close(&mut k);
    assert!(rest.is_empty(), "{rest:?}");
    got
}
