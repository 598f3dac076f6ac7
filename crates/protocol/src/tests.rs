//! Property tests: every frame round-trips; random bytes never panic the decoder.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use crate::chunk::{ChunkHeader, ChunkType, crc32, encode_simple_entries};
use crate::{Deliver, Frame, Publish, PublishBuilder};

pub(crate) fn opt_bytes() -> impl Strategy<Value = Option<Bytes>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from))
}

#[derive(Debug, Clone)]
enum ArbEntry {
    Simple(Vec<u8>),
    Filtered(Option<Vec<u8>>, Vec<u8>),
    Batch(u8, u16, u32, Vec<u8>),
}

pub(crate) fn arb_publish() -> impl Strategy<Value = Publish> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..40);
    let v1_entry = prop_oneof![
        bytes().prop_map(ArbEntry::Simple),
        (0u8..8, any::<u16>(), any::<u32>(), bytes())
            .prop_map(|(c, n, u, b)| ArbEntry::Batch(c, n, u, b)),
    ];
    let v2_entry =
        (proptest::option::of(bytes()), bytes()).prop_map(|(f, b)| ArbEntry::Filtered(f, b));
    let entries = |s: BoxedStrategy<ArbEntry>| proptest::collection::vec((any::<u64>(), s), 0..20);
    prop_oneof![
        (any::<u8>(), entries(v1_entry.boxed())).prop_map(|(id, es)| (id, 1u16, es)),
        (any::<u8>(), entries(v2_entry.boxed())).prop_map(|(id, es)| (id, 2u16, es)),
    ]
    .prop_map(|(publisher, version, entries)| {
        let mut b = if version == 1 {
            PublishBuilder::new(publisher)
        } else {
            PublishBuilder::new_v2(publisher)
        };
        for (pid, e) in entries {
            match e {
                ArbEntry::Simple(m) => b.message(pid, &m),
                ArbEntry::Filtered(f, m) => b.filtered(pid, f.as_deref(), &m),
                ArbEntry::Batch(c, n, u, body) => b.batch(pid, c, n, u, &body),
            };
        }
        b.build()
    })
}

pub(crate) fn arb_deliver() -> impl Strategy<Value = Deliver> {
    (
        any::<u8>(),
        proptest::option::of(any::<u64>()),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 0..10),
        any::<u64>(),
        any::<i64>(),
        0u32..100,
    )
        .prop_map(|(sub, committed, msgs, chunk_id, ts, trailer)| {
            let data = encode_simple_entries(msgs.iter().map(|m| m.as_slice()));
            let header = ChunkHeader {
                chunk_type: ChunkType::User,
                num_entries: msgs.len() as u16,
                num_records: msgs.len() as u32,
                timestamp: ts,
                epoch: 1,
                chunk_id,
                crc: crc32(&data),
                data_len: data.len() as u32,
                trailer_len: trailer,
                bloom_size: 0,
                side_check: 0,
            };
            let mut chunk = header.to_bytes().to_vec();
            chunk.extend_from_slice(&data);
            Deliver {
                subscription_id: sub,
                committed_chunk_id: committed,
                chunk: chunk.into(),
            }
        })
}

fn body_of(frame: &Bytes) -> Bytes {
    frame.slice(4..)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// encode → decode gives the same value, and re-encoding gives the same bytes.
    #[test]
    fn every_frame_round_trips(frame in crate::commands::arb_frame()) {
        let bytes = frame.to_bytes();
        let size = crate::frame_size(&bytes).unwrap() as usize;
        prop_assert_eq!(size + 4, bytes.len());
        let decoded = Frame::decode(body_of(&bytes)).unwrap();
        prop_assert_eq!(&decoded, &frame);
        prop_assert_eq!(decoded.to_bytes(), bytes);
    }

    /// Any byte string is either a frame or an error, never a panic.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Frame::decode(Bytes::from(bytes));
    }

    /// Random bytes after a valid key/version pair reach every command decoder.
    #[test]
    fn random_bodies_never_panic(key in 0u16..0x20, response in any::<bool>(), version in 1u16..3,
                                 body in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut b = BytesMut::new();
        let key = if response { key | 0x8000 } else { key };
        b.extend_from_slice(&key.to_be_bytes());
        b.extend_from_slice(&version.to_be_bytes());
        b.extend_from_slice(&body);
        if let Ok(frame) = Frame::decode(b.clone().freeze()) {
            // Whatever decodes re-encodes to a frame that decodes to itself; and to the same
            // bytes, except where RabbitMQ ignores bytes (a few commands) or replaces invalid
            // UTF-8 (any string).
            let encoded = frame.to_bytes();
            prop_assert_eq!(&Frame::decode(encoded.slice(4..)).unwrap(), &frame);
            let replaced = encoded.windows(3).any(|w| w == [0xef, 0xbf, 0xbd]);
            if !lenient(key) && !replaced {
                prop_assert_eq!(&encoded[4..], &b[..]);
            }
        }
    }

    /// Truncating a valid frame anywhere gives an error, not a panic or a different frame.
    #[test]
    fn truncated_frames_are_errors(frame in crate::commands::arb_frame(), cut in any::<prop::sample::Index>()) {
        let bytes = frame.to_bytes();
        let body = body_of(&bytes);
        let cut = cut.index(body.len());
        if let Ok(f) = Frame::decode(body.slice(..cut)) {
            // A few layouts end in an optional field, so a shorter prefix can be valid.
            prop_assert!(f.to_bytes().len() < bytes.len());
        }
    }
}

