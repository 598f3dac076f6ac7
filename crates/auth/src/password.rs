//! Passwords as RabbitMQ stores them (`rabbit_password`): a 4-byte random salt followed by the
//! hash of salt and password, base64-encoded in definitions. SHA-256 by default, SHA-512 when a
//! definitions file says so.

use base64::Engine;
use sha2::{Digest, Sha256, Sha512};

pub const SHA256: &str = "rabbit_password_hashing_sha256";
pub const SHA512: &str = "rabbit_password_hashing_sha512";

const SALT_LEN: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum HashError {
    #[error("unsupported hashing algorithm {0:?} (brook supports {SHA256} and {SHA512})")]
    Algorithm(String),
    #[error("password_hash is not base64")]
    Encoding,
}

/// Whether `algorithm` is one brook verifies.
pub fn check_algorithm(algorithm: &str) -> Result<(), HashError> {
    match algorithm {
        SHA256 | SHA512 => Ok(()),
        other => Err(HashError::Algorithm(other.to_owned())),
    }
}

fn digest(algorithm: &str, salt: &[u8], password: &[u8]) -> Result<Vec<u8>, HashError> {
    Ok(match algorithm {
        SHA256 => Sha256::new()
            .chain_update(salt)
            .chain_update(password)
            .finalize()
            .to_vec(),
        SHA512 => Sha512::new()
            .chain_update(salt)
            .chain_update(password)
            .finalize()
            .to_vec(),
        other => return Err(HashError::Algorithm(other.to_owned())),
    })
}

/// Hashes `password` with a fresh salt (SHA-256), base64-encoded as in definitions.
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    // Without an entropy source the salt stays zero: still a valid hash, only weaker against
    // precomputed tables. getrandom fails only on exotic platforms.
    if getrandom::fill(&mut salt).is_err() {
        tracing::warn!("no random source for a password salt");
    }
    let mut stored = salt.to_vec();
    stored.extend(digest(SHA256, &salt, password.as_bytes()).unwrap_or_default());
    base64::engine::general_purpose::STANDARD.encode(stored)
}

/// Checks `password` against a stored base64 hash. A blank password, or a user without one
/// (an empty hash, certificate-only users), never matches — as in RabbitMQ.
pub fn verify(algorithm: &str, stored: &str, password: &str) -> bool {
    if password.is_empty() {
        return false;
    }
    let Ok(stored) = base64::engine::general_purpose::STANDARD.decode(stored) else {
        return false;
    };
    let Some((salt, expected)) = stored.split_at_checked(SALT_LEN) else {
        return false;
    };
    match digest(algorithm, salt, password.as_bytes()) {
        Ok(actual) => constant_time_eq(&actual, expected),
        Err(_) => false,
    }
}

/// Work of one verification, for unknown users: a failed login takes as long either way.
pub fn verify_nothing(password: &str) {
    let _ = digest(SHA256, &[0; SALT_LEN], password.as_bytes());
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a stored hash's encoding (definitions import).
pub fn check_stored(stored: &str) -> Result<(), HashError> {
    if stored.is_empty() {
        return Ok(());
    }
    base64::engine::general_purpose::STANDARD
        .decode(stored)
        .map(|_| ())
        .map_err(|_| HashError::Encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_salts_differ() {
        let a = hash("secret");
        assert!(verify(SHA256, &a, "secret"));
        assert!(!verify(SHA256, &a, "Secret"));
        assert!(!verify(SHA256, &a, ""));
        assert!(!verify(SHA256, "", "secret"));
        assert_ne!(a, hash("secret"));
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&a)
                .unwrap()
                .len(),
            36
        );
    }

    /// A hash made the way RabbitMQ makes it: salt 0x01020304, SHA-256(salt ++ "alice-pw").
    #[test]
    fn verifies_rabbitmq_hashes() {
        let salt = [1u8, 2, 3, 4];
        let mut stored = salt.to_vec();
        stored.extend(Sha256::digest([&salt[..], b"alice-pw"].concat()));
        let b64 = base64::engine::general_purpose::STANDARD.encode(&stored);
        assert!(verify(SHA256, &b64, "alice-pw"));
        let mut stored = salt.to_vec();
        stored.extend(Sha512::digest([&salt[..], b"alice-pw"].concat()));
        let b64 = base64::engine::general_purpose::STANDARD.encode(&stored);
        assert!(verify(SHA512, &b64, "alice-pw"));
        assert!(check_algorithm("rabbit_password_hashing_md5").is_err());
    }
}
