//! The newest committed chunks, kept in memory for readers waiting at the end of the log.
//!
//! A consumer that keeps up reads each chunk right after it is written. Reading it back from
//! the file would be a system call on a blocking thread (file I/O never runs on the async
//! workers) for bytes the writer had in hand a moment before. So while a reader waits at the
//! end, the writer keeps a copy of each chunk it writes; at commit the copies become readable
//! here, and the reader takes them without touching the disk. Any number of readers share one
//! copy (the chunk is reference-counted bytes, sent to sockets as is).
//!
//! Memory is bounded twice: per log ([`PER_LOG_BYTES`]) and for the whole process
//! ([`PROCESS_BYTES`]); past either, chunks are simply not kept and readers use the file.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::reader::{Position, ReadChunk};

/// Bytes of chunks one log keeps at most.
pub const PER_LOG_BYTES: usize = 256 << 10;
/// Bytes of chunks all logs of the process keep at most.
pub const PROCESS_BYTES: usize = 64 << 20;
/// Chunks older than this are dropped when the log is next committed or trimmed.
const MAX_AGE: Duration = Duration::from_secs(2);

static PROCESS_USED: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug)]
struct Kept {
    position: Position,
    chunk: ReadChunk,
    at: Instant,
}

/// One log's kept chunks, in log order.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    chunks: Mutex<VecDeque<Kept>>,
    bytes: AtomicUsize,
    /// Readers waiting at the end of the log: while there are any, the writer keeps copies.
    waiters: AtomicUsize,
}

/// Counts a reader as waiting at the end of the log while it lives.
#[derive(Debug)]
pub struct TailWait<'a>(&'a Tail);

impl Drop for TailWait<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Tail {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Kept>> {
        // Whole-entry pushes and pops only: a panic elsewhere leaves nothing half-done.
        self.chunks.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn wait(&self) -> TailWait<'_> {
        self.waiters.fetch_add(1, Ordering::AcqRel);
        TailWait(self)
    }

    /// Whether the writer should keep copies of what it writes now.
    pub(crate) fn wanted(&self) -> bool {
        self.waiters.load(Ordering::Acquire) > 0
    }

    /// Makes freshly committed chunks readable, dropping the oldest past the bounds.
    pub(crate) fn publish(&self, fresh: &mut Vec<(Position, ReadChunk)>) {
        if fresh.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut chunks = self.lock();
        for (position, chunk) in fresh.drain(..) {
            let len = chunk.raw_len();
            if len > PER_LOG_BYTES || !reserve(len) {
                continue;
            }
            self.bytes.fetch_add(len, Ordering::AcqRel);
            chunks.push_back(Kept {
                position,
                chunk,
                at: now,
            });
        }
        self.evict(&mut chunks, now);
    }

    fn evict(&self, chunks: &mut VecDeque<Kept>, now: Instant) {
        while let Some(first) = chunks.front() {
            let over = self.bytes.load(Ordering::Acquire) > PER_LOG_BYTES;
            if !over && now.duration_since(first.at) < MAX_AGE {
                break;
            }
            let len = first.chunk.raw_len();
            chunks.pop_front();
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            PROCESS_USED.fetch_sub(len, Ordering::AcqRel);
        }
    }

    /// Drops everything kept (the log was cut back: what is kept may be gone).
    pub(crate) fn clear(&self) {
        let mut chunks = self.lock();
        for kept in chunks.drain(..) {
            let len = kept.chunk.raw_len();
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            PROCESS_USED.fetch_sub(len, Ordering::AcqRel);
        }
    }

    /// Drops what is too old (the writer calls this from its periodic timer).
    pub(crate) fn trim(&self) {
        let mut chunks = self.lock();
        self.evict(&mut chunks, Instant::now());
    }

    /// Appends to `out` the kept chunks from `position` on, about `max_bytes`. Returns the
    /// position after the last one taken (`None`: nothing kept at that position).
    pub(crate) fn read(
        &self,
        position: Position,
        max_bytes: usize,
        out: &mut Vec<ReadChunk>,
    ) -> Option<Position> {
        let chunks = self.lock();
        let start = chunks.iter().position(|k| k.position == position)?;
        let mut next = position;
        let mut taken = 0usize;
        for kept in chunks.iter().skip(start) {
            if kept.position != next || (taken > 0 && taken >= max_bytes) {
                break;
            }
            taken += kept.chunk.raw_len();
            out.push(kept.chunk.clone());
            next = Position {
                segment: next.segment,
                file_pos: next.file_pos + kept.chunk.header.disk_len(),
                chunk_id: kept.chunk.header.next_offset(),
            };
        }
        Some(next)
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        PROCESS_USED.fetch_sub(self.bytes.load(Ordering::Acquire), Ordering::AcqRel);
    }
}

/// Takes `len` bytes of the process-wide allowance, if there are that many left.
fn reserve(len: usize) -> bool {
    PROCESS_USED
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            (used + len <= PROCESS_BYTES).then_some(used + len)
        })
        .is_ok()
}
