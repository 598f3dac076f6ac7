//! Raw-byte protocol tests against a real brook: error paths, framing, the responses the golden
//! captures show RabbitMQ giving, and that one bad connection never hurts another.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use brook_protocol::*;
use bytes::Bytes;
use common::TestBroker;
use common::raw::Raw;

/// After a failure on one connection, a fresh one still gets served.
async fn still_serving(broker: &TestBroker) {
    let mut c = Raw::open(broker.addr).await;
    let corr = c.next_corr();
    let r = c
        .request(Frame::Metadata(Metadata {
            correlation_id: corr,
            streams: vec![],
        }))
        .await;
    assert!(matches!(r, Frame::MetadataResponse(_)), "{r:?}");
}

async fn expect_server_close(c: &mut Raw, code: ResponseCode) {
    let f = c.recv().await.expect("a Close frame");
    let Frame::Close(close) = f else {
        panic!("expected Close, got {f:?}")
    };
    assert_eq!(close.code, code);
    c.send(Frame::CloseResponse(Response {
        correlation_id: close.correlation_id,
        code: ResponseCode::OK,
    }))
    .await;
    c.expect_eof().await;
}

#[tokio::test]
async fn unknown_command_gets_close_unknown_frame() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::open(broker.addr).await;
    // Key 0x0077 does not exist.
    c.send_bytes(&[0, 0, 0, 8, 0x00, 0x77, 0, 1, 0, 0, 0, 1])
        .await;
    expect_server_close(&mut c, ResponseCode::UNKNOWN_FRAME).await;
    // A known key with an unknown version.
    let mut c = Raw::open(broker.addr).await;
    c.send_bytes(&[0, 0, 0, 4, 0x00, 0x17, 0, 9]).await;
    expect_server_close(&mut c, ResponseCode::UNKNOWN_FRAME).await;
    // While waiting for the client's answer, a frame claiming 4 GiB is not buffered: the
    // connection is drained and dropped.
    let mut c = Raw::open(broker.addr).await;
    c.send_bytes(&[0, 0, 0, 4, 0x00, 0x77, 0, 1]).await;
    let f = c.recv().await.unwrap();
    assert!(matches!(f, Frame::Close(ref close) if close.code == ResponseCode::UNKNOWN_FRAME));
    c.send_bytes(&[0xff, 0xff, 0xff, 0xff, 0, 0]).await;
    c.expect_eof().await;
    // A server-to-client command sent by the client.
    let mut c = Raw::open(broker.addr).await;
    c.send(Frame::MetadataUpdate(MetadataUpdate {
        code: ResponseCode::OK,
        stream: "x".into(),
    }))
    .await;
    expect_server_close(&mut c, ResponseCode::UNKNOWN_FRAME).await;
    still_serving(&broker).await;
}

#[tokio::test]
async fn truncated_and_trailing_bytes_get_close_unknown_frame() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    // Delete whose stream name claims 10 bytes but has 3.
    let mut c = Raw::open(broker.addr).await;
    c.send_bytes(&[
        0, 0, 0, 13, 0, 0x0e, 0, 1, 0, 0, 0, 7, 0, 10, b'a', b'b', b'c',
    ])
    .await;
    expect_server_close(&mut c, ResponseCode::UNKNOWN_FRAME).await;
    // Heartbeat with a byte too many.
    let mut c = Raw::open(broker.addr).await;
    c.send_bytes(&[0, 0, 0, 5, 0, 0x17, 0, 1, 0]).await;
    expect_server_close(&mut c, ResponseCode::UNKNOWN_FRAME).await;
    // A frame shorter than its key and version.
    let mut c = Raw::open(broker.addr).await;
    c.send_bytes(&[0, 0, 0, 1, 0]).await;
    expect_server_close(&mut c, ResponseCode::UNKNOWN_FRAME).await;
    still_serving(&broker).await;
}

#[tokio::test]
async fn frame_over_frame_max_gets_close_frame_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::open(broker.addr).await;
    // 2 MiB announced, over the negotiated 1 MiB; the body is never sent.
    c.send_bytes(&(2u32 << 20).to_be_bytes()).await;
    let f = c.recv().await.unwrap();
    assert!(
        matches!(f, Frame::Close(ref close) if close.code == ResponseCode::FRAME_TOO_LARGE),
        "{f:?}"
    );
    drop(c);
    still_serving(&broker).await;
}

