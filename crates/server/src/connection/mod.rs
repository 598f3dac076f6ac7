//! One task per connection: read frames, drive the handshake and then the [`Session`], and a
//! writer task that drains the connection's ordered output queue to the socket.
//!
//! * `reader.rs` — frames out of the byte stream;
//! * `handlers.rs` — one function per command after Open;
//! * `writer.rs` — the writer task.
//!
//! Memory: every frame read is charged to the connection's [`Budget`] before it is handled,
//! and every frame queued for the socket holds a charge until written. When the budget is
//! spent the request loop stops reading, so the client meets TCP back-pressure; a peer whose
//! socket accepts nothing for the stall timeout is disconnected.

mod handlers;
mod reader;
mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use brook_auth::AccessStore;
use brook_broker::queue::{QueueReceiver, queue};
use brook_broker::{
    Broker, Budget, CONNECTION_BUDGET_BYTES, Charge, ControlEvent, ControlSender, Outgoing,
    OutgoingSender, Session,
};
use brook_protocol::{Close, ConsumerUpdate, DecodeError, Frame, MetadataUpdate, ResponseCode};
use bytes::BytesMut;
use tokio::io::AsyncWrite;

use crate::config::ServerConfig;
use crate::handshake::{Action, Handshake};
use crate::registry::{Connections, Registration};
use reader::{FrameReader, Read, ReadSocket};
use writer::WriterShared;

/// RabbitMQ 4.3.5 caps frames before Open at 8 KiB: enough for any handshake (a JWT as PLAIN
/// password included), small enough that unauthenticated peers cannot make us buffer much.
const INITIAL_FRAME_MAX: u32 = 8192;
/// How long a connection may sit with its budget spent while its socket accepts nothing, when
/// heartbeats are off (otherwise: the heartbeat timeout).
const STALL_TIMEOUT_WITHOUT_HEARTBEATS: Duration = Duration::from_secs(60);

/// Shared by all connections of a listener.
#[derive(Debug)]
pub(crate) struct Context {
    pub broker: Broker,
    pub access: Arc<AccessStore>,
    pub config: ServerConfig,
    pub advertised_port: u16,
    pub connections: Arc<Connections>,
    /// Whether this listener is the TLS one.
    pub tls: bool,
}

/// Why a connection ended, for the log.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Handshake(&'static str),
    #[error("no frame within the negotiation timeout")]
    NegotiationTimeout,
    #[error("no data for {0:?}: heartbeat timeout")]
    HeartbeatTimeout(Duration),
    #[error("the client has not read its socket for {0:?}")]
    Stalled(Duration),
    #[error("malformed frame before open: {0}")]
    BadFrame(DecodeError),
    #[error("frame of {0} bytes over the limit before open")]
    TooLarge(u32),
    #[error("closed through the management API")]
    ClosedByOperator,
    #[error("a ConsumerUpdate was not answered in time")]
    NoConsumerUpdateAnswer,
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
    R: ReadSocket,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out, out_rx) = queue();
    let shared = Arc::new(WriterShared::new());
    let writer = tokio::spawn(writer::write_loop(wr, out_rx, shared.clone()));
    let (control, control_rx) = queue();
    let (registration, killed) = ctx.connections.register(peer, local, ctx.tls);
    let advertised_host = ctx
        .config
        .advertised_host
        .clone()
        .unwrap_or_else(|| host_of(local));
    let mut conn = Connection {
        handshake: Handshake::new(peer.ip(), advertised_host, ctx.advertised_port, identity),
        registration,
        reader: FrameReader::new(rd),
        out,
        budget: Budget::new(CONNECTION_BUDGET_BYTES),
        shared,
        control,
        control_rx,
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
    // A peer that stopped reading will not take what is queued either: drop it at once.
    let stalled = matches!(result, Err(ConnError::Stalled(_)));
    match result {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(e) => tracing::info!(%peer, "connection closed: {e}"),
    }
    // Dropping the session (inside `run`) ended its subscriptions and publishers; dropping the
    // last queue sender lets the writer flush what is left and close the socket.
    let close_timeout = conn.ctx.config.close_timeout;
    conn.budget.close();
    drop(conn);
    // A peer that stopped reading must not keep the connection (and its socket) forever.
    let mut writer = writer;
    let finished = !stalled
        && tokio::time::timeout(close_timeout, &mut writer)
            .await
            .is_ok();
    if !finished {
        writer.abort();
    }
}

