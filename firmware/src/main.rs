//! `trillim-firmware --model PATH.gguf [--host 127.0.0.1] [--port 8000] [options]`; see
//! [`trillim_firmware::args::USAGE`].
#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::process::ExitCode;
use std::time::Duration;

use trillim_core::browser::{is_loopback_bind, BrowserPolicy};
use trillim_firmware::args::Args;
use trillim_firmware::{Firmware, Net, NetConfig, Options};

/// Start-up strings that the policy borrows for the life of the process.
fn leak_list(v: Vec<String>) -> &'static [&'static str] {
    let v: Vec<&'static str> = v.into_iter().map(|s| &*s.leak()).collect();
    v.leak()
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let browser = BrowserPolicy {
        check_host: is_loopback_bind(&args.host) || !args.allowed_hosts.is_empty(),
        cors_origins: leak_list(args.cors_origins.clone()),
        allowed_hosts: leak_list(args.allowed_hosts.clone()),
        bound: args.host.clone().leak(),
    };
    let opts = Options {
        ctx: args.ctx,
        threads: args
            .threads
            .unwrap_or_else(trillim_runtime::pool::auto_threads),
        max_body: args.max_body,
        browser,
        ..Options::default()
    };
    let mut fw = match Firmware::new(&args.model, opts) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind((args.host.as_str(), args.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}:{}: {e}", args.host, args.port);
            return ExitCode::FAILURE;
        }
    };
    let cfg = NetConfig {
        max_connections: args.max_connections,
        request_timeout: Duration::from_secs(args.request_timeout),
        keep_alive_timeout: Duration::from_secs(args.keep_alive_timeout),
        ..NetConfig::default()
    };
    let mut net = match Net::new(listener, cfg, &fw) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let port = net.local_addr().map_or(args.port, |a| a.port());
    eprintln!(
        "serving {} on http://{}:{} (context {} tokens, {} threads, {} connections, {:.1} MiB of buffers)",
        fw.name(),
        args.host,
        port,
        fw.ctx(),
        opts.threads,
        args.max_connections,
        (fw.memory_bytes() + net.memory_bytes()) as f64 / (1 << 20) as f64
    );
    net.run(&mut fw)
}
