//! Latency histograms, percentiles, and the report every scenario produces.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Microsecond latencies from 1 µs to 1 hour, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        // Bounds are constants known to be valid for this constructor.
        #[allow(clippy::expect_used)]
        let h = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        Self(h)
    }

    pub fn record_nanos(&mut self, nanos: u64) {
        self.0.saturating_record((nanos / 1_000).max(1));
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.0.is_empty() {
            return None;
        }
        Some(Percentiles {
            p50: self.0.value_at_quantile(0.50),
            p99: self.0.value_at_quantile(0.99),
            p999: self.0.value_at_quantile(0.999),
            max: self.0.max(),
        })
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// One run of one scenario. Fields that do not apply are left out of the JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub broker: String,
    pub messages: u64,
    pub message_size: usize,
    pub seconds: f64,
    pub msg_per_sec: f64,
    pub mb_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<Percentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_first_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exactly_once: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_cpu_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_peak_rss_bytes: Option<u64>,
    /// What a scenario measures beyond messages (connections, streams, ...), by name; printed
    /// one per line and flattened into the JSON.
    #[serde(flatten)]
    pub extra: BTreeMap<&'static str, f64>,
}

impl Report {
    pub fn with_rate(mut self, messages: u64, size: usize, seconds: f64) -> Self {
        self.messages = messages;
        self.message_size = size;
        self.seconds = seconds;
        if seconds > 0.0 {
            self.msg_per_sec = messages as f64 / seconds;
            self.mb_per_sec = (messages as f64 * size as f64) / seconds / 1e6;
        }
        self
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let mut s = if self.messages > 0 {
            format!(
                "{}: {} messages of {} bytes in {:.2} s: {:.0} msg/s, {:.1} MB/s",
                self.scenario,
                self.messages,
                self.message_size,
                self.seconds,
                self.msg_per_sec,
                self.mb_per_sec
            )
        } else {
            format!("{}:", self.scenario)
        };
        if let Some(l) = self.latency_us {
            s += &format!(
                "\n  latency µs: p50 {} p99 {} p99.9 {} max {}",
                l.p50, l.p99, l.p999, l.max
            );
        }
        if let Some(t) = self.time_to_first_ms {
            s += &format!("\n  time to first message: {t:.1} ms");
        }
        if let Some(ok) = self.exactly_once {
            s += &format!(
                "\n  every message exactly once: {}",
                if ok { "yes" } else { "NO" }
            );
        }
        if let Some(e) = self.errors.filter(|&e| e > 0) {
            s += &format!("\n  errors: {e}");
        }
        match self.broker_cpu_seconds {
            Some(cpu) if self.messages > 0 => {
                s += &format!(
                    "\n  broker CPU: {cpu:.2} s ({:.3} s per million messages)",
                    cpu / (self.messages as f64 / 1e6)
                );
            }
            Some(cpu) => s += &format!("\n  broker CPU: {cpu:.2} s"),
            None => {}
        }
        if let Some(rss) = self.broker_peak_rss_bytes {
            s += &format!(
                "\n  broker peak RSS: {:.1} MiB",
                rss as f64 / (1 << 20) as f64
            );
        }
        for (name, value) in &self.extra {
            s += &format!("\n  {name}: {value:.3}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let mut l = Latency::new();
        for us in 1..=1000u64 {
            l.record_nanos(us * 1_000);
        }
        let p = l.percentiles().unwrap();
        // 3 significant digits: values are exact to within 0.1 %.
        assert!((499..=501).contains(&p.p50), "{p:?}");
        assert!((989..=991).contains(&p.p99), "{p:?}");
        assert!((998..=1000).contains(&p.p999), "{p:?}");
        assert!((1000..=1001).contains(&p.max), "{p:?}");
        assert_eq!(Latency::new().percentiles(), None);
        let mut merged = Latency::new();
        merged.merge(&l);
        merged.merge(&l);
        assert_eq!(merged.count(), 2000);
        // Sub-microsecond samples count as 1 µs rather than vanishing.
        let mut tiny = Latency::new();
        tiny.record_nanos(10);
        assert_eq!(tiny.percentiles().unwrap().max, 1);
    }

    #[test]
    fn json_shape() {
        let mut l = Latency::new();
        l.record_nanos(2_000_000);
        let r = Report {
            scenario: "publish",
            broker: "127.0.0.1:5552".into(),
            latency_us: l.percentiles(),
            broker_cpu_seconds: Some(1.5),
            ..Report::default()
        }
        .with_rate(1_000_000, 12, 2.0);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["scenario"], "publish");
        assert_eq!(v["messages"], 1_000_000);
        assert_eq!(v["msg_per_sec"], 500_000.0);
        assert_eq!(v["mb_per_sec"], 6.0);
        assert_eq!(v["latency_us"]["p50"], 2000);
        assert!(v["latency_us"]["p999"].is_u64() && v["latency_us"]["max"].is_u64());
        assert_eq!(v["broker_cpu_seconds"], 1.5);
        // Fields that do not apply are absent, not null.
        assert!(v.get("time_to_first_ms").is_none());
        assert!(v.get("exactly_once").is_none());
        assert!(r.summary().contains("500000 msg/s"));
    }
}
