//! Who may do what: users (with RabbitMQ's password hashing and tags), virtual hosts, and
//! configure / write / read permissions per user and vhost, checked as RabbitMQ checks them.
//! No sockets: the stream connection and the management API ask this crate.

mod model;
pub mod password;
mod state;
mod store;

pub use model::{Access, AccessChange, Perm, Permission, User, Vhost, tags_from_list_or_string};
pub use state::apply_change;
pub use store::{AccessError, AccessStore, Bootstrap, BoxFuture, Refused, Replicator};

#[cfg(test)]
mod tests;
