//! Nodes, streams, their members and leaders, and the failover rule.
//!
//! Failover follows RabbitMQ's stream coordinator (rabbit_stream_coordinator:select_leader):
//! members that lost the leader report their log's tail for the current epoch; once a majority
//! of the stream's members has reported, the one with the highest tail (epoch first, then chunk
//! id) becomes leader of the next epoch. A committed chunk is on a majority of members, and any
//! two majorities share a member, so the highest tail among a majority holds every committed
//! chunk: the new leader has everything that was confirmed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use brook_auth::{Access, AccessChange, AccessError};
use brook_broker::{
    SuperStreamAnswer, SuperStreamChange, SuperStreamMap, apply_super_stream_change,
};
use serde::{Deserialize, Serialize};

pub type NodeId = u64;

/// A stream: its virtual host and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StreamKey {
    pub vhost: String,
    pub name: String,
}

/// The broker's name for the same stream.
impl From<&StreamKey> for brook_broker::StreamId {
    fn from(key: &StreamKey) -> Self {
        brook_broker::StreamId::new(key.vhost.clone(), key.name.clone())
    }
}

impl From<&brook_broker::StreamId> for StreamKey {
    fn from(id: &brook_broker::StreamId) -> Self {
        StreamKey {
            vhost: id.vhost.clone(),
            name: id.name.clone(),
        }
    }
}

/// The end of a member's log: the epoch and id of its last chunk (`None`: empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Tail {
    pub epoch: u64,
    pub chunk_id: Option<u64>,
}

/// A member's state in the stream's current epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Member {
    /// Following the epoch's leader (or leading it).
    Running,
    /// Lost the leader; this is its log's tail.
    Stopped(Tail),
}

/// Where a new stream's leader goes (`x-queue-leader-locator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Locator {
    /// The node the stream was declared on, if it is a member (RabbitMQ's default).
    ClientLocal,
    /// The member leading the fewest streams.
    Balanced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    /// As the client declared them (each member opens its copy with the same).
    #[serde(default)]
    pub arguments: Vec<(String, String)>,
    pub epoch: u64,
    pub leader: NodeId,
    pub members: BTreeMap<NodeId, Member>,
}

/// What the cluster's log carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A node joined, or its addresses changed (every node announces itself when it starts).
    AddNode {
        id: NodeId,
        info: NodeInfo,
    },
    /// A node leaves the cluster (`forget_cluster_node`): it leaves the streams it replicates;
    /// refused while it leads any (failover moves a dead node's leaderships first).
    RemoveNode {
        id: NodeId,
    },
    /// `size`: `x-initial-cluster-size` (`None`: every node).
    CreateStream {
        key: StreamKey,
        #[serde(default)]
        arguments: Vec<(String, String)>,
        size: Option<usize>,
        locator: Locator,
        declared_on: NodeId,
    },
    DeleteStream {
        key: StreamKey,
    },
    /// `node` lost the leader of `epoch`; its log ends at `tail`.
    MemberStopped {
        key: StreamKey,
        node: NodeId,
        epoch: u64,
        tail: Tail,
    },
    /// A node's own users, vhosts and permissions, which become the cluster's if it has none
    /// yet (the first node to propose them wins; `access.rs`).
    SeedAccess(Access),
    /// A change to the cluster's users, vhosts and permissions.
    Access(AccessChange),
    /// A node's own super stream definitions, which become the cluster's if it has none yet
    /// (the first proposal wins, as for users).
    SeedSuperStreams(Vec<((String, String), brook_broker::SuperStream)>),
    /// A change to the super stream definitions.
    SuperStream(SuperStreamChange),
    /// `rabbitmq-streams add_replica`: `node` becomes a member of the stream (it catches up
    /// from the leader).
    AddReplica {
        key: StreamKey,
        node: NodeId,
    },
    /// `rabbitmq-streams delete_replica`: `node` stops being a member (not the leader).
    DeleteReplica {
        key: StreamKey,
        node: NodeId,
    },
}

