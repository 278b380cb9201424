//! The shard's one housekeeping task. Every tick it looks at the connections that are
//! due (`timers`: a timing-wheel entry at each connection's next heartbeat or close
//! deadline) or were active since the last tick, for heartbeats, the stall clock,
//! close-handshake deadlines and idle buffers; then lets each rendezvous expire what is
//! due (takeover probes, grace windows, TTLs). One task per shard instead of a timer
//! future per connection keeps idle connections cheap, and a tick costs what is due, not
//! how many connections there are (issue 20). The tick period (`Config::tick_period`)
//! bounds how late a deadline can fire: the task runs at whole periods after the wheel's
//! origin, and an entry fires at the first tick at or after its deadline.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::modes;
use crate::modes::Conn;
use crate::shard::Shard;
use crate::stats::Event;
use crate::ws::conn::Phase;

/// How long a closing connection may take to finish the close handshake before its
/// socket is shut down: generous for a slow client, short enough that a dead one does
/// not hold a descriptor.
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Tick until the shard's runtime ends, at whole periods after the wheel's origin.
pub async fn run(shard: Rc<Shard>) {
    let period = shard.config().tick_period();
    let first = monoio::time::Instant::from_std(shard.timers.origin() + period);
    let mut interval = monoio::time::interval_at(first, period);
    loop {
        let scheduled = interval.tick().await.into_std();
        // Never behind the schedule, should the runtime's millisecond timer wake a hair
        // early: the wheel must see this tick's slot as begun.
        tick_once(&shard, Instant::now().max(scheduled));
    }
}

/// One tick.
fn tick_once(shard: &Rc<Shard>, now: Instant) {
    heartbeat(shard, now);
    modes::tick(shard, now);
    shard.flush_dirty();
    crate::memory::collect_if_released();
}

/// A connection whose queue did not drain for the stall timeout (PROTOCOL §2.1): its
/// backlog is dropped and it gets `1008 "not reading"` — or, if even that frame cannot be
/// written, its socket is shut down once the close linger passes. Readers paused on its
/// queue resume.
fn close_not_reading(shard: &Rc<Shard>, conn: &Rc<Conn>) {
    shard.stats.borrow_mut().event(Event::NotReading);
    tracing::debug!(shard = shard.id, peer = %conn.peer(), kind = conn.kind.get().name(), "closing a connection that does not read");
    conn.close_not_reading(shard);
}

/// Look at the connections whose wheel entry came due and those listed for this tick
/// (each once): see `check`, then `follow_up`.
fn heartbeat(shard: &Rc<Shard>, now: Instant) {
    let share = modes::pressure_share(&**shard);
    let (tick, mut listed, mut fired) = shard.timers.begin(now);
    for (key, generation) in fired.drain(..) {
        let conn = shard.conns.borrow().get(key as usize).cloned();
        let Some(conn) = conn else {
            continue;
        };
        // Stale (superseded, or the key's connection is another now), or listed for
        // this tick and looked at below: not here.
        if conn.timer.fire(generation) && !conn.timer.is_marked(tick) {
            visit(shard, &conn, now, share);
        }
    }
    for conn in listed.drain(..) {
        visit(shard, &conn, now, share);
    }
    shard.timers.end(listed, fired);
}

/// One look at a tracked connection: what is due now, then when to look again.
fn visit(shard: &Rc<Shard>, conn: &Rc<Conn>, now: Instant, share: Option<usize>) {
    if conn.key.get() == usize::MAX {
        // Forgotten since it was listed (ended, or moved to another shard).
        return;
    }
    check(shard, conn, now, share);
    follow_up(shard, conn, now);
}

/// Close a connection whose queue stalled (see `close_not_reading`); ping one quiet for
/// a ping interval; close one that did not answer within the pong timeout (counted
/// from the latest the ping can have left: the first tick after `last_rx +
/// ping_interval`); abort a close handshake past its linger; give back the buffers of a
/// connection quiet for a tick.
fn check(shard: &Rc<Shard>, conn: &Rc<Conn>, now: Instant, share: Option<usize>) {
    let cfg = shard.config();
    let period = cfg.tick_period();
    if conn.is_open() && conn.stalled(now, cfg.stall_timeout, share) {
        close_not_reading(shard, conn);
        return;
    }
    match conn.phase() {
        Phase::Closing { since, .. } => {
            if now.saturating_duration_since(since) >= CLOSE_LINGER {
                conn.abort();
            }
        }
        Phase::Open if conn.paused.get() => {}
        Phase::Open => {
            let quiet = now.saturating_duration_since(conn.last_rx.get());
            if conn.ping_pending.get() {
                // The ping left within a tick of its due time: a full pong timeout
                // after the latest it can have left.
                if quiet >= cfg.ping_interval + period + cfg.pong_timeout {
                    shard.stats.borrow_mut().event(Event::HeartbeatTimeouts);
                    conn.failed.set(true);
                    conn.close_discarding(shard, 1011, "heartbeat timeout");
                }
            } else if quiet >= cfg.ping_interval {
                conn.ping(shard);
            }
            if quiet >= period {
                conn.release_idle_buffers();
            }
        }
        // Broken or moved: the socket is already shut down, or lives elsewhere.
        Phase::Broken | Phase::Moved => {}
    }
}

/// After a look: arm the connection's wheel entry for its next deadline (kept if an
/// earlier one is live; an entry that fires early is re-armed then), and list it for
/// the next tick if that tick must look — a queue not yet drained (the stall clock
/// counts whole ticks), read-side buffers held (at the memory limit they count against
/// its share), or buffers not yet given back because it was active within a tick.
fn follow_up(shard: &Rc<Shard>, conn: &Rc<Conn>, now: Instant) {
    let cfg = shard.config();
    let period = cfg.tick_period();
    let last_rx = conn.last_rx.get();
    let deadline = match conn.phase() {
        Phase::Closing { since, .. } => since + CLOSE_LINGER,
        // Paused: no heartbeat until it reads again (which moves `last_rx`).
        Phase::Open if conn.paused.get() => now + cfg.ping_interval,
        Phase::Open if conn.ping_pending.get() => {
            last_rx + cfg.ping_interval + period + cfg.pong_timeout
        }
        Phase::Open => last_rx + cfg.ping_interval,
        Phase::Broken | Phase::Moved => return,
    };
    shard.timers.arm(conn, deadline);
    let recent = now.saturating_duration_since(last_rx) < period;
    let open_and_busy = conn.is_open() && (conn.queued_bytes() > 0 || recent);
    if open_and_busy || conn.held_bytes() > 0 {
        shard.timers.list(conn);
    }
}
