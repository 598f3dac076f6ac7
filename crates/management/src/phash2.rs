//! Erlang's `erlang:phash2/2`, for the `properties_key` RabbitMQ gives each binding
//! (`rabbit_mgmt_format:pack_binding_props/2`): `routing_key~base64url(phash2(args, 2^32))`.
//! Scripts address a binding by that key (`/api/bindings/V/e/X/q/Q/<props>`), so it must be
//! RabbitMQ's to the bit.
//!
//! A port of `make_hash2` (erts `erl_term_hashing.c`) for the terms binding arguments are made
//! of: lists, tuples, binaries, atoms, integers and floats. `phash2` is documented as stable
//! across Erlang releases and platforms.

use base64::Engine;
use serde_json::Value;

/// An Erlang term, as far as binding arguments need.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Term {
    Atom(&'static str),
    Int(i128),
    Float(f64),
    Binary(Vec<u8>),
    Tuple(Vec<Term>),
    List(Vec<Term>),
}

const HCONST: u32 = 0x9e37_79b9;

const fn hconst(i: u32) -> u32 {
    HCONST.wrapping_mul(i)
}

fn mix(mut a: u32, mut b: u32, mut c: u32) -> (u32, u32, u32) {
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 13);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 8);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 13);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 12);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 16);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 5);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 3);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 10);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 15);
    (a, b, c)
}

fn u32_hash2(hash: u32, x: u32, y: u32, k: u32) -> u32 {
    mix(k.wrapping_add(x), k.wrapping_add(y), hash).2
}

fn le32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .enumerate()
        .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (8 * i)))
}

fn block_hash(data: &[u8], initval: u32) -> u32 {
    let (mut a, mut b, mut c) = (HCONST, HCONST, initval);
    let mut blocks = data.chunks_exact(12);
    for block in &mut blocks {
        a = a.wrapping_add(le32(&block[0..4]));
        b = b.wrapping_add(le32(&block[4..8]));
        c = c.wrapping_add(le32(&block[8..12]));
        (a, b, c) = mix(a, b, c);
    }
    let tail = blocks.remainder();
    // The length is mixed in modulo 2^32, as the C code's `uint32` does.
    c = c.wrapping_add(data.len() as u32);
    for (j, &byte) in tail.iter().enumerate() {
        let byte = u32::from(byte);
        match j {
            0..4 => a = a.wrapping_add(byte << (8 * j)),
            4..8 => b = b.wrapping_add(byte << (8 * (j - 4))),
            _ => c = c.wrapping_add(byte << (8 * (j - 7))),
        }
    }
    mix(a, b, c).2
}

/// The atom table's hash (`hashpjw`).
fn atom_hash(name: &str) -> u32 {
    name.bytes().fold(0u32, |h, v| {
        let h = (h << 4).wrapping_add(u32::from(v));
        let g = h & 0xf000_0000;
        if g != 0 { (h ^ (g >> 24)) ^ g } else { h }
    })
}

fn hash_int(hash: u32, n: i128) -> u32 {
    const SMALL: i128 = 1 << 27;
    const WORD: i128 = 1 << 59;
    if (-SMALL..SMALL).contains(&n) {
        let mut hash = hash;
        if n < 0 {
            hash = u32_hash2(hash, n.unsigned_abs() as u32, 0, HCONST);
        }
        return u32_hash2(hash, n as u32, 0, HCONST);
    }
    let con = if n < 0 { hconst(10) } else { hconst(11) };
    let mut v = n.unsigned_abs();
    if (-WORD..WORD).contains(&n) {
        return u32_hash2(hash, v as u32, (v >> 32) as u32, con);
    }
    let mut hash = hash;
    loop {
        let digit = v as u64;
        v >>= 64;
        hash = u32_hash2(hash, digit as u32, (digit >> 32) as u32, con);
        if v == 0 {
            return hash;
        }
    }
}

/// `erlang:phash2(Term, 2^32)`.
pub(crate) fn phash2(term: &Term) -> u32 {
    enum Item<'a> {
        Term(&'a Term),
        /// The rest of a list, from this index.
        Tail(&'a [Term]),
    }
    let mut hash = 0u32;
    let mut stack = vec![Item::Term(term)];
    while let Some(item) = stack.pop() {
        let term = match item {
            Item::Term(t) => t,
            Item::Tail(rest) => {
                push_list(&mut stack, rest, &mut hash);
                continue;
            }
        };
        match term {
            Term::Atom(name) => {
                let hv = atom_hash(name);
                hash = if hash == 0 {
                    hv
                } else {
                    u32_hash2(hash, hv, 0, hconst(3))
                };
            }
            Term::Int(n) => hash = hash_int(hash, *n),
            Term::Float(f) => {
                let bits = if *f == 0.0 { 0 } else { f.to_bits() };
                hash = u32_hash2(hash, (bits >> 32) as u32, bits as u32, hconst(12));
            }
            Term::Binary(bytes) => {
                let con = hconst(13).wrapping_add(hash);
                hash = if bytes.is_empty() {
                    con
                } else {
                    block_hash(bytes, con)
                };
            }
            Term::Tuple(elements) => {
                hash = u32_hash2(hash, elements.len() as u32, 0, hconst(9));
                stack.extend(elements.iter().rev().map(Item::Term));
            }
            Term::List(elements) => push_list(&mut stack, elements, &mut hash),
        }
    }

    fn push_list<'a>(stack: &mut Vec<Item<'a>>, list: &'a [Term], hash: &mut u32) {
        const NIL: u32 = 2;
        if list.is_empty() {
            *hash = if *hash == 0 {
                3_468_870_702
            } else {
                u32_hash2(*hash, NIL, 0, hconst(2))
            };
            return;
        }
        // Leading small integers 0..=255 (a string) are hashed four bytes at a time.
        let run = list
            .iter()
            .take_while(|t| matches!(t, Term::Int(0..=255)))
            .count();
        let (mut shifted, mut count) = (0u32, 0);
        for t in &list[..run] {
            if let Term::Int(b) = t {
                shifted = (shifted << 8).wrapping_add(*b as u32);
            }
            count += 1;
            if count == 4 {
                *hash = u32_hash2(*hash, shifted, 0, hconst(4));
                (shifted, count) = (0, 0);
            }
        }
        if count > 0 {
            *hash = u32_hash2(*hash, shifted, 0, hconst(4));
        }
        match list.get(run) {
            None => stack.push(Item::Term(&EMPTY_LIST)),
            Some(head) => {
                stack.push(Item::Tail(&list[run + 1..]));
                stack.push(Item::Term(head));
            }
        }
    }
    hash
}

