//! Connections, and the stream plugin's views of their publishers and consumers
//! (`rabbit_mgmt_wm_connection*`, `rabbit_stream_*_mgmt`). Users without the monitoring tag
//! see their own connections only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use brook_broker::{ConsumerSnapshot, Counters, PublisherSnapshot, StreamStatus};
use brook_server::ConnectionInfo;
use serde_json::{Map, Value, json};

use super::{Ctx, Guarded, Who, deleted, listed_vhost};
use crate::Api;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::list::{ListQuery, respond};

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .guarded("/api/connections", get(list))
        .guarded("/api/connections/{name}", get(get_one).delete(close))
        .guarded("/api/vhosts/{vhost}/connections", get(list))
        .guarded("/api/stream/connections", get(list))
        .guarded("/api/stream/connections/{vhost}", get(list))
        .guarded(
            "/api/stream/connections/{vhost}/{name}",
            get(get_in_vhost).delete(close_in_vhost),
        )
        .guarded(
            "/api/stream/connections/{vhost}/{name}/publishers",
            get(list_publishers),
        )
        .guarded(
            "/api/stream/connections/{vhost}/{name}/consumers",
            get(list_consumers),
        )
        .guarded("/api/stream/publishers", get(list_publishers))
        .guarded("/api/stream/publishers/{vhost}", get(list_publishers))
        .guarded(
            "/api/stream/publishers/{vhost}/{stream}",
            get(list_publishers),
        )
        .guarded("/api/stream/consumers", get(list_consumers))
        .guarded("/api/stream/consumers/{vhost}", get(list_consumers))
        // Not in RabbitMQ (which lists consumers per vhost only): the publishers' form.
        .guarded(
            "/api/stream/consumers/{vhost}/{stream}",
            get(list_consumers),
        )
}

/// Open connections the caller may see.
pub(crate) fn visible(api: &Api, caller: &Caller) -> Vec<ConnectionInfo> {
    api.connections
        .list()
        .into_iter()
        .filter(|c| caller.sees_connection_of(c.user.as_deref()))
        .collect()
}

fn connection_json(api: &Api, c: &ConnectionInfo) -> Value {
    let properties: Map<String, Value> = c
        .client_properties
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let mut out = json!({
        "auth_mechanism": c.auth_mechanism,
        "channel_max": 0,
        "client_properties": properties,
        "connected_at": c.connected_at,
        "frame_max": c.frame_max,
        "host": c.host,
        "name": c.name,
        "node": api.node,
        "peer_cert_issuer": null,
        "peer_cert_subject": null,
        "peer_cert_validity": null,
        "peer_host": c.peer_host,
        "peer_port": c.peer_port,
        "port": c.port,
        "protocol": c.protocol,
        "ssl": c.ssl,
        "ssl_cipher": null,
        "ssl_hash": null,
        "ssl_key_exchange": null,
        "ssl_protocol": null,
        "timeout": c.heartbeat,
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": c.vhost,
    });
    if let Some(name) = c.client_properties.get("connection_name") {
        out["user_provided_name"] = json!(name);
    }
    out
}

async fn list(
    api: Ctx,
    caller: Who,
    vhost: Option<Path<String>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let vhost = listed_vhost(&api.0, &caller.0, vhost)?;
    let items = visible(&api.0, &caller.0)
        .iter()
        .filter(|c| vhost.is_none() || c.vhost == vhost)
        .map(|c| connection_json(&api.0, c))
        .collect();
    respond(items, &q, &["vhost", "name"])
}

/// The named connection, if the caller may see it (someone else's is "not authorised", as
/// RabbitMQ's `is_authorized_user` answers).
fn find(api: &Api, caller: &Caller, name: &str, vhost: Option<&str>) -> ApiResult<ConnectionInfo> {
    let c = api.connections.get(name).ok_or(ApiError::NotFound)?;
    if vhost.is_some_and(|v| c.vhost.as_deref() != Some(v)) {
        return Err(ApiError::NotFound);
    }
    if !caller.sees_connection_of(c.user.as_deref()) {
        return Err(ApiError::NotAuthorised(
            "User not authorised to access object",
        ));
    }
    Ok(c)
}

