//! Stream arguments of Create, validated and compared as RabbitMQ does.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// RabbitMQ's ceiling for `stream-max-segment-size-bytes`.
pub const MAX_SEGMENT_SIZE_BYTES: u64 = 3_000_000_000;

/// The arguments that define a stream. Two Creates are "the same" when these are equal (an
/// absent argument differs from any present value), which is when RabbitMQ answers
/// STREAM_ALREADY_EXISTS instead of PRECONDITION_FAILED.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamArgs {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_length_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_age: Option<MaxAge>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_segment_size_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub initial_cluster_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub queue_leader_locator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub filter_size_bytes: Option<u8>,
}

/// `max-age` as given (e.g. `"3600s"`, `"7D"`) plus its duration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaxAge {
    pub text: String,
    #[serde(skip)]
    pub duration: Duration,
}

impl MaxAge {
    /// `<positive integer><unit>`, unit one of `Y` (365 days), `M` (30 days), `D`, `h`, `m`, `s`,
    /// as RabbitMQ's `check_max_age`. RabbitMQ has no upper bound (Erlang integers do not
    /// overflow, and an age beyond the epoch keeps everything); brook refuses an age whose
    /// milliseconds do not fit a signed 64-bit integer (over 292,471,208 years), so that no
    /// retention arithmetic can ever wrap.
    pub fn parse(text: &str) -> Option<Self> {
        let unit = text.chars().last()?;
        let digits = text.get(..text.len() - unit.len_utf8())?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let number: u64 = digits.parse().ok()?;
        let seconds: u64 = match unit {
            'Y' => 365 * 86_400,
            'M' => 30 * 86_400,
            'D' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let millis = number.checked_mul(seconds)?.checked_mul(1000)?;
        if number == 0 || i64::try_from(millis).is_err() {
            return None;
        }
        Some(Self {
            text: text.to_owned(),
            duration: Duration::from_millis(millis),
        })
    }
}

impl StreamArgs {
    /// Parses Create arguments. Unknown keys are ignored, as RabbitMQ ignores them; invalid
    /// values are an error with a reason (→ PRECONDITION_FAILED).
    pub fn parse(arguments: &[(String, String)]) -> Result<Self, String> {
        let mut args = StreamArgs::default();
        for (key, value) in arguments {
            let int = |what: &str| -> Result<u64, String> {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("invalid {what}: {value:?}"))
            };
            match key.as_str() {
                "max-length-bytes" => args.max_length_bytes = Some(int(key)?),
                "max-age" => {
                    args.max_age = Some(
                        MaxAge::parse(value)
                            .ok_or_else(|| format!("invalid max-age: {value:?}"))?,
                    )
                }
                "stream-max-segment-size-bytes" => {
                    let v = int(key)?;
                    if v == 0 || v > MAX_SEGMENT_SIZE_BYTES {
                        return Err(format!(
                            "stream-max-segment-size-bytes must be in 1..={MAX_SEGMENT_SIZE_BYTES}"
                        ));
                    }
                    args.max_segment_size_bytes = Some(v);
                }
                "initial-cluster-size" => {
                    let v = int(key)?;
                    if v == 0 {
                        return Err("initial-cluster-size must be positive".into());
                    }
                    args.initial_cluster_size = Some(v.min(u64::from(u32::MAX)) as u32);
                }
                "queue-leader-locator" => match value.as_str() {
                    "client-local" | "balanced" | "random" | "least-leaders" | "min-masters" => {
                        args.queue_leader_locator = Some(value.clone())
                    }
                    _ => return Err(format!("invalid queue-leader-locator: {value:?}")),
                },
                "stream-filter-size-bytes" => match value.parse::<u8>() {
                    Ok(v) if v >= 16 => args.filter_size_bytes = Some(v),
                    _ => {
                        return Err(format!(
                            "stream-filter-size-bytes must be 16..=255: {value:?}"
                        ));
                    }
                },
                _ => {}
            }
        }
        Ok(args)
    }

    /// Re-derives values that are not serialized (the max-age duration) after loading.
    pub(crate) fn reparse(mut self) -> Self {
        if let Some(age) = self.max_age.take() {
            self.max_age = MaxAge::parse(&age.text);
        }
        self
    }

    pub fn retention(&self) -> brook_log::Retention {
        brook_log::Retention {
            max_bytes: self.max_length_bytes,
            max_age: self.max_age.as_ref().map(|a| a.duration),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::props;

    #[test]
    fn parses_and_validates() {
        let a = StreamArgs::parse(&props(&[
            ("max-length-bytes", "2000000000"),
            ("max-age", "3600s"),
            ("queue-leader-locator", "least-leaders"),
            ("x-unknown", "whatever"),
        ]))
        .unwrap();
        assert_eq!(a.max_length_bytes, Some(2_000_000_000));
        assert_eq!(
            a.max_age.as_ref().unwrap().duration,
            Duration::from_secs(3600)
        );
        assert_eq!(
            MaxAge::parse("7D").unwrap().duration,
            Duration::from_secs(7 * 86_400)
        );
        // The largest age brook takes: its milliseconds just fit an i64.
        let most = MaxAge::parse("292471208Y").unwrap().duration;
        assert!(i64::try_from(most.as_millis()).is_ok());
        for bad in [
            ("max-length-bytes", "-1"),
            ("max-age", "10x"),
            ("max-age", "0s"),
            ("max-age", "s"),
            ("max-age", "+5s"),
            ("max-age", "317097920Y"),
            ("max-age", "292471209Y"),
            ("max-age", "99999999999999999999s"),
            ("queue-leader-locator", "nearest"),
            ("stream-max-segment-size-bytes", "3000000001"),
            ("stream-filter-size-bytes", "8"),
            ("initial-cluster-size", "0"),
        ] {
            assert!(StreamArgs::parse(&props(&[bad])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn equivalence_distinguishes_absent_from_present() {
        let a = StreamArgs::parse(&props(&[("max-length-bytes", "10")])).unwrap();
        let b = StreamArgs::parse(&props(&[
            ("max-length-bytes", "10"),
            ("queue-leader-locator", "least-leaders"),
        ]))
        .unwrap();
        assert_ne!(a, b);
        assert_eq!(
            a,
            StreamArgs::parse(&props(&[("max-length-bytes", "10"), ("x", "y")])).unwrap()
        );
    }

    #[test]
    fn serde_round_trip_keeps_max_age() {
        let a = StreamArgs::parse(&props(&[("max-age", "2h")])).unwrap();
        let json = serde_json::to_string(&a).unwrap();
        let back: StreamArgs = serde_json::from_str::<StreamArgs>(&json).unwrap().reparse();
        assert_eq!(back, a);
        assert_eq!(back.max_age.unwrap().duration, Duration::from_secs(7200));
    }
}
