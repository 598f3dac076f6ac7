//! One client connection's view of the broker: its publishers and subscriptions, and the
//! requests it makes. The server drives a `Session` from decoded frames; everything the session
//! produces for the client goes into the connection's ordered [`Outgoing`] queue.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use brook_log::{LogStats, Seek};
use brook_protocol::chunk::Entry;
use brook_protocol::{OffsetSpec, Publish, ResponseCode, property};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::bloom::Matcher;
use crate::consumer::Delivery;
use crate::stream::{ConfirmTarget, Stream, WriterCmd};
use crate::{Broker, ControlEvent, Error, Outgoing, OutgoingSender, reject};

/// Publisher and consumer references are stored with a one-byte length.
const MAX_REFERENCE_LEN: usize = brook_log::MAX_ID_LEN;
/// Bytes of Publish frames a connection may have queued for writing before its socket stops
/// being read. RabbitMQ counts 50,000 entries; counting bytes bounds memory whatever the message
/// size. Clients only see TCP back-pressure.
const PUBLISH_BUFFER_BYTES: usize = 4 << 20;
/// RabbitMQ 4.3.5's limit on a sub-entry batch's uncompressed size.
const MAX_SUB_ENTRY_BATCH_BYTES: u32 = 64 << 20;

#[derive(Debug)]
struct Publisher {
    stream: Arc<Stream>,
    reference: Option<Arc<str>>,
    alive: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Subscription {
    stream: Arc<Stream>,
    credit: Arc<Semaphore>,
    task: Option<JoinHandle<()>>,
    /// Prepared by `subscribe`, started by `start` once the OK response is queued.
    pending: Option<Delivery>,
    /// The single-active-consumer group (consumer name) this subscription belongs to.
    sac: Option<String>,
    /// What the group coordinator last decided for it. An answer to an older ConsumerUpdate
    /// (activation overtaken by a step-down) must not start delivery.
    sac_active: bool,
    /// Where the Subscribe asked to start: used when a single active consumer is activated
    /// with offset type "none".
    seek: Seek,
    filter: Option<Matcher>,
}

impl Subscription {
    /// Whether it is (or is about to be) delivering.
    fn is_delivering(&self) -> bool {
        self.task.is_some() || self.pending.is_some()
    }
}

/// Proof that a subscription was accepted: hand it to [`Session::start`] after the Subscribe
/// response has been queued, so that no Deliver can overtake it.
#[must_use = "the subscription delivers nothing until started"]
#[derive(Debug)]
pub struct Subscribed(u8);

/// The broker side of one connection.
#[derive(Debug)]
pub struct Session {
    broker: Broker,
    id: u64,
    control: mpsc::UnboundedSender<ControlEvent>,
    outgoing: OutgoingSender,
    publishers: HashMap<u8, Publisher>,
    subscriptions: HashMap<u8, Subscription>,
    publish_credits: Arc<Semaphore>,
    delivery_budget: Arc<Semaphore>,
    /// Streams this connection used: it hears of their deletion.
    watched: HashSet<String>,
}

impl Session {
    pub(crate) fn new(
        broker: Broker,
        id: u64,
        control: mpsc::UnboundedSender<ControlEvent>,
        outgoing: OutgoingSender,
    ) -> Self {
        Self {
            broker,
            id,
            control,
            outgoing,
            publishers: HashMap::new(),
            subscriptions: HashMap::new(),
            publish_credits: Arc::new(Semaphore::new(PUBLISH_BUFFER_BYTES)),
            delivery_budget: Arc::new(Semaphore::new(crate::consumer::DELIVERY_BUDGET_BYTES)),
            watched: HashSet::new(),
        }
    }

    /// Looks a stream up and remembers that this connection uses it.
    fn stream(&mut self, name: &str) -> Result<Arc<Stream>, Error> {
        let stream = self.broker.stream(name)?;
        if self.watched.insert(name.to_owned()) {
            stream.watch(self.id, &self.control);
        }
        Ok(stream)
    }

