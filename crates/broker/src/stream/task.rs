//! The async shell of a stream writer: runs the [`StreamWriter`], routes its replies to
//! connections, and keeps the group-commit and retention timers.
//!
//! Where the writer runs is a measured trade-off. Whatever may block for milliseconds — an
//! fsync (durability `always`, a due group commit), a segment roll (which syncs the sealed
//! segment and creates files), retention's unlinks, a delete — runs off the async workers
//! (`block_in_place`, so the worker's other tasks move to another thread). A batch of plain
//! appends to the page cache runs inline: handing every batch to another thread cost a
//! quarter of the publish rate and half again the end-to-end latency on two cores (two thread
//! wake-ups per batch, on the critical path of every confirm), for writes that take
//! microseconds. Should the page cache stall (dirty-page throttling, a journal commit), the
//! first inline batch that takes over [`SLOW_BATCH`] sends the stream's writes off the workers
//! for [`SLOW_MODE`], and says so in the log. Readers never read files on the async workers:
//! consumers at the end take fresh chunks from memory (`brook_log`'s tail), the others read on
//! the blocking pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, watch};

use super::core::Reply;
use super::pacing::{Pacer, WriteSize};
use super::writer::{Outcome, StreamWriter};
use super::{Command, StreamId, StreamState};
use crate::counters::Totals;
use crate::outgoing::Outgoing;

/// Commands taken into one batch at most: bounds the work of one write.
const MAX_BATCH_COMMANDS: usize = 4096;
/// Batches one blocking call handles at most before the task checks its timers again.
const MAX_BATCHES_PER_CALL: usize = 64;
/// Publish bytes a batch may hold and still be written inline.
const INLINE_BATCH_BYTES: usize = 1 << 20;
/// An inline batch that takes longer means the page cache is stalling.
const SLOW_BATCH: Duration = Duration::from_millis(2);
/// How long a stream then writes off the async workers.
const SLOW_MODE: Duration = Duration::from_secs(30);
/// A stream that has written nothing for this long syncs and closes its files.
const RELEASE_FILES_AFTER: Duration = Duration::from_secs(30);

/// A writer task's connections to the rest of the broker.
#[derive(Debug)]
pub(crate) struct Links {
    pub id: StreamId,
    pub state: Arc<StreamState>,
    /// Where confirm latencies and fsync times are recorded.
    pub totals: Arc<Totals>,
    pub committed: watch::Sender<u64>,
    pub retention_check_interval: Duration,
    /// How long a hot stream may wait for more publishes before a write (`pacing.rs`).
    pub chunk_linger: Duration,
    /// A replicated stream's leader: where the chunks it writes go, for its replicas.
    pub ship: Option<mpsc::UnboundedSender<Vec<brook_log::Shipped>>>,
}

/// Everything a writer task owns; moved to the blocking thread and back.
struct Task {
    writer: StreamWriter,
    commands: mpsc::UnboundedReceiver<Command>,
    links: Links,
    /// When a group commit must sync.
    sync_at: Option<Instant>,
    /// Until when writes run off the async workers (an inline batch was slow).
    slow_until: Option<Instant>,
    pacer: Pacer,
}

/// The entries (messages or sub-entry batches) of the publishes in `batch`, and their bytes.
fn write_size(batch: &[Command]) -> WriteSize {
    let mut size = WriteSize {
        entries: 0,
        bytes: 0,
    };
    for c in batch {
        if let Command::Publish(p) = c {
            size.entries += p.take;
            size.bytes += p.publish.raw_entries().len();
        }
    }
    size
}

/// Shutdown and Delete end the task; the writer never handles them.
fn is_stop(command: &Command) -> bool {
    matches!(command, Command::Shutdown { .. } | Command::Delete { .. })
}

fn has_stop(batch: &[Command]) -> bool {
    batch.iter().any(is_stop)
}

/// What ended a blocking call.
enum Next {
    /// The queue is empty: wait for commands or timers.
    Idle,
    /// Bounded work done with these commands taken but not handled: check the timers, then
    /// go on with them.
    Busy(Vec<Command>),
    /// Shutdown or Delete came.
    Stop(Command),
    /// Every command sender is gone.
    Closed,
}

