//! Log tests on real files: the golden osiris segment, appends, seeks, segment rolls, tracking
//! recovery, torn tails and retention.
#![allow(clippy::unwrap_used)]

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use brook_log::format::{index_path, segment_path};
use brook_log::{Log, LogConfig, LogError, ReadChunk, Retention, Seek, UserChunk};
use brook_protocol::chunk::{ChunkType, ChunkView, encode_simple_entries};
use brook_storage::disk;

fn golden_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden"))
}

fn copy_golden(to: &Path) {
    for name in ["00000000000000000000.segment", "00000000000000000000.index"] {
        fs::copy(golden_dir().join(name), to.join(name)).unwrap();
    }
}

fn read_all(log: &brook_log::LogReader, seek: Seek) -> Vec<ReadChunk> {
    let mut cursor = log.cursor(seek).unwrap();
    let mut out = Vec::new();
    while cursor.read(1 << 20, &mut out).unwrap() > 0 {}
    out
}

fn user_messages(chunks: &[ReadChunk]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for c in chunks.iter().filter(|c| c.is_user()) {
        let (head, data) = c.wire_parts();
        let mut wire = head.to_vec();
        if let Some(d) = data {
            wire.extend_from_slice(&d);
        }
        let view = ChunkView::parse(&wire).unwrap();
        view.verify().unwrap();
        for r in view.records() {
            let (offset, body) = r.unwrap();
            out.push((offset, body.to_vec()));
        }
    }
    out
}

fn append(log: &mut Log, messages: &[&[u8]], sequences: &[(&str, u64)]) -> u64 {
    let data = encode_simple_entries(messages.iter().copied());
    let id = log
        .append_user(&UserChunk {
            data: &data,
            num_entries: messages.len() as u16,
            num_records: messages.len() as u32,
            bloom: &[],
            sequences,
        })
        .unwrap();
    log.commit();
    id
}

fn amqp(body: &[u8]) -> Vec<u8> {
    let mut m = vec![0x00, 0x53, 0x75, 0xa0, body.len() as u8];
    m.extend_from_slice(body);
    m
}

#[test]
fn opens_the_golden_osiris_stream() {
    let dir = tempfile::tempdir().unwrap();
    copy_golden(dir.path());
    let (log, recovery) = Log::open(disk(), dir.path(), LogConfig::default()).unwrap();
    assert!(recovery.is_clean(), "{recovery}");
    assert_eq!(log.next_offset(), 16);
    assert_eq!(log.tracking().offset("golden-consumer"), Some(5));
    assert_eq!(log.tracking().sequence("golden-producer"), Some(5));

    let reader = log.reader();
    let chunks = read_all(&reader, Seek::First);
    let ids: Vec<u64> = chunks.iter().map(|c| c.header.chunk_id).collect();
    assert_eq!(ids, [0, 10, 11, 12, 13, 14, 15]);
    assert_eq!(chunks[1].header.chunk_type, ChunkType::TrackingDelta);
    let messages = user_messages(&chunks);
    assert_eq!(messages.len(), 15);
    assert_eq!(messages[0], (0, amqp(b"hello-0")));
    assert_eq!(messages[10], (11, amqp(b"hello-10")));

    assert_eq!(reader.resolve(Seek::Offset(3)).unwrap().chunk_id, 0);
    assert_eq!(reader.resolve(Seek::Offset(10)).unwrap().chunk_id, 10);
    assert_eq!(reader.resolve(Seek::Offset(13)).unwrap().chunk_id, 13);
    assert_eq!(reader.resolve(Seek::Offset(99)).unwrap().chunk_id, 16);
    assert_eq!(reader.resolve(Seek::Last).unwrap().chunk_id, 15);
    assert_eq!(reader.resolve(Seek::Next).unwrap().chunk_id, 16);
    // Chunk 12 was written at ...3222 ms (osiris README).
    assert_eq!(
        reader
            .resolve(Seek::Timestamp(1_795_667_943_222))
            .unwrap()
            .chunk_id,
        12
    );
    assert_eq!(reader.resolve(Seek::Timestamp(0)).unwrap().chunk_id, 0);
    assert_eq!(
        reader.resolve(Seek::Timestamp(i64::MAX)).unwrap().chunk_id,
        16
    );
    let stats = reader.stats();
    assert_eq!(stats.first_chunk_id, Some(0));
    assert_eq!(stats.committed_chunk_id, Some(15));
}

