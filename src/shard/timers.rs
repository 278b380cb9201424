//! This shard's connection deadlines (issue 20, point 1): what the tick looks at, so that
//! a tick costs what is due, not how many connections there are.
//!
//! * One `timer::Wheel` entry per tracked connection, at its next deadline: the ping due
//!   a ping interval after its last bytes, the pong overdue, or the close linger over.
//!   Activity never touches the wheel: `last_rx` moves on, the entry fires early, and
//!   the tick arms it again at the real deadline (lazy re-arming).
//! * A list of connections to look at on the next tick: those with bytes read or frames
//!   queued since the last one (a `Cell` check per read batch or flush, never per
//!   message), and those still holding what only a tick can judge — a queue that must
//!   drain (the stall clock) or buffers to give back once quiet.
//!
//! Memory: a connection's `Armed` (16 B, in `Conn`) and its wheel entry (16 B).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::modes::Conn;
use crate::timer::Wheel;

/// A list whose capacity grew past this many connections (a reconnect storm, every
/// connection active in one tick) gives it back at the end of the tick: 65,536 is a busy
/// shard's working set (512 KiB of pointers), kept so that steady traffic lists without
/// allocating.
const LIST_KEEP: usize = 65_536;

/// A connection's wheel entry: its key in `Shard::conns` and the entry's generation.
type ConnEntry = (u32, u32);

/// The wheel and the next tick's list (see the module docs).
pub struct ConnTimers {
    /// Each tracked connection's next deadline.
    wheel: RefCell<Wheel<ConnEntry>>,
    /// Connections to look at on the next tick.
    listed: RefCell<Vec<Rc<Conn>>>,
    /// The list's other buffer: a tick walks one while new listings go to the other, so
    /// listing allocates nothing in steady state.
    spare: Cell<Vec<Rc<Conn>>>,
    /// Scratch for the entries a tick fires.
    fired: Cell<Vec<ConnEntry>>,
    /// The number of the tick running (or last run): a connection listed now is looked
    /// at on the one after. Marks compare for equality only, so wrapping is harmless.
    tick: Cell<u32>,
}

impl std::fmt::Debug for ConnTimers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTimers")
            .field("entries", &self.entries())
            .field("listed", &self.listed.borrow().len())
            .field("tick", &self.tick.get())
            .finish()
    }
}

impl ConnTimers {
    /// Empty, with tick 0 of the wheel at `origin`.
    pub fn new(origin: Instant, period: Duration) -> Self {
        ConnTimers {
            wheel: RefCell::new(Wheel::new(origin, period)),
            listed: RefCell::new(Vec::new()),
            spare: Cell::new(Vec::new()),
            fired: Cell::new(Vec::new()),
            tick: Cell::new(0),
        }
    }

    /// Where the wheel's tick 0 begins: the tick task runs at whole periods after it, so
    /// a deadline fires at most one period late.
    pub fn origin(&self) -> Instant {
        self.wheel.borrow().origin()
    }

    /// Entries in the wheel (one per tracked connection, plus stale ones not yet fired).
    pub fn entries(&self) -> usize {
        self.wheel.borrow().len()
    }

    /// Make sure the tick looks at `conn` no later than the first tick at or after
    /// `deadline` (nothing to do if an earlier entry is live). Untracked: nothing.
    pub fn arm(&self, conn: &Conn, deadline: Instant) {
        let Ok(key) = u32::try_from(conn.key.get()) else {
            return;
        };
        self.wheel
            .borrow_mut()
            .arm(&conn.timer, deadline, |generation| (key, generation));
    }

    /// Look at `conn` on the next tick (once, however often it is listed).
    pub fn list(&self, conn: &Rc<Conn>) {
        if conn.timer.mark(self.tick.get().wrapping_add(1)) {
            self.listed.borrow_mut().push(conn.clone());
        }
    }

    /// A tick begins at `now`: returns its number, the connections listed for it, and
    /// the wheel's entries due by `now`. Both vectors go back through `end`.
    pub fn begin(&self, now: Instant) -> (u32, Vec<Rc<Conn>>, Vec<ConnEntry>) {
        let tick = self.tick.get().wrapping_add(1);
        self.tick.set(tick);
        let mut listed = self.spare.take();
        std::mem::swap(&mut listed, &mut *self.listed.borrow_mut());
        let mut fired = self.fired.take();
        self.wheel.borrow_mut().advance(now, &mut fired);
        (tick, listed, fired)
    }

    /// The tick ended: keep the (emptied) vectors' capacity for the next one.
    pub fn end(&self, mut listed: Vec<Rc<Conn>>, mut fired: Vec<ConnEntry>) {
        listed.clear();
        fired.clear();
        if listed.capacity() > LIST_KEEP {
            listed = Vec::new();
        }
        if fired.capacity() > LIST_KEEP {
            fired = Vec::new();
        }
        self.spare.set(listed);
        self.fired.set(fired);
    }
}
