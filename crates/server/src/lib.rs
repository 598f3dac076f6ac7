//! brook's stream protocol edge: the listeners (plain TCP and TLS) and one task per connection
//! driving the protocol state machine. All stream semantics live in `brook-broker`, who may do
//! what in `brook-auth`; this crate only moves frames (the management API is `brook-management`).

mod config;
mod connection;
mod handshake;
mod registry;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use brook_auth::AccessStore;
use brook_broker::Broker;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use config::{ServerConfig, TlsConfig};
use connection::Context;
pub use registry::{ConnectionInfo, Connections};
pub use tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

struct Listener {
    tcp: TcpListener,
    ctx: Arc<Context>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.tcp.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Bound listeners, ready to serve.
#[derive(Debug)]
pub struct Server {
    plain: Listener,
    tls: Option<Listener>,
    connections: Arc<Connections>,
}

async fn listen(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError::Listen { addr, source })
}

impl Server {
    /// Binds every configured listener. Port 0 picks a free port; advertised ports default to
    /// the bound ones.
    pub async fn bind(
        config: ServerConfig,
        broker: Broker,
        access: Arc<AccessStore>,
    ) -> Result<Server, BindError> {
        let connections = Arc::new(Connections::default());
        let context = |port: u16, tls: bool| {
            Arc::new(Context {
                broker: broker.clone(),
                access: access.clone(),
                config: config.clone(),
                advertised_port: port,
                connections: connections.clone(),
                tls,
            })
        };
        let tcp = listen(config.listen).await?;
        let port = local_port(&tcp);
        let plain = Listener {
            ctx: context(config.advertised_port.unwrap_or(port), false),
            tcp,
            tls: None,
        };
        let tls = match &config.tls {
            None => None,
            Some(t) => {
                let acceptor = tls::acceptor(t)?;
                let tcp = listen(t.listen).await?;
                let port = t.advertised_port.unwrap_or(local_port(&tcp));
                Some(Listener {
                    ctx: context(port, true),
                    tcp,
                    tls: Some(acceptor),
                })
            }
        };
        Ok(Server {
            plain,
            tls,
            connections,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.plain.tcp.local_addr()
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|l| l.tcp.local_addr().ok())
    }

    pub fn connections(&self) -> Arc<Connections> {
        self.connections.clone()
    }

    /// Serves until `shutdown` completes, then drops every connection.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let mut tasks = JoinSet::new();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut listeners = vec![self.plain];
        listeners.extend(self.tls);
        for listener in listeners {
            tasks.spawn(accept_loop(listener, stop_rx.clone()));
        }
        shutdown.await;
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
    }
}

fn local_port(tcp: &TcpListener) -> u16 {
    tcp.local_addr().map_or(0, |a| a.port())
}

async fn accept_loop(listener: Listener, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.tcp.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let local = socket.local_addr().unwrap_or(peer);
                    let ctx = listener.ctx.clone();
                    match &listener.tls {
                        None => {
                            let (rd, wr) = socket.into_split();
                            connections.spawn(connection::serve(rd, wr, peer, local, None, ctx));
                        }
                        Some(acceptor) => {
                            let acceptor = acceptor.clone();
                            connections.spawn(async move {
                                // A silent peer must not hold a socket forever.
                                let handshake = tokio::time::timeout(
                                    ctx.config.negotiation_timeout,
                                    acceptor.accept(socket),
                                );
                                match handshake.await {
                                    Ok(Ok(stream)) => {
                                        let identity = stream
                                            .get_ref()
                                            .1
                                            .peer_certificates()
                                            .and_then(|c| c.first())
                                            .and_then(tls::common_name);
                                        let (rd, wr) = tokio::io::split(stream);
                                        connection::serve(rd, wr, peer, local, identity, ctx).await;
                                    }
                                    Ok(Err(e)) => tracing::info!(%peer, "TLS handshake failed: {e}"),
                                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
            _ = stop.changed() => break,
        }
    }
    connections.shutdown().await;
}
