//! A replica's task: appends the leader's chunks unchanged, makes them durable at the
//! configured level before acknowledging them (so a majority's acks mean durable on a
//! majority), publishes to readers up to the leader's commit, and answers what a replica can
//! answer from its copy. Publishes are refused (clients publish to the leader, which
//! `Metadata` names); stored offsets go to the leader's log.

use std::sync::Arc;

use brook_log::{Log, Shipped};
use brook_protocol::ResponseCode;
use tokio::sync::{mpsc, watch};

use super::{Command, PublishCmd, Reshape, StreamId, Tracked};
use crate::cluster::ClusterHooks;
use crate::config::Durability;
use crate::outgoing::Outgoing;

#[derive(Debug)]
pub(crate) struct Links {
    pub id: StreamId,
    pub committed: watch::Sender<u64>,
    pub durability: Durability,
    pub cluster: Option<Arc<dyn ClusterHooks>>,
}

pub(crate) async fn run(
    mut log: Log,
    mut commands: mpsc::UnboundedReceiver<Command>,
    links: Links,
) {
    // Readers wait for the leader's commit.
    log.replicate(false);
    let mut log = Some(log);
    while let Some(command) = commands.recv().await {
        let Some(mut current) = log.take() else {
            return;
        };
        match command {
            Command::Replicate {
                chunks,
                commit,
                reply,
            } => {
                let durability = links.durability;
                let done = tokio::task::spawn_blocking(move || {
                    let result = append(&mut current, chunks, commit, durability);
                    (current, result)
                })
                .await;
                let Ok((back, result)) = done else {
                    tracing::error!(stream = %links.id, "replica writer failed");
                    return;
                };
                links.committed.send_if_modified(|c| {
                    let next = back.reader().stats().next_offset;
                    let changed = *c != next;
                    *c = next;
                    changed
                });
                let _ = reply.send(result);
                current = back;
            }
            Command::Reshape {
                change: Reshape::CutTo(to),
                reply,
            } if !current.is_boundary(to).unwrap_or(false) => {
                // Refused before the log is closed: a bad request must not stop the replica.
                let _ = reply.send(Err(format!("no chunk starts at {to}")));
            }
            Command::Reshape { change, reply } => {
                match reshape(current, change, reply, &links).await {
                    Some(reshaped) => current = reshaped,
                    None => return,
                }
            }
            Command::Shutdown { reply } => {
                let _ = tokio::task::spawn_blocking(move || current.sync()).await;
                let _ = reply.send(());
                return;
            }
            Command::Delete { reply } => {
                let _ = tokio::task::spawn_blocking(move || current.close_deleted()).await;
                let _ = reply.send(());
                return;
            }
            other => answer(&current, other, &links),
        }
        log = Some(current);
    }
}

/// Cuts the log back or starts it again, on the blocking pool; answers the new end. `None`:
/// it failed, and the replica stops (the files are as the failed step left them; reopening
/// on restart recovers them).
async fn reshape(
    current: Log,
    change: Reshape,
    reply: tokio::sync::oneshot::Sender<Result<u64, String>>,
    links: &Links,
) -> Option<Log> {
    let done = tokio::task::spawn_blocking(move || match change {
        Reshape::CutTo(to) => current.truncate(to),
        Reshape::StartAt(at) => current.restart_at(at),
    })
    .await;
    match done {
        Ok(Ok(mut log)) => {
            match change {
                Reshape::CutTo(to) => tracing::warn!(stream = %links.id, to,
                    "log cut back to the new leader's: what followed never reached a majority"),
                Reshape::StartAt(at) => tracing::warn!(stream = %links.id, at,
                    "log started again at the leader's first chunk: the leader's retention \
                     removed everything this copy could continue from"),
            }
            log.replicate(false);
            let _ = reply.send(Ok(log.next_offset()));
            Some(log)
        }
        Ok(Err(e)) => {
            tracing::error!(stream = %links.id, "reshaping the replica's log: {e}");
            let _ = reply.send(Err(e.to_string()));
            None
        }
        Err(_) => {
            tracing::error!(stream = %links.id, "reshaping the replica's log: the task failed");
            None
        }
    }
}

/// Appends, syncs as the durability asks, publishes up to the commit; the durable end.
fn append(
    log: &mut Log,
    chunks: Vec<Shipped>,
    commit: u64,
    durability: Durability,
) -> Result<u64, String> {
    for shipped in chunks {
        log.append_raw(shipped.chunk.raw(), shipped.starts_segment)
            .map_err(|e| e.to_string())?;
    }
    // A batch's acks wait for its fdatasync under `batch` as under `always`: the leader's
    // commit waits for them anyway, so grouping here would only add latency.
    if durability != Durability::None {
        log.sync().map_err(|e| e.to_string())?;
    }
    log.commit_to(commit.min(log.next_offset()));
    Ok(log.next_offset())
}

fn answer(log: &Log, command: Command, links: &Links) {
    match command {
        Command::Publish(p) => refuse(p),
        Command::StoreOffset {
            reference, offset, ..
        } => {
            if let Some(cluster) = &links.cluster {
                cluster.store_offset(&links.id, &reference, offset);
            }
        }
        Command::QueryOffset { reference, reply } => {
            let _ = reply.send(log.tracking().offset(&reference));
        }
        Command::QuerySequence { reference, reply } => {
            let _ = reply.send(log.tracking().sequence(&reference).unwrap_or(0));
        }
        Command::Tracking { reply } => {
            let tracking = log.tracking();
            let mut offsets: Vec<_> = tracking.offsets().map(|(r, o)| (r.to_owned(), o)).collect();
            let mut writers: Vec<_> = tracking
                .sequences()
                .map(|(r, s)| (r.to_owned(), s))
                .collect();
            offsets.sort();
            writers.sort();
            let _ = reply.send(Tracked { offsets, writers });
        }
        Command::Tail { reply } => {
            let _ = reply.send(log.tail().map_err(|e| e.to_string()));
        }
        Command::Acked { .. }
        | Command::SetReplicas { .. }
        | Command::Replicate { .. }
        | Command::Reshape { .. } => {}
        Command::Shutdown { .. } | Command::Delete { .. } => {}
    }
}

/// A publish that reached a replica: every id fails, as RabbitMQ fails a publish to a stream
/// whose leader is elsewhere and unreachable.
fn refuse(p: PublishCmd) {
    let errors = p
        .publish
        .entries()
        .take(p.take)
        .map(|e| (e.publishing_id, ResponseCode::STREAM_NOT_AVAILABLE))
        .collect();
    let _ = p.target.outgoing.send(Outgoing::PublishError {
        publisher_id: p.target.publisher_id,
        errors,
        charge: p.charge,
    });
}
