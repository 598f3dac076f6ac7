//! Deterministic simulation of a stream's life on a simulated disk: creation, publishes from
//! two named producers (with retries and duplicates), stored offsets, segment rolls, injected
//! faults (ENOSPC, EIO, failed fsync), and a power cut at a random storage operation. After the
//! cut the stream is recovered from what the disk kept, and checked:
//!
//! * under `always` and `batch`, every confirmed message is there, and so is every stored
//!   offset and publisher sequence a later confirm covered;
//! * under every durability, nothing is duplicated or reordered, the recovered publisher
//!   sequences match the data, and the log takes new writes;
//! * whatever failed in between, a confirm means stored (checked before the cut too).
//!
//! `BROOK_SIM_SEEDS` sets how many seeds run (1,000 by default, as in CI); `BROOK_SIM_SEED`
//! replays one. Each seed runs its workload twice: once to count storage operations, once
//! with the power cut at a random one of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_log::{Log, LogConfig, Seek};
use brook_protocol::chunk::{self, Entry};
use brook_protocol::{PublishBuilder, ResponseCode};
use brook_storage::SharedStorage;
use brook_storage::sim::{Fault, SimDisk};
use tokio::sync::oneshot;

use super::core::{Core, CoreConfig, Reply};
use super::writer::StreamWriter;
use super::{Command, ConfirmTarget, PublishCmd, StreamId};
use crate::args::StreamArgs;
use crate::budget::Charge;
use crate::catalog::{self, Found, StreamMeta};
use crate::config::Durability;
use crate::counters::PublisherCounters;

const PUBLISHERS: usize = 2;
const CONSUMER: &str = "consumer";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What one seed does, derived from the seed alone.
#[derive(Debug, Clone)]
struct Plan {
    seed: u64,
    durability: Durability,
    segment_bytes: u64,
    chunk_entries: usize,
    steps: usize,
    /// (storage operation, fault) injected during the workload.
    fault: Option<(u64, Fault)>,
    /// Free space limited from this operation on, for a while (a disk filling up).
    full_disk: Option<(u64, u64)>,
}

impl Plan {
    fn new(seed: u64) -> Plan {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let durability = match rng.below(3) {
            0 => Durability::None,
            1 => Durability::Always,
            _ => Durability::Batch(Duration::from_millis(1 + rng.below(4))),
        };
        let faulty = rng.below(3) == 0;
        Plan {
            seed,
            durability,
            segment_bytes: 150 + rng.below(1500),
            chunk_entries: 1 + rng.below(6) as usize,
            steps: 10 + rng.below(30) as usize,
            fault: faulty.then(|| {
                let kind = if rng.below(2) == 0 {
                    Fault::Io
                } else {
                    Fault::NoSpace
                };
                (10 + rng.below(150), kind)
            }),
            full_disk: (faulty && rng.below(2) == 0).then(|| (10 + rng.below(150), rng.below(400))),
        }
    }

    fn durable(&self) -> bool {
        self.durability != Durability::None
    }
}

/// One named producer, as a careful client drives it.
#[derive(Debug)]
struct Producer {
    next_id: u64,
    /// When each id was first published (in command order).
    first_sent: BTreeMap<u64, u64>,
    epoch: u64,
    /// Published, answered by neither confirm nor error yet.
    in_flight: BTreeSet<u64>,
    /// Answered with an error: sent again later.
    failed: BTreeSet<u64>,
    confirmed: BTreeSet<u64>,
    counters: Arc<PublisherCounters>,
}

impl Default for Producer {
    fn default() -> Self {
        Self {
            next_id: 0,
            first_sent: BTreeMap::new(),
            epoch: 0,
            in_flight: BTreeSet::new(),
            failed: BTreeSet::new(),
            confirmed: BTreeSet::new(),
            counters: Arc::new(PublisherCounters::new(
                0,
                StreamId::new("/", "sim"),
                "",
                Arc::default(),
            )),
        }
    }
}

