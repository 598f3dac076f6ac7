//! A checker over the history a fault-injection run records (issue #13): what producers had
//! confirmed, and what consumers on each node read. It answers the questions the harness asks
//! after every round, whatever happened to the network and the processes meanwhile:
//!
//! * every confirmed message is read on every node, exactly once;
//! * each producer's messages are read in the order it published them, at increasing offsets;
//! * no two nodes confirmed as leader in the same epoch.
//!
//! Messages are named by their producer and publishing id (the harness writes both into the
//! body), so a message is recognised wherever and however often it is read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A message: who published it, with which publishing id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    pub producer: String,
    pub seq: u64,
}

/// What the harness records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A producer got a confirm for the message from `leader`, which led in `epoch`.
    Confirmed {
        message: MessageId,
        leader: String,
        epoch: u64,
    },
    /// A consumer on `node` read the message at `offset`.
    Read {
        node: String,
        offset: u64,
        message: MessageId,
    },
}

/// A broken promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Confirmed, never read on this node.
    Lost { node: String, message: MessageId },
    /// Read more than once on this node.
    Duplicated { node: String, message: MessageId },
    /// Read after a later message of the same producer, or at an offset not above the last.
    OutOfOrder {
        node: String,
        message: MessageId,
        offset: u64,
    },
    /// Several nodes confirmed as leader in one epoch.
    SplitBrain { epoch: u64, leaders: Vec<String> },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Lost { node, message } => {
                write!(
                    f,
                    "{}#{} confirmed but never read on {node}",
                    message.producer, message.seq
                )
            }
            Violation::Duplicated { node, message } => {
                write!(
                    f,
                    "{}#{} read twice on {node}",
                    message.producer, message.seq
                )
            }
            Violation::OutOfOrder {
                node,
                message,
                offset,
            } => write!(
                f,
                "{}#{} read out of order on {node} (offset {offset})",
                message.producer, message.seq
            ),
            Violation::SplitBrain { epoch, leaders } => {
                write!(
                    f,
                    "epoch {epoch} had several confirming leaders: {leaders:?}"
                )
            }
        }
    }
}

/// Checks a history; `nodes` are the nodes whose consumers read the whole stream.
pub fn check(events: &[Event], nodes: &[&str]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut confirmed = BTreeSet::new();
    let mut leaders: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for e in events {
        if let Event::Confirmed {
            message,
            leader,
            epoch,
        } = e
        {
            confirmed.insert(message);
            leaders.entry(*epoch).or_default().insert(leader);
        }
    }
    for (epoch, set) in leaders {
        if set.len() > 1 {
            violations.push(Violation::SplitBrain {
                epoch,
                leaders: set.into_iter().map(str::to_owned).collect(),
            });
        }
    }
    for &node in nodes {
        check_node(events, node, &confirmed, &mut violations);
    }
    violations
}

/// The reads on one node, in the order they happened.
fn check_node(
    events: &[Event],
    node: &str,
    confirmed: &BTreeSet<&MessageId>,
    violations: &mut Vec<Violation>,
) {
    let mut seen = BTreeSet::new();
    let mut last_seq: BTreeMap<&str, u64> = BTreeMap::new();
    let mut last_offset = None;
    for e in events {
        let Event::Read {
            node: n,
            offset,
            message,
        } = e
        else {
            continue;
        };
        if n != node {
            continue;
        }
        if !seen.insert(message) {
            violations.push(Violation::Duplicated {
                node: node.to_owned(),
                message: message.clone(),
            });
            continue;
        }
        let seq_back = last_seq
            .get(message.producer.as_str())
            .is_some_and(|&s| message.seq <= s);
        let offset_back = last_offset.is_some_and(|o| *offset <= o);
        if seq_back || offset_back {
            violations.push(Violation::OutOfOrder {
                node: node.to_owned(),
                message: message.clone(),
                offset: *offset,
            });
        }
        last_seq.insert(&message.producer, message.seq);
        last_offset = Some(*offset);
    }
    for message in confirmed {
        if !seen.contains(message) {
            violations.push(Violation::Lost {
                node: node.to_owned(),
                message: (*message).clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(producer: &str, seq: u64) -> MessageId {
        MessageId {
            producer: producer.into(),
            seq,
        }
    }

    fn confirmed(producer: &str, seq: u64, leader: &str, epoch: u64) -> Event {
        Event::Confirmed {
            message: id(producer, seq),
            leader: leader.into(),
            epoch,
        }
    }

    fn read(node: &str, offset: u64, producer: &str, seq: u64) -> Event {
        Event::Read {
            node: node.into(),
            offset,
            message: id(producer, seq),
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let events = [
            confirmed("p", 0, "a", 1),
            confirmed("p", 1, "b", 2),
            read("a", 0, "p", 0),
            read("a", 1, "p", 1),
            // Unconfirmed messages may be read (a publish whose confirm was lost).
            read("a", 2, "p", 2),
            read("b", 0, "p", 0),
            read("b", 1, "p", 1),
        ];
        assert_eq!(check(&events, &["a", "b"]), []);
    }

    #[test]
    fn every_broken_promise_is_found() {
        let events = [
            confirmed("p", 0, "a", 1),
            confirmed("p", 1, "a", 1),
            confirmed("q", 0, "b", 1),
            read("a", 0, "p", 0),
            read("a", 1, "p", 0),
            read("a", 2, "q", 0),
            read("b", 5, "p", 1),
            read("b", 6, "p", 0),
            read("b", 4, "q", 0),
        ];
        let found = check(&events, &["a", "b"]);
        let expected = [
            Violation::SplitBrain {
                epoch: 1,
                leaders: vec!["a".into(), "b".into()],
            },
            Violation::Duplicated {
                node: "a".into(),
                message: id("p", 0),
            },
            Violation::Lost {
                node: "a".into(),
                message: id("p", 1),
            },
            Violation::OutOfOrder {
                node: "b".into(),
                message: id("p", 0),
                offset: 6,
            },
            Violation::OutOfOrder {
                node: "b".into(),
                message: id("q", 0),
                offset: 4,
            },
        ];
        assert_eq!(found, expected);
        assert_eq!(found[2].to_string(), "p#1 confirmed but never read on a");
    }
}
