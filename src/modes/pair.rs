//! Pair rendezvous (PROTOCOL §4, wire-compatible with arc-relay): two peers meet on
//! `?pair=<code>`; binary messages pass verbatim, text messages are dropped. This module
//! owns the pairs whose code its shard owns: sides, early messages, TTL.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use crate::modes::Role;
use crate::modes::{Conn, Pause};
use crate::shard::Shard;
use crate::ws::codec::{MessageKind, OpCode};
use crate::ws::conn::{Arrival, OutFrame};
use crate::ws::payload::Payload;

/// The style's name in `/stats` (`forward_by_mode`).
const MODE: &str = "pair";

/// The pairs this shard owns.
#[derive(Debug, Default)]
pub struct Registry {
    /// Pairs by decoded code.
    pairs: HashMap<Rc<[u8]>, Pair, ahash::RandomState>,
}

/// Which side of a pair a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first to arrive.
    A,
    /// The second.
    B,
}

impl Side {
    /// The other side.
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// One pair. A side's leaving ends it, so a pair is either waiting (one side, with its
/// `Waiting` state) or matched (both sides, nothing else): the waiting state is boxed
/// so that a matched pair's map entry is three words.
#[derive(Debug)]
struct Pair {
    /// Side A (the first to arrive).
    a: Option<Rc<Conn>>,
    /// Side B.
    b: Option<Rc<Conn>>,
    /// Present until the second side arrives.
    waiting: Option<Box<Waiting>>,
}

/// A pair's state while its first side waits for the second.
#[derive(Debug)]
struct Waiting {
    /// When the pair was created: the TTL counts from here.
    created: Instant,
    /// Messages the lone side sent before its peer arrived, delivered on arrival.
    early: VecDeque<Payload>,
    /// What `early` occupies — each body's allocation and its slot, so an empty message
    /// is not free (PROTOCOL §2.1) — charged to the memory budget and bounded by the lone
    /// side's `--max-queue` (past it the sender pauses).
    early_bytes: usize,
    /// Since when `early` has held more than the lone side's share while the process is
    /// at its memory limit; the side is closed once that lasts `--stall-timeout`.
    over_share_since: Option<Instant>,
    /// Wakes the lone side paused on a full `early` queue when its peer arrives or the
    /// pair ends.
    arrival: Rc<Arrival>,
}

/// What one early message occupies besides its body: its slot in the `early` ring.
const EARLY_SLOT: usize = std::mem::size_of::<Payload>();

impl Drop for Waiting {
    /// The early messages go (delivered or discarded) with the waiting state.
    fn drop(&mut self) {
        crate::memory::release(self.early_bytes);
    }
}

impl Pair {
    /// The connection on `side`.
    fn side(&self, side: Side) -> Option<&Rc<Conn>> {
        match side {
            Side::A => self.a.as_ref(),
            Side::B => self.b.as_ref(),
        }
    }

    /// True while both sides are present.
    fn is_full(&self) -> bool {
        self.a.is_some() && self.b.is_some()
    }

