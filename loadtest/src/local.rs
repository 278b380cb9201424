//! Single-thread coordination between tasks of one worker: a one-waiter [`Signal`],
//! a many-waiter one-shot [`Gate`] and a counting [`Semaphore`]. None of them is
//! `Send`: a worker's tasks share them through `Rc`, never across cores.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// Wakes one waiting task; a notification before the wait is remembered once.
#[derive(Default)]
pub struct Signal {
    /// Set by `notify`, consumed by the wait that observes it.
    fired: Cell<bool>,
    /// The task parked in `wait`, if any.
    waker: Cell<Option<Waker>>,
}

impl Signal {
    /// Marks the signal and wakes the waiter.
    pub fn notify(&self) {
        self.fired.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Waits for the next notification (or consumes a pending one).
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.fired.replace(false) {
                return Poll::Ready(());
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await;
    }
}

/// Opens once and releases every task waiting on it (the start of traffic).
#[derive(Default)]
pub struct Gate {
    /// Once true it stays true.
    open: Cell<bool>,
    /// Tasks parked until the gate opens.
    waiters: RefCell<Vec<Waker>>,
}

impl Gate {
    /// Opens the gate and wakes every waiter.
    pub fn open(&self) {
        self.open.set(true);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Whether the gate has opened.
    pub fn is_open(&self) -> bool {
        self.open.get()
    }

    /// Waits until the gate is open.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.open.get() {
                return Poll::Ready(());
            }
            self.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }
}

/// Bounds how many connection attempts of one worker are in flight at once.
pub struct Semaphore {
    /// Permits not handed out.
    free: Cell<usize>,
    /// Tasks waiting for a permit, oldest first.
    waiters: RefCell<VecDeque<Waker>>,
}

/// A held permit; dropping it returns the permit and wakes the next waiter.
pub struct Permit {
    /// The semaphore the permit goes back to.
    owner: Rc<Semaphore>,
}

impl Semaphore {
    /// A semaphore with `permits` permits (at least one).
    pub fn new(permits: usize) -> Rc<Self> {
        Rc::new(Self {
            free: Cell::new(permits.max(1)),
            waiters: RefCell::new(VecDeque::new()),
        })
    }

    /// Waits for a permit.
    pub async fn acquire(self: &Rc<Self>) -> Permit {
        poll_fn(|cx| {
            let free = self.free.get();
            if free > 0 {
                self.free.set(free - 1);
                return Poll::Ready(());
            }
            self.waiters.borrow_mut().push_back(cx.waker().clone());
            Poll::Pending
        })
        .await;
        Permit {
            owner: Rc::clone(self),
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.owner.free.set(self.owner.free.get() + 1);
        if let Some(waker) = self.owner.waiters.borrow_mut().pop_front() {
            waker.wake();
        }
    }
}
