//! Issue #9 against real brooks: a client that never reads, damaged metadata, absurd
//! arguments, the open-files limit. (Power cuts, ENOSPC and failed fsyncs are simulated
//! deterministically in brook-broker's `stream::simulation`.)
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use brook_protocol::*;
use common::TestBroker;
use common::child::Brook;
use common::raw::Raw;
use tokio::io::AsyncWriteExt;

async fn metadata(c: &mut Raw, streams: Vec<String>) -> MetadataResponse {
    let corr = c.next_corr();
    match c
        .request(Frame::Metadata(Metadata {
            correlation_id: corr,
            streams,
        }))
        .await
    {
        Frame::MetadataResponse(r) => r,
        other => panic!("{other:?}"),
    }
}

/// Hole 1: a client pipelining Metadata requests (100 long unknown names each) as fast as the
/// socket takes them, reading nothing. Before the fix brook's RSS grew 3.8 GB in 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_cannot_grow_memory() {
    let dir = tempfile::tempdir().unwrap();
    let brook = Brook::start(dir.path(), &[]);
    let mut other = Raw::open(brook.addr).await;
    for _ in 0..20 {
        metadata(&mut other, vec!["warm-up".into()]).await;
    }
    let baseline = brook.rss_kib();

    // The attacker asks for 2 s heartbeats: its stall timeout is 6 s.
    let mut attacker = Raw::connect(brook.addr).await;
    attacker.handshake_until_tune("guest", "guest").await;
    attacker
        .send(Frame::Tune(Tune {
            frame_max: 1_048_576,
            heartbeat: 2,
        }))
        .await;
    let r = attacker
        .request(Frame::Open(Open {
            correlation_id: 1,
            vhost: "/".into(),
        }))
        .await;
    assert!(
        matches!(r, Frame::OpenResponse(ref o) if o.code.is_ok()),
        "{r:?}"
    );
    let names = (0..100).map(|i| format!("{i:0>250}")).collect();
    let request = Frame::Metadata(Metadata {
        correlation_id: 9,
        streams: names,
    })
    .to_bytes();
    let (_unread, mut wr) = attacker.stream.into_split();
    let attack = tokio::spawn(async move {
        let mut sent = 0u64;
        loop {
            match tokio::time::timeout(Duration::from_secs(60), wr.write_all(&request)).await {
                Ok(Ok(())) => sent += 1,
                Ok(Err(_)) => return (sent, Instant::now()),
                Err(_) => panic!("brook neither read nor closed for 60 s"),
            }
        }
    });

    let (mut peak, mut slowest) = (baseline, Duration::ZERO);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        let t = Instant::now();
        let r = metadata(&mut other, vec!["other".into()]).await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.streams[0].code, ResponseCode::STREAM_DOES_NOT_EXIST);
        peak = peak.max(brook.rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let growth_mib = (peak - baseline) as f64 / 1024.0;
    println!(
        "baseline RSS {} MiB, growth under attack {growth_mib:.1} MiB, slowest other request {slowest:?}",
        baseline / 1024
    );
    assert!(growth_mib < 64.0, "RSS grew {growth_mib:.1} MiB");
    assert!(slowest < Duration::from_millis(100), "{slowest:?}");
    // Its socket accepts nothing, so brook closes the connection after the stall timeout.
    let (sent, closed_at) = attack.await.unwrap();
    println!(
        "attacker sent {sent} requests ({} MiB), disconnected {:?} after the attack began",
        sent * 25_000 / (1 << 20),
        closed_at - started
    );
    assert!(brook.logged("has not read its socket"));
    // And the other client was never disturbed.
    metadata(&mut other, vec!["other".into()]).await;
}

/// Every file of a directory with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn stream_dir(data: &Path, name: &str) -> PathBuf {
    std::fs::read_dir(data.join("streams"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let meta = std::fs::read(p.join("stream.json")).unwrap_or_default();
            String::from_utf8_lossy(&meta).contains(&format!("\"name\": \"{name}\""))
        })
        .unwrap()
}

async fn publish_some(broker: &TestBroker, stream: &str, n: u64) {
    let mut c = Raw::open(broker.addr).await;
    assert_eq!(c.create(stream, &[]).await, ResponseCode::OK);
    let r = c
        .request(Frame::DeclarePublisher(DeclarePublisher {
            correlation_id: 1,
            publisher_id: 0,
            reference: "p".into(),
            stream: stream.into(),
        }))
        .await;
    assert!(matches!(r, Frame::DeclarePublisherResponse(ref r) if r.code.is_ok()));
    let mut b = PublishBuilder::new(0);
    for id in 0..n {
        b.message(id, format!("{stream}-{id}").as_bytes());
    }
    c.send(Frame::Publish(b.build())).await;
    let mut confirmed = 0;
    while confirmed < n {
        match c.recv().await.unwrap() {
            Frame::PublishConfirm(p) => confirmed += p.publishing_ids.len() as u64,
            other => panic!("{other:?}"),
        }
    }
}

