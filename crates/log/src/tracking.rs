//! Offset tracking and publisher sequences, stored in the log itself as osiris does:
//! pending updates ride in the trailer of the next user chunk, or in a tracking-delta chunk when
//! there is no user data to carry them; each new segment starts with a snapshot of everything.
//! Recovery therefore only reads the last segment.
//!
//! Record encodings (all big-endian):
//! ```text
//! delta:    type u8 (0 sequence, 1 offset, 2 timestamp) | id length u8 | id | value u64/i64
//! snapshot: sequence = 0 | len | id | chunk id u64 | sequence u64
//!           offset   = 1 | len | id | offset u64
//!           timestamp= 2 | len | id | timestamp i64
//! ```

use std::collections::HashMap;

const TYPE_SEQUENCE: u8 = 0;
const TYPE_OFFSET: u8 = 1;
const TYPE_TIMESTAMP: u8 = 2;

/// osiris keeps the 255 most recently written publisher references in a snapshot, so that
/// short-lived named producers do not grow every snapshot forever.
pub const MAX_SNAPSHOT_SEQUENCES: usize = 255;
/// Tracking ids are stored with a one-byte length.
pub const MAX_ID_LEN: usize = 255;

/// The tracking state of one stream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tracking {
    /// Consumer reference → stored offset.
    offsets: HashMap<String, u64>,
    /// Publisher reference → (chunk id that recorded it, last publishing id).
    sequences: HashMap<String, (u64, u64)>,
    timestamps: HashMap<String, i64>,
    /// Offsets stored since the last write, still to be persisted.
    pending_offsets: HashMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed tracking record at byte {0}")]
pub struct MalformedTracking(pub usize);

impl Tracking {
    pub fn offset(&self, reference: &str) -> Option<u64> {
        self.offsets.get(reference).copied()
    }

    pub fn sequence(&self, reference: &str) -> Option<u64> {
        self.sequences.get(reference).map(|&(_, seq)| seq)
    }

    pub fn offsets(&self) -> impl Iterator<Item = (&str, u64)> {
        self.offsets.iter().map(|(k, &v)| (k.as_str(), v))
    }

    pub fn sequences(&self) -> impl Iterator<Item = (&str, u64)> {
        self.sequences.iter().map(|(k, &(_, v))| (k.as_str(), v))
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty() && self.sequences.is_empty() && self.timestamps.is_empty()
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending_offsets.is_empty()
    }

    /// Records a stored offset. It is visible to [`Tracking::offset`] at once and written with
    /// the next chunk. Ids longer than 255 bytes are ignored, as RabbitMQ ignores them.
    pub(crate) fn store_offset(&mut self, reference: &str, offset: u64) -> bool {
        if !valid_id(reference) {
            return false;
        }
        self.offsets.insert(reference.to_owned(), offset);
        self.pending_offsets.insert(reference.to_owned(), offset);
        true
    }

    /// Encodes the pending offsets plus `sequences` as delta records. Nothing changes until
    /// [`Tracking::written`] confirms that the chunk carrying them is on disk.
    pub(crate) fn encode_deltas(&self, sequences: &[(&str, u64)], out: &mut Vec<u8>) {
        let mut pending: Vec<_> = self.pending_offsets.iter().collect();
        pending.sort_unstable();
        for (reference, offset) in pending {
            put_record(out, TYPE_OFFSET, reference, &offset.to_be_bytes());
        }
        self.encode_sequences(sequences, out);
    }

    /// Encodes `sequences` alone (the pending offsets go with the first chunk of a write).
    pub(crate) fn encode_sequences(&self, sequences: &[(&str, u64)], out: &mut Vec<u8>) {
        for &(reference, seq) in sequences {
            if valid_id(reference) {
                put_record(out, TYPE_SEQUENCE, reference, &seq.to_be_bytes());
            }
        }
    }

    /// The chunk `chunk_id` carrying [`Tracking::encode_deltas`]' output was written.
    pub(crate) fn written(&mut self, chunk_id: u64, sequences: &[(&str, u64)]) {
        self.pending_offsets.clear();
        for &(reference, seq) in sequences {
            if valid_id(reference) {
                self.sequences.insert(reference.to_owned(), (chunk_id, seq));
            }
        }
    }

    /// Encodes the whole state as a snapshot entry body, trimming publisher sequences to the
    /// most recent [`MAX_SNAPSHOT_SEQUENCES`]. Pending offsets are included (and cleared).
    pub(crate) fn snapshot(&mut self, out: &mut Vec<u8>) {
        if self.sequences.len() > MAX_SNAPSHOT_SEQUENCES {
            let mut by_age: Vec<(u64, String)> = self
                .sequences
                .iter()
                .map(|(k, &(c, _))| (c, k.clone()))
                .collect();
            by_age.sort_unstable();
            let excess = by_age.len() - MAX_SNAPSHOT_SEQUENCES;
            for (_, k) in by_age.into_iter().take(excess) {
                self.sequences.remove(&k);
            }
        }
        self.pending_offsets.clear();
        let mut seqs: Vec<_> = self.sequences.iter().collect();
        seqs.sort_unstable();
        for (id, &(chunk_id, seq)) in seqs {
            let mut v = [0u8; 16];
            v[..8].copy_from_slice(&chunk_id.to_be_bytes());
            v[8..].copy_from_slice(&seq.to_be_bytes());
            put_record(out, TYPE_SEQUENCE, id, &v);
        }
        let mut offs: Vec<_> = self.offsets.iter().collect();
        offs.sort_unstable();
        for (id, off) in offs {
            put_record(out, TYPE_OFFSET, id, &off.to_be_bytes());
        }
        let mut ts: Vec<_> = self.timestamps.iter().collect();
        ts.sort_unstable();
        for (id, t) in ts {
            put_record(out, TYPE_TIMESTAMP, id, &t.to_be_bytes());
        }
    }

