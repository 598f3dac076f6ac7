//! Single active consumer, super streams and filtering, over raw frames against a real brook.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use brook_protocol::*;
use common::TestBroker;
use common::raw::Raw;

fn props(kv: &[(&str, &str)]) -> Properties {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn declare_and_publish(c: &mut Raw, stream: &str, messages: &[(&str, Option<&str>)]) {
    c.request(Frame::DeclarePublisher(DeclarePublisher {
        correlation_id: 1,
        publisher_id: 9,
        reference: String::new(),
        stream: stream.into(),
    }))
    .await;
    // One Publish per message, each confirmed before the next: one chunk each.
    for (i, (body, filter)) in messages.iter().enumerate() {
        let mut b = PublishBuilder::new_v2(9);
        b.filtered(i as u64, filter.map(str::as_bytes), body.as_bytes());
        let r = c.request(Frame::Publish(b.build())).await;
        assert!(matches!(r, Frame::PublishConfirm(_)), "{r:?}");
    }
}

async fn subscribe(
    c: &mut Raw,
    id: u8,
    stream: &str,
    offset: OffsetSpec,
    credit: u16,
    properties: Properties,
) {
    let r = c
        .request(Frame::Subscribe(Subscribe {
            correlation_id: 50 + u32::from(id),
            subscription_id: id,
            stream: stream.into(),
            offset,
            credit,
            properties: Some(properties),
        }))
        .await;
    assert_eq!(
        r,
        Frame::SubscribeResponse(Response {
            correlation_id: 50 + u32::from(id),
            code: ResponseCode::OK
        })
    );
}

/// Creates a super stream `name` with partitions `name-0`.. and binding keys "0"...
async fn create_super_stream(c: &mut Raw, name: &str, partitions: usize) {
    let r = c
        .request(Frame::CreateSuperStream(CreateSuperStream {
            correlation_id: 1,
            name: name.into(),
            partitions: (0..partitions).map(|i| format!("{name}-{i}")).collect(),
            binding_keys: (0..partitions).map(|i| i.to_string()).collect(),
            arguments: vec![],
        }))
        .await;
    assert!(
        matches!(r, Frame::CreateSuperStreamResponse(ref r) if r.code.is_ok()),
        "{r:?}"
    );
}

/// Bodies of the messages in the next Deliver.
async fn delivered(c: &mut Raw) -> (u8, Vec<String>) {
    match c.recv().await.unwrap() {
        Frame::Deliver(d) => {
            let chunk = d.chunk().unwrap();
            chunk.verify().unwrap();
            let bodies = chunk
                .records()
                .map(|r| String::from_utf8(r.unwrap().1.to_vec()).unwrap())
                .collect();
            (d.subscription_id, bodies)
        }
        other => panic!("expected Deliver, got {other:?}"),
    }
}

async fn nothing_more(c: &mut Raw) {
    let r = tokio::time::timeout(Duration::from_millis(300), c.recv()).await;
    assert!(r.is_err(), "unexpected {r:?}");
}

#[tokio::test]
async fn filtering_skips_chunks_whose_bloom_filter_cannot_match() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::open(broker.addr).await;
    assert_eq!(c.create("f", &[]).await, ResponseCode::OK);
    declare_and_publish(
        &mut c,
        "f",
        &[
            ("eu-1", Some("eu")),
            ("us-1", Some("us")),
            ("plain", None),
            ("eu-2", Some("eu")),
            ("empty", Some("")),
        ],
    )
    .await;
    subscribe(
        &mut c,
        1,
        "f",
        OffsetSpec::First,
        10,
        props(&[("filter.0", "eu")]),
    )
    .await;
    assert_eq!(delivered(&mut c).await, (1, vec!["eu-1".into()]));
    assert_eq!(delivered(&mut c).await, (1, vec!["eu-2".into()]));
    nothing_more(&mut c).await;
    // With match-unfiltered, chunks without filter values come too (an empty value is none).
    subscribe(
        &mut c,
        2,
        "f",
        OffsetSpec::First,
        10,
        props(&[("filter.0", "eu"), ("match-unfiltered", "true")]),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.extend(delivered(&mut c).await.1);
    }
    assert_eq!(got, ["eu-1", "plain", "eu-2", "empty"]);
    nothing_more(&mut c).await;
    // Several values, and skipped chunks cost no credit: credit 1 is enough to reach us-1.
    subscribe(
        &mut c,
        3,
        "f",
        OffsetSpec::First,
        1,
        props(&[("filter.0", "us"), ("filter.1", "asia")]),
    )
    .await;
    assert_eq!(delivered(&mut c).await, (3, vec!["us-1".into()]));
    // No filter: everything.
    subscribe(&mut c, 4, "f", OffsetSpec::First, 10, props(&[])).await;
    for _ in 0..5 {
        assert_eq!(delivered(&mut c).await.0, 4);
    }
}

