//! `trillim-firmware --model PATH.gguf [--host 127.0.0.1] [--port 8000] [--threads N] [--ctx N]`

use std::net::TcpListener;
use std::process::ExitCode;
use std::time::Duration;

use trillim_firmware::args::Args;
use trillim_firmware::io::StdIo;
use trillim_firmware::{Firmware, Options};

/// A connection that sends nothing for this long is closed, so one idle client cannot hold
/// the (single) connection slot forever.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let opts = Options {
        ctx: args.ctx,
        threads: args
            .threads
            .unwrap_or_else(trillim_runtime::pool::auto_threads),
        max_body: args.max_body,
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
    eprintln!(
        "serving {} on http://{}:{} (context {} tokens, {} threads, {:.1} MiB of buffers)",
        fw.name(),
        args.host,
        args.port,
        fw.ctx(),
        opts.threads,
        fw.memory_bytes() as f64 / (1 << 20) as f64
    );
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
        let _ = stream.set_nodelay(true);
        let mut io = StdIo(stream);
        // A failed connection (reset, timeout) only ends that connection.
        let _ = fw.serve_connection(&mut io);
    }
    ExitCode::SUCCESS
}
