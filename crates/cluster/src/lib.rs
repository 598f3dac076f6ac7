//! The cluster's metadata on openraft (issue #13, `docs/CLUSTERING.md`).
//!
//! Every node applies the same commands in the same order (openraft's log, as RabbitMQ's
//! stream coordinator applies Ra's), so [`Metadata::apply`] decides from the commands alone:
//! no clock, no randomness, no I/O. What it decides is which nodes there are, where each
//! stream lives, which member leads it in which epoch, and when a failed leader is replaced.
//!
//! - `metadata`: the state machine's rules, tested on their own;
//! - `raft`, `log_store`, `state_machine`: openraft under them, with the log, vote and
//!   snapshot as files in `<data-dir>/cluster`;
//! - `auth`: the secret every connection on the cluster port proves;
//! - `network`, `server`: the cluster port, over which nodes vote, replicate the log and
//!   forward proposals to the leader;
//! - `node`: [`Cluster`], a running member; `membership`: joining and forgetting nodes;
//! - `access`: users, vhosts and permissions, one copy per node, changed through the log;
//! - `hooks`, `streams`, `replication`, `failover`: the broker in the cluster — creation and placement
//!   through the metadata group, hosting what the metadata says, and the leader → replica
//!   link that carries each stream's chunks.

// openraft's trait methods return its error types, which are large; boxing them is not ours
// to choose.
#![allow(clippy::result_large_err)]

mod access;
mod auth;
mod failover;
mod hooks;
mod log_store;
mod membership;
mod metadata;
mod network;
mod node;
mod raft;
mod replication;
mod server;
mod state_machine;
mod streams;

pub use auth::ClusterKey;
pub use log_store::LogOpenError;
pub use membership::MembershipError;
pub use metadata::{
    Applied, Command, Locator, Member, Metadata, MetadataError, NodeId, NodeInfo, StreamKey,
    StreamMeta, Tail,
};
pub use network::{PeerStatus, ProposeError};
pub use node::{Cluster, ClusterConfig, StartError};
