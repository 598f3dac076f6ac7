//! Super streams: named, ordered sets of partition streams with binding keys, kept in
//! `super_streams.json` (and its backup copy, see [`crate::catalog`]).
//!
//! Reads (Route, Partitions) take a short read lock on the in-memory map; changes are
//! serialized by an async lock held while the file is written on the blocking pool, so no fsync
//! ever runs under a lock that async workers wait on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::RwLock;

use brook_storage::SharedStorage;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::catalog;

const FILE: &str = "super_streams.json";
/// RabbitMQ's default limit on partitions per super stream.
pub(crate) const MAX_PARTITIONS: usize = 1000;

/// A super stream: partition streams with their binding keys, in partition order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuperStream {
    pub partitions: Vec<String>,
    pub binding_keys: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct SuperStreams {
    map: RwLock<BTreeMap<String, SuperStream>>,
    changes: tokio::sync::Mutex<()>,
    storage: SharedStorage,
    dir: PathBuf,
    /// Set when the file could not be read at startup: it is then never overwritten (that
    /// would lose the definitions it holds), and changes are refused.
    unreadable: Option<String>,
}

impl SuperStreams {
    /// Loads the definitions. A damaged file is reported and left alone.
    pub(crate) fn load(storage: SharedStorage, dir: PathBuf) -> Self {
        let (map, unreadable) = match catalog::read_json(&*storage, &dir, FILE) {
            Ok(map) => (map.unwrap_or_default(), None),
            Err(reason) => {
                tracing::error!(dir = %dir.display(),
                    "super streams unavailable, their definitions are unreadable: {reason}. \
                     Restore {FILE} (or its .bak copy) and restart; brook will not overwrite it.");
                (BTreeMap::new(), Some(reason))
            }
        };
        Self {
            map: RwLock::new(map),
            changes: tokio::sync::Mutex::new(()),
            storage,
            dir,
            unreadable,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, SuperStream>> {
        // Whole-value updates only: a panic elsewhere cannot leave the map half-changed.
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, name: &str) -> Option<SuperStream> {
        self.read().get(name).cloned()
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// A partition's position in a super stream.
    pub(crate) fn position(&self, super_stream: &str, stream: &str) -> Option<usize> {
        self.read()
            .get(super_stream)?
            .partitions
            .iter()
            .position(|p| p == stream)
    }

    /// Applies `change` to a copy of the map; if it returns `Ok`, persists the copy and makes
    /// it current.
    pub(crate) async fn update<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, SuperStream>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        if let Some(reason) = &self.unreadable {
            return Err(Error::Internal(format!(
                "super stream definitions are unreadable: {reason}"
            )));
        }
        let _serialized = self.changes.lock().await;
        let mut map = self.read().clone();
        let out = change(&mut map)?;
        let (storage, dir, copy) = (self.storage.clone(), self.dir.clone(), map.clone());
        tokio::task::spawn_blocking(move || catalog::write_json(&*storage, &dir, FILE, &copy))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::Internal(format!("saving {FILE}: {e}")))?;
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = map;
        Ok(out)
    }

    /// Takes a deleted stream out of every super stream (as RabbitMQ drops a deleted queue's
    /// bindings).
    pub(crate) async fn remove_partition(&self, stream: &str) {
        if !self
            .read()
            .values()
            .any(|ss| ss.partitions.iter().any(|p| p == stream))
        {
            return;
        }
        let result = self
            .update(|map| {
                for ss in map.values_mut() {
                    while let Some(i) = ss.partitions.iter().position(|p| p == stream) {
                        ss.partitions.remove(i);
                        ss.binding_keys.remove(i);
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            tracing::error!(stream, "removing the partition from its super stream: {e}");
        }
    }
}

impl SuperStream {
    /// Checks a definition as RabbitMQ does before creating anything.
    pub(crate) fn validate(partitions: &[String], binding_keys: &[String]) -> Result<(), Error> {
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
        Ok(())
    }

    /// The partitions whose binding key is exactly `routing_key` (direct routing).
    pub(crate) fn route(&self, routing_key: &str) -> Vec<String> {
        self.partitions
            .iter()
            .zip(&self.binding_keys)
            .filter(|(_, k)| *k == routing_key)
            .map(|(p, _)| p.clone())
            .collect()
    }
}
