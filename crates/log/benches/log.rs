//! Throughput of the log alone: appends of 100-message chunks of 12-byte messages (durability
//! `none`, i.e. no fsync), then sequential reads of everything with a cursor.
//!
//! `cargo bench -p brook-log` (set `BROOK_BENCH_DIR` to choose the disk; default: the system
//! temporary directory). Results are recorded in docs/BENCHMARKS.md.

use std::time::Instant;

use brook_log::{Log, LogConfig, Seek, UserChunk};
use brook_protocol::chunk::encode_simple_entries;
use brook_storage::disk;

const MESSAGES_PER_CHUNK: usize = 100;
const MESSAGE_BYTES: usize = 12;
const CHUNKS: usize = 200_000;

fn main() {
    let base = std::env::var_os("BROOK_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).expect("temporary directory");
    let (mut log, _) = Log::open(disk(), dir.path(), LogConfig::default()).expect("open");
    let message = [7u8; MESSAGE_BYTES];
    let data = encode_simple_entries(std::iter::repeat_n(&message[..], MESSAGES_PER_CHUNK));
    let chunk = UserChunk {
        data: &data,
        num_entries: MESSAGES_PER_CHUNK as u16,
        num_records: MESSAGES_PER_CHUNK as u32,
        bloom: &[],
        sequences: &[],
    };

    let started = Instant::now();
    for _ in 0..CHUNKS {
        log.append_user(&chunk).expect("append");
        log.commit();
    }
    let append = started.elapsed();
    let messages = (CHUNKS * MESSAGES_PER_CHUNK) as f64;
    let bytes = log.reader().stats().bytes as f64;
    println!(
        "append: {CHUNKS} chunks of {MESSAGES_PER_CHUNK} x {MESSAGE_BYTES}-byte messages in {:.2?}: \
         {:.2} M msg/s, {:.0} MB/s, {:.2} µs/chunk",
        append,
        messages / append.as_secs_f64() / 1e6,
        bytes / append.as_secs_f64() / 1e6,
        append.as_secs_f64() * 1e6 / CHUNKS as f64
    );

    for read_ahead in [64 << 10, 1 << 20] {
        let started = Instant::now();
        let mut cursor = log.reader().cursor(Seek::First).expect("cursor");
        let mut out = Vec::new();
        let (mut chunks, mut records) = (0usize, 0u64);
        loop {
            out.clear();
            if cursor.read(read_ahead, &mut out).expect("read") == 0 {
                break;
            }
            chunks += out.len();
            records += out
                .iter()
                .map(|c| u64::from(c.header.num_records))
                .sum::<u64>();
        }
        let read = started.elapsed();
        assert_eq!(chunks, CHUNKS);
        println!(
            "read ({} KiB buffers): {chunks} chunks in {:.2?}: {:.2} M msg/s, {:.0} MB/s",
            read_ahead >> 10,
            read,
            records as f64 / read.as_secs_f64() / 1e6,
            bytes / read.as_secs_f64() / 1e6
        );
    }
}
