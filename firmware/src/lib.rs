//! trillim's firmware: a blocking, single-connection OpenAI-compatible server for small boards
//! whose memory is allocated once at start-up.
//!
//! [`server::Firmware`] holds the model, the session and every buffer; its
//! [`serve_connection`](server::Firmware::serve_connection) works over any `embedded-io`
//! stream, so the same code serves a TCP socket ([`io::StdIo`]) or an in-memory stream in
//! tests.

pub mod args;
pub mod io;
pub mod server;

pub use server::{Firmware, Options};
