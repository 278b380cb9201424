//! Per-shard counters and latency histograms, and their two renderings.
//!
//! The metric keys (connection kinds, styles, reasons, events, gauges) are the enums of
//! `shardrelay-stats-model`, re-exported here; the `/stats` body is that crate's typed
//! model. The parts:
//! * `count` — [`ShardStats`], one shard's live tallies. The shard's thread is the only one that
//!   touches it (through `&mut` or a `RefCell`), so there are no atomics and no locks;
//!   the hot calls (`message_in`, `message_out`, `record_forward`) are plain integer adds
//!   and one histogram record, and never allocate once a mode has been seen.
//!   [`StatsSnapshot`] — a `Send + Clone` copy of those tallies, which a shard sends over
//!   its inbox when `/stats`, `/metrics` or `/health` asks, and [`StatsSnapshot::merge`]
//!   for the whole-process view.
//! * `report` — what a shard reduces its histograms to before they cross shards.
//! * `json` — [`render_json`], the `/stats` body (the wire contract: key names are
//!   normative); `rounds` — the two-round exchange that gives its exact totals.
//! * `prometheus` — [`render_prometheus`], the `/metrics` body, text format 0.0.4.
//! * `health` — the figures `/health` reads of every shard without asking it.
//!
//! Latencies are in microseconds, in HDR histograms covering 1 µs .. 60 s at three
//! significant figures; a value outside that range is clamped, never an error.

use hdrhistogram::Histogram;

/// Lowest latency the histograms tell apart, in microseconds.
const HIST_LOW_MICROS: u64 = 1;
/// Highest latency the histograms track, in microseconds (60 s); larger values clamp.
const HIST_HIGH_MICROS: u64 = 60_000_000;
/// Significant figures the histograms keep (0.1 % relative error).
const HIST_SIGFIG: u8 = 3;

pub use shardrelay_stats_model::{ConnKind, Dropped, Event, Gauge, Key, Rejected, Style};

/// How many [`ConnKind`]s there are: the length of the per-kind counter array.
const CONN_KINDS: usize = ConnKind::COUNT;

/// A fresh latency histogram with the module's bounds.
fn new_histogram() -> Histogram<u64> {
    // Cannot fail: `new_with_bounds` only rejects low < 1, high < 2 * low or sigfig > 5,
    // and the constants are 1, 60_000_000 and 3. Auto-resize stays off, so recording
    // never allocates.
    Histogram::new_with_bounds(HIST_LOW_MICROS, HIST_HIGH_MICROS, HIST_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// Add `from` into `into`. Both come from [`new_histogram`], so `add` (which only fails
/// when `from` holds a value above `into`'s range) succeeds; should bounds ever diverge,
/// the bucket-by-bucket copy clamps instead of losing the samples or panicking.
fn merge_histogram(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    if into.add(from).is_err() {
        for v in from.iter_recorded() {
            into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

mod count;
mod health;
mod json;
mod prometheus;
mod report;
mod rounds;

pub use count::*;
pub use health::*;
pub use json::*;
pub use prometheus::*;
pub use report::*;
pub use rounds::*;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
