//! `brook verify`: an offline check of a whole data directory that changes nothing — every
//! stream's metadata (both copies) and log (see [`brook_log::verify`]), and the super stream
//! definitions. What an operator runs before and after a disk incident.

use std::fmt;
use std::path::{Path, PathBuf};

use brook_log::{Severity, Verified};
use brook_storage::Storage;

use crate::catalog::{self, StreamMeta};

/// What was found in one stream directory.
#[derive(Debug)]
pub struct StreamReport {
    pub dir: PathBuf,
    /// From the metadata, or guessed from the directory name.
    pub name: Option<String>,
    /// Problems with the metadata files.
    pub metadata: Vec<(Severity, String)>,
    pub log: Result<Verified, String>,
}

impl StreamReport {
    pub fn worst(&self) -> Option<Severity> {
        let log = match &self.log {
            Ok(v) => v.worst(),
            Err(_) => Some(Severity::Damaged),
        };
        self.metadata.iter().map(|(s, _)| *s).max().max(log)
    }
}

/// What was found in a data directory.
#[derive(Debug)]
pub struct DataDirReport {
    pub streams: Vec<StreamReport>,
    /// Super stream definitions, or why they cannot be read.
    pub super_streams: Result<usize, String>,
}

impl DataDirReport {
    pub fn worst(&self) -> Option<Severity> {
        let ss = self.super_streams.is_err().then_some(Severity::Damaged);
        self.streams.iter().filter_map(|s| s.worst()).max().max(ss)
    }
}

/// Checks `data_dir` without writing anything.
pub fn verify_data_dir(storage: &dyn Storage, data_dir: &Path) -> std::io::Result<DataDirReport> {
    let streams_dir = data_dir.join("streams");
    let mut streams = Vec::new();
    for entry in storage.read_dir(&streams_dir)? {
        if entry.is_dir {
            streams.push(verify_stream(storage, &streams_dir.join(entry.name)));
        }
    }
    let super_streams = crate::super_streams::count_in(storage, data_dir);
    Ok(DataDirReport {
        streams,
        super_streams,
    })
}

fn verify_stream(storage: &dyn Storage, dir: &Path) -> StreamReport {
    let mut metadata = Vec::new();
    let primary = catalog::read_copy::<StreamMeta>(storage, &dir.join(catalog::META_FILE));
    let backup_file = catalog::backup_of(catalog::META_FILE);
    let backup = catalog::read_copy::<StreamMeta>(storage, &dir.join(&backup_file));
    let name = match (&primary, &backup) {
        (Ok(Some(m)), _) | (_, Ok(Some(m))) => Some(m.name.clone()),
        _ => catalog::guess_name(dir),
    };
    let whole = |r: &Result<Option<StreamMeta>, String>| matches!(r, Ok(Some(_)));
    for (file, copy, other) in [
        (catalog::META_FILE, &primary, &backup),
        (backup_file.as_str(), &backup, &primary),
    ] {
        let problem = match copy {
            Ok(Some(_)) => continue,
            Ok(None) => "missing".to_owned(),
            Err(e) => e.clone(),
        };
        let severity = if whole(other) {
            Severity::Repairable
        } else {
            Severity::Damaged
        };
        metadata.push((severity, format!("{file}: {problem}")));
    }
    if catalog::is_deleted(dir) {
        metadata = vec![(
            Severity::Repairable,
            "a delete that did not finish (removed at start)".into(),
        )];
    } else if !whole(&primary)
        && !whole(&backup)
        && !catalog::has_segments(storage, dir).unwrap_or(true)
    {
        metadata = vec![(
            Severity::Repairable,
            "a create that did not finish (removed at start)".into(),
        )];
    }
    let log = brook_log::verify(storage, dir).map_err(|e| e.to_string());
    StreamReport {
        dir: dir.to_owned(),
        name,
        metadata,
        log,
    }
}

impl fmt::Display for StreamReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.worst() {
            None => "ok",
            Some(Severity::Repairable) => "repairable",
            Some(Severity::Damaged) => "DAMAGED",
        };
        let name = self.name.as_deref().unwrap_or("?");
        writeln!(f, "stream {name:?} ({}): {status}", self.dir.display())?;
        match &self.log {
            Ok(v) => writeln!(
                f,
                "  {} segments, {} chunks, {} bytes, offsets {}..{}, {} stored offsets, {} publisher sequences",
                v.segments,
                v.chunks,
                v.bytes,
                v.first_offset.map_or("-".into(), |o| o.to_string()),
                v.next_offset,
                v.consumers,
                v.publishers
            )?,
            Err(e) => writeln!(f, "  DAMAGED: the log cannot be read: {e}")?,
        }
        for (severity, what) in &self.metadata {
            let grade = if *severity == Severity::Damaged {
                "DAMAGED"
            } else {
                "repairable"
            };
            writeln!(f, "  {grade}: {what}")?;
        }
        if let Ok(v) = &self.log {
            for finding in &v.findings {
                writeln!(f, "  {finding}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for DataDirReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.streams {
            write!(f, "{s}")?;
        }
        match &self.super_streams {
            Ok(n) => writeln!(f, "super streams: {n}")?,
            Err(e) => writeln!(f, "super streams: DAMAGED: {e}")?,
        }
        let damaged = self
            .streams
            .iter()
            .filter(|s| s.worst() == Some(Severity::Damaged))
            .count();
        let repairable = self
            .streams
            .iter()
            .filter(|s| s.worst() == Some(Severity::Repairable))
            .count();
        write!(
            f,
            "{} streams: {} ok, {repairable} repairable at the next start, {damaged} damaged",
            self.streams.len(),
            self.streams.len() - damaged - repairable
        )
    }
}
