//! The `/ws` rules of one shard, without sockets: which Mac holds which code, the
//! browsers of each session (at most `--max-browsers-per-session`, each under an id
//! unique in its session), and the first-message deadline of every `/ws` connection
//! that has not yet said what it is. Generic over the members' handles
//! ([`crate::modes::Handle`]) and over how a waiting connection is held ([`Waiting`]),
//! so the unit tests below run the rules on plain `Rc`s; the glue (`mod.rs`, `mac.rs`,
//! `browser.rs`) sends, closes and counts as the answers say.
//!
//! A Mac that reconnects is a new connection: it `register`s and gets a new code. Its
//! old session ends when its old connection ends, and only that connection's end can
//! remove it ([`Registry::remove_mac`]), so a late end of an old connection never takes
//! a newer session with it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::modes::session::code::{self, Alphabet, Code};
use crate::modes::Handle;

/// Characters in a browser id (unique within its session only): 8, as the clients' own
/// relay drew them (64⁸ ids against at most a few dozen browsers).
pub const BROWSER_ID_LEN: usize = 8;

/// A browser's id within its session, as its ASCII bytes.
pub type BrowserId = [u8; BROWSER_ID_LEN];

/// Browser ids are drawn from nanoid's URL-safe alphabet, as the clients' own relay did.
const BROWSER_ID_ALPHABET: Alphabet =
    Alphabet::new(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-");

/// Draws allowed for a browser id unique in its session: 64⁸ ids against at most a few
/// dozen browsers, so a second draw is already rare.
const BROWSER_ID_DRAWS: usize = 16;

/// Stale first-message deadlines tolerated beyond twice the live ones before the queue
/// is compacted: a flood of connections that speak (or leave) at once cannot make the
/// queue — and the `Conn` allocations its `Weak`s keep — outgrow what is pending.
const STALE_SLACK: usize = 64;

/// The settings the `/ws` rules use, taken from `Config` once per shard.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `--handshake-timeout`: how long a connection has to send its first message.
    pub handshake_timeout: Duration,
    /// `--max-browsers-per-session`: browsers one Mac's session admits.
    pub max_browsers: usize,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        Settings {
            handshake_timeout: config.handshake_timeout,
            max_browsers: config.max_browsers_per_session,
        }
    }
}

/// How the first-message queue holds a connection that has not spoken yet: weakly in
/// the relay (a queued deadline must not keep a gone connection's memory alive).
pub trait Waiting {
    /// The member handle it names.
    type Member;
    /// The connection, if it still exists and still owes its first message.
    fn still_waiting(&self) -> Option<Self::Member>;
}

/// Why a browser's `auth` is refused by the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    /// No live Mac holds the code: a wrong guess.
    InvalidCode,
    /// The session already has `--max-browsers-per-session` browsers.
    SessionFull,
    /// No browser id could be drawn (the CSPRNG failed).
    NoBrowserId,
}

/// One Mac and the browsers watching it.
#[derive(Debug)]
struct WsSession<C> {
    /// The Mac's connection.
    mac: C,
    /// Its browsers by id (at most `--max-browsers-per-session`: a Vec is the cheapest
    /// map at that size, and fan-out walks it in order).
    browsers: Vec<(BrowserId, C)>,
}

/// The `/ws` sessions this shard minted, and the connections still owing a first message.
#[derive(Debug)]
pub struct Registry<C, W> {
    /// Each connected Mac's session by its code (one code per Mac).
    sessions: HashMap<Code, WsSession<C>, ahash::RandomState>,
    /// First-message deadlines, oldest first (one timeout for all, so pushes come in
    /// order); a connection that already spoke, or is gone, is skipped when it comes due.
    pending: VecDeque<(Instant, W)>,
    /// `pending`'s length at which it is next compacted (see [`Registry::await_first`]).
    compact_at: usize,
    /// The settings the rules use.
    settings: Settings,
}

impl<C: Handle, W: Waiting<Member = C>> Registry<C, W> {
    /// No sessions, nobody waiting.
    pub fn new(settings: Settings) -> Self {
        Registry {
            sessions: HashMap::default(),
            pending: VecDeque::new(),
            compact_at: 0,
            settings,
        }
    }

    /// A connection upgraded at `now`: it owes its first message by `now +
    /// --handshake-timeout`. Compacts the queue when stale entries (connections that
    /// spoke or left) have doubled it, so pushes stay O(1) amortised.
    pub fn await_first(&mut self, waiting: W, now: Instant) {
        let due = now + self.settings.handshake_timeout;
        self.pending.push_back((due, waiting));
        if self.pending.len() > self.compact_at {
            self.pending.retain(|(_, w)| w.still_waiting().is_some());
            self.compact_at = 2 * self.pending.len() + STALE_SLACK;
        }
    }

    /// Deadlines kept in the first-message queue (stale ones included).
    pub fn waiting_len(&self) -> usize {
        self.pending.len()
    }

