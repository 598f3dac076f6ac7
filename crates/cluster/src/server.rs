//! The cluster port: answers peers' Raft calls, forwarded proposals and status questions.

use std::sync::Arc;

use tokio::io::BufStream;
use tokio::net::{TcpListener, TcpStream};

use crate::network::{CALL_TIMEOUT, Reply, Request, read_frame, write_frame};
use crate::node::Cluster;

/// Accepts peers until the runtime stops.
pub(crate) async fn serve(listener: TcpListener, cluster: Arc<Cluster>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, cluster.clone()));
            }
            // Out of descriptors, a reset before accept: the listener itself is fine.
            Err(e) => {
                tracing::warn!("cluster port: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, cluster: Arc<Cluster>) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let peer = stream.peer_addr().ok();
    let mut stream = BufStream::new(stream);
    // A peer that connects and says nothing must not hold a task and a descriptor for ever.
    let handshake = tokio::time::timeout(CALL_TIMEOUT, cluster.key().server(&mut stream)).await;
    if let Err(e) = handshake.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())) {
        tracing::warn!("cluster port, {peer:?}: {e}");
        return;
    }
    loop {
        let request: Request = match read_frame(&mut stream).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("cluster port, {peer:?}: {e}");
                return;
            }
        };
        if cluster.is_stopped() {
            return;
        }
        if let Request::Replicate {
            vhost,
            name,
            epoch,
            leader,
        } = request
        {
            let key = crate::StreamKey { vhost, name };
            if let Err(e) = crate::replication::serve(&cluster, stream, key, epoch, leader).await {
                tracing::debug!("replication link from {peer:?}: {e}");
            }
            return;
        }
        let reply = answer(&cluster, request).await;
        if let Err(e) = write_frame(&mut stream, &reply).await {
            tracing::debug!("cluster port, {peer:?}: {e}");
            return;
        }
    }
}

async fn answer(cluster: &Cluster, request: Request) -> Reply {
    let raft = cluster.raft();
    match request {
        Request::Append(r) => Reply::Append(raft.append_entries(r).await),
        Request::Vote(r) => Reply::Vote(raft.vote(r).await),
        Request::Snapshot(r) => Reply::Snapshot(raft.install_snapshot(r).await),
        Request::Propose(command) => Reply::Propose(cluster.propose_here(command).await),
        Request::Status => Reply::Status(cluster.status()),
        Request::Membership(change) => Reply::Membership(cluster.change_membership(change).await),
        Request::StreamStatus { vhost, name } => {
            let id = brook_broker::StreamId::new(vhost, name);
            Reply::StreamStatus(cluster.broker().and_then(|b| b.member_status(&id)))
        }
        Request::StoreOffset {
            vhost,
            name,
            reference,
            offset,
        } => {
            if let Some(broker) = cluster.broker() {
                let id = brook_broker::StreamId::new(vhost, name);
                broker.store_offset_here(&id, &reference, offset);
            }
            Reply::Done
        }
        Request::Reshape {
            vhost,
            name,
            epoch,
            leader,
            change,
        } => {
            let key = crate::StreamKey { vhost, name };
            Reply::Replicate(
                crate::replication::reshape(cluster, &key, epoch, leader, change).await,
            )
        }
        // Handled by `connection`, which hands the connection over.
        Request::Replicate { .. } => Reply::Done,
    }
}
