//! Pair rendezvous (PROTOCOL §4, wire-compatible with arc-relay): two peers meet on
//! `?pair=<code>`; binary messages pass verbatim, text messages are dropped. This module
//! owns the pairs whose code its shard owns: sides, early messages, TTL.

pub mod registry;

use std::rc::Rc;
use std::time::Instant;

use crate::modes::Role;
use crate::modes::StyleHost;
use crate::modes::{Conn, Pause};
use crate::stats::{Dropped, Event, Gauge, Style};
use crate::ws::codec::{MessageKind, OpCode};
use crate::ws::conn::OutFrame;
use crate::ws::payload::Payload;
use registry::{Ahead, Arrived, Toward};
pub use registry::{Full, Side};

/// The style's name in `/stats` (`forward_by_mode`).
const MODE: Style = Style::Pair;

/// The pairs this shard owns, holding its connections.
pub type Registry = registry::Registry<Rc<Conn>>;
pub use registry::Settings;

/// A pair side's role.
#[derive(Debug, Clone)]
pub struct PairRole {
    /// The pair's decoded code.
    code: Rc<[u8]>,
    /// Which side.
    side: Side,
}

/// True when a pair with this code already has both sides: the next one gets 409
/// before its upgrade.
pub fn is_full<S: StyleHost>(shard: &S, code: &[u8]) -> bool {
    shard.pairs().borrow().is_full(code)
}

/// A side upgraded on its code's owner shard (the 409 check ran just before, with no
/// await in between, so a pair here has at most one side).
pub fn on_upgrade<S: StyleHost>(shard: &Rc<S>, conn: Rc<Conn>, code: Vec<u8>, leftover: Vec<u8>) {
    let code: Rc<[u8]> = Rc::from(code);
    let arrived = shard
        .pairs()
        .borrow_mut()
        .arrive(&code, &conn, Instant::now());
    let side = match arrived {
        Ok(Arrived::First) => {
            let mut stats = shard.stats();
            stats.gauge_add(Gauge::Pairs, 1);
            stats.event(Event::PairsCreated);
            Side::A
        }
        Ok(Arrived::Matched { side, waiting }) => {
            if let Some(mut waiting) = waiting {
                waiting.deliver(|body| {
                    conn.send(shard, OutFrame::message(OpCode::Binary, None, body, b""));
                });
            }
            shard.stats().event(Event::PairsMatched);
            side
        }
        Err(Full) => {
            // Unreachable after the check before the upgrade; refused all the same.
            *conn.role.borrow_mut() = Role::Detached;
            conn.close(shard, 1008, "pair is full");
            return shard.spawn_reader(conn, leftover);
        }
    };
    // Never the code: it is the pair's rendezvous secret.
    tracing::debug!(shard = shard.shard_id(), ?side, "pair side arrived");
    *conn.role.borrow_mut() = Role::Pair(PairRole { code, side });
    shard.spawn_reader(conn, leftover);
}

/// A message from one side: binary goes to the peer verbatim (or waits for it), text is
/// dropped and counted.
pub fn on_message<S: StyleHost>(
    shard: &Rc<S>,
    _conn: &Rc<Conn>,
    role: &PairRole,
    kind: MessageKind,
    payload: &[u8],
    read_at: Instant,
) {
    if kind == MessageKind::Text {
        shard.stats().dropped(Dropped::TextInPair);
        return;
    }
    let mut reg = shard.pairs().borrow_mut();
    let Some(toward) = reg.toward(&role.code, role.side) else {
        return;
    };
    let body = Payload::copy_of(payload);
    match toward {
        Toward::Peer(peer) => {
            let frame = OutFrame::message(OpCode::Binary, None, body, b"");
            peer.send(shard, frame.relayed(read_at, MODE));
        }
        Toward::Early(waiting) => {
            let early_bytes = waiting.push(body);
            if early_bytes >= shard.max_queue() || crate::memory::over_limit() {
                crate::ws::conn::signal_queue_filled();
            }
        }
    }
}

/// What a side's reader waits on before reading more: its peer's queue at `room`, or —
/// while alone with early messages at `room` — its peer's arrival.
pub fn pause_for<S: StyleHost>(shard: &S, role: &PairRole, room: usize) -> Option<Pause> {
    let reg = shard.pairs().borrow();
    match reg.ahead(&role.code, role.side)? {
        Ahead::Peer(peer) => peer.is_full(room).then(|| Pause::Room(peer.clone(), room)),
        Ahead::Early(waiting) => {
            (waiting.early_bytes() >= room).then(|| Pause::Arrival(waiting.arrival().clone()))
        }
    }
}

/// A side left: the other is closed (1000 after a clean close, 1011 otherwise) and the
/// pair is gone, its code free again.
pub fn on_gone<S: StyleHost>(shard: &Rc<S>, conn: &Rc<Conn>, role: PairRole) {
    let Some(peer) = shard.pairs().borrow_mut().leave(&role.code, role.side) else {
        return;
    };
    shard.stats().gauge_add(Gauge::Pairs, -1);
    let Some(peer) = peer else {
        return;
    };
    *peer.role.borrow_mut() = Role::Detached;
    let clean = conn.peer_close.get().is_some() && !conn.failed.get();
    if clean {
        peer.close(shard, 1000, "peer disconnected");
    } else {
        peer.close(shard, 1011, "peer connection failed");
    }
}

/// Sweep pairs whose lone side waited past `--pair-ttl` (from the pair's creation), and
/// close lone sides whose early messages held more than their share of `--memory-limit`
/// for `--stall-timeout` while the process was at the limit.
pub fn tick<S: StyleHost>(shard: &Rc<S>, now: Instant) {
    expire(shard, now);
    close_over_share(shard, now);
}

/// Lone sides above their share at the memory limit for the stall timeout: closed with
/// `1008 "not reading"` (nobody reads what they hold), their early messages dropped.
fn close_over_share<S: StyleHost>(shard: &Rc<S>, now: Instant) {
    let share = crate::modes::pressure_share(&**shard);
    let over = shard.pairs().borrow_mut().over_share(now, share);
    for lone in over {
        shard.stats().event(Event::NotReading);
        lone.close_not_reading(shard);
    }
}

/// Sweep pairs whose lone side waited past `--pair-ttl` (from the pair's creation).
fn expire<S: StyleHost>(shard: &Rc<S>, now: Instant) {
    let expired = shard.pairs().borrow_mut().expire(now);
    for _ in 0..expired.pairs {
        shard.stats().gauge_add(Gauge::Pairs, -1);
        shard.stats().event(Event::PairsExpired);
    }
    for lone in expired.sides {
        *lone.role.borrow_mut() = Role::Detached;
        lone.close(shard, 1001, "pair expired");
    }
}
