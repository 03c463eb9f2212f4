//! Proof that serving allocates nothing: a counting global allocator around many requests of
//! every kind (streaming, not streaming, malformed, oversized), driven over in-memory streams.
//!
//! Runs without the test harness so no other thread allocates while counting.

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use embedded_io::{ErrorType, Read, Write};
use trillim_firmware::{Firmware, Options};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if COUNTING.load(Ordering::SeqCst) {
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
/// fixed buffer.
struct Mem<'a> {
    input: &'a [u8],
    pos: usize,
    piece: usize,
    out: &'a mut [u8],
    n: usize,
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
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
}

fn serve(fw: &mut Firmware, input: &[u8], out: &mut [u8], piece: usize) -> usize {
    let mut m = Mem {
        input,
        pos: 0,
        piece,
        out,
        n: 0,
    };
    let _ = fw.serve_connection(&mut m);
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
    let expected_round = [200, 200, 200, 200, 200, 400, 400, 400, 400, 404, 405, 405];
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
        ("GET / HTTP/3.0\r\n\r\n".to_string(), 505),
        (
            format!("GET / HTTP/1.1\r\nA: {}\r\n\r\n", "b".repeat(20000)),
            431,
        ),
    ];
    let mut out = vec![0u8; 4 << 20];

    let mut n_closing = Vec::with_capacity(closing.len());

    COUNTING.store(true, Ordering::SeqCst);
    let n = serve(&mut fw, conn.as_bytes(), &mut out, 1000);
    for (c, _) in &closing {
        n_closing.push(serve(&mut fw, c.as_bytes(), &mut out[n..], 777));
    }
    // Byte-at-a-time reads of a whole keep-alive exchange.
    let m = serve(&mut fw, round[1].as_bytes(), &mut out[n + 4096..], 1);
    COUNTING.store(false, Ordering::SeqCst);

    let allocs = ALLOCS.load(Ordering::SeqCst);
    let bytes = BYTES.load(Ordering::SeqCst);
    let requests = expected.len() + closing.len() + 1;

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
    let _ = m;
    for ((c, want), k) in closing.iter().zip(&n_closing) {
        let mut one = vec![0u8; 4096];
        let k2 = serve(&mut fw, c.as_bytes(), &mut one, 777);
        assert_eq!(*k, k2);
        assert_eq!(statuses(&one[..k2.min(4096)]), vec![*want]);
    }
    println!("no_alloc: {requests} requests served, {allocs} heap allocations ({bytes} bytes)");
    assert_eq!(
        allocs, 0,
        "serving allocated {allocs} times ({bytes} bytes)"
    );
}
