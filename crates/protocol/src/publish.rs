//! Publish (0x0002) and Deliver (0x0008): the two hot-path commands. Their bodies stay slices of
//! the frame buffer; iteration borrows them, so no message is copied or allocated on decode.

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;
use crate::chunk::{BATCH_HEADER_LEN, ChunkError, ChunkView, Entry, take};
use crate::wire::Reader;

/// A Publish frame: entries as one validated byte region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub publisher_id: u8,
    /// 1: entries may be sub-entry batches. 2: every entry carries a filter value.
    pub version: u16,
    /// The `count` field as sent. RabbitMQ treats it as informational and walks the entries.
    pub count: u32,
    entries: Bytes,
    /// Found while validating, so that consumers of the frame need not walk it again.
    entry_count: u32,
    has_batches: bool,
}

/// One published entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedEntry<'a> {
    pub publishing_id: u64,
    /// Publish v2 only. An empty value (the Rust client's "none") is kept as `Some(b"")`.
    pub filter_value: Option<&'a [u8]>,
    /// The entry exactly as it goes into a chunk's data section (length header included).
    pub raw: &'a [u8],
    pub entry: Entry<'a>,
}

impl Publish {
    pub(crate) fn decode(version: u16, r: &mut Reader) -> Result<Self, DecodeError> {
        let publisher_id = r.u8("publisher id")?;
        let count = r.u32("message count")?;
        let entries = r.rest();
        // Validate once, so that iteration later cannot fail.
        let (mut entry_count, mut has_batches) = (0u32, false);
        let mut rest = &entries[..];
        while !rest.is_empty() {
            let (e, tail) = split_published(version, rest)?;
            entry_count += 1;
            has_batches |= matches!(e.entry, Entry::Batch(_));
            rest = tail;
        }
        Ok(Self {
            publisher_id,
            version,
            count,
            entries,
            entry_count,
            has_batches,
        })
    }

    pub(crate) fn encode(&self, w: &mut BytesMut) {
        w.put_u8(self.publisher_id);
        w.put_u32(self.count);
        w.put_slice(&self.entries);
    }

    #[inline]
    pub fn entries(&self) -> impl Iterator<Item = PublishedEntry<'_>> {
        let version = self.version;
        let mut rest = &self.entries[..];
        std::iter::from_fn(move || {
            let (e, tail) = split_published(version, rest).ok()?;
            rest = tail;
            Some(e)
        })
    }

    /// The encoded entries region (what follows the count field).
    pub fn raw_entries(&self) -> &Bytes {
        &self.entries
    }

    /// Entries in the frame (counted, not the `count` field).
    pub fn entry_count(&self) -> u32 {
        self.entry_count
    }

    /// Whether any entry is a sub-entry batch.
    pub fn has_batches(&self) -> bool {
        self.has_batches
    }
}

#[inline]
fn split_published(version: u16, input: &[u8]) -> Result<(PublishedEntry<'_>, &[u8]), DecodeError> {
    let truncated = || DecodeError::Truncated {
        what: "publish entry",
    };
    let mut rest = input;
    let publishing_id = u64::from_be_bytes(take(&mut rest).ok_or_else(truncated)?);
    let mut filter_value = None;
    if version == 2 {
        // Unsigned, as RabbitMQ reads it: only 0xFFFF means "no filter value".
        match u16::from_be_bytes(take(&mut rest).ok_or_else(truncated)?) {
            u16::MAX => {}
            len => {
                let (v, tail) = rest.split_at_checked(len as usize).ok_or_else(truncated)?;
                filter_value = Some(v);
                rest = tail;
            }
        }
    }
    let (entry, tail) = Entry::split(rest).ok_or_else(truncated)?;
    if version == 2 && matches!(entry, Entry::Batch(_)) {
        return Err(DecodeError::InvalidValue {
            field: "publish v2 entry (sub-entry batches are v1 only)",
            value: 1,
        });
    }
    let raw = rest.get(..rest.len() - tail.len()).unwrap_or_default();
    Ok((
        PublishedEntry {
            publishing_id,
            filter_value,
            raw,
            entry,
        },
        tail,
    ))
}

/// Builds a Publish frame body entry by entry (clients, the bench tool, tests).
#[derive(Debug)]
pub struct PublishBuilder {
    publisher_id: u8,
    version: u16,
    count: u32,
    buf: BytesMut,
    has_batches: bool,
}

impl PublishBuilder {
    /// A v1 Publish (simple entries and sub-entry batches).
    pub fn new(publisher_id: u8) -> Self {
        Self {
            publisher_id,
            version: 1,
            count: 0,
            buf: BytesMut::new(),
            has_batches: false,
        }
    }

