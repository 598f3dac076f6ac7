//! A replica that stops hearing its leader reports so to the metadata group, with its log's
//! tail; once a majority of the stream's members has, the group elects the member with the
//! highest tail for the next epoch (`metadata.rs`), as RabbitMQ's stream coordinator does.
//! The leader's link carries a heartbeat every [`HEARTBEAT`], so silence means a dead or
//! cut-off leader, not an idle stream.

use std::sync::Arc;
use std::time::Duration;

use brook_broker::StreamId;

use crate::metadata::{Command, Member, Tail};
use crate::node::Cluster;
use crate::replication::HEARTBEAT;

/// A leader not heard for this long is reported lost (8 heartbeats: a loaded machine's
/// scheduling delays must not depose a healthy leader).
pub(crate) const LEADER_TIMEOUT: Duration = Duration::from_millis(2000);

pub(crate) async fn watch(cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        check(&cluster).await;
    }
}

async fn check(cluster: &Arc<Cluster>) {
    let Some(broker) = cluster.broker() else {
        return;
    };
    let me = cluster.id();
    let metadata = cluster.metadata();
    for (key, stream) in &metadata.streams {
        if stream.leader == me || stream.members.get(&me) != Some(&Member::Running) {
            continue;
        }
        let silence = cluster.silence(key, stream.epoch);
        if silence < LEADER_TIMEOUT {
            if silence > HEARTBEAT * 3 {
                tracing::debug!(stream = ?key.name, ?silence, epoch = stream.epoch, "leader quiet");
            }
            continue;
        }
        let id = StreamId::from(key);
        // Fenced first: from now on this replica appends nothing from that leader and acks
        // nothing it appended after this, so the tail reported below is all it can ever have
        // counted toward that leader's commits.
        cluster.fence(key, stream.epoch);
        let tail = match broker.tail(&id).await {
            Ok(tail) => tail,
            Err(e) => {
                tracing::debug!(stream = %id, "no tail to report: {e}");
                continue;
            }
        };
        let tail = Tail {
            epoch: tail.map_or(0, |(_, epoch)| epoch),
            chunk_id: tail.map(|(chunk_id, _)| chunk_id),
        };
        tracing::warn!(stream = %id, leader = stream.leader, epoch = stream.epoch, ?tail,
            "leader not heard from; reporting this member stopped");
        let command = Command::MemberStopped {
            key: key.clone(),
            node: me,
            epoch: stream.epoch,
            tail,
        };
        match cluster.propose(command).await {
            Ok(Ok(applied)) => tracing::info!(stream = %id, ?applied, "failover"),
            Ok(Err(e)) => tracing::warn!(stream = %id, "failover: {e}"),
            Err(e) => tracing::debug!(stream = %id, "failover, retrying: {e}"),
        }
    }
}
