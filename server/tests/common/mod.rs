//! Shared by the HTTP test files: start `trillim serve` on a loopback port with its own store
//! and talk raw HTTP/1.1 to it over std sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/models")
        .join(name)
}

/// A GGUF v3 file with only `general.architecture` set: a well-formed header this build
/// refuses to load when `arch` is not one it runs.
pub fn gguf_with_architecture(arch: &str) -> Vec<u8> {
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&1u64.to_le_bytes());
    string(&mut out, "general.architecture");
    out.extend_from_slice(&8u32.to_le_bytes());
    string(&mut out, arch);
    out
}

/// A server process with its own model store; killed on drop.
pub struct Server {
    pub child: Child,
    pub client: Client,
    pub home: PathBuf,
}

/// Talks HTTP/1.1 to a server's port.
#[derive(Clone, Copy)]
pub struct Client {
    pub port: u16,
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a server on `org/tiny` (the TQ2_0 fixture) with extra arguments.
pub fn start(tag: &str, extra: &[&str]) -> Server {
    start_model(tag, "org/tiny", extra)
}

/// As [`start`], serving `model` of the same store, which also holds SmolLM2 as `org/smol`
/// (a real model whose 8192-token context keeps a generation going for many seconds).
pub fn start_model(tag: &str, model: &str, extra: &[&str]) -> Server {
    let home = store_with(
        &format!("http-{tag}"),
        "org/smol",
        &trillim_tests::smollm2_path(),
    );
    for (dir, file) in [
        ("org/tiny", "tiny-bitnet-tq2_0.gguf"),
        ("org/other", "tiny-b158-i2_s.gguf"),
    ] {
        let d = home.join("models").join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(fixture(file), d.join(file)).unwrap();
    }
    let mut args = vec![model, "--threads", "1"];
    args.extend_from_slice(extra);
    serve(home, &args, &[])
}

/// A fresh store under the temp directory (`trillim-<tag>-<pid>`) holding the model file
/// `src` as store id `id` (hard-linked where the file system allows).
pub fn store_with(tag: &str, id: &str, src: &Path) -> PathBuf {
    let home = std::env::temp_dir().join(format!("trillim-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let dir = home.join("models").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let dest = dir.join(src.file_name().unwrap());
    if std::fs::hard_link(src, &dest).is_err() {
        std::fs::copy(src, &dest).unwrap();
    }
    home
}

/// Runs `trillim serve ARGS… --port P` on the store under `home` (removed when the server is
/// dropped) with the extra environment `env`, and waits until `/health` answers.
pub fn serve(home: PathBuf, args: &[&str], env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_trillim"))
        .arg("serve")
        .args(args)
        .args(["--port", &port.to_string()])
        .envs(env.iter().copied())
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
    while !matches!(s.try_request("GET", "/health", None, &[]), Ok((200, _, _))) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "server did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

pub type Resp = (u16, Vec<(String, String)>, String);

impl Client {
    pub fn connect(&self) -> std::io::Result<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(s)
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> std::io::Result<TcpStream> {
        let mut s = self.connect()?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str("Host: 127.0.0.1\r\n");
        }
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

    pub fn try_request(
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
    pub fn open_stream(&self, body: &Value) -> BufReader<TcpStream> {
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

    pub fn post(&self, path: &str, v: &Value) -> (u16, Value) {
        let (st, _, body) = self
            .try_request("POST", path, Some(v.to_string().as_bytes()), &[])
            .unwrap();
        (
            st,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }
}

pub fn read_head(r: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
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

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
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

pub fn assert_error(v: &Value, status: u16, want: u16) {
    assert_eq!(status, want, "{v}");
    let e = &v["error"];
    assert!(e["message"].is_string() && e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
}

pub fn chat_body(extra: Value) -> Value {
    let mut b = json!({"model": "tiny", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 4});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}
