//! A worker's context: what its tasks share through `Rc` (plan, clock, recorder,
//! streams, the traffic window) and what the worker shares with the main thread
//! ([`Control`]). The scenarios receive it; they never reach into [`crate::worker`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use crate::clock::{Nanos, RunClock};
use crate::local::Gate;
use crate::net::SourcePicker;
use crate::plan::Plan;
use crate::stats::{Recorder, Totals};
use crate::stream::StreamState;

/// Read buffer asked for per read on a busy connection.
const ACTIVE_CHUNK: usize = 16 * 1024;
/// Read buffer per read on an idle connection (pings and closes only).
const IDLE_CHUNK: usize = 512;
/// Bytes queued per connection before a paced sender waits: a few hundred messages.
const OUTBOX_LIMIT: usize = 1 << 20;

/// What a worker shares with the main thread.
pub struct Control {
    /// The run's clock.
    pub clock: RunClock,
    /// Connections upgraded so far, all workers.
    pub conns_up: AtomicU64,
    /// Units whose setup finished (either way), all workers.
    pub units_settled: AtomicU64,
    /// Traffic start on the run clock; 0 until the main thread sets it.
    pub traffic_start: AtomicU64,
    /// Each worker's latest snapshot, for the progress line.
    pub snapshots: Vec<Mutex<Snapshot>>,
}

/// One worker's figures as of its last publication.
#[derive(Default)]
pub struct Snapshot {
    /// Totals so far.
    pub totals: Totals,
    /// Connections open now.
    pub live: usize,
}

impl Control {
    /// Control for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self {
            clock: RunClock::start(),
            conns_up: AtomicU64::new(0),
            units_settled: AtomicU64::new(0),
            traffic_start: AtomicU64::new(0),
            snapshots: (0..workers)
                .map(|_| Mutex::new(Snapshot::default()))
                .collect(),
        }
    }
}

/// The traffic window on the run clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    /// First scheduled send.
    pub start: Nanos,
    /// End of the warm-up (start of measurement).
    pub warmup_end: Nanos,
    /// No send scheduled at or after this.
    pub end: Nanos,
}

/// A worker's state, shared by its tasks through `Rc`.
pub struct WorkerCtx {
    /// Worker index.
    pub id: usize,
    /// The run's plan.
    pub plan: Arc<Plan>,
    /// Shared with the main thread.
    pub control: Arc<Control>,
    /// The run's clock.
    pub clock: RunClock,
    /// This worker's measurements.
    pub stats: Rc<Recorder>,
    /// Open connections (kept by each reader's `LiveGuard`).
    pub live: Rc<Cell<usize>>,
    /// Source addresses, round-robin.
    pub sources: SourcePicker,
    /// Opens when traffic starts.
    pub gate: Gate,
    /// The traffic window, once known.
    pub window: Cell<Window>,
    /// Set when the run is ending: closes and disconnects are expected from now on.
    pub closing: Cell<bool>,
    /// Every stream of this worker, for the drain and the final accounting.
    pub streams: RefCell<Vec<Rc<StreamState>>>,
    /// Pad for JSON probes of the planned size, shared by every sender.
    pub json_pad: Rc<str>,
    /// Filler for binary probes of the planned size, shared by every sender.
    pub binary_fill: Rc<[u8]>,
    /// Ticket slots still running.
    pub slots_running: Cell<usize>,
    /// Ticket transfers in flight (the drain waits for them).
    pub transfers_running: Cell<usize>,
    /// When this worker's traffic phase ended (the window's end, or earlier when a
    /// ticket `--count` was reached).
    pub traffic_done: Cell<Nanos>,
}

impl WorkerCtx {
    /// Bytes asked for per read.
    pub fn read_chunk(&self) -> usize {
        if self.plan.idle {
            IDLE_CHUNK
        } else {
            ACTIVE_CHUNK
        }
    }

    /// Per-connection outbox limit.
    pub fn outbox_limit(&self) -> usize {
        OUTBOX_LIMIT.max(self.plan.size * 4)
    }

    /// Whether closes and disconnects are now expected.
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }
}
