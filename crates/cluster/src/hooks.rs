//! The broker's view of the cluster ([`ClusterHooks`]): stream creation and deletion go
//! through the metadata group, `Metadata` answers come from it, and offsets stored on a
//! replica go to the leader.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use brook_broker::cluster::{BoxFuture, ClusterHooks, Endpoint, Members};
use brook_broker::{Error, StreamId, SuperStreamAnswer, SuperStreamChange};

use crate::auth::ClusterKey;
use crate::metadata::{Applied, Command, Locator, MetadataError, NodeId, StreamKey};
use crate::network::{CALL_TIMEOUT, Peer, Request};
use crate::node::Cluster;

#[derive(Debug)]
pub(crate) struct Hooks {
    pub cluster: Arc<Cluster>,
    /// Stored offsets on their way to leaders, in the order they were stored.
    forward: mpsc::UnboundedSender<(NodeId, String, Request)>,
}

impl Hooks {
    pub(crate) fn new(cluster: Arc<Cluster>) -> Hooks {
        let (forward, queue) = mpsc::unbounded_channel();
        tokio::spawn(forward_offsets(queue, cluster.key().clone()));
        Hooks { cluster, forward }
    }
}

/// Sends stored offsets to their leaders one after another over one connection per leader:
/// a consumer's later offset must not overtake an earlier one.
async fn forward_offsets(
    mut queue: mpsc::UnboundedReceiver<(NodeId, String, Request)>,
    key: ClusterKey,
) {
    let mut peers: HashMap<NodeId, Peer> = HashMap::new();
    while let Some((leader, addr, request)) = queue.recv().await {
        let peer = peers
            .entry(leader)
            .or_insert_with(|| Peer::new(addr, key.clone()));
        if let Err(e) = peer.call(&request, CALL_TIMEOUT).await {
            tracing::warn!(leader, "storing an offset on the leader: {e}");
        }
    }
}

fn key(id: &StreamId) -> StreamKey {
    StreamKey::from(id)
}

/// `x-initial-cluster-size` and `x-queue-leader-locator`, as RabbitMQ reads them.
fn placement(arguments: &[(String, String)]) -> Result<(Option<usize>, Locator), Error> {
    let mut size = None;
    let mut locator = Locator::ClientLocal;
    for (k, v) in arguments {
        match k.as_str() {
            "initial-cluster-size" | "x-initial-cluster-size" => {
                let n: usize = v.parse().map_err(|_| {
                    Error::PreconditionFailed(format!("invalid initial-cluster-size {v:?}"))
                })?;
                size = Some(n.max(1));
            }
            "queue-leader-locator" | "x-queue-leader-locator" => {
                locator = match v.as_str() {
                    "client-local" => Locator::ClientLocal,
                    "balanced" | "least-leaders" | "random" => Locator::Balanced,
                    other => {
                        return Err(Error::PreconditionFailed(format!(
                            "invalid queue-leader-locator {other:?}"
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    Ok((size, locator))
}

fn endpoint(addr: &str) -> Option<Endpoint> {
    let (host, port) = addr.rsplit_once(':')?;
    Some(Endpoint {
        host: host.to_owned(),
        port: port.parse().ok()?,
    })
}

/// Proposes a stream's creation or deletion, and acts on it here before answering.
async fn apply(cluster: &Arc<Cluster>, id: &StreamId, command: Command) -> Result<(), Error> {
    let unavailable = |reason: String| Error::StreamNotAvailable(id.name.clone(), reason);
    let applied = cluster
        .propose(command)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    match applied {
        Ok(_) => {}
        Err(MetadataError::StreamExists(_)) => {
            return Err(Error::StreamAlreadyExists(id.name.clone()));
        }
        Err(MetadataError::UnknownStream(_)) => {
            return Err(Error::StreamDoesNotExist(id.name.clone()));
        }
        Err(e) => return Err(unavailable(e.to_string())),
    }
    // This node acts on it before answering, so what the client does next finds it.
    crate::streams::reconcile(cluster).await;
    Ok(())
}

impl ClusterHooks for Hooks {
    fn create(
        &self,
        id: StreamId,
        arguments: Vec<(String, String)>,
    ) -> BoxFuture<Result<(), Error>> {
        let cluster = self.cluster.clone();
        Box::pin(async move {
            let (size, locator) = placement(&arguments)?;
            let command = Command::CreateStream {
                key: key(&id),
                arguments,
                size,
                locator,
                declared_on: cluster.id(),
            };
            apply(&cluster, &id, command).await
        })
    }

    fn delete(&self, id: StreamId) -> BoxFuture<Result<(), Error>> {
        let cluster = self.cluster.clone();
        Box::pin(async move {
            let command = Command::DeleteStream { key: key(&id) };
            apply(&cluster, &id, command).await
        })
    }

    fn members(&self, id: &StreamId) -> Option<Members> {
        let metadata = self.cluster.metadata();
        let stream = metadata.streams.get(&key(id))?;
        let at = |node| metadata.nodes.get(node).and_then(|n| endpoint(&n.addr));
        Some(Members {
            leader: at(&stream.leader)?,
            replicas: stream
                .members
                .keys()
                .filter(|n| **n != stream.leader && self.cluster.is_reachable(**n))
                .filter_map(at)
                .collect(),
        })
    }

    fn super_streams(
        &self,
        change: SuperStreamChange,
    ) -> BoxFuture<Result<SuperStreamAnswer, Error>> {
        let cluster = self.cluster.clone();
        Box::pin(async move {
            let unavailable = |reason: String| Error::Internal(format!("cluster: {reason}"));
            match cluster.propose(Command::SuperStream(change)).await {
                Ok(Ok(Applied::SuperStreamChanged(answer))) => Ok(answer),
                Ok(Err(MetadataError::SuperStream(e))) => Err(e),
                Ok(Ok(other)) => Err(unavailable(format!("unexpected answer {other:?}"))),
                Ok(Err(e)) => Err(unavailable(e.to_string())),
                Err(e) => Err(unavailable(e.to_string())),
            }
        })
    }

    fn store_offset(&self, id: &StreamId, reference: &str, offset: u64) {
        let metadata = self.cluster.metadata();
        let Some(stream) = metadata.streams.get(&key(id)) else {
            return;
        };
        let Some(addr) = self.cluster.addr_of(stream.leader) else {
            return;
        };
        let request = Request::StoreOffset {
            vhost: id.vhost.clone(),
            name: id.name.clone(),
            reference: reference.to_owned(),
            offset,
        };
        let _ = self.forward.send((stream.leader, addr, request));
    }
}
