//! RabbitMQ's Offset Tracking tutorial, run with the tutorial programs in `examples/` (the
//! official Rust client) against a real brook, restarting the broker between steps.
#![allow(clippy::unwrap_used)]

mod common;

#[path = "../examples/offset_tracking_receive.rs"]
#[allow(dead_code)]
mod receive;

use std::time::Duration;

use common::{Output, TestBroker};
use futures::StreamExt;
use rabbitmq_stream_client::Environment;
use rabbitmq_stream_client::types::OffsetSpecification;
use receive::{Mode, Target};

const TIMEOUT: Duration = Duration::from_secs(30);

fn target(broker: &TestBroker) -> Target {
    Target {
        host: "127.0.0.1".into(),
        port: broker.port(),
        stream: "stream-offset-tracking-rust".into(),
    }
}

async fn send(broker: &TestBroker) -> Vec<String> {
    let out = Output::default();
    let mut w = out.clone();
    tokio::time::timeout(TIMEOUT, receive::send::run(&target(broker), &mut w))
        .await
        .expect("send timed out")
        .unwrap();
    out.lines()
}

async fn receive(broker: &TestBroker, mode: Mode) -> Vec<String> {
    let out = Output::default();
    let mut w = out.clone();
    tokio::time::timeout(TIMEOUT, receive::run(&target(broker), mode, &mut w))
        .await
        .expect("receive timed out")
        .unwrap();
    out.lines()
}

fn consumed(first: u64, last: u64) -> Vec<String> {
    vec![
        "Started consuming...".into(),
        "First message received.".into(),
        format!("Done consuming, first offset {first}, last offset {last}."),
    ]
}

fn published() -> Vec<String> {
    vec![
        "Publishing 100 messages".into(),
        "Messages confirmed".into(),
    ]
}

/// Every user message in the stream, in order, read with the official client from `first`.
async fn all_messages(broker: &TestBroker, expected: usize) -> Vec<(u64, Vec<u8>)> {
    let env = Environment::builder()
        .host("127.0.0.1")
        .port(broker.port())
        .build()
        .await
        .unwrap();
    let mut consumer = env
        .consumer()
        .offset(OffsetSpecification::First)
        .build("stream-offset-tracking-rust")
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < expected {
        let d = tokio::time::timeout(TIMEOUT, consumer.next())
            .await
            .expect("messages missing")
            .unwrap()
            .unwrap();
        out.push((d.offset(), d.message().data().unwrap().to_vec()));
    }
    consumer.handle().close().await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_tracking_tutorial_with_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = TestBroker::start(dir.path()).await;

    assert_eq!(send(&broker).await, published());
    assert_eq!(receive(&broker, Mode::First).await, consumed(0, 99));
    broker = broker.restart().await;
    assert_eq!(receive(&broker, Mode::Offset(42)).await, consumed(42, 99));

    // `next` sees nothing until the sender runs again.
    let out = Output::default();
    let mut w = out.clone();
    let t = target(&broker);
    let next = tokio::spawn(async move { receive::run(&t, Mode::Next, &mut w).await.unwrap() });
    out.wait_for("Started consuming...").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(out.lines(), vec!["Started consuming...".to_string()]);
    assert_eq!(send(&broker).await, published());
    tokio::time::timeout(TIMEOUT, next).await.unwrap().unwrap();
    assert_eq!(out.lines(), consumed(100, 199));

    broker = broker.restart().await;
    // Server-side offset tracking: the first run starts at `first` and stores its offsets...
    assert_eq!(receive(&broker, Mode::Tracking).await, consumed(0, 99));
    broker = broker.restart().await;
    // ...the second resumes right after the stored offset, across a restart.
    assert_eq!(receive(&broker, Mode::Tracking).await, consumed(100, 199));

    // Nothing confirmed went missing across three restarts: 200 messages, in order, once.
    broker = broker.restart().await;
    let messages = all_messages(&broker, 200).await;
    let offsets: Vec<u64> = messages.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (0..200).collect::<Vec<u64>>());
    for (offset, body) in &messages {
        let expected: &[u8] = if offset % 100 == 99 {
            b"marker"
        } else {
            b"hello"
        };
        assert_eq!(body, expected, "offset {offset}");
    }
    broker.stop().await;
}

fn target_at(port: u16) -> Target {
    Target {
        host: "127.0.0.1".into(),
        port,
        stream: "stream-offset-tracking-rust".into(),
    }
}

async fn receive_at(port: u16, mode: Mode) -> Vec<String> {
    let out = Output::default();
    let mut w = out.clone();
    tokio::time::timeout(TIMEOUT, receive::run(&target_at(port), mode, &mut w))
        .await
        .expect("receive timed out")
        .unwrap();
    out.lines()
}

/// The tutorial against a 3-node cluster (issue #13), each step through another node: the
/// stream is replicated, consumers read from replicas, and offsets stored through a replica
/// reach the leader's log and come back on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_tracking_tutorial_through_every_node_of_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (_ports, brooks) = common::cluster::three_nodes(dir.path()).await;
    let port = |i: usize| brooks[i].as_ref().unwrap().addr.port();

    let out = Output::default();
    let mut w = out.clone();
    tokio::time::timeout(TIMEOUT, receive::send::run(&target_at(port(0)), &mut w))
        .await
        .expect("send timed out")
        .unwrap();
    assert_eq!(out.lines(), published());
    assert_eq!(receive_at(port(1), Mode::First).await, consumed(0, 99));
    assert_eq!(
        receive_at(port(2), Mode::Offset(42)).await,
        consumed(42, 99)
    );
    let out = Output::default();
    let mut w = out.clone();
    tokio::time::timeout(TIMEOUT, receive::send::run(&target_at(port(2)), &mut w))
        .await
        .expect("send timed out")
        .unwrap();
    assert_eq!(out.lines(), published());
    assert_eq!(receive_at(port(1), Mode::Tracking).await, consumed(0, 99));
    // The offset was stored through a replica, which passes it to the leader, as RabbitMQ's
    // replicas do, after the client has moved on: wait until the leader has it (what a
    // restarting consumer reads next).
    let leader_http = brooks[0].as_ref().unwrap().http_addr();
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let path = "/api/stream/tracking/%2F/stream-offset-tracking-rust";
        let r = common::http::get(leader_http, path, common::http::GUEST).await;
        let stored = r
            .json()
            .as_array()
            .into_iter()
            .flatten()
            .any(|row| row["type"] == "offset" && row["tracking_value"].as_u64() == Some(99));
        if stored {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}\n{}",
            r.body,
            common::cluster::logs(&brooks)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        receive_at(port(0), Mode::Tracking).await,
        consumed(100, 199)
    );
}
