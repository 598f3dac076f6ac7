//! Startup recovery: reopen a log directory, repair a torn tail, rebuild missing indexes, and
//! rebuild tracking from the last segment.
//!
//! Rules (also in docs/log-format.md):
//! * Index files without a segment are orphans and are deleted.
//! * Sealed segments are trusted, as osiris trusts them; a missing or empty index is rebuilt
//!   by scanning the segment.
//! * In the last segment, index records past the end of the segment, out of order, or pointing
//!   at a chunk that is incomplete or fails its CRC are dropped, newest first; chunks after the
//!   last indexed one that are complete and valid are indexed; everything after the last valid
//!   chunk is truncated.
//! * If an invalid chunk is followed by a valid one, this is not a torn write but corruption in
//!   the middle: recovery stops with [`LogError::Corrupt`] instead of discarding good data.
//! * A chunk that cannot be read is neither valid nor invalid: recovery stops with the I/O
//!   error ([`BadChunk::Unreadable`]) and cuts nothing.
//! * A last segment left empty (a crash right after a roll) is deleted when older segments
//!   exist, so that tracking is read from the segment that really holds it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use brook_protocol::chunk::{self, ChunkHeader, ChunkType, HEADER_LEN};
use brook_storage::{File, OpenMode, Storage};

use crate::error::{LogError, Result};
use crate::format::{
    FILE_HEADER_LEN, FileKind, INDEX_HEADER, INDEX_RECORD_LEN, IndexFile, IndexRecord,
    SEGMENT_HEADER, index_path, parse_file_name, segment_path,
};
use crate::reader::{Position, SegmentInfo};
use crate::tracking::Tracking;

/// What recovery repaired. Empty when the log was closed cleanly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes cut from the end of the last segment (a torn or invalid tail).
    pub truncated_bytes: u64,
    /// Index records dropped because they pointed at missing or invalid chunks.
    pub dropped_index_records: u64,
    /// Valid chunks found after the last index record and indexed.
    pub indexed_chunks: u64,
    /// Segments whose index was missing or unreadable and was rebuilt.
    pub rebuilt_indexes: Vec<u64>,
    /// Files deleted: orphan indexes, empty trailing segments.
    pub removed_files: Vec<PathBuf>,
    /// Tracking records that could not be parsed (reported, skipped).
    pub bad_tracking_chunks: Vec<u64>,
}

impl Recovery {
    pub fn is_clean(&self) -> bool {
        *self == Recovery::default()
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return write!(f, "clean");
        }
        write!(
            f,
            "truncated {} bytes, dropped {} index records, indexed {} chunks",
            self.truncated_bytes, self.dropped_index_records, self.indexed_chunks
        )?;
        if !self.rebuilt_indexes.is_empty() {
            write!(
                f,
                ", rebuilt indexes of segments {:?}",
                self.rebuilt_indexes
            )?;
        }
        if !self.removed_files.is_empty() {
            write!(f, ", removed {:?}", self.removed_files)?;
        }
        if !self.bad_tracking_chunks.is_empty() {
            write!(
                f,
                ", unreadable tracking in chunks {:?}",
                self.bad_tracking_chunks
            )?;
        }
        Ok(())
    }
}

pub(crate) struct Recovered {
    pub segments: Vec<SegmentInfo>,
    pub last_user_chunk: Option<Position>,
    pub last_timestamp: i64,
    pub tracking: Tracking,
    pub report: Recovery,
}