/// Commands RabbitMQ parses leniently (see docs/COMPATIBILITY.md): an ignored count, ignored
/// trailing bytes.
fn lenient(key: u16) -> bool {
    use crate::keys::*;
    matches!(
        key,
        PEER_PROPERTIES
            | CREATE
            | METADATA
            | EXCHANGE_COMMAND_VERSIONS
            | CREATE_SUPER_STREAM
            | SUBSCRIBE
            | RESOLVE_OFFSET_SPEC
    ) || key == CONSUMER_UPDATE | RESPONSE
}

/// Every frame RabbitMQ 3.10.8 and the four official clients exchanged in the golden captures
/// decodes, and re-encodes to the identical bytes.
#[test]
fn golden_captures_round_trip() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let rec: serde_json::Value = serde_json::from_str(line).unwrap();
            let hex = rec["hex"].as_str().unwrap();
            let bytes = Bytes::from(hex_decode(hex));
            let frame = Frame::decode(bytes.slice(4..))
                .unwrap_or_else(|e| panic!("{} n={}: {e}", path.display(), rec["n"]));
            assert_eq!(frame.to_bytes(), bytes, "{} n={}", path.display(), rec["n"]);
            if let Frame::Deliver(d) = &frame {
                d.chunk().unwrap().verify().unwrap();
            }
            total += 1;
        }
    }
    assert_eq!(total, 3108, "all golden frames were checked");
}

/// A few frames with their exact bytes, from broker-spec.md and the captures.
#[test]
fn golden_bytes() {
    use crate::*;
    let cases: Vec<(Frame, &str)> = vec![
        // The broker's Tune: frame max 1048576, heartbeat 60 s.
        (
            Frame::Tune(Tune {
                frame_max: 1_048_576,
                heartbeat: 60,
            }),
            "0000000c00140001001000000000003c",
        ),
        // The shim's version probe: PeerProperties with an empty map.
        (
            Frame::PeerProperties(PeerProperties {
                correlation_id: 1,
                properties: vec![],
            }),
            "0000000c001100010000000100000000",
        ),
        (Frame::Heartbeat(Heartbeat {}), "0000000400170001"),
        // Credit error response: no correlation id.
        (
            Frame::CreditResponse(CreditResponse {
                code: ResponseCode::SUBSCRIPTION_ID_DOES_NOT_EXIST,
                subscription_id: 42,
            }),
            "000000078009000100042a",
        ),
        // The server-initiated close for an unknown frame (error-paths conn 4).
        (
            Frame::Close(Close {
                correlation_id: 1,
                code: ResponseCode::UNKNOWN_FRAME,
                reason: "unknown frame".into(),
            }),
            "000000190016000100000001000d000d756e6b6e6f776e206672616d65",
        ),
    ];
    for (frame, hex) in cases {
        assert_eq!(hex_encode(&frame.to_bytes()), hex, "{frame:?}");
        assert_eq!(
            Frame::decode(Bytes::from(hex_decode(hex)).slice(4..)).unwrap(),
            frame
        );
    }
}

