//! The store of users, vhosts and permissions: in memory for checks (every stream command
//! checks the live store, as RabbitMQ's stream reader does: a permission change applies to the
//! next command), and in `access.json` (two atomic copies) in the data directory.
//!
//! Reads take a snapshot (an `Arc`) under a lock held for a pointer copy. Changes are
//! serialized by an async lock held while the file is written on the blocking pool, so no
//! fsync ever runs under a lock an async worker waits on.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use brook_storage::SharedStorage;
use regex::Regex;

use crate::model::{Access, Perm, Permission, User, Vhost};
use crate::password;

const FILE: &str = "access.json";
/// RabbitMQ refuses patterns longer than this (4.2.9+).
const MAX_PATTERN_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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

#[derive(Debug, Clone)]
struct Compiled {
    spec: Permission,
    configure: Regex,
    write: Regex,
    read: Regex,
}

fn compile(pattern: &str) -> Result<Regex, AccessError> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(AccessError::InvalidPattern(
            pattern.chars().take(40).collect(),
            format!("longer than {MAX_PATTERN_LEN} bytes"),
        ));
    }
    // An empty pattern grants nothing, as RabbitMQ reads it as `^$`.
    let pattern = if pattern.is_empty() { "^$" } else { pattern };
    Regex::new(pattern).map_err(|e| AccessError::InvalidPattern(pattern.to_owned(), e.to_string()))
}

impl Compiled {
    fn new(spec: Permission) -> Result<Self, AccessError> {
        Ok(Self {
            configure: compile(&spec.configure)?,
            write: compile(&spec.write)?,
            read: compile(&spec.read)?,
            spec,
        })
    }

    fn allows(&self, perm: Perm, resource: &str) -> bool {
        match perm {
            Perm::Configure => &self.configure,
            Perm::Write => &self.write,
            Perm::Read => &self.read,
        }
        .is_match(resource)
    }
}

#[derive(Debug, Clone, Default)]
struct State {
    users: BTreeMap<String, User>,
    vhosts: BTreeMap<String, Vhost>,
    /// (user, vhost) → permissions.
    permissions: BTreeMap<(String, String), Compiled>,
}

impl State {
    fn from_access(access: Access) -> Result<Self, AccessError> {
        let mut state = State::default();
        for u in access.users {
            state.users.insert(u.name.clone(), u);
        }
        for v in access.vhosts {
            state.vhosts.insert(v.name.clone(), v);
        }
        for p in access.permissions {
            state
                .permissions
                .insert((p.user.clone(), p.vhost.clone()), Compiled::new(p)?);
        }
        Ok(state)
    }

    fn to_access(&self) -> Access {
        Access {
            users: self.users.values().cloned().collect(),
            vhosts: self.vhosts.values().cloned().collect(),
            permissions: self.permissions.values().map(|c| c.spec.clone()).collect(),
        }
    }

    fn set_permission(&mut self, p: Permission) -> Result<(), AccessError> {
        if !self.users.contains_key(&p.user) {
            return Err(AccessError::NoSuchUser(p.user));
        }
        if !self.vhosts.contains_key(&p.vhost) {
            return Err(AccessError::NoSuchVhost(p.vhost));
        }
        let key = (p.user.clone(), p.vhost.clone());
        self.permissions.insert(key, Compiled::new(p)?);
        Ok(())
    }

    fn put_user(&mut self, user: User) -> Result<(), AccessError> {
        if user.name.is_empty() {
            return Err(AccessError::EmptyName);
        }
        password::check_algorithm(&user.hashing_algorithm)?;
        password::check_stored(&user.password_hash)?;
        self.users.insert(user.name.clone(), user);
        Ok(())
    }

    /// The default vhost and user of a fresh store; the `--user` administrators.
    fn bootstrap(&mut self, b: &Bootstrap) -> Result<bool, AccessError> {
        let mut changed = false;
        if self.users.is_empty() || self.vhosts.is_empty() {
            self.vhosts
                .entry(b.default_vhost.clone())
                .or_insert_with(|| Vhost::named(&b.default_vhost));
            let mut users = vec![(b.default_user.clone(), b.default_pass.clone())];
            users.extend(b.ensure_users.iter().cloned());
            for (name, pass) in users {
                self.ensure_admin(&name, &pass, &b.default_vhost)?;
            }
            return Ok(true);
        }
        for (name, pass) in &b.ensure_users {
            let current = self.users.get(name);
            if current
                .is_none_or(|u| !password::verify(&u.hashing_algorithm, &u.password_hash, pass))
            {
                self.ensure_admin(name, pass, &b.default_vhost)?;
                changed = true;
            }
        }
        Ok(changed)
    }

    fn ensure_admin(&mut self, name: &str, pass: &str, vhost: &str) -> Result<(), AccessError> {
        self.vhosts
            .entry(vhost.to_owned())
            .or_insert_with(|| Vhost::named(vhost));
        self.put_user(User {
            name: name.to_owned(),
            password_hash: password::hash(pass),
            hashing_algorithm: password::SHA256.to_owned(),
            tags: vec!["administrator".into()],
            limits: Default::default(),
        })?;
        self.set_permission(Permission {
            user: name.to_owned(),
            vhost: vhost.to_owned(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        })
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

    pub async fn put_user(&self, user: User) -> Result<(), AccessError> {
        self.update(|s| s.put_user(user)).await
    }

    /// Deletes a user and its permissions. Returns whether it existed.
    pub async fn delete_user(&self, name: &str) -> Result<bool, AccessError> {
        self.update(|s| {
            s.permissions.retain(|(u, _), _| u != name);
            Ok(s.users.remove(name).is_some())
        })
        .await
    }

    /// Creates or updates a vhost. Returns whether it was created.
    pub async fn put_vhost(&self, vhost: Vhost) -> Result<bool, AccessError> {
        self.update(|s| Ok(s.vhosts.insert(vhost.name.clone(), vhost).is_none()))
            .await
    }

    /// Deletes a vhost and every permission in it (its streams are the broker's to delete).
    pub async fn delete_vhost(&self, name: &str) -> Result<bool, AccessError> {
        self.update(|s| {
            s.permissions.retain(|(_, v), _| v != name);
            Ok(s.vhosts.remove(name).is_some())
        })
        .await
    }

    pub async fn set_permission(&self, p: Permission) -> Result<(), AccessError> {
        self.update(|s| s.set_permission(p)).await
    }

    /// Returns whether there were permissions to clear.
    pub async fn clear_permission(&self, user: &str, vhost: &str) -> Result<bool, AccessError> {
        self.update(|s| {
            Ok(s.permissions
                .remove(&(user.to_owned(), vhost.to_owned()))
                .is_some())
        })
        .await
    }

    /// Adds or replaces the users, vhosts and permissions of a definitions file, all or none.
    pub async fn import(&self, access: Access) -> Result<(), AccessError> {
        self.update(|s| {
            for v in access.vhosts {
                s.vhosts.insert(v.name.clone(), v);
            }
            for u in access.users {
                s.put_user(u)?;
            }
            for p in access.permissions {
                s.set_permission(p)?;
            }
            Ok(())
        })
        .await
    }
}
