//! Every command of the protocol as a typed struct, and [`Frame`], the union of them.
//!
//! A command key identifies its layout in both directions (requests use the key, responses set
//! bit 15), so one enum serves the broker (decoding requests, encoding responses) and clients
//! (the reverse). All commands are version 1 except Publish and Deliver, which also have a v2.

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;
use crate::publish::{Deliver, Publish};
use crate::types::{
    BrokerEndpoint, CommandVersion, OffsetSpec, Properties, ResponseCode, StreamMetadata,
};
use crate::wire::{
    Reader, Wire, consumer_update_offset, nullable, to_end, trailing, trailing_properties,
};

/// Command keys. A response uses `key | RESPONSE`.
pub mod keys {
    pub const RESPONSE: u16 = 0x8000;
    pub const DECLARE_PUBLISHER: u16 = 0x0001;
    pub const PUBLISH: u16 = 0x0002;
    pub const PUBLISH_CONFIRM: u16 = 0x0003;
    pub const PUBLISH_ERROR: u16 = 0x0004;
    pub const QUERY_PUBLISHER_SEQUENCE: u16 = 0x0005;
    pub const DELETE_PUBLISHER: u16 = 0x0006;
    pub const SUBSCRIBE: u16 = 0x0007;
    pub const DELIVER: u16 = 0x0008;
    pub const CREDIT: u16 = 0x0009;
    pub const STORE_OFFSET: u16 = 0x000a;
    pub const QUERY_OFFSET: u16 = 0x000b;
    pub const UNSUBSCRIBE: u16 = 0x000c;
    pub const CREATE: u16 = 0x000d;
    pub const DELETE: u16 = 0x000e;
    pub const METADATA: u16 = 0x000f;
    pub const METADATA_UPDATE: u16 = 0x0010;
    pub const PEER_PROPERTIES: u16 = 0x0011;
    pub const SASL_HANDSHAKE: u16 = 0x0012;
    pub const SASL_AUTHENTICATE: u16 = 0x0013;
    pub const TUNE: u16 = 0x0014;
    pub const OPEN: u16 = 0x0015;
    pub const CLOSE: u16 = 0x0016;
    pub const HEARTBEAT: u16 = 0x0017;
    pub const ROUTE: u16 = 0x0018;
    pub const PARTITIONS: u16 = 0x0019;
    pub const CONSUMER_UPDATE: u16 = 0x001a;
    pub const EXCHANGE_COMMAND_VERSIONS: u16 = 0x001b;
    pub const STREAM_STATS: u16 = 0x001c;
    pub const CREATE_SUPER_STREAM: u16 = 0x001d;
    pub const DELETE_SUPER_STREAM: u16 = 0x001e;
    pub const RESOLVE_OFFSET_SPEC: u16 = 0x001f;
}

use keys::RESPONSE;

impl Wire for bool {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        match r.u8("boolean")? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::InvalidValue {
                field: "boolean",
                value: v.into(),
            }),
        }
    }
    fn write(&self, w: &mut BytesMut) {
        w.put_u8(u8::from(*self));
    }
}

macro_rules! read_field {
    ($r:ident, $ty:ty) => {
        <$ty as Wire>::read($r)?
    };
    ($r:ident, $ty:ty, $codec:ident) => {
        $codec::read($r)?
    };
}

macro_rules! write_field {
    ($w:ident, $v:expr) => {
        Wire::write($v, $w)
    };
    ($w:ident, $v:expr, $codec:ident) => {
        $codec::write($v, $w)
    };
}