pub(crate) fn recover(storage: &dyn Storage, dir: &Path) -> Result<Recovered> {
    let mut report = Recovery::default();
    let mut files: BTreeMap<u64, (bool, bool)> = BTreeMap::new();
    for entry in storage.read_dir(dir).map_err(LogError::io(dir))? {
        let Some((id, kind)) = parse_file_name(&entry.name) else {
            continue;
        };
        let e = files.entry(id).or_default();
        match kind {
            FileKind::Segment => e.0 = true,
            FileKind::Index => e.1 = true,
        }
    }
    let mut ids = Vec::new();
    for (id, (has_segment, has_index)) in files {
        if has_segment {
            ids.push(id);
        } else if has_index {
            remove(storage, &index_path(dir, id), &mut report)?;
        }
    }
    let fs = Fs { storage, dir };

    let mut last_records = Vec::new();
    let mut last_info = None;
    while let Some(&id) = ids.last() {
        let (info, records) = recover_tail(&fs, id, &mut report)?;
        if info.chunks == 0 && ids.len() > 1 {
            remove(storage, &index_path(dir, id), &mut report)?;
            remove(storage, &segment_path(dir, id), &mut report)?;
            ids.pop();
            continue;
        }
        last_records = records;
        last_info = Some(info);
        break;
    }
    let Some(last_info) = last_info else {
        return Ok(Recovered {
            segments: Vec::new(),
            last_user_chunk: None,
            last_timestamp: 0,
            tracking: Tracking::default(),
            report,
        });
    };

    let mut segments = Vec::with_capacity(ids.len());
    for &id in &ids[..ids.len() - 1] {
        segments.push(load_sealed(&fs, id, &mut report)?);
    }
    segments.push(last_info);
    for pair in segments.windows(2) {
        if let [a, b] = pair
            && a.next_offset != b.first_chunk_id
        {
            tracing::warn!(
                dir = %dir.display(),
                "gap between segments: {} ends at offset {}, {} starts at {}",
                a.first_chunk_id, a.next_offset, b.first_chunk_id, b.first_chunk_id
            );
        }
    }

    let tracking = recover_tracking(&fs, &segments, &last_records, &mut report)?;
    let last_user_chunk = find_last_user_chunk(&fs, &segments, &last_records)?;
    let last_timestamp = segments
        .iter()
        .rev()
        .find_map(|s| s.last_timestamp)
        .unwrap_or(0);
    Ok(Recovered {
        segments,
        last_user_chunk,
        last_timestamp,
        tracking,
        report,
    })
}

/// The storage and the log directory recovery works on.
pub(crate) struct Fs<'a> {
    pub storage: &'a dyn Storage,
    pub dir: &'a Path,
}

fn remove(storage: &dyn Storage, path: &Path, report: &mut Recovery) -> Result<()> {
    storage.remove_file(path).map_err(LogError::io(path))?;
    report.removed_files.push(path.to_owned());
    Ok(())
}

/// Why the bytes at a position are not taken as a chunk.
#[derive(Debug)]
pub(crate) enum BadChunk {
    /// They are not a whole, valid chunk: a torn write, or corruption.
    Invalid(String),
    /// They could not be read. Nothing is known about them, so recovery must not cut them:
    /// the error stops the stream from opening instead.
    Unreadable(std::io::Error),
}

impl fmt::Display for BadChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadChunk::Invalid(reason) => f.write_str(reason),
            BadChunk::Unreadable(e) => write!(f, "unreadable: {e}"),
        }
    }
}

/// Reads and checks the chunk at `pos`: complete within `len` bytes, its data CRC-valid with
/// the entries the header counts, and its Bloom filter and trailer matching the header's side
/// check when it has one (a torn write can leave the data whole and the trailer, with the
/// publisher sequences, zeroed).
pub(crate) fn check_chunk(
    file: &dyn File,
    pos: u64,
    len: u64,
) -> std::result::Result<ChunkHeader, BadChunk> {
    let invalid = |e: &dyn fmt::Display| BadChunk::Invalid(e.to_string());
    if pos.saturating_add(HEADER_LEN as u64) > len {
        return Err(BadChunk::Invalid("truncated header".into()));
    }
    let mut hdr = [0u8; HEADER_LEN];
    file.read_exact_at(&mut hdr, pos)
        .map_err(BadChunk::Unreadable)?;
    let header = ChunkHeader::parse(&hdr).map_err(|e| invalid(&e))?;
    if pos.saturating_add(header.disk_len()) > len {
        return Err(BadChunk::Invalid("truncated chunk".into()));
    }
    // The length comes from disk, but was just checked against the file's size.
    let mut data = Vec::new();
    file.read_into(
        pos + HEADER_LEN as u64 + u64::from(header.bloom_size),
        header.data_len as usize,
        &mut data,
    )
    .map_err(BadChunk::Unreadable)?;
    // The CRC, and entries that add up to the header's counts: a torn tail can zero a
    // header's CRC and lengths together, which the CRC alone would take for an empty chunk.
    chunk::ChunkView {
        header,
        data: &data,
    }
    .verify()
    .map_err(|e| invalid(&e))?;
    if header.side_check != 0 {
        let data_at = pos + HEADER_LEN as u64;
        let mut bloom = Vec::new();
        file.read_into(data_at, usize::from(header.bloom_size), &mut bloom)
            .map_err(BadChunk::Unreadable)?;
        let mut trailer = Vec::new();
        let trailer_at = data_at + u64::from(header.bloom_size) + u64::from(header.data_len);
        file.read_into(trailer_at, header.trailer_len as usize, &mut trailer)
            .map_err(BadChunk::Unreadable)?;
        let check = chunk::side_check(&bloom, &trailer);
        if check != header.side_check {
            return Err(BadChunk::Invalid(format!(
                "trailer check {check:#08x} != {:#08x}",
                header.side_check
            )));
        }
    }
    Ok(header)
}

