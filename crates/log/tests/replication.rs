//! A replicated log: a leader ships what it writes, a replica appends those bytes unchanged,
//! and readers on both see only what `commit_to` (a majority) allows.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use brook_log::{Log, LogConfig, LogError, ReadChunk, Retention, Seek, Shipped, UserChunk};
use brook_protocol::chunk::encode_simple_entries;
use brook_storage::disk;

fn small_segments() -> LogConfig {
    LogConfig {
        max_segment_bytes: 300,
        ..LogConfig::default()
    }
}

fn append(log: &mut Log, i: u64) {
    let body = [i as u8; 50];
    let data = encode_simple_entries([&body[..]]);
    log.append_user(&UserChunk {
        data: &data,
        num_entries: 1,
        num_records: 1,
        bloom: &[],
        sequences: &[("producer", i)],
    })
    .unwrap();
}

fn read_all(log: &Log) -> Vec<ReadChunk> {
    let mut cursor = log.reader().cursor(Seek::First).unwrap();
    let mut out = Vec::new();
    while cursor.read(1 << 20, &mut out).unwrap() > 0 {}
    out
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let name = e.file_name().into_string().unwrap();
            (name, fs::read(e.path()).unwrap())
        })
        .collect();
    all.sort();
    all
}

fn replay(replica: &mut Log, shipped: Vec<Shipped>) {
    for s in shipped {
        let raw = s.chunk.raw();
        replica.append_raw(raw, s.starts_segment).unwrap();
    }
}

#[test]
fn a_replica_holds_the_leaders_bytes_and_readers_wait_for_the_majority() {
    let (leader_dir, replica_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut leader, _) = Log::open(disk(), leader_dir.path(), small_segments()).unwrap();
    let (mut replica, _) = Log::open(disk(), replica_dir.path(), small_segments()).unwrap();
    leader.replicate(true);
    replica.replicate(false);
    leader.set_epoch(3);
    leader.store_offset("consumer", 1);
    leader.flush_tracking().unwrap();
    for i in 0..10 {
        append(&mut leader, i);
    }
    let half = leader.next_offset();
    for i in 10..20 {
        append(&mut leader, i);
    }
    let shipped = leader.take_shipped();
    assert!(shipped.iter().filter(|s| s.starts_segment).count() > 2);
    replay(&mut replica, shipped);
    assert_eq!(replica.next_offset(), leader.next_offset());

    // Nothing is visible until a majority has it, then exactly that much.
    assert!(read_all(&leader).is_empty() && read_all(&replica).is_empty());
    leader.commit_to(half);
    replica.commit_to(half);
    let seen = read_all(&replica);
    assert_eq!(seen.last().unwrap().header.next_offset(), half);
    assert_eq!(read_all(&leader).len(), seen.len());
    assert!(seen.iter().all(|c| c.header.epoch == 3));
    leader.commit_to(leader.next_offset());
    replica.commit_to(replica.next_offset());
    assert_eq!(read_all(&replica).len(), read_all(&leader).len());

    // Same files, byte for byte; the replica's tracking comes from the leader's chunks.
    leader.sync().unwrap();
    replica.sync().unwrap();
    assert_eq!(replica.tracking().sequence("producer"), Some(19));
    assert_eq!(replica.tracking().offset("consumer"), Some(1));
    drop((leader, replica));
    assert_eq!(files(leader_dir.path()), files(replica_dir.path()));
    let (reopened, recovery) = Log::open(disk(), replica_dir.path(), small_segments()).unwrap();
    assert!(recovery.is_clean(), "{recovery}");
    assert_eq!(reopened.tracking().sequence("producer"), Some(19));
    assert_eq!(reopened.tracking().offset("consumer"), Some(1));
}

