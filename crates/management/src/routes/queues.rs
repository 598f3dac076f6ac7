//! Streams, shown and declared as RabbitMQ shows stream queues (`rabbit_mgmt_wm_queue*`).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use brook_auth::Perm;
use brook_broker::{StreamInfo, StreamStatus};
use brook_log::LogStats;
use serde_json::{Map, Value, json};

use super::connections::{ConsumerRow, consumers};
use super::{Ctx, Guarded, Who, broker_error, deleted, listed_vhost, put_status};
use crate::Api;
use crate::body;
use crate::error::{ApiError, ApiResult};
use crate::format::{arguments_json, boolean, inequivalence, no_rate, stream_arguments};
use crate::list::{ListQuery, respond};

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .guarded("/api/queues", get(list))
        .guarded("/api/queues/{vhost}", get(list))
        .guarded(
            "/api/queues/{vhost}/{name}",
            get(get_queue).put(put_queue).delete(delete_queue),
        )
}

/// Log offsets held, as RabbitMQ counts a stream's `messages` (offset tracking entries
/// included, like osiris's `offset + 1 - first_offset`).
pub(crate) fn message_count(stats: &LogStats) -> u64 {
    match stats.first_chunk_id {
        Some(first) => stats.next_offset.saturating_sub(first),
        None => 0,
    }
}

/// A stream as `/api/queues` lists it: keys and types of RabbitMQ's stream queue.
fn queue_json(api: &Api, info: &StreamInfo, consumers: usize) -> Value {
    let (arguments, state, messages) = match &info.status {
        StreamStatus::Running { arguments, stats } => {
            (arguments_json(arguments), "running", message_count(stats))
        }
        StreamStatus::Creating { arguments } => (arguments_json(arguments), "running", 0),
        StreamStatus::Unavailable { .. } => (Map::new(), "down", 0),
    };
    let mut out = json!({
        "arguments": arguments,
        "auto_delete": false,
        "consumers": consumers,
        "durable": true,
        "effective_policy_definition": {},
        "exclusive": false,
        "members": [api.node],
        "messages": messages,
        "messages_details": no_rate(),
        "messages_ready": messages,
        "messages_ready_details": no_rate(),
        "messages_unacknowledged": 0,
        "messages_unacknowledged_details": no_rate(),
        "name": info.id.name,
        "node": api.node,
        "online": if state == "running" { json!([api.node]) } else { json!([]) },
        "operator_policy": null,
        "policy": null,
        "readers": { api.node.clone(): consumers },
        "state": state,
        "type": "stream",
        "vhost": info.id.vhost,
    });
    // brook's own: what the log holds (RabbitMQ shows none of this over HTTP).
    if let StreamStatus::Running { stats, .. } = &info.status {
        out["brook"] = json!({
            "bytes": stats.bytes,
            "segments": stats.segments,
            "chunks": stats.chunks,
            "first_offset": stats.first_chunk_id,
            "committed_offset": stats.next_offset.checked_sub(1),
        });
    }
    if let StreamStatus::Unavailable { reason } = &info.status {
        out["brook"] = json!({ "unavailable": reason });
    }
    clustered(api, info, &mut out);
    out
}

/// In a cluster: the stream's leader and members by node name, as RabbitMQ lists them, and
/// the leader's epoch.
fn clustered(api: &Api, info: &StreamInfo, out: &mut Value) {
    let Some(cluster) = &api.cluster else {
        return;
    };
    let metadata = cluster.metadata();
    let key = brook_cluster::StreamKey::from(&info.id);
    let Some(stream) = metadata.streams.get(&key) else {
        return;
    };
    let name = |id: &u64| {
        metadata
            .nodes
            .get(id)
            .map_or_else(|| format!("brook-{id}@unknown"), |n| n.name.clone())
    };
    let members: Vec<String> = stream.members.keys().map(name).collect();
    out["leader"] = json!(name(&stream.leader));
    out["node"] = json!(name(&stream.leader));
    out["members"] = json!(members);
    out["brook"]["epoch"] = json!(stream.epoch);
}

fn listing(api: &Api, caller: &crate::auth::Caller, vhost: Option<&str>) -> Vec<Value> {
    let all_consumers = consumers(api);
    api.broker
        .stream_infos()
        .iter()
        .filter(|s| vhost.is_none_or(|v| s.id.vhost == v))
        .filter(|s| caller.sees_objects_in(api, &s.id.vhost))
        .map(|s| {
            let n = all_consumers
                .iter()
                .filter(|c| c.consumer.stream == s.id)
                .count();
            queue_json(api, s, n)
        })
        .collect()
}

async fn list(
    api: Ctx,
    caller: Who,
    vhost: Option<Path<String>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let vhost = listed_vhost(&api.0, &caller.0, vhost)?;
    respond(
        listing(&api.0, &caller.0, vhost.as_deref()),
        &q,
        &["vhost", "name"],
    )
}

