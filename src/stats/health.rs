//! `/health`: the few figures any shard can read of every other without asking it.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::*;

/// One shard's `/health` figures, written by that shard as they move (a relaxed store
/// of the new value after each change, so the mirror always equals the shard's own
/// tally) and read by whichever shard answers a probe. Touched once per connection open
/// or close and per registry change, never per relayed message.
#[derive(Debug, Default)]
pub struct HealthMirror {
    /// Open binary connections.
    pub(super) binaries: AtomicU64,
    /// Open phone connections.
    pub(super) phones: AtomicU64,
    /// This shard's share of the `pairs` gauge.
    pub(super) pairs: AtomicI64,
    /// This shard's share of the `sessions` gauge.
    pub(super) sessions: AtomicI64,
    /// This shard's share of the `tickets` gauge.
    pub(super) tickets: AtomicI64,
}

impl HealthMirror {
    /// Open connections of `kind` on this shard are now `open`.
    pub fn connections(&self, kind: ConnKind, open: u64) {
        let slot = match kind {
            ConnKind::Binary => &self.binaries,
            ConnKind::Phone => &self.phones,
            _ => return,
        };
        slot.store(open, Ordering::Relaxed);
    }

    /// This shard's share of `gauge` is now `value` (other gauges are ignored).
    pub fn gauge(&self, gauge: Gauge, value: i64) {
        let slot = match gauge {
            Gauge::Pairs => &self.pairs,
            Gauge::Sessions => &self.sessions,
            Gauge::Tickets => &self.tickets,
            Gauge::ServerSlots | Gauge::WsSessions => return,
        };
        slot.store(value, Ordering::Relaxed);
    }

    /// The figures now.
    pub fn read(&self) -> HealthCounts {
        HealthCounts {
            binaries: self.binaries.load(Ordering::Relaxed),
            phones: self.phones.load(Ordering::Relaxed),
            pairs: self.pairs.load(Ordering::Relaxed),
            sessions: self.sessions.load(Ordering::Relaxed),
            tickets: self.tickets.load(Ordering::Relaxed),
        }
    }
}

/// What `/health` reports of one shard, or of all of them summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthCounts {
    /// Open binary connections.
    pub binaries: u64,
    /// Open phone connections.
    pub phones: u64,
    /// This shard's share of the `pairs` gauge (may be negative alone, see `gauge_add`).
    pub pairs: i64,
    /// This shard's share of the `sessions` gauge.
    pub sessions: i64,
    /// This shard's share of the `tickets` gauge.
    pub tickets: i64,
}

impl HealthCounts {
    /// Add another shard's counts.
    pub fn add(&mut self, other: &HealthCounts) {
        self.binaries = self.binaries.saturating_add(other.binaries);
        self.phones = self.phones.saturating_add(other.phones);
        self.pairs = self.pairs.saturating_add(other.pairs);
        self.sessions = self.sessions.saturating_add(other.sessions);
        self.tickets = self.tickets.saturating_add(other.tickets);
    }
}
