//! What the broker asks of the cluster it belongs to (implemented by `brook-cluster`; a
//! single node has none), and what the cluster asks of the broker: host a stream in a role,
//! feed a replica, report a replica's acks to a leader.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use brook_log::{LogReader, Shipped};
use tokio::sync::{oneshot, watch};

use crate::args::StreamArgs;
use crate::error::Error;
use crate::registry::{Broker, Shipments, Slot};
use crate::stream::{Command, Reshape, Role, StreamId};
use crate::super_streams::{SuperStreamAnswer, SuperStreamChange};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A node's stream endpoint, as clients are told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// Where a stream lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    pub leader: Endpoint,
    pub replicas: Vec<Endpoint>,
}

pub trait ClusterHooks: Send + Sync + std::fmt::Debug {
    /// Creates a stream cluster-wide; returns once this node has applied the creation.
    fn create(
        &self,
        id: StreamId,
        arguments: Vec<(String, String)>,
    ) -> BoxFuture<Result<(), Error>>;
    /// Deletes a stream cluster-wide.
    fn delete(&self, id: StreamId) -> BoxFuture<Result<(), Error>>;
    /// The stream's leader and replicas; `None` if the cluster does not know it.
    fn members(&self, id: &StreamId) -> Option<Members>;
    /// A consumer on a replica stored an offset: it belongs to the leader's log.
    fn store_offset(&self, id: &StreamId, reference: &str, offset: u64);
    /// Changes the super stream definitions cluster-wide; returns once this node holds the
    /// result ([`Broker::install_super_streams`]).
    fn super_streams(
        &self,
        change: SuperStreamChange,
    ) -> BoxFuture<Result<SuperStreamAnswer, Error>>;
}

/// A stream this node hosts, as the cluster's replication link sees it.
#[derive(Debug)]
pub struct Hosted {
    pub reader: LogReader,
    /// The committed end (readers see up to it).
    pub committed: watch::Receiver<u64>,
    /// A leader's written chunks, for its replicas.
    pub shipments: Option<Shipments>,
}

impl Broker {
    /// Joins this broker to a cluster: stream creation, deletion and placement go through it.
    pub fn set_cluster(&self, hooks: Arc<dyn ClusterHooks>) {
        let _ = self.inner.cluster.set(hooks);
    }

    /// Hosts a stream in `role`: opens it from disk (or creates it) and starts its task. A
    /// stream hosted in another role is stopped first (its files stay).
    pub async fn host(
        &self,
        id: &StreamId,
        arguments: &[(String, String)],
        role: Role,
    ) -> Result<Hosted, Error> {
        let args = StreamArgs::parse(arguments).map_err(Error::PreconditionFailed)?;
        let _hosting = self.inner.hosting.lock().await;
        let existing = self.read_streams().get(id).map(|slot| match slot {
            Slot::Ready(s) => Ok((s.clone(), s.dir.clone())),
            Slot::Dormant { dir, .. } | Slot::Unavailable { dir, .. } => Err(Some(dir.clone())),
            Slot::Creating(_) => Err(None),
        });
        let dir = match existing {
            None => {
                let shipments = self.create_local(id.clone(), args, role).await?;
                return self.hosted(id, shipments);
            }
            Some(Ok((stream, dir))) => {
                if stream.role == role {
                    return self.hosted(id, None);
                }
                let (reply, done) = oneshot::channel();
                if stream.send(Command::Shutdown { reply }).is_ok() {
                    let _ = done.await;
                }
                // Its publishers and consumers go, and their clients hear MetadataUpdate
                // STREAM_NOT_AVAILABLE, as when a RabbitMQ stream changes leader; they ask
                // Metadata again and reconnect.
                stream
                    .state
                    .notify_all(&crate::outgoing::ControlEvent::StreamDeleted(
                        id.name.clone(),
                    ));
                dir
            }
            Some(Err(Some(dir))) => dir,
            Some(Err(None)) => {
                return Err(Error::StreamNotAvailable(
                    id.name.clone(),
                    "being created".into(),
                ));
            }
        };
        let config = self.inner.config.clone();
        let opened = {
            let (dir, args) = (dir.clone(), args.clone());
            tokio::task::spawn_blocking(move || crate::registry::open_log(&config, &dir, &args))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
        };
        let (log, _) = opened.map_err(|e| Error::Internal(format!("opening {id}: {e}")))?;
        let (stream, shipments) = self.start_writer(id, args, dir, log, role);
        tracing::info!(stream = %id, ?role, "stream hosted");
        self.write_streams().insert(id.clone(), Slot::Ready(stream));
        self.hosted(id, shipments)
    }

