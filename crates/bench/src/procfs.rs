//! Samples a broker process's CPU time and resident memory from /proc (Linux).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Linux reports CPU times in `USER_HZ` ticks, which the ABI fixes at 100 per second.
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime of all the process's threads, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of the man page, so utime (14) and stime (15) are at 11, 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// Current resident set size in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Descriptors the process has open (entries of /proc/PID/fd; needs the same user or root).
pub fn open_files(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Tracks CPU used and the peak RSS between `start` and `finish`.
#[derive(Debug)]
pub struct Sampler {
    pid: u32,
    cpu_start: f64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(pid: u32) -> Option<Sampler> {
        let cpu_start = cpu_seconds(pid)?;
        let peak = Arc::new(AtomicU64::new(rss_bytes(pid).unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = rss_bytes(pid) {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Some(Sampler {
            pid,
            cpu_start,
            peak,
            stop,
            task,
        })
    }

    /// (CPU seconds used, peak RSS bytes).
    pub async fn finish(self) -> (Option<f64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        if let Some(rss) = rss_bytes(self.pid) {
            self.peak.fetch_max(rss, Ordering::Relaxed);
        }
        let cpu = cpu_seconds(self.pid).map(|c| c - self.cpu_start);
        (cpu, self.peak.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        assert!(rss_bytes(pid).unwrap() > 1 << 20);
        assert_eq!(cpu_seconds(u32::MAX), None);
    }
}
