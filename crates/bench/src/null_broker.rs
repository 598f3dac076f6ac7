//! `brook null-broker`: the physical limit of this machine for a broker, as issue #12 asks. It
//! speaks just enough of the protocol for publishers and consumers, stores nothing, and does
//! the least any broker must per message:
//!
//! * every Publish is decoded (its entries validated) and confirmed at once; all the confirms
//!   of one read for one publisher go out as one PublishConfirm, in one write with everything
//!   else that read needs answered;
//! * every subscription, whatever its offset, gets an endless stream of identical chunks of
//!   `--chunk-messages` messages (only each chunk's first offset changes), one per credit.
//!
//! A client measured against it shows its own limit and what the kernel costs per frame; a
//! broker cannot cost less than this process does for the same traffic.

use std::net::SocketAddr;
use std::sync::Arc;

use brook_protocol::chunk::{ChunkHeader, ChunkType, HEADER_LEN, crc32};
use brook_protocol::{
    BrokerEndpoint, CommandVersion, Frame, MetadataResponse, OpenResponse, PeerPropertiesResponse,
    PublishConfirm, QueryOffsetResponse, QueryPublisherSequenceResponse, Response, ResponseCode,
    SaslAuthenticateResponse, SaslHandshakeResponse, StreamMetadata, Tune, encode_deliver_prefix,
    frame_size, keys,
};
use bytes::{Bytes, BytesMut};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const READ_CHUNK: usize = 256 * 1024;
/// The frame size announced in Tune, and the largest frame accepted.
const FRAME_MAX: u32 = 1 << 20;
/// Deliveries are written once this much is encoded, so no credit grant makes the buffer big.
const OUT_LIMIT: usize = 1 << 20;

#[derive(Args, Debug, Clone)]
pub struct NullBrokerArgs {
    #[arg(long, default_value = "127.0.0.1:5552")]
    pub listen: SocketAddr,
    /// Messages in every chunk delivered to consumers.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub chunk_messages: u16,
    /// Body bytes of every message delivered (an AMQP 1.0 data section around them).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(0..=65536))]
    pub message_size: u32,
}

/// The chunk every delivery carries: its data section and a header to stamp offsets into.
struct Chunk {
    header: ChunkHeader,
    data: Bytes,
}

/// Accepts connections until the process is killed.
pub async fn serve(args: NullBrokerArgs) -> std::io::Result<()> {
    let chunk = Arc::new(build_chunk(
        args.chunk_messages,
        args.message_size as usize,
    )?);
    let listener = TcpListener::bind(args.listen).await?;
    let local = listener.local_addr()?;
    eprintln!("null broker listening on {local}");
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            // Out of descriptors, or a connection reset while queued: the listener goes on.
            Err(e) => {
                eprintln!("null broker: accept: {e}");
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let conn = Connection {
            local,
            chunk: chunk.clone(),
            out: BytesMut::new(),
            confirm: None,
            subscriptions: Vec::new(),
        };
        tokio::spawn(async move {
            if let Err(e) = conn.run(socket).await {
                eprintln!("null broker: connection ended: {e}");
            }
        });
    }
}

/// `count` messages of `size` bytes, each an AMQP 1.0 message with one data section, as the
/// official clients publish them. Fails if a Deliver frame of it would exceed [`FRAME_MAX`].
fn build_chunk(count: u16, size: usize) -> std::io::Result<Chunk> {
    let mut message = vec![0x00, 0x53, 0x75];
    match u8::try_from(size) {
        Ok(len) => message.extend_from_slice(&[0xa0, len]),
        Err(_) => {
            message.push(0xb0);
            message.extend_from_slice(&(size as u32).to_be_bytes());
        }
    }
    message.resize(message.len() + size, b'x');
    // Deliver v1 prefix: size, key, version, subscription id.
    let frame = 4 + 5 + HEADER_LEN + usize::from(count) * (4 + message.len());
    if frame > FRAME_MAX as usize {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{count} messages of {size} bytes need a {frame}-byte frame, over {FRAME_MAX}"),
        ));
    }
    let data = brook_protocol::chunk::encode_simple_entries(std::iter::repeat_n(
        &message[..],
        usize::from(count),
    ));
    let header = ChunkHeader {
        chunk_type: ChunkType::User,
        num_entries: count,
        num_records: u32::from(count),
        timestamp: 0,
        epoch: 1,
        chunk_id: 0,
        crc: crc32(&data),
        data_len: data.len() as u32,
        trailer_len: 0,
        bloom_size: 0,
        side_check: 0,
    };
    Ok(Chunk {
        header,
        data: data.into(),
    })
}

