//! The `rabbitmq-streams` commands.

use std::io::Write;

use clap::Args;
use serde_json::{Value, json};

use crate::client::seg;
use crate::table::{lookup, print};
use crate::{CtlError, Ctx, banner};

/// Columns when none are named, as `rabbitmq-streams` has them.
const CONNECTION_COLUMNS: &[&str] = &["node", "conn_name"];
const CONSUMER_COLUMNS: &[&str] = &[
    "subscription_id",
    "stream",
    "messages_consumed",
    "offset",
    "offset_lag",
    "credits",
    "active",
    "activity_status",
    "properties",
];
const PUBLISHER_COLUMNS: &[&str] = &[
    "publisher_id",
    "stream",
    "reference",
    "messages_published",
    "messages_confirmed",
    "messages_errored",
];

fn columns(given: Vec<String>, default: &[&str]) -> Vec<String> {
    if given.is_empty() {
        default.iter().map(|c| c.to_string()).collect()
    } else {
        given
    }
}

/// RabbitMQ's CLI column names, read from the management API's JSON.
fn field(item: &Value, column: &str) -> Value {
    let path = match column {
        "conn_name" => "name",
        "heartbeat" => "timeout",
        "stream" => "queue.name",
        "messages_consumed" => "consumed",
        "messages_published" => "published",
        "messages_confirmed" => "confirmed",
        "messages_errored" => "errored",
        "connection_pid" | "connection_name" => "connection_details.name",
        other => other,
    };
    lookup(item, path)
}

pub(crate) fn connections(
    ctx: &Ctx,
    given: Vec<String>,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    banner("Listing stream connections ...");
    let items = list(ctx.client.get("/api/stream/connections")?);
    print(
        out,
        ctx.format,
        &columns(given, CONNECTION_COLUMNS),
        &items,
        field,
    )
}

pub(crate) fn consumers(
    ctx: &Ctx,
    given: Vec<String>,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    banner("Listing stream consumers ...");
    let items = list(
        ctx.client
            .get(&format!("/api/stream/consumers/{}", seg(ctx.vhost)))?,
    );
    print(
        out,
        ctx.format,
        &columns(given, CONSUMER_COLUMNS),
        &items,
        field,
    )
}

pub(crate) fn publishers(
    ctx: &Ctx,
    given: Vec<String>,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    banner("Listing stream publishers ...");
    let items = list(
        ctx.client
            .get(&format!("/api/stream/publishers/{}", seg(ctx.vhost)))?,
    );
    print(
        out,
        ctx.format,
        &columns(given, PUBLISHER_COLUMNS),
        &items,
        field,
    )
}

fn list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

/// The members of a single-active-consumer group: subscriptions on `stream` with
/// `single-active-consumer` and the group's name.
pub(crate) fn group_consumers(
    ctx: &Ctx,
    stream: &str,
    reference: &str,
    given: Vec<String>,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    banner(&format!(
        "Listing group consumers of stream {stream} and reference {reference} ..."
    ));
    let path = format!("/api/stream/consumers/{}/{}", seg(ctx.vhost), seg(stream));
    let members: Vec<Value> = list(ctx.client.get(&path)?)
        .into_iter()
        .filter(|c| {
            c["properties"]["single-active-consumer"] == "true"
                && c["properties"]["name"] == reference
        })
        .map(|mut c| {
            let state = if c["active"] == true {
                "active"
            } else {
                "waiting"
            };
            c["state"] = json!(format!("{state} (connected)"));
            c
        })
        .collect();
    if members.is_empty() {
        return Err(CtlError::Refused {
            message: "The group does not exist".into(),
            exit_code: 70,
        });
    }
    let default = ["subscription_id", "connection_name", "state"];
    print(out, ctx.format, &columns(given, &default), &members, field)
}

pub(crate) fn tracking(
    ctx: &Ctx,
    stream: &str,
    only_offsets: bool,
    only_writers: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    banner(&format!(
        "Listing tracking information for stream {stream} ..."
    ));
    let path = format!("/api/stream/tracking/{}/{}", seg(ctx.vhost), seg(stream));
    let items: Vec<Value> = list(ctx.client.get(&path)?)
        .into_iter()
        .filter(|t| match t["type"].as_str() {
            Some("offset") => !only_writers,
            Some("writer") => !only_offsets,
            _ => false,
        })
        .collect();
    let cols = columns(Vec::new(), &["type", "name", "tracking_value"]);
    print(out, ctx.format, &cols, &items, field)
}

