//! Virtual hosts, users and permissions (`rabbit_mgmt_wm_vhost*`, `_user*`, `_permission*`).
//! Every route but the vhost list needs the administrator tag.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use brook_auth::{Permission, User, Vhost, password};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Ctx, Guarded, Who, deleted, put_status};
use crate::Api;
use crate::body;
use crate::error::{ApiError, ApiResult};
use crate::format::no_rate;
use crate::list::{ListQuery, respond};

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .guarded("/api/vhosts", get(list_vhosts))
        .guarded(
            "/api/vhosts/{vhost}",
            get(get_vhost).put(put_vhost).delete(delete_vhost),
        )
        .guarded("/api/vhosts/{vhost}/permissions", get(list_permissions))
        .guarded("/api/users", get(list_users))
        .guarded(
            "/api/users/{user}",
            get(get_user).put(put_user).delete(delete_user),
        )
        .guarded("/api/users/{user}/permissions", get(list_permissions))
        .guarded("/api/permissions", get(list_permissions))
        .guarded(
            "/api/permissions/{vhost}/{user}",
            get(get_permission)
                .put(put_permission)
                .delete(delete_permission),
        )
}

fn vhost_json(api: &Api, v: &Vhost) -> Value {
    let mut metadata = json!({ "description": v.description, "tags": v.tags });
    if let Some(t) = &v.default_queue_type {
        metadata["default_queue_type"] = json!(t);
    }
    let mut out = json!({
        "cluster_state": { api.node.clone(): "running" },
        // The Erlang atom `undefined` when unset, as RabbitMQ writes it.
        "default_queue_type": v.default_queue_type.as_deref().unwrap_or("undefined"),
        "description": v.description,
        "metadata": metadata,
        "name": v.name,
        "tags": v.tags,
        "tracing": false,
    });
    let streams: Vec<u64> = api
        .broker
        .stream_infos()
        .iter()
        .filter(|s| s.id.vhost == v.name)
        .map(|s| match &s.status {
            brook_broker::StreamStatus::Running { stats, .. } => {
                super::queues::message_count(stats)
            }
            _ => 0,
        })
        .collect();
    // Message counts appear once a vhost has queues, as in RabbitMQ.
    if !streams.is_empty() {
        let messages: u64 = streams.iter().sum();
        for (key, value) in [
            ("messages", messages),
            ("messages_ready", messages),
            ("messages_unacknowledged", 0),
        ] {
            out[key] = json!(value);
            out[format!("{key}_details")] = no_rate();
        }
    }
    out
}

async fn list_vhosts(api: Ctx, caller: Who, Query(q): Query<ListQuery>) -> ApiResult<Response> {
    let (api, caller) = (&api.0, &caller.0);
    let items = api
        .access
        .vhosts()
        .iter()
        .filter(|v| caller.sees_vhost(api, &v.name))
        .map(|v| vhost_json(api, v))
        .collect();
    respond(items, &q, &["name"])
}

