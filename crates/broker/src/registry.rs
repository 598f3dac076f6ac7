//! The broker: the registry of streams and super streams, and the entry point of everything a
//! connection asks for (through its [`Session`]).
//!
//! The registry lock guards a map and nothing else: creating and deleting a stream reserve or
//! release the name under it, and do their file I/O (directories, metadata, fsyncs) afterwards,
//! on the blocking pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use brook_log::{Log, LogConfig, LogError, Recovery};
use brook_storage::LockGuard;
use tokio::sync::{mpsc, oneshot, watch};

use crate::args::StreamArgs;
use crate::budget::Budget;
use crate::catalog::{self, Found, StreamMeta};
use crate::config::BrokerConfig;
use crate::counters::Totals;
use crate::error::{Error, OpenError};
use crate::outgoing::{ControlEvent, ControlSender, OutgoingSender};
use crate::sac;
use crate::session::Session;
use crate::stream::MAX_CHUNK_ENTRIES;
use crate::stream::core::{Core, CoreConfig};
use crate::stream::replica;
use crate::stream::task::{self, Links};
use crate::stream::writer::StreamWriter;
use crate::stream::{Command, Role, Stream, StreamId, StreamState};

/// A leader's written chunks, for its replicas.
pub type Shipments = mpsc::UnboundedReceiver<Vec<brook_log::Shipped>>;
use crate::super_streams::SuperStreams;

/// A name in the registry.
#[derive(Debug)]
pub(crate) enum Slot {
    Ready(Arc<Stream>),
    /// Being created (its directory and log are being written).
    Creating(StreamArgs),
    /// Its files exist but could not be opened (damaged metadata, corruption): reported,
    /// kept, not served.
    Unavailable {
        dir: PathBuf,
        reason: String,
    },
    /// Clustered: found on disk at startup, opened once the cluster's metadata says in which
    /// role ([`Broker::host`]).
    Dormant {
        dir: PathBuf,
    },
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: BrokerConfig,
    pub(crate) streams_dir: PathBuf,
    streams: RwLock<HashMap<StreamId, Slot>>,
    next_connection: AtomicU64,
    pub(crate) super_streams: SuperStreams,
    pub(crate) sac: sac::Coordinator,
    /// Broker-wide counters and histograms, for metrics.
    pub(crate) totals: Arc<Totals>,
    /// Held for the broker's lifetime: two brokers on one data directory would corrupt it.
    _lock: Box<dyn LockGuard>,
    /// Set when this node is a member of a cluster (`crate::cluster`).
    pub(crate) cluster: std::sync::OnceLock<Arc<dyn crate::cluster::ClusterHooks>>,
    /// One [`Broker::host`] at a time: two would open one log twice.
    pub(crate) hosting: tokio::sync::Mutex<()>,
}

/// The broker: a cheap handle, clone it freely.
#[derive(Debug, Clone)]
pub struct Broker {
    pub(crate) inner: Arc<Inner>,
}

