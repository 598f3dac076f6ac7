//! Reassembles frames from the socket's byte stream.

use std::time::Duration;

use brook_protocol::frame_size;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::ConnError;

/// Bytes asked of the socket per read when no frame size is known yet.
const READ_CHUNK: usize = 64 * 1024;

pub(super) enum Read {
    /// A whole frame, without its size prefix.
    Frame(Bytes),
    TooLarge(u32),
    Eof,
}

/// Several frames may arrive in one read and one may span many. The buffer holds at most one
/// frame of `max` bytes plus one read's worth: a client cannot make it grow past that.
pub(super) struct FrameReader<R> {
    pub io: R,
    pub buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(super) fn new(io: R) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
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
        matches!(self.io.read_buf(&mut self.buf).await, Ok(n) if n > 0)
    }
}
