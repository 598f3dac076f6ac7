//! StreamStats (issue #15) with raw frames: the keys RabbitMQ 3.12–4.2 return (osiris's
//! `get_stats`), every key present, -1 for "none yet". (The official Rust client 0.11 has no
//! StreamStats call; the Go client's `LastOffset()` reads `last_chunk_id`.)
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use brook_broker::BrokerConfig;
use brook_protocol::*;
use common::raw::Raw;
use common::{TestBroker, test_server_config};

async fn stats(c: &mut Raw, stream: &str) -> (ResponseCode, BTreeMap<String, i64>) {
    let corr = c.next_corr();
    let r = c
        .request(Frame::StreamStats(StreamStats {
            correlation_id: corr,
            stream: stream.into(),
        }))
        .await;
    let Frame::StreamStatsResponse(r) = r else {
        panic!("{r:?}")
    };
    (r.code, r.stats.into_iter().collect())
}

fn expect(first: i64, committed: i64, last: i64) -> BTreeMap<String, i64> {
    [
        ("committed_chunk_id", committed),
        ("first_chunk_id", first),
        ("last_chunk_id", last),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn publish(c: &mut Raw, first_id: u64, n: u64, size: usize) {
    let mut b = PublishBuilder::new(0);
    for id in first_id..first_id + n {
        b.message(id, &vec![b'x'; size]);
    }
    c.send(Frame::Publish(b.build())).await;
    let mut confirmed = 0;
    while confirmed < n {
        let Some(Frame::PublishConfirm(p)) = c.recv().await else {
            panic!("no confirm")
        };
        confirmed += p.publishing_ids.len() as u64;
    }
}

async fn declare(c: &mut Raw, stream: &str) {
    let r = c
        .request(Frame::DeclarePublisher(DeclarePublisher {
            correlation_id: 1,
            publisher_id: 0,
            reference: String::new(),
            stream: stream.into(),
        }))
        .await;
    assert!(matches!(r, Frame::DeclarePublisherResponse(ref r) if r.code.is_ok()));
}

#[tokio::test]
async fn stream_stats_reports_first_committed_and_last_chunk_ids() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::open(broker.addr).await;

    let (code, s) = stats(&mut c, "missing").await;
    assert_eq!(code, ResponseCode::STREAM_DOES_NOT_EXIST);
    assert!(s.is_empty());

    assert_eq!(c.create("s", &[]).await, ResponseCode::OK);
    assert_eq!(
        stats(&mut c, "s").await,
        (ResponseCode::OK, expect(-1, -1, -1))
    );

    declare(&mut c, "s").await;
    // Three chunks of 10 messages: ids 0, 10, 20.
    for i in 0..3 {
        publish(&mut c, i * 10, 10, 10).await;
    }
    assert_eq!(stats(&mut c, "s").await.1, expect(0, 20, 20));

    // A stored offset is a chunk of its own (id 30), as in RabbitMQ.
    c.send(Frame::StoreOffset(StoreOffset {
        reference: "consumer".into(),
        stream: "s".into(),
        offset: 5,
    }))
    .await;
    let r = c
        .request(Frame::QueryOffset(QueryOffset {
            correlation_id: 9,
            reference: "consumer".into(),
            stream: "s".into(),
        }))
        .await;
    assert!(matches!(r, Frame::QueryOffsetResponse(ref r) if r.offset == 5));
    assert_eq!(stats(&mut c, "s").await.1, expect(0, 30, 30));
}

#[tokio::test]
async fn stream_stats_after_retention_trimmed_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path());
    config.retention_check_interval = std::time::Duration::from_secs(3600);
    let broker = TestBroker::start_with(config, test_server_config()).await;
    let mut c = Raw::open(broker.addr).await;
    let args = [
        ("stream-max-segment-size-bytes", "1000"),
        ("max-length-bytes", "3000"),
    ];
    assert_eq!(c.create("trimmed", &args).await, ResponseCode::OK);
    declare(&mut c, "trimmed").await;
    // 20 chunks of 500 bytes: segments roll every two chunks, retention runs at each roll.
    for i in 0..20 {
        publish(&mut c, i, 1, 500).await;
    }
    let (code, s) = stats(&mut c, "trimmed").await;
    assert_eq!(code, ResponseCode::OK);
    let first = s["first_chunk_id"];
    assert!(first > 0, "{s:?}");
    assert_eq!(s["committed_chunk_id"], s["last_chunk_id"]);
    assert!(s["last_chunk_id"] > first, "{s:?}");
    // A consumer at `first` starts where the stats say.
    let info = broker.broker.stream_stats("/", "trimmed").unwrap();
    assert_eq!(info.first_chunk_id, Some(first as u64));
}
