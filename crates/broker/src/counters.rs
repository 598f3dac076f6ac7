//! What each connection's publishers and consumers have done: RabbitMQ's per-publisher
//! `published` / `confirmed` / `errored` and per-consumer `consumed` / `offset` / `credits`,
//! for the management API and metrics; and the broker's [`Totals`] (RabbitMQ's
//! `rabbitmq_global_*` counters of the stream protocol, and latency histograms).
//!
//! The counters are atomics updated where the work happens (a Publish taken, a confirm or error
//! written to the socket, a chunk queued for delivery), so reading them never waits on a
//! connection and keeping them costs one relaxed add per frame or chunk, not per message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use brook_protocol::ResponseCode;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::Semaphore;

use crate::stream::StreamId;

/// Broker-wide counters since start, kept where the work happens. Monotonic.
#[derive(Debug)]
pub struct Totals {
    /// Messages received from publishers (duplicates included, as RabbitMQ counts them).
    pub received: AtomicU64,
    /// Messages confirmed to publishers.
    pub confirmed: AtomicU64,
    /// Messages delivered to consumers.
    pub delivered: AtomicU64,
    /// Messages dropped as duplicates of stored publishing ids (and confirmed).
    pub deduplicated: AtomicU64,
    /// Responses with an error code, by code.
    errors: [AtomicU64; ERROR_CODES],
    /// Seconds from a Publish frame's arrival to the confirm of its oldest message.
    pub confirm_latency: Histogram,
    /// Seconds per fdatasync of a stream's segment.
    pub fsync_seconds: Histogram,
}

/// Response codes are small numbers (0x01..=0x17 today); anything above is counted as the
/// last one.
const ERROR_CODES: usize = 32;

impl Default for Totals {
    fn default() -> Self {
        Self {
            received: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            // 50 µs to ~26 s, doubling.
            confirm_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 20)),
            fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 20)),
        }
    }
}