    pub fn declare_publisher(
        &mut self,
        id: u8,
        reference: &str,
        stream: &str,
    ) -> Result<(), Error> {
        if reference.len() > MAX_REFERENCE_LEN {
            return Err(Error::PreconditionFailed(
                "publisher reference longer than 255 bytes".into(),
            ));
        }
        let stream = self.stream(stream)?;
        if self.publishers.contains_key(&id) {
            return Err(Error::PreconditionFailed(format!(
                "publisher id {id} already in use"
            )));
        }
        if !reference.is_empty()
            && self
                .publishers
                .values()
                .any(|p| p.stream.name == stream.name && p.reference.as_deref() == Some(reference))
        {
            return Err(Error::PreconditionFailed(format!(
                "publisher reference {reference:?} already declared on this connection"
            )));
        }
        self.publishers.insert(
            id,
            Publisher {
                stream,
                reference: (!reference.is_empty()).then(|| Arc::from(reference)),
                alive: Arc::new(AtomicBool::new(true)),
            },
        );
        Ok(())
    }

    pub fn delete_publisher(&mut self, id: u8) -> Result<(), Error> {
        let publisher = self
            .publishers
            .remove(&id)
            .ok_or(Error::PublisherDoesNotExist(id))?;
        publisher.alive.store(false, Ordering::Release);
        Ok(())
    }

    /// Queues a Publish frame for writing. Waits while the connection has too many entries in
    /// flight (publisher flow control). Errors are reported to the client as PublishError.
    pub async fn publish(&mut self, publish: Publish) {
        let Some(publisher) = self.publishers.get(&publish.publisher_id) else {
            let all = publish.entry_count() as usize;
            reject(
                &self.outgoing,
                &publish,
                all,
                ResponseCode::PUBLISHER_DOES_NOT_EXIST,
            );
            return;
        };
        // RabbitMQ 4.3.5 validates sub-entry batches; an invalid one and everything after it
        // in the frame get PRECONDITION_FAILED. Frames without batches need no second look.
        let mut take = publish.entry_count() as usize;
        let mut rejected = Vec::new();
        if publish.has_batches() {
            take = 0;
            for e in publish.entries() {
                if rejected.is_empty() && valid_entry(&e.entry) {
                    take += 1;
                } else {
                    rejected.push((e.publishing_id, ResponseCode::PRECONDITION_FAILED));
                }
            }
        }
        if !rejected.is_empty() {
            let _ = self.outgoing.send(Outgoing::PublishError {
                publisher_id: publish.publisher_id,
                errors: rejected,
            });
        }
        if take == 0 {
            return;
        }
        let permits = publish.raw_entries().len().clamp(1, PUBLISH_BUFFER_BYTES) as u32;
        let permit = self
            .publish_credits
            .clone()
            .acquire_many_owned(permits)
            .await
            .ok();
        let cmd = WriterCmd::Publish {
            take,
            reference: publisher.reference.clone(),
            target: ConfirmTarget {
                outgoing: self.outgoing.clone(),
                publisher_id: publish.publisher_id,
                alive: publisher.alive.clone(),
            },
            publish,
            permit,
        };
        if let Err(cmd) = publisher.stream.writer.send(cmd) {
            // The writer is gone (the stream is being deleted; MetadataUpdate follows): the
            // publisher no longer exists, as RabbitMQ answers once it has removed it.
            if let WriterCmd::Publish { publish, take, .. } = cmd.0 {
                reject(
                    &self.outgoing,
                    &publish,
                    take,
                    ResponseCode::PUBLISHER_DOES_NOT_EXIST,
                );
            }
        }
    }

    pub async fn query_publisher_sequence(
        &mut self,
        reference: &str,
        stream: &str,
    ) -> Result<u64, Error> {
        let stream = self.stream(stream)?;
        let (reply, rx) = oneshot::channel();
        stream.send(WriterCmd::QuerySequence {
            reference: reference.to_owned(),
            reply,
        })?;
        rx.await.map_err(|_| unavailable(&stream))
    }