#[tokio::test]
async fn super_streams_create_route_partitions_delete_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut c = Raw::open(broker.addr).await;
    let create = |name: &str, partitions: &[&str], keys: &[&str]| {
        Frame::CreateSuperStream(CreateSuperStream {
            correlation_id: 1,
            name: name.into(),
            partitions: partitions.iter().map(|s| s.to_string()).collect(),
            binding_keys: keys.iter().map(|s| s.to_string()).collect(),
            arguments: props(&[("max-length-bytes", "1000000")]),
        })
    };
    let code = |f: Frame| match f {
        Frame::CreateSuperStreamResponse(r) | Frame::DeleteSuperStreamResponse(r) => r.code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        code(
            c.request(create(
                "inv",
                &["inv-0", "inv-1", "inv-2"],
                &["0", "1", "2"]
            ))
            .await
        ),
        ResponseCode::OK
    );
    assert_eq!(
        code(c.request(create("inv", &["x-0"], &["0"])).await),
        ResponseCode::STREAM_ALREADY_EXISTS
    );
    assert_eq!(
        code(c.request(create("other", &["inv-1"], &["a"])).await),
        ResponseCode::STREAM_ALREADY_EXISTS,
        "a partition exists"
    );
    assert_eq!(
        code(c.request(create("bad", &["b-0", "b-1"], &["0"])).await),
        ResponseCode::PRECONDITION_FAILED
    );
    assert!(!broker.broker.stream_exists("/", "b-0"), "all or nothing");

    let partitions = |c: &mut Raw, name: &str| {
        Frame::Partitions(Partitions {
            correlation_id: c.next_corr(),
            super_stream: name.into(),
        })
    };
    let f = partitions(&mut c, "inv");
    let Frame::PartitionsResponse(p) = c.request(f).await else {
        panic!()
    };
    assert_eq!(
        (p.code, p.streams),
        (
            ResponseCode::OK,
            vec!["inv-0".into(), "inv-1".into(), "inv-2".into()]
        )
    );
    let route = |key: &str| {
        Frame::Route(Route {
            correlation_id: 9,
            routing_key: key.into(),
            super_stream: "inv".into(),
        })
    };
    let Frame::RouteResponse(r) = c.request(route("1")).await else {
        panic!()
    };
    assert_eq!(r.streams, vec!["inv-1".to_string()]);
    let Frame::RouteResponse(r) = c.request(route("nope")).await else {
        panic!()
    };
    assert_eq!((r.code, r.streams.len()), (ResponseCode::OK, 0));
    let r = c
        .request(Frame::Route(Route {
            correlation_id: 9,
            routing_key: "1".into(),
            super_stream: "missing".into(),
        }))
        .await;
    assert!(
        matches!(r, Frame::RouteResponse(ref r) if r.code == ResponseCode::STREAM_DOES_NOT_EXIST)
    );
    // Partitions are ordinary streams.
    assert_eq!(
        c.create("inv-0", &[("max-length-bytes", "1000000")]).await,
        ResponseCode::STREAM_ALREADY_EXISTS
    );

    // Persisted across a restart; deleting a partition stream removes it from its super stream.
    drop(c);
    let broker = broker.restart().await;
    let mut c = Raw::open(broker.addr).await;
    let r = c
        .request(Frame::Delete(Delete {
            correlation_id: 3,
            stream: "inv-2".into(),
        }))
        .await;
    assert!(matches!(r, Frame::DeleteResponse(ref r) if r.code.is_ok()));
    let f = partitions(&mut c, "inv");
    let Frame::PartitionsResponse(p) = c.request(f).await else {
        panic!()
    };
    assert_eq!(p.streams, vec!["inv-0".to_string(), "inv-1".into()]);
    let r = c
        .request(Frame::DeleteSuperStream(DeleteSuperStream {
            correlation_id: 4,
            name: "inv".into(),
        }))
        .await;
    assert_eq!(code(r), ResponseCode::OK);
    assert!(
        !broker.broker.stream_exists("/", "inv-0") && !broker.broker.stream_exists("/", "inv-1")
    );
    let r = c
        .request(Frame::DeleteSuperStream(DeleteSuperStream {
            correlation_id: 5,
            name: "inv".into(),
        }))
        .await;
    assert_eq!(code(r), ResponseCode::STREAM_DOES_NOT_EXIST);
}

