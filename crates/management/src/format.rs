//! Broker state in RabbitMQ's JSON shapes, shared by the routes and definitions: stream
//! arguments as an AMQP table, and the pieces every listing repeats.

use brook_broker::StreamArgs;
use serde_json::{Map, Value, json};

/// `{"rate": 0.0}`: brook samples no rates yet (`rates_mode` is `none` in the overview), and
/// RabbitMQ's clients expect the `_details` objects to be there.
pub(crate) fn no_rate() -> Value {
    json!({ "rate": 0.0 })
}

/// A stream's arguments as RabbitMQ shows a stream queue's (`x-` keys, numbers as numbers).
pub(crate) fn arguments_json(args: &StreamArgs) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("x-queue-type".into(), json!("stream"));
    if let Some(v) = args.max_length_bytes {
        out.insert("x-max-length-bytes".into(), json!(v));
    }
    if let Some(v) = &args.max_age {
        out.insert("x-max-age".into(), json!(v.text));
    }
    if let Some(v) = args.max_segment_size_bytes {
        out.insert("x-stream-max-segment-size-bytes".into(), json!(v));
    }
    if let Some(v) = args.initial_cluster_size {
        out.insert("x-initial-cluster-size".into(), json!(v));
    }
    if let Some(v) = &args.queue_leader_locator {
        out.insert("x-queue-leader-locator".into(), json!(v));
    }
    if let Some(v) = args.filter_size_bytes {
        out.insert("x-stream-filter-size-bytes".into(), json!(v));
    }
    out
}

/// The stream arguments RabbitMQ compares on re-declaration, in its order.
const COMPARED: &[&str] = &[
    "x-max-length-bytes",
    "x-queue-type",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

/// Arguments of other queue types, refused on a stream as RabbitMQ refuses them.
const NOT_FOR_STREAMS: &[&str] = &[
    "x-max-length",
    "x-message-ttl",
    "x-expires",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-delivery-limit",
    "x-quorum-initial-group-size",
];

/// A queue declaration's arguments as stream-protocol arguments (`x-max-age` → `max-age`),
/// with RabbitMQ's error texts. Arguments other queue types use are refused; unknown ones are
/// ignored. Values are checked further by the broker.
pub(crate) fn stream_arguments(
    queue: &str,
    vhost: &str,
    arguments: &Map<String, Value>,
) -> Result<Vec<(String, String)>, String> {
    let invalid = |key: &str, why: &str| {
        format!("invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {why}")
    };
    match arguments.get("x-queue-type") {
        Some(Value::String(t)) if t == "stream" => {}
        Some(Value::String(t)) => {
            return Err(invalid(
                "x-queue-type",
                &format!("\"unsupported queue type '{t}'\""),
            ));
        }
        Some(_) => return Err(invalid("x-queue-type", "{unacceptable_type}")),
        // brook has stream queues only: a declaration without the type would be a classic
        // queue in RabbitMQ, which brook cannot be.
        None => {
            return Err(format!(
                "brook only has streams: declare queue '{queue}' with \"x-queue-type\": \"stream\""
            ));
        }
    }
    let mut out = Vec::new();
    for (key, value) in arguments {
        if NOT_FOR_STREAMS.contains(&key.as_str()) {
            return Err(format!(
                "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}' of queue type rabbit_stream_queue"
            ));
        }
        let Some(name) = key.strip_prefix("x-") else {
            continue;
        };
        let text = match (key.as_str(), value) {
            ("x-queue-type", _) => continue,
            ("x-max-age" | "x-queue-leader-locator", Value::String(s)) => s.clone(),
            ("x-max-age" | "x-queue-leader-locator", other) => {
                return Err(invalid(
                    key,
                    &format!("{{unacceptable_type,{}}}", amqp_type(other)),
                ));
            }
            (_, Value::Number(n)) => match n.as_i64() {
                Some(i) if i < 0 => return Err(invalid(key, &format!("{{value_negative,{i}}}"))),
                _ => n.to_string(),
            },
            (_, other) => {
                return Err(invalid(
                    key,
                    &format!("\"expected integer, got {}\"", amqp_type(other)),
                ));
            }
        };
        if key == "x-stream-max-segment-size-bytes"
            && value
                .as_u64()
                .is_some_and(|v| v > brook_broker::MAX_SEGMENT_SIZE_BYTES)
        {
            return Err(format!("Exceeded max value for {key}"));
        }
        out.push((name.to_owned(), text));
    }
    StreamArgs::parse(&out).map_err(|reason| {
        format!("invalid arg for queue '{queue}' in vhost '{vhost}': {reason}")
    })?;
    Ok(out)
}

/// The AMQP type RabbitMQ stores a JSON value as.
fn amqp_type(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "double",
        Value::Number(_) => "long",
        Value::String(_) => "longstr",
        Value::Object(_) => "table",
        Value::Array(_) => "array",
        Value::Null => "void",
    }
}

