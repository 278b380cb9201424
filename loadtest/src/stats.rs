//! What a worker measures, and how workers' measurements merge. Each worker owns a
//! [`Recorder`] (plain cells, no atomics, no locks); at the end the per-worker
//! [`Totals`] are added up with [`Totals::merge`] (`Histogram::add` for latency).

use std::cell::RefCell;
use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::clock::{micros_between, Nanos};

/// Longest latency a histogram holds, in µs: one hour, far beyond any run's drain.
const MAX_TRACKED_MICROS: u64 = 3_600_000_000;
/// Significant figures: 0.1% resolution, the usual wrk2/relay setting.
const SIGNIFICANT_FIGURES: u8 = 3;

/// An empty latency histogram in microseconds.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants satisfying hdrhistogram's rules (low ≥ 1, high ≥ 2·low,
    // sigfig ≤ 5), so construction cannot fail.
    Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, SIGNIFICANT_FIGURES)
        .expect("constant histogram bounds are valid")
}

/// Integrity violations: any non-zero count fails the run (exit code 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Integrity {
    /// Sent but never received (within the drain time).
    pub lost: u64,
    /// Received more than once.
    pub duplicated: u64,
    /// Received after a later message of the same stream.
    pub reordered: u64,
    /// Checksum mismatch or not a probe at all.
    pub corrupted: u64,
    /// A valid probe delivered to a connection that is not its stream's receiver.
    pub misrouted: u64,
}

impl Integrity {
    /// All violations added up.
    pub fn total(&self) -> u64 {
        self.lost + self.duplicated + self.reordered + self.corrupted + self.misrouted
    }

    /// Adds another set of counts.
    pub fn add(&mut self, other: &Integrity) {
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.corrupted += other.corrupted;
        self.misrouted += other.misrouted;
    }
}

/// Everything one worker (or, merged, the whole run) measured.
#[derive(Clone, Debug)]
pub struct Totals {
    /// Connections upgraded (or, for tickets, transfers set up).
    pub conns_up: u64,
    /// Connection attempts that failed (TCP, upgrade or route check).
    pub conns_failed: u64,
    /// Messages (or transfers) handed to a connection.
    pub sent: u64,
    /// Payload bytes handed to a connection.
    pub sent_bytes: u64,
    /// Probes received intact (any time).
    pub received: u64,
    /// Probes received intact that were scheduled after the warm-up.
    pub measured: u64,
    /// Payload bytes of the `measured` probes.
    pub measured_bytes: u64,
    /// Loss, duplication, reordering, corruption, misrouting.
    pub integrity: Integrity,
    /// Errors by kind (`connect`, `status_503`, `close_4404`, …).
    pub errors: BTreeMap<String, u64>,
    /// Latency of measured probes, µs from scheduled send to receipt.
    pub latency: Histogram<u64>,
    /// TCP connect plus upgrade, µs per connection.
    pub connect: Histogram<u64>,
    /// When traffic ended on the run clock (latest worker, when merged).
    pub traffic_done: Nanos,
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            conns_up: 0,
            conns_failed: 0,
            sent: 0,
            sent_bytes: 0,
            received: 0,
            measured: 0,
            measured_bytes: 0,
            integrity: Integrity::default(),
            errors: BTreeMap::new(),
            latency: new_histogram(),
            connect: new_histogram(),
            traffic_done: 0,
        }
    }
}

impl Totals {
    /// Adds another worker's totals into these.
    pub fn merge(&mut self, other: &Totals) {
        self.conns_up += other.conns_up;
        self.conns_failed += other.conns_failed;
        self.sent += other.sent;
        self.sent_bytes += other.sent_bytes;
        self.received += other.received;
        self.measured += other.measured;
        self.measured_bytes += other.measured_bytes;
        self.traffic_done = self.traffic_done.max(other.traffic_done);
        self.integrity.add(&other.integrity);
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += count;
        }
        // Same bounds on every side, so `add` cannot fail; saturate if it ever did.
        let _ = self.latency.add(&other.latency);
        let _ = self.connect.add(&other.connect);
    }

    /// All errors added up (integrity violations are counted separately).
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A worker's recorder: interior mutability, one owner thread, borrowed briefly.
#[derive(Default)]
pub struct Recorder {
    /// The running totals; never borrowed across an `.await`.
    totals: RefCell<Totals>,
    /// Probes scheduled before this instant are warm-up: not in latency or throughput.
    warmup_end: std::cell::Cell<Nanos>,
}

impl Recorder {
    /// Sets the end of the warm-up once traffic's start time is known.
    pub fn set_warmup_end(&self, at: Nanos) {
        self.warmup_end.set(at);
    }

