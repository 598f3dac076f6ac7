//! `brook bench`: throughput and latency of any RabbitMQ Streams broker, measured with one
//! client for all (built on brook's codec, so it also talks to RabbitMQ 3.10, which lacks
//! ExchangeCommandVersions).
//!
//! * `publish`: producers publish with confirms and a bounded in-flight window; confirmed
//!   msg/s, MB/s, confirm latency percentiles.
//! * `consume`: pre-fill (not timed), then consumers read from `first`; msg/s, time to first.
//! * `e2e`: a fixed publish rate with a consumer at `next`; end-to-end latency, exactly once;
//!   with `--backlog`, while another consumer reads a backlog from `first` (`catch_up.rs`).
//! * `track`: StoreOffset + QueryOffset round trips.
//! * `connections`, `streams`: cost per idle connection and per stream (`scale.rs`).
//! * `attach`: time from Subscribe at an offset of an existing stream to its first chunk.
//! * `fanout`: producers and many consumers at once (`fanout.rs`).
//!
//! `null_broker.rs` is the other end: a broker that stores nothing, the machine's limit.
//!
//! Progress goes to stderr once a second; the summary (or `--json`, one object) to stdout.

mod catch_up;
pub mod client;
mod fanout;
pub mod null_broker;
pub mod procfs;
mod scale;
mod scenarios;
pub mod stats;

use std::net::SocketAddr;

use clap::builder::TypedValueParser as _;
use clap::{Args, Subcommand};

pub use client::ClientError;
pub use scenarios::count_chunks;
pub use stats::{Latency, Percentiles, Report};

/// Options every scenario takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Broker stream port.
    #[arg(long, default_value = "127.0.0.1:5552")]
    pub addr: SocketAddr,
    #[arg(long, default_value = "guest")]
    pub user: String,
    #[arg(long, default_value = "guest")]
    pub password: String,
    /// Stream to use [default: a new one, deleted afterwards].
    #[arg(long)]
    pub stream: Option<String>,
    /// Keep the stream afterwards.
    #[arg(long)]
    pub keep_stream: bool,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Also report this process's CPU time and peak RSS during the run (/proc, Linux).
    #[arg(long)]
    pub broker_pid: Option<u32>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// Publish with confirms.
    Publish(PublishArgs),
    /// Consume a pre-filled stream from `first`.
    Consume(ConsumeArgs),
    /// Publish at a fixed rate to a consumer at `next`; end-to-end latency.
    E2e(E2eArgs),
    /// StoreOffset then QueryOffset round trips.
    Track(TrackArgs),
    /// Many idle heartbeating connections and some active ones: cost per connection.
    Connections(ConnectionsArgs),
    /// Many streams: create rate, cost per stream, Metadata for many.
    Streams(StreamsArgs),
    /// Subscribe at an offset of an existing stream (`--stream`): time to the first chunk.
    Attach(AttachArgs),
    /// Producers and many consumers per stream at once: delivered msg/s, CPU per delivered.
    Fanout(FanoutArgs),
}

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Streams, one producer each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    pub streams: usize,
    /// Consumers per stream, each on its own connection, each reading every message.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    pub consumers: usize,
    /// Messages each producer publishes.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    #[arg(long, default_value_t = 12)]
    pub size: usize,
}

#[derive(Args, Debug, Clone)]
pub struct AttachArgs {
    #[command(flatten)]
    pub common: Common,
    /// The offset to attach at.
    #[arg(long)]
    pub offset: u64,
    /// Subscriptions, one after the other, each on a new connection.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub count: usize,
}

#[derive(Args, Debug, Clone)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Idle connections to open (authenticated) and hold.
    #[arg(long, default_value_t = 10_000)]
    pub idle: usize,
    /// Connection attempts in flight at once while opening.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub concurrency: usize,
    /// Heartbeat interval asked for by every connection, seconds (0: off).
    #[arg(long, default_value_t = 5)]
    pub heartbeat: u32,
    /// Seconds to hold the connections open while the active ones publish.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub hold: u64,
    /// Active connections, each publishing one message at a time with confirms.
    #[arg(long, default_value_t = 1_000)]
    pub active: usize,
    /// Messages per second over all active connections.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,
}

#[derive(Args, Debug, Clone)]
pub struct StreamsArgs {
    /// `--stream` is the name prefix; `--keep-stream` keeps them all (for a restart test).
    #[command(flatten)]
    pub common: Common,
    /// Streams to create.
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,
    /// Connections creating them concurrently.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub connections: usize,
    /// Streams named in the one timed Metadata request.
    #[arg(long, default_value_t = 1_000)]
    pub metadata: usize,
    /// Also create (and time) a super stream of this many partitions (0: none; needs
    /// CreateSuperStream, RabbitMQ 3.13+).
    #[arg(long, default_value_t = 0)]
    pub partitions: usize,
}

#[derive(Args, Debug, Clone)]
pub struct PublishArgs {
    #[command(flatten)]
    pub common: Common,
    /// Producers, one connection each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=255).map(usize::from))]
    pub producers: usize,
    /// Messages in total.
    #[arg(long, default_value_t = 2_000_000)]
    pub messages: u64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 12)]
    pub size: usize,
    /// Messages per Publish frame.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=65_535).map(|v| v as usize))]
    pub batch: usize,
    /// Unconfirmed messages allowed per producer.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub in_flight: usize,
}

