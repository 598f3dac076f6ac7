//! The management HTTP API against RabbitMQ 3.10.8's own answers
//! (`tests/golden/rabbitmq-3.10.8-management/`, captured from a live node under a stream
//! workload): the same workload is replayed on brook, every captured request is sent again,
//! and the answers must have the capture's status, keys and JSON types.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use brook_broker::BrokerConfig;
use brook_protocol::*;
use common::http::{self, Auth, GUEST};
use common::raw::Raw;
use common::{TestBroker, test_server_config};
use serde_json::{Value, json};

const RABBIT: Auth<'static> = Some(("rabbit", "rabbit"));
const ALICE: Auth<'static> = Some(("ops-alice", "alice-pw"));

fn golden(file: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/rabbitmq-3.10.8-management")
        .join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

async fn start(dir: &std::path::Path) -> TestBroker {
    TestBroker::start_with(BrokerConfig::new(dir), test_server_config()).await
}

async fn import(addr: SocketAddr, auth: Auth<'_>, defs: &Value) -> http::Response {
    let body = defs.to_string();
    let headers = [("Content-Type", "application/json")];
    http::request(
        addr,
        "POST",
        "/api/definitions",
        auth,
        &headers,
        Some(&body),
    )
    .await
}

/// The capture's workload: 1,001 confirmed messages from `orders-producer` on a connection
/// named `capture-producer`; a consumer `orders-reader` on `capture-consumer` that read them
/// all with credit 10 and stored offset 499. Returns the two open connections.
async fn capture_workload(addr: SocketAddr) -> (Raw, Raw) {
    let mut producer = Raw::open_as(
        addr,
        "rabbit",
        "rabbit",
        "/",
        &[("connection_name", "capture-producer")],
    )
    .await
    .unwrap();
    let r = producer
        .request(Frame::DeclarePublisher(DeclarePublisher {
            correlation_id: 1,
            publisher_id: 0,
            reference: "orders-producer".into(),
            stream: "orders".into(),
        }))
        .await;
    assert!(
        matches!(r, Frame::DeclarePublisherResponse(ref r) if r.code.is_ok()),
        "{r:?}"
    );
    for batch in (0..1001u64).collect::<Vec<_>>().chunks(100) {
        let mut b = PublishBuilder::new(0);
        for id in batch {
            b.message(*id, format!("order {id}").as_bytes());
        }
        producer.send(Frame::Publish(b.build())).await;
    }
    let mut confirmed = 0;
    while confirmed < 1001 {
        match producer.recv().await.unwrap() {
            Frame::PublishConfirm(c) => confirmed += c.publishing_ids.len(),
            other => panic!("{other:?}"),
        }
    }

    let mut consumer = Raw::open_as(
        addr,
        "rabbit",
        "rabbit",
        "/",
        &[("connection_name", "capture-consumer")],
    )
    .await
    .unwrap();
    consumer
        .send(Frame::Subscribe(Subscribe {
            correlation_id: 2,
            subscription_id: 0,
            stream: "orders".into(),
            offset: OffsetSpec::First,
            credit: 10,
            properties: Some(vec![("name".into(), "orders-reader".into())]),
        }))
        .await;
    let mut consumed = 0;
    while consumed < 1001 {
        match consumer.recv().await.unwrap() {
            Frame::SubscribeResponse(r) => assert!(r.code.is_ok()),
            Frame::Deliver(d) => {
                consumed += d.chunk().unwrap().records().count();
                consumer
                    .send(Frame::Credit(Credit {
                        subscription_id: 0,
                        credit: 1,
                    }))
                    .await;
            }
            other => panic!("{other:?}"),
        }
    }
    consumer
        .send(Frame::StoreOffset(StoreOffset {
            reference: "orders-reader".into(),
            stream: "orders".into(),
            offset: 499,
        }))
        .await;
    (producer, consumer)
}

/// Keys of the capture brook leaves out on purpose (documented in docs/COMPATIBILITY.md):
/// Erlang VM and Mnesia internals, and statistics brook does not keep. A trailing `*` is a
/// prefix.
const NOT_IN_BROOK: &[&str] = &[
    // Erlang process memory and scheduler work, Erlang's own versions and Cowboy's options.
    "memory",
    "reductions*",
    "erlang_*",
    "release_series_support_status",
    "cowboy_opts",
    "run_queue",
    "proc_*",
    "gc_*",
    "context_switches*",
    "net_ticktime",
    "metrics_gc_queue_length",
    "ra_open_file_metrics",
    // Mnesia, the classic message store and queue index: RabbitMQ's storage, not brook's.
    "mnesia_*",
    "msg_store_*",
    "queue_index_*",
    // Rates and churn statistics brook does not sample (yet: see docs/COMPATIBILITY.md).
    "churn_rates",
    "message_stats",
    "io_*",
    "channel_*",
    "connection_created*",
    "connection_closed*",
    "queue_created*",
    "queue_declared*",
    "queue_deleted*",
    // Files of an Erlang release.
    "log_files",
    "config_files",
    // Who created an exchange, and the Erlang cluster's id: not recorded.
    "user_who_performed_action",
    "global_parameters",
];

/// Objects whose keys are data (node names, client properties, socket options), not fields.
const MAPS: &[&str] = &[
    "cluster_state",
    "readers",
    "client_properties",
    "socket_opts",
];

fn left_out(key: &str) -> bool {
    NOT_IN_BROOK.iter().any(|k| match k.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => key == *k,
    })
}

