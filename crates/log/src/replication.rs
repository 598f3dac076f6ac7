//! What a replicated log adds (issue #13, `docs/CLUSTERING.md`).
//!
//! - **Epochs.** The leader stamps its epoch, granted by the cluster's metadata group, into
//!   every chunk header and index record ([`Log::set_epoch`]).
//! - **Visibility waits for a majority.** On a single node, readers see what is written once
//!   it is durable ([`Log::commit`]). A replicated log keeps a commit point per chunk written
//!   and publishes up to the chunk a majority holds ([`Log::commit_to`]), so readers on the
//!   leader and on replicas never see a chunk that a failover could take back.
//! - **The leader ships what it writes.** Each chunk's stored bytes are kept for the
//!   replication links ([`Log::take_shipped`]), with whether it opened a segment.
//! - **A replica writes the leader's bytes unchanged** ([`Log::append_raw`]): same chunk ids,
//!   epochs, timestamps and segment boundaries, so its files are the leader's and its
//!   tracking (stored offsets, publisher sequences) is rebuilt from the same chunks.

use std::collections::VecDeque;

use brook_protocol::chunk::{self, ChunkHeader, ChunkType, HEADER_LEN};
use bytes::Bytes;

use crate::error::{LogError, Result};
use crate::format::{
    FILE_HEADER_LEN, INDEX_RECORD_LEN, IndexFile, IndexRecord, index_path, segment_path, sync_dir,
};
use crate::reader::{Position, ReadChunk, SegmentInfo};
use crate::writer::{EPOCH, Log};

/// A chunk as the leader ships it.
#[derive(Debug, Clone)]
pub struct Shipped {
    pub chunk: ReadChunk,
    /// It is the first chunk of a segment: the replica starts one there too.
    pub starts_segment: bool,
}

/// The view readers get once everything up to `next_offset` is committed.
#[derive(Debug, Clone)]
pub(crate) struct CommitPoint {
    next_offset: u64,
    active: SegmentInfo,
    last_user_chunk: Option<Position>,
    /// Tail copies (`Log::fresh`) written up to here.
    fresh_len: usize,
}

#[derive(Debug)]
pub(crate) struct State {
    pub epoch: u64,
    /// Readers wait for [`Log::commit_to`].
    deferred: bool,
    ship: bool,
    shipped: Vec<Shipped>,
    points: VecDeque<CommitPoint>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            epoch: EPOCH,
            deferred: false,
            ship: false,
            shipped: Vec::new(),
            points: VecDeque::new(),
        }
    }
}

impl State {
    pub(crate) fn ships(&self) -> bool {
        self.ship
    }

    pub(crate) fn ship(&mut self, chunk: &ReadChunk, starts_segment: bool) {
        if self.ship {
            self.shipped.push(Shipped {
                chunk: chunk.clone(),
                starts_segment,
            });
        }
    }

    pub(crate) fn written(&mut self, point: Option<CommitPoint>) {
        if let Some(point) = point {
            self.points.push_back(point);
        }
    }
}

