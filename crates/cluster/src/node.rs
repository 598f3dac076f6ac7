//! A node of the metadata group: starts openraft on the node's files, serves the cluster port,
//! forms the cluster from the configured peers, and proposes commands wherever the leader is.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_storage::SharedStorage;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use tokio::net::TcpListener;
use tokio::sync::watch;

use brook_auth::AccessStore;
use brook_broker::Broker;

use crate::access::AccessReplicator;
use crate::auth::ClusterKey;
use crate::hooks::Hooks;
use crate::log_store::{LogOpenError, LogStore};
use crate::metadata::{Applied, Command, Metadata, MetadataError, NodeId, NodeInfo, StreamKey};
use crate::network::{CALL_TIMEOUT, Network, Peer, PeerStatus, ProposeError, Reply, Request};
use crate::raft::{Raft, Response};
use crate::state_machine::StateMachine;
use crate::streams::Feeds;

/// How long a proposal may wait for a majority.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a starting node listens for a leader before it may call an election itself.
/// A leader retries an unreachable member only every 500 ms (openraft's backoff), so a
/// restarted node hears nothing for longer than an election timeout; without the grace it
/// would call an election and depose a healthy leader (openraft 0.9 has no pre-vote).
const ELECTION_GRACE: Duration = Duration::from_millis(1500);

/// How a node joins the metadata group.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    /// The cluster port this node listens on.
    pub listen: SocketAddr,
    /// Every member's cluster address, this node's included (as peers reach it).
    pub members: BTreeMap<NodeId, String>,
    /// Where the Raft log, vote and snapshot live (`<data-dir>/cluster`).
    pub dir: PathBuf,
    /// What this node announces to the others.
    pub info: NodeInfo,
    /// The secret every connection on the cluster port proves (`auth.rs`).
    pub key: ClusterKey,
    /// Join a running cluster through `members` instead of forming one (`membership.rs`).
    pub join: bool,
    pub storage: SharedStorage,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Log(#[from] LogOpenError),
    #[error("cluster snapshot: {0}")]
    Snapshot(std::io::Error),
    #[error("cluster listener {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("openraft: {0}")]
    Raft(String),
    #[error("node {0} is not among the cluster's members")]
    NotAMember(NodeId),
}

