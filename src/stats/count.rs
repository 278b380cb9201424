//! Counting: one shard's live tallies ([`ShardStats`]), the plain counters and gauges
//! ([`Tallies`], keyed by the enums through [`Counts`]) and the full snapshot with its HDR
//! histograms ([`StatsSnapshot`]). Everything here runs on the shard's own thread.

use std::sync::Arc;

use hdrhistogram::Histogram;

use super::*;

/// A value a [`Counts`] adds up: saturating, so a counter never wraps.
pub trait Tally: Copy + Default + PartialEq + std::fmt::Debug {
    /// `self + by`, saturating.
    fn plus(self, by: Self) -> Self;
}

impl Tally for u64 {
    #[inline]
    fn plus(self, by: u64) -> u64 {
        self.saturating_add(by)
    }
}

impl Tally for i64 {
    #[inline]
    fn plus(self, by: i64) -> i64 {
        self.saturating_add(by)
    }
}

/// Counters (or gauges) keyed by the enum `K`: one slot per key, indexed by the key's
/// discriminant (no string matching on the hot path), plus the keys in the order they
/// were first counted, which is the order `/metrics` lists them in. A key never
/// counted is absent from both renderings, as it always was.
#[derive(Debug, Clone, PartialEq)]
pub struct Counts<K: Key, T: Tally> {
    /// The value of every key, by [`Key::index`] (the default for keys never counted).
    pub(super) values: Box<[T]>,
    /// The keys counted so far, in first-counted order.
    pub(super) order: Vec<K>,
    /// Bit `i` set when the key of index `i` is in `order` (every key enum has at most
    /// 64 keys, checked in [`Counts::new`]).
    pub(super) seen: u64,
}

impl<K: Key, T: Tally> Default for Counts<K, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Key, T: Tally> Counts<K, T> {
    /// Nothing counted.
    pub fn new() -> Self {
        const { assert!(K::COUNT <= 64, "a key enum may have at most 64 keys") };
        Counts {
            values: vec![T::default(); K::COUNT].into_boxed_slice(),
            order: Vec::new(),
            seen: 0,
        }
    }

    /// `self[key] += by`; the key becomes present even if `by` is zero.
    #[inline]
    pub fn add(&mut self, key: K, by: T) {
        let at = key.index();
        let bit = 1u64 << at;
        if self.seen & bit == 0 {
            self.seen |= bit;
            self.order.push(key);
        }
        if let Some(v) = self.values.get_mut(at) {
            *v = v.plus(by);
        }
    }

    /// The value of `key` (the default if never counted).
    pub fn get(&self, key: K) -> T {
        self.values.get(key.index()).copied().unwrap_or_default()
    }

    /// Whether `key` was ever counted.
    pub fn contains(&self, key: K) -> bool {
        self.seen & (1u64 << key.index()) != 0
    }

    /// The counted keys and their values, in first-counted order.
    pub fn iter(&self) -> impl Iterator<Item = (K, T)> + '_ {
        self.order.iter().map(|&k| (k, self.get(k)))
    }

    /// Add every counted key of `other` into `self`.
    pub fn absorb(&mut self, other: &Counts<K, T>) {
        for (k, v) in other.iter() {
            self.add(k, v);
        }
    }
}

/// One shard's live tallies. Owned by the shard's thread; see the module doc.
pub struct ShardStats {
    /// The tallies themselves, kept in snapshot form so a snapshot is one clone.
    pub(super) live: StatsSnapshot,
    /// The latencies again, in the fixed buckets `/metrics` exports (never reset;
    /// `forward_by_mode` in the same order as `live`'s).
    pub(super) prom: Latencies<PromBuckets>,
    /// The exact sums of `prom` at the last reset, so round 1 of `/stats` can give
    /// exact since-reset sums.
    pub(super) reset_sums: Option<Latencies<u64>>,
    /// The few figures `/health` reports, copied out as they move so any shard can read
    /// them without asking this one (see [`HealthMirror`]).
    pub(super) mirror: Arc<HealthMirror>,
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

    /// A connection refused before upgrade (or a WebSocket closed for a protocol fault).
    #[inline]
    pub fn rejected(&mut self, reason: Rejected) {
        self.live.rejected.add(reason, 1);
    }

    /// A message not forwarded.
    #[inline]
    pub fn dropped(&mut self, reason: Dropped) {
        self.live.dropped.add(reason, 1);
    }

    /// Any other named counter.
    #[inline]
    pub fn event(&mut self, event: Event) {
        self.live.events.add(event, 1);
    }

