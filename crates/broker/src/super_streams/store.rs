//! Super stream definitions, kept in `super_streams.json` (and its backup copy, see
//! [`crate::catalog`]).
//!
//! Reads (Route, Partitions) take a short read lock on the in-memory map; changes are
//! serialized by an async lock held while the file is written on the blocking pool, so no fsync
//! ever runs under a lock that async workers wait on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::RwLock;

use brook_storage::SharedStorage;
use serde::{Deserialize, Serialize};

use super::change::{
    SuperStreamAnswer, SuperStreamChange, SuperStreamMap, apply_super_stream_change,
};
use crate::Error;
use crate::catalog;

const FILE: &str = "super_streams.json";
/// RabbitMQ's default limit on partitions per super stream.
pub(crate) const MAX_PARTITIONS: usize = 1000;

/// A super stream: partition streams with their binding keys, in partition order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuperStream {
    pub partitions: Vec<String>,
    pub binding_keys: Vec<String>,
}

type Map = SuperStreamMap;

/// The file: a list of definitions with their vhost. Files written before vhosts are a map
/// from name to definition, all in `/`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum File {
    Entries(Vec<Entry>),
    Legacy(BTreeMap<String, SuperStream>),
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    vhost: String,
    name: String,
    #[serde(flatten)]
    definition: SuperStream,
}

impl File {
    fn into_map(self) -> Map {
        match self {
            File::Entries(entries) => entries
                .into_iter()
                .map(|e| ((e.vhost, e.name), e.definition))
                .collect(),
            File::Legacy(map) => map
                .into_iter()
                .map(|(name, d)| (("/".to_owned(), name), d))
                .collect(),
        }
    }

    fn of(map: &Map) -> File {
        File::Entries(
            map.iter()
                .map(|((vhost, name), d)| Entry {
                    vhost: vhost.clone(),
                    name: name.clone(),
                    definition: d.clone(),
                })
                .collect(),
        )
    }
}

#[derive(Debug)]
pub(crate) struct SuperStreams {
    map: RwLock<Map>,
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
        let (map, unreadable) = match catalog::read_json::<File>(&*storage, &dir, FILE) {
            Ok(file) => (file.map(File::into_map).unwrap_or_default(), None),
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

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Map> {
        // Whole-value updates only: a panic elsewhere cannot leave the map half-changed.
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, vhost: &str, name: &str) -> Option<SuperStream> {
        self.read().get(&key(vhost, name)).cloned()
    }

    pub(crate) fn contains(&self, vhost: &str, name: &str) -> bool {
        self.read().contains_key(&key(vhost, name))
    }

    /// Every definition, as a cluster is seeded with them.
    pub(crate) fn all(&self) -> SuperStreamMap {
        self.read().clone()
    }

    /// (vhost, name) of every super stream, sorted.
    pub(crate) fn names(&self) -> Vec<(String, String)> {
        self.read().keys().cloned().collect()
    }

    /// A partition's position in a super stream.
    pub(crate) fn position(&self, vhost: &str, super_stream: &str, stream: &str) -> Option<usize> {
        self.read()
            .get(&key(vhost, super_stream))?
            .partitions
            .iter()
            .position(|p| p == stream)
    }

    /// Applies `change` to a copy of the definitions, saves the copy and makes it current.
    pub(crate) async fn change(
        &self,
        change: SuperStreamChange,
    ) -> Result<SuperStreamAnswer, Error> {
        if let Some(reason) = &self.unreadable {
            return Err(Error::Internal(format!(
                "super stream definitions are unreadable: {reason}"
            )));
        }
        let _serialized = self.changes.lock().await;
        let mut map = self.read().clone();
        let out = apply_super_stream_change(&mut map, change)?;
        let (storage, dir, file) = (self.storage.clone(), self.dir.clone(), File::of(&map));
        tokio::task::spawn_blocking(move || catalog::write_json(&*storage, &dir, FILE, &file))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::Internal(format!("saving {FILE}: {e}")))?;
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = map;
        Ok(out)
    }

    /// Checks `change` against the current definitions without applying it.
    pub(crate) fn check(&self, change: SuperStreamChange) -> Result<(), Error> {
        apply_super_stream_change(&mut self.read().clone(), change).map(drop)
    }

    /// Replaces the definitions with the cluster's (this node's copy follows the metadata
    /// log). A file that was unreadable at startup is left alone, as always.
    pub(crate) fn install(&self, map: SuperStreamMap) -> Result<(), Error> {
        let file = File::of(&map);
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = map;
        if self.unreadable.is_some() {
            return Ok(());
        }
        catalog::write_json(&*self.storage, &self.dir, FILE, &file)
            .map_err(|e| Error::Internal(format!("saving {FILE}: {e}")))
    }

    /// Whether a deleted stream is a partition of any super stream of its vhost.
    pub(crate) fn holds_partition(&self, vhost: &str, stream: &str) -> bool {
        self.read()
            .iter()
            .any(|((v, _), ss)| v == vhost && ss.partitions.iter().any(|p| p == stream))
    }
}

/// How many super streams a data directory's file defines (for `brook verify`).
pub(crate) fn count_in(
    storage: &dyn brook_storage::Storage,
    dir: &std::path::Path,
) -> Result<usize, String> {
    let primary = catalog::read_copy::<File>(storage, &dir.join(FILE));
    let backup = catalog::read_copy::<File>(storage, &dir.join(catalog::backup_of(FILE)));
    match (primary, backup) {
        (Ok(Some(f)), _) | (_, Ok(Some(f))) => Ok(f.into_map().len()),
        (Ok(None), Ok(None)) => Ok(0),
        (p, b) => Err(format!("{FILE}: {p:?}; backup: {b:?}")),
    }
}

fn key(vhost: &str, name: &str) -> (String, String) {
    (vhost.to_owned(), name.to_owned())
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

    /// Adds a partition binding at `order` (clamped) or last; an existing identical binding
    /// stays where it is.
    pub(crate) fn bind(
        &mut self,
        stream: &str,
        key: &str,
        order: Option<u64>,
    ) -> Result<(), Error> {
        let exists = self
            .partitions
            .iter()
            .zip(&self.binding_keys)
            .any(|(p, k)| p == stream && k == key);
        if exists {
            return Ok(());
        }
        if self.partitions.len() >= MAX_PARTITIONS {
            return Err(Error::PreconditionFailed(format!(
                "more than {MAX_PARTITIONS} partitions"
            )));
        }
        let at = order
            .and_then(|o| usize::try_from(o).ok())
            .map_or(self.partitions.len(), |o| o.min(self.partitions.len()));
        self.partitions.insert(at, stream.to_owned());
        self.binding_keys.insert(at, key.to_owned());
        Ok(())
    }

    /// Removes a partition binding; false if there was none.
    pub(crate) fn unbind(&mut self, stream: &str, key: &str) -> bool {
        let found = self
            .partitions
            .iter()
            .zip(&self.binding_keys)
            .position(|(p, k)| p == stream && k == key);
        if let Some(i) = found {
            self.partitions.remove(i);
            self.binding_keys.remove(i);
        }
        found.is_some()
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
