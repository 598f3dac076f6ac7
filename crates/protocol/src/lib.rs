//! Sans-io codec for the RabbitMQ Streams binary protocol.
//!
//! No sockets, no runtime: bytes in, typed [`Frame`]s out, and back. The broker uses it to decode
//! requests and encode responses; clients and tools (the bench tool, the CLI) use it the other
//! way round. The chunk format shared by the wire (Deliver) and the on-disk log lives in
//! [`chunk`].
//!
//! Decoding is strict, as RabbitMQ's: an unknown key or version, a frame that ends early, or
//! bytes left over are all [`DecodeError`]s, and no input can make the decoder panic (the
//! `fuzz/` target and the random-bytes property test check this).

#![deny(clippy::indexing_slicing)]

pub mod amqp;
pub mod chunk;
mod commands;
mod publish;
mod types;
mod wire;

pub use commands::*;
pub use publish::{Deliver, Publish, PublishBuilder, PublishedEntry, encode_deliver_prefix};
pub use types::{
    BrokerEndpoint, CommandVersion, OffsetSpec, Properties, ResponseCode, StreamMetadata, property,
};

/// Why a frame could not be decoded. A broker answers all of these with Close 0x0d
/// ("unknown frame") after Open, or by closing the socket before.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown command key {key:#06x} version {version}")]
    UnknownCommand { key: u16, version: u16 },
    #[error("frame ended in the middle of {what}")]
    Truncated { what: &'static str },
    #[error("{0} bytes left over after the command")]
    TrailingBytes(usize),
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("negative length {0}")]
    NegativeLength(i32),
    #[error("invalid {field}: {value}")]
    InvalidValue { field: &'static str, value: u64 },
    #[error("malformed chunk: {0}")]
    Chunk(chunk::ChunkError),
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests;