impl Broker {
    /// Opens the data directory and every stream in it (repairing torn tails). Must be called
    /// within a tokio runtime: each stream gets a writer task.
    pub fn open(config: BrokerConfig) -> Result<Broker, OpenError> {
        let storage = config.storage.clone();
        let data_err = |path: &Path| {
            let path = path.to_owned();
            move |source| OpenError::DataDir { path, source }
        };
        let streams_dir = config.data_dir.join("streams");
        storage
            .create_dir_all(&streams_dir)
            .map_err(data_err(&streams_dir))?;
        // A fresh data directory's entries must outlive a power cut too.
        for dir in [config.data_dir.parent(), Some(config.data_dir.as_path())]
            .into_iter()
            .flatten()
            .filter(|d| !d.as_os_str().is_empty())
        {
            storage.sync_dir(dir).map_err(data_err(dir))?;
        }
        let lock_path = config.data_dir.join(".lock");
        let lock = storage.try_lock(&lock_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                OpenError::Locked(config.data_dir.clone())
            } else {
                OpenError::DataDir {
                    path: lock_path.clone(),
                    source: e,
                }
            }
        })?;
        let entries = storage
            .read_dir(&streams_dir)
            .map_err(data_err(&streams_dir))?;
        let super_streams = SuperStreams::load(storage.clone(), config.data_dir.clone());
        let broker = Broker {
            inner: Arc::new(Inner {
                config,
                streams_dir: streams_dir.clone(),
                streams: RwLock::new(HashMap::new()),
                next_connection: AtomicU64::new(1),
                super_streams,
                sac: sac::Coordinator::default(),
                totals: Arc::default(),
                _lock: lock,
                cluster: std::sync::OnceLock::new(),
                hosting: tokio::sync::Mutex::new(()),
            }),
        };
        for entry in entries.into_iter().filter(|e| e.is_dir) {
            broker.load_stream(&streams_dir.join(entry.name));
        }
        Ok(broker)
    }

    fn load_stream(&self, dir: &Path) {
        let storage = &*self.inner.config.storage;
        let meta = match catalog::inspect(storage, dir) {
            Found::Stream(meta) => meta,
            Found::Unfinished | Found::Deleted => {
                tracing::info!(dir = %dir.display(), "removing an unfinished stream create or delete");
                if let Err(e) = catalog::remove(storage, dir) {
                    tracing::error!(dir = %dir.display(), "could not remove: {e}");
                }
                return;
            }
            Found::Damaged { reason } => {
                let name = catalog::guess_name(dir);
                tracing::error!(dir = %dir.display(), stream = ?name,
                    "stream not available, its metadata is unreadable: {reason}. Its data is \
                     kept untouched. Restore {} (brook verify shows what is in the directory), \
                     or move the directory away, then restart.",
                    catalog::META_FILE);
                if let Some(name) = name {
                    self.unavailable(StreamId::new("/", name), dir, reason);
                }
                return;
            }
        };
        let args = meta.arguments.reparse();
        let id = StreamId::new(meta.vhost, meta.name);
        if self.inner.config.clustered {
            let dir = dir.to_owned();
            self.write_streams().insert(id, Slot::Dormant { dir });
            return;
        }
        match open_log(&self.inner.config, dir, &args) {
            Ok((log, recovery)) => {
                if recovery.is_clean() {
                    tracing::info!(stream = %id, next_offset = log.next_offset(), "stream opened");
                } else {
                    tracing::warn!(stream = %id, "stream recovered: {recovery}");
                }
                let (stream, _) = self.start_writer(&id, args, dir.to_owned(), log, Role::Single);
                self.write_streams().insert(id, Slot::Ready(stream));
            }
            Err(e) => {
                tracing::error!(stream = %id, dir = %dir.display(), "stream not available: {e}");
                self.unavailable(id, dir, e.to_string());
            }
        }
    }

    fn unavailable(&self, id: StreamId, dir: &Path, reason: String) {
        self.write_streams().insert(
            id,
            Slot::Unavailable {
                dir: dir.to_owned(),
                reason,
            },
        );
    }

    /// Spawns the stream's writer task (a replica's task, for [`Role::Replica`]). A leader
    /// also gets the receiver of the chunks it writes, for its replicas.
    pub(crate) fn start_writer(
        &self,
        id: &StreamId,
        args: StreamArgs,
        dir: PathBuf,
        log: Log,
        role: Role,
    ) -> (Arc<Stream>, Option<Shipments>) {
        let config = &self.inner.config;
        let (committed_tx, committed_rx) = watch::channel(log.next_offset());
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(StreamState::default());
        let stream = Arc::new(Stream {
            id: id.clone(),
            role,
            reader: log.reader(),
            args: args.clone(),
            dir,
            commands: tx,
            committed: committed_rx,
            state: state.clone(),
        });
        if role == Role::Replica {
            let links = replica::Links {
                id: id.clone(),
                committed: committed_tx,
                durability: config.durability,
                cluster: self.inner.cluster.get().cloned(),
            };
            tokio::spawn(replica::run(log, rx, links));
            return (stream, None);
        }
        let core = Core::new(
            CoreConfig {
                durability: config.durability,
                filter_size: args.filter_size_bytes.unwrap_or(crate::bloom::DEFAULT_SIZE),
                max_chunk_bytes: config.max_chunk_bytes,
                max_chunk_entries: MAX_CHUNK_ENTRIES,
            },
            Instant::now(),
        );
        let (ship, shipments) = match role {
            Role::Leader { .. } => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            _ => (None, None),
        };
        let links = Links {
            id: id.clone(),
            state,
            totals: self.inner.totals.clone(),
            committed: committed_tx,
            retention_check_interval: config.retention_check_interval,
            chunk_linger: config.chunk_linger,
            ship,
        };
        let writer = match role {
            Role::Leader { epoch, members } => StreamWriter::leader(log, core, epoch, members),
            _ => StreamWriter::new(log, core),
        };
        tokio::spawn(task::run(writer, rx, links));
        (stream, shipments)
    }

    // Registry updates are plain inserts/removes; a panic elsewhere cannot leave the map in a
    // state worth refusing to read, so lock poisoning is ignored.
    pub(crate) fn read_streams(&self) -> std::sync::RwLockReadGuard<'_, HashMap<StreamId, Slot>> {
        self.inner.streams.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write_streams(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<StreamId, Slot>> {
        self.inner
            .streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stream(&self, id: &StreamId) -> Result<Arc<Stream>, Error> {
        let name = &id.name;
        match self.read_streams().get(id) {
            Some(Slot::Ready(s)) => Ok(s.clone()),
            Some(Slot::Creating(_)) => Err(Error::StreamNotAvailable(
                name.to_owned(),
                "being created".into(),
            )),
            Some(Slot::Unavailable { reason, .. }) => {
                Err(Error::StreamNotAvailable(name.to_owned(), reason.clone()))
            }
            Some(Slot::Dormant { .. }) => Err(Error::StreamNotAvailable(
                name.to_owned(),
                "waiting for the cluster".into(),
            )),
            None => Err(Error::StreamDoesNotExist(name.to_owned())),
        }
    }

    /// Broker-wide counters and histograms.
    pub fn totals(&self) -> &Totals {
        &self.inner.totals
    }

    /// A session for a new connection. `control` receives events for its request loop;
    /// `outgoing` is the connection's ordered output queue, bounded by `budget`.
    pub fn session(
        &self,
        vhost: &str,
        control: ControlSender,
        outgoing: OutgoingSender,
        budget: Budget,
    ) -> Session {
        let id = self.inner.next_connection.fetch_add(1, Ordering::Relaxed);
        Session::new(
            self.clone(),
            id,
            vhost.to_owned(),
            control,
            outgoing,
            budget,
        )
    }

    /// Creates a stream. Same name and equivalent arguments → [`Error::StreamAlreadyExists`];
    /// different arguments → [`Error::PreconditionFailed`], as in RabbitMQ.
    pub async fn create_stream(
        &self,
        vhost: &str,
        name: &str,
        arguments: &[(String, String)],
    ) -> Result<(), Error> {
        // RabbitMQ strips line breaks from names.
        let name: String = name.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        validate_name(&name)?;
        let args = StreamArgs::parse(arguments).map_err(Error::PreconditionFailed)?;
        let id = StreamId::new(vhost, name.clone());
        if let Some(cluster) = self.inner.cluster.get() {
            return cluster.create(id, arguments.to_vec()).await;
        }
        self.create_local(id, args, Role::Single).await.map(|_| ())
    }

    /// Creates a stream's directory and log here and starts it in `role`.
    pub(crate) async fn create_local(
        &self,
        id: StreamId,
        args: StreamArgs,
        role: Role,
    ) -> Result<Option<Shipments>, Error> {
        let name = id.name.clone();
        let vhost = id.vhost.clone();
        {
            let mut streams = self.write_streams();
            match streams.get(&id) {
                Some(Slot::Ready(s)) if s.args == args => {
                    return Err(Error::StreamAlreadyExists(name));
                }
                Some(Slot::Creating(a)) if *a == args => {
                    return Err(Error::StreamAlreadyExists(name));
                }
                Some(_) => {
                    return Err(Error::PreconditionFailed(format!(
                        "stream {name:?} exists with different arguments"
                    )));
                }
                None => {}
            }
            streams.insert(id.clone(), Slot::Creating(args.clone()));
        }
        let meta = StreamMeta {
            vhost: vhost.to_owned(),
            name: name.clone(),
            arguments: args.clone(),
            created_at_ms: crate::now_ms(),
        };
        let (config, streams_dir) = (self.inner.config.clone(), self.inner.streams_dir.clone());
        let created = tokio::task::spawn_blocking(move || {
            let dir = catalog::create(&*config.storage, &streams_dir, &meta)
                .map_err(|e| e.to_string())?;
            let opened = open_log(&config, &dir, &meta.arguments).map_err(|e| e.to_string());
            opened.map(|(log, _)| (dir, log))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match created {
            Ok((dir, log)) => {
                tracing::info!(stream = %id, dir = %dir.display(), ?role, "stream created");
                let (stream, shipments) = self.start_writer(&id, args, dir, log, role);
                self.write_streams().insert(id, Slot::Ready(stream));
                Ok(shipments)
            }
            Err(e) => {
                self.write_streams().remove(&id);
                Err(Error::Internal(format!("creating {id}: {e}")))
            }
        }
    }

    /// Deletes a stream and its data; every connection that used it gets a MetadataUpdate.
    pub async fn delete_stream(&self, vhost: &str, name: &str) -> Result<(), Error> {
        let id = StreamId::new(vhost, name);
        if let Some(cluster) = self.inner.cluster.get() {
            return cluster.delete(id).await;
        }
        self.delete_local(id).await
    }

    /// Deletes a stream's files here.
    pub(crate) async fn delete_local(&self, id: StreamId) -> Result<(), Error> {
        let (vhost, name) = (id.vhost.as_str(), id.name.as_str());
        let slot = {
            let mut streams = self.write_streams();
            match streams.get(&id) {
                None => return Err(Error::StreamDoesNotExist(name.to_owned())),
                Some(Slot::Creating(_)) => {
                    return Err(Error::StreamNotAvailable(
                        name.to_owned(),
                        "being created".into(),
                    ));
                }
                Some(_) => streams.remove(&id),
            }
        };
        let dir = match slot {
            Some(Slot::Ready(stream)) => {
                let (reply, done) = oneshot::channel();
                if stream.send(Command::Delete { reply }).is_ok() {
                    let _ = done.await;
                }
                stream
                    .state
                    .notify_all(&ControlEvent::StreamDeleted(name.to_owned()));
                stream.dir.clone()
            }
            Some(Slot::Unavailable { dir, .. } | Slot::Dormant { dir, .. }) => dir,
            Some(Slot::Creating(_)) | None => return Ok(()),
        };
        let storage = self.inner.config.storage.clone();
        let removed = tokio::task::spawn_blocking(move || catalog::remove(&*storage, &dir))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        if let Err(e) = removed {
            tracing::error!(stream = %id, "removing the stream's files: {e}");
        }
        self.drop_partition(vhost, name).await;
        tracing::info!(stream = %id, "stream deleted");
        Ok(())
    }

    /// Deletes every stream and super stream of a vhost (the vhost itself is being deleted).
    pub async fn delete_vhost(&self, vhost: &str) {
        for (v, name) in self.super_stream_names() {
            if v == vhost
                && let Err(e) = self.delete_super_stream(vhost, &name).await
            {
                tracing::warn!(vhost, super_stream = %name, "deleting: {e}");
            }
        }
        for id in self.streams().into_iter().filter(|id| id.vhost == vhost) {
            if let Err(e) = self.delete_stream(vhost, &id.name).await {
                tracing::warn!(stream = %id, "deleting: {e}");
            }
        }
    }

    /// Writes and syncs everything queued in every stream, then stops the writers.
    pub async fn shutdown(&self) {
        let streams: Vec<Arc<Stream>> = self
            .read_streams()
            .values()
            .filter_map(|slot| match slot {
                Slot::Ready(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        for stream in streams {
            let (reply, done) = oneshot::channel();
            if stream.send(Command::Shutdown { reply }).is_ok() {
                let _ = done.await;
            }
        }
    }
}

/// Opens (or creates) a stream's log. Blocking: recovery reads and may repair files.
pub(crate) fn open_log(
    config: &BrokerConfig,
    dir: &Path,
    args: &StreamArgs,
) -> Result<(Log, Recovery), LogError> {
    let log_config = LogConfig {
        max_segment_bytes: args
            .max_segment_size_bytes
            .unwrap_or(config.default_max_segment_bytes),
        retention: args.retention(),
        ..LogConfig::default()
    };
    Log::open(config.storage.clone(), dir, log_config)
}

/// A stream or super stream name as RabbitMQ takes it: line breaks stripped, not empty, not
/// `amq.`-prefixed, at most 255 bytes. Checked before permissions, as RabbitMQ does.
pub fn stream_name(name: &str) -> Result<String, Error> {
    let name: String = name.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    validate_name(&name)?;
    Ok(name)
}

pub(crate) fn validate_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.starts_with("amq.") || name.len() > 255 {
        return Err(Error::PreconditionFailed(format!("invalid name {name:?}")));
    }
    Ok(())
}