fn read_header(file: &dyn File, path: &Path, pos: u64) -> Result<ChunkHeader> {
    let mut hdr = [0u8; HEADER_LEN];
    file.read_exact_at(&mut hdr, pos)
        .map_err(LogError::io(path))?;
    ChunkHeader::parse(&hdr).map_err(|source| LogError::BadChunk {
        path: path.to_owned(),
        position: pos,
        source,
    })
}

/// The index record of a chunk; `None` past the 4 GiB an index position can address.
pub(crate) fn record_of(h: &ChunkHeader, pos: u64) -> Option<IndexRecord> {
    Some(IndexRecord {
        chunk_id: h.chunk_id,
        timestamp: h.timestamp,
        epoch: h.epoch,
        position: u32::try_from(pos).ok()?,
        chunk_type: h.chunk_type as u8,
    })
}

/// Scans valid chunks from `pos` on, each with the expected chunk id.
/// Indexes the valid chunks from `pos` on; returns where they end and the next offset. A read
/// error is an error, never the end of the valid chunks.
fn scan(
    file: &dyn File,
    path: &Path,
    mut pos: u64,
    len: u64,
    mut expected: u64,
    out: &mut Vec<IndexRecord>,
) -> Result<(u64, u64)> {
    loop {
        let h = match check_chunk(file, pos, len) {
            Ok(h) => h,
            Err(BadChunk::Invalid(_)) => break,
            Err(BadChunk::Unreadable(e)) => return Err(LogError::io(path)(e)),
        };
        let Some(record) = record_of(&h, pos).filter(|_| h.chunk_id == expected) else {
            break;
        };
        out.push(record);
        pos += h.disk_len();
        expected = h.next_offset();
    }
    Ok((pos, expected))
}

pub(crate) fn read_records(storage: &dyn Storage, path: &Path) -> Result<Option<Vec<IndexRecord>>> {
    let bytes = match brook_storage::read(storage, path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(path)(e)),
    };
    if bytes.get(..FILE_HEADER_LEN as usize) != Some(&INDEX_HEADER[..]) {
        return Ok(None);
    }
    Ok(Some(
        bytes[FILE_HEADER_LEN as usize..]
            .chunks_exact(INDEX_RECORD_LEN as usize)
            .filter_map(|c| c.try_into().ok().map(IndexRecord::parse))
            .collect(),
    ))
}

/// Replaces an index atomically: a crash while rebuilding leaves the old one or the new one,
/// never a short index that a later recovery would trust.
fn write_index(fs: &Fs<'_>, id: u64, records: &[IndexRecord]) -> Result<()> {
    let mut bytes =
        Vec::with_capacity(FILE_HEADER_LEN as usize + records.len() * INDEX_RECORD_LEN as usize);
    bytes.extend_from_slice(&INDEX_HEADER);
    for r in records {
        bytes.extend_from_slice(&r.to_bytes());
    }
    let path = index_path(fs.dir, id);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    brook_storage::write_atomically(fs.storage, fs.dir, &name, &bytes).map_err(LogError::io(&path))
}

