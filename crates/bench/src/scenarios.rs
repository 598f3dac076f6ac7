//! The load scenarios. Hot loops encode and parse frames by hand (no per-message allocation),
//! so that the client is not what is measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use brook_protocol::chunk::{ChunkHeader, HEADER_LEN, entries};
use brook_protocol::*;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::Semaphore;

use crate::client::{Client, ClientError, Result};
use crate::stats::{Latency, Report};
use crate::{Common, ConsumeArgs, E2eArgs, PublishArgs, TrackArgs};

/// Appends a Publish v1 frame of `n` messages with ids from `first_id`; `body` writes message i.
pub(crate) fn encode_publish(
    buf: &mut BytesMut,
    first_id: u64,
    n: usize,
    size: usize,
    mut body: impl FnMut(u64, &mut BytesMut),
) {
    let frame = 2 + 2 + 1 + 4 + n * (8 + 4 + size);
    buf.reserve(4 + frame);
    buf.put_u32(frame as u32);
    buf.put_u16(keys::PUBLISH);
    buf.put_u16(1);
    buf.put_u8(0);
    buf.put_u32(n as u32);
    for id in first_id..first_id + n as u64 {
        buf.put_u64(id);
        buf.put_u32(size as u32);
        body(id, buf);
    }
}

/// Publishing ids of a PublishConfirm body (after key and version: publisher id u8, count
/// u32, ids), without allocating.
fn confirmed_ids(body: &[u8]) -> impl Iterator<Item = u64> + '_ {
    let ids = body.get(5..).unwrap_or_default();
    ids.chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
}

pub(crate) fn key_of(frame: &Bytes) -> u16 {
    frame
        .get(..2)
        .map_or(0, |k| u16::from_be_bytes([k[0], k[1]]))
}

/// Prints a line per second to stderr while a run is in progress.
pub(crate) struct Progress {
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub(crate) fn start(label: &'static str, counter: Arc<AtomicU64>, total: u64) -> Self {
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = counter.load(Ordering::Relaxed);
                eprintln!(
                    "{label}: {:>5.1} s {:>12} msg/s  {now}/{total}",
                    started.elapsed().as_secs_f64(),
                    now - last
                );
                last = now;
            }
        });
        Self { task }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn stream_name(common: &Common) -> String {
    common.stream.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("brook-bench-{}-{nanos}", std::process::id())
    })
}

pub(crate) async fn connect(common: &Common) -> Result<Client> {
    Client::connect(common.addr, &common.user, &common.password).await
}

/// Publishes `count` messages on one connection with at most `in_flight` unconfirmed; records
/// each message's confirm latency.
pub(crate) async fn produce(
    common: &Common,
    stream: &str,
    count: u64,
    size: usize,
    batch: usize,
    in_flight: usize,
    counter: Arc<AtomicU64>,
) -> Result<(Latency, u64)> {
    // A frame waits for its whole batch of the window: a bigger batch would wait forever.
    if batch > in_flight {
        return Err(ClientError::Unexpected(format!(
            "a batch of {batch} messages cannot fit a window of {in_flight} unconfirmed"
        )));
    }
    let mut client = connect(common).await?;
    client.declare_publisher(0, stream).await?;
    let Client {
        mut reader,
        mut writer,
        ..
    } = client;
    let window = Arc::new(Semaphore::new(in_flight));
    let epoch = Instant::now();
    // Send time of each unconfirmed id, by id modulo the window.
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..in_flight).map(|_| AtomicU64::new(0)).collect());
    let payload = vec![b'x'; size];
    let (w, s) = (window.clone(), sent.clone());
    let send = tokio::spawn(async move {
        let mut id = 0u64;
        let mut buf = BytesMut::with_capacity(1 << 20);
        while id < count {
            let n = (batch as u64).min(count - id) as usize;
            // Write what is encoded before waiting for room in the window.
            let permit = match w.clone().try_acquire_many_owned(n as u32) {
                Ok(p) => p,
                Err(_) => {
                    writer.write_raw(&mut buf).await?;
                    w.clone()
                        .acquire_many_owned(n as u32)
                        .await
                        .map_err(|_| ClientError::Closed)?
                }
            };
            permit.forget();
            let now = epoch.elapsed().as_nanos() as u64;
            for i in id..id + n as u64 {
                s[(i % s.len() as u64) as usize].store(now, Ordering::Relaxed);
            }
            encode_publish(&mut buf, id, n, size, |_, b| b.put_slice(&payload));
            id += n as u64;
            if buf.len() >= 256 * 1024 {
                writer.write_raw(&mut buf).await?;
            }
        }
        writer.write_raw(&mut buf).await?;
        Ok::<_, ClientError>(writer)
    });
    let mut latency = Latency::new();
    let (mut done, mut errors) = (0u64, 0u64);
    while done < count {
        let frame = reader.next_raw().await?;
        let body = frame.get(4..).unwrap_or_default();
        let now = epoch.elapsed().as_nanos() as u64;
        let n = match key_of(&frame) {
            keys::PUBLISH_CONFIRM => {
                let mut n = 0;
                for id in confirmed_ids(body) {
                    let at = sent[(id % sent.len() as u64) as usize].load(Ordering::Relaxed);
                    latency.record_nanos(now.saturating_sub(at));
                    n += 1;
                }
                n
            }
            keys::PUBLISH_ERROR => {
                let n = body
                    .get(1..5)
                    .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                errors += u64::from(n);
                u64::from(n)
            }
            _ => 0,
        };
        done += n;
        counter.fetch_add(n, Ordering::Relaxed);
        window.add_permits(n as usize);
    }
    let writer = send
        .await
        .map_err(|e| ClientError::Unexpected(e.to_string()))??;
    drop(writer);
    Ok((latency, errors))
}

