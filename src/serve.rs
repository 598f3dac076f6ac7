//! `brook serve`: its settings (flags, environment, config file) and running the broker with
//! its listeners and the management API until SIGINT or SIGTERM.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use brook_auth::{AccessStore, Bootstrap};
use brook_broker::{Broker, BrokerConfig, Durability};
use brook_cluster::{Cluster, ClusterConfig, ClusterKey, NodeInfo};
use brook_management::{Api, ListenerInfo, Management};
use brook_metrics::Metrics;
use brook_server::{Server, ServerConfig, TlsConfig};
use clap::Args;

use crate::limits;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// A TOML file of settings named as these flags (`data-dir = "/var/lib/brook"`). Flags and
    /// environment variables take precedence over it.
    #[arg(long, env = "BROOK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the stream protocol listener.
    #[arg(long, env = "BROOK_LISTEN", default_value = "0.0.0.0:5552")]
    pub(crate) listen: SocketAddr,
    /// Host clients are told to connect to (Open response, Metadata); must resolve for them
    /// [default: the address each client connected to].
    #[arg(long, env = "BROOK_ADVERTISED_HOST")]
    pub(crate) advertised_host: Option<String>,
    /// Port clients are told to connect to [default: the listener's port].
    #[arg(long, env = "BROOK_ADVERTISED_PORT")]
    pub(crate) advertised_port: Option<u16>,
    /// Where streams are stored.
    #[arg(long, env = "BROOK_DATA_DIR", default_value = "./data")]
    pub(crate) data_dir: PathBuf,
    /// The user created in a fresh data directory (an administrator with full permissions on
    /// the default vhost), as RabbitMQ's default user.
    #[arg(long, env = "BROOK_DEFAULT_USER", default_value = "guest")]
    pub(crate) default_user: String,
    /// Its password.
    #[arg(
        long,
        env = "BROOK_DEFAULT_PASS",
        default_value = "guest",
        hide_env_values = true
    )]
    pub(crate) default_pass: String,
    /// The vhost created in a fresh data directory.
    #[arg(long, env = "BROOK_DEFAULT_VHOST", default_value = "/")]
    pub(crate) default_vhost: String,
    /// Users that may only log in from loopback addresses (comma-separated; "" for none).
    #[arg(
        long,
        env = "BROOK_LOOPBACK_USERS",
        default_value = "guest",
        value_delimiter = ','
    )]
    pub(crate) loopback_users: Vec<String>,
    /// An administrator made sure of at every start, as NAME:PASSWORD (its password is reset
    /// to this one); repeat for several. Users are otherwise managed with the management API
    /// or `brook ctl`.
    #[arg(long = "user", env = "BROOK_USERS", value_delimiter = ',', value_parser = parse_user)]
    pub(crate) users: Vec<(String, String)>,
    /// Import a definitions file (RabbitMQ's JSON export format) at startup.
    #[arg(long, env = "BROOK_LOAD_DEFINITIONS")]
    pub(crate) load_definitions: Option<PathBuf>,
    /// When confirms are sent: `none` (page cache, as RabbitMQ), `batch:<ms>` (group fsync at
    /// most every <ms>), or `always` (fsync before every confirm).
    #[arg(long, env = "BROOK_DURABILITY", default_value = "none", value_parser = parse_durability)]
    pub(crate) durability: Durability,
    /// How long, in microseconds, a stream written at over 200,000 entries (messages or
    /// sub-entry batches) a second may wait for more before writing, so that its chunks (and
    /// its consumers' reads) grow; 0 writes at once. At most this much (plus the timer's
    /// millisecond granularity) is added to such a stream's confirm latency.
    #[arg(long, env = "BROOK_CHUNK_LINGER_US", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub(crate) chunk_linger_us: u64,
    /// Offer SASL ANONYMOUS, logging in as this user.
    #[arg(long, env = "BROOK_ANONYMOUS_USER")]
    pub(crate) anonymous_user: Option<String>,
    /// Heartbeat interval proposed to clients, in seconds (0 disables).
    #[arg(long, env = "BROOK_HEARTBEAT", default_value_t = 60)]
    pub(crate) heartbeat: u32,
    /// Address of the management HTTP API.
    #[arg(long, env = "BROOK_HTTP_LISTEN", default_value = "0.0.0.0:15672")]
    pub(crate) http_listen: SocketAddr,
    /// Do not start the management HTTP API.
    #[arg(long, env = "BROOK_NO_HTTP")]
    pub(crate) no_http: bool,
    /// Address of the Prometheus metrics listener (RabbitMQ's plugin port). The metrics are
    /// also at `/metrics` on the management listener.
    #[arg(long, env = "BROOK_PROMETHEUS_LISTEN", default_value = "0.0.0.0:15692")]
    pub(crate) prometheus_listen: SocketAddr,
    /// Do not start the Prometheus listener.
    #[arg(long, env = "BROOK_NO_PROMETHEUS")]
    pub(crate) no_prometheus: bool,
    /// PEM certificate chain of the TLS listener (with --tls-key, enables TLS).
    #[arg(long, env = "BROOK_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of the TLS listener.
    #[arg(long, env = "BROOK_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Address of the TLS stream listener.
    #[arg(long, env = "BROOK_TLS_LISTEN", default_value = "0.0.0.0:5551")]
    pub(crate) tls_listen: SocketAddr,
    /// Port advertised on TLS connections [default: the TLS listener's port].
    #[arg(long, env = "BROOK_ADVERTISED_TLS_PORT")]
    pub(crate) advertised_tls_port: Option<u16>,
    /// PEM CA certificates for client certificates: clients are asked for one and it must
    /// verify.
    #[arg(long, env = "BROOK_TLS_CLIENT_CA")]
    pub(crate) tls_client_ca: Option<PathBuf>,
    /// Refuse TLS clients that present no certificate.
    #[arg(
        long,
        env = "BROOK_TLS_REQUIRE_CLIENT_CERT",
        requires = "tls_client_ca"
    )]
    pub(crate) tls_require_client_cert: bool,
    /// Offer SASL EXTERNAL on TLS: the client certificate's CN names the user.
    #[arg(long, env = "BROOK_TLS_EXTERNAL_AUTH", requires = "tls_client_ca")]
    pub(crate) tls_external_auth: bool,
    /// Run as node N of a cluster (with --cluster-listen and a --peer per other node).
    #[arg(long, env = "BROOK_NODE_ID", requires = "cluster_listen")]
    pub(crate) node_id: Option<u64>,
    /// Address of this node's cluster port, where the other nodes reach it (the metadata
    /// group's Raft traffic); it is also this node's address in the membership unless a
    /// --peer names this node.
    #[arg(long, env = "BROOK_CLUSTER_LISTEN", requires = "node_id")]
    pub(crate) cluster_listen: Option<SocketAddr>,
    /// Another member, as ID=HOST:PORT (its cluster port); repeat for each. Every node must
    /// be started with the same members.
    #[arg(long = "peer", env = "BROOK_PEERS", value_delimiter = ',', value_parser = parse_peer, requires = "node_id")]
    pub(crate) peers: Vec<(u64, String)>,
    /// Join a running cluster: ask the --peer members to add this node, instead of forming a
    /// cluster with them (RabbitMQ's `join_cluster`). Needed only for a node that was not
    /// among the members when the cluster formed; harmless on its later restarts.
    #[arg(long, env = "BROOK_JOIN", requires = "node_id")]
    pub(crate) join: bool,
    /// A file holding the secret every node of the cluster shares (as RabbitMQ's Erlang
    /// cookie): connections to the cluster port must prove they know it. Without it the
    /// cluster port is open to anyone who can reach it.
    #[arg(long, env = "BROOK_CLUSTER_SECRET_FILE", requires = "node_id")]
    pub(crate) cluster_secret_file: Option<PathBuf>,
}

