use std::io;
use std::path::PathBuf;

use brook_protocol::chunk::ChunkError;

/// Errors of the log. I/O errors carry the file they happened on, because "No such file or
/// directory" alone tells an operator nothing.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An fdatasync failed. Linux may have dropped the dirty pages: nothing written since the
    /// last successful sync can be trusted to reach the disk.
    #[error("{path}: fdatasync failed: {source}")]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a segment or index file of this format (bad header)")]
    BadFileHeader { path: PathBuf },
    #[error(
        "{path}: corrupt chunk at byte {position} followed by valid data; refusing to truncate \
         (inspect the file, or move it away to drop everything from this chunk on): {reason}"
    )]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("{path}: chunk at byte {position}: {source}")]
    BadChunk {
        path: PathBuf,
        position: u64,
        #[source]
        source: ChunkError,
    },
    #[error("chunk too large: {0} bytes")]
    ChunkTooLarge(u64),
    #[error("a chunk holds at most 65535 entries")]
    TooManyEntries,
    #[error("the log was deleted")]
    Deleted,
    /// A replicated chunk that is not the next one (the replica's log and the leader's
    /// differ: it must be matched again).
    #[error("replicated chunk {got} is not the next one ({expected})")]
    OutOfSequence { expected: u64, got: u64 },
    #[error(
        "an earlier write failed and could not be rolled back; the log is read-only until reopened"
    )]
    Poisoned,
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { path, source }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