pub async fn publish(args: PublishArgs) -> Result<Report> {
    let common = &args.common;
    let stream = stream_name(common);
    let mut admin = connect(common).await?;
    admin.create_stream(&stream).await?;
    let sampler = common.broker_pid.and_then(crate::procfs::Sampler::start);
    let counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("publish", counter.clone(), args.messages);
    let started = Instant::now();
    let per = args.messages / args.producers as u64;
    let mut tasks = Vec::new();
    for p in 0..args.producers {
        let count = if p == 0 {
            args.messages - per * (args.producers as u64 - 1)
        } else {
            per
        };
        let (common, stream, counter) = (common.clone(), stream.clone(), counter.clone());
        let (size, batch, in_flight) = (args.size, args.batch, args.in_flight);
        tasks.push(tokio::spawn(async move {
            produce(&common, &stream, count, size, batch, in_flight, counter).await
        }));
    }
    let mut latency = Latency::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t
            .await
            .map_err(|e| ClientError::Unexpected(e.to_string()))??;
        latency.merge(&l);
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(progress);
    let mut report = Report {
        scenario: "publish",
        broker: common.addr.to_string(),
        latency_us: latency.percentiles(),
        errors: Some(errors),
        ..Report::default()
    }
    .with_rate(args.messages, args.size, seconds);
    finish(&mut report, sampler).await;
    cleanup(admin, common, &stream).await;
    Ok(report)
}

pub(crate) async fn finish(report: &mut Report, sampler: Option<crate::procfs::Sampler>) {
    if let Some(s) = sampler {
        let (cpu, rss) = s.finish().await;
        report.broker_cpu_seconds = cpu;
        report.broker_peak_rss_bytes = Some(rss);
    }
}

pub(crate) async fn cleanup(mut admin: Client, common: &Common, stream: &str) {
    if !common.keep_stream {
        let _ = admin.delete_stream(stream).await;
    }
    let _ = admin.close().await;
}

