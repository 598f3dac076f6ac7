//! Reading AMQP 1.0 messages, as the stream clients encode them, for display (the console's
//! message browser, `brook ctl tail`). The broker never needs to look inside a message: this
//! is for people. Sans-io, bounded (nesting depth, sizes from the input only), never panics.

use std::fmt;

/// An AMQP 1.0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// Any unsigned integer type (ubyte, ushort, uint, ulong).
    Unsigned(u64),
    /// Any signed integer type (byte, short, int, long).
    Signed(i64),
    Float(f64),
    Char(char),
    /// Milliseconds since the epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
    Binary(Vec<u8>),
    String(String),
    Symbol(String),
    /// decimal32/64/128, kept as raw bytes.
    Decimal(Vec<u8>),
    List(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Array(Vec<Value>),
    Described(Box<Value>, Box<Value>),
}

/// Why a message could not be read as AMQP 1.0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError(pub &'static str);

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an AMQP 1.0 message: {}", self.0)
    }
}

impl std::error::Error for AmqpError {}

/// Nesting deeper than this is refused (a hostile message must not exhaust the stack).
const MAX_DEPTH: usize = 32;

/// The sections of a message: (descriptor code, value), e.g. 0x73 properties, 0x74
/// application properties, 0x75 data. Everything must be a described section.
pub fn sections(mut bytes: &[u8]) -> Result<Vec<(u64, Value)>, AmqpError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let mut r = Reader(bytes);
        match r.value(0)? {
            Value::Described(d, v) => match *d {
                Value::Unsigned(code @ 0x70..=0x78) => out.push((code, *v)),
                _ => return Err(AmqpError("unknown section")),
            },
            _ => return Err(AmqpError("a section must be described")),
        }
        bytes = r.0;
    }
    if out.is_empty() {
        return Err(AmqpError("empty"));
    }
    Ok(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AmqpError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(AmqpError("truncated"))?;
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], AmqpError> {
        let b = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, AmqpError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, AmqpError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A length: one byte for the 8-bit encodings, four for the 32-bit ones.
    fn len(&mut self, wide: bool) -> Result<usize, AmqpError> {
        let n = if wide {
            self.u32()?
        } else {
            u32::from(self.u8()?)
        };
        usize::try_from(n).map_err(|_| AmqpError("length"))
    }

    fn value(&mut self, depth: usize) -> Result<Value, AmqpError> {
        let code = self.u8()?;
        self.value_of(code, depth)
    }

    fn value_of(&mut self, code: u8, depth: usize) -> Result<Value, AmqpError> {
        if depth > MAX_DEPTH {
            return Err(AmqpError("nested too deeply"));
        }
        Ok(match code {
            0x00 => {
                let descriptor = self.value(depth + 1)?;
                let value = self.value(depth + 1)?;
                Value::Described(Box::new(descriptor), Box::new(value))
            }
            0x40 => Value::Null,
            0x41 => Value::Bool(true),
            0x42 => Value::Bool(false),
            0x56 => Value::Bool(self.u8()? != 0),
            0x43 | 0x44 => Value::Unsigned(0),
            0x50 | 0x52 | 0x53 => Value::Unsigned(u64::from(self.u8()?)),
            0x60 => Value::Unsigned(u64::from(u16::from_be_bytes(self.array()?))),
            0x70 => Value::Unsigned(u64::from(self.u32()?)),
            0x80 => Value::Unsigned(u64::from_be_bytes(self.array()?)),
            0x51 => Value::Signed(i64::from(i8::from_be_bytes(self.array()?))),
            0x54 => Value::Signed(i64::from(i8::from_be_bytes(self.array()?))),
            0x55 => Value::Signed(i64::from(i8::from_be_bytes(self.array()?))),
            0x61 => Value::Signed(i64::from(i16::from_be_bytes(self.array()?))),
            0x71 => Value::Signed(i64::from(i32::from_be_bytes(self.array()?))),
            0x81 => Value::Signed(i64::from_be_bytes(self.array()?)),
            0x72 => Value::Float(f64::from(f32::from_be_bytes(self.array()?))),
            0x82 => Value::Float(f64::from_be_bytes(self.array()?)),
            0x73 => Value::Char(char::from_u32(self.u32()?).unwrap_or(char::REPLACEMENT_CHARACTER)),
            0x83 => Value::Timestamp(i64::from_be_bytes(self.array()?)),
            0x98 => Value::Uuid(self.array()?),
            0x74 => Value::Decimal(self.take(4)?.to_vec()),
            0x84 => Value::Decimal(self.take(8)?.to_vec()),
            0x94 => Value::Decimal(self.take(16)?.to_vec()),
            0xa0 | 0xb0 => {
                let n = self.len(code == 0xb0)?;
                Value::Binary(self.take(n)?.to_vec())
            }
            0xa1 | 0xb1 | 0xa3 | 0xb3 => {
                let n = self.len(code & 0x10 != 0)?;
                let text = String::from_utf8_lossy(self.take(n)?).into_owned();
                if code & 0x02 != 0 {
                    Value::Symbol(text)
                } else {
                    Value::String(text)
                }
            }
            0x45 => Value::List(Vec::new()),
            0xc0 | 0xd0 | 0xc1 | 0xd1 => self.compound(code, depth)?,
            0xe0 | 0xf0 => self.array_value(code == 0xf0, depth)?,
            _ => return Err(AmqpError("unknown type code")),
        })
    }

    /// list8/list32/map8/map32: size, count, then the items.
    fn compound(&mut self, code: u8, depth: usize) -> Result<Value, AmqpError> {
        let wide = code & 0x10 != 0;
        let size = self.len(wide)?;
        let mut inner = Reader(self.take(size)?);
        let count = inner.len(wide)?;
        let mut items = Vec::new();
        for _ in 0..count {
            items.push(inner.value(depth + 1)?);
        }
        if code & 0x01 == 0 {
            return Ok(Value::List(items));
        }
        if items.len() % 2 != 0 {
            return Err(AmqpError("odd map"));
        }
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        Ok(Value::Map(pairs))
    }

    /// array8/array32: size, count, one element constructor, then the bare elements.
    fn array_value(&mut self, wide: bool, depth: usize) -> Result<Value, AmqpError> {
        let size = self.len(wide)?;
        let mut inner = Reader(self.take(size)?);
        let count = inner.len(wide)?;
        let element = inner.u8()?;
        let mut items = Vec::new();
        for _ in 0..count {
            if inner.0.is_empty() {
                return Err(AmqpError("truncated array"));
            }
            items.push(inner.value_of(element, depth + 1)?);
        }
        Ok(Value::Array(items))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    /// A message as the Rust and Go clients encode one: properties (message-id, content-type),
    /// application properties, one data section.
    #[test]
    fn reads_a_client_message() {
        let mut m = vec![0x00, 0x53, 0x73, 0xc0, 0x07, 0x05];
        m.extend([0x53, 0x07]); // message-id: ulong 7
        m.extend([0x40, 0x40, 0x40, 0x40]); // user-id, to, subject, reply-to
        m.extend([
            0x00, 0x53, 0x74, 0xc1, 0x08, 0x02, 0xa1, 0x01, b'k', 0xa1, 0x02, b'v', b'1',
        ]);
        m.extend([0x00, 0x53, 0x75, 0xa0, 0x02, b'h', b'i']);
        let s = sections(&m).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].0, 0x73);
        assert_eq!(
            s[1],
            (
                0x74,
                Value::Map(vec![(
                    Value::String("k".into()),
                    Value::String("v1".into())
                )])
            )
        );
        assert_eq!(s[2], (0x75, Value::Binary(b"hi".to_vec())));
    }

    #[test]
    fn refuses_what_is_not_amqp() {
        assert!(sections(b"plain text").is_err());
        assert!(sections(&[]).is_err());
        // Deep nesting is refused, not recursed into.
        let mut deep = vec![0x00, 0x53, 0x77];
        deep.extend(std::iter::repeat_n(0x00, 1000));
        assert!(sections(&deep).is_err());
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    proptest! {
        /// Never panics on arbitrary input.
        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = super::sections(&bytes);
        }
    }
}
