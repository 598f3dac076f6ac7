//! Permissions on every stream command, as RabbitMQ's `rabbit_stream_reader` checks them:
//! configure to create and delete, write to publish, read to consume and to read offsets and
//! statistics. A refusal answers ACCESS_REFUSED and closes nothing. Vhosts isolate streams.
#![allow(clippy::unwrap_used)]

mod common;

use brook_auth::{Permission, User, Vhost};
use brook_protocol::*;
use common::TestBroker;
use common::raw::Raw;
use futures::StreamExt;
use rabbitmq_stream_client::Environment;
use rabbitmq_stream_client::error::{ProducerCreateError, StreamCreateError};
use rabbitmq_stream_client::types::{Message, OffsetSpecification, ResponseCode as ClientCode};

const REFUSED: ResponseCode = ResponseCode::ACCESS_REFUSED;
const OK: ResponseCode = ResponseCode::OK;

/// vhost `v`; alice may configure and write `^alice-`, read `^alice-` and `^shared`; guest
/// may do everything there.
async fn setup(broker: &TestBroker) {
    let access = &broker.access;
    access.put_vhost(Vhost::named("v")).await.unwrap();
    access
        .put_user(User {
            name: "alice".into(),
            password_hash: brook_auth::password::hash("pw"),
            hashing_algorithm: brook_auth::password::SHA256.into(),
            tags: vec![],
            limits: Default::default(),
        })
        .await
        .unwrap();
    let grant = |user: &str, c: &str, w: &str, r: &str| Permission {
        user: user.into(),
        vhost: "v".into(),
        configure: c.into(),
        write: w.into(),
        read: r.into(),
    };
    access
        .set_permission(grant("alice", "^alice-", "^alice-", "^alice-|^shared"))
        .await
        .unwrap();
    access
        .set_permission(grant("guest", ".*", ".*", ".*"))
        .await
        .unwrap();
    let mut guest = Raw::open_as(broker.addr, "guest", "guest", "v", &[])
        .await
        .unwrap();
    for s in ["alice-s", "shared", "bob-s"] {
        assert_eq!(guest.create(s, &[]).await, OK);
    }
    let r = guest
        .request(Frame::CreateSuperStream(CreateSuperStream {
            correlation_id: 1,
            name: "bob-ss".into(),
            partitions: vec!["bob-ss-0".into()],
            binding_keys: vec!["0".into()],
            arguments: vec![],
        }))
        .await;
    assert_eq!(code(&r), OK);
}

