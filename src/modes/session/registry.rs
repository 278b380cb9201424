//! The session codes of one shard and the join rules. Pure bookkeeping, no I/O: the
//! connection glue (`host.rs`, `browser.rs`) sends, closes, moves and counts as the
//! decisions made here say, and time is a parameter. Generic over the member handle so
//! the rules are unit-tested without sockets.
//!
//! A host's code is open (joinable until its TTL), expired (joins get `EXPIRED_CODE`;
//! the host is closed one more TTL later unless it registers again) or joined (one
//! browser; no deadline while both stay). A browser that leaves makes the code open
//! again for a TTL.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::code::{self, Code};
use super::messages::ErrorCode;
use crate::config::Config;
use crate::modes::Handle;

/// The settings the session rules use, taken from `Config` once per shard.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `--code-ttl`: how long a code is joinable, and how long an expired code's host
    /// has to register again.
    pub code_ttl: Duration,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        Settings {
            code_ttl: config.code_ttl,
        }
    }
}

/// Failed joins one connection may make (PROTOCOL §5): the 5th closes it. Guessing across
/// connections is bounded by the per-address budget (`--code-guesses-per-ip`,
/// [`crate::per_ip::GuessBudget`]).
pub const MAX_FAILED_JOINS: u8 = 5;

/// Stale deadlines tolerated beyond two per host before a queue is compacted: a host
/// that registers in a loop cannot grow the queues past a constant factor.
const STALE_SLACK: usize = 64;

/// The codes this shard minted, and their deadlines.
#[derive(Debug)]
pub struct Registry<C> {
    /// Each connected host by its live code (one code per host).
    hosts: HashMap<Code, HostEntry<C>, ahash::RandomState>,
    /// Open codes' expiry instants, oldest first (one TTL for all, so pushes come in
    /// order); entries whose code moved on are skipped when they come due.
    expiries: VecDeque<(Instant, Code)>,
    /// Expired codes' close instants (expiry + TTL), oldest first, skipped the same way.
    closes: VecDeque<(Instant, Code)>,
    /// The settings the rules use.
    settings: Settings,
}

/// One host and the state of its code.
#[derive(Debug)]
struct HostEntry<C> {
    /// The host's connection.
    host: C,
    /// Joinable, expired, or joined.
    state: CodeState<C>,
}

/// Where a code is in its life.
#[derive(Debug)]
enum CodeState<C> {
    /// Joinable until `expires`.
    Open {
        /// End of the code TTL.
        expires: Instant,
    },
    /// Past its TTL: joins get `EXPIRED_CODE`; the host is closed at `close_at` unless
    /// it registers again.
    Expired {
        /// Expiry plus one more code TTL.
        close_at: Instant,
    },
    /// A browser joined: no deadline while both stay.
    Joined {
        /// The joined browser.
        browser: C,
    },
}

impl<C> CodeState<C> {
    /// Open, expiring at `due`.
    fn expires_at(&self, due: Instant) -> bool {
        matches!(self, CodeState::Open { expires } if *expires == due)
    }

    /// Expired, closing its host at `due`.
    fn closes_at(&self, due: Instant) -> bool {
        matches!(self, CodeState::Expired { close_at } if *close_at == due)
    }
}

/// A host taken out of the registry.
#[derive(Debug)]
pub struct Removed<C> {
    /// The browser that had joined its code, if one had.
    pub browser: Option<C>,
}

impl<C: Handle> Registry<C> {
    /// No codes yet.
    pub fn new(settings: Settings) -> Self {
        Registry {
            hosts: HashMap::default(),
            expiries: VecDeque::new(),
            closes: VecDeque::new(),
            settings,
        }
    }

    /// `--code-ttl`.
    pub fn code_ttl(&self) -> Duration {
        self.settings.code_ttl
    }

    /// Hosts registered.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// True without hosts.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// True when a host holds `code` (a fresh code must not be one of these).
    pub fn is_live(&self, code: &Code) -> bool {
        self.hosts.contains_key(code)
    }

    /// True when a browser has joined `code`.
    pub fn is_joined(&self, code: &Code) -> bool {
        matches!(
            self.hosts.get(code).map(|e| &e.state),
            Some(CodeState::Joined { .. })
        )
    }

    /// Register `host` under `code` at `now`, joinable for a code TTL.
    pub fn open(&mut self, code: Code, host: &C, now: Instant) {
        let expires = now + self.settings.code_ttl;
        let entry = HostEntry {
            host: host.clone(),
            state: CodeState::Open { expires },
        };
        self.hosts.insert(code, entry);
        self.push_expiry(expires, code);
    }

