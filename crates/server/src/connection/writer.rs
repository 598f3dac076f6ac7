//! The connection's writer task: drains the ordered [`Outgoing`] queue into the socket.
//!
//! Confirms come from stream writers and deliveries from subscription tasks, concurrently with
//! responses; one queue with one writer keeps every frame whole and in order (Subscribe OK
//! before the first Deliver, never a heartbeat inside a Deliver), and lets everything queued go
//! out in one `writev`. Charges are returned once their bytes are written.

use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use brook_broker::queue::QueueReceiver;
use brook_broker::{Charge, Outgoing};
use brook_protocol::{Frame, PublishConfirm, PublishError, PublishingError, encode_deliver_prefix};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// The writer stops collecting queued frames for one `write` call at this size.
const WRITE_BATCH_BYTES: usize = 1 << 20;
/// Enough for any batch; Linux allows 1024 iovecs per writev.
const MAX_PARTS: usize = 512;

/// What the request loop and the writer share.
#[derive(Debug)]
pub(super) struct WriterShared {
    pub deliver_v2: AtomicBool,
    pub heartbeat_secs: AtomicU32,
    /// Milliseconds after `started` at which the write in progress began (0: not writing).
    writing_since: AtomicU64,
    started: Instant,
}

impl WriterShared {
    pub(super) fn new() -> Self {
        Self {
            deliver_v2: AtomicBool::new(false),
            heartbeat_secs: AtomicU32::new(0),
            writing_since: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// How long the write in progress has been blocked (the peer does not read), if any.
    pub(super) fn stalled_for(&self) -> Option<Duration> {
        let since = self.writing_since.load(Ordering::Acquire);
        (since != 0).then(|| {
            self.started
                .elapsed()
                .saturating_sub(Duration::from_millis(since - 1))
        })
    }

    fn mark_writing(&self, writing: bool) {
        let now = if writing {
            self.started.elapsed().as_millis() as u64 + 1
        } else {
            0
        };
        self.writing_since.store(now, Ordering::Release);
    }
}

/// What one `writev` will send: small frames encoded into a buffer, and stored chunk bytes
/// referenced where they are (slices of the log reader's buffers), never copied.
#[derive(Default)]
struct Batch {
    encoded: BytesMut,
    parts: Vec<Bytes>,
    len: usize,
    /// Returned once the batch is written.
    charges: Vec<Charge>,
}

impl Batch {
    fn seal(&mut self) {
        if !self.encoded.is_empty() {
            self.parts.push(self.encoded.split().freeze());
        }
    }

    fn add(&mut self, item: Outgoing, deliver_v2: bool) {
        let before = self.encoded.len();
        match item {
            Outgoing::Deliver {
                subscription_id,
                committed_chunk_id,
                chunk,
                charge,
            } => {
                self.charges.push(charge);
                let (head, data) = chunk.wire_parts();
                let len = head.len() + data.as_ref().map_or(0, |d| d.len());
                encode_deliver_prefix(
                    &mut self.encoded,
                    subscription_id,
                    deliver_v2.then_some(committed_chunk_id),
                    len,
                );
                self.seal();
                self.parts.push(head);
                self.parts.extend(data);
                self.len += len;
                return;
            }
            Outgoing::Frame(bytes, charge) => {
                self.charges.push(charge);
                self.encoded.extend_from_slice(&bytes);
            }
            Outgoing::Confirm {
                publisher_id,
                ids,
                publisher,
                charge,
            } => {
                self.charges.push(charge);
                // A publisher deleted meanwhile: its confirms must not reach a new publisher
                // declared with the same id.
                if publisher.is_alive() {
                    publisher.confirmed(ids.len() as u64);
                    Frame::PublishConfirm(PublishConfirm {
                        publisher_id,
                        publishing_ids: ids,
                    })
                    .encode(&mut self.encoded);
                }
            }
            Outgoing::PublishError {
                publisher_id,
                errors,
                charge,
            } => {
                self.charges.push(charge);
                let errors = errors
                    .into_iter()
                    .map(|(publishing_id, code)| PublishingError {
                        publishing_id,
                        code,
                    })
                    .collect();
                Frame::PublishError(PublishError {
                    publisher_id,
                    errors,
                })
                .encode(&mut self.encoded);
            }
            Outgoing::Close => {}
        }
        self.len += self.encoded.len() - before;
    }

    fn full(&self) -> bool {
        self.len >= WRITE_BATCH_BYTES || self.parts.len() >= MAX_PARTS
    }

    async fn write<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        shared: &WriterShared,
    ) -> std::io::Result<()> {
        self.seal();
        let mut slices: Vec<IoSlice<'_>> = self.parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut rest = &mut slices[..];
        shared.mark_writing(true);
        while !rest.is_empty() {
            match wr.write_vectored(rest).await {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) => return Err(e),
            }
        }
        shared.mark_writing(false);
        drop(slices);
        // Fresh buffers rather than cleared ones: a connection that goes idle after a burst
        // must not keep the burst's buffers (a few allocations per write; a write is a
        // system call).
        *self = Batch::default();
        Ok(())
    }
}

/// Drains the connection's queue into the socket: everything queued goes out in one write,
/// and a heartbeat is sent when nothing was written for half the heartbeat interval.
pub(super) async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: QueueReceiver<Outgoing>,
    shared: Arc<WriterShared>,
) {
    let mut batch = Batch::default();
    loop {
        let heartbeat = shared.heartbeat_secs.load(Ordering::Relaxed);
        let item = if heartbeat == 0 {
            rx.recv().await
        } else {
            let idle = Duration::from_millis(u64::from(heartbeat) * 500);
            match tokio::time::timeout(idle, rx.recv()).await {
                Ok(item) => item,
                Err(_) => {
                    let mut beat = BytesMut::new();
                    Frame::Heartbeat(brook_protocol::Heartbeat {}).encode(&mut beat);
                    batch.add(Outgoing::Frame(beat.freeze(), Charge::default()), false);
                    if batch.write(&mut wr, &shared).await.is_err() {
                        return;
                    }
                    continue;
                }
            }
        };
        let Some(mut item) = item else { break };
        let mut close = false;
        loop {
            if matches!(item, Outgoing::Close) {
                close = true;
                break;
            }
            batch.add(item, shared.deliver_v2.load(Ordering::Relaxed));
            if batch.full() {
                break;
            }
            match rx.try_recv() {
                Ok(next) => item = next,
                Err(_) => break,
            }
        }
        if batch.write(&mut wr, &shared).await.is_err() {
            return;
        }
        if close {
            break;
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
}
