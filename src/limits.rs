//! The process's open-files limit. Each stream keeps its active segment and index open and
//! each connection is a socket, so the soft limit many systems start services with (1024)
//! is reached with a few hundred streams. brook raises it to the hard limit at start, as
//! RabbitMQ's and most servers' start scripts do, and warns when it is nearly used up.

use std::time::Duration;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Warn when this share of the limit is in use.
const WARN_AT_PERCENT: u64 = 80;
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// Raises the soft open-files limit to the hard one. Returns the limit in force.
pub fn raise_open_files_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (limit.current, limit.maximum) else {
        return None; // unlimited
    };
    let Some(hard) = hard else {
        return Some(soft);
    };
    if hard > soft {
        let raised = Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!(from = soft, to = hard, "raised the open-files limit");
                return Some(hard);
            }
            Err(e) => tracing::warn!(soft, hard, "could not raise the open-files limit: {e}"),
        }
    }
    Some(soft)
}

/// Descriptors open now (entries of /proc/self/fd).
fn open_files() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// Logs a warning while more than 80% of `limit` is in use (once per crossing).
pub async fn watch(limit: u64) {
    let mut warned = false;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        let Some(open) = open_files() else {
            return;
        };
        let high = open * 100 >= limit * WARN_AT_PERCENT;
        if high && !warned {
            tracing::warn!(
                open,
                limit,
                "open files near the limit: new streams and connections will soon fail \
                 (raise `ulimit -n` / LimitNOFILE)"
            );
        } else if !high && warned {
            tracing::info!(
                open,
                limit,
                "open files back under {WARN_AT_PERCENT}% of the limit"
            );
        }
        warned = high;
    }
}
