//! Publishing and consuming with the official Rust client (`rabbitmq-stream-client` 0.11) and
//! its defaults, as applications do, against any broker: messages per second, publish→confirm
//! latency, broker CPU per million messages, and how many messages the broker put in a chunk.
//!
//! `brook bench` measures the broker with a client built to stay out of the way (thousands of
//! messages per chunk, ten credits); the official client publishes about 100 messages per frame
//! and grants one credit per chunk, so the broker meets small chunks and one round trip per
//! chunk. This measures that (issue #12).
//!
//! ```text
//! cargo run --release --example official_client_bench -- publish [--messages N] [--size B]
//!     [--host H] [--port P] [--broker-pid PID] [--json]
//! cargo run --release --example official_client_bench -- consume ...
//! ```
//!
//! `consume` pre-fills the stream with the same official producer (not timed), then reads it
//! from `first`. `--json` prints the report `brook bench` prints, for bench/compare-rabbitmq.sh.

use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use brook_bench::procfs::Sampler;
use brook_bench::{Latency, Report};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use rabbitmq_stream_client::types::{Message, OffsetSpecification};
use rabbitmq_stream_client::{Environment, Producer};
use tokio::sync::Notify;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    Publish,
    Consume,
}

#[derive(Debug, Parser)]
struct Args {
    scenario: Scenario,
    #[arg(long, default_value = "localhost")]
    host: String,
    #[arg(long, default_value_t = 5552)]
    port: u16,
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    #[arg(long, default_value_t = 12)]
    size: usize,
    /// Also report this process's CPU time and peak RSS (/proc, Linux).
    #[arg(long)]
    broker_pid: Option<u32>,
    #[arg(long)]
    json: bool,
    /// Do not count the stored chunks afterwards (for `brook null-broker`, which stores none).
    #[arg(long)]
    no_chunk_count: bool,
}

/// Publishes `n` messages with the producer's defaults and waits for every confirm; returns the
/// publish→confirm latencies.
async fn publish(
    env: &Environment,
    stream: &str,
    n: u64,
    size: usize,
) -> Result<Latency, BoxError> {
    let producer: Producer<_> = env.producer().build(stream).await?;
    let latency = Arc::new(Mutex::new(Latency::new()));
    let (confirmed, done) = (Arc::new(AtomicU64::new(0)), Arc::new(Notify::new()));
    let body = vec![b'x'; size];
    for _ in 0..n {
        let sent = Instant::now();
        let (latency, confirmed, done) = (latency.clone(), confirmed.clone(), done.clone());
        let message = Message::builder().body(body.clone()).build();
        producer
            .send(message, move |_| async move {
                if let Ok(mut l) = latency.lock() {
                    l.record_nanos(sent.elapsed().as_nanos() as u64);
                }
                if confirmed.fetch_add(1, Ordering::AcqRel) + 1 == n {
                    done.notify_one();
                }
            })
            .await?;
    }
    while confirmed.load(Ordering::Acquire) < n {
        done.notified().await;
    }
    producer.close().await?;
    let latency = latency.lock().map_err(|e| e.to_string())?.clone();
    Ok(latency)
}

/// Reads `n` messages from `first` with the consumer's defaults.
async fn consume(env: &Environment, stream: &str, n: u64) -> Result<(), BoxError> {
    let mut consumer = env
        .consumer()
        .offset(OffsetSpecification::First)
        .build(stream)
        .await?;
    let mut received = 0;
    while received < n {
        match consumer.next().await {
            Some(Ok(_)) => received += 1,
            Some(Err(e)) => return Err(e.into()),
            None => return Err("the consumer ended".into()),
        }
    }
    consumer.handle().close().await?;
    Ok(())
}

async fn run(args: &Args) -> Result<Report, BoxError> {
    let env = Environment::builder()
        .host(&args.host)
        .port(args.port)
        .build()
        .await?;
    let stream = format!("official-bench-{}", std::process::id());
    env.stream_creator().create(&stream).await?;
    let (n, size) = (args.messages, args.size);
    if matches!(args.scenario, Scenario::Consume) {
        eprintln!("consume: pre-filling {n} messages with the official producer (not timed)");
        publish(&env, &stream, n, size).await?;
    }
    let sampler = args.broker_pid.and_then(Sampler::start);
    let started = Instant::now();
    let latency = match args.scenario {
        Scenario::Publish => Some(publish(&env, &stream, n, size).await?),
        Scenario::Consume => {
            consume(&env, &stream, n).await?;
            None
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut report = Report {
        scenario: match args.scenario {
            Scenario::Publish => "official-publish",
            Scenario::Consume => "official-consume",
        },
        broker: format!("{}:{}", args.host, args.port),
        latency_us: latency.and_then(|l| l.percentiles()),
        ..Report::default()
    }
    .with_rate(n, size, seconds);
    if let Some(s) = sampler {
        let (cpu, rss) = s.finish().await;
        report.broker_cpu_seconds = cpu;
        report.broker_peak_rss_bytes = Some(rss);
    }
    if !args.no_chunk_count {
        let chunks = chunks_of(args, &stream, n).await?;
        report
            .extra
            .insert("messages_per_chunk", n as f64 / chunks.max(1) as f64);
    }
    env.delete_stream(&stream).await?;
    Ok(report)
}

/// How many chunks the broker stored the messages in, read with brook bench's client.
async fn chunks_of(args: &Args, stream: &str, n: u64) -> Result<u64, BoxError> {
    let addr = (args.host.as_str(), args.port)
        .to_socket_addrs()?
        .next()
        .ok_or("no address for the host")?;
    let common = brook_bench::Common {
        addr,
        user: "guest".into(),
        password: "guest".into(),
        stream: None,
        keep_stream: false,
        json: false,
        broker_pid: None,
    };
    Ok(brook_bench::count_chunks(&common, stream, n).await?)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let report = run(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.summary());
    }
    Ok(())
}
