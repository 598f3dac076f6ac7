//! Super streams: named, ordered sets of partition streams with binding keys, as RabbitMQ
//! models them with a direct exchange bound to stream queues. The stream protocol creates and
//! deletes them whole (CreateSuperStream, DeleteSuperStream); the management API builds them
//! as RabbitMQ's CLI does, from an exchange declaration and one binding per partition.
//!
//! `store.rs` keeps the definitions on disk; this file is what the broker does with them.

mod store;

pub use store::SuperStream;
pub(crate) use store::{SuperStreams, count_in};

use crate::Error;
use crate::args::StreamArgs;
use crate::registry::{Broker, validate_name};

impl Broker {
    /// Creates a super stream and its partition streams, all or nothing.
    pub async fn create_super_stream(
        &self,
        vhost: &str,
        name: &str,
        partitions: &[String],
        binding_keys: &[String],
        arguments: &[(String, String)],
    ) -> Result<(), Error> {
        validate_name(name)?;
        SuperStream::validate(partitions, binding_keys)?;
        StreamArgs::parse(arguments).map_err(Error::PreconditionFailed)?;
        if self.inner.super_streams.contains(vhost, name) {
            return Err(Error::StreamAlreadyExists(name.to_owned()));
        }
        if let Some(p) = partitions.iter().find(|p| self.stream_exists(vhost, p)) {
            return Err(Error::StreamAlreadyExists(p.clone()));
        }
        let mut created = Vec::new();
        let mut failure = None;
        for p in partitions {
            match self.create_stream(vhost, p, arguments).await {
                Ok(()) => created.push(p),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            let definition = SuperStream {
                partitions: partitions.to_vec(),
                binding_keys: binding_keys.to_vec(),
            };
            let added = self
                .inner
                .super_streams
                .update(|map| {
                    let key = (vhost.to_owned(), name.to_owned());
                    if map.contains_key(&key) {
                        return Err(Error::StreamAlreadyExists(name.to_owned()));
                    }
                    map.insert(key, definition);
                    Ok(())
                })
                .await;
            failure = added.err();
        }
        if let Some(e) = failure {
            for p in created {
                let _ = self.delete_stream(vhost, p).await;
            }
            return Err(e);
        }
        tracing::info!(super_stream = %name, partitions = partitions.len(), "super stream created");
        Ok(())
    }

    /// Deletes a super stream and all its partitions.
    pub async fn delete_super_stream(&self, vhost: &str, name: &str) -> Result<(), Error> {
        let removed = self
            .inner
            .super_streams
            .update(|map| {
                map.remove(&(vhost.to_owned(), name.to_owned()))
                    .ok_or_else(|| Error::StreamDoesNotExist(name.to_owned()))
            })
            .await?;
        for p in &removed.partitions {
            match self.delete_stream(vhost, p).await {
                Ok(()) | Err(Error::StreamDoesNotExist(_)) => {}
                Err(e) => {
                    tracing::warn!(super_stream = %name, partition = %p, "deleting partition: {e}")
                }
            }
        }
        tracing::info!(super_stream = %name, "super stream deleted");
        Ok(())
    }

    pub fn super_stream(&self, vhost: &str, name: &str) -> Result<SuperStream, Error> {
        self.inner
            .super_streams
            .get(vhost, name)
            .ok_or_else(|| Error::StreamDoesNotExist(name.to_owned()))
    }

    /// (vhost, name) of every super stream, sorted.
    pub fn super_stream_names(&self) -> Vec<(String, String)> {
        self.inner.super_streams.names()
    }

    /// The partitions whose binding key is exactly `routing_key` (direct routing).
    pub fn route(
        &self,
        vhost: &str,
        super_stream: &str,
        routing_key: &str,
    ) -> Result<Vec<String>, Error> {
        Ok(self.super_stream(vhost, super_stream)?.route(routing_key))
    }

    /// A partition's position in its super stream (its single-active-consumer index):
    /// RabbitMQ's binding order, else the number after the name's last `-`.
    pub(crate) fn partition_index(&self, vhost: &str, super_stream: &str, stream: &str) -> i32 {
        self.inner
            .super_streams
            .position(vhost, super_stream, stream)
            .map(|i| i as i32)
            .or_else(|| stream.rsplit('-').next().and_then(|n| n.parse().ok()))
            .unwrap_or(-1)
    }

    /// Declares a super stream without partitions, as RabbitMQ's management API declares its
    /// exchange: `Ok(true)` when created, `Ok(false)` when it already existed. Partitions are
    /// added with [`Broker::bind_partition`].
    pub async fn declare_super_stream(&self, vhost: &str, name: &str) -> Result<bool, Error> {
        validate_name(name)?;
        let key = (vhost.to_owned(), name.to_owned());
        if self.inner.super_streams.contains(vhost, name) {
            return Ok(false);
        }
        self.inner
            .super_streams
            .update(|map| Ok(map.insert(key, SuperStream::default()).is_none()))
            .await
    }

    /// Removes a super stream's definition and keeps its partition streams, as deleting the
    /// exchange does in RabbitMQ (its bindings go with it, its queues stay).
    pub async fn forget_super_stream(&self, vhost: &str, name: &str) -> Result<(), Error> {
        self.inner
            .super_streams
            .update(|map| {
                map.remove(&(vhost.to_owned(), name.to_owned()))
                    .map(drop)
                    .ok_or_else(|| Error::StreamDoesNotExist(name.to_owned()))
            })
            .await
    }

    /// Binds `stream` to a super stream with `binding_key` (RabbitMQ's binding with the
    /// `x-stream-partition-order` argument): it becomes the partition at position `order`
    /// (clamped), or the last one. Binding the same stream and key again changes nothing.
    pub async fn bind_partition(
        &self,
        vhost: &str,
        super_stream: &str,
        stream: &str,
        binding_key: &str,
        order: Option<u64>,
    ) -> Result<(), Error> {
        if !self.stream_exists(vhost, stream) {
            return Err(Error::StreamDoesNotExist(stream.to_owned()));
        }
        self.inner
            .super_streams
            .update(|map| {
                let ss = map
                    .get_mut(&(vhost.to_owned(), super_stream.to_owned()))
                    .ok_or_else(|| Error::StreamDoesNotExist(super_stream.to_owned()))?;
                ss.bind(stream, binding_key, order)
            })
            .await
    }

    /// Removes one binding; false if there was none.
    pub async fn unbind_partition(
        &self,
        vhost: &str,
        super_stream: &str,
        stream: &str,
        binding_key: &str,
    ) -> Result<bool, Error> {
        self.inner
            .super_streams
            .update(|map| {
                let ss = map
                    .get_mut(&(vhost.to_owned(), super_stream.to_owned()))
                    .ok_or_else(|| Error::StreamDoesNotExist(super_stream.to_owned()))?;
                Ok(ss.unbind(stream, binding_key))
            })
            .await
    }
}
