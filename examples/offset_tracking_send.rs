//! The sender of RabbitMQ's Offset Tracking tutorial, with the official Rust client.
//!
//! Publishes 100 messages (99 × "hello", then "marker") with confirms into a stream declared
//! with `max-length-bytes` = 2 GB, and waits until all are confirmed.
//!
//! ```text
//! cargo run --example offset_tracking_send [-- --host localhost --port 5552 --stream NAME]
//! ```

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use rabbitmq_stream_client::Environment;
use rabbitmq_stream_client::error::StreamCreateError;
use rabbitmq_stream_client::types::{ByteCapacity, Message, ResponseCode};
use tokio::sync::Notify;

pub const MESSAGE_COUNT: u32 = 100;

/// Where to connect, shared by both tutorial programs.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub stream: String,
}

impl Target {
    /// Reads `--host`, `--port` and `--stream`; returns the remaining arguments.
    pub fn from_args(args: impl Iterator<Item = String>) -> Result<(Target, Vec<String>), String> {
        let mut target = Target {
            host: "localhost".into(),
            port: 5552,
            stream: "stream-offset-tracking-rust".into(),
        };
        let mut rest = Vec::new();
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--host" => target.host = value("--host")?,
                "--port" => {
                    target.port = value("--port")?
                        .parse()
                        .map_err(|e| format!("--port: {e}"))?
                }
                "--stream" => target.stream = value("--stream")?,
                _ => rest.push(arg),
            }
        }
        Ok((target, rest))
    }

    pub async fn environment(
        &self,
    ) -> Result<Environment, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Environment::builder()
            .host(&self.host)
            .port(self.port)
            .build()
            .await?)
    }
}

/// Declares the tutorial's stream; an existing one is fine.
pub async fn declare_stream(
    environment: &Environment,
    stream: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let created = environment
        .stream_creator()
        .max_length(ByteCapacity::GB(2))
        .create(stream)
        .await;
    match created {
        Ok(()) => Ok(()),
        Err(StreamCreateError::Create {
            status: ResponseCode::StreamAlreadyExists,
            ..
        }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub async fn run(
    target: &Target,
    out: &mut (dyn Write + Send),
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let environment = target.environment().await?;
    declare_stream(&environment, &target.stream).await?;
    let producer = environment.producer().build(&target.stream).await?;

    let confirmed = Arc::new(AtomicU32::new(0));
    let all_confirmed = Arc::new(Notify::new());
    writeln!(out, "Publishing {MESSAGE_COUNT} messages")?;
    for i in 0..MESSAGE_COUNT {
        let body = if i == MESSAGE_COUNT - 1 {
            "marker"
        } else {
            "hello"
        };
        let confirmed = confirmed.clone();
        let all_confirmed = all_confirmed.clone();
        producer
            .send(Message::builder().body(body).build(), move |status| {
                let ok = status.is_ok_and(|s| s.confirmed());
                async move {
                    if ok && confirmed.fetch_add(1, Ordering::SeqCst) + 1 == MESSAGE_COUNT {
                        all_confirmed.notify_one();
                    }
                }
            })
            .await?;
    }
    all_confirmed.notified().await;
    writeln!(out, "Messages confirmed")?;
    producer.close().await?;
    Ok(())
}

#[allow(dead_code)] // the integration tests include this file for `run` only
#[tokio::main]
async fn main() {
    let (target, _) = match Target::from_args(std::env::args().skip(1)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("offset_tracking_send: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&target, &mut std::io::stdout()).await {
        eprintln!("offset_tracking_send: {e}");
        std::process::exit(1);
    }
}
