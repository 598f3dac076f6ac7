//! When a hot stream's writer waits a little before writing, so that its chunks grow.
//!
//! Consumers pay per chunk. The official clients grant one credit per chunk, so every chunk
//! costs a round trip, a wake-up on each side and a task or callback in the client; with
//! 100-message chunks a consumer of the official Rust client reads at about half RabbitMQ's
//! rate, and even a broker that does nothing (`brook null-broker`) spends 0.15 s of CPU per
//! million messages at that chunk size, against 0.02 s at 1,000 (docs/BENCHMARKS.md).
//! RabbitMQ's chunks hold ~1,500 messages under load because its writer is slower than its
//! producers: osiris batches whatever queued meanwhile. brook's writer keeps up, so without
//! this a producer sending 100-message frames got ~100-message chunks.
//!
//! The rule: a write waits, until `linger` after the previous write, only when
//! * the stream is hot: at least [`HOT_ENTRIES`] entries (messages, or sub-entry batches)
//!   were written in the last [`RATE_WINDOW`] (200,000 a second), so a stream below that rate
//!   never waits and its latency is unchanged;
//! * the write is small: under [`BIG_WRITE`] entries and [`BIG_WRITE_BYTES`] (a bigger one
//!   already makes big chunks; chunks are cut at 256 KiB of data anyway);
//! * waiting pays: it makes big writes. A producer with a small window of unconfirmed
//!   messages cannot send more until confirmed, so waits never give a write of [`BIG_WRITE`]
//!   entries; after [`UNPAID_WAITS`] such waits in a row the stream writes at once for
//!   [`QUIET`], so that producer loses 8 ms in 108. (Whether producers kept sending until the
//!   end of a wait tells nothing: the official Rust client pauses for a millisecond now and
//!   then, and then sends thousands of messages at once.)
//!
//! A wait therefore costs at most `linger` (plus the timer's millisecond granularity) of
//! confirm latency, only at rates where RabbitMQ's confirms take tens of milliseconds.

use std::time::{Duration, Instant};

/// Entries written within [`RATE_WINDOW`] that make a stream hot.
pub(crate) const HOT_ENTRIES: usize = 2_000;
pub(crate) const RATE_WINDOW: Duration = Duration::from_millis(10);
/// A write of this many entries or more never waits.
pub(crate) const BIG_WRITE: usize = 1_024;
/// Nor one of this many bytes: the writer's default chunk size.
pub(crate) const BIG_WRITE_BYTES: usize = 256 << 10;
/// Longer waits are taken as this: a wait is meant to be about a millisecond.
const MAX_LINGER: Duration = Duration::from_secs(1);
/// What a write holds: entries (messages or sub-entry batches) and their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriteSize {
    pub entries: usize,
    pub bytes: usize,
}

impl WriteSize {
    fn big(self) -> bool {
        self.entries >= BIG_WRITE || self.bytes >= BIG_WRITE_BYTES
    }
}

/// Waits in a row that made no big write before the stream stops waiting for a while.
pub(crate) const UNPAID_WAITS: u32 = 8;
/// How long a stream whose waits did not pay writes at once.
pub(crate) const QUIET: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(crate) struct Pacer {
    linger: Duration,
    window_start: Instant,
    /// Entries written since `window_start`.
    window_entries: usize,
    /// Whether the last complete window was hot.
    was_hot: bool,
    last_write: Option<Instant>,
    quiet_until: Option<Instant>,
    /// Waits in a row that made no big write.
    unpaid: u32,
}

impl Pacer {
    /// `linger` zero: never wait.
    pub(crate) fn new(linger: Duration, now: Instant) -> Self {
        Self {
            linger: linger.min(MAX_LINGER),
            window_start: now,
            window_entries: 0,
            was_hot: false,
            last_write: None,
            quiet_until: None,
            unpaid: 0,
        }
    }

    fn hot(&self, now: Instant) -> bool {
        let age = now.saturating_duration_since(self.window_start);
        self.window_entries >= HOT_ENTRIES || (self.was_hot && age < RATE_WINDOW * 2)
    }

    /// Until when a write, ready at `now`, should wait for more; `None`: write now.
    pub(crate) fn hold(&self, size: WriteSize, now: Instant) -> Option<Instant> {
        if self.quiet_until.is_some_and(|q| now < q)
            || self.linger.is_zero()
            || size.entries == 0
            || size.big()
            || !self.hot(now)
        {
            return None;
        }
        let until = self.last_write?.checked_add(self.linger)?;
        (now < until).then_some(until)
    }

    /// After a wait: what the write now holds.
    pub(crate) fn held(&mut self, size: WriteSize, now: Instant) {
        if size.big() {
            self.unpaid = 0;
            return;
        }
        self.unpaid += 1;
        if self.unpaid >= UNPAID_WAITS {
            self.unpaid = 0;
            self.quiet_until = now.checked_add(QUIET);
        }
    }

