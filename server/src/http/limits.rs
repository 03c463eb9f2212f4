//! What a client may hold: open connections, time to send a request, and memory in request
//! bodies that have not finished arriving. Every limit has a default that ordinary clients
//! never meet and a `trillim serve` flag.
//!
//! - A connection gets [`Limits::header_timeout`] to deliver a complete request head, counted
//!   from the moment it opens or finishes its previous response (so it is also the keep-alive
//!   idle timeout). Past it the connection is closed.
//! - A body must keep coming: no gap longer than [`Limits::body_timeout`], and the whole body
//!   within `body_timeout + bytes / min_body_rate` seconds. Otherwise `408` and the
//!   connection is closed.
//! - Bodies larger than [`SMALL_BODY`] share [`Limits::max_body_memory`] bytes: a body that
//!   does not fit gets `503` with `Retry-After` (the budget is released when the body is done
//!   or its connection dies). Smaller bodies, which ordinary chat requests are, never wait
//!   for that budget, so clients stalling large bodies cannot lock them out; they are bounded
//!   by the connection cap instead (at most `max_connections × SMALL_BODY` bytes).
//! - At most [`Limits::max_connections`] connections are served; the next ones get `503` with
//!   `Retry-After`, written without reading their request, and are closed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header;
use hyper::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout_at, Instant};

use crate::openai::ApiError;

/// Largest request body accepted.
pub const MAX_BODY: usize = 2 * 1024 * 1024;
/// Bodies up to this size are read without drawing on the shared body budget.
pub const SMALL_BODY: usize = 64 * 1024;
/// Bytes of an oversized body read (and dropped) before answering 413, so the client gets
/// to read the answer instead of a reset connection.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;
/// Connections over the cap that may be in the middle of being turned away at once; past
/// this they are closed without an answer.
const MAX_REJECTING: usize = 256;

/// The limits, as configured (`trillim serve`'s flags hold the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to deliver a request head, from connection open or the previous response.
    pub header_timeout: Duration,
    /// Longest pause inside a body, and the fixed part of the whole-body deadline.
    pub body_timeout: Duration,
    /// Slowest average body rate accepted, in bytes per second.
    pub min_body_rate: u64,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most bytes held by unfinished request bodies, all connections together.
    pub max_body_memory: usize,
}

/// The shared counters behind [`Limits`].
#[derive(Debug)]
pub struct Guards {
    /// The limits.
    pub limits: Limits,
    connections: Arc<Semaphore>,
    rejecting: Arc<Semaphore>,
    body_memory: Arc<Semaphore>,
}

/// What to do with a connection that was just accepted.
#[derive(Debug)]
pub enum Admission {
    /// Serve it; the permit is held for the connection's lifetime.
    Serve(OwnedSemaphorePermit),
    /// Turn it away with a 503.
    Reject(OwnedSemaphorePermit),
    /// Close it at once.
    Drop,
}

impl Guards {
    /// Counters for `limits`.
    pub fn new(limits: Limits) -> Guards {
        Guards {
            limits,
            connections: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            rejecting: Arc::new(Semaphore::new(MAX_REJECTING)),
            body_memory: Arc::new(Semaphore::new(
                limits.max_body_memory.clamp(1, Semaphore::MAX_PERMITS),
            )),
        }
    }

    /// Decides about a new connection.
    pub fn admit(&self) -> Admission {
        if let Ok(p) = self.connections.clone().try_acquire_owned() {
            return Admission::Serve(p);
        }
        match self.rejecting.clone().try_acquire_owned() {
            Ok(p) => Admission::Reject(p),
            Err(_) => Admission::Drop,
        }
    }

    /// Brings the reservation in `held` (covering `*reserved` bytes) up to a body of `total`
    /// bytes; the first [`SMALL_BODY`] bytes are free.
    fn reserve(
        &self,
        held: &mut Option<OwnedSemaphorePermit>,
        reserved: &mut usize,
        total: usize,
    ) -> Result<(), ApiError> {
        let n = total.saturating_sub(SMALL_BODY.max(*reserved));
        *reserved = (*reserved).max(total);
        if n == 0 {
            return Ok(());
        }
        let p = u32::try_from(n)
            .ok()
            .and_then(|n| self.body_memory.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(ApiError::bodies_busy)?;
        match held {
            Some(h) => h.merge(p),
            None => *held = Some(p),
        }
        Ok(())
    }
}

/// A complete request body, holding its share of the body-memory budget until dropped.
#[derive(Debug)]
pub struct RequestBody {
    bytes: Bytes,
    _budget: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for RequestBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads a body of at most [`MAX_BODY`] bytes under the deadlines and the memory budget.
/// A body that is too large (413) or does not fit the budget (503) is still read, up to a
/// bounded amount and without keeping it, so that the client gets to read the answer instead
/// of a reset connection.
pub async fn read_body(guards: &Guards, req: Request<Incoming>) -> Result<RequestBody, ApiError> {
    read_body_up_to(guards, req, MAX_BODY).await
}

/// [`read_body`] with another size limit (uploads), capped at the drain limit.
pub async fn read_body_up_to(
    guards: &Guards,
    req: Request<Incoming>,
    max: usize,
) -> Result<RequestBody, ApiError> {
    let max_body = max.min(DRAIN_LIMIT);
    let limits = &guards.limits;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut refused = declared
        .filter(|&n| n > max_body as u64)
        .map(|_| ApiError::too_large(max_body));
    let mut budget = None;
    let mut buf = Vec::new();
    // Body bytes the budget covers: the declared length up front, else what has arrived.
    let mut reserved = 0usize;
    if let (Some(n), None) = (declared, &refused) {
        match guards.reserve(&mut budget, &mut reserved, n as usize) {
            Ok(()) => buf.reserve_exact(reserved),
            Err(e) => refused = Some(e),
        }
    }
    let mut body = req.into_body();
    let start = Instant::now();
    let mut last = start;
    let mut seen = 0usize;
    loop {
        let rate_deadline = start
            + limits.body_timeout
            + Duration::from_secs_f64(seen as f64 / limits.min_body_rate.max(1) as f64);
        let deadline = rate_deadline.min(last + limits.body_timeout);
        let frame = match timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ApiError::body_timeout(seen, limits)),
            Ok(None) => break,
            Ok(Some(f)) => {
                f.map_err(|e| ApiError::invalid(format!("failed to read the request body: {e}")))?
            }
        };
        last = Instant::now();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if refused.is_none() && seen > max_body {
            refused = Some(ApiError::too_large(max_body));
        }
        if refused.is_none() {
            // A chunked body reserves as it arrives.
            match guards.reserve(&mut budget, &mut reserved, buf.len() + data.len()) {
                Ok(()) => buf.extend_from_slice(&data),
                Err(e) => refused = Some(e),
            }
        }
        if refused.is_some() {
            buf = Vec::new();
            budget = None;
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
    if let Some(e) = refused {
        return Err(e);
    }
    Ok(RequestBody {
        bytes: Bytes::from(buf),
        _budget: budget,
    })
}

/// Answers a connection over the cap with a 503 and closes it. The request is not parsed;
/// what the client already sent is drained (briefly, bounded) so that closing does not reset
/// the connection before the client has read the answer.
pub async fn reject(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let e = ApiError::too_many_connections();
    let body = e.body().to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        e.retry_after.unwrap_or(1),
        body.len()
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    if timeout_at(deadline, write).await.is_err() {
        return;
    }
    let mut scratch = [0u8; 4096];
    let mut drained = 0usize;
    while drained < 64 * 1024 {
        match timeout_at(deadline, stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}