/// What applying a command changed, for the nodes to act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    NodeAdded(NodeId),
    NodeRemoved(NodeId),
    /// A replica was added to or deleted from the stream.
    MembersChanged(StreamKey),
    StreamCreated {
        key: StreamKey,
        leader: NodeId,
    },
    StreamDeleted(StreamKey),
    /// Recorded; not enough members have stopped yet.
    StopRecorded,
    /// A new leader for a new epoch: the old one is fenced, the others follow.
    LeaderElected {
        key: StreamKey,
        epoch: u64,
        leader: NodeId,
    },
    /// A report about an epoch that is over, or access for a cluster that has its own:
    /// nothing to do.
    Stale,
    /// The users, vhosts or permissions changed; the change's answer (`AccessStore::change`).
    AccessChanged(bool),
    SuperStreamChanged(SuperStreamAnswer),
}

/// A command that cannot apply; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataError {
    NodeExists(NodeId),
    UnknownNode(NodeId),
    StreamExists(StreamKey),
    UnknownStream(StreamKey),
    NotAMember(NodeId),
    AlreadyAMember(NodeId),
    /// The node leads the stream: its replicas cannot be changed from under it.
    IsTheLeader(NodeId),
    /// A stream keeps at least one member.
    LastMember(NodeId),
    NoNodes,
    /// The node still leads this many streams.
    LeadsStreams(NodeId, usize),
    Access(AccessError),
    /// An access change before any node proposed the cluster's first users.
    AccessNotSeeded,
    SuperStream(brook_broker::Error),
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataError::NodeExists(n) => write!(f, "node {n} is already a member"),
            MetadataError::UnknownNode(n) => write!(f, "node {n} is not in the cluster"),
            MetadataError::StreamExists(k) => write!(f, "stream {:?} already exists", k.name),
            MetadataError::UnknownStream(k) => write!(f, "stream {:?} does not exist", k.name),
            MetadataError::NotAMember(n) => write!(f, "node {n} is not a member of the stream"),
            MetadataError::AlreadyAMember(n) => write!(f, "node {n} is already a member"),
            MetadataError::IsTheLeader(n) => write!(
                f,
                "node {n} leads the stream; delete a replica, or stop the leader and let \
                 failover move it first"
            ),
            MetadataError::LastMember(n) => write!(f, "node {n} is the stream's last member"),
            MetadataError::NoNodes => write!(f, "the cluster has no nodes"),
            MetadataError::LeadsStreams(n, count) => write!(
                f,
                "node {n} still leads {count} stream(s); a stopped node's streams fail over \
                 within seconds, try again then"
            ),
            MetadataError::Access(e) => write!(f, "{e}"),
            MetadataError::AccessNotSeeded => write!(f, "the cluster has no users yet"),
            MetadataError::SuperStream(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for MetadataError {}

/// What clients and operators are told about a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its name, RabbitMQ style (`brook@host`).
    pub name: String,
    /// Where clients reach its stream listener (`host:port`, as advertised).
    pub addr: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// A list in JSON: JSON object keys are strings, and a stream's key is two.
    #[serde(with = "as_pairs")]
    pub streams: BTreeMap<StreamKey, StreamMeta>,
    /// Users, vhosts and permissions, once a node has seeded them.
    #[serde(default)]
    pub access: Option<Access>,
    /// Super stream definitions, (vhost, name) → partitions and binding keys.
    #[serde(default, with = "as_pairs")]
    pub super_streams: SuperStreamMap,
    /// Whether the super streams were seeded or changed: until then nodes keep their own.
    #[serde(default)]
    pub super_streams_seeded: bool,
    /// The metadata group's voters, from the membership entries of its log: streams are
    /// placed on them (a node is a member before it has announced its name and address).
    #[serde(default)]
    pub voters: BTreeSet<NodeId>,
}

/// A map as a list of pairs in JSON, whose object keys can only be strings.
mod as_pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

