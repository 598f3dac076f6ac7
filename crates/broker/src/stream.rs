//! One stream: its log, and the writer task that owns it.
//!
//! All writes to a stream go through one task, as in osiris: whatever publishes and stored
//! offsets are queued while it writes become the next chunk, so chunk formation follows the
//! load (one write syscall for many messages under load, low latency when idle), deduplication
//! sees publishes in one order, and a QueryOffset queued after a StoreOffset sees it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brook_log::{Log, LogError, LogReader, UserChunk};
use brook_protocol::chunk::Entry;
use brook_protocol::{Publish, ResponseCode};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot, watch};

use crate::args::StreamArgs;
use crate::bloom::BloomBuilder;
use crate::{Durability, Outgoing, OutgoingSender, reject};

/// A chunk holds at most this many entries (the header field is a `u16`).
const MAX_CHUNK_ENTRIES: usize = u16::MAX as usize;

/// Where confirms for one publisher go.
#[derive(Debug, Clone)]
pub(crate) struct ConfirmTarget {
    pub outgoing: OutgoingSender,
    pub publisher_id: u8,
    /// Cleared when the publisher is deleted: confirms of its late writes are dropped, so a
    /// re-declared publisher with the same id never sees them.
    pub alive: Arc<AtomicBool>,
}

#[derive(Debug)]
pub(crate) enum WriterCmd {
    Publish {
        publish: Publish,
        /// Only the first `take` entries are written (the rest failed validation).
        take: usize,
        reference: Option<Arc<str>>,
        target: ConfirmTarget,
        /// Publisher flow control: held until the confirms are written to the socket, so a
        /// client that does not read its confirms stops being read.
        permit: Option<OwnedSemaphorePermit>,
    },
    StoreOffset {
        reference: String,
        offset: u64,
    },
    QueryOffset {
        reference: String,
        reply: oneshot::Sender<Option<u64>>,
    },
    QuerySequence {
        reference: String,
        reply: oneshot::Sender<u64>,
    },
    /// Flush, sync, and stop.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Stop and delete the log's files.
    Delete {
        reply: oneshot::Sender<()>,
    },
}

/// A stream as the rest of the broker sees it.
#[derive(Debug)]
pub(crate) struct Stream {
    pub name: String,
    pub args: StreamArgs,
    pub dir: PathBuf,
    pub reader: LogReader,
    pub writer: mpsc::UnboundedSender<WriterCmd>,
    /// The committed next offset; changes wake consumers waiting at the tail.
    pub committed: watch::Receiver<u64>,
    /// Connections that used this stream and must hear of its deletion.
    pub watchers: Mutex<HashMap<u64, mpsc::UnboundedSender<crate::ControlEvent>>>,
}

impl Stream {
    pub(crate) fn watch(&self, conn: u64, control: &mpsc::UnboundedSender<crate::ControlEvent>) {
        let mut w = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        w.entry(conn).or_insert_with(|| control.clone());
    }

    pub(crate) fn unwatch(&self, conn: u64) {
        let mut w = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        w.remove(&conn);
    }

    pub(crate) fn send(&self, cmd: WriterCmd) -> Result<(), crate::Error> {
        self.writer.send(cmd).map_err(|_| {
            crate::Error::StreamNotAvailable(self.name.clone(), "writer stopped".into())
        })
    }
}

/// Settings of a writer task.
#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    pub durability: Durability,
    /// Bloom filter size of this stream's chunks (`stream-filter-size-bytes`).
    pub filter_size: u8,
    pub max_chunk_bytes: usize,
    pub retention_check_interval: Duration,
}

/// Ids to confirm for one publisher, and the flow-control permits they release when written.
struct ConfirmGroup {
    target: ConfirmTarget,
    ids: Vec<u64>,
    permits: Vec<OwnedSemaphorePermit>,
}

type ConfirmGroups = Vec<ConfirmGroup>;

/// Confirms grouped per publisher in write order. Duplicates are confirmed in frames of their
/// own, after the written ids, as RabbitMQ does: a frame listing one id twice makes the Rust
/// client 0.11 drop the rest of the frame.
#[derive(Default)]
struct Confirms {
    groups: ConfirmGroups,
    duplicates: ConfirmGroups,
}

fn add_to(groups: &mut ConfirmGroups, target: &ConfirmTarget, id: u64) {
    match groups.last_mut() {
        Some(g) if Arc::ptr_eq(&g.target.alive, &target.alive) => g.ids.push(id),
        _ => groups.push(ConfirmGroup {
            target: target.clone(),
            ids: vec![id],
            permits: Vec::new(),
        }),
    }
}

impl Confirms {
    fn add(&mut self, target: &ConfirmTarget, id: u64) {
        add_to(&mut self.groups, target, id);
    }

    fn add_duplicate(&mut self, target: &ConfirmTarget, id: u64) {
        add_to(&mut self.duplicates, target, id);
    }

