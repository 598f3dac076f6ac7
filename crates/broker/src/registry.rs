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

use brook_log::{Log, LogConfig, LogError, LogStats, Recovery};
use brook_storage::LockGuard;
use tokio::sync::{mpsc, oneshot, watch};

use crate::args::StreamArgs;
use crate::budget::Budget;
use crate::catalog::{self, Found, StreamMeta};
use crate::config::BrokerConfig;
use crate::error::{Error, OpenError};
use crate::outgoing::{ControlEvent, ControlSender, OutgoingSender};
use crate::sac;
use crate::session::Session;
use crate::stream::MAX_CHUNK_ENTRIES;
use crate::stream::core::{Core, CoreConfig};
use crate::stream::task::{self, Links};
use crate::stream::writer::StreamWriter;
use crate::stream::{Command, Stream, StreamState};
use crate::super_streams::{SuperStream, SuperStreams};

/// A name in the registry.
#[derive(Debug)]
enum Slot {
    Ready(Arc<Stream>),
    /// Being created (its directory and log are being written).
    Creating(StreamArgs),
    /// Its files exist but could not be opened (damaged metadata, corruption): reported,
    /// kept, not served.
    Unavailable {
        dir: PathBuf,
        reason: String,
    },
}

#[derive(Debug)]
pub(crate) struct Inner {
    config: BrokerConfig,
    streams_dir: PathBuf,
    streams: RwLock<HashMap<String, Slot>>,
    next_connection: AtomicU64,
    pub(crate) super_streams: SuperStreams,
    pub(crate) sac: sac::Coordinator,
    /// Held for the broker's lifetime: two brokers on one data directory would corrupt it.
    _lock: Box<dyn LockGuard>,
}

/// The broker: a cheap handle, clone it freely.
#[derive(Debug, Clone)]
pub struct Broker {
    pub(crate) inner: Arc<Inner>,
}

