//! The metadata group's Raft log and vote, as files in the node's `cluster/` directory,
//! written through [`brook_storage`] so that the power-cut simulation reaches them too.
//!
//! - `raft.log`: entries as records of a 4-byte length, the payload's 4-byte CRC32 (both
//!   big-endian), and the payload (the entry as JSON). Appends are fsynced before openraft is
//!   told they are durable ([`LogFlushed`]), which is what lets a vote or an ack count.
//! - `raft-state.json`: the vote, the last purged and the last committed log id, replaced
//!   atomically.
//!
//! Recovery reads every record. A record cut short at the end of the file, or the last record
//! with a wrong CRC, is a write that was in flight when the node died: it was never fsynced,
//! so never acknowledged, and is cut off. A bad record followed by others is damage, and the
//! node refuses to start rather than guess.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use brook_storage::{File, OpenMode, SharedStorage};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogReader, StorageIOError};
use serde::{Deserialize, Serialize};

use crate::raft::{Entry, LogId, StorageError, TypeConfig, Vote};

const LOG: &str = "raft.log";
const STATE: &str = "raft-state.json";
const HEADER: usize = 8;
/// The log file is rewritten without its purged prefix once that prefix is this large.
const COMPACT_AT: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LogOpenError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: record at byte {at} is damaged and followed by others; refusing to start")]
    Damaged { path: PathBuf, at: u64 },
}

/// Index → where its record starts in the file, and the entry.
type Records = BTreeMap<u64, (u64, Entry)>;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct HardState {
    vote: Option<Vote>,
    last_purged: Option<LogId>,
    committed: Option<LogId>,
}

#[derive(Debug)]
struct Inner {
    storage: SharedStorage,
    dir: PathBuf,
    file: Box<dyn File>,
    entries: Records,
    /// The file's length.
    end: u64,
    state: HardState,
}

/// The log, shared by openraft's log task and its readers.
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogOpenError + '_ {
    move |source| LogOpenError::Io {
        path: path.to_owned(),
        source,
    }
}

fn storage_err(write: bool, e: impl std::error::Error + 'static) -> StorageError {
    let e = AnyError::new(&e);
    if write {
        StorageIOError::write_logs(e).into()
    } else {
        StorageIOError::read_logs(e).into()
    }
}

