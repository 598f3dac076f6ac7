//! The one bound on what a connection can make the broker hold in memory.
//!
//! Every byte brook keeps for a connection is charged to that connection's [`Budget`]: a
//! request from the moment it is read until it is handled (a Publish until its confirms are
//! written to the socket), and every frame queued for its socket until it is written. The
//! connection reads its socket only while it can charge the next frame, so a client that sends
//! faster than it reads (pipelined requests, publishes whose confirms it never reads, credit it
//! grants but does not read) meets TCP back-pressure, as with RabbitMQ's reader, instead of
//! growing brook's memory. Subscription *credit* is the protocol's flow control and a separate
//! thing.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes one connection may hold. It bounds memory per connection (16 MiB) and is enough to
/// keep a fast publisher and its consumers busy: 16 Publish frames of the default maximum size
/// in flight.
pub const CONNECTION_BUDGET_BYTES: usize = 16 << 20;

/// A connection's budget; clones share it.
#[derive(Debug, Clone)]
pub struct Budget {
    bytes: Arc<Semaphore>,
    limit: usize,
}

/// A share of a budget, given back when dropped (a frame written, a request handled).
#[derive(Debug, Default)]
#[must_use = "a charge is returned as soon as it is dropped"]
pub struct Charge(Option<OwnedSemaphorePermit>);

impl Budget {
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, u32::MAX as usize);
        Self {
            bytes: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// Charges `bytes`, waiting until they fit; waiters are served in order. A single charge
    /// larger than the whole budget waits for all of it instead. Once the budget is closed the
    /// charge is empty and returns at once.
    pub async fn charge(&self, bytes: usize) -> Charge {
        let n = bytes.clamp(1, self.limit) as u32;
        Charge(self.bytes.clone().acquire_many_owned(n).await.ok())
    }

    /// Charges `bytes` if they fit now, without waiting.
    pub fn try_charge(&self, bytes: usize) -> Option<Charge> {
        let n = bytes.clamp(1, self.limit) as u32;
        self.bytes
            .clone()
            .try_acquire_many_owned(n)
            .ok()
            .map(|p| Charge(Some(p)))
    }

    /// Bytes not charged now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Ends every wait: the connection is gone.
    pub fn close(&self) {
        self.bytes.close();
    }
}

impl Charge {
    /// Adds another charge to this one; both are returned together.
    pub fn merge(&mut self, other: Charge) {
        match (&mut self.0, other.0) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |p| p.num_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn charges_wait_for_room_and_return_on_drop() {
        let budget = Budget::new(100);
        let mut a = budget.charge(60).await;
        a.merge(budget.charge(30).await);
        assert_eq!((a.bytes(), budget.available()), (90, 10));
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.charge(50).await.bytes() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a);
        assert_eq!(waiting.await.ok(), Some(50));
        // Larger than the budget: waits for all of it.
        assert_eq!(budget.charge(1_000).await.bytes(), 100);
        budget.close();
        assert_eq!(budget.charge(10).await.bytes(), 0);
    }
}
