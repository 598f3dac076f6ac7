//! Three brooks as processes on loopback forming a cluster (issue #13): the metadata group
//! elects a leader, `/api/nodes` and `brook ctl cluster_status` list every member, a kill -9
//! of the leader elects another within seconds, and the killed node rejoins from its files.
//! Streams are replicated: the official Rust client publishes to the leader and reads from a
//! replica, and a publish is confirmed only while a majority holds it.

#![allow(clippy::unwrap_used)]

mod common;

use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::child::Brook;
use common::cluster::*;
use common::http::{self, GUEST};
use futures::StreamExt;
use rabbitmq_stream_client::Environment;
use rabbitmq_stream_client::types::OffsetSpecification;

async fn env(port: u16) -> Environment {
    Environment::builder()
        .host("127.0.0.1")
        .port(port)
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_stream_confirms_on_a_majority_and_serves_consumers_on_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, mut brooks) = three_nodes(dir.path()).await;
    let port = |b: &Option<Brook>| b.as_ref().unwrap().addr.port();
    let env = env(port(&brooks[0])).await;
    // Declared on node 1: client-local puts the leader there, replicas on 2 and 3.
    env.stream_creator().create("replicated").await.unwrap();
    let producer = env.producer().build("replicated").await.unwrap();
    let statuses = producer
        .batch_send_with_confirm(numbered(0, 1000))
        .await
        .unwrap();
    assert!(statuses.iter().all(|s| s.confirmed()));

    // Metadata names the leader and two replicas; the client reads from a replica.
    let mut consumer = env
        .consumer()
        .offset(OffsetSpecification::First)
        .build("replicated")
        .await
        .unwrap();
    expect_numbered(&mut consumer, 0, 1000).await;
    // Closed before its node is killed: the client's handling of a lost connection can spin
    // on the runtime's threads.
    consumer.handle().close().await.unwrap();
    // Every replica has the chunks (its own stream statistics, over its own API).
    for b in &brooks[1..] {
        let http = b.as_ref().unwrap().http_addr();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let q = http::get(http, "/api/queues/%2F/replicated", GUEST).await;
            if q.status == 200 && q.json()["messages"].as_u64() == Some(1000) {
                break;
            }
            assert!(Instant::now() < deadline, "{}", q.body);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // One replica gone: the other one and the leader are a majority.
    brooks[2].take().unwrap().kill();
    let sent = producer.batch_send_with_confirm(numbered(1000, 1100));
    let Ok(statuses) = tokio::time::timeout(Duration::from_secs(20), sent).await else {
        panic!("no confirm with one replica down\n{}", logs(&brooks));
    };
    let statuses = statuses.unwrap();
    assert!(statuses.iter().all(|s| s.confirmed()));

    // Both gone: the leader alone is a minority and cannot confirm...
    brooks[1].take().unwrap().kill();
    let pending = tokio::spawn(async move {
        let statuses = producer
            .batch_send_with_confirm(numbered(1100, 1101))
            .await
            .unwrap();
        // Closed here: the client's Drop blocks its thread (see tests/client.rs).
        producer.close().await.unwrap();
        statuses
    });
    let mut pending = pending;
    let early = tokio::time::timeout(Duration::from_secs(1), &mut pending).await;
    assert!(early.is_err(), "a minority confirmed: {early:?}");
    // ...until a replica is back (from its files) and catches up.
    brooks[1] = Some(start_node(2, &ports, dir.path()));
    let statuses = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("confirmed once a majority holds it")
        .unwrap();
    assert!(statuses.iter().all(|s| s.confirmed()));
}

/// The stream's leader (node id, from its name `brook-N@host`) and epoch, as `node` sees
/// them.
async fn stream_leader(http: SocketAddr, stream: &str) -> Option<(u64, u64)> {
    let q = http::get(http, &format!("/api/queues/%2F/{stream}"), GUEST).await;
    if q.status != 200 {
        return None;
    }
    let q = q.json();
    let name = q["leader"].as_str()?;
    let id = name
        .strip_prefix("brook-")?
        .split('@')
        .next()?
        .parse()
        .ok()?;
    Some((id, q["brook"]["epoch"].as_u64()?))
}

