//! One scrape's worth of state, gathered before encoding: everything a scrape shows comes from
//! one pass over the registry, the connections and each stream's tracking data.

use std::collections::BTreeMap;
use std::time::Duration;

use brook_broker::{ConsumerSnapshot, PublisherSnapshot, StreamId, StreamStatus, Tracked};
use brook_log::LogStats;
use brook_server::ConnectionInfo;

use crate::Metrics;
use crate::node::NodeStats;

/// A stream as the scrape sees it.
#[derive(Debug)]
pub(crate) struct StreamRow {
    pub id: StreamId,
    /// `None` when the stream is being created or could not be opened.
    pub stats: Option<LogStats>,
    /// Stored offsets and publisher sequences (empty when unavailable).
    pub tracked: Tracked,
    pub consumers: usize,
}

impl StreamRow {
    /// Log offsets held (RabbitMQ's stream queue `messages`).
    pub fn messages(&self) -> u64 {
        self.stats.map_or(0, |s| match s.first_chunk_id {
            Some(first) => s.next_offset.saturating_sub(first),
            None => 0,
        })
    }

    /// The last offset in the log, if any.
    pub fn last_offset(&self) -> Option<u64> {
        self.stats.and_then(|s| s.next_offset.checked_sub(1))
    }
}

#[derive(Debug)]
pub(crate) struct Snapshot {
    pub streams: Vec<StreamRow>,
    pub connections: Vec<ConnectionInfo>,
    pub publishers: Vec<(ConnectionInfo, PublisherSnapshot)>,
    pub consumers: Vec<(ConnectionInfo, ConsumerSnapshot)>,
    pub node: NodeStats,
    pub super_streams: usize,
}

/// How long one stream's tracking may take before the scrape goes on without it (a stream
/// whose writer is stuck on a slow disk must not stall every scrape).
const TRACKING_TIMEOUT: Duration = Duration::from_secs(2);

impl Snapshot {
    pub(crate) async fn gather(m: &Metrics) -> Snapshot {
        let connections = m.connections.list();
        let mut publishers = Vec::new();
        let mut consumers = Vec::new();
        for c in &connections {
            if let Some(counters) = &c.counters {
                publishers.extend(counters.publishers().into_iter().map(|p| (c.clone(), p)));
                consumers.extend(counters.consumers().into_iter().map(|s| (c.clone(), s)));
            }
        }
        let mut per_stream: BTreeMap<&StreamId, usize> = BTreeMap::new();
        for (_, c) in &consumers {
            *per_stream.entry(&c.stream).or_default() += 1;
        }
        let ids: Vec<(StreamId, bool)> = m
            .broker
            .stream_infos()
            .into_iter()
            .map(|i| (i.id, matches!(i.status, StreamStatus::Running { .. })))
            .collect();
        let tracked = futures::future::join_all(ids.iter().map(|(id, running)| async move {
            if !running {
                return Tracked::default();
            }
            let ask = m.broker.tracking(&id.vhost, &id.name);
            match tokio::time::timeout(TRACKING_TIMEOUT, ask).await {
                Ok(Ok(t)) => t,
                _ => Tracked::default(),
            }
        }))
        .await;
        // The log's numbers are read after the tracking data, which waits for what was queued
        // before it to be written: a stored offset is never ahead of the offsets shown with it.
        let mut infos: BTreeMap<StreamId, _> = m
            .broker
            .stream_infos()
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect();
        let streams = ids
            .into_iter()
            .zip(tracked)
            .filter_map(|((id, _), tracked)| infos.remove(&id).map(|info| (info, tracked)))
            .map(|(info, tracked)| StreamRow {
                consumers: per_stream.get(&info.id).copied().unwrap_or(0),
                stats: match info.status {
                    StreamStatus::Running { stats, .. } => Some(stats),
                    _ => None,
                },
                id: info.id,
                tracked,
            })
            .collect();
        Snapshot {
            streams,
            connections,
            publishers,
            consumers,
            node: NodeStats::read(&m.data_dir),
            super_streams: m.broker.super_stream_names().len(),
        }
    }
}