#[test]
fn strictness() {
    use crate::DecodeError;
    // Heartbeat with a trailing byte.
    assert_eq!(
        Frame::decode(Bytes::from_static(&[0, 0x17, 0, 1, 0])),
        Err(DecodeError::TrailingBytes(1))
    );
    // Unknown key, and a known key with an unknown version.
    assert!(matches!(
        Frame::decode(Bytes::from_static(&[0, 0x7f, 0, 1])),
        Err(DecodeError::UnknownCommand {
            key: 0x7f,
            version: 1
        })
    ));
    assert!(matches!(
        Frame::decode(Bytes::from_static(&[0, 0x17, 0, 2])),
        Err(DecodeError::UnknownCommand { .. })
    ));
    // Publish v3 does not exist.
    assert!(matches!(
        Frame::decode(Bytes::from_static(&[0, 0x02, 0, 3, 0, 0, 0, 0, 0])),
        Err(DecodeError::UnknownCommand { .. })
    ));
    // A null (-1) string reads as 65535 bytes and is truncated, as in RabbitMQ.
    assert!(matches!(
        Frame::decode(Bytes::from_static(&[0, 0x0e, 0, 1, 0, 0, 0, 1, 0xff, 0xff])),
        Err(DecodeError::Truncated { .. })
    ));
    // A huge array count does not allocate ahead of the bytes (CreateSuperStream's
    // partitions: a count RabbitMQ honours).
    assert!(matches!(
        Frame::decode(Bytes::from_static(&[
            0, 0x1d, 0, 1, 0, 0, 0, 1, 0, 0, 0x7f, 0xff, 0xff, 0xff
        ])),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn publish_entries_are_borrowed_from_the_frame() {
    let mut b = PublishBuilder::new_v2(3);
    b.filtered(1, Some(b"eu"), b"hello").message(2, b"world");
    let frame = Frame::Publish(b.build()).to_bytes();
    let Frame::Publish(p) = Frame::decode(frame.slice(4..)).unwrap() else {
        panic!()
    };
    let entries: Vec<_> = p.entries().collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].publishing_id, 1);
    assert_eq!(entries[0].filter_value, Some(&b"eu"[..]));
    assert_eq!(entries[0].raw, b"\0\0\0\x05hello");
    assert_eq!(entries[1].filter_value, None);
    let start = frame.as_ptr() as usize;
    let at = entries[1].raw.as_ptr() as usize;
    assert!(
        at > start && at < start + frame.len(),
        "no copy of the message"
    );
}

pub(crate) fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Where RabbitMQ parses leniently, brook does too (docs/COMPATIBILITY.md lists each case).
#[test]
fn leniency_as_rabbitmq() {
    let decode = |bytes: &[u8]| Frame::decode(Bytes::copy_from_slice(bytes));
    // ConsumerUpdate response, offset type "next" followed by rstream's 8 bytes: accepted.
    let f = decode(&hex_decode("801a0001000000070001000300000000000000000000")).unwrap();
    assert!(matches!(f, Frame::ConsumerUpdateResponse(r) if r.offset == crate::OffsetSpec::Next));
    // ... but an offset type 4 must have exactly its 8 bytes.
    assert!(decode(&hex_decode("801a00010000000700010004000000000000002a00")).is_err());
    // Metadata: the count is ignored, names run to the end.
    let f = decode(&hex_decode("000f00010000000900000000000161000162")).unwrap();
    assert!(matches!(f, Frame::Metadata(m) if m.streams == ["a", "b"]));
    // PeerProperties with a wrong count.
    let f = decode(&hex_decode(
        "0011000100000001000000050001610001620001630001",
    ))
    .map(|_| ());
    assert!(f.is_err(), "a partial pair is still an error");
    let f = decode(&hex_decode("001100010000000100000005000161000162")).unwrap();
    assert!(matches!(f, Frame::PeerProperties(p) if p.properties == [("a".into(), "b".into())]));
    // Subscribe with 1-3 trailing bytes: no properties.
    let sub = "0007000100000001010001730001000a";
    let f = decode(&hex_decode(&format!("{sub}0000"))).unwrap();
    assert!(matches!(f, Frame::Subscribe(s) if s.properties.is_none()));
    // Invalid UTF-8 in a string does not fail the frame.
    let f = decode(&hex_decode("000e000100000001000261ff")).unwrap();
    assert!(matches!(f, Frame::Delete(d) if d.stream == "a\u{fffd}"));
    // Duplicate property keys: the last wins.
    let props = vec![
        ("name".to_string(), "a".to_string()),
        ("name".into(), "b".into()),
    ];
    assert_eq!(crate::property(&props, "name"), Some("b"));
    // Publish v2: a filter length is unsigned; only 0xffff means none.
    let mut b = PublishBuilder::new_v2(1);
    b.filtered(1, Some(&vec![b'x'; 40_000]), b"m");
    let Frame::Publish(p) = Frame::decode(Frame::Publish(b.build()).to_bytes().slice(4..)).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        p.entries().next().unwrap().filter_value.unwrap().len(),
        40_000
    );
}
