//! Single active consumer: among the subscriptions sharing (stream, `name`), one receives
//! messages; when it leaves, the next takes over. For super-stream partitions the active one is
//! `members[partition index % members]`, which spreads a group's partitions over its consumers;
//! a change of membership asks the current active consumer to step down first, and activates
//! its successor once it has answered (or left), so two consumers are never active at once.
//!
//! The coordinator only decides; it tells connections what to do through their control
//! channels (`ControlEvent::ConsumerUpdate`), and they talk to their clients.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::outgoing::ControlSender;

use crate::stream::StreamId;
use crate::{ControlEvent, Error};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Active,
    /// Told to step down; its answer (or departure) lets the next one start.
    SteppingDown,
}

#[derive(Debug)]
struct Member {
    conn: u64,
    subscription_id: u8,
    control: ControlSender,
    state: State,
}

impl Member {
    fn tell(&self, active: bool) {
        let _ = self.control.send(ControlEvent::ConsumerUpdate {
            subscription_id: self.subscription_id,
            active,
        });
    }
}

#[derive(Debug)]
struct Group {
    /// -1 for a plain stream; the partition's position in its super stream otherwise.
    partition_index: i32,
    /// In registration order.
    members: Vec<Member>,
}

impl Group {
    fn rebalance(&mut self) {
        if self.members.is_empty() {
            return;
        }
        let want = if self.partition_index < 0 {
            0
        } else {
            self.partition_index as usize % self.members.len()
        };
        if self.members.iter().any(|m| m.state == State::SteppingDown) {
            return;
        }
        match self.members.iter().position(|m| m.state == State::Active) {
            Some(active) if active == want => {}
            Some(active) => {
                self.members[active].state = State::SteppingDown;
                self.members[active].tell(false);
            }
            None => {
                self.members[want].state = State::Active;
                self.members[want].tell(true);
            }
        }
    }

    fn position(&self, conn: u64, subscription_id: u8) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.conn == conn && m.subscription_id == subscription_id)
    }
}

/// Group key: (stream, consumer name).
type Key = (StreamId, String);

#[derive(Debug, Default)]
pub(crate) struct Coordinator {
    groups: Mutex<HashMap<Key, Group>>,
}

impl Coordinator {
    fn groups(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn register(
        &self,
        stream: &StreamId,
        name: &str,
        partition_index: i32,
        conn: u64,
        subscription_id: u8,
        control: &ControlSender,
    ) -> Result<(), Error> {
        let mut groups = self.groups();
        let group = groups
            .entry((stream.clone(), name.to_owned()))
            .or_insert(Group {
                partition_index,
                members: Vec::new(),
            });
        if group.partition_index != partition_index {
            return Err(Error::PreconditionFailed(format!(
                "consumer group {name:?} on {stream} has partition index {}, not {partition_index}",
                group.partition_index
            )));
        }
        group.members.push(Member {
            conn,
            subscription_id,
            control: control.clone(),
            state: State::Waiting,
        });
        group.rebalance();
        Ok(())
    }

    /// A member left (unsubscribed, connection closed, stream deleted).
    pub(crate) fn unregister(&self, stream: &StreamId, name: &str, conn: u64, subscription_id: u8) {
        let mut groups = self.groups();
        let key = (stream.clone(), name.to_owned());
        if let Some(group) = groups.get_mut(&key) {
            if let Some(i) = group.position(conn, subscription_id) {
                group.members.remove(i);
            }
            if group.members.is_empty() {
                groups.remove(&key);
            } else {
                group.rebalance();
            }
        }
    }

    /// A member answered its step-down request.
    pub(crate) fn stepped_down(
        &self,
        stream: &StreamId,
        name: &str,
        conn: u64,
        subscription_id: u8,
    ) {
        let mut groups = self.groups();
        if let Some(group) = groups.get_mut(&(stream.clone(), name.to_owned()))
            && let Some(i) = group.position(conn, subscription_id)
            && group.members[i].state == State::SteppingDown
        {
            group.members[i].state = State::Waiting;
            group.rebalance();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{QueueReceiver, queue};

    fn s() -> StreamId {
        StreamId::new("/", "s")
    }

    fn member(c: &Coordinator, index: i32, conn: u64) -> QueueReceiver<ControlEvent> {
        let (tx, rx) = queue();
        c.register(&s(), "g", index, conn, 1, &tx).unwrap();
        rx
    }

    fn update(rx: &mut QueueReceiver<ControlEvent>) -> Option<bool> {
        match rx.try_recv() {
            Ok(ControlEvent::ConsumerUpdate { active, .. }) => Some(active),
            _ => None,
        }
    }

    #[test]
    fn plain_stream_fails_over_in_registration_order() {
        let c = Coordinator::default();
        let mut a = member(&c, -1, 1);
        let mut b = member(&c, -1, 2);
        let mut d = member(&c, -1, 3);
        assert_eq!(update(&mut a), Some(true));
        assert_eq!(
            (update(&mut b), update(&mut d)),
            (None, None),
            "waiting consumers are not told"
        );
        c.unregister(&s(), "g", 1, 1);
        assert_eq!(update(&mut b), Some(true));
        assert_eq!(update(&mut d), None);
    }

    #[test]
    fn partitions_step_down_before_the_next_activates() {
        let c = Coordinator::default();
        // Partition 1 of a super stream: with two members, the second one is active.
        let mut a = member(&c, 1, 1);
        assert_eq!(update(&mut a), Some(true));
        let mut b = member(&c, 1, 2);
        assert_eq!(update(&mut a), Some(false), "a steps down");
        assert_eq!(update(&mut b), None, "b waits for a's answer");
        c.stepped_down(&s(), "g", 1, 1);
        assert_eq!(update(&mut b), Some(true));
        // b leaves: a is the only one again.
        c.unregister(&s(), "g", 2, 1);
        assert_eq!(update(&mut a), Some(true));
        let (tx, _) = queue();
        assert!(
            c.register(&s(), "g", 0, 9, 1, &tx).is_err(),
            "another partition index"
        );
    }
}