#[tokio::test]
async fn bad_password_is_refused_after_a_delay() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::connect(broker.addr).await;
    let started = Instant::now();
    let r = c.handshake_until_tune("guest", "wrong-password").await;
    assert_eq!(r.code, ResponseCode::AUTHENTICATION_FAILURE);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the configured delay applies"
    );
    c.expect_eof().await;
    // An unknown user fares the same; an unsupported mechanism is refused at once.
    let mut c = Raw::connect(broker.addr).await;
    assert_eq!(
        c.handshake_until_tune("nobody", "guest").await.code,
        ResponseCode::AUTHENTICATION_FAILURE
    );
    let mut c = Raw::connect(broker.addr).await;
    let corr = c.next_corr();
    c.request(Frame::PeerProperties(PeerProperties {
        correlation_id: corr,
        properties: vec![],
    }))
    .await;
    c.request(Frame::SaslHandshake(SaslHandshake { correlation_id: 2 }))
        .await;
    let r = c
        .request(Frame::SaslAuthenticate(SaslAuthenticate {
            correlation_id: 3,
            mechanism: "SCRAM-SHA-256".into(),
            data: None,
        }))
        .await;
    assert!(
        matches!(r, Frame::SaslAuthenticateResponse(ref a) if a.code == ResponseCode::SASL_MECHANISM_NOT_SUPPORTED)
    );
    c.expect_eof().await;
    still_serving(&broker).await;
}

#[tokio::test]
async fn unknown_vhost_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::connect(broker.addr).await;
    assert!(c.handshake_until_tune("guest", "guest").await.code.is_ok());
    c.send(Frame::TuneResponse(Tune {
        frame_max: 1_048_576,
        heartbeat: 60,
    }))
    .await;
    let r = c
        .request(Frame::Open(Open {
            correlation_id: 9,
            vhost: "no-such-vhost".into(),
        }))
        .await;
    // As in error-paths.pcap conn 2: code 0x0c and no property map.
    assert_eq!(
        r,
        Frame::OpenResponse(OpenResponse {
            correlation_id: 9,
            code: ResponseCode::VIRTUAL_HOST_ACCESS_FAILURE,
            properties: None
        })
    );
    c.expect_eof().await;
}

#[tokio::test]
async fn commands_before_open_close_the_socket_without_reply() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let create = Frame::Create(Create {
        correlation_id: 1,
        stream: "s".into(),
        arguments: vec![],
    });
    // As the very first frame.
    let mut c = Raw::connect(broker.addr).await;
    c.send(create.clone()).await;
    c.expect_eof().await;
    // After authentication, before Open.
    let mut c = Raw::connect(broker.addr).await;
    c.handshake_until_tune("guest", "guest").await;
    c.send(create.clone()).await;
    c.expect_eof().await;
    // SaslAuthenticate without SaslHandshake first.
    let mut c = Raw::connect(broker.addr).await;
    c.request(Frame::PeerProperties(PeerProperties {
        correlation_id: 1,
        properties: vec![],
    }))
    .await;
    c.send(Frame::SaslAuthenticate(SaslAuthenticate {
        correlation_id: 2,
        mechanism: "PLAIN".into(),
        data: Some(Bytes::from_static(b"\0guest\0guest")),
    }))
    .await;
    c.expect_eof().await;
    // Garbage before open, and an oversized pre-open frame (TLS ClientHello on the plain port).
    let mut c = Raw::connect(broker.addr).await;
    c.send_bytes(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
        .await;
    c.expect_eof().await;
    assert!(!broker.broker.stream_exists("/", "s"));
    still_serving(&broker).await;
}