async fn get_one(api: Ctx, caller: Who, Path(name): Path<String>) -> ApiResult<Response> {
    let c = find(&api.0, &caller.0, &name, None)?;
    Ok(axum::Json(connection_json(&api.0, &c)).into_response())
}

async fn get_in_vhost(
    api: Ctx,
    caller: Who,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let c = find(&api.0, &caller.0, &name, Some(&vhost))?;
    Ok(axum::Json(connection_json(&api.0, &c)).into_response())
}

/// Closes a connection: administrators any, others their own. As in RabbitMQ the socket is
/// closed without a Close frame; the `X-Reason` header is logged.
async fn close(
    api: Ctx,
    caller: Who,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    close_checked(&api.0, &caller.0, &headers, &name, None)
}

async fn close_in_vhost(
    api: Ctx,
    caller: Who,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    close_checked(&api.0, &caller.0, &headers, &name, Some(&vhost))
}

fn close_checked(
    api: &Api,
    caller: &Caller,
    headers: &HeaderMap,
    name: &str,
    vhost: Option<&str>,
) -> ApiResult<Response> {
    let c = find(api, caller, name, vhost)?;
    if !caller.is_admin() && c.user.as_deref() != Some(caller.name()) {
        return Err(ApiError::NotAuthorised(
            "User not authorised to access object",
        ));
    }
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin");
    tracing::info!(connection = %name, by = %caller.name(), reason, "closing connection");
    if api.connections.close(name) {
        Ok(deleted())
    } else {
        Err(ApiError::NotFound)
    }
}

/// A consumer with the connection it belongs to.
pub(crate) struct ConsumerRow {
    pub connection: ConnectionInfo,
    pub consumer: ConsumerSnapshot,
}

pub(crate) struct PublisherRow {
    pub connection: ConnectionInfo,
    pub publisher: PublisherSnapshot,
}

/// `of` every open connection's counters (its consumers, its publishers), each as a row with
/// its connection.
fn rows<T, R>(
    api: &Api,
    of: impl Fn(&Counters) -> Vec<T>,
    row: impl Fn(ConnectionInfo, T) -> R,
) -> Vec<R> {
    let mut out = Vec::new();
    for connection in api.connections.list() {
        let Some(counters) = connection.counters.clone() else {
            continue;
        };
        for item in of(&counters) {
            out.push(row(connection.clone(), item));
        }
    }
    out
}

/// Every consumer of every open connection.
pub(crate) fn consumers(api: &Api) -> Vec<ConsumerRow> {
    rows(api, Counters::consumers, |connection, consumer| {
        ConsumerRow {
            connection,
            consumer,
        }
    })
}

/// Every publisher of every open connection.
pub(crate) fn publishers(api: &Api) -> Vec<PublisherRow> {
    rows(api, Counters::publishers, |connection, publisher| {
        PublisherRow {
            connection,
            publisher,
        }
    })
}

pub(crate) fn consumer_count(api: &Api) -> usize {
    consumers(api).len()
}

fn connection_details(api: &Api, c: &ConnectionInfo) -> Value {
    json!({
        "name": c.name,
        "node": api.node,
        "peer_host": c.peer_host,
        "peer_port": c.peer_port,
        "user": c.user,
    })
}

fn publisher_json(api: &Api, row: &PublisherRow) -> Value {
    let p = &row.publisher;
    json!({
        "confirmed": p.confirmed,
        "connection_details": connection_details(api, &row.connection),
        "errored": p.errored,
        "published": p.published,
        "publisher_id": p.publisher_id,
        "queue": { "name": p.stream.name, "vhost": p.stream.vhost },
        "reference": p.reference,
    })
}

/// The last offset of each stream's log, for consumer lag (RabbitMQ's `committed_offset`).
fn last_offsets(api: &Api) -> BTreeMap<brook_broker::StreamId, u64> {
    api.broker
        .stream_infos()
        .into_iter()
        .filter_map(|s| match s.status {
            StreamStatus::Running { stats, .. } if stats.next_offset > 0 => {
                Some((s.id, stats.next_offset - 1))
            }
            _ => None,
        })
        .collect()
}

