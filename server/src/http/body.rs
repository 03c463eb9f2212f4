//! Response bodies: whole JSON documents, or server-sent events fed by the engine.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engines::llm::Event;

/// Turns engine events into SSE text; returns the text to send and whether the stream ends.
pub trait EventFormatter: Send {
    /// Formats one event.
    fn format(&mut self, ev: Event) -> (String, bool);
    /// Called if the engine goes away without finishing the stream.
    fn abort(&mut self) -> String;
}

/// A response body.
pub enum Body {
    /// A complete body.
    Full(Option<Bytes>),
    /// An event stream. Dropping it (the client went away) drops the engine receiver, which
    /// cancels the generation.
    Sse {
        /// Engine events.
        rx: UnboundedReceiver<Event>,
        /// Formatter.
        fmt: Box<dyn EventFormatter>,
        /// Frames ready to send.
        queue: VecDeque<Bytes>,
        /// No more events will be read.
        done: bool,
    },
    /// Raw bytes from a producer (audio). Dropping it closes the channel, which stops the
    /// producer.
    Stream {
        /// Bytes to send first.
        first: Option<Bytes>,
        /// The producer's chunks.
        rx: tokio::sync::mpsc::Receiver<Bytes>,
    },
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Full(b) => f
                .debug_tuple("Full")
                .field(&b.as_ref().map(Bytes::len))
                .finish(),
            Body::Sse { done, .. } => f.debug_struct("Sse").field("done", done).finish(),
            Body::Stream { .. } => f.debug_struct("Stream").finish_non_exhaustive(),
        }
    }
}

impl Body {
    /// A complete body.
    pub fn full(b: impl Into<Bytes>) -> Body {
        Body::Full(Some(b.into()))
    }

    /// An empty body.
    pub fn empty() -> Body {
        Body::Full(None)
    }

    /// An event stream starting with `first`.
    pub fn sse(first: String, rx: UnboundedReceiver<Event>, fmt: Box<dyn EventFormatter>) -> Body {
        let mut queue = VecDeque::new();
        if !first.is_empty() {
            queue.push_back(Bytes::from(first));
        }
        Body::Sse {
            rx,
            fmt,
            queue,
            done: false,
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream { first, rx } => match first.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
            },
            Body::Sse {
                rx,
                fmt,
                queue,
                done,
            } => loop {
                if let Some(b) = queue.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                if *done {
                    return Poll::Ready(None);
                }
                match rx.poll_recv(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => {
                        *done = true;
                        let s = fmt.abort();
                        if !s.is_empty() {
                            queue.push_back(Bytes::from(s));
                        }
                    }
                    Poll::Ready(Some(ev)) => {
                        let (s, end) = fmt.format(ev);
                        if end {
                            *done = true;
                            rx.close();
                        }
                        if !s.is_empty() {
                            queue.push_back(Bytes::from(s));
                        }
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Sse { .. } | Body::Stream { .. } => SizeHint::default(),
        }
    }
}