#[tokio::test]
async fn pipelined_and_split_frames_are_reassembled() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::open(broker.addr).await;
    let mut bytes = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        bytes.extend_from_slice(
            &Frame::Create(Create {
                correlation_id: i as u32,
                stream: (*name).into(),
                arguments: vec![],
            })
            .to_bytes(),
        );
    }
    // Three frames in one write, the last one split in single bytes.
    let split = bytes.len() - 10;
    c.send_bytes(&bytes[..split]).await;
    for b in &bytes[split..] {
        c.send_bytes(&[*b]).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for i in 0..3 {
        let r = c.recv().await.unwrap();
        assert_eq!(
            r,
            Frame::CreateResponse(Response {
                correlation_id: i,
                code: ResponseCode::OK
            })
        );
    }
}

/// The request sequence of `error-paths.pcap` connection 3, with the answers RabbitMQ gave.
#[tokio::test]
async fn error_paths_session_matches_rabbitmq() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::open(broker.addr).await;
    let s = "golden-raw-errors";
    let args = [("max-length-bytes", "10000000")];
    assert_eq!(c.create(s, &args).await, ResponseCode::OK);
    assert_eq!(
        c.create(s, &args).await,
        ResponseCode::STREAM_ALREADY_EXISTS
    );
    assert_eq!(
        c.create(s, &[("max-length-bytes", "20000000")]).await,
        ResponseCode::PRECONDITION_FAILED
    );
    let r = c
        .request(Frame::Delete(Delete {
            correlation_id: 4,
            stream: "golden-raw-missing".into(),
        }))
        .await;
    assert_eq!(
        r,
        Frame::DeleteResponse(Response {
            correlation_id: 4,
            code: ResponseCode::STREAM_DOES_NOT_EXIST
        })
    );
    let query_offset = |stream: &str| {
        Frame::QueryOffset(QueryOffset {
            correlation_id: 5,
            reference: "golden-raw-consumer".into(),
            stream: stream.into(),
        })
    };
    assert_eq!(
        c.request(query_offset(s)).await,
        Frame::QueryOffsetResponse(QueryOffsetResponse {
            correlation_id: 5,
            code: ResponseCode::NO_OFFSET,
            offset: 0
        })
    );
    assert_eq!(
        c.request(query_offset("golden-raw-missing")).await,
        Frame::QueryOffsetResponse(QueryOffsetResponse {
            correlation_id: 5,
            code: ResponseCode::STREAM_DOES_NOT_EXIST,
            offset: 0
        })
    );
    let declare = |id: u8, reference: &str, stream: &str| {
        Frame::DeclarePublisher(DeclarePublisher {
            correlation_id: 6,
            publisher_id: id,
            reference: reference.into(),
            stream: stream.into(),
        })
    };
    assert_eq!(
        c.request(declare(0, "", "golden-raw-missing")).await,
        Frame::DeclarePublisherResponse(Response {
            correlation_id: 6,
            code: ResponseCode::STREAM_DOES_NOT_EXIST
        })
    );
    let query_seq = |stream: &str| {
        Frame::QueryPublisherSequence(QueryPublisherSequence {
            correlation_id: 7,
            reference: "golden-raw-producer".into(),
            stream: stream.into(),
        })
    };
    let seq = |code, sequence| {
        Frame::QueryPublisherSequenceResponse(QueryPublisherSequenceResponse {
            correlation_id: 7,
            code,
            sequence,
        })
    };
    assert_eq!(
        c.request(query_seq("golden-raw-missing")).await,
        seq(ResponseCode::STREAM_DOES_NOT_EXIST, 0)
    );
    assert_eq!(c.request(query_seq(s)).await, seq(ResponseCode::OK, 0));

    // Metadata: the missing stream has code 2 and leader 0xffff; one broker entry.
    let r = c
        .request(Frame::Metadata(Metadata {
            correlation_id: 8,
            streams: vec![s.into(), "golden-raw-missing".into()],
        }))
        .await;
    let Frame::MetadataResponse(m) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        m.brokers,
        vec![BrokerEndpoint {
            reference: 0,
            host: "127.0.0.1".into(),
            port: broker.port().into()
        }]
    );
    assert_eq!(m.streams.len(), 2);
    for st in &m.streams {
        if st.stream == s {
            assert_eq!((st.code, st.leader), (ResponseCode::OK, 0));
        } else {
            assert_eq!(
                (st.code, st.leader),
                (ResponseCode::STREAM_DOES_NOT_EXIST, 0xffff)
            );
        }
    }

    // A named publisher: 1..3 confirmed, the duplicate 2 confirmed (not errored), not stored.
    assert_eq!(
        c.request(declare(0, "golden-raw-producer", s)).await,
        Frame::DeclarePublisherResponse(Response {
            correlation_id: 6,
            code: ResponseCode::OK
        })
    );
    let publish = |ids: &[u64], publisher: u8| {
        let mut b = PublishBuilder::new(publisher);
        for id in ids {
            b.message(*id, format!("m{id}").as_bytes());
        }
        Frame::Publish(b.build())
    };
    let confirm = |ids: Vec<u64>| {
        Frame::PublishConfirm(PublishConfirm {
            publisher_id: 0,
            publishing_ids: ids,
        })
    };
    assert_eq!(
        c.request(publish(&[1, 2, 3], 0)).await,
        confirm(vec![1, 2, 3])
    );
    assert_eq!(c.request(query_seq(s)).await, seq(ResponseCode::OK, 3));
    assert_eq!(c.request(publish(&[2], 0)).await, confirm(vec![2]));
    assert_eq!(
        c.request(publish(&[1], 9)).await,
        Frame::PublishError(PublishError {
            publisher_id: 9,
            errors: vec![PublishingError {
                publishing_id: 1,
                code: ResponseCode::PUBLISHER_DOES_NOT_EXIST
            }]
        })
    );
    // StoreOffset is never answered and is visible to the very next QueryOffset.
    c.send(Frame::StoreOffset(StoreOffset {
        reference: "golden-raw-consumer".into(),
        stream: s.into(),
        offset: 1,
    }))
    .await;
    assert_eq!(
        c.request(query_offset(s)).await,
        Frame::QueryOffsetResponse(QueryOffsetResponse {
            correlation_id: 5,
            code: ResponseCode::OK,
            offset: 1
        })
    );

    // Five subscriptions, one per offset spec; all but `next` get chunk 0 (3 records).
    let specs = [
        OffsetSpec::First,
        OffsetSpec::Last,
        OffsetSpec::Next,
        OffsetSpec::Offset(1),
        OffsetSpec::Timestamp(now_ms() - 3_600_000),
    ];
    for (i, spec) in specs.iter().enumerate() {
        let sub = i as u8 + 1;
        c.send(Frame::Subscribe(Subscribe {
            correlation_id: 10 + sub as u32,
            subscription_id: sub,
            stream: s.into(),
            offset: *spec,
            credit: 10,
            properties: (sub == 5).then(|| vec![("name".into(), "golden-raw-consumer".into())]),
        }))
        .await;
    }
    // Each subscription's OK comes before its first Deliver.
    let (mut responded, mut delivered) = (Vec::new(), Vec::new());
    while responded.len() < 5 || delivered.len() < 4 {
        match c.recv().await.unwrap() {
            Frame::SubscribeResponse(r) => {
                assert_eq!(r.code, ResponseCode::OK);
                responded.push(r.correlation_id as u8 - 10);
            }
            Frame::Deliver(d) => {
                assert!(
                    responded.contains(&d.subscription_id),
                    "Deliver before Subscribe OK"
                );
                let chunk = d.chunk().unwrap();
                chunk.verify().unwrap();
                assert_eq!((chunk.header.chunk_id, chunk.header.num_records), (0, 3));
                delivered.push(d.subscription_id);
            }
            other => panic!("{other:?}"),
        }
    }
    delivered.sort();
    assert_eq!(delivered, vec![1, 2, 4, 5]);
    let sub1 = Frame::Subscribe(Subscribe {
        correlation_id: 20,
        subscription_id: 1,
        stream: s.into(),
        offset: OffsetSpec::First,
        credit: 1,
        properties: None,
    });
    assert_eq!(
        c.request(sub1).await,
        Frame::SubscribeResponse(Response {
            correlation_id: 20,
            code: ResponseCode::SUBSCRIPTION_ID_ALREADY_EXISTS
        })
    );
    // The next chunk goes to all five; the StoreOffset's tracking chunk took offset 3.
    c.send(publish(&[4], 0)).await;
    let mut delivered = Vec::new();
    let mut confirmed = false;
    while delivered.len() < 5 || !confirmed {
        match c.recv().await.unwrap() {
            Frame::Deliver(d) => {
                assert_eq!(d.chunk().unwrap().header.chunk_id, 4);
                delivered.push(d.subscription_id);
            }
            Frame::PublishConfirm(p) => {
                assert_eq!(p.publishing_ids, vec![4]);
                confirmed = true;
            }
            other => panic!("{other:?}"),
        }
    }
    c.send(Frame::Credit(Credit {
        subscription_id: 1,
        credit: 1,
    }))
    .await;
    assert_eq!(
        c.request(Frame::Credit(Credit {
            subscription_id: 42,
            credit: 1
        }))
        .await,
        Frame::CreditResponse(CreditResponse {
            code: ResponseCode::SUBSCRIPTION_ID_DOES_NOT_EXIST,
            subscription_id: 42
        })
    );
    let unsub = |id| {
        Frame::Unsubscribe(Unsubscribe {
            correlation_id: 30,
            subscription_id: id,
        })
    };
    assert_eq!(
        c.request(unsub(2)).await,
        Frame::UnsubscribeResponse(Response {
            correlation_id: 30,
            code: ResponseCode::OK
        })
    );
    assert_eq!(
        c.request(unsub(42)).await,
        Frame::UnsubscribeResponse(Response {
            correlation_id: 30,
            code: ResponseCode::SUBSCRIPTION_ID_DOES_NOT_EXIST
        })
    );
    let delete_pub = |id| {
        Frame::DeletePublisher(DeletePublisher {
            correlation_id: 31,
            publisher_id: id,
        })
    };
    assert_eq!(
        c.request(delete_pub(0)).await,
        Frame::DeletePublisherResponse(Response {
            correlation_id: 31,
            code: ResponseCode::OK
        })
    );
    assert_eq!(
        c.request(delete_pub(7)).await,
        Frame::DeletePublisherResponse(Response {
            correlation_id: 31,
            code: ResponseCode::PUBLISHER_DOES_NOT_EXIST
        })
    );
    c.send(Frame::Heartbeat(Heartbeat {})).await;

    // A second connection that only looked the stream up also hears of its deletion.
    let mut other = Raw::open(broker.addr).await;
    let r = other
        .request(Frame::Metadata(Metadata {
            correlation_id: 1,
            streams: vec![s.into()],
        }))
        .await;
    assert!(matches!(r, Frame::MetadataResponse(_)));
    let r = c
        .request(Frame::Delete(Delete {
            correlation_id: 32,
            stream: s.into(),
        }))
        .await;
    assert_eq!(
        r,
        Frame::DeleteResponse(Response {
            correlation_id: 32,
            code: ResponseCode::OK
        })
    );
    let update = Frame::MetadataUpdate(MetadataUpdate {
        code: ResponseCode::STREAM_NOT_AVAILABLE,
        stream: s.into(),
    });
    assert_eq!(c.recv().await.unwrap(), update);
    assert_eq!(other.recv().await.unwrap(), update);
    // Its subscriptions are gone.
    assert_eq!(
        c.request(Frame::Credit(Credit {
            subscription_id: 1,
            credit: 1
        }))
        .await,
        Frame::CreditResponse(CreditResponse {
            code: ResponseCode::SUBSCRIPTION_ID_DOES_NOT_EXIST,
            subscription_id: 1
        })
    );
    let r = c
        .request(Frame::Close(Close {
            correlation_id: 33,
            code: ResponseCode::OK,
            reason: "bye".into(),
        }))
        .await;
    assert_eq!(
        r,
        Frame::CloseResponse(Response {
            correlation_id: 33,
            code: ResponseCode::OK
        })
    );
    c.expect_eof().await;
}

