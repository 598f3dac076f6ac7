//! A minimal client speaking raw frames (through brook-protocol's codec) for protocol tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use brook_protocol::*;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    corr: u32,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            corr: 100,
        }
    }

    /// Connects and completes the handshake (PLAIN guest/guest, Tune echo, Open "/").
    pub async fn open(addr: SocketAddr) -> Raw {
        Raw::open_as(addr, "guest", "guest", "/", &[("product", "raw test")])
            .await
            .unwrap()
    }

    /// Connects as `user` to `vhost` with `properties` (e.g. `connection_name`). Returns the
    /// code of the first refusal (authentication or Open) instead of a connection.
    pub async fn open_as(
        addr: SocketAddr,
        user: &str,
        pass: &str,
        vhost: &str,
        properties: &[(&str, &str)],
    ) -> Result<Raw, ResponseCode> {
        let mut c = Raw::connect(addr).await;
        let a = c.handshake_with(user, pass, properties).await;
        if !a.code.is_ok() {
            return Err(a.code);
        }
        c.send(Frame::Tune(Tune {
            frame_max: 1_048_576,
            heartbeat: 0,
        }))
        .await;
        let corr = c.next_corr();
        let r = c
            .request(Frame::Open(Open {
                correlation_id: corr,
                vhost: vhost.into(),
            }))
            .await;
        let Frame::OpenResponse(r) = r else {
            panic!("{r:?}")
        };
        if r.code.is_ok() { Ok(c) } else { Err(r.code) }
    }

    /// PeerProperties, SaslHandshake, SaslAuthenticate; returns the auth response and reads
    /// the server's Tune on success.
    pub async fn handshake_until_tune(
        &mut self,
        user: &str,
        pass: &str,
    ) -> SaslAuthenticateResponse {
        self.handshake_with(user, pass, &[("product", "raw test")])
            .await
    }

    async fn handshake_with(
        &mut self,
        user: &str,
        pass: &str,
        properties: &[(&str, &str)],
    ) -> SaslAuthenticateResponse {
        let corr = self.next_corr();
        let r = self
            .request(Frame::PeerProperties(PeerProperties {
                correlation_id: corr,
                properties: properties
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }))
            .await;
        assert!(matches!(r, Frame::PeerPropertiesResponse(_)), "{r:?}");
        let corr = self.next_corr();
        let r = self
            .request(Frame::SaslHandshake(SaslHandshake {
                correlation_id: corr,
            }))
            .await;
        let Frame::SaslHandshakeResponse(h) = r else {
            panic!("{r:?}")
        };
        assert!(h.mechanisms.contains(&"PLAIN".to_string()));
        let corr = self.next_corr();
        let r = self
            .request(Frame::SaslAuthenticate(SaslAuthenticate {
                correlation_id: corr,
                mechanism: "PLAIN".into(),
                data: Some(Bytes::from(format!("\0{user}\0{pass}"))),
            }))
            .await;
        let Frame::SaslAuthenticateResponse(a) = r else {
            panic!("{r:?}")
        };
        if a.code.is_ok() {
            let t = self.recv().await.unwrap();
            assert!(matches!(t, Frame::Tune(_)), "{t:?}");
        }
        a
    }

    pub fn next_corr(&mut self) -> u32 {
        self.corr += 1;
        self.corr
    }

    pub async fn send(&mut self, frame: Frame) {
        self.send_bytes(&frame.to_bytes()).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next frame (heartbeats skipped), or None when the server closed the socket.
    pub async fn recv(&mut self) -> Option<Frame> {
        loop {
            let f = self.recv_any().await?;
            if !matches!(f, Frame::Heartbeat(_)) {
                return Some(f);
            }
        }
    }

    pub async fn recv_any(&mut self) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(size) = frame_size(&self.buf) {
                    let total = 4 + size as usize;
                    if self.buf.len() >= total {
                        let frame = self.buf.split_to(total).freeze();
                        return Some(Frame::decode(frame.slice(4..)).unwrap());
                    }
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("no frame from the server within 10 s")
    }

    pub async fn request(&mut self, frame: Frame) -> Frame {
        self.send(frame).await;
        self.recv()
            .await
            .expect("connection closed instead of a response")
    }

    /// Asserts the server closes the socket without sending anything more.
    pub async fn expect_eof(&mut self) {
        let f = self.recv_any().await;
        assert!(f.is_none(), "expected the socket to close, got {f:?}");
    }

    pub async fn create(&mut self, stream: &str, args: &[(&str, &str)]) -> ResponseCode {
        let corr = self.next_corr();
        let arguments = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match self
            .request(Frame::Create(Create {
                correlation_id: corr,
                stream: stream.into(),
                arguments,
            }))
            .await
        {
            Frame::CreateResponse(r) => r.code,
            other => panic!("{other:?}"),
        }
    }
}