/// Where `ours` lacks a key of `theirs` or holds another JSON type. Arrays are compared by
/// their first items; extra keys in `ours` are fine.
fn shape_diffs(theirs: &Value, ours: &Value, path: &str, out: &mut Vec<String>) {
    match (theirs, ours) {
        (Value::Object(t), Value::Object(o)) => {
            for (key, tv) in t {
                if left_out(key) {
                    continue;
                }
                if MAPS.contains(&key.as_str()) {
                    if !o.get(key).is_some_and(Value::is_object) {
                        out.push(format!("{path}.{key}: missing or not an object"));
                    }
                    continue;
                }
                match o.get(key) {
                    None => out.push(format!("{path}.{key}: missing")),
                    Some(ov) => shape_diffs(tv, ov, &format!("{path}.{key}"), out),
                }
            }
        }
        (Value::Array(t), Value::Array(o)) => {
            if let (Some(t), Some(o)) = (t.first(), o.first()) {
                shape_diffs(t, o, &format!("{path}[0]"), out);
            } else if !t.is_empty() {
                out.push(format!("{path}: empty, RabbitMQ has {} items", t.len()));
            }
        }
        (t, o) if std::mem::discriminant(t) != std::mem::discriminant(o) => {
            out.push(format!("{path}: {t} in RabbitMQ, {o} in brook"));
        }
        _ => {}
    }
}

/// Every captured GET, replayed on brook after the same workload: same status, and every key
/// RabbitMQ answered with (but the ones in `NOT_IN_BROOK`) is there with the same JSON type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_answers_have_rabbitmqs_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let http_addr = broker.http_addr;
    let definitions = golden("definitions.json")["body"].clone();
    assert_eq!(import(http_addr, GUEST, &definitions).await.status, 204);
    let _connections = capture_workload(broker.addr).await;

    let mut diffs = Vec::new();
    for file in [
        "overview.json",
        "whoami.json",
        "nodes.json",
        "alarms.json",
        "vhosts.json",
        "vhost.json",
        "users.json",
        "user.json",
        "permissions.json",
        "permission.json",
        "queues.json",
        "queue-orders.json",
        "exchange-invoices.json",
        "bindings-invoices.json",
        "connections.json",
        "stream-connections.json",
        "stream-publishers.json",
        "stream-publishers-orders.json",
        "stream-consumers.json",
        "definitions.json",
    ] {
        let capture = golden(file);
        let path = capture["request"]
            .as_str()
            .unwrap()
            .strip_prefix("GET ")
            .unwrap();
        let response = http::get(http_addr, path, RABBIT).await;
        assert_eq!(
            response.status as u64,
            capture["status"].as_u64().unwrap(),
            "{path}"
        );
        shape_diffs(&capture["body"], &response.json(), path, &mut diffs);
    }
    assert!(
        diffs.is_empty(),
        "differences from RabbitMQ:\n{}",
        diffs.join("\n")
    );
}

