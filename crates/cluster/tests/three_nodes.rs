//! Three metadata nodes in one process, on loopback: the cluster forms, proposals made on any
//! node apply on every node, a leader's loss elects another, and a restarted node comes back
//! with what it had and what it missed.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use brook_cluster::{
    Applied, Cluster, ClusterConfig, ClusterKey, Command, Locator, NodeId, NodeInfo, StreamKey,
};
use tokio::net::TcpListener;

fn config(id: NodeId, members: &BTreeMap<NodeId, String>, dir: &Path) -> ClusterConfig {
    ClusterConfig {
        node_id: id,
        listen: members[&id].parse().unwrap(),
        members: members.clone(),
        dir: dir.join(id.to_string()),
        info: NodeInfo {
            name: format!("brook-{id}@localhost"),
            addr: format!("127.0.0.1:{}", 5550 + id),
        },
        storage: brook_storage::disk(),
        join: false,
        key: ClusterKey::new(Some(b"three nodes")),
    }
}

/// Waits (polling openraft's own view, not the clock) until some node leads.
async fn leader(nodes: &BTreeMap<NodeId, Arc<Cluster>>) -> NodeId {
    for _ in 0..200 {
        for node in nodes.values() {
            let s = node.status();
            if s.role == "leader" {
                return s.id;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader within 10 s");
}

fn key(name: &str) -> StreamKey {
    StreamKey {
        vhost: "/".into(),
        name: name.into(),
    }
}

fn create(name: &str, on: NodeId) -> Command {
    Command::CreateStream {
        key: key(name),
        arguments: vec![],
        size: None,
        locator: Locator::ClientLocal,
        declared_on: on,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_apply_everywhere_and_survive_a_leader_loss_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut listeners = BTreeMap::new();
    let mut members = BTreeMap::new();
    for id in 1..=3 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        members.insert(id, l.local_addr().unwrap().to_string());
        listeners.insert(id, l);
    }
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        let node = Cluster::start_on(config(id, &members, dir.path()), l)
            .await
            .unwrap();
        nodes.insert(id, node);
    }
    let first = leader(&nodes).await;
    // Each node announces its name and address once there is a leader.
    for node in nodes.values() {
        let mut watch = node.watch();
        tokio::time::timeout(
            Duration::from_secs(10),
            watch.wait_for(|m| m.nodes.len() == 3),
        )
        .await
        .expect("every node announced")
        .unwrap();
    }
    // Proposed on a follower: forwarded to the leader, and applied here before it returns.
    let follower = *nodes.keys().find(|id| **id != first).unwrap();
    let created = nodes[&follower]
        .propose(create("a", follower))
        .await
        .unwrap();
    assert_eq!(
        created,
        Ok(Applied::StreamCreated {
            key: key("a"),
            leader: follower
        })
    );
    assert_eq!(
        nodes[&follower].metadata().streams[&key("a")].leader,
        follower
    );

    // The leader goes away; the other two elect one of themselves.
    nodes[&first].shutdown().await;
    let gone = nodes.remove(&first).unwrap();
    drop(gone);
    let second = leader(&nodes).await;
    assert_ne!(second, first);
    let other = *nodes.keys().find(|id| **id != second).unwrap();
    nodes[&other]
        .propose(create("b", other))
        .await
        .unwrap()
        .unwrap();

    // The old leader restarts from its files: it has "a", and catches up on "b".
    let l = TcpListener::bind(&members[&first]).await.unwrap();
    let back = Cluster::start_on(config(first, &members, dir.path()), l)
        .await
        .unwrap();
    let mut watch = back.watch();
    let caught_up = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = watch.borrow_and_update().clone();
            if m.streams.contains_key(&key("a")) && m.streams.contains_key(&key("b")) {
                return m;
            }
            watch.changed().await.unwrap();
        }
    })
    .await
    .expect("the restarted node catches up");
    assert_eq!(caught_up.nodes[&1].name, "brook-1@localhost");
}
