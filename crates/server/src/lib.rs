//! brook's network edge: TCP listeners and one task per connection driving the protocol state
//! machine. All stream semantics live in `brook-broker`; this crate only moves frames.

mod config;
mod connection;
mod handshake;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use brook_broker::Broker;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use config::{ServerConfig, User};
use connection::Context;

/// A bound listener, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    ctx: Arc<Context>,
}

impl Server {
    /// Binds the listener. Port 0 picks a free port; the advertised port defaults to the bound
    /// one.
    pub async fn bind(config: ServerConfig, broker: Broker) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        let port = listener.local_addr()?.port();
        let advertised_port = config.advertised_port.unwrap_or(port);
        Ok(Server {
            listener,
            ctx: Arc::new(Context {
                broker,
                config,
                advertised_port,
            }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `shutdown` completes, then drops every connection.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let _ = socket.set_nodelay(true);
                        let (rd, wr) = socket.into_split();
                        connections.spawn(connection::serve(rd, wr, peer, self.ctx.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving the others.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next() => {}
                () = &mut shutdown => break,
            }
        }
        connections.shutdown().await;
    }
}
