//! The stream writer's decisions, without I/O: deduplication, where chunks end, which confirms a
//! commit releases, what a failure costs. Inputs are commands, append results and sync results;
//! outputs are [`Reply`]s and the next [`Step`]. The log is reached only through [`ChunkSink`],
//! so every failure path is tested here with a sink that fails on demand.
//!
//! The invariant everything here serves: **a confirm means stored** (and synced, when the
//! durability asks for it), whatever fails in between. In particular, once a write fails, no
//! later message of a publisher declared before the failure is stored: the publisher is fenced
//! (see [`crate::outgoing::ControlEvent::PublishersFenced`]). Otherwise its later messages could
//! be stored after the lost ones, and a retry of the lost ones would be deduplicated against
//! them and confirmed without ever being stored.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use brook_log::UserChunk;
use brook_protocol::ResponseCode;
use brook_protocol::chunk::Entry;

use super::{ConfirmTarget, PublishCmd};
use crate::bloom::BloomBuilder;
use crate::budget::Charge;
use crate::config::Durability;

/// A chunk holds at most this many entries (the header field is a `u16`).
pub(crate) const MAX_CHUNK_ENTRIES: usize = u16::MAX as usize;

/// Settings of a writer.
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    pub durability: Durability,
    /// Bloom filter size of this stream's chunks (`stream-filter-size-bytes`).
    pub filter_size: u8,
    pub max_chunk_bytes: usize,
    pub max_chunk_entries: usize,
}

/// Why an append failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppendFailure {
    /// Nothing of the chunk remains (the log cut the partial write off); later writes may work.
    RolledBack,
    /// The log cannot be trusted any more (a failed fsync, a failed roll-back): nothing more is
    /// written until the broker restarts and recovers it.
    Broken,
}

/// The log, as the core sees it.
pub(crate) trait ChunkSink {
    /// The last publishing id stored for a publisher reference.
    fn stored_sequence(&self, reference: &str) -> Option<u64>;
    fn append(&mut self, chunk: &UserChunk<'_>) -> Result<(), AppendFailure>;
}

/// Ids of one publisher, confirmed or failed together, and the charges they give back.
#[derive(Debug)]
pub(crate) struct ConfirmGroup {
    pub target: ConfirmTarget,
    pub ids: Vec<u64>,
    pub charge: Charge,
}

/// What the writer sends to connections.
#[derive(Debug)]
pub(crate) enum Reply {
    Confirm(ConfirmGroup),
    Error(ConfirmGroup, ResponseCode),
}

/// What the writer must do after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing written or waiting.
    Idle,
    /// Publish what was written to readers and release its confirms.
    Commit,
    /// fdatasync, then report with [`Core::synced`].
    Sync,
    /// Group commit: sync at this instant.
    SyncAt(Instant),
}

/// Confirms grouped per publisher in write order. Duplicates are confirmed in frames of their
/// own, after the written ids, as RabbitMQ does: a frame listing one id twice makes the Rust
/// client 0.11 drop the rest of the frame.
#[derive(Debug, Default)]
struct Confirms {
    groups: Vec<ConfirmGroup>,
    duplicates: Vec<ConfirmGroup>,
}

fn add_to(groups: &mut Vec<ConfirmGroup>, target: &ConfirmTarget, id: u64) {
    match groups.last_mut() {
        Some(g) if Arc::ptr_eq(&g.target.alive, &target.alive) => g.ids.push(id),
        _ => groups.push(ConfirmGroup {
            target: target.clone(),
            ids: vec![id],
            charge: Charge::default(),
        }),
    }
}

impl Confirms {
    /// Attaches a Publish frame's charge to its last group, so it returns once every id of
    /// the frame is answered.
    fn attach(&mut self, charge: Charge) {
        if let Some(g) = self.groups.last_mut().or(self.duplicates.last_mut()) {
            g.charge.merge(charge);
        }
    }

    fn move_into(&mut self, other: &mut Confirms) {
        other.groups.append(&mut self.groups);
        other.duplicates.append(&mut self.duplicates);
    }

    fn drain(&mut self) -> impl Iterator<Item = ConfirmGroup> + use<> {
        let duplicates = std::mem::take(&mut self.duplicates);
        std::mem::take(&mut self.groups)
            .into_iter()
            .chain(duplicates)
    }

    fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.duplicates.is_empty()
    }
}

/// The chunk being assembled from queued publishes.
struct ChunkBuilder {
    data: Vec<u8>,
    entries: usize,
    records: u32,
    /// Publisher reference → last publishing id in this chunk (goes into the trailer).
    sequences: Vec<(Arc<str>, u64)>,
    bloom: BloomBuilder,
}

impl ChunkBuilder {
    fn sequence(&self, reference: &str) -> Option<u64> {
        self.sequences
            .iter()
            .rev()
            .find(|(r, _)| &**r == reference)
            .map(|&(_, s)| s)
    }

