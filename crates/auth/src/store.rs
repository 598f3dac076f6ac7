//! The store of users, vhosts and permissions: in memory for checks (every stream command
//! checks the live store, as RabbitMQ's stream reader does: a permission change applies to the
//! next command), and in `access.json` (two atomic copies) in the data directory.
//!
//! Reads take a snapshot (an `Arc`) under a lock held for a pointer copy. Changes are
//! serialized by an async lock held while the file is written on the blocking pool, so no
//! fsync ever runs under a lock an async worker waits on.
//!
//! In a cluster the store is a copy: changes go through a [`Replicator`] (the cluster's
//! metadata log), and every node [`AccessStore::install`]s what its log applies.

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};

use brook_storage::SharedStorage;
use serde::{Deserialize, Serialize};

use crate::model::{Access, AccessChange, Perm, Permission, User, Vhost};
use crate::password;
use crate::state::{State, admin};

const FILE: &str = "access.json";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AccessError {
    #[error("no user {0:?}")]
    NoSuchUser(String),
    #[error("no vhost {0:?}")]
    NoSuchVhost(String),
    #[error("invalid pattern {0:?}: {1}")]
    InvalidPattern(String, String),
    #[error(transparent)]
    Hash(#[from] password::HashError),
    #[error("a user needs a name")]
    EmptyName,
    #[error("saving {FILE}: {0}")]
    Storage(String),
    #[error("{FILE} is unreadable: {0}")]
    Unreadable(String),
    /// The cluster could not commit the change (no majority, no leader).
    #[error("the cluster did not take the change: {0}")]
    Unavailable(String),
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a clustered node's changes go: the cluster commits them and every node's store
/// installs the result.
pub trait Replicator: Send + Sync + std::fmt::Debug {
    /// Commits `change`; returns its answer once this node's store holds it.
    fn replicate(&self, change: AccessChange) -> BoxFuture<'_, Result<bool, AccessError>>;
}

/// Why a login failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Unknown user, wrong or blank password, no password set.
    BadCredentials,
    /// A loopback-only user from another address.
    NotLoopback,
}

/// What the store starts with when it holds no user or no vhost (a fresh data directory), as
/// RabbitMQ's default user and vhost.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub default_user: String,
    pub default_pass: String,
    pub default_vhost: String,
    /// Users that may log in from loopback addresses only (RabbitMQ: `guest`).
    pub loopback_users: Vec<String>,
    /// Users made sure of at every start (name, password), as administrators with full
    /// permissions on the default vhost: `--user NAME:PASSWORD`.
    pub ensure_users: Vec<(String, String)>,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            default_user: "guest".into(),
            default_pass: "guest".into(),
            default_vhost: "/".into(),
            loopback_users: vec!["guest".into()],
            ensure_users: Vec::new(),
        }
    }
}

/// Users, vhosts and permissions; share it with `Arc`.
#[derive(Debug)]
pub struct AccessStore {
    current: RwLock<Arc<State>>,
    changes: tokio::sync::Mutex<()>,
    storage: SharedStorage,
    dir: PathBuf,
    loopback_users: Vec<String>,
    /// Set once the node is part of a cluster.
    replicator: OnceLock<Arc<dyn Replicator>>,
}

impl AccessStore {
    /// Loads the store from `dir` (seeding a fresh one). A damaged file is an error: brook
    /// will not start over an unreadable list of users (and never overwrites it).
    pub fn open(
        storage: SharedStorage,
        dir: &Path,
        bootstrap: &Bootstrap,
    ) -> Result<Self, AccessError> {
        let loaded: Option<Access> =
            brook_storage::json::read(&*storage, dir, FILE).map_err(AccessError::Unreadable)?;
        let mut state = State::from_access(loaded.unwrap_or_default())?;
        if state.bootstrap(bootstrap)? {
            brook_storage::json::write(&*storage, dir, FILE, &state.to_access())
                .map_err(|e| AccessError::Storage(e.to_string()))?;
        }
        Ok(Self {
            current: RwLock::new(Arc::new(state)),
            changes: tokio::sync::Mutex::new(()),
            storage,
            dir: dir.to_owned(),
            loopback_users: bootstrap.loopback_users.clone(),
            replicator: OnceLock::new(),
        })
    }

    fn now(&self) -> Arc<State> {
        // Whole-state swaps only: a panic elsewhere leaves nothing half-changed.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies `change` to a copy of the state, saves it, then makes it current.
    async fn update<T>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, AccessError>,
    ) -> Result<T, AccessError> {
        let _serialized = self.changes.lock().await;
        let mut state = (*self.now()).clone();
        let out = change(&mut state)?;
        let (storage, dir, access) = (self.storage.clone(), self.dir.clone(), state.to_access());
        tokio::task::spawn_blocking(move || {
            brook_storage::json::write(&*storage, &dir, FILE, &access)
        })
        .await
        .map_err(|e| AccessError::Storage(e.to_string()))?
        .map_err(|e| AccessError::Storage(e.to_string()))?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
        Ok(out)
    }

    pub fn user(&self, name: &str) -> Option<User> {
        self.now().users.get(name).cloned()
    }

    pub fn users(&self) -> Vec<User> {
        self.now().users.values().cloned().collect()
    }

    pub fn vhost(&self, name: &str) -> Option<Vhost> {
        self.now().vhosts.get(name).cloned()
    }

    pub fn vhosts(&self) -> Vec<Vhost> {
        self.now().vhosts.values().cloned().collect()
    }

    pub fn permissions(&self) -> Vec<Permission> {
        self.now()
            .permissions
            .values()
            .map(|c| c.spec.clone())
            .collect()
    }