pub(crate) struct Connection<R> {
    ctx: Arc<Context>,
    peer: SocketAddr,
    handshake: Handshake,
    registration: Registration,
    reader: FrameReader<R>,
    out: OutgoingSender,
    budget: Budget,
    shared: Arc<WriterShared>,
    control: ControlSender,
    control_rx: QueueReceiver<ControlEvent>,
    frame_max: u32,
    heartbeat: u32,
    /// Whether the client answered Tune (it may Open first, RabbitMQ allows it).
    tuned: bool,
    /// ConsumerUpdate requests sent and not yet answered: correlation id → (subscription,
    /// active, when sent).
    consumer_updates: HashMap<u32, (u8, bool, tokio::time::Instant)>,
    next_correlation_id: u32,
}

/// What to do after a frame.
pub(crate) enum Flow {
    Continue,
    /// The client closed (its Close was answered) or the connection must end now.
    Stop,
    /// Close from the server side with this code.
    ServerClose(ResponseCode, &'static str),
}

enum Input {
    Read(Read),
    Control(ControlEvent),
}

impl<R: ReadSocket> Connection<R> {
    /// How long the budget may stay spent while the socket accepts nothing.
    fn stall_timeout(&self) -> Duration {
        match self.heartbeat {
            0 => STALL_TIMEOUT_WITHOUT_HEARTBEATS,
            h => Duration::from_secs(u64::from(h) * 3),
        }
    }

    /// Charges `bytes` to the budget, waiting while it is spent. Fails when the peer has not
    /// let a single byte be written for the stall timeout meanwhile.
    async fn charge(&self, bytes: usize) -> Result<Charge, ConnError> {
        // The common case, without a timer.
        if let Some(charge) = self.budget.try_charge(bytes) {
            return Ok(charge);
        }
        // Boxed: the wait and its timer would otherwise size every connection's task.
        Box::pin(self.wait_for_budget(bytes)).await
    }

    /// Waits until `bytes` fit the spent budget, or the stall timeout passes.
    async fn wait_for_budget(&self, bytes: usize) -> Result<Charge, ConnError> {
        let timeout = self.stall_timeout();
        loop {
            match tokio::time::timeout(timeout, self.budget.charge(bytes)).await {
                Ok(charge) => return Ok(charge),
                Err(_) => match self.shared.stalled_for() {
                    Some(stalled) if stalled >= timeout => {
                        return Err(ConnError::Stalled(stalled));
                    }
                    _ => {}
                },
            }
        }
    }

    /// Queues a frame, charged to the budget.
    async fn send(&self, frame: Frame) -> Result<(), ConnError> {
        // Encoded (and the frame dropped) before the wait: the frame is not kept in the task.
        let buf = self.encode(frame);
        let charge = self.charge(buf.len()).await?;
        let _ = self.out.send(Outgoing::Frame(buf.freeze(), charge));
        Ok(())
    }

    /// A frame as it goes to the socket; error responses are counted.
    fn encode(&self, frame: Frame) -> BytesMut {
        if let Some(code) = frame.response_code() {
            self.ctx.broker.totals().error(code);
        }
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        buf
    }

