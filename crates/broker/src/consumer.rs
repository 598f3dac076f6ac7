//! Delivery for one subscription: read committed chunks, spend one credit per user chunk, hand
//! the stored bytes to the connection. Tracking chunks are skipped and cost no credit.

use std::sync::Arc;

use brook_log::{Cursor, LogError, ReadChunk};
use tokio::sync::{Semaphore, watch};

use crate::bloom::Matcher;
use crate::stream::Stream;
use crate::{Outgoing, OutgoingSender};

/// How much a subscription reads ahead of its credit.
const READ_AHEAD_BYTES: usize = 256 << 10;
/// Bytes of chunks a connection may have queued for its socket, all subscriptions together.
pub(crate) const DELIVERY_BUDGET_BYTES: usize = 8 << 20;

#[derive(Debug)]
pub(crate) struct Delivery {
    pub subscription_id: u8,
    pub stream: Arc<Stream>,
    pub cursor: Cursor,
    /// One permit per chunk the client allows.
    pub credit: Arc<Semaphore>,
    /// Bytes of chunks queued for the connection's socket, shared by its subscriptions: a
    /// client that grants credit but does not read cannot make the broker buffer the stream.
    pub budget: Arc<Semaphore>,
    pub outgoing: OutgoingSender,
    pub committed: watch::Receiver<u64>,
    /// Only chunks whose Bloom filter may match are sent (filtering subscriptions).
    pub filter: Option<Matcher>,
}

impl Delivery {
    pub(crate) async fn run(mut self) {
        let mut chunks: Vec<ReadChunk> = Vec::new();
        loop {
            // Mark the current commit as seen *before* reading, so a commit that lands after
            // the read finds us waiting instead of being missed.
            self.committed.borrow_and_update();
            let read = self.cursor.read(READ_AHEAD_BYTES, &mut chunks);
            match read {
                Ok(0) => {
                    if self.committed.changed().await.is_err() {
                        return; // the stream's writer is gone
                    }
                    continue;
                }
                Ok(_) => {}
                Err(LogError::Deleted) => return,
                Err(e) => {
                    tracing::error!(stream = %self.stream.name, subscription = self.subscription_id,
                        "stopping delivery: {e}");
                    return;
                }
            }
            for chunk in chunks.drain(..) {
                // Skipped chunks cost no credit.
                if !chunk.is_user()
                    || self
                        .filter
                        .as_ref()
                        .is_some_and(|f| !f.matches(&chunk.bloom()))
                {
                    continue;
                }
                match self.credit.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return,
                }
                let committed_chunk_id = self
                    .stream
                    .reader
                    .committed_chunk_id()
                    .unwrap_or(chunk.header.chunk_id);
                let bytes = chunk.header.wire_len().clamp(1, DELIVERY_BUDGET_BYTES) as u32;
                let Ok(budget) = self.budget.clone().acquire_many_owned(bytes).await else {
                    return;
                };
                let delivered = self.outgoing.send(Outgoing::Deliver {
                    subscription_id: self.subscription_id,
                    committed_chunk_id,
                    chunk,
                    budget,
                });
                if delivered.is_err() {
                    return; // connection gone
                }
            }
        }
    }
}
