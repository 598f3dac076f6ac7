//! brook's Prometheus metrics, on their own listener (RabbitMQ's plugin port, 15692) and on the
//! management listener, at RabbitMQ's paths:
//!
//! * `/metrics` — node totals, `rabbitmq_global_*` counters and brook's own families;
//! * `/metrics/per-object` — the same with RabbitMQ's queue families per stream;
//! * `/metrics/detailed?family=…&vhost=…` — RabbitMQ's `rabbitmq_detailed_queue_*` families.
//!
//! Every scrape gathers a [`snapshot`] (the registry, connections, each stream's tracking) and
//! encodes it with prometheus-client in the OpenMetrics text format, which Prometheus reads.
//! Names and labels follow RabbitMQ's plugin where it has the metric (`rabbitmq.rs`), so its
//! Grafana dashboards work; brook's own are `brook_*` (`brook.rs`, with their cardinality).

mod brook;
mod encode;
pub mod node;
mod rabbitmq;
mod snapshot;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use brook_broker::Broker;
use brook_server::Connections;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use snapshot::Snapshot;

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the metrics read.
#[derive(Debug)]
pub struct Metrics {
    pub broker: Broker,
    pub connections: Arc<Connections>,
    /// The node's name, RabbitMQ style (`brook@host`).
    pub node: String,
    pub data_dir: PathBuf,
    /// The RabbitMQ release whose protocol brook speaks.
    pub rabbitmq_version: String,
}

/// Which of RabbitMQ's three endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Aggregated,
    PerObject,
    /// `family` and `vhost` query parameters (repeatable).
    Detailed {
        families: Vec<String>,
        vhosts: Vec<String>,
    },
}

impl Endpoint {
    fn detailed(query: Option<&str>) -> Endpoint {
        let (mut families, mut vhosts) = (Vec::new(), Vec::new());
        for pair in query.unwrap_or("").split('&') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let value = percent_decode(value);
            match key {
                "family" => families.push(value),
                "vhost" => vhosts.push(value),
                _ => {}
            }
        }
        Endpoint::Detailed { families, vhosts }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Metrics {
    /// One scrape of `endpoint`, as exposition text.
    pub async fn render(self: &Arc<Self>, endpoint: Endpoint) -> String {
        let snapshot = Snapshot::gather(self).await;
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape {
            metrics: self.clone(),
            snapshot,
            endpoint,
        }));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }
}

#[derive(Debug)]
struct Scrape {
    metrics: Arc<Metrics>,
    snapshot: Snapshot,
    endpoint: Endpoint,
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let (m, snap) = (&*self.metrics, &self.snapshot);
        let totals = m.broker.totals();
        rabbitmq::identity(&mut enc, m)?;
        let all: Vec<_> = snap.streams.iter().collect();
        match &self.endpoint {
            Endpoint::Detailed { families, vhosts } => {
                let rows: Vec<_> = all
                    .into_iter()
                    .filter(|s| vhosts.is_empty() || vhosts.contains(&s.id.vhost))
                    .collect();
                let has = |f: &str| families.iter().any(|x| x == f);
                let consumers = has("queue_consumer_count") || has("queue_metrics");
                rabbitmq::queues(
                    &mut enc,
                    "rabbitmq_detailed_",
                    &rows,
                    has("queue_coarse_metrics"),
                    consumers,
                )
            }
            Endpoint::PerObject | Endpoint::Aggregated => {
                if self.endpoint == Endpoint::PerObject {
                    rabbitmq::queues(&mut enc, "rabbitmq_", &all, true, true)?;
                } else {
                    rabbitmq::totals(&mut enc, snap, m)?;
                }
                rabbitmq::global(&mut enc, snap, totals)?;
                brook::streams(&mut enc, snap)?;
                brook::named_consumers(&mut enc, snap)?;
                brook::publishers(&mut enc, snap)?;
                brook::consumers(&mut enc, snap)?;
                brook::histograms(&mut enc, totals)
            }
        }
    }
}

/// `/metrics`, `/metrics/per-object`, `/metrics/detailed`: no authentication, as RabbitMQ's
/// Prometheus endpoints.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(aggregated))
        .route("/metrics/per-object", get(per_object))
        .route("/metrics/detailed", get(detailed))
        .with_state(metrics)
}

async fn aggregated(State(m): State<Arc<Metrics>>) -> Response {
    exposition(m.render(Endpoint::Aggregated).await)
}

async fn per_object(State(m): State<Arc<Metrics>>) -> Response {
    exposition(m.render(Endpoint::PerObject).await)
}

async fn detailed(State(m): State<Arc<Metrics>>, RawQuery(query): RawQuery) -> Response {
    exposition(m.render(Endpoint::detailed(query.as_deref())).await)
}

fn exposition(body: String) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// Serves the metrics on their own listener until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    if let Err(e) = axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(?addr, "metrics listener stopped: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detailed_query_is_parsed() {
        assert_eq!(
            Endpoint::detailed(Some(
                "family=queue_coarse_metrics&vhost=%2F&family=queue_metrics"
            )),
            Endpoint::Detailed {
                families: vec!["queue_coarse_metrics".into(), "queue_metrics".into()],
                vhosts: vec!["/".into()],
            }
        );
    }
}
