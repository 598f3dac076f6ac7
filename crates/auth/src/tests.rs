#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use brook_storage::sim::SimDisk;

use crate::*;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const REMOTE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

fn open(disk: &SimDisk, b: &Bootstrap) -> AccessStore {
    disk.create_dir_all(Path::new("/data")).unwrap();
    AccessStore::open(Arc::new(disk.clone()), Path::new("/data"), b).unwrap()
}

use brook_storage::Storage;

#[tokio::test]
async fn a_fresh_store_has_guest_on_slash_from_loopback_only() {
    let disk = SimDisk::new(1);
    let s = open(&disk, &Bootstrap::default());
    assert!(s.authenticate("guest", "guest", LOCAL).is_ok());
    assert_eq!(
        s.authenticate("guest", "guest", REMOTE),
        Err(Refused::NotLoopback)
    );
    assert_eq!(
        s.authenticate("guest", "nope", LOCAL),
        Err(Refused::BadCredentials)
    );
    assert_eq!(
        s.authenticate("nobody", "x", LOCAL),
        Err(Refused::BadCredentials)
    );
    assert!(s.vhost_access("guest", "/"));
    assert!(s.permitted("guest", "/", Perm::Configure, "anything"));
    assert!(s.user("guest").unwrap().is_administrator());
}

#[tokio::test]
async fn permissions_are_unanchored_regexes_per_vhost() {
    let disk = SimDisk::new(1);
    let s = open(&disk, &Bootstrap::default());
    s.put_vhost(Vhost::named("team")).await.unwrap();
    s.put_user(User {
        name: "alice".into(),
        password_hash: password::hash("pw"),
        hashing_algorithm: password::SHA256.into(),
        tags: vec![],
        limits: Default::default(),
    })
    .await
    .unwrap();
    assert!(
        !s.vhost_access("alice", "team"),
        "no permissions: no access"
    );
    s.set_permission(Permission {
        user: "alice".into(),
        vhost: "team".into(),
        configure: "^orders-".into(),
        write: "orders".into(),
        read: String::new(),
    })
    .await
    .unwrap();
    assert!(s.vhost_access("alice", "team"));
    assert!(s.permitted("alice", "team", Perm::Configure, "orders-1"));
    assert!(!s.permitted("alice", "team", Perm::Configure, "x-orders-1"));
    assert!(
        s.permitted("alice", "team", Perm::Write, "x-orders-1"),
        "unanchored"
    );
    assert!(
        !s.permitted("alice", "team", Perm::Read, "orders"),
        "empty = nothing"
    );
    assert!(
        !s.permitted("alice", "/", Perm::Write, "orders"),
        "other vhost"
    );
    let bad = s
        .set_permission(Permission {
            user: "alice".into(),
            vhost: "team".into(),
            configure: "(".into(),
            write: String::new(),
            read: String::new(),
        })
        .await;
    assert!(matches!(bad, Err(AccessError::InvalidPattern(..))));
    // Deleting the vhost takes its permissions along.
    assert!(s.delete_vhost("team").await.unwrap());
    assert!(s.permission("alice", "team").is_none());
}

#[tokio::test]
async fn changes_survive_a_restart_and_a_damaged_copy() {
    let disk = SimDisk::new(1);
    let s = open(&disk, &Bootstrap::default());
    s.put_vhost(Vhost::named("v")).await.unwrap();
    drop(s);
    // The primary copy torn: the backup serves.
    let mut f = disk
        .open(
            Path::new("/data/access.json"),
            brook_storage::OpenMode::Create,
        )
        .unwrap();
    f.append(&[b"{\"users\": ["]).unwrap();
    let s = open(&disk, &Bootstrap::default());
    assert!(s.vhost("v").is_some());
    assert!(s.authenticate("guest", "guest", LOCAL).is_ok());
}

#[tokio::test]
async fn ensured_users_are_administrators_and_follow_their_password() {
    let disk = SimDisk::new(1);
    let b = Bootstrap {
        ensure_users: vec![("ops".into(), "one".into())],
        ..Bootstrap::default()
    };
    let s = open(&disk, &b);
    assert!(s.authenticate("ops", "one", REMOTE).is_ok());
    drop(s);
    let b = Bootstrap {
        ensure_users: vec![("ops".into(), "two".into())],
        ..Bootstrap::default()
    };
    let s = open(&disk, &b);
    assert!(s.authenticate("ops", "two", REMOTE).is_ok());
    assert!(s.authenticate("ops", "one", REMOTE).is_err());
}

#[test]
fn tags_read_as_list_or_comma_string() {
    let u: User = serde_json::from_str(
        r#"{"name":"a","password_hash":"","hashing_algorithm":"rabbit_password_hashing_sha256","tags":"administrator, monitoring"}"#,
    )
    .unwrap();
    assert_eq!(u.tags, ["administrator", "monitoring"]);
    assert!(u.is_monitor());
}