pub(crate) fn reset_offset(
    ctx: &Ctx,
    stream: &str,
    reference: &str,
    to: &str,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    banner(&format!(
        "Resetting stored offset for reference {reference} on stream {stream} ..."
    ));
    let body = match to.split_once(':') {
        None if ["first", "last", "next"].contains(&to) => json!({ "offset": to }),
        Some(("offset", n)) => json!({ "offset": parse_number(n)? }),
        Some(("timestamp", ms)) => json!({ "timestamp": parse_number(ms)? }),
        _ => {
            return Err(CtlError::Usage(format!(
                "--to must be first, last, next, offset:<n> or timestamp:<ms>, not {to:?}"
            )));
        }
    };
    let path = format!(
        "/api/stream/tracking/{}/{}/{}",
        seg(ctx.vhost),
        seg(stream),
        seg(reference)
    );
    let done = ctx.client.put(&path, &body)?;
    writeln!(out, "Done: offset {}", done["offset"])?;
    Ok(())
}

/// Long-polls the message browser's route and prints what arrives.
pub(crate) fn tail(
    ctx: &Ctx,
    stream: &str,
    from: &str,
    count: Option<u64>,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let mut position = match from.strip_prefix("timestamp:") {
        Some(ms) => format!("timestamp={}", parse_number(ms)?),
        None if ["first", "last", "next"].contains(&from) => format!("offset={from}"),
        None => format!("offset={}", parse_number(from)?),
    };
    let base = format!("/api/stream/messages/{}/{}", seg(ctx.vhost), seg(stream));
    let mut printed = 0u64;
    loop {
        let page = ctx
            .client
            .get(&format!("{base}?{position}&limit=100&wait_ms=10000"))?;
        for m in page["messages"].as_array().into_iter().flatten() {
            if count.is_some_and(|c| printed >= c) {
                return Ok(());
            }
            match ctx.format {
                crate::Format::Json => writeln!(out, "{m}")?,
                crate::Format::Table => writeln!(out, "{}", one_line(m))?,
            }
            printed += 1;
        }
        out.flush()?;
        if count.is_some_and(|c| printed >= c) {
            return Ok(());
        }
        position = format!("offset={}", page["next_offset"]);
    }
}

/// `offset  time  [content-type]  body`: the body as JSON or text if it is, else hex.
fn one_line(m: &Value) -> String {
    let body = &m["body"];
    let shown = if let Some(v) = body.get("value") {
        v.to_string()
    } else if let Some(v) = body.get("json") {
        v.to_string()
    } else if let Some(t) = body["text"].as_str() {
        t.replace('\n', "\\n")
    } else {
        format!("0x{}", body["hex"].as_str().unwrap_or(""))
    };
    let content_type = m["properties"]["content_type"]
        .as_str()
        .map(|t| format!("  [{t}]"))
        .unwrap_or_default();
    format!("{}  {}{content_type}  {shown}", m["offset"], m["timestamp"])
}

fn parse_number(s: &str) -> Result<u64, CtlError> {
    s.parse()
        .map_err(|_| CtlError::Usage(format!("not a number: {s:?}")))
}

#[derive(Debug, Args)]
pub struct SuperStreamArgs {
    name: String,
    /// Number of partitions, named `<name>-<i>` with binding keys `0`..`n-1`.
    #[arg(long, conflicts_with = "binding_keys")]
    partitions: Option<u32>,
    /// Binding keys, comma-separated: partitions are named `<name>-<key>`.
    #[arg(long, alias = "routing-keys", value_delimiter = ',')]
    binding_keys: Vec<String>,
    #[arg(long)]
    max_length_bytes: Option<u64>,
    /// `7D`, `12h`, ... as RabbitMQ's max-age, or ISO 8601 (`PT10M`) as its CLI takes.
    #[arg(long)]
    max_age: Option<String>,
    #[arg(long)]
    stream_max_segment_size_bytes: Option<u64>,
    #[arg(long)]
    leader_locator: Option<String>,
    #[arg(long)]
    initial_cluster_size: Option<u32>,
}

