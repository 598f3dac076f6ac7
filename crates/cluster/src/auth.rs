//! The cluster port's authentication: a secret shared by every node, as the Erlang cookie
//! guards RabbitMQ's distribution. Whoever reaches the cluster port can vote, replicate and
//! cut a replica's log, so both ends prove they know the secret before any frame:
//!
//! 1. the accepting node sends a random 32-byte challenge;
//! 2. the connecting node answers with its own challenge and
//!    HMAC-SHA256(secret, "brook-client" ‖ theirs ‖ its own);
//! 3. the accepting node checks it and proves itself with
//!    HMAC-SHA256(secret, "brook-server" ‖ the connecting node's ‖ its own).
//!
//! Fresh challenges on both sides make a recorded exchange useless for another connection.
//! Without a secret (`--cluster-secret-file` not given) there is no exchange, and the node
//! warns at start. The frames themselves are not encrypted: keep the port on a private
//! network.

use std::fmt;
use std::io;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

const NONCE: usize = 32;
const TAG: usize = 32;

/// The cluster's shared secret, or none.
#[derive(Clone, Default)]
pub struct ClusterKey(Option<Arc<[u8]>>);

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "ClusterKey(set)"
        } else {
            "ClusterKey(none)"
        })
    }
}

fn nonce() -> io::Result<[u8; NONCE]> {
    let mut n = [0; NONCE];
    getrandom::fill(&mut n).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(n)
}

fn refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "cluster secret mismatch (check --cluster-secret-file on both nodes)",
    )
}

impl ClusterKey {
    /// `None`: the cluster port is not authenticated.
    pub fn new(secret: Option<&[u8]>) -> ClusterKey {
        ClusterKey(secret.map(Arc::from))
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    fn tag(
        &self,
        key: &[u8],
        role: &[u8],
        first: &[u8],
        second: &[u8],
    ) -> io::Result<Hmac<Sha256>> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(key).map_err(|e| io::Error::other(e.to_string()))?;
        mac.update(role);
        mac.update(first);
        mac.update(second);
        Ok(mac)
    }

    /// The connecting side's half, before its first frame.
    pub(crate) async fn client(&self, stream: &mut BufStream<TcpStream>) -> io::Result<()> {
        let Some(key) = &self.0 else {
            return Ok(());
        };
        let mut theirs = [0; NONCE];
        stream.read_exact(&mut theirs).await?;
        let ours = nonce()?;
        let proof = self
            .tag(key, b"brook-client", &theirs, &ours)?
            .finalize()
            .into_bytes();
        stream.write_all(&ours).await?;
        stream.write_all(&proof).await?;
        stream.flush().await?;
        let mut answer = [0; TAG];
        stream.read_exact(&mut answer).await?;
        self.tag(key, b"brook-server", &ours, &theirs)?
            .verify_slice(&answer)
            .map_err(|_| refused())
    }

    /// The accepting side's half, before it reads any frame.
    pub(crate) async fn server(&self, stream: &mut BufStream<TcpStream>) -> io::Result<()> {
        let Some(key) = &self.0 else {
            return Ok(());
        };
        let ours = nonce()?;
        stream.write_all(&ours).await?;
        stream.flush().await?;
        let mut reply = [0; NONCE + TAG];
        stream.read_exact(&mut reply).await?;
        let (theirs, proof) = reply.split_at(NONCE);
        self.tag(key, b"brook-client", &ours, theirs)?
            .verify_slice(proof)
            .map_err(|_| refused())?;
        let answer = self
            .tag(key, b"brook-server", theirs, &ours)?
            .finalize()
            .into_bytes();
        stream.write_all(&answer).await?;
        stream.flush().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::net::TcpListener;

    /// Runs both halves over loopback: (client's result, server's result).
    async fn handshake(client: ClusterKey, server: ClusterKey) -> (io::Result<()>, io::Result<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepting = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            server.server(&mut BufStream::new(s)).await
        });
        let mut s = BufStream::new(TcpStream::connect(addr).await.unwrap());
        let c = client.client(&mut s).await;
        drop(s);
        (c, accepting.await.unwrap())
    }

    #[tokio::test]
    async fn the_same_secret_passes_and_another_is_refused_on_both_sides() {
        let a = ClusterKey::new(Some(b"one secret"));
        let b = ClusterKey::new(Some(b"another"));
        let (c, s) = handshake(a.clone(), a.clone()).await;
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
        let (_, s) = handshake(b, a.clone()).await;
        assert_eq!(s.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        // A node without the secret never gets past the challenge.
        let (c, s) = handshake(ClusterKey::new(None), a).await;
        assert!(
            c.is_ok(),
            "it sends nothing to check: its first frame is refused instead"
        );
        assert!(s.is_err());
    }
}
