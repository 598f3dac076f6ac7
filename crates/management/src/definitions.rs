//! Definitions: RabbitMQ's export format (`GET /api/definitions`) and its import
//! (`POST /api/definitions`, and `brook serve --load-definitions FILE` at boot), so that users,
//! vhosts, permissions, streams and super streams move between RabbitMQ and brook.
//!
//! Import follows `rabbit_definitions:apply_defs/2`: categories in RabbitMQ's order, absent
//! ones skipped, unknown keys ignored, existing streams and super streams left as they are.
//! What brook cannot be (classic and quorum queues, fanout/topic/headers exchanges, bindings
//! other than super stream partitions) is skipped with a warning instead of failing the import.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use brook_auth::{Access, AccessStore, Permission, Vhost};
use brook_broker::{Broker, StreamStatus};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::format::{arguments_json, stream_arguments};
use crate::routes::{Ctx, Who};

/// Everything brook holds, in RabbitMQ's definitions format.
pub fn export_all(broker: &Broker, access: &AccessStore, rabbitmq_version: &str) -> Value {
    let Access {
        users,
        vhosts,
        permissions,
    } = access.export();
    let users: Vec<Value> = users
        .iter()
        .map(|u| {
            json!({
                "name": u.name, "password_hash": u.password_hash,
                "hashing_algorithm": u.hashing_algorithm, "tags": u.tags, "limits": u.limits,
            })
        })
        .collect();
    let vhosts: Vec<Value> = vhosts
        .iter()
        .map(|v| {
            json!({
                "name": v.name, "description": v.description, "tags": v.tags,
                "metadata": { "description": v.description, "tags": v.tags },
            })
        })
        .collect();
    let permissions: Vec<Value> = permissions
        .iter()
        .map(|p| json!({"user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read}))
        .collect();
    let (queues, exchanges, bindings) = stream_definitions(broker);
    json!({
        "rabbit_version": rabbitmq_version,
        "rabbitmq_version": rabbitmq_version,
        "product_name": "brook",
        "product_version": env!("CARGO_PKG_VERSION"),
        "users": users,
        "vhosts": vhosts,
        "permissions": permissions,
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })
}

fn stream_definitions(broker: &Broker) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let queues = broker
        .stream_infos()
        .into_iter()
        .filter_map(|s| match s.status {
            StreamStatus::Running { arguments, .. } | StreamStatus::Creating { arguments } => {
                Some(json!({
                    "name": s.id.name, "vhost": s.id.vhost, "durable": true,
                    "auto_delete": false, "arguments": arguments_json(&arguments),
                }))
            }
            // Its arguments are unreadable: exporting made-up ones would be worse.
            StreamStatus::Unavailable { .. } => None,
        })
        .collect();
    let (mut exchanges, mut bindings) = (Vec::new(), Vec::new());
    for (vhost, name) in broker.super_stream_names() {
        let Ok(ss) = broker.super_stream(&vhost, &name) else {
            continue;
        };
        exchanges.push(json!({
            "name": name, "vhost": vhost, "type": "direct", "durable": true,
            "auto_delete": false, "internal": false, "arguments": {"x-super-stream": true},
        }));
        for (order, (p, key)) in ss.partitions.iter().zip(&ss.binding_keys).enumerate() {
            bindings.push(json!({
                "source": name, "vhost": vhost, "destination": p, "destination_type": "queue",
                "routing_key": key, "arguments": {"x-stream-partition-order": order},
            }));
        }
    }
    (queues, exchanges, bindings)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ExportQuery {
    download: Option<String>,
}

pub(crate) async fn export(
    api: Ctx,
    caller: Who,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    caller.0.require_admin()?;
    let body = export_all(&api.0.broker, &api.0.access, &api.0.rabbitmq_version);
    let mut response = axum::Json(body).into_response();
    if let Some(file) = q.download.filter(|f| !f.contains(['"', '\r', '\n']))
        && let Ok(v) = format!("attachment; filename=\"{file}\"").parse()
    {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

pub(crate) async fn import(
    api: Ctx,
    caller: Who,
    headers: HeaderMap,
    raw: Bytes,
) -> ApiResult<Response> {
    caller.0.require_admin()?;
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json_type {
        return Err(ApiError::UnsupportedMediaType);
    }
    let defs: Value = if raw.trim_ascii().is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&raw)
            .map_err(|_| ApiError::BadRequest("failed_to_parse_json".into()))?
    };
    apply(&api.0.broker, &api.0.access, Some(caller.0.name()), &defs)
        .await
        .map_err(ApiError::BadRequest)?;
    Ok(crate::routes::deleted())
}

/// Imports definitions. `acting_user` gets full permissions on the vhosts it creates, as in
/// RabbitMQ. Stops at the first error; what came before stays applied (as RabbitMQ).
pub async fn apply(
    broker: &Broker,
    access: &AccessStore,
    acting_user: Option<&str>,
    defs: &Value,
) -> Result<(), String> {
    let Some(defs) = defs.as_object() else {
        return Err("definitions must be a JSON object".into());
    };
    let items = |key: &str| -> Vec<Map<String, Value>> {
        defs.get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|i| i.as_object().cloned()).collect())
            .unwrap_or_default()
    };
    import_access(
        access,
        acting_user,
        &items("users"),
        &items("vhosts"),
        &items("permissions"),
    )
    .await?;
    for x in items("exchanges") {
        import_exchange(broker, &x).await?;
    }
    for q in items("queues") {
        import_queue(broker, &q).await?;
    }
    for b in items("bindings") {
        import_binding(broker, &b).await;
    }
    Ok(())
}

fn text<'a>(item: &'a Map<String, Value>, key: &str) -> &'a str {
    item.get(key).and_then(Value::as_str).unwrap_or("")
}

