//! Delivery for one subscription: read committed chunks, spend one credit per user chunk, hand
//! the stored bytes to the connection. Tracking chunks are skipped and cost no credit.

use std::sync::Arc;

use brook_log::{Cursor, LogError, ReadChunk};
use tokio::sync::watch;

use crate::bloom::Matcher;
use crate::budget::Budget;
use crate::counters::ConsumerCounters;
use crate::outgoing::{Outgoing, OutgoingSender};
use crate::stream::Stream;

/// How much a subscription reads ahead of its credit.
const READ_AHEAD_BYTES: usize = 256 << 10;

#[derive(Debug)]
pub(crate) struct Delivery {
    pub stream: Arc<Stream>,
    pub cursor: Cursor,
    /// The subscription's id, its credit (one permit per chunk the client allows), and what
    /// it consumed.
    pub counters: Arc<ConsumerCounters>,
    /// The connection's budget: chunks queued for its socket are charged to it, so a client
    /// that grants credit but does not read cannot make the broker buffer the stream.
    pub budget: Budget,
    pub outgoing: OutgoingSender,
    pub committed: watch::Receiver<u64>,
    /// Only chunks whose Bloom filter may match are sent (filtering subscriptions).
    pub filter: Option<Matcher>,
}

/// Reads on the blocking pool: segment reads are file I/O and must not stall async workers.
async fn read(mut cursor: Cursor) -> (Cursor, Result<Vec<ReadChunk>, LogError>) {
    let joined = tokio::task::spawn_blocking(move || {
        let mut chunks = Vec::new();
        let result = cursor.read(READ_AHEAD_BYTES, &mut chunks).map(|_| chunks);
        (cursor, result)
    })
    .await;
    match joined {
        Ok(done) => done,
        // Only a panic in the read gets here; the cursor went with it.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

impl Delivery {
    pub(crate) async fn run(mut self) {
        loop {
            // Mark the current commit as seen *before* reading, so a commit that lands after
            // the read finds us waiting instead of being missed. A reader at the committed end
            // waits without going to the disk (or the blocking pool) at all.
            let committed = *self.committed.borrow_and_update();
            if self.cursor.next_chunk_id() >= committed {
                // Waiting at the end: the writer keeps what it writes next in memory for us.
                let _waiting = self.stream.reader.wait_at_tail();
                if self.committed.changed().await.is_err() {
                    return; // the stream's writer is gone
                }
                continue;
            }
            let mut kept = Vec::new();
            let result = if self.cursor.read_kept(READ_AHEAD_BYTES, &mut kept) > 0 {
                Ok(kept)
            } else {
                let (cursor, result) = read(self.cursor).await;
                self.cursor = cursor;
                result
            };
            let chunks = match result {
                Ok(chunks) if chunks.is_empty() => {
                    if self.committed.changed().await.is_err() {
                        return; // the stream's writer is gone
                    }
                    continue;
                }
                Ok(chunks) => chunks,
                Err(LogError::Deleted) => return,
                Err(e) => {
                    tracing::error!(stream = %self.stream.id.name, subscription = self.counters.id,
                        "stopping delivery: {e}");
                    return;
                }
            };
            for chunk in chunks {
                if !self.deliver(chunk).await {
                    return;
                }
            }
        }
    }

    /// Sends one chunk once credit and budget allow; false when the subscription is over.
    async fn deliver(&mut self, chunk: ReadChunk) -> bool {
        // Skipped chunks cost no credit.
        if !chunk.is_user()
            || self
                .filter
                .as_ref()
                .is_some_and(|f| !f.matches(&chunk.bloom()))
        {
            return true;
        }
        match self.counters.credit.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return false,
        }
        let committed_chunk_id = self
            .stream
            .reader
            .committed_chunk_id()
            .unwrap_or(chunk.header.chunk_id);
        let charge = self.budget.charge(chunk.header.wire_len()).await;
        self.counters
            .dispatched(chunk.header.chunk_id, u64::from(chunk.header.num_records));
        self.outgoing
            .send(Outgoing::Deliver {
                subscription_id: self.counters.id,
                committed_chunk_id,
                chunk,
                charge,
            })
            .is_ok()
    }
}