#[tokio::test]
async fn exchange_command_versions_and_deliver_v2() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::open(broker.addr).await;
    let r = c
        .request(Frame::ExchangeCommandVersions(ExchangeCommandVersions {
            correlation_id: 1,
            commands: vec![CommandVersion {
                key: keys::DELIVER,
                min_version: 1,
                max_version: 2,
            }],
        }))
        .await;
    let Frame::ExchangeCommandVersionsResponse(v) = r else {
        panic!("{r:?}")
    };
    // rstream reads this list by position: DeclarePublisher first, Publish second.
    assert_eq!(v.commands[0].key, keys::DECLARE_PUBLISHER);
    assert_eq!(v.commands[1].key, keys::PUBLISH);
    assert!(
        v.commands
            .iter()
            .all(|c| c.key & 0x8000 == 0 && c.min_version == 1)
    );
    assert_eq!(c.create("v2", &[]).await, ResponseCode::OK);
    c.request(Frame::DeclarePublisher(DeclarePublisher {
        correlation_id: 2,
        publisher_id: 0,
        reference: String::new(),
        stream: "v2".into(),
    }))
    .await;
    let mut b = PublishBuilder::new(0);
    b.message(0, b"x");
    c.request(Frame::Publish(b.build())).await;
    c.request(Frame::Subscribe(Subscribe {
        correlation_id: 3,
        subscription_id: 0,
        stream: "v2".into(),
        offset: OffsetSpec::First,
        credit: 1,
        properties: Some(vec![]),
    }))
    .await;
    let Some(Frame::Deliver(d)) = c.recv().await else {
        panic!()
    };
    assert_eq!(d.version(), 2);
    assert_eq!(d.committed_chunk_id, Some(0));
}

