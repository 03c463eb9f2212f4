//! The connection layer: a fixed table of connection slots, each with its own request buffer
//! allocated at start-up, served by one thread over non-blocking sockets and `poll(2)`.
//!
//! Requests are received on every slot at once; complete ones are answered one at a time, in
//! the order they completed. While an answer is being generated, the handler asks
//! [`Peer::alive`] between tokens, and that call also accepts new connections, receives request
//! bytes on the other slots and enforces their deadlines, so a long generation neither hides the
//! server nor lets clients wait unboundedly. Limits:
//! - a request must arrive whole (head and body) within `request_timeout` of its first byte,
//!   or it gets `408`; a connection waiting for a request (new or kept alive) is closed after
//!   `keep_alive_timeout`;
//! - a bad first line, an oversized head or body get their error as soon as that is known;
//! - when every slot is taken, a new connection waits (up to 200 ms, without a buffer) for one:
//!   it takes the slot of the client that has been waiting for (or sending) its request the
//!   longest, if that has lasted over `evict_grace`, or over 100 ms when the newcomer has sent
//!   more of a request than that client (a whole head against none, a whole request against
//!   an unfinished body), so clients sending at full speed displace trickling ones; an evicted
//!   sender gets `408`. Waiting connections with a whole request are placed first and kept
//!   when the wait list is full. A newcomer that finds no slot in time gets `503` with
//!   `Retry-After`, without its request being read;
//! - a response that cannot be written for `request_timeout` ends its connection;
//! - a client that closes its connection during a generation cancels it.
//!
//! Connections are closed gracefully after an answer that ends them: the write side is shut
//! and what the client still sends is read and dropped (for a bounded time and size), so the
//! kernel does not turn unread input into a reset that would destroy the answer.

use core::fmt;
use std::io::{self, ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use embedded_io::ErrorType;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use trillim_core::http::Limits;

use crate::frame::{frame, Frame};
use crate::io::{Peer, StdIo};
use crate::reply::{self, ErrorBody, Extra};
use crate::server::Firmware;

/// Most connection slots.
pub const MAX_SLOTS: usize = 64;
/// How long a closing connection's input is drained.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes drained from a closing connection.
const DRAIN_LIMIT: usize = 16 << 20;
/// During a generation, other connections are looked after at least this often.
const SERVICE_EVERY: Duration = Duration::from_millis(2);
/// Most connections accepted in one pass, so a flood cannot stall a generation.
const ACCEPTS_PER_PASS: usize = 64;
/// `Retry-After` of a `503`, in seconds.
const RETRY_AFTER: u32 = 1;
/// Most new connections waiting for a slot at once.
const MAX_PENDING: usize = 64;
/// How long a new connection may wait for a slot before it gets `503`.
const PROBATION: Duration = Duration::from_millis(200);
/// Bytes of a waiting connection looked at to see how much of a request it sent.
const PROOF_BYTES: usize = 8192;
/// A slot must have been waiting this long before a connection that sent more of a request
/// than its holder may take it.
const PROVEN_GRACE: Duration = Duration::from_millis(100);

/// Limits of the connection layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Connection slots (at most [`MAX_SLOTS`]).
    pub max_connections: usize,
    /// Time from a request's first byte to its last; also the longest a response may stall.
    pub request_timeout: Duration,
    /// Time a connection may wait for a request: after it opens, and between requests.
    pub keep_alive_timeout: Duration,
    /// A slot must have been waiting this long before a newcomer may take it.
    pub evict_grace: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            max_connections: crate::args::DEFAULT_MAX_CONNECTIONS,
            request_timeout: Duration::from_secs(crate::args::DEFAULT_REQUEST_TIMEOUT),
            keep_alive_timeout: Duration::from_secs(crate::args::DEFAULT_KEEP_ALIVE_TIMEOUT),
            evict_grace: Duration::from_secs(2),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    /// Waiting for the first byte of a request, since `since`.
    Idle,
    /// Receiving a request whose first byte came at `since`; `end` once the head is known.
    Reading {
        end: Option<usize>,
    },
    /// A whole request of `end` bytes waits in the queue.
    Ready {
        end: usize,
    },
    /// Being answered.
    Busy,
    /// Answered and shut for writing; input is drained until EOF or `since + LINGER`.
    Closing,
}