impl Metadata {
    pub fn apply(&mut self, command: Command) -> Result<Applied, MetadataError> {
        match command {
            Command::AddNode { id, info } => {
                if self.nodes.get(&id) == Some(&info) {
                    return Err(MetadataError::NodeExists(id));
                }
                self.nodes.insert(id, info);
                Ok(Applied::NodeAdded(id))
            }
            Command::CreateStream {
                key,
                arguments,
                size,
                locator,
                declared_on,
            } => self.create(key, arguments, size, locator, declared_on),
            Command::RemoveNode { id } => self.remove_node(id),
            Command::AddReplica { key, node } => self.add_replica(key, node),
            Command::DeleteReplica { key, node } => self.delete_replica(key, node),
            Command::DeleteStream { key } => self.delete(key),
            Command::MemberStopped {
                key,
                node,
                epoch,
                tail,
            } => self.member_stopped(key, node, epoch, tail),
            Command::SeedAccess(access) => Ok(self.seed_access(access)),
            Command::Access(change) => self.change_access(change),
            Command::SeedSuperStreams(_) if self.super_streams_seeded => Ok(Applied::Stale),
            Command::SeedSuperStreams(definitions) => {
                self.super_streams = definitions.into_iter().collect();
                self.super_streams_seeded = true;
                Ok(Applied::SuperStreamChanged(SuperStreamAnswer::Changed(
                    true,
                )))
            }
            Command::SuperStream(change) => {
                let applied = apply_super_stream_change(&mut self.super_streams, change);
                self.super_streams_seeded |= applied.is_ok();
                applied
                    .map(Applied::SuperStreamChanged)
                    .map_err(MetadataError::SuperStream)
            }
        }
    }

    fn add_replica(&mut self, key: StreamKey, node: NodeId) -> Result<Applied, MetadataError> {
        if !self.placeable().contains(&node) {
            return Err(MetadataError::UnknownNode(node));
        }
        let stream = self
            .streams
            .get_mut(&key)
            .ok_or_else(|| MetadataError::UnknownStream(key.clone()))?;
        if stream.members.contains_key(&node) {
            return Err(MetadataError::AlreadyAMember(node));
        }
        stream.members.insert(node, Member::Running);
        Ok(Applied::MembersChanged(key))
    }

    fn delete_replica(&mut self, key: StreamKey, node: NodeId) -> Result<Applied, MetadataError> {
        let stream = self
            .streams
            .get_mut(&key)
            .ok_or_else(|| MetadataError::UnknownStream(key.clone()))?;
        if !stream.members.contains_key(&node) {
            return Err(MetadataError::NotAMember(node));
        }
        if stream.members.len() == 1 {
            return Err(MetadataError::LastMember(node));
        }
        if stream.leader == node {
            return Err(MetadataError::IsTheLeader(node));
        }
        stream.members.remove(&node);
        Ok(Applied::MembersChanged(key))
    }

    fn remove_node(&mut self, id: NodeId) -> Result<Applied, MetadataError> {
        if !self.nodes.contains_key(&id) {
            return Err(MetadataError::UnknownNode(id));
        }
        let leads = self.streams.values().filter(|s| s.leader == id).count();
        if leads > 0 {
            return Err(MetadataError::LeadsStreams(id, leads));
        }
        self.nodes.remove(&id);
        self.voters.remove(&id);
        for stream in self.streams.values_mut() {
            stream.members.remove(&id);
        }
        Ok(Applied::NodeRemoved(id))
    }

    /// A deleted stream also leaves the super streams it was a partition of.
    fn delete(&mut self, key: StreamKey) -> Result<Applied, MetadataError> {
        if self.streams.remove(&key).is_none() {
            return Err(MetadataError::UnknownStream(key));
        }
        let partition = SuperStreamChange::DropPartition {
            vhost: key.vhost.clone(),
            stream: key.name.clone(),
        };
        // DropPartition cannot fail; if it ever did, the stream is deleted all the same.
        let _ = apply_super_stream_change(&mut self.super_streams, partition);
        Ok(Applied::StreamDeleted(key))
    }

    /// Streams each node leads.
    fn leaders_per_node(&self) -> BTreeMap<NodeId, usize> {
        let mut count: BTreeMap<NodeId, usize> = self.placeable().iter().map(|&n| (n, 0)).collect();
        for s in self.streams.values() {
            if let Some(c) = count.get_mut(&s.leader) {
                *c += 1;
            }
        }
        count
    }

