//! A three-node cluster of brook processes on loopback, for tests/cluster.rs and the
//! tutorial through a cluster.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::child::Brook;
use super::http::{self, GUEST};

/// Free loopback ports for cluster ports. Each node must know the others' before it starts,
/// and a killed node restarts on its own, so they cannot be ephemeral: they come from below
/// Linux's ephemeral range (32768 and up), where no other socket of these tests lands
/// meanwhile, from a counter shared by the tests of this process and a base per process.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 100) * 120;
    let mut ports = Vec::new();
    while ports.len() < n {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = u16::try_from(base + offset).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

pub fn start_node(id: u64, ports: &[u16], dir: &Path) -> Brook {
    let peers: Vec<String> = ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    start_node_via(id, ports, &peers, dir)
}

/// A node that reaches node `j` at `peers[j - 1]` (a proxy, in the partition test).
pub fn start_node_via(id: u64, ports: &[u16], peers: &[String], dir: &Path) -> Brook {
    start_node_with(id, ports, peers, &[], dir)
}

/// [`start_node_via`] with more flags (`--join`).
pub fn start_node_with(
    id: u64,
    ports: &[u16],
    peers: &[String],
    extra: &[&str],
    dir: &Path,
) -> Brook {
    let mut args = vec![
        "--node-id".to_string(),
        id.to_string(),
        "--cluster-listen".into(),
        format!("127.0.0.1:{}", ports[id as usize - 1]),
    ];
    for (i, addr) in peers.iter().enumerate() {
        args.push("--peer".into());
        args.push(format!("{}={addr}", i + 1));
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    // Every test cluster proves a shared secret on its cluster port, as production should.
    if !extra.contains(&"--cluster-secret-file") {
        let secret = dir.join("cluster-secret");
        std::fs::write(&secret, "test cluster secret\n").unwrap();
        args.push("--cluster-secret-file".into());
        args.push(secret.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = [("RUST_LOG", "info,brook_cluster=debug")];
    Brook::start_with_env(&dir.join(format!("node{id}")), &args, &env)
}

/// Everything the nodes logged, for a failure's message.
pub fn logs(brooks: &[Option<Brook>]) -> String {
    let mut out = String::new();
    for (i, b) in brooks.iter().enumerate() {
        if let Some(b) = b {
            out.push_str(&format!("--- node {} ---\n", i + 1));
            out.push_str(&b.log.lock().unwrap().join("\n"));
            out.push('\n');
        }
    }
    out
}

pub async fn nodes(http: SocketAddr) -> Vec<Value> {
    let r = http::get(http, "/api/nodes", GUEST).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json().as_array().unwrap().clone()
}

/// Polls `/api/nodes` until `done` holds, for at most 20 s.
pub async fn until(http: SocketAddr, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
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
pub fn agreed_leader(all: &[Value]) -> Option<u64> {
    let running: Vec<&Value> = all.iter().filter(|n| n["running"] == true).collect();
    let leader = running.first()?["brook_metadata_leader"].as_u64()?;
    let agreed = running
        .iter()
        .all(|n| n["brook_metadata_leader"].as_u64() == Some(leader));
    agreed.then_some(leader)
}

pub fn running(all: &[Value]) -> usize {
    all.iter().filter(|n| n["running"] == true).count()
}

/// Starts three nodes and waits until they agree on a metadata leader and every node has
/// announced its name and address.
pub async fn three_nodes(dir: &Path) -> (Vec<u16>, Vec<Option<Brook>>) {
    let ports = free_ports(3);
    let brooks: Vec<Option<Brook>> = (1..=3)
        .map(|id| Some(start_node(id, &ports, dir)))
        .collect();
    formed(brooks[0].as_ref().unwrap().http_addr()).await;
    (ports, brooks)
}

/// What a client does while a failover or a node's announcement is under way: tries again
/// every 100 ms for up to 20 s, then fails with the last error and `context()`.
pub async fn retry<T, E: std::fmt::Debug, F: std::future::Future<Output = Result<T, E>>>(
    context: impl Fn() -> String,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match attempt().await {
            Ok(t) => return t,
            Err(e) => assert!(Instant::now() < deadline, "{e:?}\n{}", context()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the three nodes agree on a metadata leader and each has announced its name.
pub async fn formed(http: SocketAddr) {
    formed_of(http, 3).await;
}

/// Waits until `n` members run, agree on a metadata leader and have announced their names.
pub async fn formed_of(http: SocketAddr, n: usize) {
    until(
        http,
        &format!("a leader and {n} announced members"),
        |all| {
            all.len() == n
                && running(all) == n
                && agreed_leader(all).is_some()
                && all.iter().all(|n| {
                    !n["name"]
                        .as_str()
                        .unwrap_or("@unknown")
                        .ends_with("@unknown")
                })
        },
    )
    .await;
}

/// Node `i`'s stream port.
pub fn port(brooks: &[Option<Brook>], i: usize) -> u16 {
    brooks[i].as_ref().unwrap().addr.port()
}

/// Messages whose bodies are their numbers, `from` to `to` (excluded).
pub fn numbered(from: u64, to: u64) -> Vec<rabbitmq_stream_client::types::Message> {
    (from..to)
        .map(|i| {
            rabbitmq_stream_client::types::Message::builder()
                .body(i.to_string())
                .build()
        })
        .collect()
}

/// Reads `from` to `to` (excluded) from `consumer`, each body its number, in order.
pub async fn expect_numbered(consumer: &mut rabbitmq_stream_client::Consumer, from: u64, to: u64) {
    use futures::StreamExt;
    for i in from..to {
        let d = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .expect("a message")
            .unwrap()
            .unwrap();
        assert_eq!(d.message().data().unwrap(), i.to_string().as_bytes());
    }
}