/// What the client side saw.
#[derive(Debug, Default)]
struct Observed {
    producers: Vec<Producer>,
    /// Commands sent so far.
    order: u64,
    /// Offsets stored: (command order, value), increasing.
    offsets: Vec<(u64, u64)>,
    /// The last stored offset that a confirm covers: an offset stored before a message is
    /// written with (or before) that message's chunk, so once a message first published after
    /// it is confirmed, the offset is as durable as the message.
    covered_offset: Option<u64>,
}

fn message(producer: usize, id: u64) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..8].copy_from_slice(&(producer as u64).to_be_bytes());
    m[8..].copy_from_slice(&id.to_be_bytes());
    m
}

fn reference(producer: usize) -> String {
    format!("p{producer}")
}

fn streams_dir() -> PathBuf {
    PathBuf::from("/data/streams")
}

fn log_config(plan: &Plan) -> LogConfig {
    LogConfig {
        max_segment_bytes: plan.segment_bytes,
        ..LogConfig::default()
    }
}

/// Creates the stream as the registry does: metadata, then the log.
fn create(storage: &SharedStorage, plan: &Plan) -> Option<StreamWriter> {
    create_as(storage, plan, StreamWriter::new)
}

fn create_as(
    storage: &SharedStorage,
    plan: &Plan,
    writer: impl FnOnce(Log, Core) -> StreamWriter,
) -> Option<StreamWriter> {
    let streams = streams_dir();
    // As Broker::open does: the data directory's own entries are made durable too.
    storage.create_dir_all(&streams).ok()?;
    storage.sync_dir(Path::new("/")).ok()?;
    storage.sync_dir(Path::new("/data")).ok()?;
    let meta = StreamMeta {
        vhost: "/".into(),
        name: "s".into(),
        arguments: StreamArgs::default(),
        created_at_ms: 1,
    };
    let dir = catalog::create(&**storage, &streams, &meta).ok()?;
    let (log, _) = Log::open(storage.clone(), &dir, log_config(plan)).ok()?;
    let core = Core::new(
        CoreConfig {
            durability: plan.durability,
            filter_size: 16,
            max_chunk_bytes: 1 << 20,
            max_chunk_entries: plan.chunk_entries,
        },
        Instant::now(),
    );
    Some(writer(log, core))
}

/// Runs the workload until its end or the power cut. Returns what the client saw.
fn run(disk: &SimDisk, plan: &Plan) -> Observed {
    let storage: SharedStorage = Arc::new(disk.clone());
    let mut rng = Rng(plan.seed | 1);
    let mut seen = Observed {
        producers: (0..PUBLISHERS).map(|_| Producer::default()).collect(),
        ..Observed::default()
    };
    let Some(mut writer) = create(&storage, plan) else {
        return seen;
    };
    let outgoing = crate::queue::queue().0;
    let mut now = Instant::now();
    let mut offset = 0;
    for _ in 0..plan.steps {
        if disk.is_off() {
            break;
        }
        faults(disk, plan);
        let mut batch = Vec::new();
        for _ in 0..1 + rng.below(3) {
            seen.order += 1;
            if rng.below(5) == 0 {
                offset += 1 + rng.below(3);
                seen.offsets.push((seen.order, offset));
                batch.push(Command::StoreOffset {
                    reference: CONSUMER.into(),
                    offset,
                    _charge: Charge::default(),
                });
            } else {
                let p = rng.below(PUBLISHERS as u64) as usize;
                let order = seen.order;
                batch.push(publish(
                    &mut seen.producers[p],
                    p,
                    order,
                    &outgoing,
                    &mut rng,
                ));
            }
        }
        now += Duration::from_millis(rng.below(3));
        let mut outcome = writer.handle(batch, now);
        if let Some(at) = outcome.sync_at
            && rng.below(2) == 0
        {
            now = now.max(at);
            outcome.then(writer.sync_due(now));
        }
        // The stream goes idle now and then: it syncs, closes its files and reopens them at
        // the next write.
        if rng.below(4) == 0 {
            outcome.then(writer.release_files(now));
        }
        answer(&mut seen, outcome.replies, outcome.fence);
    }
    seen
}

