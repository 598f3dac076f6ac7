//! Prometheus metrics: RabbitMQ's names and label sets (against RabbitMQ 3.10.8's own
//! exposition), the values after a known workload, and a scrape with 1,000 streams.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use brook_protocol::*;
use common::TestBroker;
use common::http;
use common::prom::{self, Sample, value};
use common::raw::Raw;

async fn scrape(addr: SocketAddr, path: &str) -> Vec<Sample> {
    let r = http::get(addr, path, None).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    prom::parse(&r.body)
}

async fn publish(c: &mut Raw, ids: std::ops::RangeInclusive<u64>) {
    let n = ids.clone().count();
    let mut b = PublishBuilder::new(0);
    for id in ids {
        b.message(id, format!("m{id}").as_bytes());
    }
    c.send(Frame::Publish(b.build())).await;
    let mut confirmed = 0;
    while confirmed < n {
        match c.recv().await.unwrap() {
            Frame::PublishConfirm(pc) => confirmed += pc.publishing_ids.len(),
            other => panic!("{other:?}"),
        }
    }
}

/// 1,000 messages from a named publisher, 10 of them sent again; a named consumer that stored
/// offset 499 and went away; one error. The metrics say exactly that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_values_after_a_known_workload() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::open(broker.addr).await;
    assert_eq!(c.create("s", &[]).await, ResponseCode::OK);
    assert_eq!(
        c.create("s", &[]).await,
        ResponseCode::STREAM_ALREADY_EXISTS
    );
    let r = c
        .request(Frame::DeclarePublisher(DeclarePublisher {
            correlation_id: 1,
            publisher_id: 0,
            reference: "app".into(),
            stream: "s".into(),
        }))
        .await;
    assert!(matches!(r, Frame::DeclarePublisherResponse(ref d) if d.code.is_ok()));
    for batch in 0..10u64 {
        publish(&mut c, batch * 100 + 1..=batch * 100 + 100).await;
    }
    publish(&mut c, 991..=1000).await; // duplicates: confirmed, not stored
    let mut reader = Raw::open(broker.addr).await;
    reader
        .send(Frame::StoreOffset(StoreOffset {
            reference: "reader".into(),
            stream: "s".into(),
            offset: 499,
        }))
        .await;
    // Answered after the stored offset is taken (one writer per stream, in order).
    let r = reader
        .request(Frame::QueryOffset(QueryOffset {
            correlation_id: 3,
            reference: "reader".into(),
            stream: "s".into(),
        }))
        .await;
    assert!(matches!(r, Frame::QueryOffsetResponse(ref q) if q.offset == 499));
    drop(reader);

    let m = scrape(broker.http_addr, "/metrics").await;
    let stream = [("protocol", "stream")];
    assert_eq!(
        value(&m, "rabbitmq_global_messages_received_total", &stream),
        Some(1010.0)
    );
    assert_eq!(
        value(&m, "rabbitmq_global_messages_confirmed_total", &stream),
        Some(1010.0)
    );
    assert_eq!(value(&m, "rabbitmq_global_publishers", &stream), Some(1.0));
    assert_eq!(
        value(
            &m,
            "rabbitmq_global_stream_error_stream_already_exists_total",
            &stream
        ),
        Some(1.0)
    );
    let s = [("vhost", "/"), ("stream", "s")];
    let app = [("vhost", "/"), ("stream", "s"), ("reference", "app")];
    assert_eq!(
        value(&m, "brook_publisher_published_total", &app),
        Some(1010.0)
    );
    assert_eq!(
        value(&m, "brook_publisher_deduplicated_total", &app),
        Some(10.0)
    );
    assert_eq!(
        value(&m, "brook_messages_deduplicated_total", &[]),
        Some(10.0)
    );
    assert_eq!(
        value(&m, "brook_publisher_last_publishing_id", &app),
        Some(1000.0)
    );
    // The consumer is gone; its stored offset and lag are still there. The log holds 1,000
    // messages at offsets 0..999 plus the tracking chunk(s) the stored offset took.
    let reader = [("vhost", "/"), ("stream", "s"), ("reference", "reader")];
    assert_eq!(
        value(&m, "brook_consumer_stored_offset", &reader),
        Some(499.0)
    );
    let lag = value(&m, "brook_consumer_stored_offset_lag", &reader).unwrap();
    assert!((500.0..=502.0).contains(&lag), "lag {lag}");
    let last = value(&m, "brook_stream_committed_offset", &s).unwrap();
    assert_eq!(lag, last - 499.0);
    assert_eq!(value(&m, "brook_stream_first_offset", &s), Some(0.0));
    assert!(value(&m, "brook_stream_chunks_written_total", &s).unwrap() >= 10.0);
    assert!(value(&m, "brook_publish_confirm_latency_seconds_count", &[]).unwrap() >= 11.0);
    assert_eq!(value(&m, "rabbitmq_queues", &[]), Some(1.0));

    // A subscription reading everything: delivered counts messages, not chunks.
    let mut consumer = Raw::open(broker.addr).await;
    consumer
        .send(Frame::Subscribe(Subscribe {
            correlation_id: 2,
            subscription_id: 3,
            stream: "s".into(),
            offset: OffsetSpec::First,
            credit: 1000,
            properties: None,
        }))
        .await;
    let mut delivered = 0;
    while delivered < 1000 {
        if let Frame::Deliver(d) = consumer.recv().await.unwrap() {
            delivered += d.chunk().unwrap().records().count();
        }
    }
    let m = scrape(broker.http_addr, "/metrics").await;
    let delivered_labels = [
        ("protocol", "stream"),
        ("queue_type", "rabbit_stream_queue"),
    ];
    assert_eq!(
        value(
            &m,
            "rabbitmq_global_messages_delivered_total",
            &delivered_labels
        ),
        Some(1000.0)
    );
    assert_eq!(value(&m, "rabbitmq_global_consumers", &stream), Some(1.0));
    let sub = [("stream", "s"), ("subscription_id", "3")];
    assert_eq!(
        value(&m, "brook_consumer_delivered_total", &sub),
        Some(1000.0)
    );

    // RabbitMQ's per-queue families.
    let q = [("vhost", "/"), ("queue", "s")];
    let detailed = scrape(
        broker.http_addr,
        "/metrics/detailed?family=queue_coarse_metrics&family=queue_consumer_count",
    )
    .await;
    assert_eq!(
        value(&detailed, "rabbitmq_detailed_queue_messages", &q),
        Some(last + 1.0)
    );
    assert_eq!(
        value(&detailed, "rabbitmq_detailed_queue_consumers", &q),
        Some(1.0)
    );
    let per_object = scrape(broker.http_addr, "/metrics/per-object").await;
    assert_eq!(
        value(&per_object, "rabbitmq_queue_messages_ready", &q),
        Some(last + 1.0)
    );
}

