//! The process's resource use, read from `/proc` and the file system, for the metrics and
//! `/api/nodes`. Every value is best effort: 0 when it cannot be read.

use std::path::Path;

#[derive(Debug, Clone, Default)]
pub struct NodeStats {
    /// Resident set size.
    pub memory_bytes: u64,
    /// Physical memory of the machine.
    pub memory_total_bytes: u64,
    pub open_files: u64,
    pub open_files_limit: u64,
    /// Space available to brook on the data directory's file system.
    pub disk_free_bytes: u64,
}

impl NodeStats {
    pub fn read(data_dir: &Path) -> NodeStats {
        NodeStats {
            memory_bytes: rss_bytes().unwrap_or(0),
            memory_total_bytes: mem_total_bytes().unwrap_or(0),
            open_files: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
            open_files_limit: rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .unwrap_or(0),
            disk_free_bytes: rustix::fs::statvfs(data_dir)
                .map_or(0, |s| s.f_bavail.saturating_mul(s.f_frsize)),
        }
    }
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(rustix::param::page_size() as u64))
}

fn mem_total_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}