/// Writing what `osiris_sample.py` wrote produces the golden files byte for byte, apart from
/// the timestamps (header bytes 8..16, index record bytes 8..16) and the side check brook keeps
/// in the header's reserved bytes 45..48 (zero in osiris's files, which brook reads as
/// "unchecked").
#[test]
fn writes_the_osiris_format_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(disk(), dir.path(), LogConfig::default()).unwrap();
    let first: Vec<Vec<u8>> = (0..10)
        .map(|i| amqp(format!("hello-{i}").as_bytes()))
        .collect();
    let refs: Vec<&[u8]> = first.iter().map(|m| m.as_slice()).collect();
    append(&mut log, &refs, &[]);
    assert!(log.store_offset("golden-consumer", 5));
    assert_eq!(log.flush_tracking().unwrap(), Some(10));
    for i in 0..5u64 {
        let m = amqp(format!("hello-{}", 10 + i).as_bytes());
        append(&mut log, &[&m], &[("golden-producer", i + 1)]);
    }
    drop(log);

    let mask = |mut bytes: Vec<u8>, positions: &[usize]| {
        for &p in positions {
            bytes[p + 8..p + 16].fill(0);
        }
        bytes
    };
    let chunk_positions = [8, 216, 293, 383, 473, 563, 653];
    let ours = fs::read(segment_path(dir.path(), 0)).unwrap();
    let golden = fs::read(golden_dir().join("00000000000000000000.segment")).unwrap();
    let mut side_checks = 0;
    let mut unchecked = ours.clone();
    for &p in &chunk_positions {
        side_checks += usize::from(unchecked[p + 45..p + 48] != [0, 0, 0]);
        unchecked[p + 45..p + 48].fill(0);
    }
    // The five chunks with publisher sequences in their trailers carry a check.
    assert_eq!(side_checks, 5);
    assert_eq!(
        mask(unchecked, &chunk_positions),
        mask(golden, &chunk_positions)
    );
    let record_positions: Vec<usize> = (0..7).map(|i| 8 + i * 29).collect();
    let ours = fs::read(index_path(dir.path(), 0)).unwrap();
    let golden = fs::read(golden_dir().join("00000000000000000000.index")).unwrap();
    assert_eq!(
        mask(ours, &record_positions),
        mask(golden, &record_positions)
    );
}

#[test]
fn appends_survive_reopen_and_only_committed_chunks_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(disk(), dir.path(), LogConfig::default()).unwrap();
    let reader = log.reader();
    assert_eq!(reader.stats().first_chunk_id, None);
    assert_eq!(reader.resolve(Seek::First).unwrap().chunk_id, 0);
    assert_eq!(reader.resolve(Seek::Last).unwrap().chunk_id, 0);
    append(&mut log, &[b"a", b"b"], &[]);
    let mut cursor = reader.cursor(Seek::Next).unwrap();
    assert_eq!(cursor.next_chunk_id(), 2);

    // Written but not committed: invisible.
    let data = encode_simple_entries([&b"c"[..]]);
    log.append_user(&UserChunk {
        data: &data,
        num_entries: 1,
        num_records: 1,
        bloom: &[],
        sequences: &[("p", 7)],
    })
    .unwrap();
    let mut out = Vec::new();
    assert_eq!(cursor.read(1024, &mut out).unwrap(), 0);
    log.commit();
    assert_eq!(cursor.read(1024, &mut out).unwrap(), 1);
    assert_eq!(out[0].header.chunk_id, 2);
    drop(log);

    let (log, recovery) = Log::open(disk(), dir.path(), LogConfig::default()).unwrap();
    assert!(recovery.is_clean(), "{recovery}");
    assert_eq!(log.next_offset(), 3);
    assert_eq!(log.tracking().sequence("p"), Some(7));
    let msgs = user_messages(&read_all(&log.reader(), Seek::First));
    assert_eq!(
        msgs,
        vec![(0, b"a".to_vec()), (1, b"b".to_vec()), (2, b"c".to_vec())]
    );
}