/// A running node of the metadata group.
pub struct Cluster {
    id: NodeId,
    raft: Raft,
    /// openraft's state machine, shared: users are installed from it (`access.rs`).
    state: StateMachine,
    metadata: watch::Receiver<Arc<Metadata>>,
    members: BTreeMap<NodeId, String>,
    key: ClusterKey,
    started: Instant,
    local_addr: SocketAddr,
    /// The cluster port's accept loop, stopped with the node.
    server: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The broker whose streams this node hosts ([`Cluster::attach`]).
    broker: std::sync::OnceLock<Broker>,
    feeds: tokio::sync::Mutex<Feeds>,
    /// When each stream's leader (of which epoch) last reached this replica.
    contacts: std::sync::Mutex<std::collections::HashMap<StreamKey, (u64, Instant)>>,
    /// Epochs whose leader this replica reported lost: it takes and acks nothing more from
    /// them (`failover.rs`).
    fenced: std::sync::Mutex<std::collections::HashMap<StreamKey, u64>>,
    /// Set by [`Cluster::shutdown`]: connections still open close at their next request
    /// instead of answering for a stopped node, so peers reconnect to whatever runs next.
    stopped: std::sync::atomic::AtomicBool,
    /// Members that did not answer the last status round (`Cluster::watch_peers`).
    unreachable: std::sync::Mutex<std::collections::BTreeSet<NodeId>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

/// openraft's timings. Elections wait 0.5–1 s of silence: long enough that a loaded 2-core CI
/// machine does not depose a healthy leader, short enough that failover takes about a second.
fn raft_config() -> Result<Arc<openraft::Config>, StartError> {
    let config = openraft::Config {
        cluster_name: "brook".into(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| StartError::Raft(e.to_string()))
}

/// Turns elections off until this node hears a leader or [`ELECTION_GRACE`] passes.
fn listen_before_electing(raft: &Raft) {
    raft.runtime_config().elect(false);
    let listening = raft.clone();
    tokio::spawn(async move {
        let leader = listening
            .wait(Some(ELECTION_GRACE))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await;
        tracing::debug!(heard_a_leader = leader.is_ok(), "elections enabled");
        listening.runtime_config().elect(true);
    });
}

impl Cluster {
    /// Opens the node's Raft files, starts serving the cluster port and forms (or rejoins) the
    /// cluster. Returns once the node runs; the cluster may still be electing.
    pub async fn start(config: ClusterConfig) -> Result<Arc<Cluster>, StartError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: config.listen,
                    source,
                })?;
        Cluster::start_on(config, listener).await
    }

    /// [`Cluster::start`] on a bound listener (`config.listen` is then only informative).
    pub async fn start_on(
        config: ClusterConfig,
        listener: TcpListener,
    ) -> Result<Arc<Cluster>, StartError> {
        if !config.members.contains_key(&config.node_id) {
            return Err(StartError::NotAMember(config.node_id));
        }
        let log = LogStore::open(config.storage.clone(), &config.dir)?;
        let state = StateMachine::open(config.storage.clone(), &config.dir)
            .map_err(StartError::Snapshot)?;
        let metadata = state.subscribe();
        let network = Network::new(config.members.clone(), config.key.clone());
        let raft = Raft::new(config.node_id, raft_config()?, network, log, state.clone())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        listen_before_electing(&raft);
        let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        let cluster = Arc::new(Cluster {
            id: config.node_id,
            raft: raft.clone(),
            state,
            metadata,
            members: config.members.clone(),
            key: config.key.clone(),
            started: Instant::now(),
            local_addr,
            server: std::sync::Mutex::new(None),
            broker: std::sync::OnceLock::new(),
            feeds: Default::default(),
            contacts: Default::default(),
            fenced: Default::default(),
            stopped: Default::default(),
            unreachable: Default::default(),
        });
        let server = tokio::spawn(crate::server::serve(listener, cluster.clone()));
        *cluster.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
        if config.join {
            let joining = cluster.clone();
            tokio::spawn(async move {
                joining.join().await;
                joining.announce(config.info).await;
            });
        } else {
            let forming = cluster.clone();
            tokio::spawn(async move {
                if let Err(e) = forming.form().await {
                    tracing::error!("forming the cluster: {e}");
                }
                forming.announce(config.info).await;
            });
        }
        Ok(cluster)
    }

    /// Every member starts with the same membership; openraft accepts that on each of them
    /// and refuses it, harmlessly, once the cluster has formed. Members are named by id
    /// only: each node reaches the others at the addresses its own `--peer` flags give
    /// (through a proxy, a NAT, another interface), so the membership must not carry them.
    ///
    /// openraft's `initialize` starts an election at once. The lowest member calls it unless
    /// a leader reaches it within the grace; the others wait three times as long, so that a
    /// member started a little later does not start an election of its own and depose the
    /// leader the others just elected. A node with a log has formed already.
    async fn form(&self) -> Result<(), StartError> {
        let lowest = self.members.keys().next() == Some(&self.id);
        let wait = if lowest {
            ELECTION_GRACE
        } else {
            ELECTION_GRACE * 3
        };
        let formed = self
            .raft
            .wait(Some(wait))
            .metrics(
                |m| m.current_leader.is_some() || m.last_log_index.is_some(),
                "a formed cluster",
            )
            .await;
        if formed.is_ok() {
            return Ok(());
        }
        let members: BTreeMap<NodeId, BasicNode> = self
            .members
            .keys()
            .map(|id| (*id, BasicNode::new(format!("node-{id}"))))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(StartError::Raft(e.to_string())),
        }
    }

    /// Tells the cluster this node's name and stream address, once a leader is there to hear
    /// it.
    async fn announce(self: Arc<Self>, info: NodeInfo) {
        let command = Command::AddNode { id: self.id, info };
        loop {
            match self.propose(command.clone()).await {
                Ok(Ok(_) | Err(MetadataError::NodeExists(_))) => return,
                Ok(Err(e)) => {
                    tracing::error!("announcing node {}: {e}", self.id);
                    return;
                }
                Err(e) => tracing::debug!("announcing node {}: {e}; retrying", self.id),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Makes `broker` this node's: streams are created, placed and replicated through the
    /// cluster from now on.
    pub fn attach(self: &Arc<Self>, broker: Broker) {
        if self.broker.set(broker.clone()).is_err() {
            return;
        }
        broker.set_cluster(Arc::new(Hooks::new(self.clone())));
        let seed: Vec<_> = broker.super_stream_definitions().into_iter().collect();
        self.state.set_broker(broker.clone());
        tokio::spawn(self.clone().seed_super_streams(seed));
        tokio::spawn(crate::streams::watch(self.clone()));
        tokio::spawn(crate::failover::watch(self.clone()));
        tokio::spawn(self.clone().watch_peers());
    }

    /// Proposes this node's super streams as the cluster's, unless it has some already; the
    /// first node's win, as for users.
    async fn seed_super_streams(
        self: Arc<Self>,
        seed: Vec<((String, String), brook_broker::SuperStream)>,
    ) {
        while !self.metadata().super_streams_seeded && !self.is_stopped() {
            match self.propose(Command::SeedSuperStreams(seed.clone())).await {
                Ok(_) => return,
                Err(e) => tracing::debug!("seeding the cluster's super streams: {e}; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Makes `store` a copy of the cluster's users, vhosts and permissions: its changes go
    /// through the metadata group, and it follows what the group applies (`access.rs`).
    pub fn attach_access(self: &Arc<Self>, store: Arc<AccessStore>) {
        let replicator = Arc::new(AccessReplicator {
            cluster: Arc::downgrade(self),
            seed: store.export(),
        });
        self.state.set_access_store(store.clone());
        store.replicate_through(replicator.clone());
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Err(e) = replicator.seed().await {
                if node.upgrade().is_none_or(|n| n.is_stopped()) {
                    return;
                }
                tracing::debug!("seeding the cluster's users: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// Asks every member for its status once a second, so that `Metadata` answers leave out
    /// replicas that are down (RabbitMQ lists running members only): a client sent to a dead
    /// replica fails to connect.
    async fn watch_peers(self: Arc<Self>) {
        loop {
            let down = self
                .statuses()
                .await
                .into_iter()
                .filter_map(|(id, status)| status.is_none().then_some(id))
                .collect();
            *self.unreachable.lock().unwrap_or_else(|p| p.into_inner()) = down;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Whether `node` answered the last status round.
    pub(crate) fn is_reachable(&self, node: NodeId) -> bool {
        let unreachable = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        !unreachable.contains(&node)
    }

    fn contacts(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<StreamKey, (u64, Instant)>> {
        self.contacts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This replica takes nothing more from the leader of `epoch` (it reports it lost).
    pub(crate) fn fence(&self, key: &StreamKey, epoch: u64) {
        let mut fenced = self.fenced.lock().unwrap_or_else(|p| p.into_inner());
        let e = fenced.entry(key.clone()).or_default();
        *e = (*e).max(epoch);
    }

    /// Whether the leader of `epoch` was reported lost here.
    pub(crate) fn is_fenced(&self, key: &StreamKey, epoch: u64) -> bool {
        let fenced = self.fenced.lock().unwrap_or_else(|p| p.into_inner());
        fenced.get(key).is_some_and(|e| *e >= epoch)
    }

    /// The leader of `epoch` reached this replica now.
    pub(crate) fn heard_from_leader(&self, key: &StreamKey, epoch: u64) {
        self.contacts().insert(key.clone(), (epoch, Instant::now()));
    }

    /// How long the leader of `epoch` has been silent (counted from the first question for
    /// an epoch not heard from yet).
    pub(crate) fn silence(&self, key: &StreamKey, epoch: u64) -> Duration {
        let mut contacts = self.contacts();
        let entry = contacts
            .entry(key.clone())
            .or_insert((epoch, Instant::now()));
        if entry.0 != epoch {
            *entry = (epoch, Instant::now());
        }
        entry.1.elapsed()
    }

    pub(crate) fn key(&self) -> &ClusterKey {
        &self.key
    }

    /// A connection to another member's cluster port.
    pub(crate) fn peer(&self, addr: String) -> Peer {
        Peer::new(addr, self.key.clone())
    }

    pub(crate) fn broker(&self) -> Option<&Broker> {
        self.broker.get()
    }

    pub(crate) fn feeds(&self) -> &tokio::sync::Mutex<Feeds> {
        &self.feeds
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The cluster port's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The members given by `--peer` and their cluster addresses (the metadata group's
    /// members are [`Cluster::member_ids`]).
    pub fn members(&self) -> &BTreeMap<NodeId, String> {
        &self.members
    }

    /// The metadata as this node has applied it.
    pub fn metadata(&self) -> Arc<Metadata> {
        self.metadata.borrow().clone()
    }

    /// Every change of the metadata this node applies.
    pub fn watch(&self) -> watch::Receiver<Arc<Metadata>> {
        self.metadata.clone()
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// This node's own view.
    pub fn status(&self) -> PeerStatus {
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        PeerStatus {
            id: self.id,
            role: role.into(),
            term: m.current_term,
            leader: m.current_leader,
            last_applied: m.last_applied.map(|l| l.index),
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Every member's own view, asked over the cluster port; `None` for those that do not
    /// answer within a second.
    pub async fn statuses(&self) -> BTreeMap<NodeId, Option<PeerStatus>> {
        let asks = self.member_ids().into_iter().map(|id| async move {
            if id == self.id {
                return (id, Some(self.status()));
            }
            let Some(addr) = self.addr_of(id) else {
                return (id, None);
            };
            let answer = self
                .peer(addr)
                .call(&Request::Status, Duration::from_secs(1))
                .await;
            match answer {
                Ok(Reply::Status(s)) => (id, Some(s)),
                _ => (id, None),
            }
        });
        futures::future::join_all(asks).await.into_iter().collect()
    }

    /// Every member's copy of a stream, asked over the cluster port (`None` for members
    /// that do not answer within a second or do not host it), as `rabbitmq-streams
    /// stream_status` asks each member's osiris process. Replicas get the metadata's epoch.
    pub async fn stream_status(
        &self,
        key: &StreamKey,
    ) -> Option<BTreeMap<NodeId, Option<brook_broker::MemberStatus>>> {
        let metadata = self.metadata();
        let stream = metadata.streams.get(key)?;
        let asks = stream.members.keys().map(|&node| async move {
            if node == self.id {
                let id = brook_broker::StreamId::from(key);
                return (node, self.broker().and_then(|b| b.member_status(&id)));
            }
            let request = Request::StreamStatus {
                vhost: key.vhost.clone(),
                name: key.name.clone(),
            };
            let answer = match self.addr_of(node) {
                Some(addr) => self.peer(addr).call(&request, Duration::from_secs(1)).await,
                None => return (node, None),
            };
            match answer {
                Ok(Reply::StreamStatus(status)) => (node, status),
                _ => (node, None),
            }
        });
        let mut all: BTreeMap<_, _> = futures::future::join_all(asks).await.into_iter().collect();
        for status in all.values_mut().flatten() {
            status.epoch.get_or_insert(stream.epoch);
        }
        Some(all)
    }

    /// Proposes a command to the metadata leader, wherever it is, and waits until it applies
    /// here too, so that what the caller reads next includes it.
    pub async fn propose(
        &self,
        command: Command,
    ) -> Result<Result<Applied, MetadataError>, ProposeError> {
        // Without a majority a write never commits: give up after a while, and say why.
        let written =
            tokio::time::timeout(PROPOSE_TIMEOUT, self.raft.client_write(command.clone()))
                .await
                .map_err(|_| ProposeError::Raft("no majority answered in time".into()))?;
        let (response, index) = match written {
            Ok(r) => (r.data, r.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = f.leader_id.ok_or(ProposeError::NoLeader)?;
                let addr = self.addr_of(leader).ok_or(ProposeError::NoLeader)?;
                let reply = self
                    .peer(addr)
                    .call(&Request::Propose(command), CALL_TIMEOUT)
                    .await
                    .map_err(|e| ProposeError::Unreachable(leader, e.to_string()))?;
                let Reply::Propose(answer) = reply else {
                    return Err(ProposeError::Raft("unexpected reply".into()));
                };
                let (response, index) = answer?;
                self.raft
                    .wait(Some(CALL_TIMEOUT))
                    .applied_index_at_least(Some(index), "forwarded proposal")
                    .await
                    .map_err(|e| ProposeError::Raft(e.to_string()))?;
                (response, index)
            }
            Err(e) => return Err(ProposeError::Raft(e.to_string())),
        };
        tracing::debug!("metadata command applied at {index}");
        response.ok_or_else(|| ProposeError::Raft("a command without an answer".into()))
    }

    /// Applies a command forwarded by another node; this node must be the leader.
    pub(crate) async fn propose_here(
        &self,
        command: Command,
    ) -> Result<(Response, u64), ProposeError> {
        let written = tokio::time::timeout(PROPOSE_TIMEOUT, self.raft.client_write(command))
            .await
            .map_err(|_| ProposeError::Raft("no majority answered in time".into()))?;
        match written {
            Ok(r) => Ok((r.data, r.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(ProposeError::NoLeader)
            }
            Err(e) => Err(ProposeError::Raft(e.to_string())),
        }
    }

    /// Stops openraft and closes the cluster port (connections already open end with their
    /// next request, which openraft refuses once shut down).
    pub async fn shutdown(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(server) = self.server.lock().unwrap_or_else(|p| p.into_inner()).take() {
            server.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("stopping the metadata group: {e}");
        }
    }
}
