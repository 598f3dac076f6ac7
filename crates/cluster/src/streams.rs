//! Makes this node host what the metadata says: the streams it is a member of, as leader
//! (with a replication feed per replica) or as replica; and none of those it is not.

use std::collections::HashMap;
use std::sync::Arc;

use brook_broker::cluster::Hosted;
use brook_broker::{Broker, Role, StreamId};
use tokio::task::JoinHandle;

use crate::metadata::StreamMeta;
use crate::node::Cluster;
use crate::replication::{Backlog, Feed};

/// The replication tasks of the streams this node leads.
#[derive(Debug, Default)]
pub(crate) struct Feeds {
    tasks: HashMap<StreamId, Vec<JoinHandle<()>>>,
}

impl Feeds {
    fn stop(&mut self, id: &StreamId) {
        for task in self.tasks.remove(id).unwrap_or_default() {
            task.abort();
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
        if broker.role(&id) == Some(role) {
            continue;
        }
        feeds.stop(&id);
        match broker.host(&id, &stream.arguments, role).await {
            Ok(mut hosted) => {
                if let Some(shipments) = hosted.shipments.take() {
                    let tasks = lead(cluster, broker, stream, &id, hosted, shipments);
                    feeds.tasks.insert(id, tasks);
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

/// Starts a leader's replication: the backlog of its written chunks, and a feed per replica.
fn lead(
    cluster: &Arc<Cluster>,
    broker: &Broker,
    stream: &StreamMeta,
    id: &StreamId,
    hosted: Hosted,
    mut shipments: brook_broker::Shipments,
) -> Vec<JoinHandle<()>> {
    let Hosted {
        reader, committed, ..
    } = hosted;
    let backlog = Backlog::new(reader.stats().next_offset);
    let mut tasks = Vec::new();
    {
        let (backlog, mut committed) = (backlog.clone(), committed.clone());
        tasks.push(tokio::spawn(async move {
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
        }));
    }
    for &replica in stream.members.keys().filter(|n| **n != cluster.id()) {
        let Some(addr) = cluster.addr_of(replica) else {
            tracing::error!(stream = %id, replica, "no cluster address for the replica");
            continue;
        };
        let feed = Feed {
            broker: broker.clone(),
            id: id.clone(),
            epoch: stream.epoch,
            leader: cluster.id(),
            replica,
            addr,
            key: cluster.key().clone(),
            backlog: backlog.clone(),
            reader: reader.clone(),
            committed: committed.clone(),
        };
        tasks.push(tokio::spawn(feed.run()));
    }
    tasks
}
