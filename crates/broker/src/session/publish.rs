//! Publishers: declare, publish, query the last stored publishing id, delete.

use std::sync::Arc;

use brook_protocol::chunk::Entry;
use brook_protocol::{Publish, ResponseCode};
use tokio::sync::oneshot;

use super::{Session, check_reference};
use crate::Error;
use crate::budget::Charge;
use crate::counters::PublisherCounters;
use crate::outgoing::Outgoing;
use crate::stream::{Command, ConfirmTarget, PublishCmd, Stream};

/// RabbitMQ 4.3.5's limit on a sub-entry batch's uncompressed size.
const MAX_SUB_ENTRY_BATCH_BYTES: u32 = 64 << 20;

#[derive(Debug)]
pub(super) struct Publisher {
    pub stream: Arc<Stream>,
    pub reference: Option<Arc<str>>,
    /// Its counters; also its liveness for confirms still in flight.
    pub counters: Arc<PublisherCounters>,
    /// The stream's publisher epoch at declaration (see `ControlEvent::PublishersFenced`).
    pub epoch: u64,
}

impl Session {
    pub fn declare_publisher(
        &mut self,
        id: u8,
        reference: &str,
        stream: &str,
    ) -> Result<(), Error> {
        check_reference(reference, "publisher reference")?;
        let stream = self.stream(stream)?;
        if stream.role == crate::Role::Replica {
            // Clients publish to the leader `Metadata` names; brook does not forward.
            return Err(Error::StreamNotAvailable(
                stream.id.name.clone(),
                "this node holds a replica; publish to the leader".into(),
            ));
        }
        if self.publishers.contains_key(&id) {
            return Err(Error::PreconditionFailed(format!(
                "publisher id {id} already in use"
            )));
        }
        if !reference.is_empty()
            && self.publishers.values().any(|p| {
                p.stream.id.name == stream.id.name && p.reference.as_deref() == Some(reference)
            })
        {
            return Err(Error::PreconditionFailed(format!(
                "publisher reference {reference:?} already declared on this connection"
            )));
        }
        let epoch = stream.state.publisher_epoch();
        let counters = Arc::new(PublisherCounters::new(
            id,
            stream.id.clone(),
            reference,
            self.broker.inner.totals.clone(),
        ));
        self.counters.add_publisher(counters.clone());
        self.publishers.insert(
            id,
            Publisher {
                stream,
                reference: (!reference.is_empty()).then(|| Arc::from(reference)),
                counters,
                epoch,
            },
        );
        Ok(())
    }

    pub fn delete_publisher(&mut self, id: u8) -> Result<(), Error> {
        let publisher = self
            .publishers
            .remove(&id)
            .ok_or(Error::PublisherDoesNotExist(id))?;
        publisher.counters.kill();
        self.counters.remove_publisher(id);
        Ok(())
    }

    /// Drops the publishers on `stream` declared before `epoch`; returns how many.
    pub(super) fn drop_publishers(&mut self, stream: &str, epoch: u64) -> usize {
        let before = self.publishers.len();
        let counters = &self.counters;
        self.publishers.retain(|&id, p| {
            let keep = p.stream.id.name != stream || p.epoch >= epoch;
            if !keep {
                p.counters.kill();
                counters.remove_publisher(id);
            }
            keep
        });
        before - self.publishers.len()
    }

    /// Hands a Publish frame to its stream's writer. `charge` is the frame's share of the
    /// connection's budget: it stays with the frame until its confirms or errors are written.
    /// Errors are reported to the client as PublishError.
    pub fn publish(&mut self, publish: Publish, charge: Charge) {
        let Some(publisher) = self.publishers.get(&publish.publisher_id) else {
            let all = publish.entry_count() as usize;
            self.reject(
                &publish,
                all,
                ResponseCode::PUBLISHER_DOES_NOT_EXIST,
                charge,
            );
            return;
        };
        publisher
            .counters
            .published(u64::from(publish.entry_count()));
        let take = valid_prefix(&publish);
        if take < publish.entry_count() as usize {
            // RabbitMQ 4.3.5 validates sub-entry batches; an invalid one and everything after
            // it in the frame get PRECONDITION_FAILED. (Uncharged: the charge of the frame,
            // held by what follows in the queue, covers it.)
            let errors = publish
                .entries()
                .skip(take)
                .map(|e| (e.publishing_id, ResponseCode::PRECONDITION_FAILED))
                .collect::<Vec<_>>();
            publisher.counters.errored(errors.len() as u64);
            if take == 0 {
                let _ = self.outgoing.send(Outgoing::PublishError {
                    publisher_id: publish.publisher_id,
                    errors,
                    charge,
                });
                return;
            }
            let _ = self.outgoing.send(Outgoing::PublishError {
                publisher_id: publish.publisher_id,
                errors,
                charge: Charge::default(),
            });
        }
        let cmd = Command::Publish(PublishCmd {
            take,
            reference: publisher.reference.clone(),
            target: ConfirmTarget {
                outgoing: self.outgoing.clone(),
                publisher_id: publish.publisher_id,
                publisher: publisher.counters.clone(),
            },
            epoch: publisher.epoch,
            publish,
            charge,
            received: std::time::Instant::now(),
        });
        if let Err(cmd) = publisher.stream.commands.send(cmd) {
            // The writer is gone (the stream is being deleted; MetadataUpdate follows): the
            // publisher no longer exists, as RabbitMQ answers once it has removed it.
            if let Command::Publish(p) = cmd.0 {
                self.reject(
                    &p.publish,
                    p.take,
                    ResponseCode::PUBLISHER_DOES_NOT_EXIST,
                    p.charge,
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
        stream.send(Command::QuerySequence {
            reference: reference.to_owned(),
            reply,
        })?;
        super::answer(&stream, rx).await
    }
}

/// How many leading entries of a Publish are valid (frames without sub-entry batches need no
/// second look).
fn valid_prefix(publish: &Publish) -> usize {
    if !publish.has_batches() {
        return publish.entry_count() as usize;
    }
    publish
        .entries()
        .take_while(|e| valid_entry(&e.entry))
        .count()
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
