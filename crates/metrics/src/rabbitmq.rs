//! The families RabbitMQ's Prometheus plugin exposes, with its names, help texts and labels,
//! so that RabbitMQ's Grafana dashboards (RabbitMQ-Overview, RabbitMQ-Stream) work on brook.
//! Only the stream protocol's label sets are emitted: brook speaks no AMQP 0-9-1.

use std::fmt::Result;
use std::sync::atomic::AtomicU64;

use brook_broker::Totals;
use brook_protocol::ResponseCode;
use prometheus_client::encoding::DescriptorEncoder;

use crate::Metrics;
use crate::encode::{Labels, counter, gauge, info, label, one};
use crate::snapshot::{Snapshot, StreamRow};

/// `rabbitmq_identity_info` (what the dashboards join every panel on) and build info.
pub(crate) fn identity(enc: &mut DescriptorEncoder, m: &Metrics) -> Result {
    let identity = vec![
        ("rabbitmq_node", label(&m.node)),
        ("rabbitmq_cluster", label(&m.node)),
    ];
    info(
        enc,
        "rabbitmq_identity",
        "RabbitMQ node & cluster identity info",
        &identity,
    )?;
    let build = vec![
        ("product_name", label("brook")),
        ("product_version", label(env!("CARGO_PKG_VERSION"))),
        ("rabbitmq_version", label(&m.rabbitmq_version)),
        (
            "prometheus_plugin_version",
            label(env!("CARGO_PKG_VERSION")),
        ),
        ("prometheus_client_version", label("prometheus-client 0.24")),
    ];
    info(
        enc,
        "rabbitmq_build",
        "RabbitMQ & Erlang/OTP version info",
        &build,
    )
}

/// Node totals, as `/metrics` aggregates them (no labels).
pub(crate) fn totals(enc: &mut DescriptorEncoder, snap: &Snapshot, m: &Metrics) -> Result {
    let (opened, closed) = m.connections.churn();
    counter(
        enc,
        "rabbitmq_connections_opened",
        "Total number of connections opened",
        &one(opened),
    )?;
    counter(
        enc,
        "rabbitmq_connections_closed",
        "Total number of connections closed or terminated",
        &one(closed),
    )?;
    gauge(
        enc,
        "rabbitmq_connections",
        "Connections currently open",
        &one(snap.connections.len() as u64),
    )?;
    gauge(
        enc,
        "rabbitmq_channels",
        "Channels currently open",
        &one(0u64),
    )?;
    gauge(
        enc,
        "rabbitmq_consumers",
        "Consumers currently connected",
        &one(snap.consumers.len() as u64),
    )?;
    gauge(
        enc,
        "rabbitmq_queues",
        "Queues available",
        &one(snap.streams.len() as u64),
    )?;
    let messages: u64 = snap.streams.iter().map(StreamRow::messages).sum();
    gauge(
        enc,
        "rabbitmq_queue_messages_ready",
        "Messages ready to be delivered to consumers",
        &one(messages),
    )?;
    gauge(
        enc,
        "rabbitmq_queue_messages_unacked",
        "Messages delivered to consumers but not yet acknowledged",
        &one(0u64),
    )?;
    gauge(
        enc,
        "rabbitmq_queue_messages",
        "Sum of ready and unacknowledged messages - total queue depth",
        &one(messages),
    )?;
    gauge(
        enc,
        "rabbitmq_queue_consumers",
        "Consumers on a queue",
        &one(snap.consumers.len() as u64),
    )?;
    let node = &snap.node;
    gauge(
        enc,
        "rabbitmq_process_resident_memory_bytes",
        "Memory used in bytes",
        &one(node.memory_bytes),
    )?;
    gauge(
        enc,
        "rabbitmq_resident_memory_limit_bytes",
        "Memory high watermark in bytes",
        &one(node.memory_total_bytes),
    )?;
    gauge(
        enc,
        "rabbitmq_disk_space_available_bytes",
        "Disk space available in bytes",
        &one(node.disk_free_bytes),
    )?;
    gauge(
        enc,
        "rabbitmq_process_open_fds",
        "Open file descriptors",
        &one(node.open_files),
    )?;
    gauge(
        enc,
        "rabbitmq_process_max_fds",
        "Open file descriptors limit",
        &one(node.open_files_limit),
    )?;
    gauge(
        enc,
        "rabbitmq_process_open_tcp_sockets",
        "Open TCP sockets",
        &one(snap.connections.len() as u64),
    )?;
    gauge(
        enc,
        "rabbitmq_process_max_tcp_sockets",
        "Open TCP sockets limit",
        &one(node.open_files_limit),
    )
}

