//! brook's management HTTP API: RabbitMQ's paths, JSON field names, status codes and error
//! bodies (as `rabbitmq_management` and `rabbitmq_stream_management` 3.10–4.x answer them), for
//! the scripts, CLIs and client test suites written against RabbitMQ.
//!
//! * `auth.rs` — HTTP Basic against the broker's users; the management tags.
//! * `list.rs` — sorting, column selection and pagination of list routes.
//! * `routes/` — one module per resource; each handler reads or changes broker and access
//!   state and formats it with RabbitMQ's names. Super streams appear as RabbitMQ shows them: a
//!   direct exchange with one binding per partition.
//! * `definitions.rs` — export and import of RabbitMQ's definitions format.
//!
//! Deliberate differences from RabbitMQ are listed in `docs/COMPATIBILITY.md`.

mod auth;
mod body;
pub mod definitions;
mod error;
mod format;
mod list;
mod phash2;
mod rates;

pub use rates::Rates;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::http::Uri;
use brook_auth::AccessStore;
use brook_broker::Broker;
use brook_server::Connections;
use tokio::net::TcpListener;
use tower::Layer as _;

/// A listener the broker runs, as `/api/overview` lists it.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    /// RabbitMQ's protocol names: `stream`, `stream/ssl`, `http`, `http/prometheus`.
    pub protocol: String,
    pub addr: SocketAddr,
}

/// What the API reads and changes.
#[derive(Debug)]
pub struct Api {
    pub broker: Broker,
    pub access: Arc<AccessStore>,
    pub connections: Arc<Connections>,
    /// This node's name, RabbitMQ style (`brook@host`).
    pub node: String,
    pub data_dir: PathBuf,
    pub listeners: Vec<ListenerInfo>,
    /// The RabbitMQ release whose protocol brook speaks (`rabbitmq_version` in overviews).
    pub rabbitmq_version: String,
    pub started: Instant,
    /// Also served here, at `/metrics` (as on the metrics listener).
    pub metrics: Arc<brook_metrics::Metrics>,
    /// Message rates, sampled while the API serves (start with `Rates::default()`).
    pub rates: Rates,
    /// This node's membership of a cluster (`/api/nodes` then lists every member).
    pub cluster: Option<Arc<brook_cluster::Cluster>>,
}

/// The bound management listener.
#[derive(Debug)]
pub struct Management {
    listener: TcpListener,
    api: Arc<Api>,
}

impl Management {
    pub async fn bind(addr: SocketAddr, api: Api) -> std::io::Result<Management> {
        Ok(Management {
            listener: TcpListener::bind(addr).await?,
            api: Arc::new(api),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The listeners `/api/overview` shows (this one's address is known only once bound).
    pub fn set_listeners(&mut self, listeners: Vec<ListenerInfo>) {
        if let Some(api) = Arc::get_mut(&mut self.api) {
            api.listeners = listeners;
        }
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let sampler = {
            let api = self.api.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(rates::INTERVAL);
                loop {
                    every.tick().await;
                    api.rates.tick(&api.broker);
                }
            })
        };
        let router = routes::router(self.api);
        // RabbitMQ ignores a trailing slash (`/api/connections/`); axum does not, so it is
        // trimmed before routing.
        let app = tower::util::MapRequestLayer::new(trim_trailing_slash).layer(router);
        let service =
            axum::ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(app);
        if let Err(e) = axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("management API stopped: {e}");
        }
        sampler.abort();
    }
}

fn trim_trailing_slash(mut request: Request) -> Request {
    let path = request.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let rebuilt = match request.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_owned(),
        };
        if let Ok(uri) = rebuilt.parse::<Uri>() {
            *request.uri_mut() = uri;
        }
    }
    request
}
