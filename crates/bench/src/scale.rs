//! How a broker's cost grows with what deployments grow in: connections and streams.
//!
//! * `connections`: thousands of authenticated idle connections that keep heartbeating, and a
//!   set of active ones publishing meanwhile: accept rate, broker memory and descriptors per
//!   idle connection, heartbeats handled, connections lost, the active ones' confirm latency.
//! * `streams`: thousands of streams (and optionally a super stream of many partitions):
//!   create rate, broker memory and descriptors per stream, one Metadata request for many.
//! * `attach`: how long a consumer waits for its first chunk when it attaches in the middle of
//!   a big stream (the broker seeks by its index).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use brook_protocol::*;
use bytes::{BufMut, BytesMut};
use tokio::sync::Semaphore;

use crate::client::{Client, ClientError, ConnectOptions, FrameReader, FrameWriter, Result};
use crate::procfs;
use crate::scenarios::key_of;
use crate::stats::{Latency, Report};
use crate::{AttachArgs, Common, ConnectionsArgs, StreamsArgs};

/// Socket buffers of idle connections: heartbeats are 4 bytes, so 4 KiB keeps the client's own
/// memory (which shares the machine) small.
const IDLE_BUFFER: usize = 4096;

fn join_error(e: tokio::task::JoinError) -> ClientError {
    ClientError::Unexpected(e.to_string())
}

/// Broker RSS (bytes) and open descriptors, when its pid is known.
fn broker_footprint(common: &Common) -> Option<(u64, u64)> {
    let pid = common.broker_pid?;
    Some((procfs::rss_bytes(pid)?, procfs::open_files(pid)?))
}

/// Growth of RSS (KiB) and descriptors per unit between two footprints, under these keys.
fn per_unit(
    report: &mut Report,
    (rss_key, fd_key): (&'static str, &'static str),
    before: Option<(u64, u64)>,
    after: Option<(u64, u64)>,
    n: usize,
) {
    if let (Some((rss0, fd0)), Some((rss1, fd1))) = (before, after) {
        let n = n.max(1) as f64;
        report
            .extra
            .insert(rss_key, (rss1 as f64 - rss0 as f64) / 1024.0 / n);
        report.extra.insert(fd_key, (fd1 as f64 - fd0 as f64) / n);
    }
}

/// Runs `f(i)` for i in 0..n with at most `concurrency` at a time; returns the results in order.
async fn bounded<T, F, Fut>(n: usize, concurrency: usize, f: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Closed)?;
        let fut = f(i);
        tasks.push(tokio::spawn(async move {
            let r = fut.await;
            drop(permit);
            r
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.map_err(join_error)??);
    }
    Ok(out)
}