    /// A v2 Publish: every entry carries an optional filter value.
    pub fn new_v2(publisher_id: u8) -> Self {
        Self {
            version: 2,
            ..Self::new(publisher_id)
        }
    }

    pub fn with_capacity(mut self, bytes: usize) -> Self {
        self.buf.reserve(bytes);
        self
    }

    /// Adds a simple entry (in v2 without filter value).
    pub fn message(&mut self, publishing_id: u64, message: &[u8]) -> &mut Self {
        self.filtered(publishing_id, None, message)
    }

    /// Adds a simple entry with a filter value (v2; ignored for v1).
    pub fn filtered(
        &mut self,
        publishing_id: u64,
        filter_value: Option<&[u8]>,
        message: &[u8],
    ) -> &mut Self {
        self.buf.put_u64(publishing_id);
        if self.version == 2 {
            match filter_value {
                Some(v) => {
                    // Unsigned, 0xffff meaning "none": at most 65,534 bytes.
                    let v = v.get(..usize::from(u16::MAX - 1)).unwrap_or(v);
                    self.buf.put_u16(v.len() as u16);
                    self.buf.put_slice(v);
                }
                None => self.buf.put_u16(u16::MAX),
            }
        }
        self.buf.put_u32(message.len() as u32 & 0x7fff_ffff);
        self.buf.put_slice(message);
        self.count += 1;
        self
    }

    /// Adds a sub-entry batch (v1 only). `body` is the (possibly compressed) record block.
    pub fn batch(
        &mut self,
        publishing_id: u64,
        compression: u8,
        record_count: u16,
        uncompressed_len: u32,
        body: &[u8],
    ) -> &mut Self {
        debug_assert_eq!(self.version, 1, "sub-entry batches are Publish v1 only");
        self.buf.reserve(8 + BATCH_HEADER_LEN + body.len());
        self.buf.put_u64(publishing_id);
        self.buf.put_u8(0x80 | ((compression & 0x07) << 4));
        self.buf.put_u16(record_count);
        self.buf.put_u32(uncompressed_len);
        self.buf.put_u32(body.len() as u32);
        self.buf.put_slice(body);
        self.count += 1;
        self.has_batches = true;
        self
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    pub fn build(self) -> Publish {
        Publish {
            publisher_id: self.publisher_id,
            version: self.version,
            count: self.count,
            entries: self.buf.freeze(),
            entry_count: self.count,
            has_batches: self.has_batches,
        }
    }
}

/// A Deliver frame: one chunk (header + data section) for one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    pub subscription_id: u8,
    /// Present in version 2 only: the stream's committed chunk id when the frame was sent.
    pub committed_chunk_id: Option<u64>,
    /// Header (48 bytes) + data section; use [`Deliver::chunk`] to read it.
    pub chunk: Bytes,
}

impl Deliver {
    pub(crate) fn decode(version: u16, r: &mut Reader) -> Result<Self, DecodeError> {
        let subscription_id = r.u8("subscription id")?;
        let committed_chunk_id = if version == 2 {
            Some(r.u64("committed chunk id")?)
        } else {
            None
        };
        let chunk = r.rest();
        ChunkView::parse(&chunk).map_err(DecodeError::Chunk)?;
        Ok(Self {
            subscription_id,
            committed_chunk_id,
            chunk,
        })
    }

    pub(crate) fn encode(&self, w: &mut BytesMut) {
        w.put_u8(self.subscription_id);
        if let Some(c) = self.committed_chunk_id {
            w.put_u64(c);
        }
        w.put_slice(&self.chunk);
    }

    pub fn version(&self) -> u16 {
        if self.committed_chunk_id.is_some() {
            2
        } else {
            1
        }
    }

    /// The parsed chunk (validated on decode, so this only fails for hand-built values).
    pub fn chunk(&self) -> Result<ChunkView<'_>, ChunkError> {
        ChunkView::parse(&self.chunk)
    }
}

/// Writes everything of a Deliver frame that precedes the chunk bytes, so a broker can follow it
/// with stored chunk bytes without building a [`Deliver`] value.
pub fn encode_deliver_prefix(
    out: &mut BytesMut,
    subscription_id: u8,
    committed_chunk_id: Option<u64>,
    chunk_len: usize,
) {
    let body = 2 + 2 + 1 + if committed_chunk_id.is_some() { 8 } else { 0 } + chunk_len;
    out.put_u32(body as u32);
    out.put_u16(crate::keys::DELIVER);
    out.put_u16(if committed_chunk_id.is_some() { 2 } else { 1 });
    out.put_u8(subscription_id);
    if let Some(c) = committed_chunk_id {
        out.put_u64(c);
    }
}
