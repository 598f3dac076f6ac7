//! Super streams as RabbitMQ shows them over HTTP: a direct exchange (`x-super-stream`) with
//! one binding per partition (`x-stream-partition-order`). `rabbitmq-streams
//! add_super_stream` and scripts create super streams this way: PUT the exchange, PUT the
//! partition streams as queues, POST one binding each.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use brook_auth::Perm;
use brook_broker::SuperStream;
use serde_json::{Map, Value, json};

use super::{Ctx, Guarded, Who, broker_error, deleted, listed_vhost, put_status};
use crate::Api;
use crate::auth::Caller;
use crate::body;
use crate::error::{ApiError, ApiResult};
use crate::list::{ListQuery, respond};
use crate::phash2::properties_key;

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .guarded("/api/exchanges", get(list))
        .guarded("/api/exchanges/{vhost}", get(list))
        .guarded(
            "/api/exchanges/{vhost}/{name}",
            get(get_exchange).put(put_exchange).delete(delete_exchange),
        )
        .guarded(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(bindings_source),
        )
        .guarded(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(no_bindings),
        )
        .guarded(
            "/api/queues/{vhost}/{name}/bindings",
            get(bindings_of_queue),
        )
        .guarded("/api/bindings", get(bindings))
        .guarded("/api/bindings/{vhost}", get(bindings))
        .guarded(
            "/api/bindings/{vhost}/e/{exchange}/q/{queue}",
            get(bindings_between).post(bind),
        )
        .guarded(
            "/api/bindings/{vhost}/e/{exchange}/q/{queue}/{props}",
            get(get_binding).delete(unbind),
        )
}

fn exchange_json(vhost: &str, name: &str) -> Value {
    json!({
        "arguments": { "x-super-stream": true },
        "auto_delete": false,
        "durable": true,
        "incoming": [],
        "internal": false,
        "name": name,
        "outgoing": [],
        "type": "direct",
        "vhost": vhost,
    })
}

/// One partition binding, as `/api/bindings` shows it.
struct Binding {
    vhost: String,
    source: String,
    destination: String,
    routing_key: String,
    order: usize,
}

impl Binding {
    fn arguments(&self) -> Map<String, Value> {
        let mut args = Map::new();
        args.insert("x-stream-partition-order".into(), json!(self.order));
        args
    }

    fn properties_key(&self) -> String {
        properties_key(&self.routing_key, &self.arguments())
    }

    fn json(&self) -> Value {
        json!({
            "source": self.source,
            "vhost": self.vhost,
            "destination": self.destination,
            "destination_type": "queue",
            "routing_key": self.routing_key,
            "arguments": self.arguments(),
            "properties_key": self.properties_key(),
        })
    }
}

fn bindings_of(vhost: &str, name: &str, ss: &SuperStream) -> Vec<Binding> {
    ss.partitions
        .iter()
        .zip(&ss.binding_keys)
        .enumerate()
        .map(|(order, (p, k))| Binding {
            vhost: vhost.to_owned(),
            source: name.to_owned(),
            destination: p.clone(),
            routing_key: k.clone(),
            order,
        })
        .collect()
}

/// Every binding the caller may see, optionally of one vhost.
fn all_bindings(api: &Api, caller: &Caller, vhost: Option<&str>) -> Vec<Binding> {
    let mut out = Vec::new();
    for (v, name) in api.broker.super_stream_names() {
        if vhost.is_some_and(|only| only != v) || !caller.sees_objects_in(api, &v) {
            continue;
        }
        if let Ok(ss) = api.broker.super_stream(&v, &name) {
            out.extend(bindings_of(&v, &name, &ss));
        }
    }
    out
}

const BINDING_ORDER: &[&str] = &[
    "vhost",
    "source",
    "destination",
    "routing_key",
    "properties_key",
];