fn golden(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/rabbitmq-3.10.8-management")
        .join(file);
    std::fs::read_to_string(path).unwrap()
}

/// Name → label-name sets, of the samples whose labels select the stream protocol (or carry
/// none of RabbitMQ's protocol labels at all).
fn label_sets(samples: &[Sample]) -> BTreeMap<String, BTreeSet<Vec<String>>> {
    let mut out: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
    for s in samples {
        if s.labels.get("protocol").is_some_and(|p| p != "stream") {
            continue;
        }
        out.entry(s.name.clone())
            .or_default()
            .insert(s.labels.keys().cloned().collect());
    }
    out
}

/// Every `rabbitmq_global_*` series RabbitMQ 3.10.8 exposes for the stream protocol, the
/// identity the dashboards join on, and the node totals they read: brook has each, with the
/// same label names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_names_and_label_sets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let theirs = label_sets(&prom::parse(&golden("prometheus-metrics.txt")));
    let ours = label_sets(&scrape(broker.http_addr, "/metrics").await);
    let wanted = theirs.iter().filter(|(name, sets)| {
        let global = name.starts_with("rabbitmq_global_")
            && sets.iter().any(|l| l.contains(&"protocol".to_string()));
        let dashboards = [
            "rabbitmq_identity_info",
            "rabbitmq_build_info",
            "rabbitmq_connections",
            "rabbitmq_connections_opened_total",
            "rabbitmq_connections_closed_total",
            "rabbitmq_consumers",
            "rabbitmq_queues",
            "rabbitmq_channels",
            "rabbitmq_queue_messages",
            "rabbitmq_queue_messages_ready",
            "rabbitmq_queue_messages_unacked",
            "rabbitmq_process_resident_memory_bytes",
            "rabbitmq_resident_memory_limit_bytes",
            "rabbitmq_disk_space_available_bytes",
            "rabbitmq_process_open_fds",
            "rabbitmq_process_max_fds",
        ];
        global || dashboards.contains(&name.as_str())
    });
    let mut missing = Vec::new();
    for (name, sets) in wanted {
        for set in sets {
            // The cluster's permanent id is not kept by brook (documented).
            let set: Vec<String> = set
                .iter()
                .filter(|l| {
                    !["rabbitmq_cluster_permanent_id", "erlang_version"].contains(&l.as_str())
                })
                .cloned()
                .collect();
            let has = ours
                .get(name)
                .is_some_and(|o| o.iter().any(|l| set.iter().all(|k| l.contains(k))));
            if !has {
                missing.push(format!("{name}{set:?}"));
            }
        }
    }
    assert!(missing.is_empty(), "not in brook's /metrics: {missing:#?}");
    // The stream dashboard sums all 17 error counters: each must exist from the start.
    let errors = ours
        .keys()
        .filter(|n| n.starts_with("rabbitmq_global_stream_error_"))
        .count();
    assert_eq!(errors, 17);
}

/// A stream name with characters the exposition must escape cannot break a scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let name = "we\"ird\\name} 1";
    broker.broker.create_stream("/", name, &[]).await.unwrap();
    let m = scrape(broker.http_addr, "/metrics").await;
    assert_eq!(value(&m, "brook_stream_up", &[("stream", name)]), Some(1.0));
}

/// The scrape with 1,000 streams: every stream is there. The time is printed (the benchmark
/// in docs/BENCHMARKS.md records it for a release build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_with_1000_streams() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    for i in 0..1000 {
        broker
            .broker
            .create_stream("/", &format!("s-{i:04}"), &[])
            .await
            .unwrap();
    }
    let started = Instant::now();
    let r = http::get(broker.http_addr, "/metrics", None).await;
    let took = started.elapsed();
    let samples = prom::parse(&r.body);
    let streams = samples
        .iter()
        .filter(|s| s.name == "brook_stream_bytes")
        .count();
    assert_eq!(streams, 1000);
    eprintln!(
        "scrape of 1,000 streams: {} samples, {} bytes, {took:?} (debug build)",
        samples.len(),
        r.body.len()
    );
}