    pub fn permission(&self, user: &str, vhost: &str) -> Option<Permission> {
        self.now()
            .permissions
            .get(&(user.to_owned(), vhost.to_owned()))
            .map(|c| c.spec.clone())
    }

    /// Everything, as definitions carry it.
    pub fn export(&self) -> Access {
        self.now().to_access()
    }

    /// Checks a password login (SASL PLAIN, HTTP Basic) from `peer`.
    pub fn authenticate(&self, name: &str, pass: &str, peer: IpAddr) -> Result<User, Refused> {
        let Some(user) = self.user(name) else {
            password::verify_nothing(pass);
            return Err(Refused::BadCredentials);
        };
        if !password::verify(&user.hashing_algorithm, &user.password_hash, pass) {
            return Err(Refused::BadCredentials);
        }
        if !self.may_connect_from(name, peer) {
            return Err(Refused::NotLoopback);
        }
        Ok(user)
    }

    /// Whether `user` may log in from `peer` (RabbitMQ's `loopback_users`).
    pub fn may_connect_from(&self, user: &str, peer: IpAddr) -> bool {
        let loopback = match peer {
            IpAddr::V4(a) => a.is_loopback(),
            IpAddr::V6(a) => {
                a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        };
        loopback || !self.loopback_users.iter().any(|u| u == user)
    }

    /// Whether `user` may open a connection to `vhost`: it exists and the user has permissions
    /// there (any, as in RabbitMQ).
    pub fn vhost_access(&self, user: &str, vhost: &str) -> bool {
        let state = self.now();
        state.vhosts.contains_key(vhost)
            && state
                .permissions
                .contains_key(&(user.to_owned(), vhost.to_owned()))
    }

    /// Whether `user` has `perm` on the stream or super stream `resource` in `vhost`.
    pub fn permitted(&self, user: &str, vhost: &str, perm: Perm, resource: &str) -> bool {
        self.now()
            .permissions
            .get(&(user.to_owned(), vhost.to_owned()))
            .is_some_and(|c| c.allows(perm, resource))
    }

    /// The vhosts `user` has permissions in.
    pub fn vhosts_of(&self, user: &str) -> Vec<String> {
        self.now()
            .permissions
            .keys()
            .filter(|(u, _)| u == user)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// From now on, changes go through `replicator` (this node joined a cluster).
    pub fn replicate_through(&self, replicator: Arc<dyn Replicator>) {
        if self.replicator.set(replicator).is_err() {
            tracing::warn!("the access store already replicates");
        }
    }

    /// Replaces everything with what the cluster holds (this node's copy follows the
    /// cluster's metadata log). It is current even if saving it fails: the cluster's log is
    /// what keeps it, and `access.json` only lets the node check logins before it rejoins.
    pub fn install(&self, access: Access) -> Result<(), AccessError> {
        let state = Arc::new(State::from_access(access)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = state.clone();
        brook_storage::json::write(&*self.storage, &self.dir, FILE, &state.to_access())
            .map_err(|e| AccessError::Storage(e.to_string()))
    }

    /// Applies `change` here, or through the cluster when there is one.
    pub async fn change(&self, change: AccessChange) -> Result<bool, AccessError> {
        let Some(replicator) = self.replicator.get() else {
            return self.update(|s| s.apply(change)).await;
        };
        // Checked against this node's copy first, so that a change the state refuses gets
        // its own error without a round through the cluster (which checks it again against
        // the state it applies to).
        (*self.now()).clone().apply(change.clone())?;
        replicator.replicate(change).await
    }

    pub async fn put_user(&self, user: User) -> Result<(), AccessError> {
        self.change(AccessChange::PutUser(user)).await.map(drop)
    }

    /// Deletes a user and its permissions. Returns whether it existed.
    pub async fn delete_user(&self, name: &str) -> Result<bool, AccessError> {
        self.change(AccessChange::DeleteUser(name.to_owned())).await
    }

    /// Creates or updates a vhost. Returns whether it was created.
    pub async fn put_vhost(&self, vhost: Vhost) -> Result<bool, AccessError> {
        self.change(AccessChange::PutVhost(vhost)).await
    }

    /// Deletes a vhost and every permission in it (its streams are the broker's to delete).
    pub async fn delete_vhost(&self, name: &str) -> Result<bool, AccessError> {
        self.change(AccessChange::DeleteVhost(name.to_owned()))
            .await
    }

    pub async fn set_permission(&self, p: Permission) -> Result<(), AccessError> {
        self.change(AccessChange::SetPermission(p)).await.map(drop)
    }

    /// Returns whether there were permissions to clear.
    pub async fn clear_permission(&self, user: &str, vhost: &str) -> Result<bool, AccessError> {
        let (user, vhost) = (user.to_owned(), vhost.to_owned());
        self.change(AccessChange::ClearPermission { user, vhost })
            .await
    }

    /// Adds or replaces the users, vhosts and permissions of a definitions file, all or none.
    pub async fn import(&self, access: Access) -> Result<(), AccessError> {
        self.change(AccessChange::Import(access)).await.map(drop)
    }

    /// Makes sure of the `--user NAME:PASSWORD` administrators, with full permissions on
    /// `vhost`: for a clustered node, whose own bootstrap the cluster's users replace.
    pub async fn ensure_admins(
        &self,
        users: &[(String, String)],
        vhost: &str,
    ) -> Result<(), AccessError> {
        for (name, pass) in users {
            let current = self.user(name);
            if current
                .is_none_or(|u| !password::verify(&u.hashing_algorithm, &u.password_hash, pass))
            {
                let (user, vhost) = (admin(name, pass), vhost.to_owned());
                self.change(AccessChange::EnsureAdmin { user, vhost })
                    .await?;
            }
        }
        Ok(())
    }
}
