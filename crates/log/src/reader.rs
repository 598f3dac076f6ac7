//! Reading: offset-spec lookups through the index files, and cursors that hand out whole
//! chunks as slices of one read buffer.
//!
//! Readers never block the writer: they share only a small [`View`] of committed segment sizes
//! behind a lock held for microseconds, and read the files through their own handles. Only
//! committed bytes are ever read, so a reader never sees a chunk being written.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use brook_protocol::chunk::{ChunkHeader, ChunkType, HEADER_LEN};
use brook_storage::{File, OpenMode, SharedStorage};
use bytes::Bytes;

use crate::error::{LogError, Result};
use crate::format::{FILE_HEADER_LEN, IndexFile, index_path, segment_path};
use crate::tail::{Tail, TailWait};

/// What the writer publishes about one segment at commit time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentInfo {
    /// The file name: id of the first chunk written to it.
    pub first_chunk_id: u64,
    /// Chunks (= index records).
    pub chunks: u64,
    /// File length in bytes, header included.
    pub size: u64,
    pub last_chunk_id: Option<u64>,
    pub last_timestamp: Option<i64>,
    /// The offset after the segment's last record.
    pub next_offset: u64,
}

impl SegmentInfo {
    pub(crate) fn empty(first_chunk_id: u64) -> Self {
        Self {
            first_chunk_id,
            chunks: 0,
            size: FILE_HEADER_LEN,
            last_chunk_id: None,
            last_timestamp: None,
            next_offset: first_chunk_id,
        }
    }
}

/// Where a chunk starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// First chunk id of the segment file.
    pub segment: u64,
    pub file_pos: u64,
    pub chunk_id: u64,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct View {
    pub segments: Vec<SegmentInfo>,
    pub last_user_chunk: Option<Position>,
    pub deleted: bool,
}

impl View {
    pub(crate) fn next_offset(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.next_offset)
    }

    fn first_chunk_id(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| s.chunks > 0)
            .map(|s| s.first_chunk_id)
    }

    pub(crate) fn committed_chunk_id(&self) -> Option<u64> {
        self.segments.iter().rev().find_map(|s| s.last_chunk_id)
    }

    fn tail(&self) -> Option<Position> {
        self.segments.last().map(|s| Position {
            segment: s.first_chunk_id,
            file_pos: s.size,
            chunk_id: s.next_offset,
        })
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub storage: SharedStorage,
    pub dir: PathBuf,
    view: RwLock<View>,
    /// The newest committed chunks, for readers at the end (see `tail.rs`).
    pub tail: Tail,
    /// Id of the last chunk written, committed or not; -1 before the first.
    last_written: AtomicI64,
    /// The offset after the last chunk written, committed or not.
    written_end: AtomicU64,
    /// What the writer did since the log was opened, for metrics.
    pub activity: Activity,
}

/// Counters of a log's writes and deletions since it was opened (monotonic, for metrics).
#[derive(Debug, Default)]
pub(crate) struct Activity {
    pub chunks_written: AtomicU64,
    pub records_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub segments_deleted: AtomicU64,
    pub bytes_deleted: AtomicU64,
}

impl Activity {
    fn snapshot(&self) -> LogActivity {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LogActivity {
            chunks_written: get(&self.chunks_written),
            records_written: get(&self.records_written),
            bytes_written: get(&self.bytes_written),
            segments_deleted: get(&self.segments_deleted),
            bytes_deleted: get(&self.bytes_deleted),
        }
    }
}

/// A log's write and retention counters since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogActivity {
    /// Chunks appended (user and tracking).
    pub chunks_written: u64,
    /// Records in them (a sub-entry batch counts its messages).
    pub records_written: u64,
    pub bytes_written: u64,
    /// Segments removed by retention, and their bytes.
    pub segments_deleted: u64,
    pub bytes_deleted: u64,
}

impl Shared {
    pub(crate) fn new(storage: SharedStorage, dir: PathBuf, view: View) -> Self {
        Self {
            storage,
            dir,
            last_written: AtomicI64::new(
                view.committed_chunk_id()
                    .and_then(|id| i64::try_from(id).ok())
                    .unwrap_or(-1),
            ),
            written_end: AtomicU64::new(view.next_offset()),
            view: RwLock::new(view),
            tail: Tail::default(),
            activity: Activity::default(),
        }
    }

    /// The last chunk written is `chunk_id`; the next one starts at `end`.
    pub(crate) fn set_last_written(&self, chunk_id: u64, end: u64) {
        let id = i64::try_from(chunk_id).unwrap_or(i64::MAX);
        self.last_written.store(id, Ordering::Release);
        self.written_end.store(end, Ordering::Release);
    }

