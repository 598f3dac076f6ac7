//! Read-only views of the registry, for operators (the management API, metrics, `verify`).

use brook_log::LogStats;
use std::path::PathBuf;

use crate::args::StreamArgs;
use crate::error::Error;
use crate::registry::{Broker, Slot};
use crate::stream::{Role, StreamId};

/// A stream that could not be opened, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnavailableStream {
    /// With damaged metadata the vhost is unknown: `/` is assumed.
    pub vhost: String,
    pub name: String,
    pub dir: PathBuf,
    pub reason: String,
}

/// One member's copy of a stream, as `rabbitmq-streams stream_status` shows each member
/// (rabbit_stream_queue:status/2, from osiris's counters).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberStatus {
    /// `writer` or `replica`.
    pub role: String,
    /// The leader's epoch (1 on a single node; a replica does not know it: the cluster's
    /// metadata fills it in).
    pub epoch: Option<u64>,
    /// The last offset written, committed or not.
    pub offset: Option<u64>,
    /// The last offset readers may see.
    pub committed_offset: Option<u64>,
    pub committed_chunk_id: Option<u64>,
    pub first_offset: Option<u64>,
    /// Subscriptions reading it here.
    pub readers: usize,
    pub segments: usize,
}

/// A stream as operators see it.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub id: StreamId,
    pub status: StreamStatus,
}

#[derive(Debug, Clone)]
pub enum StreamStatus {
    /// Open and served.
    Running {
        arguments: StreamArgs,
        stats: LogStats,
    },
    /// Being created.
    Creating { arguments: StreamArgs },
    /// Its files exist but could not be opened.
    Unavailable { reason: String },
}

impl StreamInfo {
    fn of(id: &StreamId, slot: &Slot) -> StreamInfo {
        let status = match slot {
            Slot::Ready(s) => StreamStatus::Running {
                arguments: s.args.clone(),
                stats: s.reader.stats(),
            },
            Slot::Creating(args) => StreamStatus::Creating {
                arguments: args.clone(),
            },
            Slot::Unavailable { reason, .. } => StreamStatus::Unavailable {
                reason: reason.clone(),
            },
            Slot::Dormant { .. } => StreamStatus::Unavailable {
                reason: "waiting for the cluster's metadata".into(),
            },
        };
        StreamInfo {
            id: id.clone(),
            status,
        }
    }
}

impl Broker {
    pub fn stream_info(&self, vhost: &str, name: &str) -> Option<StreamInfo> {
        let id = StreamId::new(vhost, name);
        self.read_streams()
            .get(&id)
            .map(|slot| StreamInfo::of(&id, slot))
    }

    /// Every stream, sorted by vhost and name.
    pub fn stream_infos(&self) -> Vec<StreamInfo> {
        let mut out: Vec<StreamInfo> = self
            .read_streams()
            .iter()
            .map(|(id, slot)| StreamInfo::of(id, slot))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    pub fn stream_exists(&self, vhost: &str, name: &str) -> bool {
        self.read_streams()
            .contains_key(&StreamId::new(vhost, name))
    }

    /// Every stream, sorted by vhost and name.
    pub fn streams(&self) -> Vec<StreamId> {
        let mut ids: Vec<StreamId> = self.read_streams().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Streams whose files could not be opened, sorted by name.
    pub fn unavailable_streams(&self) -> Vec<UnavailableStream> {
        let mut out: Vec<UnavailableStream> = self
            .read_streams()
            .iter()
            .filter_map(|(id, slot)| match slot {
                Slot::Unavailable { dir, reason } => Some(UnavailableStream {
                    vhost: id.vhost.clone(),
                    name: id.name.clone(),
                    dir: dir.clone(),
                    reason: reason.clone(),
                }),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// This node's copy of a stream; `None` if it hosts none.
    pub fn member_status(&self, id: &StreamId) -> Option<MemberStatus> {
        let stream = self.stream(id).ok()?;
        let stats = stream.reader.stats();
        let (role, epoch) = match stream.role {
            Role::Single => ("writer", Some(1)),
            Role::Leader { epoch, .. } => ("writer", Some(epoch)),
            Role::Replica => ("replica", None),
        };
        Some(MemberStatus {
            role: role.into(),
            epoch,
            offset: stats.written_end.checked_sub(1),
            committed_offset: stats.next_offset.checked_sub(1),
            committed_chunk_id: stats.committed_chunk_id,
            first_offset: stats.first_chunk_id,
            readers: stream.state.readers(),
            segments: stats.segments,
        })
    }

    pub fn stream_stats(&self, vhost: &str, name: &str) -> Result<LogStats, Error> {
        Ok(self.stream(&StreamId::new(vhost, name))?.reader.stats())
    }
}
