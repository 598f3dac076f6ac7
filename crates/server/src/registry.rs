//! Open connections, for the management API: listing them and closing one from the server side.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use brook_broker::Counters;
use tokio::sync::oneshot;

/// What the management API shows of a connection (RabbitMQ's fields, same names).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// RabbitMQ's form: `client address:port -> server address:port`.
    pub name: String,
    pub protocol: &'static str,
    pub host: String,
    pub port: u16,
    pub peer_host: String,
    pub peer_port: u16,
    pub ssl: bool,
    pub user: Option<String>,
    /// The SASL mechanism, once chosen.
    pub auth_mechanism: Option<String>,
    pub vhost: Option<String>,
    /// Negotiated in Tune (0 until then).
    pub frame_max: u32,
    /// Negotiated heartbeat interval, seconds.
    pub heartbeat: u32,
    /// Its publishers and consumers, once the connection is open.
    pub counters: Option<Arc<Counters>>,
    /// From the client's PeerProperties; always present, empty until they arrive.
    pub client_properties: BTreeMap<String, String>,
    /// Milliseconds since the Unix epoch.
    pub connected_at: i64,
}

#[derive(Debug)]
struct Entry {
    info: ConnectionInfo,
    kill: Option<oneshot::Sender<()>>,
}

/// The registry of open connections, in the order they were accepted.
#[derive(Debug, Default)]
pub struct Connections {
    entries: Mutex<BTreeMap<u64, Entry>>,
    next: AtomicU64,
    /// Connections accepted and ended since start (RabbitMQ's churn counters).
    opened: AtomicU64,
    closed: AtomicU64,
}

/// Removes its connection from the registry when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Connections>,
    id: u64,
}

impl Registration {
    pub(crate) fn update(&self, f: impl FnOnce(&mut ConnectionInfo)) {
        if let Some(e) = self.registry.lock().get_mut(&self.id) {
            f(&mut e.info);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
        self.registry.closed.fetch_add(1, Ordering::Relaxed);
    }
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection; the receiver fires when the management API closes it.
    pub(crate) fn register(
        self: &Arc<Self>,
        peer: SocketAddr,
        local: SocketAddr,
        ssl: bool,
    ) -> (Registration, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.opened.fetch_add(1, Ordering::Relaxed);
        let (kill, killed) = oneshot::channel();
        let info = ConnectionInfo {
            name: format!("{peer} -> {local}"),
            protocol: "stream",
            host: local.ip().to_string(),
            port: local.port(),
            peer_host: peer.ip().to_string(),
            peer_port: peer.port(),
            ssl,
            user: None,
            auth_mechanism: None,
            vhost: None,
            frame_max: 0,
            heartbeat: 0,
            counters: None,
            client_properties: BTreeMap::new(),
            connected_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        };
        self.lock().insert(
            id,
            Entry {
                info,
                kill: Some(kill),
            },
        );
        (
            Registration {
                registry: self.clone(),
                id,
            },
            killed,
        )
    }

    /// Connections opened and closed since start.
    pub fn churn(&self) -> (u64, u64) {
        (
            self.opened.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
        )
    }

    pub fn list(&self) -> Vec<ConnectionInfo> {
        self.lock().values().map(|e| e.info.clone()).collect()
    }

    pub fn get(&self, name: &str) -> Option<ConnectionInfo> {
        self.lock()
            .values()
            .find(|e| e.info.name == name)
            .map(|e| e.info.clone())
    }

    /// Asks the connection to close (its socket is closed without a protocol frame, as
    /// RabbitMQ's force-close does). Returns false if there is no such connection.
    pub fn close(&self, name: &str) -> bool {
        let mut entries = self.lock();
        let Some(entry) = entries.values_mut().find(|e| e.info.name == name) else {
            return false;
        };
        if let Some(kill) = entry.kill.take() {
            let _ = kill.send(());
        }
        true
    }

    pub fn contains(&self, name: &str) -> bool {
        self.lock().values().any(|e| e.info.name == name)
    }
}
