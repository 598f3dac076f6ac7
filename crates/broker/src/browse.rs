//! Reading stored messages for people: the console's message browser and `brook ctl tail`.
//! Reads go straight to the log (as a consumer's do), on the blocking pool, committed data only.

use std::time::Duration;

use brook_log::{Cursor, ReadChunk};
use brook_protocol::OffsetSpec;
use brook_protocol::chunk::{ChunkView, Entry};
use bytes::Bytes;

use crate::error::Error;
use crate::registry::Broker;
use crate::stream::StreamId;

/// How much one page reads from disk at most.
const PAGE_BYTES: usize = 4 << 20;

/// A message as stored.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub offset: u64,
    /// The chunk's timestamp, ms since the epoch.
    pub timestamp: i64,
    /// The message bytes (AMQP 1.0 as the clients encode it), or a compressed sub-entry batch.
    pub data: Bytes,
    /// A compressed sub-entry batch, not one message.
    pub compressed: bool,
}

/// Messages from an offset on, and where the next page starts.
#[derive(Debug, Clone)]
pub struct Page {
    pub messages: Vec<StoredMessage>,
    pub next_offset: u64,
}

impl Broker {
    /// Up to `max` messages from `from` on (`Offset(n)` starts at `n` exactly, not at its
    /// chunk's start).
    pub async fn read_messages(
        &self,
        vhost: &str,
        stream: &str,
        from: OffsetSpec,
        max: usize,
    ) -> Result<Page, Error> {
        let handle = self.stream(&StreamId::new(vhost, stream))?;
        let seek = crate::session::seek_of(from)
            .ok_or_else(|| Error::PreconditionFailed("no offset given".into()))?;
        let unavailable =
            |e: brook_log::LogError| Error::StreamNotAvailable(stream.to_owned(), e.to_string());
        let cursor = handle.reader.cursor(seek).map_err(unavailable)?;
        let skip_below = match from {
            OffsetSpec::Offset(o) => o,
            _ => 0,
        };
        tokio::task::spawn_blocking(move || read_page(cursor, skip_below, max))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(unavailable)
    }

    /// Waits until the stream holds committed data at or after `offset`, or `timeout` passes.
    /// True if there is.
    pub async fn wait_for(
        &self,
        vhost: &str,
        stream: &str,
        offset: u64,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let handle = self.stream(&StreamId::new(vhost, stream))?;
        let mut committed = handle.committed.clone();
        let reached =
            tokio::time::timeout(timeout, committed.wait_for(|next| *next > offset)).await;
        Ok(matches!(reached, Ok(Ok(_))))
    }
}

fn read_page(mut cursor: Cursor, skip_below: u64, max: usize) -> Result<Page, brook_log::LogError> {
    let mut messages = Vec::new();
    let mut next_offset = cursor.next_chunk_id().max(skip_below);
    while messages.len() < max {
        let mut chunks = Vec::new();
        if cursor.read(PAGE_BYTES, &mut chunks)? == 0 || chunks.is_empty() {
            break;
        }
        for chunk in chunks {
            next_offset = next_offset.max(chunk.header.next_offset());
            if chunk.is_user() {
                take_records(&chunk, skip_below, max, &mut messages);
            }
            if messages.len() >= max {
                break;
            }
        }
    }
    if let Some(last) = messages.last() {
        next_offset = last.offset.saturating_add(1);
    }
    Ok(Page {
        messages,
        next_offset,
    })
}

fn take_records(chunk: &ReadChunk, skip_below: u64, max: usize, out: &mut Vec<StoredMessage>) {
    let data = chunk.data();
    let view = ChunkView {
        header: chunk.header,
        data: &data,
    };
    // Compressed sub-entry batches come out of `records` whole: recognise them by their body.
    let compressed: Vec<*const u8> = brook_protocol::chunk::entries(&data)
        .filter_map(|e| match e {
            Ok(Entry::Batch(b)) if b.compression != 0 => Some(b.body.as_ptr()),
            _ => None,
        })
        .collect();
    for record in view.records() {
        let Ok((offset, body)) = record else {
            tracing::warn!(
                chunk = chunk.header.chunk_id,
                "unreadable record while browsing"
            );
            return;
        };
        if offset < skip_below {
            continue;
        }
        if out.len() >= max {
            return;
        }
        out.push(StoredMessage {
            offset,
            timestamp: chunk.header.timestamp,
            data: data.slice_ref(body),
            compressed: compressed.contains(&body.as_ptr()),
        });
    }
}