    async fn run(&mut self) -> Result<(), ConnError> {
        // Boxed: the handshake's future is large and over once the connection is open.
        let Some(mut session) = Box::pin(self.negotiate()).await? else {
            return Ok(());
        };
        // Until Open the limit was INITIAL_FRAME_MAX; from now on it is the negotiated one, or
        // the server's proposal if the client opened without answering Tune.
        if !self.tuned {
            self.frame_max = self.ctx.config.frame_max;
        }
        if self.frame_max != 0 && self.frame_max < INITIAL_FRAME_MAX {
            self.frame_max = INITIAL_FRAME_MAX;
        }
        loop {
            let flow = match self.next_input().await? {
                // Rare and large futures are boxed, so that they do not size every idle
                // connection's task.
                Input::Control(event) => Box::pin(self.on_control(&mut session, event)).await?,
                Input::Read(Read::Frame(bytes)) => {
                    let charge = self.charge(bytes.len() + 4).await?;
                    match Frame::decode(bytes) {
                        Ok(frame) => self.dispatch(&mut session, frame, charge).await?,
                        Err(e) => {
                            tracing::info!(peer = %self.peer, "unparseable frame: {e}");
                            Flow::ServerClose(ResponseCode::UNKNOWN_FRAME, "unknown frame")
                        }
                    }
                }
                Input::Read(Read::TooLarge(_)) => {
                    Flow::ServerClose(ResponseCode::FRAME_TOO_LARGE, "frame too large")
                }
                Input::Read(Read::Eof) => Flow::Stop,
            };
            match flow {
                Flow::Continue => {}
                Flow::Stop => return Ok(()),
                Flow::ServerClose(code, reason) => {
                    // Stop deliveries first: nothing may follow the Close.
                    drop(session);
                    return Box::pin(self.server_close(code, reason)).await;
                }
            }
        }
    }

    /// The next frame or control event. A ConsumerUpdate left unanswered past the request
    /// timeout ends the connection, as in RabbitMQ: the group cannot move on without it.
    async fn next_input(&mut self) -> Result<Input, ConnError> {
        let answer_due = self
            .consumer_updates
            .values()
            .map(|(_, _, sent)| *sent + self.ctx.config.request_timeout)
            .min();
        tokio::select! {
            read = self.reader.next_open(self.frame_max, self.heartbeat) => Ok(Input::Read(read?)),
            Some(event) = self.control_rx.recv() => Ok(Input::Control(event)),
            () = until(answer_due) => Err(ConnError::NoConsumerUpdateAnswer),
        }
    }

    /// The handshake, up to Open. `None`: the client left before.
    async fn negotiate(&mut self) -> Result<Option<Session>, ConnError> {
        loop {
            let timeout = self.ctx.config.negotiation_timeout;
            let read = tokio::time::timeout(timeout, self.reader.next(INITIAL_FRAME_MAX))
                .await
                .map_err(|_| ConnError::NegotiationTimeout)??;
            let bytes = match read {
                Read::Frame(b) => b,
                Read::Eof => return Ok(None),
                Read::TooLarge(size) => {
                    if self.reader.buf.first() == Some(&0x16) {
                        tracing::info!(peer = %self.peer, "TLS handshake on the plain port");
                    }
                    return Err(ConnError::TooLarge(size));
                }
            };
            let frame = Frame::decode(bytes).map_err(ConnError::BadFrame)?;
            let actions = self
                .handshake
                .handle(frame, &self.ctx.config, &self.ctx.access);
            // The management API lists half-open connections too, with what is known so far.
            let (user, mechanism, properties) = (
                self.handshake.user.clone(),
                self.handshake.mechanism.clone(),
                self.handshake.client_properties.iter().cloned().collect(),
            );
            self.registration.update(|info| {
                info.user = user;
                info.auth_mechanism = mechanism;
                info.client_properties = properties;
            });
            for action in actions {
                if let Some(session) = self.on_handshake_action(action).await? {
                    return Ok(Some(session));
                }
            }
        }
    }

    async fn on_handshake_action(&mut self, action: Action) -> Result<Option<Session>, ConnError> {
        match action {
            Action::Send(f) => self.send(f).await?,
            Action::FailAndClose(f, delay) => {
                if delay {
                    tokio::time::sleep(self.ctx.config.auth_failure_delay).await;
                }
                self.send(f).await?;
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
                self.shared
                    .heartbeat_secs
                    .store(heartbeat, Ordering::Relaxed);
                self.registration.update(|info| {
                    info.frame_max = frame_max;
                    info.heartbeat = heartbeat;
                });
            }
            Action::Opened => {
                tracing::debug!(peer = %self.peer, user = ?self.handshake.user,
                    properties = ?self.handshake.client_properties, "connection open");
                // The registration has a copy for the management API; an open connection's
                // memory is kept to what it uses (issue #12).
                self.handshake.client_properties = Vec::new();
                let session = self.ctx.broker.session(
                    &self.handshake.vhost,
                    self.control.clone(),
                    self.out.clone(),
                    self.budget.clone(),
                );
                let (vhost, counters) = (self.handshake.vhost.clone(), session.counters());
                self.registration.update(|info| {
                    info.vhost = Some(vhost);
                    info.counters = Some(counters);
                });
                return Ok(Some(session));
            }
        }
        Ok(None)
    }

