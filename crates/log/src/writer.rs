//! The writing side of a log: appends chunks, rolls segments, and publishes committed state to
//! readers (retention: `retention.rs`; replication: `replication.rs`). One `Log` per stream, owned by that stream's writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use brook_protocol::chunk::{self, ChunkHeader, ChunkType};
use brook_storage::{File, OpenMode, SharedStorage, Storage};

use crate::error::{LogError, Result};
use crate::format::{
    FILE_HEADER_LEN, INDEX_HEADER, IndexRecord, MAX_SEGMENT_BYTES, SEGMENT_HEADER, index_path,
    segment_path, sync_dir,
};
use crate::reader::{LogReader, Position, ReadChunk, SegmentInfo, Shared, View};
use crate::recovery::{self, Recovery};
use crate::tracking::Tracking;

/// The leader epoch a log writes until told otherwise ([`Log::set_epoch`]): a single node
/// never changes it; RabbitMQ starts streams at 1 and clients ignore it.
pub const EPOCH: u64 = 1;

/// How a log lays itself out and what it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A new segment is started before a chunk is written once the current one has this many
    /// bytes (so a segment may exceed it by one chunk). RabbitMQ's default: 500,000,000.
    pub max_segment_bytes: u64,
    /// ...or this many chunks. osiris: 256,000.
    pub max_segment_chunks: u64,
    pub retention: Retention,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_segment_bytes: 500_000_000,
            max_segment_chunks: 256_000,
            retention: Retention::default(),
        }
    }
}

/// Retention limits, applied to whole segments, oldest first, never the active one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_bytes: Option<u64>,
    pub max_age: Option<Duration>,
}

/// A user chunk to append: the data section is the concatenation of osiris entries, exactly as
/// they arrived in Publish frames.
#[derive(Debug, Clone, Copy)]
pub struct UserChunk<'a> {
    pub data: &'a [u8],
    pub num_entries: u16,
    pub num_records: u32,
    /// Bloom filter bytes (empty when no entry had a filter value).
    pub bloom: &'a [u8],
    /// Publisher reference → last publishing id written in this chunk (deduplication).
    pub sequences: &'a [(&'a str, u64)],
}

/// One chunk to write: its type, counts, and the sections around its data.
struct Piece<'a> {
    chunk_type: ChunkType,
    num_entries: u16,
    num_records: u32,
    bloom: &'a [u8],
    data: &'a [&'a [u8]],
    trailer: &'a [u8],
}

impl Piece<'_> {
    fn data_len(&self) -> usize {
        self.data.iter().map(|d| d.len()).sum()
    }

    fn header(&self, chunk_id: u64, timestamp: i64, epoch: u64) -> ChunkHeader {
        let mut crc = crc32fast::Hasher::new();
        for d in self.data {
            crc.update(d);
        }
        ChunkHeader {
            chunk_type: self.chunk_type,
            num_entries: self.num_entries,
            num_records: self.num_records,
            timestamp,
            epoch,
            chunk_id,
            crc: crc.finalize(),
            data_len: self.data_len().min(u32::MAX as usize) as u32,
            trailer_len: self.trailer.len().min(u32::MAX as usize) as u32,
            bloom_size: self.bloom.len().min(255) as u8,
            side_check: chunk::side_check(self.bloom, self.trailer),
        }
    }
}