fn open_segment(fs: &Fs<'_>, path: &Path, writable: bool) -> Result<(Box<dyn File>, u64)> {
    let mode = if writable {
        OpenMode::Append
    } else {
        OpenMode::Read
    };
    let file = fs.storage.open(path, mode).map_err(LogError::io(path))?;
    let len = file.len().map_err(LogError::io(path))?;
    Ok((file, len))
}

/// A segment's numbers from its index: how many chunks, and its last record.
fn info_from(
    first_chunk_id: u64,
    (chunks, last): (u64, Option<&IndexRecord>),
    size: u64,
    next_offset: u64,
) -> SegmentInfo {
    SegmentInfo {
        first_chunk_id,
        chunks,
        size,
        last_chunk_id: last.map(|r| r.chunk_id),
        last_timestamp: last.map(|r| r.timestamp),
        next_offset,
    }
}

fn count_and_last(records: &[IndexRecord]) -> (u64, Option<&IndexRecord>) {
    (records.len() as u64, records.last())
}

/// How many records an index holds and its last one, reading only the header and that record:
/// a sealed segment's index can be megabytes, and a restart must not take longer as the log
/// grows (issue #12). `None` where [`read_records`] finds no index, or an empty one.
fn read_last_record(storage: &dyn Storage, path: &Path) -> Result<Option<(u64, IndexRecord)>> {
    let file = match storage.open(path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(path)(e)),
    };
    let len = file.len().map_err(LogError::io(path))?;
    let count = len.saturating_sub(FILE_HEADER_LEN) / INDEX_RECORD_LEN;
    let mut header = [0u8; FILE_HEADER_LEN as usize];
    if count == 0 {
        return Ok(None);
    }
    file.read_exact_at(&mut header, 0)
        .map_err(LogError::io(path))?;
    if header != INDEX_HEADER {
        return Ok(None);
    }
    let mut record = [0u8; INDEX_RECORD_LEN as usize];
    let at = FILE_HEADER_LEN + (count - 1) * INDEX_RECORD_LEN;
    file.read_exact_at(&mut record, at)
        .map_err(LogError::io(path))?;
    Ok(Some((count, IndexRecord::parse(&record))))
}

/// Repairs the last segment; returns its info and index records.
fn recover_tail(
    fs: &Fs<'_>,
    id: u64,
    report: &mut Recovery,
) -> Result<(SegmentInfo, Vec<IndexRecord>)> {
    let seg_path = segment_path(fs.dir, id);
    let idx_path = index_path(fs.dir, id);
    let (mut file, len) = open_segment(fs, &seg_path, true)?;
    if len < FILE_HEADER_LEN {
        // Torn while being created: start it again.
        file.set_len(0).map_err(LogError::io(&seg_path))?;
        file.append(&[&SEGMENT_HEADER])
            .map_err(LogError::io(&seg_path))?;
        file.sync_data().map_err(LogError::io(&seg_path))?;
        write_index(fs, id, &[])?;
        report.truncated_bytes += len;
        return Ok((SegmentInfo::empty(id), Vec::new()));
    }
    check_segment_header(&*file, &seg_path)?;

    let loaded = read_records(fs.storage, &idx_path)?;
    let had_index = loaded.is_some();
    let loaded = loaded.unwrap_or_default();
    let loaded_len = loaded.len();
    // Keep the well-ordered prefix that points inside the segment.
    let mut records: Vec<IndexRecord> = Vec::with_capacity(loaded.len());
    for r in loaded {
        let ordered = records
            .last()
            .is_none_or(|p| r.chunk_id > p.chunk_id && r.position > p.position);
        if r.is_zero()
            || !ordered
            || u64::from(r.position) < FILE_HEADER_LEN
            || u64::from(r.position) >= len
        {
            break;
        }
        records.push(r);
    }
    // Newest first, drop records whose chunk is not whole and valid.
    let mut tail = None;
    while let Some(r) = records.last() {
        match check_chunk(&*file, u64::from(r.position), len) {
            Ok(h) if h.chunk_id == r.chunk_id => {
                tail = Some((u64::from(r.position) + h.disk_len(), h.next_offset()));
                break;
            }
            Err(BadChunk::Unreadable(e)) => return Err(LogError::io(&seg_path)(e)),
            Ok(_) | Err(BadChunk::Invalid(_)) => {
                records.pop();
            }
        }
    }
    let dropped = (loaded_len - records.len()) as u64;
    let indexed = records.len();
    let (start, expected) = tail.unwrap_or((FILE_HEADER_LEN, id));
    let (end, next_offset) = scan(&*file, &seg_path, start, len, expected, &mut records)?;
    let added = (records.len() - indexed) as u64;

    if end < len {
        check_not_mid_corruption(&*file, end, len, next_offset, &seg_path)?;
        tracing::warn!(
            segment = %seg_path.display(),
            "truncating {} bytes of torn or invalid tail at byte {end}",
            len - end
        );
        file.set_len(end).map_err(LogError::io(&seg_path))?;
        file.sync_data().map_err(LogError::io(&seg_path))?;
        report.truncated_bytes += len - end;
    }
    if dropped > 0 || added > 0 || !had_index {
        write_index(fs, id, &records)?;
        if !had_index {
            report.rebuilt_indexes.push(id);
        }
    }
    report.dropped_index_records += dropped;
    report.indexed_chunks += if had_index { added } else { 0 };
    Ok((
        info_from(id, count_and_last(&records), end, next_offset),
        records,
    ))
}

