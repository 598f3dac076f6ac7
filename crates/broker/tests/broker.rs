//! Domain tests: the broker driven through sessions, no sockets.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use brook_broker::queue::{QueueReceiver, queue};
use brook_broker::{
    Broker, BrokerConfig, Budget, CONNECTION_BUDGET_BYTES, Charge, ControlEvent, Durability,
    Outgoing, Session,
};
use brook_protocol::{OffsetSpec, PublishBuilder};
use brook_storage::Storage;
use brook_storage::sim::SimDisk;

struct Conn {
    session: Session,
    out: QueueReceiver<Outgoing>,
    _control: QueueReceiver<ControlEvent>,
}

fn connect(broker: &Broker) -> Conn {
    let (control, control_rx) = queue();
    let (out, out_rx) = queue();
    Conn {
        session: broker.session("/", control, out, Budget::new(CONNECTION_BUDGET_BYTES)),
        out: out_rx,
        _control: control_rx,
    }
}

impl Conn {
    async fn publish(&mut self, publisher: u8, ids: std::ops::Range<u64>, size: usize) {
        let mut b = PublishBuilder::new(publisher);
        for id in ids.clone() {
            b.message(id, &vec![id as u8; size]);
        }
        self.session.publish(b.build(), Charge::default());
        let mut confirmed = Vec::new();
        while (confirmed.len() as u64) < ids.end - ids.start {
            match tokio::time::timeout(Duration::from_secs(10), self.out.recv())
                .await
                .unwrap()
                .unwrap()
            {
                Outgoing::Confirm { ids, .. } => confirmed.extend(ids),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(confirmed, ids.collect::<Vec<_>>());
    }
}

/// The stored offset and publisher sequence the max-age test wrote.
async fn tracking_is_kept(c: &mut Conn) {
    assert_eq!(
        c.session.query_offset("consumer", "aged").await.unwrap(),
        42
    );
    let sequence = c.session.query_publisher_sequence("producer", "aged").await;
    assert_eq!(sequence.unwrap(), 199);
}

fn props(kv: &[(&str, &str)]) -> Vec<(String, String)> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_trims_an_idle_stream_and_tracking_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path());
    config.retention_check_interval = Duration::from_millis(100);
    let broker = Broker::open(config.clone()).unwrap();
    broker
        .create_stream(
            "/",
            "aged",
            &props(&[("max-age", "1s"), ("stream-max-segment-size-bytes", "2000")]),
        )
        .await
        .unwrap();
    let mut c = connect(&broker);
    c.session.declare_publisher(0, "producer", "aged").unwrap();
    c.session
        .store_offset("consumer", "aged", 42, Charge::default());
    for batch in 0..20u64 {
        c.publish(0, batch * 10..batch * 10 + 10, 50).await;
    }
    let before = broker.stream_stats("/", "aged").unwrap();
    assert!(before.segments > 3, "{before:?}");
    assert_eq!(before.first_chunk_id, Some(0));
    // A consumer attached at `first` before trimming.
    let early = c
        .session
        .subscribe(1, "aged", OffsetSpec::First, 0, &[])
        .unwrap();
    c.session.start(early);

    // No more publishes: the periodic check alone must trim the stream.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let after = broker.stream_stats("/", "aged").unwrap();
    assert_eq!(after.segments, 1, "{after:?}");
    assert!(after.first_chunk_id.unwrap() > 0);

