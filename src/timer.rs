//! A hashed hierarchical timing wheel: deadlines whose cost is proportional to what
//! expires, not to what is registered (issue 20, point 1).
//!
//! Time is counted in ticks of one period (`Config::tick_period`) since the wheel's
//! origin. A deadline is stored at the first tick at or after it (rounded *up*), and
//! `Wheel::advance(now)` fires every entry whose tick is at or before `now` (rounded
//! *down*), so an entry never fires early and fires at most one period (plus however
//! late the caller's own tick runs) after its deadline — the same bound the per-tick walk
//! it replaces gave.
//!
//! Two levels and an overflow list:
//! * `fine`: [`FINE_SLOTS`] slots of one tick each, holding exactly the entries due in
//!   the current block of `FINE_SLOTS` ticks (each slot holds one due tick);
//! * `coarse`: [`COARSE_SLOTS`] slots of one block each, for the next `COARSE_SLOTS`
//!   blocks; a slot cascades into `fine` when its block begins;
//! * `far`: anything later, looked at once per full turn of the coarse level.
//!
//! Insertion is O(1) (a `Vec` push into a slot); advancing one tick is O(entries that
//! fire) plus, once per block, O(entries cascading). Nothing is ever removed early:
//! cancelling is the owner's business. An owner keeps an [`Armed`] (a generation and the
//! tick it is armed for) and ignores a fired entry whose generation is not the current
//! one; an owner whose deadline moved later (activity on a connection) simply lets the
//! early entry fire and arms again then ("lazy re-arming"), so activity never touches
//! the wheel.
//!
//! This module knows nothing of shards, connections or registries: keys are opaque.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Ticks per fine block: 256 slots of `Vec` headers (6 KiB). At the default 500 ms
/// tick a block is 128 s, which holds every heartbeat deadline (ping interval + pong
/// timeout, 60 s by default) without a cascade; at the fastest 10 ms tick it is 2.56 s.
pub const FINE_SLOTS: u64 = 256;

/// Blocks in the coarse level: 256 more slots (6 KiB). Together with the fine level
/// they span 65,536 ticks — 9 hours at 500 ms, 11 minutes at 10 ms — which covers every
/// TTL the relay has by default (pair and code TTL 5 min); longer ones go to `far`.
pub const COARSE_SLOTS: u64 = 256;

/// A drained slot whose `Vec` grew past this many entries gives its memory back rather
/// than keeping it for the next turn: a burst (a reconnect storm arming a million
/// heartbeats in one tick) should not pin its peak forever, while an ordinary slot keeps
/// its capacity and so arms without allocating in steady state.
const SLOT_KEEP: usize = 4096;

/// One registered deadline.
#[derive(Debug, Clone)]
struct Entry<K> {
    /// The tick it fires at.
    due: u64,
    /// What the owner gave to recognise it.
    key: K,
}

/// A timing wheel of keys `K` (see the module docs).
#[derive(Debug)]
pub struct Wheel<K> {
    /// Tick 0 begins here.
    origin: Instant,
    /// One tick, in nanoseconds (never zero).
    tick_nanos: u128,
    /// The next tick to fire: every tick before it has fired.
    next: u64,
    /// Slots of the current block, one tick each.
    fine: Vec<Vec<Entry<K>>>,
    /// Slots of the next `COARSE_SLOTS` blocks, one block each.
    coarse: Vec<Vec<Entry<K>>>,
    /// Entries beyond the coarse level's reach.
    far: Vec<Entry<K>>,
    /// Entries registered and not yet fired (stale ones included).
    len: usize,
    /// The generation the next `arm` hands out: shared by every owner of this wheel, so
    /// an owner that reuses another's key (a slab slot) never matches its stale entries.
    next_gen: u32,
}

/// What an owner of one deadline remembers about its entry in a wheel: the generation
/// of the live entry and the tick it fires at — plus one spare mark for the owner's own
/// bookkeeping (a shard lists a connection for a look at its next tick with it), which
/// sits in what would otherwise be padding: 16 bytes in all. A fired entry whose
/// generation differs is stale (superseded by an earlier one, or cancelled) and is
/// ignored.
#[derive(Debug)]
pub struct Armed {
    /// Tick the live entry fires at; [`Armed::NONE`] when no entry is live.
    due: Cell<u64>,
    /// Generation of the live entry.
    generation: Cell<u32>,
    /// The owner's mark (see [`Armed::mark`]); 0 until set.
    mark: Cell<u32>,
}