/// Waits for a ConsumerUpdate, answers it, returns whether it activated.
async fn consumer_update(c: &mut Raw, offset: OffsetSpec) -> (u8, bool) {
    match c.recv().await.unwrap() {
        Frame::ConsumerUpdate(u) => {
            c.send(Frame::ConsumerUpdateResponse(ConsumerUpdateResponse {
                correlation_id: u.correlation_id,
                code: ResponseCode::OK,
                offset,
            }))
            .await;
            (u.subscription_id, u.active)
        }
        other => panic!("expected ConsumerUpdate, got {other:?}"),
    }
}

fn sac(name: &str) -> Properties {
    props(&[("single-active-consumer", "true"), ("name", name)])
}

#[tokio::test]
async fn single_active_consumer_promotes_on_unsubscribe_and_on_connection_loss() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut admin = Raw::open(broker.addr).await;
    assert_eq!(admin.create("sac", &[]).await, ResponseCode::OK);
    declare_and_publish(&mut admin, "sac", &[("m0", None), ("m1", None)]).await;

    let mut a = Raw::open(broker.addr).await;
    let mut b = Raw::open(broker.addr).await;
    let mut d = Raw::open(broker.addr).await;
    subscribe(&mut a, 1, "sac", OffsetSpec::First, 10, sac("group")).await;
    // a is first: activated; it asks to start at offset 1 instead of its Subscribe's `first`.
    assert_eq!(
        consumer_update(&mut a, OffsetSpec::Offset(1)).await,
        (1, true)
    );
    assert_eq!(delivered(&mut a).await, (1, vec!["m1".into()]));
    subscribe(&mut b, 2, "sac", OffsetSpec::First, 10, sac("group")).await;
    subscribe(&mut d, 3, "sac", OffsetSpec::Next, 10, sac("group")).await;
    // Waiting consumers are not told, get nothing, and their credit is refused (but banked).
    nothing_more(&mut b).await;
    let r = b
        .request(Frame::Credit(Credit {
            subscription_id: 2,
            credit: 1,
        }))
        .await;
    assert_eq!(
        r,
        Frame::CreditResponse(CreditResponse {
            code: ResponseCode::PRECONDITION_FAILED,
            subscription_id: 2
        })
    );
    // A group without a name is refused.
    let r = b
        .request(Frame::Subscribe(Subscribe {
            correlation_id: 7,
            subscription_id: 7,
            stream: "sac".into(),
            offset: OffsetSpec::First,
            credit: 1,
            properties: Some(props(&[("single-active-consumer", "true")])),
        }))
        .await;
    assert!(
        matches!(r, Frame::SubscribeResponse(ref r) if r.code == ResponseCode::PRECONDITION_FAILED)
    );

    // a unsubscribes: b (next in registration order) takes over, from its own Subscribe's spec
    // when it answers "none".
    let r = a
        .request(Frame::Unsubscribe(Unsubscribe {
            correlation_id: 8,
            subscription_id: 1,
        }))
        .await;
    assert!(matches!(r, Frame::UnsubscribeResponse(ref r) if r.code.is_ok()));
    assert_eq!(consumer_update(&mut b, OffsetSpec::None).await, (2, true));
    assert_eq!(delivered(&mut b).await, (2, vec!["m0".into()]));
    assert_eq!(delivered(&mut b).await, (2, vec!["m1".into()]));
    nothing_more(&mut d).await;

    // b's connection dies: d takes over and gets what is published from then on.
    drop(b);
    assert_eq!(consumer_update(&mut d, OffsetSpec::None).await, (3, true));
    declare_and_publish(&mut admin, "sac", &[("m2", None)]).await;
    assert_eq!(delivered(&mut d).await, (3, vec!["m2".into()]));
}

