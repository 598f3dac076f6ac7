//! Message rates for `/api/overview`'s `message_stats`, sampled every few seconds as RabbitMQ
//! samples its statistics (`collect_statistics_interval`): the counters' change between the
//! last two samples, per second.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use brook_broker::{Broker, Totals};
use serde_json::{Value, json};

pub(crate) const INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    /// received, confirmed, delivered.
    counts: [u64; 3],
}

#[derive(Debug, Default)]
pub struct Rates {
    samples: Mutex<(Option<Sample>, Option<Sample>)>,
}

fn sample(broker: &Broker) -> Sample {
    let t = broker.totals();
    Sample {
        at: Instant::now(),
        counts: [
            Totals::get(&t.received),
            Totals::get(&t.confirmed),
            Totals::get(&t.delivered),
        ],
    }
}

impl Rates {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<Sample>, Option<Sample>)> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn tick(&self, broker: &Broker) {
        let mut s = self.lock();
        let now = sample(broker);
        *s = (s.1, Some(now));
    }

    /// RabbitMQ's `message_stats`: counts with `_details.rate`.
    pub(crate) fn message_stats(&self, broker: &Broker) -> Value {
        let now = sample(broker);
        let rates = match *self.lock() {
            (Some(a), Some(b)) if b.at > a.at => {
                let secs = (b.at - a.at).as_secs_f64();
                std::array::from_fn::<f64, 3, _>(|i| {
                    b.counts[i].saturating_sub(a.counts[i]) as f64 / secs
                })
            }
            _ => [0.0; 3],
        };
        let mut out = json!({});
        for (i, key) in ["publish", "confirm", "deliver_get"].iter().enumerate() {
            out[*key] = json!(now.counts[i]);
            out[format!("{key}_details")] = json!({ "rate": rates[i] });
        }
        out
    }
}
