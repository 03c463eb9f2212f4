//! Adapters between `std::io` and `embedded-io`, a fixed-buffer writer, and [`Peer`], the
//! connection as the request handler sees it.

use embedded_io::{ErrorType, Read, Write};

/// The client side of a connection, as the request handler writes to it.
pub trait Peer: Write {
    /// Whether the client is still there, asked between generated tokens: false cancels the
    /// generation. Also the moment for the connection layer to look after other clients.
    fn alive(&mut self) -> bool {
        true
    }
}

impl<T: std::io::Write> Peer for StdIo<T> {}

/// A `std::io` stream (a `TcpStream` on Linux) seen through the `embedded-io` traits.
#[derive(Debug)]
pub struct StdIo<T>(pub T);

impl<T> ErrorType for StdIo<T> {
    type Error = std::io::Error;
}

impl<T: std::io::Read> Read for StdIo<T> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

impl<T: std::io::Write> Write for StdIo<T> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // `embedded_io::Write::write_all` must never see a zero-length write.
                Ok(0) if !buf.is_empty() => {
                    return Err(std::io::Error::from(std::io::ErrorKind::WriteZero))
                }
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.flush()
    }
}

/// Collects small writes in a caller's buffer and passes them on in large ones.
#[derive(Debug)]
pub struct Buffered<'b, W> {
    inner: W,
    buf: &'b mut [u8],
    n: usize,
}

impl<'b, W: Write> Buffered<'b, W> {
    /// Buffers writes to `inner` in `buf` (which must not be empty).
    pub fn new(inner: W, buf: &'b mut [u8]) -> Self {
        Buffered { inner, buf, n: 0 }
    }

    /// The stream written to.
    pub fn inner_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    fn drain(&mut self) -> Result<(), W::Error> {
        if self.n > 0 {
            self.inner.write_all(&self.buf[..self.n])?;
            self.n = 0;
        }
        Ok(())
    }
}

impl<W: Write> ErrorType for Buffered<'_, W> {
    type Error = W::Error;
}

impl<W: Write> Write for Buffered<'_, W> {
    fn write(&mut self, data: &[u8]) -> Result<usize, Self::Error> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.n == self.buf.len() {
            self.drain()?;
        }
        if self.n == 0 && data.len() >= self.buf.len() {
            return self.inner.write(data);
        }
        let k = data.len().min(self.buf.len() - self.n);
        self.buf[self.n..self.n + k].copy_from_slice(&data[..k]);
        self.n += k;
        Ok(k)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.drain()?;
        self.inner.flush()
    }
}