    fn set_sequence(&mut self, reference: &Arc<str>, seq: u64) {
        match self.sequences.iter_mut().find(|(r, _)| r == reference) {
            Some((_, s)) => *s = seq,
            None => self.sequences.push((reference.clone(), seq)),
        }
    }

    fn clear(&mut self) {
        self.bloom.clear();
        self.data.clear();
        self.entries = 0;
        self.records = 0;
        self.sequences.clear();
    }
}

impl std::fmt::Debug for ChunkBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkBuilder")
            .field("bytes", &self.data.len())
            .field("entries", &self.entries)
            .finish()
    }
}

/// The writer's state.
#[derive(Debug)]
pub(crate) struct Core {
    config: CoreConfig,
    chunk: ChunkBuilder,
    /// Confirms of the entries in the chunk being built, and of duplicates of this batch.
    pending: Confirms,
    /// Confirms of chunks written but not yet committed.
    written: Confirms,
    replies: Vec<Reply>,
    /// Publishers declared before this epoch are fenced.
    fence: u64,
    broken: bool,
    /// Appended since the last sync (or commit, without syncs).
    unsynced: bool,
    last_sync: Instant,
}

impl Core {
    pub(crate) fn new(config: CoreConfig, now: Instant) -> Self {
        let bloom = BloomBuilder::new(config.filter_size);
        Self {
            config,
            chunk: ChunkBuilder {
                data: Vec::new(),
                entries: 0,
                records: 0,
                sequences: Vec::new(),
                bloom,
            },
            pending: Confirms::default(),
            written: Confirms::default(),
            replies: Vec::new(),
            fence: 0,
            broken: false,
            unsynced: false,
            last_sync: now,
        }
    }