/// Hole 2: a damaged `stream.json` used to make the next start remove the stream with all its
/// segments. Now: the other copy is used; with both damaged the stream is unavailable, its
/// files untouched, and every other stream served.
#[tokio::test]
async fn damaged_metadata_never_costs_data() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    publish_some(&broker, "orders", 100).await;
    publish_some(&broker, "other", 10).await;
    let data = broker.stop().await;
    let orders = stream_dir(&data, "orders");
    let meta = std::fs::read(orders.join("stream.json")).unwrap();

    // One copy torn: served from the other.
    std::fs::write(orders.join("stream.json"), &meta[..meta.len() / 2]).unwrap();
    let broker = TestBroker::start(&data).await;
    assert!(broker.broker.unavailable_streams().is_empty());
    let stats = broker.broker.stream_stats("/", "orders").unwrap();
    assert_eq!(stats.next_offset, 100);
    let data = broker.stop().await;
    assert_eq!(std::fs::read(orders.join("stream.json")).unwrap(), meta);

    // Both torn, then both gone: unavailable, every byte kept, the other stream served.
    for damage in ["torn", "missing"] {
        let before = snapshot(&orders);
        for file in ["stream.json", "stream.json.bak"] {
            let path = orders.join(file);
            if damage == "torn" {
                std::fs::write(&path, &meta[..10]).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
        let damaged = snapshot(&orders);
        let broker = TestBroker::start(&data).await;
        let unavailable = broker.broker.unavailable_streams();
        assert_eq!(unavailable.len(), 1, "{damage}: {unavailable:?}");
        assert_eq!(unavailable[0].name, "orders");
        let mut c = Raw::open(broker.addr).await;
        let r = metadata(&mut c, vec!["orders".into(), "other".into()]).await;
        assert_eq!(
            r.streams[0].code,
            ResponseCode::STREAM_NOT_AVAILABLE,
            "{damage}"
        );
        assert_eq!(r.streams[1].code, ResponseCode::OK);
        // A create cannot shadow it.
        assert_ne!(c.create("orders", &[]).await, ResponseCode::OK);
        publish_some_more(&mut c, "other").await;
        broker.stop().await;
        assert_eq!(snapshot(&orders), damaged, "{damage}: files changed");
        assert_eq!(
            before.keys().filter(|k| k.ends_with(".segment")).count(),
            damaged.keys().filter(|k| k.ends_with(".segment")).count()
        );
        // Restored by the operator: everything is back.
        std::fs::write(orders.join("stream.json"), &meta).unwrap();
        let broker = TestBroker::start(&data).await;
        assert_eq!(
            broker
                .broker
                .stream_stats("/", "orders")
                .unwrap()
                .next_offset,
            100
        );
        broker.stop().await;
    }
}

async fn publish_some_more(c: &mut Raw, stream: &str) {
    let r = c
        .request(Frame::DeclarePublisher(DeclarePublisher {
            correlation_id: 1,
            publisher_id: 7,
            reference: String::new(),
            stream: stream.into(),
        }))
        .await;
    assert!(matches!(r, Frame::DeclarePublisherResponse(ref r) if r.code.is_ok()));
    let mut b = PublishBuilder::new(7);
    b.message(1, b"more");
    c.send(Frame::Publish(b.build())).await;
    assert!(matches!(c.recv().await, Some(Frame::PublishConfirm(_))));
}

/// Hole 3: `317097920Y` was accepted, wrapped the retention cutoff into the future, and
/// retention deleted every sealed segment.
#[tokio::test]
async fn absurd_retention_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::open(broker.addr).await;
    for (key, value) in [
        ("max-age", "317097920Y"),
        ("max-age", "99999999999999999999s"),
        ("max-age", "0s"),
        ("max-length-bytes", "-1"),
        ("max-length-bytes", "18446744073709551616"),
        ("stream-max-segment-size-bytes", "3000000001"),
    ] {
        assert_eq!(
            c.create("s", &[(key, value)]).await,
            ResponseCode::PRECONDITION_FAILED,
            "{key}={value}"
        );
    }
    let r = metadata(&mut c, vec!["s".into()]).await;
    assert_eq!(r.streams[0].code, ResponseCode::STREAM_DOES_NOT_EXIST);
    // The largest age that fits is taken, and keeps everything.
    assert_eq!(
        c.create("s", &[("max-age", "292471208Y")]).await,
        ResponseCode::OK
    );
}

/// Hole 6: two descriptors per stream; under a soft limit of 128 a restart with 120 streams
/// failed. brook raises the soft limit to the hard one.
#[tokio::test]
async fn the_open_files_limit_is_raised() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..120).map(|i| format!("s{i}")).collect();
    for restart in [false, true] {
        let brook = Brook::start_with_nofile(dir.path(), 128, &[]);
        assert!(brook.nofile_soft() > 128, "{}", brook.nofile_soft());
        let mut c = Raw::open(brook.addr).await;
        if !restart {
            for name in &names {
                assert_eq!(c.create(name, &[]).await, ResponseCode::OK);
            }
        }
        let r = metadata(&mut c, names.clone()).await;
        assert!(
            r.streams.iter().all(|s| s.code.is_ok()),
            "restart {restart}"
        );
        brook.kill();
    }
}
