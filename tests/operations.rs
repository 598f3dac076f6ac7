//! Running brook for a team: `brook ctl` against a real brook (the binary, over HTTP), and
//! `brook serve --config` under environment variables and flags.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use brook_protocol::*;
use common::child::Brook;
use common::raw::Raw;
use serde_json::{Value, json};

/// `brook ctl ARGS` against `url`: (exit code, stdout). `stdin` is fed to it.
fn ctl(url: &str, args: &[&str], stdin: &str) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_brook"))
        .arg("ctl")
        .args(["--url", url])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    (out.status.code().unwrap_or(-1), stdout)
}

/// `brook ctl ARGS --format json`, which must succeed.
fn ctl_json(url: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let (code, out) = ctl(url, &all, "");
    assert_eq!(code, 0, "brook ctl {args:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn ok(url: &str, args: &[&str]) -> String {
    let (code, out) = ctl(url, args, "");
    assert_eq!(code, 0, "brook ctl {args:?}: {out}");
    out
}

/// Subscribes; a single active consumer's activation is answered (from the start).
async fn subscribe(c: &mut Raw, id: u8, stream: &str, props: &[(&str, &str)]) {
    c.send(Frame::Subscribe(Subscribe {
        correlation_id: 50 + u32::from(id),
        subscription_id: id,
        stream: stream.into(),
        offset: OffsetSpec::First,
        credit: 5,
        properties: Some(
            props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    }))
    .await;
    let (mut subscribed, mut activated) = (false, false);
    while !(subscribed && activated) {
        match c.recv().await.unwrap() {
            Frame::SubscribeResponse(r) => {
                assert!(r.code.is_ok());
                subscribed = true;
            }
            Frame::ConsumerUpdate(u) => {
                c.send(Frame::ConsumerUpdateResponse(ConsumerUpdateResponse {
                    correlation_id: u.correlation_id,
                    code: ResponseCode::OK,
                    offset: OffsetSpec::First,
                }))
                .await;
                activated = true;
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_commands_against_a_real_brook() {
    let dir = tempfile::tempdir().unwrap();
    let brook = Brook::start(dir.path(), &[]);
    let url = format!("http://{}", brook.http_addr());
    let url = url.as_str();

    // Users, vhosts, permissions; the password from stdin stays out of argv.
    assert_eq!(ctl(url, &["add_user", "app"], "s3cret\n").0, 0);
    assert_eq!(ctl(url, &["add_user", "app"], "again\n").0, 70, "exists");
    ok(url, &["set_user_tags", "app", "management"]);
    ok(url, &["add_vhost", "prod", "--description", "production"]);
    ok(
        url,
        &[
            "set_permissions",
            "-p",
            "prod",
            "app",
            "^app-",
            "^app-",
            ".*",
        ],
    );
    let users = ctl_json(url, &["list_users"]);
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["user"] == "app" && u["tags"] == serde_json::json!(["management"]))
    );
    let perms = ctl_json(url, &["list_permissions", "-p", "prod"]);
    assert!(
        perms
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["user"] == "app" && p["configure"] == "^app-")
    );
    assert_eq!(ctl(url, &["change_password", "nobody", "x"], "").0, 67);

    // A super stream, created as rabbitmq-streams does, is one the protocol routes to.
    ok(
        url,
        &[
            "add_super_stream",
            "-p",
            "prod",
            "inv",
            "--partitions",
            "2",
            "--max-age",
            "PT1H",
        ],
    );
    let mut app = Raw::open_as(
        brook.addr,
        "app",
        "s3cret",
        "prod",
        &[("connection_name", "app-conn")],
    )
    .await
    .unwrap();
    let r = app
        .request(Frame::Partitions(Partitions {
            correlation_id: 1,
            super_stream: "inv".into(),
        }))
        .await;
    let Frame::PartitionsResponse(p) = r else {
        panic!("{r:?}")
    };
    assert_eq!(p.streams, vec!["inv-0", "inv-1"]);

    // A publisher, a single active consumer group and a stored offset, as the CLI lists them.
    assert_eq!(app.create("app-s", &[]).await, ResponseCode::OK);
    let r = app
        .request(Frame::DeclarePublisher(DeclarePublisher {
            correlation_id: 2,
            publisher_id: 3,
            reference: "app-writer".into(),
            stream: "app-s".into(),
        }))
        .await;
    assert!(matches!(r, Frame::DeclarePublisherResponse(ref d) if d.code.is_ok()));
    let mut b = PublishBuilder::new(3);
    for id in 1..=10u64 {
        b.message(id, b"m");
    }
    app.send(Frame::Publish(b.build())).await;
    assert!(matches!(app.recv().await, Some(Frame::PublishConfirm(_))));
    let mut reader = Raw::open_as(
        brook.addr,
        "app",
        "s3cret",
        "prod",
        &[("connection_name", "app-reader")],
    )
    .await
    .unwrap();
    subscribe(
        &mut reader,
        7,
        "app-s",
        &[("name", "grp"), ("single-active-consumer", "true")],
    )
    .await;
    reader
        .send(Frame::StoreOffset(StoreOffset {
            reference: "grp".into(),
            stream: "app-s".into(),
            offset: 4,
        }))
        .await;

    // tail: the stored messages, one per line (raw bodies here: not AMQP 1.0).
    let (code, out) = ctl(
        url,
        &[
            "tail", "-p", "prod", "app-s", "--from", "first", "--count", "3",
        ],
        "",
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("0  ") && lines[0].ends_with("  m"),
        "{out}"
    );
    assert!(lines[2].starts_with("2  "), "{out}");

    let publishers = ctl_json(url, &["list_stream_publishers", "-p", "prod"]);
    assert_eq!(publishers[0]["reference"], "app-writer");
    assert_eq!(publishers[0]["messages_published"], 10);
    assert_eq!(publishers[0]["messages_confirmed"], 10);
    let conns = ctl_json(
        url,
        &[
            "list_stream_connections",
            "conn_name",
            "user",
            "vhost",
            "client_properties.connection_name",
        ],
    );
    let names: Vec<&str> = conns
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["client_properties.connection_name"].as_str())
        .collect();
    assert!(
        names.contains(&"app-conn") && names.contains(&"app-reader"),
        "{conns}"
    );
    let group = ctl_json(
        url,
        &[
            "list_stream_group_consumers",
            "-p",
            "prod",
            "--stream",
            "app-s",
            "--reference",
            "grp",
        ],
    );
    assert_eq!(group[0]["subscription_id"], 7);
    assert_eq!(group[0]["state"], "active (connected)");
    let tracking = ctl_json(url, &["list_stream_tracking", "-p", "prod", "app-s"]);
    // stream_status: one member here, the writer, read by the group's consumer.
    let status = ctl_json(url, &["stream_status", "-p", "prod", "app-s"]);
    let status = status.as_array().unwrap();
    assert_eq!(status.len(), 1, "{status:?}");
    let s = &status[0];
    assert_eq!(
        (
            &s["role"],
            &s["epoch"],
            &s["first_offset"],
            &s["readers"],
            &s["segments"]
        ),
        (&json!("writer"), &json!(1), &json!(0), &json!(1), &json!(1)),
        "{s}"
    );
    assert!(s["offset"].as_u64().unwrap() >= 9, "{s}");
    assert_eq!(s["committed_offset"], s["offset"], "{s}");
    assert_eq!(s["offset_lag"], 0, "{s}");
    let offset = tracking
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "offset")
        .unwrap();
    assert_eq!(
        (offset["name"].as_str(), offset["tracking_value"].as_u64()),
        (Some("grp"), Some(4))
    );
    let writer = tracking
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "writer")
        .unwrap();
    assert_eq!(
        (writer["name"].as_str(), writer["tracking_value"].as_u64()),
        (Some("app-writer"), Some(10))
    );

    // reset_offset moves the stored offset; a reference without one is refused.
    ok(
        url,
        &[
            "reset_offset",
            "-p",
            "prod",
            "--stream",
            "app-s",
            "--reference",
            "grp",
            "--to",
            "first",
        ],
    );
    let corr = reader.next_corr();
    reader
        .send(Frame::QueryOffset(QueryOffset {
            correlation_id: corr,
            reference: "grp".into(),
            stream: "app-s".into(),
        }))
        .await;
    // The subscription's deliveries may come first.
    let r = loop {
        match reader.recv().await.unwrap() {
            Frame::Deliver(_) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(r, Frame::QueryOffsetResponse(ref q) if q.offset == 0),
        "{r:?}"
    );
    assert_ne!(
        ctl(
            url,
            &[
                "reset_offset",
                "-p",
                "prod",
                "--stream",
                "app-s",
                "--reference",
                "nobody"
            ],
            ""
        )
        .0,
        0
    );

    // Definitions out and back in; closing a connection drops its socket.
    let file = dir.path().join("defs.json");
    ok(url, &["export_definitions", file.to_str().unwrap()]);
    ok(url, &["delete_super_stream", "-p", "prod", "inv"]);
    assert!(ctl_json(url, &["list_stream_tracking", "-p", "prod", "app-s"]).is_array());
    ok(url, &["import_definitions", file.to_str().unwrap()]);
    let r = app
        .request(Frame::Partitions(Partitions {
            correlation_id: 3,
            super_stream: "inv".into(),
        }))
        .await;
    assert!(
        matches!(r, Frame::PartitionsResponse(ref p) if p.streams.len() == 2),
        "{r:?}"
    );
    let conn = conns
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_properties.connection_name"] == "app-reader")
        .unwrap();
    ok(
        url,
        &[
            "close_connection",
            conn["conn_name"].as_str().unwrap(),
            "maintenance",
        ],
    );
    reader.expect_eof().await;
    ok(url, &["delete_vhost", "prod"]);
    let vhosts = ctl_json(url, &["list_vhosts"]);
    assert_eq!(vhosts, serde_json::json!([{"name": "/"}]));
}

/// Settings come from flags, then environment variables, then the config file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_under_environment_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("brook.toml");
    std::fs::write(
        &config,
        "default-user = \"admin\"\ndefault-pass = \"from-file\"\ndefault-vhost = \"file-vhost\"\n\
         heartbeat = 5\nloopback-users = []\ndurability = \"batch:5\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let brook = Brook::start_with_env(
        &data,
        &["--config", config.to_str().unwrap(), "--heartbeat", "9"],
        &[("BROOK_DEFAULT_VHOST", "env-vhost")],
    );
    // The file's user, the environment's vhost.
    assert!(
        Raw::open_as(brook.addr, "admin", "from-file", "env-vhost", &[])
            .await
            .is_ok()
    );
    assert!(
        Raw::open_as(brook.addr, "admin", "from-file", "file-vhost", &[])
            .await
            .is_err()
    );
    // The flag's heartbeat.
    let mut c = Raw::connect(brook.addr).await;
    let corr = c.next_corr();
    c.request(Frame::PeerProperties(PeerProperties {
        correlation_id: corr,
        properties: vec![],
    }))
    .await;
    let corr = c.next_corr();
    c.request(Frame::SaslHandshake(SaslHandshake {
        correlation_id: corr,
    }))
    .await;
    let r = c
        .request(Frame::SaslAuthenticate(SaslAuthenticate {
            correlation_id: 9,
            mechanism: "PLAIN".into(),
            data: Some("\0admin\0from-file".into()),
        }))
        .await;
    assert!(matches!(r, Frame::SaslAuthenticateResponse(ref a) if a.code.is_ok()));
    let tune = c.recv().await;
    assert!(
        matches!(tune, Some(Frame::Tune(ref t)) if t.heartbeat == 9),
        "{tune:?}"
    );
    assert!(
        brook.logged("durability=Batch(5ms)"),
        "the file's durability"
    );

    // A misspelt setting stops brook with a clear message.
    std::fs::write(&config, "data-dri = \"x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_brook"))
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown setting \"data-dri\""), "{stderr}");
}