    /// Take the connections whose first-message deadline is at or before `now` and that
    /// still owe it; entries for connections that spoke or left are dropped.
    pub fn take_overdue(&mut self, now: Instant) -> Vec<C> {
        let mut overdue = Vec::new();
        while self.pending.front().is_some_and(|(due, _)| *due <= now) {
            let Some((_, waiting)) = self.pending.pop_front() else {
                break;
            };
            overdue.extend(waiting.still_waiting());
        }
        overdue
    }

    /// True when a live Mac holds `code` (a freshly drawn code must not be).
    pub fn is_live(&self, code: &Code) -> bool {
        self.sessions.contains_key(code)
    }

    /// Open `code`'s session for `mac` (a code the caller drew, not live).
    pub fn open(&mut self, code: Code, mac: &C) {
        let session = WsSession {
            mac: mac.clone(),
            browsers: Vec::new(),
        };
        self.sessions.insert(code, session);
    }

    /// Sessions open.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True without sessions.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The Mac holding `code`, if it is still here.
    pub fn mac_of(&self, code: &Code) -> Option<C> {
        self.sessions.get(code).map(|session| session.mac.clone())
    }

    /// The browsers of `code`'s session, in the order they joined (fan-out); None when
    /// no Mac holds the code.
    pub fn browsers(&self, code: &Code) -> Option<&[(BrowserId, C)]> {
        self.sessions
            .get(code)
            .map(|session| session.browsers.as_slice())
    }

    /// `auth` with `code` (this shard owns it): add `browser` to the session under a
    /// fresh id unique in it, under the `--max-browsers-per-session` cap. Returns the id
    /// and the Mac (to be told).
    pub fn join(&mut self, code: &Code, browser: &C) -> Result<(BrowserId, C), JoinRefusal> {
        let max = self.settings.max_browsers;
        let session = self
            .sessions
            .get_mut(code)
            .ok_or(JoinRefusal::InvalidCode)?;
        if session.browsers.len() >= max {
            return Err(JoinRefusal::SessionFull);
        }
        let taken = |id: &BrowserId| session.browsers.iter().any(|(b, _)| b == id);
        let id = code::mint_in(&BROWSER_ID_ALPHABET, BROWSER_ID_DRAWS, |id| !taken(id))
            .ok_or(JoinRefusal::NoBrowserId)?;
        session.browsers.push((id, browser.clone()));
        Ok((id, session.mac.clone()))
    }

    /// `browser` left `code`'s session: the Mac to tell, if it was a member.
    pub fn leave(&mut self, code: &Code, browser: &C) -> Option<C> {
        let session = self.sessions.get_mut(code)?;
        let before = session.browsers.len();
        session.browsers.retain(|(_, b)| !b.same(browser));
        (session.browsers.len() != before).then(|| session.mac.clone())
    }

