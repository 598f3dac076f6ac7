//! The receiver of RabbitMQ's Offset Tracking tutorial, with the official Rust client.
//!
//! Attaches to the stream, prints when the first message arrives, and stops at the "marker"
//! message, printing the first and last offsets it saw. Modes:
//!
//! * `first`, `next`, `offset:N`: attach there.
//! * `tracking`: the tutorial's server-side offset tracking. The consumer is named
//!   `offset-tracking-tutorial`; it starts after the stored offset (or at `first` if none),
//!   stores its offset every 10 messages and at the marker, so a second run resumes after it.
//!
//! ```text
//! cargo run --example offset_tracking_receive -- [first|next|offset:42|tracking] \
//!     [--host localhost --port 5552 --stream NAME]
//! ```

#[path = "offset_tracking_send.rs"]
#[allow(dead_code)]
pub mod send;

use std::io::Write;

use futures::StreamExt;
use rabbitmq_stream_client::error::ClientError;
use rabbitmq_stream_client::types::{OffsetSpecification, ResponseCode};
use rabbitmq_stream_client::{Client, ClientOptions};
pub use send::Target;

pub const CONSUMER_NAME: &str = "offset-tracking-tutorial";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    First,
    Next,
    Offset(u64),
    Tracking,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "first" => Ok(Mode::First),
            "next" => Ok(Mode::Next),
            "tracking" => Ok(Mode::Tracking),
            _ => s
                .strip_prefix("offset:")
                .and_then(|n| n.parse().ok())
                .map(Mode::Offset)
                .ok_or_else(|| format!("unknown mode {s:?} (first, next, offset:N, tracking)")),
        }
    }
}

/// The stored offset of the tutorial's consumer, if any (the Go tutorial's `env.QueryOffset`).
async fn stored_offset(
    target: &Target,
) -> Result<Option<u64>, Box<dyn std::error::Error + Send + Sync>> {
    let options = ClientOptions::builder()
        .host(&target.host)
        .port(target.port)
        .build();
    let client = Client::connect(options).await?;
    let stored = match client
        .query_offset(CONSUMER_NAME.into(), &target.stream)
        .await
    {
        Ok(offset) => Some(offset),
        Err(ClientError::RequestError(ResponseCode::OffsetNotFound)) => None,
        Err(e) => return Err(e.into()),
    };
    client.close().await?;
    Ok(stored)
}

pub async fn run(
    target: &Target,
    mode: Mode,
    out: &mut (dyn Write + Send),
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let environment = target.environment().await?;
    send::declare_stream(&environment, &target.stream).await?;
    let offset = match mode {
        Mode::First => OffsetSpecification::First,
        Mode::Next => OffsetSpecification::Next,
        Mode::Offset(n) => OffsetSpecification::Offset(n),
        Mode::Tracking => match stored_offset(target).await? {
            None => OffsetSpecification::First,
            Some(stored) => OffsetSpecification::Offset(stored + 1),
        },
    };
    let mut builder = environment.consumer().offset(offset);
    if mode == Mode::Tracking {
        builder = builder.name(CONSUMER_NAME);
    }
    let mut consumer = builder.build(&target.stream).await?;
    writeln!(out, "Started consuming...")?;
    out.flush()?;

    let mut first_offset = None;
    let mut received: u64 = 0;
    let mut last_offset = None;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let offset = delivery.offset();
        if first_offset.is_none() {
            first_offset = Some(offset);
            writeln!(out, "First message received.")?;
            out.flush()?;
        }
        let is_marker = delivery.message().data() == Some(b"marker".as_slice());
        if mode == Mode::Tracking && (received.is_multiple_of(10) || is_marker) {
            consumer.store_offset(offset).await?;
        }
        received += 1;
        if is_marker {
            last_offset = Some(offset);
            break;
        }
    }
    consumer.handle().close().await?;
    if let (Some(first), Some(last)) = (first_offset, last_offset) {
        writeln!(
            out,
            "Done consuming, first offset {first}, last offset {last}."
        )?;
    }
    Ok(())
}

#[allow(dead_code)] // the integration tests include this file for `run` only
#[tokio::main]
async fn main() {
    let parsed = send::Target::from_args(std::env::args().skip(1)).and_then(|(target, rest)| {
        let mode = match rest.as_slice() {
            [] => Mode::First,
            [m] => m.parse()?,
            _ => return Err(format!("unexpected arguments {rest:?}")),
        };
        Ok((target, mode))
    });
    let (target, mode) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("offset_tracking_receive: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&target, mode, &mut std::io::stdout()).await {
        eprintln!("offset_tracking_receive: {e}");
        std::process::exit(1);
    }
}