async fn get_vhost(api: Ctx, caller: Who, Path(name): Path<String>) -> ApiResult<Response> {
    caller.0.require_admin()?;
    let vhost = api.0.access.vhost(&name).ok_or(ApiError::NotFound)?;
    Ok(axum::Json(vhost_json(&api.0, &vhost)).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct VhostBody {
    #[serde(default)]
    description: Option<String>,
    #[serde(default, deserialize_with = "brook_auth::tags_from_list_or_string")]
    tags: Vec<String>,
    /// 3.10's spelling; later releases also take `default_queue_type`.
    #[serde(default)]
    defaultqueuetype: Option<String>,
    #[serde(default)]
    default_queue_type: Option<String>,
}

async fn put_vhost(
    api: Ctx,
    caller: Who,
    Path(name): Path<String>,
    raw: Bytes,
) -> ApiResult<Response> {
    caller.0.require_admin()?;
    let body: VhostBody = body::json(&raw)?;
    let mut vhost = api
        .0
        .access
        .vhost(&name)
        .unwrap_or_else(|| Vhost::named(&name));
    vhost.description = body.description.unwrap_or_default();
    vhost.tags = body.tags;
    if let Some(t) = body.default_queue_type.or(body.defaultqueuetype) {
        vhost.default_queue_type = Some(t);
    }
    let created = api.0.access.put_vhost(vhost).await?;
    if created {
        // RabbitMQ gives the user who creates a vhost full permissions in it.
        api.0
            .access
            .set_permission(Permission {
                user: caller.0.user.name.clone(),
                vhost: name.clone(),
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            })
            .await?;
        tracing::info!(vhost = %name, by = %caller.0.user.name, "vhost created");
    }
    Ok(put_status(created))
}

/// Deletes the vhost with its permissions, streams and super streams, and closes its
/// connections, as RabbitMQ does.
async fn delete_vhost(api: Ctx, caller: Who, Path(name): Path<String>) -> ApiResult<Response> {
    caller.0.require_admin()?;
    if !api.0.access.delete_vhost(&name).await? {
        return Err(ApiError::NotFound);
    }
    for c in api.0.connections.list() {
        if c.vhost.as_deref() == Some(name.as_str()) {
            api.0.connections.close(&c.name);
        }
    }
    api.0.broker.delete_vhost(&name).await;
    tracing::info!(vhost = %name, by = %caller.0.user.name, "vhost deleted");
    Ok(deleted())
}

fn user_json(u: &User) -> Value {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": u.hashing_algorithm,
        "tags": u.tags,
        "limits": u.limits,
    })
}

async fn list_users(api: Ctx, caller: Who, Query(q): Query<ListQuery>) -> ApiResult<Response> {
    caller.0.require_admin()?;
    respond(
        api.0.access.users().iter().map(user_json).collect(),
        &q,
        &["name"],
    )
}

async fn get_user(api: Ctx, caller: Who, Path(name): Path<String>) -> ApiResult<Response> {
    caller.0.require_admin()?;
    let user = api.0.access.user(&name).ok_or(ApiError::NotFound)?;
    Ok(axum::Json(user_json(&user)).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct UserBody {
    password: Option<String>,
    password_hash: Option<String>,
    hashing_algorithm: Option<String>,
    #[serde(default)]
    tags: Option<Value>,
    /// Before tags existed: `administrator: true`.
    administrator: Option<Value>,
    #[serde(default)]
    limits: serde_json::Map<String, Value>,
}

/// Creates or replaces a user, as `rabbit_auth_backend_internal:put_user/3`: tags are required;
/// a password or a hash may be given, not both; with neither the user has no password.
async fn put_user(
    api: Ctx,
    caller: Who,
    Path(name): Path<String>,
    raw: Bytes,
) -> ApiResult<Response> {
    caller.0.require_admin()?;
    let body: UserBody = body::json(&raw)?;
    let user = user_from(&name, body)?;
    let created = api.0.access.user(&name).is_none();
    api.0.access.put_user(user).await?;
    Ok(put_status(created))
}

pub(crate) fn user_from(name: &str, body: UserBody) -> ApiResult<User> {
    let tags = match (body.tags, body.administrator) {
        (Some(tags), _) => tags_of(tags)?,
        (None, Some(admin)) => match admin {
            Value::Bool(true) => vec!["administrator".into()],
            Value::String(s) if s == "true" => vec!["administrator".into()],
            _ => Vec::new(),
        },
        (None, None) => return Err(ApiError::BadRequest("tags_not_present".into())),
    };
    let (password_hash, hashing_algorithm) = match (body.password, body.password_hash) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "both_password_and_password_hash_are_provided".into(),
            ));
        }
        (Some(p), None) => (password::hash(&p), password::SHA256.to_owned()),
        (None, Some(h)) => {
            password::check_stored(&h)
                .map_err(|_| ApiError::BadRequestTerm(json!(["not_base64", h])))?;
            let algorithm = body
                .hashing_algorithm
                .unwrap_or_else(|| password::SHA256.to_owned());
            password::check_algorithm(&algorithm)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            (h, algorithm)
        }
        (None, None) => (String::new(), password::SHA256.to_owned()),
    };
    Ok(User {
        name: name.to_owned(),
        password_hash,
        hashing_algorithm,
        tags,
        limits: body.limits,
    })
}