#[tokio::test]
async fn super_stream_consumer_groups_spread_and_step_down() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut admin = Raw::open(broker.addr).await;
    create_super_stream(&mut admin, "orders", 2).await;
    let group = || {
        props(&[
            ("single-active-consumer", "true"),
            ("name", "app"),
            ("super-stream", "orders"),
        ])
    };
    let mut a = Raw::open(broker.addr).await;
    let mut b = Raw::open(broker.addr).await;
    // a alone: active on both partitions.
    subscribe(&mut a, 0, "orders-0", OffsetSpec::First, 10, group()).await;
    assert_eq!(consumer_update(&mut a, OffsetSpec::None).await, (0, true));
    subscribe(&mut a, 1, "orders-1", OffsetSpec::First, 10, group()).await;
    assert_eq!(consumer_update(&mut a, OffsetSpec::None).await, (1, true));
    // b joins both: partition 0 stays with a (0 % 2 members), partition 1 (1 % 2) moves to b,
    // after a has stepped down.
    subscribe(&mut b, 0, "orders-0", OffsetSpec::First, 10, group()).await;
    subscribe(&mut b, 1, "orders-1", OffsetSpec::First, 10, group()).await;
    assert_eq!(consumer_update(&mut a, OffsetSpec::None).await, (1, false));
    assert_eq!(consumer_update(&mut b, OffsetSpec::None).await, (1, true));
    nothing_more(&mut a).await;
    nothing_more(&mut b).await;
}

/// An activation overtaken by a step-down must not start delivery when its (late) answer
/// arrives: only one consumer of a group is ever active.
#[tokio::test]
async fn a_late_answer_to_an_old_activation_does_not_make_two_consumers_active() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let mut admin = Raw::open(broker.addr).await;
    create_super_stream(&mut admin, "late", 2).await;
    declare_and_publish(&mut admin, "late-1", &[("m0", None)]).await;
    let group = || {
        props(&[
            ("single-active-consumer", "true"),
            ("name", "g"),
            ("super-stream", "late"),
        ])
    };
    let mut a = Raw::open(broker.addr).await;
    let mut b = Raw::open(broker.addr).await;
    subscribe(&mut a, 1, "late-1", OffsetSpec::First, 10, group()).await;
    // a is told to activate, but does not answer yet.
    let Some(Frame::ConsumerUpdate(activate)) = a.recv().await else {
        panic!()
    };
    assert!(activate.active);
    // b joins: partition 1 belongs to b now, so a is told to step down.
    subscribe(&mut b, 1, "late-1", OffsetSpec::First, 10, group()).await;
    let Some(Frame::ConsumerUpdate(step_down)) = a.recv().await else {
        panic!()
    };
    assert!(!step_down.active);
    // a answers both, the stale activation first.
    for u in [activate, step_down] {
        a.send(Frame::ConsumerUpdateResponse(ConsumerUpdateResponse {
            correlation_id: u.correlation_id,
            code: ResponseCode::OK,
            offset: OffsetSpec::First,
        }))
        .await;
    }
    assert_eq!(consumer_update(&mut b, OffsetSpec::First).await, (1, true));
    assert_eq!(delivered(&mut b).await, (1, vec!["m0".into()]));
    nothing_more(&mut a).await;
}

/// A ConsumerUpdate left unanswered past the request timeout ends that connection, and the
/// group moves on to the next consumer.
#[tokio::test]
async fn an_unanswered_consumer_update_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let config = brook_server::ServerConfig {
        request_timeout: Duration::from_millis(300),
        ..common::test_server_config()
    };
    let broker = TestBroker::start_with(brook_broker::BrokerConfig::new(dir.path()), config).await;
    let mut admin = Raw::open(broker.addr).await;
    assert_eq!(admin.create("slow", &[]).await, ResponseCode::OK);
    let mut silent = Raw::open(broker.addr).await;
    let mut next = Raw::open(broker.addr).await;
    subscribe(&mut silent, 1, "slow", OffsetSpec::First, 10, sac("g")).await;
    subscribe(&mut next, 1, "slow", OffsetSpec::First, 10, sac("g")).await;
    let Some(Frame::ConsumerUpdate(u)) = silent.recv().await else {
        panic!()
    };
    assert!(u.active);
    silent.expect_eof().await;
    assert_eq!(
        consumer_update(&mut next, OffsetSpec::None).await,
        (1, true)
    );
}
