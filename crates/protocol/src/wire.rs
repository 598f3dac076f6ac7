//! Primitive encodings shared by every command: big-endian integers, strings with a `u16`
//! length, byte blobs with an `i32` length, arrays with an `i32` count.
//!
//! Decoding never trusts a length or count from the peer: every read is bounds-checked against
//! what is left of the frame, and no allocation is sized by a count before the bytes behind it
//! are known to exist.

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;

/// A cursor over one frame body. Slices handed out share the frame's allocation.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes `n` bytes as a zero-copy slice of the frame.
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated { what });
        }
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    /// Everything that is left, as a slice of the frame.
    pub(crate) fn rest(&mut self) -> Bytes {
        let out = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        out
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let end = self.pos + N;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated { what })?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// RabbitMQ strict decoding: a command must consume its frame exactly.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

/// A value with a fixed wire encoding.
pub(crate) trait Wire: Sized {
    fn read(r: &mut Reader) -> Result<Self, DecodeError>;
    fn write(&self, w: &mut BytesMut);
}

macro_rules! int_wire {
    ($($t:ty => $read:ident, $put:ident;)*) => {$(
        impl Wire for $t {
            fn read(r: &mut Reader) -> Result<Self, DecodeError> {
                r.$read(stringify!($t))
            }
            fn write(&self, w: &mut BytesMut) {
                w.$put(*self);
            }
        }
    )*};
}

int_wire! {
    u8 => u8, put_u8;
    u16 => u16, put_u16;
    u32 => u32, put_u32;
    u64 => u64, put_u64;
    i32 => i32, put_i32;
    i64 => i64, put_i64;
}

/// Strings carry an unsigned 16-bit length, as RabbitMQ parses them: the protocol document's
/// `-1 = null` would read as 65535 bytes and fail as truncated, exactly as it fails there.
impl Wire for String {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        let len = r.u16("string length")? as usize;
        let bytes = r.take(len, "string")?;
        // RabbitMQ never checks string bytes; a frame is not refused for them. Invalid UTF-8
        // becomes U+FFFD (a stream name with such bytes then simply does not exist).
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
    fn write(&self, w: &mut BytesMut) {
        write_str(self, w);
    }
}

/// Writes a protocol string. A string longer than the format allows is cut at the last char
/// boundary that fits: encoding is infallible, and such a string is a caller bug.
pub(crate) fn write_str(s: &str, w: &mut BytesMut) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    w.put_u16(end as u16);
    w.put_slice(s.as_bytes().get(..end).unwrap_or_default());
}

/// `bytes`: an `i32` length and that many bytes. A negative length is an error here; the one
/// place where -1 means "null" uses [`nullable`].
impl Wire for Bytes {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        let len = r.i32("bytes length")?;
        let len = usize::try_from(len).map_err(|_| DecodeError::NegativeLength(len))?;
        r.take(len, "bytes")
    }
    fn write(&self, w: &mut BytesMut) {
        let bytes = self.get(..i32::MAX as usize).unwrap_or(self);
        w.put_i32(bytes.len() as i32);
        w.put_slice(bytes);
    }
}

/// Arrays: an `i32` count, then the elements.
impl<T: Wire> Wire for Vec<T> {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        let count = r.i32("array count")?;
        let count = usize::try_from(count).map_err(|_| DecodeError::NegativeLength(count))?;
        // Every element takes at least one byte, so this bounds the allocation by the frame.
        let mut out = Vec::with_capacity(count.min(r.remaining()));
        for _ in 0..count {
            out.push(T::read(r)?);
        }
        Ok(out)
    }
    fn write(&self, w: &mut BytesMut) {
        w.put_i32(i32::try_from(self.len()).unwrap_or(i32::MAX));
        for item in self {
            item.write(w);
        }
    }
}

impl<A: Wire, B: Wire> Wire for (A, B) {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok((A::read(r)?, B::read(r)?))
    }
    fn write(&self, w: &mut BytesMut) {
        self.0.write(w);
        self.1.write(w);
    }
}

