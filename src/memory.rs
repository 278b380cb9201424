//! The process-wide memory budget (PROTOCOL §2.1): every byte a client can make the
//! relay hold — queued frames, a lone pair side's early messages, reassembly and
//! partial-frame buffers, request heads, ticket windows — is charged here at what it
//! occupies, against one `--memory-limit`.
//!
//! The budget is one per process by nature (it bounds the process's resident memory, as
//! the allocator is one per process), so it is a static rather than a field of every
//! shard. Shards charge and release constantly (twice per relayed message), so each
//! shard keeps its running delta in a thread-local and publishes it to the shared atomic
//! only once it has moved by `PUBLISH_STEP`: the shared cache line is touched about once
//! per 64 KiB moved, never per message. The total read by `used()` is therefore exact to
//! within `PUBLISH_STEP` per shard, which is all a limit of megabytes needs.

use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// A shard publishes its delta once it moved this far: 64 KiB is a hundred small frames
/// or one quarter of a maximal message, and with a few shards the total stays within a
/// fraction of a MiB of the truth.
const PUBLISH_STEP: isize = 64 * 1024;

/// The smallest share of the limit one connection is entitled to under pressure: a
/// connection may always hold a handful of small frames and a partial frame.
const MIN_SHARE: usize = 64 * 1024;

/// mimalloc's purge delay, in milliseconds. The `mimalloc` crate builds mimalloc v3, whose
/// default of 1000 ms, extended while frees keep coming, held 20–35 MiB of freed pages
/// for as long as an attack's churn lasted (RSS 45 MiB with 1–4 MiB charged in
/// `pt1_early_messages_flushed_on_join…`); at 10 ms (v2's default, and the value v3's own
/// header documents) RSS follows the charged bytes. docs/benchmarks.md has the figures.
pub const ALLOCATOR_PURGE_DELAY_MS: libc::c_long = 10;

/// What a queue may hold before its feeders pause while the process is at its limit:
/// enough for a few messages to keep flowing to a reader that drains, small enough that
/// the connections' growth past the limit stays within the headroom.
pub const PRESSURE_ROOM: usize = 64 * 1024;

/// Bytes charged by every shard, as last published.
static USED: AtomicIsize = AtomicIsize::new(0);

/// `--memory-limit` in bytes (0 until the server starts: no limit in unit tests).
static LIMIT: AtomicUsize = AtomicUsize::new(0);

/// A shard that released this much since its last collection asks the allocator to
/// return its free pages to the OS at its next tick (an idle shard after an attack would
/// otherwise keep them, whatever the purge delay, until it next allocates much).
const COLLECT_AFTER: usize = 1 << 20;

/// And it does so at most once per this many ticks (with the default timers, about once
/// every 4 s; with a 1 s stall timeout, every 1.25 s): under steady traffic releases add
/// up too, and a forced collection is not free.
const COLLECT_EVERY_TICKS: u32 = 8;

thread_local! {
    /// This thread's charges not yet published to `USED`.
    static PENDING: Cell<isize> = const { Cell::new(0) };
    /// Bytes this thread released since it last collected.
    static RELEASED: Cell<usize> = const { Cell::new(0) };
    /// Ticks since this thread last collected.
    static TICKS: Cell<u32> = const { Cell::new(0) };
}

/// From a shard's tick: after large releases, let the allocator return the freed pages
/// to the OS now.
pub fn collect_if_released() {
    let ticks = TICKS.with(|t| t.get().saturating_add(1));
    TICKS.with(|t| t.set(ticks));
    if ticks < COLLECT_EVERY_TICKS || RELEASED.with(Cell::get) < COLLECT_AFTER {
        return;
    }
    crate::sys::allocator_collect();
    RELEASED.with(|r| r.set(0));
    TICKS.with(|t| t.set(0));
}

/// Set the process-wide limit, and the allocator's purge delay so that memory given
/// back is returned to the OS (the server does it once at start).
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
    // An operator's `MIMALLOC_PURGE_DELAY` wins.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        crate::sys::set_allocator_purge_delay(ALLOCATOR_PURGE_DELAY_MS);
    }
}