    /// No chunk written yet; the next one starts at `end` (a replica started again).
    pub(crate) fn reset_written(&self, end: u64) {
        self.last_written.store(-1, Ordering::Release);
        self.written_end.store(end, Ordering::Release);
    }

    fn last_written(&self) -> Option<u64> {
        u64::try_from(self.last_written.load(Ordering::Acquire)).ok()
    }

    // A panic while holding the lock cannot leave the view half-updated in a way readers
    // could misuse (every update is a plain assignment), so poisoning is ignored.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A binary search over one segment's index.
enum Search {
    ChunkContaining(u64),
    FirstAtOrAfter(i64),
}

/// Where to attach a reader, with RabbitMQ's semantics (chunk-granular).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    /// The first retained chunk.
    First,
    /// The start of the last user chunk; `Next` if there is none.
    Last,
    /// After the last chunk: only what is written from now on.
    Next,
    /// The chunk containing this offset; clamped to the first chunk, and `Next` past the end.
    Offset(u64),
    /// The first chunk written at or after this time (ms since the epoch); `Next` if none.
    Timestamp(i64),
}

/// Committed-state numbers for StreamStats and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// First retained chunk id; `None` when the log holds no chunk.
    pub first_chunk_id: Option<u64>,
    /// Last committed chunk id; `None` when nothing was committed.
    pub committed_chunk_id: Option<u64>,
    /// Last chunk written, committed or not (osiris's `last_chunk_id`); `None` when empty.
    pub last_chunk_id: Option<u64>,
    /// The offset after the last committed chunk (readers see up to it).
    pub next_offset: u64,
    /// The offset the next chunk will get: after the last chunk written, committed or not
    /// (osiris's `offset` counter is the one before it).
    pub written_end: u64,
    /// Bytes on disk, all segments.
    pub bytes: u64,
    pub segments: usize,
    /// Chunks retained, all segments.
    pub chunks: u64,
    /// Writes and retention since the log was opened.
    pub activity: LogActivity,
}

/// A cheap, cloneable handle for lookups and cursors.
#[derive(Debug, Clone)]
pub struct LogReader {
    pub(crate) shared: Arc<Shared>,
}

impl LogReader {
    pub fn stats(&self) -> LogStats {
        let view = self.shared.read();
        LogStats {
            first_chunk_id: view.first_chunk_id(),
            committed_chunk_id: view.committed_chunk_id(),
            last_chunk_id: self.shared.last_written(),
            next_offset: view.next_offset(),
            written_end: self.shared.written_end.load(Ordering::Acquire),
            bytes: view.segments.iter().map(|s| s.size).sum(),
            segments: view.segments.len(),
            chunks: view.segments.iter().map(|s| s.chunks).sum(),
            activity: self.shared.activity.snapshot(),
        }
    }

