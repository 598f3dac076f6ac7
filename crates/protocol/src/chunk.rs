//! The osiris chunk: the unit RabbitMQ Streams stores on disk and sends in Deliver frames.
//!
//! ```text
//! on disk:  | header (48) | bloom filter (bloom_size) | data (data_len) | trailer (trailer_len) |
//! on wire:  | header (48) | data (data_len) |        (Deliver: no bloom filter, no trailer)
//! ```
//!
//! The header is kept byte-for-byte between disk and wire, so a broker can send stored chunks
//! without re-encoding them. The data section is a sequence of entries: simple entries
//! (`u32` length with the top bit clear, then the message) or sub-entry batches (top bit set).

use thiserror::Error;

/// Size of the fixed chunk header.
pub const HEADER_LEN: usize = 48;
/// Magic 5 in the high nibble, format version 0 in the low nibble.
pub const MAGIC_VERSION: u8 = 0x50;
/// Header of a sub-entry batch: flags u8, record count u16, uncompressed length u32, length u32.
pub const BATCH_HEADER_LEN: usize = 11;

/// What a chunk holds. Only user chunks are delivered to ordinary subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChunkType {
    User = 0,
    /// Offset-tracking / publisher-sequence updates; consumes one offset, never delivered.
    TrackingDelta = 1,
    /// All tracking state, written first in every new segment.
    TrackingSnapshot = 2,
}

impl ChunkType {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::User),
            1 => Some(Self::TrackingDelta),
            2 => Some(Self::TrackingSnapshot),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChunkError {
    #[error("chunk header needs {HEADER_LEN} bytes, got {0}")]
    ShortHeader(usize),
    #[error("bad chunk magic/version byte {0:#04x}")]
    BadMagic(u8),
    #[error("unknown chunk type {0}")]
    BadType(u8),
    #[error("data section is malformed at byte {0}")]
    MalformedData(usize),
    #[error(
        "data section holds {found} entries / {found_records} records, header says {entries} / {records}"
    )]
    CountMismatch {
        entries: u16,
        records: u32,
        found: u32,
        found_records: u64,
    },
    #[error("data CRC {actual:#010x} does not match header CRC {expected:#010x}")]
    Crc { expected: u32, actual: u32 },
}

/// The 48-byte chunk header (big-endian on disk and on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub chunk_type: ChunkType,
    /// Entries in the data section (a sub-entry batch counts one).
    pub num_entries: u16,
    /// Records (messages), i.e. offsets taken by this chunk.
    pub num_records: u32,
    /// Broker wall clock when the chunk was written, ms since the Unix epoch.
    pub timestamp: i64,
    pub epoch: u64,
    /// Offset of the chunk's first record.
    pub chunk_id: u64,
    /// CRC-32 (IEEE) of the data section only.
    pub crc: u32,
    pub data_len: u32,
    pub trailer_len: u32,
    pub bloom_size: u8,
    /// The three bytes osiris reserves (and writes as zero). brook stores there a check of
    /// the bytes the data CRC does not cover, the Bloom filter and the trailer (see
    /// [`side_check`]), so recovery can tell a torn trailer from a whole one. Readers that
    /// do not know it ignore it, as osiris and every client do.
    pub side_check: u32,
}