    /// A write of `entries` was made at `now` (writes without publishes do not count).
    pub(crate) fn wrote(&mut self, entries: usize, now: Instant) {
        if entries == 0 {
            return;
        }
        if now.saturating_duration_since(self.window_start) >= RATE_WINDOW {
            // A window with no write at all in between counts as cold.
            let gap = now.saturating_duration_since(self.window_start) >= RATE_WINDOW * 2;
            self.was_hot = !gap && self.window_entries >= HOT_ENTRIES;
            self.window_start = now;
            self.window_entries = 0;
        }
        self.window_entries = self.window_entries.saturating_add(entries);
        self.last_write = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_millis(1);
    const US: Duration = Duration::from_micros(1);

    /// A write of `entries` 12-byte messages.
    fn sz(entries: usize) -> WriteSize {
        WriteSize {
            entries,
            bytes: entries * 16,
        }
    }

    /// A pacer that has just written `HOT_ENTRIES` in 100-entry writes, 50 µs apart.
    fn hot(t0: Instant) -> (Pacer, Instant) {
        let mut p = Pacer::new(LINGER, t0);
        let mut now = t0;
        for _ in 0..HOT_ENTRIES / 100 {
            now += 50 * US;
            p.wrote(100, now);
        }
        (p, now)
    }

    #[test]
    fn a_stream_below_the_rate_writes_at_once() {
        let t0 = Instant::now();
        let mut p = Pacer::new(LINGER, t0);
        let mut now = t0;
        // 50,000 msg/s in 50-message writes: 1,000 per 20 ms, never hot.
        for _ in 0..1_000 {
            assert_eq!(p.hold(sz(50), now), None);
            p.wrote(50, now);
            now += 1000 * US;
        }
    }

    #[test]
    fn a_hot_stream_waits_until_linger_after_its_last_write() {
        let t0 = Instant::now();
        let (p, last) = hot(t0);
        assert_eq!(p.hold(sz(100), last + 50 * US), Some(last + LINGER));
        // Not past the deadline, never before `now`.
        assert_eq!(p.hold(sz(100), last + LINGER), None);
        assert_eq!(p.hold(sz(100), last + 2 * LINGER), None);
    }

    #[test]
    fn big_writes_and_a_zero_linger_never_wait() {
        let t0 = Instant::now();
        let (p, last) = hot(t0);
        assert_eq!(p.hold(sz(BIG_WRITE), last + US), None);
        let big_messages = WriteSize {
            entries: 100,
            bytes: BIG_WRITE_BYTES,
        };
        assert_eq!(p.hold(big_messages, last + US), None);
        assert_eq!(p.hold(sz(0), last + US), None);
        let mut off = Pacer::new(Duration::ZERO, t0);
        let mut now = t0;
        for _ in 0..100 {
            now += US;
            off.wrote(100, now);
        }
        assert_eq!(off.hold(sz(100), now + US), None);
    }

    #[test]
    fn when_waits_make_no_big_writes_the_stream_stops_waiting_for_a_while() {
        let t0 = Instant::now();
        let (mut p, mut now) = hot(t0);
        // A producer with a window of 500: every wait gives a write of 500.
        for _ in 0..UNPAID_WAITS {
            let until = p.hold(sz(100), now + 50 * US).expect("a hot stream waits");
            p.held(sz(500), until);
            p.wrote(500, until);
            now = until;
        }
        // Even right after a write, the stream stays quiet.
        p.wrote(100, now + US);
        assert_eq!(p.hold(sz(100), now + 2 * US), None);
        assert_eq!(p.hold(sz(100), now + QUIET - US), None);
        // After QUIET, a hot stream waits again.
        let mut now = now + QUIET;
        for _ in 0..HOT_ENTRIES / 100 {
            now += 50 * US;
            p.wrote(100, now);
        }
        assert!(p.hold(sz(100), now + US).is_some());
    }

    #[test]
    fn a_stream_that_went_quiet_is_cold_again() {
        let t0 = Instant::now();
        let (mut p, last) = hot(t0);
        // One write long after: the hot window is history.
        let now = last + RATE_WINDOW * 3;
        p.wrote(100, now);
        assert_eq!(p.hold(sz(100), now + US), None);
    }

    #[test]
    fn a_wait_that_pays_keeps_the_stream_waiting() {
        let t0 = Instant::now();
        let (mut p, last) = hot(t0);
        let now = last + 50 * US;
        // Waits that give a big write now and then go on.
        let mut until = p.hold(sz(100), now).expect("a hot stream waits");
        for i in 0..UNPAID_WAITS * 4 {
            let entries = if i % (UNPAID_WAITS - 1) == 0 {
                BIG_WRITE
            } else {
                400
            };
            p.held(sz(entries), until);
            p.wrote(entries, until);
            until = p.hold(sz(100), until + 50 * US).expect("still waiting");
        }
    }
}