impl Log {
    /// The epoch stamped into the chunks written from now on.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.replication.epoch = epoch;
    }

    pub fn epoch(&self) -> u64 {
        self.replication.epoch
    }

    /// Makes readers wait for [`Log::commit_to`] from now on, and with `ship`, keeps each
    /// written chunk for [`Log::take_shipped`] (a leader; a replica only defers).
    pub fn replicate(&mut self, ship: bool) {
        self.replication.deferred = true;
        self.replication.ship = ship;
    }

    /// The chunks written since the last call, in order.
    pub fn take_shipped(&mut self) -> Vec<Shipped> {
        std::mem::take(&mut self.replication.shipped)
    }

    pub(crate) fn commit_point(&self) -> Option<CommitPoint> {
        self.replication.deferred.then(|| CommitPoint {
            next_offset: self.next_offset(),
            active: self
                .segments
                .last()
                .cloned()
                .unwrap_or_else(|| SegmentInfo::empty(0)),
            last_user_chunk: self.last_user_chunk,
            fresh_len: self.fresh.len(),
        })
    }

    /// Publishes to readers every chunk that ends at or before `next_offset` (the majority's
    /// end), and nothing after it.
    pub fn commit_to(&mut self, next_offset: u64) {
        let points = &mut self.replication.points;
        let mut last = None;
        while points.front().is_some_and(|p| p.next_offset <= next_offset) {
            last = points.pop_front();
        }
        let Some(point) = last else {
            return;
        };
        {
            let mut view = self.shared.write();
            let first = point.active.first_chunk_id;
            view.segments = self
                .segments
                .iter()
                .filter(|s| s.first_chunk_id < first)
                .cloned()
                .chain([point.active.clone()])
                .collect();
            view.last_user_chunk = point.last_user_chunk;
        }
        let taken = point.fresh_len.min(self.fresh.len());
        let mut head: Vec<_> = self.fresh.drain(..taken).collect();
        for p in points.iter_mut() {
            p.fresh_len = p.fresh_len.saturating_sub(taken);
        }
        self.shared.tail.publish(&mut head);
        if points.is_empty() {
            self.uncommitted = false;
            self.segments_changed = false;
        }
    }

    /// Appends a chunk exactly as the leader stored it: it must be the next one (its id is
    /// this log's next offset), whole, and intact (its data's CRC). `starts_segment`: the
    /// leader started a segment with it, so this log does too (no tracking snapshot of its
    /// own: the leader's follows as a chunk). Not visible to readers until
    /// [`Log::commit_to`].
    pub fn append_raw(&mut self, raw: Bytes, starts_segment: bool) -> Result<u64> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        let header = ChunkHeader::parse(&raw).map_err(|e| self.bad_chunk(0, e))?;
        let expected = self.next_offset();
        if header.chunk_id != expected {
            return Err(LogError::OutOfSequence {
                expected,
                got: header.chunk_id,
            });
        }
        if raw.len() as u64 != header.disk_len() {
            let e = chunk::ChunkError::MalformedData(raw.len());
            return Err(self.bad_chunk(header.chunk_id, e));
        }
        let data_at = HEADER_LEN + usize::from(header.bloom_size);
        let data = raw
            .get(data_at..data_at + header.data_len as usize)
            .unwrap_or_default();
        let bloom = raw.get(HEADER_LEN..data_at).unwrap_or_default();
        let trailer = raw
            .get(data_at + header.data_len as usize..)
            .unwrap_or_default();
        if chunk::side_check(bloom, trailer) != header.side_check {
            let e = chunk::ChunkError::MalformedData(trailer.len());
            return Err(self.bad_chunk(header.chunk_id, e));
        }
        let actual = chunk::crc32(data);
        if actual != header.crc {
            let e = chunk::ChunkError::Crc {
                expected: header.crc,
                actual,
            };
            return Err(self.bad_chunk(header.chunk_id, e));
        }
        let active = self.segments.last().map_or(0, |s| s.chunks);
        if starts_segment && active > 0 {
            self.roll()?;
        }
        let position = self.segments.last().map_or(0, |s| s.size);
        self.write_raw(&header, &raw, position)?;
        self.apply_tracking(&header, &raw, data_at);
        let keep = self.shared.tail.wanted();
        self.record(&header, keep.then(|| raw.clone()), position)?;
        self.last_timestamp = self.last_timestamp.max(header.timestamp);
        Ok(header.chunk_id)
    }

    /// The last chunk written (committed or not): its id and epoch. A member reports it when
    /// it loses its leader; the longest such tail of a majority leads next.
    pub fn tail(&self) -> Result<Option<(u64, u64)>> {
        let Some(segment) = self.segments.iter().rev().find(|s| s.chunks > 0) else {
            return Ok(None);
        };
        let index = IndexFile::open(
            &*self.storage,
            index_path(&self.dir, segment.first_chunk_id),
        )?;
        let record = index.record(segment.chunks - 1)?;
        Ok(Some((record.chunk_id, record.epoch)))
    }

    /// Whether a chunk starts at `offset`, or the log ends there: where [`Log::truncate`] may
    /// cut.
    pub fn is_boundary(&self, offset: u64) -> Result<bool> {
        if offset == self.next_offset() {
            return Ok(true);
        }
        let Some(segment) = self
            .segments
            .iter()
            .find(|s| s.first_chunk_id <= offset && offset < s.next_offset)
        else {
            return Ok(false);
        };
        let index = IndexFile::open(
            &*self.storage,
            index_path(&self.dir, segment.first_chunk_id),
        )?;
        let at = index.partition_point(segment.chunks, |r| r.chunk_id < offset)?;
        Ok(at < segment.chunks && index.record(at)?.chunk_id == offset)
    }

    /// Cuts the log back to end at `next_offset` (a chunk boundary), for a replica whose tail
    /// the new leader does not have: chunks of an old epoch that never reached a majority, so
    /// were never confirmed nor shown to readers. Returns the reopened log, which keeps this
    /// one's readers (its [`LogReader`](crate::LogReader)s see the cut log).
    pub fn truncate(self, next_offset: u64) -> Result<Log> {
        let closed = self.close()?;
        for segment in closed.segments.iter().rev() {
            if segment.next_offset <= next_offset {
                break;
            }
            if segment.first_chunk_id >= next_offset && segment.first_chunk_id > 0 {
                closed.remove_segment(segment.first_chunk_id)?;
                continue;
            }
            cut(&*closed.storage, &closed.dir, segment, next_offset)?;
        }
        closed.reopen()
    }

    /// A replica whose whole log lies below the leader's (the leader's retention removed
    /// everything this log could continue from, or this log is new and empty): its segments
    /// go, and it starts again, empty, at `next_offset`, the leader's first chunk. Nothing is
    /// lost that the leader still has; retention, with the same arguments, would remove the
    /// rest here too. Readers keep the shared state, as after [`Log::truncate`].
    pub fn restart_at(self, next_offset: u64) -> Result<Log> {
        if next_offset < self.next_offset() {
            return Err(LogError::OutOfSequence {
                expected: self.next_offset(),
                got: next_offset,
            });
        }
        let closed = self.close()?;
        // The new segment first, then the old ones, oldest first: a crash in between leaves
        // the newest old segments and the empty new one, which recovery removes; the log then
        // ends where it did, and the leader asks again.
        crate::writer::create_segment_files(&*closed.storage, &closed.dir, next_offset)?;
        for segment in &closed.segments {
            if segment.first_chunk_id != next_offset {
                closed.remove_segment(segment.first_chunk_id)?;
            }
        }
        closed.reopen()
    }

    /// Syncs and closes the log for [`Log::truncate`] or [`Log::restart_at`].
    fn close(mut self) -> Result<Closed> {
        self.sync()?;
        self.files = None;
        let closed = Closed {
            storage: self.storage.clone(),
            dir: self.dir.clone(),
            config: self.config.clone(),
            shared: self.shared.clone(),
            segments: std::mem::take(&mut self.segments),
        };
        drop(self);
        Ok(closed)
    }

    fn bad_chunk(&self, position: u64, source: chunk::ChunkError) -> LogError {
        LogError::BadChunk {
            path: self.dir.clone(),
            position,
            source,
        }
    }

    fn write_raw(&mut self, header: &ChunkHeader, raw: &[u8], position: u64) -> Result<()> {
        if position > u64::from(u32::MAX) {
            return Err(LogError::ChunkTooLarge(header.disk_len()));
        }
        let record = IndexRecord {
            chunk_id: header.chunk_id,
            timestamp: header.timestamp,
            epoch: header.epoch,
            position: position as u32,
            chunk_type: header.chunk_type as u8,
        };
        let segment = self.segments.last().map_or(0, |s| s.first_chunk_id);
        let dir = self.dir.clone();
        self.unsynced = true;
        let files = self.files()?;
        let written = files
            .segment
            .append(&[raw])
            .map_err(LogError::io(segment_path(&dir, segment)))
            .and_then(|()| {
                files
                    .index
                    .append(&[&record.to_bytes()])
                    .map_err(LogError::io(index_path(&dir, segment)))
            });
        if let Err(e) = written {
            self.roll_back(position);
            return Err(e);
        }
        Ok(())
    }

    /// Stored offsets and publisher sequences, as recovery reads them from the same chunks.
    fn apply_tracking(&mut self, header: &ChunkHeader, raw: &[u8], data_at: usize) {
        let data_end = data_at + header.data_len as usize;
        let result = match header.chunk_type {
            ChunkType::User if header.trailer_len > 0 => {
                let trailer = raw.get(data_end..).unwrap_or_default();
                self.tracking.apply_deltas(header.chunk_id, trailer)
            }
            ChunkType::User => Ok(()),
            kind => match chunk::entries(raw.get(data_at..data_end).unwrap_or_default()).next() {
                Some(Ok(chunk::Entry::Simple(body))) if kind == ChunkType::TrackingSnapshot => {
                    self.tracking.load_snapshot(body)
                }
                Some(Ok(chunk::Entry::Simple(body))) => {
                    self.tracking.apply_deltas(header.chunk_id, body)
                }
                _ => Err(crate::tracking::MalformedTracking(0)),
            },
        };
        if let Err(e) = result {
            tracing::error!(dir = %self.dir.display(), chunk = header.chunk_id,
                "replicated chunk has unreadable tracking data: {e}");
        }
    }
}