/// The values behind the shapes: counters of the workload, binding keys hashed as RabbitMQ
/// hashes them, and the error answers of the capture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_values_and_errors_match_rabbitmq() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let addr = broker.http_addr;
    assert_eq!(
        import(addr, GUEST, &golden("definitions.json")["body"])
            .await
            .status,
        204
    );
    let _connections = capture_workload(broker.addr).await;

    let publishers = http::get(addr, "/api/stream/publishers/%2F/orders", RABBIT)
        .await
        .json();
    assert_eq!(publishers[0]["published"], 1001);
    assert_eq!(publishers[0]["confirmed"], 1001);
    assert_eq!(publishers[0]["errored"], 0);
    assert_eq!(publishers[0]["reference"], "orders-producer");
    let consumers = http::get(addr, "/api/stream/consumers", RABBIT)
        .await
        .json();
    let c = &consumers[0];
    assert_eq!(c["consumed"], 1001);
    assert_eq!(c["properties"], json!({"name": "orders-reader"}));
    // The last chunk dispatched starts at `offset`; the lag runs to the log's last offset.
    let last = http::get(addr, "/api/queues/%2F/orders", RABBIT)
        .await
        .json()["messages"]
        .as_u64()
        .unwrap()
        - 1;
    assert_eq!(
        c["offset_lag"].as_u64().unwrap(),
        last - c["offset"].as_u64().unwrap()
    );
    let conns = http::get(addr, "/api/connections", RABBIT).await.json();
    let names: Vec<&str> = conns
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["user_provided_name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"capture-producer") && names.contains(&"capture-consumer"));

    // Binding keys: RabbitMQ's `properties_key`, `erlang:phash2` of the arguments.
    let ours = http::get(addr, "/api/exchanges/%2F/invoices/bindings/source", RABBIT)
        .await
        .json();
    let theirs = golden("bindings-invoices.json")["body"].clone();
    let keys = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| b["properties_key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(keys(&ours), keys(&theirs));

    // The captured errors.
    let missing = http::get(addr, "/api/queues/%2F/missing", RABBIT).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json(),
        json!({"error": "Object Not Found", "reason": "Not Found"})
    );
    let anonymous = http::get(addr, "/api/nodes", None).await;
    assert_eq!((anonymous.status, anonymous.body.as_str()), (401, ""));
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Basic realm=\"RabbitMQ Management\"")
    );
}

/// Who may do what over HTTP: RabbitMQ's tags, vhost access and resource permissions, with its
/// status codes and reasons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_and_permissions_decide_as_in_rabbitmq() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let addr = broker.http_addr;
    assert_eq!(
        import(addr, GUEST, &golden("definitions.json")["body"])
            .await
            .status,
        204
    );

    let refused = |r: http::Response| {
        (
            r.status,
            r.json()["reason"].as_str().unwrap_or("").to_owned(),
        )
    };
    let bad_login = http::get(addr, "/api/whoami", Some(("ops-alice", "wrong"))).await;
    assert_eq!(
        bad_login.json(),
        json!({"error": "not_authorized", "reason": "Login failed"})
    );
    assert_eq!(bad_login.status, 401);
    assert_eq!(
        http::get(addr, "/api/whoami", Some(("ops-alice", "")))
            .await
            .status,
        401
    );
    assert_eq!(
        http::get(addr, "/api/whoami", ALICE).await.json(),
        json!({"name": "ops-alice", "tags": ["management"]})
    );
    assert_eq!(
        refused(http::get(addr, "/api/users", ALICE).await),
        (401, "Not administrator user".into())
    );
    assert_eq!(
        refused(http::get(addr, "/api/nodes", ALICE).await),
        (401, "Not monitor user".into())
    );
    assert_eq!(
        refused(http::get(addr, "/api/queues/%2F", ALICE).await),
        (401, "User not authorised to access virtual host".into())
    );
    // A wrong method is a 405 before any credentials are looked at.
    assert_eq!(
        http::send(addr, "PUT", "/api/overview", None, "{}")
            .await
            .status,
        405
    );

    // alice may configure `^alice-` in ops-v only, and sees only ops-v's objects.
    let stream = r#"{"durable": true, "arguments": {"x-queue-type": "stream", "x-max-age": "1D"}}"#;
    assert_eq!(
        http::send(addr, "PUT", "/api/queues/ops-v/alice-q", ALICE, stream)
            .await
            .status,
        201
    );
    assert_eq!(
        http::send(addr, "PUT", "/api/queues/ops-v/alice-q", ALICE, stream)
            .await
            .status,
        204
    );
    let other = r#"{"durable": true, "arguments": {"x-queue-type": "stream", "x-max-age": "2D"}}"#;
    assert_eq!(
        refused(http::send(addr, "PUT", "/api/queues/ops-v/alice-q", ALICE, other).await),
        (400, "inequivalent arg 'x-max-age' for queue 'alice-q' in vhost 'ops-v': received '2D' but current is '1D'".into())
    );
    assert_eq!(
        refused(http::send(addr, "PUT", "/api/queues/ops-v/bob-q", ALICE, stream).await),
        (401, "Access refused.".into())
    );
    let queues = http::get(addr, "/api/queues", ALICE).await.json();
    let names: Vec<&str> = queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alice-q"]);
    assert_eq!(
        http::delete(addr, "/api/queues/ops-v/alice-q", ALICE)
            .await
            .status,
        204
    );
    assert_eq!(
        http::delete(addr, "/api/queues/ops-v/alice-q", ALICE)
            .await
            .status,
        404
    );

    // A user without a management tag cannot use the API at all.
    let user = r#"{"password": "pw", "tags": ""}"#;
    assert_eq!(
        http::send(addr, "PUT", "/api/users/app", GUEST, user)
            .await
            .status,
        201
    );
    assert_eq!(
        refused(http::get(addr, "/api/whoami", Some(("app", "pw"))).await),
        (401, "Not management user".into())
    );
}

