//! Command-line arguments, parsed by hand.

use std::path::PathBuf;

/// What the firmware was started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    /// The GGUF model file.
    pub model: PathBuf,
    /// Address to listen on.
    pub host: String,
    /// Port to listen on.
    pub port: u16,
    /// Threads for the forward pass (`None`: all available).
    pub threads: Option<usize>,
    /// Context size in tokens (`None`: derived from the model and a memory budget).
    pub ctx: Option<usize>,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// Connections held at once (each with its own request buffer).
    pub max_connections: usize,
    /// Seconds from a request's first byte to its last.
    pub request_timeout: u64,
    /// Seconds a connection may wait for its next request (or its first).
    pub keep_alive_timeout: u64,
    /// Extra origins whose pages may call the API (`*`: any; `null` must be named).
    pub cors_origins: Vec<String>,
    /// Extra `Host` names answered (`*`: any).
    pub allowed_hosts: Vec<String>,
}

/// Usage text.
pub const USAGE: &str = "\
usage: trillim-firmware --model PATH.gguf [options]
  --host ADDR                 address to listen on (default 127.0.0.1)
  --port N                    port (default 8000)
  --threads N                 threads for the forward pass (default: all cores)
  --ctx N                     context size in tokens (default: the model's, KV cache <= 32 MiB)
  --max-body BYTES            largest request body (default 262144)
  --max-connections N         connections held at once, each with its own request buffer
                              (default 8, at most 64); more get 503
  --request-timeout SECS      time from a request's first byte to its last (default 10)
  --keep-alive-timeout SECS   time a connection may wait for its next request (default 5)
  --cors-origins LIST         comma-separated origins allowed besides loopback ones (* = any)
  --allowed-hosts LIST        comma-separated Host names answered besides loopback ones (* = any)";

/// Default largest request body.
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;
/// Default number of connection slots.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;
/// Most connection slots.
pub const MAX_CONNECTIONS: usize = crate::net::MAX_SLOTS;
/// Default seconds for a whole request to arrive.
pub const DEFAULT_REQUEST_TIMEOUT: u64 = 10;
/// Default seconds a connection may sit idle.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: u64 = 5;

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Args, String> {
        let mut model = None;
        let mut host = "127.0.0.1".to_string();
        let mut port = 8000u16;
        let mut threads = None;
        let mut ctx = None;
        let mut max_body = DEFAULT_MAX_BODY;
        let mut max_connections = DEFAULT_MAX_CONNECTIONS;
        let mut request_timeout = DEFAULT_REQUEST_TIMEOUT;
        let mut keep_alive_timeout = DEFAULT_KEEP_ALIVE_TIMEOUT;
        let mut cors_origins = Vec::new();
        let mut allowed_hosts = Vec::new();
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (a.clone(), None),
            };
            if flag == "-h" || flag == "--help" {
                return Err(USAGE.to_string());
            }
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next())
                    .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
            };
            let num = |v: String, what: &str| -> Result<usize, String> {
                v.parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("{what} must be a positive integer, got '{v}'"))
            };
            match flag.as_str() {
                "--model" | "-m" => model = Some(PathBuf::from(value()?)),
                "--host" => host = value()?,
                "--port" | "-p" => {
                    let v = value()?;
                    port = v
                        .parse()
                        .map_err(|_| format!("--port must be a port number, got '{v}'"))?
                }
                "--threads" | "-t" => threads = Some(num(value()?, "--threads")?),
                "--ctx" | "-c" => ctx = Some(num(value()?, "--ctx")?),
                "--max-body" => max_body = num(value()?, "--max-body")?,
                "--max-connections" => {
                    max_connections = num(value()?, "--max-connections")?;
                    if max_connections > MAX_CONNECTIONS {
                        return Err(format!("--max-connections is at most {MAX_CONNECTIONS}"));
                    }
                }
                "--request-timeout" => request_timeout = num(value()?, "--request-timeout")? as u64,
                "--keep-alive-timeout" => {
                    keep_alive_timeout = num(value()?, "--keep-alive-timeout")? as u64
                }
                "--cors-origins" => cors_origins.extend(list(value()?)),
                "--allowed-hosts" => allowed_hosts.extend(list(value()?)),
                other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
            }
        }
        let model = model.ok_or_else(|| format!("--model is required\n{USAGE}"))?;
        Ok(Args {
            model,
            host,
            port,
            threads,
            ctx,
            max_body,
            max_connections,
            request_timeout,
            keep_alive_timeout,
            cors_origins,
            allowed_hosts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[&str]) -> Result<Args, String> {
        Args::parse(s.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_flags() {
        let a = parse(&[
            "--model",
            "m.gguf",
            "--port=9000",
            "-t",
            "2",
            "--ctx",
            "512",
        ])
        .unwrap();
        assert_eq!(a.model, PathBuf::from("m.gguf"));
        assert_eq!((a.port, a.threads, a.ctx), (9000, Some(2), Some(512)));
        assert_eq!(a.host, "127.0.0.1");
        assert!(parse(&[]).is_err());
        assert!(parse(&["--model"]).is_err());
        assert!(parse(&["--model", "x", "--threads", "0"]).is_err());
        assert!(parse(&["--model", "x", "--bogus"]).is_err());
        assert_eq!(a.max_connections, DEFAULT_MAX_CONNECTIONS);
        let b = parse(&[
            "-m",
            "x",
            "--max-connections=3",
            "--request-timeout",
            "2",
            "--keep-alive-timeout=1",
            "--cors-origins",
            "https://a.example, null",
            "--allowed-hosts=box.lan",
        ])
        .unwrap();
        assert_eq!(
            (b.max_connections, b.request_timeout, b.keep_alive_timeout),
            (3, 2, 1)
        );
        assert_eq!(b.cors_origins, ["https://a.example", "null"]);
        assert_eq!(b.allowed_hosts, ["box.lan"]);
        assert!(parse(&["-m", "x", "--max-connections", "65"]).is_err());
        assert!(parse(&["-m", "x", "--request-timeout", "0"]).is_err());
    }
}
