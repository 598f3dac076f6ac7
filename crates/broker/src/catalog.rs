//! Streams on disk: one directory per stream under `streams/`, holding the log and the stream's
//! metadata (`stream.json`: name and arguments).
//!
//! Rules, so that no read error can ever cost data:
//! * Metadata is written twice (`stream.json` and `stream.json.bak`, each atomically), so a
//!   damaged copy (a bad manual edit, a disk error) is recovered from the other.
//! * A directory is only ever removed when it is provably not a stream: renamed to
//!   `*.deleted` by a delete (the rename is the point of no return), or an unfinished create —
//!   no metadata *and* no segment file. A directory with segments but no readable metadata is
//!   reported and kept, never removed.
//! * Creation writes the metadata before the log, so "no metadata, no segments" is exactly an
//!   unfinished create.

use std::io;
use std::path::{Path, PathBuf};

use brook_storage::Storage;
use serde::{Deserialize, Serialize};

use crate::args::StreamArgs;

pub(crate) const META_FILE: &str = "stream.json";
const DELETED_SUFFIX: &str = ".deleted";

/// What is kept about a stream besides its log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StreamMeta {
    /// Absent in files written before vhosts: `/`.
    #[serde(default = "default_vhost")]
    pub vhost: String,
    pub name: String,
    pub arguments: StreamArgs,
    pub created_at_ms: i64,
}

fn default_vhost() -> String {
    "/".to_owned()
}

/// What a directory under `streams/` turned out to be.
#[derive(Debug)]
pub(crate) enum Found {
    Stream(StreamMeta),
    /// A create that crashed before writing anything: safe to remove.
    Unfinished,
    /// A delete that crashed after its rename: safe to remove.
    Deleted,
    /// Holds (or may hold) data, but its metadata cannot be read: kept and reported.
    Damaged {
        reason: String,
    },
}

pub(crate) use brook_storage::json::{read as read_json, write as write_json};

pub(crate) use brook_storage::json::{backup_of, read_copy};

/// Whether a directory is one a delete left behind.
pub(crate) fn is_deleted(dir: &Path) -> bool {
    dir.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(DELETED_SUFFIX))
}

/// Looks at one directory under `streams/`.
pub(crate) fn inspect(storage: &dyn Storage, dir: &Path) -> Found {
    if is_deleted(dir) {
        return Found::Deleted;
    }
    match read_json::<StreamMeta>(storage, dir, META_FILE) {
        Ok(Some(meta)) => Found::Stream(meta),
        Ok(None) => match has_segments(storage, dir) {
            Ok(false) => Found::Unfinished,
            Ok(true) => Found::Damaged {
                reason: format!("{META_FILE} and its backup are missing"),
            },
            Err(e) => Found::Damaged {
                reason: format!("listing the directory: {e}"),
            },
        },
        Err(reason) => Found::Damaged { reason },
    }
}

pub(crate) fn has_segments(storage: &dyn Storage, dir: &Path) -> io::Result<bool> {
    Ok(storage
        .read_dir(dir)?
        .iter()
        .any(|e| e.name.ends_with(".segment")))
}

/// The name a damaged stream probably had: its directory's name without the creation time
/// (exact for names of letters, digits, `-`, `_` and `.`).
pub(crate) fn guess_name(dir: &Path) -> Option<String> {
    let name = dir.file_name()?.to_str()?;
    let (stem, nanos) = name.rsplit_once('-')?;
    (!stem.is_empty() && nanos.bytes().all(|b| b.is_ascii_digit())).then(|| stem.to_owned())
}

/// Creates a stream's directory with its metadata. The log is created after, in it.
pub(crate) fn create(
    storage: &dyn Storage,
    streams_dir: &Path,
    meta: &StreamMeta,
) -> io::Result<PathBuf> {
    let dir = streams_dir.join(dir_name(&meta.name, meta.created_at_ms));
    storage.create_dir_all(&dir)?;
    write_json(storage, &dir, META_FILE, meta)?;
    storage.sync_dir(streams_dir)?;
    Ok(dir)
}