    // The early consumer keeps going: what it had read ahead, then from the new first chunk
    // to the end, never a chunk from a deleted segment it had not opened yet.
    c.session.credit(1, 1000).unwrap();
    let last = after.committed_chunk_id.unwrap();
    let mut ids = Vec::new();
    while ids.last() != Some(&last) {
        let Outgoing::Deliver { chunk, .. } =
            tokio::time::timeout(Duration::from_secs(5), c.out.recv())
                .await
                .unwrap()
                .unwrap()
        else {
            panic!()
        };
        ids.push(chunk.header.chunk_id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(ids.iter().any(|&id| id >= after.first_chunk_id.unwrap()));

    // Stored offsets and publisher sequences survive retention and a restart.
    tracking_is_kept(&mut c).await;
    drop(c);
    broker.shutdown().await;
    drop(broker);
    let broker = Broker::open(config).unwrap();
    let mut c = connect(&broker);
    tracking_is_kept(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_bytes_trims_by_segment() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
    broker
        .create_stream(
            "/",
            "sized",
            &props(&[
                ("max-length-bytes", "10000"),
                ("stream-max-segment-size-bytes", "2000"),
            ]),
        )
        .await
        .unwrap();
    let mut c = connect(&broker);
    c.session.declare_publisher(0, "", "sized").unwrap();
    for batch in 0..100u64 {
        c.publish(0, batch * 5..batch * 5 + 5, 100).await;
    }
    let stats = broker.stream_stats("/", "sized").unwrap();
    // Whole segments go: at most the limit plus the active segment remains.
    assert!(stats.bytes <= 10_000 + 2_000 + 600, "{stats:?}");
    assert!(stats.first_chunk_id.unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_durability_level_confirms() {
    for durability in [
        Durability::None,
        Durability::Batch(Duration::from_millis(20)),
        Durability::Always,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig::new(dir.path());
        config.durability = durability;
        let broker = Broker::open(config).unwrap();
        broker.create_stream("/", "d", &[]).await.unwrap();
        let mut c = connect(&broker);
        c.session.declare_publisher(7, "p", "d").unwrap();
        for i in 0..5 {
            c.publish(7, i * 10..i * 10 + 10, 8).await;
        }
        let stats = broker.stream_stats("/", "d").unwrap();
        assert_eq!(stats.next_offset, 50, "{durability:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_arguments_are_validated_and_compared() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
    let args = props(&[
        ("max-length-bytes", "1000"),
        ("queue-leader-locator", "least-leaders"),
        ("x-ignored", "1"),
    ]);
    broker.create_stream("/", "s", &args).await.unwrap();
    assert_eq!(
        broker
            .create_stream("/", "s", &args)
            .await
            .unwrap_err()
            .code()
            .0,
        0x05
    );
    assert_eq!(
        broker
            .create_stream("/", "s", &props(&[("max-length-bytes", "1000")]))
            .await
            .unwrap_err()
            .code()
            .0,
        0x11
    );
    assert_eq!(
        broker
            .create_stream("/", "bad", &props(&[("max-age", "forever")]))
            .await
            .unwrap_err()
            .code()
            .0,
        0x11
    );
    assert_eq!(
        broker
            .create_stream("/", "amq.s", &[])
            .await
            .unwrap_err()
            .code()
            .0,
        0x11
    );
    assert_eq!(
        broker
            .create_stream("/", "", &[])
            .await
            .unwrap_err()
            .code()
            .0,
        0x11
    );
    // Arguments persist across a restart and still compare equal.
    broker.shutdown().await;
    drop(broker);
    let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
    assert_eq!(
        broker
            .create_stream("/", "s", &args)
            .await
            .unwrap_err()
            .code()
            .0,
        0x05
    );
    assert_eq!(
        broker.streams(),
        vec![brook_broker::StreamId::new("/", "s")]
    );
    // A second broker on the same directory is refused.
    assert!(Broker::open(BrokerConfig::new(dir.path())).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_streams_are_gone_after_restart_and_names_can_be_reused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
    broker.create_stream("/", "s", &[]).await.unwrap();
    let mut c = connect(&broker);
    c.session.declare_publisher(0, "", "s").unwrap();
    c.publish(0, 0..3, 4).await;
    broker.delete_stream("/", "s").await.unwrap();
    broker.create_stream("/", "s", &[]).await.unwrap();
    assert_eq!(broker.stream_stats("/", "s").unwrap().next_offset, 0);
    broker.shutdown().await;
    drop((c, broker));
    let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
    assert_eq!(broker.stream_stats("/", "s").unwrap().next_offset, 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join("streams"))
            .unwrap()
            .count(),
        1
    );
}

fn sim_config(disk: &SimDisk) -> BrokerConfig {
    let mut config = BrokerConfig::new("/data");
    config.storage = Arc::new(disk.clone());
    config
}

/// Every file under `dir` with its bytes.
fn files(disk: &SimDisk, dir: &Path) -> BTreeMap<String, Vec<u8>> {
    disk.read_dir(dir)
        .unwrap()
        .into_iter()
        .map(|e| {
            let bytes = brook_storage::read(disk, &dir.join(&e.name)).unwrap();
            (e.name, bytes)
        })
        .collect()
}

/// Issue #9, hole 2 on the EIO/EMFILE path: a stream whose directory cannot be read is
/// unavailable, nothing of it is removed, and the others are served.
#[tokio::test]
async fn an_unreadable_stream_is_reported_never_removed() {
    let disk = SimDisk::new(9);
    let broker = Broker::open(sim_config(&disk)).unwrap();
    for name in ["a", "b"] {
        broker.create_stream("/", name, &[]).await.unwrap();
    }
    let mut c = connect(&broker);
    c.session.declare_publisher(1, "", "a").unwrap();
    c.publish(1, 0..50, 10).await;
    broker.shutdown().await;
    drop((c, broker));
    let streams = Path::new("/data/streams");
    let a = disk
        .read_dir(streams)
        .unwrap()
        .into_iter()
        .find(|e| e.name.starts_with("a-"))
        .map(|e| streams.join(e.name))
        .unwrap();
    let before = files(&disk, &a);

    disk.fail_reads_under(&a);
    let broker = Broker::open(sim_config(&disk)).unwrap();
    let unavailable = broker.unavailable_streams();
    assert_eq!(unavailable.len(), 1);
    assert_eq!(unavailable[0].name, "a");
    assert_eq!(broker.stream_stats("/", "a").unwrap_err().code().0, 0x06);
    assert!(broker.stream_stats("/", "b").is_ok());
    broker.shutdown().await;
    drop(broker);

    disk.clear_faults();
    assert_eq!(files(&disk, &a), before);
    let broker = Broker::open(sim_config(&disk)).unwrap();
    assert_eq!(broker.stream_stats("/", "a").unwrap().next_offset, 50);
}

/// Confirmed and failed ids of the next `n` answers.
async fn answers(out_rx: &mut QueueReceiver<Outgoing>, n: usize) -> (Vec<u64>, Vec<u64>) {
    let (mut ok, mut err) = (Vec::new(), Vec::new());
    while ok.len() + err.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(10), out_rx.recv()).await;
        match next.unwrap().unwrap() {
            Outgoing::Confirm { ids, .. } => ok.extend(ids),
            Outgoing::PublishError { errors, .. } => err.extend(errors.into_iter().map(|e| e.0)),
            other => panic!("{other:?}"),
        }
    }
    (ok, err)
}

/// Issue #9, hole 5 end to end: a disk that fills up fails the publishes it cannot store,
/// fences the publisher (the connection hears of it to send MetadataUpdate), and after a new
/// declaration and a retry every confirmed message is stored exactly once.
#[tokio::test]
async fn a_full_disk_fences_the_publisher_and_loses_nothing() {
    let disk = SimDisk::new(5);
    let broker = Broker::open(sim_config(&disk)).unwrap();
    broker.create_stream("/", "s", &[]).await.unwrap();
    let (control, mut control_rx) = queue();
    let (out, mut out_rx) = queue();
    let mut session = broker.session("/", control, out, Budget::new(CONNECTION_BUDGET_BYTES));
    session.declare_publisher(1, "p", "s").unwrap();
    let mut confirmed = BTreeSet::new();
    let mut failed = BTreeSet::new();
    let send = |session: &mut Session, ids: std::ops::Range<u64>| {
        let mut b = PublishBuilder::new(1);
        for id in ids {
            b.message(id, &id.to_be_bytes());
        }
        session.publish(b.build(), Charge::default());
    };
    send(&mut session, 0..10);
    let (ok, _) = answers(&mut out_rx, 10).await;
    confirmed.extend(ok);

    disk.set_free_space(Some(30));
    send(&mut session, 10..20);
    send(&mut session, 20..30);
    let (ok, err) = answers(&mut out_rx, 20).await;
    confirmed.extend(ok);
    failed.extend(err);
    assert!(!failed.is_empty());
    let fenced = tokio::time::timeout(Duration::from_secs(5), control_rx.recv())
        .await
        .unwrap();
    let Some(ControlEvent::PublishersFenced { stream, epoch }) = fenced else {
        panic!("{fenced:?}")
    };
    assert!(session.publishers_fenced(&stream, epoch));

    // Space again; the client declares the publisher again and retries what failed.
    disk.clear_faults();
    session.declare_publisher(1, "p", "s").unwrap();
    let sequence = session.query_publisher_sequence("p", "s").await.unwrap();
    assert!(
        failed.iter().all(|&id| id > sequence),
        "nothing failed was stored"
    );
    let retry: Vec<u64> = failed.iter().copied().collect();
    let mut b = PublishBuilder::new(1);
    for &id in &retry {
        b.message(id, &id.to_be_bytes());
    }
    session.publish(b.build(), Charge::default());
    let (ok, err) = answers(&mut out_rx, retry.len()).await;
    assert!(err.is_empty());
    confirmed.extend(ok);
    assert_eq!(confirmed, (0..30).collect());
    broker.shutdown().await;
    drop((session, broker));

    // Reopened: exactly the 30 confirmed messages (the simulation checks order and ids).
    let broker = Broker::open(sim_config(&disk)).unwrap();
    let stats = broker.stream_stats("/", "s").unwrap();
    assert_eq!(stats.next_offset, 30);
}

/// Data directories written before vhosts: `stream.json` without a vhost and
/// `super_streams.json` as a map by name. Both are read as vhost `/`, untouched.
#[tokio::test]
async fn data_from_before_vhosts_opens_in_the_default_vhost() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
    broker.create_stream("/", "old", &[]).await.unwrap();
    broker.shutdown().await;
    drop(broker);
    // Rewrite the metadata as brook wrote it before vhosts existed.
    let streams = dir.path().join("streams");
    let stream_dir = std::fs::read_dir(&streams)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for file in ["stream.json", "stream.json.bak"] {
        let path = stream_dir.join(file);
        let mut meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        meta.as_object_mut().unwrap().remove("vhost");
        std::fs::write(&path, meta.to_string()).unwrap();
    }
    let legacy = r#"{"ss": {"partitions": ["old"], "binding_keys": ["k"]}}"#;
    std::fs::write(dir.path().join("super_streams.json"), legacy).unwrap();

    let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
    assert_eq!(
        broker.streams(),
        vec![brook_broker::StreamId::new("/", "old")]
    );
    assert_eq!(
        broker.route("/", "ss", "k").unwrap(),
        vec!["old".to_string()]
    );
    assert!(broker.super_stream("v", "ss").is_err());
}
