//! Stored offsets and publisher sequences over HTTP. RabbitMQ's CLI reads and resets them
//! through Erlang RPC (`list_stream_tracking`, `reset_offset`); brook's CLI speaks HTTP, so
//! these two routes are brook's own, in the stream plugin's path space.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use brook_auth::Perm;
use brook_broker::StreamStatus;
use brook_protocol::OffsetSpec;
use serde_json::{Map, Value, json};

use super::{Ctx, Guarded, Who, broker_error};
use crate::Api;
use crate::body;
use crate::error::{ApiError, ApiResult};

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .guarded("/api/stream/tracking/{vhost}/{stream}", get(list))
        .guarded(
            "/api/stream/tracking/{vhost}/{stream}/{reference}",
            get(list).put(reset),
        )
}

/// `[{"type": "offset"|"writer", "name", "tracking_value"}]`, the CLI's columns.
async fn list(
    api: Ctx,
    caller: Who,
    Path(path): Path<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let value = |key: &str| path.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let (vhost, stream) = (
        value("vhost").unwrap_or_default(),
        value("stream").unwrap_or_default(),
    );
    let reference = value("reference");
    caller.0.require_vhost(&api.0, &vhost)?;
    caller
        .0
        .require_permission(&api.0, &vhost, Perm::Read, &stream)?;
    let tracked = api
        .0
        .broker
        .tracking(&vhost, &stream)
        .await
        .map_err(broker_error)?;
    // Read after the tracking data, so a stored offset is never ahead of it.
    let last = match api.0.broker.stream_info(&vhost, &stream).map(|i| i.status) {
        Some(StreamStatus::Running { stats, .. }) => stats.next_offset.checked_sub(1),
        _ => None,
    };
    let rows = |kind: &str, items: Vec<(String, u64)>| -> Vec<Value> {
        items
            .into_iter()
            .filter(|(name, _)| reference.as_ref().is_none_or(|r| r == name))
            .map(|(name, v)| {
                let mut row = json!({ "type": kind, "name": name, "tracking_value": v });
                if kind == "offset" {
                    // How far the named consumer is behind the end of the stream.
                    row["lag"] = json!(last.map_or(0, |l| l.saturating_sub(v)));
                }
                row
            })
            .collect()
    };
    let mut out = rows("offset", tracked.offsets);
    out.extend(rows("writer", tracked.writers));
    Ok(axum::Json(out).into_response())
}

/// Moves a stored offset: body `{"offset": "first" | "last" | "next" | N}` or
/// `{"timestamp": ms}`. Needs read permission, as StoreOffset does.
async fn reset(
    api: Ctx,
    caller: Who,
    Path((vhost, stream, reference)): Path<(String, String, String)>,
    raw: Bytes,
) -> ApiResult<Response> {
    caller.0.require_vhost(&api.0, &vhost)?;
    caller
        .0
        .require_permission(&api.0, &vhost, Perm::Read, &stream)?;
    let body: Map<String, Value> = body::json(&raw)?;
    let to = target(&body)?;
    match api
        .0
        .broker
        .reset_offset(&vhost, &stream, &reference, to)
        .await
    {
        Ok(Some(offset)) => Ok(axum::Json(json!({ "offset": offset })).into_response()),
        Ok(None) => Err(ApiError::NotFoundBecause(
            "There is no stored offset for this reference, no need to reset".into(),
        )),
        Err(e) => Err(broker_error(e)),
    }
}

fn target(body: &Map<String, Value>) -> ApiResult<OffsetSpec> {
    if let Some(ts) = body.get("timestamp") {
        return ts.as_i64().map(OffsetSpec::Timestamp).ok_or_else(|| {
            ApiError::BadRequest("timestamp must be milliseconds since the epoch".into())
        });
    }
    match body.get("offset") {
        None => Ok(OffsetSpec::First),
        Some(Value::String(s)) if s == "first" => Ok(OffsetSpec::First),
        Some(Value::String(s)) if s == "last" => Ok(OffsetSpec::Last),
        Some(Value::String(s)) if s == "next" => Ok(OffsetSpec::Next),
        Some(v) => v.as_u64().map(OffsetSpec::Offset).ok_or_else(|| {
            ApiError::BadRequest("offset must be first, last, next or a number".into())
        }),
    }
}
