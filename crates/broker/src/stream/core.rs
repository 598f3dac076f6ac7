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
use std::time::Instant;

use brook_log::UserChunk;
use brook_protocol::{PublishedEntry, ResponseCode};

use super::chunks::ChunkBatch;
use super::{ConfirmTarget, PublishCmd};
use crate::budget::Charge;
use crate::config::Durability;

/// Settings of a writer.
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    pub durability: Durability,
    /// Bloom filter size of this stream's chunks (`stream-filter-size-bytes`).
    pub filter_size: u8,
    pub max_chunk_bytes: usize,
    /// Caps osiris's adaptive chunk size (see `chunks.rs`).
    pub max_chunk_entries: usize,
}

/// A write goes to the disk once its chunks hold this much data, even mid-batch.
const MAX_WRITE_BYTES: usize = 4 << 20;

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
    /// Writes chunks together, all or nothing.
    fn append(&mut self, chunks: &[UserChunk<'_>]) -> Result<(), AppendFailure>;
}

/// Ids of one publisher, confirmed or failed together, and the charges they give back.
#[derive(Debug)]
pub(crate) struct ConfirmGroup {
    pub target: ConfirmTarget,
    pub ids: Vec<u64>,
    pub charge: Charge,
    /// When the oldest of these publishes was received (for the confirm latency histogram).
    pub since: Option<Instant>,
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

fn add_to(groups: &mut Vec<ConfirmGroup>, target: &ConfirmTarget, id: u64, received: Instant) {
    match groups.last_mut() {
        Some(g) if Arc::ptr_eq(&g.target.publisher, &target.publisher) => {
            g.ids.push(id);
            g.since = g.since.min(Some(received)).or(Some(received));
        }
        _ => groups.push(ConfirmGroup {
            target: target.clone(),
            ids: vec![id],
            charge: Charge::default(),
            since: Some(received),
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

/// The writer's state.
#[derive(Debug)]
pub(crate) struct Core {
    config: CoreConfig,
    chunks: ChunkBatch,
    /// Confirms of the entries in the open chunk, and of duplicates of this batch.
    pending: Confirms,
    /// Confirms of sealed chunks not written yet.
    unwritten: Confirms,
    /// Confirms of chunks written but not yet committed.
    written: Confirms,
    /// Replicated: confirms of chunks durable here, waiting for a majority, with the log's end
    /// after them.
    parked: std::collections::VecDeque<(u64, Vec<ConfirmGroup>)>,
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
        let chunks = ChunkBatch::new(
            config.filter_size,
            config.max_chunk_entries,
            config.max_chunk_bytes,
        );
        Self {
            config,
            chunks,
            pending: Confirms::default(),
            unwritten: Confirms::default(),
            written: Confirms::default(),
            parked: Default::default(),
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
        self.chunks
            .sequence(reference)
            .or_else(|| sink.stored_sequence(reference))
    }

    /// Adds a Publish frame's entries to the chunks of this write.
    pub(crate) fn publish(&mut self, cmd: PublishCmd, sink: &mut impl ChunkSink) {
        let PublishCmd {
            publish,
            take,
            reference,
            target,
            epoch,
            charge,
            received,
        } = cmd;
        if let Some(code) = self.refusal(epoch) {
            let ids = publish
                .entries()
                .take(take)
                .map(|e| e.publishing_id)
                .collect();
            self.error(target, ids, charge, code);
            return;
        }
        let mut entries = publish.entries().take(take);
        while let Some(entry) = entries.next() {
            if let Some(reference) = &reference {
                let last = self.sequence(reference, sink);
                if last.is_some_and(|last| entry.publishing_id <= last) {
                    // A duplicate: not written, confirmed with this batch.
                    target.publisher.deduplicated(1);
                    add_to(
                        &mut self.pending.duplicates,
                        &target,
                        entry.publishing_id,
                        received,
                    );
                    continue;
                }
            }
            if !self.make_room(&entry, epoch, sink) {
                // A write before this entry failed: it and the rest of the frame must not be
                // stored after it.
                let ids = std::iter::once(&entry)
                    .map(|e| e.publishing_id)
                    .chain(entries.map(|e| e.publishing_id))
                    .collect();
                self.error(target, ids, Charge::default(), ResponseCode::INTERNAL_ERROR);
                break;
            }
            self.chunks.push(&entry, reference.as_ref());
            add_to(
                &mut self.pending.groups,
                &target,
                entry.publishing_id,
                received,
            );
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

    /// Why a publish of a publisher declared at `epoch` is refused now, if it is.
    fn refusal(&self, epoch: u64) -> Option<ResponseCode> {
        if self.broken {
            Some(ResponseCode::INTERNAL_ERROR)
        } else if epoch < self.fence {
            // Fenced: the connection is being told to declare it again.
            Some(ResponseCode::PUBLISHER_DOES_NOT_EXIST)
        } else {
            None
        }
    }

    fn error(&mut self, target: ConfirmTarget, ids: Vec<u64>, charge: Charge, code: ResponseCode) {
        self.replies.push(Reply::Error(
            ConfirmGroup {
                target,
                ids,
                charge,
                since: None,
            },
            code,
        ));
    }

    /// Seals the open chunk if `entry` does not fit, and writes what is sealed once it is
    /// large. False if that write failed (or an earlier one fenced this publisher).
    fn make_room(
        &mut self,
        entry: &PublishedEntry<'_>,
        epoch: u64,
        sink: &mut impl ChunkSink,
    ) -> bool {
        if self.chunks.is_full(entry.raw.len()) {
            self.seal(true);
            if self.chunks.bytes() >= MAX_WRITE_BYTES {
                self.flush(sink);
            }
        }
        self.refusal(epoch).is_none()
    }

    /// Closes the open chunk (see [`ChunkBatch::seal`]); its confirms wait for the write.
    fn seal(&mut self, full: bool) {
        self.chunks.seal(full);
        self.unwritten.groups.append(&mut self.pending.groups);
    }

    /// Writes the sealed chunks.
    fn flush(&mut self, sink: &mut impl ChunkSink) {
        if !self.chunks.has_sealed() {
            return;
        }
        match self.chunks.take_sealed(|chunks| sink.append(chunks)) {
            Ok(()) => {
                self.unsynced = true;
                self.written.groups.append(&mut self.unwritten.groups);
            }
            Err(failure) => self.failed(failure),
        }
    }

    /// A write failed: its publishes fail, their publishers are fenced; if the log is broken,
    /// what was written and not yet committed fails too.
    fn failed(&mut self, failure: AppendFailure) {
        self.fail(Pending::Unwritten, ResponseCode::INTERNAL_ERROR);
        if failure == AppendFailure::Broken {
            self.broken = true;
            self.fail(Pending::Written, ResponseCode::INTERNAL_ERROR);
            self.unsynced = false;
        }
        self.fence += 1;
    }

    fn fail(&mut self, which: Pending, code: ResponseCode) {
        let groups: Vec<ConfirmGroup> = match which {
            // The failed chunks, and what is pending: duplicates too (one may duplicate an
            // entry of a failed chunk) and the open chunk (it would follow the lost ones).
            Pending::Unwritten => self.unwritten.drain().chain(self.pending.drain()).collect(),
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
        // The queue ran empty: what is open is sealed as it is (and the chunk size halves).
        self.seal(false);
        self.flush(sink);
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
                .filter(|g| g.target.publisher.is_alive())
                .map(Reply::Confirm),
        );
    }

    /// Replicated: everything written is durable here and ends at `end`; its confirms wait
    /// for a majority ([`Core::release`]).
    pub(crate) fn park(&mut self, end: u64) {
        if self.config.durability == Durability::None {
            self.unsynced = false;
        }
        let groups: Vec<ConfirmGroup> = self.written.drain().collect();
        if !groups.is_empty() {
            self.parked.push_back((end, groups));
        }
    }

    /// A majority holds everything before `end`: confirms what waited for it.
    pub(crate) fn release(&mut self, end: u64) {
        while self.parked.front().is_some_and(|(e, _)| *e <= end) {
            let Some((_, groups)) = self.parked.pop_front() else {
                break;
            };
            self.replies.extend(
                groups
                    .into_iter()
                    .filter(|g| g.target.publisher.is_alive())
                    .map(Reply::Confirm),
            );
        }
    }

    /// Replies produced since the last call, in order.
    pub(crate) fn take_replies(&mut self) -> Vec<Reply> {
        std::mem::take(&mut self.replies)
    }
}

#[derive(Clone, Copy)]
enum Pending {
    Unwritten,
    Written,
}

#[cfg(test)]
mod tests;