    /// The Mac `mac` left: its session ends if it is the one holding `code` (an older
    /// connection's end takes nothing). Returns the session's browsers (to be told and
    /// closed), or None when nothing was removed.
    pub fn remove_mac(&mut self, code: &Code, mac: &C) -> Option<Vec<(BrowserId, C)>> {
        let owned = self.sessions.get(code).is_some_and(|s| s.mac.same(mac));
        let session = owned.then(|| self.sessions.remove(code)).flatten()?;
        Some(session.browsers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::{Rc, Weak};

    /// A member: a named handle; its flag says whether it still owes a first message.
    type Member = Rc<(&'static str, Cell<bool>)>;

    impl Waiting for Weak<(&'static str, Cell<bool>)> {
        type Member = Member;
        fn still_waiting(&self) -> Option<Member> {
            self.upgrade().filter(|m| m.1.get())
        }
    }

    type TestRegistry = Registry<Member, Weak<(&'static str, Cell<bool>)>>;

    /// A fresh member that has not spoken yet.
    fn member(name: &'static str) -> Member {
        Rc::new((name, Cell::new(true)))
    }

    /// The first-message timeout used throughout.
    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A registry admitting `max_browsers` per session.
    fn registry(max_browsers: usize) -> TestRegistry {
        Registry::new(Settings {
            handshake_timeout: TIMEOUT,
            max_browsers,
        })
    }

    /// A registry where `mac` holds code `H4F7KN`.
    fn opened(mac: &Member, max_browsers: usize) -> (TestRegistry, Code) {
        let mut reg = registry(max_browsers);
        let code = *b"H4F7KN";
        reg.open(code, mac);
        (reg, code)
    }

    #[test]
    fn first_message_a_silent_connection_is_overdue_at_the_timeout_not_before() {
        let now = Instant::now();
        let mut reg = registry(4);
        let silent = member("silent");
        reg.await_first(Rc::downgrade(&silent), now);
        assert!(reg
            .take_overdue(now + TIMEOUT - Duration::from_millis(1))
            .is_empty());
        let overdue = reg.take_overdue(now + TIMEOUT);
        assert_eq!(overdue.len(), 1);
        assert!(overdue[0].same(&silent));
        // Taken once: the next tick finds nothing.
        assert!(reg.take_overdue(now + 2 * TIMEOUT).is_empty());
    }

    #[test]
    fn first_message_a_connection_that_spoke_or_left_is_not_overdue() {
        let now = Instant::now();
        let mut reg = registry(4);
        let spoke = member("spoke");
        let left = member("left");
        let silent = member("silent");
        for m in [&spoke, &left, &silent] {
            reg.await_first(Rc::downgrade(m), now);
        }
        spoke.1.set(false); // its first message decided its role
        drop(left);
        let overdue = reg.take_overdue(now + TIMEOUT);
        assert_eq!(overdue.len(), 1);
        assert!(overdue[0].same(&silent));
    }

    #[test]
    fn first_message_the_queue_of_deadlines_stays_bounded_by_what_is_pending() {
        let now = Instant::now();
        let mut reg = registry(4);
        // A flood of connections that all speak at once: their stale deadlines are
        // compacted away instead of piling up until they come due.
        for _ in 0..10_000 {
            let m = member("m");
            reg.await_first(Rc::downgrade(&m), now);
            m.1.set(false);
        }
        assert!(
            reg.waiting_len() <= 2 + STALE_SLACK,
            "{}",
            reg.waiting_len()
        );
    }

    #[test]
    fn auth_an_unknown_code_is_an_invalid_code() {
        let (mut reg, _) = opened(&member("mac"), 4);
        assert_eq!(
            reg.join(b"QQQQQQ", &member("b")).err(),
            Some(JoinRefusal::InvalidCode)
        );
    }

    #[test]
    fn auth_a_browser_joins_under_a_fresh_id_and_the_mac_is_returned_to_be_told() {
        let mac = member("mac");
        let (mut reg, code) = opened(&mac, 4);
        let (a, b) = (member("a"), member("b"));
        let (id_a, told) = reg.join(&code, &a).expect("joins");
        assert!(told.same(&mac));
        let (id_b, _) = reg.join(&code, &b).expect("joins");
        assert_ne!(id_a, id_b);
        assert!(id_a.iter().all(|c| BROWSER_ID_ALPHABET.contains(c)));
        let browsers = reg.browsers(&code).expect("live");
        assert_eq!(browsers.len(), 2);
        assert!(browsers[0].1.same(&a) && browsers[1].1.same(&b));
    }

    #[test]
    fn auth_the_browser_cap_refuses_one_more_and_a_leave_makes_room() {
        let (mut reg, code) = opened(&member("mac"), 2);
        let (a, b, c) = (member("a"), member("b"), member("c"));
        assert!(reg.join(&code, &a).is_ok());
        assert!(reg.join(&code, &b).is_ok());
        assert_eq!(reg.join(&code, &c).err(), Some(JoinRefusal::SessionFull));
        assert!(reg.leave(&code, &a).is_some());
        assert!(reg.join(&code, &c).is_ok());
    }

    #[test]
    fn leave_tells_the_mac_once() {
        let mac = member("mac");
        let (mut reg, code) = opened(&mac, 4);
        let a = member("a");
        reg.join(&code, &a).expect("joins");
        assert!(reg.leave(&code, &a).is_some_and(|m| m.same(&mac)));
        assert!(reg.leave(&code, &a).is_none());
        assert!(reg.leave(&code, &member("never joined")).is_none());
        assert!(reg.browsers(&code).is_some_and(<[_]>::is_empty));
    }

    #[test]
    fn a_mac_leaving_ends_its_session_and_hands_back_its_browsers() {
        let mac = member("mac");
        let (mut reg, code) = opened(&mac, 4);
        let a = member("a");
        reg.join(&code, &a).expect("joins");
        let browsers = reg.remove_mac(&code, &mac).expect("removed");
        assert_eq!(browsers.len(), 1);
        assert!(browsers[0].1.same(&a));
        assert!(!reg.is_live(&code) && reg.mac_of(&code).is_none());
        assert_eq!(
            reg.join(&code, &member("b")).err(),
            Some(JoinRefusal::InvalidCode)
        );
    }

    #[test]
    fn a_reconnected_mac_keeps_its_new_session_when_its_old_connection_ends() {
        let old = member("old mac");
        let (mut reg, old_code) = opened(&old, 4);
        // The Mac reconnects: a new connection, a new code.
        let new = member("new mac");
        let new_code = *b"J5G8MP";
        reg.open(new_code, &new);
        // Only the connection holding a code can end its session.
        assert!(reg.remove_mac(&new_code, &old).is_none());
        assert!(reg.mac_of(&new_code).is_some_and(|m| m.same(&new)));
        assert!(reg.remove_mac(&old_code, &old).is_some());
        assert_eq!(reg.len(), 1);
    }
}