/// Declares command structs whose encoding is their fields in order.
/// `field: Type => codec` uses a codec module instead of the type's own encoding.
macro_rules! structs {
    ($(
        $(#[$meta:meta])*
        struct $name:ident { $( $(#[$fmeta:meta])* $field:ident : $ty:ty $(=> $codec:ident)? ),* $(,)? }
    )*) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[cfg_attr(test, derive(proptest_derive::Arbitrary))]
        pub struct $name { $( $(#[$fmeta])* pub $field: $ty ),* }

        impl Wire for $name {
            #[allow(unused_variables)]
            fn read(r: &mut Reader) -> Result<Self, DecodeError> {
                Ok(Self { $( $field: read_field!(r, $ty $(, $codec)?) ),* })
            }
            #[allow(unused_variables)]
            fn write(&self, w: &mut BytesMut) {
                $( write_field!(w, &self.$field $(, $codec)?); )*
            }
        }
    )*};
}

structs! {
    /// The shape of every response that carries only a code.
    struct Response { correlation_id: u32, code: ResponseCode }

    struct DeclarePublisher {
        correlation_id: u32,
        publisher_id: u8,
        /// Empty = no deduplication.
        reference: String,
        stream: String,
    }

    struct PublishConfirm { publisher_id: u8, publishing_ids: Vec<u64> }

    struct PublishError { publisher_id: u8, errors: Vec<PublishingError> }

    struct PublishingError { publishing_id: u64, code: ResponseCode }

    struct QueryPublisherSequence { correlation_id: u32, reference: String, stream: String }

    struct QueryPublisherSequenceResponse { correlation_id: u32, code: ResponseCode, sequence: u64 }

    struct DeletePublisher { correlation_id: u32, publisher_id: u8 }

    struct Subscribe {
        correlation_id: u32,
        subscription_id: u8,
        stream: String,
        offset: OffsetSpec,
        credit: u16,
        /// Absent on the wire when the client sends none (Go); an empty list otherwise.
        properties: Option<Properties> => trailing_properties,
    }

    struct Credit { subscription_id: u8, credit: u16 }

    /// Sent only on error, and without correlation id.
    struct CreditResponse { code: ResponseCode, subscription_id: u8 }

    struct StoreOffset { reference: String, stream: String, offset: u64 }

    struct QueryOffset { correlation_id: u32, reference: String, stream: String }

    struct QueryOffsetResponse { correlation_id: u32, code: ResponseCode, offset: u64 }

    struct Unsubscribe { correlation_id: u32, subscription_id: u8 }

    struct Create { correlation_id: u32, stream: String, arguments: Properties => to_end }

    struct Delete { correlation_id: u32, stream: String }

    struct Metadata { correlation_id: u32, streams: Vec<String> => to_end }

    /// No top-level response code: each stream entry has its own.
    struct MetadataResponse {
        correlation_id: u32,
        brokers: Vec<BrokerEndpoint>,
        streams: Vec<StreamMetadata>,
    }

    struct MetadataUpdate { code: ResponseCode, stream: String }

    struct PeerProperties { correlation_id: u32, properties: Properties => to_end }

    struct PeerPropertiesResponse { correlation_id: u32, code: ResponseCode, properties: Properties }

    struct SaslHandshake { correlation_id: u32 }

    struct SaslHandshakeResponse { correlation_id: u32, code: ResponseCode, mechanisms: Vec<String> }

    struct SaslAuthenticate {
        correlation_id: u32,
        mechanism: String,
        #[cfg_attr(test, proptest(strategy = "crate::tests::opt_bytes()"))]
        data: Option<Bytes> => nullable,
    }

    struct SaslAuthenticateResponse {
        correlation_id: u32,
        code: ResponseCode,
        #[cfg_attr(test, proptest(strategy = "crate::tests::opt_bytes()"))]
        challenge: Option<Bytes> => trailing,
    }

    /// Sent by the server after authentication (key 0x0014); the client answers with the same
    /// layout under key 0x0014 or 0x8014.
    struct Tune { frame_max: u32, heartbeat: u32 }

    struct Open { correlation_id: u32, vhost: String }

    /// On success exactly `advertised_host` and `advertised_port`; absent on failure.
    struct OpenResponse {
        correlation_id: u32,
        code: ResponseCode,
        properties: Option<Properties> => trailing,
    }

    struct Close { correlation_id: u32, code: ResponseCode, reason: String }

    struct Heartbeat {}

    struct Route { correlation_id: u32, routing_key: String, super_stream: String }

    struct RouteResponse { correlation_id: u32, code: ResponseCode, streams: Vec<String> }

    struct Partitions { correlation_id: u32, super_stream: String }

    struct PartitionsResponse { correlation_id: u32, code: ResponseCode, streams: Vec<String> }

    /// Server → client request (single active consumer), correlation id from the server's counter.
    struct ConsumerUpdate { correlation_id: u32, subscription_id: u8, active: bool }

    struct ConsumerUpdateResponse {
        correlation_id: u32,
        code: ResponseCode,
        offset: OffsetSpec => consumer_update_offset,
    }

    struct ExchangeCommandVersions {
        correlation_id: u32,
        commands: Vec<CommandVersion> => to_end,
    }

    struct ExchangeCommandVersionsResponse {
        correlation_id: u32,
        code: ResponseCode,
        commands: Vec<CommandVersion>,
    }

    struct StreamStats { correlation_id: u32, stream: String }

    struct StreamStatsResponse { correlation_id: u32, code: ResponseCode, stats: Vec<(String, i64)> }

    struct CreateSuperStream {
        correlation_id: u32,
        name: String,
        partitions: Vec<String>,
        binding_keys: Vec<String>,
        arguments: Properties => to_end,
    }

    struct DeleteSuperStream { correlation_id: u32, name: String }

    struct ResolveOffsetSpec {
        correlation_id: u32,
        stream: String,
        offset: OffsetSpec,
        properties: Option<Properties> => trailing_properties,
    }

    struct ResolveOffsetSpecResponse { correlation_id: u32, code: ResponseCode, offset: OffsetSpec }
}

macro_rules! frames {
    ($( $(#[$meta:meta])* $variant:ident($ty:ty) = $key:expr, )*) => {
        /// One protocol frame, in either direction.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Frame {
            $( $(#[$meta])* $variant($ty), )*
            /// Publish v1 or v2.
            Publish(Publish),
            /// Deliver v1 or v2.
            Deliver(Deliver),
        }

        /// Every variant with equal weight. A flat union: the derived strategy for an enum this
        /// size nests deeply enough to overflow a test thread's stack.
        #[cfg(test)]
        pub(crate) fn arb_frame() -> impl proptest::strategy::Strategy<Value = Frame> {
            use proptest::prelude::*;
            proptest::strategy::Union::new(vec![
                $( any::<$ty>().prop_map(Frame::$variant).boxed(), )*
                crate::tests::arb_publish().prop_map(Frame::Publish).boxed(),
                crate::tests::arb_deliver().prop_map(Frame::Deliver).boxed(),
            ])
        }

        impl Frame {
            /// The command key, with bit 15 set for responses.
            pub fn key(&self) -> u16 {
                match self {
                    $( Frame::$variant(_) => $key, )*
                    Frame::Publish(_) => keys::PUBLISH,
                    Frame::Deliver(_) => keys::DELIVER,
                }
            }

            fn decode_v1(key: u16, r: &mut Reader) -> Result<Option<Frame>, DecodeError> {
                Ok(Some(match key {
                    $( k if k == $key => Frame::$variant(<$ty as Wire>::read(r)?), )*
                    _ => return Ok(None),
                }))
            }

            fn encode_body(&self, w: &mut BytesMut) {
                match self {
                    $( Frame::$variant(c) => c.write(w), )*
                    Frame::Publish(p) => p.encode(w),
                    Frame::Deliver(d) => d.encode(w),
                }
            }
        }
    };
}

frames! {
    DeclarePublisher(DeclarePublisher) = keys::DECLARE_PUBLISHER,
    DeclarePublisherResponse(Response) = keys::DECLARE_PUBLISHER | RESPONSE,
    PublishConfirm(PublishConfirm) = keys::PUBLISH_CONFIRM,
    PublishError(PublishError) = keys::PUBLISH_ERROR,
    QueryPublisherSequence(QueryPublisherSequence) = keys::QUERY_PUBLISHER_SEQUENCE,
    QueryPublisherSequenceResponse(QueryPublisherSequenceResponse) = keys::QUERY_PUBLISHER_SEQUENCE | RESPONSE,
    DeletePublisher(DeletePublisher) = keys::DELETE_PUBLISHER,
    DeletePublisherResponse(Response) = keys::DELETE_PUBLISHER | RESPONSE,
    Subscribe(Subscribe) = keys::SUBSCRIBE,
    SubscribeResponse(Response) = keys::SUBSCRIBE | RESPONSE,
    Credit(Credit) = keys::CREDIT,
    CreditResponse(CreditResponse) = keys::CREDIT | RESPONSE,
    StoreOffset(StoreOffset) = keys::STORE_OFFSET,
    QueryOffset(QueryOffset) = keys::QUERY_OFFSET,
    QueryOffsetResponse(QueryOffsetResponse) = keys::QUERY_OFFSET | RESPONSE,
    Unsubscribe(Unsubscribe) = keys::UNSUBSCRIBE,
    UnsubscribeResponse(Response) = keys::UNSUBSCRIBE | RESPONSE,
    Create(Create) = keys::CREATE,
    CreateResponse(Response) = keys::CREATE | RESPONSE,
    Delete(Delete) = keys::DELETE,
    DeleteResponse(Response) = keys::DELETE | RESPONSE,
    Metadata(Metadata) = keys::METADATA,
    MetadataResponse(MetadataResponse) = keys::METADATA | RESPONSE,
    MetadataUpdate(MetadataUpdate) = keys::METADATA_UPDATE,
    PeerProperties(PeerProperties) = keys::PEER_PROPERTIES,
    PeerPropertiesResponse(PeerPropertiesResponse) = keys::PEER_PROPERTIES | RESPONSE,
    SaslHandshake(SaslHandshake) = keys::SASL_HANDSHAKE,
    SaslHandshakeResponse(SaslHandshakeResponse) = keys::SASL_HANDSHAKE | RESPONSE,
    SaslAuthenticate(SaslAuthenticate) = keys::SASL_AUTHENTICATE,
    SaslAuthenticateResponse(SaslAuthenticateResponse) = keys::SASL_AUTHENTICATE | RESPONSE,
    /// The server's proposal, and the client's answer under the same key (JS, rstream, Rust).
    Tune(Tune) = keys::TUNE,
    /// The client's answer under the response key (Go).
    TuneResponse(Tune) = keys::TUNE | RESPONSE,
    Open(Open) = keys::OPEN,
    OpenResponse(OpenResponse) = keys::OPEN | RESPONSE,
    Close(Close) = keys::CLOSE,
    CloseResponse(Response) = keys::CLOSE | RESPONSE,
    Heartbeat(Heartbeat) = keys::HEARTBEAT,
    Route(Route) = keys::ROUTE,
    RouteResponse(RouteResponse) = keys::ROUTE | RESPONSE,
    Partitions(Partitions) = keys::PARTITIONS,
    PartitionsResponse(PartitionsResponse) = keys::PARTITIONS | RESPONSE,
    ConsumerUpdate(ConsumerUpdate) = keys::CONSUMER_UPDATE,
    ConsumerUpdateResponse(ConsumerUpdateResponse) = keys::CONSUMER_UPDATE | RESPONSE,
    ExchangeCommandVersions(ExchangeCommandVersions) = keys::EXCHANGE_COMMAND_VERSIONS,
    ExchangeCommandVersionsResponse(ExchangeCommandVersionsResponse) = keys::EXCHANGE_COMMAND_VERSIONS | RESPONSE,
    StreamStats(StreamStats) = keys::STREAM_STATS,
    StreamStatsResponse(StreamStatsResponse) = keys::STREAM_STATS | RESPONSE,
    CreateSuperStream(CreateSuperStream) = keys::CREATE_SUPER_STREAM,
    CreateSuperStreamResponse(Response) = keys::CREATE_SUPER_STREAM | RESPONSE,
    DeleteSuperStream(DeleteSuperStream) = keys::DELETE_SUPER_STREAM,
    DeleteSuperStreamResponse(Response) = keys::DELETE_SUPER_STREAM | RESPONSE,
    ResolveOffsetSpec(ResolveOffsetSpec) = keys::RESOLVE_OFFSET_SPEC,
    ResolveOffsetSpecResponse(ResolveOffsetSpecResponse) = keys::RESOLVE_OFFSET_SPEC | RESPONSE,
}

/// Bytes of the size prefix that precedes every frame.
pub const SIZE_PREFIX_LEN: usize = 4;

/// Reads the size prefix of the frame at the start of `buf`: the number of bytes that follow it.
pub fn frame_size(buf: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(
        buf.get(..SIZE_PREFIX_LEN)?.try_into().ok()?,
    ))
}

impl Frame {
    /// The response code of a response (or of a Close), for counting errors.
    pub fn response_code(&self) -> Option<ResponseCode> {
        Some(match self {
            Frame::DeclarePublisherResponse(r)
            | Frame::DeletePublisherResponse(r)
            | Frame::SubscribeResponse(r)
            | Frame::UnsubscribeResponse(r)
            | Frame::CreateResponse(r)
            | Frame::DeleteResponse(r)
            | Frame::CloseResponse(r)
            | Frame::CreateSuperStreamResponse(r)
            | Frame::DeleteSuperStreamResponse(r) => r.code,
            Frame::QueryPublisherSequenceResponse(r) => r.code,
            Frame::CreditResponse(r) => r.code,
            Frame::QueryOffsetResponse(r) => r.code,
            Frame::PeerPropertiesResponse(r) => r.code,
            Frame::SaslHandshakeResponse(r) => r.code,
            Frame::SaslAuthenticateResponse(r) => r.code,
            Frame::OpenResponse(r) => r.code,
            Frame::RouteResponse(r) => r.code,
            Frame::PartitionsResponse(r) => r.code,
            Frame::StreamStatsResponse(r) => r.code,
            Frame::ResolveOffsetSpecResponse(r) => r.code,
            Frame::Close(c) => c.code,
            _ => return None,
        })
    }

    /// Decodes one frame body: key, version and content, without the size prefix.
    ///
    /// Strict as RabbitMQ: an unknown (key, version) pair, missing bytes, or bytes left over
    /// after the command are errors.
    pub fn decode(body: Bytes) -> Result<Frame, DecodeError> {
        let mut r = Reader::new(body);
        let key = r.u16("command key")?;
        let version = r.u16("command version")?;
        let frame = match (key, version) {
            (keys::PUBLISH, 1 | 2) => Frame::Publish(Publish::decode(version, &mut r)?),
            (keys::DELIVER, 1 | 2) => Frame::Deliver(Deliver::decode(version, &mut r)?),
            (keys::PUBLISH | keys::DELIVER, _) => {
                return Err(DecodeError::UnknownCommand { key, version });
            }
            (_, 1) => Frame::decode_v1(key, &mut r)?
                .ok_or(DecodeError::UnknownCommand { key, version })?,
            _ => return Err(DecodeError::UnknownCommand { key, version }),
        };
        r.finish()?;
        Ok(frame)
    }

    /// The version this frame is encoded with.
    pub fn version(&self) -> u16 {
        match self {
            Frame::Publish(p) => p.version,
            Frame::Deliver(d) => d.version(),
            _ => 1,
        }
    }

    /// Appends the complete frame, size prefix included.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0);
        out.put_u16(self.key());
        out.put_u16(self.version());
        self.encode_body(out);
        let size = (out.len() - start - SIZE_PREFIX_LEN) as u32;
        if let Some(prefix) = out.get_mut(start..start + SIZE_PREFIX_LEN) {
            prefix.copy_from_slice(&size.to_be_bytes());
        }
    }

    /// The complete frame as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    /// The correlation id of a request that expects a response, if this is one. Used to answer
    /// a request the broker refuses without decoding it further.
    pub fn correlation_id(&self) -> Option<u32> {
        Some(match self {
            Frame::DeclarePublisher(c) => c.correlation_id,
            Frame::QueryPublisherSequence(c) => c.correlation_id,
            Frame::DeletePublisher(c) => c.correlation_id,
            Frame::Subscribe(c) => c.correlation_id,
            Frame::QueryOffset(c) => c.correlation_id,
            Frame::Unsubscribe(c) => c.correlation_id,
            Frame::Create(c) => c.correlation_id,
            Frame::Delete(c) => c.correlation_id,
            Frame::Metadata(c) => c.correlation_id,
            Frame::PeerProperties(c) => c.correlation_id,
            Frame::SaslHandshake(c) => c.correlation_id,
            Frame::SaslAuthenticate(c) => c.correlation_id,
            Frame::Open(c) => c.correlation_id,
            Frame::Close(c) => c.correlation_id,
            Frame::Route(c) => c.correlation_id,
            Frame::Partitions(c) => c.correlation_id,
            Frame::ExchangeCommandVersions(c) => c.correlation_id,
            Frame::StreamStats(c) => c.correlation_id,
            Frame::CreateSuperStream(c) => c.correlation_id,
            Frame::DeleteSuperStream(c) => c.correlation_id,
            Frame::ResolveOffsetSpec(c) => c.correlation_id,
            _ => return None,
        })
    }
}