    /// Attaches a Publish's flow-control permit to its last confirm group.
    fn hold(&mut self, permit: OwnedSemaphorePermit) {
        if let Some(g) = self.groups.last_mut().or(self.duplicates.last_mut()) {
            g.permits.push(permit);
        }
    }

    /// Moves everything into `other`, keeping the order.
    fn move_into(&mut self, other: &mut Confirms) {
        other.groups.append(&mut self.groups);
        other.duplicates.append(&mut self.duplicates);
    }

    fn drain(&mut self) -> impl Iterator<Item = ConfirmGroup> {
        let duplicates = std::mem::take(&mut self.duplicates);
        std::mem::take(&mut self.groups)
            .into_iter()
            .chain(duplicates)
    }

    fn send(&mut self) {
        for g in self.drain() {
            if g.target.alive.load(Ordering::Acquire) {
                let _ = g.target.outgoing.send(Outgoing::Confirm {
                    publisher_id: g.target.publisher_id,
                    ids: g.ids,
                    alive: g.target.alive,
                    budget: g.permits,
                });
            }
        }
    }

    fn fail(&mut self, code: ResponseCode) {
        for g in self.drain() {
            let _ = g.target.outgoing.send(Outgoing::PublishError {
                publisher_id: g.target.publisher_id,
                errors: g.ids.into_iter().map(|id| (id, code)).collect(),
            });
        }
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
}

pub(crate) struct Writer {
    log: Log,
    config: WriterConfig,
    committed: watch::Sender<u64>,
    chunk: ChunkBuilder,
    /// Confirms of the entries in the chunk being built.
    pending: Confirms,
    /// Confirms of chunks written but not yet committed.
    ready: Confirms,
    /// An fdatasync failed: what was written may not be on disk, and the OS may have dropped
    /// the dirty pages. Nothing more is written or committed; publishes fail.
    broken: bool,
    /// Appended but not committed (durability `batch` waits for the next sync).
    uncommitted: bool,
    last_sync: Instant,
}

impl Writer {
    pub(crate) fn new(log: Log, config: WriterConfig, committed: watch::Sender<u64>) -> Self {
        let bloom = BloomBuilder::new(config.filter_size);
        Self {
            log,
            config,
            committed,
            chunk: ChunkBuilder {
                data: Vec::new(),
                entries: 0,
                records: 0,
                sequences: Vec::new(),
                bloom,
            },
            pending: Confirms::default(),
            ready: Confirms::default(),
            broken: false,
            uncommitted: false,
            last_sync: Instant::now(),
        }
    }

