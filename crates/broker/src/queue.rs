//! A connection's unbounded queues (frames to write, events for its request loop): many
//! senders, one receiver, the API of tokio's `mpsc::unbounded_channel`.
//!
//! Why not tokio's: its list allocates its first block of 32 slots when the channel is
//! created (3.6 KiB for [`Outgoing`](crate::Outgoing)), so every idle connection paid for two
//! of them — most of its memory (issue #12). Here an empty queue holds no buffer: the deque
//! allocates on the first item and is given back once it drains. Items are chunks and
//! confirm batches, not messages, so one short lock per item costs nothing measurable; what
//! bounds the queue is the connection's budget, not the queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
pub use tokio::sync::mpsc::error::{SendError, TryRecvError};

/// A drained deque keeps its buffer up to this many items (no reallocation in steady flow).
const KEEP_CAPACITY: usize = 64;

#[derive(Debug)]
struct Shared<T> {
    items: Mutex<State<T>>,
    /// The receiver waits here; a stored permit covers a send between its check and its wait.
    ready: Notify,
    senders: AtomicUsize,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    receiver_gone: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock cannot leave the deque inconsistent.
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Creates a queue.
pub fn queue<T>() -> (QueueSender<T>, QueueReceiver<T>) {
    let shared = Arc::new(Shared {
        items: Mutex::new(State {
            items: VecDeque::new(),
            receiver_gone: false,
        }),
        ready: Notify::new(),
        senders: AtomicUsize::new(1),
    });
    (
        QueueSender {
            shared: shared.clone(),
        },
        QueueReceiver { shared },
    )
}

#[derive(Debug)]
pub struct QueueSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for QueueSender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last sender: wake the receiver to see the end.
            self.shared.ready.notify_one();
        }
    }
}

impl<T> QueueSender<T> {
    /// Queues `item`; fails (handing it back) once the receiver is gone.
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        {
            let mut state = self.shared.lock();
            if state.receiver_gone {
                return Err(SendError(item));
            }
            state.items.push_back(item);
        }
        self.shared.ready.notify_one();
        Ok(())
    }
}

#[derive(Debug)]
pub struct QueueReceiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Drop for QueueReceiver<T> {
    fn drop(&mut self) {
        let dropped = {
            let mut state = self.shared.lock();
            state.receiver_gone = true;
            std::mem::take(&mut state.items)
        };
        // Items (and the charges they hold) are dropped outside the lock.
        drop(dropped);
    }
}

impl<T> QueueReceiver<T> {
    /// The next item without waiting.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut state = self.shared.lock();
        match state.items.pop_front() {
            Some(item) => {
                if state.items.is_empty() && state.items.capacity() > KEEP_CAPACITY {
                    state.items = VecDeque::new();
                }
                Ok(item)
            }
            None => Err(self.empty_or_closed()),
        }
    }

    /// Gives the buffer back before the receiver waits: an idle queue holds none.
    fn release_if_empty(&self) {
        let mut state = self.shared.lock();
        if state.items.is_empty() && state.items.capacity() > 0 {
            state.items = VecDeque::new();
        }
    }

    fn empty_or_closed(&self) -> TryRecvError {
        if self.shared.senders.load(Ordering::Acquire) == 0 {
            TryRecvError::Disconnected
        } else {
            TryRecvError::Empty
        }
    }

    /// The next item; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            match self.try_recv() {
                Ok(item) => return Some(item),
                Err(TryRecvError::Disconnected) => {
                    // A last send may have raced with the check.
                    return self.try_recv().ok();
                }
                Err(TryRecvError::Empty) => {
                    self.release_if_empty();
                    self.shared.ready.notified().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_in_order_and_ends_with_the_last_sender() {
        let (tx, mut rx) = queue();
        let tx2 = tx.clone();
        tx.send(1).unwrap();
        tx2.send(2).unwrap();
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx);
        tx2.send(3).unwrap();
        drop(tx2);
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, None);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send_from_another_task() {
        let (tx, mut rx) = queue();
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tokio::spawn(async move { tx.send(7u8) })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(waiter.await.unwrap(), Some(7));
    }

    #[test]
    fn sends_fail_once_the_receiver_is_gone_and_queued_items_are_dropped() {
        let (tx, rx) = queue();
        let item = Arc::new(());
        tx.send(item.clone()).unwrap();
        drop(rx);
        assert_eq!(Arc::strong_count(&item), 1, "dropped with the receiver");
        assert!(tx.send(item).is_err());
    }

    #[tokio::test]
    async fn a_drained_queue_gives_its_buffer_back() {
        let (tx, mut rx) = queue();
        for i in 0..1000 {
            tx.send(i).unwrap();
        }
        while rx.try_recv().is_ok() {}
        assert_eq!(
            rx.shared.lock().items.capacity(),
            0,
            "large: freed when drained"
        );
        tx.send(1).unwrap();
        assert_eq!(rx.recv().await, Some(1));
        assert!(
            rx.shared.lock().items.capacity() > 0,
            "small: kept while flowing"
        );
        let idle = tokio::time::timeout(std::time::Duration::from_millis(1), rx.recv()).await;
        assert!(idle.is_err());
        assert_eq!(rx.shared.lock().items.capacity(), 0, "freed while waiting");
    }
}
