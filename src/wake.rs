//! The only door between cores: a crossbeam channel plus a cross-thread wake of the
//! receiving task. Used for each shard's inbox (handoffs, stats requests, shutdown) and
//! for the replies to a stats gather.
//!
//! The receiver parks its `Waker` in a small mutex slot and re-checks the channel; a
//! sender sends, then takes and wakes the parked waker (monoio's `sync` feature makes
//! that wake safe from another thread). The mutex is touched once per cross-core
//! message, never per relayed WebSocket message.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

/// Where a parked receiver's waker waits.
type WakerSlot = Arc<Mutex<Option<Waker>>>;

/// The sending half: cheap to clone, `Send + Sync`.
#[derive(Debug)]
pub struct WakeSender<T> {
    /// The channel proper (unbounded: handoffs are bounded by accepts, replies by shards).
    tx: Sender<T>,
    /// The receiver's parked waker.
    waker: WakerSlot,
}

impl<T> Clone for WakeSender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
        }
    }
}

/// The receiving half, owned by one task on one shard.
#[derive(Debug)]
pub struct WakeReceiver<T> {
    /// The channel proper.
    rx: Receiver<T>,
    /// Where this receiver parks its waker.
    waker: WakerSlot,
}

/// A new channel.
pub fn wake_channel<T>() -> (WakeSender<T>, WakeReceiver<T>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let waker = Arc::new(Mutex::new(None));
    (
        WakeSender {
            tx,
            waker: waker.clone(),
        },
        WakeReceiver { rx, waker },
    )
}

impl<T> WakeSender<T> {
    /// Send and wake the receiver. Returns false when the receiver is gone.
    pub fn send(&self, value: T) -> bool {
        if self.tx.send(value).is_err() {
            return false;
        }
        let parked = match self.waker.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(waker) = parked {
            waker.wake();
        }
        true
    }
}

impl<T> WakeReceiver<T> {
    /// The next message; None once every sender is gone.
    pub async fn recv(&self) -> Option<T> {
        poll_fn(|cx| {
            match self.rx.try_recv() {
                Ok(v) => return Poll::Ready(Some(v)),
                Err(TryRecvError::Disconnected) => return Poll::Ready(None),
                Err(TryRecvError::Empty) => {}
            }
            match self.waker.lock() {
                Ok(mut slot) => *slot = Some(cx.waker().clone()),
                Err(poisoned) => *poisoned.into_inner() = Some(cx.waker().clone()),
            }
            // Re-check: a send between the first try and the parking would otherwise
            // find no waker and be missed.
            match self.rx.try_recv() {
                Ok(v) => Poll::Ready(Some(v)),
                Err(TryRecvError::Disconnected) => Poll::Ready(None),
                Err(TryRecvError::Empty) => Poll::Pending,
            }
        })
        .await
    }
}