/// Users, vhosts and permissions over HTTP, as scripts create them; they reach the stream
/// protocol at once and survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_vhosts_and_permissions_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let addr = broker.http_addr;
    let bad = |r: http::Response| (r.status, r.json()["reason"].clone());

    assert_eq!(
        http::send(addr, "PUT", "/api/vhosts/prod", GUEST, "")
            .await
            .status,
        201
    );
    assert_eq!(
        http::send(
            addr,
            "PUT",
            "/api/vhosts/prod",
            GUEST,
            r#"{"description": "d"}"#
        )
        .await
        .status,
        204
    );
    assert_eq!(
        http::get(addr, "/api/vhosts/prod", GUEST).await.json()["description"],
        "d"
    );
    // The creator got full permissions on the new vhost.
    let p = http::get(addr, "/api/permissions/prod/guest", GUEST)
        .await
        .json();
    assert_eq!(
        (p["configure"].as_str(), p["read"].as_str()),
        (Some(".*"), Some(".*"))
    );

    assert_eq!(
        bad(http::send(
            addr,
            "PUT",
            "/api/users/app",
            GUEST,
            r#"{"password": "s3cret"}"#
        )
        .await),
        (400, json!("tags_not_present"))
    );
    assert_eq!(
        bad(http::send(
            addr,
            "PUT",
            "/api/users/app",
            GUEST,
            r#"{"password": "a", "password_hash": "b", "tags": ""}"#
        )
        .await),
        (400, json!("both_password_and_password_hash_are_provided"))
    );
    let app = r#"{"password": "s3cret", "tags": "management"}"#;
    assert_eq!(
        http::send(addr, "PUT", "/api/users/app", GUEST, app)
            .await
            .status,
        201
    );
    assert_eq!(
        http::send(addr, "PUT", "/api/users/app", GUEST, app)
            .await
            .status,
        204
    );
    // Without permissions the stream protocol refuses the vhost.
    let open = |vhost: &'static str| Raw::open_as(broker.addr, "app", "s3cret", vhost, &[]);
    assert_eq!(
        open("prod").await.err(),
        Some(ResponseCode::VIRTUAL_HOST_ACCESS_FAILURE)
    );
    assert_eq!(
        bad(http::send(
            addr,
            "PUT",
            "/api/permissions/prod/app",
            GUEST,
            r#"{"configure": ".*"}"#
        )
        .await),
        (400, json!("[{key_missing,write},{key_missing,read}]"))
    );
    assert_eq!(
        bad(http::send(
            addr,
            "PUT",
            "/api/permissions/nope/app",
            GUEST,
            r#"{"configure": "", "write": "", "read": ""}"#
        )
        .await),
        (400, json!("vhost_or_user_not_found"))
    );
    let perms = r#"{"configure": "^app-", "write": "^app-", "read": ".*"}"#;
    assert_eq!(
        http::send(addr, "PUT", "/api/permissions/prod/app", GUEST, perms)
            .await
            .status,
        201
    );
    let mut c = open("prod").await.unwrap();
    assert_eq!(c.create("app-s", &[]).await, ResponseCode::OK);
    assert_eq!(c.create("other", &[]).await, ResponseCode::ACCESS_REFUSED);
    drop(c);

    // Everything is on disk: after a restart the user logs in and its stream is in `prod`.
    let broker = broker.restart().await;
    let addr = broker.http_addr;
    assert!(
        Raw::open_as(broker.addr, "app", "s3cret", "prod", &[])
            .await
            .is_ok()
    );
    let q = http::get(addr, "/api/queues/prod/app-s", GUEST).await;
    assert_eq!((q.status, q.json()["vhost"].as_str()), (200, Some("prod")));

    // Listings per vhost show that vhost's objects only; an unknown vhost is a 404.
    let stream = r#"{"durable": true, "arguments": {"x-queue-type": "stream"}}"#;
    let created = http::send(addr, "PUT", "/api/queues/%2F/root-s", GUEST, stream).await;
    assert_eq!(created.status, 201);
    let _in_prod = Raw::open_as(broker.addr, "app", "s3cret", "prod", &[])
        .await
        .unwrap();
    let _in_root = Raw::open_as(broker.addr, "guest", "guest", "/", &[])
        .await
        .unwrap();
    for (path, at_least) in [
        ("/api/queues/prod", 1),
        ("/api/exchanges/prod", 0),
        ("/api/bindings/prod", 0),
        ("/api/vhosts/prod/connections", 1),
        ("/api/stream/connections/prod", 1),
    ] {
        let items = http::get(addr, path, GUEST).await.json();
        let vhosts: Vec<&str> = items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["vhost"].as_str().unwrap())
            .collect();
        assert!(
            vhosts.len() >= at_least && vhosts.iter().all(|v| *v == "prod"),
            "{path}: {vhosts:?}"
        );
        let everywhere = path
            .replace("/prod", "")
            .replace("/vhosts/connections", "/connections");
        let all = http::get(addr, &everywhere, GUEST).await.json();
        assert!(
            all.as_array().unwrap().len() > vhosts.len() || at_least == 0,
            "{everywhere}"
        );
        let unknown = http::get(addr, &path.replace("prod", "nowhere"), GUEST).await;
        assert_eq!(unknown.status, 404, "{path}");
    }

    // Deleting the vhost deletes its streams and permissions.
    assert_eq!(
        http::delete(addr, "/api/vhosts/prod", GUEST).await.status,
        204
    );
    assert_eq!(http::get(addr, "/api/vhosts/prod", GUEST).await.status, 404);
    assert!(!broker.broker.stream_exists("prod", "app-s"));
    assert_eq!(
        http::get(addr, "/api/permissions/prod/app", GUEST)
            .await
            .status,
        404
    );
    assert_eq!(
        http::delete(addr, "/api/users/app", GUEST).await.status,
        204
    );
    assert_eq!(http::get(addr, "/api/users/app", GUEST).await.status, 404);
}

