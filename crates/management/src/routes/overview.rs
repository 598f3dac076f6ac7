//! The node as a whole: `/api/overview`, `/api/whoami`, `/api/nodes`, health checks.

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use brook_broker::StreamStatus;
use serde_json::{Value, json};
use std::sync::Arc;

use super::{Ctx, Guarded, Who};
use crate::Api;
use crate::error::{ApiError, ApiResult};
use crate::format::no_rate;

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .guarded("/api/overview", get(overview))
        .guarded("/api/whoami", get(whoami))
        .guarded("/api/cluster-name", get(cluster_name))
        .guarded("/api/extensions", get(extensions))
        .guarded("/api/nodes", get(nodes))
        .guarded("/api/nodes/{node}", get(node).delete(forget_node))
        .guarded("/api/health/checks/alarms", get(alarms))
        .guarded("/api/health/checks/local-alarms", get(alarms))
        .guarded("/api/health/checks/virtual-hosts", get(virtual_hosts))
        .guarded(
            "/api/health/checks/port-listener/{port}",
            get(port_listener),
        )
        .guarded(
            "/api/health/checks/protocol-listener/{protocol}",
            get(protocol_listener),
        )
}

/// The one exchange type brook has: super streams route by exact binding key.
fn exchange_types() -> Value {
    json!([{
        "name": "direct",
        "description": "AMQP direct exchange, as per the AMQP specification",
        "enabled": true,
    }])
}

async fn overview(api: Ctx, caller: Who) -> ApiResult<Response> {
    let (api, caller) = (&api.0, &caller.0);
    let streams: Vec<_> = api
        .broker
        .stream_infos()
        .into_iter()
        .filter(|s| caller.sees_objects_in(api, &s.id.vhost))
        .collect();
    let messages: u64 = streams
        .iter()
        .map(|s| match &s.status {
            StreamStatus::Running { stats, .. } => crate::routes::queues::message_count(stats),
            _ => 0,
        })
        .sum();
    let exchanges = api
        .broker
        .super_stream_names()
        .iter()
        .filter(|(vhost, _)| caller.sees_objects_in(api, vhost))
        .count();
    let connections = super::connections::visible(api, caller);
    let mut totals = json!({
        "channels": 0,
        "connections": connections.len(),
        "exchanges": exchanges,
        "queues": streams.len(),
    });
    let mut body = json!({
        "management_version": api.rabbitmq_version,
        "rates_mode": "none",
        "sample_retention_policies": {
            "global": [600, 3600, 28800, 86400], "basic": [600, 3600], "detailed": [600]
        },
        "exchange_types": exchange_types(),
        "product_version": env!("CARGO_PKG_VERSION"),
        "product_name": "brook",
        "rabbitmq_version": api.rabbitmq_version,
        "cluster_name": api.node,
        "disable_stats": false,
        "enable_queue_totals": false,
        "message_stats": api.rates.message_stats(&api.broker),
        "queue_totals": {
            "messages": messages, "messages_details": no_rate(),
            "messages_ready": messages, "messages_ready_details": no_rate(),
            "messages_unacknowledged": 0, "messages_unacknowledged_details": no_rate(),
        },
        "statistics_db_event_queue": 0,
    });
    if caller.is_monitor() {
        totals["consumers"] = json!(super::connections::consumer_count(api));
        body["node"] = json!(api.node);
        body["listeners"] = listeners(api);
        body["contexts"] = contexts(api);
    }
    body["object_totals"] = totals;
    Ok(axum::Json(body).into_response())
}

fn listeners(api: &Api) -> Value {
    let mut all: Vec<Value> = api
        .listeners
        .iter()
        .map(|l| {
            json!({
                "node": api.node,
                "protocol": l.protocol,
                "ip_address": l.addr.ip().to_string(),
                "port": l.addr.port(),
                "socket_opts": {},
            })
        })
        .collect();
    all.sort_by_key(|l| (l["protocol"].to_string(), l["port"].as_u64()));
    Value::Array(all)
}

