//! brook's domain: the streams registry, publishers and deduplication, subscriptions and credit,
//! offset tracking. No sockets: the server crate turns frames into [`Session`] calls and writes
//! what comes out of a connection's [`Outgoing`] queue.
//!
//! * [`Broker`] (`registry.rs`) — streams and super streams by name; creates, deletes, opens.
//! * `info.rs` — read-only views of the registry for operators.
//! * `counters.rs` — what each connection's publishers and consumers did.
//! * `catalog.rs` — streams on disk: directories and metadata, and the rules that keep a read
//!   error from ever deleting data.
//! * `stream/` — one writer per stream: a pure decision core, its I/O, its async task.
//! * [`Session`] (`session/`) — one connection's publishers and subscriptions.
//! * `delivery.rs` — one subscription's delivery task, reading the log directly.
//! * [`Budget`] (`budget.rs`) — the one bound on what a connection makes the broker hold.
//! * `queue.rs` — a connection's queues, which hold no memory while empty.
//! * `sac.rs`, `super_streams.rs`, `bloom.rs`, `args.rs` — single active consumer, super
//!   streams, filtering, stream arguments.

#[cfg(test)]
mod test_util {
    /// Properties from string pairs.
    pub(crate) fn props(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

mod args;
mod bloom;
mod browse;
mod budget;
mod catalog;
pub mod cluster;
mod config;
mod counters;
mod delivery;
mod error;
mod info;
mod offsets;
mod outgoing;
pub mod queue;
mod registry;
mod sac;
mod session;
mod stream;
mod super_streams;
mod verify;

pub use args::{MAX_SEGMENT_SIZE_BYTES, MaxAge, StreamArgs};
pub use brook_log::Severity;
pub use browse::{Page, StoredMessage};
pub use budget::{Budget, CONNECTION_BUDGET_BYTES, Charge};
pub use config::{BrokerConfig, Durability};
pub use counters::{ConsumerSnapshot, Counters, PublisherCounters, PublisherSnapshot, Totals};
pub use error::{Error, OpenError};
pub use info::{MemberStatus, StreamInfo, StreamStatus, UnavailableStream};
pub use outgoing::{ControlEvent, ControlSender, Outgoing, OutgoingSender};
pub use registry::{Broker, Shipments, stream_name};
pub use session::{Session, Subscribed};
pub use stream::{Reshape, Role, StreamId, Tracked};
pub use super_streams::{
    SuperStream, SuperStreamAnswer, SuperStreamChange, SuperStreamMap, apply_super_stream_change,
};
pub use verify::{DataDirReport, StreamReport, verify_data_dir};

/// Publisher and consumer references are stored with a one-byte length.
const MAX_REFERENCE_LEN: usize = brook_log::MAX_ID_LEN;

/// Milliseconds since the Unix epoch (chunk timestamps, retention, creation times).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
