//! Joining and leaving the cluster, as RabbitMQ's `join_cluster` and `forget_cluster_node`.
//!
//! A node started with `--join` does not form a cluster of its own: it asks the members it
//! knows (`--peer`) to add it. The metadata leader adds it to openraft's membership as a
//! learner, waits until it has caught up with the log, then makes it a voter. It then announces
//! its name and address like every node, and new streams are placed on it; existing streams
//! keep their members, as in RabbitMQ.
//!
//! Forgetting a node takes a node that is down out of the metadata (it leaves the streams it
//! replicates; refused while it still leads any, which failover settles within seconds) and
//! then out of openraft's membership, so majorities are counted without it.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};

use crate::metadata::{Command, MetadataError, NodeId, StreamKey};
use crate::network::{CALL_TIMEOUT, ProposeError, Reply, Request};
use crate::node::Cluster;

/// How long a new member may take to catch up with the metadata log.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// A change of the metadata group's voters, done by its leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MembershipChange {
    /// `addr` is the node's cluster address, for members whose `--peer` flags lack it.
    Add {
        id: NodeId,
        addr: String,
    },
    Remove {
        id: NodeId,
    },
}

/// Why a node could not be forgotten, or a replica not added or deleted.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("node {0} is this node")]
    ThisNode(NodeId),
    #[error("node {0} is running; stop it first (RabbitMQ forgets stopped nodes only)")]
    Running(NodeId),
    #[error("{0}")]
    Refused(MetadataError),
    #[error("{0}; try again once every member holds the committed offset (stream_status)")]
    NotCaughtUp(String),
    #[error(transparent)]
    Cluster(#[from] ProposeError),
}

impl Cluster {
    /// The metadata group's members (voters and learners) as this node last saw them.
    pub fn member_ids(&self) -> BTreeSet<NodeId> {
        let metrics = self.raft().metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect()
    }

    /// Where this node reaches `id`'s cluster port: its own `--peer` flag, else the address
    /// the node gave when it joined.
    pub(crate) fn addr_of(&self, id: NodeId) -> Option<String> {
        if let Some(addr) = self.members().get(&id) {
            return Some(addr.clone());
        }
        let metrics = self.raft().metrics().borrow().clone();
        let node = metrics.membership_config.membership().get_node(&id)?;
        // Members that formed the cluster are named, not addressed (`Cluster::form`).
        (!node.addr.starts_with("node-")).then(|| node.addr.clone())
    }