fn exchanges(api: &Api, caller: &Caller, vhost: Option<&str>) -> Vec<Value> {
    api.broker
        .super_stream_names()
        .iter()
        .filter(|(v, _)| vhost.is_none_or(|only| only == v) && caller.sees_objects_in(api, v))
        .map(|(v, name)| exchange_json(v, name))
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
        exchanges(&api.0, &caller.0, vhost.as_deref()),
        &q,
        &["vhost", "name"],
    )
}

async fn get_exchange(
    api: Ctx,
    caller: Who,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.0.require_vhost(&api.0, &vhost)?;
    api.0
        .broker
        .super_stream(&vhost, &name)
        .map_err(|_| ApiError::NotFound)?;
    Ok(axum::Json(exchange_json(&vhost, &name)).into_response())
}

/// The default exchange and `amq.*` belong to the broker: refused as RabbitMQ refuses them.
fn check_name(name: &str) -> ApiResult<()> {
    if name.is_empty() || name == "amq.default" || name.starts_with("amq.") {
        return Err(ApiError::NotAuthorised("Access refused."));
    }
    Ok(())
}

async fn put_exchange(
    api: Ctx,
    caller: Who,
    Path((vhost, name)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult<Response> {
    let api = &api.0;
    caller.0.require_vhost(api, &vhost)?;
    let body: Map<String, Value> = body::json(&raw)?;
    check_name(&name)?;
    if api.access.vhost(&vhost).is_none() {
        return Err(ApiError::NotFoundBecause("vhost_not_found".into()));
    }
    match body.get("type").and_then(Value::as_str).unwrap_or("direct") {
        "direct" => {}
        // Deliberate: brook's exchanges are super streams, which route by exact key.
        other => {
            return Err(ApiError::BadRequest(format!(
                "brook only has direct exchanges (super streams), not '{other}'"
            )));
        }
    }
    caller
        .0
        .require_permission(api, &vhost, Perm::Configure, &name)?;
    let created = api
        .broker
        .declare_super_stream(&vhost, &name)
        .await
        .map_err(broker_error)?;
    Ok(put_status(created))
}

async fn delete_exchange(
    api: Ctx,
    caller: Who,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let api = &api.0;
    caller.0.require_vhost(api, &vhost)?;
    check_name(&name)?;
    api.broker
        .super_stream(&vhost, &name)
        .map_err(|_| ApiError::NotFound)?;
    caller
        .0
        .require_permission(api, &vhost, Perm::Configure, &name)?;
    api.broker
        .forget_super_stream(&vhost, &name)
        .await
        .map_err(broker_error)?;
    Ok(deleted())
}

/// A missing vhost or exchange lists nothing, as RabbitMQ answers these routes.
async fn bindings_source(
    api: Ctx,
    caller: Who,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    caller.0.require_vhost(&api.0, &vhost)?;
    let items = all_bindings(&api.0, &caller.0, Some(&vhost))
        .iter()
        .filter(|b| b.source == name)
        .map(Binding::json)
        .collect();
    respond(items, &q, BINDING_ORDER)
}

/// Exchanges are never bound to exchanges here.
async fn no_bindings(
    api: Ctx,
    caller: Who,
    Path((vhost, _)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.0.require_vhost(&api.0, &vhost)?;
    Ok(axum::Json(json!([])).into_response())
}

async fn bindings_of_queue(
    api: Ctx,
    caller: Who,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    caller.0.require_vhost(&api.0, &vhost)?;
    api.0
        .broker
        .stream_info(&vhost, &name)
        .ok_or(ApiError::NotFound)?;
    let items = all_bindings(&api.0, &caller.0, Some(&vhost))
        .iter()
        .filter(|b| b.destination == name)
        .map(Binding::json)
        .collect();
    respond(items, &q, BINDING_ORDER)
}

async fn bindings(
    api: Ctx,
    caller: Who,
    vhost: Option<Path<String>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let vhost = listed_vhost(&api.0, &caller.0, vhost)?;
    let items = all_bindings(&api.0, &caller.0, vhost.as_deref())
        .iter()
        .map(Binding::json)
        .collect();
    respond(items, &q, BINDING_ORDER)
}

fn between(api: &Api, caller: &Caller, vhost: &str, exchange: &str, queue: &str) -> Vec<Binding> {
    all_bindings(api, caller, Some(vhost))
        .into_iter()
        .filter(|b| b.source == exchange && b.destination == queue)
        .collect()
}

async fn bindings_between(
    api: Ctx,
    caller: Who,
    Path((vhost, exchange, queue)): Path<(String, String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    caller.0.require_vhost(&api.0, &vhost)?;
    let items = between(&api.0, &caller.0, &vhost, &exchange, &queue)
        .iter()
        .map(Binding::json)
        .collect();
    respond(items, &q, BINDING_ORDER)
}

/// Binds a stream to a super stream: it becomes a partition, at the position its
/// `x-stream-partition-order` argument says. 201 with the binding's `Location`.
async fn bind(
    api: Ctx,
    caller: Who,
    Path((vhost, exchange, queue)): Path<(String, String, String)>,
    raw: Bytes,
) -> ApiResult<Response> {
    let api = &api.0;
    caller.0.require_vhost(api, &vhost)?;
    let body: Map<String, Value> = body::json(&raw)?;
    check_name(&exchange)?;
    if api.access.vhost(&vhost).is_none() {
        return Err(ApiError::NotFoundBecause("vhost_not_found".into()));
    }
    if api.broker.super_stream(&vhost, &exchange).is_err() {
        return Err(ApiError::NotFoundBecause(format!(
            "no exchange '{exchange}' in vhost '{vhost}'"
        )));
    }
    if api.broker.stream_info(&vhost, &queue).is_none() {
        return Err(ApiError::NotFoundBecause(format!(
            "no queue '{queue}' in vhost '{vhost}'"
        )));
    }
    caller
        .0
        .require_permission(api, &vhost, Perm::Write, &queue)?;
    caller
        .0
        .require_permission(api, &vhost, Perm::Read, &exchange)?;
    let key = body
        .get("routing_key")
        .and_then(Value::as_str)
        .unwrap_or("");
    let order = body
        .get("arguments")
        .and_then(|a| a.get("x-stream-partition-order"))
        .and_then(|o| {
            o.as_u64()
                .or_else(|| o.as_str().and_then(|s| s.parse().ok()))
        });
    api.broker
        .bind_partition(&vhost, &exchange, &queue, key, order)
        .await
        .map_err(broker_error)?;
    let props = between(api, &caller.0, &vhost, &exchange, &queue)
        .into_iter()
        .find(|b| b.routing_key == key)
        .map(|b| b.properties_key())
        .unwrap_or_default();
    let location = format!("{}/{}", encode(&queue), encode(&props));
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

/// Percent-encodes what may not appear raw in a path segment.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn find_binding(
    api: &Api,
    caller: &Caller,
    path: &(String, String, String, String),
) -> Option<Binding> {
    let (vhost, exchange, queue, props) = path;
    between(api, caller, vhost, exchange, queue)
        .into_iter()
        .find(|b| &b.properties_key() == props)
}

async fn get_binding(
    api: Ctx,
    caller: Who,
    Path(path): Path<(String, String, String, String)>,
) -> ApiResult<Response> {
    caller.0.require_vhost(&api.0, &path.0)?;
    let b = find_binding(&api.0, &caller.0, &path).ok_or(ApiError::NotFound)?;
    Ok(axum::Json(b.json()).into_response())
}

async fn unbind(
    api: Ctx,
    caller: Who,
    Path(path): Path<(String, String, String, String)>,
) -> ApiResult<Response> {
    let api = &api.0;
    caller.0.require_vhost(api, &path.0)?;
    let b = find_binding(api, &caller.0, &path).ok_or(ApiError::NotFound)?;
    caller
        .0
        .require_permission(api, &b.vhost, Perm::Write, &b.destination)?;
    caller
        .0
        .require_permission(api, &b.vhost, Perm::Read, &b.source)?;
    api.broker
        .unbind_partition(&b.vhost, &b.source, &b.destination, &b.routing_key)
        .await
        .map_err(broker_error)?;
    Ok(deleted())
}
