//! File-level layout: segment and index file names and headers, index records.
//! `docs/log-format.md` has the byte diagrams.

use std::path::{Path, PathBuf};

use brook_storage::{File, OpenMode, Storage};

use crate::error::{LogError, Result};

pub const SEGMENT_HEADER: [u8; 8] = *b"OSIL\0\0\0\x01";
pub const INDEX_HEADER: [u8; 8] = *b"OSII\0\0\0\x01";
pub const FILE_HEADER_LEN: u64 = 8;
pub const INDEX_RECORD_LEN: u64 = 29;
/// Index positions are `u32`, so a segment must end below 4 GiB; osiris caps it at 3 GB.
pub const MAX_SEGMENT_BYTES: u64 = 3_000_000_000;

pub fn segment_path(dir: &Path, first_chunk_id: u64) -> PathBuf {
    dir.join(format!("{first_chunk_id:020}.segment"))
}

pub fn index_path(dir: &Path, first_chunk_id: u64) -> PathBuf {
    dir.join(format!("{first_chunk_id:020}.index"))
}

/// Parses `<20 digits>.segment` / `.index` file names.
pub fn parse_file_name(name: &str) -> Option<(u64, FileKind)> {
    let (stem, kind) = if let Some(stem) = name.strip_suffix(".segment") {
        (stem, FileKind::Segment)
    } else if let Some(stem) = name.strip_suffix(".index") {
        (stem, FileKind::Index)
    } else {
        return None;
    };
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(|id| (id, kind))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Segment,
    Index,
}

/// One index record: where a chunk starts, and what a lookup needs without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRecord {
    pub chunk_id: u64,
    pub timestamp: i64,
    pub epoch: u64,
    /// Byte position of the chunk header in the segment file.
    pub position: u32,
    pub chunk_type: u8,
}

impl IndexRecord {
    pub fn to_bytes(&self) -> [u8; INDEX_RECORD_LEN as usize] {
        let mut b = [0u8; INDEX_RECORD_LEN as usize];
        b[..8].copy_from_slice(&self.chunk_id.to_be_bytes());
        b[8..16].copy_from_slice(&self.timestamp.to_be_bytes());
        b[16..24].copy_from_slice(&self.epoch.to_be_bytes());
        b[24..28].copy_from_slice(&self.position.to_be_bytes());
        b[28] = self.chunk_type;
        b
    }

    pub fn parse(b: &[u8; INDEX_RECORD_LEN as usize]) -> Self {
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(a)
        };
        Self {
            chunk_id: u64_at(0),
            timestamp: u64_at(8) as i64,
            epoch: u64_at(16),
            position: u32::from_be_bytes([b[24], b[25], b[26], b[27]]),
            chunk_type: b[28],
        }
    }

    /// An all-zero record is what a preallocated or torn index tail looks like.
    pub fn is_zero(&self) -> bool {
        self.chunk_id == 0 && self.timestamp == 0 && self.epoch == 0 && self.position == 0
    }
}

/// Random access to the records of an index file.
#[derive(Debug)]
pub struct IndexFile {
    file: Box<dyn File>,
    path: PathBuf,
}

impl IndexFile {
    pub fn open(storage: &dyn Storage, path: PathBuf) -> Result<Self> {
        let file = storage
            .open(&path, OpenMode::Read)
            .map_err(LogError::io(&path))?;
        Ok(Self { file, path })
    }

    pub fn record(&self, i: u64) -> Result<IndexRecord> {
        let mut b = [0u8; INDEX_RECORD_LEN as usize];
        let at = i
            .checked_mul(INDEX_RECORD_LEN)
            .and_then(|p| p.checked_add(FILE_HEADER_LEN))
            .ok_or_else(|| LogError::io(&self.path)(std::io::ErrorKind::InvalidInput.into()))?;
        self.file
            .read_exact_at(&mut b, at)
            .map_err(LogError::io(&self.path))?;
        Ok(IndexRecord::parse(&b))
    }

    /// Index of the first record in `0..len` for which `pred` is false (records are sorted so
    /// that `pred` is true for a prefix).
    pub fn partition_point(
        &self,
        len: u64,
        mut pred: impl FnMut(&IndexRecord) -> bool,
    ) -> Result<u64> {
        let (mut lo, mut hi) = (0u64, len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self.record(mid)?) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

/// Makes a directory entry change (a created or deleted file) durable.
pub fn sync_dir(storage: &dyn Storage, dir: &Path) -> Result<()> {
    storage.sync_dir(dir).map_err(LogError::io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            parse_file_name("00000000000000000042.segment"),
            Some((42, FileKind::Segment))
        );
        assert_eq!(
            parse_file_name("00000000000000000042.index"),
            Some((42, FileKind::Index))
        );
        assert_eq!(parse_file_name("42.index"), None);
        assert_eq!(parse_file_name("0000000000000000004x.index"), None);
        assert_eq!(
            segment_path(Path::new("/d"), 7),
            PathBuf::from("/d/00000000000000000007.segment")
        );
    }

    #[test]
    fn index_record_round_trip() {
        // First record of the golden osiris index.
        let r = IndexRecord {
            chunk_id: 0,
            timestamp: 0x0000_01a2_1626_5cc3,
            epoch: 1,
            position: 8,
            chunk_type: 0,
        };
        let hex: String = r.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "0000000000000000000001a216265cc300000000000000010000000800"
        );
        assert_eq!(IndexRecord::parse(&r.to_bytes()), r);
    }
}
