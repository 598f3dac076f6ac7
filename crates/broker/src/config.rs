//! Broker settings.

use std::path::PathBuf;
use std::time::Duration;

use brook_storage::SharedStorage;

/// When a confirm may be sent, relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Confirm once the chunk is written to the OS page cache (RabbitMQ's behaviour): survives
    /// a broker crash, not a machine crash.
    None,
    /// Group commit: fdatasync at most once per interval; confirms (and consumer visibility)
    /// wait for it. Survives a machine crash; costs up to one interval of latency.
    Batch(Duration),
    /// fdatasync before every confirm.
    Always,
}

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    /// Where files go: the real disk, or a simulated one in tests.
    pub storage: SharedStorage,
    pub durability: Durability,
    /// Segment size for streams created without `stream-max-segment-size-bytes`.
    pub default_max_segment_bytes: u64,
    /// How often retention is re-evaluated (so an idle stream past its max-age still shrinks).
    pub retention_check_interval: Duration,
    /// The writer starts a new chunk when one reaches this many bytes of data.
    pub max_chunk_bytes: usize,
    /// How long a hot stream's writer may wait for more publishes so that its chunks grow
    /// (`stream/pacing.rs`); zero writes at once.
    pub chunk_linger: Duration,
    /// A member of a cluster: streams found on disk wait for the cluster's metadata to say
    /// whether this node leads or follows them.
    pub clustered: bool,
}

impl BrokerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            storage: brook_storage::disk(),
            durability: Durability::None,
            default_max_segment_bytes: 500_000_000,
            retention_check_interval: Duration::from_secs(60),
            max_chunk_bytes: 256 << 10,
            chunk_linger: Duration::from_millis(1),
            clustered: false,
        }
    }
}
