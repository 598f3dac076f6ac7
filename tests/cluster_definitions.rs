//! Users, vhosts, permissions and super streams are the cluster's (issue #13), as they are
//! in RabbitMQ's metadata store: created through one node, they hold on every node; changed
//! while a node is down, the node has the change once it rejoins; and a node without a
//! majority cannot change them.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::child::Brook;
use common::cluster::*;
use common::http::{self, GUEST};
use rabbitmq_stream_client::error::ClientError;
use rabbitmq_stream_client::types::Message;
use rabbitmq_stream_client::{Client, ClientOptions, Environment};

async fn login(port: u16, user: &str, pass: &str, vhost: &str) -> Result<Environment, ClientError> {
    Environment::builder()
        .host("127.0.0.1")
        .port(port)
        .username(user)
        .password(pass)
        .virtual_host(vhost)
        .build()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_vhosts_and_permissions_are_the_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, mut brooks) = three_nodes(dir.path()).await;
    let admin = brooks[0].as_ref().unwrap().http_addr();

    let put = |path: &'static str, body: &'static str| async move {
        let r = http::send(admin, "PUT", path, GUEST, body).await;
        assert_eq!(r.status, 201, "PUT {path}: {}", r.body);
    };
    put("/api/vhosts/tenant", "{}").await;
    put("/api/users/alice", r#"{"password":"s3cret","tags":""}"#).await;
    put(
        "/api/permissions/tenant/alice",
        r#"{"configure":"^orders$","write":".*","read":".*"}"#,
    )
    .await;

    // Node 3 never saw the requests; it applies them from the metadata log.
    let env = retry(
        || logs(&brooks),
        || login(port(&brooks, 2), "alice", "s3cret", "tenant"),
    )
    .await;
    env.stream_creator().create("orders").await.unwrap();
    let refused = env.stream_creator().create("audit").await;
    assert!(refused.is_err(), "configure is ^orders$ only: {refused:?}");
    let producer = env.producer().build("orders").await.unwrap();
    let statuses = producer
        .batch_send_with_confirm(vec![Message::builder().body("paid").build()])
        .await
        .unwrap();
    assert!(statuses.iter().all(|s| s.confirmed()));
    producer.close().await.unwrap();
    // Guest is the first node's, and logs in everywhere too.
    for i in 0..3 {
        retry(
            || logs(&brooks),
            || login(port(&brooks, i), "guest", "guest", "/"),
        )
        .await;
    }

    // Node 3 is down while alice is deleted through node 2; it rejoins without her.
    brooks[2].take().unwrap().kill();
    let second = brooks[1].as_ref().unwrap().http_addr();
    // Node 3 may have led the metadata group: the request waits for its successor.
    let deleted = retry(
        || logs(&brooks),
        || async {
            let r = http::delete(second, "/api/users/alice", GUEST).await;
            match r.status {
                503 => Err(r.body),
                status => Ok((status, r.body)),
            }
        },
    )
    .await;
    assert_eq!(deleted.0, 204, "{}", deleted.1);
    brooks[2] = Some(start_node(3, &ports, dir.path()));
    retry(
        || logs(&brooks),
        || async {
            match login(port(&brooks, 2), "alice", "s3cret", "tenant").await {
                Ok(_) => Err("alice still logs in on the restarted node"),
                Err(_) => Ok(()),
            }
        },
    )
    .await;
    let r = http::get(admin, "/api/permissions/tenant/alice", GUEST).await;
    assert_eq!(r.status, 404, "{}", r.body);

    // Alone, a node cannot change the cluster's users: the request fails, and says why.
    brooks[1].take().unwrap().kill();
    brooks[2].take().unwrap().kill();
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        http::send(
            admin,
            "PUT",
            "/api/users/mallory",
            GUEST,
            r#"{"password":"x","tags":""}"#,
        ),
    )
    .await
    .expect("an answer within the proposal timeout");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        http::get(admin, "/api/users/mallory", GUEST).await.status,
        404
    );
}

/// Super stream partitions as `port`'s node answers them (empty: no such super stream).
async fn partitions(port: u16, super_stream: &str) -> Result<Vec<String>, String> {
    let options = ClientOptions::builder()
        .host("127.0.0.1")
        .port(port)
        .build();
    let client = Client::connect(options).await.map_err(|e| e.to_string())?;
    let answer = client.partitions(super_stream.into()).await;
    let _ = client.close().await;
    answer.map(|r| r.streams).map_err(|e| e.to_string())
}

async fn until_partitions(brooks: &[Option<Brook>], node: usize, expected: &[&str]) {
    retry(
        || logs(brooks),
        || async {
            let got = partitions(port(brooks, node), "invoices").await?;
            match got == expected {
                true => Ok(()),
                false => Err(format!("node {}: {got:?}", node + 1)),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn super_streams_are_the_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let (ports, mut brooks) = three_nodes(dir.path()).await;
    let env = login(port(&brooks, 0), "guest", "guest", "/")
        .await
        .unwrap();
    env.stream_creator()
        .create_super_stream("invoices", 3, None)
        .await
        .unwrap();
    let all = ["invoices-0", "invoices-1", "invoices-2"];
    until_partitions(&brooks, 2, &all).await;
    let options = ClientOptions::builder()
        .host("127.0.0.1")
        .port(port(&brooks, 2))
        .build();
    let third = Client::connect(options).await.unwrap();
    let route = third.route("1".into(), "invoices".into()).await.unwrap();
    assert_eq!(route.streams, ["invoices-1"]);
    third.close().await.unwrap();

    // A partition deleted through node 2 while node 3 is down leaves the super stream there
    // too once node 3 is back.
    brooks[2].take().unwrap().kill();
    let second = login(port(&brooks, 1), "guest", "guest", "/")
        .await
        .unwrap();
    retry(|| logs(&brooks), || second.delete_stream("invoices-2")).await;
    brooks[2] = Some(start_node(3, &ports, dir.path()));
    until_partitions(&brooks, 2, &all[..2]).await;

    // Deleted through node 3, it is gone from node 1, partitions and all.
    let third = retry(
        || logs(&brooks),
        || login(port(&brooks, 2), "guest", "guest", "/"),
    )
    .await;
    retry(|| logs(&brooks), || third.delete_super_stream("invoices")).await;
    until_partitions(&brooks, 0, &[]).await;
    let survivor = env.consumer().build("invoices-0").await;
    assert!(
        survivor.is_err(),
        "partition streams go with the super stream"
    );
}