/// The process-wide limit in bytes (0: none).
pub fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Bytes charged right now, as published (plus this thread's unpublished delta).
pub fn used() -> usize {
    let pending = PENDING.try_with(Cell::get).unwrap_or(0);
    (USED.load(Ordering::Relaxed) + pending).max(0) as usize
}

/// The part of the limit kept back from charges: the relay acts "at the limit" once the
/// charges reach 7/8 of it, because what it charges is what it asked the allocator for,
/// and the allocator's own overhead (size-class rounding beyond `footprint`, pages
/// awaiting purge) and the charges that land between a check and its effect (a read
/// already under way, the per-shard publishing slack) must fit in the rest.
const HEADROOM_DIVISOR: usize = 8;

/// True at the limit: new upgrades are refused, the readers feeding the largest queues
/// pause, and connections above their share are closed after the stall timeout.
pub fn over_limit() -> bool {
    let limit = limit();
    limit > 0 && used() >= limit - limit / HEADROOM_DIVISOR
}

/// What an allocation of `bytes` occupies: mimalloc rounds a request up to its size
/// class, four classes per power of two above 64 bytes (at most 25 % more, 12 % on
/// average), and 16-byte steps below.
pub fn footprint(bytes: usize) -> usize {
    if bytes <= 64 {
        return bytes.next_multiple_of(16);
    }
    let step = (1usize << (usize::BITS - 1 - bytes.leading_zeros())) / 4;
    bytes.next_multiple_of(step)
}

/// What one connection may hold while the process is at its limit: an equal part of the
/// limit among the open connections, at least `MIN_SHARE`, at most `max_queue`.
pub fn share(open_connections: usize, max_queue: usize) -> usize {
    (limit() / open_connections.max(1)).clamp(MIN_SHARE.min(max_queue), max_queue)
}

/// Add `bytes` to the budget.
pub fn charge(bytes: usize) {
    add(bytes as isize);
}

/// Take `bytes` off the budget.
pub fn release(bytes: usize) {
    add(-(bytes as isize));
    let _ = RELEASED.try_with(|r| r.set(r.get().saturating_add(bytes)));
}

/// Move this thread's delta, publishing it once it is large.
fn add(delta: isize) {
    if delta == 0 {
        return;
    }
    // `try_with`: a buffer dropped while its thread exits charges the total directly.
    let published = PENDING.try_with(|pending| {
        let now = pending.get() + delta;
        if now.abs() >= PUBLISH_STEP {
            USED.fetch_add(now, Ordering::Relaxed);
            pending.set(0);
        } else {
            pending.set(now);
        }
    });
    if published.is_err() {
        USED.fetch_add(delta, Ordering::Relaxed);
    }
}

/// Bytes charged for as long as this value lives (a ticket window, a request head): the
/// charge follows `set`, and whatever is left is released on drop.
#[derive(Debug, Default)]
pub struct Held(usize);

impl Held {
    /// Charge `bytes` now.
    pub fn new(bytes: usize) -> Self {
        let bytes = footprint(bytes);
        charge(bytes);
        Held(bytes)
    }

    /// The charge becomes that of a `bytes` allocation (a buffer grew or shrank).
    pub fn set(&mut self, bytes: usize) {
        let bytes = footprint(bytes);
        if bytes >= self.0 {
            charge(bytes - self.0);
        } else {
            release(self.0 - bytes);
        }
        self.0 = bytes;
    }

    /// Bytes charged.
    pub fn bytes(&self) -> usize {
        self.0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        release(self.0);
    }
}

/// The default `--memory-limit`: half of what the process may use — its cgroup's memory
/// limit when it has one, else the machine's physical memory.
pub fn default_limit() -> usize {
    let physical = crate::sys::physical_memory();
    let allowed = cgroup_limit().map_or(physical, |c| c.min(physical.max(1)));
    (allowed / 2).max(1)
}

/// The cgroup memory limit (v2 `memory.max`, else v1 `memory.limit_in_bytes`), if any.
fn cgroup_limit() -> Option<usize> {
    let files = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ];
    files.iter().find_map(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        parse_cgroup_limit(&text)
    })
}

/// A cgroup limit file's value; `max` (v2) or a huge number (v1's "unlimited") is none.
fn parse_cgroup_limit(text: &str) -> Option<usize> {
    let value: u64 = text.trim().parse().ok()?;
    // v1 writes "unlimited" as a page-rounded i64::MAX.
    (value < 1 << 60)
        .then_some(value)
        .and_then(|v| usize::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_files_parse() {
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("1073741824\n"), Some(1 << 30));
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), None);
        assert!(default_limit() > 0);
    }

    #[test]
    fn charges_publish_in_steps_and_held_releases_on_drop() {
        // Runs on its own test thread: PENDING starts at zero here (USED is shared with
        // other tests, so only this thread's delta is checked).
        charge(100);
        assert_eq!(PENDING.with(Cell::get), 100);
        let held = Held::new(PUBLISH_STEP as usize);
        assert_eq!(PENDING.with(Cell::get), 0, "published once past the step");
        assert_eq!(held.bytes(), PUBLISH_STEP as usize);
        drop(held);
        assert_eq!(PENDING.with(Cell::get), 0, "the release was published too");
        release(100);
        assert_eq!(PENDING.with(Cell::get), -100);
    }

    #[test]
    fn footprints_round_up_to_size_classes() {
        assert_eq!(footprint(0), 0);
        assert_eq!(footprint(1), 16);
        assert_eq!(footprint(512), 512);
        assert_eq!(footprint(513), 640);
        assert_eq!(footprint(240 * 1024), 256 * 1024);
        assert_eq!(footprint(256 * 1024), 256 * 1024);
    }

    #[test]
    fn share_is_bounded_both_ways() {
        // LIMIT is 0 in unit tests: the floor applies.
        assert_eq!(share(10, 4 << 20), MIN_SHARE);
        assert_eq!(share(10, 1000), 1000);
    }
}

#[cfg(test)]
mod allocator_tests {
    use super::ALLOCATOR_PURGE_DELAY_MS;
    use crate::sys::{allocator_purge_delay, set_allocator_purge_delay};

    #[test]
    fn allocator_purge_delay_is_where_we_expect() {
        // mimalloc v3's default, unless the environment overrides it.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            let before = allocator_purge_delay();
            assert!(
                before == 1000 || before == ALLOCATOR_PURGE_DELAY_MS,
                "option 15 is not purge_delay: {before}"
            );
        }
        set_allocator_purge_delay(ALLOCATOR_PURGE_DELAY_MS);
        assert_eq!(allocator_purge_delay(), ALLOCATOR_PURGE_DELAY_MS);
    }
}
