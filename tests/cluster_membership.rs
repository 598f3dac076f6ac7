//! Nodes join and leave a running cluster (issue #13), as RabbitMQ's `join_cluster` and
//! `forget_cluster_node`: a fourth brook started with `--join` becomes a voting member and
//! hosts new streams; once stopped and forgotten with `brook ctl forget_cluster_node`, the
//! others count majorities without it. `brook ctl stream_status` shows each member's copy;
//! `add_replica` and `delete_replica` change a stream's members.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use serde_json::Value;

use common::child::Brook;
use common::cluster::*;
use rabbitmq_stream_client::Environment;
use rabbitmq_stream_client::types::{ByteCapacity, LeaderLocator, Message, OffsetSpecification};

async fn env(port: u16) -> Result<Environment, rabbitmq_stream_client::error::ClientError> {
    Environment::builder()
        .host("127.0.0.1")
        .port(port)
        .build()
        .await
}

/// `brook ctl ARGS` against `brook`: its exit code and what it printed.
fn ctl(brook: &Brook, args: &[&str]) -> (i32, String) {
    let url = format!("http://{}", brook.http_addr());
    let out = Command::new(env!("CARGO_BIN_EXE_brook"))
        .args(["ctl", "--url", &url])
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn forget(brook: &Brook, node: &str) -> (i32, String) {
    ctl(brook, &["forget_cluster_node", node])
}

/// Waits until `stream` has `members` members, every one at offset `last`.
async fn until_caught_up(brooks: &[Option<Brook>], stream: &str, members: usize, last: u64) {
    retry(
        || logs(brooks),
        || async {
            let rows = stream_status(brooks[1].as_ref().unwrap(), stream);
            let caught_up = rows.iter().all(|r| {
                r["offset"] == last && r["committed_offset"] == last && r["offset_lag"] == 0
            });
            match rows.len() == members && caught_up {
                true => Ok(rows),
                false => Err(format!("{rows:#?}")),
            }
        },
    )
    .await;
}

/// `brook ctl stream_status` against `brook`, as JSON rows.
fn stream_status(brook: &Brook, stream: &str) -> Vec<Value> {
    let url = format!("http://{}", brook.http_addr());
    let out = Command::new(env!("CARGO_BIN_EXE_brook"))
        .args([
            "ctl",
            "--url",
            &url,
            "--format",
            "json",
            "stream_status",
            stream,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_then_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ports, mut brooks) = three_nodes(dir.path()).await;
    // A stream from before the join: three members, and retention has removed its first
    // segments (one ~1 KiB chunk per segment, 3 KiB kept).
    let first_env = retry(|| logs(&brooks), || env(port(&brooks, 0))).await;
    first_env
        .stream_creator()
        .max_length(ByteCapacity::B(3000))
        .max_segment_size(ByteCapacity::B(1000))
        .create("early")
        .await
        .unwrap();
    let producer = first_env.producer().build("early").await.unwrap();
    for batch in 0..10 {
        let early = (0..5)
            .map(|i| Message::builder().body(vec![b'0' + batch; 200 + i]).build())
            .collect();
        let statuses = producer.batch_send_with_confirm(early).await.unwrap();
        assert!(statuses.iter().all(|s| s.confirmed()));
    }
    producer.close().await.unwrap();
    ports.extend(free_ports(1));
    let peers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    brooks.push(Some(start_node_with(
        4,
        &ports,
        &peers,
        &["--join"],
        dir.path(),
    )));
    let first = brooks[0].as_ref().unwrap().http_addr();
    formed_of(first, 4).await;

    // A node with another secret is refused at the cluster port, and never joins.
    let wrong = dir.path().join("wrong-secret");
    std::fs::write(&wrong, "not the cluster's").unwrap();
    let mut with_five = ports.clone();
    with_five.extend(free_ports(1));
    let peers5: Vec<String> = with_five.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let wrong_flags = ["--join", "--cluster-secret-file", wrong.to_str().unwrap()];
    let intruder = start_node_with(5, &with_five, &peers5, &wrong_flags, dir.path());
    retry(
        || logs(&brooks),
        || async {
            let refused = brooks[..4]
                .iter()
                .any(|b| b.as_ref().unwrap().logged("cluster secret mismatch"));
            refused.then_some(()).ok_or("not refused yet")
        },
    )
    .await;
    assert_eq!(nodes(first).await.len(), 4);
    intruder.kill();

    // add_replica puts the old stream on the new node too, which catches up from the
    // leader; delete_replica takes it off again, but never the leader.
    let rows = stream_status(brooks[1].as_ref().unwrap(), "early");
    let writer = rows.iter().find(|r| r["role"] == "writer").unwrap();
    assert!(writer["first_offset"].as_u64().unwrap() > 0, "{rows:#?}");
    // The new member starts at the leader's first chunk: it cannot continue from nothing.
    // The leader's writer goes on meanwhile: a producer connected before keeps publishing,
    // now confirmed by a majority of four.
    let producer = first_env.producer().build("early").await.unwrap();
    let (code, out) = ctl(brooks[0].as_ref().unwrap(), &["add_replica", "early", "4"]);
    assert_eq!(code, 0, "{out}");
    until_caught_up(&brooks, "early", 4, 49).await;
    let restarted = "log started again at the leader's first chunk";
    assert!(brooks[3].as_ref().unwrap().logged(restarted));
    let more = (0..5)
        .map(|i| Message::builder().body(vec![b'x'; 200 + i]).build())
        .collect();
    let statuses = producer.batch_send_with_confirm(more).await.unwrap();
    assert!(statuses.iter().all(|s| s.confirmed()));
    producer.close().await.unwrap();
    until_caught_up(&brooks, "early", 4, 54).await;
    let rows = stream_status(brooks[1].as_ref().unwrap(), "early");
    let writer = rows.iter().find(|r| r["role"] == "writer").unwrap();
    let writer = writer["node"].as_str().unwrap().to_owned();
    let (code, out) = ctl(
        brooks[0].as_ref().unwrap(),
        &["delete_replica", "early", &writer],
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("leads the stream"), "{out}");
    let (code, out) = ctl(
        brooks[0].as_ref().unwrap(),
        &["delete_replica", "early", "4"],
    );
    assert_eq!(code, 0, "{out}");
    until_caught_up(&brooks, "early", 3, 54).await;

    // A stream declared on the new node is led there and replicated on all four.
    let fourth = retry(|| logs(&brooks), || env(port(&brooks, 3))).await;
    retry(
        || logs(&brooks),
        || {
            fourth
                .stream_creator()
                .leader_locator(LeaderLocator::ClientLocal)
                .create("joined")
        },
    )
    .await;
    let producer = fourth.producer().build("joined").await.unwrap();
    let statuses = producer
        .batch_send_with_confirm(numbered(0, 100))
        .await
        .unwrap();
    assert!(statuses.iter().all(|s| s.confirmed()));
    producer.close().await.unwrap();
    let r = common::http::get(first, "/api/queues/%2F/joined", common::http::GUEST).await;
    let queue = r.json();
    let leader = queue["leader"].as_str().unwrap_or_default();
    assert!(leader.starts_with("brook-4@"), "{queue:#}");
    assert!(
        queue["leader"].as_str().unwrap().starts_with("brook-4@"),
        "{queue:#}"
    );
    assert_eq!(queue["members"].as_array().unwrap().len(), 4, "{queue:#}");

    // `brook ctl stream_status`: four members, the writer on node 4, every replica caught up.
    retry(
        || logs(&brooks),
        || async {
            let rows = stream_status(brooks[1].as_ref().unwrap(), "joined");
            let writers: Vec<&Value> = rows.iter().filter(|r| r["role"] == "writer").collect();
            let caught_up = rows
                .iter()
                .all(|r| r["offset"] == 99 && r["committed_offset"] == 99 && r["offset_lag"] == 0);
            match rows.len() == 4
                && writers.len() == 1
                && writers[0]["node"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("brook-4@")
                && caught_up
            {
                true => Ok(()),
                false => Err(format!("{rows:#?}")),
            }
        },
    )
    .await;

    // A running node is not forgotten.
    let (code, out) = forget(brooks[0].as_ref().unwrap(), "4");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("running"), "{out}");

    // Stopped, its stream fails over; then it can be forgotten.
    brooks[3].take().unwrap().kill();
    retry(
        || logs(&brooks),
        || async {
            match forget(brooks[0].as_ref().unwrap(), "4") {
                (0, _) => Ok(()),
                (_, out) => Err(out),
            }
        },
    )
    .await;
    formed(first).await;

    // Three voters now: nodes 1 and 2 are a majority without node 3.
    brooks[2].take().unwrap().kill();
    let env = retry(|| logs(&brooks), || env(port(&brooks, 0))).await;
    retry(|| logs(&brooks), || env.stream_creator().create("after")).await;
    let mut consumer = retry(
        || logs(&brooks),
        || {
            env.consumer()
                .offset(OffsetSpecification::First)
                .build("joined")
        },
    )
    .await;
    expect_numbered(&mut consumer, 0, 100).await;
    consumer.handle().close().await.unwrap();
}
