//! `brook ctl`: the `rabbitmqctl` and `rabbitmq-streams` commands operators script against,
//! with RabbitMQ's names, arguments and default columns, run against brook's management API
//! over HTTP (RabbitMQ's CLIs use Erlang distribution instead).
//!
//! * `client.rs` — HTTP requests and RabbitMQ's error bodies.
//! * `streams.rs` — connections, publishers, consumers, groups, tracking, super streams.
//! * `admin.rs` — users, vhosts, permissions, definitions, closing connections.
//! * `cluster.rs` — the cluster's members, its metadata leader, each stream's members.
//! * `table.rs` — tables for people, JSON for scripts.

mod admin;
mod client;
mod cluster;
mod streams;
mod table;

use std::io::Write;

use clap::{Args, Subcommand};

use client::Client;
pub use table::Format;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach brook's management API at {0}: {1}")]
    Unreachable(String, String),
    #[error("{path}: {reason} (HTTP {status})")]
    Api {
        status: u16,
        path: String,
        reason: String,
    },
    /// A refusal worded as RabbitMQ's CLI words it, with its exit code.
    #[error("{message}")]
    Refused { message: String, exit_code: u8 },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl CtlError {
    /// RabbitMQ's CLI exit codes: 64 usage, 67 no such user, 69 unavailable, 70 software.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => 64,
            CtlError::Refused { exit_code, .. } => *exit_code,
            CtlError::Unreachable(..) => 69,
            CtlError::Api { .. } | CtlError::Io(_) => 70,
        }
    }
}