    /// Asks the members this node knows to add it, until one does (`--join`).
    pub(crate) async fn join(&self) {
        let change = MembershipChange::Add {
            id: self.id(),
            addr: self.members().get(&self.id()).cloned().unwrap_or_default(),
        };
        let peers: Vec<String> = self
            .members()
            .iter()
            .filter(|(id, _)| **id != self.id())
            .map(|(_, addr)| addr.clone())
            .collect();
        loop {
            for addr in &peers {
                let request = Request::Membership(change.clone());
                match self
                    .peer(addr.clone())
                    .call(&request, CATCH_UP_TIMEOUT + CALL_TIMEOUT)
                    .await
                {
                    Ok(Reply::Membership(Ok(()))) => {
                        tracing::info!(via = %addr, "joined the cluster");
                        return;
                    }
                    Ok(other) => tracing::info!(via = %addr, "joining: {other:?}; retrying"),
                    Err(e) => tracing::info!(via = %addr, "joining: {e}; retrying"),
                }
            }
            if self.is_stopped() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `rabbitmq-streams add_replica` (`add`) and `delete_replica`: `node` becomes a member of
    /// the stream, catching up from the leader, or stops being one.
    pub async fn change_replica(
        &self,
        key: StreamKey,
        node: NodeId,
        add: bool,
    ) -> Result<(), MembershipError> {
        self.members_hold_the_commit(&key).await?;
        let command = if add {
            Command::AddReplica { key, node }
        } else {
            Command::DeleteReplica { key, node }
        };
        match self.propose(command).await? {
            Ok(_) => Ok(()),
            Err(e) => Err(MembershipError::Refused(e)),
        }
    }

    /// A stream's members change only while every one of them holds everything committed:
    /// then any majority of the new members holds it too, however the majority's size
    /// changes. (A committed chunk is on a majority of the old members only; two changes in a
    /// row, the second before the first's new member caught up, could leave a majority of the
    /// new members without it.)
    async fn members_hold_the_commit(&self, key: &StreamKey) -> Result<(), MembershipError> {
        let unknown = || MembershipError::Refused(MetadataError::UnknownStream(key.clone()));
        let statuses = self.stream_status(key).await.ok_or_else(unknown)?;
        let committed = statuses
            .values()
            .flatten()
            .find(|s| s.role == "writer")
            .map(|s| s.committed_offset)
            .ok_or_else(|| MembershipError::NotCaughtUp("the leader did not answer".into()))?;
        for (node, status) in &statuses {
            let holds = status.as_ref().map(|s| s.offset >= committed);
            if holds != Some(true) {
                return Err(MembershipError::NotCaughtUp(format!(
                    "node {node} does not hold the stream's committed offset {committed:?}"
                )));
            }
        }
        Ok(())
    }

    /// Takes a stopped node out of the cluster (`forget_cluster_node`).
    pub async fn forget(&self, id: NodeId) -> Result<(), MembershipError> {
        if id == self.id() {
            return Err(MembershipError::ThisNode(id));
        }
        if self.statuses().await.get(&id).is_some_and(Option::is_some) {
            return Err(MembershipError::Running(id));
        }
        match self.propose(Command::RemoveNode { id }).await? {
            Ok(_) | Err(MetadataError::UnknownNode(_)) => {}
            Err(e) => return Err(MembershipError::Refused(e)),
        }
        Ok(self
            .change_membership(MembershipChange::Remove { id })
            .await?)
    }

    /// Applies `change` on the metadata leader, wherever it is.
    pub(crate) async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<(), ProposeError> {
        match self.change_membership_here(change.clone()).await {
            Err(Forward::To(leader)) => {
                let addr = self.addr_of(leader).ok_or(ProposeError::NoLeader)?;
                let reply = self
                    .peer(addr)
                    .call(
                        &Request::Membership(change),
                        CATCH_UP_TIMEOUT + CALL_TIMEOUT,
                    )
                    .await
                    .map_err(|e| ProposeError::Unreachable(leader, e.to_string()))?;
                match reply {
                    Reply::Membership(answer) => answer,
                    _ => Err(ProposeError::Raft("unexpected reply".into())),
                }
            }
            Err(Forward::Failed(e)) => Err(e),
            Ok(()) => Ok(()),
        }
    }

    /// [`Cluster::change_membership`] if this node leads; a forwarded change must not be
    /// forwarded again.
    pub(crate) async fn change_membership_here(
        &self,
        change: MembershipChange,
    ) -> Result<(), Forward> {
        let voters = self.voter_ids();
        let result = match change {
            MembershipChange::Add { id, .. } if voters.contains(&id) => return Ok(()),
            MembershipChange::Remove { id } if !self.member_ids().contains(&id) => return Ok(()),
            MembershipChange::Add { id, addr } => {
                let learner = tokio::time::timeout(
                    CATCH_UP_TIMEOUT,
                    self.raft().add_learner(id, BasicNode::new(addr), true),
                )
                .await
                .map_err(|_| Forward::Failed(ProposeError::Raft("catching up timed out".into())))?;
                match learner {
                    Ok(_) => {
                        self.change_voters(ChangeMembers::AddVoterIds([id].into()))
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            MembershipChange::Remove { id } => {
                self.change_voters(ChangeMembers::RemoveVoters([id].into()))
                    .await
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(f
                .leader_id
                .map_or(Forward::Failed(ProposeError::NoLeader), Forward::To)),
            Err(e) => Err(Forward::Failed(ProposeError::Raft(e.to_string()))),
        }
    }

    fn voter_ids(&self) -> BTreeSet<NodeId> {
        let metrics = self.raft().metrics().borrow().clone();
        metrics.membership_config.membership().voter_ids().collect()
    }

    async fn change_voters(
        &self,
        change: ChangeMembers<NodeId, BasicNode>,
    ) -> Result<(), RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>> {
        // `retain: false`: a removed voter does not stay on as a learner.
        self.raft().change_membership(change, false).await.map(drop)
    }
}

/// Why a membership change did not happen here.
#[derive(Debug)]
pub(crate) enum Forward {
    /// Another node leads the metadata group.
    To(NodeId),
    Failed(ProposeError),
}
