//! The pairs of one shard: which codes have a waiting side or both, the early messages
//! of a lone side, and the TTL. Pure bookkeeping, no I/O: the connection glue
//! (`pair/mod.rs`) sends, closes and counts as the decisions made here say, and time is
//! a parameter. Generic over the member handle so the rules are unit-tested without
//! sockets.
//!
//! A pair is waiting (one side, its early messages, from its creation) or matched (both
//! sides, nothing else). A third side is refused while both are present; a side's leaving
//! ends the pair and frees its code; a waiting pair expires `--pair-ttl` after its
//! creation.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::modes::Handle;
use crate::ws::conn::Arrival;
use crate::ws::payload::Payload;

/// The settings the pair rules use, taken from `Config` once per shard.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `--pair-ttl`: how long a side waits for its peer, from the pair's creation.
    pub ttl: Duration,
    /// `--stall-timeout`: how long a lone side may hold more than its share of
    /// `--memory-limit` in early messages.
    pub stall: Duration,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        Settings {
            ttl: config.pair_ttl,
            stall: config.stall_timeout,
        }
    }
}

/// The pairs this shard owns, by decoded code, and the rules' settings.
#[derive(Debug)]
pub struct Registry<C> {
    /// Pairs by decoded code.
    pairs: HashMap<Rc<[u8]>, Pair<C>, ahash::RandomState>,
    /// The settings the rules use.
    settings: Settings,
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
    pub fn other(self) -> Side {
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
struct Pair<C> {
    /// Side A (the first to arrive).
    a: Option<C>,
    /// Side B.
    b: Option<C>,
    /// Present until the second side arrives.
    waiting: Option<Box<Waiting>>,
}

/// A pair's state while its first side waits for the second.
#[derive(Debug)]
pub struct Waiting {
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

impl Waiting {
    /// A pair's waiting state from `now`.
    fn new(now: Instant) -> Box<Self> {
        Box::new(Waiting {
            created: now,
            early: VecDeque::new(),
            early_bytes: 0,
            over_share_since: None,
            arrival: Rc::new(Arrival::default()),
        })
    }

    /// Keep an early message for the peer; returns what the early messages now occupy.
    pub fn push(&mut self, body: Payload) -> usize {
        let charge = EARLY_SLOT + body.allocated();
        self.early_bytes += charge;
        crate::memory::charge(charge);
        self.early.push_back(body);
        self.early_bytes
    }

    /// What the early messages occupy.
    pub fn early_bytes(&self) -> usize {
        self.early_bytes
    }

    /// What the lone side's reader waits on while its early messages are at their bound.
    pub fn arrival(&self) -> &Rc<Arrival> {
        &self.arrival
    }

    /// The peer arrived: each early message, oldest first, goes to `deliver`; then the
    /// lone side's reader resumes.
    pub fn deliver(&mut self, mut deliver: impl FnMut(Payload)) {
        for body in self.early.drain(..) {
            deliver(body);
        }
        self.arrival.release();
    }
}

impl<C: Handle> Pair<C> {
    /// The connection on `side`.
    fn side(&self, side: Side) -> Option<&C> {
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

/// A side arrived for a code.
#[derive(Debug)]
pub enum Arrived {
    /// It is the first: a new pair waits for its peer.
    First,
    /// It is the second: the pair is matched; the early messages of the first side, if
    /// any are left, go to it.
    Matched {
        /// The side it took.
        side: Side,
        /// The first side's waiting state.
        waiting: Option<Box<Waiting>>,
    },
}

/// Both sides are present: a third is refused (`409 pair is full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Where a side's message goes.
#[derive(Debug)]
pub enum Toward<'a, C> {
    /// To the peer.
    Peer(&'a C),
    /// Kept for the peer until it arrives.
    Early(&'a mut Waiting),
}

/// What a side's reader waits on before reading more.
#[derive(Debug)]
pub enum Ahead<'a, C> {
    /// The peer (its queue).
    Peer(&'a C),
    /// The pair's waiting state (the early messages' bound).
    Early(&'a Waiting),
}

/// Pairs that waited past the TTL, removed.
#[derive(Debug)]
pub struct Expired<C> {
    /// How many pairs expired.
    pub pairs: usize,
    /// Their sides, closed with 1001.
    pub sides: Vec<C>,
}

impl<C: Handle> Registry<C> {
    /// No pairs yet.
    pub fn new(settings: Settings) -> Self {
        Registry {
            pairs: HashMap::default(),
            settings,
        }
    }

    /// Pairs waiting or matched.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True without pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// True when the pair of `code` has both sides: the next gets 409.
    pub fn is_full(&self, code: &[u8]) -> bool {
        self.pairs.get(code).is_some_and(Pair::is_full)
    }

    /// `conn` arrives for `code` at `now`: it creates the pair, or matches the side
    /// waiting there, or is refused if both are present.
    pub fn arrive(&mut self, code: &Rc<[u8]>, conn: &C, now: Instant) -> Result<Arrived, Full> {
        let Some(pair) = self.pairs.get_mut(code) else {
            let pair = Pair {
                a: Some(conn.clone()),
                b: None,
                waiting: Some(Waiting::new(now)),
            };
            self.pairs.insert(code.clone(), pair);
            return Ok(Arrived::First);
        };
        let side = match (&pair.a, &pair.b) {
            (None, _) => Side::A,
            (_, None) => Side::B,
            _ => return Err(Full),
        };
        match side {
            Side::A => pair.a = Some(conn.clone()),
            Side::B => pair.b = Some(conn.clone()),
        }
        Ok(Arrived::Matched {
            side,
            waiting: pair.waiting.take(),
        })
    }

    /// Where a message from `side` of `code` goes; None when the pair is gone.
    pub fn toward(&mut self, code: &[u8], from: Side) -> Option<Toward<'_, C>> {
        let pair = self.pairs.get_mut(code)?;
        match from.other() {
            Side::A if pair.a.is_some() => pair.a.as_ref().map(Toward::Peer),
            Side::B if pair.b.is_some() => pair.b.as_ref().map(Toward::Peer),
            _ => pair.waiting.as_deref_mut().map(Toward::Early),
        }
    }

    /// What `side` of `code` feeds: its peer, or the early messages while alone.
    pub fn ahead(&self, code: &[u8], side: Side) -> Option<Ahead<'_, C>> {
        let pair = self.pairs.get(code)?;
        match pair.side(side.other()) {
            Some(peer) => Some(Ahead::Peer(peer)),
            None => pair.waiting.as_deref().map(Ahead::Early),
        }
    }

    /// A side of `code` left: the pair ends and its code is free again. Returns None if
    /// there was no pair, else the peer to close (if it had one).
    pub fn leave(&mut self, code: &[u8], side: Side) -> Option<Option<C>> {
        let pair = self.pairs.remove(code)?;
        pair.release_waiter();
        Some(pair.side(side.other()).cloned())
    }

    /// Pairs still waiting `--pair-ttl` after their creation, at `now`: removed.
    pub fn expire(&mut self, now: Instant) -> Expired<C> {
        let ttl = self.settings.ttl;
        let codes: Vec<Rc<[u8]>> = self
            .pairs
            .iter()
            .filter(|(_, p)| {
                p.waiting
                    .as_ref()
                    .is_some_and(|w| now.saturating_duration_since(w.created) >= ttl)
            })
            .map(|(code, _)| code.clone())
            .collect();
        let mut expired = Expired {
            pairs: 0,
            sides: Vec::new(),
        };
        for code in codes {
            let Some(pair) = self.pairs.remove(&code) else {
                continue;
            };
            expired.pairs += 1;
            pair.release_waiter();
            for side in [Side::A, Side::B] {
                expired.sides.extend(pair.side(side).cloned());
            }
        }
        expired
    }

    /// Lone sides whose early messages held more than `share` (None: the process is
    /// below its memory limit) for `--stall-timeout` up to `now`: their early messages
    /// are dropped and they are returned, to be closed.
    pub fn over_share(&mut self, now: Instant, share: Option<usize>) -> Vec<C> {
        let stall = self.settings.stall;
        let mut over = Vec::new();
        for pair in self.pairs.values_mut() {
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
        over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member connection, told apart by identity.
    type Member = Rc<&'static str>;

    /// A fresh member.
    fn member(name: &'static str) -> Member {
        Rc::new(name)
    }

    /// The pair TTL used throughout.
    const TTL: Duration = Duration::from_secs(60);

    /// The stall timeout used throughout.
    const STALL: Duration = Duration::from_secs(10);

    /// A registry with the settings used throughout.
    fn registry() -> Registry<Member> {
        Registry::new(Settings {
            ttl: TTL,
            stall: STALL,
        })
    }

    /// A code.
    fn code(text: &str) -> Rc<[u8]> {
        Rc::from(text.as_bytes())
    }

    #[test]
    fn pair_matching_first_is_a_and_second_is_b() {
        let now = Instant::now();
        let mut reg = registry();
        let (a, b) = (member("a"), member("b"));
        assert!(matches!(
            reg.arrive(&code("k"), &a, now),
            Ok(Arrived::First)
        ));
        assert!(!reg.is_full(b"k"));
        let arrived = reg.arrive(&code("k"), &b, now);
        assert!(matches!(
            arrived,
            Ok(Arrived::Matched {
                side: Side::B,
                waiting: Some(_)
            })
        ));
        assert!(reg.is_full(b"k"));
        assert!(matches!(reg.toward(b"k", Side::A), Some(Toward::Peer(p)) if p.same(&b)));
        assert!(matches!(reg.toward(b"k", Side::B), Some(Toward::Peer(p)) if p.same(&a)));
    }

    #[test]
    fn pair_matching_keeps_codes_apart() {
        let now = Instant::now();
        let mut reg = registry();
        reg.arrive(&code("k1"), &member("a"), now).ok();
        assert!(matches!(
            reg.arrive(&code("k2"), &member("b"), now),
            Ok(Arrived::First)
        ));
        assert_eq!(reg.len(), 2);
    }

    #[test]
    fn a_third_peer_is_refused_while_both_are_present() {
        let now = Instant::now();
        let mut reg = registry();
        let (a, b) = (member("a"), member("b"));
        reg.arrive(&code("k"), &a, now).ok();
        reg.arrive(&code("k"), &b, now).ok();
        assert_eq!(
            reg.arrive(&code("k"), &member("third"), now).err(),
            Some(Full)
        );
        // The pair is untouched.
        assert!(matches!(reg.toward(b"k", Side::A), Some(Toward::Peer(p)) if p.same(&b)));
    }

    #[test]
    fn a_side_leaving_ends_the_pair_and_frees_the_code() {
        let now = Instant::now();
        let mut reg = registry();
        let (a, b) = (member("a"), member("b"));
        reg.arrive(&code("k"), &a, now).ok();
        reg.arrive(&code("k"), &b, now).ok();
        let peer = reg.leave(b"k", Side::B);
        assert!(matches!(peer, Some(Some(p)) if p.same(&a)));
        assert!(reg.is_empty());
        // Reported again (the peer's own end): nothing left to do.
        assert!(reg.leave(b"k", Side::A).is_none());
        assert!(matches!(
            reg.arrive(&code("k"), &member("new"), now),
            Ok(Arrived::First)
        ));
    }

    #[test]
    fn early_messages_wait_for_the_peer_and_are_delivered_in_order() {
        let now = Instant::now();
        let mut reg = registry();
        reg.arrive(&code("k"), &member("a"), now).ok();
        for body in [&b"one"[..], b"two"] {
            let Some(Toward::Early(waiting)) = reg.toward(b"k", Side::A) else {
                panic!("a lone side's message waits");
            };
            assert!(waiting.push(Payload::copy_of(body)) > 0);
        }
        let Ok(Arrived::Matched {
            waiting: Some(mut waiting),
            ..
        }) = reg.arrive(&code("k"), &member("b"), now)
        else {
            panic!("the second side matches");
        };
        let mut got = Vec::new();
        waiting.deliver(|body| got.push(body.to_vec()));
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn pair_expiry_removes_a_waiting_pair_at_its_ttl_from_creation() {
        let now = Instant::now();
        let mut reg = registry();
        let a = member("a");
        reg.arrive(&code("k"), &a, now).ok();
        let early = reg.expire(now + TTL - Duration::from_millis(1));
        assert_eq!(early.pairs, 0);
        assert_eq!(reg.len(), 1);
        let expired = reg.expire(now + TTL);
        assert_eq!(expired.pairs, 1);
        assert!(expired.sides.len() == 1 && expired.sides[0].same(&a));
        assert!(reg.is_empty());
    }

    #[test]
    fn pair_expiry_spares_a_matched_pair() {
        let now = Instant::now();
        let mut reg = registry();
        reg.arrive(&code("k"), &member("a"), now).ok();
        reg.arrive(&code("k"), &member("b"), now).ok();
        assert_eq!(reg.expire(now + 10 * TTL).pairs, 0);
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn a_lone_side_over_its_share_for_the_stall_timeout_is_closed() {
        let now = Instant::now();
        let stall = STALL;
        let mut reg = registry();
        let a = member("a");
        reg.arrive(&code("k"), &a, now).ok();
        if let Some(Toward::Early(waiting)) = reg.toward(b"k", Side::A) {
            waiting.push(Payload::copy_of(&[7; 100]));
        }
        // Below the memory limit: never.
        assert!(reg.over_share(now + 2 * stall, None).is_empty());
        // Over a share of 1 byte: from the first sighting, for `stall`.
        assert!(reg.over_share(now, Some(1)).is_empty());
        let over = reg.over_share(now + stall, Some(1));
        assert!(over.len() == 1 && over[0].same(&a));
        assert!(matches!(reg.ahead(b"k", Side::A), Some(Ahead::Early(w)) if w.early_bytes() == 0));
    }
}