#[test]
fn a_replica_refuses_gaps_and_damaged_chunks_and_stays_writable() {
    let (leader_dir, replica_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut leader, _) = Log::open(disk(), leader_dir.path(), LogConfig::default()).unwrap();
    let (mut replica, _) = Log::open(disk(), replica_dir.path(), LogConfig::default()).unwrap();
    leader.replicate(true);
    replica.replicate(false);
    for i in 0..3 {
        append(&mut leader, i);
    }
    let shipped = leader.take_shipped();
    let raw = |i: usize| shipped[i].chunk.raw();
    match replica.append_raw(raw(1), false) {
        Err(LogError::OutOfSequence {
            expected: 0,
            got: 1,
        }) => {}
        other => panic!("{other:?}"),
    }
    let mut damaged = raw(0).to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    match replica.append_raw(damaged.into(), false) {
        Err(LogError::BadChunk { .. }) => {}
        other => panic!("{other:?}"),
    }
    for i in 0..3 {
        replica.append_raw(raw(i), false).unwrap();
    }
    assert_eq!(replica.next_offset(), leader.next_offset());
}

#[test]
fn a_replica_cut_back_to_the_new_leaders_end_keeps_the_rest_and_its_tracking() {
    let (leader_dir, replica_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut leader, _) = Log::open(disk(), leader_dir.path(), small_segments()).unwrap();
    let (mut replica, _) = Log::open(disk(), replica_dir.path(), small_segments()).unwrap();
    leader.replicate(true);
    replica.replicate(false);
    leader.set_epoch(2);
    for i in 0..8 {
        append(&mut leader, i);
    }
    let kept = leader.next_offset();
    for i in 8..14 {
        append(&mut leader, i);
    }
    replay(&mut replica, leader.take_shipped());
    let (last, epoch) = replica.tail().unwrap().unwrap();
    assert_eq!(epoch, 2);
    assert_eq!(Some(last), leader.reader().stats().last_chunk_id);
    // A new leader holds only the first chunks: the rest of this copy never reached a
    // majority, and goes (segments after the cut included).
    replica.commit_to(replica.next_offset());
    assert!(replica.is_boundary(kept).unwrap());
    assert!(!replica.is_boundary(replica.next_offset() + 5).unwrap());
    let old_reader = replica.reader();
    let replica = replica.truncate(kept).unwrap();
    assert_eq!(replica.next_offset(), kept);
    // Readers opened before the cut see the cut log.
    assert_eq!(old_reader.stats().next_offset, kept);
    assert_eq!(replica.tracking().sequence("producer"), Some(7));
    let tail = replica.tail().unwrap();
    drop(replica);
    let (reopened, recovery) = Log::open(disk(), replica_dir.path(), small_segments()).unwrap();
    assert!(recovery.is_clean(), "{recovery}");
    assert_eq!(reopened.next_offset(), kept);
    assert_eq!(reopened.tail().unwrap(), tail);
}

#[test]
fn a_replica_below_the_leaders_retention_starts_again_at_the_leaders_first_chunk() {
    let (leader_dir, replica_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let retained = LogConfig {
        retention: Retention {
            max_bytes: Some(600),
            max_age: None,
        },
        ..small_segments()
    };
    let (mut leader, _) = Log::open(disk(), leader_dir.path(), retained).unwrap();
    for i in 0..20 {
        append(&mut leader, i);
    }
    leader.commit();
    leader.enforce_retention(0).unwrap();
    let first = leader.reader().stats().first_chunk_id.unwrap();
    assert!(first > 0, "retention removed the first segments");

    // A replica that holds only what the leader no longer has: it cannot continue.
    let (mut replica, _) = Log::open(disk(), replica_dir.path(), small_segments()).unwrap();
    append(&mut replica, 0);
    let readers = replica.reader();
    let mut replica = replica.restart_at(first).unwrap();
    assert_eq!(replica.next_offset(), first);
    assert_eq!(
        readers.stats().first_chunk_id,
        None,
        "readers see the new, empty log"
    );
    assert_eq!(readers.stats().written_end, first);

    let mut cursor = leader.reader().cursor(Seek::First).unwrap();
    let mut shipped = Vec::new();
    while cursor.read_shipped(1 << 20, &mut shipped).unwrap() > 0 {}
    replay(&mut replica, shipped);
    replica.commit();
    assert_eq!(files(replica_dir.path()), files(leader_dir.path()));
    assert_eq!(read_all(&replica).len(), read_all(&leader).len());
    // Never backwards: what it holds is not thrown away for an older start.
    assert!(matches!(
        replica.restart_at(0),
        Err(LogError::OutOfSequence { .. })
    ));
}