static EMPTY_LIST: Term = Term::List(Vec::new());

/// A JSON value as RabbitMQ stores it in an AMQP table (`rabbit_misc:to_amqp_table`):
/// `{Type, Value}`.
fn amqp_value(value: &Value) -> (&'static str, Term) {
    match value {
        Value::Bool(b) => ("bool", Term::Atom(if *b { "true" } else { "false" })),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ("long", Term::Int(i128::from(i))),
            None => match n.as_u64() {
                Some(u) => ("long", Term::Int(i128::from(u))),
                None => ("double", Term::Float(n.as_f64().unwrap_or(0.0))),
            },
        },
        Value::String(s) => ("longstr", Term::Binary(s.as_bytes().to_vec())),
        Value::Object(map) => ("table", table(map)),
        Value::Array(items) => (
            "array",
            Term::List(
                items
                    .iter()
                    .map(|v| {
                        let (ty, value) = amqp_value(v);
                        Term::Tuple(vec![Term::Atom(ty), value])
                    })
                    .collect(),
            ),
        ),
        Value::Null => ("void", Term::Atom("undefined")),
    }
}

/// An AMQP table: `[{Name, Type, Value}]` sorted by name.
fn table(map: &serde_json::Map<String, Value>) -> Term {
    let mut rows: Vec<(&String, &Value)> = map.iter().collect();
    rows.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Term::List(
        rows.into_iter()
            .map(|(name, v)| {
                let (ty, value) = amqp_value(v);
                Term::Tuple(vec![
                    Term::Binary(name.as_bytes().to_vec()),
                    Term::Atom(ty),
                    value,
                ])
            })
            .collect(),
    )
}

/// RabbitMQ's `properties_key` of a binding.
pub(crate) fn properties_key(
    routing_key: &str,
    arguments: &serde_json::Map<String, Value>,
) -> String {
    let key = quote_plus(routing_key);
    if arguments.is_empty() {
        return if key.is_empty() { "~".into() } else { key };
    }
    let hash = phash2(&table(arguments));
    let suffix = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.to_be_bytes());
    format!("{key}~{suffix}")
}

/// Percent-encoding with `+` for space, as Erlang's `http_uri`/`cow_qs` do; `~` is encoded
/// because it separates the key from the hash.
fn quote_plus(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// Vectors from Erlang/OTP 25's `erlang:phash2(T, 1 bsl 32)`; 0, 1 and 2 are also in the
    /// RabbitMQ 3.10.8 capture (`bindings-invoices.json`).
    #[test]
    fn partition_order_keys_match_rabbitmq() {
        let vectors: &[(i64, &str)] = &[
            (0, "iKEaZQ"),
            (1, "1jlUUQ"),
            (2, "eQ_kzA"),
            (3, "FKkuiw"),
            (10, "8-xWVA"),
            (100, "lfWaVg"),
            (255, "Vy_bjQ"),
            (256, "wSGBlw"),
            (65535, "suYYQQ"),
            (65536, "7jZNxQ"),
            (2147483647, "11P4VQ"),
            (2147483648, "QKYpsQ"),
        ];
        for &(n, hash) in vectors {
            let key = properties_key(
                &n.to_string(),
                &args(json!({"x-stream-partition-order": n})),
            );
            assert_eq!(key, format!("{n}~{hash}"), "order {n}");
        }
    }

    #[test]
    fn other_argument_types_match_rabbitmq() {
        assert_eq!(
            properties_key("", &args(json!({"x-match": "all"}))),
            "~3ujGfg"
        );
        assert_eq!(properties_key("", &args(json!({"a": true}))), "~a2lJKQ");
        assert_eq!(
            properties_key("", &args(json!({"b": "x", "a": 1}))),
            "~TKGQ4A"
        );
    }

    #[test]
    fn keys_without_arguments() {
        assert_eq!(properties_key("", &serde_json::Map::new()), "~");
        assert_eq!(properties_key("a b~c", &serde_json::Map::new()), "a+b%7Ec");
    }
}
