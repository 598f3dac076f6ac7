//! A TCP proxy for fault-injection tests: three brooks on loopback, each link between them
//! through one of these. Network namespaces would be closer to a real
//! network but need privileges a CI container may not have; a proxy per link needs none and
//! gives the faults that matter to a replicated broker:
//!
//! * **cut**: every proxied connection is closed and new ones are closed at once, as when a
//!   peer's host goes away and the kernel answers with resets;
//! * **black hole**: connections stay open but nothing is forwarded either way, as in a
//!   partition where packets are lost: the peers notice only through their own timeouts;
//! * **delay**: every piece of data is held this long before it is forwarded;
//! * **heal**: back to forwarding (connections cut or black-holed meanwhile stay dead, as
//!   after a real partition their peers must reconnect).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

/// What the link does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Cut,
    BlackHole,
}

#[derive(Debug)]
struct State {
    mode: watch::Sender<Mode>,
    delay: Mutex<Duration>,
    /// The pumps of the connections opened so far (a cut aborts them).
    pumps: Mutex<Vec<AbortHandle>>,
}

/// One proxied link: connections to [`Proxy::addr`] are forwarded to the upstream address.
/// Dropping it stops the listener and every connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: AbortHandle,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking pump cannot leave a Vec or a Duration half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Forward);
        let state = Arc::new(State {
            mode,
            delay: Mutex::new(Duration::ZERO),
            pumps: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, upstream, state.clone())).abort_handle();
        Ok(Self {
            addr,
            state,
            accept,
        })
    }

    /// Where clients connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn mode(&self) -> Mode {
        *self.state.mode.borrow()
    }

    /// Closes every connection and closes new ones at once, until [`Proxy::heal`].
    pub fn cut(&self) {
        self.state.mode.send_replace(Mode::Cut);
        for pump in lock(&self.state.pumps).drain(..) {
            pump.abort();
        }
    }

    /// Stops forwarding in both directions without closing anything, until [`Proxy::heal`].
    pub fn black_hole(&self) {
        self.state.mode.send_replace(Mode::BlackHole);
    }

    /// Forwards again; connections cut or black-holed meanwhile stay dead.
    pub fn heal(&self) {
        self.state.mode.send_replace(Mode::Forward);
    }

    /// Holds every piece of data this long before forwarding it (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.state.delay) = delay;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for pump in lock(&self.state.pumps).drain(..) {
            pump.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *state.mode.borrow() == Mode::Cut {
            drop(client);
            continue;
        }
        let state = state.clone();
        tokio::spawn(async move {
            if let Ok(server) = TcpStream::connect(upstream).await {
                link(client, server, &state).await;
            }
        });
    }
}

/// Forwards both directions until either side closes, then closes the other.
async fn link(client: TcpStream, server: TcpStream, state: &Arc<State>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_rd, client_wr) = client.into_split();
    let (server_rd, server_wr) = server.into_split();
    let mut pumps = JoinSet::new();
    let up = pumps.spawn(pump(client_rd, server_wr, state.clone()));
    let down = pumps.spawn(pump(server_rd, client_wr, state.clone()));
    {
        let mut registered = lock(&state.pumps);
        registered.retain(|p| !p.is_finished());
        // Cut between the check in the accept loop and here: do not start forwarding.
        if *state.mode.borrow() == Mode::Cut {
            pumps.abort_all();
        }
        registered.extend([up, down]);
    }
    // One direction ending ends the link: dropping the set aborts the other pump.
    let _ = pumps.join_next().await;
}

/// Copies one direction, obeying the mode and the delay. A black-holed pump stops reading
/// (so the sender's buffers fill as on a lossy path) and never forwards what it held.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, state: Arc<State>) {
    let mut mode = state.mode.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if *mode.borrow_and_update() == Mode::BlackHole {
            // Wait for a heal that never revives this connection: it stays silent forever.
            std::future::pending::<()>().await;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let delay = *lock(&state.delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if *mode.borrow() != Mode::Forward {
            continue;
        }
        let Some(data) = buf.get(..n) else { return };
        if to.write_all(data).await.is_err() {
            return;
        }
    }
}
