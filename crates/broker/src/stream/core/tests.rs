use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_log::UserChunk;
use brook_protocol::{PublishBuilder, ResponseCode};

use super::*;
use crate::budget::Budget;
use crate::counters::PublisherCounters;
use crate::stream::StreamId;

/// A log that records what it is given and fails when told to.
#[derive(Default)]
struct Sink {
    stored: HashMap<String, u64>,
    chunks: Vec<(u16, Vec<(String, u64)>)>,
    fail: Option<AppendFailure>,
}

impl ChunkSink for Sink {
    fn stored_sequence(&self, reference: &str) -> Option<u64> {
        self.stored.get(reference).copied()
    }

    fn append(&mut self, chunks: &[UserChunk<'_>]) -> Result<(), AppendFailure> {
        if let Some(f) = self.fail.take() {
            return Err(f);
        }
        for chunk in chunks {
            for (r, s) in chunk.sequences {
                self.stored.insert(r.to_string(), *s);
            }
            let seqs = chunk
                .sequences
                .iter()
                .map(|(r, s)| (r.to_string(), *s))
                .collect();
            self.chunks.push((chunk.num_entries, seqs));
        }
        Ok(())
    }
}

fn core(durability: Durability, max_entries: usize) -> Core {
    core_at(durability, max_entries, Instant::now())
}

fn core_at(durability: Durability, max_entries: usize, now: Instant) -> Core {
    Core::new(
        CoreConfig {
            durability,
            filter_size: 16,
            max_chunk_bytes: 1 << 20,
            max_chunk_entries: max_entries,
        },
        now,
    )
}

fn target() -> ConfirmTarget {
    ConfirmTarget {
        outgoing: crate::queue::queue().0,
        publisher_id: 1,
        publisher: Arc::new(PublisherCounters::new(
            1,
            StreamId::new("/", "t"),
            "",
            Arc::default(),
        )),
    }
}

fn cmd(target: &ConfirmTarget, ids: &[u64], epoch: u64, charge: Charge) -> PublishCmd {
    let mut b = PublishBuilder::new(target.publisher_id);
    for &id in ids {
        b.message(id, b"m");
    }
    PublishCmd {
        publish: b.build(),
        take: ids.len(),
        reference: Some(Arc::from("p")),
        target: target.clone(),
        epoch,
        charge,
        received: Instant::now(),
    }
}

/// (confirmed ids, failed ids with codes), in reply order.
fn outcome(replies: Vec<Reply>) -> (Vec<u64>, Vec<(u64, ResponseCode)>) {
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for r in replies {
        match r {
            Reply::Confirm(g) => ok.extend(g.ids),
            Reply::Error(g, code) => failed.extend(g.ids.into_iter().map(|id| (id, code))),
        }
    }
    (ok, failed)
}

#[test]
fn deduplicates_within_a_batch_and_against_the_log() {
    let (t, mut sink) = (target(), Sink::default());
    sink.stored.insert("p".into(), 2);
    let mut c = core(Durability::None, 100);
    c.publish(cmd(&t, &[1, 2, 3, 4], 0, Charge::default()), &mut sink);
    c.publish(cmd(&t, &[4, 5], 0, Charge::default()), &mut sink);
    assert_eq!(c.end_batch(&mut sink, Instant::now()), Step::Commit);
    c.commit();
    let (ok, failed) = outcome(c.take_replies());
    // Written ids first, then the duplicates in a frame of their own.
    assert_eq!(ok, [3, 4, 5, 1, 2, 4]);
    assert!(failed.is_empty());
    assert_eq!(sink.chunks, [(3, vec![("p".to_string(), 5)])]);
    assert_eq!(c.sequence("p", &sink), Some(5));
}

/// osiris's adaptive chunk size: a large frame to an idle stream becomes chunks of 32, 64, …
/// and the rest, so `last` delivers what RabbitMQ would (issue #14).
#[test]
fn chunk_sizes_follow_osiris() {
    let (t, mut sink) = (target(), Sink::default());
    let mut c = core(Durability::None, super::super::MAX_CHUNK_ENTRIES);
    let ids: Vec<u64> = (0..4999).collect();
    c.publish(cmd(&t, &ids, 0, Charge::default()), &mut sink);
    c.end_batch(&mut sink, Instant::now());
    let entries: Vec<u16> = sink.chunks.iter().map(|c| c.0).collect();
    assert_eq!(entries, [32, 64, 128, 256, 512, 1024, 2048, 935]);
    // The last chunk was cut because the queue ran empty: the size halves (to 2,048).
    sink.chunks.clear();
    let ids: Vec<u64> = (4999..9999).collect();
    c.publish(cmd(&t, &ids, 0, Charge::default()), &mut sink);
    c.end_batch(&mut sink, Instant::now());
    let entries: Vec<u16> = sink.chunks.iter().map(|c| c.0).collect();
    assert_eq!(entries, [2048, 2952]);
}

#[test]
fn chunks_are_bounded_in_entries() {
    let (t, mut sink) = (target(), Sink::default());
    let mut c = core(Durability::None, 2);
    c.publish(cmd(&t, &[1, 2, 3, 4, 5], 0, Charge::default()), &mut sink);
    c.end_batch(&mut sink, Instant::now());
    let entries: Vec<u16> = sink.chunks.iter().map(|c| c.0).collect();
    assert_eq!(entries, [2, 2, 1]);
}

/// The disk-full hole: a failed chunk followed by later ids of the same publisher in the same
/// or a later batch must not let a retry be deduplicated without being stored.
#[test]
fn a_failed_write_fences_its_publishers() {
    let (t, mut sink) = (target(), Sink::default());
    let mut c = core(Durability::None, 2);
    sink.fail = Some(AppendFailure::RolledBack);
    // Chunks [1,2] [3,4] [5] [6], written together: the write fails, none is stored.
    c.publish(cmd(&t, &[1, 2, 3, 4, 5], 0, Charge::default()), &mut sink);
    c.publish(cmd(&t, &[6], 0, Charge::default()), &mut sink);
    assert_eq!(c.end_batch(&mut sink, Instant::now()), Step::Idle);
    // Sent before the publisher heard of it: refused, so it cannot follow the lost ones.
    c.publish(cmd(&t, &[7], 0, Charge::default()), &mut sink);
    let (ok, failed) = outcome(c.take_replies());
    assert!(ok.is_empty());
    assert_eq!(
        failed,
        [
            (1, ResponseCode::INTERNAL_ERROR),
            (2, ResponseCode::INTERNAL_ERROR),
            (3, ResponseCode::INTERNAL_ERROR),
            (4, ResponseCode::INTERNAL_ERROR),
            (5, ResponseCode::INTERNAL_ERROR),
            (6, ResponseCode::INTERNAL_ERROR),
            (7, ResponseCode::PUBLISHER_DOES_NOT_EXIST),
        ]
    );
    assert!(sink.chunks.is_empty());
    assert_eq!(c.fence(), 1);
    // Declared again (new epoch), the publisher retries from its last stored id: all stored.
    c.publish(cmd(&t, &[1, 2, 3], 1, Charge::default()), &mut sink);
    c.end_batch(&mut sink, Instant::now());
    c.commit();
    assert_eq!(outcome(c.take_replies()).0, [1, 2, 3]);
}

#[test]
fn a_broken_log_fails_what_was_not_committed_and_everything_after() {
    let (t, mut sink) = (target(), Sink::default());
    let mut c = core(Durability::Always, 100);
    c.publish(cmd(&t, &[1, 2], 0, Charge::default()), &mut sink);
    assert_eq!(c.end_batch(&mut sink, Instant::now()), Step::Sync);
    assert_eq!(c.synced(false, Instant::now()), Step::Idle);
    assert!(c.is_broken());
    c.publish(cmd(&t, &[3], 1, Charge::default()), &mut sink);
    let (ok, failed) = outcome(c.take_replies());
    assert!(ok.is_empty());
    assert_eq!(
        failed.iter().map(|f| f.0).collect::<Vec<_>>(),
        [1, 2, 3],
        "{failed:?}"
    );
}

#[test]
fn durability_decides_when_confirms_go() {
    let (t, mut sink) = (target(), Sink::default());
    let start = Instant::now();
    let mut c = core_at(Durability::Batch(Duration::from_millis(5)), 100, start);
    c.publish(cmd(&t, &[1], 0, Charge::default()), &mut sink);
    let due = start + Duration::from_millis(5);
    assert_eq!(c.end_batch(&mut sink, start), Step::SyncAt(due));
    assert!(c.take_replies().is_empty());
    assert_eq!(c.step(due), Step::Sync);
    assert_eq!(c.synced(true, due), Step::Commit);
    c.commit();
    assert_eq!(outcome(c.take_replies()).0, [1]);
    assert_eq!(c.step(due), Step::Idle);

    // A duplicate of a written but unsynced id waits for the same sync.
    c.publish(cmd(&t, &[2], 0, Charge::default()), &mut sink);
    c.end_batch(&mut sink, due);
    c.publish(cmd(&t, &[2], 0, Charge::default()), &mut sink);
    assert!(matches!(c.end_batch(&mut sink, due), Step::SyncAt(_)));
    assert!(c.take_replies().is_empty());
}

#[tokio::test]
async fn charges_return_when_replies_are_dropped() {
    let (t, mut sink) = (target(), Sink::default());
    let budget = Budget::new(100);
    let mut c = core(Durability::None, 100);
    c.publish(cmd(&t, &[1, 2], 0, budget.charge(40).await), &mut sink);
    c.publish(cmd(&t, &[1], 0, budget.charge(30).await), &mut sink);
    sink.fail = Some(AppendFailure::RolledBack);
    c.end_batch(&mut sink, Instant::now());
    c.publish(cmd(&t, &[9], 0, budget.charge(20).await), &mut sink);
    assert_eq!(budget.available(), 10);
    // The duplicate of id 1 failed with the chunk holding the original.
    assert_eq!(
        c.take_replies()
            .iter()
            .filter(|r| matches!(r, Reply::Error(..)))
            .count(),
        3
    );
    let mut c = core(Durability::None, 100);
    c.publish(cmd(&t, &[1, 2], 0, budget.charge(40).await), &mut sink);
    c.publish(cmd(&t, &[3], 0, budget.charge(20).await), &mut sink);
    c.end_batch(&mut sink, Instant::now());
    assert_eq!(budget.available(), 40);
    c.commit();
    let replies = c.take_replies();
    assert_eq!(budget.available(), 40, "held until the replies are written");
    drop(replies);
    assert_eq!(budget.available(), 100);
}
