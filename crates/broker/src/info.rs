//! Read-only views of the registry, for operators (the management API, metrics, `verify`).

use brook_log::LogStats;
use std::path::PathBuf;

use crate::args::StreamArgs;
use crate::error::Error;
use crate::registry::{Broker, Slot};
use crate::stream::StreamId;

/// A stream that could not be opened, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnavailableStream {
    /// With damaged metadata the vhost is unknown: `/` is assumed.
    pub vhost: String,
    pub name: String,
    pub dir: PathBuf,
    pub reason: String,
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

    pub fn stream_stats(&self, vhost: &str, name: &str) -> Result<LogStats, Error> {
        Ok(self.stream(&StreamId::new(vhost, name))?.reader.stats())
    }
}
