//! The metadata group's openraft types: what its log carries and what applying it answers.

use std::io::Cursor;

use openraft::BasicNode;

use crate::metadata::{Applied, Command, MetadataError, NodeId};

/// What applying an entry answered: for a command, the change or why nothing changed; `None`
/// for openraft's own entries (blank, membership).
pub type Response = Option<Result<Applied, MetadataError>>;

openraft::declare_raft_types!(
    /// brook's metadata group. Nodes are known to Raft by their cluster address only; what
    /// clients are told (name, stream address) is metadata, announced with `AddNode`.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
