//! The TLS listener, with certificates generated here: the official Rust client over TLS
//! (verified server, client certificate), Metadata advertising the TLS port, a client trusting
//! the wrong CA refused, and SASL EXTERNAL naming the user by the client certificate's CN.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use brook_broker::BrokerConfig;
use brook_protocol::*;
use brook_server::{ServerConfig, TlsConfig};
use bytes::BytesMut;
use common::{TestBroker, test_server_config};
use futures::StreamExt;
use rabbitmq_stream_client::types::{Message, OffsetSpecification};
use rabbitmq_stream_client::{Environment, TlsConfiguration};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A CA, a server certificate for localhost/127.0.0.1 and a client certificate with
    /// CN=`client_cn`, all signed by the CA; plus an unrelated CA.
    fn generate(client_cn: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        let ca = |cn: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, cn);
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
        };
        let root = ca("brook test CA");
        write("ca.pem", root.pem());
        write("other-ca.pem", ca("someone else").pem());
        let leaf = |names: Vec<String>, cn: &str, file: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &root).unwrap();
            write(&format!("{file}.pem"), cert.pem());
            write(&format!("{file}-key.pem"), key.serialize_pem());
        };
        leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            "localhost",
            "server",
        );
        leaf(vec![], client_cn, "client");
        Pki { dir }
    }

    fn tls_config(&self) -> TlsConfig {
        TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: self.path("server.pem"),
            key: self.path("server-key.pem"),
            client_ca: Some(self.path("ca.pem")),
            require_client_cert: false,
            external_auth: true,
            advertised_port: None,
        }
    }
}

async fn start(pki: &Pki, dir: &Path) -> TestBroker {
    let config = ServerConfig {
        tls: Some(pki.tls_config()),
        ..test_server_config()
    };
    TestBroker::start_with(BrokerConfig::new(dir), config).await
}

fn path_str(p: PathBuf) -> String {
    p.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_client_over_tls_with_a_client_certificate() {
    // This test build links both of rustls's providers (ring for brook, aws-lc for the client):
    // the client uses the process default, so pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = Pki::generate("guest");
    let data = tempfile::tempdir().unwrap();
    let broker = start(&pki, data.path()).await;
    let port = broker.tls_addr.unwrap().port();
    let tls = TlsConfiguration::builder()
        .add_root_certificates(path_str(pki.path("ca.pem")))
        .add_client_certificates_keys(
            path_str(pki.path("client.pem")),
            path_str(pki.path("client-key.pem")),
        )
        .build()
        .unwrap();
    let env = Environment::builder()
        .host("localhost")
        .port(port)
        .tls(tls)
        .build()
        .await
        .unwrap();
    env.stream_creator().create("secure").await.unwrap();
    // The producer reconnects to the leader Metadata names: on a TLS connection that is the TLS
    // port, so this only works if Metadata advertises it.
    let producer = env.producer().build("secure").await.unwrap();
    let status = producer
        .send_with_confirm(Message::builder().body("over tls").build())
        .await
        .unwrap();
    assert!(status.confirmed());
    let mut consumer = env
        .consumer()
        .offset(OffsetSpecification::First)
        .build("secure")
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.message().data(), Some(&b"over tls"[..]));

    // Trusting another CA: the handshake fails.
    let wrong = TlsConfiguration::builder()
        .add_root_certificates(path_str(pki.path("other-ca.pem")))
        .build()
        .unwrap();
    assert!(!connects(port, wrong).await);
    // Without a client certificate (optional here) it works too.
    let no_cert = TlsConfiguration::builder()
        .add_root_certificates(path_str(pki.path("ca.pem")))
        .build()
        .unwrap();
    assert!(connects(port, no_cert).await);
}

/// Whether the official client completes a connection over TLS with this configuration.
async fn connects(port: u16, tls: TlsConfiguration) -> bool {
    let env = Environment::builder().host("localhost").port(port).tls(tls);
    env.build().await.is_ok()
}

