//! Crash test: a brook child process is SIGKILLed at random moments while a client publishes
//! with confirms and stores offsets. After every restart, every confirmed message must be
//! readable exactly once and in order, stored offsets and the publisher sequence must be at
//! least what was acknowledged, and the log must accept new writes.
//!
//! `BROOK_CRASH_ITERATIONS` sets the number of kills (20 by default, as in CI);
//! `BROOK_CRASH_ITERATIONS=200 cargo test --release --test crash` is the long run;
//! `BROOK_CRASH_SEED` replays a run's random choices.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use brook_protocol::*;
use common::child::Brook;
use common::raw::Raw;

const STREAM: &str = "crash";
const PRODUCER: &str = "crash-producer";
const CONSUMER: &str = "crash-consumer";

fn start(data_dir: &std::path::Path, durability: &str) -> Brook {
    Brook::start(data_dir, &["--durability", durability])
}

/// xorshift: reproducible randomness without a dependency; the seed is printed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the client knows was acknowledged.
#[derive(Default)]
struct Acked {
    /// Publishing ids confirmed so far (ids are the message bodies).
    confirmed: Vec<u64>,
    /// The last stored offset a QueryOffset returned.
    offset: Option<u64>,
}

async fn publish_until_killed(
    c: &mut Raw,
    first_id: u64,
    acked: &mut Acked,
    kill_at: Instant,
    rng: &mut Rng,
) {
    let mut next_id = first_id;
    let mut in_flight = 0usize;
    while Instant::now() < kill_at {
        // Keep a window of unconfirmed batches, of random sizes.
        while in_flight < 8 {
            let n = 1 + rng.below(64);
            let mut b = PublishBuilder::new(0);
            for _ in 0..n {
                b.message(next_id, &next_id.to_be_bytes());
                next_id += 1;
            }
            c.send(Frame::Publish(b.build())).await;
            in_flight += 1;
        }
        if rng.below(10) == 0 {
            let offset = acked.confirmed.last().copied().unwrap_or(0);
            c.send(Frame::StoreOffset(StoreOffset {
                reference: CONSUMER.into(),
                stream: STREAM.into(),
                offset,
            }))
            .await;
            c.send(Frame::QueryOffset(QueryOffset {
                correlation_id: 7,
                reference: CONSUMER.into(),
                stream: STREAM.into(),
            }))
            .await;
        }
        let Ok(Some(frame)) = tokio::time::timeout_at(kill_at.into(), c.recv()).await else {
            return;
        };
        match frame {
            Frame::PublishConfirm(p) => {
                in_flight -= 1;
                acked.confirmed.extend(p.publishing_ids);
            }
            Frame::QueryOffsetResponse(r) if r.code.is_ok() => {
                acked.offset = Some(acked.offset.map_or(r.offset, |o| o.max(r.offset)));
            }
            Frame::QueryOffsetResponse(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Reads the stream from `from` and checks it against what was confirmed. Returns the offset
/// to verify from next time and the highest id seen.
async fn verify(c: &mut Raw, from: u64, acked: &Acked, last_seen: &mut Option<u64>) -> u64 {
    c.send(Frame::Subscribe(Subscribe {
        correlation_id: 3,
        subscription_id: 1,
        stream: STREAM.into(),
        offset: OffsetSpec::Offset(from),
        credit: 100,
        properties: None,
    }))
    .await;
    let must_reach = acked.confirmed.last().copied();
    let mut next_from = from;
    loop {
        let reached = must_reach.is_none_or(|m| last_seen.is_some_and(|s| s >= m));
        let wait = if reached {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(10)
        };
        let frame = match tokio::time::timeout(wait, c.recv()).await {
            Err(_) if reached => break,
            Err(_) => panic!("confirmed message {must_reach:?} missing; last seen {last_seen:?}"),
            Ok(f) => f.unwrap(),
        };
        match frame {
            Frame::SubscribeResponse(r) => assert!(r.code.is_ok()),
            Frame::Deliver(d) => {
                // One credit back per chunk, as the official clients do.
                c.send(Frame::Credit(Credit {
                    subscription_id: 1,
                    credit: 1,
                }))
                .await;
                let chunk = d.chunk().unwrap();
                chunk.verify().unwrap();
                for r in chunk.records() {
                    let (offset, body) = r.unwrap();
                    if offset < from {
                        continue;
                    }
                    let id = u64::from_be_bytes(body.try_into().unwrap());
                    // Exactly once, in order: ids only grow.
                    assert!(
                        last_seen.is_none_or(|s| id > s),
                        "id {id} after {last_seen:?}: duplicate or out of order"
                    );
                    *last_seen = Some(id);
                }
                next_from = chunk.header.next_offset();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    c.send(Frame::Unsubscribe(Unsubscribe {
        correlation_id: 4,
        subscription_id: 1,
    }))
    .await;
    loop {
        if let Some(Frame::UnsubscribeResponse(_)) = c.recv().await {
            break;
        }
    }
    next_from
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_data_survives_sigkill() {
    let iterations: usize = std::env::var("BROOK_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    // A failure replays with BROOK_CRASH_SEED=<the printed seed> (kill moments and batch
    // sizes follow from it; the broker's own timing still varies).
    let seed = match std::env::var("BROOK_CRASH_SEED") {
        Ok(s) => s.parse().expect("BROOK_CRASH_SEED is a number"),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        }
    };
    println!("seed {seed} (replay: BROOK_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Acked::default();
    let mut verified_from = 0u64;
    let mut last_seen = None;

    for i in 0..=iterations {
        // A third of the runs with fsync before confirm, the rest as RabbitMQ (page cache).
        let durability = if i % 3 == 2 { "always" } else { "none" };
        println!("iteration {i} ({durability})");
        let brook = start(dir.path(), durability);
        let mut c = Raw::open(brook.addr).await;
        if i == 0 {
            assert_eq!(
                c.create(STREAM, &[("stream-max-segment-size-bytes", "100000")])
                    .await,
                ResponseCode::OK
            );
        }
        // After the restart: the sequence and the stored offset are at least what was acked.
        let r = c
            .request(Frame::QueryPublisherSequence(QueryPublisherSequence {
                correlation_id: 1,
                reference: PRODUCER.into(),
                stream: STREAM.into(),
            }))
            .await;
        let Frame::QueryPublisherSequenceResponse(seq) = r else {
            panic!("{r:?}")
        };
        if let Some(&max) = acked.confirmed.last() {
            assert!(
                seq.sequence >= max,
                "iteration {i}: sequence {} < confirmed {max}",
                seq.sequence
            );
        }
        let r = c
            .request(Frame::QueryOffset(QueryOffset {
                correlation_id: 2,
                reference: CONSUMER.into(),
                stream: STREAM.into(),
            }))
            .await;
        let Frame::QueryOffsetResponse(off) = r else {
            panic!("{r:?}")
        };
        if let Some(stored) = acked.offset {
            assert!(
                off.code.is_ok() && off.offset >= stored,
                "iteration {i}: offset {off:?} < acked {stored}"
            );
        }
        verified_from = verify(&mut c, verified_from, &acked, &mut last_seen).await;
        if i == iterations {
            // Finally, everything from the start once more.
            let mut seen = None;
            verify(&mut c, 0, &acked, &mut seen).await;
            assert_eq!(seen, last_seen);
            break;
        }
        // Publish (and store offsets) until a random moment, then SIGKILL.
        let r = c
            .request(Frame::DeclarePublisher(DeclarePublisher {
                correlation_id: 5,
                publisher_id: 0,
                reference: PRODUCER.into(),
                stream: STREAM.into(),
            }))
            .await;
        assert!(
            matches!(r, Frame::DeclarePublisherResponse(ref r) if r.code.is_ok()),
            "{r:?}"
        );
        let kill_at = Instant::now() + Duration::from_millis(20 + rng.below(200));
        publish_until_killed(&mut c, seq.sequence + 1, &mut acked, kill_at, &mut rng).await;
        brook.kill();
    }
    assert!(!acked.confirmed.is_empty());
    println!(
        "{} confirmed messages over {iterations} kills",
        acked.confirmed.len()
    );
}