/// Runs `f` off the async workers' duty: with `block_in_place` on a multi-threaded runtime
/// (this thread stops being a worker for the call and its other tasks move to another thread,
/// so nothing waits behind a slow write or fsync); on the blocking pool otherwise (a
/// current-thread runtime, in tests). `None` if it panicked (the writer is
/// then lost, the task ends, and publishes to the stream fail as if it were deleted).
async fn blocking<T: Send + 'static>(
    task: Task,
    f: impl FnOnce(&mut Task) -> T + Send + 'static,
) -> Option<(Task, T)> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread) {
        let mut task = task;
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tokio::task::block_in_place(|| f(&mut task))
        }));
        return match out {
            Ok(out) => Some((task, out)),
            Err(_) => {
                tracing::error!("stream writer panicked");
                None
            }
        };
    }
    let joined = tokio::task::spawn_blocking(move || {
        let mut task = task;
        let out = f(&mut task);
        (task, out)
    })
    .await;
    match joined {
        Ok(done) => Some(done),
        Err(e) => {
            tracing::error!("stream writer failed: {e}");
            None
        }
    }
}

impl Task {
    /// Whether `batch` may be handled inline (see the module's documentation).
    fn inline(&self, batch: &[Command], now: Instant) -> bool {
        self.slow_until.is_none_or(|until| now >= until)
            && write_size(batch).bytes <= INLINE_BATCH_BYTES
            && !self.writer.may_block(now)
            && !has_stop(batch)
    }

    /// Handles one batch on the async worker, watching how long it takes.
    fn work_inline(&mut self, batch: Vec<Command>) -> Next {
        let started = Instant::now();
        let next = self.work(batch, 1);
        let took = started.elapsed();
        if took > SLOW_BATCH {
            tracing::warn!(stream = %self.links.id, ?took,
                "writing to the page cache stalled; writing off the async workers for {SLOW_MODE:?}");
            self.slow_until = Some(Instant::now() + SLOW_MODE);
        }
        next
    }

    /// Handles `first` and whatever else is queued, batch after batch, until the queue is
    /// empty or `max_batches` were handled.
    fn work(&mut self, first: Vec<Command>, max_batches: usize) -> Next {
        let mut batch = first;
        for done in 1..=max_batches {
            let stop = batch.iter().position(is_stop);
            let rest = stop.map(|i| batch.split_off(i));
            self.pacer.wrote(write_size(&batch).entries, Instant::now());
            let outcome = self
                .writer
                .handle(std::mem::take(&mut batch), Instant::now());
            self.sync_at = outcome.sync_at;
            route(outcome, &self.links);
            if let Some(stop) = rest.and_then(|r| r.into_iter().next()) {
                return Next::Stop(stop);
            }
            if done == max_batches {
                // What is queued now stays in the channel for the next call.
                return Next::Idle;
            }
            match self.drain(&mut batch) {
                Ok(0) => return Next::Idle,
                Ok(_) => {}
                Err(()) => return Next::Closed,
            }
        }
        Next::Busy(batch)
    }

    /// Waits for more publishes when the pacer says so, and takes them with `batch`.
    async fn linger(&mut self, batch: &mut Vec<Command>) {
        if has_stop(batch) || batch.len() >= MAX_BATCH_COMMANDS {
            return;
        }
        let Some(until) = self.pacer.hold(write_size(batch), Instant::now()) else {
            return;
        };
        tokio::time::sleep_until(until.into()).await;
        // `batch` holds a publish, so this cannot report the senders gone.
        let _ = self.drain(batch);
        self.pacer.held(write_size(batch), Instant::now());
    }

    /// Takes what is queued now, up to a batch. `Err` once every sender is gone.
    fn drain(&mut self, batch: &mut Vec<Command>) -> Result<usize, ()> {
        while batch.len() < MAX_BATCH_COMMANDS {
            match self.commands.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) if batch.is_empty() => return Err(()),
                Err(TryRecvError::Disconnected) => break,
            }
        }
        Ok(batch.len())
    }
}