/// A super stream built over HTTP as `rabbitmq-streams add_super_stream` builds it: the
/// exchange, the partition streams, one binding each. The stream protocol then routes by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn super_streams_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let addr = broker.http_addr;
    let exchange = r#"{"type": "direct", "durable": true, "auto_delete": false, "internal": false, "arguments": {"x-super-stream": true}}"#;
    assert_eq!(
        http::send(addr, "PUT", "/api/exchanges/%2F/invoices", GUEST, exchange)
            .await
            .status,
        201
    );
    assert_eq!(
        http::send(addr, "PUT", "/api/exchanges/%2F/invoices", GUEST, exchange)
            .await
            .status,
        204
    );
    assert_eq!(
        http::send(addr, "PUT", "/api/exchanges/%2F/amq.x", GUEST, exchange)
            .await
            .status,
        401
    );
    // Partitions bound out of order land in partition order.
    for i in [2, 0, 1] {
        let q = r#"{"durable": true, "arguments": {"x-queue-type": "stream"}}"#;
        assert_eq!(
            http::send(
                addr,
                "PUT",
                &format!("/api/queues/%2F/invoices-{i}"),
                GUEST,
                q
            )
            .await
            .status,
            201
        );
    }
    for i in [0, 1, 2] {
        let b = format!(
            r#"{{"routing_key": "{i}", "arguments": {{"x-stream-partition-order": {i}}}}}"#
        );
        let r = http::send(
            addr,
            "POST",
            &format!("/api/bindings/%2F/e/invoices/q/invoices-{i}"),
            GUEST,
            &b,
        )
        .await;
        assert_eq!(r.status, 201);
        let expected = [
            "invoices-0/0~iKEaZQ",
            "invoices-1/1~1jlUUQ",
            "invoices-2/2~eQ_kzA",
        ][i];
        assert_eq!(r.header("location"), Some(expected));
    }
    let missing = http::send(
        addr,
        "POST",
        "/api/bindings/%2F/e/nope/q/invoices-0",
        GUEST,
        "{}",
    )
    .await;
    assert_eq!(
        (missing.status, missing.json()["reason"].clone()),
        (404, json!("no exchange 'nope' in vhost '/'"))
    );

    let mut c = Raw::open(broker.addr).await;
    let r = c
        .request(Frame::Partitions(Partitions {
            correlation_id: 1,
            super_stream: "invoices".into(),
        }))
        .await;
    let Frame::PartitionsResponse(p) = r else {
        panic!("{r:?}")
    };
    assert_eq!(p.streams, vec!["invoices-0", "invoices-1", "invoices-2"]);
    let r = c
        .request(Frame::Route(Route {
            correlation_id: 2,
            routing_key: "1".into(),
            super_stream: "invoices".into(),
        }))
        .await;
    let Frame::RouteResponse(route) = r else {
        panic!("{r:?}")
    };
    assert_eq!(route.streams, vec!["invoices-1"]);

    // Unbinding by properties_key; deleting the exchange keeps the streams (as in RabbitMQ).
    assert_eq!(
        http::delete(
            addr,
            "/api/bindings/%2F/e/invoices/q/invoices-1/1~1jlUUQ",
            GUEST
        )
        .await
        .status,
        204
    );
    let left = http::get(addr, "/api/exchanges/%2F/invoices/bindings/source", GUEST)
        .await
        .json();
    assert_eq!(left.as_array().unwrap().len(), 2);
    assert_eq!(
        http::delete(addr, "/api/exchanges/%2F/invoices", GUEST)
            .await
            .status,
        204
    );
    assert_eq!(
        http::get(addr, "/api/exchanges/%2F/invoices", GUEST)
            .await
            .status,
        404
    );
    assert!(broker.broker.stream_exists("/", "invoices-1"));
}