impl Default for Armed {
    fn default() -> Self {
        Armed {
            due: Cell::new(Armed::NONE),
            generation: Cell::new(0),
            mark: Cell::new(0),
        }
    }
}

impl Armed {
    /// `due` when no entry is live.
    const NONE: u64 = u64::MAX;

    /// True while an entry is live.
    pub fn is_armed(&self) -> bool {
        self.due.get() != Armed::NONE
    }

    /// The tick the live entry fires at, if any.
    pub fn due(&self) -> Option<u64> {
        self.is_armed().then(|| self.due.get())
    }

    /// An entry of generation `generation` fired: true (and disarmed) if it is the live
    /// one, false if it is stale.
    pub fn fire(&self, generation: u32) -> bool {
        let live = self.is_armed() && self.generation.get() == generation;
        if live {
            self.due.set(Armed::NONE);
        }
        live
    }

    /// Forget the live entry: when it fires it is stale.
    pub fn cancel(&self) {
        self.due.set(Armed::NONE);
        self.generation.set(self.generation.get().wrapping_add(1));
    }

    /// Set the owner's mark to `mark`: true if it was something else.
    pub fn mark(&self, mark: u32) -> bool {
        self.mark.replace(mark) != mark
    }

    /// True when the owner's mark is `mark`.
    pub fn is_marked(&self, mark: u32) -> bool {
        self.mark.get() == mark
    }
}

impl<K> Wheel<K> {
    /// An empty wheel whose tick 0 begins at `origin`, ticking every `tick`.
    pub fn new(origin: Instant, tick: Duration) -> Self {
        Wheel {
            origin,
            tick_nanos: tick.as_nanos().max(1),
            next: 0,
            fine: (0..FINE_SLOTS).map(|_| Vec::new()).collect(),
            coarse: (0..COARSE_SLOTS).map(|_| Vec::new()).collect(),
            far: Vec::new(),
            len: 0,
            next_gen: 0,
        }
    }

    /// Where tick 0 begins.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Entries registered and not yet fired (stale ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tick a deadline fires at: the first tick at or after it, and never one that
    /// has already fired.
    pub fn tick_of(&self, deadline: Instant) -> u64 {
        let nanos = deadline.saturating_duration_since(self.origin).as_nanos();
        let tick = nanos.div_ceil(self.tick_nanos);
        u64::try_from(tick).unwrap_or(u64::MAX - 1).max(self.next)
    }