    /// Counts the caller as a reader waiting at the end of the log while the guard lives:
    /// the writer then keeps the chunks it writes in memory for it (see `tail.rs`).
    pub fn wait_at_tail(&self) -> TailWait<'_> {
        self.shared.tail.wait()
    }

    /// The last committed chunk id, cheaply (it goes into every Deliver v2).
    pub fn committed_chunk_id(&self) -> Option<u64> {
        self.shared.read().committed_chunk_id()
    }

    /// Resolves a seek to the chunk a reader would attach at.
    pub fn resolve(&self, seek: Seek) -> Result<Position> {
        // Retention may delete an index file between reading the view and opening the file;
        // the next attempt sees the new view.
        let mut attempts = 0;
        loop {
            match self.try_resolve(seek) {
                Err(LogError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && attempts < 3 =>
                {
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    fn try_resolve(&self, seek: Seek) -> Result<Position> {
        let (segment, chunks, search) = {
            let view = self.shared.read();
            if view.deleted {
                return Err(LogError::Deleted);
            }
            let tail = view.tail().unwrap_or(Position {
                segment: 0,
                file_pos: FILE_HEADER_LEN,
                chunk_id: 0,
            });
            match seek {
                Seek::Next => return Ok(tail),
                Seek::First => {
                    return Ok(view.segments.first().map_or(tail, |s| Position {
                        segment: s.first_chunk_id,
                        file_pos: FILE_HEADER_LEN,
                        chunk_id: s.first_chunk_id,
                    }));
                }
                Seek::Last => {
                    let first = view.segments.first().map_or(0, |s| s.first_chunk_id);
                    return Ok(view
                        .last_user_chunk
                        .filter(|p| p.segment >= first)
                        .unwrap_or(tail));
                }
                Seek::Offset(n) => {
                    let Some(first) = view.first_chunk_id() else {
                        return Ok(tail);
                    };
                    let n = n.max(first);
                    if n >= view.next_offset() {
                        return Ok(tail);
                    }
                    // The last segment starting at or before n; it holds n because
                    // first <= n < next.
                    let i = view.segments.partition_point(|s| s.first_chunk_id <= n);
                    let Some(seg) = view.segments.get(i.saturating_sub(1)) else {
                        return Ok(tail);
                    };
                    (seg.first_chunk_id, seg.chunks, Search::ChunkContaining(n))
                }
                Seek::Timestamp(t) => {
                    let Some(seg) = view
                        .segments
                        .iter()
                        .find(|s| s.last_timestamp.is_some_and(|last| last >= t))
                    else {
                        return Ok(tail);
                    };
                    (seg.first_chunk_id, seg.chunks, Search::FirstAtOrAfter(t))
                }
            }
        };
        let index = IndexFile::open(&*self.shared.storage, index_path(&self.shared.dir, segment))?;
        let i = match search {
            // The first record past n, minus one: the chunk containing n.
            Search::ChunkContaining(n) => index
                .partition_point(chunks, |r| r.chunk_id <= n)?
                .saturating_sub(1),
            Search::FirstAtOrAfter(t) => index.partition_point(chunks, |r| r.timestamp < t)?,
        };
        let record = index.record(i.min(chunks.saturating_sub(1)))?;
        Ok(Position {
            segment,
            file_pos: u64::from(record.position),
            chunk_id: record.chunk_id,
        })
    }

    /// A cursor attached where `seek` resolves.
    pub fn cursor(&self, seek: Seek) -> Result<Cursor> {
        let position = self.resolve(seek)?;
        Ok(self.cursor_at(position))
    }

    pub fn cursor_at(&self, position: Position) -> Cursor {
        Cursor {
            shared: self.shared.clone(),
            position,
            file: None,
            read_segment_start: false,
        }
    }
}

/// One chunk as stored: header, Bloom filter, data, trailer, all slices of one read buffer.
#[derive(Debug, Clone)]
pub struct ReadChunk {
    pub header: ChunkHeader,
    raw: Bytes,
}

impl ReadChunk {
    pub(crate) fn new(header: ChunkHeader, raw: Bytes) -> Self {
        Self { header, raw }
    }

    /// A chunk from its stored bytes (a replica receiving the leader's); only the header is
    /// checked here, [`crate::Log::append_raw`] checks the rest.
    pub fn parse(raw: Bytes) -> std::result::Result<ReadChunk, brook_protocol::chunk::ChunkError> {
        let header = ChunkHeader::parse(&raw)?;
        Ok(ReadChunk { header, raw })
    }

    /// The chunk exactly as stored: header, Bloom filter, data, trailer.
    pub fn raw(&self) -> Bytes {
        self.raw.clone()
    }

    /// Bytes as stored: header, Bloom filter, data, trailer.
    pub fn raw_len(&self) -> usize {
        self.raw.len()
    }

    fn data_start(&self) -> usize {
        HEADER_LEN + usize::from(self.header.bloom_size)
    }

    /// The 48 header bytes exactly as stored.
    pub fn header_bytes(&self) -> Bytes {
        self.raw.slice(..HEADER_LEN)
    }

    pub fn bloom(&self) -> Bytes {
        self.raw.slice(HEADER_LEN..self.data_start())
    }

    pub fn data(&self) -> Bytes {
        let start = self.data_start();
        self.raw.slice(start..start + self.header.data_len as usize)
    }

    pub fn trailer(&self) -> Bytes {
        self.raw
            .slice(self.data_start() + self.header.data_len as usize..)
    }

    /// What a Deliver frame carries: header + data. One slice when there is no Bloom filter.
    pub fn wire_parts(&self) -> (Bytes, Option<Bytes>) {
        if self.header.bloom_size == 0 {
            (self.raw.slice(..self.header.wire_len()), None)
        } else {
            (self.header_bytes(), Some(self.data()))
        }
    }

    pub fn is_user(&self) -> bool {
        self.header.chunk_type == ChunkType::User
    }
}

/// Reads committed chunks forward from a position, across segments.
#[derive(Debug)]
pub struct Cursor {
    shared: Arc<Shared>,
    position: Position,
    /// Open handle on the current segment.
    file: Option<Box<dyn File>>,
    /// The last [`Cursor::read`] began at the start of a segment.
    read_segment_start: bool,
}

impl Cursor {
    /// The id the next chunk read will have (or has, once written).
    pub fn next_chunk_id(&self) -> u64 {
        self.position.chunk_id
    }

    fn move_to(&mut self, segment: u64) {
        self.position = Position {
            segment,
            file_pos: FILE_HEADER_LEN,
            chunk_id: segment,
        };
        self.file = None;
    }

    /// The committed end of the cursor's segment, moving to the next segment first if the
    /// cursor is at the end of its own. `None`: nothing committed to read.
    fn committed_end(&mut self) -> Result<Option<u64>> {
        loop {
            let view = self.shared.read();
            if view.deleted {
                return Err(LogError::Deleted);
            }
            let segs = &view.segments;
            let next = match segs.binary_search_by_key(&self.position.segment, |s| s.first_chunk_id)
            {
                Ok(i) => {
                    if self.position.file_pos < segs[i].size {
                        return Ok(Some(segs[i].size));
                    }
                    match segs.get(i + 1) {
                        Some(next) => next.first_chunk_id,
                        None => return Ok(None),
                    }
                }
                // Retention deleted the segment: continue from the first one still there, or
                // from the next one if the cursor was past the deleted data anyway.
                Err(i) => match segs.get(i).or(segs.last()) {
                    Some(seg) => seg.first_chunk_id,
                    None => return Ok(None),
                },
            };
            drop(view);
            self.move_to(next);
        }
    }

    /// Appends to `out` the chunks after the cursor that the writer kept in memory (see
    /// `tail.rs`), about `max_bytes`, without any I/O. Returns how many; 0 when the next chunk
    /// is not kept (read it with [`Cursor::read`]).
    pub fn read_kept(&mut self, max_bytes: usize, out: &mut Vec<ReadChunk>) -> usize {
        let before = out.len();
        if let Some(next) = self.shared.tail.read(self.position, max_bytes, out) {
            self.position = next;
        }
        out.len() - before
    }

    /// As [`Cursor::read`], for a replica: each chunk with whether it opened its segment.
    pub fn read_shipped(
        &mut self,
        max_bytes: usize,
        out: &mut Vec<crate::Shipped>,
    ) -> Result<usize> {
        let mut chunks = Vec::new();
        let n = self.read(max_bytes, &mut chunks)?;
        let first = self.read_segment_start;
        out.extend(
            chunks
                .into_iter()
                .enumerate()
                .map(|(i, chunk)| crate::Shipped {
                    chunk,
                    starts_segment: first && i == 0,
                }),
        );
        Ok(n)
    }

    /// Appends to `out` the committed chunks after the cursor, reading about `max_bytes` (always
    /// at least one whole chunk if one is available). Returns how many were added; 0 means the
    /// cursor is at the committed end.
    pub fn read(&mut self, max_bytes: usize, out: &mut Vec<ReadChunk>) -> Result<usize> {
        let Some(limit) = self.committed_end()? else {
            return Ok(0);
        };
        let path = segment_path(&self.shared.dir, self.position.segment);
        if self.file.is_none() {
            match self.shared.storage.open(&path, OpenMode::Read) {
                Ok(f) => self.file = Some(f),
                // Deleted by retention after we looked: the view now says where to go.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return self.read(max_bytes, out);
                }
                Err(e) => return Err(LogError::io(&path)(e)),
            }
        }
        let Some(file) = self.file.as_ref() else {
            return Ok(0);
        };
        let start = self.position.file_pos;
        self.read_segment_start = start == FILE_HEADER_LEN;
        let available = limit - start;
        let mut want = available.min(max_bytes.max(HEADER_LEN) as u64);
        let mut buf = Vec::new();
        file.read_into(start, want as usize, &mut buf)
            .map_err(LogError::io(&path))?;
        let bad_chunk = |position, source| LogError::BadChunk {
            path: path.clone(),
            position,
            source,
        };
        // A first chunk larger than what was read: read the rest of it.
        let first = ChunkHeader::parse(&buf).map_err(|e| bad_chunk(start, e))?;
        if first.disk_len() > want {
            if first.disk_len() > available {
                return Err(bad_chunk(
                    start,
                    brook_protocol::chunk::ChunkError::MalformedData(available as usize),
                ));
            }
            file.read_into(start + want, (first.disk_len() - want) as usize, &mut buf)
                .map_err(LogError::io(&path))?;
            want = first.disk_len();
        }
        debug_assert_eq!(buf.len() as u64, want);

        let bytes = Bytes::from(buf);
        let mut pos = 0usize;
        let before = out.len();
        while let Some(rest) = bytes.get(pos..).filter(|r| r.len() >= HEADER_LEN) {
            let header = ChunkHeader::parse(rest).map_err(|e| bad_chunk(start + pos as u64, e))?;
            let len = header.disk_len() as usize;
            if len > rest.len() {
                break;
            }
            out.push(ReadChunk {
                header,
                raw: bytes.slice(pos..pos + len),
            });
            pos += len;
            self.position.chunk_id = header.next_offset();
        }
        self.position.file_pos += pos as u64;
        Ok(out.len() - before)
    }
}
