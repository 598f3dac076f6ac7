//! Makes this node host what the metadata says: the streams it is a member of, as leader
//! (with a replication feed per replica) or as replica; and none of those it is not.

use std::collections::HashMap;
use std::sync::Arc;

use brook_broker::cluster::Hosted;
use brook_broker::{Broker, Role, StreamId};
use brook_log::LogReader;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metadata::{NodeId, StreamMeta};
use crate::node::Cluster;
use crate::replication::{Backlog, Feed};

/// The replication of the streams this node leads.
#[derive(Debug, Default)]
pub(crate) struct Feeds {
    led: HashMap<StreamId, Led>,
}

impl Feeds {
    fn stop(&mut self, id: &StreamId) {
        self.led.remove(id);
    }
}

/// One led stream: the backlog of its written chunks, filled by `pump`, and a feed per
/// replica. Dropping it stops them all.
#[derive(Debug)]
struct Led {
    backlog: Arc<Backlog>,
    reader: LogReader,
    committed: watch::Receiver<u64>,
    epoch: u64,
    pump: JoinHandle<()>,
    feeds: HashMap<NodeId, JoinHandle<()>>,
}

impl Drop for Led {
    fn drop(&mut self) {
        self.pump.abort();
        for feed in self.feeds.values() {
            feed.abort();
        }
    }
}

/// Runs [`reconcile`] on every change of the metadata.
pub(crate) async fn watch(cluster: Arc<Cluster>) {
    let mut changes = cluster.watch();
    loop {
        reconcile(&cluster).await;
        if changes.changed().await.is_err() {
            return;
        }
    }
}

fn role_of(cluster: &Cluster, stream: &StreamMeta) -> Option<Role> {
    let me = cluster.id();
    if !stream.members.contains_key(&me) {
        None
    } else if stream.leader == me {
        Some(Role::Leader {
            epoch: stream.epoch,
            members: stream.members.len(),
        })
    } else {
        Some(Role::Replica)
    }
}

/// One pass: host, re-role and drop streams until this node matches the metadata.
pub(crate) async fn reconcile(cluster: &Arc<Cluster>) {
    let Some(broker) = cluster.broker() else {
        return;
    };
    let mut feeds = cluster.feeds().lock().await;
    let metadata = cluster.metadata();
    for (key, stream) in &metadata.streams {
        let id = StreamId::from(key);
        let Some(role) = role_of(cluster, stream) else {
            continue;
        };
        let hosted = broker.role(&id);
        if let (Some(Role::Leader { epoch: now, .. }), Role::Leader { epoch, .. }) = (hosted, role)
            && now == epoch
            && let Some(led) = feeds.led.get_mut(&id)
        {
            // Same epoch, other replicas (add_replica, delete_replica, a forgotten node): the
            // writer goes on, so its log keeps showing readers only what is committed.
            led.follow(cluster, broker, stream, &id);
            continue;
        }
        if hosted == Some(role) {
            continue;
        }
        feeds.stop(&id);
        match broker.host(&id, &stream.arguments, role).await {
            Ok(mut hosted) => {
                if let Some(shipments) = hosted.shipments.take() {
                    let mut led = lead(hosted, shipments, stream.epoch);
                    led.follow(cluster, broker, stream, &id);
                    feeds.led.insert(id, led);
                }
            }
            Err(e) => tracing::error!(stream = %id, ?role, "hosting: {e}"),
        }
    }
    for (id, role) in broker.hosted_roles() {
        if role == Role::Single {
            continue;
        }
        let key = crate::StreamKey::from(&id);
        let member = metadata
            .streams
            .get(&key)
            .is_some_and(|s| s.members.contains_key(&cluster.id()));
        if !member {
            feeds.stop(&id);
            if let Err(e) = broker.unhost(&id).await {
                tracing::error!(stream = %id, "removing: {e}");
            }
        }
    }
}

/// Starts a leader's replication: the backlog of its written chunks; feeds follow.
fn lead(hosted: Hosted, mut shipments: brook_broker::Shipments, epoch: u64) -> Led {
    let Hosted {
        reader, committed, ..
    } = hosted;
    let backlog = Backlog::new(reader.stats().next_offset);
    let pump = {
        let (backlog, mut committed) = (backlog.clone(), committed.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    batch = shipments.recv() => match batch {
                        Some(batch) => backlog.push(batch),
                        None => return,
                    },
                    changed = committed.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let c = *committed.borrow_and_update();
                        backlog.trim(c);
                    }
                }
            }
        })
    };
    Led {
        backlog,
        reader,
        committed,
        epoch,
        pump,
        feeds: HashMap::new(),
    }
}

impl Led {
    /// Runs a feed for each of the stream's replicas and none other, and tells the writer
    /// who they are when that changed.
    fn follow(
        &mut self,
        cluster: &Arc<Cluster>,
        broker: &Broker,
        stream: &StreamMeta,
        id: &StreamId,
    ) {
        let replicas: Vec<NodeId> = stream
            .members
            .keys()
            .copied()
            .filter(|n| *n != cluster.id())
            .collect();
        let before = self.feeds.len();
        self.feeds.retain(|node, feed| {
            let keep = replicas.contains(node);
            if !keep {
                feed.abort();
            }
            keep
        });
        let mut changed = self.feeds.len() != before;
        for &replica in &replicas {
            if self.feeds.contains_key(&replica) {
                continue;
            }
            let Some(addr) = cluster.addr_of(replica) else {
                tracing::error!(stream = %id, replica, "no cluster address for the replica");
                continue;
            };
            let feed = Feed {
                broker: broker.clone(),
                id: id.clone(),
                epoch: self.epoch,
                leader: cluster.id(),
                replica,
                addr,
                key: cluster.key().clone(),
                backlog: self.backlog.clone(),
                reader: self.reader.clone(),
                committed: self.committed.clone(),
            };
            self.feeds.insert(replica, tokio::spawn(feed.run()));
            changed = true;
        }
        if changed {
            broker.set_replicas(id, replicas);
        }
    }
}
