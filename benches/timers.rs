//! One shard's heartbeat tick with 1,000,000 registered idle connections (issue 20,
//! point 1), simulated in-process: no sockets, only what a tick touches.
//!
//! * `walk`: a faithful model of the tick before the timing wheel (`shard/tick.rs` at
//!   commit 5161f96): collect an `Rc` of every connection into a `Vec`, then check each
//!   one — the stall clock, the close linger, the heartbeat, the idle-buffer release.
//! * `wheel`: the same connections, each with one entry in a `timer::Wheel`; a tick
//!   fires what is due and visits only those.
//!
//! * `wheel_deadlines_4h_out`: the same million with deadlines four hours out (re-armed
//!   four hours out): ~35 expire per tick.
//!
//! `walk` and `wheel` run the same steady state: last activity spread evenly over one ping interval
//! (30 s, 500 ms ticks: 1/60 of the connections are due for a ping each tick), and a
//! pinged client answers at once (its pong moves `last_rx`). Each iteration is one tick
//! of simulated time.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardrelay::timer::{Armed, Wheel};
use slab::Slab;

/// Registered idle connections on the one shard.
const CONNECTIONS: usize = 1_000_000;
/// The default tick (`Config::tick_period` with default timers).
const TICK: Duration = Duration::from_millis(500);
/// The default ping interval and pong timeout.
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PONG_TIMEOUT: Duration = Duration::from_secs(30);
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
const CLOSE_LINGER: Duration = Duration::from_secs(5);
/// Deadlines beyond the fine level (coarse entries, cascading once each).
const FOUR_HOURS: Duration = Duration::from_secs(4 * 3600);

/// The fields of `ws::conn::Conn` a tick reads or writes.
struct Conn {
    /// `Conn::out`: empty for an idle connection, its ring already given back.
    out: RefCell<VecDeque<u64>>,
    progressed: Cell<bool>,
    stalled_since: Cell<Option<Instant>>,
    closing_since: Cell<Option<Instant>>,
    broken: Cell<bool>,
    last_rx: Cell<Instant>,
    ping_pending: Cell<bool>,
    paused: Cell<bool>,
    partial: Cell<Vec<u8>>,
    held: Cell<usize>,
    /// Only the wheel model uses it.
    timer: Armed,
}

impl Conn {
    fn idle(last_rx: Instant) -> Rc<Self> {
        Rc::new(Conn {
            out: RefCell::new(VecDeque::new()),
            progressed: Cell::new(false),
            stalled_since: Cell::new(None),
            closing_since: Cell::new(None),
            broken: Cell::new(false),
            last_rx: Cell::new(last_rx),
            ping_pending: Cell::new(false),
            paused: Cell::new(false),
            partial: Cell::new(Vec::new()),
            held: Cell::new(0),
            timer: Armed::default(),
        })
    }

    fn is_open(&self) -> bool {
        self.closing_since.get().is_none() && !self.broken.get()
    }

    /// `Conn::stalled` with no memory pressure.
    fn stalled(&self, now: Instant) -> bool {
        let progressed = self.progressed.replace(false);
        if self.out.borrow().is_empty() || progressed {
            self.stalled_since.set(None);
            return false;
        }
        let since = *self.stalled_since.get().get_or_insert(now);
        self.stalled_since.set(Some(since));
        now.saturating_duration_since(since) >= STALL_TIMEOUT
    }

    /// `Conn::release_idle_buffers`.
    fn release_idle_buffers(&self) {
        {
            let mut out = self.out.borrow_mut();
            if out.is_empty() && out.capacity() > 0 {
                *out = VecDeque::new();
            }
        }
        let partial = self.partial.take();
        if !partial.is_empty() {
            self.partial.set(partial);
        }
        self.held.set(black_box(0));
    }

    /// The ping goes out and the client answers at once.
    fn ping_answered(&self, now: Instant) {
        self.ping_pending.set(true);
        black_box(&self.ping_pending);
        self.last_rx.set(now);
        self.ping_pending.set(false);
    }

    /// Today's per-connection body of `tick::heartbeat`.
    fn check(&self, now: Instant) {
        if self.is_open() && self.stalled(now) {
            self.broken.set(true);
            return;
        }
        if let Some(since) = self.closing_since.get() {
            if now.saturating_duration_since(since) >= CLOSE_LINGER {
                self.broken.set(true);
            }
            return;
        }
        if self.paused.get() {
            return;
        }
        let quiet = now.saturating_duration_since(self.last_rx.get());
        if self.ping_pending.get() {
            if quiet >= PING_INTERVAL + TICK + PONG_TIMEOUT {
                self.broken.set(true);
            }
        } else if quiet >= PING_INTERVAL {
            self.ping_answered(now);
        }
        if quiet >= TICK {
            self.release_idle_buffers();
        }
    }