async fn tls_connect(
    pki: &Pki,
    port: u16,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_file(pki.path("client.pem")).unwrap()],
            PrivateKeyDer::from_pem_file(pki.path("client-key.pem")).unwrap(),
        )
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    frame: Frame,
) -> Frame {
    s.write_all(&frame.to_bytes()).await.unwrap();
    let mut buf = BytesMut::new();
    loop {
        if let Some(size) = frame_size(&buf)
            && buf.len() >= 4 + size as usize
        {
            return Frame::decode(buf.split_to(4 + size as usize).freeze().slice(4..)).unwrap();
        }
        assert!(s.read_buf(&mut buf).await.unwrap() > 0, "connection closed");
    }
}

async fn external_login<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
) -> SaslAuthenticateResponse {
    exchange(
        s,
        Frame::PeerProperties(PeerProperties {
            correlation_id: 1,
            properties: vec![],
        }),
    )
    .await;
    let Frame::SaslHandshakeResponse(h) =
        exchange(s, Frame::SaslHandshake(SaslHandshake { correlation_id: 2 })).await
    else {
        panic!()
    };
    assert!(
        h.mechanisms.contains(&"EXTERNAL".to_string()),
        "{:?}",
        h.mechanisms
    );
    let r = exchange(
        s,
        Frame::SaslAuthenticate(SaslAuthenticate {
            correlation_id: 3,
            mechanism: "EXTERNAL".into(),
            data: None,
        }),
    )
    .await;
    let Frame::SaslAuthenticateResponse(r) = r else {
        panic!("{r:?}")
    };
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_external_maps_the_certificate_cn_to_a_user() {
    let data = tempfile::tempdir().unwrap();
    let pki = Pki::generate("guest");
    let broker = start(&pki, data.path()).await;
    let mut s = tls_connect(&pki, broker.tls_addr.unwrap().port()).await;
    assert_eq!(external_login(&mut s).await.code, ResponseCode::OK);

    // A certificate whose CN is not a user is refused.
    let data = tempfile::tempdir().unwrap();
    let pki = Pki::generate("mallory");
    let broker = start(&pki, data.path()).await;
    let mut s = tls_connect(&pki, broker.tls_addr.unwrap().port()).await;
    assert_eq!(
        external_login(&mut s).await.code,
        ResponseCode::AUTHENTICATION_FAILURE
    );

    // Made a certificate-only user (no password), mallory logs in with the certificate, and
    // with no password at all.
    let certificate_only = brook_auth::User {
        name: "mallory".into(),
        password_hash: String::new(),
        hashing_algorithm: brook_auth::password::SHA256.into(),
        tags: vec![],
        limits: Default::default(),
    };
    broker.access.put_user(certificate_only).await.unwrap();
    let grant = brook_auth::Permission {
        user: "mallory".into(),
        vhost: "/".into(),
        configure: ".*".into(),
        write: ".*".into(),
        read: ".*".into(),
    };
    broker.access.set_permission(grant).await.unwrap();
    let mut s = tls_connect(&pki, broker.tls_addr.unwrap().port()).await;
    assert_eq!(external_login(&mut s).await.code, ResponseCode::OK);
    for password in ["", "guess"] {
        let refused = common::raw::Raw::open_as(broker.addr, "mallory", password, "/", &[]).await;
        assert_eq!(refused.err(), Some(ResponseCode::AUTHENTICATION_FAILURE));
    }

    // EXTERNAL is not offered on the plain port.
    let mut plain = common::raw::Raw::connect(broker.addr).await;
    plain
        .request(Frame::PeerProperties(PeerProperties {
            correlation_id: 1,
            properties: vec![],
        }))
        .await;
    let Frame::SaslHandshakeResponse(h) = plain
        .request(Frame::SaslHandshake(SaslHandshake { correlation_id: 2 }))
        .await
    else {
        panic!()
    };
    assert_eq!(h.mechanisms, vec!["PLAIN".to_string()]);
}