/// Keeps an idle connection alive: sends a heartbeat per interval and counts the broker's.
/// Ends at `until`, handing the connection back (open) so that it is closed after the run;
/// counts it as lost if the broker closed it.
async fn keep_alive(
    client: Client,
    heartbeat: u32,
    until: Instant,
    heartbeats: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
) -> (FrameReader, FrameWriter) {
    let Client {
        mut reader,
        mut writer,
        ..
    } = client;
    let period = Duration::from_secs(u64::from(heartbeat.max(1)));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let deadline = tokio::time::Instant::from_std(until);
    let mut alive = true;
    loop {
        tokio::select! {
            frame = reader.next_raw(), if alive => match frame {
                Ok(f) if key_of(&f) == keys::HEARTBEAT => {
                    heartbeats.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => {
                    lost.fetch_add(1, Ordering::Relaxed);
                    alive = false;
                }
            },
            _ = tick.tick(), if heartbeat > 0 && alive => {
                if writer.send(&Frame::Heartbeat(Heartbeat {})).await.is_err() {
                    lost.fetch_add(1, Ordering::Relaxed);
                    alive = false;
                }
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    (reader, writer)
}

/// One active connection: publishes one message at a time at `interval`, waiting for each
/// confirm, until `until`.
async fn publish_slowly(
    mut client: Client,
    stream: String,
    interval: Duration,
    until: Instant,
) -> Result<(Latency, u64)> {
    client.declare_publisher(0, &stream).await?;
    let mut latency = Latency::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = BytesMut::new();
    let mut id = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        crate::scenarios::encode_publish(&mut buf, id, 1, 12, |_, b| b.put_slice(b"idle-payload"));
        let sent = Instant::now();
        client.writer.write_raw(&mut buf).await?;
        loop {
            let frame = client.reader.next_raw().await?;
            match key_of(&frame) {
                keys::PUBLISH_CONFIRM => break,
                keys::PUBLISH_ERROR => {
                    return Err(ClientError::Unexpected("publish error".into()));
                }
                _ => {}
            }
        }
        latency.record_nanos(sent.elapsed().as_nanos() as u64);
        id += 1;
    }
    let _ = client.close().await;
    Ok((latency, id))
}

/// The active connections of the `connections` scenario, publishing until `until`: their
/// confirm latencies and how many messages they published.
async fn publish_meanwhile(
    common: &Common,
    stream: &str,
    args: &ConnectionsArgs,
    options: ConnectOptions,
    until: Instant,
) -> Result<(Latency, u64)> {
    let interval = Duration::from_secs_f64(args.active as f64 / args.rate as f64);
    let active = bounded(args.active, args.active.max(1), |_| {
        let (c, stream) = (common.clone(), stream.to_owned());
        async move {
            let client = Client::connect_with(c.addr, &c.user, &c.password, options).await?;
            publish_slowly(client, stream, interval, until).await
        }
    })
    .await?;
    let mut latency = Latency::new();
    let mut published = 0;
    for (l, n) in &active {
        latency.merge(l);
        published += n;
    }
    Ok((latency, published))
}

pub async fn connections(args: ConnectionsArgs) -> Result<Report> {
    let common = args.common.clone();
    let stream = crate::scenarios::stream_name(&common);
    let mut admin = Client::connect(common.addr, &common.user, &common.password).await?;
    admin.create_stream(&stream).await?;
    let before = broker_footprint(&common);
    let options = ConnectOptions {
        heartbeat: args.heartbeat,
        buffer: IDLE_BUFFER,
    };
    eprintln!("connections: opening {} idle connections", args.idle);
    let started = Instant::now();
    let idle = bounded(args.idle, args.concurrency, |_| {
        let c = common.clone();
        async move { Client::connect_with(c.addr, &c.user, &c.password, options).await }
    })
    .await?;
    let open_seconds = started.elapsed().as_secs_f64();
    let after = broker_footprint(&common);

    eprintln!(
        "connections: {} active publishers for {} s",
        args.active, args.hold
    );
    let sampler = common.broker_pid.and_then(procfs::Sampler::start);
    let until = Instant::now() + Duration::from_secs(args.hold);
    let (heartbeats, lost) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let keepers: Vec<_> = idle
        .into_iter()
        .map(|c| {
            tokio::spawn(keep_alive(
                c,
                args.heartbeat,
                until,
                heartbeats.clone(),
                lost.clone(),
            ))
        })
        .collect();
    let (latency, published) = publish_meanwhile(&common, &stream, &args, options, until).await?;
    let mut idle = Vec::with_capacity(keepers.len());
    for k in keepers {
        idle.push(k.await.map_err(join_error)?);
    }
    let mut report = Report {
        scenario: "connections",
        broker: common.addr.to_string(),
        latency_us: latency.percentiles(),
        ..Report::default()
    }
    .with_rate(published, 12, args.hold as f64);
    crate::scenarios::finish(&mut report, sampler).await;
    report.extra.insert("idle_connections", args.idle as f64);
    report
        .extra
        .insert("active_connections", args.active as f64);
    report.extra.insert(
        "connections_opened_per_sec",
        args.idle as f64 / open_seconds.max(1e-9),
    );
    report.extra.insert(
        "heartbeats_received",
        heartbeats.load(Ordering::Relaxed) as f64,
    );
    report
        .extra
        .insert("connections_lost", lost.load(Ordering::Relaxed) as f64);
    let keys = (
        "broker_rss_kib_per_idle_connection",
        "broker_files_per_idle_connection",
    );
    per_unit(&mut report, keys, before, after, args.idle);
    drop(idle);
    crate::scenarios::cleanup(admin, &common, &stream).await;
    Ok(report)
}

/// Creates or deletes streams `prefix-i` for i in `range` on one connection.
async fn create_or_delete(
    common: Common,
    prefix: String,
    range: std::ops::Range<usize>,
    create: bool,
) -> Result<()> {
    let mut c = Client::connect(common.addr, &common.user, &common.password).await?;
    for i in range {
        let name = format!("{prefix}-{i}");
        if create {
            c.create_stream(&name).await?;
        } else {
            c.delete_stream(&name).await?;
        }
    }
    let _ = c.close().await;
    Ok(())
}

/// Runs [`create_or_delete`] over `count` streams on `connections` connections; seconds taken.
async fn spread(
    common: &Common,
    prefix: &str,
    count: usize,
    connections: usize,
    create: bool,
) -> Result<f64> {
    let started = Instant::now();
    let per = count.div_ceil(connections.max(1));
    let parts = count.div_ceil(per.max(1));
    bounded(parts, parts, |p| {
        let range = p * per..((p + 1) * per).min(count);
        create_or_delete(common.clone(), prefix.to_owned(), range, create)
    })
    .await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Median time of one Metadata request naming `names`, and how many of them were found.
async fn metadata(client: &mut Client, names: Vec<String>) -> Result<(f64, usize)> {
    let mut times = Vec::new();
    let mut found = 0;
    for _ in 0..5 {
        let corr = client.next_corr();
        let started = Instant::now();
        let r = client
            .request(Frame::Metadata(Metadata {
                correlation_id: corr,
                streams: names.clone(),
            }))
            .await?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        let Frame::MetadataResponse(r) = r else {
            return Err(ClientError::Unexpected(format!("{r:?}")));
        };
        found = r.streams.iter().filter(|s| s.code.is_ok()).count();
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], found))
}

/// Creates a super stream of `partitions` partitions (CreateSuperStream, RabbitMQ 3.13+);
/// returns the seconds it took.
async fn super_stream(client: &mut Client, name: &str, partitions: usize) -> Result<f64> {
    let corr = client.next_corr();
    let started = Instant::now();
    let r = client
        .request(Frame::CreateSuperStream(CreateSuperStream {
            correlation_id: corr,
            name: name.into(),
            partitions: (0..partitions).map(|i| format!("{name}-{i}")).collect(),
            binding_keys: (0..partitions).map(|i| i.to_string()).collect(),
            arguments: Vec::new(),
        }))
        .await?;
    match r {
        Frame::CreateSuperStreamResponse(r) if r.code.is_ok() => {
            Ok(started.elapsed().as_secs_f64())
        }
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

pub async fn streams(args: StreamsArgs) -> Result<Report> {
    let common = args.common.clone();
    let prefix = crate::scenarios::stream_name(&common);
    let before = broker_footprint(&common);
    let sampler = common.broker_pid.and_then(procfs::Sampler::start);
    eprintln!(
        "streams: creating {} streams on {} connections",
        args.count, args.connections
    );
    let create_seconds = spread(&common, &prefix, args.count, args.connections, true).await?;
    let after = broker_footprint(&common);
    let mut admin = Client::connect(common.addr, &common.user, &common.password).await?;
    let names: Vec<String> = (0..args.count.min(args.metadata))
        .map(|i| format!("{prefix}-{i}"))
        .collect();
    let (metadata_ms, found) = metadata(&mut admin, names).await?;
    let mut report = Report {
        scenario: "streams",
        broker: common.addr.to_string(),
        ..Report::default()
    };
    report.extra.insert("streams", args.count as f64);
    report.extra.insert(
        "streams_created_per_sec",
        args.count as f64 / create_seconds.max(1e-9),
    );
    report
        .extra
        .insert("metadata_request_streams", found as f64);
    report.extra.insert("metadata_request_ms", metadata_ms);
    let keys = ("broker_rss_kib_per_stream", "broker_files_per_stream");
    per_unit(&mut report, keys, before, after, args.count);
    if args.partitions > 0 {
        let name = format!("{prefix}-super");
        let seconds = super_stream(&mut admin, &name, args.partitions).await?;
        report
            .extra
            .insert("super_stream_partitions", args.partitions as f64);
        report.extra.insert("super_stream_create_ms", seconds * 1e3);
        if !common.keep_stream {
            let corr = admin.next_corr();
            admin
                .request(Frame::DeleteSuperStream(DeleteSuperStream {
                    correlation_id: corr,
                    name,
                }))
                .await?;
        }
    }
    if !common.keep_stream {
        let seconds = spread(&common, &prefix, args.count, args.connections, false).await?;
        report.extra.insert(
            "streams_deleted_per_sec",
            args.count as f64 / seconds.max(1e-9),
        );
    }
    crate::scenarios::finish(&mut report, sampler).await;
    let _ = admin.close().await;
    Ok(report)
}

/// Time from sending Subscribe at `offset` to the first Deliver, on a fresh connection.
async fn attach_once(common: &Common, stream: &str, offset: u64) -> Result<u64> {
    let mut c = Client::connect(common.addr, &common.user, &common.password).await?;
    let started = Instant::now();
    c.subscribe(0, stream, OffsetSpec::Offset(offset), 1)
        .await?;
    loop {
        let frame = c.reader.next_raw().await?;
        if key_of(&frame) == keys::DELIVER {
            let nanos = started.elapsed().as_nanos() as u64;
            let _ = c.close().await;
            return Ok(nanos);
        }
    }
}

pub async fn attach(args: AttachArgs) -> Result<Report> {
    let common = &args.common;
    let stream = common
        .stream
        .clone()
        .ok_or_else(|| ClientError::Unexpected("attach needs --stream".into()))?;
    let mut latency = Latency::new();
    for _ in 0..args.count {
        latency.record_nanos(attach_once(common, &stream, args.offset).await?);
    }
    let mut report = Report {
        scenario: "attach",
        broker: common.addr.to_string(),
        latency_us: latency.percentiles(),
        ..Report::default()
    };
    report.extra.insert("attach_offset", args.offset as f64);
    report.extra.insert("subscriptions", args.count as f64);
    Ok(report)
}
