//! Value types that appear inside commands.

use std::fmt;

use bytes::{BufMut, BytesMut};

use crate::DecodeError;
use crate::wire::{Reader, Wire};

/// An ordered string map (PeerProperties, Create arguments, Subscribe properties…).
///
/// Kept as a list rather than a map: the wire order is meaningful to byte-exact round trips, and
/// these maps hold a handful of entries, so lookups by scan are cheaper than hashing.
pub type Properties = Vec<(String, String)>;

/// Looks a key up in a [`Properties`] list (the last occurrence wins, as in RabbitMQ).
pub fn property<'a>(props: &'a [(String, String)], key: &str) -> Option<&'a str> {
    // The last one wins, as in the map RabbitMQ builds from the list.
    props
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A response code. Kept open (a newtype, not an enum) so that any value round-trips; the
/// constants are the codes RabbitMQ defines.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ResponseCode(pub u16);

impl ResponseCode {
    pub const OK: Self = Self(0x01);
    pub const STREAM_DOES_NOT_EXIST: Self = Self(0x02);
    pub const SUBSCRIPTION_ID_ALREADY_EXISTS: Self = Self(0x03);
    pub const SUBSCRIPTION_ID_DOES_NOT_EXIST: Self = Self(0x04);
    pub const STREAM_ALREADY_EXISTS: Self = Self(0x05);
    pub const STREAM_NOT_AVAILABLE: Self = Self(0x06);
    pub const SASL_MECHANISM_NOT_SUPPORTED: Self = Self(0x07);
    pub const AUTHENTICATION_FAILURE: Self = Self(0x08);
    pub const SASL_ERROR: Self = Self(0x09);
    pub const SASL_CHALLENGE: Self = Self(0x0a);
    pub const SASL_AUTHENTICATION_FAILURE_LOOPBACK: Self = Self(0x0b);
    pub const VIRTUAL_HOST_ACCESS_FAILURE: Self = Self(0x0c);
    pub const UNKNOWN_FRAME: Self = Self(0x0d);
    pub const FRAME_TOO_LARGE: Self = Self(0x0e);
    pub const INTERNAL_ERROR: Self = Self(0x0f);
    pub const ACCESS_REFUSED: Self = Self(0x10);
    pub const PRECONDITION_FAILED: Self = Self(0x11);
    pub const PUBLISHER_DOES_NOT_EXIST: Self = Self(0x12);
    pub const NO_OFFSET: Self = Self(0x13);
    pub const SASL_CANNOT_CHANGE_MECHANISM: Self = Self(0x14);
    pub const SASL_CANNOT_CHANGE_USERNAME: Self = Self(0x15);

    pub fn name(self) -> &'static str {
        match self.0 {
            0x01 => "ok",
            0x02 => "stream does not exist",
            0x03 => "subscription id already exists",
            0x04 => "subscription id does not exist",
            0x05 => "stream already exists",
            0x06 => "stream not available",
            0x07 => "SASL mechanism not supported",
            0x08 => "authentication failure",
            0x09 => "SASL error",
            0x0a => "SASL challenge",
            0x0b => "SASL authentication failure loopback",
            0x0c => "virtual host access failure",
            0x0d => "unknown frame",
            0x0e => "frame too large",
            0x0f => "internal error",
            0x10 => "access refused",
            0x11 => "precondition failed",
            0x12 => "publisher does not exist",
            0x13 => "no offset",
            0x14 => "SASL cannot change mechanism",
            0x15 => "SASL cannot change username",
            _ => "unknown response code",
        }
    }

    pub fn is_ok(self) -> bool {
        self == Self::OK
    }
}

impl fmt::Debug for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x} ({})", self.0, self.name())
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Wire for ResponseCode {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        r.u16("response code").map(Self)
    }
    fn write(&self, w: &mut BytesMut) {
        w.put_u16(self.0)
    }
}

/// Where a reader attaches: Subscribe, ConsumerUpdate responses and ResolveOffsetSpec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum OffsetSpec {
    /// Type 0, only meaningful in a ConsumerUpdate response: "keep the Subscribe spec".
    None,
    First,
    Last,
    Next,
    Offset(u64),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
}

impl OffsetSpec {
    pub fn type_code(self) -> u16 {
        match self {
            Self::None => 0,
            Self::First => 1,
            Self::Last => 2,
            Self::Next => 3,
            Self::Offset(_) => 4,
            Self::Timestamp(_) => 5,
        }
    }
}

impl Wire for OffsetSpec {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(match r.u16("offset type")? {
            0 => Self::None,
            1 => Self::First,
            2 => Self::Last,
            3 => Self::Next,
            4 => Self::Offset(r.u64("offset")?),
            5 => Self::Timestamp(r.i64("timestamp")?),
            other => {
                return Err(DecodeError::InvalidValue {
                    field: "offset type",
                    value: other.into(),
                });
            }
        })
    }
    fn write(&self, w: &mut BytesMut) {
        w.put_u16(self.type_code());
        match *self {
            Self::Offset(o) => w.put_u64(o),
            Self::Timestamp(t) => w.put_i64(t),
            _ => {}
        }
    }
}

/// One entry of an ExchangeCommandVersions list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct CommandVersion {
    pub key: u16,
    pub min_version: u16,
    pub max_version: u16,
}

impl Wire for CommandVersion {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            key: r.u16("command key")?,
            min_version: r.u16("min version")?,
            max_version: r.u16("max version")?,
        })
    }
    fn write(&self, w: &mut BytesMut) {
        w.put_u16(self.key);
        w.put_u16(self.min_version);
        w.put_u16(self.max_version);
    }
}

/// A broker endpoint in a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct BrokerEndpoint {
    pub reference: u16,
    pub host: String,
    pub port: u32,
}

impl Wire for BrokerEndpoint {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            reference: u16::read(r)?,
            host: String::read(r)?,
            port: u32::read(r)?,
        })
    }
    fn write(&self, w: &mut BytesMut) {
        self.reference.write(w);
        self.host.write(w);
        self.port.write(w);
    }
}

/// A stream entry in a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct StreamMetadata {
    pub stream: String,
    pub code: ResponseCode,
    /// `0xFFFF` when the stream is missing or has no known leader.
    pub leader: u16,
    pub replicas: Vec<u16>,
}

impl Wire for StreamMetadata {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            stream: String::read(r)?,
            code: ResponseCode::read(r)?,
            leader: u16::read(r)?,
            replicas: Vec::read(r)?,
        })
    }
    fn write(&self, w: &mut BytesMut) {
        self.stream.write(w);
        self.code.write(w);
        self.leader.write(w);
        self.replicas.write(w);
    }
}