/// Queue families per stream, labelled `vhost` and `queue` (`/metrics/per-object`, and
/// `/metrics/detailed` with the `rabbitmq_detailed_` prefix).
pub(crate) fn queues(
    enc: &mut DescriptorEncoder,
    prefix: &str,
    rows: &[&StreamRow],
    coarse: bool,
    consumers: bool,
) -> Result {
    let labelled = |value: &dyn Fn(&StreamRow) -> u64| -> Vec<(Labels, u64)> {
        rows.iter()
            .map(|s| {
                (
                    vec![("vhost", label(&s.id.vhost)), ("queue", label(&s.id.name))],
                    value(s),
                )
            })
            .collect()
    };
    let name = |n: &str| format!("{prefix}{n}");
    if coarse {
        gauge(
            enc,
            &name("queue_messages_ready"),
            "Messages ready to be delivered to consumers",
            &labelled(&|s| s.messages()),
        )?;
        gauge(
            enc,
            &name("queue_messages_unacked"),
            "Messages delivered to consumers but not yet acknowledged",
            &labelled(&|_| 0),
        )?;
        gauge(
            enc,
            &name("queue_messages"),
            "Sum of ready and unacknowledged messages - total queue depth",
            &labelled(&|s| s.messages()),
        )?;
        counter(
            enc,
            &name("queue_process_reductions"),
            "Total number of queue process reductions",
            &labelled(&|_| 0),
        )?;
    }
    if consumers {
        gauge(
            enc,
            &name("queue_consumers"),
            "Consumers on a queue",
            &labelled(&|s| s.consumers as u64),
        )?;
    }
    Ok(())
}

/// The stream protocol's error counters, by response code.
const STREAM_ERRORS: &[(ResponseCode, &str, &str)] = &[
    (
        ResponseCode::STREAM_DOES_NOT_EXIST,
        "stream_does_not_exist",
        "Total number of commands rejected with stream does not exist error",
    ),
    (
        ResponseCode::SUBSCRIPTION_ID_ALREADY_EXISTS,
        "subscription_id_already_exists",
        "Total number of commands failed with subscription id already exists",
    ),
    (
        ResponseCode::SUBSCRIPTION_ID_DOES_NOT_EXIST,
        "subscription_id_does_not_exist",
        "Total number of commands failed with subscription id does not exist",
    ),
    (
        ResponseCode::STREAM_ALREADY_EXISTS,
        "stream_already_exists",
        "Total number of commands failed with stream already exists",
    ),
    (
        ResponseCode::STREAM_NOT_AVAILABLE,
        "stream_not_available",
        "Total number of commands failed with stream not available",
    ),
    (
        ResponseCode::SASL_MECHANISM_NOT_SUPPORTED,
        "sasl_mechanism_not_supported",
        "Total number of commands failed with sasl mechanism not supported",
    ),
    (
        ResponseCode::AUTHENTICATION_FAILURE,
        "authentication_failure",
        "Total number of commands failed with authentication failure",
    ),
    (
        ResponseCode::SASL_ERROR,
        "sasl_error",
        "Total number of commands failed with sasl error",
    ),
    (
        ResponseCode::SASL_CHALLENGE,
        "sasl_challenge",
        "Total number of commands failed with sasl challenge",
    ),
    (
        ResponseCode::SASL_AUTHENTICATION_FAILURE_LOOPBACK,
        "sasl_authentication_failure_loopback",
        "Total number of commands failed with sasl authentication failure loopback",
    ),
    (
        ResponseCode::VIRTUAL_HOST_ACCESS_FAILURE,
        "vhost_access_failure",
        "Total number of commands failed with vhost access failure",
    ),
    (
        ResponseCode::UNKNOWN_FRAME,
        "unknown_frame",
        "Total number of commands failed with unknown frame",
    ),
    (
        ResponseCode::FRAME_TOO_LARGE,
        "frame_too_large",
        "Total number of commands failed with frame too large",
    ),
    (
        ResponseCode::INTERNAL_ERROR,
        "internal_error",
        "Total number of commands failed with internal error",
    ),
    (
        ResponseCode::ACCESS_REFUSED,
        "access_refused",
        "Total number of commands failed with access refused",
    ),
    (
        ResponseCode::PRECONDITION_FAILED,
        "precondition_failed",
        "Total number of commands failed with precondition failed",
    ),
    (
        ResponseCode::PUBLISHER_DOES_NOT_EXIST,
        "publisher_does_not_exist",
        "Total number of commands failed with publisher does not exist",
    ),
];

