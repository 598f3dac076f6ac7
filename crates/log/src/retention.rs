//! Retention: whole old segments go once the stream is over its size or age limit, oldest
//! first, never the active segment. Only the policy decides what is deleted: the segment list
//! comes from the writer's own state, never from a read that failed.

use std::sync::atomic::Ordering;

use crate::error::{LogError, Result};
use crate::format::{index_path, segment_path};
use crate::reader::SegmentInfo;
use crate::writer::Log;

/// What retention removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

impl Log {
    /// Deletes whole old segments beyond the retention limits. The active segment is never
    /// deleted. Readers see the new first chunk at once.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<RetentionReport> {
        self.shared.tail.trim();
        let sealed = self.segments.len().saturating_sub(1);
        let mut delete = 0usize;
        if let Some(max_bytes) = self.config.retention.max_bytes {
            let mut total = self.active().size;
            for i in (0..sealed).rev() {
                total += self.segments[i].size;
                if total > max_bytes {
                    delete = i + 1;
                    break;
                }
            }
        }
        if let Some(max_age) = self.config.retention.max_age {
            // A max-age beyond the representable range keeps everything; it must never wrap
            // into a cutoff in the future.
            let age = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
            let cutoff = now_ms.saturating_sub(age);
            let mut i = delete;
            while i < sealed && self.segments[i].last_timestamp.is_none_or(|t| t < cutoff) {
                i += 1;
            }
            delete = delete.max(i);
        }
        if delete == 0 {
            return Ok(RetentionReport::default());
        }
        let removed: Vec<SegmentInfo> = self.segments.drain(..delete).collect();
        {
            // Readers must stop looking for these files before they disappear. (The view may
            // not list the newest segment yet: it is published at commit.)
            let mut view = self.shared.write();
            view.segments
                .retain(|s| !removed.iter().any(|r| r.first_chunk_id == s.first_chunk_id));
        }
        let mut report = RetentionReport::default();
        for seg in &removed {
            // Index first: a segment without index is rebuilt on recovery; an index without
            // segment is an orphan.
            for path in [
                index_path(&self.dir, seg.first_chunk_id),
                segment_path(&self.dir, seg.first_chunk_id),
            ] {
                match self.storage.remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(LogError::io(&path)(e)),
                }
            }
            report.segments_deleted += 1;
            report.bytes_deleted += seg.size;
            let activity = &self.shared.activity;
            activity.segments_deleted.fetch_add(1, Ordering::Relaxed);
            activity
                .bytes_deleted
                .fetch_add(seg.size, Ordering::Relaxed);
        }
        tracing::info!(
            dir = %self.dir.display(),
            segments = report.segments_deleted,
            bytes = report.bytes_deleted,
            first_offset = self.segments[0].first_chunk_id,
            "retention deleted old segments"
        );
        Ok(report)
    }
}