/// Reads a subscription until `count` messages arrived, returning one credit per chunk.
/// Returns the time the first chunk arrived.
pub(crate) async fn drain(
    client: &mut Client,
    count: u64,
    counter: &AtomicU64,
    mut on_chunk: impl FnMut(&Bytes),
) -> Result<Option<Instant>> {
    let mut received = 0u64;
    let mut first = None;
    let credit = Frame::Credit(Credit {
        subscription_id: 0,
        credit: 1,
    })
    .to_bytes();
    let mut credits = BytesMut::new();
    while received < count {
        let frame = client.reader.next_raw().await?;
        match key_of(&frame) {
            keys::DELIVER => {
                first.get_or_insert_with(Instant::now);
                // key, version, subscription id, [committed chunk id if v2], chunk header.
                let skip = if frame.get(2..4) == Some(&[0, 2]) {
                    13
                } else {
                    5
                };
                let header = frame
                    .get(skip..skip + HEADER_LEN)
                    .and_then(|h| ChunkHeader::parse(h).ok())
                    .ok_or_else(|| ClientError::Unexpected("bad Deliver".into()))?;
                let n = u64::from(header.num_records);
                received += n;
                counter.fetch_add(n, Ordering::Relaxed);
                on_chunk(&frame.slice(skip..));
                credits.extend_from_slice(&credit);
                if !client.reader.has_frame() {
                    client.writer.write_raw(&mut credits).await?;
                }
            }
            keys::SUBSCRIBE_RESPONSE_KEY => {
                let code = frame
                    .get(8..10)
                    .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                if code != ResponseCode::OK.0 {
                    return Err(ClientError::Refused {
                        what: "subscribe",
                        code: ResponseCode(code),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(first)
}

/// Reads `stream` from its first message until `messages` arrived and returns how many chunks
/// they came in: how a producer's messages were batched, whatever client wrote them.
pub async fn count_chunks(common: &Common, stream: &str, messages: u64) -> Result<u64> {
    let mut c = connect(common).await?;
    c.subscribe(0, stream, OffsetSpec::First, 10).await?;
    let mut chunks = 0u64;
    drain(&mut c, messages, &AtomicU64::new(0), |_| chunks += 1).await?;
    let _ = c.close().await;
    Ok(chunks)
}

mod keys {
    pub use brook_protocol::keys::*;
    pub const SUBSCRIBE_RESPONSE_KEY: u16 = SUBSCRIBE | RESPONSE;
}

pub async fn consume(args: ConsumeArgs) -> Result<Report> {
    let common = &args.common;
    let stream = stream_name(common);
    let mut admin = connect(common).await?;
    admin.create_stream(&stream).await?;
    eprintln!(
        "consume: pre-filling {} messages (not timed)",
        args.messages
    );
    produce(
        common,
        &stream,
        args.messages,
        args.size,
        args.prefill_batch,
        args.prefill_in_flight,
        Arc::new(AtomicU64::new(0)),
    )
    .await?;

    let sampler = common.broker_pid.and_then(crate::procfs::Sampler::start);
    let counter = Arc::new(AtomicU64::new(0));
    let chunks = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        "consume",
        counter.clone(),
        args.messages * args.consumers as u64,
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.consumers {
        let (common, stream, counter) = (common.clone(), stream.clone(), counter.clone());
        let (count, credit, chunks) = (args.messages, args.credit, chunks.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&common).await?;
            c.subscribe(0, &stream, OffsetSpec::First, credit).await?;
            let first = drain(&mut c, count, &counter, |_| {
                chunks.fetch_add(1, Ordering::Relaxed);
            })
            .await?;
            let _ = c.close().await;
            Ok::<_, ClientError>(first)
        }));
    }
    let mut first = None::<Instant>;
    for t in tasks {
        let f = t
            .await
            .map_err(|e| ClientError::Unexpected(e.to_string()))??;
        first = match (first, f) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(progress);
    let mut report = Report {
        scenario: "consume",
        broker: common.addr.to_string(),
        time_to_first_ms: first.map(|f| (f - started).as_secs_f64() * 1e3),
        ..Report::default()
    }
    .with_rate(args.messages * args.consumers as u64, args.size, seconds);
    let delivered = chunks.load(Ordering::Relaxed).max(1);
    report.extra.insert(
        "messages_per_chunk",
        (args.messages * args.consumers as u64) as f64 / delivered as f64,
    );
    finish(&mut report, sampler).await;
    cleanup(admin, common, &stream).await;
    Ok(report)
}

/// e2e message body: sequence number and send time (ns since the run's epoch), then padding.
pub const E2E_HEADER: usize = 16;

pub async fn e2e(args: E2eArgs) -> Result<Report> {
    let common = &args.common;
    let stream = stream_name(common);
    let mut admin = connect(common).await?;
    admin.create_stream(&stream).await?;
    let total = args.rate * args.duration;
    if args.backlog > 0 {
        crate::catch_up::prefill(common, &stream, &args).await?;
    }
    let epoch = Instant::now();

    // The consumer attaches at `next` before anything is published.
    let mut consumer = connect(common).await?;
    consumer.subscribe(0, &stream, OffsetSpec::Next, 10).await?;
    match consumer.reader.next().await? {
        Frame::SubscribeResponse(r) if r.code.is_ok() => {}
        other => return Err(ClientError::Unexpected(format!("{other:?}"))),
    }
    let counter = Arc::new(AtomicU64::new(0));
    let c2 = counter.clone();
    let receive = tokio::spawn(async move {
        let mut latency = Latency::new();
        let mut seen = vec![false; total as usize];
        let mut duplicates = 0u64;
        let result = tokio::time::timeout(
            Duration::from_secs(args.duration + 30),
            drain(&mut consumer, total, &c2, |chunk| {
                let now = epoch.elapsed().as_nanos() as u64;
                let Some(data) = chunk.get(HEADER_LEN..) else {
                    return;
                };
                for entry in entries(data).flatten() {
                    if let brook_protocol::chunk::Entry::Simple(mut body) = entry
                        && body.len() >= E2E_HEADER
                    {
                        let seq = body.get_u64();
                        let sent = body.get_u64();
                        latency.record_nanos(now.saturating_sub(sent));
                        match seen.get_mut(seq as usize) {
                            Some(s) if *s => duplicates += 1,
                            Some(s) => *s = true,
                            None => duplicates += 1,
                        }
                    }
                }
            }),
        )
        .await;
        let _ = consumer.close().await;
        let unique = seen.iter().filter(|s| **s).count() as u64;
        (latency, unique, duplicates, result.is_ok())
    });

    let sampler = common.broker_pid.and_then(crate::procfs::Sampler::start);
    let catch_up = match args.backlog {
        0 => None,
        n => Some(crate::catch_up::CatchUp::start(common, &stream, n).await?),
    };
    let progress = Progress::start("e2e", counter.clone(), total);
    let mut producer = connect(common).await?;
    producer.declare_publisher(0, &stream).await?;
    let Client {
        mut reader,
        mut writer,
        ..
    } = producer;
    let confirms = tokio::spawn(async move {
        let mut confirmed = 0u64;
        while confirmed < total {
            match reader.next_raw().await {
                Ok(frame) if key_of(&frame) == keys::PUBLISH_CONFIRM => {
                    confirmed += confirmed_ids(frame.get(4..).unwrap_or_default()).count() as u64;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        confirmed
    });
    // A fixed rate: every millisecond, whatever is due since the start.
    let started = Instant::now();
    let mut sent = 0u64;
    let mut buf = BytesMut::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * args.rate as f64) as u64).min(total);
        while sent < due {
            let n = (due - sent).min(1000) as usize;
            let size = args.size;
            encode_publish(&mut buf, sent, n, size, |id, b| {
                b.put_u64(id);
                b.put_u64(epoch.elapsed().as_nanos() as u64);
                b.put_bytes(b'x', size - E2E_HEADER);
            });
            sent += n as u64;
        }
        writer.write_raw(&mut buf).await?;
    }
    let (latency, unique, duplicates, completed) = receive
        .await
        .map_err(|e| ClientError::Unexpected(e.to_string()))?;
    let seconds = started.elapsed().as_secs_f64();
    confirms.abort();
    drop(progress);
    let mut report = Report {
        scenario: "e2e",
        broker: common.addr.to_string(),
        latency_us: latency.percentiles(),
        exactly_once: Some(completed && unique == total && duplicates == 0),
        ..Report::default()
    }
    .with_rate(total, args.size, seconds);
    if let Some(catch_up) = catch_up {
        catch_up.finish(&mut report).await;
    }
    finish(&mut report, sampler).await;
    cleanup(admin, common, &stream).await;
    Ok(report)
}

pub async fn track(args: TrackArgs) -> Result<Report> {
    let common = &args.common;
    let stream = stream_name(common);
    let mut c = connect(common).await?;
    c.create_stream(&stream).await?;
    let sampler = common.broker_pid.and_then(crate::procfs::Sampler::start);
    let mut latency = Latency::new();
    let mut mismatches = 0u64;
    let started = Instant::now();
    for i in 0..args.count {
        let t = Instant::now();
        c.writer.queue(&Frame::StoreOffset(StoreOffset {
            reference: "brook-bench".into(),
            stream: stream.clone(),
            offset: i,
        }));
        let corr = c.next_corr();
        let r = c
            .request(Frame::QueryOffset(QueryOffset {
                correlation_id: corr,
                reference: "brook-bench".into(),
                stream: stream.clone(),
            }))
            .await?;
        latency.record_nanos(t.elapsed().as_nanos() as u64);
        match r {
            Frame::QueryOffsetResponse(r) if r.code.is_ok() && r.offset == i => {}
            _ => mismatches += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut report = Report {
        scenario: "track",
        broker: common.addr.to_string(),
        latency_us: latency.percentiles(),
        errors: Some(mismatches),
        ..Report::default()
    }
    .with_rate(args.count, 0, seconds);
    finish(&mut report, sampler).await;
    cleanup(c, common, &stream).await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_encoded_frames_match_the_codec() {
        let mut buf = BytesMut::new();
        encode_publish(&mut buf, 7, 3, 2, |id, b| b.put_slice(&[id as u8, 0xff]));
        let Frame::Publish(p) = Frame::decode(buf.freeze().slice(4..)).unwrap() else {
            panic!()
        };
        let ids: Vec<u64> = p.entries().map(|e| e.publishing_id).collect();
        assert_eq!(ids, [7, 8, 9]);
        assert_eq!(p.entries().nth(1).unwrap().raw, &[0, 0, 0, 2, 8, 0xff]);

        let confirm = Frame::PublishConfirm(PublishConfirm {
            publisher_id: 0,
            publishing_ids: vec![4, 5, 6],
        })
        .to_bytes();
        assert_eq!(key_of(&confirm.slice(4..)), keys::PUBLISH_CONFIRM);
        assert_eq!(confirmed_ids(&confirm[8..]).collect::<Vec<_>>(), [4, 5, 6]);
    }
}
