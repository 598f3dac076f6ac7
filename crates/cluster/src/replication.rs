//! The replication link: a leader pushes each stream's chunks to each replica, as osiris's
//! replica reader does, and replicas acknowledge what they hold durably.
//!
//! One connection per (stream, replica), opened by the leader to the replica's cluster port:
//! a JSON `Replicate` request (stream, epoch, leader) answered with the replica's log end,
//! then binary frames. Leader → replica: `[u32 len][u64 commit][u32 count]` and per chunk
//! `[u8 opens a segment][u32 len][the chunk's stored bytes]`. Replica → leader: `[u64 end]`,
//! its durable end after each frame. The leader sends committed chunks from its log (a
//! replica catching up) and newer ones from memory ([`Backlog`]), without waiting for acks.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_broker::{Broker, Reshape, Role, StreamId};
use brook_log::{LogReader, Seek, Shipped};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::auth::ClusterKey;
use crate::metadata::{NodeId, StreamKey};
use crate::network::{CALL_TIMEOUT, Peer, Reply, Request, connect, read_frame, write_frame};
use crate::node::Cluster;

/// A frame carries about this much chunk data at most.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// A replica refuses frames larger than this (a chunk is at most a few MiB).
const MAX_FRAME: u32 = 64 << 20;
const RECONNECT_AFTER: Duration = Duration::from_millis(200);
/// An idle link carries an empty frame this often, so replicas can tell a quiet leader from a
/// dead one (`failover.rs`).
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(250);
/// A link whose replica acknowledges nothing for this long is dropped and opened again.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// A leader's chunks not yet committed, for replicas that are at the end; committed ones are
/// read from the log.
#[derive(Debug)]
pub(crate) struct Backlog {
    chunks: Mutex<VecDeque<Shipped>>,
    /// The end of the last chunk pushed: feeds wait on it.
    end: watch::Sender<u64>,
}