fn contexts(api: &Api) -> Value {
    let http = api
        .listeners
        .iter()
        .filter(|l| l.protocol.starts_with("http"));
    Value::Array(
        http.map(|l| {
            json!({
                "ssl_opts": [],
                "node": api.node,
                "description": if l.protocol == "http" { "RabbitMQ Management" } else { "RabbitMQ Prometheus" },
                "path": "/",
                "ip": l.addr.ip().to_string(),
                // A string, as RabbitMQ has it.
                "port": l.addr.port().to_string(),
            })
        })
        .collect(),
    )
}

async fn whoami(caller: Who) -> Response {
    axum::Json(json!({ "name": caller.0.user.name, "tags": caller.0.user.tags })).into_response()
}

async fn cluster_name(api: Ctx) -> Response {
    axum::Json(json!({ "name": api.0.node })).into_response()
}

/// Management UI plugins: none.
async fn extensions() -> Response {
    axum::Json(json!([])).into_response()
}

async fn nodes(api: Ctx, caller: Who) -> ApiResult<Response> {
    caller.0.require_monitor()?;
    Ok(axum::Json(Value::Array(all_nodes(&api.0).await)).into_response())
}

async fn node(api: Ctx, caller: Who, Path(name): Path<String>) -> ApiResult<Response> {
    caller.0.require_monitor()?;
    let found = all_nodes(&api.0)
        .await
        .into_iter()
        .find(|n| n["name"] == name.as_str());
    Ok(axum::Json(found.ok_or(ApiError::NotFound)?).into_response())
}