    /// The last tick that has begun at `now` (rounded down).
    fn tick_at(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos / self.tick_nanos).unwrap_or(u64::MAX - 1)
    }

    /// Register `key` to fire at the first tick at or after `deadline`.
    pub fn insert(&mut self, deadline: Instant, key: K) {
        let due = self.tick_of(deadline);
        self.insert_at(due, key);
    }

    /// Register `key` for `owner`'s deadline unless `owner` already has a live entry
    /// firing no later (that one fires first and its owner arms again then). `key` is
    /// given the new entry's generation. Returns true when an entry was added; a live
    /// entry it supersedes becomes stale.
    pub fn arm(&mut self, owner: &Armed, deadline: Instant, key: impl FnOnce(u32) -> K) -> bool {
        let due = self.tick_of(deadline);
        if owner.due().is_some_and(|armed| armed <= due) {
            return false;
        }
        let generation = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1);
        owner.generation.set(generation);
        owner.due.set(due);
        self.insert_at(due, key(generation));
        true
    }

    /// Place an entry due at `due` (never before `self.next`).
    fn insert_at(&mut self, due: u64, key: K) {
        let due = due.max(self.next);
        self.len += 1;
        self.place(Entry { due, key });
    }

    /// Put an entry in the level that holds its tick.
    fn place(&mut self, entry: Entry<K>) {
        let blocks_ahead = (entry.due / FINE_SLOTS).saturating_sub(self.next / FINE_SLOTS);
        if blocks_ahead == 0 {
            self.fine[(entry.due % FINE_SLOTS) as usize].push(entry);
        } else if blocks_ahead <= COARSE_SLOTS {
            self.coarse[((entry.due / FINE_SLOTS) % COARSE_SLOTS) as usize].push(entry);
        } else {
            self.far.push(entry);
        }
    }

    /// Fire every entry due at or before `now`: their keys are appended to `fired`, in
    /// tick order. Costs one step per tick passed plus one per entry fired or cascaded.
    pub fn advance(&mut self, now: Instant, fired: &mut Vec<K>) {
        let last = self.tick_at(now);
        while self.next <= last {
            if self.len == 0 {
                // Nothing anywhere: jump, keeping the block boundaries in step.
                self.next = last + 1;
                return;
            }
            if self.next.is_multiple_of(FINE_SLOTS) {
                self.begin_block();
            }
            let slot = &mut self.fine[(self.next % FINE_SLOTS) as usize];
            self.len -= slot.len();
            fired.extend(slot.drain(..).map(|entry| entry.key));
            if slot.capacity() > SLOT_KEEP {
                *slot = Vec::new();
            }
            self.next += 1;
        }
    }

    /// A new block begins at `self.next`: its coarse slot cascades into `fine` (every
    /// entry there is due in this block), and at each full turn of the coarse level the
    /// far list is sorted back into reach.
    fn begin_block(&mut self) {
        let block = self.next / FINE_SLOTS;
        let index = (block % COARSE_SLOTS) as usize;
        let mut cascading = std::mem::take(&mut self.coarse[index]);
        for entry in cascading.drain(..) {
            self.place(entry);
        }
        if cascading.capacity() <= SLOT_KEEP && self.coarse[index].is_empty() {
            // Keep the slot's capacity for its next turn.
            self.coarse[index] = cascading;
        }
        if block.is_multiple_of(COARSE_SLOTS) && !self.far.is_empty() {
            for entry in std::mem::take(&mut self.far) {
                self.place(entry);
            }
        }
    }
}

/// Deadline reminders for a registry whose time is a parameter and whose tick it does
/// not know (the styles' registries: takeover probes, grace windows, TTLs): a min-heap
/// of (deadline, key). Reminding is O(log n) in the deadlines pending, and `due` costs
/// O(log n) per reminder due — what expires, never a walk of the registry. Like the
/// wheel's entries, reminders are never cancelled: the registry checks the entry's
/// own deadline when one comes due and ignores a stale one (the deadline moved or the
/// entry went), so a reminder costs its 8 B + key until then.
#[derive(Debug)]
pub struct Reminders<K: Ord> {
    /// Pending reminders, earliest first.
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord> Default for Reminders<K> {
    fn default() -> Self {
        Reminders {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord> Reminders<K> {
    /// Remind of `key` at `deadline`.
    pub fn remind(&mut self, deadline: Instant, key: K) {
        self.heap.push(Reverse((deadline, key)));
    }

    /// Reminders pending (stale ones included).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when none is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The next reminder due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        if self.heap.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            return self.heap.pop().map(|Reverse((_, key))| key);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);

    fn at(origin: Instant, ticks: u64) -> Instant {
        origin + TICK * u32::try_from(ticks).expect("test ticks fit in u32")
    }

    /// Advance to `ticks` and return what fired.
    fn fire(wheel: &mut Wheel<u32>, origin: Instant, ticks: u64) -> Vec<u32> {
        let mut fired = Vec::new();
        wheel.advance(at(origin, ticks), &mut fired);
        fired
    }

    #[test]
    fn an_entry_fires_at_the_first_tick_at_or_after_its_deadline_never_before() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin, TICK);
        wheel.insert(at(origin, 3), 1);
        wheel.insert(at(origin, 3) + Duration::from_millis(1), 2);
        assert_eq!(wheel.len(), 2);
        assert!(fire(&mut wheel, origin, 2).is_empty());
        // 1 ms before tick 3: still nothing.
        let mut fired = Vec::new();
        wheel.advance(at(origin, 3) - Duration::from_millis(1), &mut fired);
        assert!(fired.is_empty());
        assert_eq!(fire(&mut wheel, origin, 3), vec![1]);
        assert_eq!(fire(&mut wheel, origin, 4), vec![2]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn a_deadline_already_past_fires_at_the_next_advance() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin, TICK);
        assert!(fire(&mut wheel, origin, 10).is_empty());
        wheel.insert(origin, 7);
        assert_eq!(wheel.tick_of(origin), 11);
        assert_eq!(fire(&mut wheel, origin, 11), vec![7]);
    }

    #[test]
    fn entries_fire_in_tick_order_when_several_ticks_pass_at_once() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin, TICK);
        for (key, ticks) in [(3, 30), (1, 10), (2, 20)] {
            wheel.insert(at(origin, ticks), key);
        }
        assert_eq!(fire(&mut wheel, origin, 25), vec![1, 2]);
        assert_eq!(fire(&mut wheel, origin, 1000), vec![3]);
    }