/// The check brook keeps in a chunk header's reserved bytes: the top 24 bits of the CRC-32 of
/// the Bloom filter followed by the trailer, never 0 (0 means "not checked": chunks written by
/// osiris, or with neither filter nor trailer).
pub fn side_check(bloom: &[u8], trailer: &[u8]) -> u32 {
    if bloom.is_empty() && trailer.is_empty() {
        return 0;
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(bloom);
    crc.update(trailer);
    (crc.finalize() >> 8).max(1)
}

impl ChunkHeader {
    pub fn parse(bytes: &[u8]) -> Result<Self, ChunkError> {
        let short = || ChunkError::ShortHeader(bytes.len());
        let mut b = bytes.get(..HEADER_LEN).ok_or_else(short)?;
        let [magic] = take::<1>(&mut b).ok_or_else(short)?;
        if magic != MAGIC_VERSION {
            return Err(ChunkError::BadMagic(magic));
        }
        let [kind] = take::<1>(&mut b).ok_or_else(short)?;
        let chunk_type = ChunkType::from_u8(kind).ok_or(ChunkError::BadType(kind))?;
        let num_entries = u16::from_be_bytes(take(&mut b).ok_or_else(short)?);
        let num_records = u32::from_be_bytes(take(&mut b).ok_or_else(short)?);
        let timestamp = i64::from_be_bytes(take(&mut b).ok_or_else(short)?);
        let epoch = u64::from_be_bytes(take(&mut b).ok_or_else(short)?);
        let chunk_id = u64::from_be_bytes(take(&mut b).ok_or_else(short)?);
        let crc = u32::from_be_bytes(take(&mut b).ok_or_else(short)?);
        let data_len = u32::from_be_bytes(take(&mut b).ok_or_else(short)?);
        let trailer_len = u32::from_be_bytes(take(&mut b).ok_or_else(short)?);
        let [bloom_size] = take::<1>(&mut b).ok_or_else(short)?;
        let [r0, r1, r2] = take::<3>(&mut b).ok_or_else(short)?;
        Ok(Self {
            chunk_type,
            num_entries,
            num_records,
            timestamp,
            epoch,
            chunk_id,
            crc,
            data_len,
            trailer_len,
            bloom_size,
            side_check: u32::from_be_bytes([0, r0, r1, r2]),
        })
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        use bytes::BufMut;
        let mut out = [0u8; HEADER_LEN];
        let mut w = &mut out[..];
        w.put_u8(MAGIC_VERSION);
        w.put_u8(self.chunk_type as u8);
        w.put_u16(self.num_entries);
        w.put_u32(self.num_records);
        w.put_i64(self.timestamp);
        w.put_u64(self.epoch);
        w.put_u64(self.chunk_id);
        w.put_u32(self.crc);
        w.put_u32(self.data_len);
        w.put_u32(self.trailer_len);
        w.put_u8(self.bloom_size);
        let [_, r0, r1, r2] = self.side_check.to_be_bytes();
        w.put_slice(&[r0, r1, r2]);
        out
    }

    /// The offset after this chunk's last record.
    pub fn next_offset(&self) -> u64 {
        self.chunk_id.saturating_add(u64::from(self.num_records))
    }

    /// Bytes this chunk occupies on disk.
    pub fn disk_len(&self) -> u64 {
        HEADER_LEN as u64
            + u64::from(self.bloom_size)
            + u64::from(self.data_len)
            + u64::from(self.trailer_len)
    }

    /// Bytes of header + data, i.e. what a Deliver frame carries.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.data_len as usize
    }
}

/// CRC-32/IEEE as osiris computes it (`erlang:crc32/1`).
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// One data entry, borrowed from a data section or a Publish frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    Simple(&'a [u8]),
    Batch(SubEntryBatch<'a>),
}

/// A sub-entry batch: several records, optionally compressed, stored and delivered as one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubEntryBatch<'a> {
    /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd, 7 user-defined.
    pub compression: u8,
    pub record_count: u16,
    pub uncompressed_len: u32,
    pub body: &'a [u8],
}

impl<'a> SubEntryBatch<'a> {
    /// Records of an uncompressed batch (`u32 length + bytes` each).
    pub fn records(&self) -> impl Iterator<Item = Result<&'a [u8], ChunkError>> + 'a {
        let mut rest = self.body;
        let mut pos = 0usize;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let item = split_len_prefixed(rest).ok_or(ChunkError::MalformedData(pos));
            match item {
                Ok((rec, tail)) => {
                    pos += 4 + rec.len();
                    rest = tail;
                    Some(Ok(rec))
                }
                Err(e) => {
                    rest = &[];
                    Some(Err(e))
                }
            }
        })
    }
}

impl<'a> Entry<'a> {
    /// Records (offsets) this entry takes.
    pub fn records(&self) -> u32 {
        match self {
            Entry::Simple(_) => 1,
            Entry::Batch(b) => u32::from(b.record_count),
        }
    }