/// A stream that could not be opened, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnavailableStream {
    pub name: String,
    pub dir: PathBuf,
    pub reason: String,
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
                _lock: lock,
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
                    self.unavailable(name, dir, reason);
                }
                return;
            }
        };
        let args = meta.arguments.reparse();
        match open_log(&self.inner.config, dir, &args) {
            Ok((log, recovery)) => {
                if recovery.is_clean() {
                    tracing::info!(stream = %meta.name, next_offset = log.next_offset(), "stream opened");
                } else {
                    tracing::warn!(stream = %meta.name, "stream recovered: {recovery}");
                }
                let stream = self.start_writer(&meta.name, args, dir.to_owned(), log);
                self.write_streams().insert(meta.name, Slot::Ready(stream));
            }
            Err(e) => {
                tracing::error!(stream = %meta.name, dir = %dir.display(), "stream not available: {e}");
                self.unavailable(meta.name, dir, e.to_string());
            }
        }
    }

    fn unavailable(&self, name: String, dir: &Path, reason: String) {
        self.write_streams().insert(
            name,
            Slot::Unavailable {
                dir: dir.to_owned(),
                reason,
            },
        );
    }

    /// Spawns the stream's writer task.
    fn start_writer(&self, name: &str, args: StreamArgs, dir: PathBuf, log: Log) -> Arc<Stream> {
        let config = &self.inner.config;
        let (committed_tx, committed_rx) = watch::channel(log.next_offset());
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(StreamState::default());
        let stream = Arc::new(Stream {
            name: name.to_owned(),
            reader: log.reader(),
            args: args.clone(),
            dir,
            commands: tx,
            committed: committed_rx,
            state: state.clone(),
        });
        let core = Core::new(
            CoreConfig {
                durability: config.durability,
                filter_size: args.filter_size_bytes.unwrap_or(crate::bloom::DEFAULT_SIZE),
                max_chunk_bytes: config.max_chunk_bytes,
                max_chunk_entries: MAX_CHUNK_ENTRIES,
            },
            Instant::now(),
        );
        let links = Links {
            name: name.to_owned(),
            state,
            committed: committed_tx,
            retention_check_interval: config.retention_check_interval,
        };
        tokio::spawn(task::run(StreamWriter::new(log, core), rx, links));
        stream
    }

    // Registry updates are plain inserts/removes; a panic elsewhere cannot leave the map in a
    // state worth refusing to read, so lock poisoning is ignored.
    fn read_streams(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Slot>> {
        self.inner.streams.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_streams(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Slot>> {
        self.inner
            .streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stream(&self, name: &str) -> Result<Arc<Stream>, Error> {
        match self.read_streams().get(name) {
            Some(Slot::Ready(s)) => Ok(s.clone()),
            Some(Slot::Creating(_)) => Err(Error::StreamNotAvailable(
                name.to_owned(),
                "being created".into(),
            )),
            Some(Slot::Unavailable { reason, .. }) => {
                Err(Error::StreamNotAvailable(name.to_owned(), reason.clone()))
            }
            None => Err(Error::StreamDoesNotExist(name.to_owned())),
        }
    }

    /// A session for a new connection. `control` receives events for its request loop;
    /// `outgoing` is the connection's ordered output queue, bounded by `budget`.
    pub fn session(
        &self,
        control: ControlSender,
        outgoing: OutgoingSender,
        budget: Budget,
    ) -> Session {
        let id = self.inner.next_connection.fetch_add(1, Ordering::Relaxed);
        Session::new(self.clone(), id, control, outgoing, budget)
    }

    /// Creates a stream. Same name and equivalent arguments → [`Error::StreamAlreadyExists`];
    /// different arguments → [`Error::PreconditionFailed`], as in RabbitMQ.
    pub async fn create_stream(
        &self,
        name: &str,
        arguments: &[(String, String)],
    ) -> Result<(), Error> {
        // RabbitMQ strips line breaks from names.
        let name: String = name.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        validate_name(&name)?;
        let args = StreamArgs::parse(arguments).map_err(Error::PreconditionFailed)?;
        {
            let mut streams = self.write_streams();
            match streams.get(&name) {
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
            streams.insert(name.clone(), Slot::Creating(args.clone()));
        }
        let meta = StreamMeta {
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
                tracing::info!(stream = %name, dir = %dir.display(), "stream created");
                let stream = self.start_writer(&name, args, dir, log);
                self.write_streams().insert(name, Slot::Ready(stream));
                Ok(())
            }
            Err(e) => {
                self.write_streams().remove(&name);
                Err(Error::Internal(format!("creating {name:?}: {e}")))
            }
        }
    }

    /// Deletes a stream and its data; every connection that used it gets a MetadataUpdate.
    pub async fn delete_stream(&self, name: &str) -> Result<(), Error> {
        let slot = {
            let mut streams = self.write_streams();
            match streams.get(name) {
                None => return Err(Error::StreamDoesNotExist(name.to_owned())),
                Some(Slot::Creating(_)) => {
                    return Err(Error::StreamNotAvailable(
                        name.to_owned(),
                        "being created".into(),
                    ));
                }
                Some(_) => streams.remove(name),
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
            Some(Slot::Unavailable { dir, .. }) => dir,
            Some(Slot::Creating(_)) | None => return Ok(()),
        };
        let storage = self.inner.config.storage.clone();
        let removed = tokio::task::spawn_blocking(move || catalog::remove(&*storage, &dir))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        if let Err(e) = removed {
            tracing::error!(stream = %name, "removing the stream's files: {e}");
        }
        self.inner.super_streams.remove_partition(name).await;
        tracing::info!(stream = %name, "stream deleted");
        Ok(())
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
        SuperStream::validate(partitions, binding_keys)?;
        StreamArgs::parse(arguments).map_err(Error::PreconditionFailed)?;
        if self.inner.super_streams.contains(name) {
            return Err(Error::StreamAlreadyExists(name.to_owned()));
        }
        if let Some(p) = partitions.iter().find(|p| self.stream_exists(p)) {
            return Err(Error::StreamAlreadyExists(p.clone()));
        }
        let mut created = Vec::new();
        let mut failure = None;
        for p in partitions {
            match self.create_stream(p, arguments).await {
                Ok(()) => created.push(p),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            let definition = SuperStream {
                partitions: partitions.to_vec(),
                binding_keys: binding_keys.to_vec(),
            };
            let added = self
                .inner
                .super_streams
                .update(|map| {
                    if map.contains_key(name) {
                        return Err(Error::StreamAlreadyExists(name.to_owned()));
                    }
                    map.insert(name.to_owned(), definition);
                    Ok(())
                })
                .await;
            failure = added.err();
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
        let removed = self
            .inner
            .super_streams
            .update(|map| {
                map.remove(name)
                    .ok_or_else(|| Error::StreamDoesNotExist(name.to_owned()))
            })
            .await?;
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
        self.inner
            .super_streams
            .get(name)
            .ok_or_else(|| Error::StreamDoesNotExist(name.to_owned()))
    }

    /// Names of all super streams, sorted.
    pub fn super_stream_names(&self) -> Vec<String> {
        self.inner.super_streams.names()
    }

    /// The partitions whose binding key is exactly `routing_key` (direct routing).
    pub fn route(&self, super_stream: &str, routing_key: &str) -> Result<Vec<String>, Error> {
        Ok(self.super_stream(super_stream)?.route(routing_key))
    }

    /// A partition's position in its super stream (its single-active-consumer index):
    /// RabbitMQ's binding order, else the number after the name's last `-`.
    pub(crate) fn partition_index(&self, super_stream: &str, stream: &str) -> i32 {
        self.inner
            .super_streams
            .position(super_stream, stream)
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

    /// Streams whose files could not be opened, sorted by name.
    pub fn unavailable_streams(&self) -> Vec<UnavailableStream> {
        let mut out: Vec<UnavailableStream> = self
            .read_streams()
            .iter()
            .filter_map(|(name, slot)| match slot {
                Slot::Unavailable { dir, reason } => Some(UnavailableStream {
                    name: name.clone(),
                    dir: dir.clone(),
                    reason: reason.clone(),
                }),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn stream_stats(&self, name: &str) -> Result<LogStats, Error> {
        Ok(self.stream(name)?.reader.stats())
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
fn open_log(
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

fn validate_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.starts_with("amq.") || name.len() > 255 {
        return Err(Error::PreconditionFailed(format!("invalid name {name:?}")));
    }
    Ok(())
}