    /// Move a registry-size gauge. One shard may add what another removes, so a shard's
    /// value can go below zero; the sum over shards is the registry's size.
    pub fn gauge_add(&mut self, gauge: Gauge, delta: i64) {
        self.live.gauges.add(gauge, delta);
        self.mirror.gauge(gauge, self.live.gauge(gauge));
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
    pub fn record_forward(&mut self, mode: Style, micros: u64) {
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

    /// This shard's share of gauge `gauge` (0 if never moved).
    pub fn gauge(&self, gauge: Gauge) -> i64 {
        self.live.gauge(gauge)
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
    pub rejected: Counts<Rejected, u64>,
    /// Messages read from clients.
    pub messages_in: u64,
    /// Messages written to clients.
    pub messages_out: u64,
    /// Payload bytes read from clients.
    pub bytes_in: u64,
    /// Payload bytes written to clients.
    pub bytes_out: u64,
    /// Messages not forwarded, by reason.
    pub dropped: Counts<Dropped, u64>,
    /// Other named counters.
    pub events: Counts<Event, u64>,
    /// Registry sizes (this shard's share; may be negative, see `gauge_add`).
    pub gauges: Counts<Gauge, i64>,
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
    pub forward_by_mode: Vec<(Style, Histogram<u64>)>,
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
    pub(super) forward: Histogram<u64>,
    /// `handshake` at the mark.
    pub(super) handshake: Histogram<u64>,
    /// `handoff` at the mark.
    pub(super) handoff: Histogram<u64>,
    /// `forward_by_mode` at the mark.
    pub(super) forward_by_mode: Vec<(Style, Histogram<u64>)>,
}

impl HistogramMark {
    /// No samples.
    pub(super) fn empty() -> Self {
        HistogramMark {
            forward: new_histogram(),
            handshake: new_histogram(),
            handoff: new_histogram(),
            forward_by_mode: Vec::new(),
        }
    }

    /// Add another mark into this one.
    pub(super) fn absorb(&mut self, other: &HistogramMark) {
        merge_histogram(&mut self.forward, &other.forward);
        merge_histogram(&mut self.handshake, &other.handshake);
        merge_histogram(&mut self.handoff, &other.handoff);
        for (mode, h) in &other.forward_by_mode {
            match self.forward_by_mode.iter_mut().find(|(m, _)| m == mode) {
                Some((_, mine)) => merge_histogram(mine, h),
                None => self.forward_by_mode.push((*mode, h.clone())),
            }
        }
    }
}

impl StatsSnapshot {
    /// All-zero tallies covering no shard.
    pub(super) fn empty() -> Self {
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
    pub(super) fn absorb(&mut self, other: &StatsSnapshot) {
        self.tallies.absorb(&other.tallies);
        merge_histogram(&mut self.forward, &other.forward);
        merge_histogram(&mut self.handshake, &other.handshake);
        merge_histogram(&mut self.handoff, &other.handoff);
        for (mode, h) in &other.forward_by_mode {
            merge_histogram(self.mode_histogram(*mode), h);
        }
        if let Some(mark) = &other.reset_mark {
            self.reset_mark
                .get_or_insert_with(|| Box::new(HistogramMark::empty()))
                .absorb(mark);
        }
    }

    /// The per-mode histogram for `mode`, created empty if missing.
    pub(super) fn mode_histogram(&mut self, mode: Style) -> &mut Histogram<u64> {
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
    pub(super) fn empty() -> Self {
        Tallies {
            shard: 0,
            shards: 0,
            connections: [0; CONN_KINDS],
            accepted: 0,
            handoffs: 0,
            adopted: 0,
            rejected: Counts::new(),
            messages_in: 0,
            messages_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            dropped: Counts::new(),
            events: Counts::new(),
            gauges: Counts::new(),
        }
    }

    /// Add `other` into `self` (counts saturate, keyed maps merge by key).
    pub(super) fn absorb(&mut self, other: &Tallies) {
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
        self.rejected.absorb(&other.rejected);
        self.dropped.absorb(&other.dropped);
        self.events.absorb(&other.events);
        self.gauges.absorb(&other.gauges);
    }

    /// Open connections of `kind`.
    pub fn connections(&self, kind: ConnKind) -> u64 {
        self.connections[kind.index()]
    }

    /// Gauge `gauge` (0 if never moved).
    pub fn gauge(&self, gauge: Gauge) -> i64 {
        self.gauges.get(gauge)
    }
}
