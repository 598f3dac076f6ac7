//! Server settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A user that can log in with SASL PLAIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password: String,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Host clients are told to connect to (Open response, Metadata). Must resolve for them.
    pub advertised_host: String,
    /// Port clients are told to connect to; the listener's port when `None`.
    pub advertised_port: Option<u16>,
    pub users: Vec<User>,
    /// Users allowed from loopback addresses only (RabbitMQ: `guest`).
    pub loopback_users: Vec<String>,
    /// When set, SASL ANONYMOUS is offered and logs in as this user.
    pub anonymous_user: Option<String>,
    /// Proposed in Tune; the smaller of this and the client's value applies (0 = no limit).
    pub frame_max: u32,
    /// Proposed heartbeat interval in seconds; the client's answer applies.
    pub heartbeat: u32,
    /// Failed logins and vhost refusals are answered after this delay (slows brute force).
    pub auth_failure_delay: Duration,
    /// Each step before Open must arrive within this time.
    pub negotiation_timeout: Duration,
    /// After a server-initiated Close, how long to wait for the client's answer.
    pub close_timeout: Duration,
    /// How long a client may take to answer a ConsumerUpdate before it is disconnected.
    pub request_timeout: Duration,
    /// The `version` announced in PeerProperties. Clients enable features by it (≥ 3.13 for
    /// filtering, super streams, Deliver v2), so it names the RabbitMQ release whose protocol
    /// brook implements, not brook's own version.
    pub protocol_version: String,
    /// The TLS listener, if any.
    pub tls: Option<TlsConfig>,
    /// The management HTTP API listener, if any.
    pub http_listen: Option<SocketAddr>,
}

/// The TLS stream listener (RabbitMQ's `stream.listeners.ssl`).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Default `0.0.0.0:5551`.
    pub listen: SocketAddr,
    /// PEM certificate chain and private key of the server.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM CA certificates to verify client certificates with. When set, clients are asked for
    /// a certificate; one that does not verify is refused.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a certificate (RabbitMQ's `fail_if_no_peer_cert`).
    pub require_client_cert: bool,
    /// Offer SASL EXTERNAL: the client certificate's CN names the user.
    pub external_auth: bool,
    /// Port advertised on TLS connections; the TLS listener's port when `None`.
    pub advertised_port: Option<u16>,
}

impl ServerConfig {
    /// Whether `user` exists with this password.
    pub(crate) fn password_ok(&self, user: &str, password: &str) -> bool {
        self.users
            .iter()
            .any(|u| u.name == user && u.password == password)
    }

    /// Whether `user` may log in from `peer` (RabbitMQ's loopback_users).
    pub(crate) fn may_connect_from(&self, user: &str, peer: std::net::IpAddr) -> bool {
        peer.is_loopback() || !self.loopback_users.iter().any(|u| u == user)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 5552)),
            advertised_host: "localhost".into(),
            advertised_port: None,
            users: vec![User {
                name: "guest".into(),
                password: "guest".into(),
            }],
            loopback_users: vec!["guest".into()],
            anonymous_user: None,
            frame_max: 1_048_576,
            heartbeat: 60,
            auth_failure_delay: Duration::from_secs(3),
            negotiation_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            protocol_version: "4.2.0".into(),
            tls: None,
            http_listen: None,
        }
    }
}
