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
}

/// Usage text.
pub const USAGE: &str =
    "usage: trillim-firmware --model PATH.gguf [--host 127.0.0.1] [--port 8000] \
[--threads N] [--ctx N] [--max-body BYTES]";

/// Default largest request body.
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Args, String> {
        let mut model = None;
        let mut host = "127.0.0.1".to_string();
        let mut port = 8000u16;
        let mut threads = None;
        let mut ctx = None;
        let mut max_body = DEFAULT_MAX_BODY;
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
    }
}