/// The response code of any answer.
fn code(f: &Frame) -> ResponseCode {
    match f {
        Frame::CreateResponse(r)
        | Frame::DeleteResponse(r)
        | Frame::DeclarePublisherResponse(r)
        | Frame::SubscribeResponse(r)
        | Frame::CreateSuperStreamResponse(r)
        | Frame::DeleteSuperStreamResponse(r) => r.code,
        Frame::QueryPublisherSequenceResponse(r) => r.code,
        Frame::QueryOffsetResponse(r) => r.code,
        Frame::StreamStatsResponse(r) => r.code,
        Frame::RouteResponse(r) => r.code,
        Frame::PartitionsResponse(r) => r.code,
        other => panic!("not a response: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_command_is_checked_as_rabbitmq_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    setup(&broker).await;
    let mut a = Raw::open_as(broker.addr, "alice", "pw", "v", &[])
        .await
        .unwrap();

    // configure: Create, Delete, CreateSuperStream, DeleteSuperStream. Invalid names are
    // refused as such before any permission check.
    assert_eq!(a.create("alice-x", &[]).await, OK);
    assert_eq!(a.create("bob-x", &[]).await, REFUSED);
    assert_eq!(
        a.create("amq.x", &[]).await,
        ResponseCode::PRECONDITION_FAILED
    );
    let delete = |s: &str| {
        Frame::Delete(Delete {
            correlation_id: 2,
            stream: s.into(),
        })
    };
    assert_eq!(code(&a.request(delete("bob-s")).await), REFUSED);
    assert_eq!(code(&a.request(delete("alice-x")).await), OK);
    let create_ss = |name: &str| {
        Frame::CreateSuperStream(CreateSuperStream {
            correlation_id: 3,
            name: name.into(),
            partitions: vec![format!("{name}-0")],
            binding_keys: vec!["0".into()],
            arguments: vec![],
        })
    };
    assert_eq!(code(&a.request(create_ss("alice-ss")).await), OK);
    assert_eq!(code(&a.request(create_ss("carol-ss")).await), REFUSED);
    let delete_ss = |name: &str| {
        Frame::DeleteSuperStream(DeleteSuperStream {
            correlation_id: 4,
            name: name.into(),
        })
    };
    assert_eq!(code(&a.request(delete_ss("bob-ss")).await), REFUSED);

    // write: DeclarePublisher.
    let declare = |id: u8, s: &str| {
        Frame::DeclarePublisher(DeclarePublisher {
            correlation_id: 5,
            publisher_id: id,
            reference: String::new(),
            stream: s.into(),
        })
    };
    assert_eq!(code(&a.request(declare(1, "alice-s")).await), OK);
    assert_eq!(code(&a.request(declare(2, "shared")).await), REFUSED);

    // read: QueryPublisherSequence, Subscribe, QueryOffset, StreamStats.
    let sequence = |s: &str| {
        Frame::QueryPublisherSequence(QueryPublisherSequence {
            correlation_id: 6,
            reference: "p".into(),
            stream: s.into(),
        })
    };
    assert_eq!(code(&a.request(sequence("shared")).await), OK);
    assert_eq!(code(&a.request(sequence("bob-s")).await), REFUSED);
    let query = |s: &str| {
        Frame::QueryOffset(QueryOffset {
            correlation_id: 7,
            reference: "r".into(),
            stream: s.into(),
        })
    };
    assert_eq!(
        code(&a.request(query("shared")).await),
        ResponseCode::NO_OFFSET
    );
    assert_eq!(code(&a.request(query("bob-s")).await), REFUSED);
    let stats = |s: &str| {
        Frame::StreamStats(StreamStats {
            correlation_id: 8,
            stream: s.into(),
        })
    };
    assert_eq!(code(&a.request(stats("shared")).await), OK);
    assert_eq!(code(&a.request(stats("bob-s")).await), REFUSED);
    let subscribe = |id: u8, s: &str| {
        Frame::Subscribe(Subscribe {
            correlation_id: 9,
            subscription_id: id,
            stream: s.into(),
            offset: OffsetSpec::First,
            credit: 1,
            properties: None,
        })
    };
    assert_eq!(code(&a.request(subscribe(1, "bob-s")).await), REFUSED);
    assert_eq!(code(&a.request(subscribe(2, "shared")).await), OK);

    // StoreOffset is never answered: without read permission it is dropped.
    a.send(Frame::StoreOffset(StoreOffset {
        reference: "r".into(),
        stream: "bob-s".into(),
        offset: 1,
    }))
    .await;
    let mut guest = Raw::open_as(broker.addr, "guest", "guest", "v", &[])
        .await
        .unwrap();
    assert_eq!(
        code(&guest.request(query("bob-s")).await),
        ResponseCode::NO_OFFSET
    );

    // Metadata: read or write on each stream, refused ones answered per entry.
    let r = a
        .request(Frame::Metadata(Metadata {
            correlation_id: 10,
            streams: vec!["alice-s".into(), "bob-s".into()],
        }))
        .await;
    let Frame::MetadataResponse(m) = r else {
        panic!("{r:?}")
    };
    let codes: Vec<(String, ResponseCode)> = m
        .streams
        .iter()
        .map(|s| (s.stream.clone(), s.code))
        .collect();
    assert_eq!(
        codes,
        vec![("alice-s".into(), OK), ("bob-s".into(), REFUSED)]
    );

    // Route needs write on the super stream; Partitions read or write.
    let route = Frame::Route(Route {
        correlation_id: 11,
        routing_key: "0".into(),
        super_stream: "bob-ss".into(),
    });
    assert_eq!(code(&a.request(route).await), REFUSED);
    let partitions = |ss: &str| {
        Frame::Partitions(Partitions {
            correlation_id: 12,
            super_stream: ss.into(),
        })
    };
    assert_eq!(code(&a.request(partitions("bob-ss")).await), REFUSED);
    assert_eq!(code(&a.request(partitions("alice-ss")).await), OK);

    // After every refusal, the connection still works.
    assert_eq!(a.create("alice-last", &[]).await, OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_isolate_streams_and_need_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    setup(&broker).await;
    // No permissions on `/`, and a vhost that does not exist: both VHOST_ACCESS_FAILURE.
    for vhost in ["/", "nope"] {
        let refused = Raw::open_as(broker.addr, "alice", "pw", vhost, &[])
            .await
            .err();
        assert_eq!(
            refused,
            Some(ResponseCode::VIRTUAL_HOST_ACCESS_FAILURE),
            "{vhost}"
        );
    }
    // The same name in two vhosts is two streams.
    let mut root = Raw::open(broker.addr).await;
    let r = root
        .request(Frame::Metadata(Metadata {
            correlation_id: 1,
            streams: vec!["shared".into()],
        }))
        .await;
    let Frame::MetadataResponse(m) = r else {
        panic!("{r:?}")
    };
    assert_eq!(m.streams[0].code, ResponseCode::STREAM_DOES_NOT_EXIST);
    assert_eq!(root.create("shared", &[]).await, OK);
    assert!(
        broker.broker.stream_exists("/", "shared") && broker.broker.stream_exists("v", "shared")
    );
    assert_eq!(
        broker
            .broker
            .stream_stats("/", "shared")
            .unwrap()
            .next_offset,
        0
    );
}

/// The official Rust client as a restricted user: what it may do works, what it may not is
/// refused with ACCESS_REFUSED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_sees_refusals_as_access_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    setup(&broker).await;
    let env = Environment::builder()
        .host("127.0.0.1")
        .port(broker.port())
        .username("alice")
        .password("pw")
        .virtual_host("v")
        .build()
        .await
        .unwrap();
    env.stream_creator().create("alice-c").await.unwrap();
    let refused = env.stream_creator().create("bob-c").await;
    assert!(
        matches!(
            refused,
            Err(StreamCreateError::Create {
                status: ClientCode::AccessRefused,
                ..
            })
        ),
        "{refused:?}"
    );
    let producer = env.producer().build("alice-c").await.unwrap();
    let status = producer
        .send_with_confirm(Message::builder().body("hi").build())
        .await
        .unwrap();
    assert!(status.confirmed());
    producer.close().await.unwrap();
    let refused = env.producer().build("shared").await;
    assert!(
        matches!(
            refused,
            Err(ProducerCreateError::Create {
                status: ClientCode::AccessRefused,
                ..
            })
        ),
        "{:?}",
        refused.err()
    );
    let mut consumer = env
        .consumer()
        .offset(OffsetSpecification::First)
        .build("alice-c")
        .await
        .unwrap();
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(delivery.message().data(), Some(&b"hi"[..]));
    assert!(env.consumer().build("bob-s").await.is_err());
}
