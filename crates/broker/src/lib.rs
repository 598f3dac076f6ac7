//! brook's domain: the streams registry, publishers and deduplication, subscriptions and credit,
//! offset tracking. No sockets: the server crate turns frames into [`Session`] calls and writes
//! what comes out of a connection's [`Outgoing`] queue.
//!
//! Each stream is a [`brook_log::Log`] owned by one writer task (see `stream.rs` for why);
//! each subscription is a delivery task reading the log directly, woken when the writer
//! commits.

#[cfg(test)]
mod test_util {
    /// Properties from string pairs.
    pub(crate) fn props(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

mod args;
mod bloom;
mod consumer;
mod error;
mod sac;
mod session;
mod stream;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use brook_log::{Log, LogConfig, LogStats, ReadChunk};
use brook_protocol::{Frame, ResponseCode};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

pub use args::{MaxAge, StreamArgs};
pub use error::{Error, OpenError};
pub use session::{Session, Subscribed};
use stream::{Stream, WriterCmd, WriterConfig};

/// When a confirm may be sent, relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Confirm once the chunk is written to the OS page cache (RabbitMQ's behaviour): survives
    /// a broker crash, not a machine crash.
    None,
    /// Group commit: fdatasync at most once per interval; confirms (and consumer visibility)
    /// wait for it. Survives a machine crash; costs up to one interval of latency.
    Batch(Duration),
    /// fdatasync before every confirm.
    Always,
}

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// Segment size for streams created without `stream-max-segment-size-bytes`.
    pub default_max_segment_bytes: u64,
    /// How often retention is re-evaluated (so an idle stream past its max-age still shrinks).
    pub retention_check_interval: Duration,
    /// The writer starts a new chunk when one reaches this many bytes of data.
    pub max_chunk_bytes: usize,
}

impl BrokerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            durability: Durability::None,
            default_max_segment_bytes: 500_000_000,
            retention_check_interval: Duration::from_secs(60),
            max_chunk_bytes: 256 << 10,
        }
    }
}

/// Everything the broker sends to one connection, in order.
#[derive(Debug)]
pub enum Outgoing {
    /// A response or other frame the connection built.
    Frame(Frame),
    Confirm {
        publisher_id: u8,
        ids: Vec<u64>,
        /// False once the publisher was deleted: the confirm must be dropped.
        alive: Arc<AtomicBool>,
        /// Publisher flow control, released once the confirm is written.
        budget: Vec<tokio::sync::OwnedSemaphorePermit>,
    },
    PublishError {
        publisher_id: u8,
        errors: Vec<(u64, ResponseCode)>,
    },
    /// A stored chunk for a subscription, sent as it is on disk (header + data).
    Deliver {
        subscription_id: u8,
        committed_chunk_id: u64,
        chunk: ReadChunk,
        /// The chunk's share of the connection's delivery budget: drop it once written.
        budget: tokio::sync::OwnedSemaphorePermit,
    },
    /// Write what is queued, then close the socket.
    Close,
}

pub type OutgoingSender = mpsc::UnboundedSender<Outgoing>;

/// Answers the first `take` entries of a Publish with PublishError `code`.
pub(crate) fn reject(
    outgoing: &OutgoingSender,
    publish: &brook_protocol::Publish,
    take: usize,
    code: ResponseCode,
) {
    let errors = publish
        .entries()
        .take(take)
        .map(|e| (e.publishing_id, code))
        .collect();
    let _ = outgoing.send(Outgoing::PublishError {
        publisher_id: publish.publisher_id,
        errors,
    });
}

/// Events for a connection's request loop (not for the client directly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    /// A stream this connection used was deleted: drop its publishers and subscriptions on it
    /// and send MetadataUpdate.
    StreamDeleted(String),
    /// A single-active-consumer subscription becomes active, or must step down: send the
    /// client a ConsumerUpdate and hand its answer to [`Session::consumer_update_answered`].
    ConsumerUpdate { subscription_id: u8, active: bool },
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What is kept about a stream besides its log (`stream.json` in its directory).
#[derive(Debug, Serialize, Deserialize)]
struct StreamMeta {
    name: String,
    arguments: StreamArgs,
    created_at_ms: i64,
}

