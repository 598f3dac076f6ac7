//! The stream writer's I/O: carries out the [`Core`]'s decisions against the log. Synchronous
//! (the task runs it on a blocking thread), so tests drive it directly on a simulated disk.

use std::collections::VecDeque;
use std::time::Instant;

use brook_log::{Log, LogError, UserChunk};
use tokio::sync::oneshot;

use super::core::{AppendFailure, ChunkSink, Core, Reply, Step};
use super::quorum::Quorum;
use super::{Command, Tracked};

/// The log as the core's sink.
struct Sink<'a>(&'a mut Log);

impl ChunkSink for Sink<'_> {
    fn stored_sequence(&self, reference: &str) -> Option<u64> {
        self.0.tracking().sequence(reference)
    }

    fn append(&mut self, chunks: &[UserChunk<'_>]) -> Result<(), AppendFailure> {
        self.0.append_users(chunks).map(|_| ()).map_err(|e| {
            tracing::error!(dir = %self.0.dir().display(), "write failed: {e}");
            failure_of(&e)
        })
    }
}

fn failure_of(e: &LogError) -> AppendFailure {
    match e {
        LogError::Sync { .. } | LogError::Poisoned => AppendFailure::Broken,
        _ => AppendFailure::RolledBack,
    }
}

/// What a step of the writer produced, for the task to route.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub replies: Vec<Reply>,
    /// The new committed next offset, if readers may see more.
    pub committed: Option<u64>,
    /// The publisher epoch after this step.
    pub fence: u64,
    /// When a group commit must sync.
    pub sync_at: Option<Instant>,
    /// How long this step's fdatasync took, if it synced.
    pub synced_in: Option<std::time::Duration>,
    /// Replicated: chunks written (and durable here) to send to the replicas.
    pub shipped: Vec<brook_log::Shipped>,
}

impl Outcome {
    /// Adds what a later step produced: its replies, its commit and its fence.
    pub(crate) fn then(&mut self, later: Outcome) {
        self.replies.extend(later.replies);
        self.committed = later.committed.or(self.committed);
        self.fence = later.fence;
        self.shipped.extend(later.shipped);
    }
}

/// A query's answer, computed in its place in the batch.
#[derive(Debug)]
enum Answer {
    Offset(oneshot::Sender<Option<u64>>, Option<u64>),
    Sequence(oneshot::Sender<u64>, u64),
}

impl Answer {
    fn send(self) {
        match self {
            Answer::Offset(reply, offset) => drop(reply.send(offset)),
            Answer::Sequence(reply, seq) => drop(reply.send(seq)),
        }
    }
}

/// A stream's log and the writer's state.
#[derive(Debug)]
pub(crate) struct StreamWriter {
    log: Log,
    core: Core,
    /// Replicated: who holds what; commits wait for a majority.
    quorum: Option<Quorum>,
    /// Replicated: answers waiting for the commit to reach the end of the log they were
    /// computed from (ends in order).
    held: VecDeque<(u64, Answer)>,
}

impl StreamWriter {
    pub(crate) fn new(log: Log, core: Core) -> Self {
        Self {
            log,
            core,
            quorum: None,
            held: VecDeque::new(),
        }
    }

    /// A replicated stream's leader for `epoch`, among `members` (itself included).
    pub(crate) fn leader(mut log: Log, core: Core, epoch: u64, members: usize) -> Self {
        let start = log.next_offset();
        log.set_epoch(epoch);
        log.replicate(true);
        // What the log holds at election is the longest tail of a majority, as osiris's new
        // writer takes it: readers already see it (the log opened with it).
        Self {
            log,
            core,
            quorum: Some(Quorum::new(members, start)),
            held: VecDeque::new(),
        }
    }

    /// Whether handling a batch now could block for milliseconds: an fsync or a segment roll
    /// (which syncs the sealed segment and creates files). Plain appends go to the page cache.
    pub(crate) fn may_block(&self, now: Instant) -> bool {
        self.core.may_sync(now) || self.log.next_append_rolls()
    }

    /// Handles a batch: everything queued while the previous one was written. Shutdown and
    /// Delete are the task's; they are ignored here.
    ///
    /// Queries are answered in their place in the batch (a QueryOffset after a StoreOffset sees
    /// it) but sent only once the batch is written, and on a replicated stream once a
    /// majority holds the log they were read from: a client must never be told of an offset
    /// or a sequence that a crash or a failover right after could take back (a producer
    /// resuming after a sequence that was never written would skip its unconfirmed
    /// messages).
    pub(crate) fn handle(&mut self, commands: Vec<Command>, now: Instant) -> Outcome {
        let mut tracking_replies = Vec::new();
        let mut answers = Vec::new();
        for cmd in commands {
            match cmd {
                Command::Publish(p) => self.core.publish(p, &mut Sink(&mut self.log)),
                Command::StoreOffset {
                    reference, offset, ..
                } => {
                    self.log.store_offset(&reference, offset);
                }
                Command::QueryOffset { reference, reply } => {
                    let offset = self.log.tracking().offset(&reference);
                    answers.push(Answer::Offset(reply, offset));
                }
                Command::QuerySequence { reference, reply } => {
                    let seq = self.core.sequence(&reference, &Sink(&mut self.log));
                    answers.push(Answer::Sequence(reply, seq.unwrap_or(0)));
                }
                Command::Tracking { reply } => tracking_replies.push(reply),
                Command::Acked { node, end } => {
                    if let Some(q) = &mut self.quorum {
                        q.ack(node, end);
                    }
                }
                Command::SetReplicas { replicas } => {
                    if let Some(q) = &mut self.quorum {
                        q.set_replicas(&replicas);
                    }
                }
                Command::Replicate { reply, .. } | Command::Reshape { reply, .. } => {
                    let _ = reply.send(Err("this node leads the stream".into()));
                }
                Command::Tail { reply } => {
                    let _ = reply.send(self.log.tail().map_err(|e| e.to_string()));
                }
                Command::Shutdown { .. } | Command::Delete { .. } => {}
            }
        }
        let step = self.core.end_batch(&mut Sink(&mut self.log), now);
        let step = self.flush_tracking(now).unwrap_or(step);
        let outcome = self.advance(step, now);
        let end = self.log.next_offset();
        match &self.quorum {
            Some(q) if q.published < end => {
                self.held.extend(answers.into_iter().map(|a| (end, a)));
            }
            _ => answers.into_iter().for_each(Answer::send),
        }
        if !tracking_replies.is_empty() {
            let tracked = self.tracked();
            for reply in tracking_replies {
                let _ = reply.send(tracked.clone());
            }
        }
        outcome
    }

