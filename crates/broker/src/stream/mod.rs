//! One stream: its log, and the writer that owns it.
//!
//! All writes to a stream go through one writer, as in osiris: whatever publishes and stored
//! offsets are queued while it writes become the next chunk, so chunk formation follows the
//! load (one write syscall for many messages under load, low latency when idle), deduplication
//! sees publishes in one order, and a QueryOffset queued after a StoreOffset sees it.
//!
//! The writer is three layers, openraft-style: [`core`] decides (deduplication, chunk
//! boundaries, which confirms a commit releases, what a failure fences) without any I/O;
//! [`writer`] executes those decisions against the log, synchronously; [`task`] is the async
//! shell that batches commands, runs the writer on a blocking thread (file I/O and fsync never
//! run on the async workers) and routes what comes out to connections; [`pacing`] decides
//! when a hot stream's writes wait a little so that its chunks grow.

mod chunks;
pub(crate) mod core;
mod pacing;
pub(crate) mod quorum;
pub(crate) mod replica;
pub(crate) use chunks::MAX_CHUNK_ENTRIES;
#[cfg(test)]
mod simulation;
pub(crate) mod task;
pub(crate) mod writer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use brook_log::LogReader;
use brook_protocol::Publish;
use tokio::sync::{mpsc, oneshot, watch};

use crate::args::StreamArgs;
use crate::budget::Charge;
use crate::counters::PublisherCounters;
use crate::outgoing::{ControlEvent, ControlSender, OutgoingSender};

/// A stream's identity: its name within its virtual host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    pub vhost: String,
    pub name: String,
}

impl StreamId {
    pub fn new(vhost: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            vhost: vhost.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.vhost == "/" {
            write!(f, "{:?}", self.name)
        } else {
            write!(f, "{:?} in vhost {:?}", self.name, self.vhost)
        }
    }
}

/// A stream's tracking data: what `rabbitmq-streams list_stream_tracking` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracked {
    /// Consumer references and their stored offsets, sorted by reference.
    pub offsets: Vec<(String, u64)>,
    /// Publisher references and their last publishing ids, sorted by reference.
    pub writers: Vec<(String, u64)>,
}

/// Where confirms for one publisher go.
#[derive(Debug, Clone)]
pub(crate) struct ConfirmTarget {
    pub outgoing: OutgoingSender,
    pub publisher_id: u8,
    /// Its counters, and whether it still exists: confirms of writes that finish after it was
    /// deleted are dropped, so a re-declared publisher with the same id never sees them.
    pub publisher: Arc<PublisherCounters>,
}

/// A Publish frame for the writer.
#[derive(Debug)]
pub(crate) struct PublishCmd {
    pub publish: Publish,
    /// Only the first `take` entries are written (the rest failed validation).
    pub take: usize,
    pub reference: Option<Arc<str>>,
    pub target: ConfirmTarget,
    /// The stream's publisher epoch when the publisher was declared (see [`StreamState`]).
    pub epoch: u64,
    /// The frame's charge on its connection's budget, returned when its confirms are written.
    pub charge: Charge,
    /// When the connection took the frame, for the publish→confirm latency.
    pub received: std::time::Instant,
}

