//! Users, virtual hosts and permissions, in the shapes of RabbitMQ's definitions (so that an
//! export from either broker imports into the other).

use serde::{Deserialize, Deserializer, Serialize};

use crate::password;

/// A user. `password_hash` is empty for a user without a password (certificate only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    #[serde(default)]
    pub password_hash: String,
    #[serde(default = "default_algorithm")]
    pub hashing_algorithm: String,
    /// A list; definitions from RabbitMQ before 3.9 have a comma-separated string.
    #[serde(default, deserialize_with = "tags_from_list_or_string")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub limits: serde_json::Map<String, serde_json::Value>,
}

fn default_algorithm() -> String {
    password::SHA256.to_owned()
}

/// RabbitMQ's `tag_list_from/1`: a list, or a comma-separated string.
pub fn tags_from_list_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tags {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Tags::deserialize(d)? {
        Tags::List(list) => list,
        Tags::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

impl User {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    pub fn is_administrator(&self) -> bool {
        self.has_tag("administrator")
    }

    /// administrator or monitoring: sees everything in the management API.
    pub fn is_monitor(&self) -> bool {
        self.is_administrator() || self.has_tag("monitoring")
    }

    /// May use the management API at all.
    pub fn is_management_user(&self) -> bool {
        ["administrator", "monitoring", "policymaker", "management"]
            .iter()
            .any(|t| self.has_tag(t))
    }
}

/// A virtual host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vhost {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, deserialize_with = "tags_from_list_or_string")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_queue_type: Option<String>,
    #[serde(default)]
    pub limits: serde_json::Value,
    /// RabbitMQ 3.11+ exports description and tags under `metadata` too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

impl Vhost {
    pub fn named(name: &str) -> Vhost {
        Vhost {
            name: name.to_owned(),
            description: String::new(),
            tags: Vec::new(),
            default_queue_type: None,
            limits: serde_json::Value::Object(Default::default()),
            metadata: None,
        }
    }
}

/// A user's permissions in one vhost: three regular expressions matched against resource
/// names (stream and super stream names), unanchored, as RabbitMQ's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// What an operation needs (RabbitMQ's configure / write / read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Create and delete streams and super streams.
    Configure,
    /// Publish.
    Write,
    /// Consume, query offsets and sequences, stream statistics.
    Read,
}

/// What `access.json` holds: everything the store keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub vhosts: Vec<Vhost>,
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

/// One change to the users, vhosts and permissions: what a node applies to its store, and what
/// a cluster's metadata log carries so that every node applies the same changes in the same
/// order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessChange {
    PutUser(User),
    /// The user and its permissions.
    DeleteUser(String),
    PutVhost(Vhost),
    /// The vhost and every permission in it.
    DeleteVhost(String),
    SetPermission(Permission),
    ClearPermission {
        user: String,
        vhost: String,
    },
    /// A definitions file's users, vhosts and permissions, all or none.
    Import(Access),
    /// `--user NAME:PASSWORD`: `user` (already hashed, so that every node stores the same)
    /// with full permissions on `vhost`, created if missing.
    EnsureAdmin {
        user: User,
        vhost: String,
    },
}