#[tokio::test]
async fn idle_connections_get_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::connect(broker.addr).await;
    c.handshake_until_tune("guest", "guest").await;
    c.send(Frame::Tune(Tune {
        frame_max: 0,
        heartbeat: 1,
    }))
    .await;
    let r = c
        .request(Frame::Open(Open {
            correlation_id: 1,
            vhost: "/".into(),
        }))
        .await;
    let Frame::OpenResponse(open) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        open.properties.unwrap(),
        vec![
            ("advertised_host".to_string(), "127.0.0.1".to_string()),
            ("advertised_port".to_string(), broker.port().to_string())
        ]
    );
    let started = Instant::now();
    assert_eq!(c.recv_any().await, Some(Frame::Heartbeat(Heartbeat {})));
    assert!(started.elapsed() < Duration::from_secs(2));
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Duplicates within one Publish are confirmed, in a frame after the written ids: never the
/// same id twice in one PublishConfirm (the Rust client 0.11 loses the rest of such a frame).
#[tokio::test]
async fn duplicates_are_confirmed_in_their_own_frame() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::open(broker.addr).await;
    assert_eq!(c.create("d", &[]).await, ResponseCode::OK);
    c.request(Frame::DeclarePublisher(DeclarePublisher {
        correlation_id: 1,
        publisher_id: 3,
        reference: "p".into(),
        stream: "d".into(),
    }))
    .await;
    let mut b = PublishBuilder::new(3);
    for id in [0, 0, 1, 1] {
        b.message(id, b"x");
    }
    c.send(Frame::Publish(b.build())).await;
    let confirm = |ids: Vec<u64>| {
        Frame::PublishConfirm(PublishConfirm {
            publisher_id: 3,
            publishing_ids: ids,
        })
    };
    assert_eq!(c.recv().await.unwrap(), confirm(vec![0, 1]));
    assert_eq!(c.recv().await.unwrap(), confirm(vec![0, 1]));
    assert_eq!(
        broker.broker.stream_stats("/", "d").unwrap().next_offset,
        2,
        "two messages stored"
    );
}