impl Backlog {
    pub(crate) fn new(end: u64) -> Arc<Backlog> {
        Arc::new(Backlog {
            chunks: Mutex::new(VecDeque::new()),
            end: watch::channel(end).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Shipped>> {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, batch: Vec<Shipped>) {
        let Some(end) = batch.last().map(|s| s.chunk.header.next_offset()) else {
            return;
        };
        self.lock().extend(batch);
        self.end.send_replace(end);
    }

    /// Drops what every reader can now read from the log.
    pub(crate) fn trim(&self, committed: u64) {
        let mut chunks = self.lock();
        while chunks
            .front()
            .is_some_and(|s| s.chunk.header.next_offset() <= committed)
        {
            chunks.pop_front();
        }
    }

    /// Chunks from `next` on, about `max_bytes`.
    fn read(&self, next: u64, out: &mut Vec<Shipped>) {
        let chunks = self.lock();
        let mut bytes = 0;
        for s in chunks.iter().filter(|s| s.chunk.header.chunk_id >= next) {
            if bytes >= MAX_BATCH_BYTES {
                break;
            }
            bytes += s.chunk.raw_len();
            out.push(s.clone());
        }
    }
}

/// What a leader's feed to one replica needs.
#[derive(Debug, Clone)]
pub(crate) struct Feed {
    pub broker: Broker,
    pub id: StreamId,
    pub epoch: u64,
    pub leader: NodeId,
    pub replica: NodeId,
    pub addr: String,
    pub key: ClusterKey,
    pub backlog: Arc<Backlog>,
    pub reader: LogReader,
    pub committed: watch::Receiver<u64>,
}

impl Feed {
    /// Feeds the replica until the task is aborted, reconnecting after failures.
    pub(crate) async fn run(self) {
        loop {
            if let Err(e) = self.once().await {
                tracing::debug!(stream = %self.id, replica = self.replica, "replication link: {e}");
            }
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    }

    async fn once(&self) -> io::Result<()> {
        let handshake = tokio::time::timeout(CALL_TIMEOUT, self.handshake()).await;
        let (conn, (next, last)) =
            handshake.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
        // The replica's log lies wholly below this one's first chunk (retention removed what
        // it could continue from, or it is new and empty): it starts again at that chunk.
        let first = self.reader.stats().first_chunk_id;
        if let Some(first) = first
            && (next < first || last.is_some_and(|(chunk_id, _)| chunk_id < first))
        {
            // A last chunk of an old epoch may start below `first` and end above it (its
            // boundaries need not be this log's): cut it off first, then start again.
            if next > first
                && let Some((chunk_id, _)) = last
            {
                return self.reshape(Reshape::CutTo(chunk_id)).await;
            }
            return self.reshape(Reshape::StartAt(first)).await;
        }
        if let Some((chunk_id, epoch)) = last
            && !self.holds(chunk_id, epoch)?
        {
            return self.reshape(Reshape::CutTo(chunk_id)).await;
        }
        self.broker.acked(&self.id, self.replica, next);
        let (mut rd, mut wr) = tokio::io::split(conn);
        let acks = async {
            loop {
                let mut end = [0; 8];
                // A replica acks every frame, heartbeats included: silence is a dead link.
                tokio::time::timeout(ACK_TIMEOUT, rd.read_exact(&mut end))
                    .await
                    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
                self.broker
                    .acked(&self.id, self.replica, u64::from_be_bytes(end));
            }
        };
        tokio::select! {
            r = acks => r,
            r = self.send(&mut wr, next) => r,
        }
    }

    /// Opens the link: the replica's end and last chunk.
    async fn handshake(&self) -> io::Result<(BufStream<TcpStream>, ReplicaTail)> {
        let mut conn = connect(&self.addr, &self.key).await?;
        let request = Request::Replicate {
            vhost: self.id.vhost.clone(),
            name: self.id.name.clone(),
            epoch: self.epoch,
            leader: self.leader,
        };
        write_frame(&mut conn, &request).await?;
        match read_frame(&mut conn).await? {
            Some(Reply::Replicate(Ok(tail))) => Ok((conn, tail)),
            Some(Reply::Replicate(Err(e))) => Err(io::Error::other(e)),
            _ => Err(io::Error::other("unexpected reply to Replicate")),
        }
    }

    /// Whether this leader's log has chunk `chunk_id` from `epoch` (log matching: two logs
    /// that hold the same chunk of the same epoch hold the same chunks before it).
    fn holds(&self, chunk_id: u64, epoch: u64) -> io::Result<bool> {
        // Below what retention kept here, this log cannot say: not finding the chunk must not
        // make the replica cut what may be committed data.
        if self
            .reader
            .stats()
            .first_chunk_id
            .is_some_and(|first| chunk_id < first)
        {
            return Err(io::Error::other(format!(
                "the replica's last chunk {chunk_id} is older than this leader's log"
            )));
        }
        let committed = *self.committed.borrow();
        let found = if chunk_id < committed {
            let mut cursor = self
                .reader
                .cursor(Seek::Offset(chunk_id))
                .map_err(io::Error::other)?;
            let mut chunks = Vec::new();
            cursor.read(1, &mut chunks).map_err(io::Error::other)?;
            chunks.into_iter().next().map(|c| c.header)
        } else {
            let mut chunks = Vec::new();
            self.backlog.read(chunk_id, &mut chunks);
            chunks.into_iter().next().map(|s| s.chunk.header)
        };
        Ok(found.is_some_and(|h| h.chunk_id == chunk_id && h.epoch == epoch))
    }

    /// Has the replica's log cut back (its last chunk is not this leader's: it never
    /// reached a majority; the next attempt compares the chunk before) or started again.
    async fn reshape(&self, change: Reshape) -> io::Result<()> {
        let request = Request::Reshape {
            vhost: self.id.vhost.clone(),
            name: self.id.name.clone(),
            epoch: self.epoch,
            leader: self.leader,
            change,
        };
        match Peer::new(self.addr.clone(), self.key.clone())
            .call(&request, CALL_TIMEOUT)
            .await?
        {
            Reply::Replicate(Ok(_)) => Ok(()),
            Reply::Replicate(Err(e)) => Err(io::Error::other(e)),
            _ => Err(io::Error::other("unexpected reply to Reshape")),
        }
    }

    async fn send(&self, wr: &mut (impl AsyncWriteExt + Unpin), mut next: u64) -> io::Result<()> {
        let mut committed = self.committed.clone();
        let mut end = self.backlog.end.subscribe();
        let mut sent_commit = None;
        let mut cursor: Option<brook_log::Cursor> = None;
        let mut frame = Vec::new();
        loop {
            committed.borrow_and_update();
            end.borrow_and_update();
            let commit = *committed.borrow();
            let mut chunks = Vec::new();
            if next < commit {
                let c = match &mut cursor {
                    Some(c) if c.next_chunk_id() == next => c,
                    _ => cursor.insert(
                        self.reader
                            .cursor(Seek::Offset(next))
                            .map_err(io::Error::other)?,
                    ),
                };
                c.read_shipped(MAX_BATCH_BYTES, &mut chunks)
                    .map_err(io::Error::other)?;
            }
            if chunks.is_empty() {
                self.backlog.read(next, &mut chunks);
            }
            if chunks.is_empty() && sent_commit == Some(commit) {
                tokio::select! {
                    r = committed.changed() => r.map_err(io::Error::other)?,
                    r = end.changed() => r.map_err(io::Error::other)?,
                    // Nothing new: an empty frame says the leader is alive.
                    () = tokio::time::sleep(HEARTBEAT) => sent_commit = None,
                }
                continue;
            }
            if let Some(last) = chunks.last() {
                next = last.chunk.header.next_offset();
            }
            encode(commit, &chunks, &mut frame)?;
            wr.write_all(&frame).await?;
            wr.flush().await?;
            sent_commit = Some(commit);
        }
    }
}

fn encode(commit: u64, chunks: &[Shipped], out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&commit.to_be_bytes());
    let count = u32::try_from(chunks.len()).map_err(io::Error::other)?;
    out.extend_from_slice(&count.to_be_bytes());
    for s in chunks {
        let raw = s.chunk.raw();
        out.push(u8::from(s.starts_segment));
        let len = u32::try_from(raw.len()).map_err(io::Error::other)?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&raw);
    }
    let len = u32::try_from(out.len() - 4).map_err(io::Error::other)?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// One frame from the leader: its commit and its chunks.
async fn decode(rd: &mut (impl AsyncReadExt + Unpin)) -> io::Result<(u64, Vec<Shipped>)> {
    let len = rd.read_u32().await?;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut frame = vec![0; len as usize];
    rd.read_exact(&mut frame).await?;
    let frame = Bytes::from(frame);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed replication frame");
    let commit = u64::from_be_bytes(
        frame
            .get(..8)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let count = u32::from_be_bytes(
        frame
            .get(8..12)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let mut at = 12usize;
    let mut chunks = Vec::new();
    for _ in 0..count {
        let starts = *frame.get(at).ok_or_else(bad)? != 0;
        let len_bytes = frame.get(at + 1..at + 5).ok_or_else(bad)?;
        let len = u32::from_be_bytes(len_bytes.try_into().map_err(|_| bad())?) as usize;
        let start = at + 5;
        let end = start
            .checked_add(len)
            .filter(|e| *e <= frame.len())
            .ok_or_else(bad)?;
        let chunk = brook_log::ReadChunk::parse(frame.slice(start..end)).map_err(|_| bad())?;
        chunks.push(Shipped {
            chunk,
            starts_segment: starts,
        });
        at = end;
    }
    Ok((commit, chunks))
}

/// A replica's side of a link the leader opened: checks the leader is the one the metadata
/// names for this epoch (an old leader is refused: it is fenced), answers the log's end, then
/// appends the frames and acknowledges them.
///
/// Frames are decoded by a task of their own, so that all those that arrived while the
/// previous append (and its fsync) ran go into the next one together: one fsync and one ack
/// for the group, as the leader's writer groups its own batches. The leader does not wait
/// for acks to send more, and an ack is the replica's durable end, which covers every frame
/// before it.
pub(crate) async fn serve(
    cluster: &Cluster,
    mut conn: BufStream<TcpStream>,
    key: StreamKey,
    epoch: u64,
    leader: NodeId,
) -> io::Result<()> {
    let id = StreamId::from(&key);
    let accepted = accept(cluster, &key, &id, epoch, leader).await;
    let refused = accepted.is_err();
    write_frame(&mut conn, &Reply::Replicate(accepted.clone())).await?;
    if refused {
        return Ok(());
    }
    let Some(broker) = cluster.broker() else {
        return Ok(());
    };
    let (mut rd, mut wr) = tokio::io::split(conn);
    let (frames, mut arrived) = tokio::sync::mpsc::channel(FRAMES_AHEAD);
    let decoder = tokio::spawn(async move {
        loop {
            let frame = decode(&mut rd).await;
            let failed = frame.is_err();
            if frames.send(frame).await.is_err() || failed {
                return;
            }
        }
    });
    // The decoder ends with the link, whichever way it ends.
    let _decoder = AbortOnDrop(decoder);
    loop {
        let first = arrived.recv().await.ok_or(io::ErrorKind::UnexpectedEof)?;
        let (mut commit, mut chunks) = first?;
        while chunks.len() < MAX_GROUP_CHUNKS {
            match arrived.try_recv() {
                Ok(frame) => {
                    let (c, more) = frame?;
                    commit = c;
                    chunks.extend(more);
                }
                Err(_) => break,
            }
        }
        check_current(cluster, &key, epoch, leader).map_err(io::Error::other)?;
        cluster.heard_from_leader(&key, epoch);
        let end = broker
            .replicate(&id, chunks, commit)
            .await
            .map_err(io::Error::other)?;
        // Reported lost meanwhile: what was just appended must not count for that leader.
        check_current(cluster, &key, epoch, leader).map_err(io::Error::other)?;
        wr.write_all(&end.to_be_bytes()).await?;
        wr.flush().await?;
    }
}

/// Frames decoded ahead of the replica's appends: a few, so that a link buffers little more
/// than TCP would (frames can be megabytes) while the next append is already queued.
const FRAMES_AHEAD: usize = 4;
/// At most this many chunks go into one append (and its fsync).
const MAX_GROUP_CHUNKS: usize = 4096;

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether `leader` still leads `epoch` here, and this replica has not reported it lost.
fn check_current(
    cluster: &Cluster,
    key: &StreamKey,
    epoch: u64,
    leader: NodeId,
) -> Result<(), String> {
    if cluster.is_stopped() {
        return Err("this node is stopping".into());
    }
    if cluster.is_fenced(key, epoch) {
        return Err(format!(
            "leader {leader} of epoch {epoch} was reported lost"
        ));
    }
    let metadata = cluster.metadata();
    let stream = metadata.streams.get(key).ok_or("unknown stream")?;
    if stream.epoch != epoch || stream.leader != leader {
        return Err(format!(
            "leader {leader} of epoch {epoch} is not the current one (leader {} of epoch {})",
            stream.leader, stream.epoch
        ));
    }
    Ok(())
}

/// The tail the replica answers a leader with: its end, and its last chunk's id and epoch.
type ReplicaTail = (u64, Option<(u64, u64)>);

async fn accept(
    cluster: &Cluster,
    key: &StreamKey,
    id: &StreamId,
    epoch: u64,
    leader: NodeId,
) -> Result<ReplicaTail, String> {
    let broker = current_leader(cluster, key, id, epoch, leader).await?;
    cluster.heard_from_leader(key, epoch);
    let end = broker
        .replicate(id, Vec::new(), 0)
        .await
        .map_err(|e| e.to_string())?;
    let last = broker.tail(id).await.map_err(|e| e.to_string())?;
    Ok((end, last))
}

/// A leader has this replica's log cut back or started again.
pub(crate) async fn reshape(
    cluster: &Cluster,
    key: &StreamKey,
    epoch: u64,
    leader: NodeId,
    change: Reshape,
) -> Result<ReplicaTail, String> {
    let id = StreamId::from(key);
    let broker = current_leader(cluster, key, &id, epoch, leader).await?;
    let end = broker
        .reshape(&id, change)
        .await
        .map_err(|e| e.to_string())?;
    Ok((end, None))
}

/// Checks that `leader` leads `epoch` as the metadata says and that this node is a replica;
/// hosts the stream as one.
async fn current_leader<'a>(
    cluster: &'a Cluster,
    key: &StreamKey,
    id: &StreamId,
    epoch: u64,
    leader: NodeId,
) -> Result<&'a Broker, String> {
    check_current(cluster, key, epoch, leader)?;
    let metadata = cluster.metadata();
    let stream = metadata.streams.get(key).ok_or("unknown stream")?;
    if !stream.members.contains_key(&cluster.id()) || leader == cluster.id() {
        return Err("not a replica of this stream".into());
    }
    let broker = cluster.broker().ok_or("the broker is not running")?;
    broker
        .host(id, &stream.arguments, Role::Replica)
        .await
        .map_err(|e| e.to_string())?;
    Ok(broker)
}
