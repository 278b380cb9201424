//! Per-shard counters and latency histograms, and their two renderings.
//!
//! This module owns:
//! * [`ShardStats`] — one shard's live tallies. The shard's thread is the only one that
//!   touches it (through `&mut` or a `RefCell`), so there are no atomics and no locks;
//!   the hot calls (`message_in`, `message_out`, `record_forward`) are plain integer adds
//!   and one histogram record, and never allocate once a mode has been seen.
//! * [`StatsSnapshot`] — a `Send + Clone` copy of those tallies, which a shard sends over
//!   its inbox when `/stats`, `/metrics` or `/health` asks, and [`StatsSnapshot::merge`]
//!   for the whole-process view.
//! * [`render_json`] — the `/stats` body (the wire contract: key names are normative).
//! * [`render_prometheus`] — the `/metrics` body, text exposition format 0.0.4.
//!
//! Latencies are in microseconds, in HDR histograms covering 1 µs .. 60 s at three
//! significant figures; a value outside that range is clamped, never an error.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Lowest latency the histograms tell apart, in microseconds.
const HIST_LOW_MICROS: u64 = 1;
/// Highest latency the histograms track, in microseconds (60 s); larger values clamp.
const HIST_HIGH_MICROS: u64 = 60_000_000;
/// Significant figures the histograms keep (0.1 % relative error).
const HIST_SIGFIG: u8 = 3;

/// Kinds of open connection, for the `connections` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// A binary holding, or claiming, a server-id slot.
    Binary,
    /// A phone attached to a server-id slot.
    Phone,
    /// One end of a pair.
    Pair,
    /// The host of a session.
    SessionHost,
    /// A browser joined to a session.
    SessionBrowser,
    /// The uploading end of a ticket.
    TicketPut,
    /// The downloading end of a ticket.
    TicketGet,
    /// The diagnostic echo route.
    Echo,
    /// A connection still in its HTTP/upgrade handshake.
    Handshake,
}

/// How many [`ConnKind`]s there are: the length of the per-kind counter array.
const CONN_KINDS: usize = 9;

impl ConnKind {
    /// Every kind, in the order the renderings list them.
    pub const ALL: [ConnKind; CONN_KINDS] = [
        ConnKind::Binary,
        ConnKind::Phone,
        ConnKind::Pair,
        ConnKind::SessionHost,
        ConnKind::SessionBrowser,
        ConnKind::TicketPut,
        ConnKind::TicketGet,
        ConnKind::Echo,
        ConnKind::Handshake,
    ];

    /// The kind's key in `/stats` `connections` and its `kind` label in `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            ConnKind::Binary => "binary",
            ConnKind::Phone => "phone",
            ConnKind::Pair => "pair",
            ConnKind::SessionHost => "session_host",
            ConnKind::SessionBrowser => "session_browser",
            ConnKind::TicketPut => "ticket_put",
            ConnKind::TicketGet => "ticket_get",
            ConnKind::Echo => "echo",
            ConnKind::Handshake => "handshake",
        }
    }

    /// Slot in the per-kind counter array. The discriminants are the declaration order,
    /// which is also the order of `ALL`, so every kind has a distinct slot below 9.
    fn index(self) -> usize {
        self as usize
    }
}

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

