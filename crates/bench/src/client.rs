//! A minimal stream-protocol client: connect, handshake, requests, and raw frame I/O for the
//! load loops. It sends nothing RabbitMQ 3.10 does not know (no ExchangeCommandVersions), so it
//! measures RabbitMQ 3.10 and brook alike.

use std::net::SocketAddr;

use brook_protocol::*;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the broker closed the connection")]
    Closed,
    #[error("malformed frame from the broker: {0}")]
    Decode(#[from] DecodeError),
    #[error("{what}: {code}")]
    Refused {
        what: &'static str,
        code: ResponseCode,
    },
    #[error("unexpected frame: {0}")]
    Unexpected(String),
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Reads whole frames from a socket half.
#[derive(Debug)]
pub struct FrameReader {
    io: OwnedReadHalf,
    buf: BytesMut,
    /// Bytes asked of the socket per read when no frame size is known yet.
    read_size: usize,
}

impl FrameReader {
    /// The next frame body (key, version, content), without decoding it.
    pub async fn next_raw(&mut self) -> Result<Bytes> {
        loop {
            if let Some(size) = frame_size(&self.buf) {
                let total = 4 + size as usize;
                if self.buf.len() >= total {
                    return Ok(self.buf.split_to(total).freeze().slice(4..));
                }
                self.buf.reserve(total - self.buf.len());
            } else {
                self.buf.reserve(self.read_size);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// Whether a whole frame is already buffered (reading it will not wait for the socket).
    pub fn has_frame(&self) -> bool {
        frame_size(&self.buf).is_some_and(|size| self.buf.len() >= 4 + size as usize)
    }

    /// The next frame that is not a heartbeat.
    pub async fn next(&mut self) -> Result<Frame> {
        loop {
            let frame = Frame::decode(self.next_raw().await?)?;
            if !matches!(frame, Frame::Heartbeat(_)) {
                return Ok(frame);
            }
        }
    }
}

/// Writes frames, batching what it is given into one `write`.
#[derive(Debug)]
pub struct FrameWriter {
    io: OwnedWriteHalf,
    buf: BytesMut,
}

impl FrameWriter {
    pub fn queue(&mut self, frame: &Frame) {
        frame.encode(&mut self.buf);
    }

    pub async fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.io.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes and clears an externally encoded buffer.
    pub async fn write_raw(&mut self, buf: &mut BytesMut) -> Result<()> {
        if !buf.is_empty() {
            self.io.write_all(buf).await?;
            buf.clear();
        }
        Ok(())
    }

    pub async fn send(&mut self, frame: &Frame) -> Result<()> {
        self.queue(frame);
        self.flush().await
    }
}

/// An open connection.
#[derive(Debug)]
pub struct Client {
    pub reader: FrameReader,
    pub writer: FrameWriter,
    corr: u32,
}

fn check(what: &'static str, code: ResponseCode) -> Result<()> {
    if code.is_ok() {
        Ok(())
    } else {
        Err(ClientError::Refused { what, code })
    }
}

/// How [`Client::connect_with`] sets up a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions {
    /// Heartbeat interval asked for in Tune, seconds (0: off, so that a load test is never cut
    /// by a missed one).
    pub heartbeat: u32,
    /// Socket buffer sizes: large for throughput, small when thousands of connections idle.
    pub buffer: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            heartbeat: 0,
            buffer: 256 * 1024,
        }
    }
}

impl Client {
    /// Connects and opens vhost `/` with PLAIN credentials.
    pub async fn connect(addr: SocketAddr, user: &str, password: &str) -> Result<Client> {
        Self::connect_with(addr, user, password, ConnectOptions::default()).await
    }

    pub async fn connect_with(
        addr: SocketAddr,
        user: &str,
        password: &str,
        options: ConnectOptions,
    ) -> Result<Client> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let (rd, wr) = socket.into_split();
        let mut c = Client {
            reader: FrameReader {
                io: rd,
                buf: BytesMut::with_capacity(options.buffer),
                read_size: options.buffer,
            },
            writer: FrameWriter {
                io: wr,
                buf: BytesMut::with_capacity(options.buffer),
            },
            corr: 0,
        };
        let corr = c.next_corr();
        c.request(Frame::PeerProperties(PeerProperties {
            correlation_id: corr,
            properties: vec![
                ("product".into(), "brook bench".into()),
                ("connection_name".into(), "brook-bench".into()),
            ],
        }))
        .await?;
        let corr = c.next_corr();
        c.request(Frame::SaslHandshake(SaslHandshake {
            correlation_id: corr,
        }))
        .await?;
        let corr = c.next_corr();
        let r = c
            .request(Frame::SaslAuthenticate(SaslAuthenticate {
                correlation_id: corr,
                mechanism: "PLAIN".into(),
                data: Some(Bytes::from(format!("\0{user}\0{password}"))),
            }))
            .await?;
        if let Frame::SaslAuthenticateResponse(r) = r {
            check("authentication", r.code)?;
        }
        let tune = match c.reader.next().await? {
            Frame::Tune(t) => t,
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        };
        c.writer
            .send(&Frame::Tune(Tune {
                frame_max: tune.frame_max,
                heartbeat: options.heartbeat,
            }))
            .await?;
        let corr = c.next_corr();
        let r = c
            .request(Frame::Open(Open {
                correlation_id: corr,
                vhost: "/".into(),
            }))
            .await?;
        if let Frame::OpenResponse(r) = r {
            check("open", r.code)?;
        }
        Ok(c)
    }

    pub fn next_corr(&mut self) -> u32 {
        self.corr = self.corr.wrapping_add(1);
        self.corr
    }

    /// Sends a request and waits for the next frame (setup only: no other traffic expected).
    pub async fn request(&mut self, frame: Frame) -> Result<Frame> {
        self.writer.send(&frame).await?;
        self.reader.next().await
    }

    /// Creates a stream (an existing one is fine).
    pub async fn create_stream(&mut self, stream: &str) -> Result<()> {
        let corr = self.next_corr();
        let r = self
            .request(Frame::Create(Create {
                correlation_id: corr,
                stream: stream.into(),
                arguments: vec![],
            }))
            .await?;
        match r {
            Frame::CreateResponse(r) if r.code == ResponseCode::STREAM_ALREADY_EXISTS => Ok(()),
            Frame::CreateResponse(r) => check("create stream", r.code),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn delete_stream(&mut self, stream: &str) -> Result<()> {
        let corr = self.next_corr();
        let r = self
            .request(Frame::Delete(Delete {
                correlation_id: corr,
                stream: stream.into(),
            }))
            .await?;
        match r {
            Frame::DeleteResponse(r) => check("delete stream", r.code),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn declare_publisher(&mut self, id: u8, stream: &str) -> Result<()> {
        let corr = self.next_corr();
        let r = self
            .request(Frame::DeclarePublisher(DeclarePublisher {
                correlation_id: corr,
                publisher_id: id,
                reference: String::new(),
                stream: stream.into(),
            }))
            .await?;
        match r {
            Frame::DeclarePublisherResponse(r) => check("declare publisher", r.code),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Subscribes; the response is read by the caller's loop (deliveries may follow at once).
    pub async fn subscribe(
        &mut self,
        id: u8,
        stream: &str,
        offset: OffsetSpec,
        credit: u16,
    ) -> Result<()> {
        let corr = self.next_corr();
        self.writer
            .send(&Frame::Subscribe(Subscribe {
                correlation_id: corr,
                subscription_id: id,
                stream: stream.into(),
                offset,
                credit,
                properties: None,
            }))
            .await
    }

    pub async fn close(mut self) -> Result<()> {
        let corr = self.next_corr();
        self.writer
            .send(&Frame::Close(Close {
                correlation_id: corr,
                code: ResponseCode::OK,
                reason: "bench done".into(),
            }))
            .await?;
        // Drain until the broker answers (deliveries may still be in flight).
        loop {
            match self.reader.next().await {
                Ok(Frame::CloseResponse(_)) | Err(_) => return Ok(()),
                Ok(_) => {}
            }
        }
    }
}
