//! The proxy against a real TCP echo server.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use brook_harness::{Mode, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server on a free port.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).await.unwrap();
    got
}

/// Whether the peer closed: a read returns end of stream or a reset.
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Whether nothing at all (no data, no close) arrives for a while.
async fn silent(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf))
        .await
        .is_err()
}

#[tokio::test]
async fn forwards_both_ways() {
    let proxy = Proxy::start(echo_server().await).await.unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut s, b"hello").await, b"hello");
    let big = vec![7u8; 300_000];
    assert_eq!(round_trip(&mut s, &big).await, big);
}

#[tokio::test]
async fn a_cut_closes_connections_and_refuses_new_ones_until_healed() {
    let proxy = Proxy::start(echo_server().await).await.unwrap();
    let mut before = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut before, b"a").await, b"a");
    proxy.cut();
    assert_eq!(proxy.mode(), Mode::Cut);
    assert!(closed(&mut before).await, "the open connection is closed");
    let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(
        closed(&mut during).await,
        "a new connection is closed at once"
    );
    proxy.heal();
    let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut after, b"b").await, b"b");
}

#[tokio::test]
async fn a_black_hole_forwards_nothing_and_closes_nothing() {
    let proxy = Proxy::start(echo_server().await).await.unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut s, b"a").await, b"a");
    proxy.black_hole();
    s.write_all(b"lost").await.unwrap();
    assert!(silent(&mut s).await, "no echo and no close");
    // A connection made during the partition is accepted and hears nothing either.
    let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
    during.write_all(b"lost too").await.unwrap();
    assert!(silent(&mut during).await);
    proxy.heal();
    // The old connections stay dead, as after a real partition; new ones work.
    assert!(silent(&mut s).await);
    let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut after, b"b").await, b"b");
}

#[tokio::test]
async fn a_delay_holds_data_in_each_direction() {
    let proxy = Proxy::start(echo_server().await).await.unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut s, b"warm").await, b"warm");
    proxy.set_delay(Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(round_trip(&mut s, b"slow").await, b"slow");
    // Held once on the way there and once on the way back.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    proxy.set_delay(Duration::ZERO);
    assert_eq!(round_trip(&mut s, b"fast").await, b"fast");
}
