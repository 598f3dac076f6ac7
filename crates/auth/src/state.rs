//! The users, vhosts and permissions themselves, and every change to them as a pure function
//! of the state: one node applies them to its own store (`store.rs`), a cluster applies them
//! in its metadata log's order on every node (`apply_change`).

use std::collections::BTreeMap;

use regex::Regex;

use crate::model::{Access, AccessChange, Perm, Permission, User, Vhost};
use crate::password;
use crate::store::{AccessError, Bootstrap};

/// RabbitMQ refuses patterns longer than this (4.2.9+).
const MAX_PATTERN_LEN: usize = 1024;

#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub(crate) spec: Permission,
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

    pub(crate) fn allows(&self, perm: Perm, resource: &str) -> bool {
        match perm {
            Perm::Configure => &self.configure,
            Perm::Write => &self.write,
            Perm::Read => &self.read,
        }
        .is_match(resource)
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct State {
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) vhosts: BTreeMap<String, Vhost>,
    /// (user, vhost) → permissions.
    pub(crate) permissions: BTreeMap<(String, String), Compiled>,
}

impl State {
    pub(crate) fn from_access(access: Access) -> Result<Self, AccessError> {
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

    pub(crate) fn to_access(&self) -> Access {
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
    pub(crate) fn bootstrap(&mut self, b: &Bootstrap) -> Result<bool, AccessError> {
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
        self.ensure_admin_user(admin(name, pass), vhost)
    }

    /// `user` exists as given, with full permissions on `vhost` (created if missing).
    fn ensure_admin_user(&mut self, user: User, vhost: &str) -> Result<(), AccessError> {
        self.vhosts
            .entry(vhost.to_owned())
            .or_insert_with(|| Vhost::named(vhost));
        let name = user.name.clone();
        self.put_user(user)?;
        self.set_permission(Permission {
            user: name,
            vhost: vhost.to_owned(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        })
    }

    /// Applies one change. The answer says whether the user, vhost or permission was there
    /// before (deletes), or was created (vhosts); other changes answer `true`.
    pub(crate) fn apply(&mut self, change: AccessChange) -> Result<bool, AccessError> {
        match change {
            AccessChange::PutUser(user) => self.put_user(user).map(|()| true),
            AccessChange::DeleteUser(name) => {
                self.permissions.retain(|(u, _), _| *u != name);
                Ok(self.users.remove(&name).is_some())
            }
            AccessChange::PutVhost(vhost) => {
                Ok(self.vhosts.insert(vhost.name.clone(), vhost).is_none())
            }
            AccessChange::DeleteVhost(name) => {
                self.permissions.retain(|(_, v), _| *v != name);
                Ok(self.vhosts.remove(&name).is_some())
            }
            AccessChange::SetPermission(p) => self.set_permission(p).map(|()| true),
            AccessChange::ClearPermission { user, vhost } => {
                Ok(self.permissions.remove(&(user, vhost)).is_some())
            }
            AccessChange::Import(access) => self.import(access).map(|()| true),
            AccessChange::EnsureAdmin { user, vhost } => {
                self.ensure_admin_user(user, &vhost).map(|()| true)
            }
        }
    }

    /// Adds or replaces the users, vhosts and permissions of a definitions file.
    fn import(&mut self, access: Access) -> Result<(), AccessError> {
        for v in access.vhosts {
            self.vhosts.insert(v.name.clone(), v);
        }
        for u in access.users {
            self.put_user(u)?;
        }
        for p in access.permissions {
            self.set_permission(p)?;
        }
        Ok(())
    }
}

/// An administrator named `name` with password `pass` (a fresh salt).
pub(crate) fn admin(name: &str, pass: &str) -> User {
    User {
        name: name.to_owned(),
        password_hash: password::hash(pass),
        hashing_algorithm: password::SHA256.to_owned(),
        tags: vec!["administrator".into()],
        limits: Default::default(),
    }
}

/// `change` applied to `access`, as every node of a cluster applies it to the users, vhosts
/// and permissions the cluster's metadata holds; `access` is unchanged on an error.
pub fn apply_change(access: &Access, change: AccessChange) -> Result<(Access, bool), AccessError> {
    let mut state = State::from_access(access.clone())?;
    let answer = state.apply(change)?;
    Ok((state.to_access(), answer))
}