    fn tracked(&self) -> Tracked {
        let tracking = self.log.tracking();
        let sorted = |items: Vec<(String, u64)>| {
            let mut items = items;
            items.sort();
            items
        };
        Tracked {
            offsets: sorted(tracking.offsets().map(|(r, o)| (r.to_owned(), o)).collect()),
            writers: sorted(
                tracking
                    .sequences()
                    .map(|(r, s)| (r.to_owned(), s))
                    .collect(),
            ),
        }
    }

    /// Stored offsets that no user chunk carried go into a tracking chunk of their own.
    /// Returns the new step if one was written.
    fn flush_tracking(&mut self, now: Instant) -> Option<Step> {
        if self.core.is_broken() || !self.log.has_pending_tracking() {
            return None;
        }
        match self.log.flush_tracking() {
            Ok(_) => self.core.appended_tracking(),
            Err(e) => {
                // The offsets stay pending and go with the next write.
                tracing::error!(dir = %self.log.dir().display(), "writing stored offsets: {e}");
                if failure_of(&e) == AppendFailure::Broken {
                    self.core.log_broken();
                }
            }
        }
        Some(self.core.step(now))
    }

    /// The group commit's timer fired.
    pub(crate) fn sync_due(&mut self, now: Instant) -> Outcome {
        let step = self.core.step(now);
        self.advance(step, now)
    }

    fn advance(&mut self, mut step: Step, now: Instant) -> Outcome {
        let mut outcome = Outcome::default();
        if step == Step::Sync {
            let started = Instant::now();
            let result = self.log.sync();
            outcome.synced_in = Some(started.elapsed());
            if let Err(e) = &result {
                tracing::error!(dir = %self.log.dir().display(),
                    "fdatasync failed, the stream refuses writes until restart: {e}");
            }
            step = self.core.synced(result.is_ok(), now);
        }
        match step {
            Step::Commit if self.quorum.is_some() => {
                let end = self.log.next_offset();
                self.core.park(end);
                outcome.shipped = self.log.take_shipped();
                if let Some(q) = &mut self.quorum {
                    q.local(end);
                }
            }
            Step::Commit => {
                self.log.commit();
                self.core.commit();
                outcome.committed = Some(self.log.next_offset());
            }
            Step::SyncAt(at) => outcome.sync_at = Some(at),
            Step::Idle | Step::Sync => {}
        }
        self.release_majority(&mut outcome);
        outcome.replies = self.core.take_replies();
        outcome.fence = self.core.fence();
        outcome
    }

    /// Replicated: publishes and confirms what a majority now holds.
    fn release_majority(&mut self, outcome: &mut Outcome) {
        let Some(q) = &mut self.quorum else {
            return;
        };
        let committed = q.committed();
        if committed > q.published {
            q.published = committed;
            self.log.commit_to(committed);
            self.core.release(committed);
            outcome.committed = Some(committed);
            while self.held.front().is_some_and(|(end, _)| *end <= committed) {
                if let Some((_, answer)) = self.held.pop_front() {
                    answer.send();
                }
            }
        }
    }

    /// Applies retention (`now_ms`: wall clock, as chunk timestamps are).
    pub(crate) fn enforce_retention(&mut self, now_ms: i64) {
        if let Err(e) = self.log.enforce_retention(now_ms) {
            tracing::warn!(dir = %self.log.dir().display(), "retention: {e}");
        }
    }

    /// Writes and syncs what is queued, for a clean stop.
    pub(crate) fn finish(&mut self, now: Instant) -> Outcome {
        let mut outcome = self.handle(Vec::new(), now);
        if self.core.is_broken() {
            return outcome;
        }
        let step = match self.log.sync() {
            Ok(()) => self.core.synced(true, now),
            Err(e) => {
                tracing::error!(dir = %self.log.dir().display(), "final fdatasync failed: {e}");
                self.core.synced(false, now)
            }
        };
        outcome.then(self.advance(step, now));
        outcome
    }

    /// Whether the log's active files are open.
    pub(crate) fn holds_files(&self) -> bool {
        self.log.holds_files()
    }

    /// After a quiet period: writes and syncs what is pending, as for a stop, then closes the
    /// log's files until the next write, so that an idle stream holds no descriptors. Costs
    /// one fdatasync per stream going idle, whatever the durability.
    pub(crate) fn release_files(&mut self, now: Instant) -> Outcome {
        let outcome = self.finish(now);
        if !self.core.is_broken() {
            self.log.release_files();
        }
        outcome
    }

    /// Closes the log of a deleted stream (the registry removes its directory).
    pub(crate) fn delete(self) {
        self.log.close_deleted();
    }
}
