//! `fanout`: S streams, one producer each publishing as fast as its window of unconfirmed
//! messages allows, and C consumers per stream, subscribed at `first` before publishing starts,
//! each reading every message while it is being written. What counts is the aggregate
//! delivered rate and the broker's CPU per million delivered.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use brook_protocol::OffsetSpec;

use crate::client::{ClientError, Result};
use crate::scenarios::{Progress, cleanup, connect, drain, finish, produce, stream_name};
use crate::stats::{Latency, Report};
use crate::{Common, FanoutArgs};

/// Subscribes `consumers` connections to each stream; each reads `messages` and closes.
async fn start_consumers(
    common: &Common,
    streams: &[String],
    consumers: usize,
    messages: u64,
    delivered: &Arc<AtomicU64>,
) -> Result<Vec<tokio::task::JoinHandle<Result<()>>>> {
    let mut tasks = Vec::new();
    for stream in streams {
        for _ in 0..consumers {
            let mut c = connect(common).await?;
            c.subscribe(0, stream, OffsetSpec::First, 10).await?;
            let delivered = delivered.clone();
            tasks.push(tokio::spawn(async move {
                drain(&mut c, messages, &delivered, |_| {}).await?;
                let _ = c.close().await;
                Ok(())
            }));
        }
    }
    Ok(tasks)
}

pub async fn fanout(args: FanoutArgs) -> Result<Report> {
    let common = &args.common;
    let prefix = stream_name(common);
    let streams: Vec<String> = (0..args.streams).map(|i| format!("{prefix}-{i}")).collect();
    let mut admin = connect(common).await?;
    for stream in &streams {
        admin.create_stream(stream).await?;
    }
    let total = args.messages * (args.streams * args.consumers) as u64;
    let delivered = Arc::new(AtomicU64::new(0));
    let consumers =
        start_consumers(common, &streams, args.consumers, args.messages, &delivered).await?;
    let sampler = common.broker_pid.and_then(crate::procfs::Sampler::start);
    let progress = Progress::start("fanout", delivered.clone(), total);
    let started = Instant::now();
    let producers: Vec<_> = streams
        .iter()
        .map(|stream| {
            let (common, stream) = (common.clone(), stream.clone());
            let (n, size) = (args.messages, args.size);
            tokio::spawn(async move {
                let published = Arc::new(AtomicU64::new(0));
                produce(&common, &stream, n, size, 100, 10_000, published).await
            })
        })
        .collect();
    let join = |e: tokio::task::JoinError| ClientError::Unexpected(e.to_string());
    let mut latency = Latency::new();
    for p in producers {
        latency.merge(&p.await.map_err(join)??.0);
    }
    let published_seconds = started.elapsed().as_secs_f64();
    for c in consumers {
        c.await.map_err(join)??;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(progress);
    let mut report = Report {
        scenario: "fanout",
        broker: common.addr.to_string(),
        latency_us: latency.percentiles(),
        ..Report::default()
    }
    .with_rate(total, args.size, seconds);
    finish(&mut report, sampler).await;
    let published = args.messages * args.streams as u64;
    report.extra.insert("streams", args.streams as f64);
    report
        .extra
        .insert("consumers_per_stream", args.consumers as f64);
    report.extra.insert(
        "published_msg_per_sec",
        published as f64 / published_seconds,
    );
    // `cleanup` deletes the first stream (unless --keep-stream); the others here.
    if !common.keep_stream {
        for stream in &streams[1..] {
            let _ = admin.delete_stream(stream).await;
        }
    }
    cleanup(admin, common, &streams[0]).await;
    Ok(report)
}
