//! Small metadata files (stream metadata, users and permissions, super streams) kept as JSON,
//! each written twice so one damaged copy is recovered from the other.
//!
//! Both copies are written atomically (temporary file, fsync, rename, one directory fsync for
//! both); the backup is renamed first, so the primary's presence means both are complete. A
//! reader that finds the primary damaged or missing uses the backup and repairs the primary.

use std::io;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{OpenMode, Storage};

/// The backup copy's file name.
pub fn backup_of(file: &str) -> String {
    format!("{file}.bak")
}

/// Writes `value` to `dir/file` and to its backup copy, each atomically.
pub fn write(
    storage: &dyn Storage,
    dir: &Path,
    file: &str,
    value: &impl Serialize,
) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    let names = [backup_of(file), file.to_owned()];
    for name in &names {
        let mut f = storage.open(&dir.join(format!("{name}.tmp")), OpenMode::Create)?;
        f.append(&[&bytes])?;
        f.sync_data()?;
    }
    for name in &names {
        storage.rename(&dir.join(format!("{name}.tmp")), &dir.join(name))?;
    }
    storage.sync_dir(dir)
}

/// Reads one copy without repairing anything. `Ok(None)`: the file does not exist.
pub fn read_copy<T: DeserializeOwned>(
    storage: &dyn Storage,
    path: &Path,
) -> Result<Option<T>, String> {
    match crate::read(storage, path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| e.to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads `dir/file`, falling back to its backup copy (and then repairing the primary from it).
/// `Ok(None)`: neither copy exists. `Err`: what was wrong with each copy.
pub fn read<T: DeserializeOwned + Serialize>(
    storage: &dyn Storage,
    dir: &Path,
    file: &str,
) -> Result<Option<T>, String> {
    let backup = backup_of(file);
    let primary_error = match read_copy(storage, &dir.join(file)) {
        Ok(Some(value)) => return Ok(Some(value)),
        Ok(None) => None,
        Err(e) => Some(format!("{file}: {e}")),
    };
    match read_copy::<T>(storage, &dir.join(&backup)) {
        Ok(Some(value)) => {
            let why = primary_error.as_deref().unwrap_or("missing");
            tracing::warn!(dir = %dir.display(), "{why}: restored from {backup}");
            if let Err(e) = write(storage, dir, file, &value) {
                tracing::error!(dir = %dir.display(), "rewriting {file}: {e}");
            }
            Ok(Some(value))
        }
        Ok(None) => primary_error.map_or(Ok(None), Err),
        Err(backup_error) => Err(match primary_error {
            Some(p) => format!("{p}; {backup}: {backup_error}"),
            None => format!("{file}: missing; {backup}: {backup_error}"),
        }),
    }
}
