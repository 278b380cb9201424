//! Per-source-address limits (PROTOCOL §2 and §5): the connection-attempt rate
//! (`--per-ip-rate`, `--per-ip-burst`) and the session-code guessing budget
//! (`--code-guesses-per-ip`). Both are GCRA token buckets (one "theoretical arrival
//! time" per address) kept in one [`PerIpTable`] each.
//!
//! * **Key.** An IPv4 address, or the /64 prefix of an IPv6 address (one subscriber's
//!   share: a host picks any address in its /64 at will, so keying by the full address
//!   would give an attacker unlimited budgets). IPv4-mapped IPv6 addresses count as the
//!   IPv4 address.
//! * **Process-wide.** A connection's accept shard is chosen by the kernel, and a
//!   browser's join is answered on whichever shard owns the code, so one address's
//!   attempts land on every shard. The table is shared by all shards; it is touched once
//!   per accepted connection and once per join attempt, never per relayed message.
//! * **O(1) and bounded.** A fixed set-associative table: an address hashes (keyed,
//!   random per process) to one set of [`WAYS`] entries behind its own small lock, so a
//!   lookup scans 8 entries and two shards contend only when they touch the same set at
//!   the same instant. A new address takes an entry whose bucket has refilled (it holds
//!   no information), else evicts the entry with the least debt. Memory is fixed at
//!   [`CAPACITY`] entries whatever the number of sources; nothing is ever swept.
//!
//! Evicting forgets a debt, so an address evicted with debt gets a fresh budget. That is
//! only possible when more than [`CAPACITY`] addresses hold debt at once, and the address
//! evicted is always the one closest to a full bucket; an attacker with that many
//! addresses already has that many budgets.

use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Entries per set: a lookup scans this many; 8 × 16 bytes is two cache lines.
pub const WAYS: usize = 8;

/// Addresses tracked at once per table: 65,536 entries of 16 bytes plus a lock per set,
/// about 1.1 MiB, allocated on first use. An entry matters only while its address is in
/// debt (rate: for the burst window; guesses: for up to a minute), so this is 65,536
/// addresses *active at the same moment* before any eviction.
pub const CAPACITY: usize = 65_536;

/// Sets in a table.
const SETS: usize = CAPACITY / WAYS;

/// One address's bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// The address key ([`key_of`]).
    key: u64,
    /// Theoretical arrival time, microseconds since the table's epoch: the bucket is full
    /// once `tat <= now`; `tat - now` is the debt. 0 = never used.
    tat: u64,
}

/// One set: [`WAYS`] entries behind one lock.
type Set = Mutex<[Entry; WAYS]>;

/// A fixed-size, process-wide table of GCRA buckets keyed by source address.
#[derive(Debug)]
pub struct PerIpTable {
    /// The sets, allocated on first use (an idle relay pays nothing).
    sets: OnceLock<Box<[Set]>>,
    /// Keyed hash of an address key to its set (random per process, so no one can aim
    /// many addresses at one set).
    hasher: ahash::RandomState,
    /// Time zero of every `tat`.
    epoch: Instant,
}

/// The key of a source address: an IPv4 address as its 32 bits, an IPv6 address as its
/// upper 64 bits (its /64). IPv4 keys share their number space with IPv6 prefixes inside
/// `::/32`, which is reserved and never a global source.
pub fn key_of(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64,
    }
}

impl Default for PerIpTable {
    fn default() -> Self {
        Self::new()
    }
}