const AMQP_DELIVERY: &[(&str, &str)] = &[
    (
        "rabbitmq_global_messages_delivered_consume_manual_ack",
        "Total number of messages delivered to consumers using basic.consume with manual acknowledgment",
    ),
    (
        "rabbitmq_global_messages_delivered_consume_auto_ack",
        "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment",
    ),
    (
        "rabbitmq_global_messages_delivered_get_manual_ack",
        "Total number of messages delivered to consumers using basic.get with manual acknowledgment",
    ),
    (
        "rabbitmq_global_messages_delivered_get_auto_ack",
        "Total number of messages delivered to consumers using basic.get with automatic acknowledgment",
    ),
    (
        "rabbitmq_global_messages_get_empty",
        "Total number of times basic.get operations fetched no message",
    ),
    (
        "rabbitmq_global_messages_redelivered",
        "Total number of messages redelivered to consumers",
    ),
    (
        "rabbitmq_global_messages_acknowledged",
        "Total number of messages acknowledged by consumers",
    ),
];

/// `rabbitmq_global_*`: RabbitMQ's protocol counters, with the stream protocol's label sets.
pub(crate) fn global(enc: &mut DescriptorEncoder, snap: &Snapshot, t: &Totals) -> Result {
    let stream = || vec![("protocol", label("stream"))];
    let value = |c: &AtomicU64| [(stream(), Totals::get(c))];
    counter(
        enc,
        "rabbitmq_global_messages_received",
        "Total number of messages received from publishers",
        &value(&t.received),
    )?;
    counter(
        enc,
        "rabbitmq_global_messages_received_confirm",
        "Total number of messages received from publishers expecting confirmations",
        &value(&t.received),
    )?;
    counter(
        enc,
        "rabbitmq_global_messages_confirmed",
        "Total number of messages confirmed to publishers",
        &value(&t.confirmed),
    )?;
    let zero = [(stream(), 0u64)];
    counter(
        enc,
        "rabbitmq_global_messages_routed",
        "Total number of messages routed to queues or streams",
        &zero,
    )?;
    counter(
        enc,
        "rabbitmq_global_messages_unroutable_dropped",
        "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
        &zero,
    )?;
    counter(
        enc,
        "rabbitmq_global_messages_unroutable_returned",
        "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
        &zero,
    )?;
    gauge(
        enc,
        "rabbitmq_global_publishers",
        "Current number of publishers",
        &[(stream(), snap.publishers.len() as u64)],
    )?;
    gauge(
        enc,
        "rabbitmq_global_consumers",
        "Current number of consumers",
        &[(stream(), snap.consumers.len() as u64)],
    )?;
    let queue_type = || {
        vec![
            ("protocol", label("stream")),
            ("queue_type", label("rabbit_stream_queue")),
        ]
    };
    counter(
        enc,
        "rabbitmq_global_messages_delivered",
        "Total number of messages delivered to consumers",
        &[(queue_type(), Totals::get(&t.delivered))],
    )?;
    // AMQP 0-9-1's delivery modes: RabbitMQ has them for the stream protocol too, always 0
    // (stream delivery counts in `messages_delivered` only). The Overview dashboard reads them.
    for (name, help) in AMQP_DELIVERY {
        counter(enc, name, help, &[(queue_type(), 0u64)])?;
    }
    for (code, name, help) in STREAM_ERRORS {
        let name = format!("rabbitmq_global_stream_error_{name}");
        counter(enc, &name, help, &[(stream(), t.errors(*code))])?;
    }
    Ok(())
}
