//! One task per connection: read frames, drive the handshake and then the [`Session`], and a
//! writer task that drains the connection's ordered [`Outgoing`] queue to the socket.
//!
//! The split matters: confirms come from stream writer tasks and deliveries from subscription
//! tasks, concurrently with responses; one queue with one writer keeps every frame whole and in
//! order (Subscribe OK before the first Deliver, never a heartbeat inside a Deliver), and lets
//! the writer put everything queued into one `write` call.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use brook_broker::{Broker, ControlEvent, Outgoing, Session};
use brook_protocol::{
    BrokerEndpoint, Close, CommandVersion, ConsumerUpdate, CreditResponse, DecodeError,
    ExchangeCommandVersionsResponse, Frame, MetadataResponse, MetadataUpdate, PartitionsResponse,
    PublishConfirm, PublishError, PublishingError, QueryOffsetResponse,
    QueryPublisherSequenceResponse, Response, ResponseCode, RouteResponse,
    SaslAuthenticateResponse, StreamMetadata, StreamStatsResponse, encode_deliver_prefix,
    frame_size, keys,
};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::config::ServerConfig;
use crate::handshake::{Action, Handshake, authenticate};
use crate::registry::{Connections, Registration};

/// RabbitMQ 4.3.5 caps frames before Open at 8 KiB: enough for any handshake (a JWT as PLAIN
/// password included), small enough that unauthenticated peers cannot make us buffer much.
const INITIAL_FRAME_MAX: u32 = 8192;
/// The writer stops collecting queued frames for one `write` call at this size.
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// Shared by all connections of a listener.
#[derive(Debug)]
pub(crate) struct Context {
    pub broker: Broker,
    pub config: ServerConfig,
    pub advertised_port: u16,
    pub connections: Arc<Connections>,
    /// Whether this listener is the TLS one.
    pub tls: bool,
}

/// What the request loop tells the writer, besides frames.
#[derive(Debug, Default)]
struct WriterSettings {
    deliver_v2: AtomicBool,
    heartbeat_secs: AtomicU32,
}

/// Why a connection ended, for the log.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Handshake(&'static str),
    #[error("no frame within the negotiation timeout")]
    NegotiationTimeout,
    #[error("no data for {0:?}: heartbeat timeout")]
    HeartbeatTimeout(Duration),
    #[error("malformed frame before open: {0}")]
    BadFrame(DecodeError),
    #[error("frame of {0} bytes over the limit before open")]
    TooLarge(u32),
    #[error("closed through the management API")]
    ClosedByOperator,
    #[error("a ConsumerUpdate was not answered in time")]
    NoConsumerUpdateAnswer,
}

enum Read {
    Frame(Bytes),
    TooLarge(u32),
    Eof,
}

/// Reassembles frames from the byte stream; several may arrive in one read and one may span
/// many.
struct FrameReader<R> {
    io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    async fn next(&mut self, max: u32) -> std::io::Result<Read> {
        loop {
            if let Some(size) = frame_size(&self.buf) {
                if max != 0 && size > max {
                    return Ok(Read::TooLarge(size));
                }
                let total = 4 + size as usize;
                if self.buf.len() >= total {
                    let frame = self.buf.split_to(total).freeze();
                    return Ok(Read::Frame(frame.slice(4..)));
                }
                self.buf.reserve(total - self.buf.len());
            } else {
                self.buf.reserve(64 * 1024);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Ok(Read::Eof);
            }
        }
    }
}