/// Sets this step's faults: a failing call, and a disk that fills up and is freed again.
fn faults(disk: &SimDisk, plan: &Plan) {
    let ops = disk.ops();
    if let Some((at, fault)) = plan.fault
        && ops < at
        && at <= ops + 20
    {
        disk.fail_at(at, fault);
    }
    if let Some((from, free)) = plan.full_disk {
        let full = ops >= from && ops < from + 60;
        disk.set_free_space(full.then_some(free));
    }
}

/// The next Publish of a producer: failed ids first (a retry), then new ones, sometimes an
/// id again that was confirmed or is still unanswered (duplicates).
fn publish(
    p: &mut Producer,
    index: usize,
    order: u64,
    outgoing: &crate::outgoing::OutgoingSender,
    rng: &mut Rng,
) -> Command {
    let mut ids: Vec<u64> = std::mem::take(&mut p.failed).into_iter().collect();
    for _ in 0..1 + rng.below(4) {
        ids.push(p.next_id);
        p.next_id += 1;
    }
    if rng.below(4) == 0
        && let Some(&dup) = p.confirmed.iter().next_back()
    {
        ids.push(dup);
    }
    // Sent again before its answer came (a client resending after a timeout).
    if rng.below(4) == 0
        && let Some(&dup) = p.in_flight.iter().next_back()
    {
        ids.push(dup);
    }
    ids.sort_unstable();
    ids.dedup();
    let mut b = PublishBuilder::new(index as u8);
    for &id in &ids {
        b.message(id, &message(index, id));
        p.in_flight.insert(id);
        p.first_sent.entry(id).or_insert(order);
    }
    Command::Publish(PublishCmd {
        take: ids.len(),
        publish: b.build(),
        reference: Some(Arc::from(reference(index))),
        target: ConfirmTarget {
            outgoing: outgoing.clone(),
            publisher_id: index as u8,
            publisher: p.counters.clone(),
        },
        epoch: p.epoch,
        charge: Charge::default(),
        received: Instant::now(),
    })
}

/// Applies confirms and errors as a client does: errors are retried; a fenced publisher is
/// declared again (the new epoch) before its retry.
fn answer(seen: &mut Observed, replies: Vec<Reply>, fence: u64) {
    for reply in replies {
        let (group, code) = match reply {
            Reply::Confirm(g) => (g, None),
            Reply::Error(g, code) => (g, Some(code)),
        };
        let p = &mut seen.producers[group.target.publisher_id as usize];
        for id in group.ids {
            p.in_flight.remove(&id);
            match code {
                None => {
                    p.confirmed.insert(id);
                    let first = p.first_sent.get(&id).copied().unwrap_or(0);
                    let covered = seen.offsets.iter().rev().find(|(o, _)| *o < first);
                    if let Some(&(_, offset)) = covered {
                        seen.covered_offset = seen.covered_offset.max(Some(offset));
                    }
                }
                Some(code) => {
                    if code == ResponseCode::PUBLISHER_DOES_NOT_EXIST {
                        p.epoch = fence;
                    }
                    if !p.confirmed.contains(&id) {
                        p.failed.insert(id);
                    }
                }
            }
        }
    }
}

/// What the recovered stream holds.
struct Recovered {
    messages: Vec<(usize, u64)>,
    sequences: BTreeMap<usize, Option<u64>>,
    offset: Option<u64>,
    log: Log,
}

