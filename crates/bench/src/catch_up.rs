//! A consumer catching up: `e2e --backlog N` pre-fills the stream with N messages, then, while
//! the fixed-rate producer and its live consumer run, this one reads the stream from `first`
//! through the backlog as fast as the broker serves it. The run's latencies then say whether
//! producers keep theirs while the broker serves a reader far behind (issue #12).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use brook_protocol::OffsetSpec;
use tokio::task::JoinHandle;

use crate::client::{ClientError, Result};
use crate::scenarios::{connect, drain, produce};
use crate::stats::Report;
use crate::{Common, E2eArgs};

/// Fills `stream` with the backlog (untimed) and, if asked, drops the page cache.
pub(crate) async fn prefill(common: &Common, stream: &str, args: &E2eArgs) -> Result<()> {
    eprintln!(
        "e2e: pre-filling a backlog of {} messages (not timed)",
        args.backlog
    );
    let counter = Arc::new(AtomicU64::new(0));
    produce(
        common,
        stream,
        args.backlog,
        args.backlog_size,
        100,
        10_000,
        counter,
    )
    .await?;
    if args.drop_caches {
        tokio::task::spawn_blocking(drop_page_cache)
            .await
            .map_err(|e| ClientError::Unexpected(e.to_string()))??;
    }
    Ok(())
}

pub(crate) struct CatchUp {
    messages: u64,
    read: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    started: Instant,
    /// Ends once the backlog is read, with the time it took.
    task: JoinHandle<Result<f64>>,
}

impl CatchUp {
    /// Subscribes at `first` and starts reading `messages` (the backlog).
    pub(crate) async fn start(common: &Common, stream: &str, messages: u64) -> Result<Self> {
        let mut c = connect(common).await?;
        c.subscribe(0, stream, OffsetSpec::First, 10).await?;
        let (read, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let started = Instant::now();
        let (r, b) = (read.clone(), bytes.clone());
        let task = tokio::spawn(async move {
            drain(&mut c, messages, &r, |chunk| {
                b.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            })
            .await?;
            let seconds = started.elapsed().as_secs_f64();
            let _ = c.close().await;
            Ok(seconds)
        });
        Ok(Self {
            messages,
            read,
            bytes,
            started,
            task,
        })
    }

    /// Stops reading if the backlog is not read yet, and reports how fast it was read. A
    /// reader that failed is reported (`backlog_read_failed`), not allowed to lose the run.
    pub(crate) async fn finish(self, report: &mut Report) {
        let seconds = if self.task.is_finished() {
            match self.task.await {
                Ok(Ok(seconds)) => seconds,
                failed => {
                    eprintln!("e2e: the backlog reader failed: {failed:?}");
                    report.extra.insert("backlog_read_failed", 1.0);
                    self.started.elapsed().as_secs_f64()
                }
            }
        } else {
            self.task.abort();
            self.started.elapsed().as_secs_f64()
        };
        let read = self.read.load(Ordering::Relaxed).min(self.messages);
        let bytes = self.bytes.load(Ordering::Relaxed) as f64;
        report
            .extra
            .insert("backlog_messages", self.messages as f64);
        report.extra.insert("backlog_read_messages", read as f64);
        report.extra.insert("backlog_read_seconds", seconds);
        report
            .extra
            .insert("backlog_read_mb_per_sec", bytes / seconds.max(1e-9) / 1e6);
    }
}

/// Writes dirty pages back and drops the page cache, so that what follows reads the disk.
fn drop_page_cache() -> Result<()> {
    let failed = |what: &str, e: std::io::Error| {
        ClientError::Unexpected(format!("dropping the page cache: {what}: {e}"))
    };
    let status = std::process::Command::new("sync")
        .status()
        .map_err(|e| failed("sync", e))?;
    if !status.success() {
        return Err(ClientError::Unexpected(format!("sync: {status}")));
    }
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .map_err(|e| failed("/proc/sys/vm/drop_caches (as root only)", e))
}
