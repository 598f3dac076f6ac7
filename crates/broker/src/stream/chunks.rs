//! The chunks of one write, built from the publishes queued for it.
//!
//! Chunk boundaries follow osiris's writer, so that `last` means what RabbitMQ users expect:
//! osiris batches at most as many messages into a chunk as its current batch size, which
//! starts at 32, doubles each time a batch fills up (to at most 8,192), and halves when the
//! queue runs empty. A Publish frame of 4,999 messages to an idle stream therefore becomes
//! chunks of 32, 64, …, 2,048 and 935 messages, and a consumer at `last` gets the 935, as with
//! RabbitMQ. Chunks are also cut at a byte size.
//!
//! All the chunks of a write go to the disk together — one `writev`, one index write — so
//! smaller chunks cost no more system calls.

use std::ops::Range;
use std::sync::Arc;

use brook_log::UserChunk;
use brook_protocol::PublishedEntry;
use brook_protocol::chunk::Entry;

use crate::bloom::BloomBuilder;

/// osiris's (gen_batch_server's) smallest and largest batch size.
pub(crate) const MIN_CHUNK_ENTRIES: usize = 32;
pub(crate) const MAX_CHUNK_ENTRIES: usize = 8192;

/// A chunk that is complete and waits to be written with the others of its write.
#[derive(Debug)]
struct Sealed {
    data: Range<usize>,
    entries: u16,
    records: u32,
    bloom: Vec<u8>,
    sequences: Vec<(Arc<str>, u64)>,
}

/// The chunk being filled.
#[derive(Debug, Default)]
struct Open {
    start: usize,
    entries: usize,
    records: u32,
    /// Publisher reference → last publishing id in this chunk (goes into the trailer).
    sequences: Vec<(Arc<str>, u64)>,
}

pub(crate) struct ChunkBatch {
    /// The data of every chunk of this write, back to back.
    data: Vec<u8>,
    open: Open,
    bloom: BloomBuilder,
    sealed: Vec<Sealed>,
    /// Entries per chunk now (osiris's adaptive batch size).
    limit: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl std::fmt::Debug for ChunkBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkBatch")
            .field("bytes", &self.data.len())
            .field("sealed", &self.sealed.len())
            .field("open_entries", &self.open.entries)
            .field("limit", &self.limit)
            .finish()
    }
}

impl ChunkBatch {
    /// `max_entries` caps the adaptive size (tests use small ones); `max_bytes` cuts a chunk
    /// by its data size.
    pub(crate) fn new(filter_size: u8, max_entries: usize, max_bytes: usize) -> Self {
        let max_entries = max_entries.clamp(1, MAX_CHUNK_ENTRIES);
        Self {
            data: Vec::new(),
            open: Open::default(),
            bloom: BloomBuilder::new(filter_size),
            sealed: Vec::new(),
            limit: MIN_CHUNK_ENTRIES.min(max_entries),
            max_entries,
            max_bytes,
        }
    }

    /// The last publishing id of `reference` in this write, if any.
    pub(crate) fn sequence(&self, reference: &str) -> Option<u64> {
        let find = |seqs: &[(Arc<str>, u64)]| {
            seqs.iter()
                .rev()
                .find(|(r, _)| &**r == reference)
                .map(|&(_, s)| s)
        };
        find(&self.open.sequences)
            .or_else(|| self.sealed.iter().rev().find_map(|c| find(&c.sequences)))
    }

    /// Whether the open chunk must be sealed before an entry of `len` bytes goes in.
    pub(crate) fn is_full(&self, len: usize) -> bool {
        let bytes = self.data.len() - self.open.start;
        self.open.entries >= self.limit || (self.open.entries > 0 && bytes + len > self.max_bytes)
    }

    pub(crate) fn push(&mut self, entry: &PublishedEntry<'_>, reference: Option<&Arc<str>>) {
        self.data.extend_from_slice(entry.raw);
        self.bloom.insert(entry.filter_value);
        self.open.entries += 1;
        self.open.records += match entry.entry {
            Entry::Simple(_) => 1,
            Entry::Batch(b) => u32::from(b.record_count),
        };
        if let Some(reference) = reference {
            let seqs = &mut self.open.sequences;
            match seqs.iter_mut().find(|(r, _)| r == reference) {
                Some((_, s)) => *s = entry.publishing_id,
                None => seqs.push((reference.clone(), entry.publishing_id)),
            }
        }
    }

    /// Closes the open chunk, if it has entries. `full`: it reached the size limit (which then
    /// doubles); otherwise the queue ran empty (and the limit halves), as in osiris.
    pub(crate) fn seal(&mut self, full: bool) {
        if self.open.entries == 0 {
            return;
        }
        let open = std::mem::take(&mut self.open);
        self.sealed.push(Sealed {
            data: open.start..self.data.len(),
            entries: open.entries as u16,
            records: open.records,
            bloom: self.bloom.bytes().to_vec(),
            sequences: open.sequences,
        });
        self.bloom.clear();
        self.open.start = self.data.len();
        self.limit = if full {
            (self.limit * 2).min(self.max_entries)
        } else {
            (self.limit / 2)
                .max(MIN_CHUNK_ENTRIES)
                .min(self.max_entries)
        };
    }

    /// Bytes of data in this write so far.
    pub(crate) fn bytes(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn has_sealed(&self) -> bool {
        !self.sealed.is_empty()
    }

    /// Hands the sealed chunks to `write`, then forgets them. Call with the open chunk empty
    /// (right after [`ChunkBatch::seal`]).
    pub(crate) fn take_sealed<R>(&mut self, write: impl FnOnce(&[UserChunk<'_>]) -> R) -> R {
        let sequences: Vec<Vec<(&str, u64)>> = self
            .sealed
            .iter()
            .map(|c| c.sequences.iter().map(|(r, s)| (&**r, *s)).collect())
            .collect();
        let chunks: Vec<UserChunk<'_>> = self
            .sealed
            .iter()
            .zip(&sequences)
            .map(|(c, seqs)| UserChunk {
                data: self.data.get(c.data.clone()).unwrap_or_default(),
                num_entries: c.entries,
                num_records: c.records,
                bloom: &c.bloom,
                sequences: seqs,
            })
            .collect();
        let out = write(&chunks);
        drop(chunks);
        self.sealed.clear();
        let open_from = self.open.start;
        self.data.drain(..open_from);
        self.open.start = 0;
        out
    }
}