/// An invalid chunk at `pos` followed by a valid chunk is corruption, not a torn write.
pub(crate) fn check_not_mid_corruption(
    file: &dyn File,
    pos: u64,
    len: u64,
    next_offset: u64,
    path: &Path,
) -> Result<()> {
    let mut hdr = [0u8; HEADER_LEN];
    if pos.saturating_add(HEADER_LEN as u64) > len {
        return Ok(());
    }
    file.read_exact_at(&mut hdr, pos)
        .map_err(LogError::io(path))?;
    let Ok(h) = ChunkHeader::parse(&hdr) else {
        return Ok(());
    };
    let after = pos.saturating_add(h.disk_len());
    let reason = match check_chunk(file, pos, len) {
        Err(BadChunk::Unreadable(e)) => return Err(LogError::io(path)(e)),
        Err(BadChunk::Invalid(reason)) => reason,
        Ok(h) => format!(
            "unexpected chunk id {} (expected {next_offset})",
            h.chunk_id
        ),
    };
    match check_chunk(file, after, len) {
        Ok(next) if next.chunk_id == h.next_offset() => Err(LogError::Corrupt {
            path: path.to_owned(),
            position: pos,
            reason,
        }),
        Err(BadChunk::Unreadable(e)) => Err(LogError::io(path)(e)),
        Ok(_) | Err(BadChunk::Invalid(_)) => Ok(()),
    }
}

