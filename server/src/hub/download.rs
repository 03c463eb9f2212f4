//! Resumable download of one file into the store.
//!
//! The file is written to `<dest>.part` and renamed to `<dest>` once it has its full size, so
//! a file under its final name is always complete. A later run continues a `.part` file with
//! a `Range: bytes=N-` request; a server that ignores the range (answers 200) gets the file
//! rewritten from the start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Hub, HubError};

/// One file to fetch.
#[derive(Debug)]
pub(crate) struct Fetch<'a> {
    /// The resolve URL.
    pub url: &'a str,
    /// Final path in the store.
    pub dest: &'a Path,
    /// Name shown in progress output and errors.
    pub label: &'a str,
    /// Size from the repository listing, when known.
    pub expected: Option<u64>,
    /// Discard what is on disk and download again.
    pub force: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// What [`fetch`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fetched {
    /// The complete file was already there.
    Skipped,
    /// The file was downloaded; `resumed_from` bytes came from an earlier `.part`.
    Downloaded {
        /// Bytes transferred now.
        bytes: u64,
        /// Bytes kept from a previous attempt.
        resumed_from: u64,
    },
}

/// `<dest>.part`.
pub(crate) fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

fn remove_if_present(p: &Path) -> Result<(), HubError> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(HubError::io(p, e)),
    }
}

fn file_len(p: &Path) -> Option<u64> {
    fs::metadata(p)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

/// `Content-Range: bytes a-b/total` (or `bytes */total`) → (start, total).
fn parse_content_range(v: &str) -> (Option<u64>, Option<u64>) {
    let Some(rest) = v.trim().strip_prefix("bytes") else {
        return (None, None);
    };
    let rest = rest.trim_start();
    let (range, total) = rest.split_once('/').unwrap_or((rest, "*"));
    let start = range
        .split_once('-')
        .and_then(|(a, _)| a.trim().parse().ok());
    (start, total.trim().parse().ok())
}

fn header_u64(resp: &ureq::Response, name: &str) -> Option<u64> {
    resp.header(name).and_then(|v| v.trim().parse().ok())
}

/// Fetches `f.url` into `f.dest`, resuming a `.part` file left by an earlier attempt.
/// HTTP errors go through `map_err`.
pub(crate) fn fetch(
    hub: &Hub,
    f: &Fetch<'_>,
    map_err: impl Fn(ureq::Error) -> HubError,
) -> Result<Fetched, HubError> {
    let part = part_path(f.dest);
    if f.force {
        remove_if_present(f.dest)?;
        remove_if_present(&part)?;
    } else if let Some(len) = file_len(f.dest) {
        // A file under its final name was complete when it was renamed; only a changed size
        // in the listing (a new revision) makes it stale.
        if f.expected.is_none_or(|e| e == len) {
            return Ok(Fetched::Skipped);
        }
    }
    let mut offset = file_len(&part).unwrap_or(0);
    if let Some(e) = f.expected {
        if offset > e {
            offset = 0;
        } else if offset == e && e > 0 {
            finish(&part, f.dest)?;
            return Ok(Fetched::Downloaded {
                bytes: 0,
                resumed_from: offset,
            });
        }
    }
    let resumed_from = offset;
    // At most one restart: when the server refuses or misreads the range.
    for _ in 0..2 {
        let mut req = hub.get(f.url);
        if offset > 0 {
            req = req.set("Range", &format!("bytes={offset}-"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(416, resp)) if offset > 0 => {
                // The range starts at or past the end: the part is complete, or stale.
                let (_, total) = resp
                    .header("Content-Range")
                    .map(parse_content_range)
                    .unwrap_or((None, None));
                if total.or(f.expected) == Some(offset) {
                    finish(&part, f.dest)?;
                    return Ok(Fetched::Downloaded {
                        bytes: 0,
                        resumed_from,
                    });
                }
                offset = 0;
                continue;
            }
            Err(e) => return Err(map_err(e)),
        };
        let total = if resp.status() == 206 {
            let (start, total) = resp
                .header("Content-Range")
                .map(parse_content_range)
                .unwrap_or((None, None));
            if start != Some(offset) {
                offset = 0;
                continue;
            }
            total
                .or_else(|| header_u64(&resp, "Content-Length").map(|n| n + offset))
                .or(f.expected)
        } else {
            // A full answer: start over.
            offset = 0;
            header_u64(&resp, "Content-Length")
                .or_else(|| header_u64(&resp, "X-Linked-Size"))
                .or(f.expected)
        };
        let mut file = if offset == 0 {
            File::create(&part)
        } else {
            OpenOptions::new().append(true).open(&part)
        }
        .map_err(|e| HubError::io(&part, e))?;

        let bar = progress_bar(f, total, offset);
        let copied = copy(resp.into_reader(), &mut file, &bar);
        let synced = file.flush().and_then(|_| file.sync_all());
        bar.finish_and_clear();
        let bytes = copied.map_err(|e| match e {
            CopyError::Read(e) => HubError::Interrupted {
                file: f.label.to_string(),
                detail: e.to_string(),
            },
            CopyError::Write(e) => HubError::io(&part, e),
        })?;
        synced.map_err(|e| HubError::io(&part, e))?;
        let got = file_len(&part).unwrap_or(0);
        if let Some(expected) = total.or(f.expected) {
            if got != expected {
                if got > expected {
                    // Not a prefix of the file we want: never resume from it.
                    remove_if_present(&part)?;
                }
                return Err(HubError::Incomplete {
                    file: f.label.to_string(),
                    got,
                    expected,
                });
            }
        }
        finish(&part, f.dest)?;
        if f.progress {
            let how = if resumed_from > 0 && offset > 0 {
                format!(" (resumed at {})", super::human_size(offset))
            } else {
                String::new()
            };
            eprintln!("{}: {}{how}", f.label, super::human_size(got));
        }
        return Ok(Fetched::Downloaded {
            bytes,
            resumed_from: offset,
        });
    }
    Err(HubError::BadResponse {
        url: f.url.to_string(),
        detail: "the server does not honour byte ranges consistently".into(),
    })
}

fn finish(part: &Path, dest: &Path) -> Result<(), HubError> {
    fs::rename(part, dest).map_err(|e| HubError::io(dest, e))
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

fn copy(mut r: impl Read, w: &mut File, bar: &ProgressBar) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        w.write_all(&buf[..k]).map_err(CopyError::Write)?;
        n += k as u64;
        bar.inc(k as u64);
    }
}

fn progress_bar(f: &Fetch<'_>, total: Option<u64>, start: u64) -> ProgressBar {
    if !f.progress {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if total.is_some() {
        "{msg:24!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg:24!} {spinner} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(f.label.to_string());
    bar.set_position(start);
    bar
}
