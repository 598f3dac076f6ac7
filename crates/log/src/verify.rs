//! An offline check of a log directory that changes nothing: every segment's header, every
//! chunk (CRC, entry counts, the side check of filter and trailer, chunk id continuity), every
//! index record against the chunk it points at, the tracking data of the last segment.
//!
//! Findings are graded as recovery would treat them: [`Severity::Repairable`] is what the next
//! start repairs by itself (a torn tail, a missing or short index, an orphan index);
//! [`Severity::Damaged`] is what keeps a stream from opening (a bad file header, an invalid
//! chunk followed by valid ones, a gap between segments).

use std::fmt;
use std::path::Path;

use brook_storage::{OpenMode, Storage};

use crate::error::{LogError, Result};
use crate::format::{FILE_HEADER_LEN, FileKind, index_path, parse_file_name, segment_path};
use crate::reader::SegmentInfo;
use crate::recovery::{self, Fs, Recovery};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Repairable,
    Damaged,
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// File name within the log directory.
    pub file: String,
    pub what: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let grade = match self.severity {
            Severity::Repairable => "repairable",
            Severity::Damaged => "DAMAGED",
        };
        write!(f, "{grade}: {}: {}", self.file, self.what)
    }
}

/// What a log directory holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    pub segments: usize,
    pub chunks: u64,
    pub bytes: u64,
    /// First chunk id and the offset after the last valid chunk.
    pub first_offset: Option<u64>,
    pub next_offset: u64,
    /// Stored offsets and publisher sequences found in the last segment's tracking data.
    pub consumers: usize,
    pub publishers: usize,
    pub findings: Vec<Finding>,
}

impl Verified {
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    fn find(&mut self, severity: Severity, file: &Path, what: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            file: file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            what: what.into(),
        });
    }
}

/// Checks the log in `dir` without writing anything.
pub fn verify(storage: &dyn Storage, dir: &Path) -> Result<Verified> {
    let mut out = Verified::default();
    let mut segments = Vec::new();
    for entry in storage.read_dir(dir).map_err(LogError::io(dir))? {
        match parse_file_name(&entry.name) {
            Some((id, FileKind::Segment)) => segments.push(id),
            Some((id, FileKind::Index))
                if !storage.exists(&segment_path(dir, id)).unwrap_or(true) =>
            {
                out.find(
                    Severity::Repairable,
                    &index_path(dir, id),
                    "index without a segment",
                );
            }
            _ => {}
        }
    }
    let last = segments.len().saturating_sub(1);
    let mut expected: Option<u64> = None;
    let mut tail = None;
    for (i, &id) in segments.iter().enumerate() {
        if let Some(next) = expected
            && next != id
        {
            out.find(
                Severity::Damaged,
                &segment_path(dir, id),
                format!("starts at offset {id}, the previous segment ends at {next}"),
            );
        }
        let seg = verify_segment(storage, dir, id, i == last, &mut out)?;
        out.first_offset = out.first_offset.or((seg.chunks > 0).then_some(id));
        expected = Some(seg.next_offset);
        out.next_offset = seg.next_offset;
        tail = Some(seg);
    }
    out.segments = segments.len();
    if let Some((info, records)) = tail.map(|s| (s.info(), s.records)) {
        let mut report = Recovery::default();
        let fs = Fs { storage, dir };
        let tracking = recovery::recover_tracking(&fs, &[info], &records, &mut report)?;
        for chunk in report.bad_tracking_chunks {
            out.find(
                Severity::Repairable,
                &segment_path(dir, segments[last]),
                format!("unreadable tracking data in chunk {chunk} (skipped at start)"),
            );
        }
        out.publishers = tracking.sequences().count();
        out.consumers = tracking.offsets().count();
    }
    Ok(out)
}

/// One segment's walk.
struct Walked {
    first: u64,
    chunks: u64,
    next_offset: u64,
    size: u64,
    records: Vec<crate::format::IndexRecord>,
}

impl Walked {
    fn info(&self) -> SegmentInfo {
        SegmentInfo {
            first_chunk_id: self.first,
            chunks: self.chunks,
            size: self.size,
            last_chunk_id: self.records.last().map(|r| r.chunk_id),
            last_timestamp: self.records.last().map(|r| r.timestamp),
            next_offset: self.next_offset,
        }
    }
}

fn verify_segment(
    storage: &dyn Storage,
    dir: &Path,
    id: u64,
    is_last: bool,
    out: &mut Verified,
) -> Result<Walked> {
    let path = segment_path(dir, id);
    let file = storage
        .open(&path, OpenMode::Read)
        .map_err(LogError::io(&path))?;
    let len = file.len().map_err(LogError::io(&path))?;
    let mut walked = Walked {
        first: id,
        chunks: 0,
        next_offset: id,
        size: len,
        records: Vec::new(),
    };
    out.bytes += len;
    if len < FILE_HEADER_LEN || recovery::check_segment_header(&*file, &path).is_err() {
        let severity = if is_last && len < FILE_HEADER_LEN {
            Severity::Repairable
        } else {
            Severity::Damaged
        };
        out.find(severity, &path, "not a segment file (bad or torn header)");
        return Ok(walked);
    }
    let mut pos = FILE_HEADER_LEN;
    while pos < len {
        let header = match recovery::check_chunk(&*file, pos, len) {
            Ok(h) if h.chunk_id == walked.next_offset => h,
            Ok(h) => {
                out.find(
                    Severity::Damaged,
                    &path,
                    format!(
                        "chunk at byte {pos} has id {}, expected {}",
                        h.chunk_id, walked.next_offset
                    ),
                );
                break;
            }
            Err(reason) => {
                // In the last segment a torn tail, which recovery cuts, unless a valid chunk
                // follows (corruption in the middle, which recovery refuses to cut).
                let torn = is_last
                    && recovery::check_not_mid_corruption(
                        &*file,
                        pos,
                        len,
                        walked.next_offset,
                        &path,
                    )
                    .is_ok();
                let severity = if torn {
                    Severity::Repairable
                } else {
                    Severity::Damaged
                };
                out.find(
                    severity,
                    &path,
                    format!(
                        "invalid chunk at byte {pos} ({reason}); {} bytes from there",
                        len - pos
                    ),
                );
                break;
            }
        };
        if let Some(r) = recovery::record_of(&header, pos) {
            walked.records.push(r);
        }
        walked.chunks += 1;
        walked.next_offset = header.next_offset();
        pos += header.disk_len();
    }
    out.chunks += walked.chunks;
    verify_index(storage, dir, id, &walked, out)?;
    Ok(walked)
}

fn verify_index(
    storage: &dyn Storage,
    dir: &Path,
    id: u64,
    walked: &Walked,
    out: &mut Verified,
) -> Result<()> {
    let path = index_path(dir, id);
    let Some(records) = recovery::read_records(storage, &path)? else {
        out.find(
            Severity::Repairable,
            &path,
            "missing or bad header (rebuilt at start)",
        );
        return Ok(());
    };
    for (i, (r, chunk)) in records.iter().zip(&walked.records).enumerate() {
        if r != chunk {
            out.find(
                Severity::Repairable,
                &path,
                format!("record {i} does not match its chunk ({r:?} vs {chunk:?})"),
            );
            return Ok(());
        }
    }
    if records.len() != walked.records.len() {
        out.find(
            Severity::Repairable,
            &path,
            format!(
                "{} records for {} chunks",
                records.len(),
                walked.records.len()
            ),
        );
    }
    Ok(())
}
