//! Reassembles frames from the socket's byte stream.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use brook_protocol::frame_size;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::tcp::OwnedReadHalf;

use super::ConnError;

/// Bytes asked of the socket per read when no frame size is known yet.
const READ_CHUNK: usize = 64 * 1024;

/// A connection's read side. `readable` waits for bytes without a buffer, so that an idle
/// connection holds none: most of a connection's memory would otherwise be its read buffer
/// (issue #12). A stream that cannot tell (TLS, whose records need reading) reports ready at
/// once and so keeps its buffer.
pub(crate) trait ReadSocket: AsyncRead + Unpin + Send + 'static {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl ReadSocket for OwnedReadHalf {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        OwnedReadHalf::readable(self)
    }
}

impl<T: AsyncRead + Send + 'static> ReadSocket for tokio::io::ReadHalf<T> {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

pub(super) enum Read {
    /// A whole frame, without its size prefix.
    Frame(Bytes),
    TooLarge(u32),
    Eof,
}

/// Several frames may arrive in one read and one may span many. The buffer holds at most one
/// frame of `max` bytes plus one read's worth: a client cannot make it grow past that. It is
/// allocated when bytes arrive and given back whenever the peer goes quiet between frames.
pub(super) struct FrameReader<R> {
    pub io: R,
    pub buf: BytesMut,
}

impl<R: ReadSocket> FrameReader<R> {
    pub(super) fn new(io: R) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Waits for bytes between frames; if none are there yet, drops the buffer meanwhile.
    async fn wait_between_frames(&mut self) -> std::io::Result<()> {
        let mut ready = pin!(self.io.readable());
        match poll_fn(|cx| Poll::Ready(ready.as_mut().poll(cx))).await {
            Poll::Ready(r) => r,
            Poll::Pending => {
                self.buf = BytesMut::new();
                ready.await
            }
        }
    }

    /// The next frame; `max` (0 = none) bounds its size.
    pub(super) async fn next(&mut self, max: u32) -> std::io::Result<Read> {
        loop {
            if let Some(size) = frame_size(&self.buf) {
                if max != 0 && size > max {
                    return Ok(Read::TooLarge(size));
                }
                let total = 4 + size as usize;
                if self.buf.len() >= total {
                    let frame = self.buf.split_to(total).freeze();
                    return Ok(Read::Frame(frame.slice(4..)));
                }
                // Grow with what arrives, not with what the size prefix claims.
                self.buf
                    .reserve((total - self.buf.len()).min(READ_CHUNK * 16));
            } else {
                if self.buf.is_empty() {
                    self.wait_between_frames().await?;
                }
                self.buf.reserve(READ_CHUNK);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Ok(Read::Eof);
            }
        }
    }

    /// The next frame after Open, ending the connection when the peer has been silent for
    /// too long.
    pub(super) async fn next_open(&mut self, max: u32, heartbeat: u32) -> Result<Read, ConnError> {
        if heartbeat == 0 {
            return Ok(self.next(max).await?);
        }
        // RabbitMQ closes after two to three silent intervals; clients send at least one
        // heartbeat per interval.
        let limit = Duration::from_secs(u64::from(heartbeat) * 3);
        match tokio::time::timeout(limit, self.next(max)).await {
            Ok(read) => Ok(read?),
            Err(_) => Err(ConnError::HeartbeatTimeout(limit)),
        }
    }

    /// Discards whatever the peer sends; returns false at end of stream or on error.
    pub(super) async fn discard(&mut self) -> bool {
        self.buf.clear();
        self.buf.reserve(READ_CHUNK);
        matches!(self.io.read_buf(&mut self.buf).await, Ok(n) if n > 0)
    }
}