/// Sub-entry batches are stored as they came and count their records; an invalid one (as
/// RabbitMQ 4.3.5 checks them) fails with everything after it in the frame.
#[tokio::test]
async fn sub_entry_batches_are_stored_as_is_and_validated() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::open(broker.addr).await;
    assert_eq!(c.create("b", &[]).await, ResponseCode::OK);
    c.request(Frame::DeclarePublisher(DeclarePublisher {
        correlation_id: 1,
        publisher_id: 0,
        reference: String::new(),
        stream: "b".into(),
    }))
    .await;
    let records = brook_protocol::chunk::encode_simple_entries([&b"r0"[..], b"r1", b"r2"]);
    let mut p = PublishBuilder::new(0);
    p.message(1, b"plain")
        .batch(2, 0, 3, records.len() as u32, &records);
    assert_eq!(
        c.request(Frame::Publish(p.build())).await,
        Frame::PublishConfirm(PublishConfirm {
            publisher_id: 0,
            publishing_ids: vec![1, 2]
        })
    );
    let mut p = PublishBuilder::new(0);
    p.message(3, b"ok")
        .batch(4, 0, 0, 0, &[])
        .message(5, b"after");
    c.send(Frame::Publish(p.build())).await;
    let mut got = vec![c.recv().await.unwrap(), c.recv().await.unwrap()];
    got.sort_by_key(|f| f.key());
    assert_eq!(
        got,
        vec![
            Frame::PublishConfirm(PublishConfirm {
                publisher_id: 0,
                publishing_ids: vec![3]
            }),
            Frame::PublishError(PublishError {
                publisher_id: 0,
                errors: vec![
                    PublishingError {
                        publishing_id: 4,
                        code: ResponseCode::PRECONDITION_FAILED
                    },
                    PublishingError {
                        publishing_id: 5,
                        code: ResponseCode::PRECONDITION_FAILED
                    },
                ]
            }),
        ]
    );
    // plain (offset 0), the batch (offsets 1..=3, one entry), ok (offset 4).
    assert_eq!(broker.broker.stream_stats("/", "b").unwrap().next_offset, 5);
    c.request(Frame::Subscribe(Subscribe {
        correlation_id: 9,
        subscription_id: 0,
        stream: "b".into(),
        offset: OffsetSpec::First,
        credit: 10,
        properties: None,
    }))
    .await;
    let mut records = Vec::new();
    while records.len() < 5 {
        let Some(Frame::Deliver(d)) = c.recv().await else {
            panic!()
        };
        for r in d.chunk().unwrap().records() {
            let (offset, body) = r.unwrap();
            records.push((offset, body.to_vec()));
        }
    }
    let bodies: Vec<&[u8]> = records.iter().map(|(_, b)| b.as_slice()).collect();
    assert_eq!(bodies, [&b"plain"[..], b"r0", b"r1", b"r2", b"ok"]);
    assert_eq!(
        records.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
}