/// Takes a stopped member out of the cluster, as `rabbitmqctl forget_cluster_node` (brook's
/// HTTP form of it; RabbitMQ's API has none). `node` is its name or `brook_node_id`.
async fn forget_node(api: Ctx, caller: Who, Path(node): Path<String>) -> ApiResult<Response> {
    caller.0.require_admin()?;
    let cluster = api
        .0
        .cluster
        .as_ref()
        .ok_or_else(|| ApiError::BadRequest("this node is not part of a cluster".into()))?;
    let id = node_id(cluster, &node).ok_or(ApiError::NotFound)?;
    cluster.forget(id).await.map_err(membership_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A member of the cluster by name (`brook-3@host`) or `brook_node_id`.
pub(super) fn node_id(cluster: &brook_cluster::Cluster, node: &str) -> Option<u64> {
    let metadata = cluster.metadata();
    let id = node.parse::<u64>().ok().or_else(|| {
        let named = metadata.nodes.iter().find(|(_, n)| n.name == node);
        named.map(|(id, _)| *id)
    });
    id.filter(|id| cluster.member_ids().contains(id))
}

/// No majority is 503 (the client may retry); a refusal is 400 with the reason.
pub(super) fn membership_error(e: brook_cluster::MembershipError) -> ApiError {
    match e {
        brook_cluster::MembershipError::Cluster(e) => ApiError::Custom {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "unavailable".into(),
            reason: e.to_string(),
        },
        refused => ApiError::BadRequest(refused.to_string()),
    }
}

/// This node, and in a cluster every other member as it answers over the cluster port (or
/// `running: false`). The others' resource figures are not gathered: RabbitMQ's are, over
/// Erlang distribution. brook adds `brook_node_id`, `brook_metadata_role` and
/// `brook_metadata_leader` to each.
async fn all_nodes(api: &Api) -> Vec<Value> {
    let mut this = node_json(api);
    let Some(cluster) = &api.cluster else {
        return vec![this];
    };
    let metadata = cluster.metadata();
    let statuses = cluster.statuses().await;
    let mut all = Vec::new();
    for (id, status) in statuses {
        let mut node = if id == cluster.id() {
            std::mem::take(&mut this)
        } else {
            let name = metadata
                .nodes
                .get(&id)
                .map_or_else(|| format!("brook-{id}@unknown"), |n| n.name.clone());
            json!({
                "name": name,
                "type": "disc",
                "running": status.is_some(),
                "uptime": status.as_ref().map(|s| s.uptime_ms),
            })
        };
        node["brook_node_id"] = json!(id);
        node["brook_metadata_role"] = json!(status.as_ref().map(|s| s.role.clone()));
        node["brook_metadata_leader"] = json!(status.as_ref().and_then(|s| s.leader));
        node["brook_metadata_term"] = json!(status.as_ref().map(|s| s.term));
        all.push(node);
    }
    all
}

/// The node's resources, with RabbitMQ's field names and types.
fn node_json(api: &Api) -> Value {
    let stats = brook_metrics::node::NodeStats::read(&api.data_dir);
    let connections = api.connections.list().len();
    json!({
        "name": api.node,
        "type": "disc",
        "running": true,
        "being_drained": false,
        "os_pid": std::process::id().to_string(),
        "uptime": u64::try_from(api.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "rates_mode": "none",
        "mem_used": stats.memory_bytes, "mem_used_details": no_rate(),
        "mem_limit": stats.memory_total_bytes,
        "mem_alarm": false,
        "mem_calculation_strategy": "rss",
        "fd_used": stats.open_files, "fd_used_details": no_rate(),
        "fd_total": stats.open_files_limit,
        "sockets_used": connections, "sockets_used_details": no_rate(),
        "sockets_total": stats.open_files_limit,
        "disk_free": stats.disk_free_bytes, "disk_free_details": no_rate(),
        "disk_free_limit": 0,
        "disk_free_alarm": false,
        "db_dir": api.data_dir.display().to_string(),
        "exchange_types": exchange_types(),
        "auth_mechanisms": [
            {"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true},
            {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": false},
            {"name": "EXTERNAL", "description": "SASL EXTERNAL authentication mechanism", "enabled": true},
            {"name": "ANONYMOUS", "description": "SASL ANONYMOUS authentication mechanism", "enabled": true},
        ],
        "enabled_plugins": ["rabbitmq_management", "rabbitmq_prometheus", "rabbitmq_stream", "rabbitmq_stream_management"],
        "applications": [{"name": "brook", "description": "brook", "version": env!("CARGO_PKG_VERSION")}],
        "partitions": [],
        "cluster_links": [],
        "contexts": contexts(api),
    })
}

/// brook raises no resource alarms (a full disk fails the writes it cannot store and fences
/// their publishers instead of blocking every publisher), so this is always healthy.
async fn alarms() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// Every stream that could not be opened makes this check fail, as a stopped vhost does in
/// RabbitMQ.
async fn virtual_hosts(api: Ctx) -> Response {
    let down: Vec<String> = api
        .0
        .broker
        .unavailable_streams()
        .into_iter()
        .map(|s| s.vhost)
        .collect();
    if down.is_empty() {
        axum::Json(json!({ "status": "ok" })).into_response()
    } else {
        let body = json!({
            "status": "failed",
            "reason": "Some virtual hosts have unavailable streams",
            "virtual-hosts": down,
        });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

async fn port_listener(api: Ctx, Path(port): Path<String>) -> Response {
    let found = port
        .parse::<u16>()
        .ok()
        .filter(|p| api.0.listeners.iter().any(|l| l.addr.port() == *p));
    match found {
        Some(port) => axum::Json(json!({ "status": "ok", "port": port })).into_response(),
        None => failed(format!("No active listener on port {port}")),
    }
}

async fn protocol_listener(api: Ctx, Path(protocol): Path<String>) -> Response {
    if api.0.listeners.iter().any(|l| l.protocol == protocol) {
        axum::Json(json!({ "status": "ok", "protocol": protocol })).into_response()
    } else {
        failed(format!("No active listener for protocol {protocol}"))
    }
}

fn failed(reason: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({ "status": "failed", "reason": reason })),
    )
        .into_response()
}