/// The writer of one stream's log.
#[derive(Debug)]
pub struct Log {
    pub(crate) storage: SharedStorage,
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) shared: Arc<Shared>,
    /// The writer's segment list; readers see it as of the last commit.
    pub(crate) segments: Vec<SegmentInfo>,
    /// The active segment and its index, opened for appending on the first write and closed
    /// again by [`Log::release_files`] once synced: an idle stream holds no descriptors, so
    /// tens of thousands of streams fit the open-files limit (issue #12).
    pub(crate) files: Option<ActiveFiles>,
    /// Written since the last successful sync (files may only be released when false).
    pub(crate) unsynced: bool,
    pub(crate) last_timestamp: i64,
    pub(crate) last_user_chunk: Option<Position>,
    pub(crate) tracking: Tracking,
    /// Appended since the last commit.
    pub(crate) uncommitted: bool,
    /// The segment list itself changed (roll), not only the active segment's numbers.
    pub(crate) segments_changed: bool,
    /// The active segment was started but its tracking snapshot is not written yet (the write
    /// failed): it is retried before anything else goes into the segment, because recovery
    /// reads tracking from the last segment only.
    pub(crate) needs_snapshot: bool,
    pub(crate) poisoned: bool,
    pub(crate) scratch: Vec<u8>,
    /// Copies of chunks written since the last commit, for readers at the tail.
    pub(crate) fresh: Vec<(Position, ReadChunk)>,
    /// Replication's state (`replication.rs`); inert on a single node.
    pub(crate) replication: crate::replication::State,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Log {
    /// Opens (or creates) the log in `dir`, repairing a torn tail. See [`Recovery`] for what
    /// was repaired.
    pub fn open(storage: SharedStorage, dir: &Path, config: LogConfig) -> Result<(Log, Recovery)> {
        storage.create_dir_all(dir).map_err(LogError::io(dir))?;
        let recovered = recovery::recover(&*storage, dir)?;
        let last = recovered
            .segments
            .last()
            .map_or(0, |s: &SegmentInfo| s.first_chunk_id);
        let mut segments = recovered.segments;
        if segments.is_empty() {
            segments.push(SegmentInfo::empty(0));
            create_segment_files(&*storage, dir, 0)?;
        } else {
            // Refuse to open a log whose active files cannot be appended to now, not at the
            // first publish; then close them until that publish.
            open_for_append(&*storage, dir, last)?;
        }
        let last_user_chunk = recovered.last_user_chunk;
        let view = View {
            segments: segments.clone(),
            last_user_chunk,
            deleted: false,
        };
        let log = Log {
            shared: Arc::new(Shared::new(storage.clone(), dir.to_owned(), view)),
            storage,
            dir: dir.to_owned(),
            config,
            segments,
            files: None,
            unsynced: false,
            last_timestamp: recovered.last_timestamp,
            last_user_chunk,
            tracking: recovered.tracking,
            uncommitted: false,
            segments_changed: false,
            needs_snapshot: false,
            poisoned: false,
            scratch: Vec::new(),
            fresh: Vec::new(),
            replication: Default::default(),
        };
        Ok((log, recovered.report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn reader(&self) -> LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }

    /// The offset the next chunk will get (written, not necessarily committed).
    pub fn next_offset(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.next_offset)
    }

    pub fn tracking(&self) -> &Tracking {
        &self.tracking
    }

    /// Stores a consumer offset: visible to [`Log::tracking`] at once, written with the next
    /// chunk (a user chunk's trailer, or [`Log::flush_tracking`]). Returns false if the
    /// reference is not storable (empty or over 255 bytes), as RabbitMQ silently ignores those.
    pub fn store_offset(&mut self, reference: &str, offset: u64) -> bool {
        self.tracking.store_offset(reference, offset)
    }

    /// Whether stored offsets are waiting to be written.
    pub fn has_pending_tracking(&self) -> bool {
        self.tracking.has_pending()
    }

    /// Appends a user chunk; pending tracking updates and the chunk's publisher sequences go
    /// into its trailer. Returns the chunk id. Not visible to readers until [`Log::commit`].
    pub fn append_user(&mut self, chunk: &UserChunk<'_>) -> Result<u64> {
        self.append_users(std::slice::from_ref(chunk))
    }

    /// Appends user chunks with one write to the segment and one to the index, all or
    /// nothing; pending tracking updates go into the first chunk's trailer, each chunk's
    /// publisher sequences into its own. Returns the first chunk's id. Not visible to readers
    /// until [`Log::commit`].
    pub fn append_users(&mut self, chunks: &[UserChunk<'_>]) -> Result<u64> {
        if chunks.is_empty() {
            return Ok(self.next_offset());
        }
        self.maybe_roll()?;
        let mut trailers = Vec::with_capacity(chunks.len());
        for (i, chunk) in chunks.iter().enumerate() {
            let mut trailer = Vec::new();
            if i == 0 {
                self.tracking.encode_deltas(chunk.sequences, &mut trailer);
            } else {
                self.tracking
                    .encode_sequences(chunk.sequences, &mut trailer);
            }
            trailers.push(trailer);
        }
        let datas: Vec<[&[u8]; 1]> = chunks.iter().map(|c| [c.data]).collect();
        let pieces: Vec<Piece<'_>> = chunks
            .iter()
            .zip(&trailers)
            .zip(&datas)
            .map(|((c, trailer), data)| Piece {
                chunk_type: ChunkType::User,
                num_entries: c.num_entries,
                num_records: c.num_records,
                bloom: c.bloom,
                data,
                trailer,
            })
            .collect();
        let first = self.write_chunks(&pieces)?;
        let mut chunk_id = first;
        for chunk in chunks {
            self.tracking.written(chunk_id, chunk.sequences);
            chunk_id = chunk_id.saturating_add(u64::from(chunk.num_records));
        }
        Ok(first)
    }

    /// Writes pending stored offsets as a tracking-delta chunk (which takes one offset, as in
    /// RabbitMQ). Returns its chunk id, or `None` if nothing was pending.
    pub fn flush_tracking(&mut self) -> Result<Option<u64>> {
        if !self.tracking.has_pending() {
            return Ok(None);
        }
        self.maybe_roll()?;
        let mut body = std::mem::take(&mut self.scratch);
        body.clear();
        self.tracking.encode_deltas(&[], &mut body);
        let result = self.write_tracking_chunk(ChunkType::TrackingDelta, &body);
        self.scratch = body;
        let chunk_id = result?;
        self.tracking.written(chunk_id, &[]);
        Ok(Some(chunk_id))
    }

    /// A tracking chunk holds one simple entry with the records.
    fn write_tracking_chunk(&mut self, kind: ChunkType, body: &[u8]) -> Result<u64> {
        let len = (body.len() as u32).to_be_bytes();
        self.write_chunk(kind, 1, 1, &[], &[&len, body], &[])
    }

    /// Makes everything appended so far durable: fdatasync of the active segment and index.
    /// Older segments were synced when they were sealed, and every file's directory entry when
    /// it was created. A failure is [`LogError::Sync`]: what was written since the last good
    /// sync may be lost, whatever later syncs say.
    pub fn sync(&mut self) -> Result<()> {
        let first = self.active().first_chunk_id;
        // Closed files hold nothing unsynced: they are only released after a good sync.
        let Some(files) = &self.files else {
            return Ok(());
        };
        let sync = |file: &dyn File, path: PathBuf| {
            file.sync_data()
                .map_err(|source| LogError::Sync { path, source })
        };
        sync(&*files.segment, segment_path(&self.dir, first))?;
        sync(&*files.index, index_path(&self.dir, first))?;
        self.unsynced = false;
        Ok(())
    }

    /// Whether the active files are open.
    pub fn holds_files(&self) -> bool {
        self.files.is_some()
    }

    /// Closes the active files of an idle log after a good [`sync`](Self::sync); they are
    /// opened again by the next write. Returns false (and keeps them) if something written
    /// is not synced: a write-back error must reach a descriptor that saw the write.
    pub fn release_files(&mut self) -> bool {
        if self.unsynced {
            return false;
        }
        self.files = None;
        true
    }

    /// The active files, opened for appending if they were released.
    pub(crate) fn files(&mut self) -> Result<&mut ActiveFiles> {
        if self.files.is_none() {
            let first = self.active().first_chunk_id;
            self.files = Some(open_for_append(&*self.storage, &self.dir, first)?);
        }
        self.files.as_mut().ok_or(LogError::Poisoned)
    }

    /// Publishes everything appended so far to readers.
    pub fn commit(&mut self) {
        if !self.uncommitted && !self.segments_changed {
            return;
        }
        let mut view = self.shared.write();
        if self.segments_changed {
            view.segments.clone_from(&self.segments);
        } else if let (Some(v), Some(w)) = (view.segments.last_mut(), self.segments.last()) {
            v.clone_from(w);
        }
        view.last_user_chunk = self.last_user_chunk;
        drop(view);
        self.shared.tail.publish(&mut self.fresh);
        self.uncommitted = false;
        self.segments_changed = false;
    }

    /// Whether the next append starts a new segment (which syncs the current one: a write
    /// that may block for milliseconds).
    pub fn next_append_rolls(&self) -> bool {
        let active = self.active();
        active.chunks > 0
            && (active.size >= self.config.max_segment_bytes.min(MAX_SEGMENT_BYTES)
                || active.chunks >= self.config.max_segment_chunks)
    }

    pub(crate) fn active(&self) -> &SegmentInfo {
        // `segments` is never empty: open() creates a first segment.
        &self.segments[self.segments.len() - 1]
    }

    fn maybe_roll(&mut self) -> Result<()> {
        let active = self.active();
        let full = active.size >= self.config.max_segment_bytes.min(MAX_SEGMENT_BYTES)
            || active.chunks >= self.config.max_segment_chunks;
        if full && active.chunks > 0 {
            self.roll()?;
            // Every segment after the first starts with the whole tracking state, so recovery
            // reads only the last segment and retention never loses tracking.
            self.needs_snapshot = !self.tracking.is_empty();
        }
        if self.needs_snapshot {
            let mut body = Vec::new();
            self.tracking.snapshot(&mut body);
            self.write_tracking_chunk(ChunkType::TrackingSnapshot, &body)?;
            self.needs_snapshot = false;
        }
        Ok(())
    }

    /// Starts a new segment at the next offset.
    pub(crate) fn roll(&mut self) -> Result<()> {
        // Recovery trusts sealed segments, so one must be whole on disk before a later
        // segment can exist: otherwise a power cut could leave a hole in the middle of the
        // log. One fdatasync per segment (500 MB by default), whatever the durability.
        self.sync()?;
        let first = self.next_offset();
        self.files = Some(create_segment_files(&*self.storage, &self.dir, first)?);
        self.segments.push(SegmentInfo::empty(first));
        self.segments_changed = true;
        if let Err(e) = self.enforce_retention(now_ms()) {
            tracing::warn!(dir = %self.dir.display(), "retention after segment roll failed: {e}");
        }
        Ok(())
    }

    /// Writes one chunk; see [`Log::write_chunks`].
    fn write_chunk(
        &mut self,
        chunk_type: ChunkType,
        num_entries: u16,
        num_records: u32,
        bloom: &[u8],
        data: &[&[u8]],
        trailer: &[u8],
    ) -> Result<u64> {
        let piece = Piece {
            chunk_type,
            num_entries,
            num_records,
            bloom,
            data,
            trailer,
        };
        self.write_chunks(&[piece])
    }

    /// Writes chunks back to back with one `writev` to the segment and one `write` to the
    /// index, all or nothing: a failed write is cut off again. Returns the first chunk's id
    /// (the others follow by their record counts).
    fn write_chunks(&mut self, pieces: &[Piece<'_>]) -> Result<u64> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        let position = self.active().size;
        let first_id = self.next_offset();
        let timestamp = now_ms().max(self.last_timestamp);
        let mut headers = Vec::with_capacity(pieces.len());
        let mut records =
            Vec::with_capacity(pieces.len() * crate::format::INDEX_RECORD_LEN as usize);
        let (mut at, mut chunk_id) = (position, first_id);
        for piece in pieces {
            let header = piece.header(chunk_id, timestamp, self.replication.epoch);
            let disk_len = header.disk_len();
            if piece.data_len() > u32::MAX as usize
                || piece.bloom.len() > 255
                || at > u64::from(u32::MAX)
            {
                return Err(LogError::ChunkTooLarge(disk_len));
            }
            let record = IndexRecord {
                chunk_id,
                timestamp,
                epoch: self.replication.epoch,
                position: at as u32,
                chunk_type: piece.chunk_type as u8,
            };
            records.extend_from_slice(&record.to_bytes());
            headers.push((header, header.to_bytes()));
            at += disk_len;
            chunk_id = header.next_offset();
        }
        let mut slices: Vec<&[u8]> = Vec::with_capacity(pieces.len() * 4);
        for (piece, (_, bytes)) in pieces.iter().zip(&headers) {
            slices.push(bytes);
            slices.push(piece.bloom);
            slices.extend_from_slice(piece.data);
            slices.push(piece.trailer);
        }
        let segment = self.active().first_chunk_id;
        let dir = self.dir.clone();
        self.unsynced = true;
        let files = self.files()?;
        let written = files
            .segment
            .append(&slices)
            .map_err(LogError::io(segment_path(&dir, segment)))
            .and_then(|()| {
                files
                    .index
                    .append(&[&records])
                    .map_err(LogError::io(index_path(&dir, segment)))
            });
        if let Err(e) = written {
            self.roll_back(position);
            return Err(e);
        }
        self.written(pieces, &headers, position, timestamp)?;
        Ok(first_id)
    }

    /// Records chunks just written: segment numbers, last user chunk, tail copies.
    fn written(
        &mut self,
        pieces: &[Piece<'_>],
        headers: &[(ChunkHeader, [u8; chunk::HEADER_LEN])],
        mut position: u64,
        timestamp: i64,
    ) -> Result<()> {
        let copy = self.shared.tail.wanted() || self.replication.ships();
        for (piece, (header, bytes)) in pieces.iter().zip(headers) {
            let raw = copy.then(|| {
                // One copy per chunk, shared by every reader at the tail and the replicas.
                let mut raw = Vec::with_capacity(header.disk_len() as usize);
                raw.extend_from_slice(bytes);
                raw.extend_from_slice(piece.bloom);
                for d in piece.data {
                    raw.extend_from_slice(d);
                }
                raw.extend_from_slice(piece.trailer);
                bytes::Bytes::from(raw)
            });
            self.record(header, raw, position)?;
            position += header.disk_len();
        }
        self.last_timestamp = timestamp;
        Ok(())
    }

    /// Records one chunk written at `position` of the active segment; `raw` is its bytes, if
    /// a reader at the tail or a replica wants them.
    pub(crate) fn record(
        &mut self,
        header: &ChunkHeader,
        raw: Option<bytes::Bytes>,
        position: u64,
    ) -> Result<()> {
        let keep = self.shared.tail.wanted();
        let active = self.segments.last_mut().ok_or(LogError::Poisoned)?;
        let starts_segment = active.chunks == 0;
        let disk_len = header.disk_len();
        let at = Position {
            segment: active.first_chunk_id,
            file_pos: position,
            chunk_id: header.chunk_id,
        };
        active.chunks += 1;
        active.size += disk_len;
        active.last_chunk_id = Some(header.chunk_id);
        active.last_timestamp = Some(header.timestamp);
        active.next_offset = header.next_offset();
        if header.chunk_type == ChunkType::User {
            self.last_user_chunk = Some(at);
        }
        if let Some(raw) = raw {
            let chunk = ReadChunk::new(*header, raw);
            self.replication.ship(&chunk, starts_segment);
            if keep {
                self.fresh.push((at, chunk));
            }
        }
        let point = self.commit_point();
        self.replication.written(point);
        self.shared
            .set_last_written(header.chunk_id, header.next_offset());
        let activity = &self.shared.activity;
        activity.chunks_written.fetch_add(1, Ordering::Relaxed);
        activity
            .records_written
            .fetch_add(u64::from(header.num_records), Ordering::Relaxed);
        activity
            .bytes_written
            .fetch_add(disk_len, Ordering::Relaxed);
        self.uncommitted = true;
        Ok(())
    }

    /// Undoes a partial write so the files end at the last whole chunk again. If even that
    /// fails, the log refuses further writes rather than append after garbage.
    pub(crate) fn roll_back(&mut self, position: u64) {
        let records = self.active().chunks;
        let index_len = FILE_HEADER_LEN + records * crate::format::INDEX_RECORD_LEN;
        // Both files append, so after the cut the next write lands right there.
        let ok = self.files.as_mut().is_some_and(|f| {
            f.segment.set_len(position).is_ok() && f.index.set_len(index_len).is_ok()
        });
        if !ok {
            tracing::error!(dir = %self.dir.display(), "could not roll back a failed write; log is now read-only");
            self.poisoned = true;
        }
    }

    /// Closes the log for good: readers get [`LogError::Deleted`]. The files are left to whoever
    /// owns the directory (the broker renames it away before removing it, so a crash in the
    /// middle never leaves half a stream that looks whole).
    pub fn close_deleted(self) {
        self.shared.write().deleted = true;
    }
}

/// A segment and its index, open for appending.
#[derive(Debug)]
pub(crate) struct ActiveFiles {
    pub(crate) segment: Box<dyn File>,
    pub(crate) index: Box<dyn File>,
}

pub(crate) fn create_segment_files(
    storage: &dyn Storage,
    dir: &Path,
    first_chunk_id: u64,
) -> Result<ActiveFiles> {
    let create = |path: PathBuf, header: &[u8]| -> Result<Box<dyn File>> {
        let mut f = storage
            .open(&path, OpenMode::Create)
            .map_err(LogError::io(&path))?;
        f.append(&[header]).map_err(LogError::io(&path))?;
        // A header lost in a power cut would make the file unrecognisable to recovery.
        f.sync_data().map_err(LogError::io(&path))?;
        Ok(f)
    };
    let segment = create(segment_path(dir, first_chunk_id), &SEGMENT_HEADER)?;
    let index = create(index_path(dir, first_chunk_id), &INDEX_HEADER)?;
    sync_dir(storage, dir)?;
    Ok(ActiveFiles { segment, index })
}

fn open_for_append(storage: &dyn Storage, dir: &Path, first_chunk_id: u64) -> Result<ActiveFiles> {
    let open = |path: PathBuf| -> Result<Box<dyn File>> {
        storage
            .open(&path, OpenMode::Append)
            .map_err(LogError::io(&path))
    };
    Ok(ActiveFiles {
        segment: open(segment_path(dir, first_chunk_id))?,
        index: open(index_path(dir, first_chunk_id))?,
    })
}