/// The task body: runs until the stream is deleted or shut down, or every handle is gone.
pub(crate) async fn run(
    writer: StreamWriter,
    commands: mpsc::UnboundedReceiver<Command>,
    links: Links,
) {
    let mut retention = tokio::time::interval(links.retention_check_interval);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    retention.tick().await;
    let mut task = Task {
        writer,
        commands,
        sync_at: None,
        slow_until: None,
        pacer: Pacer::new(links.chunk_linger, Instant::now()),
        links,
    };
    let mut batch = Vec::new();
    // Commands taken but not handled yet (the last call stopped at its bound).
    let mut carried = Vec::new();
    let mut active_at = Instant::now();
    loop {
        let release_at = task
            .writer
            .holds_files()
            .then(|| active_at + RELEASE_FILES_AFTER);
        let next = tokio::select! {
            // Timers first, so a writer that is never idle still syncs and applies retention.
            biased;
            _ = retention.tick() => {
                let now_ms = crate::now_ms();
                let Some((t, ())) = blocking(task, move |t| t.writer.enforce_retention(now_ms)).await else {
                    return;
                };
                task = t;
                Next::Idle
            }
            _ = sleep_until(task.sync_at) => {
                let Some((t, ())) = blocking(task, |t| {
                    let outcome = t.writer.sync_due(Instant::now());
                    t.sync_at = outcome.sync_at;
                    route(outcome, &t.links);
                }).await else {
                    return;
                };
                task = t;
                Next::Idle
            }
            _ = sleep_until(release_at), if carried.is_empty() => {
                let Some((t, ())) = blocking(task, |t| {
                    let outcome = t.writer.release_files(Instant::now());
                    route(outcome, &t.links);
                }).await else {
                    return;
                };
                task = t;
                Next::Idle
            }
            n = task.commands.recv_many(&mut batch, MAX_BATCH_COMMANDS), if carried.is_empty() => {
                if n == 0 {
                    break;
                }
                active_at = Instant::now();
                task.linger(&mut batch).await;
                let first = std::mem::take(&mut batch);
                if task.inline(&first, Instant::now()) {
                    task.work_inline(first)
                } else {
                    let Some((t, next)) = blocking(task, move |t| t.work(first, MAX_BATCHES_PER_CALL)).await else {
                        return;
                    };
                    task = t;
                    next
                }
            }
            () = std::future::ready(()), if !carried.is_empty() => {
                let first = std::mem::take(&mut carried);
                let Some((t, next)) = blocking(task, move |t| t.work(first, MAX_BATCHES_PER_CALL)).await else {
                    return;
                };
                task = t;
                next
            }
        };
        match next {
            Next::Idle => {}
            Next::Busy(rest) => carried = rest,
            Next::Stop(stop) => return finish(task, stop).await,
            Next::Closed => break,
        }
    }
    if let Some((task, outcome)) = blocking(task, |t| t.writer.finish(Instant::now())).await {
        route(outcome, &task.links);
    }
}

/// Shutdown (write and sync what is queued) or Delete.
async fn finish(task: Task, stop: Command) {
    match stop {
        Command::Shutdown { reply } => {
            if let Some((task, outcome)) = blocking(task, |t| t.writer.finish(Instant::now())).await
            {
                route(outcome, &task.links);
            }
            let _ = reply.send(());
        }
        Command::Delete { reply } => {
            let _ = tokio::task::spawn_blocking(move || task.writer.delete()).await;
            let _ = reply.send(());
        }
        _ => {}
    }
}

/// Sends replies to their connections and tells readers and watchers what changed.
fn route(mut outcome: Outcome, links: &Links) {
    if let Some(ship) = &links.ship
        && !outcome.shipped.is_empty()
    {
        let _ = ship.send(std::mem::take(&mut outcome.shipped));
    }
    if let Some(took) = outcome.synced_in {
        links.totals.fsync_seconds.observe(took.as_secs_f64());
    }
    if let Some(next) = outcome.committed {
        links.committed.send_if_modified(|c| {
            let changed = *c != next;
            *c = next;
            changed
        });
    }
    for reply in outcome.replies {
        let (target, item) = match reply {
            Reply::Confirm(g) => {
                if let Some(since) = g.since {
                    links
                        .totals
                        .confirm_latency
                        .observe(since.elapsed().as_secs_f64());
                }
                let item = Outgoing::Confirm {
                    publisher_id: g.target.publisher_id,
                    ids: g.ids,
                    publisher: g.target.publisher.clone(),
                    charge: g.charge,
                };
                (g.target, item)
            }
            Reply::Error(g, code) => {
                g.target.publisher.errored(g.ids.len() as u64);
                let item = Outgoing::PublishError {
                    publisher_id: g.target.publisher_id,
                    errors: g.ids.into_iter().map(|id| (id, code)).collect(),
                    charge: g.charge,
                };
                (g.target, item)
            }
        };
        let _ = target.outgoing.send(item);
    }
    if outcome.fence > links.state.publisher_epoch() {
        tracing::warn!(stream = %links.id, epoch = outcome.fence,
            "publishers fenced after a failed write: clients must declare them again");
        links.state.fence(&links.id.name, outcome.fence);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
