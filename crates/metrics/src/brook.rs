//! brook's own families, beyond RabbitMQ's: per stream (offsets, size, writes, retention), per
//! publisher reference, per live consumer, per named consumer (stored offset and lag, also
//! while it is offline), and latency histograms.
//!
//! Cardinality: per stream 13 series; per publisher reference on a stream 4 (unnamed
//! publishers share the reference ""); per live subscription 4; per stored consumer offset 2;
//! per publisher sequence 1. Nothing grows with messages or time, only with objects that exist.

use std::collections::BTreeMap;
use std::fmt::Result;

use brook_broker::{StreamId, Totals};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};

use crate::encode::{Labels, counter, gauge, label};
use crate::snapshot::{Snapshot, StreamRow};

fn of(id: &StreamId) -> Labels {
    vec![("vhost", label(&id.vhost)), ("stream", label(&id.name))]
}

fn with(id: &StreamId, key: &'static str, value: &str) -> Labels {
    let mut l = of(id);
    l.push((key, label(value)));
    l
}

pub(crate) fn streams(enc: &mut DescriptorEncoder, snap: &Snapshot) -> Result {
    let all = |f: &dyn Fn(&StreamRow) -> Option<u64>| -> Vec<(Labels, u64)> {
        snap.streams
            .iter()
            .filter_map(|s| f(s).map(|v| (of(&s.id), v)))
            .collect()
    };
    gauge(
        enc,
        "brook_super_streams",
        "Super streams defined",
        &crate::encode::one(snap.super_streams as u64),
    )?;
    gauge(
        enc,
        "brook_stream_up",
        "1 if the stream is open and served, 0 if it could not be opened",
        &all(&|s| Some(u64::from(s.stats.is_some()))),
    )?;
    gauge(
        enc,
        "brook_stream_first_offset",
        "First offset still in the stream (retention moves it)",
        &all(&|s| s.stats.and_then(|st| st.first_chunk_id)),
    )?;
    gauge(
        enc,
        "brook_stream_committed_offset",
        "Last offset of the stream that consumers can read",
        &all(&|s| s.last_offset()),
    )?;
    gauge(
        enc,
        "brook_stream_messages",
        "Offsets held (messages and offset-tracking entries), as RabbitMQ counts a stream's messages",
        &all(&|s| Some(s.messages())),
    )?;
    gauge(
        enc,
        "brook_stream_bytes",
        "Bytes on disk, all segments",
        &all(&|s| s.stats.map(|st| st.bytes)),
    )?;
    gauge(
        enc,
        "brook_stream_segments",
        "Segment files",
        &all(&|s| s.stats.map(|st| st.segments as u64)),
    )?;
    gauge(
        enc,
        "brook_stream_chunks",
        "Chunks held",
        &all(&|s| s.stats.map(|st| st.chunks)),
    )?;
    let activity = |f: fn(&brook_log::LogActivity) -> u64| {
        all(&move |s: &StreamRow| s.stats.map(|st| f(&st.activity)))
    };
    counter(
        enc,
        "brook_stream_chunks_written",
        "Chunks appended since brook started",
        &activity(|a| a.chunks_written),
    )?;
    counter(
        enc,
        "brook_stream_records_written",
        "Records (messages and tracking entries) appended since brook started",
        &activity(|a| a.records_written),
    )?;
    counter(
        enc,
        "brook_stream_bytes_written",
        "Bytes appended since brook started",
        &activity(|a| a.bytes_written),
    )?;
    counter(
        enc,
        "brook_stream_retention_segments_deleted",
        "Segments deleted by retention since brook started",
        &activity(|a| a.segments_deleted),
    )?;
    counter(
        enc,
        "brook_stream_retention_bytes_deleted",
        "Bytes deleted by retention since brook started",
        &activity(|a| a.bytes_deleted),
    )
}

