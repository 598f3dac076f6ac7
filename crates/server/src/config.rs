//! Server settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Host clients are told to connect to (Open response, Metadata). Must resolve for them.
    /// `None`: the local address each client connected to, which is right behind a port
    /// forward or in a container without any setting.
    pub advertised_host: Option<String>,
    /// Port clients are told to connect to; the listener's port when `None`.
    pub advertised_port: Option<u16>,
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

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 5552)),
            advertised_host: None,
            advertised_port: None,
            anonymous_user: None,
            frame_max: 1_048_576,
            heartbeat: 60,
            auth_failure_delay: Duration::from_secs(3),
            negotiation_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            protocol_version: "4.2.0".into(),
            tls: None,
        }
    }
}
