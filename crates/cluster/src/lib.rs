//! Cluster metadata as a deterministic state machine (issue #13, `docs/CLUSTERING.md`).
//!
//! Every node will apply the same commands in the same order (openraft's log, as RabbitMQ's
//! stream coordinator applies Ra's), so [`Metadata::apply`] must decide from the commands
//! alone: no clock, no randomness, no I/O. What it decides is where each stream lives, which
//! member leads it in which epoch, and when a failed leader is replaced. Nothing runs it over
//! openraft yet; this is the rule book the replication will follow, tested on its own.

mod metadata;

pub use metadata::{
    Applied, Command, Locator, Member, Metadata, MetadataError, NodeId, StreamKey, StreamMeta, Tail,
};