#[test]
fn cursor_reads_chunks_larger_than_its_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(disk(), dir.path(), LogConfig::default()).unwrap();
    let big = vec![7u8; 100_000];
    append(&mut log, &[&big], &[]);
    append(&mut log, &[b"x"], &[]);
    let mut cursor = log.reader().cursor(Seek::First).unwrap();
    let mut out = Vec::new();
    assert_eq!(cursor.read(100, &mut out).unwrap(), 1);
    assert_eq!(out[0].data().len(), 100_004);
    assert_eq!(cursor.read(100, &mut out).unwrap(), 1);
    assert_eq!(out[1].header.chunk_id, 1);
    assert_eq!(cursor.read(100, &mut out).unwrap(), 0);
}

fn small_segments() -> LogConfig {
    LogConfig {
        max_segment_bytes: 300,
        ..LogConfig::default()
    }
}

#[test]
fn segments_roll_with_tracking_snapshots_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(disk(), dir.path(), small_segments()).unwrap();
    log.store_offset("consumer", 1);
    log.flush_tracking().unwrap();
    log.commit();
    for i in 0..20u64 {
        append(&mut log, &[&[i as u8; 50]], &[("producer", i)]);
    }
    let stats = log.reader().stats();
    assert!(stats.segments > 3, "{stats:?}");
    drop(log);

    let (log, recovery) = Log::open(disk(), dir.path(), small_segments()).unwrap();
    assert!(recovery.is_clean(), "{recovery}");
    assert_eq!(log.tracking().offset("consumer"), Some(1));
    assert_eq!(log.tracking().sequence("producer"), Some(19));
    let chunks = read_all(&log.reader(), Seek::First);
    // Every segment after the first starts with a snapshot.
    let snapshots = chunks
        .iter()
        .filter(|c| c.header.chunk_type == ChunkType::TrackingSnapshot)
        .count();
    assert_eq!(snapshots, stats.segments - 1);
    let msgs = user_messages(&chunks);
    assert_eq!(msgs.len(), 20);
    // Offsets are chunk ids: tracking chunks take one each, so user offsets have gaps.
    assert!(msgs.windows(2).all(|w| w[0].0 < w[1].0));
    // Seeks work across segments.
    let reader = log.reader();
    for (offset, _) in &msgs {
        assert_eq!(
            reader.resolve(Seek::Offset(*offset)).unwrap().chunk_id,
            *offset
        );
    }
}

#[test]
fn retention_by_bytes_deletes_whole_old_segments_and_cursors_continue() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention: Retention {
            max_bytes: Some(1000),
            max_age: None,
        },
        ..small_segments()
    };
    let (mut log, _) = Log::open(disk(), dir.path(), config).unwrap();
    append(&mut log, &[&[0u8; 100]], &[]);
    let reader = log.reader();
    let mut early = reader.cursor(Seek::First).unwrap();
    for i in 1..40u8 {
        append(&mut log, &[&[i; 100]], &[]);
    }
    let stats = reader.stats();
    assert!(stats.bytes <= 1000 + 300, "{stats:?}");
    let first = stats.first_chunk_id.unwrap();
    assert!(first > 0);
    assert_eq!(reader.resolve(Seek::First).unwrap().chunk_id, first);
    assert_eq!(reader.resolve(Seek::Offset(0)).unwrap().chunk_id, first);
    // A cursor attached before trimming continues from the new first chunk.
    let mut out = Vec::new();
    while early.read(1 << 16, &mut out).unwrap() > 0 {}
    assert_eq!(
        out.last().unwrap().header.chunk_id,
        stats.committed_chunk_id.unwrap()
    );
    assert!(
        out.iter()
            .all(|c| c.header.chunk_id == 0 || c.header.chunk_id >= first)
    );
    assert!(!segment_path(dir.path(), 0).exists());
}

#[test]
fn retention_by_age_trims_an_idle_stream() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention: Retention {
            max_bytes: None,
            max_age: Some(Duration::from_secs(60)),
        },
        ..small_segments()
    };
    let (mut log, _) = Log::open(disk(), dir.path(), config).unwrap();
    for i in 0..10u8 {
        append(&mut log, &[&[i; 100]], &[]);
    }
    let before = log.reader().stats();
    assert!(before.segments >= 3);
    // Nothing is old yet.
    let now = brook_log_now();
    assert_eq!(log.enforce_retention(now).unwrap().segments_deleted, 0);
    // An hour later, with no new writes, everything but the active segment goes.
    let report = log.enforce_retention(now + 3_600_000).unwrap();
    assert_eq!(report.segments_deleted, before.segments - 1);
    assert_eq!(log.reader().stats().segments, 1);
}