/// Stored offsets of named consumers and their lag, from the stream's own tracking data: the
/// lag of a consumer that is offline keeps growing, which is what to alert on.
pub(crate) fn named_consumers(enc: &mut DescriptorEncoder, snap: &Snapshot) -> Result {
    let mut stored = Vec::new();
    let mut lag = Vec::new();
    let mut sequences = Vec::new();
    for s in &snap.streams {
        for (reference, offset) in &s.tracked.offsets {
            stored.push((with(&s.id, "reference", reference), *offset));
            let behind = s
                .last_offset()
                .map_or(0, |last| last.saturating_sub(*offset));
            lag.push((with(&s.id, "reference", reference), behind));
        }
        for (reference, sequence) in &s.tracked.writers {
            sequences.push((with(&s.id, "reference", reference), *sequence));
        }
    }
    gauge(
        enc,
        "brook_consumer_stored_offset",
        "Offset a named consumer stored (StoreOffset)",
        &stored,
    )?;
    gauge(
        enc,
        "brook_consumer_stored_offset_lag",
        "Committed offset minus the stored offset of a named consumer, connected or not",
        &lag,
    )?;
    gauge(
        enc,
        "brook_publisher_last_publishing_id",
        "Last publishing id stored for a named publisher (deduplication)",
        &sequences,
    )
}

/// Publishers, summed per stream and reference (unnamed ones under reference "").
pub(crate) fn publishers(enc: &mut DescriptorEncoder, snap: &Snapshot) -> Result {
    let mut sums: BTreeMap<(StreamId, String), [u64; 4]> = BTreeMap::new();
    for (_, p) in &snap.publishers {
        let e = sums
            .entry((p.stream.clone(), p.reference.clone()))
            .or_default();
        e[0] += p.published;
        e[1] += p.confirmed;
        e[2] += p.errored;
        e[3] += p.deduplicated;
    }
    let series = |i: usize| -> Vec<(Labels, u64)> {
        sums.iter()
            .map(|((id, reference), v)| (with(id, "reference", reference), v[i]))
            .collect()
    };
    counter(
        enc,
        "brook_publisher_published",
        "Messages received from the connected publishers",
        &series(0),
    )?;
    counter(
        enc,
        "brook_publisher_confirmed",
        "Messages confirmed to the connected publishers",
        &series(1),
    )?;
    counter(
        enc,
        "brook_publisher_errored",
        "Messages answered with a publish error",
        &series(2),
    )?;
    counter(
        enc,
        "brook_publisher_deduplicated",
        "Messages dropped (and confirmed) as duplicates of stored publishing ids",
        &series(3),
    )
}

/// Live subscriptions, labelled by connection and subscription id.
pub(crate) fn consumers(enc: &mut DescriptorEncoder, snap: &Snapshot) -> Result {
    let last: BTreeMap<&StreamId, u64> = snap
        .streams
        .iter()
        .filter_map(|s| s.last_offset().map(|o| (&s.id, o)))
        .collect();
    let series = |f: &dyn Fn(&brook_broker::ConsumerSnapshot) -> u64| -> Vec<(Labels, u64)> {
        snap.consumers
            .iter()
            .map(|(conn, c)| {
                let mut l = with(&c.stream, "connection", &conn.name);
                l.push(("subscription_id", label(&c.subscription_id.to_string())));
                (l, f(c))
            })
            .collect()
    };
    counter(
        enc,
        "brook_consumer_delivered",
        "Messages delivered to the subscription",
        &series(&|c| c.consumed),
    )?;
    gauge(
        enc,
        "brook_consumer_credits",
        "Chunk credit the subscription has left",
        &series(&|c| c.credits),
    )?;
    gauge(
        enc,
        "brook_consumer_offset",
        "First offset of the last chunk delivered",
        &series(&|c| c.offset),
    )?;
    gauge(
        enc,
        "brook_consumer_offset_lag",
        "Committed offset minus the subscription's offset",
        &series(&|c| {
            last.get(&c.stream)
                .map_or(0, |l| l.saturating_sub(c.offset))
        }),
    )
}

pub(crate) fn histograms(enc: &mut DescriptorEncoder, t: &Totals) -> Result {
    let h = &t.confirm_latency;
    h.encode(enc.encode_descriptor(
        "brook_publish_confirm_latency_seconds",
        "Seconds from a Publish frame's arrival to the confirm of its oldest message",
        None,
        h.metric_type(),
    )?)?;
    let h = &t.fsync_seconds;
    h.encode(enc.encode_descriptor(
        "brook_fsync_seconds",
        "Seconds per fdatasync of a stream segment",
        None,
        h.metric_type(),
    )?)?;
    counter(
        enc,
        "brook_messages_deduplicated",
        "Messages dropped (and confirmed) as duplicates, all streams",
        &crate::encode::one(Totals::get(&t.deduplicated)),
    )
}