#[derive(Debug)]
pub(crate) enum Command {
    Publish(PublishCmd),
    StoreOffset {
        reference: String,
        offset: u64,
        /// Held until the writer has taken the offset: a client storing offsets faster than
        /// they are written is slowed down, not buffered.
        _charge: Charge,
    },
    QueryOffset {
        reference: String,
        reply: oneshot::Sender<Option<u64>>,
    },
    QuerySequence {
        reference: String,
        reply: oneshot::Sender<u64>,
    },
    /// Every stored consumer offset and publisher sequence (after this batch is written).
    Tracking {
        reply: oneshot::Sender<Tracked>,
    },
    /// Flush, sync, and stop.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Stop and delete the log's files.
    Delete {
        reply: oneshot::Sender<()>,
    },
    /// A replicated stream's leader: replica `node` holds everything before `end`.
    Acked {
        node: u64,
        end: u64,
    },
    /// A replica: its last chunk's id and epoch (what it reports when its leader is lost, and
    /// what a new leader checks against its own log).
    Tail {
        reply: oneshot::Sender<Result<Option<(u64, u64)>, String>>,
    },
    /// A replica: cut its log back, or start it again, as the leader asks. The reply is the
    /// log's new end.
    Reshape {
        change: Reshape,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// A leader: the stream's replicas are now these (its epoch is unchanged).
    SetReplicas {
        replicas: Vec<u64>,
    },
    /// A replica: the leader's chunks to append, and its commit (readers may see up to it).
    /// The reply is the replica's durable end.
    Replicate {
        chunks: Vec<brook_log::Shipped>,
        commit: u64,
        reply: oneshot::Sender<Result<u64, String>>,
    },
}

/// What a stream's writer task shares with the rest of the broker.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    /// Connections that used this stream and must hear of its deletion or of fenced publishers.
    watchers: Mutex<HashMap<u64, ControlSender>>,
    /// Publishers are declared with the current value; a failed write raises it, and the
    /// writer refuses publishes from publishers declared before.
    publisher_epoch: AtomicU64,
    /// Subscriptions reading it on this node (osiris's `readers`, without replicas' readers).
    readers: AtomicUsize,
}

/// Counts a subscription among its stream's readers while it lives.
#[derive(Debug)]
pub(crate) struct Reader(Arc<StreamState>);

impl Reader {
    pub(crate) fn new(state: &Arc<StreamState>) -> Reader {
        state.readers.fetch_add(1, Ordering::Relaxed);
        Reader(state.clone())
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.readers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl StreamState {
    fn watchers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ControlSender>> {
        // Plain inserts and removes: a panic elsewhere cannot leave the map inconsistent.
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn readers(&self) -> usize {
        self.readers.load(Ordering::Relaxed)
    }

    pub(crate) fn publisher_epoch(&self) -> u64 {
        self.publisher_epoch.load(Ordering::Acquire)
    }

    /// Tells every watcher, and forgets them all (the stream is gone).
    pub(crate) fn notify_all(&self, event: &ControlEvent) {
        for (_, control) in self.watchers().drain() {
            let _ = control.send(event.clone());
        }
    }

    /// Raises the publisher epoch and tells every watcher to drop older publishers.
    pub(crate) fn fence(&self, stream: &str, epoch: u64) {
        self.publisher_epoch.fetch_max(epoch, Ordering::AcqRel);
        let event = ControlEvent::PublishersFenced {
            stream: stream.to_owned(),
            epoch,
        };
        for control in self.watchers().values() {
            let _ = control.send(event.clone());
        }
    }
}

/// How a leader has a replica's log changed before it feeds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reshape {
    /// Cut back to end at this offset (a chunk boundary): the leader does not have what
    /// follows, which never reached a majority (`Log::truncate`).
    CutTo(u64),
    /// Start again, empty, at this offset, the leader's first chunk: the leader's retention
    /// removed everything this copy could continue from (`Log::restart_at`).
    StartAt(u64),
}

/// What this node does for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not clustered: the writer commits alone.
    Single,
    /// Leads a replicated stream of `members` (itself included) in this epoch.
    Leader { epoch: u64, members: usize },
    /// Holds a copy: takes the leader's chunks, serves readers, refuses publishers.
    Replica,
}

/// A stream as the rest of the broker sees it.
#[derive(Debug)]
pub(crate) struct Stream {
    pub id: StreamId,
    pub role: Role,
    pub args: StreamArgs,
    pub dir: PathBuf,
    pub reader: LogReader,
    pub commands: mpsc::UnboundedSender<Command>,
    /// The committed next offset; changes wake consumers waiting at the tail.
    pub committed: watch::Receiver<u64>,
    pub state: Arc<StreamState>,
}

impl Stream {
    pub(crate) fn watch(&self, conn: u64, control: &ControlSender) {
        self.state
            .watchers()
            .entry(conn)
            .or_insert_with(|| control.clone());
    }

    pub(crate) fn unwatch(&self, conn: u64) {
        self.state.watchers().remove(&conn);
    }

    pub(crate) fn send(&self, cmd: Command) -> Result<(), crate::Error> {
        self.commands.send(cmd).map_err(|_| {
            crate::Error::StreamNotAvailable(self.id.name.clone(), "writer stopped".into())
        })
    }
}
