//! What the broker hands a connection: frames for its socket ([`Outgoing`], in order) and events
//! for its request loop ([`ControlEvent`]).

use std::sync::Arc;

use brook_log::ReadChunk;
use brook_protocol::ResponseCode;
use bytes::Bytes;

use crate::budget::Charge;
use crate::counters::PublisherCounters;
use crate::queue::QueueSender;

/// Everything the broker sends to one connection, in order. Each item carries its [`Charge`]
/// on the connection's budget, returned once the item is written.
#[derive(Debug)]
pub enum Outgoing {
    /// An encoded frame (size prefix included) the connection built: responses, control frames.
    Frame(Bytes, Charge),
    Confirm {
        publisher_id: u8,
        ids: Vec<u64>,
        /// Dropped if the publisher was deleted meanwhile; counted in its counters when sent.
        publisher: Arc<PublisherCounters>,
        /// The charge of the Publish frames confirmed here.
        charge: Charge,
    },
    PublishError {
        publisher_id: u8,
        errors: Vec<(u64, ResponseCode)>,
        charge: Charge,
    },
    /// A stored chunk for a subscription, sent as it is on disk (header + data).
    Deliver {
        subscription_id: u8,
        committed_chunk_id: u64,
        chunk: ReadChunk,
        charge: Charge,
    },
    /// Write what is queued, then close the socket.
    Close,
}

/// A connection's output queue. Unbounded as a channel, bounded by the charges its items hold.
pub type OutgoingSender = QueueSender<Outgoing>;

/// Events for a connection's request loop (not for the client directly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    /// A stream this connection used was deleted: drop its publishers and subscriptions on it
    /// and send MetadataUpdate.
    StreamDeleted(String),
    /// A write to the stream failed: publishers declared before `epoch` can no longer write
    /// (their later messages could be stored after lost ones, and deduplication would then
    /// confirm the lost ones when retried). Drop them and send MetadataUpdate, after which
    /// clients declare them again and ask for their last stored publishing id.
    PublishersFenced { stream: String, epoch: u64 },
    /// A single-active-consumer subscription becomes active, or must step down: send the
    /// client a ConsumerUpdate and hand its answer to `Session::consumer_update_answered`.
    ConsumerUpdate { subscription_id: u8, active: bool },
}

pub type ControlSender = QueueSender<ControlEvent>;