/// `counters[name] += 1`, adding the key on first use. Few keys per map, so a linear
/// search beats hashing; keys are compared by content because equal string literals in
/// different crates need not share an address.
fn bump(counters: &mut Vec<(&'static str, u64)>, name: &'static str, by: u64) {
    match counters.iter_mut().find(|(k, _)| *k == name) {
        Some((_, n)) => *n = n.saturating_add(by),
        None => counters.push((name, by)),
    }
}

/// `gauges[name] += delta`, adding the key on first use.
fn gauge_bump(gauges: &mut Vec<(&'static str, i64)>, name: &'static str, delta: i64) {
    match gauges.iter_mut().find(|(k, _)| *k == name) {
        Some((_, n)) => *n = n.saturating_add(delta),
        None => gauges.push((name, delta)),
    }
}

/// Value of `name` in a keyed map, 0 when absent.
fn lookup<T: Copy + Default>(map: &[(&'static str, T)], name: &str) -> T {
    map.iter()
        .find(|(k, _)| *k == name)
        .map_or_else(T::default, |(_, v)| *v)
}

/// One shard's live tallies. Owned by the shard's thread; see the module doc.
pub struct ShardStats {
    /// The tallies themselves, kept in snapshot form so a snapshot is one clone.
    live: StatsSnapshot,
    /// The latencies again, in the fixed buckets `/metrics` exports (never reset;
    /// `forward_by_mode` in the same order as `live`'s).
    prom: Latencies<PromBuckets>,
    /// The exact sums of `prom` at the last reset, so round 1 of `/stats` can give
    /// exact since-reset sums.
    reset_sums: Option<Latencies<u64>>,
    /// The few figures `/health` reports, copied out as they move so any shard can read
    /// them without asking this one (see [`HealthMirror`]).
    mirror: Arc<HealthMirror>,
}

impl ShardStats {
    /// Empty tallies for shard `shard`.
    pub fn new(shard: usize) -> Self {
        Self::with_mirror(shard, Arc::default())
    }

    /// Empty tallies for shard `shard` that keep `mirror` up to date.
    pub fn with_mirror(shard: usize, mirror: Arc<HealthMirror>) -> Self {
        let mut live = StatsSnapshot::empty();
        live.shard = shard;
        live.shards = 1;
        let prom = Latencies {
            forward: PromBuckets::default(),
            handshake: PromBuckets::default(),
            handoff: PromBuckets::default(),
            forward_by_mode: Vec::new(),
        };
        ShardStats {
            live,
            prom,
            reset_sums: None,
            mirror,
        }
    }

    /// A connection of `kind` is now open on this shard.
    pub fn conn_opened(&mut self, kind: ConnKind) {
        let n = &mut self.live.connections[kind.index()];
        *n = n.saturating_add(1);
        self.mirror.connections(kind, *n);
    }

    /// A connection of `kind` closed. Saturates at zero so a double close cannot wrap
    /// the gauge to 2^64.
    pub fn conn_closed(&mut self, kind: ConnKind) {
        let n = &mut self.live.connections[kind.index()];
        *n = n.saturating_sub(1);
        self.mirror.connections(kind, *n);
    }

    /// This shard accepted a TCP connection.
    pub fn accepted(&mut self) {
        self.live.accepted = self.live.accepted.saturating_add(1);
    }

    /// This shard passed a connection to another shard (counter `handoffs`).
    pub fn handed_off(&mut self) {
        self.live.handoffs = self.live.handoffs.saturating_add(1);
    }

    /// This shard adopted a connection from another shard (counter `adopted`).
    pub fn adopted(&mut self) {
        self.live.adopted = self.live.adopted.saturating_add(1);
    }

    /// A connection refused before upgrade, e.g. `"head_too_large"`, `"not_found"`.
    pub fn rejected(&mut self, reason: &'static str) {
        bump(&mut self.live.rejected, reason, 1);
    }

    /// A message not forwarded, e.g. `"text_in_pair"`, `"unknown_conn_id"`.
    pub fn dropped(&mut self, reason: &'static str) {
        bump(&mut self.live.dropped, reason, 1);
    }

    /// Any other named counter (`codes_minted`, `joins_ok`, …).
    pub fn event(&mut self, name: &'static str) {
        bump(&mut self.live.events, name, 1);
    }

    /// Move a registry-size gauge (`pairs`, `sessions`, `tickets`, `server_slots`). One
    /// shard may add what another removes, so a shard's value can go below zero; the
    /// sum over shards is the registry's size.
    pub fn gauge_add(&mut self, name: &'static str, delta: i64) {
        gauge_bump(&mut self.live.gauges, name, delta);
        self.mirror.gauge(name, self.live.gauge(name));
    }

    /// A message of `bytes` payload bytes was read from a client.
    #[inline]
    pub fn message_in(&mut self, bytes: usize) {
        let live = &mut self.live;
        live.messages_in = live.messages_in.saturating_add(1);
        live.bytes_in = live.bytes_in.saturating_add(bytes as u64);
    }

    /// A message of `bytes` payload bytes was written to a client.
    #[inline]
    pub fn message_out(&mut self, bytes: usize) {
        let live = &mut self.live;
        live.messages_out = live.messages_out.saturating_add(1);
        live.bytes_out = live.bytes_out.saturating_add(bytes as u64);
    }

    /// A relayed message went out `micros` after it was read, under rendezvous style
    /// `mode`. Records into the overall `forward` histogram and the mode's own, which is
    /// created (the only allocation) the first time the mode is seen.
    #[inline]
    pub fn record_forward(&mut self, mode: &'static str, micros: u64) {
        self.live.forward.saturating_record(micros);
        self.prom.forward.record(micros);
        let by_mode = &mut self.live.forward_by_mode;
        let at = match by_mode.iter().position(|(k, _)| *k == mode) {
            Some(at) => at,
            None => {
                by_mode.push((mode, new_histogram()));
                self.prom
                    .forward_by_mode
                    .push((mode, PromBuckets::default()));
                by_mode.len() - 1
            }
        };
        by_mode[at].1.saturating_record(micros);
        self.prom.forward_by_mode[at].1.record(micros);
    }

    /// An HTTP/upgrade handshake took `micros`.
    pub fn record_handshake(&mut self, micros: u64) {
        self.live.handshake.saturating_record(micros);
        self.prom.handshake.record(micros);
    }

    /// A handoff between shards took `micros` (send to adopt).
    pub fn record_handoff(&mut self, micros: u64) {
        self.live.handoff.saturating_record(micros);
        self.prom.handoff.record(micros);
    }

    /// `?reset=1`: start a new `/stats` window. The histograms themselves keep every
    /// sample (Prometheus needs them monotonic, like the counters); a mark of where
    /// they stand now is kept, and `/stats` reports the histograms minus the mark.
    /// Recording stays allocation-free: only the reset itself copies.
    pub fn reset_histograms(&mut self) {
        let sum = |p: &PromBuckets| p.sum_micros;
        self.reset_sums = Some(Latencies {
            forward: sum(&self.prom.forward),
            handshake: sum(&self.prom.handshake),
            handoff: sum(&self.prom.handoff),
            forward_by_mode: self
                .prom
                .forward_by_mode
                .iter()
                .map(|(m, p)| (*m, sum(p)))
                .collect(),
        });
        let live = &self.live;
        self.live.reset_mark = Some(Box::new(HistogramMark {
            forward: live.forward.clone(),
            handshake: live.handshake.clone(),
            handoff: live.handoff.clone(),
            forward_by_mode: live.forward_by_mode.clone(),
        }));
    }

    /// A full copy of the tallies and histograms (tests and benches; the endpoints use
    /// [`ShardStats::report`], which is a fraction of the size).
    pub fn snapshot(&self) -> StatsSnapshot {
        self.live.clone()
    }

    /// What this shard sends for `/stats` or `/metrics`.
    pub fn report(&self, kind: ReportKind) -> ShardReport {
        match kind {
            ReportKind::Stats => ShardReport::Stats(Box::new(self.stats_report())),
            ReportKind::Metrics => ShardReport::Metrics(Box::new(self.metrics_report())),
            ReportKind::Coarse => ShardReport::Coarse(Box::new(self.coarse_report())),
        }
    }

    /// This shard's `/stats` report (see [`StatsReport`]).
    pub fn stats_report(&self) -> StatsReport {
        self.live.stats_report()
    }

    /// This shard's `/metrics` report (see [`MetricsReport`]).
    pub fn metrics_report(&self) -> MetricsReport {
        Report {
            tallies: self.live.tallies.clone(),
            latencies: self.prom.clone(),
        }
    }

    /// Open connections of `kind` on this shard.
    pub fn connections(&self, kind: ConnKind) -> u64 {
        self.live.connections(kind)
    }

    /// This shard's share of gauge `name` (0 if never moved).
    pub fn gauge(&self, name: &str) -> i64 {
        self.live.gauge(name)
    }
}

/// The counters and gauges of one shard, or the sum of several: everything but the
/// latency histograms. Small (a few hundred bytes), so it crosses shards as a copy.
#[derive(Debug, Clone)]
pub struct Tallies {
    /// The shard these came from; 0 for a merged value.
    pub shard: usize,
    /// How many shards these cover: 1 for a shard's own, n after a merge.
    pub shards: usize,
    /// Open connections, indexed in `ConnKind::ALL` order.
    pub connections: [u64; CONN_KINDS],
    /// TCP connections accepted.
    pub accepted: u64,
    /// Connections passed to another shard.
    pub handoffs: u64,
    /// Connections adopted from another shard.
    pub adopted: u64,
    /// Connections refused before upgrade, by reason.
    pub rejected: Vec<(&'static str, u64)>,
    /// Messages read from clients.
    pub messages_in: u64,
    /// Messages written to clients.
    pub messages_out: u64,
    /// Payload bytes read from clients.
    pub bytes_in: u64,
    /// Payload bytes written to clients.
    pub bytes_out: u64,
    /// Messages not forwarded, by reason.
    pub dropped: Vec<(&'static str, u64)>,
    /// Other named counters.
    pub events: Vec<(&'static str, u64)>,
    /// Registry sizes (this shard's share; may be negative, see `gauge_add`).
    pub gauges: Vec<(&'static str, i64)>,
}

/// One shard's live tallies with its full HDR histograms, or the sum of several (see
/// [`StatsSnapshot::merge`]). This is what a shard keeps; what crosses shards for
/// `/stats` and `/metrics` is a [`Report`], a fraction of the size.
#[derive(Debug, Clone)]
pub struct StatsSnapshot {
    /// Counters and gauges (also reachable directly through `Deref`).
    pub tallies: Tallies,
    /// Read-to-written latency of relayed messages, all modes, in µs.
    pub forward: Histogram<u64>,
    /// HTTP/upgrade handshake latency, in µs.
    pub handshake: Histogram<u64>,
    /// Shard-to-shard handoff latency, in µs.
    pub handoff: Histogram<u64>,
    /// `forward` split by rendezvous style, in first-seen order.
    pub forward_by_mode: Vec<(&'static str, Histogram<u64>)>,
    /// The histograms as they stood at the last `/stats?reset=1`, if any: `/stats`
    /// reports what was recorded since (the histograms minus this mark), while
    /// `/metrics` keeps exporting everything, so a reset never makes a Prometheus
    /// histogram go backwards.
    pub reset_mark: Option<Box<HistogramMark>>,
}

impl std::ops::Deref for StatsSnapshot {
    type Target = Tallies;
    fn deref(&self) -> &Tallies {
        &self.tallies
    }
}

impl std::ops::DerefMut for StatsSnapshot {
    fn deref_mut(&mut self) -> &mut Tallies {
        &mut self.tallies
    }
}

/// The latency histograms at one moment (see `StatsSnapshot::reset_mark`).
#[derive(Debug, Clone)]
pub struct HistogramMark {
    /// `forward` at the mark.
    forward: Histogram<u64>,
    /// `handshake` at the mark.
    handshake: Histogram<u64>,
    /// `handoff` at the mark.
    handoff: Histogram<u64>,
    /// `forward_by_mode` at the mark.
    forward_by_mode: Vec<(&'static str, Histogram<u64>)>,
}

impl HistogramMark {
    /// No samples.
    fn empty() -> Self {
        HistogramMark {
            forward: new_histogram(),
            handshake: new_histogram(),
            handoff: new_histogram(),
            forward_by_mode: Vec::new(),
        }
    }

    /// Add another mark into this one.
    fn absorb(&mut self, other: &HistogramMark) {
        merge_histogram(&mut self.forward, &other.forward);
        merge_histogram(&mut self.handshake, &other.handshake);
        merge_histogram(&mut self.handoff, &other.handoff);
        for (mode, h) in &other.forward_by_mode {
            match self.forward_by_mode.iter_mut().find(|(m, _)| m == mode) {
                Some((_, mine)) => merge_histogram(mine, h),
                None => self.forward_by_mode.push((mode, h.clone())),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reports: what crosses shards for `/stats` and `/metrics`
// ---------------------------------------------------------------------------------------
//
// A shard's HDR histograms are ~140 KB each (1 µs .. 60 s at three significant figures:
// 17 408 u64 counts), and a shard keeps 3 + one per mode. Sending them whole made every
// `/stats` read and `/metrics` scrape copy ~1.7 MB across shards. Instead the owning
// shard reduces them to what the reader needs:
// * `/metrics`: [`PromBuckets`], the fixed Prometheus bucket counts, count and sum,
//   kept at record time (~200 bytes a histogram, whatever was recorded: a scrape costs
//   the same on a fresh relay and after billions of messages);
// * plain `/stats`: two bounded rounds, [`CoarseReport`] then the fine counts of a few
//   cells (see "`/stats` in two rounds" below): ~2.3 KB per histogram, then at most
//   6 × 512 B, whatever the history; totals stay exact (0.1 %).
// * `/stats?histograms=recorded`: [`Recorded`], the non-zero HDR buckets since the last
//   reset (the caller asked for all of them): 16 bytes per distinct bucket hit, and above
//   [`SPARSE_MAX_SAMPLES`] samples the (since-reset) HDR histogram whole, ~140 KB.

/// The latency histograms of one report, in the form `H` the report needs.
#[derive(Debug, Clone)]
pub struct Latencies<H> {
    /// Read-to-written latency of relayed messages, all modes.
    pub forward: H,
    /// HTTP/upgrade handshake latency.
    pub handshake: H,
    /// Shard-to-shard handoff latency.
    pub handoff: H,
    /// `forward` split by rendezvous style, in first-seen order.
    pub forward_by_mode: Vec<(&'static str, H)>,
}

/// What one shard sends to the shard rendering `/stats` or `/metrics`.
#[derive(Debug, Clone)]
pub struct Report<H> {
    /// Counters and gauges.
    pub tallies: Tallies,
    /// Latencies, reduced on the owning shard.
    pub latencies: Latencies<H>,
}

/// A shard's `/stats` contribution: histograms since the last reset, as recorded buckets.
pub type StatsReport = Report<Recorded>;

/// A shard's `/metrics` contribution: histograms since start, as Prometheus buckets.
pub type MetricsReport = Report<PromBuckets>;

/// Which report a shard is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// For `/stats?histograms=recorded` (every recorded bucket).
    Stats,
    /// Round 1 of a plain `/stats` read (see [`CoarseReport`]).
    Coarse,
    /// For `/metrics`.
    Metrics,
}

/// Either report, as it crosses a shard inbox.
#[derive(Debug, Clone)]
pub enum ShardReport {
    /// For `/stats` (boxed, as the other: the message stays one pointer wide).
    Stats(Box<StatsReport>),
    /// For `/metrics` (boxed: its fixed buckets make it ~900 bytes).
    Metrics(Box<MetricsReport>),
    /// Round 1 of a plain `/stats` read.
    Coarse(Box<CoarseReport>),
}

impl ShardReport {
    /// The shard it came from (for ordering replies).
    pub fn shard(&self) -> usize {
        match self {
            ShardReport::Stats(r) => r.tallies.shard,
            ShardReport::Metrics(r) => r.tallies.shard,
            ShardReport::Coarse(r) => r.tallies.shard,
        }
    }
}

/// Above this many samples (since the reset) a histogram crosses shards whole instead
/// of as a bucket list: 4,096 samples hit at most 4,096 buckets (64 KiB as a list), and
/// listing a fuller histogram would cost more to build and merge than the ~140 KB copy.
const SPARSE_MAX_SAMPLES: u64 = 4_096;

/// A histogram's samples since the last reset, as they cross shards for `/stats`: the
/// non-zero HDR buckets `(value, count)` in ascending value, where value is the bucket's
/// highest equivalent value in µs (what `?histograms=recorded` lists); or, above
/// [`SPARSE_MAX_SAMPLES`], the histogram itself.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// The non-zero buckets, ascending (empty when `dense` holds the samples).
    pub buckets: Vec<(u64, u64)>,
    /// The whole histogram, when it holds more than [`SPARSE_MAX_SAMPLES`] samples.
    pub dense: Option<Box<Histogram<u64>>>,
}

impl Recorded {
    /// The samples of `h` minus those of `mark` (an earlier state of `h`).
    fn since(h: &Histogram<u64>, mark: Option<&Histogram<u64>>) -> Self {
        let samples = h.len().saturating_sub(mark.map_or(0, |m| m.len()));
        if samples > SPARSE_MAX_SAMPLES {
            let mut dense = h.clone();
            if let Some(mark) = mark {
                // The mark is an earlier state of `h`, so no count goes negative; were
                // that ever violated, report nothing rather than nonsense.
                if dense.subtract(mark).is_err() {
                    dense.reset();
                }
            }
            return Recorded {
                buckets: Vec::new(),
                dense: Some(Box::new(dense)),
            };
        }
        if samples == 0 {
            return Recorded::default();
        }
        let buckets = h
            .iter_recorded()
            .filter_map(|v| {
                let value = v.value_iterated_to();
                let before = mark.map_or(0, |m| m.count_at(value));
                let n = v.count_at_value().saturating_sub(before);
                (n > 0).then_some((value, n))
            })
            .collect();
        Recorded {
            buckets,
            dense: None,
        }
    }

    /// The sum of `parts`: a bucket list if every part is one, else a histogram.
    fn merge<'a>(parts: impl IntoIterator<Item = &'a Recorded> + Clone) -> Recorded {
        if parts.clone().into_iter().any(|r| r.dense.is_some()) {
            let mut total = new_histogram();
            for part in parts {
                match &part.dense {
                    Some(h) => merge_histogram(&mut total, h),
                    None => {
                        for &(v, n) in &part.buckets {
                            total.saturating_record_n(v, n);
                        }
                    }
                }
            }
            return Recorded {
                buckets: Vec::new(),
                dense: Some(Box::new(total)),
            };
        }
        let mut all: Vec<(u64, u64)> = parts
            .into_iter()
            .flat_map(|r| r.buckets.iter().copied())
            .collect();
        all.sort_unstable_by_key(|&(v, _)| v);
        let mut buckets: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (v, n) in all {
            match buckets.last_mut() {
                Some((last, sum)) if *last == v => *sum = sum.saturating_add(n),
                _ => buckets.push((v, n)),
            }
        }
        Recorded {
            buckets,
            dense: None,
        }
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        match &self.dense {
            Some(h) => h.len(),
            None => self.buckets.iter().map(|&(_, n)| n).sum(),
        }
    }

    /// The value at `quantile` (0 < q <= 1), as `Histogram::value_at_quantile` computes
    /// it: the first bucket whose cumulative count reaches `ceil(q * count)`.
    fn value_at_quantile(&self, quantile: f64, count: u64) -> u64 {
        let target = ((quantile * count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for &(v, n) in &self.buckets {
            seen += n;
            if seen >= target {
                return v;
            }
        }
        self.buckets.last().map_or(0, |&(v, _)| v)
    }
}

/// A histogram with the module's bounds and no samples, for the value arithmetic
/// (`lowest_equivalent`, `median_equivalent`) that summarising [`Recorded`] buckets
/// needs. Built once per process.
fn scale() -> &'static Histogram<u64> {
    static SCALE: std::sync::OnceLock<Histogram<u64>> = std::sync::OnceLock::new();
    SCALE.get_or_init(new_histogram)
}

/// A histogram as `/metrics` exports it: counts per fixed bucket of
/// [`PROM_BUCKETS_MICROS`] (plus `+Inf`), the sample count and the exact sum. Kept up to
/// date at record time beside the HDR histogram (one comparison search over 22 bounds
/// and three adds), so a scrape copies these ~200 bytes instead of walking or sending
/// the HDR histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PromBuckets {
    /// Samples per bucket (not cumulative), the last one being `+Inf`.
    counts: [u64; PROM_BUCKETS_MICROS.len() + 1],
    /// Samples recorded.
    count: u64,
    /// Sum of the samples in µs (clamped like the HDR histogram: at most 60 s each).
    sum_micros: u64,
}

impl PromBuckets {
    /// Count one sample of `micros` (clamped to the HDR range, as the HDR record is).
    #[inline]
    fn record(&mut self, micros: u64) {
        let v = micros.min(HIST_HIGH_MICROS);
        let at = PROM_BUCKETS_MICROS.partition_point(|&bound| bound < v);
        self.counts[at] += 1;
        self.count += 1;
        self.sum_micros = self.sum_micros.saturating_add(v);
    }
}

impl StatsSnapshot {
    /// The `/stats` report: histograms since the last reset, as recorded buckets.
    fn stats_report(&self) -> StatsReport {
        let mark = self.reset_mark.as_deref();
        let by_mode = |mode: &str| {
            mark.and_then(|m| m.forward_by_mode.iter().find(|(k, _)| *k == mode))
                .map(|(_, h)| h)
        };
        Report {
            tallies: self.tallies.clone(),
            latencies: Latencies {
                forward: Recorded::since(&self.forward, mark.map(|m| &m.forward)),
                handshake: Recorded::since(&self.handshake, mark.map(|m| &m.handshake)),
                handoff: Recorded::since(&self.handoff, mark.map(|m| &m.handoff)),
                forward_by_mode: self
                    .forward_by_mode
                    .iter()
                    .map(|(mode, h)| (*mode, Recorded::since(h, by_mode(mode))))
                    .collect(),
            },
        }
    }
}

impl Latencies<Recorded> {
    /// The bucket-wise sum of several shards' latencies; modes in first-seen order.
    fn merge(parts: &[&Latencies<Recorded>]) -> Latencies<Recorded> {
        let mut modes: Vec<&'static str> = Vec::new();
        for part in parts {
            for (mode, _) in &part.forward_by_mode {
                if !modes.contains(mode) {
                    modes.push(mode);
                }
            }
        }
        let of_mode = |mode: &str| {
            Recorded::merge(parts.iter().filter_map(|p| {
                p.forward_by_mode
                    .iter()
                    .find(|(k, _)| *k == mode)
                    .map(|(_, r)| r)
            }))
        };
        Latencies {
            forward: Recorded::merge(parts.iter().map(|p| &p.forward)),
            handshake: Recorded::merge(parts.iter().map(|p| &p.handshake)),
            handoff: Recorded::merge(parts.iter().map(|p| &p.handoff)),
            forward_by_mode: modes.iter().map(|&m| (m, of_mode(m))).collect(),
        }
    }
}

impl StatsSnapshot {
    /// All-zero tallies covering no shard.
    fn empty() -> Self {
        StatsSnapshot {
            tallies: Tallies::empty(),
            forward: new_histogram(),
            handshake: new_histogram(),
            handoff: new_histogram(),
            forward_by_mode: Vec::new(),
            reset_mark: None,
        }
    }

    /// Totals across shards (histograms merged with `Histogram::add`; maps summed).
    pub fn merge(snaps: &[StatsSnapshot]) -> StatsSnapshot {
        let mut total = StatsSnapshot::empty();
        for snap in snaps {
            total.absorb(snap);
        }
        total
    }

    /// Add one snapshot into `self`.
    fn absorb(&mut self, other: &StatsSnapshot) {
        self.tallies.absorb(&other.tallies);
        merge_histogram(&mut self.forward, &other.forward);
        merge_histogram(&mut self.handshake, &other.handshake);
        merge_histogram(&mut self.handoff, &other.handoff);
        for (mode, h) in &other.forward_by_mode {
            merge_histogram(self.mode_histogram(mode), h);
        }
        if let Some(mark) = &other.reset_mark {
            self.reset_mark
                .get_or_insert_with(|| Box::new(HistogramMark::empty()))
                .absorb(mark);
        }
    }

    /// The per-mode histogram for `mode`, created empty if missing.
    fn mode_histogram(&mut self, mode: &'static str) -> &mut Histogram<u64> {
        let at = match self.forward_by_mode.iter().position(|(k, _)| *k == mode) {
            Some(at) => at,
            None => {
                self.forward_by_mode.push((mode, new_histogram()));
                self.forward_by_mode.len() - 1
            }
        };
        &mut self.forward_by_mode[at].1
    }
}

impl Tallies {
    /// All zero, covering no shard.
    fn empty() -> Self {
        Tallies {
            shard: 0,
            shards: 0,
            connections: [0; CONN_KINDS],
            accepted: 0,
            handoffs: 0,
            adopted: 0,
            rejected: Vec::new(),
            messages_in: 0,
            messages_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            dropped: Vec::new(),
            events: Vec::new(),
            gauges: Vec::new(),
        }
    }

    /// Add `other` into `self` (counts saturate, keyed maps merge by key).
    fn absorb(&mut self, other: &Tallies) {
        self.shards += other.shards;
        for (mine, theirs) in self.connections.iter_mut().zip(other.connections) {
            *mine = mine.saturating_add(theirs);
        }
        let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        add(&mut self.accepted, other.accepted);
        add(&mut self.handoffs, other.handoffs);
        add(&mut self.adopted, other.adopted);
        add(&mut self.messages_in, other.messages_in);
        add(&mut self.messages_out, other.messages_out);
        add(&mut self.bytes_in, other.bytes_in);
        add(&mut self.bytes_out, other.bytes_out);
        for (mine, theirs) in [
            (&mut self.rejected, &other.rejected),
            (&mut self.dropped, &other.dropped),
            (&mut self.events, &other.events),
        ] {
            for &(name, n) in theirs {
                bump(mine, name, n);
            }
        }
        for &(name, n) in &other.gauges {
            gauge_bump(&mut self.gauges, name, n);
        }
    }

    /// Open connections of `kind`.
    pub fn connections(&self, kind: ConnKind) -> u64 {
        self.connections[kind.index()]
    }

    /// Gauge `name` (0 if never moved).
    pub fn gauge(&self, name: &str) -> i64 {
        lookup(&self.gauges, name)
    }
}

// ---------------------------------------------------------------------------------------
// JSON (`/stats`)
// ---------------------------------------------------------------------------------------

/// The `/stats` body.
#[derive(Serialize)]
struct JsonBody {
    /// Seconds since the process started.
    uptime_seconds: u64,
    /// How many shards answered (the length of `per_shard`).
    shards: usize,
    /// The whole process: every shard merged, histograms exactly.
    totals: JsonTallies,
    /// Each shard on its own, in shard order.
    per_shard: Vec<JsonShard>,
    /// Process-wide allocation counts; only in an `alloc-count` build.
    #[serde(skip_serializing_if = "Option::is_none")]
    allocations: Option<JsonAllocations>,
    /// The memory budget of PROTOCOL §2.1.
    memory: JsonMemory,
}

/// `memory`: what clients make the relay hold, against `--memory-limit`.
#[derive(Serialize)]
struct JsonMemory {
    /// Bytes charged now (queues, early messages, read buffers, heads, ticket windows).
    used_bytes: u64,
    /// `--memory-limit`.
    limit_bytes: u64,
}

impl JsonMemory {
    /// The budget as it stands.
    fn now() -> Self {
        JsonMemory {
            used_bytes: crate::memory::used() as u64,
            limit_bytes: crate::memory::limit() as u64,
        }
    }
}

/// `allocations` in an `alloc-count` build (see `alloc_count`).
#[derive(Serialize)]
struct JsonAllocations {
    /// Allocations and reallocations since the process started.
    count: u64,
    /// Bytes they asked for.
    bytes: u64,
}

/// The allocation counts, when this build counts them.
fn allocations() -> Option<JsonAllocations> {
    #[cfg(feature = "alloc-count")]
    {
        let (count, bytes) = crate::alloc_count::allocations();
        Some(JsonAllocations { count, bytes })
    }
    #[cfg(not(feature = "alloc-count"))]
    None
}

/// One entry of `per_shard`: the shard id, then the same keys as `totals`.
#[derive(Serialize)]
struct JsonShard {
    /// The shard id.
    shard: usize,
    /// The shard's tallies, flattened beside `shard`.
    #[serde(flatten)]
    tallies: JsonTallies,
}

/// The counter, gauge and histogram keys shared by `totals` and each `per_shard` entry.
#[derive(Serialize)]
struct JsonTallies {
    /// Open connections by kind (every kind present, zeros included).
    connections: BTreeMap<&'static str, u64>,
    /// TCP connections accepted.
    accepted: u64,
    /// Connections handed to another shard.
    handoffs: u64,
    /// Connections adopted from another shard.
    adopted: u64,
    /// Refusals by reason (reasons seen so far).
    rejected: BTreeMap<&'static str, u64>,
    /// Messages read from clients.
    messages_in: u64,
    /// Messages written to clients.
    messages_out: u64,
    /// Payload bytes read.
    bytes_in: u64,
    /// Payload bytes written.
    bytes_out: u64,
    /// Messages not forwarded, by reason.
    dropped: BTreeMap<&'static str, u64>,
    /// Other named counters.
    events: BTreeMap<&'static str, u64>,
    /// Registry sizes.
    gauges: BTreeMap<&'static str, i64>,
    /// The three latency histograms.
    histograms: JsonHistograms,
    /// Forward latency by rendezvous style.
    forward_by_mode: BTreeMap<&'static str, JsonHistogram>,
}

/// The `histograms` object.
#[derive(Serialize)]
struct JsonHistograms {
    /// Read-to-written latency of relayed messages.
    forward: JsonHistogram,
    /// HTTP/upgrade handshake latency.
    handshake: JsonHistogram,
    /// Shard-to-shard handoff latency.
    handoff: JsonHistogram,
}

/// A histogram's summary, all in microseconds (values are HDR bucket values: within
/// 0.1 % of what was recorded). Every field is 0 for an empty histogram.
#[derive(Serialize, Debug, PartialEq, Clone)]
struct JsonHistogram {
    /// Samples recorded.
    count: u64,
    /// Smallest sample.
    min: u64,
    /// Median.
    p50: u64,
    /// 90th percentile.
    p90: u64,
    /// 99th percentile.
    p99: u64,
    /// 99.9th percentile.
    p999: u64,
    /// Largest sample.
    max: u64,
    /// Mean, rounded to 0.01 µs to keep the body short.
    mean: f64,
    /// With `?histograms=recorded` (`totals` only): every recorded value and its count,
    /// `[[µs, count], …]` in value order, so a client can subtract two snapshots and
    /// take exact quantiles of the interval between them without resetting anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded: Option<Vec<(u64, u64)>>,
}

impl JsonHistogram {
    /// Summarise `r` exactly as `Histogram`'s own methods would summarise the same
    /// buckets (min is the lowest bucket's lowest value, the mean uses each bucket's
    /// median value); with `recorded`, also list the buckets.
    fn of(r: &Recorded, recorded: bool) -> Self {
        if let Some(h) = &r.dense {
            return JsonHistogram::of_histogram(h, recorded);
        }
        let count = r.count();
        let recorded = recorded.then(|| r.buckets.clone());
        let (Some(&(first, _)), Some(&(last, _))) = (r.buckets.first(), r.buckets.last()) else {
            return JsonHistogram {
                count: 0,
                min: 0,
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
                mean: 0.0,
                recorded,
            };
        };
        let h = scale();
        let mean = r.buckets.iter().fold(0.0_f64, |total, &(v, n)| {
            total + h.median_equivalent(v) as f64 * n as f64 / count as f64
        });
        JsonHistogram {
            count,
            min: h.lowest_equivalent(first),
            p50: r.value_at_quantile(0.5, count),
            p90: r.value_at_quantile(0.9, count),
            p99: r.value_at_quantile(0.99, count),
            p999: r.value_at_quantile(0.999, count),
            max: last,
            mean: (mean * 100.0).round() / 100.0,
            recorded,
        }
    }
}

impl JsonHistogram {
    /// Summarise a whole histogram with its own methods; with `recorded`, list its
    /// buckets too.
    fn of_histogram(h: &Histogram<u64>, recorded: bool) -> Self {
        let list = recorded.then(|| {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        });
        if h.is_empty() {
            return JsonHistogram::of(&Recorded::default(), recorded);
        }
        JsonHistogram {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 100.0).round() / 100.0,
            recorded: list,
        }
    }
}

/// Options of the `/stats` body.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonOptions {
    /// `?histograms=recorded`: list the recorded values of the `totals` histograms.
    pub recorded: bool,
}

/// A keyed counter list as a sorted JSON object.
fn json_map<T: Copy>(pairs: &[(&'static str, T)]) -> BTreeMap<&'static str, T> {
    pairs.iter().copied().collect()
}

impl JsonTallies {
    /// The JSON view of one shard's (or the merged) tallies and latencies; `recorded`
    /// lists the histograms' buckets too.
    fn of(s: &Tallies, l: &Latencies<Recorded>, recorded: bool) -> Self {
        JsonTallies {
            connections: ConnKind::ALL
                .iter()
                .map(|&k| (k.name(), s.connections(k)))
                .collect(),
            accepted: s.accepted,
            handoffs: s.handoffs,
            adopted: s.adopted,
            rejected: json_map(&s.rejected),
            messages_in: s.messages_in,
            messages_out: s.messages_out,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            dropped: json_map(&s.dropped),
            events: json_map(&s.events),
            gauges: json_map(&s.gauges),
            histograms: JsonHistograms {
                forward: JsonHistogram::of(&l.forward, recorded),
                handshake: JsonHistogram::of(&l.handshake, recorded),
                handoff: JsonHistogram::of(&l.handoff, recorded),
            },
            forward_by_mode: l
                .forward_by_mode
                .iter()
                .map(|(mode, r)| (*mode, JsonHistogram::of(r, recorded)))
                .collect(),
        }
    }
}

/// The /stats body.
pub fn render_json(uptime_seconds: u64, per_shard: &[StatsReport]) -> String {
    render_json_with(uptime_seconds, per_shard, JsonOptions::default())
}

/// The /stats body, with options. Totals are the exact bucket-wise sums of the shards'
/// recorded buckets, so their quantiles are those of one merged HDR histogram.
pub fn render_json_with(
    uptime_seconds: u64,
    per_shard: &[StatsReport],
    options: JsonOptions,
) -> String {
    let mut tallies = Tallies::empty();
    for r in per_shard {
        tallies.absorb(&r.tallies);
    }
    let parts: Vec<&Latencies<Recorded>> = per_shard.iter().map(|r| &r.latencies).collect();
    let latencies = Latencies::merge(&parts);
    let body = JsonBody {
        uptime_seconds,
        shards: per_shard.len(),
        totals: JsonTallies::of(&tallies, &latencies, options.recorded),
        per_shard: per_shard
            .iter()
            .map(|r| JsonShard {
                shard: r.tallies.shard,
                tallies: JsonTallies::of(&r.tallies, &r.latencies, false),
            })
            .collect(),
        allocations: allocations(),
        memory: JsonMemory::now(),
    };
    // Cannot fail: serde_json errors only when a Serialize impl reports one or a map key
    // is not a string; these derived structs hold integers, finite-or-null floats and
    // maps keyed by `&str`.
    serde_json::to_string(&body).expect("stats JSON serialises")
}

// ---------------------------------------------------------------------------------------
// Prometheus (`/metrics`)
// ---------------------------------------------------------------------------------------
//
// Only per-shard series are emitted, each with a `shard` label: Prometheus sums counters
// and gauges across labels itself, and a separate "total" series would double every sum.
//
// Latencies are Prometheus histograms in seconds, with fixed buckets
// ([`PROM_BUCKETS_MICROS`]) so that series from every shard and every host can be summed
// (`sum by (le) (rate(..._bucket[5m]))`, then `histogram_quantile`). Each shard counts
// its samples into these buckets at record time ([`PromBuckets`]), beside its HDR
// histogram, so a scrape copies a few hundred bytes per histogram whatever the traffic
// history. Exact quantiles (0.1 %) remain in `/stats`.

/// Prefix of every metric name.
const PROM_PREFIX: &str = "shardrelay_";

/// Upper bounds (`le`) of the latency histogram buckets, in µs (a `+Inf` bucket
/// follows): 2 µs to 60 s, roughly 1-2.5-5 per decade, dense where the relay's forward
/// latency lives (µs to ms) and reaching the HDR histograms' 60 s ceiling. Fixed, so
/// every shard and host exports the same buckets.
const PROM_BUCKETS_MICROS: [u64; 22] = [
    2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 60_000_000,
];

/// Microseconds per second, for the `_seconds` unit.
const MICROS_PER_SECOND: f64 = 1e6;

/// A plain per-shard counter: (name without prefix, help, value).
type CounterDef = (&'static str, &'static str, fn(&Tallies) -> u64);

/// The unlabelled (apart from `shard`) counters.
const PROM_COUNTERS: [CounterDef; 7] = [
    (
        "accepted_total",
        "TCP connections accepted by the shard.",
        |s| s.accepted,
    ),
    (
        "handoffs_total",
        "Connections the shard passed to another shard.",
        |s| s.handoffs,
    ),
    (
        "adopted_total",
        "Connections the shard adopted from another shard.",
        |s| s.adopted,
    ),
    ("messages_in_total", "Messages read from clients.", |s| {
        s.messages_in
    }),
    ("messages_out_total", "Messages written to clients.", |s| {
        s.messages_out
    }),
    ("bytes_in_total", "Payload bytes read from clients.", |s| {
        s.bytes_in
    }),
    (
        "bytes_out_total",
        "Payload bytes written to clients.",
        |s| s.bytes_out,
    ),
];

/// A keyed per-shard counter family: (name without prefix, label, help, map).
type KeyedDef = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Tallies) -> &[(&'static str, u64)],
);

/// The counters keyed by reason or name.
const PROM_KEYED: [KeyedDef; 3] = [
    (
        "rejected_total",
        "reason",
        "Connections refused before upgrade, by reason.",
        |s| s.rejected.as_slice(),
    ),
    (
        "dropped_total",
        "reason",
        "Messages not forwarded, by reason.",
        |s| s.dropped.as_slice(),
    ),
    ("events_total", "name", "Other named events.", |s| {
        s.events.as_slice()
    }),
];

/// A latency histogram family: (name without prefix, help, histogram).
type HistogramDef = (
    &'static str,
    &'static str,
    fn(&Latencies<PromBuckets>) -> &PromBuckets,
);

/// The overall latency histograms.
const PROM_HISTOGRAMS: [HistogramDef; 3] = [
    (
        "forward_latency_seconds",
        "Read-to-written latency of relayed messages, in seconds.",
        |s| &s.forward,
    ),
    (
        "handshake_latency_seconds",
        "HTTP/upgrade handshake latency, in seconds.",
        |s| &s.handshake,
    ),
    (
        "handoff_latency_seconds",
        "Shard-to-shard handoff latency, in seconds.",
        |s| &s.handoff,
    ),
];

/// Builds a text-format 0.0.4 body: families of `# HELP`, `# TYPE` and samples.
struct PromWriter {
    /// The body so far.
    out: String,
}

impl PromWriter {
    /// Append formatted text. `fmt::Write` for `String` never returns an error (it only
    /// grows the buffer), so the result is safely ignored.
    fn push(&mut self, args: fmt::Arguments<'_>) {
        let _ = self.out.write_fmt(args);
    }

    /// Start a family: its `# HELP` and `# TYPE` lines.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.push(format_args!("# HELP {PROM_PREFIX}{name} "));
        escape_help(&mut self.out, help);
        self.push(format_args!("\n# TYPE {PROM_PREFIX}{name} {kind}\n"));
    }

    /// One sample line: `name{labels} value`.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl PromValue) {
        self.push(format_args!("{PROM_PREFIX}{name}"));
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.push(format_args!("{label}=\""));
                escape_label_value(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        value.write_to(&mut self.out);
        self.out.push('\n');
    }

    /// The `_bucket`, `_sum` and `_count` lines of one histogram series labelled
    /// `labels`, in seconds (the buckets were counted on the owning shard, see
    /// [`PromBuckets::of`]).
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &PromBuckets) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, n) in h.counts.iter().enumerate() {
            cumulative += n;
            let le = match PROM_BUCKETS_MICROS.get(i) {
                Some(&micros) => (micros as f64 / MICROS_PER_SECOND).to_string(),
                None => "+Inf".to_owned(),
            };
            let mut with_le: Vec<(&str, &str)> = Vec::with_capacity(labels.len() + 1);
            with_le.extend_from_slice(labels);
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, cumulative);
        }
        let sum = h.sum_micros as f64 / MICROS_PER_SECOND;
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

/// A sample value in the text format.
trait PromValue {
    /// Append the value as the format spells it.
    fn write_to(self, out: &mut String);
}

impl PromValue for u64 {
    fn write_to(self, out: &mut String) {
        let _ = write!(out, "{self}"); // writing to a String cannot fail
    }
}

impl PromValue for i64 {
    fn write_to(self, out: &mut String) {
        let _ = write!(out, "{self}"); // writing to a String cannot fail
    }
}

impl PromValue for f64 {
    /// Rust spells infinities `inf`; the format wants `+Inf`, `-Inf` and `NaN`.
    fn write_to(self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}"); // writing to a String cannot fail
        }
    }
}

/// Append a label value escaped per the format: backslash, double quote and line feed.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Append `# HELP` text escaped per the format: backslash and line feed.
fn escape_help(out: &mut String, help: &str) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A snapshot paired with its shard id spelled as a label value (formatted once).
type LabelledShard<'a> = (&'a MetricsReport, String);

/// The /metrics body: Prometheus text exposition format 0.0.4.
pub fn render_prometheus(uptime_seconds: u64, per_shard: &[MetricsReport]) -> String {
    let mut w = PromWriter {
        out: String::with_capacity(4096 + 4096 * per_shard.len()),
    };
    let shards: Vec<LabelledShard<'_>> = per_shard
        .iter()
        .map(|s| (s, s.tallies.shard.to_string()))
        .collect();
    write_process(&mut w, uptime_seconds, per_shard.len());
    write_counters(&mut w, &shards);
    write_gauges(&mut w, &shards);
    write_latencies(&mut w, &shards);
    w.out
}

/// The process-wide gauges: uptime and how many shards answered.
fn write_process(w: &mut PromWriter, uptime_seconds: u64, shards: usize) {
    w.family(
        "uptime_seconds",
        "gauge",
        "Seconds since the process started.",
    );
    w.sample("uptime_seconds", &[], uptime_seconds);
    w.family("shards", "gauge", "Shards that answered this scrape.");
    w.sample("shards", &[], shards as u64);
    let memory = JsonMemory::now();
    w.family(
        "memory_used_bytes",
        "gauge",
        "Bytes clients make the relay hold, charged against --memory-limit.",
    );
    w.sample("memory_used_bytes", &[], memory.used_bytes);
    w.family("memory_limit_bytes", "gauge", "The --memory-limit.");
    w.sample("memory_limit_bytes", &[], memory.limit_bytes);
}

/// Every counter family, plain then keyed, one series per shard (and key).
fn write_counters(w: &mut PromWriter, shards: &[LabelledShard<'_>]) {
    for (name, help, get) in PROM_COUNTERS {
        w.family(name, "counter", help);
        for (s, id) in shards {
            w.sample(name, &[("shard", id)], get(&s.tallies));
        }
    }
    for (name, label, help, get) in PROM_KEYED {
        w.family(name, "counter", help);
        for (s, id) in shards {
            for &(key, n) in get(&s.tallies) {
                w.sample(name, &[("shard", id), (label, key)], n);
            }
        }
    }
}

/// Open connections by kind and registry sizes by name.
fn write_gauges(w: &mut PromWriter, shards: &[LabelledShard<'_>]) {
    w.family("connections", "gauge", "Open connections, by kind.");
    for (s, id) in shards {
        for kind in ConnKind::ALL {
            let labels = [("shard", id.as_str()), ("kind", kind.name())];
            w.sample("connections", &labels, s.tallies.connections(kind));
        }
    }
    w.family(
        "registry",
        "gauge",
        "Registry sizes (pairs, sessions, tickets, server slots): this shard's share.",
    );
    for (s, id) in shards {
        for &(key, n) in &s.tallies.gauges {
            w.sample("registry", &[("shard", id), ("name", key)], n);
        }
    }
}

/// The latency histograms: overall ones, then forward latency by mode.
fn write_latencies(w: &mut PromWriter, shards: &[LabelledShard<'_>]) {
    for (name, help, get) in PROM_HISTOGRAMS {
        w.family(name, "histogram", help);
        for (s, id) in shards {
            w.histogram(name, &[("shard", id)], get(&s.latencies));
        }
    }
    let by_mode = "forward_by_mode_latency_seconds";
    w.family(
        by_mode,
        "histogram",
        "Read-to-written latency of relayed messages by rendezvous style, in seconds.",
    );
    for (s, id) in shards {
        for (mode, h) in &s.latencies.forward_by_mode {
            w.histogram(by_mode, &[("shard", id), ("mode", mode)], h);
        }
    }
}

/// One shard's `/health` figures, written by that shard as they move (a relaxed store
/// of the new value after each change, so the mirror always equals the shard's own
/// tally) and read by whichever shard answers a probe. Touched once per connection open
/// or close and per registry change, never per relayed message.
#[derive(Debug, Default)]
pub struct HealthMirror {
    /// Open binary connections.
    binaries: AtomicU64,
    /// Open phone connections.
    phones: AtomicU64,
    /// This shard's share of the `pairs` gauge.
    pairs: AtomicI64,
    /// This shard's share of the `sessions` gauge.
    sessions: AtomicI64,
    /// This shard's share of the `tickets` gauge.
    tickets: AtomicI64,
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

    /// This shard's share of gauge `name` is now `value` (other gauges are ignored).
    pub fn gauge(&self, name: &str, value: i64) {
        let slot = match name {
            "pairs" => &self.pairs,
            "sessions" => &self.sessions,
            "tickets" => &self.tickets,
            _ => return,
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

// ---------------------------------------------------------------------------------------
// `/stats` in two rounds: exact totals from a bounded exchange
// ---------------------------------------------------------------------------------------
//
// Round 1 ([`ShardStats::coarse_report`]): each shard sends, per histogram since the
// reset, its own summary (computed on the owning shard) and its counts in [`CELLS`]
// fixed coarse cells of 64 HDR buckets each (2.2 KB). The reader merges the cells and
// finds, for each figure of the totals (min, p50, p90, p99, p99.9, max), the one cell
// holding that rank. Round 2 ([`ShardStats::fine_counts`]): each shard sends the 64
// bucket counts of just those cells (at most 6 per histogram, 512 B each). The reader
// then walks the merged buckets of the cell to the exact bucket: the same value a merged
// HDR histogram gives. Samples recorded between the two rounds can move a rank by that
// many samples; the value found is still a bucket of the right cell.

/// Coarse cells per histogram: 32 linear cells of 64 µs below 2,048 µs, then 16 cells per
/// power of two from 2^11 to 2^26 µs (HDR's 1,024 buckets per octave, 64 per cell);
/// 2^26 µs exceeds the 60 s ceiling.
pub const CELLS: usize = 32 + 15 * 16;

/// HDR buckets per coarse cell.
pub const CELL_BUCKETS: usize = 64;

/// The lowest value of `cell` and the width of its buckets, in µs.
fn cell_start(cell: usize) -> (u64, u64) {
    if cell < 32 {
        return ((cell * CELL_BUCKETS) as u64, 1);
    }
    let octave = 11 + (cell - 32) / 16;
    let width = 1u64 << (octave - 10);
    let start = (1u64 << octave) + ((cell - 32) % 16) as u64 * CELL_BUCKETS as u64 * width;
    (start, width)
}

/// Which histogram of a shard: the overall three or a mode's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistId {
    /// `forward`.
    Forward,
    /// `handshake`.
    Handshake,
    /// `handoff`.
    Handoff,
    /// `forward_by_mode[mode]`.
    Mode(&'static str),
}

/// Round 1 for one histogram: the shard's own summary and its coarse cell counts.
#[derive(Debug, Clone)]
pub struct Coarse {
    /// The shard's own figures (exact, computed where the histogram lives).
    summary: JsonHistogram,
    /// Samples per coarse cell.
    cells: Box<[u64; CELLS]>,
    /// The exact sum of the samples since the reset (µs), for the merged mean.
    sum_micros: u64,
}

/// A shard's round-1 `/stats` contribution.
pub type CoarseReport = Report<Coarse>;

impl StatsSnapshot {
    /// Histogram `id` and its reset mark (if any), or `None` for a mode this shard has
    /// not seen.
    fn with_mark(&self, id: HistId) -> Option<(&Histogram<u64>, Option<&Histogram<u64>>)> {
        let mark = self.reset_mark.as_deref();
        Some(match id {
            HistId::Forward => (&self.forward, mark.map(|m| &m.forward)),
            HistId::Handshake => (&self.handshake, mark.map(|m| &m.handshake)),
            HistId::Handoff => (&self.handoff, mark.map(|m| &m.handoff)),
            HistId::Mode(mode) => {
                let (_, h) = self.forward_by_mode.iter().find(|(k, _)| *k == mode)?;
                let m = mark.and_then(|m| m.forward_by_mode.iter().find(|(k, _)| *k == mode));
                (h, m.map(|(_, h)| h))
            }
        })
    }

    /// Histogram `id` since the reset (a copy only when a reset mark exists), or `None`
    /// for a mode this shard has not seen.
    fn since_view(&self, id: HistId) -> Option<std::borrow::Cow<'_, Histogram<u64>>> {
        let (h, m) = self.with_mark(id)?;
        let Some(m) = m else {
            return Some(std::borrow::Cow::Borrowed(h));
        };
        let mut view = h.clone();
        if view.subtract(m).is_err() {
            view.reset();
        }
        Some(std::borrow::Cow::Owned(view))
    }
}

impl Coarse {
    /// Round 1 of `h` (since the reset), whose samples sum to `sum_micros`. One walk of
    /// the count array per cell range and the quantiles' chunked scans: the cost follows
    /// the histogram's size, not the samples or the distinct values recorded.
    fn of(h: &Histogram<u64>, sum_micros: u64) -> Self {
        let mut cells = Box::new([0u64; CELLS]);
        let summary = if h.is_empty() {
            JsonHistogram::of(&Recorded::default(), false)
        } else {
            for (cell, n) in cells.iter_mut().enumerate() {
                let (start, width) = cell_start(cell);
                *n = h.count_between(start, start + width * CELL_BUCKETS as u64 - 1);
            }
            JsonHistogram {
                count: h.len(),
                min: h.min(),
                p50: h.value_at_quantile(0.5),
                p90: h.value_at_quantile(0.9),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                max: h.max(),
                mean: (sum_micros as f64 / h.len() as f64 * 100.0).round() / 100.0,
                recorded: None,
            }
        };
        Coarse {
            summary,
            cells,
            sum_micros,
        }
    }
}

impl ShardStats {
    /// Round 1 of a `/stats` read (see the section notes above).
    pub fn coarse_report(&self) -> CoarseReport {
        let live = &self.live;
        let of = |id: HistId| {
            let view = live.since_view(id).expect("the histogram exists");
            let now = self.prom.get(id).map_or(0, |p| p.sum_micros);
            let then = self
                .reset_sums
                .as_ref()
                .and_then(|r| r.get(id).copied())
                .unwrap_or(0);
            Coarse::of(&view, now.saturating_sub(then))
        };
        Report {
            tallies: live.tallies.clone(),
            latencies: Latencies {
                forward: of(HistId::Forward),
                handshake: of(HistId::Handshake),
                handoff: of(HistId::Handoff),
                forward_by_mode: live
                    .forward_by_mode
                    .iter()
                    .map(|(mode, _)| (*mode, of(HistId::Mode(mode))))
                    .collect(),
            },
        }
    }

    /// Round 2: the bucket counts (since the reset) of each asked cell, in order.
    pub fn fine_counts(&self, asked: &[(HistId, usize)]) -> Vec<[u64; CELL_BUCKETS]> {
        asked
            .iter()
            .map(|&(id, cell)| {
                let mut out = [0u64; CELL_BUCKETS];
                // Counts minus the mark's, bucket by bucket: no copy of the histogram.
                if let (Some((h, mark)), true) = (self.live.with_mark(id), cell < CELLS) {
                    let (start, width) = cell_start(cell);
                    for (b, n) in out.iter_mut().enumerate() {
                        let v = start + b as u64 * width;
                        let before = mark.map_or(0, |m| m.count_at(v));
                        *n = h.count_at(v).saturating_sub(before);
                    }
                }
                out
            })
            .collect()
    }
}

/// The totals' figures to resolve per histogram, as ranks: min, p50, p90, p99, p99.9, max.
const TOTAL_QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// The ranks (1-based) of min, the quantiles and max among `count` samples.
fn target_ranks(count: u64) -> [u64; 6] {
    let q = |q: f64| ((q * count as f64).ceil() as u64).max(1);
    [
        1,
        q(TOTAL_QUANTILES[0]),
        q(TOTAL_QUANTILES[1]),
        q(TOTAL_QUANTILES[2]),
        q(TOTAL_QUANTILES[3]),
        count,
    ]
}

/// Merged round-1 counts of one histogram over the shards.
struct MergedCoarse {
    /// Summed cell counts.
    cells: Vec<u64>,
    /// Samples in all.
    count: u64,
    /// Summed exact sums, µs.
    sum_micros: u64,
}

impl MergedCoarse {
    /// Sum `parts`.
    fn of<'a>(parts: impl IntoIterator<Item = &'a Coarse>) -> Self {
        let mut cells = vec![0u64; CELLS];
        let mut sum_micros = 0u64;
        for part in parts {
            for (mine, theirs) in cells.iter_mut().zip(part.cells.iter()) {
                *mine = mine.saturating_add(*theirs);
            }
            sum_micros = sum_micros.saturating_add(part.sum_micros);
        }
        let count = cells.iter().sum();
        MergedCoarse {
            cells,
            count,
            sum_micros,
        }
    }

    /// For each target rank: its cell and the samples in the cells below it.
    fn locate(&self) -> Vec<(usize, u64)> {
        if self.count == 0 {
            return Vec::new();
        }
        target_ranks(self.count)
            .iter()
            .map(|&rank| {
                let mut below = 0u64;
                for (cell, &n) in self.cells.iter().enumerate() {
                    if below + n >= rank {
                        return (cell, below);
                    }
                    below += n;
                }
                (CELLS - 1, below)
            })
            .collect()
    }
}

/// One histogram of the totals after round 1: its id, the merged cell counts and, per
/// target rank, its cell and the samples below that cell.
type PlannedHist = (HistId, MergedCoarse, Vec<(usize, u64)>);

/// The `/stats` histograms of every shard after round 1, with what round 2 must fetch.
pub struct StatsPlan {
    /// Round-1 reports in shard order.
    reports: Vec<CoarseReport>,
    /// Every histogram of the totals: id, merged counts, located ranks.
    hists: Vec<PlannedHist>,
}

impl StatsPlan {
    /// Merge round 1.
    pub fn new(reports: Vec<CoarseReport>) -> Self {
        let mut ids = vec![HistId::Forward, HistId::Handshake, HistId::Handoff];
        for r in &reports {
            for (mode, _) in &r.latencies.forward_by_mode {
                if !ids.contains(&HistId::Mode(mode)) {
                    ids.push(HistId::Mode(mode));
                }
            }
        }
        let hists = ids
            .into_iter()
            .map(|id| {
                let merged = MergedCoarse::of(reports.iter().filter_map(|r| r.latencies.get(id)));
                let located = merged.locate();
                (id, merged, located)
            })
            .collect();
        StatsPlan { reports, hists }
    }

    /// The cells round 2 asks every shard for (deduplicated).
    pub fn asked(&self) -> Vec<(HistId, usize)> {
        let mut asked = Vec::new();
        for (id, _, located) in &self.hists {
            for &(cell, _) in located {
                if !asked.contains(&(*id, cell)) {
                    asked.push((*id, cell));
                }
            }
        }
        asked
    }

    /// The `/stats` body from round 2's replies (`fine[i]` answers `asked()` for one
    /// shard; any number of shards).
    pub fn render(&self, uptime_seconds: u64, fine: &[Vec<[u64; CELL_BUCKETS]>]) -> String {
        let asked = self.asked();
        let mut tallies = Tallies::empty();
        for r in &self.reports {
            tallies.absorb(&r.tallies);
        }
        let mut merged_fine = vec![[0u64; CELL_BUCKETS]; asked.len()];
        for reply in fine {
            for (mine, theirs) in merged_fine.iter_mut().zip(reply) {
                for (a, b) in mine.iter_mut().zip(theirs) {
                    *a = a.saturating_add(*b);
                }
            }
        }
        let totals_of = |id: HistId| {
            let (_, merged, located) = self.hists.iter().find(|(k, _, _)| *k == id)?;
            Some(resolve(merged, located, |cell| {
                asked
                    .iter()
                    .position(|&a| a == (id, cell))
                    .map(|i| &merged_fine[i])
            }))
        };
        let empty = || JsonHistogram::of(&Recorded::default(), false);
        let totals_latencies = Latencies {
            forward: totals_of(HistId::Forward).unwrap_or_else(empty),
            handshake: totals_of(HistId::Handshake).unwrap_or_else(empty),
            handoff: totals_of(HistId::Handoff).unwrap_or_else(empty),
            forward_by_mode: self
                .hists
                .iter()
                .filter_map(|(id, _, _)| match id {
                    HistId::Mode(m) => Some((*m, totals_of(*id).unwrap_or_else(empty))),
                    _ => None,
                })
                .collect(),
        };
        let body = JsonBody {
            uptime_seconds,
            shards: self.reports.len(),
            totals: JsonTallies::with_summaries(&tallies, totals_latencies),
            per_shard: self
                .reports
                .iter()
                .map(|r| JsonShard {
                    shard: r.tallies.shard,
                    tallies: JsonTallies::with_summaries(&r.tallies, r.latencies.summaries()),
                })
                .collect(),
            allocations: allocations(),
            memory: JsonMemory::now(),
        };
        // Cannot fail: see `render_json_with`.
        serde_json::to_string(&body).expect("stats JSON serialises")
    }
}

/// The totals' figures of one histogram: each located rank walked through the merged
/// buckets of its cell (`fine(cell)`); min takes the bucket's lowest value, the others
/// its highest, as `Histogram` does.
fn resolve<'a>(
    merged: &MergedCoarse,
    located: &[(usize, u64)],
    fine: impl Fn(usize) -> Option<&'a [u64; CELL_BUCKETS]>,
) -> JsonHistogram {
    if merged.count == 0 || located.len() != 6 {
        return JsonHistogram::of(&Recorded::default(), false);
    }
    let ranks = target_ranks(merged.count);
    let h = scale();
    let value = |i: usize| {
        let (cell, below) = located[i];
        let (start, width) = cell_start(cell);
        let mut seen = below;
        let mut last = None;
        if let Some(counts) = fine(cell) {
            for (b, &n) in counts.iter().enumerate() {
                if n > 0 {
                    last = Some(b);
                }
                seen += n;
                if n > 0 && seen >= ranks[i] {
                    last = Some(b);
                    break;
                }
            }
        }
        // Samples that moved between the rounds: fall back to the cell's last non-empty
        // bucket (or its first), still inside the right cell.
        start + last.unwrap_or(0) as u64 * width
    };
    let bucket = |i: usize| value(i);
    JsonHistogram {
        count: merged.count,
        min: h.lowest_equivalent(bucket(0)),
        p50: h.highest_equivalent(bucket(1)),
        p90: h.highest_equivalent(bucket(2)),
        p99: h.highest_equivalent(bucket(3)),
        p999: h.highest_equivalent(bucket(4)),
        max: h.highest_equivalent(bucket(5)),
        mean: (merged.sum_micros as f64 / merged.count as f64 * 100.0).round() / 100.0,
        recorded: None,
    }
}

impl<H> Latencies<H> {
    /// Histogram `id`, if this shard has it.
    fn get(&self, id: HistId) -> Option<&H> {
        match id {
            HistId::Forward => Some(&self.forward),
            HistId::Handshake => Some(&self.handshake),
            HistId::Handoff => Some(&self.handoff),
            HistId::Mode(mode) => self
                .forward_by_mode
                .iter()
                .find(|(k, _)| *k == mode)
                .map(|(_, h)| h),
        }
    }
}

impl Latencies<Coarse> {
    /// The shard's own summaries.
    fn summaries(&self) -> Latencies<JsonHistogram> {
        Latencies {
            forward: self.forward.summary.clone(),
            handshake: self.handshake.summary.clone(),
            handoff: self.handoff.summary.clone(),
            forward_by_mode: self
                .forward_by_mode
                .iter()
                .map(|(m, c)| (*m, c.summary.clone()))
                .collect(),
        }
    }
}

impl JsonTallies {
    /// The JSON view of tallies with histogram summaries already made.
    fn with_summaries(s: &Tallies, l: Latencies<JsonHistogram>) -> Self {
        let mut out = JsonTallies::of(s, &Latencies::empty_recorded(), false);
        out.histograms = JsonHistograms {
            forward: l.forward,
            handshake: l.handshake,
            handoff: l.handoff,
        };
        out.forward_by_mode = l.forward_by_mode.into_iter().collect();
        out
    }
}

impl Latencies<Recorded> {
    /// No samples, no modes.
    fn empty_recorded() -> Self {
        Latencies {
            forward: Recorded::default(),
            handshake: Recorded::default(),
            handoff: Recorded::default(),
            forward_by_mode: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A shard with a bit of everything recorded.
    fn busy_shard(id: usize) -> ShardStats {
        let mut s = ShardStats::new(id);
        s.accepted();
        s.accepted();
        s.handed_off();
        s.adopted();
        s.rejected("not_found");
        s.rejected("not_found");
        s.rejected("head_too_large");
        s.dropped("unknown_conn_id");
        s.event("codes_minted");
        s.gauge_add("pairs", 3);
        s.gauge_add("pairs", -1);
        s.conn_opened(ConnKind::Binary);
        s.conn_opened(ConnKind::Phone);
        s.conn_opened(ConnKind::Phone);
        s.message_in(100);
        s.message_out(40);
        s.message_out(60);
        s.record_forward("server_id", 10);
        s.record_forward("server_id", 20);
        s.record_forward("pair", 1000);
        s.record_handshake(500);
        s.record_handoff(7);
        s
    }

    #[test]
    fn conn_kind_names_are_distinct_and_indexed_in_order() {
        for (i, k) in ConnKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
        let mut names: Vec<_> = ConnKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CONN_KINDS);
        assert_eq!(ConnKind::SessionBrowser.name(), "session_browser");
    }

    #[test]
    fn counters_and_histograms_land_in_the_snapshot() {
        let s = busy_shard(3);
        let snap = s.snapshot();
        assert_eq!(snap.shard, 3);
        assert_eq!(snap.shards, 1);
        assert_eq!(snap.accepted, 2);
        assert_eq!(snap.handoffs, 1);
        assert_eq!(snap.adopted, 1);
        assert_eq!(lookup(&snap.rejected, "not_found"), 2);
        assert_eq!(lookup(&snap.rejected, "head_too_large"), 1);
        assert_eq!(lookup(&snap.dropped, "unknown_conn_id"), 1);
        assert_eq!(lookup(&snap.events, "codes_minted"), 1);
        assert_eq!(snap.gauge("pairs"), 2);
        assert_eq!(snap.gauge("sessions"), 0);
        assert_eq!(s.gauge("pairs"), 2);
        assert_eq!(snap.connections(ConnKind::Phone), 2);
        assert_eq!(s.connections(ConnKind::Binary), 1);
        assert_eq!(snap.connections(ConnKind::Echo), 0);
        assert_eq!((snap.messages_in, snap.bytes_in), (1, 100));
        assert_eq!((snap.messages_out, snap.bytes_out), (2, 100));
        assert_eq!(snap.forward.len(), 3);
        assert_eq!((snap.forward.min(), snap.forward.max()), (10, 1000));
        assert_eq!(snap.forward_by_mode.len(), 2);
        assert_eq!(snap.forward_by_mode[0].0, "server_id");
        assert_eq!(snap.forward_by_mode[0].1.len(), 2);
        assert_eq!(snap.forward_by_mode[1].1.max(), 1000);
        assert_eq!((snap.handshake.len(), snap.handshake.max()), (1, 500));
        assert_eq!((snap.handoff.len(), snap.handoff.max()), (1, 7));
    }

    #[test]
    fn keys_match_by_content_not_address() {
        let mut s = ShardStats::new(0);
        let owned = String::from("not_found");
        // A &'static str with the same text at a different address.
        let leaked: &'static str = Box::leak(owned.into_boxed_str());
        s.rejected("not_found");
        s.rejected(leaked);
        assert_eq!(s.snapshot().rejected, vec![("not_found", 2)]);
    }

    #[test]
    fn conn_closed_saturates_at_zero() {
        let mut s = ShardStats::new(0);
        s.conn_closed(ConnKind::Echo);
        assert_eq!(s.connections(ConnKind::Echo), 0);
        s.conn_opened(ConnKind::Echo);
        s.conn_closed(ConnKind::Echo);
        s.conn_closed(ConnKind::Echo);
        assert_eq!(s.connections(ConnKind::Echo), 0);
    }

    #[test]
    fn out_of_range_latencies_clamp_instead_of_failing() {
        let mut s = ShardStats::new(0);
        s.record_forward("echo", u64::MAX);
        s.record_handshake(0);
        s.record_handoff(HIST_HIGH_MICROS * 10);
        let snap = s.snapshot();
        assert_eq!(snap.forward.len(), 1);
        assert!(snap
            .forward
            .equivalent(snap.forward.max(), HIST_HIGH_MICROS));
        assert!(snap
            .handoff
            .equivalent(snap.handoff.max(), HIST_HIGH_MICROS));
        assert_eq!((snap.handshake.len(), snap.handshake.max()), (1, 0));
    }

    #[test]
    fn steady_state_recording_does_not_grow_any_buffer() {
        let mut s = ShardStats::new(0);
        s.record_forward("pair", 5);
        s.rejected("x");
        let modes_cap = s.live.forward_by_mode.capacity();
        let rejected_cap = s.live.rejected.capacity();
        let slots = s.live.forward.distinct_values();
        let mode_slots = s.live.forward_by_mode[0].1.distinct_values();
        for v in [0, 1, 999, 123_456, HIST_HIGH_MICROS, u64::MAX] {
            s.record_forward("pair", v);
            s.message_in(v as usize);
            s.message_out(7);
            s.rejected("x");
        }
        assert_eq!(s.live.forward_by_mode.capacity(), modes_cap);
        assert_eq!(s.live.rejected.capacity(), rejected_cap);
        assert_eq!(s.live.forward.distinct_values(), slots);
        assert_eq!(s.live.forward_by_mode[0].1.distinct_values(), mode_slots);
    }

    #[test]
    fn merge_sums_counters_and_merges_histograms() {
        let a = busy_shard(0);
        let mut b = busy_shard(1);
        b.rejected("over_capacity");
        b.record_forward("echo", 40_000);
        b.record_handshake(3);
        b.gauge_add("sessions", 5);
        b.conn_closed(ConnKind::Phone);
        let total = StatsSnapshot::merge(&[a.snapshot(), b.snapshot()]);
        assert_eq!(total.shards, 2);
        assert_eq!(total.accepted, 4);
        assert_eq!(total.handoffs, 2);
        assert_eq!(total.adopted, 2);
        assert_eq!(lookup(&total.rejected, "not_found"), 4);
        assert_eq!(lookup(&total.rejected, "over_capacity"), 1);
        assert_eq!(lookup(&total.dropped, "unknown_conn_id"), 2);
        assert_eq!(total.gauge("pairs"), 4);
        assert_eq!(total.gauge("sessions"), 5);
        assert_eq!(total.connections(ConnKind::Phone), 3);
        assert_eq!((total.bytes_in, total.bytes_out), (200, 200));
        assert_eq!(total.forward.len(), 7);
        assert!(total.forward.equivalent(total.forward.max(), 40_000));
        assert_eq!(total.forward.min(), 10);
        assert_eq!((total.handshake.len(), total.handshake.min()), (3, 3));
        assert_eq!(total.handshake.max(), 500);
        let mode = |m: &str| {
            let (_, h) = total.forward_by_mode.iter().find(|(k, _)| *k == m).unwrap();
            (h.len(), h.max())
        };
        assert_eq!(mode("server_id"), (4, 20));
        assert_eq!(mode("pair"), (2, 1000));
        assert_eq!(mode("echo").0, 1);
    }

    #[test]
    fn merge_of_nothing_is_empty() {
        let total = StatsSnapshot::merge(&[]);
        assert_eq!(
            (total.shards, total.accepted, total.forward.len()),
            (0, 0, 0)
        );
    }

    #[test]
    fn recorded_lists_only_in_totals_and_only_when_asked() {
        let snaps = [busy_shard(0).stats_report(), busy_shard(1).stats_report()];
        let plain: Value = serde_json::from_str(&render_json(1, &snaps)).unwrap();
        assert!(plain["totals"]["histograms"]["forward"]
            .get("recorded")
            .is_none());
        let options = JsonOptions { recorded: true };
        let v: Value = serde_json::from_str(&render_json_with(1, &snaps, options)).unwrap();
        let recorded = &v["totals"]["histograms"]["forward"]["recorded"];
        // busy_shard records forward 10, 20 and 1000 µs; two shards.
        assert_eq!(recorded, &serde_json::json!([[10, 2], [20, 2], [1000, 2]]));
        assert_eq!(
            v["totals"]["forward_by_mode"]["pair"]["recorded"],
            serde_json::json!([[1000, 2]])
        );
        assert!(v["per_shard"][0]["histograms"]["forward"]
            .get("recorded")
            .is_none());
    }

    #[test]
    fn reset_empties_the_stats_view_but_not_what_metrics_export() {
        let mut s = busy_shard(0);
        let before = s.snapshot().forward.len();
        s.reset_histograms();
        let report = s.stats_report();
        assert_eq!(report.tallies.accepted, 2);
        assert_eq!(report.tallies.messages_out, 2);
        assert_eq!(lookup(&report.tallies.rejected, "not_found"), 2);
        assert_eq!(report.tallies.connections(ConnKind::Phone), 2);
        let l = &report.latencies;
        assert!(l.forward.buckets.is_empty() && l.handshake.buckets.is_empty());
        assert!(l.handoff.buckets.is_empty());
        assert_eq!(l.forward_by_mode.len(), 2, "mode histograms are kept");
        assert!(l.forward_by_mode.iter().all(|(_, r)| r.buckets.is_empty()));
        assert_eq!(
            s.metrics_report().latencies.forward.count,
            before,
            "the exported histogram keeps its samples"
        );
        s.record_forward("pair", 9);
        s.record_forward("echo", 5); // a mode first seen after the reset
        let reports = [s.stats_report(), busy_shard(1).stats_report()];
        let v: Value = serde_json::from_str(&render_json(1, &reports)).unwrap();
        assert_eq!(
            v["totals"]["histograms"]["forward"]["count"].as_u64(),
            Some(2 + before),
            "two new samples plus shard 1's"
        );
        assert_eq!(v["totals"]["forward_by_mode"]["pair"]["count"], 2);
        assert_eq!(v["per_shard"][0]["forward_by_mode"]["pair"]["count"], 1);
        assert_eq!(v["per_shard"][0]["forward_by_mode"]["echo"]["count"], 1);
        assert_eq!(
            v["per_shard"][0]["forward_by_mode"]["server_id"]["count"],
            0
        );
        let metrics = s.metrics_report();
        assert_eq!(metrics.latencies.forward.count, before + 2);
    }

    /// Point 2 of #20: what crosses shards per `/stats` or `/metrics` read does not grow
    /// with the number of samples recorded; for `/metrics` it is fixed whatever the
    /// values, for `/stats` it grows only with the distinct buckets hit.
    #[test]
    fn scale_reports_do_not_grow_with_traffic_history() {
        let fresh = busy_shard(0);
        let mut old = busy_shard(0);
        for i in 0..1_000_000u64 {
            old.record_forward("pair", 10 + i % 3);
        }
        let (a, b) = (fresh.metrics_report(), old.metrics_report());
        assert_eq!(
            std::mem::size_of_val(&a.latencies.forward),
            std::mem::size_of_val(&b.latencies.forward)
        );
        assert_eq!(b.latencies.forward.count, 1_000_003);
        let (a, b) = (fresh.stats_report(), old.stats_report());
        assert_eq!(a.latencies.forward.buckets.len(), 3, "10, 20 and 1000 µs");
        assert!(a.latencies.forward.dense.is_none());
        assert!(a.latencies.handoff.dense.is_none());
        // Past SPARSE_MAX_SAMPLES the histogram crosses whole (the one cost that still
        // follows the history; see the module notes).
        assert!(b.latencies.forward.dense.is_some());
        assert_eq!(b.latencies.forward.count(), 1_000_003);
        let mut few = busy_shard(0);
        for i in 0..1_000u64 {
            few.record_forward("pair", 10 + i % 3);
        }
        let r = few.stats_report();
        assert_eq!(r.latencies.forward.buckets.len(), 5, "plus 11 and 12 µs");
        assert_eq!(r.latencies.forward.count(), 1_003);
    }

    /// Point 2 of #20: the reduced reports render exactly what the full HDR histograms
    /// say — quantiles, min, max and mean of merged shards, and Prometheus buckets.
    #[test]
    fn scale_reports_render_what_the_full_histograms_say() {
        // 3,000 samples a shard cross as bucket lists, 20,000 as whole histograms, and
        // 3,000 + 20,000 mixes the two; every way must match the merged HDR histogram.
        for (n0, n1) in [(3_000, 3_000), (20_000, 20_000), (3_000, 20_000)] {
            check_reports_match_histograms(n0, n1);
        }
    }

    /// Shard 0 records `n0` wide-range samples, shard 1 `n1`; the rendered totals must be
    /// the merged HDR histogram's figures.
    fn check_reports_match_histograms(n0: usize, n1: usize) {
        let lat = |seed: u64, n: usize| {
            let mut x = seed;
            (0..n).map(move |_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                1 + x % 5_000_000
            })
        };
        let mut shards = [ShardStats::new(0), ShardStats::new(1)];
        for (n, s) in shards.iter_mut().enumerate() {
            for v in lat(0x9E37_79B9 + n as u64, [n0, n1][n]) {
                s.record_forward("pair", v);
                s.record_handshake(v / 7);
            }
        }
        let merged = StatsSnapshot::merge(&[shards[0].snapshot(), shards[1].snapshot()]);
        let reports = [shards[0].stats_report(), shards[1].stats_report()];
        let v: Value = serde_json::from_str(&render_json(1, &reports)).unwrap();
        for (name, h) in [
            ("forward", &merged.forward),
            ("handshake", &merged.handshake),
        ] {
            let j = &v["totals"]["histograms"][name];
            assert_eq!(j["count"].as_u64(), Some(h.len()), "{name}");
            assert_eq!(j["min"].as_u64(), Some(h.min()), "{name}");
            assert_eq!(j["max"].as_u64(), Some(h.max()), "{name}");
            for (key, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
                assert_eq!(
                    j[key].as_u64(),
                    Some(h.value_at_quantile(q)),
                    "{name} {key}"
                );
            }
            let mean = (h.mean() * 100.0).round() / 100.0;
            assert!((j["mean"].as_f64().unwrap() - mean).abs() < 0.011, "{name}");
        }
        let body = render_prometheus(1, &[shards[0].metrics_report()]);
        let s = scrape(&body);
        let b = histogram_buckets(&s, "shardrelay_forward_latency_seconds", &[]);
        let values: Vec<u64> = lat(0x9E37_79B9, n0).collect();
        for (le, count) in b {
            let want = if le.is_finite() {
                let micros = (le * MICROS_PER_SECOND).round() as u64;
                values.iter().filter(|&&v| v <= micros).count()
            } else {
                values.len()
            };
            assert_eq!(count, want as f64, "le={le}");
        }
        let sum: u64 = values.iter().sum();
        let got = sample_value(&s, "shardrelay_forward_latency_seconds_sum", &[]);
        assert!((got - sum as f64 / MICROS_PER_SECOND).abs() < 1e-6, "{got}");
    }

    /// Plain `/stats` through the two bounded rounds, as `shard::admin` runs them.
    fn two_rounds(shards: &[&ShardStats]) -> Value {
        let plan = StatsPlan::new(shards.iter().map(|s| s.coarse_report()).collect());
        let asked = plan.asked();
        assert!(asked.len() <= 6 * (3 + 3), "at most 6 cells per histogram");
        let fine: Vec<_> = shards.iter().map(|s| s.fine_counts(&asked)).collect();
        serde_json::from_str(&plan.render(1, &fine)).unwrap()
    }

    /// #20 point 2: the bounded two-round `/stats` gives the merged HDR histogram's
    /// exact figures for totals, and each shard's own for `per_shard`, with and without
    /// a reset mark, for narrow and wide value ranges.
    #[test]
    fn scale_two_round_stats_totals_are_the_merged_histograms_figures() {
        for (n, spread) in [(50usize, 40u64), (20_000, 5_000_000), (3_000, 60_000_000)] {
            let mut shards = [busy_shard(0), busy_shard(1)];
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ spread;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            shards[1].reset_histograms(); // shard 1 reports since a mark
            for (i, s) in shards.iter_mut().enumerate() {
                for _ in 0..n * (i + 1) {
                    let v = 1 + next() % spread;
                    s.record_forward(["pair", "echo"][(v % 2) as usize], v);
                    s.record_handshake(v / 3);
                }
            }
            let v = two_rounds(&[&shards[0], &shards[1]]);
            // The reference: shard 0 whole, shard 1 minus its mark, merged by HDR.
            let mut want = StatsSnapshot::merge(&[shards[0].snapshot()]);
            let one = shards[1].snapshot();
            for id in [HistId::Forward, HistId::Handshake, HistId::Mode("pair")] {
                let mine = one.since_view(id).unwrap();
                let total = match id {
                    HistId::Forward => &mut want.forward,
                    HistId::Handshake => &mut want.handshake,
                    _ => want.mode_histogram("pair"),
                };
                merge_histogram(total, &mine);
            }
            let pair = want.mode_histogram("pair").clone();
            let checks = [
                (&v["totals"]["histograms"]["forward"], &want.forward),
                (&v["totals"]["histograms"]["handshake"], &want.handshake),
                (&v["totals"]["forward_by_mode"]["pair"], &pair),
            ];
            for (j, h) in checks {
                let ctx = format!("n={n} spread={spread} {j}");
                assert_eq!(j["count"].as_u64(), Some(h.len()), "{ctx}");
                assert_eq!(j["min"].as_u64(), Some(h.min()), "{ctx}");
                assert_eq!(j["max"].as_u64(), Some(h.max()), "{ctx}");
                for (key, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
                    assert_eq!(j[key].as_u64(), Some(h.value_at_quantile(q)), "{key} {ctx}");
                }
                // The mean is exact (sum ÷ count); HDR's uses bucket medians, so the two
                // agree within the buckets' 0.1 %.
                let mean = j["mean"].as_f64().unwrap();
                assert!((mean - h.mean()).abs() <= 0.01 + h.mean() * 1e-3, "{ctx}");
            }
            let own = shards[1].snapshot();
            let fwd = own.since_view(HistId::Forward).unwrap();
            assert_eq!(
                v["per_shard"][1]["histograms"]["forward"]["p99"].as_u64(),
                Some(fwd.value_at_quantile(0.99))
            );
            assert_eq!(v["per_shard"][0]["accepted"], 2);
            assert_eq!(v["totals"]["accepted"], 4);
        }
        // Nothing recorded: zeros, and round 2 asks for nothing.
        let fresh = ShardStats::new(0);
        let plan = StatsPlan::new(vec![fresh.coarse_report()]);
        assert!(plan.asked().is_empty());
        let v: Value = serde_json::from_str(&plan.render(0, &[])).unwrap();
        assert_eq!(v["totals"]["histograms"]["forward"]["count"], 0);
        assert_eq!(v["totals"]["histograms"]["forward"]["p99"], 0);
    }

    /// The coarse cells tile the HDR buckets: each cell is 64 buckets of one width, and
    /// cells follow each other without gap up to the 60 s ceiling.
    #[test]
    fn scale_coarse_cells_tile_the_hdr_buckets() {
        let h = scale();
        let mut next = 0u64;
        for cell in 0..CELLS {
            let (start, width) = cell_start(cell);
            assert_eq!(start, next, "cell {cell}");
            for b in 0..CELL_BUCKETS as u64 {
                let v = start + b * width;
                assert_eq!(h.lowest_equivalent(v), v, "cell {cell} bucket {b}");
                assert_eq!(
                    h.highest_equivalent(v),
                    v + width - 1,
                    "cell {cell} bucket {b}"
                );
            }
            next = start + width * CELL_BUCKETS as u64;
        }
        assert!(next > HIST_HIGH_MICROS);
    }

    #[test]
    fn snapshot_is_send_and_clone() {
        fn assert_send_clone<T: Send + Clone + 'static>() {}
        assert_send_clone::<StatsSnapshot>();
    }

    /// Keys of a JSON object, sorted.
    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    /// The keys `totals` and every `per_shard` entry carry (pinned: this is the contract).
    const TALLY_KEYS: [&str; 14] = [
        "accepted",
        "adopted",
        "bytes_in",
        "bytes_out",
        "connections",
        "dropped",
        "events",
        "forward_by_mode",
        "gauges",
        "handoffs",
        "histograms",
        "messages_in",
        "messages_out",
        "rejected",
    ];

    /// The keys of every histogram object.
    const HIST_KEYS: [&str; 8] = ["count", "max", "mean", "min", "p50", "p90", "p99", "p999"];

    #[test]
    fn json_has_exactly_the_contract_shape() {
        let snaps = [busy_shard(0).stats_report(), busy_shard(1).stats_report()];
        let v: Value = serde_json::from_str(&render_json(42, &snaps)).unwrap();
        // `allocations` exists only in the counting build (`--features alloc-count`).
        let mut top = vec!["memory", "per_shard", "shards", "totals", "uptime_seconds"];
        if cfg!(feature = "alloc-count") {
            top.insert(0, "allocations");
            assert_eq!(keys(&v["allocations"]), ["bytes", "count"]);
        }
        assert_eq!(keys(&v["memory"]), ["limit_bytes", "used_bytes"]);
        assert_eq!(keys(&v), top);
        assert_eq!(v["uptime_seconds"], 42);
        assert_eq!(v["shards"], 2);
        assert_eq!(keys(&v["totals"]), TALLY_KEYS);
        let per_shard = v["per_shard"].as_array().unwrap();
        assert_eq!(per_shard.len(), 2);
        let mut with_shard = TALLY_KEYS.to_vec();
        with_shard.push("shard");
        with_shard.sort_unstable();
        for (i, s) in per_shard.iter().enumerate() {
            assert_eq!(s["shard"], i);
            assert_eq!(keys(s), with_shard);
        }
        for scope in [&v["totals"], &per_shard[0]] {
            let kinds: Vec<&str> = ConnKind::ALL.iter().map(|k| k.name()).collect();
            let mut kinds_sorted = kinds.clone();
            kinds_sorted.sort_unstable();
            assert_eq!(keys(&scope["connections"]), kinds_sorted);
            assert_eq!(
                keys(&scope["histograms"]),
                ["forward", "handoff", "handshake"]
            );
            for h in ["forward", "handoff", "handshake"] {
                assert_eq!(keys(&scope["histograms"][h]), HIST_KEYS);
            }
            assert_eq!(keys(&scope["forward_by_mode"]), ["pair", "server_id"]);
            assert_eq!(keys(&scope["forward_by_mode"]["pair"]), HIST_KEYS);
        }
    }

    #[test]
    fn json_values_are_the_merged_and_per_shard_tallies() {
        let mut b = busy_shard(1);
        b.rejected("over_capacity");
        b.gauge_add("pairs", -3);
        let snaps = [busy_shard(0).stats_report(), b.stats_report()];
        let v: Value = serde_json::from_str(&render_json(1, &snaps)).unwrap();
        let t = &v["totals"];
        assert_eq!(t["accepted"], 4);
        assert_eq!(t["handoffs"], 2);
        assert_eq!(t["rejected"]["not_found"], 4);
        assert_eq!(t["rejected"]["over_capacity"], 1);
        assert_eq!(t["dropped"]["unknown_conn_id"], 2);
        assert_eq!(t["events"]["codes_minted"], 2);
        assert_eq!(t["gauges"]["pairs"], 1);
        assert_eq!(v["per_shard"][1]["gauges"]["pairs"], -1);
        assert_eq!(t["connections"]["phone"], 4);
        assert_eq!(t["connections"]["handshake"], 0);
        assert_eq!(
            (t["bytes_in"].as_u64(), t["messages_out"].as_u64()),
            (Some(200), Some(4))
        );
        let f = &t["histograms"]["forward"];
        assert_eq!(
            (f["count"].as_u64(), f["min"].as_u64()),
            (Some(6), Some(10))
        );
        assert_eq!(
            (f["p50"].as_u64(), f["max"].as_u64()),
            (Some(20), Some(1000))
        );
        assert_eq!(f["mean"].as_f64(), Some(343.33));
        assert_eq!(v["per_shard"][0]["rejected"]["over_capacity"], Value::Null);
        assert_eq!(v["per_shard"][1]["forward_by_mode"]["pair"]["count"], 1);
        assert_eq!(v["per_shard"][0]["histograms"]["handoff"]["count"], 1);
    }

    #[test]
    fn json_of_no_shards_and_empty_histograms_is_zeros() {
        let v: Value = serde_json::from_str(&render_json(0, &[])).unwrap();
        assert_eq!(v["shards"], 0);
        assert_eq!(v["per_shard"], Value::Array(vec![]));
        let h = &v["totals"]["histograms"]["forward"];
        for k in HIST_KEYS {
            assert_eq!(h[k].as_f64(), Some(0.0), "{k}");
        }
    }

    /// Parse a body with the real parser crate.
    fn scrape(body: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap()
    }

    /// The value of the one sample named `metric` whose labels include all of `labels`.
    fn sample_value(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
        use prometheus_parse::Value as V;
        let hits: Vec<_> = s
            .samples
            .iter()
            .filter(|x| {
                x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(v))
            })
            .collect();
        assert_eq!(hits.len(), 1, "{metric} {labels:?}: {hits:?}");
        match hits[0].value {
            V::Counter(v) | V::Gauge(v) | V::Untyped(v) => v,
            ref other => panic!("{metric}: not a scalar: {other:?}"),
        }
    }

    /// The (le, cumulative count) buckets of the one histogram series named `metric`
    /// with `labels`.
    fn histogram_buckets(
        s: &prometheus_parse::Scrape,
        metric: &str,
        labels: &[(&str, &str)],
    ) -> Vec<(f64, f64)> {
        let hits: Vec<_> = s
            .samples
            .iter()
            .filter(|x| {
                x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(v))
            })
            .collect();
        assert_eq!(hits.len(), 1, "{metric} {labels:?}");
        match &hits[0].value {
            prometheus_parse::Value::Histogram(bs) => {
                bs.iter().map(|b| (b.less_than, b.count)).collect()
            }
            other => panic!("{metric}: not a histogram: {other:?}"),
        }
    }

    /// The cumulative count at bucket `le` (seconds).
    fn count_at(buckets: &[(f64, f64)], le: f64) -> f64 {
        buckets
            .iter()
            .find(|(b, _)| (*b - le).abs() < 1e-12 || (b.is_infinite() && le.is_infinite()))
            .map(|(_, c)| *c)
            .unwrap_or_else(|| panic!("no bucket le={le} in {buckets:?}"))
    }

    #[test]
    fn prometheus_parses_and_has_per_shard_samples() {
        let mut b = busy_shard(1);
        b.record_forward("pair", 2000);
        let body = render_prometheus(77, &[busy_shard(0).metrics_report(), b.metrics_report()]);
        let s = scrape(&body);
        assert_eq!(sample_value(&s, "shardrelay_uptime_seconds", &[]), 77.0);
        assert_eq!(sample_value(&s, "shardrelay_shards", &[]), 2.0);
        for shard in ["0", "1"] {
            let sh = [("shard", shard)];
            assert_eq!(sample_value(&s, "shardrelay_accepted_total", &sh), 2.0);
            assert_eq!(sample_value(&s, "shardrelay_handoffs_total", &sh), 1.0);
            assert_eq!(sample_value(&s, "shardrelay_messages_in_total", &sh), 1.0);
            assert_eq!(sample_value(&s, "shardrelay_bytes_out_total", &sh), 100.0);
            let nf = [("shard", shard), ("reason", "not_found")];
            assert_eq!(sample_value(&s, "shardrelay_rejected_total", &nf), 2.0);
            let dr = [("shard", shard), ("reason", "unknown_conn_id")];
            assert_eq!(sample_value(&s, "shardrelay_dropped_total", &dr), 1.0);
            let ev = [("shard", shard), ("name", "codes_minted")];
            assert_eq!(sample_value(&s, "shardrelay_events_total", &ev), 1.0);
            let ph = [("shard", shard), ("kind", "phone")];
            assert_eq!(sample_value(&s, "shardrelay_connections", &ph), 2.0);
            let pairs = [("shard", shard), ("name", "pairs")];
            assert_eq!(sample_value(&s, "shardrelay_registry", &pairs), 2.0);
            let hs = "shardrelay_handshake_latency_seconds";
            assert_eq!(sample_value(&s, &format!("{hs}_count"), &sh), 1.0);
            assert_eq!(sample_value(&s, &format!("{hs}_sum"), &sh), 0.0005);
        }
        let fwd = "shardrelay_forward_latency_seconds";
        let b = histogram_buckets(&s, fwd, &[("shard", "1")]);
        // Shard 1's forward samples: 10, 20, 1000 (busy_shard) and 2000 µs.
        assert_eq!(b.len(), PROM_BUCKETS_MICROS.len() + 1);
        assert_eq!(count_at(&b, 0.000005), 0.0);
        assert_eq!(count_at(&b, 0.00001), 1.0);
        assert_eq!(count_at(&b, 0.000025), 2.0);
        assert_eq!(count_at(&b, 0.001), 3.0);
        assert_eq!(count_at(&b, 0.0025), 4.0);
        assert_eq!(count_at(&b, f64::INFINITY), 4.0);
        assert!(b.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative");
        assert_eq!(
            sample_value(&s, &format!("{fwd}_count"), &[("shard", "1")]),
            4.0
        );
        let by_mode = "shardrelay_forward_by_mode_latency_seconds";
        let b = histogram_buckets(&s, by_mode, &[("shard", "1"), ("mode", "pair")]);
        assert_eq!(count_at(&b, 0.0025), 2.0);
        let labels = [("shard", "0"), ("mode", "server_id")];
        assert_eq!(sample_value(&s, &format!("{by_mode}_count"), &labels), 2.0);
    }

    #[test]
    fn prometheus_families_have_help_and_type_and_are_contiguous() {
        let body = render_prometheus(
            1,
            &[
                busy_shard(0).metrics_report(),
                busy_shard(1).metrics_report(),
            ],
        );
        let s = scrape(&body);
        let mut seen: Vec<String> = Vec::new();
        let mut current = String::new();
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(name.starts_with("shardrelay_"), "{line}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                assert!(s.docs.contains_key(name), "no HELP for {name}");
                assert!(!seen.contains(&name.to_owned()), "{name} declared twice");
                seen.push(name.to_owned());
                current = name.to_owned();
            } else if !line.starts_with('#') {
                let metric = line.split(['{', ' ']).next().unwrap();
                let family = metric
                    .strip_suffix("_sum")
                    .or_else(|| metric.strip_suffix("_count"))
                    .or_else(|| metric.strip_suffix("_bucket"))
                    .filter(|f| *f == current)
                    .unwrap_or(metric);
                assert_eq!(family, current, "sample outside its family: {line}");
            }
        }
        assert!(seen.len() >= 17, "{seen:?}");
    }

    #[test]
    fn prometheus_of_empty_histograms_reports_zero_buckets_and_count() {
        let body = render_prometheus(0, &[ShardStats::new(0).metrics_report()]);
        let s = scrape(&body);
        let b = histogram_buckets(&s, "shardrelay_handoff_latency_seconds", &[]);
        assert!(b.iter().all(|(_, c)| *c == 0.0), "{b:?}");
        let count = "shardrelay_handoff_latency_seconds_count";
        assert_eq!(sample_value(&s, count, &[("shard", "0")]), 0.0);
    }

    #[test]
    fn prometheus_label_values_are_escaped() {
        let mut s = ShardStats::new(0);
        s.dropped("a\"b\\c\nd");
        let body = render_prometheus(0, &[s.metrics_report()]);
        let line = body
            .lines()
            .find(|l| l.starts_with("shardrelay_dropped_total{"))
            .unwrap();
        assert_eq!(
            line,
            r#"shardrelay_dropped_total{shard="0",reason="a\"b\\c\nd"} 1"#
        );
        // Still one line per sample, and the parser still reads the sample.
        assert_eq!(
            body.lines()
                .filter(|l| l.contains("dropped_total{"))
                .count(),
            1
        );
        let parsed = scrape(&body);
        assert!(parsed
            .samples
            .iter()
            .any(|x| x.metric == "shardrelay_dropped_total"));
    }

    #[test]
    fn prometheus_help_and_floats_follow_the_format() {
        let mut out = String::new();
        escape_help(&mut out, "a\\b\nc\"d");
        assert_eq!(out, "a\\\\b\\nc\"d");
        for (v, text) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (2.5, "2.5"),
        ] {
            let mut out = String::new();
            v.write_to(&mut out);
            assert_eq!(out, text);
        }
    }
}