/// A subscription: where its next chunk starts, and how many chunks it may still be sent.
struct Subscription {
    id: u8,
    next: u64,
    owed: u32,
}

struct Connection {
    local: SocketAddr,
    chunk: Arc<Chunk>,
    /// Everything one read's frames need answered, written at once.
    out: BytesMut,
    /// The confirm being merged for the read's publishes.
    confirm: Option<PublishConfirm>,
    subscriptions: Vec<Subscription>,
}

impl Connection {
    async fn run(mut self, mut socket: TcpStream) -> std::io::Result<()> {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            buf.reserve(READ_CHUNK);
            if socket.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
            let mut close = false;
            while let Some(size) = frame_size(&buf) {
                if size > FRAME_MAX {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("a {size}-byte frame, over the {FRAME_MAX} announced"),
                    ));
                }
                let total = 4 + size as usize;
                if buf.len() < total {
                    break;
                }
                let body = buf.split_to(total).freeze().slice(4..);
                let frame = Frame::decode(body)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                close |= self.handle(frame);
            }
            self.end_confirm();
            loop {
                let more = self.deliver_owed();
                if !self.out.is_empty() {
                    socket.write_all(&self.out).await?;
                    self.out.clear();
                }
                if !more {
                    break;
                }
            }
            if close {
                return Ok(());
            }
        }
    }

    /// Answers one frame into `out`; true once the client closed.
    fn handle(&mut self, frame: Frame) -> bool {
        match frame {
            Frame::Publish(p) => {
                if self
                    .confirm
                    .as_ref()
                    .is_some_and(|c| c.publisher_id != p.publisher_id)
                {
                    self.end_confirm();
                }
                self.confirm
                    .get_or_insert_with(|| PublishConfirm {
                        publisher_id: p.publisher_id,
                        publishing_ids: Vec::new(),
                    })
                    .publishing_ids
                    .extend(p.entries().map(|e| e.publishing_id));
                return false;
            }
            Frame::Subscribe(s) => {
                self.reply(Frame::SubscribeResponse(ok(s.correlation_id)));
                self.subscriptions.retain(|sub| sub.id != s.subscription_id);
                self.subscriptions.push(Subscription {
                    id: s.subscription_id,
                    next: 0,
                    owed: u32::from(s.credit),
                });
            }
            Frame::Credit(c) => {
                if let Some(sub) = self
                    .subscriptions
                    .iter_mut()
                    .find(|sub| sub.id == c.subscription_id)
                {
                    sub.owed = sub.owed.saturating_add(u32::from(c.credit));
                }
            }
            Frame::Unsubscribe(u) => {
                self.subscriptions.retain(|sub| sub.id != u.subscription_id);
                self.reply(Frame::UnsubscribeResponse(ok(u.correlation_id)));
            }
            Frame::Close(c) => {
                self.reply(Frame::CloseResponse(ok(c.correlation_id)));
                return true;
            }
            other => {
                if let Some(reply) = answer(other, self.local) {
                    let authenticated = matches!(reply, Frame::SaslAuthenticateResponse(_));
                    self.reply(reply);
                    if authenticated {
                        // Logged in: the server proposes the connection's limits.
                        self.reply(Frame::Tune(Tune {
                            frame_max: 1 << 20,
                            heartbeat: 0,
                        }));
                    }
                }
            }
        }
        false
    }

    fn reply(&mut self, frame: Frame) {
        self.end_confirm();
        frame.encode(&mut self.out);
    }

    fn end_confirm(&mut self) {
        if let Some(c) = self.confirm.take() {
            Frame::PublishConfirm(c).encode(&mut self.out);
        }
    }

    /// Encodes owed chunks, one per subscription in turn, until `out` holds about
    /// [`OUT_LIMIT`]; true if more are owed.
    fn deliver_owed(&mut self) -> bool {
        let chunk = &self.chunk;
        let len = HEADER_LEN + chunk.data.len();
        loop {
            let mut any = false;
            for sub in self.subscriptions.iter_mut().filter(|s| s.owed > 0) {
                any = true;
                sub.owed -= 1;
                let mut header = chunk.header;
                header.chunk_id = sub.next;
                sub.next = header.next_offset();
                encode_deliver_prefix(&mut self.out, sub.id, None, len);
                self.out.extend_from_slice(&header.to_bytes());
                self.out.extend_from_slice(&chunk.data);
            }
            if !any {
                return false;
            }
            if self.out.len() >= OUT_LIMIT {
                return self.subscriptions.iter().any(|s| s.owed > 0);
            }
        }
    }
}

