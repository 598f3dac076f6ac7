//! `brook verify`: the offline check reports damage precisely and changes nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use brook_protocol::*;
use common::TestBroker;
use common::raw::Raw;

fn verify(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_brook"))
        .arg("verify")
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    (out.status.code().unwrap(), text)
}

/// Every file under `dir`, recursively, with its bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(tree(&path));
        } else if !path.ends_with(".lock") {
            out.insert(path.display().to_string(), std::fs::read(&path).unwrap());
        }
    }
    out
}

fn segment_of(data: &Path, stream: &str) -> std::path::PathBuf {
    let dir = std::fs::read_dir(data.join("streams"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("{stream}-"))
        })
        .unwrap();
    dir.join("00000000000000000000.segment")
}

async fn fill(broker: &TestBroker, stream: &str) {
    let mut c = Raw::open(broker.addr).await;
    assert_eq!(c.create(stream, &[]).await, ResponseCode::OK);
    let r = c
        .request(Frame::DeclarePublisher(DeclarePublisher {
            correlation_id: 1,
            publisher_id: 0,
            reference: "producer".into(),
            stream: stream.into(),
        }))
        .await;
    assert!(matches!(r, Frame::DeclarePublisherResponse(ref r) if r.code.is_ok()));
    // Ten frames: ten chunks, so damage can sit in the middle.
    for batch in 0..10u64 {
        let mut b = PublishBuilder::new(0);
        for i in 0..10 {
            b.message(batch * 10 + i, b"some message body");
        }
        c.send(Frame::Publish(b.build())).await;
        assert!(matches!(c.recv().await, Some(Frame::PublishConfirm(_))));
    }
}

#[tokio::test]
async fn verify_reports_damage_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    fill(&broker, "a").await;
    fill(&broker, "b").await;
    let data = broker.stop().await;

    let (code, out) = verify(&data);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("2 streams: 2 ok, 0 repairable at the next start, 0 damaged"),
        "{out}"
    );
    assert!(
        out.contains("offsets 0..100, 0 stored offsets, 1 publisher sequences"),
        "{out}"
    );

    // A flipped byte in a chunk in the middle of a's segment, a torn tail on b's.
    let a = segment_of(&data, "a");
    let mut bytes = std::fs::read(&a).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&a, &bytes).unwrap();
    let b = segment_of(&data, "b");
    let len = std::fs::metadata(&b).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&b)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let meta = a.with_file_name("stream.json.bak");
    std::fs::write(&meta, b"{").unwrap();

    let before = tree(&data);
    let (code, out) = verify(&data);
    assert_eq!(code, 1, "{out}");
    assert_eq!(tree(&data), before, "verify changed files");
    assert!(out.contains("stream \"a\""), "{out}");
    assert!(
        out.contains("DAMAGED: 00000000000000000000.segment: invalid chunk at byte"),
        "{out}"
    );
    assert!(out.contains("repairable: stream.json.bak:"), "{out}");
    assert!(
        out.contains("repairable: 00000000000000000000.segment: invalid chunk at byte"),
        "{out}"
    );
    assert!(
        out.contains("2 streams: 0 ok, 1 repairable at the next start, 1 damaged"),
        "{out}"
    );
}
