use super::*;

fn key(name: &str) -> StreamKey {
    StreamKey {
        vhost: "/".into(),
        name: name.into(),
    }
}

fn info(id: NodeId) -> NodeInfo {
    NodeInfo {
        name: format!("brook-{id}@localhost"),
        addr: format!("127.0.0.1:{}", 6000 + id),
    }
}

fn cluster(nodes: u64) -> Metadata {
    let mut m = Metadata::default();
    for id in 1..=nodes {
        m.apply(Command::AddNode { id, info: info(id) }).unwrap();
    }
    m
}

fn create(m: &mut Metadata, name: &str, locator: Locator, on: NodeId) -> NodeId {
    match m.apply(Command::CreateStream {
        key: key(name),
        arguments: vec![],
        size: None,
        locator,
        declared_on: on,
    }) {
        Ok(Applied::StreamCreated { leader, .. }) => leader,
        other => panic!("{other:?}"),
    }
}

fn stopped(m: &mut Metadata, name: &str, node: NodeId, epoch: u64, tail: (u64, u64)) -> Applied {
    m.apply(Command::MemberStopped {
        key: key(name),
        node,
        epoch,
        tail: Tail {
            epoch: tail.0,
            chunk_id: Some(tail.1),
        },
    })
    .unwrap()
}

#[test]
fn streams_are_placed_client_local_or_balanced_on_every_node() {
    let mut m = cluster(3);
    assert_eq!(create(&mut m, "a", Locator::ClientLocal, 2), 2);
    assert_eq!(create(&mut m, "b", Locator::ClientLocal, 2), 2);
    // Balanced: the nodes leading fewest (1 and 3, none each), the lowest id first.
    assert_eq!(create(&mut m, "c", Locator::Balanced, 2), 1);
    assert_eq!(create(&mut m, "d", Locator::Balanced, 2), 3);
    // x-initial-cluster-size defaults to every node.
    assert!(
        m.streams
            .values()
            .all(|s| s.members.len() == 3 && s.epoch == 1)
    );
}

#[test]
fn the_cluster_size_picks_the_least_loaded_nodes_and_is_capped() {
    let mut m = cluster(5);
    m.apply(Command::CreateStream {
        key: key("a"),
        arguments: vec![],
        size: Some(3),
        locator: Locator::ClientLocal,
        declared_on: 5,
    })
    .unwrap();
    let members: Vec<_> = m.streams[&key("a")].members.keys().copied().collect();
    assert_eq!(members, [1, 2, 5]);
    m.apply(Command::CreateStream {
        key: key("b"),
        arguments: vec![],
        size: Some(3),
        locator: Locator::ClientLocal,
        declared_on: 1,
    })
    .unwrap();
    // Nodes 3 and 4 hold nothing yet.
    let members: Vec<_> = m.streams[&key("b")].members.keys().copied().collect();
    assert_eq!(members, [1, 3, 4]);
    m.apply(Command::CreateStream {
        key: key("c"),
        arguments: vec![],
        size: Some(50),
        locator: Locator::Balanced,
        declared_on: 1,
    })
    .unwrap();
    assert_eq!(m.streams[&key("c")].members.len(), 5);
}

#[test]
fn a_majority_of_reports_elects_the_highest_tail_in_a_new_epoch() {
    let mut m = cluster(3);
    assert_eq!(create(&mut m, "s", Locator::ClientLocal, 1), 1);
    // Node 1 (the leader) is gone; 2 and 3 report their tails.
    assert_eq!(stopped(&mut m, "s", 3, 1, (1, 90)), Applied::StopRecorded);
    assert_eq!(
        stopped(&mut m, "s", 2, 1, (1, 100)),
        Applied::LeaderElected {
            key: key("s"),
            epoch: 2,
            leader: 2
        }
    );
    let s = &m.streams[&key("s")];
    assert_eq!((s.epoch, s.leader), (2, 2));
    assert!(s.members.values().all(|m| *m == Member::Running));
    // The old leader's report about epoch 1 comes late: ignored.
    assert_eq!(stopped(&mut m, "s", 1, 1, (1, 120)), Applied::Stale);
    assert_eq!(m.streams[&key("s")].leader, 2);
}