#[derive(Debug)]
struct Slot {
    conn: Option<TcpStream>,
    buf: Vec<u8>,
    filled: usize,
    state: State,
    since: Instant,
    /// `100 Continue` was sent for the current request.
    continued: bool,
    /// Bytes drained while closing.
    drained: usize,
}

impl Slot {
    fn new(buf: Vec<u8>, now: Instant) -> Slot {
        Slot {
            conn: None,
            buf,
            filled: 0,
            state: State::Free,
            since: now,
            continued: false,
            drained: 0,
        }
    }
}

/// A new connection waiting for a slot.
#[derive(Debug)]
struct Pending {
    conn: TcpStream,
    since: Instant,
    /// Bytes it had sent when last looked at.
    seen: usize,
    rank: Rank,
}

/// How much of a request a waiting connection has sent: the more, the sooner it gets a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    /// No whole head yet.
    Nothing,
    /// A whole head (or one that is refused at once), not its whole body.
    Head,
    /// A whole request.
    Request,
}

impl Pending {
    /// Looks at what the connection has sent so far (without reading it).
    fn rank(&mut self, limits: &Limits, max_body: usize) -> Rank {
        if self.rank < Rank::Request {
            let mut head = [0u8; PROOF_BYTES];
            if let Ok(n) = self.conn.peek(&mut head) {
                if n > self.seen {
                    self.seen = n;
                    self.rank = match frame(&head[..n], limits, max_body) {
                        Frame::Partial => Rank::Nothing,
                        Frame::Head { .. } => Rank::Head,
                        Frame::Complete { .. } | Frame::Reject(_) => Rank::Request,
                    };
                }
            }
        }
        self.rank
    }
}

/// The listener and the connection slots.
#[derive(Debug)]
pub struct Net {
    listener: TcpListener,
    slots: Vec<Slot>,
    pending: heapless::Deque<Pending, MAX_PENDING>,
    /// Slots holding a whole request, oldest first.
    queue: heapless::Deque<usize, MAX_SLOTS>,
    cfg: NetConfig,
    limits: Limits,
    max_body: usize,
}

impl Net {
    /// Takes over `listener` and allocates a request buffer for every slot, sized for the
    /// requests `fw` accepts.
    pub fn new(listener: TcpListener, cfg: NetConfig, fw: &Firmware) -> io::Result<Net> {
        listener.set_nonblocking(true)?;
        let now = Instant::now();
        let n = cfg.max_connections.clamp(1, MAX_SLOTS);
        let slots = (0..n)
            .map(|_| Slot::new(vec![0; fw.request_capacity()], now))
            .collect();
        Ok(Net {
            listener,
            slots,
            pending: heapless::Deque::new(),
            queue: heapless::Deque::new(),
            cfg: NetConfig {
                max_connections: n,
                ..cfg
            },
            limits: fw.limits(),
            max_body: fw.max_body(),
        })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Bytes of the request buffers.
    pub fn memory_bytes(&self) -> usize {
        self.slots.iter().map(|s| s.buf.len()).sum()
    }

    /// Serves forever.
    pub fn run(&mut self, fw: &mut Firmware) -> ! {
        loop {
            self.turn(fw, None);
        }
    }

    /// Waits until a connection, request bytes or a deadline need attention (at most
    /// `max_wait`; `None`: as long as that takes), looks after them, and answers every
    /// complete request in turn.
    pub fn turn(&mut self, fw: &mut Firmware, max_wait: Option<Duration>) {
        self.wait(max_wait);
        self.service();
        while let Some(i) = self.queue.pop_front() {
            self.serve(i, fw);
            self.service();
        }
    }

    fn deadline(&self, s: &Slot) -> Option<Instant> {
        match s.state {
            State::Idle => Some(s.since + self.cfg.keep_alive_timeout),
            State::Reading { .. } => Some(s.since + self.cfg.request_timeout),
            State::Closing => Some(s.since + LINGER),
            _ => None,
        }
    }

    /// Sleeps in `poll(2)` on the listener and the slots that wait for input.
    fn wait(&self, max_wait: Option<Duration>) {
        if !self.queue.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut until = max_wait.map(|d| now + d);
        let mut fds: heapless::Vec<PollFd<'_>, { MAX_SLOTS + MAX_PENDING + 1 }> =
            heapless::Vec::new();
        let _ = fds.push(PollFd::new(&self.listener, PollFlags::IN));
        for p in &self.pending {
            let _ = fds.push(PollFd::new(&p.conn, PollFlags::IN));
            let d = p.since + PROBATION;
            until = Some(until.map_or(d, |u| u.min(d)));
        }
        for s in &self.slots {
            if let (Some(c), Some(d)) = (&s.conn, self.deadline(s)) {
                let _ = fds.push(PollFd::new(c, PollFlags::IN));
                until = Some(until.map_or(d, |u| u.min(d)));
            }
        }
        // Rounded up so a deadline has passed when poll returns.
        let timeout = until
            .map(|u| u.saturating_duration_since(now) + Duration::from_millis(1))
            .and_then(|d| Timespec::try_from(d).ok());
        let _ = poll(&mut fds, timeout.as_ref());
    }

    /// Accepts waiting connections, receives request bytes on every slot and enforces the
    /// deadlines; never blocks.
    fn service(&mut self) {
        let now = Instant::now();
        self.accept(now);
        for i in 0..self.slots.len() {
            self.pump(i, now);
        }
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPTS_PER_PASS {
            let conn = match self.listener.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // Nothing waiting, or out of descriptors: try again next pass.
                Err(_) => break,
            };
            if conn.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = conn.set_nodelay(true);
            let mut p = Pending {
                conn,
                since: now,
                seen: 0,
                rank: Rank::Nothing,
            };
            p.rank(&self.limits, self.max_body);
            if self.pending.is_full() {
                // Turn away the oldest of those that have not sent a whole request (the
                // newcomer's may still be on its way); when all have, the newcomer.
                let (limits, max_body) = (self.limits, self.max_body);
                for q in self.pending.iter_mut() {
                    q.rank(&limits, max_body);
                }
                let low = self.pending.iter().position(|q| q.rank < Rank::Request);
                match low.and_then(|k| self.take_pending(k)) {
                    Some(q) => busy(q.conn),
                    None => {
                        busy(p.conn);
                        continue;
                    }
                }
            }
            let _ = self.pending.push_back(p);
        }
        self.place_pending(now);
    }

