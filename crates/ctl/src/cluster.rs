//! `cluster_status`: the members, whether each answers, and the metadata group's leader, as
//! `/api/nodes` reports them (RabbitMQ's `rabbitmqctl cluster_status` lists disk and running
//! nodes; brook adds each member's role in the metadata group).

use std::io::Write;

use serde_json::Value;

use crate::client::seg;
use crate::table::{lookup, print};
use crate::{CtlError, Ctx, banner};

/// `stream_status`: each member's copy of a stream, with RabbitMQ's columns
/// (rabbit_stream_queue:status/2) and brook's `offset_lag`: how far its log is behind the
/// writer's.
pub(crate) fn stream_status(
    ctx: &Ctx<'_>,
    stream: &str,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    banner(&format!("Status of stream {stream} ..."));
    let path = format!("/api/stream/status/{}/{}", seg(ctx.vhost), seg(stream));
    let members = match ctx.client.get(&path)? {
        Value::Array(items) => items,
        other => vec![other],
    };
    let columns: Vec<String> = [
        "role",
        "node",
        "epoch",
        "offset",
        "committed_offset",
        "committed_chunk_id",
        "first_offset",
        "readers",
        "segments",
        "offset_lag",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    print(out, ctx.format, &columns, &members, lookup)
}

/// `add_replica` / `delete_replica`: PUT or DELETE /api/stream/replicas/{vhost}/{stream}/{node}
/// (brook's; RabbitMQ's CLI does it over Erlang distribution).
pub(crate) fn replica(ctx: &Ctx<'_>, stream: &str, node: &str, add: bool) -> Result<(), CtlError> {
    let path = format!(
        "/api/stream/replicas/{}/{}/{}",
        seg(ctx.vhost),
        seg(stream),
        seg(node)
    );
    if add {
        banner(&format!(
            "Adding a replica for stream {stream} on node {node}"
        ));
        ctx.client.put(&path, &serde_json::json!({})).map(drop)
    } else {
        banner(&format!(
            "Removing the replica of stream {stream} on node {node}"
        ));
        ctx.client.delete(&path, None).map(drop)
    }
}

/// `forget_cluster_node`: DELETE /api/nodes/{node} (brook's; RabbitMQ's CLI does it over
/// Erlang distribution).
pub(crate) fn forget(ctx: &Ctx<'_>, node: &str) -> Result<(), CtlError> {
    banner(&format!("Removing node {node} from the cluster"));
    ctx.client
        .delete(&format!("/api/nodes/{}", seg(node)), None)
        .map(drop)
}

pub(crate) fn status(ctx: &Ctx<'_>, out: &mut dyn Write) -> Result<(), CtlError> {
    banner("Cluster status ...");
    let nodes = match ctx.client.get("/api/nodes")? {
        Value::Array(items) => items,
        other => vec![other],
    };
    let columns: Vec<String> = [
        "node_id",
        "name",
        "running",
        "metadata_role",
        "term",
        "leader",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    print(out, ctx.format, &columns, &nodes, |n, c| match c {
        "node_id" => lookup(n, "brook_node_id"),
        "metadata_role" => lookup(n, "brook_metadata_role"),
        "term" => lookup(n, "brook_metadata_term"),
        "leader" => lookup(n, "brook_metadata_leader"),
        other => lookup(n, other),
    })
}