    /// Take `code`'s host out of the registry if `host` holds it.
    pub fn remove(&mut self, code: &Code, host: &C) -> Option<Removed<C>> {
        let owned = self.hosts.get(code).is_some_and(|e| e.host.same(host));
        let entry = owned.then(|| self.hosts.remove(code)).flatten()?;
        let browser = match entry.state {
            CodeState::Joined { browser } => Some(browser),
            _ => None,
        };
        Some(Removed { browser })
    }

    /// Make `browser` the joined browser of `code` if the code is open at `now`;
    /// returns its host. The join rules: an unknown code is `INVALID_CODE`, one past its
    /// TTL `EXPIRED_CODE`, one already joined `ALREADY_JOINED`.
    pub fn claim(&mut self, code: &Code, browser: &C, now: Instant) -> Result<C, ErrorCode> {
        let entry = self.hosts.get_mut(code).ok_or(ErrorCode::InvalidCode)?;
        match entry.state {
            CodeState::Open { expires } if expires > now => {
                entry.state = CodeState::Joined {
                    browser: browser.clone(),
                };
                Ok(entry.host.clone())
            }
            CodeState::Open { .. } | CodeState::Expired { .. } => Err(ErrorCode::ExpiredCode),
            CodeState::Joined { .. } => Err(ErrorCode::AlreadyJoined),
        }
    }

    /// The joined `browser` of `code` left at `now`: the code is joinable again for a
    /// code TTL; returns the host to tell.
    pub fn leave(&mut self, code: &Code, browser: &C, now: Instant) -> Option<C> {
        let expires = now + self.settings.code_ttl;
        let entry = self.hosts.get_mut(code)?;
        if !matches!(&entry.state, CodeState::Joined { browser: b } if b.same(browser)) {
            return None;
        }
        entry.state = CodeState::Open { expires };
        let host = entry.host.clone();
        self.push_expiry(expires, *code);
        Some(host)
    }

    /// `code`'s host, and its joined browser if one is.
    pub fn members(&self, code: &Code) -> Option<(&C, Option<&C>)> {
        let entry = self.hosts.get(code)?;
        let browser = match &entry.state {
            CodeState::Joined { browser } => Some(browser),
            _ => None,
        };
        Some((&entry.host, browser))
    }

    /// The peer of `member` in the joined session of `code` (`is_host`: `member` is the
    /// host), checked against the registry, not only the member's own belief.
    pub fn joined_peer(&self, code: &Code, member: &C, is_host: bool) -> Option<&C> {
        let entry = self.hosts.get(code)?;
        let CodeState::Joined { browser } = &entry.state else {
            return None;
        };
        if is_host {
            entry.host.same(member).then_some(browser)
        } else {
            browser.same(member).then_some(&entry.host)
        }
    }

    /// Open codes whose TTL ran out by `now` become expired (their hosts closed a code
    /// TTL later unless they register again); returns their hosts.
    pub fn expire_due(&mut self, now: Instant) -> Vec<C> {
        let ttl = self.settings.code_ttl;
        let mut hosts = Vec::new();
        while let Some(&(due, code)) = self.expiries.front() {
            if due > now {
                break;
            }
            self.expiries.pop_front();
            let Some(entry) = self.hosts.get_mut(&code) else {
                continue;
            };
            if entry.state.expires_at(due) {
                let close_at = due + ttl;
                entry.state = CodeState::Expired { close_at };
                hosts.push(entry.host.clone());
                self.push_close(close_at, code);
            }
        }
        hosts
    }

    /// Expired codes whose host did not register again by `now`: out of the registry;
    /// returns their hosts.
    pub fn close_due(&mut self, now: Instant) -> Vec<C> {
        let mut hosts = Vec::new();
        while let Some(&(due, code)) = self.closes.front() {
            if due > now {
                break;
            }
            self.closes.pop_front();
            let due_here = self
                .hosts
                .get(&code)
                .is_some_and(|e| e.state.closes_at(due));
            if let Some(entry) = due_here.then(|| self.hosts.remove(&code)).flatten() {
                hosts.push(entry.host);
            }
        }
        hosts
    }

    /// Queue an open code's expiry.
    fn push_expiry(&mut self, due: Instant, code: Code) {
        self.expiries.push_back((due, code));
        if self.expiries.len() > 2 * self.hosts.len() + STALE_SLACK {
            let hosts = &self.hosts;
            self.expiries
                .retain(|(due, code)| hosts.get(code).is_some_and(|e| e.state.expires_at(*due)));
        }
    }

    /// Queue an expired code's close.
    fn push_close(&mut self, due: Instant, code: Code) {
        self.closes.push_back((due, code));
        if self.closes.len() > 2 * self.hosts.len() + STALE_SLACK {
            let hosts = &self.hosts;
            self.closes
                .retain(|(due, code)| hosts.get(code).is_some_and(|e| e.state.closes_at(*due)));
        }
    }
}

