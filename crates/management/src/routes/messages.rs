//! The message browser's API (brook's own route): stored messages from an offset or a
//! timestamp, each read as AMQP 1.0 (properties, application properties, body as text, JSON
//! and hex). `wait_ms` makes it a long poll for `brook ctl tail`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use brook_auth::Perm;
use brook_broker::StoredMessage;
use brook_protocol::OffsetSpec;
use brook_protocol::amqp::{self, Value as Amqp};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Ctx, Guarded, Who, broker_error};
use crate::Api;
use crate::error::{ApiError, ApiResult};

const MAX_LIMIT: usize = 500;
/// Body bytes shown per message (text and hex); the size says how many there are.
const SHOWN_BYTES: usize = 64 << 10;
const MAX_WAIT: Duration = Duration::from_secs(30);

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new().guarded("/api/stream/messages/{vhost}/{stream}", get(browse))
}

#[derive(Debug, Deserialize)]
struct BrowseQuery {
    /// `first`, `last`, `next` or a number.
    offset: Option<String>,
    /// Milliseconds since the epoch (instead of `offset`).
    timestamp: Option<i64>,
    limit: Option<usize>,
    /// Wait up to this long for a message when there is none yet.
    wait_ms: Option<u64>,
}

async fn browse(
    api: Ctx,
    caller: Who,
    Path((vhost, stream)): Path<(String, String)>,
    Query(q): Query<BrowseQuery>,
) -> ApiResult<Response> {
    let api = &api.0;
    caller.0.require_vhost(api, &vhost)?;
    caller
        .0
        .require_permission(api, &vhost, Perm::Read, &stream)?;
    let from =
        match (q.timestamp, q.offset.as_deref()) {
            (Some(ts), _) => OffsetSpec::Timestamp(ts),
            (None, None | Some("first")) => OffsetSpec::First,
            (None, Some("last")) => OffsetSpec::Last,
            (None, Some("next")) => OffsetSpec::Next,
            (None, Some(n)) => OffsetSpec::Offset(n.parse().map_err(|_| {
                ApiError::BadRequest("offset: first, last, next or a number".into())
            })?),
        };
    let limit = q.limit.unwrap_or(20).clamp(1, MAX_LIMIT);
    let broker = &api.broker;
    let mut page = broker
        .read_messages(&vhost, &stream, from, limit)
        .await
        .map_err(broker_error)?;
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    if page.messages.is_empty() && !wait.is_zero() {
        let at = page.next_offset;
        if broker
            .wait_for(&vhost, &stream, at, wait)
            .await
            .map_err(broker_error)?
        {
            page = broker
                .read_messages(&vhost, &stream, OffsetSpec::Offset(at), limit)
                .await
                .map_err(broker_error)?;
        }
    }
    let messages: Vec<Value> = page.messages.iter().map(message_json).collect();
    Ok(
        axum::Json(json!({ "messages": messages, "next_offset": page.next_offset }))
            .into_response(),
    )
}

fn message_json(m: &StoredMessage) -> Value {
    let mut out = json!({
        "offset": m.offset,
        "timestamp": m.timestamp,
        "size": m.data.len(),
        "compressed": m.compressed,
    });
    let sections = if m.compressed {
        Err(())
    } else {
        amqp::sections(&m.data).map_err(drop)
    };
    match sections {
        Ok(sections) => {
            out["format"] = json!("amqp-1.0");
            let mut data = Vec::new();
            for (code, value) in sections {
                match code {
                    0x70 => out["header"] = plain(&value),
                    0x71 => out["delivery_annotations"] = plain(&value),
                    0x72 => out["message_annotations"] = plain(&value),
                    0x73 => out["properties"] = properties(&value),
                    0x74 => out["application_properties"] = plain(&value),
                    0x75 => {
                        if let Amqp::Binary(b) = value {
                            data.extend(b);
                        }
                    }
                    0x76 | 0x77 => out["body"] = json!({ "value": plain(&value) }),
                    _ => out["footer"] = plain(&value),
                }
            }
            if out.get("body").is_none() {
                out["body"] = body(&data);
            }
        }
        Err(()) => {
            out["format"] = json!(if m.compressed {
                "compressed-batch"
            } else {
                "raw"
            });
            out["body"] = body(&m.data);
        }
    }
    out
}

/// Bytes as text (if UTF-8), JSON (if they parse as it) and hex, the first 64 KiB.
fn body(bytes: &[u8]) -> Value {
    let shown = &bytes[..bytes.len().min(SHOWN_BYTES)];
    let mut out = json!({ "hex": hex(shown), "truncated": shown.len() < bytes.len() });
    if let Ok(text) = std::str::from_utf8(shown) {
        out["text"] = json!(text);
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            out["json"] = v;
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The properties section's fields by name (the unset ones left out).
fn properties(value: &Amqp) -> Value {
    const NAMES: [&str; 13] = [
        "message_id",
        "user_id",
        "to",
        "subject",
        "reply_to",
        "correlation_id",
        "content_type",
        "content_encoding",
        "absolute_expiry_time",
        "creation_time",
        "group_id",
        "group_sequence",
        "reply_to_group_id",
    ];
    let Amqp::List(fields) = value else {
        return plain(value);
    };
    let mut out = Map::new();
    for (name, v) in NAMES.iter().zip(fields) {
        if *v != Amqp::Null {
            out.insert((*name).to_owned(), plain(v));
        }
    }
    Value::Object(out)
}

/// An AMQP value as JSON: binaries as text when UTF-8 (else hex), maps with text keys as
/// objects.
fn plain(value: &Amqp) -> Value {
    match value {
        Amqp::Null => Value::Null,
        Amqp::Bool(b) => json!(b),
        Amqp::Unsigned(n) => json!(n),
        Amqp::Signed(n) => json!(n),
        Amqp::Float(f) => json!(f),
        Amqp::Char(c) => json!(c.to_string()),
        Amqp::Timestamp(t) => json!(t),
        Amqp::Uuid(u) => json!(uuid(u)),
        Amqp::Binary(b) => match std::str::from_utf8(b) {
            Ok(s) => json!(s),
            Err(_) => json!(format!("0x{}", hex(b))),
        },
        Amqp::String(s) | Amqp::Symbol(s) => json!(s),
        Amqp::Decimal(d) => json!(format!("0x{}", hex(d))),
        Amqp::List(items) | Amqp::Array(items) => Value::Array(items.iter().map(plain).collect()),
        Amqp::Map(pairs) => {
            let texts = pairs
                .iter()
                .all(|(k, _)| matches!(k, Amqp::String(_) | Amqp::Symbol(_)));
            if texts {
                let map: Map<String, Value> = pairs
                    .iter()
                    .map(|(k, v)| (plain(k).as_str().unwrap_or_default().to_owned(), plain(v)))
                    .collect();
                Value::Object(map)
            } else {
                Value::Array(
                    pairs
                        .iter()
                        .map(|(k, v)| json!([plain(k), plain(v)]))
                        .collect(),
                )
            }
        }
        Amqp::Described(d, v) => json!({ "descriptor": plain(d), "value": plain(v) }),
    }
}

fn uuid(u: &[u8; 16]) -> String {
    let h = hex(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