/// Runs one connection to its end. `identity` is the verified TLS client certificate's
/// common name, for SASL EXTERNAL.
pub(crate) async fn serve<R, W>(
    rd: R,
    wr: W,
    peer: SocketAddr,
    local: SocketAddr,
    identity: Option<String>,
    ctx: Arc<Context>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out, out_rx) = mpsc::unbounded_channel();
    let settings = Arc::new(WriterSettings::default());
    let writer = tokio::spawn(write_loop(wr, out_rx, settings.clone()));
    let (control, control_rx) = mpsc::unbounded_channel();
    let (registration, killed) = ctx.connections.register(peer, local, ctx.tls);
    let mut conn = Connection {
        handshake: Handshake::new(peer.ip(), ctx.advertised_port, identity),
        registration,
        reader: FrameReader {
            io: rd,
            buf: BytesMut::with_capacity(64 * 1024),
        },
        out,
        settings,
        control,
        control_rx,
        session: None,
        frame_max: INITIAL_FRAME_MAX,
        heartbeat: 0,
        tuned: false,
        consumer_updates: HashMap::new(),
        next_correlation_id: 0,
        ctx,
        peer,
    };
    let result = tokio::select! {
        result = conn.run() => result,
        // Force-closed by the management API: no Close frame, just the socket.
        _ = killed => Err(ConnError::ClosedByOperator),
    };
    match result {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(e) => tracing::info!(%peer, "connection closed: {e}"),
    }
    // Dropping the session ends its subscriptions and publishers; dropping the last queue
    // sender lets the writer flush what is left and close the socket.
    let close_timeout = conn.ctx.config.close_timeout;
    drop(conn);
    // A peer that stopped reading must not keep the connection (and its socket) forever.
    let mut writer = writer;
    if tokio::time::timeout(close_timeout, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

struct Connection<R> {
    ctx: Arc<Context>,
    peer: SocketAddr,
    handshake: Handshake,
    registration: Registration,
    reader: FrameReader<R>,
    out: mpsc::UnboundedSender<Outgoing>,
    settings: Arc<WriterSettings>,
    control: mpsc::UnboundedSender<ControlEvent>,
    control_rx: mpsc::UnboundedReceiver<ControlEvent>,
    session: Option<Session>,
    frame_max: u32,
    heartbeat: u32,
    /// Whether the client answered Tune (it may Open first, RabbitMQ allows it).
    tuned: bool,
    /// ConsumerUpdate requests sent and not yet answered: correlation id → (subscription,
    /// active).
    consumer_updates: HashMap<u32, (u8, bool, tokio::time::Instant)>,
    next_correlation_id: u32,
}

enum Input {
    Read(Read),
    Control(ControlEvent),
}

/// Reads the next frame after Open, ending the connection when the peer has been silent for
/// too long.
async fn read_open<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    frame_max: u32,
    heartbeat: u32,
) -> Result<Read, ConnError> {
    if heartbeat == 0 {
        return Ok(reader.next(frame_max).await?);
    }
    // RabbitMQ closes after two to three silent intervals; clients send at least one heartbeat
    // per interval.
    let limit = Duration::from_secs(u64::from(heartbeat) * 3);
    match tokio::time::timeout(limit, reader.next(frame_max)).await {
        Ok(read) => Ok(read?),
        Err(_) => Err(ConnError::HeartbeatTimeout(limit)),
    }
}

/// What to do after a frame.
enum Flow {
    Continue,
    /// The client closed (its Close was answered) or the connection must end now.
    Stop,
    /// Close from the server side with this code.
    ServerClose(ResponseCode, &'static str),
}

impl<R: AsyncRead + Unpin> Connection<R> {
    fn send(&self, frame: Frame) {
        let _ = self.out.send(Outgoing::Frame(frame));
    }