    /// Parses one entry at the start of `input`, returning it and the rest.
    pub fn split(input: &'a [u8]) -> Option<(Entry<'a>, &'a [u8])> {
        let first = *input.first()?;
        if first & 0x80 == 0 {
            let (body, rest) = split_len_prefixed(input)?;
            return Some((Entry::Simple(body), rest));
        }
        let mut rest = input.get(1..)?;
        let record_count = u16::from_be_bytes(take(&mut rest)?);
        let uncompressed_len = u32::from_be_bytes(take(&mut rest)?);
        let len = u32::from_be_bytes(take(&mut rest)?) as usize;
        let (body, rest) = rest.split_at_checked(len)?;
        let batch = SubEntryBatch {
            compression: (first >> 4) & 0x07,
            record_count,
            uncompressed_len,
            body,
        };
        Some((Entry::Batch(batch), rest))
    }
}

/// Splits a fixed-size field off the front of `input`.
pub(crate) fn take<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = input.split_first_chunk::<N>()?;
    *input = rest;
    Some(*head)
}

/// `u32` length (top bit clear) + bytes.
fn split_len_prefixed(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut rest = input;
    let len = u32::from_be_bytes(take(&mut rest)?);
    if len & 0x8000_0000 != 0 {
        return None;
    }
    rest.split_at_checked(len as usize)
}

/// Iterates the entries of a data section. Yields an error (once) if the section is malformed.
pub fn entries(data: &[u8]) -> impl Iterator<Item = Result<Entry<'_>, ChunkError>> {
    let mut rest = data;
    let total = data.len();
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match Entry::split(rest) {
            Some((e, tail)) => {
                rest = tail;
                Some(Ok(e))
            }
            None => {
                let at = total - rest.len();
                rest = &[];
                Some(Err(ChunkError::MalformedData(at)))
            }
        }
    })
}

/// A chunk as carried by Deliver (header + data), parsed and checked.
#[derive(Debug, Clone, Copy)]
pub struct ChunkView<'a> {
    pub header: ChunkHeader,
    pub data: &'a [u8],
}

impl<'a> ChunkView<'a> {
    /// Parses `header | data` and checks that the data length matches exactly.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ChunkError> {
        let header = ChunkHeader::parse(bytes)?;
        let data = bytes.get(HEADER_LEN..).unwrap_or_default();
        if data.len() != header.data_len as usize {
            return Err(ChunkError::MalformedData(data.len()));
        }
        Ok(Self { header, data })
    }

    /// Checks the CRC and that the data section holds exactly the counted entries and records.
    pub fn verify(&self) -> Result<(), ChunkError> {
        let actual = crc32(self.data);
        if actual != self.header.crc {
            return Err(ChunkError::Crc {
                expected: self.header.crc,
                actual,
            });
        }
        let (mut found, mut found_records) = (0u32, 0u64);
        for e in entries(self.data) {
            let e = e?;
            found += 1;
            found_records += u64::from(e.records());
        }
        if found != u32::from(self.header.num_entries)
            || found_records != u64::from(self.header.num_records)
        {
            return Err(ChunkError::CountMismatch {
                entries: self.header.num_entries,
                records: self.header.num_records,
                found,
                found_records,
            });
        }
        Ok(())
    }

    /// Every record with its offset: simple entries directly, uncompressed batches expanded.
    /// Compressed batches yield their compressed body once, at the batch's first offset.
    pub fn records(&self) -> Records<'a> {
        Records {
            rest: self.data,
            total: self.data.len(),
            batch: &[],
            offset: self.header.chunk_id,
            after_batch: self.header.chunk_id,
            done: false,
        }
    }
}

