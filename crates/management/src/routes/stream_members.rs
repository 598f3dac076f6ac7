//! A stream's members: each one's copy, as `rabbitmq-streams stream_status` prints it
//! (rabbit_stream_queue:status/2), and `add_replica` / `delete_replica`. RabbitMQ's CLI does
//! these over Erlang RPC; brook's speaks HTTP, so these routes are brook's own, in the stream
//! plugin's path space.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use brook_auth::Perm;
use brook_broker::{MemberStatus, StreamId};
use serde_json::{Value, json};

use super::{Ctx, Guarded, Who};
use crate::Api;
use crate::error::{ApiError, ApiResult};

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .guarded("/api/stream/status/{vhost}/{stream}", get(status))
        .guarded(
            "/api/stream/replicas/{vhost}/{stream}/{node}",
            put(add_replica).delete(delete_replica),
        )
}

async fn add_replica(
    api: Ctx,
    caller: Who,
    Path((vhost, stream, node)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    change_replica(&api.0, &caller, (vhost, stream, node), true).await
}

async fn delete_replica(
    api: Ctx,
    caller: Who,
    Path((vhost, stream, node)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    change_replica(&api.0, &caller, (vhost, stream, node), false).await
}

/// As `rabbitmq-streams add_replica` / `delete_replica`: administrators only.
async fn change_replica(
    api: &Api,
    caller: &Who,
    (vhost, stream, node): (String, String, String),
    add: bool,
) -> ApiResult<Response> {
    caller.0.require_admin()?;
    let cluster = api
        .cluster
        .as_ref()
        .ok_or_else(|| ApiError::BadRequest("this node is not part of a cluster".into()))?;
    let id = super::overview::node_id(cluster, &node).ok_or(ApiError::NotFound)?;
    let key = brook_cluster::StreamKey::from(&StreamId::new(vhost, stream));
    cluster
        .change_replica(key, id, add)
        .await
        .map_err(super::overview::membership_error)?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// `[{role, node, epoch, offset, committed_offset, committed_chunk_id, first_offset, readers,
/// segments}]`, one per member in node order, plus brook's `offset_lag` (how far the member's
/// log is behind the writer's) and `brook_node_id`. A member that does not answer has its
/// role and node only, as RabbitMQ shows one whose RPC failed.
async fn status(
    api: Ctx,
    caller: Who,
    Path((vhost, stream)): Path<(String, String)>,
) -> ApiResult<Response> {
    let api = &api.0;
    caller.0.require_vhost(api, &vhost)?;
    caller
        .0
        .require_permission(api, &vhost, Perm::Read, &stream)?;
    let members = members(api, &vhost, &stream)
        .await
        .ok_or(ApiError::NotFound)?;
    let writer = members
        .iter()
        .find_map(|m| m.status.as_ref().filter(|s| s.role == "writer")?.offset);
    let rows: Vec<Value> = members.into_iter().map(|m| m.row(writer)).collect();
    Ok(axum::Json(rows).into_response())
}

struct Member {
    id: Option<u64>,
    node: String,
    /// From the metadata, for a member that does not answer.
    role: &'static str,
    status: Option<MemberStatus>,
}

/// Every member of the stream: this node alone when not clustered.
async fn members(api: &Api, vhost: &str, stream: &str) -> Option<Vec<Member>> {
    let Some(cluster) = &api.cluster else {
        let status = api.broker.member_status(&StreamId::new(vhost, stream))?;
        let node = api.node.clone();
        let (id, role, status) = (None, "writer", Some(status));
        return Some(vec![Member {
            id,
            node,
            role,
            status,
        }]);
    };
    let key = brook_cluster::StreamKey::from(&StreamId::new(vhost, stream));
    let statuses: BTreeMap<u64, Option<MemberStatus>> = cluster.stream_status(&key).await?;
    let metadata = cluster.metadata();
    let leader = metadata.streams.get(&key).map(|s| s.leader);
    let rows = statuses.into_iter().map(|(id, status)| Member {
        id: Some(id),
        node: metadata
            .nodes
            .get(&id)
            .map_or_else(|| format!("brook-{id}@unknown"), |n| n.name.clone()),
        role: if Some(id) == leader {
            "writer"
        } else {
            "replica"
        },
        status,
    });
    Some(rows.collect())
}

impl Member {
    fn row(self, writer: Option<u64>) -> Value {
        let Some(s) = self.status else {
            return json!({ "role": self.role, "node": self.node, "brook_node_id": self.id });
        };
        // An empty member is behind by everything the writer holds.
        let lag = writer.map(|w| {
            s.offset
                .map_or(w.saturating_add(1), |o| w.saturating_sub(o))
        });
        json!({
            "role": s.role,
            "node": self.node,
            "epoch": s.epoch,
            "offset": s.offset,
            "committed_offset": s.committed_offset,
            "committed_chunk_id": s.committed_chunk_id,
            "first_offset": s.first_offset,
            "readers": s.readers,
            "segments": s.segments,
            "offset_lag": lag,
            "brook_node_id": self.id,
        })
    }
}
