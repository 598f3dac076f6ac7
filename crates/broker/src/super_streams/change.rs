//! Every change to the super stream definitions, as a pure function of the definitions: a
//! single node applies it to its own file (`store.rs`), a cluster applies it in its metadata
//! log's order on every node (`brook-cluster`), so each node routes the same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::SuperStream;
use crate::Error;

/// (vhost, name) → definition.
pub type SuperStreamMap = BTreeMap<(String, String), SuperStream>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SuperStreamChange {
    /// A whole definition (CreateSuperStream); refused if the name is taken.
    Create {
        vhost: String,
        name: String,
        definition: SuperStream,
    },
    /// A definition without partitions, unless it exists (the management API's exchange).
    Declare { vhost: String, name: String },
    /// The definition goes; its partition streams are the caller's to delete or keep.
    Remove { vhost: String, name: String },
    Bind {
        vhost: String,
        super_stream: String,
        stream: String,
        key: String,
        order: Option<u64>,
    },
    Unbind {
        vhost: String,
        super_stream: String,
        stream: String,
        key: String,
    },
    /// A deleted stream leaves every super stream of its vhost, as RabbitMQ drops a deleted
    /// queue's bindings.
    DropPartition { vhost: String, stream: String },
}

/// What a change answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SuperStreamAnswer {
    /// Whether something was created (Declare) or removed (Unbind); `true` for the others.
    Changed(bool),
    /// The definition a Remove took out.
    Removed(SuperStream),
}

/// Applies `change` to `map`; `map` is unchanged on an error.
pub fn apply_super_stream_change(
    map: &mut SuperStreamMap,
    change: SuperStreamChange,
) -> Result<SuperStreamAnswer, Error> {
    use SuperStreamAnswer::Changed;
    match change {
        SuperStreamChange::Create {
            vhost,
            name,
            definition,
        } => {
            if map.contains_key(&(vhost.clone(), name.clone())) {
                return Err(Error::StreamAlreadyExists(name));
            }
            map.insert((vhost, name), definition);
            Ok(Changed(true))
        }
        SuperStreamChange::Declare { vhost, name } => {
            let created = !map.contains_key(&(vhost.clone(), name.clone()));
            map.entry((vhost, name)).or_default();
            Ok(Changed(created))
        }
        SuperStreamChange::Remove { vhost, name } => map
            .remove(&(vhost, name.clone()))
            .map(SuperStreamAnswer::Removed)
            .ok_or(Error::StreamDoesNotExist(name)),
        SuperStreamChange::Bind {
            vhost,
            super_stream,
            stream,
            key,
            order,
        } => defined(map, vhost, super_stream)?
            .bind(&stream, &key, order)
            .map(|()| Changed(true)),
        SuperStreamChange::Unbind {
            vhost,
            super_stream,
            stream,
            key,
        } => Ok(Changed(
            defined(map, vhost, super_stream)?.unbind(&stream, &key),
        )),
        SuperStreamChange::DropPartition { vhost, stream } => {
            let in_vhost = map.iter_mut().filter(|((v, _), _)| *v == vhost);
            for (_, ss) in in_vhost {
                while let Some(i) = ss.partitions.iter().position(|p| *p == stream) {
                    ss.partitions.remove(i);
                    ss.binding_keys.remove(i);
                }
            }
            Ok(Changed(true))
        }
    }
}

fn defined(
    map: &mut SuperStreamMap,
    vhost: String,
    name: String,
) -> Result<&mut SuperStream, Error> {
    map.get_mut(&(vhost, name.clone()))
        .ok_or(Error::StreamDoesNotExist(name))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn bind(stream: &str, key: &str, order: Option<u64>) -> SuperStreamChange {
        SuperStreamChange::Bind {
            vhost: "/".into(),
            super_stream: "orders".into(),
            stream: stream.into(),
            key: key.into(),
            order,
        }
    }

    #[test]
    fn changes_build_remove_and_refuse_definitions() {
        let mut map = SuperStreamMap::new();
        let declare = SuperStreamChange::Declare {
            vhost: "/".into(),
            name: "orders".into(),
        };
        let apply = |map: &mut SuperStreamMap, c| apply_super_stream_change(map, c);
        assert_eq!(
            apply(&mut map, declare.clone()),
            Ok(SuperStreamAnswer::Changed(true))
        );
        assert_eq!(
            apply(&mut map, declare),
            Ok(SuperStreamAnswer::Changed(false))
        );
        apply(&mut map, bind("orders-1", "b", None)).unwrap();
        apply(&mut map, bind("orders-0", "a", Some(0))).unwrap();
        let before = map.clone();
        let create = SuperStreamChange::Create {
            vhost: "/".into(),
            name: "orders".into(),
            definition: SuperStream::default(),
        };
        assert_eq!(
            apply(&mut map, create),
            Err(Error::StreamAlreadyExists("orders".into()))
        );
        assert_eq!(map, before);
        let drop = SuperStreamChange::DropPartition {
            vhost: "/".into(),
            stream: "orders-0".into(),
        };
        apply(&mut map, drop).unwrap();
        let remove = SuperStreamChange::Remove {
            vhost: "/".into(),
            name: "orders".into(),
        };
        assert_eq!(
            apply(&mut map, remove.clone()),
            Ok(SuperStreamAnswer::Removed(SuperStream {
                partitions: vec!["orders-1".into()],
                binding_keys: vec!["b".into()],
            }))
        );
        assert_eq!(
            apply(&mut map, remove),
            Err(Error::StreamDoesNotExist("orders".into()))
        );
    }
}