pub(crate) fn check_segment_header(file: &dyn File, path: &Path) -> Result<()> {
    let mut hdr = [0u8; FILE_HEADER_LEN as usize];
    file.read_exact_at(&mut hdr, 0)
        .map_err(LogError::io(path))?;
    if hdr != SEGMENT_HEADER {
        return Err(LogError::BadFileHeader {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// A sealed segment: trusted, but its index is rebuilt if missing or empty.
fn load_sealed(fs: &Fs<'_>, id: u64, report: &mut Recovery) -> Result<SegmentInfo> {
    let seg_path = segment_path(fs.dir, id);
    let (file, len) = open_segment(fs, &seg_path, false)?;
    check_segment_header(&*file, &seg_path)?;
    let idx_path = index_path(fs.dir, id);
    if let Some((count, last)) = read_last_record(fs.storage, &idx_path)? {
        let h = read_header(&*file, &seg_path, u64::from(last.position))?;
        return Ok(info_from(id, (count, Some(&last)), len, h.next_offset()));
    }
    let mut records = Vec::new();
    let (end, next_offset) = scan(&*file, &seg_path, FILE_HEADER_LEN, len, id, &mut records)?;
    if end < len {
        return Err(LogError::Corrupt {
            path: seg_path,
            position: end,
            reason: "invalid chunk in a sealed segment whose index is missing".into(),
        });
    }
    write_index(fs, id, &records)?;
    report.rebuilt_indexes.push(id);
    Ok(info_from(id, count_and_last(&records), len, next_offset))
}

/// Bytes before a chunk's header prefetched with it: where the previous chunk's trailer (its
/// writers' sequences, usually a few dozen bytes) ends.
const PREFETCH_BEFORE: u64 = 4096;

/// Tracking = the last segment's snapshot, then its deltas and user-chunk trailers in order.
pub(crate) fn recover_tracking(
    fs: &Fs<'_>,
    segments: &[SegmentInfo],
    records: &[IndexRecord],
    report: &mut Recovery,
) -> Result<Tracking> {
    let mut tracking = Tracking::default();
    let Some(last) = segments.last() else {
        return Ok(tracking);
    };
    let path = segment_path(fs.dir, last.first_chunk_id);
    let (file, len) = open_segment(fs, &path, false)?;
    // The loop reads every chunk's header and the previous chunk's trailer, which lie side by
    // side; one read at a time, a full 500 MB segment took ~60 ms with a cold page cache
    // (~1,900 reads). Asking for all of them first lets the disk serve them together.
    for r in records {
        let pos = u64::from(r.position);
        file.prefetch(
            pos.saturating_sub(PREFETCH_BEFORE),
            PREFETCH_BEFORE + HEADER_LEN as u64,
        );
    }
    for r in records {
        let pos = u64::from(r.position);
        let h = read_header(&*file, &path, pos)?;
        // Sizes come from disk: never allocate for a chunk that does not fit the file.
        if pos.saturating_add(h.disk_len()) > len {
            return Err(LogError::BadChunk {
                path: path.clone(),
                position: pos,
                source: chunk::ChunkError::MalformedData(h.data_len as usize),
            });
        }
        let data_at = pos + HEADER_LEN as u64 + u64::from(h.bloom_size);
        let result = match h.chunk_type {
            ChunkType::User if h.trailer_len > 0 => {
                let mut trailer = Vec::new();
                file.read_into(
                    data_at + u64::from(h.data_len),
                    h.trailer_len as usize,
                    &mut trailer,
                )
                .map_err(LogError::io(&path))?;
                tracking.apply_deltas(h.chunk_id, &trailer)
            }
            ChunkType::User => Ok(()),
            kind => {
                let mut data = Vec::new();
                file.read_into(data_at, h.data_len as usize, &mut data)
                    .map_err(LogError::io(&path))?;
                // One simple entry holding the records.
                match chunk::entries(&data).next() {
                    Some(Ok(chunk::Entry::Simple(body))) if kind == ChunkType::TrackingSnapshot => {
                        tracking.load_snapshot(body)
                    }
                    Some(Ok(chunk::Entry::Simple(body))) => tracking.apply_deltas(h.chunk_id, body),
                    _ => Err(crate::tracking::MalformedTracking(0)),
                }
            }
        };
        if let Err(e) = result {
            tracing::error!(segment = %path.display(), chunk = h.chunk_id, "skipping tracking data: {e}");
            report.bad_tracking_chunks.push(h.chunk_id);
        }
    }
    Ok(tracking)
}

fn find_last_user_chunk(
    fs: &Fs<'_>,
    segments: &[SegmentInfo],
    last_records: &[IndexRecord],
) -> Result<Option<Position>> {
    let user = ChunkType::User as u8;
    let Some(last) = segments.last() else {
        return Ok(None);
    };
    if let Some(r) = last_records.iter().rev().find(|r| r.chunk_type == user) {
        return Ok(Some(Position {
            segment: last.first_chunk_id,
            file_pos: u64::from(r.position),
            chunk_id: r.chunk_id,
        }));
    }
    for seg in segments.iter().rev().skip(1) {
        let index = IndexFile::open(fs.storage, index_path(fs.dir, seg.first_chunk_id))?;
        for i in (0..seg.chunks).rev() {
            let r = index.record(i)?;
            if r.chunk_type == user {
                return Ok(Some(Position {
                    segment: seg.first_chunk_id,
                    file_pos: u64::from(r.position),
                    chunk_id: r.chunk_id,
                }));
            }
        }
    }
    Ok(None)
}