fn recover(storage: SharedStorage, plan: &Plan) -> Result<Option<Recovered>, String> {
    // The stream's directory, if its creation got that far.
    let entries = match storage.read_dir(&streams_dir()) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let dir = match entries.as_slice() {
        [] => return Ok(None),
        [one] => streams_dir().join(&one.name),
        more => return Err(format!("several stream directories: {more:?}")),
    };
    match catalog::inspect(&*storage, &dir) {
        Found::Stream(_) => {}
        Found::Unfinished => return Ok(None),
        other => return Err(format!("stream directory after recovery: {other:?}")),
    }
    let (log, _) = Log::open(storage, &dir, log_config(plan)).map_err(|e| e.to_string())?;
    let mut cursor = log
        .reader()
        .cursor(Seek::First)
        .map_err(|e| e.to_string())?;
    let mut chunks = Vec::new();
    while cursor
        .read(1 << 20, &mut chunks)
        .map_err(|e| e.to_string())?
        > 0
    {}
    let mut messages = Vec::new();
    for c in chunks.iter().filter(|c| c.is_user()) {
        for entry in chunk::entries(&c.data()) {
            let Ok(Entry::Simple(body)) = entry else {
                return Err(format!("unreadable entry in chunk {}", c.header.chunk_id));
            };
            let (p, id) = body.split_at(8);
            let p = u64::from_be_bytes(p.try_into().map_err(|_| "short message")?);
            let id = u64::from_be_bytes(id.try_into().map_err(|_| "short message")?);
            messages.push((p as usize, id));
        }
    }
    let sequences = (0..PUBLISHERS)
        .map(|p| (p, log.tracking().sequence(&reference(p))))
        .collect();
    let offset = log.tracking().offset(CONSUMER);
    Ok(Some(Recovered {
        messages,
        sequences,
        offset,
        log,
    }))
}

/// The checks that hold whatever the durability, and the ones durability adds.
fn check(
    plan: &Plan,
    seen: &Observed,
    got: &Option<Recovered>,
    after_cut: bool,
) -> Result<(), String> {
    let Some(got) = got else {
        let confirmed = seen.producers.iter().any(|p| !p.confirmed.is_empty());
        return if confirmed && (plan.durable() || !after_cut) {
            Err("stream lost after confirms".into())
        } else {
            Ok(())
        };
    };
    let mut last: BTreeMap<usize, u64> = BTreeMap::new();
    for &(p, id) in &got.messages {
        if last.get(&p).is_some_and(|&l| id <= l) {
            return Err(format!(
                "publisher {p}: id {id} after {:?} (duplicate or reorder)",
                last[&p]
            ));
        }
        last.insert(p, id);
    }
    for p in 0..PUBLISHERS {
        if got.sequences[&p] != last.get(&p).copied() {
            return Err(format!(
                "publisher {p}: recovered sequence {:?}, data ends at {:?}",
                got.sequences[&p],
                last.get(&p)
            ));
        }
    }
    if !after_cut || plan.durable() {
        let stored: BTreeSet<(usize, u64)> = got.messages.iter().copied().collect();
        for (p, producer) in seen.producers.iter().enumerate() {
            if let Some(id) = producer
                .confirmed
                .iter()
                .find(|&&id| !stored.contains(&(p, id)))
            {
                return Err(format!("publisher {p}: confirmed id {id} is not stored"));
            }
        }
        if got.offset < seen.covered_offset {
            return Err(format!(
                "stored offset {:?} recovered as {:?}",
                seen.covered_offset, got.offset
            ));
        }
    }
    if got.offset > seen.offsets.last().map(|&(_, o)| o) {
        return Err(format!("offset {:?} was never stored", got.offset));
    }
    Ok(())
}

