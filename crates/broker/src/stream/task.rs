//! The async shell of a stream writer: batches commands, runs the [`StreamWriter`] on a blocking
//! thread, routes its replies to connections, and keeps the group-commit and retention timers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::core::Reply;
use super::writer::{Outcome, StreamWriter};
use super::{Command, StreamState};
use crate::outgoing::Outgoing;

/// Commands taken into one batch at most: bounds the work of one blocking call, so a stream
/// under heavy load still answers its timers.
const MAX_BATCH_COMMANDS: usize = 4096;

/// A writer task's connections to the rest of the broker.
#[derive(Debug)]
pub(crate) struct Links {
    pub name: String,
    pub state: Arc<StreamState>,
    pub committed: watch::Sender<u64>,
    pub retention_check_interval: Duration,
}

/// Runs `f` with the writer on the blocking pool: file I/O and fsync never stall the async
/// workers. `None` if it panicked (the writer is then lost and the task ends).
async fn blocking<T: Send + 'static>(
    mut writer: StreamWriter,
    f: impl FnOnce(&mut StreamWriter) -> T + Send + 'static,
) -> Option<(StreamWriter, T)> {
    let joined = tokio::task::spawn_blocking(move || {
        let out = f(&mut writer);
        (writer, out)
    })
    .await;
    match joined {
        Ok(done) => Some(done),
        Err(e) => {
            tracing::error!("stream writer failed: {e}");
            None
        }
    }
}

/// The task body: runs until the stream is deleted or shut down, or every handle is gone.
pub(crate) async fn run(
    mut writer: StreamWriter,
    mut commands: mpsc::UnboundedReceiver<Command>,
    links: Links,
) {
    let mut retention = tokio::time::interval(links.retention_check_interval);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    retention.tick().await;
    let mut sync_at = None;
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            n = commands.recv_many(&mut batch, MAX_BATCH_COMMANDS) => {
                if n == 0 {
                    break;
                }
                let stop = batch
                    .iter()
                    .position(|c| matches!(c, Command::Shutdown { .. } | Command::Delete { .. }));
                let rest = stop.map(|i| batch.split_off(i));
                let cmds = std::mem::take(&mut batch);
                let Some((w, outcome)) = blocking(writer, move |w| w.handle(cmds, Instant::now())).await else {
                    return;
                };
                writer = w;
                sync_at = outcome.sync_at;
                route(outcome, &links);
                if let Some(stop) = rest.and_then(|r| r.into_iter().next()) {
                    return finish(writer, stop, &links).await;
                }
            }
            _ = retention.tick() => {
                let now_ms = crate::now_ms();
                let Some((w, ())) = blocking(writer, move |w| w.enforce_retention(now_ms)).await else {
                    return;
                };
                writer = w;
            }
            _ = sleep_until(sync_at) => {
                let Some((w, outcome)) = blocking(writer, |w| w.sync_due(Instant::now())).await else {
                    return;
                };
                writer = w;
                sync_at = outcome.sync_at;
                route(outcome, &links);
            }
        }
    }
    if let Some((_, outcome)) = blocking(writer, |w| w.finish(Instant::now())).await {
        route(outcome, &links);
    }
}

/// Shutdown (write and sync what is queued) or Delete.
async fn finish(writer: StreamWriter, stop: Command, links: &Links) {
    match stop {
        Command::Shutdown { reply } => {
            if let Some((_, outcome)) = blocking(writer, |w| w.finish(Instant::now())).await {
                route(outcome, links);
            }
            let _ = reply.send(());
        }
        Command::Delete { reply } => {
            let _ = tokio::task::spawn_blocking(move || writer.delete()).await;
            let _ = reply.send(());
        }
        _ => {}
    }
}

/// Sends replies to their connections and tells readers and watchers what changed.
fn route(outcome: Outcome, links: &Links) {
    if let Some(next) = outcome.committed {
        links.committed.send_if_modified(|c| {
            let changed = *c != next;
            *c = next;
            changed
        });
    }
    for reply in outcome.replies {
        let (group, item) = match reply {
            Reply::Confirm(g) => {
                let item = Outgoing::Confirm {
                    publisher_id: g.target.publisher_id,
                    ids: g.ids,
                    alive: g.target.alive.clone(),
                    charge: g.charge,
                };
                (g.target, item)
            }
            Reply::Error(g, code) => {
                let item = Outgoing::PublishError {
                    publisher_id: g.target.publisher_id,
                    errors: g.ids.into_iter().map(|id| (id, code)).collect(),
                    charge: g.charge,
                };
                (g.target, item)
            }
        };
        let _ = group.outgoing.send(item);
    }
    if outcome.fence > links.state.publisher_epoch() {
        tracing::warn!(stream = %links.name, epoch = outcome.fence,
            "publishers fenced after a failed write: clients must declare them again");
        links.state.fence(&links.name, outcome.fence);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