/// Definitions out of one brook and into another give the same users, vhosts, permissions,
/// streams and super streams; and RabbitMQ's own export imports (alice logs in with her
/// RabbitMQ password).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_round_trip() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(a_dir.path()).await;
    assert_eq!(
        import(a.http_addr, GUEST, &golden("definitions.json")["body"])
            .await
            .status,
        204
    );
    let exported = http::get(a.http_addr, "/api/definitions", GUEST)
        .await
        .json();

    let b = start(b_dir.path()).await;
    // Only JSON is taken, as RabbitMQ: a form post is a 415.
    let form = http::send(
        b.http_addr,
        "POST",
        "/api/definitions",
        GUEST,
        &exported.to_string(),
    )
    .await;
    assert_eq!(form.status, 415);
    assert_eq!(import(b.http_addr, GUEST, &exported).await.status, 204);
    let again = http::get(b.http_addr, "/api/definitions", GUEST)
        .await
        .json();
    for key in [
        "users",
        "vhosts",
        "permissions",
        "queues",
        "exchanges",
        "bindings",
    ] {
        let sorted = |v: &Value| {
            let mut items: Vec<String> = v[key]
                .as_array()
                .unwrap()
                .iter()
                .map(Value::to_string)
                .collect();
            items.sort();
            items
        };
        assert_eq!(sorted(&again), sorted(&exported), "{key}");
    }
    assert_eq!(exported["queues"].as_array().unwrap().len(), 4);
    assert!(
        Raw::open_as(b.addr, "ops-alice", "alice-pw", "ops-v", &[])
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_can_be_listed_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let addr = broker.http_addr;
    assert_eq!(http::get(addr, "/api/connections/", GUEST).await.body, "[]");

    let mut c = Raw::connect(broker.addr).await;
    c.request(Frame::PeerProperties(PeerProperties {
        correlation_id: 1,
        properties: vec![("connection_name".into(), "to-be-killed".into())],
    }))
    .await;
    let list = http::get(addr, "/api/connections/", GUEST).await.json();
    let conn = &list[0];
    assert_eq!(conn["client_properties"]["connection_name"], "to-be-killed");
    assert_eq!(conn["protocol"], "stream");
    let name = conn["name"].as_str().unwrap().to_string();
    assert!(name.contains(" -> "), "RabbitMQ's name form: {name}");

    // One connection by name (percent-encoded in the path, as HTTP clients send it).
    let path = format!(
        "/api/connections/{}",
        name.replace(':', "%3A")
            .replace(' ', "%20")
            .replace('>', "%3E")
    );
    assert_eq!(
        http::get(addr, &path, GUEST).await.json()["name"],
        name.as_str()
    );
    assert_eq!(
        http::get(addr, "/api/connections/nope", GUEST).await.status,
        404
    );

    // Closing it drops the socket, without a Close frame.
    assert_eq!(http::delete(addr, &path, GUEST).await.status, 204);
    c.expect_eof().await;
    assert_eq!(http::get(addr, "/api/connections/", GUEST).await.body, "[]");
    assert_eq!(http::delete(addr, &path, GUEST).await.status, 404);
}