/// Rounds of publishing with the official client, then kill -9 of the stream's leader: a
/// replica must take over with every confirmed message, and nothing may be read twice or out
/// of order. `BROOK_CLUSTER_ROUNDS` sets the rounds (default 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_confirmed_message() {
    use brook_harness::history::{Event, MessageId, check};
    let rounds: u64 = std::env::var("BROOK_CLUSTER_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let (ports, mut brooks) = three_nodes(dir.path()).await;
    let alive = |brooks: &[Option<Brook>]| brooks.iter().position(Option::is_some).unwrap();
    let first = brooks[0].as_ref().unwrap();
    env(first.addr.port())
        .await
        .stream_creator()
        .create("failover")
        .await
        .unwrap();
    let mut events = Vec::new();
    let mut failovers = Vec::new();
    let mut seq = 0u64;
    let mut in_flight_confirmed = 0u64;
    for round in 0..rounds {
        let node = brooks[alive(&brooks)].as_ref().unwrap();
        let (http, port) = (node.http_addr(), node.addr.port());
        let (leader, epoch) = stream_leader(http, "failover").await.unwrap();
        // Publish through whichever node is up; the client finds the leader with Metadata,
        // and retries while a new leader takes over (as applications do).
        let env = env(port).await;
        let mut producer = retry(
            || format!("round {round}\n{}", logs(&brooks)),
            || env.producer().name("harness").build("failover"),
        )
        .await;
        let batch = numbered(seq, seq + 100);
        let statuses = tokio::time::timeout(
            Duration::from_secs(20),
            producer.batch_send_with_confirm(batch),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: no confirms\n{}", logs(&brooks)))
        .unwrap();
        for (i, s) in statuses.iter().enumerate() {
            if s.confirmed() {
                events.push(Event::Confirmed {
                    message: MessageId {
                        producer: "harness".into(),
                        seq: seq + i as u64,
                    },
                    leader: leader.to_string(),
                    epoch,
                });
            }
        }
        seq += 100;
        // More publishes in flight while the leader dies: whatever of them is confirmed
        // must survive too.
        let in_flight = numbered(seq, seq + 2000);
        let base = seq;
        seq += 2000;
        let publishing = tokio::spawn(async move {
            let sent = producer.batch_send_with_confirm(in_flight);
            let outcome = tokio::time::timeout(Duration::from_secs(4), sent).await;
            // The client's Drop blocks its thread once its connection is gone
            // (tests/client.rs): leaked, not dropped.
            std::mem::forget(producer);
            outcome
        });

        // kill -9 the leader; the other two elect one of themselves.
        brooks[(leader - 1) as usize].take().unwrap().kill();
        let killed = Instant::now();
        let survivor = brooks[alive(&brooks)].as_ref().unwrap().http_addr();
        loop {
            if let Some((now, e)) = stream_leader(survivor, "failover").await
                && now != leader
                && e > epoch
            {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "round {round}: no new leader\n{}",
                logs(&brooks)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        failovers.push(killed.elapsed());
        if let Ok(Ok(Ok(statuses))) = publishing.await {
            for (i, s) in statuses.iter().enumerate() {
                if s.confirmed() {
                    in_flight_confirmed += 1;
                    events.push(Event::Confirmed {
                        message: MessageId {
                            producer: "harness".into(),
                            seq: base + i as u64,
                        },
                        leader: leader.to_string(),
                        epoch,
                    });
                }
            }
        }
        brooks[(leader - 1) as usize] = Some(start_node(leader, &ports, dir.path()));
    }
    println!("confirmed of the batches in flight at the kills: {in_flight_confirmed}");
    failovers.sort();
    println!(
        "stream failover after kill -9 over {rounds} rounds: median {:?}, max {:?}",
        failovers[failovers.len() / 2],
        failovers.last().unwrap()
    );

    // Every confirmed message, once and in order, read through a node that is up.
    let node = brooks[alive(&brooks)].as_ref().unwrap();
    let reader = format!("consumer on {}", node.addr);
    read_all(node.addr.port(), "failover", &reader, &mut events).await;
    let confirmed = events
        .iter()
        .filter(|e| matches!(e, Event::Confirmed { .. }))
        .count();
    // Each round's first batch is published while all nodes are up: all of it is confirmed.
    assert_eq!(confirmed as u64, rounds * 100 + in_flight_confirmed);
    let violations = check(&events, &[&reader]);
    assert!(violations.is_empty(), "{violations:#?}");
}

/// Every cluster link through a proxy of its own: node i reaches node j through
/// `links[(i, j)]`, so a node can be cut off from the others in both directions.
struct Links {
    proxies: std::collections::BTreeMap<(u64, u64), brook_harness::proxy::Proxy>,
}

impl Links {
    async fn start(ports: &[u16]) -> Links {
        let mut proxies = std::collections::BTreeMap::new();
        for i in 1..=3u64 {
            for j in (1..=3u64).filter(|j| *j != i) {
                let upstream = format!("127.0.0.1:{}", ports[j as usize - 1])
                    .parse()
                    .unwrap();
                let proxy = brook_harness::proxy::Proxy::start(upstream).await.unwrap();
                proxies.insert((i, j), proxy);
            }
        }
        Links { proxies }
    }

    /// Node `i`'s `--peer` addresses.
    fn peers_of(&self, i: u64, ports: &[u16]) -> Vec<String> {
        (1..=3u64)
            .map(|j| match self.proxies.get(&(i, j)) {
                Some(p) => p.addr().to_string(),
                None => format!("127.0.0.1:{}", ports[j as usize - 1]),
            })
            .collect()
    }

    fn isolate(&self, node: u64) {
        for ((i, j), p) in &self.proxies {
            if *i == node || *j == node {
                p.cut();
            }
        }
    }

    fn heal(&self) {
        for p in self.proxies.values() {
            p.heal();
        }
    }
}

/// Rounds of: the stream's leader is cut off from the other two nodes. The leader alone
/// never confirms; the other two elect a new leader, which confirms; once the link heals,
/// the old leader follows and drops what it wrote alone. `BROOK_CLUSTER_PARTITIONS` sets
/// the rounds (default 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_never_confirms_and_the_majority_goes_on() {
    use brook_harness::history::{Event, MessageId, check};
    let rounds: u64 = std::env::var("BROOK_CLUSTER_PARTITIONS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(3);
    let links = Links::start(&ports).await;
    let brooks: Vec<Option<Brook>> = (1..=3)
        .map(|id| {
            Some(start_node_via(
                id,
                &ports,
                &links.peers_of(id, &ports),
                dir.path(),
            ))
        })
        .collect();
    let node = |id: u64| brooks[id as usize - 1].as_ref().unwrap();
    formed(node(1).http_addr()).await;
    env(node(1).addr.port())
        .await
        .stream_creator()
        .create("partitioned")
        .await
        .unwrap();
    let mut events = Vec::new();
    let mut seq = 0u64;
    let mut failovers = Vec::new();
    for round in 0..rounds {
        // Healed: wait until every node agrees on the leader and holds what it committed.
        let (leader, epoch) = settle(&brooks, "partitioned").await;
        let other = (1..=3).find(|n| *n != leader).unwrap();
        // Published through a majority-side node, before the cut: confirmed.
        let confirmed = publish(node(other).addr.port(), "harness", seq, &brooks).await;
        for (i, ok) in confirmed.iter().enumerate() {
            if *ok {
                events.push(Event::Confirmed {
                    message: MessageId {
                        producer: "harness".into(),
                        seq: seq + i as u64,
                    },
                    leader: leader.to_string(),
                    epoch,
                });
            }
        }
        seq += 100;

        links.isolate(leader);
        let cut = Instant::now();
        // The cut-off leader takes publishes but can never confirm them.
        let env_l = env(node(leader).addr.port()).await;
        let mut alone = env_l
            .producer()
            .name("minority")
            .build("partitioned")
            .await
            .unwrap();
        let early = tokio::time::timeout(
            Duration::from_millis(1500),
            alone.batch_send_with_confirm(numbered(1_000_000 + seq, 1_000_000 + seq + 10)),
        )
        .await;
        let confirmed_alone = early.is_ok_and(|r| r.is_ok_and(|s| s.iter().any(|s| s.confirmed())));
        assert!(!confirmed_alone, "round {round}: a minority confirmed");
        // The other two elect one of themselves.
        loop {
            if let Some((now, e)) = stream_leader(node(other).http_addr(), "partitioned").await
                && now != leader
                && e > epoch
            {
                break;
            }
            assert!(
                cut.elapsed() < Duration::from_secs(30),
                "round {round}: no new leader\n{}",
                logs(&brooks)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        failovers.push(cut.elapsed());
        links.heal();
        // The old leader learns it was replaced: its publisher is dropped with a
        // MetadataUpdate, as RabbitMQ's clients expect.
        let _ = alone.close().await;
        drop(env_l);
    }
    failovers.sort();
    println!(
        "stream failover after a partition over {rounds} rounds: median {:?}, max {:?}",
        failovers[failovers.len() / 2],
        failovers.last().unwrap()
    );
    // Every node catches up with the leader (the old ones cut back their lone writes)...
    settle(&brooks, "partitioned").await;
    // ...and holds every confirmed message, once and in order; the minority's writes are
    // gone everywhere.
    let mut readers = Vec::new();
    for id in 1..=3u64 {
        let reader = format!("node {id}");
        read_all(node(id).addr.port(), "partitioned", &reader, &mut events).await;
        readers.push(reader);
    }
    let names: Vec<&str> = readers.iter().map(String::as_str).collect();
    let violations = check(&events, &names);
    assert!(violations.is_empty(), "{violations:#?}");
    let minority = events
        .iter()
        .filter(|e| matches!(e, Event::Read { message, .. } if message.producer == "minority"))
        .count();
    assert_eq!(minority, 0, "the cut-off leader's writes survived");
}

/// Publishes 100 messages (`seq..seq + 100`) with a named producer; which were confirmed.
async fn publish(port: u16, name: &str, seq: u64, brooks: &[Option<Brook>]) -> Vec<bool> {
    let env = env(port).await;
    let mut producer = retry(
        || logs(brooks),
        || env.producer().name(name).build("partitioned"),
    )
    .await;
    let sent = producer.batch_send_with_confirm(numbered(seq, seq + 100));
    let statuses = tokio::time::timeout(Duration::from_secs(20), sent)
        .await
        .unwrap_or_else(|_| panic!("no confirms\n{}", logs(brooks)))
        .unwrap();
    producer.close().await.unwrap();
    statuses.iter().map(|s| s.confirmed()).collect()
}

/// Reads a stream from the start on the node at `port` (the client reads from that node
/// when it hosts the stream), recording every message as read by `reader`.
async fn read_all(
    port: u16,
    stream: &str,
    reader: &str,
    events: &mut Vec<brook_harness::history::Event>,
) {
    use brook_harness::history::{Event, MessageId};
    let env = env(port).await;
    // A restarted node announces its new stream port shortly after it starts: retry.
    let mut consumer = retry(String::new, || {
        env.consumer()
            .offset(OffsetSpecification::First)
            .build(stream)
    })
    .await;
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(3), consumer.next()).await {
        let d = d.unwrap();
        let body: u64 = std::str::from_utf8(d.message().data().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let producer = if body >= 1_000_000 {
            "minority"
        } else {
            "harness"
        };
        events.push(Event::Read {
            node: reader.to_owned(),
            offset: d.offset(),
            message: MessageId {
                producer: producer.into(),
                seq: body,
            },
        });
    }
    consumer.handle().close().await.unwrap();
}

/// Waits until every node names the same leader and epoch for `stream` and has the same
/// committed end; returns the leader and epoch.
async fn settle(brooks: &[Option<Brook>], stream: &str) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut views = Vec::new();
        for b in brooks.iter().flatten() {
            let q = http::get(b.http_addr(), &format!("/api/queues/%2F/{stream}"), GUEST).await;
            let end = (q.status == 200).then(|| q.json()["brook"]["committed_offset"].as_u64());
            views.push((stream_leader(b.http_addr(), stream).await, end));
        }
        if let Some((Some(leader), _)) = views.first()
            && views.iter().all(|v| *v == views[0])
        {
            return *leader;
        }
        assert!(
            Instant::now() < deadline,
            "nodes disagree: {views:?}\n{}",
            logs(brooks)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_survive_its_kill() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(3);
    let mut brooks: Vec<Option<Brook>> = (1..=3)
        .map(|id| Some(start_node(id, &ports, dir.path())))
        .collect();
    let http_of = |b: &Option<Brook>| b.as_ref().unwrap().http_addr();

    let all = until(http_of(&brooks[1]), "a leader and 3 members", |all| {
        running(all) == 3 && agreed_leader(all).is_some()
    })
    .await;
    let names: Vec<&str> = all.iter().map(|n| n["name"].as_str().unwrap()).collect();
    for id in 1..=3 {
        assert!(
            names.iter().any(|n| n.starts_with(&format!("brook-{id}@"))),
            "{names:?}"
        );
    }
    let first = agreed_leader(&all).unwrap();

    // `brook ctl cluster_status` on another node says the same.
    let url = format!("http://{}", http_of(&brooks[2]));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_brook"))
        .args(["ctl", "--url", &url, "--format", "json", "cluster_status"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = status.as_array().unwrap();
    assert_eq!(status.len(), 3);
    assert_eq!(
        status
            .iter()
            .filter(|n| n["metadata_role"] == "leader")
            .count(),
        1
    );

    // kill -9 the leader: the other two elect one of themselves.
    let index = (first - 1) as usize;
    brooks[index].take().unwrap().kill();
    let killed_at = Instant::now();
    let survivor = if index == 0 { 1 } else { 0 };
    let all = until(http_of(&brooks[survivor]), "a new leader", |all| {
        running(all) == 2 && agreed_leader(all).is_some_and(|l| l != first)
    })
    .await;
    let took = killed_at.elapsed();
    println!("metadata failover after kill -9: {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let second = agreed_leader(&all).unwrap();

    // The killed node restarts from its files and follows the new leader.
    brooks[index] = Some(start_node(first, &ports, dir.path()));
    until(http_of(&brooks[index]), "the old leader rejoins", |all| {
        running(all) == 3 && agreed_leader(all) == Some(second)
    })
    .await;
}

/// The offset a consumer on a replica stored is on every member, and survives the loss of
/// the leader: after a failover, every surviving node answers it and a consumer resumes
/// right after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_on_a_replica_keeps_its_offset_when_the_leader_dies() {
    use rabbitmq_stream_client::{Client, ClientOptions};
    let dir = tempfile::tempdir().unwrap();
    let (_ports, mut brooks) = three_nodes(dir.path()).await;
    let port = |b: &Option<Brook>| b.as_ref().unwrap().addr.port();
    let env = env(port(&brooks[0])).await;
    env.stream_creator().create("offsets").await.unwrap();
    let producer = env.producer().build("offsets").await.unwrap();
    let statuses = producer
        .batch_send_with_confirm(numbered(0, 200))
        .await
        .unwrap();
    assert!(statuses.iter().all(|s| s.confirmed()));
    producer.close().await.unwrap();

    // A named consumer (the client puts it on a replica) reads 100 and stores its offset.
    let mut consumer = env
        .consumer()
        .name("reader")
        .offset(OffsetSpecification::First)
        .build("offsets")
        .await
        .unwrap();
    for _ in 0..100 {
        tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .expect("a message")
            .unwrap()
            .unwrap();
    }
    consumer.store_offset(99).await.unwrap();
    consumer.handle().close().await.unwrap();
    let stored = |port: u16| async move {
        let options = ClientOptions::builder()
            .host("127.0.0.1")
            .port(port)
            .build();
        let client = Client::connect(options).await.ok()?;
        let offset = client.query_offset("reader".into(), "offsets").await.ok();
        let _ = client.close().await;
        offset
    };
    // It reaches the leader's log, and with it every replica.
    let deadline = Instant::now() + Duration::from_secs(20);
    for b in &brooks {
        while stored(port(b)).await != Some(99) {
            assert!(
                Instant::now() < deadline,
                "offset not replicated\n{}",
                logs(&brooks)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The leader (node 1: the stream was declared there) dies; the survivors keep it.
    brooks[0].take().unwrap().kill();
    let survivor = brooks[1].as_ref().unwrap().http_addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stream_leader(survivor, "offsets")
        .await
        .is_some_and(|(leader, epoch)| leader != 1 && epoch > 1)
    {
        assert!(
            Instant::now() < deadline,
            "no new leader\n{}",
            logs(&brooks)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for b in &brooks[1..] {
        assert_eq!(stored(port(b)).await, Some(99));
    }
    let env = self::env(port(&brooks[1])).await;
    // Metadata names only members that answer; a client that raced it retries.
    let mut resumed = retry(String::new, || {
        env.consumer()
            .name("reader")
            .offset(OffsetSpecification::Offset(100))
            .build("offsets")
    })
    .await;
    let d = tokio::time::timeout(Duration::from_secs(20), resumed.next())
        .await
        .expect("a message")
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.offset(), d.message().data().unwrap()),
        (100, &b"100"[..])
    );
    resumed.handle().close().await.unwrap();
}