async fn get_queue(
    api: Ctx,
    caller: Who,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let api = &api.0;
    caller.0.require_vhost(api, &vhost)?;
    let info = api
        .broker
        .stream_info(&vhost, &name)
        .ok_or(ApiError::NotFound)?;
    let rows: Vec<ConsumerRow> = consumers(api)
        .into_iter()
        .filter(|c| c.consumer.stream == info.id)
        .collect();
    let mut out = json!({
        // RabbitMQ puts these two first; streams have no Erlang heap to show.
        "garbage_collection": {
            "max_heap_size": -1, "min_bin_vheap_size": -1, "min_heap_size": -1,
            "fullsweep_after": -1, "minor_gcs": -1
        },
        "consumer_details": rows.iter().map(|r| consumer_detail(api, r)).collect::<Vec<_>>(),
    });
    if let (Value::Object(out), Value::Object(rest)) =
        (&mut out, queue_json(api, &info, rows.len()))
    {
        out.extend(rest);
        out.insert("deliveries".into(), json!([]));
        out.insert("incoming".into(), json!([]));
    }
    Ok(axum::Json(out).into_response())
}

fn consumer_detail(api: &Api, row: &ConsumerRow) -> Value {
    let c = &row.consumer;
    let properties: Map<String, Value> = c
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "arguments": properties,
        "channel_details": {
            "connection_name": row.connection.name,
            "name": "",
            "node": api.node,
            "number": 0,
            "peer_host": row.connection.peer_host,
            "peer_port": row.connection.peer_port,
            "user": row.connection.user,
        },
        "ack_required": false,
        "active": c.active,
        "activity_status": if c.active { "up" } else { "waiting" },
        "consumer_tag": format!("stream.subid-{}", c.subscription_id),
        "exclusive": false,
        "prefetch_count": 0,
        "queue": { "name": c.stream.name, "vhost": c.stream.vhost },
    })
}

/// Declares a stream (`queue.declare` through the HTTP API): 201 when created, 204 when an
/// equivalent one exists, 400 with RabbitMQ's text when it differs.
async fn put_queue(
    api: Ctx,
    caller: Who,
    Path((vhost, name)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult<Response> {
    let api = &api.0;
    caller.0.require_vhost(api, &vhost)?;
    let body: Map<String, Value> = body::json(&raw)?;
    let durable = boolean(body.get("durable"), false).map_err(ApiError::BadRequestTerm)?;
    let auto_delete = boolean(body.get("auto_delete"), false).map_err(ApiError::BadRequestTerm)?;
    let exclusive = boolean(body.get("exclusive"), false).map_err(ApiError::BadRequestTerm)?;
    let arguments = match body.get("arguments") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    if api.access.vhost(&vhost).is_none() {
        return Err(ApiError::NotFoundBecause("vhost_not_found".into()));
    }
    caller
        .0
        .require_permission(api, &vhost, Perm::Configure, &name)?;
    if let Some(existing) = api.broker.stream_info(&vhost, &name) {
        let current = match &existing.status {
            StreamStatus::Running { arguments, .. } | StreamStatus::Creating { arguments } => {
                arguments.clone()
            }
            StreamStatus::Unavailable { reason } => return Err(ApiError::Internal(reason.clone())),
        };
        let not_same = |key: &str, received: bool, now: bool| {
            format!(
                "inequivalent arg '{key}' for queue '{name}' in vhost '{vhost}': received '{received}' but current is '{now}'"
            )
        };
        if !durable {
            return Err(ApiError::BadRequest(not_same("durable", durable, true)));
        }
        if auto_delete {
            return Err(ApiError::BadRequest(not_same(
                "auto_delete",
                auto_delete,
                false,
            )));
        }
        return match inequivalence(&name, &vhost, &current, &arguments) {
            Some(reason) => Err(ApiError::BadRequest(reason)),
            None => Ok(put_status(false)),
        };
    }
    for (flag, set) in [
        ("non-durable", !durable),
        ("auto-delete", auto_delete),
        ("exclusive-owner", exclusive),
    ] {
        if set {
            return Err(ApiError::BadRequest(format!(
                "invalid property '{flag}' for queue '{name}' in vhost '{vhost}'"
            )));
        }
    }
    let stream_args = stream_arguments(&name, &vhost, &arguments).map_err(ApiError::BadRequest)?;
    match api.broker.create_stream(&vhost, &name, &stream_args).await {
        Ok(()) => Ok(put_status(true)),
        // Created meanwhile by someone else, with the same arguments.
        Err(brook_broker::Error::StreamAlreadyExists(_)) => Ok(put_status(false)),
        Err(e) => Err(broker_error(e)),
    }
}

async fn delete_queue(
    api: Ctx,
    caller: Who,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let api = &api.0;
    caller.0.require_vhost(api, &vhost)?;
    if api.broker.stream_info(&vhost, &name).is_none() {
        return Err(ApiError::NotFound);
    }
    caller
        .0
        .require_permission(api, &vhost, Perm::Configure, &name)?;
    api.broker
        .delete_stream(&vhost, &name)
        .await
        .map_err(broker_error)?;
    Ok(deleted())
}
