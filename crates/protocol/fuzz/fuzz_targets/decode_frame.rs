//! Any bytes after the size prefix: decoding must return a frame or an error, never panic, and
//! whatever decodes must re-encode to the same bytes (nothing is silently dropped).
#![no_main]

use brook_protocol::Frame;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(Bytes::copy_from_slice(data)) {
        let encoded = frame.to_bytes();
        assert_eq!(&encoded[4..], data);
        if let Frame::Deliver(d) = &frame {
            if let Ok(chunk) = d.chunk() {
                let _ = chunk.verify();
                for r in chunk.records() {
                    let _ = r;
                }
            }
        }
        if let Frame::Publish(p) = &frame {
            for e in p.entries() {
                let _ = e.entry.records();
            }
        }
    }
});
