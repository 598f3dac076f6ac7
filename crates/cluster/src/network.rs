//! The cluster port's wire: requests and replies as frames of a 4-byte big-endian length and a
//! JSON body, one request at a time per connection, and the client side openraft calls.
//!
//! JSON because every message is openraft's own serde type and metadata is small and rare;
//! stream data will not travel here (docs/CLUSTERING.md: a replication link of its own).

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

use crate::auth::ClusterKey;
use crate::membership::MembershipChange;
use crate::metadata::{Command, NodeId};
use crate::raft::{Response, TypeConfig};

/// A frame larger than this is refused: snapshots travel in chunks of at most 3 MiB.
pub(crate) const MAX_FRAME: u32 = 16 << 20;
/// How long a proposal or status call may take before the peer counts as unreachable.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A command for the metadata leader, forwarded by another node.
    Propose(Command),
    /// What the node knows of itself, for `/api/nodes` and `cluster_status`.
    Status,
    /// A change of the metadata group's voters, for its leader (`membership.rs`).
    Membership(MembershipChange),
    /// This node's copy of a stream (`stream_status`).
    StreamStatus {
        vhost: String,
        name: String,
    },
    /// A leader opens a replication link for one stream (`replication.rs`); the connection
    /// carries binary frames after the reply.
    Replicate {
        vhost: String,
        name: String,
        epoch: u64,
        leader: NodeId,
    },
    /// A leader has a replica's log changed before it feeds it: cut back where the leader's
    /// log differs, or started again at the leader's first chunk (then the leader opens a
    /// link again).
    Reshape {
        vhost: String,
        name: String,
        epoch: u64,
        leader: NodeId,
        change: brook_broker::Reshape,
    },
    /// A consumer on a replica stored an offset; the leader writes it.
    StoreOffset {
        vhost: String,
        name: String,
        reference: String,
        offset: u64,
    },
}

/// Why a proposal did not apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    #[error("no metadata leader is known (is a majority of the cluster up?)")]
    NoLeader,
    #[error("metadata leader {0} cannot be reached: {1}")]
    Unreachable(NodeId, String),
    #[error("the metadata group failed: {0}")]
    Raft(String),
}

/// A node's own view, as it answers [`Request::Status`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_applied: Option<u64>,
    pub uptime_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// The answer and the log index it applied at.
    Propose(Result<(Response, u64), ProposeError>),
    Status(PeerStatus),
    Membership(Result<(), ProposeError>),
    StreamStatus(Option<brook_broker::MemberStatus>),
    /// The replica's log end and last chunk (id, epoch), or why it refuses the leader.
    Replicate(Result<(u64, Option<(u64, u64)>), String>),
    Done,
}

pub(crate) async fn write_frame<T: Serialize>(
    stream: &mut BufStream<TcpStream>,
    message: &T,
) -> io::Result<()> {
    let body = serde_json::to_vec(message).map_err(io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| io::Error::other("frame too large"))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(&body).await?;
    stream.flush().await
}

/// The next frame; `None` when the peer closed between frames.
pub(crate) async fn read_frame<T: DeserializeOwned>(
    stream: &mut BufStream<TcpStream>,
) -> io::Result<Option<T>> {
    let mut len = [0; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut body = vec![0; len as usize];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A connection to one peer, opened on first use and again after any failure.
#[derive(Debug)]
pub struct Peer {
    addr: String,
    key: ClusterKey,
    stream: Option<BufStream<TcpStream>>,
}

/// Connects to a peer's cluster port and proves this node knows the cluster's secret.
pub(crate) async fn connect(addr: &str, key: &ClusterKey) -> io::Result<BufStream<TcpStream>> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut stream = BufStream::new(s);
    key.client(&mut stream).await?;
    Ok(stream)
}

impl Peer {
    pub(crate) fn new(addr: String, key: ClusterKey) -> Peer {
        Peer {
            addr,
            key,
            stream: None,
        }
    }

    /// Sends a request and waits for its reply, for at most `timeout`.
    pub(crate) async fn call(&mut self, request: &Request, timeout: Duration) -> io::Result<Reply> {
        let result = tokio::time::timeout(timeout, self.exchange(request)).await;
        let result = result.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
        if result.is_err() {
            // Its reply may still come: the connection cannot be reused.
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, request: &Request) -> io::Result<Reply> {
        let stream = match &mut self.stream {
            Some(s) => s,
            None => self.stream.insert(connect(&self.addr, &self.key).await?),
        };
        write_frame(stream, request).await?;
        read_frame(stream)
            .await?
            .ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
    }
}

/// openraft's way to reach peers: a [`Peer`] per target, at the address this node's
/// configuration gives for it.
#[derive(Debug, Clone, Default)]
pub struct Network {
    members: Arc<BTreeMap<NodeId, String>>,
    key: ClusterKey,
}

impl Network {
    pub(crate) fn new(members: BTreeMap<NodeId, String>, key: ClusterKey) -> Network {
        Network {
            members: Arc::new(members),
            key,
        }
    }
}

/// A peer as openraft's replication and election tasks use it.
#[derive(Debug)]
pub struct RaftPeer {
    target: NodeId,
    peer: Peer,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> RaftPeer {
        let addr = self.members.get(&target).unwrap_or(&node.addr);
        RaftPeer {
            target,
            peer: Peer::new(addr.clone(), self.key.clone()),
        }
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl RaftPeer {
    async fn send(&mut self, request: Request, option: &RPCOption) -> Result<Reply, Unreachable> {
        self.peer
            .call(&request, option.soft_ttl())
            .await
            .map_err(|e| Unreachable::new(&e))
    }

    fn remote<T, E: std::error::Error>(
        &self,
        result: Result<T, RaftError<NodeId, E>>,
    ) -> RpcResult<T, E> {
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn unexpected<E: std::error::Error>(
    what: &str,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    RPCError::Network(NetworkError::new(&io::Error::other(format!(
        "unexpected reply to {what}"
    ))))
}

impl RaftNetwork<TypeConfig> for RaftPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self.send(Request::Append(rpc), &option).await? {
            Reply::Append(r) => self.remote(r),
            _ => Err(unexpected("append")),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.send(Request::Snapshot(rpc), &option).await? {
            Reply::Snapshot(r) => self.remote(r),
            _ => Err(unexpected("install_snapshot")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.send(Request::Vote(rpc), &option).await? {
            Reply::Vote(r) => self.remote(r),
            _ => Err(unexpected("vote")),
        }
    }
}