    /// Counts a message handed to a connection.
    pub fn sent(&self, bytes: usize) {
        let mut totals = self.totals.borrow_mut();
        totals.sent += 1;
        totals.sent_bytes += bytes as u64;
    }

    /// Counts an intact probe scheduled at `sent_at` and received at `now`.
    pub fn received(&self, sent_at: Nanos, now: Nanos, bytes: usize) {
        let mut totals = self.totals.borrow_mut();
        totals.received += 1;
        if sent_at >= self.warmup_end.get() {
            totals.measured += 1;
            totals.measured_bytes += bytes as u64;
            totals
                .latency
                .saturating_record(micros_between(sent_at, now).max(1));
        }
    }

    /// Records one connection's connect-plus-upgrade time.
    pub fn connected(&self, micros: u64) {
        let mut totals = self.totals.borrow_mut();
        totals.conns_up += 1;
        totals.connect.saturating_record(micros.max(1));
    }

    /// Counts a failed connection attempt under its error kind.
    pub fn connect_failed(&self, kind: &str) {
        self.totals.borrow_mut().conns_failed += 1;
        self.error(kind);
    }

    /// Counts an error of `kind`.
    pub fn error(&self, kind: &str) {
        let mut totals = self.totals.borrow_mut();
        match totals.errors.get_mut(kind) {
            Some(count) => *count += 1,
            None => {
                totals.errors.insert(kind.to_owned(), 1);
            }
        }
    }

    /// Counts a corrupted message.
    pub fn corrupted(&self) {
        self.totals.borrow_mut().integrity.corrupted += 1;
    }

    /// Counts a misrouted message.
    pub fn misrouted(&self) {
        self.totals.borrow_mut().integrity.misrouted += 1;
    }

    /// Adds end-of-run sequence accounting (lost, duplicated, reordered).
    pub fn add_integrity(&self, counts: &Integrity) {
        self.totals.borrow_mut().integrity.add(counts);
    }

    /// A copy of the totals so far (progress snapshots, the final report).
    pub fn snapshot_into(&self, out: &mut Totals) {
        out.clone_from(&self.totals.borrow());
    }

    /// The totals, consuming the recorder.
    pub fn into_totals(self) -> Totals {
        self.totals.into_inner()
    }
}

/// Percentiles of a histogram, in µs, as the relay's `/stats` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
    /// Mean (never reported alone).
    pub mean: f64,
}

impl LatencySummary {
    /// Summarises a µs histogram.
    pub fn of(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Self::default();
        }
        Self {
            count: hist.len(),
            p50: hist.value_at_quantile(0.50),
            p90: hist.value_at_quantile(0.90),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
            mean: hist.mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(latencies: &[u64], errors: &[&str]) -> Totals {
        let recorder = Recorder::default();
        for &us in latencies {
            recorder.sent(100);
            recorder.received(0, us * 1_000, 100);
        }
        for kind in errors {
            recorder.error(kind);
        }
        recorder.corrupted();
        recorder.into_totals()
    }

    #[test]
    fn merge_adds_counts_errors_and_histograms() {
        let mut all = Totals::default();
        all.merge(&worker(&[100, 200, 300], &["connect", "close_4404"]));
        all.merge(&worker(&[1_000; 7], &["connect"]));
        assert_eq!((all.sent, all.received, all.measured), (10, 10, 10));
        assert_eq!(all.sent_bytes, 1_000);
        assert_eq!(all.errors.get("connect"), Some(&2));
        assert_eq!(all.errors.get("close_4404"), Some(&1));
        assert_eq!(all.error_count(), 3);
        assert_eq!(all.integrity.corrupted, 2);
        let summary = LatencySummary::of(&all.latency);
        assert_eq!(summary.count, 10);
        assert_eq!(summary.p50, 1_000);
        assert!(summary.max >= 1_000 && summary.max <= 1_001);
        assert!((100..=101).contains(&all.latency.min()));
    }

    #[test]
    fn warmup_probes_count_as_received_but_not_measured() {
        let recorder = Recorder::default();
        recorder.set_warmup_end(5_000);
        recorder.received(4_999, 10_000, 10);
        recorder.received(5_000, 10_000, 10);
        let totals = recorder.into_totals();
        assert_eq!(
            (totals.received, totals.measured, totals.latency.len()),
            (2, 1, 1)
        );
    }

    #[test]
    fn integrity_total_sums_every_kind() {
        let counts = Integrity {
            lost: 1,
            duplicated: 2,
            reordered: 3,
            corrupted: 4,
            misrouted: 5,
        };
        assert_eq!(counts.total(), 15);
    }
}
