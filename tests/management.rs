//! The management HTTP API: listing connections and closing one from the server side.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use brook_broker::BrokerConfig;
use brook_protocol::*;
use common::raw::Raw;
use common::{TestBroker, test_server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP/1.1 exchange: (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = auth.map_or(String::new(), |a| format!("Authorization: Basic {a}\r\n"));
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).await.unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

const GUEST: &str = "Z3Vlc3Q6Z3Vlc3Q="; // guest:guest

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_can_be_listed_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let config = brook_server::ServerConfig {
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..test_server_config()
    };
    let broker = TestBroker::start_with(BrokerConfig::new(dir.path()), config).await;
    let http_addr = broker.http_addr.unwrap();

    assert_eq!(
        http(http_addr, "GET", "/api/connections", None).await.0,
        401
    );
    assert_eq!(
        http(
            http_addr,
            "GET",
            "/api/connections",
            Some("Z3Vlc3Q6bm9wZQ==")
        )
        .await
        .0,
        401
    );
    let (status, body) = http(http_addr, "GET", "/api/connections/", Some(GUEST)).await;
    assert_eq!((status, body.as_str()), (200, "[]"));

    // A connection announcing a connection_name, as the clients' test suites look them up.
    let mut c = Raw::connect(broker.addr).await;
    c.request(Frame::PeerProperties(PeerProperties {
        correlation_id: 1,
        properties: vec![("connection_name".into(), "to-be-killed".into())],
    }))
    .await;
    let (status, body) = http(http_addr, "GET", "/api/connections/", Some(GUEST)).await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let conn = &list[0];
    assert_eq!(conn["client_properties"]["connection_name"], "to-be-killed");
    assert_eq!(conn["protocol"], "stream");
    let name = conn["name"].as_str().unwrap().to_string();
    assert!(name.contains(" -> "), "RabbitMQ's name form: {name}");

    // One connection by name (percent-encoded in the path, as HTTP clients send it).
    let path = format!(
        "/api/connections/{}",
        name.replace(' ', "%20").replace('>', "%3E")
    );
    let (status, body) = http(http_addr, "GET", &path, Some(GUEST)).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["name"],
        name.as_str()
    );
    assert_eq!(
        http(http_addr, "GET", "/api/connections/nope", Some(GUEST))
            .await
            .0,
        404
    );

    // DELETE closes the socket (no Close frame) before answering.
    let (status, _) = http(http_addr, "DELETE", &path, Some(GUEST)).await;
    assert_eq!(status, 204);
    tokio::time::timeout(Duration::from_secs(2), c.expect_eof())
        .await
        .unwrap();
    let (_, body) = http(http_addr, "GET", "/api/connections/", Some(GUEST)).await;
    assert_eq!(body, "[]", "closed connections leave the list at once");
    assert_eq!(http(http_addr, "DELETE", &path, Some(GUEST)).await.0, 404);
}