/// Iterator over the records of a chunk ([`ChunkView::records`]); borrows, never allocates.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    total: usize,
    /// The unread records of the uncompressed batch being expanded.
    batch: &'a [u8],
    offset: u64,
    /// Where the offsets continue after the current batch.
    after_batch: u64,
    done: bool,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<(u64, &'a [u8]), ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let at = self.total - self.rest.len();
        if !self.batch.is_empty() {
            let Some((record, tail)) = split_len_prefixed(self.batch) else {
                self.done = true;
                return Some(Err(ChunkError::MalformedData(at)));
            };
            self.batch = tail;
            let offset = self.offset;
            self.offset = if self.batch.is_empty() {
                self.after_batch
            } else {
                offset.wrapping_add(1)
            };
            return Some(Ok((offset, record)));
        }
        if self.rest.is_empty() {
            return None;
        }
        let Some((entry, tail)) = Entry::split(self.rest) else {
            self.done = true;
            return Some(Err(ChunkError::MalformedData(at)));
        };
        self.rest = tail;
        let start = self.offset;
        match entry {
            // Offsets wrap rather than overflow: the input is untrusted, and the iterator must
            // not panic on it.
            Entry::Simple(body) => {
                self.offset = start.wrapping_add(1);
                Some(Ok((start, body)))
            }
            Entry::Batch(b) => {
                self.offset = start.wrapping_add(u64::from(b.record_count));
                if b.compression != 0 || b.body.is_empty() {
                    return Some(Ok((start, b.body)));
                }
                self.after_batch = self.offset;
                self.offset = start;
                self.batch = b.body;
                self.next()
            }
        }
    }
}

/// Builds a chunk data section from messages (tests, tools).
pub fn encode_simple_entries<'m>(messages: impl IntoIterator<Item = &'m [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// A user chunk (header + data) as a Deliver frame carries it.
    fn wire_chunk(chunk_id: u64, num_entries: u16, num_records: u32, data: &[u8]) -> Vec<u8> {
        let h = ChunkHeader {
            chunk_type: ChunkType::User,
            num_entries,
            num_records,
            timestamp: 0,
            epoch: 1,
            chunk_id,
            crc: crc32(data),
            data_len: data.len() as u32,
            trailer_len: 0,
            bloom_size: 0,
            side_check: 0,
        };
        let mut wire = h.to_bytes().to_vec();
        wire.extend_from_slice(data);
        wire
    }

    #[test]
    fn crc_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn header_round_trip() {
        let h = ChunkHeader {
            chunk_type: ChunkType::TrackingDelta,
            num_entries: 1,
            num_records: 1,
            timestamp: 1_795_667_943_006,
            epoch: 1,
            chunk_id: 10,
            crc: 0xe058_003c,
            data_len: 29,
            trailer_len: 0,
            bloom_size: 0,
            side_check: 0,
        };
        // Chunk 1 of the golden osiris segment (shared/captures/osiris/README.md).
        let golden = "5001000100000001000001a216265e5e0000000000000001000000000000000ae058003c0000001d0000000000000000";
        let bytes = h.to_bytes();
        assert_eq!(hex(&bytes), golden);
        assert_eq!(ChunkHeader::parse(&bytes).unwrap(), h);
        assert_eq!(h.disk_len(), 48 + 29);
    }

    #[test]
    fn entries_and_batches() {
        let mut data = encode_simple_entries([&b"ab"[..], b"c"]);
        let inner = encode_simple_entries([&b"x"[..], b"yz"]);
        data.push(0x80);
        data.extend_from_slice(&2u16.to_be_bytes());
        data.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        data.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        data.extend_from_slice(&inner);
        let wire = wire_chunk(7, 3, 4, &data);
        let view = ChunkView::parse(&wire).unwrap();
        view.verify().unwrap();
        let recs: Vec<_> = view.records().map(|r| r.unwrap()).collect();
        assert_eq!(
            recs,
            vec![(7, &b"ab"[..]), (8, b"c"), (9, b"x"), (10, b"yz")]
        );
    }

    #[test]
    fn records_of_hostile_chunks_do_not_panic() {
        // A batch claiming 0 records but holding one, at chunk id 0; and offsets at the very
        // end of the u64 range.
        let inner = encode_simple_entries([&b"x"[..]]);
        let mut data = vec![0x80, 0, 0];
        data.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        data.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        data.extend_from_slice(&inner);
        data.extend(encode_simple_entries([&b"y"[..], b"z"]));
        for chunk_id in [0, u64::MAX - 1] {
            let wire = wire_chunk(chunk_id, 3, 2, &data);
            let view = ChunkView::parse(&wire).unwrap();
            assert_eq!(view.records().count(), 3);
        }
    }

    #[test]
    fn malformed_data_is_an_error() {
        let data = [0u8, 0, 0, 9, 1];
        assert!(matches!(
            entries(&data).next(),
            Some(Err(ChunkError::MalformedData(0)))
        ));
        assert!(ChunkHeader::parse(&[0x50; 10]).is_err());
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
