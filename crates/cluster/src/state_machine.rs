//! [`Metadata`] under openraft: applies committed commands, takes and installs snapshots, and
//! publishes every new state to the node (a `watch`, so readers never wait on Raft).
//!
//! The state itself is not written on apply: a restart rebuilds it from `snapshot.json` (the
//! last snapshot, replaced atomically) and the log, which openraft replays up to the committed
//! id the log store keeps.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use brook_storage::SharedStorage;
use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use brook_auth::AccessStore;
use brook_broker::Broker;

use crate::metadata::{Applied, Metadata};
use crate::raft::{
    Entry, LogId, Response, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const SNAPSHOT: &str = "snapshot.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    metadata: Metadata,
}

#[derive(Debug)]
struct Inner {
    storage: SharedStorage,
    dir: PathBuf,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    metadata: Metadata,
    snapshot: Option<StoredSnapshot>,
    /// Snapshots built, to give each an id of its own.
    built: u64,
    /// This node's users, vhosts and permissions, kept equal to the metadata's (`access.rs`).
    access_store: Option<Arc<AccessStore>>,
    /// This node's broker, whose super stream definitions are kept equal to the metadata's.
    broker: Option<Broker>,
}

/// The metadata group's state machine; clones share it.
#[derive(Debug, Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    published: Arc<watch::Sender<Arc<Metadata>>>,
}

fn sm_err(write: bool, e: impl std::error::Error + 'static) -> StorageError {
    let e = AnyError::new(&e);
    if write {
        StorageIOError::write_state_machine(e).into()
    } else {
        StorageIOError::read_state_machine(e).into()
    }
}

impl StateMachine {
    /// Loads the last snapshot of `dir`, if any.
    pub fn open(storage: SharedStorage, dir: &Path) -> io::Result<StateMachine> {
        let snapshot: Option<StoredSnapshot> =
            match brook_storage::read(storage.as_ref(), &dir.join(SNAPSHOT)) {
                Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(io::Error::other)?),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
        let metadata = snapshot
            .as_ref()
            .map(|s| s.metadata.clone())
            .unwrap_or_default();
        let (published, _) = watch::channel(Arc::new(metadata.clone()));
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(Inner {
                storage,
                dir: dir.to_owned(),
                last_applied: snapshot.as_ref().and_then(|s| s.meta.last_log_id),
                membership: snapshot
                    .as_ref()
                    .map(|s| s.meta.last_membership.clone())
                    .unwrap_or_default(),
                metadata,
                snapshot,
                built: 0,
                access_store: None,
                broker: None,
            })),
            published: Arc::new(published),
        })
    }

    /// Every state the node applies, from the current one on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Metadata>> {
        self.published.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, metadata: Metadata) {
        self.published.send_replace(Arc::new(metadata));
    }

    /// Keeps `store` equal to the metadata's users from now on, starting with the current
    /// ones. Under the state's lock, so that no apply installs a newer state before it.
    pub fn set_access_store(&self, store: Arc<AccessStore>) {
        let mut inner = self.lock();
        inner.access_store = Some(store);
        inner.install_access();
    }

    /// Keeps `broker`'s super stream definitions equal to the metadata's from now on.
    pub fn set_broker(&self, broker: Broker) {
        let mut inner = self.lock();
        inner.broker = Some(broker);
        inner.install_super_streams();
    }
}

impl Inner {
    /// Installs the metadata's users into this node's store. A failure to save them is only
    /// logged: the metadata log keeps them, and stopping the state machine would stop the
    /// node's part in the cluster for a cache file.
    fn install_access(&self) {
        let (Some(store), Some(access)) = (&self.access_store, &self.metadata.access) else {
            return;
        };
        if let Err(e) = store.install(access.clone()) {
            tracing::error!("installing the cluster's users, vhosts and permissions: {e}");
        }
    }

    /// Until the super streams are seeded, a node keeps its own definitions (the seed is
    /// about to bring them, or another node's).
    fn install_super_streams(&self) {
        if !self.metadata.super_streams_seeded {
            return;
        }
        if let Some(broker) = &self.broker {
            broker.install_super_streams(self.metadata.super_streams.clone());
        }
    }

    fn save(&mut self, snapshot: StoredSnapshot) -> io::Result<()> {
        let bytes = serde_json::to_vec(&snapshot).map_err(io::Error::other)?;
        brook_storage::write_atomically(self.storage.as_ref(), &self.dir, SNAPSHOT, &bytes)?;
        self.snapshot = Some(snapshot);
        Ok(())
    }
}

fn to_snapshot(stored: &StoredSnapshot) -> Result<Snapshot, StorageError> {
    let data = serde_json::to_vec(&stored.metadata).map_err(|e| sm_err(false, e))?;
    Ok(Snapshot {
        meta: stored.meta.clone(),
        snapshot: Box::new(Cursor::new(data)),
    })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let mut inner = self.lock();
        inner.built = inner.built.saturating_add(1);
        let last = inner.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: inner.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{}",
                last.map_or(0, |l| l.leader_id.term),
                last.map_or(0, |l| l.index),
                inner.built
            ),
        };
        let stored = StoredSnapshot {
            meta,
            metadata: inner.metadata.clone(),
        };
        inner.save(stored.clone()).map_err(|e| sm_err(true, e))?;
        to_snapshot(&stored)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.lock();
        let mut answers = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            answers.push(match entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Normal(command) => Some(inner.metadata.apply(command)),
                EntryPayload::Membership(m) => {
                    // A joint configuration lists the old voters and the new: placement
                    // follows the new ones, so a node being removed gets no new stream.
                    let new = m.get_joint_config().last();
                    inner.metadata.voters =
                        new.map(|c| c.iter().copied().collect()).unwrap_or_default();
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    None
                }
            });
        }
        let applied = || answers.iter().filter_map(|a| a.as_ref()?.as_ref().ok());
        if applied().any(|a| matches!(a, Applied::AccessChanged(_))) {
            inner.install_access();
        }
        if applied().any(|a| {
            matches!(
                a,
                Applied::SuperStreamChanged(_) | Applied::StreamDeleted(_)
            )
        }) {
            inner.install_super_streams();
        }
        let metadata = inner.metadata.clone();
        drop(inner);
        self.publish(metadata);
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let metadata: Metadata =
            serde_json::from_slice(snapshot.get_ref()).map_err(|e| sm_err(false, e))?;
        let mut inner = self.lock();
        inner
            .save(StoredSnapshot {
                meta: meta.clone(),
                metadata: metadata.clone(),
            })
            .map_err(|e| sm_err(true, e))?;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.metadata = metadata.clone();
        inner.install_access();
        inner.install_super_streams();
        drop(inner);
        self.publish(metadata);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let inner = self.lock();
        inner.snapshot.as_ref().map(to_snapshot).transpose()
    }
}
