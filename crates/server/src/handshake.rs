//! The connection state machine up to Open, without I/O: a frame in, actions out.
//!
//! ```text
//! PeerProperties → SaslHandshake → SaslAuthenticate ─(server sends Tune)→ Tune ─→ Open
//!                                                      └──── Open may come before Tune ┘
//! ```
//! Any other frame, or a step out of order, closes the socket without a reply, as RabbitMQ
//! does. Heartbeats are accepted (and ignored) at every step.

use std::net::IpAddr;

use brook_protocol::{
    Frame, OpenResponse, PeerPropertiesResponse, Properties, ResponseCode,
    SaslAuthenticateResponse, SaslHandshakeResponse, Tune,
};

use brook_auth::{AccessStore, Refused};

use crate::config::ServerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    PeerProperties,
    SaslHandshake,
    SaslAuthenticate,
    /// Authenticated; the server's Tune is out. Open is accepted before the client's Tune.
    Tune,
    Open,
}

/// What the connection must do with a handshake frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Send(Frame),
    /// Send this failure after the configured delay, then close the socket.
    FailAndClose(Frame, bool),
    /// Close the socket without a reply.
    Drop(&'static str),
    /// The client's Tune: negotiated frame max (0 = none) and heartbeat seconds.
    Tuned {
        frame_max: u32,
        heartbeat: u32,
    },
    /// Open succeeded (its response was emitted just before).
    Opened,
}

/// Handshake state for one connection.
#[derive(Debug)]
pub(crate) struct Handshake {
    stage: Stage,
    pub client_properties: Properties,
    pub user: Option<String>,
    pub mechanism: Option<String>,
    pub vhost: String,
    peer: IpAddr,
    pub advertised_host: String,
    advertised_port: u16,
    /// Common name of the verified TLS client certificate (SASL EXTERNAL).
    pub identity: Option<String>,
}

impl Handshake {
    pub(crate) fn new(
        peer: IpAddr,
        advertised_host: String,
        advertised_port: u16,
        identity: Option<String>,
    ) -> Self {
        Self {
            advertised_host,
            identity,
            stage: Stage::PeerProperties,
            client_properties: Vec::new(),
            user: None,
            mechanism: None,
            vhost: String::new(),
            peer,
            advertised_port,
        }
    }

    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        self.stage == Stage::Open
    }

    pub(crate) fn handle(
        &mut self,
        frame: Frame,
        config: &ServerConfig,
        access: &AccessStore,
    ) -> Vec<Action> {
        match (self.stage, frame) {
            (_, Frame::Heartbeat(_)) => vec![],
            (Stage::PeerProperties, Frame::PeerProperties(p)) => {
                self.client_properties = p.properties;
                self.stage = Stage::SaslHandshake;
                vec![Action::Send(Frame::PeerPropertiesResponse(
                    PeerPropertiesResponse {
                        correlation_id: p.correlation_id,
                        code: ResponseCode::OK,
                        properties: server_properties(config),
                    },
                ))]
            }
            (Stage::SaslHandshake, Frame::SaslHandshake(h)) => {
                self.stage = Stage::SaslAuthenticate;
                vec![Action::Send(Frame::SaslHandshakeResponse(
                    SaslHandshakeResponse {
                        correlation_id: h.correlation_id,
                        code: ResponseCode::OK,
                        mechanisms: mechanisms(config, self.identity.is_some()),
                    },
                ))]
            }
            (Stage::SaslAuthenticate, Frame::SaslAuthenticate(a)) => {
                let reply = |code| {
                    Frame::SaslAuthenticateResponse(SaslAuthenticateResponse {
                        correlation_id: a.correlation_id,
                        code,
                        challenge: None,
                    })
                };
                let identity = self.identity.as_deref();
                let login = Login {
                    mechanism: &a.mechanism,
                    data: a.data.as_deref(),
                    peer: self.peer,
                    identity,
                };
                match authenticate(&login, config, access) {
                    Ok(user) => {
                        self.user = Some(user);
                        self.mechanism = Some(a.mechanism.clone());
                        self.stage = Stage::Tune;
                        vec![
                            Action::Send(reply(ResponseCode::OK)),
                            Action::Send(Frame::Tune(Tune {
                                frame_max: config.frame_max,
                                heartbeat: config.heartbeat,
                            })),
                        ]
                    }
                    // A bad password is answered after a delay; an unsupported mechanism or
                    // malformed data at once.
                    Err(code) => vec![Action::FailAndClose(
                        reply(code),
                        code == ResponseCode::AUTHENTICATION_FAILURE,
                    )],
                }
            }
            (Stage::Tune, Frame::Tune(t) | Frame::TuneResponse(t)) => {
                // 0 means "no limit" on either side; otherwise the smaller value wins. The
                // client's heartbeat is taken as is, as RabbitMQ does.
                let frame_max = match (config.frame_max, t.frame_max) {
                    (0, c) => c,
                    (s, 0) => s,
                    (s, c) => s.min(c),
                };
                vec![Action::Tuned {
                    frame_max,
                    heartbeat: t.heartbeat,
                }]
            }
            (Stage::Tune, Frame::Open(o)) => {
                let user = self.user.as_deref().unwrap_or_default();
                if !access.vhost_access(user, &o.vhost) {
                    return vec![Action::FailAndClose(
                        Frame::OpenResponse(OpenResponse {
                            correlation_id: o.correlation_id,
                            code: ResponseCode::VIRTUAL_HOST_ACCESS_FAILURE,
                            properties: None,
                        }),
                        true,
                    )];
                }
                self.vhost = o.vhost;
                self.stage = Stage::Open;
                vec![
                    Action::Send(Frame::OpenResponse(OpenResponse {
                        correlation_id: o.correlation_id,
                        code: ResponseCode::OK,
                        // Exactly these two: Go's decoder reads values only for these keys.
                        properties: Some(vec![
                            ("advertised_host".into(), self.advertised_host.clone()),
                            ("advertised_port".into(), self.advertised_port.to_string()),
                        ]),
                    })),
                    Action::Opened,
                ]
            }
            (_, _) => vec![Action::Drop(
                "unexpected frame before the connection was open",
            )],
        }
    }
}