/// Why a re-declaration differs from the existing stream, in RabbitMQ's words (`None`: it is
/// equivalent).
pub(crate) fn inequivalence(
    queue: &str,
    vhost: &str,
    current: &StreamArgs,
    requested: &Map<String, Value>,
) -> Option<String> {
    let current = arguments_json(current);
    let what = |key: &str, received: &str, now: &str| {
        format!(
            "inequivalent arg '{key}' for queue '{queue}' in vhost '{vhost}': received {received} but current is {now}"
        )
    };
    for key in COMPARED {
        let (received, now) = (requested.get(*key), current.get(*key));
        match (received, now) {
            (None, None) => {}
            (Some(r), Some(n)) if r == n => {}
            (Some(r), Some(n)) if amqp_type(r) == amqp_type(n) => {
                return Some(what(key, &quoted(r), &quoted(n)));
            }
            (r, n) => return Some(what(key, &described(r), &described(n))),
        }
    }
    None
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn quoted(v: &Value) -> String {
    format!("'{}'", plain(v))
}

fn described(v: Option<&Value>) -> String {
    match v {
        None => "none".into(),
        Some(v) => format!("the value '{}' of type '{}'", plain(v), amqp_type(v)),
    }
}

/// A boolean as RabbitMQ reads one from JSON: a JSON bool or the strings "true"/"false".
pub(crate) fn boolean(value: Option<&Value>, default: bool) -> Result<bool, Value> {
    match value {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(other) => Err(json!(["not_boolean", plain(other)])),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn orders() -> StreamArgs {
        StreamArgs::parse(&[
            ("max-length-bytes".into(), "2000000000".into()),
            ("max-age".into(), "7D".into()),
            ("stream-max-segment-size-bytes".into(), "50000000".into()),
        ])
        .unwrap()
    }

    /// The texts of RabbitMQ 3.10.8's channel (`rabbit_misc:assert_args_equivalence`).
    #[test]
    fn inequivalence_reads_as_rabbitmq() {
        let current = orders();
        let same = arguments_json(&current);
        assert_eq!(inequivalence("orders", "/", &current, &same), None);
        let mut older = same.clone();
        older.insert("x-max-age".into(), json!("8D"));
        assert_eq!(
            inequivalence("orders", "/", &current, &older).unwrap(),
            "inequivalent arg 'x-max-age' for queue 'orders' in vhost '/': received '8D' but current is '7D'"
        );
        assert_eq!(
            inequivalence(
                "orders",
                "/",
                &current,
                &map(json!({"x-queue-type": "stream"}))
            )
            .unwrap(),
            "inequivalent arg 'x-max-length-bytes' for queue 'orders' in vhost '/': received none but current is the value '2000000000' of type 'long'"
        );
    }

    #[test]
    fn queue_arguments_become_stream_arguments() {
        let args = map(
            json!({"x-queue-type": "stream", "x-max-age": "7D", "x-max-length-bytes": 10, "x-other": 1, "plain": 2}),
        );
        let mut out = stream_arguments("q", "/", &args).unwrap();
        out.sort();
        assert_eq!(
            out,
            vec![
                ("max-age".to_string(), "7D".to_string()),
                ("max-length-bytes".into(), "10".into()),
                ("other".into(), "1".into())
            ]
        );
        let err = |v: Value| stream_arguments("q", "/", &map(v)).unwrap_err();
        assert_eq!(
            err(json!({"x-queue-type": "stream", "x-max-age": 5})),
            "invalid arg 'x-max-age' for queue 'q' in vhost '/': {unacceptable_type,long}"
        );
        assert_eq!(
            err(json!({"x-queue-type": "stream", "x-max-length-bytes": -1})),
            "invalid arg 'x-max-length-bytes' for queue 'q' in vhost '/': {value_negative,-1}"
        );
        assert_eq!(
            err(json!({"x-queue-type": "stream", "x-max-length": 1})),
            "invalid arg 'x-max-length' for queue 'q' in vhost '/' of queue type rabbit_stream_queue"
        );
        assert_eq!(
            err(json!({"x-queue-type": "foo"})),
            "invalid arg 'x-queue-type' for queue 'q' in vhost '/': \"unsupported queue type 'foo'\""
        );
    }
}