    /// Removes the `k`-th waiting connection, keeping the others' order.
    fn take_pending(&mut self, k: usize) -> Option<Pending> {
        let mut taken = None;
        for j in 0..self.pending.len() {
            let p = self.pending.pop_front()?;
            if j == k {
                taken = Some(p);
            } else {
                let _ = self.pending.push_back(p);
            }
        }
        taken
    }

    /// Gives waiting connections slots, those that sent the most first, then the oldest;
    /// turns away those that waited too long.
    fn place_pending(&mut self, now: Instant) {
        for want in [Rank::Request, Rank::Head, Rank::Nothing] {
            for _ in 0..self.pending.len() {
                let Some(mut p) = self.pending.pop_front() else {
                    return;
                };
                let rank = p.rank(&self.limits, self.max_body);
                if rank != want {
                    let _ = self.pending.push_back(p);
                    continue;
                }
                match self.free_slot(now, rank) {
                    Some(i) => {
                        let s = &mut self.slots[i];
                        s.conn = Some(p.conn);
                        s.state = State::Idle;
                        s.since = now;
                        s.filled = 0;
                        s.continued = false;
                        // What it already sent is read at once.
                        self.pump(i, now);
                    }
                    None if now.duration_since(p.since) >= PROBATION => busy(p.conn),
                    None => {
                        let _ = self.pending.push_back(p);
                    }
                }
            }
        }
    }