async fn import_access(
    access: &AccessStore,
    acting_user: Option<&str>,
    users: &[Map<String, Value>],
    vhosts: &[Map<String, Value>],
    permissions: &[Map<String, Value>],
) -> Result<(), String> {
    let mut out = Access::default();
    for u in users {
        let name = text(u, "name");
        let body: crate::routes::UserBody = serde_json::from_value(Value::Object(u.clone()))
            .map_err(|e| format!("user {name:?}: {e}"))?;
        out.users
            .push(crate::routes::user_from(name, body).map_err(|e| format!("user {name:?}: {e}"))?);
    }
    let mut created = Vec::new();
    for v in vhosts {
        let vhost: Vhost = serde_json::from_value(Value::Object(v.clone()))
            .map_err(|e| format!("vhost {:?}: {e}", text(v, "name")))?;
        if access.vhost(&vhost.name).is_none() {
            created.push(vhost.name.clone());
        }
        out.vhosts.push(vhost);
    }
    for p in permissions {
        let permission: Permission = serde_json::from_value(Value::Object(p.clone()))
            .map_err(|e| format!("permission: {e}"))?;
        out.permissions.push(permission);
    }
    if let Some(user) = acting_user {
        let explicit: HashMap<(&str, &str), ()> = out
            .permissions
            .iter()
            .map(|p| ((p.user.as_str(), p.vhost.as_str()), ()))
            .collect();
        let grants: Vec<Permission> = created
            .iter()
            .filter(|v| !explicit.contains_key(&(user, v.as_str())))
            .map(|v| Permission {
                user: user.to_owned(),
                vhost: v.clone(),
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            })
            .collect();
        out.permissions.extend(grants);
    }
    access.import(out).await.map_err(|e| e.to_string())
}

async fn import_exchange(broker: &Broker, x: &Map<String, Value>) -> Result<(), String> {
    let (name, vhost) = (text(x, "name"), text(x, "vhost"));
    if name.is_empty() || name.starts_with("amq.") {
        return Ok(());
    }
    if text(x, "type") != "direct" {
        tracing::warn!(
            exchange = name,
            vhost,
            kind = text(x, "type"),
            "definitions: skipped, brook's exchanges are super streams (direct)"
        );
        return Ok(());
    }
    broker
        .declare_super_stream(vhost, name)
        .await
        .map(drop)
        .map_err(|e| format!("exchange {name:?}: {e}"))
}

async fn import_queue(broker: &Broker, q: &Map<String, Value>) -> Result<(), String> {
    let (name, vhost) = (text(q, "name"), text(q, "vhost"));
    if name.starts_with("amq.") || broker.stream_info(vhost, name).is_some() {
        return Ok(());
    }
    let arguments = q
        .get("arguments")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if arguments.get("x-queue-type").and_then(Value::as_str) != Some("stream") {
        tracing::warn!(
            queue = name,
            vhost,
            "definitions: skipped, brook only has streams"
        );
        return Ok(());
    }
    let args = stream_arguments(name, vhost, &arguments)?;
    match broker.create_stream(vhost, name, &args).await {
        Ok(()) | Err(brook_broker::Error::StreamAlreadyExists(_)) => Ok(()),
        Err(e) => Err(format!("queue {name:?} in vhost {vhost:?}: {e}")),
    }
}

/// Bindings that are not super stream partitions are skipped, as RabbitMQ ignores bindings it
/// cannot add.
async fn import_binding(broker: &Broker, b: &Map<String, Value>) {
    let (source, vhost, destination) =
        (text(b, "source"), text(b, "vhost"), text(b, "destination"));
    if text(b, "destination_type") != "queue" || broker.super_stream(vhost, source).is_err() {
        return;
    }
    let order = b
        .get("arguments")
        .and_then(|a| a.get("x-stream-partition-order"))
        .and_then(|o| {
            o.as_u64()
                .or_else(|| o.as_str().and_then(|s| s.parse().ok()))
        });
    if let Err(e) = broker
        .bind_partition(vhost, source, destination, text(b, "routing_key"), order)
        .await
    {
        tracing::warn!(
            source,
            destination,
            vhost,
            "definitions: binding skipped: {e}"
        );
    }
}