/// Fields that are present only when bytes remain in the frame (Subscribe properties, the Open
/// response's properties, the SASL challenge). They are always the last field.
pub(crate) mod trailing {
    use super::*;

    pub(crate) fn read<T: Wire>(r: &mut Reader) -> Result<Option<T>, DecodeError> {
        if r.remaining() == 0 {
            Ok(None)
        } else {
            T::read(r).map(Some)
        }
    }

    pub(crate) fn write<T: Wire>(v: &Option<T>, w: &mut BytesMut) {
        if let Some(v) = v {
            v.write(w);
        }
    }
}

/// `bytes` where length -1 means null (SaslAuthenticate data).
pub(crate) mod nullable {
    use super::*;

    pub(crate) fn read(r: &mut Reader) -> Result<Option<Bytes>, DecodeError> {
        match r.i32("bytes length")? {
            -1 => Ok(None),
            len => {
                let len = usize::try_from(len).map_err(|_| DecodeError::NegativeLength(len))?;
                r.take(len, "bytes").map(Some)
            }
        }
    }

    pub(crate) fn write(v: &Option<Bytes>, w: &mut BytesMut) {
        match v {
            None => w.put_i32(-1),
            Some(b) => b.write(w),
        }
    }
}

/// Arrays whose count RabbitMQ reads but ignores: the elements run to the end of the frame
/// (PeerProperties, the arguments of Create and CreateSuperStream, Metadata's streams,
/// ExchangeCommandVersions). Always the last field.
pub(crate) mod to_end {
    use super::*;

    pub(crate) fn read<T: Wire>(r: &mut Reader) -> Result<Vec<T>, DecodeError> {
        let _count = r.i32("array count")?;
        let mut out = Vec::new();
        while r.remaining() > 0 {
            out.push(T::read(r)?);
        }
        Ok(out)
    }

    pub(crate) fn write<T: Wire>(v: &Vec<T>, w: &mut BytesMut) {
        v.write(w);
    }
}

/// Subscribe's (and ResolveOffsetSpec's) properties as RabbitMQ's `parse_properties`: absent
/// with nothing left; fewer than 4 bytes left are ignored; otherwise a count (ignored) and
/// pairs to the end of the frame.
pub(crate) mod trailing_properties {
    use super::*;
    use crate::types::Properties;

    pub(crate) fn read(r: &mut Reader) -> Result<Option<Properties>, DecodeError> {
        match r.remaining() {
            0 => Ok(None),
            1..=3 => {
                r.rest();
                Ok(None)
            }
            _ => to_end::read(r).map(Some),
        }
    }

    pub(crate) fn write(v: &Option<Properties>, w: &mut BytesMut) {
        trailing::write(v, w);
    }
}

/// The offset of a ConsumerUpdate response as RabbitMQ reads it: after the types without a
/// value (none, first, last, next) whatever follows is ignored — rstream always sends 8 more
/// bytes; offset and timestamp take exactly their 8 bytes.
pub(crate) mod consumer_update_offset {
    use super::*;
    use crate::types::OffsetSpec;

    pub(crate) fn read(r: &mut Reader) -> Result<OffsetSpec, DecodeError> {
        let spec = match r.u16("offset type")? {
            0 => OffsetSpec::None,
            1 => OffsetSpec::First,
            2 => OffsetSpec::Last,
            3 => OffsetSpec::Next,
            4 => return Ok(OffsetSpec::Offset(r.u64("offset")?)),
            5 => return Ok(OffsetSpec::Timestamp(r.i64("timestamp")?)),
            other => {
                return Err(DecodeError::InvalidValue {
                    field: "offset type",
                    value: other.into(),
                });
            }
        };
        r.rest();
        Ok(spec)
    }

    pub(crate) fn write(v: &OffsetSpec, w: &mut BytesMut) {
        v.write(w);
    }
}