    async fn run(&mut self) -> Result<(), ConnError> {
        while !self.handshake.is_open() {
            let timeout = self.ctx.config.negotiation_timeout;
            let read = tokio::time::timeout(timeout, self.reader.next(INITIAL_FRAME_MAX))
                .await
                .map_err(|_| ConnError::NegotiationTimeout)??;
            let bytes = match read {
                Read::Frame(b) => b,
                Read::Eof => return Ok(()),
                Read::TooLarge(size) => {
                    if self.reader.buf.first() == Some(&0x16) {
                        tracing::info!(peer = %self.peer, "TLS handshake on the plain port");
                    }
                    return Err(ConnError::TooLarge(size));
                }
            };
            let frame = Frame::decode(bytes).map_err(ConnError::BadFrame)?;
            let actions = self.handshake.handle(frame, &self.ctx.config);
            // The management API lists half-open connections too, with what is known so far.
            let (user, properties) = (
                self.handshake.user.clone(),
                self.handshake.client_properties.iter().cloned().collect(),
            );
            self.registration.update(|info| {
                info.user = user;
                info.client_properties = properties;
            });
            for action in actions {
                match action {
                    Action::Send(f) => self.send(f),
                    Action::FailAndClose(f, delay) => {
                        if delay {
                            tokio::time::sleep(self.ctx.config.auth_failure_delay).await;
                        }
                        self.send(f);
                        let _ = self.out.send(Outgoing::Close);
                        return Err(ConnError::Handshake("authentication or vhost refused"));
                    }
                    Action::Drop(reason) => return Err(ConnError::Handshake(reason)),
                    Action::Tuned {
                        frame_max,
                        heartbeat,
                    } => {
                        self.frame_max = frame_max;
                        self.heartbeat = heartbeat;
                        self.tuned = true;
                        self.settings
                            .heartbeat_secs
                            .store(heartbeat, Ordering::Relaxed);
                    }
                    Action::Opened => {
                        let vhost = self.handshake.vhost.clone();
                        self.registration.update(|info| info.vhost = Some(vhost));
                        let session = self
                            .ctx
                            .broker
                            .session(self.control.clone(), self.out.clone());
                        self.session = Some(session);
                        tracing::debug!(peer = %self.peer, user = ?self.handshake.user,
                            properties = ?self.handshake.client_properties, "connection open");
                    }
                }
            }
        }
        // Until Open the limit was INITIAL_FRAME_MAX; from now on it is the negotiated one, or
        // the server's proposal if the client opened without answering Tune.
        if !self.tuned {
            self.frame_max = self.ctx.config.frame_max;
        }
        if self.frame_max != 0 && self.frame_max < INITIAL_FRAME_MAX {
            self.frame_max = INITIAL_FRAME_MAX;
        }
        loop {
            // A ConsumerUpdate left unanswered past the request timeout ends the connection,
            // as in RabbitMQ: the group cannot move on without the answer.
            let answer_due = self
                .consumer_updates
                .values()
                .map(|(_, _, sent)| *sent)
                .min();
            let input = tokio::select! {
                read = read_open(&mut self.reader, self.frame_max, self.heartbeat) => Input::Read(read?),
                Some(event) = self.control_rx.recv() => Input::Control(event),
                () = until(answer_due.map(|sent| sent + self.ctx.config.request_timeout)) => {
                    return Err(ConnError::NoConsumerUpdateAnswer);
                }
            };
            let flow = match input {
                Input::Control(event) => self.on_control(event),
                Input::Read(Read::Frame(bytes)) => match Frame::decode(bytes) {
                    Ok(frame) => self.dispatch(frame).await,
                    Err(e) => {
                        tracing::info!(peer = %self.peer, "unparseable frame: {e}");
                        Flow::ServerClose(ResponseCode::UNKNOWN_FRAME, "unknown frame")
                    }
                },
                Input::Read(Read::TooLarge(_)) => {
                    Flow::ServerClose(ResponseCode::FRAME_TOO_LARGE, "frame too large")
                }
                Input::Read(Read::Eof) => Flow::Stop,
            };
            match flow {
                Flow::Continue => {}
                Flow::Stop => return Ok(()),
                Flow::ServerClose(code, reason) => return self.server_close(code, reason).await,
            }
        }
    }

    /// Sends Close and waits for the client's answer (or its leaving, or the timeout).
    async fn server_close(&mut self, code: ResponseCode, reason: &str) -> Result<(), ConnError> {
        tracing::info!(peer = %self.peer, "closing connection: {reason}");
        self.session = None;
        self.send(Frame::Close(Close {
            correlation_id: 1,
            code,
            reason: reason.to_owned(),
        }));
        let deadline = tokio::time::Instant::now() + self.ctx.config.close_timeout;
        // After an oversized frame its bytes are still in the stream: just drain until the
        // client leaves. Otherwise look for its CloseResponse (small: anything large is
        // drained unread too).
        let mut draining = code == ResponseCode::FRAME_TOO_LARGE;
        loop {
            let read = tokio::time::timeout_at(deadline, async {
                if draining {
                    self.reader.buf.clear();
                    let n = self.reader.io.read_buf(&mut self.reader.buf).await?;
                    Ok::<_, std::io::Error>(if n == 0 { Read::Eof } else { Read::TooLarge(0) })
                } else {
                    self.reader.next(INITIAL_FRAME_MAX).await
                }
            })
            .await;
            match read {
                Err(_) | Ok(Err(_)) | Ok(Ok(Read::Eof)) => break,
                Ok(Ok(Read::Frame(b))) => {
                    if let Ok(Frame::CloseResponse(_)) = Frame::decode(b) {
                        break;
                    }
                }
                Ok(Ok(Read::TooLarge(_))) => draining = true,
            }
        }
        let _ = self.out.send(Outgoing::Close);
        Ok(())
    }