    /// Streams each placeable node is a member of.
    fn members_per_node(&self) -> BTreeMap<NodeId, usize> {
        let mut count: BTreeMap<NodeId, usize> = self.placeable().iter().map(|&n| (n, 0)).collect();
        for n in self.streams.values().flat_map(|s| s.members.keys()) {
            if let Some(c) = count.get_mut(n) {
                *c += 1;
            }
        }
        count
    }

    /// Where streams may be placed: the voters (the announced nodes for a state from before
    /// the voters were recorded).
    fn placeable(&self) -> BTreeSet<NodeId> {
        if self.voters.is_empty() {
            self.nodes.keys().copied().collect()
        } else {
            self.voters.clone()
        }
    }

    /// Places a new stream as RabbitMQ does: the leader by `locator`, the other members on
    /// the nodes holding the fewest streams (ties: the lowest id, so every node decides alike).
    fn create(
        &mut self,
        key: StreamKey,
        arguments: Vec<(String, String)>,
        size: Option<usize>,
        locator: Locator,
        declared_on: NodeId,
    ) -> Result<Applied, MetadataError> {
        if self.streams.contains_key(&key) {
            return Err(MetadataError::StreamExists(key));
        }
        let placeable = self.placeable();
        if placeable.is_empty() {
            return Err(MetadataError::NoNodes);
        }
        let size = size.unwrap_or(placeable.len()).clamp(1, placeable.len());
        let leaders = self.leaders_per_node();
        let leader = match locator {
            Locator::ClientLocal if placeable.contains(&declared_on) => declared_on,
            _ => fewest(&leaders, |_| true).ok_or(MetadataError::NoNodes)?,
        };
        let load = self.members_per_node();
        let mut members = BTreeMap::from([(leader, Member::Running)]);
        while members.len() < size {
            let next =
                fewest(&load, |n| !members.contains_key(&n)).ok_or(MetadataError::NoNodes)?;
            members.insert(next, Member::Running);
        }
        self.streams.insert(
            key.clone(),
            StreamMeta {
                arguments,
                epoch: 1,
                leader,
                members,
            },
        );
        Ok(Applied::StreamCreated { key, leader })
    }

    fn member_stopped(
        &mut self,
        key: StreamKey,
        node: NodeId,
        epoch: u64,
        tail: Tail,
    ) -> Result<Applied, MetadataError> {
        let leaders = self.leaders_per_node();
        let Some(stream) = self.streams.get_mut(&key) else {
            return Err(MetadataError::UnknownStream(key));
        };
        let Some(member) = stream.members.get_mut(&node) else {
            return Err(MetadataError::NotAMember(node));
        };
        if epoch != stream.epoch {
            return Ok(Applied::Stale);
        }
        *member = Member::Stopped(tail);
        let stopped: Vec<(NodeId, Tail)> = stream
            .members
            .iter()
            .filter_map(|(&n, m)| match m {
                Member::Stopped(t) => Some((n, *t)),
                Member::Running => None,
            })
            .collect();
        if stopped.len() < stream.members.len() / 2 + 1 {
            return Ok(Applied::StopRecorded);
        }
        // The highest tail; among equals the node leading the fewest streams, then the lowest
        // id (RabbitMQ breaks ties at random; a replicated state machine cannot).
        let winner = stopped
            .iter()
            .max_by(|(a, ta), (b, tb)| {
                ta.cmp(tb)
                    .then_with(|| leaders.get(b).cmp(&leaders.get(a)))
                    .then_with(|| b.cmp(a))
            })
            .map(|&(n, _)| n)
            .ok_or(MetadataError::NotAMember(node))?;
        stream.epoch = stream.epoch.saturating_add(1);
        stream.leader = winner;
        for m in stream.members.values_mut() {
            *m = Member::Running;
        }
        Ok(Applied::LeaderElected {
            key,
            epoch: stream.epoch,
            leader: winner,
        })
    }
}

/// The node with the smallest count among those `eligible` (ties: the lowest id).
fn fewest(count: &BTreeMap<NodeId, usize>, eligible: impl Fn(NodeId) -> bool) -> Option<NodeId> {
    count
        .iter()
        .filter(|(n, _)| eligible(**n))
        .min_by_key(|(n, c)| (**c, **n))
        .map(|(n, _)| *n)
}

#[cfg(test)]
mod tests;