const META_FILE: &str = "stream.json";
const SUPER_STREAMS_FILE: &str = "super_streams.json";
/// RabbitMQ's default limit on partitions per super stream.
const MAX_PARTITIONS: usize = 1000;

/// A super stream: partition streams with their binding keys, in partition order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuperStream {
    pub partitions: Vec<String>,
    pub binding_keys: Vec<String>,
}

#[derive(Debug)]
enum Entry {
    Ready(Arc<Stream>),
    /// Its files exist but could not be opened (corruption): reported, kept, not served.
    Unavailable {
        dir: PathBuf,
        reason: String,
    },
}

#[derive(Debug)]
struct Inner {
    config: BrokerConfig,
    streams_dir: PathBuf,
    streams: RwLock<HashMap<String, Entry>>,
    next_connection: AtomicU64,
    super_streams: Mutex<BTreeMap<String, SuperStream>>,
    pub(crate) sac: sac::Coordinator,
    /// Held for the broker's lifetime: two brokers on one data directory would corrupt it.
    _lock: fs::File,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The broker: a cheap handle, clone it freely.
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl Broker {
    /// Opens the data directory and every stream in it (repairing torn tails). Must be called
    /// within a tokio runtime: each stream gets a writer task.
    pub fn open(config: BrokerConfig) -> Result<Broker, OpenError> {
        let data_err = |path: &Path| {
            let path = path.to_owned();
            move |source| OpenError::DataDir { path, source }
        };
        let streams_dir = config.data_dir.join("streams");
        fs::create_dir_all(&streams_dir).map_err(data_err(&streams_dir))?;
        let lock_path = config.data_dir.join(".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(data_err(&lock_path))?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => OpenError::Locked(config.data_dir.clone()),
            fs::TryLockError::Error(source) => OpenError::DataDir {
                path: lock_path.clone(),
                source,
            },
        })?;
        let broker = Broker {
            inner: Arc::new(Inner {
                config,
                streams_dir: streams_dir.clone(),
                streams: RwLock::new(HashMap::new()),
                next_connection: AtomicU64::new(1),
                super_streams: Mutex::new(BTreeMap::new()),
                sac: sac::Coordinator::default(),
                _lock: lock,
                tasks: Mutex::new(Vec::new()),
            }),
        };
        let mut dirs: Vec<PathBuf> = fs::read_dir(&streams_dir)
            .map_err(data_err(&streams_dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            broker.load_stream(&dir);
        }
        let super_streams_path = broker.inner.config.data_dir.join(SUPER_STREAMS_FILE);
        match fs::read(&super_streams_path) {
            Ok(bytes) => {
                let loaded = serde_json::from_slice(&bytes).map_err(|e| OpenError::DataDir {
                    path: super_streams_path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })?;
                *broker.super_streams() = loaded;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(OpenError::DataDir {
                    path: super_streams_path,
                    source,
                });
            }
        }
        Ok(broker)
    }

    fn load_stream(&self, dir: &Path) {
        let meta: StreamMeta = match fs::read(dir.join(META_FILE))
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(meta) => meta,
            Err(e) => {
                // A create or delete that did not finish: the stream never existed or is gone.
                tracing::warn!(dir = %dir.display(), "removing stream directory without valid {META_FILE}: {e}");
                if let Err(e) = fs::remove_dir_all(dir) {
                    tracing::error!(dir = %dir.display(), "could not remove: {e}");
                }
                return;
            }
        };
        let args = meta.arguments.reparse();
        let name = meta.name;
        let entry = match self.start_stream(&name, args, dir.to_owned()) {
            Ok((stream, recovery)) => {
                if recovery.is_clean() {
                    tracing::info!(stream = %name, next_offset = stream.reader.stats().next_offset, "stream opened");
                } else {
                    tracing::warn!(stream = %name, "stream recovered: {recovery}");
                }
                Entry::Ready(stream)
            }
            Err(e) => {
                tracing::error!(stream = %name, dir = %dir.display(), "stream not available: {e}");
                Entry::Unavailable {
                    dir: dir.to_owned(),
                    reason: e.to_string(),
                }
            }
        };
        self.write_streams().insert(name, entry);
    }

