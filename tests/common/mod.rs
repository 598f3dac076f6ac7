//! A real brook, started in-process on an ephemeral port for integration tests.
#![allow(dead_code, clippy::unwrap_used)]

pub mod child;
pub mod cluster;
pub mod http;
pub mod prom;
pub mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use brook_auth::{AccessStore, Bootstrap};
use brook_broker::{Broker, BrokerConfig};
use brook_management::{Api, ListenerInfo, Management};
use brook_server::{Server, ServerConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestBroker {
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    /// The management API.
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub broker: Broker,
    pub access: Arc<AccessStore>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Settings for tests: loopback, fast failure paths.
pub fn test_server_config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        advertised_host: Some("127.0.0.1".into()),
        auth_failure_delay: Duration::from_millis(200),
        close_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    }
}

impl TestBroker {
    pub async fn start(data_dir: &Path) -> TestBroker {
        Self::start_with(BrokerConfig::new(data_dir), test_server_config()).await
    }

    pub async fn start_with(config: BrokerConfig, server_config: ServerConfig) -> TestBroker {
        Self::start_full(config, server_config, Bootstrap::default()).await
    }

    /// With the stream listener, the management API, and users seeded from `bootstrap`.
    pub async fn start_full(
        config: BrokerConfig,
        server_config: ServerConfig,
        bootstrap: Bootstrap,
    ) -> TestBroker {
        let data_dir = config.data_dir.clone();
        let storage = config.storage.clone();
        let broker = Broker::open(config).unwrap();
        let access = Arc::new(AccessStore::open(storage, &data_dir, &bootstrap).unwrap());
        let server = Server::bind(server_config, broker.clone(), access.clone())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let tls_addr = server.tls_addr();
        let metrics = Arc::new(brook_metrics::Metrics {
            broker: broker.clone(),
            connections: server.connections(),
            node: "brook@test".into(),
            data_dir: data_dir.clone(),
            rabbitmq_version: ServerConfig::default().protocol_version,
        });
        let mut management = Management::bind(
            "127.0.0.1:0".parse().unwrap(),
            Api {
                broker: broker.clone(),
                access: access.clone(),
                connections: server.connections(),
                node: "brook@test".into(),
                data_dir: data_dir.clone(),
                listeners: Vec::new(),
                rabbitmq_version: ServerConfig::default().protocol_version,
                started: std::time::Instant::now(),
                metrics,
                rates: Default::default(),
                cluster: None,
            },
        )
        .await
        .unwrap();
        let http_addr = management.local_addr().unwrap();
        management.set_listeners(vec![
            ListenerInfo {
                protocol: "stream".into(),
                addr,
            },
            ListenerInfo {
                protocol: "http".into(),
                addr: http_addr,
            },
        ]);
        let (stop, stopped) = oneshot::channel();
        let shutdown_broker = broker.clone();
        let task = tokio::spawn(async move {
            let (stop_http, http_stopped) = oneshot::channel::<()>();
            let http = tokio::spawn(management.serve(async {
                let _ = http_stopped.await;
            }));
            server
                .serve(async {
                    let _ = stopped.await;
                })
                .await;
            let _ = stop_http.send(());
            let _ = http.await;
            shutdown_broker.shutdown().await;
        });
        TestBroker {
            addr,
            tls_addr,
            http_addr,
            data_dir,
            broker,
            access,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops as `brook serve` does on SIGTERM: connections dropped, streams flushed.
    pub async fn stop(mut self) -> PathBuf {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        self.data_dir.clone()
    }

    /// Stops and starts again on the same data directory (on a new port).
    pub async fn restart(self) -> TestBroker {
        let dir = self.stop().await;
        TestBroker::start(&dir).await
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A `Write` that collects output lines, shareable with a task running a tutorial program.
#[derive(Clone, Default)]
pub struct Output(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Output {
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until a line equal to `line` was written.
    pub async fn wait_for(&self, line: &str) {
        tokio::time::timeout(Duration::from_secs(20), async {
            while !self.lines().iter().any(|l| l == line) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no line {line:?} in {:?}", self.lines()));
    }
}