    /// The publisher epoch: publishers declared before it are fenced.
    pub(crate) fn fence(&self) -> u64 {
        self.fence
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// The last publishing id written or about to be written for a reference.
    pub(crate) fn sequence(&self, reference: &str, sink: &impl ChunkSink) -> Option<u64> {
        self.chunk
            .sequence(reference)
            .or_else(|| sink.stored_sequence(reference))
    }

    /// Adds a Publish frame's entries to the chunk being built; full chunks are appended.
    pub(crate) fn publish(&mut self, cmd: PublishCmd, sink: &mut impl ChunkSink) {
        let PublishCmd {
            publish,
            take,
            reference,
            target,
            epoch,
            charge,
        } = cmd;
        let refused = if self.broken {
            Some(ResponseCode::INTERNAL_ERROR)
        } else if epoch < self.fence {
            // Fenced: the connection is being told to declare it again.
            Some(ResponseCode::PUBLISHER_DOES_NOT_EXIST)
        } else {
            None
        };
        if let Some(code) = refused {
            let ids = publish
                .entries()
                .take(take)
                .map(|e| e.publishing_id)
                .collect();
            self.replies.push(Reply::Error(
                ConfirmGroup {
                    target,
                    ids,
                    charge,
                },
                code,
            ));
            return;
        }
        for entry in publish.entries().take(take) {
            if let Some(reference) = &reference {
                let last = self.sequence(reference, sink);
                if last.is_some_and(|last| entry.publishing_id <= last) {
                    // A duplicate: not written, confirmed with this batch.
                    add_to(&mut self.pending.duplicates, &target, entry.publishing_id);
                    continue;
                }
            }
            if self.chunk.entries >= self.config.max_chunk_entries.min(MAX_CHUNK_ENTRIES)
                || (self.chunk.entries > 0
                    && self.chunk.data.len() + entry.raw.len() > self.config.max_chunk_bytes)
            {
                self.seal(sink);
                if self.broken || epoch < self.fence {
                    // The chunk before this entry failed: this entry and the rest of the frame
                    // must not be stored after it.
                    let ids = publish
                        .entries()
                        .take(take)
                        .skip_while(|e| e.publishing_id != entry.publishing_id)
                        .map(|e| e.publishing_id)
                        .collect();
                    self.replies.push(Reply::Error(
                        ConfirmGroup {
                            target: target.clone(),
                            ids,
                            charge: Charge::default(),
                        },
                        ResponseCode::INTERNAL_ERROR,
                    ));
                    break;
                }
            }
            self.chunk.data.extend_from_slice(entry.raw);
            self.chunk.bloom.insert(entry.filter_value);
            self.chunk.entries += 1;
            self.chunk.records += match entry.entry {
                Entry::Simple(_) => 1,
                Entry::Batch(b) => u32::from(b.record_count),
            };
            if let Some(reference) = &reference {
                self.chunk.set_sequence(reference, entry.publishing_id);
            }
            add_to(&mut self.pending.groups, &target, entry.publishing_id);
        }
        if self.pending.is_empty() {
            // Everything failed already: the charge goes back with the error just queued.
            if let Some(Reply::Error(g, _)) = self.replies.last_mut() {
                g.charge.merge(charge);
            }
        } else {
            self.pending.attach(charge);
        }
    }

    /// Appends the chunk being built, if any.
    fn seal(&mut self, sink: &mut impl ChunkSink) {
        if self.chunk.entries == 0 {
            return;
        }
        let sequences: Vec<(&str, u64)> = self
            .chunk
            .sequences
            .iter()
            .map(|(r, s)| (&**r, *s))
            .collect();
        let result = sink.append(&UserChunk {
            data: &self.chunk.data,
            num_entries: self.chunk.entries as u16,
            num_records: self.chunk.records,
            bloom: self.chunk.bloom.bytes(),
            sequences: &sequences,
        });
        self.chunk.clear();
        match result {
            Ok(()) => {
                self.unsynced = true;
                // Only the written groups: duplicates wait for the end of the batch.
                self.written.groups.append(&mut self.pending.groups);
            }
            Err(failure) => self.failed(failure),
        }
    }

    /// A write failed: its publishes fail, their publishers are fenced; if the log is broken,
    /// what was written and not yet committed fails too.
    fn failed(&mut self, failure: AppendFailure) {
        self.fail(Pending::Chunk, ResponseCode::INTERNAL_ERROR);
        if failure == AppendFailure::Broken {
            self.broken = true;
            self.fail(Pending::Written, ResponseCode::INTERNAL_ERROR);
            self.unsynced = false;
        }
        self.fence += 1;
    }

    fn fail(&mut self, which: Pending, code: ResponseCode) {
        let groups: Vec<ConfirmGroup> = match which {
            // Duplicates too: one may duplicate an entry of the failed chunk.
            Pending::Chunk => self.pending.drain().collect(),
            Pending::Written => self.written.drain().collect(),
        };
        self.replies
            .extend(groups.into_iter().map(|g| Reply::Error(g, code)));
    }

    /// Stored offsets were written on their own (a tracking chunk).
    pub(crate) fn appended_tracking(&mut self) {
        self.unsynced = true;
    }

    /// A tracking write found the log broken.
    pub(crate) fn log_broken(&mut self) {
        if !self.broken {
            self.failed(AppendFailure::Broken);
        }
    }

    /// Ends a batch: appends what is left and says what comes next.
    pub(crate) fn end_batch(&mut self, sink: &mut impl ChunkSink, now: Instant) -> Step {
        self.seal(sink);
        // What is left are duplicates, confirmed with whatever this batch commits.
        self.pending.move_into(&mut self.written);
        self.step(now)
    }

    /// What the durability setting asks for now.
    pub(crate) fn step(&self, now: Instant) -> Step {
        if self.broken || (!self.unsynced && self.written.is_empty()) {
            return Step::Idle;
        }
        match self.config.durability {
            Durability::None => Step::Commit,
            _ if !self.unsynced => Step::Commit,
            Durability::Always => Step::Sync,
            Durability::Batch(interval) => {
                let due = self.last_sync + interval;
                if now >= due {
                    Step::Sync
                } else {
                    Step::SyncAt(due)
                }
            }
        }
    }

    /// Whether ending a batch now could fsync (a call that blocks for milliseconds).
    pub(crate) fn may_sync(&self, now: Instant) -> bool {
        match self.config.durability {
            Durability::None => false,
            Durability::Always => true,
            Durability::Batch(interval) => now >= self.last_sync + interval,
        }
    }

    /// The result of the fdatasync a [`Step::Sync`] asked for. After a failure nothing written
    /// since the last good sync can be trusted to be on disk (Linux may even have dropped the
    /// dirty pages), so none of it is committed or confirmed, and the stream takes no more
    /// writes until the broker restarts and recovers.
    pub(crate) fn synced(&mut self, ok: bool, now: Instant) -> Step {
        if ok {
            self.unsynced = false;
            self.last_sync = now;
            Step::Commit
        } else {
            self.failed(AppendFailure::Broken);
            Step::Idle
        }
    }

    /// Releases the confirms of everything written (to be sent after the log's commit).
    pub(crate) fn commit(&mut self) {
        if self.config.durability == Durability::None {
            self.unsynced = false;
        }
        let groups: Vec<ConfirmGroup> = self.written.drain().collect();
        self.replies.extend(
            groups
                .into_iter()
                .filter(|g| g.target.alive.load(Ordering::Acquire))
                .map(Reply::Confirm),
        );
    }

    /// Replies produced since the last call, in order.
    pub(crate) fn take_replies(&mut self) -> Vec<Reply> {
        std::mem::take(&mut self.replies)
    }
}

#[derive(Clone, Copy)]
enum Pending {
    Chunk,
    Written,
}

#[cfg(test)]
mod tests;
