//! Stored consumer offsets and publisher sequences, for operators: what
//! `rabbitmq-streams list_stream_tracking` lists and `reset_offset` changes.

use brook_protocol::OffsetSpec;
use tokio::sync::oneshot;

use crate::budget::Charge;
use crate::error::Error;
use crate::registry::Broker;
use crate::stream::{Command, StreamId, Tracked};

impl Broker {
    /// A stream's tracking data, including what is queued for its writer before the call.
    pub async fn tracking(&self, vhost: &str, stream: &str) -> Result<Tracked, Error> {
        let stream = self.stream(&StreamId::new(vhost, stream))?;
        let (reply, rx) = oneshot::channel();
        stream.send(Command::Tracking { reply })?;
        rx.await
            .map_err(|_| Error::StreamNotAvailable(stream.id.name.clone(), "being deleted".into()))
    }

    /// Moves a consumer's stored offset to `to` (first, last, next, an offset or a
    /// timestamp, resolved against the log now), as a StoreOffset would. Like RabbitMQ's
    /// `reset_offset`, only an offset that was stored before can be reset: `Ok(None)` when
    /// there is none. Returns the offset stored.
    pub async fn reset_offset(
        &self,
        vhost: &str,
        stream: &str,
        reference: &str,
        to: OffsetSpec,
    ) -> Result<Option<u64>, Error> {
        if reference.is_empty() || reference.len() > crate::MAX_REFERENCE_LEN {
            return Err(Error::PreconditionFailed("invalid reference".into()));
        }
        let tracked = self.tracking(vhost, stream).await?;
        if !tracked.offsets.iter().any(|(r, _)| r == reference) {
            return Ok(None);
        }
        let handle = self.stream(&StreamId::new(vhost, stream))?;
        let offset = match to {
            OffsetSpec::Offset(o) => o,
            other => {
                let seek = crate::session::seek_of(other)
                    .ok_or_else(|| Error::PreconditionFailed("no offset given".into()))?;
                handle
                    .reader
                    .cursor(seek)
                    .map_err(|e| Error::StreamNotAvailable(stream.to_owned(), e.to_string()))?
                    .next_chunk_id()
            }
        };
        handle.send(Command::StoreOffset {
            reference: reference.to_owned(),
            offset,
            _charge: Charge::default(),
        })?;
        // Queued behind the store: answered once it is in the log.
        self.tracking(vhost, stream).await?;
        tracing::info!(stream = %handle.id, reference, offset, "stored offset reset");
        Ok(Some(offset))
    }
}
