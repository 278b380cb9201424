//! The shard's one housekeeping task. Every tick it walks the shard's connections for
//! heartbeats and close-handshake deadlines and lets each rendezvous expire what is due
//! (takeover probes, grace windows, TTLs). One task per shard instead of a timer future
//! per connection keeps idle connections cheap; the tick period (`Config::tick_period`)
//! bounds how late a deadline can fire.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::modes;
use crate::modes::Conn;
use crate::shard::Shard;
use crate::ws::conn::Phase;

/// How long a closing connection may take to finish the close handshake before its
/// socket is shut down: generous for a slow client, short enough that a dead one does
/// not hold a descriptor.
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Tick until the shard's runtime ends.
pub async fn run(shard: Rc<Shard>) {
    let mut interval = monoio::time::interval(shard.config().tick_period());
    loop {
        interval.tick().await;
        tick_once(&shard, Instant::now());
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
    shard.stats.borrow_mut().event("not_reading");
    tracing::debug!(shard = shard.id, peer = %conn.peer(), kind = conn.kind.get().name(), "closing a connection that does not read");
    conn.close_not_reading(shard);
}

/// Close connections whose queue stalled (see `close_not_reading`); ping connections
/// quiet for a ping interval; close those that did not answer within
/// the pong timeout (counted from the latest the ping can have left: the first tick
/// after `last_rx + ping_interval`); abort close handshakes past their linger; give
/// back the buffers of connections quiet for a tick.
fn heartbeat(shard: &Rc<Shard>, now: Instant) {
    let cfg = shard.config();
    let period = cfg.tick_period();
    let conns: Vec<Rc<Conn>> = shard
        .conns
        .borrow()
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    let share = modes::pressure_share(shard);
    for conn in conns {
        if conn.is_open() && conn.stalled(now, cfg.stall_timeout, share) {
            close_not_reading(shard, &conn);
            continue;
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
                        shard.stats.borrow_mut().event("heartbeat_timeouts");
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
}