    /// Registers a subscription. Nothing is delivered until [`Session::start`]; a single active
    /// consumer waits, in addition, until it is activated.
    pub fn subscribe(
        &mut self,
        id: u8,
        stream: &str,
        offset: OffsetSpec,
        credit: u16,
        properties: &[(String, String)],
    ) -> Result<Subscribed, Error> {
        let name = property(properties, "name");
        if name.is_some_and(|n| n.len() > MAX_REFERENCE_LEN) {
            return Err(Error::PreconditionFailed(
                "consumer name longer than 255 bytes".into(),
            ));
        }
        let stream = self.stream(stream)?;
        if self.subscriptions.contains_key(&id) {
            return Err(Error::SubscriptionIdAlreadyExists(id));
        }
        let seek = seek_of(offset).ok_or_else(|| {
            Error::PreconditionFailed("offset type 0 is not valid in Subscribe".into())
        })?;
        let sac = property(properties, "single-active-consumer") == Some("true");
        let group = match (sac, name) {
            (false, _) => None,
            (true, Some(name)) => Some(name.to_owned()),
            (true, None) => {
                return Err(Error::PreconditionFailed(
                    "a single active consumer needs a name".into(),
                ));
            }
        };
        let credit = Arc::new(Semaphore::new(usize::from(credit)));
        let filter = Matcher::from_properties(properties);
        let pending = match group {
            Some(_) => None,
            None => Some(self.delivery(id, &stream, seek, &credit, &filter)?),
        };
        if let Some(name) = &group {
            let partition_index = property(properties, "super-stream")
                .map_or(-1, |ss| self.broker.partition_index(ss, &stream.name));
            self.broker.inner.sac.register(
                &stream.name,
                name,
                partition_index,
                self.id,
                id,
                &self.control,
            )?;
        }
        self.subscriptions.insert(
            id,
            Subscription {
                stream,
                credit,
                task: None,
                pending,
                sac: group,
                sac_active: false,
                seek,
                filter,
            },
        );
        Ok(Subscribed(id))
    }

    fn delivery(
        &self,
        id: u8,
        stream: &Arc<Stream>,
        seek: Seek,
        credit: &Arc<Semaphore>,
        filter: &Option<Matcher>,
    ) -> Result<Delivery, Error> {
        let cursor = stream
            .reader
            .cursor(seek)
            .map_err(|e| Error::StreamNotAvailable(stream.name.clone(), e.to_string()))?;
        Ok(Delivery {
            subscription_id: id,
            stream: stream.clone(),
            cursor,
            credit: credit.clone(),
            budget: self.delivery_budget.clone(),
            outgoing: self.outgoing.clone(),
            committed: stream.committed.clone(),
            filter: filter.clone(),
        })
    }

    /// A single-active-consumer update is about to be sent to the client. Stepping down stops
    /// delivery at once. Returns false if the subscription is gone (nothing to send).
    pub fn consumer_update(&mut self, id: u8, active: bool) -> bool {
        let Some(sub) = self.subscriptions.get_mut(&id) else {
            return false;
        };
        sub.sac_active = active;
        if !active {
            sub.pending = None;
            if let Some(task) = sub.task.take() {
                task.abort();
            }
        }
        true
    }

    /// The client answered a ConsumerUpdate. An activated consumer starts where the client says
    /// (offset type "none": where its Subscribe said), with the credit it has banked.
    pub fn consumer_update_answered(&mut self, id: u8, active: bool, offset: OffsetSpec) {
        let Some(sub) = self.subscriptions.get(&id) else {
            return;
        };
        let Some(name) = sub.sac.clone() else {
            return;
        };
        if !active {
            self.broker
                .inner
                .sac
                .stepped_down(&sub.stream.name, &name, self.id, id);
            return;
        }
        if sub.is_delivering() || !sub.sac_active {
            return;
        }
        let seek = seek_of(offset).unwrap_or(sub.seek);
        let (stream, credit, filter) = (sub.stream.clone(), sub.credit.clone(), sub.filter.clone());
        match self.delivery(id, &stream, seek, &credit, &filter) {
            Ok(delivery) => {
                if let Some(sub) = self.subscriptions.get_mut(&id) {
                    sub.task = Some(tokio::spawn(delivery.run()));
                }
            }
            Err(e) => tracing::warn!(stream = %stream.name, "activating consumer {id}: {e}"),
        }
    }

    /// Starts delivering to an accepted subscription.
    pub fn start(&mut self, subscribed: Subscribed) {
        if let Some(sub) = self.subscriptions.get_mut(&subscribed.0)
            && let Some(delivery) = sub.pending.take()
        {
            sub.task = Some(tokio::spawn(delivery.run()));
        }
    }