/// Runs one seed: a clean run (checked on a clean reopen), then the same run cut short.
fn simulate(seed: u64) -> Result<(), String> {
    let plan = Plan::new(seed);
    let disk = SimDisk::new(seed);
    let seen = run(&disk, &plan);
    let ops = disk.ops();
    // A reopen of the same disk (faults over, space freed) must show every confirm.
    disk.clear_faults();
    let reopened = recover(Arc::new(disk.clone()), &plan)?;
    check(&plan, &seen, &reopened, false)?;

    let cut_at = 1 + Rng(seed ^ 0x5eed).below(ops.max(1));
    let disk = SimDisk::new(seed);
    disk.cut_power_at(cut_at);
    let seen = run(&disk, &plan);
    let storage: SharedStorage = Arc::new(disk.after_power_cut());
    let at = |e| format!("power cut at operation {cut_at} of {ops}: {e}");
    let got = recover(storage.clone(), &plan).map_err(at)?;
    check(&plan, &seen, &got, true).map_err(at)?;
    if let Some(mut got) = got {
        // The recovered log takes new writes.
        let next = got.log.next_offset();
        got.log
            .append_user(&brook_log::UserChunk {
                data: &chunk_of(b"after"),
                num_entries: 1,
                num_records: 1,
                bloom: &[],
                sequences: &[],
            })
            .map_err(|e| format!("append after recovery: {e}"))?;
        if got.log.next_offset() <= next {
            return Err("append after recovery did not advance".into());
        }
    }
    Ok(())
}

fn chunk_of(body: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    data.extend_from_slice(&(body.len() as u32).to_be_bytes());
    data.extend_from_slice(body);
    data
}

#[test]
fn power_cuts_and_faults_never_lose_a_confirmed_message() {
    let seeds: Vec<u64> = match std::env::var("BROOK_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("BROOK_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("BROOK_SIM_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1000u64);
            (0..n).collect()
        }
    };
    let mut failures = Vec::new();
    for &seed in &seeds {
        if let Err(e) = simulate(seed) {
            failures.push(format!(
                "seed {seed} ({:?}): {e}\n  replay: BROOK_SIM_SEED={seed} cargo test -p brook-broker power_cuts",
                Plan::new(seed)
            ));
        }
    }
    println!(
        "{} seeds, {} power cuts, {} failures",
        seeds.len(),
        seeds.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_query_during_a_simulation_sees_what_was_stored() {
    let plan = Plan::new(1);
    let disk = SimDisk::new(1);
    let storage: SharedStorage = Arc::new(disk);
    let mut writer = create(&storage, &plan).expect("created");
    let (reply, mut rx) = oneshot::channel();
    writer.handle(
        vec![
            Command::StoreOffset {
                reference: CONSUMER.into(),
                offset: 7,
                _charge: Charge::default(),
            },
            Command::QueryOffset {
                reference: CONSUMER.into(),
                reply,
            },
        ],
        Instant::now(),
    );
    assert_eq!(rx.try_recv().ok(), Some(Some(7)));
}

#[test]
fn a_leader_answers_queries_once_a_majority_holds_what_they_read() {
    let plan = Plan::new(1);
    let storage: SharedStorage = Arc::new(SimDisk::new(1));
    let leader = |log, core| StreamWriter::leader(log, core, 1, 3);
    let mut writer = create_as(&storage, &plan, leader).expect("created");
    let (offset_reply, mut offset) = oneshot::channel();
    let (sequence_reply, mut sequence) = oneshot::channel();
    writer.handle(
        vec![
            Command::StoreOffset {
                reference: CONSUMER.into(),
                offset: 7,
                _charge: Charge::default(),
            },
            Command::QueryOffset {
                reference: CONSUMER.into(),
                reply: offset_reply,
            },
            Command::QuerySequence {
                reference: "p".into(),
                reply: sequence_reply,
            },
        ],
        Instant::now(),
    );
    assert!(
        offset.try_recv().is_err(),
        "the leader alone is no majority"
    );
    assert!(sequence.try_recv().is_err());
    // A replica acks everything the leader wrote (an ack is capped at the leader's end).
    let acked = Command::Acked {
        node: 2,
        end: u64::MAX,
    };
    writer.handle(vec![acked], Instant::now());
    assert_eq!(offset.try_recv().ok(), Some(Some(7)));
    assert_eq!(sequence.try_recv().ok(), Some(0));
}