    /// Sends Close and waits for the client's answer (or its leaving, or the timeout).
    async fn server_close(&mut self, code: ResponseCode, reason: &str) -> Result<(), ConnError> {
        tracing::info!(peer = %self.peer, "closing connection: {reason}");
        self.send(Frame::Close(Close {
            correlation_id: 1,
            code,
            reason: reason.to_owned(),
        }))
        .await?;
        let deadline = tokio::time::Instant::now() + self.ctx.config.close_timeout;
        // After an oversized frame its bytes are still in the stream: just drain until the
        // client leaves. Otherwise look for its CloseResponse (small: anything large is
        // drained unread too).
        let mut draining = code == ResponseCode::FRAME_TOO_LARGE;
        loop {
            let read = tokio::time::timeout_at(deadline, async {
                if draining {
                    Ok(if self.reader.discard().await {
                        Read::TooLarge(0)
                    } else {
                        Read::Eof
                    })
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

    async fn on_control(
        &mut self,
        session: &mut Session,
        event: ControlEvent,
    ) -> Result<Flow, ConnError> {
        let stream = match event {
            ControlEvent::StreamDeleted(stream) => {
                session.stream_deleted(&stream).then_some(stream)
            }
            ControlEvent::PublishersFenced { stream, epoch } => {
                session.publishers_fenced(&stream, epoch).then_some(stream)
            }
            ControlEvent::ConsumerUpdate {
                subscription_id,
                active,
            } => {
                if session.consumer_update(subscription_id, active) {
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
                    }))
                    .await?;
                }
                None
            }
        };
        if let Some(stream) = stream {
            self.send(Frame::MetadataUpdate(MetadataUpdate {
                code: ResponseCode::STREAM_NOT_AVAILABLE,
                stream,
            }))
            .await?;
        }
        Ok(Flow::Continue)
    }
}

/// The address a client reached us at, as a host to advertise (an IPv4 address reached
/// through an IPv6 socket is shown as IPv4).
fn host_of(local: SocketAddr) -> String {
    match local.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        ip => ip.to_string(),
    }
}

/// Sleeps until `deadline`, or forever without one.
fn until(
    deadline: Option<tokio::time::Instant>,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    // Boxed: a timer is only armed while a ConsumerUpdate is unanswered, and an idle
    // connection's task should not carry one (issue #12). Boxing `pending()` allocates nothing.
    match deadline {
        Some(d) => Box::pin(tokio::time::sleep_until(d)),
        None => Box::pin(std::future::pending()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection's memory is mostly its two tasks' futures (issue #12): a new large
    /// future awaited inline in the request loop shows up here. Box rare or large ones.
    #[test]
    fn a_connection_task_stays_small() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let storage: brook_storage::SharedStorage =
                Arc::new(brook_storage::sim::SimDisk::new(1));
            storage.create_dir_all(std::path::Path::new("/d")).unwrap();
            let access =
                AccessStore::open(storage, std::path::Path::new("/d"), &Default::default());
            let dir = tempfile::tempdir().unwrap();
            let ctx = Arc::new(Context {
                broker: Broker::open(brook_broker::BrokerConfig::new(dir.path())).unwrap(),
                access: Arc::new(access.unwrap()),
                config: ServerConfig::default(),
                advertised_port: 5552,
                connections: Arc::default(),
                tls: false,
            });
            let (socket, _peer) = tokio::io::duplex(64);
            let (rd, wr) = tokio::io::split(socket);
            let addr: SocketAddr = "127.0.0.1:5552".parse().unwrap();
            let connection = serve(rd, wr, addr, addr, None, ctx);
            let size = std::mem::size_of_val(&connection);
            assert!(size <= 1600, "the connection's future is {size} bytes");
            let (_tx, rx) = queue::<Outgoing>();
            let writer = writer::write_loop(tokio::io::sink(), rx, Arc::new(WriterShared::new()));
            let size = std::mem::size_of_val(&writer);
            assert!(size <= 768, "the writer's future is {size} bytes");
        });
    }
}