#[test]
fn a_later_epoch_beats_a_longer_log_and_ties_go_to_the_least_loaded() {
    let mut m = cluster(3);
    create(&mut m, "s", Locator::ClientLocal, 1);
    // Node 3 has more chunks, but from an older epoch: they were never committed.
    stopped(&mut m, "s", 3, 1, (0, 500));
    match stopped(&mut m, "s", 2, 1, (1, 100)) {
        Applied::LeaderElected { leader, .. } => assert_eq!(leader, 2),
        other => panic!("{other:?}"),
    }
    // Equal tails: the member leading fewer streams wins, even with a higher id.
    create(&mut m, "v", Locator::ClientLocal, 1);
    create(&mut m, "w", Locator::ClientLocal, 1);
    create(&mut m, "t", Locator::ClientLocal, 2);
    stopped(&mut m, "t", 1, 1, (1, 7));
    match stopped(&mut m, "t", 3, 1, (1, 7)) {
        Applied::LeaderElected { leader, .. } => assert_eq!(leader, 3),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_node_announcing_new_addresses_updates_them_and_the_state_survives_json() {
    let mut m = cluster(3);
    create(&mut m, "s", Locator::ClientLocal, 2);
    let moved = NodeInfo {
        name: "brook-2@elsewhere".into(),
        addr: "10.0.0.2:5552".into(),
    };
    m.apply(Command::AddNode {
        id: 2,
        info: moved.clone(),
    })
    .unwrap();
    assert_eq!(m.nodes[&2], moved);
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(serde_json::from_str::<Metadata>(&json).unwrap(), m);
}

#[test]
fn bad_commands_change_nothing() {
    let mut m = cluster(2);
    let before = m.clone();
    assert_eq!(
        m.apply(Command::AddNode {
            id: 1,
            info: info(1)
        }),
        Err(MetadataError::NodeExists(1))
    );
    assert_eq!(
        m.apply(Command::DeleteStream { key: key("nope") }),
        Err(MetadataError::UnknownStream(key("nope")))
    );
    create(&mut m, "s", Locator::Balanced, 1);
    let with_stream = m.clone();
    assert_eq!(
        m.apply(Command::MemberStopped {
            key: key("s"),
            node: 9,
            epoch: 1,
            tail: Tail {
                epoch: 1,
                chunk_id: None
            },
        }),
        Err(MetadataError::NotAMember(9))
    );
    assert_eq!(m, with_stream);
    assert_eq!(
        m.apply(Command::DeleteStream { key: key("s") }),
        Ok(Applied::StreamDeleted(key("s")))
    );
    assert_eq!(m, before);
    assert_eq!(
        Metadata::default().apply(Command::CreateStream {
            key: key("s"),
            arguments: vec![],
            size: None,
            locator: Locator::Balanced,
            declared_on: 1
        }),
        Err(MetadataError::NoNodes)
    );
}

#[test]
fn a_node_leaves_its_replicas_but_not_while_it_leads() {
    let mut m = cluster(3);
    let leader = create(&mut m, "s", Locator::ClientLocal, 1);
    assert_eq!(leader, 1);
    assert_eq!(
        m.apply(Command::RemoveNode { id: 1 }),
        Err(MetadataError::LeadsStreams(1, 1))
    );
    assert_eq!(
        m.apply(Command::RemoveNode { id: 9 }),
        Err(MetadataError::UnknownNode(9))
    );
    assert_eq!(
        m.apply(Command::RemoveNode { id: 3 }),
        Ok(Applied::NodeRemoved(3))
    );
    assert!(!m.nodes.contains_key(&3));
    let members: Vec<NodeId> = m.streams[&key("s")].members.keys().copied().collect();
    assert_eq!(members, [1, 2]);
    // New streams are placed on the nodes that are left.
    create(&mut m, "t", Locator::Balanced, 1);
    assert!(!m.streams[&key("t")].members.contains_key(&3));
}

#[test]
fn streams_are_placed_on_voters_that_have_not_announced_yet() {
    let mut m = cluster(2);
    m.voters = [1, 2, 3].into();
    create(&mut m, "s", Locator::ClientLocal, 1);
    let members: Vec<NodeId> = m.streams[&key("s")].members.keys().copied().collect();
    assert_eq!(members, [1, 2, 3]);
    // A node that is not a voter (forgotten, or not yet joined) gets nothing.
    m.voters = [1, 2].into();
    create(&mut m, "t", Locator::ClientLocal, 3);
    let members: Vec<NodeId> = m.streams[&key("t")].members.keys().copied().collect();
    assert_eq!(members, [1, 2]);
}

#[test]
fn replicas_are_added_and_deleted_but_not_the_leader_or_the_last() {
    let mut m = cluster(3);
    m.apply(Command::CreateStream {
        key: key("s"),
        arguments: Vec::new(),
        size: Some(1),
        locator: Locator::ClientLocal,
        declared_on: 1,
    })
    .unwrap();
    let add = |node| Command::AddReplica {
        key: key("s"),
        node,
    };
    let delete = |node| Command::DeleteReplica {
        key: key("s"),
        node,
    };
    assert_eq!(m.apply(delete(1)), Err(MetadataError::LastMember(1)));
    assert_eq!(m.apply(add(9)), Err(MetadataError::UnknownNode(9)));
    assert_eq!(m.apply(add(2)), Ok(Applied::MembersChanged(key("s"))));
    assert_eq!(m.apply(add(2)), Err(MetadataError::AlreadyAMember(2)));
    assert_eq!(m.apply(delete(1)), Err(MetadataError::IsTheLeader(1)));
    assert_eq!(m.apply(delete(3)), Err(MetadataError::NotAMember(3)));
    assert_eq!(m.apply(delete(2)), Ok(Applied::MembersChanged(key("s"))));
    let members: Vec<NodeId> = m.streams[&key("s")].members.keys().copied().collect();
    assert_eq!(members, [1]);
}

#[test]
fn the_first_super_stream_seed_wins_and_a_change_counts_as_one() {
    let definition = |p: &str| brook_broker::SuperStream {
        partitions: vec![p.into()],
        binding_keys: vec!["k".into()],
    };
    let seed =
        |p: &str| Command::SeedSuperStreams(vec![(("/".into(), "ss".into()), definition(p))]);
    let mut m = cluster(2);
    assert!(!m.super_streams_seeded);
    assert!(matches!(
        m.apply(seed("a")),
        Ok(Applied::SuperStreamChanged(_))
    ));
    assert_eq!(m.apply(seed("b")), Ok(Applied::Stale));
    assert_eq!(m.super_streams[&("/".into(), "ss".into())], definition("a"));

    let mut changed = cluster(2);
    let declare = brook_broker::SuperStreamChange::Declare {
        vhost: "/".into(),
        name: "other".into(),
    };
    changed.apply(Command::SuperStream(declare)).unwrap();
    assert_eq!(changed.apply(seed("b")), Ok(Applied::Stale));
}