/// Where and how to reach brook, and how to print.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Base URL of brook's management API.
    #[arg(
        long,
        env = "BROOK_URL",
        default_value = "http://localhost:15672",
        global = true
    )]
    pub url: String,
    /// User (with a management tag) to act as.
    // The field names differ from the commands' arguments (`add_user <username> <password>`,
    // `add_vhost <vhost>`): clap would otherwise take them for the same argument.
    #[arg(
        long = "username",
        short = 'u',
        env = "BROOK_USERNAME",
        default_value = "guest",
        global = true
    )]
    pub api_username: String,
    /// Its password.
    #[arg(
        long = "password",
        env = "BROOK_PASSWORD",
        default_value = "guest",
        hide_env_values = true,
        global = true
    )]
    pub api_password: String,
    /// Virtual host of the command (rabbitmqctl's `-p`).
    #[arg(long = "vhost", short = 'p', default_value = "/", global = true)]
    pub in_vhost: String,
    /// Output: an aligned table, or JSON for scripts.
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub format: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[command(rename_all = "snake_case")]
pub enum Command {
    /// Stream connections. Columns: conn_name, node, user, vhost, host, port, peer_host,
    /// peer_port, auth_mechanism, frame_max, heartbeat, connected_at, client_properties, ...
    ListStreamConnections {
        columns: Vec<String>,
    },
    /// Stream consumers of the vhost.
    ListStreamConsumers {
        columns: Vec<String>,
    },
    /// Stream publishers of the vhost.
    ListStreamPublishers {
        columns: Vec<String>,
    },
    /// The consumers of one single-active-consumer group.
    ListStreamGroupConsumers {
        #[arg(long)]
        stream: String,
        #[arg(long)]
        reference: String,
        columns: Vec<String>,
    },
    /// Stored consumer offsets (`offset`) and publisher sequences (`writer`) of a stream.
    ListStreamTracking {
        stream: String,
        #[arg(long, conflicts_with_all = ["offset", "writer"])]
        all: bool,
        #[arg(long, conflicts_with = "writer")]
        offset: bool,
        #[arg(long)]
        writer: bool,
    },
    /// Creates a super stream: its partition streams and their bindings.
    AddSuperStream(streams::SuperStreamArgs),
    /// Deletes a super stream and its partition streams.
    DeleteSuperStream {
        name: String,
    },
    /// Moves a consumer's stored offset (RabbitMQ 4.2 resets to the start; brook can also go
    /// to `last`, `next`, `offset:<n>` or `timestamp:<ms>`).
    ResetOffset {
        #[arg(long)]
        stream: String,
        #[arg(long)]
        reference: String,
        #[arg(long, default_value = "first")]
        to: String,
    },
    /// Prints a stream's messages as they arrive, decoded (AMQP 1.0 properties and body).
    /// One line per message; with `--format json`, one JSON object per line.
    Tail {
        stream: String,
        /// `first`, `last`, `next`, an offset, or `timestamp:<ms since the epoch>`.
        #[arg(long, default_value = "next")]
        from: String,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Adds a user (no tags, no permissions). The password is read from stdin if omitted.
    AddUser {
        username: String,
        password: Option<String>,
        /// The password argument is a RabbitMQ password hash (base64 of salt and SHA-256).
        #[arg(long)]
        pre_hashed_password: bool,
    },
    DeleteUser {
        username: String,
    },
    ChangePassword {
        username: String,
        password: Option<String>,
    },
    /// Replaces a user's tags (administrator, monitoring, policymaker, management).
    SetUserTags {
        username: String,
        tags: Vec<String>,
    },
    ListUsers,
    SetPermissions {
        username: String,
        configure: String,
        write: String,
        read: String,
    },
    ClearPermissions {
        username: String,
    },
    ListPermissions,
    AddVhost {
        vhost: String,
        #[arg(long, short = 'd')]
        description: Option<String>,
        #[arg(long)]
        tags: Option<String>,
        #[arg(long)]
        default_queue_type: Option<String>,
    },
    DeleteVhost {
        vhost: String,
    },
    ListVhosts {
        columns: Vec<String>,
    },
    /// Writes all definitions to a file, or to stdout with `-`.
    ExportDefinitions {
        file: String,
    },
    /// Imports definitions from a file, or from stdin without one.
    ImportDefinitions {
        file: Option<String>,
    },
    /// Closes a connection by name (as `list_stream_connections conn_name` shows it).
    CloseConnection {
        name: String,
        explanation: Option<String>,
    },
    /// The cluster's members: whether each answers, its role in the metadata group, the
    /// group's term and leader. A single node lists itself alone.
    ClusterStatus,
    /// Takes a stopped member out of the cluster, by name (`brook-3@host`) or node id, as
    /// `rabbitmqctl forget_cluster_node`. Refused while it runs or still leads a stream.
    ForgetClusterNode {
        node: String,
    },
    /// Each member's copy of a stream: role, node, epoch, offsets, readers, segments and how
    /// far behind the writer it is (`offset_lag`), as `rabbitmq-streams stream_status`.
    StreamStatus {
        stream: String,
    },
    /// Makes `node` (name or id) a member of the stream; it catches up from the leader, as
    /// `rabbitmq-streams add_replica`.
    AddReplica {
        stream: String,
        node: String,
    },
    /// Takes `node` out of the stream's members (not its leader), as `rabbitmq-streams
    /// delete_replica`.
    DeleteReplica {
        stream: String,
        node: String,
    },
}

/// Runs one command, printing to `out` (progress lines go to stderr, as tables and JSON are
/// for pipes).
pub fn run(args: CtlArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let client = Client::new(&args.url, &args.api_username, &args.api_password);
    let ctx = Ctx {
        client: &client,
        vhost: &args.in_vhost,
        format: args.format,
    };
    match args.command {
        Command::ListStreamConnections { columns } => streams::connections(&ctx, columns, out),
        Command::ListStreamConsumers { columns } => streams::consumers(&ctx, columns, out),
        Command::ListStreamPublishers { columns } => streams::publishers(&ctx, columns, out),
        Command::ListStreamGroupConsumers {
            stream,
            reference,
            columns,
        } => streams::group_consumers(&ctx, &stream, &reference, columns, out),
        Command::ListStreamTracking {
            stream,
            offset,
            writer,
            ..
        } => streams::tracking(&ctx, &stream, offset, writer, out),
        Command::AddSuperStream(a) => streams::add_super_stream(&ctx, &a, out),
        Command::DeleteSuperStream { name } => streams::delete_super_stream(&ctx, &name, out),
        Command::ResetOffset {
            stream,
            reference,
            to,
        } => streams::reset_offset(&ctx, &stream, &reference, &to, out),
        Command::Tail {
            stream,
            from,
            count,
        } => streams::tail(&ctx, &stream, &from, count, out),
        Command::ClusterStatus => cluster::status(&ctx, out),
        Command::ForgetClusterNode { node } => cluster::forget(&ctx, &node),
        Command::StreamStatus { stream } => cluster::stream_status(&ctx, &stream, out),
        Command::AddReplica { stream, node } => cluster::replica(&ctx, &stream, &node, true),
        Command::DeleteReplica { stream, node } => cluster::replica(&ctx, &stream, &node, false),
        other => admin::run(&ctx, other, out),
    }
}

pub(crate) struct Ctx<'a> {
    pub client: &'a Client,
    pub vhost: &'a str,
    pub format: Format,
}

/// A progress line, as RabbitMQ's CLIs print before acting.
pub(crate) fn banner(text: &str) {
    eprintln!("{text}");
}
