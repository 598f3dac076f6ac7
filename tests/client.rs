//! The official Rust client (`rabbitmq-stream-client` 0.11) against a real brook: environment,
//! named and unnamed producers with deduplication, consumers at every offset specification.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestBroker;
use futures::StreamExt;
use rabbitmq_stream_client::error::StreamCreateError;
use rabbitmq_stream_client::types::{Message, OffsetSpecification, ResponseCode};
use rabbitmq_stream_client::{Consumer, Environment};

const T: Duration = Duration::from_secs(20);

async fn env(broker: &TestBroker) -> Environment {
    Environment::builder()
        .host("127.0.0.1")
        .port(broker.port())
        .build()
        .await
        .unwrap()
}

async fn next_message(consumer: &mut Consumer) -> (u64, String) {
    let d = tokio::time::timeout(T, consumer.next())
        .await
        .expect("a message")
        .unwrap()
        .unwrap();
    (
        d.offset(),
        String::from_utf8(d.message().data().unwrap().to_vec()).unwrap(),
    )
}

/// Sends one message and waits for its confirm (works for named and unnamed producers).
macro_rules! publish_one {
    ($producer:expr, $body:expr) => {{
        let status = $producer
            .send_with_confirm(Message::builder().body($body).build())
            .await
            .unwrap();
        assert!(status.confirmed());
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_creation_answers_like_rabbitmq() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let env = env(&broker).await;
    env.stream_creator().create("s").await.unwrap();
    // Same arguments (the client always sends least-leaders): 0x05, which apps ignore.
    let again = env.stream_creator().create("s").await;
    assert!(matches!(
        again,
        Err(StreamCreateError::Create {
            status: ResponseCode::StreamAlreadyExists,
            ..
        })
    ));
    env.delete_stream("s").await.unwrap();
    assert!(env.delete_stream("s").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_producer_deduplicates_and_confirms_duplicates_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let env = env(&broker).await;
    env.stream_creator().create("dedup").await.unwrap();
    let mut producer = env.producer().name("p1").build("dedup").await.unwrap();
    // Publishing ids 0, 0, 1, 1: two messages stored, every send confirmed.
    for (id, body) in [(0, "a"), (0, "a-again"), (1, "b"), (1, "b-again")] {
        let msg = Message::builder().body(body).publishing_id(id).build();
        let status = producer.send_with_confirm(msg).await.unwrap();
        assert!(
            status.confirmed(),
            "publishing id {id} must be confirmed, not errored"
        );
    }
    producer.close().await.unwrap();

    let broker = broker.restart().await;
    let env = self::env(&broker).await;
    // The sequence survived the restart: the client resumes after it, and a replay of old ids
    // is confirmed without being stored.
    let mut producer = env.producer().name("p1").build("dedup").await.unwrap();
    let msg = Message::builder()
        .body("b-replayed")
        .publishing_id(1)
        .build();
    assert!(producer.send_with_confirm(msg).await.unwrap().confirmed());
    publish_one!(producer, "c");
    producer.close().await.unwrap();

    let mut consumer = env
        .consumer()
        .offset(OffsetSpecification::First)
        .build("dedup")
        .await
        .unwrap();
    let mut bodies = Vec::new();
    for _ in 0..3 {
        bodies.push(next_message(&mut consumer).await.1);
    }
    assert_eq!(bodies, ["a", "b", "c"]);
    let extra = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
    assert!(extra.is_err(), "nothing else was stored: {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_producers_do_not_deduplicate() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let env = env(&broker).await;
    env.stream_creator().create("plain").await.unwrap();
    for _ in 0..2 {
        let producer = env.producer().build("plain").await.unwrap();
        publish_one!(producer, "x");
        producer.close().await.unwrap();
    }
    let mut consumer = env
        .consumer()
        .offset(OffsetSpecification::First)
        .build("plain")
        .await
        .unwrap();
    assert_eq!(next_message(&mut consumer).await, (0, "x".into()));
    assert_eq!(next_message(&mut consumer).await, (1, "x".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_attach_at_every_offset_spec() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let env = env(&broker).await;
    env.stream_creator().create("specs").await.unwrap();
    let producer = env.producer().build("specs").await.unwrap();
    // One message per chunk (each send waits for its confirm), offsets 0..5.
    for i in 0..3 {
        publish_one!(producer, format!("m{i}"));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = chrono_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 3..6 {
        publish_one!(producer, format!("m{i}"));
    }
    let consumer = |spec| {
        let env = env.clone();
        async move { env.consumer().offset(spec).build("specs").await.unwrap() }
    };

    let mut first = consumer(OffsetSpecification::First).await;
    assert_eq!(next_message(&mut first).await, (0, "m0".into()));
    let mut last = consumer(OffsetSpecification::Last).await;
    assert_eq!(next_message(&mut last).await, (5, "m5".into()));
    // The client drops offsets below N from the first chunk; here chunks hold one message.
    let mut offset = consumer(OffsetSpecification::Offset(4)).await;
    assert_eq!(next_message(&mut offset).await, (4, "m4".into()));
    let mut timestamp = consumer(OffsetSpecification::Timestamp(between)).await;
    assert_eq!(next_message(&mut timestamp).await, (3, "m3".into()));
    let mut next = consumer(OffsetSpecification::Next).await;
    let nothing = tokio::time::timeout(Duration::from_millis(200), next.next()).await;
    assert!(nothing.is_err(), "`next` delivers only new messages");
    publish_one!(producer, "m6");
    assert_eq!(next_message(&mut next).await, (6, "m6".into()));
    // Everyone else sees it too, in order.
    assert_eq!(next_message(&mut first).await, (1, "m1".into()));
    assert_eq!(next_message(&mut last).await, (6, "m6".into()));
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_with_batching_client() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let env = env(&broker).await;
    env.stream_creator().create("bulk").await.unwrap();
    let producer = env.producer().batch_size(500).build("bulk").await.unwrap();
    let total = 20_000u64;
    let messages: Vec<Message> = (0..total)
        .map(|i| Message::builder().body(i.to_string()).build())
        .collect();
    for batch in messages.chunks(1000) {
        let statuses = producer
            .batch_send_with_confirm(batch.to_vec())
            .await
            .unwrap();
        assert!(statuses.iter().all(|s| s.confirmed()));
    }
    // Closed explicitly: the client's Drop closes with `futures::executor::block_on` on this
    // thread, which spins forever when tokio's cooperative budget of the thread is spent (as
    // after the 20,000 polls of the loop below). A client bug, not a broker one.
    producer.close().await.unwrap();
    let mut consumer = env
        .consumer()
        .offset(OffsetSpecification::First)
        .build("bulk")
        .await
        .unwrap();
    for i in 0..total {
        assert_eq!(next_message(&mut consumer).await, (i, i.to_string()));
    }
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