fn tags_of(value: Value) -> ApiResult<Vec<String>> {
    let tags: Vec<String> = match value {
        Value::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => {
            return Err(ApiError::BadRequest(
                "tags must be a string or a list".into(),
            ));
        }
    };
    Ok(tags)
}

async fn delete_user(api: Ctx, caller: Who, Path(name): Path<String>) -> ApiResult<Response> {
    caller.0.require_admin()?;
    if api.0.access.delete_user(&name).await? {
        Ok(deleted())
    } else {
        Err(ApiError::NotFound)
    }
}

fn permission_json(p: &Permission) -> Value {
    json!({
        "user": p.user, "vhost": p.vhost,
        "configure": p.configure, "write": p.write, "read": p.read,
    })
}

/// `/api/permissions`, `/api/vhosts/V/permissions` and `/api/users/U/permissions`: every
/// permission, or those of one (existing) vhost or user.
async fn list_permissions(
    api: Ctx,
    caller: Who,
    params: Option<Path<HashMap<String, String>>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    caller.0.require_admin()?;
    let params = params.map(|Path(p)| p).unwrap_or_default();
    let (vhost, user) = (params.get("vhost"), params.get("user"));
    if vhost.is_some_and(|v| api.0.access.vhost(v).is_none())
        || user.is_some_and(|u| api.0.access.user(u).is_none())
    {
        return Err(ApiError::NotFound);
    }
    let items = api
        .0
        .access
        .permissions()
        .iter()
        .filter(|p| vhost.is_none_or(|v| &p.vhost == v) && user.is_none_or(|u| &p.user == u))
        .map(permission_json)
        .collect();
    respond(items, &q, &["vhost", "user"])
}

async fn get_permission(
    api: Ctx,
    caller: Who,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.0.require_admin()?;
    let p = api
        .0
        .access
        .permission(&user, &vhost)
        .ok_or(ApiError::NotFound)?;
    Ok(axum::Json(permission_json(&p)).into_response())
}

async fn put_permission(
    api: Ctx,
    caller: Who,
    Path((vhost, user)): Path<(String, String)>,
    raw: Bytes,
) -> ApiResult<Response> {
    caller.0.require_admin()?;
    let body: serde_json::Map<String, Value> = body::json(&raw)?;
    let field = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    let (configure, write, read) = (field("configure"), field("write"), field("read"));
    let missing: Vec<String> = [
        ("configure", &configure),
        ("write", &write),
        ("read", &read),
    ]
    .iter()
    .filter(|(_, v)| v.is_none())
    .map(|(k, _)| format!("{{key_missing,{k}}}"))
    .collect();
    if !missing.is_empty() {
        // Erlang's rendering of the list of missing keys, as RabbitMQ answers.
        return Err(ApiError::BadRequest(format!("[{}]", missing.join(","))));
    }
    if api.0.access.user(&user).is_none() || api.0.access.vhost(&vhost).is_none() {
        return Err(ApiError::BadRequest("vhost_or_user_not_found".into()));
    }
    let created = api.0.access.permission(&user, &vhost).is_none();
    let permission = Permission {
        user,
        vhost,
        configure: configure.unwrap_or_default(),
        write: write.unwrap_or_default(),
        read: read.unwrap_or_default(),
    };
    api.0.access.set_permission(permission).await?;
    Ok(put_status(created))
}

async fn delete_permission(
    api: Ctx,
    caller: Who,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.0.require_admin()?;
    if api.0.access.clear_permission(&user, &vhost).await? {
        Ok(deleted())
    } else {
        Err(ApiError::NotFound)
    }
}