/// What a browser's `join` comes to before any code's state is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinStep {
    /// Refused with this error.
    Fail(ErrorCode),
    /// The code is this shard's: join it here.
    Here(Code),
    /// Another shard owns the code: the browser moves there to join it.
    Move {
        /// The owner shard.
        owner: usize,
        /// The code.
        code: Code,
    },
}

/// The join rules, in order: an address past its guessing budget (`may_try` false) is
/// `RATE_LIMITED` and the code is not tried; a browser already joined is
/// `ALREADY_JOINED`; text that is not a code is `INVALID_CODE`; else the code is joined
/// on its owner shard (`owner_of`), here if that is `here`.
pub fn join_step(
    may_try: bool,
    already_joined: bool,
    typed: &str,
    here: usize,
    owner_of: impl FnOnce(&Code) -> usize,
) -> JoinStep {
    if !may_try {
        return JoinStep::Fail(ErrorCode::RateLimited);
    }
    if already_joined {
        return JoinStep::Fail(ErrorCode::AlreadyJoined);
    }
    let Some(code) = code::parse(typed) else {
        return JoinStep::Fail(ErrorCode::InvalidCode);
    };
    match owner_of(&code) {
        owner if owner == here => JoinStep::Here(code),
        owner => JoinStep::Move { owner, code },
    }
}

/// A failed join spends the address's guessing budget unless it was refused for that
/// budget (not tried, so not a guess).
pub fn is_a_guess(error: ErrorCode) -> bool {
    error != ErrorCode::RateLimited
}