/// What `rabbitmq-streams add_super_stream` does, over HTTP: the exchange, the partition
/// streams, one binding each, in partition order.
pub(crate) fn add_super_stream(
    ctx: &Ctx,
    a: &SuperStreamArgs,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let keys: Vec<String> = if a.binding_keys.is_empty() {
        let n = a.partitions.unwrap_or(3);
        if n == 0 {
            return Err(CtlError::Usage("--partitions must be at least 1".into()));
        }
        (0..n).map(|i| i.to_string()).collect()
    } else {
        a.binding_keys.clone()
    };
    let partitions: Vec<String> = keys.iter().map(|k| format!("{}-{k}", a.name)).collect();
    let mut arguments = json!({ "x-queue-type": "stream" });
    if let Some(v) = a.max_length_bytes {
        arguments["x-max-length-bytes"] = json!(v);
    }
    if let Some(v) = &a.max_age {
        arguments["x-max-age"] = json!(max_age(v)?);
    }
    if let Some(v) = a.stream_max_segment_size_bytes {
        arguments["x-stream-max-segment-size-bytes"] = json!(v);
    }
    if let Some(v) = &a.leader_locator {
        arguments["x-queue-leader-locator"] = json!(v);
    }
    if let Some(v) = a.initial_cluster_size {
        arguments["x-initial-cluster-size"] = json!(v);
    }
    let vhost = seg(ctx.vhost);
    let exchange = format!("/api/exchanges/{vhost}/{}", seg(&a.name));
    if ctx.client.get(&exchange).is_ok() {
        return Err(CtlError::Refused {
            message: format!("The super stream {} already exists", a.name),
            exit_code: 70,
        });
    }
    let declaration = json!({"type": "direct", "durable": true, "auto_delete": false,
        "internal": false, "arguments": {"x-super-stream": true}});
    ctx.client.put(&exchange, &declaration)?;
    for (i, (p, key)) in partitions.iter().zip(&keys).enumerate() {
        let queue = json!({ "durable": true, "arguments": arguments });
        ctx.client
            .put(&format!("/api/queues/{vhost}/{}", seg(p)), &queue)?;
        let binding = json!({ "routing_key": key, "arguments": {"x-stream-partition-order": i} });
        let path = format!("/api/bindings/{vhost}/e/{}/q/{}", seg(&a.name), seg(p));
        ctx.client.post(&path, &binding)?;
    }
    writeln!(out, "Super stream {} has been created", a.name)?;
    Ok(())
}

/// A max-age in RabbitMQ's own form, or converted from ISO 8601 (`P1DT2H`, `PT10M`).
fn max_age(text: &str) -> Result<String, CtlError> {
    let Some(rest) = text.strip_prefix('P') else {
        return Ok(text.to_owned());
    };
    let invalid = || CtlError::Usage(format!("invalid max-age {text:?}"));
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut seconds: u64 = 0;
    for (part, units) in [
        (
            date,
            &[
                ('Y', 31_536_000),
                ('M', 2_592_000),
                ('W', 604_800),
                ('D', 86_400),
            ][..],
        ),
        (time, &[('H', 3_600), ('M', 60), ('S', 1)][..]),
    ] {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let unit = units.iter().find(|(u, _)| *u == c).ok_or_else(invalid)?.1;
            let n: u64 = number.parse().map_err(|_| invalid())?;
            seconds = n
                .checked_mul(unit)
                .and_then(|s| s.checked_add(seconds))
                .ok_or_else(invalid)?;
            number.clear();
        }
        if !number.is_empty() {
            return Err(invalid());
        }
    }
    if seconds == 0 {
        return Err(invalid());
    }
    Ok(format!("{seconds}s"))
}

/// Deletes the exchange's partition streams, then the exchange, as `delete_super_stream`.
pub(crate) fn delete_super_stream(
    ctx: &Ctx,
    name: &str,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let vhost = seg(ctx.vhost);
    let bindings = list(ctx.client.get(&format!(
        "/api/exchanges/{vhost}/{}/bindings/source",
        seg(name)
    ))?);
    ctx.client
        .get(&format!("/api/exchanges/{vhost}/{}", seg(name)))?;
    for b in &bindings {
        if let Some(p) = b["destination"].as_str() {
            ctx.client
                .delete(&format!("/api/queues/{vhost}/{}", seg(p)), None)?;
        }
    }
    ctx.client
        .delete(&format!("/api/exchanges/{vhost}/{}", seg(name)), None)?;
    writeln!(out, "Super stream {name} has been deleted")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn iso_8601_max_age_becomes_seconds() {
        assert_eq!(super::max_age("PT10M").unwrap(), "600s");
        assert_eq!(super::max_age("P1DT1H").unwrap(), "90000s");
        assert_eq!(super::max_age("7D").unwrap(), "7D");
        assert!(super::max_age("PT").is_err());
        assert!(super::max_age("P1X").is_err());
    }
}