    fn on_control(&mut self, event: ControlEvent) -> Flow {
        match event {
            ControlEvent::StreamDeleted(stream) => {
                if self
                    .session
                    .as_mut()
                    .is_some_and(|s| s.stream_deleted(&stream))
                {
                    self.send(Frame::MetadataUpdate(MetadataUpdate {
                        code: ResponseCode::STREAM_NOT_AVAILABLE,
                        stream,
                    }));
                }
            }
            ControlEvent::ConsumerUpdate {
                subscription_id,
                active,
            } => {
                if self
                    .session
                    .as_mut()
                    .is_some_and(|s| s.consumer_update(subscription_id, active))
                {
                    let correlation_id = self.next_correlation_id;
                    self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
                    self.consumer_updates.insert(
                        correlation_id,
                        (subscription_id, active, tokio::time::Instant::now()),
                    );
                    self.send(Frame::ConsumerUpdate(ConsumerUpdate {
                        correlation_id,
                        subscription_id,
                        active,
                    }));
                }
            }
        }
        Flow::Continue
    }

    async fn dispatch(&mut self, frame: Frame) -> Flow {
        let Some(session) = self.session.as_mut() else {
            return Flow::Stop;
        };
        let ok_or = |corr: u32, r: Result<(), brook_broker::Error>| Response {
            correlation_id: corr,
            code: code_of(&r),
        };
        let reply = match frame {
            Frame::Publish(p) => {
                session.publish(p).await;
                return Flow::Continue;
            }
            Frame::Credit(c) => {
                if let Err(e) = session.credit(c.subscription_id, c.credit) {
                    self.send(Frame::CreditResponse(CreditResponse {
                        code: e.code(),
                        subscription_id: c.subscription_id,
                    }));
                }
                return Flow::Continue;
            }
            Frame::StoreOffset(c) => {
                session.store_offset(&c.reference, &c.stream, c.offset);
                return Flow::Continue;
            }
            Frame::Heartbeat(_) => return Flow::Continue,
            Frame::DeclarePublisher(c) => Frame::DeclarePublisherResponse(ok_or(
                c.correlation_id,
                session.declare_publisher(c.publisher_id, &c.reference, &c.stream),
            )),
            Frame::DeletePublisher(c) => Frame::DeletePublisherResponse(ok_or(
                c.correlation_id,
                session.delete_publisher(c.publisher_id),
            )),
            Frame::QueryPublisherSequence(c) => {
                let r = session
                    .query_publisher_sequence(&c.reference, &c.stream)
                    .await;
                Frame::QueryPublisherSequenceResponse(QueryPublisherSequenceResponse {
                    correlation_id: c.correlation_id,
                    code: code_of(&r),
                    sequence: r.unwrap_or(0),
                })
            }
            Frame::Subscribe(c) => {
                let props = c.properties.as_deref().unwrap_or_default();
                match session.subscribe(c.subscription_id, &c.stream, c.offset, c.credit, props) {
                    Ok(subscribed) => {
                        // The response goes into the queue before any Deliver can.
                        self.send(Frame::SubscribeResponse(ok_or(c.correlation_id, Ok(()))));
                        if let Some(session) = self.session.as_mut() {
                            session.start(subscribed);
                        }
                        return Flow::Continue;
                    }
                    Err(e) => Frame::SubscribeResponse(ok_or(c.correlation_id, Err(e))),
                }
            }
            Frame::Unsubscribe(c) => Frame::UnsubscribeResponse(ok_or(
                c.correlation_id,
                session.unsubscribe(c.subscription_id),
            )),
            Frame::QueryOffset(c) => {
                let r = session.query_offset(&c.reference, &c.stream).await;
                Frame::QueryOffsetResponse(QueryOffsetResponse {
                    correlation_id: c.correlation_id,
                    code: code_of(&r),
                    offset: r.unwrap_or(0),
                })
            }
            Frame::Create(c) => Frame::CreateResponse(ok_or(
                c.correlation_id,
                self.ctx.broker.create_stream(&c.stream, &c.arguments),
            )),
            Frame::Delete(c) => {
                let r = self.ctx.broker.delete_stream(&c.stream).await;
                Frame::DeleteResponse(ok_or(c.correlation_id, r))
            }
            Frame::Metadata(c) => {
                Frame::MetadataResponse(self.metadata(c.correlation_id, c.streams))
            }
            Frame::StreamStats(c) => {
                let r = session.stream_stats(&c.stream);
                let stats = match &r {
                    Ok(s) => vec![
                        (
                            "first_chunk_id".into(),
                            s.first_chunk_id.map_or(-1, |v| v as i64),
                        ),
                        (
                            "committed_chunk_id".into(),
                            s.committed_chunk_id.map_or(-1, |v| v as i64),
                        ),
                    ],
                    Err(_) => vec![],
                };
                Frame::StreamStatsResponse(StreamStatsResponse {
                    correlation_id: c.correlation_id,
                    code: code_of(&r),
                    stats,
                })
            }
            Frame::ExchangeCommandVersions(c) => {
                // Only a client that can read Deliver v2 gets it (Java, JS).
                let v2 = c
                    .commands
                    .iter()
                    .any(|v| v.key == keys::DELIVER && v.max_version >= 2);
                self.settings.deliver_v2.store(v2, Ordering::Relaxed);
                Frame::ExchangeCommandVersionsResponse(ExchangeCommandVersionsResponse {
                    correlation_id: c.correlation_id,
                    code: ResponseCode::OK,
                    commands: supported_commands(),
                })
            }
            Frame::SaslAuthenticate(a) => {
                // Re-authentication after Open (token refresh, RabbitMQ 3.13+).
                let result = authenticate(
                    &a.mechanism,
                    a.data.as_deref(),
                    self.peer.ip(),
                    self.handshake.identity.as_deref(),
                    &self.ctx.config,
                );
                let code = match result {
                    _ if Some(&a.mechanism) != self.handshake.mechanism.as_ref() => {
                        ResponseCode::SASL_CANNOT_CHANGE_MECHANISM
                    }
                    Ok(user) if Some(&user) != self.handshake.user.as_ref() => {
                        ResponseCode::SASL_CANNOT_CHANGE_USERNAME
                    }
                    Ok(_) => ResponseCode::OK,
                    Err(code) => code,
                };
                self.send(Frame::SaslAuthenticateResponse(SaslAuthenticateResponse {
                    correlation_id: a.correlation_id,
                    code,
                    challenge: None,
                }));
                if code.is_ok() {
                    return Flow::Continue;
                }
                let _ = self.out.send(Outgoing::Close);
                return Flow::Stop;
            }
            Frame::Close(c) => {
                self.send(Frame::CloseResponse(Response {
                    correlation_id: c.correlation_id,
                    code: ResponseCode::OK,
                }));
                let _ = self.out.send(Outgoing::Close);
                return Flow::Stop;
            }
            // A late answer to a Close we did not send, or a second one: nothing to do.
            Frame::CloseResponse(_) => return Flow::Continue,
            // Never answered (the Rust client 0.11 waits for an answer, wrongly).
            Frame::ConsumerUpdateResponse(r) => {
                if let Some((id, active, _)) = self.consumer_updates.remove(&r.correlation_id) {
                    session.consumer_update_answered(id, active, r.offset);
                }
                return Flow::Continue;
            }
            Frame::CreateSuperStream(c) => {
                let r = self
                    .ctx
                    .broker
                    .create_super_stream(&c.name, &c.partitions, &c.binding_keys, &c.arguments)
                    .await;
                Frame::CreateSuperStreamResponse(ok_or(c.correlation_id, r))
            }
            Frame::DeleteSuperStream(c) => {
                let r = self.ctx.broker.delete_super_stream(&c.name).await;
                Frame::DeleteSuperStreamResponse(ok_or(c.correlation_id, r))
            }
            Frame::Route(c) => {
                let r = self.ctx.broker.route(&c.super_stream, &c.routing_key);
                Frame::RouteResponse(RouteResponse {
                    correlation_id: c.correlation_id,
                    code: code_of(&r),
                    streams: r.unwrap_or_default(),
                })
            }
            Frame::Partitions(c) => {
                let r = self.ctx.broker.super_stream(&c.super_stream);
                Frame::PartitionsResponse(PartitionsResponse {
                    correlation_id: c.correlation_id,
                    code: code_of(&r),
                    streams: r.map(|ss| ss.partitions).unwrap_or_default(),
                })
            }
            other => {
                tracing::info!(peer = %self.peer, key = other.key(), "command not valid here");
                return Flow::ServerClose(ResponseCode::UNKNOWN_FRAME, "unknown frame");
            }
        };
        self.send(reply);
        Flow::Continue
    }