    /// When this connection next needs a look.
    fn next_deadline(&self) -> Instant {
        if self.ping_pending.get() {
            self.last_rx.get() + PING_INTERVAL + TICK + PONG_TIMEOUT
        } else {
            self.last_rx.get() + PING_INTERVAL
        }
    }
}

/// A shard's connection table of idle connections, their last activity spread over the
/// ping interval that ends at `start + PING_INTERVAL` (where the simulated clock starts).
fn connections(start: Instant) -> Slab<Rc<Conn>> {
    let spread = (PING_INTERVAL.as_millis() / TICK.as_millis()) as usize;
    let mut conns = Slab::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let ago = TICK * (i % spread) as u32 + Duration::from_millis((i % 499) as u64);
        conns.insert(Conn::idle(start + PING_INTERVAL - ago));
    }
    conns
}

/// The tick before the wheel: every connection, every tick.
fn walk_tick(conns: &RefCell<Slab<Rc<Conn>>>, now: Instant) {
    let all: Vec<Rc<Conn>> = conns.borrow().iter().map(|(_, c)| c.clone()).collect();
    for conn in all {
        conn.check(now);
    }
}

/// What the wheel model keeps between ticks.
struct WheelShard {
    wheel: Wheel<(u32, u32)>,
    /// Scratch for what fires.
    fired: Vec<(u32, u32)>,
    /// Connections that were active since the last tick (here: the pongs), visited at the
    /// next one to give back their buffers (the relay's "recently active" list).
    active: Vec<Rc<Conn>>,
    /// The list being visited (swapped with `active`, so neither allocates).
    visiting: Vec<Rc<Conn>>,
}

/// The tick with the wheel: what is due and what was active, and only that.
/// `rearm` says when a visited connection is next due.
fn wheel_tick(
    conns: &RefCell<Slab<Rc<Conn>>>,
    shard: &mut WheelShard,
    now: Instant,
    rearm: fn(&Conn, Instant) -> Instant,
) {
    std::mem::swap(&mut shard.active, &mut shard.visiting);
    for conn in shard.visiting.drain(..) {
        conn.check(now);
    }
    shard.wheel.advance(now, &mut shard.fired);
    let table = conns.borrow();
    for (key, generation) in shard.fired.drain(..) {
        let Some(conn) = table.get(key as usize) else {
            continue;
        };
        if !conn.timer.fire(generation) {
            continue;
        }
        let rx = conn.last_rx.get();
        conn.check(now);
        if conn.last_rx.get() != rx {
            // Pinged and answered: the pong's read lists it as active.
            shard.active.push(conn.clone());
        }
        shard.wheel.arm(&conn.timer, rearm(conn, now), |g| (key, g));
    }
}

fn tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("tick_1m_idle");
    g.sample_size(10);
    g.throughput(Throughput::Elements(CONNECTIONS as u64));

    let start = Instant::now();
    let conns = RefCell::new(connections(start));
    let mut now = start + PING_INTERVAL;
    g.bench_function("walk", |b| {
        b.iter(|| {
            now += TICK;
            walk_tick(&conns, now);
        })
    });
    drop(conns);

    let start = Instant::now();
    let conns = RefCell::new(connections(start));
    let mut wheel = Wheel::new(start, TICK);
    for (key, conn) in conns.borrow().iter() {
        wheel.arm(&conn.timer, conn.next_deadline(), |g| (key as u32, g));
    }
    let mut shard = WheelShard {
        wheel,
        fired: Vec::new(),
        active: Vec::new(),
        visiting: Vec::new(),
    };
    let mut now = start + PING_INTERVAL;
    g.bench_function("wheel", |b| {
        b.iter(|| {
            now += TICK;
            wheel_tick(&conns, &mut shard, now, |conn, _| conn.next_deadline());
        })
    });
    assert_eq!(
        shard.wheel.len(),
        CONNECTIONS,
        "one live entry per connection"
    );
    drop(shard);

    // The same million with deadlines four hours out (re-armed four hours out when they
    // fire): about 35 expire per tick, and the tick costs those.
    let start = Instant::now();
    let conns = RefCell::new(connections(start));
    let mut wheel = Wheel::new(start, TICK);
    for (key, conn) in conns.borrow().iter() {
        let later = conn.last_rx.get() + FOUR_HOURS;
        wheel.arm(&conn.timer, later, |g| (key as u32, g));
    }
    let mut shard = WheelShard {
        wheel,
        fired: Vec::new(),
        active: Vec::new(),
        visiting: Vec::new(),
    };
    let mut now = start + PING_INTERVAL;
    g.bench_function("wheel_deadlines_4h_out", |b| {
        b.iter(|| {
            now += TICK;
            wheel_tick(&conns, &mut shard, now, |_, now| now + FOUR_HOURS);
        })
    });
    assert_eq!(
        shard.wheel.len(),
        CONNECTIONS,
        "one live entry per connection"
    );
    g.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);