fn ok(correlation_id: u32) -> Response {
    Response {
        correlation_id,
        code: ResponseCode::OK,
    }
}

/// The answer to a handshake or management frame: success for everything a client needs.
fn answer(frame: Frame, local: SocketAddr) -> Option<Frame> {
    Some(match frame {
        Frame::PeerProperties(r) => Frame::PeerPropertiesResponse(PeerPropertiesResponse {
            correlation_id: r.correlation_id,
            code: ResponseCode::OK,
            properties: vec![("product".into(), "brook null broker".into())],
        }),
        Frame::SaslHandshake(r) => Frame::SaslHandshakeResponse(SaslHandshakeResponse {
            correlation_id: r.correlation_id,
            code: ResponseCode::OK,
            mechanisms: vec!["PLAIN".into()],
        }),
        // Anyone may log in.
        Frame::SaslAuthenticate(r) => Frame::SaslAuthenticateResponse(SaslAuthenticateResponse {
            correlation_id: r.correlation_id,
            code: ResponseCode::OK,
            challenge: None,
        }),
        Frame::Open(r) => Frame::OpenResponse(OpenResponse {
            correlation_id: r.correlation_id,
            code: ResponseCode::OK,
            properties: Some(vec![
                ("advertised_host".into(), local.ip().to_string()),
                ("advertised_port".into(), local.port().to_string()),
            ]),
        }),
        // Version 1 of everything: no Deliver v2, no filtering.
        Frame::ExchangeCommandVersions(r) => Frame::ExchangeCommandVersionsResponse(
            brook_protocol::ExchangeCommandVersionsResponse {
                correlation_id: r.correlation_id,
                code: ResponseCode::OK,
                commands: [keys::DECLARE_PUBLISHER, keys::PUBLISH]
                    .into_iter()
                    .map(|key| CommandVersion {
                        key,
                        min_version: 1,
                        max_version: 1,
                    })
                    .collect(),
            },
        ),
        Frame::Metadata(r) => Frame::MetadataResponse(MetadataResponse {
            correlation_id: r.correlation_id,
            brokers: vec![BrokerEndpoint {
                reference: 0,
                host: local.ip().to_string(),
                port: u32::from(local.port()),
            }],
            streams: r
                .streams
                .into_iter()
                .map(|stream| StreamMetadata {
                    stream,
                    code: ResponseCode::OK,
                    leader: 0,
                    replicas: Vec::new(),
                })
                .collect(),
        }),
        Frame::QueryPublisherSequence(r) => {
            Frame::QueryPublisherSequenceResponse(QueryPublisherSequenceResponse {
                correlation_id: r.correlation_id,
                code: ResponseCode::OK,
                sequence: 0,
            })
        }
        Frame::QueryOffset(r) => Frame::QueryOffsetResponse(QueryOffsetResponse {
            correlation_id: r.correlation_id,
            code: ResponseCode::NO_OFFSET,
            offset: 0,
        }),
        Frame::Create(r) => Frame::CreateResponse(ok(r.correlation_id)),
        Frame::Delete(r) => Frame::DeleteResponse(ok(r.correlation_id)),
        Frame::DeclarePublisher(r) => Frame::DeclarePublisherResponse(ok(r.correlation_id)),
        Frame::DeletePublisher(r) => Frame::DeletePublisherResponse(ok(r.correlation_id)),
        // Tune answers, heartbeats, StoreOffset and anything else: nothing to say.
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_protocol::chunk::ChunkView;

    #[test]
    fn a_chunk_over_the_frame_size_is_refused() {
        assert!(build_chunk(2000, 1024).is_err());
        assert!(build_chunk(1000, 1024).is_ok());
        assert!(build_chunk(1000, 12).is_ok());
    }

    #[test]
    fn the_delivered_chunk_is_valid_and_holds_amqp_messages() {
        for size in [0, 12, 255, 256, 1024] {
            let chunk = build_chunk(7, size).expect("a small chunk");
            let mut wire = chunk.header.to_bytes().to_vec();
            wire.extend_from_slice(&chunk.data);
            let view = ChunkView::parse(&wire).expect("a whole chunk");
            view.verify().expect("counts and CRC agree");
            let records: Vec<_> = view.records().collect();
            assert_eq!(records.len(), 7);
            for record in records {
                let (_, message) = record.expect("a record");
                let sections = brook_protocol::amqp::sections(message).expect("AMQP 1.0");
                assert_eq!(sections.len(), 1, "one data section of {size} bytes");
            }
        }
    }
}
