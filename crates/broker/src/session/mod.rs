//! One client connection's view of the broker: its publishers and subscriptions, and the
//! requests it makes. The server drives a `Session` from decoded frames; everything the session
//! produces for the client goes into the connection's ordered [`Outgoing`] queue.
//!
//! [`Outgoing`]: crate::outgoing::Outgoing

mod publish;
mod subscribe;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use brook_log::LogStats;
use brook_protocol::ResponseCode;
use tokio::sync::oneshot;

use crate::budget::{Budget, Charge};
use crate::counters::Counters;
use crate::outgoing::{ControlSender, Outgoing, OutgoingSender};
use crate::registry::Broker;
use crate::stream::{Command, Stream, StreamId};
use crate::{Error, MAX_REFERENCE_LEN};

pub use subscribe::Subscribed;
pub(crate) use subscribe::seek_of;

/// The broker side of one connection.
#[derive(Debug)]
pub struct Session {
    broker: Broker,
    id: u64,
    /// The connection's virtual host: every stream name is looked up in it.
    vhost: String,
    control: ControlSender,
    outgoing: OutgoingSender,
    budget: Budget,
    publishers: HashMap<u8, publish::Publisher>,
    subscriptions: HashMap<u8, subscribe::Subscription>,
    /// What its publishers and subscriptions did, for the management API and metrics.
    counters: Arc<Counters>,
    /// Streams this connection used: it hears of their deletion.
    watched: HashSet<String>,
}

impl Session {
    pub(crate) fn new(
        broker: Broker,
        id: u64,
        vhost: String,
        control: ControlSender,
        outgoing: OutgoingSender,
        budget: Budget,
    ) -> Self {
        Self {
            broker,
            id,
            vhost,
            control,
            outgoing,
            budget,
            publishers: HashMap::new(),
            subscriptions: HashMap::new(),
            counters: Arc::default(),
            watched: HashSet::new(),
        }
    }

    /// Looks a stream up and remembers that this connection uses it.
    fn stream(&mut self, name: &str) -> Result<Arc<Stream>, Error> {
        let stream = self.broker.stream(&StreamId::new(&self.vhost, name))?;
        if self.watched.insert(name.to_owned()) {
            stream.watch(self.id, &self.control);
        }
        Ok(stream)
    }

    /// Stores a consumer offset. Never answered, so errors are silently dropped, as RabbitMQ
    /// drops them. The frame's charge is held until the writer has taken the offset.
    pub fn store_offset(&mut self, reference: &str, stream: &str, offset: u64, charge: Charge) {
        if let Ok(stream) = self.stream(stream) {
            let _ = stream.send(Command::StoreOffset {
                reference: reference.to_owned(),
                offset,
                _charge: charge,
            });
        }
    }

    pub async fn query_offset(&mut self, reference: &str, stream: &str) -> Result<u64, Error> {
        let stream = self.stream(stream)?;
        let (reply, rx) = oneshot::channel();
        stream.send(Command::QueryOffset {
            reference: reference.to_owned(),
            reply,
        })?;
        answer(&stream, rx)
            .await?
            .ok_or_else(|| Error::NoOffset(reference.to_owned()))
    }

    /// Whether a stream exists; the connection is told if it is later deleted, as RabbitMQ
    /// tells clients that cached its metadata.
    pub fn metadata(&mut self, stream: &str) -> Result<(), Error> {
        self.stream(stream).map(|_| ())
    }

    /// Whether this connection has a subscription on `stream` (StoreOffset on it needs no
    /// permission check then, as in RabbitMQ).
    pub fn is_subscribed_to(&self, stream: &str) -> bool {
        self.subscriptions
            .values()
            .any(|s| s.stream.id.name == stream)
    }

    /// This connection's publisher and consumer counters (a live view).
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    pub fn stream_stats(&mut self, stream: &str) -> Result<LogStats, Error> {
        Ok(self.stream(stream)?.reader.stats())
    }

    /// Handles a stream's deletion: drops this connection's publishers and subscriptions on it.
    /// Returns whether the client should get a MetadataUpdate.
    pub fn stream_deleted(&mut self, stream: &str) -> bool {
        self.drop_publishers(stream, u64::MAX);
        let gone: Vec<u8> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| s.stream.id.name == stream)
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            if let Some(sub) = self.subscriptions.remove(&id) {
                self.stop(id, sub);
            }
        }
        self.watched.remove(stream)
    }

    /// Handles fenced publishers (a write to the stream failed): drops those declared before
    /// `epoch`. Returns whether the client should get a MetadataUpdate (it had some).
    pub fn publishers_fenced(&mut self, stream: &str, epoch: u64) -> bool {
        self.drop_publishers(stream, epoch) > 0
    }

    /// Answers every entry of a Publish that cannot be written with PublishError `code`.
    fn reject(
        &self,
        publish: &brook_protocol::Publish,
        take: usize,
        code: ResponseCode,
        charge: Charge,
    ) {
        let errors = publish
            .entries()
            .take(take)
            .map(|e| (e.publishing_id, code))
            .collect::<Vec<_>>();
        if let Some(p) = self.publishers.get(&publish.publisher_id) {
            p.counters.errored(errors.len() as u64);
        }
        let _ = self.outgoing.send(Outgoing::PublishError {
            publisher_id: publish.publisher_id,
            errors,
            charge,
        });
    }
}

fn unavailable(stream: &Stream) -> Error {
    Error::StreamNotAvailable(stream.id.name.clone(), "stream is being deleted".into())
}

/// How long a query waits for its answer. A replicated stream's leader answers once a
/// majority holds what the answer was read from; without a majority that never comes, and
/// the client is told the stream is not available instead of waiting for ever.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A query's answer from the stream's writer.
pub(super) async fn answer<T>(stream: &Stream, rx: oneshot::Receiver<T>) -> Result<T, Error> {
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(unavailable(stream)),
        Err(_) => Err(Error::StreamNotAvailable(
            stream.id.name.clone(),
            "no majority of its members answered in time".into(),
        )),
    }
}

/// A reference (publisher or consumer name) must fit the tracking format's one-byte length.
fn check_reference(reference: &str, what: &str) -> Result<(), Error> {
    if reference.len() > MAX_REFERENCE_LEN {
        return Err(Error::PreconditionFailed(format!(
            "{what} longer than {MAX_REFERENCE_LEN} bytes"
        )));
    }
    Ok(())
}

impl Drop for Session {
    fn drop(&mut self) {
        for p in self.publishers.values() {
            p.counters.kill();
        }
        let subscriptions: Vec<_> = self.subscriptions.drain().collect();
        for (id, sub) in subscriptions {
            self.stop(id, sub);
        }
        for name in &self.watched {
            if let Ok(stream) = self.broker.stream(&StreamId::new(&self.vhost, name)) {
                stream.unwatch(self.id);
            }
        }
    }
}