    /// The pair ends: a lone side paused on its early queue resumes (and finds it gone).
    fn release_waiter(&self) {
        if let Some(waiting) = &self.waiting {
            waiting.arrival.release();
        }
    }
}

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
pub fn is_full(shard: &Shard, code: &[u8]) -> bool {
    shard
        .pairs
        .borrow()
        .pairs
        .get(code)
        .is_some_and(Pair::is_full)
}

/// A side upgraded on its code's owner shard (the 409 check ran just before, with no
/// await in between, so a pair here has at most one side).
pub fn on_upgrade(shard: &Rc<Shard>, conn: Rc<Conn>, code: Vec<u8>, leftover: Vec<u8>) {
    let code: Rc<[u8]> = Rc::from(code);
    let side = {
        let mut reg = shard.pairs.borrow_mut();
        match reg.pairs.get_mut(&code) {
            None => {
                reg.pairs.insert(code.clone(), new_pair(conn.clone()));
                let mut stats = shard.stats.borrow_mut();
                stats.gauge_add("pairs", 1);
                stats.event("pairs_created");
                Side::A
            }
            Some(pair) => {
                let side = if pair.a.is_none() { Side::A } else { Side::B };
                join(shard, pair, &conn, side);
                side
            }
        }
    };
    // Never the code: it is the pair's rendezvous secret.
    tracing::debug!(shard = shard.id, ?side, "pair side arrived");
    *conn.role.borrow_mut() = Role::Pair(PairRole { code, side });
    shard.spawn_reader(conn, leftover);
}

/// A pair with its first side.
fn new_pair(first: Rc<Conn>) -> Pair {
    Pair {
        a: Some(first),
        b: None,
        waiting: Some(Box::new(Waiting {
            created: Instant::now(),
            early: VecDeque::new(),
            early_bytes: 0,
            over_share_since: None,
            arrival: Rc::new(Arrival::default()),
        })),
    }
}

/// The second side arrives: it gets the early messages, and the first side resumes.
fn join(shard: &Rc<Shard>, pair: &mut Pair, conn: &Rc<Conn>, side: Side) {
    match side {
        Side::A => pair.a = Some(conn.clone()),
        Side::B => pair.b = Some(conn.clone()),
    }
    if let Some(mut waiting) = pair.waiting.take() {
        for body in waiting.early.drain(..) {
            conn.send(shard, OutFrame::message(OpCode::Binary, None, body, b""));
        }
        waiting.arrival.release();
    }
    shard.stats.borrow_mut().event("pairs_matched");
}

/// A message from one side: binary goes to the peer verbatim (or waits for it), text is
/// dropped and counted.
pub fn on_message(
    shard: &Rc<Shard>,
    _conn: &Rc<Conn>,
    role: &PairRole,
    kind: MessageKind,
    payload: &[u8],
    read_at: Instant,
) {
    if kind == MessageKind::Text {
        shard.stats.borrow_mut().dropped("text_in_pair");
        return;
    }
    let mut reg = shard.pairs.borrow_mut();
    let Some(pair) = reg.pairs.get_mut(&role.code) else {
        return;
    };
    let body = Payload::copy_of(payload);
    match pair.side(role.side.other()) {
        Some(peer) => {
            let frame = OutFrame::message(OpCode::Binary, None, body, b"");
            peer.send(shard, frame.relayed(read_at, MODE));
        }
        None => {
            if let Some(waiting) = pair.waiting.as_mut() {
                let charge = EARLY_SLOT + body.allocated();
                waiting.early_bytes += charge;
                crate::memory::charge(charge);
                waiting.early.push_back(body);
                if waiting.early_bytes >= shard.config().max_queue || crate::memory::over_limit() {
                    crate::ws::conn::signal_queue_filled();
                }
            }
        }
    }
}

/// What a side's reader waits on before reading more: its peer's queue at `room`, or —
/// while alone with early messages at `room` — its peer's arrival.
pub fn pause_for(shard: &Shard, role: &PairRole, room: usize) -> Option<Pause> {
    let reg = shard.pairs.borrow();
    let pair = reg.pairs.get(&role.code)?;
    match pair.side(role.side.other()) {
        Some(peer) => peer.is_full(room).then(|| Pause::Room(peer.clone(), room)),
        None => {
            let waiting = pair.waiting.as_ref()?;
            (waiting.early_bytes >= room).then(|| Pause::Arrival(waiting.arrival.clone()))
        }
    }
}

/// A side left: the other is closed (1000 after a clean close, 1011 otherwise) and the
/// pair is gone, its code free again.
pub fn on_gone(shard: &Rc<Shard>, conn: &Rc<Conn>, role: PairRole) {
    let Some(pair) = shard.pairs.borrow_mut().pairs.remove(&role.code) else {
        return;
    };
    shard.stats.borrow_mut().gauge_add("pairs", -1);
    pair.release_waiter();
    let Some(peer) = pair.side(role.side.other()) else {
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
pub fn tick(shard: &Rc<Shard>, now: Instant) {
    expire(shard, now);
    close_over_share(shard, now);
}

/// Lone sides above their share at the memory limit for the stall timeout: closed with
/// `1008 "not reading"` (nobody reads what they hold), their early messages dropped.
fn close_over_share(shard: &Rc<Shard>, now: Instant) {
    let share = crate::modes::pressure_share(shard);
    let stall = shard.config().stall_timeout;
    let mut over = Vec::new();
    for pair in shard.pairs.borrow_mut().pairs.values_mut() {
        let lone = pair.a.as_ref().or(pair.b.as_ref());
        let (Some(waiting), Some(lone)) = (pair.waiting.as_mut(), lone) else {
            continue;
        };
        if share.is_none_or(|share| waiting.early_bytes <= share) {
            waiting.over_share_since = None;
            continue;
        }
        let since = *waiting.over_share_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= stall {
            over.push(lone.clone());
            crate::memory::release(std::mem::take(&mut waiting.early_bytes));
            waiting.early = VecDeque::new();
        }
    }
    for lone in over {
        shard.stats.borrow_mut().event("not_reading");
        lone.close_not_reading(shard);
    }
}

/// Sweep pairs whose lone side waited past `--pair-ttl` (from the pair's creation).
fn expire(shard: &Rc<Shard>, now: Instant) {
    let ttl = shard.config().pair_ttl;
    let mut reg = shard.pairs.borrow_mut();
    let expired: Vec<Rc<[u8]>> = reg
        .pairs
        .iter()
        .filter(|(_, p)| {
            p.waiting
                .as_ref()
                .is_some_and(|w| now.saturating_duration_since(w.created) >= ttl)
        })
        .map(|(code, _)| code.clone())
        .collect();
    for code in expired {
        let Some(pair) = reg.pairs.remove(&code) else {
            continue;
        };
        shard.stats.borrow_mut().gauge_add("pairs", -1);
        shard.stats.borrow_mut().event("pairs_expired");
        pair.release_waiter();
        for side in [Side::A, Side::B] {
            if let Some(lone) = pair.side(side) {
                *lone.role.borrow_mut() = Role::Detached;
                lone.close(shard, 1001, "pair expired");
            }
        }
    }
}