    /// Replaces the state with a snapshot's contents.
    pub(crate) fn load_snapshot(&mut self, body: &[u8]) -> Result<(), MalformedTracking> {
        *self = Tracking::default();
        parse(body, |kind, id, rest| match kind {
            TYPE_SEQUENCE => {
                let chunk = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
                let seq = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
                self.sequences.insert(id.to_owned(), (chunk, seq));
                Some(16)
            }
            TYPE_OFFSET => {
                let off = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
                self.offsets.insert(id.to_owned(), off);
                Some(8)
            }
            TYPE_TIMESTAMP => {
                let ts = i64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
                self.timestamps.insert(id.to_owned(), ts);
                Some(8)
            }
            _ => None,
        })
    }

    /// Applies delta records (a tracking-delta entry or a user chunk's trailer).
    pub(crate) fn apply_deltas(
        &mut self,
        chunk_id: u64,
        body: &[u8],
    ) -> Result<(), MalformedTracking> {
        parse(body, |kind, id, rest| {
            let raw: [u8; 8] = rest.get(..8)?.try_into().ok()?;
            match kind {
                TYPE_SEQUENCE => {
                    self.sequences
                        .insert(id.to_owned(), (chunk_id, u64::from_be_bytes(raw)));
                }
                TYPE_OFFSET => {
                    self.offsets.insert(id.to_owned(), u64::from_be_bytes(raw));
                }
                TYPE_TIMESTAMP => {
                    self.timestamps
                        .insert(id.to_owned(), i64::from_be_bytes(raw));
                }
                _ => return None,
            }
            Some(8)
        })
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN
}

fn put_record(out: &mut Vec<u8>, kind: u8, id: &str, value: &[u8]) {
    out.push(kind);
    out.push(id.len() as u8);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(value);
}

/// Walks records: `f(type, id, bytes after id)` returns how many value bytes it consumed.
fn parse(
    body: &[u8],
    mut f: impl FnMut(u8, &str, &[u8]) -> Option<usize>,
) -> Result<(), MalformedTracking> {
    let mut pos = 0usize;
    while pos < body.len() {
        let bad = MalformedTracking(pos);
        let kind = *body.get(pos).ok_or(bad.clone())?;
        let len = *body.get(pos + 1).ok_or(bad.clone())? as usize;
        let id = body.get(pos + 2..pos + 2 + len).ok_or(bad.clone())?;
        // Ids are bytes in osiris; brook's come from protocol strings, so they are UTF-8. A
        // foreign non-UTF-8 id is kept under a lossy name rather than failing recovery.
        let id = String::from_utf8_lossy(id);
        let rest = body.get(pos + 2 + len..).ok_or(bad.clone())?;
        let n = f(kind, &id, rest).ok_or(bad)?;
        pos += 2 + len + n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_delta_record() {
        // Chunk 1 of the golden osiris segment: offset of "golden-consumer" = 5.
        let mut t = Tracking::default();
        t.store_offset("golden-consumer", 5);
        let mut out = Vec::new();
        t.encode_deltas(&[], &mut out);
        t.written(10, &[]);
        let mut expected = vec![1u8, 15];
        expected.extend_from_slice(b"golden-consumer");
        expected.extend_from_slice(&5u64.to_be_bytes());
        assert_eq!(out, expected);
        assert!(!t.has_pending());
    }

    #[test]
    fn snapshot_round_trip_and_trim() {
        let mut t = Tracking::default();
        t.store_offset("c1", 7);
        let mut sink = Vec::new();
        for i in 0..300u64 {
            let seqs = [(format!("p{i}"), i * 2)];
            let seqs: Vec<(&str, u64)> = seqs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            t.encode_deltas(&seqs, &mut sink);
            t.written(i, &seqs);
        }
        let mut snap = Vec::new();
        t.snapshot(&mut snap);
        let mut back = Tracking::default();
        back.load_snapshot(&snap).unwrap();
        assert_eq!(back.offset("c1"), Some(7));
        assert_eq!(back.sequences().count(), MAX_SNAPSHOT_SEQUENCES);
        // The oldest references were dropped, the newest kept.
        assert_eq!(back.sequence("p0"), None);
        assert_eq!(back.sequence("p299"), Some(598));
        assert_eq!(back, t);
    }

    #[test]
    fn deltas_apply_and_malformed_is_reported() {
        let mut t = Tracking::default();
        t.store_offset("c", 3);
        let mut out = Vec::new();
        t.encode_deltas(&[("p", 9)], &mut out);
        t.written(5, &[("p", 9)]);
        let mut back = Tracking::default();
        back.apply_deltas(5, &out).unwrap();
        assert_eq!(back.offset("c"), Some(3));
        assert_eq!(back.sequence("p"), Some(9));
        assert!(back.apply_deltas(5, &out[..out.len() - 1]).is_err());
        assert!(back.apply_deltas(5, &[9, 0]).is_err());
    }
}
