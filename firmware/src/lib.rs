//! trillim's firmware: an OpenAI-compatible server for small boards whose memory is allocated
//! once at start-up.
//!
//! [`net::Net`] holds a fixed table of connection slots, each with its own request buffer, and
//! receives requests on all of them at once from one thread ([`frame`] tells where a request
//! ends or why it is refused early). [`server::Firmware`] holds the model, the session and every
//! other buffer and answers complete requests one at a time over any `embedded-io` stream, so
//! the same code serves a TCP socket or an in-memory stream in tests.
#![forbid(unsafe_code)]

pub mod args;
pub mod frame;
pub mod io;
pub mod net;
mod reply;
pub mod server;

pub use net::{Net, NetConfig};
pub use server::{Firmware, Options};