/// Issue #9: an age too large for the clock's arithmetic must keep everything, never wrap into
/// a cutoff in the future that deletes every sealed segment.
#[test]
fn retention_with_an_enormous_max_age_keeps_everything() {
    for max_age in [Duration::from_millis(i64::MAX as u64), Duration::MAX] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention: Retention {
                max_bytes: None,
                max_age: Some(max_age),
            },
            ..small_segments()
        };
        let (mut log, _) = Log::open(disk(), dir.path(), config).unwrap();
        for i in 0..10u8 {
            append(&mut log, &[&[i; 100]], &[]);
        }
        let segments = log.reader().stats().segments;
        assert!(segments >= 3);
        for now in [brook_log_now(), i64::MAX, i64::MIN] {
            assert_eq!(log.enforce_retention(now).unwrap().segments_deleted, 0);
        }
        assert_eq!(log.reader().stats().segments, segments);
    }
}

fn brook_log_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---- torn tails -------------------------------------------------------------------------

/// A log with three chunks of one message each; returns (dir, segment length after each chunk).
fn three_chunks() -> (tempfile::TempDir, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(disk(), dir.path(), LogConfig::default()).unwrap();
    let mut ends = Vec::new();
    for m in [&b"one"[..], b"two", b"three"] {
        append(&mut log, &[m], &[("p", ends.len() as u64)]);
        ends.push(fs::metadata(segment_path(dir.path(), 0)).unwrap().len());
    }
    (dir, ends)
}

/// A log of `n` messages of 50 bytes in segments of ~300 bytes (a segment per few messages).
fn many_segments(n: u64) -> (tempfile::TempDir, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(disk(), dir.path(), small_segments()).unwrap();
    for i in 0..n {
        append(&mut log, &[&[i as u8; 50]], &[]);
    }
    drop(log);
    let mut ids: Vec<u64> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".segment").map(|id| id.parse().unwrap())
        })
        .collect();
    ids.sort();
    (dir, ids)
}

#[test]
fn many_sealed_segments_recover_in_order_with_missing_indexes_rebuilt() {
    let (dir, ids) = many_segments(60);
    assert!(ids.len() > 16, "{} segments", ids.len());
    let lost = [ids[3], ids[ids.len() - 5]];
    for id in lost {
        fs::remove_file(index_path(dir.path(), id)).unwrap();
    }
    let (log, recovery) = Log::open(disk(), dir.path(), small_segments()).unwrap();
    assert_eq!(recovery.rebuilt_indexes, lost.to_vec());
    assert_eq!(log.reader().stats().segments, ids.len());
    let msgs = user_messages(&read_all(&log.reader(), Seek::First));
    let bodies: Vec<u8> = msgs.iter().map(|(_, m)| m[0]).collect();
    assert_eq!(bodies, (0..60u8).collect::<Vec<_>>());
}

#[test]
fn a_damaged_sealed_segment_among_many_fails_the_open_and_changes_nothing() {
    let (dir, ids) = many_segments(60);
    let damaged = segment_path(dir.path(), ids[ids.len() / 2]);
    let mut bytes = fs::read(&damaged).unwrap();
    bytes[0] ^= 0xff; // the segment file's magic
    fs::write(&damaged, &bytes).unwrap();
    let before: Vec<_> = ids
        .iter()
        .map(|&id| fs::read(segment_path(dir.path(), id)).unwrap())
        .collect();
    let err = Log::open(disk(), dir.path(), small_segments()).unwrap_err();
    assert!(
        err.to_string().contains(&damaged.display().to_string()),
        "{err}"
    );
    let after: Vec<_> = ids
        .iter()
        .map(|&id| fs::read(segment_path(dir.path(), id)).unwrap())
        .collect();
    assert!(before == after, "segments changed");
}

fn reopen_messages(dir: &Path) -> (Vec<Vec<u8>>, brook_log::Recovery, u64) {
    let (mut log, recovery) = Log::open(disk(), dir, LogConfig::default()).unwrap();
    let msgs = user_messages(&read_all(&log.reader(), Seek::First))
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    // The log accepts writes after repair, at the right offset.
    let next = log.next_offset();
    assert_eq!(append(&mut log, &[b"after"], &[]), next);
    let seq = log.tracking().sequence("p").unwrap_or(u64::MAX);
    (msgs, recovery, seq)
}