    /// The task body: runs until the stream is deleted, shut down, or dropped.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<WriterCmd>,
        name: String,
    ) {
        let mut retention = tokio::time::interval(self.config.retention_check_interval);
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        retention.tick().await;
        loop {
            let sync_due = self.sync_deadline();
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    let mut next = Some(cmd);
                    // Everything queued now goes into this write.
                    while let Some(cmd) = next.take() {
                        match cmd {
                            WriterCmd::Shutdown { reply } => {
                                self.finish(true).await;
                                let _ = reply.send(());
                                return;
                            }
                            WriterCmd::Delete { reply } => {
                                self.pending = Confirms::default();
                                self.ready = Confirms::default();
                                if let Err(e) = self.log.delete() {
                                    tracing::error!(stream = %name, "deleting the log: {e}");
                                }
                                let _ = reply.send(());
                                return;
                            }
                            cmd => self.handle(cmd),
                        }
                        next = commands.try_recv().ok();
                    }
                    self.write().await;
                }
                _ = retention.tick() => {
                    let now = crate::now_ms();
                    if let Err(e) = self.log.enforce_retention(now) {
                        tracing::warn!(stream = %name, "retention: {e}");
                    }
                }
                _ = sleep_until(sync_due) => {
                    self.sync_and_commit().await;
                }
            }
        }
        self.finish(false).await;
    }

    fn handle(&mut self, cmd: WriterCmd) {
        match cmd {
            WriterCmd::Publish {
                publish,
                take,
                reference,
                target,
                permit,
            } => {
                if self.broken {
                    reject(
                        &target.outgoing,
                        &publish,
                        take,
                        ResponseCode::INTERNAL_ERROR,
                    );
                    return;
                }
                for entry in publish.entries().take(take) {
                    if let Some(reference) = &reference {
                        let last = self
                            .chunk
                            .sequence(reference)
                            .or_else(|| self.log.tracking().sequence(reference));
                        if last.is_some_and(|last| entry.publishing_id <= last) {
                            // A duplicate: not written, confirmed with this batch.
                            self.pending.add_duplicate(&target, entry.publishing_id);
                            continue;
                        }
                    }
                    if self.chunk.entries == MAX_CHUNK_ENTRIES
                        || self.chunk.data.len() + entry.raw.len() > self.config.max_chunk_bytes
                    {
                        self.append_chunk();
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
                    self.pending.add(&target, entry.publishing_id);
                }
                if let Some(permit) = permit {
                    self.pending.hold(permit);
                }
            }
            WriterCmd::StoreOffset { reference, offset } => {
                self.log.store_offset(&reference, offset);
            }
            WriterCmd::QueryOffset { reference, reply } => {
                let _ = reply.send(self.log.tracking().offset(&reference));
            }
            WriterCmd::QuerySequence { reference, reply } => {
                let seq = self
                    .chunk
                    .sequence(&reference)
                    .or_else(|| self.log.tracking().sequence(&reference))
                    .unwrap_or(0);
                let _ = reply.send(seq);
            }
            WriterCmd::Shutdown { .. } | WriterCmd::Delete { .. } => {}
        }
    }

    /// Appends the chunk being built, if any; its confirms then wait for the commit (or fail
    /// now, if the write failed).
    fn append_chunk(&mut self) {
        if self.chunk.entries == 0 {
            return;
        }
        let sequences: Vec<(&str, u64)> = self
            .chunk
            .sequences
            .iter()
            .map(|(r, s)| (&**r, *s))
            .collect();
        let result = self.log.append_user(&UserChunk {
            data: &self.chunk.data,
            num_entries: self.chunk.entries as u16,
            num_records: self.chunk.records,
            bloom: self.chunk.bloom.bytes(),
            sequences: &sequences,
        });
        self.chunk.bloom.clear();
        self.chunk.data.clear();
        self.chunk.entries = 0;
        self.chunk.records = 0;
        self.chunk.sequences.clear();
        match result {
            Ok(_) => {
                self.uncommitted = true;
                self.pending.move_into(&mut self.ready);
            }
            Err(e) => {
                // The log rolled the partial write back: only this chunk's publishes failed.
                tracing::error!(dir = %self.log.dir().display(), "write failed: {e}");
                self.pending.fail(ResponseCode::INTERNAL_ERROR);
            }
        }
    }

    /// Appends what the last batch queued: the user chunk, or stored offsets on their own.
    fn append(&mut self) {
        self.append_chunk();
        // What is left are duplicates, confirmed with whatever this batch commits.
        self.pending.move_into(&mut self.ready);
        if self.log.has_pending_tracking() {
            match self.log.flush_tracking() {
                Ok(_) => self.uncommitted = true,
                Err(e) => {
                    tracing::error!(dir = %self.log.dir().display(), "writing stored offsets: {e}")
                }
            }
        }
    }

    /// Writes what the last batch queued, then commits as the durability setting allows.
    async fn write(&mut self) {
        if self.broken {
            return;
        }
        self.append();
        match self.config.durability {
            Durability::None => self.commit(),
            Durability::Always => self.sync_and_commit().await,
            Durability::Batch(interval) => {
                if self.last_sync.elapsed() >= interval {
                    self.sync_and_commit().await;
                }
            }
        }
    }

    fn sync_deadline(&self) -> Option<Instant> {
        match self.config.durability {
            Durability::Batch(interval) if self.uncommitted || !self.ready.is_empty() => {
                Some(self.last_sync + interval)
            }
            _ => None,
        }
    }

    async fn sync_and_commit(&mut self) {
        if self.uncommitted {
            let result = blocking(|| self.log.sync());
            if let Err(e) = result {
                self.sync_failed(e);
                return;
            }
            self.last_sync = Instant::now();
        }
        self.commit();
    }

    /// After a failed fdatasync nothing written since the last good one can be trusted to be
    /// on disk (Linux may even have dropped the dirty pages), so none of it is committed or
    /// confirmed, and the stream takes no more writes until the broker restarts and recovers.
    fn sync_failed(&mut self, e: LogError) {
        tracing::error!(dir = %self.log.dir().display(),
            "fdatasync failed, the stream refuses writes until restart: {e}");
        self.ready.fail(ResponseCode::INTERNAL_ERROR);
        self.pending.fail(ResponseCode::INTERNAL_ERROR);
        self.uncommitted = false;
        self.broken = true;
    }

    fn commit(&mut self) {
        if self.uncommitted {
            self.log.commit();
            self.uncommitted = false;
            self.committed.send_replace(self.log.next_offset());
        }
        self.ready.send();
    }

    async fn finish(&mut self, sync: bool) {
        if self.broken {
            return;
        }
        self.append();
        if (sync || self.uncommitted)
            && let Err(e) = self.log.sync()
        {
            self.sync_failed(e);
            return;
        }
        self.commit();
    }
}

/// Runs a call that may block for milliseconds (fdatasync) without stalling the other tasks of
/// a multi-threaded runtime. A current-thread runtime (tests) has nothing to hand over to.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