fn consumer_json(
    api: &Api,
    row: &ConsumerRow,
    last: &BTreeMap<brook_broker::StreamId, u64>,
) -> Value {
    let c = &row.consumer;
    let properties: Map<String, Value> = c
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let lag = last
        .get(&c.stream)
        .map_or(0, |l| l.saturating_sub(c.offset));
    json!({
        "active": c.active,
        "activity_status": if c.active { "up" } else { "waiting" },
        "connection_details": connection_details(api, &row.connection),
        "consumed": c.consumed,
        "credits": c.credits,
        "offset": c.offset,
        "offset_lag": lag,
        "properties": properties,
        "queue": { "name": c.stream.name, "vhost": c.stream.vhost },
        "subscription_id": c.subscription_id,
    })
}

/// Which publishers or consumers a route shows.
#[derive(Default)]
struct Scope<'a> {
    vhost: Option<&'a str>,
    stream: Option<&'a str>,
    connection: Option<&'a str>,
}

impl Scope<'_> {
    fn keeps(&self, caller: &Caller, c: &ConnectionInfo, stream: &brook_broker::StreamId) -> bool {
        caller.sees_connection_of(c.user.as_deref())
            && self.vhost.is_none_or(|v| stream.vhost == v)
            && self.stream.is_none_or(|s| stream.name == s)
            && self.connection.is_none_or(|n| c.name == n)
    }

    /// A scope naming a missing vhost or stream is a 404, as in RabbitMQ.
    fn check(&self, api: &Api) -> ApiResult<()> {
        if let Some(v) = self.vhost {
            api.access.vhost(v).ok_or(ApiError::NotFound)?;
            if let Some(s) = self.stream {
                api.broker.stream_info(v, s).ok_or(ApiError::NotFound)?;
            }
        }
        Ok(())
    }
}

fn publisher_list(
    api: &Api,
    caller: &Caller,
    scope: Scope<'_>,
    q: &ListQuery,
) -> ApiResult<Response> {
    scope.check(api)?;
    let items = publishers(api)
        .iter()
        .filter(|r| scope.keeps(caller, &r.connection, &r.publisher.stream))
        .map(|r| publisher_json(api, r))
        .collect();
    respond(items, q, &[])
}

fn consumer_list(
    api: &Api,
    caller: &Caller,
    scope: Scope<'_>,
    q: &ListQuery,
) -> ApiResult<Response> {
    scope.check(api)?;
    let last = last_offsets(api);
    let items = consumers(api)
        .iter()
        .filter(|r| scope.keeps(caller, &r.connection, &r.consumer.stream))
        .map(|r| consumer_json(api, r, &last))
        .collect();
    respond(items, q, &[])
}

/// The route's `{vhost}`, `{stream}` and connection `{name}`, whichever it has.
type Params = Option<Path<HashMap<String, String>>>;

impl<'a> Scope<'a> {
    /// The scope a route names; a named connection must be one the caller may see.
    fn of(api: &Api, caller: &Caller, params: &'a HashMap<String, String>) -> ApiResult<Scope<'a>> {
        let scope = Scope {
            vhost: params.get("vhost").map(String::as_str),
            stream: params.get("stream").map(String::as_str),
            connection: params.get("name").map(String::as_str),
        };
        if let Some(name) = scope.connection {
            find(api, caller, name, scope.vhost)?;
            return Ok(Scope {
                vhost: None,
                ..scope
            });
        }
        Ok(scope)
    }
}

async fn list_publishers(
    api: Ctx,
    caller: Who,
    params: Params,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let params = params.map(|Path(p)| p).unwrap_or_default();
    let scope = Scope::of(&api.0, &caller.0, &params)?;
    publisher_list(&api.0, &caller.0, scope, &q)
}

async fn list_consumers(
    api: Ctx,
    caller: Who,
    params: Params,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let params = params.map(|Path(p)| p).unwrap_or_default();
    let scope = Scope::of(&api.0, &caller.0, &params)?;
    consumer_list(&api.0, &caller.0, scope, &q)
}