#[derive(Args, Debug, Clone)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Consumers, one connection each; each reads every message.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=255).map(usize::from))]
    pub consumers: usize,
    #[arg(long, default_value_t = 2_000_000)]
    pub messages: u64,
    #[arg(long, default_value_t = 12)]
    pub size: usize,
    /// Initial credit (chunks); one more is granted per chunk received.
    #[arg(long, default_value_t = 10)]
    pub credit: u16,
    /// Messages per Publish frame while pre-filling.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=65_535).map(|v| v as usize))]
    pub prefill_batch: usize,
    /// Unconfirmed messages allowed while pre-filling: with `--prefill-batch` it bounds the
    /// stream's chunks (a write holds at most this many messages).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub prefill_in_flight: usize,
}

#[derive(Args, Debug, Clone)]
pub struct E2eArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages per second.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: u64,
    /// Message size (at least 16: sequence number and send time).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(16..).map(|v| v as usize))]
    pub size: usize,
    /// Pre-fill the stream with this many messages (untimed), and read them from `first` as
    /// fast as possible while the run publishes: does a reader far behind cost the producers
    /// their latency?
    #[arg(long, default_value_t = 0)]
    pub backlog: u64,
    /// Size of the backlog's messages.
    #[arg(long, default_value_t = 1024)]
    pub backlog_size: usize,
    /// After the pre-fill, write back and drop the page cache (Linux, as root), so the
    /// backlog is read from the disk.
    #[arg(long, requires = "backlog")]
    pub drop_caches: bool,
}

#[derive(Args, Debug, Clone)]
pub struct TrackArgs {
    #[command(flatten)]
    pub common: Common,
    /// Round trips.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
}

impl Scenario {
    pub fn common(&self) -> &Common {
        match self {
            Scenario::Publish(a) => &a.common,
            Scenario::Consume(a) => &a.common,
            Scenario::E2e(a) => &a.common,
            Scenario::Track(a) => &a.common,
            Scenario::Connections(a) => &a.common,
            Scenario::Streams(a) => &a.common,
            Scenario::Attach(a) => &a.common,
            Scenario::Fanout(a) => &a.common,
        }
    }
}

/// Runs one scenario.
pub async fn run(scenario: Scenario) -> Result<Report, ClientError> {
    match scenario {
        Scenario::Publish(a) => scenarios::publish(a).await,
        Scenario::Consume(a) => scenarios::consume(a).await,
        Scenario::E2e(a) => scenarios::e2e(a).await,
        Scenario::Track(a) => scenarios::track(a).await,
        Scenario::Connections(a) => scale::connections(a).await,
        Scenario::Streams(a) => scale::streams(a).await,
        Scenario::Attach(a) => scale::attach(a).await,
        Scenario::Fanout(a) => fanout::fanout(a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        scenario: Scenario,
    }

    fn parse(args: &[&str]) -> Result<Scenario, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .map(|c| c.scenario)
    }

    #[test]
    fn defaults_follow_the_issue() {
        let Scenario::Publish(p) = parse(&["publish"]).unwrap() else {
            panic!()
        };
        assert_eq!((p.producers, p.messages, p.size), (1, 2_000_000, 12));
        assert_eq!(p.common.addr.to_string(), "127.0.0.1:5552");
        assert!(!p.common.json && p.common.broker_pid.is_none());
        let Scenario::E2e(e) = parse(&["e2e"]).unwrap() else {
            panic!()
        };
        assert_eq!((e.rate, e.duration, e.size), (50_000, 10, 16));
        let Scenario::Consume(c) = parse(&[
            "consume",
            "--consumers",
            "3",
            "--json",
            "--broker-pid",
            "42",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (c.consumers, c.common.broker_pid, c.common.json),
            (3, Some(42), true)
        );
        let Scenario::Track(t) =
            parse(&["track", "--count", "5", "--addr", "10.0.0.1:5553"]).unwrap()
        else {
            panic!()
        };
        assert_eq!((t.count, t.common.addr.port()), (5, 5553));
        let Scenario::Connections(c) = parse(&["connections"]).unwrap() else {
            panic!()
        };
        assert_eq!((c.idle, c.active, c.heartbeat), (10_000, 1_000, 5));
        let Scenario::Streams(s) = parse(&["streams", "--count", "7"]).unwrap() else {
            panic!()
        };
        assert_eq!((s.count, s.metadata, s.partitions), (7, 1_000, 0));
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&["publish", "--producers", "0"]).is_err());
        assert!(parse(&["publish", "--producers", "256"]).is_err());
        assert!(parse(&["publish", "--batch", "0"]).is_err());
        assert!(
            parse(&["e2e", "--size", "8"]).is_err(),
            "needs room for sequence and time"
        );
        assert!(parse(&["e2e", "--rate", "0"]).is_err());
        assert!(parse(&["publish", "--addr", "nowhere"]).is_err());
        assert!(parse(&["fly"]).is_err());
        assert!(parse(&["connections", "--rate", "0"]).is_err());
        assert!(parse(&["streams", "--connections", "0"]).is_err());
    }
}