/// A client may Open before answering Tune (RabbitMQ allows it): after Open the frame limit is
/// the server's, not the 8 KiB pre-open one.
#[tokio::test]
async fn open_before_tune_gets_the_full_frame_limit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::connect(broker.addr).await;
    assert!(c.handshake_until_tune("guest", "guest").await.code.is_ok());
    let r = c
        .request(Frame::Open(Open {
            correlation_id: 1,
            vhost: "/".into(),
        }))
        .await;
    assert!(matches!(r, Frame::OpenResponse(ref o) if o.code.is_ok()));
    let big = "x".repeat(20_000);
    let code = c.create("big-args", &[("x-ignored", big.as_str())]).await;
    assert_eq!(code, ResponseCode::OK);
}

/// A publisher that never reads its confirms is stopped by TCP back-pressure instead of making
/// the broker buffer confirms without end: flow-control credit returns only when confirms are
/// written to the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_does_not_read_confirms_is_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::open(broker.addr).await;
    assert_eq!(c.create("p", &[]).await, ResponseCode::OK);
    c.request(Frame::DeclarePublisher(DeclarePublisher {
        correlation_id: 1,
        publisher_id: 0,
        reference: String::new(),
        stream: "p".into(),
    }))
    .await;
    let mut b = PublishBuilder::new(0);
    for id in 0..1000 {
        b.message(id, b"twelve bytes");
    }
    let frame = Frame::Publish(b.build()).to_bytes();
    // 200 MB of publishes, confirms never read: must stall well before the end.
    let flood = async {
        for _ in 0..(200 << 20) / frame.len() {
            c.send_bytes(&frame).await;
        }
    };
    let finished = tokio::time::timeout(Duration::from_secs(3), flood).await;
    assert!(
        finished.is_err(),
        "the broker kept reading a publisher that never reads"
    );
    let written = broker.broker.stream_stats("/", "p").unwrap().next_offset;
    assert!(
        written < 2_000_000,
        "{written} messages accepted without their confirms being read"
    );
}