impl LogStore {
    pub fn open(storage: SharedStorage, dir: &Path) -> Result<LogStore, LogOpenError> {
        storage.create_dir_all(dir).map_err(io_err(dir))?;
        let state_path = dir.join(STATE);
        let state = match brook_storage::read(storage.as_ref(), &state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io_err(&state_path)(io::Error::other(e)))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => HardState::default(),
            Err(e) => return Err(io_err(&state_path)(e)),
        };
        let path = dir.join(LOG);
        let exists = storage.exists(&path).map_err(io_err(&path))?;
        let mode = if exists {
            OpenMode::Append
        } else {
            OpenMode::Create
        };
        let mut file = storage.open(&path, mode).map_err(io_err(&path))?;
        let (entries, end) = recover(file.as_mut(), &path, &state)?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(Inner {
                storage,
                dir: dir.to_owned(),
                file,
                entries,
                end,
                state,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the log as consistent as the file: go on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads the records, cuts off a torn last one, and keeps the entries after the purged ones.
fn recover(
    file: &mut dyn File,
    path: &Path,
    state: &HardState,
) -> Result<(Records, u64), LogOpenError> {
    let len = file.len().map_err(io_err(path))?;
    let size = usize::try_from(len).map_err(|e| io_err(path)(io::Error::other(e)))?;
    let mut bytes = Vec::new();
    file.read_into(0, size, &mut bytes).map_err(io_err(path))?;
    let purged = state.last_purged.map_or(0, |l| l.index.saturating_add(1));
    let mut entries = BTreeMap::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        match parse_record(&bytes[pos..]) {
            Some((entry, used)) => {
                if entry.log_id.index >= purged {
                    entries.insert(entry.log_id.index, (pos as u64, entry));
                }
                pos += used;
            }
            None if torn_tail(&bytes[pos..]) => {
                tracing::warn!(
                    "{}: cutting off an unfinished record at byte {pos}",
                    path.display()
                );
                file.set_len(pos as u64).map_err(io_err(path))?;
                file.sync_data().map_err(io_err(path))?;
                break;
            }
            None => {
                return Err(LogOpenError::Damaged {
                    path: path.to_owned(),
                    at: pos as u64,
                });
            }
        }
    }
    let end = file.len().map_err(io_err(path))?;
    Ok((entries, end))
}

/// One whole, intact record at the start of `bytes`, and its length.
fn parse_record(bytes: &[u8]) -> Option<(Entry, usize)> {
    let header = bytes.get(..HEADER)?;
    let len = usize::try_from(u32::from_be_bytes(header[..4].try_into().ok()?)).ok()?;
    let crc = u32::from_be_bytes(header[4..].try_into().ok()?);
    let payload = bytes.get(HEADER..HEADER.checked_add(len)?)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let entry = serde_json::from_slice(payload).ok()?;
    Some((entry, HEADER + len))
}

/// Whether the bad record at the start of `bytes` is the file's last: cut short, or with a
/// wrong CRC and nothing after it. A damaged length could make a record in the middle look
/// like that, so there must also be no intact record anywhere after it.
fn torn_tail(bytes: &[u8]) -> bool {
    let ends_file = match bytes.get(..HEADER) {
        None => true,
        Some(header) => {
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            usize::try_from(len)
                .ok()
                .and_then(|l| l.checked_add(HEADER))
                .is_none_or(|end| end >= bytes.len())
        }
    };
    ends_file && (1..bytes.len()).all(|at| parse_record(&bytes[at..]).is_none())
}

fn encode(entry: &Entry, out: &mut Vec<u8>) -> io::Result<()> {
    let payload = serde_json::to_vec(entry).map_err(io::Error::other)?;
    let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

impl Inner {
    fn save_state(&self) -> io::Result<()> {
        let bytes = serde_json::to_vec(&self.state).map_err(io::Error::other)?;
        brook_storage::write_atomically(self.storage.as_ref(), &self.dir, STATE, &bytes)
    }

    fn append(&mut self, entries: Vec<Entry>) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut starts = Vec::with_capacity(entries.len());
        for entry in &entries {
            starts.push(self.end.saturating_add(buf.len() as u64));
            encode(entry, &mut buf)?;
        }
        self.file.append(&[&buf])?;
        self.end = self.end.saturating_add(buf.len() as u64);
        for (start, entry) in starts.into_iter().zip(entries) {
            self.entries.insert(entry.log_id.index, (start, entry));
        }
        self.file.sync_data()
    }

    /// Rewrites the file without its purged prefix once that prefix is large.
    fn compact(&mut self) -> io::Result<()> {
        let first = self.entries.values().next().map_or(self.end, |(at, _)| *at);
        if first < COMPACT_AT || first < self.end / 2 {
            return Ok(());
        }
        let mut buf = Vec::new();
        let mut moved = BTreeMap::new();
        for (index, (_, entry)) in std::mem::take(&mut self.entries) {
            moved.insert(index, (buf.len() as u64, entry.clone()));
            encode(&entry, &mut buf)?;
        }
        brook_storage::write_atomically(self.storage.as_ref(), &self.dir, LOG, &buf)?;
        self.file = self.storage.open(&self.dir.join(LOG), OpenMode::Append)?;
        self.entries = moved;
        self.end = buf.len() as u64;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let inner = self.lock();
        Ok(inner
            .entries
            .range(range)
            .map(|(_, (_, e))| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        let last_purged_log_id = inner.state.last_purged;
        let last_log_id = inner
            .entries
            .values()
            .next_back()
            .map(|(_, e)| e.log_id)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.state.vote = Some(*vote);
        inner
            .save_state()
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock().state.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.state.committed = committed;
        inner.save_state().map_err(|e| storage_err(true, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().state.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let result = self.lock().append(entries.into_iter().collect());
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                callback.log_io_completed(Err(copy));
                Err(storage_err(true, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.lock();
        let Some((&first, &(at, _))) = inner.entries.range(log_id.index..).next() else {
            return Ok(());
        };
        inner.file.set_len(at).map_err(|e| storage_err(true, e))?;
        inner.file.sync_data().map_err(|e| storage_err(true, e))?;
        inner.end = at;
        inner.entries.split_off(&first);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.state.last_purged = Some(log_id);
        inner.save_state().map_err(|e| storage_err(true, e))?;
        let keep = inner.entries.split_off(&log_id.index.saturating_add(1));
        inner.entries = keep;
        inner.compact().map_err(|e| storage_err(true, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Command;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Command::DeleteStream {
                key: crate::StreamKey {
                    vhost: "/".into(),
                    name: format!("s{index}"),
                },
            }),
        }
    }

    fn indexes(store: &LogStore) -> Vec<u64> {
        store.lock().entries.keys().copied().collect()
    }

    fn write(store: &LogStore, from: u64, to: u64) {
        store
            .lock()
            .append((from..=to).map(|i| entry(1, i)).collect())
            .unwrap();
    }

    #[tokio::test]
    async fn entries_votes_truncation_and_purges_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let disk = brook_storage::disk();
        let mut store = LogStore::open(disk.clone(), dir.path()).unwrap();
        write(&store, 0, 9);
        store.truncate(entry(1, 7).log_id).await.unwrap();
        store.purge(entry(1, 2).log_id).await.unwrap();
        let vote = Vote::new(3, 2);
        store.save_vote(&vote).await.unwrap();
        write(&store, 7, 8);
        drop(store);
        let mut store = LogStore::open(disk, dir.path()).unwrap();
        assert_eq!(indexes(&store), [3, 4, 5, 6, 7, 8]);
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(2));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(8));
        let read = store.try_get_log_entries(4..6).await.unwrap();
        assert_eq!(
            read.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            [4, 5]
        );
    }

    #[test]
    fn a_torn_last_record_is_cut_and_damage_before_the_end_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let disk = brook_storage::disk();
        write(&LogStore::open(disk.clone(), dir.path()).unwrap(), 0, 2);
        let path = dir.path().join(LOG);
        let whole = std::fs::read(&path).unwrap();
        // A crash mid-append: the last record is cut short.
        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        let store = LogStore::open(disk.clone(), dir.path()).unwrap();
        assert_eq!(indexes(&store), [0, 1]);
        drop(store);
        // A flipped byte in the first record, with a good one after it: damage.
        let mut damaged = std::fs::read(&path).unwrap();
        damaged[HEADER + 2] ^= 0x40;
        std::fs::write(&path, &damaged).unwrap();
        match LogStore::open(disk, dir.path()) {
            Err(LogOpenError::Damaged { at: 0, .. }) => {}
            other => panic!("{other:?}"),
        }
        // Nothing was cut: the file is as it was.
        assert_eq!(std::fs::read(&path).unwrap(), damaged);
    }

    #[test]
    fn a_damaged_length_in_the_middle_is_not_taken_for_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let disk = brook_storage::disk();
        write(&LogStore::open(disk.clone(), dir.path()).unwrap(), 0, 2);
        let path = dir.path().join(LOG);
        let mut damaged = std::fs::read(&path).unwrap();
        // The first record claims to run past the end of the file.
        damaged[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        std::fs::write(&path, &damaged).unwrap();
        match LogStore::open(disk, dir.path()) {
            Err(LogOpenError::Damaged { at: 0, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), damaged);
    }
}