    fn start_stream(
        &self,
        name: &str,
        args: StreamArgs,
        dir: PathBuf,
    ) -> Result<(Arc<Stream>, brook_log::Recovery), brook_log::LogError> {
        let config = &self.inner.config;
        let log_config = LogConfig {
            max_segment_bytes: args
                .max_segment_size_bytes
                .unwrap_or(config.default_max_segment_bytes),
            retention: args.retention(),
            ..LogConfig::default()
        };
        let filter_size = args.filter_size_bytes.unwrap_or(bloom::DEFAULT_SIZE);
        let (log, recovery) = Log::open(&dir, log_config)?;
        let (committed_tx, committed_rx) = watch::channel(log.next_offset());
        let (tx, rx) = mpsc::unbounded_channel();
        let stream = Arc::new(Stream {
            name: name.to_owned(),
            args,
            dir,
            reader: log.reader(),
            writer: tx,
            committed: committed_rx,
            watchers: Mutex::new(HashMap::new()),
        });
        let writer = stream::Writer::new(
            log,
            WriterConfig {
                durability: config.durability,
                filter_size,
                max_chunk_bytes: config.max_chunk_bytes,
                retention_check_interval: config.retention_check_interval,
            },
            committed_tx,
        );
        let task = tokio::spawn(writer.run(rx, name.to_owned()));
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
        Ok((stream, recovery))
    }