    fn metadata(&mut self, correlation_id: u32, names: Vec<String>) -> MetadataResponse {
        let mut streams: Vec<StreamMetadata> = Vec::with_capacity(names.len());
        let mut any = false;
        for name in names {
            if streams.iter().any(|s| s.stream == name) {
                continue;
            }
            let r = self.session.as_mut().map(|s| s.metadata(&name));
            let (code, leader) = match r {
                Some(Ok(())) => {
                    any = true;
                    (ResponseCode::OK, 0)
                }
                Some(Err(e)) => (e.code(), 0xffff),
                None => (ResponseCode::STREAM_NOT_AVAILABLE, 0xffff),
            };
            streams.push(StreamMetadata {
                stream: name,
                code,
                leader,
                replicas: vec![],
            });
        }
        // The broker list holds the nodes hosting the requested streams: this one, if any.
        let brokers = if any {
            vec![BrokerEndpoint {
                reference: 0,
                host: self.ctx.config.advertised_host.clone(),
                port: u32::from(self.ctx.advertised_port),
            }]
        } else {
            vec![]
        };
        MetadataResponse {
            correlation_id,
            brokers,
            streams,
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The response code for a broker result.
fn code_of<T>(r: &Result<T, brook_broker::Error>) -> ResponseCode {
    r.as_ref().err().map_or(ResponseCode::OK, |e| e.code())
}

/// What ExchangeCommandVersions answers, in RabbitMQ's order: rstream reads the list by
/// position (`key - 1`), so DeclarePublisher comes first and Publish second. Only implemented
/// commands are listed.
/// Publish 1–2 tells clients that filtering works.
fn supported_commands() -> Vec<CommandVersion> {
    [
        (keys::DECLARE_PUBLISHER, 1),
        (keys::PUBLISH, 2),
        (keys::QUERY_PUBLISHER_SEQUENCE, 1),
        (keys::DELETE_PUBLISHER, 1),
        (keys::SUBSCRIBE, 1),
        (keys::CREDIT, 1),
        (keys::STORE_OFFSET, 1),
        (keys::QUERY_OFFSET, 1),
        (keys::UNSUBSCRIBE, 1),
        (keys::CREATE, 1),
        (keys::DELETE, 1),
        (keys::METADATA, 1),
        (keys::CLOSE, 1),
        (keys::HEARTBEAT, 1),
        (keys::ROUTE, 1),
        (keys::PARTITIONS, 1),
        (keys::STREAM_STATS, 1),
        (keys::CREATE_SUPER_STREAM, 1),
        (keys::DELETE_SUPER_STREAM, 1),
    ]
    .into_iter()
    .map(|(key, max_version)| CommandVersion {
        key,
        min_version: 1,
        max_version,
    })
    .collect()
}

/// What one `writev` will send: small frames encoded into a buffer, and stored chunk bytes
/// referenced where they are (slices of the log reader's buffers), never copied.
#[derive(Default)]
struct Batch {
    encoded: BytesMut,
    parts: Vec<Bytes>,
    len: usize,
    /// Delivery budget held by the chunks in `parts`, returned once they are written.
    budgets: Vec<tokio::sync::OwnedSemaphorePermit>,
}

/// Enough for any batch; Linux allows 1024 iovecs per writev.
const MAX_PARTS: usize = 512;

impl Batch {
    fn seal(&mut self) {
        if !self.encoded.is_empty() {
            self.parts.push(self.encoded.split().freeze());
        }
    }

    fn add(&mut self, mut item: Outgoing, deliver_v2: bool) {
        if let Outgoing::Deliver {
            subscription_id,
            committed_chunk_id,
            chunk,
            budget,
        } = item
        {
            self.budgets.push(budget);
            let (head, data) = chunk.wire_parts();
            let len = head.len() + data.as_ref().map_or(0, |d| d.len());
            encode_deliver_prefix(
                &mut self.encoded,
                subscription_id,
                deliver_v2.then_some(committed_chunk_id),
                len,
            );
            self.seal();
            self.parts.push(head);
            self.parts.extend(data);
            self.len += len;
        } else {
            if let Outgoing::Confirm { budget, .. } = &mut item {
                self.budgets.append(budget);
            }
            let before = self.encoded.len();
            encode(item, &mut self.encoded);
            self.len += self.encoded.len() - before;
        }
    }

    fn full(&self) -> bool {
        self.len >= WRITE_BATCH_BYTES || self.parts.len() >= MAX_PARTS
    }

    async fn write<W: AsyncWrite + Unpin>(&mut self, wr: &mut W) -> std::io::Result<()> {
        self.seal();
        let mut slices: Vec<IoSlice<'_>> = self.parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match wr.write_vectored(rest).await? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => IoSlice::advance_slices(&mut rest, n),
            }
        }
        drop(slices);
        self.parts.clear();
        self.budgets.clear();
        self.len = 0;
        Ok(())
    }
}

/// Drains the connection's queue into the socket: everything queued goes out in one write,
/// and a heartbeat is sent when nothing was written for half the heartbeat interval.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    settings: Arc<WriterSettings>,
) {
    let mut batch = Batch::default();
    loop {
        let heartbeat = settings.heartbeat_secs.load(Ordering::Relaxed);
        let item = if heartbeat == 0 {
            rx.recv().await
        } else {
            let idle = Duration::from_millis(u64::from(heartbeat) * 500);
            match tokio::time::timeout(idle, rx.recv()).await {
                Ok(item) => item,
                Err(_) => {
                    batch.add(
                        Outgoing::Frame(Frame::Heartbeat(brook_protocol::Heartbeat {})),
                        false,
                    );
                    if batch.write(&mut wr).await.is_err() {
                        return;
                    }
                    continue;
                }
            }
        };
        let Some(mut item) = item else { break };
        let mut close = false;
        loop {
            match item {
                Outgoing::Close => {
                    close = true;
                    break;
                }
                other => batch.add(other, settings.deliver_v2.load(Ordering::Relaxed)),
            }
            if batch.full() {
                break;
            }
            match rx.try_recv() {
                Ok(next) => item = next,
                Err(_) => break,
            }
        }
        if batch.write(&mut wr).await.is_err() {
            return;
        }
        if close {
            break;
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
}

fn encode(item: Outgoing, buf: &mut BytesMut) {
    match item {
        Outgoing::Frame(f) => f.encode(buf),
        Outgoing::Confirm {
            publisher_id,
            ids,
            alive,
            budget: _,
        } => {
            if alive.load(Ordering::Acquire) {
                Frame::PublishConfirm(PublishConfirm {
                    publisher_id,
                    publishing_ids: ids,
                })
                .encode(buf);
            }
        }
        Outgoing::PublishError {
            publisher_id,
            errors,
        } => Frame::PublishError(PublishError {
            publisher_id,
            errors: errors
                .into_iter()
                .map(|(publishing_id, code)| PublishingError {
                    publishing_id,
                    code,
                })
                .collect(),
        })
        .encode(buf),
        // Handled by `Batch::add`, which does not copy the chunk.
        Outgoing::Deliver { .. } | Outgoing::Close => {}
    }
}
