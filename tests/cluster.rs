//! Three brooks as processes on loopback forming a cluster (issue #13): the metadata group
//! elects a leader, `/api/nodes` and `brook ctl cluster_status` list every member, a kill -9
//! of the leader elects another within seconds, and the killed node rejoins from its files.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use common::child::Brook;
use common::http::{self, GUEST};
use serde_json::Value;

/// Free loopback ports for the cluster ports (each node must know the others' before it
/// starts, so they cannot be ephemeral; the gap between this and the bind is tiny).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn start_node(id: u64, ports: &[u16], dir: &Path) -> Brook {
    let mut args = vec![
        "--node-id".to_string(),
        id.to_string(),
        "--cluster-listen".into(),
        format!("127.0.0.1:{}", ports[id as usize - 1]),
    ];
    for (i, port) in ports.iter().enumerate() {
        args.push("--peer".into());
        args.push(format!("{}=127.0.0.1:{port}", i + 1));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Brook::start(&dir.join(format!("node{id}")), &args)
}

async fn nodes(http: SocketAddr) -> Vec<Value> {
    let r = http::get(http, "/api/nodes", GUEST).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json().as_array().unwrap().clone()
}

/// Polls `/api/nodes` until `done` holds, for at most 20 s.
async fn until(http: SocketAddr, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = nodes(http).await;
        if done(&all) {
            return all;
        }
        assert!(Instant::now() < deadline, "{what}: {all:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The leader every running member agrees on.
fn agreed_leader(all: &[Value]) -> Option<u64> {
    let running: Vec<&Value> = all.iter().filter(|n| n["running"] == true).collect();
    let leader = running.first()?["brook_metadata_leader"].as_u64()?;
    let agreed = running
        .iter()
        .all(|n| n["brook_metadata_leader"].as_u64() == Some(leader));
    agreed.then_some(leader)
}

fn running(all: &[Value]) -> usize {
    all.iter().filter(|n| n["running"] == true).count()
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