impl PerIpTable {
    /// An empty table.
    pub fn new() -> Self {
        PerIpTable {
            sets: OnceLock::new(),
            hasher: ahash::RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// Microseconds from the epoch to `now`, plus one so that a fresh entry is never
    /// mistaken for an unused one.
    fn micros(&self, now: Instant) -> u64 {
        micros_of(now.saturating_duration_since(self.epoch)).saturating_add(1)
    }

    /// Run `f` on the `tat` of `ip` under its set's lock, O([`WAYS`]). An address not in
    /// the table has a full bucket (`tat = now`); it is given an entry only if `insert`
    /// (a pure look-up never evicts anyone).
    fn with_tat<R>(
        &self,
        ip: IpAddr,
        now: Instant,
        insert: bool,
        f: impl FnOnce(&mut u64, u64) -> R,
    ) -> R {
        let key = key_of(ip);
        let now = self.micros(now);
        let sets = self.sets.get_or_init(|| {
            (0..SETS)
                .map(|_| Mutex::new([Entry::default(); WAYS]))
                .collect()
        });
        let index = (self.hasher.hash_one(key) % SETS as u64) as usize;
        // A poisoned lock still limits: the entries are plain integers, always valid.
        let mut set = sets[index].lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = set.iter().position(|e| e.key == key && e.tat > now) {
            return f(&mut set[i].tat, now);
        }
        if !insert {
            let mut fresh = now;
            return f(&mut fresh, now);
        }
        let slot = evict(&mut set, key, now);
        f(&mut slot.tat, now)
    }
}

/// A fresh entry (full bucket) for `key`, in place of the entry with the least debt (a
/// refilled or unused entry has none).
fn evict(set: &mut [Entry; WAYS], key: u64, now: u64) -> &mut Entry {
    let mut victim = 0;
    for (i, entry) in set.iter().enumerate() {
        if entry.tat < set[victim].tat {
            victim = i;
        }
    }
    set[victim] = Entry { key, tat: now };
    &mut set[victim]
}

/// Microseconds in a duration, saturating.
fn micros_of(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The connection-attempt rate per address (`--per-ip-rate R`, `--per-ip-burst B`): R
/// attempts per second with bursts of B.
#[derive(Debug)]
pub struct RateLimit {
    /// The buckets.
    table: PerIpTable,
    /// Microseconds one attempt costs (1/R).
    interval: u64,
    /// Most debt an address may hold (B/R).
    tolerance: u64,
}

impl RateLimit {
    /// A limit of `rate` attempts per second with bursts of `burst` (at least 1).
    pub fn new(rate: f64, burst: f64) -> Self {
        let interval = (1e6 / rate).clamp(1.0, 1e15) as u64;
        RateLimit {
            table: PerIpTable::new(),
            interval,
            tolerance: (burst.max(1.0) * interval as f64).min(1e18) as u64,
        }
    }

    /// Take one attempt for `ip` at `now`; false (nothing taken) when its bucket is empty.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let (interval, tolerance) = (self.interval, self.tolerance);
        self.table.with_tat(ip, now, true, |tat, now| {
            let next = (*tat).max(now).saturating_add(interval);
            if next - now > tolerance {
                return false;
            }
            *tat = next;
            true
        })
    }
}

/// The guessing budget (`--code-guesses-per-ip N`): N failed session joins per minute
/// per address, refilled continuously (one every 60/N s) with room for N at once.
///
/// This is the API every session-join path uses: ask [`GuessBudget::may_try`] before
/// trying a code, and call [`GuessBudget::failed`] for every join answered with an error.
#[derive(Debug)]
pub struct GuessBudget {
    /// The buckets.
    table: PerIpTable,
    /// Microseconds one failed join costs (60 s / N).
    interval: u64,
    /// Most debt an address may hold: one minute.
    window: u64,
}

/// The budget's refill window.
pub const GUESS_WINDOW: Duration = Duration::from_secs(60);

impl GuessBudget {
    /// A budget of `per_minute` failed joins per minute (at least 1).
    pub fn new(per_minute: u32) -> Self {
        let window = micros_of(GUESS_WINDOW);
        GuessBudget {
            table: PerIpTable::new(),
            interval: window / u64::from(per_minute.max(1)),
            window,
        }
    }

    /// May `ip` try a code now: would one more failed join still be within its budget?
    /// Takes nothing.
    pub fn may_try(&self, ip: IpAddr, now: Instant) -> bool {
        let (interval, window) = (self.interval, self.window);
        self.table.with_tat(ip, now, false, |tat, now| {
            (*tat).max(now).saturating_add(interval) - now <= window
        })
    }

    /// `ip` made a failed join: spend one from its budget (debt capped at the window).
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let (interval, window) = (self.interval, self.window);
        self.table.with_tat(ip, now, true, |tat, now| {
            *tat = (*tat)
                .max(now)
                .saturating_add(interval)
                .min(now.saturating_add(window));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn rate_burst_then_refill() {
        let l = RateLimit::new(2.0, 3.0);
        let t0 = Instant::now();
        assert!(l.allow(v4(1), t0));
        assert!(l.allow(v4(1), t0));
        assert!(l.allow(v4(1), t0));
        assert!(!l.allow(v4(1), t0));
        assert!(l.allow(v4(1), t0 + Duration::from_millis(500)));
        assert!(!l.allow(v4(1), t0 + Duration::from_millis(500)));
    }

    #[test]
    fn addresses_are_independent() {
        let l = RateLimit::new(1.0, 1.0);
        let t0 = Instant::now();
        assert!(l.allow(v4(1), t0));
        assert!(!l.allow(v4(1), t0));
        assert!(l.allow(v4(2), t0));
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(key_of(a), key_of(b));
        assert_ne!(key_of(a), key_of(c));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(key_of(mapped), key_of(v4(1)));
        let l = RateLimit::new(1.0, 1.0);
        let t0 = Instant::now();
        assert!(l.allow(a, t0));
        assert!(!l.allow(b, t0), "same /64 shares one bucket");
        assert!(l.allow(c, t0));
        assert!(l.allow(IpAddr::V6(Ipv6Addr::LOCALHOST), t0));
    }

    #[test]
    fn guess_budget_allows_n_per_minute() {
        let g = GuessBudget::new(10);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(g.may_try(v4(1), t0));
            g.failed(v4(1), t0);
        }
        assert!(!g.may_try(v4(1), t0));
        assert!(g.may_try(v4(2), t0), "another address is unaffected");
        assert!(!g.may_try(v4(1), t0 + Duration::from_millis(5_900)));
        assert!(
            g.may_try(v4(1), t0 + Duration::from_secs(6)),
            "one back every 6 s"
        );
        g.failed(v4(1), t0 + Duration::from_secs(6));
        assert!(!g.may_try(v4(1), t0 + Duration::from_secs(6)));
        assert!(g.may_try(v4(1), t0 + Duration::from_secs(60)));
    }

    #[test]
    fn memory_is_bounded_and_a_flood_keeps_the_most_indebted() {
        let g = GuessBudget::new(10);
        let t0 = Instant::now();
        let attacker = v4(1);
        for _ in 0..10 {
            g.failed(attacker, t0);
        }
        // Far more addresses than entries, each with less debt than the attacker.
        let t1 = t0 + Duration::from_secs(1);
        for i in 0..(4 * CAPACITY as u32) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
            assert!(g.may_try(ip, t1));
            g.failed(ip, t1);
        }
        assert_eq!(g.table.sets.get().map(|s| s.len() * WAYS), Some(CAPACITY));
        assert!(!g.may_try(attacker, t1), "the most indebted entry stays");
        assert!(g.may_try(attacker, t0 + Duration::from_secs(6)));
    }

    #[test]
    fn a_look_up_does_not_take_an_entry() {
        let g = GuessBudget::new(10);
        let t0 = Instant::now();
        assert!(g.may_try(v4(1), t0));
        let sets = g.table.sets.get().expect("allocated");
        let used = sets
            .iter()
            .flat_map(|s| *s.lock().unwrap())
            .filter(|e| e.tat != 0);
        assert_eq!(used.count(), 0);
    }
}
