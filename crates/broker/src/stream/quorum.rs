//! The commit rule of a replicated stream, as osiris's `agreed_commit`: a chunk is committed
//! once a majority of the stream's members (the leader counted) holds it durably.

use std::collections::HashMap;

/// Each member's durable end (the next offset after its last durable chunk).
#[derive(Debug, Clone)]
pub(crate) struct Quorum {
    /// Members, the leader included.
    members: usize,
    local: u64,
    replicas: HashMap<u64, u64>,
    /// Who the replicas are, once the cluster said (`set_replicas`): acks from others (a
    /// deleted replica's last ones) do not count.
    known: Option<Vec<u64>>,
    /// What readers and confirms have been released up to.
    pub published: u64,
}

impl Quorum {
    /// `start`: the log's end when this node became leader. What is below it was committed by
    /// an earlier epoch or is this leader's own (its log was the longest of a majority).
    pub(crate) fn new(members: usize, start: u64) -> Self {
        Self {
            members: members.max(1),
            local: start,
            replicas: HashMap::new(),
            known: None,
            published: start,
        }
    }

    /// The stream's replicas changed (`add_replica`, `delete_replica`, a forgotten node):
    /// majorities count the new members from now on, and a deleted one's acks no longer.
    pub(crate) fn set_replicas(&mut self, replicas: &[u64]) {
        self.members = replicas.len().saturating_add(1);
        self.replicas.retain(|node, _| replicas.contains(node));
        self.known = Some(replicas.to_vec());
    }

    pub(crate) fn local(&mut self, end: u64) {
        self.local = self.local.max(end);
    }

    /// A replica holds everything before `end` (acks may arrive out of order after a
    /// reconnect: never go back). A replica cannot hold more than this leader wrote: an ack
    /// beyond it (a replica not yet cut back) counts only up to the leader's end.
    pub(crate) fn ack(&mut self, node: u64, end: u64) {
        if self.known.as_ref().is_some_and(|k| !k.contains(&node)) {
            return;
        }
        let end = end.min(self.local);
        let e = self.replicas.entry(node).or_default();
        *e = (*e).max(end);
    }

    /// The highest end a majority holds.
    pub(crate) fn committed(&self) -> u64 {
        let mut ends: Vec<u64> = std::iter::once(self.local)
            .chain(self.replicas.values().copied())
            .collect();
        ends.resize(self.members.max(ends.len()), 0);
        ends.sort_unstable_by(|a, b| b.cmp(a));
        let majority = self.members / 2 + 1;
        ends.get(majority - 1).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_of_members_decides_and_a_single_node_commits_alone() {
        let mut q = Quorum::new(3, 0);
        q.local(100);
        assert_eq!(q.published, 0);
        assert_eq!(q.committed(), 0, "the leader alone is no majority of 3");
        q.ack(2, 40);
        assert_eq!(q.committed(), 40);
        q.ack(3, 70);
        assert_eq!(q.committed(), 70);
        q.ack(2, 30);
        assert_eq!(q.committed(), 70, "a stale ack never takes back");
        q.ack(2, 500);
        assert_eq!(
            q.committed(),
            100,
            "nobody holds more than the leader wrote"
        );
        let mut five = Quorum::new(5, 0);
        five.local(10);
        five.ack(2, 10);
        assert_eq!(five.committed(), 0);
        five.ack(3, 8);
        assert_eq!(five.committed(), 8);
        let mut one = Quorum::new(1, 0);
        one.local(5);
        assert_eq!(one.committed(), 5);
    }

    #[test]
    fn new_replicas_count_from_now_on_and_deleted_ones_no_longer() {
        let mut q = Quorum::new(3, 0);
        q.local(100);
        q.ack(2, 100);
        assert_eq!(q.committed(), 100);
        // A fourth member: 3 of 4 must hold a chunk now.
        q.set_replicas(&[2, 3, 4]);
        q.local(200);
        q.ack(2, 200);
        assert!(
            q.committed() < 200,
            "the leader and one replica are not 3 of 4"
        );
        q.ack(4, 200);
        assert_eq!(q.committed(), 200);
        // Node 2 deleted: its acks count no longer.
        q.set_replicas(&[3, 4]);
        q.local(300);
        q.ack(2, 300);
        assert_eq!(q.committed(), 200);
        q.ack(3, 300);
        assert_eq!(q.committed(), 300);
    }
}