fn server_properties(config: &ServerConfig) -> Properties {
    vec![
        ("cluster_name".into(), "brook".into()),
        (
            "copyright".into(),
            "brook contributors; RabbitMQ Streams protocol by Broadcom".into(),
        ),
        (
            "information".into(),
            "brook, a RabbitMQ Streams compatible broker".into(),
        ),
        (
            "platform".into(),
            format!("Rust, brook {}", env!("CARGO_PKG_VERSION")),
        ),
        ("product".into(), "brook".into()),
        ("version".into(), config.protocol_version.clone()),
    ]
}

fn mechanisms(config: &ServerConfig, has_identity: bool) -> Vec<String> {
    let mut m = vec!["PLAIN".to_owned()];
    if config.anonymous_user.is_some() {
        m.push("ANONYMOUS".into());
    }
    if has_identity && config.tls.as_ref().is_some_and(|t| t.external_auth) {
        m.push("EXTERNAL".into());
    }
    m
}

/// A login attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Login<'a> {
    pub mechanism: &'a str,
    pub data: Option<&'a [u8]>,
    pub peer: IpAddr,
    /// Common name of the verified TLS client certificate.
    pub identity: Option<&'a str>,
}

/// Checks credentials; returns the user name or the response code to fail with.
pub(crate) fn authenticate(
    login: &Login<'_>,
    config: &ServerConfig,
    access: &AccessStore,
) -> Result<String, ResponseCode> {
    let user = match login.mechanism {
        "PLAIN" => {
            // `\0 user \0 password`: an empty authzid, exactly two separators.
            let data = login.data.unwrap_or_default();
            let mut parts = data.split(|&b| b == 0);
            let (Some([]), Some(user), Some(pass), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(ResponseCode::SASL_ERROR);
            };
            let (Ok(user), Ok(pass)) = (std::str::from_utf8(user), std::str::from_utf8(pass))
            else {
                return Err(ResponseCode::SASL_ERROR);
            };
            return match access.authenticate(user, pass, login.peer) {
                Ok(u) => Ok(u.name),
                Err(Refused::BadCredentials) => Err(ResponseCode::AUTHENTICATION_FAILURE),
                Err(Refused::NotLoopback) => {
                    Err(ResponseCode::SASL_AUTHENTICATION_FAILURE_LOOPBACK)
                }
            };
        }
        "ANONYMOUS" => config
            .anonymous_user
            .clone()
            .ok_or(ResponseCode::SASL_MECHANISM_NOT_SUPPORTED)?,
        // The user named by the client certificate's CN, which must be a known user (as with
        // RabbitMQ's rabbitmq_auth_mechanism_ssl); no password is involved.
        "EXTERNAL" if config.tls.as_ref().is_some_and(|t| t.external_auth) => {
            let user = login
                .identity
                .ok_or(ResponseCode::SASL_MECHANISM_NOT_SUPPORTED)?;
            if access.user(user).is_none() {
                return Err(ResponseCode::AUTHENTICATION_FAILURE);
            }
            user.to_owned()
        }
        _ => return Err(ResponseCode::SASL_MECHANISM_NOT_SUPPORTED),
    };
    if !access.may_connect_from(&user, login.peer) {
        return Err(ResponseCode::SASL_AUTHENTICATION_FAILURE_LOOPBACK);
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_protocol::{Heartbeat, Open, PeerProperties, SaslAuthenticate, SaslHandshake};
    use std::net::Ipv4Addr;

    fn local() -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    fn plain(user: &str, pass: &str) -> Frame {
        Frame::SaslAuthenticate(SaslAuthenticate {
            correlation_id: 3,
            mechanism: "PLAIN".into(),
            data: Some(format!("\0{user}\0{pass}").into_bytes().into()),
        })
    }

    fn sends(actions: &[Action]) -> Vec<&Frame> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    fn store() -> AccessStore {
        let disk = brook_storage::sim::SimDisk::new(1);
        let storage: brook_storage::SharedStorage = std::sync::Arc::new(disk);
        storage.create_dir_all(std::path::Path::new("/d")).unwrap();
        AccessStore::open(storage, std::path::Path::new("/d"), &Default::default()).unwrap()
    }

    fn to_auth(h: &mut Handshake, config: &ServerConfig, access: &AccessStore) {
        h.handle(
            Frame::PeerProperties(PeerProperties {
                correlation_id: 1,
                properties: vec![],
            }),
            config,
            access,
        );
        h.handle(
            Frame::SaslHandshake(SaslHandshake { correlation_id: 2 }),
            config,
            access,
        );
    }

    #[test]
    fn happy_path_with_open_before_tune() {
        let config = ServerConfig::default();
        let access = store();
        let mut h = Handshake::new(local(), "localhost".into(), 5552, None);
        to_auth(&mut h, &config, &access);
        let a = h.handle(plain("guest", "guest"), &config, &access);
        let sent = sends(&a);
        assert!(matches!(sent[0], Frame::SaslAuthenticateResponse(r) if r.code.is_ok()));
        assert!(matches!(sent[1], Frame::Tune(t) if t.frame_max == 1_048_576 && t.heartbeat == 60));
        assert_eq!(
            h.handle(Frame::Heartbeat(Heartbeat {}), &config, &access),
            vec![]
        );
        let a = h.handle(
            Frame::Open(Open {
                correlation_id: 4,
                vhost: "/".into(),
            }),
            &config,
            &access,
        );
        assert_eq!(a.last(), Some(&Action::Opened));
        assert!(h.is_open());
    }

    #[test]
    fn tune_negotiation() {
        let config = ServerConfig::default();
        let access = store();
        let mut h = Handshake::new(local(), "localhost".into(), 5552, None);
        to_auth(&mut h, &config, &access);
        h.handle(plain("guest", "guest"), &config, &access);
        let a = h.handle(
            Frame::TuneResponse(Tune {
                frame_max: 0,
                heartbeat: 5,
            }),
            &config,
            &access,
        );
        assert_eq!(
            a,
            vec![Action::Tuned {
                frame_max: 1_048_576,
                heartbeat: 5
            }]
        );
    }

    #[test]
    fn failures() {
        let config = ServerConfig::default();
        let access = store();
        let mut h = Handshake::new(local(), "localhost".into(), 5552, None);
        to_auth(&mut h, &config, &access);
        let a = h.handle(plain("guest", "nope"), &config, &access);
        assert!(
            matches!(&a[0], Action::FailAndClose(Frame::SaslAuthenticateResponse(r), true)
            if r.code == ResponseCode::AUTHENTICATION_FAILURE)
        );

        let mut h = Handshake::new(local(), "localhost".into(), 5552, None);
        to_auth(&mut h, &config, &access);
        let a = h.handle(
            Frame::SaslAuthenticate(SaslAuthenticate {
                correlation_id: 3,
                mechanism: "EXTERNAL".into(),
                data: None,
            }),
            &config,
            &access,
        );
        assert!(
            matches!(&a[0], Action::FailAndClose(Frame::SaslAuthenticateResponse(r), false)
            if r.code == ResponseCode::SASL_MECHANISM_NOT_SUPPORTED)
        );

        // guest from a remote address.
        let mut h = Handshake::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            "localhost".into(),
            5552,
            None,
        );
        to_auth(&mut h, &config, &access);
        let a = h.handle(plain("guest", "guest"), &config, &access);
        assert!(
            matches!(&a[0], Action::FailAndClose(Frame::SaslAuthenticateResponse(r), false)
            if r.code == ResponseCode::SASL_AUTHENTICATION_FAILURE_LOOPBACK)
        );

        // Malformed PLAIN data.
        let login = Login {
            mechanism: "PLAIN",
            data: Some(b"guest\0guest"),
            peer: local(),
            identity: None,
        };
        assert_eq!(
            authenticate(&login, &config, &access),
            Err(ResponseCode::SASL_ERROR)
        );
        // Out of order: SaslAuthenticate first.
        let mut h = Handshake::new(local(), "localhost".into(), 5552, None);
        assert!(matches!(
            h.handle(plain("guest", "guest"), &config, &access)[0],
            Action::Drop(_)
        ));
    }
}