    /// Adds credit. A negative value (the server reads it as signed) adds nothing. An inactive
    /// single active consumer banks it but gets PRECONDITION_FAILED, as in RabbitMQ.
    pub fn credit(&mut self, id: u8, credit: u16) -> Result<(), Error> {
        let sub = self
            .subscriptions
            .get(&id)
            .ok_or(Error::SubscriptionIdDoesNotExist(id))?;
        let credit = credit as i16;
        if credit > 0 {
            sub.credit.add_permits(credit as usize);
        }
        if sub.sac.is_some() && !sub.is_delivering() {
            return Err(Error::PreconditionFailed(
                "single active consumer is not active".into(),
            ));
        }
        Ok(())
    }

    pub fn unsubscribe(&mut self, id: u8) -> Result<(), Error> {
        let sub = self
            .subscriptions
            .remove(&id)
            .ok_or(Error::SubscriptionIdDoesNotExist(id))?;
        self.stop(id, sub);
        Ok(())
    }

    /// Stores a consumer offset. Never answered, so errors are silently dropped, as RabbitMQ
    /// drops them.
    pub fn store_offset(&mut self, reference: &str, stream: &str, offset: u64) {
        if let Ok(stream) = self.stream(stream) {
            let _ = stream.send(WriterCmd::StoreOffset {
                reference: reference.to_owned(),
                offset,
            });
        }
    }

    pub async fn query_offset(&mut self, reference: &str, stream: &str) -> Result<u64, Error> {
        let stream = self.stream(stream)?;
        let (reply, rx) = oneshot::channel();
        stream.send(WriterCmd::QueryOffset {
            reference: reference.to_owned(),
            reply,
        })?;
        rx.await
            .map_err(|_| unavailable(&stream))?
            .ok_or_else(|| Error::NoOffset(reference.to_owned()))
    }

    /// Whether a stream exists; the connection is told if it is later deleted, as RabbitMQ
    /// tells clients that cached its metadata.
    pub fn metadata(&mut self, stream: &str) -> Result<(), Error> {
        self.stream(stream).map(|_| ())
    }

    pub fn stream_stats(&mut self, stream: &str) -> Result<LogStats, Error> {
        Ok(self.stream(stream)?.reader.stats())
    }

    /// Handles a stream's deletion: drops this connection's publishers and subscriptions on it.
    /// Returns whether the client should get a MetadataUpdate.
    pub fn stream_deleted(&mut self, stream: &str) -> bool {
        self.publishers.retain(|_, p| {
            let keep = p.stream.name != stream;
            if !keep {
                p.alive.store(false, Ordering::Release);
            }
            keep
        });
        let gone: Vec<u8> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| s.stream.name == stream)
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            if let Some(sub) = self.subscriptions.remove(&id) {
                self.stop(id, sub);
            }
        }
        self.watched.remove(stream)
    }
}

fn seek_of(offset: OffsetSpec) -> Option<Seek> {
    Some(match offset {
        OffsetSpec::First => Seek::First,
        OffsetSpec::Last => Seek::Last,
        OffsetSpec::Next => Seek::Next,
        OffsetSpec::Offset(o) => Seek::Offset(o),
        OffsetSpec::Timestamp(t) => Seek::Timestamp(t),
        OffsetSpec::None => return None,
    })
}

fn unavailable(stream: &Stream) -> Error {
    Error::StreamNotAvailable(stream.name.clone(), "stream is being deleted".into())
}

fn valid_entry(entry: &Entry<'_>) -> bool {
    match entry {
        Entry::Simple(_) => true,
        Entry::Batch(b) => {
            b.record_count > 0
                && b.uncompressed_len <= MAX_SUB_ENTRY_BATCH_BYTES
                && u32::from(b.record_count) * 4 <= b.uncompressed_len
                && b.compression <= 4
                && (b.compression == 0 || !b.body.is_empty())
        }
    }
}

impl Session {
    /// Ends a subscription: stops its delivery and leaves its consumer group.
    fn stop(&self, id: u8, sub: Subscription) {
        sub.credit.close();
        if let Some(task) = sub.task {
            task.abort();
        }
        if let Some(name) = &sub.sac {
            self.broker
                .inner
                .sac
                .unregister(&sub.stream.name, name, self.id, id);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for p in self.publishers.values() {
            p.alive.store(false, Ordering::Release);
        }
        let subscriptions: Vec<_> = self.subscriptions.drain().collect();
        for (id, sub) in subscriptions {
            self.stop(id, sub);
        }
        for name in &self.watched {
            if let Ok(stream) = self.broker.stream(name) {
                stream.unwatch(self.id);
            }
        }
    }
}
