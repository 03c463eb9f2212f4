//! Client helpers shared by the firmware's loopback tests.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

/// Reads one response framed by `Content-Length` (or up to a close), waiting at most 30 s for
/// each read.
pub fn read_response(s: &mut TcpStream) -> String {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&all).into_owned();
        if let Some(h) = text.find("\r\n\r\n") {
            let len = text[..h]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(len) = len {
                if all.len() >= h + 4 + len {
                    return text;
                }
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return text,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads until the server closes (or resets) the connection, waiting at most 30 s for each
/// read.
pub fn read_to_close(s: &mut TcpStream) -> String {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// The status code of a response's text (0 when there is none).
pub fn status(r: &str) -> u16 {
    r.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}