    // Registry updates are plain inserts/removes; a panic elsewhere cannot leave the map in a
    // state worth refusing to read, so lock poisoning is ignored.
    fn read_streams(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.inner.streams.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_streams(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.inner
            .streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stream(&self, name: &str) -> Result<Arc<Stream>, Error> {
        match self.read_streams().get(name) {
            Some(Entry::Ready(s)) => Ok(s.clone()),
            Some(Entry::Unavailable { reason, .. }) => {
                Err(Error::StreamNotAvailable(name.to_owned(), reason.clone()))
            }
            None => Err(Error::StreamDoesNotExist(name.to_owned())),
        }
    }

    /// A session for a new connection. `control` receives events for its request loop;
    /// `outgoing` is the connection's ordered output queue.
    pub fn session(
        &self,
        control: mpsc::UnboundedSender<ControlEvent>,
        outgoing: OutgoingSender,
    ) -> Session {
        let id = self.inner.next_connection.fetch_add(1, Ordering::Relaxed);
        Session::new(self.clone(), id, control, outgoing)
    }

    /// Creates a stream. Same name and equivalent arguments → [`Error::StreamAlreadyExists`];
    /// different arguments → [`Error::PreconditionFailed`], as in RabbitMQ.
    pub fn create_stream(&self, name: &str, arguments: &[(String, String)]) -> Result<(), Error> {
        // RabbitMQ strips line breaks from names.
        let name: String = name.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        validate_name(&name)?;
        let args = StreamArgs::parse(arguments).map_err(Error::PreconditionFailed)?;
        let mut streams = self.write_streams();
        match streams.get(&name) {
            Some(Entry::Ready(existing)) if existing.args == args => {
                return Err(Error::StreamAlreadyExists(name));
            }
            Some(_) => {
                return Err(Error::PreconditionFailed(format!(
                    "stream {name:?} exists with different arguments"
                )));
            }
            None => {}
        }
        let created_at_ms = now_ms();
        let dir = self.inner.streams_dir.join(dir_name(&name));
        let internal =
            |e: &dyn std::fmt::Display| Error::Internal(format!("creating {name:?}: {e}"));
        fs::create_dir(&dir).map_err(|e| internal(&e))?;
        let (stream, _) = self
            .start_stream(&name, args.clone(), dir.clone())
            .map_err(|e| internal(&e))?;
        let meta = StreamMeta {
            name: name.clone(),
            arguments: args,
            created_at_ms,
        };
        // The metadata file is written last and atomically: a directory without it is an
        // unfinished create and is removed at startup.
        if let Err(e) = write_atomically(&dir, META_FILE, &meta) {
            let _ = stream.send(WriterCmd::Delete {
                reply: oneshot::channel().0,
            });
            return Err(internal(&e));
        }
        tracing::info!(stream = %name, dir = %dir.display(), "stream created");
        streams.insert(name, Entry::Ready(stream));
        Ok(())
    }

    /// Deletes a stream and its data; every connection that used it gets a MetadataUpdate.
    pub async fn delete_stream(&self, name: &str) -> Result<(), Error> {
        let entry = self
            .write_streams()
            .remove(name)
            .ok_or_else(|| Error::StreamDoesNotExist(name.to_owned()))?;
        let stream = match entry {
            Entry::Ready(stream) => stream,
            Entry::Unavailable { dir, .. } => {
                return fs::remove_dir_all(&dir).map_err(|e| Error::Internal(e.to_string()));
            }
        };
        // Without its metadata file the directory no longer counts as a stream, even if the
        // broker stops before the files are gone.
        if let Err(e) = fs::remove_file(stream.dir.join(META_FILE)) {
            tracing::warn!(stream = %name, "removing {META_FILE}: {e}");
        }
        let (reply, done) = oneshot::channel();
        if stream.send(WriterCmd::Delete { reply }).is_ok() {
            let _ = done.await;
        }
        let watchers: Vec<_> = stream
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (_, control) in watchers {
            let _ = control.send(ControlEvent::StreamDeleted(name.to_owned()));
        }
        // As in RabbitMQ, where a deleted queue loses its bindings: the partition leaves its
        // super stream.
        {
            let mut super_streams = self.super_streams();
            let mut changed = false;
            for ss in super_streams.values_mut() {
                while let Some(i) = ss.partitions.iter().position(|p| p == name) {
                    ss.partitions.remove(i);
                    ss.binding_keys.remove(i);
                    changed = true;
                }
            }
            if changed {
                self.save_super_streams(&super_streams);
            }
        }
        tracing::info!(stream = %name, "stream deleted");
        Ok(())
    }

    fn super_streams(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SuperStream>> {
        self.inner
            .super_streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn save_super_streams(&self, super_streams: &BTreeMap<String, SuperStream>) {
        if let Err(e) = write_atomically(
            &self.inner.config.data_dir,
            SUPER_STREAMS_FILE,
            super_streams,
        ) {
            tracing::error!("saving {SUPER_STREAMS_FILE}: {e}");
        }
    }

    /// Creates a super stream and its partition streams, all or nothing.
    pub async fn create_super_stream(
        &self,
        name: &str,
        partitions: &[String],
        binding_keys: &[String],
        arguments: &[(String, String)],
    ) -> Result<(), Error> {
        validate_name(name)?;
        if partitions.is_empty() || partitions.len() != binding_keys.len() {
            return Err(Error::PreconditionFailed(
                "a super stream needs as many binding keys as partitions, at least one".into(),
            ));
        }
        if partitions.len() > MAX_PARTITIONS {
            return Err(Error::PreconditionFailed(format!(
                "more than {MAX_PARTITIONS} partitions"
            )));
        }
        let mut unique = partitions.to_vec();
        unique.sort();
        unique.dedup();
        if unique.len() != partitions.len() {
            return Err(Error::PreconditionFailed(
                "duplicate partition names".into(),
            ));
        }
        StreamArgs::parse(arguments).map_err(Error::PreconditionFailed)?;
        if self.super_streams().contains_key(name) {
            return Err(Error::StreamAlreadyExists(name.to_owned()));
        }
        if let Some(p) = partitions.iter().find(|p| self.stream_exists(p)) {
            return Err(Error::StreamAlreadyExists(p.clone()));
        }
        let mut created = Vec::new();
        let mut failure = None;
        for p in partitions {
            match self.create_stream(p, arguments) {
                Ok(()) => created.push(p),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            let mut super_streams = self.super_streams();
            if super_streams.contains_key(name) {
                failure = Some(Error::StreamAlreadyExists(name.to_owned()));
            } else {
                super_streams.insert(
                    name.to_owned(),
                    SuperStream {
                        partitions: partitions.to_vec(),
                        binding_keys: binding_keys.to_vec(),
                    },
                );
                self.save_super_streams(&super_streams);
            }
        }
        if let Some(e) = failure {
            for p in created {
                let _ = self.delete_stream(p).await;
            }
            return Err(e);
        }
        tracing::info!(super_stream = %name, partitions = partitions.len(), "super stream created");
        Ok(())
    }

    /// Deletes a super stream and all its partitions.
    pub async fn delete_super_stream(&self, name: &str) -> Result<(), Error> {
        let removed = {
            let mut super_streams = self.super_streams();
            let removed = super_streams
                .remove(name)
                .ok_or_else(|| Error::StreamDoesNotExist(name.to_owned()))?;
            self.save_super_streams(&super_streams);
            removed
        };
        for p in &removed.partitions {
            match self.delete_stream(p).await {
                Ok(()) | Err(Error::StreamDoesNotExist(_)) => {}
                Err(e) => {
                    tracing::warn!(super_stream = %name, partition = %p, "deleting partition: {e}")
                }
            }
        }
        tracing::info!(super_stream = %name, "super stream deleted");
        Ok(())
    }

    pub fn super_stream(&self, name: &str) -> Result<SuperStream, Error> {
        self.super_streams()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::StreamDoesNotExist(name.to_owned()))
    }

    /// The partitions whose binding key is exactly `routing_key` (direct routing).
    pub fn route(&self, super_stream: &str, routing_key: &str) -> Result<Vec<String>, Error> {
        let ss = self.super_stream(super_stream)?;
        Ok(ss
            .partitions
            .into_iter()
            .zip(ss.binding_keys)
            .filter(|(_, k)| k == routing_key)
            .map(|(p, _)| p)
            .collect())
    }

    /// A partition's position in its super stream (its single-active-consumer index):
    /// RabbitMQ's binding order, else the number after the name's last `-`.
    pub(crate) fn partition_index(&self, super_stream: &str, stream: &str) -> i32 {
        self.super_streams()
            .get(super_stream)
            .and_then(|ss| ss.partitions.iter().position(|p| p == stream))
            .map(|i| i as i32)
            .or_else(|| stream.rsplit('-').next().and_then(|n| n.parse().ok()))
            .unwrap_or(-1)
    }

    pub fn stream_exists(&self, name: &str) -> bool {
        self.read_streams().contains_key(name)
    }

    /// Names of all streams, sorted.
    pub fn stream_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read_streams().keys().cloned().collect();
        names.sort();
        names
    }

    pub fn stream_stats(&self, name: &str) -> Result<LogStats, Error> {
        Ok(self.stream(name)?.reader.stats())
    }

    /// Writes and syncs everything queued in every stream, then stops the writers.
    pub async fn shutdown(&self) {
        let streams: Vec<Arc<Stream>> = self
            .read_streams()
            .values()
            .filter_map(|e| match e {
                Entry::Ready(s) => Some(s.clone()),
                Entry::Unavailable { .. } => None,
            })
            .collect();
        for stream in streams {
            let (reply, done) = oneshot::channel();
            if stream.send(WriterCmd::Shutdown { reply }).is_ok() {
                let _ = done.await;
            }
        }
    }
}

fn validate_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.starts_with("amq.") || name.len() > 255 {
        return Err(Error::PreconditionFailed(format!("invalid name {name:?}")));
    }
    Ok(())
}

/// A readable, unique directory name; the real name is in the metadata file.
fn dir_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", safe.trim_start_matches('.'))
}

fn write_atomically(dir: &Path, file: &str, value: &impl Serialize) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{file}.tmp"));
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(file))?;
    fs::File::open(dir)?.sync_all()
}