/// The message browser reads what the official Rust client wrote as AMQP 1.0: properties,
/// application properties, the body as text and JSON; and long-polls for the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_browser_decodes_amqp_messages() {
    use rabbitmq_stream_client::Environment;
    use rabbitmq_stream_client::types::Message;
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let env = Environment::builder()
        .host("127.0.0.1")
        .port(broker.port())
        .build()
        .await
        .unwrap();
    env.stream_creator().create("events").await.unwrap();
    let producer = env.producer().build("events").await.unwrap();
    for i in 0..3 {
        let message = Message::builder()
            .body(format!(r#"{{"n": {i}}}"#))
            .properties()
            .message_id(format!("id-{i}"))
            .content_type("application/json")
            .message_builder()
            .application_properties()
            .insert("region", "eu")
            .message_builder()
            .build();
        assert!(
            producer
                .send_with_confirm(message)
                .await
                .unwrap()
                .confirmed()
        );
    }
    producer.close().await.unwrap();

    let page = http::get(
        broker.http_addr,
        "/api/stream/messages/%2F/events?offset=1&limit=10",
        GUEST,
    )
    .await
    .json();
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    let m = &messages[0];
    assert_eq!(m["offset"], 1);
    assert_eq!(m["format"], "amqp-1.0");
    assert_eq!(m["properties"]["message_id"], "id-1");
    assert_eq!(m["properties"]["content_type"], "application/json");
    assert_eq!(m["application_properties"], json!({"region": "eu"}));
    assert_eq!(m["body"]["json"], json!({"n": 1}));
    assert_eq!(page["next_offset"], 3);

    // Nothing after the end yet: a long poll answers when a message arrives.
    let addr = broker.http_addr;
    let poll = tokio::spawn(async move {
        http::get(
            addr,
            "/api/stream/messages/%2F/events?offset=3&wait_ms=10000",
            GUEST,
        )
        .await
        .json()
    });
    let producer = env.producer().build("events").await.unwrap();
    let late = Message::builder().body("late").build();
    assert!(producer.send_with_confirm(late).await.unwrap().confirmed());
    producer.close().await.unwrap();
    let page = poll.await.unwrap();
    assert_eq!(page["messages"][0]["body"]["text"], "late");
    // Reading needs read permission on the stream.
    let refused = http::get(
        broker.http_addr,
        "/api/stream/messages/%2F/events",
        Some(("nobody", "x")),
    )
    .await;
    assert_eq!(refused.status, 401);
}