/// Removes a stream's directory: first renamed out of the way (durably), so a crash in the
/// middle of the removal leaves a directory that is plainly not a stream.
pub(crate) fn remove(storage: &dyn Storage, dir: &Path) -> io::Result<()> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or(io::ErrorKind::InvalidInput)?;
    let doomed = if name.ends_with(DELETED_SUFFIX) {
        dir.to_owned()
    } else {
        let doomed = dir.with_file_name(format!("{name}{DELETED_SUFFIX}"));
        storage.rename(dir, &doomed)?;
        if let Some(parent) = dir.parent() {
            storage.sync_dir(parent)?;
        }
        doomed
    };
    storage.remove_dir_all(&doomed)
}

/// A readable, unique directory name; the real name is in the metadata.
fn dir_name(name: &str, created_at_ms: i64) -> String {
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
    // Unique even for two streams of one name created in the same millisecond (delete and
    // create again): the clock's nanoseconds, else the creation time.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(created_at_ms as u128 * 1_000_000, |d| d.as_nanos());
    format!("{}-{nanos}", safe.trim_start_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_storage::OpenMode;
    use brook_storage::sim::SimDisk;

    fn meta(name: &str) -> StreamMeta {
        StreamMeta {
            vhost: "/".into(),
            name: name.into(),
            arguments: StreamArgs::default(),
            created_at_ms: 1,
        }
    }

    fn setup() -> (SimDisk, PathBuf) {
        let disk = SimDisk::new(1);
        let streams = PathBuf::from("/data/streams");
        disk.create_dir_all(&streams).unwrap();
        (disk, streams)
    }

    #[test]
    fn a_damaged_copy_is_restored_from_the_other() {
        let (disk, streams) = setup();
        let dir = create(&disk, &streams, &meta("orders")).unwrap();
        let mut f = disk.open(&dir.join(META_FILE), OpenMode::Create).unwrap();
        f.append(&[b"{\"name\": \"ord"]).unwrap();
        drop(f);
        assert!(matches!(inspect(&disk, &dir), Found::Stream(m) if m.name == "orders"));
        // The primary was repaired.
        let bytes = brook_storage::read(&disk, &dir.join(META_FILE)).unwrap();
        assert!(serde_json::from_slice::<StreamMeta>(&bytes).is_ok());
    }

    #[test]
    fn data_without_readable_metadata_is_kept() {
        let (disk, streams) = setup();
        let dir = create(&disk, &streams, &meta("orders")).unwrap();
        disk.open(&dir.join("00000000000000000000.segment"), OpenMode::Create)
            .unwrap();
        for file in [META_FILE, "stream.json.bak"] {
            disk.open(&dir.join(file), OpenMode::Create).unwrap();
        }
        assert!(matches!(inspect(&disk, &dir), Found::Damaged { .. }));
        disk.remove_file(&dir.join(META_FILE)).unwrap();
        disk.remove_file(&dir.join("stream.json.bak")).unwrap();
        assert!(matches!(inspect(&disk, &dir), Found::Damaged { .. }));
        disk.remove_file(&dir.join("00000000000000000000.segment"))
            .unwrap();
        assert!(matches!(inspect(&disk, &dir), Found::Unfinished));
        assert_eq!(guess_name(&dir).as_deref(), Some("orders"));
    }

    #[test]
    fn removal_renames_first() {
        let (disk, streams) = setup();
        let dir = create(&disk, &streams, &meta("orders")).unwrap();
        remove(&disk, &dir).unwrap();
        assert!(disk.read_dir(&streams).unwrap().is_empty());
        let doomed = streams.join("x-1.deleted");
        disk.create_dir_all(&doomed).unwrap();
        assert!(matches!(inspect(&disk, &doomed), Found::Deleted));
    }
}