/// Cuts one segment and its index just before chunk `next_offset`.
fn cut(
    storage: &dyn brook_storage::Storage,
    dir: &std::path::Path,
    segment: &SegmentInfo,
    next_offset: u64,
) -> Result<()> {
    let index_at = index_path(dir, segment.first_chunk_id);
    let index = IndexFile::open(storage, index_at.clone())?;
    let keep = index.partition_point(segment.chunks, |r| r.chunk_id < next_offset)?;
    let position = if keep < segment.chunks {
        let record = index.record(keep)?;
        if record.chunk_id != next_offset {
            return Err(LogError::OutOfSequence {
                expected: next_offset,
                got: record.chunk_id,
            });
        }
        u64::from(record.position)
    } else {
        return Ok(());
    };
    drop(index);
    let segment_at = segment_path(dir, segment.first_chunk_id);
    for (path, len) in [
        (&segment_at, position),
        (&index_at, FILE_HEADER_LEN + keep * INDEX_RECORD_LEN),
    ] {
        let mut file = storage
            .open(path, brook_storage::OpenMode::Append)
            .map_err(LogError::io(path))?;
        file.set_len(len).map_err(LogError::io(path))?;
        file.sync_data().map_err(LogError::io(path))?;
    }
    Ok(())
}

/// A log closed to change its files, with what reopening it needs.
struct Closed {
    storage: brook_storage::SharedStorage,
    dir: std::path::PathBuf,
    config: crate::LogConfig,
    /// The readers' shared state, kept across the reopening.
    shared: std::sync::Arc<crate::reader::Shared>,
    segments: Vec<SegmentInfo>,
}

impl Closed {
    /// Index first: a segment without its index is rebuilt on recovery.
    fn remove_segment(&self, first_chunk_id: u64) -> Result<()> {
        for path in [
            index_path(&self.dir, first_chunk_id),
            segment_path(&self.dir, first_chunk_id),
        ] {
            self.storage
                .remove_file(&path)
                .map_err(LogError::io(&path))?;
        }
        Ok(())
    }

    /// Reopens the changed log. Its readers hold the old shared state: it gets the new log's
    /// view, forgets the chunks kept for readers at the tail, and becomes the new log's.
    fn reopen(self) -> Result<Log> {
        sync_dir(&*self.storage, &self.dir)?;
        let (mut log, _) = Log::open(self.storage, &self.dir, self.config)?;
        let view = log.shared.read().clone();
        *self.shared.write() = view;
        self.shared.tail.clear();
        let stats = log.reader().stats();
        match stats.last_chunk_id {
            Some(last) => self.shared.set_last_written(last, stats.written_end),
            None => self.shared.reset_written(stats.written_end),
        }
        log.shared = self.shared;
        Ok(log)
    }
}