impl Totals {
    /// Counts a response carrying `code` (OK is not counted).
    pub fn error(&self, code: ResponseCode) {
        if code != ResponseCode::OK {
            let i = usize::from(code.0).min(ERROR_CODES - 1);
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many responses carried `code`.
    pub fn errors(&self, code: ResponseCode) -> u64 {
        let i = usize::from(code.0).min(ERROR_CODES - 1);
        self.errors[i].load(Ordering::Relaxed)
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One connection's publishers and consumers (its [`Session`](crate::Session)'s).
#[derive(Debug, Default)]
pub struct Counters {
    publishers: Mutex<BTreeMap<u8, Arc<PublisherCounters>>>,
    consumers: Mutex<BTreeMap<u8, Arc<ConsumerCounters>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain inserts and removes: a panic elsewhere cannot leave a map half-changed.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Counters {
    pub(crate) fn add_publisher(&self, p: Arc<PublisherCounters>) {
        lock(&self.publishers).insert(p.id, p);
    }

    pub(crate) fn remove_publisher(&self, id: u8) {
        lock(&self.publishers).remove(&id);
    }

    pub(crate) fn add_consumer(&self, c: Arc<ConsumerCounters>) {
        lock(&self.consumers).insert(c.id, c);
    }

    pub(crate) fn remove_consumer(&self, id: u8) {
        lock(&self.consumers).remove(&id);
    }

    pub fn publishers(&self) -> Vec<PublisherSnapshot> {
        lock(&self.publishers)
            .values()
            .map(|p| p.snapshot())
            .collect()
    }

    pub fn consumers(&self) -> Vec<ConsumerSnapshot> {
        lock(&self.consumers)
            .values()
            .map(|c| c.snapshot())
            .collect()
    }
}

/// A publisher's counters. Its `alive` flag doubles as the guard against late confirms: once
/// the publisher is deleted, confirms of its writes still in flight are dropped, so a publisher
/// re-declared with the same id never sees them.
#[derive(Debug)]
pub struct PublisherCounters {
    pub(crate) id: u8,
    pub(crate) stream: StreamId,
    pub(crate) reference: String,
    alive: AtomicBool,
    published: AtomicU64,
    confirmed: AtomicU64,
    errored: AtomicU64,
    deduplicated: AtomicU64,
    totals: Arc<Totals>,
}

impl PublisherCounters {
    pub(crate) fn new(id: u8, stream: StreamId, reference: &str, totals: Arc<Totals>) -> Self {
        Self {
            id,
            stream,
            reference: reference.to_owned(),
            alive: AtomicBool::new(true),
            published: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            errored: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
            totals,
        }
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    pub(crate) fn kill(&self) {
        self.alive.store(false, Ordering::Release);
    }

    pub(crate) fn published(&self, n: u64) {
        self.published.fetch_add(n, Ordering::Relaxed);
        self.totals.received.fetch_add(n, Ordering::Relaxed);
    }

    /// Called by the connection's writer when it writes confirms to the socket.
    pub fn confirmed(&self, n: u64) {
        self.confirmed.fetch_add(n, Ordering::Relaxed);
        self.totals.confirmed.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn deduplicated(&self, n: u64) {
        self.deduplicated.fetch_add(n, Ordering::Relaxed);
        self.totals.deduplicated.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn errored(&self, n: u64) {
        self.errored.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> PublisherSnapshot {
        PublisherSnapshot {
            publisher_id: self.id,
            stream: self.stream.clone(),
            reference: self.reference.clone(),
            published: self.published.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            errored: self.errored.load(Ordering::Relaxed),
            deduplicated: self.deduplicated.load(Ordering::Relaxed),
        }
    }
}

/// A subscription's counters.
#[derive(Debug)]
pub(crate) struct ConsumerCounters {
    pub(crate) id: u8,
    pub(crate) stream: StreamId,
    pub(crate) properties: Vec<(String, String)>,
    /// The subscription's credit: what it has left is what the management API shows.
    pub(crate) credit: Arc<Semaphore>,
    /// False for a single active consumer that is not the active one.
    pub(crate) active: AtomicBool,
    consumed: AtomicU64,
    /// First offset of the last chunk dispatched (RabbitMQ's consumer `offset`).
    offset: AtomicU64,
    totals: Arc<Totals>,
}

impl ConsumerCounters {
    pub(crate) fn new(
        id: u8,
        stream: StreamId,
        properties: Vec<(String, String)>,
        credit: Arc<Semaphore>,
        active: bool,
        totals: Arc<Totals>,
    ) -> Self {
        Self {
            id,
            stream,
            properties,
            credit,
            active: AtomicBool::new(active),
            consumed: AtomicU64::new(0),
            offset: AtomicU64::new(0),
            totals,
        }
    }

    /// A chunk of `messages` starting at `offset` was queued for the client.
    pub(crate) fn dispatched(&self, offset: u64, messages: u64) {
        self.consumed.fetch_add(messages, Ordering::Relaxed);
        self.offset.store(offset, Ordering::Relaxed);
        self.totals.delivered.fetch_add(messages, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ConsumerSnapshot {
        ConsumerSnapshot {
            subscription_id: self.id,
            stream: self.stream.clone(),
            properties: self.properties.clone(),
            credits: self.credit.available_permits() as u64,
            active: self.active.load(Ordering::Relaxed),
            consumed: self.consumed.load(Ordering::Relaxed),
            offset: self.offset.load(Ordering::Relaxed),
        }
    }
}

/// A publisher as the management API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherSnapshot {
    pub publisher_id: u8,
    pub stream: StreamId,
    /// Empty when the publisher has none.
    pub reference: String,
    pub published: u64,
    pub confirmed: u64,
    pub errored: u64,
    /// Messages dropped as duplicates (and confirmed).
    pub deduplicated: u64,
}

/// A subscription as the management API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSnapshot {
    pub subscription_id: u8,
    pub stream: StreamId,
    pub properties: Vec<(String, String)>,
    pub credits: u64,
    pub active: bool,
    pub consumed: u64,
    pub offset: u64,
}