    #[test]
    fn a_coarse_entry_cascades_and_fires_at_its_exact_tick() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin, TICK);
        // Blocks 1, 2 and the last the coarse level reaches.
        let dues = [
            FINE_SLOTS + 5,
            2 * FINE_SLOTS,
            COARSE_SLOTS * FINE_SLOTS + 17,
        ];
        for (key, due) in (0u32..).zip(dues) {
            wheel.insert(at(origin, due), key);
        }
        assert!(wheel.far.is_empty(), "all within the coarse level's reach");
        for (key, due) in (0u32..).zip(dues) {
            assert!(fire(&mut wheel, origin, due - 1).is_empty(), "{key} early");
            assert_eq!(fire(&mut wheel, origin, due), vec![key]);
        }
        assert!(wheel.is_empty());
    }

    #[test]
    fn a_far_entry_comes_back_into_reach_and_fires_at_its_exact_tick() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin, TICK);
        let span = FINE_SLOTS * COARSE_SLOTS;
        let dues = [3 * span + 1, span + FINE_SLOTS + 1];
        for (key, due) in (0u32..).zip(dues) {
            wheel.insert(at(origin, due), key);
        }
        assert_eq!(wheel.far.len(), 2);
        // Tick by tick through the turns, as the shard does (a few thousand ticks).
        let mut fired = Vec::new();
        let mut when = Vec::new();
        for tick in 0..=dues[0] {
            wheel.advance(at(origin, tick), &mut fired);
            when.extend(fired.drain(..).map(|key| (key, tick)));
        }
        assert_eq!(when, vec![(1, dues[1]), (0, dues[0])]);
    }

    #[test]
    fn a_live_entry_fires_once_and_a_superseded_one_is_stale() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin, TICK);
        let owner = Armed::default();
        assert!(wheel.arm(&owner, at(origin, 50), |generation| generation));
        // A later deadline does not add an entry: the earlier one fires first.
        assert!(!wheel.arm(&owner, at(origin, 80), |generation| generation));
        // An earlier one does, and the first becomes stale.
        assert!(wheel.arm(&owner, at(origin, 20), |generation| generation));
        assert_eq!(wheel.len(), 2);
        assert_eq!(owner.due(), Some(20));
        let fired = fire(&mut wheel, origin, 20);
        assert_eq!(fired.len(), 1);
        assert!(owner.fire(fired[0]), "the live entry");
        assert!(!owner.is_armed());
        let fired = fire(&mut wheel, origin, 50);
        assert_eq!(fired.len(), 1);
        assert!(!owner.fire(fired[0]), "the superseded entry is stale");
    }

    #[test]
    fn an_owner_carries_16_bytes_and_its_mark() {
        assert_eq!(std::mem::size_of::<Armed>(), 16);
        let owner = Armed::default();
        assert!(!owner.is_marked(1));
        assert!(owner.mark(1));
        assert!(!owner.mark(1), "already marked");
        assert!(owner.is_marked(1));
    }

    #[test]
    fn reminders_come_due_earliest_first_and_only_when_due() {
        let now = Instant::now();
        let mut reminders = Reminders::default();
        for (key, secs) in [("c", 30), ("a", 10), ("b", 20)] {
            reminders.remind(now + Duration::from_secs(secs), key);
        }
        assert_eq!(reminders.pop_due(now + Duration::from_secs(9)), None);
        let later = now + Duration::from_secs(20);
        assert_eq!(reminders.pop_due(later), Some("a"));
        assert_eq!(reminders.pop_due(later), Some("b"));
        assert_eq!(reminders.pop_due(later), None);
        assert_eq!(reminders.len(), 1);
    }

    #[test]
    fn a_cancelled_entry_is_stale_when_it_fires() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin, TICK);
        let owner = Armed::default();
        assert!(wheel.arm(&owner, at(origin, 5), |generation| generation));
        owner.cancel();
        assert!(!owner.is_armed());
        let fired = fire(&mut wheel, origin, 5);
        assert_eq!(fired.len(), 1);
        assert!(!owner.fire(fired[0]));
    }

    #[test]
    fn another_owner_reusing_a_key_never_matches_a_stale_generation() {
        let origin = Instant::now();
        let mut wheel: Wheel<(u32, u32)> = Wheel::new(origin, TICK);
        let first = Armed::default();
        wheel.arm(&first, at(origin, 5), |generation| (0, generation));
        // Slot 0 is reused by a new owner before the first one's entry fired.
        let second = Armed::default();
        wheel.arm(&second, at(origin, 9), |generation| (0, generation));
        let mut fired = Vec::new();
        wheel.advance(at(origin, 5), &mut fired);
        assert!(!second.fire(fired[0].1), "the first owner's entry is stale");
        assert!(second.is_armed());
    }

    #[test]
    fn lazy_rearming_follows_a_deadline_that_moved_later() {
        // A heartbeat: due 30 ticks after the last activity. Activity at tick 10 does not
        // touch the wheel; the entry fires early at 30, the owner sees the real deadline
        // is 40 and arms again; it fires at 40.
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin, TICK);
        let owner = Armed::default();
        let last_activity = Cell::new(0u64);
        let deadline = |activity: u64| at(origin, activity + 30);
        wheel.arm(&owner, deadline(last_activity.get()), |g| g);
        last_activity.set(10);
        let mut expired_at = None;
        for tick in 0..=60 {
            for generation in fire(&mut wheel, origin, tick) {
                if !owner.fire(generation) {
                    continue;
                }
                if tick >= last_activity.get() + 30 {
                    expired_at = Some(tick);
                } else {
                    wheel.arm(&owner, deadline(last_activity.get()), |g| g);
                }
            }
        }
        assert_eq!(expired_at, Some(40));
        assert!(wheel.is_empty());
    }

    #[test]
    fn advancing_costs_what_fires_not_what_is_registered() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin, TICK);
        for key in 0..100_000u32 {
            wheel.insert(at(origin, 100 + u64::from(key % 1000)), key);
        }
        let fired = fire(&mut wheel, origin, 100);
        assert_eq!(fired.len(), 100, "only tick 100's entries");
        assert_eq!(wheel.len(), 99_900);
    }

    #[test]
    fn a_drained_burst_slot_gives_its_memory_back() {
        let origin = Instant::now();
        let mut wheel = Wheel::new(origin, TICK);
        for key in 0..(SLOT_KEEP as u32 + 1) {
            wheel.insert(at(origin, 1), key);
        }
        assert_eq!(fire(&mut wheel, origin, 1).len(), SLOT_KEEP + 1);
        assert_eq!(wheel.fine[1].capacity(), 0);
    }

    proptest::proptest! {
        /// Against a model: whatever the insertions and advances (across block and turn
        /// boundaries, jumps included), every entry fires exactly once, at the first
        /// advance that reaches its tick.
        #[test]
        fn every_entry_fires_once_at_its_tick(
            ops in proptest::collection::vec((0u64..200_000, 0u64..3_000), 1..200)
        ) {
            let origin = Instant::now();
            let mut wheel = Wheel::new(origin, TICK);
            let mut now = 0u64;
            let mut pending: Vec<(u32, u64)> = Vec::new();
            let mut fired = Vec::new();
            for (key, (ahead, step)) in (0u32..).zip(ops) {
                let due = wheel.tick_of(at(origin, now + ahead));
                wheel.insert(at(origin, now + ahead), key);
                pending.push((key, due));
                now += step;
                wheel.advance(at(origin, now), &mut fired);
                let mut due_now: Vec<u32> =
                    pending.iter().filter(|(_, due)| *due <= now).map(|(k, _)| *k).collect();
                pending.retain(|(_, due)| *due > now);
                due_now.sort_unstable();
                fired.sort_unstable();
                proptest::prop_assert_eq!(&fired, &due_now);
                fired.clear();
            }
            proptest::prop_assert_eq!(wheel.len(), pending.len());
        }
    }
}
