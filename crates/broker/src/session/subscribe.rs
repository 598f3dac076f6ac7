//! Subscriptions: subscribe, credit, unsubscribe, and single-active-consumer activation.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use brook_log::Seek;
use brook_protocol::{OffsetSpec, property};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::{Session, check_reference};
use crate::Error;
use crate::bloom::Matcher;
use crate::counters::ConsumerCounters;
use crate::delivery::Delivery;
use crate::stream::{Reader, Stream};

#[derive(Debug)]
pub(super) struct Subscription {
    pub stream: Arc<Stream>,
    /// Its credit (a permit per chunk) and what it has consumed.
    counters: Arc<ConsumerCounters>,
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
    /// Counts it among the stream's readers (`Broker::member_status`).
    _reader: Reader,
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

impl Session {
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
        if let Some(name) = name {
            check_reference(name, "consumer name")?;
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
        let counters = Arc::new(ConsumerCounters::new(
            id,
            stream.id.clone(),
            properties.to_vec(),
            Arc::new(Semaphore::new(usize::from(credit))),
            group.is_none(),
            self.broker.inner.totals.clone(),
        ));
        let filter = Matcher::from_properties(properties);
        let pending = match group {
            Some(_) => None,
            None => Some(self.delivery(&stream, seek, &counters, &filter)?),
        };
        if let Some(name) = &group {
            let partition_index = property(properties, "super-stream").map_or(-1, |ss| {
                self.broker
                    .partition_index(&self.vhost, ss, &stream.id.name)
            });
            self.broker.inner.sac.register(
                &stream.id,
                name,
                partition_index,
                self.id,
                id,
                &self.control,
            )?;
        }
        self.counters.add_consumer(counters.clone());
        self.subscriptions.insert(
            id,
            Subscription {
                _reader: Reader::new(&stream.state),
                stream,
                counters,
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
        stream: &Arc<Stream>,
        seek: Seek,
        counters: &Arc<ConsumerCounters>,
        filter: &Option<Matcher>,
    ) -> Result<Delivery, Error> {
        let cursor = stream
            .reader
            .cursor(seek)
            .map_err(|e| Error::StreamNotAvailable(stream.id.name.clone(), e.to_string()))?;
        Ok(Delivery {
            stream: stream.clone(),
            cursor,
            counters: counters.clone(),
            budget: self.budget.clone(),
            outgoing: self.outgoing.clone(),
            committed: stream.committed.clone(),
            filter: filter.clone(),
        })
    }

    /// Starts delivering to an accepted subscription.
    pub fn start(&mut self, subscribed: Subscribed) {
        if let Some(sub) = self.subscriptions.get_mut(&subscribed.0)
            && let Some(delivery) = sub.pending.take()
        {
            sub.task = Some(tokio::spawn(delivery.run()));
        }
    }

    /// A single-active-consumer update is about to be sent to the client. Stepping down stops
    /// delivery at once. Returns false if the subscription is gone (nothing to send).
    pub fn consumer_update(&mut self, id: u8, active: bool) -> bool {
        let Some(sub) = self.subscriptions.get_mut(&id) else {
            return false;
        };
        sub.sac_active = active;
        sub.counters.active.store(active, Ordering::Relaxed);
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
                .stepped_down(&sub.stream.id, &name, self.id, id);
            return;
        }
        if sub.is_delivering() || !sub.sac_active {
            return;
        }
        let seek = seek_of(offset).unwrap_or(sub.seek);
        let (stream, counters, filter) =
            (sub.stream.clone(), sub.counters.clone(), sub.filter.clone());
        match self.delivery(&stream, seek, &counters, &filter) {
            Ok(delivery) => {
                if let Some(sub) = self.subscriptions.get_mut(&id) {
                    sub.task = Some(tokio::spawn(delivery.run()));
                }
            }
            Err(e) => tracing::warn!(stream = %stream.id.name, "activating consumer {id}: {e}"),
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
            sub.counters.credit.add_permits(credit as usize);
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

    /// Ends a subscription: stops its delivery and leaves its consumer group.
    pub(super) fn stop(&self, id: u8, sub: Subscription) {
        sub.counters.credit.close();
        self.counters.remove_consumer(id);
        if let Some(task) = sub.task {
            task.abort();
        }
        if let Some(name) = &sub.sac {
            self.broker
                .inner
                .sac
                .unregister(&sub.stream.id, name, self.id, id);
        }
    }
}

pub(crate) fn seek_of(offset: OffsetSpec) -> Option<Seek> {
    Some(match offset {
        OffsetSpec::First => Seek::First,
        OffsetSpec::Last => Seek::Last,
        OffsetSpec::Next => Seek::Next,
        OffsetSpec::Offset(o) => Seek::Offset(o),
        OffsetSpec::Timestamp(t) => Seek::Timestamp(t),
        OffsetSpec::None => return None,
    })
}
