//! brook's on-disk log: one directory per stream, osiris's layout and chunk format.
//!
//! ```text
//! <stream dir>/
//!   00000000000000000000.segment   "OSIL" v1, then chunks back to back
//!   00000000000000000000.index     "OSII" v1, then one 29-byte record per chunk
//!   00000000000000012345.segment   named after its first chunk id
//!   ...
//! ```
//!
//! * [`Log`] is the single writer: it appends chunks, rolls segments, applies retention, and
//!   [`commit`](Log::commit)s, which is when readers may see new chunks.
//! * [`LogReader`] resolves offset specifications through the index files (binary search, never
//!   a scan of the data) and opens [`Cursor`]s, which return whole stored chunks as slices of
//!   one read buffer so a server can send them without re-encoding.
//! * Offset tracking and publisher sequences live in the log itself ([`Tracking`]), written in
//!   chunk trailers, tracking chunks and per-segment snapshots exactly as osiris writes them.
//!
//! `docs/log-format.md` describes the bytes; `recovery` the repair rules.

mod error;
pub mod format;
mod reader;
mod recovery;
mod replication;
mod retention;
mod tail;
mod tracking;
mod verify;
mod writer;

pub use error::{LogError, Result};
pub use reader::{Cursor, LogActivity, LogReader, LogStats, Position, ReadChunk, Seek};
pub use recovery::Recovery;
pub use replication::Shipped;
pub use retention::RetentionReport;
pub use tail::{PER_LOG_BYTES as TAIL_BYTES_PER_LOG, TailWait};
pub use tracking::{MAX_ID_LEN, Tracking};
pub use verify::{Finding, Severity, Verified, verify};
pub use writer::{EPOCH, Log, LogConfig, Retention, UserChunk};