    fn hosted(&self, id: &StreamId, shipments: Option<Shipments>) -> Result<Hosted, Error> {
        let stream = self.stream(id)?;
        Ok(Hosted {
            reader: stream.reader.clone(),
            committed: stream.committed.clone(),
            shipments,
        })
    }

    /// This node no longer hosts the stream: its files go.
    pub async fn unhost(&self, id: &StreamId) -> Result<(), Error> {
        self.delete_local(id.clone()).await
    }

    /// What this node hosts in which role.
    pub fn hosted_roles(&self) -> Vec<(StreamId, Role)> {
        self.read_streams()
            .iter()
            .filter_map(|(id, slot)| match slot {
                Slot::Ready(s) => Some((id.clone(), s.role)),
                _ => None,
            })
            .collect()
    }

    /// A replica takes the leader's chunks and commit; returns its durable end.
    pub async fn replicate(
        &self,
        id: &StreamId,
        chunks: Vec<Shipped>,
        commit: u64,
    ) -> Result<u64, Error> {
        self.ask(id, |reply| Command::Replicate {
            chunks,
            commit,
            reply,
        })
        .await
    }

    /// The last chunk (id, epoch) of a stream hosted here.
    pub async fn tail(&self, id: &StreamId) -> Result<Option<(u64, u64)>, Error> {
        self.ask(id, |reply| Command::Tail { reply }).await
    }

    /// A replica's log is cut back or started again; returns its new end.
    pub async fn reshape(&self, id: &StreamId, change: Reshape) -> Result<u64, Error> {
        self.ask(id, |reply| Command::Reshape { change, reply })
            .await
    }

    /// Sends a stream's task a command and waits for its answer.
    async fn ask<T>(
        &self,
        id: &StreamId,
        command: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Command,
    ) -> Result<T, Error> {
        let stream = self.stream(id)?;
        let (reply, answer) = oneshot::channel();
        stream.send(command(reply))?;
        let unavailable = |reason: String| Error::StreamNotAvailable(id.name.clone(), reason);
        answer
            .await
            .map_err(|_| unavailable("stopped".into()))?
            .map_err(unavailable)
    }

    /// A leader's stream now has these replicas, in the same epoch: it goes on without a
    /// restart (a restart would reopen the log and show its uncommitted tail to readers).
    pub fn set_replicas(&self, id: &StreamId, replicas: Vec<u64>) {
        if let Ok(stream) = self.stream(id) {
            let _ = stream.send(Command::SetReplicas { replicas });
        }
    }

    /// A leader hears that replica `node` holds everything before `end`.
    pub fn acked(&self, id: &StreamId, node: u64, end: u64) {
        if let Ok(stream) = self.stream(id) {
            let _ = stream.send(Command::Acked { node, end });
        }
    }

    /// Writes a stored offset that a consumer on a replica (of another node) stored.
    pub fn store_offset_here(&self, id: &StreamId, reference: &str, offset: u64) {
        if let Ok(stream) = self.stream(id) {
            let _ = stream.send(Command::StoreOffset {
                reference: reference.to_owned(),
                offset,
                _charge: crate::budget::Charge::default(),
            });
        }
    }

    /// Where a stream lives, when this broker is in a cluster.
    pub fn members(&self, id: &StreamId) -> Option<Members> {
        self.inner.cluster.get()?.members(id)
    }

    /// This node's role for a stream it hosts.
    pub fn role(&self, id: &StreamId) -> Option<Role> {
        self.stream(id).ok().map(|s| s.role)
    }
}