/// The count of failed joins after one more, and whether it closes the browser (the
/// [`MAX_FAILED_JOINS`]th does, with 4429).
pub fn after_failed_join(failed_joins: u8) -> (u8, bool) {
    let failed = failed_joins.saturating_add(1);
    (failed, failed >= MAX_FAILED_JOINS)
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;

    /// A member connection, told apart by identity.
    type Member = Rc<&'static str>;

    /// A fresh member.
    fn member(name: &'static str) -> Member {
        Rc::new(name)
    }

    /// The code TTL used throughout.
    const TTL: Duration = Duration::from_secs(300);

    /// A registry with the code TTL used throughout.
    fn registry() -> Registry<Member> {
        Registry::new(Settings { code_ttl: TTL })
    }

    /// A registry where `host` holds code `H4F7KN`, open from `now` for a TTL.
    fn opened(host: &Member, now: Instant) -> (Registry<Member>, Code) {
        let mut reg = registry();
        let code = *b"H4F7KN";
        reg.open(code, host, now);
        (reg, code)
    }

    #[test]
    fn a_browser_joins_an_open_code_and_gets_its_host() {
        let now = Instant::now();
        let (host, browser) = (member("host"), member("browser"));
        let (mut reg, code) = opened(&host, now);
        let joined = reg.claim(&code, &browser, now);
        assert!(joined.is_ok_and(|h| h.same(&host)));
        assert!(reg.is_joined(&code));
        assert!(reg
            .joined_peer(&code, &host, true)
            .is_some_and(|p| p.same(&browser)));
        assert!(reg
            .joined_peer(&code, &browser, false)
            .is_some_and(|p| p.same(&host)));
    }

    #[test]
    fn join_rules_an_unknown_code_is_invalid() {
        let now = Instant::now();
        let (mut reg, _) = opened(&member("host"), now);
        assert_eq!(
            reg.claim(b"QQQQQQ", &member("b"), now).err(),
            Some(ErrorCode::InvalidCode)
        );
    }

    #[test]
    fn join_rules_a_second_browser_gets_already_joined() {
        let now = Instant::now();
        let host = member("host");
        let (mut reg, code) = opened(&host, now);
        reg.claim(&code, &member("first"), now).ok();
        let second = member("second");
        assert_eq!(
            reg.claim(&code, &second, now).err(),
            Some(ErrorCode::AlreadyJoined)
        );
        assert!(reg.joined_peer(&code, &second, false).is_none());
    }

    #[test]
    fn join_rules_a_code_past_its_ttl_is_expired() {
        let now = Instant::now();
        let host = member("host");
        let (mut reg, code) = opened(&host, now);
        // At the instant of expiry, before the tick has run: already expired.
        assert_eq!(
            reg.claim(&code, &member("b"), now + TTL).err(),
            Some(ErrorCode::ExpiredCode)
        );
        let expired = reg.expire_due(now + TTL);
        assert!(expired.len() == 1 && expired[0].same(&host));
        assert_eq!(
            reg.claim(&code, &member("b"), now + TTL).err(),
            Some(ErrorCode::ExpiredCode)
        );
    }

    #[test]
    fn an_expired_host_is_closed_one_more_ttl_later_unless_it_registers_again() {
        let now = Instant::now();
        let (host, other) = (member("host"), member("other"));
        let (mut reg, code) = opened(&host, now);
        reg.open(*b"HHHHHH", &other, now);
        reg.expire_due(now + TTL);
        // `other` registers again: a fresh code, with a fresh TTL.
        reg.remove(b"HHHHHH", &other);
        reg.open(*b"JJJJJJ", &other, now + TTL / 2);
        assert!(reg
            .close_due(now + 2 * TTL - Duration::from_millis(1))
            .is_empty());
        let closed = reg.close_due(now + 2 * TTL);
        assert!(closed.len() == 1 && closed[0].same(&host));
        assert!(!reg.is_live(&code));
        assert!(reg.is_live(b"JJJJJJ"));
    }

    #[test]
    fn a_joined_code_does_not_expire() {
        let now = Instant::now();
        let host = member("host");
        let (mut reg, code) = opened(&host, now);
        reg.claim(&code, &member("b"), now).ok();
        assert!(reg.expire_due(now + 10 * TTL).is_empty());
        assert!(reg.close_due(now + 10 * TTL).is_empty());
        assert!(reg.is_joined(&code));
    }

    #[test]
    fn a_browser_leaving_reopens_the_code_for_a_ttl() {
        let now = Instant::now();
        let (host, browser) = (member("host"), member("browser"));
        let (mut reg, code) = opened(&host, now);
        reg.claim(&code, &browser, now).ok();
        let later = now + TTL;
        // Only the joined browser's leaving counts.
        assert!(reg.leave(&code, &member("other"), later).is_none());
        let told = reg.leave(&code, &browser, later);
        assert!(told.is_some_and(|h| h.same(&host)));
        assert!(reg.claim(&code, &member("next"), later).is_ok());
    }

    #[test]
    fn a_host_removed_takes_its_joined_browser_along() {
        let now = Instant::now();
        let (host, browser) = (member("host"), member("browser"));
        let (mut reg, code) = opened(&host, now);
        reg.claim(&code, &browser, now).ok();
        // Not the holder: nothing happens.
        assert!(reg.remove(&code, &member("impostor")).is_none());
        let removed = reg.remove(&code, &host);
        assert!(removed.is_some_and(|r| r.browser.is_some_and(|b| b.same(&browser))));
        assert!(reg.is_empty());
    }

    #[test]
    fn stale_deadlines_of_a_host_registering_in_a_loop_stay_bounded() {
        let now = Instant::now();
        let host = member("host");
        let mut reg = registry();
        let mut code = *b"AAAAAA";
        for i in 0..250u8 {
            reg.remove(&code, &host);
            code = [b'A' + i % 20; 6];
            reg.open(code, &host, now + Duration::from_millis(u64::from(i)));
        }
        assert!(reg.expiries.len() <= 2 * reg.len() + STALE_SLACK + 1);
    }

    #[test]
    fn join_rules_the_guessing_budget_comes_first() {
        let step = join_step(false, true, "not a code", 0, |_| 0);
        assert_eq!(step, JoinStep::Fail(ErrorCode::RateLimited));
        assert!(!is_a_guess(ErrorCode::RateLimited));
        assert!(is_a_guess(ErrorCode::InvalidCode));
    }

    #[test]
    fn join_rules_a_joined_browser_cannot_join_again() {
        let step = join_step(true, true, "H4F7KN", 0, |_| 0);
        assert_eq!(step, JoinStep::Fail(ErrorCode::AlreadyJoined));
    }

    #[test]
    fn join_rules_text_that_is_not_a_code_is_invalid() {
        for typed in ["", "H4F7K", "H4F7K0", "H4F7KNN"] {
            let step = join_step(true, false, typed, 0, |_| 0);
            assert_eq!(step, JoinStep::Fail(ErrorCode::InvalidCode), "{typed}");
        }
    }

    #[test]
    fn join_rules_a_code_is_joined_on_its_owner_shard() {
        assert_eq!(
            join_step(true, false, "h4f7kn", 1, |_| 1),
            JoinStep::Here(*b"H4F7KN")
        );
        assert_eq!(
            join_step(true, false, "H4F7KN", 0, |_| 3),
            JoinStep::Move {
                owner: 3,
                code: *b"H4F7KN"
            }
        );
    }

    #[test]
    fn join_rules_the_fifth_failed_join_closes_the_browser() {
        let mut failed = 0;
        for attempt in 1..=MAX_FAILED_JOINS {
            let (count, closes) = after_failed_join(failed);
            failed = count;
            assert_eq!(closes, attempt == 5, "attempt {attempt}");
        }
    }
}
