//! Super streams: named, ordered sets of partition streams with binding keys, as RabbitMQ
//! models them with a direct exchange bound to stream queues. The stream protocol creates and
//! deletes them whole (CreateSuperStream, DeleteSuperStream); the management API builds them
//! as RabbitMQ's CLI does, from an exchange declaration and one binding per partition.
//!
//! `change.rs` is every change to the definitions, `store.rs` keeps them on disk; this file is
//! what the broker does with them. In a cluster, changes go through the cluster's metadata,
//! which installs the result on every node.

mod change;
mod store;

pub use change::{SuperStreamAnswer, SuperStreamChange, SuperStreamMap, apply_super_stream_change};
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
            let (vhost, name) = (vhost.to_owned(), name.to_owned());
            let added = self
                .super_stream_change(SuperStreamChange::Create {
                    vhost,
                    name,
                    definition,
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
        let removed = self.remove_super_stream(vhost, name).await?;
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
        if self.inner.super_streams.contains(vhost, name) {
            return Ok(false);
        }
        let (vhost, name) = (vhost.to_owned(), name.to_owned());
        let answer = self
            .super_stream_change(SuperStreamChange::Declare { vhost, name })
            .await?;
        Ok(answer == SuperStreamAnswer::Changed(true))
    }

    /// Removes a super stream's definition and keeps its partition streams, as deleting the
    /// exchange does in RabbitMQ (its bindings go with it, its queues stay).
    pub async fn forget_super_stream(&self, vhost: &str, name: &str) -> Result<(), Error> {
        self.remove_super_stream(vhost, name).await.map(drop)
    }

    async fn remove_super_stream(&self, vhost: &str, name: &str) -> Result<SuperStream, Error> {
        let (vhost, name) = (vhost.to_owned(), name.to_owned());
        match self
            .super_stream_change(SuperStreamChange::Remove { vhost, name })
            .await?
        {
            SuperStreamAnswer::Removed(definition) => Ok(definition),
            other => Err(Error::Internal(format!("removing answered {other:?}"))),
        }
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
        self.super_stream_change(SuperStreamChange::Bind {
            vhost: vhost.to_owned(),
            super_stream: super_stream.to_owned(),
            stream: stream.to_owned(),
            key: binding_key.to_owned(),
            order,
        })
        .await
        .map(drop)
    }

    /// Removes one binding; false if there was none.
    pub async fn unbind_partition(
        &self,
        vhost: &str,
        super_stream: &str,
        stream: &str,
        binding_key: &str,
    ) -> Result<bool, Error> {
        let answer = self
            .super_stream_change(SuperStreamChange::Unbind {
                vhost: vhost.to_owned(),
                super_stream: super_stream.to_owned(),
                stream: stream.to_owned(),
                key: binding_key.to_owned(),
            })
            .await?;
        Ok(answer == SuperStreamAnswer::Changed(true))
    }

    /// Applies a change here, or through the cluster when there is one.
    async fn super_stream_change(
        &self,
        change: SuperStreamChange,
    ) -> Result<SuperStreamAnswer, Error> {
        let Some(cluster) = self.inner.cluster.get() else {
            return self.inner.super_streams.change(change).await;
        };
        // Checked against this node's copy first, so that a change the definitions refuse
        // gets its own error without a round through the cluster (which checks it again).
        self.inner.super_streams.check(change.clone())?;
        cluster.super_streams(change).await
    }

    /// A deleted stream leaves the super streams it was a partition of. In a cluster the
    /// metadata does that itself when it applies the deletion.
    pub(crate) async fn drop_partition(&self, vhost: &str, stream: &str) {
        if self.inner.cluster.get().is_some()
            || !self.inner.super_streams.holds_partition(vhost, stream)
        {
            return;
        }
        let (vhost, stream) = (vhost.to_owned(), stream.to_owned());
        let change = SuperStreamChange::DropPartition { vhost, stream };
        if let Err(e) = self.inner.super_streams.change(change).await {
            tracing::error!("removing a deleted stream from its super stream: {e}");
        }
    }

    /// Every super stream definition this node holds.
    pub fn super_stream_definitions(&self) -> SuperStreamMap {
        self.inner.super_streams.all()
    }

    /// Makes the cluster's super stream definitions this node's.
    pub fn install_super_streams(&self, map: SuperStreamMap) {
        if let Err(e) = self.inner.super_streams.install(map) {
            tracing::error!("installing the cluster's super streams: {e}");
        }
    }
}