fn truncate(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn torn_tail_truncated_header() {
    let (dir, ends) = three_chunks();
    truncate(&segment_path(dir.path(), 0), ends[1] + 20);
    let (msgs, recovery, seq) = reopen_messages(dir.path());
    assert_eq!(msgs, vec![b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(recovery.truncated_bytes, 20);
    assert_eq!(recovery.dropped_index_records, 1);
    assert_eq!(
        seq, 1,
        "tracking from the trailer of the last surviving chunk"
    );
}

#[test]
fn torn_tail_truncated_data() {
    let (dir, ends) = three_chunks();
    truncate(&segment_path(dir.path(), 0), ends[2] - 1);
    let (msgs, recovery, _) = reopen_messages(dir.path());
    assert_eq!(msgs.len(), 2);
    assert_eq!(recovery.truncated_bytes, ends[2] - 1 - ends[1]);
}

#[test]
fn torn_tail_bad_crc() {
    let (dir, ends) = three_chunks();
    let path = segment_path(dir.path(), 0);
    let mut bytes = fs::read(&path).unwrap();
    // Flip a byte of the last chunk's data (its header is 48 bytes, entry length 4).
    bytes[ends[1] as usize + 48 + 4] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let (msgs, recovery, _) = reopen_messages(dir.path());
    assert_eq!(msgs.len(), 2);
    assert_eq!(recovery.truncated_bytes, ends[2] - ends[1]);
}

#[test]
fn torn_tail_index_longer_than_segment() {
    let (dir, ends) = three_chunks();
    truncate(&segment_path(dir.path(), 0), ends[0]);
    let (msgs, recovery, _) = reopen_messages(dir.path());
    assert_eq!(msgs, vec![b"one".to_vec()]);
    assert_eq!(recovery.dropped_index_records, 2);
    assert_eq!(recovery.truncated_bytes, 0);
}

#[test]
fn torn_tail_unindexed_chunk_is_kept() {
    // The process died between the segment write and the index write.
    let (dir, _) = three_chunks();
    let idx = index_path(dir.path(), 0);
    truncate(&idx, 8 + 2 * 29);
    let (msgs, recovery, seq) = reopen_messages(dir.path());
    assert_eq!(msgs.len(), 3);
    assert_eq!(recovery.indexed_chunks, 1);
    assert_eq!(seq, 2);
}

#[test]
fn missing_index_is_rebuilt() {
    let (dir, _) = three_chunks();
    fs::remove_file(index_path(dir.path(), 0)).unwrap();
    let (msgs, recovery, _) = reopen_messages(dir.path());
    assert_eq!(msgs.len(), 3);
    assert_eq!(recovery.rebuilt_indexes, vec![0]);
}

#[test]
fn corruption_in_the_middle_is_reported_not_skipped() {
    let (dir, ends) = three_chunks();
    let path = segment_path(dir.path(), 0);
    let mut bytes = fs::read(&path).unwrap();
    bytes[ends[0] as usize + 48 + 4] ^= 0xff; // data of the second of three chunks
    fs::write(&path, &bytes).unwrap();
    // The index is gone too, so recovery must scan and meets the bad chunk before good ones.
    fs::remove_file(index_path(dir.path(), 0)).unwrap();
    let err = Log::open(disk(), dir.path(), LogConfig::default()).unwrap_err();
    assert!(
        matches!(err, LogError::Corrupt { position, .. } if position == ends[0]),
        "{err}"
    );
    // Nothing was truncated.
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn empty_segment_after_a_roll_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(disk(), dir.path(), small_segments()).unwrap();
    log.store_offset("c", 3);
    for i in 0..6u8 {
        append(&mut log, &[&[i; 100]], &[]);
    }
    let next = log.next_offset();
    drop(log);
    // A crash right after creating the next segment, before its snapshot was written.
    fs::write(segment_path(dir.path(), next), b"OSIL\0\0\0\x01").unwrap();
    fs::write(index_path(dir.path(), next), b"OSII\0\0\0\x01").unwrap();
    let (log, recovery) = Log::open(disk(), dir.path(), small_segments()).unwrap();
    assert_eq!(recovery.removed_files.len(), 2, "{recovery}");
    assert_eq!(log.next_offset(), next);
    assert_eq!(log.tracking().offset("c"), Some(3));
}

/// A reader waiting at the end gets freshly committed chunks from memory, byte-identical to
/// what a file read returns; without a waiter nothing is kept.
#[test]
fn readers_at_the_end_read_kept_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(disk(), dir.path(), LogConfig::default()).unwrap();
    let reader = log.reader();
    append(&mut log, &[b"before anyone waits"], &[]);
    let mut cursor = reader.cursor(Seek::Next).unwrap();
    let mut kept = Vec::new();
    {
        let _waiting = reader.wait_at_tail();
        append(&mut log, &[b"one", b"two"], &[("p", 1)]);
        append(&mut log, &[b"three"], &[("p", 2)]);
    }
    // Nobody waits any more: this one is not kept.
    append(&mut log, &[b"four"], &[]);
    assert_eq!(cursor.read_kept(1 << 20, &mut kept), 2);
    assert_eq!(cursor.read_kept(1 << 20, &mut kept), 0);
    let mut from_file = Vec::new();
    let mut file_cursor = reader.cursor(Seek::Offset(1)).unwrap();
    file_cursor.read(1 << 20, &mut from_file).unwrap();
    assert_eq!(user_messages(&kept), user_messages(&from_file[..2]));
    for (k, f) in kept.iter().zip(&from_file) {
        assert_eq!(k.header, f.header);
        assert_eq!(k.trailer(), f.trailer());
    }
    // The cursor goes on from the file where memory ends.
    let mut rest = Vec::new();
    cursor.read(1 << 20, &mut rest).unwrap();
    assert_eq!(user_messages(&rest), [(4, b"four".to_vec())]);
}

/// Descriptors this process has open on files in `dir` (other tests run alongside).
fn open_files_in(dir: &Path) -> usize {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[test]
fn an_idle_log_holds_no_files_and_reopens_them_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(disk(), dir.path(), LogConfig::default()).unwrap();
    assert!(
        !log.holds_files(),
        "a new log opens its files at the first write"
    );
    assert_eq!(open_files_in(dir.path()), 0);
    append(&mut log, &[b"one"], &[]);
    assert!(log.holds_files());
    assert_eq!(
        open_files_in(dir.path()),
        2,
        "the active segment and its index"
    );
    assert!(!log.release_files(), "kept while a write is not synced");
    log.sync().unwrap();
    assert!(log.release_files());
    assert_eq!(open_files_in(dir.path()), 0);
    append(&mut log, &[b"two"], &[]);
    log.sync().unwrap();
    drop(log);
    let (log, _) = Log::open(disk(), dir.path(), LogConfig::default()).unwrap();
    let got: Vec<Vec<u8>> = user_messages(&read_all(&log.reader(), Seek::First))
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
}

/// A bad sector in the last segment is an error that stops the log from opening, never a torn
/// tail to cut: recovery must not delete what it could not read.
#[test]
fn a_read_error_during_recovery_cuts_nothing() {
    use brook_storage::sim::SimDisk;
    let disk = SimDisk::new(7);
    let storage: brook_storage::SharedStorage = std::sync::Arc::new(disk.clone());
    let dir = Path::new("/stream");
    let (mut log, _) = Log::open(storage.clone(), dir, LogConfig::default()).unwrap();
    for m in [b"one", b"two", b"six"] {
        append(&mut log, &[m], &[]);
    }
    log.sync().unwrap();
    drop(log);
    let segment = segment_path(dir, 0);
    let before = brook_storage::read(&disk, &segment).unwrap();
    let index_before = brook_storage::read(&disk, &index_path(dir, 0)).unwrap();
    // The file header stays readable; every chunk after it does not.
    disk.fail_reads_from(&segment, brook_log::format::FILE_HEADER_LEN);
    let err = Log::open(storage.clone(), dir, LogConfig::default()).unwrap_err();
    assert!(matches!(err, LogError::Io { .. }), "{err}");
    disk.clear_faults();
    assert_eq!(brook_storage::read(&disk, &segment).unwrap(), before);
    assert_eq!(
        brook_storage::read(&disk, &index_path(dir, 0)).unwrap(),
        index_before
    );
    let (log, _) = Log::open(storage, dir, LogConfig::default()).unwrap();
    assert_eq!(
        user_messages(&read_all(&log.reader(), Seek::First)).len(),
        3
    );
}