fn parse_user(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, password)) if !name.is_empty() && !password.is_empty() => {
            Ok((name.into(), password.into()))
        }
        _ => Err(format!("expected NAME:PASSWORD, got {s:?}")),
    }
}

fn parse_peer(s: &str) -> Result<(u64, String), String> {
    match s.split_once('=') {
        Some((id, addr)) if !addr.is_empty() && addr.contains(':') => id
            .parse()
            .map(|id| (id, addr.to_owned()))
            .map_err(|_| format!("expected ID=HOST:PORT with a numeric ID, got {s:?}")),
        _ => Err(format!("expected ID=HOST:PORT, got {s:?}")),
    }
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "none" => Ok(Durability::None),
        "always" => Ok(Durability::Always),
        _ => match s.strip_prefix("batch:").map(str::parse::<u64>) {
            Some(Ok(ms)) if ms > 0 => Ok(Durability::Batch(Duration::from_millis(ms))),
            _ => Err(format!("expected none, always or batch:<ms>, got {s:?}")),
        },
    }
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.data_dir.as_os_str().is_empty() {
        bail!("--data-dir must not be empty");
    }
    let open_files_limit = limits::raise_open_files_limit();
    let mut broker_config = BrokerConfig::new(&args.data_dir);
    broker_config.durability = args.durability;
    broker_config.chunk_linger = Duration::from_micros(args.chunk_linger_us);
    broker_config.clustered = args.node_id.is_some();
    let broker = Broker::open(broker_config)
        .with_context(|| format!("opening data directory {}", args.data_dir.display()))?;
    let access = Arc::new(open_access(&args)?);
    if let (Some(file), None) = (&args.load_definitions, args.node_id) {
        load_definitions(&broker, &access, file).await?;
    }
    let server = Server::bind(server_config(&args), broker.clone(), access.clone()).await?;
    let cluster = start_cluster(&args, server.local_addr()?).await?;
    if let Some(cluster) = &cluster {
        cluster.attach(broker.clone());
        cluster.attach_access(access.clone());
        join_cluster_access(&args, cluster, &broker, &access).await?;
    }
    let metrics = Arc::new(Metrics {
        broker: broker.clone(),
        connections: server.connections(),
        node: node_name(args.node_id),
        data_dir: args.data_dir.clone(),
        rabbitmq_version: ServerConfig::default().protocol_version,
    });
    let mut listeners = vec![listener("stream", server.local_addr()?)];
    if let Some(addr) = server.tls_addr() {
        tracing::info!(%addr, "TLS listener");
        listeners.push(listener("stream/ssl", addr));
    }
    // The HTTP listeners stop when the stream listener does (when `stop` is dropped).
    let (stop, stopped) = tokio::sync::watch::channel(());
    let http_tasks = start_http(
        &args,
        &server,
        access,
        metrics,
        cluster.clone(),
        listeners,
        stopped,
    )
    .await?;
    tracing::info!(
        addr = %server.local_addr()?,
        data_dir = %args.data_dir.display(),
        durability = ?args.durability,
        "brook {} listening",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(limit) = open_files_limit {
        tokio::spawn(limits::watch(limit));
    }
    server.serve(shutdown_signal()).await;
    drop(stop);
    for task in http_tasks {
        let _ = task.await;
    }
    tracing::info!("shutting down: flushing streams");
    broker.shutdown().await;
    if let Some(cluster) = cluster {
        cluster.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The Prometheus listener and the management API (with the console), unless disabled.
async fn start_http(
    args: &ServeArgs,
    server: &Server,
    access: Arc<AccessStore>,
    metrics: Arc<Metrics>,
    cluster: Option<Arc<Cluster>>,
    mut listeners: Vec<ListenerInfo>,
    stopped: tokio::sync::watch::Receiver<()>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut http_tasks = Vec::new();
    if !args.no_prometheus {
        let addr = args.prometheus_listen;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let addr = tcp.local_addr()?;
        tracing::info!(%addr, "Prometheus metrics");
        listeners.push(listener("http/prometheus", addr));
        let until = stop_signal(stopped.clone());
        http_tasks.push(tokio::spawn(brook_metrics::serve(
            tcp,
            metrics.clone(),
            until,
        )));
    }
    if !args.no_http {
        let api = Api {
            broker: metrics.broker.clone(),
            access,
            connections: server.connections(),
            node: metrics.node.clone(),
            data_dir: args.data_dir.clone(),
            listeners: Vec::new(),
            rabbitmq_version: metrics.rabbitmq_version.clone(),
            started: std::time::Instant::now(),
            metrics,
            rates: Default::default(),
            cluster,
        };
        let mut management = Management::bind(args.http_listen, api)
            .await
            .with_context(|| format!("listening on {}", args.http_listen))?;
        let addr = management.local_addr()?;
        tracing::info!(%addr, "management API");
        listeners.push(listener("http", addr));
        management.set_listeners(listeners);
        http_tasks.push(tokio::spawn(management.serve(stop_signal(stopped))));
    }
    Ok(http_tasks)
}

/// Completes when the sender is dropped.
async fn stop_signal(mut stopped: tokio::sync::watch::Receiver<()>) {
    while stopped.changed().await.is_ok() {}
}

fn listener(protocol: &str, addr: SocketAddr) -> ListenerInfo {
    ListenerInfo {
        protocol: protocol.into(),
        addr,
    }
}

/// Joins (or forms) the cluster when `--node-id` is given: the metadata group's files live in
/// `<data-dir>/cluster`, and the node announces its name and advertised stream address.
async fn start_cluster(
    args: &ServeArgs,
    stream_addr: SocketAddr,
) -> anyhow::Result<Option<Arc<Cluster>>> {
    let (Some(node_id), Some(listen)) = (args.node_id, args.cluster_listen) else {
        return Ok(None);
    };
    let mut members: BTreeMap<u64, String> = args.peers.iter().cloned().collect();
    members.entry(node_id).or_insert_with(|| listen.to_string());
    let host = args.advertised_host.clone().unwrap_or_else(|| {
        if stream_addr.ip().is_unspecified() {
            "localhost".to_owned()
        } else {
            stream_addr.ip().to_string()
        }
    });
    let port = args.advertised_port.unwrap_or(stream_addr.port());
    let config = ClusterConfig {
        node_id,
        listen,
        members,
        dir: args.data_dir.join("cluster"),
        info: NodeInfo {
            name: node_name(args.node_id),
            addr: format!("{host}:{port}"),
        },
        storage: brook_storage::disk(),
        join: args.join,
        key: cluster_key(args)?,
    };
    let cluster = Cluster::start(config)
        .await
        .context("starting the cluster's metadata group")?;
    tracing::info!(node_id, cluster_port = %cluster.local_addr(), members = ?cluster.members(), "cluster member");
    Ok(Some(cluster))
}

/// In a cluster, users and definitions go through the metadata group, so they wait for it:
/// until the cluster has its users (seeded by whichever node proposed first), then `--user`
/// administrators and `--load-definitions` are applied as changes every node sees.
async fn join_cluster_access(
    args: &ServeArgs,
    cluster: &Cluster,
    broker: &Broker,
    access: &AccessStore,
) -> anyhow::Result<()> {
    if args.users.is_empty() && args.load_definitions.is_none() {
        return Ok(());
    }
    let mut metadata = cluster.watch();
    tokio::time::timeout(
        Duration::from_secs(60),
        metadata.wait_for(|m| m.access.is_some()),
    )
    .await
    .context("waiting 60 s for a majority of the cluster to apply --user and definitions")?
    .context("the cluster stopped")?;
    access
        .ensure_admins(&args.users, &args.default_vhost)
        .await
        .context("adding the --user administrators to the cluster")?;
    if let Some(file) = &args.load_definitions {
        load_definitions(broker, access, file).await?;
    }
    Ok(())
}

/// The cluster's secret, from `--cluster-secret-file` (surrounding whitespace ignored, so an
/// editor's final newline does not count).
fn cluster_key(args: &ServeArgs) -> anyhow::Result<ClusterKey> {
    let Some(file) = &args.cluster_secret_file else {
        tracing::warn!(
            "no --cluster-secret-file: the cluster port accepts anyone who can reach it"
        );
        return Ok(ClusterKey::new(None));
    };
    let text = std::fs::read(file)
        .with_context(|| format!("reading the cluster secret {}", file.display()))?;
    let secret = text.trim_ascii();
    if secret.is_empty() {
        bail!("the cluster secret file {} is empty", file.display());
    }
    Ok(ClusterKey::new(Some(secret)))
}

/// RabbitMQ names nodes `name@host`; brook's is `brook@<hostname>`, and node N of a cluster
/// is `brook-N@<hostname>` (several may share a host, as `rabbit-2@host` does).
fn node_name(node_id: Option<u64>) -> String {
    let uname = rustix::system::uname();
    let host = uname.nodename().to_string_lossy().into_owned();
    match node_id {
        Some(id) => format!("brook-{id}@{host}"),
        None => format!("brook@{host}"),
    }
}

fn open_access(args: &ServeArgs) -> anyhow::Result<AccessStore> {
    let bootstrap = Bootstrap {
        default_user: args.default_user.clone(),
        default_pass: args.default_pass.clone(),
        default_vhost: args.default_vhost.clone(),
        loopback_users: args
            .loopback_users
            .iter()
            .filter(|u| !u.is_empty())
            .cloned()
            .collect(),
        ensure_users: args.users.clone(),
    };
    AccessStore::open(brook_storage::disk(), &args.data_dir, &bootstrap)
        .context("opening the users, vhosts and permissions (access.json)")
}

async fn load_definitions(
    broker: &Broker,
    access: &AccessStore,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading definitions {}", file.display()))?;
    let defs: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing definitions {}", file.display()))?;
    brook_management::definitions::apply(broker, access, None, &defs)
        .await
        .map_err(|e| anyhow::anyhow!("importing definitions {}: {e}", file.display()))?;
    tracing::info!(file = %file.display(), "definitions imported");
    Ok(())
}

fn server_config(args: &ServeArgs) -> ServerConfig {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsConfig {
            listen: args.tls_listen,
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
            require_client_cert: args.tls_require_client_cert,
            external_auth: args.tls_external_auth,
            advertised_port: args.advertised_tls_port,
        }),
        _ => None,
    };
    ServerConfig {
        listen: args.listen,
        advertised_host: args.advertised_host.clone(),
        advertised_port: args.advertised_port,
        anonymous_user: args.anonymous_user.clone(),
        heartbeat: args.heartbeat,
        tls,
        ..ServerConfig::default()
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still stops on the default signal action.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
