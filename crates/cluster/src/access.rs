//! Users, vhosts and permissions held by the metadata group, as RabbitMQ keeps them in its
//! cluster-wide metadata store: a user added through any node can log in on every node.
//!
//! Every node's [`AccessStore`] is a copy. Its changes go through [`AccessReplicator`] into
//! the metadata log; the state machine applies them and installs the result into the store
//! of every node (`StateMachine::set_access_store`), before the proposal returns on the node
//! that made it.
//!
//! A new cluster has no users until one node seeds them: every node proposes its own at
//! start, and the first proposal to commit wins, as a node joining a RabbitMQ cluster takes
//! the cluster's users in place of its own.

use std::sync::Weak;

use brook_auth::{Access, AccessChange, AccessError, BoxFuture, Replicator, apply_change};

use crate::metadata::{Applied, Command, Metadata, MetadataError};
use crate::node::Cluster;

impl Metadata {
    pub(crate) fn seed_access(&mut self, access: Access) -> Applied {
        if self.access.is_some() {
            return Applied::Stale;
        }
        self.access = Some(access);
        Applied::AccessChanged(true)
    }

    pub(crate) fn change_access(&mut self, change: AccessChange) -> Result<Applied, MetadataError> {
        let current = self.access.as_ref().ok_or(MetadataError::AccessNotSeeded)?;
        let (next, answer) = apply_change(current, change).map_err(MetadataError::Access)?;
        self.access = Some(next);
        Ok(Applied::AccessChanged(answer))
    }
}

/// A clustered node's way to change users, vhosts and permissions.
#[derive(Debug)]
pub(crate) struct AccessReplicator {
    /// Weak: the cluster's state machine holds the store that holds this.
    pub cluster: Weak<Cluster>,
    /// This node's users as it started, proposed as the cluster's if it has none yet.
    pub seed: Access,
}

impl AccessReplicator {
    fn cluster(&self) -> Result<std::sync::Arc<Cluster>, AccessError> {
        self.cluster
            .upgrade()
            .ok_or_else(|| AccessError::Unavailable("the node left the cluster".into()))
    }

    async fn propose(&self, command: Command) -> Result<Applied, AccessError> {
        let cluster = self.cluster()?;
        match cluster.propose(command).await {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(MetadataError::Access(e))) => Err(e),
            Ok(Err(e)) => Err(AccessError::Unavailable(e.to_string())),
            Err(e) => Err(AccessError::Unavailable(e.to_string())),
        }
    }

    /// Proposes this node's users unless the cluster has some: the log orders the proposals,
    /// so a change is never applied before the cluster has users.
    pub(crate) async fn seed(&self) -> Result<(), AccessError> {
        if self.cluster()?.metadata().access.is_none() {
            self.propose(Command::SeedAccess(self.seed.clone())).await?;
        }
        Ok(())
    }
}

impl Replicator for AccessReplicator {
    fn replicate(&self, change: AccessChange) -> BoxFuture<'_, Result<bool, AccessError>> {
        Box::pin(async move {
            self.seed().await?;
            match self.propose(Command::Access(change)).await? {
                Applied::AccessChanged(answer) => Ok(answer),
                other => Err(AccessError::Unavailable(format!(
                    "unexpected answer {other:?}"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use brook_auth::{Permission, Vhost};

    fn seeded() -> Metadata {
        let mut m = Metadata::default();
        let access = Access {
            vhosts: vec![Vhost::named("/")],
            ..Default::default()
        };
        assert_eq!(
            m.apply(Command::SeedAccess(access)),
            Ok(Applied::AccessChanged(true))
        );
        m
    }

    #[test]
    fn the_first_seed_wins_and_changes_need_one() {
        let mut empty = Metadata::default();
        let change = AccessChange::DeleteVhost("/".into());
        assert_eq!(
            empty.apply(Command::Access(change.clone())),
            Err(MetadataError::AccessNotSeeded)
        );
        let mut m = seeded();
        let before = m.clone();
        assert_eq!(
            m.apply(Command::SeedAccess(Access::default())),
            Ok(Applied::Stale)
        );
        assert_eq!(m, before);
        assert_eq!(
            m.apply(Command::Access(change)),
            Ok(Applied::AccessChanged(true))
        );
        assert!(m.access.unwrap().vhosts.is_empty());
    }

    #[test]
    fn a_refused_change_changes_nothing_and_says_why() {
        let mut m = seeded();
        let before = m.clone();
        let grant = AccessChange::SetPermission(Permission {
            user: "nobody".into(),
            vhost: "/".into(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        });
        assert_eq!(
            m.apply(Command::Access(grant)),
            Err(MetadataError::Access(AccessError::NoSuchUser(
                "nobody".into()
            )))
        );
        assert_eq!(m, before);
    }
}