    /// A slot for a new connection that sent `rank` of a request: a free one, a closing one,
    /// or the one that has waited for its request the longest, if that has lasted over the
    /// grace, or over a shorter one when the newcomer sent more than the holder (a whole head
    /// against none, a whole request against an unfinished one).
    fn free_slot(&mut self, now: Instant, rank: Rank) -> Option<usize> {
        if let Some(i) = self.slots.iter().position(|s| s.state == State::Free) {
            return Some(i);
        }
        if let Some(i) = self.slots.iter().position(|s| s.state == State::Closing) {
            self.drop_conn(i);
            return Some(i);
        }
        let grace = self.cfg.evict_grace;
        let (i, _) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                let age = now.duration_since(s.since);
                let holder = match s.state {
                    State::Idle | State::Reading { end: None } => Rank::Nothing,
                    State::Reading { end: Some(_) } => Rank::Head,
                    _ => return false,
                };
                age >= grace || (rank > holder && age >= PROVEN_GRACE)
            })
            .min_by_key(|(_, s)| s.since)?;
        let s = &mut self.slots[i];
        if let (State::Reading { .. }, Some(c)) = (s.state, s.conn.take()) {
            let e = ErrorBody::new(408, &EVICTED).code("request_timeout");
            refuse(c, &e, 0);
        }
        self.drop_conn(i);
        Some(i)
    }

    /// Reads what slot `i` has received and moves it on.
    fn pump(&mut self, i: usize, now: Instant) {
        let s = &mut self.slots[i];
        let Some(conn) = &s.conn else { return };
        match s.state {
            State::Idle | State::Reading { .. } => {
                let (mut got, mut eof) = (false, false);
                while s.filled < s.buf.len() {
                    match (&*conn).read(&mut s.buf[s.filled..]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => {
                            if s.state == State::Idle {
                                s.state = State::Reading { end: None };
                                s.since = now;
                            }
                            s.filled += n;
                            got = true;
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => {
                            eof = true;
                            break;
                        }
                    }
                }
                if got {
                    self.advance(i, now);
                }
                let s = &self.slots[i];
                let late = self.deadline(s).is_some_and(|d| now >= d);
                match s.state {
                    // A request that arrived whole is answered even if its client stopped
                    // sending.
                    State::Ready { .. } | State::Closing => {}
                    _ if eof => self.drop_conn(i),
                    State::Idle if late => self.drop_conn(i),
                    State::Reading { .. } if late => {
                        let msg = Late(self.cfg.request_timeout.as_secs());
                        let e = ErrorBody::new(408, &msg).code("request_timeout");
                        self.answer_close(i, &e, now);
                    }
                    _ => {}
                }
            }
            State::Closing => {
                let done = loop {
                    match (&*conn).read(&mut s.buf) {
                        Ok(0) => break true,
                        Ok(n) => {
                            s.drained += n;
                            if s.drained > DRAIN_LIMIT {
                                break true;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                        Err(_) => break true,
                    }
                };
                if done || now >= s.since + LINGER {
                    self.drop_conn(i);
                }
            }
            _ => {}
        }
    }

    /// Frames the bytes of slot `i` (in `Reading`): queues a whole request, answers one that
    /// must be refused.
    fn advance(&mut self, i: usize, now: Instant) {
        let s = &mut self.slots[i];
        if let State::Reading { end: Some(end) } = s.state {
            if s.filled >= end {
                s.state = State::Ready { end };
                let _ = self.queue.push_back(i);
            }
            return;
        }
        match frame(&s.buf[..s.filled], &self.limits, self.max_body) {
            Frame::Partial => {}
            Frame::Head {
                end,
                expect_continue,
            } => {
                s.state = State::Reading { end: Some(end) };
                if expect_continue && !s.continued {
                    s.continued = true;
                    if let Some(c) = &s.conn {
                        let _ = (&*c).write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                }
            }
            Frame::Complete { end } => {
                s.state = State::Ready { end };
                let _ = self.queue.push_back(i);
            }
            Frame::Reject(r) => self.answer_close(i, &r.body(), now),
        }
    }

    /// Answers slot `i` with an error and closes it.
    fn answer_close(&mut self, i: usize, e: &ErrorBody<'_>, now: Instant) {
        if let Some(c) = &self.slots[i].conn {
            let _ = reply::error_close(&mut StdIo(c), e, &Extra::default());
        }
        self.close(i, now);
    }

    /// Shuts slot `i` for writing and lets it drain.
    fn close(&mut self, i: usize, now: Instant) {
        let s = &mut self.slots[i];
        if let Some(c) = &s.conn {
            let _ = c.shutdown(Shutdown::Write);
        }
        s.state = State::Closing;
        s.since = now;
        s.filled = 0;
        s.drained = 0;
    }

    fn drop_conn(&mut self, i: usize) {
        let s = &mut self.slots[i];
        s.conn = None;
        s.state = State::Free;
        s.filled = 0;
    }

    /// Answers the request waiting in slot `i`.
    fn serve(&mut self, i: usize, fw: &mut Firmware) {
        let State::Ready { end } = self.slots[i].state else {
            return;
        };
        let now = Instant::now();
        // The slot is lent to the handler; its place stays `Busy` so that the connection
        // work done meanwhile leaves it alone.
        let mut slot = std::mem::replace(&mut self.slots[i], Slot::new(Vec::new(), now));
        self.slots[i].state = State::Busy;
        let Some(conn) = slot.conn.take() else {
            self.slots[i] = slot;
            self.drop_conn(i);
            return;
        };
        let (r, gone) = {
            let mut peer = Serving {
                net: self,
                stream: &conn,
                gone: false,
                serviced: now,
            };
            let r = fw.handle(&mut peer, &slot.buf[..end]);
            (r, peer.gone)
        };
        slot.conn = Some(conn);
        self.slots[i] = slot;
        let now = Instant::now();
        match r {
            Ok(true) if !gone => {
                let s = &mut self.slots[i];
                s.buf.copy_within(end..s.filled, 0);
                s.filled -= end;
                s.continued = false;
                s.since = now;
                if s.filled == 0 {
                    s.state = State::Idle;
                } else {
                    // A pipelined request.
                    s.state = State::Reading { end: None };
                    self.advance(i, now);
                }
            }
            Ok(_) if !gone => self.close(i, now),
            _ => self.drop_conn(i),
        }
    }
}

/// Answers `503` to a connection that gets no slot, without reading its request.
fn busy(conn: TcpStream) {
    let e = ErrorBody::new(503, &BUSY).code("too_many_connections");
    refuse(conn, &e, RETRY_AFTER);
}

/// Answers a connection that gets no slot, without reading its request, and closes it.
fn refuse(conn: TcpStream, e: &ErrorBody<'_>, retry_after: u32) {
    let extra = Extra {
        retry_after: (retry_after > 0).then_some(retry_after),
        ..Extra::default()
    };
    let _ = reply::error_close(&mut StdIo(&conn), e, &extra);
    let _ = conn.shutdown(Shutdown::Write);
    // What already arrived is read, so that closing sends a FIN rather than a reset.
    let mut scratch = [0u8; 1024];
    for _ in 0..16 {
        match (&conn).read(&mut scratch) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// The connection being answered, as the handler sees it. Writes wait (looking after the
/// other slots meanwhile) when the socket is full; [`Peer::alive`] peeks for a close.
struct Serving<'n> {
    net: &'n mut Net,
    stream: &'n TcpStream,
    /// The client closed, reset or stopped reading.
    gone: bool,
    /// When the other slots were last looked after.
    serviced: Instant,
}

impl Serving<'_> {
    fn service(&mut self, now: Instant) {
        self.net.service();
        self.serviced = now;
    }
}

impl ErrorType for Serving<'_> {
    type Error = io::Error;
}

impl embedded_io::Write for Serving<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut stalled = None;
        loop {
            let mut s = self.stream;
            match s.write(buf) {
                Ok(0) => {
                    self.gone = true;
                    return Err(ErrorKind::WriteZero.into());
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let now = Instant::now();
                    if now.duration_since(*stalled.get_or_insert(now))
                        >= self.net.cfg.request_timeout
                    {
                        self.gone = true;
                        return Err(ErrorKind::TimedOut.into());
                    }
                    self.service(now);
                    let mut fds = [PollFd::new(self.stream, PollFlags::OUT)];
                    let step = Timespec::try_from(Duration::from_millis(10)).ok();
                    let _ = poll(&mut fds, step.as_ref());
                }
                Err(e) => {
                    self.gone = true;
                    return Err(e);
                }
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Peer for Serving<'_> {
    fn alive(&mut self) -> bool {
        if !self.gone {
            // Data is a pipelined request, left in place; end of stream or an error is a
            // client that left.
            match self.stream.peek(&mut [0u8; 1]) {
                Ok(0) => self.gone = true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => self.gone = true,
            }
        }
        let now = Instant::now();
        if now.duration_since(self.serviced) >= SERVICE_EVERY {
            self.service(now);
        }
        !self.gone
    }
}

const BUSY: &str = "The server has too many open connections. Retry shortly.";
const EVICTED: &str =
    "the request did not arrive completely before its connection was needed for another client";

/// The `408` of a request that missed its deadline.
struct Late(u64);
impl fmt::Display for Late {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request did not arrive completely within {} s (see --request-timeout)",
            self.0
        )
    }
}
